"""PET/SPECT quantification: header variants on DICOM series built here, SUV formulas, the CLI.

The reference object (docs/methods/pet.md): a hot sphere, a cold sphere and a
background of known activity concentration at the scan reference time. Each
header variant stores it the way a scanner would (Bq/mL, SUV, Philips counts,
decay-corrected to the injection, not decay-corrected per bed, ...); the readout
must give back the known SUVbw (min, median, max) within 1%.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest

from napari_immunotrack.analysis import pet as P
from napari_immunotrack.analysis.roi import PEAK_RADIUS_MM
from napari_immunotrack.cli import main
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.io import load_volume, save_labels, save_volume
from napari_immunotrack.io.dicom import write_dicom_series
from napari_immunotrack.volume import Volume

# ---------------------------------------------------------------------------- the reference object
# A typical axial DICOM grid: columns run R->L, rows A->P, slices inferior->superior (LPS-aligned).
AFF = np.array([[0.0, 0.0, -2.0, 31.0], [0.0, -2.0, 0.0, 29.0], [2.0, 0.0, 0.0, -19.0], [0, 0, 0, 1.0]])
SHAPE = (20, 32, 32)
HOT_C, HOT_R = np.array([8.0, 2.0, 1.0]), 9.0
COLD_C, COLD_R = np.array([-12.0, -6.0, -1.0]), 7.0
C_HOT, C_BG, C_COLD = 30000.0, 6000.0, 1500.0  # Bq/mL at the scan reference time
W_KG, H_M = 70.0, 1.75
DOSE = 370e6
T_F18 = 6586.2
INJ = dt.datetime(2024, 3, 5, 9, 0, 0)
SCAN = dt.datetime(2024, 3, 5, 10, 0, 0)


def world_grid(shape=SHAPE, affine=AFF):
    idx = np.indices(shape).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(shape + (3,))


def reference_object():
    """(activity Bq/mL at the reference time, ROI labels: 1 hot, 2 cold, 3 the rest)."""
    w = world_grid()
    hot = np.linalg.norm(w - HOT_C, axis=-1) <= HOT_R
    cold = np.linalg.norm(w - COLD_C, axis=-1) <= COLD_R
    c = np.full(SHAPE, C_BG)
    c[hot], c[cold] = C_HOT, C_COLD
    labels = np.full(SHAPE, 3, np.uint8)
    labels[hot], labels[cold] = 1, 2
    return c, labels


def a_dec(dose=DOSE, t_half=T_F18, delay_s=3600.0):
    return dose * 2.0 ** (-delay_s / t_half)


def build(tmp_path, name, stored, *, modality="PT", unit="Bq/mL", patient=None, pet=None, extra=None, private=()):
    """Write ``stored`` as a shuffled per-slice-rescaled DICOM series, add private tags, read it back."""
    base_patient = {"PatientWeight": W_KG, "PatientSize": H_M, "PatientSex": "M", "PatientID": name}
    base_patient.update(patient or {})
    base_patient = {k: v for k, v in base_patient.items() if v is not None}
    vol = Volume(np.asarray(stored, np.float32), AFF, modality, unit, name=name)
    folder = write_dicom_series(
        vol,
        tmp_path / name,
        patient=base_patient,
        pet=pet or {},
        extra=extra or {},
        shuffle_names=7,
        rescale="per-slice",
    )
    if private:
        for f in folder.iterdir():
            ds = pydicom.dcmread(f)
            for group, creator, offset, vr, value in private:
                ds.private_block(group, creator, create=True).add_new(offset, vr, value)
            ds.save_as(f)
    return load_volume(folder)


def base_pet(**changes):
    """DICOM PET fields of the baseline (BQML, START, F-18 injected 1 h before the series)."""
    pet = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY"],
        "RadionuclideTotalDose": DOSE,
        "RadionuclideHalfLife": T_F18,
        "RadiopharmaceuticalStartDateTime": "20240305090000",
        "RadiopharmaceuticalStartTime": "090000",
        "RadionuclideCodeSequence": {
            "CodeValue": "C-111A1",
            "CodingSchemeDesignator": "SRT",
            "CodeMeaning": "^18^Fluorine",
        },
        "SeriesDate": "20240305",
        "SeriesTime": "100000",
        "AcquisitionDate": "20240305",
        "AcquisitionTime": "100000",
    }
    pet.update(changes)
    return {k: v for k, v in pet.items() if v is not None}


def suv_stats(volume, labels, suv_types=("bw",), **overrides):
    """Readouts of label 0 = the whole object (hot + cold + background), 1 hot, 2 cold, 3 background."""
    header = P.read_pet_header(volume, **overrides)
    whole = P.quantify_pet(
        volume, Volume((labels > 0).astype(np.uint8), AFF), suv_types=suv_types, peak=False, header=header
    )
    parts = P.quantify_pet(volume, Volume(labels, AFF), suv_types=suv_types, peak=False, header=header)
    whole["label"] = 0
    out = pd.concat([whole, parts]).set_index("label")
    out.attrs = parts.attrs
    return out


def check_object(df, expected_factor, column="suv_bw", tol=0.01):
    """min/median/max of the whole object and of each part against the truth."""
    truth = {0: (C_COLD, C_BG, C_HOT), 1: (C_HOT,) * 3, 2: (C_COLD,) * 3, 3: (C_BG,) * 3}
    for label, values in truth.items():
        for stat, value in zip(("min", "median", "max"), values):
            assert df.loc[label, f"{column}_{stat}"] == pytest.approx(value * expected_factor, rel=tol), (label, stat)
        if label:
            assert df.loc[label, f"{column}_mean"] == pytest.approx(values[0] * expected_factor, rel=tol)


BW_FACTOR = W_KG * 1000.0 / a_dec()


@pytest.fixture(scope="module")
def obj():
    return reference_object()


# ---------------------------------------------------------------------------- header variants
def test_bqml_start_baseline(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "bqml", c, pet=base_pet())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImmunotrackWarning)  # a clean header makes no guess
        df = suv_stats(pet, labels)
        h = P.read_pet_header(pet)
    check_object(df, BW_FACTOR)
    assert df.loc[1, "mean_bq_ml"] == pytest.approx(C_HOT, rel=1e-3)
    assert h.reference_time == SCAN and h.injection_time == INJ
    assert h.sources["reference_time"] == "SeriesDate/SeriesTime"
    assert h.decayed_dose_bq == pytest.approx(a_dec())
    assert h.radionuclide == "F18"


def test_gml_is_converted_to_the_suv_asked(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "gml", c * BW_FACTOR, unit="SUVbw", pet=base_pet(Units="GML", SUVType="BW"))
    df = suv_stats(pet, labels, suv_types=("bw", "lbm", "bsa"))
    check_object(df, BW_FACTOR)
    h = P.read_pet_header(pet)
    lbm = P.body_size(h, "lbm", "janmahasatian")
    check_object(df, lbm / a_dec(), column="suv_lbm")
    assert df.loc[1, "mean_bq_ml"] == pytest.approx(C_HOT, rel=1e-3)


def test_gml_without_suvtype_assumes_bw_with_a_warning(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "gml2", c * BW_FACTOR, unit="SUVbw", pet=base_pet(Units="GML"), extra={"SUVType": None})
    with pytest.warns(ImmunotrackWarning, match="assumed to be SUVbw"):
        df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)


def test_cm2ml_suvbsa(tmp_path, obj):
    c, labels = obj
    bsa_cm2 = 0.007184 * W_KG**0.425 * (H_M * 100) ** 0.725 * 1e4
    pet = build(tmp_path, "cm2ml", c * bsa_cm2 / a_dec(), unit="SUVbsa", pet=base_pet(Units="CM2ML"))
    df = suv_stats(pet, labels, suv_types=("bw", "bsa"))
    check_object(df, BW_FACTOR)
    check_object(df, bsa_cm2 / a_dec(), column="suv_bsa")


def test_philips_cnts_activity_concentration_scale(tmp_path, obj):
    c, labels = obj
    scale = 0.5  # Bq/mL per (rescaled) count
    priv = [
        (0x7053, "Philips PET Private Group", 0x09, "DS", "0.5"),
        (0x7053, "Philips PET Private Group", 0x00, "DS", "0.0"),
    ]  # SUV factor absent (0): not used
    pet = build(tmp_path, "philips_ac", c / scale, unit="counts", pet=base_pet(Units="CNTS"), private=priv)
    h = P.read_pet_header(pet)
    assert h.units == "CNTS" and h.philips_activity_scale == pytest.approx(0.5)
    check_object(suv_stats(pet, labels), BW_FACTOR)


def test_philips_cnts_suv_scale_factor(tmp_path, obj):
    c, labels = obj
    f_suv = 2.5e-4  # SUVbw per (rescaled) count, as Philips writes in (7053,1000)
    priv = [(0x7053, "Philips PET Private Group", 0x00, "DS", "0.00025")]
    pet = build(tmp_path, "philips_suv", c * BW_FACTOR / f_suv, unit="counts", pet=base_pet(Units="CNTS"), private=priv)
    df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)
    assert df.loc[1, "mean_bq_ml"] == pytest.approx(C_HOT, rel=0.01)


def test_dose_in_mbq_is_guessed_with_a_warning(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "mbq", c, pet=base_pet(RadionuclideTotalDose=370.0))
    with pytest.warns(ImmunotrackWarning, match="taken as MBq"):
        df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)


def test_weight_in_grams_is_guessed_with_a_warning(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "grams", c, patient={"PatientWeight": 70000.0}, pet=base_pet())
    with pytest.warns(ImmunotrackWarning, match="taken as grams"):
        df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)


def test_mouse_weight_rule(tmp_path, obj):
    """A mouse's PatientWeight of 25 is grams (species rule); 0.025 is kg as DICOM says."""
    c, labels = obj
    mouse = {"PatientWeight": 25.0, "PatientSpeciesDescription": "Mus musculus", "PatientSize": None}
    zr = base_pet(
        RadionuclideTotalDose=1.0e6,
        RadionuclideHalfLife=282240.0,
        RadionuclideCodeSequence={
            "CodeValue": "C-1018C",
            "CodingSchemeDesignator": "SRT",
            "CodeMeaning": "^89^Zirconium",
        },
        RadiopharmaceuticalStartDateTime="20240304100000",
        RadiopharmaceuticalStartTime="100000",
    )
    ad = 1.0e6 * 2 ** (-(24 * 3600.0) / 282240.0)
    pet = build(tmp_path, "mouse_g", c / 100.0, patient=mouse, pet=zr)
    with pytest.warns(ImmunotrackWarning, match="Mus musculus"):
        df = suv_stats(pet, labels)
    check_object(df, 25.0 / ad / 100.0)
    pet = build(tmp_path, "mouse_kg", c / 100.0, patient=dict(mouse, PatientWeight=0.025), pet=zr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImmunotrackWarning)
        df = suv_stats(pet, labels)
    check_object(df, 25.0 / ad / 100.0)


def test_decay_correction_admin(tmp_path, obj):
    c, labels = obj
    stored = c * 2.0 ** (3600.0 / T_F18)  # decay-corrected back to the injection
    pet = build(tmp_path, "admin", stored, pet=base_pet(DecayCorrection="ADMIN"))
    h = P.read_pet_header(pet)
    assert h.decayed_dose_bq == pytest.approx(DOSE) and h.reference_time == INJ
    check_object(suv_stats(pet, labels), BW_FACTOR)


def test_start_with_series_time_after_acquisition(tmp_path, obj):
    """A post-processed series: SeriesTime 10:30 after the acquisition at 10:00 -> the acquisition time."""
    c, labels = obj
    pet = build(tmp_path, "late_series", c, pet=base_pet(SeriesTime="103000"))
    with pytest.warns(ImmunotrackWarning, match="later than the first AcquisitionTime"):
        df = suv_stats(pet, labels)
        h = P.read_pet_header(pet)
    assert h.reference_time == SCAN
    check_object(df, BW_FACTOR)


def test_ge_private_scan_datetime(tmp_path, obj):
    """GE: SeriesTime (10:40) after AcquisitionTime (10:20) -> the private scan date-time (10:00)."""
    c, labels = obj
    priv = [(0x0009, "GEMS_PETD_01", 0x0D, "DT", "20240305100000.00")]
    pet = build(tmp_path, "ge", c, pet=base_pet(SeriesTime="104000", AcquisitionTime="102000"), private=priv)
    h = P.read_pet_header(pet)
    assert h.reference_time == SCAN and "GE private" in h.sources["reference_time"]
    check_object(suv_stats(pet, labels), BW_FACTOR)


def test_decay_correction_none_per_bed(tmp_path, obj):
    """Two beds acquired 330 s apart for 300 s each, values not decay-corrected."""
    c, labels = obj
    lam = math.log(2) / T_F18
    duration = 300.0
    starts = [0.0 if s < 10 else 330.0 for s in range(SHAPE[0])]
    stored = c.copy()
    for s, t0 in enumerate(starts):
        stored[s] *= 2.0 ** (-t0 / T_F18) * (-math.expm1(-lam * duration)) / (lam * duration)
    times = {s: (SCAN + dt.timedelta(seconds=t)).strftime("%H%M%S") for s, t in enumerate(starts)}
    pet = build(
        tmp_path,
        "none",
        stored,
        pet=base_pet(DecayCorrection="NONE", CorrectedImage=["ATTN"]),
        extra={"AcquisitionTime": lambda s, f: times[s], "ActualFrameDuration": 300000},
    )
    h = P.read_pet_header(pet)
    assert h.decay_correction == "NONE" and h.reference_time == SCAN
    assert len(h.slice_times) == SHAPE[0]
    df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)
    # without the per-frame correction the second bed would be 3.5% + 1.1% low: the test can fail
    assert np.ptp(P.decay_factors(h, SHAPE[0])) > 0.03


@pytest.mark.parametrize("which", ["datetime_only", "time_only"])
def test_injection_time_from_one_field(tmp_path, obj, which):
    c, labels = obj
    fields = (
        {"RadiopharmaceuticalStartTime": None}
        if which == "datetime_only"
        else {"RadiopharmaceuticalStartDateTime": None}
    )
    pet = build(tmp_path, which, c, pet=base_pet(**fields))
    h = P.read_pet_header(pet)
    assert h.injection_time == INJ
    check_object(suv_stats(pet, labels), BW_FACTOR)


def test_injection_before_midnight_scan_after(tmp_path, obj):
    c, labels = obj
    pet = build(
        tmp_path,
        "midnight",
        c,
        pet=base_pet(
            RadiopharmaceuticalStartDateTime=None,
            RadiopharmaceuticalStartTime="233000",
            SeriesTime="003000",
            AcquisitionTime="003000",
        ),
    )
    with pytest.warns(ImmunotrackWarning, match="day before"):
        h = P.read_pet_header(pet)
        df = suv_stats(pet, labels)
    assert h.injection_time == dt.datetime(2024, 3, 4, 23, 30)
    assert h.decay_time_s == pytest.approx(3600.0)
    check_object(df, BW_FACTOR)


NUCLIDES = [
    ("^18^Fluorine", 6586.2),
    ("^68^Gallium", 4062.6),
    ("^89^Zirconium", 282240.0),
    ("^64^Copper", 45720.0),
    ("^111^Indium", 242330.0),
    ("^99m^Technetium", 21624.0),
]


@pytest.mark.parametrize("meaning,t_half", NUCLIDES)
def test_half_life_from_the_header(tmp_path, obj, meaning, t_half):
    c, labels = obj
    pet = build(
        tmp_path,
        "nuclide",
        c,
        pet=base_pet(
            RadionuclideHalfLife=t_half,
            RadionuclideCodeSequence={"CodeValue": "X", "CodingSchemeDesignator": "99TEST", "CodeMeaning": meaning},
            RadiopharmaceuticalStartDateTime="20240305070000",
            RadiopharmaceuticalStartTime="070000",
        ),
    )
    h = P.read_pet_header(pet)
    assert h.half_life_s == pytest.approx(t_half)
    assert P.HALF_LIVES_S[h.radionuclide] == pytest.approx(t_half)
    check_object(suv_stats(pet, labels), W_KG * 1000 / a_dec(t_half=t_half, delay_s=3 * 3600.0))


def test_half_life_from_table_when_missing(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "no_hl", c, pet=base_pet(RadionuclideHalfLife=None))
    with pytest.warns(ImmunotrackWarning, match="no RadionuclideHalfLife"):
        df = suv_stats(pet, labels)
    check_object(df, BW_FACTOR)


def test_spect_counts_need_a_calibration(tmp_path, obj):
    """99mTc SPECT in counts, not decay-corrected, 20 min acquisition, 120 cps/MBq."""
    c, labels = obj
    t_half, duration, cal = 21624.0, 1200.0, 120.0
    lam = math.log(2) / t_half
    voxel_ml = 0.008
    counts = c * voxel_ml * 1e-6 * cal * duration * (-math.expm1(-lam * duration)) / (lam * duration)
    spect = build(
        tmp_path,
        "spect",
        counts,
        modality="NM",
        unit="counts",
        pet=base_pet(
            Units="CNTS",
            DecayCorrection="NONE",
            CorrectedImage=["ATTN"],
            RadionuclideHalfLife=t_half,
            ActualFrameDuration=duration * 1000,
            RadionuclideCodeSequence={
                "CodeValue": "C-163A8",
                "CodingSchemeDesignator": "SRT",
                "CodeMeaning": "^99m^Technetium",
            },
        ),
    )
    with pytest.raises(InputError, match="calibration"):
        suv_stats(spect, labels)
    df = suv_stats(spect, labels, calibration_cps_per_mbq=cal)
    check_object(df, W_KG * 1000 / a_dec(t_half=t_half))
    assert df.loc[1, "mean_bq_ml"] == pytest.approx(C_HOT, rel=0.01)


# ---------------------------------------------------------------------------- refusals
BROKEN = {
    "no dose": ({"RadionuclideTotalDose": None}, {}, "no injected dose"),
    "no weight": ({}, {"PatientWeight": None}, "no patient weight"),
    "unknown units": ({"Units": "PCNT"}, {}, "Units are 'PCNT'"),
    "injection after scan": (
        {"RadiopharmaceuticalStartDateTime": "20240305110000", "RadiopharmaceuticalStartTime": "110000"},
        {},
        "after the scan",
    ),
    "START without DECY": ({"CorrectedImage": ["ATTN"]}, {}, "contradictory"),
    "start date-time vs time": ({"RadiopharmaceuticalStartTime": "083000"}, {}, "disagree"),
    "half-life vs nuclide": ({"RadionuclideHalfLife": 282240.0}, {}, "does not match F18"),
    "no injection time": (
        {"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": None},
        {},
        "no injection time",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_headers_are_refused(tmp_path, obj, case):
    c, labels = obj
    pet_changes, patient, message = BROKEN[case]
    pet = build(tmp_path, "broken", c, pet=base_pet(**pet_changes), patient=patient)
    with pytest.raises(InputError, match=message):
        suv_stats(pet, labels)


def test_height_needed_for_lbm(tmp_path, obj):
    c, labels = obj
    pet = build(
        tmp_path,
        "noheight",
        c,
        patient={"PatientSize": None, "PatientSpeciesDescription": "Homo sapiens"},
        pet=base_pet(),
    )
    with pytest.raises(InputError, match="height"):
        suv_stats(pet, labels, suv_types=("lbm",))
    df = suv_stats(pet, labels, suv_types=("lbm",), height_cm=175.0)
    h = P.read_pet_header(pet, height_cm=175.0)
    assert h.overrides["height_m"]["value"] == pytest.approx(1.75) and h.sources["height_m"] == "user"
    check_object(df, P.body_size(h, "lbm") / a_dec(), column="suv_lbm")


# ---------------------------------------------------------------------------- formulas
def test_body_size_formulas():
    m = P.PetHeader(weight_kg=80.0, height_m=1.8, sex="M")
    f = P.PetHeader(weight_kg=60.0, height_m=1.65, sex="F")
    o = P.PetHeader(weight_kg=60.0, height_m=1.65, sex="O")
    assert P.body_size(m, "bw") == 80000.0
    assert P.body_size(m, "bsa") == pytest.approx(0.007184 * 80**0.425 * 180**0.725 * 1e4)
    assert P.body_size(m, "lbm", "james") == pytest.approx((1.10 * 80 - 128 * (80 / 180) ** 2) * 1000)
    assert P.body_size(f, "lbm", "james") == pytest.approx((1.07 * 60 - 148 * (60 / 165) ** 2) * 1000)
    bmi_m, bmi_f = 80 / 1.8**2, 60 / 1.65**2
    assert P.body_size(m, "lbm") == pytest.approx(9270 * 80 / (6680 + 216 * bmi_m) * 1000)
    assert P.body_size(f, "lbm") == pytest.approx(9270 * 60 / (8780 + 244 * bmi_f) * 1000)
    assert P.body_size(m, "ibw") == pytest.approx((50 + 2.3 * (180 / 2.54 - 60)) * 1000)
    assert P.body_size(f, "ibw") == pytest.approx((45.5 + 2.3 * (165 / 2.54 - 60)) * 1000)
    male = P.body_size(P.PetHeader(weight_kg=60.0, height_m=1.65, sex="M"), "lbm")
    assert P.body_size(o, "lbm") == pytest.approx((male + P.body_size(f, "lbm")) / 2)
    h = P.PetHeader(
        units="BQML", decay_correction="ADMIN", dose_bq=1e8, weight_kg=60.0, height_m=1.65, sex="O", injection_time=INJ
    )
    with pytest.warns(ImmunotrackWarning, match="sex unknown"):
        P.suv_factor(h, "lbm")
    with pytest.raises(InputError, match="SUV type"):
        P.suv_factor(h, "xyz")


def test_parsing_helpers():
    assert P.parse_dicom_datetime("20240305101530.5+0100") == dt.datetime(2024, 3, 5, 10, 15, 30, 500000)
    assert P.parse_dicom_datetime("2024-03-05T10:15:30") == dt.datetime(2024, 3, 5, 10, 15, 30)
    assert P.parse_dicom_time("10:15") == dt.time(10, 15)
    assert P.parse_dicom_time("1015") == dt.time(10, 15)
    with pytest.raises(InputError):
        P.parse_dicom_time("25xx")
    for text, key in [
        ("^18^Fluorine", "F18"),
        ("F-18", "F18"),
        ("89Zr", "ZR89"),
        ("Zirconium-89", "ZR89"),
        ("^99m^Technetium", "TC99M"),
        ("Tc-99m", "TC99M"),
        ("In111", "IN111"),
        ("64Cu", "CU64"),
        ("Ga-68", "GA68"),
        ("FDG", None),
    ]:
        assert P.nuclide_key(text) == key, text


def test_overrides_are_recorded(tmp_path, obj):
    c, labels = obj
    pet = build(tmp_path, "over", c, pet=base_pet(RadionuclideTotalDose=None))
    df = suv_stats(pet, labels, dose_mbq=370.0, weight_kg=70.0, injection_time="2024-03-05T09:00:00")
    check_object(df, BW_FACTOR)
    over = df.attrs["header"]["overrides"]
    assert over["dose_bq"] == {"value": 370e6, "header": None}
    assert over["weight_kg"]["header"] == pytest.approx(70.0)
    assert df.attrs["header"]["sources"]["dose_bq"] == "user"


# ---------------------------------------------------------------------------- analytic activity and the CLI
GRAD = np.array([25.0, -15.0, 40.0])  # Bq/mL per mm along x, y, z
C0 = 20000.0


def linear_activity(shape=SHAPE, affine=AFF):
    return (C0 + world_grid(shape, affine) @ GRAD).astype(np.float32)


def roi_on_mm_grid():
    """Three spheres (r = 5, 6, 4 mm) on a 1 mm RAS grid unlike the PET's (different origin, axes, spacing)."""
    aff = np.array([[1.0, 0, 0, -30.3], [0, 1.0, 0, -28.6], [0, 0, 1.0, -17.2], [0, 0, 0, 1]])
    shape = (60, 56, 36)
    w = world_grid(shape, aff)
    lab = np.zeros(shape, np.uint8)
    spheres = {1: ([-5.0, 4.0, 0.0], 5.0), 2: ([10.0, -8.0, 5.0], 6.0), 3: ([0.0, 12.0, -6.0], 4.0)}
    truth = {}
    for k, (centre, r) in spheres.items():
        inside = np.linalg.norm(w - np.array(centre), axis=-1) <= r
        lab[inside] = k
        truth[k] = (C0 + w[inside].mean(0) @ GRAD, inside.sum() / 1000.0)  # exact mean of the linear field
    return Volume(lab, aff, "SEG", "label", name="roi"), truth


def test_cli_quantify_dicom_with_roi_on_another_grid(tmp_path):
    c = linear_activity()
    pet_dir = tmp_path / "pet"
    write_dicom_series(
        Volume(c, AFF, "PT", "Bq/mL"),
        pet_dir,
        shuffle_names=3,
        patient={"PatientWeight": W_KG, "PatientSize": H_M, "PatientSex": "F"},
        pet=base_pet(),
    )
    roi, truth = roi_on_mm_grid()
    save_labels(roi, tmp_path / "roi.nii.gz")
    out = tmp_path / "readouts.csv"
    rc = main(["quantify", str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "-o", str(out), "--suv", "lbm"])
    assert rc == 0
    df = pd.read_csv(out).set_index("label")
    required = [
        "voxels",
        "volume_ml",
        "mean_bq_ml",
        "max_bq_ml",
        "suv_bw_mean",
        "suv_bw_min",
        "suv_bw_median",
        "suv_bw_max",
        "suv_bw_peak",
        "total_activity_mbq",
        "percent_id",
        "percent_id_per_g",
        "suv_lbm_mean",
    ]
    assert set(required) <= set(df.columns)
    for k, (mean, volume_ml) in truth.items():
        assert df.loc[k, "mean_bq_ml"] == pytest.approx(mean, rel=0.005)
        assert df.loc[k, "suv_bw_mean"] == pytest.approx(mean * BW_FACTOR, rel=0.005)
        assert df.loc[k, "volume_ml"] == pytest.approx(volume_ml, rel=1e-6)  # exact overlap weights
        assert df.loc[k, "total_activity_mbq"] == pytest.approx(mean * volume_ml / 1e6, rel=0.005)
        assert df.loc[k, "percent_id"] == pytest.approx(100 * mean * volume_ml / a_dec(), rel=0.005)
        # no organ names beside this ROI: soft tissue, 1.04 g/mL (docs/methods/pet.md#density)
        assert df.loc[k, "percent_id_per_g"] == pytest.approx(df.loc[k, "percent_id"] / volume_ml / 1.04, rel=1e-6)
        assert df.loc[k, "suv_bw_min"] < df.loc[k, "suv_bw_median"] < df.loc[k, "suv_bw_max"]
    prov = json.loads((tmp_path / "readouts.csv.provenance.json").read_text())
    assert prov["step"] == "quantify" and prov["pet_header"]["decayed_dose_bq"] == pytest.approx(a_dec())
    assert prov["parameters"]["roi_mapping"].startswith("exact overlap")


def test_cli_quantify_nifti_with_sidecar(tmp_path):
    c = linear_activity()
    save_volume(Volume(c, AFF, "PT", "Bq/mL"), tmp_path / "pet.nii.gz")
    sidecar = {
        "Modality": "PT",
        "Units": "BQML",
        "DecayCorrection": "START",
        "RadionuclideTotalDose": DOSE,
        "RadiopharmaceuticalStartTime": "09:00:00",
        "RadionuclideHalfLife": T_F18,
        "PatientWeight": W_KG,
        "PatientSpeciesDescription": "Homo sapiens",
        "SeriesDate": "20240305",
        "SeriesTime": "10:00:00",
        "AcquisitionTime": "10:00:00",
    }
    (tmp_path / "pet.json").write_text(json.dumps(sidecar))
    roi, truth = roi_on_mm_grid()
    save_labels(roi, tmp_path / "roi.nii.gz")
    out = tmp_path / "r.csv"
    assert main(["quantify", str(tmp_path / "pet.nii.gz"), "--roi", str(tmp_path / "roi.nii.gz"), "-o", str(out)]) == 0
    df = pd.read_csv(out).set_index("label")
    for k, (mean, _) in truth.items():
        assert df.loc[k, "suv_bw_mean"] == pytest.approx(mean * BW_FACTOR, rel=0.005)


def test_suvpeak_of_a_uniform_sphere_and_a_gradient(obj):
    c, labels = obj
    vol = Volume(
        c.astype(np.float32),
        AFF,
        "PT",
        "Bq/mL",
        {
            "Units": "BQML",
            "DecayCorrection": "ADMIN",
            "RadionuclideTotalDose": DOSE,
            "PatientWeight": W_KG,
            "PatientSpeciesDescription": "Homo sapiens",
        },
    )
    df = P.quantify_pet(vol, Volume(labels, AFF)).set_index("label")
    # a 9 mm sphere holds a 1 mL sphere (6.2 mm) around its centre: the peak is the hot value
    assert df.loc[1, "peak_bq_ml"] == pytest.approx(C_HOT, rel=1e-6)
    assert df.loc[1, "suv_bw_peak"] == pytest.approx(C_HOT * W_KG * 1000 / DOSE, rel=1e-6)
    # a 7 mm cold sphere: a 1 mL sphere centred on its edge voxels also sees the background
    assert C_COLD < df.loc[2, "peak_bq_ml"] < C_BG
    # linear field: the mean over a sphere is the value at its centre, so the peak is the
    # field at the best voxel centre of the ROI (whose sphere fits in the image)
    lin = linear_activity()
    v2 = vol.replace(data=lin)
    lab = np.zeros(SHAPE, np.uint8)
    lab[8:12, 12:20, 12:20] = 1
    df2 = P.quantify_pet(v2, Volume(lab, AFF))
    w = world_grid()[8:12, 12:20, 12:20]
    assert df2.loc[0, "peak_bq_ml"] == pytest.approx(float((C0 + w @ GRAD).max()), rel=1e-5)
    assert PEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)


def test_cli_bad_inputs(tmp_path, capsys):
    c = linear_activity()
    pet_dir = tmp_path / "pet"
    write_dicom_series(
        Volume(c, AFF, "PT", "Bq/mL"), pet_dir, patient={"PatientWeight": W_KG, "PatientSize": H_M}, pet=base_pet()
    )
    roi, _ = roi_on_mm_grid()
    save_labels(roi, tmp_path / "roi.nii.gz")
    far = roi.replace(affine=roi.affine @ np.array([[1, 0, 0, 500.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    save_labels(far, tmp_path / "far.nii.gz")
    save_labels(roi.replace(data=np.zeros_like(roi.data)), tmp_path / "empty.nii.gz")
    broken = tmp_path / "broken"
    write_dicom_series(
        Volume(c, AFF, "PT", "Bq/mL"),
        broken,
        patient={"PatientWeight": W_KG, "PatientSize": H_M},
        pet=base_pet(RadionuclideTotalDose=None),
    )
    out = tmp_path / "o.csv"
    cases = [
        ([str(pet_dir), "--roi", str(tmp_path / "far.nii.gz")], "outside"),
        ([str(pet_dir), "--roi", str(tmp_path / "empty.nii.gz")], "empty"),
        ([str(broken), "--roi", str(tmp_path / "roi.nii.gz")], "dose"),
        ([str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "--suv", "abc"], "--suv"),
        ([str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "--dose-mbq", "-5"], "--dose-mbq"),
        ([str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "--injection-time", "noon"], "noon"),
        ([str(pet_dir), "--roi", str(tmp_path / "nothere.nii.gz")], "does not exist"),
    ]
    for args, message in cases:
        rc = main(["quantify", *args, "-o", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, args
        assert len(err) == 1 and message in err[0], err
        assert not out.exists() and not list(tmp_path.glob(".o.csv*"))
    # no overwrite without --overwrite; with it, the file is replaced
    out.write_text("keep me")
    rc = main(["quantify", str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "-o", str(out)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["quantify", str(pet_dir), "--roi", str(tmp_path / "roi.nii.gz"), "-o", str(out), "--overwrite"]) == 0
    assert "suv_bw_mean" in out.read_text()


def test_cli_transform_and_label_subset(tmp_path):
    """ROIs drawn in another scanner's world (shifted 7 mm): --transform (PET world -> ROI world) carries them."""
    c = linear_activity()
    save_volume(Volume(c, AFF, "PT", "Bq/mL"), tmp_path / "pet.nii.gz")
    sidecar = {
        "Units": "BQML",
        "DecayCorrection": "ADMIN",
        "RadionuclideTotalDose": DOSE,
        "PatientWeight": W_KG,
        "PatientSpeciesDescription": "human",
    }
    (tmp_path / "pet.json").write_text(json.dumps(sidecar))
    roi, truth = roi_on_mm_grid()
    shift = np.eye(4)
    shift[:3, 3] = [7.0, -3.0, 2.0]
    save_labels(roi.replace(affine=shift @ roi.affine), tmp_path / "roi.nii.gz")
    np.savetxt(tmp_path / "pet_to_roi.txt", shift)
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                "quantify",
                str(tmp_path / "pet.nii.gz"),
                "--roi",
                str(tmp_path / "roi.nii.gz"),
                "-o",
                str(out),
                "--transform",
                str(tmp_path / "pet_to_roi.txt"),
                "--labels",
                "1,3",
            ]
        )
        == 0
    )
    df = pd.read_csv(out).set_index("label")
    assert list(df.index) == [1, 3]
    for k in (1, 3):
        assert df.loc[k, "mean_bq_ml"] == pytest.approx(truth[k][0], rel=0.005)
        assert df.loc[k, "suv_bw_mean"] == pytest.approx(truth[k][0] * W_KG * 1000 / DOSE, rel=0.005)


def test_dynamic_pet_is_refused():
    data = np.ones((2,) + SHAPE, np.float32)
    vol = Volume(data, AFF, "PT", "Bq/mL", {"Units": "BQML", "DecayCorrection": "ADMIN", "leading_axis": "time"})
    with pytest.raises(InputError, match="4D"):
        P.activity_concentration(vol)


def test_weight_unit_option():
    """Without a species or a human height a 25 is a 25 kg child or a 25 g mouse: refused until a unit is given."""
    small = Volume(
        np.full((10, 20, 20), 1000.0, np.float32),
        np.diag([0.5, 0.5, 0.5, 1.0]),
        "PT",
        "Bq/mL",
        {"Units": "BQML", "DecayCorrection": "ADMIN", "RadionuclideTotalDose": 1e6, "PatientWeight": 25},
    )
    assert P.read_pet_header(small).weight_kg is None
    with pytest.raises(InputError, match="--weight-unit kg or g"):
        P.suv_factor(P.read_pet_header(small), "bw")
    assert float(P.activity_concentration(small).data.max()) == 1000.0  # Bq/mL needs no weight
    assert P.read_pet_header(small, weight_unit="kg").weight_kg == 25.0
    h = P.read_pet_header(small, weight_unit="g")
    assert h.weight_kg == 0.025 and "grams" in h.sources["weight_kg"]


def test_transform_files(tmp_path):
    from napari_immunotrack.commands.quantify import load_transform
    from napari_immunotrack.io.transforms import write_transform

    m = np.eye(4)
    m[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    m[:3, 3] = [3.0, -2.0, 5.0]
    write_transform(tmp_path / "t.tfm", m)
    assert np.allclose(load_transform(tmp_path / "t.tfm"), m, atol=1e-9)
    pd.DataFrame(m).to_csv(tmp_path / "t.csv", header=False, index=False)
    assert np.allclose(load_transform(tmp_path / "t.csv"), m)
    (tmp_path / "bad.txt").write_text("not a matrix\n")
    with pytest.raises(InputError):
        load_transform(tmp_path / "bad.txt")


# ---------------------------------------------------------------------------- issue 22: rodent-sized numbers
def _sample_pet_table(**kwargs):
    from napari_immunotrack.data import sample_study_root
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.transforms import read_transform_file, resolve_direction

    ses = sample_study_root() / "sub-01" / "ses-day1"
    pet = load_volume(ses / "pet")
    dseg = load_volume(ses / "rois" / "sub-01_ses-day1_dseg.nii.gz")
    tf = read_transform_file(ses / "xfm" / "sub-01_ses-day1_from-pet_to-anat.tfm")
    m, _ = resolve_direction(tf, pet, dseg)
    return P.quantify_pet(pet, dseg, transform=m, **kwargs)


def test_sample_study_suvpeak_is_sized_for_a_mouse_and_never_above_suvmax():
    """25 g mouse: sphere of 2 x FWHM (1.5 mm default -> 14 uL) restricted to the ROI; peak <= max in every organ."""
    df = _sample_pet_table()
    assert "suv_bw_peak_14ul" in df.columns and "suv_bw_peak" not in df.columns
    assert df.attrs["parameters"]["peak_sphere"]["volume_ml"] == pytest.approx(np.pi / 6 * 3.0**3 / 1000)
    assert np.all(df["suv_bw_peak_14ul"] <= df["suv_bw_max"] * (1 + 1e-9))
    assert np.all(df["suv_bw_peak_14ul"] >= 0)
    kidney = df.set_index("label").loc[5]  # the kidney: peak 7.25 with mean 0.098 and max 0.236
    assert kidney["suv_bw_peak_14ul"] <= kidney["suv_bw_max"]
    # a header FWHM of 1 mm -> a 2 mm sphere (4 uL)
    df2 = _sample_pet_table(peak_fwhm_mm=1.0)
    assert "suv_bw_peak_4ul" in df2.columns


def test_restricted_peak_ignores_a_hot_neighbour_and_falls_back_for_tiny_rois():
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    img = np.full((40, 40, 40), 1.0, np.float32)
    img[:, :, 20:] = 100.0  # a hot organ beside ours
    lab = np.zeros(img.shape, np.uint8)
    lab[10:30, 10:30, 8:20] = 1  # our ROI: uniform 1.0, touching the hot organ
    lab[18:20, 18:20, 4:6] = 2  # 8 voxels (1 uL): smaller than the sphere
    img[19, 19, 5] = 5.0
    meta = {"Units": "BQML", "DecayCorrection": "ADMIN", "RadionuclideTotalDose": 1e6, "PatientWeight": 0.025}
    df = P.quantify_pet(Volume(img, aff, "PT", "Bq/mL", meta), Volume(lab, aff)).set_index("label")
    col = "peak_bq_ml_14ul"
    assert df.loc[1, col] == pytest.approx(1.0, rel=1e-6)  # PERCIST's unrestricted sphere would see the 100s
    assert df.loc[2, "peak_method"].startswith("hottest voxel")
    assert df.loc[2, col] == pytest.approx((7 * 1.0 + 5.0) / 8, rel=1e-6)  # the ROI's voxels around the hottest
    assert df.loc[2, col] <= df.loc[2, "max_bq_ml"]
    # a human keeps PERCIST's 1 mL sphere and the unsuffixed column
    human = dict(meta, PatientWeight=70.0, PatientSpeciesDescription="Homo sapiens")
    dfh = P.quantify_pet(Volume(img, aff, "PT", "Bq/mL", human), Volume(lab, aff))
    assert "suv_bw_peak" in dfh.columns and dfh.attrs["parameters"]["peak_sphere_ml"] == 1.0


def test_body_size_formulas_are_refused_for_a_mouse_with_alternatives(tmp_path, capsys):
    meta = {
        "Units": "BQML",
        "DecayCorrection": "ADMIN",
        "RadionuclideTotalDose": 1e6,
        "PatientWeight": 25,
        "PatientSpeciesDescription": "Mus musculus",
        "PatientSize": 0.1,
        "PatientSex": "F",
    }
    vol = Volume(np.full((6, 6, 6), 1000.0, np.float32), np.eye(4), "PT", "Bq/mL", meta)
    h = P.read_pet_header(vol)
    assert h.weight_kg == 0.025
    for t, hint in (("lbm", "--lean-mass-g"), ("bsa", "Meeh"), ("ibw", "SUVbw")):
        with pytest.raises(InputError, match=hint):
            P.suv_factor(h, t)
    # Meeh: BSA = 9.8 W[g]^(2/3) cm2 (25 g -> 83.8 cm2); a measured lean mass of 20 g
    hm = P.read_pet_header(vol, bsa_formula="meeh")
    assert P.body_size(hm, "bsa") == pytest.approx(9.8 * 25 ** (2 / 3))
    hl = P.read_pet_header(vol, lean_mass_kg=0.020)
    assert P.suv_factor(hl, "lbm") == pytest.approx(20.0 / 1e6)
    # no species, weight 0.025 kg: an animal by weight -> refused the same way
    with pytest.raises(InputError, match="human formulas"):
        P.suv_factor(
            P.PetHeader(units="BQML", decay_correction="ADMIN", dose_bq=1e6, weight_kg=0.025, height_m=0.1, sex="F"),
            "lbm",
        )
    # the CLI: one line
    capsys.readouterr()
    save_volume(vol, tmp_path / "pet.nii.gz")
    (tmp_path / "pet.json").write_text(json.dumps(meta))
    save_labels(Volume(np.ones((6, 6, 6), np.uint8), np.eye(4)), tmp_path / "roi.nii.gz")
    rc = main(
        [
            "quantify",
            str(tmp_path / "pet.nii.gz"),
            "--roi",
            str(tmp_path / "roi.nii.gz"),
            "-o",
            str(tmp_path / "o.csv"),
            "--suv",
            "lbm",
            "--weight-kg",
            "0.025",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "lean mass" in err[0] and not (tmp_path / "o.csv").exists()


def test_density_per_label_and_percent_id_per_ml():
    aff = np.eye(4)
    img = np.full((10, 10, 12), 1000.0, np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[:, :, :4], lab[:, :, 4:8], lab[:, :, 8:] = 1, 2, 3
    meta = {"Units": "BQML", "DecayCorrection": "ADMIN", "RadionuclideTotalDose": 1e7, "PatientWeight": 0.025}
    vol = Volume(img, aff, "PT", "Bq/mL", meta)
    names = {1: "lung", 2: "fat", 3: "kidney_left"}
    df = P.quantify_pet(vol, Volume(lab, aff), label_names=names).set_index("label")
    pid_ml = 100 * 1000.0 / 1e7  # %ID per mL of tissue
    assert np.allclose(df["percent_id_per_ml"], pid_ml)
    assert df.loc[1, "percent_id_per_g"] == pytest.approx(pid_ml / 0.30)
    assert df.loc[2, "percent_id_per_g"] == pytest.approx(pid_ml / 0.95)
    assert df.loc[3, "percent_id_per_g"] == pytest.approx(pid_ml / 1.05)
    df2 = P.quantify_pet(vol, Volume(lab, aff), label_names=names, density_table={"lung": 0.26}).set_index("label")
    assert df2.loc[1, "percent_id_per_g"] == pytest.approx(pid_ml / 0.26)
    df3 = P.quantify_pet(vol, Volume(lab, aff), density_g_ml=1.0)
    assert np.allclose(df3["percent_id_per_g"], pid_ml)


def test_quiet_header_records_guesses_without_emitting_them():
    """The display factor runs in worker threads: its header guesses are kept, never emitted."""
    import threading

    from napari_immunotrack.analysis.pet_header import read_pet_header
    from napari_immunotrack.widgets._common import suv_display_factor

    header = {
        "Units": "BQML",
        "RadionuclideTotalDose": 1e7,
        "PatientWeight": 25,  # a mouse's weight in g where DICOM says kg: a guess the header must record
        "DecayCorrection": "ADMIN",
        "PatientSpeciesDescription": "Mus musculus",
    }
    pet = Volume(np.full((2, 2, 2), 4e5, np.float32), np.eye(4), "PT", unit="Bq/mL", metadata=header)
    with warnings.catch_warnings(record=True) as loud:
        warnings.simplefilter("always")
        assert read_pet_header(pet).weight_kg == pytest.approx(0.025)
    assert any("taken as grams" in str(w.message) for w in loud)

    factors: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = read_pet_header(pet, quiet=True)
        worker = threading.Thread(target=lambda: factors.append(suv_display_factor(pet)))
        worker.start()
        worker.join()
    assert caught == []
    assert any("taken as grams" in m for m in quiet.warnings) and "quiet" not in quiet.as_dict()
    assert factors == [pytest.approx(25.0 / 1e7)]  # SUVbw per Bq/mL: 25 g over 10 MBq
