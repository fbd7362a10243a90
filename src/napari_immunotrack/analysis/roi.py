"""ROI statistics on a quantitative image's own grid, with ROIs drawn on any grid.

Analysts draw ROIs on the anatomy (MRI); the numbers come from the
quantitative image (PET, SPECT, 19F, MPI) on its own grid. The ROIs are
carried to that grid through world coordinates, never the other way round:
the counts are never interpolated.

:func:`carry_rois`
    Label volume on any grid -> :class:`RoiMap` on the target grid: for each
    label, the target voxels it touches and the fraction of each voxel it
    covers (partial-voxel weights). Three cases:

    - same grid: weights exactly 0/1;
    - axis-aligned grids (different spacing, origin, axis order or flips,
      e.g. a 1 mm RAS MRI and an LPS PET): the exact overlap volume of each
      ROI voxel with each target voxel, separable along the axes;
    - any other relation (rotation, registration transform): each target
      voxel is split into ``n^3`` subvoxels (``supersample=n``); each subvoxel
      centre is mapped to the ROI grid (target index -> world -> optional
      world-to-world transform -> ROI index) and takes the label of the ROI
      voxel that contains it; the weight is the fraction with the label.

    Work is restricted to each label's bounding box.
:func:`roi_statistics`
    Weighted statistics per label: voxels (weight >= 0.5), volume (sum of
    weights x voxel volume), mean, SD (population, weighted), median
    (weighted), min and max (voxels with weight >= 0.5), integral
    (sum w C V, value x mL) and the peak: the highest mean in a sphere
    (1 cm3 by default, r = 6.2035 mm, partial-voxel weights) centred on a
    voxel of the ROI (PERCIST SUVpeak); the sphere may reach outside the ROI.

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> img = Volume(np.arange(27, dtype=float).reshape(3, 3, 3), np.diag([2.0, 2.0, 2.0, 1.0]), "PT", "Bq/mL")
>>> lab = Volume(np.zeros((6, 6, 6), np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]) @ np.eye(4))
>>> lab.affine[:3, 3] = -0.5            # 1 mm grid, voxel edges on the 2 mm grid's edges
>>> lab.data[:2, :2, :2] = 1            # exactly image voxel (0, 0, 0)
>>> df = roi_statistics(img, lab, peak=False)
>>> float(df.loc[0, "mean"]), round(float(df.loc[0, "volume_ml"]), 6)
(0.0, 0.008)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume, as_labels

#: Radius (mm) of the 1 cm^3 sphere of SUVpeak: (3 / (4 pi))^(1/3) * 10 mm.
PEAK_RADIUS_MM = (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0) * 10.0

#: Largest peak-sphere kernel (voxels) :func:`roi_statistics` builds (a 1 mL sphere on a 0.1 mm grid is 2e6).
_MAX_PEAK_KERNEL_VOXELS = 2**24

_MAX_POINTS = 1 << 21  # subpoints per chunk while carrying (bounds memory to ~100 MB)


@dataclass
class RoiMap:
    """ROIs carried onto an image grid.

    Attributes
    ----------
    shape : tuple
        Spatial shape of the target grid.
    affine : (4, 4) array
        Target grid's affine.
    labels : (L,) int array
        Label values, ascending.
    index : list of int64 arrays
        For each label, flat (C-order) indices of the target voxels it touches.
    weight : list of float32 arrays
        For each label, the fraction (0, 1] of each of those voxels it covers.
    fraction_in_fov : (L,) array
        Fraction of each label's own volume that lies inside the target's field of view.
    source_volume_ml : (L,) array
        Volume of each label on its own grid.
    method : str
        "same grid", "exact overlap (axis-aligned grids)" or "supersample n" (n^3 subvoxels).
    warnings : list of str
    """

    shape: tuple
    affine: np.ndarray
    labels: np.ndarray
    index: list
    weight: list
    fraction_in_fov: np.ndarray
    source_volume_ml: np.ndarray
    method: str
    warnings: list = field(default_factory=list)

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def position(self, label: int) -> int:
        """The row of ``label`` in :attr:`labels` (and in ``index``, ``weight``, ...).

        Parameters
        ----------
        label : int
            A label value.

        Returns
        -------
        int
            Its position.

        Raises
        ------
        InputError
            A label that is not among the ROIs.

        Examples
        --------
        >>> lab = np.zeros((2, 2, 2), np.uint8)
        >>> lab[0], lab[1, 0, 0] = 1, 3
        >>> rois = carry_rois(Volume(lab, np.eye(4)), ((2, 2, 2), np.eye(4)))
        >>> rois.labels.tolist(), rois.position(3)
        ([1, 3], 1)
        """
        hits = np.nonzero(self.labels == label)[0]
        if hits.size == 0:
            raise InputError(f"label {label} is not among the ROIs ({self.labels.tolist()[:20]}).")
        return int(hits[0])

    def weight_volume(self, label: int) -> np.ndarray:
        """Dense float32 array (target grid) of the label's weights.

        Parameters
        ----------
        label : int
            A label value.

        Returns
        -------
        numpy.ndarray
            float32, the target grid's shape: each voxel's covered fraction (0 outside the label).

        Examples
        --------
        >>> lab = np.zeros((2, 2, 2), np.uint8)
        >>> lab[0] = 1
        >>> rois = carry_rois(Volume(lab, np.eye(4)), ((2, 2, 2), np.eye(4)))
        >>> float(rois.weight_volume(1).sum()), rois.weight_volume(1).dtype
        (4.0, dtype('float32'))
        """
        i = self.position(label)
        out = np.zeros(int(np.prod(self.shape)), np.float32)
        out[self.index[i]] = self.weight[i]
        return out.reshape(self.shape)

    def mask(self, label: int, min_weight: float = 0.5) -> np.ndarray:
        """Boolean mask (target grid) of voxels with weight >= ``min_weight``.

        Parameters
        ----------
        label : int
            A label value.
        min_weight : float, default 0.5
            Smallest covered fraction counted as inside.

        Returns
        -------
        numpy.ndarray
            bool, the target grid's shape.

        Examples
        --------
        >>> lab = np.zeros((2, 2, 2), np.uint8)
        >>> lab[0] = 1
        >>> rois = carry_rois(Volume(lab, np.eye(4)), ((2, 2, 2), np.eye(4)))
        >>> int(rois.mask(1).sum())
        4
        """
        return self.weight_volume(label) >= min_weight

    def to_labels(self, min_weight: float = 0.5) -> Volume:
        """A label Volume on the target grid: each voxel takes its largest-weight label (if >= min_weight).

        Parameters
        ----------
        min_weight : float, default 0.5
            Smallest covered fraction that labels a voxel.

        Returns
        -------
        Volume
            int32 labels (0 elsewhere) on the target grid, modality "SEG", ``metadata["roi_mapping"]`` the
            carrying method.

        Examples
        --------
        >>> lab = np.zeros((2, 2, 2), np.uint8)
        >>> lab[0], lab[1, 0, 0] = 1, 3
        >>> rois = carry_rois(Volume(lab, np.eye(4)), ((2, 2, 2), np.eye(4)))
        >>> rois.to_labels().data.tolist()
        [[[1, 1], [1, 1]], [[3, 0], [0, 0]]]
        """
        flat = np.zeros(int(np.prod(self.shape)), np.int32)
        best = np.zeros(flat.shape, np.float32)
        for lab, idx, w in zip(self.labels, self.index, self.weight):
            take = (w >= min_weight) & (w > best[idx])
            flat[idx[take]] = lab
            best[idx[take]] = w[take]
        return Volume(flat.reshape(self.shape), self.affine, "SEG", "label", {"roi_mapping": self.method}, "rois")


def _grid(target):
    if isinstance(target, Volume):
        return tuple(target.spatial_shape), np.asarray(target.affine, float)
    shape, affine = target
    return tuple(int(s) for s in shape), np.asarray(affine, float)


def _label_array(rois: Volume) -> np.ndarray:
    lab = as_labels(rois, name=f"ROI {rois.name!r}" if rois.name else "the ROI image").numpy()
    if lab.ndim == 4:
        if lab.shape[0] != 1:
            raise InputError("the ROI image is 4D; give a 3D label image.")
        lab = lab[0]
    return lab


def carry_rois(
    rois,
    target,
    *,
    transform: np.ndarray | None = None,
    supersample: int = 3,
    labels=None,
    name: str = "the image",
    progress=None,
) -> RoiMap:
    """Carry a label volume onto ``target``'s grid with partial-voxel weights.

    Each target voxel gets, per label, the fraction of its volume the label covers
    (docs/methods/roi.md#carry): exact overlaps for grids whose axes are parallel (permuted or flipped),
    ``supersample^3`` subvoxels otherwise, and weight 1 on the very same grid.

    Parameters
    ----------
    rois : Volume or RoiMap
        Integer labels (0 = background) on any grid. A RoiMap is checked (same grid as ``target``)
        and returned as is.
    target : Volume or (shape, affine)
        The quantitative image's grid: its spatial shape and (4, 4) index-to-world affine (mm).
    transform : (4, 4) array, optional
        World-to-world map from target world to ROI world (fixed -> moving of a
        registration where the ROI image is the moving one). Identity when omitted.
    supersample : int, default 3
        Subvoxels per axis, 1 to 10 (1 = nearest neighbour at the voxel centre; 3-5 typical). Not
        used for the same grid or parallel axes (exact overlap).
    labels : sequence of int, optional
        Only these labels (default: every non-zero label).
    name : str, default "the image"
        Name of the target in error messages ("the PET").
    progress : callable, optional
        ``progress(fraction, message)`` callback (:mod:`napari_immunotrack.progress`).

    Returns
    -------
    RoiMap
        Per label, the flat target indices it touches and their weights in (0, 1], the fraction of its
        volume inside the target's field of view, its own volume (mL) and the method used.

    Raises
    ------
    InputError
        An empty ROI image, a label that is absent, lies entirely outside the target's field of view
        or covers no target voxel after mapping, a bad transform or ``supersample``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> lab = np.zeros((4, 4, 4), np.uint8)
    >>> lab[:2, :2, :2] = 1
    >>> lab[2:, 2:, 2:] = 2
    >>> rois = Volume(lab, np.eye(4), "SEG", "label")        # 1 mm voxels
    >>> coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    >>> coarse[:3, 3] = 0.5                                  # 2 mm voxels covering 2 x 2 x 2 of them
    >>> m = carry_rois(rois, ((2, 2, 2), coarse))
    >>> m.method, m.labels.tolist(), [i.tolist() for i in m.index], [w.tolist() for w in m.weight]
    ('exact overlap (axis-aligned grids)', [1, 2], [[0], [7]], [[1.0], [1.0]])
    >>> m.source_volume_ml.tolist()   # each label: 8 voxels of 1 uL
    [0.008, 0.008]
    """
    shape, t_aff = _grid(target)
    if isinstance(rois, RoiMap):
        if rois.shape != shape or not np.allclose(rois.affine, t_aff, atol=1e-4):
            raise InputError("the ROI map was made for another grid; carry the ROI image again.")
        return rois
    if not isinstance(rois, Volume):
        raise InputError("ROIs must be a label Volume.")
    if supersample < 1 or supersample > 10:
        raise InputError(f"supersample must be between 1 and 10 (got {supersample}).")
    lab = _label_array(rois)
    world = np.eye(4) if transform is None else np.asarray(transform, float)
    if world.shape != (4, 4) or not np.all(np.isfinite(world)):
        raise InputError("the transform must be a finite 4x4 matrix.")
    if not np.allclose(world[3], [0, 0, 0, 1]) or abs(np.linalg.det(world[:3, :3])) < 1e-9:
        raise InputError(
            "the transform is not an invertible affine map (last row 0 0 0 1, non-zero determinant); "
            "check the transform file."
        )
    from scipy import ndimage

    top = int(lab.max()) if lab.size else 0
    if top == 0:
        what = f"the ROI image {rois.name!r}" if rois.name else "the ROI image"
        raise InputError(f"{what} is empty (no non-zero label); draw an ROI first.")
    if top > 5_000_000:
        raise InputError(f"the ROI image has label values up to {top}; relabel it with consecutive integers.")
    lab_i = lab if lab.dtype.itemsize <= 4 and lab.dtype.kind in "iu" else lab.astype(np.int64)
    boxes = ndimage.find_objects(lab_i)
    present = [i + 1 for i, b in enumerate(boxes) if b is not None]
    if labels is not None:
        wanted = [int(x) for x in labels]
        missing = [x for x in wanted if x not in present]
        if missing:
            raise InputError(f"label(s) {missing} are not in the ROI image (labels present: {present[:20]}).")
        present = wanted
    same = np.allclose(world, np.eye(4)) and tuple(lab.shape) == shape and np.allclose(rois.affine, t_aff, atol=1e-4)
    roi_voxel_ml = rois.voxel_volume_mm3 / 1000.0
    tgt_voxel_ml = abs(np.linalg.det(t_aff[:3, :3])) / 1000.0
    # target index -> ROI index
    m = np.linalg.inv(rois.affine) @ world @ t_aff
    # ROI index -> target index (to test which ROI voxels lie inside the target's field of view)
    m_back = np.linalg.inv(m)
    perm = None if same else _axis_permutation(m)
    n = int(supersample)
    offs = (np.arange(n) + 0.5) / n - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    sub_roi = sub @ m[:3, :3].T
    sampled = None
    if not same and perm is None:
        # one pass over the union of the labels' footprints on the target grid, all labels at once
        sampled = _supersampled_all(
            lab_i, boxes, present, m, m_back, sub_roi, shape, _progress.scaled(progress, 0.0, 0.8)
        )
        progress = _progress.scaled(progress, 0.8, 1.0)

    out_idx, out_w, fov, src_ml, warns = [], [], [], [], []
    for count, value in enumerate(present):
        sl = boxes[value - 1]
        crop = lab_i[sl] == value
        nz = np.nonzero(crop)
        nvox = nz[0].size
        src_ml.append(nvox * roi_voxel_ml)
        if same:
            flat = np.ravel_multi_index(tuple(a + s.start for a, s in zip(nz, sl)), shape).astype(np.int64)
            out_idx.append(flat)
            out_w.append(np.ones(flat.size, np.float32))
            fov.append(1.0)
            _progress.report(progress, (count + 1) / len(present), f"ROI {value}")
            continue
        # fraction of the label's own voxels whose centres fall inside the target's field of view
        centres = np.stack([a + s.start for a, s in zip(nz, sl)], -1).astype(float)
        tidx = centres @ m_back[:3, :3].T + m_back[:3, 3]
        inside = np.all((tidx >= -0.5) & (tidx < np.array(shape) - 0.5), axis=1)
        frac_fov = float(inside.mean())
        fov.append(frac_fov)
        if frac_fov == 0.0:
            raise InputError(
                f"ROI label {value} lies entirely outside {name}'s field of view; check the "
                "registration or draw the ROI inside the image."
            )
        idx_parts, w_parts = [], []
        if sampled is not None:
            if value in sampled:
                idx_parts.append(sampled[value][0])
                w_parts.append(sampled[value][1])
        else:
            t_lo, t_hi = _target_box([sl], m_back, shape)
            if np.all(t_hi >= t_lo):
                idx, w = _exact_axis_aligned(crop, sl, m, perm, t_lo, t_hi, shape)
                if idx.size:
                    idx_parts.append(idx)
                    w_parts.append(w)
        if not idx_parts:
            raise InputError(
                f"ROI label {value} covers no voxel of {name} after mapping to its grid (the ROI is "
                "outside the field of view or much smaller than a voxel); check the ROI and registration."
            )
        idx = np.concatenate(idx_parts)
        w = np.concatenate(w_parts)
        out_idx.append(idx)
        out_w.append(w)
        carried = float(w.sum()) * tgt_voxel_ml
        if frac_fov < 0.999:
            msg = (
                f"ROI label {value}: {100 * (1 - frac_fov):.1f}% of its volume lies outside the field of view of "
                f"{name}; its statistics cover only the part inside."
            )
            warns.append(msg)
            warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
        elif abs(carried - nvox * roi_voxel_ml) > 0.25 * nvox * roi_voxel_ml and n > 1:
            msg = (
                f"ROI label {value}: its volume changes from {nvox * roi_voxel_ml:.4g} mL to {carried:.4g} mL "
                f"on the grid of {name} (the ROI is small against the voxels); increase supersample."
            )
            warns.append(msg)
            warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
        _progress.report(progress, (count + 1) / len(present), f"ROI {value}")
    return RoiMap(
        shape=shape,
        affine=t_aff,
        labels=np.array(present, np.int64),
        index=out_idx,
        weight=out_w,
        fraction_in_fov=np.array(fov),
        source_volume_ml=np.array(src_ml),
        method="same grid"
        if same
        else ("exact overlap (axis-aligned grids)" if perm is not None else f"supersample {n}"),
        warnings=warns,
    )


def _axis_permutation(m: np.ndarray, tol: float = 1e-6):
    """For target index -> ROI index ``m``: ROI axis of each target axis when the grids are axis-aligned, else None."""
    rot = m[:3, :3]
    big = np.abs(rot) > tol * np.abs(rot).max()
    if not (np.all(big.sum(axis=0) == 1) and np.all(big.sum(axis=1) == 1)):
        return None
    return [int(np.nonzero(big[:, t])[0][0]) for t in range(3)]


def _overlap_matrix(roi_lo: int, roi_n: int, t_lo: int, t_hi: int, scale: float, offset: float) -> np.ndarray:
    """(target voxels, ROI voxels) fraction of each target voxel's length covered by each ROI voxel along one axis."""
    j = np.arange(t_lo, t_hi + 1, dtype=float)
    c = scale * j + offset  # centre of target voxel j in ROI index units
    half = abs(scale) / 2.0
    i = np.arange(roi_lo, roi_lo + roi_n, dtype=float)
    a = np.maximum(c[:, None] - half, i[None, :] - 0.5)
    b = np.minimum(c[:, None] + half, i[None, :] + 0.5)
    return np.clip(b - a, 0.0, None) / abs(scale)


def _exact_axis_aligned(crop, sl, m, perm, t_lo, t_hi, shape):
    """Exact partial-volume fractions when the grids differ only by spacing, offset, flips and axis order.

    The fraction of a target voxel covered by the label is the sum over label
    voxels of the product of the 1D overlaps along each axis: a separable
    linear map applied to the label's indicator (three matrix products).
    """
    ind = crop.astype(np.float32)
    mats = []
    for t in range(3):
        r = perm[t]
        mats.append(
            _overlap_matrix(sl[r].start, crop.shape[r], int(t_lo[t]), int(t_hi[t]), m[r, t], m[r, 3]).astype(np.float32)
        )
    roi_letters = "ijk"
    tgt_letters = "abc"
    spec = ",".join(f"{tgt_letters[t]}{roi_letters[perm[t]]}" for t in range(3)) + ",ijk->abc"
    frac = np.einsum(spec, *mats, ind, optimize=True)
    frac = np.clip(frac, 0.0, 1.0)
    nz = np.nonzero(frac > 1e-6)
    if not nz[0].size:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.ravel_multi_index(tuple(a + int(o) for a, o in zip(nz, t_lo)), shape).astype(np.int64)
    return idx, frac[nz].astype(np.float32)


def _target_box(slices, m_back: np.ndarray, shape):
    """Inclusive (lo, hi) target indices that ROI boxes ``slices`` can touch (clipped to the grid)."""
    corners = []
    for sl in slices:
        lo = np.array([x.start for x in sl], float) - 0.5
        hi = np.array([x.stop for x in sl], float) - 0.5
        corners += [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    tc = np.array(corners) @ m_back[:3, :3].T + m_back[:3, 3]
    t_lo = np.maximum(np.floor(tc.min(0) + 0.5).astype(int), 0)
    t_hi = np.minimum(np.floor(tc.max(0) + 0.5).astype(int), np.array(shape) - 1)
    return t_lo, t_hi


def _sample_box(flat_lab, pshape, strides, t_lo, t_hi, m, sub32, shape, only=None, progress=None):
    """Label fractions of the target voxels in the box [t_lo, t_hi] by supersampling.

    Every subvoxel centre is mapped to the (zero-padded) ROI array and takes
    the label there. With ``only``, the fraction of that one label; else of
    every label. Returns (labels, flat target indices, weights) arrays.
    """
    n_sub = sub32.shape[0]
    ax1 = np.arange(t_lo[1], t_hi[1] + 1)
    ax2 = np.arange(t_lo[2], t_hi[2] + 1)
    plane = np.stack(np.meshgrid(ax1, ax2, indexing="ij"), -1).reshape(-1, 2)
    rows = max(1, _MAX_POINTS // max(1, plane.shape[0] * n_sub))
    top = int(flat_lab.max()) + 1
    parts_lab, parts_idx, parts_w = [], [], []
    n_rows = t_hi[0] - t_lo[0] + 1
    for a0 in range(t_lo[0], t_hi[0] + 1, rows):
        a0s = np.arange(a0, min(a0 + rows, t_hi[0] + 1))
        base = np.column_stack([np.repeat(a0s, plane.shape[0]), np.tile(plane, (a0s.size, 1))])
        base_roi = (base @ m[:3, :3].T + m[:3, 3]).astype(np.float32)
        lin = np.zeros((base.shape[0], n_sub), np.int64)
        for axis in range(3):
            p = np.floor(base_roi[:, axis, None] + sub32[None, :, axis]).astype(np.int64)
            np.clip(p, 0, pshape[axis] - 1, out=p)
            lin += p * strides[axis]
        vals = flat_lab[lin]
        flat_t = np.ravel_multi_index(tuple(base.T), shape).astype(np.int64)
        if only is not None:
            w = np.count_nonzero(vals == only, axis=1) / n_sub
            keep = w > 0
            parts_lab.append(np.full(int(keep.sum()), only, np.int64))
            parts_idx.append(flat_t[keep])
            parts_w.append(w[keep].astype(np.float32))
        else:
            first = vals[:, 0]
            uniform = np.all(vals == first[:, None], axis=1)
            take = uniform & (first > 0)
            if np.any(take):
                parts_lab.append(first[take].astype(np.int64))
                parts_idx.append(flat_t[take])
                parts_w.append(np.ones(int(take.sum()), np.float32))
            mixed = np.nonzero(~uniform)[0]
            if mixed.size:
                keys = mixed[:, None].astype(np.int64) * top + vals[mixed].astype(np.int64)
                keys, counts = np.unique(keys.reshape(-1), return_counts=True)
                row, lab = keys // top, keys % top
                keep = lab > 0
                parts_lab.append(lab[keep])
                parts_idx.append(flat_t[row[keep]])
                parts_w.append((counts[keep] / n_sub).astype(np.float32))
        _progress.report(progress, (a0s[-1] - t_lo[0] + 1) / n_rows, "carrying ROIs")
    return parts_lab, parts_idx, parts_w


def _supersampled_all(lab_i, boxes, present, m, m_back, sub_roi, shape, progress=None) -> dict:
    """Fractions of every label by supersampling the target voxels (any affine relation between the grids).

    Sparse ROIs are sampled label by label in their own boxes; ROIs whose
    boxes overlap a lot (an organ atlas) in one pass over the union of the
    boxes, all labels at once. Returns {label: (flat target indices, float32 weights)}.
    """
    t_lo, t_hi = _target_box([boxes[v - 1] for v in present], m_back, shape)
    if np.any(t_hi < t_lo):
        return {}
    per_label = {v: _target_box([boxes[v - 1]], m_back, shape) for v in present}
    sizes = {v: int(np.prod(np.maximum(hi - lo + 1, 0))) for v, (lo, hi) in per_label.items()}
    union = int(np.prod(t_hi - t_lo + 1))
    # a one-voxel zero border lets every subpoint index the array after clipping (no bounds masks)
    padded = np.pad(lab_i, 1)
    pshape = np.array(padded.shape)
    flat_lab = padded.reshape(-1)
    strides = np.array([pshape[1] * pshape[2], pshape[2], 1], np.int64)
    sub32 = (sub_roi + 1.5).astype(np.float32)  # +1 for the border, +0.5 to round by floor
    parts_lab, parts_idx, parts_w = [], [], []
    if sum(sizes.values()) <= union:
        done = 0
        for v in present:
            lo, hi = per_label[v]
            if np.any(hi < lo):
                continue
            a, b, c = _sample_box(flat_lab, pshape, strides, lo, hi, m, sub32, shape, only=v)
            parts_lab += a
            parts_idx += b
            parts_w += c
            done += sizes[v]
            _progress.report(progress, done / max(1, sum(sizes.values())), "carrying ROIs")
    else:
        parts_lab, parts_idx, parts_w = _sample_box(
            flat_lab, pshape, strides, t_lo, t_hi, m, sub32, shape, progress=progress
        )
    if not parts_lab:
        return {}
    labs = np.concatenate(parts_lab)
    idx = np.concatenate(parts_idx)
    w = np.concatenate(parts_w)
    wanted = np.zeros(int(max(present)) + 1, bool)
    wanted[present] = True
    keep = (labs < wanted.size) & wanted[np.minimum(labs, wanted.size - 1)]
    labs, idx, w = labs[keep], idx[keep], w[keep]
    order = np.argsort(labs, kind="stable")
    labs, idx, w = labs[order], idx[order], w[order]
    starts = np.searchsorted(labs, present, side="left")
    stops = np.searchsorted(labs, present, side="right")
    return {v: (idx[a:b], w[a:b]) for v, a, b in zip(present, starts, stops) if b > a}


# ----------------------------------------------------------------------------- statistics
def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` with ``weights`` (equals numpy's median for equal weights).

    Frequency-weight definition: the smallest value whose cumulative weight
    reaches half the total; when it reaches exactly half, the mean of that
    value and the next.

    Parameters
    ----------
    values : numpy.ndarray
        Values (any shape; flattened).
    weights : numpy.ndarray
        Non-negative weights, same size as ``values`` (partial-voxel weights of an ROI).

    Returns
    -------
    float
        The weighted median, NaN for no values.

    Examples
    --------
    >>> weighted_median(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4))
    2.5
    >>> weighted_median(np.array([1.0, 10.0]), np.array([3.0, 1.0]))
    1.0
    """
    v = np.asarray(values, float)
    w = np.asarray(weights, float)
    if v.size == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)
    half = 0.5 * cw[-1]
    k = int(np.searchsorted(cw, half - 1e-9 * cw[-1]))
    if abs(cw[k] - half) <= 1e-9 * cw[-1] and k + 1 < v.size:
        return float(0.5 * (v[k] + v[k + 1]))
    return float(v[k])


def _kernel_half(affine: np.ndarray, radius_mm: float, max_half=None) -> np.ndarray:
    """Half-extent (voxels) of :func:`sphere_kernel` along each index axis, clipped to ``max_half``."""
    inv = np.linalg.inv(np.asarray(affine, float)[:3, :3])
    # a kernel voxel at index offset h reaches h - 0.5
    half = np.floor(radius_mm * np.linalg.norm(inv, axis=1) + 0.5).astype(int)
    return half if max_half is None else np.minimum(half, np.asarray(max_half, int))


def sphere_kernel(
    affine: np.ndarray, radius_mm: float = PEAK_RADIUS_MM, subsample: int = 7, normalize: bool = True, max_half=None
) -> np.ndarray:
    """Partial-voxel weights of a sphere of ``radius_mm`` centred on a voxel, on a grid of ``affine``.

    Each kernel voxel that straddles the sphere's surface is split into ``subsample^3`` points; its
    weight is the fraction inside the sphere (works for anisotropic and oblique grids). With
    ``normalize`` the kernel sums to 1 (a mean filter); without, each weight is the covered fraction.
    ``max_half`` (voxels per axis) cuts the kernel to what can overlap an image of shape
    ``max_half + 1`` (docs/methods/roi.md#peak).

    Parameters
    ----------
    affine : (4, 4) array
        Index-to-world affine of the image grid (mm); only its 3 x 3 part matters.
    radius_mm : float, default :data:`PEAK_RADIUS_MM` (6.2035, PERCIST's 1 mL)
        Sphere radius (mm).
    subsample : int, default 7
        Points per axis in a surface voxel.
    normalize : bool, default True
        Divide by the sum so the weights add up to 1.
    max_half : sequence of int, optional
        Largest half-extent (voxels) per index axis.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(2 h0 + 1, 2 h1 + 1, 2 h2 + 1)`` with h the half-extent in voxels per axis.

    Raises
    ------
    InputError
        When the sphere covers no voxel.

    Examples
    --------
    >>> k = sphere_kernel(np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> k.shape, round(float(k.sum()), 6)
    ((7, 7, 7), 1.0)
    >>> k = sphere_kernel(np.eye(4), 1.0, normalize=False)     # r = 1 voxel
    >>> k.shape, float(k[1, 1, 1]), round(float(k[0, 1, 1]), 3), round(float(k[0, 0, 0]), 4)
    ((3, 3, 3), 1.0, 0.42, 0.0029)
    """
    rot = np.asarray(affine, float)[:3, :3]
    # half-extent of the sphere along each index axis: r * |row of inv(rot)|
    half = _kernel_half(affine, radius_mm, max_half)
    axes = [np.arange(-h, h + 1) for h in half]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    s = subsample
    offs = (np.arange(s) + 0.5) / s - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    # voxels wholly inside (or outside) the sphere need no subsampling
    centre_mm = np.linalg.norm(grid @ rot.T, axis=1)
    half_diag = 0.5 * np.linalg.norm(np.abs(rot).sum(axis=1))
    weights = (centre_mm + half_diag <= radius_mm).astype(float)
    edge = np.nonzero((centre_mm + half_diag > radius_mm) & (centre_mm - half_diag <= radius_mm))[0]
    for chunk in range(0, edge.size, 4096):
        part = edge[chunk : chunk + 4096]
        pts = grid[part, None, :] + sub[None, :, :]
        mm = pts @ rot.T
        weights[part] = (np.einsum("ijk,ijk->ij", mm, mm) <= radius_mm**2).mean(axis=1)
    kernel = weights.reshape([a.size for a in axes])
    total = kernel.sum()
    if total <= 0:
        raise InputError(f"the peak sphere (r = {radius_mm} mm) is empty on this grid.")
    return kernel / total if normalize else kernel


def peak_radius_mm(volume_ml: float) -> float:
    """Radius (mm) of a sphere of ``volume_ml`` (1 mL -> 6.2035 mm).

    ``r = (3 V / (4 pi))^(1/3)`` with V in mm3 (docs/methods/pet.md#suvpeak).

    Parameters
    ----------
    volume_ml : float
        Sphere volume (mL), positive.

    Returns
    -------
    float
        Radius in mm.

    Raises
    ------
    InputError
        When ``volume_ml`` is not positive.

    Examples
    --------
    >>> round(peak_radius_mm(1.0), 4), round(peak_radius_mm(0.0141), 3)
    (6.2035, 1.499)
    """
    if not volume_ml > 0:
        raise InputError(f"the peak sphere volume must be positive (got {volume_ml} mL).")
    return (3.0 * volume_ml / (4.0 * math.pi)) ** (1.0 / 3.0) * 10.0


def _peak(image: np.ndarray, bbox, centres, kernel: np.ndarray) -> float:
    """Max over ``centres`` (flat indices) of the kernel-weighted mean of ``image``."""
    from scipy.signal import fftconvolve

    shape = image.shape
    half = np.array(kernel.shape) // 2
    lo = np.maximum(bbox[0] - half, 0)
    hi = np.minimum(bbox[1] + half + 1, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop = image[sl].astype(np.float64)
    valid = None
    finite = np.isfinite(crop)
    if not finite.all():  # NaN outside a reconstruction's circle: leave them out of the sphere mean
        valid = finite.astype(np.float64)
        crop = np.where(finite, crop, 0.0)
    clipped = np.any(bbox[0] - half < 0) or np.any(bbox[1] + half + 1 > np.array(shape))
    local = np.unravel_index(centres, shape)
    local = tuple(a - s.start for a, s in zip(local, sl))
    if kernel.size <= 27:
        from scipy import ndimage

        num = ndimage.correlate(crop, kernel, mode="constant", cval=0.0)
    else:
        num = fftconvolve(crop, kernel[::-1, ::-1, ::-1], mode="same")
    values = num[local]
    if clipped or valid is not None:
        ones = valid if valid is not None else np.ones(crop.shape)
        den = fftconvolve(ones, kernel[::-1, ::-1, ::-1], mode="same")[local]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(den > 1e-6, values / den, np.nan)
    return float(np.nanmax(values)) if np.any(np.isfinite(values)) else float("nan")


#: A restricted peak sphere counts only where at least this share of it lies in the ROI.
PEAK_MIN_INSIDE = 0.5


def peak_in_roi(
    image: np.ndarray,
    idx: np.ndarray,
    w: np.ndarray,
    kernel: np.ndarray,
    roi_max: float,
    min_inside: float = PEAK_MIN_INSIDE,
) -> tuple:
    """The peak of one ROI restricted to the ROI (preclinical SUVpeak; ``docs/methods/pet.md#suvpeak``).

    The sphere mean is taken over the ROI's own (partial-voxel weighted) voxels only,
    at every centre inside the ROI where at least ``min_inside`` of the sphere lies in
    the ROI. When no centre qualifies (the ROI is smaller than the sphere) the peak is
    the mean of the hottest ROI voxel and its 26 neighbours that are in the ROI. The
    result never exceeds ``roi_max``.

    Parameters
    ----------
    image : 3D array
    idx, w : arrays
        Flat indices and partial-voxel weights of the ROI on ``image``'s grid.
    kernel : 3D array
        Sphere weights (:func:`sphere_kernel`, normalised to sum 1).
    roi_max : float
        The ROI's maximum (the cap).
    min_inside : float, default :data:`PEAK_MIN_INSIDE`
        Smallest share of the sphere (its kernel weight) that must lie in the ROI at a centre.

    Returns
    -------
    (peak, method) : (float, str)
        The peak (image units) and how it was measured: "sphere in ROI" or "hottest voxel + 26
        neighbours (ROI smaller than the sphere)".

    Examples
    --------
    >>> img = np.zeros((9, 9, 9)); img[4, 4, 4] = 10.0
    >>> idx = np.ravel_multi_index(np.nonzero(np.ones((3, 3, 3)))[0:3], (3, 3, 3))
    >>> flat = np.ravel_multi_index(tuple(a + 3 for a in np.unravel_index(idx, (3, 3, 3))), img.shape)
    >>> peak_in_roi(img, flat, np.ones(27), np.ones((5, 5, 5)) / 125, 10.0)
    (0.37037037037037035, 'hottest voxel + 26 neighbours (ROI smaller than the sphere)')
    """

    shape = image.shape
    coords = np.unravel_index(idx, shape)
    half = np.array(kernel.shape) // 2
    lo = np.maximum(np.array([c.min() for c in coords]) - half, 0)
    hi = np.minimum(np.array([c.max() for c in coords]) + half + 1, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop = np.nan_to_num(image[sl].astype(np.float64), nan=0.0)
    wimg = np.zeros(crop.shape)
    local = tuple(c - s.start for c, s in zip(coords, sl))
    np.add.at(wimg, local, w)
    wimg = np.clip(wimg, 0.0, 1.0)
    vals = image[coords].astype(np.float64)
    centres = w >= min(0.5, float(w.max()))
    sphere_voxels = float(kernel.sum() / kernel.max())  # full voxels carry the kernel's largest weight
    if float(w.sum()) >= min_inside * sphere_voxels:
        from scipy.signal import fftconvolve

        k = kernel[::-1, ::-1, ::-1]
        num = fftconvolve(crop * wimg, k, mode="same")
        den = fftconvolve(wimg, k, mode="same")
        at = tuple(a[centres] for a in local)
        ok = den[at] >= min_inside * float(kernel.sum())
        if np.any(ok):
            peak = float(np.max(num[at][ok] / den[at][ok]))
            return min(peak, roi_max), "sphere in ROI"
    # the ROI is smaller than the sphere: the hottest voxel and its 26 neighbours (those in the ROI)
    hottest = int(np.argmax(np.where(centres, vals, -np.inf)))
    c = tuple(int(a[hottest]) for a in local)
    box = tuple(slice(max(x - 1, 0), x + 2) for x in c)
    wsum = float(wimg[box].sum())
    peak = float((crop[box] * wimg[box]).sum() / wsum) if wsum > 0 else float(vals[hottest])
    return min(peak, roi_max), "hottest voxel + 26 neighbours (ROI smaller than the sphere)"


def roi_statistics(
    image: Volume,
    rois,
    *,
    transform: np.ndarray | None = None,
    supersample: int = 3,
    peak: bool = True,
    peak_radius_mm: float = PEAK_RADIUS_MM,
    min_weight: float = 0.5,
    name: str | None = None,
    progress=None,
    peak_in_roi_only: bool = False,
):
    """Weighted statistics of ``image`` in each ROI, on ``image``'s own grid.

    Parameters
    ----------
    image : Volume
        3D quantitative image (any unit).
    rois : Volume or RoiMap
        Label volume on any grid (carried with :func:`carry_rois`) or a RoiMap for this grid.
    transform : (4, 4) array, optional
        World-to-world map from the image's world to the ROI image's world.
    supersample : int, default 3
        Subvoxels per axis for the partial-voxel weights.
    peak : bool, default True
        Compute the peak (highest mean in a sphere of ``peak_radius_mm`` centred in the ROI;
        docs/methods/roi.md#peak).
    peak_radius_mm : float, default :data:`PEAK_RADIUS_MM`
        6.2035 mm = 1 cm^3 (SUVpeak).
    min_weight : float, default 0.5
        Voxels with at least this weight count as inside for ``voxels``, min, max
        and the peak centres.
    peak_in_roi_only : bool
        Restrict the peak sphere to the ROI (:func:`peak_in_roi`: sphere mean over ROI
        voxels, 26-neighbour fallback, never above the ROI maximum; preclinical SUVpeak);
        False: the PERCIST sphere over all voxels around centres in the ROI.
    name : str, optional
        Name of the image in messages.
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        Columns label, voxels, voxels_weighted, volume_ml, mean, sd (both weighted by the
        partial-voxel weights; the SD divides by the summed weight), min, median (weighted),
        max, peak (if asked; NaN when the sphere is too large for the grid) and peak_method (with
        ``peak_in_roi_only``), integral (sum of w * value * voxel mL), fraction_in_fov.
        ``attrs``: "warnings", "method", "unit".

    Examples
    --------
    >>> img = Volume(np.arange(64, dtype=float).reshape(4, 4, 4), np.eye(4), "PT", "Bq/mL")
    >>> lab = np.zeros((4, 4, 4), np.uint8)
    >>> lab[:2, :2, :2], lab[2:, 2:, 2:] = 1, 2
    >>> df = roi_statistics(img, Volume(lab, np.eye(4)), peak_radius_mm=1.0)
    >>> df[["label", "voxels", "volume_ml", "mean", "min", "max", "integral"]].round(3).values.tolist()
    [[1.0, 8.0, 0.008, 10.5, 0.0, 21.0, 0.084], [2.0, 8.0, 0.008, 52.5, 42.0, 63.0, 0.42]]
    >>> df = roi_statistics(img, Volume(lab, np.eye(4)), peak_radius_mm=1.0, peak_in_roi_only=True)
    >>> df["peak"].round(3).tolist(), df["peak_method"].tolist()
    ([16.455, 58.455], ['sphere in ROI', 'sphere in ROI'])
    """
    import pandas as pd

    if image.data.ndim != 3:
        raise InputError("ROI statistics need a 3D image; select one frame of a 4D image first.")
    label_name = name or (f"{image.name!r}" if image.name else "the image")
    rmap = carry_rois(
        rois,
        image,
        transform=transform,
        supersample=supersample,
        name=label_name,
        progress=_progress.scaled(progress, 0.0, 0.5),
    )
    data = image.numpy()
    flat = data.reshape(-1)
    voxel_ml = image.voxel_volume_mm3 / 1000.0
    kernel, notes = None, []
    if peak:
        # kernel offsets beyond the image never overlap it: cut them (exact, as _peak renormalises
        # clipped spheres); a sphere of millions of voxels (microscopy pixels) gets no peak
        half = _kernel_half(image.affine, peak_radius_mm, np.array(data.shape) - 1)
        if float(np.prod(2 * half + 1)) > _MAX_PEAK_KERNEL_VOXELS:
            message = (
                f"no peak for {label_name}: a sphere of {peak_radius_mm:.3g} mm spans "
                f"{float(np.prod(2 * half + 1)):.3g} of its {np.round(image.spacing, 4).tolist()} mm voxels; "
                "the peak column is left empty."
            )
            warnings.warn(message, ImmunotrackWarning, stacklevel=2)
            notes.append(message)
        else:
            kernel = sphere_kernel(image.affine, peak_radius_mm, max_half=half)
    rows = []
    for i, label in enumerate(rmap.labels):
        idx, w = rmap.index[i], rmap.weight[i].astype(np.float64)
        vals = flat[idx].astype(np.float64)
        ok = np.isfinite(vals)
        if not ok.all():
            idx, vals, w = idx[ok], vals[ok], w[ok]
        wsum = w.sum()
        if wsum <= 0:
            raise InputError(f"ROI label {label} covers no valid voxel of {label_name}; check the ROI.")
        mean = float(np.dot(w, vals) / wsum)
        sd = float(math.sqrt(max(np.dot(w, (vals - mean) ** 2) / wsum, 0.0)))
        inside = w >= min_weight
        core = vals[inside] if np.any(inside) else vals[w == w.max()]
        row = {
            "label": int(label),
            "voxels": int(inside.sum()),
            "voxels_weighted": float(wsum),
            "volume_ml": float(wsum * voxel_ml),
            "mean": mean,
            "sd": sd,
            "min": float(core.min()),
            "median": weighted_median(vals, w),
            "max": float(core.max()),
            "integral": float(np.dot(w, vals) * voxel_ml),
            "fraction_in_fov": float(rmap.fraction_in_fov[i]),
        }
        if peak and kernel is None:
            row["peak"] = float("nan")
        elif peak:
            centres = idx[inside] if np.any(inside) else idx[w == w.max()]
            coords = np.unravel_index(idx, data.shape)
            bbox = (np.array([c.min() for c in coords]), np.array([c.max() for c in coords]))
            if peak_in_roi_only:
                row["peak"], row["peak_method"] = peak_in_roi(data, idx, w, kernel, row["max"])
            else:
                row["peak"] = _peak(data, bbox, centres, kernel)
        rows.append(row)
        _progress.report(progress, 0.5 + 0.5 * (i + 1) / len(rmap.labels), f"statistics of ROI {label}")
    df = pd.DataFrame(rows)
    df.attrs["warnings"] = list(rmap.warnings) + notes
    df.attrs["method"] = rmap.method
    df.attrs["unit"] = image.unit
    return df
