"""The three orthogonal planes through one world point, rendered without Qt (see :mod:`.three_plane`).

:func:`render_plane` samples the visible layers of a viewer on an axial,
coronal or sagittal plane in world RAS millimetres and blends them as napari
does (nearest neighbour, each layer's colormap, window, opacity and
blending). See ``docs/methods/study-viewer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...affines import napari_to_ras, ras_to_napari
from .._common import data_to_world_matrix

PLANES = ("axial", "coronal", "sagittal")
#: For each plane: (fixed RAS axis, column RAS axis (increasing to the right), row RAS axis (increasing upwards)).
PLANE_AXES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
AXIS_LETTERS = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}


@dataclass
class PlaneImage:
    """A rendered plane: RGB (rows top to bottom), the world point it goes through, and its geometry."""

    plane: str
    rgb: np.ndarray  # (H, W, 3) float in [0, 1]
    point_ras: np.ndarray  # the world point (RAS mm) the plane goes through
    origin: np.ndarray  # RAS of pixel (0, 0)'s centre
    col_step: np.ndarray  # RAS step per column
    row_step: np.ndarray  # RAS step per row (downwards)
    values: dict[str, np.ndarray]  # layer name -> sampled values (NaN outside the layer)

    def pixel_of(self, ras) -> tuple:
        """(row, col) of the pixel holding a world point (RAS mm) on this plane."""
        d = np.asarray(ras, float) - self.origin
        col = d @ self.col_step / (self.col_step @ self.col_step)
        row = d @ self.row_step / (self.row_step @ self.row_step)
        return int(round(row)), int(round(col))

    def ras_of(self, row: float, col: float) -> np.ndarray:
        return self.origin + row * self.row_step + col * self.col_step


def layer_world_bounds(layers) -> np.ndarray | None:
    """(2, 3) RAS box covering the layers.

    Parameters
    ----------
    layers : iterable of napari layers
        Layers whose ``extent.world`` (napari order, last three axes S, A, R) is read; a layer without
        one is skipped.

    Returns
    -------
    numpy.ndarray or None
        ``[[R, A, S] min, [R, A, S] max]`` in mm (voxel centres); None when no layer has an extent.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.layers import Image
    >>> layers = [Image(np.zeros((2, 3, 4)), scale=(2, 1, 0.5)), Image(np.zeros((2, 2, 2)), translate=(-5, 0, 0))]
    >>> layer_world_bounds(layers)
    array([[ 0. ,  0. , -5. ],
           [ 1.5,  2. ,  2. ]])
    >>> print(layer_world_bounds([]))
    None
    """
    boxes = []
    for layer in layers:
        try:
            ext = np.asarray(layer.extent.world, float)[:, -3:]  # napari order S, A, R
        except Exception:  # noqa: BLE001
            continue
        boxes.append(napari_to_ras(ext))
    if not boxes:
        return None
    boxes = np.concatenate(boxes)
    return np.stack([boxes.min(0), boxes.max(0)])


def sampleable(layer) -> bool:
    """True for a visible 3D image or labels layer whose data can be sampled in memory.

    Parameters
    ----------
    layer : napari layer

    Returns
    -------
    bool
        False for other layer types, hidden, multiscale, RGB or non-3D layers.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.layers import Image, Labels, Points
    >>> cube = np.zeros((2, 2, 2))
    >>> sampleable(Image(cube)), sampleable(Labels(cube.astype(int))), sampleable(Image(np.zeros((2, 2))))
    (True, True, False)
    >>> sampleable(Image(np.zeros((2, 2, 2)), visible=False)), sampleable(Points(np.zeros((1, 3))))
    (False, False)
    """
    kind = type(layer).__name__
    if kind not in ("Image", "Labels") or not layer.visible or getattr(layer, "multiscale", False):
        return False
    if getattr(layer, "rgb", False) or layer.ndim != 3:
        return False
    return True


def _sample_layer(layer, pts_ras: np.ndarray) -> np.ndarray:
    """Nearest-neighbour values of a 3D layer at world points (RAS mm); NaN outside."""
    matrix = np.linalg.inv(data_to_world_matrix(layer))
    pts = ras_to_napari(pts_ras)
    idx = np.rint(pts @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.int64)
    shape = np.array(layer.data.shape[-3:])
    inside = np.all((idx >= 0) & (idx < shape), axis=-1)
    out = np.full(pts.shape[:-1], np.nan, np.float64)
    if inside.any():
        data = layer.data
        sel = idx[inside]
        out[inside] = np.asarray(data[sel[:, 0], sel[:, 1], sel[:, 2]], float)
    return out


def _blend(out: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, blending: str) -> np.ndarray:
    a = alpha[..., None]
    if blending == "additive":
        return np.clip(out + rgb * a, 0, 1)
    if blending == "minimum":
        return np.where(a > 0, np.minimum(out, rgb * a + out * (1 - a)), out)
    if blending == "opaque":
        return np.where(a > 0, rgb, out)
    return out * (1 - a) + rgb * a


def render_plane(
    layers, plane: str, point_ras, bounds_ras: np.ndarray | None = None, max_pixels: int = 320
) -> PlaneImage | None:
    """Composite the visible 3D layers on one orthogonal plane through ``point_ras`` (like napari draws them).

    Layers are sampled by nearest neighbour through their own data-to-world
    transform, coloured by their colormap, contrast limits, gamma and
    opacity, and blended bottom to top (additive, translucent, minimum,
    opaque). Labels use their colours, as outlines when ``contour`` > 0.

    Parameters
    ----------
    layers : sequence of napari layers
        Bottom to top; layers that are not :func:`sampleable` are left out.
    plane : {"axial", "coronal", "sagittal"}
    point_ras : sequence of float
        World point (RAS mm) the plane goes through.
    bounds_ras : (2, 3) array, optional
        RAS box to cover (default: :func:`layer_world_bounds` of the layers).
    max_pixels : int, default 320
        Pixels along the longer side, at most (never finer than the finest layer's voxel).

    Returns
    -------
    PlaneImage or None
        The RGB image (rows top to bottom, values in [0, 1]), its geometry and each layer's sampled
        values (NaN outside the layer); None when no layer can be drawn.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.layers import Image
    >>> data = np.zeros((3, 4, 5)); data[1, 2, 3] = 1.0  # (z, y, x) = napari (S, A, R)
    >>> view = render_plane([Image(data, contrast_limits=(0, 1), name="T2w")], "axial", [3.0, 2.0, 1.0])
    >>> view.rgb.shape, view.values["T2w"].shape
    ((4, 5, 3), (4, 5))
    >>> print(view.values["T2w"])  # row 0 is the most anterior row
    [[0. 0. 0. 0. 0.]
     [0. 0. 0. 1. 0.]
     [0. 0. 0. 0. 0.]
     [0. 0. 0. 0. 0.]]
    >>> print(render_plane([], "axial", [0, 0, 0]))
    None
    """
    layers = [ly for ly in layers if sampleable(ly)]
    point_ras = np.asarray(point_ras, float)
    if bounds_ras is None:
        bounds_ras = layer_world_bounds(layers)
    if bounds_ras is None:
        return None
    fixed, col_axis, row_axis = PLANE_AXES[plane]
    lo, hi = bounds_ras
    span = np.maximum(hi - lo, 1e-6)
    step = max(span[col_axis], span[row_axis]) / max_pixels
    spacings = []
    for layer in layers:
        m = data_to_world_matrix(layer)[:3, :3]
        spacings.append(float(np.min(np.linalg.norm(m, axis=0))))
    if spacings:
        step = max(step, min(spacings))
    n_col = int(np.ceil(span[col_axis] / step)) + 1
    n_row = int(np.ceil(span[row_axis] / step)) + 1
    origin = point_ras.copy()
    origin[col_axis] = lo[col_axis]
    origin[row_axis] = hi[row_axis]  # row 0 at the top: the largest coordinate
    col_step = np.zeros(3)
    col_step[col_axis] = step
    row_step = np.zeros(3)
    row_step[row_axis] = -step
    rows, cols = np.mgrid[0:n_row, 0:n_col]
    pts = origin + rows[..., None] * row_step + cols[..., None] * col_step
    out = np.zeros((n_row, n_col, 3), np.float64)
    values = {}
    for layer in layers:
        vals = _sample_layer(layer, pts)
        values[layer.name] = vals
        inside = np.isfinite(vals)
        if type(layer).__name__ == "Labels":
            lab = np.where(inside, vals, 0).astype(np.int64)
            if getattr(layer, "contour", 0):
                edge = np.zeros_like(lab, bool)
                edge[1:, :] |= lab[1:, :] != lab[:-1, :]
                edge[:-1, :] |= lab[1:, :] != lab[:-1, :]
                edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
                edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
                lab = np.where(edge, lab, 0)
            rgba = np.asarray(layer.colormap.map(lab.ravel()), float).reshape(n_row, n_col, 4)
            alpha = np.where(lab > 0, rgba[..., 3], 0.0) * layer.opacity
        else:
            c_lo, c_hi = layer.contrast_limits
            norm = np.clip((np.nan_to_num(vals) - c_lo) / max(c_hi - c_lo, 1e-12), 0, 1) ** float(layer.gamma)
            rgba = np.asarray(layer.colormap.map(norm.ravel()), float).reshape(n_row, n_col, 4)
            alpha = np.where(inside, rgba[..., 3], 0.0) * layer.opacity
        out = _blend(out, rgba[..., :3], alpha, str(getattr(layer.blending, "value", layer.blending)))
    return PlaneImage(plane, out, point_ras, origin, col_step, row_step, values)
