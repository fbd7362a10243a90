"""Partial-volume correction of ROI readouts: GTM (regional means) and RBV (a corrected image).

Method, parameters and validity limits: ``docs/methods/pvc.md``.

A scanner's point-spread function (PSF) spills activity out of small hot
objects into their surroundings and in from hot neighbours, so the mean over
an ROI is not the mean of the object. With the ROIs (carried from the MRI grid
with partial-voxel weights, :func:`napari_immunotrack.analysis.roi.carry_rois`)
and a Gaussian model of the PSF, both effects can be undone for regional means:

GTM (geometric transfer matrix; Rousset et al., J Nucl Med 1998 39:904)
    Region j has weight map R_j (partial-voxel weights, 0..1). The mean that
    ROI i measures of a unit activity in region j is
    ``w_ij = sum(blur(R_j) * R_i) / sum(R_i)``; the measured means are
    ``t = W x`` for the true regional means ``x``, solved by least squares.
    The condition number of W is reported; W is ill-conditioned when ROIs are
    smaller than the PSF (the correction then amplifies noise).
Within-region templates (the default; docs/methods/pvc.md#within-region)
    Labelled cells sit in foci, not uniformly in an organ; a focus away from
    the border loses less signal than a uniform region, so uniform indicators
    over-correct. Every region the uniform model does not explain (relative RMS
    misfit > 8 %) gets a template ``R_j * s_j``: the shape of a region-constrained,
    accelerated Richardson-Lucy deconvolution of the data (all regions jointly,
    activity never leaving its region), and W is built from ``blur(R_j * s_j)``.
    Uniform regions keep ``s_j = 1`` (the classical GTM).
RBV (region-based voxel-wise; Thomas et al., Eur J Nucl Med Mol Imaging 2011 38:1104)
    With the GTM means ``x`` build the image ``P = sum_j x_j R_j s_j``; the
    corrected image is ``f * P / blur(P)`` inside the regions (the measured
    value where the model is empty). The ROI value is ``x_j`` times the ROI's
    measured over modelled signal.

Background region
    The voxels of the quantitative image that no ROI covers but that carry
    activity (2x2x2 block mean above ``background_threshold`` x the 99.9th
    percentile in a box around the ROIs, or an explicit mask) form one more region, weighted by
    the part of each voxel no ROI covers. Its true mean is solved for like the
    others (it is not reported as an ROI).
PSF
    A Gaussian with a FWHM in mm along world x, y, z. The blur is applied in
    index space: array axis a uses the FWHM of the world axis its column points
    along most and sigma_a = FWHM / (2 sqrt(2 ln 2)) / spacing_a (spacing_a is
    the affine's column norm). Exact for axis-aligned grids (any axis order or
    flip); on oblique grids an approximation (exact for an isotropic PSF).
    Source order (:func:`resolve_psf`): the image header (``PSF_FWHM_mm`` and
    similar sidecar keys), else the user's value, else a documented default per
    modality (:data:`DEFAULT_FWHM_MM`). Positron range (:data:`POSITRON_RANGE_MEAN_MM`)
    can be added in quadrature as an extra Gaussian.

Examples
--------
Two touching slabs, 4 and 1 (a.u.), blurred with a 3 mm FWHM; GTM gives back both:

>>> import numpy as np
>>> from scipy import ndimage
>>> from napari_immunotrack.volume import Volume
>>> aff = np.diag([1.0, 1.0, 1.0, 1.0])
>>> lab = np.zeros((40, 8, 8), np.uint8); lab[5:20] = 1; lab[20:35] = 2
>>> truth = np.where(lab == 1, 4.0, np.where(lab == 2, 1.0, 0.0))
>>> img = ndimage.gaussian_filter(truth, (3 / 2.3548, 0, 0), mode="constant", truncate=4.0)
>>> res = gtm(Volume(img, aff, "PT"), Volume(lab, aff), PointSpread((3.0, 0.0, 0.0)))
>>> np.round(res.corrected, 4).tolist(), np.round(res.measured, 3).tolist()
([4.0, 1.0], [3.775, 1.064])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume
from .roi import RoiMap, carry_rois

#: FWHM = FWHM_PER_SIGMA * sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

PVC_METHODS = ("none", "gtm", "rbv")

#: Default PSF FWHM (mm) per modality when neither the header nor the user gives one
#: (docs/methods/pvc.md#defaults). "preclinical" applies to voxels <= 2 mm, "clinical" above.
DEFAULT_FWHM_MM = {
    "PT": {"preclinical": 1.5, "clinical": 5.0},
    "NM": {"preclinical": 1.0, "clinical": 10.0},
    "MPI": {"preclinical": 1.5, "clinical": 1.5},
    "F19": {"preclinical": 0.0, "clinical": 0.0},
    "MR": {"preclinical": 0.0, "clinical": 0.0},
}

#: Mean 3D positron range in water (mm); Conti & Eriksson, EJNMMI Phys 2016 3:8, table 1.
POSITRON_RANGE_MEAN_MM = {"18F": 0.6, "64Cu": 0.7, "89Zr": 1.3, "68Ga": 2.9, "124I": 3.4}

#: Header keys that carry a PSF FWHM in mm (one value or three), searched case-insensitively.
HEADER_PSF_KEYS = ("PSF_FWHM_mm", "PSFFWHM_mm", "PSF_FWHM", "fwhm_mm", "SpatialResolution_mm")


def positron_range_fwhm_mm(isotope: str) -> float:
    """FWHM (mm) of the Gaussian that stands in for an isotope's positron range.

    The 3D distribution of annihilation points is approximated by an isotropic
    3D Gaussian with the isotope's mean range ``R``: for a 3D Gaussian of
    per-axis SD s the mean radius is ``2 s sqrt(2 / pi)``, so
    ``s = R / (2 sqrt(2 / pi))`` and ``FWHM = 2.3548 s ~= 1.476 R``. The
    real distribution is cusp-shaped with long tails; see docs/methods/pvc.md#positron-range.

    Parameters
    ----------
    isotope : str
        One of 18F, 64Cu, 89Zr, 68Ga, 124I, written either way round and with any case, hyphen or space
        ("Ga-68", "68ga", "F 18").

    Returns
    -------
    float
        FWHM in mm (about 1.476 times the mean range of :data:`POSITRON_RANGE_MEAN_MM`).

    Raises
    ------
    InputError
        For an isotope without a tabulated range.

    Examples
    --------
    >>> round(positron_range_fwhm_mm("68Ga"), 2)
    4.28
    """
    key = _isotope_key(isotope)
    r = POSITRON_RANGE_MEAN_MM[key]
    return FWHM_PER_SIGMA * r / (2.0 * math.sqrt(2.0 / math.pi))


def _isotope_key(isotope: str) -> str:
    text = str(isotope).replace("-", "").replace(" ", "").lower()
    for key in POSITRON_RANGE_MEAN_MM:
        mass = "".join(c for c in key if c.isdigit())
        elem = "".join(c for c in key if c.isalpha()).lower()
        if text in (mass + elem, elem + mass):
            return key
    raise InputError(
        f"no positron range for isotope {isotope!r}; give one of "
        f"{', '.join(POSITRON_RANGE_MEAN_MM)} (or leave the option out)."
    )


def parse_fwhm(value) -> np.ndarray | None:
    """A PSF FWHM from the user: one number or three (x, y, z mm), as text or numbers.

    Parameters
    ----------
    value : float, str, sequence or None
        One FWHM for all axes or three (world x, y, z), in mm, each finite and >= 0; text is
        comma-separated ("1.2,1.6,1.6").

    Returns
    -------
    ndarray of 3 float or None
        FWHM in mm along world x, y, z; None when ``value`` is None.

    Raises
    ------
    InputError
        For text that is not numbers, two or more than three values, or a negative or non-finite one.

    Examples
    --------
    >>> parse_fwhm("1.2,1.6,1.6").tolist()
    [1.2, 1.6, 1.6]
    >>> parse_fwhm(2).tolist()
    [2.0, 2.0, 2.0]
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    else:
        parts = list(np.atleast_1d(np.asarray(value, dtype=object)).ravel())
    try:
        nums = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise InputError(
            f"--psf-fwhm must be one number or three comma-separated numbers in mm (x,y,z), not {value!r}."
        ) from None
    if len(nums) not in (1, 3) or not all(math.isfinite(x) and x >= 0 for x in nums):
        raise InputError(
            f"--psf-fwhm must be one number or three comma-separated numbers >= 0 in mm (x,y,z), not {value!r}."
        )
    return np.broadcast_to(np.asarray(nums, float), (3,)).copy()


@dataclass
class PointSpread:
    """A Gaussian PSF: FWHM (mm) along world x, y, z and where it came from.

    ``fwhm_mm`` already includes the positron range when one was added.
    """

    fwhm_mm: Sequence[float]
    source: str = "given"
    scanner_fwhm_mm: Sequence[float] | None = None
    isotope: str | None = None
    positron_range_fwhm_mm: float = 0.0

    def __post_init__(self):
        self.fwhm_mm = np.broadcast_to(np.asarray(self.fwhm_mm, float), (3,)).copy()
        if not np.all(np.isfinite(self.fwhm_mm)) or np.any(self.fwhm_mm < 0):
            raise InputError(f"the PSF FWHM must be finite and >= 0 mm (got {self.fwhm_mm.tolist()}).")
        if self.scanner_fwhm_mm is None:
            self.scanner_fwhm_mm = self.fwhm_mm.copy()

    def sigma_voxels(self, affine) -> np.ndarray:
        """Gaussian SD per array axis in voxels on the grid ``affine`` (see the module docstring)."""
        m = np.asarray(affine, float)[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        world_axis = np.argmax(np.abs(m), axis=0)
        return self.fwhm_mm[world_axis] / FWHM_PER_SIGMA / spacing

    def as_dict(self) -> dict:
        return {
            "fwhm_mm": [float(x) for x in self.fwhm_mm],
            "source": self.source,
            "scanner_fwhm_mm": [float(x) for x in self.scanner_fwhm_mm],
            "isotope": self.isotope,
            "positron_range_fwhm_mm": float(self.positron_range_fwhm_mm),
        }


def header_fwhm(volume: Volume) -> tuple | None:
    """(FWHM array, key) from the image's header/sidecar, or None.

    Parameters
    ----------
    volume : Volume
        Its metadata is searched, ignoring case, for the keys of :data:`HEADER_PSF_KEYS` in that order;
        a value that :func:`parse_fwhm` cannot read is skipped.

    Returns
    -------
    (ndarray, str) or None
        The FWHM in mm along world x, y, z and the key as :data:`HEADER_PSF_KEYS` spells it; None when
        no key holds a readable FWHM.

    Examples
    --------
    >>> header_fwhm(Volume(np.zeros((2, 2, 2)), np.eye(4), metadata={"psf_fwhm": "1.5"}))
    (array([1.5, 1.5, 1.5]), 'PSF_FWHM')
    >>> header_fwhm(Volume(np.zeros((2, 2, 2)), np.eye(4))) is None
    True
    """
    meta = {str(k).lower(): v for k, v in (volume.metadata or {}).items()}
    for key in HEADER_PSF_KEYS:
        if key.lower() in meta and meta[key.lower()] not in (None, "", []):
            try:
                return parse_fwhm(meta[key.lower()]), key
            except InputError:
                continue
    return None


def resolve_psf(
    volume: Volume, user_fwhm=None, *, isotope: str | None = None, modality: str | None = None
) -> PointSpread:
    """The PSF to correct ``volume`` with: header > user > per-modality default; plus positron range.

    Parameters
    ----------
    volume : Volume
        The quantitative image (its metadata is searched for :data:`HEADER_PSF_KEYS`).
    user_fwhm : float, sequence or str, optional
        FWHM in mm (one value or x, y, z), used when the header has none.
    isotope : str, optional
        Adds that isotope's positron range in quadrature (89Zr, 64Cu, 18F, 68Ga, 124I).
    modality : str, optional
        Overrides ``volume.modality`` for the default.

    Returns
    -------
    PointSpread

    Examples
    --------
    >>> v = Volume(np.zeros((4, 4, 4)), np.eye(4), "MPI", metadata={"PSF_FWHM_mm": [1.2, 1.6, 1.6]})
    >>> resolve_psf(v, 2.0).source
    'header PSF_FWHM_mm'
    >>> p = resolve_psf(Volume(np.zeros((4, 4, 4)), np.eye(4), "PT"), isotope="18F")
    >>> round(float(p.fwhm_mm[0]), 3), p.source
    (1.742, 'default for PT (preclinical)')
    """
    found = header_fwhm(volume)
    if found is not None:
        fwhm, key = found
        source = f"header {key}"
        if user_fwhm is not None:
            user = parse_fwhm(user_fwhm)
            if not np.allclose(user, fwhm):
                warnings.warn(
                    f"the PSF FWHM of the header ({fwhm.tolist()} mm, {key}) is used, not the one given "
                    f"({user.tolist()} mm).",
                    ImmunotrackWarning,
                    stacklevel=2,
                )
    elif user_fwhm is not None:
        fwhm, source = parse_fwhm(user_fwhm), "user"
    else:
        mod = str(modality or volume.modality or "").upper()
        table = DEFAULT_FWHM_MM.get(mod)
        if table is None:
            raise InputError(f"no default PSF for modality {mod or '(unknown)'}; give the FWHM in mm (--psf-fwhm).")
        kind = "preclinical" if float(np.min(volume.spacing)) <= 2.0 else "clinical"
        fwhm, source = np.full(3, table[kind]), f"default for {mod} ({kind})"
    scanner = np.asarray(fwhm, float)
    extra = 0.0
    if isotope:
        extra = positron_range_fwhm_mm(isotope)
        isotope = _isotope_key(isotope)
        fwhm = np.sqrt(scanner**2 + extra**2)
    return PointSpread(fwhm, source, scanner, isotope, extra)


def gaussian_blur(array: np.ndarray, sigma_voxels) -> np.ndarray:
    """Separable Gaussian blur (float32, zero outside the grid: what leaves the field of view is lost).

    Parameters
    ----------
    array : ndarray
        The image, one sigma per axis.
    sigma_voxels : sequence of float
        Gaussian SD per array axis, in voxels (:meth:`PointSpread.sigma_voxels`); an axis with
        sigma <= 0.001 is not blurred. The kernel is truncated at 4 sigma.

    Returns
    -------
    ndarray of float32
        The blurred image, same shape.

    Examples
    --------
    >>> point = np.zeros((9, 9, 9)); point[4, 4, 4] = 1.0
    >>> out = gaussian_blur(point, (1.0, 0, 0))
    >>> np.round(out[:, 4, 4].astype(float), 3).tolist(), round(float(out.sum()), 6)
    ([0.0, 0.004, 0.054, 0.242, 0.399, 0.242, 0.054, 0.004, 0.0], 1.0)
    """
    from scipy import ndimage

    out = np.asarray(array, np.float32)
    for axis, s in enumerate(np.asarray(sigma_voxels, float)):
        if s > 1e-3:
            out = ndimage.gaussian_filter1d(out, s, axis=axis, mode="constant", truncate=4.0)
    return out


@dataclass
class GtmResult:
    """Regional means before and after GTM correction.

    ``measured``, ``corrected``, ``recovery`` are per ROI (in ``labels`` order);
    ``matrix`` is W (ROIs then the background region, if any); ``recovery`` is
    measured / corrected.
    """

    labels: np.ndarray
    measured: np.ndarray
    corrected: np.ndarray
    recovery: np.ndarray
    matrix: np.ndarray
    condition_number: float
    background_measured: float = float("nan")
    background_corrected: float = float("nan")
    background_voxels: float = 0.0
    psf: PointSpread | None = None
    warnings: list = field(default_factory=list)
    #: "deconvolved" when within-region templates were used, else "uniform" (docs/methods/pvc.md#within-region)
    within_region: str = "uniform"
    iterations: int = 0
    _shapes: list | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {
            "labels": [int(x) for x in self.labels],
            "condition_number": float(self.condition_number),
            "background_measured": float(self.background_measured),
            "background_corrected": float(self.background_corrected),
            "background_voxels": float(self.background_voxels),
            "psf": self.psf.as_dict() if self.psf else None,
            "within_region": self.within_region,
            "deconvolution_iterations": int(self.iterations),
        }


class _Region:
    """Weights of one region in a padded bounding box of the grid (dense), and its voxel list."""

    def __init__(self, flat_index, weight, shape, pad):
        coords = np.unravel_index(flat_index, shape)
        self.lo = np.maximum(np.array([c.min() for c in coords]) - pad, 0)
        self.hi = np.minimum(np.array([c.max() + 1 for c in coords]) + pad, shape)
        self.coords = coords
        self.weight = np.asarray(weight, np.float64)
        self.total = float(self.weight.sum())

    def dense(self, values=None):
        """The region's weights (times ``values`` per voxel, if given) in its padded box."""
        box = np.zeros(tuple(self.hi - self.lo), np.float32)
        w = self.weight if values is None else self.weight * values
        box[tuple(c - lo for c, lo in zip(self.coords, self.lo))] = w
        return box

    def slices(self):
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi))

    def sample(self, blurred_box, box_lo, box_hi):
        """sum(weight * blurred) over this region's voxels inside the box [box_lo, box_hi)."""
        inside = np.ones(self.weight.shape, bool)
        for c, a, b in zip(self.coords, box_lo, box_hi):
            inside &= (c >= a) & (c < b)
        if not inside.any():
            return 0.0
        vals = blurred_box[tuple(c[inside] - a for c, a in zip(self.coords, box_lo))]
        return float(np.dot(self.weight[inside], vals))


def _as_map(image: Volume, rois, transform=None, supersample: int = 3) -> RoiMap:
    if isinstance(rois, RoiMap):
        if tuple(rois.shape) != tuple(image.spatial_shape) or not np.allclose(rois.affine, image.affine):
            raise InputError("the ROIs were carried to another grid than the image to correct.")
        return rois
    return carry_rois(rois, image, transform=transform, supersample=supersample, name="the image to correct")


def background_weights(
    data_box: np.ndarray, covered_box: np.ndarray, *, threshold: float = 0.05, mask_box: np.ndarray | None = None
) -> np.ndarray:
    """Weights of the background region in a box of the grid: voxels no ROI covers that carry activity.

    Parameters
    ----------
    data_box : array
        The quantitative image in the working box (see :func:`gtm`).
    covered_box : array
        Sum of the ROI weights per voxel in the same box (overwritten).
    threshold : float
        A voxel carries activity when the mean of its 2x2x2 block (which keeps noise out
        of the mask; the image is already blurred by the PSF) exceeds ``threshold`` x the
        99.9th percentile of the block means.
    mask_box : bool array, optional
        An explicit background mask in the box (replaces the threshold).

    Returns
    -------
    float32 array: ``1 - sum of ROI weights`` on active voxels, 0 elsewhere.

    Examples
    --------
    >>> d = np.zeros((6, 6, 6)); d[2:6, 2:6, 2:6] = 1.0
    >>> cov = np.zeros_like(d); cov[3, 3, 3] = 1.0
    >>> float(background_weights(d, cov, threshold=0.5).sum())
    63.0
    """
    free = np.subtract(np.float32(1.0), covered_box, dtype=np.float32)
    np.maximum(free, 0.0, out=free)
    if mask_box is not None:
        active = np.asarray(mask_box, bool)
    else:
        shape = data_box.shape
        pad = [(0, s % 2) for s in shape]
        d = np.pad(data_box, pad, mode="edge") if any(p for _, p in pad) else data_box
        block = d.reshape(d.shape[0] // 2, 2, d.shape[1] // 2, 2, d.shape[2] // 2, 2).mean(
            axis=(1, 3, 5), dtype=np.float32
        )
        flat = block.reshape(-1)
        sample = flat[::7] if flat.size > 70000 else flat  # the percentile of a regular subsample
        k = min(int(0.999 * sample.size), sample.size - 1)
        level = float(np.partition(sample, k)[k])
        cut = threshold * level
        # zero-mean noise around a zero background (background-subtracted MPI, the 19F amplitude estimate):
        # its negative half gives the noise of a block mean; a block 5 of those above 0 carries activity,
        # also when that is under 5 % of a focal tracer's peak (diffuse activity between the foci)
        negative = sample[sample < 0]
        if negative.size >= 0.1 * sample.size:
            cut = min(cut, 5.0 * float(np.sqrt(np.mean(negative.astype(np.float64) ** 2))))
        active = block > cut if level > 0 else np.zeros(block.shape, bool)
        active = active.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: shape[0], : shape[1], : shape[2]]
    free[~active] = 0.0
    return free


def _boxes(regions, shape, pad):
    """Inner box (the ROIs padded by 4 sigma) and outer box (inner padded again), as (lo, hi) arrays."""
    lo = np.min([r.lo for r in regions], axis=0)
    hi = np.max([r.hi for r in regions], axis=0)
    outer_lo, outer_hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, shape)
    return (lo, hi), (outer_lo, outer_hi)


def _sl(lo, hi):
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


#: How the activity is distributed inside a region (see :func:`gtm`).
WITHIN_REGION = ("deconvolved", "uniform")


def _transfer_matrix(regions, bg, sigma, shapes, progress=None) -> np.ndarray:
    """W of GTM: ``w_ij = sum(R_i * blur(T_j)) / sum(R_i)`` with the templates ``T_j = R_j * shape_j``
    (``shape_j`` = 1 for the classical uniform regions; the background region stays uniform)."""
    n_roi = len(regions)
    n = n_roi + (bg is not None)
    W = np.zeros((n, n))
    out_lo = bg["lo"] if bg is not None else None
    for j, rj in enumerate(regions):
        _progress.report(progress, 0.5 * j / n, f"GTM: blurring region {j + 1}/{n}")
        # the ROI's box already holds all its blur (padded by 4 sigma); blur(T_j) is zero beyond it
        blurred = gaussian_blur(rj.dense(None if shapes is None else shapes[j]), sigma)
        for i, ri in enumerate(regions):
            if np.any(ri.hi <= rj.lo) or np.any(ri.lo >= rj.hi):
                continue
            W[i, j] = ri.sample(blurred, rj.lo, rj.hi) / ri.total
        if bg is not None:
            W[n_roi, j] = (
                float(np.sum(bg["measure"][_sl(rj.lo - out_lo, rj.hi - out_lo)] * blurred, dtype=np.float64))
                / bg["total"]
            )
    if bg is not None:
        for i, ri in enumerate(regions):
            W[i, n_roi] = ri.sample(bg["blurred"], out_lo, bg["hi"]) / ri.total
        W[n_roi, n_roi] = float(np.sum(bg["measure"] * bg["blurred"], dtype=np.float64)) / bg["total"]
    return W


def _deconvolve_within(
    d_plus, regions, bg, means, shapes, sigma, out_lo, iterations, misfit_limit=0.08, update=None, offset=0.0
):
    """Region-constrained Richardson-Lucy: the distribution of the activity inside each region.

    The object is ``sum_j means_j * R_j * shape_j`` plus the (uniform) background region; each
    iteration multiplies region j's concentration by ``blur(d / blur(object))`` on its voxels, so
    activity moves towards where the data put it but never leaves its region (PETPVC's intra-regional
    RL deconvolves each region on its own; here the regions are deconvolved jointly, so spill-in from
    a neighbour is not taken for the region's own activity). The iterations are accelerated by
    Biggs & Andrews' (1997) vector extrapolation. Only the shape is kept: each is returned with a
    weighted mean of 1 (GTM then solves for the regional means). A region whose mean is not positive
    starts from its measured mean of the data (less the offset); the background region emits but is
    not deconvolved.

    d_plus is the data in the outer box plus ``offset`` (a constant the model carries too), clipped at 0
    (RL needs non-negative data). ``update`` names
    the regions to deconvolve; without it they are chosen by ``misfit_limit``. Returns (shapes, update).
    """
    shapes = [np.asarray(s, np.float64).copy() for s in shapes]
    means = np.asarray(means, float)
    peak = float(d_plus.max()) if d_plus.size else 0.0
    active = list(range(len(regions)))
    if peak <= 0 or not active or iterations <= 0:
        return shapes, []
    tiny = 1e-4 * peak
    boxes = {j: _sl(regions[j].lo - out_lo, regions[j].hi - out_lo) for j in active}
    local = {j: tuple(c - a for c, a in zip(regions[j].coords, regions[j].lo)) for j in active}
    # RL needs a positive start: a region whose GTM mean is not positive (a mostly empty ROI beside hot
    # ones, where the uniform model fails) starts from its measured mean of the clipped data, so that
    # the spill-in it receives is explained by its neighbours' activity, not by activity at their borders
    means = means.copy()
    for j in active:
        if not means[j] > 0:
            d_j = d_plus[boxes[j]][local[j]]
            means[j] = max(float(np.dot(regions[j].weight, d_j)) / regions[j].total - offset, tiny)
    # the background region emits in the model (key "bg", dense over the outer box; also when its GTM mean
    # is not positive): activity outside every ROI is then not mistaken for activity at an ROI's border
    bg_on = bg is not None
    if bg_on:
        emit = bg["emit"]

    def emission(j, conc):
        if j == "bg":
            return gaussian_blur(emit * conc, sigma)
        return gaussian_blur(regions[j].dense(conc), sigma)

    def rl_step(conc, fixed):
        model = np.full(d_plus.shape, offset, np.float32) if fixed is None else fixed + np.float32(offset)
        for j in update:
            model[boxes[j]] += emission(j, conc[j])
        out = dict(conc)
        for j in update:
            m = model[boxes[j]]
            ratio = np.ones(m.shape, np.float32)
            ok = m > tiny
            ratio[ok] = d_plus[boxes[j]][ok] / m[ok]
            out[j] = conc[j] * gaussian_blur(ratio, sigma)[local[j]]
        return out

    x = {j: shapes[j] * means[j] for j in active}
    if bg_on:
        x_bg = float(bg.get("x", 0.0))
        if not x_bg > 0:
            x_bg = max(float(np.sum(emit * d_plus, dtype=np.float64)) / max(float(np.sum(emit)), 1e-30) - offset, tiny)
        x["bg"] = np.full(emit.shape, x_bg, np.float32)
    everyone = active + (["bg"] if bg_on else [])
    # the background region emits in the model but keeps its uniform template: deconvolving it would
    # blur the whole working box at every iteration, and it takes up the spill-out of the ROIs' foci
    # (measured: 128^3 foci benchmark 0.1 % -> 3.4 %, sample MPI nodes +1 % -> +15 %)
    if update is not None:
        update = [j for j in update if j in active]
    elif misfit_limit <= 0:
        update = list(active)
    else:
        # regions the current model already explains (relative RMS misfit below the limit) keep their
        # shape: deconvolving them would only fit the model's own small errors (discretisation, PSF shape)
        model = np.full(d_plus.shape, offset, np.float32)
        for j in everyone:
            if j == "bg":
                model += emission("bg", x["bg"])
            else:
                model[boxes[j]] += emission(j, x[j])
        update = []
        for j in active:
            w = regions[j].weight
            m = model[boxes[j]][local[j]].astype(np.float64)
            d = d_plus[boxes[j]][local[j]].astype(np.float64)
            m = m - offset
            misfit = math.sqrt(float(np.dot(w, (d - offset - m) ** 2)) / max(float(np.dot(w, m**2)), 1e-30))
            if misfit > misfit_limit:
                update.append(j)
    if not update:
        return shapes, []
    # what the regions that keep their shape emit does not change during the iterations
    fixed = None
    for j in everyone:
        if j in update:
            continue
        if fixed is None:
            fixed = np.zeros(d_plus.shape, np.float32)
        if j == "bg":
            fixed += emission("bg", x["bg"])
        else:
            fixed[boxes[j]] += emission(j, x[j])
    y, x_prev, g_prev = x, x, None
    for _ in range(int(iterations)):
        x_new = rl_step(y, fixed)
        g = {j: x_new[j] - y[j] for j in update}
        alpha = 0.0
        if g_prev is not None:
            num = sum(float(np.vdot(g[j], g_prev[j])) for j in update)
            den = sum(float(np.vdot(g_prev[j], g_prev[j])) for j in update)
            alpha = min(max(num / den, 0.0), 0.95) if den > 0 else 0.0
        y = dict(x_new)
        if alpha > 0:
            for j in update:
                y[j] = np.maximum(x_new[j] + alpha * (x_new[j] - x_prev[j]), 0.0)
        x_prev, g_prev = x_new, g
    for j in update:
        shapes[j] = x_prev[j]
    for j, r in enumerate(regions):
        mean = float(np.dot(r.weight, shapes[j])) / r.total
        shapes[j] = shapes[j] / mean if mean > 0 and np.isfinite(mean) else np.ones(r.weight.shape)
    return shapes, update


def gtm(
    image: Volume,
    rois,
    psf: PointSpread,
    *,
    background: bool = True,
    background_threshold: float = 0.05,
    background_mask: np.ndarray | None = None,
    transform=None,
    supersample: int = 3,
    condition_limit: float = 30.0,
    within_region: str = "deconvolved",
    iterations: int = 30,
    uniform_misfit: float = 0.08,
    progress=None,
) -> GtmResult:
    """Geometric transfer matrix correction of the regional means (see the module docstring).

    The work is confined to a box around the ROIs: the inner box (their bounding box
    padded by 4 sigma, where the PSF truncates) holds every voxel that can exchange
    signal with them; the background region is measured there and, so that nothing
    spills into it from outside the model, emits from the outer box (padded once more).

    Parameters
    ----------
    image : Volume
        Quantitative image (3D; Bq/mL, signal, ...). Its values are used as they are (linear).
    rois : Volume or RoiMap
        ROI labels (any grid; carried with partial-voxel weights) or a RoiMap on the image's grid.
    psf : PointSpread
    background : bool
        Add the background region (uncovered voxels carrying activity).
    background_threshold : float
        See :func:`background_weights`.
    background_mask : bool array, optional
        Explicit background region on the image grid.
    transform, supersample
        As in :func:`~napari_immunotrack.analysis.roi.carry_rois`.
    condition_limit : float
        Warn when cond(W) exceeds it.
    within_region : {"deconvolved", "uniform"}
        "deconvolved" (default): each region's template is the distribution of the activity
        inside it, estimated by a region-constrained Richardson-Lucy deconvolution of the
        data (:func:`_deconvolve_within`), so that activity held in foci away from a
        region's border is not treated as if it filled the region up to the border (which
        over-corrects); GTM is solved again with those templates every 10 iterations. For a
        uniform region it returns the classical result. "uniform": the classical GTM
        (Rousset 1998), every region a uniform indicator.
    iterations : int
        Deconvolution iterations for "deconvolved" (0 = classical GTM).
    uniform_misfit : float
        A region whose measured image the current model already matches to this relative RMS
        (0.08 = 8 %) keeps its template: deconvolving it would only fit the model's own small
        errors (voxel discretisation, PSF shape) and amplify them.
    progress : callable, optional

    Returns
    -------
    GtmResult

    Examples
    --------
    See the module docstring.
    """
    if image.data.ndim != 3:
        raise InputError("partial-volume correction needs a 3D image (one frame).")
    rmap = _as_map(image, rois, transform, supersample)
    data = np.asarray(image.numpy())
    shape = data.shape
    flat = data.reshape(-1)
    sigma = psf.sigma_voxels(image.affine)
    pad = np.ceil(4.0 * sigma).astype(int) + 1
    warns = []

    def warn(msg):
        warns.append(msg)
        warnings.warn(msg, ImmunotrackWarning, stacklevel=3)

    regions = [_Region(idx, w, shape, pad) for idx, w in zip(rmap.index, rmap.weight) if len(idx)]
    if not regions or len(regions) != len(rmap.labels):
        raise InputError("an ROI has no voxel on the image grid; it cannot be corrected.")
    n_roi = len(regions)
    measured = [float(np.dot(r.weight, flat[np.ravel_multi_index(r.coords, shape)])) / r.total for r in regions]
    if not np.all(np.isfinite(measured)):
        raise InputError("the image has NaN or infinite values in the ROIs; partial-volume correction cannot use it.")
    (in_lo, in_hi), (out_lo, out_hi) = _boxes(regions, shape, pad)
    bg = None
    if background:
        box = _sl(out_lo, out_hi)
        data_box = np.array(data[box], np.float32)
        if not np.isfinite(data_box.sum(dtype=np.float64)):
            np.nan_to_num(data_box, copy=False)
        covered = np.zeros(data_box.shape, np.float32)
        for r in regions:
            covered[tuple(c - a for c, a in zip(r.coords, out_lo))] += r.weight
        mask_box = None if background_mask is None else np.asarray(background_mask, bool).reshape(shape)[box]
        emit = background_weights(data_box, covered, threshold=background_threshold, mask_box=mask_box)
        measure = np.zeros_like(emit)
        inner = _sl(in_lo - out_lo, in_hi - out_lo)
        measure[inner] = emit[inner]
        total = float(measure.sum(dtype=np.float64))
        if total > 1e-6:
            bg = {
                "emit": emit,
                "measure": measure,
                "total": total,
                "lo": out_lo,
                "hi": out_hi,
                "blurred": gaussian_blur(emit, sigma),
            }
            measured.append(float(np.sum(measure * data_box, dtype=np.float64)) / total)
    measured = np.asarray(measured)  # type: ignore[assignment]
    W = _transfer_matrix(regions, bg, sigma, None, progress)
    corrected, *_ = np.linalg.lstsq(W, measured, rcond=None)
    shapes = None
    if within_region not in WITHIN_REGION:
        raise InputError(f"within_region must be one of {', '.join(WITHIN_REGION)} (got {within_region!r}).")
    if within_region == "deconvolved" and iterations > 0:
        # the activity's distribution inside each region, from a region-constrained deconvolution of the
        # data, replaces the uniform indicator (docs/methods/pvc.md#within-region); GTM is solved again
        # with those templates after every block of iterations
        shapes = [np.ones(r.weight.shape) for r in regions]
        d_box = np.nan_to_num(np.asarray(data[_sl(out_lo, out_hi)], np.float32))
        # RL needs non-negative data. Zero-mean noise around a zero background (background-subtracted MPI,
        # the 19F amplitude estimate) clipped at 0 would look like activity everywhere; a constant offset
        # of 3 noise SD (from the negative values) added to the data and to the model keeps it neutral
        negative = d_box[d_box < 0]
        offset = 0.0
        if negative.size >= 0.1 * d_box.size:
            offset = 3.0 * float(np.sqrt(np.mean(negative.astype(np.float64) ** 2)))
        d_plus = np.maximum(d_box + np.float32(offset), 0.0)
        del d_box
        blocks = max(1, int(math.ceil(iterations / 10)))
        done, chosen = 0, None
        for b in range(blocks):
            step = min(10, iterations - done)
            _progress.report(
                progress, 0.5 + 0.45 * b / blocks, f"GTM: deconvolving within regions ({done}/{iterations})"
            )
            if bg is not None:
                bg["x"] = float(corrected[-1])
            # the regions to deconvolve are chosen once, against the uniform model
            shapes, chosen = _deconvolve_within(
                d_plus, regions, bg, corrected, shapes, sigma, out_lo, step, uniform_misfit, chosen, offset
            )
            if not chosen:
                break
            done += step
            W = _transfer_matrix(regions, bg, sigma, shapes, None)
            corrected, *_ = np.linalg.lstsq(W, measured, rcond=None)
    cond = float(np.linalg.cond(W))
    labels = np.asarray(rmap.labels)
    if not math.isfinite(cond) or cond > condition_limit:
        small = [int(labels[i]) for i in range(n_roi) if W[i, i] < 0.5]
        warn(
            f"the GTM matrix is ill-conditioned (condition number {cond:.3g} > {condition_limit:g}): "
            + (f"ROI(s) {small} are smaller than the PSF (they keep < 50% of their own signal); " if small else "")
            + "the corrected values amplify noise (docs/methods/pvc.md#conditioning)."
        )
    rc = np.full(n_roi, np.nan)
    ok = corrected[:n_roi] > 0
    rc[ok] = measured[:n_roi][ok] / corrected[:n_roi][ok]
    res = GtmResult(labels, measured[:n_roi], corrected[:n_roi], rc, W, cond, psf=psf, warnings=warns)
    if bg is not None:
        res.background_measured = float(measured[-1])
        res.background_corrected = float(corrected[-1])
        res.background_voxels = bg["total"]
    res._regions = regions  # reused by rbv()
    res._shapes = shapes
    res.within_region = within_region if shapes is not None else "uniform"
    res.iterations = int(iterations) if shapes is not None else 0
    res._background = bg
    res._box = (out_lo, out_hi)
    _progress.report(progress, 1.0, "GTM done")
    return res


def rbv(image: Volume, rois, psf: PointSpread, *, gtm_result: GtmResult | None = None, progress=None, **gtm_kwargs):
    """Region-based voxel-wise correction (Thomas et al. 2011): a corrected image and its ROI means.

    Parameters
    ----------
    image : Volume
    rois : Volume or RoiMap
    psf : PointSpread
    gtm_result : GtmResult, optional
        Reuse a GTM of the same image, ROIs and PSF.
    progress : callable, optional
    **gtm_kwargs
        Passed to :func:`gtm` (background options, transform, supersample).

    Returns
    -------
    (Volume, GtmResult, ndarray)
        The corrected image (float32, same grid; the measured value outside every
        region), the GTM it used, and the RBV mean of each ROI (weighted by its
        partial-voxel weights): its GTM mean times the weighted mean over the ROI of
        measured / modelled (``f / blur(P)``), so that a voxel shared by two regions
        gives each its own share (docs/methods/pvc.md#rbv).

    Examples
    --------
    >>> from scipy import ndimage
    >>> lab = np.zeros((40, 8, 8), np.uint8); lab[5:20] = 1; lab[20:35] = 2
    >>> truth = np.where(lab == 1, 4.0, np.where(lab == 2, 1.0, 0.0))
    >>> img = ndimage.gaussian_filter(truth, (3 / 2.3548, 0, 0), mode="constant", truncate=4.0)
    >>> vol, g, means = rbv(Volume(img, np.eye(4), "PT"), Volume(lab, np.eye(4)), PointSpread((3.0, 0, 0)))
    >>> np.round(means, 3).tolist()
    [4.0, 1.0]
    """
    rmap = _as_map(image, rois, gtm_kwargs.pop("transform", None), gtm_kwargs.pop("supersample", 3))
    g = gtm_result or gtm(image, rmap, psf, progress=_progress.scaled(progress, 0.0, 0.5), **gtm_kwargs)
    regions = getattr(g, "_regions", None)
    if regions is None:
        raise InputError("the GTM result does not carry its regions; run gtm() again or leave gtm_result out.")
    data = np.asarray(image.numpy())
    lo, hi = g._box
    box = _sl(lo, hi)
    # P = 0 outside the outer box, so blur(P) there is computed exactly on the box alone
    shapes = getattr(g, "_shapes", None) or [np.ones(r.weight.shape) for r in regions]
    pseudo = np.zeros(tuple(hi - lo), np.float32)
    for r, x, shape in zip(regions, g.corrected, shapes):
        pseudo[tuple(c - a for c, a in zip(r.coords, lo))] += (r.weight * shape * x).astype(np.float32)
    if g._background is not None:
        pseudo += g._background["emit"] * np.float32(g.background_corrected)
    _progress.report(progress, 0.6, "RBV: blurring the regional image")
    blurred = gaussian_blur(pseudo, psf.sigma_voxels(image.affine))
    data_box = np.asarray(data[box], np.float32)
    # where the model predicts (almost) nothing the ratio is noise: keep the measured value there
    tiny = 1e-6 * float(np.max(np.abs(blurred))) if blurred.size else 0.0
    # where the model holds (almost) no activity the ratio is noise: the measured value is kept there
    inside = (np.abs(pseudo) > tiny) & (np.abs(blurred) > tiny)
    ratio = np.ones(pseudo.shape, np.float32)
    ratio[inside] = data_box[inside] / blurred[inside]
    corrected_box = np.where(inside, data_box * pseudo / np.where(inside, blurred, 1.0), data_box)
    out = np.array(data, np.float32, copy=True)
    out[box] = corrected_box
    # regional value: the region's GTM mean times its measured / modelled signal over the ROI (a ratio of
    # sums). The model P carries the deconvolved within-region templates, so it already follows the
    # activity inside the region; a mean of voxel ratios (Thomas 2011's regional RBV with uniform
    # regions) would add the noise of voxels where the model is nearly empty and, with templates built
    # from the data, a bias from that noise (docs/methods/pvc.md#rbv)
    means = []
    for x, r in zip(g.corrected, regions):
        at = tuple(c - a for c, a in zip(r.coords, lo))
        model = float(np.dot(r.weight, blurred[at]))
        meas = float(np.dot(r.weight, data_box[at]))
        means.append(x * meas / model if model > tiny * r.total and x > 0 else x)
    means = np.asarray(means)
    vol = image.replace(data=out)
    vol.metadata = dict(vol.metadata or {}, pvc="rbv", psf_fwhm_mm=psf.fwhm_mm.tolist())
    _progress.report(progress, 1.0, "RBV done")
    return vol, g, means


def correct_means(image: Volume, rois, method: str, psf: PointSpread, *, progress=None, **kwargs) -> dict:
    """Measured and corrected ROI means by ``method`` ("gtm" or "rbv"), for the readout tables.

    Methods: docs/methods/pvc.md#gtm and docs/methods/pvc.md#rbv.

    Parameters
    ----------
    image : Volume
        The linear quantitative image (Bq/mL, a.u., ...).
    rois : Volume or RoiMap
        The ROI labels, on any grid (every label becomes a region).
    method : {"gtm", "rbv"}
        Case-insensitive.
    psf : PointSpread
        The Gaussian PSF (:func:`resolve_psf`).
    progress : callable, optional
        Called as ``progress(fraction, text)``.
    **kwargs
        Passed to :func:`gtm` (background, transform, supersample, within_region, ...).

    Returns
    -------
    dict
        ``labels``, ``measured``, ``corrected`` (ROI means in the image's unit),
        ``recovery_coefficient`` (measured / corrected; NaN where corrected <= 0), ``factor``
        (corrected / measured; NaN where measured is 0), ``gtm`` (GtmResult), ``provenance`` (method, PSF,
        condition number, background), ``warnings``, and ``image`` (the RBV image, or None).

    Raises
    ------
    InputError
        For another method name (and whatever :func:`gtm` raises).

    Examples
    --------
    Two slabs of 4 and 1 side by side, blurred by a PSF of 3 mm FWHM along x:

    >>> from scipy import ndimage
    >>> lab = np.zeros((40, 6, 6), np.uint8); lab[5:20] = 1; lab[20:35] = 2
    >>> img = ndimage.gaussian_filter(np.choose(lab, [0.0, 4.0, 1.0]), (3 / 2.3548, 0, 0), mode="constant")
    >>> r = correct_means(Volume(img, np.eye(4), "PT"), Volume(lab, np.eye(4)), "gtm", PointSpread((3, 0, 0)))
    >>> np.round(r["measured"], 3), np.round(r["corrected"], 3), np.round(r["recovery_coefficient"], 3)
    (array([3.775, 1.064]), array([4., 1.]), array([0.944, 1.064]))
    """
    method = str(method).lower()
    if method not in ("gtm", "rbv"):
        raise InputError(f"--pvc must be one of {', '.join(PVC_METHODS)} (got {method!r}).")
    vol = None
    if method == "gtm":
        g = gtm(image, rois, psf, progress=progress, **kwargs)
        corrected = g.corrected
    else:
        vol, g, corrected = rbv(image, rois, psf, progress=progress, **kwargs)
    measured = g.measured
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(measured != 0, corrected / measured, np.nan)
        recovery = np.where(corrected > 0, measured / corrected, np.nan)
    prov = {"method": method, **g.as_dict(), "reference": "docs/methods/pvc.md"}
    return {
        "labels": g.labels,
        "measured": measured,
        "corrected": np.asarray(corrected),
        "factor": factor,
        "recovery_coefficient": recovery,
        "gtm": g,
        "provenance": prov,
        "warnings": list(g.warnings),
        "image": vol,
    }


def add_pvc_columns(df, result: dict, columns: Sequence[str], label_column: str = "label"):
    """Add ``<column>_pvc`` beside each listed column (scaled by the ROI's corrected / measured mean)
    and ``recovery_coefficient``; returns a new DataFrame.

    Means and sums over an ROI scale alike (a sum is the mean times the ROI's
    weight), so one factor per ROI corrects both.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per ROI; its ``attrs`` are kept.
    result : dict
        :func:`correct_means`' output (``labels``, ``factor``, ``recovery_coefficient``).
    columns : sequence of str
        The columns to correct; each gets ``<column>_pvc`` right after it.
    label_column : str, default "label"
        The column holding the ROI label. A label that ``result`` lacks gets NaN.

    Returns
    -------
    pandas.DataFrame
        A copy with the ``_pvc`` columns and ``recovery_coefficient`` (measured / corrected) last.

    Examples
    --------
    >>> import pandas as pd
    >>> result = {"labels": [1, 2], "factor": [1.059, 0.94], "recovery_coefficient": [0.944, 1.064]}
    >>> df = pd.DataFrame({"label": [1, 2], "mean_au": [3.775, 1.064], "max_au": [4.0, 2.0]})
    >>> out = add_pvc_columns(df, result, ["mean_au"])
    >>> list(out.columns), np.round(out["mean_au_pvc"], 2).tolist()
    (['label', 'mean_au', 'mean_au_pvc', 'max_au', 'recovery_coefficient'], [4.0, 1.0])
    """
    out = df.copy()
    factor = dict(zip((int(x) for x in result["labels"]), result["factor"]))
    recovery = dict(zip((int(x) for x in result["labels"]), result["recovery_coefficient"]))
    f = out[label_column].map(lambda x: factor.get(int(x), np.nan)).astype(float)
    order = []
    for col in list(out.columns):
        order.append(col)
        if col in columns:
            out[f"{col}_pvc"] = out[col] * f
            order.append(f"{col}_pvc")
    out = out[order]
    out["recovery_coefficient"] = out[label_column].map(lambda x: recovery.get(int(x), np.nan)).astype(float)
    out.attrs = dict(df.attrs)
    return out


def is_regional_column(column: str) -> bool:
    """Whether a readout column is an ROI mean or sum (which a PVC factor scales), e.g. ``mean_bq_ml``,
    ``suv_bw_mean``, ``integral_au_ml``, ``percent_id``; not SD, min, max, median or peak.

    Parameters
    ----------
    column : str
        A readout column name.

    Returns
    -------
    bool
        True for ``mean_*``, ``integral_*``, ``total_*``, ``suv_*_mean`` and the named totals
        (percent_id, percent_id_per_g, percent_id_per_ml, signal, fluorine_atoms, cell_count, iron_ng);
        False for anything already ending in ``_pvc``.

    Examples
    --------
    >>> [c for c in ("mean_bq_ml", "sd_bq_ml", "suv_bw_mean", "suv_bw_max", "percent_id", "mean_bq_ml_pvc")
    ...  if is_regional_column(c)]
    ['mean_bq_ml', 'suv_bw_mean', 'percent_id']
    """
    c = str(column)
    return (
        c.startswith(("mean_", "integral_", "total_"))
        or (c.startswith("suv_") and c.endswith("_mean"))
        or c
        in ("percent_id", "percent_id_per_g", "percent_id_per_ml", "signal", "fluorine_atoms", "cell_count", "iron_ng")
    ) and not c.endswith("_pvc")


def add_readout_pvc(
    df,
    image: Volume,
    rois,
    method: str,
    psf_fwhm=None,
    *,
    isotope: str | None = None,
    columns: Sequence[str] | None = None,
    progress=None,
    **kwargs,
):
    """``df`` (one row per ROI label, from :func:`~napari_immunotrack.analysis.roi.roi_statistics`-like
    readouts of ``image``) with ``<column>_pvc`` beside each regional column and ``recovery_coefficient``.

    Parameters
    ----------
    df : pandas.DataFrame
        Must have a ``label`` column.
    image : Volume
        The linear image the columns were computed from (Bq/mL for PET).
    rois : Volume or RoiMap
        Every label of the ROI image (all become GTM regions).
    method : {"none", "gtm", "rbv"}
    psf_fwhm : float, str or sequence, optional
        Used when the header has no PSF (see :func:`resolve_psf`).
    isotope : str, optional
        Adds positron range.
    columns : sequence of str, optional
        The columns to correct (default: every column :func:`is_regional_column` accepts).
    progress : callable, optional
    **kwargs
        Passed to :func:`gtm` (transform, supersample, background options).

    Returns
    -------
    (DataFrame, dict or None)
        The table and the provenance of the correction (None for "none").

    Examples
    --------
    >>> import pandas as pd
    >>> from scipy import ndimage
    >>> lab = np.zeros((40, 6, 6), np.uint8); lab[5:20] = 1; lab[20:35] = 2
    >>> img = ndimage.gaussian_filter(np.choose(lab, [0.0, 4.0, 1.0]), (3 / 2.3548, 0, 0), mode="constant")
    >>> df = pd.DataFrame({"label": [1, 2], "mean_au": [3.775, 1.064], "sd_au": [0.3, 0.1]})
    >>> out, prov = add_readout_pvc(df, Volume(img, np.eye(4), "PT"), Volume(lab, np.eye(4)), "gtm", (3, 0, 0))
    >>> list(out.columns), np.round(out["mean_au_pvc"], 2).tolist()
    (['label', 'mean_au', 'mean_au_pvc', 'sd_au', 'recovery_coefficient'], [4.0, 1.0])
    """
    method = str(method or "none").lower()
    if method == "none":
        return df, None
    psf = resolve_psf(image, psf_fwhm, isotope=isotope)
    result = correct_means(image, rois, method, psf, progress=progress, **kwargs)
    chosen = [c for c in df.columns if (is_regional_column(c) if columns is None else c in columns)]
    out = add_pvc_columns(df, result, chosen)
    out.attrs["warnings"] = list(df.attrs.get("warnings", [])) + result["warnings"]
    return out, result["provenance"]


def add_mpi_pvc(df, mpi: Volume, rois, method: str, psf_fwhm=None, *, progress=None, **kwargs):
    """MPI table (:func:`~napari_immunotrack.analysis.mpi.mpi_iron`) with ``signal_pvc``, ``iron_ng_pvc``
    (and ``iron_ug_pvc``, the same in micrograms), ``cell_count_pvc`` and ``recovery_coefficient``.

    The background-subtracted image is corrected; iron and cells then come from the corrected
    signal through the fiducial calibration, so its intercept is applied once and not scaled.
    ROIs below the detection limit get no corrected count either (docs/methods/pvc.md#psf for the
    MPI default PSF).

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`~napari_immunotrack.analysis.mpi.mpi_iron`'s table, with its ``attrs`` ("parameters" with
        ``background`` and ``iron_per_cell_pg``, "calibration" with ``k_per_ng`` and ``intercept``).
    mpi : Volume
        The MPI image the table was read from.
    rois : Volume or RoiMap
        The same ROIs.
    method : {"none", "gtm", "rbv"}
        "none" (or None) returns ``df`` unchanged.
    psf_fwhm : float, str or sequence, optional
        PSF FWHM in mm when the header has none (see :func:`resolve_psf`; default 1.5 mm for MPI).
    progress : callable, optional
        Called as ``progress(fraction, text)``.
    **kwargs
        Passed to :func:`gtm`.

    Returns
    -------
    (DataFrame, dict or None)
        As :func:`add_readout_pvc`: the table and the correction's provenance (None for "none").

    Examples
    --------
    A 5-voxel cube holding 25 ng of iron, blurred by a PSF of 1.18 mm FWHM, beside two point fiducials:

    >>> import warnings
    >>> import pandas as pd
    >>> from scipy import ndimage
    >>> from napari_immunotrack.analysis.mpi import mpi_iron
    >>> im = np.zeros((40, 40, 40), np.float32); im[18:23, 18:23, 18:23] = 2.0     # 250 a.u.
    >>> im = ndimage.gaussian_filter(im, 1.0, mode="constant")                   # sigma 1 voxel = 0.5 mm
    >>> im[5, 5, 5], im[5, 5, 30] = 1000.0, 5000.0                               # 10 a.u. per ng
    >>> mpi = Volume(im, np.diag([0.5, 0.5, 0.5, 1.0]), "MPI")
    >>> fid = pd.DataFrame({"x_mm": [2.5, 2.5], "y_mm": [2.5, 2.5], "z_mm": [2.5, 15.0], "iron_ng": [100.0, 500.0]})
    >>> roi = Volume((np.abs(np.indices((40, 40, 40)) - 20).max(axis=0) <= 2).astype(np.uint8), mpi.affine)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")      # only two fiducials
    ...     df = mpi_iron(mpi, roi, fid, iron_per_cell_pg=5.0, background=0.0, dilate_mm=0.0)
    ...     out, prov = add_mpi_pvc(df, mpi, roi, "gtm", 1.1774)
    >>> out[["iron_ng", "iron_ng_pvc", "cell_count_pvc", "recovery_coefficient"]].round(3).values.tolist()
    [[15.598, 25.0, 4999.966, 0.624]]
    """
    method = str(method or "none").lower()
    if method == "none":
        return df, None
    params, cal = df.attrs["parameters"], df.attrs["calibration"]
    image = mpi.replace(data=(np.asarray(mpi.numpy(), np.float64) - float(params["background"])).astype(np.float32))
    psf = resolve_psf(image, psf_fwhm)
    result = correct_means(image, rois, method, psf, progress=progress, **kwargs)
    out = add_pvc_columns(df, result, ["signal"])
    iron = (out["signal_pvc"] - cal["intercept"]) / cal["k_per_ng"]
    ok = out["status"] == "ok"
    q_ng = float(params["iron_per_cell_pg"]) / 1000.0
    out.insert(list(out.columns).index("iron_ng") + 1, "iron_ng_pvc", iron.where(ok, np.nan))
    # the same in micrograms, the unit the PVC interface names (iron_ug_pvc)
    out.insert(list(out.columns).index("iron_ng_pvc") + 1, "iron_ug_pvc", iron.where(ok, np.nan) / 1000.0)
    out.insert(list(out.columns).index("cell_count") + 1, "cell_count_pvc", (iron / q_ng).where(ok, np.nan))
    out.attrs["warnings"] = list(df.attrs.get("warnings", [])) + result["warnings"]
    return out, result["provenance"]
