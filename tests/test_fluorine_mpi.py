"""19F cell counting and MPI iron quantification against simulated truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.analysis.fluorine import AVOGADRO, fluorine_cells, rician_correct
from napari_immunotrack.analysis.mpi import mpi_calibration, mpi_iron
from napari_immunotrack.cli import main
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.io import save_labels, save_volume
from napari_immunotrack.simulate import quantitative_scene
from napari_immunotrack.volume import Volume


@pytest.fixture(scope="module")
def scene():
    return quantitative_scene(seed=3)


def noise_mask_of(sc):
    """A signal-free region of the 19F image (no depot, no tube): a slab at the far end of the FOV."""
    f19 = sc["f19"]
    mask = np.zeros(f19.spatial_shape, np.uint8)
    clean = sc["f19_noiseless"].numpy() == 0
    mask[:12] = clean[:12]
    return f19.replace(data=mask, unit="label", name="air")


# ---------------------------------------------------------------------------- 19F
def test_f19_counts_within_15_percent(scene):
    sc = scene
    df = fluorine_cells(
        sc["f19"],
        sc["f19_depot_labels"],
        sc["f19_reference_mask"],
        sc["f19_reference_mM"],
        1e12,
        noise_mask=noise_mask_of(sc),
    ).set_index("label")
    for depot in sc["f19_depots"]:
        row = df.loc[depot["label"]]
        assert row["status"] == "ok"
        assert row["cell_count"] == pytest.approx(depot["cells"], rel=0.15), depot
        assert row["fluorine_atoms"] == pytest.approx(depot["atoms"], rel=0.15)
    # detection limit: 3.5 sigma in atoms / F_c; sigma = gain c_ref / SNR, so 3.5 (c_ref / SNR) mM per voxel
    expected = 3.5 * (sc["f19_reference_mM"] / 20.0) * sc["f19_atoms_per_mM_voxel"] / 1e12
    assert df["detection_limit_cells_per_voxel"].iloc[0] == pytest.approx(expected, rel=0.05)
    # the whole-ROI count comes with its standard error (coverage over repetitions: test_fluorine_limit.py)
    for depot in sc["f19_depots"]:
        row = df.loc[depot["label"]]
        assert row["cell_count_ci95_low"] < row["cell_count"] < row["cell_count_ci95_high"]
        assert abs(row["cell_count"] - depot["cells"]) < 3 * row["cell_count_se"]
        assert row["cell_count"] == pytest.approx(depot["cells"], rel=0.05)
        assert row["detection_limit_cells_roi"] > row["detection_limit_cells_per_voxel"]
    params = df.attrs["parameters"]
    assert params["sigma"] == pytest.approx(sc["f19_sigma"], rel=0.05)
    assert params["atoms_per_reference_voxel"] == pytest.approx(
        sc["f19_reference_mM"] * 1e-3 * AVOGADRO * sc["f19"].voxel_volume_mm3 * 1e-6
    )


def test_f19_automatic_sigma_warns_and_still_counts(scene):
    sc = scene
    with pytest.warns(ImmunotrackWarning, match="no noise mask"):
        df = fluorine_cells(
            sc["f19"], sc["f19_depot_labels"], sc["f19_reference_mask"], sc["f19_reference_mM"], 1e12
        ).set_index("label")
    assert df.attrs["parameters"]["sigma"] == pytest.approx(sc["f19_sigma"], rel=0.05)
    for depot in sc["f19_depots"]:
        assert df.loc[depot["label"], "cell_count"] == pytest.approx(depot["cells"], rel=0.15)


def test_f19_below_detection_limit_is_flagged_not_invented():
    sc = quantitative_scene(seed=5, f19_cells=(1e5, 1e6, 150.0), mpi_cells=(2e4,))
    with pytest.warns(ImmunotrackWarning, match="below|no 19F signal"):
        df = fluorine_cells(
            sc["f19"],
            sc["f19_depot_labels"],
            sc["f19_reference_mask"],
            sc["f19_reference_mM"],
            1e12,
            noise_mask=noise_mask_of(sc),
        ).set_index("label")
    weak = df.loc[3]
    assert weak["status"] == "below detection limit"
    assert np.isnan(weak["cell_count"]) and np.isnan(weak["fluorine_atoms"])
    # the limit of this ROI and an upper bound (cells) are reported instead of a number
    assert weak["detection_limit_cells_roi"] > 150.0
    assert weak["cell_count_upper_bound"] >= 150.0 and weak["cell_count_ci95_low"] == 0.0
    assert df.loc[1, "cell_count"] == pytest.approx(1e5, rel=0.15)


def _synthetic_f19(depot_snr, seed=0, sigma=10.0, size=4):
    """Reference tube at SNR 20 (50 mM), a size^3-voxel depot of amplitude depot_snr * sigma; Rician noise."""
    rng = np.random.default_rng(seed)
    shape = (30, 30, 30)
    clean = np.zeros(shape)
    clean[3:9, 3:9, 3:9] = 20 * sigma
    clean[15 : 15 + size, 15 : 15 + size, 15 : 15 + size] = depot_snr * sigma
    img = np.hypot(clean + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape)).astype(np.float32)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    ref = np.zeros(shape, np.uint8)
    ref[3:9, 3:9, 3:9] = 1
    roi = np.zeros(shape, np.uint8)
    roi[13 : 17 + size, 13 : 17 + size, 13 : 17 + size] = 1
    noise = np.zeros(shape, np.uint8)
    noise[22:, 22:, :] = 1
    atoms_per_mm = 1e-3 * AVOGADRO * 0.125e-6
    truth_atoms = size**3 * (depot_snr / 20.0) * 50.0 * atoms_per_mm
    return Volume(img, aff, "F19"), Volume(roi, aff), Volume(ref, aff), Volume(noise, aff), truth_atoms


def test_rician_correction_bias():
    """Mean of corrected magnitudes of a constant amplitude A = 8 sigma (1e6 samples)."""
    rng = np.random.default_rng(0)
    a, sigma = 8.0, 1.0
    mag = np.hypot(a + rng.normal(0, sigma, 1_000_000), rng.normal(0, sigma, 1_000_000))
    raw = rician_correct(mag, sigma, "none").mean() / a - 1
    power = rician_correct(mag, sigma, "power").mean() / a - 1
    amplitude = rician_correct(mag, sigma, "amplitude").mean() / a - 1
    assert raw == pytest.approx(sigma**2 / (2 * a**2), abs=5e-4)  # +0.78%: magnitudes are biased high
    assert power == pytest.approx(-(sigma**2) / (2 * a**2), abs=5e-4)  # sqrt(I^2 - 2 s^2): as much low
    assert abs(amplitude) < 5e-4  # sqrt(I^2 - s^2): unbiased to second order
    with pytest.raises(InputError, match="rician_correction"):
        rician_correct(mag, sigma, "magic")


def test_f19_synthetic_depot_count():
    f19, roi, ref, noise, truth = _synthetic_f19(depot_snr=8.0, size=6)
    for method in ("power", "amplitude", "none"):
        df = fluorine_cells(
            f19, roi, ref, 50.0, 1e12, noise_mask=noise, rician_correction=method, estimator="threshold"
        )
        assert df.loc[0, "fluorine_atoms"] == pytest.approx(truth, rel=0.05), method
        assert df.loc[0, "counted_voxels"] == 216


def test_f19_near_threshold_warning():
    f19, roi, ref, noise, truth = _synthetic_f19(depot_snr=4.2, seed=2)
    with pytest.warns(ImmunotrackWarning, match="near the SNR threshold"):
        df = fluorine_cells(f19, roi, ref, 50.0, 1e12, noise_mask=noise, estimator="threshold")
    assert df.loc[0, "status"] == "near threshold" and df.loc[0, "near_threshold_fraction"] > 0.5


def test_f19_bad_inputs(scene):
    sc = scene
    args = (sc["f19"], sc["f19_depot_labels"], sc["f19_reference_mask"])
    # checked against FLUORINE_PARAMETERS: the message names the keyword, its rule and unit
    with pytest.raises(InputError, match=r"reference_concentration_mm must be greater than 0 \(mM\), got -5"):
        fluorine_cells(*args, -5.0, 1e12)
    with pytest.raises(InputError, match="fluorine_per_cell must be greater than 0"):
        fluorine_cells(*args, 50.0, 0.0)
    with pytest.raises(InputError, match="reference concentration must be a positive number"):
        fluorine_cells(*args)  # no default: still needed
    empty = sc["f19_reference_mask"].replace(data=np.zeros(sc["f19"].spatial_shape, np.uint8))
    with pytest.raises(InputError, match="reference tube mask is empty"):
        fluorine_cells(sc["f19"], sc["f19_depot_labels"], empty, 50.0, 1e12)
    dark = sc["f19_reference_mask"].replace(data=noise_mask_of(sc).numpy())
    with pytest.raises(InputError, match="SNR"):
        fluorine_cells(sc["f19"], sc["f19_depot_labels"], dark, 50.0, 1e12, noise_mask=noise_mask_of(sc))


def test_cli_fluorine(tmp_path, scene, capsys):
    sc = scene
    save_volume(sc["f19"], tmp_path / "f19.nii.gz")
    save_labels(sc["f19_reference_mask"], tmp_path / "ref.nii.gz")
    save_labels(sc["f19_depot_labels"], tmp_path / "roi.nii.gz")
    save_labels(noise_mask_of(sc), tmp_path / "air.nii.gz")
    save_labels(
        sc["f19_reference_mask"].replace(data=np.zeros(sc["f19"].spatial_shape, np.uint8)), tmp_path / "empty.nii.gz"
    )
    out = tmp_path / "cells.csv"
    base = [
        "fluorine",
        str(tmp_path / "f19.nii.gz"),
        "--reference-mask",
        str(tmp_path / "ref.nii.gz"),
        "--roi",
        str(tmp_path / "roi.nii.gz"),
        "--fluorine-per-cell",
        "1e12",
        "-o",
        str(out),
    ]
    assert main(base + ["--reference-concentration", "50", "--noise-mask", str(tmp_path / "air.nii.gz")]) == 0
    df = pd.read_csv(out).set_index("label")
    assert {
        "fluorine_atoms",
        "cell_count",
        "cell_count_ci95_low",
        "cell_count_ci95_high",
        "cell_count_upper_bound",
        "detection_limit_cells_roi",
        "detection_limit_cells_per_voxel",
    } <= set(df.columns)
    for depot in sc["f19_depots"]:
        assert df.loc[depot["label"], "cell_count"] == pytest.approx(depot["cells"], rel=0.15)
    prov = json.loads((tmp_path / "cells.csv.provenance.json").read_text())
    assert prov["step"] == "fluorine" and prov["parameters"]["snr_threshold"] == 3.5
    capsys.readouterr()
    out2 = tmp_path / "bad.csv"
    bad = [
        (["--reference-concentration", "-50"], "reference-concentration"),
        (["--reference-concentration", "fifty"], "number"),
        (["--reference-concentration", "50", "--reference-mask", str(tmp_path / "empty.nii.gz")], "empty"),
        (["--reference-concentration", "50", "--connectivity", "5"], "connectivity"),
    ]
    for extra, message in bad:
        args = [a if a != str(out) else str(out2) for a in base] + extra
        rc = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (extra, err)
        assert not out2.exists()
    rc = main(base + ["--reference-concentration", "50"])  # exists, no --overwrite
    assert rc == 2 and "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------- MPI
def test_mpi_iron_within_5_percent(scene):
    sc = scene
    df = mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"], 5.0).set_index("label")
    for depot in sc["mpi_depots"]:
        row = df.loc[depot["label"]]
        assert row["iron_ng"] == pytest.approx(depot["iron_ng"], rel=0.05), depot
        assert row["cell_count"] == pytest.approx(depot["cells"], rel=0.05)
        assert abs(row["dilation_change_percent"]) < 5
    cal = df.attrs["calibration"]
    assert cal["k_per_ng"] == pytest.approx(sc["mpi_calibration"]["k_per_ng"], rel=0.02)
    assert cal["r2"] > 0.999 and cal["n"] == 3


def test_mpi_tight_roi_spill_shows_in_the_dilated_column(scene):
    sc = scene
    lab = sc["mpi_depot_labels"]
    mpi = sc["mpi"]
    # a 1 mm sphere around the first depot: far smaller than the 1.5 mm FWHM point spread
    w = np.indices(mpi.spatial_shape).reshape(3, -1).T @ mpi.affine[:3, :3].T + mpi.affine[:3, 3]
    c = np.array(sc["mpi_depots"][0]["centroid_ras_mm"])
    tight = (np.linalg.norm(w - c, axis=1) <= 1.0).reshape(mpi.spatial_shape).astype(np.uint8)
    with pytest.warns(ImmunotrackWarning, match="spill-over"):
        df = mpi_iron(mpi, lab.replace(data=tight), sc["mpi_fiducials"], 5.0, dilate_mm=1.5)
    truth = sc["mpi_depots"][0]["iron_ng"]
    assert df.loc[0, "iron_ng"] < 0.9 * truth
    assert df.loc[0, "iron_ng_dilated"] > df.loc[0, "iron_ng"] * 1.1


def test_mpi_calibration_from_signal_column_and_refusals(scene):
    sc = scene
    fid = pd.DataFrame({"iron_ng": [100.0, 400.0, 900.0], "signal": [1005.0, 3990.0, 9010.0]})
    cal = mpi_calibration(sc["mpi"], fid)
    assert cal.k_per_ng == pytest.approx(10.0, rel=0.01) and cal.method.startswith("signal column")
    one = [sc["mpi_fiducials"][0]]
    with pytest.raises(InputError, match="1 fiducial"):
        mpi_iron(sc["mpi"], sc["mpi_depot_labels"], one, 5.0)
    same = [dict(f, iron_ng=1000.0) for f in sc["mpi_fiducials"]]
    with pytest.raises(InputError, match="same iron mass"):
        mpi_iron(sc["mpi"], sc["mpi_depot_labels"], same, 5.0)
    away = [dict(f, position_ras_mm=[500.0, 0.0, 0.0]) for f in sc["mpi_fiducials"]]
    with pytest.raises(InputError, match="outside the MPI field of view"):
        mpi_iron(sc["mpi"], sc["mpi_depot_labels"], away, 5.0)
    with pytest.raises(InputError, match=r"iron_per_cell_pg must be greater than 0 \(pg Fe\), got -1"):
        mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"], -1.0)  # MPI_PARAMETERS' rule
    with pytest.warns(ImmunotrackWarning, match="only two fiducials"):
        mpi_calibration(sc["mpi"], sc["mpi_fiducials"][:2])


def test_mpi_below_detection_limit():
    sc = quantitative_scene(seed=4, mpi_cells=(2e5, 60.0), f19_cells=(1e6,))  # 0.3 ng: under the noise
    with pytest.warns(ImmunotrackWarning, match="below the detection limit"):
        df = mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"], 5.0).set_index("label")
    assert df.loc[2, "status"] == "below detection limit" and np.isnan(df.loc[2, "cell_count"])
    assert df.loc[1, "iron_ng"] == pytest.approx(1000.0, rel=0.05)


def test_cli_mpi(tmp_path, scene, capsys):
    sc = scene
    save_volume(sc["mpi"], tmp_path / "mpi.nii.gz")
    save_labels(sc["mpi_depot_labels"], tmp_path / "roi.nii.gz")
    rows = [
        {
            "x_mm": f["position_ras_mm"][0],
            "y_mm": f["position_ras_mm"][1],
            "z_mm": f["position_ras_mm"][2],
            "iron_ng": f["iron_ng"],
            "radius_mm": 3.0,
        }
        for f in sc["mpi_fiducials"]
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "fid.csv", index=False)
    pd.DataFrame(rows[:1]).to_csv(tmp_path / "fid1.csv", index=False)
    out = tmp_path / "iron.csv"
    base = ["mpi", str(tmp_path / "mpi.nii.gz"), "--roi", str(tmp_path / "roi.nii.gz"), "-o", str(out)]
    assert main(base + ["--fiducials", str(tmp_path / "fid.csv"), "--iron-per-cell", "5"]) == 0
    df = pd.read_csv(out).set_index("label")
    assert {"iron_ng", "cell_count", "iron_ng_dilated"} <= set(df.columns)
    for depot in sc["mpi_depots"]:
        assert df.loc[depot["label"], "iron_ng"] == pytest.approx(depot["iron_ng"], rel=0.05)
    prov = json.loads((tmp_path / "iron.csv.provenance.json").read_text())
    assert prov["calibration"]["r2"] > 0.999 and len(prov["calibration"]["fiducials"]) == 3
    capsys.readouterr()
    out2 = tmp_path / "bad.csv"
    bad = [
        (["--fiducials", str(tmp_path / "fid1.csv"), "--iron-per-cell", "5"], "at least 2"),
        (["--fiducials", str(tmp_path / "fid.csv"), "--iron-per-cell", "-5"], "--iron-per-cell"),
        (["--fiducials", str(tmp_path / "nofile.csv"), "--iron-per-cell", "5"], "does not exist"),
    ]
    for extra, message in bad:
        rc = main([a if a != str(out) else str(out2) for a in base] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (extra, err)
        assert not out2.exists()


# ---------------------------------------------------------------------------- issue 22: MPI names and bounds
def test_mpi_intercept_scales_with_the_roi_volume():
    """A residual per-voxel background (0.3 a.u.) makes the fit's intercept; each ROI gets its own share of it."""
    from napari_immunotrack.analysis.mpi import mpi_iron

    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    img = np.full((60, 60, 60), 0.3)
    fids = []
    for (z, y, x), ng in (((8, 8, 8), 100.0), ((8, 8, 50), 500.0), ((50, 8, 8), 1000.0)):
        img[z, y, x] += 10.0 * ng
        fids.append({"x_mm": z * 0.5, "y_mm": y * 0.5, "z_mm": x * 0.5, "iron_ng": ng})  # eye-like affine: axis 0 is x
    img[30, 30, 30] += 250.0  # 25 ng in a big ROI (20^3 voxels)
    img[45, 45, 45] += 250.0  # 25 ng in a small one (5^3)
    roi = np.zeros(img.shape, np.uint8)
    roi[20:40, 20:40, 20:40] = 1
    roi[43:48, 43:48, 43:48] = 2
    df = mpi_iron(
        Volume(img.astype(np.float32), aff, "MPI"),
        Volume(roi, aff),
        pd.DataFrame(fids),
        5.0,
        background=0.0,
        dilate_mm=0.0,
    ).set_index("label")
    assert df.attrs["calibration"]["intercept_model"] == "volume"
    assert df.attrs["calibration"]["intercept"] > 200  # 0.3 x ~900 voxels per sphere
    for label in (1, 2):  # a constant intercept would give 238 ng and 1.7 ng
        assert df.loc[label, "iron_ng_measured"] == pytest.approx(25.0, rel=0.01)


def test_mpi_below_detection_limit_gives_an_upper_bound_never_a_negative_count():
    from napari_immunotrack.analysis.mpi import mpi_iron

    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    rng = np.random.default_rng(3)
    img = rng.normal(0.0, 1.0, (50, 50, 50))
    fids = []
    for (z, y, x), ng in (((8, 8, 8), 100.0), ((8, 8, 40), 500.0), ((40, 8, 8), 1000.0)):
        img[z, y, x] += 10.0 * ng
        fids.append({"x_mm": z * 0.5, "y_mm": y * 0.5, "z_mm": x * 0.5, "iron_ng": ng})  # eye-like affine: axis 0 is x
    roi = np.zeros(img.shape, np.uint8)
    roi[20:35, 20:35, 20:35] = 1  # empty: noise only
    roi[38:46, 38:46, 38:46] = 2
    img[42, 42, 42] += 2000.0  # 200 ng: detected
    df = mpi_iron(
        Volume(img.astype(np.float32), aff, "MPI"), Volume(roi, aff), pd.DataFrame(fids), 5.0, background=0.0
    ).set_index("label")
    empty = df.loc[1]
    assert empty["status"] == "below detection limit" and np.isnan(empty["cell_count"])
    assert np.isnan(empty["cell_count_dilated"])
    sd = empty["iron_ng_noise_sd"]
    assert empty["cell_count_upper_bound"] == pytest.approx((max(empty["iron_ng_measured"], 0) + 2 * sd) / 0.005)
    assert empty["detection_limit_cells_roi"] == pytest.approx(3.5 * sd / 0.005)
    hot = df.loc[2]
    assert hot["status"] == "ok" and hot["iron_ng"] == pytest.approx(200.0, rel=0.05)
    assert np.isnan(hot["cell_count_upper_bound"])
    counts = df[["cell_count", "cell_count_dilated", "cell_count_upper_bound"]].to_numpy()
    assert np.all(counts[np.isfinite(counts)] >= 0)
