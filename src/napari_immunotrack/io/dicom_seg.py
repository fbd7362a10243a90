"""DICOM SEG in: binary, fractional and labelmap segmentations as label Volumes in world space (highdicom).

A SEG's frames carry their own plane positions (as 3D Slicer, OHIF and
highdicom write them), so the labels are placed in RAS world millimetres
without the images they were drawn on; with ``reference`` (the series the
segmentation was drawn on) they are carried onto that series' grid, the form
every other layer of a study takes. A SEG whose frames name only their
source images (no plane positions) needs the referenced series: without it
the read stops with one line naming the series to give
(``docs/methods/dicom-objects.md#seg-in``).

Label values are the segment numbers, ``metadata["label_names"]`` the segment
labels. A fractional segment is a label where its fraction is at least
``threshold`` (0.5 by default: the voxel is more inside than outside); where
segments overlap (allowed in binary SEG, impossible in a label image) the
segment with the largest value wins, ties to the higher number, with a
warning giving the count.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from napari_immunotrack.volume import Volume
>>> from napari_immunotrack.io.dicom import write_dicom_series
>>> from napari_immunotrack.io.dicom_export import write_seg
>>> tmp = tempfile.TemporaryDirectory()
>>> image = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), modality="MR")
>>> series = write_dicom_series(image, os.path.join(tmp.name, "mr"))
>>> labels = Volume(np.zeros((4, 5, 6), np.uint8), image.affine, "SEG", "label", {"label_names": {1: "tumour"}})
>>> labels.data[1:3, 2:4, 2:5] = 1
>>> seg = write_seg(labels, series, os.path.join(tmp.name, "seg.dcm"))
>>> back = read_seg(seg, reference=series)
>>> int(back.numpy().sum()), back.metadata["label_names"]
(12, {1: 'tumour'})
>>> tmp.cleanup()
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: RT Structure Set Storage.
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_object_kind(path) -> str | None:
    """ "seg" for a DICOM SEG file, "rtstruct" for an RT structure set, None for anything else.

    Only the header is read (SOP class, else Modality); unreadable files give None.

    Parameters
    ----------
    path : str or Path
        A file.

    Returns
    -------
    {"seg", "rtstruct"} or None

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> dicom_object_kind(get_testdata_file("CT_small.dcm")) is None
    True
    """
    import pydicom

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # not DICOM, or damaged: the image reader gives the message
        return None
    sop = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "")
    if sop in SEG_SOP_CLASSES or (modality == "SEG" and not sop):
        return "seg"
    if sop == RTSTRUCT_SOP_CLASS or (modality == "RTSTRUCT" and not sop):
        return "rtstruct"
    return None


def reference_volume(reference, series_uids: list[str], frame_of_reference: str, path, what: str) -> Volume:
    """The series of ``reference`` (a DICOM folder, file or Volume) that ``path`` refers to.

    Parameters
    ----------
    reference : path or Volume
        Where the referenced series is.
    series_uids : list of str
        SeriesInstanceUIDs the object refers to (empty: unknown).
    frame_of_reference : str
        The object's FrameOfReferenceUID ("" when absent).
    path : path
        The object's file, for messages.
    what : str
        "DICOM SEG" or "RTSTRUCT", for messages.

    Returns
    -------
    Volume
        The referenced series (its 3D grid is the labels' grid).

    Raises
    ------
    InputError
        The reference holds none of the series the object refers to (the message lists what it
        holds), or the object names no series and the reference holds several (of its frame of
        reference).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> from napari_immunotrack.io import load_volume
    >>> uid = load_volume(series).metadata["SeriesInstanceUID"]
    >>> reference_volume(series, [uid], "", "seg.dcm", "DICOM SEG").spatial_shape
    (4, 5, 6)
    >>> tmp.cleanup()
    """
    if isinstance(reference, Volume):
        candidates = [reference]
    else:
        from .dicom import read_dicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImmunotrackWarning)  # other series in the folder are not our business
            candidates = read_dicom(reference)
    if series_uids:
        match = [v for v in candidates if v.metadata.get("SeriesInstanceUID") in series_uids]
        if not match and isinstance(reference, Volume) and not reference.metadata.get("SeriesInstanceUID"):
            match = candidates  # a Volume without DICOM identity: the caller vouches for it
        if not match:
            found = ", ".join(f"{v.metadata.get('SeriesInstanceUID') or '?'} ({v.name})" for v in candidates[:4])
            raise InputError(
                f"{path}: the {what} was drawn on series {series_uids[0]}, which is not in {reference} "
                f"(it holds {found}); give the folder of the referenced series with --reference."
            )
        return match[0]
    if frame_of_reference:
        match = [v for v in candidates if v.metadata.get("FrameOfReferenceUID") in (frame_of_reference, None)]
        if match:
            return match[0]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(
        f"{path}: the {what} names no referenced series and {reference} holds {len(candidates)} "
        "series; give the folder of the one series it was drawn on with --reference."
    )


def find_reference(path, series_uids: list[str]) -> Volume | None:
    """The referenced series when it lies beside the object (in the object's folder, searched recursively,
    as a PACS or Slicer export stores them), else None; a folder that cannot be read counts as not found.

    Parameters
    ----------
    path : str or Path
        The SEG or RTSTRUCT file.
    series_uids : list of str
        The SeriesInstanceUIDs it refers to.

    Returns
    -------
    Volume or None
        The first series found whose SeriesInstanceUID is in ``series_uids``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> from napari_immunotrack.io import load_volume
    >>> from napari_immunotrack.io.dicom_export import write_seg
    >>> seg = write_seg(labels, series, Path(tmp.name) / "seg.dcm")    # beside the series
    >>> uid = load_volume(series).metadata["SeriesInstanceUID"]
    >>> find_reference(seg, [uid]).spatial_shape, find_reference(seg, ["1.2.3"])
    ((4, 5, 6), None)
    >>> tmp.cleanup()
    """
    from .dicom import read_dicom

    if not series_uids:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volumes = read_dicom(Path(path).parent)
    except InputError:
        return None
    return next((v for v in volumes if v.metadata.get("SeriesInstanceUID") in series_uids), None)


def _labels_from_planes(planes: np.ndarray, numbers: list[int], threshold: float, path) -> np.ndarray:
    """(…, segments) binary or fractional planes -> one label image (segment numbers, 0 = none)."""
    inside = planes >= threshold
    best = np.argmax(np.where(inside, planes, -1.0)[..., ::-1], axis=-1)  # ties to the higher number
    best = len(numbers) - 1 - best
    labels = np.asarray(numbers, dtype=np.uint16 if max(numbers) > 255 else np.uint8)[best]
    labels[~inside.any(axis=-1)] = 0
    overlap = int(np.count_nonzero(inside.sum(axis=-1) > 1))
    if overlap:
        warnings.warn(
            f"{path}: {overlap} voxel(s) belong to more than one segment; a label image holds one per "
            "voxel, so each takes the segment with the largest value (ties: the higher number).",
            ImmunotrackWarning,
            stacklevel=2,
        )
    return labels


def read_seg(path, reference=None, threshold: float = 0.5) -> Volume:
    """Read a DICOM SEG (binary, fractional or labelmap) as a label Volume in world space.

    Parameters
    ----------
    path : str or Path
        The SEG file.
    reference : str, Path or Volume, optional
        The series the segmentation was drawn on (a DICOM folder or file, or
        its Volume). With it the labels are on that series' grid (nearest
        neighbour in world space; exact when the grids coincide). Required when
        the SEG's frames have no plane positions.
    threshold : float
        A fractional segment covers a voxel where its fraction is at least this.

    Returns
    -------
    Volume
        uint8 (uint16 for segment numbers above 255) labels, modality "SEG",
        ``metadata["label_names"]`` {segment number: segment label},
        ``metadata["segments"]`` (number, label, property category and type
        codes, algorithm type), ``SeriesInstanceUID``, ``SOPInstanceUID``,
        ``FrameOfReferenceUID``, ``ReferencedSeriesInstanceUID``,
        ``segmentation_type``.

    Raises
    ------
    InputError
        Not a SEG, a damaged SEG, frames without positions and no reference, or a reference that
        is not the referenced series.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> from napari_immunotrack.io.dicom_export import write_seg
    >>> seg = write_seg(labels, series, Path(tmp.name) / "seg.dcm")
    >>> alone = read_seg(seg)                       # placed by the frames' own positions
    >>> on_series = read_seg(seg, reference=series)  # on the PET's grid
    >>> alone.spatial_shape, on_series.spatial_shape, int(on_series.numpy().sum())
    ((2, 5, 6), (4, 5, 6), 12)
    >>> tmp.cleanup()
    """
    import highdicom as hd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; give a DICOM SEG file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(str(path))
    except Exception as exc:  # highdicom/pydicom raise many types on a damaged SEG: all mean a bad file
        if "little endian" in str(exc).lower():
            raise InputError(
                f"{path}: the SEG is stored big-endian, which highdicom does not read; convert it to "
                "little endian first (e.g. dcmconv +te in.dcm out.dcm, or gdcmconv)."
            ) from None
        raise InputError(
            f"{path}: not a readable DICOM SEG ({' '.join(str(exc).split())[:120]}); export the "
            "segmentation again (e.g. from 3D Slicer or OHIF)."
        ) from None
    try:
        return _seg_volume(seg, path, reference, threshold)
    except InputError:
        raise
    except Exception as exc:  # highdicom raises many types on a damaged SEG's attributes: all mean a bad file
        raise InputError(
            f"{path}: the DICOM SEG is damaged ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:120]}); export the segmentation again."
        ) from None


def _seg_volume(seg, path: Path, reference, threshold: float) -> Volume:
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    try:
        n_frames = int(seg.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = -1
    if per_frame is not None and len(per_frame) != n_frames:
        raise InputError(
            f"{path}: the per-frame functional groups describe {len(per_frame)} frames but the file "
            f"holds {n_frames if n_frames >= 0 else 'an unreadable number of'} (NumberOfFrames); the "
            "file is inconsistent: export it again."
        )
    numbers = [int(n) for n in seg.get_segment_numbers()]
    if not numbers:
        raise InputError(f"{path}: the SEG holds no segment; export a segmentation with at least one segment.")
    segments = []
    for n in numbers:
        d = seg.get_segment_description(n)
        segments.append(
            {
                "number": n,
                "label": str(d.segment_label),
                "category": _code(d.segmented_property_category),
                "type": _code(d.segmented_property_type),
                "algorithm_type": str(getattr(d.algorithm_type, "value", d.algorithm_type)),
            }
        )
    seg_type = str(getattr(seg.segmentation_type, "value", seg.segmentation_type))
    series_uids = [
        str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in item
    ]
    frame_of_reference = str(seg.get("FrameOfReferenceUID", "") or "")
    ref = None
    if reference is not None:
        ref = reference_volume(reference, series_uids, frame_of_reference, path, "DICOM SEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            geometry = seg.get_volume_geometry() if seg.coordinate_system is not None else None
    except Exception:
        geometry = None
    try:
        if geometry is not None:
            labels = None
            if seg_type in ("BINARY", "LABELMAP"):
                try:  # one label image straight away (fast), unless segments overlap
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        hv = seg.get_volume(
                            segment_numbers=numbers, combine_segments=True, relabel=False, allow_missing_positions=True
                        )
                    labels = np.asarray(hv.array)
                    labels = labels.astype(np.uint16 if max(numbers) > 255 else np.uint8, copy=False)
                except Exception:  # overlapping segments (or a damaged frame): the plane by plane route says which
                    labels = None
            if labels is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    hv = seg.get_volume(
                        segment_numbers=numbers,
                        combine_segments=False,
                        rescale_fractional=True,
                        allow_missing_positions=True,
                    )
                planes = np.asarray(hv.array, dtype=np.float32)
                if planes.ndim == 3:
                    planes = planes[..., None]
                labels = _labels_from_planes(planes, numbers, threshold, path)
            volume = Volume(labels, _LPS_TO_RAS @ np.asarray(hv.affine, float), "SEG", "label", name=path.stem)
            if ref is not None and not volume.same_grid(ref):
                volume = volume.resample_to(ref, order=0)
        else:
            ref = ref if ref is not None else find_reference(path, series_uids)
            if ref is None:
                what = f"series {series_uids[0]}" if series_uids else "the series it was drawn on"
                raise InputError(
                    f"{path}: the SEG's frames have no plane positions, so they are placed only by the "
                    f"images they were drawn on ({what}), which were not given nor found beside it; "
                    "give that series' folder with --reference (load_volume(seg, reference=folder))."
                )
            uids = _slice_uids(ref, path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                planes = seg.get_pixels_by_source_instance(
                    source_sop_instance_uids=uids,
                    segment_numbers=numbers,
                    combine_segments=False,
                    rescale_fractional=True,
                    ignore_spatial_locations=True,
                    assert_missing_frames_are_empty=True,
                )
            planes = np.asarray(planes, dtype=np.float32)
            labels = _labels_from_planes(planes, numbers, threshold, path)
            volume = Volume(labels, ref.affine, "SEG", "label", name=path.stem)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: the SEG's frames cannot be arranged as a volume "
            f"({' '.join(str(exc).split())[:140]}); export the segmentation again, or give the "
            "series it was drawn on with --reference."
        ) from None
    # a SEG written by this package keeps each label's value as TrackingID "label N": give the same labels back
    restored = {}
    for s in segments:
        s["tracking_id"] = str(
            seg.SegmentSequence[[int(i.SegmentNumber) for i in seg.SegmentSequence].index(s["number"])].get(
                "TrackingID", ""
            )
            or ""
        )
        m = re.fullmatch(r"label (\d+)", s["tracking_id"])
        if m:
            restored[s["number"]] = int(m.group(1))
    if len(restored) == len(segments) and len(set(restored.values())) == len(restored):
        lut = np.zeros(max(numbers) + 1, np.uint16 if max(restored.values()) > 255 else np.uint8)
        for n, v in restored.items():
            lut[n] = v
        volume = volume.replace(data=lut[np.asarray(volume.numpy())])
        for s in segments:
            s["label_value"] = restored[s["number"]]
    volume.metadata.update(
        {
            "label_names": {s.get("label_value", s["number"]): s["label"] for s in segments},
            "segments": segments,
            "segmentation_type": seg_type,
            "source_path": str(path),
            "format": "dicom-seg",
            "Modality": "SEG",
            "SeriesInstanceUID": str(seg.get("SeriesInstanceUID", "")),
            "SOPInstanceUID": str(seg.SOPInstanceUID),
            "FrameOfReferenceUID": frame_of_reference,
            "ReferencedSeriesInstanceUID": series_uids[0] if series_uids else "",
            "files": [str(path)],
            "threshold": threshold if seg_type == "FRACTIONAL" else None,
            "SeriesDescription": str(seg.get("SeriesDescription", "") or ""),
        }
    )
    if ref is not None:
        volume.metadata["reference_path"] = str(ref.metadata.get("source_path", reference))
    return volume


def _code(concept) -> dict[str, str]:
    return {"value": str(concept.value), "scheme": str(concept.scheme_designator), "meaning": str(concept.meaning)}


def _slice_uids(ref: Volume, path) -> list[str]:
    """SOPInstanceUIDs of the reference's slices in array order (first frame of a 4D series)."""
    n = ref.spatial_shape[0]
    headers = ref.metadata.get("slice_headers") or []
    uids = [h.get("SOPInstanceUID") for h in headers if h.get("frame", 0) == 0][:n]
    if len(uids) != n or not all(uids):
        raise InputError(
            f"{path}: the reference series has no SOPInstanceUID per slice (it is not a classic DICOM "
            "series), so the SEG's frames cannot be matched to its slices; give the DICOM series the "
            "segmentation was drawn on."
        )
    return [str(u) for u in uids]


__all__ = [
    "read_seg",
    "dicom_object_kind",
    "reference_volume",
    "find_reference",
    "SEG_SOP_CLASSES",
    "RTSTRUCT_SOP_CLASS",
]
