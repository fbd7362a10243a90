"""A synthetic mouse made of simple solids, and the tissue properties of each part.

The phantom lives in "phantom world": RAS millimetres with the origin at the
centre of the torso, the animal's long axis along z (head at +z, Superior),
its ventral side at +y (Anterior) and its right side at +x. The MRI world *is*
phantom world; other scanners see it through a rigid transform (see
:mod:`.study`).

Everything here is pure and seeded: :func:`make_mouse` builds a list of
``(label, solid)`` pairs painted in order (later solids overwrite earlier
ones) and :func:`rasterize` paints them on any grid given by its affine.

Tissue parameters
-----------------
:data:`TISSUES_9P4T` holds proton density (relative to water), T1, T2 and
T2* in ms at 9.4 T. They are representative, rounded values from the small-
animal literature (e.g. de Graaf et al., NMR Biomed 2006 19:507 for the
field dependence of T1/T2; Chavhan et al., RadioGraphics 2009 29:1433 for
T2*), chosen to give realistic *contrast*, not to serve as reference
values. :func:`tissue_table` derives 7 T values with documented scalings:
T1 grows roughly as B0^0.3 (so T1(7 T) = 0.915 T1(9.4 T)), T2 changes little
(x1.05), and the reversible part of R2* grows about linearly with B0, so T2*
is longer at 7 T (x1.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..affines import REVERSE_AXES
from ..errors import InputError


# --------------------------------------------------------------------------- tissues
@dataclass(frozen=True)
class Tissue:
    """MR properties of one tissue: proton density (water = 1) and relaxation times in ms."""

    name: str
    label: int
    pd: float
    t1_ms: float
    t2_ms: float
    t2s_ms: float


# label, PD, T1, T2, T2* (ms) at 9.4 T.
_TISSUE_ROWS = [
    # name            label  PD    T1     T2    T2*
    ("air", 0, 0.00, 1.0, 1.0, 1.0),
    ("muscle", 1, 0.75, 1900.0, 28.0, 18.0),
    ("fat", 2, 0.90, 800.0, 55.0, 25.0),
    ("liver", 3, 0.70, 1400.0, 22.0, 10.0),
    ("spleen", 4, 0.80, 1900.0, 40.0, 22.0),
    ("kidney_left", 5, 0.85, 1900.0, 45.0, 25.0),
    ("kidney_right", 6, 0.85, 1900.0, 45.0, 25.0),
    ("tumour", 7, 0.85, 2100.0, 50.0, 30.0),
    ("ln_inguinal_right", 8, 0.85, 1800.0, 45.0, 28.0),
    ("ln_inguinal_left", 9, 0.85, 1800.0, 45.0, 28.0),
    ("ln_iliac", 10, 0.85, 1800.0, 45.0, 28.0),
    # Flowing blood: the spin-echo flow void and the dephasing of flow in
    # gradient echoes are modelled as a low effective PD and a short T2*.
    ("vessel", 11, 0.25, 2400.0, 15.0, 6.0),
    ("bladder", 12, 0.95, 3500.0, 400.0, 150.0),
    # Cortical bone: almost no mobile water, T2 well under a millisecond.
    ("bone", 13, 0.08, 800.0, 2.0, 0.8),
    # Early subacute haemorrhage (intracellular methaemoglobin): T1 short
    # (bright on T1w) and T2/T2* short (dark) - Bradley, Radiology 1993
    # 189:15; Wood (see docs/methods/confirmation.md#references).
    ("haemorrhage", 14, 0.80, 600.0, 12.0, 2.5),
    # Lung parenchyma: little tissue, huge susceptibility gradients.
    ("lung", 15, 0.20, 1400.0, 15.0, 1.0),
    # Gas in the gut: an air pocket inside the body.
    ("gut_gas", 16, 0.00, 1.0, 1.0, 1.0),
    # Reference tubes / fiducials outside the body (water-like, doped).
    ("reference_tube", 17, 1.00, 1000.0, 100.0, 50.0),
]

TISSUES_9P4T: dict[str, Tissue] = {row[0]: Tissue(*row) for row in _TISSUE_ROWS}
LABELS: dict[int, str] = {t.label: t.name for t in TISSUES_9P4T.values()}
LABEL_OF: dict[str, int] = {t.name: t.label for t in TISSUES_9P4T.values()}

#: Tissues that are dark on T2*-weighted images without any label, i.e. the
#: regions that fool a naive threshold (docs/methods/simulator.md#phantom).
DARK_CONFOUNDERS = ("air", "gut_gas", "bone", "vessel", "haemorrhage", "lung")

#: Supported field strengths (T).
FIELDS_T = (7.0, 9.4)


def check_field(field_t: float) -> float:
    """Return ``field_t`` as float if it is a supported preset (7 or 9.4 T).

    Parameters
    ----------
    field_t : float or str
        Field strength, T.

    Returns
    -------
    float

    Raises
    ------
    InputError
        Not a number, or a field without tissue and relaxivity presets.

    Examples
    --------
    >>> check_field("9.4")
    9.4
    >>> check_field(3.0)
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: field_t=3.0 T has no tissue/relaxivity preset; use 7.0 or 9.4 (tesla).
    """
    try:
        value = float(field_t)
    except (TypeError, ValueError):
        raise InputError(f"field_t={field_t!r} is not a number; use 7.0 or 9.4 (tesla).") from None
    if not any(abs(value - f) < 1e-6 for f in FIELDS_T):
        raise InputError(f"field_t={value} T has no tissue/relaxivity preset; use 7.0 or 9.4 (tesla).")
    return value


def tissue_table(field_t: float = 9.4) -> dict[str, Tissue]:
    """Tissue properties at ``field_t`` (7.0 or 9.4 T), keyed by tissue name.

    The 7 T values are the 9.4 T ones scaled (T1 x 0.915, T2 x 1.05, T2* x 1.3; see the module
    docstring and ``docs/methods/simulator.md#phantom``).

    Parameters
    ----------
    field_t : float, default 9.4
        Field strength, T.

    Returns
    -------
    dict of str to Tissue
        Proton density (water = 1) and T1, T2, T2* in ms of every tissue.

    Raises
    ------
    InputError
        A field without preset.

    Examples
    --------
    >>> tissue_table(9.4)["muscle"].t2s_ms
    18.0
    >>> round(tissue_table(7.0)["muscle"].t1_ms, 1)
    1738.5
    """
    field_t = check_field(field_t)
    if abs(field_t - 9.4) < 1e-6:
        return dict(TISSUES_9P4T)
    out = {}
    for name, t in TISSUES_9P4T.items():
        if t.pd == 0:
            out[name] = t
            continue
        out[name] = Tissue(name, t.label, t.pd, t.t1_ms * 0.915, t.t2_ms * 1.05, t.t2s_ms * 1.3)
    return out


def property_luts(field_t: float = 9.4, n_labels: int = 256) -> dict[str, np.ndarray]:
    """Look-up tables indexed by label: ``pd``, ``r1``, ``r2``, ``r2s`` (rates in 1/s).

    Parameters
    ----------
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).
    n_labels : int, default 256
        Table length (labels without a tissue get 0).

    Returns
    -------
    dict of str to ndarray
        float64 arrays of length ``n_labels``: ``lut[name][labels]`` maps a label image to the property.

    Examples
    --------
    >>> luts = property_luts(9.4)
    >>> muscle = LABEL_OF["muscle"]
    >>> float(luts["pd"][muscle]), round(float(luts["r1"][muscle]), 4), round(float(luts["r2"][muscle]), 3)
    (0.75, 0.5263, 35.714)
    """
    table = tissue_table(field_t)
    luts = {k: np.zeros(n_labels, np.float64) for k in ("pd", "r1", "r2", "r2s")}
    for t in table.values():
        luts["pd"][t.label] = t.pd
        luts["r1"][t.label] = 1000.0 / t.t1_ms
        luts["r2"][t.label] = 1000.0 / t.t2_ms
        luts["r2s"][t.label] = 1000.0 / t.t2s_ms
    return luts


# --------------------------------------------------------------------------- solids
class Solid:
    """A region of space. ``inside(x, y, z)`` takes broadcastable arrays (mm)."""

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def inside(self, x, y, z):  # pragma: no cover - interface
        raise NotImplementedError

    def contains(self, points) -> np.ndarray:
        """``inside`` for an (N, 3) array of points."""
        p = np.atleast_2d(np.asarray(points, float))
        return np.asarray(self.inside(p[:, 0], p[:, 1], p[:, 2]), bool)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees): R = Rz @ Ry @ Rx.

    Parameters
    ----------
    angles_deg : 3 floats
        Angles about the x, y and z axes, degrees (right-hand rule).

    Returns
    -------
    (3, 3) ndarray

    Examples
    --------
    >>> rotation_matrix((0, 0, 90)).round(6) @ [1, 0, 0]      # x turns to y
    array([0., 1., 0.])
    """
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Ellipsoid(Solid):
    center: Sequence[float]
    semi: Sequence[float]
    angles_deg: Sequence[float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        self.center = np.asarray(self.center, float)
        self.semi = np.asarray(self.semi, float)
        self._rot = rotation_matrix(self.angles_deg)

    def bbox(self):
        ext = np.sqrt(((self._rot * self.semi) ** 2).sum(axis=1))
        return self.center - ext, self.center + ext

    def inside(self, x, y, z):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        r = self._rot  # local = R^T (p - c)
        u = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz) / self.semi[0]
        v = (r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz) / self.semi[1]
        w = (r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz) / self.semi[2]
        return u * u + v * v + w * w <= 1.0


def Sphere(center, radius) -> Ellipsoid:
    """A ball of ``radius`` mm.

    Parameters
    ----------
    center : 3 floats
        Centre, world mm.
    radius : float
        Radius, mm.

    Returns
    -------
    Ellipsoid
        With three equal semi-axes.

    Examples
    --------
    >>> ball = Sphere((0, 0, 0), 2.0)
    >>> ball.contains([[0, 0, 1.9], [0, 0, 2.1]])
    array([ True, False])
    """
    return Ellipsoid(center, (radius, radius, radius))


@dataclass
class Cylinder(Solid):
    """All points within ``radius`` of the segment p0-p1."""

    p0: Sequence[float]
    p1: Sequence[float]
    radius: float

    def __post_init__(self):
        self.p0 = np.asarray(self.p0, float)
        self.p1 = np.asarray(self.p1, float)
        self._d = self.p1 - self.p0
        self._len2 = float(self._d @ self._d)

    def bbox(self):
        lo = np.minimum(self.p0, self.p1) - self.radius
        hi = np.maximum(self.p0, self.p1) + self.radius
        return lo, hi

    def inside(self, x, y, z):
        dx, dy, dz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = (dx * self._d[0] + dy * self._d[1] + dz * self._d[2]) / self._len2
        t = np.clip(t, 0.0, 1.0)
        ex, ey, ez = dx - t * self._d[0], dy - t * self._d[1], dz - t * self._d[2]
        return ex * ex + ey * ey + ez * ez <= self.radius**2


@dataclass
class Body(Solid):
    """A mouse body: elliptic cross-section (semi-axes a along x, b along y) whose
    size follows a rounded profile (1 - |s|^p)^(1/p), s = (z - z0)/half_length.

    ``shrink_mm`` > 0 gives the body minus a skin layer of that thickness;
    ``shell=True`` gives only that layer (the subcutaneous fat).
    """

    center: Sequence[float]
    a: float
    b: float
    half_length: float
    power: float = 4.0
    shrink_mm: float = 0.0
    shell: bool = False

    def __post_init__(self):
        self.center = np.asarray(self.center, float)

    def bbox(self):
        ext = np.array([self.a, self.b, self.half_length])
        return self.center - ext, self.center + ext

    def _profile(self, z):
        s = np.abs((z - self.center[2]) / self.half_length)
        if self.power == 4.0:  # the default: two square roots are much cheaper than a fractional power
            s2 = s * s
            prof = np.sqrt(np.sqrt(np.clip(1.0 - s2 * s2, 0.0, None)))
        else:
            prof = np.power(np.clip(1.0 - s**self.power, 0.0, None), 1.0 / self.power)
        return s, prof

    def _norm(self, x, y, z, shrink):
        # the profile depends on z only: on an axis-aligned grid z is a (n, 1, 1) array and this is cheap
        s, prof = self._profile(z)
        a = np.maximum(self.a * prof - shrink, 1e-6)
        b = np.maximum(self.b * prof - shrink, 1e-6)
        dx = (x - self.center[0]) / a
        dy = (y - self.center[1]) / b
        q = dx * dx + dy * dy
        return np.where(s <= 1.0, q, np.inf)

    def inside(self, x, y, z):
        outer = self._norm(x, y, z, 0.0) <= 1.0
        if self.shrink_mm <= 0:
            return outer
        inner = self._norm(x, y, z, self.shrink_mm) <= 1.0
        return outer & ~inner if self.shell else inner


# --------------------------------------------------------------------------- grids
def grid_affine(
    shape: Sequence[int], voxel_mm, center_mm=(0.0, 0.0, 0.0), rotation: np.ndarray | None = None
) -> np.ndarray:
    """Affine of a grid whose array axes 0, 1, 2 run along S, A, R (z, y, x), centred on ``center_mm``.

    Parameters
    ----------
    shape : 3 ints
        Grid shape (axes 0, 1, 2).
    voxel_mm : float or 3 floats
        Spacing along array axes 0, 1, 2, mm (positive).
    center_mm : 3 floats, default (0, 0, 0)
        World RAS position of the grid's centre, mm.
    rotation : (3, 3) array, optional
        Turns the grid axes in world (oblique grids).

    Returns
    -------
    (4, 4) ndarray
        Index -> RAS mm.

    Raises
    ------
    InputError
        A non-positive voxel size.

    Examples
    --------
    >>> affine = grid_affine((3, 4, 5), 0.5)
    >>> affine @ [0, 0, 0, 1], affine @ [1, 1.5, 2, 1]      # first voxel, then the centre
    (array([-1.  , -0.75, -0.5 ,  1.  ]), array([0., 0., 0., 1.]))
    """
    spacing = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    if np.any(spacing <= 0):
        raise InputError(f"voxel_mm={list(spacing)} must be positive (millimetres).")
    cols = REVERSE_AXES[:3, :3] * spacing  # axis0->z, axis1->y, axis2->x
    if rotation is not None:
        cols = np.asarray(rotation, float) @ cols
    affine = np.eye(4)
    affine[:3, :3] = cols
    half = (np.asarray(shape, float) - 1) / 2.0
    affine[:3, 3] = np.asarray(center_mm, float) - cols @ half
    return affine


def world_coords(shape, affine, start=(0, 0, 0)):
    """Broadcastable world x, y, z of a grid block starting at index ``start``.

    Terms with a zero affine coefficient are skipped, so on an axis-aligned
    grid each coordinate stays a thin (n, 1, 1)-like array.

    Parameters
    ----------
    shape : 3 ints
        Block shape.
    affine : (4, 4) array
        Index -> world mm of the whole grid.
    start : 3 numbers, default (0, 0, 0)
        Index of the block's first voxel (fractions give sub-voxel points).

    Returns
    -------
    list of 3 ndarrays
        World x, y, z, mm, broadcastable to ``shape``.

    Examples
    --------
    >>> x, y, z = world_coords((3, 4, 5), grid_affine((3, 4, 5), 0.5))
    >>> x.shape, y.shape, z.shape, x.ravel().tolist()
    ((1, 1, 5), (1, 4, 1), (3, 1, 1), [-1.0, -0.5, 0.0, 0.5, 1.0])
    """
    axes = [
        np.arange(shape[a], dtype=float).reshape([-1 if b == a else 1 for b in range(3)]) + start[a] for a in range(3)
    ]
    out = []
    for r in range(3):
        acc = np.full((1, 1, 1), affine[r, 3])
        for a in range(3):
            if affine[r, a] != 0.0:
                acc = acc + affine[r, a] * axes[a]
        out.append(acc)
    return out


def _index_box(solid: Solid, inv: np.ndarray, shape, margin: int = 1):
    lo, hi = solid.bbox()
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = corners @ inv[:3, :3].T + inv[:3, 3]
    start = np.maximum(np.floor(idx.min(0)).astype(int) - margin, 0)
    stop = np.minimum(np.ceil(idx.max(0)).astype(int) + margin + 1, shape)
    return start, stop


def rasterize(
    solids: Sequence[tuple[int, Solid]],
    shape: Sequence[int],
    affine: np.ndarray,
    to_phantom: np.ndarray | None = None,
    dtype=np.uint8,
    chunk: int = 2_000_000,
) -> np.ndarray:
    """Paint ``(label, solid)`` pairs in order on a grid (nearest: a voxel takes the label of its centre).

    Parameters
    ----------
    solids : list of (int, Solid)
        Later entries overwrite earlier ones.
    shape, affine : the grid (array index -> world mm).
    to_phantom : (4, 4), optional
        Map from this grid's world to phantom world (for a scanner whose world
        differs from the phantom's). Identity when omitted.
    dtype : numpy dtype, default uint8
        Of the label image.
    chunk : int, default 2000000
        Voxels evaluated at once (bounds the memory).

    Returns
    -------
    ndarray
        Labels of ``shape`` (0 where no solid covers the voxel centre).

    Examples
    --------
    >>> affine = grid_affine((3, 4, 5), 0.5)
    >>> labels = rasterize([(1, Sphere((0, 0, 0), 1.0)), (2, Sphere((0, 0, 0), 0.5))], (3, 4, 5), affine)
    >>> labels[1].tolist()                                   # the middle slice
    [[0, 1, 1, 1, 0], [0, 1, 2, 1, 0], [0, 1, 2, 1, 0], [0, 1, 1, 1, 0]]
    """
    shape = tuple(int(s) for s in shape)
    m = np.asarray(affine, float) if to_phantom is None else np.asarray(to_phantom, float) @ affine
    inv = np.linalg.inv(m)
    out = np.zeros(shape, dtype)
    for label, solid in solids:
        start, stop = _index_box(solid, inv, shape)
        if np.any(stop <= start):
            continue
        plane = int((stop[1] - start[1]) * (stop[2] - start[2]))
        step = max(1, chunk // max(plane, 1))
        for a0 in range(start[0], stop[0], step):
            b0 = min(a0 + step, stop[0])
            sub_shape = (b0 - a0, stop[1] - start[1], stop[2] - start[2])
            x, y, z = world_coords(sub_shape, m, (a0, start[1], start[2]))
            hit = np.broadcast_to(solid.inside(x, y, z), sub_shape)
            block = out[a0:b0, start[1] : stop[1], start[2] : stop[2]]
            block[hit] = label
    return out


def fraction_inside(solid: Solid, shape, affine, to_phantom=None, supersample: int = 4) -> np.ndarray:
    """Fraction (0-1) of each voxel inside ``solid``, by ``supersample``^3 sub-points per voxel.

    Parameters
    ----------
    solid : Solid
        The region.
    shape : 3 ints
        Grid shape.
    affine : (4, 4) array
        Index -> world mm.
    to_phantom : (4, 4) array, optional
        Grid world -> phantom world (identity when None).
    supersample : int, default 4
        Sub-points per voxel along each axis.

    Returns
    -------
    ndarray of float32
        Partial-volume fractions, in steps of ``1 / supersample**3``.

    Examples
    --------
    >>> frac = fraction_inside(Sphere((0, 0, 0), 1.0), (3, 4, 5), grid_affine((3, 4, 5), 0.5))
    >>> frac[1, 0].astype(float).round(3).tolist()
    [0.031, 0.688, 1.0, 0.688, 0.031]
    """
    shape = tuple(int(s) for s in shape)
    m = np.asarray(affine, float) if to_phantom is None else np.asarray(to_phantom, float) @ affine
    inv = np.linalg.inv(m)
    out = np.zeros(shape, np.float32)
    start, stop = _index_box(solid, inv, shape)
    if np.any(stop <= start):
        return out
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    block_shape = tuple(stop - start)
    acc = np.zeros(block_shape, np.float32)
    for o0 in sub:
        for o1 in sub:
            for o2 in sub:
                x, y, z = world_coords(block_shape, m, (start[0] + o0, start[1] + o1, start[2] + o2))
                acc += np.broadcast_to(solid.inside(x, y, z), block_shape)
    out[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = acc / supersample**3
    return out


# --------------------------------------------------------------------------- the mouse
@dataclass
class Mouse:
    """A painted phantom: ordered solids plus named sites where cells can go.

    Attributes
    ----------
    solids : list of (label, Solid), painting order.
    sites : dict name -> {"label": int, "center_mm": (3,), "radius_mm": float}
        Organs/nodes where labelled cells home, in phantom world (RAS mm).
    body : Body
        The outline (used for depth from the skin and "outside the body" checks).
    extent_mm : (2, 3) box [min, max] enclosing the whole animal.
    """

    solids: list[tuple[int, Solid]]
    sites: dict[str, dict]
    body: Body
    extent_mm: np.ndarray
    extra_body: list[Solid] = field(default_factory=list)

    def labels(self, shape, affine, to_phantom=None) -> np.ndarray:
        """Tissue label map (uint8, see :data:`LABELS`) on a grid."""
        return rasterize(self.solids, shape, affine, to_phantom)

    def in_body(self, points) -> np.ndarray:
        """True for (N, 3) phantom-world points inside the animal (body or tumour)."""
        p = np.atleast_2d(np.asarray(points, float))
        inside = self.body.contains(p)
        for s in self.extra_body:
            inside |= s.contains(p)
        return inside


def make_mouse(seed: int = 0, jitter: float = 0.04) -> Mouse:
    """A ~25 g mouse, 76 mm nose to tail base, with a subcutaneous tumour on the right flank.

    Organ positions and sizes vary by up to ``jitter`` (fraction) with the seed,
    so subjects of a cohort differ. Coordinates are phantom-world RAS mm
    (``docs/methods/simulator.md#phantom``).

    Parameters
    ----------
    seed : int, default 0
        Seed of the jitter.
    jitter : float, default 0.04
        Largest relative change of organ positions and sizes.

    Returns
    -------
    Mouse
        Solids in painting order (body, skin fat, tumour, fat pads, lungs, organs, vessels,
        spine, lymph nodes, haemorrhage, gut gas), the sites cells home to, the body outline and
        the enclosing box.

    Examples
    --------
    >>> m = make_mouse(0)
    >>> len(m.solids), m.in_body([[0, 0, 0], [0, 30, 0]]).tolist()
    (21, [True, False])
    >>> m = make_mouse(0)
    >>> sorted(m.sites)[:3]
    ['bladder', 'kidney_left', 'kidney_right']
    """
    rng = np.random.default_rng(seed)

    def j(v):  # jitter positions/sizes by a small relative amount
        v = np.asarray(v, float)
        return v * (1.0 + jitter * rng.uniform(-1, 1, v.shape))

    L = LABEL_OF
    body = Body(center=(0.0, 0.0, 0.0), a=11.0, b=9.5, half_length=38.0, power=4.0)
    skin_fat = Body(center=(0.0, 0.0, 0.0), a=11.0, b=9.5, half_length=38.0, power=4.0, shrink_mm=0.5, shell=True)
    tumour_c = j([10.5, -1.0, -10.0])
    tumour = Sphere(tumour_c, float(j(4.0)))
    organs = {
        "liver": Ellipsoid(j([-0.5, 1.5, 13.0]), j([8.5, 6.0, 5.5]), (0, 0, 10)),
        "spleen": Ellipsoid(j([-7.5, -0.5, 7.0]), j([1.4, 1.4, 5.5]), (0, 25, 0)),
        "kidney_left": Ellipsoid(j([-4.5, -4.0, 3.0]), j([2.0, 1.7, 3.5])),
        "kidney_right": Ellipsoid(j([4.5, -4.0, 4.5]), j([2.0, 1.7, 3.5])),
        "bladder": Ellipsoid(j([0.0, 3.0, -21.0]), j([2.5, 2.5, 3.0])),
    }
    lungs = [Ellipsoid(j([-4.5, 0.0, 25.0]), j([3.8, 5.0, 6.5])), Ellipsoid(j([4.5, 0.0, 25.0]), j([3.8, 5.0, 6.5]))]
    fat_pads = [Ellipsoid(j([7.0, 1.0, -17.0]), (3.0, 2.5, 4.0)), Ellipsoid(j([-7.0, 1.0, -17.0]), (3.0, 2.5, 4.0))]
    nodes = {
        "ln_inguinal_right": Sphere(j([7.0, 1.2, -17.0]), float(j(0.9))),
        "ln_inguinal_left": Sphere(j([-7.0, 1.2, -17.0]), float(j(0.9))),
        "ln_iliac": Sphere(j([2.2, -3.2, -12.0]), float(j(0.7))),
    }
    spine = Cylinder((0.0, -7.2, -36.0), (0.0, -7.2, 34.0), 1.1)
    vessels = [
        Cylinder((-0.9, -5.0, -30.0), (-0.9, -5.0, 24.0), 0.5),  # aorta
        Cylinder((1.3, -4.8, -30.0), (1.3, -4.8, 17.0), 0.6),
    ]  # vena cava
    haem = Sphere(tumour_c + np.array([1.2, 1.0, 1.0]), 0.8)  # bleed inside the tumour
    gas = [Sphere(j([3.5, 4.0, -3.0]), 0.6), Sphere(j([-3.0, 5.0, -6.0]), 0.45)]  # gut gas

    solids: list[tuple[int, Solid]] = [(L["muscle"], body), (L["fat"], skin_fat), (L["tumour"], tumour)]
    solids += [(L["fat"], p) for p in fat_pads]
    solids += [(L["lung"], s) for s in lungs]
    solids += [(L[name], s) for name, s in organs.items()]
    solids += [(L["vessel"], v) for v in vessels]
    solids += [(L["bone"], spine)]
    solids += [(L[name], s) for name, s in nodes.items()]
    solids += [(L["haemorrhage"], haem)]
    solids += [(L["gut_gas"], g) for g in gas]

    sites = {}
    for name, s in list(organs.items()) + list(nodes.items()):
        sites[name] = {"label": L[name], "center_mm": s.center.copy(), "radius_mm": float(np.min(s.semi)), "solid": s}
    sites["tumour"] = {
        "label": L["tumour"],
        "center_mm": tumour.center.copy(),
        "radius_mm": float(tumour.semi[0]),
        "solid": tumour,
    }
    sites["lung"] = {"label": L["lung"], "center_mm": lungs[0].center.copy(), "radius_mm": 3.8, "solid": lungs[0]}
    confounders = {"haemorrhage": haem, "gut_gas": gas[0], "vessel": vessels[0], "bone": spine}
    extent = np.array([[-11.5, -10.0, -38.5], [tumour_c[0] + tumour.semi[0] + 0.5, 10.0, 38.5]])
    mouse = Mouse(solids=solids, sites=sites, body=body, extent_mm=extent, extra_body=[tumour])
    mouse.confounders = confounders  # type: ignore[attr-defined]
    return mouse
