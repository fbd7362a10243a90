"""Intensity (mutual-information) registration of two volumes, rigid or affine, multi-resolution.

See ``docs/methods/registration.md`` for the metric, the pyramid and the refusals.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import progress as _progress
from ..affines import ras_to_lps_transform
from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume
from .itk_bridge import one_itk_thread, sitk_transform_to_matrix, volume_to_sitk
from .result import METRIC_NOTE, RegistrationResult, plain_number
from .search import (
    distinct_best,
    euler_matrices_ras,
    orientation_grid,
    pose_distance_mm,
    score_transforms,
)

# --------------------------------------------------------------------------- input checks
_MIN_VOXELS_PER_AXIS = 4


def _check_image(volume, role: str, notes: list | None = None) -> np.ndarray:
    """The image's voxels as float32, after refusing what cannot be registered."""
    if not isinstance(volume, Volume):
        raise InputError(
            f"the {role} image must be a Volume (napari_immunotrack.io.load_volume gives one), "
            f"not {type(volume).__name__}."
        )
    if volume.data.ndim != 3:
        raise InputError(
            f"the {role} image has {volume.data.ndim} dimensions {volume.shape}; registration needs "
            "one 3D volume: pick one frame or average the frames first."
        )
    shape = volume.spatial_shape
    if min(shape) < _MIN_VOXELS_PER_AXIS:
        kind = "2D (a single slice)" if sorted(shape)[0] == 1 else f"too thin ({min(shape)} voxels along one axis)"
        raise InputError(
            f"the {role} image is {kind}, shape {shape}; intensity registration needs two 3D volumes "
            "(load the whole series), or pair landmarks instead."
        )
    data = np.asarray(volume.numpy(), dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        if not finite.any():
            raise InputError(f"the {role} image has no finite value (all NaN or infinite); check the file.")
        data = np.where(finite, data, np.min(data[finite])).astype(np.float32)
        warn_or_collect(
            f"the {role} image had {int((~finite).sum())} NaN/infinite voxels; they were set to its minimum "
            "for registration.",
            notes,
        )
    lo, hi = float(data.min()), float(data.max())
    if hi == lo:
        what = "empty (every voxel is 0)" if hi == 0 else f"constant (every voxel is {hi:g})"
        raise InputError(
            f"the {role} image is {what}, so there is nothing to align; check that the right image or series was given."
        )
    return data


def _check_mask(mask, image: Volume, role: str) -> np.ndarray | None:
    """A boolean mask on ``image``'s grid (resampled through world coordinates), or None."""
    if mask is None:
        return None
    if isinstance(mask, Volume):
        if mask.data.ndim != 3:
            raise InputError(f"the {role} mask must be a 3D label image, got shape {mask.shape}.")
        on_grid = mask if mask.same_grid(image) else mask.resample_to(image, order=0)
        values = on_grid.numpy()
    else:
        values = np.asarray(mask)
        if values.shape != image.spatial_shape:
            raise InputError(
                f"the {role} mask has shape {values.shape} but the {role} image {image.spatial_shape}; "
                "give the mask as a Volume (placed in world space) or on the image's grid."
            )
    out = np.asarray(values != 0)
    count = int(out.sum())
    if count == 0:
        raise InputError(
            f"the {role} mask does not overlap the {role} image (no mask voxel falls inside it); check "
            f"that the mask was drawn on the {role} image, in the same world space."
        )
    if count < 64:
        raise InputError(
            f"the {role} mask covers only {count} voxels of the {role} image; draw a larger mask "
            "(the whole body or organ of interest), or register without it."
        )
    return out


#: Modalities whose images are hot spots on noise: registered to each other around their hot spots.
_HOT_MATCH = ("PT", "NM", "F19", "MPI")


def _hot_spot_mask(volume: Volume, data: np.ndarray) -> np.ndarray:
    """Voxels above 5 % of the image maximum, dilated by 3 mm: where a hot-spot image holds information."""
    from scipy import ndimage

    top = float(data.max())
    floor = float(np.median(data))
    hot = data > floor + _HOT_FRACTION * (top - floor)
    radius = np.maximum(np.round(_HOT_DILATION_MM / volume.spacing).astype(int), 1)
    ball = np.ones(tuple(2 * r + 1 for r in radius), bool)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball &= sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius)) <= 1.0
    mask = ndimage.binary_dilation(hot, structure=ball)
    if int(mask.sum()) < _MIN_LEVEL_VOXELS:
        raise InputError(
            f"the fixed image's hot spots cover only {int(mask.sum())} voxels, too few to register "
            "on; register to an anatomical image, use landmarks, or pass hot_spots=False."
        )
    return mask


def warn_or_collect(message: str, collected: list | None = None) -> None:
    """Warn (ImmunotrackWarning) and, when given a list, also keep the message in it (for the result).

    Parameters
    ----------
    message : str
        The warning, one line.
    collected : list, optional
        Receives ``message`` too (e.g. ``RegistrationResult.warnings``).

    Returns
    -------
    None

    Examples
    --------
    >>> kept = []
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_or_collect("the images barely overlap", kept)
    >>> kept, [str(w.message) for w in caught]
    (['the images barely overlap'], ['the images barely overlap'])
    """
    warnings.warn(message, ImmunotrackWarning, stacklevel=3)
    if collected is not None:
        collected.append(message)


# --------------------------------------------------------------------------- intensity registration
class _Abort(Exception):
    """Raised inside a SimpleITK callback to stop the optimiser (never escapes this module)."""


def _install_abort_hook() -> None:
    # SimpleITK prints an exception raised in a Python callback through
    # sys.excepthook before turning it into a RuntimeError; keep our own
    # stop signal silent and pass everything else to the previous hook.
    import sys

    if getattr(sys.excepthook, "_immunotrack_abort_hook", False):
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if isinstance(exc, _Abort):
            return
        previous(exc_type, exc, tb)

    hook._immunotrack_abort_hook = True
    sys.excepthook = hook


#: Modalities whose images are sparse hot spots on a faint background (counts, spins, iron).
HOT_SPOT_MODALITIES = ("PT", "NM", "F19", "MPI", "OPT")


def scaled_intensities(data: np.ndarray, mask: np.ndarray | None, mode: str, percentile: float) -> np.ndarray:
    """The intensities the metric sees.

    "linear": the values, those above ``percentile`` clipped (a bladder or a
    hot spot would otherwise squeeze everything else into one bin).
    "log": ``log(1 + (v - min) / (p90 - min))`` after the same clipping. Hot-spot
    images (PET, SPECT, MPI) share with anatomy mostly their faint body
    background, a few percent of the hot spots' value: the logarithm spreads
    it over the histogram instead of leaving it in the first bin.
    "rank": each value replaced by its quantile (histogram equalisation).
    See ``docs/methods/registration.md#intensity-registration-mattes-mutual-information``.

    Parameters
    ----------
    data : ndarray
        The image values.
    mask : ndarray of bool, optional
        Voxels whose values set the percentiles (all when None).
    mode : {"linear", "log", "rank"}
        The mapping.
    percentile : float
        Values above this percentile (0-100) are clipped ("linear", "log").

    Returns
    -------
    ndarray
        Same shape: clipped values ("linear"), ``log1p`` of them in units of the 90th-percentile
        range ("log", float32), or quantiles in [0, 1] ("rank", float32).

    Examples
    --------
    >>> hot = np.array([0.0, 1, 1, 1, 1, 1, 1, 1, 2, 1000])
    >>> scaled_intensities(hot, None, "linear", 90.0).astype(float).round(1).tolist()   # p90 = 101.8
    [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 101.8]
    >>> scaled_intensities(hot, None, "log", 100.0).astype(float).round(2).tolist()
    [0.0, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 2.38]
    >>> scaled_intensities(hot, None, "rank", 100.0).astype(float).round(2).tolist()
    [0.0, 0.34, 0.34, 0.34, 0.34, 0.34, 0.34, 0.34, 0.66, 1.0]
    """
    values = data[mask] if mask is not None else data.ravel()
    step = max(1, values.size // 500_000)  # percentiles from a regular subsample of big images
    sample = values[::step]
    lo = float(sample.min())
    if mode == "rank":
        q = np.unique(np.percentile(sample, np.linspace(0, 100, 257)))
        return np.interp(data, q, np.linspace(0, 1, len(q))).astype(np.float32) if len(q) > 2 else data
    p90, hi = (float(v) for v in np.percentile(sample, [90.0, min(float(percentile), 100.0)]))
    if not hi > lo:  # fewer bright voxels than the percentile: keep them
        hi = float(values.max())
    if hi < float(values.max()):
        data = np.minimum(data, np.float32(hi))
    if mode == "log":
        scale = p90 - lo
        if not scale > 0:
            scale = (hi - lo) / 100.0
        data = np.log1p(np.maximum(data - lo, 0) / scale).astype(np.float32)
    return data


def intensity_mode(volume: Volume, intensity: str) -> str:
    """The intensity scaling used for a volume: ``"auto"`` is "log" for hot-spot modalities, else "linear".

    Parameters
    ----------
    volume : Volume
        Its ``modality`` decides "auto" (``HOT_SPOT_MODALITIES``: PT, NM, F19, MPI, OPT).
    intensity : {"auto", "linear", "log", "rank"}
        The requested mapping; anything but "auto" is returned unchanged.

    Returns
    -------
    str

    Examples
    --------
    >>> pet = Volume(np.ones((2, 2, 2)), np.eye(4), modality="PT")
    >>> intensity_mode(pet, "auto"), intensity_mode(pet.replace(modality="MR"), "auto"), intensity_mode(pet, "rank")
    ('log', 'linear', 'rank')
    """
    if intensity == "auto":
        return "log" if volume.modality in HOT_SPOT_MODALITIES else "linear"
    return intensity


def _to_sitk(volume: Volume, data: np.ndarray):
    import SimpleITK as sitk

    return volume_to_sitk(volume.replace(data=data), sitk.sitkFloat32)


def _mask_to_sitk(volume: Volume, mask: np.ndarray | None):
    if mask is None:
        return None
    return volume_to_sitk(volume.replace(data=mask.astype(np.uint8)))


def _level_factors(size, factor: float, minimum_size: int = 8):
    """Per-axis integer shrink factors of about ``factor``, keeping each axis >= ``minimum_size`` voxels."""
    f = max(1, int(np.floor(factor + 1e-6)))
    return [int(min(f, max(1, n // minimum_size))) for n in size]


def _shrink(image, factors, mask=False):
    import SimpleITK as sitk

    if all(f == 1 for f in factors):
        return image
    if mask:
        shrunk = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), [int(f) for f in factors])
        return sitk.Cast(shrunk >= 0.5, sitk.sitkUInt8)
    return sitk.BinShrink(image, [int(f) for f in factors])


@dataclass
class _Level:
    fixed: object
    moving: object
    fixed_mask: object
    moving_mask: object
    spacing_mm: float
    n_fixed: int


def _build_pyramid(f_img, m_img, f_mask, m_mask, shrink_factors, smoothing):
    """Images of each level, coarse to fine: block averages (BinShrink, which also anti-aliases),
    optionally smoothed; much cheaper than ITK's own smoothing of the full image at every level."""
    import SimpleITK as sitk

    f_sp = np.array(f_img.GetSpacing())
    m_sp = np.array(m_img.GetSpacing())
    # Registering finer than half the coarser image's voxel adds time, not accuracy.
    base = max(1.0, 0.5 * float(m_sp.max()) / float(f_sp.min()))
    levels = []
    for s in shrink_factors:
        ff = _level_factors(f_img.GetSize(), s * np.floor(base))
        level_spacing = float(np.min(f_sp * ff))
        # the moving image is block-averaged only where it is at least twice finer than the level
        mf = _level_factors(m_img.GetSize(), 0.5 * level_spacing / float(m_sp.min()))
        fl, ml = _shrink(f_img, ff), _shrink(m_img, mf)
        if smoothing > 0 and s > 1:
            fl = sitk.SmoothingRecursiveGaussian(fl, smoothing * level_spacing)
            ml = sitk.SmoothingRecursiveGaussian(ml, smoothing * level_spacing)
        fml = _shrink(f_mask, ff, mask=True) if f_mask is not None else None
        mml = _shrink(m_mask, mf, mask=True) if m_mask is not None else None
        n_fixed = int(np.prod(fl.GetSize())) if fml is None else int(sitk.GetArrayViewFromImage(fml).sum())
        levels.append(_Level(fl, ml, fml, mml, level_spacing, max(n_fixed, 1)))
    return levels


def signal_region(volume: Volume, data: np.ndarray, dilation_mm: float = 1.0) -> np.ndarray:
    """Where a hot-spot image carries signal: voxels clearly above its background, dilated.

    A PET, SPECT or MPI image of labelled cells is often a few hot organs on an
    empty (zero or noise) background; against an anatomical image, only the
    points near that signal tell one pose from another. The background level
    is the median and its spread the median absolute deviation (robust to the
    hot spots); a voxel counts when it is above the background by five such
    spreads (noise alone almost never is) and by 0.1 % of the range (an
    exactly empty background has no spread). The dilation keeps the edges,
    where the information is; above a noisy background it is at least two
    voxels, to give back the faint outer tail the threshold cut. See
    ``docs/methods/registration.md#sampling-where-the-signal-is``.

    Parameters
    ----------
    volume : Volume
        Gives the voxel size (mm) for the dilation.
    data : ndarray
        The image values (as the metric sees them).
    dilation_mm : float, default 1.0
        Radius of the dilation, mm (at least one voxel).

    Returns
    -------
    ndarray of bool
        Same shape as ``data``.

    Examples
    --------
    >>> data = np.zeros((12, 12, 12), np.float32)
    >>> data[5:7, 5:7, 5:7] = 10.0                          # one hot spot on an empty background
    >>> vol = Volume(data, np.eye(4), modality="PT")
    >>> mask = signal_region(vol, data, dilation_mm=1.0)
    >>> int(mask.sum()), bool(mask[4, 5, 5]), bool(mask[3, 5, 5])   # the 8 voxels and their 24 face neighbours
    (32, True, False)
    """
    from scipy import ndimage

    step = max(1, data.size // 500_000)  # robust statistics from a regular subsample of big images
    sample = data.ravel()[::step].astype(np.float64)
    floor = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - floor)))
    top = float(data.max())
    signal = data > floor + max(5.0 * spread, 1e-3 * (top - floor))
    # above a noisy background the threshold cuts the faint outer tail of every edge: give back two voxels
    voxels = 2 if spread > 0 else 1
    radius = np.maximum(np.round(float(dilation_mm) / np.asarray(volume.spacing)).astype(int), voxels)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g / r) ** 2 for g, r in zip(grid, radius)) <= 1.0
    return ndimage.binary_dilation(signal, structure=ball)


def _signal_level(level: _Level, signal_img, transform) -> _Level:
    """The level with its fixed points restricted to where the moving signal region lands under ``transform``.

    Sampling the same moving region mapped by the current pose keeps the
    samples informative (a sparse hot-spot image would otherwise leave most
    of them in empty background); the level is unchanged when too few fixed
    voxels fall in the region.
    """
    import SimpleITK as sitk

    mask = sitk.Resample(signal_img, level.fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    count = int(sitk.GetArrayViewFromImage(mask).sum())
    if count < _MIN_LEVEL_VOXELS:
        return level
    return _Level(level.fixed, level.moving, mask, level.moving_mask, level.spacing_mm, count)


def _centroid(image, mask, weighted: bool) -> np.ndarray:
    """Physical (LPS) centre of an image: of its intensity (moments) or of its field of view (geometry)."""
    import SimpleITK as sitk

    size = np.array(image.GetSize())
    if not weighted:
        return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2.0)))
    arr = sitk.GetArrayViewFromImage(image).astype(np.float64)
    sel = np.ones(arr.shape, bool) if mask is None else sitk.GetArrayViewFromImage(mask) > 0
    values = arr[sel]
    w = np.clip(arr - np.percentile(values, 10), 0, None) * sel
    total = w.sum()
    if not total > 0:
        return _centroid(image, mask, weighted=False)
    idx = [
        np.tensordot(w.sum(axis=tuple(a for a in range(3) if a != ax)), np.arange(arr.shape[ax]), 1) / total
        for ax in range(3)
    ]
    # array axes (z, y, x) -> sitk index (x, y, z)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1])))


class _Sampler:
    """Score transforms in NumPy on fixed sample points: mutual information and overlap.

    The points are a regular subset of the fixed level's voxels (inside its
    mask). The moving image is read by trilinear interpolation at the mapped
    points; only points that land inside it (and inside its mask) count. The
    score is the mutual information (nats) of the ``bins`` x ``bins`` joint
    histogram, each image binned between its own minimum and maximum, so it
    is comparable between transforms and higher is better. It is much cheaper
    than a SimpleITK evaluation, whose set-up costs more than the sum itself.
    """

    def __init__(self, level: _Level, bins: int, n_points: int):
        import SimpleITK as sitk

        f, m = level.fixed, level.moving
        farr = sitk.GetArrayViewFromImage(f)
        if level.fixed_mask is not None:
            flat = np.flatnonzero(sitk.GetArrayViewFromImage(level.fixed_mask))
        else:
            flat = np.arange(farr.size)
        step = max(1, len(flat) // max(int(n_points), 1))
        flat = flat[step // 2 :: step]
        zyx = np.array(np.unravel_index(flat, farr.shape), float)
        f_grid = np.array(f.GetDirection()).reshape(3, 3) * np.array(f.GetSpacing())
        self.points = zyx[::-1].T @ f_grid.T + np.array(f.GetOrigin())  # LPS mm
        self.bins = int(bins)
        fvals = farr.ravel()[flat].astype(np.float64)
        lo, hi = float(farr.min()), float(farr.max())
        self.fbin = np.clip(((fvals - lo) / max(hi - lo, 1e-30) * self.bins).astype(np.int64), 0, self.bins - 1)
        self.moving = sitk.GetArrayViewFromImage(m)
        self.moving_flat = np.ascontiguousarray(self.moving).ravel()
        self.m_lo, self.m_hi = float(self.moving.min()), float(self.moving.max())
        m_grid = np.array(m.GetDirection()).reshape(3, 3) * np.array(m.GetSpacing())
        self.m_inv = np.linalg.inv(m_grid)
        self.m_origin = np.array(m.GetOrigin())
        self.m_size = np.array(m.GetSize())
        self.m_mask = None if level.moving_mask is None else sitk.GetArrayViewFromImage(level.moving_mask)

    def score(self, fixed_to_moving_ras, chance: bool = False) -> tuple:
        """(mutual information in nats or NaN, fraction of points inside the moving image[, chance level]).

        With ``chance``, also the mean MI of the same values with their pairing
        shuffled: the positive bias a histogram estimate has for unrelated
        images, which grows as the points get fewer.
        """
        lps = ras_to_lps_transform(fixed_to_moving_ras)
        idx = (self.points @ lps[:3, :3].T + lps[:3, 3] - self.m_origin) @ self.m_inv.T  # x, y, z
        inside = np.all((idx >= 0) & (idx <= self.m_size - 1), axis=1)
        sel = np.flatnonzero(inside)
        idx = idx[sel]
        if self.m_mask is not None and len(sel):
            r = np.round(idx).astype(np.int64)
            keep = self.m_mask[r[:, 2], r[:, 1], r[:, 0]] > 0
            sel, idx = sel[keep], idx[keep]
        overlap = len(sel) / max(len(self.points), 1)
        if len(sel) < 50:
            return (float("nan"), overlap) + ((float("nan"),) if chance else ())
        base = np.minimum(np.floor(idx).astype(np.int64), self.m_size - 2)
        frac = idx - base
        # trilinear interpolation by flat indices into the (z, y, x) array: faster than 3-axis fancy indexing
        nz_, ny_, nx_ = self.moving.shape
        start = (base[:, 2] * ny_ + base[:, 1]) * nx_ + base[:, 0]
        values = np.zeros(len(sel))
        for dz in (0, 1):
            wz = frac[:, 2] if dz else 1 - frac[:, 2]
            for dy in (0, 1):
                wzy = wz * (frac[:, 1] if dy else 1 - frac[:, 1])
                row = start + (dz * ny_ + dy) * nx_
                values += wzy * ((1 - frac[:, 0]) * self.moving_flat[row] + frac[:, 0] * self.moving_flat[row + 1])
        mbin = np.clip(
            ((values - self.m_lo) / max(self.m_hi - self.m_lo, 1e-30) * self.bins).astype(np.int64), 0, self.bins - 1
        )
        mi = self._mi(self.fbin[sel], mbin)
        if not chance:
            return mi, overlap
        # the same values with their pairing shuffled: what unrelated images of these histograms give
        rng = np.random.default_rng(0)
        return mi, overlap, float(np.mean([self._mi(self.fbin[sel], rng.permutation(mbin)) for _ in range(3)]))

    def _mi(self, fbin: np.ndarray, mbin: np.ndarray) -> float:
        joint = np.bincount(fbin * self.bins + mbin, minlength=self.bins**2).reshape(self.bins, self.bins)
        joint = joint / joint.sum()
        outer = joint.sum(1)[:, None] * joint.sum(0)[None, :]
        nz = joint > 0
        return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


#: fraction of fixed sample points that must land in the moving image after initialisation
_MIN_OVERLAP = 0.05
#: fewest fixed voxels (inside the mask) a pyramid level must have
_MIN_LEVEL_VOXELS = 300
#: hot-spot masks: voxels above this fraction of the image maximum, dilated by this many mm
_HOT_FRACTION, _HOT_DILATION_MM = 0.05, 3.0
#: below this mutual information above chance (nats) a result is refused (force=True keeps it) ...
_NO_INFORMATION = 0.1
#: ... and below this one it comes with a warning
_LOW_INFORMATION = 0.2
#: a second optimum of the search closer than this share of the result's information above chance: ambiguous
_AMBIGUITY = 0.05
#: a result with fewer of the fixed sample points inside the moving image than this is doubtful
_POOR_OVERLAP = 0.5
#: points of the reported (NumPy) mutual information
_QC_POINTS = 20000
#: convergence of the coarser levels: a step below this fraction of the level's voxel (the finest uses min_step_mm)
_COARSE_MIN_STEP = 0.01
#: sample points on the finest level, the one above, and coarser ones
_DEFAULT_SAMPLES = (12000, 12000, 3000)
#: hot-spot moving images against anatomy: their signal region (dilated this much, mm) is where the points go,
#: unless it covers more than this share of the moving image (then sampling it gains nothing)
_SIGNAL_DILATION_MM, _SIGNAL_MAX_SHARE = 1.0, 0.8
#: ... or, above a noisy background (where the threshold cuts into every edge), this share: sparse hot spots only
_SIGNAL_MAX_SHARE_NOISY = 0.1


def _box_points(sampler) -> np.ndarray:
    """The 8 corners (RAS mm) of the box around a sampler's fixed points: where two poses are compared."""
    lo, hi = sampler.points.min(axis=0), sampler.points.max(axis=0)
    corners = np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in itertools.product((0, 1), repeat=3)])
    return corners * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS


def _metric_method(level: _Level, bins: int, samples: int, seed: int):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    fraction = min(1.0, samples / level.n_fixed)
    if fraction >= 1.0:
        reg.SetMetricSamplingStrategy(reg.NONE)
    else:
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetMetricSamplingPercentage(fraction, int(seed))
    if level.fixed_mask is not None:
        reg.SetMetricFixedMask(level.fixed_mask)
    if level.moving_mask is not None:
        reg.SetMetricMovingMask(level.moving_mask)
    # gradients computed at the sample points only: much cheaper than a
    # gradient image of the whole volume at every level
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _euler(center, translation, angles=(0.0, 0.0, 0.0)):
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(c) for c in center])
    tx.SetRotation(*[float(a) for a in angles])
    tx.SetTranslation([float(t) for t in translation])
    return tx


_INITIALIZERS = ("auto", "moments", "geometry", "none")
_INTENSITY_MODES = ("auto", "linear", "log", "rank")
#: The transform kinds :func:`register` and :func:`~.landmarks.register_landmarks` estimate.
TRANSFORM_KINDS = ("rigid", "affine")


def register(
    fixed: Volume,
    moving: Volume,
    transform: str = "rigid",
    *,
    fixed_mask=None,
    moving_mask=None,
    initializer: str = "auto",
    bins: int = 32,
    shrink_factors: Sequence[float] = (4, 2, 1),
    smoothing: float = 0.0,
    samples=None,
    max_iterations: int = 200,
    min_step_mm: float = 0.04,
    intensity: str = "auto",
    hot_spots: bool | None = None,
    clip_percentile: float = 99.9,
    force: bool = False,
    seed: int = 1,
    relaxation: float = 0.7,
    capture_range_deg: float = 30.0,
    search_step_deg: float = 15.0,
    n_starts: int = 3,
    progress=None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` by Mattes mutual information: rigid, then (optionally) affine.

    The moving image is not resampled: the result is a world-to-world
    transform (see the module docstring for its direction).

    Parameters
    ----------
    fixed, moving : Volume
        3D volumes of the same subject, any modalities, grids and orientations.
    transform : {"rigid", "affine"}
        "affine" runs the rigid stages first, then 12 parameters on the two finest levels.
    fixed_mask, moving_mask : Volume or bool array, optional
        Where the metric is computed (the body, the organ to align). A Volume
        is carried onto its image's grid through world coordinates; an array
        must have the image's spatial shape.
    initializer : {"auto", "moments", "geometry", "none"}
        Starting translation: intensity centres of mass ("moments"), field-of-view
        centres ("geometry"), the images as they are ("none"), or whichever of the
        three gives the best metric on the coarsest level ("auto").
    bins : int
        Histogram bins of the Mattes metric (32-64 usual; docs/methods/registration.md#intensity-registration-mattes-mutual-information).
    shrink_factors : sequence of float
        Pyramid levels as multiples of the fixed voxel size, coarse to fine. The
        finest level never goes below half the moving voxel size.
    smoothing : float
        Gaussian sigma of coarse levels, as a fraction of the level's voxel size.
    samples : int or sequence of int, optional
        Fixed-image points (regular grid, inside the mask) per level, coarse to
        fine; by default 12000 on the finest level, 6000 on the next, 3000 on coarser ones.
    max_iterations : int
        Per level.
    min_step_mm : float
        Convergence: the optimiser stops when its step (in mm of physical shift)
        is below this at the finest level.
    intensity : {"auto", "linear", "log", "rank"}
        What the metric sees of each image: "linear" values (clipped at
        ``clip_percentile``), "log" (compressed so a faint body background
        counts beside hot spots) or "rank" (histogram-equalised quantiles);
        "auto" takes "log" for hot-spot modalities (PT, NM, F19, MPI, OPT) and
        "linear" for anatomy (MR, CT, ...).
    hot_spots : bool, optional
        Compute the metric only around the fixed image's hot spots (voxels above
        5 % of its maximum, dilated by 3 mm), where two hot-spot images share
        their information; the rest is background noise. By default (None) on
        when both images are hot-spot modalities (PET, SPECT, MPI, 19F) and no
        fixed mask is given: MPI or 19F registered to PET. The mask counts as
        the fixed mask.
    clip_percentile : float
        Linear intensities above this percentile are clipped for the metric (hot spots).
    force : bool
        Return a doubtful result (a metric worse than at the start, or images
        that share no usable information) with a warning instead of refusing it.
    seed : int
        Seed (>= 1) of the sample grid's jitter, so that results are reproducible
        (SimpleITK reads 0 as "seed from the clock").
    relaxation : float
        The optimiser (regular-step gradient descent, steps in mm of physical
        shift) multiplies its step by this when the gradient turns back; 0.7
        rather than ITK's 0.5 keeps noise in the metric from stopping it early.
    capture_range_deg : float
        Orientation search: rotations of up to this many degrees about each axis
        (in ``search_step_deg`` steps, about the fixed centre of mass, after the
        starting translation) are scored on the coarsest level and the best
        ``n_starts`` distinct ones optimised there; the best of those is refined.
        30 (default) finds poses up to about +-30 degrees and +-20 mm; 0 turns
        the search off (start from the translation only, as before).
    search_step_deg : float
        Step of the orientation grid (15 degrees: 125 candidates at 30).
    n_starts : int
        How many of the best grid rotations (not grid neighbours of each other)
        are optimised on the coarsest level; the start without rotation is
        always optimised too.
    progress : callable, optional
        ``progress(fraction, message)``; may raise Cancelled.

    Returns
    -------
    RegistrationResult
        ``parameters["search"]`` records the search (candidates, the starts
        optimised and their metric); ``parameters["doubtful"]`` is True when a
        warning says the result may be wrong.

    Raises
    ------
    InputError
        2D, empty or constant images, masks outside their image, images that do
        not overlap, and (unless ``force``) a result worse than the start or
        images that share no usable information: each with what to try instead.

    Notes
    -----
    The method, and why: a translation from centres of mass or field-of-view
    centres (the better of the two and the identity); a pyramid of block
    averages; an orientation search on the coarsest level (125 rotations to
    +-30 degrees about the fixed centre of mass, scored together by a NumPy
    joint-histogram MI on a few thousand points, see :mod:`.search`; the best
    ``n_starts`` distinct ones and the unrotated start optimised, the best
    kept), because a gradient optimiser started 30 degrees off settles in a
    wrong optimum; on each level Mattes MI on a regular grid of fixed points
    (jittered, seeded) optimised by regular-step gradient descent with
    physical-shift scales; rigid, then affine on the two finest levels. The
    reported metric is a separate NumPy mutual information on 20000 fixed
    points, the same points before and after, so the two compare.

    Doubt, besides the refusals: a warning (kept in ``warnings``, and
    ``parameters["doubtful"]``) when another optimised start more than four
    coarse voxels away ends within 5 % of the result's information above
    chance (two poses fit: a symmetric field of view), when under half of the
    fixed points fall inside the moving image after registration, or when the
    images share little information.

    Examples
    --------
    >>> from napari_immunotrack.simulate import registration_pair
    >>> pair = registration_pair(seed=0)        # MRI and PET of a mouse, known transform
    >>> result = register(pair["fixed"], pair["moving"], transform="rigid")
    >>> error = result.transform_points(pair["landmarks_fixed"]) - pair["landmarks_moving"]
    >>> bool(np.linalg.norm(error, axis=1).max() < 1.0)   # mm
    True
    >>> shown = pair["moving"].replace(affine=result.apply_to_affine(pair["moving"].affine))
    """
    import SimpleITK as sitk

    from ..errors import Cancelled

    t_start = time.perf_counter()
    if transform not in TRANSFORM_KINDS:
        raise InputError(f"transform must be 'rigid' or 'affine', not {transform!r}.")
    if initializer not in _INITIALIZERS:
        raise InputError(f"initializer must be one of {', '.join(_INITIALIZERS)}, not {initializer!r}.")
    if not all(m in _INTENSITY_MODES for m in ((intensity,) if isinstance(intensity, str) else intensity)):
        raise InputError(f"intensity must be one of {', '.join(_INTENSITY_MODES)}, not {intensity!r}.")
    if int(seed) < 1:
        raise InputError(f"seed must be a whole number >= 1 (0 would mean a random seed), not {seed}.")
    if not 8 <= int(bins) <= 256:
        raise InputError(f"bins must be between 8 and 256 (32-64 is usual), not {bins}.")
    if not (np.isfinite(capture_range_deg) and 0 <= float(capture_range_deg) <= 90):
        raise InputError(
            f"capture_range_deg must be between 0 (no orientation search) and 90 degrees, not {capture_range_deg}."
        )
    if not 1 <= float(search_step_deg) <= 45:
        raise InputError(f"search_step_deg must be between 1 and 45 degrees (15 is usual), not {search_step_deg}.")
    if int(n_starts) < 1:
        raise InputError(f"n_starts must be at least 1, not {n_starts}.")
    notes: list = []
    f_data = _check_image(fixed, "fixed", notes)
    m_data = _check_image(moving, "moving", notes)
    f_mask = _check_mask(fixed_mask, fixed, "fixed")
    m_mask = _check_mask(moving_mask, moving, "moving")
    if hot_spots is None:
        hot_spots = fixed_mask is None and fixed.modality in _HOT_MATCH and moving.modality in _HOT_MATCH
    if hot_spots:
        f_mask = _hot_spot_mask(fixed, f_data) if f_mask is None else f_mask & _hot_spot_mask(fixed, f_data)
    for data, mask, role in ((f_data, f_mask, "fixed"), (m_data, m_mask, "moving")):
        if mask is not None and float(np.ptp(data[mask])) == 0:
            raise InputError(f"the {role} image is constant inside its mask; draw the mask over the anatomy to align.")
    pair_modes = (intensity, intensity) if isinstance(intensity, str) else tuple(intensity)
    modes = (intensity_mode(fixed, pair_modes[0]), intensity_mode(moving, pair_modes[1]))
    f_data = scaled_intensities(f_data, f_mask, modes[0], clip_percentile)
    m_data = scaled_intensities(m_data, m_mask, modes[1], clip_percentile)
    _progress.report(progress, 0.0, "preparing images")

    f_img, m_img = _to_sitk(fixed, f_data), _to_sitk(moving, m_data)
    # a hot-spot image (PET, SPECT, MPI of labelled cells) against anatomy: sample where it has signal
    # (docs/methods/registration.md#sampling-where-the-signal-is)
    signal_img, signal_share = None, None
    if f_mask is None and m_mask is None and not hot_spots and moving.modality in HOT_SPOT_MODALITIES:
        region = signal_region(moving, m_data, _SIGNAL_DILATION_MM)
        signal_share = float(region.mean())
        empty = float(np.median(m_data)) == float(m_data.min())  # at least half the voxels hold no signal at all
        if (
            0 < signal_share <= (_SIGNAL_MAX_SHARE if empty else _SIGNAL_MAX_SHARE_NOISY)
            and int(region.sum()) >= _MIN_LEVEL_VOXELS
        ):
            signal_img = _mask_to_sitk(moving, region)
    levels = _build_pyramid(
        f_img,
        m_img,
        _mask_to_sitk(fixed, f_mask),
        _mask_to_sitk(moving, m_mask),
        [float(s) for s in shrink_factors],
        float(smoothing),
    )
    # a level with too few fixed voxels (a small mask) cannot estimate a histogram: start finer
    while len(levels) > 1 and levels[0].n_fixed < _MIN_LEVEL_VOXELS:
        levels.pop(0)
    if levels[-1].n_fixed < _MIN_LEVEL_VOXELS:
        raise InputError(
            f"only {levels[-1].n_fixed} fixed voxels are left for the metric (mask or image too "
            "small); enlarge the mask or use landmarks."
        )
    coarse, finest = levels[0], levels[-1]
    if samples is None:
        per_level = [_DEFAULT_SAMPLES[min(len(levels) - 1 - i, 2)] for i in range(len(levels))]
    else:
        per_level = [int(v) for v in np.atleast_1d(samples)]
        per_level = per_level * len(levels) if len(per_level) == 1 else per_level
        if len(per_level) != len(levels) or min(per_level) < 500:
            raise InputError(f"samples must be one number (>= 500) or one per level ({len(levels)}), not {samples}.")

    # ---- initialisation: a translation (rotation centre at the fixed centre of mass)
    c_fixed = _centroid(coarse.fixed, coarse.fixed_mask, weighted=True)
    candidates = {
        "none": _euler(c_fixed, (0, 0, 0)),
        "geometry": _euler(
            _centroid(coarse.fixed, None, False),
            _centroid(coarse.moving, None, False) - _centroid(coarse.fixed, None, False),
        ),
        "moments": _euler(c_fixed, _centroid(coarse.moving, coarse.moving_mask, weighted=True) - c_fixed),
    }
    names = list(candidates) if initializer == "auto" else [initializer]
    coarse_sampler = _Sampler(coarse, bins, max(per_level[0], 3000))
    scores = {name: coarse_sampler.score(sitk_transform_to_matrix(candidates[name]))[::-1] for name in names}
    usable = {k: v for k, v in scores.items() if v[0] >= _MIN_OVERLAP and np.isfinite(v[1])}
    if not usable:
        best = max(v[0] for v in scores.values())
        raise InputError(
            f"the images do not overlap after initialisation ({initializer}: {100 * best:.0f}% of the fixed image "
            "falls inside the moving one); check that both show the same subject and body part, try another "
            "initializer (moments, geometry, none) or pair landmarks."
        )
    init_name = max(usable, key=lambda k: usable[k][1])
    tx = candidates[init_name]
    if usable[init_name][0] < 0.25:
        warn_or_collect(
            f"only {100 * usable[init_name][0]:.0f}% of the fixed image overlaps the moving one after "
            "initialisation; check the result or use masks or landmarks.",
            notes,
        )
    # the reported metric: mutual information on the finest level's points (higher is better)
    fine_sampler = _Sampler(finest, bins, _QC_POINTS)
    metric_identity = fine_sampler.score(np.eye(4))[0]
    metric_init = fine_sampler.score(sitk_transform_to_matrix(tx))[0]
    if signal_img is not None:
        # the search's candidates are scored on points of the moving signal region read in the coarse fixed
        # level (fixed points would mostly fall where a sparse hot-spot image is empty)
        coarse_signal = _Sampler(
            _Level(m_img, coarse.fixed, signal_img, None, 0.0, 1), bins, len(coarse_sampler.points)
        )

        def search_scores(matrices):
            return score_transforms(coarse_signal, np.linalg.inv(np.asarray(matrices, float)))

        # the starts are compared on points of the moving signal region (the same points for every pose, read
        # in the fixed image): a sparse hot-spot image leaves too few informative points among the fixed ones
        signal_sampler = _Sampler(_Level(m_img, finest.fixed, signal_img, None, 0.0, 1), bins, _QC_POINTS)

        def select_score(matrix):
            return signal_sampler.score(np.linalg.inv(matrix))[0]
    else:

        def search_scores(matrices):
            return score_transforms(coarse_sampler, matrices)

        def select_score(matrix):
            return fine_sampler.score(matrix)[0]

    # ---- stages: rigid on every level, then affine on the two finest
    plan = [("rigid", i, lv) for i, lv in enumerate(levels)]
    if transform == "affine":
        plan += [("affine", i, lv) for i, lv in enumerate(levels) if i >= len(levels) - 2]
    stages = []
    _install_abort_hook()
    state = {"cancelled": None}
    n_steps = len(plan)

    def run_stage(tx, kind, index, level, k, note="", rate=1.0):
        """Optimise ``tx`` in place on one level; returns the stage record."""
        if signal_img is not None:
            level = _signal_level(level, signal_img, tx)
        reg = _metric_method(level, bins, per_level[index], seed)
        last = index == len(levels) - 1
        step_min = float(min_step_mm) if last else max(float(min_step_mm), _COARSE_MIN_STEP * level.spacing_mm)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=rate * level.spacing_mm,
            minStep=step_min,
            numberOfIterations=int(max_iterations),
            relaxationFactor=float(relaxation),
            gradientMagnitudeTolerance=1e-8,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(tx, inPlace=True)
        label = f"{kind} level {index + 1}/{len(levels)} ({level.spacing_mm:.3g} mm){note}"

        def on_iteration():
            it = reg.GetOptimizerIteration()
            frac = (k + min(it / 60.0, 0.95)) / n_steps
            try:
                _progress.report(progress, frac, f"{label}: iteration {it}, Mattes cost {reg.GetMetricValue():.4f}")
            except Cancelled as exc:
                state["cancelled"] = exc
                raise _Abort() from None

        reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
        t0 = time.perf_counter()
        try:
            _progress.report(progress, k / n_steps, label)
            with one_itk_thread():  # the same call gives the same transform (docs/methods/registration.md#determinism)
                reg.Execute(level.fixed, level.moving)
        except RuntimeError as exc:
            if state["cancelled"] is not None:
                raise state["cancelled"] from None
            text = str(exc)
            if "outside" in text.lower() or "valid points" in text.lower() or "samples" in text.lower():
                raise InputError(
                    f"the registration lost the overlap between the images at the {label}; check that both show "
                    "the same body part, add masks, or pair landmarks."
                ) from None
            raise
        return {
            "stage": kind,
            "level": index + 1,
            "voxel_mm": round(level.spacing_mm, 4),
            "iterations": int(reg.GetOptimizerIteration()),
            "mattes_metric": round(float(reg.GetMetricValue()), 6),
            "stop": reg.GetOptimizerStopConditionDescription(),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    # ---- orientation search (docs/methods/registration.md): score a grid of rotations about the fixed centre
    # on the coarsest level, optimise the best few distinct starts there, keep the best, refine it
    search_record: dict = {
        "capture_range_deg": float(capture_range_deg),
        "step_deg": float(search_step_deg),
        "starts": int(n_starts),
    }
    rival = None
    if capture_range_deg > 0:
        t_search = time.perf_counter()
        _progress.report(progress, 0.0, "orientation search")
        rotations = orientation_grid(capture_range_deg, search_step_deg)
        # the rotations turn about the starting translation that scores best with points outside the moving
        # field of view counted as no signal (the choice above drops them, which favours pushing the anatomy
        # out of view when the images are far apart); the unrotated start chosen above is optimised too
        names = list(usable)
        fair = search_scores([sitk_transform_to_matrix(candidates[n]) for n in names])[0]
        grid_from = names[int(np.argmax(fair))]
        starts_from = [grid_from] + ([init_name] if init_name != grid_from else [])
        angles = np.concatenate([rotations, np.zeros((len(starts_from) - 1, 3))])
        origin = [grid_from] * len(rotations) + starts_from[1:]

        def grid_transform(i):
            base = candidates[origin[i]]
            return _euler(base.GetCenter(), base.GetTranslation(), np.deg2rad(angles[i]))

        base = candidates[grid_from]
        grid_scores, grid_overlap = search_scores(
            euler_matrices_ras(rotations, base.GetCenter(), base.GetTranslation())
        )
        # a candidate that pushes most of the fixed image out of the moving one cannot be scored fairly
        grid_scores = np.where(grid_overlap >= 0.5 * float(grid_overlap.max()), grid_scores, -np.inf)
        picks = distinct_best(grid_scores, rotations, max(1, int(n_starts)), search_step_deg)
        # the unrotated start chosen as before is always optimised too: small misalignments are found as before
        unrotated = len(rotations) if init_name != grid_from else 0
        if unrotated not in picks:
            picks.append(unrotated)
        n_steps = len(plan) + len(picks)
        tried = []
        for j, i in enumerate(picks):
            start_tx = grid_transform(i)
            record = run_stage(start_tx, "rigid", 0, coarse, j, f", start {j + 1}/{len(picks)}")
            record["start_deg"] = [float(a) for a in angles[i]]
            record["initializer"] = origin[i]
            m = sitk_transform_to_matrix(start_tx)
            mi = select_score(m)
            record["mutual_information"] = plain_number(mi)
            tried.append((mi, start_tx, m, record))
        tried.sort(key=lambda item: -item[0] if np.isfinite(item[0]) else np.inf)
        best_mi, tx, best_matrix, best_record = tried[0]
        init_name = best_record["initializer"]
        # the winner once more on the coarse level with a fresh step: from a start up to half a grid step
        # off (or 30 degrees, unrotated), the regular-step optimiser can shrink its step and stop ~1 mm short
        # (kept only if it improves the metric: a fresh full step can also jump out of the basin)
        polished = sitk.Euler3DTransform(tx)
        polish = run_stage(polished, "rigid", 0, coarse, len(picks), ", again from the best start")
        polished_matrix = sitk_transform_to_matrix(polished)
        polished_mi = select_score(polished_matrix)
        restarted = bool(np.isfinite(polished_mi) and polished_mi > best_mi)
        best_record = dict(
            best_record,
            iterations=best_record["iterations"] + polish["iterations"],
            restarted=restarted,
            seconds=round(best_record["seconds"] + polish["seconds"], 3),
        )
        if restarted:
            tx, best_matrix, best_mi = polished, polished_matrix, polished_mi
            best_record.update(
                mattes_metric=polish["mattes_metric"], stop=polish["stop"], mutual_information=plain_number(polished_mi)
            )
        stages.append(best_record)
        # a clearly different pose (more than four coarse voxels somewhere in the fixed sample's box: not a
        # start that merely stopped short of the same optimum) kept to compare with the final result: two
        # optima nearly equal mean the answer is not unique
        box = _box_points(fine_sampler)
        far = [
            t
            for t in tried[1:]
            if np.isfinite(t[0]) and pose_distance_mm(t[2], best_matrix, box) > max(4.0 * coarse.spacing_mm, 4.0)
        ]
        if far:
            rival = far[0]
        search_record.update(
            {
                "candidates": int(len(rotations)),
                "rotated_about": grid_from,
                "seconds": round(time.perf_counter() - t_search, 3),
                "best_grid_deg": [float(a) for a in rotations[int(np.argmax(grid_scores))]],
                "optimised": [t[3] for t in tried],
            }
        )
        plan = plan[1:]
        first_step = len(picks) + 1
    else:
        first_step = 0
    for k, (kind, index, level) in enumerate(plan):
        if kind == "affine" and not isinstance(tx, sitk.AffineTransform):
            affine = sitk.AffineTransform(3)
            affine.SetCenter(tx.GetCenter())
            affine.SetMatrix(tx.GetMatrix())
            affine.SetTranslation(tx.GetTranslation())
            tx = affine
        stages.append(run_stage(tx, kind, index, level, first_step + k))
    total_iterations = sum(int(s["iterations"]) for s in stages)
    if capture_range_deg > 0:
        total_iterations += sum(int(t[3]["iterations"]) for t in tried[1:])

    matrix = sitk_transform_to_matrix(tx)
    metric_final, overlap_final, chance = fine_sampler.score(matrix, chance=True)
    start = metric_identity if np.isfinite(metric_identity) else metric_init
    parameters = {
        "transform": transform,
        "optimised_metric": "MattesMutualInformation",
        "bins": int(bins),
        "reported_metric": METRIC_NOTE,
        "reported_metric_points": int(len(fine_sampler.points)),
        "initializer": initializer,
        "initializer_used": init_name,
        "initializer_scores": {
            k: {"overlap": round(v[0], 4), "mutual_information": plain_number(v[1])} for k, v in scores.items()
        },
        "overlap_final": round(float(overlap_final), 4),
        "mutual_information_chance": plain_number(chance),
        "levels_voxel_mm": [round(lv.spacing_mm, 4) for lv in levels],
        "shrink_factors": [float(s) for s in shrink_factors],
        "smoothing_fraction": float(smoothing),
        "samples_per_level": per_level,
        "sampling": "regular (jittered)",
        "optimizer": "RegularStepGradientDescent",
        "max_iterations_per_level": int(max_iterations),
        "min_step_mm": float(min_step_mm),
        "relaxation": float(relaxation),
        "scales": "physical shift",
        "interpolator": "linear",
        "intensity": intensity,
        "intensity_used": {"fixed": modes[0], "moving": modes[1]},
        "clip_percentile": float(clip_percentile),
        "seed": int(seed),
        "fixed_mask": fixed_mask is not None,
        "moving_mask": m_mask is not None,
        "hot_spot_mask": bool(hot_spots),
        "signal_region": None
        if signal_img is None
        else {"dilation_mm": _SIGNAL_DILATION_MM, "share_of_moving": round(float(signal_share or 0.0), 4)},
        "search": search_record,
    }
    if transform == "affine":
        sv = np.linalg.svd(matrix[:3, :3], compute_uv=False)
        if sv.max() / sv.min() > 1.5 or np.linalg.det(matrix[:3, :3]) <= 0:
            warn_or_collect(
                f"the affine result scales the anatomy by {sv.min():.2f}-{sv.max():.2f} (or mirrors it); "
                "an affine fit this far from rigid is doubtful: try transform='rigid' or masks.",
                notes,
            )
    if not np.isfinite(metric_final):
        raise InputError(
            "the registration moved the moving image off the fixed one (no overlap left); check that "
            "both show the same body part, add masks, or pair landmarks."
        )
    doubts = []
    if np.isfinite(start) and metric_final < start - max(0.002, 0.01 * abs(start)):
        doubts.append(
            f"the registration made the metric worse (mutual information {start:.4f} at the start, "
            f"{metric_final:.4f} after), so the result is not trustworthy; try transform='rigid', masks "
            "around the anatomy, another initializer, or landmarks"
        )
    # a histogram's MI is biased upwards even for unrelated images (the more so, the fewer the points):
    # what counts is the information above that chance level
    if metric_final - chance < _NO_INFORMATION:
        doubts.append(
            f"the images share no usable information (mutual information {metric_final:.3f} nats where "
            f"unrelated images give {chance:.3f}), so intensities cannot align them; pair landmarks "
            "(fiducials), or register to an image that shows the same thing (e.g. MPI or 19F to PET)"
        )
    if doubts and not force:
        raise InputError(doubts[0] + ".")
    for doubt in doubts:
        warn_or_collect(doubt + ".", notes)
    if rival is not None:
        # the other optimum, scored on the same points as the result: nearly as good means not unique
        rival_mi = fine_sampler.score(rival[2])[0]
        margin = _AMBIGUITY * max(metric_final - chance, 1e-9)
        parameters["search"]["rival_mutual_information"] = plain_number(rival_mi)
        parameters["search"]["rival_distance_mm"] = round(
            pose_distance_mm(rival[2], matrix, _box_points(fine_sampler)), 2
        )
        if np.isfinite(rival_mi) and rival_mi >= metric_final - margin:
            doubts.append("ambiguous")
            warn_or_collect(
                f"two clearly different poses fit almost equally well (mutual information {metric_final:.4f} and "
                f"{rival_mi:.4f}, {parameters['search']['rival_distance_mm']:.1f} mm apart), so the result may be "
                "the wrong one; check it by eye (checkerboard), add a mask of distinctive anatomy, or use "
                "landmarks.",
                notes,
            )
    if overlap_final < _POOR_OVERLAP:
        doubts.append("overlap")
        warn_or_collect(
            f"only {100 * overlap_final:.0f}% of the fixed image falls inside the moving one after "
            "registration; unless the moving field of view is really that small, the result is "
            "doubtful: check it by eye, or use masks or landmarks.",
            notes,
        )
    if not doubts and metric_final - chance < _LOW_INFORMATION:
        doubts.append("low information")
        warn_or_collect(
            f"the images share little information (mutual information {metric_final:.3f} nats, chance "
            f"{chance:.3f}), so this "
            "registration may be unreliable; check it by eye (checkerboard), or use landmarks.",
            notes,
        )
    parameters["doubtful"] = bool(doubts)
    _progress.report(progress, 1.0, f"done: mutual information {metric_final:.4f} nats")
    return RegistrationResult(
        fixed_to_moving=matrix,
        metric_initial=metric_identity,
        metric_final=metric_final,
        iterations=total_iterations,
        parameters=parameters,
        stages=stages,
        elapsed_s=time.perf_counter() - t_start,
        method="intensity",
        warnings=notes,
        metric_after_init=metric_init,
    )


def evaluate_metric(
    fixed: Volume,
    moving: Volume,
    fixed_to_moving=None,
    *,
    fixed_mask=None,
    moving_mask=None,
    bins: int = 32,
    points: int = _QC_POINTS,
    intensity: str = "auto",
) -> float:
    """The mutual information (nats, higher is better) of a transform, as :func:`register` reports it.

    Use it for the "metric before and after" of a transform that did not come
    from :func:`register` (landmarks, a file). NaN when the images do not overlap.

    Parameters
    ----------
    fixed, moving : Volume
        The two 3D images.
    fixed_to_moving : (4, 4) array, optional
        RAS world matrix from fixed to moving points (mm); identity when None.
    fixed_mask, moving_mask : Volume or ndarray of bool, optional
        Only voxels inside count (on the image's own grid).
    bins : int, default 32
        Histogram bins per image.
    points : int, default 20000
        Fixed-image sample points (a regular grid, reproducible).
    intensity : {"auto", "linear", "log", "rank"}, default "auto"
        Intensity mapping before the histogram (see :func:`scaled_intensities`).

    Returns
    -------
    float
        Mattes mutual information in nats (higher is better), NaN without overlap.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = Volume(rng.random((20, 20, 20)), np.eye(4))
    >>> shifted = np.eye(4)
    >>> shifted[0, 3] = 3.0
    >>> evaluate_metric(v, v) > evaluate_metric(v, v, shifted)
    True
    """
    f_data = _check_image(fixed, "fixed")
    m_data = _check_image(moving, "moving")
    f_mask = _check_mask(fixed_mask, fixed, "fixed")
    m_mask = _check_mask(moving_mask, moving, "moving")
    f_img = _to_sitk(fixed, scaled_intensities(f_data, f_mask, intensity_mode(fixed, intensity), 99.9))
    m_img = _to_sitk(moving, scaled_intensities(m_data, m_mask, intensity_mode(moving, intensity), 99.9))
    level = _build_pyramid(f_img, m_img, _mask_to_sitk(fixed, f_mask), _mask_to_sitk(moving, m_mask), [1.0], 0.0)[0]
    matrix = np.eye(4) if fixed_to_moving is None else np.asarray(fixed_to_moving, float)
    return _Sampler(level, bins, points).score(matrix)[0]
