"""Slice geometry of a DICOM series: checks, ordering along the normal, uniform spacing, affines.

DICOM patient coordinates are LPS; the project's world space is RAS
(``docs/methods/geometry.md``): x and y change sign.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from .frames import Frame
from .headers import dicom_seconds

_DUP_TOL_MM = 0.01  # positions closer than this along the normal are "the same position"
_ORIENT_TOL = 1e-4  # direction cosines must agree to this
SPACING_ABS_TOL = 0.01  # mm; and 1 % of the step, whichever is larger

#: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_affine(step, row_cosine, column_cosine, row_spacing: float, column_spacing: float, origin) -> np.ndarray:
    """The RAS affine of a ``(slice, row, column)`` array from DICOM plane geometry (LPS).

    Parameters
    ----------
    step : array (3,)
        LPS vector from one slice's ImagePositionPatient to the next.
    row_cosine, column_cosine : array (3,)
        The two halves of ImageOrientationPatient (increasing column index
        runs along the row cosine).
    row_spacing, column_spacing : float
        PixelSpacing[0] (between rows) and PixelSpacing[1] (between columns), mm.
    origin : array (3,)
        ImagePositionPatient of the first slice (LPS mm).

    Returns
    -------
    numpy.ndarray
        4x4 affine mapping ``(slice, row, column)`` to RAS mm.

    Examples
    --------
    >>> a = slice_affine([0, 0, 2], [1, 0, 0], [0, 1, 0], 0.5, 0.25, [10, 20, 30])
    >>> a[:3, 3].tolist(), a[:3, 2].tolist()
    ([-10.0, -20.0, 30.0], [-0.25, 0.0, 0.0])
    """
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(step, float)
    lps[:3, 1] = float(row_spacing) * np.asarray(column_cosine, float)
    lps[:3, 2] = float(column_spacing) * np.asarray(row_cosine, float)
    lps[:3, 3] = np.asarray(origin, float)
    return LPS_TO_RAS @ lps


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.atleast_1d(values)) + "]"


def check_common_geometry(members: list[Frame], label: str):
    """Every slice has position, orientation, spacing; all share orientation, size and spacing."""
    first = members[0]
    for keyword, attr in (
        ("ImageOrientationPatient", "orientation"),
        ("ImagePositionPatient", "position"),
        ("PixelSpacing", "spacing"),
    ):
        missing = [m for m in members if getattr(m, attr) is None]
        if missing:
            where = missing[0].path.name + ("" if missing[0].frame is None else f" frame {missing[0].frame + 1}")
            raise InputError(
                f"{label}: {where} has no valid {keyword} ({len(missing)} of {len(members)} slices), "
                "so where its voxels are in the scanner is unknown; re-export the series from the "
                "scanner or PACS with full geometry (this reader does not guess it)."
            )
    if np.any(first.spacing <= 0):
        raise InputError(f"{label}: PixelSpacing {_fmt(first.spacing)} is not positive; fix the header.")
    for m in members[1:]:
        if np.max(np.abs(m.orientation - first.orientation)) > _ORIENT_TOL:
            n_orient = len({tuple(np.round(x.orientation, 3)) for x in members})
            raise InputError(
                f"{label}: the slices have {n_orient} different orientations (e.g. {first.path.name} "
                f"{_fmt(first.orientation)} vs {m.path.name} {_fmt(m.orientation)}); this is a localizer "
                "or a mixed series, not one volume: give a series acquired in one orientation."
            )
        if (m.rows, m.cols) != (first.rows, first.cols):
            raise InputError(
                f"{label}: slices have different sizes ({first.rows}x{first.cols} in {first.path.name}, "
                f"{m.rows}x{m.cols} in {m.path.name}); give a series with one matrix size."
            )
        if np.max(np.abs(m.spacing - first.spacing)) > 1e-4 * max(1.0, float(first.spacing.max())):
            raise InputError(
                f"{label}: slices have different PixelSpacing ({_fmt(first.spacing)} in "
                f"{first.path.name}, {_fmt(m.spacing)} in {m.path.name}); give a consistent series."
            )
    r, c = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(np.dot(r, c)) > 1e-3:
        raise InputError(
            f"{label}: ImageOrientationPatient {_fmt(first.orientation)} is not two orthogonal unit "
            "vectors; the header is broken: export the series again."
        )


def _frame_key(fr: Frame, axis: str) -> tuple:
    """Sort key of the slices sharing a position: echo or time order (never file name / InstanceNumber)."""
    info = fr.info

    def k(v):
        return (0, 0.0) if v is None else (1, float(v))

    # enhanced multi-frame: the dimension index (echo, temporal position, ...) breaks remaining ties
    index = tuple(k(v) for v in (info.get("DimensionIndexValues") or []))
    if axis == "echo":
        return (k(info.get("EchoTime")), k(info.get("EchoNumbers"))) + index
    return (
        k(info.get("TemporalPositionIdentifier")),
        k(info.get("FrameReferenceTime")),
        k(dicom_seconds(info.get("AcquisitionDate"), info.get("AcquisitionTime"))),
        k(info.get("TriggerTime")),
        k(info.get("InversionTime")),
        k(info.get("FlipAngle")),
    ) + index


def arrange_frames(members: list[Frame], label: str):
    """Sort slices along the normal and split duplicates into frames: (frames[f][s], leading_axis, normal)."""
    first = members[0]
    r, c = first.orientation[:3], first.orientation[3:]
    normal = np.cross(r, c)
    normal /= np.linalg.norm(normal)
    dist = np.array([float(np.dot(m.position, normal)) for m in members])
    order = np.argsort(dist, kind="stable")
    members = [members[i] for i in order]
    dist = dist[order]
    # clusters of (nearly) equal positions along the normal
    breaks = np.flatnonzero(np.diff(dist) > _DUP_TOL_MM) + 1
    clusters = np.split(np.arange(len(members)), breaks)
    counts = [len(cl) for cl in clusters]
    if len(clusters) < 2:
        raise InputError(
            f"{label} has a single slice position ({len(members)} image(s) at "
            f"{dist[0]:.2f} mm); a 3D volume is needed: give the whole series (all its slices)."
        )
    axis = None
    n_frames = counts[0]
    if max(counts) > 1:
        if len(set(counts)) != 1:
            worst = int(np.argmin(counts))
            raise InputError(
                f"{label}: slice positions have unequal numbers of images ({min(counts)} to {max(counts)} "
                f"per position, e.g. {counts[worst]} at {dist[clusters[worst][0]]:.2f} mm), so some time "
                "frames or echoes are incomplete or two series share one UID; copy the complete series."
            )
        # echoes when echo time/number tells the images of every position apart, else time frames
        echoes = [
            {(members[i].info.get("EchoTime"), members[i].info.get("EchoNumbers")) for i in cl} for cl in clusters
        ]
        axis = "echo" if all(len(e) == n_frames for e in echoes) else "time"
    frames: list[list[Frame]] = [[] for _ in range(n_frames)]
    for cl in clusters:
        group = [members[i] for i in cl]
        if axis is not None:
            group.sort(key=lambda m: _frame_key(m, axis))
            keys = [_frame_key(m, axis) for m in group]
            if len(set(keys)) != len(keys):
                raise InputError(
                    f"{label}: {len(group)} images at position {dist[cl[0]]:.2f} mm along the slice "
                    f"normal ({', '.join(m.path.name for m in group[:3])}) have the same time and echo, "
                    "so they cannot be ordered; the folder probably holds two copies of a series: "
                    "keep one."
                )
        for f, m in enumerate(group):
            frames[f].append(m)
    return frames, axis, normal


def check_spacing(frame0: list[Frame], normal: np.ndarray, label: str) -> np.ndarray:
    """Uniform steps along the normal and positions on one line; returns the step vector (LPS mm)."""
    pos = np.array([m.position for m in frame0])
    dist = pos @ normal
    steps = np.diff(dist)
    ref = float(np.median(steps))
    tol = max(SPACING_ABS_TOL, 0.01 * ref)
    bad = np.flatnonzero(np.abs(steps - ref) > tol)
    if bad.size:
        multiples = steps[bad] / ref
        where = ", ".join(
            f"{dist[i]:.3f} to {dist[i + 1]:.3f} mm ({frame0[i].path.name}, {frame0[i + 1].path.name})" for i in bad[:3]
        )
        whole = np.round(multiples)
        if np.all(multiples > 1.5) and np.all(np.abs(multiples - whole) * ref <= tol * whole):  # whole slices missing
            missing = int(np.sum(whole - 1))
            raise InputError(
                f"{label}: {missing} slice(s) missing: the step between positions {where} along the "
                f"slice normal is {_fmt(steps[bad])} mm where the other slices are {ref:.4g} mm apart; "
                "the series is incomplete: copy all of its files and try again."
            )
        raise InputError(
            f"{label}: inconsistent slice spacing: steps of {_fmt(steps[bad])} mm between positions "
            f"{where} where the usual step is {ref:.4g} mm; this is not a regular 3D grid: give a "
            "series with uniform spacing or resample it with a DICOM converter first."
        )
    n = len(frame0)
    step = (pos[-1] - pos[0]) / (n - 1)
    expected = pos[0] + np.outer(np.arange(n), step)
    off = np.linalg.norm(pos - expected, axis=1)
    if off.max() > tol:
        i = int(np.argmax(off))
        raise InputError(
            f"{label}: slice {frame0[i].path.name} is {off[i]:.3f} mm off the line through the first and "
            "last slice positions; the series is not a regular 3D grid: give a consistent series."
        )
    return step


def geometry_from_affine(affine: np.ndarray):
    """(step_lps, row_cosine, column_cosine, row_spacing, column_spacing, origin_lps) of a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    cols = lps[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    units = cols / lengths
    gram = units.T @ units
    off = np.abs(gram - np.eye(3)).max()
    if off > 1e-5:
        angle = float(np.degrees(np.arcsin(min(1.0, off))))
        raise InputError(
            f"the volume's axes are not orthogonal (sheared by about {angle:.3g} degrees); a DICOM "
            "series needs orthogonal axes: resample the volume onto an orthogonal grid first."
        )
    step = cols[:, 0]
    column_cosine = units[:, 1]  # direction of increasing row index
    row_cosine = units[:, 2]  # direction of increasing column index
    return step, row_cosine, column_cosine, float(lengths[1]), float(lengths[2]), lps[:3, 3]
