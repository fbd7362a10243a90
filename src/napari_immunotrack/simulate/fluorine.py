"""19F MRI of perfluorocarbon-labelled cells: hot spots on no background, and a reference tube.

Model (Srinivas et al., MRM 2007 58:725; Ahrens & Bulte, Nat Rev Immunol
2013 13:755; docs/methods/fluorine.md):

- A depot of ``cells`` cells, each with ``f_per_cell`` 19F atoms, spreads
  its atoms uniformly over a ball of ``radius_mm`` (or at one point when the
  radius is under a voxel). Atoms per voxel are integrated on a supersampled
  grid and normalised so that the image holds exactly ``cells * f_per_cell``
  atoms (less what falls outside the field of view, reported).
- The signal is proportional to the 19F concentration:
  ``I = gain * c`` with ``c`` in mM of 19F atoms and ``gain`` in a.u. per mM.
  Depot and reference are assumed to have the same relaxation times (a
  relaxation-matched reference), so no T1/T2 weighting factor appears.
- A reference tube (a cylinder of ``c_ref`` mM) sits beside the animal. Its
  mask is the set of voxels entirely inside the tube (no partial volume), so
  its noiseless mean is exactly ``gain * c_ref``.
- No anatomical background; Rician noise with ``sigma = gain * c_ref / snr``
  (``snr`` is the reference tube's SNR).

Quantification then reads: F per voxel of the reference =
``c_ref * N_A * V_voxel[L] * 1e-3``; F in an ROI = (F_ref / I_ref) * sum(I).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .mri import check_snr, rician
from .nuclear import deposit_points
from .phantom import Solid, Sphere, fraction_inside

AVOGADRO = 6.02214076e23


@dataclass
class FluorineDepot:
    """``cells`` cells with ``f_per_cell`` 19F atoms each, spread in a ball (phantom world, mm)."""

    center_mm: Sequence[float]
    cells: float
    f_per_cell: float = 1.0e12
    radius_mm: float = 0.0
    name: str = ""

    def __post_init__(self):
        self.center_mm = np.asarray(self.center_mm, float).reshape(3)
        if not np.isfinite(self.cells) or self.cells < 0:
            raise InputError(f"cells={self.cells} for 19F depot {self.name!r} is impossible; give cells >= 0.")
        if not np.isfinite(self.f_per_cell) or self.f_per_cell <= 0:
            raise InputError(f"f_per_cell={self.f_per_cell} is impossible; give 19F atoms per cell > 0 (e.g. 1e12).")

    @property
    def atoms(self) -> float:
        return float(self.cells * self.f_per_cell)


def atoms_per_mM_voxel(voxel_mm3: float) -> float:
    """19F atoms in one voxel of ``voxel_mm3`` at 1 mM (1 mM = 1e-3 mol/L; 1 mm^3 = 1e-6 L).

    See ``docs/methods/fluorine.md#calibration``.

    Parameters
    ----------
    voxel_mm3 : float
        Voxel volume, mm^3.

    Returns
    -------
    float
        ``1e-3 * N_A * voxel_mm3 * 1e-6`` atoms.

    Examples
    --------
    >>> f"{atoms_per_mM_voxel(0.5 ** 3):.4e}"            # a 0.5 mm voxel
    '7.5277e+13'
    """
    return 1e-3 * AVOGADRO * voxel_mm3 * 1e-6


def atom_map(depots: list[FluorineDepot], shape, affine, to_phantom=None, supersample: int = 3):
    """19F atoms per voxel (float64) and the atoms that fell outside the grid.

    A depot whose radius reaches a voxel is a uniform ball (partial volume by supersampling);
    a smaller one a point deposited trilinearly. Either way the atoms on the grid are exact.

    Parameters
    ----------
    depots : list of FluorineDepot
        Cells, atoms per cell, centre (phantom world, mm) and radius (mm).
    shape : 3 ints
        Grid shape.
    affine : (4, 4) array
        Index -> world mm.
    to_phantom : (4, 4) array, optional
        Grid world -> phantom world (identity when None).
    supersample : int, default 3
        Sub-points per voxel along each axis for ball depots.

    Returns
    -------
    atoms : ndarray of float64
        19F atoms per voxel.
    lost : float
        Atoms outside the grid.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> node = FluorineDepot((0, 0, 0), cells=1e6, f_per_cell=1e12, radius_mm=1.0, name="node")
    >>> far = FluorineDepot((100, 0, 0), cells=1e5, name="outside the field of view")
    >>> atoms, lost = atom_map([node, far], (12, 12, 12), grid_affine((12, 12, 12), 0.5))
    >>> f"{atoms.sum():.4e}", f"{lost:.4e}"
    ('1.0000e+18', '1.0000e+17')
    """
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, np.float64)
    lost = 0.0
    spacing = float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).min())
    for d in depots:
        if d.atoms <= 0:
            continue
        if d.radius_mm >= spacing:
            frac = fraction_inside(Sphere(d.center_mm, d.radius_mm), shape, affine, to_phantom, supersample)
            total = float(frac.sum(dtype=np.float64))
            if total > 0:
                # a ball wholly inside the grid keeps all its atoms; otherwise the part
                # beyond the grid (estimated from the ball's volume) is lost
                m = np.asarray(affine, float) if to_phantom is None else np.asarray(to_phantom, float) @ affine
                inv = np.linalg.inv(m)
                ext = d.radius_mm / np.linalg.norm(m[:3, :3], axis=0)
                c_idx = inv[:3, :3] @ d.center_mm + inv[:3, 3]
                if np.all(c_idx - ext >= -0.5) and np.all(c_idx + ext <= np.array(shape) - 0.5):
                    kept = 1.0
                else:
                    vox = abs(np.linalg.det(np.asarray(affine)[:3, :3]))
                    kept = min(total / (4.0 / 3.0 * np.pi * d.radius_mm**3 / vox), 1.0)
                out += frac * (d.atoms * kept / total)
                lost += d.atoms * (1.0 - kept)
                continue
        lost += deposit_points(out, affine, d.center_mm[None], np.array([d.atoms]), to_phantom)
    return out, lost


def f19_image(
    depots: list[FluorineDepot],
    tube: Solid,
    c_ref_mM: float,
    shape,
    affine,
    to_phantom: np.ndarray | None = None,
    snr: float = 20.0,
    gain_per_mM: float = 100.0,
    rng: np.random.Generator | None = None,
    supersample: int = 3,
) -> dict:
    """A 19F image with a reference tube.

    Parameters
    ----------
    depots : list of FluorineDepot.
    tube : Solid holding the reference (scanner world = phantom world unless ``to_phantom``).
    c_ref_mM : 19F concentration of the reference (mM of 19F atoms).
    shape, affine : the (coarse) 19F grid.
    snr : SNR of the reference tube (``sigma = gain * c_ref / snr``).
    gain_per_mM : signal units per mM of 19F.
    to_phantom : scanner world -> phantom world, optional (identity when None).
    rng : numpy.random.Generator, optional (seed 0 when None).
    supersample : sub-points per voxel along each axis for partial volume (default 3).

    Returns
    -------
    dict: ``noiseless``, ``image`` (float32, a.u.), ``reference_mask`` (uint8),
    ``atoms`` (per voxel, float64), ``sigma``, ``gain_per_mM``, ``lost_atoms``.

    Raises
    ------
    InputError
        A reference concentration <= 0 or an SNR <= 0.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import Cylinder, grid_affine
    >>> node = FluorineDepot((0, 0, 0), cells=1e6, radius_mm=1.0)
    >>> tube = Cylinder((2.0, -3, -3), (2.0, -3, 3), 1.2)
    >>> out = f19_image([node], tube, 100.0, (12, 12, 12), grid_affine((12, 12, 12), 0.5), snr=20)
    >>> inside = out["reference_mask"] == 1
    >>> out["sigma"], int(inside.sum()), float(out["noiseless"][inside].mean())   # gain x c_ref = 100 x 100
    (500.0, 72, 10000.0)
    """
    if not np.isfinite(c_ref_mM) or c_ref_mM <= 0:
        raise InputError(f"c_ref_mM={c_ref_mM} is impossible; the reference concentration must be > 0 mM.")
    snr = check_snr(snr)
    rng = np.random.default_rng(0) if rng is None else rng
    atoms, lost = atom_map(depots, shape, affine, to_phantom, supersample)
    vox = abs(np.linalg.det(np.asarray(affine)[:3, :3]))
    tube_frac = fraction_inside(tube, shape, affine, to_phantom, supersample)
    conc = atoms / atoms_per_mM_voxel(vox) + tube_frac * c_ref_mM
    noiseless = (gain_per_mM * conc).astype(np.float32)
    sigma = gain_per_mM * c_ref_mM / snr
    image = rician(noiseless, sigma, rng)
    return {
        "noiseless": noiseless,
        "image": image,
        "reference_mask": (tube_frac >= 0.999).astype(np.uint8),
        "atoms": atoms,
        "sigma": float(sigma),
        "gain_per_mM": float(gain_per_mM),
        "lost_atoms": float(lost),
    }
