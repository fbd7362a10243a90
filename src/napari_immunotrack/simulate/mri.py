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
    """The T1w, T2w and T2*w presets at ``field_t``.

    Parameters
    ----------
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).

    Returns
    -------
    dict of str to Sequence
        "T1w" (spin echo, TR 600 ms), "T2w" (spin echo, TR 5000 ms) and "T2starw" (FLASH, TR 40 ms,
        flip 12 degrees); echo times differ slightly between the fields.

    Raises
    ------
    InputError
        A field without preset.

    Examples
    --------
    >>> sequences()["T2w"]
    Sequence(name='T2w', kind='SE', tr_ms=5000.0, te_ms=30.0, flip_deg=90.0)
    >>> sequences(7.0)["T1w"].te_ms
    9.0
    """
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
    """Preset relaxivity of ``agent`` ("spion", "gd", "dual_mode") at 7 or 9.4 T.

    Order-of-magnitude literature values (see the module docstring), not calibrations.

    Parameters
    ----------
    agent : {"spion", "gd", "dual_mode"}
        The contrast agent (case-insensitive).
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).

    Returns
    -------
    Relaxivity
        ``r1``, ``r2``, ``r2s`` in 1/(mM s), per mM of Fe or Gd.

    Raises
    ------
    InputError
        An unknown agent or a field without preset.

    Examples
    --------
    >>> relaxivity("spion")
    Relaxivity(agent='spion', field_t=9.4, r1=1.0, r2=90.0, r2s=180.0)
    >>> relaxivity("gd", 7.0).r1
    3.2
    """
    field_t = check_field(field_t)
    key = (str(agent).lower(), 9.4 if abs(field_t - 9.4) < 1e-6 else 7.0)
    if key not in RELAXIVITY:
        raise InputError(f"agent={agent!r} has no relaxivity preset; use one of 'spion', 'gd', 'dual_mode'.")
    return RELAXIVITY[key]


# ----------------------------------------------------------------- signal equations
def spin_echo(pd, r1, r2, tr_ms: float, te_ms: float):
    """Spin-echo magnitude ``PD (1 - exp(-TR R1)) exp(-TE R2)`` (rates in 1/s, times in ms).

    See ``docs/methods/simulator.md#mri-signal-equations``.

    Parameters
    ----------
    pd : float or array
        Proton density (signal units).
    r1, r2 : float or array
        Relaxation rates R1 = 1/T1 and R2 = 1/T2, 1/s.
    tr_ms, te_ms : float
        Repetition and echo time, ms.

    Returns
    -------
    float or ndarray
        The noiseless magnitude, in the units of ``pd``.

    Examples
    --------
    >>> round(float(spin_echo(1.0, r1=1 / 1.5, r2=1 / 0.03, tr_ms=600, te_ms=8)), 4)   # T1 1.5 s, T2 30 ms
    0.2525
    """
    tr, te = tr_ms / 1000.0, te_ms / 1000.0
    return pd * (1.0 - np.exp(-tr * r1)) * np.exp(-te * r2)


def gradient_echo(pd, r1, r2s, tr_ms: float, te_ms: float, flip_deg: float):
    """Spoiled gradient-echo magnitude ``PD sin a (1-E1)/(1-cos a E1) exp(-TE R2*)``.

    ``E1 = exp(-TR R1)``; see ``docs/methods/simulator.md#mri-signal-equations``.

    Parameters
    ----------
    pd : float or array
        Proton density (signal units).
    r1, r2s : float or array
        Relaxation rates R1 and R2*, 1/s.
    tr_ms, te_ms : float
        Repetition and echo time, ms.
    flip_deg : float
        Flip angle, degrees.

    Returns
    -------
    float or ndarray
        The noiseless magnitude, in the units of ``pd``.

    Examples
    --------
    >>> round(float(gradient_echo(1.0, r1=1.0, r2s=50.0, tr_ms=40, te_ms=5, flip_deg=12)), 4)
    0.1055
    """
    tr, te = tr_ms / 1000.0, te_ms / 1000.0
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr * r1)
    return pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te * r2s)


def signal(seq: Sequence, pd, r1, r2, r2s):
    """Noiseless signal of ``seq`` for property arrays (rates in 1/s).

    Parameters
    ----------
    seq : Sequence
        "SE" uses :func:`spin_echo` (R2), "GRE" :func:`gradient_echo` (R2*).
    pd : float or array
        Proton density.
    r1, r2, r2s : float or array
        Relaxation rates, 1/s.

    Returns
    -------
    float or ndarray

    Raises
    ------
    InputError
        An unknown sequence kind.

    Examples
    --------
    >>> t2w = sequences()["T2w"]
    >>> round(float(signal(t2w, pd=1.0, r1=1.0, r2=30.0, r2s=50.0)), 4)   # R2* unused by a spin echo
    0.4038
    """
    if seq.kind == "SE":
        return spin_echo(pd, r1, r2, seq.tr_ms, seq.te_ms)
    if seq.kind == "GRE":
        return gradient_echo(pd, r1, r2s, seq.tr_ms, seq.te_ms, seq.flip_deg)
    raise InputError(f"sequence kind {seq.kind!r} is unknown; use 'SE' or 'GRE'.")


def tissue_signal(seq: Sequence, field_t: float, tissue: str = "muscle") -> float:
    """Noiseless signal (PD units) of one tissue for ``seq``: the usual SNR reference.

    Parameters
    ----------
    seq : Sequence
        The acquisition.
    field_t : float
        Field strength, T (7.0 or 9.4): sets the tissue's T1, T2, T2*.
    tissue : str, default "muscle"
        A tissue name of :data:`~napari_immunotrack.simulate.phantom.LABEL_OF`.

    Returns
    -------
    float

    Examples
    --------
    >>> t2w = sequences()["T2w"]
    >>> round(tissue_signal(t2w, 9.4), 4), round(tissue_signal(t2w, 9.4, "fat"), 4)
    (0.2384, 0.5206)
    """
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
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).

    Returns
    -------
    ndarray of float32
        Same shape as ``labels``.

    Raises
    ------
    InputError
        ``agent_mM`` without ``agent``, or negative concentrations.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import LABEL_OF
    >>> labels = np.array([[[0, LABEL_OF["muscle"], LABEL_OF["muscle"]]]])   # air, muscle, muscle
    >>> t2w = sequences()["T2w"]
    >>> scale = 1000 / tissue_signal(t2w, 9.4)
    >>> weighted_image(labels, t2w, scale=scale).astype(float).round(1).tolist()
    [[[0.0, 1000.0, 1000.0]]]
    >>> iron = np.array([[[0.0, 0.0, 0.5]]])                                 # 0.5 mM Fe in the last voxel
    >>> weighted_image(labels, t2w, agent_mM=iron, agent=relaxivity("spion"), scale=scale).astype(float).round(1).tolist()
    [[[0.0, 1000.0, 277.7]]]
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
    """Quantitative T1 and T2 maps in ms (float32) of a label map with an optional agent; air gives 0.

    Parameters
    ----------
    labels : int array
        Tissue labels.
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).
    agent_mM : array, optional
        Agent concentration per voxel, mM.
    agent : Relaxivity, optional
        Its relaxivities (needed with ``agent_mM``): ``R = R0 + r C``.

    Returns
    -------
    t1, t2 : ndarray of float32
        ``1000 / R1`` and ``1000 / R2``, ms; 0 where the proton density is 0.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import LABEL_OF
    >>> labels = np.array([[[0, LABEL_OF["muscle"], LABEL_OF["muscle"]]]])
    >>> t1, t2 = relaxation_maps(labels, 9.4, np.array([[[0.0, 0.0, 0.5]]]), relaxivity("spion"))
    >>> t1.astype(float).round(1).tolist(), t2.astype(float).round(2).tolist()
    ([[[0.0, 1900.0, 974.4]]], [[[0.0, 28.0, 12.39]]])
    """
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
    """``snr`` as a float > 0, else InputError naming ``name``.

    Parameters
    ----------
    snr : float or str
        A signal-to-noise ratio.
    name : str, default "snr"
        The parameter's name in the message.

    Returns
    -------
    float

    Raises
    ------
    InputError
        Not a number, not finite, or <= 0.

    Examples
    --------
    >>> check_snr("20")
    20.0
    >>> check_snr(0, "f19_snr")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: f19_snr=0 is impossible; the signal-to-noise ratio must be > 0 (e.g. 20).
    """
    try:
        value = float(snr)
    except (TypeError, ValueError):
        raise InputError(f"{name}={snr!r} is not a number; give a signal-to-noise ratio > 0.") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{name}={snr} is impossible; the signal-to-noise ratio must be > 0 (e.g. 20).")
    return value


def rician(signal_arr: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of SD ``sigma`` per channel (float32).

    The mean of pure noise (signal 0) is ``sigma * sqrt(pi/2)`` (Rayleigh); see
    ``docs/methods/simulator.md#rician-noise``.

    Parameters
    ----------
    signal_arr : array
        Noiseless magnitude.
    sigma : float
        Noise standard deviation of each of the real and imaginary channels (<= 0: no noise).
    rng : numpy.random.Generator
        The random source (seeded by the caller).

    Returns
    -------
    ndarray of float32
        ``|S + n1 + i n2|``, same shape.

    Examples
    --------
    >>> noise = rician(np.zeros(100_000), 10.0, np.random.default_rng(0))
    >>> round(float(noise.mean()), 1), round(10 * float(np.sqrt(np.pi / 2)), 1)
    (12.5, 12.5)
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
    """A sequence as a plain dict (for JSON truth files).

    Parameters
    ----------
    seq : Sequence
        The acquisition.

    Returns
    -------
    dict
        ``name``, ``kind``, ``tr_ms``, ``te_ms``, ``flip_deg``.

    Examples
    --------
    >>> sequence_dict(sequences()["T2starw"])
    {'name': 'T2starw', 'kind': 'GRE', 'tr_ms': 40.0, 'te_ms': 5.0, 'flip_deg': 12.0}
    """
    return asdict(seq)
