"""RTSTRUCT in: closed planar contours rasterised on the referenced series' grid as a label Volume.

An RT structure set holds each ROI as closed polygons in patient coordinates
(LPS mm), one or more per image plane. They have no grid of their own, so the
series they were drawn on is needed (``reference``). Each contour is carried
into that series' voxel indices; a contour lies on a slice when its points are
within a quarter of the slice spacing of that slice's plane. On each slice the
contours of one ROI are combined by the even-odd rule (XOR of their filled
interiors): a contour inside another is a hole, one inside a hole an island,
as treatment planning systems and 3D Slicer's importer draw them. A voxel is
inside a polygon when its centre is (scikit-image ``polygon2mask``)
(``docs/methods/dicom-objects.md#rtstruct-in``).

Labels are the ROINumbers, ``metadata["label_names"]`` the ROINames. Where
ROIs overlap the later ROI in the file wins, with a warning giving the count.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

_ON_PLANE = 0.25  # a contour is on a slice when within this fraction of the slice spacing


def _read(path: Path):
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM RTSTRUCT ({' '.join(str(exc).split())[:100]}); export the "
                         "structure set again.") from None


def referenced_series_uids(ds) -> List[str]:
    """SeriesInstanceUIDs an RT structure set was drawn on (ReferencedFrameOfReferenceSequence)."""
    uids = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                if "SeriesInstanceUID" in series:
                    uids.append(str(series.SeriesInstanceUID))
    return uids


def read_rtstruct(path, reference=None) -> Volume:
    """Rasterise an RTSTRUCT's closed planar contours on its referenced series' grid.

    Parameters
    ----------
    path : str or Path
        The RTSTRUCT file.
    reference : str, Path or Volume
        The series the contours were drawn on (a DICOM folder or file, or its
        Volume). Contours have no voxel grid of their own: without it the
        series is looked for beside the file (its folder, recursively).

    Returns
    -------
    Volume
        uint8 (uint16 for ROINumbers above 255) labels on the reference grid,
        modality "SEG", ``metadata["label_names"]`` {ROINumber: ROIName},
        ``metadata["rois"]`` (number, name, contours used, contours not on a slice).

    Examples
    --------
    >>> # see tests/test_dicom_objects.py for a structure set with holes written by pydicom
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; give an RTSTRUCT file.")
    ds = _read(path)
    try:
        return _rasterise(ds, path, reference)
    except InputError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
            NotImplementedError) as exc:  # a damaged or hand-edited element
        raise InputError(f"{path}: the RTSTRUCT is damaged ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:120]}); export the structure set again.") from None


def _rasterise(ds, path: Path, reference) -> Volume:
    from skimage.draw import polygon2mask

    from .dicom_seg import find_reference, reference_volume

    series_uids = referenced_series_uids(ds)
    if reference is None:
        reference = find_reference(path, series_uids)  # stored beside it, as exports do
    if reference is None:
        what = f"series {series_uids[0]}" if series_uids else "the series it was drawn on"
        raise InputError(f"{path}: an RTSTRUCT's contours have no voxel grid and the image series they were drawn "
                         f"on ({what}) is not beside it; give that series with --reference "
                         "(load_volume(rtstruct, reference=folder)).")
    frames = ds.get("ReferencedFrameOfReferenceSequence") or []
    frame_uid = str(frames[0].get("FrameOfReferenceUID", "")) if frames else ""
    ref = reference_volume(reference, series_uids, frame_uid, path, "RTSTRUCT")
    shape = ref.spatial_shape
    names = {}
    for item in ds.get("StructureSetROISequence", []) or []:
        try:
            names[int(item.ROINumber)] = str(item.get("ROIName", "") or f"ROI {int(item.ROINumber)}")
        except (TypeError, ValueError, AttributeError):
            raise InputError(f"{path}: a StructureSetROISequence item has no valid ROINumber; the structure set is "
                             "damaged: export it again.") from None
    contours_of = ds.get("ROIContourSequence", []) or []
    if not contours_of:
        raise InputError(f"{path}: the structure set has no ROIContourSequence (no contours); export it with its "
                         "contours.")
    numbers = [int(c.get("ReferencedROINumber", 0) or 0) for c in contours_of]
    dtype = np.uint16 if max(numbers + [0]) > 255 else np.uint8
    labels = np.zeros(shape, dtype)
    to_index = np.linalg.inv(ref.affine)
    rois, overlap = [], 0
    for roi, number in zip(contours_of, numbers):
        if number <= 0:
            raise InputError(f"{path}: an ROIContourSequence item has no valid ReferencedROINumber; the structure "
                             "set is damaged: export it again.")
        planes = {}
        used, off_plane, skipped_types = 0, 0, set()
        for contour in roi.get("ContourSequence", []) or []:
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR").upper()
            if kind != "CLOSED_PLANAR":
                skipped_types.add(kind)  # points and open lines enclose no area
                continue
            try:
                points = np.asarray([float(v) for v in contour.ContourData], float)
            except (AttributeError, TypeError, ValueError):
                raise InputError(f"{path}: ROI {number} has a contour without valid ContourData; the structure set "
                                 "is damaged: export it again.") from None
            if points.size < 9 or points.size % 3 or not np.all(np.isfinite(points)):
                raise InputError(f"{path}: ROI {number} has a contour of {points.size} numbers (needs 3 per point, "
                                 "at least 3 points); the structure set is damaged: export it again.")
            ras = points.reshape(-1, 3) * [-1.0, -1.0, 1.0]
            index = (to_index @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]  # (slice, row, column)
            k = float(np.mean(index[:, 0]))
            s = int(np.rint(k))
            if np.abs(index[:, 0] - s).max() > _ON_PLANE or not 0 <= s < shape[0]:
                off_plane += 1
                continue
            mask = polygon2mask(shape[1:], index[:, 1:])
            planes[s] = planes.get(s, np.zeros(shape[1:], bool)) ^ mask  # even-odd: nested contours are holes
            used += 1
        for s, mask in planes.items():
            overlap += int(np.count_nonzero(labels[s][mask]))
            labels[s][mask] = number
        rois.append({"number": number, "name": names.get(number, f"ROI {number}"), "contours": used,
                     "contours_off_slices": off_plane})
        if off_plane:
            warnings.warn(f"{path}: {off_plane} contour(s) of ROI {number} ({names.get(number, '')}) do not lie on a "
                          "slice of the reference series (or lie outside it) and are not drawn; check that the "
                          "reference is the series the contours were drawn on.", ImmunotrackWarning)
        if skipped_types:
            warnings.warn(f"{path}: ROI {number} has {', '.join(sorted(skipped_types))} contours, which enclose no "
                          "area; they are not drawn.", ImmunotrackWarning)
    if overlap:
        warnings.warn(f"{path}: {overlap} voxel(s) belong to more than one ROI; each takes the later ROI in the file.",
                      ImmunotrackWarning)
    volume = Volume(labels, ref.affine.copy(), "SEG", "label", name=path.stem)
    volume.metadata.update({
        "label_names": {r["number"]: r["name"] for r in rois}, "rois": rois, "source_path": str(path),
        "format": "dicom-rtstruct", "Modality": "RTSTRUCT", "SOPInstanceUID": str(ds.get("SOPInstanceUID", "")),
        "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "")), "FrameOfReferenceUID": frame_uid,
        "ReferencedSeriesInstanceUID": series_uids[0] if series_uids else "", "files": [str(path)],
        "reference_path": str(ref.metadata.get("source_path", reference)),
        "StructureSetLabel": str(ds.get("StructureSetLabel", "") or ""),
    })
    return volume


__all__ = ["read_rtstruct", "referenced_series_uids"]
