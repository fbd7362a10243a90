"""Every SUV header variant of the IBSI SUV reference objects (issue 19 item 3), written here with pydicom.

The IBSI SUV digital reference objects (Vacha et al., IBSI SUV computation) are PET series whose voxels
are SUVbw 0.2 / 1.0 / 4.0 (min / median / max) stored under different header conventions. We rebuild each
convention from its description with pydicom (nothing is downloaded) and check that reading it back gives
SUVbw 0.2 / 1.0 / 4.0: Bq/mL, Units GML with SUVType BW / LBM (James with the 128 constant and
Janmahasatian, both sexes) / IBW / BSA, Units CM2ML, and DecayCorrection START with a SeriesTime after the
acquisition (the earliest AcquisitionTime is the scan start). See docs/methods/pet.md#header-variants."""

import datetime as dt
import math

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_immunotrack.analysis import pet as P
from napari_immunotrack.errors import InputError
from napari_immunotrack.io import load_volume

W_KG, H_M = 82.0, 1.78
DOSE_BQ = 350e6
HALF_LIFE = 6586.2  # 18F
INJ = dt.datetime(2023, 6, 1, 9, 12, 0)
ACQ = dt.datetime(2023, 6, 1, 10, 14, 30)  # 62.5 min after the injection
PET_SOP = "1.2.840.10008.5.1.4.1.1.128"


def suv_bw_image():
    """SUVbw with min 0.2, median 1.0, max 4.0 (a background of 1.0, a cold and a hot insert)."""
    img = np.full((8, 16, 16), 1.0)
    img[2:4, 3:6, 3:6] = 0.2
    img[5:7, 9:12, 9:12] = 4.0
    return img


# the formulas the reference objects use (written out here, independently of the package)
def james(w, h_cm, sex):
    return 1.10 * w - 128 * (w / h_cm) ** 2 if sex == "M" else 1.07 * w - 148 * (w / h_cm) ** 2


def janma(w, h_m, sex):
    bmi = w / h_m**2
    return 9270 * w / (6680 + 216 * bmi) if sex == "M" else 9270 * w / (8780 + 244 * bmi)


def devine(h_cm, sex):
    return (50.0 if sex == "M" else 45.5) + 2.3 * (h_cm / 2.54 - 60.0)


def dubois_cm2(w, h_cm):
    return 0.007184 * w**0.425 * h_cm**0.725 * 1e4


def write_series(
    folder,
    values,
    *,
    units="BQML",
    suv_type=None,
    sex="M",
    height_m=H_M,
    decay_correction="START",
    series_time=None,
    slice_offsets_s=None,
):
    """A PET series, one file per slice, written with pydicom only (16-bit, per-slice rescale slope)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    series_time = series_time or ACQ
    for k in range(values.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PET_SOP
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = PET_SOP, meta.MediaStorageSOPInstanceUID
        ds.Modality = "PT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "IBSI^DRO", "dro"
        ds.PatientWeight = str(W_KG)
        if height_m is not None:
            ds.PatientSize = str(height_m)
        if sex is not None:
            ds.PatientSex = sex
        acq = ACQ + dt.timedelta(seconds=(slice_offsets_s or [0] * values.shape[0])[k])
        ds.SeriesDate = series_time.strftime("%Y%m%d")
        ds.SeriesTime = series_time.strftime("%H%M%S")
        ds.AcquisitionDate = acq.strftime("%Y%m%d")
        ds.AcquisitionTime = acq.strftime("%H%M%S")
        ds.Units = units
        if suv_type:
            ds.SUVType = suv_type
        ds.DecayCorrection = decay_correction
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.ActualFrameDuration = 600000
        rp = FileDataset(None, {})
        rp.RadionuclideTotalDose = str(DOSE_BQ)
        rp.RadionuclideHalfLife = str(HALF_LIFE)
        rp.RadiopharmaceuticalStartDateTime = INJ.strftime("%Y%m%d%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [2.0, 2.0]
        ds.SliceThickness = 2.0
        ds.InstanceNumber = k + 1
        plane = values[k]
        slope = float(plane.max()) / 32000.0 if plane.max() > 0 else 1.0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.round(plane / float(ds.RescaleSlope)).astype(np.uint16).tobytes()
        ds.save_as(folder / f"s{k:03d}.dcm", enforce_file_format=True)
    return folder


def decayed_dose(ref_time):
    return DOSE_BQ * 2.0 ** (-(ref_time - INJ).total_seconds() / HALF_LIFE)


def check_suvbw(folder, **kwargs):
    vol = load_volume(folder)
    header = P.read_pet_header(vol, **{k: v for k, v in kwargs.items() if k != "lbm_formula"})
    conc = P.activity_concentration(vol, header, need_dose=True, lbm_formula=kwargs.get("lbm_formula", "janmahasatian"))
    suv = conc.numpy() * P.suv_factor(header, "bw")
    got = (float(suv.min()), float(np.median(suv)), float(suv.max()))
    assert got == pytest.approx((0.2, 1.0, 4.0), rel=2e-4), got
    return header


def test_bqml_and_gml_bw(tmp_path):
    bq = suv_bw_image() * decayed_dose(ACQ) / (W_KG * 1000)
    check_suvbw(write_series(tmp_path / "bqml", bq))
    check_suvbw(write_series(tmp_path / "gml", suv_bw_image(), units="GML", suv_type="BW"))


@pytest.mark.parametrize("sex", ["M", "F"])
@pytest.mark.parametrize("formula", ["james", "janmahasatian"])
def test_gml_lbm_converted_back_to_suvbw(tmp_path, sex, formula):
    lbm = james(W_KG, H_M * 100, sex) if formula == "james" else janma(W_KG, H_M, sex)
    stored = suv_bw_image() * lbm / W_KG  # SUVlbm = C LBM / A = SUVbw LBM / W
    folder = write_series(tmp_path / "lbm", stored, units="GML", suv_type="LBM", sex=sex)
    check_suvbw(folder, lbm_formula=formula)


@pytest.mark.parametrize("sex", ["M", "F"])
def test_gml_ibw_and_bsa_converted_back(tmp_path, sex):
    check_suvbw(
        write_series(
            tmp_path / "ibw", suv_bw_image() * devine(H_M * 100, sex) / W_KG, units="GML", suv_type="IBW", sex=sex
        )
    )
    bsa = dubois_cm2(W_KG, H_M * 100)
    check_suvbw(
        write_series(tmp_path / "bsa", suv_bw_image() * bsa / (W_KG * 1000), units="GML", suv_type="BSA", sex=sex)
    )
    check_suvbw(write_series(tmp_path / "cm2ml", suv_bw_image() * bsa / (W_KG * 1000), units="CM2ML", sex=sex))


def test_start_with_series_time_after_acquisition_uses_the_earliest_acquisition(tmp_path):
    """A series re-saved 40 min after the scan: SeriesTime is late; values are decay-corrected to the scan start."""
    offsets = [i * 20 for i in range(8)]  # slices acquired over 140 s; the first is the scan start
    bq = suv_bw_image() * decayed_dose(ACQ) / (W_KG * 1000)
    folder = write_series(tmp_path / "late", bq, series_time=ACQ + dt.timedelta(minutes=40), slice_offsets_s=offsets)
    header = check_suvbw(folder)
    assert header.reference_time == ACQ
    # taking SeriesTime would have been 40 min of 18F decay off (29 %): make sure the test could fail
    assert 2.0 ** (40 * 60 / HALF_LIFE) - 1 > 0.25


def test_missing_sex_or_height_for_a_conversion_names_the_tag(tmp_path):
    stored = suv_bw_image() * janma(W_KG, H_M, "M") / W_KG
    vol = load_volume(write_series(tmp_path / "nosex", stored, units="GML", suv_type="LBM", sex=None))
    with pytest.raises(InputError, match=r"PatientSex \(0010,0040\)"):
        P.activity_concentration(vol, P.read_pet_header(vol), need_dose=True)
    vol = load_volume(write_series(tmp_path / "noheight", stored, units="GML", suv_type="BSA", height_m=None))
    with pytest.raises(InputError, match=r"PatientSize \(0010,1020\)"):  # (no height: the weight's unit is told)
        P.activity_concentration(vol, P.read_pet_header(vol, weight_unit="kg"), need_dose=True)
    # told the sex, the conversion works
    check_suvbw(tmp_path / "nosex", sex="M")
    assert math.isclose(janma(W_KG, H_M, "M") / W_KG, 0.7555, rel_tol=1e-3)  # the conversion is not a no-op
