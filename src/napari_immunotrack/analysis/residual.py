"""The misalignment a transform leaves between two same-contrast images, measured by block matching.

A rigid (or affine) session alignment cannot undo soft tissue that moved between sessions, and an
optimiser's restarts (``precision_mm``) say how well its optimum is defined, not how far the anatomy
still is from where the transform puts it. Here the residual is measured directly: small blocks of the
post image around structured voxels are searched for in the baseline carried through the transform,
and the sub-voxel shift of best normalised cross-correlation (NCC) of each block is the local residual
(block matching, as used to check registrations: docs/methods/baseline-residual.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..volume import Volume

#: Block edge (voxels), search reach (voxels each way), blocks matched at most, blocks needed.
BLOCK = 7
SEARCH = 4
MAX_BLOCKS = 300
MIN_BLOCKS = 12
#: Blocks needed to measure along one array axis (those that see a shift along it).
MIN_AXIS_BLOCKS = 8
#: Candidate blocks looked at per block matched (on a lattice, drawn at random when there are more).
CANDIDATES_PER_BLOCK = 15
#: A block is trusted when its NCC peak is at least this high and its peak is sharp in every direction
#: (the smallest curvature of the NCC peak at least this fraction of the largest: an edge or a tube, whose
#: shift along itself is undefined, is left out).
MIN_NCC = 0.8
MIN_PEAK_ROUNDNESS = 0.15
#: NCC below the best that still counts as the peak (the search takes the least shift within it).
PEAK_SLACK = 0.02
#: The residual reported: this percentile of the blocks' shifts.
PERCENTILE = 90.0
#: Baseline tolerance at most this many voxels; beyond it, a warning.
MAX_TOLERANCE = 3


@dataclass
class ResidualEstimate:
    """The residual misalignment measured by :func:`residual_misalignment`.

    Attributes
    ----------
    residual_mm : float or None
        The ``percentile``-th percentile of the blocks' shift lengths (mm); None when too few blocks
        could be matched (a featureless or noisy image).
    residual_voxels : float or None
        The largest of ``per_axis_voxels`` (the baseline tolerance looks at a cube of voxels around each
        voxel, so the per-axis reach is what it needs).
    per_axis_voxels : list of float
        Along each array axis, the ``PERCENTILE``-th percentile of the shift's component (post voxels) over
        the blocks that see a shift along that axis (at least ``MIN_AXIS_BLOCKS`` of them, else 0).
    median_mm, max_mm : float or None
        Median and largest shift length of the trusted blocks (mm).
    n_blocks, n_tried : int
        Blocks trusted and blocks matched.
    n_beyond : int
        Trusted blocks whose peak lies on the edge of the search (their shift, a lower bound, is counted).
    seconds : float
        Time taken.
    """

    residual_mm: float | None
    residual_voxels: float | None
    median_mm: float | None
    max_mm: float | None
    n_blocks: int
    n_tried: int
    seconds: float
    n_beyond: int = 0
    per_axis_voxels: list = field(default_factory=list)
    shifts_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)

    def to_dict(self) -> dict:
        """JSON-ready record (the shifts themselves are left out)."""

        def r(v):
            return None if v is None else round(float(v), 4)

        return {
            "method": f"block matching (NCC, {BLOCK}^3-voxel blocks, +-{SEARCH} voxels, sub-voxel peak)",
            "percentile": PERCENTILE,
            "residual_mm": r(self.residual_mm),
            "residual_voxels": r(self.residual_voxels),
            "per_axis_voxels": [r(v) for v in self.per_axis_voxels],
            "median_mm": r(self.median_mm),
            "max_mm": r(self.max_mm),
            "blocks_trusted": int(self.n_blocks),
            "blocks_matched": int(self.n_tried),
            "blocks_at_search_edge": int(self.n_beyond),
            "seconds": round(float(self.seconds), 3),
        }


def _block_starts(shape, margin, block, max_candidates, rng):
    """Corner indices of candidate blocks on a lattice one block apart, at most ``max_candidates`` (random)."""
    axes = [np.arange(margin, s - margin - block + 1, block) for s in shape]
    if any(a.size == 0 for a in axes):
        return np.zeros((0, 3), int)
    n = int(np.prod([a.size for a in axes]))
    flat = np.arange(n) if n <= max_candidates else np.sort(rng.choice(n, max_candidates, replace=False))
    idx = np.unravel_index(flat, tuple(a.size for a in axes))
    return np.stack([axes[k][idx[k]] for k in range(3)], axis=1)


def _gather(data, starts, size):
    """Blocks ``data[s:s+size]`` for each start (N, size, size, size), by fancy indexing."""
    o = np.arange(size)
    i = starts[:, 0, None, None, None] + o[None, :, None, None]
    j = starts[:, 1, None, None, None] + o[None, None, :, None]
    k = starts[:, 2, None, None, None] + o[None, None, None, :]
    return data[i, j, k]


def _structure(blocks):
    """Gradient energy of each block (the trace of its structure tensor)."""
    g = [
        np.diff(blocks, axis=a)[:, : blocks.shape[1] - 1, : blocks.shape[2] - 1, : blocks.shape[3] - 1]
        for a in (1, 2, 3)
    ]
    g = [x.reshape(len(blocks), -1) for x in g]
    tensor = np.empty((len(blocks), 3, 3), np.float64)
    for a in range(3):
        for b in range(a, 3):
            tensor[:, a, b] = tensor[:, b, a] = np.einsum("ni,ni->n", g[a], g[b])
    return np.trace(tensor, axis1=1, axis2=2)


def _ncc_maps(templates, regions):
    """NCC of each template against every placement inside its search region: (N, 2s+1, 2s+1, 2s+1)."""
    n, b = templates.shape[0], templates.shape[1]
    size = regions.shape[1]
    reach = size - b + 1
    t = templates - templates.mean(axis=(1, 2, 3), keepdims=True)
    t /= np.sqrt((t * t).sum(axis=(1, 2, 3), keepdims=True)) + 1e-12
    pad = np.zeros((n, size, size, size), np.float64)
    pad[:, :b, :b, :b] = t
    # correlation by FFT: placements 0..2s fit inside the region, so nothing wraps round
    num = np.fft.irfftn(
        np.conj(np.fft.rfftn(pad, axes=(1, 2, 3))) * np.fft.rfftn(regions, axes=(1, 2, 3)),
        s=(size,) * 3,
        axes=(1, 2, 3),
    )
    num = num[:, :reach, :reach, :reach]

    # each placement's sum and sum of squares: running sums, one axis at a time (a separable box sum)
    def window_sums(x):
        for axis in (1, 2, 3):
            c = np.cumsum(x, axis=axis)
            upper = np.take(c, np.arange(b - 1, b - 1 + reach), axis=axis)
            lower = np.take(c, np.arange(-1, reach - 1), axis=axis)
            lower[(slice(None),) * axis + (0,)] = 0.0  # the first placement starts at the region's edge
            x = upper - lower
        return x

    s1, s2 = window_sums(regions), window_sums(regions * regions)
    var = np.maximum(s2 - s1 * s1 / b**3, 0.0)
    return num / (np.sqrt(var) + 1e-12)


def _subvoxel_peaks(ncc, reach):
    """Sub-voxel peak of each NCC map by a quadratic fit on the 3x3x3 around the best placement.

    An edge or a tube slides along itself: its NCC peak is a ridge, flat in some directions, and the best
    placement along the ridge is noise. Only the shift across the ridge is measured: the quadratic's
    directions whose curvature is at least ``MIN_PEAK_ROUNDNESS`` of the sharpest one ("stiff"), and the
    shift is projected on them (the part of the misalignment that moves intensities).

    Returns the shifts (N, 3; voxels, projected on each block's stiff directions; a peak on the edge of the
    search along a stiff direction gives its edge placement, a lower bound), whether each peak is on that
    edge, whether each block is trusted (peak NCC at least ``MIN_NCC``, some stiff direction), and how much
    each array axis lies in each block's stiff directions (N, 3; 0 to 1).
    """
    n = len(ncc)
    s = (reach - 1) / 2
    # the placement nearest no shift among those within PEAK_SLACK of the best: along a ridge, the least
    # shift the block allows (a sharp peak is then refined by the quadratic fit below)
    maps = ncc.reshape(n, -1)
    offsets = np.stack(np.unravel_index(np.arange(maps.shape[1]), ncc.shape[1:]), axis=1) - s
    near = np.where(maps >= maps.max(axis=1, keepdims=True) - PEAK_SLACK, (offsets**2).sum(axis=1), np.inf)
    flat = np.argmin(near - 1e-6 * maps, axis=1)
    peak = np.stack(np.unravel_index(flat, ncc.shape[1:]), axis=1)
    at_border = (peak < 1) | (peak > reach - 2)
    p = np.clip(peak, 1, reach - 2)
    rows = np.arange(n)

    def at(d):
        return ncc[rows, p[:, 0] + d[0], p[:, 1] + d[1], p[:, 2] + d[2]]

    centre = at((0, 0, 0))
    grad = np.zeros((n, 3))
    hess = np.zeros((n, 3, 3))
    unit = np.eye(3, dtype=int)
    for a in range(3):
        plus, minus = at(unit[a]), at(-unit[a])
        grad[:, a] = (plus - minus) / 2
        hess[:, a, a] = plus + minus - 2 * centre
        for b in range(a + 1, 3):
            hess[:, a, b] = hess[:, b, a] = (
                at(unit[a] + unit[b]) - at(unit[a] - unit[b]) - at(unit[b] - unit[a]) + at(-unit[a] - unit[b])
            ) / 4
    eig, vec = np.linalg.eigh(hess)  # negative curvatures at a maximum, most negative first
    curv = -eig
    sharpest = np.maximum(curv[:, :1], 1e-12)
    stiff = (curv > 0) & (curv >= MIN_PEAK_ROUNDNESS * sharpest)  # (N, 3) per eigen-direction
    # Newton step of the quadratic, in the stiff directions only
    along = np.einsum("nak,na->nk", vec, grad)
    step = np.where(stiff, along / np.where(stiff, curv, 1.0), 0.0)
    offset = np.einsum("nak,nk->na", vec, step)
    # a peak on the edge of the search along a stiff direction may lie beyond it: its shift is a lower bound
    stiff_weight = np.einsum("nak,nk->na", vec**2, stiff.astype(float))  # how much each axis is stiff
    beyond = np.any(at_border & (stiff_weight > 0.25), axis=1)
    shift = np.where(beyond[:, None], peak - s, p + offset - s)
    # the shift across the ridge: projected on the stiff directions
    proj = np.where(stiff, np.einsum("nak,na->nk", vec, shift), 0.0)
    # (a peak on the search's edge is not where the quadratic was fitted: its placement is kept as it is)
    shift = np.where(beyond[:, None], shift, np.einsum("nak,nk->na", vec, proj))
    best = ncc.reshape(n, -1).max(axis=1)
    ok = (best >= MIN_NCC) & stiff.any(axis=1) & (beyond | np.all(np.abs(step) <= 1.0, axis=1))
    return shift, beyond & ok, ok, stiff_weight


def residual_misalignment(
    post: Volume,
    baseline: Volume,
    transform: np.ndarray | None = None,
    *,
    max_blocks: int = MAX_BLOCKS,
    seed: int = 0,
) -> ResidualEstimate:
    """How far the baseline, carried through ``transform``, still is from the post image (block matching).

    Blocks of ``BLOCK``\\ ^3 post voxels are taken where the post image has structure in all three
    directions (largest smallest eigenvalue of the structure tensor) and lies inside the body on both
    images (above each image's Otsu threshold at the block centre). For each block, the baseline is
    sampled through ``transform`` (trilinear) on the block's region grown by ``SEARCH`` voxels, and the
    placement of best normalised cross-correlation is refined to a sub-voxel peak by a quadratic fit.
    Blocks whose peak is low (NCC < ``MIN_NCC``), on the edge of the search, or flat in some direction
    (edges and tubes slide along themselves) are left out. The residual is the ``PERCENTILE``-th
    percentile of the trusted shifts. NCC ignores gain; the coil profile is smooth at a block's scale.
    The cost depends on the number of blocks, not on the image size (candidates are sampled on a lattice).
    See docs/methods/baseline-residual.md.

    Parameters
    ----------
    post : Volume
        The post-injection image (fixed; its grid is the one the tolerance is counted in).
    baseline : Volume
        The baseline of the same contrast, in its own pose.
    transform : (4, 4) array, optional
        Post world (RAS mm) -> baseline world; identity when omitted.
    max_blocks : int, default MAX_BLOCKS
        Blocks matched at most.
    seed : int, default 0
        Seed of the candidate lattice's sampling on large images.

    Returns
    -------
    ResidualEstimate

    Examples
    --------
    A textured image against itself moved by 0.15 mm along x (1.5 voxels of 0.1 mm):

    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> tex = ndimage.gaussian_filter(rng.normal(size=(40, 40, 40)), 1.5).astype(np.float32) * 100 + 500
    >>> post = Volume(tex, np.diag([0.1, 0.1, 0.1, 1.0]))
    >>> moved = np.eye(4); moved[0, 3] = 0.15        # the baseline sits 0.15 mm further along x
    >>> est = residual_misalignment(post, post, moved)
    >>> round(est.residual_mm, 2), round(est.residual_voxels, 1), est.n_blocks >= MIN_BLOCKS
    (0.15, 1.5, True)
    >>> residual_misalignment(post, post).residual_mm < 0.02           # the right transform: (almost) nothing
    True
    """
    import time

    from scipy import ndimage

    from .body import otsu_threshold

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if any(hasattr(v.data, "dask") for v in (post, baseline)):  # lazy images are not read whole for this
        return ResidualEstimate(None, None, None, None, 0, 0, time.perf_counter() - t0)
    data = np.asarray(post.numpy(), np.float32)
    if data.ndim != 3:
        data = data.reshape(data.shape[-3:]) if np.prod(data.shape[:-3]) == 1 else data[(0,) * (data.ndim - 3)]
    b, s = BLOCK, SEARCH
    empty = ResidualEstimate(None, None, None, None, 0, 0, 0.0)
    starts = _block_starts(data.shape, s, b, CANDIDATES_PER_BLOCK * max_blocks, rng)
    if len(starts) < MIN_BLOCKS:
        empty.seconds = time.perf_counter() - t0
        return empty
    blocks = _gather(data, starts, b).astype(np.float64)
    finite = np.isfinite(blocks).all(axis=(1, 2, 3))
    sample = data[:: max(1, data.shape[0] // 32), :: max(1, data.shape[1] // 32), :: max(1, data.shape[2] // 32)]
    sample = sample[np.isfinite(sample)]
    body_cut = otsu_threshold(sample) if sample.size else 0.0
    c = b // 2
    in_body = blocks[:, c, c, c] > body_cut
    # baseline's own body: its Otsu threshold, read at the block centres through the transform
    world_map = np.eye(4) if transform is None else np.asarray(transform, float)
    to_base = np.linalg.inv(baseline.affine) @ world_map @ post.affine
    base_data = np.asarray(baseline.numpy(), np.float32)
    if base_data.ndim != 3:
        base_data = (
            base_data.reshape(base_data.shape[-3:])
            if np.prod(base_data.shape[:-3]) == 1
            else base_data[(0,) * (base_data.ndim - 3)]
        )
    bs = base_data[
        :: max(1, base_data.shape[0] // 32), :: max(1, base_data.shape[1] // 32), :: max(1, base_data.shape[2] // 32)
    ]
    bs = bs[np.isfinite(bs)]
    base_cut = otsu_threshold(bs) if bs.size else 0.0
    centres = (starts + c).astype(float)
    cidx = (to_base[:3, :3] @ centres.T + to_base[:3, 3:4]).T
    base_centre = ndimage.map_coordinates(base_data, cidx.T, order=1, mode="constant", cval=np.nan)
    keep = finite & in_body & (base_centre > base_cut)
    starts, blocks = starts[keep], blocks[keep]
    if len(starts) < MIN_BLOCKS:
        empty.seconds = time.perf_counter() - t0
        return empty
    score = _structure(blocks)
    order = np.argsort(score)[::-1][:max_blocks]
    starts, blocks = starts[order], blocks[order]
    # the baseline on each block's search region, through the transform (only these voxels are resampled)
    size = b + 2 * s
    o = np.arange(size) - s
    grid = np.stack(np.meshgrid(o, o, o, indexing="ij"), axis=0).reshape(3, -1).astype(float)
    pts = starts.T[:, :, None].astype(float) + grid[:, None, :]  # (3, N, size^3) post voxel indices
    idx = np.einsum("ij,jnk->ink", to_base[:3, :3], pts) + to_base[:3, 3][:, None, None]
    regions = ndimage.map_coordinates(base_data, idx.reshape(3, -1), order=1, mode="constant", cval=np.nan)
    regions = regions.reshape(len(starts), size, size, size).astype(np.float64)
    whole = np.isfinite(regions).all(axis=(1, 2, 3))
    starts, blocks, regions = starts[whole], blocks[whole], regions[whole]
    n_tried = len(starts)
    if n_tried < MIN_BLOCKS:
        return ResidualEstimate(None, None, None, None, 0, n_tried, time.perf_counter() - t0)
    ncc = _ncc_maps(blocks, regions)
    shift, beyond, ok, stiff_weight = _subvoxel_peaks(ncc, 2 * s + 1)
    shift, stiff_weight, n_beyond = shift[ok], stiff_weight[ok], int(beyond.sum())
    if len(shift) < MIN_BLOCKS:
        return ResidualEstimate(None, None, None, None, int(len(shift)), n_tried, time.perf_counter() - t0)
    spacing = np.asarray(post.spacing, float)
    shifts_mm = shift * spacing
    length = np.linalg.norm(shifts_mm, axis=1)
    # per axis, over the blocks that can see a shift along it (that axis mostly in their stiff directions):
    # a scene of tubes along one axis says nothing along it in most blocks, and their zeros would dilute the
    # few blocks (ends, spheres) that do
    in_voxels = np.abs(shift * spacing / float(spacing.min()))
    per_axis = [
        float(np.percentile(in_voxels[stiff_weight[:, a] > 0.5, a], PERCENTILE))
        if np.count_nonzero(stiff_weight[:, a] > 0.5) >= MIN_AXIS_BLOCKS
        else 0.0
        for a in range(3)
    ]
    return ResidualEstimate(
        residual_mm=float(np.percentile(length, PERCENTILE)),
        residual_voxels=max(per_axis),
        per_axis_voxels=per_axis,
        median_mm=float(np.median(length)),
        max_mm=float(length.max()),
        n_blocks=int(len(shift)),
        n_tried=n_tried,
        seconds=time.perf_counter() - t0,
        n_beyond=n_beyond,
        shifts_mm=shifts_mm,
    )


def baseline_tolerance(
    post: Volume, baseline: Volume, transform: np.ndarray | None = None, precision_mm: float | None = None
) -> tuple[int, dict]:
    """The baseline tolerance (post voxels) a baseline carried through ``transform`` calls for, and its record.

    ``max(1, precision, residual)``, at most ``MAX_TOLERANCE``: *precision* is the optimiser's spread
    (``precision_mm``) rounded up to whole voxels; *residual* is the measured misalignment
    (:func:`residual_misalignment`'s ``residual_voxels``: the 90th percentile of the blocks' largest
    per-axis shift) rounded to the nearest voxel. A neighbourhood of ``t`` voxels catches a dark structure
    moved by up to about ``t + 0.5`` voxels: the trilinear sample ``t`` voxels away still holds more than
    half of it (docs/methods/baseline-residual.md, where the rounding is measured). When the
    residual calls for more than ``MAX_TOLERANCE`` voxels a warning says so: a larger neighbourhood would
    hide real cells near every dark structure, so the baseline needs a deformable alignment instead.

    Parameters
    ----------
    post : Volume
        The post-injection image (its voxels count the tolerance).
    baseline : Volume
        The baseline in its own pose.
    transform : (4, 4) array, optional
        Post world -> baseline world (identity when omitted).
    precision_mm : float, optional
        The alignment's own precision estimate (mm), when it has one.

    Returns
    -------
    (int, dict)
        The tolerance and a JSON-ready record (``tolerance_voxels``, ``from_precision``, ``from_residual``,
        ``capped``, ``residual``: :meth:`ResidualEstimate.to_dict`).

    Examples
    --------
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> tex = ndimage.gaussian_filter(rng.normal(size=(40, 40, 40)), 1.5).astype(np.float32) * 100 + 500
    >>> post = Volume(tex, np.diag([0.1, 0.1, 0.1, 1.0]))
    >>> moved = np.eye(4); moved[:3, 3] = [0.2, 0.0, 0.05]      # 2 voxels along x left by the transform
    >>> tolerance, record = baseline_tolerance(post, post, moved, precision_mm=0.04)
    >>> tolerance, record["from_precision"], record["from_residual"]
    (2, 1, 2)
    >>> baseline_tolerance(post, post)[0]
    1
    """
    import warnings

    from ..errors import ImmunotrackWarning

    voxel = float(np.min(post.spacing))
    from_precision = 1 if precision_mm is None else max(1, int(np.ceil(float(precision_mm) / voxel - 1e-9)))
    estimate = residual_misalignment(post, baseline, transform)
    from_residual = None if estimate.residual_voxels is None else int(np.floor(estimate.residual_voxels + 0.5))
    wanted = max(1, from_precision, from_residual or 0)
    tolerance = min(MAX_TOLERANCE, wanted)
    record = {
        "tolerance_voxels": int(tolerance),
        "from_precision": int(from_precision),
        "from_residual": from_residual,
        "capped": bool(wanted > MAX_TOLERANCE),
        "rule": "max(1, ceil(precision), round(residual 90th percentile per axis)), at most "
        f"{MAX_TOLERANCE} voxels (docs/methods/baseline-residual.md)",
        "residual": estimate.to_dict(),
    }
    if estimate.residual_voxels is None:
        record["note"] = "not measured (a lazy image, or too few structured blocks matched)"
    if wanted > MAX_TOLERANCE:
        measured = (from_residual or 0) > MAX_TOLERANCE and estimate.residual_voxels is not None
        off = float(estimate.residual_voxels or 0.0) if measured else float(precision_mm or 0.0) / voxel
        warnings.warn(
            f"the baseline {baseline.name or ''} still differs from the post image by {off * voxel:.2f} mm "
            f"({off:.1f} voxels, {'90th percentile' if measured else 'the alignment precision'}) after "
            f"alignment: soft tissue moved; the baseline test looks {MAX_TOLERANCE} voxels around each voxel "
            "only. Consider a deformable alignment (immunotrack align --transform bspline) and a baseline "
            "resampled onto the post image through it.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    return int(tolerance), record
