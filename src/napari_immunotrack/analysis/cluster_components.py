"""The connected-components engine of the cluster segmentation, block by block.

Split from :mod:`.clusters` (which re-exports every name here and drives it, in memory or chunk by chunk
with dask): components of a candidate mask labelled per block, joined across block faces by a union-find,
per-component sums and extremes from sparse voxel lists (no full-size label array for a chunked volume),
and touching blooms split by a watershed on minima deeper than ``split_h``. See
``docs/methods/clusters.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..volume import Volume

#: Neighbourhood size (6, 18, 26 neighbours) -> ``ndimage.generate_binary_structure`` connectivity rank.
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}

#: Per-label statistics that are sums (merged across blocks by adding; see :func:`sparse_label_stats`).
SUM_STAT_KEYS = ("count", "seeds", "sw", "swz", "swy", "swx", "sz", "sy", "sx", "sr", "spost", "spre")

#: Per-label statistics that are minima (smallest normalised signal, first flat index, box low corner).
MIN_STAT_KEYS = ("min_r", "first", "lo0", "lo1", "lo2")

#: Per-label statistics that are maxima (box high corner, voxel indices per axis).
MAX_STAT_KEYS = ("hi0", "hi1", "hi2")


def sparse_label_stats(
    lab: np.ndarray, n: int, coords, post_vals, pre_vals, ref_mean: float, global_shape, seeds=None
) -> dict[str, np.ndarray]:
    """Per-label sums, minima and maxima of the voxels of labels 1..n (arrays of length n + 1).

    ``coords`` are global voxel indices (3 arrays). Everything a table row
    needs is additive (sums) or a min/max, so blocks merge exactly.

    Parameters
    ----------
    lab : ndarray of int
        Label (1..n) of each listed voxel.
    n : int
        Number of labels; the outputs have length ``n + 1`` (index 0 unused).
    coords : tuple of 3 arrays
        Global voxel indices (z, y, x) of the listed voxels.
    post_vals, pre_vals : array_like
        Post-injection values of the listed voxels; baseline values or None.
    ref_mean : float
        Reference tissue mean; the normalised signal is ``post / ref_mean``.
    global_shape : tuple of int
        Shape of the whole volume (for the flat index ``first``).
    seeds : array_like of bool, optional
        Which voxels are seeds (default: all of them).

    Returns
    -------
    dict of str to ndarray
        One float64 array of length ``n + 1`` per key of :data:`SUM_STAT_KEYS`,
        :data:`MIN_STAT_KEYS` and :data:`MAX_STAT_KEYS`.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.array([1, 1, 2])
    >>> coords = (np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0, 0, 1]))
    >>> st = sparse_label_stats(lab, 2, coords, [0.5, 1.0, 0.2], None, 1.0, (2, 2, 2))
    >>> st["count"].tolist(), st["sw"].tolist(), st["hi1"].tolist()
    ([0.0, 2.0, 1.0], [0.0, 0.5, 0.8], [-inf, 1.0, 1.0])
    """
    post_vals = np.asarray(post_vals, np.float64)
    r = post_vals / ref_mean
    w = np.clip(1.0 - r, 0.0, 1.0)
    w = np.where(np.isfinite(w), w, 0.0)
    z, y, x = (np.asarray(c, np.float64) for c in coords)
    out = {}
    m = n + 1

    def bc(weights=None):
        return np.bincount(lab, weights=weights, minlength=m)[:m].astype(np.float64)

    out["count"] = bc()
    out["seeds"] = out["count"].copy() if seeds is None else bc(np.asarray(seeds, np.float64))
    out["sw"], out["swz"], out["swy"], out["swx"] = bc(w), bc(w * z), bc(w * y), bc(w * x)
    out["sz"], out["sy"], out["sx"] = bc(z), bc(y), bc(x)
    out["sr"] = bc(np.where(np.isfinite(r), r, 0.0))
    out["spost"] = bc(np.where(np.isfinite(post_vals), post_vals, 0.0))
    out["spre"] = bc(np.asarray(pre_vals, np.float64)) if pre_vals is not None else np.full(m, np.nan)
    first = np.ravel_multi_index(tuple(np.asarray(c, np.int64) for c in coords), global_shape).astype(np.float64)
    mins = {"min_r": r, "first": first, "lo0": z, "lo1": y, "lo2": x}
    maxs = {"hi0": z, "hi1": y, "hi2": x}
    for k in MIN_STAT_KEYS:
        out[k] = np.full(m, np.inf)
    for k in MAX_STAT_KEYS:
        out[k] = np.full(m, -np.inf)
    if lab.size:
        order = np.argsort(lab, kind="stable")
        sl = lab[order]
        starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
        ids = sl[starts]
        for k, v in mins.items():
            out[k][ids] = np.minimum.reduceat(v[order], starts)
        for k, v in maxs.items():
            out[k][ids] = np.maximum.reduceat(v[order], starts)
    return out


def merge_label_stats(stats: dict[str, np.ndarray], groups: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Combine per-label statistics into groups (``groups[i]`` the group of label i).

    Parameters
    ----------
    stats : dict of str to ndarray
        Per-label statistics as from :func:`sparse_label_stats`.
    groups : ndarray of int
        Group of each label (same length as the statistics).
    n_groups : int
        Number of groups.

    Returns
    -------
    dict of str to ndarray
        The statistics of each group: sums added, minima and maxima reduced.

    Examples
    --------
    >>> import numpy as np
    >>> coords = (np.zeros(3, int), np.zeros(3, int), np.arange(3))
    >>> st = sparse_label_stats(np.array([1, 2, 2]), 2, coords, [0.5, 0.5, 0.5], None, 1.0, (1, 1, 3))
    >>> merged = merge_label_stats(st, np.array([0, 1, 1]), 2)
    >>> merged["count"].tolist(), merged["lo2"].tolist(), merged["hi2"].tolist()
    ([0.0, 3.0], [inf, 0.0], [-inf, 2.0])
    """
    out = {}
    for k in SUM_STAT_KEYS:
        out[k] = np.bincount(
            groups, weights=np.nan_to_num(stats[k], nan=0.0) if k != "spre" else stats[k], minlength=n_groups
        )[:n_groups]
    for k in MIN_STAT_KEYS:
        v = np.full(n_groups, np.inf)
        np.minimum.at(v, groups, stats[k])
        out[k] = v
    for k in MAX_STAT_KEYS:
        v = np.full(n_groups, -np.inf)
        np.maximum.at(v, groups, stats[k])
        out[k] = v
    return out


@dataclass
class SplitSpec:
    """How touching blooms are split (see :func:`split_component`).

    Parameters
    ----------
    enabled : bool
        Whether blooms are split at all.
    connectivity : int
        6, 18 or 26 (see :data:`CONNECTIVITIES`).
    min_size : int
        Smallest piece (voxels) a split may leave.
    h : float
        Depth of a minimum (normalised signal) to count as a separate bloom.
    smooth : tuple of 3 float
        Gaussian sigma per axis (voxels) applied before the watershed.
    margin : tuple of 3 int
        Crop margin per axis for the smoothing.
    ref_mean : float
        Reference tissue mean used to normalise the signal.

    Examples
    --------
    >>> spec = SplitSpec(True, 26, 3, 0.1, (1.0, 1.0, 1.0), (4, 4, 4), 100.0)
    >>> spec.min_voxels
    8
    """

    enabled: bool
    connectivity: int
    min_size: int
    h: float
    smooth: tuple[float, float, float]  # Gaussian sigma per axis, voxels (1 voxel of the finest axis)
    margin: tuple[int, int, int]  # crop margin per axis for the smoothing
    ref_mean: float

    @property
    def min_voxels(self) -> int:
        """Components smaller than this are never split (two blooms of min_size each, at least 8 voxels)."""
        return max(2 * self.min_size, 8)

    @classmethod
    def for_grid(cls, post: Volume, enabled, connectivity, min_size, h, ref_mean) -> SplitSpec:
        """The spec for ``post``'s grid: smoothing of 1 voxel of the finest axis, 3-sigma margins."""
        smooth = tuple(float(np.min(post.spacing) / sp) for sp in post.spacing)
        margin = tuple(int(3.0 * sm + 0.5) + 1 for sm in smooth)
        return cls(bool(enabled), int(connectivity), int(min_size), float(h), smooth, margin, float(ref_mean))


def split_component_in_crop(post_crop, pre_crop, comp: np.ndarray, crop_lo, spec: SplitSpec, global_shape):
    """Split one component from NumPy crops (``crop_lo`` their global origin); None when it stays whole.

    Parameters
    ----------
    post_crop, pre_crop : array_like
        Post-injection crop; baseline crop or None.
    comp : ndarray of bool
        The component inside the crop.
    crop_lo : sequence of 3 int
        Global voxel index of the crop's first voxel.
    spec : SplitSpec
        How to split.
    global_shape : tuple of int
        Shape of the whole volume.

    Returns
    -------
    dict or None
        ``slices`` (global), ``sub`` (sub-labels 1..k), ``stats`` (as :func:`sparse_label_stats`)
        and ``k``; None when the component is not split.

    Examples
    --------
    >>> import numpy as np
    >>> post = np.full((3, 3, 12), 100.0)
    >>> post[1, 1, 1:5] = post[1, 1, 7:11] = 20.0
    >>> comp = np.zeros(post.shape, bool)
    >>> comp[1, 1, 1:11] = True
    >>> spec = SplitSpec(True, 26, 2, 0.1, (0.0, 0.0, 0.0), (1, 1, 1), 100.0)
    >>> out = split_component_in_crop(post, None, comp, (0, 0, 0), spec, post.shape)
    >>> out["k"], out["stats"]["count"].tolist()
    (2, [0.0, 5.0, 5.0])
    """
    r_crop = np.asarray(post_crop, np.float64) / spec.ref_mean
    sub = split_component(r_crop, comp, spec.connectivity, spec.min_size, spec.h, spec.smooth)
    if sub is None:
        return None
    k = int(sub.max())
    idx = np.flatnonzero(sub)
    local = np.unravel_index(idx, sub.shape)
    coords = tuple(local[a] + crop_lo[a] for a in range(3))
    pre_vals = None if pre_crop is None else np.asarray(pre_crop).ravel()[idx].astype(np.float64)
    st = sparse_label_stats(
        sub.ravel()[idx], k, coords, np.asarray(post_crop).ravel()[idx], pre_vals, spec.ref_mean, global_shape
    )
    slices = tuple(slice(int(lo), int(lo) + n) for lo, n in zip(crop_lo, sub.shape))
    return {"slices": slices, "sub": sub.astype(np.int32), "stats": st, "k": k}


def crop_bounds(lo, hi, margin, shape):
    """[lo - margin, hi + margin) clipped to the volume, per axis.

    Parameters
    ----------
    lo, hi : sequence of int
        Box low corner and (exclusive) high corner, per axis.
    margin : sequence of int
        Margin added on each side, per axis.
    shape : sequence of int
        Volume shape the crop is clipped to.

    Returns
    -------
    (list of int, list of int)
        The crop's low and (exclusive) high corners.

    Examples
    --------
    >>> crop_bounds([1, 5, 0], [3, 9, 2], [2, 2, 2], [10, 10, 10])
    ([0, 3, 0], [5, 10, 4])
    """
    clo = [max(int(l) - m, 0) for l, m in zip(lo, margin)]
    chi = [min(int(h) + m, n) for h, m, n in zip(hi, margin, shape)]
    return clo, chi


def block_components(
    cand: np.ndarray,
    post_blk,
    pre_blk,
    origin,
    global_shape,
    structure,
    ref_mean,
    split: SplitSpec | None = None,
    keep_labels: bool = False,
) -> dict:
    """Label one block; its per-label statistics, its six faces, and the splits of its inner components.

    A component is split here when it cannot continue in another block (it
    does not touch an inner face) and its smoothing crop lies in the block:
    the crop is then exactly the one the whole-volume path would use. Other
    components are split later from crops (:func:`.clusters._split_by_crop`).

    Parameters
    ----------
    cand : ndarray of bool or uint8
        Candidate mask of the block (uint8: 2 marks seeds).
    post_blk, pre_blk : array_like
        Post-injection block; baseline block or None.
    origin : sequence of 3 int
        Global voxel index of the block's first voxel.
    global_shape : tuple of int
        Shape of the whole volume.
    structure : ndarray of bool
        3x3x3 connectivity structure.
    ref_mean : float
        Reference tissue mean.
    split : SplitSpec, optional
        How to split touching blooms (None: no split).
    keep_labels : bool, default False
        Keep the label image (else only the packed candidate mask).

    Returns
    -------
    dict
        ``n``, ``stats``, ``faces`` (the six boundary planes of labels), ``origin``, ``shape``,
        ``splits`` and either ``labels``/``flat_index`` or ``mask``.

    Examples
    --------
    >>> import numpy as np
    >>> cand = np.zeros((2, 2, 5), bool)
    >>> cand[0, 0, :2] = cand[1, 1, 4] = True
    >>> post = np.full(cand.shape, 50.0)
    >>> blk = block_components(cand, post, None, (0, 0, 0), cand.shape, np.ones((3, 3, 3), bool), 100.0)
    >>> blk["n"], blk["stats"]["count"].tolist(), blk["faces"][(2, 1)].tolist()
    (2, [0.0, 2.0, 1.0], [[0, 0], [0, 2]])
    """
    labels, n = ndimage.label(cand, structure=structure, output=np.int32)
    idx = np.flatnonzero(cand)  # the labelled voxels (a quarter of the bytes of the label image to scan)
    lab = labels.ravel()[idx]
    local = np.unravel_index(idx, labels.shape)
    coords = tuple(local[a] + origin[a] for a in range(3))
    # values gathered by index tuples: no copy of the block even when it is a strided view
    post_blk = np.asarray(post_blk)
    post_vals = post_blk[local]
    pre_vals = None if pre_blk is None else np.asarray(pre_blk)[local].astype(np.float64)
    seeds = None if cand.dtype == bool else cand.ravel()[idx] == 2
    stats = sparse_label_stats(lab, n, coords, post_vals, pre_vals, ref_mean, global_shape, seeds)
    faces = {}
    for axis in range(3):
        faces[(axis, 0)] = np.take(labels, 0, axis=axis).copy()
        faces[(axis, 1)] = np.take(labels, -1, axis=axis).copy()
    splits = {}
    if split is not None and split.enabled and n:
        bshape = labels.shape
        end = [origin[a] + bshape[a] for a in range(3)]
        big = np.flatnonzero((stats["count"] >= split.min_voxels) & (stats["seeds"] >= 1))
        for j in big[big > 0]:
            lo = [int(stats[f"lo{a}"][j]) for a in range(3)]
            hi = [int(stats[f"hi{a}"][j]) + 1 for a in range(3)]
            inner_face = any(
                (lo[a] == origin[a] and origin[a] > 0) or (hi[a] == end[a] and end[a] < global_shape[a])
                for a in range(3)
            )
            clo, chi = crop_bounds(lo, hi, split.margin, global_shape)
            if inner_face or any(clo[a] < origin[a] or chi[a] > end[a] for a in range(3)):
                continue  # may continue in another block, or its crop leaves the block: done from crops later
            sl = tuple(slice(clo[a] - origin[a], chi[a] - origin[a]) for a in range(3))
            comp = labels[sl] == j
            splits[int(j)] = split_component_in_crop(
                post_blk[sl], None if pre_blk is None else np.asarray(pre_blk)[sl], comp, clo, split, global_shape
            )
    out = {"n": n, "stats": stats, "faces": faces, "origin": tuple(origin), "shape": labels.shape, "splits": splits}
    if keep_labels:
        out["labels"] = labels
        out["flat_index"] = idx  # where the labels are: relabelling then touches only these voxels
    else:  # the candidates, compactly, so the label image can be rebuilt without reading the inputs again
        out["mask"] = pack_mask(cand)
    return out


def pack_mask(cand: np.ndarray):
    """A block's candidate mask in the smaller of two forms: flat indices (sparse) or packed bits.

    Parameters
    ----------
    cand : ndarray
        The mask (non-zero = candidate).

    Returns
    -------
    tuple
        ``("index", shape, flat_indices)`` or ``("bits", shape, packed_bits)``; see :func:`unpack_mask`.

    Examples
    --------
    >>> import numpy as np
    >>> cand = np.zeros((4, 4, 4), bool)
    >>> cand[0, 0, 1] = True
    >>> pack_mask(cand)[0], pack_mask(cand)[2].tolist(), pack_mask(~cand)[0]
    ('index', [1], 'bits')
    """
    flat = np.flatnonzero(cand)
    if flat.size * 4 < cand.size // 8:
        return ("index", cand.shape, flat.astype(np.int32 if cand.size < 2**31 else np.int64))
    return ("bits", cand.shape, np.packbits(cand.ravel() > 0))


def unpack_mask(packed) -> np.ndarray:
    """The boolean mask a :func:`pack_mask` tuple stands for.

    Parameters
    ----------
    packed : tuple
        As returned by :func:`pack_mask`.

    Returns
    -------
    ndarray of bool
        The mask, in its original shape.

    Examples
    --------
    >>> import numpy as np
    >>> cand = np.arange(8).reshape(2, 2, 2) % 3 == 0
    >>> bool(np.array_equal(unpack_mask(pack_mask(cand)), cand))
    True
    """
    kind, shape, payload = packed
    if kind == "index":
        out = np.zeros(int(np.prod(shape)), bool)
        out[payload] = True
        return out.reshape(shape)
    return np.unpackbits(payload, count=int(np.prod(shape))).astype(bool).reshape(shape)


def union_across_faces(blocks: list[dict], chunks, structure, offsets: list[int], n_total: int) -> np.ndarray:
    """Group label of every global label id (0..n_total) after merging labels that touch across chunk faces.

    For each chunk border plane, the two planes that meet there are assembled
    over the whole volume and labelled with the same connectivity: global ids
    found in one component of that two-plane slab are the same cluster. This
    covers links across faces, edges and corners of chunks.

    Parameters
    ----------
    blocks : list of dict
        Results of :func:`block_components`, each with its grid position ``pos`` added.
    chunks : tuple of 3 tuples of int
        Chunk sizes per axis (dask's ``chunks``).
    structure : ndarray of bool
        3x3x3 connectivity structure.
    offsets : list of int
        Global id offset of each block's labels.
    n_total : int
        Number of global label ids.

    Returns
    -------
    ndarray of int
        Group of every global id 0..n_total (ids in one group are one cluster).

    Examples
    --------
    >>> import numpy as np
    >>> cand = np.zeros((1, 1, 4), bool)
    >>> cand[0, 0, 1:3] = True
    >>> st = np.ones((3, 3, 3), bool)
    >>> blocks = []
    >>> for i, sl in enumerate((slice(0, 2), slice(2, 4))):
    ...     b = block_components(cand[..., sl], cand[..., sl], None, (0, 0, 2 * i), (1, 1, 4), st, 1.0)
    ...     b["pos"] = (0, 0, i)
    ...     blocks.append(b)
    >>> groups = union_across_faces(blocks, ((1,), (1,), (2, 2)), st, [0, 1], 2)
    >>> bool(groups[1] == groups[2])
    True
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    grid_shape = tuple(len(c) for c in chunks)
    bounds = [np.r_[0, np.cumsum(c)] for c in chunks]
    by_pos = {}
    for b, blk_offset in zip(blocks, offsets):
        by_pos[b["pos"]] = (b, blk_offset)
    rows, cols = [], []
    next_node = 0
    full = tuple(int(bb[-1]) for bb in bounds)
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for k in range(1, grid_shape[axis]):
            slab = np.zeros((2, full[others[0]], full[others[1]]), np.int64)
            for pos, (b, off) in by_pos.items():
                if pos[axis] not in (k - 1, k):
                    continue
                side = 0 if pos[axis] == k - 1 else 1
                face = b["faces"][(axis, 1 if side == 0 else 0)].astype(np.int64)
                face = np.where(face > 0, face + off, 0)
                o0, o1 = bounds[others[0]][pos[others[0]]], bounds[others[1]][pos[others[1]]]
                slab[side, o0 : o0 + face.shape[0], o1 : o1 + face.shape[1]] = face
            if not (slab[0].any() and slab[1].any()):
                continue
            # the two planes, labelled with the connectivity's structure (axis first)
            comp, nc = ndimage.label(slab > 0, structure=np.moveaxis(structure, axis, 0))
            sel = slab > 0
            rows.append(slab[sel])
            cols.append(n_total + 1 + next_node + comp[sel])  # slab components are new graph nodes
            next_node += nc + 1
    if not rows:
        return np.arange(n_total + 1)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    size = int(n_total + 2 + c.max())
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(size, size))
    _, comp = connected_components(graph, directed=False)
    return comp[: n_total + 1]


def split_component(
    r_crop: np.ndarray, comp: np.ndarray, connectivity: int, min_size: int, h: float, smooth: Sequence[float]
) -> np.ndarray | None:
    """Sub-labels 1..k of a component with k >= 2 well-separated minima, else None.

    Minima of the smoothed normalised signal at least ``h`` deep (h-minima)
    are watershed markers; pieces smaller than ``min_size`` give their marker
    up and the watershed is run again.

    Parameters
    ----------
    r_crop : ndarray
        Normalised signal (post / reference mean) of the crop.
    comp : ndarray of bool
        The component inside the crop.
    connectivity : int
        6, 18 or 26.
    min_size : int
        Smallest piece (voxels) a split may leave.
    h : float
        Minimum depth of a basin (normalised signal).
    smooth : sequence of 3 float
        Gaussian sigma per axis (voxels).

    Returns
    -------
    ndarray of int32 or None
        Sub-labels 1..k inside ``comp`` (0 outside), or None when it stays whole.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.ones((3, 3, 12))
    >>> r[1, 1, 1:5] = r[1, 1, 7:11] = 0.2
    >>> comp = np.zeros(r.shape, bool)
    >>> comp[1, 1, 1:11] = True
    >>> split_component(r, comp, 26, 2, 0.1, (0.0, 0.0, 0.0))[1, 1].tolist()
    [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0]
    """
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed

    rs = ndimage.gaussian_filter(np.where(np.isfinite(r_crop), r_crop, 1.0), smooth, mode="nearest")
    inside = rs[comp]
    top = float(inside.max()) + 2.0 * h + 1.0
    f = np.where(comp, rs, top)
    # cheap necessary condition before the h-minima transform: two separate local minima, the
    # shallower of them at least h below the component's highest value (a basin must be h deep)
    local = (f == ndimage.minimum_filter(f, size=3, mode="nearest")) & comp
    lab_local, n_local = ndimage.label(local, structure=np.ones((3, 3, 3), bool))
    if n_local < 2:
        return None
    depths = ndimage.minimum(f, lab_local, np.arange(1, n_local + 1))
    if np.sort(depths)[1] > float(inside.max()) - h:
        return None
    minima = h_minima(f, h).astype(bool) & comp
    markers, nm = ndimage.label(minima, structure=ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity]))
    if nm < 2:
        return None
    for _ in range(nm):
        ws = watershed(rs, markers, mask=comp, connectivity=CONNECTIVITIES[connectivity])
        sizes = np.bincount(ws.ravel(), minlength=markers.max() + 1)
        present = [m for m in range(1, markers.max() + 1) if np.any(markers == m)]
        small = [m for m in present if sizes[m] < min_size]
        if len(present) < 2:
            return None
        if not small:
            # renumber 1..k
            lut = np.zeros(markers.max() + 1, np.int32)
            lut[present] = np.arange(1, len(present) + 1)
            return lut[ws]
        markers[markers == small[0]] = 0
    return None
