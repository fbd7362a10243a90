"""Bruker ParaVision (5.1, 6, 7, 360) reconstructed images: ``<scan>/pdata/<N>/2dseq`` + ``visu_pars``.

The parameter files are JCAMP-DX text read by :mod:`.jcamp`; no ParaVision
library is needed. What is read (docs/methods/scanner-formats.md#paravision):

- Pixels: ``2dseq`` holds ``VisuCoreFrameCount`` frames of ``VisuCoreSize``
  (x fastest), typed by ``VisuCoreWordType`` (``_8BIT_UNSGN_INT``,
  ``_16BIT_SGN_INT``, ``_32BIT_SGN_INT``, ``_32BIT_FLOAT``) in
  ``VisuCoreByteOrder`` (``littleEndian``/``bigEndian``); the reco file's
  RECO_wordtype/RECO_byte_order stand in when visu_pars lacks them.
  Stored values are scaled per frame: ``value = stored * VisuCoreDataSlope[f]
  + VisuCoreDataOffs[f]`` (float32 when any slope/offset is not 1/0).
- Frames: ``VisuFGOrderDesc`` lists the frame groups, first one fastest
  (FG_SLICE, FG_ECHO, FG_CYCLE, FG_MOVIE, ...). Slices of a 2D scan are placed
  by their own ``VisuCorePosition`` and sorted along the slice normal; a
  further group of more than one frame becomes the leading axis of a 4D
  volume (``"echo"`` for FG_ECHO, else ``"time"``) and any group beyond that
  splits the data into separate volumes.
- Slice packages (``VisuCoreSlicePacksSlices``, or, in PV 5.1, runs of slices
  sharing one orientation) become separate volumes.
- Geometry: ``VisuCoreOrientation`` (rows: the directions of the x, y and
  slice axes) and ``VisuCorePosition`` (centre of the first voxel of each
  frame) are in ParaVision's subject coordinate system, the DICOM patient
  system (x to the subject's left, y to its back, z to its head) after
  ParaVision has applied ``VisuSubjectPosition`` (Head/Foot x Supine/Prone/
  Left/Right); that is why ParaVision's own DICOM export copies them into
  ImagePositionPatient/ImageOrientationPatient. The pose is therefore not
  applied a second time here (the cause of the rotated rodents of other
  converters); world RAS is the subject system with x and y negated. For a
  quadruped (``VisuSubjectType``), "head" is cranial and "back" is dorsal, as
  in DICOM's quadruped patient system: R = the animal's right, A = ventral,
  S = cranial, the convention of this package's mouse phantom.

Metadata: ``format`` "paravision", ``source_path``, ``ParaVisionVersion``,
``SubjectType``, ``SubjectPosition``, ``SeriesDescription`` (protocol),
``EchoTime``/``RepetitionTime`` (ms), ``FlipAngle``, ``PatientWeight`` (kg),
``slice_package`` (index, count), ``frame_groups``, ``visu_pars`` (all
parameters), and for 4D ``leading_axis`` and ``frames``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .jcamp import read_jcamp

_WORD = {
    "_8BIT_UNSGN_INT": "u1",
    "_8BIT_SGN_INT": "i1",
    "_16BIT_SGN_INT": "i2",
    "_16BIT_UNSGN_INT": "u2",
    "_32BIT_SGN_INT": "i4",
    "_32BIT_UNSGN_INT": "u4",
    "_32BIT_FLOAT": "f4",
    "_64BIT_FLOAT": "f8",
}
_ORDER = {"littleendian": "<", "bigendian": ">"}
#: Subject positions ParaVision writes (VisuSubjectPosition).
SUBJECT_POSITIONS = tuple(f"{e}_{s}" for e in ("Head", "Foot") for s in ("Supine", "Prone", "Left", "Right"))
_SPACING_TOL = 0.01  # relative; slices further off a uniform grid are refused


def subject_from_magnet(position: str) -> np.ndarray:
    """3x3 matrix taking magnet-frame vectors to subject (patient, LPS) coordinates for a pose.

    The magnet frame is the patient frame of a head-first supine subject:
    x to its left, y down to its back, z into the bore towards its head.
    ``position`` is ParaVision's ``Head|Foot_Supine|Prone|Left|Right`` (Left:
    lying on its left side). See docs/methods/scanner-formats.md#poses.

    Parameters
    ----------
    position : str
        ``VisuSubjectPosition``, e.g. "Head_Supine", "Foot_Prone", "Head_Left".

    Returns
    -------
    (3, 3) ndarray
        A signed permutation: columns are the magnet x, y, z axes in subject LPS coordinates.

    Raises
    ------
    InputError
        An unknown position.

    Examples
    --------
    >>> subject_from_magnet("Head_Prone").diagonal().tolist()
    [-1.0, -1.0, 1.0]
    >>> subject_from_magnet("Foot_Supine").diagonal().tolist()
    [-1.0, 1.0, -1.0]
    """
    try:
        entry, side = str(position).split("_")
        base = {
            "Supine": np.eye(3),
            "Prone": np.diag([-1.0, -1.0, 1.0]),
            "Left": np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
            "Right": np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]),
        }[side]
        if entry not in ("Head", "Foot", "Tail"):
            raise KeyError(entry)
    except (KeyError, ValueError):
        raise InputError(
            f"unknown subject position {position!r}; expected one of {', '.join(SUBJECT_POSITIONS)}."
        ) from None
    return base @ np.diag([-1.0, 1.0, -1.0]) if entry != "Head" else base


def is_paravision(path) -> bool:
    """True for a ``2dseq`` file, a ``pdata/N`` folder or a ParaVision scan folder.

    A study folder (one holding a ``subject`` file and numbered scans) counts too.

    Parameters
    ----------
    path : str or Path
        Any path (only names and folder listings are looked at).

    Returns
    -------
    bool

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.simulate.scanner_files import write_paravision
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pdata = write_paravision(Path(tmp) / "5", np.zeros((2, 3, 4), np.int16), extent=(4.0, 3.0),
    ...                              orientation=np.eye(3), positions=[[0, 0, 0], [0, 0, 1.0]])
    ...     is_paravision(Path(tmp) / "5"), is_paravision(pdata / "2dseq"), is_paravision(tmp)
    (True, True, False)
    """
    p = Path(path)
    if p.is_file():
        return p.name == "2dseq"
    if not p.is_dir():
        return False
    if (p / "2dseq").exists() or (p / "visu_pars").exists():
        return True
    if (p / "pdata").is_dir() or ((p / "acqp").is_file() and (p / "method").is_file()):
        return True
    if p.name == "pdata" and (p.parent / "acqp").is_file():
        return True
    return bool(_study_scans(p))


def _study_scans(p: Path) -> list:
    """Numbered scan folders of a ParaVision study folder (one with a ``subject`` file), else []."""
    if not (p / "subject").is_file():
        return []
    try:
        return sorted(
            (d for d in p.iterdir() if d.is_dir() and d.name.isdigit() and (d / "acqp").is_file()),
            key=lambda d: int(d.name),
        )
    except OSError:
        return []


def _reco_folder(path) -> Path:
    p = Path(path)
    if p.is_file():
        return p.parent
    scans = [] if (p / "pdata").is_dir() or (p / "acqp").is_file() else _study_scans(p)
    if scans:
        listing = ", ".join(d.name for d in scans[:12]) + (" ..." if len(scans) > 12 else "")
        raise InputError(
            f"{p} is a ParaVision study with {len(scans)} scans ({listing}); open one scan folder, e.g. {scans[0]}."
        )
    if (p / "2dseq").exists() or (p / "visu_pars").exists():
        return p
    pdata = p if (p.name == "pdata" and not (p / "pdata").is_dir()) else p / "pdata"
    recos = (
        sorted((d for d in pdata.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
        if pdata.is_dir()
        else []
    )
    for d in recos:
        if (d / "2dseq").exists():
            return d
    if recos:
        return recos[0]
    raise InputError(
        f"{p} is a ParaVision scan without a reconstruction (no pdata/N/2dseq); reconstruct the scan "
        "in ParaVision (or copy its pdata folder too) and open the scan folder again."
    )


def _list(value, n=None, kind=float) -> list:
    if value is None:
        return []
    arr = np.atleast_1d(np.asarray(value, dtype=object)).ravel().tolist()
    try:
        return [kind(v) for v in arr]
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"a ParaVision parameter holds {value!r} where numbers are needed; the visu_pars file is "
            "damaged: copy the scan folder again."
        ) from None


def _dtype(vp: dict, reco: dict, where: Path) -> np.dtype:
    def first(value):
        if isinstance(value, np.ndarray):
            value = value.ravel().tolist()
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return value

    word = first(vp.get("VisuCoreWordType"))
    word = word if word is not None else first(reco.get("RECO_wordtype"))
    order = first(vp.get("VisuCoreByteOrder"))
    order = order if order is not None else (first(reco.get("RECO_byte_order")) or "littleEndian")
    code = _WORD.get(str(word))
    endian = _ORDER.get(str(order).lower())
    if code is None or endian is None:
        raise InputError(
            f"{where}: unknown ParaVision data type {word!r} / byte order {order!r} "
            "(VisuCoreWordType/VisuCoreByteOrder); the visu_pars file is damaged or not ParaVision's."
        )
    return np.dtype(endian + code)


def _frame_groups(vp: dict, frame_count: int, dim: int) -> list:
    """[(name, length)] fastest first; the frames of an undeclared layout are slices (2D) or time (3D)."""
    desc = vp.get("VisuFGOrderDesc")
    groups = []
    if isinstance(desc, tuple):
        desc = [desc]
    if isinstance(desc, list):
        for item in desc:
            if isinstance(item, tuple) and len(item) >= 2:
                try:
                    groups.append((str(item[1]), int(item[0])))
                except (TypeError, ValueError, OverflowError):
                    groups = []
                    break
    if not groups or math.prod(max(n, 1) for _, n in groups) != frame_count or any(n < 1 for _, n in groups):
        groups = [("FG_SLICE" if dim == 2 else "FG_CYCLE", frame_count)]
    return groups


def _packages(vp: dict, positions: np.ndarray, orients: np.ndarray, n_slices: int) -> list:
    """[(first, count)] over the slice group."""
    packs = vp.get("VisuCoreSlicePacksSlices")
    if packs is not None:
        items = packs if isinstance(packs, list) else [packs]
        out = []
        try:
            for item in items:
                first, count = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (None, None)
                out.append((first, count))
        except (TypeError, ValueError, IndexError, OverflowError):
            out = []
        if out and all(c is not None and c > 0 for _, c in out) and sum(c for _, c in out) == n_slices:
            start, result = 0, []
            for _, count in out:  # the counts are authoritative; packages follow each other
                result.append((start, count))
                start += count
            return result
    if len(orients) != n_slices:
        return [(0, n_slices)]
    result, start = [], 0
    for i in range(1, n_slices + 1):
        if i == n_slices or not np.allclose(orients[i], orients[start], atol=1e-5):
            result.append((start, i - start))
            start = i
    return result


def _geometry(vp: dict, where: Path):
    try:
        pos = np.asarray(_list(vp.get("VisuCorePosition")), float).reshape(-1, 3)
        ori = np.asarray(_list(vp.get("VisuCoreOrientation")), float).reshape(-1, 3, 3)
    except ValueError:
        raise InputError(
            f"{where}: VisuCorePosition/VisuCoreOrientation are not 3-vectors and 3x3 matrices; "
            "the visu_pars file is damaged: copy the scan folder again."
        ) from None
    if len(pos) == 0 or len(ori) == 0:
        raise InputError(
            f"{where}: visu_pars has no VisuCorePosition/VisuCoreOrientation, so the image cannot be "
            "placed in space; export the scan again from ParaVision (PV 5.1 or later)."
        )
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(ori))):
        raise InputError(f"{where}: VisuCorePosition/VisuCoreOrientation hold non-finite values; the file is damaged.")
    for m in ori:
        if not np.allclose(m @ m.T, np.eye(3), atol=1e-3):
            raise InputError(f"{where}: VisuCoreOrientation is not a rotation matrix; the visu_pars file is damaged.")
    return pos, ori


def _affine_lps(origin, orient, steps_xyz, slice_step=None) -> np.ndarray:
    """Affine of array axes (slice, y, x) in the subject (LPS) system."""
    a = np.eye(4)
    a[:3, 2] = orient[0] * steps_xyz[0]
    a[:3, 1] = orient[1] * steps_xyz[1]
    a[:3, 0] = slice_step if slice_step is not None else orient[2] * steps_xyz[2]
    a[:3, 3] = origin
    return a


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_paravision(path, package: int | None = None) -> list[Volume]:
    """Volumes of a ParaVision scan folder, ``pdata/N`` folder or ``2dseq`` file.

    Parameters
    ----------
    path : str or Path
        Scan folder (its lowest-numbered reconstruction is read), ``pdata/N``
        folder or the ``2dseq`` file.
    package : int, optional
        Only this slice package (0-based) of a multi-package scan.

    Returns
    -------
    list of Volume
        One per slice package (and per index of any frame group beyond the
        first non-slice one), modality "MR".

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.simulate.scanner_files import write_paravision
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pdata = write_paravision(tmp.name + "/5", np.ones((3, 4, 6)), extent=(6.0, 4.0),
    ...                          orientation=np.eye(3), positions=[[0, 0, z] for z in (0, 1, 2)])
    >>> v = read_paravision(pdata.parent.parent)[0]
    >>> v.spatial_shape, v.orientation(), v.metadata["SubjectPosition"]
    ((3, 4, 6), 'SPL', 'Head_Prone')
    >>> tmp.cleanup()
    """
    folder = _reco_folder(path)
    seq = folder / "2dseq"
    vp_file = folder / "visu_pars"
    if not vp_file.exists():
        raise InputError(
            f"{folder} has no visu_pars (the ParaVision image parameters), so 2dseq cannot be read; "
            "copy the complete pdata folder (2dseq, visu_pars, reco) from the scanner."
        )
    if not seq.exists():
        raise InputError(f"{folder} has visu_pars but no 2dseq (the image data); copy the complete pdata folder.")
    vp = read_jcamp(vp_file)
    reco = read_jcamp(folder / "reco") if (folder / "reco").exists() else {}
    try:
        dim = int(vp.get("VisuCoreDim", 0))
        size = [int(v) for v in _list(vp.get("VisuCoreSize"))]
        extent = _list(vp.get("VisuCoreExtent"))
        frame_count = int(vp.get("VisuCoreFrameCount", 0))
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"{vp_file}: VisuCoreDim/Size/Extent/FrameCount are missing or not numbers; the file is "
            "damaged: copy the scan folder again."
        ) from None
    desc = vp.get("VisuCoreDimDesc")
    if desc is not None and any(str(d) != "spatial" for d in np.atleast_1d(np.asarray(desc, dtype=object)).ravel()):
        raise InputError(
            f"{folder} is a spectroscopic ParaVision dataset (VisuCoreDimDesc {desc}), not an image; "
            "give an imaging scan."
        )
    if (
        dim not in (2, 3)
        or len(size) != dim
        or len(extent) != dim
        or min(size) < 1
        or (frame_count < 1 and "VisuCoreFrameCount" in vp)
    ):
        raise InputError(
            f"{vp_file}: VisuCoreDim {dim} with VisuCoreSize {size} and VisuCoreExtent {extent} does not "
            "describe a 2D or 3D image; the file is damaged or not an image."
        )
    if not all(np.isfinite(e) and e > 0 for e in extent):
        raise InputError(
            f"{vp_file}: VisuCoreExtent {extent} (field of view, mm) must be positive; the file is damaged."
        )
    dtype = _dtype(vp, reco, vp_file)
    frame_voxels = math.prod(size)
    if "VisuCoreFrameCount" not in vp:  # not written by some exporters: the frames the file holds
        frame_count = max(1, seq.stat().st_size // max(frame_voxels * dtype.itemsize, 1))
    need = frame_count * frame_voxels * dtype.itemsize
    have = seq.stat().st_size
    if have != need:
        raise InputError(
            f"{seq} holds {have} bytes where visu_pars describes {need} ({frame_count} frame(s) of "
            f"{'x'.join(map(str, size))} {dtype.name}); the file is "
            f"{'truncated' if have < need else 'longer than described'}: copy the scan folder again."
        )
    raw = np.memmap(seq, dtype=dtype, mode="r", shape=(frame_count,) + tuple(reversed(size)))
    slopes = np.asarray(_list(vp.get("VisuCoreDataSlope")) or [1.0], float)
    offsets = np.asarray(_list(vp.get("VisuCoreDataOffs")) or [0.0], float)
    for name, arr in (("VisuCoreDataSlope", slopes), ("VisuCoreDataOffs", offsets)):
        if arr.size not in (1, frame_count) or not np.all(np.isfinite(arr)):
            raise InputError(
                f"{vp_file}: {name} has {arr.size} value(s) for {frame_count} frames (or non-finite "
                "ones); the file is damaged."
            )
    slopes = np.broadcast_to(slopes, (frame_count,))
    offsets = np.broadcast_to(offsets, (frame_count,))
    steps = [e / n for e, n in zip(extent, size)]
    groups = _frame_groups(vp, frame_count, dim)
    lengths = [n for _, n in groups]
    names = [g for g, _ in groups]
    pos, ori = _geometry(vp, vp_file)
    slice_g = names.index("FG_SLICE") if (dim == 2 and "FG_SLICE" in names) else None
    if dim == 2 and slice_g is None:
        groups.insert(0, ("FG_SLICE", 1))
        lengths.insert(0, 1)
        names.insert(0, "FG_SLICE")
        slice_g = 0
    n_slices = lengths[slice_g] if slice_g is not None else 1
    # geometry per slice (2D) or per volume (3D)
    if str(vp.get("VisuCoreDiskSliceOrder", "")).lower() == "disk_reverse_slice_order" and dim == 2 and len(pos) > 1:
        pos, ori = pos[::-1], ori[::-1]

    def geometry_of(slice_index: int, frame: int):
        if len(pos) == frame_count and len(ori) in (1, frame_count):
            return pos[frame], ori[frame if len(ori) > 1 else 0]
        if len(pos) == n_slices:
            return pos[slice_index], ori[slice_index if len(ori) == n_slices else 0]
        if len(pos) == 1:
            return pos[0], ori[0]
        raise InputError(
            f"{vp_file}: VisuCorePosition has {len(pos)} entries for {n_slices} slices and "
            f"{frame_count} frames; the frames cannot be placed."
        )

    strides = np.cumprod([1] + lengths[:-1])
    other = [i for i in range(len(groups)) if i != slice_g]
    # real/imaginary parts (FG_COMPLEX) are never a time axis: they become separate volumes
    lead = next((i for i in other if lengths[i] > 1 and names[i] != "FG_COMPLEX"), None)
    split = [i for i in other if lengths[i] > 1 and i != lead]
    leading_axis = None if lead is None else ("echo" if names[lead] == "FG_ECHO" else "time")

    slice_geo = [geometry_of(s, s * (strides[slice_g] if slice_g is not None else 0)) for s in range(n_slices)]
    s_ori = np.array([g[1] for g in slice_geo])
    s_pos = np.array([g[0] for g in slice_geo])
    packages = _packages(vp, s_pos, s_ori, n_slices) if dim == 2 else [(0, 1)]
    if package is not None:
        if not 0 <= int(package) < len(packages):
            raise InputError(
                f"{folder} has {len(packages)} slice package(s); package={package} does not exist "
                f"(use 0 to {len(packages) - 1})."
            )
        chosen = [int(package)]
    else:
        chosen = list(range(len(packages)))
    meta_common = _metadata(vp, folder, groups)
    protocol = meta_common.get("SeriesDescription") or "ParaVision"
    split_combos = [()] if not split else [tuple(ix) for ix in np.ndindex(*[lengths[i] for i in split])]
    volumes = []
    for pk in chosen:
        first, count = packages[pk]
        slices = list(range(first, first + count))
        if dim == 2:
            normal = s_ori[first][2]
            order = sorted(slices, key=lambda s: float(np.dot(s_pos[s], normal)))
            p0 = s_pos[order[0]]
            if count > 1:
                step = (s_pos[order[-1]] - p0) / (count - 1)
                gaps = np.linalg.norm(np.diff(s_pos[order], axis=0) - step, axis=1)
                if np.linalg.norm(step) < 1e-6 or gaps.max() > _SPACING_TOL * np.linalg.norm(step) + 1e-4:
                    raise InputError(
                        f"{folder}: the slices of package {pk + 1} are not evenly spaced (or two share a "
                        "position); they cannot form one volume. Open a scan with uniform slices."
                    )
            else:
                thick = _list(vp.get("VisuCoreFrameThickness")) or [1.0]
                step = s_ori[first][2] * (thick[0] if thick[0] > 0 else 1.0)
            affine = _LPS_TO_RAS @ _affine_lps(p0, s_ori[first], steps, slice_step=step)
        else:
            order = [0]
            p0, o0 = geometry_of(0, 0)
            affine = _LPS_TO_RAS @ _affine_lps(p0, o0, steps)
        for combo in split_combos:
            base = sum(int(strides[g]) * int(i) for g, i in zip(split, combo))
            n_lead = lengths[lead] if lead is not None else 1
            frames = np.empty((n_lead, len(order)), dtype=np.int64)
            for t in range(n_lead):
                for k, s in enumerate(order):
                    frames[t, k] = (
                        base
                        + (int(strides[lead]) * t if lead is not None else 0)
                        + (int(strides[slice_g]) * s if slice_g is not None else 0)
                    )
            flat = frames.ravel()
            if dim == 2:
                block = raw[flat]  # (n, y, x)
            else:
                block = raw[flat]  # (n, z, y, x)
            scale_needed = np.any(slopes[flat] != 1.0) or np.any(offsets[flat] != 0.0)
            if scale_needed:
                shape = (-1,) + (1,) * (block.ndim - 1)
                block = block.astype(np.float32) * slopes[flat].astype(np.float32).reshape(shape) + offsets[
                    flat
                ].astype(np.float32).reshape(shape)
            else:
                block = np.ascontiguousarray(block)
            if dim == 2:
                data = block.reshape((n_lead, len(order)) + block.shape[1:])
            else:
                data = block  # (n_lead, z, y, x)
            if lead is None:
                data = data[0]
            if not scale_needed and data.dtype.byteorder not in ("=", "|"):
                data = data.astype(data.dtype.newbyteorder("="))
            meta = dict(meta_common)
            meta["slice_package"] = [pk, len(packages)]
            name = protocol
            if len(packages) > 1:
                name += f" package {pk + 1}"
            for g, i in zip(split, combo):
                meta[names[g]] = int(i)
                name += f" {names[g][3:].lower()} {int(i) + 1}"
            if lead is not None:
                meta["leading_axis"] = leading_axis
                echo_times = meta_common.get("EchoTime")
                frames_meta = []
                for t in range(lengths[lead]):
                    entry = {"index": t, "group": names[lead]}
                    if leading_axis == "echo" and isinstance(echo_times, list) and len(echo_times) == lengths[lead]:
                        entry["EchoTime"] = echo_times[t]
                    frames_meta.append(entry)
                meta["frames"] = frames_meta
            if isinstance(meta.get("EchoTime"), list) and len(meta["EchoTime"]) == 1:
                meta["EchoTime"] = meta["EchoTime"][0]
            volumes.append(
                Volume(data=data, affine=affine, modality="MR", unit=meta.get("unit", "a.u."), metadata=meta, name=name)
            )
    return volumes


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _metadata(vp: dict, folder: Path, groups) -> dict:
    meta = {
        "format": "paravision",
        "source_path": str(folder / "2dseq"),
        "Modality": "MR",
        "frame_groups": [list(g) for g in groups],
    }
    version = _text(vp.get("VisuCreatorVersion")) or _text(vp.get("VisuVersion"))
    if version:
        meta["ParaVisionVersion"] = version
    protocol = _text(vp.get("VisuAcquisitionProtocol")) or _text(vp.get("VisuSeriesComment"))
    if protocol:
        meta["SeriesDescription"] = protocol
    stype = _text(vp.get("VisuSubjectType"))
    spos = _text(vp.get("VisuSubjectPosition"))
    meta["SubjectType"] = stype or "Biped (not stated; PV 5.1 writes none)"
    if spos:
        meta["SubjectPosition"] = spos
    for key, out in (
        ("VisuAcqRepetitionTime", "RepetitionTime"),
        ("VisuAcqFlipAngle", "FlipAngle"),
        ("VisuSubjectWeight", "PatientWeight"),
    ):
        vals = _safe_floats(vp.get(key))
        if vals:
            meta[out] = vals[0]
    te = _safe_floats(vp.get("VisuAcqEchoTime"))
    if te:
        meta["EchoTime"] = te
    unit = _text(vp.get("VisuCoreDataUnits"))
    if unit and re.fullmatch(r"[\w/%.^ -]{1,20}", unit):
        meta["unit"] = unit
    for key in ("VisuSubjectId", "VisuStudyId", "VisuExperimentNumber", "VisuProcessingNumber", "VisuAcqDate"):
        text = _text(vp.get(key))
        if text:
            meta[key] = text
    meta["visu_pars"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vp.items()}
    return meta


def _safe_floats(value) -> list:
    try:
        vals = _list(value)
    except InputError:
        return []
    return [v for v in vals if np.isfinite(v)]
