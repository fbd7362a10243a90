"""Iron-oxide-labelled cell clusters as magnetic dipoles, and the "blooming" they cause.

Physics (each step is a parameter you can change):

1. A cluster of N cells carrying ``iron_pg`` picograms of iron in total is a
   sphere of radius ``R = (3 N V_cell / (4 pi phi))^(1/3)`` (cell diameter
   10 um, packing fraction phi = 0.6): usually smaller than one voxel.
2. At 7-9.4 T the superparamagnetic cores are saturated. The moment is
   ``mu = m_Fe * M_s * L(xi)`` with ``M_s`` = 100 A m^2 per kg Fe (typical of
   SPIO; magnetite is ~92 A m^2/kg of Fe3O4 = ~127 per kg Fe), ``L`` the
   Langevin function and ``xi = m_core B0 / kT`` for a 10 nm magnetite core.
   L(xi) = 0.9976 at 7 T and 0.9982 at 9.4 T: **the moment, hence the
   bloom for a given TE and voxel, is essentially the same at 7 and 9.4 T**.
   What changes with the field presets is the tissue T2* (shorter at 9.4 T),
   the default TE and the relaxivities, not the cluster's field.
3. Outside a uniformly magnetised sphere the field is exactly that of a point
   dipole. Along B0 (unit vector b):
   ``dBz(r) = (mu0/4pi) mu (3 cos^2 theta - 1) / r^3`` (SI units).
   Fields of several clusters add.
4. Gradient echo: each spin precesses by ``phi = gamma dBz TE``; a voxel's
   signal is the magnitude of the mean of ``exp(-i phi)`` over the voxel
   (intravoxel dephasing, Yablonskiy & Haacke, MRM 1994 32:749). Voxels where
   the phase changes by more than ``near_phase`` rad across the voxel are
   split into ``supersample``^3 sub-voxels, each integrated with its own
   local linear phase; elsewhere the phase is linear over
   the voxel and the exact result of a linear phase is used,
   ``prod_a |sinc(g . e_a / 2)|`` (g the phase gradient, e_a the voxel edges).
   Against a brute-force 24^3-point average, supersample=3 is within 0.016
   of the signal factor everywhere outside the cluster (0.0005 on average).
   Voxels whose centre is within the cluster sphere (plus half a voxel) are
   voids: their spins are inside the iron-laden cells (T2* of microseconds)
   or fully dephased. The dark "bloom" is therefore much larger than
   the cluster and grows with iron mass and TE (its radius roughly as
   (m_Fe TE)^(1/3)).
5. Spin echo refocuses the static dephasing. What is left is the loss from
   water diffusing through the field gradient G during the echo:
   ``exp(-gamma^2 G^2 D TE^3 / 12)`` (constant-gradient Hahn echo,
   Carr & Purcell, Phys Rev 1954 94:630), with D = 1e-3 mm^2/s in tissue. It
   gives a smaller, weaker void on T2-weighted spin echo, as observed.

The result of :func:`bloom_factors` is a multiplicative factor (0-1) for the
noiseless tissue signal of the voxels that change; the tissue signal is
assumed uniform inside a voxel.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .mri import GAMMA_1H, Sequence

MU0_OVER_4PI = 1e-7  # T m / A
K_B = 1.380649e-23
BODY_TEMPERATURE_K = 310.0
#: Saturation magnetisation per kg of iron (A m^2 / kg Fe), SPIO-like.
MSAT_AM2_PER_KG_FE = 100.0
#: Magnetisation of bulk magnetite (A/m), for the core moment in the Langevin function.
MAGNETITE_MS_A_PER_M = 4.8e5
CELL_DIAMETER_UM = 10.0
PACKING_FRACTION = 0.6
#: Water diffusion coefficient in tissue, mm^2/s.
DIFFUSION_MM2_S = 1.0e-3


@dataclass
class IronCluster:
    """A group of labelled cells: position (phantom world, RAS mm), cells and iron (pg)."""

    center_mm: np.ndarray
    iron_pg: float
    cells: float
    id: int = 0
    site: str = ""
    owner: str = "live"  # "live" cells or "macrophage" (label carried by host cells)
    radius_mm: float = field(default=0.0)

    def __post_init__(self):
        self.center_mm = np.asarray(self.center_mm, float).reshape(3)
        check_iron(self.iron_pg)
        if not np.isfinite(self.cells) or self.cells < 0:
            raise InputError(f"cells={self.cells} is impossible; a cluster holds 0 or more cells.")
        if self.radius_mm <= 0:
            self.radius_mm = cluster_radius_mm(max(self.cells, 1.0))


def check_iron(iron_pg, name: str = "iron_pg") -> float:
    """``iron_pg`` as a float >= 0, else InputError naming the parameter.

    Parameters
    ----------
    iron_pg : float or str
        Iron mass, pg.
    name : str, default "iron_pg"
        The parameter's name in the message.

    Returns
    -------
    float

    Raises
    ------
    InputError
        Not a number, not finite or negative.

    Examples
    --------
    >>> check_iron("25")
    25.0
    >>> check_iron(-1, "iron_pg_per_cell")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: iron_pg_per_cell=-1 is impossible; iron mass must be >= 0 pg.
    """
    try:
        value = float(iron_pg)
    except (TypeError, ValueError):
        raise InputError(f"{name}={iron_pg!r} is not a number; give the iron mass in picograms.") from None
    if not np.isfinite(value) or value < 0:
        raise InputError(f"{name}={iron_pg} is impossible; iron mass must be >= 0 pg.")
    return value


def cluster_radius_mm(
    cells: float, cell_diameter_um: float = CELL_DIAMETER_UM, packing: float = PACKING_FRACTION
) -> float:
    """Radius (mm) of a packed sphere of ``cells`` cells.

    ``R = (3 N V_cell / (4 pi phi))^(1/3)`` with ``V_cell = pi d^3 / 6`` (``docs/methods/simulator.md#iron-labelled-cells-dipole-blooms``).

    Parameters
    ----------
    cells : float
        Number of cells N.
    cell_diameter_um : float, default 10.0
        Cell diameter d, micrometres.
    packing : float, default 0.6
        Packing fraction phi.

    Returns
    -------
    float
        Radius, mm.

    Examples
    --------
    >>> round(cluster_radius_mm(1) * 1000, 2), round(cluster_radius_mm(1000) * 1000, 2)   # micrometres
    (5.93, 59.28)
    """
    v_cell = np.pi / 6.0 * (cell_diameter_um * 1e-3) ** 3
    return float((3.0 * cells * v_cell / (4.0 * np.pi * packing)) ** (1.0 / 3.0))


def langevin(xi):
    """L(xi) = coth(xi) - 1/xi.

    Parameters
    ----------
    xi : float or array
        ``m_core B0 / (k T)`` (dimensionless, >= 0); below 1e-4 the series ``xi / 3`` is used.

    Returns
    -------
    ndarray
        Values in [0, 1): the fraction of the saturation moment.

    Examples
    --------
    >>> langevin([0.0, 1.0, 100.0]).round(4)
    array([0.   , 0.313, 0.99 ])
    """
    xi = np.asarray(xi, float)
    return np.where(xi > 1e-4, 1.0 / np.tanh(np.maximum(xi, 1e-4)) - 1.0 / np.maximum(xi, 1e-4), xi / 3.0)


def magnetic_moment(
    iron_pg, field_t: float, msat_am2_per_kg_fe: float = MSAT_AM2_PER_KG_FE, core_diameter_nm: float = 10.0
) -> np.ndarray:
    """Magnetic moment (A m^2) of ``iron_pg`` of SPIO iron in a field of ``field_t`` tesla.

    ``mu = m_Fe M_s L(xi)``, ``xi = m_core B0 / (k T)`` at 310 K (``docs/methods/simulator.md#iron-labelled-cells-dipole-blooms``).

    Parameters
    ----------
    iron_pg : float or array
        Iron mass, pg.
    field_t : float
        B0, T.
    msat_am2_per_kg_fe : float, default 100.0
        Saturation magnetisation per kg of iron, A m^2/kg.
    core_diameter_nm : float, default 10.0
        Magnetite core diameter, nm (sets ``m_core``).

    Returns
    -------
    ndarray
        The moment, A m^2.

    Examples
    --------
    >>> round(float(magnetic_moment(1000.0, 9.4)) * 1e10, 3)   # 1 ng Fe: ~1e-10 A m^2
    0.998
    """
    core_m = MAGNETITE_MS_A_PER_M * np.pi / 6.0 * (core_diameter_nm * 1e-9) ** 3
    xi = core_m * field_t / (K_B * BODY_TEMPERATURE_K)
    return np.asarray(iron_pg, float) * 1e-15 * msat_am2_per_kg_fe * langevin(xi)


def dipole_field(
    points_m: np.ndarray, center_m: np.ndarray, moment: float, b0: np.ndarray, want_gradient: bool = False
):
    """dBz (T) along ``b0`` of a dipole aligned with B0, and optionally its gradient (T/m).

    ``points_m`` (..., 3) in metres. Points at the centre get 0 (they are
    inside the cluster and masked by the caller).

    ``dBz = (mu0 / 4 pi) mu (3 cos^2 theta - 1) / r^3`` (``docs/methods/simulator.md#iron-labelled-cells-dipole-blooms``).

    Parameters
    ----------
    points_m : (..., 3) array
        Where the field is wanted, m.
    center_m : (3,) array
        The dipole's position, m.
    moment : float
        Its moment, A m^2 (along B0).
    b0 : (3,) array
        Unit vector of B0.
    want_gradient : bool, default False
        Also return the gradient of dBz.

    Returns
    -------
    bz : ndarray
        Field change along B0, T, shape ``points_m.shape[:-1]``.
    gradient : ndarray or None
        Its gradient, T/m, shape ``points_m.shape`` (None unless ``want_gradient``).

    Examples
    --------
    >>> mu = float(magnetic_moment(1000.0, 9.4))             # 1 ng Fe
    >>> bz, _ = dipole_field(np.array([[0, 0, 1e-4], [1e-4, 0, 0]]), np.zeros(3), mu, np.array([0, 0, 1.0]))
    >>> (bz * 1e6).round(2)                                  # microtesla 0.1 mm away: along B0, then across
    array([19.96, -9.98])
    """
    p = points_m - center_m
    r2 = np.einsum("...i,...i->...", p, p)
    r2 = np.maximum(r2, 1e-30)
    inv_r2 = 1.0 / r2
    inv_r3 = inv_r2 / np.sqrt(r2)
    zb = p @ b0
    k = MU0_OVER_4PI * moment
    bz = k * (3.0 * zb * zb * inv_r2 - 1.0) * inv_r3
    if not want_gradient:
        return bz, None
    inv_r5 = inv_r3 * inv_r2
    # grad[ k (3 z^2/r^5 - 1/r^3) ] = k (6 z b / r^5 - 15 z^2 p / r^7 + 3 p / r^5)
    grad = k * (6.0 * (zb * inv_r5)[..., None] * b0 + ((3.0 - 15.0 * zb * zb * inv_r2) * inv_r5)[..., None] * p)
    return bz, grad


def _box_radius_mm(moment: float, seq: Sequence, h_mm: float, eps: float = 0.002) -> float:
    """Distance beyond which a cluster changes a voxel's signal by less than ~``eps``."""
    k = MU0_OVER_4PI * moment
    te = seq.te_ms / 1000.0
    h = h_mm * 1e-3
    if seq.kind == "GRE":
        # phase change across a voxel ~ gamma TE |grad Bz| h ~ gamma TE 6k h / r^4 ; sinc loss ~ x^2/24
        r = (GAMMA_1H * te * 6.0 * k * h / np.sqrt(24.0 * eps)) ** 0.25
    else:
        # gamma^2 G^2 D TE^3 / 12 = eps with G ~ 6k / r^4
        d = DIFFUSION_MM2_S * 1e-6
        r = (GAMMA_1H**2 * 36.0 * k * k * d * te**3 / (12.0 * eps)) ** 0.125
    return float(r * 1e3)


def _sinc(x):
    """sin(x)/x (unnormalised), 1 at 0."""
    x = np.asarray(x)
    small = np.abs(x) < 1e-4
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x * x / 6.0, np.sin(safe) / safe)


def bloom_factors(
    shape: Seq[int],
    affine: np.ndarray,
    clusters: list[IronCluster],
    seq,
    field_t: float = 9.4,
    b0_direction=(0.0, 0.0, 1.0),
    supersample: int = 3,
    near_phase: float = 0.5,
    to_phantom: np.ndarray | None = None,
    msat_am2_per_kg_fe: float = MSAT_AM2_PER_KG_FE,
):
    """Signal factors (0-1) of the voxels that iron clusters darken.

    Parameters
    ----------
    shape, affine : the image grid (index -> world mm).
    clusters : list of IronCluster (phantom-world positions).
    seq : a Sequence ("GRE": intravoxel dephasing; "SE": diffusion loss), or a list of them
        (the field is computed once and shared, which is much faster than one call each).
    field_t : B0 in tesla (sets the moment through the Langevin function).
    b0_direction : B0 direction in *phantom* world (the bore axis, z).
    supersample : sub-voxels per axis for voxels where the phase is not linear over the voxel;
        each sub-voxel is integrated with its own linear phase, so 3 is accurate (within
        0.016 of a brute-force 24^3-point average, 0.0005 on average).
    near_phase : phase change across a voxel (rad, GRE) above which it is supersampled.
    to_phantom : map from this grid's world to phantom world, if different.
    msat_am2_per_kg_fe : saturation magnetisation per kg of iron (A m^2/kg), see :func:`magnetic_moment`.

    Returns
    -------
    (flat_index, factor) for one sequence, a list of them for a list of sequences:
    flat_index : int64 voxel indices (``np.ravel_multi_index`` order);
    factor : float32, same length: multiply the noiseless signal by it.

    Examples
    --------
    >>> from napari_immunotrack.simulate.mri import sequences
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> cluster = IronCluster((0, 0, 0), iron_pg=5000.0, cells=500)           # 5 ng Fe, 47 um across
    >>> t2s, t2 = sequences()["T2starw"], sequences()["T2w"]
    >>> (gi, gf), (si, sf) = bloom_factors((24, 24, 24), grid_affine((24, 24, 24), 0.1), [cluster], [t2s, t2])
    >>> int((gf < 0.5).sum()), int((sf < 0.5).sum())     # voxels more than halved: gradient echo, spin echo
    (88, 48)
    """
    many = isinstance(seq, (list, tuple))
    seqs = list(seq) if many else [seq]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    shape = tuple(int(s) for s in shape)
    m = np.asarray(affine, float) if to_phantom is None else np.asarray(to_phantom, float) @ affine
    inv = np.linalg.inv(m)
    b0 = np.asarray(b0_direction, float)
    b0 = b0 / np.linalg.norm(b0)
    active = [c for c in clusters if c.iron_pg > 0]
    use = [q.kind in ("GRE", "SE") for q in seqs]
    if not active or not any(use):
        return [empty] * len(seqs) if many else empty
    h_mm = float(np.linalg.norm(m[:3, :3], axis=0).max())
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    moments = [float(magnetic_moment(c.iron_pg, field_t, msat_am2_per_kg_fe)) for c in active]
    boxes = []
    mask = np.zeros(shape, bool)
    for c, mu in zip(active, moments):
        r = max(_box_radius_mm(mu, q, h_mm) for q, u in zip(seqs, use) if u) + c.radius_mm + h_mm
        centre_idx = inv[:3, :3] @ c.center_mm + inv[:3, 3]
        half = r / spacing
        lo = np.maximum(np.floor(centre_idx - half).astype(int), 0)
        hi = np.minimum(np.ceil(centre_idx + half).astype(int) + 1, shape)
        boxes.append((lo, hi))
        if np.all(hi > lo):
            mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    flat = np.flatnonzero(mask)
    del mask
    if flat.size == 0:
        return [empty] * len(seqs) if many else empty
    # position of each masked voxel in the point list, so each cluster touches only its own box
    pos = np.full(shape, -1, np.int32)
    pos.reshape(-1)[flat] = np.arange(flat.size, dtype=np.int32)
    idx = np.stack(np.unravel_index(flat, shape), axis=1)
    pts_mm = idx @ m[:3, :3].T + m[:3, 3]
    # field gradient at voxel centres (T/m), summed over the clusters whose box holds the voxel
    grad = np.zeros((flat.size, 3))
    inside = np.zeros(flat.size, bool)
    for c, mu, (lo, hi) in zip(active, moments, boxes):
        if np.any(hi <= lo):
            continue
        rows = pos[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].reshape(-1)
        p = pts_mm[rows]
        _, g = dipole_field(p * 1e-3, c.center_mm * 1e-3, mu, b0, want_gradient=True)
        grad[rows] += g
        dist = np.linalg.norm(p - c.center_mm, axis=1)
        inside[rows[dist < c.radius_mm + 0.5 * h_mm]] = True
    del pos
    edges_m = m[:3, :3].T * 1e-3  # rows: voxel edge vectors (m) along array axes
    d = DIFFUSION_MM2_S * 1e-6
    gedge = grad @ edges_m.T  # field change across the voxel along each axis (T)
    factors, nears = [], []
    for q, u in zip(seqs, use):
        te = q.te_ms / 1000.0
        if not u:
            factors.append(None)
            nears.append(np.zeros(flat.size, bool))
        elif q.kind == "GRE":
            dphi = GAMMA_1H * te * gedge  # phase change across the voxel along each axis
            factors.append(np.abs(np.prod(_sinc(dphi / 2), axis=1)))
            # the linear-phase result is exact where the phase is nearly linear over the voxel
            nears.append(np.abs(dphi).max(axis=1) > near_phase)
        else:
            att = GAMMA_1H**2 * np.einsum("ij,ij->i", grad, grad) * d * te**3 / 12.0
            factors.append(np.exp(-att))
            # the gradient changes across the voxel where the attenuation is noticeable
            nears.append(att > 0.05)
    # supersample the near voxels: split each into s^3 sub-voxels, each with its own phase and
    # gradient; inside a sub-voxel the phase is taken as linear (exact sinc factor), which makes a
    # small s accurate where the phase curves. The sub-voxel fields serve every sequence.
    any_near = np.logical_or.reduce(nears)
    sel = np.flatnonzero(any_near)
    if sel.size:
        s = int(supersample)
        offs = (np.arange(s) + 0.5) / s - 0.5
        o = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)  # (s^3, 3) index offsets
        o_mm = o @ m[:3, :3].T
        sub_edges = (edges_m / s).astype(np.float32)
        chunk = max(1, 1_000_000 // len(o))
        for a in range(0, sel.size, chunk):
            rows = sel[a : a + chunk]
            ridx = idx[rows]
            # float32 here: the phase error (< 1e-4 rad) is far below what matters, the speed doubles
            bz = np.zeros((rows.size, len(o)), np.float32)
            gsub = np.zeros((rows.size, len(o), 3), np.float32)
            for c, mu, (lo, hi) in zip(active, moments, boxes):
                inb = np.flatnonzero(np.all((ridx >= lo) & (ridx < hi), axis=1))
                if inb.size == 0:
                    continue
                # positions relative to the cluster (small numbers: float32 keeps their precision)
                rel = ((pts_mm[rows[inb]] - c.center_mm)[:, None, :] + o_mm[None]).astype(np.float32) * 1e-3
                b, g = dipole_field(
                    rel, np.zeros(3, np.float32), np.float32(mu), b0.astype(np.float32), want_gradient=True
                )
                bz[inb] += b
                gsub[inb] += g
            g2 = None
            for q, u, fac, near in zip(seqs, use, factors, nears):
                if not u:
                    continue
                here = near[rows]
                if not here.any():
                    continue
                te = np.float32(q.te_ms / 1000.0)
                if q.kind == "GRE":
                    ph = np.float32(GAMMA_1H) * te * bz[here]
                    lin = np.prod(_sinc(np.float32(GAMMA_1H) * te * (gsub[here] @ sub_edges.T) / 2), axis=-1)
                    val = np.abs((np.cos(ph) * lin).mean(1) + 1j * (np.sin(ph) * lin).mean(1))
                else:
                    if g2 is None:
                        g2 = np.einsum("...i,...i->...", gsub, gsub)
                    att = np.float32(GAMMA_1H**2 * d) * g2[here] * te**3 / np.float32(12.0)
                    val = np.exp(-att).mean(1)
                fac[rows[here]] = val
    out = []
    for fac in factors:
        if fac is None:
            out.append(empty)
            continue
        # voxels whose centre lies in a cluster: its spins give no signal, the rest are dephased
        fac[inside] = 0.0
        keep = fac < 0.9995
        out.append((flat[keep].astype(np.int64), fac[keep].astype(np.float32)))
    return out if many else out[0]


def apply_bloom(image: np.ndarray, flat_index: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Multiply ``image`` (in place) by the bloom factors; returns it.

    Parameters
    ----------
    image : ndarray
        The noiseless image (changed in place; must be contiguous for the flat indices).
    flat_index : int array
        Voxel indices from :func:`bloom_factors`.
    factor : float array
        Their signal factors.

    Returns
    -------
    ndarray
        ``image``.

    Examples
    --------
    >>> image = np.full((2, 2, 2), 1000.0, np.float32)
    >>> apply_bloom(image, np.array([0, 7]), np.array([0.0, 0.5], np.float32))[[0, 1], [0, 1], [0, 1]].tolist()
    [0.0, 500.0]
    """
    image.reshape(-1)[flat_index] *= factor
    return image
