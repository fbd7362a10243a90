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
    """``ds.keyword`` as a plain value, ``default`` when absent or empty.

    Parameters
    ----------
    ds : pydicom.Dataset
        A DICOM header (or a sequence item).
    keyword : str
        A DICOM keyword, e.g. ``"SeriesNumber"``.
    default : object, optional
        Returned when the element is absent, empty or malformed (None by default).

    Returns
    -------
    str, int, float, list or None
        The value as plain Python: IS as int, DS as float, multi-values as lists, strings stripped
        of padding, person names as written; sequences and bytes give None.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.SeriesNumber, ds.PixelSpacing, ds.SeriesDescription = "7", ["0.5", "0.25"], "T2w "
    >>> header_value(ds, "SeriesNumber"), header_value(ds, "PixelSpacing"), header_value(ds, "SeriesDescription")
    (7, [0.5, 0.25], 'T2w')
    >>> header_value(ds, "EchoTime", default=0.0)
    0.0
    """
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
    """A numeric multi-value (n numbers) as an array, None when absent or malformed.

    Parameters
    ----------
    ds : pydicom.Dataset
        A DICOM header.
    keyword : str
        A numeric DICOM keyword, e.g. ``"ImagePositionPatient"``.
    n : int
        How many numbers the element must hold.

    Returns
    -------
    ndarray of shape (n,) or None
        The values as floats (in the element's own unit, e.g. mm), or None when the element is
        absent, holds another count, or a value is not a finite number.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.ImagePositionPatient = ["-10", "20.5", "3"]
    >>> header_floats(ds, "ImagePositionPatient", 3)
    array([-10. ,  20.5,   3. ])
    >>> header_floats(ds, "ImagePositionPatient", 2) is None
    True
    """
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
    """The first item of a sequence, or None.

    Parameters
    ----------
    ds : pydicom.Dataset
        A DICOM header.
    sequence_keyword : str
        The keyword of a sequence element, e.g. ``"RadiopharmaceuticalInformationSequence"``.

    Returns
    -------
    pydicom.Dataset or None
        The sequence's first item; None when the sequence is absent or empty.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> item = Dataset(); item.RadionuclideHalfLife = "6586.2"
    >>> ds = Dataset(); ds.RadiopharmaceuticalInformationSequence = [item]
    >>> header_value(first_item(ds, "RadiopharmaceuticalInformationSequence"), "RadionuclideHalfLife")
    6586.2
    >>> first_item(ds, "ReferencedImageSequence") is None
    True
    """
    seq = ds.get(sequence_keyword) if sequence_keyword in ds else None
    return seq[0] if seq else None


def parse_dicom_date(value) -> _dt.date | None:
    """A DICOM DA ('YYYYMMDD', also 'YYYY.MM.DD' of old headers) or ISO date; None when empty.

    The one date parser of the package (PET timing and slice ordering use it).

    Parameters
    ----------
    value : str, datetime.date, datetime.datetime or None
        A DA value; any separators are ignored, so 'YYYY.MM.DD' and 'YYYY-MM-DD' also parse.
        A date or datetime is returned as a date.

    Returns
    -------
    datetime.date or None
        None when ``value`` is empty.

    Raises
    ------
    InputError
        If the text is not eight digits of a valid date.

    Examples
    --------
    >>> parse_dicom_date("20240305")
    datetime.date(2024, 3, 5)
    >>> parse_dicom_date("2024.03.05"), parse_dicom_date("")
    (datetime.date(2024, 3, 5), None)
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

    A leap second (60) is read as 59.

    Parameters
    ----------
    value : str, datetime.time, datetime.datetime or None
        A TM value; missing minutes and seconds count as 0, colons are ignored.

    Returns
    -------
    datetime.time or None
        Microsecond resolution; None when ``value`` is empty.

    Raises
    ------
    InputError
        If the text is not a time of day.

    Examples
    --------
    >>> parse_dicom_time("101530.25")
    datetime.time(10, 15, 30, 250000)
    >>> parse_dicom_time("0930"), parse_dicom_time("23:59:60")
    (datetime.time(9, 30), datetime.time(23, 59, 59))
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

    Parameters
    ----------
    value : str, datetime.datetime or None
        A DT value (the time part optional: a date alone is midnight) or an ISO 8601 text.

    Returns
    -------
    datetime.datetime or None
        Naive local time; None when ``value`` is empty.

    Raises
    ------
    InputError
        If the text is neither a DICOM DT nor ISO 8601.

    Examples
    --------
    >>> parse_dicom_datetime("20240305101530.5+0100")
    datetime.datetime(2024, 3, 5, 10, 15, 30, 500000)
    >>> parse_dicom_datetime("2024-03-05T10:15:30")
    datetime.datetime(2024, 3, 5, 10, 15, 30)
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

    Parameters
    ----------
    date : str or None
        A DA value ('YYYYMMDD'); None or empty counts from day 0 (only differences within a day
        are then meaningful).
    time : str or None
        A TM value ('HHMMSS.FFFFFF').

    Returns
    -------
    float or None
        Seconds; None when ``time`` is empty or either value does not parse (never raises).

    Examples
    --------
    >>> dicom_seconds("20240102", "000000") - dicom_seconds("20240101", "000000")
    86400.0
    >>> dicom_seconds(None, "000130"), dicom_seconds("20240101", "not a time")
    (90.0, None)
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

    Parameters
    ----------
    path : Path
        The file to read.
    explicit : bool
        The user named this file, so "not DICOM" (or a DICOM object that is not an image) is an
        InputError rather than a skip (None) as for a file found in a folder.
    suspects : list, optional
        Collects image objects without Rows/Columns (truncated headers, or stripped test
        objects), reported in one warning by the caller.

    Returns
    -------
    pydicom.Dataset or None
        The header with values over 16 KiB (the pixel data) read only when used; None for a file
        in a folder that is not a DICOM image (a warning when it has a DICOM extension).

    Raises
    ------
    InputError
        If the header is corrupt, or (``explicit``) the file is not a DICOM image; the message says
        what the file is and what to give instead.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> ds = read_header(Path(get_testdata_file("CT_small.dcm")), explicit=True)
    >>> ds.Modality, ds.Rows, ds.Columns
    ('CT', 128, 128)
    >>> read_header(Path(get_testdata_file("ExplVR_LitEndNoMeta.dcm")), explicit=False) is None
    True
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

    Parameters
    ----------
    path : Path
        A file that failed to read as a standard DICOM file.

    Returns
    -------
    pydicom.Dataset or None
        The header without pixel data, or None when the file is not a DICOM dataset at all.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> ds = raw_dataset(Path(get_testdata_file("ExplVR_LitEndNoMeta.dcm")))
    >>> ds.Modality, "Rows" in ds
    ('RTPLAN', False)
    >>> raw_dataset(Path(__file__)) is None   # a Python source file
    True
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
    """Every regular file under ``root`` (recursive), hidden files excluded, in a stable order.

    Parameters
    ----------
    root : Path
        A folder.

    Returns
    -------
    list of Path
        Files sorted by folder, then name; files and folders whose name starts with ``.`` are left out.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("b/2.dcm", "b/1.dcm", "a.dcm", ".hidden/x.dcm", ".DS_Store"):
    ...         (Path(tmp) / name).parent.mkdir(exist_ok=True)
    ...         (Path(tmp) / name).touch()
    ...     [f.relative_to(tmp).as_posix() for f in list_files(Path(tmp))]
    ['a.dcm', 'b/1.dcm', 'b/2.dcm']
    """
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


@contextlib.contextmanager
def bad_values_as_input_error(path: Path):
    """Turn what a corrupt or hand-edited header value makes numpy/pydicom raise (``int('abc')``,
    a missing attribute, an impossible shape) into the InputError of a bad file.

    Parameters
    ----------
    path : Path
        The file being read, named in the message.

    Returns
    -------
    contextlib.AbstractContextManager
        A context in which ValueError, TypeError, AttributeError, KeyError, IndexError,
        OverflowError, NotImplementedError and pydicom's BytesLengthException become InputError
        (an InputError raised inside passes unchanged).

    Examples
    --------
    >>> try:
    ...     with bad_values_as_input_error(Path("IM0001.dcm")):
    ...         int("abc")
    ... except InputError as error:
    ...     print(str(error)[:66])
    IM0001.dcm: a DICOM header value cannot be used (ValueError: inval
    """
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
    """SeriesNumber as a number for sorting series (missing or unreadable last).

    Parameters
    ----------
    ds : pydicom.Dataset
        A header of the series.

    Returns
    -------
    float
        The SeriesNumber, or ``inf`` when it is missing or not a number.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SeriesNumber = "12"
    >>> series_sort_key(ds), series_sort_key(Dataset())
    (12.0, inf)
    """
    n = header_value(ds, "SeriesNumber")
    try:
        return float(n)
    except (TypeError, ValueError):
        return float("inf")


def series_label(ds) -> str:
    """'<SeriesNumber> (<Modality>, <SeriesDescription>)' for messages.

    Parameters
    ----------
    ds : pydicom.Dataset
        A header of the series.

    Returns
    -------
    str
        Missing number or modality written as ``?``; no description, no comma.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SeriesNumber, ds.Modality, ds.SeriesDescription = "3", "PT", "FDG 60 min"
    >>> series_label(ds), series_label(Dataset())
    ('3 (PT, FDG 60 min)', '? (?)')
    """
    desc = header_value(ds, "SeriesDescription") or ""
    return f"{header_value(ds, 'SeriesNumber', '?')} ({header_value(ds, 'Modality', '?')}{', ' + desc if desc else ''})"


def volume_label(ds, source: Path) -> str:
    """'DICOM series <label> in <source>', how messages name a series.

    Parameters
    ----------
    ds : pydicom.Dataset
        A header of the series (see :func:`series_label`).
    source : Path
        The file or folder the series was read from.

    Returns
    -------
    str

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SeriesNumber, ds.Modality = "3", "MR"
    >>> volume_label(ds, Path("study/day7"))
    'DICOM series 3 (MR) in study/day7'
    """
    return f"DICOM series {series_label(ds)} in {source}"


def pixel_unit(ds, modality: str) -> str:
    """The unit of the pixel values: PET/NM Units (BQML -> Bq/mL, GML -> SUV type, ...), CT HU, RT dose Gy, else a.u.

    Parameters
    ----------
    ds : pydicom.Dataset
        A header of the series (Units, SUVType, DoseUnits are read).
    modality : str
        The volume's modality ("PT", "NM", "CT", "MR", ...).

    Returns
    -------
    str
        "Bq/mL", "counts", "SUVbw"/"SUVbsa"/"SUVlbm"/"SUVibw", "%ID/g" (PET/NM; an unknown Units
        value is returned as written), "HU" (CT), "Gy" or "relative dose" (RTDOSE), else "a.u."
        (a PET without Units) or "counts" (an NM without Units).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.Units, ds.SUVType = "GML", "LBM"
    >>> pixel_unit(ds, "PT"), pixel_unit(Dataset(), "PT"), pixel_unit(Dataset(), "CT")
    ('SUVlbm', 'a.u.', 'HU')
    """
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
