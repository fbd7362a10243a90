"""Writing Volumes as DICOM series (the simulator's and the tests' writer), apart from the reader."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ... import progress as _progress
from ...errors import InputError, OutputExistsError
from ...volume import Volume
from .geometry import geometry_from_affine
from .headers import RADIOPHARM_KEYS, SOP_CLASS, UNIT_TO_DICOM


def make_study(**fields) -> dict:
    """A study dict with fresh StudyInstanceUID and FrameOfReferenceUID, for several series of one study.

    Parameters
    ----------
    **fields
        DICOM keywords and values of the study (StudyDate, StudyTime, StudyDescription, StudyID,
        AccessionNumber, ...), added as given.

    Returns
    -------
    dict
        ``StudyInstanceUID`` and ``FrameOfReferenceUID`` (new UIDs from pydicom) plus ``fields``:
        pass it to every :func:`write_dicom_series` call of the study so the series share a study
        and a patient frame of reference.

    Examples
    --------
    >>> s = make_study(StudyDate="20240101")
    >>> sorted(s)
    ['FrameOfReferenceUID', 'StudyDate', 'StudyInstanceUID']
    >>> make_study()["StudyInstanceUID"] != make_study()["StudyInstanceUID"]
    True
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
        raise InputError(
            "the volume has NaN or infinite values, which DICOM integers cannot hold; replace them "
            "(e.g. numpy.nan_to_num) first."
        )
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if rescale == "none":
        if not (np.issubdtype(data.dtype, np.integer) or np.all(np.mod(data, 1) == 0)):
            raise InputError(
                "rescale='none' needs whole-number values; use rescale='per-slice' or 'global' for real-valued data."
            )
        if lo >= 0 and hi <= 65535:
            dtype = np.uint16
        elif lo >= -32768 and hi <= 32767:
            dtype = np.int16
        else:
            raise InputError(
                f"values {lo:g} to {hi:g} do not fit 16-bit DICOM pixels; use rescale='per-slice' or 'global'."
            )
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


def write_dicom_series(
    volume: Volume,
    folder,
    *,
    series_description: str = "",
    modality: str | None = None,
    patient: dict | None = None,
    study: dict | None = None,
    pet: dict | None = None,
    rescale: str = "per-slice",
    shuffle_names=False,
    overwrite: bool = False,
    series_number: int = 1,
    extra: dict | None = None,
    multiframe: bool = False,
    progress=None,
) -> Path:
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
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = write_dicom_series(pet_vol, os.path.join(tmp.name, "pet"),
    ...                          patient={"PatientWeight": 0.025, "PatientID": "mouse1"},
    ...                          pet={"RadionuclideTotalDose": 5e6, "RadionuclideHalfLife": 6586.2,
    ...                               "RadiopharmaceuticalStartTime": "101500", "SeriesTime": "111500"})
    >>> len(os.listdir(out))
    3
    >>> tmp.cleanup()
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise OutputExistsError(
            f"{folder} already exists; choose another folder or pass overwrite=True (--overwrite) to replace it."
        )
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give a folder name for the DICOM series.")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another output path.")
    modality = (modality or volume.modality or "OT").upper()
    if modality not in SOP_CLASS:
        modality = "OT"
    if multiframe and modality != "NM":
        raise InputError(
            "multiframe=True writes an NM (SPECT) multi-frame file; give modality='NM' or multiframe=False."
        )
    data = volume.numpy()
    if data.dtype == bool:
        data = data.astype(np.uint8)
    is_4d = data.ndim == 4
    frames_data = data if is_4d else data[None]
    n_frames, n_slices, rows, cols = frames_data.shape
    axis = str(volume.metadata.get("leading_axis", "time")) if is_4d else None
    if multiframe and is_4d:
        raise InputError("multiframe=True writes one 3D SPECT volume; write each frame as its own series.")
    step, row_cos, col_cos, row_sp, col_sp, origin = geometry_from_affine(volume.affine)
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
    ds.SOPClassUID = SOP_CLASS[modality]
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
        rp_keys = set(RADIOPHARM_KEYS) | {
            "RadionuclideCodeSequence",
            "RadiopharmaceuticalCodeSequence",
            "RadiopharmaceuticalRoute",
        }
        units = pet.pop("Units", None) or UNIT_TO_DICOM.get(volume.unit) or ("BQML" if modality == "PT" else None)
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
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

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
