"""NIfTI-1/2 via nibabel.

nibabel's array is ``(i, j, k[, t])``; a Volume holds ``([t,] k, j, i)`` with
the affine's columns reversed to match (see :mod:`napari_immunotrack.volume`).
Writing reverses both again, so a NIfTI read and written keeps exactly its
grid and affine.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..outputs import atomic_output, sidecar_path, write_json
from ..volume import Volume

_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def _sidecar_json(path: Path) -> dict:
    """A BIDS-style JSON beside the image (``x.nii.gz`` -> ``x.json``), if any."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
    side = path.with_name(stem + ".json")
    if side.exists():
        try:
            return json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{side}: the JSON sidecar cannot be read ({exc}); fix or remove it.") from None
    return {}


def read_nifti(path, modality: str | None = None, unit: str | None = None,
               allow_unknown_orientation: bool = False, lazy: bool = False) -> Volume:
    """Read a NIfTI-1/2 file into a Volume.

    The affine is the sform when its code is set, else the qform (nibabel's
    rule). A file with neither has no known position in the scanner: it is
    refused unless ``allow_unknown_orientation`` (then placed by its voxel
    sizes only, with a warning).

    A JSON sidecar of the same name (BIDS) is read into ``metadata``; its
    ``Modality`` and ``Units`` fields set the modality and unit.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the path.") from None
    except Exception as exc:  # nibabel raises many types for broken headers
        raise InputError(f"{path} is not a readable NIfTI file ({' '.join(str(exc).split())[:120]}); "
                         "check that the file is complete and not corrupt.") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path} is not a NIfTI-1/2 image; convert it to NIfTI first.")
    header = img.header
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    meta = {"source_path": str(path), "format": "nifti", "sform_code": sform_code, "qform_code": qform_code}
    if sform_code == 0 and qform_code == 0:
        message = (f"{path} has no valid orientation (sform and qform codes are 0), so its position in the "
                   "scanner is unknown; fix the header or load it with allow_unknown_orientation=True.")
        if not allow_unknown_orientation:
            raise InputError(message)
        warnings.warn(f"{path}: no orientation in the header; placed by voxel sizes only.", ImmunotrackWarning)
        meta["orientation_unknown"] = True
    affine_ijk = img.affine
    try:
        data = img.dataobj if lazy else np.asanyarray(img.dataobj)
        if lazy:
            import dask.array as da

            data = da.from_array(img.dataobj, chunks="auto")
    except Exception as exc:
        raise InputError(f"{path}: the image data cannot be read ({' '.join(str(exc).split())[:120]}); "
                         "the file is probably truncated.") from None
    if data.ndim == 2:
        raise InputError(f"{path} is a 2D image; a 3D volume is needed.")
    if data.ndim > 4:
        # 5D NIfTI (e.g. vectors): keep the first three spatial axes and flatten the rest
        data = data.reshape(data.shape[:3] + (-1,))
    if data.ndim == 4:
        data = data.transpose(3, 2, 1, 0)
    else:
        data = data.transpose(2, 1, 0)
    side = _sidecar_json(path)
    meta.update(side)
    if data.ndim == 4:
        meta.setdefault("leading_axis", "echo" if isinstance(side.get("EchoTime"), list) else "time")
    zooms = header.get_zooms()
    if any(z <= 0 for z in zooms[:3]):
        raise InputError(f"{path} has a zero or negative voxel size {zooms[:3]}; fix pixdim in the header.")
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    return Volume(
        data=data,
        affine=affine_ijk @ _REVERSE,
        modality=modality or side.get("Modality", "MR"),
        unit=unit or side.get("Units", "a.u."),
        metadata=meta,
        name=name,
    )


def write_nifti(volume: Volume, path, overwrite: bool = False, provenance: dict | None = None,
                labels: bool = False) -> Path:
    """Write ``volume`` to NIfTI-1 atomically, with exactly its grid and affine.

    Labels are stored as the smallest unsigned integer type that holds them.
    A provenance dictionary, if given, goes to ``<path>.provenance.json``.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: NIfTI output must end in .nii or .nii.gz.")
    data = volume.numpy()
    if labels:
        top = int(data.max()) if data.size else 0
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        data = data.astype(dtype)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    data = data.transpose(tuple(range(data.ndim))[::-1])  # ([t,] k, j, i) -> (i, j, k[, t])
    affine_ijk = volume.affine @ _REVERSE
    img = nib.Nifti1Image(data, affine_ijk)
    code = int(volume.metadata.get("sform_code") or 1)
    img.set_sform(affine_ijk, code=code)
    img.set_qform(affine_ijk, code=int(volume.metadata.get("qform_code") or code))
    img.header.set_xyzt_units("mm", "sec")
    if labels:
        img.header.set_intent("label")
    with atomic_output(path, overwrite) as tmp:
        nib.save(img, str(tmp))
        if provenance is not None:
            write_json(sidecar_path(path), provenance, overwrite=True)
    return path
