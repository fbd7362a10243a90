"""Physics and truth of the simulator (napari_immunotrack.simulate); no napari."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_immunotrack.errors import InputError
from napari_immunotrack.simulate import cluster_scene, dual_mode_scene, quantitative_scene, registration_pair
from napari_immunotrack.simulate import iron as iron_mod
from napari_immunotrack.simulate.fluorine import FluorineDepot, atoms_per_mM_voxel, f19_image
from napari_immunotrack.simulate.mpi import mpi_image
from napari_immunotrack.simulate.mri import Sequence, gradient_echo, relaxivity, rician, spin_echo
from napari_immunotrack.simulate.nuclear import HALF_LIFE_S, decay_factor
from napari_immunotrack.simulate.phantom import Cylinder, Sphere, grid_affine, rasterize
from napari_immunotrack.simulate.timecourse import car_t_population, simulate_population


# ----------------------------------------------------------------------------- MRI physics
def test_rician_pure_noise_mean_is_sigma_sqrt_pi_over_2():
    rng = np.random.default_rng(1)
    sigma = 37.0
    mag = rician(np.zeros((200, 200, 25), np.float32), sigma, rng)
    assert mag.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    # the SD of pure Rician noise is 0.6551 sigma (docs/methods/simulator.md#rician-noise)
    assert mag.std() == pytest.approx(0.6551 * sigma, rel=0.02)


def test_scene_background_gives_back_sigma():
    scene = cluster_scene(seed=3, snr=10.0)
    bg = scene["background_mask"].numpy().astype(bool)
    assert bg.sum() > 5000
    est = scene["pre"].numpy()[bg].mean() / np.sqrt(np.pi / 2)
    assert est == pytest.approx(scene["sigma"], rel=0.03)
    assert scene["sigma"] == pytest.approx(1000.0 / 10.0)
    # the reference ROI is muscle without cells, at the reference signal
    ref = scene["reference_mask"].numpy().astype(bool)
    assert scene["pre_noiseless"].numpy()[ref].mean() == pytest.approx(scene["reference_signal"], rel=1e-5)


def test_signal_equations():
    # spin echo and spoiled GRE against hand-computed values
    assert spin_echo(1.0, 1.0, 20.0, 1000.0, 50.0) == pytest.approx((1 - np.exp(-1)) * np.exp(-1))
    e1 = np.exp(-0.1)
    expected = np.sin(np.pi / 2) * (1 - e1) / (1 - 0 * e1) * np.exp(-0.25)
    assert gradient_echo(1.0, 1.0, 50.0, 100.0, 5.0, 90.0) == pytest.approx(expected)


def _void_voxels(iron_pg, te_ms, kind="GRE"):
    shape = (48, 48, 48)
    aff = grid_affine(shape, 0.1)
    seq = Sequence("s", kind, 40.0 if kind == "GRE" else 3000.0, te_ms, 12.0 if kind == "GRE" else 90.0)
    c = iron_mod.IronCluster([0.013, 0.021, -0.017], iron_pg, iron_pg / 5.0)
    idx, fac = iron_mod.bloom_factors(shape, aff, [c], seq, 9.4)
    return int((fac < 0.5).sum()), c


def test_bloom_grows_with_iron_and_te_and_exceeds_the_cluster():
    irons = [500.0, 2000.0, 8000.0, 32000.0]
    by_iron = [_void_voxels(fe, 5.0)[0] for fe in irons]
    assert all(b > a for a, b in zip(by_iron, by_iron[1:])), by_iron
    by_te = [_void_voxels(4000.0, te)[0] for te in (2.0, 4.0, 8.0, 16.0)]
    assert all(b > a for a, b in zip(by_te, by_te[1:])), by_te
    # the void is far larger than the cells themselves
    n, c = _void_voxels(4000.0, 5.0)
    cluster_vol_voxels = 4 / 3 * np.pi * c.radius_mm**3 / 0.1**3
    assert n > 20 * cluster_vol_voxels
    # spin echo refocuses most of it: smaller void than the gradient echo at the same TE
    assert _void_voxels(4000.0, 16.0, "SE")[0] < _void_voxels(4000.0, 16.0, "GRE")[0]


def test_bloom_matches_brute_force_average():
    shape = (30, 30, 30)
    aff = grid_affine(shape, 0.1)
    c = iron_mod.IronCluster([0.013, 0.027, -0.041], 5000.0, 1000.0)
    seq = Sequence("g", "GRE", 40.0, 5.0, 12.0)
    idx, fac = iron_mod.bloom_factors(shape, aff, [c], seq, 9.4)
    ii = np.stack(np.unravel_index(idx, shape), 1).astype(float)
    centres = ii @ aff[:3, :3].T + aff[:3, 3]
    far = np.linalg.norm(centres - c.center_mm, axis=1) > 0.15
    pick = np.flatnonzero(far)[::7]
    s = 16
    offs = (np.arange(s) + 0.5) / s - 0.5
    o = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3) @ aff[:3, :3].T
    mu = float(iron_mod.magnetic_moment(5000.0, 9.4))
    bz, _ = iron_mod.dipole_field(
        (centres[pick][:, None] + o[None]) * 1e-3, c.center_mm * 1e-3, mu, np.array([0.0, 0.0, 1.0])
    )
    brute = np.abs(np.exp(1j * iron_mod.GAMMA_1H * 5e-3 * bz).mean(1))
    assert np.abs(brute - fac[pick]).max() < 0.03


def test_moment_is_saturated_at_both_fields():
    m7 = float(iron_mod.magnetic_moment(1000.0, 7.0))
    m94 = float(iron_mod.magnetic_moment(1000.0, 9.4))
    assert m94 == pytest.approx(1e-12 * 100.0, rel=0.01)  # 1 ng Fe x 100 A m^2/kg
    assert abs(m94 / m7 - 1) < 0.002  # honest: the bloom does not grow between 7 and 9.4 T


def test_cluster_scene_truth_and_decoys():
    scene = cluster_scene(seed=2, snr=30.0, n_clusters=5, decoys=True)
    truth = scene["truth"]
    assert len(truth["clusters"]) == 5
    assert {d["kind"] for d in truth["decoys"]} == {"air", "vessel", "haemorrhage", "bone"}
    pre0, post0 = scene["pre_noiseless"], scene["post_noiseless"]
    for c in truth["clusters"]:
        ijk = tuple(np.round(post0.world_to_index([c["centroid_ras_mm"]])[0]).astype(int))
        assert post0.numpy()[ijk] < 0.2 * pre0.numpy()[ijk]
        assert c["bloom_voxels"] >= 3
        assert c["cells"] == pytest.approx(c["iron_pg"] / 5.0)
    for d in truth["decoys"]:
        ijk = tuple(np.round(pre0.world_to_index([d["centroid_ras_mm"]])[0]).astype(int))
        # dark before AND after: the baseline removes them
        assert pre0.numpy()[ijk] < 0.5 * scene["reference_signal"]
        assert post0.numpy()[ijk] == pytest.approx(pre0.numpy()[ijk], rel=0.05, abs=5.0)
    labels = scene["bloom_labels"].numpy()
    ratio = post0.numpy() / np.maximum(pre0.numpy(), 1e-6)
    assert np.all(ratio[labels > 0] < 0.5)


def test_cluster_scene_near_touching_pair_stays_separate():
    from scipy import ndimage

    scene = cluster_scene(seed=4, near_touching=True)
    a, b = scene["truth"]["near_pair"]
    labels = scene["bloom_labels"].numpy()
    va, vb = np.argwhere(labels == a), np.argwhere(labels == b)
    gap = np.sqrt(((va[:, None] - vb[None]) ** 2).sum(-1)).min()
    assert 2.0 <= gap <= 4.0
    n = ndimage.label(labels > 0, np.ones((3, 3, 3)))[1]
    assert n == len(scene["truth"]["clusters"])


def test_cluster_scene_explicit_clusters_and_bad_input():
    scene = cluster_scene(seed=0, decoys=False, clusters=[{"centroid_ras_mm": (0.5, 0.3, 0.2), "iron_pg": 3000.0}])
    assert scene["truth"]["clusters"][0]["centroid_ras_mm"] == pytest.approx([0.5, 0.3, 0.2])
    with pytest.raises(InputError, match="outside the body"):
        cluster_scene(clusters=[{"centroid_ras_mm": (4.7, 4.7, 0.0), "iron_pg": 3000.0}])
    with pytest.raises(InputError, match=r"iron_pg"):
        cluster_scene(clusters=[{"centroid_ras_mm": (0.0, 0.0, 0.0), "iron_pg": -1.0}])
    with pytest.raises(InputError, match="iron_pg_range"):
        cluster_scene(iron_pg_range=(-10.0, 100.0))
    with pytest.raises(InputError, match="snr"):
        cluster_scene(snr=0.0)
    with pytest.raises(InputError, match="iron_pg"):
        iron_mod.IronCluster([0, 0, 0], -5.0, 10.0)
    with pytest.raises(InputError, match="field_t"):
        cluster_scene(field_t=3.0)


def test_dual_mode_scene_relaxivity_and_confounders():
    scene = dual_mode_scene(seed=1, snr=25.0)
    truth = scene["truth"]
    rel = relaxivity("dual_mode", 9.4)
    assert truth["r2_over_r1"] == pytest.approx(rel.r2 / rel.r1)
    t1a, t1b = scene["t1_map_pre"].numpy(), scene["t1_map_post"].numpy()
    t2a, t2b = scene["t2_map_pre"].numpy(), scene["t2_map_post"].numpy()
    labels = scene["truth_labels"].numpy()
    for region in truth["labelled"]:
        m = labels == region["id"]
        d_r1 = (1000 / t1b[m] - 1000 / t1a[m]).mean()
        d_r2 = (1000 / t2b[m] - 1000 / t2a[m]).mean()
        assert d_r1 == pytest.approx(rel.r1 * region["concentration_mM"], rel=1e-4)
        assert d_r2 / d_r1 == pytest.approx(rel.r2 / rel.r1, rel=1e-4)
        pre1, post1 = scene["t1_pre_noiseless"].numpy()[m].mean(), scene["t1_post_noiseless"].numpy()[m].mean()
        pre2, post2 = scene["t2_pre_noiseless"].numpy()[m].mean(), scene["t2_post_noiseless"].numpy()[m].mean()
        assert (post1 - pre1) / pre1 > 0.2 and (post2 - pre2) / pre2 < -0.2
    # confounders: T1-bright haemorrhage and fat, unchanged between pre and post
    ref = scene["reference_mask"].numpy().astype(bool)
    muscle_t1 = scene["t1_pre_noiseless"].numpy()[ref].mean()
    for conf in truth["confounders"]:
        ijk = tuple(np.round(scene["t1_pre"].world_to_index([conf["centroid_ras_mm"]])[0]).astype(int))
        pre, post = scene["t1_pre_noiseless"].numpy()[ijk], scene["t1_post_noiseless"].numpy()[ijk]
        assert post == pytest.approx(pre)
        if conf["kind"] in ("haemorrhage", "fat"):
            assert pre > 1.2 * muscle_t1


# ----------------------------------------------------------------------------- quantitative
@pytest.fixture(scope="module")
def quant():
    return quantitative_scene(seed=0)


def test_pet_total_equals_decayed_injected_activity(quant):
    pet0 = quant["pet_noiseless"]
    total = pet0.numpy().sum(dtype=np.float64) * pet0.voxel_volume_mm3 / 1000.0
    expected = 1.0e6 * decay_factor(24 * 3600.0, HALF_LIFE_S["Zr-89"])
    assert quant["pet_truth_activity_bq"] == pytest.approx(expected, rel=1e-12)
    assert total == pytest.approx(expected, rel=0.01)
    noisy = quant["pet"].numpy().sum(dtype=np.float64) * pet0.voxel_volume_mm3 / 1000.0
    assert noisy == pytest.approx(expected, rel=0.01)
    # the PET grid differs from the MRI's and sits in a rotated, shifted world
    assert not quant["pet"].same_grid(quant["mri"])
    assert not np.allclose(quant["transforms"]["mri_to_pet"], np.eye(4))


def test_f19_reference_gives_back_concentration_and_exact_counts(quant):
    f19 = quant["f19"].numpy()
    ref = quant["f19_reference_mask"].numpy().astype(bool)
    assert ref.sum() > 100
    assert f19[ref].mean() / quant["f19_gain_per_mM"] == pytest.approx(quant["f19_reference_mM"], rel=0.02)
    # ideal noiseless readout: F_ref per voxel / I_ref x sum(I) / F_c gives the cells back
    f0 = quant["f19_noiseless"].numpy()
    i_ref = f0[ref].mean()
    f_ref = quant["f19_reference_mM"] * atoms_per_mM_voxel(quant["f19"].voxel_volume_mm3)
    labels = quant["f19_depot_labels"].numpy()
    for depot in quant["f19_depots"]:
        cells = f0[labels == depot["label"]].sum(dtype=np.float64) * f_ref / i_ref / depot["F_per_cell"]
        assert cells == pytest.approx(depot["cells"], rel=1e-5)


def test_mpi_exact_counts_and_fiducials(quant):
    k = quant["mpi_calibration"]["k_per_ng"]
    m0 = quant["mpi_noiseless"]
    total_ng = m0.numpy().sum(dtype=np.float64) / k
    expected = sum(d["iron_ng"] for d in quant["mpi_depots"]) + sum(f["iron_ng"] for f in quant["mpi_fiducials"])
    assert total_ng == pytest.approx(expected, rel=1e-5)
    # a lone depot, no fiducials, no noise: cells come back exactly
    aff = grid_affine((40, 40, 40), 0.5)
    img = mpi_image(np.array([[0.3, -0.2, 0.1]]), np.array([250.0]), (40, 40, 40), aff, noise_sd=0.0, k_per_ng=7.0)
    assert img["noiseless"].sum(dtype=np.float64) / 7.0 / 5.0 * 1000.0 == pytest.approx(50000.0, rel=1e-5)


def test_f19_lone_depot_exact():
    aff = grid_affine((30, 30, 30), 0.5)
    tube = Cylinder((-5.5, -5.5, -6.0), (-5.5, -5.5, 6.0), 1.2)
    depot = FluorineDepot((1.0, 0.5, 0.0), 2.5e5, 3e11, 0.8)
    out = f19_image([depot], tube, 40.0, (30, 30, 30), aff, snr=20.0)
    ref = out["reference_mask"].astype(bool)
    i_ref = out["noiseless"][ref].mean()
    f_ref = 40.0 * atoms_per_mM_voxel(0.125)
    roi = rasterize([(1, Sphere((1.0, 0.5, 0.0), 0.8 + 1.0))], (30, 30, 30), aff).astype(bool)
    assert not (roi & (out["noiseless"] > 0) & ref).any()
    depot_signal = out["noiseless"][roi].sum(dtype=np.float64)
    assert depot_signal * f_ref / i_ref / 3e11 == pytest.approx(2.5e5, rel=1e-5)
    with pytest.raises(InputError, match="c_ref_mM"):
        f19_image([depot], tube, 0.0, (30, 30, 30), aff)


def test_registration_pair_geometry():
    pair = registration_pair(seed=0)
    f2m = pair["fixed_to_moving"]
    lm = pair["landmarks_fixed"]
    assert len(lm) >= 4
    assert np.allclose(pair["landmarks_moving"], lm @ f2m[:3, :3].T + f2m[:3, 3])
    # with the true transform the moving image lines up with the anatomy; without it, worse
    labels = pair["fixed_labels"]
    aligned = pair["moving_noiseless"].resample_to(labels, transform=f2m).numpy()
    naive = pair["moving_noiseless"].resample_to(labels).numpy()
    liver = labels.numpy() == 3
    assert aligned[liver].mean() > 1.1 * naive[liver].mean()


# ----------------------------------------------------------------------------- time course
def test_timecourse_label_conservation_and_dilution():
    pop = car_t_population(cells=1e6)
    out = simulate_population(pop, [0.0, 1.0, 3.0, 7.0])
    for _t, state in out.items():
        for lab, total in state["label_balance"].items():
            assert total == pytest.approx(state["injected_label"][lab], rel=1e-9)
    node = [out[t]["sites"]["ln_inguinal_right"] for t in (1.0, 3.0, 7.0)]
    q = [n["label_per_live_cell"]["iron"] for n in node]
    assert q[0] > q[1] > q[2]  # division halves the label per cell
    liver7 = out[7.0]["sites"]["liver"]
    assert liver7["label_macrophage"]["iron"] > liver7["label_live"]["iron"]  # signal without live cells
    with pytest.raises(InputError, match="timepoints_days"):
        simulate_population(pop, [-1.0, 1.0])


# ----------------------------------------------------------------------------- study
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from napari_immunotrack.simulate.study import make_study

    root = tmp_path_factory.mktemp("study")
    a = make_study(root / "a", seed=5, timepoints_days=(0, 1), size="tiny")
    b = make_study(root / "b", seed=5, timepoints_days=(0, 1), size="tiny")
    return a, b


def test_study_layout_truth_and_determinism(tiny_study):
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.simulate.study import list_sample_files

    a, b = tiny_study
    for rel in (
        "sub-01/ses-day0/anat/sub-01_ses-day0_T2starw.nii.gz",
        "sub-01/ses-day0/anat/sub-01_ses-day0_T1w.json",
        "sub-01/ses-day1/f19/sub-01_ses-day1_19F.nii.gz",
        "sub-01/ses-day1/mpi/sub-01_ses-day1_fiducials.csv",
        "sub-01/ses-day1/optical/sub-01_ses-day1_fluo.ome.tif",
        "sub-01/ses-day1/rois/sub-01_ses-day1_dseg.tsv",
        "ground_truth.json",
    ):
        assert (a / rel).exists(), rel
    assert not (a / "sub-01/ses-day0/pet").exists()  # baseline: MRI only
    gta = json.loads((a / "ground_truth.json").read_text())
    gtb = json.loads((b / "ground_truth.json").read_text())
    assert gta == gtb
    ses = gta["subjects"]["01"]["sessions"]["ses-day1"]
    files_a, files_b = list_sample_files(a), list_sample_files(b)
    assert [f["name"] for f in files_a] == [f["name"] for f in files_b]
    assert {f["modality"] for f in files_a} >= {"MR", "PT", "NM", "F19", "MPI", "OPT", "SEG"}
    for fa, fb in zip(files_a, files_b):
        va = load_volume(fa["path"], **({"affine": fa["affine"]} if "affine" in fa else {}))
        vb = load_volume(fb["path"], **({"affine": fb["affine"]} if "affine" in fb else {}))
        assert np.array_equal(va.numpy(), vb.numpy()), fa["name"]
        assert np.allclose(va.affine, vb.affine)
        if fa["modality"] == "PT":
            # DICOM PET: quantitative headers and the total activity at scan start
            assert va.metadata["Units"] == "BQML" and va.metadata["DecayCorrection"] == "START"
            assert va.metadata["RadionuclideHalfLife"] == pytest.approx(HALF_LIFE_S["Zr-89"])
            assert va.metadata["PatientWeight"] == pytest.approx(0.025)
            total = va.numpy().sum(dtype=np.float64) * va.voxel_volume_mm3 / 1000.0
            assert total == pytest.approx(ses["pet"]["total_bq_at_scan"], rel=0.01)
            assert ses["pet"]["total_bq_image_noiseless"] == pytest.approx(ses["pet"]["total_bq_at_scan"], rel=0.01)
            expected = ses["pet"]["injected_bq"] * 2 ** (-(24.5 * 3600) / HALF_LIFE_S["Zr-89"])
            assert ses["pet"]["total_bq_at_scan"] == pytest.approx(expected, rel=1e-9)
        if fa["modality"] == "MR" and fa["session"] == "day1":
            assert va.metadata["EchoTime"] > 0 and va.metadata["MagneticFieldStrength"] == pytest.approx(9.4)
    # the rigid misalignment MRI -> PET is recorded and is a proper rotation
    m = np.array(ses["pet"]["mri_to_pet"])
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9) and not np.allclose(m, np.eye(4))


def test_study_bad_input(tmp_path):
    from napari_immunotrack.simulate.study import make_study, simulate_timepoint

    with pytest.raises(InputError, match="timepoints_days"):
        make_study(tmp_path / "x", timepoints_days=(-1, 1), size="tiny")
    with pytest.raises(InputError, match="timepoints_days"):
        simulate_timepoint(-0.5, size="tiny")
    with pytest.raises(InputError, match="size"):
        make_study(tmp_path / "y", size="huge")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
