"""Following labelled cells over days: dilution, clearance and macrophage-held label (docs/methods/longitudinal.md).

Every label fades, and not all of the fading is cell death. This module
turns the per-session readouts (19F cells, MPI iron, PET/SPECT %ID, iron
clusters) into time courses per site and fits the dilution-and-clearance
model where the data allow.

The model, per site, for live labelled cells (times in days after injection)
-----------------------------------------------------------------------------
- label per live cell: ``q(t) = q0 * 2^(-t / T_d) * exp(-e t)``: halves at
  each division (doubling time ``T_d``) and leaks by efflux ``e`` (1/day,
  from an in-vitro label-retention assay; 0 by default);
- label held by live labelled cells: ``L(t) = L(t_ref) * exp(-k (t - t_ref))``:
  ``k`` (1/day) is the clearance (death of the cells and efflux);
- live labelled cells: ``N(t) = L(t) / q(t)``. With the label expressed in
  *apparent cells* (``N_app = label / q0``), the corrected count is
  ``N = N_app * 2^(t / T_d) * exp(e t)`` (docs/methods/longitudinal.md#corrected-cells).

What the data can tell (identifiability)
----------------------------------------
- Total label per site over >= 3 timepoints gives ``k`` of the *signal*
  (log-linear least squares, :func:`fit_dilution_clearance`). With fewer
  points no fit is made: the raw values are reported and the table says so.
- Division conserves total label, so ``T_d`` is **not identifiable from
  label totals**. It needs a cell count independent of the label (reporter
  gene, bioluminescence, a biopsy or flow count) at one or more timepoints
  (then ``T_d`` and ``k`` are fitted jointly), or an assumed value from
  elsewhere (an in-vitro proliferation assay), which the tables mark as
  ``"prior"``.
- Imaging measures the label, wherever it is: label that host macrophages
  took up from dead cells looks exactly like label in live cells. The signal
  therefore only tells the macrophage-held part apart against a model of the
  live cells: cell counts, or kinetic priors per site (cell loss rate,
  doubling time). :func:`analyse_timecourse` predicts the label the live
  cells can still carry, ``L_live(t) = M(t_ref) exp(-k_live (t - t_ref))``
  (an upper bound: it assumes all label at the first timepoint was in live
  cells), and flags a site whose signal persists while that prediction says
  at least ``flag_fraction`` (90 % by default) of it cannot be in live cells,
  or whose live-cell label falls below the detection limit while the signal
  stays above it: host-macrophage uptake, a false positive for cell counts.
  Without cell counts or priors the flag is "not assessable" and says why.

Detection
---------
The day a site is expected to fall below the detection limit is when the
live-cell label reaches the limit (``t_ref + ln(L_ref / limit) / k_live``)
and, for single-cell detection, after ``log2(q0 / q_min)`` divisions
(``T_d * log2(q0 / q_min)``) when a per-cell limit ``q_min`` is given.

Examples
--------
>>> import numpy as np
>>> days = np.array([1.0, 3.0, 5.0, 7.0])
>>> label = 1e5 * np.exp(-0.2 * (days - 1))           # apparent cells
>>> cells = label * 2 ** (days / 2.0)                  # doubling every 2 days
>>> fit = fit_dilution_clearance(days, label, cells=cells)
>>> round(fit.k_per_day, 3), round(fit.doubling_days, 3)
(0.2, 2.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

LN2 = math.log(2.0)

#: Readouts of the per-organ tables, in the order preferred for a site's summary.
#: name -> (table key, column read, unit of that column, column of apparent cells or None)
READOUTS = {
    "19F": ("f19", "fluorine_atoms", "19F atoms", "cell_count"),
    "MPI iron": ("mpi", "iron_ng", "ng Fe", "cell_count"),
    "PET": ("pet", "percent_id", "%ID (decay-corrected)", None),
    "SPECT": ("spect", "percent_id", "%ID (decay-corrected)", None),
}

#: Default fraction of a site's signal that must be unexplained by live cells to flag it.
FLAG_FRACTION = 0.9


# --------------------------------------------------------------------------- the fit
@dataclass
class DilutionFit:
    """Result of :func:`fit_dilution_clearance` (label in apparent cells, times in days).

    ``status`` is "fitted", "too few timepoints" or "no valid data"; ``message``
    says what was done and why. SEs are NaN when the fit has no residual degree of freedom.
    """

    n_points: int
    t_ref_days: float
    label_ref: float = float("nan")
    k_per_day: float = float("nan")
    k_se: float = float("nan")
    doubling_days: float = float("nan")
    doubling_se: float = float("nan")
    doubling_source: str = "not identifiable"
    efflux_per_day: float = 0.0
    rms_log_residual: float = float("nan")
    status: str = "no valid data"
    message: str = ""

    def label_at(self, days) -> np.ndarray:
        """The fitted total label (apparent cells) at ``days``: ``label_ref exp(-k (t - t_ref))``.

        Parameters
        ----------
        days : array_like
            Days after injection.

        Returns
        -------
        numpy.ndarray
            Apparent cells, the shape of ``days``.

        Examples
        --------
        >>> fit = DilutionFit(n_points=3, t_ref_days=1.0, label_ref=1000.0, k_per_day=math.log(2), doubling_days=2.0)
        >>> fit.label_at([1.0, 3.0]).round(6).tolist()
        [1000.0, 250.0]
        """
        t = np.asarray(days, float)
        return self.label_ref * np.exp(-self.k_per_day * (t - self.t_ref_days))

    def per_cell_fraction(self, days) -> np.ndarray:
        """q(t) / q0 at ``days``: the label a cell keeps, ``exp(-(ln 2 / T_d + e) t)`` (1 without division or efflux).

        Parameters
        ----------
        days : array_like
            Days after injection.

        Returns
        -------
        numpy.ndarray
            Fractions of the label per cell at injection, the shape of ``days``.

        Examples
        --------
        >>> fit = DilutionFit(n_points=3, t_ref_days=1.0, doubling_days=2.0)
        >>> fit.per_cell_fraction([0.0, 4.0]).round(6).tolist()        # two divisions in 4 days
        [1.0, 0.25]
        """
        t = np.asarray(days, float)
        growth = 0.0 if not np.isfinite(self.doubling_days) else LN2 / self.doubling_days
        return np.exp(-(growth + self.efflux_per_day) * t)

    def to_dict(self) -> dict:
        """The fit's fields as a dictionary (for tables and provenance).

        Parameters
        ----------
        None

        Returns
        -------
        dict
            Every field of the dataclass.

        Examples
        --------
        >>> d = DilutionFit(n_points=2, t_ref_days=1.0).to_dict()
        >>> d["n_points"], d["status"]
        (2, 'no valid data')
        """
        return asdict(self)


def _loglinear(t, y):
    """Slope and intercept of log(y) on t (ordinary least squares)."""
    a = np.vstack([np.ones_like(t), t]).T
    coef, *_ = np.linalg.lstsq(a, np.log(y), rcond=None)
    return coef


def fit_dilution_clearance(
    days, label, *, cells=None, doubling_days: float | None = None, efflux_per_day: float = 0.0, min_points: int = 3
) -> DilutionFit:
    """Fit the dilution-and-clearance model to one site's time course.

    Parameters
    ----------
    days : (n,) days after injection.
    label : (n,) total label at the site in *apparent cells* (label / label per cell at
        injection); NaN or <= 0 marks a missing or undetected timepoint (left out).
    cells : (n,) optional live-cell counts independent of the label (reporter gene, biopsy);
        NaN where not measured. One count at a time after injection is enough to fit ``T_d``.
    doubling_days : a known (assumed) doubling time, used when ``cells`` are not given;
        None or inf means no division.
    efflux_per_day : per-cell label efflux (in-vitro retention assay), known, not fitted.
    min_points : timepoints with label needed to fit ``k`` (3: two points fit any exponential exactly).

    Returns
    -------
    DilutionFit

    Examples
    --------
    >>> fit = fit_dilution_clearance([1, 3], [100.0, 80.0])
    >>> fit.status
    'too few timepoints'
    """
    from scipy.optimize import least_squares

    t = np.asarray(days, float).ravel()
    y = np.asarray(label, float).ravel()
    if t.shape != y.shape:
        raise InputError(f"days ({t.size}) and label ({y.size}) must have the same length.")
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise InputError(f"days={t.tolist()} must be finite days after injection (>= 0).")
    if efflux_per_day is None or not np.isfinite(efflux_per_day) or efflux_per_day < 0:
        raise InputError(f"efflux_per_day={efflux_per_day} must be a rate >= 0 per day.")
    n_cells = None
    if cells is not None:
        n_cells = np.asarray(cells, float).ravel()
        if n_cells.shape != t.shape:
            raise InputError(f"cells ({n_cells.size}) and days ({t.size}) must have the same length.")
    ok = np.isfinite(y) & (y > 0)
    t_ref = float(t[ok].min()) if ok.any() else (float(t.min()) if t.size else 0.0)
    fit = DilutionFit(n_points=int(ok.sum()), t_ref_days=t_ref, efflux_per_day=float(efflux_per_day))
    if not ok.any():
        fit.message = "no timepoint with a detected signal; nothing to fit."
        return fit
    cell_ok = (np.isfinite(n_cells) & (n_cells > 0) & (t > 0)) if n_cells is not None else np.zeros_like(ok)
    prior = doubling_days if doubling_days is not None and np.isfinite(doubling_days) else None
    if doubling_days is not None and (not np.isfinite(doubling_days)):
        prior = math.inf
    if prior is not None and prior != math.inf and prior <= 0:
        raise InputError(f"doubling_days={doubling_days} must be > 0 days (or None for no division).")
    if ok.sum() < min_points:
        fit.status = "too few timepoints"
        fit.message = (
            f"{int(ok.sum())} timepoint(s) with signal; the model needs at least {min_points} "
            "to fit the clearance (raw values reported)."
        )
        fit.label_ref = float(y[ok][np.argmin(t[ok])])
        return fit
    tl, yl = t[ok], y[ok]
    slope_intercept = _loglinear(tl - t_ref, yl)
    fit_growth = bool(cell_ok.any())
    x0 = [slope_intercept[0], -slope_intercept[1]]
    if fit_growth:
        tc, nc = t[cell_ok], n_cells[cell_ok]
        # log N = log L(t) + (r + e) t  ->  starting r from the mean log ratio
        lpred = slope_intercept[0] + slope_intercept[1] * (tc - t_ref)
        x0.append(float(np.mean((np.log(nc) - lpred) / tc)) - efflux_per_day)

    def residuals(p):
        a, k = p[0], p[1]
        res = [np.log(yl) - (a - k * (tl - t_ref))]
        if fit_growth:
            r = p[2]
            res.append(np.log(nc) - (a - k * (tc - t_ref) + (r + efflux_per_day) * tc))
        return np.concatenate(res)

    sol = least_squares(residuals, np.asarray(x0, float), method="lm")
    res = sol.fun
    dof = res.size - sol.x.size
    cov = np.full((sol.x.size, sol.x.size), np.nan)
    if dof > 0:
        s2 = float(res @ res) / dof
        try:
            cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
        except np.linalg.LinAlgError:
            pass
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(np.diag(cov))) else np.full(sol.x.size, np.nan)
    fit.label_ref = float(np.exp(sol.x[0]))
    fit.k_per_day = float(sol.x[1])
    fit.k_se = float(se[1])
    fit.rms_log_residual = float(np.sqrt(np.mean(res**2)))
    fit.status = "fitted"
    if fit_growth:
        r, r_se = float(sol.x[2]), float(se[2])
        fit.doubling_source = "fitted (cell counts)"
        if r > 0:
            fit.doubling_days = LN2 / r
            fit.doubling_se = LN2 / r**2 * r_se
            fit.message = (
                f"k and T_d fitted jointly from {int(ok.sum())} label and {int(cell_ok.sum())} cell-count timepoints."
            )
        else:
            fit.doubling_days = math.inf
            fit.message = "cell counts show no net division (label per cell does not fall): T_d = inf."
    elif prior is not None:
        fit.doubling_days = float(prior)
        fit.doubling_source = "prior" if prior != math.inf else "prior (no division)"
        fit.message = f"k fitted from {int(ok.sum())} timepoints; T_d assumed (not identifiable from label totals)."
    else:
        fit.message = (
            f"k fitted from {int(ok.sum())} timepoints; T_d not identifiable from label totals "
            "(division conserves label): give cell counts or an assumed doubling time."
        )
    return fit


def corrected_cells(days, apparent_cells, doubling_days: float | None, efflux_per_day: float = 0.0):
    """Apparent to live-cell numbers: ``N_app * 2^(t / T_d) * exp(e t)`` (docs/methods/longitudinal.md#corrected-cells).

    Division dilutes the label per cell and efflux removes it, so the apparent cells (label / label per
    cell at injection) undercount live cells by these factors, under the assumptions of
    :data:`COLUMN_DESCRIPTIONS` ``["cells_corrected"]``.

    Parameters
    ----------
    days : array_like
        Days since injection.
    apparent_cells : array_like
        Apparent cells at those days (broadcast with ``days``).
    doubling_days : float or None
        Assumed doubling time (days); None or NaN: unknown; inf: no division (no growth term).
    efflux_per_day : float, default 0.0
        Label efflux from live cells (1/day).

    Returns
    -------
    numpy.ndarray
        float64 live-cell estimates, the broadcast shape of the inputs; NaN where ``doubling_days``
        is unknown.

    Examples
    --------
    >>> corrected_cells([4.0], [1000.0], 2.0).round(1).tolist()
    [4000.0]
    >>> corrected_cells([0.0, 2.0], [1000.0, 1000.0], math.inf, 0.1).round(1).tolist(), corrected_cells([1.0], [1.0], None)
    ([1000.0, 1221.4], array([nan]))
    """
    t = np.asarray(days, float)
    n = np.asarray(apparent_cells, float)
    if doubling_days is None or (isinstance(doubling_days, float) and math.isnan(doubling_days)):
        return np.full(np.broadcast(t, n).shape, np.nan)
    growth = 0.0 if not np.isfinite(doubling_days) else LN2 / float(doubling_days)
    return n * np.exp((growth + efflux_per_day) * t)


def detection_day(t_ref: float, label_ref: float, k_per_day: float, limit: float | None) -> float:
    """Day the live-cell label ``label_ref * exp(-k (t - t_ref))`` reaches ``limit`` (inf if it never does).

    ``t_ref + ln(label_ref / limit) / k`` (docs/methods/longitudinal.md#detection-limits).

    Parameters
    ----------
    t_ref : float
        Reference day of ``label_ref``.
    label_ref : float
        Live-cell label at ``t_ref`` (any unit, the same as ``limit``; apparent cells in the tables).
    k_per_day : float
        Live-cell label loss rate (1/day).
    limit : float or None
        Detection limit in the unit of ``label_ref``.

    Returns
    -------
    float
        The day; ``t_ref`` when the label is already at or under the limit; inf when ``k`` is not
        positive; NaN when the limit or the label is unknown.

    Examples
    --------
    >>> round(detection_day(1.0, 1000.0, math.log(2), 250.0), 6)    # two half-lives after day 1
    3.0
    >>> detection_day(1.0, 100.0, 0.5, 200.0), detection_day(1.0, 1000.0, 0.0, 250.0), detection_day(1.0, 1000.0, 0.5, None)
    (1.0, inf, nan)
    """
    if limit is None or not np.isfinite(limit) or limit <= 0 or not np.isfinite(label_ref):
        return float("nan")
    if label_ref <= limit:
        return float(t_ref)
    if not np.isfinite(k_per_day) or k_per_day <= 0:
        return math.inf
    return float(t_ref + math.log(label_ref / limit) / k_per_day)


def dilution_day(doubling_days: float | None, per_cell_limit_fraction: float | None) -> float:
    """Day the label per cell falls below ``q_min = fraction * q0``: ``T_d * log2(1 / fraction)``.

    After n divisions a cell holds ``q0 / 2^n`` (docs/methods/longitudinal.md#detection-limits).

    Parameters
    ----------
    doubling_days : float or None
        Doubling time (days); inf for cells that do not divide.
    per_cell_limit_fraction : float or None
        ``q_min / q0``, between 0 and 1: the per-cell detection limit as a fraction of the label a
        cell had at injection.

    Returns
    -------
    float
        Days after injection; inf without division; NaN when either input is unknown.

    Raises
    ------
    InputError
        A fraction outside (0, 1).

    Examples
    --------
    >>> dilution_day(2.0, 1 / 8), dilution_day(math.inf, 0.5), dilution_day(None, 0.5)
    (6.0, inf, nan)
    """
    if per_cell_limit_fraction is None or doubling_days is None or not np.isfinite(per_cell_limit_fraction):
        return float("nan")
    if not 0 < per_cell_limit_fraction < 1:
        raise InputError(f"per-cell limit fraction {per_cell_limit_fraction} must be between 0 and 1 (q_min / q0).")
    if not np.isfinite(doubling_days):
        return math.inf
    return float(doubling_days * math.log2(1.0 / per_cell_limit_fraction))


# --------------------------------------------------------------------------- tables over time
def timecourse_table(
    session_tables: Mapping[float, Mapping[str, object]],
    injected_cells: float | None = None,
    readouts: Sequence[str] = tuple(READOUTS),
    min_percent_id: float = 0.01,
):
    """One long table of per-organ readouts over time.

    Parameters
    ----------
    session_tables : {day: {"f19": DataFrame, "mpi": ..., "pet": ..., "spect": ...}}
        Per-organ tables as :func:`napari_immunotrack.pipeline.analyse_session` makes them (an
        ``organ`` column, and the readout's column of :data:`READOUTS`). A missing table or organ at
        one day becomes a row with status "missing".
    injected_cells : float, optional
        Cells injected; turns decay-corrected %ID into apparent cells (%ID / 100 * cells). Without it
        PET/SPECT stay in %ID and have no apparent cells.
    readouts : sequence of str, default all of :data:`READOUTS`
        Which readouts: "19F", "MPI iron", "PET", "SPECT".
    min_percent_id : float, default 0.01
        PET/SPECT values below this (%ID) are noise around zero: "below detection limit".

    Returns
    -------
    pandas.DataFrame
        Columns ``site, day, readout, value, unit, apparent_cells, detection_limit_cells_roi,
        detection_limit_cells_cluster, status``: ``detection_limit_cells_roi`` is the readout's own limit
        for the whole ROI (MPI: 3.5 noise SDs of the ROI sum; 19F when its table gives one);
        ``detection_limit_cells_cluster`` is the smallest compact depot a per-voxel limit can show (3
        voxels at the 19F per-voxel limit). They are different numbers and never share a name
        (docs/methods/longitudinal.md#detection-limits).

    Raises
    ------
    InputError
        An unknown readout, or ``injected_cells`` that is not a positive number.

    Examples
    --------
    >>> import pandas as pd
    >>> tables = {d: {"pet": pd.DataFrame({"organ": ["spleen", "tumour"], "percent_id": [p, q]})}
    ...           for d, p, q in [(1.0, 20.0, 2.0), (3.0, 12.0, 3.0), (5.0, 0.005, 4.0)]}
    >>> tc = timecourse_table(tables, injected_cells=1e6)
    >>> print(tc[["site", "day", "value", "apparent_cells", "status"]].to_string(index=False))
      site  day  value  apparent_cells                status
    spleen  1.0 20.000        200000.0                    ok
    tumour  1.0  2.000         20000.0                    ok
    spleen  3.0 12.000        120000.0                    ok
    tumour  3.0  3.000         30000.0                    ok
    spleen  5.0  0.005             NaN below detection limit
    tumour  5.0  4.000         40000.0                    ok
    """
    import pandas as pd

    unknown = [r for r in readouts if r not in READOUTS]
    if unknown:
        raise InputError(f"unknown readout(s) {unknown}; use {list(READOUTS)}.")
    if injected_cells is not None and not (np.isfinite(injected_cells) and injected_cells > 0):
        raise InputError(f"injected_cells={injected_cells} must be a positive number of cells.")
    rows = []
    days = sorted(float(d) for d in session_tables)
    sites = []
    for d in days:
        for key in (READOUTS[r][0] for r in readouts):
            df = session_tables[d].get(key) if session_tables[d] else None
            if df is not None and "organ" in getattr(df, "columns", []):
                sites.extend(s for s in df["organ"] if s not in sites)
    for readout in readouts:
        key, column, unit, cells_col = READOUTS[readout]
        present = [d for d in days if session_tables[d] and session_tables[d].get(key) is not None]
        if not present:
            continue
        for d in days:
            df = session_tables[d].get(key) if session_tables[d] else None
            for site in sites:
                row = {
                    "site": site,
                    "day": d,
                    "readout": readout,
                    "value": np.nan,
                    "unit": unit,
                    "apparent_cells": np.nan,
                    "detection_limit_cells_roi": np.nan,
                    "detection_limit_cells_cluster": np.nan,
                    "status": "missing",
                }
                if df is not None and column in getattr(df, "columns", ()) and site in set(df["organ"]):  # type: ignore[index]
                    r = df[df["organ"] == site].iloc[0]
                    value = float(r[column]) if r[column] is not None else np.nan
                    status = str(r["status"]) if "status" in df.columns else "ok"
                    row.update(
                        value=value, status=status if np.isfinite(value) else (status if status != "ok" else "no value")
                    )
                    if column == "percent_id" and np.isfinite(value) and value < min_percent_id:
                        row["status"] = "below detection limit"  # the fluorine and MPI tables' wording
                        rows.append(row)
                        continue
                    if cells_col and cells_col in df.columns:
                        row["apparent_cells"] = float(r[cells_col])
                    elif injected_cells is not None and np.isfinite(value):
                        row["apparent_cells"] = value / 100.0 * injected_cells
                    if "detection_limit_cells_roi" in df.columns:
                        row["detection_limit_cells_roi"] = float(r["detection_limit_cells_roi"])
                    elif (
                        readout == "MPI iron"
                        and "iron_ng_noise_sd" in df.columns
                        and "cell_count" in df.columns
                        and np.isfinite(value)
                        and value > 0
                    ):
                        row["detection_limit_cells_roi"] = (
                            3.5 * float(r["iron_ng_noise_sd"]) * float(r["cell_count"]) / value
                        )
                    per_voxel = next(
                        (
                            c
                            for c in (
                                "detection_limit_cells_per_voxel",
                                "detection_limit_cells_voxel",
                                "detection_limit_cells",
                            )
                            if c in df.columns
                        ),
                        None,
                    )
                    if readout == "19F" and per_voxel is not None:
                        # the smallest compact depot: the minimum cluster (3 voxels) at the per-voxel limit
                        row["detection_limit_cells_cluster"] = 3.0 * float(r[per_voxel])
                rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "site",
            "day",
            "readout",
            "value",
            "unit",
            "apparent_cells",
            "detection_limit_cells_roi",
            "detection_limit_cells_cluster",
            "status",
        ],
    )


@dataclass
class SiteKinetics:
    """Assumed kinetics of live labelled cells at one site (priors; rates in 1/day).

    ``doubling_days`` None = no division; ``loss_per_day`` = death and emigration of the cells.
    """

    doubling_days: float | None = None
    loss_per_day: float | None = None
    source: str = "user"


#: Kinetic priors from the literature, used when the user gives none (never from a study's ground truth).
#: Orders of magnitude for adoptively transferred, activated T cells in mice; see
#: docs/methods/longitudinal.md#priors for the sources and ranges. Doubling only where T cells expand
#: (lymph nodes, tumour); loss = death + emigration.
LITERATURE_SITE_PRIORS = {
    "tumour": (2.0, 0.1),
    "ln": (2.0, 0.1),
    "lymph": (2.0, 0.1),
    "spleen": (None, 0.2),
    "liver": (None, 0.3),
    "lung": (None, 0.5),
    "circulation": (None, 0.1),
}
#: Label efflux from live cells (1/day) by readout (docs/methods/longitudinal.md#priors).
LITERATURE_EFFLUX_PER_DAY = {"19F": 0.02, "MPI iron": 0.02, "PET": 0.05, "SPECT": 0.1}
LITERATURE_SOURCE = "literature defaults (docs/methods/longitudinal.md#priors)"

#: What the model columns of the time-course table mean, with their assumptions.
COLUMN_DESCRIPTIONS = {
    "apparent_cells": "label at the site divided by the label per cell at injection (cells if no division, "
    "no efflux, no label outside live cells)",
    "cells_corrected": "ASSUMES the doubling time and efflux of the priors hold at this site, every cell divides "
    "at that rate from day 0 and no label sits outside live cells: apparent_cells x "
    "2^(t/T_d) x e^(e t). Off by the ratio of true to assumed division (it was +54 % to "
    "+1869 % off on the simulated study); not a measurement.",
    "live_label_model": "label the live cells would hold under the fitted or prior kinetics",
    "cells_model": "live cells of the dilution-clearance model fitted to the time course",
    "unexplained_fraction": "share of the measured label the live-cell model cannot explain (macrophage-held "
    "signal when large)",
    "detection_limit_cells_roi": "the readout's detection limit for the whole ROI (cells)",
    "detection_limit_cells_cluster": "smallest compact depot the per-voxel limit shows: 3 voxels at the 19F "
    "per-voxel limit (cells)",
}


def literature_priors(sites) -> dict:
    """{site: SiteKinetics} from :data:`LITERATURE_SITE_PRIORS` (by name or prefix: ``ln_iliac`` -> ``ln``).

    The values and their sources are in docs/methods/longitudinal.md#priors.

    Parameters
    ----------
    sites : iterable of str
        Site (organ) names; matched case-insensitively.

    Returns
    -------
    dict
        ``{site: SiteKinetics}`` (doubling days or None, loss per day, source) for the sites with a
        prior; sites without one are left out.

    Examples
    --------
    >>> priors = literature_priors(["ln_iliac", "kidney_left", "Liver"])
    >>> sorted(priors), priors["ln_iliac"].doubling_days, priors["Liver"].loss_per_day
    (['Liver', 'ln_iliac'], 2.0, 0.3)
    """
    out = {}
    for site in sites:
        key = str(site).lower()
        match = next(
            (k for k in LITERATURE_SITE_PRIORS if key == k or key.startswith(k + "_") or key.startswith(k)), None
        )
        if match is None:
            continue
        d, loss = LITERATURE_SITE_PRIORS[match]
        out[site] = SiteKinetics(d, loss, LITERATURE_SOURCE)
    return out


@dataclass
class LongitudinalResult:
    """Tables of :func:`analyse_timecourse` and the parameters that made them."""

    timecourse: object  # long table per site, day, readout (with model columns)
    fits: object  # one row per site and readout
    sites: object  # one row per site: summary and flag
    parameters: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def analyse_timecourse(
    timecourse,
    *,
    kinetics: Mapping[str, SiteKinetics] | None = None,
    cell_counts=None,
    efflux_per_day: Mapping[str, float] | None = None,
    per_cell_limit_fraction: float | None = None,
    flag_fraction: float = FLAG_FRACTION,
    min_points: int = 3,
) -> LongitudinalResult:
    """Fit every site's time course and flag signal that live cells cannot explain.

    The model and the flag are in the module docstring and docs/methods/longitudinal.md#model.

    Parameters
    ----------
    timecourse : pandas.DataFrame
        From :func:`timecourse_table` (``site, day, readout, apparent_cells``).
    kinetics : {site: SiteKinetics}, optional
        Assumed doubling time and cell loss per site (priors), e.g. :func:`literature_priors`.
    cell_counts : pandas.DataFrame, optional
        ``site, day, cells``: label-independent live-cell counts (flow cytometry, bioluminescence).
    efflux_per_day : {readout: float}, optional
        Per-cell label efflux (1/day) by readout, from label-retention assays (default 0).
    per_cell_limit_fraction : float, optional
        ``q_min / q0`` for single-cell detection (:func:`dilution_day`).
    flag_fraction : float, default :data:`FLAG_FRACTION` (0.9)
        Flag when at least this fraction of the signal cannot be in live cells.
    min_points : int, default 3
        Timepoints with signal needed to fit a site's clearance.

    Returns
    -------
    LongitudinalResult
        ``timecourse`` (plus ``cells_corrected``, ``live_label_model``, ``cells_model``,
        ``unexplained_fraction``), ``fits`` (one row per site and readout) and ``sites`` (one row per
        site, with ``macrophage_flag`` True/False/None and ``flag_reason``), the parameters and warnings.

    Raises
    ------
    InputError
        A table without the needed columns, or ``flag_fraction`` outside (0, 1).

    Examples
    --------
    >>> import pandas as pd
    >>> tc = pd.DataFrame({"site": "tumour", "day": [1.0, 3.0, 5.0], "readout": "PET",
    ...                    "apparent_cells": [20000.0, 30000.0, 40000.0]})
    >>> res = analyse_timecourse(tc, kinetics=literature_priors(["tumour"]))
    >>> res.timecourse["live_label_model"].round(1).tolist()       # 0.1 /day cell loss from day 1
    [20000.0, 16374.6, 13406.4]
    >>> bool(res.sites.loc[0, "macrophage_flag"]), res.sites.loc[0, "flag_reason"]
    (False, 'mixed: up to 66% of the signal on day 5 may be macrophage-held')
    """
    import pandas as pd

    if not 0 < flag_fraction < 1:
        raise InputError(f"flag_fraction={flag_fraction} must be between 0 and 1.")
    need = {"site", "day", "readout", "apparent_cells"}
    if timecourse is None or not need <= set(timecourse.columns):
        raise InputError(f"the time-course table needs the columns {sorted(need)}.")
    kinetics = dict(kinetics or {})
    efflux = dict(efflux_per_day or {})
    notes: list = []
    counts = None
    if cell_counts is not None and len(cell_counts):
        if not {"site", "day", "cells"} <= set(cell_counts.columns):
            raise InputError("cell_counts needs the columns site, day, cells.")
        counts = cell_counts
    tc = timecourse.copy()
    for col in ("cells_corrected", "live_label_model", "cells_model", "unexplained_fraction"):
        tc[col] = np.nan
    fit_rows, site_rows = [], []
    for site in dict.fromkeys(tc["site"]):
        prior = kinetics.get(site)
        per_readout = []
        for readout in dict.fromkeys(tc.loc[tc["site"] == site, "readout"]):
            sel = (tc["site"] == site) & (tc["readout"] == readout)
            sub = tc[sel].sort_values("day")
            days = sub["day"].to_numpy(float)
            app = sub["apparent_cells"].to_numpy(float)
            e = float(efflux.get(readout, 0.0))
            cells = None
            if counts is not None:
                c = counts[counts["site"] == site]
                cells = np.array(
                    [
                        float(c.loc[np.isclose(c["day"], d), "cells"].iloc[0])
                        if np.isclose(c["day"], d).any()
                        else np.nan
                        for d in days
                    ]
                )
                if not np.isfinite(cells).any():
                    cells = None
            missing = [f"{d:g}" for d, v in zip(days, app) if not (np.isfinite(v) and v > 0)]
            if not np.isfinite(app).any() or not (app[np.isfinite(app)] > 0).any():
                fit_rows.append(
                    {
                        "site": site,
                        "readout": readout,
                        "n_points": 0,
                        "status": "no valid data",
                        "message": "not detected at any timepoint (or no apparent-cell conversion).",
                    }
                )
                continue
            fit = fit_dilution_clearance(
                days,
                app,
                cells=cells,
                doubling_days=(prior.doubling_days if prior and prior.doubling_days else (math.inf if prior else None)),
                efflux_per_day=e,
                min_points=min_points,
            )
            # the live-cell clearance: fitted with cell counts, else the prior (cell loss + efflux)
            k_live, k_live_source = float("nan"), "unknown"
            if cells is not None and fit.status == "fitted":
                k_live, k_live_source = fit.k_per_day, "fitted (cell counts)"
            elif prior is not None and prior.loss_per_day is not None:
                k_live, k_live_source = float(prior.loss_per_day) + e, f"prior ({prior.source})"
            ok = np.isfinite(app) & (app > 0)
            t_ref = float(days[ok].min())
            m_ref = float(app[ok][np.argmin(days[ok])])
            live = m_ref * np.exp(-k_live * (days - t_ref)) if np.isfinite(k_live) else np.full(days.size, np.nan)
            unexplained = np.where(ok, 1.0 - np.minimum(1.0, live / np.where(ok, app, 1.0)), np.nan)
            q_frac = (
                fit.per_cell_fraction(days) if fit.doubling_source != "not identifiable" else np.full(days.size, np.nan)
            )
            tc.loc[sub.index, "cells_corrected"] = app / q_frac
            tc.loc[sub.index, "live_label_model"] = live
            tc.loc[sub.index, "cells_model"] = live / q_frac
            tc.loc[sub.index, "unexplained_fraction"] = unexplained
            limit_values = sub["detection_limit_cells"].to_numpy(float) if "detection_limit_cells" in sub else []
            limit = float(np.nanmedian(limit_values)) if np.isfinite(limit_values).any() else float("nan")
            last = int(np.where(ok)[0][np.argmax(days[ok])])
            flag, reason = None, ""
            if not np.isfinite(k_live):
                reason = "not assessable: needs cell counts or assumed kinetics (cell loss rate) for this site"
            elif ok.sum() < 2:
                reason = "not assessable: signal at fewer than 2 timepoints"
            else:
                below = np.isfinite(limit) and live[last] < limit <= app[last]
                flag = bool(unexplained[last] >= flag_fraction or below)
                share = f"{100 * unexplained[last]:.0f}%"
                if flag:
                    reason = (
                        f"signal persists on day {days[last]:g} ({app[last] / m_ref:.2f}x day {t_ref:g}) while "
                        f"the live-cell model leaves {share} of it unexplained"
                        + (" and puts the live cells below the detection limit" if below else "")
                        + ": label held by host macrophages (false positive for cell counts)"
                    )
                elif unexplained[last] >= 0.5:
                    reason = f"mixed: up to {share} of the signal on day {days[last]:g} may be macrophage-held"
                else:
                    reason = "signal consistent with live labelled cells"
            per_readout.append((readout, flag, unexplained[last] if np.isfinite(k_live) else np.nan))
            row = {
                "site": site,
                "readout": readout,
                "n_points": fit.n_points,
                "status": fit.status,
                "t_ref_days": fit.t_ref_days,
                "label_ref_cells": fit.label_ref,
                "k_signal_per_day": fit.k_per_day,
                "k_signal_se": fit.k_se,
                "k_live_per_day": k_live,
                "k_live_source": k_live_source,
                "doubling_days": fit.doubling_days,
                "doubling_se": fit.doubling_se,
                "doubling_source": fit.doubling_source,
                "efflux_per_day": e,
                "rms_log_residual": fit.rms_log_residual,
                "detection_limit_cells": limit,
                "day_below_limit": detection_day(t_ref, m_ref, k_live, limit),
                "day_per_cell_below_limit": dilution_day(
                    fit.doubling_days if fit.doubling_source != "not identifiable" else None, per_cell_limit_fraction
                ),
                "unexplained_fraction_last": unexplained[last] if np.isfinite(k_live) else np.nan,
                "macrophage_flag": flag,
                "flag_reason": reason,
                "missing_days": ",".join(missing),
                "message": fit.message,
            }
            if missing:
                row["message"] = (
                    row["message"] + f" No signal/missing on day(s) {', '.join(missing)}: "
                    "fitted without them (partial)."
                ).strip()
            fit_rows.append(row)
        # site summary: majority of the readouts that could assess it (ties: the preferred readout)
        assessed = [(r, f, u) for r, f, u in per_readout if f is not None]
        if assessed:
            votes = sum(1 for _, f, _ in assessed if f)
            flag = votes * 2 > len(assessed) or (votes * 2 == len(assessed) and assessed[0][1])
            us = [u for _, _, u in assessed if np.isfinite(u)]
            u_med = float(np.median(us)) if us else float("nan")
        else:
            flag, u_med = None, float("nan")
        first = next((r for r in fit_rows if r["site"] == site and r.get("status") == "fitted"), None)
        first = first or next((r for r in fit_rows if r["site"] == site), {})
        site_rows.append(
            {
                "site": site,
                "readouts": ", ".join(r for r, _, _ in per_readout),
                "doubling_days": first.get("doubling_days", np.nan),
                "doubling_source": first.get("doubling_source", ""),
                "k_signal_per_day": first.get("k_signal_per_day", np.nan),
                "k_live_per_day": first.get("k_live_per_day", np.nan),
                "day_below_limit": first.get("day_below_limit", np.nan),
                "unexplained_fraction_last": u_med,
                "macrophage_flag": flag,
                "flag_reason": next(
                    (
                        r["flag_reason"]
                        for r in fit_rows
                        if r["site"] == site and r.get("macrophage_flag") == flag and r.get("flag_reason")
                    ),
                    first.get("flag_reason", first.get("message", "")),
                ),
            }
        )
    fits = pd.DataFrame(fit_rows)
    sites = pd.DataFrame(site_rows)
    too_few = fits[fits.get("status", pd.Series(dtype=str)) == "too few timepoints"] if len(fits) else fits
    if len(too_few):
        notes.append(
            f"{len(too_few)} site/readout time course(s) have fewer than {min_points} timepoints: "
            "no model fit, raw values reported."
        )
    for note in notes:
        warnings.warn(note, ImmunotrackWarning, stacklevel=2)
    params = {
        "flag_fraction": flag_fraction,
        "min_points": min_points,
        "efflux_per_day": efflux,
        "per_cell_limit_fraction": per_cell_limit_fraction,
        "kinetics": {k: asdict(v) for k, v in kinetics.items()},
        "cell_counts": None if counts is None else int(len(counts)),
    }
    return LongitudinalResult(tc, fits, sites, params, notes)


# --------------------------------------------------------------------------- clusters over time
def register_timepoints(
    anatomy: Mapping[float, Volume], *, reference_day: float | None = None, progress=None, **register_kwargs
):
    """Rigidly register every timepoint's anatomy to the first one (or ``reference_day``).

    Each day's anatomy is registered to the reference day's with
    :func:`napari_immunotrack.registration.register` (rigid, docs/methods/registration.md).

    Parameters
    ----------
    anatomy : {day: Volume}
        One anatomical volume per day.
    reference_day : float, optional
        The day the others are registered to (default: the first day).
    progress : callable, optional
        ``progress(fraction, message)`` callback.
    **register_kwargs
        Keyword arguments of :func:`napari_immunotrack.registration.register`.

    Returns
    -------
    transforms : dict
        ``{day: 4x4 array}``, reference world -> that day's world (RAS mm); identity for the reference.
    errors : dict
        ``{day: one-line reason}`` for timepoints that could not be registered (left out of transforms).

    Raises
    ------
    InputError
        No anatomy, or a reference day without anatomy.

    Examples
    --------
    >>> z, y, x = np.mgrid[:16, :16, :16]
    >>> def blob(c):
    ...     return 100 * np.exp(-((z - c[0]) ** 2 + 0.5 * (y - c[1]) ** 2 + 2 * (x - c[2]) ** 2) / 20.0)
    >>> day0 = Volume((blob((8, 8, 8)) + 0.5 * blob((5, 10, 6))).astype(np.float32), np.eye(4), "MR")
    >>> moved = np.eye(4)
    >>> moved[:3, 3] = [2.0, 0.0, 0.0]                     # the same anatomy placed 2 mm along x
    >>> transforms, errors = register_timepoints({0.0: day0, 3.0: day0.replace(affine=moved)})
    >>> (np.round(transforms[3.0][:3, 3], 1) + 0.0).tolist(), errors
    ([2.0, 0.0, 0.0], {})
    """
    from .. import progress as _progress
    from ..registration import register

    if not anatomy:
        raise InputError("no timepoint to register; give at least one anatomical volume.")
    days = sorted(anatomy)
    ref_day = days[0] if reference_day is None else float(reference_day)
    if ref_day not in anatomy:
        raise InputError(f"reference day {ref_day:g} has no anatomy; days are {[f'{d:g}' for d in days]}.")
    transforms, errors = {ref_day: np.eye(4)}, {}
    others = [d for d in days if d != ref_day]
    for i, d in enumerate(others):
        _progress.report(progress, i / max(len(others), 1), f"registering day {d:g} to day {ref_day:g}")
        try:
            result = register(anatomy[ref_day], anatomy[d], "rigid", **register_kwargs)
            transforms[d] = np.asarray(result.fixed_to_moving, float)
        except InputError as exc:
            errors[d] = str(exc)
    _progress.report(progress, 1.0, "timepoints registered")
    return transforms, errors


def track_clusters(
    cluster_tables: Mapping[float, object],
    transforms: Mapping[float, np.ndarray] | None = None,
    max_distance_mm: float = 1.5,
    value_columns=("volume_mm3", "mean_signal_norm"),
):
    """Follow clusters across timepoints by their centroids in the reference world.

    Parameters
    ----------
    cluster_tables : {day: DataFrame with ``label, centroid_x_mm, centroid_y_mm, centroid_z_mm``}.
    transforms : {day: reference world -> that day's world}; a day without a transform is left
        out (it could not be registered) and its rows are reported with status "not registered".
    max_distance_mm : largest centroid shift still counted as the same cluster.
    value_columns : columns of the cluster tables carried into the track table (those present).

    Returns
    -------
    DataFrame ``track, day, label, status, centroid_{x,y,z}_mm`` (reference world) and ``value_columns``;
    status "present", "missing" (the track had no cluster that day; label 0, the track's last position)
    or "not registered" (track 0, centroids in that day's own world). Clusters are matched greedily,
    closest pairs first, to each track's last position.

    Examples
    --------
    >>> import pandas as pd
    >>> t = {1.0: pd.DataFrame({"label": [1], "centroid_x_mm": [0.0], "centroid_y_mm": [0.0],
    ...                         "centroid_z_mm": [0.0], "volume_mm3": [2.0]}),
    ...      3.0: pd.DataFrame({"label": [4], "centroid_x_mm": [0.3], "centroid_y_mm": [0.0],
    ...                         "centroid_z_mm": [0.0], "volume_mm3": [1.0]})}
    >>> track_clusters(t)[["track", "label"]].values.tolist()
    [[1, 1], [1, 4]]
    """
    import pandas as pd

    if max_distance_mm <= 0:
        raise InputError(f"max_distance_mm={max_distance_mm} must be > 0 mm.")
    days = sorted(float(d) for d in cluster_tables)
    tracks: list = []  # each: {"pos": last position, "rows": {day: row}}
    out = []
    cols = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    for d in days:
        df = cluster_tables[d]
        if df is None or not len(df):
            continue
        if not set(cols) <= set(df.columns):
            raise InputError(f"the cluster table of day {d:g} has no centroid columns {cols}.")
        if transforms is not None and d not in transforms:
            for _, r in df.iterrows():
                out.append(
                    {
                        "track": 0,
                        "day": d,
                        "label": int(r["label"]),
                        "status": "not registered",
                        **{c: float(r[c]) for c in cols},
                        **{v: float(r[v]) for v in value_columns if v in df},
                    }
                )
            continue
        pts = df[cols].to_numpy(float)
        if transforms is not None:
            inv = np.linalg.inv(transforms[d])  # that day's world -> reference world
            pts = pts @ inv[:3, :3].T + inv[:3, 3]
        free = set(range(len(df)))
        # greedy: closest pairs first, so two clusters never claim one track
        pairs = sorted(
            ((float(np.linalg.norm(pts[i] - tr["pos"])), i, j) for i in range(len(df)) for j, tr in enumerate(tracks)),
            key=lambda p: p[0],
        )
        used_tracks = set()
        for dist, i, j in pairs:
            if dist > max_distance_mm:
                break
            if i in free and j not in used_tracks:
                free.discard(i)
                used_tracks.add(j)
                tracks[j]["rows"][d] = (i, pts[i])
                tracks[j]["pos"] = pts[i]
        for i in sorted(free):
            tracks.append({"pos": pts[i], "rows": {d: (i, pts[i])}})
        for tr in tracks:
            if d in tr["rows"]:
                i, p = tr["rows"][d]
                r = df.iloc[i]
                tr.setdefault("out", {})[d] = {
                    "label": int(r["label"]),
                    "status": "present",
                    **dict(zip(cols, map(float, p))),
                    **{v: float(r[v]) for v in value_columns if v in df.columns},
                }
    registered_days = [d for d in days if transforms is None or d in transforms]
    for j, tr in enumerate(tracks, start=1):
        first = min(tr["rows"])
        for d in registered_days:
            if d < first:
                continue
            if d in tr.get("out", {}):
                out.append({"track": j, "day": d, **tr["out"][d]})
            else:
                out.append(
                    {
                        "track": j,
                        "day": d,
                        "label": 0,
                        "status": "missing",
                        **dict(zip(cols, map(float, tr["pos"]))),
                        **{v: np.nan for v in value_columns},
                    }
                )
    cols_out = ["track", "day", "label", "status"] + cols + list(value_columns)
    table = pd.DataFrame(out, columns=cols_out)
    return table.sort_values(["track", "day"], kind="stable").reset_index(drop=True)
