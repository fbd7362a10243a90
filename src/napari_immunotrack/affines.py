"""Axis orders and patient frames, written once for the whole package.

Four orders meet in this package (see ``docs/methods/geometry.md``):

RAS world ``(x, y, z)``
    The package's world: millimetres, x to the subject's Right, y Anterior,
    z Superior (NIfTI's convention). Every :class:`~napari_immunotrack.volume.Volume`
    affine maps to it.
LPS world ``(x, y, z)``
    DICOM's and ITK's world: the same axes with x and y negated (Left,
    Posterior, Superior). :data:`LPS_TO_RAS` converts points; a transform
    between two worlds is conjugated with :func:`lps_to_ras_transform`.
napari world ``(S, A, R)``
    napari's world is the RAS world with the axes in reverse order
    ``(z, y, x)``, so the default 2D view is axial with the slider on S.
    :data:`REVERSE_AXES` swaps the two orders (points:
    :func:`ras_to_napari` / :func:`napari_to_ras`; matrices:
    :func:`ras_affine_to_napari`).
Array index ``(a0, a1, a2)``
    A canonical volume's axes run ``(z, y, x)`` (slice first). nibabel's
    ``(i, j, k)`` is the reverse, hence :func:`reverse_index_order`.

Every matrix here is a permutation or a sign flip: its own inverse, exact in
floating point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "RAS_TO_LPS",
    "REVERSE_AXES",
    "lps_to_ras_matrix",
    "reverse_axes_matrix",
    "lps_to_ras_transform",
    "ras_to_lps_transform",
    "lps_to_ras_points",
    "ras_to_lps_points",
    "ras_to_napari",
    "napari_to_ras",
    "ras_affine_to_napari",
    "napari_affine_to_ras",
    "reverse_index_order",
    "zyx_grid_affine",
]


def _frozen(matrix) -> np.ndarray:
    out = np.array(matrix, float)
    out.setflags(write=False)  # module constants: an in-place edit would corrupt every caller
    return out


#: 4x4 homogeneous flip of x and y: DICOM/ITK LPS <-> RAS (its own inverse).
LPS_TO_RAS = _frozen(np.diag([-1.0, -1.0, 1.0, 1.0]))
#: Same matrix, named for the other direction.
RAS_TO_LPS = LPS_TO_RAS
#: 4x4 homogeneous permutation ``(x, y, z) <-> (z, y, x)``: RAS world <-> napari world,
#: nibabel ``(i, j, k)`` <-> array ``(k, j, i)`` (its own inverse).
REVERSE_AXES = _frozen([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])


def lps_to_ras_matrix() -> np.ndarray:
    """The 4x4 matrix that flips x and y (DICOM LPS <-> RAS); its own inverse.

    Returns
    -------
    (4, 4) ndarray
        A writable copy of :data:`LPS_TO_RAS`.

    Examples
    --------
    >>> lps_to_ras_matrix() @ [10.0, 20.0, 30.0, 1.0]
    array([-10., -20.,  30.,   1.])
    """
    return np.array(LPS_TO_RAS)


def reverse_axes_matrix(ndim: int = 3) -> np.ndarray:
    """The homogeneous ``(ndim + 1)`` square matrix reversing the order of ``ndim`` axes.

    Parameters
    ----------
    ndim : int
        Number of spatial axes (3 gives :data:`REVERSE_AXES`).

    Returns
    -------
    ndarray
        A writable permutation matrix, its own inverse.

    Examples
    --------
    >>> reverse_axes_matrix(2)
    array([[0., 1., 0.],
           [1., 0., 0.],
           [0., 0., 1.]])
    """
    out = np.zeros((ndim + 1, ndim + 1))
    out[np.arange(ndim), np.arange(ndim)[::-1]] = 1.0
    out[ndim, ndim] = 1.0
    return out


def lps_to_ras_transform(matrix) -> np.ndarray:
    """A 4x4 world-to-world transform written in LPS, rewritten in RAS (and back: same formula).

    Parameters
    ----------
    matrix : (4, 4) array
        Maps LPS points to LPS points (e.g. an ITK transform's matrix).

    Returns
    -------
    (4, 4) ndarray
        ``LPS_TO_RAS @ matrix @ LPS_TO_RAS``: the same motion in RAS coordinates.

    Examples
    --------
    >>> shift_left = np.eye(4); shift_left[0, 3] = 5.0   # +x in LPS is Left
    >>> lps_to_ras_transform(shift_left)[:3, 3]          # -x in RAS
    array([-5.,  0.,  0.])
    """
    return LPS_TO_RAS @ np.asarray(matrix, float) @ LPS_TO_RAS


#: The conjugation is its own inverse.
ras_to_lps_transform = lps_to_ras_transform


def lps_to_ras_points(points) -> np.ndarray:
    """LPS points ``(..., 3)`` to RAS (x and y negated; also RAS -> LPS).

    Parameters
    ----------
    points : array_like, shape (..., 3)
        World points ``(x, y, z)`` in mm, in LPS (or RAS: the flip is its own inverse).

    Returns
    -------
    ndarray, shape (..., 3)
        New float array: the same points with x and y negated, mm.

    Examples
    --------
    >>> lps_to_ras_points([[1.0, 2.0, 3.0]])
    array([[-1., -2.,  3.]])
    """
    return np.asarray(points, float) * np.array([-1.0, -1.0, 1.0])


ras_to_lps_points = lps_to_ras_points


def ras_to_napari(points) -> np.ndarray:
    """World RAS ``(x, y, z)`` points ``(..., 3)`` to napari world order ``(z, y, x)``.

    Parameters
    ----------
    points : array_like, shape (..., 3)
        RAS world points ``(x, y, z)``, mm.

    Returns
    -------
    ndarray, shape (..., 3)
        The same points as napari world coordinates ``(z, y, x)`` (S, A, R), mm; a float view.

    Examples
    --------
    >>> ras_to_napari([1.0, 2.0, 3.0])
    array([3., 2., 1.])
    """
    return np.asarray(points, float)[..., ::-1]


def napari_to_ras(points) -> np.ndarray:
    """napari world ``(z, y, x)`` points ``(..., 3)`` to RAS ``(x, y, z)``.

    Parameters
    ----------
    points : array_like, shape (..., 3)
        napari world points ``(z, y, x)`` (S, A, R), mm.

    Returns
    -------
    ndarray, shape (..., 3)
        The same points as RAS ``(x, y, z)``, mm; a float view.

    Examples
    --------
    >>> napari_to_ras([[3.0, 2.0, 1.0]])
    array([[1., 2., 3.]])
    """
    return np.asarray(points, float)[..., ::-1]


def ras_affine_to_napari(affine) -> np.ndarray:
    """An index -> RAS 4x4 affine as index -> napari world ``(S, A, R)``.

    Parameters
    ----------
    affine : (4, 4) array_like
        Maps homogeneous array indices to RAS world points, mm.

    Returns
    -------
    (4, 4) ndarray
        ``REVERSE_AXES @ affine``: maps the same indices to napari world ``(z, y, x)``, mm.

    Examples
    --------
    >>> ras_affine_to_napari(np.diag([1.0, 2.0, 3.0, 1.0]))[:3, :3]
    array([[0., 0., 3.],
           [0., 2., 0.],
           [1., 0., 0.]])
    """
    return REVERSE_AXES @ np.asarray(affine, float)


def napari_affine_to_ras(affine) -> np.ndarray:
    """An index -> napari world 4x4 affine as index -> RAS (inverse of :func:`ras_affine_to_napari`).

    Parameters
    ----------
    affine : (4, 4) array_like
        Maps homogeneous array indices to napari world ``(z, y, x)``, mm.

    Returns
    -------
    (4, 4) ndarray
        ``REVERSE_AXES @ affine``: maps the same indices to RAS ``(x, y, z)``, mm.

    Examples
    --------
    >>> a = np.diag([1.0, 2.0, 3.0, 1.0])
    >>> bool(np.array_equal(napari_affine_to_ras(ras_affine_to_napari(a)), a))
    True
    """
    return REVERSE_AXES @ np.asarray(affine, float)


def reverse_index_order(affine) -> np.ndarray:
    """An affine of index ``(i, j, k)`` rewritten for index ``(k, j, i)`` (same world; both ways).

    nibabel reads a NIfTI array as ``(i, j, k)``; a :class:`~napari_immunotrack.volume.Volume`
    keeps the slice axis first, ``(k, j, i)``.

    Parameters
    ----------
    affine : (4, 4) array_like
        Maps homogeneous indices ``(i, j, k, 1)`` to world points, mm.

    Returns
    -------
    (4, 4) ndarray
        ``affine @ REVERSE_AXES``: maps ``(k, j, i, 1)`` to the same world points.

    Examples
    --------
    >>> ijk = np.diag([0.5, 0.5, 2.0, 1.0])
    >>> reverse_index_order(ijk) @ [3, 0, 0, 1]    # voxel k=3 is 6 mm up
    array([0., 0., 6., 1.])
    """
    return np.asarray(affine, float) @ REVERSE_AXES


def zyx_grid_affine(spacing_zyx: Sequence[float], origin_xyz: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The affine of an axis-aligned ``(z, y, x)`` array: axis 0 to S, axis 1 to A, axis 2 to R.

    Parameters
    ----------
    spacing_zyx : 3 floats
        Voxel size along the array axes, mm.
    origin_xyz : 3 floats
        RAS position of voxel ``(0, 0, 0)``, mm.

    Returns
    -------
    (4, 4) ndarray
        Index ``(a0, a1, a2, 1)`` -> RAS ``(x, y, z, 1)``, mm: ``x = origin_x + a2 * spacing_x``,
        ``y = origin_y + a1 * spacing_y``, ``z = origin_z + a0 * spacing_z``.

    Examples
    --------
    >>> zyx_grid_affine((2.0, 1.0, 0.5), (10.0, 0.0, 0.0)) @ [1, 1, 1, 1]
    array([10.5,  1. ,  2. ,  1. ])
    """
    z, y, x = (float(s) for s in spacing_zyx)
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = z, y, x, 1.0
    affine[:3, 3] = [float(o) for o in origin_xyz]
    return affine
