"""Simulated CEST series: Bloch-McConnell Z-spectra of tissues with a reporter-expressing cell depot.

Each tissue is a set of exchanging pools (water, amide, amine, NOE, semi-solid
MT and, in the depot, a reporter pool such as lysine-rich protein at 3.4 ppm).
Its Z-spectrum is the water z-magnetisation after continuous-wave saturation
of duration ``tsat`` at amplitude ``b1``, from the Bloch-McConnell equations
solved exactly (matrix exponential; :func:`bloch_mcconnell_z`), on a fine offset
grid. A voxel's spectrum is its tissue's spectrum shifted by the voxel's B0
offset (``Z_measured(dw) = Z(dw - B0)``), scaled by its M0 and given Rician
noise. The truth holds the B0 map (ppm), the tissue labels and, per tissue, the
reporter's and the amide's effect defined as in the tests: the spectrum without
the pool minus the spectrum with it, at the pool's offset (docs/methods/cest.md#validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..volume import Volume

#: 1H gyromagnetic ratio / 2 pi in MHz/T.
GAMMA_MHZ_PER_T = 42.57747892


@dataclass(frozen=True)
class BMPool:
    """A Bloch-McConnell pool: relative size ``f`` (to water), T1, T2 (s), exchange rate to water ``k`` (1/s) and
    chemical shift ``dw`` (ppm from water)."""

    name: str
    f: float
    t1: float
    t2: float
    k: float
    dw: float


@dataclass
class Tissue:
    """Water relaxation and exchanging pools of one tissue."""

    name: str
    t1: float
    t2: float
    pools: Sequence[BMPool] = field(default_factory=tuple)

    def without(self, pool: str) -> Tissue:
        """The same tissue without one pool (the reference of an effect)."""
        return Tissue(self.name, self.t1, self.t2, tuple(p for p in self.pools if p.name != pool))


def _pools_9t4(amide_f=0.0009, amine_f=0.0009, noe_f=0.005, mt_f=0.1):
    return (
        BMPool("amide", amide_f, 1.0, 0.1, 50.0, 3.5),
        BMPool("amine", amine_f, 1.0, 0.1, 800.0, 2.0),
        BMPool("noe", noe_f, 1.3, 0.005, 20.0, -3.5),
        BMPool("mt", mt_f, 1.0, 4e-5, 30.0, -2.5),
    )


#: Tissues of the sample (9.4 T): muscle, tumour and an LRP-expressing cell depot in the tumour.
TISSUES: dict[str, Tissue] = {
    "muscle": Tissue("muscle", 1.8, 0.035, _pools_9t4(amide_f=0.0007, mt_f=0.12)),
    "tumour": Tissue("tumour", 2.2, 0.06, _pools_9t4(amide_f=0.0011, mt_f=0.06)),
    "depot": Tissue(
        "depot", 2.2, 0.06, _pools_9t4(amide_f=0.0011, mt_f=0.06) + (BMPool("lrp", 0.0015, 1.0, 0.1, 100.0, 3.4),)
    ),
}


def bloch_mcconnell_z(
    tissue: Tissue, offsets_ppm, b1_ut: float = 1.0, tsat_s: float = 2.0, field_t: float = 9.4
) -> np.ndarray:
    """Z = Mz_water(tsat) / M0 after CW saturation, from the Bloch-McConnell equations.

    Parameters
    ----------
    tissue : Tissue
    offsets_ppm : array of float
        Saturation offsets from water (ppm).
    b1_ut : float
        Saturation amplitude (uT).
    tsat_s : float
        Saturation time (s); the magnetisation starts fully relaxed.
    field_t : float
        Field strength (T).

    Returns
    -------
    ndarray, one Z per offset.

    Examples
    --------
    >>> water = Tissue("water", 3.0, 0.05)
    >>> z = bloch_mcconnell_z(water, [0.0, 100.0])
    >>> bool(z[0] < 0.01 and z[1] > 0.99)
    True
    """
    from scipy.linalg import expm

    offsets = np.atleast_1d(np.asarray(offsets_ppm, float))
    pools = [BMPool("water", 1.0, tissue.t1, tissue.t2, 0.0, 0.0)] + list(tissue.pools)
    n = len(pools)
    hz_per_ppm = GAMMA_MHZ_PER_T * field_t
    w1 = 2 * np.pi * GAMMA_MHZ_PER_T * 1e6 * b1_ut * 1e-6  # rad/s
    size = 3 * n + 1  # the last component is the constant 1 (makes relaxation towards M0 linear)
    base = np.zeros((size, size))
    for i, p in enumerate(pools):
        x, y, z = 3 * i, 3 * i + 1, 3 * i + 2
        r2, r1 = 1.0 / p.t2, 1.0 / p.t1
        base[x, x] -= r2
        base[y, y] -= r2
        base[z, z] -= r1
        base[z, -1] += r1 * p.f
        base[y, z] += w1
        base[z, y] -= w1
        if i > 0:  # exchange with water: pool -> water at k, water -> pool at k f
            k_out, k_in = p.k, p.k * p.f
            for c in range(3):
                base[3 * i + c, 3 * i + c] -= k_out
                base[c, c] -= k_in
                base[c, 3 * i + c] += k_out
                base[3 * i + c, c] += k_in
    mats = np.repeat(base[None], offsets.size, axis=0)
    for i, p in enumerate(pools):
        dwi = 2 * np.pi * hz_per_ppm * (offsets - p.dw)  # saturation relative to this pool (rad/s)
        mats[:, 3 * i, 3 * i + 1] += dwi
        mats[:, 3 * i + 1, 3 * i] -= dwi
    m_init = np.zeros(size)
    for i, p in enumerate(pools):
        m_init[3 * i + 2] = p.f
    m_init[-1] = 1.0
    final = expm(mats * tsat_s) @ m_init
    return final[:, 2]


def pool_effect(tissue: Tissue, pool: str, at_ppm: float, **kwargs) -> float:
    """A pool's effect: Z without the pool minus Z with it, at ``at_ppm`` (a fraction of M0).

    The definition the tests check the analysis against (``docs/methods/cest.md#validation``).

    Parameters
    ----------
    tissue : Tissue
        The tissue with the pool.
    pool : str
        The pool's name (e.g. "amide", "lrp").
    at_ppm : float
        Saturation offset, ppm from water (usually the pool's own shift).
    **kwargs
        ``b1_ut``, ``tsat_s``, ``field_t`` of :func:`bloch_mcconnell_z`.

    Returns
    -------
    float
        Fraction of M0.

    Examples
    --------
    >>> round(pool_effect(TISSUES["depot"], "lrp", 3.4), 4), round(pool_effect(TISSUES["muscle"], "amide", 3.5), 4)
    (0.1097, 0.0239)
    """
    return float(
        bloch_mcconnell_z(tissue.without(pool), [at_ppm], **kwargs)[0]
        - bloch_mcconnell_z(tissue, [at_ppm], **kwargs)[0]
    )


def tissue_spectra(
    tissues: dict[str, Tissue], offsets_ppm, b0_range_ppm: float = 1.0, step_ppm: float = 0.01, **kwargs
):
    """Fine-grid spectra of each tissue covering ``offsets +- b0_range`` (for shifting by B0 per voxel).

    Parameters
    ----------
    tissues : dict of str to Tissue
        The tissues to simulate.
    offsets_ppm : array of float
        The series' offsets; M0 frames (``|dw| >= 100``) are left out of the grid.
    b0_range_ppm : float, default 1.0
        Largest B0 offset to cover, ppm.
    step_ppm : float, default 0.01
        Grid step, ppm.
    **kwargs
        ``b1_ut``, ``tsat_s``, ``field_t`` of :func:`bloch_mcconnell_z`.

    Returns
    -------
    grid : ndarray
        Offsets of the fine grid, ppm.
    spectra : dict of str to ndarray
        Z on the grid per tissue.

    Examples
    --------
    >>> grid, spectra = tissue_spectra({"water": Tissue("water", 3.0, 0.05)}, [-300, -0.5, 0, 0.5],
    ...                                b0_range_ppm=0.1, step_ppm=0.05)
    >>> grid.size, round(float(grid[0]), 2), spectra["water"][[0, 13]].round(3).tolist()   # Z at -0.65 and 0 ppm
    (27, -0.65, [0.492, 0.0])
    """
    offsets = np.asarray(offsets_ppm, float)
    cest = offsets[np.abs(offsets) < 100]
    grid = np.arange(cest.min() - b0_range_ppm - step_ppm, cest.max() + b0_range_ppm + 2 * step_ppm, step_ppm)
    return grid, {name: bloch_mcconnell_z(t, grid, **kwargs) for name, t in tissues.items()}


def simulate_cest(
    labels: np.ndarray,
    affine: np.ndarray,
    tissue_of_label: dict[int, str],
    offsets_ppm: Sequence[float],
    b0_ppm: np.ndarray,
    m0: np.ndarray,
    *,
    snr: float = 100.0,
    wassr_offsets_ppm: Sequence[float] | None = None,
    b1_ut: float = 1.0,
    tsat_s: float = 2.0,
    wassr_b1_ut: float = 0.3,
    wassr_tsat_s: float = 0.5,
    field_t: float = 9.4,
    tissues: dict[str, Tissue] | None = None,
    seed: int = 0,
) -> dict:
    """A CEST series (and WASSR) of a labelled volume with a B0 map.

    Parameters
    ----------
    labels : int array (z, y, x)
        Tissue label per voxel (0: air, no signal).
    affine : (4, 4) index-to-world RAS mm.
    tissue_of_label : {label: tissue name in ``tissues``}
    offsets_ppm : offsets of the series (values with ``|dw| >= 100`` are M0 frames).
    b0_ppm : float array like ``labels``: field offset per voxel (ppm).
    m0 : float array like ``labels``: unsaturated signal per voxel.
    snr : float
        M0 of the brightest tissue / noise sigma (Rician magnitude noise).
    wassr_offsets_ppm : offsets of a WASSR scan (low power, short), or None.

    b1_ut, tsat_s : float
        Saturation amplitude (uT) and duration (s) of the CEST series (defaults 1.0 and 2.0).
    wassr_b1_ut, wassr_tsat_s : float
        The same for the WASSR scan (defaults 0.3 and 0.5).
    field_t : float
        Field strength, T (default 9.4).
    tissues : dict of str to Tissue, optional
        Tissue models (default :data:`TISSUES`: muscle, tumour, reporter depot).
    seed : int
        Noise seed (default 0).

    Returns
    -------
    dict with Volumes ``series`` (4D), ``wassr`` (4D or None), ``b0_ppm``, ``labels`` and a ``truth`` dict
    (per tissue: amide, amine and reporter effects, pool parameters; the settings).

    Examples
    --------
    >>> water = Tissue("water", 3.0, 0.05)
    >>> out = simulate_cest(np.array([[[1, 1]]]), np.eye(4), {1: "water"}, [-300, -0.5, 0, 0.5],
    ...                     b0_ppm=np.array([[[0.0, 0.2]]]), m0=np.full((1, 1, 2), 1000.0), snr=1e6,
    ...                     tissues={"water": water})
    >>> out["series"].numpy()[:, 0, 0].astype(float).round(0).tolist()   # the second voxel's dip moved by B0
    [[1000.0, 1000.0], [333.0, 537.0], [0.0, 56.0], [333.0, 122.0]]
    """
    tissues = dict(TISSUES if tissues is None else tissues)
    rng = np.random.default_rng(seed)
    sigma = float(np.max(m0)) / snr

    def series_for(offsets, b1, tsat):
        offsets = np.asarray(offsets, float)
        used = {t: tissues[t] for t in set(tissue_of_label.values())}
        grid, spectra = tissue_spectra(
            used, offsets, b0_range_ppm=float(np.nanmax(np.abs(b0_ppm))) + 0.05, b1_ut=b1, tsat_s=tsat, field_t=field_t
        )
        out = np.zeros((offsets.size,) + labels.shape)
        for label, name in tissue_of_label.items():
            sel = labels == label
            if not sel.any():
                continue
            for k, dw in enumerate(offsets):
                if abs(dw) >= 100:
                    out[k][sel] = 1.0
                else:  # the water line sits at B0: measured Z(dw) = Z(dw - B0)
                    out[k][sel] = np.interp(dw - b0_ppm[sel], grid, spectra[name])
        out *= m0[None]
        noisy = np.hypot(out + rng.normal(0, sigma, out.shape), rng.normal(0, sigma, out.shape))
        return noisy.astype(np.float32)

    meta = {
        "MagneticFieldStrength": field_t,
        "SaturationB1uT": b1_ut,
        "SaturationTimeS": tsat_s,
        "SaturationOffsetsPPM": [float(v) for v in offsets_ppm],
        "NoiseSigma": sigma,
    }
    series = Volume(
        series_for(offsets_ppm, b1_ut, tsat_s), affine, "MR", "a.u.", dict(meta, leading_axis="offset"), "cest"
    )
    wassr = None
    if wassr_offsets_ppm is not None:
        wmeta = dict(
            meta,
            SaturationB1uT=wassr_b1_ut,
            SaturationTimeS=wassr_tsat_s,
            SaturationOffsetsPPM=[float(v) for v in wassr_offsets_ppm],
            leading_axis="offset",
        )
        wassr = Volume(series_for(wassr_offsets_ppm, wassr_b1_ut, wassr_tsat_s), affine, "MR", "a.u.", wmeta, "wassr")
    truth = {"b1_uT": b1_ut, "tsat_s": tsat_s, "field_T": field_t, "snr": snr, "noise_sigma": sigma, "tissues": {}}
    for name in set(tissue_of_label.values()):
        t = tissues[name]
        entry = {
            "t1_s": t.t1,
            "t2_s": t.t2,
            "pools": [
                p.__dict__ if hasattr(p, "__dict__") else {"name": p.name, "f": p.f, "k": p.k, "dw": p.dw}
                for p in t.pools
            ],
            "effects": {},
        }
        for p in t.pools:
            if p.name in ("amide", "lrp", "amine"):
                entry["effects"][p.name] = pool_effect(t, p.name, p.dw, b1_ut=b1_ut, tsat_s=tsat_s, field_t=field_t)
        truth["tissues"][name] = entry
    return {
        "series": series,
        "wassr": wassr,
        "b0_ppm": Volume(b0_ppm.astype(np.float32), affine, "MR", "ppm", {}, "b0_ppm"),
        "labels": Volume(labels.astype(np.uint8), affine, "SEG", "label", {}, "tissues"),
        "truth": truth,
    }


def default_offsets(n: int = 49, span_ppm: float = 6.0, m0_ppm: float = -300.0, n_m0: int = 1) -> np.ndarray:
    """``n_m0`` M0 frames at ``m0_ppm`` then ``n`` offsets evenly in ``[-span, span]`` ppm.

    Parameters
    ----------
    n : int, default 49
        Saturated offsets.
    span_ppm : float, default 6.0
        Half-width of the offset range, ppm.
    m0_ppm : float, default -300.0
        Offset of the unsaturated reference frames, ppm.
    n_m0 : int, default 1
        Number of reference frames.

    Returns
    -------
    ndarray
        ``n_m0 + n`` offsets, ppm.

    Examples
    --------
    >>> default_offsets(5, 4.0).tolist()
    [-300.0, -4.0, -2.0, 0.0, 2.0, 4.0]
    """
    return np.r_[[m0_ppm] * n_m0, np.linspace(-span_ppm, span_ppm, n)]


def default_wassr_offsets(n: int = 21, span_ppm: float = 1.5) -> np.ndarray:
    """WASSR offsets: ``n`` values evenly in ``[-span, span]`` ppm.

    Parameters
    ----------
    n : int, default 21
        Number of offsets.
    span_ppm : float, default 1.5
        Half-width, ppm.

    Returns
    -------
    ndarray
        Offsets, ppm.

    Examples
    --------
    >>> default_wassr_offsets(5, 1.0).tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    return np.linspace(-span_ppm, span_ppm, n)


__all__ = [
    "TISSUES",
    "BMPool",
    "Tissue",
    "bloch_mcconnell_z",
    "default_offsets",
    "default_wassr_offsets",
    "pool_effect",
    "simulate_cest",
    "tissue_spectra",
]
