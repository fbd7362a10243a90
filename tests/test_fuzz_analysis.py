"""Property-based search for crashes in every public analysis function.

Each target gets tiny random volumes (2-9 voxels a side), random data types
(bool, uint8, int16, int64, float32, float64), NaN and infinite voxels,
constant and all-zero images, empty and float-typed masks, grids that do not
match, random voxel sizes and rotations, and parameters inside and outside
their valid ranges. The contract: a result that is consistent with its inputs
(labels on the right grid, one table row per label, finite volumes), or an
:class:`~napari_immunotrack.errors.InputError` with a one-line message. Any
other exception (or a numpy floating-point warning leaking out as an error)
is a bug.

Budget: about 2300 examples in all, well under a minute on one core; cheap
targets (landmarks, ROI carrying) get more, image registration fewer.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.volume import Volume

#: IMMUNOTRACK_FUZZ_SCALE=20 (say, in a nightly job) multiplies every budget and draws fresh random
#: examples each run; the default (1) is a fixed, reproducible set that fits the CI time.
FUZZ_SCALE = max(1, int(os.environ.get("IMMUNOTRACK_FUZZ_SCALE", "1")))


def budget(n):
    return settings(
        max_examples=n * FUZZ_SCALE, deadline=None, derandomize=FUZZ_SCALE == 1, suppress_health_check=list(HealthCheck)
    )


def result_or_input_error(func, *args, **kwargs):
    """``func(*args, **kwargs)``, or None when it refuses with a one-line InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImmunotrackWarning)  # guesses are allowed, and recorded
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "mean of empty slice" and kin
            result = func(*args, **kwargs)
    except InputError as exc:
        text = str(exc)
        assert text and "\n" not in text, text
        event("refused")  # shown by --hypothesis-show-statistics: how many examples got through
        return None
    event("result")
    return result


# ------------------------------------------------------------------ strategies
# Each example first draws whether it is "hostile". Plausible examples (about two thirds) get
# finite images with structure, non-empty masks and valid parameters, so the search reaches
# the deep code paths; hostile ones mix in everything the issue lists as messy input.
DTYPES = ["bool", "uint8", "int16", "int64", "float32", "float64"]
shape_st = st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9))
hostile_st = st.sampled_from([False, False, True])


def pick(data, hostile, good, bad=()):
    """A value from ``good``, or (in a hostile example) from ``good`` and ``bad``."""
    return data.draw(st.sampled_from(list(good) + (list(bad) if hostile else [])))


@st.composite
def affines(draw, oblique=True, spacings=(0.05, 0.3, 0.5, 1.0, 2.0, 4.0)):
    spacing = [draw(st.sampled_from(spacings)) for _ in range(3)]
    rot = np.eye(3)
    if oblique and draw(st.booleans()):
        rot = Rotation.from_euler("zyx", [draw(st.floats(-np.pi, np.pi)) for _ in range(3)]).as_matrix()
    elif draw(st.booleans()):
        perm = draw(st.permutations([0, 1, 2]))
        rot = np.eye(3)[:, perm] * np.array([draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = [draw(st.floats(-20, 20)) for _ in range(3)]
    return a


@st.composite
def arrays(draw, shape, dtypes=DTYPES, hostile=True):
    """Random data: noise or noise with a bright/dark block; hostile: also constants, zeros, NaN/inf voxels."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kinds = ["noise", "blocky"] + (["constant", "zeros", "huge"] if hostile else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "noise":
        data = rng.normal(100, draw(st.sampled_from([1.0, 20.0] + ([0.0, 80.0] if hostile else []))), shape)
    elif kind == "constant":
        data = np.full(shape, draw(st.sampled_from([1.0, 100.0, -5.0, 1e6])))
    elif kind == "zeros":
        data = np.zeros(shape)
    elif kind == "huge":  # near the float32 limit: sums and squares overflow
        data = rng.uniform(1e37, 3e38, shape)
    else:
        data = np.full(shape, 100.0) + rng.normal(0, 2, shape)
        lo = [int(rng.integers(0, s)) for s in shape]
        data[lo[0] : lo[0] + 3, lo[1] : lo[1] + 3, lo[2] : lo[2] + 3] = draw(st.sampled_from([1.0, 10.0, 400.0]))
    if dtype is bool:
        data = data > np.median(data)
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.round(data), info.min, info.max)
    data = data.astype(dtype)
    if hostile and dtype.kind == "f" and draw(st.booleans()):
        flat = data.reshape(-1)
        n = draw(st.integers(1, flat.size))
        idx = rng.choice(flat.size, size=n, replace=False)
        flat[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return data


@st.composite
def images(draw, shape=None, affine=None, modality="MR", unit="a.u.", dtypes=DTYPES, hostile=True):
    shape = shape or draw(shape_st)
    affine = draw(affines()) if affine is None else affine
    return Volume(draw(arrays(shape, dtypes, hostile)), affine, modality=modality, unit=unit)


@st.composite
def masks(draw, grid: Volume, allow_none=True, hostile=True):
    """A mask/label image: None, on ``grid`` or (hostile) on another grid, possibly empty or float-typed."""
    if allow_none and draw(st.booleans()):
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    same = not hostile or draw(st.booleans())
    shape = grid.spatial_shape if same else draw(shape_st)
    affine = grid.affine if same else draw(affines())
    kinds = ["random", "block", "labels"] + (["empty", "full", "float", "big labels", "4d"] if hostile else [])
    kind = draw(st.sampled_from(kinds))
    data = np.zeros(shape, np.uint8)
    if kind == "random":
        data = (rng.random(shape) < draw(st.sampled_from([0.3, 0.7]))).astype(np.uint8)
    elif kind == "block":
        lo = [int(rng.integers(0, s)) for s in shape]
        data[lo[0] : lo[0] + 3, lo[1] : lo[1] + 3, lo[2] : lo[2] + 3] = 1
    elif kind == "full":
        data[:] = 1
    elif kind == "float":
        data = rng.random(shape).astype(np.float32) * draw(st.sampled_from([1.0, 3.0]))
    elif kind == "labels":
        data = rng.integers(0, 4, shape).astype(np.int16)
    elif kind == "big labels":  # label values far apart, up to the int32 limit
        data = rng.choice(np.array([0, 1, 65535, 2**31 - 1], np.int64), shape)
    elif kind == "4d":  # a mask with a leading axis (time frames)
        data = (rng.random((2,) + tuple(shape)) < 0.5).astype(np.uint8)
    if not hostile and not data.any():
        data.reshape(-1)[0] = 1
    return Volume(data, affine, modality="SEG", unit="label", name="mask")


# ------------------------------------------------------------------ clusters
@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_segment_clusters(data, hostile):
    from napari_immunotrack.analysis.clusters import segment_clusters

    post = data.draw(images(dtypes=["uint8", "int16", "float32", "float64"], hostile=hostile))
    baseline = None
    if data.draw(st.booleans()):
        baseline = data.draw(
            images(shape=post.spatial_shape, affine=post.affine, dtypes=["int16", "float32"], hostile=hostile)
        )
    method = data.draw(st.sampled_from(["fraction", "percentile", "ksigma", "blob"]))
    threshold = pick(data, hostile, [None, 0.3, 0.5, 0.9], [-1.0, 0.0, 2.0, 10.0, 50.0, np.nan])
    res = result_or_input_error(
        segment_clusters,
        post,
        baseline=baseline,
        reference_mask=data.draw(masks(post, hostile=hostile)),
        search_mask=data.draw(masks(post, hostile=hostile)),
        background_mask=data.draw(masks(post, hostile=hostile)),
        method=method,
        threshold=threshold,
        min_size=pick(data, hostile, [1, 2, 3], [0]),
        connectivity=pick(data, hostile, [6, 18, 26], [7]),
        baseline_rule=data.draw(st.sampled_from(["ratio", "delta_r2s"])),
        split_touching=data.draw(st.booleans()),
        sigma=pick(data, hostile, [None, 0.5, 5.0], [0.0, -1.0]),
    )
    if res is None:
        return
    labels = res.labels.numpy()
    assert res.labels.same_grid(post) and labels.shape == post.spatial_shape
    present = sorted(set(np.unique(labels).tolist()) - {0})
    assert present == sorted(res.table["label"].tolist())
    counts = {lab: int((labels == lab).sum()) for lab in present}
    assert all(counts[row.label] == row.voxels for row in res.table.itertuples())
    assert np.all(np.isfinite(res.table["volume_mm3"])) and np.all(res.table["volume_mm3"] > 0)


@budget(60)
@given(data=st.data())
def test_segment_clusters_in_chunks_equals_in_memory(data):
    """The chunked (dask) path used for OME-Zarr gives the same clusters as the in-memory path,
    whatever the chunking (clusters crossing chunk faces are joined)."""
    import dask.array as da

    from napari_immunotrack.analysis.clusters import segment_clusters

    shape = data.draw(st.tuples(st.integers(4, 12), st.integers(4, 12), st.integers(4, 12)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    img = (100 + rng.normal(0, 2, shape)).astype(np.float32)
    for _ in range(data.draw(st.integers(1, 4))):  # dark voids, some across chunk faces
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        size = [int(rng.integers(1, 4)) for _ in range(3)]
        img[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = 5.0
    post = Volume(img, data.draw(affines()))
    ref = Volume((img > 50).astype(np.uint8), post.affine)
    chunks = tuple(data.draw(st.integers(2, 6)) for _ in range(3))
    kwargs = dict(
        reference_mask=ref,
        min_size=data.draw(st.integers(1, 3)),
        connectivity=data.draw(st.sampled_from([6, 18, 26])),
        split_touching=data.draw(st.booleans()),
        sigma=2.0,
    )
    memory = result_or_input_error(segment_clusters, post, **kwargs)
    chunked = result_or_input_error(segment_clusters, post.replace(data=da.from_array(img, chunks=chunks)), **kwargs)
    assert (memory is None) == (chunked is None)
    if memory is None:
        return
    a, b = memory.labels.numpy(), np.asarray(chunked.labels.numpy())
    # the same partition of voxels into clusters (label numbers may differ)
    assert np.array_equal(a > 0, b > 0)
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    assert len(pairs) == len(set(a[a > 0].tolist())) == len(set(b[b > 0].tolist()))
    assert sorted(memory.table["voxels"]) == sorted(chunked.table["voxels"])


# ------------------------------------------------------------------ T1-T2 confirmation
@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_confirm_dual_mode(data, hostile):
    from napari_immunotrack.analysis.confirm import confirm_dual_mode

    t1 = data.draw(images(dtypes=["uint8", "int16", "float32", "float64"], hostile=hostile))
    same = not hostile or data.draw(st.booleans())
    t2 = data.draw(
        images(
            shape=t1.spatial_shape if same else None,
            affine=t1.affine if same else None,
            dtypes=["int16", "float32", "float64"],
            hostile=hostile,
        )
    )
    pre = pick(data, hostile, ["none", "both"], ["t1 only"])
    t1_pre = (
        data.draw(images(shape=t1.spatial_shape, affine=t1.affine, dtypes=["float32"], hostile=hostile))
        if pre != "none"
        else None
    )
    t2_pre = (
        data.draw(images(shape=t2.spatial_shape, affine=t2.affine, dtypes=["float32"], hostile=hostile))
        if pre == "both"
        else None
    )
    res = result_or_input_error(
        confirm_dual_mode,
        t1,
        t2,
        t1_pre,
        t2_pre,
        t1_threshold=pick(data, hostile, [0.0, 0.2, 0.5], [0.999, 1.5, -0.1]),
        t2_threshold=pick(data, hostile, [0.0, 0.2, 0.9]),
        k_sigma=pick(data, hostile, [0.0, 3.0], [-1.0]),
        min_size=pick(data, hostile, [1, 2, 3], [0]),
        opening=data.draw(st.booleans()),
        connectivity=pick(data, hostile, [6, 18, 26], [4]),
        search_mask=data.draw(masks(t1, hostile=hostile)),
        reference_mask=data.draw(masks(t1, hostile=hostile)),
        transform=None if same else data.draw(st.none() | st.just(np.eye(4))),
        normalise=pick(data, hostile, ["reference", "field", "tissue", "none"], ["bogus"]),
    )
    if res is None:
        return
    labels = res.labels.numpy()
    assert res.labels.same_grid(t1)
    assert sorted(set(np.unique(labels).tolist()) - {0}) == sorted(res.table["label"].tolist())
    assert res.confirmed == (pre == "both")


# ------------------------------------------------------------------ ROIs
@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_carry_rois_and_roi_statistics(data, hostile):
    from napari_immunotrack.analysis.roi import RoiMap, carry_rois, roi_statistics

    image = data.draw(images(dtypes=["uint8", "int16", "float32", "float64"], hostile=hostile))
    rois = data.draw(masks(image, allow_none=False, hostile=hostile))
    if data.draw(st.booleans()):  # ROIs drawn on another grid over the same field of view
        grid = data.draw(affines())
        grid[:3, 3] = image.center_world() - grid[:3, :3] @ (np.array(rois.spatial_shape) - 1) / 2
        rois = rois.replace(affine=grid)
    shift = np.eye(4)
    shift[:3, 3] = [0.1, -0.2, 0.3]
    transform = data.draw(st.sampled_from([None, np.eye(4), shift]))
    supersample = pick(data, hostile, [1, 2, 3], [0, 11])
    rmap = result_or_input_error(carry_rois, rois, image, transform=transform, supersample=supersample)
    if rmap is not None:
        assert isinstance(rmap, RoiMap) and rmap.shape == image.spatial_shape
        for label in rmap.labels:
            w = rmap.weight_volume(label)
            assert np.all((w >= 0) & (w <= 1 + 1e-6)) and w.sum() > 0
    df = result_or_input_error(
        roi_statistics,
        image,
        rois,
        transform=transform,
        supersample=max(supersample, 1),
        peak=data.draw(st.booleans()),
        peak_radius_mm=pick(data, hostile, [0.5, 6.2], [0.0]),
    )
    if df is not None:
        assert isinstance(df, pd.DataFrame) and len(df) >= 1
        assert np.all(df["volume_ml"] > 0)


# ------------------------------------------------------------------ PET/SPECT
GOOD_HEADER = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "RadionuclideTotalDose": 1e7,
    "RadionuclideHalfLife": 6586.2,
    "PatientWeight": 0.025,
    "PatientSize": 0.1,
    "PatientSex": "F",
    "SeriesDate": "20240305",
    "SeriesTime": "100000",
    "RadiopharmaceuticalStartTime": "090000",
}
BAD_HEADER = {
    "Units": ["CNTS", "GML", "SUV", None, "", "bqml"],
    "DecayCorrection": ["ADMIN", "NONE", None, "XYZ"],
    "RadionuclideTotalDose": [0, -5.0, 3.5, None, float("nan"), "abc", 1e300],
    "RadionuclideHalfLife": [0, -1, None, 1e-9, 78.4 * 3600],
    "PatientWeight": [25, 0, -1, None, 1e6, "abc", float("inf")],
    "PatientSize": [None, 170, 0],
    "SeriesDate": [None, "2024-03-05", "garbage", "20241399"],
    "SeriesTime": ["10:00:00", None, "250000", "xx"],
    "RadiopharmaceuticalStartTime": ["110000", None, "99:99:99"],
    "RadiopharmaceuticalStartDateTime": ["20240305090000", "20250101000000", "nonsense"],
    "Radionuclide": ["^18^Fluorine", "89Zr", "unobtainium"],
}


@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_quantify_pet(data, hostile):
    from napari_immunotrack.analysis.pet import quantify_pet

    # PET voxels of 0.3 mm or more: SUVpeak's 1 mL sphere on a 0.05 mm grid is millions of voxels (slow, not wrong)
    pet = data.draw(
        images(
            affine=data.draw(affines(spacings=[0.3, 1.0, 2.0, 4.0])),
            modality=data.draw(st.sampled_from(["PT", "NM"])),
            unit="Bq/mL",
            dtypes=["int16", "float32", "float64"],
            hostile=hostile,
        )
    )
    pet.metadata.update(GOOD_HEADER)
    if hostile:  # 1-3 fields hand-typed wrong or left out
        for key in data.draw(st.lists(st.sampled_from(sorted(BAD_HEADER)), min_size=1, max_size=3, unique=True)):
            value = data.draw(st.sampled_from(BAD_HEADER[key]))
            pet.metadata.pop(key, None) if value is None else pet.metadata.__setitem__(key, value)
    rois = data.draw(masks(pet, allow_none=False, hostile=hostile))
    overrides = {}
    if hostile and data.draw(st.booleans()):
        overrides["dose_mbq"] = data.draw(st.sampled_from([10.0, 0.0, -1.0, float("nan")]))
    if hostile and data.draw(st.booleans()):
        overrides["weight_kg"] = data.draw(st.sampled_from([0.025, 0.0, 1e9]))
    if hostile and data.draw(st.booleans()):
        overrides["injection_time"] = data.draw(st.sampled_from(["09:00:00", "2030-01-01T00:00:00", "noon"]))
    df = result_or_input_error(
        quantify_pet,
        pet,
        rois,
        suv_types=pick(data, hostile, [("bw",), ("bw", "lbm", "bsa", "ibw")], [("xyz",)]),
        supersample=data.draw(st.sampled_from([1, 3])),
        peak=data.draw(st.booleans()),
        density_g_ml=pick(data, hostile, [1.0, 1.05], [0.0]),
        **overrides,
    )
    if df is not None:
        assert len(df) >= 1 and np.all(df["volume_ml"] > 0)
        if "suv_bw_mean" in df:
            header = df.attrs["header"]
            assert header["weight_kg"] > 0 and header["dose_bq"] > 0 and header["decay_time_s"] >= 0


# ------------------------------------------------------------------ 19F
@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_fluorine_cells(data, hostile):
    from napari_immunotrack.analysis.fluorine import fluorine_cells

    f19 = data.draw(images(modality="F19", dtypes=["uint8", "int16", "float32", "float64"], hostile=hostile))
    rois = data.draw(masks(f19, allow_none=False, hostile=hostile))
    reference = data.draw(masks(f19, allow_none=False, hostile=hostile))
    if not hostile:  # a bright reference tube and a depot over Rician-like noise of sigma 1
        rng = np.random.default_rng(data.draw(st.integers(0, 999)))
        img = rng.rayleigh(1.0, f19.spatial_shape)
        img[reference.numpy() > 0] += 30.0
        img[rois.numpy() > 0] += data.draw(st.sampled_from([0.0, 2.0, 15.0]))
        f19 = f19.replace(data=img.astype(np.float32))
    df = result_or_input_error(
        fluorine_cells,
        f19,
        rois,
        reference,
        pick(data, hostile, [50.0, 5.0], [0.0, -1.0, float("inf"), 1e-12]),
        pick(data, hostile, [1e12, 1e11], [0.0]),
        noise_mask=data.draw(masks(f19, hostile=hostile)),
        noise_sigma=pick(data, hostile, [None, 1.0], [0.0, -2.0, float("nan")]),
        snr_threshold=pick(data, hostile, [3.5, 2.0], [0.0]),
        min_cluster_voxels=pick(data, hostile, [1, 3], [0]),
        rician_correction=pick(data, hostile, ["power", "amplitude", "none", True], ["bogus"]),
    )
    if df is not None:
        assert len(df) >= 1
        counted = df["cell_count"].dropna()
        assert np.all(np.isfinite(counted)) and np.all(counted >= 0)


# ------------------------------------------------------------------ MPI
@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_mpi_iron(data, hostile):
    from napari_immunotrack.analysis.mpi import mpi_iron

    mpi = data.draw(
        images(
            shape=data.draw(st.tuples(*[st.integers(5, 9)] * 3)),
            modality="MPI",
            dtypes=["uint8", "float32", "float64"],
            hostile=hostile,
        )
    )
    n = pick(data, hostile, [2, 3, 4], [0, 1])
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    index = np.stack([rng.integers(0, s, n) for s in mpi.spatial_shape], axis=1)
    iron = rng.choice([10.0, 50.0, 100.0, 200.0], n, replace=n > 4)
    if not hostile:  # fiducials: point sources of 10 units per ng over a flat background
        img = np.full(mpi.spatial_shape, 1.0, np.float32)
        for (i, j, k), m in zip(index, iron):
            img[i, j, k] += 10.0 * m
        mpi = mpi.replace(data=img)
    xyz = mpi.index_to_world(index) if n else np.zeros((0, 3))
    fid = pd.DataFrame({"x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2], "iron_ng": iron})
    if hostile and n:
        fid.loc[0, "iron_ng"] = data.draw(st.sampled_from([0.0, -1.0, np.nan]))
    if data.draw(st.booleans()):
        fid["signal"] = 10.0 * fid["iron_ng"]
    df = result_or_input_error(
        mpi_iron,
        mpi,
        data.draw(masks(mpi, allow_none=False, hostile=hostile)),
        fid,
        pick(data, hostile, [5.0, 50.0], [0.0, -1.0]),
        radius_mm=pick(data, hostile, [0.1, 3.0], [0.0]),
        background=pick(data, hostile, ["auto", 0.0, 1.0], [float("nan"), "bogus"]),
        dilate_mm=pick(data, hostile, [0.0, 1.0], [-1.0]),
        supersample=data.draw(st.sampled_from([1, 3])),
    )
    if df is not None:
        assert len(df) >= 1 and "iron_ng" in df
        assert df.attrs["calibration"]["k_per_ng"] > 0


# ------------------------------------------------------------------ registration
@budget(2000)
@given(
    n=st.sampled_from(range(13)),
    transform=st.sampled_from(["rigid", "affine"] * 3 + ["similarity"]),
    layout=st.sampled_from(["random", "random", "random", "collinear", "planar", "duplicate", "nan", "huge"]),
    seed=st.integers(0, 999),
)
def test_register_landmarks(n, transform, layout, seed):
    from napari_immunotrack.registration import register_landmarks

    rng = np.random.default_rng(seed)
    fixed = rng.normal(0, 20, (n, 3))
    if layout == "collinear":
        fixed = np.outer(np.arange(n), [1.0, 2.0, 3.0])
    elif layout == "planar":
        fixed[:, 2] = 5.0
    elif layout == "duplicate" and n:
        fixed[:] = fixed[0]
    elif layout == "nan" and n:
        fixed[0, 1] = np.nan
    elif layout == "huge":
        fixed *= 1e150
    rot = Rotation.from_euler("zyx", rng.uniform(-1, 1, 3)).as_matrix()
    moving = fixed @ rot.T + rng.normal(0, 5, 3)
    res = result_or_input_error(register_landmarks, fixed, moving, transform=transform)
    if res is None:
        return
    assert res.fixed_to_moving.shape == (4, 4) and np.all(np.isfinite(res.fixed_to_moving))
    assert len(res.fre_mm) == n and np.isfinite(res.metric_final)
    if layout == "random" and transform in ("rigid", "affine"):
        # the exact motion is recovered from noise-free points
        assert res.metric_final < 1e-6 * max(1.0, np.abs(fixed).max())


def _blob(shape, affine, centre_mm, sigma_mm=3.0):
    idx = np.indices(shape).reshape(3, -1).T
    world = Volume(np.zeros(shape), affine).index_to_world(idx)
    return np.exp(-np.sum((world - centre_mm) ** 2, axis=1) / (2 * sigma_mm**2)).reshape(shape) * 1000


@budget(2000)
@given(data=st.data(), hostile=hostile_st)
def test_register_images(data, hostile):
    from napari_immunotrack.registration import register

    side = st.integers(2, 12) if hostile else st.integers(8, 14)
    shape = data.draw(st.tuples(side, side, side))
    fixed = data.draw(images(shape=shape, dtypes=["uint8", "int16", "float32"], hostile=hostile))
    moving = data.draw(
        images(shape=data.draw(st.tuples(side, side, side)), dtypes=["uint8", "float32", "float64"], hostile=hostile)
    )
    if not hostile:  # one blob seen by both, a few mm apart
        fixed = fixed.replace(data=_blob(shape, fixed.affine, fixed.center_world()).astype(np.float32))
        moving = moving.replace(
            data=_blob(moving.spatial_shape, moving.affine, moving.center_world() + [1.0, -1.0, 0.5]).astype(np.float32)
        )
    res = result_or_input_error(
        register,
        fixed,
        moving,
        transform=data.draw(st.sampled_from(["rigid", "affine"])),
        fixed_mask=data.draw(masks(fixed, hostile=hostile)),
        max_iterations=15,
        shrink_factors=data.draw(st.sampled_from([(1,), (2, 1)])),
        bins=pick(data, hostile, [8, 32], [4]),
        force=data.draw(st.booleans()),
    )
    if res is not None:
        assert res.fixed_to_moving.shape == (4, 4) and np.all(np.isfinite(res.fixed_to_moving))


@budget(2000)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    spacing=st.sampled_from([0.5, 1.0, 2.5]),
    seed=st.integers(0, 999),
)
def test_peak_sphere_cut_to_the_image_is_exact(shape, spacing, seed):
    """roi_statistics cuts the SUVpeak sphere to the image (so microscopy-sized grids stay cheap):
    the peak is exactly that of the whole sphere."""
    from napari_immunotrack.analysis.roi import PEAK_RADIUS_MM, _peak, roi_statistics, sphere_kernel

    rng = np.random.default_rng(seed)
    affine = np.diag([spacing, spacing * 1.3, spacing * 0.7, 1.0])
    image = Volume(rng.random(shape).astype(np.float32) * 100, affine)
    labels = (rng.random(shape) < 0.5).astype(np.uint8)
    labels.reshape(-1)[0] = 1
    df = roi_statistics(image, Volume(labels, affine), supersample=1)
    idx = np.flatnonzero(labels.reshape(-1))
    coords = np.unravel_index(idx, shape)
    bbox = (np.array([c.min() for c in coords]), np.array([c.max() for c in coords]))
    whole = _peak(image.numpy(), bbox, idx, sphere_kernel(affine, PEAK_RADIUS_MM))
    assert df.loc[0, "peak"] == pytest.approx(whole, rel=1e-9)


def test_peak_on_a_microscopy_grid_is_skipped_with_a_warning():
    """A 1 mL sphere on 2 um pixels would be ~1e13 kernel voxels: no hang, no MemoryError, a warned NaN."""
    from napari_immunotrack.analysis.roi import roi_statistics

    affine = np.diag([0.002, 0.002, 0.002, 1.0])
    image = Volume(np.ones((300, 300, 300), np.uint8), affine, modality="OPT")
    labels = np.zeros(image.spatial_shape, np.uint8)
    labels[100:120, 100:120, 100:120] = 1
    with pytest.warns(ImmunotrackWarning, match="no peak"):
        df = roi_statistics(image, Volume(labels, affine), supersample=1)
    assert np.isnan(df.loc[0, "peak"]) and df.loc[0, "mean"] == 1.0 and df.loc[0, "voxels"] == 8000
    assert any("no peak" in w for w in df.attrs["warnings"])
