"""Noise of magnitude MR images for the cluster rules: Rician sigma from air, masks carried to a grid.

Split from :mod:`.clusters` (which re-exports every name here): the Rician noise sigma from a background
(air) ROI (SD / 0.6551 or mean / sqrt(pi/2)), masked moments computed lazily on dask arrays, the air at the
border of the field of view, and ROI masks carried onto the post-injection grid. See
``docs/methods/clusters.md``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

#: SD of a Rayleigh distribution (pure-noise magnitude) in units of sigma: sqrt(2 - pi/2).
RAYLEIGH_SD = math.sqrt(2.0 - math.pi / 2.0)  # 0.6551


#: Mean of a Rayleigh distribution in units of sigma: sqrt(pi/2).
RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)  # 1.2533


#: Median of a Rayleigh distribution in units of sigma: sqrt(2 ln 2).
RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))  # 1.1774


#: Noise statistics use at most this many voxels (a regular subsample); the same cap serves the clusters' medians.
MAX_NOISE_SAMPLE = 1 << 20


@dataclass
class NoiseEstimate:
    """The noise sigma (signal units) and how it was obtained."""

    sigma: float
    method: str
    n_voxels: int
    details: dict[str, float] = field(default_factory=dict)


def warn_and_collect(message: str, collected: list | None) -> None:
    """Emit ``message`` (whitespace collapsed) as an ImmunotrackWarning and append it to ``collected``.

    Parameters
    ----------
    message : str
        The warning text.
    collected : list or None
        Where the result keeps its warnings (None: only warn).

    Returns
    -------
    None

    Examples
    --------
    >>> import warnings
    >>> got = []
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     warn_and_collect("two   words", got)
    >>> got
    ['two words']
    """
    message = " ".join(message.split())
    warnings.warn(message, ImmunotrackWarning, stacklevel=3)
    if collected is not None:
        collected.append(message)


def is_dask_array(array) -> bool:
    """Whether ``array`` is a dask object (checked by module, without importing dask).

    Parameters
    ----------
    array : object
        Any array-like.

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> is_dask_array(np.zeros(2))
    False
    """
    return type(array).__module__.startswith("dask")


def require_3d(volume: Volume, what: str) -> None:
    """Raise InputError unless ``volume`` is a Volume holding one 3D image.

    Parameters
    ----------
    volume : Volume
        The input to check.
    what : str
        How the message names it (e.g. "the baseline").

    Returns
    -------
    None

    Raises
    ------
    InputError
        Not a Volume, or not three-dimensional (with how to extract one frame).

    Examples
    --------
    >>> import numpy as np
    >>> require_3d(Volume(np.zeros((2, 2, 2)), np.eye(4)), "the image")
    >>> require_3d(np.zeros((2, 2, 2)), "the image")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: the image must be a Volume, got ndarray.
    """
    if not isinstance(volume, Volume):
        raise InputError(f"{what} must be a Volume, got {type(volume).__name__}.")
    if volume.data.ndim != 3:
        raise InputError(
            f"{what} has {volume.data.ndim} dimensions; give one 3D volume: save one echo or "
            "time frame as its own file first (e.g. fslroi in.nii.gz frame0.nii.gz 0 1, or "
            "nibabel.funcs.four_to_three)."
        )


def mask_on_grid(mask: Volume | None, grid: Volume, what: str, collected: list | None = None):
    """A mask Volume as a boolean array on ``grid`` (nearest neighbour through world coordinates).

    Non-zero (and, for float masks, finite) voxels are in the mask. A mask with the grid's shape but
    another affine is carried too, with a warning (it was probably drawn on another image).

    Parameters
    ----------
    mask : Volume or None
        3D mask or label image on any grid.
    grid : Volume
        The image whose grid the mask is wanted on.
    what : str
        What the mask is ("the reference ROI"), in messages.
    collected : list, optional
        Warnings are appended here as text (and also emitted as ImmunotrackWarning).

    Returns
    -------
    numpy.ndarray or dask.array.Array or None
        bool array of ``grid``'s spatial shape; None for None. A dask mask on the same grid stays lazy.

    Raises
    ------
    InputError
        A mask that is not a 3D Volume, is empty, or lies outside ``grid``'s field of view.

    Examples
    --------
    >>> import numpy as np
    >>> grid = Volume(np.zeros((4, 4, 4)), np.eye(4))              # 1 mm voxels
    >>> coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    >>> coarse[:3, 3] = 0.5                                        # one 2 mm voxel covers 2 x 2 x 2 of them
    >>> m = np.zeros((2, 2, 2), np.uint8)
    >>> m[0, 0, 0] = 1
    >>> on_grid = mask_on_grid(Volume(m, coarse), grid, "the ROI")
    >>> int(on_grid.sum()), bool(on_grid[:2, :2, :2].all())
    (8, True)
    """
    if mask is None:
        return None
    if not isinstance(mask, Volume):
        raise InputError(f"{what} must be a Volume (a label or mask image), got {type(mask).__name__}.")
    if mask.data.ndim != 3:
        raise InputError(f"{what} has {mask.data.ndim} dimensions; a 3D mask is needed.")
    if mask.same_grid(grid):
        data = mask.data
        out = data != 0 if is_dask_array(data) else np.asarray(data) != 0
        if is_dask_array(out):
            if not bool(out.any().compute()):
                raise InputError(f"{what} is empty (no voxel set); draw the ROI first.")
            return out
        out &= np.isfinite(np.asarray(data)) if np.asarray(data).dtype.kind == "f" else True
        if not out.any():
            raise InputError(f"{what} is empty (no voxel set); draw the ROI first.")
        return out
    src = mask.numpy()
    if not np.any(np.nan_to_num(src) != 0):
        raise InputError(f"{what} is empty (no voxel set); draw the ROI first.")
    src = (np.nan_to_num(src) != 0).astype(np.uint8)
    out = Volume(src, mask.affine).resample_to(grid, order=0).numpy() != 0
    if not out.any():
        raise InputError(
            f"{what} lies outside the image: none of its voxels falls in the image's field of view; "
            "draw it on this image or check both files' positions."
        )
    if mask.spatial_shape == grid.spatial_shape:
        warn_and_collect(
            f"{what} has the image's shape but another affine; it was carried to the image through world "
            "coordinates (check that it was drawn on this image).",
            collected,
        )
    return out


def estimate_rician_sigma(image: Volume, background_mask: Volume, estimator: str = "sd") -> float:
    """Rician noise sigma from a signal-free (air) region of a magnitude image.

    Pure-noise magnitude is Rayleigh: ``sigma = SD_bg / 0.6551`` (``"sd"``)
    or ``sigma = mean_bg / sqrt(pi/2)`` (``"mean"``; docs/methods/clusters.md#inputs-and-normalisation).

    Parameters
    ----------
    image : Volume
        Magnitude image (3D).
    background_mask : Volume
        Air region (any grid; carried to the image's).
    estimator : {"sd", "mean"}, default "sd"
        Which moment of the background gives sigma.

    Returns
    -------
    float
        The Gaussian noise sigma of each channel (signal units).

    Raises
    ------
    InputError
        An unknown estimator, fewer than 10 usable background voxels, or a constant background.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> air = np.abs(rng.normal(0, 4, (30, 30, 30)) + 1j * rng.normal(0, 4, (30, 30, 30)))
    >>> img = Volume(air, np.eye(4))
    >>> round(estimate_rician_sigma(img, Volume(np.ones(air.shape, np.uint8), np.eye(4))), 1)
    4.0
    """
    return noise_from_background(image, background_mask, estimator).sigma


def noise_from_background(
    image: Volume, background_mask: Volume, estimator: str = "sd", collected: list | None = None
) -> NoiseEstimate:
    """:func:`estimate_rician_sigma` with both estimates and a warning when they disagree.

    The SD and mean estimates differing by more than 30 % means the region is not pure Rician noise
    (tissue, ghosts or a masked image): warned.

    Parameters
    ----------
    image : Volume
        Magnitude image (3D).
    background_mask : Volume
        Air region (any grid; carried to the image's).
    estimator : {"sd", "mean"}, default "sd"
        Which estimate becomes ``sigma``.
    collected : list, optional
        Warnings are appended here as text (and also emitted as ImmunotrackWarning).

    Returns
    -------
    NoiseEstimate
        ``sigma`` (signal units), ``method``, ``n_voxels`` and ``details`` with ``sigma_from_sd`` and
        ``sigma_from_mean``.

    Raises
    ------
    InputError
        An unknown estimator, fewer than 10 usable background voxels, or a constant background.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> air = np.abs(rng.normal(0, 4, (10, 10, 10)) + 1j * rng.normal(0, 4, (10, 10, 10)))
    >>> est = noise_from_background(Volume(air, np.eye(4)), Volume(np.ones(air.shape, np.uint8), np.eye(4)))
    >>> round(est.sigma, 2), est.method, est.n_voxels, {k: round(v, 2) for k, v in est.details.items()}
    (4.02, 'background ROI (sd)', 1000, {'sigma_from_sd': 4.02, 'sigma_from_mean': 4.03})
    """
    if estimator not in ("sd", "mean"):
        raise InputError(f"estimator={estimator!r}: use 'sd' or 'mean'.")
    require_3d(image, "the image")
    mask = mask_on_grid(background_mask, image, "the background ROI", collected)
    _, n, mean, sd = masked_moments(image.data, mask)
    if n < 10:
        raise InputError(f"the background ROI holds {n} usable voxels; draw a larger region of air.")
    sd_sigma = sd / RAYLEIGH_SD
    mean_sigma = mean / RAYLEIGH_MEAN
    if not (sd_sigma > 0 or mean_sigma > 0):
        raise InputError(
            "the background ROI is constant (zero noise); it is not a magnitude image's air, or the "
            "image was masked; draw the background elsewhere or give the sigma."
        )
    sigma = sd_sigma if estimator == "sd" else mean_sigma
    if min(sd_sigma, mean_sigma) <= 0 or max(sd_sigma, mean_sigma) / min(sd_sigma, mean_sigma) > 1.3:
        warn_and_collect(
            f"the background ROI does not look like pure Rician noise (sigma {sd_sigma:.4g} from its SD, "
            f"{mean_sigma:.4g} from its mean); it may hold tissue, ghosts or a masked image.",
            collected,
        )
    return NoiseEstimate(
        sigma, f"background ROI ({estimator})", int(n), {"sigma_from_sd": sd_sigma, "sigma_from_mean": mean_sigma}
    )


def masked_moments(data, mask) -> tuple[int, int, float, float]:
    """(voxels in mask, finite voxels in mask, mean, SD with ddof=1) of ``data`` over ``mask``.

    Sums in float64, slab by slab (NumPy) or one NumPy reduction per dask chunk, so a large
    region costs no copy of its values.

    Parameters
    ----------
    data, mask : array_like or dask array
        Values and boolean mask of the same shape.

    Returns
    -------
    (int, int, float, float)
        Voxels in the mask, finite ones among them, their mean and SD (NaN when none).

    Examples
    --------
    >>> import numpy as np
    >>> data = np.array([[[1.0, 3.0, np.nan, 9.0]]])
    >>> masked_moments(data, np.array([[[True, True, True, False]]]))
    (3, 2, 2.0, 1.4142135623730951)
    """
    if is_dask_array(data) or is_dask_array(mask):
        import dask
        import dask.array as da

        d = data if is_dask_array(data) else da.from_array(np.asarray(data), chunks=mask.chunks)
        m = mask if is_dask_array(mask) else da.from_array(np.asarray(mask), chunks=d.chunks)
        m = m.rechunk(d.chunks)
        # one NumPy reduction per chunk (much faster than an element-wise dask graph)
        parts = dask.compute(
            *[dask.delayed(moment_sums)(db, mb) for db, mb in zip(d.to_delayed().ravel(), m.to_delayed().ravel())]
        )
        n_mask, n, s1, s2 = (sum(p[i] for p in parts) for i in range(4))
    else:
        n_mask, n, s1, s2 = moment_sums(data, mask)
    if n == 0:
        return n_mask, 0, float("nan"), float("nan")
    mean = s1 / n
    var = max(s2 - s1 * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return n_mask, n, mean, math.sqrt(var)


def moment_sums(data, mask) -> tuple[int, int, float, float]:
    """(voxels in mask, finite voxels, sum, sum of squares) in float64, slab by slab.

    Parameters
    ----------
    data, mask : array_like
        Values and boolean mask of the same shape (at least 1D; slabs along axis 0).

    Returns
    -------
    (int, int, float, float)
        Voxels in the mask, finite ones, sum and sum of squares of the finite ones.

    Examples
    --------
    >>> import numpy as np
    >>> moment_sums(np.array([1.0, 2.0, np.inf]), np.array([True, True, True]))
    (3, 2, 3.0, 5.0)
    """
    data, mask = np.asarray(data), np.asarray(mask)
    n_mask = n = 0
    s1 = s2 = 0.0
    for a in range(0, data.shape[0], 32):
        vals = data[a : a + 32][mask[a : a + 32]]
        n_mask += vals.size
        finite = np.isfinite(vals)
        if not finite.all():  # no second copy when every value is finite (the usual case)
            vals = vals[finite]
        vals = np.asarray(vals, np.float64)
        n += vals.size
        s1 += float(vals.sum())
        # einsum, not np.dot: BLAS would spread this over threads (CPU spent spinning, last bits depending on
        # the machine's core count); einsum's own loop gives the same sum everywhere
        s2 += float(np.einsum("i,i->", vals, vals))
    return n_mask, n, s1, s2


def masked_values(data, mask) -> np.ndarray:
    """The values of ``data`` inside ``mask`` as float64 (dask inputs are computed).

    Parameters
    ----------
    data, mask : array_like or dask array
        Values and boolean mask of the same shape.

    Returns
    -------
    ndarray of float64
        The masked values, in C order.

    Examples
    --------
    >>> import numpy as np
    >>> masked_values(np.arange(4).reshape(1, 2, 2), np.array([[[True, False], [False, True]]])).tolist()
    [0.0, 3.0]
    """
    if is_dask_array(data) or is_dask_array(mask):
        import dask.array as da

        d = data if is_dask_array(data) else da.from_array(np.asarray(data), chunks=mask.chunks)
        m = mask if is_dask_array(mask) else da.from_array(np.asarray(mask), chunks=d.chunks)
        return np.asarray(d[m].compute(), dtype=np.float64)
    return np.asarray(np.asarray(data)[mask], dtype=np.float64)


def sample_step(shape, target: int = 1 << 22) -> int:
    """Stride per axis that keeps a regular subsample of a volume under ``target`` voxels.

    Parameters
    ----------
    shape : sequence of int
        Volume shape.
    target : int, default 2**22
        Voxel budget of the subsample.

    Returns
    -------
    int
        Step (>= 1) to take along every axis.

    Examples
    --------
    >>> sample_step((10, 10, 10), target=1000), sample_step((10, 10, 10), target=125)
    (1, 2)
    """
    return max(1, int(math.ceil((float(np.prod(shape)) / target) ** (1.0 / 3.0))))


def border_air_sigma(data) -> tuple[float, int] | None:
    """Median of the field-of-view border (two-voxel shell), the air signal when the border is air.

    Parameters
    ----------
    data : array_like or dask array
        A 3D image.

    Returns
    -------
    (float, int) or None
        Median of the finite shell values and their count (the six two-voxel slabs, edges counted
        once per slab); None when fewer than 500.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.full((12, 12, 12), 7.0)
    >>> border_air_sigma(data)
    (7.0, 1728)
    >>> border_air_sigma(np.ones((3, 3, 3))) is None
    True
    """
    shells = []
    for axis in range(3):
        for sl in (slice(0, 2), slice(-2, None)):
            idx = [slice(None)] * 3
            idx[axis] = sl
            block = data[tuple(idx)]
            shells.append(np.asarray(block.compute() if is_dask_array(block) else block, np.float64).ravel())
    shell = np.concatenate(shells)
    shell = shell[np.isfinite(shell)]
    if shell.size < 500:
        return None
    return float(np.median(shell)), int(shell.size)
