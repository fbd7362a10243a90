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
    """
    n = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(n)), float)
    matrix = np.eye(n + 1)
    for axis in range(n):
        matrix[:n, axis] = np.asarray(layer.data_to_world(np.eye(n)[axis]), float) - origin
    matrix[:n, n] = origin
    return matrix


def data_to_world_points(layer, data) -> np.ndarray:
    """Layer data coordinates (N, n) -> napari world coordinates (N, n)."""
    matrix = data_to_world_matrix(layer)
    n = matrix.shape[0] - 1
    return np.asarray(data, float).reshape(-1, n) @ matrix[:n, :n].T + matrix[:n, n]
