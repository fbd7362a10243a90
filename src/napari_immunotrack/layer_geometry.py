"""Where a napari layer's data sit in the world: its data -> world matrix and points (duck-typed, no napari import).

Shared by the docks (:mod:`napari_immunotrack.widgets._common`) and the close
guard (:mod:`napari_immunotrack._close_guard`), which must not import the
widgets package. napari's world order is (S, A, R): see :mod:`napari_immunotrack.affines`.
"""

from __future__ import annotations

import numpy as np


def data_to_world_matrix(layer) -> np.ndarray:
    """The layer's data -> napari world (n+1)x(n+1) affine, from the public ``layer.data_to_world``.

    Plugin widgets get proxied layers on which private attributes such as
    ``_data_to_world`` are deprecated (napari 0.9), so the matrix is rebuilt from
    the images of the origin and the unit vectors (exact for an affine map).

    Parameters
    ----------
    layer : napari layer
        Anything with ``ndim`` and ``data_to_world(position)``.

    Returns
    -------
    numpy.ndarray
        (n+1, n+1) float affine, data coordinates -> napari world (world units, (S, A, R) order in 3D).

    Examples
    --------
    >>> class Layer:
    ...     ndim = 3
    ...     def data_to_world(self, position):
    ...         return np.asarray(position) * [2.0, 1.0, 0.5] + [10.0, 0.0, 0.0]
    >>> data_to_world_matrix(Layer())
    array([[ 2. ,  0. ,  0. , 10. ],
           [ 0. ,  1. ,  0. ,  0. ],
           [ 0. ,  0. ,  0.5,  0. ],
           [ 0. ,  0. ,  0. ,  1. ]])
    """
    n = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(n)), float)
    matrix = np.eye(n + 1)
    for axis in range(n):
        matrix[:n, axis] = np.asarray(layer.data_to_world(np.eye(n)[axis]), float) - origin
    matrix[:n, n] = origin
    return matrix


def data_to_world_points(layer, data) -> np.ndarray:
    """Layer data coordinates (N, n) -> napari world coordinates (N, n).

    Parameters
    ----------
    layer : napari layer
        Anything with ``ndim`` and ``data_to_world(position)``.
    data : array_like
        Points in data coordinates, shape (N, n) (or anything that reshapes to it).

    Returns
    -------
    numpy.ndarray
        float (N, n) world coordinates.

    Examples
    --------
    >>> class Layer:
    ...     ndim = 3
    ...     def data_to_world(self, position):
    ...         return np.asarray(position) * [2.0, 1.0, 0.5] + [10.0, 0.0, 0.0]
    >>> data_to_world_points(Layer(), [[1, 1, 1], [0, 0, 0]])
    array([[12. ,  1. ,  0.5],
           [10. ,  0. ,  0. ]])
    """
    matrix = data_to_world_matrix(layer)
    n = matrix.shape[0] - 1
    return np.asarray(data, float).reshape(-1, n) @ matrix[:n, :n].T + matrix[:n, n]
