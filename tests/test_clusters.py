"""Hypointense (iron) cluster segmentation: accuracy against simulated truth, the
pieces (noise, normalisation, rules, baseline, components, table), the chunked
(dask) path, bad input, and the ``immunotrack segment`` command line."""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pytest

from napari_immunotrack.analysis import clusters as C
from napari_immunotrack.cli import main
from napari_immunotrack.errors import Cancelled, ImmunotrackWarning, InputError
from napari_immunotrack.volume import Volume

TOL_MM = 0.35  # a detection matches a true cluster when its centroid is this close


# ----------------------------------------------------------------- helpers
@functools.cache
def scene(seed=0, snr=20.0, near=False):
    from napari_immunotrack.simulate import cluster_scene

    return cluster_scene(seed=seed, snr=snr, near_touching=near)


def run_scene(s, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        return C.segment_clusters(
            s["post"],
            baseline=s["pre"],
            reference_mask=s["reference_mask"],
            search_mask=s["search_mask"],
            background_mask=s["background_mask"],
            **kw,
        )


def centroids(table):
    return table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)


def match(found, truth, tol=TOL_MM):
    """Greedy one-to-one matching by distance; returns (tp, fp, fn, distances of matches)."""
    found, truth = np.asarray(found).reshape(-1, 3), np.asarray(truth).reshape(-1, 3)
    d = np.linalg.norm(found[:, None] - truth[None], axis=2) if found.size and truth.size else np.zeros((0, 0))
    pairs = sorted((d[i, j], i, j) for i in range(d.shape[0]) for j in range(d.shape[1]) if d[i, j] <= tol)
    used_f, used_t, dist = set(), set(), []
    for dd, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            dist.append(dd)
    tp = len(dist)
    return tp, len(found) - tp, len(truth) - tp, dist


def decoys_hit(found, decoys, radius=0.5):
    """Detections within ``radius`` mm of a decoy (in-plane distance for the z-cylinders: vessel, bone)."""
    hits = 0
    for c in np.asarray(found).reshape(-1, 3):
        for d in decoys:
            p = np.asarray(d["centroid_ras_mm"], float)
            dist = np.linalg.norm((c - p)[:2]) if d["kind"] in ("vessel", "bone") else np.linalg.norm(c - p)
            hits += dist < radius
    return hits


def vol(data, affine=None, **kw):
    return Volume(np.asarray(data), np.eye(4) if affine is None else affine, **kw)


def noisy_tissue(shape=(24, 24, 24), level=100.0, sigma=5.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.abs(level + rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape)).astype(np.float32)


# ------------------------------------------------------- accuracy vs truth
@pytest.mark.parametrize("near", [False, True])
@pytest.mark.parametrize("snr", [10.0, 20.0, 40.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_and_no_decoys_on_simulated_scenes(seed, snr, near):
    s = scene(seed, snr, near)
    res = run_scene(s)
    truth = [c["centroid_ras_mm"] for c in s["truth"]["clusters"]]
    tp, fp, fn, dist = match(centroids(res.table), truth)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.9, (seed, snr, near, tp, fp, fn)
    assert decoys_hit(centroids(res.table), s["truth"]["decoys"]) == 0
    # one row per label, labels 1..N on post's grid
    assert res.labels.same_grid(s["post"])
    assert sorted(np.unique(res.labels.numpy()))[1:] == res.table.label.tolist() == list(range(1, len(res.table) + 1))
    # the noise estimate from the air ROI is the simulator's sigma
    assert res.sigma == pytest.approx(s["sigma"], rel=0.03)


def test_centroid_weighting_is_closer_to_dipole_centre_than_mask_centroid():
    """Deficit-weighted centroids, measured against the truth: better than the plain mask centroid."""
    from scipy import ndimage

    weighted, plain = [], []
    for seed in (0, 1):
        s = scene(seed, 20.0, False)
        res = run_scene(s)
        lab = res.labels.numpy()
        n = int(lab.max())
        com = res.labels.index_to_world(np.array(ndimage.center_of_mass(lab > 0, lab, range(1, n + 1))))
        truth = np.array([c["centroid_ras_mm"] for c in s["truth"]["clusters"]])
        weighted += [np.linalg.norm(truth - c, axis=1).min() for c in centroids(res.table)]
        plain += [np.linalg.norm(truth - c, axis=1).min() for c in com]
    assert max(weighted) < 0.05  # mm; voxels are 0.1 mm
    assert np.mean(weighted) <= np.mean(plain)


def test_without_baseline_the_decoys_are_reported():
    """What the baseline is for: the same rule without it reports the intrinsic dark spots."""
    s = scene(0, 20.0, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        res = C.segment_clusters(
            s["post"],
            reference_mask=s["reference_mask"],
            search_mask=s["search_mask"],
            background_mask=s["background_mask"],
        )
    assert decoys_hit(centroids(res.table), s["truth"]["decoys"]) >= 3
    assert not res.parameters["baseline"]
    assert res.table.baseline_ratio.isna().all()


def test_table_values_against_truth_and_definitions():
    s = scene(1, 20.0, False)
    res = run_scene(s)
    t = res.table
    assert list(t.columns) == C.TABLE_COLUMNS
    np.testing.assert_allclose(t.volume_mm3, t.voxels * 0.1**3)
    # blooms are voids: min near the Rician floor, baseline ratio well under the 0.6 rule
    assert (t.min_signal_norm < 0.15).all() and (t.baseline_ratio < 0.45).all()
    # CNR = (mean_ref - mean_cluster) / sigma
    np.testing.assert_allclose(t.cnr, res.reference.mean * (1 - t.mean_signal_norm) / res.sigma)
    # the bloom voxel counts are those of the truth (noiseless post/pre < 0.5), within noise
    truth = {c["id"]: c for c in s["truth"]["clusters"]}
    bl = s["bloom_labels"].numpy()
    for row in t.itertuples():
        ids, counts = np.unique(bl[res.labels.numpy() == row.label], return_counts=True)
        tid = ids[np.argmax(counts)]
        assert tid > 0
        assert row.voxels == pytest.approx(truth[tid]["bloom_voxels"], rel=0.25)
    assert res.reference.mean == pytest.approx(1000.0, rel=0.03)  # muscle = 1000 a.u. in the simulator


def test_measure_clusters_reproduces_the_table():
    s = scene(2, 20.0, False)
    res = run_scene(s)
    again = C.measure_clusters(res.labels, s["post"], res.reference.mean, res.sigma, baseline=s["pre"])
    cols = [c for c in C.TABLE_COLUMNS if c != "split"]
    np.testing.assert_allclose(again[cols].to_numpy(float), res.table[cols].to_numpy(float), rtol=1e-9)


# ------------------------------------------------------- touching blooms
def _pair(distance_mm, direction=(0.7071, 0.7071, 0.0), seed=0, snr=20.0):
    """Two dipole clusters ``distance_mm`` apart in uniform tissue (muscle = 1000), pre and post."""
    from napari_immunotrack.simulate import iron
    from napari_immunotrack.simulate.mri import rician, sequences

    shape, v = (40, 40, 48), 0.1
    aff = np.eye(4)
    aff[:3, :3] = np.diag([v] * 3)[::-1]
    aff[:3, 3] = -(np.array(shape[::-1]) - 1) / 2 * v
    c = np.array([0.013, 0.011, -0.021])
    d = np.asarray(direction) * distance_mm / 2
    cl = [iron.IronCluster(c - d, 6000.0, 1200.0, id=1), iron.IronCluster(c + d, 4000.0, 800.0, id=2)]
    idx, f = iron.bloom_factors(shape, aff, cl, sequences(9.4)["T2starw"], 9.4)
    clean = np.full(shape, 1000.0, np.float32)
    iron.apply_bloom(clean, idx, f)
    rng = np.random.default_rng(seed)
    post = rician(clean, 1000.0 / snr, rng)
    pre = rician(np.full(shape, 1000.0, np.float32), 1000.0 / snr, rng)
    ref = np.zeros(shape, np.uint8)
    ref[:, :6, :] = 1
    return Volume(post, aff), Volume(pre, aff), Volume(ref, aff), np.array([c - d, c + d])


@pytest.mark.parametrize(
    "distance,direction", [(0.55, (0.7071, 0.7071, 0.0)), (0.55, (1.0, 0.0, 0.0)), (0.6, (0.7071, 0.0, 0.7071))]
)
def test_touching_blooms_are_split(distance, direction):
    """Blooms that merge into one component (a saddle under r = 0.5) come out as two clusters."""
    post, pre, ref, truth = _pair(distance, direction)
    split = C.segment_clusters(post, baseline=pre, reference_mask=ref, sigma=50.0)
    merged = C.segment_clusters(post, baseline=pre, reference_mask=ref, sigma=50.0, split_touching=False)
    assert len(merged.table) == 1  # one component: the blooms touch at r < 0.5
    assert len(split.table) == 2 and split.table.split.all()
    assert split.parameters["split_components"] == 1
    tp, fp, fn, dist = match(centroids(split.table), truth)
    assert (tp, fp, fn) == (2, 0, 0) and max(dist) < 0.05
    # the pieces cover exactly the merged component
    assert np.array_equal(split.labels.numpy() > 0, merged.labels.numpy() > 0)


def test_single_blooms_are_not_split():
    post, pre, ref, truth = _pair(1.2)
    res = C.segment_clusters(post, baseline=pre, reference_mask=ref, sigma=50.0)
    assert len(res.table) == 2 and not res.table.split.any()


# ------------------------------------------------------- pieces
def test_rician_sigma_from_pure_noise_both_estimators():
    rng = np.random.default_rng(3)
    air = np.abs(rng.normal(0, 7.0, (40, 40, 40)) + 1j * rng.normal(0, 7.0, (40, 40, 40)))
    img, bg = vol(air), vol(np.ones(air.shape, np.uint8))
    assert C.estimate_rician_sigma(img, bg, "sd") == pytest.approx(7.0, rel=0.02)
    assert C.estimate_rician_sigma(img, bg, "mean") == pytest.approx(7.0, rel=0.02)
    # the uncorrected SD of the magnitude would be 35% low: the correction matters
    assert np.std(air) == pytest.approx(7.0 * 0.6551, rel=0.02)


def test_background_with_tissue_warns():
    rng = np.random.default_rng(3)
    air = np.abs(rng.normal(0, 5.0, (20, 20, 20)) + 1j * rng.normal(0, 5.0, (20, 20, 20)))
    air[:5] += 300.0  # tissue inside the "background" ROI
    with pytest.warns(ImmunotrackWarning, match="pure Rician noise"):
        C.noise_from_background(vol(air), vol(np.ones(air.shape, np.uint8)))


def test_normalisation_and_reference_statistics():
    data = np.full((10, 10, 10), 200.0, np.float32)
    data[:5] = 100.0
    ref = np.zeros(data.shape, np.uint8)
    ref[:5] = 1
    stats = C.reference_statistics(vol(data), vol(ref))
    assert (stats.mean, stats.sd, stats.n_voxels, stats.source) == (100.0, 0.0, 500, "reference ROI")
    prep = C.prepare(vol(data), reference_mask=vol(ref), sigma=1.0)
    assert prep.rule("fraction", 0.5).threshold_signal == 50.0


def test_fraction_percentile_and_ksigma_rules():
    data = noisy_tissue((30, 30, 30), 100.0, 4.0, seed=1)
    ref = vol((np.indices(data.shape)[0] < 10).astype(np.uint8))
    prep = C.prepare(vol(data), reference_mask=ref, sigma=4.0)
    r = data / prep.reference.mean
    # fraction: exactly r < tau
    assert np.array_equal(prep.candidates(prep.rule("fraction", 0.9)), r < 0.9)
    # percentile: the darkest p % of the search region (here the whole image), but only voxels darker than the
    # reference (under mean - 2 SD): on tissue without voids the 10th percentile is just noise, not 10 % clusters
    cap = 1.0 - C.DARKER_K * prep.reference.sd / prep.reference.mean
    rule = prep.rule("percentile", 10.0)
    assert rule.cut == pytest.approx(cap) and rule.fixed_share
    assert np.array_equal(prep.candidates(rule), r < np.float32(cap))
    assert prep.candidates(rule).mean() < 0.03
    # with real voids (13 % of the image at a third of the reference) the darkest 10 % are all void
    voids = data.copy()
    voids[10:, :, :6] *= 0.33  # noisy voids outside the reference ROI (the first 10 planes)
    pv = C.prepare(vol(voids), reference_mask=ref, sigma=4.0)
    assert pv.candidates(pv.rule("percentile", 10.0)).mean() == pytest.approx(0.10, abs=0.002)
    # ksigma: S < mean - k SD of the reference
    rule = prep.rule("ksigma", 2.0)
    cut = prep.reference.mean - 2.0 * prep.reference.sd
    assert rule.threshold_signal == pytest.approx(cut)
    assert np.array_equal(prep.candidates(rule), data < np.float32(cut))


def test_blob_detector_finds_single_voxel_voids_the_fraction_rule_misses():
    data = noisy_tissue((32, 32, 32), 100.0, 2.0, seed=2)
    clean_vox = [(8, 8, 8), (8, 22, 20), (22, 10, 16), (20, 24, 24)]
    for z, y, x in clean_vox:  # a one-voxel void with partial volume around it: r ~ 0.55 at its centre
        data[z, y, x] = 55.0
        data[z - 1 : z + 2, y, x] = np.minimum(data[z - 1 : z + 2, y, x], 80.0)
        data[z, y - 1 : y + 2, x] = np.minimum(data[z, y - 1 : y + 2, x], 80.0)
        data[z, y, x - 1 : x + 2] = np.minimum(data[z, y, x - 1 : x + 2], 80.0)
    ref = vol((np.indices(data.shape)[1] < 4).astype(np.uint8))
    frac = C.segment_clusters(vol(data), reference_mask=ref, sigma=2.0)
    blob = C.segment_clusters(vol(data), reference_mask=ref, sigma=2.0, method="blob")
    assert len(frac.table) == 0
    tp, fp, fn, dist = match(centroids(blob.table), np.array(clean_vox, float))  # eye affine: world = index
    assert (tp, fp, fn) == (4, 0, 0) and max(dist) < 0.3


def test_baseline_removes_preexisting_voids_and_keeps_new_ones():
    post = noisy_tissue((24, 24, 24), 100.0, 3.0, seed=4)
    pre = noisy_tissue((24, 24, 24), 100.0, 3.0, seed=5)
    post[4:8, 4:8, 4:8] = 3.0  # new since baseline
    post[14:19, 14:19, 14:19] = 3.0  # there before: air
    pre[14:19, 14:19, 14:19] = 3.0
    post[14:20, 3:6, 3:6] = 45.0  # halved, but ratio 0.45/1.0 < 0.6: new
    ref = vol((np.indices(post.shape)[2] > 20).astype(np.uint8))
    res = C.segment_clusters(vol(post), baseline=vol(pre), reference_mask=ref)
    assert sorted(res.table.voxels.tolist()) == [6 * 3 * 3, 4**3]
    # a stricter ratio (0.4) drops the halved one: the ratio is the rule
    strict = C.segment_clusters(vol(post), baseline=vol(pre), reference_mask=ref, baseline_ratio=0.4)
    assert strict.table.voxels.tolist() == [4**3]
    # the delta R2* rule keeps both new voids and still drops the old one
    dr2 = C.segment_clusters(vol(post), baseline=vol(pre), reference_mask=ref, baseline_rule="delta_r2s")
    assert sorted(dr2.table.voxels.tolist()) == [6 * 3 * 3, 4**3]


def test_rim_of_a_preexisting_void_is_not_reported():
    post = noisy_tissue((24, 24, 24), 100.0, 2.0, seed=6)
    pre = post.copy() + 0  # same noise: only the rim can differ
    pre[8:14, 8:14, 8:14] = 2.0
    post[8:14, 8:14, 8:14] = 2.0
    # the post void grew by one voxel (partial volume, registration slop): still the same old void
    post[7:15, 7:15, 7:15] = np.minimum(post[7:15, 7:15, 7:15], 40.0)
    ref = vol((np.indices(post.shape)[0] > 18).astype(np.uint8))
    res = C.segment_clusters(vol(post), baseline=vol(pre), reference_mask=ref, sigma=2.0)
    assert len(res.table) == 0


def test_connectivity_is_applied_and_recorded():
    data = np.full((12, 12, 12), 100.0, np.float32)
    for i in range(4):  # a diagonal line: 26-connected only
        data[3 + i, 3 + i, 3 + i] = 1.0
    ref = vol((np.indices(data.shape)[0] > 9).astype(np.uint8))
    r26 = C.segment_clusters(vol(data), reference_mask=ref, sigma=1.0, connectivity=26)
    r18 = C.segment_clusters(vol(data), reference_mask=ref, sigma=1.0, connectivity=18, min_size=1)
    r6 = C.segment_clusters(vol(data), reference_mask=ref, sigma=1.0, connectivity=6)
    assert r26.table.voxels.tolist() == [4] and r26.labels.metadata["connectivity"] == 26
    assert len(r18.table) == 4 and r18.parameters["connectivity"] == 18
    assert len(r6.table) == 0  # four single voxels, each under min_size 3


def test_min_size_and_search_roi():
    data = np.full((16, 16, 16), 100.0, np.float32)
    data[2:4, 2:4, 2] = 1.0  # 4 voxels
    data[10:13, 10:13, 10:13] = 1.0  # 27 voxels
    ref = vol((np.indices(data.shape)[0] > 13).astype(np.uint8))
    assert C.segment_clusters(vol(data), reference_mask=ref, sigma=1.0, min_size=5).table.voxels.tolist() == [27]
    assert C.segment_clusters(vol(data), reference_mask=ref, sigma=1.0).table.voxels.tolist() == [4, 27]
    search = np.zeros(data.shape, np.uint8)
    search[:8, :8, :8] = 1
    assert C.segment_clusters(
        vol(data), reference_mask=ref, search_mask=vol(search), sigma=1.0
    ).table.voxels.tolist() == [4]


def test_world_centroid_and_volume_on_an_oblique_anisotropic_grid():
    from napari_immunotrack.simulate import rigid_matrix

    data = np.full((20, 20, 20), 100.0, np.float32)
    data[5:8, 10:14, 2:4] = 1.0
    aff = rigid_matrix((10.0, -20.0, 30.0), (5.0, -3.0, 12.0)) @ np.diag([0.5, 0.2, 0.3, 1.0])
    ref = Volume((np.indices(data.shape)[0] > 15).astype(np.uint8), aff)
    res = C.segment_clusters(Volume(data, aff), reference_mask=ref, sigma=1.0)
    expected = aff[:3, :3] @ np.array([6.0, 11.5, 2.5]) + aff[:3, 3]
    np.testing.assert_allclose(centroids(res.table)[0], expected, atol=1e-9)
    assert res.table.volume_mm3[0] == pytest.approx(24 * 0.5 * 0.2 * 0.3)


def test_masks_on_another_grid_are_carried_through_world():
    data = np.full((20, 20, 20), 100.0, np.float32)
    data[12:15, 12:15, 12:15] = 1.0
    data[3:6, 3:6, 3:6] = 1.0
    post = vol(data)
    # a search mask drawn on a coarser grid (2 mm voxels) covering world 9..19 on every axis
    coarse = np.zeros((10, 10, 10), np.uint8)
    coarse[5:, 5:, 5:] = 1
    search = Volume(coarse, np.diag([2.0, 2.0, 2.0, 1.0]))
    ref = vol((np.indices(data.shape)[0] > 17).astype(np.uint8))
    res = C.segment_clusters(post, reference_mask=ref, search_mask=search, sigma=1.0)
    assert res.table.voxels.tolist() == [27]
    np.testing.assert_allclose(centroids(res.table)[0], [13.0, 13.0, 13.0])


def test_baseline_through_a_transform_gives_the_same_clusters():
    s = scene(0, 20.0, False)
    direct = run_scene(s)
    pre = s["pre"]
    shift = np.eye(4)
    shift[:3, 3] = [0.5, -0.3, 0.2]  # the baseline placed 5, 3 and 2 voxels away in its own world
    moved = pre.replace(affine=shift @ pre.affine)
    with pytest.raises(InputError, match="not the same grid"):
        C.segment_clusters(s["post"], baseline=moved, reference_mask=s["reference_mask"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        res = C.segment_clusters(
            s["post"],
            baseline=moved,
            baseline_transform=shift,
            reference_mask=s["reference_mask"],
            search_mask=s["search_mask"],
            background_mask=s["background_mask"],
        )
    assert np.array_equal(res.labels.numpy(), direct.labels.numpy())


def test_preview_slice_equals_the_volume_rule():
    s = scene(1, 20.0, False)
    prep = C.prepare(s["post"], s["pre"], s["reference_mask"], s["search_mask"], s["background_mask"])
    for method in ("fraction", "blob"):
        rule = prep.rule(method)
        full = prep.candidates(rule)
        for axis, index in ((0, 30), (1, 50), (2, 47)):
            assert np.array_equal(prep.preview(rule, axis, index), np.take(full, index, axis=axis))
        assert full.any()


def test_progress_is_reported_and_cancel_stops():
    s = scene(0, 20.0, False)
    seen = []
    run_scene(s, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))

    def cancel(fraction, message):
        if fraction > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        run_scene(s, progress=cancel)


# ------------------------------------------------------- chunked (dask)
@pytest.mark.parametrize("method,baseline", [("fraction", True), ("blob", True), ("ksigma", False)])
def test_dask_chunks_give_the_same_clusters_as_memory(method, baseline):
    import dask.array as da

    s = scene(0, 10.0, True)
    chunks = (14, 24, 24)  # borders cut through clusters; an 8-thick last chunk along axis 0 (merged for blob)
    kw = dict(
        reference_mask=s["reference_mask"],
        search_mask=s["search_mask"],
        background_mask=s["background_mask"],
        method=method,
    )
    mem = C.segment_clusters(s["post"], baseline=s["pre"] if baseline else None, **kw)
    post_d = s["post"].replace(data=da.from_array(s["post"].data, chunks=chunks))
    pre_d = s["pre"].replace(data=da.from_array(s["pre"].data, chunks=chunks)) if baseline else None
    lazy = C.segment_clusters(post_d, baseline=pre_d, **kw)
    assert type(lazy.labels.data).__module__.startswith("dask")
    labels = lazy.labels.numpy()
    assert np.array_equal(labels, mem.labels.numpy())
    cols = [c for c in C.TABLE_COLUMNS]
    np.testing.assert_allclose(
        lazy.table[cols].to_numpy(float), mem.table[cols].to_numpy(float), rtol=1e-9, equal_nan=True
    )
    # clusters do cross chunk borders in this scene
    crossing = 0
    for lab in range(1, labels.max() + 1):
        where = np.argwhere(labels == lab)
        for axis, step in enumerate(chunks):
            lo, hi = where[:, axis].min() // step, where[:, axis].max() // step
            crossing += bool(hi > lo)
    assert crossing >= 3


def test_chunked_union_matches_scipy_label_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for conn in (6, 18, 26):
        m = rng.random((30, 30, 30)) < 0.12
        st = C.structure_for(conn)
        ref, n = ndimage.label(m, st)
        chunks = ((10, 10, 10), (12, 18), (15, 15))
        bounds = [np.r_[0, np.cumsum(c)] for c in chunks]
        blocks, offsets, total = [], [], 0
        for pos in np.ndindex(3, 2, 2):
            sl = tuple(slice(bounds[a][pos[a]], bounds[a][pos[a] + 1]) for a in range(3))
            b = C.block_components(
                m[sl],
                np.ones(m[sl].shape),
                None,
                tuple(bounds[a][pos[a]] for a in range(3)),
                m.shape,
                st,
                1.0,
                keep_labels=True,
            )
            b.update(pos=pos, sl=sl)
            blocks.append(b)
            offsets.append(total)
            total += b["n"]
        groups = C.union_across_faces(blocks, chunks, st, offsets, total)
        merged = np.zeros(m.shape, np.int64)
        for b, off in zip(blocks, offsets):
            merged[b["sl"]] = np.where(b["labels"] > 0, groups[b["labels"] + off], 0)
        pairs = set(zip(ref[m].tolist(), merged[m].tolist()))
        assert len(pairs) == n == len(set(merged[m].tolist()))  # the same partition


# ------------------------------------------------------- bad input (API)
def test_bad_inputs_raise_one_line_errors():
    data = noisy_tissue((12, 12, 12))
    ref = vol(np.ones(data.shape, np.uint8))
    with pytest.raises(InputError, match="differs from the post image grid"):
        C.segment_clusters(vol(data), baseline=vol(noisy_tissue((10, 12, 12))), reference_mask=ref)
    with pytest.raises(InputError, match="reference ROI is empty"):
        C.segment_clusters(vol(data), reference_mask=vol(np.zeros(data.shape, np.uint8)))
    outside = Volume(
        np.ones((4, 4, 4), np.uint8),
        np.diag([1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, 500.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    )
    with pytest.raises(InputError, match="outside the image"):
        C.segment_clusters(vol(data), reference_mask=outside)
    with pytest.raises(InputError, match="all zero"):
        C.segment_clusters(vol(np.zeros((8, 8, 8), np.float32)))
    with pytest.raises(InputError, match="all NaN"):
        C.segment_clusters(vol(np.full((8, 8, 8), np.nan, np.float32)))
    with pytest.raises(InputError, match="between 0 and 1"):
        C.segment_clusters(vol(data), reference_mask=ref, threshold=1.5)
    with pytest.raises(InputError, match="method"):
        C.segment_clusters(vol(data), reference_mask=ref, method="otsu")
    with pytest.raises(InputError, match="connectivity"):
        C.segment_clusters(vol(data), reference_mask=ref, connectivity=8)
    with pytest.raises(InputError, match="min_size"):
        C.segment_clusters(vol(data), reference_mask=ref, min_size=0)
    air = vol(np.ones(data.shape, np.uint8))
    with pytest.raises(InputError, match="under 3 sigma"):
        C.segment_clusters(vol(data), reference_mask=ref, sigma=50.0)  # the "tissue" is noise
    del air


def test_threshold_under_the_rician_floor_warns_and_is_recorded():
    data = noisy_tissue((16, 16, 16), 100.0, 20.0, seed=7)  # SNR 5: 0.5 x 100 < 3 x 20
    ref = vol(np.ones(data.shape, np.uint8))
    with pytest.warns(ImmunotrackWarning, match="Rician noise floor"):
        res = C.segment_clusters(vol(data), reference_mask=ref, sigma=20.0)
    assert any("Rician noise floor" in w for w in res.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImmunotrackWarning)  # SNR 20: no warning
        C.segment_clusters(vol(noisy_tissue((16, 16, 16), 100.0, 5.0)), reference_mask=ref, sigma=5.0)


def test_nan_voxels_are_ignored_with_a_warning():
    data = noisy_tissue((16, 16, 16), 100.0, 3.0)
    data[4:7, 4:7, 4:7] = 2.0
    with_nan = data.copy()
    with_nan[10:12, :, :] = np.nan
    ref = vol((np.indices(data.shape)[0] > 12).astype(np.uint8))
    with pytest.warns(ImmunotrackWarning, match="NaN"):
        res = C.segment_clusters(vol(with_nan), reference_mask=ref, sigma=3.0)
    assert res.table.voxels.tolist() == [27]
    assert not res.labels.numpy()[10:12].any()


# ------------------------------------------------------- command line
def _write(tmp_path, name, volume):
    from napari_immunotrack.io import save_volume

    path = tmp_path / name
    save_volume(volume, path)
    return str(path)


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    s = scene(1, 20.0, True)
    d = tmp_path_factory.mktemp("segment")
    files = {
        k: _write(d, f"{k}.nii.gz", s[k]) for k in ("post", "pre", "reference_mask", "search_mask", "background_mask")
    }
    return s, files


def test_cli_segment_writes_labels_on_post_grid_and_table(scene_files, tmp_path, capsys):
    import nibabel as nib
    import pandas as pd

    s, f = scene_files
    out, table = tmp_path / "labels.nii.gz", tmp_path / "clusters.csv"
    rc = main(
        [
            "segment",
            f["post"],
            "--baseline",
            f["pre"],
            "--reference-mask",
            f["reference_mask"],
            "--search-mask",
            f["search_mask"],
            "--background-mask",
            f["background_mask"],
            "-o",
            str(out),
            "--table",
            str(table),
        ]
    )
    assert rc == 0
    post_img, lab_img = nib.load(f["post"]), nib.load(str(out))
    assert lab_img.shape == post_img.shape
    np.testing.assert_array_equal(lab_img.affine, post_img.affine)
    labels = np.asarray(lab_img.dataobj)
    assert np.issubdtype(labels.dtype, np.integer)
    df = pd.read_csv(table)
    assert sorted(np.unique(labels))[1:] == df.label.tolist()
    tp, fp, fn, _ = match(centroids(df), [c["centroid_ras_mm"] for c in s["truth"]["clusters"]])
    assert fp == 0 and fn == 0
    prov = json.loads((tmp_path / "clusters.csv.provenance.json").read_text())
    assert prov["step"] == "segment" and prov["parameters"]["connectivity"] == 26
    assert prov["inputs"]["post"]["sha256"]
    assert (tmp_path / "labels.nii.gz.provenance.json").exists()
    assert f"{len(df)} cluster(s)" in capsys.readouterr().out


def test_cli_defaults_need_only_the_image(tmp_path, capsys):
    data = noisy_tissue((20, 20, 20), 100.0, 3.0)
    data[5:8, 5:8, 5:8] = 2.0
    post = _write(tmp_path, "post.nii.gz", vol(data, np.diag([0.1, 0.1, 0.1, 1.0])))
    out = tmp_path / "l.nii.gz"
    assert main(["segment", post, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no reference ROI" in err  # the guesses are said, one line each
    import nibabel as nib

    assert np.count_nonzero(np.asarray(nib.load(str(out)).dataobj)) == 27


def _bad(argv, capsys, match_text, tmp_path, expect_rc=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == expect_rc
    assert len(err) == 1 and match_text in err[0], err
    assert not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())


def test_cli_bad_inputs_one_line_and_nothing_written(scene_files, tmp_path, capsys):
    s, f = scene_files
    out = str(tmp_path / "out.nii.gz")
    table = str(tmp_path / "out.csv")
    base = ["segment", f["post"], "-o", out, "--table", table]
    # baseline on another grid without a transform
    small = _write(tmp_path, "small_pre.nii.gz", Volume(s["pre"].data[:40], s["pre"].affine))
    _bad(base + ["--baseline", small, "--reference-mask", f["reference_mask"]], capsys, "no transform", tmp_path)
    # empty reference ROI
    empty = _write(
        tmp_path, "empty.nii.gz", s["reference_mask"].replace(data=np.zeros(s["post"].spatial_shape, np.uint8))
    )
    _bad(base + ["--reference-mask", empty], capsys, "reference ROI is empty", tmp_path)
    # reference ROI outside the image
    far = s["reference_mask"].affine.copy()
    far[:3, 3] += 100.0
    outside = _write(tmp_path, "far.nii.gz", s["reference_mask"].replace(affine=far))
    _bad(base + ["--reference-mask", outside], capsys, "outside the image", tmp_path)
    # all-zero image
    zero = _write(tmp_path, "zero.nii.gz", s["post"].replace(data=np.zeros(s["post"].spatial_shape, np.float32)))
    _bad(["segment", zero, "-o", out], capsys, "all zero", tmp_path)
    # all-NaN image
    nan = _write(tmp_path, "nan.nii.gz", s["post"].replace(data=np.full(s["post"].spatial_shape, np.nan, np.float32)))
    _bad(["segment", nan, "-o", out], capsys, "all NaN", tmp_path)
    # a bad threshold, a bad transform file, a wrong output type
    _bad(base + ["--threshold", "2"], capsys, "between 0 and 1", tmp_path)
    _bad(
        base + ["--baseline", f["pre"], "--baseline-transform", str(tmp_path / "none.tfm")],
        capsys,
        "does not exist",
        tmp_path,
    )
    _bad(["segment", f["post"], "-o", str(tmp_path / "out.csv")], capsys, "must be NIfTI", tmp_path)


def test_cli_warns_under_the_rician_floor_and_on_nan(scene_files, tmp_path, capsys):
    s, f = scene_files
    out = tmp_path / "l.nii.gz"
    rc = main(
        [
            "segment",
            f["post"],
            "--baseline",
            f["pre"],
            "--reference-mask",
            f["reference_mask"],
            "--background-mask",
            f["background_mask"],
            "--threshold",
            "0.1",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "Rician noise floor" in err and err.count("\n") == 1
    prov = json.loads((tmp_path / "l.nii.gz.provenance.json").read_text())
    assert any("Rician noise floor" in w for w in prov["warnings"])
    data = s["post"].numpy().copy()
    data[:, :3, :] = np.nan
    nanfile = _write(tmp_path, "post_nan.nii.gz", s["post"].replace(data=data))
    rc = main(
        [
            "segment",
            nanfile,
            "--baseline",
            f["pre"],
            "--reference-mask",
            f["reference_mask"],
            "--background-mask",
            f["background_mask"],
            "-o",
            str(tmp_path / "n.nii.gz"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "NaN" in err and err.count("\n") == 1


def test_cli_does_not_overwrite_without_flag(scene_files, tmp_path, capsys):
    s, f = scene_files
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    table = tmp_path / "t.csv"
    rc = main(
        [
            "segment",
            f["post"],
            "--baseline",
            f["pre"],
            "--reference-mask",
            f["reference_mask"],
            "-o",
            str(out),
            "--table",
            str(table),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0]
    assert out.read_bytes() == b"precious" and not table.exists()
    rc = main(
        [
            "segment",
            f["post"],
            "--baseline",
            f["pre"],
            "--reference-mask",
            f["reference_mask"],
            "--background-mask",
            f["background_mask"],
            "-o",
            str(out),
            "--table",
            str(table),
            "--overwrite",
        ]
    )
    assert rc == 0 and out.read_bytes()[:2] == b"\x1f\x8b" and table.exists()


def test_cli_baseline_transform_identity_resamples_another_grid(scene_files, tmp_path, capsys):
    """A baseline on a finer grid of the same world: refused alone, accepted with 'identity'."""
    s, f = scene_files
    pre = s["pre"]
    finer = pre.resample_to(
        (
            tuple(2 * n for n in pre.spatial_shape),
            pre.affine @ np.diag([0.5, 0.5, 0.5, 1.0]) + np.c_[np.zeros((4, 3)), np.r_[-0.025, -0.025, -0.025, 0]],
        )
    )
    path = _write(tmp_path, "pre_fine.nii.gz", finer)
    argv = [
        "segment",
        f["post"],
        "--baseline",
        path,
        "--reference-mask",
        f["reference_mask"],
        "--background-mask",
        f["background_mask"],
        "-o",
        str(tmp_path / "l.nii.gz"),
    ]
    assert main(argv) == 2
    assert "no transform" in capsys.readouterr().err
    assert main(argv + ["--baseline-transform", "identity"]) == 0
    out = capsys.readouterr().out
    n = int(out.split(" cluster")[0])
    assert n == len(s["truth"]["clusters"])


def test_percentile_rule_on_the_pre_injection_image_finds_no_cluster():
    """Issue 22: on the day-0 T2*w (no cells yet) with the tumour as search ROI the percentile rule used to report
    110 'iron clusters' brighter than the muscle; every rule now needs voxels darker than the reference."""
    from napari_immunotrack.data import sample_study_root
    from napari_immunotrack.io import load_volume

    for ses, expect_clusters in (("day0", False), ("day1", True)):
        d = sample_study_root() / "sub-01" / f"ses-{ses}"
        t2s = load_volume(d / "anat" / f"sub-01_ses-{ses}_T2starw.nii.gz")
        dseg = load_volume(d / "rois" / f"sub-01_ses-{ses}_dseg.nii.gz")
        lab = dseg.numpy()
        tumour = dseg.replace(data=(lab == 7).astype(np.uint8))
        muscle = dseg.replace(data=(lab == 1).astype(np.uint8))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = C.segment_clusters(t2s, reference_mask=muscle, search_mask=tumour, method="percentile")
        assert any("fixed share" in str(w.message) for w in caught)  # the rule says what it is
        assert res.parameters["rule"]["fixed_share_of_search_region"] is True
        if expect_clusters:
            assert len(res.table) > 0 and (res.table["cnr"] > 0).all() and (res.table["mean_signal_norm"] < 1).all()
        else:
            assert len(res.table) == 0
