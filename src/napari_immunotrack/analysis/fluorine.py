"""19F MRI cell counting against a reference tube (docs/methods/fluorine.md).

A 19F image has no anatomical background: every hot spot is perfluorocarbon,
in labelled cells (or in macrophages that ate them). A reference tube of
known 19F concentration in the field of view calibrates signal to atoms
(Srinivas et al., MRM 2007 58:725; Ahrens & Bulte, Nat Rev Immunol 2013).

Steps of :func:`fluorine_cells`
-------------------------------
1. Noise sigma from a signal-free background mask: magnitude images are
   Rician, pure noise has mean sigma*sqrt(pi/2), so sigma = mean_bg / sqrt(pi/2).
   Without a mask: sigma = median / sqrt(2 ln 2) of the voxels outside the ROIs
   and the reference (the Rayleigh median; a warning says it was estimated).
2. Rician bias correction per voxel (:func:`rician_correct`): by default
   I_c = sqrt(max(I^2 - 2 sigma^2, 0)) ("power": unbiased
   for A^2, about -sigma^2/(2A) low for A); "amplitude" uses
   sqrt(max(I^2 - sigma^2, 0)) (Gudbjartsson & Patz, MRM 1995: unbiased for A to
   second order at high SNR); "none" sums the raw magnitudes.
3. Calibration: F_ref per voxel = c_ref[mM] * 1e-3 * N_A * V_voxel[L]
   (times the 19F atoms per molecule when c_ref is a compound's concentration);
   atoms per signal unit k = F_ref / mean(I_c over the reference mask).
4. Counting (default, ``estimator="whole-roi"``): every voxel of the ROI through the
   approximately unbiased amplitude :func:`amplitude_estimate` (zero on average for a
   signal-free voxel), F = k * sum(w * h(I)), with its standard error, 95 % interval and
   Currie's detection limit of the ROI (docs/methods/fluorine.md#whole-roi-estimate).
   Steps 2 and 4'-6 below describe the older ``estimator="threshold"``.
4'. Detection: voxels with SNR = I / sigma >= 3.5 in connected components
   (26-connected by default) of at least 3 voxels.
5. Per ROI: F = k * sum(w * I_c) over detected voxels (w = partial-voxel
   weight of the ROI); cells = F / F_c.
6. Detection limit of the scan, in cells per voxel: 3.5 sigma k / F_c.
   An ROI with no detected voxel reports no count (NaN) and the status
   "below detection limit", never an invented number. When more than half
   of an ROI's sum comes from voxels near the threshold (SNR < 1.5 x 3.5),
   the count is flagged and a warning says it is probably an underestimate.

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> aff = np.diag([0.5, 0.5, 0.5, 1.0])
>>> img = np.full((20, 20, 20), 10.0 * np.sqrt(np.pi / 2), np.float32)   # noise floor, sigma = 10
>>> img[2:6, 2:6, 2:6] = 1000.0                                         # reference tube, 50 mM
>>> img[12:15, 12:15, 12:15] = 500.0                                    # a depot
>>> ref = np.zeros((20, 20, 20), np.uint8); ref[2:6, 2:6, 2:6] = 1
>>> roi = np.zeros((20, 20, 20), np.uint8); roi[10:17, 10:17, 10:17] = 1
>>> df = fluorine_cells(Volume(img, aff, "F19"), Volume(roi, aff), Volume(ref, aff), 50.0, 1e12,
...                     noise_sigma=10.0, estimator="threshold")
>>> round(float(df.loc[0, "cell_count"]) / 1e3, 1)   # thousand cells: 27 voxels at 25 mM
50.8
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..params import FROM_MODEL, Param, ParamModel
from ..volume import Volume
from .roi import RoiMap, carry_rois

AVOGADRO = 6.02214076e23
#: Rayleigh (pure-noise magnitude) mean / sigma and median / sigma.
RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)
RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))


def _mask_map(mask, target: Volume, what: str, progress=None) -> RoiMap:
    """A mask Volume (any non-zero value) carried to ``target`` as label 1."""
    if isinstance(mask, RoiMap):
        return mask
    if not isinstance(mask, Volume):
        raise InputError(f"the {what} must be a mask Volume.")
    data = mask.numpy()
    if data.ndim == 4:
        data = data[0]
    if not np.issubdtype(data.dtype, np.number) and data.dtype != bool:
        raise InputError(f"the {what} is not numeric.")
    binary = (np.nan_to_num(data) != 0).astype(np.uint8)
    if not binary.any():
        raise InputError(f"the {what} is empty (no non-zero voxel); draw it over the {what.split()[-1]} first.")
    m = mask.replace(data=binary, unit="label")
    try:
        return carry_rois(m, target, name=f"the 19F image ({what})", progress=progress)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None


RICIAN_METHODS = ("power", "amplitude", "none")


def rician_correct(values, sigma: float, method="power"):
    """Per-voxel Rician bias correction of magnitudes ``values`` with noise ``sigma``.

    Parameters
    ----------
    values : array_like
        Magnitudes I (image units).
    sigma : float
        Rician noise sigma, same units (docs/methods/fluorine.md#noise).
    method : {"power", "amplitude", "none"} or bool, default "power"
        "power" (True): sqrt(max(I^2 - 2 sigma^2, 0)); "amplitude":
        sqrt(max(I^2 - sigma^2, 0)); "none" (False or None): I.

    Returns
    -------
    ndarray of float64
        The corrected magnitudes, same shape, never negative.

    Raises
    ------
    InputError
        For another method name.

    Examples
    --------
    >>> rician_correct(np.array([5.0, 1.0]), 2.0)
    array([4.12310563, 0.        ])
    """
    if method is True:
        method = "power"
    if method is False or method is None:
        method = "none"
    if method not in RICIAN_METHODS:
        raise InputError(f"rician_correction must be one of {', '.join(RICIAN_METHODS)} (got {method!r}).")
    v = np.asarray(values, np.float64)
    if method == "none":
        return v
    k = 2.0 if method == "power" else 1.0
    return np.sqrt(np.maximum(v**2 - k * sigma**2, 0.0))


ESTIMATORS = ("whole-roi", "threshold")


def _rician_pdf_matrix(amplitudes, r):
    from scipy.special import i0e

    dr = r[1] - r[0]
    return np.array([r * np.exp(-((r - a) ** 2) / 2.0) * i0e(r * a) for a in amplitudes]) * dr


_TABLE = {}


def amplitude_table():
    """The per-voxel amplitude estimator h (sigma = 1) and its mean and variance (cached).

    h is piecewise linear in the magnitude r (knots every 0.25 sigma up to 8 sigma,
    sqrt(r^2 - 1) beyond), chosen by least squares so that E[h(I) | A] = A for true
    amplitudes A in 0..8 sigma under Rician noise, with A = 0 weighted 300 x (most
    voxels of a generous ROI hold no signal) and a small roughness penalty
    (docs/methods/fluorine.md#whole-roi-estimate). Bias: < 0.02 sigma at A = 0 and for
    A >= 1.5 sigma; about -0.27 sigma at 0.5-1 sigma (partial-volume edges).

    Computed once per process (about 0.5 s) and kept; the same dict is returned after.

    Returns
    -------
    dict
        ``r`` (magnitude grid, 0..16 sigma in 3201 steps), ``h`` (the estimator on the grid r), ``A``
        (amplitudes 0..8 sigma in 161 steps), ``mean`` (E[h|A]), ``var`` (Var[h|A]), ``g`` (on the grid r:
        a per-voxel estimate of Var[h|A] from the voxel's own magnitude, fitted like h so that
        E[g|A] ~ Var[h|A]; :func:`variance_estimate`) and ``g_mean`` (E[g|A]); all in units of sigma
        (sigma^2 for the variances).

    Examples
    --------
    >>> tab = amplitude_table()
    >>> i = np.searchsorted(tab["A"], [0.0, 1.0, 3.0])      # true amplitudes 0, 1 and 3 sigma
    >>> np.round(tab["mean"][i], 3).tolist(), np.round(tab["var"][i], 3).tolist()
    ([0.014, 0.798, 3.003], [6.298, 5.426, 1.089])
    """
    if _TABLE:
        return _TABLE
    r = np.linspace(0.0, 16.0, 3201)
    amps = np.linspace(0.0, 8.0, 161)
    P = _rician_pdf_matrix(amps, r)
    knots = np.arange(0.0, 8.0 + 1e-9, 0.25)
    B = np.array([np.clip(1.0 - np.abs(r - k) / 0.25, 0.0, 1.0) for k in knots])
    B[-1] = np.where(r >= knots[-1], 1.0, B[-1])
    tail = np.where(r >= knots[-1], np.sqrt(np.maximum(r**2 - 1.0, 0.0)) - math.sqrt(knots[-1] ** 2 - 1.0), 0.0)
    M, t = P @ B.T, P @ tail
    W = np.ones(amps.size)
    W[0] = 300.0
    D = np.diff(np.eye(knots.size), 2, axis=0)
    Q = M.T @ (W[:, None] * M) + 0.003 * amps.size * D.T @ D
    coef = np.linalg.solve(Q, M.T @ (W * (amps - t)))
    h = B.T @ coef + tail
    mean = P @ h
    var = np.maximum(P @ h**2 - mean**2, 0.0)
    # g: a per-voxel estimate of Var(h | A) from the voxel's own magnitude, E[g(I) | A] ~ Var(h | A)
    # (the same basis; Var(h | A) depends on A only through A^2, so unlike A it is well represented)
    var_tail = float(var[-1])
    tail_g = np.where(r >= knots[-1], var_tail, 0.0)
    Mg, tg = P @ B.T, P @ tail_g
    Qg = Mg.T @ (W[:, None] * Mg) + 3e-5 * amps.size * D.T @ D
    coef_g = np.linalg.solve(Qg, Mg.T @ (W * (var - tg)))
    g = B.T @ coef_g + np.where(r >= knots[-1], var_tail - coef_g[-1], 0.0)
    g_mean = P @ g
    _TABLE.update(r=r, h=h, A=amps, mean=mean, var=var, g=g, g_mean=g_mean)
    return _TABLE


def amplitude_estimate(values, sigma: float):
    """Approximately unbiased Rician amplitude of each magnitude in ``values`` (may be negative).

    Unlike sqrt(I^2 - 2 sigma^2), its expectation is ~0 for a signal-free voxel, so a
    sum over a whole ROI does not pick up the noise floor (:func:`amplitude_table`,
    docs/methods/fluorine.md#whole-roi-estimate).

    Parameters
    ----------
    values : array_like
        Magnitudes I (image units).
    sigma : float
        Rician noise sigma, same units.

    Returns
    -------
    ndarray of float64
        h(I / sigma) * sigma, same shape and units; sqrt(I^2 - sigma^2) above 16 sigma.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> noise = np.hypot(rng.normal(0, 1, 200000), rng.normal(0, 1, 200000))
    >>> abs(float(amplitude_estimate(noise, 1.0).mean())) < 0.03
    True
    >>> hot = np.hypot(3.0 + rng.normal(0, 1, 200000), rng.normal(0, 1, 200000))
    >>> round(float(amplitude_estimate(hot, 1.0).mean()), 1)
    3.0
    """
    tab = amplitude_table()
    x = np.asarray(values, np.float64) / sigma
    out = np.interp(x, tab["r"], tab["h"])
    big = x > tab["r"][-1]
    out[big] = np.sqrt(x[big] ** 2 - 1.0)
    return out * sigma


def variance_estimate(values, sigma: float):
    """Approximately unbiased estimate, from each magnitude alone, of the variance of its
    :func:`amplitude_estimate` (``E[g(I) | A] ~ Var(h | A)``; may be below the true value or negative
    for one voxel, unbiased summed over many).

    Summed over an ROI it estimates the variance of the whole-ROI sum without assuming anything about
    the neighbours: a plug-in ``Var(h | A_hat)`` at a local mean or median amplitude mis-reads the
    empty voxels beside a bright depot (docs/methods/fluorine.md#uncertainty).

    Parameters
    ----------
    values : array_like
        Magnitudes I (image units).
    sigma : float
        Rician noise sigma, same units.

    Returns
    -------
    ndarray of float64
        g(I / sigma) * sigma^2, same shape (squared image units); beyond the table (16 sigma) the last
        value, about the Gaussian variance sigma^2.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> noise = np.hypot(rng.normal(0, 1, 400000), rng.normal(0, 1, 400000))
    >>> round(float(variance_estimate(noise, 1.0).mean()), 1), round(float(amplitude_estimate(noise, 1.0).var()), 1)
    (6.3, 6.3)
    """
    tab = amplitude_table()
    x = np.asarray(values, np.float64) / sigma
    out = np.interp(x, tab["r"], tab["g"])
    return out * sigma**2


def amplitude_variance(amplitude, sigma: float):
    """Variance of :func:`amplitude_estimate` for true amplitude(s) ``amplitude`` (clipped to >= 0).

    Parameters
    ----------
    amplitude : float or array_like
        True (noiseless) amplitudes, image units; negative values are read as 0.
    sigma : float
        Rician noise sigma, same units.

    Returns
    -------
    ndarray of float64
        Var[h | A] * sigma^2 (squared image units), interpolated in :func:`amplitude_table`; above 8 sigma the
        value at 8 sigma (about sigma^2, the Gaussian limit).

    Examples
    --------
    Amplitudes of 0, 1, 3 and 20 sigma (sigma = 2): a signal-free voxel's estimate is the noisiest.

    >>> np.round(amplitude_variance([0.0, 2.0, 6.0, 40.0], 2.0), 2).tolist()
    [25.19, 21.7, 4.36, 4.06]
    """
    tab = amplitude_table()
    a = np.clip(np.asarray(amplitude, np.float64) / sigma, 0.0, None)
    return np.interp(a, tab["A"], tab["var"], right=float(tab["var"][-1])) * sigma**2


def rician_fisher_information(amplitude, sigma: float = 1.0):
    """Fisher information of one Rician magnitude about its amplitude A (per sigma^2 units of 1/A^2).

    ``J(A) = E[(d/dA log p(I | A))^2]`` with ``p(I | A) = I / s^2 exp(-(I^2 + A^2) / 2 s^2) I0(I A / s^2)``:
    0 at A = 0 (the density depends on A only through A^2, so one voxel carries no first-order
    information about a small amplitude: no unbiased estimator of a signal-free voxel's amplitude has
    a finite variance bound), about 0.52 / sigma^2 at A = sigma, 0.89 at 2.3 sigma and -> 1 / sigma^2
    (the Gaussian value) at high SNR (docs/methods/fluorine.md#cramer-rao).

    Parameters
    ----------
    amplitude : float or array_like
        True amplitudes A, image units.
    sigma : float, default 1.0
        Rician noise sigma, same units.

    Returns
    -------
    ndarray of float64
        J(A) in 1 / (image units)^2, at least 1D (a scalar ``amplitude`` gives one value), computed by
        numerical integration over the magnitude.

    Examples
    --------
    >>> [round(float(j), 2) for j in rician_fisher_information([0.0, 1.0, 2.3, 10.0])]
    [0.0, 0.52, 0.89, 0.99]
    """
    from scipy.special import i0e, i1e

    a = np.atleast_1d(np.asarray(amplitude, np.float64)) / sigma
    r = np.linspace(0.0, float(np.max(a, initial=0.0)) + 12.0, 6001)
    dr = r[1] - r[0]
    out = np.empty(a.shape)
    for i, ai in enumerate(a.ravel()):
        x = r * ai
        dens = r * np.exp(-((r - ai) ** 2) / 2.0) * i0e(x)
        score = r * np.where(x > 0, i1e(x) / np.maximum(i0e(x), 1e-300), 0.0) - ai
        out.ravel()[i] = float(np.sum(dens * score**2) * dr)
    return out / sigma**2


def count_cramer_rao(amplitudes, sigma: float = 1.0, weights=None) -> dict:
    """Cramér-Rao bounds on the relative standard error of an ROI's total 19F signal ``sum(w A)``.

    Parameters
    ----------
    amplitudes : array
        True (noiseless) amplitudes of the ROI's voxels (signal units).
    sigma : float
        Rician noise sigma.
    weights : array, optional
        Partial-voxel weights (default 1).

    Returns
    -------
    dict
        ``known_shape``: the depot's shape known, one scale unknown (``A_v = theta s_v``):
        ``1 / sqrt(sum A_v^2 J(A_v))`` (A in sigma), the least any unbiased estimator can reach;
        ``known_support``: every voxel holding 19F has its own unknown amplitude, the empty voxels
        are known to be empty: ``sqrt(sum w^2 / J(A_v)) / sum(w A)``;
        ``gaussian``: the known-support bound with Gaussian (complex) noise, ``sigma sqrt(sum w^2) / sum(w A)``;
        ``whole_roi``: the standard error of the whole-ROI estimator (:func:`amplitude_estimate` summed
        over every voxel, its variance :func:`amplitude_variance` at the true amplitudes), which
        knows neither; ``within_10_percent``: the probability that one repetition falls within
        10 % for each (normal approximation). No unbiased estimator that does not know which voxels
        are empty has a finite bound (J(0) = 0, :func:`rician_fisher_information`).

    Examples
    --------
    >>> b = count_cramer_rao(np.r_[np.full(100, 3.0), np.zeros(200)])
    >>> round(b["known_support"], 4), round(b["gaussian"], 4), round(b["whole_roi"], 3)
    (0.0344, 0.0333, 0.123)
    """
    import math as _math

    a = np.asarray(amplitudes, np.float64).ravel() / sigma
    w = np.ones(a.size) if weights is None else np.asarray(weights, np.float64).ravel()
    total = float(np.dot(w, a))
    if not total > 0:
        raise InputError("the ROI holds no signal; a bound on its relative error is undefined.")
    hot = a > 0
    grid = np.linspace(0.0, max(float(a.max()), 8.0), 401)
    j = np.interp(a[hot], grid, rician_fisher_information(grid))
    # A_v = theta s_v with the shape s_v = a_v / total fixed: J(theta) = sum s_v^2 J(A_v), theta = total
    shape = 1.0 / _math.sqrt(float(np.sum(a[hot] ** 2 * j)))
    support = _math.sqrt(float(np.sum(w[hot] ** 2 / np.maximum(j, 1e-12)))) / total
    gaussian = _math.sqrt(float(np.sum(w[hot] ** 2))) / total
    whole = _math.sqrt(float(np.dot(w**2, amplitude_variance(a, 1.0)))) / total
    within = {
        k: _math.erf(0.1 / v / _math.sqrt(2.0))
        for k, v in (("known_shape", shape), ("known_support", support), ("whole_roi", whole))
    }
    return {
        "known_shape": shape,
        "known_support": support,
        "gaussian": gaussian,
        "whole_roi": whole,
        "within_10_percent": within,
        "signal_voxels": int(hot.sum()),
        "voxels": int(a.size),
    }


def grouped_median(values) -> float:
    """Median of ``values``; for quantised data (few distinct levels, e.g. integers stored with a
    scale factor) the median interpolated within its quantisation step.

    The plain median of quantised data is one of the levels: with a step of sigma/5 the Rayleigh median
    (1.18 sigma) is read as 1.2 sigma, sigma comes out ~2 % high, and a whole-ROI 19F count of a large,
    mostly empty ROI moves by ~-10 % (every empty voxel's estimate shifts with sigma). Each level
    stands for the interval of +-step/2 around it; the median is placed in that interval by the share
    of values below it (the grouped-data median; docs/methods/fluorine.md#noise).

    Parameters
    ----------
    values : array_like
        Any shape (flattened). Counted as quantised when they have at least 2 and at most ``0.05 * N``
        distinct levels, all on a grid of the smallest step between levels.

    Returns
    -------
    float
        The grouped median for quantised data, else the plain median; NaN for no values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.hypot(rng.normal(0, 1, 200000), rng.normal(0, 1, 200000))
    >>> q = np.round(x / 0.2) * 0.2
    >>> round(float(np.median(q)) / RAYLEIGH_MEDIAN, 3), round(grouped_median(q) / RAYLEIGH_MEDIAN, 3)
    (1.019, 1.003)
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    n = v.size
    if n == 0:
        return float("nan")
    med = float(np.median(v))
    levels = np.unique(v)
    if levels.size < 2 or levels.size > 0.05 * n:
        return med
    step = float(np.min(np.diff(levels)))
    # the data sit on a grid of that step (allowing float rounding): quantised
    if not np.allclose(np.round((levels - levels[0]) / step), (levels - levels[0]) / step, atol=1e-3):
        return med
    below = int(np.searchsorted(v, med, side="left"))
    at = int(np.searchsorted(v, med, side="right")) - below
    return float(med - step / 2.0 + step * (n / 2.0 - below) / max(at, 1))


def estimate_sigma(image: Volume, noise_mask=None, exclude: np.ndarray | None = None, *, with_error: bool = False):
    """Rician noise sigma of a magnitude image and how it was found.

    Parameters
    ----------
    image : Volume
    noise_mask : Volume, optional
        Signal-free background; sigma = mean / sqrt(pi/2).
    exclude : bool array, optional
        Voxels to leave out of the automatic estimate (ROIs, reference).

    with_error : bool
        Also return the relative standard error of sigma: sqrt((4 - pi) / pi) / sqrt(N) for
        the Rayleigh mean, 1 / (2 ln 2 sqrt(N)) for the Rayleigh median (N voxels).

    Returns
    -------
    (sigma, method) : (float, str), or (sigma, method, relative_se) with ``with_error``

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = np.hypot(rng.normal(0, 5, (30, 30, 30)), rng.normal(0, 5, (30, 30, 30)))
    >>> s, how = estimate_sigma(Volume(noise, np.eye(4)))
    >>> round(s, 1)
    5.0
    """
    data = image.numpy().astype(np.float64)
    if noise_mask is not None:
        nmap = _mask_map(noise_mask, image, "noise mask")
        w = nmap.weight[0].astype(np.float64)
        vals = data.reshape(-1)[nmap.index[0]]
        keep = w >= 0.5
        if keep.sum() < 10:
            raise InputError(
                "the noise mask holds fewer than 10 voxels of the 19F image; draw a larger signal-free region."
            )
        mean = float(vals[keep].mean())
        if not mean > 0:
            raise InputError(
                "the noise mask's mean is not positive; the image is not a magnitude image or the mask is wrong."
            )
        rel = math.sqrt((4.0 - math.pi) / math.pi) / math.sqrt(float(keep.sum()))
        out = (mean / RAYLEIGH_MEAN, "mean of the noise mask / sqrt(pi/2) (Rician background)")
        return (*out, rel) if with_error else out
    flat = data.reshape(-1)
    if exclude is not None:
        flat = flat[~exclude.reshape(-1)]
    flat = flat[np.isfinite(flat)]
    if flat.size < 100:
        raise InputError("too few voxels outside the ROIs to estimate the noise; give a noise mask.")
    median = grouped_median(flat)
    if not median > 0:
        raise InputError(
            "the image background is zero (not a magnitude image or already thresholded); give the "
            "noise sigma (--noise-sigma) or a noise mask."
        )
    out = (median / RAYLEIGH_MEDIAN, "median of voxels outside the ROIs and reference / sqrt(2 ln 2) (Rayleigh)")
    return (*out, 1.0 / (2.0 * math.log(2.0) * math.sqrt(flat.size))) if with_error else out


#: The tunable parameters of :func:`fluorine_cells`: the one place their defaults and limits are
#: written (``immunotrack fluorine``, the batch step ``f19`` and :mod:`napari_immunotrack.pipeline`
#: take them from here). The reference concentration and the 19F load per cell have no default: the
#: function needs them, the command line asks for them, a pipeline takes them from the 19F sidecar.
FLUORINE_PARAMETERS = ParamModel(
    "f19",
    [
        Param(
            "reference_concentration_mm",
            float,
            None,
            "19F concentration of the reference (see fluorine_atoms_per_molecule; "
            "in a pipeline, null = the 19F sidecar's ReferenceConcentration_mM)",
            unit="mM",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            flag="--reference-concentration",
        ),
        Param(
            "fluorine_per_cell",
            float,
            None,
            "19F atoms per cell, measured in vitro, e.g. 1e12 "
            "(in a pipeline, null = the 19F sidecar's FluorineAtomsPerCell)",
            unit="19F atoms",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
        ),
        Param(
            "noise_sigma",
            float,
            None,
            "known noise sigma (image units), instead of estimating it",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
        ),
        Param(
            "snr_threshold",
            float,
            3.5,
            "minimum voxel SNR counted (the per-voxel detection limit; the threshold estimator's cut)",
            unit="sigma",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "min_cluster_voxels",
            int,
            3,
            "minimum cluster size (threshold estimator)",
            unit="voxels",
            minimum=1,
            flag="--min-cluster",
        ),
        Param("connectivity", int, 26, "cluster connectivity", choices=(6, 18, 26)),
        Param(
            "fluorine_atoms_per_molecule",
            float,
            1.0,
            "19F atoms per molecule when the reference concentration is a compound's",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "rician_correction",
            str,
            "power",
            "per-voxel bias correction: power = sqrt(I^2 - 2 sigma^2), amplitude = sqrt(I^2 - sigma^2), none",
            choices=RICIAN_METHODS,
            aliases=((True, "power"), (False, "none"), (None, "none")),
        ),
        Param(
            "supersample",
            int,
            3,
            "subvoxels per axis for ROIs on rotated grids",
            minimum=1,
        ),
        Param(
            "near_threshold_factor",
            float,
            1.5,
            "voxels with SNR below this factor x snr_threshold are 'near threshold' (threshold estimator)",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "estimator",
            str,
            "whole-roi",
            "whole-roi (every voxel, noise floor removed, with uncertainty) or threshold",
            choices=ESTIMATORS,
        ),
    ],
)


@FLUORINE_PARAMETERS.bind
def fluorine_cells(
    f19: Volume,
    rois,
    reference_mask,
    reference_concentration_mm: float = FROM_MODEL,
    fluorine_per_cell: float = FROM_MODEL,
    *,
    noise_mask=None,
    noise_sigma: float | None = FROM_MODEL,
    snr_threshold: float = FROM_MODEL,
    min_cluster_voxels: int = FROM_MODEL,
    connectivity: int = FROM_MODEL,
    rician_correction=FROM_MODEL,
    fluorine_atoms_per_molecule: float = FROM_MODEL,
    transform: np.ndarray | None = None,
    supersample: int = FROM_MODEL,
    near_threshold_factor: float = FROM_MODEL,
    estimator: str = FROM_MODEL,
    pvc: str | None = None,
    psf=None,
    progress=None,
):
    """19F atoms and cells per ROI, calibrated on a reference tube.

    The tunable parameters take their defaults from :data:`FLUORINE_PARAMETERS` (shown in
    this signature) and are checked against it; ``reference_concentration_mm`` and
    ``fluorine_per_cell`` have none and must be given.

    Parameters
    ----------
    f19 : Volume
        19F magnitude image (3D).
    rois : Volume or RoiMap
        Labels on any grid (carried to the 19F grid with partial-voxel weights).
    reference_mask : Volume
        Mask of the reference tube (any grid; drawn inside the tube).
    reference_concentration_mm : float
        19F concentration of the reference (mM of 19F atoms; see
        ``fluorine_atoms_per_molecule``).
    fluorine_per_cell : float
        19F atoms per cell (F_c, measured in vitro).
    noise_mask : Volume, optional
        Signal-free background for sigma (recommended).
    noise_sigma : float, optional
        Known noise sigma (overrides the estimate).
    snr_threshold : float
        Voxels with I / sigma below this are not counted.
    min_cluster_voxels : int
        Smallest connected cluster of detected voxels that counts.
    connectivity : {6, 18, 26}
    rician_correction : {"power", "amplitude", "none"} or bool
        Per-voxel bias correction (:func:`rician_correct`); "power" (True) is
        sqrt(max(I^2 - 2 sigma^2, 0)).
    fluorine_atoms_per_molecule : float
        Multiplies ``reference_concentration_mm`` when it is the concentration of
        a compound (e.g. 3 for trifluoroacetic acid); 1 when it is already mM of 19F.
    transform : (4, 4) array, optional
        World-to-world map from 19F world to the ROI image's world (the masks
        share the 19F world).
    supersample : int
        Partial-voxel subsampling for ROIs on other grids.
    near_threshold_factor : float
        Voxels with SNR below factor x threshold are "near threshold" ("threshold" estimator).
    estimator : {"whole-roi", "threshold"}
        "whole-roi": every voxel of the ROI counts through the
        approximately unbiased Rician amplitude (:func:`amplitude_estimate`,
        zero on average for a signal-free voxel), with a standard error from the
        noise model and Currie's detection limit per ROI. "threshold": the older
        count of voxels above ``snr_threshold`` in clusters (biased low near the
        noise floor). See docs/methods/fluorine.md.
    pvc : {None, "none", "gtm", "rbv"}
        Partial-volume correction (docs/methods/pvc.md): adds ``fluorine_atoms_pvc``,
        ``cell_count_pvc`` and ``recovery_coefficient``.
    psf : PointSpread, float, str or sequence, optional
        PSF for ``pvc`` (FWHM mm; default per modality: the voxel alone for 19F MRI).
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        One row per label: label, voxels, volume_ml, counted_voxels, fluorine_atoms,
        cell_count (NaN when below the limit: no confident number), status ("ok" or
        "below detection limit"; "near threshold" with the threshold estimator),
        snr_max, detection_limit_cells_roi (cells the ROI must hold to be detected),
        detection_limit_cells_per_voxel (the scan's per-voxel limit, snr_threshold
        sigma), detection_limit_atoms_roi. The whole-ROI estimator adds
        fluorine_atoms_se, cell_count_se, cell_count_ci95_low/high (95 % interval)
        and cell_count_upper_bound (one-sided 95 % upper bound, filled for every ROI,
        the number to quote below the limit); the threshold estimator adds snr and
        near_threshold_fraction. ``attrs``: "warnings", "parameters".

    Examples
    --------
    A reference tube of 10 mM reading 100, and 27 voxels (1 mm) reading 50 (half the reference:
    81,299 cells of 1e12 atoms) under Rician noise of sigma 2, read in a 5-voxel cube:

    >>> rng = np.random.default_rng(0)
    >>> truth = np.zeros((20, 20, 20)); truth[2:6, 2:6, 2:6] = 100.0; truth[10:13, 10:13, 10:13] = 50.0
    >>> img = np.hypot(truth + rng.normal(0, 2, truth.shape), rng.normal(0, 2, truth.shape))
    >>> tube = Volume((truth == 100).astype(np.uint8), np.eye(4))
    >>> roi = np.zeros((20, 20, 20), np.uint8); roi[9:14, 9:14, 9:14] = 1
    >>> air = np.zeros((20, 20, 20), np.uint8); air[15:, 15:, 15:] = 1
    >>> df = fluorine_cells(Volume(img, np.eye(4), "F19"), Volume(roi, np.eye(4)), tube, 10.0, 1e12,
    ...                     noise_mask=Volume(air, np.eye(4)))
    >>> round(df.loc[0, "cell_count"]), round(df.loc[0, "cell_count_se"]), df.loc[0, "status"]
    (85952, 3506, 'ok')
    """
    import pandas as pd
    from scipy import ndimage

    if f19.data.ndim != 3:
        raise InputError("the 19F image must be 3D.")
    if (
        reference_concentration_mm is None
        or not np.isfinite(reference_concentration_mm)
        or reference_concentration_mm <= 0
    ):
        raise InputError(
            f"the reference concentration must be a positive number of mM (got {reference_concentration_mm})."
        )
    if fluorine_per_cell is None or not np.isfinite(fluorine_per_cell) or fluorine_per_cell <= 0:
        raise InputError(f"the 19F atoms per cell must be positive (got {fluorine_per_cell}).")
    if not fluorine_atoms_per_molecule > 0:
        raise InputError("fluorine_atoms_per_molecule must be positive.")
    rician_correct(np.zeros(1), 1.0, rician_correction)  # checks the method name
    if rician_correction is True:
        rician_correction = "power"
    elif rician_correction is False or rician_correction is None:
        rician_correction = "none"
    if not snr_threshold > 0:
        raise InputError(f"the SNR threshold must be positive (got {snr_threshold}).")
    if int(min_cluster_voxels) < 1:
        raise InputError(f"the minimum cluster size must be at least 1 voxel (got {min_cluster_voxels}).")
    if connectivity not in (6, 18, 26):
        raise InputError(f"connectivity must be 6, 18 or 26 (got {connectivity}).")
    if estimator not in ESTIMATORS:
        raise InputError(f"the estimator must be one of {', '.join(ESTIMATORS)} (got {estimator!r}).")
    warns = []

    def warn(msg):
        warns.append(msg)
        warnings.warn(msg, ImmunotrackWarning, stacklevel=3)

    _progress.report(progress, 0.0, "carrying ROIs and reference")
    ref_map = _mask_map(reference_mask, f19, "reference tube mask")
    roi_map = carry_rois(
        rois,
        f19,
        transform=transform,
        supersample=supersample,
        name="the 19F image",
        progress=_progress.scaled(progress, 0.05, 0.4),
    )
    warns.extend(roi_map.warnings)
    data = f19.numpy().astype(np.float64)
    flat = data.reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise InputError("the 19F image has NaN or infinite values; fix the reconstruction or mask them to 0.")

    # ---- noise
    if noise_sigma is not None:
        if not noise_sigma > 0:
            raise InputError(f"the noise sigma must be positive (got {noise_sigma}).")
        sigma, how, sigma_rel_se = float(noise_sigma), "given", 0.0
    else:
        exclude = None
        if noise_mask is None:
            exclude = np.zeros(flat.size, bool)
            for idx in [*roi_map.index, *ref_map.index]:
                exclude[idx] = True
            # keep away from the hot spots' tails
            hot = flat.reshape(data.shape) >= np.percentile(flat, 99.5)
            exclude = ndimage.binary_dilation(exclude.reshape(data.shape), iterations=2) | hot
        sigma, how, sigma_rel_se = estimate_sigma(f19, noise_mask, exclude, with_error=True)
        if noise_mask is None:
            warn(
                f"no noise mask: sigma = {sigma:.4g} estimated from the background median; give a signal-free "
                "noise mask for a traceable estimate."
            )
    _progress.report(progress, 0.45, "calibrating on the reference")

    whole = estimator == "whole-roi"
    corrected = amplitude_estimate(flat, sigma) if whole else rician_correct(flat, sigma, rician_correction)
    # ---- reference
    w_ref = ref_map.weight[0].astype(np.float64)
    ref_vals = corrected[ref_map.index[0]]
    ref_mean = float(np.dot(w_ref, ref_vals) / w_ref.sum())
    ref_snr = ref_mean / sigma
    if not ref_mean > 0:
        raise InputError("the reference tube has no signal above the noise; check the reference mask.")
    if ref_snr < snr_threshold:
        raise InputError(
            f"the reference tube's SNR is {ref_snr:.2f}, below {snr_threshold}; it cannot calibrate "
            "the image. Check the reference mask and concentration."
        )
    if ref_snr < 10:
        warn(f"the reference tube's SNR is only {ref_snr:.1f}; the calibration is noisy.")
    ref_sd = float(np.sqrt(np.dot(w_ref, (ref_vals - ref_mean) ** 2) / w_ref.sum()))
    ref_cv = ref_sd / ref_mean
    # relative standard error of the calibration (reference mean over its voxels)
    ref_rel_se = ref_cv / math.sqrt(max(float(w_ref.sum()), 1.0))
    voxel_l = f19.voxel_volume_mm3 * 1e-6
    f_ref = reference_concentration_mm * fluorine_atoms_per_molecule * 1e-3 * AVOGADRO * voxel_l
    atoms_per_signal = f_ref / ref_mean
    limit_atoms_voxel = snr_threshold * sigma * atoms_per_signal
    limit_cells_voxel = limit_atoms_voxel / fluorine_per_cell
    snr = flat / sigma

    pvc_result = None
    if pvc not in (None, "none"):
        from .pvc import correct_means, resolve_psf

        psf_obj = (
            psf
            if psf is not None and not isinstance(psf, (int, float, str, list, tuple, np.ndarray))
            else resolve_psf(f19, psf, modality="F19")
        )
        pvc_result = correct_means(
            f19.replace(data=corrected.reshape(data.shape).astype(np.float32)), roi_map, pvc, psf_obj
        )
        warns.extend(pvc_result["warnings"])
    _progress.report(progress, 0.6, "counting")
    rows = []
    voxel_ml = f19.voxel_volume_mm3 / 1000.0
    z95 = 1.959963984540054
    if whole:
        var_floor = float(np.min(amplitude_table()["var"])) * sigma**2
        for i, label in enumerate(roi_map.labels):
            idx, w = roi_map.index[i], roi_map.weight[i].astype(np.float64)
            amp = corrected[idx]
            signal = float(np.dot(w, amp))
            # the variance of the sum is estimated voxel by voxel from each voxel's own magnitude (unbiased
            # summed over the ROI; no assumption about neighbours), never below the high-SNR floor
            var_signal = max(float(np.dot(w**2, variance_estimate(flat[idx], sigma))), float(np.dot(w, w)) * var_floor)
            var_zero = float(np.dot(w**2, amplitude_variance(np.zeros(1), sigma)[0] * np.ones_like(w)))
            atoms = atoms_per_signal * signal
            # the error of sigma moves every voxel's estimate (and the reference's) together
            d_atoms = 0.0
            if sigma_rel_se > 0:
                s_plus = sigma * 1.001
                ref_plus = float(np.dot(w_ref, amplitude_estimate(flat[ref_map.index[0]], s_plus)) / w_ref.sum())
                atoms_plus = f_ref / ref_plus * float(np.dot(w, amplitude_estimate(flat[idx], s_plus)))
                d_atoms = (atoms_plus - atoms) / 0.001 * sigma_rel_se
            se_atoms = math.sqrt((atoms_per_signal**2) * var_signal + (atoms * ref_rel_se) ** 2 + d_atoms**2)
            se0_atoms = atoms_per_signal * math.sqrt(var_zero)
            decision_atoms = 1.6448536269514722 * se0_atoms  # Currie's critical level (5 % false positives)
            limit_atoms = 3.289707253902945 * se0_atoms  # Currie's detection limit (5 % false negatives)
            detected = atoms > decision_atoms
            cells = max(atoms, 0.0) / fluorine_per_cell
            se_cells = se_atoms / fluorine_per_cell
            row = {
                "label": int(label),
                "voxels": int(np.count_nonzero(w >= 0.5)),
                "volume_ml": float(w.sum() * voxel_ml),
                "counted_voxels": int(np.count_nonzero(w >= 0.5)),
                "fluorine_atoms": float(max(atoms, 0.0)) if detected else float("nan"),
                "fluorine_atoms_se": float(se_atoms),
                "cell_count": float(cells) if detected else float("nan"),
                "cell_count_se": float(se_cells),
                "cell_count_ci95_low": float(max(cells - z95 * se_cells, 0.0)) if detected else 0.0,
                "cell_count_ci95_high": float(cells + z95 * se_cells) if detected else float("nan"),
                "cell_count_upper_bound": float(cells + 1.6448536269514722 * se_cells),
                "status": "ok" if detected else "below detection limit",
                "snr_max": float(snr[idx].max()),
                "detection_limit_cells_roi": float(limit_atoms / fluorine_per_cell),
                "detection_limit_cells_per_voxel": float(limit_cells_voxel),
                "detection_limit_atoms_roi": float(limit_atoms),
            }
            rows.append(row)
    else:
        # ---- detection mask: SNR and cluster size
        detected_mask = (snr >= snr_threshold).reshape(data.shape)
        structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
        comp, n_comp = ndimage.label(detected_mask, structure=structure)
        if n_comp:
            sizes = np.bincount(comp.reshape(-1))
            keep_comp = sizes >= int(min_cluster_voxels)
            keep_comp[0] = False
            kept = keep_comp[comp].reshape(-1)
        else:
            kept = np.zeros(flat.size, bool)
        near_cut = near_threshold_factor * snr_threshold
        for i, label in enumerate(roi_map.labels):
            idx, w = roi_map.index[i], roi_map.weight[i].astype(np.float64)
            k = kept[idx]
            signal = float(np.dot(w[k], corrected[idx][k]))
            counted = int(np.count_nonzero(k & (w >= 0.5)))
            row = {
                "label": int(label),
                "voxels": int(np.count_nonzero(w >= 0.5)),
                "volume_ml": float(w.sum() * voxel_ml),
                "counted_voxels": counted,
            }
            if not np.any(k) or signal <= 0:
                row.update(
                    fluorine_atoms=float("nan"),
                    cell_count=float("nan"),
                    status="below detection limit",
                    snr=float("nan"),
                    snr_max=float(snr[idx].max()),
                    near_threshold_fraction=float("nan"),
                )
            else:
                atoms = atoms_per_signal * signal
                s_k = snr[idx][k]
                near = float(np.dot(w[k][s_k < near_cut], corrected[idx][k][s_k < near_cut]) / signal)
                status = "ok"
                if near > 0.5:
                    status = "near threshold"
                    warn(
                        f"ROI {label}: {100 * near:.0f}% of its 19F signal comes from voxels near the SNR threshold; "
                        "the count is probably an underestimate."
                    )
                row.update(
                    fluorine_atoms=float(atoms),
                    cell_count=float(atoms / fluorine_per_cell),
                    status=status,
                    snr=float(np.average(s_k, weights=w[k])),
                    snr_max=float(s_k.max()),
                    near_threshold_fraction=near,
                )
            # a site is detectable when it fills the minimum cluster at the per-voxel limit
            row.update(
                detection_limit_cells_roi=float(limit_cells_voxel * int(min_cluster_voxels)),
                detection_limit_cells_per_voxel=float(limit_cells_voxel),
                detection_limit_atoms_roi=float(limit_atoms_voxel * int(min_cluster_voxels)),
            )
            rows.append(row)
    df = pd.DataFrame(rows)
    if pvc_result is not None:
        from .pvc import add_pvc_columns

        df = add_pvc_columns(df, pvc_result, ["fluorine_atoms", "cell_count"])
    below = df.loc[df["status"] == "below detection limit"]
    if len(below):
        limits = ", ".join(f"{int(r.label)} (< {r.detection_limit_cells_roi:.3g} cells)" for r in below.itertuples())
        warn(f"ROI(s) below the detection limit, no count reported: {limits}.")
    df.attrs["warnings"] = warns
    df.attrs["parameters"] = {
        "estimator": estimator,
        "sigma": sigma,
        "sigma_method": how,
        "sigma_relative_se": sigma_rel_se,
        "rician_correction": "unbiased amplitude" if whole else rician_correction,
        "reference_concentration_mm": reference_concentration_mm,
        "fluorine_atoms_per_molecule": fluorine_atoms_per_molecule,
        "fluorine_per_cell": fluorine_per_cell,
        "reference_mean_signal": ref_mean,
        "reference_snr": ref_snr,
        "reference_cv": ref_cv,
        "reference_relative_se": ref_rel_se,
        "reference_voxels": float(w_ref.sum()),
        "atoms_per_reference_voxel": f_ref,
        "atoms_per_signal_unit": atoms_per_signal,
        "snr_threshold": snr_threshold,
        "min_cluster_voxels": int(min_cluster_voxels),
        "connectivity": connectivity,
        "detection_limit_cells_per_voxel": limit_cells_voxel,
        "roi_mapping": roi_map.method,
        "pvc": pvc_result["provenance"] if pvc_result is not None else None,
        "method": "docs/methods/fluorine.md",
    }
    _progress.report(progress, 1.0, "done")
    return df
