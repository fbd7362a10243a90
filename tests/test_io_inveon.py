"""Siemens Inveon / microPET reader: data types, calibration to Bq/mL, SUV inputs, dynamic studies, poses.

Files are written from the header definition (simulate/scanner_files.py);
SUV and %ID/g from these headers are compared with the same PET written as a
DICOM series and with the analytic values.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.io import detect_format, load_volume, save_labels
from napari_immunotrack.io.bruker import subject_from_magnet
from napari_immunotrack.io.inveon import INVEON_POSES, select_frames
from napari_immunotrack.simulate.scanner_files import INVEON_TYPES, write_inveon
from napari_immunotrack.volume import Volume

F18 = 6586.2  # s
INJ = dt.datetime(2024, 5, 1, 9, 0, 0)
SCAN = dt.datetime(2024, 5, 1, 10, 0, 0)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "napari_immunotrack.cli", *map(str, args)], capture_output=True, text=True
    )


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("code", sorted(INVEON_TYPES))
def test_every_data_type_and_byte_order_with_frame_scale_calibration_and_branching(tmp_path, code):
    rng = np.random.default_rng(code)
    dtype = np.dtype(INVEON_TYPES[code])
    hi = 100 if dtype.itemsize == 1 else 20000
    stored = rng.integers(-hi, hi, (2, 3, 4, 5)).astype(np.float64)
    if dtype.kind == "f":
        stored *= 0.37
    hdr = write_inveon(
        tmp_path / "pet",
        stored,
        data_type=code,
        scale_factors=[0.5, 2.0],
        calibration_factor=3.2,
        branching_fraction=0.9673,
        calibration_units=2,
    )
    vol = load_volume(hdr)
    expected = stored * np.array([0.5, 2.0])[:, None, None, None] * 3.2 / 0.9673
    assert vol.shape == (2, 3, 4, 5) and vol.unit == "Bq/mL"
    assert np.allclose(vol.numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_nci_per_cc_calibration_is_converted_to_bq_per_ml(tmp_path):
    hdr = write_inveon(tmp_path / "pet", np.full((3, 3, 3), 10.0), calibration_factor=2.0, calibration_units=1)
    assert np.allclose(load_volume(hdr).numpy(), 10.0 * 2.0 * 37.0)


def test_uncalibrated_images_are_counts(tmp_path):
    hdr = write_inveon(tmp_path / "pet", np.full((3, 3, 3), 10.0), calibration_units=0)
    vol = load_volume(hdr)
    assert vol.unit == "counts" and vol.metadata["Units"] == "CNTS"


def test_bq_per_ml_within_0_1_percent_of_the_analytic_activity(tmp_path):
    """A sphere of known concentration, stored as int16 with the scanner's scale, comes back within 0.1 %."""
    conc = 52_345.6  # Bq/mL at the scan start
    z, y, x = np.mgrid[:24, :24, :24]
    sphere = ((x - 11.5) ** 2 + (y - 11.5) ** 2 + (z - 11.5) ** 2) < 8**2
    truth = np.where(sphere, conc, 0.1 * conc)
    cal, bf = 1.37e3, 0.9673
    scale = truth.max() / (32767 * cal / bf)  # the per-frame scale a scanner picks to use the int16 range
    stored = np.round(truth / (scale * cal / bf))
    hdr = write_inveon(
        tmp_path / "pet",
        stored,
        data_type=2,
        scale_factors=[scale],
        calibration_factor=cal,
        branching_fraction=bf,
        pixel_mm=(0.4, 0.4, 0.8),
    )
    vol = load_volume(hdr)
    assert abs(vol.numpy()[sphere].mean() / conc - 1) < 1e-3
    assert np.allclose(vol.spacing, [0.8, 0.4, 0.4])


def test_voxel_size_in_cm_only(tmp_path):
    a = load_volume(write_inveon(tmp_path / "a", np.ones((3, 4, 5)), pixel_mm=(0.7, 0.7, 0.8)))
    b = load_volume(write_inveon(tmp_path / "b", np.ones((3, 4, 5)), pixel_mm=(0.7, 0.7, 0.8), cm_only=True))
    assert np.allclose(a.affine, b.affine) and np.allclose(b.spacing, [0.8, 0.7, 0.7])
    # a writer that put pixel_size_x/y/z in cm as well (equal to pixel_size): still 0.7/0.8 mm
    c = write_inveon(
        tmp_path / "c",
        np.ones((3, 4, 5)),
        pixel_mm=(0.7, 0.7, 0.8),
        cm_only=True,
        extra_lines=["pixel_size_x 0.07", "pixel_size_y 0.07", "pixel_size_z 0.08"],
    )
    assert np.allclose(load_volume(c).spacing, [0.8, 0.7, 0.7])


# ------------------------------------------------------------------------------------------ header fields
@pytest.mark.parametrize("dose,units,bq", [(0.3, 1, 0.3 * 3.7e7), (11.1, 2, 11.1e6)])
@pytest.mark.parametrize("weight,w_units,kg", [(25.0, 1, 0.025), (0.055, 2, 0.055 * 0.45359237), (0.03, 3, 0.03)])
def test_dose_and_weight_units(tmp_path, dose, units, bq, weight, w_units, kg):
    from napari_immunotrack.analysis.pet import read_pet_header

    vol = load_volume(
        write_inveon(
            tmp_path / "pet",
            np.ones((2, 2, 2)),
            dose=dose,
            dose_units=units,
            weight=weight,
            weight_units=w_units,
            injection_time=INJ,
            scan_time=SCAN,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImmunotrackWarning)  # nothing guessed: every field has its unit
        h = read_pet_header(vol)
    assert math.isclose(h.dose_bq, bq, rel_tol=1e-9) and math.isclose(h.weight_kg, kg, rel_tol=1e-9)
    assert h.injection_time == INJ and h.reference_time == SCAN and h.half_life_s == F18
    assert h.decay_correction == "START" and h.units == "BQML"


def test_either_file_of_the_pair_opens_and_analyze_is_still_refused(tmp_path):
    import nibabel as nib

    hdr = write_inveon(tmp_path / "pet", np.arange(8.0).reshape(2, 2, 2))
    img = tmp_path / "pet.img"
    assert detect_format(hdr) == detect_format(img) == "inveon"
    assert np.array_equal(load_volume(hdr).numpy(), load_volume(img).numpy())
    nib.save(nib.AnalyzeImage(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(tmp_path / "analyze.img"))
    with pytest.raises(InputError, match="Analyze"):
        detect_format(tmp_path / "analyze.hdr")


# ------------------------------------------------------------------------------------------ SUV vs DICOM
def _pet_pair(tmp_path, **kw):
    """The same PET as Inveon files and as a DICOM series (written by the project's DICOM writer)."""
    from napari_immunotrack.io.dicom import write_dicom_series

    z, y, x = np.mgrid[:20, :22, :24]
    hot = ((x - 14) ** 2 + (y - 10) ** 2 + (z - 9) ** 2) < 5**2
    truth = np.where(hot, 80_000.0, 5_000.0)
    cal, bf = 250.0, 0.9673
    scale = truth.max() / (30000 * cal / bf)
    stored = np.round(truth / (scale * cal / bf))
    hdr = write_inveon(
        tmp_path / "pet",
        stored,
        data_type=6,
        scale_factors=[scale],
        calibration_factor=cal,
        branching_fraction=bf,
        dose=0.3,
        dose_units=1,
        weight=24.0,
        weight_units=1,
        injection_time=INJ,
        scan_time=SCAN,
        pixel_mm=(0.8, 0.8, 0.8),
        **kw,
    )
    inveon = load_volume(hdr)
    m = inveon.metadata
    pet = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "SeriesDate": m["SeriesDate"],
        "SeriesTime": m["SeriesTime"],
        "AcquisitionDate": m["AcquisitionDate"],
        "AcquisitionTime": m["AcquisitionTime"],
        "RadionuclideTotalDose": m["RadionuclideTotalDose"],
        "RadionuclideHalfLife": m["RadionuclideHalfLife"],
        "RadiopharmaceuticalStartDateTime": m["RadiopharmaceuticalStartDateTime"],
    }
    folder = write_dicom_series(
        inveon, tmp_path / "dicom", modality="PT", pet=pet, patient={"PatientWeight": m["PatientWeight"]}
    )
    labels = Volume(hot.astype(np.uint8), inveon.affine, "SEG", "label")
    save_labels(labels, tmp_path / "roi.nii.gz")
    return hdr, folder, tmp_path / "roi.nii.gz", truth, hot


def test_quantify_gives_the_same_suv_from_inveon_as_from_dicom_and_the_analytic_value(tmp_path):
    hdr, folder, roi, _, _ = _pet_pair(tmp_path)
    for src, out in ((hdr, "inveon.csv"), (tmp_path / "pet.img", "img.csv"), (folder, "dicom.csv")):
        run = cli("quantify", src, "--roi", roi, "-o", tmp_path / out, "--no-peak")
        assert run.returncode == 0, run.stderr
    a, b, c = (pd.read_csv(tmp_path / f) for f in ("inveon.csv", "img.csv", "dicom.csv"))
    for col in ("mean_bq_ml", "suv_bw_mean", "percent_id", "percent_id_per_g"):
        assert abs(a[col][0] / c[col][0] - 1) < 1e-3, col
        assert a[col][0] == b[col][0]
    dose_at_scan = 0.3 * 3.7e7 * 2 ** (-3600 / F18)
    suv = 80_000.0 / (dose_at_scan / 24.0)  # Bq/mL / (Bq/g)
    assert abs(a["suv_bw_mean"][0] / suv - 1) < 1e-3
    assert abs(a["mean_bq_ml"][0] / 80_000.0 - 1) < 1e-3


# ------------------------------------------------------------------------------------------ dynamic
def _dynamic(tmp_path, n=20, shape=(16, 18, 20), decay_applied=1):
    """Frames of a constant (decay-corrected) 40 kBq/mL; with decay_applied=0 the stored values decay."""
    lam = math.log(2) / F18
    starts = np.arange(n) * 120.0
    durs = np.full(n, 120.0)
    stored = np.empty((n,) + shape, np.float32)
    for f in range(n):
        if decay_applied:
            stored[f] = 40_000.0
        else:  # mean activity during the frame, not corrected
            stored[f] = 40_000.0 * math.exp(-lam * starts[f]) * (-math.expm1(-lam * durs[f])) / (lam * durs[f])
    hdr = write_inveon(
        tmp_path / f"dyn{decay_applied}",
        stored,
        frame_starts=starts,
        frame_durations=durs,
        decay_correction_applied=decay_applied,
        dose=11.1,
        dose_units=2,
        weight=25.0,
        injection_time=INJ,
        scan_time=SCAN,
    )
    return hdr


def test_dynamic_study_opens_lazily_and_fast(tmp_path):
    hdr = _dynamic(tmp_path, n=20, shape=(64, 96, 96))
    load_volume(hdr)  # imports (dask) once
    t0 = time.perf_counter()
    vol = load_volume(hdr)
    elapsed = time.perf_counter() - t0
    assert type(vol.data).__module__.startswith("dask") and vol.shape == (20, 64, 96, 96)
    assert elapsed < 1.0, elapsed
    assert vol.metadata["leading_axis"] == "time" and len(vol.metadata["frames"]) == 20
    assert vol.metadata["frames"][3]["FrameReferenceTime"] == 1000.0 * (3 * 120.0 + 60.0)
    one = select_frames(vol, 3)
    assert one.data.ndim == 3 and np.allclose(one.data, 40_000.0)
    assert one.metadata["AcquisitionTime"] == "100600.000000"


def test_quantify_frames_and_windows_of_a_dynamic_study(tmp_path):
    hdr = _dynamic(tmp_path, n=6, shape=(8, 8, 8))
    vol = load_volume(hdr)
    save_labels(Volume(np.ones((8, 8, 8), np.uint8), vol.affine, "SEG", "label"), tmp_path / "roi.nii.gz")
    run = cli("quantify", hdr, "--roi", tmp_path / "roi.nii.gz", "-o", tmp_path / "x.csv")
    assert run.returncode == 2 and "--frames" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()
    for frames in ("2", "1-4"):
        run = cli(
            "quantify",
            hdr,
            "--roi",
            tmp_path / "roi.nii.gz",
            "-o",
            tmp_path / f"f{frames}.csv",
            "--frames",
            frames,
            "--no-peak",
        )
        assert run.returncode == 0, run.stderr
        df = pd.read_csv(tmp_path / f"f{frames}.csv")
        assert abs(df["mean_bq_ml"][0] / 40_000.0 - 1) < 1e-4
        # the SUV uses the dose decayed to the scan start (START correction)
        suv = 40_000.0 / (11.1e6 * 2 ** (-3600 / F18) / 25.0)
        assert abs(df["suv_bw_mean"][0] / suv - 1) < 1e-3


def test_per_frame_readouts_of_uncorrected_frames_match_the_corrected_study(tmp_path):
    """decay_correction_applied 0: each frame is corrected from its own start and duration (DICOM NONE)."""
    from napari_immunotrack.analysis.pet import quantify_frames
    from napari_immunotrack.analysis.roi import carry_rois

    corrected = load_volume(_dynamic(tmp_path, n=5, shape=(6, 6, 6), decay_applied=1))
    raw = load_volume(_dynamic(tmp_path, n=5, shape=(6, 6, 6), decay_applied=0))
    assert raw.metadata["DecayCorrection"] == "NONE"
    roi = Volume(np.ones((6, 6, 6), np.uint8), raw.affine, "SEG", "label")
    rois = carry_rois(roi, raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        a = quantify_frames(corrected, rois, peak=False)
        b = quantify_frames(raw, rois, peak=False)
    assert list(a["frame"]) == list(range(5)) and list(a["frame_start_s"]) == [0.0, 120.0, 240.0, 360.0, 480.0]
    # the NONE frames are brought to their own start: SUV is the same as the START-corrected study's
    assert np.allclose(b["suv_bw_mean"], a["suv_bw_mean"], rtol=1e-3)


# ------------------------------------------------------------------------------------------ orientation
MARKERS = np.array([[4.0, 0.5, -1.0], [0.0, 3.0, 0.5], [-1.0, -0.5, 5.0], [-2.5, -3.0, -3.5]])
AMPLITUDES = np.array([400.0, 300.0, 200.0, 100.0])


@pytest.mark.parametrize("code", sorted(INVEON_POSES))
def test_subject_orientation_places_markers_on_the_animal(tmp_path, code):
    """Gantry frame = the patient frame of a head-first supine subject; the pose turns it to the animal's axes."""
    S = subject_from_magnet(INVEON_POSES[code])
    n, step = 32, 0.5
    k, j, i = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    gantry = np.stack([i, j, k], -1) * step - (n - 1) / 2 * step
    ras = (gantry @ S.T) * [-1, -1, 1]
    values = sum(a * np.exp(-np.sum((ras - m) ** 2, -1) / (2 * 0.7**2)) for m, a in zip(MARKERS, AMPLITUDES))
    vol = load_volume(write_inveon(tmp_path / "p", values, pixel_mm=(step,) * 3, subject_orientation=code))
    labels, count = ndimage.label(vol.numpy() > 20)
    assert count == len(MARKERS)
    found = sorted(
        (
            (vol.numpy()[labels == lab].max(), ndimage.center_of_mass(np.where(labels == lab, vol.numpy(), 0)))
            for lab in range(1, count + 1)
        ),
        key=lambda t: -t[0],
    )
    world = vol.index_to_world([c for _, c in found])
    assert np.linalg.norm(world - MARKERS, axis=1).max() < 0.5 * step


# ------------------------------------------------------------------------------------------ bad input
def test_short_data_file_is_refused_and_nothing_written(tmp_path):
    hdr = write_inveon(tmp_path / "pet", np.ones((2, 4, 4, 4)))
    img = tmp_path / "pet.img"
    img.write_bytes(img.read_bytes()[:300])
    with pytest.raises(InputError, match="short"):
        load_volume(hdr)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = cli("info", hdr)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "short" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_data_file_and_bad_data_type(tmp_path):
    hdr = write_inveon(tmp_path / "pet", np.ones((2, 2, 2)))
    (tmp_path / "pet.img").unlink()
    with pytest.raises(InputError, match="missing"):
        load_volume(hdr)
    hdr = write_inveon(tmp_path / "b", np.ones((2, 2, 2)))
    hdr.write_text(hdr.read_text().replace("data_type 4", "data_type 9"))
    with pytest.raises(InputError, match="data_type"):
        load_volume(hdr)


def test_cli_info_shows_the_quantitative_header(tmp_path):
    import json

    hdr = write_inveon(tmp_path / "pet", np.ones((2, 3, 4)), dose=0.3, dose_units=1)
    run = cli("info", hdr, "--json")
    assert run.returncode == 0, run.stderr
    vol = json.loads(run.stdout)["volumes"][0]
    assert vol["unit"] == "Bq/mL" and vol["modality"] == "PT" and vol["Units"] == "BQML"
    assert math.isclose(vol["RadionuclideTotalDose"], 0.3 * 3.7e7) and vol["SubjectPosition"] == "Head_Prone"
