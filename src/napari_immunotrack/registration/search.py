"""Orientation search: the capture range of :func:`~.intensity.register` (``docs/methods/registration.md``).

A gradient optimiser of mutual information only finds the optimum whose basin
holds its start; from a start 30 degrees off it may settle on a wrong pose.
Before optimising, :func:`orientation_grid` lists rotations (every
combination of ``-range .. +range`` in ``step`` degrees about the three axes,
about the fixed image's centre of mass) and :func:`score_transforms` scores
all of them at once on the coarsest pyramid level: one trilinear
interpolation and one histogram count for every candidate together, the
moving image's value outside its field of view taken as its minimum (no
signal), so a candidate cannot win by pushing the anatomy out of view.
:func:`distinct_best` then keeps the best few candidates that are not grid
neighbours of a better one: those are the starts the optimiser refines.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..affines import ras_to_lps_transform


def orientation_grid(capture_range_deg: float, step_deg: float = 15.0) -> np.ndarray:
    """Euler angles (degrees, (K, 3), about x, y, z) of the search: ``-range..+range`` per axis, evenly
    spaced at most ``step`` apart.

    The identity comes first, then the others by increasing sum of absolute angles. A range of 0
    gives only the identity. Each axis gets ``2 n + 1`` angles with ``n = ceil(range / step)``, so
    the spacing is ``range / n``: a 20 degree range in 15 degree steps is sampled every 10 degrees
    (``docs/methods/registration.md#capture-range-the-orientation-search``).

    Parameters
    ----------
    capture_range_deg : float
        Largest rotation tried about each axis, degrees (<= 0: identity only).
    step_deg : float, default 15.0
        Largest spacing between tried angles, degrees.

    Returns
    -------
    (K, 3) ndarray
        ``K = (2 n + 1) ** 3`` rows of angles about x, y, z, degrees.

    Examples
    --------
    >>> orientation_grid(30).shape
    (125, 3)
    >>> orientation_grid(30)[:3].tolist()
    [[0.0, 0.0, 0.0], [-15.0, 0.0, 0.0], [0.0, -15.0, 0.0]]
    >>> sorted(set(orientation_grid(20, 15)[:, 0].tolist()))
    [-20.0, -10.0, 0.0, 10.0, 20.0]
    >>> orientation_grid(0).tolist()
    [[0.0, 0.0, 0.0]]
    """
    capture_range_deg, step_deg = float(capture_range_deg), float(step_deg)
    if capture_range_deg <= 0:
        return np.zeros((1, 3))
    n = max(1, int(np.ceil(capture_range_deg / step_deg - 1e-6)))
    steps = np.linspace(-capture_range_deg, capture_range_deg, 2 * n + 1)
    grid = np.array(list(itertools.product(steps, steps, steps)), float)
    order = np.argsort(np.abs(grid).sum(axis=1), kind="stable")  # identity first, then by distance
    return grid[order]


def euler_matrices_ras(angles_deg, center_lps, translation_lps) -> np.ndarray:
    """(K, 4, 4) RAS ``fixed_to_moving`` matrices of SimpleITK Euler3DTransforms with these angles.

    ITK's Euler transform rotates ``R = Rz @ Rx @ Ry`` (its default order) about
    ``center`` and then translates, in LPS: the same matrices as building each
    transform and reading it back, without a round trip per candidate.

    Parameters
    ----------
    angles_deg : (K, 3) array
        Rotation angles about x, y, z, degrees (e.g. :func:`orientation_grid`).
    center_lps : (3,) array
        Centre of rotation, LPS mm.
    translation_lps : (3,) array
        Translation applied after the rotation, LPS mm.

    Returns
    -------
    (K, 4, 4) ndarray
        The RAS ``fixed_to_moving`` matrices (mm).

    Examples
    --------
    >>> [quarter] = euler_matrices_ras([[0, 0, 90]], [10, 0, 0], [0, 0, 5])   # about z through LPS (10, 0, 0)
    >>> (quarter @ [-10, 0, 0, 1]).round(6)        # the centre (RAS x = -10) stays, then 5 mm up
    array([-10.,   0.,   5.,   1.])
    >>> quarter[:3, :3].round(6).tolist()
    [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    a = np.deg2rad(np.asarray(angles_deg, float))
    cx, cy, cz = np.cos(a).T
    sx, sy, sz = np.sin(a).T
    one, zero = np.ones(len(a)), np.zeros(len(a))
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], axis=1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], axis=1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], axis=1).reshape(-1, 3, 3)
    rot = rz @ rx @ ry
    c = np.asarray(center_lps, float)
    lps = np.tile(np.eye(4), (len(a), 1, 1))
    lps[:, :3, :3] = rot
    lps[:, :3, 3] = c - rot @ c + np.asarray(translation_lps, float)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def score_transforms(sampler, matrices_ras) -> tuple:
    """Mutual information (nats) and overlap of many fixed-to-moving RAS matrices on one sampler's points.

    Parameters
    ----------
    sampler : intensity._Sampler
        Fixed points (LPS mm) with their histogram bins, and the moving level image.
    matrices_ras : (K, 4, 4) array
        Candidate ``fixed_to_moving`` maps.

    Returns
    -------
    mi : (K,) array
        Mutual information of each candidate's joint histogram (higher is better);
        points outside the moving field of view count as the moving image's minimum.
    overlap : (K,) array
        Share of the fixed points that land inside the moving image.

    Examples
    --------
    The sampler is built by :func:`~napari_immunotrack.registration.register`; any object with its
    attributes will do, here a moving image bright where LPS x >= 4 mm and fixed points binned alike:

    >>> from types import SimpleNamespace
    >>> moving = np.zeros((8, 8, 8), np.float32); moving[:, :, 4:] = 1.0
    >>> points = np.array([[x, y, z] for x in range(1, 7) for y in (2, 5) for z in (2, 5)], float)   # LPS mm
    >>> sampler = SimpleNamespace(points=points, bins=2, fbin=(points[:, 0] >= 4).astype(np.int64),
    ...                           moving=moving, moving_flat=moving.ravel(), m_lo=0.0, m_hi=1.0,
    ...                           m_inv=np.eye(3), m_origin=np.zeros(3), m_size=np.array([8, 8, 8]))
    >>> shift = np.eye(4); shift[0, 3] = 2.0                     # 2 mm to the Right (RAS)
    >>> mi, overlap = score_transforms(sampler, [np.eye(4), shift])
    >>> mi.round(3), overlap.round(3)                            # identity: log(2) nats, all points inside
    (array([0.693, 0.132]), array([1.   , 0.833]))
    """
    mats = np.array([ras_to_lps_transform(m) for m in np.asarray(matrices_ras, float)])
    k, bins = len(mats), sampler.bins
    # fixed LPS point -> moving continuous index (sitk order x, y, z), one 3x4 matrix per candidate
    linear = sampler.m_inv @ mats[:, :3, :3]
    offset = (mats[:, :3, 3] - sampler.m_origin) @ sampler.m_inv.T
    pts = sampler.points.astype(np.float32)
    idx = np.matmul(pts[None], linear.transpose(0, 2, 1).astype(np.float32)) + offset[:, None, :].astype(np.float32)
    size = sampler.m_size
    inside = np.all((idx >= 0) & (idx <= size - 1), axis=2)
    # trilinear interpolation by flat indices into the (z, y, x) array, every candidate at once (NumPy only:
    # importing scipy.ndimage would cost the command line more than the interpolation itself)
    idx = np.clip(idx, 0, size - 1)
    base = np.minimum(idx.astype(np.int64), size - 2)
    frac = idx - base
    _, ny_, nx_ = sampler.moving.shape
    start = (base[..., 2] * ny_ + base[..., 1]) * nx_ + base[..., 0]
    flat = np.asarray(sampler.moving_flat, np.float32)
    fx = frac[..., 0]
    values = np.zeros(start.shape, np.float32)
    for dz in (0, 1):
        wz = frac[..., 2] if dz else 1 - frac[..., 2]
        for dy in (0, 1):
            w = wz * (frac[..., 1] if dy else 1 - frac[..., 1])
            row = start + (dz * ny_ + dy) * nx_
            lo = flat[row]
            values += w * (lo + fx * (flat[row + 1] - lo))
    # outside the field of view: the moving minimum (no signal)
    values = np.where(inside, values, np.float32(sampler.m_lo))
    mbin = np.clip(
        ((values - sampler.m_lo) / max(sampler.m_hi - sampler.m_lo, 1e-30) * bins).astype(np.int64), 0, bins - 1
    )
    cell = sampler.fbin[None, :] * bins + mbin + (np.arange(k) * bins * bins)[:, None]
    joint = np.bincount(cell.ravel(), minlength=k * bins * bins).reshape(k, bins, bins).astype(np.float64)
    joint /= joint.sum(axis=(1, 2), keepdims=True)
    outer = joint.sum(axis=2)[:, :, None] * joint.sum(axis=1)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / np.where(outer > 0, outer, 1.0)), 0.0)
    return terms.sum(axis=(1, 2)), inside.mean(axis=1)


def distinct_best(scores, angles_deg, count: int, step_deg: float) -> list:
    """Indices of the ``count`` best candidates, skipping grid neighbours (within one step on every axis)
    of a better one kept already: they would lead the optimiser to the same optimum.

    Parameters
    ----------
    scores : (K,) array
        Score of each candidate (higher is better; NaN counts as worst).
    angles_deg : (K, 3) array
        The candidates' Euler angles, degrees.
    count : int
        How many candidates to keep at most.
    step_deg : float
        Grid step, degrees: candidates within one step on every axis of a kept one are skipped.

    Returns
    -------
    list of int
        Indices into ``scores``, best first.

    Examples
    --------
    >>> angles = orientation_grid(15)
    >>> scores = -np.abs(angles - [15, 0, 0]).sum(axis=1)   # best at +15 about x
    >>> [angles[i].tolist() for i in distinct_best(scores, angles, 2, 15)]
    [[15.0, 0.0, 0.0], [-15.0, 0.0, 0.0]]
    """
    scores = np.asarray(scores, float)
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")
    kept: list = []
    for i in order:
        if len(kept) >= count:
            break
        if any(np.all(np.abs(angles_deg[i] - angles_deg[j]) <= step_deg + 1e-6) for j in kept):
            continue
        kept.append(int(i))
    return kept


def pose_distance_mm(a_ras, b_ras, points_ras) -> float:
    """Largest distance (mm) between where two transforms send the same points (e.g. the fixed body's box).

    Parameters
    ----------
    a_ras, b_ras : (4, 4) array
        Two RAS world transforms.
    points_ras : (N, 3) array
        Points to map, RAS mm.

    Returns
    -------
    float
        ``max_i |a(p_i) - b(p_i)|``, mm.

    Examples
    --------
    >>> shift = np.eye(4); shift[0, 3] = 2.0
    >>> pose_distance_mm(np.eye(4), shift, [[0, 0, 0], [10, 10, 10]])
    2.0
    >>> [quarter] = euler_matrices_ras([[0, 0, 90]], [0, 0, 0], [0, 0, 0])
    >>> round(pose_distance_mm(np.eye(4), quarter, [[10, 0, 0], [0, 0, 0]]), 3)   # 10 mm arm, 90 degrees
    14.142
    """
    pts = np.c_[np.asarray(points_ras, float), np.ones(len(points_ras))]
    return float(np.linalg.norm((pts @ np.asarray(a_ras).T - pts @ np.asarray(b_ras).T)[:, :3], axis=1).max())
