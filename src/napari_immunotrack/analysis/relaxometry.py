"""Relaxometry: T2*, T2 and T1 maps, their rates, fit quality, and agent concentrations.

Every fit here works on a 4D :class:`~napari_immunotrack.volume.Volume` whose
leading axis holds the samples of one voxel's curve (echoes, flip angles,
inversion or saturation times) and on the list of those sampling values. All
voxels are fitted at once (vectorised NumPy on chunks of voxels, no Python loop
over voxels). The methods, their assumptions and references are in
``docs/methods/relaxometry.md``; the section names below match its headings.

Models (``model=``)
-------------------
``"t2star"``  multi-echo gradient echo, ``S(TE) = A exp(-TE R2*)``
    ``method="rician"`` (default): least squares on the squared magnitude with
    the Rician noise floor, ``E[M^2] = A^2 exp(-2 TE R2*) + 2 sigma^2``, which
    is exact for magnitude data whatever the SNR (docs/methods/relaxometry.md#noise-floor).
    ``method="loglinear"``: weighted straight line through ``ln S`` of the
    echoes above the noise (fast, biased where late echoes reach the floor).
``"t2"``  multi-echo spin echo (CPMG)
    ``method="exponential"`` (default, the same noise-floor fit as T2*), or
    ``method="epg"``: extended phase graphs with the refocusing angle scaled by
    a per-voxel B1 fitted with T2, by matching a dictionary of EPG echo trains
    (docs/methods/relaxometry.md#epg).
``"t1vfa"``  variable flip angle spoiled gradient echo (DESPOT1)
    ``method="nonlinear"`` (default) or ``"linear"``; an optional B1 map scales
    the nominal flip angles (docs/methods/relaxometry.md#vfa).
``"t1sr"``  saturation recovery, ``S(t) = M0 (1 - exp(-t R1))``
``"t1ir"``  magnitude inversion recovery, ``S(TI) = |a + b exp(-TI R1)|`` with
    polarity restoration (docs/methods/relaxometry.md#inversion-recovery).

Outputs (:class:`RelaxationMaps`)
---------------------------------
``time_ms`` (T2*/T2/T1 in ms), ``rate_per_s`` (R2*/R2/R1 in 1/s), ``goodness``
(coefficient of determination R^2 of the fitted curve on the magnitudes),
``amplitude`` (S0 or M0) and ``unreliable``: a bit mask, 0 where the fit is
trusted, else the sum of :data:`FLAG_FIT_FAILED` (no finite fit),
:data:`FLAG_OUT_OF_RANGE` (relaxation time outside what the sampling can
measure) and :data:`FLAG_LOW_SIGNAL` (fewer than 3 samples above 3 sigma: noise
or background). Voxels with too little signal have NaN times and rates.

Concentrations
--------------
:func:`delta_rate` subtracts a registered baseline rate map; :func:`concentration`
divides by a relaxivity (mM^-1 s^-1, defaults in :data:`RELAXIVITIES`);
:func:`metal_mass_ug` turns mM into micrograms per voxel, and
:func:`relaxometry_roi_table` gives ROI tables with micromoles and micrograms of
iron or gadolinium per ROI.

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> te = np.array([2.0, 4, 6, 8, 10, 12, 14, 16])
>>> data = 1000 * np.exp(-te / 20.0)[:, None, None, None] * np.ones((8, 2, 2, 2))
>>> maps = fit_relaxation(Volume(data, np.eye(4)), "t2star", echo_times_ms=te, noise_sigma=0)
>>> float(np.round(maps.time_ms.data[0, 0, 0], 3))
20.0
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

MODELS = ("t2star", "t2", "t1vfa", "t1sr", "t1ir")

#: Default fitting method of each model.
DEFAULT_METHOD = {
    "t2star": "rician",
    "t2": "exponential",
    "t1vfa": "nonlinear",
    "t1sr": "nonlinear",
    "t1ir": "nonlinear",
}
METHODS = {
    "t2star": ("rician", "loglinear"),
    "t2": ("exponential", "loglinear", "epg"),
    "t1vfa": ("nonlinear", "linear"),
    "t1sr": ("nonlinear",),
    "t1ir": ("nonlinear",),
}

#: What each model measures: (time name, rate name, sampling list, its unit).
QUANTITY = {
    "t2star": ("T2star", "R2star", "echo times", "ms"),
    "t2": ("T2", "R2", "echo times", "ms"),
    "t1vfa": ("T1", "R1", "flip angles", "deg"),
    "t1sr": ("T1", "R1", "saturation times", "ms"),
    "t1ir": ("T1", "R1", "inversion times", "ms"),
}

FLAG_FIT_FAILED = 1
FLAG_OUT_OF_RANGE = 2
FLAG_LOW_SIGNAL = 4

#: Molar masses (g/mol) of the metals a concentration can be given in.
MOLAR_MASS = {"Fe": 55.845, "Gd": 157.25}

#: Voxels fitted together (memory: a few arrays of chunk x samples float64).
_CHUNK = 1 << 15

#: EPG dictionary steps: T2 ratio between neighbouring atoms and B1 step (refined by a parabola between atoms).
_EPG_T2_RATIO = 1.06
_EPG_B1_STEP = 0.05

#: Samples above this many noise sigmas count as signal.
_SIGNAL_SIGMAS = 3.0


# --------------------------------------------------------------------------- relaxivities
@dataclass(frozen=True)
class AgentRelaxivity:
    """Relaxivities (1/(mM s), per mM of the metal) of one agent at one field, with their source."""

    agent: str
    metal: str
    field_t: float
    r1: float
    r2: float
    r2s: float
    source: str

    def for_model(self, model: str) -> float:
        """The relaxivity matching a model: r1 for T1 models, r2 for "t2", r2* for "t2star".

        Parameters
        ----------
        model : str
            A model of :data:`MODELS`.

        Returns
        -------
        float
            mM^-1 s^-1.

        Examples
        --------
        >>> r = agent_relaxivity("ferumoxytol", 3.0)
        >>> r.for_model("t2star"), r.for_model("t2"), r.for_model("t1vfa")
        (55.7, 65.2, 9.5)
        """
        return {"t2star": self.r2s, "t2": self.r2}.get(model, self.r1)


_KNOBLOCH = "Knobloch et al., Invest Radiol 2018;53:257 (human plasma, 37 C)"
_ROHRER = "Rohrer et al., Invest Radiol 2005;40:715 (plasma, 37 C)"
_SZOMOLANYI = "Szomolanyi et al., Invest Radiol 2019;54:559 (r1, human plasma, 37 C)"
_EXTRAPOLATED = (
    "extrapolated (docs/methods/relaxometry.md#relaxivity): r1 of iron oxides falls with field, "
    "r2 and r2* saturate above ~1.5 T; measure your own for quantitative work"
)

_GD_EXTRAPOLATED = (
    "extrapolated (docs/methods/relaxometry.md#relaxivity): r1 of macrocyclic Gd chelates changes "
    "little above 3 T; measure your own for quantitative work"
)

#: Default relaxivities (mM^-1 s^-1) by (agent, field in T). See docs/methods/relaxometry.md#relaxivity.
RELAXIVITIES: dict[tuple, AgentRelaxivity] = {}
for _field, _r1, _r2, _r2s, _src in (
    (1.5, 19.0, 64.9, 64.4, _KNOBLOCH),
    (3.0, 9.5, 65.2, 55.7, _KNOBLOCH),
    (4.7, 6.0, 66.0, 60.0, _EXTRAPOLATED),
    (7.0, 4.0, 66.0, 60.0, _EXTRAPOLATED),
    (9.4, 3.0, 66.0, 60.0, _EXTRAPOLATED),
):
    RELAXIVITIES[("ferumoxytol", _field)] = AgentRelaxivity("ferumoxytol", "Fe", _field, _r1, _r2, _r2s, _src)
for _field, _r1, _r2, _r2s, _src in (
    (1.5, 8.7, 61.0, 120.0, _ROHRER),
    (3.0, 4.6, 143.0, 200.0, _ROHRER),
    (4.7, 2.8, 176.0, 230.0, _ROHRER),
    (7.0, 2.0, 180.0, 240.0, _EXTRAPOLATED),
    (9.4, 1.5, 180.0, 240.0, _EXTRAPOLATED),
):
    RELAXIVITIES[("ferucarbotran", _field)] = AgentRelaxivity("ferucarbotran", "Fe", _field, _r1, _r2, _r2s, _src)
for _field, _r1, _r2, _src in (
    (1.5, 3.80, 5.0, _SZOMOLANYI + "; r2 " + _ROHRER),
    (3.0, 3.28, 5.7, _SZOMOLANYI + "; r2 " + _ROHRER),
    (4.7, 3.25, 5.8, "interpolated between 3 and 7 T (r1); r2 " + _ROHRER),
    (7.0, 3.21, 6.0, _SZOMOLANYI + "; r2 extrapolated"),
    (9.4, 3.1, 6.2, _GD_EXTRAPOLATED),
):
    RELAXIVITIES[("gadoteridol", _field)] = AgentRelaxivity("gadoteridol", "Gd", _field, _r1, _r2, _r2, _src)
del _field, _r1, _r2, _r2s, _src

AGENTS = ("ferumoxytol", "ferucarbotran", "gadoteridol")


def agent_relaxivity(agent: str, field_t: float) -> AgentRelaxivity:
    """The default relaxivities of ``agent`` at the tabulated field nearest ``field_t`` (within 0.3 T).

    The table and its sources are in docs/methods/relaxometry.md#relaxivity.

    Parameters
    ----------
    agent : {"ferumoxytol", "ferucarbotran", "gadoteridol"}
        Contrast agent (case-insensitive).
    field_t : float
        Main magnetic field (T).

    Returns
    -------
    AgentRelaxivity
        ``r1``, ``r2`` and ``r2s`` in mM^-1 s^-1 per mM of the metal, the ``metal``, the tabulated
        ``field_t`` used and the ``source``.

    Raises
    ------
    InputError
        An agent without defaults, or no tabulated field within 0.3 T.

    Examples
    --------
    >>> r = agent_relaxivity("ferumoxytol", 3.0)
    >>> r.metal, r.r1, r.r2, r.r2s
    ('Fe', 9.5, 65.2, 55.7)
    >>> agent_relaxivity("Ferumoxytol", 2.9).field_t
    3.0
    """
    name = str(agent).strip().lower()
    if name not in AGENTS:
        raise InputError(
            f"agent {agent!r} has no default relaxivity; use one of {', '.join(AGENTS)} "
            "or give the relaxivity in mM^-1 s^-1."
        )
    fields = sorted({k[1] for k in RELAXIVITIES})
    nearest = min(fields, key=lambda f: abs(f - float(field_t)))
    if abs(nearest - float(field_t)) > 0.3:
        raise InputError(
            f"no default relaxivity of {name} at {field_t} T (tabulated: "
            f"{', '.join(str(f) for f in fields)} T); give the relaxivity in mM^-1 s^-1."
        )
    return RELAXIVITIES[(name, nearest)]


# --------------------------------------------------------------------------- acquisition lists
def _as_list(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in np.asarray(value, float).ravel()]
    return [float(value)]


def acquisition_lists(series: Volume) -> dict:
    """Echo times, flip angles, TR and inversion times of a series from its header metadata, in ms and degrees.

    Unit-explicit keys written by the readers win (``echo_times_ms``,
    ``flip_angles_deg``, ``repetition_time_ms``, ``inversion_times_ms``,
    ``saturation_times_ms``); otherwise ``EchoTime``, ``RepetitionTime`` and
    ``InversionTime``: in seconds for a NIfTI (its BIDS JSON sidecar), in
    milliseconds for anything else (DICOM attributes, ParaVision parameters);
    ``FlipAngle`` in degrees (docs/methods/relaxometry.md#inputs-and-their-lists).

    Parameters
    ----------
    series : Volume
        The series; only its ``metadata`` is read (``metadata["format"]`` tells a NIfTI).

    Returns
    -------
    dict
        Keys ``echo_times_ms``, ``flip_angles_deg``, ``repetition_time_ms``,
        ``inversion_times_ms``, ``saturation_times_ms`` (lists or None; TR a float or None).

    Examples
    --------
    >>> v = Volume(np.zeros((3, 2, 2, 2)), np.eye(4), metadata={"format": "nifti1", "EchoTime": [0.002, 0.004, 0.006]})
    >>> acquisition_lists(v)["echo_times_ms"]
    [2.0, 4.0, 6.0]
    """
    meta = series.metadata or {}
    fmt = str(meta.get("format", "")).lower()
    # a NIfTI's BIDS JSON sidecar holds seconds; DICOM attributes and ParaVision's visu_pars milliseconds
    to_ms = 1000.0 if fmt.startswith("nifti") else 1.0

    def timed(explicit, header):
        if meta.get(explicit) is not None:
            return _as_list(meta[explicit])
        values = _as_list(meta.get(header))
        return None if values is None else [v * to_ms for v in values]

    tr = timed("repetition_time_ms", "RepetitionTime")
    return {
        "echo_times_ms": timed("echo_times_ms", "EchoTime"),
        "flip_angles_deg": _as_list(meta.get("flip_angles_deg", meta.get("FlipAngle"))),
        "repetition_time_ms": tr[0] if tr else None,
        "inversion_times_ms": timed("inversion_times_ms", "InversionTime"),
        "saturation_times_ms": _as_list(meta.get("saturation_times_ms")),
    }


_HOW_TO_GIVE = {
    "echo times": "give them with --echo-times-ms 2,4,6,... (or an EchoTime list in seconds in the BIDS JSON sidecar)",
    "flip angles": "give them with --flip-angles-deg 2,5,10,... (or a FlipAngle list in the BIDS JSON sidecar)",
    "inversion times": "give them with --inversion-times-ms 50,100,... (or an InversionTime list in seconds in the "
    "BIDS JSON sidecar)",
    "saturation times": "give them with --saturation-times-ms 100,200,... (the delays after saturation)",
}


def sampling_values(series: Volume, model: str, values=None) -> np.ndarray:
    """The sampling list of ``model`` (echo times ms, flip angles deg, ...) checked against the series.

    ``values`` (e.g. from the command line) wins over the header (:func:`acquisition_lists`).

    Parameters
    ----------
    series : Volume
        4D series, one volume per sampling value along axis 0.
    model : {"t2star", "t2", "t1vfa", "t1sr", "t1ir"}
        The model, which decides the list: echo times (ms) for T2*/T2, flip angles (deg) for VFA,
        saturation or inversion times (ms) for SR/IR.
    values : sequence of float, optional
        The list given by the user.

    Returns
    -------
    numpy.ndarray
        float64, one value per volume (ms or degrees).

    Raises
    ------
    InputError
        One line naming the list and how to give it, when the series is not 4D, the list is missing,
        its length differs from the number of volumes, a value is not finite and positive, times do
        not increase or the flip angles are all equal.

    Examples
    --------
    >>> v = Volume(np.zeros((3, 2, 2, 2)), np.eye(4), metadata={"echo_times_ms": [2.0, 4.0, 6.0]}, name="mge")
    >>> sampling_values(v, "t2star"), sampling_values(v, "t2star", [1, 2, 3])
    (array([2., 4., 6.]), array([1., 2., 3.]))
    """
    model = check_model(model)
    what = QUANTITY[model][2]
    name = series.name or "the series"
    if series.data.ndim != 4 or series.shape[0] < 2:
        raise InputError(
            f"{name} is a single 3D volume; a {model} fit needs a 4D series with one volume per "
            f"{what[:-1]} (a 4D NIfTI, a multi-echo DICOM series or a BIDS NIfTI with its JSON sidecar)."
        )
    if values is None:
        key = {
            "echo times": "echo_times_ms",
            "flip angles": "flip_angles_deg",
            "inversion times": "inversion_times_ms",
            "saturation times": "saturation_times_ms",
        }[what]
        values = acquisition_lists(series)[key]
        if values is None:
            raise InputError(f"{name} has no {what} in its header; {_HOW_TO_GIVE[what]}.")
    x = np.asarray(_as_list(values), float)
    n = series.shape[0]
    if x.size != n:
        raise InputError(f"{name} has {n} volumes but {x.size} {what} were given; give exactly one value per volume.")
    if not np.all(np.isfinite(x)) or np.any(x < 0) or (what == "flip angles" and np.any(x <= 0)):
        raise InputError(f"the {what} of {name} ({', '.join(f'{v:g}' for v in x)}) must be finite and positive.")
    if what != "flip angles" and np.any(np.diff(x) <= 0):
        raise InputError(
            f"the {what} of {name} ({', '.join(f'{v:g}' for v in x)}) do not increase; list them in "
            "the order of the volumes, shortest first."
        )
    if what == "flip angles" and np.unique(x).size < 2:
        raise InputError(f"the flip angles of {name} are all {x[0]:g} deg; VFA needs at least two different angles.")
    return x


def check_model(model: str) -> str:
    """The canonical name of a relaxometry model ("T2*" -> "t2star"), refused when unknown.

    Parameters
    ----------
    model : str
        A model name, case-insensitive; "*" is read as "star".

    Returns
    -------
    str
        One of :data:`MODELS`: "t2star", "t2", "t1vfa", "t1sr", "t1ir".

    Raises
    ------
    InputError
        When the name is not a model.

    Examples
    --------
    >>> check_model("T2*"), check_model(" t1ir ")
    ('t2star', 't1ir')
    """
    name = str(model).strip().lower().replace("*", "star")
    if name not in MODELS:
        raise InputError(f"model {model!r} is unknown; use one of {', '.join(MODELS)}.")
    return name


# --------------------------------------------------------------------------- noise
def estimate_noise_sigma(image: np.ndarray) -> float | None:
    """Gaussian noise sigma of a magnitude image from its signal-free background (Rayleigh), or None.

    Iterates ``sigma^2 = <M^2 | M < 2.5 sigma> / (2 c)`` where ``c = 0.85638`` is
    the truncated Rayleigh second-moment factor, starting from the lowest 5 %
    of the voxels (docs/methods/relaxometry.md#noise-floor). Zero and non-finite voxels are ignored;
    at most about 2 million voxels are used (a regular subsample).

    Parameters
    ----------
    image : numpy.ndarray
        Magnitude image (any shape), e.g. the brightest volume of a series.

    Returns
    -------
    float or None
        Sigma of the Gaussian noise in each channel (image units); None for fewer than 100 usable
        voxels, or when fewer than 0.5 % of the voxels (or 50) fall under 2.5 sigma. The iteration
        cannot tell that an image has no background: on a crop with tissue everywhere it returns a
        sigma of the order of the tissue signal (500 everywhere gives 382), so give the sigma
        (``noise_sigma``) for such images.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = np.abs(rng.normal(0, 10, 20000) + 1j * rng.normal(0, 10, 20000))
    >>> round(estimate_noise_sigma(np.concatenate([img, np.full(20000, 500.0)])), 0)
    10.0
    >>> estimate_noise_sigma(np.full(50, 5.0)) is None     # too few voxels
    True
    """
    values = np.asarray(image, float).ravel()
    values = values[np.isfinite(values) & (values > 0)]
    if values.size < 100:
        return None
    if values.size > 2_000_000:
        values = values[:: values.size // 2_000_000 + 1]
    low = np.sort(values)[: max(values.size // 20, 10)]
    sigma = math.sqrt(float(np.mean(low**2)) / 2.0)
    factor = 2.0 * 0.85638  # 2 x truncated second moment of a Rayleigh at 2.5 sigma
    for _ in range(30):
        bg = values[values < 2.5 * sigma]
        if bg.size < max(50, 0.005 * values.size):
            return None
        new = math.sqrt(float(np.mean(bg**2)) / factor)
        if abs(new - sigma) < 1e-4 * sigma:
            sigma = new
            break
        sigma = new
    bg = values[values < 2.5 * sigma]
    if bg.size < max(50, 0.005 * values.size):
        return None
    return float(sigma)


# --------------------------------------------------------------------------- small solvers
def _solve(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve a @ x = g for stacks of 2x2 or 3x3 systems (shape (p, p, v), (p, v)); NaN where singular."""
    p = g.shape[0]
    if p == 2:
        det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([(a[1, 1] * g[0] - a[0, 1] * g[1]) / det, (a[0, 0] * g[1] - a[1, 0] * g[0]) / det])
    mats = np.moveaxis(a, -1, 0)
    rhs = np.moveaxis(g, -1, 0)[..., None]
    out = np.full(rhs.shape, np.nan)
    ok = np.isfinite(mats).all(axis=(1, 2)) & (np.abs(np.linalg.det(mats)) > 1e-300)
    if ok.any():
        out[ok] = np.linalg.solve(mats[ok], rhs[ok])
    return np.moveaxis(out[..., 0], 0, -1)


def _levenberg_marquardt(model, y, params, lower, upper, weights=None, n_iter=20):
    """Vectorised Levenberg-Marquardt: every voxel (last axis) is its own least-squares problem.

    ``model(params) -> (prediction (n, v), jacobian (p, n, v))``; ``weights(prediction)``
    gives (n, v) weights recomputed each iteration (IRLS) or None. Parameters are
    clipped to [lower, upper] (arrays of shape (p,)). Returns the parameters (p, v).
    """
    p = np.array(params, float)
    lower = np.asarray(lower, float)[:, None]
    upper = np.asarray(upper, float)[:, None]
    lam = np.full(p.shape[1], 1e-3)
    for _ in range(n_iter):
        pred, jac = model(p)
        w = np.ones_like(pred) if weights is None else weights(pred)
        r = y - pred
        cost = np.sum(w * r * r, axis=0)
        wj = jac * w
        a = np.einsum("inv,jnv->ijv", wj, jac)
        g = np.einsum("inv,nv->iv", wj, r)
        damped = a.copy()
        for i in range(p.shape[0]):
            damped[i, i] = a[i, i] * (1.0 + lam) + 1e-30
        step = _solve(damped, g)
        trial = np.clip(p + np.nan_to_num(step), lower, upper)
        new_pred, _ = model(trial)
        new_cost = np.sum(w * (y - new_pred) ** 2, axis=0)
        better = np.isfinite(new_cost) & (new_cost < cost)
        p = np.where(better, trial, p)
        lam = np.where(better, np.maximum(lam / 5.0, 1e-7), np.minimum(lam * 8.0, 1e7))
        if np.all(~better & (lam >= 1e7)):
            break
    return p


def _r_squared(y: np.ndarray, fit: np.ndarray) -> np.ndarray:
    ss_res = np.sum((y - fit) ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res <= 1e-12 * (y**2).sum(0), 1.0, 0.0))


# --------------------------------------------------------------------------- exponential decay
def _loglinear(y, t_s, valid):
    """Weighted (w = S^2) straight line through ln S of the valid samples: (amplitude, rate)."""
    w = np.where(valid, y * y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(valid, np.log(np.where(valid, y, 1.0)), 0.0)
        sw = w.sum(0)
        st = (w * t_s[:, None]).sum(0) / sw
        sl = (w * ly).sum(0) / sw
        dt = t_s[:, None] - st
        slope = (w * dt * (ly - sl)).sum(0) / (w * dt * dt).sum(0)
        amp = np.exp(sl - slope * st)
    return amp, -slope


def fit_decay(
    y: np.ndarray, te_ms: np.ndarray, sigma: float = 0.0, method: str = "rician", rate_bounds=(0.1, 5000.0)
) -> dict:
    """Mono-exponential decay fits of many curves at once.

    Parameters
    ----------
    y : (n_echoes, n_voxels) array
        Magnitudes.
    te_ms : (n_echoes,) array
        Echo times, ms.
    sigma : float
        Gaussian noise sigma of each channel (0: no noise floor).
    method : "rician" or "loglinear"
        "rician": Levenberg-Marquardt on ``M^2 = A^2 exp(-2 TE R) + 2 sigma^2``
        with weights ``1 / (E[M^2] - sigma^2)`` (the inverse variance of M^2),
        started from the log-linear fit. "loglinear": the log-linear fit of the
        samples above 3 sigma only.
    rate_bounds : (float, float)
        Bounds of R in 1/s.

    Returns
    -------
    dict
        ``amplitude``, ``rate`` (1/s), ``fitted`` (expected magnitudes, (n, v)),
        ``n_signal`` (samples above 3 sigma).

    Examples
    --------
    >>> te = np.array([2.0, 4, 6, 8])
    >>> out = fit_decay(100 * np.exp(-te / 10)[:, None], te)
    >>> round(float(out["rate"][0]), 3)
    100.0
    """
    y = np.asarray(y)
    if y.dtype not in (np.float32, np.float64):
        y = y.astype(np.float64)
    t_s = np.asarray(te_ms, float) / 1000.0
    sigma = float(sigma or 0.0)
    valid = y > (_SIGNAL_SIGMAS * sigma if sigma > 0 else 0.0)
    n_signal = valid.sum(0)
    # at least two points for the starting line: the first two echoes when the rest are noise
    fallback = n_signal < 2
    if fallback.any():
        valid[:2, fallback] = y[:2, fallback] > 0
    amp, rate = _loglinear(y, t_s, valid)
    rate = np.clip(np.nan_to_num(rate, nan=rate_bounds[0]), *rate_bounds)
    amp = np.nan_to_num(amp, nan=0.0, posinf=0.0)
    if method == "loglinear" or y.shape[0] < 2:
        fitted = amp * np.exp(-np.outer(t_s, rate))
        return {"amplitude": amp, "rate": rate, "fitted": fitted, "n_signal": n_signal}
    floor = 2.0 * sigma * sigma
    b, rate = _rician_decay_lm(y * y, t_s, floor, amp * amp, rate, rate_bounds)
    amp = np.sqrt(np.maximum(b, 0.0))
    fitted = np.sqrt(b * np.exp(-2.0 * t_s[:, None] * rate) + floor)
    return {"amplitude": amp, "rate": rate, "fitted": fitted, "n_signal": n_signal}


def _rician_decay_lm(y2, t_s, floor, b, rate, rate_bounds, n_iter=10):
    """Levenberg-Marquardt on ``M^2 = B exp(-2 t R) + floor`` for all voxels, dropping converged ones.

    Written out for two parameters (closed-form 2x2 solves, float32 arrays)
    because this is the hot loop of T2* mapping; weights ``1/(E[M^2] - floor/2)``
    are the inverse variance of ``M^2`` for Rician data, refreshed each iteration.
    """
    dtype = np.float32 if y2.dtype == np.float32 else np.float64
    y2 = y2.astype(dtype, copy=False)
    b = np.asarray(b, dtype).copy()
    rate = np.asarray(rate, dtype).copy()
    two_t = (2.0 * np.asarray(t_s, dtype))[:, None]
    scale = dtype(max(float(y2.max()) if y2.size else 1.0, 1e-12))
    b = np.maximum(b, 1e-12 * scale)
    lam = np.full(rate.shape, 1e-3, dtype)
    active = np.arange(rate.size)
    floor = dtype(floor)
    eps = dtype(1e-9) * scale
    for _ in range(n_iter):
        if active.size == 0:
            break
        ya, ba, ra, la = y2[:, active], b[active], rate[active], lam[active]
        e = np.exp(-two_t * ra)
        pred = ba * e
        w = 1.0 / np.maximum(pred + floor / 2, eps)
        r = ya - pred - floor
        jr = -two_t * pred  # d pred / d R
        we, wjr = w * e, w * jr
        a11, a12, a22 = (we * e).sum(0), (we * jr).sum(0), (wjr * jr).sum(0)
        g1, g2 = (we * r).sum(0), (wjr * r).sum(0)
        cost = (w * r * r).sum(0)
        d11, d22 = a11 * (1 + la) + 1e-30, a22 * (1 + la) + 1e-30
        det = d11 * d22 - a12 * a12
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            db = (d22 * g1 - a12 * g2) / det
            dr = (d11 * g2 - a12 * g1) / det
        db, dr = np.nan_to_num(db), np.nan_to_num(dr)
        dr = np.clip(dr, -0.7 * ra - 1.0, ra + 50.0)  # no wild jumps from a flat curve
        nb = np.maximum(ba + db, 0.0)
        nr = np.clip(ra + dr, rate_bounds[0], rate_bounds[1])
        with np.errstate(over="ignore", invalid="ignore"):
            nres = ya - nb * np.exp(-two_t * nr) - floor
            ncost = (w * nres * nres).sum(0)
        better = ncost < cost
        b[active] = np.where(better, nb, ba)
        rate[active] = np.where(better, nr, ra)
        lam[active] = np.where(better, np.maximum(la * 0.2, 1e-7), np.minimum(la * 10.0, 1e7))
        done = (better & (np.abs(nr - ra) <= 1e-3 * ra)) | (~better & (la >= 1e6))
        active = active[~done]
    return b.astype(np.float64), rate.astype(np.float64)


# --------------------------------------------------------------------------- EPG
def epg_cpmg(t2_ms, b1, esp_ms: float, n_echoes: int, t1_ms: float = 1000.0, refocusing_deg: float = 180.0):
    """CPMG echo amplitudes by the extended phase graph, for arrays of T2 and B1 at once.

    Ideal 90 deg excitation (magnetisation along the refocusing axis, the CPMG
    condition, so every state is real), refocusing pulses of ``refocusing_deg x
    b1`` and T2/T1 decay between them; the longitudinal recovery towards M0 is
    left out (its dephased contribution is < ESP/T1, as in Prasloski et al.,
    MRM 2012 67:1803). With ``b1 = 1`` and 180 deg the echoes are exactly
    ``exp(-n ESP / T2)``.

    Parameters
    ----------
    t2_ms, b1 : arrays of one shape (broadcast)
    esp_ms : echo spacing, ms (first echo at ESP)
    n_echoes : int
    t1_ms : float
    refocusing_deg : nominal refocusing angle

    Returns
    -------
    (n_echoes,) + shape array of echo amplitudes for unit magnetisation.

    Examples
    --------
    >>> e = epg_cpmg(np.array([50.0]), np.array([1.0]), 10.0, 3)
    >>> np.allclose(e[:, 0], np.exp(-np.array([10, 20, 30]) / 50))
    True
    """
    t2 = np.asarray(t2_ms, float)
    b1 = np.asarray(b1, float)
    t2, b1 = np.broadcast_arrays(t2, b1)
    shape = t2.shape
    t2, b1 = t2.ravel(), b1.ravel()
    n_states = 2 * n_echoes + 2
    v = t2.size
    fp = np.zeros((n_states, v))
    fm = np.zeros((n_states, v))
    z = np.zeros((n_states, v))
    fp[0] = 1.0
    e2 = np.exp(-(esp_ms / 2.0) / t2)
    e1 = math.exp(-(esp_ms / 2.0) / t1_ms)
    alpha = np.deg2rad(refocusing_deg) * b1
    c2, s2, sa, ca = np.cos(alpha / 2) ** 2, np.sin(alpha / 2) ** 2, np.sin(alpha), np.cos(alpha)
    echoes = np.empty((n_echoes, v))

    def relax_shift(fp, fm, z):
        fp *= e2
        fm *= e2
        z *= e1
        # dephasing by one unit: F+ states move up, F- states down; F-(1) becomes F+(0)
        fp[1:] = fp[:-1].copy()
        fp[0] = fm[1]
        fm[:-1] = fm[1:].copy()
        fm[-1] = 0.0

    for n in range(n_echoes):
        relax_shift(fp, fm, z)
        fp_new = c2 * fp + s2 * fm + sa * z
        fm_new = s2 * fp + c2 * fm - sa * z
        z = -0.5 * sa * fp + 0.5 * sa * fm + ca * z
        fp, fm = fp_new, fm_new
        relax_shift(fp, fm, z)
        echoes[n] = fp[0]
    return echoes.reshape((n_echoes,) + shape)


def fit_epg(
    y: np.ndarray,
    te_ms: np.ndarray,
    sigma: float = 0.0,
    refocusing_deg: float = 180.0,
    t1_ms: float = 1000.0,
    t2_range_ms=(2.0, 2000.0),
    b1_range=(0.5, 1.3),
    progress=None,
) -> dict:
    """T2 and B1 of CPMG echo trains by matching a dictionary of EPG curves.

    The dictionary spans T2 (log-spaced, 6 % steps) and B1 (0.05 steps). The
    match is made on squared magnitudes minus the noise floor, ``M^2 - 2 sigma^2``,
    whose expectation is exactly ``A^2 x atom^2`` for Rician data: each voxel takes
    the atom whose squared train has the highest normalised correlation with it;
    a second pass repeats the match weighted by the inverse variance of ``M^2``
    predicted by the first; T2 and B1 are then refined by a parabola through the correlations of the
    neighbouring atoms, and the amplitude is the least-squares scale (docs/methods/relaxometry.md#epg).

    Parameters
    ----------
    y : numpy.ndarray
        Magnitudes, shape (n echoes, v voxels).
    te_ms : numpy.ndarray
        Echo times (ms), equally spaced at ESP, 2 ESP, 3 ESP, ...
    sigma : float, default 0.0
        Gaussian noise sigma per channel (signal units); 0 ignores the noise floor.
    refocusing_deg : float, default 180.0
        Nominal refocusing flip angle (degrees).
    t1_ms : float, default 1000.0
        T1 (ms) assumed for the stimulated-echo pathways.
    t2_range_ms : (float, float), default (2.0, 2000.0)
        T2 range of the dictionary (ms).
    b1_range : (float, float), default (0.5, 1.3)
        Relative B1 range of the dictionary (1 = nominal).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    dict
        ``amplitude`` (v,) signal units, ``rate`` (v,) R2 in 1/s, ``b1`` (v,) relative,
        ``fitted`` (n, v) magnitudes, ``n_signal`` (v,) echoes above 3 sigma.

    Raises
    ------
    InputError
        Echo times that are not equally spaced from ESP.

    Examples
    --------
    >>> te = 10.0 * np.arange(1, 11)
    >>> y = 1000.0 * epg_cpmg(np.array([50.0, 80.0]), np.array([0.9, 1.0]), 10.0, 10)   # 2 voxels
    >>> fit = fit_epg(y, te)
    >>> np.round(1000.0 / fit["rate"], 1).tolist(), np.round(fit["b1"], 2).tolist()
    ([50.0, 80.0], [0.9, 1.0])
    """
    y = np.asarray(y, float)
    te = np.asarray(te_ms, float)
    esp = float(te[0])
    if not np.allclose(te, esp * np.arange(1, te.size + 1), rtol=1e-3, atol=1e-3):
        raise InputError(
            f"the EPG fit needs equally spaced echoes at ESP, 2 ESP, 3 ESP, ... (got "
            f"{', '.join(f'{t:g}' for t in te)} ms); use --method exponential for other echo trains."
        )
    t2_grid = np.exp(np.arange(np.log(t2_range_ms[0]), np.log(t2_range_ms[1]) + 1e-9, np.log(_EPG_T2_RATIO)))
    b1_grid = np.arange(b1_range[0], b1_range[1] + 1e-9, _EPG_B1_STEP)
    tt, bb = np.meshgrid(t2_grid, b1_grid, indexing="ij")
    atoms = epg_cpmg(tt, bb, esp, te.size, t1_ms, refocusing_deg).reshape(te.size, -1)  # (n, nT2*nB1)
    sigma = float(sigma or 0.0)
    floor = 2.0 * sigma * sigma
    # match in the squared domain: E[M^2] - 2 sigma^2 = A^2 x atom^2 exactly for Rician data, so no echo is
    # biased by the noise floor and none has to be dropped (dropping those under a threshold biases T2)
    sq = atoms * atoms
    sq_unit = sq / np.sqrt((sq * sq).sum(0))
    n_signal = (y > (_SIGNAL_SIGMAS * sigma if sigma > 0 else 0.0)).sum(0)
    v = y.shape[1]
    best_t2 = np.empty(v)
    best_b1 = np.empty(v)
    step = 4096
    nt, nb = t2_grid.size, b1_grid.size

    def vertex(cm, c0, cp):
        den = cm - 2 * c0 + cp
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den < 0, 0.5 * (cm - cp) / den, 0.0)
        return np.clip(off, -0.5, 0.5)

    for start in range(0, v, step):
        sl = slice(start, min(start + step, v))
        d = (y[:, sl].astype(np.float64) ** 2 - floor).T  # (c, n)
        flat = (d @ sq_unit).argmax(1)
        # second pass weighted by the inverse variance of M^2, 1 / (A^2 atom^2 + sigma^2), from the first match
        first = sq[:, flat].T
        scale_sq = np.maximum((d * first).sum(1) / (first * first).sum(1), 0.0)[:, None]
        w = 1.0 / np.maximum(scale_sq * first + sigma * sigma, 1e-6 * np.maximum(scale_sq, 1e-30))
        corr = ((w * d) @ sq) / np.sqrt(np.maximum(w @ (sq * sq), 1e-300))
        corr = corr.reshape(-1, nt, nb)
        flat = corr.reshape(corr.shape[0], -1).argmax(1)
        it, ib = np.unravel_index(flat, (nt, nb))
        rows = np.arange(corr.shape[0])
        itc, ibc = np.clip(it, 1, nt - 2), np.clip(ib, 1, nb - 2)
        ot = np.where(
            (it > 0) & (it < nt - 1), vertex(corr[rows, itc - 1, ib], corr[rows, itc, ib], corr[rows, itc + 1, ib]), 0.0
        )
        ob = np.where(
            (ib > 0) & (ib < nb - 1), vertex(corr[rows, it, ibc - 1], corr[rows, it, ibc], corr[rows, it, ibc + 1]), 0.0
        )
        best_t2[sl] = np.exp(np.log(t2_grid[it]) + ot * np.log(_EPG_T2_RATIO))
        best_b1[sl] = b1_grid[ib] + ob * _EPG_B1_STEP
        _progress.report(progress, min(start + step, v) / v, "EPG dictionary")
    curves = epg_cpmg(best_t2, best_b1, esp, te.size, t1_ms, refocusing_deg)
    c2 = curves * curves
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.sqrt(np.maximum(((y.astype(np.float64) ** 2 - floor) * c2).sum(0) / (c2 * c2).sum(0), 0.0))
    fitted = np.sqrt((amp * curves) ** 2 + floor)
    return {"amplitude": amp, "rate": 1000.0 / best_t2, "b1": best_b1, "fitted": fitted, "n_signal": n_signal}


# --------------------------------------------------------------------------- T1
def _grid_start(y, basis_of_rate, rates):
    """Best rate on a grid for models ``S = amplitude x g(rate)`` (closed-form amplitude per rate)."""
    best = np.full(y.shape[1], np.inf)
    out = np.full(y.shape[1], rates[0])
    amp = np.zeros(y.shape[1])
    for r in rates:
        g = basis_of_rate(r)
        g = g[:, None] if g.ndim == 1 else g  # (n, 1) or (n, v)
        g2 = (g * g).sum(0)
        a = (g * y).sum(0) / g2
        res = (y * y).sum(0) - a * a * g2
        better = res < best
        best = np.where(better, res, best)
        out = np.where(better, r, out)
        amp = np.where(better, a, amp)
    return amp, out


def fit_vfa(
    y: np.ndarray,
    flip_deg: np.ndarray,
    tr_ms: float,
    b1: np.ndarray | None = None,
    method: str = "nonlinear",
    rate_bounds=(0.02, 200.0),
) -> dict:
    """T1 (as R1) and M0 from spoiled gradient echoes at several flip angles (DESPOT1).

    ``S = M0 sin(a) (1 - E1) / (1 - cos(a) E1)``, ``E1 = exp(-TR R1)``, with
    ``a = b1 x nominal angle``. "linear": the straight line ``S/sin a = E1 S/tan a
    + M0 (1 - E1)`` (Deoni et al., MRM 2003 49:515); "nonlinear": Levenberg-
    Marquardt on the signal equation started from the linear fit (docs/methods/relaxometry.md#vfa).

    Parameters
    ----------
    y : numpy.ndarray
        Magnitudes, shape (n flip angles, v voxels).
    flip_deg : numpy.ndarray
        Nominal flip angles (degrees), one per row of ``y``.
    tr_ms : float
        Repetition time (ms).
    b1 : numpy.ndarray, optional
        Relative flip-angle scale per voxel (v,); 1 (nominal) when omitted.
    method : {"nonlinear", "linear"}, default "nonlinear"
        Fit method.
    rate_bounds : (float, float), default (0.02, 200.0)
        Bounds of R1 (1/s).

    Returns
    -------
    dict
        ``amplitude`` (v,) M0 in signal units, ``rate`` (v,) R1 in 1/s, ``fitted`` (n, v) magnitudes.

    Examples
    --------
    >>> flips, tr = np.array([2.0, 5.0, 10.0, 15.0]), 15.0
    >>> e1 = np.exp(-tr / 800.0)                                  # T1 = 800 ms
    >>> a = np.deg2rad(flips)[:, None]
    >>> y = 1000.0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    >>> fit = fit_vfa(y, flips, tr)
    >>> np.round(1000.0 / fit["rate"], 3), np.round(fit["amplitude"], 3)
    (array([800.]), array([1000.]))
    """
    y = np.asarray(y, float)
    v = y.shape[1]
    scale = np.ones(v) if b1 is None else np.asarray(b1, float)
    a = np.deg2rad(np.asarray(flip_deg, float))[:, None] * scale[None, :]
    tr = float(tr_ms) / 1000.0
    sin_a, cos_a = np.sin(a), np.cos(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        yy = y / sin_a
        xx = y / np.tan(a)
        xm, ym = xx.mean(0), yy.mean(0)
        slope = ((xx - xm) * (yy - ym)).sum(0) / ((xx - xm) ** 2).sum(0)
        e1 = np.clip(np.nan_to_num(slope, nan=0.5), math.exp(-tr * rate_bounds[1]), math.exp(-tr * rate_bounds[0]))
        rate = -np.log(e1) / tr
        m0 = np.nan_to_num((ym - e1 * xm) / (1 - e1))

    def model(p):
        e = np.exp(-tr * p[1])
        den = 1 - cos_a * e
        g = sin_a * (1 - e) / den
        dg_de = sin_a * (cos_a - 1) / (den * den)
        return p[0] * g, np.stack([g, p[0] * dg_de * (-tr * e)])

    if method == "nonlinear":
        p = _levenberg_marquardt(
            model, y, np.stack([m0, rate]), [-np.inf, rate_bounds[0]], [np.inf, rate_bounds[1]], n_iter=15
        )
        m0, rate = p
    fitted, _ = model(np.stack([m0, rate]))
    return {"amplitude": m0, "rate": rate, "fitted": fitted}


def fit_saturation_recovery(y: np.ndarray, t_ms: np.ndarray, rate_bounds=(0.02, 200.0)) -> dict:
    """T1 (as R1) and M0 from ``S(t) = M0 (1 - exp(-t R1))``: a rate grid start, then Levenberg-Marquardt.

    See docs/methods/relaxometry.md#sr.

    Parameters
    ----------
    y : numpy.ndarray
        Magnitudes, shape (n saturation delays, v voxels).
    t_ms : numpy.ndarray
        Delays after saturation (ms), one per row of ``y``.
    rate_bounds : (float, float), default (0.02, 200.0)
        Bounds of R1 (1/s).

    Returns
    -------
    dict
        ``amplitude`` (v,) M0 in signal units, ``rate`` (v,) R1 in 1/s, ``fitted`` (n, v).

    Examples
    --------
    >>> t = np.array([100.0, 300.0, 600.0, 1200.0, 2400.0])
    >>> y = 500.0 * (1 - np.exp(-t[:, None] / 1000.0 * 1.5))      # R1 = 1.5 /s
    >>> fit = fit_saturation_recovery(y, t)
    >>> np.round(fit["rate"], 4), np.round(fit["amplitude"], 2)
    (array([1.5]), array([500.]))
    """
    y = np.asarray(y, float)
    t = np.asarray(t_ms, float)[:, None] / 1000.0
    rates = np.exp(np.linspace(np.log(rate_bounds[0]), np.log(rate_bounds[1]), 80))
    m0, rate = _grid_start(y, lambda r: 1 - np.exp(-t[:, 0] * r), rates)

    def model(p):
        e = np.exp(-t * p[1])
        return p[0] * (1 - e), np.stack([1 - e + 0 * p[0], p[0] * t * e])

    p = _levenberg_marquardt(
        model, y, np.stack([m0, rate]), [-np.inf, rate_bounds[0]], [np.inf, rate_bounds[1]], n_iter=15
    )
    fitted, _ = model(p)
    return {"amplitude": p[0], "rate": p[1], "fitted": fitted}


def fit_inversion_recovery(y: np.ndarray, ti_ms: np.ndarray, rate_bounds=(0.02, 200.0)) -> dict:
    """T1 from magnitude inversion recovery ``|a + b exp(-TI R1)|`` with polarity restoration.

    The samples before the null are negative: for each voxel the two candidate
    sign patterns (flip up to the smallest magnitude, excluded or included) are
    fitted on a rate grid with closed-form ``a, b``, the better kept, then
    refined by Levenberg-Marquardt (after Barral et al., MRM 2010 64:1057;
    docs/methods/relaxometry.md#inversion-recovery).

    Parameters
    ----------
    y : numpy.ndarray
        Magnitudes, shape (n inversion times, v voxels).
    ti_ms : numpy.ndarray
        Inversion times (ms), one per row of ``y``.
    rate_bounds : (float, float), default (0.02, 200.0)
        Bounds of R1 (1/s).

    Returns
    -------
    dict
        ``amplitude`` (a), ``b`` (both signal units, (v,)), ``rate`` (R1, 1/s), ``fitted`` (magnitudes,
        (n, v)), ``signed`` (the data with restored polarity, (n, v)).

    Examples
    --------
    >>> ti = np.array([50.0, 200.0, 500.0, 1000.0, 2000.0, 4000.0])
    >>> y = np.abs(400.0 - 800.0 * np.exp(-ti[:, None] / 1000.0 * 1.25))   # R1 = 1.25 /s
    >>> fit = fit_inversion_recovery(y, ti)
    >>> np.round(fit["rate"], 4), np.round(fit["amplitude"], 2), np.round(fit["b"], 2)
    (array([1.25]), array([400.]), array([-800.]))
    >>> np.sign(fit["signed"][:, 0]).astype(int).tolist()      # the first three were before the null
    [-1, -1, -1, 1, 1, 1]
    """
    y = np.asarray(y, float)
    n, v = y.shape
    t = np.asarray(ti_ms, float) / 1000.0
    rates = np.exp(np.linspace(np.log(rate_bounds[0]), np.log(rate_bounds[1]), 120))
    k_min = np.argmin(y, axis=0)
    idx = np.arange(n)[:, None]
    best = np.full(v, np.inf)
    signed = y.copy()
    start = np.zeros((3, v))
    for flip_through in (k_min - 1, k_min):
        d = np.where(idx <= flip_through, -y, y)
        dd = (d * d).sum(0)
        s1 = d.sum(0)
        for r in rates:
            e = np.exp(-t * r)
            g = np.array([[n, e.sum()], [e.sum(), (e * e).sum()]])
            det = g[0, 0] * g[1, 1] - g[0, 1] ** 2
            if det <= 1e-12:
                continue
            se = e @ d
            a = (g[1, 1] * s1 - g[0, 1] * se) / det
            b = (g[0, 0] * se - g[0, 1] * s1) / det
            res = dd - (a * s1 + b * se)
            better = res < best
            if better.any():
                best = np.where(better, res, best)
                start = np.where(better, np.stack([a, b, np.full(v, r)]), start)
                signed = np.where(better, d, signed)
    tt = t[:, None]

    def model(p):
        e = np.exp(-tt * p[2])
        return p[0] + p[1] * e, np.stack([np.ones_like(e), e, -tt * p[1] * e])

    p = _levenberg_marquardt(
        model, signed, start, [-np.inf, -np.inf, rate_bounds[0]], [np.inf, np.inf, rate_bounds[1]], n_iter=15
    )
    fitted, _ = model(p)
    return {"amplitude": p[0], "b": p[1], "rate": p[2], "fitted": np.abs(fitted), "signed": signed}


# --------------------------------------------------------------------------- maps
@dataclass
class RelaxationMaps:
    """The maps of one relaxometry fit, all on the series' spatial grid.

    Attributes
    ----------
    model, method : str
    time_ms : Volume        T2*, T2 or T1 in ms (NaN where there is no signal)
    rate_per_s : Volume     R2*, R2 or R1 in 1/s
    goodness : Volume       R^2 of the fit on the magnitudes
    unreliable : Volume     uint8 bit flags (0 = reliable; see the module docstring)
    amplitude : Volume      S0 / M0 (image units)
    extra : dict            e.g. {"b1": Volume} for EPG, {"b": Volume} for IR
    parameters : dict       sampling list, TR, sigma, method, ... (JSON-ready)
    warnings : list
    """

    model: str
    method: str
    time_ms: Volume
    rate_per_s: Volume
    goodness: Volume
    unreliable: Volume
    amplitude: Volume
    extra: dict[str, Volume] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def names(self) -> tuple:
        """(time name, rate name), e.g. ("T2star", "R2star")."""
        return QUANTITY[self.model][:2]

    def curve_at(self, index, x) -> np.ndarray:
        """The fitted curve (expected magnitude) of voxel ``index`` (3 ints) at sampling values ``x``.

        Parameters
        ----------
        index : sequence of 3 int
            The voxel's array index on the maps' grid.
        x : sequence of float
            Sampling values (ms, or degrees for VFA).

        Returns
        -------
        numpy.ndarray
            Expected magnitudes (signal units), :func:`model_curve` with the voxel's fitted parameters.

        Examples
        --------
        >>> te = np.array([2.0, 4.0, 6.0, 8.0])
        >>> s = Volume(1000.0 * np.exp(-te / 20.0)[:, None, None, None] * np.ones((4, 1, 1, 1)), np.eye(4),
        ...            metadata={"echo_times_ms": te.tolist()})
        >>> maps = fit_relaxation(s, "t2star", noise_sigma=0.0)
        >>> maps.curve_at((0, 0, 0), [0.0, 20.0]).round(3).tolist()           # S0 and S0 / e at T2* = 20 ms
        [1000.0, 367.879]
        """
        i = tuple(int(v) for v in index)
        amp = float(self.amplitude.data[i])
        rate = float(self.rate_per_s.data[i])
        return model_curve(
            self.model, self.method, amp, rate, x, self.parameters, {k: float(v.data[i]) for k, v in self.extra.items()}
        )


def model_curve(
    model: str, method: str, amplitude: float, rate: float, x, parameters: dict, extra: dict | None = None
) -> np.ndarray:
    """Expected magnitude of a fitted voxel at sampling values ``x`` (for plots).

    T2*/T2: ``A exp(-x R)`` (or the EPG train for "epg"), with the Rician floor
    ``sqrt(S^2 + 2 sigma^2)`` unless the method is "loglinear"; VFA: the spoiled gradient echo
    equation; SR: ``A (1 - exp(-x R))``; IR: ``|A + b exp(-x R)|`` (b = -2 A when not fitted).

    Parameters
    ----------
    model : {"t2star", "t2", "t1vfa", "t1sr", "t1ir"}
        The model.
    method : str
        The fit method (:data:`METHODS`), e.g. "loglinear", "rician", "epg".
    amplitude : float
        S0 / M0 (signal units).
    rate : float
        R2*, R2 or R1 (1/s).
    x : sequence of float
        Sampling values: times in ms, or flip angles in degrees for VFA.
    parameters : dict
        The fit's ``RelaxationMaps.parameters``: ``noise_sigma``, and ``sampling`` (EPG),
        ``repetition_time_ms`` (VFA), ``t1_ms`` and ``refocusing_deg`` (EPG) where needed.
    extra : dict, optional
        The voxel's extra parameters: ``b1`` (EPG, VFA), ``b`` (IR).

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``x`` (signal units; NaN when the fit has no finite amplitude or rate).

    Examples
    --------
    >>> round(float(model_curve("t2star", "loglinear", 100.0, 50.0, [20.0], {})[0]), 4)
    36.7879
    >>> np.round(model_curve("t1sr", "nonlinear", 100.0, 1.0, [0.0, 1000.0], {}), 3)
    array([ 0.   , 63.212])
    """
    x = np.asarray(x, float)
    extra = extra or {}
    if not (np.isfinite(amplitude) and np.isfinite(rate)):
        return np.full(x.shape, np.nan)
    sigma = float(parameters.get("noise_sigma") or 0.0)
    if model in ("t2star", "t2"):
        if method == "epg":
            esp = float(parameters["sampling"][0])
            n = max(int(round(float(x.max()) / esp)), 1)
            train = (
                amplitude
                * epg_cpmg(
                    np.array([1000.0 / rate]),
                    np.array([extra.get("b1", 1.0)]),
                    esp,
                    n,
                    parameters.get("t1_ms", 1000.0),
                    parameters.get("refocusing_deg", 180.0),
                )[:, 0]
            )
            s = np.interp(x, esp * np.arange(1, n + 1), train)
        else:
            s = amplitude * np.exp(-x / 1000.0 * rate)
        if method != "loglinear" and sigma > 0:
            s = np.sqrt(s * s + 2 * sigma * sigma)
        return s
    if model == "t1vfa":
        a = np.deg2rad(x) * float(extra.get("b1", 1.0))
        e = math.exp(-float(parameters["repetition_time_ms"]) / 1000.0 * rate)
        return amplitude * np.sin(a) * (1 - e) / (1 - np.cos(a) * e)
    if model == "t1sr":
        return amplitude * (1 - np.exp(-x / 1000.0 * rate))
    return np.abs(amplitude + float(extra.get("b", -2 * amplitude)) * np.exp(-x / 1000.0 * rate))


def _default_range_ms(model: str, x: np.ndarray, tr_ms: float | None) -> tuple:
    if model in ("t2star", "t2"):
        spacing = float(np.min(np.diff(x))) if x.size > 1 else float(x[0])
        return (0.5 * min(spacing, float(x[0]) if x[0] > 0 else spacing), 5.0 * float(x.max()))
    if model == "t1vfa":
        return (0.5 * float(tr_ms), max(400.0 * float(tr_ms), 6000.0))
    return (0.2 * float(x[x > 0].min() if np.any(x > 0) else x.max()), 5.0 * float(x.max()))


def fit_relaxation(
    series: Volume,
    model: str,
    *,
    echo_times_ms=None,
    flip_angles_deg=None,
    tr_ms=None,
    inversion_times_ms=None,
    saturation_times_ms=None,
    b1: Volume | None = None,
    method: str | None = None,
    noise_sigma: float | None = None,
    mask: Volume | None = None,
    valid_range_ms=None,
    refocusing_deg: float | None = None,
    t1_ms: float = 1000.0,
    progress=None,
) -> RelaxationMaps:
    """Fit a relaxometry model voxel by voxel and return its maps.

    Parameters
    ----------
    series : Volume
        4D: one volume per echo / flip angle / inversion or saturation time.
    model : {"t2star", "t2", "t1vfa", "t1sr", "t1ir"}
        The model (docs/methods/relaxometry.md).
    echo_times_ms, flip_angles_deg, inversion_times_ms, saturation_times_ms : list, optional
        The sampling list (ms, or degrees for flip angles); wins over the header (:func:`acquisition_lists`).
    tr_ms : float, optional
        Repetition time (ms) for VFA (header ``RepetitionTime`` otherwise).
    b1 : Volume, optional
        Relative flip-angle map (1 = nominal) on any grid, resampled onto the
        series' grid; scales the VFA flip angles. Not used by the other models
        (EPG fits its own B1).
    method : str, optional
        See the module docstring (defaults in :data:`DEFAULT_METHOD`).
    noise_sigma : float, optional
        Gaussian noise sigma per channel. Default: the header's ``NoiseSigma``,
        else estimated from the background of the brightest volume; 0 disables the
        noise-floor terms.
    mask : Volume, optional
        Fit only where the mask is non-zero (same grid as the series).
    valid_range_ms : (float, float), optional
        Relaxation times outside are flagged unreliable (default: what the
        sampling can measure, docs/methods/relaxometry.md#reliability).
    refocusing_deg : float, optional
        Nominal refocusing angle for EPG (header ``RefocusingFlipAngle`` or 180).
    t1_ms : float, default 1000.0
        T1 (ms) assumed by EPG for the stimulated-echo pathways.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    RelaxationMaps
        Time (ms), rate (1/s), R^2, flag and amplitude maps on the series' spatial grid, the
        parameters used and the warnings.

    Examples
    --------
    >>> te = np.array([2.0, 4.0, 6.0, 8.0])
    >>> t2s = np.array([10.0, 20.0])[None, :, None, None]                 # two slabs: 10 and 20 ms
    >>> data = 1000.0 * np.exp(-te[:, None, None, None] / t2s) * np.ones((4, 2, 2, 2))
    >>> series = Volume(data, np.eye(4), "MR", metadata={"echo_times_ms": te.tolist()}, name="mge")
    >>> maps = fit_relaxation(series, "t2star", noise_sigma=0.0)
    >>> maps.method, maps.time_ms.data[:, 0, 0].tolist(), maps.rate_per_s.data[:, 0, 0].tolist()
    ('rician', [10.0, 20.0], [100.0, 50.0])
    >>> int(maps.unreliable.data.sum()), maps.parameters["valid_range_ms"]
    (0, [1.0, 40.0])
    """
    model = check_model(model)
    method = (method or DEFAULT_METHOD[model]).strip().lower()
    if method not in METHODS[model]:
        raise InputError(f"method {method!r} does not apply to {model}; use one of {', '.join(METHODS[model])}.")
    given = {
        "t2star": echo_times_ms,
        "t2": echo_times_ms,
        "t1vfa": flip_angles_deg,
        "t1sr": saturation_times_ms,
        "t1ir": inversion_times_ms,
    }[model]
    x = sampling_values(series, model, given)
    name = series.name or "the series"
    notes = []
    header = acquisition_lists(series)
    if model == "t1vfa":
        tr_ms = tr_ms if tr_ms is not None else header["repetition_time_ms"]
        if tr_ms is None or not np.isfinite(float(tr_ms)) or float(tr_ms) <= 0:
            raise InputError(f"{name} has no repetition time in its header; give it with --tr-ms (e.g. --tr-ms 15).")
        tr_ms = float(tr_ms)
    data = series.numpy()
    data = data.astype(np.float64 if data.dtype == np.float64 else np.float32, copy=False)
    n = data.shape[0]
    spatial = data.shape[1:]
    if noise_sigma is None:
        side = (series.metadata or {}).get("NoiseSigma")
        if side is not None:
            noise_sigma = float(side)
        else:
            noise_sigma = estimate_noise_sigma(data[int(np.argmax([np.nanmean(d) for d in data]))])
            if noise_sigma is None:
                noise_sigma = 0.0
                if model in ("t2star", "t2"):
                    notes.append(
                        f"{name}: no signal-free background to measure the noise, so the fit ignores the "
                        "noise floor; give the noise sigma (--noise-sigma) for an unbiased fit of late echoes."
                    )
    noise_sigma = float(noise_sigma)
    if not np.isfinite(noise_sigma) or noise_sigma < 0:
        raise InputError(f"noise sigma {noise_sigma} is impossible; give a value >= 0 in image units.")
    b1_flat = None
    if b1 is not None:
        if model != "t1vfa":
            notes.append("the B1 map is used by the VFA T1 fit only (EPG fits its own B1); it was ignored.")
        else:
            b1_vol = b1 if b1.same_grid(series) else b1.resample_to(series, order=1, fill=np.nan)
            b1_data = b1_vol.numpy()
            if b1_data.ndim != 3:
                raise InputError("the B1 map must be a 3D volume of relative flip angles (1 = nominal).")
            b1_flat = b1_data.reshape(-1).astype(float)
            med = float(np.nanmedian(b1_flat)) if np.isfinite(b1_flat).any() else float("nan")
            if np.isfinite(med) and med > 10:  # a map in percent
                b1_flat = b1_flat / 100.0
                notes.append("the B1 map looks like percent (median > 10); it was divided by 100.")
    if refocusing_deg is None:
        refocusing_deg = float((series.metadata or {}).get("RefocusingFlipAngle", 180.0) or 180.0)
    flat = data.reshape(n, -1)
    v = flat.shape[1]
    threshold = _SIGNAL_SIGMAS * noise_sigma if noise_sigma > 0 else 0.0
    fit_here = np.isfinite(flat).all(0) & (np.nanmax(flat, axis=0) > threshold)
    if mask is not None:
        if not mask.same_grid(series):
            raise InputError("the mask must be on the series' grid (same shape and affine).")
        fit_here &= mask.numpy().reshape(-1) != 0
    if b1_flat is not None:
        fit_here &= np.isfinite(b1_flat) & (b1_flat > 0)
    index = np.flatnonzero(fit_here)
    amp = np.full(v, np.nan)
    rate = np.full(v, np.nan)
    good = np.full(v, np.nan)
    n_signal = np.zeros(v, int)
    extra_arrays: dict[str, np.ndarray] = {}
    chunk = _CHUNK if method != "epg" else 1 << 15
    every = index.size == v  # every voxel fitted: contiguous slices, no gather copies
    for start in range(0, index.size, chunk):
        sel = slice(start, min(start + chunk, v)) if every else index[start : start + chunk]
        decay = model in ("t2star", "t2") and method != "epg"
        y = flat[:, sel] if decay else flat[:, sel].astype(np.float64)
        if decay:
            out = fit_decay(y, x, noise_sigma, "loglinear" if method == "loglinear" else "rician")
        elif method == "epg":
            done = start / max(index.size, 1)
            out = fit_epg(
                y,
                x,
                noise_sigma,
                refocusing_deg,
                t1_ms,
                progress=_progress.scaled(progress, done, min(start + chunk, index.size) / max(index.size, 1)),
            )
        elif model == "t1vfa":
            out = fit_vfa(y, x, tr_ms, None if b1_flat is None else b1_flat[sel], method)
        elif model == "t1sr":
            out = fit_saturation_recovery(y, x)
        else:
            out = fit_inversion_recovery(y, x)
        amp[sel], rate[sel] = out["amplitude"], out["rate"]
        good[sel] = _r_squared(y, out["fitted"])
        n_signal[sel] = out.get("n_signal", (y > threshold).sum(0))
        for key in ("b1", "b"):
            if key in out:
                extra_arrays.setdefault(key, np.full(v, np.nan))[sel] = out[key]
        _progress.report(
            progress,
            min(start + chunk, index.size) / max(index.size, 1),
            f"{model} fit {min(start + chunk, index.size)}/{index.size} voxels",
        )
    if b1_flat is not None:
        extra_arrays["b1"] = np.where(fit_here, b1_flat, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        time_ms = 1000.0 / rate
    lo, hi = valid_range_ms if valid_range_ms is not None else _default_range_ms(model, x, tr_ms)
    flags = np.zeros(v, np.uint8)
    failed = fit_here & ~(np.isfinite(rate) & np.isfinite(amp) & (rate > 0))
    low = ~fit_here | (n_signal < min(3, n))
    flags[failed] |= FLAG_FIT_FAILED
    flags[fit_here & ~failed & ((time_ms < lo) | (time_ms > hi))] |= FLAG_OUT_OF_RANGE
    flags[low] |= FLAG_LOW_SIGNAL
    if mask is not None:
        flags[~(mask.numpy().reshape(-1) != 0)] = FLAG_LOW_SIGNAL
    no_signal = ~fit_here | failed
    time_ms[no_signal] = np.nan
    rate[no_signal] = np.nan
    t_name, r_name = QUANTITY[model][:2]
    base = series.name or "series"
    meta = {"model": model, "method": method, "source": series.metadata.get("source_path")}

    def vol(arr, name, unit, dtype=np.float32):
        return Volume(arr.reshape(spatial).astype(dtype), series.affine, "MR", unit, dict(meta), f"{base} {name}")

    n_fit = int(fit_here.sum())
    if n_fit and np.mean(flags[fit_here] != 0) > 0.5:
        notes.append(
            f"{name}: the {model} fit is unreliable in {100 * np.mean(flags[fit_here] != 0):.0f} % of the "
            "voxels with signal; check the sampling list and the model."
        )
    for message in notes:
        warnings.warn(message, ImmunotrackWarning, stacklevel=2)
    parameters = {
        "model": model,
        "method": method,
        "sampling": x.tolist(),
        "sampling_unit": QUANTITY[model][3],
        "sampling_name": QUANTITY[model][2],
        "noise_sigma": noise_sigma,
        "valid_range_ms": [float(lo), float(hi)],
        "voxels_fitted": n_fit,
        "voxels_unreliable": int(np.count_nonzero(flags[fit_here])),
    }
    if model == "t1vfa":
        parameters["repetition_time_ms"] = tr_ms
        parameters["b1_map"] = b1 is not None
    if method == "epg":
        parameters.update(refocusing_deg=refocusing_deg, t1_ms=t1_ms)
    return RelaxationMaps(
        model=model,
        method=method,
        time_ms=vol(time_ms, f"{t_name} (ms)", "ms"),
        rate_per_s=vol(rate, f"{r_name} (1/s)", "1/s"),
        goodness=vol(good, "fit R^2", "R^2"),
        unreliable=vol(flags, "unreliable", "label", np.uint8),
        amplitude=vol(amp, "S0" if model in ("t2star", "t2") else "M0", series.unit),
        extra={k: vol(a, k, "relative" if k == "b1" else series.unit) for k, a in extra_arrays.items()},
        parameters=parameters,
        warnings=notes,
    )


# --------------------------------------------------------------------------- concentrations
def delta_rate(
    post: Volume,
    baseline: Volume,
    transform: np.ndarray | None = None,
    post_unreliable: Volume | None = None,
    baseline_unreliable: Volume | None = None,
) -> Volume:
    """Rate change ``R_post - R_baseline`` (1/s) on the post map's grid.

    Parameters
    ----------
    post, baseline : Volume
        Rate maps (1/s), e.g. :attr:`RelaxationMaps.rate_per_s`.
    transform : (4, 4) array, optional
        World-to-world map from post world to baseline world (a registration
        result); identity when the two share a world (same animal position).
    post_unreliable, baseline_unreliable : Volume, optional
        Flag maps: flagged voxels (of either) give NaN.

    Returns
    -------
    Volume in 1/s (NaN where either map has no value).

    Examples
    --------
    >>> a = Volume(np.full((2, 2, 2), 80.0), np.eye(4)); b = Volume(np.full((2, 2, 2), 50.0), np.eye(4))
    >>> float(delta_rate(a, b).data[0, 0, 0])
    30.0
    """
    if post.data.ndim != 3 or baseline.data.ndim != 3:
        raise InputError("delta R needs two 3D rate maps (fit each series first).")
    same = transform is None and baseline.same_grid(post)
    base = baseline if same else baseline.resample_to(post, order=1, transform=transform, fill=np.nan)
    delta = post.numpy().astype(np.float64) - base.numpy().astype(np.float64)
    for flags, grid_ok in ((post_unreliable, True), (baseline_unreliable, same)):
        if flags is None:
            continue
        f = flags if (grid_ok and flags.same_grid(post)) else flags.resample_to(post, order=0, transform=transform)
        delta[f.numpy() != 0] = np.nan
    name = post.name.replace("(1/s)", "").strip() if post.name else "R"
    return Volume(
        delta.astype(np.float32),
        post.affine,
        "MR",
        "1/s",
        {"baseline": baseline.metadata.get("source_path") or baseline.name},
        f"delta {name} (1/s)",
    )


def concentration(delta_r: Volume, relaxivity: float, metal: str = "Fe") -> Volume:
    """Agent concentration (mM of the metal) ``= delta R / r``, r in mM^-1 s^-1.

    See docs/methods/relaxometry.md#concentration.

    Parameters
    ----------
    delta_r : Volume
        Change of relaxation rate against the baseline (1/s), e.g. from :func:`delta_rate`.
    relaxivity : float
        The agent's relaxivity for that rate (mM^-1 s^-1, > 0; :func:`agent_relaxivity`).
    metal : str, default "Fe"
        The metal the concentration counts (recorded in the metadata and name).

    Returns
    -------
    Volume
        float32, unit "mM", ``metadata`` with ``relaxivity_per_mM_s`` and ``metal``.

    Raises
    ------
    InputError
        A relaxivity that is not finite and positive.

    Examples
    --------
    >>> d = Volume(np.full((2, 2, 2), 30.0), np.eye(4))
    >>> c = concentration(d, 60.0)
    >>> float(c.data[0, 0, 0]), c.unit
    (0.5, 'mM')
    """
    r = float(relaxivity)
    if not np.isfinite(r) or r <= 0:
        raise InputError(f"relaxivity {relaxivity} is impossible; give it in mM^-1 s^-1 (> 0), e.g. --relaxivity 60.")
    out = delta_r.numpy().astype(np.float64) / r
    return Volume(
        out.astype(np.float32),
        delta_r.affine,
        "MR",
        "mM",
        {"relaxivity_per_mM_s": r, "metal": metal},
        f"{metal} concentration (mM)",
    )


def metal_mass_ug(conc: Volume, metal: str = "Fe") -> Volume:
    """Micrograms of metal per voxel from a concentration map in mM.

    1 mM in 1 mm^3 is 1e-9 mol, i.e. ``molar mass x 1e-3`` ug (0.0558 ug of Fe;
    docs/methods/relaxometry.md#concentration).

    Parameters
    ----------
    conc : Volume
        Concentration map (mM).
    metal : {"Fe", "Gd"}, default "Fe"
        The metal, for its molar mass (:data:`MOLAR_MASS`, g/mol).

    Returns
    -------
    Volume
        float32, unit "ug": micrograms of metal in each voxel (concentration x voxel volume x molar mass).

    Raises
    ------
    InputError
        An unknown metal.

    Examples
    --------
    >>> c = Volume(np.ones((1, 1, 1)), np.eye(4))
    >>> round(float(metal_mass_ug(c).data[0, 0, 0]), 6)
    0.055845
    >>> c = Volume(np.ones((1, 1, 1)), np.diag([2.0, 2.0, 2.0, 1.0]))   # 8 mm3 voxels
    >>> round(float(metal_mass_ug(c, "Gd").data[0, 0, 0]), 4)
    1.258
    """
    if metal not in MOLAR_MASS:
        raise InputError(f"metal {metal!r} is unknown; use one of {', '.join(MOLAR_MASS)}.")
    ug = conc.numpy().astype(np.float64) * conc.voxel_volume_mm3 * MOLAR_MASS[metal] * 1e-3
    return Volume(ug.astype(np.float32), conc.affine, "MR", "ug", {"metal": metal}, f"{metal} (ug per voxel)")


def relaxometry_roi_table(
    maps: dict[str, Volume],
    rois,
    *,
    unreliable: Volume | None = None,
    concentration_key: str | None = None,
    metal: str = "Fe",
    transform: np.ndarray | None = None,
    progress=None,
):
    """ROI table of relaxometry maps: mean, SD and median of each map, with amounts of metal.

    Parameters
    ----------
    maps : dict
        Column prefix -> 3D Volume on one grid, e.g. ``{"T2star_ms": ..., "R2star_per_s": ...}``.
    rois : Volume
        Label image on any grid (carried with :func:`~napari_immunotrack.analysis.roi.roi_statistics`);
        labels outside the maps' field of view are left out (noted in ``attrs["warnings"]``).
    unreliable : Volume, optional
        Flag map; flagged voxels are left out of every statistic and counted in
        ``unreliable_fraction``.
    concentration_key : str, optional
        The key of ``maps`` holding a concentration in mM: adds ``<metal>_umol``
        (the ROI integral, mM x mL) and ``<metal>_ug``.
    metal : str, default "Fe"
        The metal of the concentration map (column names and molar mass).
    transform : (4, 4) array, optional
        World-to-world map from the maps' world to the ROI image's world.
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    pandas.DataFrame
        ``label``, ``voxels``, ``volume_ml``, ``unreliable_fraction``, ``<key>_mean``, ``<key>_sd``,
        ``<key>_median`` per map, and the metal columns.

    Raises
    ------
    InputError
        No map, an ROI image without labels, or no label inside the maps' field of view.

    Examples
    --------
    >>> conc = Volume(np.full((4, 4, 4), 0.5, np.float32), np.eye(4), "MR", "mM")
    >>> t2s = Volume(np.full((4, 4, 4), 20.0, np.float32), np.eye(4), "MR", "ms")
    >>> lab = np.zeros((4, 4, 4), np.uint8)
    >>> lab[:2, :2, :2] = 1
    >>> df = relaxometry_roi_table({"T2star_ms": t2s, "Fe_mM": conc}, Volume(lab, np.eye(4)), concentration_key="Fe_mM")
    >>> df[["label", "volume_ml", "T2star_ms_mean", "Fe_mM_mean", "Fe_umol", "Fe_ug"]].round(5).values.tolist()
    [[1.0, 0.008, 20.0, 0.5, 0.004, 0.22338]]
    """
    import pandas as pd

    from ..volume import as_labels
    from .roi import roi_statistics

    if not maps:
        raise InputError("no map to tabulate.")
    keys = list(maps)
    grid = maps[keys[0]]
    notes = []
    labels_vol = as_labels(rois, name="the ROI image")
    all_labels = [int(v) for v in np.unique(labels_vol.numpy()) if v != 0]
    if not all_labels:
        raise InputError("the ROI image holds no label (all 0); draw or choose an ROI.")
    # labels that reach the maps' field of view (the maps may cover part of the body only)
    on_grid = labels_vol.resample_to(grid, order=0, transform=transform).numpy()
    present = [v for v in all_labels if np.any(on_grid == v)]
    outside = [v for v in all_labels if v not in present]
    if outside:
        notes.append(f"ROI label(s) {', '.join(map(str, outside))} lie outside the maps' field of view: no statistics.")
    if not present:
        raise InputError("no ROI label reaches the maps' field of view; check the ROI image and its registration.")
    bad = np.zeros(grid.spatial_shape, bool) if unreliable is None else unreliable.numpy() != 0
    kept = labels_vol.replace(data=np.where(np.isin(labels_vol.numpy(), present), labels_vol.numpy(), 0))
    flags = roi_statistics(
        grid.replace(data=bad.astype(np.float32), unit="fraction"),
        kept,
        transform=transform,
        peak=False,
        name="the maps",
    )
    table = flags[["label", "voxels", "volume_ml", "mean"]].rename(columns={"mean": "unreliable_fraction"})
    # an ROI with no reliable voxel gets empty statistics rather than an error
    usable = [int(v) for v, f in zip(table["label"], table["unreliable_fraction"]) if f < 0.999]
    if len(usable) < len(present):
        notes.append(
            f"ROI label(s) {', '.join(str(v) for v in present if v not in usable)} hold no reliable fit: "
            "their map statistics are empty."
        )
    reliable = kept.replace(data=np.where(np.isin(kept.numpy(), usable), kept.numpy(), 0))
    for i, key in enumerate(keys):
        if not usable:
            break
        vol = maps[key]
        data = np.where(bad, np.nan, vol.numpy().astype(np.float64))
        with warnings.catch_warnings():  # the field-of-view notes were given once, for the mask
            warnings.simplefilter("ignore", ImmunotrackWarning)
            stats = roi_statistics(
                vol.replace(data=data),
                reliable,
                transform=transform,
                peak=False,
                name=key,
                progress=_progress.scaled(progress, i / (len(keys) + 1), (i + 1) / (len(keys) + 1)),
            )
        cols = {"mean": f"{key}_mean", "sd": f"{key}_sd", "median": f"{key}_median"}
        part = stats[["label"] + list(cols)].rename(columns=cols)
        if key == concentration_key:
            # integral = sum of w x C x voxel mL over the ROI's reliable voxels; mM x mL = umol
            part[f"{metal}_umol"] = stats["integral"]
            part[f"{metal}_ug"] = stats["integral"] * MOLAR_MASS[metal]
        table = table.merge(part, on="label", how="left")
    if outside:
        table = pd.concat([table, pd.DataFrame({"label": outside, "voxels": 0, "volume_ml": 0.0})], ignore_index=True)
    table = table.sort_values("label").reset_index(drop=True)
    table.attrs["warnings"] = notes
    for message in notes:
        warnings.warn(message, ImmunotrackWarning, stacklevel=2)
    _progress.report(progress, 1.0, "ROI table")
    return table


# --------------------------------------------------------------------------- pipeline step
def relax_step(
    series: Volume,
    rois: Volume | None = None,
    *,
    baseline: Volume | None = None,
    model: str = "t2star",
    method: str | None = None,
    relaxivity=None,
    field_t: float | None = None,
    metal: str | None = None,
    noise_sigma: float | None = None,
    b1: Volume | None = None,
    roi_transform: np.ndarray | None = None,
    baseline_transform: np.ndarray | None = None,
    progress=None,
) -> dict:
    """One session's relaxometry as a pipeline step: maps, delta R, concentration and the ROI table.

    What ``immunotrack relax`` computes, as a function a batch pipeline can call
    with the session's files already loaded (sampling lists from the headers).

    Parameters
    ----------
    series : Volume
        The 4D series (multi-echo GRE for the default model).
    rois : Volume, optional
        Organ labels (any grid) for the table.
    baseline : Volume, optional
        The pre-injection series of the same kind.
    model, method, noise_sigma, b1
        As :func:`fit_relaxation`.
    relaxivity : float or str, optional
        mM^-1 s^-1, or an agent name of :data:`AGENTS` (its default at ``field_t``,
        else at the header's ``MagneticFieldStrength``).
    field_t : float, optional
        Main field (T) for an agent's default relaxivity (:func:`agent_relaxivity`).
    metal : "Fe" or "Gd", optional
        Default: the agent's; Fe for T2/T2*, Gd for T1 models with a number.
    roi_transform, baseline_transform : (4, 4) arrays, optional
        World-to-world maps from the series' world to the ROI's and the baseline's.
    progress : callable, optional
        ``progress(fraction, message)`` callback; may raise Cancelled.

    Returns
    -------
    dict
        ``maps`` (:class:`RelaxationMaps`), ``delta`` and ``concentration`` (Volumes or
        None), ``table`` (DataFrame or None), ``parameters`` (JSON-ready).

    Examples
    --------
    >>> te = np.array([2.0, 4, 6, 8])
    >>> s = Volume(1000 * np.exp(-te / 20)[:, None, None, None] * np.ones((4, 2, 2, 2)), np.eye(4),
    ...            metadata={"echo_times_ms": te.tolist()})
    >>> out = relax_step(s, baseline=s, relaxivity=60.0, noise_sigma=0)
    >>> float(np.nanmax(np.abs(out["concentration"].numpy())))
    0.0
    """
    model = check_model(model)
    sub = _progress.scaled
    maps = fit_relaxation(
        series,
        model,
        method=method,
        noise_sigma=noise_sigma,
        b1=b1,
        progress=sub(progress, 0.0, 0.45 if baseline is not None else 0.8),
    )
    parameters = dict(maps.parameters)
    delta = conc = table = None
    r_value = None
    if baseline is not None:
        pre = fit_relaxation(
            baseline, model, method=method, noise_sigma=noise_sigma, b1=b1, progress=sub(progress, 0.45, 0.8)
        )
        delta = delta_rate(
            maps.rate_per_s,
            pre.rate_per_s,
            transform=baseline_transform,
            post_unreliable=maps.unreliable,
            baseline_unreliable=pre.unreliable,
        )
        if relaxivity is not None:
            try:
                r_value = float(relaxivity)
                metal = metal or ("Fe" if model in ("t2star", "t2") else "Gd")
                source = "given"
            except (TypeError, ValueError):
                field = field_t if field_t is not None else series.metadata.get("MagneticFieldStrength")
                if field is None:
                    raise InputError(
                        f"{series.name or 'the series'} has no MagneticFieldStrength in its header; "
                        f"give field_t to pick the default relaxivity of {relaxivity}."
                    ) from None
                agent = agent_relaxivity(str(relaxivity), float(field))
                r_value, metal, source = agent.for_model(model), metal or agent.metal, agent.source
            conc = concentration(delta, r_value, metal)
            parameters.update(relaxivity_per_mM_s=r_value, relaxivity_source=source, metal=metal)
    if rois is not None:
        t_name, r_name = QUANTITY[model][:2]
        tab = {f"{t_name}_ms": maps.time_ms, f"{r_name}_per_s": maps.rate_per_s, "goodness_R2": maps.goodness}
        if delta is not None:
            tab[f"delta{r_name}_per_s"] = delta
        if conc is not None:
            tab[f"{metal}_mM"] = conc
        table = relaxometry_roi_table(
            tab,
            rois,
            unreliable=maps.unreliable,
            concentration_key=f"{metal}_mM" if conc is not None else None,
            metal=metal or "Fe",
            transform=roi_transform,
            progress=sub(progress, 0.8, 1.0),
        )
    _progress.report(progress, 1.0, "relaxometry done")
    return {"maps": maps, "delta": delta, "concentration": conc, "table": table, "parameters": parameters}
