"""Session alignment: one animal's anatomical MRI of one session brought onto another session's.

Animals are taken out of the scanner between sessions, so each session sees
the animal in its own pose (rotations of 5-30 degrees, shifts of millimetres,
sometimes prone one day and supine the next), on its own grid, with its own
receiver gain and coil bias field. Same-contrast MRI of the same animal is
the easiest registration problem there is once intensities are made
comparable, and the one where a baseline comparison needs sub-voxel accuracy.
The method (docs/methods/session-alignment.md):

1. **Comparable intensities**: gain normalisation (each body's median set to 1),
   then each body voxel divided by the body's Gaussian-weighted local mean
   (:func:`local_normalise`, sigma 2 mm): a coil profile varies over centimetres
   and cancels in the ratio, tissue boundaries stay, and the isotropic filter
   commutes with the animal's rotation. N4 (:func:`correct_intensities`) and a
   differential bias fit are options; N4 is what to use before comparing two
   sessions' intensities.
2. **Capture range**: the body masks' centres of mass give the translation; an
   orientation search evaluates the correlation metric on a coarse level for a
   grid of rotations (default +-30 degrees about every axis in 15 degree steps;
   with ``allow_flip`` also a half turn about each principal axis of the body,
   prone <-> supine); the best three starts are optimised on the coarse level and
   the best one is refined.
3. **Fine registration**: rigid (6 parameters) by normalised correlation on
   a pyramid down to the full resolution; optionally affine (12) and a
   regularised B-spline deformation on top.
4. **Doubt, said aloud**: the final correlation, the overlap of the body masks,
   two optimised starts at clearly different poses fitting almost equally well,
   optionally the spread of refinements from perturbed starts (an estimate of the
   residual error in mm) and, for B-splines, the smallest Jacobian determinant
   (folding) are reported; a doubtful result carries a warning naming the reason.

Transforms follow :mod:`napari_immunotrack.registration`: ``fixed_to_moving`` maps a
fixed-world point (RAS mm) to the moving-world point showing the same anatomy.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImmunotrackWarning, InputError
from .progress import report, scaled
from .registration import (
    sitk_transform_to_matrix,
    volume_to_sitk,
)
from .volume import Volume

#: Below this normalised correlation (after intensity harmonisation) two same-contrast MRIs are not aligned.
#: Aligned sessions of one animal reach 0.6-0.97 (coarse grids, noise and arrived cells lower it); a wrong
#: half turn or another body region stays near 0.
MIN_CORRELATION = 0.5
#: Two optimised starts whose correlations differ by less than this, but whose poses differ, make the result
#: ambiguous.
AMBIGUITY_MARGIN = 0.01
#: Below this Dice overlap of the body masks the alignment is doubtful.
MIN_BODY_DICE = 0.85
#: A residual-error estimate above this many voxels makes the alignment doubtful.
MAX_PRECISION_VOXELS = 2.0
#: First step of the coarse optimiser, in coarse voxels. Two voxels overshot the narrow basin of a small field
#: of view whose anatomy is a few 1 mm structures (the dual-mode scene); one voxel keeps the capture range.
COARSE_LR = 1.0
#: Smallest step of the middle level, in its voxels (the full-resolution level finishes the job).
MIDDLE_MIN_STEP = 1e-3
#: The middle level may crawl from a coarse result a few voxels off (cluster scene, seed 1: 100 iterations left
#: 0.35 mm of error, 300 reach 0.03 mm); a converged level stops long before (40-60 on the benchmark pair).
MIDDLE_ITERATIONS = 300


@dataclass
class AlignmentResult:
    """The outcome of :func:`align_mri`.

    Attributes
    ----------
    fixed_to_moving : (4, 4) array
        Linear part (rigid or affine): a fixed world point -> the moving world point of the same anatomy.
    transform : str
        "rigid", "affine" or "bspline".
    correlation : float
        Normalised correlation of the corrected images inside the fixed body mask (1 = identical).
    body_dice : float
        Overlap of the two body masks after alignment.
    precision_mm : float
        Spread (max over the body's bounding box) of refinements restarted from perturbed starts:
        an estimate of the residual alignment error.
    min_jacobian : float
        Smallest Jacobian determinant of the deformable part (1 for linear transforms); <= 0 means folding.
    doubtful : bool
        True when any check failed; ``warnings`` says which.
    warnings : list of str
    elapsed_s : float
    stages : list of dict
    parameters : dict
        Every setting, for provenance.
    deformable : SimpleITK transform or None
        The B-spline part, applied after the linear one (fixed world -> moving world, in LPS as ITK).
    """

    fixed_to_moving: np.ndarray
    transform: str
    correlation: float
    body_dice: float
    precision_mm: float
    min_jacobian: float = 1.0
    doubtful: bool = False
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    stages: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    deformable: object = None

    @property
    def moving_to_fixed(self) -> np.ndarray:
        return np.linalg.inv(self.fixed_to_moving)

    def transform_points(self, fixed_points) -> np.ndarray:
        """Fixed world RAS points (N, 3) -> moving world RAS points (N, 3), deformation included."""
        pts = np.atleast_2d(np.asarray(fixed_points, float))
        out = pts @ self.fixed_to_moving[:3, :3].T + self.fixed_to_moving[:3, 3]
        if self.deformable is not None:
            # the B-spline works on fixed-world LPS points before the linear map
            lps = pts * [-1, -1, 1]
            moved = np.array([self.deformable.TransformPoint(tuple(map(float, p))) for p in lps]) * [-1, -1, 1]
            out = moved @ self.fixed_to_moving[:3, :3].T + self.fixed_to_moving[:3, 3]
        return out

    def to_dict(self) -> dict:
        """JSON-ready record for provenance."""
        return {
            "method": "session alignment (docs/methods/session-alignment.md)",
            "transform": self.transform,
            "fixed_to_moving_ras": np.round(self.fixed_to_moving, 9).tolist(),
            "direction": "fixed world point (RAS mm) -> moving world point (RAS mm)",
            "correlation": round(float(self.correlation), 6),
            "body_dice": round(float(self.body_dice), 6),
            "precision_mm": round(float(self.precision_mm), 6),
            "min_jacobian": round(float(self.min_jacobian), 6),
            "doubtful": bool(self.doubtful),
            "warnings": list(self.warnings),
            "elapsed_s": round(float(self.elapsed_s), 3),
            "stages": self.stages,
            "parameters": self.parameters,
        }


# --------------------------------------------------------------------------- intensities
# the body mask and Otsu's threshold live in analysis.body (the cluster segmentation uses them too)
from .analysis.body import body_mask, otsu_threshold  # noqa: E402, F401


def correct_intensities(
    volume: Volume,
    *,
    bias_correction: bool = True,
    gain_normalisation: bool = True,
    reference_mask: np.ndarray | None = None,
    body: np.ndarray | None = None,
    n4_target_voxels: int = 8_000,
    n4_iterations: Sequence[int] = (15,),
) -> tuple:
    """Bias-field correct (N4) and gain-normalise an MRI so another session's can be compared with it.

    Parameters
    ----------
    volume : Volume
        A 3D MRI (any unit; NaN and infinite voxels are read as 0).
    bias_correction : bool, default True
        Run N4 (fitted on a copy shrunk to about ``n4_target_voxels``, applied at full resolution).
    gain_normalisation : bool, default True
        Divide by the median of ``reference_mask`` (default: the body mask) so reference tissue reads 1.
    reference_mask : bool array, optional
        Reference tissue (e.g. muscle) on the volume's grid.
    body : bool array, optional
        The body mask if already known (else :func:`body_mask`).
    n4_target_voxels : int, default 8000
        About how many voxels the copy N4 is fitted on has (the shrink factor is the same along every axis).
    n4_iterations : sequence of int, default (15,)
        N4's iterations per fitting level (one level per item).

    Returns
    -------
    (Volume, dict)
        The corrected volume (float32, in units of the reference tissue's median when gain-normalised) and a
        record: ``bias_correction``, ``gain_normalisation``, ``gain`` (the divisor, in the volume's unit),
        ``bias_range`` (min/max of the fitted field inside the body) and ``n4_shrink`` (the shrink factor).

    Raises
    ------
    InputError
        When the volume is not 3D, shows no body (fewer than 64 voxels), or the reference mask is empty, off
        the grid or has no positive signal.

    Examples
    --------
    A cube of signal 200 under a receiver gain rising from 1 to 2 across x:

    >>> from napari_immunotrack.volume import Volume
    >>> rng = np.random.default_rng(0)
    >>> img = np.abs(rng.normal(0, 5, (24, 24, 24)) + 1j * rng.normal(0, 5, (24, 24, 24)))
    >>> img[6:18, 6:18, 6:18] += 200
    >>> ramp = np.linspace(1.0, 2.0, 24)[:, None, None]
    >>> out, record = correct_intensities(Volume(img * ramp, np.diag([0.5, 0.5, 0.5, 1.0])), bias_correction=False)
    >>> record["gain"], np.round(out.data[[7, 16], 12, 12], 2)   # body median; the gain ramp is still there
    (311.208527, array([0.87, 1.13], dtype=float32))
    """
    import SimpleITK as sitk

    data = np.asarray(volume.numpy(), np.float32)
    if data.ndim != 3:
        raise InputError(f"{volume.name or 'the image'} has {data.ndim} dimensions; alignment needs one 3D MRI.")
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    mask = body_mask(data) if body is None else np.asarray(body, bool)
    if mask.sum() < 64:
        raise InputError(
            f"{volume.name or 'the image'} shows no body (an empty or constant image); "
            "give the session's anatomical MRI."
        )
    record = {"bias_correction": bool(bias_correction), "gain_normalisation": bool(gain_normalisation)}
    out = data
    if bias_correction:
        img = sitk.GetImageFromArray(np.maximum(data, 0) + 1e-3)
        img.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
        msk = sitk.GetImageFromArray(mask.astype(np.uint8))
        msk.CopyInformation(img)
        factor = max(1, int(round((data.size / n4_target_voxels) ** (1 / 3))))
        small = sitk.Shrink(img, [factor] * 3)
        small_mask = sitk.Shrink(msk, [factor] * 3)
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations([int(i) for i in n4_iterations])
        n4.Execute(small, small_mask)
        # the field is smooth: evaluate it on the coarse grid and interpolate (much cheaper than at every voxel)
        small_log = n4.GetLogBiasFieldAsImage(small)
        log_bias = sitk.GetArrayFromImage(
            sitk.Resample(small_log, img, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        ).astype(np.float32)
        bias = np.exp(log_bias)
        out = data / bias
        inside = bias[mask]
        record["bias_range"] = [round(float(inside.min()), 4), round(float(inside.max()), 4)]
        record["n4_shrink"] = factor
    if gain_normalisation:
        ref = mask if reference_mask is None else np.asarray(reference_mask, bool)
        if ref.shape != data.shape or ref.sum() == 0:
            raise InputError(
                "the reference-tissue mask is empty or not on the image's grid; give a mask of "
                "the image's shape, or none to use the body."
            )
        gain = float(np.median(out[ref]))
        if not gain > 0:
            raise InputError(
                f"{volume.name or 'the image'}: reference tissue has no positive signal; "
                "check the mask or switch gain normalisation off."
            )
        out = out / gain
        record["gain"] = round(gain, 6)
    return volume.replace(data=out.astype(np.float32)), record


# --------------------------------------------------------------------------- geometry helpers
def _centroid_lps(image_sitk, mask: np.ndarray) -> np.ndarray:
    # from the mask's projections onto each axis: the same mean index as np.argwhere(mask).mean(0), without
    # listing every voxel (a million-voxel mask took 10-15 ms each time)
    total = max(int(np.count_nonzero(mask)), 1)
    idx = [
        float(np.dot(np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != ax)), np.arange(n))) / total
        for ax, n in enumerate(mask.shape)
    ][::-1]  # sitk index order x, y, z
    return np.array(image_sitk.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in idx)))


def _principal_axes_lps(image_sitk, mask: np.ndarray) -> list:
    pts = np.argwhere(mask)[::7][:, ::-1].astype(float)
    direction = np.array(image_sitk.GetDirection()).reshape(3, 3) * np.array(image_sitk.GetSpacing())
    phys = pts @ direction.T
    _, v = np.linalg.eigh(np.cov(phys.T))
    return [v[:, i] for i in range(3)]


def reliability(normalised: np.ndarray, gain_normalised: np.ndarray, body: np.ndarray) -> float:
    """Share of the (locally normalised) body signal's variance that is not noise.

    The noise sigma comes from the air of the gain-normalised image (Rician background:
    mean = sigma * sqrt(pi / 2)), in units of the body's median, which is what local normalisation
    divides by. Two perfectly aligned sessions correlate at about sqrt(rel_a * rel_b)
    (docs/methods/session-alignment.md#session-alignment).

    Parameters
    ----------
    normalised : ndarray
        The image whose variance is judged (normally :func:`local_normalise`'s output), dimensionless.
    gain_normalised : ndarray
        The same image gain-normalised only (body median 1): its air gives the noise.
    body : bool ndarray
        The body mask; the air is what lies more than 3 voxels outside it (at least 500 voxels needed).

    Returns
    -------
    float
        ``max(var - sigma**2, 0) / var`` over the body, in [0, 1]; NaN when the field of view has no
        air to measure the noise in, or the body has no variance.

    Examples
    --------
    A textured body (SD 40 on 200) under Rician noise of sigma 5 is mostly signal:

    >>> rng = np.random.default_rng(0)
    >>> img = np.abs(rng.normal(0, 5, (24, 24, 24)) + 1j * rng.normal(0, 5, (24, 24, 24)))
    >>> img[6:18, 6:18, 6:18] += 200 + rng.normal(0, 40, (12, 12, 12))
    >>> body = body_mask(img)
    >>> gain = img / np.median(img[body])
    >>> round(float(reliability(gain, gain, body)), 3)
    0.985
    """
    import SimpleITK as sitk

    near = sitk.BinaryDilate(sitk.GetImageFromArray(body.astype(np.uint8)), [3, 3, 3], sitk.sitkBall)
    air = sitk.GetArrayFromImage(near) == 0
    if air.sum() < 500:
        return float("nan")
    sigma = float(np.mean(gain_normalised[air])) / np.sqrt(np.pi / 2)
    var_total = float(np.var(normalised[body]))
    if var_total <= 0:
        return float("nan")
    return max(var_total - sigma**2, 0.0) / var_total


def _rotation(angles_rad) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_turn(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _euler_from(matrix3: np.ndarray, center, translation):
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform()
    tx.SetCenter(tuple(float(c) for c in center))
    tx.SetMatrix(tuple(float(v) for v in np.asarray(matrix3).ravel()), 1e-4)
    tx.SetTranslation(tuple(float(t) for t in translation))
    return tx


def _shrunk(image, target_voxels: int):
    """``image`` block-averaged to about ``target_voxels`` (each axis kept >= 8 voxels), and the factor."""
    import SimpleITK as sitk

    n = float(np.prod(image.GetSize()))
    f = max(1, int(round((n / target_voxels) ** (1 / 3))))
    if f == 1:
        return image, 1
    factors = [int(min(f, max(1, s // 8))) for s in image.GetSize()]
    return sitk.BinShrink(image, factors), f


def _shrunk_mask(mask, target_voxels: int):
    """A uint8 mask shrunk like :func:`_shrunk` (a block is inside when at least half of it is)."""
    import SimpleITK as sitk

    small, f = _shrunk(sitk.Cast(mask, sitk.sitkFloat32), target_voxels)
    return mask if f == 1 else sitk.Cast(small >= 0.5, sitk.sitkUInt8)


def _method(metric: str, fixed_mask, sampling: float, seed: int):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    if metric == "correlation":
        reg.SetMetricAsCorrelation()
    elif metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(32)
    else:
        reg.SetMetricAsMeanSquares()
    if sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


class _StopOptimiser(Exception):
    """Raised inside SimpleITK's iteration command to end an optimiser that ignores ``StopRegistration``."""


class _StageProgress:
    """:func:`align_mri`'s progress: each stage gets a share of [0, 1] by its weight; optimiser stages report
    every iteration. A callback that raises (the GUI's :class:`~napari_immunotrack.errors.Cancelled`) inside
    SimpleITK's optimiser cannot unwind through it: the optimiser is asked to stop at once
    (``StopRegistration``) and the exception is raised when it returns (:meth:`check`). L-BFGS-B (the
    B-spline stage) ignores that request, so there (``hard=True``) the command raises too: SimpleITK then
    ends ``Execute`` with a RuntimeError, and passes our exception to ``sys.excepthook`` first, which is
    filtered while that happens so that no traceback or error notification shows for a plain cancel."""

    def __init__(self, progress, weights: dict):
        self.progress = progress
        total = float(sum(weights.values()))
        self.span, done = {}, 0.0
        for name, weight in weights.items():
            self.span[name] = (done / total, (done + weight) / total)
            done += weight
        self.error: BaseException | None = None
        self._hook = None  # sys.excepthook to put back after a hard stop

    def at(self, stage: str, fraction: float = 0.0, message: str = "") -> None:
        """Report ``fraction`` of ``stage`` (may raise the callback's Cancelled)."""
        if self.progress is not None:
            lo, hi = self.span[stage]
            report(self.progress, lo + (hi - lo) * min(max(fraction, 0.0), 1.0), message or stage)

    def watch(
        self, reg, stage: str, iterations: int, part: tuple = (0.0, 1.0), message: str = "", hard: bool = False
    ) -> None:
        """Report ``reg``'s iterations (at most ``iterations``) as ``part`` of ``stage``, as
        "<message>: iteration <n>" (no command at all without a callback)."""
        if self.progress is None:
            return
        import SimpleITK as sitk

        def on_iteration():
            if self.error is not None:
                return
            i = reg.GetOptimizerIteration()
            done = min(i / max(iterations, 1), 1.0)
            try:
                self.at(stage, part[0] + (part[1] - part[0]) * done, f"{message or stage}: iteration {i + 1}")
            except BaseException as exc:  # noqa: BLE001 - raised again by check() once the optimiser returns
                self.error = exc
                reg.StopRegistration()
                if hard:
                    self._silence_stop()
                    raise _StopOptimiser() from None

        reg.AddCommand(sitk.sitkIterationEvent, on_iteration)

    def _silence_stop(self) -> None:
        import sys

        previous = sys.excepthook

        def hook(kind, value, tb):  # everything but our own stop goes on as before
            if not isinstance(value, _StopOptimiser):
                previous(kind, value, tb)

        self._hook = previous
        sys.excepthook = hook

    def check(self) -> None:
        """Raise what the callback raised during the last optimisation (a cancel)."""
        if self._hook is not None:
            import sys

            sys.excepthook, self._hook = self._hook, None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _optimise(reg, fixed, moving, tx, iterations: int, min_step: float, learning_rate: float, watch=None):
    """Regular-step gradient descent from ``tx`` (changed in place); ``watch=(tracker, stage, part, message)`` reports
    its iterations (see :class:`_StageProgress`). Returns (transform, metric, iterations)."""
    if watch is not None:
        tracker, stage, part, message = watch
        tracker.watch(reg, stage, iterations, part, message)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=min_step,
        numberOfIterations=int(iterations),
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        reg.Execute(fixed, moving)
    finally:
        if watch is not None:
            reg.RemoveAllCommands()  # the command refers back to reg: a cycle Python's collector cannot see
    if watch is not None:
        watch[0].check()
    return tx, float(reg.GetMetricValue()), int(reg.GetOptimizerIteration())


def _mask_image(mask: np.ndarray, like):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.CopyInformation(like)
    return img


# --------------------------------------------------------------------------- the alignment
def align_mri(
    fixed: Volume,
    moving: Volume,
    transform: str = "rigid",
    *,
    fixed_mask: np.ndarray | None = None,
    bias_correction: str = "local",
    local_sigma_mm: float = 2.0,
    search: bool = True,
    max_rotation_deg: float = 30.0,
    rotation_step_deg: float = 15.0,
    allow_flip: bool = False,
    n_starts: int = 3,
    bspline_spacing_mm: float = 4.0,
    precision_check: bool = False,
    samples: int = 60_000,
    seed: int = 1,
    progress=None,
) -> AlignmentResult:
    """Align the same animal's same-contrast MRI of another session (``moving``) to ``fixed``.

    Parameters
    ----------
    fixed, moving : Volume
        3D anatomical MRIs of one animal, same contrast, any grids, poses, gains and coil profiles.
    transform : {"rigid", "affine", "bspline"}
        "affine" adds 12 parameters after the rigid stage; "bspline" adds a regularised B-spline
        deformation (control points every ``bspline_spacing_mm``) after the rigid stage.
    fixed_mask : bool array on the fixed grid, optional
        Where the metric is computed (default: the body).
    bias_correction : {"local", "differential", "n4", "none"}
        "local" (default): the metric sees each image divided by its body's local mean
        (:func:`local_normalise`, ``local_sigma_mm``), which cancels smooth coil profiles;
        "differential": after the middle level, the smooth ratio of the two sessions' coil profiles is
        fitted (a quadratic in log intensity over the fixed body) and removed from the fixed image;
        "n4": N4 on each image first (:func:`correct_intensities`); "none": gain normalisation only.
    local_sigma_mm : float
        Width of the local mean of the "local" harmonisation.
    search : bool
        Orientation search over +-``max_rotation_deg`` in ``rotation_step_deg`` steps (and a 180 degree
        prone/supine turn about the long axis when ``allow_flip``). Off: start from the centres of mass.
    n_starts : int
        How many of the best search positions are optimised on the coarse level.
    precision_check : bool
        Restart the last level from two perturbed positions and report the spread (``precision_mm``).
    progress : callable, optional
        ``progress(fraction, message)`` (see :mod:`napari_immunotrack.progress`), called between the steps
        and at every iteration of each optimiser, so a callback that raises
        :class:`~napari_immunotrack.errors.Cancelled` stops the alignment within one iteration (a fraction of
        a second; the B-spline stage's iterations take longer). Nothing is returned then.

    Returns
    -------
    AlignmentResult

    Raises
    ------
    InputError
        Bad settings, an image that is not 3D or shows no body.
    Cancelled
        Raised by ``progress`` (the alignment stops at once).

    Examples
    --------
    >>> from napari_immunotrack.simulate.phantom import make_mouse
    >>> from napari_immunotrack.simulate import sessions as s
    >>> mouse = make_mouse(0)
    >>> a = s.session_mri(mouse, np.eye(4), voxel_mm=0.4, seed=1)
    >>> pose = s.pose_matrix((10, -5, 20), (2, -1, 1), center_mm=(1, -1, 4))
    >>> b = s.session_mri(mouse, pose, voxel_mm=0.4, gain=1.3, bias_strength=0.2, seed=2)
    >>> r = align_mri(a.volume, b.volume)
    >>> bool(s.target_registration_error(r.fixed_to_moving, np.eye(4), pose, [[1, -1, 4]])[0] < 0.2)
    True
    """
    import SimpleITK as sitk

    if transform not in ("rigid", "affine", "bspline"):
        raise InputError(f"transform={transform!r} must be 'rigid', 'affine' or 'bspline'.")
    t0 = time.perf_counter()
    stages: list = []
    if bias_correction not in ("local", "differential", "n4", "none"):
        raise InputError(f"bias_correction={bias_correction!r} must be 'local', 'differential', 'n4' or 'none'.")
    n4 = bias_correction == "n4"
    # shares of the whole by rough cost (benchmark pair); the B-spline stage dwarfs the rest
    weights = {"intensities": 0.15, "orientation search": 0.1, "coarse": 0.15, "middle": 0.2, "fine": 0.25}
    weights.update({"affine": 0.3} if transform == "affine" else {})
    weights.update({"bspline": 4.0} if transform == "bspline" else {})
    weights["checks"] = 0.05
    weights.update({"precision check": 0.3} if precision_check else {})
    track = _StageProgress(progress, weights)
    track.at("intensities", 0.0, "intensities: body masks")
    f_body = body_mask(np.asarray(fixed.numpy(), np.float32)) if fixed.data.ndim == 3 else None
    m_body = body_mask(np.asarray(moving.numpy(), np.float32)) if moving.data.ndim == 3 else None
    track.at("intensities", 0.3, "intensities: gain" + (" and N4 bias field" if n4 else ""))
    fixed_c, f_rec = correct_intensities(fixed, bias_correction=n4, gain_normalisation=True, body=f_body)
    moving_c, m_rec = correct_intensities(moving, bias_correction=n4, gain_normalisation=True, body=m_body)
    f_gain, m_gain = fixed_c.data, moving_c.data
    if bias_correction == "local":
        track.at("intensities", 0.6, "intensities: local normalisation")
        fixed_c = fixed_c.replace(data=local_normalise(fixed_c.data, fixed_c.spacing, local_sigma_mm, f_body))
        track.at("intensities", 0.8, "intensities: local normalisation")
        moving_c = moving_c.replace(data=local_normalise(moving_c.data, moving_c.spacing, local_sigma_mm, m_body))
    stages.append({"name": "intensities", "seconds": round(time.perf_counter() - t0, 3)})
    f_mask = f_body if fixed_mask is None else np.asarray(fixed_mask, bool)
    if f_mask.shape != f_body.shape or not f_mask.any():
        raise InputError("the fixed mask is empty or not on the fixed image's grid.")
    f_img = volume_to_sitk(fixed_c, sitk.sitkFloat32)
    m_img = volume_to_sitk(moving_c, sitk.sitkFloat32)
    f_mask_img = _mask_image(f_mask, f_img)

    # ---- initial translation from the body masks' centres of mass, rotation about the fixed centre
    c_f = _centroid_lps(f_img, f_body)
    c_m = _centroid_lps(m_img, m_body)

    coarse_f, _ = _shrunk(f_img, 12_000)
    coarse_m, _ = _shrunk(m_img, 12_000)
    coarse_mask = _shrunk_mask(f_mask_img, 12_000)
    coarse_f = sitk.SmoothingRecursiveGaussian(coarse_f, 0.5 * float(np.max(coarse_f.GetSpacing())))
    coarse_m = sitk.SmoothingRecursiveGaussian(coarse_m, 0.5 * float(np.max(coarse_m.GetSpacing())))

    def start(rot3):
        # the fixed centroid maps onto the moving centroid
        return _euler_from(rot3, c_f, c_m - c_f)

    axes: list = []

    def principal_axes():  # of the fixed body; computed once, when a half turn is scored
        if not axes:
            axes.extend(_principal_axes_lps(f_img, f_body))
        return axes

    candidates = [np.eye(3)]
    if search:
        steps = np.arange(-max_rotation_deg, max_rotation_deg + 1e-6, rotation_step_deg)
        candidates = [_rotation(np.deg2rad(a)) for a in itertools.product(steps, steps, steps)]
    if allow_flip:
        # prone <-> supine is a half turn about the animal's long axis; in a slab the longest axis of the
        # visible body need not be the animal's, so try a half turn about each principal axis
        base = list(candidates)
        for axis in principal_axes():
            turn = _axis_turn(axis, np.pi)
            candidates = candidates + [r @ turn for r in base]
    t1 = time.perf_counter()
    track.at("orientation search", 0.0, f"orientation search: {len(candidates)} starts")
    values = _search_scores(coarse_f, coarse_m, coarse_mask, candidates, c_f, c_m, seed)
    scored = list(zip(values, candidates))
    scored.sort(key=lambda x: x[0])
    flip_score = None
    if search and not allow_flip:
        # a prone/supine turn is not searched, but is it likely? score half turns on a grid twice as coarse
        coarse_steps = np.arange(-max_rotation_deg, max_rotation_deg + 1e-6, 2 * rotation_step_deg)
        turned = [
            _rotation(np.deg2rad(a)) @ _axis_turn(axis, np.pi)
            for axis in principal_axes()
            for a in itertools.product(coarse_steps, coarse_steps, coarse_steps)
        ]
        flip_score = float(min(_search_scores(coarse_f, coarse_m, coarse_mask, turned, c_f, c_m, seed)))
    stages.append(
        {"name": "orientation search", "candidates": len(candidates), "seconds": round(time.perf_counter() - t1, 3)}
    )

    # ---- optimise the best starts on the coarse level; keep the best
    t2 = time.perf_counter()
    optimised = []
    tried = scored[: max(1, n_starts)]
    for k, (_value, rot) in enumerate(tried):
        tx = start(rot)
        reg = _method("correlation", coarse_mask, 1.0, seed)
        track.at("coarse", k / len(tried), f"coarse level, start {k + 1} of {len(tried)}")
        tx, metric, its = _optimise(
            reg,
            coarse_f,
            coarse_m,
            tx,
            100,
            0.01 * float(np.min(coarse_f.GetSpacing())),
            COARSE_LR * float(np.max(coarse_f.GetSpacing())),
            watch=(track, "coarse", (k / len(tried), (k + 1) / len(tried)), f"coarse level, start {k + 1}"),
        )
        optimised.append((metric, tx))
    optimised.sort(key=lambda x: x[0])
    best = optimised[0]
    # another start that fits almost as well at a clearly different pose: the optimum is not unique
    corners = _box_corners_lps(f_img, f_body)  # the precision check uses them too
    best_pts = np.array([best[1].TransformPoint(tuple(p)) for p in corners])
    rival = None
    for metric, tx in optimised[1:]:
        pts_other = np.array([tx.TransformPoint(tuple(p)) for p in corners])
        far = float(np.linalg.norm(pts_other - best_pts, axis=1).max()) > 2.0 * float(np.max(coarse_f.GetSpacing()))
        if far and metric - best[0] < AMBIGUITY_MARGIN:
            rival = (metric, tx)
            break
    stages.append(
        {
            "name": "coarse",
            "starts": min(len(scored), n_starts),
            "metric": best[0],
            "seconds": round(time.perf_counter() - t2, 3),
        }
    )
    rigid = best[1]

    # ---- refine: middle then full resolution
    t3 = time.perf_counter()
    mid_f, mf = _shrunk(f_img, 150_000)
    mid_m, _ = _shrunk(m_img, 150_000)
    mid_mask = _shrunk_mask(f_mask_img, 150_000)
    mid_sampling = min(1.0, samples / float(np.prod(mid_f.GetSize())))
    reg = _method("correlation", mid_mask, mid_sampling, seed)
    track.at("middle", 0.0, "middle level")
    rigid, metric, its = _optimise(
        reg,
        mid_f,
        mid_m,
        rigid,
        MIDDLE_ITERATIONS,
        MIDDLE_MIN_STEP * float(np.min(mid_f.GetSpacing())),
        0.5 * float(np.max(mid_f.GetSpacing())),
        watch=(track, "middle", (0.0, 1.0), "middle level"),
    )
    stages.append(
        {"name": "middle", "metric": metric, "iterations": its, "seconds": round(time.perf_counter() - t3, 3)}
    )
    t4 = time.perf_counter()
    if bias_correction == "differential":
        f_img, ratio_range = _remove_differential_bias(f_img, m_img, f_body, rigid)
        f_rec["differential_bias_range"] = ratio_range
        stages.append({"name": "differential bias", "seconds": round(time.perf_counter() - t4, 3)})
        if mf > 1:  # the middle level sees the corrected image too
            reg = _method("correlation", mid_mask, mid_sampling, seed)
            mid_f = _shrunk(f_img, 150_000)[0]
    t4 = time.perf_counter()
    fine_sampling = min(1.0, samples / float(np.prod(f_img.GetSize())))
    fine_step = 0.25 * float(np.min(f_img.GetSpacing()))
    if mf > 1:
        reg = _method("correlation", f_mask_img, fine_sampling, seed)
        track.at("fine", 0.0, "full resolution")
        rigid, metric, its = _optimise(
            reg,
            f_img,
            m_img,
            rigid,
            40,
            0.02 * fine_step,
            fine_step,
            watch=(track, "fine", (0.0, 1.0), "full resolution"),
        )
        stages.append(
            {"name": "fine", "metric": metric, "iterations": its, "seconds": round(time.perf_counter() - t4, 3)}
        )
    linear = rigid
    if transform == "affine":
        t5 = time.perf_counter()
        aff = sitk.AffineTransform(3)
        aff.SetCenter(rigid.GetCenter())
        aff.SetMatrix(rigid.GetMatrix())
        aff.SetTranslation(rigid.GetTranslation())
        reg = _method("correlation", f_mask_img, fine_sampling, seed)
        track.at("affine", 0.0, "affine")
        linear, metric, its = _optimise(
            reg, f_img, m_img, aff, 100, 1e-3 * fine_step, fine_step, watch=(track, "affine", (0.0, 1.0), "affine")
        )
        stages.append(
            {"name": "affine", "metric": metric, "iterations": its, "seconds": round(time.perf_counter() - t5, 3)}
        )
    matrix = sitk_transform_to_matrix(linear)

    # ---- optional deformation
    deformable = None
    min_jac = 1.0
    if transform == "bspline":
        t6 = time.perf_counter()
        size_mm = np.array(f_img.GetSize()) * np.array(f_img.GetSpacing())
        mesh = [max(1, int(round(s / bspline_spacing_mm))) for s in size_mm]
        bsp = sitk.BSplineTransformInitializer(mid_f, mesh, 3)
        reg = _method("correlation", mid_mask, min(1.0, 20_000 / float(np.prod(mid_f.GetSize()))), seed)
        reg.SetMovingInitialTransform(linear)
        reg.SetInitialTransform(bsp, inPlace=True)
        reg.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=50,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=120,
            costFunctionConvergenceFactor=1e9,
        )
        track.at("bspline", 0.0, "B-spline deformation")
        track.watch(reg, "bspline", 50, message="B-spline deformation", hard=True)
        try:
            reg.Execute(mid_f, mid_m)
        except RuntimeError:
            track.check()  # a cancel ends L-BFGS-B through SimpleITK's RuntimeError: raise the cancel instead
            raise
        finally:
            reg.RemoveAllCommands()  # see _optimise
        track.check()
        deformable = bsp
        disp = sitk.TransformToDisplacementField(
            bsp, sitk.sitkVectorFloat64, mid_f.GetSize(), mid_f.GetOrigin(), mid_f.GetSpacing(), mid_f.GetDirection()
        )
        jac = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(disp))
        inside = sitk.GetArrayFromImage(mid_mask).astype(bool)
        min_jac = float(jac[inside].min()) if inside.any() else float(jac.min())
        metric = float(reg.GetMetricValue())
        stages.append(
            {
                "name": "bspline",
                "mesh": mesh,
                "metric": metric,
                "min_jacobian": round(min_jac, 4),
                "seconds": round(time.perf_counter() - t6, 3),
            }
        )

    # ---- quality checks
    track.at("checks", 0.0, "quality checks")
    voxel = float(np.min(fixed.spacing))
    total = _as_total(linear, deformable)
    moved_mask = sitk.Resample(_mask_image(m_body, m_img), f_img, total, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mm = sitk.GetArrayFromImage(moved_mask).astype(bool)
    dice = float(2 * (mm & f_body).sum() / max(1, mm.sum() + f_body.sum()))
    moved = sitk.GetArrayFromImage(sitk.Resample(m_img, f_img, total, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    both = f_mask & mm
    corr = float(np.corrcoef(sitk.GetArrayFromImage(f_img)[both], moved[both])[0, 1]) if both.sum() > 10 else 0.0
    corr = corr if np.isfinite(corr) else 0.0
    expected = float(np.sqrt(reliability(fixed_c.data, f_gain, f_body) * reliability(moving_c.data, m_gain, m_body)))
    if rival is not None:
        # compare on the final level: the rival may lose once refined
        reg = _method("correlation", f_mask_img, fine_sampling, seed)
        reg.SetInitialTransform(rival[1], inPlace=False)
        try:
            rival_value = -float(reg.MetricEvaluate(f_img, m_img))
        except RuntimeError:
            rival_value = 0.0
        if rival_value < corr - AMBIGUITY_MARGIN:
            rival = None
    precision = 0.0
    if precision_check:
        t7 = time.perf_counter()
        ref_pts = np.array([linear.TransformPoint(tuple(p)) for p in corners])
        spread = 0.0
        rng = np.random.default_rng(seed)
        for k in range(2):
            track.at("precision check", k / 2, f"precision check, restart {k + 1} of 2")
            tx = sitk.Euler3DTransform(rigid)
            params = np.array(tx.GetParameters())
            params[:3] += np.deg2rad(rng.choice([-1, 1], 3) * 0.5)
            params[3:] += rng.choice([-1, 1], 3) * voxel
            tx.SetParameters(tuple(params))
            # restarted on the last level, as the result was found
            reg = _method("correlation", f_mask_img, fine_sampling, seed + 1)
            tx, _, _ = _optimise(
                reg,
                f_img,
                m_img,
                tx,
                60,
                0.02 * fine_step,
                fine_step,
                watch=(track, "precision check", (k / 2, (k + 1) / 2), f"precision check, restart {k + 1}"),
            )
            pts = np.array([tx.TransformPoint(tuple(p)) for p in corners])
            spread = max(spread, float(np.linalg.norm(pts - ref_pts, axis=1).max()))
        precision = spread
        stages.append({"name": "precision check", "seconds": round(time.perf_counter() - t7, 3)})
    problems = []
    if corr < MIN_CORRELATION:
        problems.append(
            f"the aligned images correlate poorly ({corr:.2f} < {MIN_CORRELATION}): another body "
            "region, another contrast, a prone/supine turn (--allow-flip) or a different animal?"
        )
    if flip_score is not None and flip_score < float(scored[0][0]):
        problems.append(
            "a prone/supine half turn fits the orientation search better than any unturned pose; "
            "align with the half turns searched (allow_flip, --allow-flip)"
        )
    if rival is not None:
        problems.append(
            "two clearly different poses fit almost equally well (a near-symmetric field of view?); "
            "check the result, or give a mask of distinctive anatomy"
        )
    if dice < MIN_BODY_DICE:
        problems.append(f"the body outlines overlap only {dice:.0%} after alignment (< {MIN_BODY_DICE:.0%})")
    if precision > MAX_PRECISION_VOXELS * voxel:
        problems.append(
            f"restarts from nearby positions disagree by {precision:.2f} mm "
            f"(> {MAX_PRECISION_VOXELS:g} voxel): the optimum is poorly defined"
        )
    if min_jac <= 0:
        problems.append(
            f"the deformation folds (smallest Jacobian determinant {min_jac:.2f} <= 0); "
            "use a coarser B-spline spacing or a rigid/affine transform"
        )
    for p in problems:
        warnings.warn(
            f"session alignment of {moving.name or 'moving'} to {fixed.name or 'fixed'} is doubtful: {p}.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    params = {
        "transform": transform,
        "bias_correction": bias_correction,
        "gain_normalisation": True,  # always: it makes the bias and noise figures comparable
        "search": search,
        "max_rotation_deg": max_rotation_deg,
        "rotation_step_deg": rotation_step_deg,
        "allow_flip": allow_flip,
        "n_starts": n_starts,
        "bspline_spacing_mm": bspline_spacing_mm,
        "metric": "normalised correlation",
        "fixed_intensities": f_rec,
        "moving_intensities": m_rec,
    }
    params["expected_correlation"] = round(expected, 4) if np.isfinite(expected) else None
    track.at(list(weights)[-1], 1.0, f"aligned (correlation {corr:.3f})")
    return AlignmentResult(
        matrix,
        transform,
        corr,
        dice,
        precision,
        min_jac,
        bool(problems),
        problems,
        time.perf_counter() - t0,
        stages,
        params,
        deformable,
    )


def local_normalise(data: np.ndarray, spacing_mm, sigma_mm: float = 2.0, body: np.ndarray | None = None) -> np.ndarray:
    """Each body voxel divided by the body's Gaussian-weighted local mean (air set to 0).

    A smooth coil profile (wavelength of centimetres) cancels in the ratio, while tissue
    boundaries stay; the filter is isotropic, so it commutes with the animal's rotation and two
    sessions' normalised images stay comparable (docs/methods/session-alignment.md#session-alignment).
    Only body voxels enter the local mean (a normalised convolution), so the air does not darken the rim.

    Parameters
    ----------
    data : ndarray
        A 3D image (any unit).
    spacing_mm : sequence of 3 float
        Voxel size along the array's axes, mm.
    sigma_mm : float, default 2.0
        Standard deviation of the Gaussian local mean, mm.
    body : bool ndarray, optional
        The body mask (default :func:`body_mask` of ``data``).

    Returns
    -------
    ndarray of float32
        Dimensionless: about 1 in uniform tissue; 0 outside the body.

    Examples
    --------
    A cube seen through a gain that rises 30 % from one side to the other:

    >>> img = np.zeros((24, 24, 24), np.float32); img[6:18, 6:18, 6:18] = 1
    >>> img *= np.linspace(0.7, 1.3, 24, dtype=np.float32)[:, None, None]
    >>> out = local_normalise(img, (0.5, 0.5, 0.5), sigma_mm=2.0, body=img > 0)
    >>> np.round(img[[7, 16], 12, 12], 2), np.round(out[[7, 16], 12, 12], 2), float(out[0, 0, 0])
    (array([0.88, 1.12], dtype=float32), array([0.94, 1.06], dtype=float32), 0.0)
    """
    import SimpleITK as sitk

    data = np.asarray(data, np.float32)
    body = body_mask(data) if body is None else np.asarray(body, bool)

    spacing_xyz = np.asarray(spacing_mm, float)[::-1]
    # the local mean varies over sigma (10 voxels at 0.2 mm): it is filtered on a grid binned until a voxel is
    # about sigma/5 and interpolated back, half the cost of the full grid, within 0.05 % of it on average (about
    # 1 % at most, at the rim); the binning and the linear interpolation blur too, so the filter is narrowed
    factors = [max(1, min(int(sigma_mm / (5 * s) + 1e-6), n // 8)) for s, n in zip(spacing_xyz, data.shape[::-1])]

    def smooth(arr):  # recursive (IIR) Gaussian: cost independent of sigma, isotropic in mm
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing(tuple(float(v) for v in spacing_xyz))
        if max(factors) == 1:
            return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, float(sigma_mm)))
        small = sitk.BinShrink(img, factors)
        h = np.array(small.GetSpacing())
        narrowed = np.sqrt(np.maximum(sigma_mm**2 - h**2 / 4, (0.5 * h) ** 2))
        small = sitk.SmoothingRecursiveGaussian(small, [float(v) for v in narrowed])
        back = sitk.Resample(small, img, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
        return sitk.GetArrayFromImage(back)

    num = smooth(np.where(body, data, 0))
    den = smooth(body)
    out = np.zeros_like(data)
    ok = body & (den > 1e-3)
    out[ok] = data[ok] * den[ok] / np.maximum(num[ok], 1e-6)
    return out


def _poly_terms(shape, step: int = 1):
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32)[::step] for n in shape], indexing="ij")
    return [np.ones_like(axes[0])] + list(axes) + [a * b for i, a in enumerate(axes) for b in axes[i:]]


def _remove_differential_bias(f_img, m_img, f_body: np.ndarray, transform):
    """Fit log(moving on fixed / fixed) inside the (eroded) fixed body by a quadratic and put it on the fixed.

    Two sessions of one animal differ, after alignment, by the ratio of their coil profiles (smooth) plus
    noise; removing that ratio makes the intensities comparable (the differential bias correction of
    longitudinal MRI). Returns the corrected fixed image and the fitted ratio's range inside the body.
    """
    import SimpleITK as sitk
    from scipy import ndimage

    moved = sitk.GetArrayFromImage(sitk.Resample(m_img, f_img, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    fixed = sitk.GetArrayFromImage(f_img)
    inner = ndimage.binary_erosion(f_body, iterations=2)
    ok = inner & (moved > 0.05) & (fixed > 0.05)
    step = max(1, int(round((ok.size / 200_000) ** (1 / 3))))
    sub = (slice(None, None, step),) * 3
    oks = ok[sub]
    if oks.sum() < 100:
        return f_img, [1.0, 1.0]
    ratio = np.log(moved[sub][oks] / fixed[sub][oks])
    terms = _poly_terms(fixed.shape, step)
    design = np.stack([t[oks] for t in terms], 1).astype(np.float64)
    # robust to the few voxels that differ for real (cells arrived): two passes, trimming outliers
    coef, *_ = np.linalg.lstsq(design, ratio, rcond=None)
    resid = ratio - design @ coef
    keep = np.abs(resid) < 2.5 * 1.4826 * np.median(np.abs(resid - np.median(resid)))
    coef, *_ = np.linalg.lstsq(design[keep], ratio[keep], rcond=None)
    field = sum(c * t for c, t in zip(coef.astype(np.float32), _poly_terms(fixed.shape)))
    field = np.exp(field).astype(np.float32)
    out = sitk.GetImageFromArray(fixed * field)
    out.CopyInformation(f_img)
    inside = field[f_body]
    return out, [round(float(inside.min()), 4), round(float(inside.max()), 4)]


def _trilinear(array: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of a 3D array at continuous indices ``coords`` (3, N), 0 outside (NumPy only)."""
    shape = np.array(array.shape)
    pts = np.asarray(coords, np.float64).T
    inside = np.all((pts >= 0) & (pts <= shape - 1), axis=1)
    pts = np.clip(pts, 0, shape - 1)
    base = np.minimum(pts.astype(np.int64), np.maximum(shape - 2, 0))
    frac = (pts - base).astype(np.float32)
    flat = np.asarray(array, np.float32).ravel()
    ny, nx = array.shape[1], array.shape[2]
    start = (base[:, 0] * ny + base[:, 1]) * nx + base[:, 2]
    out = np.zeros(len(pts), np.float32)
    for dz in (0, 1):
        wz = frac[:, 0] if dz else 1 - frac[:, 0]
        for dy in (0, 1):
            w = wz * (frac[:, 1] if dy else 1 - frac[:, 1])
            row = start + (dz * ny + dy) * nx
            lo = flat[row]
            out += w * (lo + frac[:, 2] * (flat[row + 1] - lo))
    return np.where(inside, out, np.float32(0.0))


def _search_scores(coarse_f, coarse_m, coarse_mask, rotations, c_f, c_m, seed: int, n_points: int = 4000):
    """Negative normalised correlation (lower is better) of each start: rotation about the fixed body
    centre with the centres of mass matched. Vectorised over all starts (one interpolation call)."""
    import SimpleITK as sitk

    f_arr = sitk.GetArrayFromImage(coarse_f)
    m_arr = sitk.GetArrayFromImage(coarse_m)
    mask = sitk.GetArrayFromImage(coarse_mask).astype(bool)
    idx = np.argwhere(mask)
    if len(idx) > n_points:
        idx = idx[np.random.default_rng(seed).choice(len(idx), n_points, replace=False)]
    f_vals = f_arr[tuple(idx.T)].astype(np.float64)
    f_vals = (f_vals - f_vals.mean()) / max(float(f_vals.std()), 1e-9)
    pts = np.array(
        [coarse_f.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in p[::-1])) for p in idx[:1]]
    )  # warm-up; the matrix form below does the rest
    direction = np.array(coarse_f.GetDirection()).reshape(3, 3) * np.array(coarse_f.GetSpacing())
    pts = idx[:, ::-1] @ direction.T + np.array(coarse_f.GetOrigin())
    m_dir = np.array(coarse_m.GetDirection()).reshape(3, 3) * np.array(coarse_m.GetSpacing())
    m_inv = np.linalg.inv(m_dir)
    m_origin = np.array(coarse_m.GetOrigin())
    rel = pts - c_f
    coords = []
    for rot in rotations:
        q = rel @ np.asarray(rot).T + c_m
        coords.append(((q - m_origin) @ m_inv.T)[:, ::-1])  # sitk x, y, z -> array z, y, x
    coords = np.concatenate(coords).T
    vals = _trilinear(m_arr, coords).reshape(len(rotations), -1)
    vals = vals - vals.mean(axis=1, keepdims=True)
    norm = np.maximum(np.linalg.norm(vals, axis=1), 1e-9)
    return list(-(vals @ f_vals) / (norm * np.sqrt(len(f_vals))))


def _as_total(linear, deformable):
    import SimpleITK as sitk

    if deformable is None:
        return linear
    total = sitk.CompositeTransform(3)
    total.AddTransform(linear)
    total.AddTransform(deformable)
    return total


def _box_corners_lps(image, mask: np.ndarray) -> np.ndarray:
    spans = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    lo, hi = np.array([s[0] for s in spans])[::-1], np.array([s[-1] for s in spans])[::-1]
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in p)) for p in corners])


# --------------------------------------------------------------------------- a whole study
#: Anatomical contrasts tried for session alignment, in order of preference.
ALIGN_CONTRASTS = ("T2w", "T1w", "T2starw", "MR")


@dataclass
class SessionAlignment:
    """What :func:`align_study` did for one session."""

    subject: str
    session: str
    reference: str
    status: str  # "reference", "aligned", "reused", "doubtful", "failed"
    path: str | None = None
    message: str = ""
    result: AlignmentResult | None = None


def session_transform_name(subject: str, session: str, reference: str) -> str:
    """File name of a session's alignment to the reference session (``from-anat_to-ses<ref>``).

    Parameters
    ----------
    subject : str
        Subject label, without ``sub-``.
    session : str
        Label of the aligned session, without ``ses-``.
    reference : str
        Label of the reference session; only its letters and digits are kept.

    Returns
    -------
    str
        ``sub-<subject>_ses-<session>_from-anat_to-ses<reference>.tfm``, the name :func:`align_study` saves
        in the session's ``xfm`` folder.

    Examples
    --------
    >>> session_transform_name("01", "day3", "day0")
    'sub-01_ses-day3_from-anat_to-sesday0.tfm'
    >>> session_transform_name("01", "day3", "day-0")
    'sub-01_ses-day3_from-anat_to-sesday0.tfm'
    """
    ref = "ses" + "".join(ch for ch in reference if ch.isalnum())
    return f"sub-{subject}_ses-{session}_from-anat_to-{ref}.tfm"


def _pick_reference(study, subject: str, reference: str | None) -> str:
    sessions = study.sessions(subject)
    if reference:
        name = reference[4:] if reference.startswith("ses-") else reference
        if name not in sessions:
            raise InputError(
                f"subject {subject} has no session {reference!r} (it has {', '.join(sessions)}); "
                "give one of those with --reference."
            )
        return name
    pre = [s for s in sessions if any(f.phase == "pre" for f in study.session_files(subject, s))]
    return pre[0] if pre else sessions[0]


def _anatomy(study, subject: str, session: str, contrast: str | None):
    files = [f for f in study.session_files(subject, session) if not f.is_labels]
    roles = (contrast,) if contrast else ALIGN_CONTRASTS
    for role in roles:
        hit = [f for f in files if f.role == role]
        if hit:
            return hit[0]
    return None


def align_study(
    root,
    *,
    reference: str | None = None,
    subject: str | None = None,
    contrast: str | None = None,
    transform: str = "rigid",
    allow_flip: bool = False,
    overwrite: bool = False,
    force: bool = False,
    progress=None,
) -> list[SessionAlignment]:
    """Align every session's anatomical MRI to a reference session and save the transforms in the study.

    Each session gets ``xfm/sub-<S>_ses-<T>_from-anat_to-ses<REF>.tfm`` (ITK text: a reference-session
    world point -> the same anatomy in this session's world; other modalities of the session follow
    their own ``from-<modality>_to-anat`` transform, composed with this one) and its provenance
    sidecar. A transform already there whose inputs hash the same is reused. A session that cannot
    be aligned is reported and skipped; the others are still done.

    Parameters
    ----------
    root : path
        The study folder (BIDS-like or a scanner export; see :mod:`napari_immunotrack.study`).
    reference : str, optional
        Reference session (``day0`` or ``ses-day0``); default the first session holding a pre-injection
        file, else the first session.
    subject : str, optional
        Only this subject.
    contrast : str, optional
        The MRI role to align (T2w, T1w, T2starw, MR). Default: in each session separately, the first of
        :data:`ALIGN_CONTRASTS` it has, so two sessions can be aligned across contrasts (normalised
        correlation handles that poorly: give ``contrast`` when the sessions differ).
    transform : {"rigid", "affine", "bspline"}, default "rigid"
        See :func:`align_mri`; the B-spline part is saved beside the linear file (``_desc-bspline.tfm``).
    allow_flip : bool, default False
        Also search a prone/supine half turn (tried anyway when the alignment without it is doubtful).
    overwrite : bool, default False
        Recompute and replace existing transforms.
    force : bool, default False
        Save doubtful alignments too (with their warnings in the provenance).
    progress : callable, optional
        Called as ``progress(fraction, text)`` before each session, at every iteration of its alignment (see
        :func:`align_mri`) and at the end; a :class:`~napari_immunotrack.errors.Cancelled` it raises stops the
        study there (sessions already saved stay; nothing is written for the one being aligned).

    Returns
    -------
    list of SessionAlignment
        One per session of each subject, reference sessions included, with ``status`` "reference",
        "aligned", "reused", "doubtful" (not saved), "doubtful-saved" or "failed" and a ``message``.

    Raises
    ------
    InputError
        When the study has no such subject, or the reference session does not exist.

    Examples
    --------
    A session whose MRI shows no body is reported, not raised:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_immunotrack.io import save_volume
    >>> rng = np.random.default_rng(0)
    >>> body = np.abs(rng.normal(0, 5, (16, 16, 16)) + 1j * rng.normal(0, 5, (16, 16, 16))).astype(np.float32)
    >>> body[4:12, 4:12, 4:12] += 100
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day, image in ((0, body), (3, np.zeros_like(body))):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = save_volume(Volume(image, np.eye(4), "MR"), anat / f"sub-01_ses-day{day}_T2w.nii.gz")
    ...     done = align_study(tmp)
    >>> [(a.session, a.status) for a in done]
    [('day0', 'reference'), ('day3', 'failed')]
    >>> done[1].message
    "sub-01 ses-day3: sub-01_ses-day3_T2w shows no body (an empty or constant image); give the session's anatomical MRI."
    """
    import SimpleITK as sitk

    from . import provenance
    from .io import load_volume
    from .io.transforms import write_transform
    from .outputs import atomic_output, write_sidecar
    from .study import open_study

    study = open_study(root)
    subjects = [subject] if subject else study.subjects()
    if subject and subject not in study.subjects():
        raise InputError(f"{root} has no subject {subject!r} (it has {', '.join(study.subjects())}).")
    out: list[SessionAlignment] = []
    loaded: dict = {}  # the reference MRI being aligned to, read once
    jobs = []
    for sub in subjects:
        ref = _pick_reference(study, sub, reference)
        for ses in study.sessions(sub):
            jobs.append((sub, ses, ref))
    for n, (sub, ses, ref) in enumerate(jobs):
        if progress is not None:
            progress(n / max(len(jobs), 1), f"sub-{sub} ses-{ses}")
        if ses == ref:
            out.append(SessionAlignment(sub, ses, ref, "reference"))
            continue
        ref_file = _anatomy(study, sub, ref, contrast)
        ses_file = _anatomy(study, sub, ses, contrast)
        if ref_file is None or ses_file is None:
            missing = ref if ref_file is None else ses
            out.append(
                SessionAlignment(
                    sub,
                    ses,
                    ref,
                    "failed",
                    message=(
                        f"sub-{sub} ses-{ses}: no {contrast or 'anatomical'} MRI in session {missing} to align with; "
                        f"add one (or choose another with --contrast)"
                    ),
                )
            )
            continue
        session_dir = Path(ses_file.session_dir or Path(ses_file.path).parent)
        path = session_dir / "xfm" / session_transform_name(sub, ses, ref)
        inputs = {"fixed": str(ref_file.path), "moving": str(ses_file.path)}
        if path.exists() and not overwrite:
            if _same_inputs(path, inputs, transform):
                problem = _unreadable(path, transform)
                if problem:
                    out.append(
                        SessionAlignment(
                            sub,
                            ses,
                            ref,
                            "failed",
                            str(path),
                            f"sub-{sub} ses-{ses}: the saved alignment {path.name} cannot be read ({problem}); "
                            "rerun with --overwrite to recompute it",
                        )
                    )
                    continue
                out.append(SessionAlignment(sub, ses, ref, "reused", str(path)))
                continue
            out.append(
                SessionAlignment(
                    sub,
                    ses,
                    ref,
                    "failed",
                    str(path),
                    (
                        f"sub-{sub} ses-{ses}: {path.name} exists but was made from other images or settings; "
                        "rerun with --overwrite to replace it"
                    ),
                )
            )
            continue
        try:
            if str(ref_file.path) not in loaded:  # every session of a subject is aligned to this one: read it once
                loaded.clear()
                loaded[str(ref_file.path)] = load_volume(ref_file.path)
            fixed = loaded[str(ref_file.path)]
            moving = load_volume(ses_file.path)
            other_animal = _other_animal(fixed, moving)
            if other_animal:
                raise InputError(
                    f"its MRI is of another animal than ses-{ref}'s ({other_animal}); put this animal's scan in "
                    "the session, or give the scan its own subject folder"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImmunotrackWarning)
                share = 1.0 / max(len(jobs), 1)  # of the whole; the half-turn retry gets the last fifth
                first = scaled(progress, n * share, (n + 0.8) * share)
                result = align_mri(fixed, moving, transform, allow_flip=allow_flip, progress=first)
                if result.doubtful and not allow_flip:  # a prone/supine change looks like this: try the half turns
                    again = scaled(progress, (n + 0.8) * share, (n + 1) * share)
                    flipped = align_mri(fixed, moving, transform, allow_flip=True, progress=again)
                    result = keep_after_half_turn_retry(result, flipped)
        except InputError as exc:
            out.append(SessionAlignment(sub, ses, ref, "failed", message=f"sub-{sub} ses-{ses}: {exc}"))
            continue
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            # e.g. SimpleITK's "all samples map outside the moving image": the images share no anatomy
            reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
            out.append(
                SessionAlignment(
                    sub,
                    ses,
                    ref,
                    "failed",
                    message=(
                        f"sub-{sub} ses-{ses}: could not be aligned to ses-{ref} ({reason}); check that both MRIs "
                        "show the same body region of the same animal, or register them by hand (immunotrack "
                        "register) and save the transform as " + path.name
                    ),
                )
            )
            continue
        if result.doubtful and not force:
            out.append(
                SessionAlignment(
                    sub,
                    ses,
                    ref,
                    "doubtful",
                    None,
                    (
                        f"sub-{sub} ses-{ses}: alignment to ses-{ref} is doubtful ({'; '.join(result.warnings)}); "
                        "nothing saved: check both images are the same animal and contrast, or save it anyway with "
                        "--force"
                    ),
                    result,
                )
            )
            continue
        record = provenance.record(
            "align", inputs=inputs, parameters=result.parameters, warnings=result.warnings, result=result.to_dict()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_transform(path, result.fixed_to_moving, overwrite=True, provenance=record)
        if result.deformable is not None:
            bpath = path.with_name(path.name[:-4] + "_desc-bspline.tfm")
            with atomic_output(bpath, True) as tmp:
                sitk.WriteTransform(result.deformable, str(tmp))
                write_sidecar(bpath, record, written=tmp)
        out.append(
            SessionAlignment(
                sub,
                ses,
                ref,
                "doubtful-saved" if result.doubtful else "aligned",
                str(path),
                "; ".join(result.warnings),
                result,
            )
        )
    if progress is not None:
        progress(1.0, "done")
    return out


#: Header fields naming the animal (DICOM PatientID, Bruker/Inveon subject ids as the readers store them).
ANIMAL_ID_KEYS = ("PatientID", "SubjectID", "subject_id", "AnimalID")


def _other_animal(a: Volume, b: Volume) -> str:
    """'X vs Y' when both images name their animal and the names differ; '' otherwise."""
    for key in ANIMAL_ID_KEYS:
        x, y = (a.metadata or {}).get(key), (b.metadata or {}).get(key)
        if x and y and str(x).strip() != str(y).strip():
            return f"{key} {str(y).strip()!r} vs {str(x).strip()!r}"
    return ""


def _unreadable(path: Path, transform: str) -> str:
    """Why a saved session transform (and its B-spline part) cannot be used; '' when it can."""
    import json

    import SimpleITK as sitk

    from .io.transforms import read_transform
    from .outputs import sidecar_path
    from .provenance import sha256_path

    try:
        # the file as written: its provenance records its hash (a damaged file may still parse, e.g. as identity)
        written = json.loads(sidecar_path(path).read_text()).get("output_sha256")
        if written and written != sha256_path(path):
            return "changed or damaged since it was written: its content no longer matches its provenance record"
        matrix = read_transform(path)
        if not (np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:3, :3])) > 1e-6):
            return "not an invertible map"
        if transform == "bspline":
            sitk.ReadTransform(str(path.with_name(path.name[:-4] + "_desc-bspline.tfm")))
    except (InputError, RuntimeError, ValueError, OSError) as exc:
        return str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return ""


def _same_inputs(path: Path, inputs: dict, transform: str) -> bool:
    """True when the saved transform's provenance names the same input files with the same content."""
    import json

    from .outputs import sidecar_path
    from .provenance import sha256_path

    side = sidecar_path(path)
    if not side.exists():
        return False
    try:
        rec = json.loads(side.read_text())
        saved = rec.get("inputs", {})
        if rec.get("parameters", {}).get("transform") != transform:
            return False
        for role, file in inputs.items():
            entry = saved.get(role, {})
            if not entry.get("sha256") or entry.get("sha256") != sha256_path(file):
                return False
        return True
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- baselines
def keep_after_half_turn_retry(first: AlignmentResult, retry: AlignmentResult) -> AlignmentResult:
    """The alignment to keep when a doubtful one was retried with the prone/supine half turns searched.

    The retry searched every start the first run did and the half turns too, and was optimised and checked
    the same way: when its checks pass it is kept even if it settled on the first run's pose (its
    correlation need not be higher: on a small, near-symmetric field of view the half turn only fitted the
    coarse search better, and that was all the first run doubted). When both are doubtful, the better
    correlated one is kept (and still reported as doubtful).

    Parameters
    ----------
    first : AlignmentResult
        The doubtful alignment without the half turns.
    retry : AlignmentResult
        The same alignment with ``allow_flip=True``.

    Returns
    -------
    AlignmentResult
        ``retry`` when it is not doubtful or correlates better, else ``first``.

    Examples
    --------
    >>> def result(correlation, doubtful):
    ...     return AlignmentResult(np.eye(4), "rigid", correlation, 0.95, 0.01, doubtful=doubtful)
    >>> first = result(0.84, True)  # "a prone/supine half turn fits the orientation search better"
    >>> retry = result(0.79, False)  # the same pose, its checks passed
    >>> keep_after_half_turn_retry(first, retry) is retry, keep_after_half_turn_retry(first, result(0.5, True)) is first
    (True, True)
    """
    if retry.doubtful and first.doubtful:
        return retry if retry.correlation > first.correlation else first
    return retry if not retry.doubtful else first


def baseline_alignment(post: Volume, baseline: Volume, *, allow_flip: bool = False) -> tuple:
    """The map from post world to baseline world for a pre-injection baseline of the same animal.

    Identity (no registration) when the baseline already shares the post image's grid; otherwise a
    session alignment with the post image fixed (:func:`align_mri`, with the precision check), so the
    baseline can be carried onto the post grid (``baseline.resample_to(post, transform=matrix)``).
    When the alignment is doubtful without ``allow_flip``, the prone/supine half turns are tried too and
    the better-correlated result kept (docs/methods/session-alignment.md#baselines).

    Parameters
    ----------
    post : Volume
        The post-injection anatomical MRI (the fixed image).
    baseline : Volume
        The pre-injection MRI of the same animal and contrast (the moving image).
    allow_flip : bool, default False
        Search the prone/supine half turns from the start.

    Returns
    -------
    (matrix, record)
        ``matrix`` (4x4, post world RAS mm -> baseline world) and a JSON-ready record: ``method``
        ("same grid" or the alignment's record), ``tolerance_voxels``: how far (in post voxels) a
        baseline comparison should look around each voxel to survive the residual misalignment
        (at least 1; the precision estimate rounded up or the misalignment measured by block matching,
        docs/methods/baseline-residual.md).

    Raises
    ------
    InputError
        When the alignment is doubtful (the images are then not the same animal and region, or need
        a manual transform).

    Examples
    --------
    >>> v = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    >>> matrix, record = baseline_alignment(v, v)
    >>> np.allclose(matrix, np.eye(4)), record
    (True, {'method': 'same grid (no registration)', 'tolerance_voxels': 1})
    """
    if baseline.same_grid(post):
        return np.eye(4), {"method": "same grid (no registration)", "tolerance_voxels": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        result = align_mri(post, baseline, precision_check=True, allow_flip=allow_flip)
        if result.doubtful and not allow_flip:
            flipped = align_mri(post, baseline, precision_check=True, allow_flip=True)
            result = keep_after_half_turn_retry(result, flipped)
    if result.doubtful:
        raise InputError(
            f"the baseline {baseline.name or ''} could not be aligned to the post image "
            f"({'; '.join(result.warnings)}); give its transform with --baseline-transform FILE "
            "(e.g. from immunotrack align or register)."
        )
    from .analysis.residual import baseline_tolerance  # precision and the measured residual misalignment

    tolerance, residual = baseline_tolerance(post, baseline, result.fixed_to_moving, result.precision_mm)
    record = dict(result.to_dict(), tolerance_voxels=tolerance, baseline_tolerance=residual)
    return result.fixed_to_moving, record


def saved_alignment_files(session_dir) -> list[tuple[str, Path]]:
    """The session alignments saved in a session folder: ``(reference tag, path)`` pairs, sorted by name.

    The one reader of the file names :func:`align_study` writes (``<session>/xfm/*_from-anat_to-ses<REF>.tfm``);
    the B-spline parts (``_desc-bspline.tfm``) are left out. The tag is the ``ses<REF>`` of the name
    (alphanumerics only, as :func:`session_transform_name` writes it).

    Parameters
    ----------
    session_dir : str or Path
        A session folder (``sub-01/ses-day3``); it need not exist.

    Returns
    -------
    list of (str, Path)

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     xfm = Path(tmp) / "ses-day3" / "xfm"
    ...     xfm.mkdir(parents=True)
    ...     for name in ("sub-01_ses-day3_from-anat_to-sesday0.tfm", "sub-01_ses-day3_from-anat_to-sesday0_desc-bspline.tfm"):
    ...         _ = (xfm / name).write_text("")
    ...     [(tag, p.name) for tag, p in saved_alignment_files(xfm.parent)]
    [('sesday0', 'sub-01_ses-day3_from-anat_to-sesday0.tfm')]
    """
    folder = Path(session_dir) / "xfm"
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.glob("*_from-anat_to-ses*.tfm") if "_desc-" not in p.name)
    return [(p.name[: -len(".tfm")].rsplit("_to-", 1)[1], p) for p in paths]


def saved_session_transform(image_path) -> tuple:
    """The saved session alignment of the session holding ``image_path`` (``<session>/<datatype>/<file>``).

    Parameters
    ----------
    image_path : str or Path
        A file inside a session folder, two levels down (``ses-day3/anat/file.nii.gz``); it need not exist.

    Returns
    -------
    (matrix, reference) or (None, None)
        ``matrix``: the reference session's world -> this session's world (as :func:`align_study` saved it in
        ``<session>/xfm/*_from-anat_to-ses<REF>.tfm``), and the reference's ``ses-`` name. A session that is
        itself a reference (another session's file names it) gets the identity. ``(None, None)`` when the
        session has no saved alignment and is nobody's reference. A B-spline part is not read.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_immunotrack.io.transforms import write_transform
    >>> shift = np.eye(4); shift[:3, 3] = [1.0, -2.0, 0.5]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sub = Path(tmp) / "sub-01"
    ...     (sub / "ses-day0" / "anat").mkdir(parents=True)
    ...     (sub / "ses-day3" / "xfm").mkdir(parents=True)
    ...     _ = write_transform(sub / "ses-day3" / "xfm" / session_transform_name("01", "day3", "day0"), shift)
    ...     day3 = saved_session_transform(sub / "ses-day3" / "anat" / "t2.nii.gz")
    ...     day0 = saved_session_transform(sub / "ses-day0" / "anat" / "t2.nii.gz")
    ...     day7 = saved_session_transform(sub / "ses-day7" / "anat" / "t2.nii.gz")
    >>> np.round(day3[0][:3, 3], 3), day3[1]
    (array([ 1. , -2. ,  0.5]), 'sesday0')
    >>> np.allclose(day0[0], np.eye(4)), day0[1], day7
    (True, 'sesday0', (None, None))
    """
    from .io.transforms import read_transform

    session_dir = Path(image_path).parent.parent
    found = saved_alignment_files(session_dir)
    if found:
        ref, path = found[0]
        return read_transform(path), ref
    own = "ses" + "".join(ch for ch in session_dir.name[4:] if ch.isalnum())
    siblings = session_dir.parent.glob(f"ses-*/xfm/*_from-anat_to-{own}.tfm")
    if any(True for _ in siblings):
        return np.eye(4), own
    return None, None


def baseline_transform_between(post_path, baseline_path, post: Volume, baseline: Volume) -> tuple:
    """Post world -> baseline world for a baseline of another session of the same animal, and the baseline
    tolerance (voxels) it calls for.

    The sessions' saved alignments (:func:`align_study`) are chained when both sessions have one to the same
    reference (``T_baseline @ inv(T_post)``, tolerance from the residual it leaves, docs/methods/baseline-residual.md);
    otherwise a baseline on another grid is aligned now (:func:`baseline_alignment` and its tolerance); a baseline
    on the post image's grid needs nothing: ``(None, None)`` (docs/methods/session-alignment.md#baselines).

    Parameters
    ----------
    post_path, baseline_path : str or Path
        The post and baseline image files (in their session folders; see :func:`saved_session_transform`).
    post, baseline : Volume
        The same images, loaded.

    Returns
    -------
    (matrix, tolerance) or (None, None)
        ``matrix`` (4x4, post world RAS mm -> baseline world) and the baseline tolerance in post voxels.

    Raises
    ------
    InputError
        When the baseline must be aligned now and the alignment is doubtful.

    Examples
    --------
    Two sessions of a study, both aligned to day 0, are chained without registering anything:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_immunotrack.io.transforms import write_transform
    >>> v = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sub = Path(tmp) / "sub-01"
    ...     for day, x in ((3, 1.0), (7, 3.0)):
    ...         (sub / f"ses-day{day}" / "xfm").mkdir(parents=True)
    ...         shift = np.eye(4); shift[0, 3] = x
    ...         _ = write_transform(sub / f"ses-day{day}" / "xfm" / session_transform_name("01", f"day{day}", "day0"), shift)
    ...     matrix, tolerance = baseline_transform_between(sub / "ses-day7/anat/a.nii.gz", sub / "ses-day3/anat/b.nii.gz", v, v)
    >>> np.round(matrix[:3, 3], 3), tolerance
    (array([-2.,  0.,  0.]), 1)
    >>> baseline_transform_between("ses-a/anat/a.nii.gz", "ses-b/anat/b.nii.gz", v, v)   # same grid, nothing saved
    (None, None)
    """
    t_post, ref_post = saved_session_transform(post_path)
    t_base, ref_base = saved_session_transform(baseline_path)
    if t_post is not None and t_base is not None and ref_post == ref_base:
        from .analysis.residual import baseline_tolerance  # the residual the saved alignments leave

        matrix = t_base @ np.linalg.inv(t_post)
        return matrix, baseline_tolerance(post, baseline, matrix)[0]
    if baseline.same_grid(post):
        return None, None
    matrix, record = baseline_alignment(post, baseline)
    return matrix, int(record["tolerance_voxels"])


def confirm_with_aligned_baseline(t1_post: Volume, t2_post: Volume, t1_pre: Volume, t2_pre: Volume, **kwargs):
    """T1-T2 confirmation against a baseline session in another pose: the baseline registered onto the post
    session now, then :func:`napari_immunotrack.analysis.confirm.confirm_dual_mode`.

    T1PRE is aligned to T1POST (same contrast, :func:`baseline_alignment`: gain and coil profile harmonised,
    orientation search, precision check); T2PRE, from the same session, follows it. A baseline on T1POST's
    grid needs no registration. The record is in the result's ``parameters["pre_alignment"]`` and the
    baseline tolerance defaults to the alignment's (docs/methods/baseline-residual.md).

    Parameters
    ----------
    t1_post, t2_post : Volume
        Post-injection T1-weighted and T2-weighted images (T1POST's grid is every output's grid).
    t1_pre, t2_pre : Volume
        The baseline session's T1-weighted and T2-weighted images, in that session's pose.
    **kwargs
        Any other argument of :func:`~napari_immunotrack.analysis.confirm.confirm_dual_mode` except
        ``pre_transform`` (thresholds, masks, ``transform``, ``baseline_tolerance_voxels``, ...).

    Returns
    -------
    ConfirmResult
        As :func:`~napari_immunotrack.analysis.confirm.confirm_dual_mode`; the alignment record (``method``,
        ``tolerance_voxels``, ``registered``) is in ``parameters["pre_alignment"]``.

    Raises
    ------
    InputError
        When the baseline cannot be aligned (another animal or region), or ``pre_transform`` is given:
        use :func:`~napari_immunotrack.analysis.confirm.confirm_dual_mode` with ``pre_transform`` instead.

    Examples
    --------
    A baseline on T1POST's grid needs no registration:

    >>> rng = np.random.default_rng(0)
    >>> pre1 = Volume(100 + rng.normal(0, 2, (20, 20, 20)), np.eye(4))
    >>> pre2 = Volume(100 + rng.normal(0, 2, (20, 20, 20)), np.eye(4))
    >>> post1, post2 = pre1.numpy().copy(), pre2.numpy().copy()
    >>> post1[8:11, 8:11, 8:11] *= 1.6     # T1-bright
    >>> post2[8:11, 8:11, 8:11] *= 0.4     # and T2-dark at the same place
    >>> res = confirm_with_aligned_baseline(pre1.replace(data=post1), pre2.replace(data=post2), pre1, pre2)
    >>> res.confirmed, res.n_regions, res.parameters["pre_alignment"]["method"]
    (True, 1, 'same grid (no registration)')
    """
    from .analysis.confirm import confirm_dual_mode

    if "pre_transform" in kwargs:
        raise InputError("give either pre_transform or let confirm_with_aligned_baseline register the baseline.")
    if t1_pre.same_grid(t1_post):
        matrix, record = None, {"method": "same grid (no registration)", "tolerance_voxels": 0}
    else:
        matrix, record = baseline_alignment(t1_post, t1_pre)
        record = dict(record, registered="T1PRE onto T1POST")
    return confirm_dual_mode(
        t1_post, t2_post, t1_pre, t2_pre, pre_transform=matrix, pre_alignment_record=record, **kwargs
    )
