"""Relaxometry: fits against simulator truth, EPG against an isochromat Bloch simulation, concentrations,
the `relax` command on the bundled qMRI sample, and bad input (docs/methods/relaxometry.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_immunotrack.analysis import relaxometry as rx
from napari_immunotrack.cli import main
from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import InputError
from napari_immunotrack.simulate import relaxometry as sim
from napari_immunotrack.volume import Volume

SNR = 20.0
S0 = 1000.0
SIGMA = S0 / SNR


def _series(stack, **meta):
    """A 4D Volume of a (n, v) stack laid out as (n, v, 1, 1)."""
    return Volume(np.asarray(stack, np.float32)[:, :, None, None], np.eye(4), "MR", "a.u.", meta, "series")


def _per_truth(estimate, truth):
    return {float(t): estimate[truth == t] for t in np.unique(truth)}


# --------------------------------------------------------------------------- EPG
def _isochromat_cpmg(t2_ms, b1, esp_ms, n_echoes, n_iso=360):
    """Independent check: a Bloch simulation of isochromats spread uniformly over one dephasing cycle per
    half echo spacing (excitation along x, refocusing about x, T2 decay, no T1 recovery)."""
    phase = 2 * np.pi * np.arange(n_iso) / n_iso
    m = np.ones(n_iso, complex)  # transverse Mx + i My
    mz = np.zeros(n_iso)
    e2 = np.exp(-esp_ms / 2 / t2_ms)
    a = np.pi * b1
    echoes = []
    for _ in range(n_echoes):
        m = m * np.exp(1j * phase) * e2
        my, mz = np.cos(a) * m.imag - np.sin(a) * mz, np.sin(a) * m.imag + np.cos(a) * mz
        m = m.real + 1j * my
        m = m * np.exp(1j * phase) * e2
        echoes.append(m.mean())
    return np.array(echoes)


@pytest.mark.parametrize("b1", [1.0, 0.85, 0.6])
def test_epg_matches_an_isochromat_bloch_simulation(b1):
    epg = rx.epg_cpmg(np.array([40.0]), np.array([b1]), 10.0, 12, t1_ms=1e12)[:, 0]
    bloch = _isochromat_cpmg(40.0, b1, 10.0, 12)
    np.testing.assert_allclose(epg, bloch.real, atol=1e-9)
    assert np.abs(bloch.imag).max() < 1e-9  # CPMG: all echoes along the refocusing axis
    if b1 == 1.0:
        np.testing.assert_allclose(epg, np.exp(-10.0 * np.arange(1, 13) / 40.0), rtol=1e-12)
    else:  # stimulated echoes: the second echo is brighter than a pure decay would make it
        assert epg[1] / epg[0] > np.exp(-10.0 / 40.0)


# --------------------------------------------------------------------------- T2*
def test_t2star_within_5_percent_from_5_to_50_ms_at_snr_20_with_8_echoes():
    rng = np.random.default_rng(1)
    te = np.arange(1, 9) * 2.0
    truth = np.repeat([5.0, 10.0, 20.0, 35.0, 50.0], 3000)
    stack = sim.multi_echo_gre(S0, 1000.0 / truth, te, SIGMA, rng)
    maps = rx.fit_relaxation(_series(stack, echo_times_ms=te.tolist()), "t2star", noise_sigma=SIGMA)
    est = maps.time_ms.data[:, 0, 0]
    for t, values in _per_truth(est, truth).items():
        assert np.nanmedian(values) == pytest.approx(t, rel=0.05), t
        assert 1000.0 / np.nanmean(1000.0 / values) == pytest.approx(t, rel=0.05), t  # mean R2*
    # R is 1000/T, in 1/s
    np.testing.assert_allclose(maps.rate_per_s.data[:, 0, 0], 1000.0 / est, rtol=1e-5)
    # why the noise floor matters: the log-linear fit over-estimates a short T2* whose late echoes sit on it
    fast = rx.fit_relaxation(
        _series(stack, echo_times_ms=te.tolist()), "t2star", method="loglinear", noise_sigma=SIGMA
    ).time_ms.data[:, 0, 0]
    assert np.nanmedian(fast[truth == 5.0]) > 1.1 * 5.0
    assert 0.85 < maps.goodness.data[truth == 20.0].mean() <= 1.0  # SNR 20: the noise alone leaves ~8 %


def test_t2star_noise_sigma_estimated_from_background_when_not_given():
    rng = np.random.default_rng(2)
    te = np.arange(1, 9) * 2.0
    s0 = np.where(np.arange(20000) < 10000, S0, 0.0)  # half the image is air
    stack = sim.multi_echo_gre(s0, 1000.0 / 20.0, te, SIGMA, rng)
    maps = rx.fit_relaxation(_series(stack, echo_times_ms=te.tolist()), "t2star")
    assert maps.parameters["noise_sigma"] == pytest.approx(SIGMA, rel=0.05)
    est = maps.time_ms.data[:10000, 0, 0]
    assert np.nanmedian(est) == pytest.approx(20.0, rel=0.05)
    # the air is flagged (too few samples above noise) and has no T2*
    air = maps.unreliable.data[10000:, 0, 0]
    assert np.mean(air & rx.FLAG_LOW_SIGNAL > 0) > 0.99
    assert np.all((air != 0) | np.isnan(maps.time_ms.data[10000:, 0, 0]))


# --------------------------------------------------------------------------- T2
def test_t2_exponential_and_epg_within_5_percent_and_epg_corrects_stimulated_echoes():
    rng = np.random.default_rng(3)
    truth = np.repeat([20.0, 30.0, 45.0, 60.0], 1500)
    te = 8.0 * np.arange(1, 11)
    perfect = sim.multi_echo_se(S0, 1000.0 / truth, 8.0, 10, SIGMA, rng, b1=1.0)
    est = rx.fit_relaxation(_series(perfect, echo_times_ms=te.tolist()), "t2", noise_sigma=SIGMA).time_ms.data
    for t, values in _per_truth(est[:, 0, 0], truth).items():
        assert np.nanmedian(values) == pytest.approx(t, rel=0.05), t
    # a B1 of 0.75 (135 deg refocusing): stimulated echoes lengthen an exponential T2; EPG fits them
    b1 = 0.75
    imperfect = sim.multi_echo_se(S0, 1000.0 / truth, 8.0, 10, SIGMA, rng, b1=b1)
    series = _series(imperfect, echo_times_ms=te.tolist())
    expo = rx.fit_relaxation(series, "t2", noise_sigma=SIGMA).time_ms.data[:, 0, 0]
    epg = rx.fit_relaxation(series, "t2", method="epg", noise_sigma=SIGMA)
    assert np.nanmedian(expo[truth == 45.0]) > 1.1 * 45.0
    for t, values in _per_truth(epg.time_ms.data[:, 0, 0], truth).items():
        assert np.nanmedian(values) == pytest.approx(t, rel=0.05), t
    assert np.nanmedian(epg.extra["b1"].data) == pytest.approx(b1, abs=0.05)


def test_epg_needs_equally_spaced_echoes():
    series = _series(np.ones((4, 10)) * [[100], [80], [60], [50]], echo_times_ms=[10, 20, 35, 40])
    with pytest.raises(InputError, match="equally spaced"):
        rx.fit_relaxation(series, "t2", method="epg")


# --------------------------------------------------------------------------- T1
def test_t1_vfa_within_5_percent_with_the_right_b1_and_biased_without_it():
    rng = np.random.default_rng(4)
    truth = np.repeat([800.0, 1400.0, 2000.0], 2000)
    b1 = np.tile(np.linspace(0.8, 1.2, 2000), 3)
    flips, tr = [3.0, 10.0, 20.0], 15.0
    stack = sim.vfa_series(20000.0, 1000.0 / truth, flips, tr, SIGMA, rng, b1=b1)
    b1_map = Volume(b1[:, None, None].astype(np.float32), np.eye(4))
    for method in ("nonlinear", "linear"):
        maps = rx.fit_relaxation(
            _series(stack, flip_angles_deg=flips, repetition_time_ms=tr),
            "t1vfa",
            b1=b1_map,
            method=method,
            noise_sigma=SIGMA,
        )
        for t, values in _per_truth(maps.time_ms.data[:, 0, 0], truth).items():
            assert np.nanmedian(values) == pytest.approx(t, rel=0.05), (method, t)
    # without the B1 map, flip angles 18 % low make T1 about 33 % short (the apparent T1 scales with b1^2)
    plain = rx.fit_relaxation(
        _series(stack, flip_angles_deg=flips, repetition_time_ms=tr), "t1vfa", noise_sigma=SIGMA
    ).time_ms.data[:, 0, 0]
    low = (b1 < 0.85) & (truth == 1400.0)
    assert np.nanmedian(plain[low]) / 1400.0 == pytest.approx(0.82**2, rel=0.08)


def test_t1_saturation_and_inversion_recovery_within_5_percent():
    rng = np.random.default_rng(5)
    truth = np.repeat([300.0, 900.0, 1800.0], 1500)
    sr_t = [100.0, 300.0, 700.0, 1500.0, 3000.0, 6000.0]
    ir_t = [50.0, 250.0, 600.0, 1200.0, 2500.0, 5000.0]
    sr = sim.saturation_recovery_series(S0, 1000.0 / truth, sr_t, SIGMA, rng)
    ir = sim.inversion_recovery_series(S0, 1000.0 / truth, ir_t, SIGMA, rng, efficiency=0.95)
    sr_maps = rx.fit_relaxation(_series(sr, saturation_times_ms=sr_t), "t1sr", noise_sigma=SIGMA)
    ir_maps = rx.fit_relaxation(_series(ir, inversion_times_ms=ir_t), "t1ir", noise_sigma=SIGMA)
    for maps in (sr_maps, ir_maps):
        for t, values in _per_truth(maps.time_ms.data[:, 0, 0], truth).items():
            assert np.nanmedian(values) == pytest.approx(t, rel=0.05), (maps.model, t)
    # polarity restoration: a = M0, b = -(1 + efficiency) M0
    b = ir_maps.extra["b"].data[:, 0, 0]
    assert np.nanmedian(-b / ir_maps.amplitude.data[:, 0, 0]) == pytest.approx(1.95, rel=0.03)


# --------------------------------------------------------------------------- concentrations
def test_delta_r2star_gives_iron_within_10_percent_of_truth():
    rng = np.random.default_rng(6)
    te = np.arange(1, 9) * 2.0
    shape = (12, 20, 20)
    fe_truth = np.zeros(shape)
    for i, c in enumerate((0.2, 0.4, 0.8)):  # mM Fe: delta R2* of 12, 24 and 48 1/s at r2* = 60
        fe_truth[4 * i : 4 * i + 4, 2:18, 2:18] = c
    r2s_tissue = 1000.0 / 25.0
    relax = rx.agent_relaxivity("ferumoxytol", 9.4)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    pre = Volume(
        sim.multi_echo_gre(np.full(shape, S0), np.full(shape, r2s_tissue), te, SIGMA, rng),
        aff,
        "MR",
        "a.u.",
        {"echo_times_ms": te.tolist()},
        "pre",
    )
    post = pre.replace(
        data=sim.multi_echo_gre(np.full(shape, S0), r2s_tissue + relax.r2s * fe_truth, te, SIGMA, rng), name="post"
    )
    post_maps = rx.fit_relaxation(post, "t2star", noise_sigma=SIGMA)
    pre_maps = rx.fit_relaxation(pre, "t2star", noise_sigma=SIGMA)
    delta = rx.delta_rate(post_maps.rate_per_s, pre_maps.rate_per_s)
    conc = rx.concentration(delta, relax.r2s)
    rois = Volume((np.round(fe_truth * 10) / 1).astype(np.uint8), aff)  # labels 1, 2, 4
    table = rx.relaxometry_roi_table({"Fe_mM": conc}, rois, concentration_key="Fe_mM", metal="Fe")
    voxel_ml = 0.125e-3
    for _, row in table.iterrows():
        c = row["label"] / 10.0
        assert row["Fe_mM_mean"] == pytest.approx(c, rel=0.10)
        ug_truth = c * row["voxels"] * voxel_ml * 55.845  # mM x mL = umol
        assert row["Fe_ug"] == pytest.approx(ug_truth, rel=0.10)
    ug = rx.metal_mass_ug(conc)
    assert ug.unit == "ug" and np.nanmean(ug.data[fe_truth == 0.4]) == pytest.approx(0.4 * 0.125 * 0.055845, rel=0.1)
    assert set(table["label"]) == {2, 4, 8}


def test_relaxivity_table_and_units():
    assert rx.agent_relaxivity("ferumoxytol", 1.5).r1 == 19.0
    assert rx.agent_relaxivity("gadoteridol", 7.0).r1 == 3.21
    assert rx.agent_relaxivity("Ferucarbotran", 4.7).metal == "Fe"
    for agent in rx.AGENTS:
        for field_t in (1.5, 3.0, 4.7, 7.0, 9.4):
            r = rx.agent_relaxivity(agent, field_t)
            assert r.source and r.r1 > 0 and r.r2 > r.r1 * 0.9
    with pytest.raises(InputError, match="no default relaxivity"):
        rx.agent_relaxivity("ferumoxytol", 11.7)
    with pytest.raises(InputError, match="use one of"):
        rx.agent_relaxivity("feridex", 3.0)
    with pytest.raises(InputError, match="relaxivity"):
        rx.concentration(Volume(np.ones((2, 2, 2)), np.eye(4)), 0)


# --------------------------------------------------------------------------- headers and bad input
def test_sidecar_lists_reach_the_fit(tmp_path):
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.nifti import write_nifti

    te = [0.002, 0.004, 0.006, 0.008]
    data = (1000 * np.exp(-np.array(te)[:, None, None, None] * 1000 / 15.0) * np.ones((4, 3, 3, 3))).astype(np.float32)
    path = tmp_path / "megre.nii.gz"
    write_nifti(Volume(data, np.eye(4)), path)
    (tmp_path / "megre.json").write_text(json.dumps({"EchoTime": te, "RepetitionTime": 0.05}))
    vol = load_volume(path)
    assert vol.metadata["echo_times_ms"] == pytest.approx([2.0, 4.0, 6.0, 8.0])
    assert rx.acquisition_lists(vol)["repetition_time_ms"] == pytest.approx(50.0)
    maps = rx.fit_relaxation(vol, "t2star", noise_sigma=0)
    np.testing.assert_allclose(maps.time_ms.data, 15.0, rtol=1e-3)
    # a DICOM header holds milliseconds
    dicom_like = Volume(data, np.eye(4), metadata={"format": "dicom", "EchoTime": [2.0, 4.0, 6.0, 8.0]})
    assert rx.acquisition_lists(dicom_like)["echo_times_ms"] == [2.0, 4.0, 6.0, 8.0]


def test_bad_input_says_which_list_is_missing_and_how_to_give_it():
    four_d = _series(np.ones((4, 8)))
    with pytest.raises(InputError, match="has no echo times in its header; give them with --echo-times-ms"):
        rx.fit_relaxation(four_d, "t2star")
    with pytest.raises(InputError, match="has no flip angles.*--flip-angles-deg"):
        rx.fit_relaxation(four_d, "t1vfa")
    with pytest.raises(InputError, match="has 4 volumes but 3 echo times"):
        rx.fit_relaxation(four_d, "t2star", echo_times_ms=[1, 2, 3])
    with pytest.raises(InputError, match="do not increase"):
        rx.fit_relaxation(four_d, "t2star", echo_times_ms=[1, 3, 2, 4])
    with pytest.raises(InputError, match="no repetition time.*--tr-ms"):
        rx.fit_relaxation(four_d, "t1vfa", flip_angles_deg=[2, 5, 10, 15])
    with pytest.raises(InputError, match="single 3D volume"):
        rx.fit_relaxation(Volume(np.ones((3, 3, 3)), np.eye(4)), "t2star", echo_times_ms=[1, 2, 3])
    with pytest.raises(InputError, match="does not apply"):
        rx.fit_relaxation(four_d, "t2star", echo_times_ms=[1, 2, 3, 4], method="epg")
    with pytest.raises(InputError, match="model"):
        rx.fit_relaxation(four_d, "t3", echo_times_ms=[1, 2, 3, 4])


# --------------------------------------------------------------------------- the bundled sample and the CLI
QMRI = sample_study_root() / "qmri"


def test_sample_qmri_series_lie_in_the_study_world_and_fit_their_truth():
    from napari_immunotrack.io import load_volume

    megre = load_volume(QMRI / "sub-01/ses-day1/sub-01_ses-day1_MEGRE.nii.gz")
    assert megre.shape[0] == 8 and megre.metadata["echo_times_ms"][0] == pytest.approx(2.0)
    tissues = load_volume(QMRI / "truth/sub-01_desc-tissues_dseg.nii.gz")
    study_labels = load_volume(sample_study_root() / "sub-01/ses-day1/rois/sub-01_ses-day1_dseg.nii.gz")
    # the same world: the study's organ labels resampled onto the qMRI grid agree with the qMRI tissues
    on_grid = study_labels.resample_to(tissues, order=0).numpy()
    inside = tissues.numpy() > 0
    assert np.mean(on_grid[inside] == tissues.numpy()[inside]) > 0.9
    truth = load_volume(QMRI / "truth/sub-01_ses-day1_desc-truth_T2star_ms.nii.gz").numpy()
    maps = rx.fit_relaxation(megre, "t2star")
    ok = (maps.unreliable.numpy() == 0) & np.isfinite(truth)
    assert np.median(maps.time_ms.numpy()[ok] / truth[ok]) == pytest.approx(1.0, abs=0.03)
    assert sum(f.stat().st_size for f in QMRI.rglob("*") if f.is_file()) < 3e6


def test_relax_command_writes_maps_companions_table_and_refuses_bad_input(tmp_path, capsys):
    from napari_immunotrack.io import load_volume

    post = QMRI / "sub-01/ses-day1/sub-01_ses-day1_MEGRE.nii.gz"
    pre = QMRI / "sub-01/ses-day0/sub-01_ses-day0_MEGRE.nii.gz"
    rois = sample_study_root() / "sub-01/ses-day1/rois/sub-01_ses-day1_dseg.nii.gz"
    out = tmp_path / "t2s.nii.gz"
    table = tmp_path / "t2s.csv"
    rc = main(
        [
            "relax",
            str(post),
            "--model",
            "t2star",
            "-o",
            str(out),
            "--baseline",
            str(pre),
            "--relaxivity",
            "ferumoxytol",
            "--roi",
            str(rois),
            "--table",
            str(table),
        ]
    )
    assert rc == 0
    for suffix in ("", "_R2star", "_goodness", "_unreliable", "_S0", "_deltaR2star", "_Fe_mM", "_Fe_ug"):
        path = tmp_path / f"t2s{suffix}.nii.gz"
        assert path.exists() and (tmp_path / f"t2s{suffix}.nii.gz.provenance.json").exists(), suffix
    t2s, r2s = load_volume(out), load_volume(tmp_path / "t2s_R2star.nii.gz")
    assert (t2s.unit, r2s.unit, load_volume(tmp_path / "t2s_Fe_mM.nii.gz").unit) == ("ms", "1/s", "mM")
    series = load_volume(post)
    assert t2s.same_grid(series) and t2s.data.ndim == 3
    both = np.isfinite(t2s.numpy())
    np.testing.assert_allclose(r2s.numpy()[both], 1000.0 / t2s.numpy()[both], rtol=1e-4)
    prov = json.loads((tmp_path / "t2s.nii.gz.provenance.json").read_text())
    assert prov["step"] == "relax" and prov["parameters"]["relaxivity_per_mM_s"] == 60.0
    # iron in the liver ROI (label 3) against the simulator's truth of the liver's foci
    import pandas as pd

    df = pd.read_csv(table)
    truth = json.loads((QMRI / "truth/truth.json").read_text())
    liver_truth = sum(f["iron_pg"] for f in truth["foci"] if f["site"] == "liver") * 1e-6
    liver = df[df["label"] == 3].iloc[0]
    assert liver["Fe_ug"] == pytest.approx(liver_truth, rel=0.15)
    assert {
        "T2star_ms_mean",
        "R2star_per_s_mean",
        "deltaR2star_per_s_mean",
        "Fe_mM_mean",
        "Fe_umol",
        "unreliable_fraction",
    } <= set(df.columns)
    capsys.readouterr()
    # nothing overwritten without --overwrite; the lists on the command line win and are checked
    assert main(["relax", str(post), "--model", "t2star", "-o", str(out)]) == 2
    assert (
        main(["relax", str(post), "--model", "t2star", "-o", str(tmp_path / "b.nii.gz"), "--echo-times-ms", "2,4,6"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "already exists" in err[0] and "8 volumes but 3 echo times" in err[1]
    three_d = sample_study_root() / "sub-01/ses-day1/anat/sub-01_ses-day1_T2starw.nii.gz"
    assert main(["relax", str(three_d), "--model", "t2star", "-o", str(tmp_path / "c.nii.gz")]) == 2
    assert "single 3D volume" in capsys.readouterr().err
    assert not (tmp_path / "b.nii.gz").exists() and not (tmp_path / "c.nii.gz").exists()
    # lists given on the command line win over the header
    assert (
        main(
            [
                "relax",
                str(post),
                "--model",
                "t2star",
                "-o",
                str(tmp_path / "d.nii.gz"),
                "--echo-times-ms",
                "4,9,14,19,24,29,34,39",
            ]
        )
        == 0
    )
    doubled = load_volume(tmp_path / "d.nii.gz").numpy()
    ok = np.isfinite(doubled) & np.isfinite(t2s.numpy())
    assert np.median(doubled[ok] / t2s.numpy()[ok]) == pytest.approx(2.0, rel=0.02)


def test_multi_echo_dicom_series_gives_its_echo_times_to_the_fit(tmp_path):
    """A multi-echo DICOM series written one file per slice and echo, read back: EchoTime per frame (ms)."""
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.dicom import write_dicom_series

    te = [3.0, 6.0, 9.0, 12.0, 15.0]
    rng = np.random.default_rng(7)
    t2s = np.full((4, 6, 6), 18.0)
    stack = sim.multi_echo_gre(np.full((4, 6, 6), 2000.0), 1000.0 / t2s, te, 0.0, rng)
    vol = Volume(stack, np.diag([1.0, 0.5, 0.5, 1.0]), "MR", "a.u.", {"leading_axis": "echo", "EchoTime": te}, "gre")
    write_dicom_series(vol, tmp_path / "gre")
    back = load_volume(tmp_path / "gre")
    assert back.metadata["leading_axis"] == "echo"
    assert rx.acquisition_lists(back)["echo_times_ms"] == pytest.approx(te)
    maps = rx.fit_relaxation(back, "t2star", noise_sigma=0)
    np.testing.assert_allclose(maps.time_ms.numpy(), 18.0, rtol=0.01)


def test_header_units_by_format():
    data = np.ones((3, 2, 2, 2))
    for fmt, te, expected in (
        ("nifti1", [0.002, 0.004, 0.006], [2.0, 4.0, 6.0]),
        ("dicom", [2.0, 4.0, 6.0], [2.0, 4.0, 6.0]),
        ("paravision", [2.0, 4.0, 6.0], [2.0, 4.0, 6.0]),
    ):
        vol = Volume(
            data,
            np.eye(4),
            metadata={"format": fmt, "EchoTime": te, "RepetitionTime": 0.8 if fmt == "nifti1" else 800.0},
        )
        lists = rx.acquisition_lists(vol)
        assert lists["echo_times_ms"] == pytest.approx(expected) and lists["repetition_time_ms"] == pytest.approx(800.0)
    # the readers' unit-explicit keys win
    vol = Volume(data, np.eye(4), metadata={"format": "nifti1", "EchoTime": [1, 2, 3], "echo_times_ms": [5, 6, 7]})
    assert rx.acquisition_lists(vol)["echo_times_ms"] == [5.0, 6.0, 7.0]


def test_delta_r1_from_vfa_gives_gadolinium_within_10_percent():
    rng = np.random.default_rng(8)
    shape = (8, 16, 16)
    gd = np.zeros(shape)
    gd[:4, 2:14, 2:14], gd[4:, 2:14, 2:14] = 0.1, 0.3  # mM Gd: delta R1 = r1 x C
    relax = rx.agent_relaxivity("gadoteridol", 9.4)
    flips, tr = [3.0, 10.0, 20.0], 15.0
    b1 = np.full(shape, 0.9)
    r1_tissue = 1000.0 / 1800.0

    def series(r1):
        return Volume(
            sim.vfa_series(np.full(shape, 20000.0), r1, flips, tr, SIGMA, rng, b1=b1),
            np.eye(4),
            "MR",
            "a.u.",
            {"flip_angles_deg": flips, "repetition_time_ms": tr},
        )

    b1_map = Volume(b1.astype(np.float32), np.eye(4))
    pre = rx.fit_relaxation(series(np.full(shape, r1_tissue)), "t1vfa", b1=b1_map, noise_sigma=SIGMA)
    post = rx.fit_relaxation(series(r1_tissue + relax.r1 * gd), "t1vfa", b1=b1_map, noise_sigma=SIGMA)
    conc = rx.concentration(rx.delta_rate(post.rate_per_s, pre.rate_per_s), relax.r1, "Gd")
    assert conc.metadata["metal"] == "Gd"
    for c in (0.1, 0.3):
        assert np.nanmean(conc.numpy()[gd == c]) == pytest.approx(c, rel=0.10)
    ug = rx.metal_mass_ug(conc, "Gd").numpy()
    assert np.nanmean(ug[gd == 0.3]) == pytest.approx(0.3 * 1.0 * 157.25e-3, rel=0.10)


def test_relax_step_for_pipelines_matches_the_command(tmp_path):
    """The pipeline-step function gives the table `immunotrack relax` writes, on the bundled sample."""
    import pandas as pd

    from napari_immunotrack.io import load_volume

    post = QMRI / "sub-01/ses-day1/sub-01_ses-day1_MEGRE.nii.gz"
    pre = QMRI / "sub-01/ses-day0/sub-01_ses-day0_MEGRE.nii.gz"
    rois = sample_study_root() / "sub-01/ses-day1/rois/sub-01_ses-day1_dseg.nii.gz"
    out = rx.relax_step(load_volume(post), load_volume(rois), baseline=load_volume(pre), relaxivity="ferumoxytol")
    assert out["parameters"]["relaxivity_per_mM_s"] == 60.0 and out["concentration"].unit == "mM"
    assert (
        main(
            [
                "relax",
                str(post),
                "--model",
                "t2star",
                "-o",
                str(tmp_path / "m.nii.gz"),
                "--baseline",
                str(pre),
                "--relaxivity",
                "ferumoxytol",
                "--roi",
                str(rois),
                "--table",
                str(tmp_path / "m.csv"),
            ]
        )
        == 0
    )
    written = pd.read_csv(tmp_path / "m.csv")
    pd.testing.assert_frame_equal(out["table"].reset_index(drop=True), written, check_dtype=False, rtol=1e-6)


def test_relax_is_a_pipeline_and_batch_step():
    """The session pipeline runs `relax` on a session with a multi-echo GRE (and its baseline); others skip it."""
    from napari_immunotrack.batch import step_parameters
    from napari_immunotrack.pipeline import STEPS, analyse_inputs

    assert "relax" in STEPS
    params = step_parameters("relax")
    assert params["model"] == "t2star" and "relaxivity" in params and "series" not in params
    ses = sample_study_root() / "sub-01/ses-day1"
    inputs = {
        "T2starw": ses / "anat/sub-01_ses-day1_T2starw.nii.gz",
        "dseg": ses / "rois/sub-01_ses-day1_dseg.nii.gz",
        "MEGRE": QMRI / "sub-01/ses-day1/sub-01_ses-day1_MEGRE.nii.gz",
        "baseline_MEGRE": QMRI / "sub-01/ses-day0/sub-01_ses-day0_MEGRE.nii.gz",
    }
    out = analyse_inputs(inputs, "01", "day1", steps=["relax"], parameters={"relax": {"relaxivity": "ferumoxytol"}})
    assert "relax" not in out.errors, out.errors
    table = out.tables["relax"]
    truth = json.loads((QMRI / "truth/truth.json").read_text())
    liver_truth = sum(f["iron_pg"] for f in truth["foci"] if f["site"] == "liver") * 1e-6
    liver = table[table["organ"] == "liver"].iloc[0]
    assert liver["Fe_ug"] == pytest.approx(liver_truth, rel=0.15)
    # a session without the series: the step does not run and reports nothing
    del inputs["MEGRE"], inputs["baseline_MEGRE"]
    out = analyse_inputs(inputs, "01", "day1", steps=["relax"])
    assert "relax" not in out.tables and "relax" not in out.errors
