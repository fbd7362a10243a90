"""DICOM series: reading folders/files into Volumes and writing Volumes as series (pydicom).

Reading (:func:`read_dicom`)
----------------------------
A path is a DICOM file or a folder, searched recursively; files need no
``.dcm`` extension and non-DICOM files (DICOMDIR, README, reports, plans) are
ignored. Images are grouped into one Volume per series (SeriesInstanceUID;
a multi-frame file is its own volume), sorted by SeriesNumber.

Geometry, the part that must never be guessed:

- Slices are sorted by their position along the slice normal
  ``n = row_cosine x column_cosine`` (``ImageOrientationPatient``), i.e. by
  ``n . ImagePositionPatient``; never by file name or InstanceNumber.
- All slices must share orientation, rows/columns and PixelSpacing; the
  spacing between consecutive positions must be uniform (within
  ``max(0.01 mm, 1 %)``). A missing slice, irregular spacing, a missing
  PixelSpacing / ImageOrientationPatient / ImagePositionPatient, or a single
  slice is an :class:`~napari_immunotrack.errors.InputError` saying what is
  wrong and what to do. Nothing defaults to 1 mm.
- Several slices at one position (dynamic PET frames, MR echoes, temporal
  positions) make a 4D volume when every position has the same number of
  them: the leading axis is ``"echo"`` when EchoTime/EchoNumbers differ,
  else ``"time"`` (ordered by TemporalPositionIdentifier/Index,
  FrameReferenceTime, acquisition date-time, TriggerTime); it is named in
  ``metadata["leading_axis"]``.
- Array order is ``([frame,] slice, row, column)``. The affine maps
  ``(slice, row, column)`` to RAS mm: DICOM's LPS with x and y negated,
  columns ``[step, PixelSpacing[0] * column_cosine, PixelSpacing[1] * row_cosine]``
  and origin the first sorted slice's ImagePositionPatient, where
  ``step = (position_last - position_first) / (n - 1)`` (so a gantry tilt
  gives an exact sheared affine, with a warning).
- Multi-frame files: NM reconstructed SPECT (DetectorInformationSequence +
  SliceVector + SpacingBetweenSlices), enhanced CT/MR/PET (per-frame
  functional groups) and RT dose grids (GridFrameOffsetVector).

Values: RescaleSlope/RescaleIntercept are applied per slice (PET scanners
give every slice its own slope); the result is float32 when any slice has a
slope/intercept other than (1, 0), else the stored integer type.

Units: PT ``Units`` BQML -> "Bq/mL", GML -> "SUVbw" (or the SUVType:
"SUVbsa", "SUVlbm", "SUVibw"), CM2ML -> "SUVbsa", CNTS -> "counts"; NM ->
"counts" unless Units says otherwise; MR "a.u."; CT "HU".

Metadata keys: ``source_path``, ``format`` ("dicom"), ``SeriesInstanceUID``,
``Modality``, the plain fields listed in :data:`PLAIN_KEYS` (timing and
patient fields as DICOM strings/floats/lists; ``AcquisitionDate/Time`` are
those of the earliest slice), the radiopharmaceutical fields of
``RadiopharmaceuticalInformationSequence[0]`` (``Radiopharmaceutical``,
``Radionuclide`` (the code meaning), ``RadionuclideTotalDose`` [Bq],
``RadionuclideHalfLife`` [s], ``RadiopharmaceuticalStartTime``,
``RadiopharmaceuticalStartDateTime``), ``dicom_header`` (the first sorted
slice's pydicom Dataset without pixel data, private tags included),
``slice_headers`` (see :data:`SLICE_HEADER_KEYS`), ``files`` (the files
read), ``slice_normal_lps``, ``gantry_tilt_deg`` (only when sheared), and
for 4D ``leading_axis`` and ``frames`` (one dict of timing/echo fields per
frame; ``EchoTime`` becomes the list of echo times for echoes).

Writing (:func:`write_dicom_series`)
------------------------------------
One file per slice (or one NM multi-frame file), geometry from the Volume's
affine for any orthogonal orientation, int16/uint16 pixels with per-slice or
global rescale, proper UIDs, SOP classes and file meta, into a temporary
folder renamed into place at the end.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from napari_immunotrack.volume import Volume
>>> affine = np.array([[0, 0, 0.5, -10], [0, 0.5, 0, -20], [2, 0, 0, -30], [0, 0, 0, 1.0]])  # axes S, A, R
>>> vol = Volume(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), affine,
...              modality="PT", unit="Bq/mL")
>>> folder = write_dicom_series(vol, os.path.join(tempfile.mkdtemp(), "pet"))
>>> back = read_dicom(folder)[0]
>>> back.spatial_shape, back.unit, bool(np.allclose(back.affine, vol.affine, atol=1e-6))
((4, 8, 8), 'Bq/mL', True)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError, OutputExistsError
from ..volume import Volume

#: Plain header fields copied into ``Volume.metadata`` (first sorted slice unless noted).
PLAIN_KEYS = (
    "SeriesDescription", "SeriesNumber", "StudyDescription", "StudyInstanceUID", "FrameOfReferenceUID",
    "Manufacturer", "ManufacturerModelName", "Units", "SUVType", "DecayCorrection", "CorrectedImage",
    "SeriesType", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "PatientID", "PatientName",
    "PatientWeight", "PatientSize", "PatientSex", "PatientAge", "PatientBirthDate", "EchoTime",
    "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength", "ImagingFrequency",
    "DecayFactor", "FrameReferenceTime", "ActualFrameDuration", "SliceThickness", "SpacingBetweenSlices",
    "ImageType", "BodyPartExamined",
)
#: Fields of ``RadiopharmaceuticalInformationSequence[0]`` copied into metadata.
RADIOPHARM_KEYS = ("Radiopharmaceutical", "RadionuclideTotalDose", "RadionuclideHalfLife",
                   "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime",
                   "RadionuclidePositronFraction", "RadiopharmaceuticalVolume")
#: Keys of each ``metadata["slice_headers"]`` entry. The list runs frame-major:
#: entry ``i`` belongs to ``frame = i // n_slices`` and ``slice = i % n_slices``
#: (both also stored in the entry; ``frame`` is 0 for 3D volumes).
SLICE_HEADER_KEYS = ("frame", "slice", "AcquisitionDate", "AcquisitionTime", "FrameReferenceTime",
                     "ActualFrameDuration", "DecayFactor", "RescaleSlope", "RescaleIntercept",
                     "InstanceNumber", "ImagePositionPatient", "EchoTime", "SOPInstanceUID", "file")

# SOP classes of images we read (used to tell a truncated image header from a non-image object).
_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.",)
_NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
}
_SOP_CLASS = {
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # PET Image Storage
    "NM": "1.2.840.10008.5.1.4.1.1.20",   # Nuclear Medicine Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",    # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",    # CT Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",    # Secondary Capture Image Storage
}
_PET_UNITS = {"BQML": "Bq/mL", "CNTS": "counts", "PROPCNTS": "counts", "CM2ML": "SUVbsa", "GML": "SUVbw",
              "%ID/G": "%ID/g", "NONE": "a.u."}
_SUV_TYPES = {"BW": "SUVbw", "BSA": "SUVbsa", "LBM": "SUVlbm", "IBW": "SUVibw"}
_UNIT_TO_DICOM = {"Bq/mL": "BQML", "counts": "CNTS", "SUVbw": "GML", "SUVbsa": "CM2ML", "SUVlbm": "GML",
                  "SUVibw": "GML", "%ID/g": "%ID/G"}

_DEFER_BYTES = 16384   # values larger than this are read from the file only when used
_DUP_TOL_MM = 0.01      # positions closer than this along the normal are "the same position"
_ORIENT_TOL = 1e-4      # direction cosines must agree to this
_SPACING_ABS_TOL = 0.01  # mm; and 1 % of the step, whichever is larger


# ======================================================================= reading
@dataclass
class _Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    header: Any                       # pydicom Dataset without pixel data (shared by frames of one file)
    frame: Optional[int]              # index in a multi-frame file, None for a single-frame file
    group: tuple                      # what makes a volume: (SeriesInstanceUID, file for multi-frame)
    position: Optional[np.ndarray]    # ImagePositionPatient, LPS mm
    orientation: Optional[np.ndarray]  # the 6 direction cosines
    spacing: Optional[np.ndarray]     # PixelSpacing (row spacing, column spacing) mm
    rows: int
    cols: int
    slope: float = 1.0
    intercept: float = 0.0
    info: dict = field(default_factory=dict)  # per-slice timing etc. (plain values)


def _plain(value):
    """A pydicom value as a JSON-friendly str/int/float/list (None for sequences and bytes)."""
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence
    from pydicom.valuerep import DSdecimal, DSfloat, IS, PersonName

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


def _get(ds, keyword, default=None):
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


def _floats(ds, keyword, n):
    """A numeric multi-value (n numbers) as an array, None when absent or malformed."""
    value = _get(ds, keyword)
    if value is None:
        return None
    if not isinstance(value, list):
        value = [value]
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _item(ds, sequence_keyword):
    """The first item of a sequence, or None."""
    seq = ds.get(sequence_keyword) if sequence_keyword in ds else None
    return seq[0] if seq else None


def dicom_seconds(date: Optional[str], time: Optional[str]) -> Optional[float]:
    """Seconds since 0001-01-01 of a DICOM DA + TM pair (TM alone counts from day 0); None if unreadable.

    >>> dicom_seconds("20240101", "120000.5") - dicom_seconds("20240101", "000000")
    43200.5
    """
    if not time:
        return None
    t = str(time).strip().replace(":", "")
    try:
        hh = int(t[0:2])
        mm = int(t[2:4]) if len(t) >= 4 else 0
        ss = float(t[4:]) if len(t) > 4 else 0.0
    except ValueError:
        return None
    days = 0
    if date:
        d = str(date).strip().replace(".", "").replace("-", "")
        try:
            days = _dt.date(int(d[0:4]), int(d[4:6]), int(d[6:8])).toordinal()
        except (ValueError, IndexError):
            return None
    return days * 86400.0 + hh * 3600.0 + mm * 60.0 + ss


def _read_header(path: Path, explicit: bool, suspects: Optional[list] = None):
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
            raw = _raw_dataset(path)
            if raw is not None and ("Rows" not in raw or "Columns" not in raw):
                raise InputError(f"{path} holds no image: it is a DICOM object of class {_object_name(raw)}, stored "
                                 "without the DICOM file header; give a DICOM image file or the folder of a "
                                 "series.") from None
            if raw is not None:
                raise InputError(f"{path} is a DICOM image of class {_object_name(raw)}, stored without the "
                                 "128-byte preamble and 'DICM' file header; convert it to a standard DICOM file "
                                 "first (e.g. dcmconv +F in.dcm out.dcm).") from None
            raise InputError(f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
                             "give a DICOM file or the folder of a DICOM series (a raw dataset without the "
                             "preamble must be converted first, e.g. dcmconv +F).") from None
        if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
            warnings.warn(f"{path} has a DICOM extension but is not a DICOM file; skipped.", ImmunotrackWarning)
        return None
    except Exception as exc:  # pydicom raises many types on a corrupt header: all mean "bad file"
        raise InputError(f"{path}: the DICOM header cannot be read ({' '.join(str(exc).split())[:100]}); "
                         "the file is probably truncated or corrupt: copy it again or remove it.") from None
    sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", "") or "")
    if "Rows" not in ds or "Columns" not in ds:
        looks_like_image = (sop_class.startswith(_IMAGE_SOP_PREFIXES) and sop_class not in _NON_IMAGE_SOP
                            and not _is_known_non_image(sop_class))
        if looks_like_image and explicit:
            # an image object whose header stops early: the file was cut short
            raise InputError(f"{path}: the DICOM image header is incomplete (no Rows/Columns); the file is "
                             "probably truncated: copy it again.")
        if looks_like_image and suspects is not None:
            suspects.append(path)
            return None
        if explicit:
            if sop_class == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
                raise InputError(f"{path} is a DICOMDIR (the index of a DICOM disc or export), not an image; "
                                 "give the folder that holds it (every series below it is read) or one series' "
                                 "folder.")
            if "PixelData" in ds and not sop_class and "Modality" not in ds:
                raise InputError(f"{path}: the DICOM header is damaged (pixel data but no Rows/Columns, Modality "
                                 "or SOP class); the file is probably corrupt: copy or export it again.")
            what = (f"Modality {ds.Modality}" if ds.get("Modality") else
                    f"a DICOM object of class {_object_name(ds)}" if sop_class else
                    "its header has no Modality, SOP class or pixel data")
            raise InputError(f"{path} holds no image ({what}); give a DICOM image file or the folder of a series.")
        return None
    return ds


def _raw_dataset(path: Path):
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

    sop = str(ds.get("SOPClassUID", "") or "") or \
        str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    name = UID(sop).name if sop else ""
    name = name or "unknown"  # pydicom names an unlisted UID by its digits
    modality = str(ds.get("Modality", "") or "")
    return f"{name} (Modality {modality})" if modality else name


def _is_known_non_image(sop_class: str) -> bool:
    """SOP classes under 1.2.840.10008.5.1.4.1.1 that are not images (SR, RT plans/structures, PR, KO...)."""
    from pydicom.uid import UID

    name = UID(sop_class).name.lower() if sop_class else ""
    return any(word in name for word in ("report", " sr ", "structure", "plan", "presentation state",
                                         "key object", "waveform", "encapsulated", "registration",
                                         "raw data", "spectroscopy", "treatment record"))


def _list_files(root: Path) -> List[Path]:
    """Every regular file under ``root`` (recursive), hidden files excluded, in a stable order."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


def _frames_of(ds, path: Path) -> List[_Frame]:
    """The 2D images of one file, with their geometry (None where the header lacks it)."""
    uid = str(ds.get("SeriesInstanceUID", "") or "") or f"(no SeriesInstanceUID: {path.parent})"
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        raise InputError(f"{path} is a Siemens mosaic (the slices of a volume tiled in one image), which is not "
                         "read; convert the series to NIfTI first (e.g. with dcm2niix).")
    if samples != 1:
        raise InputError(f"{path} is a colour image ({samples} samples per pixel); only greyscale volumes "
                         "(MR, PET, SPECT, CT) can be read.")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames <= 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        # NM files written one slice per file may keep the geometry in the detector item only
        det = _item(ds, "DetectorInformationSequence") if "ImagePositionPatient" not in ds else None
        src = det if det is not None else ds
        src_orient = src if "ImageOrientationPatient" in src else ds
        return [_Frame(path=path, header=ds, frame=None, group=(uid, ""),
                       position=_floats(src, "ImagePositionPatient", 3),
                       orientation=_floats(src_orient, "ImageOrientationPatient", 6),
                       spacing=_floats(ds, "PixelSpacing", 2), rows=rows, cols=cols,
                       slope=float(_get(ds, "RescaleSlope", 1.0)),
                       intercept=float(_get(ds, "RescaleIntercept", 0.0)),
                       info=_slice_info(ds))]
    group = (uid, str(path))  # a multi-frame file is one volume by itself
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, path, group, rows, cols)
    if str(ds.get("Modality", "")) == "NM":
        return _nm_frames(ds, path, group, rows, cols, n_frames)
    if "GridFrameOffsetVector" in ds:
        return _grid_offset_frames(ds, path, group, rows, cols, n_frames)
    raise InputError(f"{path} is a multi-frame {ds.get('Modality', '')} file with no per-frame positions "
                     "(no functional groups, NM slice vector or grid offsets), so its frames cannot be placed "
                     "in space; export it as one file per slice.")


def _slice_info(ds) -> dict:
    """Per-slice fields kept in ``slice_headers`` and used to order frames."""
    info = {k: _get(ds, k) for k in ("AcquisitionDate", "AcquisitionTime", "FrameReferenceTime",
                                     "ActualFrameDuration", "DecayFactor", "InstanceNumber", "EchoTime",
                                     "EchoNumbers", "TemporalPositionIdentifier", "TriggerTime",
                                     "SOPInstanceUID", "ContentDate", "ContentTime")}
    if info["EchoNumbers"] is not None and isinstance(info["EchoNumbers"], list):
        info["EchoNumbers"] = info["EchoNumbers"][0] if info["EchoNumbers"] else None
    return info


def _fg(ds, i, sequence, keyword):
    """A value from per-frame functional group ``i``, else from the shared group (enhanced multi-frame)."""
    for groups, index in ((ds.get("PerFrameFunctionalGroupsSequence"), i),
                          (ds.get("SharedFunctionalGroupsSequence"), 0)):
        if groups and index < len(groups):
            item = _item(groups[index], sequence)
            if item is not None and keyword in item:
                return item
    return None


def _enhanced_frames(ds, path, group, rows, cols) -> List[_Frame]:
    frames = []
    n = len(ds.PerFrameFunctionalGroupsSequence)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    if n != n_frames:
        raise InputError(f"{path}: the per-frame functional groups describe {n} frames but the file holds "
                         f"{n_frames} (NumberOfFrames); the file is inconsistent: export it again.")
    if n == 1:
        group = (group[0], "")  # one slice per enhanced file: slices of a series join by SeriesInstanceUID
    for i in range(n):
        pos_item = _fg(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        ori_item = _fg(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
        pix_item = _fg(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        rescale = _fg(ds, i, "PixelValueTransformationSequence", "RescaleSlope")
        echo = _fg(ds, i, "MREchoSequence", "EffectiveEchoTime")
        content = _item(ds.PerFrameFunctionalGroupsSequence[i], "FrameContentSequence")  # always per frame
        info = _slice_info(ds)
        info["InstanceNumber"] = i + 1
        if echo is not None:
            info["EchoTime"] = _get(echo, "EffectiveEchoTime")
        if content is not None:
            when = _get(content, "FrameAcquisitionDateTime") or _get(content, "FrameReferenceDateTime")
            if when:
                info["AcquisitionDate"], info["AcquisitionTime"] = when[:8], when[8:].split("+")[0].split("-")[0]
            info["TemporalPositionIdentifier"] = _get(content, "TemporalPositionIndex")
        frames.append(_Frame(
            path=path, header=ds, frame=i, group=group,
            position=_floats(pos_item, "ImagePositionPatient", 3) if pos_item is not None else None,
            orientation=_floats(ori_item, "ImageOrientationPatient", 6) if ori_item is not None else None,
            spacing=_floats(pix_item, "PixelSpacing", 2) if pix_item is not None else None,
            rows=rows, cols=cols,
            slope=float(_get(rescale if rescale is not None else ds, "RescaleSlope", 1.0)),
            intercept=float(_get(rescale if rescale is not None else ds, "RescaleIntercept", 0.0)),
            info=info))
    return frames


def _nm_frames(ds, path, group, rows, cols, n_frames) -> List[_Frame]:
    """NM multi-frame: a reconstructed SPECT volume (RECON TOMO) as one file."""
    image_type = _get(ds, "ImageType") or []
    image_type = [str(t).upper() for t in (image_type if isinstance(image_type, list) else [image_type])]
    if "SliceVector" not in ds and not any("RECON" in t for t in image_type):
        kinds = ("STATIC", "DYNAMIC", "GATED", "WHOLE BODY", "TOMO", "GATED TOMO")
        kind = next((t for t in image_type if t in kinds), "planar")
        raise InputError(f"{path} is an NM {kind} acquisition (planar images or projections), not a reconstructed "
                         "SPECT volume; give the reconstructed (RECON TOMO) series.")
    det = _item(ds, "DetectorInformationSequence")
    src = det if det is not None and "ImagePositionPatient" in det else ds
    position = _floats(src, "ImagePositionPatient", 3)
    src = det if det is not None and "ImageOrientationPatient" in det else ds
    orientation = _floats(src, "ImageOrientationPatient", 6)
    step = _get(ds, "SpacingBetweenSlices")
    if step is None and _get(ds, "SliceThickness") is not None:
        step = _get(ds, "SliceThickness")
        warnings.warn(f"{path}: no SpacingBetweenSlices; the SPECT slice spacing is taken from SliceThickness "
                      f"({step} mm), as NM cameras intend.", ImmunotrackWarning)
    if step is None:
        raise InputError(f"{path}: the NM volume has neither SpacingBetweenSlices nor SliceThickness, so the "
                         "distance between its slices is unknown; re-export it with the slice spacing.")
    for vec in ("EnergyWindowVector", "DetectorVector", "PhaseVector", "RotationVector", "RRIntervalVector"):
        values = _get(ds, vec)
        if isinstance(values, list) and len(set(values)) > 1:
            raise InputError(f"{path}: the NM file mixes several {vec[:-6].lower()}s ({sorted(set(values))}); "
                             "export one reconstructed volume per file.")
    slices = _get(ds, "SliceVector")
    slices = slices if isinstance(slices, list) and len(slices) == n_frames else list(range(1, n_frames + 1))
    slots = _get(ds, "TimeSlotVector")
    slots = slots if isinstance(slots, list) and len(slots) == n_frames else None
    frames = []
    if position is not None and orientation is not None:
        normal = np.cross(orientation[:3], orientation[3:])
    for i in range(n_frames):
        info = _slice_info(ds)
        info["InstanceNumber"] = i + 1
        if slots is not None:
            info["TemporalPositionIdentifier"] = slots[i]
        pos = None
        if position is not None and orientation is not None:
            # DICOM PS3.3 C.8.4.8: slices run along the normal from the detector's ImagePositionPatient
            pos = position + (int(slices[i]) - 1) * float(step) * normal
        frames.append(_Frame(path=path, header=ds, frame=i, group=group, position=pos, orientation=orientation,
                             spacing=_floats(ds, "PixelSpacing", 2), rows=rows, cols=cols,
                             slope=float(_get(ds, "RescaleSlope", 1.0)),
                             intercept=float(_get(ds, "RescaleIntercept", 0.0)), info=info))
    return frames


def _grid_offset_frames(ds, path, group, rows, cols, n_frames) -> List[_Frame]:
    """RT dose (and similar) multi-frame grids: frame k at ImagePositionPatient + offset_k along the normal."""
    position = _floats(ds, "ImagePositionPatient", 3)
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    offsets = _floats(ds, "GridFrameOffsetVector", n_frames)
    if offsets is None:
        raise InputError(f"{path}: GridFrameOffsetVector does not give one offset per frame ({n_frames}); "
                         "the file's frames cannot be placed.")
    scale = float(_get(ds, "DoseGridScaling", 1.0))
    frames = []
    for i in range(n_frames):
        pos = None
        if position is not None and orientation is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            # the first frame is at ImagePositionPatient in both offset conventions (relative or absolute)
            pos = position + (offsets[i] - offsets[0]) * normal
        info = _slice_info(ds)
        info["InstanceNumber"] = i + 1
        frames.append(_Frame(path=path, header=ds, frame=i, group=group, position=pos, orientation=orientation,
                             spacing=_floats(ds, "PixelSpacing", 2), rows=rows, cols=cols,
                             slope=scale * float(_get(ds, "RescaleSlope", 1.0)),
                             intercept=float(_get(ds, "RescaleIntercept", 0.0)), info=info))
    return frames


def read_dicom(path, progress=None) -> List[Volume]:
    """Read every 3D (or 4D) image series in a DICOM file or folder.

    Parameters
    ----------
    path : str or Path
        A DICOM file (a multi-frame volume) or a folder searched recursively.
    progress : callable, optional
        ``progress(fraction, message)`` (see :mod:`napari_immunotrack.progress`).

    Returns
    -------
    list of Volume
        One per series, sorted by SeriesNumber. In a folder holding several
        series, those that cannot form a volume (localizers, single slices)
        are skipped with an :class:`~napari_immunotrack.errors.ImmunotrackWarning`;
        when none can, the InputError says why for each.

    Examples
    --------
    >>> import os
    >>> from pydicom.data import get_testdata_file
    >>> folder = os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm")), "dicomdirtests", "98892001")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:   # the 2-view scout is skipped, with a warning
    ...     volumes = read_dicom(folder)
    >>> [v.spatial_shape for v in volumes], "Scout" in str(caught[-1].message)
    ([(5, 16, 16)], True)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    explicit = path.is_file()
    files = [path] if explicit else _list_files(path)
    frames: List[_Frame] = []
    suspects: List[Path] = []
    _progress.report(progress, 0.0, "reading DICOM headers")
    for i, f in enumerate(files):
        with _header_values(f):
            ds = _read_header(f, explicit, suspects)
            if ds is not None:
                frames.extend(_frames_of(ds, f))
        if i % 20 == 0:
            _progress.report(progress, 0.3 * (i + 1) / len(files), "reading DICOM headers")
    if suspects:
        warnings.warn(f"{len(suspects)} file(s) in {path} are DICOM image objects without Rows/Columns (truncated "
                      f"headers?), skipped: {', '.join(str(p.relative_to(path)) for p in suspects[:3])}"
                      f"{', ...' if len(suspects) > 3 else ''}.", ImmunotrackWarning)
    if not frames:
        # a folder of raw datasets (no preamble/'DICM'): say so rather than "no DICOM image"; a few files suffice
        raw = next((f for f in files[:20] if (ds := _raw_dataset(f)) is not None and "Rows" in ds), None)
        if raw is not None:
            raise InputError(f"{path} holds DICOM images stored without the 128-byte preamble and 'DICM' file "
                             f"header (e.g. {raw.name}); convert them to standard DICOM files first "
                             "(e.g. dcmconv +F in.dcm out.dcm).")
        raise InputError(f"{path} holds no DICOM image ({len(files)} file(s) looked at); give the folder of a "
                         "DICOM series (files with or without .dcm extension).")
    if explicit and len(frames) == 1:
        raise InputError(f"{path} holds one 2D slice; a 3D volume is needed: give the series folder "
                         "(all the slices' files) instead of one file.")
    groups: Dict[tuple, List[_Frame]] = {}
    for fr in frames:
        groups.setdefault(fr.group, []).append(fr)
    volumes, failures = [], []
    ordered = sorted(groups.items(), key=lambda kv: (_series_number(kv[1][0].header), kv[0]))
    for n, (key, members) in enumerate(ordered):
        sub = _progress.scaled(progress, 0.3 + 0.7 * n / len(ordered), 0.3 + 0.7 * (n + 1) / len(ordered))
        try:
            with _header_values(members[0].path):
                volumes.append(_build_volume(members, path, sub))
        except InputError as exc:
            if len(ordered) == 1:
                raise
            # the reason without the series label and folder the message starts with
            label = _series_label(members[0].header)
            reason = str(exc)
            full = " ".join(_volume_label(members[0].header, path).split())  # InputError collapses spaces
            for prefix in (f"{full}: ", f"{full} "):
                reason = reason.replace(prefix, "")
            failures.append((label, reason))
    if not volumes:
        reasons = "; ".join(f"series {label}: {msg.rstrip('.')}" for label, msg in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise InputError(f"{path} holds {len(ordered)} DICOM series but none forms a 3D volume ({reasons}{more}).")
    if failures:
        listed = "; ".join(f"series {label}: {msg.rstrip('.')}" for label, msg in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        warnings.warn(f"{path}: {len(failures)} DICOM series skipped, as they form no 3D volume ({listed}{more}).",
                      ImmunotrackWarning)
    # distinct names, so napari layers and table columns do not collide
    seen: Dict[str, int] = {}
    for v in volumes:
        seen[v.name] = seen.get(v.name, 0) + 1
    for v in volumes:
        if seen[v.name] > 1:
            v.name = f"{v.name} (series {v.metadata.get('SeriesNumber', '?')})"
    _progress.report(progress, 1.0, "DICOM read")
    return volumes


@contextlib.contextmanager
def _header_values(path: Path):
    """Turn what a corrupt or hand-edited header value makes numpy/pydicom raise (``int('abc')``,
    a missing attribute, an impossible shape) into the InputError of a bad file."""
    try:
        yield
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
            NotImplementedError) as exc:  # pydicom: NotImplementedError for an unknown VR (a damaged byte)
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: a DICOM header value cannot be used ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:100]}); the file is corrupt or was edited by hand: "
                         "fix it or remove it from the folder.") from None


def _series_number(ds) -> float:
    n = _get(ds, "SeriesNumber")
    try:
        return float(n)
    except (TypeError, ValueError):
        return float("inf")


def _series_label(ds) -> str:
    desc = _get(ds, "SeriesDescription") or ""
    return f"{_get(ds, 'SeriesNumber', '?')} ({_get(ds, 'Modality', '?')}{', ' + desc if desc else ''})"


def _volume_label(ds, source: Path) -> str:
    return f"DICOM series {_series_label(ds)} in {source}"


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.atleast_1d(values)) + "]"


def _check_common_geometry(members: List[_Frame], label: str):
    """Every slice has position, orientation, spacing; all share orientation, size and spacing."""
    first = members[0]
    for keyword, attr in (("ImageOrientationPatient", "orientation"), ("ImagePositionPatient", "position"),
                          ("PixelSpacing", "spacing")):
        missing = [m for m in members if getattr(m, attr) is None]
        if missing:
            where = missing[0].path.name + ("" if missing[0].frame is None else f" frame {missing[0].frame + 1}")
            raise InputError(f"{label}: {where} has no valid {keyword} ({len(missing)} of {len(members)} slices), "
                             "so where its voxels are in the scanner is unknown; re-export the series from the "
                             "scanner or PACS with full geometry (this reader does not guess it).")
    if np.any(first.spacing <= 0):
        raise InputError(f"{label}: PixelSpacing {_fmt(first.spacing)} is not positive; fix the header.")
    for m in members[1:]:
        if np.max(np.abs(m.orientation - first.orientation)) > _ORIENT_TOL:
            n_orient = len({tuple(np.round(x.orientation, 3)) for x in members})
            raise InputError(f"{label}: the slices have {n_orient} different orientations (e.g. {first.path.name} "
                             f"{_fmt(first.orientation)} vs {m.path.name} {_fmt(m.orientation)}); this is a localizer "
                             "or a mixed series, not one volume: give a series acquired in one orientation.")
        if (m.rows, m.cols) != (first.rows, first.cols):
            raise InputError(f"{label}: slices have different sizes ({first.rows}x{first.cols} in {first.path.name}, "
                             f"{m.rows}x{m.cols} in {m.path.name}); give a series with one matrix size.")
        if np.max(np.abs(m.spacing - first.spacing)) > 1e-4 * max(1.0, float(first.spacing.max())):
            raise InputError(f"{label}: slices have different PixelSpacing ({_fmt(first.spacing)} in "
                             f"{first.path.name}, {_fmt(m.spacing)} in {m.path.name}); give a consistent series.")
    r, c = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(np.dot(r, c)) > 1e-3:
        raise InputError(f"{label}: ImageOrientationPatient {_fmt(first.orientation)} is not two orthogonal unit "
                         "vectors; the header is broken: export the series again.")


def _frame_key(fr: _Frame, axis: str) -> tuple:
    """Sort key of the slices sharing a position: echo or time order (never file name / InstanceNumber)."""
    info = fr.info

    def k(v):
        return (0, 0.0) if v is None else (1, float(v))
    if axis == "echo":
        return (k(info.get("EchoTime")), k(info.get("EchoNumbers")))
    return (k(info.get("TemporalPositionIdentifier")), k(info.get("FrameReferenceTime")),
            k(dicom_seconds(info.get("AcquisitionDate"), info.get("AcquisitionTime"))), k(info.get("TriggerTime")))


def _arrange(members: List[_Frame], label: str):
    """Sort slices along the normal and split duplicates into frames: (frames[f][s], leading_axis, normal)."""
    first = members[0]
    r, c = first.orientation[:3], first.orientation[3:]
    normal = np.cross(r, c)
    normal /= np.linalg.norm(normal)
    dist = np.array([float(np.dot(m.position, normal)) for m in members])
    order = np.argsort(dist, kind="stable")
    members = [members[i] for i in order]
    dist = dist[order]
    # clusters of (nearly) equal positions along the normal
    breaks = np.flatnonzero(np.diff(dist) > _DUP_TOL_MM) + 1
    clusters = np.split(np.arange(len(members)), breaks)
    counts = [len(cl) for cl in clusters]
    if len(clusters) < 2:
        raise InputError(f"{label} has a single slice position ({len(members)} image(s) at "
                         f"{dist[0]:.2f} mm); a 3D volume is needed: give the whole series (all its slices).")
    axis = None
    n_frames = counts[0]
    if max(counts) > 1:
        if len(set(counts)) != 1:
            worst = int(np.argmin(counts))
            raise InputError(f"{label}: slice positions have unequal numbers of images ({min(counts)} to {max(counts)} "
                             f"per position, e.g. {counts[worst]} at {dist[clusters[worst][0]]:.2f} mm), so some time "
                             "frames or echoes are incomplete or two series share one UID; copy the complete series.")
        # echoes when echo time/number tells the images of every position apart, else time frames
        echoes = [{(members[i].info.get("EchoTime"), members[i].info.get("EchoNumbers")) for i in cl}
                  for cl in clusters]
        axis = "echo" if all(len(e) == n_frames for e in echoes) else "time"
    frames: List[List[_Frame]] = [[] for _ in range(n_frames)]
    for cl in clusters:
        group = [members[i] for i in cl]
        if axis is not None:
            group.sort(key=lambda m: _frame_key(m, axis))
            keys = [_frame_key(m, axis) for m in group]
            if len(set(keys)) != len(keys):
                raise InputError(f"{label}: {len(group)} images at position {dist[cl[0]]:.2f} mm along the slice "
                                 f"normal ({', '.join(m.path.name for m in group[:3])}) have the same time and echo, "
                                 "so they cannot be ordered; the folder probably holds two copies of a series: "
                                 "keep one.")
        for f, m in enumerate(group):
            frames[f].append(m)
    return frames, axis, normal


def _check_spacing(frame0: List[_Frame], normal: np.ndarray, label: str) -> np.ndarray:
    """Uniform steps along the normal and positions on one line; returns the step vector (LPS mm)."""
    pos = np.array([m.position for m in frame0])
    dist = pos @ normal
    steps = np.diff(dist)
    ref = float(np.median(steps))
    tol = max(_SPACING_ABS_TOL, 0.01 * ref)
    bad = np.flatnonzero(np.abs(steps - ref) > tol)
    if bad.size:
        multiples = steps[bad] / ref
        where = ", ".join(f"{dist[i]:.3f} to {dist[i + 1]:.3f} mm ({frame0[i].path.name}, {frame0[i + 1].path.name})"
                          for i in bad[:3])
        whole = np.round(multiples)
        if np.all(multiples > 1.5) and np.all(np.abs(multiples - whole) * ref <= tol * whole):  # whole slices missing
            missing = int(np.sum(whole - 1))
            raise InputError(f"{label}: {missing} slice(s) missing: the step between positions {where} along the "
                             f"slice normal is {_fmt(steps[bad])} mm where the other slices are {ref:.4g} mm apart; "
                             "the series is incomplete: copy all of its files and try again.")
        raise InputError(f"{label}: inconsistent slice spacing: steps of {_fmt(steps[bad])} mm between positions "
                         f"{where} where the usual step is {ref:.4g} mm; this is not a regular 3D grid: give a "
                         "series with uniform spacing or resample it with a DICOM converter first.")
    n = len(frame0)
    step = (pos[-1] - pos[0]) / (n - 1)
    expected = pos[0] + np.outer(np.arange(n), step)
    off = np.linalg.norm(pos - expected, axis=1)
    if off.max() > tol:
        i = int(np.argmax(off))
        raise InputError(f"{label}: slice {frame0[i].path.name} is {off[i]:.3f} mm off the line through the first and "
                         "last slice positions; the series is not a regular 3D grid: give a consistent series.")
    return step


def _decoder_hint(ds) -> str:
    """What to install to decode a compressed transfer syntax (one phrase)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(ts, "name", str(ts))
    hint = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
    try:
        from pydicom.pixels import get_decoder

        missing = get_decoder(ts).missing_dependencies
        if missing:
            hint = "install a decoder: " + ", or ".join(_pip_command(m) for m in missing)
    except Exception:
        pass
    return f"its pixel data are compressed as {name} ({ts}) and no installed decoder can read them; {hint}"


def _pip_command(requirement: str) -> str:
    """pydicom's "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1" as the command a user
    types: "pip install pylibjpeg pylibjpeg-libjpeg" (gdcm's package on PyPI is python-gdcm)."""
    import re

    if "requires" not in requirement:
        return " ".join(requirement.split())
    needs = requirement.split("requires", 1)[-1]
    names = [n for n in re.findall(r"([A-Za-z][\w.-]*)\s*(?:[<>=!~]=?\s*[\d.]+)?", needs)
             if n not in ("and", "numpy")]  # numpy is there already
    names = ["python-gdcm" if n == "gdcm" else n for n in names]
    return "pip install " + " ".join(dict.fromkeys(names)) if names else " ".join(requirement.split())


def _file_pixels(path: Path, ds) -> np.ndarray:
    """The stored (unscaled) pixel array of one file: (rows, cols) or (frames, rows, cols).

    ``ds`` is the file's dataset read with deferred pixel data; the pixel
    element is removed from it afterwards (it becomes ``dicom_header``).
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: no pixel data (the file is probably truncated); copy it again or remove it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode(path, ds)
    finally:
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]  # also drops pydicom's cached decoded array


def _decode(path: Path, ds) -> np.ndarray:
    try:
        ds.PixelData  # noqa: B018 - reads the deferred value now, so a vanished/truncated file fails here
    except Exception as exc:
        raise InputError(f"{path}: the pixel data cannot be read ({' '.join(str(exc).split())[:100]}); the file "
                         "is probably truncated or corrupt: copy it again.") from None
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        compressed = ts is not None and ts.is_compressed
        plain = ts is not None and not compressed and ts.is_little_endian
    except (AttributeError, ValueError, TypeError):  # a damaged UID (pydicom raises on unknown ones)
        raise InputError(f"{path}: the transfer syntax {' '.join(str(ts).split())[:70]!r} in the file meta is not "
                         "a DICOM transfer syntax; the file is corrupt: copy it again.") from None
    if plain and "PixelData" in ds:
        fast = _fast_pixels(ds)
        if fast is not None:
            return fast
    try:
        return ds.pixel_array
    except Exception as exc:
        if compressed:
            try:
                from pydicom.pixels import get_decoder

                available = get_decoder(ts).is_available
            except Exception:
                available = False
            if not available:
                raise InputError(f"{path}: {_decoder_hint(ds)}.") from None
            raise InputError(f"{path}: the compressed pixel data ({ts.name}) cannot be decoded "
                             f"({' '.join(str(exc).split())[:120]}); install pylibjpeg with its plugins or "
                             "python-gdcm, or decompress the series (e.g. gdcmconv --raw).") from None
        raise InputError(f"{path}: the pixel data cannot be read ({' '.join(str(exc).split())[:120]}); the file "
                         "is probably truncated or corrupt: copy it again.") from None


def _fast_pixels(ds) -> Optional[np.ndarray]:
    """Uncompressed little-endian pixels without pydicom's generic machinery (about 5x faster); None if unusual."""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", bits) or bits)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32) or stored != bits or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):  # as _frames_of: an unreadable NumberOfFrames is one frame
        n = 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    raw = ds.PixelData or b""  # an empty element reads as None
    need = rows * cols * n * dtype.itemsize
    if len(raw) < need:
        raise InputError(f"{ds.filename}: the pixel data are {len(raw)} bytes where {need} are expected; the file is "
                         "truncated or corrupt: copy it again.")
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * n)
    return arr.reshape((n, rows, cols) if n > 1 else (rows, cols))


def _unit(ds, modality: str) -> str:
    units = str(_get(ds, "Units", "") or "").upper()
    if modality in ("PT", "NM") and units:
        if units == "GML":
            suv_type = str(_get(ds, "SUVType", "") or "BW").upper()
            return _SUV_TYPES.get(suv_type, "SUVbw")
        return _PET_UNITS.get(units, units)
    if modality == "PT":
        return "a.u."
    if modality == "NM":
        return "counts"
    if modality == "CT":
        return "HU"
    if str(_get(ds, "Modality", "")) == "RTDOSE":
        return "Gy" if str(_get(ds, "DoseUnits", "")).upper() == "GY" else "relative dose"
    return "a.u."


def _build_volume(members: List[_Frame], source: Path, progress=None) -> Volume:
    """One series' images -> a Volume (checks, sorting, pixels, affine, metadata)."""
    header = members[0].header
    label = _volume_label(header, source)
    # the same image twice (a folder copied into itself): keep one, say so
    unique: Dict[tuple, _Frame] = {}
    for m in members:
        key = (m.info.get("SOPInstanceUID") or str(m.path), m.frame)
        unique.setdefault(key, m)
    if len(unique) < len(members):
        warnings.warn(f"{label}: {len(members) - len(unique)} duplicate file(s) (same SOPInstanceUID) ignored.",
                      ImmunotrackWarning)
        members = list(unique.values())
    if len(members) == 1:
        raise InputError(f"{label} holds one 2D slice ({members[0].path.name}); a 3D volume is needed: give the "
                         "series folder with all its slices.")
    _check_common_geometry(members, label)
    frames, axis, normal = _arrange(members, label)
    step = _check_spacing(frames[0], normal, label)
    for f in frames[1:]:
        off = np.abs(np.array([m.position for m in f]) - np.array([m.position for m in frames[0]])).max()
        if off > _SPACING_ABS_TOL:
            raise InputError(f"{label}: the {axis} frames are not at the same positions (up to {off:.3f} mm apart); "
                             "give a series whose frames share one grid.")
    first = frames[0][0]
    n_slices = len(frames[0])

    # ---- geometry: (slice, row, column) -> LPS -> RAS
    r, c = first.orientation[:3], first.orientation[3:]
    row_spacing, col_spacing = float(first.spacing[0]), float(first.spacing[1])
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = row_spacing * c   # increasing row index runs along the column cosine
    lps[:3, 2] = col_spacing * r   # increasing column index runs along the row cosine
    lps[:3, 3] = first.position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    tilt = float(np.degrees(np.arccos(np.clip(np.dot(step, normal) / np.linalg.norm(step), -1, 1))))
    meta: Dict[str, Any] = {}
    if tilt > 0.01:
        warnings.warn(f"{label}: the slices are sheared by {tilt:.2f} degrees (gantry tilt); the volume keeps the "
                      "exact sheared geometry.", ImmunotrackWarning)
        meta["gantry_tilt_deg"] = tilt

    # ---- pixels, one file read at a time, rescaled per slice
    flat = [m for f in frames for m in f]
    scaled = any(m.slope != 1.0 or m.intercept != 0.0 for m in flat)
    data = None
    cache_path, cache = None, None
    for i, m in enumerate(flat):
        if m.path != cache_path:
            cache_path, cache = m.path, _file_pixels(m.path, m.header)
        if m.frame is None or cache.ndim == 2:
            raw = cache
        elif m.frame < cache.shape[0]:
            raw = cache[m.frame]
        else:
            raise InputError(f"{m.path}: frame {m.frame + 1} is described in the header but the pixel data hold "
                             f"{cache.shape[0]} frames; the file is inconsistent or truncated.")
        if raw.shape != (m.rows, m.cols):
            raise InputError(f"{m.path}: pixel array shape {raw.shape} does not match Rows x Columns "
                             f"{m.rows}x{m.cols}; the file is corrupt.")
        if data is None:
            data = np.empty((len(flat), m.rows, m.cols), np.float32 if scaled else raw.dtype)
        if scaled:
            # float32 arithmetic: within 1 ulp of the float64 result, 3x faster
            np.multiply(raw, np.float32(m.slope), out=data[i], casting="unsafe")
            if m.intercept:
                data[i] += np.float32(m.intercept)
        else:
            if not np.can_cast(raw.dtype, data.dtype):
                data = data.astype(np.result_type(data.dtype, raw.dtype))
            data[i] = raw
        if i % 16 == 0:
            _progress.report(progress, (i + 1) / len(flat), "reading DICOM pixels")
    if axis is not None:
        data = data.reshape((len(frames), n_slices, first.rows, first.cols))
    else:
        data = data.reshape((n_slices, first.rows, first.cols))

    # ---- metadata
    dicom_modality = str(_get(header, "Modality", "OT") or "OT")
    modality = dicom_modality if dicom_modality in ("MR", "PT", "NM", "CT", "OT") else "OT"
    meta.update({"source_path": str(source), "format": "dicom", "Modality": dicom_modality,
                 "SeriesInstanceUID": str(_get(header, "SeriesInstanceUID", "") or "")})
    head = first.header
    for key in PLAIN_KEYS:
        value = _get(head, key)
        if value is not None:
            meta[key] = value
    if first.frame is not None:  # multi-frame: per-frame timing replaces file-level values
        for key in ("FrameReferenceTime", "ActualFrameDuration", "EchoTime"):
            if first.info.get(key) is not None:
                meta[key] = first.info[key]
    rp = _item(head, "RadiopharmaceuticalInformationSequence")
    if rp is not None:
        for key in RADIOPHARM_KEYS:
            value = _get(rp, key)
            if value is not None:
                meta[key] = value
        code = _item(rp, "RadionuclideCodeSequence")
        if code is not None and _get(code, "CodeMeaning"):
            meta["Radionuclide"] = _get(code, "CodeMeaning")
    if "Radionuclide" not in meta and str(_get(head, "Modality")) in ("PT", "NM"):
        # GE writes the nuclide name in a private tag (0011,100D) on NM
        try:
            value = head[0x0011, 0x100D].value if (0x0011, 0x100D) in head else None
        except Exception:  # an unreadable private element: ignore it
            value = None
        if isinstance(value, bytes):
            value = value.decode(errors="ignore")
        if isinstance(value, str) and value.strip():
            meta["Radionuclide"] = value.strip()
    # earliest acquisition date/time over all slices (the PET reference time may depend on it)
    times = []
    for m in flat:
        date = m.info.get("AcquisitionDate") or _get(m.header, "SeriesDate")
        when = dicom_seconds(date, m.info.get("AcquisitionTime"))
        if when is not None:
            times.append((when, m))
    if times:
        earliest = min(times, key=lambda t: t[0])[1]
        meta["AcquisitionDate"] = earliest.info.get("AcquisitionDate")
        meta["AcquisitionTime"] = earliest.info.get("AcquisitionTime")
    slice_headers = []
    for f, frame in enumerate(frames):
        for s, m in enumerate(frame):
            entry = {"frame": f, "slice": s}
            for key in ("AcquisitionDate", "AcquisitionTime", "FrameReferenceTime", "ActualFrameDuration",
                        "DecayFactor", "InstanceNumber", "EchoTime", "SOPInstanceUID"):
                entry[key] = m.info.get(key)
            entry.update(RescaleSlope=m.slope, RescaleIntercept=m.intercept,
                         ImagePositionPatient=[float(x) for x in m.position],
                         file=str(m.path) if m.frame is None else f"{m.path}#frame{m.frame + 1}")
            slice_headers.append(entry)
    meta["slice_headers"] = slice_headers
    meta["files"] = sorted({str(m.path) for m in flat})
    if axis is not None:
        meta["leading_axis"] = axis
        meta["frames"] = [{k: frame[0].info.get(k) for k in ("FrameReferenceTime", "ActualFrameDuration",
                                                                "AcquisitionDate", "AcquisitionTime", "EchoTime",
                                                                "EchoNumbers", "TemporalPositionIdentifier")}
                          for frame in frames]
        if axis == "echo":
            meta["EchoTime"] = [fr["EchoTime"] for fr in meta["frames"]]
    meta["slice_normal_lps"] = normal.tolist()
    try:  # read any deferred large element now, so the header outlives the files (e.g. a temporary folder)
        for _ in head:
            pass
    except Exception:  # a malformed element is left as it is; its neighbours are read
        pass
    meta["dicom_header"] = head  # pydicom Dataset without pixel data: private tags stay readable
    name = _get(head, "SeriesDescription") or f"{dicom_modality} {_get(head, 'SeriesNumber', '')}".strip()
    return Volume(data=data, affine=affine, modality=modality, unit=_unit(head, dicom_modality),
                  metadata=meta, name=str(name))


# ======================================================================= writing
def make_study(**fields) -> dict:
    """A study dict with fresh StudyInstanceUID and FrameOfReferenceUID, for several series of one study.

    Keyword arguments (StudyDate, StudyTime, StudyDescription, StudyID,
    AccessionNumber, ...) are added as given.

    >>> s = make_study(StudyDate="20240101")
    >>> sorted(s)
    ['FrameOfReferenceUID', 'StudyDate', 'StudyInstanceUID']
    """
    from pydicom.uid import generate_uid

    study = {"StudyInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid()}
    study.update(fields)
    return study


def _ds_value(value):
    """Python/numpy values to what pydicom accepts; floats for DS are formatted to 16 characters."""
    if isinstance(value, np.ndarray):
        return [_ds_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_ds_value(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _set(ds, keyword: str, value, what: str = "extra"):
    """Set ``keyword`` on ``ds`` (None deletes it); unknown keywords are an InputError."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.valuerep import format_number_as_ds

    if tag_for_keyword(keyword) is None:
        raise InputError(f"{what}: {keyword!r} is not a DICOM keyword; use pydicom keywords such as 'PatientWeight'.")
    if value is None:
        if keyword in ds:
            del ds[keyword]
        return
    value = _ds_value(value)
    if dictionary_VR(keyword) == "DS":
        if isinstance(value, list):
            value = [format_number_as_ds(float(v)) if isinstance(v, float) else v for v in value]
        elif isinstance(value, float):
            value = format_number_as_ds(value)
    if dictionary_VR(keyword) == "SQ":
        from pydicom.dataset import Dataset

        items = value if isinstance(value, list) else [value]
        seq = []
        for item in items:
            if isinstance(item, Dataset):
                seq.append(item)
            else:
                sub = Dataset()
                for k, v in dict(item).items():
                    _set(sub, k, v, what)
                seq.append(sub)
        value = seq
    setattr(ds, keyword, value)


def _ds_str(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _geometry_from_affine(affine: np.ndarray):
    """(step_lps, row_cosine, column_cosine, row_spacing, column_spacing, origin_lps) of a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    cols = lps[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    units = cols / lengths
    gram = units.T @ units
    off = np.abs(gram - np.eye(3)).max()
    if off > 1e-5:
        angle = float(np.degrees(np.arcsin(min(1.0, off))))
        raise InputError(f"the volume's axes are not orthogonal (sheared by about {angle:.3g} degrees); a DICOM "
                         "series needs orthogonal axes: resample the volume onto an orthogonal grid first.")
    step = cols[:, 0]
    column_cosine = units[:, 1]  # direction of increasing row index
    row_cosine = units[:, 2]     # direction of increasing column index
    return step, row_cosine, column_cosine, float(lengths[1]), float(lengths[2]), lps[:3, 3]


def _quantise(data: np.ndarray, rescale: str):
    """Integer pixels and per-slice (slope, intercept) for float or integer data.

    Returns (pixels (n, rows, cols) int16/uint16, slopes (n,), intercepts (n,)).
    The slope of each slice is its largest magnitude over the integer range,
    rounded to what a 16-character DS string holds (the value actually written),
    with intercept 0, so zero stays exactly zero and the error is at most
    slope/2 per voxel.
    """
    n = data.shape[0]
    if not np.all(np.isfinite(data)):
        raise InputError("the volume has NaN or infinite values, which DICOM integers cannot hold; replace them "
                         "(e.g. numpy.nan_to_num) first.")
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if rescale == "none":
        if not (np.issubdtype(data.dtype, np.integer) or np.all(np.mod(data, 1) == 0)):
            raise InputError("rescale='none' needs whole-number values; use rescale='per-slice' or 'global' for "
                             "real-valued data.")
        if lo >= 0 and hi <= 65535:
            dtype = np.uint16
        elif lo >= -32768 and hi <= 32767:
            dtype = np.int16
        else:
            raise InputError(f"values {lo:g} to {hi:g} do not fit 16-bit DICOM pixels; use rescale='per-slice' or "
                             "'global'.")
        return data.astype(dtype), np.ones(n), np.zeros(n)
    if rescale not in ("per-slice", "global"):
        raise InputError(f"rescale must be 'per-slice', 'global' or 'none', not {rescale!r}.")
    dtype, top = (np.uint16, 65535) if lo >= 0 else (np.int16, 32767)
    if rescale == "global":
        mags = np.full(n, max(abs(lo), abs(hi)))
    else:
        mags = np.abs(data.reshape(n, -1)).max(axis=1).astype(np.float64) if data.size else np.zeros(n)
    slopes = np.empty(n)
    pixels = np.empty(data.shape, dtype)
    for k in range(n):
        slope = float(_ds_str(mags[k] / top)) if mags[k] > 0 else 1.0
        slopes[k] = slope
        q = np.rint(data[k].astype(np.float64) / slope)
        np.clip(q, -32768 if dtype == np.int16 else 0, top, out=q)
        pixels[k] = q.astype(dtype)
    return pixels, slopes, np.zeros(n)


def write_dicom_series(volume: Volume, folder, *, series_description: str = "", modality: Optional[str] = None,
                       patient: Optional[dict] = None, study: Optional[dict] = None, pet: Optional[dict] = None,
                       rescale: str = "per-slice", shuffle_names=False, overwrite: bool = False,
                       series_number: int = 1, extra: Optional[dict] = None, multiframe: bool = False,
                       progress=None) -> Path:
    """Write a Volume as a DICOM series (one file per slice) that scanners' software and this reader accept.

    Parameters
    ----------
    volume : Volume
        3D, or 4D with ``metadata["leading_axis"]`` "time" (default) or
        "echo". Array axis 0 (after the frame axis) becomes the slices. Any
        orientation, oblique included, as long as the affine's axes are
        orthogonal (DICOM cannot store a shear); else InputError. Readers
        sort slices along ``row_cosine x column_cosine``: a volume whose slice
        axis runs the other way (a left-handed index frame, e.g. axes S, A, L)
        reads back with its slice axis reversed and the affine adjusted, i.e.
        the same voxels at the same world positions.
    folder : path
        The series folder to create. Written into a temporary sibling folder
        and renamed into place at the end; an existing ``folder`` raises
        :class:`~napari_immunotrack.errors.OutputExistsError` unless ``overwrite``.
    series_description : str
        SeriesDescription (default: the volume's name).
    modality : str, optional
        "PT", "NM", "MR", "CT" or "OT" (default: the volume's modality; any
        other, e.g. F19 or MPI, is written as "OT", secondary capture).
    patient : dict, optional
        PatientName, PatientID, PatientWeight (kg), PatientSize (m), PatientSex,
        PatientBirthDate, PatientAge, ... (any DICOM keyword).
    study : dict, optional
        StudyInstanceUID, FrameOfReferenceUID, StudyDate, StudyTime, StudyID,
        StudyDescription, AccessionNumber. Missing UIDs are generated AND
        stored back into the dict, so passing the same dict to several calls
        puts those series in one study and one frame of reference (see
        :func:`make_study`).
    pet : dict, optional
        PT/NM quantitative headers: Units (default from the volume's unit:
        Bq/mL -> BQML, SUVbw -> GML, counts -> CNTS; BQML for PT otherwise),
        DecayCorrection (START), CorrectedImage (e.g. ["ATTN", "DECY", "SCAT"]),
        SUVType, SeriesDate/SeriesTime, AcquisitionDate/AcquisitionTime,
        FrameReferenceTime (ms), ActualFrameDuration (ms), DecayFactor, and the
        RadiopharmaceuticalInformationSequence fields Radiopharmaceutical,
        RadionuclideTotalDose (Bq), RadionuclideHalfLife (s),
        RadiopharmaceuticalStartDateTime, RadiopharmaceuticalStartTime,
        RadionuclidePositronFraction, RadionuclideCodeSequence (a dict
        CodeValue/CodingSchemeDesignator/CodeMeaning). For a 4D "time" volume
        the timing fields (FrameReferenceTime, ActualFrameDuration,
        AcquisitionTime, AcquisitionDate, DecayFactor) may be lists with one
        value per frame.
    rescale : {"per-slice", "global", "none"}
        int16/uint16 pixels with a RescaleSlope per slice (as PET scanners
        write), one for the whole series, or the values as they are
        (whole numbers in 16-bit range). Intercept 0, so zero is exact and
        the error is at most half the slope.
    shuffle_names : bool or int
        Random file names and a random InstanceNumber order (True = seed 0,
        an int = that seed), so that sorting by either is wrong; for tests.
    overwrite : bool
        Replace an existing ``folder``.
    series_number : int
        SeriesNumber.
    extra : dict, optional
        More keywords set on every file (None deletes an element, e.g.
        ``{"PixelSpacing": None}``); a callable value is called as
        ``value(slice_index, frame_index)`` for each file (frame 0 for 3D).
        Applied last, so it can override anything (to build header variants);
        with ``multiframe`` a callable is called once as ``value(0, 0)``.
    multiframe : bool
        NM only: write one NM multi-frame file (RECON TOMO with
        DetectorInformationSequence, SliceVector and SpacingBetweenSlices),
        the form SPECT cameras export.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    Path of the folder.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from napari_immunotrack.volume import Volume
    >>> pet_vol = Volume(np.ones((3, 4, 4), np.float32) * 5000.0, np.eye(4), modality="PT", unit="Bq/mL")
    >>> out = write_dicom_series(pet_vol, os.path.join(tempfile.mkdtemp(), "pet"),
    ...                          patient={"PatientWeight": 0.025, "PatientID": "mouse1"},
    ...                          pet={"RadionuclideTotalDose": 5e6, "RadionuclideHalfLife": 6586.2,
    ...                               "RadiopharmaceuticalStartTime": "101500", "SeriesTime": "111500"})
    >>> len(os.listdir(out))
    3
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise OutputExistsError(f"{folder} already exists; choose another folder or pass overwrite=True "
                                "(--overwrite) to replace it.")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give a folder name for the DICOM series.")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another output path.")
    modality = (modality or volume.modality or "OT").upper()
    if modality not in _SOP_CLASS:
        modality = "OT"
    if multiframe and modality != "NM":
        raise InputError("multiframe=True writes an NM (SPECT) multi-frame file; give modality='NM' or "
                         "multiframe=False.")
    data = volume.numpy()
    if data.dtype == bool:
        data = data.astype(np.uint8)
    is_4d = data.ndim == 4
    frames_data = data if is_4d else data[None]
    n_frames, n_slices, rows, cols = frames_data.shape
    axis = str(volume.metadata.get("leading_axis", "time")) if is_4d else None
    if multiframe and is_4d:
        raise InputError("multiframe=True writes one 3D SPECT volume; write each frame as its own series.")
    step, row_cos, col_cos, row_sp, col_sp, origin = _geometry_from_affine(volume.affine)
    normal = np.cross(row_cos, col_cos)
    thickness = float(np.linalg.norm(step))
    # one quantisation over all frames, slice by slice (frame-major)
    pixels, slopes, intercepts = _quantise(frames_data.reshape((-1, rows, cols)), rescale)
    pixels = pixels.reshape(frames_data.shape)
    slopes, intercepts = slopes.reshape(n_frames, n_slices), intercepts.reshape(n_frames, n_slices)
    if multiframe and rescale == "per-slice" and np.unique(slopes).size > 1:
        # one NM file has one RescaleSlope: use the global one
        pixels, s, i = _quantise(frames_data.reshape((-1, rows, cols)), "global")
        pixels = pixels.reshape(frames_data.shape)
        slopes, intercepts = s.reshape(n_frames, n_slices), i.reshape(n_frames, n_slices)
    pet = dict(pet or {})
    patient = dict(patient or {})
    extra = dict(extra or {})
    if study is None:
        study = {}
    study.setdefault("StudyInstanceUID", generate_uid())
    study.setdefault("FrameOfReferenceUID", generate_uid())
    today = _dt.datetime.now()
    study.setdefault("StudyDate", today.strftime("%Y%m%d"))
    study.setdefault("StudyTime", today.strftime("%H%M%S"))
    series_uid = generate_uid()

    # ---- the attributes common to every file
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.Modality = modality
    ds.ImageType = ["DERIVED", "PRIMARY"] + (["RECON TOMO", "EMISSION"] if multiframe else [])
    ds.Manufacturer = "napari-immunotrack"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description or volume.name or ""
    ds.SeriesDate = str(pet.get("SeriesDate", study["StudyDate"]))
    ds.SeriesTime = str(pet.get("SeriesTime", study["StudyTime"]))
    ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.PatientName = "Anonymous"
    ds.PatientID = "immunotrack"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PositionReferenceIndicator = ""
    for key, value in study.items():
        _set(ds, key, value, "study")
    for key, value in patient.items():
        _set(ds, key, value, "patient")
    ds.ImageOrientationPatient = [_ds_str(v) for v in np.concatenate([row_cos, col_cos])]
    ds.PixelSpacing = [_ds_str(row_sp), _ds_str(col_sp)]
    ds.SliceThickness = _ds_str(thickness)
    ds.SpacingBetweenSlices = _ds_str(thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    lo, hi = float(frames_data.min()), float(frames_data.max())
    ds.WindowCenter = _ds_str((lo + hi) / 2)
    ds.WindowWidth = _ds_str(max(hi - lo, 1e-6))
    if modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType = "3D"
    per_frame_pet = {}
    if modality in ("PT", "NM"):
        rp_keys = set(RADIOPHARM_KEYS) | {"RadionuclideCodeSequence", "RadiopharmaceuticalCodeSequence",
                                          "RadiopharmaceuticalRoute"}
        units = pet.pop("Units", None) or _UNIT_TO_DICOM.get(volume.unit) or ("BQML" if modality == "PT" else None)
        if units:
            ds.Units = units
            if units == "GML":
                suv = {"SUVbw": "BW", "SUVlbm": "LBM", "SUVibw": "IBW"}.get(volume.unit, "BW")
                ds.SUVType = pet.pop("SUVType", suv)
        if modality == "PT":
            ds.DecayCorrection = pet.pop("DecayCorrection", "START")
            ds.CorrectedImage = pet.pop("CorrectedImage", ["ATTN", "DECY"])
            ds.SeriesType = ["DYNAMIC" if is_4d and axis == "time" else "STATIC", "IMAGE"]
            ds.CountsSource = "EMISSION"
            ds.NumberOfSlices = n_slices
            if is_4d:
                ds.NumberOfTimeSlices = n_frames
            ds.SliceSensitivityFactor = "1"
        rp_item = Dataset()
        for key in list(pet):
            if key in rp_keys:
                _set(rp_item, key, pet.pop(key), "pet")
        if len(rp_item):
            ds.RadiopharmaceuticalInformationSequence = [rp_item]
        for key in ("FrameReferenceTime", "ActualFrameDuration", "AcquisitionTime", "AcquisitionDate", "DecayFactor"):
            if is_4d and isinstance(pet.get(key), (list, tuple, np.ndarray)):
                values = list(pet.pop(key))
                if len(values) != n_frames:
                    raise InputError(f"pet[{key!r}] has {len(values)} values for {n_frames} frames.")
                per_frame_pet[key] = values
        ds.AcquisitionDate = str(pet.pop("AcquisitionDate", ds.SeriesDate))
        ds.AcquisitionTime = str(pet.pop("AcquisitionTime", ds.SeriesTime))
        for key, value in pet.items():
            _set(ds, key, value, "pet")
    elif pet:
        raise InputError(f"pet headers are for PT/NM series, not {modality}; drop the pet argument.")
    if is_4d and axis == "time":
        ds.NumberOfTemporalPositions = n_frames
    if is_4d and axis == "echo":
        echo_times = volume.metadata.get("EchoTime")
        if not (isinstance(echo_times, (list, tuple)) and len(echo_times) == n_frames):
            echo_times = None

    rng = np.random.default_rng(0 if shuffle_names is True else int(shuffle_names)) if shuffle_names else None
    n_files = 1 if multiframe else n_frames * n_slices
    instance_numbers = np.arange(1, n_files + 1)
    names = [f"IM{k:05d}.dcm" for k in instance_numbers]
    if rng is not None:
        instance_numbers = rng.permutation(instance_numbers)
        names = [f"{rng.integers(0, 2**48):012x}" + (".dcm" if rng.random() < 0.5 else "") for _ in range(n_files)]

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=parent))
    try:
        if multiframe:
            _write_nm_multiframe(ds, pixels[0], slopes[0, 0], origin, step, thickness, tmp / names[0], extra)
        else:
            k = 0
            for f in range(n_frames):
                for s in range(n_slices):
                    ds.SOPInstanceUID = generate_uid()
                    ds.InstanceNumber = int(instance_numbers[k])
                    pos = origin + s * step
                    ds.ImagePositionPatient = [_ds_str(v) for v in pos]
                    ds.SliceLocation = _ds_str(float(np.dot(pos, normal)))
                    ds.RescaleSlope = _ds_str(slopes[f, s])
                    ds.RescaleIntercept = _ds_str(intercepts[f, s])
                    if modality == "PT":
                        ds.ImageIndex = f * n_slices + s + 1
                    if is_4d and axis == "time":
                        ds.TemporalPositionIdentifier = f + 1  # orders the frames even without frame times
                    if is_4d and axis == "echo":
                        ds.EchoNumbers = f + 1
                        if echo_times is not None:
                            ds.EchoTime = _ds_str(echo_times[f])
                    for key, values in per_frame_pet.items():
                        _set(ds, key, values[f], "pet")
                    for key, value in extra.items():
                        _set(ds, key, value(s, f) if callable(value) else value, "extra")
                    ds.PixelData = np.ascontiguousarray(pixels[f, s]).tobytes()
                    ds["PixelData"].VR = "OW"
                    _save(ds, tmp / names[k])
                    k += 1
                    if k % 16 == 0:
                        _progress.report(progress, k / n_files, "writing DICOM")
        # rename into place: the old folder (if overwriting) is moved aside first, then removed
        backup = None
        if folder.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=parent))
            os.rmdir(backup)
            os.replace(folder, backup)
        os.replace(tmp, folder)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _progress.report(progress, 1.0, "DICOM written")
    return folder


def _save(ds, path: Path):
    """Write ``ds`` as a DICOM Part 10 file (preamble, DICM, file meta, explicit VR little endian)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "IMMUNOTRACK"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True, implicit_vr=False, little_endian=True)


def _write_nm_multiframe(ds, pixels, slope, origin, step, thickness, path: Path, extra: dict):
    """One NM RECON TOMO file: frames = slices along the normal from the detector's ImagePositionPatient."""
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag
    from pydicom.uid import generate_uid

    n = pixels.shape[0]
    r = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    c = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    if np.dot(np.cross(r, c), step) < 0:
        # NM frames run along +normal only: store the slices in reverse so that they do
        pixels = pixels[::-1]
        origin = origin + (n - 1) * step
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = [Tag("SliceVector")]
    ds.SliceVector = list(range(1, n + 1))
    ds.NumberOfSlices = n
    det = Dataset()
    det.ImagePositionPatient = [_ds_str(v) for v in origin]
    det.ImageOrientationPatient = list(ds.ImageOrientationPatient)
    ds.DetectorInformationSequence = [det]
    ds.NumberOfDetectors = 1
    del ds.ImageOrientationPatient  # NM keeps the geometry in the detector item
    ds.RescaleSlope = _ds_str(slope)
    ds.RescaleIntercept = "0"
    for key, value in extra.items():
        _set(ds, key, value(0, 0) if callable(value) else value, "extra")
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OW"
    _save(ds, path)


__all__ = ["read_dicom", "write_dicom_series", "make_study", "dicom_seconds", "PLAIN_KEYS", "SLICE_HEADER_KEYS"]
