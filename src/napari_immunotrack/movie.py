"""Time-lapse movies of the labelled-cell signal over a study's timepoints (pure; no napari).

One key frame per timepoint shows a track (PET, SPECT, 19F, MPI or the
T2*-weighted MRI) over the session's anatomy, on one slice through world
coordinates or as a projection, with a scale bar in mm, the time stamp
("day 3"), orientation letters and one colour bar whose range is shared by
every timepoint (robust percentiles of the non-zero values shown, see
:func:`napari_immunotrack.figures.robust_range`), so brighter means more
label on every frame. Between key frames the movie holds each timepoint and
cross-fades to the next (a visual transition only: no value is interpolated
between scans, so nothing is shown that was not measured). The 3D variant
turns a maximum-intensity projection of the track around the body's
long (S) axis at each timepoint.

Geometry
--------
Every overlay is placed in its session's anatomy world through the session's
saved registration (``xfm/*_from-<datatype>_to-anat.tfm``); sessions are
assumed to share one world (as the Study dock assumes: register the
timepoints to the first, e.g. with ``immunotrack register``, before making a
movie of an animal that moved). The slice position is the same world
coordinate on every frame (default: the peak of the track's summed signal).

Output
------
GIF is written with Pillow (always available). MP4 (H.264) is written by an
``ffmpeg`` program found on the PATH (or named by ``IMMUNOTRACK_FFMPEG``);
the plugin does not bundle one because the ffmpeg builds shipped in Python
wheels (imageio-ffmpeg, PyAV) include GPL parts (x264) and this package is
BSD-3-Clause. Both are written atomically with a ``.provenance.json`` sidecar.

Examples
--------
>>> from napari_immunotrack.data import sample_study_root          # doctest: +SKIP
>>> result = make_movie(sample_study_root(), "pet.gif", track="PET", size=(960, 540))  # doctest: +SKIP
>>> result.key_days                                                 # doctest: +SKIP
[0.0, 1.0, 3.0, 7.0]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImmunotrackWarning, InputError
from .volume import Volume

#: Tracks a movie can show: track -> (study role, what the colour bar says when the file has no unit).
TRACKS = {"PET": "PET", "SPECT": "SPECT", "19F": "19F", "MPI": "MPI", "T2starw": "T2starw"}
#: Anatomy preferred under the overlay, first found wins.
ANATOMY_ORDER = ("T2w", "T2starw", "T1w", "MR", "CT")
PLANE_CHOICES = ("axial", "coronal", "sagittal", "mip")
#: Frame height (pixels) at which the figure's point sizes are designed; text scales with the frame.
_DESIGN_INCHES = 5.4


@dataclass
class MovieTimepoint:
    """One timepoint of a movie: the anatomy and the track placed in the anatomy's world."""

    session: str
    day: float | None
    anatomy: Volume | None
    overlay: Volume | None
    note: str = ""
    anatomy_label: str = ""
    subject: str = ""

    @property
    def stamp(self) -> str:
        """The time stamp drawn on the frame ("day 3", or the session name without a day)."""
        return f"day {self.day:g}" if self.day is not None else self.session


@dataclass
class KeyFrame:
    """A rendered timepoint: RGB pixels and where the time stamp sits (pixel box rows/cols)."""

    image: np.ndarray
    stamp: str
    stamp_box: tuple[int, int, int, int]
    info: dict = field(default_factory=dict)


@dataclass
class MovieResult:
    """What was written: the file, frame count and size, the timepoints and the colour range."""

    path: Path | None
    n_frames: int
    size: tuple[int, int]
    fps: float
    key_days: list[float | None]
    stamps: list[str]
    colorbar_range: tuple[float, float] | None
    threshold: float | None
    unit: str
    plane: str
    position_mm: float | None
    warnings: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    key_frames: list[KeyFrame] = field(default_factory=list)


# --------------------------------------------------------------------------- loading
def _calibrate_19f(f19: Volume, tube: Volume, reference_mM: float) -> Volume:
    """19F in mM: the reference tube's mean is ``reference_mM`` (docs/methods/fluorine.md)."""
    data = f19.numpy().astype(np.float32)
    mask = tube.resample_to(f19, order=0).numpy() > 0 if not tube.same_grid(f19) else tube.numpy() > 0
    ref = float(data[mask].mean()) if mask.any() else 0.0
    if not ref > 0:
        raise InputError("the 19F reference tube is empty or has no signal; cannot calibrate 19F to mM.")
    return f19.replace(data=data / ref * float(reference_mM), unit="mM", name="19F")


def _sidecar(path: Path) -> dict:
    text = str(path)
    for end in (".nii.gz", ".nii", ".ome.tif", ".tif"):
        if text.endswith(end):
            side = Path(text[: -len(end)] + ".json")
            if side.is_file():
                try:
                    return json.loads(side.read_text())
                except (OSError, ValueError):
                    return {}
    return {}


def _nice_unit(volume: Volume) -> Volume:
    """Bq/mL in kBq/mL or MBq/mL so the colour bar's numbers stay short."""
    if str(volume.unit) == "Bq/mL":
        peak = float(np.nanmax(volume.numpy())) if volume.numpy().size else 0.0
        for factor, unit in ((1e6, "MBq/mL"), (1e3, "kBq/mL")):
            if peak >= 10 * factor:
                return volume.replace(data=volume.numpy().astype(np.float32) / factor, unit=unit)
    return volume


def load_track_series(
    study_root, track: str = "PET", *, subject: str | None = None, anatomy: str | None = None, progress=None
) -> tuple[list[MovieTimepoint], list[str]]:
    """The timepoints of one subject's ``track`` over its anatomy, each in its session's anatomy world.

    Parameters
    ----------
    study_root : path of a study folder (see :mod:`napari_immunotrack.study`).
    track : "PET", "SPECT", "19F" (calibrated to mM with the reference tube when one is saved),
        "MPI" or "T2starw" (the MRI alone: iron clusters are its dark spots).
    subject : subject id (default: the only subject; required when there are several).
    anatomy : role of the underlay (default: the first of T2w, T2*w, T1w, MR, CT found).
    progress : callable(fraction, message), optional.

    Returns
    -------
    (timepoints, warnings): every session with an anatomy, in time order; a session without
    the track keeps its anatomy and says so in ``note`` (e.g. the pre-injection baseline).

    Examples
    --------
    >>> import tempfile, warnings
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> from napari_immunotrack.io import save_volume
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for day, bq_ml in ((1, 1000.0), (3, 4000.0)):                # a two-session study, NIfTI only
    ...     session = Path(tmp.name) / "sub-01" / f"ses-day{day}"
    ...     (session / "anat").mkdir(parents=True); (session / "pet").mkdir()
    ...     _ = save_volume(Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR"),
    ...                     session / "anat" / f"sub-01_ses-day{day}_T2w.nii.gz")
    ...     data = np.zeros((8, 8, 8), np.float32); data[3:5, 3:5, 3:5] = bq_ml
    ...     _ = save_volume(Volume(data, grid, "PT"), session / "pet" / f"sub-01_ses-day{day}_pet.nii.gz")
    >>> with warnings.catch_warnings(record=True):
    ...     series, notes = load_track_series(tmp.name, "PET")
    >>> [(t.stamp, float(t.overlay.numpy().max())) for t in series], len(notes)   # no registration, no unit: 3 notes
    ([('day 1', 1000.0), ('day 3', 4000.0)], 3)
    >>> tmp.cleanup()
    """
    from .figures import in_reference_world
    from .io import load_volume
    from .io.transforms import read_transform
    from .progress import report
    from .study import open_study

    if track not in TRACKS:
        raise InputError(f"track {track!r} is not one a movie can show; use one of {', '.join(TRACKS)}.")
    study = open_study(study_root)
    subjects = study.subjects()
    if subject is None:
        if len(subjects) > 1:
            raise InputError(
                f"the study holds {len(subjects)} subjects ({', '.join(subjects)}); choose one with --subject."
            )
        subject = subjects[0]
    subject = str(subject).removeprefix("sub-")
    if subject not in subjects:
        raise InputError(f"subject {subject!r} is not in the study; subjects are {', '.join(subjects)}.")
    role = TRACKS[track]
    notes: list[str] = []
    out: list[MovieTimepoint] = []
    sessions = study.sessions(subject)
    for i, session in enumerate(sessions):
        report(progress, i / max(len(sessions), 1), f"loading {session}")
        under = None
        order = (anatomy,) if anatomy else ANATOMY_ORDER
        if track == "T2starw" and not anatomy:
            order = ("T2starw",)
        under_label = ""
        for a in order:
            f = study.file(subject, session, a)
            if f is not None:
                under, under_label = load_volume(f.path), f.label
                break
        if under is None:
            continue  # a session without anatomy (e.g. optical only) has nothing to draw under the signal
        day = study.day(subject, session)
        if track == "T2starw":
            out.append(MovieTimepoint(session, day, under, None, anatomy_label=under_label))
            continue
        f = study.file(subject, session, role)
        if f is None:
            out.append(
                MovieTimepoint(
                    session, day, under, None, note=f"no {track} at this timepoint", anatomy_label=under_label
                )
            )
            continue
        over = load_volume(f.path)
        if over.data.ndim == 4:
            over = over.replace(data=over.numpy()[0])
        xfm = study.transform_for(f)
        if xfm is not None:
            over = in_reference_world(over, read_transform(xfm.path))
        elif f.datatype not in ("anat", "f19"):
            msg = (
                f"{session}: no saved registration of {track} to the anatomy (xfm/*_from-{f.datatype}_to-anat.tfm); "
                "shown where its header places it."
            )
            notes.append(msg)
        if track == "19F":
            side = _sidecar(f.path)
            tube = study.file(subject, session, "ROI:reftube")
            if tube is not None:
                over = _calibrate_19f(over, load_volume(tube.path), float(side.get("ReferenceConcentration_mM", 100.0)))
            else:
                notes.append(f"{session}: no 19F reference-tube mask; 19F shown uncalibrated ({over.unit}).")
        over = _nice_unit(over.replace(name=track))
        out.append(MovieTimepoint(session, day, under, over, anatomy_label=under_label))
    if not out:
        raise InputError(f"subject {subject} has no anatomical image (T2w, T2*w, T1w) to draw the movie on.")
    if track != "T2starw" and all(t.overlay is None for t in out):
        raise InputError(
            f"subject {subject} has no {track} image at any timepoint; tracks found: "
            f"{', '.join(study.tracks(subject))}."
        )
    out.sort(key=lambda t: (t.day if t.day is not None else np.inf, t.session))
    for t in out:
        t.subject = subject
    units = {str(t.overlay.unit) for t in out if t.overlay is not None}
    if len(units) > 1:
        raise InputError(
            f"the {track} images are in different units ({', '.join(sorted(units))}); one colour bar "
            "cannot show them; calibrate them alike first."
        )
    unit = next((str(t.overlay.unit) for t in out if t.overlay is not None), "")
    if track != "T2starw" and unit.strip().lower() in ("a.u.", "au", "arbitrary", ""):
        notes.append(
            f"the {track} images are in arbitrary units ({unit or 'no unit'}); calibrate them (PET Bq/mL or "
            "SUV, 19F mM against the reference tube, MPI ng Fe with fiducials) for a colour bar in physical "
            "units."
        )
    report(progress, 1.0, "loaded")
    return out, notes


# --------------------------------------------------------------------------- geometry of the frames
def _peak_position(series: Sequence[MovieTimepoint], plane: str) -> float:
    """World coordinate (along the plane's normal) of the strongest smoothed signal inside the body
    (the anatomy above 20 % of its 99.5th percentile, holes filled) over all timepoints."""
    from scipy import ndimage

    from .figures import PLANES

    normal = PLANES[plane]["normal"]
    base = next(t.anatomy for t in series if t.anatomy is not None)
    best, where = -np.inf, float(base.center_world()[normal])
    for t in series:
        if t.overlay is None:
            continue
        data = np.nan_to_num(t.overlay.numpy().astype(np.float32))
        smooth = ndimage.uniform_filter(data, 3)
        if t.anatomy is not None:
            # inside the body only: calibration fiducials and reference tubes sit outside it
            anat = t.anatomy.resample_to(t.overlay, order=0, fill=0).numpy()
            anat = np.nan_to_num(np.asarray(anat, np.float32))
            if anat.any():
                from .figures import robust_range

                hi = robust_range(anat)[1]
                body = ndimage.binary_opening(anat > 0.2 * hi, iterations=1)
                body = ndimage.binary_fill_holes(ndimage.binary_closing(body, iterations=2))
                if body.any():
                    smooth = np.where(body, smooth, -np.inf)
        idx = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
        if smooth[idx] > best:
            best = float(smooth[idx])
            where = float(t.overlay.index_to_world(np.array([idx], float))[0][normal])
    lo, hi = _box(base)[:, normal]
    return float(np.clip(where, lo, hi))


def _box(volume: Volume) -> np.ndarray:
    from .figures import world_box

    return world_box(volume)


def shared_range(series: Sequence[MovieTimepoint], plane: str, position_mm: float | None) -> tuple | None:
    """One colour range for every frame: robust percentiles of the non-zero values shown on all of them.

    Parameters
    ----------
    series : sequence of MovieTimepoint
        The timepoints (those without an overlay are skipped).
    plane : {"axial", "coronal", "sagittal", "mip"}
        What each frame shows (for "mip", the maximum projection's values).
    position_mm : float or None
        Slice position along the plane's normal, world mm.

    Returns
    -------
    (float, float) or None
        1st and 99.5th percentiles of the non-zero values shown (see
        :func:`~napari_immunotrack.figures.robust_range`); None when no timepoint has an overlay.

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))       # 8 mm cubes centred on 0
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR")
    >>> def pet(bq_ml):
    ...     data = np.zeros((8, 8, 8), np.float32); data[3:5, 3:5, 3:5] = bq_ml
    ...     return Volume(data, grid, "PT", "Bq/mL")
    >>> series = [MovieTimepoint("day1", 1.0, anatomy, pet(1000.0)), MovieTimepoint("day3", 3.0, anatomy, pet(4000.0))]
    >>> shared_range(series, "axial", 0.0)
    (1000.0, 4000.0)
    """
    from .figures import PLANES, display_grid, robust_range, sample_plane

    values = []
    for t in series:
        if t.overlay is None:
            continue
        if plane == "mip":
            values.append(_projection(t.overlay, "max", 0.0)[0].ravel())
            continue
        p = PLANES[plane]
        box = _box(t.anatomy)
        grid = display_grid(
            plane,
            position_mm,
            (box[0][p["h"]], box[1][p["h"]]),
            (box[0][p["v"]], box[1][p["v"]]),
            float(np.min(t.overlay.spacing)),
        )
        values.append(sample_plane(t.overlay, grid).ravel())
    if not values:
        return None
    return robust_range(np.concatenate(values))


_ALIGNED: dict = {}


def display_threshold(series: Sequence[MovieTimepoint], value_range: tuple) -> float:
    """The value above which the track is drawn: 10 % up the colour range, or the noise floor when higher.

    The noise floor is the background's median + 3.5 robust SDs (1.4826 x MAD) of the non-zero
    values of every timepoint; for magnitude (Rician) images such as 19F MRI this is about SNR 3.5,
    the detection threshold of docs/methods/fluorine.md, so noise is not painted as labelled cells.

    Parameters
    ----------
    series : sequence of MovieTimepoint
        The timepoints (their overlays' non-zero values set the noise floor).
    value_range : (float, float)
        The shared colour range (:func:`shared_range`).

    Returns
    -------
    float
        The threshold, in the overlay's unit.

    Examples
    --------
    >>> noise = np.abs(np.random.default_rng(0).normal(50, 5, (8, 8, 8))).astype(np.float32)   # 19F-like background
    >>> noise[3:5, 3:5, 3:5] = 2000.0
    >>> series = [MovieTimepoint("day1", 1.0, None, Volume(noise, np.eye(4), "F19"))]
    >>> round(display_threshold(series, (0.0, 100.0)), 1), display_threshold(series, (0.0, 4000.0))
    (68.2, 400.0)
    """
    lo, hi = value_range
    floor = -np.inf
    for t in series:
        if t.overlay is None:
            continue
        v = np.asarray(t.overlay.numpy(), np.float32).ravel()
        v = v[np.isfinite(v) & (v != 0)]
        if v.size:
            if v.size > 2_000_000:
                v = v[:: v.size // 1_000_000]
            med = float(np.median(v))
            mad = float(np.median(np.abs(v - med)))
            floor = max(floor, med + 3.5 * 1.4826 * mad)
    return float(max(lo + 0.1 * (hi - lo), floor))


def _projection(volume: Volume, how: str, angle_deg: float, spacing: float | None = None):
    """A coronal projection (viewer in front, looking posterior) after turning the body by ``angle_deg``
    about the S axis: (image rows top = superior, extent in mm)."""
    from scipy import ndimage

    # about 100 samples across: a turning projection is a view, not a measurement, and rotating a
    # finer grid costs the cube of the resolution on every view
    sp = spacing or max(float(np.min(volume.spacing)), float(np.max(_box(volume)[1] - _box(volume)[0])) / 100.0)
    key = (id(volume), round(sp, 6))
    if key not in _ALIGNED:  # resampling once per volume, not once per view of a turn
        if len(_ALIGNED) > 8:
            _ALIGNED.clear()
        shape, affine = volume.axis_aligned_grid(sp)
        data = (
            volume.replace(data=volume.numpy().astype(np.float32))
            .resample_to((shape, affine), order=1, fill=0.0)
            .numpy()
        )
        _ALIGNED[key] = (np.nan_to_num(np.asarray(data)), shape, affine, volume)  # array axes (z, y, x)
    data, shape, affine, _ = _ALIGNED[key]
    if angle_deg:
        data = ndimage.rotate(data, angle_deg, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
    img = data.max(axis=1) if how == "max" else data.mean(axis=1)  # project along y (A-P)
    img = img[::-1]  # rows: superior at the top
    lo = affine[:3, 3] - sp / 2
    extent = (lo[0], lo[0] + shape[2] * sp, lo[2], lo[2] + shape[0] * sp)
    return img, extent


# --------------------------------------------------------------------------- rendering
def _figure(size: tuple[int, int]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    dpi = height / _DESIGN_INCHES
    fig = Figure(figsize=(width / dpi, _DESIGN_INCHES), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig, size) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    width, height = size
    out = np.zeros((height, width, 3), np.uint8)  # Agg may round a pixel off; pad or crop to the exact size
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def _text_box(fig, artist, size) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) pixels of a text artist, a little padded, inside the frame."""
    bb = artist.get_window_extent(renderer=fig.canvas.get_renderer())
    width, height = size
    pad = int(0.01 * height)
    r0, r1 = int(height - bb.y1) - pad, int(height - bb.y0) + pad
    c0, c1 = int(bb.x0) - pad, int(bb.x1) + pad
    return max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)


def render_key_frame(
    t: MovieTimepoint,
    *,
    plane: str,
    position_mm: float | None,
    size: tuple[int, int],
    overlay_range: tuple | None,
    title: str,
    unit_label: str,
    cmap: str | None = None,
    threshold: float | None = None,
    angle_deg: float = 0.0,
    unit: str = "",
    letter_corner: str | None = None,
) -> KeyFrame:
    """One frame (RGB uint8, ``size`` = (width, height) pixels) of one timepoint.

    The image fills the left of the frame, the colour bar (``overlay_range``, shared by every frame)
    the right; the time stamp is large at the top left, the title at the top. The track is drawn
    above ``threshold`` (default: 10 % up the colour range), marked on the colour bar.

    Parameters
    ----------
    t : MovieTimepoint
        The timepoint.
    plane : {"axial", "coronal", "sagittal", "mip"}
        The view.
    position_mm : float or None
        Slice position, world mm (None: the anatomy's centre).
    size : (int, int)
        Frame width and height, pixels.
    overlay_range : (float, float) or None
        The colour bar's range, shared by every frame.
    title : str
        Drawn at the top.
    unit_label : str
        The colour bar's label.
    cmap : str, optional
        Matplotlib colour map of the track (default by modality).
    threshold : float, optional
        Track values below are not drawn.
    angle_deg : float, default 0.0
        View angle about the S axis ("mip" only).
    unit : str, optional
        The track's unit (for the colour bar ticks).
    letter_corner : str, optional
        Corner of the orientation letters (default: the emptiest).

    Returns
    -------
    KeyFrame
        ``image`` (height, width, 3) uint8, the time ``stamp`` and its pixel box, and ``info``.

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))       # 8 mm cubes centred on 0
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR")
    >>> def pet(bq_ml):
    ...     data = np.zeros((8, 8, 8), np.float32); data[3:5, 3:5, 3:5] = bq_ml
    ...     return Volume(data, grid, "PT", "Bq/mL")
    >>> series = [MovieTimepoint("day1", 1.0, anatomy, pet(1000.0)), MovieTimepoint("day3", 3.0, anatomy, pet(4000.0))]
    >>> key = render_key_frame(series[0], plane="axial", position_mm=0.0, size=(320, 180),
    ...                        overlay_range=(1000.0, 4000.0), title="PET", unit_label="Bq/mL")
    >>> key.image.shape, key.image.dtype, key.stamp
    ((180, 320, 3), dtype('uint8'), 'day 1')
    """
    import matplotlib.patheffects as pe
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from . import figures as F

    fig = _figure(size)
    width, height = size
    cbar_px = 0.16 * height + 60
    left, bottom, top = 0.01, 0.03, 0.88
    img_w = max(1.0 - left - (cbar_px + 0.02 * width) / width, 0.3)
    ax = fig.add_axes([left, bottom, img_w, top - bottom])
    info: dict = {}
    lo_hi = overlay_range
    if lo_hi is not None and threshold is None:
        threshold = lo_hi[0] + 0.1 * (lo_hi[1] - lo_hi[0])
    with F.figure_style():
        modality = t.overlay.modality if t.overlay is not None else "MR"
        cm_name = cmap or F.MODALITY_CMAP.get(modality, "inferno")
        if plane == "mip":
            ax.set_facecolor("black")
            a_img, extent = _projection(t.anatomy, "mean", angle_deg)
            a_lo, a_hi = F.robust_range(a_img, nonzero=True)
            ax.imshow(a_img, cmap="gray", vmin=a_lo, vmax=a_hi, extent=extent, origin="upper", interpolation="bilinear")
            if t.overlay is not None and lo_hi is not None:
                o_img, o_ext = _projection(
                    t.overlay, "max", angle_deg, spacing=abs(extent[1] - extent[0]) / a_img.shape[1]
                )
                lo, hi = lo_hi
                shown = np.ma.masked_where(o_img < threshold, o_img)
                ax.imshow(
                    shown,
                    cmap=colormaps[cm_name],
                    vmin=lo,
                    vmax=hi,
                    alpha=0.85,
                    extent=o_ext,
                    origin="upper",
                    interpolation="bilinear",
                )
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_aspect("equal")
            ax.axis("off")
            F._scale_bar(ax, extent, F._nice_length(extent[1] - extent[0]))
            if angle_deg % 360 == 0:  # turned views have no fixed left/right: the title gives the angle
                marker = F._orientation_letters(
                    ax, "coronal", False, image=a_img, corner=letter_corner, avoid=("lower right",)
                )
                info["letter_corner"] = marker["corner"]
            info.update(extent_mm=tuple(float(e) for e in extent), angle_deg=float(angle_deg))
        else:
            box = _box(t.anatomy)
            p = F.PLANES[plane]
            axes_px = img_w * width
            fov_w = box[1][p["h"]] - box[0][p["h"]]
            pixel_mm = max(fov_w / axes_px, float(np.min(t.anatomy.spacing)) / 4)
            kw = {}
            if t.overlay is not None and lo_hi is not None:
                kw = dict(overlay_range=lo_hi, overlay_threshold=threshold, overlay_cmap=cm_name)
            with warnings.catch_warnings():  # said once for the whole movie (make_movie), not once per frame
                warnings.simplefilter("ignore", ImmunotrackWarning)
                panel = F.draw_fused(
                    ax,
                    t.anatomy,
                    t.overlay if lo_hi is not None else None,
                    (),
                    plane=plane,
                    position_mm=position_mm,
                    pixel_mm=pixel_mm,
                    letter_corner=letter_corner,
                    **kw,
                )
            panel.pop("_mappable", None)
            info.update(
                {k: v for k, v in panel.items() if k in ("extent_mm", "position_mm", "pixel_mm", "letter_corner")}
            )
        effects = [pe.withStroke(linewidth=2.5, foreground="black")]
        stamp = fig.text(
            0.015,
            0.975,
            t.stamp,
            color="white",
            fontsize=22,
            fontweight="bold",
            ha="left",
            va="top",
            path_effects=effects,
        )
        fig.text(0.5, 0.975, title, color="white", fontsize=11, ha="center", va="top")
        if t.note:
            fig.text(0.015, 0.89, t.note, color="#E69F00", fontsize=9, ha="left", va="top")
        if lo_hi is not None:
            ax.apply_aspect()  # the image's drawn box: the colour bar goes right beside it
            pos = ax.get_position()
            cax = fig.add_axes(
                [
                    min(pos.x1 + 0.02, 1 - cbar_px / width),
                    pos.y0 + 0.1 * pos.height,
                    0.018 * height / width,
                    0.8 * pos.height,
                ]
            )
            cb = fig.colorbar(ScalarMappable(norm=Normalize(*lo_hi), cmap=colormaps[cm_name]), cax=cax)
            cb.set_label(unit_label, color="white", fontsize=10)
            if lo_hi[0] < threshold < lo_hi[1]:
                cax.axhline(threshold, color="white", linewidth=1.2)
                cax.text(
                    0.0,
                    1.02,
                    f"shown above {threshold:.3g} {unit}".rstrip(),
                    transform=cax.transAxes,
                    color="white",
                    fontsize=7,
                    ha="left",
                    va="bottom",
                )
            info["threshold"] = float(threshold)
            cax.tick_params(colors="white", labelsize=8)
            cb.outline.set_edgecolor("white")
        image = _pixels(fig, size)
        box_px = _text_box(fig, stamp, size)
    fig.clear()
    return KeyFrame(image, t.stamp, box_px, info)


# --------------------------------------------------------------------------- timeline
def timeline(n_keys: int, fps: float, hold_s: float, fade_s: float) -> list[tuple[int, int, float, float]]:
    """The movie as (key a, key b, blend of b, duration s) per output frame (GIF) at constant ``fps`` (MP4).

    Each key frame is held ``hold_s`` seconds, then cross-fades to the next over ``fade_s`` seconds.

    Parameters
    ----------
    n_keys : int
        Number of key frames (timepoints, or views).
    fps : float
        Output frames per second.
    hold_s : float
        Seconds each key frame is shown alone.
    fade_s : float
        Seconds of each cross-fade (0: a cut).

    Returns
    -------
    list of (int, int, float, float)
        Per output frame: key a, key b, weight of b (0-1) and the frame's duration, s.

    Examples
    --------
    >>> [(a, b, round(w, 2)) for a, b, w, _ in timeline(2, fps=4, hold_s=0.5, fade_s=0.5)]
    [(0, 0, 0.0), (0, 0, 0.0), (0, 1, 0.33), (0, 1, 0.67), (1, 1, 0.0), (1, 1, 0.0)]
    """
    n_hold = max(int(round(hold_s * fps)), 1)
    n_fade = max(int(round(fade_s * fps)), 0)
    frames = []
    for k in range(n_keys):
        frames += [(k, k, 0.0, 1.0 / fps)] * n_hold
        if k + 1 < n_keys:
            frames += [(k, k + 1, (j + 1) / (n_fade + 1), 1.0 / fps) for j in range(n_fade)]
    return frames


def _compose(keys: Sequence[KeyFrame], a: int, b: int, w: float) -> np.ndarray:
    """A cross-faded frame; the time stamp is the nearer timepoint's, never a ghost of both."""
    if a == b or w <= 0:
        return keys[a].image
    frame = (keys[a].image.astype(np.float32) * (1 - w) + keys[b].image.astype(np.float32) * w + 0.5).astype(np.uint8)
    near = keys[a] if w < 0.5 else keys[b]
    for key in (keys[a], keys[b]):  # clear both stamps, then draw the nearer one
        r0, r1, c0, c1 = key.stamp_box
        frame[r0:r1, c0:c1] = near.image[r0:r1, c0:c1]
    return frame


def iter_frames(keys: Sequence[KeyFrame], spec) -> Iterator[np.ndarray]:
    """The frames of a timeline (see :func:`timeline`), made one at a time (a 1080p frame is 6 MB).

    Parameters
    ----------
    keys : sequence of KeyFrame
        The rendered timepoints.
    spec : list of (int, int, float, float)
        The timeline.

    Returns
    -------
    iterator of ndarray
        RGB uint8 frames; during a fade the time stamp is the nearer timepoint's.

    Examples
    --------
    >>> black = KeyFrame(np.zeros((2, 4, 3), np.uint8), "day 1", (0, 1, 0, 1))
    >>> white = KeyFrame(np.full((2, 4, 3), 200, np.uint8), "day 3", (0, 1, 0, 1))
    >>> [int(f[1, 3, 0]) for f in iter_frames([black, white], timeline(2, fps=4, hold_s=0.25, fade_s=0.5))]
    [0, 67, 133, 200]
    """
    for a, b, w, _ in spec:
        yield _compose(keys, a, b, w)


# --------------------------------------------------------------------------- writing
def find_ffmpeg() -> str | None:
    """The ffmpeg program used for MP4: ``IMMUNOTRACK_FFMPEG`` or ``ffmpeg`` on the PATH, else None.

    Returns
    -------
    str or None
        The executable's path, when it exists.

    Examples
    --------
    >>> exe = find_ffmpeg()
    >>> exe is None or Path(exe).exists()
    True
    """
    exe = os.environ.get("IMMUNOTRACK_FFMPEG") or shutil.which("ffmpeg")
    return exe if exe and Path(exe).exists() else None


def _write_gif(frames: Iterator[np.ndarray], durations: Sequence[float], path: Path) -> int:
    """Write a GIF; consecutive identical frames become one longer frame. Returns the frames written."""
    from PIL import Image

    kept, seconds, last = [], [], None
    for frame, d in zip(frames, durations, strict=True):
        if last is not None and np.array_equal(frame, last):
            seconds[-1] += d  # e.g. a fade between two timepoints that show the same data
            continue
        kept.append(
            Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        )
        seconds.append(d)
        last = frame
    # GIF delays are in hundredths of a second; Pillow takes milliseconds
    ms = [max(int(round(d * 100)) * 10, 20) for d in seconds]
    kept[0].save(
        path, format="GIF", save_all=True, append_images=kept[1:], duration=ms, loop=0, optimize=False, disposal=1
    )
    return len(kept)


def _write_mp4(frames: Iterator[np.ndarray], size: tuple[int, int], fps: float, path: Path, exe: str) -> None:
    width, height = size
    cmd = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:g}",
        "-i",
        "-",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(path),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in frames:
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise InputError(
            f"ffmpeg ({exe}) could not write the MP4: {' '.join(err.split())[:200]}; write a GIF "
            "instead (-o movie.gif)."
        )


def parse_size(text) -> tuple[int, int]:
    """ "1920x1080" -> (1920, 1080); both even (H.264 needs even sizes), 64-7680 wide and 64-4320 high.

    Parameters
    ----------
    text : str or (int, int)
        "WIDTHxHEIGHT" (``x`` or ``×``) or a pair.

    Returns
    -------
    (int, int)
        Width and height, pixels.

    Raises
    ------
    InputError
        Not two integers, odd, or out of range.

    Examples
    --------
    >>> parse_size("1280x720"), parse_size((640, 480))
    ((1280, 720), (640, 480))
    >>> parse_size("1281x720")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: size 1281x720: width and height must be even numbers of pixels, 64-7680 x 64-4320 (e.g. 1920x1080 or 1280x720).
    """
    try:
        if isinstance(text, str):
            w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
        else:
            w, h = (int(v) for v in text)
    except (ValueError, TypeError):
        raise InputError(f"size {text!r} must be WIDTHxHEIGHT in pixels, e.g. 1920x1080.") from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320) or w % 2 or h % 2:
        raise InputError(
            f"size {w}x{h}: width and height must be even numbers of pixels, 64-7680 x 64-4320 "
            "(e.g. 1920x1080 or 1280x720)."
        )
    return w, h


def make_movie(
    study_root,
    output,
    *,
    track: str = "PET",
    subject: str | None = None,
    anatomy: str | None = None,
    plane: str = "axial",
    position_mm: float | None = None,
    fps: float = 10.0,
    size="1920x1080",
    hold_s: float = 1.5,
    fade_s: float = 0.6,
    rotate_views: int = 0,
    overlay_range=None,
    cmap: str | None = None,
    overwrite: bool = False,
    progress=None,
    provenance: dict | None = None,
) -> MovieResult:
    """Render and write a time-lapse movie of ``track`` over a study's timepoints.

    Parameters
    ----------
    study_root : str or Path
        The study folder.
    output : str, Path or None
        ``.mp4`` or ``.gif`` path (``None``: render only, nothing written).
    track, subject, anatomy : str
        See :func:`load_track_series` (defaults "PET", the only subject, the first anatomy found).
    plane : {"axial", "coronal", "sagittal", "mip"}, default "axial"
        A slice at ``position_mm``, or "mip" (coronal projection: anatomy mean, track maximum).
    position_mm : float, optional
        Slice position along the plane's normal, world mm (default: the track's strongest signal
        inside the body).
    fps : float, default 10.0
        Output frames per second.
    size : str or (int, int), default "1920x1080"
        "WIDTHxHEIGHT" (even numbers) or (width, height), pixels (:func:`parse_size`).
    hold_s, fade_s : float, defaults 1.5 and 0.6
        Seconds each timepoint is held and the cross-fade to the next lasts (0: cut).
    rotate_views : int, default 0
        With ``plane="mip"``, the number of views of one full turn about the S axis shown at each
        timepoint (the 3D variant; 0 = no rotation).
    overlay_range : (float, float), optional
        The colour bar (default: robust percentiles, 1st-99.5th, of the non-zero values shown on
        all frames).
    cmap : str, optional
        Matplotlib colour map of the track (default by modality).
    overwrite : bool, default False
        Replace an existing output.
    progress : callable, optional
        ``progress(fraction, message)``.
    provenance : dict, optional
        Written beside the output as ``<output>.provenance.json``.

    Returns
    -------
    MovieResult (file, number of frames, size, days, colour range, display threshold, timings).

    Examples
    --------
    >>> import tempfile, warnings
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> from napari_immunotrack.io import save_volume
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> for day, bq_ml in ((1, 1000.0), (3, 4000.0)):                # a two-session study, NIfTI only
    ...     session = Path(tmp.name) / "sub-01" / f"ses-day{day}"
    ...     (session / "anat").mkdir(parents=True); (session / "pet").mkdir()
    ...     _ = save_volume(Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR"),
    ...                     session / "anat" / f"sub-01_ses-day{day}_T2w.nii.gz")
    ...     data = np.zeros((8, 8, 8), np.float32); data[3:5, 3:5, 3:5] = bq_ml
    ...     _ = save_volume(Volume(data, grid, "PT"), session / "pet" / f"sub-01_ses-day{day}_pet.nii.gz")
    >>> with warnings.catch_warnings(record=True):
    ...     movie = make_movie(tmp.name, Path(tmp.name) / "pet.gif", size="128x96", fps=2, hold_s=0.5, fade_s=0)
    >>> movie.path.name, movie.n_frames, movie.stamps, movie.colorbar_range
    ('pet.gif', 2, ['day 1', 'day 3'], (1000.0, 4000.0))
    >>> tmp.cleanup()
    """
    from .figures import PLANES, robust_range
    from .outputs import atomic_output, check_output, write_sidecar
    from .progress import report, scaled
    from .provenance import record

    t0 = time.perf_counter()
    size = parse_size(size)
    if plane not in PLANE_CHOICES:
        raise InputError(f"plane {plane!r} is unknown; use one of {', '.join(PLANE_CHOICES)}.")
    if not (0 < float(fps) <= 120):
        raise InputError(f"fps={fps} must be between 0 and 120 frames per second.")
    if hold_s <= 0 or fade_s < 0:
        raise InputError("hold must be > 0 s and fade >= 0 s.")
    if rotate_views and plane != "mip":
        raise InputError("rotation needs --plane mip (a projection turns; a slice does not).")
    if rotate_views and not 4 <= int(rotate_views) <= 360:
        raise InputError(f"rotate_views={rotate_views} must be between 4 and 360 views per turn.")
    fmt = None
    exe = None
    if output is not None:
        output = Path(output)
        fmt = output.suffix.lower().lstrip(".")
        if fmt not in ("mp4", "gif"):
            raise InputError(f"{output.name}: the movie must be .mp4 or .gif.")
        check_output(output, overwrite)
        if fmt == "mp4":
            exe = find_ffmpeg()
            if exe is None:
                raise InputError(
                    "writing MP4 needs an ffmpeg program on the PATH (e.g. 'apt install ffmpeg' or "
                    "'conda install ffmpeg'; or set IMMUNOTRACK_FFMPEG); or write a GIF (-o movie.gif)."
                )
    series, notes = load_track_series(
        study_root, track, subject=subject, anatomy=anatomy, progress=scaled(progress, 0.0, 0.3)
    )
    for note in notes:  # shown once (the CLI prints ImmunotrackWarnings), and kept in the provenance
        warnings.warn(note, ImmunotrackWarning, stacklevel=2)
    t_load = time.perf_counter()
    if plane != "mip" and position_mm is None:
        position_mm = (
            _peak_position(series, plane)
            if track != "T2starw"
            else float(series[0].anatomy.center_world()[PLANES[plane]["normal"]])
        )
    if overlay_range is not None:
        lo_hi = robust_range(np.zeros(1), value_range=overlay_range)  # checks the user's range
    else:
        lo_hi = shared_range(series, plane, position_mm) if track != "T2starw" else None
    threshold = display_threshold(series, lo_hi) if lo_hi is not None else None
    unit = next((str(t.overlay.unit) for t in series if t.overlay is not None), "")
    label = f"{track} ({unit})" if unit else track
    # one colour map on every frame, also on a timepoint without the track (e.g. the baseline)
    from .figures import MODALITY_CMAP

    modality = next((t.overlay.modality for t in series if t.overlay is not None), "MR")
    cmap = cmap or MODALITY_CMAP.get(modality, "inferno")
    where = "coronal MIP" if plane == "mip" else f"{plane}, {('xyz'[PLANES[plane]['normal']])} = {position_mm:.1f} mm"
    anat_name = next((t.anatomy_label for t in series if t.anatomy_label), "")
    title = f"{label} over {anat_name or 'MRI'} · {where}" if track != "T2starw" else f"T2*-weighted MRI · {where}"
    keys: list[KeyFrame] = []
    views = int(rotate_views) if rotate_views else 1
    total = len(series) * views
    for i, t in enumerate(series):
        for v in range(views):
            angle = 360.0 * v / views if rotate_views else 0.0
            keys.append(
                render_key_frame(
                    t,
                    plane=plane,
                    position_mm=position_mm,
                    size=size,
                    overlay_range=lo_hi,
                    title=title + (f" · turned {angle:.0f}°" if rotate_views else ""),
                    unit_label=label,
                    cmap=cmap,
                    threshold=threshold,
                    angle_deg=angle,
                    unit=unit,
                )
            )
            report(scaled(progress, 0.3, 0.85), (i * views + v + 1) / total, f"frame {t.stamp}")
    # one corner for the orientation marker on every frame (it must not jump between timepoints):
    # the one most frames chose as emptiest
    corners = [k.info.get("letter_corner") for k in keys if k.info.get("letter_corner")]
    if corners and len(set(corners)) > 1:
        corner = max(dict.fromkeys(corners), key=corners.count)
        for i, k in enumerate(keys):
            if k.info.get("letter_corner") not in (None, corner):
                t = series[i // views]
                keys[i] = render_key_frame(
                    t,
                    plane=plane,
                    position_mm=position_mm,
                    size=size,
                    overlay_range=lo_hi,
                    title=title + (f" · turned {k.info.get('angle_deg', 0):.0f}°" if rotate_views else ""),
                    unit_label=label,
                    cmap=cmap,
                    threshold=threshold,
                    angle_deg=k.info.get("angle_deg", 0.0),
                    unit=unit,
                    letter_corner=corner,
                )
    t_render = time.perf_counter()
    if rotate_views:
        # each timepoint turns once: every view is shown one frame; no cross-fade between turns
        spec = [(k, k, 0.0, 1.0 / fps) for k in range(len(keys))]
    else:
        spec = timeline(len(keys), fps, hold_s, fade_s)
    n_written = 0
    if output is not None:
        if fmt == "gif":
            # a GIF holds a still as one frame with a long delay; the fades are frames of 1/fps
            merged: list[list] = []
            for a, b, w, d in spec:
                if merged and (a, b, w) == tuple(merged[-1][:3]) and a == b:
                    merged[-1][3] += d
                else:
                    merged.append([a, b, w, d])
            spec_out = [tuple(m) for m in merged]
        else:
            spec_out = spec
        with atomic_output(output, overwrite) as tmp:
            if fmt == "gif":
                n_written = _write_gif(iter_frames(keys, spec_out), [s[3] for s in spec_out], tmp)
            else:
                _write_mp4(iter_frames(keys, spec_out), size, fps, tmp, exe)
                n_written = len(spec_out)
        params = {
            "track": track,
            "subject": series[0].subject,
            "anatomy": anatomy,
            "plane": plane,
            "position_mm": position_mm,
            "fps": fps,
            "size": list(size),
            "hold_s": hold_s,
            "fade_s": fade_s,
            "rotate_views": int(rotate_views),
            "colorbar_range": list(lo_hi) if lo_hi else None,
            "colorbar_label": label,
            "display_threshold": threshold,
            "frames": n_written,
            "format": fmt,
            "timepoints": [{"session": t.session, "day": t.day, "note": t.note} for t in series],
            "encoder": (exe if fmt == "mp4" else "Pillow GIF"),
        }
        extra = dict(provenance or {})
        prov = record(
            extra.pop("step", "movie"),
            inputs={"study": str(study_root)},
            parameters=params,
            warnings=notes + list(extra.pop("warnings", [])),
            **extra,
        )
        write_sidecar(output, prov)
    _ALIGNED.clear()  # the resampled volumes of the turning views are not kept after the movie
    report(progress, 1.0, "movie written" if output is not None else "movie rendered")
    t_end = time.perf_counter()
    return MovieResult(
        output,
        n_written or len(spec),
        size,
        float(fps),
        [t.day for t in series],
        [t.stamp for t in series],
        tuple(lo_hi) if lo_hi else None,
        threshold,
        unit,
        plane,
        position_mm,
        notes,
        {"load": t_load - t0, "render": t_render - t_load, "write": t_end - t_render, "total": t_end - t0},
        keys,
    )
