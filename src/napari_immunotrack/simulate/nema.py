"""A NEMA NU 4-2008-like rods phantom for partial-volume tests (docs/methods/pvc.md#validation).

The image-quality phantom of the NEMA NU 4-2008 standard for small-animal PET
has a 30 mm diameter cylinder whose rod section holds five fillable rods of
1, 2, 3, 4 and 5 mm diameter on a circle of 7 mm radius, filled from the
uniform section (so at its concentration). This module builds that geometry
(rod section only, rods along z; the surrounding cylinder can be cold as in
the standard or warm with ``background``), with

- the truth on a fine label grid (``supersample`` x finer than the scanner):
  label 1-5 = the rods (1-5 mm), 6 = the cylinder around them, 0 = air;
- the scanner image: the fine activity map blurred by a Gaussian PSF (FWHM in
  mm, per axis) on the fine grid, then summed into the scanner voxels (what
  a scanner with that resolution and voxel size reports, without noise unless
  ``noise_sd`` is given).

The ROIs are the fine label grid itself (carried to the scanner grid with
exact partial-voxel weights), so the regions and the truth are the same
objects.

Examples
--------
>>> ph = nema_rods(voxel_mm=0.5, fwhm_mm=1.5, length_mm=6.0, supersample=2)
>>> ph["image"].spatial_shape, sorted(ph["truth"])[:3]
((32, 80, 80), [1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .phantom import Cylinder, rasterize

#: NEMA NU 4-2008 rod diameters (mm) and the radius (mm) of the circle they sit on.
ROD_DIAMETERS_MM = (1.0, 2.0, 3.0, 4.0, 5.0)
ROD_CIRCLE_RADIUS_MM = 7.0
PHANTOM_RADIUS_MM = 15.0


def nema_rods(
    *,
    voxel_mm: float = 0.5,
    fwhm_mm=1.5,
    rod_concentration: float = 100.0,
    background: float = 0.0,
    rod_diameters_mm: Sequence[float] = ROD_DIAMETERS_MM,
    length_mm: float = 10.0,
    supersample: int = 4,
    noise_sd: float = 0.0,
    rng: np.random.Generator | None = None,
    modality: str = "PT",
) -> dict:
    """A rods phantom blurred by a Gaussian PSF.

    Parameters
    ----------
    voxel_mm : float
        Scanner voxel (isotropic, mm).
    fwhm_mm : float or (3,)
        PSF FWHM along world x, y, z (mm).
    rod_concentration : float
        Activity concentration in the rods (Bq/mL or any unit).
    background : float
        Concentration in the cylinder around the rods (0 = the standard's cold plastic).
    rod_diameters_mm : sequence of float
        Rod diameters (1-5 mm by default).
    length_mm : float
        Length of the rod section along z; the field of view extends it by 3 FWHM on each side.
    supersample : int
        Fine-grid subdivisions per axis (truth and blur are computed there).
    noise_sd : float
        Gaussian noise SD added to the scanner image.
    rng : numpy Generator, optional
    modality : str

    Returns
    -------
    dict: ``image`` (Volume), ``labels`` (Volume, fine grid: rods 1.., cylinder = n_rods + 1),
    ``truth`` ({label: true concentration}), ``diameters_mm`` ({label: diameter}), ``fwhm_mm``.

    Raises
    ------
    InputError
        A non-positive voxel size, length or supersampling, or a negative FWHM.

    Examples
    --------
    >>> rods = nema_rods(voxel_mm=1.0, supersample=2, length_mm=4.0, rod_diameters_mm=(2.0, 5.0))
    >>> rods["image"].shape, rods["truth"], rods["diameters_mm"]
    ((15, 41, 41), {1: 100.0, 2: 100.0, 3: 0.0}, {1: 2.0, 2: 5.0})
    >>> image = rods["image"]                            # rod centres at x = +7 (2 mm) and -7 mm (5 mm)
    >>> [round(float(image.numpy()[tuple(i)]), 1) for i in np.rint(image.world_to_index([[7, 0, 0], [-7, 0, 0]])).astype(int)]
    [64.4, 99.9]
    """
    from scipy import ndimage

    fwhm = np.broadcast_to(np.asarray(fwhm_mm, float), (3,)).copy()
    if voxel_mm <= 0 or supersample < 1 or length_mm <= 0 or np.any(fwhm < 0):
        raise InputError("voxel_mm, length_mm and supersample must be positive and fwhm_mm >= 0.")
    f = int(supersample)
    margin = 3.0 * float(fwhm.max()) + voxel_mm
    half_xy = PHANTOM_RADIUS_MM + margin
    half_z = length_mm / 2.0 + margin
    n_xy = int(np.ceil(2 * half_xy / voxel_mm))
    n_z = int(np.ceil(2 * half_z / voxel_mm))
    shape = (n_z, n_xy, n_xy)  # array axes z, y, x
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float).T * voxel_mm
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2.0)
    fine_shape = tuple(n * f for n in shape)
    s = np.eye(4)
    s[:3, :3] /= f
    s[:3, 3] = (1.0 / f - 1.0) / 2.0
    fine_affine = affine @ s

    z0, z1 = -length_mm / 2.0, length_mm / 2.0
    solids = [(len(rod_diameters_mm) + 1, Cylinder((0, 0, z0), (0, 0, z1), PHANTOM_RADIUS_MM))]
    diameters = {}
    for k, d in enumerate(rod_diameters_mm):
        ang = 2 * np.pi * k / len(rod_diameters_mm)
        c = (ROD_CIRCLE_RADIUS_MM * np.cos(ang), ROD_CIRCLE_RADIUS_MM * np.sin(ang))
        solids.append((k + 1, Cylinder((c[0], c[1], z0), (c[0], c[1], z1), d / 2.0)))
        diameters[k + 1] = float(d)
    labels = rasterize(solids, fine_shape, fine_affine)
    lut = np.zeros(256, np.float32)
    lut[1 : len(rod_diameters_mm) + 1] = rod_concentration
    lut[len(rod_diameters_mm) + 1] = background
    fine = lut[labels]
    sigma = fwhm[np.argmax(np.abs(fine_affine[:3, :3]), axis=0)] / (2 * np.sqrt(2 * np.log(2))) / (voxel_mm / f)
    if np.any(sigma > 0):
        fine = ndimage.gaussian_filter(fine, sigma, mode="constant", truncate=4.0)
    coarse = fine.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5), dtype=np.float64)
    if noise_sd > 0:
        rng = np.random.default_rng(0) if rng is None else rng
        coarse = coarse + rng.normal(0.0, noise_sd, coarse.shape)
    truth = {k: float(rod_concentration) for k in diameters}
    truth[len(rod_diameters_mm) + 1] = float(background)
    image = Volume(coarse.astype(np.float32), affine, modality, "Bq/mL", {"PSF_FWHM_mm": fwhm.tolist()}, "nema")
    return {
        "image": image,
        "labels": Volume(labels, fine_affine, "SEG", "label", {}, "nema_labels"),
        "truth": truth,
        "diameters_mm": diameters,
        "fwhm_mm": fwhm.tolist(),
    }
