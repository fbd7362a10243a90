"""NIfTI-1/2 via nibabel.

nibabel's array is ``(i, j, k[, t])``; a Volume holds ``([t,] k, j, i)`` with
the affine's columns reversed to match (see :mod:`napari_immunotrack.volume`),
so ``volume.index_to_world([k, j, i]) == img.affine @ [i, j, k, 1]``.
Writing reverses both again, so a NIfTI read and written keeps exactly its
grid and affine.

Which affine
    nibabel's rule: the sform when ``sform_code > 0``, else the qform when
    ``qform_code > 0``. With both codes 0 the position in the scanner is
    unknown and the file is refused unless ``allow_unknown_orientation=True``.
Spatial unit
    ``xyzt_units`` in metres or micrometres is converted to millimetres;
    "unknown" (0) is taken as millimetres, as every NIfTI tool does.
4D
    The fourth axis becomes the leading axis: echoes when the BIDS sidecar
    lists several ``EchoTime`` values, else time frames. A trailing axis of
    length 1 is dropped. 5D files (vectors) put the components first.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..affines import REVERSE_AXES, reverse_index_order
from ..errors import ImmunotrackWarning, InputError, library_reason
from ..outputs import atomic_output, write_sidecar
from ..volume import Volume, as_labels
from . import captured_log

#: Old private name of :data:`napari_immunotrack.affines.REVERSE_AXES` (kept for old imports).
_REVERSE = REVERSE_AXES
_SPACE_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}
_TIME_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _compression_mismatch(path: Path) -> str:
    """What is wrong when the name and the gzip compression of a NIfTI disagree ('' if they agree).

    Common user mistakes nibabel reports only as "cannot work out file type" or "not a gzip
    file": a .nii.gz renamed .nii, a .nii renamed .nii.gz, a .nii.gz compressed a second time.
    """
    import gzip
    import zlib

    gz_magic = b"\x1f\x8b"
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
        inner = b""
        if head[:2] == gz_magic:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(352)
    except (OSError, EOFError, zlib.error):  # a damaged gzip stream: not a naming mistake
        return ""

    # a NIfTI-1 header says 348 in its first 4 bytes, a NIfTI-2 header 540 (either byte order)
    def is_nifti(block: bytes) -> bool:
        return block[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c", b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")

    gzipped_name = path.name.lower().endswith(".gz")
    if head[:2] == gz_magic and inner[:2] == gz_magic:
        return "is gzip-compressed twice; decompress it once (e.g. gunzip) and name the result .nii.gz."
    if head[:2] == gz_magic and not gzipped_name and is_nifti(inner):
        return "is gzip-compressed but its name ends in .nii; rename it to .nii.gz."
    if head[:2] != gz_magic and gzipped_name and is_nifti(head):
        return "is not gzip-compressed although its name ends in .gz; rename it to .nii."
    return ""


def _sidecar_json(path: Path) -> dict:
    """A BIDS-style JSON beside the image (``x.nii.gz`` -> ``x.json``), if any."""
    side = path.with_name(_stem(path) + ".json")
    if not side.exists():
        return {}
    try:
        content = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: the JSON sidecar cannot be read ({_short(exc)}); fix or remove it.") from None
    if not isinstance(content, dict):
        raise InputError(f"{side}: the JSON sidecar is not a JSON object (BIDS key/value pairs); fix or remove it.")
    return content


def _choose_affine(header, path: Path, allow_unknown_orientation: bool):
    """(affine_ijk, source) by the sform/qform codes; refuse a file with neither."""
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        return header.get_sform(), "sform"
    if qform_code > 0:
        return header.get_qform(), "qform"
    if not allow_unknown_orientation:
        raise InputError(
            f"{path} has no valid orientation (sform and qform codes are 0), so its position in the scanner "
            "is unknown; fix the header or load it with allow_unknown_orientation=True."
        )
    warnings.warn(
        f"{path}: no orientation in the header (sform and qform codes 0); placed by its voxel sizes "
        "only, so its position relative to other images is unknown.",
        ImmunotrackWarning,
        stacklevel=3,
    )
    return header.get_base_affine(), "voxel sizes only (orientation unknown)"


def read_nifti(
    path,
    modality: str | None = None,
    unit: str | None = None,
    allow_unknown_orientation: bool = False,
    lazy: bool = False,
) -> Volume:
    """Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) into a Volume.

    Parameters
    ----------
    path : str or Path
        The file.
    modality, unit : str, optional
        Override the modality ("MR" by default) and the unit of the values
        ("a.u." by default). A BIDS JSON sidecar of the same name
        (``x.nii.gz`` -> ``x.json``) is read into ``metadata``; its
        ``Modality`` and ``Units`` fields set them otherwise.
    allow_unknown_orientation : bool
        Accept a file whose sform and qform codes are both 0 (placed by its
        voxel sizes only, with an :class:`ImmunotrackWarning`).
    lazy : bool
        Return a dask array instead of reading the data.

    Returns
    -------
    Volume
        ``data`` is ``([t,] k, j, i)``; ``metadata`` holds ``source_path``,
        ``format``, ``sform_code``, ``qform_code``, ``affine_source``,
        ``leading_axis`` (4D), ``frame_interval_s`` (4D time series) and the
        sidecar's keys.

    Examples
    --------
    >>> import os, nibabel as nib, numpy as np
    >>> from nibabel.testing import data_path
    >>> f = os.path.join(data_path, "anatomical.nii")
    >>> v = read_nifti(f)
    >>> v.spatial_shape, v.orientation()
    ((25, 41, 33), 'SAL')
    >>> np.allclose(v.index_to_world([[3, 2, 1]])[0], (nib.load(f).affine @ [1, 2, 3, 1])[:3])
    True
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a .nii or .nii.gz file.")
    try:
        with captured_log("nibabel.global") as repairs:  # nibabel logs its header repairs on stderr
            img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken headers
        mismatch = _compression_mismatch(path)
        if mismatch:
            raise InputError(f"{path} {mismatch}") from None
        raise InputError(
            f"{path} is not a readable NIfTI file ({library_reason(exc, path)}); check that the file is "
            "complete and not corrupt."
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) or isinstance(img, nib.Cifti2Image):
        raise InputError(f"{path} is not a NIfTI-1/2 volume ({type(img).__name__}); convert it to NIfTI first.")
    header = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise InputError(
            f"{path} is a {len(shape)}D image {shape}; a 3D volume is needed (save single slices as 3D with one slice)."
        )
    if any(s < 1 for s in shape):
        raise InputError(f"{path} is empty (shape {shape}); the header is broken: export the image again.")
    zooms = [float(z) for z in header.get_zooms()]
    if any(not np.isfinite(z) or z <= 0 for z in zooms[:3]):
        raise InputError(f"{path} has a zero, negative or invalid voxel size {zooms[:3]}; fix pixdim in the header.")
    affine_ijk, affine_source = _choose_affine(header, path, allow_unknown_orientation)
    if affine_source != "sform" and any("pixdim" in m and "non-zero" in m for m in repairs):
        # nibabel set the zero voxel sizes to 1 mm: a guess the placement would rest on
        raise InputError(
            f"{path} has a zero voxel size in pixdim and no sform, so its geometry is unknown; "
            "fix pixdim in the header."
        )
    minimum = int(getattr(type(header), "single_vox_offset", 0))
    offset = getattr(img.dataobj, "offset", minimum)  # where nibabel will read the voxels from
    if offset < minimum:
        raise InputError(
            f"{path}: vox_offset {offset} points inside the header (a .nii file's "
            f"voxels start at byte {minimum} or later), so the voxels would be read from the header; "
            "the file was written wrongly: export it again."
        )
    if not np.all(np.isfinite(affine_ijk)):
        raise InputError(
            f"{path} has non-finite values in its {affine_source}; the file's geometry is broken: "
            "fix the header or export the image again."
        )
    try:
        space_unit, time_unit = header.get_xyzt_units()
    except KeyError:  # a unit code NIfTI does not define (nibabel raises KeyError)
        raw = int(header["xyzt_units"])
        if raw % 8 not in (0, 1, 2, 3):
            raise InputError(
                f"{path} has an invalid spatial unit code {raw % 8} (xyzt_units {raw}); "
                "fix the header (2 = millimetres)."
            ) from None
        space_unit, time_unit = nib.nifti1.unit_codes.label[raw % 8], "unknown"
    to_mm = _SPACE_TO_MM.get(space_unit, 1.0)
    if to_mm != 1.0:
        # the affine is in the header's unit: scale rotation/zoom and translation alike
        affine_ijk = affine_ijk.copy()
        affine_ijk[:3, :] *= to_mm
    meta = {
        "source_path": str(path),
        "format": "nifti2" if isinstance(img, nib.Nifti2Image) else "nifti1",
        "sform_code": int(header["sform_code"]),
        "qform_code": int(header["qform_code"]),
        "affine_source": affine_source,
        "spatial_unit_in_file": space_unit,
    }
    if affine_source.startswith("voxel"):
        meta["orientation_unknown"] = True
    descrip = header["descrip"].item()
    if isinstance(descrip, bytes):
        descrip = descrip.decode("latin-1").strip("\x00 ")
    if descrip:
        meta["descrip"] = descrip
    if img.get_data_dtype().fields is not None:
        raise InputError(
            f"{path} holds RGB or structured voxels ({img.get_data_dtype()}); convert it to a grey-scale volume first."
        )
    try:
        if lazy:
            import dask.array as da

            data = da.from_array(img.dataobj, chunks="auto")
        else:
            data = np.asanyarray(img.dataobj)
            if not data.dtype.isnative:  # big-endian files: napari and vispy want native order
                data = data.astype(data.dtype.newbyteorder("="))
    except Exception as exc:
        raise InputError(
            f"{path}: the image data cannot be read ({library_reason(exc, path)}); "
            "the file is probably truncated or corrupt: copy or export it again."
        ) from None
    # drop trailing axes of length 1 (x, y, z, 1) -> (x, y, z)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    side = _sidecar_json(path)
    if data.ndim > 4:
        # 5D NIfTI (vectors, tensors): components become the leading axis
        data = data.reshape(data.shape[:3] + (-1,))
        meta["leading_axis"] = "component"
    if data.ndim == 4:
        data = data.transpose(3, 2, 1, 0)
        echo = side.get("EchoTime")
        meta.setdefault("leading_axis", "echo" if isinstance(echo, list) and len(echo) == data.shape[0] else "time")
        if meta["leading_axis"] == "time" and len(zooms) > 3 and zooms[3] > 0 and time_unit in _TIME_TO_S:
            meta["frame_interval_s"] = zooms[3] * _TIME_TO_S[time_unit]
    else:
        data = data.transpose(2, 1, 0)
    meta.update(side)
    if data.ndim == 4:  # BIDS lists (seconds) under unit-explicit keys for the relaxometry fits
        for key, out, to_unit in (
            ("EchoTime", "echo_times_ms", 1000.0),
            ("InversionTime", "inversion_times_ms", 1000.0),
            ("FlipAngle", "flip_angles_deg", 1.0),
        ):
            values = side.get(key)
            if (
                isinstance(values, list)
                and len(values) == data.shape[0]
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            ):
                meta[out] = [float(v) * to_unit for v in values]
    for message in repairs:  # shown only for a file that opens; a refused file gets its one error line
        warnings.warn(f"{path}: header repaired on reading: {message}", ImmunotrackWarning, stacklevel=2)
    try:
        return Volume(
            data=data,
            affine=reverse_index_order(affine_ijk),
            modality=modality or side.get("Modality", "MR"),
            unit=unit or side.get("Units", "a.u."),
            metadata=meta,
            name=_stem(path),
        )
    except InputError as exc:  # e.g. a degenerate sform: say which file and which affine
        raise InputError(f"{path} ({affine_source}): {exc}") from None


def _nifti_dtype(data: np.ndarray, labels: bool) -> np.dtype:
    """A data type NIfTI tools read: small unsigned ints for labels, float32 for float64 images."""
    if labels:
        top = int(data.max()) if data.size else 0
        return np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if data.dtype == np.float16:
        return np.dtype(np.float32)
    if data.dtype == np.float64:
        # float32 halves the file; keep float64 only when it would lose values
        # (e.g. scaled integers read from a NIfTI), so a round trip is exact
        with np.errstate(over="ignore", invalid="ignore"):
            lossless = np.array_equal(data.astype(np.float32), data, equal_nan=True)
        return np.dtype(np.float32 if lossless else np.float64)
    if data.dtype in (np.int64, np.uint64):
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        return np.dtype(np.int32) if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max else data.dtype
    if np.iscomplexobj(data):
        return np.dtype(np.complex64)
    return data.dtype


def write_nifti(
    volume: Volume,
    path,
    overwrite: bool = False,
    provenance: dict | None = None,
    labels: bool = False,
    description: str | None = None,
) -> Path:
    """Write ``volume`` to NIfTI atomically, with exactly its grid and affine.

    Parameters
    ----------
    volume : Volume
        3D or 4D. The affine is written as both sform and qform (codes from
        the source file's ``metadata`` when present, else 1 = scanner), in mm.
    path : str or Path
        ``.nii`` or ``.nii.gz``. NIfTI-2 is used only when a dimension
        exceeds NIfTI-1's limit of 32767.
    overwrite : bool
        Replace an existing file (refused otherwise).
    provenance : dict, optional
        Written to ``<path>.provenance.json``.
        Values are stored as they are (float64 as float32 when that loses
        nothing; bool as uint8; float16 as float32), without scaling.
    labels : bool
        Check that the values are whole non-negative numbers
        (:func:`~napari_immunotrack.volume.as_labels`) and store them as the
        smallest unsigned integer type that holds them, with the NIfTI
        intent "label".
    description : str, optional
        Written to the header's ``descrip`` field (at most 79 characters
        kept), e.g. to mark a result as unconfirmed.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        A wrong file ending, or (``labels``) values that are not whole non-negative numbers;
        OutputExistsError when ``path`` exists and not ``overwrite``.

    Examples
    --------
    >>> import numpy as np, tempfile, nibabel as nib
    >>> from napari_immunotrack.volume import Volume
    >>> seg = Volume(np.zeros((4, 5, 6), np.uint8), np.diag([2.0, 1.0, 0.5, 1.0]), unit="label")
    >>> seg.data[1, 2, 3] = 7
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     img = nib.load(write_nifti(seg, Path(tmp) / "seg.nii.gz", labels=True))
    ...     img.shape, img.header.get_intent()[0], int(np.asarray(img.dataobj)[3, 2, 1])   # (i, j, k) = reversed
    ((6, 5, 4), 'label', 7)
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: NIfTI output must end in .nii or .nii.gz.")
    from ..outputs import check_output

    check_output(path, overwrite)  # fail before computing a dask volume
    if labels:
        volume = as_labels(volume, name=volume.name or "labels")
    data = volume.numpy()
    data = data.astype(_nifti_dtype(data, labels), copy=False)
    data = data.transpose(tuple(range(data.ndim))[::-1])  # ([t,] k, j, i) -> (i, j, k[, t])
    affine_ijk = reverse_index_order(volume.affine)
    image_class = nib.Nifti2Image if max(data.shape) > 32767 else nib.Nifti1Image
    img = image_class(data, affine_ijk, dtype=data.dtype)
    code = int(volume.metadata.get("sform_code") or 0)
    code = code if code > 0 else 1
    qcode = int(volume.metadata.get("qform_code") or 0)
    img.set_sform(affine_ijk, code=code)
    img.set_qform(affine_ijk, code=qcode if qcode > 0 else code)
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4 and volume.metadata.get("frame_interval_s"):
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (float(volume.metadata["frame_interval_s"]),))
    if description:
        img.header["descrip"] = str(description)[:79].encode("latin-1", "replace")
    if labels:
        img.header.set_intent("label")
        img.header["cal_min"], img.header["cal_max"] = 0, float(data.max()) if data.size else 0
    with atomic_output(path, overwrite) as tmp:
        nib.save(img, str(tmp))
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path
