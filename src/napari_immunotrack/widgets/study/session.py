"""Study session loading for the Study dock: read a session's files and prepare napari layers (no Qt).

Session volumes are read and prepared for display (canonical axes, SUV
scaling, contrast presets) in a background thread, one session at a time;
the dock caches the result, so stepping to a prepared timepoint only swaps
arrays. The native Volume stays in ``layer.metadata["volume"]`` (Bq/mL for
PET): the analysis widgets quantify it, never the SUV display copy. Also the
findings of a labels volume (one centroid per label). See
``docs/methods/study-viewer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError, one_line
from ...layer_content import array_fingerprint
from ...volume import Volume
from .._common import suv_display_factor, volume_layer_data  # noqa: F401  (suv_display_factor: as before)

#: Tracks shown when a study opens (others are loaded hidden; tick them in the tree).
DEFAULT_SHOWN = ("T2starw", "ROI", "PET", "19F")
#: Baseline (pre-injection) anatomy kept as separate hidden layers for the analysis widgets.
BASELINE_TRACKS = ("T1w", "T2w", "T2starw")


# ============================================================================ display preparation (no Qt)
#: Contrast presets per modality: name -> ("percentile", lo %, hi %) on the displayed data, or ("fixed", lo, hi).
PRESETS = {
    "MR": {
        "auto (0.5-99.5 %)": ("percentile", 0.5, 99.5),
        "wide (0-99.9 %)": ("percentile", 0.0, 99.9),
        "dark spots (1-70 %)": ("percentile", 1.0, 70.0),
    },
    "CT": {
        "soft tissue (-160..240 HU)": ("fixed", -160.0, 240.0),
        "bone (-500..1300 HU)": ("fixed", -500.0, 1300.0),
        "auto (0.5-99.5 %)": ("percentile", 0.5, 99.5),
    },
    "SUV": {
        "SUV 0-2": ("fixed", 0.0, 2.0),
        "SUV 0-5": ("fixed", 0.0, 5.0),
        "SUV 0-10": ("fixed", 0.0, 10.0),
        "auto (0-99.9 %)": ("percentile", None, 99.9),
    },
    "PT": {"auto (0-99.9 %)": ("percentile", None, 99.9), "full (0-max)": ("percentile", None, 100.0)},
    "HOT": {
        "hot spots (99 %-max)": ("percentile", 99.0, 100.0),
        "above noise (95 %-max)": ("percentile", 95.0, 100.0),
        "full (0-max)": ("percentile", None, 100.0),
    },
    "OT": {"auto (0.5-99.5 %)": ("percentile", 0.5, 99.5), "full (min-max)": ("percentile", 0.0, 100.0)},
}


def preset_group(modality: str, display_unit: str = "") -> str:
    """Which preset list fits a layer: "MR", "CT", "SUV", "PT", "HOT" or "OT".

    Parameters
    ----------
    modality : str
        The Volume's modality (``"MR"``, ``"CT"``, ``"PT"``, ``"NM"``, ``"F19"``, ``"MPI"``, ``"OPT"``, ...).
    display_unit : str, optional
        The unit the layer shows; PET/SPECT shown in SUV get the ``"SUV"`` presets.

    Returns
    -------
    str
        A key of :data:`PRESETS`: PET/SPECT give ``"SUV"`` or ``"PT"``, 19F/MPI/optical ``"HOT"``, MR and
        CT their own, anything else ``"OT"``.

    Examples
    --------
    >>> preset_group("PT", "SUVbw"), preset_group("NM", "Bq/mL"), preset_group("F19")
    ('SUV', 'PT', 'HOT')
    >>> preset_group("MR"), preset_group("US")
    ('MR', 'OT')
    """
    if modality in ("PT", "NM"):
        return "SUV" if display_unit.startswith("SUV") else "PT"
    if modality in ("F19", "MPI", "OPT"):
        return "HOT"
    return modality if modality in PRESETS else "OT"


def preset_limits(data, group: str, name: str) -> tuple:
    """Contrast limits (lo, hi) of preset ``name`` of ``group`` for ``data``.

    Parameters
    ----------
    data : array_like
        The displayed values (non-finite values are ignored; above 2 million values, an even subsample).
    group : str
        A key of :data:`PRESETS` (see :func:`preset_group`).
    name : str
        A preset of that group, e.g. ``"auto (0.5-99.5 %)"`` or ``"SUV 0-5"``.

    Returns
    -------
    tuple of float
        ``(lo, hi)``: fixed presets give their numbers; percentile presets the percentiles of `data`
        (a missing low percentile means min(0, data minimum)); ``hi`` is at least ``lo + 1``; ``(0, 1)``
        when nothing is finite.

    Examples
    --------
    >>> data = np.arange(101.0)
    >>> preset_limits(data, "MR", "dark spots (1-70 %)"), preset_limits(data, "SUV", "SUV 0-5")
    ((1.0, 70.0), (0.0, 5.0))
    >>> auto = "auto (0.5-99.5 %)"
    >>> preset_limits(np.full(5, np.nan), "MR", auto), preset_limits(np.ones(4), "MR", auto)
    ((0.0, 1.0), (1.0, 2.0))
    """
    kind, lo, hi = PRESETS[group][name]
    if kind == "fixed":
        return (float(lo), float(hi))
    arr = np.asarray(data)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return (0.0, 1.0)
    if finite.size > 2_000_000:
        finite = finite[:: finite.size // 2_000_000 + 1]
    low = min(0.0, float(finite.min())) if lo is None else float(np.percentile(finite, lo))
    high = float(np.percentile(finite, hi))
    if not high > low:
        high = low + 1.0
    return (low, high)


@dataclass
class Prepared:
    """One study file ready for napari: the native Volume and its LayerData tuple."""

    volume: Volume
    data: object
    kwargs: dict
    kind: str  # "image" or "labels"
    source: Path
    track: str
    session: str
    day: float | None
    label: str
    display_unit: str = ""
    registered: bool | None = None


@dataclass
class SessionData:
    """A prepared session: {track: Prepared}, and one-line errors for files that failed."""

    session: str
    layers: dict[str, Prepared] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


# ============================================================================ the reference frame (no Qt)
@dataclass
class StudyFrame:
    """Where the Study dock shows a subject's sessions.

    ``reference`` is the session every other one is aligned to (None: no alignment saved);
    ``alignments`` maps a session to its saved alignment, a 4x4 RAS matrix taking a point of the
    reference session's world to the same anatomy in that session's world (what
    :func:`napari_immunotrack.alignment.align_study` writes as ``xfm/<session_transform_name>``);
    ``errors`` are the transforms that could not be read (one line each).
    """

    reference: str | None = None
    alignments: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def alignment(self, session: str) -> np.ndarray | None:
        """The session's alignment (identity for the reference session; None when it has none)."""
        if session == self.reference:
            return np.eye(4)
        return self.alignments.get(session)

    def missing(self, sessions) -> list[str]:
        """The sessions without an alignment to the reference (all of them when there is no reference)."""
        return [s for s in sessions if self.alignment(s) is None]


def study_frame(study, subject: str) -> StudyFrame:
    """The session alignments saved in a study for one subject (see :class:`StudyFrame`).

    Looks in each session's ``xfm/`` folder for ``sub-<S>_ses-<T>_from-anat_to-ses<REF>.tfm``
    (:func:`napari_immunotrack.alignment.session_transform_name`; the B-spline refinement beside it,
    ``_desc-bspline``, is not used for display). When sessions name different references the
    most common one wins; a transform that cannot be read is reported, never guessed.

    Parameters
    ----------
    study : Study
        An opened study (:func:`napari_immunotrack.study.open_study`).
    subject : str
        Subject label, without ``sub-``.

    Returns
    -------
    StudyFrame
        The reference session (None when no alignment is saved), the alignments to it and the unreadable
        transforms. A transform whose name points to a session the subject does not have is ignored.

    Examples
    --------
    Day 3 aligned to day 0, day 7 not aligned:

    >>> import tempfile
    >>> from napari_immunotrack.alignment import session_transform_name
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.io.transforms import write_transform
    >>> from napari_immunotrack.study import open_study
    >>> shift = np.eye(4); shift[:3, 3] = [2.0, 0.0, -1.0]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day in (0, 3, 7):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = save_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4), "MR"), anat / f"sub-01_ses-day{day}_T2w.nii.gz")
    ...     xfm = Path(tmp) / "sub-01" / "ses-day3" / "xfm"
    ...     xfm.mkdir()
    ...     _ = write_transform(xfm / session_transform_name("01", "day3", "day0"), shift)
    ...     frame = study_frame(open_study(tmp), "01")
    >>> frame.reference, sorted(frame.alignments), frame.missing(["day0", "day3", "day7"]), frame.errors
    ('day0', ['day3'], ['day7'], [])
    >>> frame.alignment("day3")[:3, 3].round(3).tolist()
    [2.0, 0.0, -1.0]
    """
    from collections import Counter

    from ...alignment import saved_alignment_files, session_transform_name
    from ...io.transforms import read_transform

    sessions = study.sessions(subject)
    tag_to_session = {"ses" + "".join(ch for ch in ses if ch.isalnum()): ses for ses in sessions}
    found: dict[str, dict[str, Path]] = {}  # reference -> {session: path}
    for ses in sessions:
        files = study.session_files(subject, ses)
        dirs = {Path(f.session_dir) for f in files if f.session_dir is not None}
        for folder in dirs:
            for tag, path in saved_alignment_files(folder):
                ref = tag_to_session.get(tag)
                if ref is not None and path.name == session_transform_name(subject, ses, ref):
                    found.setdefault(ref, {})[ses] = path
    frame = StudyFrame()
    if not found:
        return frame
    counts = Counter({ref: len(paths) for ref, paths in found.items()})
    frame.reference = counts.most_common(1)[0][0]
    for ses, path in found[frame.reference].items():
        try:
            frame.alignments[ses] = read_transform(path)
        except InputError as exc:
            frame.errors.append(
                f"sub-{subject} ses-{ses}: its alignment {path.name} cannot be read ({one_line(exc)}); "
                "recompute it (Align sessions, or `immunotrack align --overwrite`)."
            )
    return frame


def to_reference(volume: Volume, alignment: np.ndarray | None) -> Volume:
    """The volume placed in the reference session's world by its session's alignment (data untouched).

    A voxel at this session's world point ``p`` sits at reference point ``T^-1 p``; the modality's own
    registration to its MRI was already applied to the affine, so the two compose into one affine and
    the data are resampled (for display) once, never twice.

    Parameters
    ----------
    volume : Volume
        An image or labels of one session, in that session's world (RAS mm).
    alignment : (4, 4) array or None
        The session's alignment (:meth:`StudyFrame.alignment`): reference world -> this session's world.

    Returns
    -------
    Volume
        A copy with affine ``inv(alignment) @ volume.affine`` and ``metadata["study_frame"] = "reference"``;
        the volume itself (same object) when ``alignment`` is None or the identity.

    Examples
    --------
    >>> shift = np.eye(4); shift[:3, 3] = [2.0, 0.0, -1.0]    # the session sees the animal 2 mm further right
    >>> v = Volume(np.zeros((2, 2, 2)), np.eye(4))
    >>> moved = to_reference(v, shift)
    >>> moved.affine[:3, 3].tolist(), moved.metadata["study_frame"], to_reference(v, None) is v
    ([-2.0, 0.0, 1.0], 'reference', True)
    """
    if alignment is None:
        return volume
    # the reference session itself (identity) is tagged too: the docks then know both lie in one world
    moved = volume.replace(affine=np.linalg.inv(alignment) @ volume.affine)
    moved.metadata["study_frame"] = "reference"
    return moved


# ============================================================================ planar optical images (no Qt)
#: the view that shows a plane whose normal is this RAS axis
PLANE_OF_NORMAL = {0: "sagittal", 1: "coronal", 2: "axial"}


def planar_normal(volume: Volume) -> tuple[int, float] | None:
    """(RAS axis, position in mm) of a single-plane image (a planar fluorescence or bioluminescence
    picture placed in the MRI world), or None for a volume.

    Parameters
    ----------
    volume : Volume
        Counted as planar when exactly one spatial axis has one voxel and its normal lies within
        :data:`MAX_PLANAR_TILT_DEGREES` of an RAS axis (the picture is then shown flat in that plane).

    Returns
    -------
    (int, float) or None
        The RAS axis (0 R, 1 A, 2 S) nearest the plane's normal and the position of the picture's centre
        on it, mm.

    Examples
    --------
    >>> import numpy as np
    >>> affine = np.array([[0, 0, -0.2, 17.0], [0.2, 0, 0, 9.5], [0, -0.2, 0, 40.0], [0, 0, 0, 1.0]])
    >>> planar_normal(Volume(np.zeros((1, 50, 60)), affine))  # index (plane, row, column): a coronal plane
    (1, 9.5)
    >>> planar_normal(Volume(np.zeros((2, 50, 60)), affine)) is None
    True
    """
    shape = volume.spatial_shape
    thin = [i for i, n in enumerate(shape) if n == 1]
    if len(thin) != 1 or planar_tilt_degrees(volume) > MAX_PLANAR_TILT_DEGREES:
        return None
    axis = int(np.argmax(np.abs(volume.affine[:3, thin[0]])))
    centre = volume.affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2) + volume.affine[:3, 3]
    return axis, float(centre[axis])


#: A planar picture tilted by up to this much against the nearest view plane is shown flat in that plane
#: (an animal lies a little askew in every scanner; napari slices along the view's axes only).
MAX_PLANAR_TILT_DEGREES = 30.0


def planar_tilt_degrees(volume: Volume) -> float:
    """Angle between a single-plane image's normal and the nearest RAS axis, degrees (NaN for a volume).

    Parameters
    ----------
    volume : Volume
        An image with exactly one spatial axis of one voxel.

    Returns
    -------
    float
        0 for a picture lying in an axial, coronal or sagittal plane; NaN when no axis has one voxel.

    Examples
    --------
    >>> tilted = np.eye(4)
    >>> c, s = np.cos(np.radians(12)), np.sin(np.radians(12))
    >>> tilted[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
    >>> round(planar_tilt_degrees(Volume(np.zeros((4, 1, 3)), tilted, "OPT")), 6)
    12.0
    >>> planar_tilt_degrees(Volume(np.zeros((4, 1, 3)), np.eye(4), "OPT"))
    0.0
    """
    thin = [i for i, n in enumerate(volume.spatial_shape) if n == 1]
    if len(thin) != 1:
        return float("nan")
    normal = np.asarray(volume.affine[:3, thin[0]], float)
    normal = normal / np.linalg.norm(normal)
    return float(np.degrees(np.arccos(np.clip(np.max(np.abs(normal)), -1.0, 1.0))))


def anatomy_projection(anatomy: Volume, axis: int, position_mm: float, how: str = "mean") -> Volume:
    """The anatomy projected along RAS ``axis`` (mean or max), as one slice at ``position_mm`` on that axis:
    the backdrop a planar optical image lies on (both in the same plane of the same world).

    Parameters
    ----------
    anatomy : Volume
        The MRI (a rotated grid is first resampled onto an axis-aligned one; of 4D data the first volume).
    axis : int
        RAS axis to project along (0 R, 1 A, 2 S): :func:`planar_normal`'s axis.
    position_mm : float
        Where the one-voxel slice sits on that axis, mm.
    how : {"mean", "max"}, default "mean"
        Mean or maximum intensity projection.

    Returns
    -------
    Volume
        Float32, canonical axes (S, A, R) with one voxel along ``axis``; the anatomy's modality and unit.

    Raises
    ------
    InputError
        For another ``how``.

    Examples
    --------
    >>> import numpy as np
    >>> mri = Volume(np.arange(24.0).reshape(2, 3, 4), np.diag([0.5, 0.5, 0.5, 1.0]))
    >>> proj = anatomy_projection(mri, 1, 9.5)  # along A; array axes S, A, R
    >>> proj.spatial_shape, float(proj.index_to_world(np.zeros((1, 3)))[0][1])
    ((4, 1, 2), 9.5)
    >>> proj.numpy()[0, 0].tolist()    # S = 0, R = 0 and 1: the mean over A of 12 R + 4 A + S
    [4.0, 16.0]
    """
    if how not in ("mean", "max"):
        raise InputError(f"projection {how!r}: choose mean or max.")
    if not anatomy.is_axis_aligned(tol_degrees=0.5):
        anatomy = anatomy.for_display()
    canonical = anatomy.canonical()  # array axes S, A, R
    array_axis = 2 - int(axis)
    data = np.asarray(canonical.numpy(), np.float32)
    if data.ndim == 4:
        data = data[0]
    projected = data.mean(axis=array_axis, keepdims=True) if how == "mean" else data.max(axis=array_axis, keepdims=True)
    affine = np.array(canonical.affine, float)
    affine[int(axis), 3] = float(position_mm)  # index 0 of the flattened axis sits in the optical plane
    out = Volume(projected, affine, modality=anatomy.modality, unit=anatomy.unit)
    out.name = f"{anatomy.name or 'MRI'} {how} projection"
    return out


def planar_placement_text(volume: Volume, source: Path | None = None) -> str:
    """One sentence saying where a planar optical image sits in the world and why.

    Parameters
    ----------
    volume : Volume
        The optical image (see :func:`planar_normal`).
    source : Path, optional
        Its file. When the file's folder holds any ``.json`` file, the placement is said to come from
        the sidecar's ImageToWorldAffine (the folder is not checked further); otherwise from the file's
        own, nominal, geometry.

    Returns
    -------
    str
        The sentence (plane, its position in mm, how it was placed, and that the signal is integrated
        through the body); for a picture tilted more than :data:`MAX_PLANAR_TILT_DEGREES` against every
        view plane, a sentence saying it is drawn where it lies, as a one-voxel slab; "" for a volume.

    Examples
    --------
    >>> affine = np.array([[0, 0, -0.2, 17.0], [0.2, 0, 0, 9.5], [0, -0.2, 0, 40.0], [0, 0, 0, 1.0]])
    >>> print(planar_placement_text(Volume(np.zeros((1, 50, 60)), affine)))   # doctest: +NORMALIZE_WHITESPACE
    planar optical image: a 2D picture of the whole animal, drawn as the coronal plane A = 9.50 mm of the MRI
    world (placed by its file's own geometry (nominal)); the anatomy behind it is the MRI projected along A.
    Its signal is integrated through the body, not at that depth.
    >>> planar_placement_text(Volume(np.zeros((2, 50, 60)), affine))
    ''
    >>> c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    >>> askew = np.diag([0.2, 0.2, 0.2, 1.0]) @ np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])
    >>> print(planar_placement_text(Volume(np.zeros((50, 1, 60)), askew)))  # doctest: +NORMALIZE_WHITESPACE
    planar optical image tilted 40 degrees against the nearest view plane (more than 30): it is drawn where it
    lies, as a slab one pixel thick that the 2D views cut along a line; see it whole in the 3D view.
    """
    found = planar_normal(volume)
    tilt = planar_tilt_degrees(volume)
    if found is None and tilt > MAX_PLANAR_TILT_DEGREES:
        return (
            f"planar optical image tilted {tilt:.0f} degrees against the nearest view plane (more than "
            f"{MAX_PLANAR_TILT_DEGREES:.0f}): it is drawn where it lies, as a slab one pixel thick that the 2D "
            "views cut along a line; see it whole in the 3D view."
        )
    if found is None:
        return ""
    axis, position = found
    letter = "RAS"[axis]
    how = (
        "placed by the ImageToWorldAffine of its JSON sidecar"
        if source is not None and any(Path(source).parent.glob("*.json"))
        else "placed by its file's own geometry (nominal)"
    )
    return (
        f"planar optical image: a 2D picture of the whole animal, drawn as the {PLANE_OF_NORMAL[axis]} plane "
        f"{letter} = {position:.2f} mm of the MRI world ({how}); the anatomy behind it is the MRI projected "
        f"along {letter}. Its signal is integrated through the body, not at that depth."
    )


def layer_name(label: str, day: float | None, session: str, extra: str = "") -> str:
    """The Study dock's name of a layer: ``"<label>[ <extra>] (day <d>)"``.

    Parameters
    ----------
    label : str
        What the image is (``"PET"``, ``"T2w"``, a series description, ...).
    day : float or None
        The session's day after injection; None to use the session name.
    session : str
        The session name (used when `day` is None; ``"no session"`` when empty too).
    extra : str, optional
        A qualifier such as ``"baseline"`` or ``"SUVbw"``.

    Returns
    -------
    str

    Examples
    --------
    >>> layer_name("PET", 1.0, "day1", "SUVbw"), layer_name("T2w", None, "pre"), layer_name("T2w", None, "")
    ('PET SUVbw (day 1)', 'T2w (pre)', 'T2w (no session)')
    """
    when = f"day {day:g}" if day is not None else session or "no session"
    return f"{label}{' ' + extra if extra else ''} ({when})"


def prepare_file(
    f, transforms: dict, reference: Volume | None, baseline: bool = False, alignment: np.ndarray | None = None
) -> list[Prepared]:
    """Read one study file and build its napari LayerData (thread-safe; no Qt).

    ``alignment`` (the session's alignment to the reference session, see :class:`StudyFrame`)
    places it in the reference session's world; None keeps its scanner's (registered MRI) world.

    PET/SPECT are shown in SUVbw when their header allows (the layer data are
    the native values times the SUV factor; the native Volume is kept in the
    metadata), float data are shown as float32.

    Parameters
    ----------
    f : StudyFile
        One file of an open study (:meth:`Study.session_files`).
    transforms : dict
        {datatype: 4x4 RAS matrix} placing the session's images in the anatomy's world
        (:func:`napari_immunotrack.study_loading.session_transforms`).
    reference : Volume or None
        Grid that oblique volumes are resampled to for display.
    baseline : bool, default False
        Name the layer as a baseline (``"... baseline (day 0)"``).

    Returns
    -------
    list of Prepared
        One per volume the file holds: the native Volume, the layer data and keyword arguments, kind
        (``"image"`` or ``"labels"``), source path, track, session, day, label, display unit and whether
        it was registered.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import open_study
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = Path(tmp) / "sub-01" / "ses-day1" / "anat"
    ...     folder.mkdir(parents=True)
    ...     t2w = Volume(np.ones((2, 2, 2)), np.eye(4), "MR")  # float64 on disk
    ...     _ = save_volume(t2w, folder / "sub-01_ses-day1_T2w.nii.gz")
    ...     study_file = open_study(tmp).session_files("01", "day1")[0]
    ...     prepared = prepare_file(study_file, {}, None)[0]
    >>> prepared.kind, prepared.track, prepared.kwargs["name"], str(prepared.data.dtype), prepared.display_unit
    ('image', 'T2w', 'T2w (day 1)', 'float32', 'a.u.')
    """
    from ...study_loading import load_study_file

    out = []
    for volume in load_study_file(f, transforms):
        volume = to_reference(volume, alignment)
        label = (
            "PET"
            if f.role == "PET"
            else "SPECT"
            if f.role == "SPECT"
            else (f.suffix if f.modality == "MR" and f.role != "MR" else f.label)
        )
        if f.role == "MR" and f.dicom.get("SeriesDescription"):
            label = f.dicom["SeriesDescription"]
        volume.name = layer_name(label, f.day, f.session, "baseline" if baseline else "")
        as_labels = f.is_labels or volume.modality == "SEG"
        data, kwargs, kind = volume_layer_data(volume, reference=reference, as_labels=as_labels)
        display_unit = volume.unit
        if kind == "image" and not kwargs.get("multiscale") and "channel_axis" not in kwargs:
            factor = suv_display_factor(volume)
            arr = np.asarray(data)
            if factor is not None:
                arr = arr.astype(np.float32) * np.float32(factor)
                display_unit = "SUVbw"
                volume.name = layer_name(label, f.day, f.session, "SUVbw")
                kwargs["name"] = volume.name
                kwargs["contrast_limits"] = preset_limits(arr, "SUV", "auto (0-99.9 %)")
            elif arr.dtype == np.float64:
                arr = arr.astype(np.float32)  # half the memory and texture upload; display only
            data = arr
            # the layer shows this array: layer_to_volume must still hand back the native Volume
            kwargs["metadata"]["_display_fingerprint"] = array_fingerprint(data)
        kwargs["metadata"]["immunotrack"].update(
            display_unit=display_unit,
            study_track=f.track,
            study_session=f.session,
            study_role="baseline" if baseline else "track",
            study_frame="reference" if alignment is not None else "native",
        )
        if kind == "labels":
            kwargs.setdefault("opacity", 0.5)
        placement = planar_placement_text(volume, Path(f.path)) if volume.modality == "OPT" else ""
        if placement:
            kwargs["metadata"]["immunotrack"]["placement"] = placement
        registered = volume.metadata.get("study", {}).get("registered")
        out.append(
            Prepared(
                volume, data, kwargs, kind, Path(f.path), f.track, f.session, f.day, label, display_unit, registered
            )
        )
    return out


def prepare_session(
    study,
    subject: str,
    session: str,
    reference: Volume | None,
    tracks=None,
    baseline: bool = False,
    done: SessionData | None = None,
    alignment: np.ndarray | None = None,
) -> SessionData:
    """Every file of a session prepared for display; a file that fails is reported, the rest go on.

    ``tracks`` limits it to some tracks; ``done`` is a partial result whose
    tracks are kept (not read again). Without a ``reference`` the first
    axis-aligned MRI of the session becomes the grid oblique volumes are
    resampled to for display. ``alignment`` places the session in the reference
    session's world (see :func:`prepare_file`).

    Parameters
    ----------
    study : Study
        The open study.
    subject, session : str
        Which session (labels without ``sub-``/``ses-``).
    reference : Volume or None
        Display grid for oblique volumes (see above).
    tracks : collection of str, optional
        Only these tracks (default: all).
    baseline : bool, default False
        Name the layers as baselines.
    done : SessionData, optional
        Tracks already prepared.
    alignment : ndarray (4, 4), optional
        The session's place in the reference session's world (see :func:`prepare_file`); None: native.

    Returns
    -------
    SessionData
        ``layers`` ({track: Prepared}, the anatomy first; one file per track, the first found) and
        ``errors`` (one line per file or transform that could not be read).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import open_study
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for datatype, name, modality in (("anat", "T2w", "MR"), ("pet", "pet", "PT")):
    ...         folder = Path(tmp) / "sub-01" / "ses-day1" / datatype
    ...         folder.mkdir(parents=True)
    ...         _ = save_volume(Volume(np.ones((2, 2, 2), np.float32), np.eye(4), modality),
    ...                         folder / f"sub-01_ses-day1_{name}.nii.gz")
    ...     _ = (Path(tmp) / "sub-01" / "ses-day1" / "anat" / "sub-01_ses-day1_T1w.nii.gz").write_text("not NIfTI")
    ...     data = prepare_session(open_study(tmp), "01", "day1", None)
    >>> [p.kwargs["name"] for p in data.layers.values()], len(data.errors)
    (['T2w (day 1)', 'PET (day 1)'], 1)
    >>> print(data.errors[0])  # doctest: +ELLIPSIS
    sub-01/ses-day1/anat/sub-01_ses-day1_T1w.nii.gz: ...
    """
    from ...study import track_order
    from ...study_loading import session_transforms

    result = SessionData(session)
    if done is not None:
        result.layers.update(done.layers)
        result.errors.extend(done.errors)
    files = [
        f
        for f in study.session_files(subject, session)
        if (tracks is None or f.track in tracks) and f.track not in result.layers
    ]
    files.sort(key=lambda f: track_order(f.track))  # anatomy first: it is the display reference
    if reference is None:
        reference = next(
            (p.volume for p in result.layers.values() if p.volume.modality == "MR" and p.volume.is_axis_aligned()), None
        )
    transforms = {}
    if files and files[0].session_dir is not None:
        transforms = session_transforms(Path(files[0].session_dir), errors=result.errors)
    for f in files:
        if f.track in result.layers:  # a second image of the same kind in one session: the first is shown
            continue
        try:
            prepared = prepare_file(f, transforms, reference, baseline=baseline, alignment=alignment)
        except InputError as exc:
            result.errors.append(f"{study.relative(f.path)}: {one_line(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the study
            result.errors.append(
                f"{study.relative(f.path)}: internal error {type(exc).__name__}: {one_line(exc)[:150]}"
            )
            continue
        if prepared:
            result.layers[f.track] = prepared[0]
            volume = prepared[0].volume
            if reference is None and volume.modality == "MR" and volume.is_axis_aligned():
                reference = volume
    return result


# ============================================================================ findings (no Qt)
def label_findings(volume: Volume, source: str) -> list:
    """One finding per label of a label Volume: dicts with source, label, name, voxels, volume_mm3, centroid_ras_mm.

    Parameters
    ----------
    volume : Volume
        Labels (0 = background); a 4D volume's first frame is used. Names from its ``label_names``.
    source : str
        What the labels are (e.g. ``"clusters"``), copied into each finding.

    Returns
    -------
    list of dict
        In label order: ``source``, ``label``, ``name`` ("" when unnamed), ``voxels``, ``volume_mm3`` and
        ``centroid_ras_mm`` (world RAS of the centre of mass); ``[]`` without labels.

    Examples
    --------
    >>> labels = np.zeros((4, 4, 4), np.uint8); labels[0:2, 0:2, 0:2] = 1; labels[3, 3, 3] = 2
    >>> names = {"label_names": {"1": "tumour"}}
    >>> found = label_findings(Volume(labels, np.diag([0.5, 0.5, 0.5, 1.0]), "SEG", metadata=names), "clusters")
    >>> [(f["label"], f["name"], f["voxels"], round(f["volume_mm3"], 3), f["centroid_ras_mm"]) for f in found]
    [(1, 'tumour', 8, 1.0, [0.25, 0.25, 0.25]), (2, '', 1, 0.125, [1.5, 1.5, 1.5])]
    """
    from scipy import ndimage

    data = np.asarray(volume.numpy())
    if data.ndim == 4:
        data = data[0]
    data = data.astype(np.int64, copy=False)
    present = np.unique(data)
    present = present[present > 0]
    if present.size == 0:
        return []
    names = {}
    for k, v in dict(volume.metadata.get("label_names") or {}).items():
        try:
            names[int(k)] = str(v)
        except (TypeError, ValueError):
            continue
    counts = ndimage.sum_labels(np.ones_like(data, dtype=np.float32), data, present)
    centres = np.array(ndimage.center_of_mass(np.ones_like(data, dtype=np.uint8), data, present), float)
    world = volume.index_to_world(centres.reshape(-1, 3))
    out = []
    for label, n, centre in zip(present, counts, world):
        out.append(
            {
                "source": source,
                "label": int(label),
                "name": names.get(int(label), ""),
                "voxels": int(n),
                "volume_mm3": float(n * volume.voxel_volume_mm3),
                "centroid_ras_mm": centre.tolist(),
            }
        )
    return out
