"""Sessions acquired like a real lab: the animal repositioned, its own grid, gain, coil bias and soft-tissue shift.

Between two imaging sessions a mouse is taken out of the scanner. The next
session sees it in another rigid pose (rotations of a few to ~20 degrees,
shifts of millimetres, sometimes prone one day and supine the next), the
operator centres a new field of view on the anatomy, the receiver gain and
the coil's sensitivity profile (bias field) differ, and soft tissue has moved
a little. This module renders one anatomical MRI of the phantom under such
conditions, with every truth needed to score an alignment.

Conventions (docs/methods/session-alignment.md#simulated-repositioning)
----------------------------------------------------------------
``pose`` is a 4x4 map from phantom world to the session's scanner world (RAS mm).
For two sessions A and B, the world-to-world map that a registration with A
fixed and B moving should find is ``pose_B @ inv(pose_A)`` (a fixed-world point
to the moving-world point showing the same anatomy; the convention of
:mod:`napari_immunotrack.registration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from .mri import rician, sequences, tissue_signal, weighted_image
from .phantom import LABEL_OF, Mouse, grid_affine, rasterize, rotation_matrix

#: Muscle signal of the rendered images before gain (the package's usual SNR reference).
REFERENCE_SIGNAL = 1000.0


def pose_matrix(
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
    center_mm: Sequence[float] = (0.0, 0.0, 0.0),
    flip: bool = False,
    long_axis: int = 2,
) -> np.ndarray:
    """A rigid phantom-to-scanner map: rotate about ``center_mm`` (x, then y, then z), then shift.

    ``flip`` adds a 180 degree turn about the body's long axis (prone <-> supine).

    Parameters
    ----------
    rotation_deg : 3 floats, default (0, 0, 0)
        Angles about x, y, z, degrees.
    translation_mm : 3 floats, default (0, 0, 0)
        Shift after the rotation, mm.
    center_mm : 3 floats, default (0, 0, 0)
        Centre of rotation, phantom world mm.
    flip : bool, default False
        Add the half turn about the long axis (before the rotation).
    long_axis : int, default 2
        The body's long axis (0 x, 1 y, 2 z).

    Returns
    -------
    (4, 4) ndarray
        Phantom world -> scanner world, mm.

    Examples
    --------
    >>> np.round(pose_matrix(flip=True)[:3, :3]).tolist()          # prone: x and y turned over
    [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> p = pose_matrix((0, 0, 90), (1, 0, 0))
    >>> np.round(p @ [1.0, 0, 0, 1], 6).tolist()
    [1.0, 1.0, 0.0, 1.0]
    """
    rot = rotation_matrix(rotation_deg)
    if flip:
        turn = np.diag([-1.0, -1.0, -1.0])
        turn[long_axis, long_axis] = 1.0
        rot = rot @ turn
    c = np.asarray(center_mm, float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c - rot @ c + np.asarray(translation_mm, float)
    return out


def random_pose(
    rng: np.random.Generator,
    max_rotation_deg: float = 15.0,
    max_shift_mm: float = 3.0,
    center_mm: Sequence[float] = (0.0, 0.0, 0.0),
    flip: bool = False,
) -> dict:
    """Draw a pose uniformly within +-``max_rotation_deg`` per axis and +-``max_shift_mm`` per axis.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random source.
    max_rotation_deg : float, default 15.0
        Largest angle about each axis, degrees.
    max_shift_mm : float, default 3.0
        Largest shift along each axis, mm.
    center_mm : 3 floats, default (0, 0, 0)
        Centre of rotation, mm.
    flip : bool, default False
        Prone instead of supine (see :func:`pose_matrix`).

    Returns
    -------
    dict
        ``matrix`` (4x4, :func:`pose_matrix`), ``rotation_deg_xyz``, ``translation_mm``,
        ``rotation_center_mm``, ``flipped``.

    Examples
    --------
    >>> pose = random_pose(np.random.default_rng(0), max_rotation_deg=10, max_shift_mm=2)
    >>> np.round(pose["rotation_deg_xyz"], 3).tolist(), np.round(pose["translation_mm"], 3).tolist()
    ([2.739, -4.604, -9.181], [-1.934, 1.253, 1.651])
    """
    rot = rng.uniform(-max_rotation_deg, max_rotation_deg, 3)
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return {
        "matrix": pose_matrix(rot, shift, center_mm, flip),
        "rotation_deg_xyz": rot.tolist(),
        "translation_mm": shift.tolist(),
        "rotation_center_mm": list(map(float, center_mm)),
        "flipped": flip,
    }


def bias_field(shape, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative coil profile exp(strength * p) with p a random quadratic in [-1, 1] coordinates.

    ``strength`` 0.2 gives roughly +-20 % over the field of view, like a volume coil's falloff.

    Parameters
    ----------
    shape : 3 ints
        Grid shape.
    strength : float
        Largest exponent: the field lies in ``[exp(-strength), exp(strength)]`` (0: all ones).
    rng : numpy.random.Generator
        The random source.

    Returns
    -------
    ndarray of float32
        The multiplicative field.

    Examples
    --------
    >>> field = bias_field((4, 4, 4), 0.2, np.random.default_rng(0))
    >>> round(float(field.min()), 3), round(float(field.max()), 3)
    (0.844, 1.221)
    """
    if strength == 0:
        return np.ones(shape, np.float32)
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = list(axes) + [a * b for i, a in enumerate(axes) for b in axes[i:]]
    coef = rng.normal(size=len(terms))
    p = sum(c * t for c, t in zip(coef, terms))
    p = p / max(float(np.abs(p).max()), 1e-6)
    return np.exp(strength * p).astype(np.float32)


def smooth_displacement(
    shape, spacing_mm, amplitude_mm: float, rng: np.random.Generator, wavelength_mm: float = 12.0
) -> np.ndarray:
    """A smooth soft-tissue displacement field (3, *shape) in voxels, peak about ``amplitude_mm``.

    A sum of a few random low-frequency sinusoids per axis (wavelength ~``wavelength_mm``).

    Parameters
    ----------
    shape : 3 ints
        Grid shape.
    spacing_mm : 3 floats
        Voxel size along each axis, mm.
    amplitude_mm : float
        Peak displacement, mm (0: no displacement).
    rng : numpy.random.Generator
        The random source.
    wavelength_mm : float, default 12.0
        Wavelength of the sinusoids, mm.

    Returns
    -------
    ndarray of float32
        Shape ``(3,) + shape``: displacement along each array axis, voxels.

    Examples
    --------
    >>> d = smooth_displacement((8, 8, 8), (0.5, 0.5, 0.5), 0.3, np.random.default_rng(0))
    >>> d.shape, round(float(np.abs(d).max()) * 0.5, 3)       # peak in mm
    ((3, 8, 8, 8), 0.295)
    """
    spacing = np.asarray(spacing_mm, float)
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    out = np.zeros((3,) + tuple(shape), np.float32)
    if amplitude_mm == 0:
        return out
    for axis in range(3):
        field = np.zeros(shape, np.float32)
        for _ in range(3):
            k = rng.normal(size=3)
            k = 2 * np.pi * k / (np.linalg.norm(k) * wavelength_mm)
            phase = rng.uniform(0, 2 * np.pi)
            field += np.sin(k[0] * grids[0] + k[1] * grids[1] + k[2] * grids[2] + phase).astype(np.float32)
        out[axis] = field * (amplitude_mm / 3.0) / spacing[axis]
    return out


@dataclass
class SessionMRI:
    """One rendered session: the image and its truth."""

    volume: Volume
    pose: np.ndarray
    gain: float
    bias: np.ndarray
    displacement_vox: np.ndarray
    labels: np.ndarray


def session_mri(
    mouse: Mouse,
    pose: np.ndarray,
    *,
    target_mm: Sequence[float] = (1.0, -1.0, 4.0),
    fov_mm: Sequence[float] = (12.8, 25.6, 25.6),
    voxel_mm: float = 0.2,
    sequence: str = "T2w",
    field_t: float = 9.4,
    snr: float = 25.0,
    gain: float = 1.0,
    bias_strength: float = 0.0,
    deformation_mm: float = 0.0,
    fov_offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
    supersample: int = 2,
    noise: bool = True,
    seed: int = 0,
    name: str = "T2w",
) -> SessionMRI:
    """Render one anatomical MRI session of ``mouse`` placed by ``pose``.

    Parameters
    ----------
    mouse : Mouse
        The phantom (:func:`~.phantom.make_mouse`).
    pose : (4, 4)
        Phantom world -> this session's scanner world.
    target_mm : (3,)
        Phantom-world point the operator centres the field of view on (x, y, z).
    fov_mm : (3,)
        Field of view along array axes 0, 1, 2 (S, A, R of the scanner), mm.
    voxel_mm : float
        Isotropic voxel size.
    sequence : str
        One of the simulator's weighted sequences (``T1w``, ``T2w``, ``T2starw``).
    snr : float
        Muscle signal over the noise sigma (gain scales both, so SNR does not change with gain).
    gain : float
        Receiver gain: multiplies signal and noise.
    bias_strength : float
        Coil profile strength (see :func:`bias_field`).
    deformation_mm : float
        Peak amplitude of a smooth soft-tissue displacement.
    fov_offset_mm : (3,)
        Where the operator put the field-of-view centre relative to the posed target (world x, y, z mm).
    supersample : int
        Partial-volume rendering: tissue labels on a grid this many times finer, signals averaged.
    noise : bool
        Add Rician noise.
    field_t : float, default 9.4
        Field strength, T (7.0 or 9.4).
    seed : int, default 0
        Seed of the noise, the coil profile and the deformation.
    name : str, default "T2w"
        Name of the Volume.

    Returns
    -------
    SessionMRI
        ``volume`` (MR, axis-aligned grid in scanner world), ``pose``, ``gain``, ``bias`` (the field
        applied), ``displacement_vox`` (3, *shape) and ``labels`` (nearest label per voxel before deformation).

    Raises
    ------
    InputError
        A non-positive voxel size or supersampling.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> session = session_mri(make_mouse(0), np.eye(4), fov_mm=(6.4, 6.4, 6.4), voxel_mm=0.8, supersample=1)
    >>> session.volume.spatial_shape, session.volume.center_world().round(2).tolist()   # centred on target_mm
    ((8, 8, 8), [1.0, -1.0, 4.0])
    """
    if voxel_mm <= 0 or supersample < 1:
        raise InputError("voxel_mm must be > 0 and supersample >= 1.")
    rng = np.random.default_rng(seed)
    pose = np.asarray(pose, float)
    center = pose[:3, :3] @ np.asarray(target_mm, float) + pose[:3, 3] + np.asarray(fov_offset_mm, float)
    shape = tuple(int(round(f / voxel_mm)) for f in fov_mm)
    affine = grid_affine(shape, voxel_mm, center)
    fine_shape = tuple(s * supersample for s in shape)
    fine_aff = grid_affine(fine_shape, voxel_mm / supersample, center)
    to_phantom = np.linalg.inv(pose)
    seq = sequences(field_t)[sequence]
    scale = REFERENCE_SIGNAL / tissue_signal(seq, field_t, "muscle")
    fine_labels = rasterize(mouse.solids, fine_shape, fine_aff, to_phantom)
    img = weighted_image(fine_labels, seq, field_t, scale=scale)
    if supersample > 1:
        img = img.reshape(shape[0], supersample, shape[1], supersample, shape[2], supersample).mean(axis=(1, 3, 5))
    labels = rasterize(mouse.solids, shape, affine, to_phantom)
    disp = smooth_displacement(shape, [voxel_mm] * 3, deformation_mm, rng)
    if deformation_mm:
        coords = np.indices(shape, dtype=np.float32) + disp
        img = ndimage.map_coordinates(img, coords, order=1, mode="nearest").astype(np.float32)
    bias = bias_field(shape, bias_strength, rng)
    img = img * bias
    if noise:
        img = rician(img, REFERENCE_SIGNAL / snr, rng)
    img = (img * gain).astype(np.float32)
    vol = Volume(img, affine, "MR", "a.u.", {"sequence": sequence, "gain": gain, "simulated": True}, name)
    return SessionMRI(vol, pose, gain, bias, disp, labels)


def landmarks(mouse: Mouse, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Phantom-world anatomical landmarks (organ and node centres) for scoring alignments.

    Parameters
    ----------
    mouse : Mouse
        The phantom.
    names : sequence of str, optional
        Sites to use (default: every site that is a tissue label).

    Returns
    -------
    dict of str to ndarray
        Site -> centre, phantom world mm.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> {k: v.round(2).tolist() for k, v in landmarks(make_mouse(0), ["liver", "spleen"]).items()}
    {'liver': [-0.51, 1.55, 13.11], 'spleen': [-7.69, -0.48, 7.2]}
    """
    names = names or [n for n in mouse.sites if n in LABEL_OF]
    return {n: np.asarray(mouse.sites[n]["center_mm"], float) for n in names if n in mouse.sites}


def target_registration_error(
    estimated_fixed_to_moving: np.ndarray, pose_fixed: np.ndarray, pose_moving: np.ndarray, points_phantom: np.ndarray
) -> np.ndarray:
    """Distance (mm) between where an estimated map sends each landmark and where it truly is.

    Parameters
    ----------
    estimated_fixed_to_moving : (4, 4) array
        The alignment under test: fixed session world -> moving session world.
    pose_fixed, pose_moving : (4, 4) array
        The true phantom -> session world poses.
    points_phantom : (N, 3) array
        Landmarks, phantom world mm.

    Returns
    -------
    (N,) ndarray
        Target registration error at each landmark, mm.

    Examples
    --------
    >>> points = np.array([[-0.51, 1.55, 13.11], [-7.69, -0.48, 7.2]])
    >>> turned = pose_matrix((0, 0, 5))                       # the moving session turned 5 degrees about z
    >>> target_registration_error(np.eye(4), np.eye(4), turned, points).round(3)   # identity misses by
    array([0.142, 0.672])
    """
    p = np.c_[np.asarray(points_phantom, float), np.ones(len(points_phantom))]
    fixed_pts = p @ np.asarray(pose_fixed).T
    true_moving = fixed_pts @ (np.asarray(pose_moving) @ np.linalg.inv(pose_fixed)).T
    est_moving = fixed_pts @ np.asarray(estimated_fixed_to_moving).T
    return np.linalg.norm(est_moving[:, :3] - true_moving[:, :3], axis=1)


def grid_points(volume: Volume, step_mm: float = 2.0, inside: np.ndarray | None = None) -> np.ndarray:
    """World points on a regular grid over a volume (optionally only where ``inside`` is true): TRE targets.

    Parameters
    ----------
    volume : Volume
        The grid.
    step_mm : float, default 2.0
        Approximate spacing, mm (rounded to whole voxels of the smallest spacing).
    inside : ndarray of bool, optional
        Keep only voxels where this mask (on the volume's grid) is true.

    Returns
    -------
    (N, 3) ndarray
        World RAS points, mm.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import grid_affine
    >>> grid = Volume(np.zeros((8, 8, 8)), grid_affine((8, 8, 8), 0.8))
    >>> points = grid_points(grid, step_mm=3.2)
    >>> points.shape, points[:2].round(2).tolist()
    ((8, 3), [[-2.8, -2.8, -2.8], [0.4, -2.8, -2.8]])
    """
    step = max(1, int(round(step_mm / float(volume.spacing.min()))))
    idx = np.stack(np.meshgrid(*[np.arange(0, n, step) for n in volume.spatial_shape], indexing="ij"), -1)
    idx = idx.reshape(-1, 3)
    if inside is not None:
        idx = idx[inside[tuple(idx.T)]]
    return volume.index_to_world(idx)


def deformed_position(session: SessionMRI, undeformed_world: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Where anatomy that would sit at ``undeformed_world`` (session world, rigid pose only) appears
    in the deformed image: solves x + d(x) = y for x by fixed-point iteration (d smooth and small).

    Parameters
    ----------
    session : SessionMRI
        A rendered session (its ``displacement_vox``).
    undeformed_world : (N, 3) array
        Points in the session world as the rigid pose alone puts them, mm.
    iterations : int, default 20
        Fixed-point iterations.

    Returns
    -------
    (N, 3) ndarray
        Where those points appear in the deformed image, world mm.

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> session = session_mri(make_mouse(0), np.eye(4), fov_mm=(6.4, 6.4, 6.4), voxel_mm=0.8, supersample=1,
    ...                       deformation_mm=0.3, seed=1)
    >>> deformed_position(session, [[1.0, -1.0, 4.0]]).round(3)
    array([[ 0.994, -1.125,  4.021]])
    """
    vol = session.volume
    y = vol.world_to_index(undeformed_world)
    x = y.copy()
    for _ in range(iterations):
        d = np.stack(
            [ndimage.map_coordinates(session.displacement_vox[k], x.T, order=1, mode="nearest") for k in range(3)], 1
        )
        x = y - d
    return vol.index_to_world(x)


def reposition_session(
    noiseless: dict[str, Volume],
    sigma: dict[str, float] | float,
    seed: int = 0,
    *,
    max_rotation_deg: float = 8.0,
    max_shift_mm: float = 1.0,
    gain: float | None = None,
    bias_strength: float = 0.2,
    fov_jitter_mm: float = 0.3,
) -> tuple[dict[str, Volume], np.ndarray]:
    """One session's images of a scene seen again with the animal repositioned (another visit to the scanner).

    Every image of ``noiseless`` (same grid: one session) is rendered on the new scanner's own axis-aligned
    grid with the animal in a random rigid pose, the session's coil profile (one bias field for all of its
    images), receiver gain and Rician noise of ``sigma`` (before gain).

    Parameters
    ----------
    noiseless : dict of name -> Volume
        The scene's noiseless images of one session (e.g. ``t1_pre_noiseless``), all on one grid.
    sigma : float or dict of name -> float
        Rician noise sigma per image (signal units before gain).
    max_rotation_deg, max_shift_mm : float
        The pose is drawn uniformly within +-these per axis, about the grid's centre.
    gain : float, optional
        Receiver gain (default drawn in 0.7-1.4).
    bias_strength : float
        Coil profile strength (:func:`bias_field`).
    fov_jitter_mm : float
        The new field of view's centre is off the posed anatomy by up to this much per axis.

    Returns
    -------
    (dict of name -> Volume, pose)
        The repositioned images, and ``pose`` (4x4): scene world -> the new session's world, which is the
        map a registration with the scene's image fixed should find.

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.ones((8, 8, 8), np.float32) * 100, np.eye(4))
    >>> moved, pose = reposition_session({"a": v}, 1.0, seed=0)
    >>> moved["a"].spatial_shape, bool(np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)))
    ((8, 8, 8), True)
    """
    from .mri import rician

    rng = np.random.default_rng(seed)
    first = next(iter(noiseless.values()))
    centre = first.center_world()
    pose = pose_matrix(
        rng.uniform(-max_rotation_deg, max_rotation_deg, 3), rng.uniform(-max_shift_mm, max_shift_mm, 3), centre
    )
    shape = first.spatial_shape
    new_centre = pose[:3, :3] @ centre + pose[:3, 3] + rng.uniform(-fov_jitter_mm, fov_jitter_mm, 3)
    grid = Volume(np.zeros(shape, np.float32), grid_affine(shape, float(first.spacing[0]), new_centre))
    bias = bias_field(shape, bias_strength, rng)
    gain = float(rng.uniform(0.7, 1.4)) if gain is None else float(gain)
    out = {}
    for name, vol in noiseless.items():
        if not vol.same_grid(first):
            raise InputError(f"{name} is not on the session's grid; give one session's images on one grid.")
        img = vol.resample_to(grid, order=3, transform=np.linalg.inv(pose)).numpy()
        img = np.nan_to_num(np.maximum(img, 0)) * bias
        s = sigma[name] if isinstance(sigma, dict) else sigma
        noisy = rician(img.astype(np.float32), float(s), rng) * gain
        meta = dict(vol.metadata, gain=gain, simulated=True)
        out[name] = Volume(
            noisy.astype(np.float32), grid.affine, vol.modality, vol.unit, meta, f"{vol.name} (repositioned)"
        )
    return out, pose
