"""Small, fast, seeded test scenes with known truth, for the analysis tests.

Each function returns a dict of :class:`~napari_immunotrack.volume.Volume`
objects and a ``truth`` dict. World coordinates are RAS millimetres; every
scene's volumes are canonical (array axes S, A, R) unless stated.
Difficulty is tunable through the SNR, the iron loads, the separation of
clusters and the confounders. Every scene runs in well under a second.

>>> from napari_immunotrack.simulate import cluster_scene
>>> scene = cluster_scene(seed=1, snr=20.0)
>>> scene["post"].spatial_shape
(64, 96, 96)
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from ..errors import InputError
from ..volume import Volume
from . import iron as iron_mod
from .fluorine import FluorineDepot, atoms_per_mM_voxel, f19_image
from .mpi import mpi_image
from .mri import Sequence, check_snr, relaxation_maps, relaxivity, rician, sequences, tissue_signal, weighted_image
from .nuclear import ActivitySource, activity_image, decay_factor, half_life_s, poisson_noise
from .phantom import (
    LABEL_OF,
    LABELS,
    Body,
    Cylinder,
    Ellipsoid,
    Sphere,
    check_field,
    grid_affine,
    make_mouse,
    rasterize,
    rotation_matrix,
)

#: Image scale: the noiseless signal of the reference tissue (muscle) is this many a.u.
REFERENCE_SIGNAL = 1000.0


def rigid_matrix(
    rotation_deg: Seq[float] = (0.0, 0.0, 0.0),
    translation_mm: Seq[float] = (0.0, 0.0, 0.0),
    center_mm: Seq[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4x4 rigid map: rotate about ``center_mm`` (x, y, then z, degrees), then translate (mm).

    Parameters
    ----------
    rotation_deg : 3 floats, default (0, 0, 0)
        Rotations about the x, y and z axes, degrees, applied in that order
        (:func:`~napari_immunotrack.simulate.phantom.rotation_matrix`).
    translation_mm : 3 floats, default (0, 0, 0)
        Translation after the rotation, mm.
    center_mm : 3 floats, default (0, 0, 0)
        The point the rotation leaves in place, mm.

    Returns
    -------
    (4, 4) ndarray
        ``p -> R (p - c) + c + t`` in homogeneous coordinates.

    Examples
    --------
    >>> m = rigid_matrix((0, 0, 90), (1, 0, 0), center_mm=(10, 0, 0))
    >>> (m @ [10, 0, 0, 1]).round(6), (m @ [11, 0, 0, 1]).round(6)    # the centre moves only by t
    (array([11.,  0.,  0.,  1.]), array([11.,  1.,  0.,  1.]))
    """
    r = rotation_matrix(rotation_deg)
    c = np.asarray(center_mm, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, float)
    return m


def _mr_volume(data, affine, seq: Sequence, field_t, name, **meta) -> Volume:
    md = seq.metadata(field_t)
    md.update(meta)
    return Volume(np.asarray(data, np.float32), affine, modality="MR", unit="a.u.", metadata=md, name=name)


def _label_volume(data, affine, name, names: dict | None = None) -> Volume:
    md = {"label_names": {int(k): v for k, v in (names or {}).items()}}
    return Volume(np.asarray(data), affine, modality="SEG", unit="label", metadata=md, name=name)


def _place(rng, n, ok, lo, hi, existing: list[np.ndarray], min_sep: float, tries: int = 4000):
    """Draw ``n`` points uniformly in [lo, hi] satisfying ``ok(p)`` and ``min_sep`` from all others."""
    out = []
    for _ in range(n):
        for _attempt in range(tries):
            p = rng.uniform(lo, hi)
            if not ok(p):
                continue
            if all(np.linalg.norm(p - q) >= min_sep for q in existing + out):
                out.append(p)
                break
        else:
            raise InputError(
                f"could not place {n} objects {min_sep} mm apart in the field of view; "
                "lower their number or min_separation_mm, or enlarge the grid."
            )
    return out


# ============================================================================ 1. clusters
def cluster_scene(
    seed: int = 0,
    snr: float = 20.0,
    n_clusters: int = 6,
    iron_pg_range: Seq[float] = (1000.0, 10000.0),
    min_separation_mm: float = 1.5,
    decoys: bool = True,
    shape: Seq[int] = (64, 96, 96),
    voxel_mm: float = 0.1,
    te_ms: float | None = None,
    field_t: float = 9.4,
    near_touching: bool = False,
    iron_pg_per_cell: float = 5.0,
    clusters: list[dict] | None = None,
) -> dict:
    """Iron-labelled cell clusters on a T2*-weighted gradient echo, before and after injection.

    A cross-section of soft tissue (muscle with a lymph-node-like region,
    a subcutaneous fat layer, air around) holds ``n_clusters`` clusters of
    SPION-labelled cells, each a magnetic dipole whose intravoxel dephasing
    makes a dark bloom larger than the cluster (see :mod:`.iron`). With
    ``decoys`` it also holds intrinsic dark spots present before AND after
    injection: an air bubble, a vessel, a haemorrhage and a bone.

    Parameters
    ----------
    seed : int
    snr : float
        Muscle signal / noise sigma on both images (> 0).
    n_clusters : int
    iron_pg_range : (low, high) total iron per cluster in pg (log-uniform).
    min_separation_mm : minimum distance between cluster centres and decoys.
    decoys : include the air/vessel/haemorrhage/bone decoys.
    shape, voxel_mm : grid (array axes S, A, R; isotropic voxels).
    te_ms : echo time (default: the field's T2*w preset, 5 ms at 9.4 T).
    field_t : 7.0 or 9.4.
    near_touching : put the last cluster next to the first so their blooms
        (r < 0.5) are 1-2 voxels apart.
    iron_pg_per_cell : iron per cell (pg), for the cell counts in the truth.
    clusters : optional list of {"centroid_ras_mm": (x, y, z), "iron_pg": float} placing the
        clusters yourself (then ``n_clusters``, ``iron_pg_range`` and ``near_touching`` are
        ignored). A cluster outside the body, or with negative iron, is an InputError.

    Returns
    -------
    dict
        ``pre``, ``post`` : T2*w magnitude Volumes (a.u., muscle = 1000, Rician noise)
        ``pre_noiseless``, ``post_noiseless`` : the same without noise
        ``reference_mask`` : uint8 Volume, a muscle ROI without cells
        ``search_mask`` : uint8 Volume, the tissue where clusters may be (inside the skin)
        ``background_mask`` : uint8 Volume, air outside the body
        ``bloom_labels`` : label Volume, void voxels (post/pre < 0.5, noiseless) labelled by cluster id
        ``tissue_labels`` : label Volume of the tissues (:data:`~.phantom.LABELS`)
        ``sigma`` : noise sigma (a.u.); ``reference_signal`` : 1000.0
        ``truth`` : ``clusters`` (list of {id, centroid_ras_mm, iron_pg, cells, radius_mm,
        bloom_voxels}), ``decoys`` (list of {kind, centroid_ras_mm}), ``sequence``,
        ``field_t``, ``near_pair`` (ids or None).

    Examples
    --------
    >>> s = cluster_scene(seed=0, n_clusters=3, decoys=False)
    >>> len(s["truth"]["clusters"])
    3
    """
    snr = check_snr(snr)
    field_t = check_field(field_t)
    if int(n_clusters) < 0:
        raise InputError(f"n_clusters={n_clusters} is impossible; give 0 or more clusters.")
    lo_fe, hi_fe = (float(v) for v in iron_pg_range)
    iron_mod.check_iron(lo_fe, "iron_pg_range")
    iron_mod.check_iron(hi_fe, "iron_pg_range")
    if hi_fe < lo_fe or lo_fe <= 0:
        raise InputError(f"iron_pg_range={tuple(iron_pg_range)} must be (low, high) with 0 < low <= high (pg).")
    if iron_pg_per_cell <= 0:
        raise InputError(f"iron_pg_per_cell={iron_pg_per_cell} is impossible; give pg of iron per cell > 0.")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    affine = grid_affine(shape, voxel_mm)
    base = sequences(field_t)["T2starw"]
    seq = Sequence("T2starw", "GRE", base.tr_ms, float(te_ms) if te_ms is not None else base.te_ms, base.flip_deg)
    if seq.te_ms <= 0:
        raise InputError(f"te_ms={te_ms} is impossible; the echo time must be > 0 ms.")
    half = (np.array(shape[::-1], float) - 1) / 2 * voxel_mm  # x, y, z half extents
    a, b = 0.86 * half[0], 0.80 * half[1]
    body = Body((0, 0, 0), a, b, half_length=1e6, power=2.0)
    skin = Body((0, 0, 0), a, b, half_length=1e6, power=2.0, shrink_mm=0.3, shell=True)
    node = Ellipsoid((0.30 * a, 0.05 * b, 0.0), (0.45 * a, 0.55 * b, 0.8 * half[2]))
    ref_c = np.array([-0.55 * a, -0.25 * b, 0.0])
    ref_r = np.array([0.22 * a, 0.25 * b, 0.6 * half[2]])
    reference = Ellipsoid(ref_c, ref_r)
    solids = [(LABEL_OF["muscle"], body), (LABEL_OF["fat"], skin), (LABEL_OF["ln_inguinal_right"], node)]
    inner = Body((0, 0, 0), a, b, half_length=1e6, power=2.0, shrink_mm=0.3)
    margin = 0.6 + 0.3

    def in_tissue(p, extra=0.0):
        shrunk = Body((0, 0, 0), a - margin - extra, b - margin - extra, half_length=1e6, power=2.0)
        far_ref = np.linalg.norm((p - ref_c) / (ref_r + 0.9)) > 1.0
        return bool(shrunk.contains(p)[0]) and far_ref and abs(p[2]) < half[2] - 0.8

    lo_box, hi_box = -half + 0.5, half - 0.5
    decoy_list = []
    existing: list[np.ndarray] = []
    decoy_keep: list[tuple] = []  # (centre, is a cylinder along z)

    def far_from_decoys(p, dmin):
        for q, cyl in decoy_keep:
            d = np.linalg.norm((p - q)[:2]) if cyl else np.linalg.norm(p - q)
            if d < dmin:
                return False
        return True

    if decoys:
        kinds = ["air", "vessel", "haemorrhage", "bone"]
        sep = max(min_separation_mm, 1.2) + 0.5
        pts = _place(
            rng,
            4,
            lambda p: in_tissue(p, 0.3) and far_from_decoys(p, sep),
            lo_box * np.array([1, 1, 0]),
            hi_box * np.array([1, 1, 0]),
            existing,
            sep,
        )
        for kind, p in zip(kinds, pts):
            if kind == "air":
                solid, lab = Sphere(p, 0.3), LABEL_OF["gut_gas"]
            elif kind == "vessel":
                solid, lab = Cylinder(p - [0, 0, 2 * half[2]], p + [0, 0, 2 * half[2]], 0.2), LABEL_OF["vessel"]
            elif kind == "haemorrhage":
                solid, lab = Sphere(p, 0.35), LABEL_OF["haemorrhage"]
            else:
                solid, lab = Cylinder(p - [0, 0, 2 * half[2]], p + [0, 0, 2 * half[2]], 0.35), LABEL_OF["bone"]
            solids.append((lab, solid))
            decoy_list.append({"kind": kind, "centroid_ras_mm": [float(v) for v in p]})
            decoy_keep.append((p, kind in ("vessel", "bone")))
            existing.append(p)
    labels = rasterize(solids, shape, affine)
    scale = REFERENCE_SIGNAL / tissue_signal(seq, field_t, "muscle")
    pre0 = weighted_image(labels, seq, field_t, scale=scale)
    # clusters
    n = int(n_clusters)
    irons = np.exp(rng.uniform(np.log(lo_fe), np.log(hi_fe), n)) if n else np.zeros(0)
    sep = float(min_separation_mm)
    near_pair = None

    def single_bloom(c):
        idx, f = iron_mod.bloom_factors(shape, affine, [c], seq, field_t)
        return idx[f < 0.5]

    def x_extent(c, sign):
        """How far the void of ``c`` alone reaches along +x (sign=+1) or -x (sign=-1), mm."""
        vox = single_bloom(c)
        if vox.size == 0:
            return 0.0
        w = np.stack(np.unravel_index(vox, shape), 1) @ affine[:3, :3].T + affine[:3, 3]
        line = np.all(np.abs(w[:, 1:] - c.center_mm[1:]) < voxel_mm * 0.75, axis=1)
        d = sign * (w[line, 0] - c.center_mm[0]) if line.any() else np.array([0.0])
        return float(max(d.max(), 0.0))

    pair: list[np.ndarray] = []
    if clusters is not None:
        # explicit clusters: check each before anything else
        given = []
        for i, c in enumerate(clusters):
            try:
                p = np.asarray(c["centroid_ras_mm"], float).reshape(3)
                fe = iron_mod.check_iron(c["iron_pg"], f"clusters[{i}]['iron_pg']")
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(
                    f"clusters[{i}] must be a dict with 'centroid_ras_mm' (3 numbers, mm) and 'iron_pg' (pg)."
                ) from None
            ijk = np.round((np.linalg.inv(affine) @ np.r_[p, 1.0])[:3]).astype(int)
            inside_grid = bool(np.all(ijk >= 0) and np.all(ijk < np.array(shape)))
            if not inside_grid or labels[tuple(ijk)] == 0:
                raise InputError(
                    f"clusters[{i}] at {np.round(p, 3).tolist()} mm is outside the body; place "
                    "clusters inside the tissue (the search_mask)."
                )
            given.append((p, fe))
        n = len(given)
        irons = np.array([fe for _, fe in given])
        near_touching = False
    if near_touching and n >= 2:
        # the first and last clusters sit side by side along x (perpendicular to B0),
        # their voids (r < 0.5) 1-2 voxels apart; place the pair first
        origin = np.zeros(3)
        gap = (
            x_extent(iron_mod.IronCluster(origin, irons[0], 1.0), +1)
            + x_extent(iron_mod.IronCluster(origin, irons[-1], 1.0), -1)
            + 1.5 * voxel_mm
        )
        offset = np.array([gap, 0.0, 0.0])
        first = _place(
            rng,
            1,
            lambda p: (
                in_tissue(p) and in_tissue(p + offset) and far_from_decoys(p, sep) and far_from_decoys(p + offset, sep)
            ),
            lo_box,
            hi_box,
            [],
            sep,
        )[0]
        pair = [first, first + offset]
    n_free = n - len(pair)
    if clusters is not None:
        pos = [p for p, _ in given]
    else:
        pos = (
            _place(rng, n_free, lambda p: in_tissue(p) and far_from_decoys(p, sep), lo_box, hi_box, pair, sep)
            if n_free
            else []
        )
    if pair:
        pos = [pair[0]] + pos + [pair[1]]
        near_pair = [1, n]
    clusters = [
        iron_mod.IronCluster(p, fe, fe / iron_pg_per_cell, id=i + 1) for i, (p, fe) in enumerate(zip(pos, irons))
    ]
    if pair and clusters:
        # the two fields add, so the joint voids are larger than each alone: push the partner
        # out voxel by voxel until the voids are separate (>= 1 empty voxel between them)
        ca, cb = clusters[0], clusters[-1]
        for _ in range(8):
            idx, fac = iron_mod.bloom_factors(shape, affine, [ca, cb], seq, field_t)
            vox = np.stack(np.unravel_index(idx[fac < 0.5], shape), 1)
            w = vox @ affine[:3, :3].T + affine[:3, 3]
            side_b = np.linalg.norm(w - cb.center_mm, axis=1) < np.linalg.norm(w - ca.center_mm, axis=1)
            if not side_b.any() or side_b.all():
                break
            d = np.sqrt(((vox[side_b][:, None] - vox[~side_b][None]) ** 2).sum(-1)).min()
            if d >= 2.0:
                break
            p = cb.center_mm + np.array([voxel_mm, 0.0, 0.0])
            if not in_tissue(p):
                break
            cb.center_mm = p
    for c in clusters:
        if labels[tuple(np.round((np.linalg.inv(affine) @ np.r_[c.center_mm, 1])[:3]).astype(int))] == 0:
            raise InputError("a cluster fell outside the body; enlarge the grid or lower n_clusters.")
    idx, fac = iron_mod.bloom_factors(shape, affine, clusters, seq, field_t)
    post0 = pre0.copy()
    iron_mod.apply_bloom(post0, idx, fac)
    # truth: per-cluster void (alone) and a label map of the combined void
    bloom_labels = np.zeros(shape, np.uint16)
    void = np.zeros(shape, bool)
    void.reshape(-1)[idx[fac < 0.5]] = True
    truth_clusters = []
    centres = np.array([c.center_mm for c in clusters]) if clusters else np.zeros((0, 3))
    if void.any() and clusters:
        vidx = np.flatnonzero(void)
        w = np.stack(np.unravel_index(vidx, shape), 1) @ affine[:3, :3].T + affine[:3, 3]
        nearest = np.argmin(((w[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        bloom_labels.reshape(-1)[vidx] = np.array([c.id for c in clusters])[nearest]
    for c in clusters:
        truth_clusters.append(
            {
                "id": c.id,
                "centroid_ras_mm": [float(v) for v in c.center_mm],
                "iron_pg": float(c.iron_pg),
                "cells": float(c.cells),
                "radius_mm": float(c.radius_mm),
                "bloom_voxels": int(single_bloom(c).size),
            }
        )
    sigma = REFERENCE_SIGNAL / snr
    pre = rician(pre0, sigma, rng)
    post = rician(post0, sigma, rng)
    bg = (labels == 0) & ~np.asarray(body.inside(*_grid_xyz(shape, affine)))
    ref_mask = rasterize([(1, reference)], shape, affine) & (labels == LABEL_OF["muscle"])
    search = rasterize([(1, inner)], shape, affine) > 0
    meta = {"snr": snr, "sigma": sigma, "reference_tissue": "muscle"}
    return {
        "pre": _mr_volume(pre, affine, seq, field_t, "T2starw_pre", **meta),
        "post": _mr_volume(post, affine, seq, field_t, "T2starw_post", **meta),
        "pre_noiseless": _mr_volume(pre0, affine, seq, field_t, "T2starw_pre_noiseless"),
        "post_noiseless": _mr_volume(post0, affine, seq, field_t, "T2starw_post_noiseless"),
        "reference_mask": _label_volume(ref_mask.astype(np.uint8), affine, "reference_mask", {1: "muscle reference"}),
        "search_mask": _label_volume(search.astype(np.uint8), affine, "search_mask", {1: "body"}),
        "background_mask": _label_volume(bg.astype(np.uint8), affine, "background_mask", {1: "air"}),
        "bloom_labels": _label_volume(bloom_labels, affine, "bloom_labels"),
        "tissue_labels": _label_volume(labels, affine, "tissue_labels", LABELS),
        "sigma": float(sigma),
        "reference_signal": REFERENCE_SIGNAL,
        "truth": {
            "clusters": truth_clusters,
            "decoys": decoy_list,
            "sequence": seq.metadata(field_t),
            "field_t": field_t,
            "near_pair": near_pair,
            "iron_pg_per_cell": float(iron_pg_per_cell),
            "void_threshold": 0.5,
        },
    }


def _grid_xyz(shape, affine):
    from .phantom import world_coords

    return world_coords(shape, affine)


# ============================================================================ 2. dual mode
def dual_mode_scene(
    seed: int = 0,
    snr: float = 25.0,
    shape: Seq[int] = (48, 64, 64),
    voxel_mm: float = 0.15,
    field_t: float = 9.4,
    n_labelled: int = 3,
    concentration_mM: Seq[float] = (0.3, 0.8),
    agent: str = "dual_mode",
    confounders: bool = True,
) -> dict:
    """T1-T2 dual-mode labelled regions with T1-bright / T2-dark confounders, before and after.

    Labelled regions are balls of agent (uniform ``concentration_mM`` drawn
    from the range) in muscle/lymph-node tissue: R1 and R2 rise by r1 C and
    r2 C. Confounders present before AND after: early subacute haemorrhage
    (T1-bright, T2-dark), fat (T1-bright) and an air pocket (dark on both).
    Signal equations and relaxivities: ``docs/methods/simulator.md#mri-signal-equations``.

    Parameters
    ----------
    seed : int, default 0
        Seed of the random placement, sizes, concentrations and noise (same seed, same scene).
    snr : float, default 25.0
        Muscle signal over the Rician noise sigma (> 0); sigma = 1000 / snr for every image.
    shape : 3 ints, default (48, 64, 64)
        Grid shape ``(z, y, x)``; the body fills most of the field of view.
    voxel_mm : float, default 0.15
        Isotropic voxel size, mm.
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4: the tissue and relaxivity presets).
    n_labelled : int, default 3
        Number of labelled regions (radius 0.6-0.9 mm, at least 2 mm apart).
    concentration_mM : (low, high), default (0.3, 0.8)
        Range of the uniform agent concentration drawn per region, mM (0 <= low <= high).
    agent : {"dual_mode", "spion", "gd"}, default "dual_mode"
        Relaxivity preset (r1, r2 in 1/(mM s)).
    confounders : bool, default True
        Add the haemorrhage, fat and air confounders (radius 0.6 mm).

    Returns
    -------
    dict
        ``t1_pre``, ``t1_post`` : T1-weighted spin echo (TR 600 ms, TE 8 ms at 9.4 T) magnitude, muscle = 1000
        ``t2_pre``, ``t2_post`` : T2-weighted spin echo (TR 5000 ms, TE 30 ms at 9.4 T) magnitude, muscle = 1000
        ``t1_pre_noiseless``, ``t1_post_noiseless``, ``t2_pre_noiseless``, ``t2_post_noiseless`` : the same
        without noise
        ``t1_map_pre``, ``t1_map_post``, ``t2_map_pre``, ``t2_map_post`` : noiseless maps in ms (air 0)
        ``truth_labels`` : label Volume (region id per voxel, 0 elsewhere); ``labelled_mask`` (0/1)
        ``tissue_labels`` : the phantom's tissue labels (names in ``metadata["label_names"]``)
        ``reference_mask``, ``background_mask`` : uint8 Volumes (muscle reference, air outside the body)
        ``sigma`` : dict of noise sigma per image
        ``truth`` : ``labelled`` (list of {id, centroid_ras_mm, radius_mm, concentration_mM, r1, r2, voxels}),
        ``confounders`` (list of {kind, centroid_ras_mm, radius_mm}), ``r2_over_r1``, ``agent``, ``r1``,
        ``r2``, ``field_t``, ``sequences`` (TR/TE/flip of the two sequences).

    Raises
    ------
    InputError
        An SNR <= 0, a field without preset, an unknown agent or an impossible concentration range.

    Examples
    --------
    >>> scene = dual_mode_scene(seed=0, shape=(12, 16, 16), voxel_mm=0.5, n_labelled=1)
    >>> scene["t1_pre"].spatial_shape, scene["sigma"]["t1_pre"], scene["truth"]["r2_over_r1"]
    ((12, 16, 16), 40.0, 10.0)
    >>> [(d["id"], round(d["concentration_mM"], 3), d["voxels"]) for d in scene["truth"]["labelled"]]
    [(1, 0.459, 16)]
    """
    snr = check_snr(snr)
    field_t = check_field(field_t)
    rel = relaxivity(agent, field_t)
    c_lo, c_hi = (float(v) for v in concentration_mM)
    if c_lo < 0 or c_hi < c_lo:
        raise InputError(f"concentration_mM={tuple(concentration_mM)} must be (low, high) with 0 <= low <= high.")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    affine = grid_affine(shape, voxel_mm)
    half = (np.array(shape[::-1], float) - 1) / 2 * voxel_mm
    a, b = 0.86 * half[0], 0.80 * half[1]
    body = Body((0, 0, 0), a, b, half_length=1e6, power=2.0)
    solids = [
        (LABEL_OF["muscle"], body),
        (LABEL_OF["fat"], Body((0, 0, 0), a, b, 1e6, 2.0, 0.35, True)),
        (LABEL_OF["ln_inguinal_left"], Ellipsoid((-0.35 * a, 0.3 * b, 0), (0.35 * a, 0.35 * b, 0.7 * half[2]))),
    ]
    ref_c = np.array([0.55 * a, -0.45 * b, 0.0])
    ref_r = np.array([0.18 * a, 0.2 * b, 0.6 * half[2]])
    margin = 1.3

    def ok(p):
        inner = Body((0, 0, 0), a - margin, b - margin, 1e6, 2.0)
        return (
            bool(inner.contains(p)[0]) and np.linalg.norm((p - ref_c) / (ref_r + 1.0)) > 1 and abs(p[2]) < half[2] - 1.2
        )

    lo_box, hi_box = -half + 0.5, half - 0.5
    existing: list[np.ndarray] = []
    conf = []
    if confounders:
        pts = _place(rng, 3, ok, lo_box * [1, 1, 0.5], hi_box * [1, 1, 0.5], existing, 2.0)
        for kind, p in zip(("haemorrhage", "fat", "air"), pts):
            lab = {"haemorrhage": "haemorrhage", "fat": "fat", "air": "gut_gas"}[kind]
            solids.append((LABEL_OF[lab], Sphere(p, 0.6)))
            conf.append({"kind": kind, "centroid_ras_mm": [float(v) for v in p], "radius_mm": 0.6})
            existing.append(p)
    labels = rasterize(solids, shape, affine)
    n = int(n_labelled)
    pts = _place(rng, n, ok, lo_box, hi_box, existing, 2.0) if n else []
    conc = np.zeros(shape, np.float32)
    truth_labels = np.zeros(shape, np.uint8)
    labelled = []
    for i, p in enumerate(pts):
        r = float(rng.uniform(0.6, 0.9))
        c = float(rng.uniform(c_lo, c_hi))
        m = rasterize([(1, Sphere(p, r))], shape, affine).astype(bool) & (labels != 0)
        conc[m] = c
        truth_labels[m] = i + 1
        labelled.append(
            {
                "id": i + 1,
                "centroid_ras_mm": [float(v) for v in p],
                "radius_mm": r,
                "concentration_mM": c,
                "r1": rel.r1,
                "r2": rel.r2,
                "voxels": int(m.sum()),
            }
        )
    seqs = sequences(field_t)
    out = {}
    sigmas = {}
    for key, seq in (("t1", seqs["T1w"]), ("t2", seqs["T2w"])):
        scale = REFERENCE_SIGNAL / tissue_signal(seq, field_t, "muscle")
        pre0 = weighted_image(labels, seq, field_t, scale=scale)
        post0 = weighted_image(labels, seq, field_t, agent_mM=conc, agent=rel, scale=scale)
        sigma = REFERENCE_SIGNAL / snr
        sigmas[f"{key}_pre"] = sigmas[f"{key}_post"] = sigma
        out[f"{key}_pre"] = _mr_volume(rician(pre0, sigma, rng), affine, seq, field_t, f"{seq.name}_pre", sigma=sigma)
        out[f"{key}_post"] = _mr_volume(
            rician(post0, sigma, rng), affine, seq, field_t, f"{seq.name}_post", sigma=sigma
        )
        out[f"{key}_pre_noiseless"] = _mr_volume(pre0, affine, seq, field_t, f"{seq.name}_pre_noiseless")
        out[f"{key}_post_noiseless"] = _mr_volume(post0, affine, seq, field_t, f"{seq.name}_post_noiseless")
    t1p, t2p = relaxation_maps(labels, field_t)
    t1q, t2q = relaxation_maps(labels, field_t, conc, rel)
    for name, arr in (("t1_map_pre", t1p), ("t1_map_post", t1q), ("t2_map_pre", t2p), ("t2_map_post", t2q)):
        out[name] = Volume(
            arr, affine, modality="MR", unit="ms", metadata={"MagneticFieldStrength": field_t}, name=name
        )
    ref = rasterize([(1, Ellipsoid(ref_c, ref_r))], shape, affine) & (labels == LABEL_OF["muscle"])
    bg = ~np.asarray(body.inside(*_grid_xyz(shape, affine)))
    out.update(
        {
            "truth_labels": _label_volume(
                truth_labels, affine, "truth_labels", {d["id"]: f"labelled_{d['id']}" for d in labelled}
            ),
            "labelled_mask": _label_volume((truth_labels > 0).astype(np.uint8), affine, "labelled_mask"),
            "tissue_labels": _label_volume(labels, affine, "tissue_labels", LABELS),
            "reference_mask": _label_volume(ref.astype(np.uint8), affine, "reference_mask", {1: "muscle reference"}),
            "background_mask": _label_volume(bg.astype(np.uint8), affine, "background_mask", {1: "air"}),
            "sigma": sigmas,
            "truth": {
                "labelled": labelled,
                "confounders": conf,
                "r2_over_r1": rel.r2 / rel.r1,
                "agent": rel.agent,
                "r1": rel.r1,
                "r2": rel.r2,
                "field_t": field_t,
                "sequences": {k: seqs[k].metadata(field_t) for k in ("T1w", "T2w")},
            },
        }
    )
    return out


# ============================================================================ 3. quantitative
def _mouse_grid(center, size_mm, voxel_mm):
    shape = tuple(int(np.ceil(s / voxel_mm)) for s in size_mm[::-1])  # size given as x, y, z
    return shape, grid_affine(shape, voxel_mm, center)


def quantitative_scene(
    seed: int = 0,
    pet_noise: bool = True,
    injected_mbq: float = 1.0,
    scan_delay_h: float = 24.0,
    pet_duration_s: float = 600.0,
    pet_sensitivity: float = 0.05,
    pet_fwhm_mm: float = 1.3,
    f19_cells: Seq[float] = (1e5, 1e6, 1e7),
    f_per_cell: float = 1e12,
    f19_snr: float = 20.0,
    f19_reference_mM: float = 50.0,
    f19_voxel_mm: float = 0.5,
    mpi_cells: Seq[float] = (2e4, 2e5),
    mpi_iron_pg_per_cell: float = 5.0,
    mpi_fiducials_ng: Seq[float] = (1000.0, 5000.0, 10000.0),
    mpi_noise_sd: float = 0.5,
    mpi_fwhm_mm: Seq[float] = (1.5, 1.5, 1.5),
) -> dict:
    """PET, 19F and MPI readouts of one mouse with known activities, cells and iron.

    The PET grid (0.7 mm) covers the whole mouse, in a scanner world rotated
    and shifted from the MRI world by ``mri_to_pet``. The 89Zr activity
    (``injected_mbq`` at injection, decayed ``scan_delay_h``) is spread over
    organs by fixed fractions of the injected dose; the image is
    decay-corrected to scan start, so its noiseless total is the decayed
    injected activity. 19F depots of ``f19_cells`` cells (``f_per_cell``
    atoms each) sit in the right inguinal node, the tumour and the left
    inguinal node, with a reference tube of ``f19_reference_mM`` mM below
    the animal. MPI depots of ``mpi_cells`` cells (``mpi_iron_pg_per_cell``
    pg Fe each) sit in the right inguinal node and the tumour, with
    fiducials of ``mpi_fiducials_ng`` ng Fe on the bed.

    Returns
    -------
    dict
        ``pet`` / ``pet_noiseless`` : Bq/mL Volumes (modality "PT") on the PET grid
        ``pet_truth_activity_bq`` : decayed injected activity at scan start (Bq)
        ``pet_organs`` : list of {name, label, fraction_id, bq} (Bq at scan start)
        ``pet_header`` : the DICOM PET fields a scanner would write (dose, half-life, times, weight)
        ``f19`` / ``f19_noiseless`` : 19F Volumes (a.u.), ``f19_reference_mask`` (uint8 Volume),
        ``f19_reference_mM``, ``f19_gain_per_mM``, ``f19_sigma``,
        ``f19_depots`` : list of {name, cells, F_per_cell, atoms, centroid_ras_mm, radius_mm, label},
        ``f19_depot_labels`` : label Volume on the 19F grid (ROI per depot, generous),
        ``mpi`` / ``mpi_noiseless`` : MPI Volumes (a.u.), ``mpi_fiducials`` (list of
        {position_ras_mm, iron_ng}), ``mpi_depots`` (list of {name, iron_ng, cells,
        iron_pg_per_cell, centroid_ras_mm, label}), ``mpi_depot_labels``, ``mpi_calibration``
        ({k_per_ng, background, noise_sd}),
        ``mri`` : T2w anatomy Volume on its own grid, ``roi_labels`` : tissue labels on the MRI grid
        (``metadata["label_names"]``), ``transforms`` : {"mri_to_pet": 4x4, "mri_to_mpi": 4x4}
        (RAS world to world: maps an MRI-world point to the same anatomical point in the other world;
        19F shares the MRI world).

    Parameters
    ----------
    seed : int, default 0
        Seed of every random draw (noise, placement).
    pet_noise : bool, default True
        Add Poisson counting noise to ``pet`` (``pet_noiseless`` is always returned).
    injected_mbq : float, default 1.0
        89Zr activity at injection, MBq (> 0).
    scan_delay_h : float, default 24.0
        Time from injection to scan start, hours (>= 0).
    pet_duration_s : float, default 600.0
        Frame duration, s (sets the counts, hence the noise).
    pet_sensitivity : float, default 0.05
        Detected counts per decay.
    pet_fwhm_mm : float, default 1.3
        PET point-spread function, mm FWHM.
    f19_cells : floats, default (1e5, 1e6, 1e7)
        Cells of each 19F depot (>= 0): right inguinal node, tumour, left inguinal node.
    f_per_cell : float, default 1e12
        19F atoms per cell.
    f19_snr : float, default 20.0
        Signal-to-noise ratio of the reference tube.
    f19_reference_mM : float, default 50.0
        19F concentration of the reference tube, mM.
    f19_voxel_mm : float, default 0.5
        19F voxel size, mm.
    mpi_cells : floats, default (2e4, 2e5)
        Cells of each MPI depot: right inguinal node, tumour.
    mpi_iron_pg_per_cell : float, default 5.0
        Iron per cell, pg.
    mpi_fiducials_ng : floats, default (1000, 5000, 10000)
        Iron of the calibration fiducials on the bed, ng.
    mpi_noise_sd : float, default 0.5
        Gaussian noise of the MPI image, a.u.
    mpi_fwhm_mm : 3 floats, default (1.5, 1.5, 1.5)
        MPI point-spread function along x, y, z, mm FWHM.

    Raises
    ------
    InputError
        A non-positive injected activity, a negative delay or a negative cell number.

    Examples
    --------
    >>> scene = quantitative_scene(seed=0, pet_noise=False)
    >>> scene["pet"].spatial_shape, scene["pet"].unit, round(scene["pet_truth_activity_bq"])
    ((121, 38, 49), 'Bq/mL', 808813)
    >>> pet = scene["pet_noiseless"]     # decay-corrected to scan start: total = decayed injected activity
    >>> round(float(pet.numpy().sum()) * pet.voxel_volume_mm3 / 1000.0)
    808813
    """
    if not np.isfinite(injected_mbq) or injected_mbq <= 0:
        raise InputError(f"injected_mbq={injected_mbq} is impossible; give an injected activity > 0 MBq.")
    if not np.isfinite(scan_delay_h) or scan_delay_h < 0:
        raise InputError(f"scan_delay_h={scan_delay_h} is before injection; the scan must be at or after it (>= 0 h).")
    for c in f19_cells:
        if not np.isfinite(c) or c < 0:
            raise InputError(f"f19_cells contains {c}; cell numbers must be >= 0.")
    rng = np.random.default_rng(seed)
    mouse = make_mouse(seed)
    L = LABEL_OF
    mri_to_pet = rigid_matrix((2.0, -1.5, 3.0), (1.2, -0.8, 1.5))
    mri_to_mpi = rigid_matrix((0.0, 0.0, -2.0), (-0.7, 0.5, 1.0))
    # ---------------- PET
    nuclide = "Zr-89"
    t_half = half_life_s(nuclide)
    a_inj = injected_mbq * 1e6
    a_scan = a_inj * decay_factor(scan_delay_h * 3600.0, t_half)
    fractions = {
        "liver": 0.35,
        "spleen": 0.15,
        "lung": 0.08,
        "bone": 0.10,
        "kidney_left": 0.02,
        "kidney_right": 0.02,
        "tumour": 0.04,
        "ln_inguinal_right": 0.01,
        "ln_iliac": 0.005,
        "bladder": 0.005,
    }
    fractions["muscle"] = 1.0 - sum(fractions.values())
    sources = [ActivitySource(a_scan * f, label=L[name], name=name) for name, f in fractions.items()]
    pet_shape, pet_aff = _mouse_grid((1.5, 0.0, 0.0), (34.0, 26.0, 84.0), 0.7)
    pet0, info = activity_image(
        mouse.solids, sources, pet_shape, pet_aff, pet_fwhm_mm, to_phantom=np.linalg.inv(mri_to_pet), supersample=2
    )
    voxel_ml = info["voxel_ml"]
    pet = poisson_noise(pet0, voxel_ml, pet_duration_s, pet_sensitivity, rng) if pet_noise else pet0.copy()
    header = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY", "SCAT"],
        "RadionuclideTotalDose": a_inj,
        "RadionuclideHalfLife": t_half,
        "Radiopharmaceutical": "89Zr-oxine",
        "Radionuclide": nuclide,
        "scan_delay_s": scan_delay_h * 3600.0,
        "PatientWeight": 0.025,
    }
    pet_meta = dict(header, fwhm_mm=pet_fwhm_mm, duration_s=pet_duration_s, sensitivity=pet_sensitivity)
    # ---------------- MRI anatomy
    mri_shape, mri_aff = _mouse_grid((1.5, 0.0, -2.5), (28.8, 24.0, 38.4), 0.3)
    roi = rasterize(mouse.solids, mri_shape, mri_aff)
    t2w = sequences(9.4)["T2w"]
    scale = REFERENCE_SIGNAL / tissue_signal(t2w, 9.4, "muscle")
    mri = rician(weighted_image(roi, t2w, 9.4, scale=scale), REFERENCE_SIGNAL / 30.0, rng)
    # ---------------- 19F
    f_shape, f_aff = _mouse_grid((1.5, -2.0, -2.5), (30.0, 28.0, 38.0), f19_voxel_mm)
    sites = ["ln_inguinal_right", "tumour", "ln_inguinal_left"]
    depots = []
    for i, cells in enumerate(f19_cells):
        site = mouse.sites[sites[i % len(sites)]]
        offset = np.array([0.0, 0.0, 2.5 * (i // len(sites))])
        radius = 0.6 if site["radius_mm"] < 2 else 1.2
        depots.append(FluorineDepot(site["center_mm"] + offset, cells, f_per_cell, radius, name=sites[i % len(sites)]))
    tube_c = np.array([-8.0, -13.0, -2.5])
    tube = Cylinder(tube_c - [0, 0, 12.0], tube_c + [0, 0, 12.0], 1.5)
    f19 = f19_image(depots, tube, f19_reference_mM, f_shape, f_aff, snr=f19_snr, rng=rng)
    depot_rois = [(i + 1, Sphere(d.center_mm, d.radius_mm + 2 * f19_voxel_mm)) for i, d in enumerate(depots)]
    f_labels = rasterize(depot_rois, f_shape, f_aff)
    # ---------------- MPI
    m_shape, m_aff = _mouse_grid((1.5, -3.0, -2.5), (32.0, 30.0, 44.0), 0.5)
    mpi_sites = ["ln_inguinal_right", "tumour"]
    mpi_depots = []
    pts, ng = [], []
    for i, cells in enumerate(mpi_cells):
        site = mouse.sites[mpi_sites[i % 2]]
        iron_ng = cells * mpi_iron_pg_per_cell / 1000.0
        mpi_depots.append(
            {
                "name": mpi_sites[i % 2],
                "iron_ng": iron_ng,
                "cells": float(cells),
                "iron_pg_per_cell": float(mpi_iron_pg_per_cell),
                "centroid_ras_mm": [float(v) for v in site["center_mm"]],
                "label": i + 1,
            }
        )
        pts.append(site["center_mm"])
        ng.append(iron_ng)
    fid_world_mpi = [np.array([8.0, -14.0, z]) for z in (-15.0, -2.5, 10.0)][: len(mpi_fiducials_ng)]
    # fiducials are on the MPI bed: place them in MPI world, convert to phantom world for the simulator
    to_ph = np.linalg.inv(mri_to_mpi)
    fid_ph = [to_ph[:3, :3] @ p + to_ph[:3, 3] for p in fid_world_mpi]
    all_pts = np.array(pts + fid_ph)
    all_ng = np.array(ng + list(mpi_fiducials_ng), float)
    m_img = mpi_image(
        all_pts, all_ng, m_shape, m_aff, to_phantom=to_ph, fwhm_mm=mpi_fwhm_mm, noise_sd=mpi_noise_sd, rng=rng
    )
    depot_ph = [np.asarray(d["centroid_ras_mm"]) for d in mpi_depots]
    depot_mpi_world = [mri_to_mpi[:3, :3] @ p + mri_to_mpi[:3, 3] for p in depot_ph]
    m_rois = [(i + 1, Sphere(p, 3.0)) for i, p in enumerate(depot_mpi_world)]
    m_labels = rasterize(m_rois, m_shape, m_aff)
    return {
        "pet": Volume(pet, pet_aff, "PT", "Bq/mL", dict(pet_meta, noise=bool(pet_noise)), "pet"),
        "pet_noiseless": Volume(pet0, pet_aff, "PT", "Bq/mL", dict(pet_meta, noise=False), "pet_noiseless"),
        "pet_truth_activity_bq": float(a_scan),
        "pet_injected_bq": float(a_inj),
        "pet_organs": [{"name": k, "label": L[k], "fraction_id": v, "bq": a_scan * v} for k, v in fractions.items()],
        "pet_header": header,
        "pet_info": info,
        "f19": Volume(
            f19["image"], f_aff, "F19", "a.u.", {"gain_per_mM": f19["gain_per_mM"], "sigma": f19["sigma"]}, "f19"
        ),
        "f19_noiseless": Volume(f19["noiseless"], f_aff, "F19", "a.u.", {}, "f19_noiseless"),
        "f19_reference_mask": _label_volume(f19["reference_mask"], f_aff, "f19_reference_mask", {1: "reference tube"}),
        "f19_reference_mM": float(f19_reference_mM),
        "f19_gain_per_mM": f19["gain_per_mM"],
        "f19_sigma": f19["sigma"],
        "f19_atoms_per_mM_voxel": atoms_per_mM_voxel(f19_voxel_mm**3),
        "f19_depots": [
            {
                "name": d.name,
                "cells": float(d.cells),
                "F_per_cell": float(d.f_per_cell),
                "atoms": d.atoms,
                "centroid_ras_mm": [float(v) for v in d.center_mm],
                "radius_mm": d.radius_mm,
                "label": i + 1,
            }
            for i, d in enumerate(depots)
        ],
        "f19_depot_labels": _label_volume(
            f_labels, f_aff, "f19_depot_labels", {i + 1: d.name for i, d in enumerate(depots)}
        ),
        "mpi": Volume(m_img["image"], m_aff, "MPI", "a.u.", {"k_per_ng": m_img["k_per_ng"]}, "mpi"),
        "mpi_noiseless": Volume(m_img["noiseless"], m_aff, "MPI", "a.u.", {}, "mpi_noiseless"),
        "mpi_fiducials": [
            {"position_ras_mm": [float(v) for v in p], "iron_ng": float(m)}
            for p, m in zip(fid_world_mpi, mpi_fiducials_ng)
        ],
        "mpi_depots": [dict(d, centroid_ras_mm=[float(v) for v in w]) for d, w in zip(mpi_depots, depot_mpi_world)],
        "mpi_depot_labels": _label_volume(
            m_labels, m_aff, "mpi_depot_labels", {d["label"]: d["name"] for d in mpi_depots}
        ),
        "mpi_calibration": {
            "k_per_ng": m_img["k_per_ng"],
            "background": m_img["background"],
            "noise_sd": m_img["noise_sd"],
            "fwhm_mm": m_img["fwhm_mm"],
        },
        "mri": _mr_volume(mri, mri_aff, t2w, 9.4, "T2w"),
        "roi_labels": _label_volume(roi, mri_aff, "roi_labels", LABELS),
        "transforms": {"mri_to_pet": mri_to_pet, "mri_to_mpi": mri_to_mpi, "mri_to_f19": np.eye(4)},
    }


# ============================================================================ 4. registration
def registration_pair(
    seed: int = 0,
    rotation_deg: Seq[float] = (3.0, -2.0, 4.0),
    translation_mm: Seq[float] = (1.5, -1.0, 2.0),
    modality: str = "PT",
    fixed_voxel_mm: float = 0.4,
    moving_voxel_mm: float = 0.6,
    counts_scale: float = 1.0,
    n_landmarks: int = 8,
) -> dict:
    """An MRI-like fixed image and a PET/SPECT-like moving image of the same mouse, rigidly displaced.

    ``fixed`` is a T2-weighted MRI of the torso (Rician noise, SNR 25).
    ``moving`` is an activity image (organs with different uptake, PSF blur
    1.4 mm for PET / 1.2 mm for SPECT, Poisson noise scaled by
    ``counts_scale``) on its own coarser, larger axis-aligned grid in the
    scanner's world. A fixed-world point p is the same anatomy as the
    moving-world point ``fixed_to_moving @ p``; so
    ``moving.resample_to(fixed, transform=fixed_to_moving)`` aligns them.

    Parameters
    ----------
    seed : int, default 0
        Seed of the mouse and the noise.
    rotation_deg : 3 floats, default (3, -2, 4)
        Rotation of the moving world about x, y, z, degrees (about the torso centre).
    translation_mm : 3 floats, default (1.5, -1, 2)
        Translation of the moving world, mm.
    modality : {"PT", "NM"}, default "PT"
        PET (PSF 1.4 mm) or SPECT (PSF 1.2 mm, fewer counts).
    fixed_voxel_mm : float, default 0.4
        Isotropic voxel of the MRI, mm.
    moving_voxel_mm : float, default 0.6
        Isotropic voxel of the PET/SPECT, mm.
    counts_scale : float, default 1.0
        Multiplies the detected counts (> 0; higher is less noise).
    n_landmarks : int, default 8
        At most this many organ centres as landmarks.

    Returns
    -------
    dict
        ``fixed``, ``moving`` (Volumes; moving in Bq/mL), ``moving_noiseless``, ``fixed_labels`` (tissue
        labels on the fixed grid), ``fixed_to_moving`` (4x4 RAS world map), ``landmarks_fixed``
        ((N, 3) RAS mm inside the body and the fixed field of view), ``landmarks_moving`` (the same
        points in moving world), ``landmark_names``.

    Raises
    ------
    InputError
        A modality other than PT/NM, angles or translation without three values, ``counts_scale <= 0``.

    Examples
    --------
    >>> pair = registration_pair(seed=0, fixed_voxel_mm=2.0, moving_voxel_mm=3.0, n_landmarks=4)
    >>> pair["fixed"].spatial_shape, pair["moving"].spatial_shape, pair["landmark_names"]
    ((16, 12, 15), (14, 10, 12), ['spleen', 'kidney_left', 'kidney_right', 'tumour'])
    >>> f2m = pair["fixed_to_moving"]
    >>> bool(np.allclose(pair["landmarks_fixed"] @ f2m[:3, :3].T + f2m[:3, 3], pair["landmarks_moving"]))
    True
    """
    if modality not in ("PT", "NM"):
        raise InputError(f"modality={modality!r} must be 'PT' (PET) or 'NM' (SPECT).")
    if len(tuple(rotation_deg)) != 3 or len(tuple(translation_mm)) != 3:
        raise InputError("rotation_deg and translation_mm need three values each (x, y, z).")
    if counts_scale <= 0:
        raise InputError(f"counts_scale={counts_scale} must be > 0.")
    rng = np.random.default_rng(seed)
    mouse = make_mouse(seed)
    centre = np.array([1.5, 0.0, -2.0])
    f2m = rigid_matrix(rotation_deg, translation_mm, center_mm=centre)
    f_shape, f_aff = _mouse_grid(centre, (28.8, 23.2, 32.0), fixed_voxel_mm)
    labels = rasterize(mouse.solids, f_shape, f_aff)
    t2w = sequences(9.4)["T2w"]
    scale = REFERENCE_SIGNAL / tissue_signal(t2w, 9.4, "muscle")
    fixed = rician(weighted_image(labels, t2w, 9.4, scale=scale), REFERENCE_SIGNAL / 25.0, rng)
    L = LABEL_OF
    uptake = {
        "muscle": 1.0,
        "fat": 0.3,
        "liver": 12.0,
        "spleen": 15.0,
        "kidney_left": 6.0,
        "kidney_right": 6.0,
        "tumour": 4.0,
        "bladder": 20.0,
        "bone": 3.0,
        "ln_inguinal_right": 8.0,
        "ln_inguinal_left": 3.0,
        "ln_iliac": 5.0,
        "vessel": 2.0,
        "lung": 1.5,
        "haemorrhage": 1.0,
    }
    m_center = f2m[:3, :3] @ centre + f2m[:3, 3]
    m_shape, m_aff = _mouse_grid(m_center, (36.0, 30.0, 40.0), moving_voxel_mm)
    from .nuclear import fine_grid

    fshape, faff = fine_grid(m_shape, m_aff, 2)
    fine_labels = rasterize(mouse.solids, fshape, faff, np.linalg.inv(f2m))
    counts = np.bincount(fine_labels.ravel(), minlength=256)
    sources = [ActivitySource(u * 1e3 * counts[L[k]], label=L[k], name=k) for k, u in uptake.items() if counts[L[k]]]
    fwhm = 1.4 if modality == "PT" else 1.2
    moving0, info = activity_image(
        mouse.solids,
        sources,
        m_shape,
        m_aff,
        fwhm,
        to_phantom=np.linalg.inv(f2m),
        supersample=2,
        labels_fine=fine_labels,
    )
    sens = (0.05 if modality == "PT" else 0.002) * counts_scale
    moving = poisson_noise(moving0 / 20.0, info["voxel_ml"], 600.0, sens, rng) * 20.0
    names = [
        n
        for n in (
            "liver",
            "spleen",
            "kidney_left",
            "kidney_right",
            "tumour",
            "ln_inguinal_right",
            "ln_inguinal_left",
            "ln_iliac",
        )
        if n in mouse.sites
    ]
    pts = np.array([mouse.sites[n]["center_mm"] for n in names])
    lo, hi = Volume(labels, f_aff).bounds_world()
    inside = np.all((pts > lo + 1) & (pts < hi - 1), axis=1)
    pts, names = pts[inside][:n_landmarks], [n for n, k in zip(names, inside) if k][:n_landmarks]
    moving_pts = pts @ f2m[:3, :3].T + f2m[:3, 3]
    return {
        "fixed": _mr_volume(fixed, f_aff, t2w, 9.4, "fixed_T2w"),
        "moving": Volume(moving, m_aff, modality, "Bq/mL", {"fwhm_mm": fwhm}, "moving_" + modality),
        "moving_noiseless": Volume(moving0, m_aff, modality, "Bq/mL", {"fwhm_mm": fwhm}, "moving_noiseless"),
        "fixed_labels": _label_volume(labels, f_aff, "fixed_labels", LABELS),
        "fixed_to_moving": f2m,
        "landmarks_fixed": pts,
        "landmarks_moving": moving_pts,
        "landmark_names": names,
    }
