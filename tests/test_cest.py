"""CEST analysis against analytic spectra and an independent Bloch-McConnell simulator (bmctool).

Amplitude definition (docs/methods/cest.md#validation): the truth of a pool's amplitude is
its isolated effect in the Bloch-McConnell simulation, Z without the pool minus Z with it at
the pool's offset; the fitted Lorentzian amplitude is the same difference in the fitted model.
"SNR 100" is M0 / noise sigma per voxel (Rician magnitude noise); amplitudes are compared on
the fit of an ROI's mean spectrum (200 voxels), as CEST studies report them, over 8 noise
realisations (median within 10 %, each within 25 %). Per-voxel B0 is
compared voxel by voxel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _bmc_reference as ref  # noqa: E402 (bmctool is in the testing extra: missing is a failure)
import numpy as np
import pytest

from napari_immunotrack.analysis import cest
from napari_immunotrack.errors import InputError
from napari_immunotrack.simulate import cest as sim
from napari_immunotrack.volume import Volume

OFFSETS = tuple(np.linspace(-6, 6, 49).round(6))
WASSR_OFFSETS = tuple(np.linspace(-1.5, 1.5, 31).round(6))
SHIFTS = tuple(np.linspace(-0.5, 0.5, 11).round(6))


def _rician(z, sigma, rng):
    return np.abs(z + rng.normal(0, sigma, z.shape) + 1j * rng.normal(0, sigma, z.shape))


def _lorentzians(dw, *pools, c=1.0):
    z = np.full(np.shape(dw), c, float)
    for a, fwhm, centre in pools:
        z -= a * (fwhm / 2) ** 2 / ((fwhm / 2) ** 2 + (np.asarray(dw) - centre) ** 2)
    return z


# ----------------------------------------------------------------------------- analytic
def test_mtrasym_is_exact_on_analytic_spectra():
    dw = np.r_[-6:6.01:0.25]
    truth = _lorentzians(dw, (0.8, 1.2, 0.0), (0.05, 0.8, 3.5), (0.03, 3.0, -3.5), (0.1, 25, -2.5))
    z = truth[:, None]
    for at in (3.5, 2.0, 1.0):
        expected = truth[np.isclose(dw, -at)][0] - truth[np.isclose(dw, at)][0]
        assert cest.mtrasym(z, dw, [at])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_mtrasym_after_b0_shift_matches_the_unshifted_truth():
    dw = np.r_[-6:6.01:0.1]
    pools = [(0.8, 1.2, 0.0), (0.05, 0.8, 3.5), (0.03, 3.0, -3.5)]
    b0 = np.array([-0.37, 0.0, 0.21])
    z = np.stack([_lorentzians(dw, *[(a, w, c + s) for a, w, c in pools]) for s in b0], axis=1)
    expected = _lorentzians(np.array([-3.5]), *pools)[0] - _lorentzians(np.array([3.5]), *pools)[0]
    got = cest.mtrasym(z, dw, [3.5], b0)[0]
    np.testing.assert_allclose(got, expected, atol=2e-4)
    # the B0 found from the minimum is the shift
    np.testing.assert_allclose(cest.b0_from_minimum(z, dw), b0, atol=2e-3)


def test_lorentzian_fit_recovers_its_model_exactly():
    rng = np.random.default_rng(3)
    dw = np.linspace(-6, 6, 50)
    pools = cest.make_pools()
    _, lo, hi = cest._pack(pools)
    truth = np.array([1.0, 0.75, 1.4, 0.0, 0.03, 1.0, 3.5, 0.015, 1.5, 2.2, 0.02, 3.0, -3.5, 0.1, 30.0, -2.5])
    params = np.tile(truth, (50, 1))
    params[:, 3] = rng.uniform(-0.4, 0.4, 50)
    params[:, 4] = rng.uniform(0.01, 0.06, 50)
    z = cest.lorentzian_model(params, dw).T
    fit = cest.fit_lorentzians(z, dw, pools)
    np.testing.assert_allclose(fit.values("amide", "amplitude"), params[:, 4], atol=1e-6)
    np.testing.assert_allclose(fit.values("water", "offset"), params[:, 3], atol=1e-6)
    assert np.all(fit.params >= lo - 1e-12) and np.all(fit.params <= hi + 1e-12)


# ----------------------------------------------------------------------------- Bloch-McConnell (bmctool)
def test_own_bloch_mcconnell_solver_agrees_with_bmctool():
    params = ref.parameters()
    tissue = sim.Tissue(
        "cfg",
        params.water_pool.t1,
        params.water_pool.t2,
        tuple(sim.BMPool(f"p{i}", p.f, p.t1, p.t2, p.k, p.dw) for i, p in enumerate(params.cest_pools)),
    )
    mine = sim.bloch_mcconnell_z(tissue, np.array(OFFSETS), b1_ut=1.0, tsat_s=2.0, field_t=float(params.system.b0))
    theirs = ref.z_spectrum(OFFSETS)
    assert np.max(np.abs(mine - theirs)) < 3e-3  # bmctool rounds gamma and adds 1 ms gaps


def test_b0_from_wassr_on_bloch_mcconnell_spectra_within_0_02_ppm():
    rng = np.random.default_rng(0)
    w = np.stack([ref.z_spectrum(WASSR_OFFSETS, s, b1_ut=0.2, tsat_s=0.5) for s in SHIFTS], axis=1)
    dw = np.array(WASSR_OFFSETS)
    noisy = _rician(np.repeat(w, 10, axis=1), 0.01, rng)  # SNR 100
    truth = np.repeat(SHIFTS, 10)
    err = cest.b0_from_symmetry(noisy, dw) - truth
    assert np.max(np.abs(err)) < 0.02
    assert abs(np.mean(err)) < 0.005


def test_b0_from_z_spectrum_on_bloch_mcconnell_spectra():
    z = np.stack([ref.z_spectrum(OFFSETS, s) for s in SHIFTS], axis=1)
    dw = np.array(OFFSETS)
    # noise-free: the spline minimum and the water pool of the Lorentzian fit both within 0.02 ppm
    assert np.max(np.abs(cest.b0_from_minimum(z, dw) - SHIFTS)) < 0.02
    fit = cest.fit_lorentzians(z, dw)
    assert np.max(np.abs(fit.values("water", "offset") - SHIFTS)) < 0.02


@pytest.mark.parametrize("case, sigma", [("reporter", 0.01), ("amide", 0.01), ("amide", 0.0)])
def test_pool_amplitude_on_bloch_mcconnell_spectra_within_10_percent(case, sigma):
    """Median over 8 ROIs (200 voxels at SNR 100 each) within 10 % of the isolated effect; every ROI within 25 %."""
    rng = np.random.default_rng(7 if case == "amide" else 8)
    if case == "amide":  # bmctool's own 5-pool tissue
        drop, add, at, pools = (), (), 3.5, cest.make_pools()
        truth = ref.z_spectrum((3.5,), drop=(3.5,))[0] - ref.z_spectrum((3.5,))[0]
        name = "amide"
    else:  # the amide replaced by a lysine-rich-protein-like reporter at 3.4 ppm
        lrp = (0.0012, 1.0, 0.1, 100.0, 3.4)
        drop, add, at = (3.5,), (lrp,), 3.4
        pools = cest.make_pools(["amine", "noe", "mt"], {"lrp": 3.4})
        truth = ref.z_spectrum((3.4,), drop=(3.5,))[0] - ref.z_spectrum((3.4,), drop=(3.5,), add=(lrp,))[0]
        name = "lrp"
    assert truth > 0.005
    shift = 0.23
    z = ref.z_spectrum(OFFSETS, shift, drop=drop, add=add)
    dw = np.array(OFFSETS)
    errors = []
    for _ in range(8 if sigma else 1):
        voxels = _rician(np.repeat(z[:, None], 200, axis=1), sigma, rng) if sigma else z[:, None]
        # B0 from the ROI's mean spectrum (water pool of a first fit), then the corrected spectrum is fitted
        mean = voxels.mean(axis=1, keepdims=True)
        b0 = cest.fit_lorentzians(mean, dw, pools, z_floor=0.03).values("water", "offset")
        assert abs(b0[0] - shift) < 0.02
        fit = cest.fit_lorentzians(cest.shift_spectra(mean, dw, b0), dw, pools, z_floor=0.03)
        errors.append(fit.values(name, "amplitude")[0] / truth - 1)
        assert fit.values(name, "offset")[0] == pytest.approx(at, abs=0.2)
    errors = np.array(errors)
    assert abs(np.median(errors)) < 0.10, errors
    assert np.max(np.abs(errors)) < 0.25, errors


# ----------------------------------------------------------------------------- volumes, bad input, CLI
def _small_study(tmp_path=None, snr=100.0):
    labels = np.zeros((2, 12, 12), np.uint8)
    labels[:, 2:10, 2:10] = 1
    labels[:, 4:8, 4:8] = 2
    labels[:, 5:7, 5:7] = 3
    _, yy, xx = np.mgrid[0:2, 0:12, 0:12]
    b0 = (0.03 * (xx - 6) - 0.02 * (yy - 6)).astype(float)
    m0 = np.where(labels > 0, 1000.0, 0.0)
    out = sim.simulate_cest(
        labels,
        np.diag([0.5, 0.5, 1.0, 1.0]),
        {1: "muscle", 2: "tumour", 3: "depot"},
        sim.default_offsets(61, 6.0),
        b0,
        m0,
        snr=snr,
        wassr_offsets_ppm=sim.default_wassr_offsets(31, 1.5),
        seed=1,
    )
    return out, labels, b0


def test_analyse_cest_volumes_b0_and_reporter_depot():
    out, labels, b0 = _small_study(snr=400)
    res = cest.analyse_cest(
        out["series"],
        wassr=out["wassr"],
        mtrasym_ppm=[3.4, 2.0],
        pools=cest.make_pools(["amide", "amine", "noe", "mt"], {"lrp": 3.4}),
        fit=False,
    )
    got = res.maps["b0_ppm"].data
    inside = labels > 0
    assert np.nanmax(np.abs(got[inside] - b0[inside])) < 0.02
    assert np.all(np.isnan(got[~inside]))
    mtr = res.maps["mtrasym_3.4ppm"].data
    # the reporter depot raises MTRasym at 3.4 ppm over the tumour around it by its own effect
    truth = out["truth"]["tissues"]["depot"]["effects"]["lrp"]
    gain = np.nanmean(mtr[labels == 3]) - np.nanmean(mtr[labels == 2])
    assert gain == pytest.approx(truth, rel=0.25)
    assert res.maps["mtrasym_3.4ppm"].affine.tolist() == out["series"].affine.tolist()


def test_bad_input_says_what_is_missing():
    out, _, _ = _small_study()
    series = out["series"]
    three_d = Volume(series.data[1], series.affine, name="one_offset")
    with pytest.raises(InputError, match="3D image.*4D"):
        cest.analyse_cest(three_d, offsets=[1.0])
    with pytest.raises(InputError, match="has 3 offsets but CEST series has 62 frames"):
        cest.analyse_cest(series, offsets=[1.0, 2.0, 3.0])
    no_m0 = np.array(series.metadata["SaturationOffsetsPPM"])
    no_m0[0] = -6.5
    with pytest.raises(InputError, match="no M0 reference.*--m0"):
        cest.analyse_cest(series, offsets=no_m0)
    bare = series.replace(metadata={}) if hasattr(series, "replace") else series
    with pytest.raises(InputError, match="no saturation offsets.*--offsets-ppm"):
        cest.analyse_cest(bare)
    with pytest.raises(InputError, match="--pool"):
        cest.parse_pool_option("lrp")
    # offsets in Hz in the sidecar are read with the field strength, refused without it
    ppm = np.array(series.metadata["SaturationOffsetsPPM"])
    in_hz = series.replace(metadata={"MTOffsetFrequency": list(ppm * 42.57747892 * 9.4), "MagneticFieldStrength": 9.4})
    np.testing.assert_allclose(cest.series_offsets(in_hz), ppm, atol=1e-9)
    with pytest.raises(InputError, match="in Hz.*MagneticFieldStrength"):
        cest.series_offsets(in_hz.replace(metadata={"MTOffsetFrequency": list(ppm)}))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "napari_immunotrack.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_writes_maps_atomically_and_refuses_existing(tmp_path):
    import nibabel as nib

    from napari_immunotrack.io.nifti import write_nifti

    out, labels, b0 = _small_study(snr=400)
    series_path = tmp_path / "sub-01_cest.nii.gz"
    write_nifti(out["series"], series_path)
    wassr_path = tmp_path / "sub-01_wassr.nii.gz"
    write_nifti(out["wassr"], wassr_path)
    offsets = ",".join(f"{v:g}" for v in out["series"].metadata["SaturationOffsetsPPM"])
    (tmp_path / "offsets.txt").write_text(offsets.replace(",", "\n"))
    w_offsets = ",".join(f"{v:g}" for v in out["wassr"].metadata["SaturationOffsetsPPM"])
    target = tmp_path / "maps"
    r = _cli(
        "cest",
        series_path,
        "--offsets-ppm",
        tmp_path / "offsets.txt",
        "--m0-offset",
        "-300",
        "--wassr",
        wassr_path,
        "--wassr-offsets-ppm",
        w_offsets,
        "-o",
        target,
        "--pool",
        "lrp:3.4",
        "--mtrasym-ppm",
        "3.4,2",
    )
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in target.glob("*.nii.gz"))
    for expected in (
        "b0_ppm.nii.gz",
        "mtrasym_3.4ppm.nii.gz",
        "mtrasym_2ppm.nii.gz",
        "amplitude_amide.nii.gz",
        "amplitude_lrp.nii.gz",
        "amplitude_mt.nii.gz",
        "width_noe.nii.gz",
        "offset_amine.nii.gz",
    ):
        assert expected in names
        assert (target / (expected + ".provenance.json")).exists()
    b0_map = nib.load(target / "b0_ppm.nii.gz")
    data = np.asarray(b0_map.dataobj).transpose(2, 1, 0)
    assert np.nanmax(np.abs(data[labels > 0] - b0[labels > 0])) < 0.02
    from napari_immunotrack.io import load_volume

    assert load_volume(target / "b0_ppm.nii.gz").unit == "ppm"
    assert load_volume(target / "amplitude_lrp.nii.gz").unit == "fraction of M0"
    prov = json.loads((target / "b0_ppm.nii.gz.provenance.json").read_text())
    assert prov["parameters"]["b0_method"] == "wassr"
    # an existing output folder is refused without --overwrite, untouched
    r2 = _cli("cest", series_path, "--offsets-ppm", tmp_path / "offsets.txt", "-o", target)
    assert r2.returncode == 2 and "already exists" in r2.stderr and "--overwrite" in r2.stderr
    # a list of the wrong length: one line naming the option
    r3 = _cli("cest", series_path, "--offsets-ppm", "1,2,3", "-o", tmp_path / "other")
    assert r3.returncode == 2 and "--offsets-ppm has 3 offsets" in r3.stderr and len(r3.stderr.splitlines()) == 1
    assert not (tmp_path / "other").exists()
    r4 = _cli("cest", series_path, "--offsets-ppm", ",".join(["1"] * 62), "-o", tmp_path / "other")
    assert r4.returncode == 2 and "no M0" in r4.stderr


def test_sample_cest_series_is_readable_with_its_sidecar():
    root = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study"
    found = sorted(root.glob("cest/sub-*/ses-*/*_cest.nii.gz"))
    assert found, "the sample CEST series is missing: run scripts/make_cest_sample.py"
    from napari_immunotrack.io import load_volume

    series = load_volume(found[0])
    offsets = cest.series_offsets(series)
    assert offsets.size == series.shape[0] and np.any(np.abs(offsets) >= 100)
    assert found[0].stat().st_size <= 3 * 1024 * 1024


def test_cest_step_on_the_sample_session_gives_organ_means():
    root = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study" / "cest" / "sub-01" / "ses-day1"
    series = sorted(root.glob("*_cest.nii.gz"))
    assert series, "the sample CEST series is missing: run scripts/make_cest_sample.py"
    truth = json.loads(next(root.glob("*_desc-truth_cest.json")).read_text())
    tissues = next(root.glob("*_desc-cesttissues_dseg.nii.gz"))
    maps, table = cest.cest_step(
        {"cest": series[0], "cest_wassr": next(root.glob("*_wassr.nii.gz")), "dseg": tissues},
        mtrasym_ppm=[3.4],
        pools=("amine", "noe", "mt"),
        extra_pools={"lrp": 3.4},
        label_names={1: "muscle", 2: "tumour", 3: "depot"},
    )
    from napari_immunotrack.io import load_volume

    b0_truth = load_volume(next(root.glob("*_desc-truth_b0map.nii.gz"))).numpy()
    inside = load_volume(tissues).numpy() > 0
    assert np.nanmax(np.abs(maps["b0_ppm"].numpy()[inside] - b0_truth[inside])) < 0.02
    rows = table.set_index("name")
    # the depot's reporter: MTRasym gain over the tumour around it = the LRP's isolated effect (25 %)
    gain = rows.loc["depot", "mtrasym_3.4ppm"] - rows.loc["tumour", "mtrasym_3.4ppm"]
    assert gain == pytest.approx(truth["tissues"]["depot"]["effects"]["lrp"], rel=0.25)
    # the fitted 3.4 ppm pool is larger in the depot than in the tumour by about the LRP's effect
    lrp_gain = rows.loc["depot", "amplitude_lrp"] - rows.loc["tumour", "amplitude_lrp"]
    assert lrp_gain == pytest.approx(truth["tissues"]["depot"]["effects"]["lrp"], rel=0.35)
