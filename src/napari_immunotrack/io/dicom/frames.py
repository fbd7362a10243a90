"""The 2D images of a DICOM file with their geometry: single-frame files, enhanced multi-frame
(per-frame functional groups), NM reconstructed SPECT and RT dose grids."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImmunotrackWarning, InputError
from .headers import first_item, header_floats, header_value


@dataclass
class Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    header: Any  # pydicom Dataset without pixel data (shared by frames of one file)
    frame: int | None  # index in a multi-frame file, None for a single-frame file
    group: tuple  # what makes a volume: (SeriesInstanceUID, file for multi-frame)
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # the 6 direction cosines
    spacing: np.ndarray | None  # PixelSpacing (row spacing, column spacing) mm
    rows: int
    cols: int
    slope: float = 1.0
    intercept: float = 0.0
    info: dict = field(default_factory=dict)  # per-slice timing etc. (plain values)


def frames_of(ds, path: Path) -> list[Frame]:
    """The 2D images of one file, with their geometry (None where the header lacks it).

    A single-frame file gives one Frame; an enhanced multi-frame file, an NM reconstructed SPECT
    or an RT dose grid gives one per frame, with positions from its functional groups, slice
    vector or grid offsets.

    Parameters
    ----------
    ds : pydicom.Dataset
        The file's header (pixels deferred, see :func:`~napari_immunotrack.io.dicom.headers.read_header`).
    path : Path
        The file, recorded in each Frame and named in messages.

    Returns
    -------
    list of Frame
        Position (ImagePositionPatient, LPS mm), orientation (6 cosines), PixelSpacing (mm), size,
        rescale slope/intercept and per-slice timing of each 2D image; a multi-frame file's frames
        share a group of their own (one volume).

    Raises
    ------
    InputError
        A Siemens mosaic, a colour image, or a multi-frame file whose frames have no positions.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from napari_immunotrack.io.dicom.headers import read_header
    >>> path = Path(get_testdata_file("CT_small.dcm"))
    >>> [frame] = frames_of(read_header(path, explicit=True), path)
    >>> frame.rows, frame.cols, frame.spacing.tolist(), frame.position.tolist(), frame.intercept
    (128, 128, [0.661468, 0.661468], [-158.135803, -179.035797, -75.699997], -1024.0)
    """
    uid = str(ds.get("SeriesInstanceUID", "") or "") or f"(no SeriesInstanceUID: {path.parent})"
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        raise InputError(
            f"{path} is a Siemens mosaic (the slices of a volume tiled in one image), which is not "
            "read; convert the series to NIfTI first (e.g. with dcm2niix)."
        )
    if samples != 1:
        raise InputError(
            f"{path} is a colour image ({samples} samples per pixel); only greyscale volumes "
            "(MR, PET, SPECT, CT) can be read."
        )
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames <= 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        # NM files written one slice per file may keep the geometry in the detector item only
        det = first_item(ds, "DetectorInformationSequence") if "ImagePositionPatient" not in ds else None
        src = det if det is not None else ds
        src_orient = src if "ImageOrientationPatient" in src else ds
        return [
            Frame(
                path=path,
                header=ds,
                frame=None,
                group=(uid, ""),
                position=header_floats(src, "ImagePositionPatient", 3),
                orientation=header_floats(src_orient, "ImageOrientationPatient", 6),
                spacing=header_floats(ds, "PixelSpacing", 2),
                rows=rows,
                cols=cols,
                slope=float(header_value(ds, "RescaleSlope", 1.0)),
                intercept=float(header_value(ds, "RescaleIntercept", 0.0)),
                info=_slice_info(ds),
            )
        ]
    group = (uid, str(path))  # a multi-frame file is one volume by itself
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, path, group, rows, cols)
    if str(ds.get("Modality", "")) == "NM":
        return _nm_frames(ds, path, group, rows, cols, n_frames)
    if "GridFrameOffsetVector" in ds:
        return _grid_offset_frames(ds, path, group, rows, cols, n_frames)
    raise InputError(
        f"{path} is a multi-frame {ds.get('Modality', '')} file with no per-frame positions "
        "(no functional groups, NM slice vector or grid offsets), so its frames cannot be placed "
        "in space; export it as one file per slice."
    )


def _slice_info(ds) -> dict:
    """Per-slice fields kept in ``slice_headers`` and used to order frames."""
    info = {
        k: header_value(ds, k)
        for k in (
            "AcquisitionDate",
            "AcquisitionTime",
            "FrameReferenceTime",
            "ActualFrameDuration",
            "DecayFactor",
            "InstanceNumber",
            "EchoTime",
            "EchoNumbers",
            "TemporalPositionIdentifier",
            "TriggerTime",
            "SOPInstanceUID",
            "ContentDate",
            "ContentTime",
            "FlipAngle",
            "RepetitionTime",
            "InversionTime",
        )
    }
    if info["EchoNumbers"] is not None and isinstance(info["EchoNumbers"], list):
        info["EchoNumbers"] = info["EchoNumbers"][0] if info["EchoNumbers"] else None
    return info


def _fg(ds, i, sequence, keyword):
    """A value from per-frame functional group ``i``, else from the shared group (enhanced multi-frame)."""
    for groups, index in (
        (ds.get("PerFrameFunctionalGroupsSequence"), i),
        (ds.get("SharedFunctionalGroupsSequence"), 0),
    ):
        if groups and index < len(groups):
            item = first_item(groups[index], sequence)
            if item is not None and keyword in item:
                return item
    return None


def _converted(ds, i) -> dict:
    """The classic per-slice fields a Legacy Converted Enhanced file keeps in its Unassigned Shared /
    Per-Frame Converted Attributes (echo time, temporal position, frame timing of the source slices)."""
    out = {}
    for groups, index, keyword in (
        (ds.get("SharedFunctionalGroupsSequence"), 0, "UnassignedSharedConvertedAttributesSequence"),
        (ds.get("PerFrameFunctionalGroupsSequence"), i, "UnassignedPerFrameConvertedAttributesSequence"),
    ):
        if groups and index < len(groups):
            item = first_item(groups[index], keyword)
            if item is not None:
                out.update({k: v for k, v in _slice_info(item).items() if v is not None and k != "InstanceNumber"})
    return out


def _enhanced_frames(ds, path, group, rows, cols) -> list[Frame]:
    """Frames of an enhanced (or legacy converted enhanced) multi-frame image: geometry, rescale, echo and
    timing from the per-frame functional group of each frame, else from the shared group
    (``docs/methods/dicom-objects.md#enhanced-multi-frame``)."""
    frames = []
    n = len(ds.PerFrameFunctionalGroupsSequence)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    if n != n_frames:
        raise InputError(
            f"{path}: the per-frame functional groups describe {n} frames but the file holds "
            f"{n_frames} (NumberOfFrames); the file is inconsistent: export it again."
        )
    if n == 1:
        group = (group[0], "")  # one slice per enhanced file: slices of a series join by SeriesInstanceUID
    contents = [first_item(item, "FrameContentSequence") for item in ds.PerFrameFunctionalGroupsSequence]
    stacks = {
        str(header_value(c, "StackID")) for c in contents if c is not None and header_value(c, "StackID") is not None
    }
    for i in range(n):
        pos_item = _fg(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        ori_item = _fg(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
        pix_item = _fg(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        rescale = _fg(ds, i, "PixelValueTransformationSequence", "RescaleSlope")
        echo = _fg(ds, i, "MREchoSequence", "EffectiveEchoTime")
        timing = _fg(ds, i, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        flip = _fg(ds, i, "MRTimingAndRelatedParametersSequence", "FlipAngle")
        decay = _fg(ds, i, "PETFrameCorrectionFactorsSequence", "DecayFactor")
        inversion = _fg(ds, i, "MRModifierSequence", "InversionTimes")
        content = contents[i]  # always per frame
        info = _slice_info(ds)
        info.update(_converted(ds, i))
        info["InstanceNumber"] = i + 1
        if echo is not None:
            info["EchoTime"] = header_value(echo, "EffectiveEchoTime")
        if timing is not None:
            info["RepetitionTime"] = header_value(timing, "RepetitionTime")
        if flip is not None:
            info["FlipAngle"] = header_value(flip, "FlipAngle")
        if decay is not None:
            info["DecayFactor"] = header_value(decay, "DecayFactor")
        if inversion is not None:
            times = header_value(inversion, "InversionTimes")
            info["InversionTime"] = times[0] if isinstance(times, list) and times else times
        if rescale is not None and header_value(rescale, "RescaleType"):
            info["RescaleType"] = str(header_value(rescale, "RescaleType")).upper()
        frame_group = group
        if content is not None:
            when = header_value(content, "FrameAcquisitionDateTime") or header_value(content, "FrameReferenceDateTime")
            if when and isinstance(when, str) and len(when) >= 10:
                info["AcquisitionDate"], info["AcquisitionTime"] = when[:8], when[8:].split("+")[0].split("-")[0]
            if header_value(content, "TemporalPositionIndex") is not None:
                info["TemporalPositionIdentifier"] = header_value(content, "TemporalPositionIndex")
            if header_value(content, "FrameAcquisitionDuration") is not None:
                info["ActualFrameDuration"] = header_value(content, "FrameAcquisitionDuration")
            index = header_value(content, "DimensionIndexValues")
            if index is not None:
                info["DimensionIndexValues"] = index if isinstance(index, list) else [index]
            if len(stacks) > 1:
                # several stacks (slice packages, e.g. three orthogonal ones) in one file: one volume each
                frame_group = (group[0], group[1], f"stack {header_value(content, 'StackID')}")
        frames.append(
            Frame(
                path=path,
                header=ds,
                frame=i,
                group=frame_group,
                position=header_floats(pos_item, "ImagePositionPatient", 3) if pos_item is not None else None,
                orientation=header_floats(ori_item, "ImageOrientationPatient", 6) if ori_item is not None else None,
                spacing=header_floats(pix_item, "PixelSpacing", 2) if pix_item is not None else None,
                rows=rows,
                cols=cols,
                slope=float(header_value(rescale if rescale is not None else ds, "RescaleSlope", 1.0)),
                intercept=float(header_value(rescale if rescale is not None else ds, "RescaleIntercept", 0.0)),
                info=info,
            )
        )
    return frames


def _nm_frames(ds, path, group, rows, cols, n_frames) -> list[Frame]:
    """NM multi-frame: a reconstructed SPECT volume (RECON TOMO) as one file."""
    image_type = header_value(ds, "ImageType") or []
    image_type = [str(t).upper() for t in (image_type if isinstance(image_type, list) else [image_type])]
    if "SliceVector" not in ds and not any("RECON" in t for t in image_type):
        kinds = ("STATIC", "DYNAMIC", "GATED", "WHOLE BODY", "TOMO", "GATED TOMO")
        kind = next((t for t in image_type if t in kinds), "planar")
        raise InputError(
            f"{path} is an NM {kind} acquisition (planar images or projections), not a reconstructed "
            "SPECT volume; give the reconstructed (RECON TOMO) series."
        )
    det = first_item(ds, "DetectorInformationSequence")
    src = det if det is not None and "ImagePositionPatient" in det else ds
    position = header_floats(src, "ImagePositionPatient", 3)
    src = det if det is not None and "ImageOrientationPatient" in det else ds
    orientation = header_floats(src, "ImageOrientationPatient", 6)
    step = header_value(ds, "SpacingBetweenSlices")
    if step is None and header_value(ds, "SliceThickness") is not None:
        step = header_value(ds, "SliceThickness")
        warnings.warn(
            f"{path}: no SpacingBetweenSlices; the SPECT slice spacing is taken from SliceThickness "
            f"({step} mm), as NM cameras intend.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    if step is None:
        raise InputError(
            f"{path}: the NM volume has neither SpacingBetweenSlices nor SliceThickness, so the "
            "distance between its slices is unknown; re-export it with the slice spacing."
        )
    for vec in ("EnergyWindowVector", "DetectorVector", "PhaseVector", "RotationVector", "RRIntervalVector"):
        values = header_value(ds, vec)
        if isinstance(values, list) and len(set(values)) > 1:
            raise InputError(
                f"{path}: the NM file mixes several {vec[:-6].lower()}s ({sorted(set(values))}); "
                "export one reconstructed volume per file."
            )
    slices = header_value(ds, "SliceVector")
    slices = slices if isinstance(slices, list) and len(slices) == n_frames else list(range(1, n_frames + 1))
    slots = header_value(ds, "TimeSlotVector")
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
        frames.append(
            Frame(
                path=path,
                header=ds,
                frame=i,
                group=group,
                position=pos,
                orientation=orientation,
                spacing=header_floats(ds, "PixelSpacing", 2),
                rows=rows,
                cols=cols,
                slope=float(header_value(ds, "RescaleSlope", 1.0)),
                intercept=float(header_value(ds, "RescaleIntercept", 0.0)),
                info=info,
            )
        )
    return frames


def _grid_offset_frames(ds, path, group, rows, cols, n_frames) -> list[Frame]:
    """RT dose (and similar) multi-frame grids: frame k at ImagePositionPatient + offset_k along the normal."""
    position = header_floats(ds, "ImagePositionPatient", 3)
    orientation = header_floats(ds, "ImageOrientationPatient", 6)
    offsets = header_floats(ds, "GridFrameOffsetVector", n_frames)
    if offsets is None:
        raise InputError(
            f"{path}: GridFrameOffsetVector does not give one offset per frame ({n_frames}); "
            "the file's frames cannot be placed."
        )
    scale = float(header_value(ds, "DoseGridScaling", 1.0))
    frames = []
    for i in range(n_frames):
        pos = None
        if position is not None and orientation is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            # the first frame is at ImagePositionPatient in both offset conventions (relative or absolute)
            pos = position + (offsets[i] - offsets[0]) * normal
        info = _slice_info(ds)
        info["InstanceNumber"] = i + 1
        frames.append(
            Frame(
                path=path,
                header=ds,
                frame=i,
                group=group,
                position=pos,
                orientation=orientation,
                spacing=header_floats(ds, "PixelSpacing", 2),
                rows=rows,
                cols=cols,
                slope=scale * float(header_value(ds, "RescaleSlope", 1.0)),
                intercept=float(header_value(ds, "RescaleIntercept", 0.0)),
                info=info,
            )
        )
    return frames
