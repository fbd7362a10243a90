"""CEST: Z-spectra, B0 correction, MTRasym and multi-pool Lorentzian fitting.

Method (``docs/methods/cest.md``)
---------------------------------
1. **Z-spectrum.** A CEST series holds one image per saturation offset
   ``dw`` (ppm from water). ``Z(dw) = M(dw) / M0`` with ``M0`` an
   unsaturated scan or the mean of the frames saturated far off resonance
   (``|dw| >= |m0_offset|``, e.g. -300 ppm) inside the series.
2. **B0.** The water line sits at the local field offset. It is found per
   voxel from a WASSR scan (maximum symmetry of the spectrum about a
   candidate centre, "MSCF", or its minimum) or from the Z-spectrum's
   minimum, always on a cubic spline through the (optionally smoothed)
   spectrum, searched on a 0.01 ppm grid and refined by a parabola.
   The map is in ppm; each spectrum is then re-sampled at ``dw + B0``.
3. **MTRasym** ``(dw) = Z(-dw) - Z(+dw)`` on the B0-corrected spectrum
   (the interpolating spline: exact where the offsets were sampled).
4. **Lorentzian pools.** ``Z(dw) = c - sum_i A_i L_i(dw)`` with
   ``L_i = (G_i/2)^2 / ((G_i/2)^2 + (dw - d_w - d_i)^2)``: amplitude ``A_i``
   (fraction of M0, the depth the pool adds at its centre), full width at half
   maximum ``G_i`` (ppm) and offset ``d_i`` (ppm relative to water, whose own
   offset ``d_w`` is the residual B0). Fitted for all voxels at once by a
   bounded (projected) Levenberg-Marquardt with analytic Jacobians.

Everything here is pure NumPy/SciPy: no napari, no Qt, no files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import Cancelled, InputError
from ..progress import report, scaled
from ..volume import Volume

#: Offsets at or beyond this magnitude (ppm) are never CEST points: they are M0 references.
M0_OFFSET_LIMIT_PPM = 100.0

#: Sidecar keys read (in this order) for the saturation offsets in ppm.
OFFSET_KEYS_PPM = ("SaturationOffsetsPPM", "SaturationOffsetFrequencyPPM", "offsets_ppm", "OffsetsPPM")

#: Sidecar keys of offsets in Hz (converted with ``MagneticFieldStrength``; BIDS uses Hz for MT offsets).
OFFSET_KEYS_HZ = ("SaturationOffsetsHz", "MTOffsetFrequency")

#: 1H gyromagnetic ratio / 2 pi (MHz/T): Hz per ppm = this x field (T).
GAMMA_MHZ_PER_T = 42.57747892


# ----------------------------------------------------------------------------- offsets and Z
def parse_offsets(value, what: str = "--offsets-ppm") -> np.ndarray:
    """Saturation offsets (ppm) from a list, a comma/space-separated string or a file.

    Parameters
    ----------
    value : sequence of float, str or path
        ``[-300, -5, -4.75, ...]``, ``"-300,-5,-4.75"``, or a file holding
        numbers (text: one per line, commas or spaces; ``.json``: a list or an
        object with one of :data:`OFFSET_KEYS_PPM`).
    what : str
        Name of the option, used in error messages.

    Returns
    -------
    ndarray of float
        The offsets in acquisition order.

    Examples
    --------
    >>> parse_offsets("-300, -1, 0, 1").tolist()
    [-300.0, -1.0, 0.0, 1.0]
    """
    if value is None:
        raise InputError(
            f"{what} is missing; give the saturation offsets in ppm as a list (e.g. -300,-5,...,5) or a file."
        )
    if isinstance(value, (str, Path)) and Path(str(value)).is_file():
        path = Path(str(value))
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json":
            try:
                content = json.loads(text)
            except ValueError as exc:
                raise InputError(f"{what} {path}: not valid JSON ({exc}); give a list of ppm values.") from None
            if isinstance(content, dict):
                found = next((content[k] for k in OFFSET_KEYS_PPM if k in content), None)
                if found is None:
                    raise InputError(f"{what} {path}: no offsets in it; store them under 'SaturationOffsetsPPM'.")
                content = found
            value = content
        else:
            value = text
    if isinstance(value, (str, Path)):
        tokens = [t for t in re.split(r"[,;\s]+", str(value).strip()) if t]
        try:
            offsets = np.array([float(t) for t in tokens], float)
        except ValueError:
            raise InputError(
                f"{what}: {str(value)[:60]!r} is neither a file nor a list of numbers; give e.g. "
                "-300,-5,-4.5,...,5 or a text file of ppm values."
            ) from None
    else:
        try:
            offsets = np.asarray(value, float).ravel()
        except (TypeError, ValueError):
            raise InputError(f"{what}: the offsets must be numbers (ppm).") from None
    if offsets.size == 0:
        raise InputError(f"{what} is empty; give the saturation offsets in ppm.")
    if not np.all(np.isfinite(offsets)):
        raise InputError(f"{what} holds a non-finite value; give the offsets in ppm as numbers.")
    return offsets


def series_offsets(
    series: Volume, offsets=None, what: str = "CEST series", option: str = "--offsets-ppm"
) -> np.ndarray:
    """The offsets of a 4D series: ``offsets`` if given, else its header/sidecar; checked against its length.

    The header keys are :data:`OFFSET_KEYS_PPM` (ppm), then :data:`OFFSET_KEYS_HZ` (Hz, converted to ppm
    with ``MagneticFieldStrength``: ppm = Hz / (42.577 MHz/T x B0)).

    Parameters
    ----------
    series : Volume
        4D series, one 3D image per saturation offset along axis 0.
    offsets : sequence of float, str or path, optional
        Offsets in ppm given by the user (a list, "a,b,c" or a text file; :func:`parse_offsets`).
    what : str, default "CEST series"
        What the series is, in error messages.
    option : str, default "--offsets-ppm"
        The command-line option that gives the offsets, in error messages.

    Returns
    -------
    numpy.ndarray
        float64 offsets in ppm, one per frame, in acquisition order.

    Raises
    ------
    InputError
        A 3D image, no offsets anywhere, offsets in Hz without the field, or a list whose length
        differs from the number of frames.

    Examples
    --------
    >>> s = Volume(np.ones((3, 1, 1, 1)), np.eye(4), metadata={"SaturationOffsetsPPM": [-3.5, 0.0, 3.5]})
    >>> series_offsets(s)
    array([-3.5,  0. ,  3.5])
    >>> s = Volume(np.ones((3, 1, 1, 1)), np.eye(4),
    ...            metadata={"MTOffsetFrequency": [-1277.3, 0.0, 1277.3], "MagneticFieldStrength": 3.0})
    >>> np.round(series_offsets(s), 3)     # Hz at 3 T -> ppm
    array([-10.,   0.,  10.])
    """
    if series.data.ndim != 4:
        raise InputError(
            f"{what} {series.name or ''} is a 3D image; a CEST series is 4D (one 3D image per "
            "saturation offset): give the 4D NIfTI/DICOM series."
        )
    if offsets is None:
        found = next((series.metadata[k] for k in OFFSET_KEYS_PPM if k in series.metadata), None)
        hz_key = next((k for k in OFFSET_KEYS_HZ if k in series.metadata), None)
        if found is None and hz_key is not None:  # offsets in Hz (e.g. BIDS MTOffsetFrequency): ppm needs the field
            field_t = series.metadata.get("MagneticFieldStrength")
            if not field_t:
                raise InputError(
                    f"{what} {series.name or ''} gives its offsets in Hz ({hz_key}) but no "
                    f"MagneticFieldStrength; give the offsets in ppm with {option}."
                )
            hz = parse_offsets(series.metadata[hz_key], hz_key)
            found = hz / (GAMMA_MHZ_PER_T * float(field_t))
        if found is None:
            raise InputError(
                f"{what} {series.name or ''} has no saturation offsets in its header or JSON sidecar "
                f"('SaturationOffsetsPPM'); give them with {option} LIST|FILE."
            )
        offsets = found
    offsets = parse_offsets(offsets, option)
    if offsets.size != series.data.shape[0]:
        raise InputError(
            f"{option} has {offsets.size} offsets but {what} has {series.data.shape[0]} frames; "
            "give one offset per frame, in acquisition order."
        )
    return offsets


def m0_frames(offsets: np.ndarray, m0_offset: float | None = None) -> np.ndarray:
    """Boolean mask of the frames used as M0: ``|offset| >= |m0_offset|`` (default :data:`M0_OFFSET_LIMIT_PPM`).

    Parameters
    ----------
    offsets : numpy.ndarray
        Saturation offsets (ppm) of the frames.
    m0_offset : float, optional
        Offset (ppm) at or beyond which (in magnitude) a frame is an unsaturated reference; default
        100 ppm.

    Returns
    -------
    numpy.ndarray
        bool, one per frame: True for the M0 frames (docs/methods/cest.md#z-spectrum).

    Examples
    --------
    >>> m0_frames(np.array([-300.0, -3.5, 0.0, 3.5])).tolist()
    [True, False, False, False]
    >>> m0_frames(np.array([-300.0, 3.5, 10.0]), m0_offset=10).tolist()
    [True, False, True]
    """
    limit = M0_OFFSET_LIMIT_PPM if m0_offset is None else abs(float(m0_offset))
    return np.abs(np.asarray(offsets, float)) >= limit - 1e-6


def z_spectrum(
    signal: np.ndarray,
    offsets,
    m0: np.ndarray | None = None,
    m0_offset: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise a CEST series to a Z-spectrum, sorted by offset.

    Parameters
    ----------
    signal : ndarray, shape (K, ...)
        One image per saturation offset.
    offsets : sequence of float, length K
        Saturation offsets in ppm.
    m0 : ndarray, shape (...) or (R, ...), optional
        Unsaturated reference image (several repeats are averaged). Without it the frames with
        ``|offset| >= |m0_offset|`` (default 100 ppm) are averaged as M0.
    m0_offset : float, optional
        Offset (ppm, e.g. -300) at or beyond which frames are M0 references.

    Returns
    -------
    z : ndarray, shape (K', ...)
        ``M(dw)/M0`` at the CEST offsets (M0 frames removed, duplicates averaged), NaN where ``M0 <= 0``.
    dw : ndarray, shape (K',)
        Sorted CEST offsets (ppm).
    m0_image : ndarray, shape (...)
        The M0 used.

    Examples
    --------
    >>> s = np.array([[10.0], [5.0], [2.0], [6.0]])
    >>> z, dw, m0 = z_spectrum(s, [-300, -1, 0, 1])
    >>> dw.tolist(), z[:, 0].tolist()
    ([-1.0, 0.0, 1.0], [0.5, 0.2, 0.6])
    """
    signal = np.asarray(signal, np.float64)
    offsets = np.asarray(offsets, float)
    if offsets.size != signal.shape[0]:
        raise InputError(f"{offsets.size} offsets for {signal.shape[0]} frames; give one offset per frame.")
    ref = m0_frames(offsets, m0_offset)
    if m0 is None:
        if not ref.any():
            limit = M0_OFFSET_LIMIT_PPM if m0_offset is None else abs(float(m0_offset))
            raise InputError(
                f"no M0 reference: no offset at or beyond {limit:g} ppm in the offsets list and no M0 "
                "image; give --m0 M0_IMAGE or --m0-offset PPM (e.g. -300) naming the unsaturated frames."
            )
        m0 = signal[ref].mean(axis=0)
    else:
        m0 = np.asarray(m0, np.float64)
        if m0.ndim == signal.ndim:  # a 4D M0 (several unsaturated repeats): their mean
            m0 = m0.mean(axis=0)
        if m0.shape != signal.shape[1:]:
            raise InputError(
                f"the M0 image has shape {m0.shape} but the CEST frames have {signal.shape[1:]}; give an "
                "M0 on the series' grid."
            )
    keep = ~ref
    if keep.sum() < 3:
        raise InputError(f"only {int(keep.sum())} saturated offsets besides M0; a Z-spectrum needs at least 3.")
    dw, inverse = np.unique(np.round(offsets[keep], 9), return_inverse=True)
    if dw.size < 3:
        raise InputError(
            f"only {dw.size} distinct saturation offset(s) besides M0; a Z-spectrum needs at least 3 "
            "(check the offsets list)."
        )
    data = signal[keep]
    summed = np.zeros((dw.size,) + data.shape[1:])
    np.add.at(summed, inverse, data)
    summed /= np.bincount(inverse, minlength=dw.size).reshape((-1,) + (1,) * (data.ndim - 1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.where(m0 > 0, summed / np.where(m0 > 0, m0, 1.0), np.nan)
    z[~np.isfinite(z)] = np.nan
    return z, dw, m0


def default_mask(m0: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Voxels worth fitting: M0 above ``fraction`` of its 99th percentile (air and noise left out)."""
    finite = m0[np.isfinite(m0)]
    if finite.size == 0:
        return np.zeros(m0.shape, bool)
    return np.isfinite(m0) & (m0 > fraction * np.percentile(finite, 99))


# ----------------------------------------------------------------------------- splines
def smoothing_matrix(dw: np.ndarray, lam: float = 0.0) -> np.ndarray:
    """The linear map data -> values of the smoothing spline at ``dw`` (identity for ``lam = 0``).

    A cubic smoothing spline is a natural cubic spline with knots at the data,
    so smoothing then interpolating equals the smoothing spline; it is linear
    in the data, so one (K, K) matrix serves every voxel.
    """
    dw = np.asarray(dw, float)
    if not lam or lam <= 0:
        return np.eye(dw.size)
    from scipy.interpolate import make_smoothing_spline

    eye = np.eye(dw.size)
    return np.stack([make_smoothing_spline(dw, eye[:, j], lam=lam)(dw) for j in range(dw.size)], axis=1)


def spline_coefficients(z: np.ndarray, dw: np.ndarray, lam: float = 0.0) -> np.ndarray:
    """Piecewise-cubic coefficients, shape (4, K-1, V), of the natural spline through ``z`` (K, V)."""
    from scipy.interpolate import CubicSpline

    z = np.asarray(z, float)
    # a spectrum with a missing (non-finite) point gets no spline: NaN coefficients, NaN values
    ok = np.all(np.isfinite(z), axis=0)
    coef = np.full((4, max(dw.size - 1, 1), z.shape[1]), np.nan)
    if ok.any():
        zs = smoothing_matrix(dw, lam) @ z[:, ok] if lam else z[:, ok]
        coef[:, :, ok] = CubicSpline(dw, zs, axis=0, bc_type="natural").c
    return coef


def evaluate_spline(coef: np.ndarray, dw: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Evaluate per-voxel splines at per-voxel points.

    Parameters
    ----------
    coef : (4, K-1, V) coefficients from :func:`spline_coefficients`.
    dw : (K,) knots (sorted offsets).
    x : (Q, V) or (Q,) points; outside ``[dw[0], dw[-1]]`` the result is NaN (no extrapolation).

    Returns
    -------
    (Q, V) values.
    """
    n_vox = coef.shape[2]
    x = np.asarray(x, float)
    if x.ndim == 1:
        x = np.broadcast_to(x[:, None], (x.size, n_vox))
    seg = np.clip(np.searchsorted(dw, x, side="right") - 1, 0, dw.size - 2)
    t = x - dw[seg]
    cols = np.broadcast_to(np.arange(n_vox), x.shape)
    c0, c1, c2, c3 = (coef[i][seg, cols] for i in range(4))
    out = ((c0 * t + c1) * t + c2) * t + c3
    out[(x < dw[0] - 1e-9) | (x > dw[-1] + 1e-9) | ~np.isfinite(x)] = np.nan
    return out


def _grid_minimum(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Sub-grid position of the minimum of each column of ``values`` (G, V) by a parabola through 3 points."""
    filled = np.where(np.isfinite(values), values, np.inf)
    i = np.clip(np.argmin(filled, axis=0), 1, grid.size - 2)
    cols = np.arange(values.shape[1])
    y0, y1, y2 = filled[i - 1, cols], filled[i, cols], filled[i + 1, cols]
    denom = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(np.isfinite(denom) & (denom > 0), 0.5 * (y0 - y2) / denom, 0.0)
    step = grid[1] - grid[0]
    out = grid[i] + np.clip(frac, -1, 1) * step
    out[~np.isfinite(y1)] = np.nan
    return out


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def b0_from_minimum(
    z: np.ndarray,
    dw: np.ndarray,
    search_ppm: float = 1.5,
    smoothing: float = 0.0,
    step_ppm: float = 0.01,
    chunk: int = 4096,
) -> np.ndarray:
    """B0 (ppm) per voxel as the position of the spectrum's minimum near 0 ppm.

    Parameters
    ----------
    z : ndarray (K, V)
        Z-spectra (or WASSR spectra) on sorted offsets ``dw``.
    dw : ndarray (K,)
    search_ppm : float
        The minimum is searched in ``[-search_ppm, +search_ppm]``.
    smoothing : float
        ``lam`` of a cubic smoothing spline (0: interpolating spline).
    step_ppm : float
        Search grid; the minimum is refined between grid points by a parabola.
    chunk : int, default 4096
        Voxels evaluated at once (bounds the memory of the spline evaluation; no effect on the result).

    Returns
    -------
    ndarray (V,)
        B0 offset in ppm (NaN where the spectrum is not finite).

    Examples
    --------
    >>> dw = np.linspace(-3, 3, 41)
    >>> z = 1 - 0.9 / (1 + ((dw - 0.23) / 0.6) ** 2)
    >>> round(float(b0_from_minimum(z[:, None], dw)[0]), 3)
    0.23
    """
    dw = np.asarray(dw, float)
    lo, hi = max(-search_ppm, dw[0]), min(search_ppm, dw[-1])
    grid = np.arange(lo, hi + step_ppm / 2, step_ppm)
    out = np.full(z.shape[1], np.nan)
    S = smoothing_matrix(dw, smoothing)
    from scipy.interpolate import CubicSpline

    for sl in _chunks(z.shape[1], chunk):
        block = z[:, sl]
        ok = np.all(np.isfinite(block), axis=0)
        if not ok.any():
            continue
        values = CubicSpline(dw, S @ block[:, ok], axis=0, bc_type="natural")(grid)
        res = np.full(block.shape[1], np.nan)
        res[ok] = _grid_minimum(values, grid)
        out[sl] = res
    return out


def b0_from_symmetry(
    z: np.ndarray,
    dw: np.ndarray,
    search_ppm: float = 1.0,
    smoothing: float = 0.0,
    step_ppm: float = 0.01,
    chunk: int = 1024,
) -> np.ndarray:
    """B0 (ppm) per voxel as the centre about which the spectrum is most symmetric (WASSR, "MSCF").

    For each candidate centre ``c`` (near the spectrum's minimum) the cost is
    the mean of ``(S(c + d) - S(c - d))^2`` over distances ``d`` that both
    sides sample (``S`` the spline through the spectrum); the minimum over
    ``c`` is refined by a parabola. Unlike the spectrum's minimum, it uses the whole
    water line, so noise moves it less.

    Parameters
    ----------
    z : ndarray (K, V)
        WASSR (or Z-) spectra on sorted offsets ``dw``.
    dw : ndarray (K,)
    search_ppm : float
        Candidate centres in ``[-search_ppm, +search_ppm]``.
    smoothing : float
        ``lam`` of a cubic smoothing spline (0: interpolating).
    step_ppm : float
        Grid of candidate centres.
    chunk : int, default 1024
        Voxels evaluated at once (bounds the memory of the spline evaluation; no effect on the result).

    Returns
    -------
    ndarray (V,) in ppm.

    Examples
    --------
    >>> dw = np.linspace(-1.5, 1.5, 31)
    >>> z = 1 - 0.9 / (1 + ((dw + 0.117) / 0.3) ** 2)
    >>> round(float(b0_from_symmetry(z[:, None], dw)[0]), 3)
    -0.117
    """
    dw = np.asarray(dw, float)
    spacing = float(np.median(np.diff(dw))) if dw.size > 1 else 0.1
    # candidates around each voxel's minimum: far from the line both wings are flat and look "symmetric"
    first = b0_from_minimum(z, dw, search_ppm=search_ppm, smoothing=smoothing, step_ppm=step_ppm, chunk=chunk)
    reach = max(3 * spacing, 0.2)
    rel = np.arange(-reach, reach + step_ppm / 2, step_ppm)
    half = min(-dw[0], dw[-1]) - abs(search_ppm) - reach
    half = max(half, 2 * spacing)
    dist = np.linspace(spacing / 2, half, max(8, int(np.ceil(half / (spacing / 2)))))
    out = np.full(z.shape[1], np.nan)
    for sl in _chunks(z.shape[1], chunk):
        block = z[:, sl]
        ok = np.all(np.isfinite(block), axis=0) & np.isfinite(first[sl])
        if not ok.any():
            continue
        coef = spline_coefficients(block[:, ok], dw, smoothing)
        centres = first[sl][ok][None, :] + rel[:, None]  # (C, v)
        plus = (centres[:, None, :] + dist[None, :, None]).reshape(-1, centres.shape[1])
        minus = (centres[:, None, :] - dist[None, :, None]).reshape(-1, centres.shape[1])
        diff = evaluate_spline(coef, dw, plus) - evaluate_spline(coef, dw, minus)
        diff = diff.reshape(rel.size, dist.size, -1)
        # points beyond the sampled range are left out of the mean (NaN), not counted as symmetric
        cost = np.nanmean(diff * diff, axis=1)
        cost[np.sum(np.isfinite(diff), axis=1) < max(4, dist.size // 2)] = np.nan
        res = np.full(block.shape[1], np.nan)
        res[ok] = first[sl][ok] + _grid_minimum(cost, rel)
        out[sl] = res
    return out


def shift_spectra(
    z: np.ndarray, dw: np.ndarray, b0_ppm: np.ndarray, out_dw: np.ndarray | None = None, smoothing: float = 0.0
) -> np.ndarray:
    """B0-corrected spectra: each voxel's spline re-sampled at ``out_dw + B0``.

    Parameters
    ----------
    z : ndarray (K, V)
    dw : ndarray (K,) sorted offsets of ``z``.
    b0_ppm : ndarray (V,)
        Field offset per voxel (ppm); NaN is read as 0 (no correction).
    out_dw : ndarray (Q,), optional
        Offsets of the corrected spectra (default ``dw``); points whose shifted position falls
        outside the sampled range are NaN.
    smoothing : float
        ``lam`` of a smoothing spline (0: the interpolating spline, exact at the samples).

    Returns
    -------
    ndarray (Q, V)

    Examples
    --------
    >>> dw = np.linspace(-5, 5, 101)
    >>> lor = lambda x, c: 1 - 0.8 / (1 + ((x - c) / 0.5) ** 2)
    >>> z = lor(dw, 0.3)[:, None]
    >>> corrected = shift_spectra(z, dw, np.array([0.3]))
    >>> bool(np.nanmax(np.abs(corrected[:, 0] - lor(dw, 0.0))) < 2e-3)
    True
    """
    dw = np.asarray(dw, float)
    out_dw = dw if out_dw is None else np.asarray(out_dw, float)
    b0 = np.nan_to_num(np.asarray(b0_ppm, float), nan=0.0)
    coef = spline_coefficients(z, dw, smoothing)
    return evaluate_spline(coef, dw, out_dw[:, None] + b0[None, :])


def mtrasym(z: np.ndarray, dw: np.ndarray, at_ppm: Sequence[float], b0_ppm: np.ndarray | None = None) -> np.ndarray:
    """MTRasym(dw) = Z(-dw) - Z(+dw) on the (B0-corrected) spectra.

    Parameters
    ----------
    z : ndarray (K, V) on sorted offsets ``dw``.
    dw : ndarray (K,)
    at_ppm : sequence of float
        Offsets at which MTRasym is wanted (ppm, positive: the CEST side).
    b0_ppm : ndarray (V,), optional
        Field offset per voxel; the spectrum is read at ``+-dw + B0`` (NaN is read as 0).

    Returns
    -------
    ndarray (len(at_ppm), V); NaN where ``+-dw + B0`` is outside the sampled range.

    Examples
    --------
    >>> dw = np.array([-3.5, -1.0, 0.0, 1.0, 3.5])
    >>> z = np.array([[0.80], [0.40], [0.05], [0.41], [0.75]])
    >>> float(mtrasym(z, dw, [3.5])[0, 0].round(6))
    0.05
    """
    at = np.atleast_1d(np.asarray(at_ppm, float))
    b0 = np.zeros(z.shape[1]) if b0_ppm is None else np.nan_to_num(np.asarray(b0_ppm, float), nan=0.0)
    coef = spline_coefficients(z, np.asarray(dw, float))
    neg = evaluate_spline(coef, dw, -at[:, None] + b0[None, :])
    pos = evaluate_spline(coef, dw, at[:, None] + b0[None, :])
    return neg - pos


# ----------------------------------------------------------------------------- Lorentzian pools
@dataclass(frozen=True)
class Pool:
    """One Lorentzian pool: start values and bounds of amplitude, width (FWHM, ppm) and offset.

    ``offset`` is relative to water (ppm); for the water pool it is the absolute line position
    (the residual B0). Bounds are ``(low, high)``.
    """

    name: str
    offset: float
    offset_bounds: tuple[float, float]
    amplitude: float
    amplitude_bounds: tuple[float, float]
    width: float
    width_bounds: tuple[float, float]


#: Default pools (3-9.4 T, saturation around 0.5-2 uT; see docs/methods/cest.md#pools).
DEFAULT_POOLS: dict[str, Pool] = {
    "water": Pool("water", 0.0, (-1.0, 1.0), 0.9, (0.02, 1.0), 1.4, (0.1, 10.0)),
    "amide": Pool("amide", 3.5, (3.2, 3.8), 0.025, (0.0, 0.3), 1.0, (0.3, 5.0)),
    "amine": Pool("amine", 2.2, (1.6, 2.8), 0.01, (0.0, 0.3), 1.5, (0.5, 5.0)),
    "noe": Pool("noe", -3.5, (-4.5, -2.5), 0.02, (0.0, 0.3), 3.0, (0.8, 10.0)),
    "mt": Pool("mt", -2.5, (-6.0, 0.0), 0.1, (0.0, 0.6), 25.0, (8.0, 150.0)),
}


def make_pools(
    names: Iterable[str] = ("water", "amide", "amine", "noe", "mt"),
    extra: dict[str, float] | None = None,
    extra_tolerance_ppm: float = 0.2,
) -> list[Pool]:
    """The pools of a fit: default pools by name plus user pools ``{name: ppm}`` (e.g. ``{"lrp": 3.4}``).

    A user pool with a default pool's name moves that pool's offset; its offset may vary by
    ``extra_tolerance_ppm``. Water is always included (first). Start values and bounds of the default
    pools are in :data:`DEFAULT_POOLS` (docs/methods/cest.md#lorentzian-pools); a new pool starts at
    amplitude 0.02 (bounds 0-0.3) and width 1 ppm (0.3-5 ppm).

    Parameters
    ----------
    names : iterable of str, default ("water", "amide", "amine", "noe", "mt")
        Default pools to include (case-insensitive; empty names are skipped).
    extra : dict, optional
        User pools ``{name: offset ppm relative to water}``.
    extra_tolerance_ppm : float, default 0.2
        How far (ppm) a user pool's offset may move in the fit.

    Returns
    -------
    list of Pool
        Water first, then the named pools, then the user pools.

    Raises
    ------
    InputError
        An unknown default pool, or a user pool name that is not a word or is "water".

    Examples
    --------
    >>> [p.name for p in make_pools(["water", "mt"], {"lrp": 3.4})]
    ['water', 'mt', 'lrp']
    >>> amide = make_pools(["amide"], {"amide": 3.6})[1]
    >>> amide.offset, tuple(round(b, 2) for b in amide.offset_bounds)
    (3.6, (3.4, 3.8))
    """
    pools: dict[str, Pool] = {"water": DEFAULT_POOLS["water"]}
    for name in names:
        key = name.strip().lower()
        if not key:
            continue
        if key not in DEFAULT_POOLS:
            raise InputError(
                f"unknown pool {name!r}; pools are {', '.join(DEFAULT_POOLS)}, or add one with --pool NAME:PPM."
            )
        pools[key] = DEFAULT_POOLS[key]
    for name, ppm in (extra or {}).items():
        key = name.strip().lower()
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", key) or key == "water":
            raise InputError(f"pool name {name!r} must be a word (letters, digits, - or _) other than water.")
        ppm = float(ppm)
        tol = float(extra_tolerance_ppm)
        base = DEFAULT_POOLS.get(key)
        if base is not None:
            pools[key] = replace(base, offset=ppm, offset_bounds=(ppm - tol, ppm + tol))
        else:
            pools[key] = Pool(key, ppm, (ppm - tol, ppm + tol), 0.02, (0.0, 0.3), 1.0, (0.3, 5.0))
    return list(pools.values())


def parse_pool_option(text: str) -> tuple[str, float]:
    """``"lrp:3.4"`` -> ``("lrp", 3.4)`` (the ``--pool NAME:PPM`` option).

    Parameters
    ----------
    text : str
        ``NAME:PPM``: a pool name and its offset from water (ppm).

    Returns
    -------
    tuple of (str, float)
        The name (stripped, lower case) and the offset (ppm).

    Raises
    ------
    InputError
        No colon, an empty name, or an offset that is not a finite number.

    Examples
    --------
    >>> parse_pool_option("LRP:3.4"), parse_pool_option("guanidine : 2.0")
    (('lrp', 3.4), ('guanidine', 2.0))
    """
    name, sep, ppm = str(text).partition(":")
    try:
        value = float(ppm)
    except ValueError:
        value = None
    if not sep or not name.strip() or value is None or not np.isfinite(value):
        raise InputError(f"--pool {text!r}: give NAME:PPM, e.g. --pool lrp:3.4.")
    return name.strip().lower(), value


def _pack(pools: Sequence[Pool]):
    """Start vector and bounds: [c, A_0, G_0, d_0, A_1, G_1, d_1, ...]."""
    start, lo, hi = [1.0], [0.5], [1.0]  # Z cannot exceed 1: a free baseline trades off with a broad MT pool
    for p in pools:
        start += [p.amplitude, p.width, p.offset]
        lo += [p.amplitude_bounds[0], p.width_bounds[0], p.offset_bounds[0]]
        hi += [p.amplitude_bounds[1], p.width_bounds[1], p.offset_bounds[1]]
    return np.array(start), np.array(lo), np.array(hi)


def lorentzian_model(params: np.ndarray, dw: np.ndarray, jacobian: bool = False):
    """Multi-pool Lorentzian Z-spectrum and (optionally) its Jacobian.

    Parameters
    ----------
    params : ndarray (V, 1 + 3 n)
        ``[c, A_w, G_w, d_w, A_1, G_1, d_1, ...]``: baseline, then per pool amplitude, FWHM (ppm),
        offset (water: absolute; others: relative to water).
    dw : ndarray (K,) offsets (ppm).
    jacobian : bool
        Also return d model / d params, shape (V, K, P).

    Returns
    -------
    model : ndarray (V, K), and the Jacobian when asked.

    Examples
    --------
    >>> p = np.array([[1.0, 0.8, 1.0, 0.0, 0.05, 1.0, 3.5]])
    >>> lorentzian_model(p, np.array([0.0, 3.5]))[0].round(4).tolist()
    [0.199, 0.934]
    """
    params = np.atleast_2d(params)
    n_pool = (params.shape[1] - 1) // 3
    x = np.asarray(dw, float)[None, :]
    c = params[:, 0:1]
    d_water = params[:, 3:4]
    model = np.repeat(c, x.shape[1], axis=1).astype(float)
    jac = np.zeros(params.shape[:1] + (x.shape[1], params.shape[1])) if jacobian else None
    if jacobian:
        jac[:, :, 0] = 1.0
    for i in range(n_pool):
        a, g, d = params[:, 1 + 3 * i : 2 + 3 * i], params[:, 2 + 3 * i : 3 + 3 * i], params[:, 3 + 3 * i : 4 + 3 * i]
        centre = d if i == 0 else d_water + d
        u = x - centre
        h = 0.25 * g * g
        den = h + u * u
        lor = h / den
        model -= a * lor
        if jacobian:
            den2 = den * den
            jac[:, :, 1 + 3 * i] = -lor
            jac[:, :, 2 + 3 * i] = -a * (0.5 * g * u * u) / den2
            dlor_dcentre = a * (2.0 * h * u) / den2  # d(-a*lor)/d centre = -a * d lor/d centre ... sign below
            jac[:, :, 3 + 3 * i] = -dlor_dcentre
            if i > 0:
                jac[:, :, 3] -= dlor_dcentre
    return (model, jac) if jacobian else model


@dataclass
class LorentzianFit:
    """Result of :func:`fit_lorentzians`: parameters per voxel and what they mean."""

    pools: list[Pool]
    params: np.ndarray  # (V, 1 + 3 n)
    rmse: np.ndarray  # (V,)
    iterations: int = 0
    converged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def index(self, pool: str, what: str) -> int:
        """Column of ``what`` (amplitude, width, offset) of ``pool`` in :attr:`params`.

        Parameters
        ----------
        pool : str
            A pool of the fit ("water", "amide", ...).
        what : {"amplitude", "width", "offset"}
            The parameter.

        Returns
        -------
        int
            The column (column 0 is the baseline ``c``; then three per pool, in the pools' order).

        Raises
        ------
        InputError
            A pool that is not in the fit.

        Examples
        --------
        >>> fit = LorentzianFit(make_pools(["water", "amide"]), np.array([[1.0, 0.9, 1.4, 0.1, 0.05, 1.0, 3.5]]), np.zeros(1))
        >>> fit.index("water", "amplitude"), fit.index("amide", "offset")
        (1, 6)
        """
        names = [p.name for p in self.pools]
        if pool not in names:
            raise InputError(f"no pool {pool!r} in this fit; pools: {', '.join(names)}.")
        return 1 + 3 * names.index(pool) + ("amplitude", "width", "offset").index(what)

    def values(self, pool: str, what: str) -> np.ndarray:
        """Per-voxel amplitude (fraction of M0), width (FWHM, ppm) or offset (ppm; water: B0 residual).

        Parameters
        ----------
        pool : str
            A pool of the fit.
        what : {"amplitude", "width", "offset"}
            The parameter.

        Returns
        -------
        numpy.ndarray
            (V,) values; pool offsets other than water's are relative to water.

        Examples
        --------
        >>> fit = LorentzianFit(make_pools(["water", "amide"]), np.array([[1.0, 0.9, 1.4, 0.1, 0.05, 1.0, 3.5]]), np.zeros(1))
        >>> fit.values("amide", "amplitude").tolist(), fit.values("water", "offset").tolist()
        ([0.05], [0.1])
        """
        return self.params[:, self.index(pool, what)]

    def model(self, dw: np.ndarray, without: str | None = None) -> np.ndarray:
        """The fitted spectra (V, K) at ``dw``; ``without`` drops one pool (its reference spectrum).

        Parameters
        ----------
        dw : numpy.ndarray
            Offsets (ppm), (K,).
        without : str, optional
            A pool whose amplitude is set to 0: the spectrum without it, the reference of a
            Lorentzian-difference contrast.

        Returns
        -------
        numpy.ndarray
            (V, K) Z values (:func:`lorentzian_model`).

        Examples
        --------
        >>> fit = LorentzianFit(make_pools(["water", "amide"]), np.array([[1.0, 0.9, 1.4, 0.1, 0.05, 1.0, 3.5]]), np.zeros(1))
        >>> full, reference = fit.model(np.array([3.6]))[0, 0], fit.model(np.array([3.6]), without="amide")[0, 0]
        >>> round(float(full), 4), round(float(reference - full), 4)       # the amide pool's share at 3.6 ppm
        (0.9154, 0.05)
        """
        params = self.params.copy()
        if without is not None:
            params[:, self.index(without, "amplitude")] = 0.0
        return lorentzian_model(params, dw)


def fit_lorentzians(
    z: np.ndarray,
    dw: np.ndarray,
    pools: Sequence[Pool] | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
    chunk: int = 2048,
    starts: np.ndarray | None = None,
    z_floor: float = 0.0,
    restarts: int = 3,
    progress=None,
) -> LorentzianFit:
    """Fit the multi-pool Lorentzian model to every spectrum at once.

    A projected Levenberg-Marquardt: all voxels of a chunk take their steps
    together (batched normal equations, analytic Jacobian, a damping factor per
    voxel), parameters are clipped into their bounds after every step, and a
    voxel stops when its cost no longer falls. NaN points of a spectrum
    (e.g. outside the range after B0 correction) get zero weight.

    Parameters
    ----------
    z : ndarray (K, V)
        Z-spectra (ideally B0-corrected) on offsets ``dw`` (ppm).
    dw : ndarray (K,)
    pools : sequence of Pool, optional
        Default: :func:`make_pools` () (water, amide, amine, NOE, MT). Water must be first.
    max_iter : int
        Iterations at most.
    tol : float
        Relative cost decrease under which a voxel counts as converged.
    chunk : int
        Voxels per batch (memory ~ chunk x K x P x 8 bytes x 3).
    z_floor : float
        Points with ``Z < z_floor`` get zero weight: near the water line a magnitude image's
        noise floor (Rician bias) lifts Z, which would widen the fitted water line and eat
        the solute pools (about ``3 sigma / M0``; docs/methods/cest.md#noise-floor).
    restarts : int
        Starts per voxel (1: the default start only); the best fit is kept. Extra starts move
        the broad pools (MT wider and deeper, amine wider), where multi-pool fits get stuck;
        in a chunk of 256 spectra or more they are tried only where the residual is over 1.3
        times the chunk's median (a fit worse than its peers).
    starts : ndarray (P,) or (V, P), optional
        Start values (default: the pools' start values, water amplitude from the spectrum's depth).
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    LorentzianFit

    Examples
    --------
    >>> dw = np.linspace(-6, 6, 49)
    >>> pools = make_pools(["amide"])
    >>> truth = np.array([[1.0, 0.7, 1.2, 0.1, 0.04, 1.0, 3.5]])
    >>> z = lorentzian_model(truth, dw).T
    >>> fit = fit_lorentzians(z, dw, pools)
    >>> round(float(fit.values("amide", "amplitude")[0]), 4)
    0.04
    """
    pools = list(pools) if pools is not None else make_pools()
    if not pools or pools[0].name != "water":
        raise InputError("the first pool of a Lorentzian fit must be water.")
    dw = np.asarray(dw, float)
    z = np.asarray(z, float)
    n_vox = z.shape[1]
    p0, lo, hi = _pack(pools)
    n_par = p0.size
    if np.isfinite(z).sum(axis=0).max(initial=0) < n_par and n_vox:
        raise InputError(
            f"{len(dw)} offsets cannot determine {n_par} parameters of {len(pools)} pools; "
            "acquire more offsets or fit fewer pools (--pools)."
        )
    params = np.full((n_vox, n_par), np.nan)
    rmse = np.full(n_vox, np.nan)
    converged = np.zeros(n_vox, bool)
    iters_total = 0
    chunks = list(_chunks(n_vox, chunk))
    for ci, sl in enumerate(chunks):
        y = z[:, sl].T  # (v, K)
        weight = (np.isfinite(y) & ~(y < z_floor)).astype(float)
        y = np.nan_to_num(y)
        valid = weight.sum(axis=1) >= n_par
        if starts is not None:
            p = np.broadcast_to(np.asarray(starts, float), (n_vox, n_par))[sl].copy()
        else:
            p = np.repeat(p0[None, :], y.shape[0], axis=0)
            # water depth and baseline from the spectrum itself: a start close to the answer
            with np.errstate(invalid="ignore"):
                far = np.where(weight > 0, y, -np.inf).max(axis=1)
                near = np.where(weight > 0, y, np.inf).min(axis=1)
            p[:, 0] = np.clip(np.where(np.isfinite(far), far, 1.0) + 0.05, lo[0], hi[0])
            p[:, 1] = np.clip(p[:, 0] - np.where(np.isfinite(near), near, 0.0) - 0.1, lo[1], hi[1])
            p[:, 2] = np.clip(_half_depth_width(y, weight, dw), lo[2], hi[2])
            # water line where the spectrum is deepest: the solute pools then start at their own offsets
            p[:, 3] = np.clip(dw[np.argmin(np.where(weight > 0, y, np.inf), axis=1)], lo[3], hi[3])
        p = np.clip(p, lo, hi)
        variants = [p] + [np.clip(_variant(p, pools, k), lo, hi) for k in range(1, max(1, int(restarts)))]
        best = None
        for vi, start in enumerate(variants):
            frac0 = (ci + vi / len(variants)) / len(chunks)
            sub_progress = scaled(progress, frac0, frac0 + 1 / len(variants) / len(chunks))
            if best is None:
                best = list(_lm_batch(y, weight, start, lo, hi, dw, max_iter, tol, valid, progress=sub_progress))
                # other starts only where the fit is worse than most of its peers (a local minimum), or for
                # a few spectra (an ROI's mean) where no peers tell
                per_point = best[1] / np.maximum(weight.sum(axis=1), 1)
                typical = np.nanmedian(per_point[valid]) if valid.any() else 0.0
                retry = valid & ((per_point > 1.3 * typical) if valid.sum() >= 256 else True)
                continue
            if not retry.any():
                break
            res = _lm_batch(
                y[retry], weight[retry], start[retry], lo, hi, dw, max_iter, tol, valid[retry], progress=sub_progress
            )
            # keep, per voxel, the start that reached the lowest cost (local minima of multi-pool fits)
            better = np.zeros(len(y), bool)
            better[retry] = res[1] < best[1][retry]
            take = better[retry]
            best[0][better], best[1][better], best[2][better] = res[0][take], res[1][take], res[2][take]
            best[3] = max(best[3], res[3])
        p, cost, conv, iters = best
        iters_total = max(iters_total, iters)
        p[~valid] = np.nan
        params[sl] = p
        with np.errstate(invalid="ignore", divide="ignore"):
            rmse[sl] = np.where(valid, np.sqrt(cost / np.maximum(weight.sum(axis=1), 1)), np.nan)
        converged[sl] = conv & valid
    report(progress, 1.0, "Lorentzian fit done")
    return LorentzianFit(pools, params, rmse, iters_total, converged)


def _variant(p: np.ndarray, pools: Sequence[Pool], k: int) -> np.ndarray:
    """Start variant ``k`` (1, 2, ...): broad pools moved to other plausible basins."""
    q = p.copy()
    for i, pool in enumerate(pools):
        col = 1 + 3 * i
        if pool.name == "mt":
            q[:, col] = pool.amplitude * (2.0 if k % 2 else 0.5)
            q[:, col + 1] = pool.width * (2.5 if k % 2 else 0.5)
            q[:, col + 2] = pool.offset - (1.5 if k % 2 else -1.0)
        elif pool.name != "water":
            q[:, col] = pool.amplitude * (0.5 + k)
            q[:, col + 1] = pool.width * (1.0 + 0.5 * k)
    return q


def _half_depth_width(y: np.ndarray, weight: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Full width (ppm) of each spectrum's dip at half its depth: a start for the water width."""
    filled = np.where(weight > 0, y, np.nan)
    top = np.nanmax(filled, axis=1, initial=-np.inf, where=weight > 0)
    bottom = np.nanmin(filled, axis=1, initial=np.inf, where=weight > 0)
    below = filled < (0.5 * (top + bottom))[:, None]
    width = np.where(below, 1.0, 0.0).sum(axis=1) * (np.median(np.diff(dw)) if dw.size > 1 else 1.0)
    return np.where(np.isfinite(width) & (width > 0), width, 1.4)


def _lm_batch(y, weight, p, lo, hi, dw, max_iter, tol, valid, progress=None):
    """Projected Levenberg-Marquardt on a batch of spectra (rows of ``y``)."""
    n, n_par = p.shape
    lam = np.full(n, 1e-2)
    model = lorentzian_model(p, dw)
    r = (y - model) * weight
    cost = np.sum(r * r, axis=1)
    active = valid.copy()
    conv = np.zeros(n, bool)
    eye = np.eye(n_par)
    it = 0
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        pa = p[idx]
        model_a, jac = lorentzian_model(pa, dw, jacobian=True)
        wa = weight[idx]
        ra = (y[idx] - model_a) * wa
        jw = jac * wa[:, :, None]
        jwt = jw.transpose(0, 2, 1)
        jtj = jwt @ jw  # batched BLAS, much faster than einsum here
        grad = (jwt @ ra[:, :, None])[:, :, 0]
        diag = np.einsum("vpp->vp", jtj)
        scale = np.maximum(diag, 1e-12)
        # a few damping attempts per iteration: a rejected step raises lambda and tries again at once
        improved = np.zeros(idx.size, bool)
        new_p = pa.copy()
        new_cost = cost[idx].copy()
        lam_a = lam[idx]
        pending = np.ones(idx.size, bool)
        for _attempt in range(4):
            sub = np.flatnonzero(pending)
            if sub.size == 0:
                break
            a = jtj[sub] + (lam_a[sub][:, None] * scale[sub])[:, :, None] * eye[None]
            try:
                step = np.linalg.solve(a, grad[sub][:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(ai, gi, rcond=None)[0] for ai, gi in zip(a, grad[sub])])
            trial = np.clip(pa[sub] + step, lo, hi)
            rt = (y[idx[sub]] - lorentzian_model(trial, dw)) * wa[sub]
            ct = np.sum(rt * rt, axis=1)
            better = np.isfinite(ct) & (ct < cost[idx[sub]])
            good = sub[better]
            new_p[good] = trial[better]
            new_cost[good] = ct[better]
            improved[good] = True
            lam_a[good] = np.maximum(lam_a[good] / 3.0, 1e-9)
            bad = sub[~better]
            lam_a[bad] = np.minimum(lam_a[bad] * 4.0, 1e9)
            pending[good] = False
        old_cost = cost[idx]
        rel = (old_cost - new_cost) / np.maximum(old_cost, 1e-30)
        p[idx] = new_p
        cost[idx] = new_cost
        lam[idx] = lam_a
        done = (improved & (rel < tol)) | (~improved & (lam_a >= 1e9)) | (new_cost < 1e-28)
        conv[idx[done]] = True
        active[idx[done]] = False
        if it % 5 == 0:
            report(progress, it / max_iter, f"Lorentzian fit: {int(active.sum())} spectra still moving")
    conv |= ~active & valid
    return p, cost, conv, it


# ----------------------------------------------------------------------------- whole analysis on Volumes
@dataclass
class CestResult:
    """Maps of :func:`analyse_cest` (Volumes on the series' grid) and what produced them."""

    maps: dict[str, Volume]
    dw: np.ndarray
    z: np.ndarray  # (K, *spatial) B0-corrected Z-spectra
    z_raw: np.ndarray  # (K, *spatial) before B0 correction
    b0_ppm: np.ndarray  # spatial
    fit: LorentzianFit | None
    mask: np.ndarray
    parameters: dict
    warnings: list[str] = field(default_factory=list)


def _format_ppm(value: float) -> str:
    text = f"{float(value):g}"
    return text.replace("-", "minus")


def map_name(kind: str, value=None) -> str:
    """File stem of a map: ``b0_ppm``, ``mtrasym_3.5ppm``, ``amplitude_amide``, ...

    Parameters
    ----------
    kind : str
        The map kind: "mtrasym", or any other kind ("b0_ppm", "amplitude", "width", "offset",
        "fit_rmse").
    value : float or str, optional
        The MTRasym offset (ppm; a minus sign is written "minus"), or the pool name.

    Returns
    -------
    str
        ``mtrasym_<ppm>ppm``, ``<kind>_<value>``, or ``kind`` itself without a value.

    Examples
    --------
    >>> map_name("b0_ppm"), map_name("mtrasym", 3.5), map_name("mtrasym", -3.5), map_name("amplitude", "amide")
    ('b0_ppm', 'mtrasym_3.5ppm', 'mtrasym_minus3.5ppm', 'amplitude_amide')
    """
    if kind == "mtrasym":
        return f"mtrasym_{_format_ppm(value)}ppm"
    if value is None:
        return kind
    return f"{kind}_{value}"


def analyse_cest(
    series: Volume,
    offsets=None,
    m0: Volume | None = None,
    m0_offset: float | None = None,
    wassr: Volume | None = None,
    wassr_offsets=None,
    mtrasym_ppm: Sequence[float] = (3.5,),
    pools: Sequence[Pool] | None = None,
    b0_method: str | None = None,
    smoothing: float = 0.0,
    mask: Volume | None = None,
    fit: bool = True,
    max_iter: int = 100,
    z_floor: float = 0.02,
    progress=None,
) -> CestResult:
    """Z-spectra, B0 map, MTRasym maps and Lorentzian pool maps of a CEST series.

    Parameters
    ----------
    series : Volume, 4D
        One 3D image per saturation offset (leading axis).
    offsets : sequence, str or path, optional
        Offsets in ppm (default: the series' header/sidecar ``SaturationOffsetsPPM``).
    m0 : Volume, optional
        Unsaturated image on the series' grid. Default: frames with ``|offset| >= |m0_offset|``.
    m0_offset : float, optional
        Offset (ppm) at/beyond which frames are M0 (default 100 ppm in magnitude).
    wassr : Volume, optional
        WASSR series (4D) on the same grid, for the B0 map; ``wassr_offsets`` its offsets.
    wassr_offsets : sequence, str or path, optional
        Offsets (ppm) of the WASSR series (default: its header/sidecar).
    mtrasym_ppm : sequence of float, default (3.5,)
        Offsets (ppm) of the MTRasym maps, ``Z(-dw) - Z(+dw)`` after B0 correction
        (docs/methods/cest.md#mtrasym).
    pools : sequence of Pool, optional
        Pools of the Lorentzian fit (:func:`make_pools`); default water, amide, amine, NOE, MT.
    b0_method : {"wassr", "wassr-minimum", "minimum", "fit", "none"}, optional
        Default "wassr" with a WASSR scan, else "minimum". "fit": the water pool's offset of a
        Lorentzian fit to the uncorrected spectra (uses all pools, so asymmetric MT/NOE do not
        pull it). "none": no correction (docs/methods/cest.md#b0-correction).
    smoothing : float, default 0.0
        Smoothing-spline ``lam`` for the B0 search (0: interpolating spline).
    mask : Volume, optional
        Voxels to analyse (default: M0 above 5 % of its 99th percentile).
    fit : bool, default True
        Run the Lorentzian fit.
    max_iter : int, default 100
        Levenberg-Marquardt iterations at most.
    z_floor : float, default 0.02
        Z values below this are left out of the fit (noise floor; see :func:`fit_lorentzians`).
    progress : callable, optional
        ``progress(fraction, message)`` callback; may raise Cancelled.

    Returns
    -------
    CestResult
        ``maps`` holds ``b0_ppm``, ``mtrasym_<ppm>ppm``, ``amplitude_<pool>``, ``width_<pool>``,
        ``offset_<pool>`` and ``fit_rmse`` (NaN outside the mask); Z-spectra before and after B0
        correction, the fit, the mask, the parameters and the warnings.

    Examples
    --------
    Two voxels of water (0.9 deep, 1.4 ppm wide) shifted by B0 = +0.2 ppm, with an amide pool
    (0.05 deep at +3.5 ppm from water) and one M0 frame at 300 ppm:

    >>> def lorentzian(x, depth, fwhm, centre):
    ...     return depth * (fwhm / 2) ** 2 / ((fwhm / 2) ** 2 + (x - centre) ** 2)
    >>> off = np.concatenate([[300.0], np.arange(-6.0, 6.01, 0.5)])
    >>> z = 1 - lorentzian(off, 0.9, 1.4, 0.2) - lorentzian(off, 0.05, 1.0, 3.7)
    >>> data = (1000.0 * z)[:, None, None, None] * np.ones((off.size, 1, 1, 2))
    >>> series = Volume(data, np.eye(4), "MR", metadata={"SaturationOffsetsPPM": off.tolist()})
    >>> res = analyse_cest(series, pools=make_pools(["water", "amide"]))
    >>> sorted(res.maps)
    ['amplitude_amide', 'amplitude_water', 'b0_ppm', 'fit_rmse', 'mtrasym_3.5ppm', 'offset_amide', 'offset_water', 'width_amide', 'width_water']
    >>> [round(float(res.maps[k].data[0, 0, 0]), 2) for k in ("b0_ppm", "mtrasym_3.5ppm", "amplitude_amide", "offset_amide")]
    [0.17, 0.05, 0.05, 3.53]
    """
    spatial = series.data.shape[1:] if series.data.ndim == 4 else series.data.shape
    offsets = series_offsets(series, offsets)
    signal = np.asarray(series.numpy() if hasattr(series, "numpy") else series.data, np.float64)
    m0_data = None
    if m0 is not None:
        m0_data = np.asarray(m0.numpy(), np.float64)
        if m0_data.shape[-3:] != spatial:
            raise InputError(
                f"the M0 image has shape {m0_data.shape[-3:]} but the CEST series' images have "
                f"{spatial}; give an M0 on the series' grid."
            )
    if b0_method is None:
        b0_method = "wassr" if wassr is not None else "minimum"
    if b0_method not in ("wassr", "wassr-minimum", "minimum", "fit", "none"):
        raise InputError(f"unknown B0 method {b0_method!r}; use wassr, wassr-minimum, minimum, fit or none.")
    if b0_method in ("wassr", "wassr-minimum") and wassr is None:
        raise InputError(f"B0 method {b0_method!r} needs a WASSR scan; give --wassr WASSR --wassr-offsets-ppm LIST.")
    w_off = None
    if wassr is not None:  # every input checked before the first progress line
        w_off = series_offsets(wassr, wassr_offsets, what="WASSR series", option="--wassr-offsets-ppm")
        if wassr.data.shape[1:] != spatial:
            raise InputError(
                f"the WASSR series' images have shape {wassr.data.shape[1:]} but the CEST series' have "
                f"{spatial}; give both on one grid."
            )
        n_wassr = np.unique(np.round(w_off[~m0_frames(w_off)], 9)).size
        if n_wassr < 5:
            raise InputError(f"the WASSR scan has {n_wassr} offsets; at least 5 around 0 ppm are needed.")
    z, dw, m0_img = z_spectrum(signal, offsets, m0_data, m0_offset)
    n_par = 1 + 3 * len(pools if pools is not None else make_pools())
    if (fit or b0_method == "fit") and dw.size < n_par:
        raise InputError(
            f"{dw.size} offsets cannot determine the {n_par} parameters of the Lorentzian pools; "
            "acquire more offsets or fit fewer pools (--pools)."
        )
    if mask is not None:
        sel = np.asarray(mask.numpy()) > 0
        if sel.shape != spatial:
            raise InputError(
                f"the mask has shape {sel.shape} but the CEST images have {spatial}; give a mask on the series' grid."
            )
        sel &= np.isfinite(m0_img) & (m0_img > 0)
    else:
        sel = default_mask(m0_img)
    report(progress, 0.0, "Z-spectra")
    zv = z.reshape(dw.size, -1)[:, sel.ravel()]
    n_vox = zv.shape[1]
    warnings_: list[str] = []
    report(progress, 0.05, "B0 map")
    if b0_method in ("wassr", "wassr-minimum"):
        w_sig = np.asarray(wassr.numpy(), np.float64)
        keep = ~m0_frames(w_off)
        w_dw, inv = np.unique(np.round(w_off[keep], 9), return_inverse=True)
        w = np.zeros((w_dw.size,) + spatial)
        np.add.at(w, inv, w_sig[keep])
        w /= np.bincount(inv).reshape(-1, 1, 1, 1)
        wv = w.reshape(w_dw.size, -1)[:, sel.ravel()]
        with np.errstate(invalid="ignore", divide="ignore"):
            wv = wv / np.nanmax(np.abs(wv), axis=0, keepdims=True)  # symmetry and minimum ignore the scale
        if b0_method == "wassr":
            b0v = b0_from_symmetry(wv, w_dw, smoothing=smoothing)
        else:
            b0v = b0_from_minimum(wv, w_dw, smoothing=smoothing)
    elif b0_method == "minimum":
        b0v = b0_from_minimum(zv, dw, smoothing=smoothing)
    elif b0_method == "fit":
        pre = fit_lorentzians(zv, dw, pools, max_iter=max_iter, z_floor=z_floor, progress=scaled(progress, 0.05, 0.4))
        b0v = pre.values("water", "offset")
    elif b0_method == "none":
        b0v = np.zeros(n_vox)
    else:
        raise InputError(f"unknown B0 method {b0_method!r}; use wassr, wassr-minimum, minimum, fit or none.")
    report(progress, 0.4, "B0 correction")
    zc = shift_spectra(zv, dw, b0v) if b0_method != "none" else zv.copy()
    maps: dict[str, Volume] = {}
    affine = series.affine

    def to_map(values, name, unit):
        full = np.full(int(np.prod(spatial)), np.nan, np.float32)
        full[sel.ravel()] = values
        maps[name] = Volume(
            full.reshape(spatial), affine, modality="MR", unit=unit, metadata={"quantity": name}, name=name
        )

    to_map(b0v, "b0_ppm", "ppm")
    asym = mtrasym(zv, dw, mtrasym_ppm, b0v)
    for value, row in zip(np.atleast_1d(mtrasym_ppm), asym):
        if np.isnan(row).all() and n_vox:
            warnings_.append(f"MTRasym at {value:g} ppm: +-{value:g} ppm is outside the sampled offsets.")
        to_map(row, map_name("mtrasym", value), "fraction of M0")
    result_fit = None
    if fit:
        report(progress, 0.45, "Lorentzian fit")
        result_fit = fit_lorentzians(
            zc, dw, pools, max_iter=max_iter, z_floor=z_floor, progress=scaled(progress, 0.45, 0.98)
        )
        for pool in result_fit.pools:
            to_map(result_fit.values(pool.name, "amplitude"), map_name("amplitude", pool.name), "fraction of M0")
            to_map(result_fit.values(pool.name, "width"), map_name("width", pool.name), "ppm")
            to_map(result_fit.values(pool.name, "offset"), map_name("offset", pool.name), "ppm")
        to_map(result_fit.rmse, "fit_rmse", "fraction of M0")
    z_full = np.full((dw.size, int(np.prod(spatial))), np.nan)
    z_full[:, sel.ravel()] = zc
    z_raw = z.reshape(dw.size, -1).copy()
    z_raw[:, ~sel.ravel()] = np.nan
    b0_full = maps["b0_ppm"].data.astype(float)
    params = {
        "offsets_ppm": offsets.tolist(),
        "m0": "image"
        if m0 is not None
        else f"frames with |offset| >= {abs(m0_offset) if m0_offset is not None else M0_OFFSET_LIMIT_PPM:g} ppm",
        "b0_method": b0_method,
        "smoothing": smoothing,
        "z_floor": z_floor,
        "max_iter": max_iter,
        "mtrasym_ppm": [float(v) for v in np.atleast_1d(mtrasym_ppm)],
        "pools": [_pool_dict(p) for p in (result_fit.pools if result_fit else [])],
        "voxels": int(n_vox),
    }
    report(progress, 1.0, "CEST done")
    return CestResult(
        maps,
        dw,
        z_full.reshape((dw.size,) + spatial),
        z_raw.reshape((dw.size,) + spatial),
        b0_full,
        result_fit,
        sel,
        params,
        warnings_,
    )


def cest_step(
    inputs: dict[str, object],
    *,
    offsets=None,
    m0_offset: float | None = None,
    mtrasym_ppm: Sequence[float] = (3.5,),
    pools: Sequence[str] = ("amide", "amine", "noe", "mt"),
    extra_pools: dict[str, float] | None = None,
    b0_method: str | None = None,
    z_floor: float = 0.02,
    label_names: dict[int, str] | None = None,
    progress=None,
):
    """The ``cest`` step of a session pipeline: maps from files, and their means per organ label.

    Parameters
    ----------
    inputs : {role: path}
        ``cest`` (the 4D series, offsets in its sidecar unless ``offsets`` is given), optional
        ``cest_wassr`` (WASSR series with its sidecar), ``cest_m0`` (M0 image) and ``dseg``
        (organ labels on any grid; carried to the CEST grid through world coordinates).
    offsets, m0_offset, mtrasym_ppm, b0_method, z_floor
        As in :func:`analyse_cest`.
    pools, extra_pools
        Default pools by name and user pools ``{name: ppm}`` (:func:`make_pools`).
    label_names : {label: name}, optional
        Names of the ``dseg`` labels for the table.
    progress : callable, optional
        ``progress(fraction, message)`` callback; may raise Cancelled.

    Returns
    -------
    maps : {name: Volume}
        As :attr:`CestResult.maps`.
    table : pandas.DataFrame
        One row per organ label present on the CEST grid: ``label``, ``name``, ``voxels`` and
        the mean of every map (column = map name, units in docs/methods/cest.md).

    Examples
    --------
    A 2 x 2 x 2 series with an amide pool (0.05 deep at 3.5 ppm), its offsets in the JSON sidecar, and
    two organs:

    >>> import json, tempfile
    >>> from napari_immunotrack.io import save_volume
    >>> off = np.concatenate([[300.0], np.arange(-6.0, 6.01, 0.5)])
    >>> def lorentzian(x, depth, fwhm, centre):
    ...     return depth * (fwhm / 2) ** 2 / ((fwhm / 2) ** 2 + (x - centre) ** 2)
    >>> z = 1 - lorentzian(off, 0.9, 1.4, 0.0) - lorentzian(off, 0.05, 1.0, 3.5)
    >>> organs = np.zeros((2, 2, 2), np.uint8)
    >>> organs[0], organs[1] = 1, 2
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     series = Path(tmp) / "sub-01_ses-day1_cest.nii.gz"
    ...     data = ((1000.0 * z)[:, None, None, None] * np.ones((off.size, 2, 2, 2))).astype(np.float32)
    ...     _ = save_volume(Volume(data, np.eye(4), "MR"), series)
    ...     _ = (Path(tmp) / "sub-01_ses-day1_cest.json").write_text(json.dumps({"SaturationOffsetsPPM": off.tolist()}))
    ...     _ = save_volume(Volume(organs, np.eye(4), "SEG", "label"), Path(tmp) / "dseg.nii.gz")
    ...     maps, table = cest_step({"cest": str(series), "dseg": str(Path(tmp) / "dseg.nii.gz")},
    ...                             pools=("amide",), label_names={1: "tumour", 2: "muscle"})
    >>> print(table[["label", "name", "voxels", "mtrasym_3.5ppm", "amplitude_amide"]].round(3).to_string(index=False))
     label   name  voxels  mtrasym_3.5ppm  amplitude_amide
         1 tumour       4            0.05             0.05
         2 muscle       4            0.05             0.05
    """
    import pandas as pd

    from ..io import load_volume

    if not inputs.get("cest"):
        raise InputError("the cest step needs a CEST series (cest/*_cest.nii.gz in the session).")
    series = load_volume(inputs["cest"])
    wassr = load_volume(inputs["cest_wassr"]) if inputs.get("cest_wassr") else None
    m0 = load_volume(inputs["cest_m0"]) if inputs.get("cest_m0") else None
    result = analyse_cest(
        series,
        offsets,
        m0=m0,
        m0_offset=m0_offset,
        wassr=wassr,
        mtrasym_ppm=mtrasym_ppm,
        pools=make_pools(pools, extra_pools),
        b0_method=b0_method,
        z_floor=z_floor,
        progress=progress,
    )
    rows = []
    if inputs.get("dseg"):
        reference = result.maps["b0_ppm"]
        organs = np.asarray(load_volume(inputs["dseg"]).resample_to(reference, order=0).numpy()).astype(int)
        for label in np.unique(organs[result.mask & (organs > 0)]):
            inside = (organs == label) & result.mask
            row = {
                "label": int(label),
                "name": (label_names or {}).get(int(label), str(label)),
                "voxels": int(inside.sum()),
            }
            for name, vol in result.maps.items():
                row[name] = float(np.nanmean(np.asarray(vol.data)[inside]))
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["parameters"] = result.parameters
    table.attrs["warnings"] = result.warnings
    return result.maps, table


def _pool_dict(pool: Pool) -> dict:
    return {
        "name": pool.name,
        "offset": pool.offset,
        "offset_bounds": list(pool.offset_bounds),
        "amplitude": pool.amplitude,
        "amplitude_bounds": list(pool.amplitude_bounds),
        "width": pool.width,
        "width_bounds": list(pool.width_bounds),
    }


__all__ = [
    "DEFAULT_POOLS",
    "CestResult",
    "LorentzianFit",
    "Pool",
    "analyse_cest",
    "b0_from_minimum",
    "b0_from_symmetry",
    "cest_step",
    "fit_lorentzians",
    "lorentzian_model",
    "m0_frames",
    "make_pools",
    "map_name",
    "mtrasym",
    "parse_offsets",
    "parse_pool_option",
    "series_offsets",
    "shift_spectra",
    "z_spectrum",
]

_ = Cancelled  # progress callbacks raise it; re-exported for callers catching it here
