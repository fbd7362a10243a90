"""Magnetic particle imaging: signal linear in iron mass, a millimetre point spread, fiducials.

Model (Zheng et al., Sci Rep 2016 6:38137 for linearity and cell detection;
Sehl & Foster, Sci Rep 2021 11:3016 for calibration with fiducials;
docs/methods/simulator.md#mpi):

- Iron (ng) is deposited on a fine grid (labelled-cell clusters, iron held by
  macrophages, fiducials of known iron mass), blurred with a Gaussian PSF
  (FWHM ~1-2 mm; wider across the selection-field gradient axis in real
  scanners, so ``fwhm_mm`` may differ per axis) and summed into the scanner
  voxels: the iron total is conserved.
- Signal per voxel ``S = k * m_Fe + b + noise`` with ``k`` (a.u. per ng Fe),
  a background offset ``b`` (a.u. per voxel, 0 after background
  subtraction) and Gaussian noise of SD ``noise_sd`` (reconstructed MPI
  noise is close to Gaussian).
- Summed over an ROI covering a source, ``sum(S) = k m + n_voxels b``: the
  fiducials calibrate ``k`` and ``b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .nuclear import deposit_points, fine_grid


def mpi_image(
    points_mm: np.ndarray,
    iron_ng: np.ndarray,
    shape,
    affine,
    to_phantom: np.ndarray | None = None,
    fwhm_mm: Sequence[float] = (1.5, 1.5, 1.5),
    k_per_ng: float = 10.0,
    background: float = 0.0,
    noise_sd: float = 0.05,
    rng: np.random.Generator | None = None,
    supersample: int = 2,
) -> dict:
    """An MPI image of iron point sources.

    Parameters
    ----------
    points_mm : (N, 3) positions in phantom world (fiducials included: give them
        in phantom world too, or place them with ``to_phantom``).
    iron_ng : (N,) iron mass of each source in ng (>= 0).
    shape, affine : scanner grid.
    fwhm_mm : PSF FWHM along world x, y, z (mm).
    k_per_ng : signal units per ng of iron.
    background, noise_sd : offset per voxel and Gaussian noise SD (signal units).

    to_phantom : scanner world -> phantom world, optional (identity when None).
    rng : numpy.random.Generator, optional (seed 0 when None).
    supersample : fine-grid subdivisions per axis for the blur (default 2).

    Returns
    -------
    dict: ``noiseless``, ``image`` (float32), ``iron_ng_map`` (ng per voxel after the
    PSF, float64), ``lost_ng`` (outside the field of view) and the constants
    ``k_per_ng``, ``background``, ``noise_sd``, ``fwhm_mm`` (``docs/methods/simulator.md#mpi``).

    Raises
    ------
    InputError
        Negative or non-finite iron, or a negative noise SD.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> out = mpi_image(np.array([[0, 0, 0.0]]), np.array([100.0]), (12, 12, 12), grid_affine((12, 12, 12), 0.5),
    ...                 noise_sd=0)
    >>> round(float(out["iron_ng_map"].sum()), 3), round(float(out["noiseless"].sum()), 1)   # 100 ng x 10 per ng
    (100.0, 1000.0)
    """
    iron = np.asarray(iron_ng, float).reshape(-1)
    if np.any(~np.isfinite(iron)) or np.any(iron < 0):
        raise InputError("iron_ng has negative or non-finite values; iron mass must be >= 0 ng.")
    if noise_sd < 0:
        raise InputError(f"noise_sd={noise_sd} is impossible; give a noise SD >= 0.")
    rng = np.random.default_rng(0) if rng is None else rng
    f = int(supersample)
    fshape, faff = fine_grid(shape, affine, f)
    fine = np.zeros(fshape, np.float64)
    lost = 0.0
    if iron.size:
        lost = deposit_points(fine, faff, np.atleast_2d(points_mm), iron, to_phantom)
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, float), (3,))
    spacing = np.linalg.norm(faff[:3, :3], axis=0)
    w = np.argmax(np.abs(faff[:3, :3]), axis=0)
    sigma = fwhm[w] / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing
    before = fine.sum()
    fine = ndimage.gaussian_filter(fine, sigma, mode="constant", truncate=4.0)
    lost += float(before - fine.sum())
    ng = fine.reshape(shape[0], f, shape[1], f, shape[2], f).sum(axis=(1, 3, 5))
    noiseless = (k_per_ng * ng + background).astype(np.float32)
    image = noiseless + (
        rng.standard_normal(noiseless.shape, dtype=np.float32) * np.float32(noise_sd) if noise_sd > 0 else 0
    )
    return {
        "noiseless": noiseless,
        "image": image.astype(np.float32),
        "iron_ng_map": ng,
        "lost_ng": lost,
        "k_per_ng": float(k_per_ng),
        "background": float(background),
        "noise_sd": float(noise_sd),
        "fwhm_mm": fwhm.tolist(),
    }
