"""Reading DICOM files and folders into Volumes (see the package docstring for the rules)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ... import progress as _progress
from ...errors import ImmunotrackWarning, InputError
from ...volume import Volume
from .frames import Frame, frames_of
from .geometry import SPACING_ABS_TOL, arrange_frames, check_common_geometry, check_spacing, slice_affine
from .headers import (
    PET_UNITS,
    PLAIN_KEYS,
    RADIOPHARM_KEYS,
    bad_values_as_input_error,
    dicom_seconds,
    first_item,
    header_value,
    list_files,
    pixel_unit,
    raw_dataset,
    read_header,
    series_label,
    series_sort_key,
    volume_label,
)
from .pixels import file_pixels


def read_dicom(path, progress=None) -> list[Volume]:
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
    ...     warnings.simplefilter("always")  # shown even if an earlier example already raised it
    ...     volumes = read_dicom(folder)
    >>> [v.spatial_shape for v in volumes], "Scout" in str(caught[-1].message)
    ([(5, 16, 16)], True)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    explicit = path.is_file()
    files = [path] if explicit else list_files(path)
    frames: list[Frame] = []
    suspects: list[Path] = []
    _progress.report(progress, 0.0, "reading DICOM headers")
    for i, f in enumerate(files):
        with bad_values_as_input_error(f):
            ds = read_header(f, explicit, suspects)
            if ds is not None and _is_derived_object(ds):
                # a segmentation (or RT structure set) lying in the series folder is not an image of it
                if explicit:
                    raise InputError(
                        f"{f} is a DICOM {ds.get('Modality', 'SEG')} object (labels, not an image); "
                        "open it with load_volume / immunotrack info, giving the series it was drawn "
                        "on with --reference."
                    )
                ds = None
            if ds is not None:
                frames.extend(frames_of(ds, f))
        if i % 20 == 0:
            _progress.report(progress, 0.3 * (i + 1) / len(files), "reading DICOM headers")
    if suspects:
        warnings.warn(
            f"{len(suspects)} file(s) in {path} are DICOM image objects without Rows/Columns (truncated "
            f"headers?), skipped: {', '.join(str(p.relative_to(path)) for p in suspects[:3])}"
            f"{', ...' if len(suspects) > 3 else ''}.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    if not frames:
        # a folder of raw datasets (no preamble/'DICM'): say so rather than "no DICOM image"; a few files suffice
        raw = next((f for f in files[:20] if (ds := raw_dataset(f)) is not None and "Rows" in ds), None)
        if raw is not None:
            raise InputError(
                f"{path} holds DICOM images stored without the 128-byte preamble and 'DICM' file "
                f"header (e.g. {raw.name}); convert them to standard DICOM files first "
                "(e.g. dcmconv +F in.dcm out.dcm)."
            )
        from .. import FORMAT_NAMES, images_in_folder

        if not explicit and not any(Path(path).iterdir()):
            raise InputError(f"{path} is an empty folder; give the folder of a DICOM series or an image file.")

        others = images_in_folder(path)
        if others:  # say what the folder holds and what to give instead
            listed = ", ".join(f"{p.name} ({FORMAT_NAMES.get(fmt, fmt)})" for p, fmt in others[:3])
            raise InputError(
                f"{path} is not a DICOM series: it holds {len(others)} image(s) of another format ({listed}"
                f"{', ...' if len(others) > 3 else ''}); give the file itself, e.g. {others[0][0]}."
            )
        raise InputError(
            f"{path} holds no DICOM image ({len(files)} file(s) looked at); give the folder of a "
            "DICOM series (files with or without .dcm extension)."
        )
    if explicit and len(frames) == 1:
        raise InputError(
            f"{path} holds one 2D slice; a 3D volume is needed: give the series folder "
            "(all the slices' files) instead of one file."
        )
    groups: dict[tuple, list[Frame]] = {}
    for fr in frames:
        groups.setdefault(fr.group, []).append(fr)
    volumes, failures = [], []
    ordered = sorted(groups.items(), key=lambda kv: (series_sort_key(kv[1][0].header), kv[0]))
    for n, (_key, members) in enumerate(ordered):
        sub = _progress.scaled(progress, 0.3 + 0.7 * n / len(ordered), 0.3 + 0.7 * (n + 1) / len(ordered))
        try:
            with bad_values_as_input_error(members[0].path):
                volumes.append(_build_volume(members, path, sub))
        except InputError as exc:
            if len(ordered) == 1:
                raise
            # the reason without the series label and folder the message starts with
            label = series_label(members[0].header)
            reason = str(exc)
            full = " ".join(volume_label(members[0].header, path).split())  # InputError collapses spaces
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
        warnings.warn(
            f"{path}: {len(failures)} DICOM series skipped, as they form no 3D volume ({listed}{more}).",
            ImmunotrackWarning,
            stacklevel=2,
        )
    # distinct names, so napari layers and table columns do not collide
    seen: dict[str, int] = {}
    for v in volumes:
        seen[v.name] = seen.get(v.name, 0) + 1
    for v in volumes:
        if seen[v.name] > 1:
            v.name = f"{v.name} (series {v.metadata.get('SeriesNumber', '?')})"
    _progress.report(progress, 1.0, "DICOM read")
    return volumes


def _build_volume(members: list[Frame], source: Path, progress=None) -> Volume:
    """One series' images -> a Volume (checks, sorting, pixels, affine, metadata)."""
    header = members[0].header
    label = volume_label(header, source)
    # the same image twice (a folder copied into itself): keep one, say so
    unique: dict[tuple, Frame] = {}
    for m in members:
        key = (m.info.get("SOPInstanceUID") or str(m.path), m.frame)
        unique.setdefault(key, m)
    if len(unique) < len(members):
        warnings.warn(
            f"{label}: {len(members) - len(unique)} duplicate file(s) (same SOPInstanceUID) ignored.",
            ImmunotrackWarning,
            stacklevel=2,
        )
        members = list(unique.values())
    if len(members) == 1:
        raise InputError(
            f"{label} holds one 2D slice ({members[0].path.name}); a 3D volume is needed: give the "
            "series folder with all its slices."
        )
    check_common_geometry(members, label)
    frames, axis, normal = arrange_frames(members, label)
    step = check_spacing(frames[0], normal, label)
    for f in frames[1:]:
        off = np.abs(np.array([m.position for m in f]) - np.array([m.position for m in frames[0]])).max()
        if off > SPACING_ABS_TOL:
            raise InputError(
                f"{label}: the {axis} frames are not at the same positions (up to {off:.3f} mm apart); "
                "give a series whose frames share one grid."
            )
    first = frames[0][0]
    n_slices = len(frames[0])

    # ---- geometry: (slice, row, column) -> LPS -> RAS
    r, c = first.orientation[:3], first.orientation[3:]
    row_spacing, col_spacing = float(first.spacing[0]), float(first.spacing[1])
    affine = slice_affine(step, r, c, row_spacing, col_spacing, first.position)
    tilt = float(np.degrees(np.arccos(np.clip(np.dot(step, normal) / np.linalg.norm(step), -1, 1))))
    meta: dict[str, Any] = {}
    if tilt > 0.01:
        warnings.warn(
            f"{label}: the slices are sheared by {tilt:.2f} degrees (gantry tilt); the volume keeps the "
            "exact sheared geometry.",
            ImmunotrackWarning,
            stacklevel=2,
        )
        meta["gantry_tilt_deg"] = tilt

    # ---- pixels, one file read at a time, rescaled per slice
    flat = [m for f in frames for m in f]
    scaled = any(m.slope != 1.0 or m.intercept != 0.0 for m in flat)
    data = None
    cache_path, cache = None, None
    for i, m in enumerate(flat):
        if m.path != cache_path:
            cache_path, cache = m.path, file_pixels(m.path, m.header)
        if m.frame is None or cache.ndim == 2:
            raw = cache
        elif m.frame < cache.shape[0]:
            raw = cache[m.frame]
        else:
            raise InputError(
                f"{m.path}: frame {m.frame + 1} is described in the header but the pixel data hold "
                f"{cache.shape[0]} frames; the file is inconsistent or truncated."
            )
        if raw.shape != (m.rows, m.cols):
            raise InputError(
                f"{m.path}: pixel array shape {raw.shape} does not match Rows x Columns "
                f"{m.rows}x{m.cols}; the file is corrupt."
            )
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
    dicom_modality = str(header_value(header, "Modality", "OT") or "OT")
    modality = dicom_modality if dicom_modality in ("MR", "PT", "NM", "CT", "OT") else "OT"
    meta.update(
        {
            "source_path": str(source),
            "format": "dicom",
            "Modality": dicom_modality,
            "SeriesInstanceUID": str(header_value(header, "SeriesInstanceUID", "") or ""),
        }
    )
    head = first.header
    # a Legacy Converted Enhanced file keeps classic attributes in its unassigned converted sequences
    converted = [
        item
        for groups, keyword in (
            ("SharedFunctionalGroupsSequence", "UnassignedSharedConvertedAttributesSequence"),
            ("PerFrameFunctionalGroupsSequence", "UnassignedPerFrameConvertedAttributesSequence"),
        )
        if first.frame is not None and head.get(groups)
        for item in [first_item(head.get(groups)[0], keyword)]
        if item is not None
    ]
    for key in PLAIN_KEYS:
        value = header_value(head, key)
        for item in converted:
            value = header_value(item, key) if value is None else value
        if value is not None:
            meta[key] = value
    if first.frame is not None:  # multi-frame: per-frame timing replaces file-level values
        for key in ("FrameReferenceTime", "ActualFrameDuration", "EchoTime", "RepetitionTime", "FlipAngle"):
            if first.info.get(key) is not None:
                meta[key] = first.info[key]
        if "Units" not in meta and first.info.get("RescaleType") in PET_UNITS and dicom_modality in ("PT", "NM"):
            # enhanced PET keeps the unit as the RescaleType of its pixel value transformation
            meta["Units"] = first.info["RescaleType"]
    rp = first_item(head, "RadiopharmaceuticalInformationSequence")
    for item in converted:
        rp = first_item(item, "RadiopharmaceuticalInformationSequence") if rp is None else rp
    if rp is not None:
        for key in RADIOPHARM_KEYS:
            value = header_value(rp, key)
            if value is not None:
                meta[key] = value
        code = first_item(rp, "RadionuclideCodeSequence")
        if code is not None and header_value(code, "CodeMeaning"):
            meta["Radionuclide"] = header_value(code, "CodeMeaning")
    if "Radionuclide" not in meta and str(header_value(head, "Modality")) in ("PT", "NM"):
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
        date = m.info.get("AcquisitionDate") or header_value(m.header, "SeriesDate")
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
            for key in (
                "AcquisitionDate",
                "AcquisitionTime",
                "FrameReferenceTime",
                "ActualFrameDuration",
                "DecayFactor",
                "InstanceNumber",
                "EchoTime",
                "SOPInstanceUID",
            ):
                entry[key] = m.info.get(key)
            entry.update(
                RescaleSlope=m.slope,
                RescaleIntercept=m.intercept,
                ImagePositionPatient=[float(x) for x in m.position],
                file=str(m.path) if m.frame is None else f"{m.path}#frame{m.frame + 1}",
            )
            slice_headers.append(entry)
    meta["slice_headers"] = slice_headers
    meta["files"] = sorted({str(m.path) for m in flat})
    if axis is not None:
        meta["leading_axis"] = axis
        meta["frames"] = [
            {
                k: frame[0].info.get(k)
                for k in (
                    "FrameReferenceTime",
                    "ActualFrameDuration",
                    "AcquisitionDate",
                    "AcquisitionTime",
                    "EchoTime",
                    "EchoNumbers",
                    "TemporalPositionIdentifier",
                    "RepetitionTime",
                    "FlipAngle",
                    "DecayFactor",
                    "InversionTime",
                )
            }
            for frame in frames
        ]
        if axis == "echo":
            meta["EchoTime"] = [fr["EchoTime"] for fr in meta["frames"]]
    # echo times in ms, one per echo (the leading axis of an echo series; one value for a single echo),
    # for relaxometry: docs/methods/dicom-objects.md#echo-times
    echo_times = meta.get("EchoTime") if axis in (None, "echo") else None
    echo_list = echo_times if isinstance(echo_times, list) else [echo_times] if echo_times is not None else []
    try:
        echo_ms = [float(t) for t in echo_list]
    except (TypeError, ValueError):
        echo_ms = []
    if echo_ms and all(np.isfinite(echo_ms)):
        meta["echo_times_ms"] = echo_ms
    # the other sampling lists of quantitative MRI (variable flip angle, inversion recovery), one per frame
    # when they change along the leading axis; TR in ms (docs/methods/dicom-objects.md#echo-times)
    for key, out in (("FlipAngle", "flip_angles_deg"), ("InversionTime", "inversion_times_ms")):
        values = [fr.get(key) for fr in meta.get("frames", [])]
        try:
            values = [float(v) for v in values] if values and None not in values else []
        except (TypeError, ValueError):
            values = []
        if len(set(values)) > 1:
            meta[out] = values
    tr = meta.get("RepetitionTime")
    if isinstance(tr, (int, float)) and np.isfinite(tr):
        meta["repetition_time_ms"] = float(tr)
    meta["slice_normal_lps"] = normal.tolist()
    try:  # read any deferred large element now, so the header outlives the files (e.g. a temporary folder)
        for _ in head:
            pass
    except Exception:  # a malformed element is left as it is; its neighbours are read
        pass
    meta["dicom_header"] = head  # pydicom Dataset without pixel data: private tags stay readable
    name = (
        header_value(head, "SeriesDescription") or f"{dicom_modality} {header_value(head, 'SeriesNumber', '')}".strip()
    )
    unit = pixel_unit(head, dicom_modality)
    if "Units" not in head and str(meta.get("Units", "")).upper() in PET_UNITS:
        from pydicom.dataset import Dataset

        units = Dataset()
        units.Units = str(meta["Units"]).upper()
        if meta.get("SUVType"):
            units.SUVType = meta["SUVType"]
        unit = pixel_unit(units, dicom_modality)
    return Volume(data=data, affine=affine, modality=modality, unit=unit, metadata=meta, name=str(name))


def _is_derived_object(ds) -> bool:
    """A DICOM SEG (binary/fractional or label map): pixel data, but labels of another series."""
    sop = str(ds.get("SOPClassUID", "") or "")
    return (
        sop in ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7") or str(ds.get("Modality", "")) == "SEG"
    )
