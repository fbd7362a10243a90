"""PET and SPECT images of the phantom: activity, decay, point spread and counting noise.

Model (each step a parameter):

1. Activity sources in phantom world: uniform in a tissue label (Bq spread
   evenly over the voxels of that label), uniform in a solid (a site), or
   points (cell clusters; deposited trilinearly so the total is exact).
2. The activity is painted on a *fine* grid that subdivides each scanner
   voxel ``supersample``^3 times, blurred with a Gaussian point-spread
   function (FWHM ~1.2-1.5 mm for small-animal PET/SPECT; Moses, NIM A 2011
   648:S236), then summed back into the scanner voxels. Blurring and
   summing both conserve the total, so the noiseless image integrates to the
   activity in the field of view (less what the PSF spills out of it, which
   is reported).
3. Decay: ``A(t) = A0 2^(-t / T1/2)``. Images are decay-corrected to the scan
   start (DICOM DecayCorrection START), so their values are the activity
   concentrations at the series time: the image total equals the injected
   activity decayed from injection to scan start.
4. Noise: expected counts ``n = A_voxel * duration * sensitivity``; the
   counts are Poisson and converted back to Bq/mL. This is an approximation
   (reconstructed PET noise is spatially correlated and not Poisson per
   voxel) that gives the right order of noise and its growth with
   lower activity.

Values are Bq/mL. Half-lives follow docs/methods/simulator.md#pet-and-spect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .phantom import Solid, rasterize

#: Half-lives in seconds (docs/methods/simulator.md#pet-and-spect).
HALF_LIFE_S = {
    "F-18": 6586.2,
    "Ga-68": 4062.6,
    "Zr-89": 282240.0,
    "Cu-64": 45720.0,
    "In-111": 242330.0,
    "Tc-99m": 21624.0,
}

#: Labelling agents and the nuclide each carries.
RADIOPHARMACEUTICALS = {
    "89Zr-oxine": "Zr-89",
    "111In-oxine": "In-111",
    "99mTc-HMPAO": "Tc-99m",
}


def half_life_s(nuclide: str) -> float:
    """Half-life of ``nuclide`` ("Zr-89", "In-111", ...) in seconds.

    Parameters
    ----------
    nuclide : str
        A key of :data:`HALF_LIFE_S`: "F-18", "Ga-68", "Zr-89", "Cu-64", "In-111", "Tc-99m".

    Returns
    -------
    float
        Seconds (``docs/methods/simulator.md#pet-and-spect``).

    Raises
    ------
    InputError
        An unknown nuclide.

    Examples
    --------
    >>> half_life_s("Zr-89") / 3600                       # 78.4 h
    78.4
    """
    if nuclide not in HALF_LIFE_S:
        raise InputError(f"nuclide={nuclide!r} is unknown; use one of {sorted(HALF_LIFE_S)}.")
    return HALF_LIFE_S[nuclide]


def decay_factor(elapsed_s: float, half_life: float) -> float:
    """Fraction of activity left after ``elapsed_s`` seconds: 2^(-t/T1/2).

    Parameters
    ----------
    elapsed_s : float
        Time since the reference, s.
    half_life : float
        Half-life, s.

    Returns
    -------
    float

    Examples
    --------
    >>> round(decay_factor(24 * 3600, half_life_s("Zr-89")), 4), decay_factor(6586.2, 6586.2)
    (0.8088, 0.5)
    """
    return float(2.0 ** (-float(elapsed_s) / float(half_life)))


@dataclass
class ActivitySource:
    """Activity in Bq at scan time: in tissue ``label``, in ``solid``, or at ``center_mm``."""

    bq: float
    label: int | None = None
    solid: Solid | None = None
    center_mm: Sequence[float] | None = None
    name: str = ""

    def __post_init__(self):
        if not np.isfinite(self.bq) or self.bq < 0:
            raise InputError(f"activity bq={self.bq} for {self.name or 'a source'} is impossible; give Bq >= 0.")
        if sum(x is not None for x in (self.label, self.solid, self.center_mm)) != 1:
            raise InputError("an activity source needs exactly one of label, solid or center_mm.")


def fine_grid(shape, affine, supersample: int):
    """Shape and affine of a grid that splits each voxel into ``supersample``^3.

    The fine voxels tile the coarse ones exactly (same outer edges), so summing ``f``^3 fine
    voxels gives a coarse one.

    Parameters
    ----------
    shape : 3 ints
        Coarse grid shape.
    affine : (4, 4) array
        Coarse index -> world mm.
    supersample : int
        Subdivisions per axis ``f``.

    Returns
    -------
    shape : tuple of 3 ints
        ``f`` times the coarse shape.
    affine : (4, 4) ndarray
        Fine index -> world mm.

    Examples
    --------
    >>> shape, affine = fine_grid((2, 3, 4), np.eye(4), 2)
    >>> shape, float(affine[0, 0]), affine[:3, 3].tolist()       # first fine centre a quarter voxel in
    ((4, 6, 8), 0.5, [-0.25, -0.25, -0.25])
    """
    f = int(supersample)
    s = np.eye(4)
    s[:3, :3] /= f
    s[:3, 3] = (1.0 / f - 1.0) / 2.0
    return tuple(int(n) * f for n in shape), np.asarray(affine, float) @ s


def deposit_points(
    grid: np.ndarray,
    affine: np.ndarray,
    points_mm: np.ndarray,
    values: np.ndarray,
    to_phantom: np.ndarray | None = None,
) -> float:
    """Add ``values`` at phantom-world points to ``grid`` by trilinear weights; returns what fell outside.

    Parameters
    ----------
    grid : ndarray
        3D array, changed in place.
    affine : (4, 4) array
        Grid index -> world mm.
    points_mm : (N, 3) array
        Phantom-world points, mm.
    values : (N,) array
        What each point carries (e.g. Bq).
    to_phantom : (4, 4) array, optional
        Grid world -> phantom world (identity when None).

    Returns
    -------
    float
        The part of ``values`` whose corner voxels lie outside the grid (the rest is conserved).

    Examples
    --------
    >>> grid = np.zeros((3, 3, 3))
    >>> deposit_points(grid, np.eye(4), [[1, 1, 1.5], [5, 5, 5]], [10.0, 4.0])   # the second misses
    4.0
    >>> grid[1, 1].tolist(), float(grid.sum())
    ([0.0, 5.0, 5.0], 10.0)
    """
    m = np.asarray(affine, float) if to_phantom is None else np.asarray(to_phantom, float) @ affine
    inv = np.linalg.inv(m)
    pts = np.atleast_2d(np.asarray(points_mm, float))
    vals = np.asarray(values, float).reshape(-1)
    idx = pts @ inv[:3, :3].T + inv[:3, 3]
    base = np.floor(idx).astype(int)
    frac = idx - base
    lost = 0.0
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        w = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1) * vals
        pos = base + c
        ok = np.all((pos >= 0) & (pos < np.array(grid.shape)), axis=1)
        np.add.at(grid, tuple(pos[ok].T), w[ok])
        lost += float(w[~ok].sum())
    return lost


def activity_image(
    solids,
    sources: list[ActivitySource],
    shape,
    affine,
    fwhm_mm=1.3,
    to_phantom: np.ndarray | None = None,
    supersample: int = 2,
    labels_fine: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Noiseless activity concentration (Bq/mL, float32) on a scanner grid.

    Parameters
    ----------
    solids : the phantom's (label, Solid) list (for label sources).
    sources : list of ActivitySource (Bq at scan time).
    shape, affine : scanner grid (index -> scanner world mm).
    fwhm_mm : PSF full width at half maximum, one number or three (world x, y, z are
        assumed close to the grid axes; the PSF is applied along array axes).
    to_phantom : scanner world -> phantom world (the rigid misalignment).
    supersample : fine-grid subdivisions per axis.
    labels_fine : int array, optional
        The phantom's labels already painted on the fine grid (saves painting them again).

    Returns
    -------
    bq_ml : (shape) float32 Bq/mL
    info : dict with ``total_bq_sources``, ``total_bq_image``, ``lost_bq_outside_or_missing``
        (outside the field of view or missing labels), ``psf_spill_bq`` (blurred out of the
        field of view), ``per_source_bq``, ``voxel_ml``, ``fwhm_mm`` and ``supersample``.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> cluster = ActivitySource(1e6, center_mm=(0, 0, 0), name="cluster")
    >>> bq_ml, info = activity_image([], [cluster], (8, 8, 8), grid_affine((8, 8, 8), 1.0), fwhm_mm=1.5)
    >>> round(float(bq_ml.sum()) * info["voxel_ml"]), info["lost_bq_outside_or_missing"]   # total kept
    (1000000, 0.0)
    """
    f = int(supersample)
    fshape, faff = fine_grid(shape, affine, f)
    if labels_fine is None and any(s.label is not None for s in sources):
        labels_fine = rasterize(solids, fshape, faff, to_phantom)
    fine = np.zeros(fshape, np.float32)
    lost = 0.0
    per_source = []
    label_sources = {}
    for s in sources:
        if s.label is not None:
            label_sources.setdefault(int(s.label), []).append(s)
    if label_sources:
        counts = np.bincount(labels_fine.ravel(), minlength=256)
        per_voxel = np.zeros(256, np.float64)
        for lab, group in label_sources.items():
            total = sum(g.bq for g in group)
            if counts[lab] == 0:
                lost += total
                continue
            per_voxel[lab] = total / counts[lab]
        fine += per_voxel.astype(np.float32)[labels_fine]
    for s in sources:
        if s.solid is not None and s.bq > 0:
            region = rasterize([(1, s.solid)], fshape, faff, to_phantom)
            n = int(region.sum())
            if n == 0:
                # smaller than a voxel: a point at its centre keeps the activity
                lo, hi = s.solid.bbox()
                acc = np.zeros(fshape, np.float64)
                lost += deposit_points(acc, faff, ((lo + hi) / 2)[None], np.array([s.bq]), to_phantom)
                fine += acc.astype(np.float32)
                continue
            fine[region.astype(bool)] += np.float32(s.bq / n)
    points = [s for s in sources if s.center_mm is not None and s.bq > 0]
    if points:
        acc = np.zeros(fshape, np.float64)
        lost += deposit_points(
            acc, faff, np.array([p.center_mm for p in points]), np.array([p.bq for p in points]), to_phantom
        )
        fine += acc.astype(np.float32)
    before = float(fine.sum(dtype=np.float64))
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, float), (3,))
    spacing = np.linalg.norm(faff[:3, :3], axis=0)
    # array axis a runs mostly along world axis w(a): use that world FWHM
    w = np.argmax(np.abs(faff[:3, :3]), axis=0)
    sigma = fwhm[w] / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing
    if np.any(sigma > 0):
        fine = ndimage.gaussian_filter(fine, sigma, mode="constant", truncate=4.0)
    after = float(fine.sum(dtype=np.float64))
    coarse = fine.reshape(shape[0], f, shape[1], f, shape[2], f).sum(axis=(1, 3, 5), dtype=np.float64)
    voxel_ml = abs(np.linalg.det(np.asarray(affine, float)[:3, :3])) / 1000.0
    total_sources = float(sum(s.bq for s in sources))
    for s in sources:
        per_source.append({"name": s.name, "bq": float(s.bq)})
    info = {
        "total_bq_sources": total_sources,
        "total_bq_image": float(coarse.sum()),
        "lost_bq_outside_or_missing": lost,
        "psf_spill_bq": before - after,
        "per_source_bq": per_source,
        "voxel_ml": voxel_ml,
        "fwhm_mm": fwhm.tolist(),
        "supersample": f,
    }
    return (coarse / voxel_ml).astype(np.float32), info


def poisson_noise(
    bq_ml: np.ndarray, voxel_ml: float, duration_s: float, sensitivity: float, rng: np.random.Generator
) -> np.ndarray:
    """Counting noise: Poisson(A V duration sensitivity) back to Bq/mL (float32).

    The relative noise of a voxel is ``1 / sqrt(A V duration sensitivity)``.

    Parameters
    ----------
    bq_ml : ndarray
        Noiseless activity concentration, Bq/mL (negative values count as 0).
    voxel_ml : float
        Voxel volume, mL.
    duration_s : float
        Frame duration, s (> 0).
    sensitivity : float
        Detected counts per decay (> 0).
    rng : numpy.random.Generator
        The random source.

    Returns
    -------
    ndarray of float32
        Noisy Bq/mL.

    Raises
    ------
    InputError
        A non-positive duration or sensitivity.

    Examples
    --------
    >>> noisy = poisson_noise(np.full((10, 10, 10), 1000.0), 0.001, 600, 0.05, np.random.default_rng(0))
    >>> round(float(noisy.mean())), round(float(noisy.std())), round(1000 / np.sqrt(1000 * 0.001 * 600 * 0.05))
    (1001, 184, 183)
    """
    if duration_s <= 0 or sensitivity <= 0:
        raise InputError(f"duration_s={duration_s} and sensitivity={sensitivity} must both be > 0 for counting noise.")
    scale = voxel_ml * duration_s * sensitivity
    counts = rng.poisson(np.maximum(bq_ml, 0).astype(np.float64) * scale)
    return (counts / scale).astype(np.float32)
