"""Where labelled cells and their label are, day by day.

See docs/methods/simulator.md#time-course-where-cells-and-label-are-day-by-day.

A compartment model, integrated numerically (RK4, step 0.005 day), for each
injected cell population:

- All cells start in a *circulating* pool (intravenous injection; the first
  pass traps most of them in the lungs, ``lung_fraction(t) = exp(-t / tau_lung)``
  of the pool).
- Cells leave the pool into each site s at rate ``k_in[s]`` (1/day) and die
  in the pool at ``death["circulation"]``.
- In a site they divide at ``ln 2 / T_d[s]`` (no division where T_d is
  None) and die at ``death[s]`` (1/day).
- Label (any of: iron pg, 19F atoms, 89Zr or 111In Bq-at-injection, dye
  units, dual-mode agent fmol) is **conserved by division** (the label per
  cell halves at each division: q = q0 2^(-n)), lost from live cells by
  exocytosis/efflux at ``exocytosis[label]`` (1/day), and moved with cells.
- Label of cells that die is taken up by host macrophages *at the same
  site* (the false-positive signal that stays without live cells); a fraction
  ``retained[label]`` of exocytosed label is taken up locally too, the rest
  is released (free radiometal goes to bone, liver and kidneys; other labels
  are cleared). Macrophage-held label is degraded at ``macrophage_loss[label]``.
  Dying circulating cells feed the macrophages of the liver (70 %) and
  spleen (30 %).
- Radioactive decay is *not* in these amounts: radiolabels are tracked as
  Bq at injection and decayed to scan time by the imaging code, so total
  activity in the body is the injected activity times 2^(-t/T1/2) (no
  excretion is modelled).

The rates are a plausible scenario for CAR-T cells homing to a tumour and
its draining node and a dendritic-cell vaccine draining from a
subcutaneous depot to its node; they are not fitted to data. Change them
through :class:`Population`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: Labels the model tracks and their units (per cell at injection).
LABEL_UNITS = {
    "iron": "pg Fe",
    "f19": "19F atoms",
    "zr89": "Bq (at injection)",
    "in111": "Bq (at injection)",
    "dye": "fluorescence units",
    "dual_mode": "fmol metal",
}

#: Where released (free) radiometal goes (fractions).
FREE_LABEL_SINK = {
    "zr89": {"bone": 0.8, "liver": 0.2},  # free 89Zr is osteophilic
    "in111": {"liver": 0.4, "kidney_left": 0.15, "kidney_right": 0.15, "bone": 0.3},
}


@dataclass
class Population:
    """An injected cell population and its kinetics (rates in 1/day).

    Parameters
    ----------
    name : str
    cells : cells injected.
    label_per_cell : {label: amount per cell at injection} (see :data:`LABEL_UNITS`).
    route : "iv" (circulating pool first) or "depot" (cells start in ``depot_site``).
    k_in : {site: homing rate from the circulating pool (iv) or from the depot}.
    doubling_days : {site: division time T_d in days, or None (no division)}.
    death : {site or "circulation" or "depot": death rate}.
    exocytosis, retained, macrophage_loss : {label: value}.
    tau_lung_days : lung first-pass trapping time constant (iv).
    """

    name: str
    cells: float
    label_per_cell: dict[str, float]
    route: str = "iv"
    depot_site: str = ""
    k_in: dict[str, float] = field(default_factory=dict)
    doubling_days: dict[str, float | None] = field(default_factory=dict)
    death: dict[str, float] = field(default_factory=dict)
    exocytosis: dict[str, float] = field(default_factory=dict)
    retained: dict[str, float] = field(default_factory=dict)
    macrophage_loss: dict[str, float] = field(default_factory=dict)
    tau_lung_days: float = 0.25

    def __post_init__(self):
        if not np.isfinite(self.cells) or self.cells < 0:
            raise InputError(f"cells={self.cells} for population {self.name!r} is impossible; give cells >= 0.")
        for lab, q in self.label_per_cell.items():
            if lab not in LABEL_UNITS:
                raise InputError(f"label {lab!r} is unknown; use one of {sorted(LABEL_UNITS)}.")
            if not np.isfinite(q) or q < 0:
                raise InputError(
                    f"label_per_cell[{lab!r}]={q} is impossible; give an amount >= 0 ({LABEL_UNITS[lab]} per cell)."
                )
        if self.route not in ("iv", "depot"):
            raise InputError(f"route={self.route!r} must be 'iv' or 'depot'.")
        for d in (self.k_in, self.death, self.exocytosis, self.macrophage_loss):
            for k, v in d.items():
                if v < 0:
                    raise InputError(f"rate {k}={v} in population {self.name!r} is negative; rates are >= 0 per day.")

    @property
    def sites(self) -> list[str]:
        return list(self.k_in)


def car_t_population(
    cells: float = 5e6,
    iron_pg: float = 5.0,
    f_per_cell: float = 1e12,
    zr89_bq: float = 0.07,
    in111_bq: float = 0.1,
    dye: float = 1.0,
) -> Population:
    """Intravenous CAR-T cells labelled with SPION, PFC (19F), 89Zr-/111In-oxine and a NIR dye.

    Carrying all labels at once is a simulation convenience (each modality
    gets a readout of the same cells); per-cell loads are typical of T cells
    (1-5 pg Fe, 1e11-1e12 19F atoms, ~0.07 Bq 89Zr per cell, Weist et al.,
    J Nucl Med 2018 59:1531). Rates: ``docs/methods/simulator.md#time-course-where-cells-and-label-are-day-by-day``.

    Parameters
    ----------
    cells : float, default 5e6
        Cells injected.
    iron_pg : float, default 5.0
        Iron per cell, pg.
    f_per_cell : float, default 1e12
        19F atoms per cell.
    zr89_bq : float, default 0.07
        89Zr activity per cell at injection, Bq.
    in111_bq : float, default 0.1
        111In activity per cell at injection, Bq.
    dye : float, default 1.0
        Fluorescent dye per cell, a.u.

    Returns
    -------
    Population
        Intravenous route, homing rates to liver, spleen, tumour and nodes, division in the tumour
        and nodes, death, exocytosis and macrophage handling of each label.

    Examples
    --------
    >>> car_t = car_t_population(cells=1e6)
    >>> car_t.route, car_t.cells, car_t.label_per_cell["iron"], car_t.doubling_days["tumour"]
    ('iv', 1000000.0, 5.0, 2.0)
    """
    return Population(
        name="car_t",
        cells=cells,
        label_per_cell={"iron": iron_pg, "f19": f_per_cell, "zr89": zr89_bq, "in111": in111_bq, "dye": dye},
        route="iv",
        # the left inguinal node is contralateral to the tumour: no CAR-T homing (it drains the DC vaccine)
        k_in={
            "liver": 0.8,
            "spleen": 0.6,
            "tumour": 0.10,
            "ln_inguinal_right": 0.06,
            "ln_iliac": 0.03,
            "ln_inguinal_left": 0.0,
        },
        doubling_days={"tumour": 2.0, "ln_inguinal_right": 1.5, "ln_iliac": 2.5},
        death={
            "circulation": 0.05,
            "liver": 0.5,
            "spleen": 0.2,
            "tumour": 0.1,
            "ln_inguinal_right": 0.05,
            "ln_iliac": 0.05,
            "ln_inguinal_left": 0.1,
        },
        exocytosis={"iron": 0.03, "f19": 0.02, "zr89": 0.05, "in111": 0.08, "dye": 0.05},
        retained={"iron": 0.8, "f19": 0.5, "zr89": 0.0, "in111": 0.0, "dye": 0.3},
        macrophage_loss={"iron": 0.01, "f19": 0.03, "zr89": 0.0, "in111": 0.0, "dye": 0.15},
    )


def dc_vaccine_population(cells: float = 2e6, agent_fmol: float = 2.0) -> Population:
    """Dendritic cells labelled with a T1-T2 dual-mode agent, injected subcutaneously (left flank).

    They drain slowly to the left inguinal node; DCs do not divide.

    Parameters
    ----------
    cells : float, default 2e6
        Cells injected.
    agent_fmol : float, default 2.0
        Dual-mode agent per cell, fmol of metal.

    Returns
    -------
    Population
        Route "depot" at the site "dc_depot", homing only to the left inguinal node.

    Examples
    --------
    >>> dc = dc_vaccine_population()
    >>> dc.route, dc.depot_site, dc.label_per_cell, dc.k_in
    ('depot', 'dc_depot', {'dual_mode': 2.0}, {'ln_inguinal_left': 0.04})
    """
    return Population(
        name="dc_vaccine",
        cells=cells,
        label_per_cell={"dual_mode": agent_fmol},
        route="depot",
        depot_site="dc_depot",
        k_in={"ln_inguinal_left": 0.04},
        doubling_days={},
        death={"depot": 0.08, "ln_inguinal_left": 0.05},
        exocytosis={"dual_mode": 0.05},
        retained={"dual_mode": 0.5},
        macrophage_loss={"dual_mode": 0.05},
    )


def _check_times(times_days: Sequence[float]) -> np.ndarray:
    t = np.asarray(list(times_days), float)
    if t.size == 0:
        raise InputError("timepoints_days is empty; give at least one time (days after injection).")
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise InputError(
            f"timepoints_days={t.tolist()} has a time before injection; times are days after injection (>= 0)."
        )
    return t


def simulate_population(pop: Population, times_days: Sequence[float], dt: float = 0.005) -> dict[float, dict]:
    """State of ``pop`` at each time (days after injection).

    The compartment equations are integrated with fixed-step RK4
    (``docs/methods/simulator.md#time-course-where-cells-and-label-are-day-by-day``).

    Parameters
    ----------
    pop : Population
        E.g. :func:`car_t_population` or :func:`dc_vaccine_population`.
    times_days : sequence of float
        Days after injection (>= 0).
    dt : float, default 0.005
        Integration step, days.

    Returns
    -------
    {t: {"time_days", "sites": {site: {"live_cells", "label_live" {label: amount},
         "label_macrophage" {label: amount}, "label_per_live_cell" {label: amount}, "mean_divisions"}},
         "source": {"name" ("circulation" or "depot"), "cells", "label_live", "lung_trapped_fraction"},
         "free_label" {label: amount}, "cleared_label" {label: amount}, "injected_label" {label: amount},
         "label_balance" {label: amount} (equals ``injected_label``: conservation)}}

    Examples
    --------
    >>> course = simulate_population(car_t_population(), [1, 3], dt=0.05)
    >>> {t: round(state["sites"]["tumour"]["live_cells"]) for t, state in course.items()}
    {1.0: 287731, 3.0: 553398}
    >>> day3 = course[3.0]
    >>> round(day3["label_balance"]["iron"] / day3["injected_label"]["iron"], 9), round(day3["sites"]["tumour"]["mean_divisions"], 3)
    (1.0, 1.346)
    """
    times = _check_times(times_days)
    sites = pop.sites
    labels = list(pop.label_per_cell)
    n_s, n_l = len(sites), len(labels)
    # state: [N_src, N_sites..., L_src[l], L_sites[s,l]..., M_sites[s,l]..., M_liver_spleen from src death,
    #         free[l], cleared[l]]
    src = "circulation" if pop.route == "iv" else "depot"
    k_in = np.array([pop.k_in[s] for s in sites])
    rho = np.array([np.log(2) / pop.doubling_days[s] if pop.doubling_days.get(s) else 0.0 for s in sites])
    delta = np.array([pop.death.get(s, 0.0) for s in sites])
    d_src = pop.death.get(src, 0.0)
    e = np.array([pop.exocytosis.get(l, 0.0) for l in labels])
    phi = np.array([pop.retained.get(l, 0.0) for l in labels])
    kap = np.array([pop.macrophage_loss.get(l, 0.0) for l in labels])
    # macrophage pools: one per site plus "liver"/"spleen" sinks of dying circulating cells (or the depot's own)
    mac_sites = list(dict.fromkeys(sites + (["liver", "spleen"] if src == "circulation" else [pop.depot_site])))
    n_m = len(mac_sites)
    src_death_to = {"liver": 0.7, "spleen": 0.3} if src == "circulation" else {pop.depot_site: 1.0}
    src_w = np.array([src_death_to.get(s, 0.0) for s in mac_sites])
    site_to_mac = np.array([mac_sites.index(s) for s in sites])

    def unpack(y):
        i = 0
        n0 = y[i]
        i += 1
        ns = y[i : i + n_s]
        i += n_s
        l0 = y[i : i + n_l]
        i += n_l
        ls = y[i : i + n_s * n_l].reshape(n_s, n_l)
        i += n_s * n_l
        ms = y[i : i + n_m * n_l].reshape(n_m, n_l)
        i += n_m * n_l
        free = y[i : i + n_l]
        i += n_l
        cleared = y[i : i + n_l]
        return n0, ns, l0, ls, ms, free, cleared

    def deriv(y):
        n0, ns, l0, ls, ms, free, cleared = unpack(y)
        dn0 = -(k_in.sum() + d_src) * n0
        dns = k_in * n0 + (rho - delta) * ns
        dl0 = -(k_in.sum() + d_src + e) * l0
        dls = k_in[:, None] * l0[None] - (delta[:, None] + e[None]) * ls
        dms = -kap[None] * ms
        np.add.at(dms, site_to_mac, delta[:, None] * ls + phi[None] * e[None] * ls)
        dms += src_w[:, None] * (d_src * l0)[None]
        # exocytosed label of the source pool: retained part to its macrophage sinks, the rest released
        dms += src_w[:, None] * (phi * e * l0)[None]
        released = (1 - phi) * e * (ls.sum(0) + l0)
        dfree = released
        dcleared = (kap[None] * ms).sum(0)
        return np.concatenate([[dn0], dns, dl0, dls.ravel(), dms.ravel(), dfree, dcleared])

    q0 = np.array([pop.label_per_cell[l] for l in labels])
    y = np.zeros(1 + n_s + n_l + n_s * n_l + n_m * n_l + 2 * n_l)
    y[0] = pop.cells
    y[1 + n_s : 1 + n_s + n_l] = pop.cells * q0
    out = {}
    t = 0.0
    for target in sorted(set(times.tolist())):
        while t < target - 1e-12:
            h = min(dt, target - t)
            k1 = deriv(y)
            k2 = deriv(y + h / 2 * k1)
            k3 = deriv(y + h / 2 * k2)
            k4 = deriv(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        n0, ns, l0, ls, ms, free, cleared = unpack(y)
        state = {"sites": {}, "time_days": float(target)}
        for i, s in enumerate(sites):
            live = float(ns[i])
            state["sites"][s] = {
                "live_cells": live,
                "label_live": {l: float(ls[i, j]) for j, l in enumerate(labels)},
                "label_per_live_cell": {
                    l: (float(ls[i, j] / live) if live > 1e-9 else 0.0) for j, l in enumerate(labels)
                },
                "label_macrophage": {l: float(ms[mac_sites.index(s), j]) for j, l in enumerate(labels)},
            }
            q = state["sites"][s]["label_per_live_cell"]
            ref = labels[0]
            state["sites"][s]["mean_divisions"] = float(np.log2(q0[0] / q[ref])) if q[ref] > 0 and q0[0] > 0 else None
        for s in mac_sites:
            if s not in state["sites"]:
                state["sites"][s] = {
                    "live_cells": 0.0,
                    "label_live": {l: 0.0 for l in labels},
                    "label_per_live_cell": {l: 0.0 for l in labels},
                    "label_macrophage": {l: float(ms[mac_sites.index(s), j]) for j, l in enumerate(labels)},
                    "mean_divisions": None,
                }
        lung = float(np.exp(-target / pop.tau_lung_days)) if src == "circulation" else 0.0
        state["source"] = {
            "name": src,
            "cells": float(n0),
            "label_live": {l: float(l0[j]) for j, l in enumerate(labels)},
            "lung_trapped_fraction": lung,
        }
        state["free_label"] = {l: float(free[j]) for j, l in enumerate(labels)}
        state["cleared_label"] = {l: float(cleared[j]) for j, l in enumerate(labels)}
        state["injected_label"] = {l: float(pop.cells * q0[j]) for j, l in enumerate(labels)}
        total = {}
        for j, l in enumerate(labels):
            total[l] = float(l0[j] + ls[:, j].sum() + ms[:, j].sum() + free[j] + cleared[j])
        state["label_balance"] = total  # equals injected_label (conservation check)
        out[float(target)] = state
    return out
