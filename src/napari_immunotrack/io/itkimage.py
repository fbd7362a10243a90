"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) images, read with SimpleITK.

SimpleITK gives every image an origin, spacing and direction in ITK's LPS
world: the NRRD reader turns the file's ``space`` (right-anterior-superior,
left-posterior-superior, scanner-xyz, ...) into LPS, MetaImage's
``TransformMatrix``/``Offset`` are LPS already. This module turns that into
the package's RAS affine (x and y negated) with the array order
``(k, j, i)``: index ``(i, j, k)`` -> ``origin + D diag(spacing) (i, j, k)``.
A 4D scalar image becomes a 4D Volume (leading axis "time"); a vector image
(several components per voxel) a 4D Volume with leading axis "channel".
See docs/methods/scanner-formats.md#nrrd-metaimage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, library_reason
from ..volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_itk_image(path) -> Volume:
    """A NRRD or MetaImage file as a Volume in RAS millimetres.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Volume
        modality "OT" (NRRD and MetaImage carry no modality), unit "a.u.".

    Examples
    --------
    >>> import tempfile, os, numpy as np, SimpleITK as sitk
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "x.nrrd")
    >>> image = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32)); image.SetSpacing((0.5, 0.5, 2.0))
    >>> sitk.WriteImage(image, path)
    >>> v = read_itk_image(path)
    >>> v.spatial_shape, v.spacing.tolist(), v.orientation()
    ((2, 3, 4), [2.0, 0.5, 0.5], 'SPL')
    >>> tmp.cleanup()
    """
    import SimpleITK as sitk

    p = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        n_vox = int(np.prod(reader.GetSize()))
        if n_vox > 2**31:
            raise InputError(f"{p} declares {n_vox} voxels ({list(reader.GetSize())}); that is not a plausible image.")
        image = reader.Execute()
    except RuntimeError as exc:
        text = library_reason(exc, p, limit=400)  # without the path our message starts with
        hint = text[text.rfind(":") + 1 :].strip()[:100] if ":" in text else text[:100]
        raise InputError(
            f"{p} cannot be read as {'NRRD' if p.suffix.lower() in ('.nrrd', '.nhdr') else 'MetaImage'} "
            f"({hint}); the file (or its detached data file) is damaged or missing."
        ) from None
    if dim not in (2, 3, 4):
        raise InputError(f"{p} is a {dim}D image; give a 3D (or 3D + time) image.")
    if dim == 2:
        raise InputError(f"{p} is a single 2D slice without a slice position; give a 3D volume.")
    spacing = np.array(image.GetSpacing(), float)
    origin = np.array(image.GetOrigin(), float)
    direction = np.array(image.GetDirection(), float).reshape(dim, dim)
    if not (
        np.all(np.isfinite(spacing))
        and np.all(spacing > 0)
        and np.all(np.isfinite(origin))
        and np.all(np.isfinite(direction))
    ):
        raise InputError(f"{p}: spacing {spacing.tolist()} / origin / direction are not valid numbers; fix the header.")
    data = sitk.GetArrayViewFromImage(image)  # (k, j, i[, components]) or (t, k, j, i)
    meta = {"format": "nrrd" if p.suffix.lower() in (".nrrd", ".nhdr") else "metaimage", "source_path": str(p)}
    sp3, dir3, org3 = spacing[:3], direction[:3, :3], origin[:3]
    if dim == 4:
        meta["leading_axis"] = "time"
        meta["time_spacing"] = float(spacing[3])
        meta["frames"] = [{"index": i} for i in range(data.shape[0])]
    if image.GetNumberOfComponentsPerPixel() > 1:
        if dim == 4:
            raise InputError(f"{p} is a 4D image of vectors; give scalar volumes.")
        data = np.moveaxis(data, -1, 0)
        meta["leading_axis"] = "channel"
        meta["channel_names"] = [f"component {c + 1}" for c in range(data.shape[0])]
    lps = np.eye(4)
    for col, axis in enumerate((2, 1, 0)):  # array axes (k, j, i)
        lps[:3, col] = dir3[:, axis] * sp3[axis]
    lps[:3, 3] = org3
    for key in ("modality", "Modality"):
        if reader.HasMetaDataKey(key):
            meta["file_modality"] = reader.GetMetaData(key)
    for key in reader.GetMetaDataKeys():
        if key.lower() in ("space", "nrrd_space", "anatomicalorientation"):
            meta[f"header_{key}"] = reader.GetMetaData(key)
    return Volume(
        data=np.array(data),
        affine=_LPS_TO_RAS @ lps,
        modality="OT",
        unit="a.u.",
        metadata=meta,
        name=p.name.split(".")[0],
    )
