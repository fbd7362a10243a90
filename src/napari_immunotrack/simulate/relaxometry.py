"""Relaxometry series with known truth: multi-echo GRE and SE, VFA, saturation and inversion recovery.

Each function turns truth maps (amplitude and rates, arrays of any shape) into
a stack ``(n_samples,) + shape`` of Rician magnitudes (noise sigma per channel,
see :func:`~napari_immunotrack.simulate.mri.rician`). :func:`qmri_scene` builds
a complete set on the sample study's mouse, in the study's MRI world, with an
iron-oxide concentration map from the labelled-cell foci of a session, and
returns Volumes (4D series with their sampling lists in the metadata, as the
readers deliver them) and the truth maps. Models: docs/methods/relaxometry.md.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = multi_echo_gre(np.array([1000.0]), np.array([50.0]), [2.0, 4.0], 0.0, rng)
>>> [round(float(v), 2) for v in s[:, 0]]
[904.84, 818.73]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..analysis.relaxometry import MOLAR_MASS, agent_relaxivity, epg_cpmg
from ..errors import InputError
from ..volume import Volume
from .mri import rician


def _times(values, what: str) -> np.ndarray:
    x = np.asarray(values, float).ravel()
    if x.size < 2 or np.any(~np.isfinite(x)) or np.any(x < 0):
        raise InputError(f"{what} must be at least two finite values >= 0.")
    return x


def _noisy(clean: np.ndarray, sigma: float, rng) -> np.ndarray:
    return rician(clean, float(sigma), rng) if sigma > 0 else np.abs(clean).astype(np.float32)


def multi_echo_gre(s0, r2s_per_s, te_ms: Sequence[float], sigma: float, rng) -> np.ndarray:
    """Multi-echo gradient echo: ``S0 exp(-TE R2*)`` plus Rician noise, shape (n_echoes,) + shape.

    See ``docs/methods/relaxometry.md#t2star``.

    Parameters
    ----------
    s0 : float or array
        Signal at TE = 0.
    r2s_per_s : float or array
        R2*, 1/s (broadcast with ``s0``).
    te_ms : sequence of float
        Echo times, ms (at least two, >= 0).
    sigma : float
        Rician noise SD per channel (0: noiseless magnitude).
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    ndarray of float32
        One image per echo.

    Raises
    ------
    InputError
        Fewer than two echo times, or negative / non-finite ones.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> multi_echo_gre(1000.0, 50.0, [2, 4, 8], sigma=0, rng=rng).astype(float).round(1).tolist()   # T2* 20 ms
    [904.8, 818.7, 670.3]
    """
    te = _times(te_ms, "echo times")
    s0, r2s = np.broadcast_arrays(np.asarray(s0, float), np.asarray(r2s_per_s, float))
    clean = s0[None] * np.exp(-te.reshape((-1,) + (1,) * s0.ndim) / 1000.0 * r2s[None])
    return _noisy(clean, sigma, rng)


def multi_echo_se(
    s0,
    r2_per_s,
    esp_ms: float,
    n_echoes: int,
    sigma: float,
    rng,
    b1=1.0,
    t1_ms: float = 1000.0,
    refocusing_deg: float = 180.0,
) -> np.ndarray:
    """CPMG multi-echo spin echo at ``ESP, 2 ESP, ...``; with ``b1 != 1`` the stimulated echoes of
    imperfect refocusing are included by the extended phase graph
    (:func:`~napari_immunotrack.analysis.relaxometry.epg_cpmg`, checked against an isochromat
    Bloch simulation in the tests; ``docs/methods/relaxometry.md#epg``).

    Parameters
    ----------
    s0 : float or array
        Signal scale (equilibrium magnetisation).
    r2_per_s : float or array
        R2, 1/s.
    esp_ms : float
        Echo spacing, ms.
    n_echoes : int
        Number of echoes.
    sigma : float
        Rician noise SD (0: noiseless).
    rng : numpy.random.Generator
        Noise source.
    b1 : float or array, default 1.0
        Relative B1: the refocusing angle actually reached is ``b1 * refocusing_deg``.
    t1_ms : float, default 1000.0
        T1 used for the stimulated-echo pathways, ms.
    refocusing_deg : float, default 180.0
        Nominal refocusing flip angle, degrees.

    Returns
    -------
    ndarray of float32
        Shape ``(n_echoes,) + shape``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> multi_echo_se(1000.0, 1000 / 30, 10, 4, 0, rng).astype(float).round(1).tolist()      # T2 30 ms
    [716.5, 513.4, 367.9, 263.6]
    >>> multi_echo_se(1000.0, 1000 / 30, 10, 4, 0, rng, b1=0.8).astype(float).round(1).tolist()
    [648.1, 542.6, 336.0, 290.9]
    """
    s0, r2, b1 = np.broadcast_arrays(np.asarray(s0, float), np.asarray(r2_per_s, float), np.asarray(b1, float))
    t2 = np.where(r2 > 0, 1000.0 / np.maximum(r2, 1e-9), 1e9)
    trains = epg_cpmg(t2.ravel(), b1.ravel(), float(esp_ms), int(n_echoes), t1_ms, refocusing_deg)
    clean = s0.ravel()[None] * trains
    return _noisy(clean.reshape((int(n_echoes),) + s0.shape), sigma, rng)


def spgr(m0, r1_per_s, flip_deg, tr_ms: float, b1=1.0) -> np.ndarray:
    """Spoiled gradient-echo steady state ``M0 sin a (1 - E1) / (1 - cos a E1)`` (TE -> 0), a = b1 x flip.

    ``E1 = exp(-TR R1)``; see ``docs/methods/relaxometry.md#vfa``.

    Parameters
    ----------
    m0 : float or array
        Equilibrium magnetisation.
    r1_per_s : float or array
        R1, 1/s.
    flip_deg : float or sequence of float
        Nominal flip angles, degrees.
    tr_ms : float
        Repetition time, ms.
    b1 : float or array, default 1.0
        Relative B1 (scales the flip angle).

    Returns
    -------
    ndarray
        Shape ``(n_flips,) + shape``, noiseless.

    Examples
    --------
    >>> spgr(1000.0, 1 / 1.5, [5, 15, 30], tr_ms=15).round(2).tolist()      # T1 1.5 s
    [63.22, 58.95, 34.89]
    """
    flips = np.asarray(flip_deg, float).ravel()
    m0, r1, b1 = np.broadcast_arrays(np.asarray(m0, float), np.asarray(r1_per_s, float), np.asarray(b1, float))
    a = np.deg2rad(flips.reshape((-1,) + (1,) * m0.ndim)) * b1[None]
    e1 = np.exp(-float(tr_ms) / 1000.0 * r1)[None]
    return m0[None] * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


def vfa_series(m0, r1_per_s, flip_deg, tr_ms: float, sigma: float, rng, b1=1.0) -> np.ndarray:
    """Variable flip angle set: :func:`spgr` at each angle plus Rician noise.

    Parameters
    ----------
    m0, r1_per_s, flip_deg, tr_ms, b1
        As for :func:`spgr`.
    sigma : float
        Rician noise SD (0: noiseless).
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    ndarray of float32
        Shape ``(n_flips,) + shape``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> vfa_series(1000.0, 1 / 1.5, [5, 15, 30], 15, sigma=0, rng=rng).astype(float).round(2).tolist()
    [63.22, 58.95, 34.89]
    """
    return _noisy(spgr(m0, r1_per_s, flip_deg, tr_ms, b1), sigma, rng)


def saturation_recovery_series(m0, r1_per_s, t_ms, sigma: float, rng) -> np.ndarray:
    """``M0 (1 - exp(-t R1))`` at each delay after saturation, plus Rician noise.

    See ``docs/methods/relaxometry.md#sr``.

    Parameters
    ----------
    m0 : float or array
        Equilibrium magnetisation.
    r1_per_s : float or array
        R1, 1/s.
    t_ms : sequence of float
        Delays after saturation, ms (at least two, >= 0).
    sigma : float
        Rician noise SD (0: noiseless).
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    ndarray of float32
        Shape ``(n_delays,) + shape``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> saturation_recovery_series(1000.0, 1.0, [0, 500, 1000, 3000], 0, rng).astype(float).round(1).tolist()
    [0.0, 393.5, 632.1, 950.2]
    """
    t = _times(t_ms, "saturation times")
    m0, r1 = np.broadcast_arrays(np.asarray(m0, float), np.asarray(r1_per_s, float))
    clean = m0[None] * (1 - np.exp(-t.reshape((-1,) + (1,) * m0.ndim) / 1000.0 * r1[None]))
    return _noisy(clean, sigma, rng)


def inversion_recovery_series(m0, r1_per_s, ti_ms, sigma: float, rng, efficiency: float = 1.0) -> np.ndarray:
    """Magnitude inversion recovery ``|M0 (1 - (1 + efficiency) exp(-TI R1))|`` (long TR), plus Rician noise.

    See ``docs/methods/relaxometry.md#inversion-recovery``.

    Parameters
    ----------
    m0 : float or array
        Equilibrium magnetisation.
    r1_per_s : float or array
        R1, 1/s.
    ti_ms : sequence of float
        Inversion times, ms (at least two, >= 0).
    sigma : float
        Rician noise SD (0: noiseless magnitude).
    rng : numpy.random.Generator
        Noise source.
    efficiency : float, default 1.0
        Inversion efficiency (1: a perfect 180 degree inversion).

    Returns
    -------
    ndarray of float32
        Shape ``(n_ti,) + shape``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> inversion_recovery_series(1000.0, 1.0, [0, 693.147, 3000], 0, rng).astype(float).round(1).tolist()
    [1000.0, 0.0, 900.4]
    """
    ti = _times(ti_ms, "inversion times")
    m0, r1 = np.broadcast_arrays(np.asarray(m0, float), np.asarray(r1_per_s, float))
    clean = m0[None] * (1 - (1 + efficiency) * np.exp(-ti.reshape((-1,) + (1,) * m0.ndim) / 1000.0 * r1[None]))
    return _noisy(clean, sigma, rng)


def b1_field(
    shape, affine: np.ndarray, centre_mm=(0.0, 0.0, 0.0), falloff_mm: float = 40.0, peak: float = 1.05
) -> np.ndarray:
    """A smooth relative B1 map (surface-coil-like fall-off): ``peak x exp(-(r / falloff)^2)``.

    Parameters
    ----------
    shape : 3 ints
        Grid shape.
    affine : (4, 4) array
        Index -> world mm.
    centre_mm : 3 floats, default (0, 0, 0)
        Where B1 peaks, world mm.
    falloff_mm : float, default 40.0
        Distance at which B1 falls by a factor e, mm.
    peak : float, default 1.05
        Relative B1 at the centre.

    Returns
    -------
    ndarray
        Relative B1 (1 = the nominal flip angle), shape ``shape``.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> b1_field((1, 1, 5), grid_affine((1, 1, 5), 10.0)).round(3).tolist()     # x = -20 ... 20 mm
    [[[0.818, 0.986, 1.05, 0.986, 0.818]]]
    """
    idx = np.indices(shape, dtype=float).reshape(3, -1).T
    world = idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    r2 = ((world - np.asarray(centre_mm, float)) ** 2).sum(1)
    return (peak * np.exp(-r2 / falloff_mm**2)).reshape(shape)


def iron_concentration_map(shape, affine: np.ndarray, foci, supersample: int = 3) -> np.ndarray:
    """Iron (mM Fe) of cell foci spread as Gaussians: each focus ``{"centroid_ras_mm", "spread_mm", "iron_pg"}``.

    The Gaussian of SD ``spread_mm`` is integrated over each voxel (``supersample^3``
    points), so the map holds each focus's iron exactly up to the truncation at 3 SD:
    ``sum(C x V_voxel) x 55.845e-3 ug = iron``.

    Parameters
    ----------
    shape : 3 ints
        Grid shape.
    affine : (4, 4) array
        Index -> world mm.
    foci : iterable of dict
        ``centroid_ras_mm`` (world mm), ``spread_mm`` (Gaussian SD, mm) and ``iron_pg``; foci with
        no iron or no spread are skipped.
    supersample : int, default 3
        Sub-points per voxel along each axis.

    Returns
    -------
    ndarray of float64
        Iron concentration, mM Fe.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> focus = {"centroid_ras_mm": (0, 0, 0), "spread_mm": 0.6, "iron_pg": 1e6}         # 1 ug Fe
    >>> fe_mM = iron_concentration_map((12, 12, 12), grid_affine((12, 12, 12), 0.5), [focus])
    >>> round(float(fe_mM.sum()) * 0.5**3 * 55.845e-3, 4)                             # ug back
    1.0
    """
    out = np.zeros(shape, np.float64)
    aff = np.asarray(affine, float)
    voxel_mm3 = abs(np.linalg.det(aff[:3, :3]))
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    inv = np.linalg.inv(aff)
    for f in foci:
        c = np.asarray(f["centroid_ras_mm"], float)
        sd = float(f["spread_mm"])
        ug = float(f["iron_pg"]) * 1e-6
        if ug <= 0 or sd <= 0:
            continue
        reach = 3.0 * sd
        ci = inv[:3, :3] @ c + inv[:3, 3]
        half = np.ceil(reach / np.linalg.norm(aff[:3, :3], axis=0)).astype(int) + 1
        lo = np.maximum(np.floor(ci).astype(int) - half, 0)
        hi = np.minimum(np.ceil(ci).astype(int) + half + 1, shape)
        if np.any(hi <= lo):
            continue
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        pts = (grid[:, None, :] + sub[None]).reshape(-1, 3)
        world = pts @ aff[:3, :3].T + aff[:3, 3]
        d2 = ((world - c) ** 2).sum(1)
        dens = np.where(d2 <= reach**2, np.exp(-d2 / (2 * sd * sd)), 0.0).reshape(len(grid), -1).mean(1)
        total = dens.sum() * voxel_mm3
        if total <= 0:
            continue
        ug_per_mm3 = ug * dens / total
        # ug/mm^3 -> mM: 1 mM in 1 mm^3 holds molar_mass x 1e-3 ug
        conc = ug_per_mm3 / (MOLAR_MASS["Fe"] * 1e-3)
        out[tuple(grid.T)] += conc
    return out


def qmri_scene(
    seed: int = 0,
    day: float = 1.0,
    voxel_mm: float = 0.5,
    z_range_mm=(3.0, 16.0),
    snr: float = 20.0,
    field_t: float = 9.4,
    agent: str = "ferumoxytol",
    b1_peak: float = 1.05,
) -> dict:
    """Relaxometry series of the sample study's mouse at one session, with their truth.

    The mouse, its tissues and its labelled-cell foci are those of
    :func:`~napari_immunotrack.simulate.study.simulate_timepoint` (same seed);
    the grid is the study's MRI world at ``voxel_mm``, cropped to ``z_range_mm``
    (superior-inferior, RAS z) to keep files small. Iron from the foci is an
    iron-oxide agent (``agent``'s relaxivities at ``field_t``) added to the
    tissue rates: ``R = R_tissue + r C``.

    Parameters
    ----------
    seed : int, default 0
        Study seed (the mouse and its foci, as in the study simulator) and noise seed.
    day : float, default 1.0
        Session day after injection (sets where the cells and their iron are).
    voxel_mm : float, default 0.5
        Isotropic voxel, mm.
    z_range_mm : (low, high), default (3.0, 16.0)
        Superior-inferior range kept, RAS z mm.
    snr : float, default 20.0
        Muscle signal over the Rician noise SD.
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).
    agent : str, default "ferumoxytol"
        Iron-oxide agent whose relaxivities are used (``docs/methods/relaxometry.md#relaxivity``).
    b1_peak : float, default 1.05
        Relative B1 at the coil centre (:func:`b1_field`).

    Returns
    -------
    dict
        ``series``: {"MEGRE", "MESE", "VFA", "IR", "SR"} 4D Volumes with their sampling
        lists in the metadata (ms, deg) and ``NoiseSigma``; ``b1``: the relative B1
        Volume; ``baseline``: {"MEGRE": the same GRE without iron (pre-injection)};
        ``truth``: Volumes T2star_ms, T2_ms, T1_ms, R2star_per_s, R2star_baseline_per_s,
        R2_per_s, R1_per_s, Fe_mM, B1 and the tissue ``labels``; ``info``: JSON-ready
        protocol, noise sigma, relaxivity, foci, total iron in the field of view (ug).

    Examples
    --------
    >>> scene = qmri_scene(voxel_mm=1.5, z_range_mm=(3, 6))
    >>> scene["series"]["MEGRE"].shape, scene["info"]["noise_sigma"], sorted(scene["series"])
    ((8, 2, 16, 19), 50.0, ['IR', 'MEGRE', 'MESE', 'SR', 'VFA'])
    """
    from .phantom import grid_affine, property_luts
    from .study import (
        MRI_CENTER_MM,
        SIZES,
        StudyDesign,
        foci_state,
        make_subject,
        simulate_population,
    )

    design = StudyDesign()
    subject = make_subject(1, seed)
    full = SIZES["sample"]
    extent = np.array(full["mri_shape"], float) * full["mri_voxel"]  # (z, y, x) mm
    shape_full = tuple(int(round(e / voxel_mm)) for e in extent)
    aff_full = grid_affine(shape_full, voxel_mm, MRI_CENTER_MM)
    # crop along z (array axis 0 runs along RAS z)
    z = aff_full[2, 0] * np.arange(shape_full[0]) + aff_full[2, 3]
    keep = np.flatnonzero((z >= z_range_mm[0]) & (z <= z_range_mm[1]))
    if keep.size < 2:
        raise InputError(f"z_range_mm={z_range_mm} leaves no slice of the study's field of view.")
    shape = (int(keep.size),) + shape_full[1:]
    aff = aff_full.copy()
    aff[:3, 3] = aff_full[:3, :3] @ np.array([keep[0], 0, 0]) + aff_full[:3, 3]
    labels = subject.mouse.labels(shape, aff)
    luts = property_luts(field_t)
    pd, r1, r2, r2s = (luts[k][labels] for k in ("pd", "r1", "r2", "r2s"))
    foci = []
    if day > 0:
        tc = simulate_population(design.car_t, [day])
        dc = simulate_population(design.dc_vaccine, [day])
        for f in foci_state(subject, tc, dc, day):
            fe = f["label_live"].get("iron", 0.0) + f["label_macrophage"].get("iron", 0.0)
            if fe > 0:
                foci.append(
                    {
                        "centroid_ras_mm": [float(v) for v in f["center_mm"]],
                        "spread_mm": float(f["spread_mm"]),
                        "iron_pg": float(fe),
                        "site": f["site"],
                        "id": f["id"],
                    }
                )
    fe_mm = iron_concentration_map(shape, aff, foci) * (pd > 0)
    relax = agent_relaxivity(agent, field_t)
    r1_t, r2_t, r2s_t = r1 + relax.r1 * fe_mm, r2 + relax.r2 * fe_mm, r2s + relax.r2s * fe_mm
    m0 = 1000.0 / 0.75 * pd  # muscle (PD 0.75) = 1000
    sigma = 1000.0 / snr
    rng = np.random.default_rng(seed * 7919 + int(round(day * 100)))
    b1 = b1_field(shape, aff, centre_mm=(0.0, 8.0, 9.0), falloff_mm=45.0, peak=b1_peak)
    air = pd <= 0
    t1 = np.where(air, np.nan, 1000.0 / np.where(air, 1, r1_t))
    protocol = {
        "MEGRE": {
            "echo_times_ms": [2.0, 4.5, 7.0, 9.5, 12.0, 14.5, 17.0, 19.5],
            "repetition_time_ms": 800.0,
            "flip_deg": 30.0,
        },
        "MESE": {"echo_spacing_ms": 8.0, "n_echoes": 10, "repetition_time_ms": 3000.0, "refocusing_deg": 180.0},
        "VFA": {"flip_angles_deg": [3.0, 10.0, 20.0], "repetition_time_ms": 15.0},
        "IR": {"inversion_times_ms": [50.0, 250.0, 600.0, 1200.0, 2500.0, 5000.0], "repetition_time_ms": 10000.0},
        "SR": {"saturation_times_ms": [100.0, 300.0, 700.0, 1500.0, 3000.0, 6000.0]},
    }
    p = protocol
    # the GRE at long TR: its amplitude is PD-like; the series carries the T2* decay
    series = {}
    gre = multi_echo_gre(m0, r2s_t, p["MEGRE"]["echo_times_ms"], sigma, rng)
    pre = multi_echo_gre(m0, r2s, p["MEGRE"]["echo_times_ms"], sigma, rng)
    se_te = [p["MESE"]["echo_spacing_ms"] * (i + 1) for i in range(p["MESE"]["n_echoes"])]
    se = multi_echo_se(m0, r2_t, p["MESE"]["echo_spacing_ms"], p["MESE"]["n_echoes"], sigma, rng, b1=b1, t1_ms=1500.0)
    vfa = vfa_series(m0 * 20.0, r1_t, p["VFA"]["flip_angles_deg"], p["VFA"]["repetition_time_ms"], sigma, rng, b1=b1)
    ir = inversion_recovery_series(m0, r1_t, p["IR"]["inversion_times_ms"], sigma, rng)
    sr = saturation_recovery_series(m0, r1_t, p["SR"]["saturation_times_ms"], sigma, rng)
    base_meta = {"MagneticFieldStrength": field_t, "NoiseSigma": sigma, "Modality": "MR", "Units": "a.u."}

    def series_volume(data, name, **meta):
        return Volume(data.astype(np.float32), aff, "MR", "a.u.", dict(base_meta, **meta), name)

    series["MEGRE"] = series_volume(
        gre,
        "MEGRE",
        leading_axis="echo",
        echo_times_ms=p["MEGRE"]["echo_times_ms"],
        repetition_time_ms=800.0,
        ScanningSequence="GR",
        FlipAngle=30.0,
    )
    series["MESE"] = series_volume(
        se,
        "MESE",
        leading_axis="echo",
        echo_times_ms=se_te,
        repetition_time_ms=3000.0,
        ScanningSequence="SE",
        RefocusingFlipAngle=180.0,
    )
    series["VFA"] = series_volume(
        vfa,
        "VFA",
        leading_axis="flip",
        flip_angles_deg=p["VFA"]["flip_angles_deg"],
        repetition_time_ms=15.0,
        ScanningSequence="GR",
    )
    series["IR"] = series_volume(
        ir,
        "IR",
        leading_axis="inversion",
        inversion_times_ms=p["IR"]["inversion_times_ms"],
        repetition_time_ms=10000.0,
        ScanningSequence="IR",
    )
    series["SR"] = series_volume(
        sr, "SR", leading_axis="saturation", saturation_times_ms=p["SR"]["saturation_times_ms"], ScanningSequence="SR"
    )
    baseline = {
        "MEGRE": series_volume(
            pre,
            "MEGRE pre",
            leading_axis="echo",
            echo_times_ms=p["MEGRE"]["echo_times_ms"],
            repetition_time_ms=800.0,
            ScanningSequence="GR",
            FlipAngle=30.0,
        )
    }

    def truth_volume(arr, name, unit):
        return Volume(np.where(air, np.nan, arr).astype(np.float32), aff, "MR", unit, {"truth": True}, name)

    with np.errstate(divide="ignore"):
        truth = {
            "T2star_ms": truth_volume(1000.0 / np.where(air, 1, r2s_t), "T2* truth (ms)", "ms"),
            "T2_ms": truth_volume(1000.0 / np.where(air, 1, r2_t), "T2 truth (ms)", "ms"),
            "T1_ms": truth_volume(t1, "T1 truth (ms)", "ms"),
            "R2star_per_s": truth_volume(r2s_t, "R2* truth (1/s)", "1/s"),
            "R2star_baseline_per_s": truth_volume(r2s, "R2* baseline truth (1/s)", "1/s"),
            "R2_per_s": truth_volume(r2_t, "R2 truth (1/s)", "1/s"),
            "R1_per_s": truth_volume(r1_t, "R1 truth (1/s)", "1/s"),
            "Fe_mM": Volume(fe_mm.astype(np.float32), aff, "MR", "mM", {"truth": True}, "Fe truth (mM)"),
            "B1": Volume(b1.astype(np.float32), aff, "MR", "relative", {"truth": True}, "B1 truth"),
            "labels": Volume(labels.astype(np.uint8), aff, "SEG", "label", {}, "tissues"),
        }
    info = {
        "seed": seed,
        "day": day,
        "field_t": field_t,
        "snr": snr,
        "noise_sigma": sigma,
        "voxel_mm": voxel_mm,
        "shape": list(shape),
        "affine": aff.tolist(),
        "agent": agent,
        "relaxivity_per_mM_s": {"r1": relax.r1, "r2": relax.r2, "r2s": relax.r2s, "source": relax.source},
        "iron_ug_total_in_fov": float(fe_mm.sum() * abs(np.linalg.det(aff[:3, :3])) * MOLAR_MASS["Fe"] * 1e-3),
        "foci": foci,
        "protocol": protocol,
        "amplitude": "M0 = 1000 x PD / 0.75 (muscle 1000); VFA M0 x 20 (a 3D acquisition with more signal)",
        "models": "docs/methods/relaxometry.md",
    }
    return {
        "series": series,
        "b1": truth["B1"].replace(name="B1 map"),
        "baseline": baseline,
        "truth": truth,
        "info": info,
    }
