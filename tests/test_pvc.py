"""Partial-volume correction (analysis/pvc.py) against known truth: analytic slabs, NEMA-like rods,
the sample study's own ROIs blurred with the simulator's PSF."""

import glob
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_immunotrack.analysis.pvc import (
    PointSpread,
    add_pvc_columns,
    correct_means,
    gaussian_blur,
    gtm,
    parse_fwhm,
    positron_range_fwhm_mm,
    rbv,
    resolve_psf,
)
from napari_immunotrack.analysis.roi import carry_rois
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.simulate.nema import nema_rods
from napari_immunotrack.volume import Volume

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study"
SIGMA_PER_FWHM = 1 / (2 * math.sqrt(2 * math.log(2)))


def _slabs(fwhm=3.0, values=(4.0, 1.0), affine=None):
    lab = np.zeros((40, 6, 6), np.uint8)
    lab[5:20] = 1
    lab[20:35] = 2
    truth = np.choose(lab, [0.0, *values])
    img = ndimage.gaussian_filter(truth, (fwhm * SIGMA_PER_FWHM, 0, 0), mode="constant", truncate=4.0)
    aff = np.eye(4) if affine is None else affine
    return Volume(img, aff, "PT"), Volume(lab, aff), truth


def test_two_slabs_analytic_gtm_and_rbv_exact():
    img, lab, _ = _slabs()
    g = gtm(img, lab, PointSpread((3.0, 0, 0)))
    assert np.allclose(g.corrected, [4.0, 1.0], atol=1e-4)
    # uncorrected: the hot slab loses to the cold one and to the air beyond it
    assert g.measured[0] < 3.85 and g.measured[1] > 1.05
    assert np.allclose(g.recovery, g.measured / g.corrected)
    # the analytic W: a 15-voxel slab beside air keeps 1 - (spill at both edges)
    s = 3.0 * SIGMA_PER_FWHM
    x = np.arange(15) + 0.5
    from scipy.special import erf

    keep = np.mean(0.5 * (erf(x / (s * math.sqrt(2))) + erf((15 - x) / (s * math.sqrt(2)))))
    assert g.matrix[0, 0] == pytest.approx(keep, abs=0.01)
    _, _, means = rbv(img, lab, PointSpread((3.0, 0, 0)))
    assert np.allclose(means, [4.0, 1.0], atol=1e-3)


def test_anisotropic_psf_follows_the_world_axis_on_a_permuted_grid():
    # array axis 0 runs along world y with 2 mm voxels: a 6 mm FWHM along y is sigma 3 mm / 2.355 / 2 voxels
    aff = np.array([[0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    psf = PointSpread((0.5, 6.0, 0.7))
    assert psf.sigma_voxels(aff) == pytest.approx(
        [6.0 * SIGMA_PER_FWHM / 2, 0.5 * SIGMA_PER_FWHM, 0.7 * SIGMA_PER_FWHM]
    )
    img, lab, _ = _slabs(fwhm=3.0, affine=aff)  # 3 voxels along axis 0 = 6 mm
    g = gtm(img, lab, PointSpread((0.0, 6.0, 0.0)))
    assert np.allclose(g.corrected, [4.0, 1.0], atol=1e-3)
    wrong = gtm(img, lab, PointSpread((6.0, 0.0, 0.0)))  # the blur along the wrong axis corrects nothing
    assert abs(wrong.corrected[0] - 4.0) > 0.1


@pytest.mark.parametrize("background", [0.0, 25.0])
def test_nema_rods_recovered_within_5_percent(background):
    ph = nema_rods(voxel_mm=0.5, fwhm_mm=1.5, background=background, length_mm=6.0, supersample=4)
    rm = carry_rois(ph["labels"], ph["image"])
    psf = resolve_psf(ph["image"])
    assert psf.source.startswith("header") and psf.fwhm_mm.tolist() == [1.5, 1.5, 1.5]
    g = gtm(ph["image"], rm, psf)
    _, _, rbv_means = rbv(ph["image"], rm, psf, gtm_result=g)
    for i, label in enumerate(g.labels):
        truth = ph["truth"][int(label)]
        if int(label) in ph["diameters_mm"]:
            assert g.corrected[i] == pytest.approx(truth, rel=0.05), (label, g.corrected[i])
            assert rbv_means[i] == pytest.approx(truth, rel=0.05), (label, rbv_means[i])
        else:
            assert g.corrected[i] == pytest.approx(truth, abs=0.02 * ph["truth"][1])
    # without correction the 1 mm rod reads far low and the 5 mm rod still low
    one, five = (int(np.nonzero(g.labels == k)[0][0]) for k in (1, 5))
    assert g.measured[one] < 0.5 * ph["truth"][1]
    assert g.measured[five] < 0.9 * ph["truth"][1]
    assert g.recovery[one] == pytest.approx(g.measured[one] / g.corrected[one])


def test_sample_study_rois_with_the_simulators_psf():
    """The sample study's label map as truth (one concentration per tissue), blurred with the MPI PSF
    (1.2, 1.6, 1.6 mm) and summed into 0.75 mm voxels; its ROIs carried with partial-voxel weights."""
    from napari_immunotrack.io import load_volume

    dseg = load_volume(glob.glob(str(SAMPLE / "sub-01" / "ses-day3" / "rois" / "*dseg.nii.gz"))[0])
    lab = dseg.numpy().astype(int)
    conc = np.zeros(256)
    conc[1:18] = np.random.default_rng(1).uniform(1, 10, 17)
    conc[16] = 0.0  # gut gas
    psf = PointSpread((1.2, 1.6, 1.6))
    blurred = gaussian_blur(conc[lab], psf.sigma_voxels(dseg.affine)).astype(np.float64)
    f = 3
    sh = tuple(s // f for s in lab.shape)
    coarse = blurred[: sh[0] * f, : sh[1] * f, : sh[2] * f].reshape(sh[0], f, sh[1], f, sh[2], f).mean(axis=(1, 3, 5))
    aff = dseg.affine.copy()
    aff[:3, :3] *= f
    aff[:3, 3] = dseg.affine[:3, 3] + dseg.affine[:3, :3] @ np.full(3, (f - 1) / 2)
    img = Volume(coarse.astype(np.float32), aff, "MPI")
    rm = carry_rois(dseg, img)
    spleen = 4
    for method in ("gtm", "rbv"):
        r = correct_means(img, rm, method, psf)
        errors = {int(k): (c / conc[k] - 1) for k, c in zip(r["labels"], r["corrected"]) if conc[k] > 0}
        raw = {int(k): (m / conc[k] - 1) for k, m in zip(r["labels"], r["measured"]) if conc[k] > 0}
        assert raw[spleen] < -0.15  # the spleen reads low without correction
        assert abs(errors[spleen]) < 0.05
        # objects of at least 2 x FWHM (equivalent-sphere diameter >= 3.2 mm): within 5 %
        for k, e in errors.items():
            volume = np.count_nonzero(lab == k) * 0.25**3
            if (6 * volume / math.pi) ** (1 / 3) >= 2 * 1.6:
                assert abs(e) < 0.05, (method, k, e, raw[k])


def test_oblique_grid_isotropic_psf_is_exact():
    from napari_immunotrack.simulate.phantom import rotation_matrix

    rot = np.eye(4)
    rot[:3, :3] = rotation_matrix((20.0, -35.0, 50.0))
    aff = rot @ np.diag([0.8, 0.8, 0.8, 1.0])
    psf = PointSpread(2.0)
    assert psf.sigma_voxels(aff) == pytest.approx([2.0 * SIGMA_PER_FWHM / 0.8] * 3)
    lab = np.zeros((40, 40, 40), np.uint8)
    zz, yy, xx = np.ogrid[:40, :40, :40]
    lab[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 17) ** 2 < 25] = 1
    lab[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 25) ** 2 < 16] = 2
    truth = np.choose(lab, [1.0, 8.0, 3.0])
    img = Volume(gaussian_blur(truth, psf.sigma_voxels(aff)), aff, "PT")
    g = gtm(img, Volume(lab, aff), psf, background_mask=np.ones(lab.shape, bool))
    assert g.corrected == pytest.approx([8.0, 3.0], rel=1e-3)
    assert g.background_corrected == pytest.approx(1.0, rel=1e-2)
    assert g.measured[0] < 7.0


def test_ill_conditioned_rois_smaller_than_the_psf_warn():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[14, 14, 14] = 1
    lab[14, 14, 15] = 2
    img = Volume(gaussian_blur((lab > 0) * 10.0, [2.0] * 3), np.eye(4), "PT")
    with pytest.warns(ImmunotrackWarning, match="ill-conditioned.*smaller than the PSF"):
        g = gtm(img, Volume(lab, np.eye(4)), PointSpread(4.7))
    assert g.condition_number > 30


def test_psf_source_order_and_positron_range():
    meta_psf = Volume(np.zeros((4, 4, 4)), np.eye(4), "MPI", metadata={"PSF_FWHM_mm": [1.2, 1.6, 1.6]})
    with pytest.warns(ImmunotrackWarning, match="header"):
        assert resolve_psf(meta_psf, "2").fwhm_mm.tolist() == [1.2, 1.6, 1.6]
    pet = Volume(np.zeros((4, 4, 4)), np.eye(4) * [0.8, 0.8, 0.8, 1], "PT")
    assert resolve_psf(pet, "1.1,1.2,1.3").fwhm_mm.tolist() == [1.1, 1.2, 1.3]
    assert resolve_psf(pet).source == "default for PT (preclinical)"
    clinical = Volume(np.zeros((4, 4, 4)), np.eye(4) * [4, 4, 4, 1], "PT")
    assert resolve_psf(clinical).fwhm_mm[0] == 5.0
    # quadrature with a 3D-Gaussian stand-in of the mean positron range: FWHM = 2.3548 R / (2 sqrt(2/pi))
    for iso, r_mean in (("89Zr", 1.3), ("Cu-64", 0.7), ("F18", 0.6), ("68Ga", 2.9), ("124I", 3.4)):
        extra = 2.3548200 * r_mean / (2 * math.sqrt(2 / math.pi))
        assert positron_range_fwhm_mm(iso) == pytest.approx(extra, rel=1e-6)
        p = resolve_psf(pet, 1.4, isotope=iso)
        assert p.fwhm_mm[0] == pytest.approx(math.hypot(1.4, extra))
        assert p.scanner_fwhm_mm[0] == 1.4
    with pytest.raises(InputError, match="positron range"):
        resolve_psf(pet, 1.4, isotope="99mTc")
    with pytest.raises(InputError, match="--psf-fwhm"):
        parse_fwhm("1,2")
    with pytest.raises(InputError, match="--psf-fwhm"):
        parse_fwhm("abc")
    with pytest.raises(InputError, match="PSF"):
        resolve_psf(Volume(np.zeros((4, 4, 4)), np.eye(4), "OPT"))


def test_pvc_columns_sit_beside_the_uncorrected_ones():
    import pandas as pd

    img, lab, _ = _slabs()
    r = correct_means(img, lab, "gtm", PointSpread((3.0, 0, 0)))
    df = pd.DataFrame({"label": [1, 2], "mean": r["measured"], "total": r["measured"] * 15 * 36, "sd": [0, 0]})
    out = add_pvc_columns(df, r, ["mean", "total"])
    assert list(out.columns) == ["label", "mean", "mean_pvc", "total", "total_pvc", "sd", "recovery_coefficient"]
    assert out["mean_pvc"].tolist() == pytest.approx([4.0, 1.0], abs=1e-4)
    assert out["total_pvc"].tolist() == pytest.approx([4.0 * 540, 540.0], rel=1e-4)
    with pytest.raises(InputError, match="--pvc"):
        correct_means(img, lab, "yang", PointSpread(3.0))


# ---------------------------------------------------------------------------- command line
def _rods_files(tmp_path, modality="PT", sidecar=None):
    from napari_immunotrack.io import save_labels, save_volume

    ph = nema_rods(voxel_mm=0.5, fwhm_mm=1.5, background=10.0, length_mm=6.0, supersample=2, modality=modality)
    save_volume(ph["image"], tmp_path / "img.nii.gz")
    if sidecar is not None:
        (tmp_path / "img.json").write_text(__import__("json").dumps(sidecar))
    save_labels(ph["labels"], tmp_path / "rods.nii.gz")
    return ph


def test_cli_quantify_pvc_columns_and_provenance(tmp_path, capsys):
    import json

    import pandas as pd

    from napari_immunotrack.cli import main

    sidecar = {
        "Modality": "PT",
        "Units": "BQML",
        "DecayCorrection": "START",
        "RadionuclideTotalDose": 1e6,
        "RadiopharmaceuticalStartTime": "09:00:00",
        "RadionuclideHalfLife": 6586.2,
        "PatientWeight": 0.025,
        "SeriesDate": "20240305",
        "SeriesTime": "10:00:00",
        "AcquisitionTime": "10:00:00",
        "PSF_FWHM_mm": 1.5,
    }
    ph = _rods_files(tmp_path, sidecar=sidecar)
    base = ["quantify", str(tmp_path / "img.nii.gz"), "--roi", str(tmp_path / "rods.nii.gz"), "--no-peak"]
    for method in ("gtm", "rbv"):
        out = tmp_path / f"{method}.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(base + ["-o", str(out), "--pvc", method, "--psf-fwhm", "3"]) == 0
        df = pd.read_csv(out).set_index("label")
        cols = list(df.columns)
        assert cols.index("mean_bq_ml_pvc") == cols.index("mean_bq_ml") + 1
        assert cols.index("suv_bw_mean_pvc") == cols.index("suv_bw_mean") + 1
        for label, d in ph["diameters_mm"].items():
            if d >= 2:
                assert df.loc[label, "mean_bq_ml_pvc"] == pytest.approx(ph["truth"][label], rel=0.05)
                assert df.loc[label, "mean_bq_ml"] < 0.9 * ph["truth"][label]
            ratio = df.loc[label, "mean_bq_ml_pvc"] / df.loc[label, "mean_bq_ml"]
            assert df.loc[label, "suv_bw_mean_pvc"] / df.loc[label, "suv_bw_mean"] == pytest.approx(ratio)
            assert df.loc[label, "percent_id_pvc"] / df.loc[label, "percent_id"] == pytest.approx(ratio)
            assert df.loc[label, "recovery_coefficient"] == pytest.approx(1 / ratio)
        prov = json.loads((tmp_path / f"{method}.csv.provenance.json").read_text())
        pvc = prov["parameters"]["pvc"]
        # the header's PSF wins over --psf-fwhm (and says so)
        assert pvc["method"] == method and pvc["psf"]["source"] == "header PSF_FWHM_mm"
        assert pvc["psf"]["fwhm_mm"] == [1.5, 1.5, 1.5] and pvc["condition_number"] > 1
    # --labels reports some ROIs; every label still takes part in the correction (same values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(base + ["-o", str(tmp_path / "some.csv"), "--pvc", "rbv", "--labels", "2,4"]) == 0
    some = pd.read_csv(tmp_path / "some.csv").set_index("label")
    assert list(some.index) == [2, 4]
    assert some["mean_bq_ml_pvc"].tolist() == pytest.approx(df.loc[[2, 4], "mean_bq_ml_pvc"].tolist(), rel=1e-6)
    # no --pvc: no extra columns
    assert main(base + ["-o", str(tmp_path / "none.csv")]) == 0
    assert not any(c.endswith("_pvc") for c in pd.read_csv(tmp_path / "none.csv").columns)
    capsys.readouterr()
    for bad, message in (
        (["--pvc", "yang"], "--pvc must be one of none, gtm, rbv"),
        (["--pvc", "gtm", "--psf-fwhm", "1,2"], "--psf-fwhm"),
        (["--pvc", "gtm", "--positron-range", "99Tc"], "positron range"),
    ):
        assert main(base + ["-o", str(tmp_path / "bad.csv"), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (tmp_path / "bad.csv").exists()


def test_cli_mpi_pvc_iron_against_truth(tmp_path):
    import pandas as pd

    from napari_immunotrack.cli import main
    from napari_immunotrack.io import save_volume

    ph = _rods_files(tmp_path, modality="MPI")
    k_per_ng = 10.0  # integrated signal per ng
    img = ph["image"]
    data = img.numpy().astype(np.float64)
    # three fiducials (blurred points of known iron) in the corners, away from the phantom
    fids = []
    for n, (x, y) in zip((100.0, 300.0, 600.0), ((17.0, 17.0), (-17.0, 17.0), (17.0, -17.0))):
        point = np.zeros(data.shape)
        idx = np.round(np.linalg.inv(img.affine) @ [x, y, 0.0, 1.0])[:3].astype(int)
        point[tuple(idx)] = k_per_ng * n
        data += gaussian_blur(point, PointSpread(1.5).sigma_voxels(img.affine))
        world = img.affine @ [*idx, 1.0]
        fids.append({"x_mm": world[0], "y_mm": world[1], "z_mm": world[2], "iron_ng": n, "radius_mm": 2.5})
    data += np.random.default_rng(0).normal(0, 0.01, data.shape)
    save_volume(img.replace(data=data.astype(np.float32)), tmp_path / "mpi.nii.gz")
    pd.DataFrame(fids).to_csv(tmp_path / "fid.csv", index=False)
    out = tmp_path / "iron.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(
                [
                    "mpi",
                    str(tmp_path / "mpi.nii.gz"),
                    "--roi",
                    str(tmp_path / "rods.nii.gz"),
                    "--fiducials",
                    str(tmp_path / "fid.csv"),
                    "--iron-per-cell",
                    "5",
                    "--pvc",
                    "gtm",
                    "--psf-fwhm",
                    "1.5",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
    df = pd.read_csv(out).set_index("label")
    from napari_immunotrack.io import load_volume

    rmap = carry_rois(load_volume(tmp_path / "rods.nii.gz"), img)
    for i, label in enumerate(rmap.labels):
        if int(label) not in ph["diameters_mm"] or ph["diameters_mm"][int(label)] < 2:
            continue
        true_ng = ph["truth"][int(label)] * float(rmap.weight[i].sum()) / k_per_ng
        assert df.loc[label, "iron_ng"] < 0.9 * true_ng
        assert df.loc[label, "iron_ng_pvc"] == pytest.approx(true_ng, rel=0.05)
        assert df.loc[label, "cell_count_pvc"] == pytest.approx(df.loc[label, "iron_ng_pvc"] / 5e-3)
        assert df.loc[label, "iron_ug_pvc"] == pytest.approx(df.loc[label, "iron_ng_pvc"] / 1000.0)


def test_readout_dock_table_and_batch_steps_take_pvc():
    from napari_immunotrack.batch import step_parameters
    from napari_immunotrack.widgets.readout import readout_table

    ph = nema_rods(voxel_mm=0.5, fwhm_mm=1.5, background=10.0, length_mm=6.0, supersample=2, modality="MPI")
    img = ph["image"].replace(unit="a.u.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = readout_table(ph["labels"], [("rods", img)], pvc="rbv").set_index("label")
    for label, d in ph["diameters_mm"].items():
        if d >= 2:
            assert df.loc[label, "mean_au_pvc"] == pytest.approx(ph["truth"][label], rel=0.05)
            assert df.loc[label, "integral_au_ml_pvc"] / df.loc[label, "integral_au_ml"] == pytest.approx(
                1 / df.loc[label, "recovery_coefficient"]
            )
    assert "sd_au_pvc" not in df.columns and "max_au_pvc" not in df.columns
    for step in ("pet", "spect", "mpi"):
        assert step_parameters(step)["pvc"] == "none" and step_parameters(step)["psf_fwhm"] is None
    assert step_parameters("f19")["pvc"] is None and step_parameters("f19")["estimator"] == "whole-roi"


def test_cli_fluorine_pvc_and_estimator(tmp_path, capsys):
    import json

    import pandas as pd

    from napari_immunotrack.cli import main
    from napari_immunotrack.io import save_labels, save_volume
    from napari_immunotrack.simulate.fluorine import FluorineDepot, f19_image
    from napari_immunotrack.simulate.phantom import Cylinder, Sphere, grid_affine

    shape, aff = (32, 32, 32), grid_affine((32, 32, 32), 0.5)
    sim = f19_image(
        [FluorineDepot((0, 0, 0), 2e5, 1e12, 1.5)],
        Cylinder((5, -5, -6), (5, -5, 6), 1.5),
        50.0,
        shape,
        aff,
        snr=60.0,
        rng=np.random.default_rng(0),
    )
    truth = sim["atoms"].sum() / 1e12
    # a tight ROI drawn on a fine grid: the depot itself (partial voxels at its edge)
    fine = grid_affine((128, 128, 128), 0.125)
    from napari_immunotrack.simulate.phantom import rasterize

    roi = rasterize([(1, Sphere((0, 0, 0), 1.5))], (128, 128, 128), fine)
    noise = np.zeros(shape, np.uint8)
    noise[:, :, :5] = 1
    save_volume(Volume(sim["image"], aff, "F19"), tmp_path / "f19.nii.gz")
    save_labels(Volume(sim["reference_mask"], aff, "SEG"), tmp_path / "ref.nii.gz")
    save_labels(Volume(roi, fine, "SEG"), tmp_path / "roi.nii.gz")
    save_labels(Volume(noise, aff, "SEG"), tmp_path / "air.nii.gz")
    base = [
        "fluorine",
        str(tmp_path / "f19.nii.gz"),
        "--reference-mask",
        str(tmp_path / "ref.nii.gz"),
        "--reference-concentration",
        "50",
        "--roi",
        str(tmp_path / "roi.nii.gz"),
        "--fluorine-per-cell",
        "1e12",
        "--noise-mask",
        str(tmp_path / "air.nii.gz"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(base + ["-o", str(tmp_path / "c.csv"), "--pvc", "gtm"]) == 0
    df = pd.read_csv(tmp_path / "c.csv")
    cols = list(df.columns)
    assert cols.index("cell_count_pvc") == cols.index("cell_count") + 1
    # the voxel itself is 19F MRI's default PSF: the correction gives back the depot's edge voxels
    assert df.loc[0, "cell_count_pvc"] == pytest.approx(truth, rel=0.03)
    assert df.loc[0, "recovery_coefficient"] < 0.97
    prov = json.loads((tmp_path / "c.csv.provenance.json").read_text())
    assert prov["parameters"]["pvc"]["psf"]["source"] == "default for F19 (preclinical)"
    assert prov["parameters"]["estimator"] == "whole-roi"
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "bad.csv"), "--estimator", "peaks"]) == 2
    assert "estimator" in capsys.readouterr().err


def _foci_in_organs(seed=0, noise=0.0, body_value=1.0):
    """Two organs (balls of 3 and 5 mm radius, 0.5 mm voxels) holding their activity in 5 and 8 foci
    (Gaussian blobs of 0.3-0.6 mm SD, cut at the organ's border), a cold third organ between them
    and a warm body (``body_value``); the image is the truth blurred with a 1.5 mm FWHM PSF (plus Gaussian noise)."""
    rng = np.random.default_rng(seed)
    n = 64
    idx = np.indices((n, n, n)).transpose(1, 2, 3, 0) * 0.5
    lab = np.zeros((n, n, n), np.uint8)
    body = np.linalg.norm(idx - 16.0, axis=-1) < 14.0
    lab[body] = 4
    organs = {1: ((16.0, 16.0, 9.5), 3.0), 2: ((16.0, 16.0, 20.5), 5.0), 3: ((16.0, 9.0, 15.0), 2.0)}
    for k, (c, r) in organs.items():
        lab[np.linalg.norm(idx - np.array(c), axis=-1) < r] = k
    truth = np.where(lab == 4, body_value, 0.0)
    for k, n_foci in ((1, 5), (2, 8)):
        c, r = organs[k]
        inside = np.argwhere(np.linalg.norm(idx - np.array(c), axis=-1) < r - 1.0)
        for p in inside[rng.choice(len(inside), n_foci, replace=False)]:
            spread = rng.uniform(0.3, 0.6)
            blob = np.exp(-np.sum((idx - p * 0.5) ** 2, axis=-1) / (2 * spread**2))
            truth += np.where(lab == k, rng.uniform(50, 150) * blob, 0.0)
    psf = PointSpread(1.5)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    img = gaussian_blur(truth, psf.sigma_voxels(aff)).astype(np.float64)
    img += rng.normal(0, noise, img.shape)
    means = {k: float(truth[lab == k].mean()) for k in (1, 2, 3, 4)}
    return Volume(img.astype(np.float32), aff, "MPI"), Volume(lab, aff), psf, means


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_foci_inside_organs_are_not_over_corrected(noise):
    """Activity held in foci inside an organ (the sample study's MPI and 19F): the uniform-region GTM
    over-corrects it, the deconvolved templates (the default) recover organs of >= 2 x FWHM within 5 %."""
    img, lab, psf, truth = _foci_in_organs(noise=noise)
    uniform = gtm(img, lab, psf, within_region="uniform")
    default = gtm(img, lab, psf)
    _, _, rbv_means = rbv(img, lab, psf, gtm_result=default)
    err = {}
    for i, k in enumerate(default.labels):
        if int(k) in (1, 2):  # 6 and 10 mm organs, >= 2 x 1.5 mm FWHM
            raw = uniform.measured[i] / truth[int(k)] - 1
            old = uniform.corrected[i] / truth[int(k)] - 1
            new = default.corrected[i] / truth[int(k)] - 1
            err[int(k)] = (raw, old, new)
            assert raw < 0.0  # spill-out: the organ does not read high
            assert abs(new) < 0.05, (k, raw, old, new)
            assert rbv_means[i] == pytest.approx(truth[int(k)], rel=0.05)
    # the uniform model's over-correction of focal uptake is what the templates remove
    assert max(e[1] for e in err.values()) > 0.08, err
    assert default.within_region == "deconvolved" and default.iterations == 30
    # the cold organ stays near zero, the warm body near 1
    assert abs(default.corrected[list(default.labels).index(3)]) < 0.1
    assert default.corrected[list(default.labels).index(4)] == pytest.approx(1.0, abs=0.05)


def test_foci_in_a_cold_body_with_zero_mean_noise():
    """MPI-like: the foci sit in organs inside a body with no activity, the image carries zero-mean noise
    around 0 (background-subtracted), so the surrounding ROI's GTM mean can come out negative. The
    deconvolution keeps it in the model and offsets the data instead of clipping the noise."""
    img, lab, psf, truth = _foci_in_organs(seed=2, noise=0.3, body_value=0.0)
    uniform = gtm(img, lab, psf, within_region="uniform")
    default = gtm(img, lab, psf)
    for i, k in enumerate(default.labels):
        if int(k) in (1, 2):
            assert abs(default.corrected[i] / truth[int(k)] - 1) < 0.05, (k, default.corrected[i], truth[int(k)])
            assert uniform.corrected[i] / truth[int(k)] - 1 > 0.05  # the uniform model over-corrects
        else:  # the cold organ and the body hold nothing
            assert abs(default.corrected[i]) < 0.1
