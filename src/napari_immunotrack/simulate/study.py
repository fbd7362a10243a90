"""A whole simulated study, written to disk as a real one would be, with its ground truth.

Design (one subject; more subjects differ by their anatomy seed)
----------------------------------------------------------------
- Day 0: the baseline MRI (T1w, T2w, T2*w), scanned just before injection.
- Injection at day 0 (``injection_datetime``): CAR-T cells intravenously
  (labelled with SPION, a perfluorocarbon, 89Zr-oxine, 111In-oxine and a NIR
  dye: a simulation convenience, every modality sees the same cells) and a
  dendritic-cell vaccine with a T1-T2 dual-mode agent subcutaneously in the
  left flank. Kinetics: :mod:`.timecourse`.
- Every later day: MRI (T1w, T2w, T2*w at the session time), PET (89Zr,
  30 min after the session start), SPECT (111In, 90 min), 19F MRI with a
  reference tube, MPI with three iron fiducials and a fluorescence image.
  PET and SPECT are written at every post-injection day: the 89Zr (78 h)
  and 111In (67 h) half-lives allow a 7-day follow-up.
- Geometry: the MRI world is the phantom world (reproducible positioning on
  a fixed bed across sessions, so pre/post compare voxel by voxel); 19F shares
  it (same scanner and session) on a coarse grid; PET, SPECT and MPI are other
  scanners whose worlds differ from the MRI's by a small rigid transform
  (a few degrees, 1-2 mm; different for each session), recorded in
  ``ground_truth.json`` as 4x4 RAS world-to-world matrices ``mri_to_<modality>``
  that map a point of MRI world to the same anatomical point in that
  modality's world. PET/SPECT grids are LPS-ordered (rows to P, columns to L)
  as scanners write them. The optical image is a camera picture with a
  nominal TIFF frame; its true placement is ``optical_affine`` (index ->
  MRI-world RAS mm) in its JSON sidecar and in the truth.

Layout (BIDS-like)::

    <out_dir>/
      ground_truth.json
      dataset_description.json
      sub-01/ses-day0/anat/sub-01_ses-day0_{T1w,T2w,T2starw}.nii.gz (+ .json)
      sub-01/ses-day0/rois/sub-01_ses-day0_dseg.nii.gz (+ .tsv, .json)
      sub-01/ses-day1/anat/...                       (same as day 0)
      sub-01/ses-day1/pet/IM00001.dcm ...            (DICOM PT, Units BQML, decay-corrected to START)
      sub-01/ses-day1/spect/IM00001.dcm              (DICOM NM multi-frame, Bq/mL)
      sub-01/ses-day1/f19/sub-01_ses-day1_19F.nii.gz (+ _desc-reftube_mask.nii.gz, .json)
      sub-01/ses-day1/mpi/sub-01_ses-day1_mpi.nii.gz (+ _fiducials.csv, .json)
      sub-01/ses-day1/optical/sub-01_ses-day1_fluo.ome.tif (+ .json)
      sub-01/ses-day1/rois/sub-01_ses-day1_dseg.nii.gz

Images are stored as 16-bit integers with a NIfTI scale factor (``scl_slope``)
of sigma/5 for the noisy images (MRI, 19F, MPI), which adds a negligible
quantisation noise (SD sigma/17, i.e. +0.17 % to the noise SD) and keeps the
files small.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..affines import LPS_TO_RAS
from ..errors import InputError, OutputExistsError
from ..outputs import atomic_output_dir
from ..progress import report, scaled
from ..volume import Volume
from . import iron as iron_mod
from .fluorine import FluorineDepot, atoms_per_mM_voxel, f19_image
from .mpi import mpi_image
from .mri import check_snr, relaxivity, rician, sequences, tissue_signal, weighted_image
from .nuclear import ActivitySource, activity_image, decay_factor, fine_grid, half_life_s, poisson_noise
from .optical import optical_image
from .phantom import LABEL_OF, LABELS, Cylinder, Ellipsoid, Sphere, check_field, grid_affine, make_mouse, rasterize
from .scenes import REFERENCE_SIGNAL, rigid_matrix
from .timecourse import FREE_LABEL_SINK, Population, car_t_population, dc_vaccine_population, simulate_population

# --------------------------------------------------------------------------- sizes
#: Grids per size preset: voxel sizes (mm) and the MRI matrix (S, A, R).
SIZES = {
    # for tests: seconds, coarse
    "tiny": {
        "mri_shape": (64, 48, 56),
        "mri_voxel": 0.6,
        "pet_voxel": 1.2,
        "spect_voxel": 1.5,
        "f19_voxel": 1.2,
        "mpi_voxel": 1.2,
        "optical_pixel": 0.6,
        "supersample": 1,
        "bloom_supersample": 3,
    },
    # the bundled sample study (small enough for git)
    "sample": {
        "mri_shape": (152, 96, 112),
        "mri_voxel": 0.25,
        "pet_voxel": 0.7,
        "spect_voxel": 0.8,
        "f19_voxel": 0.5,
        "mpi_voxel": 0.5,
        "optical_pixel": 0.2,
        "supersample": 2,
        "bloom_supersample": 3,
    },
    # mouse-sized grids of a real study (192 x 192 x 256 MRI at 0.15 mm)
    "full": {
        "mri_shape": (256, 192, 192),
        "mri_voxel": 0.15,
        "pet_voxel": 0.4,
        "spect_voxel": 0.5,
        "f19_voxel": 0.4,
        "mpi_voxel": 0.3,
        "optical_pixel": 0.1,
        "supersample": 2,
        "bloom_supersample": 3,
    },
}

#: Centre of the MRI field of view (phantom world, mm): the torso from the liver to the inguinal nodes.
MRI_CENTER_MM = (1.5, 0.0, -2.5)

#: Sites that hold cell foci, with the number of foci and their spread radius (mm, used by PET/SPECT/19F).
FOCI = {
    "liver": (10, 1.2),
    "spleen": (6, 0.8),
    "tumour": (6, 0.5),
    "ln_inguinal_right": (3, 0.3),
    "ln_iliac": (2, 0.3),
    "ln_inguinal_left": (2, 0.3),
    "lung": (8, 0.8),
}

DC_DEPOT_CENTER = (-8.8, 2.0, -10.0)
DC_DEPOT_RADIUS = 1.2
DC_NODE_RADIUS = 0.5


@dataclass
class StudyDesign:
    """Everything that defines a simulated study besides the seed and the timepoints."""

    field_t: float = 9.4
    snr: float = 20.0
    f19_snr: float = 15.0
    f19_reference_mM: float = 100.0
    mpi_fiducials_ng: Seq[float] = (1000.0, 5000.0, 10000.0)
    injection_datetime: str = "2024-05-06T10:00:00"
    patient_weight_kg: float = 0.025
    car_t: Population = field(default_factory=lambda: car_t_population())
    dc_vaccine: Population = field(default_factory=lambda: dc_vaccine_population())
    pet_duration_s: float = 900.0
    pet_sensitivity: float = 0.05
    spect_duration_s: float = 1800.0
    spect_sensitivity: float = 0.002
    pet_fwhm_mm: float = 1.4
    spect_fwhm_mm: float = 1.2
    mpi_fwhm_mm: Seq[float] = (1.2, 1.6, 1.6)
    mpi_k_per_ng: float = 10.0
    mpi_noise_sd: float = 1.0
    mu_eff_per_mm: float = 1.0
    photons_per_dye_unit: float = 1e-3
    # Sessions as a real lab acquires them (docs/methods/session-alignment.md#simulated-repositioning): the animal
    # is put back in its own pose each session, the operator centres a new field of view on it, and the
    # receiver gain, coil profile and soft tissue differ. Off: every session on one bed (the old layout).
    repositioned: bool = False
    pose_max_rotation_deg: float = 15.0
    pose_max_shift_mm: float = 3.0
    flip_day: float | None = None  # the session scanned prone instead of supine (a half turn)
    gain_range: Seq[float] = (0.7, 1.4)
    bias_strength: float = 0.2
    deformation_mm: float = 0.15
    fov_offset_mm: float = 1.0

    def check(self):
        check_field(self.field_t)
        check_snr(self.snr, "snr")
        check_snr(self.f19_snr, "f19_snr")
        if self.f19_reference_mM <= 0:
            raise InputError(f"f19_reference_mM={self.f19_reference_mM} must be > 0 mM.")
        if any(m < 0 for m in self.mpi_fiducials_ng):
            raise InputError(f"mpi_fiducials_ng={list(self.mpi_fiducials_ng)} has a negative iron mass.")
        if self.pose_max_rotation_deg < 0 or self.pose_max_shift_mm < 0 or self.deformation_mm < 0:
            raise InputError("pose_max_rotation_deg, pose_max_shift_mm and deformation_mm must be >= 0.")
        if len(tuple(self.gain_range)) != 2 or min(self.gain_range) <= 0:
            raise InputError(f"gain_range={list(self.gain_range)} must be two positive numbers.")


def _injection(design: StudyDesign) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(design.injection_datetime)
    except ValueError:
        raise InputError(
            f"injection_datetime={design.injection_datetime!r} is not an ISO date-time (e.g. 2024-05-06T10:00:00)."
        ) from None


def check_timepoints(timepoints_days) -> list[float]:
    """Timepoints (days after injection) as floats >= 0, else InputError naming the parameter.

    Parameters
    ----------
    timepoints_days : iterable of float
        Days after injection; 0 is the baseline scanned just before injection.

    Returns
    -------
    list of float
        The days, sorted.

    Raises
    ------
    InputError
        Not numbers, empty, negative or non-finite, or a day given twice.

    Examples
    --------
    >>> check_timepoints([7, 0, 1.5])
    [0.0, 1.5, 7.0]
    >>> check_timepoints([1, 1])
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: timepoints_days=[1.0, 1.0] repeats a day; give each day once.
    """
    try:
        t = [float(v) for v in timepoints_days]
    except (TypeError, ValueError):
        raise InputError(f"timepoints_days={timepoints_days!r} must be numbers (days after injection).") from None
    if not t:
        raise InputError("timepoints_days is empty; give at least one day (0 = baseline before injection).")
    bad = [v for v in t if not np.isfinite(v) or v < 0]
    if bad:
        raise InputError(
            f"timepoints_days has {bad[0]}, which is before injection; days must be >= 0 "
            "(0 = the baseline scanned just before injection)."
        )
    if len(set(t)) != len(t):
        raise InputError(f"timepoints_days={t} repeats a day; give each day once.")
    return sorted(t)


def check_size(size: str) -> dict:
    """The grid settings of a study size name ("tiny", "sample", "full"); InputError naming the sizes when unknown.

    Parameters
    ----------
    size : str
        A key of :data:`SIZES`.

    Returns
    -------
    dict
        ``mri_shape`` (S, A, R voxels), voxel sizes in mm (``mri_voxel``, ``pet_voxel``,
        ``spect_voxel``, ``f19_voxel``, ``mpi_voxel``, ``optical_pixel``) and the supersampling
        factors of the nuclear images and the iron blooms.

    Examples
    --------
    >>> grid = check_size("tiny")
    >>> grid["mri_shape"], grid["mri_voxel"], grid["pet_voxel"]
    ((64, 48, 56), 0.6, 1.2)
    >>> check_size("huge")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: size='huge' is unknown; use one of ['full', 'sample', 'tiny'].
    """
    if size not in SIZES:
        raise InputError(f"size={size!r} is unknown; use one of {sorted(SIZES)}.")
    return SIZES[size]


def session_name(day: float) -> str:
    """The session folder name of a study day: 1 -> "day1", 0.5 -> "day0p5".

    Parameters
    ----------
    day : float
        Days after injection.

    Returns
    -------
    str
        ``day<N>`` with a whole day written without decimals and a ``.`` written ``p``.

    Examples
    --------
    >>> session_name(3), session_name(0.5)
    ('day3', 'day0p5')
    """
    return f"day{int(day)}" if float(day).is_integer() else f"day{day:g}".replace(".", "p")


# --------------------------------------------------------------------------- subject
@dataclass
class Subject:
    """One simulated animal: anatomy, cell foci, scanner poses per session."""

    index: int
    seed: int
    mouse: object
    foci: dict[str, list]

    @property
    def label(self) -> str:
        return f"{self.index:02d}"


def make_subject(index: int = 1, seed: int = 0) -> Subject:
    """Anatomy and fixed focus positions of subject ``index`` (seeded by ``seed`` and ``index``).

    The foci (where cells gather in each site of :data:`FOCI`: liver, spleen, tumour rim, lymph
    nodes, lung) keep their positions over the sessions; their weights share the site's cells.

    Parameters
    ----------
    index : int, default 1
        Subject number (1 -> "01"); each subject has its own anatomy.
    seed : int, default 0
        Study seed; the subject's own seed is ``1000 * seed + index``.

    Returns
    -------
    Subject
        ``index``, ``seed`` (the subject's), ``mouse`` (the phantom of
        :func:`~napari_immunotrack.simulate.phantom.make_mouse`) and ``foci`` (site -> list of
        {center_mm (phantom world, mm), weight (sums to 1 per site), spread_mm}).

    Examples
    --------
    >>> subject = make_subject(1, seed=0)
    >>> subject.label, subject.seed, {site: len(f) for site, f in subject.foci.items()}["liver"]
    ('01', 1, 10)
    >>> round(sum(f["weight"] for f in subject.foci["spleen"]), 6)
    1.0
    """
    sub_seed = int(seed) * 1000 + int(index)
    mouse = make_mouse(sub_seed)
    rng = np.random.default_rng(sub_seed + 17)
    foci = {}
    for site, (n, spread) in FOCI.items():
        info = mouse.sites[site]
        solid = info["solid"]
        pts = []
        lo, hi = solid.bbox()
        tries = 0
        while len(pts) < n and tries < 20000:
            tries += 1
            p = rng.uniform(lo, hi)
            if site == "tumour":
                # T cells infiltrate the rim of the tumour
                r = np.linalg.norm(p - info["center_mm"]) / info["radius_mm"]
                if not 0.55 < r < 0.85:
                    continue
            elif site.startswith("ln_"):
                if np.linalg.norm(p - info["center_mm"]) > 0.45 * info["radius_mm"]:
                    continue
            elif not Ellipsoid(solid.center, solid.semi * 0.8, solid.angles_deg).contains(p)[0]:
                continue
            if any(np.linalg.norm(p - q) < 0.3 * spread + 0.4 for q, _ in pts):
                continue
            pts.append((p, 0.0))
        w = rng.dirichlet(np.full(len(pts), 4.0))
        foci[site] = [{"center_mm": p, "weight": float(wi), "spread_mm": spread} for (p, _), wi in zip(pts, w)]
    return Subject(index=index, seed=sub_seed, mouse=mouse, foci=foci)


def _session_poses(subject: Subject, day: float) -> dict[str, np.ndarray]:
    """Rigid maps MRI world -> each scanner's world for one session (seeded)."""
    rng = np.random.default_rng(subject.seed * 7919 + int(round(day * 100)))
    poses = {}
    for modality in ("pet", "spect", "mpi"):
        rot = rng.uniform(-3.0, 3.0, 3)
        trans = rng.uniform(-2.0, 2.0, 3)
        poses[modality] = rigid_matrix(rot, trans, center_mm=MRI_CENTER_MM)
        poses[modality + "_params"] = {
            "rotation_deg_xyz": rot.tolist(),
            "translation_mm": trans.tolist(),
            "rotation_center_mm": list(MRI_CENTER_MM),
        }
    poses["f19"] = np.eye(4)
    return poses


def session_pose(subject: Subject, day: float, design: StudyDesign) -> dict:
    """The animal's pose in the MRI scanner at one session (phantom world -> session MRI world), with the
    session's receiver gain, coil-bias strength, soft-tissue deformation and field-of-view offset.

    Identity, gain 1 and no bias or deformation unless ``design.repositioned`` (seeded by subject and day,
    on a stream of its own so the other random draws do not change); see
    ``docs/methods/session-alignment.md#simulated-repositioning``.

    Parameters
    ----------
    subject : Subject
        From :func:`make_subject`.
    day : float
        Days after injection.
    design : StudyDesign
        ``repositioned``, ``pose_max_rotation_deg``, ``pose_max_shift_mm``, ``flip_day``,
        ``gain_range``, ``bias_strength``, ``deformation_mm`` and ``fov_offset_mm`` are used.

    Returns
    -------
    dict
        ``matrix`` (4x4, phantom world -> session MRI world, mm), ``rotation_deg_xyz``,
        ``translation_mm``, ``rotation_center_mm``, ``flipped`` (prone instead of supine),
        ``gain`` (receiver gain factor), ``bias_strength``, ``deformation_mm``, ``fov_offset_mm``
        and ``seed`` (None when not repositioned).

    Examples
    --------
    >>> subject = make_subject(1, seed=0)
    >>> session_pose(subject, 3, StudyDesign())["gain"]
    1.0
    >>> pose = session_pose(subject, 3, StudyDesign(repositioned=True))
    >>> [round(a, 2) for a in pose["rotation_deg_xyz"]], round(pose["gain"], 3)
    ([-14.65, 8.87, 13.0], 0.736)
    """
    from .sessions import pose_matrix

    if not design.repositioned:
        return {
            "matrix": np.eye(4),
            "rotation_deg_xyz": [0.0, 0.0, 0.0],
            "translation_mm": [0.0, 0.0, 0.0],
            "rotation_center_mm": list(MRI_CENTER_MM),
            "flipped": False,
            "gain": 1.0,
            "bias_strength": 0.0,
            "deformation_mm": 0.0,
            "fov_offset_mm": [0.0, 0.0, 0.0],
            "seed": None,
        }
    seed = subject.seed * 104_729 + int(round(day * 1000)) + 17
    rng = np.random.default_rng(seed)
    rot = rng.uniform(-design.pose_max_rotation_deg, design.pose_max_rotation_deg, 3)
    shift = rng.uniform(-design.pose_max_shift_mm, design.pose_max_shift_mm, 3)
    flipped = design.flip_day is not None and float(design.flip_day) == float(day)
    lo, hi = sorted(float(g) for g in design.gain_range)
    return {
        "matrix": pose_matrix(rot, shift, MRI_CENTER_MM, flip=flipped),
        "rotation_deg_xyz": rot.tolist(),
        "translation_mm": shift.tolist(),
        "rotation_center_mm": list(MRI_CENTER_MM),
        "flipped": flipped,
        "gain": float(rng.uniform(lo, hi)),
        "bias_strength": float(design.bias_strength),
        "deformation_mm": float(design.deformation_mm),
        "fov_offset_mm": rng.uniform(-design.fov_offset_mm, design.fov_offset_mm, 3).tolist(),
        "seed": seed,
    }


def _apply_pose(matrix: np.ndarray, point) -> list:
    p = np.asarray(point, float)
    return [float(v) for v in matrix[:3, :3] @ p + matrix[:3, 3]]


def _scanner_grid(to_world: np.ndarray, extent: np.ndarray, voxel: float, lps: bool, margin: float = 4.0):
    """Axis-aligned grid in a scanner's world covering the mouse box (phantom world) mapped by ``to_world``."""
    lo, hi = extent
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    w = corners @ to_world[:3, :3].T + to_world[:3, 3]
    wlo, whi = w.min(0) - margin, w.max(0) + margin
    size = whi - wlo
    shape = tuple(int(np.ceil(s / voxel)) for s in size[::-1])  # (z, y, x)
    center = (wlo + whi) / 2
    rot = LPS_TO_RAS[:3, :3] if lps else None  # array axes run S, P, L: DICOM's usual axial order
    return shape, grid_affine(shape, voxel, center, rotation=rot)


# --------------------------------------------------------------------------- one timepoint
def foci_state(subject: Subject, tc: dict, dc: dict, day: float) -> list[dict]:
    """Cells and label at every focus at ``day`` (live and macrophage-held).

    Each site's cells and label are shared among its foci by the foci's weights; lung foci
    hold the trapped fraction of the injected cells.

    Parameters
    ----------
    subject : Subject
        From :func:`make_subject`.
    tc : dict
        The CAR-T time course by day (``source`` and ``sites`` per day).
    dc : dict
        The other populations' time course (unused here; kept for a uniform signature).
    day : float
        A day present in ``tc``.

    Returns
    -------
    list of dict
        One dict per focus: ``id``, ``site``, ``population``, ``center_mm``, ``spread_mm``,
        ``live_cells``, ``label_live``, ``label_macrophage``.

    Examples
    --------
    >>> subject = Subject(1, 0, None, {"liver": [{"weight": 0.25, "center_mm": (0, 0, 0), "spread_mm": 1.0}]})
    >>> site = {"live_cells": 400.0, "label_live": {"iron": 8.0}, "label_macrophage": {"iron": 4.0}}
    >>> tc = {1.0: {"source": {}, "sites": {"liver": site}}}
    >>> f = foci_state(subject, tc, {}, 1.0)[0]
    >>> f["live_cells"], f["label_live"], f["label_macrophage"]
    (100.0, {'iron': 2.0}, {'iron': 1.0})
    """
    out = []
    fid = 0
    car = tc[day]
    for site, foci in subject.foci.items():
        if site == "lung":
            src = car["source"]
            frac = src["lung_trapped_fraction"]
            live = src["cells"] * frac
            lab_live = {k: v * frac for k, v in src["label_live"].items()}
            lab_mac = {k: 0.0 for k in lab_live}
        elif site in car["sites"]:
            s = car["sites"][site]
            live, lab_live, lab_mac = s["live_cells"], s["label_live"], s["label_macrophage"]
        else:
            continue
        for f in foci:
            fid += 1
            w = f["weight"]
            out.append(
                {
                    "id": fid,
                    "site": site,
                    "population": "car_t",
                    "center_mm": f["center_mm"],
                    "spread_mm": f["spread_mm"],
                    "live_cells": live * w,
                    "label_live": {k: v * w for k, v in lab_live.items()},
                    "label_macrophage": {k: v * w for k, v in lab_mac.items()},
                }
            )
    return out


def simulate_timepoint(
    day: float,
    *,
    subject: Subject | None = None,
    seed: int = 0,
    size: str = "sample",
    design: StudyDesign | None = None,
    progress=None,
) -> dict:
    """Every image of one session (in memory) and its truth.

    Parameters
    ----------
    day : float
        Days after injection (>= 0); 0 is the pre-injection baseline (MRI only).
    subject : Subject, optional
        From :func:`make_subject` (default: subject 1 of ``seed``).
    seed : int, default 0
        Study seed, used when ``subject`` is not given.
    size : {"tiny", "sample", "full"}, default "sample"
        Grid preset (see :data:`SIZES`).
    design : StudyDesign, optional
        Field, noise, cell populations, scanner settings and repositioning (defaults of
        :class:`StudyDesign` when None).
    progress : callable, optional
        Called as ``progress(fraction, message)`` while the images are built.

    Returns
    -------
    dict
        ``volumes`` ({"T1w", "T2w", "T2starw", "dseg"} and after injection "pet", "spect", "f19",
        "f19_reftube", "mpi", "fluo": Volumes in their scanners' worlds), ``tables`` (fiducials),
        ``sidecars`` (JSON fields per volume), ``truth`` (dict, JSON-ready).

    Raises
    ------
    InputError
        An unknown size, a negative day or an invalid design.

    Examples
    --------
    >>> baseline = simulate_timepoint(0, subject=make_subject(1, seed=0), size="tiny")
    >>> sorted(baseline["volumes"]), baseline["volumes"]["T2w"].spatial_shape
    (['T1w', 'T2starw', 'T2w', 'dseg'], (64, 48, 56))
    >>> baseline["truth"]["session"], baseline["truth"]["baseline"]
    ('ses-day0', True)
    """
    design = design or StudyDesign()
    design.check()
    grid = check_size(size)
    day = check_timepoints([day])[0]
    subject = subject or make_subject(1, seed)
    mouse = subject.mouse
    rng = np.random.default_rng(subject.seed * 1_000_003 + int(round(day * 1000)))
    field_t = float(design.field_t)
    inj = _injection(design)
    baseline = day == 0
    scan0 = inj + _dt.timedelta(days=day) - (_dt.timedelta(minutes=30) if baseline else _dt.timedelta(0))
    tc = simulate_population(design.car_t, [day])
    dc = simulate_population(design.dc_vaccine, [day])
    foci = [] if baseline else foci_state(subject, tc, dc, day)
    poses = _session_poses(subject, day)
    pose = session_pose(subject, day, design)
    S = pose["matrix"]  # phantom world -> this session's MRI world
    vols, sidecars, tables = {}, {}, {}
    truth = {
        "day": day,
        "session": f"ses-{session_name(day)}",
        "baseline": baseline,
        "mri_datetime": scan0.isoformat(),
        "session_pose": dict({k: v for k, v in pose.items() if k != "matrix"}, phantom_to_mri_world=S.tolist()),
    }
    report(progress, 0.02, "anatomy")
    # ------------------------------------------------------------------ MRI
    shape = tuple(grid["mri_shape"])
    # the operator centres an axis-aligned field of view on the posed anatomy (scanner world) ...
    mri_center = np.array(_apply_pose(S, MRI_CENTER_MM)) + np.asarray(pose["fov_offset_mm"], float)
    mri_aff = grid_affine(shape, grid["mri_voxel"], mri_center)
    # ... and the phantom is evaluated where each scanner voxel lands on the animal
    ph_aff = np.linalg.inv(S) @ mri_aff
    labels = mouse.labels(shape, ph_aff)
    seqs = sequences(field_t)
    agent_mM = None
    dual = relaxivity("dual_mode", field_t)
    dc_truth = []
    if not baseline:
        dstate = dc[day]
        depot_amount = (
            dstate["source"]["label_live"]["dual_mode"] + dstate["sites"]["dc_depot"]["label_macrophage"]["dual_mode"]
        )
        node = dstate["sites"]["ln_inguinal_left"]
        node_amount = node["label_live"]["dual_mode"] + node["label_macrophage"]["dual_mode"]
        agent_mM = np.zeros(shape, np.float32)
        node_c = mouse.sites["ln_inguinal_left"]["center_mm"]
        for name, centre, radius, amount, live in (
            ("dc_depot", np.array(DC_DEPOT_CENTER), DC_DEPOT_RADIUS, depot_amount, dstate["source"]["cells"]),
            ("ln_inguinal_left", node_c, DC_NODE_RADIUS, node_amount, node["live_cells"]),
        ):
            vol_ul = 4.0 / 3.0 * np.pi * radius**3  # mm^3 = uL
            conc = amount / vol_ul * 1e-6  # fmol/uL = nM -> mM
            mask = rasterize([(1, Sphere(centre, radius))], shape, ph_aff).astype(bool)
            agent_mM[mask] = conc
            dc_truth.append(
                {
                    "site": name,
                    "centroid_ras_mm": _apply_pose(S, centre),
                    "centroid_phantom_mm": [float(v) for v in centre],
                    "radius_mm": radius,
                    "concentration_mM": conc,
                    "agent_fmol": amount,
                    "live_cells": live,
                    "agent": "dual_mode",
                    "r1": dual.r1,
                    "r2": dual.r2,
                    "r2s": dual.r2s,
                    "voxels": int(mask.sum()),
                }
            )
    clusters = []
    for f in foci:
        fe = f["label_live"].get("iron", 0.0) + f["label_macrophage"].get("iron", 0.0)
        if fe > 0:
            clusters.append(
                iron_mod.IronCluster(f["center_mm"], fe, max(f["live_cells"], 0.0), id=f["id"], site=f["site"])
            )
    blooms = (
        iron_mod.bloom_factors(
            shape, ph_aff, clusters, list(seqs.values()), field_t, supersample=grid["bloom_supersample"]
        )
        if clusters
        else [None] * len(seqs)
    )
    session_rng = np.random.default_rng(pose["seed"]) if pose["seed"] is not None else None
    bias = disp = None
    if design.repositioned:
        from .sessions import bias_field, smooth_displacement

        bias = bias_field(shape, pose["bias_strength"], session_rng)
        disp = smooth_displacement(shape, [grid["mri_voxel"]] * 3, pose["deformation_mm"], session_rng)
    # soft tissue moved a little: the tissue map is moved and then imaged, so edges stay as sharp as on the
    # one-bed layout (warping the rendered image instead blurred every edge into a one-voxel rim the label
    # map does not have); the iron blooms stay where the truth records the foci
    dseg = labels if disp is None else _warp(labels, disp, order=0)
    agent_moved = agent_mM if disp is None or agent_mM is None else _warp(agent_mM, disp, order=0)
    gain = float(pose["gain"])
    for (key, seq), bloom in zip(seqs.items(), blooms):
        scale = REFERENCE_SIGNAL / tissue_signal(seq, field_t, "muscle")
        img = weighted_image(
            dseg, seq, field_t, agent_mM=agent_moved, agent=dual if agent_mM is not None else None, scale=scale
        )
        if bloom is not None:
            iron_mod.apply_bloom(img, *bloom)
        if bias is not None:  # the coil sees the moved tissue
            img = img * bias
        sigma = REFERENCE_SIGNAL / design.snr
        noisy = rician(img, sigma, rng)
        if gain != 1.0:
            noisy = (noisy * gain).astype(np.float32)
        vols[key] = Volume(noisy, mri_aff, "MR", "a.u.", seq.metadata(field_t), key)
        sidecars[key] = dict(
            seq.metadata(field_t),
            Units="a.u.",
            NoiseSigma=sigma * gain,
            SNRReference="muscle",
            ReferenceSignal=REFERENCE_SIGNAL * gain,
            quantisation_step=sigma * gain / 5,
        )
    vols["dseg"] = Volume(dseg, mri_aff, "SEG", "label", {"label_names": LABELS}, "dseg")
    sidecars["dseg"] = {"Modality": "SEG", "Units": "label", "LabelNames": {str(k): v for k, v in LABELS.items()}}
    truth["mri"] = {
        "field_t": field_t,
        "snr": design.snr,
        "sigma": REFERENCE_SIGNAL / design.snr * gain,
        "receiver_gain": gain,
        "reference_tissue": "muscle",
        "reference_signal": REFERENCE_SIGNAL,
        "sequences": {k: s.metadata(field_t) for k, s in seqs.items()},
        "shape": list(shape),
        "affine": mri_aff.tolist(),
        "dual_mode_regions": dc_truth,
    }
    report(progress, 0.35, "MRI done")
    if baseline:
        truth["foci"] = []
        return {"volumes": vols, "sidecars": sidecars, "tables": tables, "truth": truth}
    truth["foci"] = [
        {
            "id": f["id"],
            "site": f["site"],
            "population": f["population"],
            "centroid_ras_mm": _apply_pose(S, f["center_mm"]),
            "centroid_phantom_mm": [float(v) for v in f["center_mm"]],
            "spread_mm": f["spread_mm"],
            "live_cells": f["live_cells"],
            "label_live": f["label_live"],
            "label_macrophage": f["label_macrophage"],
            "iron_pg": f["label_live"]["iron"] + f["label_macrophage"]["iron"],
        }
        for f in foci
    ]
    # ------------------------------------------------------------------ PET / SPECT
    for key, nuclide_label, pharma, offset_min, vox, fwhm, dur, sens in (
        (
            "pet",
            "zr89",
            "89Zr-oxine",
            30,
            grid["pet_voxel"],
            design.pet_fwhm_mm,
            design.pet_duration_s,
            design.pet_sensitivity,
        ),
        (
            "spect",
            "in111",
            "111In-oxine",
            90,
            grid["spect_voxel"],
            design.spect_fwhm_mm,
            design.spect_duration_s,
            design.spect_sensitivity,
        ),
    ):
        nuclide = {"zr89": "Zr-89", "in111": "In-111"}[nuclide_label]
        t_half = half_life_s(nuclide)
        scan_time = inj + _dt.timedelta(days=day, minutes=offset_min)
        dfac = decay_factor((scan_time - inj).total_seconds(), t_half)
        to_world = poses[key] @ S  # phantom -> MRI world -> this scanner's world
        g_shape, g_aff = _scanner_grid(to_world, mouse.extent_mm, vox, lps=True)
        sources = []
        for f in foci:
            amount = f["label_live"][nuclide_label] + f["label_macrophage"][nuclide_label]
            if amount > 0:
                sources.append(
                    ActivitySource(
                        amount * dfac, solid=Sphere(f["center_mm"], f["spread_mm"]), name=f"{f['site']}#{f['id']}"
                    )
                )
        car = tc[day]
        blood = car["source"]["label_live"][nuclide_label] * (1.0 - car["source"]["lung_trapped_fraction"])
        if blood > 0:
            sources.append(ActivitySource(blood * dfac, label=LABEL_OF["muscle"], name="circulating (blood pool)"))
        free = car["free_label"][nuclide_label]
        for sink, frac in FREE_LABEL_SINK[nuclide_label].items():
            if free * frac > 0:
                sources.append(
                    ActivitySource(free * frac * dfac, label=LABEL_OF[sink], name=f"free {nuclide} in {sink}")
                )
        injected = design.car_t.cells * design.car_t.label_per_cell[nuclide_label]
        fshape, faff = fine_grid(g_shape, g_aff, grid["supersample"])
        fine_labels = rasterize(mouse.solids, fshape, faff, np.linalg.inv(to_world))
        act, info = activity_image(
            mouse.solids,
            sources,
            g_shape,
            g_aff,
            fwhm,
            to_phantom=np.linalg.inv(to_world),
            supersample=grid["supersample"],
            labels_fine=fine_labels,
        )
        noisy = poisson_noise(act, info["voxel_ml"], dur, sens, rng)
        header = {
            "Units": "BQML",
            "DecayCorrection": "START",
            "CorrectedImage": ["ATTN", "DECY", "SCAT"],
            "SeriesDate": scan_time.strftime("%Y%m%d"),
            "SeriesTime": scan_time.strftime("%H%M%S"),
            "AcquisitionDate": scan_time.strftime("%Y%m%d"),
            "AcquisitionTime": scan_time.strftime("%H%M%S"),
            "ActualFrameDuration": int(dur * 1000),
            "Radiopharmaceutical": pharma,
            "RadionuclideTotalDose": float(injected),
            "RadionuclideHalfLife": float(t_half),
            "RadiopharmaceuticalStartDateTime": inj.strftime("%Y%m%d%H%M%S"),
            "RadiopharmaceuticalStartTime": inj.strftime("%H%M%S"),
        }
        meta = dict(header, fwhm_mm=fwhm, duration_s=dur, sensitivity=sens, PatientWeight=design.patient_weight_kg)
        vols[key] = Volume(noisy, g_aff, "PT" if key == "pet" else "NM", "Bq/mL", meta, f"{key} {pharma}")
        truth[key] = {
            "radiopharmaceutical": pharma,
            "nuclide": nuclide,
            "half_life_s": t_half,
            "injected_bq": float(injected),
            "injection_datetime": inj.isoformat(),
            "scan_datetime": scan_time.isoformat(),
            "decay_factor": dfac,
            "total_bq_at_scan": float(injected * dfac),
            "total_bq_image_noiseless": info["total_bq_image"],
            "psf_spill_bq": info["psf_spill_bq"],
            "sources": [{"name": s.name, "bq_at_scan": s.bq} for s in sources],
            "fwhm_mm": fwhm,
            "duration_s": dur,
            "sensitivity": sens,
            "voxel_mm": vox,
            "shape": list(g_shape),
            "affine": g_aff.tolist(),
            f"mri_to_{key}": poses[key].tolist(),  # MRI world -> scanner world (the session pose excluded)
            "pose": poses[key + "_params"],
        }
        report(progress, 0.35 + (0.15 if key == "pet" else 0.3), f"{key} done")
    # ------------------------------------------------------------------ 19F (same scanner as MRI)
    f_vox = grid["f19_voxel"]
    f_shape = tuple(int(np.ceil(s * grid["mri_voxel"] / f_vox)) for s in shape)
    f_shape = (f_shape[0], f_shape[1] + int(np.ceil(6.0 / f_vox)), f_shape[2])  # room below for the tube
    f_center = mri_center + [0.0, -3.0, 0.0]  # same scanner and bed as the MRI (scanner world)
    f_aff = grid_affine(f_shape, f_vox, f_center)
    S_inv = np.linalg.inv(S)
    f_per_cell = design.car_t.label_per_cell["f19"]
    depots = []
    for f in foci:
        atoms = f["label_live"]["f19"] + f["label_macrophage"]["f19"]
        if atoms > 0:
            depots.append(
                FluorineDepot(
                    f["center_mm"], atoms / f_per_cell, f_per_cell, f["spread_mm"], name=f"{f['site']}#{f['id']}"
                )
            )
    half_y = (f_shape[1] - 1) / 2 * f_vox
    tube_c = np.array([f_center[0] - 6.0, f_center[1] - half_y + 2.0, f_center[2]])
    tube_len = (f_shape[0] - 1) / 2 * f_vox - 2.0
    # the tube lies on the bed (scanner world); the depots move with the animal (phantom world)
    tube = Cylinder(
        np.array(_apply_pose(S_inv, tube_c - [0, 0, tube_len])),
        np.array(_apply_pose(S_inv, tube_c + [0, 0, tube_len])),
        1.0,
    )
    f19 = f19_image(
        depots,
        tube,
        design.f19_reference_mM,
        f_shape,
        f_aff,
        to_phantom=S_inv,
        snr=design.f19_snr,
        rng=rng,
        supersample=3,
    )
    vols["f19"] = Volume(f19["image"], f_aff, "F19", "a.u.", {}, "19F")
    vols["f19_reftube"] = Volume(
        f19["reference_mask"], f_aff, "SEG", "label", {"label_names": {1: "reference tube"}}, "19F reference tube"
    )
    f_side = {
        "Modality": "F19",
        "Units": "a.u.",
        "Nucleus": "19F",
        "MagneticFieldStrength": field_t,
        "ReferenceConcentration_mM": design.f19_reference_mM,
        "ReferenceMask": "desc-reftube_mask",
        "NoiseSigma": f19["sigma"],
        "quantisation_step": f19["sigma"] / 5,
        "FluorineAtomsPerCell": f_per_cell,
    }
    sidecars["f19"] = f_side
    sidecars["f19_reftube"] = {"Modality": "SEG", "Units": "label", "LabelNames": {"1": "reference tube"}}
    inside = [d for d in depots]
    truth["f19"] = {
        "reference_mM": design.f19_reference_mM,
        "gain_per_mM": f19["gain_per_mM"],
        "sigma": f19["sigma"],
        "snr_reference": design.f19_snr,
        "atoms_per_mM_voxel": atoms_per_mM_voxel(f_vox**3),
        "F_per_cell": f_per_cell,
        "total_atoms": float(sum(d.atoms for d in inside)),
        "lost_atoms_outside_fov": f19["lost_atoms"],
        "tube": {"center_ras_mm": tube_c.tolist(), "radius_mm": 1.0, "half_length_mm": tube_len},
        "shape": list(f_shape),
        "affine": f_aff.tolist(),
        "mri_to_f19": np.eye(4).tolist(),
    }
    report(progress, 0.75, "19F done")
    # ------------------------------------------------------------------ MPI (own scanner)
    to_mpi = poses["mpi"] @ S
    # the whole animal plus room on the bed below it for the fiducials
    m_shape, m_aff = _scanner_grid(
        to_mpi, mouse.extent_mm + np.array([[0, -6.0, 0], [0, 0, 0]]), grid["mpi_voxel"], lps=False, margin=3.0
    )
    pts, ng = [], []
    for f in foci:
        fe = f["label_live"]["iron"] + f["label_macrophage"]["iron"]
        if fe > 0:
            pts.append(f["center_mm"])
            ng.append(fe / 1000.0)
    # fiducials on the MPI bed (MPI world), below the animal
    mb = Volume(np.zeros(m_shape, np.uint8), m_aff).bounds_world()
    zs = np.linspace(mb[0][2] + 5.0, mb[1][2] - 5.0, len(design.mpi_fiducials_ng))
    fid_world = [np.array([mb[1][0] - 4.0, mb[0][1] + 3.0, z]) for z in zs]
    to_ph = np.linalg.inv(to_mpi)
    fid_ph = [to_ph[:3, :3] @ p + to_ph[:3, 3] for p in fid_world]
    all_pts = np.array(pts + fid_ph) if (pts or fid_ph) else np.zeros((0, 3))
    all_ng = np.array(ng + list(design.mpi_fiducials_ng), float)
    ss = 1 if grid["mpi_voxel"] <= min(design.mpi_fwhm_mm) / 4 else 2
    m_img = mpi_image(
        all_pts,
        all_ng,
        m_shape,
        m_aff,
        to_phantom=to_ph,
        fwhm_mm=design.mpi_fwhm_mm,
        k_per_ng=design.mpi_k_per_ng,
        noise_sd=design.mpi_noise_sd,
        rng=rng,
        supersample=ss,
    )
    vols["mpi"] = Volume(m_img["image"], m_aff, "MPI", "a.u.", {}, "MPI")
    sidecars["mpi"] = {
        "Modality": "MPI",
        "Units": "a.u.",
        "Tracer": "SPION (labelled cells)",
        "PSF_FWHM_mm": list(design.mpi_fwhm_mm),
        "NoiseSD": design.mpi_noise_sd,
        "quantisation_step": design.mpi_noise_sd / 5,
        "FiducialsFile": "fiducials.csv",
    }
    tables["mpi_fiducials"] = [
        {
            "name": f"fiducial_{i + 1}",
            "x_mm": float(p[0]),
            "y_mm": float(p[1]),
            "z_mm": float(p[2]),
            "iron_ng": float(mass),
        }
        for i, (p, mass) in enumerate(zip(fid_world, design.mpi_fiducials_ng))
    ]
    truth["mpi"] = {
        "k_per_ng": design.mpi_k_per_ng,
        "background": 0.0,
        "noise_sd": design.mpi_noise_sd,
        "fwhm_mm": list(design.mpi_fwhm_mm),
        "total_cell_iron_ng": float(sum(ng)),
        "fiducials": [
            {"position_ras_mm": p.tolist(), "iron_ng": float(m)} for p, m in zip(fid_world, design.mpi_fiducials_ng)
        ],
        "lost_ng_outside_fov": m_img["lost_ng"],
        "shape": list(m_shape),
        "affine": m_aff.tolist(),
        "mri_to_mpi": poses["mpi"].tolist(),  # MRI world -> MPI world (the session pose excluded)
        "pose": poses["mpi_params"],
    }
    report(progress, 0.85, "MPI done")
    # ------------------------------------------------------------------ optical
    dye_pts = [f["center_mm"] for f in foci]
    dye = [(f["label_live"]["dye"] + f["label_macrophage"]["dye"]) * design.photons_per_dye_unit for f in foci]
    opt = optical_image(
        mouse,
        np.array(dye_pts) if dye_pts else np.zeros((0, 3)),
        np.array(dye),
        pixel_mm=grid["optical_pixel"],
        mu_eff_per_mm=design.mu_eff_per_mm,
        rng=rng,
    )
    opt["affine"] = S @ np.asarray(opt["affine"], float)  # the optical frame follows the animal into MRI world
    vols["fluo"] = Volume(
        opt["image"], opt["affine"], "OPT", "a.u.", {"optical_affine": opt["affine"].tolist()}, "fluorescence"
    )
    sidecars["fluo"] = {
        "Modality": "OPT",
        "Units": "a.u.",
        "View": "ventral (camera above the supine animal)",
        "PixelSize_mm": opt["pixel_mm"],
        "mu_eff_per_mm": opt["mu_eff_per_mm"],
        "ImageToWorldAffine": opt["affine"].tolist(),
        "ImageToWorldAffineNote": "index (plane, row, column) -> MRI-world RAS mm; the TIFF's own frame is nominal",
    }
    truth["optical"] = {
        "affine": opt["affine"].tolist(),
        "mu_eff_per_mm": opt["mu_eff_per_mm"],
        "depth_mm": [None if not np.isfinite(d) else float(d) for d in opt["depth_mm"]],
        "surface_weight": opt["surface_weight"].tolist(),
        "photons_per_dye_unit": design.photons_per_dye_unit,
    }
    truth["sites"] = _site_truth(tc[day], dc[day], design)
    report(progress, 1.0, "timepoint done")
    return {"volumes": vols, "sidecars": sidecars, "tables": tables, "truth": truth}


def _warp(image: np.ndarray, displacement_vox: np.ndarray, order: int) -> np.ndarray:
    """``image`` sampled at index + displacement (a smooth soft-tissue shift)."""
    from scipy import ndimage

    coords = np.indices(image.shape, dtype=np.float32) + displacement_vox
    return ndimage.map_coordinates(image, coords, order=order, mode="nearest").astype(image.dtype)


def _site_truth(car: dict, dc: dict, design: StudyDesign) -> dict:
    """Per site: live cells, label per cell, totals, macrophage-held label (the false-positive part)."""
    out = {}
    q0 = design.car_t.label_per_cell
    for site, s in car["sites"].items():
        out[site] = {
            "population": "car_t",
            "live_cells": s["live_cells"],
            "label_per_live_cell": s["label_per_live_cell"],
            "label_live": s["label_live"],
            "label_macrophage": s["label_macrophage"],
            "iron_ng_total": (s["label_live"]["iron"] + s["label_macrophage"]["iron"]) / 1000.0,
            "apparent_cells_from_iron": (s["label_live"]["iron"] + s["label_macrophage"]["iron"]) / q0["iron"],
            "apparent_cells_from_19F": (s["label_live"]["f19"] + s["label_macrophage"]["f19"]) / q0["f19"],
            "mean_divisions": s["mean_divisions"],
            "false_positive_fraction_iron": (
                s["label_macrophage"]["iron"] / max(s["label_live"]["iron"] + s["label_macrophage"]["iron"], 1e-30)
            ),
        }
    src = car["source"]
    out["circulation"] = {
        "population": "car_t",
        "live_cells": src["cells"],
        "label_live": src["label_live"],
        "lung_trapped_fraction": src["lung_trapped_fraction"],
    }
    out["free_label"] = car["free_label"]
    out["cleared_label"] = car["cleared_label"]
    for site, s in dc["sites"].items():
        out[f"dc_vaccine:{site}"] = {
            "population": "dc_vaccine",
            "live_cells": s["live_cells"],
            "label_live": s["label_live"],
            "label_macrophage": s["label_macrophage"],
        }
    out["dc_vaccine:depot"] = {
        "population": "dc_vaccine",
        "live_cells": dc["source"]["cells"],
        "label_live": dc["source"]["label_live"],
    }
    return out


# --------------------------------------------------------------------------- writing
def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["napari-immunotrack"] + [str(p) for p in parts])


def _write_nifti(volume: Volume, path: Path, step: float | None, labels: bool = False):
    """NIfTI-1 with exactly the Volume's grid; noisy images as int16 with scl_slope = ``step``."""
    import nibabel as nib

    from ..affines import reverse_index_order
    from ..outputs import atomic_output

    data = volume.numpy()
    if labels:
        arr = data.astype(np.uint8)
    elif step:
        q = np.rint(data / step)
        if q.max() > 32767 or q.min() < -32768:
            step = float(max(abs(data.max()), abs(data.min())) / 32000.0)
            q = np.rint(data / step)
        arr = q.astype(np.int16)
    else:
        arr = data.astype(np.float32)
    arr = arr.transpose(2, 1, 0)
    aff = reverse_index_order(volume.affine)
    img = nib.Nifti1Image(arr, aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if step and not labels:
        img.header["scl_slope"] = step
        img.header["scl_inter"] = 0.0
    if labels:
        img.header.set_intent("label")
    with atomic_output(path, overwrite=True) as tmp:
        nib.save(img, str(tmp))
    return step


def write_truth_json(path: Path, obj) -> None:
    """Write a simulator JSON file (ground truth, dataset description): sorted keys, NumPy values as lists.

    Parameters
    ----------
    path : Path
        The file to write (replaced if it exists; not atomic: the study folder is).
    obj : object
        JSON-ready data; NumPy scalars become numbers, arrays lists, anything else unknown its str.

    Returns
    -------
    None

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_truth_json(Path(tmp) / "truth.json", {"b": np.float32(0.5), "a": np.arange(2)})
    ...     print(" ".join((Path(tmp) / "truth.json").read_text().split()))
    { "a": [ 0, 1 ], "b": 0.5 }
    """
    path.write_text(json.dumps(obj, indent=1, default=_default, sort_keys=True) + "\n", encoding="utf-8")


def _default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def write_timepoint(
    result: dict, session_dir: Path, subject_label: str, day: float, seed: int, design: StudyDesign, files: list
):
    """Write one session's images (from :func:`simulate_timepoint`) under ``session_dir``.

    MRI, labels, 19F and MPI as NIfTI with JSON sidecars (``anat/``, ``rois/``, ``f19/``,
    ``mpi/``, with the MPI fiducials as CSV), PET and SPECT as DICOM series (``pet/``, ``spect/``),
    the optical image as OME-TIFF (``optical/``); file names ``sub-<label>_ses-day<N>_<suffix>``.

    Parameters
    ----------
    result : dict
        The output of :func:`simulate_timepoint`.
    session_dir : Path
        The session folder (created as needed; files in it are replaced).
    subject_label : str
        E.g. "01".
    day : float
        Days after injection (names the session).
    seed : int
        Study seed (makes the DICOM UIDs reproducible).
    design : StudyDesign
        Gives the animal's weight for the DICOM headers.
    files : list
        Receives the path of every image written (a DICOM series as its folder).

    Returns
    -------
    None

    Examples
    --------
    >>> import tempfile
    >>> baseline = simulate_timepoint(0, subject=make_subject(1, seed=0), size="tiny")
    >>> written = []
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_timepoint(baseline, Path(tmp), "01", 0, 0, StudyDesign(), written)
    ...     [Path(f).relative_to(tmp).as_posix() for f in written][:2]
    ['anat/sub-01_ses-day0_T1w.nii.gz', 'anat/sub-01_ses-day0_T2w.nii.gz']
    """
    from ..io.dicom import write_dicom_series
    from ..io.tiff import write_ome_tiff

    ses = f"ses-{session_name(day)}"
    prefix = f"sub-{subject_label}_{ses}"
    vols, side = result["volumes"], result["sidecars"]
    plan = [
        ("T1w", "anat", f"{prefix}_T1w.nii.gz"),
        ("T2w", "anat", f"{prefix}_T2w.nii.gz"),
        ("T2starw", "anat", f"{prefix}_T2starw.nii.gz"),
        ("dseg", "rois", f"{prefix}_dseg.nii.gz"),
        ("f19", "f19", f"{prefix}_19F.nii.gz"),
        ("f19_reftube", "f19", f"{prefix}_desc-reftube_mask.nii.gz"),
        ("mpi", "mpi", f"{prefix}_mpi.nii.gz"),
    ]
    for key, folder, name in plan:
        if key not in vols:
            continue
        d = session_dir / folder
        d.mkdir(parents=True, exist_ok=True)
        is_label = vols[key].unit == "label"
        meta = dict(side.get(key, {}))
        step = meta.pop("quantisation_step", None)
        used = _write_nifti(vols[key], d / name, step, labels=is_label)
        if used:
            meta["QuantisationStep"] = used
        write_truth_json(d / name.replace(".nii.gz", ".json"), meta)
        files.append(str(d / name))
    if "dseg" in vols:
        tsv = session_dir / "rois" / f"{prefix}_dseg.tsv"
        tsv.write_text("index\tname\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(LABELS.items())), encoding="utf-8")
    if "mpi_fiducials" in result["tables"]:
        rows = result["tables"]["mpi_fiducials"]
        cols = ["name", "x_mm", "y_mm", "z_mm", "iron_ng"]
        text = (
            ",".join(cols)
            + "\n"
            + "".join(",".join(f"{r[c]!s}" if c == "name" else repr(float(r[c])) for c in cols) + "\n" for r in rows)
        )
        (session_dir / "mpi" / f"{prefix}_fiducials.csv").write_text(text, encoding="utf-8")
    for key, folder, modality in (("pet", "pet", "PT"), ("spect", "spect", "NM")):
        if key not in vols:
            continue
        v = vols[key]
        md = v.metadata
        pet = {
            k: md[k]
            for k in (
                "Units",
                "DecayCorrection",
                "CorrectedImage",
                "SeriesDate",
                "SeriesTime",
                "AcquisitionDate",
                "AcquisitionTime",
                "ActualFrameDuration",
                "Radiopharmaceutical",
                "RadionuclideTotalDose",
                "RadionuclideHalfLife",
                "RadiopharmaceuticalStartDateTime",
                "RadiopharmaceuticalStartTime",
            )
        }
        study = {
            "StudyInstanceUID": _uid(seed, subject_label, ses, "study"),
            "FrameOfReferenceUID": _uid(seed, subject_label, ses, key, "for"),
            "StudyDate": md["SeriesDate"],
            "StudyTime": md["SeriesTime"],
            "StudyDescription": "napari-immunotrack simulated mouse study",
        }
        patient = {
            "PatientName": f"SimMouse^{subject_label}",
            "PatientID": f"sim-{seed}-{subject_label}",
            "PatientWeight": design.patient_weight_kg,
            "PatientSex": "F",
            "PatientBirthDate": "20240101",
        }
        series_uid = _uid(seed, subject_label, ses, key, "series")
        extra = {
            "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": (lambda s, f, _k=key: _uid(seed, subject_label, ses, _k, "sop", s, f)),
        }
        write_dicom_series(
            v,
            session_dir / folder,
            series_description=v.name,
            modality=modality,
            patient=patient,
            study=study,
            pet=pet,
            rescale="per-slice",
            overwrite=True,
            series_number=2 if key == "pet" else 3,
            extra=extra,
            multiframe=(modality == "NM"),
        )
        files.append(str(session_dir / folder))
    if "fluo" in vols:
        d = session_dir / "optical"
        d.mkdir(parents=True, exist_ok=True)
        v = vols["fluo"]
        # the TIFF frame is nominal (rows along +y, columns along +x); the true placement is in the sidecar
        px = side["fluo"]["PixelSize_mm"]
        # canonical nominal frame: planes along S, rows along A, columns along R (what read_tiff assumes)
        nominal_affine = np.array([[0, 0, px, 0], [0, px, 0, 0], [px, 0, 0, 0], [0, 0, 0, 1.0]])
        nominal = Volume(v.numpy().astype(np.float32), nominal_affine, "OPT", "a.u.", {}, v.name)
        write_ome_tiff(nominal, d / f"{prefix}_fluo.ome.tif", overwrite=True)
        write_truth_json(d / f"{prefix}_fluo.json", side["fluo"])
        files.append(str(d / f"{prefix}_fluo.ome.tif"))


def make_study(
    out_dir,
    seed: int = 0,
    timepoints_days: Seq[float] = (0, 1, 3, 7),
    subjects: int = 1,
    size: str = "sample",
    overwrite: bool = False,
    progress=None,
    design: StudyDesign | None = None,
) -> Path:
    """Simulate and write a whole study with ``ground_truth.json`` at its root.

    Parameters
    ----------
    out_dir : folder to create (refused if it exists, unless ``overwrite``).
    seed : everything (anatomy, foci, noise, poses) follows from it.
    timepoints_days : days after injection; 0 = baseline MRI before injection.
    subjects : number of animals (anatomy differs by subject).
    size : "tiny" (tests), "sample" (the bundled study) or "full" (mouse-sized grids).
    overwrite : replace an existing ``out_dir``.
    progress : callable(fraction, message), optional.
    design : :class:`StudyDesign` (defaults documented there).

    Returns
    -------
    Path of the study folder.

    Examples
    --------
    A baseline-only tiny study (MRI); add days after injection for PET, SPECT, 19F, MPI and optical:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_study(Path(tmp) / "mouse_study", timepoints_days=(0,), size="tiny")
    ...     sorted(p.name for p in root.iterdir()), sorted(p.name for p in (root / "sub-01" / "ses-day0").iterdir())
    (['dataset_description.json', 'ground_truth.json', 'sub-01'], ['anat', 'rois'])
    """
    design = design or StudyDesign()
    design.check()
    check_size(size)
    days = check_timepoints(timepoints_days)
    if int(subjects) < 1:
        raise InputError(f"subjects={subjects} must be at least 1.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True.")
    # written in a temporary folder renamed at the end: a crash leaves the old folder or none, never half
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        truth = {
            "description": "Ground truth of a napari-immunotrack simulated study (see simulate/study.py).",
            "conventions": {
                "world": "RAS millimetres; each session's MRI world is the phantom world moved by the session's "
                "pose (sessions.<ses>.session_pose.phantom_to_mri_world; identity when every session "
                "lies on one bed); centroid_ras_mm are in that session's MRI world",
                "transforms": "mri_to_<modality>: 4x4 matrix mapping a point of MRI world (RAS mm) to the same "
                "anatomical point in that modality's world (RAS mm); identity for 19F",
                "times": "days after injection; day 0 is the baseline MRI scanned 30 min before injection",
                "labels": LABEL_UNITS_DOC,
                "macrophage": "label_macrophage is label carried by host macrophages (dead labelled cells, "
                "exocytosed label): signal without live cells, a false positive for cell counts",
            },
            "seed": int(seed),
            "size": size,
            "timepoints_days": days,
            "subjects": {},
            "design": design_to_dict(design),
            "confounders": [],
        }
        files: list = []
        n_steps = int(subjects) * len(days)
        step = 0
        for sub in range(1, int(subjects) + 1):
            subject = make_subject(sub, seed)
            mouse = subject.mouse
            conf = [
                {
                    "kind": "haemorrhage",
                    "label": "haemorrhage",
                    "centroid_ras_mm": mouse.confounders["haemorrhage"].center.tolist(),
                    "note": "early subacute: T1-bright, T2/T2*-dark, in the tumour",
                },
                {
                    "kind": "air",
                    "label": "gut_gas",
                    "centroid_ras_mm": mouse.confounders["gut_gas"].center.tolist(),
                    "note": "gas in the gut: dark on every MRI",
                },
                {
                    "kind": "vessel",
                    "label": "vessel",
                    "centroid_ras_mm": [-0.9, -5.0, -3.0],
                    "note": "aorta and vena cava along z: dark (flow void, short T2*)",
                },
                {
                    "kind": "bone",
                    "label": "bone",
                    "centroid_ras_mm": [0.0, -7.2, -3.0],
                    "note": "spine along z: dark everywhere",
                },
                {
                    "kind": "fat",
                    "label": "fat",
                    "centroid_ras_mm": [7.0, 1.0, -17.0],
                    "note": "subcutaneous fat and inguinal fat pads: T1-bright",
                },
                {
                    "kind": "lung",
                    "label": "lung",
                    "centroid_ras_mm": mouse.sites["lung"]["center_mm"].tolist(),
                    "note": "dark on T2*w",
                },
            ]
            sub_truth = {
                "seed": subject.seed,
                "sites": {
                    k: {"label": v["label"], "center_ras_mm": v["center_mm"].tolist(), "radius_mm": v["radius_mm"]}
                    for k, v in mouse.sites.items()
                },
                "labels": {str(k): v for k, v in LABELS.items()},
                "confounders": conf,
                "dc_depot": {"center_ras_mm": list(DC_DEPOT_CENTER), "radius_mm": DC_DEPOT_RADIUS},
                "injected": {
                    "car_t_cells": design.car_t.cells,
                    "car_t_label_per_cell": design.car_t.label_per_cell,
                    "dc_vaccine_cells": design.dc_vaccine.cells,
                    "dc_vaccine_label_per_cell": design.dc_vaccine.label_per_cell,
                    "injection_datetime": design.injection_datetime,
                    "doses_bq": {
                        "89Zr-oxine": design.car_t.cells * design.car_t.label_per_cell["zr89"],
                        "111In-oxine": design.car_t.cells * design.car_t.label_per_cell["in111"],
                    },
                    "half_lives_s": {"Zr-89": half_life_s("Zr-89"), "In-111": half_life_s("In-111")},
                    "iron_ng": design.car_t.cells * design.car_t.label_per_cell["iron"] / 1000.0,
                    "patient_weight_kg": design.patient_weight_kg,
                },
                "sessions": {},
            }
            if sub == 1:
                truth["confounders"] = conf
            for day in days:
                sub_progress = scaled(progress, step / n_steps, (step + 0.9) / n_steps)
                res = simulate_timepoint(day, subject=subject, size=size, design=design, progress=sub_progress)
                ses_dir = tmp / f"sub-{subject.label}" / f"ses-{session_name(day)}"
                ses_dir.mkdir(parents=True, exist_ok=True)
                write_timepoint(res, ses_dir, subject.label, day, seed, design, files)
                sub_truth["sessions"][f"ses-{session_name(day)}"] = res["truth"]
                step += 1
                report(progress, step / n_steps, f"sub-{subject.label} day {day:g} written")
            truth["subjects"][subject.label] = sub_truth
        truth["files"] = sorted(os.path.relpath(f, tmp) for f in files)
        write_truth_json(tmp / "ground_truth.json", truth)
        write_truth_json(
            tmp / "dataset_description.json",
            {
                "Name": "napari-immunotrack simulated mouse study",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [
                    {
                        "Name": "napari_immunotrack.simulate.study.make_study",
                        "Description": f"seed={seed}, size={size}, timepoints_days={days}",
                    }
                ],
            },
        )
    return out_dir


LABEL_UNITS_DOC = {
    "iron": "pg Fe",
    "f19": "19F atoms",
    "zr89": "Bq at injection (decay separately)",
    "in111": "Bq at injection (decay separately)",
    "dye": "fluorescence units",
    "dual_mode": "fmol metal",
}


def design_to_dict(design: StudyDesign) -> dict:
    """A study design as plain JSON-ready values (as recorded in ground_truth.json).

    Parameters
    ----------
    design : StudyDesign
        The design to record.

    Returns
    -------
    dict
        One key per design field; the cell populations as dicts of their fields, sequences as lists.

    Examples
    --------
    >>> record = design_to_dict(StudyDesign(snr=12.0))
    >>> record["snr"], record["field_t"], record["mpi_fiducials_ng"], record["car_t"]["name"]
    (12.0, 9.4, [1000.0, 5000.0, 10000.0], 'car_t')
    """
    out = {}
    for k, v in design.__dict__.items():
        if isinstance(v, Population):
            out[k] = {kk: vv for kk, vv in v.__dict__.items()}
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- listing
#: Display suggestions per modality: (colormap, blending, opacity).
DISPLAY = {
    "MR": ("gray", "translucent", 1.0),
    "PT": ("inferno", "additive", 0.7),
    "NM": ("magma", "additive", 0.7),
    "F19": ("cyan", "additive", 0.8),
    "MPI": ("green", "additive", 0.8),
    "OPT": ("yellow", "additive", 0.8),
    "SEG": ("labels", "translucent", 0.35),
}


def list_sample_files(root=None, session: str | None = None, subject: str | None = None) -> list[dict]:
    """The images of a simulated study with what a viewer needs to show them (pure; reads only JSON).

    Parameters
    ----------
    root : the study folder (holding ``ground_truth.json`` and ``sub-*``); default: the bundled
        sample study (:func:`napari_immunotrack.data.sample_study_root`).
    session : e.g. "day1" or "ses-day1" (default: every session).
    subject : e.g. "01" (default: every subject).

    Returns
    -------
    list of dict: ``path`` (file or DICOM folder), ``subject``, ``session``, ``day``, ``datatype``,
    ``modality``, ``is_labels``, ``colormap``, ``blending``, ``opacity``, ``name`` and, for the
    optical image, ``affine`` (index -> MRI-world RAS mm, pass it to the TIFF reader as ``affine=``),
    and, for PET, SPECT, MPI and 19F when the ground truth records it, ``mri_to_world`` (the true
    MRI-world -> modality-world map, for checking a registration; never needed to open the file).

    Raises
    ------
    InputError
        If ``root`` is not a folder.

    Examples
    --------
    >>> entries = list_sample_files(session="day1", subject="01")   # the bundled sample study
    >>> sorted({e["modality"] for e in entries})
    ['F19', 'MPI', 'MR', 'NM', 'OPT', 'PT', 'SEG']
    >>> [(e["name"], e["colormap"], e["blending"]) for e in entries if e["modality"] == "PT"]
    [('PET (day1)', 'inferno', 'additive')]
    """
    if root is None:
        from ..data import sample_study_root

        root = sample_study_root()
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the study folder (the one holding sub-* folders).")
    gt_path = root / "ground_truth.json"
    truth = json.loads(gt_path.read_text()) if gt_path.exists() else {}
    want_ses = None if session is None else (session if session.startswith("ses-") else f"ses-{session}")
    out = []
    for sub_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        sub = sub_dir.name[4:]
        if subject is not None and sub != subject:
            continue
        for ses_dir in sorted(
            (p for p in sub_dir.iterdir() if p.is_dir() and p.name.startswith("ses-")), key=lambda p: _day_of(p.name)
        ):
            if want_ses is not None and ses_dir.name != want_ses:
                continue
            ses_truth = truth.get("subjects", {}).get(sub, {}).get("sessions", {}).get(ses_dir.name, {})
            for type_dir in sorted(p for p in ses_dir.iterdir() if p.is_dir()):
                entries = []
                if type_dir.name in ("pet", "spect"):
                    modality = "PT" if type_dir.name == "pet" else "NM"
                    entries.append((type_dir, modality, False, type_dir.name.upper()))
                else:
                    for f in sorted(type_dir.iterdir()):
                        name = f.name
                        if not name.endswith((".nii.gz", ".ome.tif")):
                            continue
                        side = f.with_name(name.replace(".nii.gz", ".json").replace(".ome.tif", ".json"))
                        meta = json.loads(side.read_text()) if side.exists() else {}
                        modality = meta.get("Modality", "MR")
                        is_labels = modality == "SEG"
                        label = name.split("_")[-1].replace(".nii.gz", "").replace(".ome.tif", "")
                        if "desc-reftube" in name:
                            label = "19F reference tube"
                        entries.append((f, modality, is_labels, label))
                for path, modality, is_labels, label in entries:
                    cmap, blending, opacity = DISPLAY.get(modality, ("gray", "translucent", 1.0))
                    item = {
                        "path": path,
                        "subject": sub,
                        "session": ses_dir.name[4:],
                        "day": _day_of(ses_dir.name),
                        "datatype": type_dir.name,
                        "modality": modality,
                        "is_labels": is_labels,
                        "colormap": cmap,
                        "blending": blending,
                        "opacity": opacity,
                        "name": f"{label} ({ses_dir.name[4:]})",
                    }
                    if modality == "OPT":
                        side = Path(str(path).replace(".ome.tif", ".json"))
                        if side.exists():
                            item["affine"] = np.array(json.loads(side.read_text())["ImageToWorldAffine"])
                    key = {"PT": "pet", "NM": "spect", "MPI": "mpi", "F19": "f19"}.get(modality)
                    if key and key in ses_truth:
                        item["mri_to_world"] = np.array(ses_truth[key].get(f"mri_to_{key}", np.eye(4)))
                    out.append(item)
    return out


def _day_of(session_name: str) -> float:
    import re

    m = re.search(r"day(\d+(?:p\d+)?)", session_name)
    return float(m.group(1).replace("p", ".")) if m else -1.0


# old private names (kept for callers written before they were made public)
_check_size, _session_name, _json, _design_dict = check_size, session_name, write_truth_json, design_to_dict
