"""Resampling the moving image and the quality-control views of a registration (checkerboard, difference, edges)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .intensity import intensity_mode, scaled_intensities
from .result import RegistrationResult


# --------------------------------------------------------------------------- resampling and quality control
def resample_moving(fixed: Volume, moving: Volume, result, order: int = 1) -> Volume:
    """The moving image resampled onto the fixed grid through a result (or a 4x4 fixed_to_moving matrix).

    Parameters
    ----------
    fixed : Volume
        Gives the output grid (shape and affine).
    moving : Volume
        The image to resample (3D, or 4D resampled frame by frame).
    result : RegistrationResult or (4, 4) array
        A registration result, or its ``fixed_to_moving`` RAS matrix: maps a fixed world point (mm)
        to the moving world point sampled there.
    order : int, default 1
        Spline order of the interpolation: 0 nearest (labels), 1 trilinear.

    Returns
    -------
    Volume
        The moving values on the fixed grid (0 outside the moving field of view), named
        "<moving name> registered"; modality and unit of ``moving``.

    Examples
    --------
    >>> moving = Volume(np.arange(8.0).reshape(1, 2, 4), np.eye(4))
    >>> shift = np.eye(4); shift[2, 3] = 1.0      # fixed z maps to moving z + 1 mm
    >>> out = resample_moving(moving, moving, shift, order=0)
    >>> out.numpy().tolist(), out.name
    ([[[1.0, 2.0, 3.0, 0.0], [5.0, 6.0, 7.0, 0.0]]], 'registered')
    """
    matrix = result.fixed_to_moving if isinstance(result, RegistrationResult) else np.asarray(result, float)
    out = moving.resample_to(fixed, order=order, transform=matrix)
    out.name = f"{moving.name} registered" if moving.name else "registered"
    return out


def _normalise(data: np.ndarray, mode: str = "linear") -> np.ndarray:
    """Intensities to [0, 1] between the 1st and 99th percentiles, after the metric's intensity mapping.

    With ``mode="log"`` (hot-spot images) the faint body shows beside the hot
    spots, as the metric saw it, so two modalities can be compared by eye.
    """
    data = np.asarray(data, np.float32)
    if mode != "linear":
        data = scaled_intensities(data, None, mode, 99.9)
    values = data.ravel()
    step = max(1, values.size // 1_000_000)
    lo, hi = np.percentile(values[::step], [1, 99])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            return np.zeros(data.shape, np.float32)
    return np.clip((data - lo) / (hi - lo), 0, 1).astype(np.float32)


def _same_grid_pair(fixed: Volume, moving_on_fixed: Volume, intensity: str = "auto"):
    if not fixed.same_grid(moving_on_fixed):
        raise InputError(
            "quality-control views need the moving image on the fixed grid; resample it first (resample_moving)."
        )
    return (
        _normalise(fixed.numpy(), intensity_mode(fixed, intensity)),
        _normalise(moving_on_fixed.numpy(), intensity_mode(moving_on_fixed, intensity)),
    )


def normalised(volume: Volume, intensity: str = "auto") -> Volume:
    """The volume scaled to [0, 1] as the quality-control views show it (log for hot-spot modalities).

    Values are mapped linearly between their 1st and 99th percentiles and clipped; with the "log"
    mapping (``docs/methods/registration.md#quality-control``) the faint body of a PET, SPECT,
    19F, MPI or optical image shows beside its hot spots.

    Parameters
    ----------
    volume : Volume
        Any image.
    intensity : {"auto", "linear", "log", "rank"}, default "auto"
        The metric's intensity mapping applied first; "auto" is "log" for the modalities in
        ``HOT_SPOT_MODALITIES``, else "linear".

    Returns
    -------
    Volume
        float32 values in [0, 1] on the same grid, unit "a.u.", modality "OT", named
        "<name> (normalised)".

    Examples
    --------
    >>> mr = Volume(np.arange(8.0).reshape(1, 2, 4), np.eye(4), modality="MR")
    >>> normalised(mr).numpy().astype(float).round(2).tolist()
    [[[0.0, 0.14, 0.28, 0.43], [0.57, 0.72, 0.86, 1.0]]]
    """
    return volume.replace(
        data=_normalise(volume.numpy(), intensity_mode(volume, intensity)),
        unit="a.u.",
        modality="OT",
        name=f"{volume.name} (normalised)",
    )


def checkerboard(fixed: Volume, moving_on_fixed: Volume, square_mm: float = 10.0, intensity: str = "auto") -> Volume:
    """Alternate squares of the fixed and the registered moving image (both scaled to [0, 1]).

    The squares are ``square_mm`` wide in world millimetres, in 3D; edges that
    run straight across square borders show a good registration. Each image
    is scaled between its 1st and 99th percentiles, hot-spot modalities after
    a logarithm (``intensity``, as in :func:`register`) so their body shows.

    Parameters
    ----------
    fixed : Volume
        The fixed image.
    moving_on_fixed : Volume
        The moving image already on the fixed grid (:func:`resample_moving`).
    square_mm : float, default 10.0
        Side of the squares (cubes in 3D), world mm; squares are aligned to the world origin.
    intensity : {"auto", "linear", "log", "rank"}, default "auto"
        Intensity mapping before scaling (see :func:`normalised`).

    Returns
    -------
    Volume
        float32 in [0, 1] on the fixed grid: the moving image where the sum of
        ``floor(world / square_mm)`` over x, y, z is odd, else the fixed one; named "checkerboard".

    Raises
    ------
    InputError
        If the two volumes are not on one grid, or ``square_mm`` is not positive.

    Examples
    --------
    >>> fixed = Volume(np.zeros((1, 1, 4)), np.eye(4))
    >>> moving = fixed.replace(data=np.arange(4.0).reshape(1, 1, 4))
    >>> [round(float(v), 2) for v in checkerboard(fixed, moving, square_mm=2).numpy()[0, 0]]
    [0.0, 0.0, 0.67, 1.0]
    """
    a, b = _same_grid_pair(fixed, moving_on_fixed, intensity)
    if not square_mm > 0:
        raise InputError(f"square_mm must be positive, not {square_mm}.")
    # world = A @ index + t, one world axis at a time by broadcasting (no N x 3 array)
    n0, n1, n2 = fixed.spatial_shape
    axes = (np.arange(n0)[:, None, None], np.arange(n1)[None, :, None], np.arange(n2)[None, None, :])
    parity = np.zeros(fixed.spatial_shape, np.int64)
    for w in range(3):
        coord = fixed.affine[w, 3] + sum(fixed.affine[w, k] * axes[k] for k in range(3))
        parity += np.floor(coord / square_mm).astype(np.int64)
    out = np.where(parity % 2 == 1, b, a).astype(np.float32)
    return fixed.replace(data=out, unit="a.u.", modality="OT", name="checkerboard")


def difference(fixed: Volume, moving_on_fixed: Volume, intensity: str = "auto") -> Volume:
    """Registered moving minus fixed, each scaled to [0, 1] as in :func:`checkerboard` (0 = agreement).

    Parameters
    ----------
    fixed : Volume
        The fixed image.
    moving_on_fixed : Volume
        The moving image on the fixed grid (:func:`resample_moving`).
    intensity : {"auto", "linear", "log", "rank"}, default "auto"
        Intensity mapping before scaling (see :func:`normalised`).

    Returns
    -------
    Volume
        float32 in [-1, 1] on the fixed grid (positive where the moving image is brighter), named
        "difference".

    Raises
    ------
    InputError
        If the two volumes are not on one grid.

    Examples
    --------
    >>> fixed = Volume(np.arange(8.0).reshape(1, 2, 4), np.eye(4), modality="MR")
    >>> mirrored = fixed.replace(data=fixed.data[..., ::-1].copy())
    >>> float(difference(fixed, fixed).numpy().max()), difference(fixed, mirrored).numpy()[0, 0].astype(float).round(2).tolist()
    (0.0, [0.43, 0.15, -0.15, -0.43])
    """
    a, b = _same_grid_pair(fixed, moving_on_fixed, intensity)
    return fixed.replace(data=(b - a).astype(np.float32), unit="a.u.", modality="OT", name="difference")


def edges(volume: Volume, threshold: float = 0.2) -> Volume:
    """Edges of an image (gradient magnitude above ``threshold`` of its maximum, in world mm) as labels 0/1.

    The image is scaled to [0, 1] (1st-99th percentile), smoothed with a Gaussian of sigma 1 voxel,
    and its gradient taken per mm with the voxel spacing; overlaid on the other image, the edges
    show how well the two line up.

    Parameters
    ----------
    volume : Volume
        A 3D image.
    threshold : float, default 0.2
        Fraction of the largest gradient magnitude above which a voxel is an edge.

    Returns
    -------
    Volume
        uint8 labels (1 = edge), unit "label", modality "SEG", named "<name> edges".

    Examples
    --------
    >>> box = np.zeros((16, 16, 16)); box[4:12, 4:12, 4:12] = 1.0     # a cube with faces at 3.5 and 11.5 mm
    >>> rim = edges(Volume(box, np.eye(4)), threshold=0.5)
    >>> rim.numpy()[8, 8].tolist(), rim.unit
    ([0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0], 'label')
    """
    from scipy import ndimage

    data = _normalise(np.asarray(volume.numpy(), np.float32))
    smooth = ndimage.gaussian_filter(data, 1.0)
    spacing = volume.spacing
    grads = np.gradient(smooth, *spacing)
    magnitude = np.sqrt(sum(g * g for g in grads))
    top = float(magnitude.max())
    mask = magnitude > threshold * top if top > 0 else np.zeros(data.shape, bool)
    return volume.replace(data=mask.astype(np.uint8), unit="label", modality="SEG", name=f"{volume.name} edges")
