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

CONNECTIVITIES = {6: 1, 18: 2, 26: 3}


_SUM_KEYS = ("count", "seeds", "sw", "swz", "swy", "swx", "sz", "sy", "sx", "sr", "spost", "spre")


_MIN_KEYS = ("min_r", "first", "lo0", "lo1", "lo2")


_MAX_KEYS = ("hi0", "hi1", "hi2")


def _sparse_stats(
    lab: np.ndarray, n: int, coords, post_vals, pre_vals, ref_mean: float, global_shape, seeds=None
) -> dict[str, np.ndarray]:
    """Per-label sums, minima and maxima of the voxels of labels 1..n (arrays of length n + 1).

    ``coords`` are global voxel indices (3 arrays). Everything a table row
    needs is additive (sums) or a min/max, so blocks merge exactly.
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
    for k in _MIN_KEYS:
        out[k] = np.full(m, np.inf)
    for k in _MAX_KEYS:
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


def _merge_stats(stats: dict[str, np.ndarray], groups: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Combine per-label statistics into groups (``groups[i]`` the group of label i)."""
    out = {}
    for k in _SUM_KEYS:
        out[k] = np.bincount(
            groups, weights=np.nan_to_num(stats[k], nan=0.0) if k != "spre" else stats[k], minlength=n_groups
        )[:n_groups]
    for k in _MIN_KEYS:
        v = np.full(n_groups, np.inf)
        np.minimum.at(v, groups, stats[k])
        out[k] = v
    for k in _MAX_KEYS:
        v = np.full(n_groups, -np.inf)
        np.maximum.at(v, groups, stats[k])
        out[k] = v
    return out


@dataclass
class _SplitSpec:
    """How touching blooms are split (see :func:`_split_component`)."""

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
    def for_grid(cls, post: Volume, enabled, connectivity, min_size, h, ref_mean) -> _SplitSpec:
        smooth = tuple(float(np.min(post.spacing) / sp) for sp in post.spacing)
        margin = tuple(int(3.0 * sm + 0.5) + 1 for sm in smooth)
        return cls(bool(enabled), int(connectivity), int(min_size), float(h), smooth, margin, float(ref_mean))


def _split_in_arrays(post_crop, pre_crop, comp: np.ndarray, crop_lo, spec: _SplitSpec, global_shape):
    """Split one component from NumPy crops (``crop_lo`` their global origin); None when it stays whole."""
    r_crop = np.asarray(post_crop, np.float64) / spec.ref_mean
    sub = _split_component(r_crop, comp, spec.connectivity, spec.min_size, spec.h, spec.smooth)
    if sub is None:
        return None
    k = int(sub.max())
    idx = np.flatnonzero(sub)
    local = np.unravel_index(idx, sub.shape)
    coords = tuple(local[a] + crop_lo[a] for a in range(3))
    pre_vals = None if pre_crop is None else np.asarray(pre_crop).ravel()[idx].astype(np.float64)
    st = _sparse_stats(
        sub.ravel()[idx], k, coords, np.asarray(post_crop).ravel()[idx], pre_vals, spec.ref_mean, global_shape
    )
    slices = tuple(slice(int(lo), int(lo) + n) for lo, n in zip(crop_lo, sub.shape))
    return {"slices": slices, "sub": sub.astype(np.int32), "stats": st, "k": k}


def _crop_bounds(lo, hi, margin, shape):
    """[lo - margin, hi + margin) clipped to the volume, per axis."""
    clo = [max(int(l) - m, 0) for l, m in zip(lo, margin)]
    chi = [min(int(h) + m, n) for h, m, n in zip(hi, margin, shape)]
    return clo, chi


def _block_components(
    cand: np.ndarray,
    post_blk,
    pre_blk,
    origin,
    global_shape,
    structure,
    ref_mean,
    split: _SplitSpec | None = None,
    keep_labels: bool = False,
) -> dict:
    """Label one block; its per-label statistics, its six faces, and the splits of its inner components.

    A component is split here when it cannot continue in another block (it
    does not touch an inner face) and its smoothing crop lies in the block:
    the crop is then exactly the one the whole-volume path would use. Other
    components are split later from crops (:func:`.clusters._split_by_crop`).
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
    stats = _sparse_stats(lab, n, coords, post_vals, pre_vals, ref_mean, global_shape, seeds)
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
            clo, chi = _crop_bounds(lo, hi, split.margin, global_shape)
            if inner_face or any(clo[a] < origin[a] or chi[a] > end[a] for a in range(3)):
                continue  # may continue in another block, or its crop leaves the block: done from crops later
            sl = tuple(slice(clo[a] - origin[a], chi[a] - origin[a]) for a in range(3))
            comp = labels[sl] == j
            splits[int(j)] = _split_in_arrays(
                post_blk[sl], None if pre_blk is None else np.asarray(pre_blk)[sl], comp, clo, split, global_shape
            )
    out = {"n": n, "stats": stats, "faces": faces, "origin": tuple(origin), "shape": labels.shape, "splits": splits}
    if keep_labels:
        out["labels"] = labels
        out["flat_index"] = idx  # where the labels are: relabelling then touches only these voxels
    else:  # the candidates, compactly, so the label image can be rebuilt without reading the inputs again
        out["mask"] = _pack_mask(cand)
    return out


def _pack_mask(cand: np.ndarray):
    """A block's candidate mask in the smaller of two forms: flat indices (sparse) or packed bits."""
    flat = np.flatnonzero(cand)
    if flat.size * 4 < cand.size // 8:
        return ("index", cand.shape, flat.astype(np.int32 if cand.size < 2**31 else np.int64))
    return ("bits", cand.shape, np.packbits(cand.ravel() > 0))


def _unpack_mask(packed) -> np.ndarray:
    kind, shape, payload = packed
    if kind == "index":
        out = np.zeros(int(np.prod(shape)), bool)
        out[payload] = True
        return out.reshape(shape)
    return np.unpackbits(payload, count=int(np.prod(shape))).astype(bool).reshape(shape)


def _union_across_faces(blocks: list[dict], chunks, structure, offsets: list[int], n_total: int) -> np.ndarray:
    """Group label of every global label id (0..n_total) after merging labels that touch across chunk faces.

    For each chunk border plane, the two planes that meet there are assembled
    over the whole volume and labelled with the same connectivity: global ids
    found in one component of that two-plane slab are the same cluster. This
    covers links across faces, edges and corners of chunks.
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


def _split_component(
    r_crop: np.ndarray, comp: np.ndarray, connectivity: int, min_size: int, h: float, smooth: Sequence[float]
) -> np.ndarray | None:
    """Sub-labels 1..k of a component with k >= 2 well-separated minima, else None.

    Minima of the smoothed normalised signal at least ``h`` deep (h-minima)
    are watershed markers; pieces smaller than ``min_size`` give their marker
    up and the watershed is run again.
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
