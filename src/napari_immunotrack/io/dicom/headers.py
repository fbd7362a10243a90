"""DICOM header access: plain values, date/time parsing, reading one file's header, series labels.

The one place that parses DICOM dates and times (:func:`parse_dicom_date`,
:func:`parse_dicom_time`, :func:`parse_dicom_datetime`, :func:`dicom_seconds`);
see ``docs/methods/dicom-objects.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ...errors import ImmunotrackWarning, InputError

PLAIN_KEYS = (
    "SeriesDescription",
    "SeriesNumber",
    "StudyDescription",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ManufacturerModelName",
    "Units",
    "SUVType",
    "DecayCorrection",
    "CorrectedImage",
    "SeriesType",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "PatientID",
    "PatientName",
    "PatientWeight",
    "PatientSize",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "ImagingFrequency",
    "DecayFactor",
    "FrameReferenceTime",
    "ActualFrameDuration",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageType",
    "BodyPartExamined",
)
#: Fields of ``RadiopharmaceuticalInformationSequence[0]`` copied into metadata.
RADIOPHARM_KEYS = (
    "Radiopharmaceutical",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
    "RadionuclidePositronFraction",
    "RadiopharmaceuticalVolume",
)
#: Keys of each ``metadata["slice_headers"]`` entry. The list runs frame-major:
#: entry ``i`` belongs to ``frame = i // n_slices`` and ``slice = i % n_slices``
#: (both also stored in the entry; ``frame`` is 0 for 3D volumes).
SLICE_HEADER_KEYS = (
    "frame",
    "slice",
    "AcquisitionDate",
    "AcquisitionTime",
    "FrameReferenceTime",
    "ActualFrameDuration",
    "DecayFactor",
    "RescaleSlope",
    "RescaleIntercept",
    "InstanceNumber",
    "ImagePositionPatient",
    "EchoTime",
    "SOPInstanceUID",
    "file",
)

# SOP classes of images we read (used to tell a truncated image header from a non-image object).
_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.",)
_NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
}
SOP_CLASS = {
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # PET Image Storage
    "NM": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
PET_UNITS = {
    "BQML": "Bq/mL",
    "CNTS": "counts",
    "PROPCNTS": "counts",
    "CM2ML": "SUVbsa",
    "GML": "SUVbw",
    "%ID/G": "%ID/g",
    "NONE": "a.u.",
}
_SUV_TYPES = {"BW": "SUVbw", "BSA": "SUVbsa", "LBM": "SUVlbm", "IBW": "SUVibw"}
UNIT_TO_DICOM = {
    "Bq/mL": "BQML",
    "counts": "CNTS",
    "SUVbw": "GML",
    "SUVbsa": "CM2ML",
    "SUVlbm": "GML",
    "SUVibw": "GML",
    "%ID/g": "%ID/G",
}

_DEFER_BYTES = 16384  # values larger than this are read from the file only when used


def _plain(value):
    """A pydicom value as a JSON-friendly str/int/float/list (None for sequences and bytes)."""
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence
    from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

    if value is None or isinstance(value, (Sequence, bytes, bytearray)):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (DSfloat, DSdecimal, float, np.floating)):
        return float(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return str(value)


def header_value(ds, keyword, default=None):
    """``ds.keyword`` as a plain value, ``default`` when absent or empty."""
    try:
        elem = ds[keyword] if keyword in ds else None
    except Exception:  # a malformed element: treat as absent
        return default
    if elem is None or elem.value is None or elem.value == "":
        return default
    try:
        return _plain(elem.value)
    except Exception:
        return default


def header_floats(ds, keyword, n):
    """A numeric multi-value (n numbers) as an array, None when absent or malformed."""
    value = header_value(ds, keyword)
    if value is None:
        return None
    if not isinstance(value, list):
        value = [value]
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def first_item(ds, sequence_keyword):
    """The first item of a sequence, or None."""
    seq = ds.get(sequence_keyword) if sequence_keyword in ds else None
    return seq[0] if seq else None


def parse_dicom_date(value) -> _dt.date | None:
    """A DICOM DA ('YYYYMMDD', also 'YYYY.MM.DD' of old headers) or ISO date; None when empty.

    The one date parser of the package (PET timing and slice ordering use it).
    Raises InputError on text that is not a date.

    >>> parse_dicom_date("20240305")
    datetime.date(2024, 3, 5)
    """
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    text = _text(value)
    if not text:
        return None
    digits = re.sub(r"[^0-9]", "", text)
    if len(digits) != 8:
        raise InputError(f"date {text!r} is not a valid DICOM date (YYYYMMDD).")
    try:
        return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InputError(f"date {text!r} is not a valid date.") from None


def parse_dicom_time(value) -> _dt.time | None:
    """A DICOM TM ('HHMMSS.FFFFFF', 'HHMM', 'HH', or 'HH:MM:SS' of old headers) or ISO time; None when empty.

    A leap second (60) is read as 59. Raises InputError on text that is not a time.

    >>> parse_dicom_time("101530.25")
    datetime.time(10, 15, 30, 250000)
    """
    if isinstance(value, _dt.datetime):
        return value.time()
    if isinstance(value, _dt.time):
        return value
    text = _text(value)
    if not text:
        return None
    text = text.replace(":", "")
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if not m:
        raise InputError(f"time {value!r} is not a valid DICOM time (HHMMSS.FFFFFF).")
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    frac = int((m.group(4) or "0").ljust(6, "0"))
    if ss == 60:  # leap second written by some scanners
        ss = 59
    try:
        return _dt.time(hh, mm, ss, frac)
    except ValueError:
        raise InputError(f"time {value!r} is not a valid time of day.") from None


def parse_dicom_datetime(value) -> _dt.datetime | None:
    """A DICOM DT ('YYYYMMDDHHMMSS.FFFFFF&ZZXX') or ISO 8601 date-time, as naive local time; None when empty.

    A UTC offset, if any, is dropped: the scanner writes all times of a study
    in the same local time.

    >>> parse_dicom_datetime("20240305101530.5+0100")
    datetime.datetime(2024, 3, 5, 10, 15, 30, 500000)
    """
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None)
    text = _text(value)
    if not text:
        return None
    if "-" in text[:8] or "T" in text:  # ISO 8601
        try:
            return _dt.datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=None)
        except ValueError:
            raise InputError(f"date-time {text!r} is not valid ISO 8601 (YYYY-MM-DDTHH:MM:SS).") from None
    text = re.sub(r"[+-]\d{4}$", "", text)
    m = re.fullmatch(r"(\d{8})(\d{2,6}(?:\.\d{1,6})?)?", text)
    if not m:
        raise InputError(f"date-time {text!r} is not a valid DICOM date-time (YYYYMMDDHHMMSS).")
    date = parse_dicom_date(m.group(1))
    time = parse_dicom_time(m.group(2)) if m.group(2) else _dt.time(0, 0)
    return _dt.datetime.combine(date, time)


def dicom_seconds(date: str | None, time: str | None) -> float | None:
    """Seconds since 0001-01-01 of a DICOM DA + TM pair (TM alone counts from day 0); None if unreadable.

    Built on :func:`parse_dicom_date` and :func:`parse_dicom_time` (one parser
    for the package); used to order frames, where an unreadable value must not
    stop the read.

    >>> dicom_seconds("20240101", "120000.5") - dicom_seconds("20240101", "000000")
    43200.5
    """
    if not time:
        return None
    try:
        t = parse_dicom_time(time)
        d = parse_dicom_date(date) if date else None
    except InputError:
        return None
    if t is None:
        return None
    days = d.toordinal() if d is not None else 0
    return days * 86400.0 + t.hour * 3600.0 + t.minute * 60.0 + t.second + t.microsecond / 1e6


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def read_header(path: Path, explicit: bool, suspects: list | None = None):
    """The dataset of ``path`` (pixels deferred), or None when it is not a DICOM image.

    ``explicit``: the user named this file, so "not DICOM" is an error rather than a skip.
    ``suspects``: collects image objects without Rows/Columns (truncated headers, or
    stripped test objects), reported in one warning by the caller.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings on odd-but-readable values
            # one parse per file: large values (the pixel data) are deferred, i.e. read from the
            # file only when the pixels are needed (measured faster than stop_before_pixels + re-read)
            ds = pydicom.dcmread(str(path), defer_size=_DEFER_BYTES, force=False)
    except InvalidDicomError:
        if explicit:
            raw = raw_dataset(path)
            if raw is not None and ("Rows" not in raw or "Columns" not in raw):
                raise InputError(
                    f"{path} holds no image: it is a DICOM object of class {_object_name(raw)}, stored "
                    "without the DICOM file header; give a DICOM image file or the folder of a "
                    "series."
                ) from None
            if raw is not None:
                raise InputError(
                    f"{path} is a DICOM image of class {_object_name(raw)}, stored without the "
                    "128-byte preamble and 'DICM' file header; convert it to a standard DICOM file "
                    "first (e.g. dcmconv +F in.dcm out.dcm)."
                ) from None
            raise InputError(
                f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
                "give a DICOM file or the folder of a DICOM series (a raw dataset without the "
                "preamble must be converted first, e.g. dcmconv +F)."
            ) from None
        if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
            warnings.warn(
                f"{path} has a DICOM extension but is not a DICOM file; skipped.", ImmunotrackWarning, stacklevel=2
            )
        return None
    except Exception as exc:  # pydicom raises many types on a corrupt header: all mean "bad file"
        raise InputError(
            f"{path}: the DICOM header cannot be read ({' '.join(str(exc).split())[:100]}); "
            "the file is probably truncated or corrupt: copy it again or remove it."
        ) from None
    sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", "") or "")
    if "Rows" not in ds or "Columns" not in ds:
        looks_like_image = (
            sop_class.startswith(_IMAGE_SOP_PREFIXES)
            and sop_class not in _NON_IMAGE_SOP
            and not _is_known_non_image(sop_class)
        )
        if looks_like_image and explicit:
            # an image object whose header stops early: the file was cut short
            raise InputError(
                f"{path}: the DICOM image header is incomplete (no Rows/Columns); the file is "
                "probably truncated: copy it again."
            )
        if looks_like_image and suspects is not None:
            suspects.append(path)
            return None
        if explicit:
            if sop_class == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
                raise InputError(
                    f"{path} is a DICOMDIR (the index of a DICOM disc or export), not an image; "
                    "give the folder that holds it (every series below it is read) or one series' "
                    "folder."
                )
            if "PixelData" in ds and not sop_class and "Modality" not in ds:
                raise InputError(
                    f"{path}: the DICOM header is damaged (pixel data but no Rows/Columns, Modality "
                    "or SOP class); the file is probably corrupt: copy or export it again."
                )
            what = (
                f"Modality {ds.Modality}"
                if ds.get("Modality")
                else f"a DICOM object of class {_object_name(ds)}"
                if sop_class
                else "its header has no Modality, SOP class or pixel data"
            )
            raise InputError(f"{path} holds no image ({what}); give a DICOM image file or the folder of a series.")
        return None
    return ds


def raw_dataset(path: Path):
    """A DICOM dataset written without preamble and file meta (as some tools export), or None.

    Only what parses into a dataset naming its SOP class or modality counts: anything
    else forced through pydicom (a text file, a truncated header) is not DICOM.
    """
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True, defer_size=_DEFER_BYTES)
            sop = str(ds.get("SOPClassUID", "") or "")
            modality = str(ds.get("Modality", "") or "")
    except Exception:
        return None
    if sop.startswith("1.2.840.10008.") or (modality.isalnum() and modality.isupper() and len(modality) <= 16):
        return ds
    return None


def _object_name(ds) -> str:
    """What a DICOM object is, for a message: its SOP class's name and modality (e.g.
    "RT Structure Set Storage (Modality RTSTRUCT)")."""
    from pydicom.uid import UID

    sop = str(ds.get("SOPClassUID", "") or "") or str(
        getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or ""
    )
    name = UID(sop).name if sop else ""
    name = name or "unknown"  # pydicom names an unlisted UID by its digits
    modality = str(ds.get("Modality", "") or "")
    return f"{name} (Modality {modality})" if modality else name


def _is_known_non_image(sop_class: str) -> bool:
    """SOP classes under 1.2.840.10008.5.1.4.1.1 that are not images (SR, RT plans/structures, PR, KO...)."""
    from pydicom.uid import UID

    name = UID(sop_class).name.lower() if sop_class else ""
    return any(
        word in name
        for word in (
            "report",
            " sr ",
            "structure",
            "plan",
            "presentation state",
            "key object",
            "waveform",
            "encapsulated",
            "registration",
            "raw data",
            "spectroscopy",
            "treatment record",
        )
    )


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursive), hidden files excluded, in a stable order."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


@contextlib.contextmanager
def bad_values_as_input_error(path: Path):
    """Turn what a corrupt or hand-edited header value makes numpy/pydicom raise (``int('abc')``,
    a missing attribute, an impossible shape) into the InputError of a bad file."""
    from pydicom.errors import BytesLengthException  # a value cut short (a file truncated inside its header)

    try:
        yield
    except (
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
        NotImplementedError,
        BytesLengthException,
    ) as exc:  # pydicom: NotImplementedError for an unknown VR
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"{path}: a DICOM header value cannot be used ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:100]}); the file is corrupt or was edited by hand: "
            "fix it or remove it from the folder."
        ) from None


def series_sort_key(ds) -> float:
    """SeriesNumber as a number for sorting series (missing or unreadable last)."""
    n = header_value(ds, "SeriesNumber")
    try:
        return float(n)
    except (TypeError, ValueError):
        return float("inf")


def series_label(ds) -> str:
    """'<SeriesNumber> (<Modality>, <SeriesDescription>)' for messages."""
    desc = header_value(ds, "SeriesDescription") or ""
    return f"{header_value(ds, 'SeriesNumber', '?')} ({header_value(ds, 'Modality', '?')}{', ' + desc if desc else ''})"


def volume_label(ds, source: Path) -> str:
    """'DICOM series <label> in <source>', how messages name a series."""
    return f"DICOM series {series_label(ds)} in {source}"


def pixel_unit(ds, modality: str) -> str:
    """The unit of the pixel values: PET/NM Units (BQML -> Bq/mL, GML -> SUV type, ...), CT HU, RT dose Gy, else a.u."""
    units = str(header_value(ds, "Units", "") or "").upper()
    if modality in ("PT", "NM") and units:
        if units == "GML":
            suv_type = str(header_value(ds, "SUVType", "") or "BW").upper()
            return _SUV_TYPES.get(suv_type, "SUVbw")
        return PET_UNITS.get(units, units)
    if modality == "PT":
        return "a.u."
    if modality == "NM":
        return "counts"
    if modality == "CT":
        return "HU"
    if str(header_value(ds, "Modality", "")) == "RTDOSE":
        return "Gy" if str(header_value(ds, "DoseUnits", "")).upper() == "GY" else "relative dose"
    return "a.u."
