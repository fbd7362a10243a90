"""The bridge to SimpleITK: Volume <-> image (LPS, index order x, y, z) and 4x4 RAS matrix <-> ITK transform.

The only module that knows SimpleITK's conventions; see ``docs/methods/registration.md``.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..affines import LPS_TO_RAS, lps_to_ras_transform, ras_to_lps_transform
from ..errors import InputError
from ..volume import Volume

#: LPS <-> RAS flip of x and y (its own inverse); see :mod:`napari_immunotrack.affines`.
_FLIP = LPS_TO_RAS

_ONE_THREAD_LOCK = threading.Lock()
_one_thread_users = [0, None]  # calls inside, SimpleITK's thread count before the first of them


@contextlib.contextmanager
def one_itk_thread():
    """Run the block with SimpleITK on one thread, so the same registration gives the same transform every time.

    SimpleITK's mutual-information metric adds its threads' partial sums in an order that varies from run
    to run; carried through the optimiser this moved the sample's MPI-to-PET registration by up to 0.04 mm
    between two runs of ``immunotrack demo`` (docs/methods/registration.md#determinism). The setting is
    process-wide: concurrent blocks share it (a counter restores the previous value when the last one
    leaves); other SimpleITK work running meanwhile is only slower, not different.

    Returns
    -------
    contextlib.AbstractContextManager
        Yields None; SimpleITK's global default number of threads is 1 inside.

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    >>> with one_itk_thread():
    ...     inside = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    >>> inside, sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    (1, True)
    """
    import SimpleITK as sitk

    with _ONE_THREAD_LOCK:
        if _one_thread_users[0] == 0:
            _one_thread_users[1] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _one_thread_users[0] += 1
    try:
        yield
    finally:
        with _ONE_THREAD_LOCK:
            _one_thread_users[0] -= 1
            if _one_thread_users[0] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_one_thread_users[1])


def volume_to_sitk(volume: Volume, pixel_type=None):
    """A SimpleITK image with the same voxels and physical geometry (LPS).

    The array ``(a0, a1, a2)`` becomes sitk index ``(x, y, z) = (a2, a1, a0)``,
    so sitk's direction columns are the Volume affine's columns reversed, and
    x and y are negated (RAS -> LPS).

    Parameters
    ----------
    volume : Volume
        A 3D volume (4D volumes are refused: pick a frame first).
    pixel_type : SimpleITK pixel id, optional
        Cast to this type (``sitk.sitkFloat32`` for registration); the
        array's own type when omitted.

    Returns
    -------
    SimpleITK.Image
        Size, spacing (mm), origin (LPS mm) and direction such that every voxel has the same
        physical position as in ``volume``; boolean data becomes uint8.

    Raises
    ------
    InputError
        If the volume is 4D or its grid is sheared.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 0.5, 1.0]))
    >>> img = volume_to_sitk(v)
    >>> img.GetSize(), img.GetSpacing()
    ((6, 5, 4), (0.5, 1.0, 2.0))
    >>> img.TransformIndexToPhysicalPoint((3, 2, 1))   # LPS of array index (1, 2, 3)
    (-2.0, -2.0, 1.5)
    """
    import SimpleITK as sitk

    if volume.data.ndim != 3:
        raise InputError(
            f"{volume.message_prefix()}has {volume.data.ndim} dimensions ({volume.shape}); registration needs one 3D "
            "volume: pick one frame or average the frames first."
        )
    arr = np.ascontiguousarray(volume.numpy())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    # columns of the LPS matrix in sitk index order (x, y, z) = array axes (2, 1, 0)
    lps = (_FLIP[:3, :3] @ volume.affine[:3, :3])[:, ::-1]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(
            f"{volume.message_prefix()}has a sheared voxel grid (non-orthogonal axes), which registration cannot use; "
            "resample it onto an orthogonal grid first."
        )
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction.ravel()])
    img.SetOrigin([float(o) for o in (_FLIP[:3, :3] @ volume.affine[:3, 3])])
    if pixel_type is not None:
        img = sitk.Cast(img, pixel_type)
    return img


def sitk_affine(image) -> np.ndarray:
    """The Volume-convention affine (array index of axes 0, 1, 2 -> RAS mm) of a sitk image.

    Parameters
    ----------
    image : SimpleITK.Image
        A 3D image (origin, spacing, direction in LPS).

    Returns
    -------
    (4, 4) ndarray
        Maps the index of ``sitk.GetArrayFromImage(image)`` (axes z, y, x) to RAS mm.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 0.5, 1.0]))
    >>> np.array_equal(sitk_affine(volume_to_sitk(v)), v.affine)
    True
    """
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    lps = direction * np.array(image.GetSpacing(), float)  # columns in sitk index order x, y, z
    affine = np.eye(4)
    affine[:3, :3] = _FLIP[:3, :3] @ lps[:, ::-1]
    affine[:3, 3] = _FLIP[:3, :3] @ np.array(image.GetOrigin(), float)
    return affine


def sitk_to_volume(image, like: Volume | None = None, **fields) -> Volume:
    """A Volume from a 3D SimpleITK image (inverse of :func:`volume_to_sitk`).

    Parameters
    ----------
    image : SimpleITK.Image
        A 3D image.
    like : Volume, optional
        Supplies modality, unit, metadata (copied) and name.
    **fields
        Volume fields (``modality``, ``unit``, ``metadata``, ``name``) that override ``like``'s.

    Returns
    -------
    Volume
        The image's array (axes z, y, x) with the RAS affine of :func:`sitk_affine`.

    Raises
    ------
    InputError
        If the image is not 3D.

    Examples
    --------
    >>> pet = Volume(np.ones((4, 5, 6), np.float32), np.diag([2.0, 1.0, 0.5, 1.0]), modality="PT", unit="Bq/mL")
    >>> back = sitk_to_volume(volume_to_sitk(pet), like=pet, name="copy")
    >>> back.spatial_shape, back.spacing.tolist(), back.unit, back.name
    ((4, 5, 6), [2.0, 1.0, 0.5], 'Bq/mL', 'copy')
    """
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"a {image.GetDimension()}D SimpleITK image cannot be a Volume; give a 3D image.")
    data = sitk.GetArrayFromImage(image)
    base = (
        {}
        if like is None
        else dict(modality=like.modality, unit=like.unit, metadata=dict(like.metadata), name=like.name)
    )
    base.update(fields)
    return Volume(data=data, affine=sitk_affine(image), **base)


def sitk_transform_to_matrix(transform) -> np.ndarray:
    """The 4x4 RAS world matrix of a linear SimpleITK transform (which works in LPS).

    Found by mapping the origin and three unit points, so any linear transform
    (Euler, Versor, Similarity, Affine, a composite of those) works; a
    non-linear transform is refused.

    Parameters
    ----------
    transform : SimpleITK.Transform
        Maps fixed LPS points to moving LPS points (ITK's convention for a registration result).

    Returns
    -------
    (4, 4) ndarray
        The same map between RAS points (mm): the ``fixed_to_moving`` matrix of the package.

    Raises
    ------
    InputError
        If the transform is not linear (B-spline, displacement field).

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> euler = sitk.Euler3DTransform(); euler.SetTranslation((1.0, 2.0, 3.0))   # LPS mm
    >>> sitk_transform_to_matrix(euler)[:3, 3]                                    # RAS mm
    array([-1., -2.,  3.])
    """
    if hasattr(transform, "IsLinear") and not transform.IsLinear():
        raise InputError(
            "the transform is not linear (e.g. a B-spline or displacement field); only rigid and "
            "affine transforms can be used here."
        )
    probe = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * 100.0
    mapped = np.array([transform.TransformPoint(tuple(float(c) for c in p)) for p in probe])
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = ((mapped[1:] - mapped[0]) / 100.0).T
    check = np.array([37.0, -52.0, 81.0])
    if not np.allclose(transform.TransformPoint(tuple(check)), lps[:3, :3] @ check + lps[:3, 3], atol=1e-4):
        raise InputError(
            "the transform is not linear (e.g. a B-spline or displacement field); only rigid and "
            "affine transforms can be used here."
        )
    return lps_to_ras_transform(lps)


def matrix_to_sitk_transform(matrix):
    """A SimpleITK ``AffineTransform`` (LPS) of a 4x4 RAS world matrix.

    Parameters
    ----------
    matrix : (4, 4) array
        A RAS world-to-world map (mm), e.g. a ``fixed_to_moving`` matrix.

    Returns
    -------
    SimpleITK.AffineTransform
        The same map in LPS (inverse of :func:`sitk_transform_to_matrix`).

    Examples
    --------
    >>> shift = np.eye(4); shift[0, 3] = 1.0          # 1 mm to the Right
    >>> matrix_to_sitk_transform(shift).TransformPoint((0.0, 0.0, 0.0))   # LPS: x = -1
    (-1.0, 0.0, 0.0)
    """
    import SimpleITK as sitk

    lps = ras_to_lps_transform(matrix)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    tx.SetTranslation([float(v) for v in lps[:3, 3]])
    return tx
