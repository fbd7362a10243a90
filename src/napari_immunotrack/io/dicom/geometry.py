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
    """Every slice has position, orientation, spacing; all share orientation, size and spacing.

    Parameters
    ----------
    members : list of Frame
        The 2D images of one series (see :func:`~napari_immunotrack.io.dicom.frames.frames_of`).
    label : str
        How messages name the series (e.g. :func:`~napari_immunotrack.io.dicom.headers.volume_label`).

    Returns
    -------
    None
        Returns only when the geometry is complete and common to all slices.

    Raises
    ------
    InputError
        A slice lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing; the slices
        differ in orientation (beyond 1e-4), matrix size or PixelSpacing; the spacing is not
        positive; or the orientation is not two orthogonal unit vectors. Nothing is guessed.

    Examples
    --------
    >>> from pathlib import Path
    >>> from napari_immunotrack.io.dicom.frames import Frame
    >>> def axial(z, t=0):   # a 4 x 4 axial slice at z mm, frame time t ms
    ...     return Frame(Path(f"z{z}_t{t}.dcm"), None, None, ("1.2.3", ""), np.array([0.0, 0.0, z]),
    ...                  np.array([1.0, 0, 0, 0, 1, 0]), np.array([0.5, 0.5]), 4, 4,
    ...                  info={"FrameReferenceTime": t})
    >>> check_common_geometry([axial(0), axial(2)], "series 1")   # fine: returns None
    >>> tilted = axial(4); tilted.orientation = np.array([1.0, 0, 0, 0, 0, 1])
    >>> try:
    ...     check_common_geometry([axial(0), axial(2), tilted], "series 1")
    ... except InputError as error:
    ...     print(str(error).split(" (")[0])
    series 1: the slices have 2 different orientations
    """
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
    """Sort slices along the normal and split duplicates into frames: (frames[f][s], leading_axis, normal).

    Slices are ordered by ``normal . ImagePositionPatient`` (never by file name or InstanceNumber);
    positions closer than 0.01 mm are the same position. Several images per position become frames,
    ordered by echo time/number (``"echo"``) when those tell them apart, else by temporal position,
    FrameReferenceTime, acquisition date-time, trigger time, inversion time, flip angle (``"time"``).

    Parameters
    ----------
    members : list of Frame
        The 2D images of one series, geometry checked by :func:`check_common_geometry`.
    label : str
        How messages name the series.

    Returns
    -------
    frames : list of list of Frame
        ``frames[f][s]``: frame ``f``'s slice ``s``, slices in increasing position along the normal.
    leading_axis : {"echo", "time"} or None
        None for a 3D series (one image per position).
    normal : ndarray of shape (3,)
        The unit slice normal ``row_cosine x column_cosine`` (LPS).

    Raises
    ------
    InputError
        A single slice position, positions with unequal numbers of images (an incomplete dynamic
        series), or images at one position that cannot be ordered (a duplicated series).

    Examples
    --------
    >>> from pathlib import Path
    >>> from napari_immunotrack.io.dicom.frames import Frame
    >>> def axial(z, t=0):   # a 4 x 4 axial slice at z mm, frame time t ms
    ...     return Frame(Path(f"z{z}_t{t}.dcm"), None, None, ("1.2.3", ""), np.array([0.0, 0.0, z]),
    ...                  np.array([1.0, 0, 0, 0, 1, 0]), np.array([0.5, 0.5]), 4, 4,
    ...                  info={"FrameReferenceTime": t})
    >>> images = [axial(4), axial(0), axial(2), axial(0, 60000), axial(2, 60000), axial(4, 60000)]
    >>> frames, axis, normal = arrange_frames(images, "series 1")
    >>> axis, normal.tolist(), [[f.path.name for f in frame] for frame in frames]
    ('time', [0.0, 0.0, 1.0], [['z0_t0.dcm', 'z2_t0.dcm', 'z4_t0.dcm'], ['z0_t60000.dcm', 'z2_t60000.dcm', 'z4_t60000.dcm']])
    """
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
    """Uniform steps along the normal and positions on one line; returns the step vector (LPS mm).

    A step may differ from the median step by ``max(0.01 mm, 1 %)``; a slice may lie that far off
    the line through the first and last positions.

    Parameters
    ----------
    frame0 : list of Frame
        One frame's slices, sorted along the normal (:func:`arrange_frames`).
    normal : ndarray of shape (3,)
        The unit slice normal (LPS).
    label : str
        How messages name the series.

    Returns
    -------
    ndarray of shape (3,)
        ``(position_last - position_first) / (n - 1)``, LPS mm (oblique for a gantry tilt).

    Raises
    ------
    InputError
        Whole slices missing (the message counts them), irregular steps, or a slice off the line.

    Examples
    --------
    >>> from pathlib import Path
    >>> from napari_immunotrack.io.dicom.frames import Frame
    >>> def axial(z, t=0):   # a 4 x 4 axial slice at z mm, frame time t ms
    ...     return Frame(Path(f"z{z}_t{t}.dcm"), None, None, ("1.2.3", ""), np.array([0.0, 0.0, z]),
    ...                  np.array([1.0, 0, 0, 0, 1, 0]), np.array([0.5, 0.5]), 4, 4,
    ...                  info={"FrameReferenceTime": t})
    >>> normal = np.array([0.0, 0.0, 1.0])
    >>> check_spacing([axial(0), axial(2), axial(4)], normal, "series 1")
    array([0., 0., 2.])
    >>> try:
    ...     check_spacing([axial(0), axial(2), axial(4), axial(8)], normal, "series 1")
    ... except InputError as error:
    ...     print(str(error)[:37])
    series 1: 1 slice(s) missing: the ste
    """
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
    """(step_lps, row_cosine, column_cosine, row_spacing, column_spacing, origin_lps) of a RAS affine.

    The inverse of :func:`slice_affine`, used to write a Volume as a DICOM series.

    Parameters
    ----------
    affine : (4, 4) array
        Maps ``(slice, row, column)`` indices to RAS mm; its axes must be orthogonal.

    Returns
    -------
    step_lps : ndarray of shape (3,)
        LPS vector between consecutive slices' ImagePositionPatient, mm.
    row_cosine, column_cosine : ndarray of shape (3,)
        The two halves of ImageOrientationPatient (unit vectors, LPS).
    row_spacing, column_spacing : float
        PixelSpacing[0] and PixelSpacing[1], mm.
    origin_lps : ndarray of shape (3,)
        ImagePositionPatient of the first slice, LPS mm.

    Raises
    ------
    InputError
        If the axes are sheared (DICOM planes need orthogonal axes).

    Examples
    --------
    >>> step, row, col, dr, dc, origin = geometry_from_affine(np.diag([2.0, 0.5, 0.25, 1.0]))
    >>> step.tolist(), row.tolist(), col.tolist(), dr, dc
    ([-2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0], 0.5, 0.25)
    >>> np.allclose(slice_affine(step, row, col, dr, dc, origin), np.diag([2.0, 0.5, 0.25, 1.0]))
    True
    """
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
