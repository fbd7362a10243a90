"""Surface-weighted fluorescence of labelled cells, as a camera above the supine mouse sees it.

Model (a deliberately simple diffuse-light picture; Ntziachristos, Nat
Methods 2010 7:603 for why planar fluorescence is surface-weighted):

- The camera looks at the ventral skin along -y (the animal is supine).
- A source at depth d below the skin (along the viewing line) reaches the
  surface attenuated by ``exp(-mu_eff d)`` (mu_eff ~ 1/mm for near-infrared
  light in tissue), spread into a Gaussian spot whose width grows with depth,
  ``sigma = sqrt(sigma0^2 + (0.5 d)^2)`` (the diffuse spot's FWHM is about
  its depth).
- Tissue autofluorescence adds a faint uniform glow over the body's
  footprint; the camera adds shot noise (Poisson on photo-electrons, ``gain``
  e- per unit) and Gaussian read noise.

The image is one plane (rows head to tail, columns from the animal's right
to its left, as a camera above a supine mouse sees it) with its own
physical pixel size; ``affine`` places it on the skin's highest point in
phantom world.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .phantom import Body, Ellipsoid, Mouse


def surface_height(mouse: Mouse, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Ventral skin height y_s(x, z) in mm (NaN outside the body's footprint).

    The body's elliptic cross-section at ``z``, and the tumour (a sphere) where it stands higher.

    Parameters
    ----------
    mouse : Mouse
        The phantom (:func:`~napari_immunotrack.simulate.phantom.make_mouse`).
    x, z : ndarray
        Phantom-world x and z, mm (broadcast together).

    Returns
    -------
    ndarray
        Skin y (anterior), mm.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> surface_height(make_mouse(0), np.array([0.0, 0.0, 30.0]), np.array([0.0, 40.0, 0.0])).round(2).tolist()
    [9.5, nan, nan]
    """
    body: Body = mouse.body
    s = np.abs((z - body.center[2]) / body.half_length)
    prof = np.power(np.clip(1.0 - s**body.power, 0.0, None), 1.0 / body.power)
    a, b = body.a * prof, body.b * prof
    u = 1.0 - ((x - body.center[0]) / np.maximum(a, 1e-9)) ** 2
    y = np.where((u >= 0) & (s <= 1), body.center[1] + b * np.sqrt(np.clip(u, 0, None)), np.nan)
    for extra in mouse.extra_body:
        if isinstance(extra, Ellipsoid) and np.allclose(extra.semi, extra.semi[0]):
            c, r = extra.center, extra.semi[0]
            w = r * r - (x - c[0]) ** 2 - (z - c[2]) ** 2
            ys = np.where(w >= 0, c[1] + np.sqrt(np.clip(w, 0, None)), np.nan)
            y = np.fmax(y, ys)
    return y


def optical_image(
    mouse: Mouse,
    points_mm: np.ndarray,
    brightness: np.ndarray,
    pixel_mm: float = 0.2,
    mu_eff_per_mm: float = 1.0,
    sigma0_mm: float = 0.3,
    autofluorescence: float = 0.02,
    gain: float = 50.0,
    read_noise: float = 0.01,
    rng: np.random.Generator | None = None,
    margin_mm: float = 2.0,
) -> dict:
    """Planar fluorescence image of point sources (phantom world, mm) with ``brightness`` (a.u. each).

    Each source below the ventral skin at depth d is attenuated by ``exp(-mu_eff d)`` and
    spread as a Gaussian of SD ``sqrt(sigma0^2 + (d / 2)^2)`` on a plane at the top of the skin
    (``docs/methods/simulator.md#fluorescence``).

    Parameters
    ----------
    mouse : Mouse
        The phantom.
    points_mm : (N, 3) array
        Sources, phantom world mm.
    brightness : (N,) array
        Fluorescence of each source, a.u. (>= 0).
    pixel_mm : float, default 0.2
        Pixel size, mm.
    mu_eff_per_mm : float, default 1.0
        Effective attenuation coefficient, 1/mm.
    sigma0_mm : float, default 0.3
        Blur of a source at the surface, mm.
    autofluorescence : float, default 0.02
        Signal of the body's footprint, a.u./mm^2.
    gain : float, default 50.0
        Detected photoelectrons per a.u. per mm^2 (sets the shot noise).
    read_noise : float, default 0.01
        Gaussian read-noise SD, a.u./mm^2.
    rng : numpy.random.Generator, optional
        Noise source (seed 0 when None).
    margin_mm : float, default 2.0
        Field of view around the animal, mm.

    Returns
    -------
    dict: ``noiseless``, ``image`` ((1, rows, cols) float32, a.u./mm^2), ``affine`` (index -> phantom
    world RAS mm), ``depth_mm`` per source (NaN when outside the footprint), ``surface_weight``
    (exp(-mu_eff d) per source), ``pixel_mm``, ``mu_eff_per_mm``, ``footprint`` ((1, rows, cols)
    uint8, 1 over the body).

    Raises
    ------
    InputError
        A non-positive pixel size, a negative attenuation or negative brightness.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> out = optical_image(make_mouse(0), np.array([[0, 5, 0], [0, 0, 0.0]]), np.array([100.0, 100.0]), pixel_mm=1.0)
    >>> out["image"].shape, out["depth_mm"].round(2).tolist(), out["surface_weight"].round(4).tolist()
    ((1, 81, 31), [4.5, 9.5], [0.0111, 0.0001])
    """
    if pixel_mm <= 0 or mu_eff_per_mm < 0:
        raise InputError(f"pixel_mm={pixel_mm} must be > 0 and mu_eff_per_mm={mu_eff_per_mm} >= 0.")
    rng = np.random.default_rng(0) if rng is None else rng
    lo, hi = mouse.extent_mm
    x_max, x_min = hi[0] + margin_mm, lo[0] - margin_mm
    z_max, z_min = hi[2] + margin_mm, lo[2] - margin_mm
    ncol = int(np.ceil((x_max - x_min) / pixel_mm))
    nrow = int(np.ceil((z_max - z_min) / pixel_mm))
    xs = x_max - (np.arange(ncol) + 0.5) * pixel_mm  # columns: animal's right -> left
    zs = z_max - (np.arange(nrow) + 0.5) * pixel_mm  # rows: head -> tail
    X, Z = np.meshgrid(xs, zs)
    ys = surface_height(mouse, X, Z)
    footprint = np.isfinite(ys)
    plane_y = float(np.nanmax(ys))
    img = np.where(footprint, autofluorescence, 0.0)
    pts = np.atleast_2d(np.asarray(points_mm, float))
    bright = np.asarray(brightness, float).reshape(-1)
    if np.any(bright < 0):
        raise InputError("brightness has negative values; fluorescence is >= 0.")
    depth = np.full(len(pts), np.nan)
    weight = np.zeros(len(pts))
    for i, (p, a) in enumerate(zip(pts, bright)):
        y_s = surface_height(mouse, np.array([p[0]]), np.array([p[2]]))[0]
        if not np.isfinite(y_s) or a <= 0:
            continue
        d = max(y_s - p[1], 0.0)
        depth[i] = d
        weight[i] = np.exp(-mu_eff_per_mm * d)
        sig = np.sqrt(sigma0_mm**2 + (0.5 * d) ** 2)
        g = np.exp(-((X - p[0]) ** 2 + (Z - p[2]) ** 2) / (2 * sig * sig)) / (2 * np.pi * sig * sig)
        img = img + a * weight[i] * g
    noiseless = img.astype(np.float32)
    electrons = rng.poisson(np.clip(noiseless, 0, None) * gain * pixel_mm**2) / (gain * pixel_mm**2)
    image = (electrons + rng.normal(0, read_noise, noiseless.shape)).astype(np.float32)
    # index (0, row, col) -> world: plane at the skin top, rows along -z, columns along -x
    affine = np.eye(4)
    affine[:3, 0] = [0.0, pixel_mm, 0.0]
    affine[:3, 1] = [0.0, 0.0, -pixel_mm]
    affine[:3, 2] = [-pixel_mm, 0.0, 0.0]
    affine[:3, 3] = [xs[0], plane_y, zs[0]]
    return {
        "noiseless": noiseless[None],
        "image": image[None],
        "affine": affine,
        "depth_mm": depth,
        "surface_weight": weight,
        "pixel_mm": float(pixel_mm),
        "mu_eff_per_mm": float(mu_eff_per_mm),
        "footprint": footprint[None].astype(np.uint8),
    }
