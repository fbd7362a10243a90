"""1H MRI signal equations, contrast agents and Rician noise.

Signal equations (Haacke et al., *Magnetic Resonance Imaging: Physical
Principles and Sequence Design*, 1999, ch. 18):

- spin echo (TR >> TE): ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``
- spoiled gradient echo (FLASH): ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``,
  ``E1 = exp(-TR/T1)``

Contrast agents add to the relaxation rates linearly in their concentration
C (mM): ``R1 = R1_0 + r1 C``, ``R2 = R2_0 + r2 C``, ``R2* = R2*_0 + r2* C``
(r in 1/(mM s)). :data:`RELAXIVITY` gives approximate presets at 7 and
9.4 T; they are order-of-magnitude literature values (Rohrer et al., Invest
Radiol 2005 40:715 for Gd chelates; Knobloch et al., MRM 2018 / Wang,
Quant Imaging Med Surg 2011 1:35 for iron oxides; Zhou et al., ACS Nano 2017
for T1-T2 dual-mode probes), not calibration values: pass your own when you
have measured them.

Noise: magnitude images are Rician, ``|S + n1 + i n2|`` with n1, n2 ~ N(0,
sigma^2) (Gudbjartsson & Patz, MRM 1995 34:910). ``sigma = S_ref / SNR``
where ``S_ref`` is the noiseless mean signal of a named reference tissue
(muscle by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .phantom import LABEL_OF, check_field, property_luts

#: Gyromagnetic ratio of 1H, rad/(s T).
GAMMA_1H = 2.675221874e8
#: Gyromagnetic ratio of 19F, rad/(s T).
GAMMA_19F = 2.51815e8


@dataclass(frozen=True)
class Sequence:
    """One acquisition: ``kind`` "SE" (spin echo) or "GRE" (spoiled gradient echo); times in ms."""

    name: str
    kind: str
    tr_ms: float
    te_ms: float
    flip_deg: float = 90.0

    def metadata(self, field_t: float) -> dict:
        """BIDS-like sidecar fields (seconds, as BIDS)."""
        return {
            "Modality": "MR",
            "MagneticFieldStrength": float(field_t),
            "ScanningSequence": "SE" if self.kind == "SE" else "GR",
            "SequenceName": self.name,
            "RepetitionTime": self.tr_ms / 1000.0,
            "EchoTime": self.te_ms / 1000.0,
            "FlipAngle": float(self.flip_deg),
        }


#: Typical preclinical protocols (Bruker-like RARE and FLASH), per field.
SEQUENCES: dict[float, dict[str, Sequence]] = {
    9.4: {
        "T1w": Sequence("T1w", "SE", 600.0, 8.0, 90.0),
        "T2w": Sequence("T2w", "SE", 5000.0, 30.0, 90.0),
        "T2starw": Sequence("T2starw", "GRE", 40.0, 5.0, 12.0),
    },
    7.0: {
        "T1w": Sequence("T1w", "SE", 600.0, 9.0, 90.0),
        "T2w": Sequence("T2w", "SE", 5000.0, 33.0, 90.0),
        "T2starw": Sequence("T2starw", "GRE", 40.0, 6.0, 12.0),
    },
}


def sequences(field_t: float = 9.4) -> dict[str, Sequence]:
    """The T1w, T2w and T2*w presets at ``field_t``."""
    field_t = check_field(field_t)
    return dict(SEQUENCES[9.4 if abs(field_t - 9.4) < 1e-6 else 7.0])


@dataclass(frozen=True)
class Relaxivity:
    """Relaxivities in 1/(mM s) of one agent at one field (per mM of Fe or Gd)."""

    agent: str
    field_t: float
    r1: float
    r2: float
    r2s: float


RELAXIVITY: dict[tuple, Relaxivity] = {
    # SPION (ferumoxytol/ferumoxides-like), per mM Fe: r1 falls and r2 stays high at high field.
    ("spion", 9.4): Relaxivity("spion", 9.4, 1.0, 90.0, 180.0),
    ("spion", 7.0): Relaxivity("spion", 7.0, 1.5, 85.0, 160.0),
    # Gd chelate (gadoterate-like), per mM Gd.
    ("gd", 9.4): Relaxivity("gd", 9.4, 3.0, 5.0, 6.0),
    ("gd", 7.0): Relaxivity("gd", 7.0, 3.2, 4.6, 5.5),
    # T1-T2 dual-mode (ultrasmall/Gd-doped iron oxide), per mM metal.
    ("dual_mode", 9.4): Relaxivity("dual_mode", 9.4, 4.0, 40.0, 60.0),
    ("dual_mode", 7.0): Relaxivity("dual_mode", 7.0, 5.0, 38.0, 55.0),
}


def relaxivity(agent: str, field_t: float = 9.4) -> Relaxivity:
    """Preset relaxivity of ``agent`` ("spion", "gd", "dual_mode") at 7 or 9.4 T."""
    field_t = check_field(field_t)
    key = (str(agent).lower(), 9.4 if abs(field_t - 9.4) < 1e-6 else 7.0)
    if key not in RELAXIVITY:
        raise InputError(f"agent={agent!r} has no relaxivity preset; use one of 'spion', 'gd', 'dual_mode'.")
    return RELAXIVITY[key]


# ----------------------------------------------------------------- signal equations
def spin_echo(pd, r1, r2, tr_ms: float, te_ms: float):
    """Spin-echo magnitude ``PD (1 - exp(-TR R1)) exp(-TE R2)`` (rates in 1/s, times in ms)."""
    tr, te = tr_ms / 1000.0, te_ms / 1000.0
    return pd * (1.0 - np.exp(-tr * r1)) * np.exp(-te * r2)


def gradient_echo(pd, r1, r2s, tr_ms: float, te_ms: float, flip_deg: float):
    """Spoiled gradient-echo magnitude ``PD sin a (1-E1)/(1-cos a E1) exp(-TE R2*)``."""
    tr, te = tr_ms / 1000.0, te_ms / 1000.0
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr * r1)
    return pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te * r2s)


def signal(seq: Sequence, pd, r1, r2, r2s):
    """Noiseless signal of ``seq`` for property arrays (rates in 1/s)."""
    if seq.kind == "SE":
        return spin_echo(pd, r1, r2, seq.tr_ms, seq.te_ms)
    if seq.kind == "GRE":
        return gradient_echo(pd, r1, r2s, seq.tr_ms, seq.te_ms, seq.flip_deg)
    raise InputError(f"sequence kind {seq.kind!r} is unknown; use 'SE' or 'GRE'.")


def tissue_signal(seq: Sequence, field_t: float, tissue: str = "muscle") -> float:
    """Noiseless signal (PD units) of one tissue for ``seq``: the usual SNR reference."""
    luts = property_luts(field_t)
    lab = LABEL_OF[tissue]
    return float(signal(seq, luts["pd"][lab], luts["r1"][lab], luts["r2"][lab], luts["r2s"][lab]))


def weighted_image(
    labels: np.ndarray,
    seq: Sequence,
    field_t: float = 9.4,
    agent_mM: np.ndarray | None = None,
    agent: Relaxivity | None = None,
    extra_r1: np.ndarray | None = None,
    extra_r2: np.ndarray | None = None,
    extra_r2s: np.ndarray | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """Noiseless weighted image (float32) of a label map, optionally with an agent.

    The signal of each tissue is computed once (look-up table); only voxels
    with agent (``agent_mM > 0``) or extra rates are recomputed, which keeps a
    256^3 volume well under a second.

    Parameters
    ----------
    labels : int array of tissue labels (:data:`~.phantom.LABELS`).
    seq : Sequence
    agent_mM, agent : concentration map (mM) and its :class:`Relaxivity`.
    extra_r1, extra_r2, extra_r2s : extra rates (1/s) added voxelwise.
    scale : multiply the result (PD units) by this (e.g. so muscle = 1000).
    """
    luts = property_luts(field_t)
    lut = signal(seq, luts["pd"], luts["r1"], luts["r2"], luts["r2s"]).astype(np.float32)
    out = lut[labels]
    if agent_mM is not None and agent is None:
        raise InputError("agent_mM was given without its relaxivity (agent=...).")
    extras = [np.asarray(e) for e in (extra_r1, extra_r2, extra_r2s) if e is not None]
    changed = None
    if agent_mM is not None:
        agent_mM = np.asarray(agent_mM, np.float32)
        if np.any(agent_mM < 0):
            raise InputError("agent_mM has negative concentrations; concentrations are >= 0 mM.")
        changed = agent_mM > 0
    for e in extras:
        changed = (e != 0) if changed is None else (changed | (e != 0))
    if changed is not None and changed.any():
        # recompute only the voxels an agent or an extra rate touches
        lab = labels[changed]
        r1 = luts["r1"][lab].astype(np.float32)
        r2 = luts["r2"][lab].astype(np.float32)
        r2s = luts["r2s"][lab].astype(np.float32)
        if agent_mM is not None:
            c = agent_mM[changed]
            r1 += agent.r1 * c
            r2 += agent.r2 * c
            r2s += agent.r2s * c
        for arr, extra in ((r1, extra_r1), (r2, extra_r2), (r2s, extra_r2s)):
            if extra is not None:
                arr += np.asarray(extra, np.float32)[changed]
        out[changed] = signal(seq, luts["pd"][lab], r1, r2, r2s)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


def relaxation_maps(labels: np.ndarray, field_t: float = 9.4, agent_mM=None, agent: Relaxivity | None = None):
    """Quantitative T1 and T2 maps in ms (float32) of a label map with an optional agent; air gives 0."""
    luts = property_luts(field_t)
    r1 = luts["r1"][labels].astype(np.float32)
    r2 = luts["r2"][labels].astype(np.float32)
    if agent_mM is not None:
        r1 = r1 + agent.r1 * np.asarray(agent_mM, np.float32)
        r2 = r2 + agent.r2 * np.asarray(agent_mM, np.float32)
    pd = luts["pd"][labels]
    t1 = np.where(pd > 0, 1000.0 / r1, 0.0).astype(np.float32)
    t2 = np.where(pd > 0, 1000.0 / r2, 0.0).astype(np.float32)
    return t1, t2


# ------------------------------------------------------------------------- noise
def check_snr(snr, name: str = "snr") -> float:
    """``snr`` as a float > 0, else InputError naming ``name``."""
    try:
        value = float(snr)
    except (TypeError, ValueError):
        raise InputError(f"{name}={snr!r} is not a number; give a signal-to-noise ratio > 0.") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{name}={snr} is impossible; the signal-to-noise ratio must be > 0 (e.g. 20).")
    return value


def rician(signal_arr: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of SD ``sigma`` per channel (float32).

    The mean of pure noise (signal 0) is ``sigma * sqrt(pi/2)`` (Rayleigh).
    """
    s = np.asarray(signal_arr, np.float32)
    if sigma <= 0:
        return s.copy()
    n1 = rng.standard_normal(s.shape, dtype=np.float32)
    n1 *= np.float32(sigma)
    n1 += s
    n2 = rng.standard_normal(s.shape, dtype=np.float32)
    n2 *= np.float32(sigma)
    np.square(n1, out=n1)
    np.square(n2, out=n2)
    n1 += n2
    return np.sqrt(n1, out=n1)


def sequence_dict(seq: Sequence) -> dict:
    return asdict(seq)
