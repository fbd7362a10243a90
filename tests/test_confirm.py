"""T1-T2 self-confirmation (issue 7): analysis.confirm and ``immunotrack confirm``.

Truth comes from the signal equations evaluated here (a small analytic
phantom) and from the simulator's dual-mode scene.
"""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.analysis.confirm import TABLE_COLUMNS, UNCONFIRMED_WARNING, confirm_dual_mode
from napari_immunotrack.cli import main
from napari_immunotrack.errors import Cancelled, ImmunotrackWarning, InputError
from napari_immunotrack.io import load_volume, save_volume
from napari_immunotrack.simulate import dual_mode_scene, rigid_matrix
from napari_immunotrack.volume import Volume

# ----------------------------------------------------------------------------- analytic phantom
TR1, TE1, TR2, TE2 = 600.0, 8.0, 3000.0, 30.0  # spin echo, ms
R1_AGENT, R2_AGENT = 5.0, 25.0  # 1/(mM s): r2/r1 = 5
MUSCLE = dict(pd=0.8, t1=1900.0, t2=30.0)


def spin_echo(pd, r1, r2, tr_ms, te_ms):
    """S = PD (1 - exp(-TR R1)) exp(-TE R2), rates in 1/s."""
    return pd * (1 - np.exp(-tr_ms / 1000 * r1)) * np.exp(-te_ms / 1000 * r2)


def oblique_affine():
    """Axis 0 -> +z (0.5 mm), axis 1 -> -y (0.25 mm), axis 2 -> +x (0.25 mm), off-centre: nothing may assume
    the array order."""
    a = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2] = 0.5, -0.25, 0.25
    a[:3, 3] = [-5.0, 4.0, -8.0]
    a[3, 3] = 1
    return a


def phantom(seed=0, snr=25.0, shape=(24, 40, 40), concentrations=(0.9, 1.0, 1.1, 1.2), map_noise=0.02):
    """A muscle ellipsoid in air with four labelled balls and four confounders (haemorrhage, melanin: T1-bright
    and T2-dark; fat: T1-bright; air pocket), present before AND after. Weighted images are spin echo with
    Rician noise (SNR of muscle); maps are 1000/R in ms with relative Gaussian noise ``map_noise``."""
    rng = np.random.default_rng(seed)
    aff = oblique_affine()
    idx = np.indices(shape).reshape(3, -1).T
    world = (idx @ aff[:3, :3].T + aff[:3, 3]).reshape(tuple(shape) + (3,))
    centre = np.array([-5 + 0.25 * 19.5, 4 - 0.25 * 19.5, -8 + 0.5 * 11.5])
    body = (((world - centre) / np.array([4.6, 4.6, 5.5])) ** 2).sum(-1) <= 1
    pd = np.where(body, MUSCLE["pd"], 0.0)
    r1 = np.where(body, 1000 / MUSCLE["t1"], 1.0)
    r2 = np.where(body, 1000 / MUSCLE["t2"], 1.0)

    def ball(c, r):
        return ((world - np.asarray(c)) ** 2).sum(-1) <= r * r

    offsets = [(-2.2, -2.2, -2), (2.2, -2.2, 2), (-2.2, 2.2, 2), (2.2, 2.2, -2)]
    labelled = [
        {"id": i + 1, "centroid": centre + o, "concentration": c}
        for i, (o, c) in enumerate(zip(offsets, concentrations))
    ]
    confounders = {
        "haemorrhage": centre + [0, -2.5, 0],
        "melanin": centre + [2.5, 0, 0],
        "fat": centre + [0, 2.5, 0],
        "air": centre + [-2.5, 0, 0],
    }
    for kind, (t1, t2, p) in {
        "haemorrhage": (700, 14, 0.8),
        "melanin": (900, 18, 0.8),
        "fat": (800, 50, 1.0),
        "air": (1000, 1, 0.0),
    }.items():
        m = ball(confounders[kind], 0.8)
        r1[m], r2[m], pd[m] = 1000 / t1, 1000 / t2, p
    conc = np.zeros(shape)
    truth = np.zeros(shape, np.int32)
    for d in labelled:
        m = ball(d["centroid"], 0.7)
        conc[m] = d["concentration"]
        truth[m] = d["id"]
    r1p, r2p = r1 + R1_AGENT * conc, r2 + R2_AGENT * conc
    noiseless = {
        "t1_pre": spin_echo(pd, r1, r2, TR1, TE1),
        "t1_post": spin_echo(pd, r1p, r2p, TR1, TE1),
        "t2_pre": spin_echo(pd, r1, r2, TR2, TE2),
        "t2_post": spin_echo(pd, r1p, r2p, TR2, TE2),
    }
    ref1 = spin_echo(MUSCLE["pd"], 1000 / MUSCLE["t1"], 1000 / MUSCLE["t2"], TR1, TE1)
    ref2 = spin_echo(MUSCLE["pd"], 1000 / MUSCLE["t1"], 1000 / MUSCLE["t2"], TR2, TE2)
    vols = {}
    for key, s in noiseless.items():
        sigma = (ref1 if key.startswith("t1") else ref2) / snr
        mag = np.hypot(s + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
        vols[key] = Volume(mag.astype(np.float32), aff, modality="MR", name=key)
    for key, rate in (("t1_map_pre", r1), ("t1_map_post", r1p), ("t2_map_pre", r2), ("t2_map_post", r2p)):
        t = 1000.0 / rate * (1 + rng.normal(0, map_noise, shape))
        vols[key] = Volume(np.where(pd > 0, t, 0).astype(np.float32), aff, modality="MR", unit="ms", name=key)
    return {
        "volumes": vols,
        "noiseless": noiseless,
        "labelled": labelled,
        "confounders": confounders,
        "truth": Volume(truth, aff, unit="label"),
        "conc": conc,
    }


@pytest.fixture(scope="module")
def ph():
    return phantom()


def quiet(func, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, ImmunotrackWarning)]


def overlaps(labels: np.ndarray, truth: np.ndarray):
    """(truth ids hit, label ids touching no truth voxel)."""
    hit = {int(t) for t in np.unique(truth[labels > 0]) if t}
    stray = [int(lab) for lab in np.unique(labels[labels > 0]) if not (truth[labels == lab] > 0).any()]
    return hit, stray


def near(points_mm, centre, radius_mm):
    return bool(np.any(np.linalg.norm(np.asarray(points_mm) - np.asarray(centre), axis=1) < radius_mm))


# ----------------------------------------------------------------------------- analytic: weighted images
def test_relative_mode_confirms_labelled_only_and_matches_signal_equations(ph):
    v = ph["volumes"]
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"])
    assert warned == []
    assert res.confirmed and res.mode == {"t1": "relative", "t2": "relative"}
    labels = res.labels.numpy()
    truth = ph["truth"].numpy()
    hit, stray = overlaps(labels, truth)
    assert hit == {1, 2, 3, 4} and stray == [] and len(res.table) == 4
    # the regions are the labelled balls (hysteresis keeps them whole)
    assert (labels > 0).sum() == pytest.approx((truth > 0).sum(), rel=0.1)
    # no region at any confounder (haemorrhage and melanin are T1-bright/T2-dark, but were before too)
    centroids = res.table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    for kind, c in ph["confounders"].items():
        assert not near(centroids, c, 1.2), kind
    # each row: centroid at the ball's centre, mean changes as the signal equations say
    nl = ph["noiseless"]
    for d in ph["labelled"]:
        row = res.table.iloc[int(np.argmin(np.linalg.norm(centroids - d["centroid"], axis=1)))]
        assert (
            np.linalg.norm(row[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float) - d["centroid"])
            < 0.15
        )
        m = truth == d["id"]
        e1 = nl["t1_post"][m].mean() / nl["t1_pre"][m].mean() - 1
        e2 = nl["t2_post"][m].mean() / nl["t2_pre"][m].mean() - 1
        assert row.mean_t1_enhancement_fraction == pytest.approx(e1, abs=0.05)
        assert row.mean_t2_change_fraction == pytest.approx(e2, abs=0.03)
        assert row.status == "confirmed" and row.change_vs == "baseline"
        assert row.volume_mm3 == pytest.approx(m.sum() * 0.25 * 0.25 * 0.5, rel=0.1)
    assert list(res.table.columns) == TABLE_COLUMNS
    # outputs on T1POST's grid; fusion channels exclusive, overlap = the regions
    assert res.labels.same_grid(v["t1_post"])
    f = {k: vol.numpy().astype(bool) for k, vol in res.fusion.items()}
    assert np.array_equal(f["overlap"], labels > 0)
    assert not (f["t1_enhancement"] & f["overlap"]).any() and not (f["t2_darkening"] & f["overlap"]).any()
    assert res.parameters["rules"]["t1"]["sigma"] > 0


def test_weak_labels_below_the_threshold_are_not_confirmed():
    # 0.2 mM: dT2w signal is only about -5% (TR 3000 ms partly undoes T2 darkening), below the 20% rule
    p = phantom(seed=3, snr=40, concentrations=(0.2, 0.2, 1.0, 1.0))
    v = p["volumes"]
    res = confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"])
    hit, stray = overlaps(res.labels.numpy(), p["truth"].numpy())
    assert hit == {3, 4} and stray == []


# ----------------------------------------------------------------------------- analytic: relaxation rates
def test_delta_r_from_maps_fitted_with_signal_equations():
    """T2 from a two-echo spin echo, T1 from two-flip-angle spoiled gradient echo (DESPOT1), both fitted here
    from the signal equations with noise: the table's dR1, dR2 are r1 C and r2 C."""
    rng = np.random.default_rng(7)
    shape = (16, 24, 24)
    aff = np.diag([0.3, 0.3, 0.3, 1.0])
    conc = np.zeros(shape)
    conc[4:9, 4:9, 4:9] = 0.4  # region 1
    conc[4:9, 14:19, 14:19] = 0.8  # region 2
    r1 = 1000 / 1900 + R1_AGENT * conc
    r2 = 1000 / 30 + R2_AGENT * conc
    sigma = 0.0002  # SNR about 200 on the fitting images: the fits' own bias stays below 1 %

    def noisy(s):
        return np.hypot(s + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))

    def t2_map(r2_):  # two echoes, TE 10 and 30 ms
        s1, s2 = noisy(np.exp(-0.010 * r2_)), noisy(np.exp(-0.030 * r2_))
        return 20.0 / np.log(s1 / s2)

    def t1_map(r1_):  # DESPOT1: S/sin a = E1 S/tan a + M0 (1 - E1), TR 15 ms, flips 3 and 17 degrees
        tr, flips = 0.015, np.deg2rad([3.0, 17.0])
        e1 = np.exp(-tr * r1_)
        s = [noisy(np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)) for a in flips]
        y = [si / np.sin(a) for si, a in zip(s, flips)]
        x = [si / np.tan(a) for si, a in zip(s, flips)]
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return -tr * 1000 / np.log(slope)

    base1 = np.full(shape, 1000 / 1900)
    base2 = np.full(shape, 1000 / 30)
    maps = {
        "t1_map_pre": t1_map(base1),
        "t1_map_post": t1_map(r1),
        "t2_map_pre": t2_map(base2),
        "t2_map_post": t2_map(r2),
    }
    vols = {k: Volume(m.astype(np.float32), aff, unit="ms") for k, m in maps.items()}
    weighted = Volume(np.full(shape, 100.0, np.float32), aff)
    res = confirm_dual_mode(weighted, weighted, r2_over_r1=R2_AGENT / R1_AGENT, **vols)
    assert res.mode == {"t1": "delta_r", "t2": "delta_r"} and res.t1_change.unit == "1/s"
    t = res.table.sort_values("centroid_y_mm")
    assert len(t) == 2
    for (_, row), c in zip(t.iterrows(), (0.4, 0.8)):
        n = row.voxels
        assert n == 125
        se1 = res.parameters["rules"]["t1"]["sigma"] / np.sqrt(n)
        se2 = res.parameters["rules"]["t2"]["sigma"] / np.sqrt(n)
        assert abs(row.mean_delta_r1_per_s - R1_AGENT * c) < 4 * se1 + 0.01 * R1_AGENT * c
        assert abs(row.mean_delta_r2_per_s - R2_AGENT * c) < 4 * se2 + 0.01 * R2_AGENT * c
        assert row.delta_r2_over_delta_r1 == pytest.approx(5.0, abs=4 * row.delta_r2_over_delta_r1_se + 0.05)
        assert row.agent_r2_over_r1 == 5.0 and abs(row.r2_over_r1_deviation) < 0.05
    assert "k=3" in res.parameters["rules"]["t1"]["rule"]


def test_maps_in_phantom_and_relaxivity_mismatch_warning(ph):
    v = ph["volumes"]
    maps = {k: v[k] for k in ("t1_map_pre", "t1_map_post", "t2_map_pre", "t2_map_post")}
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"], r2_over_r1=5.0, **maps)
    assert warned == []  # zero maps in the air outside the body are a masked background, not news
    hit, stray = overlaps(res.labels.numpy(), ph["truth"].numpy())
    assert hit == {1, 2, 3, 4} and stray == []
    # with weighted baselines too, both kinds of change are in the table
    assert res.table.mean_t1_enhancement_fraction.notna().all()
    assert res.table.mean_delta_r1_per_s.notna().all()
    for _, row in res.table.iterrows():
        c = ph["conc"][res.labels.numpy() == row.label].mean()
        assert row.mean_delta_r1_per_s == pytest.approx(R1_AGENT * c, rel=0.05)
        assert row.mean_delta_r2_per_s == pytest.approx(R2_AGENT * c, rel=0.05)
    # an agent with another r2/r1 is flagged region by region
    res2, warned2 = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], r2_over_r1=20.0, **maps)
    assert sum("delta R2/delta R1" in w for w in warned2) == 4
    assert (res2.table.r2_over_r1_deviation < -0.7).all()


# ----------------------------------------------------------------------------- no baseline
def test_without_baseline_everything_is_unconfirmed(ph):
    v = ph["volumes"]
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"])
    assert UNCONFIRMED_WARNING in warned and UNCONFIRMED_WARNING in res.warnings
    assert "haemorrhage" in UNCONFIRMED_WARNING and "fat" in UNCONFIRMED_WARNING
    assert not res.confirmed and res.mode == {"t1": "ratio", "t2": "ratio"} and res.status == "unconfirmed"
    assert len(res.table) >= 4 and (res.table.status == "unconfirmed").all()
    assert (res.table.change_vs == "reference tissue").all()
    assert "UNCONFIRMED" in res.labels.name and "UNCONFIRMED" in res.labels.metadata["description"]
    assert all("UNCONFIRMED" in f.name for f in res.fusion.values())
    assert res.ratio is not None and res.labels.metadata["confirmed"] is False
    centroids = res.table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    # exactly why a baseline is needed: the haemorrhage is a candidate here
    assert near(centroids, ph["confounders"]["haemorrhage"], 0.5)
    hit, _ = overlaps(res.labels.numpy(), ph["truth"].numpy())
    assert hit == {1, 2, 3, 4}
    # a reference region sets the normalisation
    ref = np.zeros(v["t1_post"].spatial_shape, np.uint8)
    ref[10:14, 18:22, 18:22] = 1
    res_ref, _ = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], reference_mask=v["t1_post"].replace(data=ref))
    assert res_ref.parameters["rules"]["t1"]["reference_source"] == "mean of the reference region"
    assert res_ref.parameters["rules"]["t1"]["reference_level"] == pytest.approx(
        v["t1_post"].numpy()[ref > 0].mean(), rel=1e-5
    )


# ----------------------------------------------------------------------------- simulator scenes
@pytest.mark.parametrize("seed,snr", [(0, 10.0), (1, 25.0), (2, 50.0)])
def test_dual_mode_scene(seed, snr):
    # the scene's default concentrations (below about 0.25 mM the T2w darkening would be under the 20% rule)
    sc = dual_mode_scene(seed=seed, snr=snr)
    res, warned = quiet(confirm_dual_mode, sc["t1_post"], sc["t2_post"], sc["t1_pre"], sc["t2_pre"])
    assert warned == []
    labels, truth = res.labels.numpy(), sc["truth_labels"].numpy()
    hit, stray = overlaps(labels, truth)
    n = len(sc["truth"]["labelled"])
    assert len(hit) >= 0.9 * n and stray == [] and len(res.table) == n
    pts = res.labels.index_to_world(np.argwhere(labels > 0))
    for conf in sc["truth"]["confounders"]:
        assert not near(pts, conf["centroid_ras_mm"], conf["radius_mm"] + 0.3), conf["kind"]
    # maps find every site whatever its concentration, with dR2/dR1 = r2/r1 (noiseless maps)
    maps = {k: sc[k] for k in ("t1_map_pre", "t1_map_post", "t2_map_pre", "t2_map_post")}
    res_m = confirm_dual_mode(sc["t1_post"], sc["t2_post"], r2_over_r1=sc["truth"]["r2_over_r1"], **maps)
    hit_m, stray_m = overlaps(res_m.labels.numpy(), truth)
    assert len(hit_m) == n and stray_m == []
    assert res_m.table.delta_r2_over_delta_r1.to_numpy() == pytest.approx(sc["truth"]["r2_over_r1"], rel=1e-3)
    for d in sc["truth"]["labelled"]:
        row = res_m.table.iloc[
            int(
                np.argmin(
                    np.linalg.norm(
                        res_m.table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
                        - d["centroid_ras_mm"],
                        axis=1,
                    )
                )
            )
        ]
        assert row.mean_delta_r1_per_s == pytest.approx(d["r1"] * d["concentration_mM"], rel=1e-3)
        assert row.mean_delta_r2_per_s == pytest.approx(d["r2"] * d["concentration_mM"], rel=1e-3)


def test_scene_with_reference_region_and_gain_change():
    sc = dual_mode_scene(seed=4, snr=25.0, concentration_mM=(0.5, 1.0))
    t1_post = sc["t1_post"].replace(data=sc["t1_post"].numpy() * 1.5)  # receiver gain changed between sessions
    res, warned = quiet(confirm_dual_mode, t1_post, sc["t2_post"], sc["t1_pre"], sc["t2_pre"], normalise="none")
    assert any("scaled differently" in w for w in warned)
    res, warned = quiet(
        confirm_dual_mode, t1_post, sc["t2_post"], sc["t1_pre"], sc["t2_pre"], reference_mask=sc["reference_mask"]
    )
    assert warned == []
    assert res.parameters["rules"]["t1"]["post_scale"] == pytest.approx(1 / 1.5, rel=0.02)
    assert res.parameters["rules"]["t1"]["sigma_source"] == "SD in the reference region"
    hit, stray = overlaps(res.labels.numpy(), sc["truth_labels"].numpy())
    assert len(hit) == len(sc["truth"]["labelled"]) and stray == []


# ----------------------------------------------------------------------------- grids and transforms
def test_t2_on_another_grid_needs_a_transform():
    sc = dual_mode_scene(seed=1, snr=40.0, concentration_mM=(0.6, 1.0))
    t1_post, t1_pre = sc["t1_post"], sc["t1_pre"]
    # T2 acquired rotated by 8 degrees and shifted: its voxels sit in another frame (identity world)
    moved = rigid_matrix((0.0, 0.0, 8.0), (0.3, -0.2, 0.1))  # T1 world -> T2 world
    grid = (t1_post.spatial_shape, moved @ t1_post.affine)
    t2 = {k: sc[k].resample_to(grid, order=1, transform=moved) for k in ("t2_pre", "t2_post")}
    with pytest.raises(InputError, match="not on T1POST's grid.*transform"):
        confirm_dual_mode(t1_post, t2["t2_post"], t1_pre, t2["t2_pre"])
    # the grid differs, but the world frame is the same: identity carries it through world coordinates
    ident = {k: sc[k].resample_to(grid, order=1) for k in ("t2_pre", "t2_post")}
    res, _ = quiet(confirm_dual_mode, t1_post, ident["t2_post"], t1_pre, ident["t2_pre"], transform=np.eye(4))
    hit, stray = overlaps(res.labels.numpy(), sc["truth_labels"].numpy())
    assert len(hit) == 3 and stray == []
    assert res.labels.same_grid(t1_post)
    # moved T2 images need the registration's transform (T1 world -> T2 world)
    t2_moved = {k: v.replace(affine=moved @ v.affine) for k, v in ident.items()}
    res2, _ = quiet(confirm_dual_mode, t1_post, t2_moved["t2_post"], t1_pre, t2_moved["t2_pre"], transform=moved)
    hit2, stray2 = overlaps(res2.labels.numpy(), sc["truth_labels"].numpy())
    assert len(hit2) == 3 and stray2 == []


def test_pre_on_another_grid_needs_pre_transform():
    sc = dual_mode_scene(seed=2, snr=40.0, concentration_mM=(0.6, 1.0))
    small = Volume(sc["t1_pre"].numpy()[:, 2:, :], sc["t1_pre"].affine)
    with pytest.raises(InputError, match="T1PRE .*not on T1POST's grid.*--pre-transform"):
        confirm_dual_mode(sc["t1_post"], sc["t2_post"], small, sc["t2_pre"])
    # baseline session shifted 0.45 mm (3 voxels): with the registration's transform it confirms
    shift = np.eye(4)
    shift[:3, 3] = [0.0, 0.45, 0.0]
    pre = {k: sc[k].replace(affine=shift @ sc[k].affine) for k in ("t1_pre", "t2_pre")}
    with pytest.raises(InputError, match="T1PRE"):
        confirm_dual_mode(sc["t1_post"], sc["t2_post"], pre["t1_pre"], pre["t2_pre"])
    res, _ = quiet(confirm_dual_mode, sc["t1_post"], sc["t2_post"], pre["t1_pre"], pre["t2_pre"], pre_transform=shift)
    hit, stray = overlaps(res.labels.numpy(), sc["truth_labels"].numpy())
    assert len(hit) == 3 and stray == []


# ----------------------------------------------------------------------------- options
def test_search_mask_min_size_connectivity_and_progress(ph):
    v = ph["volumes"]
    truth = ph["truth"].numpy()
    search = v["t1_post"].replace(data=(truth == 2).astype(np.uint8))
    res = confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"], search_mask=search)
    assert overlaps(res.labels.numpy(), truth)[0] == {2} and len(res.table) == 1
    big = confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"], min_size=int((truth > 0).sum()))
    assert len(big.table) == 0 and big.labels.numpy().max() == 0
    calls = []
    confirm_dual_mode(
        v["t1_post"],
        v["t2_post"],
        v["t1_pre"],
        v["t2_pre"],
        opening=True,
        connectivity=6,
        progress=lambda f, m: calls.append(f),
    )
    assert calls[-1] == 1.0 and calls == sorted(calls)

    def cancel(fraction, message):
        if fraction > 0.5:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"], progress=cancel)


def test_region_table_of_edited_labels_and_clean_fusion(ph):
    from scipy import ndimage

    from napari_immunotrack.analysis.confirm import region_table

    v = ph["volumes"]
    res = confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"])
    labels = res.labels.numpy().copy()
    ids = np.unique(labels[labels > 0])
    labels[labels == ids[1]] = 0  # a region removed by hand
    labels[labels == ids[2]] = 17  # another one renumbered
    table = region_table(res.labels.replace(data=labels), res)
    assert sorted(table.label) == sorted([int(ids[0]), 17, int(ids[3])])
    orig = res.table.set_index("label")
    for col in ("voxels", "mean_t1_enhancement_fraction", "centroid_x_mm"):
        assert table.set_index("label").loc[17, col] == pytest.approx(orig.loc[int(ids[2]), col])
    # on another grid (e.g. a display copy), carried back through world coordinates
    canon = res.labels.replace(data=labels).canonical()
    assert region_table(canon, res).voxels.tolist() == table.voxels.tolist()
    # the single-side fusion channels hold no speck under min_size
    for key in ("t1_enhancement", "t2_darkening"):
        lab, n = ndimage.label(res.fusion[key].numpy(), structure=np.ones((3, 3, 3)))
        assert n == 0 or np.bincount(lab.ravel())[1:].min() >= 3


# ----------------------------------------------------------------------------- bad input (API)
def test_bad_inputs_api(ph):
    v = ph["volumes"]
    with pytest.raises(InputError, match="baseline was given for T1 only.*--t2-pre"):
        confirm_dual_mode(v["t1_post"], v["t2_post"], t1_pre=v["t1_pre"])
    with pytest.raises(InputError, match="baseline was given for T2 only"):
        confirm_dual_mode(v["t1_post"], v["t2_post"], t2_pre=v["t2_pre"])
    with pytest.raises(InputError, match="T1 map pre-injection is missing"):
        confirm_dual_mode(v["t1_post"], v["t2_post"], t1_map_post=v["t1_map_post"])
    for kwargs in (
        {"t1_threshold": 1.5},
        {"t2_threshold": -0.1},
        {"k_sigma": -1},
        {"min_size": 0},
        {"connectivity": 4},
        {"normalise": "zscore"},
        {"r2_over_r1": 0},
        {"transform": np.eye(3)},
    ):
        with pytest.raises(InputError):
            confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"], v["t2_pre"], **kwargs)
    four_d = Volume(np.zeros((2,) + v["t1_post"].spatial_shape, np.float32), v["t1_post"].affine)
    with pytest.raises(InputError, match="T2POST has 4 dimensions"):
        confirm_dual_mode(v["t1_post"], four_d)
    with pytest.raises(InputError, match="Volume"):
        confirm_dual_mode(v["t1_post"].numpy(), v["t2_post"])


def test_zero_negative_and_nan_baselines(ph):
    v = ph["volumes"]
    truth = ph["truth"].numpy()
    pre = v["t1_pre"].numpy().copy()
    pre[truth == 1] = 0.0  # a labelled ball has no baseline signal: cannot divide
    pre[10:12, 18:20, 18:20] = -5.0
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], v["t1_pre"].replace(data=pre), v["t2_pre"])
    assert len([w for w in warned if "zero or negative" in w and "T1PRE" in w]) == 1
    assert overlaps(res.labels.numpy(), truth) == ({2, 3, 4}, [])
    assert np.isnan(res.t1_change.numpy()[truth == 1]).all()
    cols = [
        "voxels",
        "volume_mm3",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
        "mean_t1_enhancement_fraction",
        "mean_t2_change_fraction",
    ]
    assert np.isfinite(res.table[cols].to_numpy(float)).all()
    with pytest.raises(InputError, match="T1PRE has no positive voxels"):
        confirm_dual_mode(v["t1_post"], v["t2_post"], v["t1_pre"].replace(data=np.zeros_like(pre)), v["t2_pre"])
    post = v["t2_post"].numpy().copy()
    post[truth == 3] = np.nan
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"].replace(data=post), v["t1_pre"], v["t2_pre"])
    assert any("T2POST has" in w and "NaN" in w for w in warned)
    assert overlaps(res.labels.numpy(), truth) == ({1, 2, 4}, [])
    with pytest.raises(InputError, match="T2POST has no finite values"):
        confirm_dual_mode(v["t1_post"], v["t2_post"].replace(data=np.full_like(post, np.nan)))
    maps = {k: v[k] for k in ("t1_map_pre", "t1_map_post", "t2_map_pre", "t2_map_post")}
    bad_map = maps["t2_map_pre"].numpy().copy()
    bad_map[truth == 4] = 0.0  # a failed fit inside the tissue
    maps["t2_map_pre"] = maps["t2_map_pre"].replace(data=bad_map)
    res, warned = quiet(confirm_dual_mode, v["t1_post"], v["t2_post"], **maps)
    assert any("T2 maps have" in w and "zero or negative" in w for w in warned)
    assert overlaps(res.labels.numpy(), truth) == ({1, 2, 3}, [])


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("confirm")
    sc = dual_mode_scene(seed=0, snr=25.0, concentration_mM=(0.5, 1.0))
    paths = {}
    for key in (
        "t1_pre",
        "t1_post",
        "t2_pre",
        "t2_post",
        "t1_map_pre",
        "t1_map_post",
        "t2_map_pre",
        "t2_map_post",
        "reference_mask",
    ):
        paths[key] = d / f"{key}.nii.gz"
        save_volume(sc[key], paths[key])
    return d, paths, sc


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("immunotrack confirm: error:"), err
    return err[0]


def test_cli_confirm_writes_labels_table_and_provenance(scene_files, tmp_path, capsys):
    _, p, sc = scene_files
    out, table = tmp_path / "confirmed.nii.gz", tmp_path / "regions.csv"
    rc = main(
        [
            "confirm",
            "--t1",
            str(p["t1_post"]),
            "--t2",
            str(p["t2_post"]),
            "--t1-pre",
            str(p["t1_pre"]),
            "--t2-pre",
            str(p["t2_pre"]),
            "-o",
            str(out),
            "--table",
            str(table),
            "--t1-threshold",
            "0.2",
            "--t2-threshold",
            "0.2",
            "--min-size",
            "3",
            "--maps-prefix",
            str(tmp_path / "maps"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "3 confirmed region(s)" in captured.out
    img = nib.load(str(out))
    src = nib.load(str(p["t1_post"]))
    assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    assert img.header["descrip"].item().decode().startswith("immunotrack confirm: T1-T2 confirmed")
    labels = load_volume(out)
    assert labels.same_grid(load_volume(p["t1_post"]))
    hit, stray = overlaps(labels.numpy(), sc["truth_labels"].numpy())
    assert len(hit) == 3 and stray == []
    df = pd.read_csv(table)
    assert list(df.columns) == TABLE_COLUMNS and len(df) == 3 and (df.status == "confirmed").all()
    prov = json.loads((tmp_path / "confirmed.nii.gz.provenance.json").read_text())
    assert prov["step"] == "confirm" and prov["status"] == "confirmed" and prov["confirmed"] is True
    assert prov["parameters"]["rules"]["t1"]["mode"] == "relative" and "sha256" in prov["inputs"]["t1_post"]
    assert (tmp_path / "regions.csv.provenance.json").exists()
    t1c = load_volume(tmp_path / "maps_t1_change.nii.gz")
    assert t1c.same_grid(labels) and np.nanmax(t1c.numpy()) > 1.0
    # no overwrite without --overwrite; nothing changed
    before = out.read_bytes()
    rc = main(
        [
            "confirm",
            "--t1",
            str(p["t1_post"]),
            "--t2",
            str(p["t2_post"]),
            "--t1-pre",
            str(p["t1_pre"]),
            "--t2-pre",
            str(p["t2_pre"]),
            "-o",
            str(out),
        ]
    )
    assert rc == 2 and "already exists" in _one_error_line(capsys) and out.read_bytes() == before
    rc = main(
        [
            "confirm",
            "--t1",
            str(p["t1_post"]),
            "--t2",
            str(p["t2_post"]),
            "--t1-map-pre",
            str(p["t1_map_pre"]),
            "--t1-map-post",
            str(p["t1_map_post"]),
            "--t2-map-pre",
            str(p["t2_map_pre"]),
            "--t2-map-post",
            str(p["t2_map_post"]),
            "--r2-over-r1",
            "10",
            "-o",
            str(out),
            "--overwrite",
        ]
    )
    assert rc == 0
    prov = json.loads((tmp_path / "confirmed.nii.gz.provenance.json").read_text())
    assert prov["parameters"]["mode"] == {"t1": "delta_r", "t2": "delta_r"}


def test_cli_without_baseline_marks_everything_unconfirmed(scene_files, tmp_path, capsys):
    _, p, _ = scene_files
    out, table = tmp_path / "cand.nii.gz", tmp_path / "cand.csv"
    rc = main(
        [
            "confirm",
            "--t1",
            str(p["t1_post"]),
            "--t2",
            str(p["t2_post"]),
            "-o",
            str(out),
            "--table",
            str(table),
            "--maps-prefix",
            str(tmp_path / "m"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0
    assert captured.out.startswith("UNCONFIRMED") and "haemorrhage" in captured.err
    assert "UNCONFIRMED" in nib.load(str(out)).header["descrip"].item().decode()
    prov = json.loads((tmp_path / "cand.nii.gz.provenance.json").read_text())
    assert prov["status"] == "unconfirmed" and prov["confirmed"] is False
    assert any("UNCONFIRMED" in w for w in prov["warnings"])
    df = pd.read_csv(table)
    assert len(df) > 0 and (df.status == "unconfirmed").all()
    assert (tmp_path / "m_ratio.nii.gz").exists()


def test_cli_bad_inputs_one_line_nothing_written(scene_files, tmp_path, capsys):
    d, p, sc = scene_files
    other_grid = d / "t2_other_grid.nii.gz"
    if not other_grid.exists():
        save_volume(sc["t2_post"].resample_to((sc["t2_post"].spatial_shape, np.diag([0.2, 0.2, 0.2, 1.0]))), other_grid)
    short_pre = d / "t1_pre_short.nii.gz"
    if not short_pre.exists():
        save_volume(Volume(sc["t1_pre"].numpy()[:-4], sc["t1_pre"].affine), short_pre)
    zero_pre = d / "t1_pre_zero.nii.gz"
    if not zero_pre.exists():
        save_volume(sc["t1_pre"].replace(data=np.zeros(sc["t1_pre"].spatial_shape, np.float32)), zero_pre)
    nan_post = d / "t2_nan.nii.gz"
    if not nan_post.exists():
        save_volume(sc["t2_post"].replace(data=np.full(sc["t2_post"].spatial_shape, np.nan, np.float32)), nan_post)
    base = ["confirm", "--t1", str(p["t1_post"])]
    out = tmp_path / "x.nii.gz"
    table = tmp_path / "x.csv"
    cases = [
        (["--t2", str(other_grid), "--t1-pre", str(p["t1_pre"]), "--t2-pre", str(p["t2_pre"])], "not on T1POST's grid"),
        (["--t2", str(p["t2_post"]), "--t1-pre", str(short_pre), "--t2-pre", str(p["t2_pre"])], "T1PRE"),
        (["--t2", str(p["t2_post"]), "--t1-pre", str(p["t1_pre"])], "baseline was given for T1 only"),
        (["--t2", str(p["t2_post"]), "--t2-pre", str(p["t2_pre"])], "baseline was given for T2 only"),
        (["--t2", str(p["t2_post"]), "--t1-pre", str(zero_pre), "--t2-pre", str(p["t2_pre"])], "no positive voxels"),
        (["--t2", str(nan_post)], "no finite values"),
        (["--t2", str(p["t2_post"]), "--t1-map-pre", str(p["t1_map_pre"])], "T1 map post-injection is missing"),
        (["--t2", str(p["t2_post"]), "--transform", str(d / "missing.tfm")], "does not exist"),
    ]
    for extra, expected in cases:
        rc = main(base + extra + ["-o", str(out), "--table", str(table)])
        line = _one_error_line(capsys)
        assert rc == 2 and expected in line, (extra, line)
        assert not out.exists() and not table.exists()
        assert list(tmp_path.iterdir()) == []  # no temporary or sidecar file left either
    rc = main(base + ["--t2", str(p["t2_post"]), "-o", str(tmp_path / "x.png")])
    assert rc == 2 and "NIfTI" in _one_error_line(capsys)


def test_cli_transform_identity_and_matrix_file(scene_files, tmp_path, capsys):
    d, p, sc = scene_files
    other_grid = d / "t2_post_grid2.nii.gz"
    other_pre = d / "t2_pre_grid2.nii.gz"
    grid = (
        sc["t2_post"].spatial_shape,
        sc["t2_post"].affine @ np.diag([1.0, 1.0, 1.0, 1.0])
        + np.array([[0, 0, 0, 0.05], [0, 0, 0, -0.05], [0, 0, 0, 0.0], [0, 0, 0, 0]]),
    )
    save_volume(sc["t2_post"].resample_to(grid), other_grid)
    save_volume(sc["t2_pre"].resample_to(grid), other_pre)
    args = [
        "confirm",
        "--t1",
        str(p["t1_post"]),
        "--t2",
        str(other_grid),
        "--t1-pre",
        str(p["t1_pre"]),
        "--t2-pre",
        str(other_pre),
    ]
    assert main(args + ["-o", str(tmp_path / "a.nii.gz")]) == 2
    assert "--transform" in _one_error_line(capsys)
    assert main(args + ["-o", str(tmp_path / "a.nii.gz"), "--transform", "identity"]) == 0
    np.savetxt(tmp_path / "m.txt", np.eye(4))
    assert main(args + ["-o", str(tmp_path / "b.nii.gz"), "--transform", str(tmp_path / "m.txt")]) == 0
    capsys.readouterr()
    a = load_volume(tmp_path / "a.nii.gz").numpy()
    assert np.array_equal(a, load_volume(tmp_path / "b.nii.gz").numpy())
    hit, stray = overlaps(a, sc["truth_labels"].numpy())
    assert len(hit) == 3 and stray == []
    # an ITK .tfm from a registration (T1 world -> T2 world), T2 images placed in their own moved world
    from napari_immunotrack.io.transforms import write_transform

    moved = rigid_matrix((0.0, 0.0, 6.0), (0.2, -0.3, 0.1))
    for key in ("t2_post", "t2_pre"):
        save_volume(sc[key].replace(affine=moved @ sc[key].affine), tmp_path / f"{key}_moved.nii.gz")
    write_transform(tmp_path / "t1_to_t2.tfm", moved)
    rc = main(
        [
            "confirm",
            "--t1",
            str(p["t1_post"]),
            "--t2",
            str(tmp_path / "t2_post_moved.nii.gz"),
            "--t1-pre",
            str(p["t1_pre"]),
            "--t2-pre",
            str(tmp_path / "t2_pre_moved.nii.gz"),
            "--transform",
            str(tmp_path / "t1_to_t2.tfm"),
            "-o",
            str(tmp_path / "d.nii.gz"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    d = load_volume(tmp_path / "d.nii.gz").numpy()
    assert overlaps(d, sc["truth_labels"].numpy())[1] == [] and len(np.unique(d)) == 4
    assert (d > 0).sum() == pytest.approx((load_volume(tmp_path / "a.nii.gz").numpy() > 0).sum(), rel=0.15)
    np.savetxt(tmp_path / "bad.txt", np.eye(3))
    assert main(args + ["-o", str(tmp_path / "c.nii.gz"), "--transform", str(tmp_path / "bad.txt")]) == 2
    assert "4x4" in _one_error_line(capsys)
