"""Linear transforms as ITK transform files (``.tfm``, ``.txt``, ``.mat``).

What is in the file
-------------------
ITK, 3D Slicer and ANTs store a registration result as the map from a
*fixed* physical point to the *moving* physical point (the direction used to
resample the moving image onto the fixed grid), in LPS millimetres. This
package's API speaks RAS, so reading and writing convert with
``F @ T @ F``, ``F = diag(-1, -1, 1, 1)``; the direction is the same on both
sides (``fixed_to_moving``).

Files are written through SimpleITK (an ``AffineTransform_double_3_3``),
atomically: a temporary file in the same folder renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..outputs import atomic_output, write_sidecar

#: File name endings ITK reads and writes as transform files.
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".mat")


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(f"{path}: a transform file must end in .tfm (ITK text, read by Slicer and ANTs), "
                         ".txt or .mat (ITK binary, ANTs).")


def _check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, float)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError("a transform must be a finite 4x4 matrix with last row [0, 0, 0, 1].")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise InputError("the transform is singular (it flattens space); it cannot map one image onto another.")
    return m


def write_transform(path, fixed_to_moving, overwrite: bool = False, provenance: dict | None = None) -> Path:
    """Write a 4x4 RAS ``fixed_to_moving`` transform as an ITK transform file (LPS inside).

    Parameters
    ----------
    path : str or Path
        ``.tfm`` (text; Slicer, ANTs, ITK), ``.txt`` or ``.mat``.
    fixed_to_moving : (4, 4) array
        Fixed world RAS mm -> moving world RAS mm (a :class:`~napari_immunotrack.registration.RegistrationResult`'s
        ``fixed_to_moving``).
    overwrite : bool
        Replace an existing file.
    provenance : dict, optional
        Written to ``<path>.provenance.json``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> T = np.eye(4); T[:3, 3] = [1.0, 2.0, 3.0]
    >>> path = os.path.join(tempfile.mkdtemp(), "t.tfm")
    >>> _ = write_transform(path, T)
    >>> np.allclose(read_transform(path), T)
    True
    """
    import SimpleITK as sitk

    from ..registration import matrix_to_sitk_transform

    path = Path(path)
    _check_suffix(path)
    matrix = _check_matrix(fixed_to_moving)
    tx = matrix_to_sitk_transform(matrix)
    with atomic_output(path, overwrite) as tmp:
        sitk.WriteTransform(tx, str(tmp))
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path


def read_transform(path) -> np.ndarray:
    """Read an ITK linear transform file (LPS, fixed -> moving) as a 4x4 RAS ``fixed_to_moving`` matrix.

    Any linear ITK transform is accepted (Affine, Euler, Versor, Similarity,
    MatrixOffset as Slicer writes them, or a composite of those); a
    deformable one is refused.
    """
    import SimpleITK as sitk

    from ..registration import sitk_transform_to_matrix

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path of the transform file.")
    _check_suffix(path)
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[-160:]
        raise InputError(f"{path} is not a readable ITK transform file ({first}); write it with ITK, Slicer or "
                         "ANTs, or with immunotrack register.") from None
    if tx.GetDimension() != 3:
        raise InputError(f"{path} holds a {tx.GetDimension()}D transform; a 3D transform is needed.")
    try:
        matrix = sitk_transform_to_matrix(tx)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return _check_matrix(matrix)


__all__ = ["write_transform", "read_transform", "TRANSFORM_SUFFIXES"]
