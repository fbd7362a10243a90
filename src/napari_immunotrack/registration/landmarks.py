"""Point-based (landmark) registration and its expected errors (FRE, TRE).

See ``docs/methods/registration.md#landmark-registration``.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from .intensity import TRANSFORM_KINDS, warn_or_collect
from .result import RegistrationResult


# --------------------------------------------------------------------------- landmarks
def _points(points, role: str) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{role} landmarks must be an (N, 3) array of world RAS mm, got shape {pts.shape}.")
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{role} landmarks contain NaN or infinite coordinates.")
    return pts


def register_landmarks(fixed_points, moving_points, transform: str = "rigid") -> RegistrationResult:
    """Least-squares rigid or affine transform from paired landmarks (fiducials).

    Parameters
    ----------
    fixed_points, moving_points : (N, 3) arrays
        The same anatomical points, in the same order, in each image's world
        (RAS mm). napari Points layers give (z, y, x): convert with
        :func:`napari_immunotrack.volume.napari_to_ras`.
    transform : {"rigid", "affine"}
        Rigid (Kabsch/Umeyama without scaling, needs >= 3 pairs not on a line)
        or affine (ordinary least squares, needs >= 4 pairs not in a plane).

    Returns
    -------
    RegistrationResult
        ``method="landmarks"``; ``fre_mm`` the fiducial registration error of
        each pair (distance between the mapped fixed point and its moving
        partner), ``metric_final`` their RMS and ``metric_initial`` the RMS
        distance before registration. With localisation error FLE (RMS, 3D, both
        sides together) the expected RMS FRE is ``sqrt(1 - p / (3 N)) * FLE``
        (p = 6 rigid, 12 affine): see :func:`expected_fre`. A small FRE does
        not prove a small error elsewhere (Fitzpatrick 2009): check targets.

    Examples
    --------
    >>> fixed = np.array([[0, 0, 0], [50, 0, 0], [0, 40, 0], [0, 0, 30.0]])
    >>> moving = fixed + [5.0, -3.0, 2.0]
    >>> r = register_landmarks(fixed, moving)
    >>> np.round(r.fixed_to_moving[:3, 3], 6).tolist(), round(r.metric_final, 6)
    ([5.0, -3.0, 2.0], 0.0)
    """
    t0 = time.perf_counter()
    if transform not in TRANSFORM_KINDS:
        raise InputError(f"transform must be 'rigid' or 'affine', not {transform!r}.")
    p = _points(fixed_points, "fixed")
    q = _points(moving_points, "moving")
    if len(p) != len(q):
        raise InputError(
            f"{len(p)} fixed landmarks but {len(q)} moving ones; place the same landmarks, in the same "
            "order, on both images."
        )
    need = 3 if transform == "rigid" else 4
    if len(p) < need:
        raise InputError(
            f"{len(p)} landmark pair(s) given; a {transform} fit needs at least {need} pairs (6 or more "
            "spread around the region of interest are better): add landmarks."
        )
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False)
    if sv[0] == 0 or sv[1] / sv[0] < 1e-3:
        raise InputError(
            "the fixed landmarks lie on a line (or on one point), so rotations about it are "
            "undetermined; add landmarks off that line."
        )
    if transform == "affine" and sv[2] / sv[0] < 1e-3:
        raise InputError(
            "the fixed landmarks lie in one plane, which an affine fit cannot use; add landmarks off "
            "that plane or use a rigid fit."
        )
    matrix = np.eye(4)
    if transform == "rigid":
        pm, qm = p.mean(0), q.mean(0)
        u, _, vt = np.linalg.svd((p - pm).T @ (q - qm))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        matrix[:3, :3] = rot
        matrix[:3, 3] = qm - rot @ pm
    else:
        design = np.c_[p, np.ones(len(p))]
        coef, *_ = np.linalg.lstsq(design, q, rcond=None)
        matrix[:3, :] = coef.T
    mapped = p @ matrix[:3, :3].T + matrix[:3, 3]
    fre = np.linalg.norm(mapped - q, axis=1)
    notes: list = []
    if len(p) >= 5 and np.median(fre) > 0 and fre.max() > 3 * np.median(fre) and fre.max() > 1e-6:
        worst = int(np.argmax(fre))
        warn_or_collect(
            f"landmark pair {worst + 1} fits much worse than the others ({fre[worst]:.2f} mm against a median of "
            f"{np.median(fre):.2f} mm); check that it marks the same point on both images.",
            notes,
        )
    if transform == "affine":
        s = np.linalg.svd(matrix[:3, :3], compute_uv=False)
        if s.max() / s.min() > 1.5 or np.linalg.det(matrix[:3, :3]) <= 0:
            warn_or_collect(
                f"the affine landmark fit scales by {s.min():.2f}-{s.max():.2f} or mirrors; check the pairing or "
                "use a rigid fit.",
                notes,
            )
    dof = 6 if transform == "rigid" else 12
    return RegistrationResult(
        fixed_to_moving=matrix,
        metric_initial=float(np.sqrt(np.mean(np.sum((p - q) ** 2, axis=1)))),
        metric_final=float(np.sqrt(np.mean(fre**2))),
        iterations=0,
        parameters={
            "transform": transform,
            "method": "least squares" + (" (Kabsch)" if dof == 6 else ""),
            "n_pairs": int(len(p)),
            "fixed_points_ras_mm": np.round(p, 4).tolist(),
            "moving_points_ras_mm": np.round(q, 4).tolist(),
        },
        elapsed_s=time.perf_counter() - t0,
        method="landmarks",
        warnings=notes,
        fre_mm=fre,
    )


def expected_fre(fle_rms_mm: float, n_points: int, transform: str = "rigid") -> float:
    """Expected RMS fiducial registration error for a localisation error ``fle_rms_mm``.

    ``fle_rms_mm`` is the RMS 3D distance between where a landmark is marked on
    the two images (both localisation errors together). For ``N`` pairs and a
    least-squares fit with ``p`` parameters (6 rigid, 12 affine):
    ``E[FRE^2] = (1 - p / (3 N)) FLE^2`` (Fitzpatrick, West & Maurer 1998;
    exact for affine, first order for rigid); see
    ``docs/methods/registration.md#accuracy-tre-and-fre``.

    Parameters
    ----------
    fle_rms_mm : float
        RMS fiducial localisation error, mm.
    n_points : int
        Number of landmark pairs ``N``.
    transform : {"rigid", "affine"}, default "rigid"
        The fitted model (6 or 12 parameters; anything but "rigid" counts as affine).

    Returns
    -------
    float
        Expected RMS FRE, mm; 0.0 when ``3 N <= p`` (the fit passes through every point).

    Examples
    --------
    >>> round(expected_fre(1.0, 6, "rigid"), 4)
    0.8165
    >>> round(expected_fre(1.0, 8, "affine"), 4), expected_fre(1.0, 4, "affine")
    (0.7071, 0.0)
    """
    p = 6 if transform == "rigid" else 12
    if n_points * 3 <= p:
        return 0.0
    return float(fle_rms_mm * np.sqrt(1.0 - p / (3.0 * n_points)))


def expected_tre(fixed_points, targets, fle_rms_mm: float) -> np.ndarray:
    """Expected RMS target registration error (mm) of a rigid landmark fit at ``targets`` (RAS mm).

    Fitzpatrick, West & Maurer 1998:
    ``TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2)``, with ``d_k`` the
    distance of ``r`` from principal axis ``k`` of the landmarks and ``f_k`` the
    RMS distance of the landmarks from that axis
    (``docs/methods/registration.md#accuracy-tre-and-fre``).

    Parameters
    ----------
    fixed_points : (N, 3) array
        The landmarks on the fixed image, RAS mm (N >= 3, not collinear).
    targets : (3,) or (M, 3) array
        Points where the error is wanted, RAS mm.
    fle_rms_mm : float
        RMS fiducial localisation error, mm.

    Returns
    -------
    (M,) ndarray
        Expected RMS TRE at each target, mm: smallest at the landmarks' centroid
        (``FLE / sqrt(N)``), growing away from it.

    Examples
    --------
    >>> corners = [[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]]
    >>> expected_tre(corners, [[5, 5, 5], [50, 0, 0]], fle_rms_mm=1.0).round(3)
    array([0.5  , 1.612])
    """
    p = _points(fixed_points, "fixed")
    r = np.atleast_2d(np.asarray(targets, float))
    centre = p.mean(0)
    _, _, vt = np.linalg.svd(p - centre)
    pc = (p - centre) @ vt.T
    rc = (r - centre) @ vt.T
    ratio = 0.0
    for k in range(3):
        others = [j for j in range(3) if j != k]
        f2 = np.mean(np.sum(pc[:, others] ** 2, axis=1))
        d2 = np.sum(rc[:, others] ** 2, axis=1)
        ratio = ratio + d2 / f2
    return np.sqrt(fle_rms_mm**2 / len(p) * (1.0 + ratio / 3.0))
