"""Registration widget (thin; the method is in :mod:`napari_immunotrack.registration`).

Choose the fixed (reference) and moving image layers, the method (mutual
information, or paired landmarks from two Points layers), rigid or affine,
and optional masks; Register runs in a worker thread with a progress bar and
Cancel. The result moves the moving layer through its affine (the data are
not resampled) and, if ticked, the other layers acquired with it (a PET and
its CT); Undo puts them back. Quality control comes as layers on the fixed
grid: a checkerboard of fixed and registered moving, their difference, and
the fixed image's edges to lay over the moving one; the metric before and
after is shown, and for landmarks the error of every pair. Save writes the
transform as an ITK ``.tfm`` (what Slicer and ANTs read).

Layers made from a Volume keep it in ``layer.metadata["volume"]``; after
registration it is replaced by the same voxels with the registered affine
(``inv(fixed_to_moving) @ affine``), so every other widget sees the moving
image in the fixed world.

Session alignment (method "session", docs/methods/session-alignment.md): the
same animal's anatomical MRI of another session is aligned to the reference
session's by :func:`napari_immunotrack.alignment.align_mri` (orientation
search, gain and coil-profile harmonisation, rigid by default, affine or
B-spline on request). The defaults come from the study layers' metadata
(``study_session``/``study_track``/``study_role``): the current timepoint's
anatomical MRI moves onto the reference (baseline) session's MRI of the same
contrast. The result moves every layer of that session (affines composed,
data never resampled), doubt checks come as a warning, and "Save to study"
writes ``xfm/<alignment.session_transform_name>`` (ITK, reference world ->
session world, with its direction record and provenance), asking before it
replaces one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .. import registration as reg
from ..affines import REVERSE_AXES
from ..errors import InputError, one_line
from ..progress import report, scaled
from ..volume import napari_to_ras
from ._common import (
    Failed,
    RunRow,
    choose,
    chosen_layer,
    data_to_world_points,
    fill_combo,
    follow_layers,
    layer_to_volume,
    layers_of,
    notify_error,
    save_dialog,
    volume_layer_data,
)
from ._dock import PluginDock

METHODS = {
    "Intensity (mutual information)": "intensity",
    "Landmarks (paired points)": "landmarks",
    "Session alignment (same-contrast MRI)": "session",
}
#: Transforms offered by each method (session alignment adds a regularised B-spline on request).
TRANSFORMS = {
    "intensity": ("rigid", "affine"),
    "landmarks": ("rigid", "affine"),
    "session": ("rigid", "affine", "bspline"),
}
#: Intensity harmonisation of session alignment (``alignment.align_mri``'s ``bias_correction``).
HARMONISATION = {
    "local mean (coil profile cancels)": "local",
    "N4 bias correction": "n4",
    "differential bias fit": "differential",
    "gain only": "none",
}
#: Names of the quality-control layers this widget owns.
QC_NAMES = {
    "checkerboard": "QC checkerboard",
    "difference": "QC difference",
    "moving": "QC moving on fixed grid",
    "edges": "QC fixed edges",
}
#: Which QC layers each view shows (edges are drawn over the registered moving image).
QC_VIEWS = {"checkerboard": ("checkerboard",), "difference": ("difference",), "edges": ("moving", "edges"), "none": ()}
#: Preferred moving image, by modality: what is usually registered to the anatomy.
_MOVING_ORDER = ("PT", "NM", "CT", "MPI", "F19", "OPT")
#: napari world order (S, A, R) <-> RAS (x, y, z)
_SWAP = REVERSE_AXES


def _points_ras(layer) -> np.ndarray:
    """World RAS mm (N, 3) of a Points layer's points."""
    data = np.asarray(layer.data, float)
    if data.ndim != 2 or data.shape[1] < 3:
        raise InputError(f"the points layer {layer.name!r} must hold 3D points.")
    world = data_to_world_points(layer, data)[:, -3:]
    return napari_to_ras(world)


def compute(
    fixed,
    moving,
    method="intensity",
    transform="rigid",
    fixed_mask=None,
    moving_mask=None,
    fixed_points=None,
    moving_points=None,
    square_mm=10.0,
    progress=None,
):
    """What the worker runs: the registration, then its quality-control views (pure; no napari).

    Parameters
    ----------
    fixed, moving : Volume
        The reference image and the image to align to it.
    method : {"intensity", "landmarks"}, default "intensity"
        Mutual-information registration, or a least-squares fit of paired landmarks.
    transform : {"rigid", "affine"}, default "rigid"
    fixed_mask, moving_mask : Volume, optional
        Compute the metric only inside these (intensity registration).
    fixed_points, moving_points : (N, 3) array, optional
        Paired landmarks in world RAS mm, same order (needed with ``method="landmarks"``).
    square_mm : float, default 10.0
        Size of the checkerboard's squares.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    tuple or Failed
        ``(result, qc, metrics)``: the RegistrationResult, a dict of Volumes on the fixed grid
        (``checkerboard``, ``difference``, ``moving`` resampled and normalised, ``edges``) and the
        (before, after) mutual information (NaN when it cannot be computed for landmarks). Any
        exception is returned as a :class:`~napari_immunotrack.widgets._common.Failed` holding it, not
        raised, so the GUI thread shows it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> image = Volume(np.random.default_rng(0).random((6, 6, 6)), np.eye(4), "MR")
    >>> fixed_pts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> moving_pts = fixed_pts + [2.0, 0, 0]
    >>> result, qc, metrics = compute(image, image, "landmarks", fixed_points=fixed_pts, moving_points=moving_pts)
    >>> np.round(result.fixed_to_moving[:3, 3], 6) + 0.0, sorted(qc)
    (array([2., 0., 0.]), ['checkerboard', 'difference', 'edges', 'moving'])
    >>> failed = compute(image, image, method="landmarks")
    >>> type(failed).__name__, str(failed.exc)
    ('Failed', 'choose a Points layer of landmarks on each image (the same points, same order).')
    """
    try:
        if method == "landmarks":
            if fixed_points is None or moving_points is None:
                raise InputError("choose a Points layer of landmarks on each image (the same points, same order).")
            result = reg.register_landmarks(fixed_points, moving_points, transform=transform)
            report(progress, 0.3, "landmarks fitted; metric before and after")
            try:
                metrics = (
                    reg.evaluate_metric(fixed, moving),
                    reg.evaluate_metric(fixed, moving, result.fixed_to_moving),
                )
            except InputError:
                metrics = (float("nan"), float("nan"))
        else:
            result = reg.register(
                fixed,
                moving,
                transform=transform,
                fixed_mask=fixed_mask,
                moving_mask=moving_mask,
                progress=scaled(progress, 0.0, 0.85),
            )
            metrics = (result.metric_initial, result.metric_final)
        report(progress, 0.9, "quality control views")
        on_fixed = reg.resample_moving(fixed, moving, result)
        qc = {
            "checkerboard": reg.checkerboard(fixed, on_fixed, square_mm=square_mm),
            "difference": reg.difference(fixed, on_fixed),
            "moving": reg.normalised(on_fixed),
            "edges": reg.edges(fixed),
        }
        report(progress, 1.0, "done")
        return result, qc, metrics
    except Exception as exc:  # noqa: BLE001 - shown to the user in the GUI thread, never lost
        return Failed(exc)


# ---------------------------------------------------------------------------- session alignment
#: Anatomical MRI tracks, in the order session alignment prefers them (as alignment.ALIGN_CONTRASTS).
_ANATOMY_ORDER = ("T2w", "T1w", "T2starw", "MR")


def session_info(layer) -> dict:
    """Where a layer comes from in a study: {subject, session, track, role, modality, day} (None when unknown).

    The Study dock writes ``study_session``/``study_track``/``study_role`` into
    ``layer.metadata["immunotrack"]``; a Volume read from a study carries ``metadata["study"]``.

    Parameters
    ----------
    layer : napari layer or any object with a ``metadata`` dict
        Its ``metadata["immunotrack"]`` tags win over its Volume's ``metadata["study"]``.

    Returns
    -------
    dict
        ``subject`` and ``day`` (from the Volume only), ``session``, ``track`` (the study's track or role),
        ``role`` ("track" for a Volume from a study without Study dock tags) and ``modality`` (the tag, else
        the Volume's); None for what neither says.

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> study = {"subject": "01", "session": "day3", "track": "T2w", "day": 3.0}
    >>> class Layer:
    ...     metadata = {"volume": Volume(np.zeros((2, 2, 2)), np.eye(4), "MR", metadata={"study": study})}
    >>> session_info(Layer())
    {'subject': '01', 'session': 'day3', 'track': 'T2w', 'role': 'track', 'modality': 'MR', 'day': 3.0}
    """
    meta = layer.metadata if isinstance(getattr(layer, "metadata", None), dict) else {}
    tags = meta.get("immunotrack", {}) or {}
    volume = meta.get("volume")
    study = (getattr(volume, "metadata", {}) or {}).get("study", {}) or {}
    return {
        "subject": study.get("subject"),
        "session": tags.get("study_session") or study.get("session"),
        "track": tags.get("study_track") or study.get("track") or study.get("role"),
        "role": tags.get("study_role") or ("track" if study else None),
        "modality": tags.get("modality") or getattr(volume, "modality", None),
        "day": study.get("day"),
    }


def _anatomy_rank(info: dict) -> int:
    track = info.get("track") or ""
    return _ANATOMY_ORDER.index(track) if track in _ANATOMY_ORDER else len(_ANATOMY_ORDER)


def session_defaults(layers) -> tuple:
    """(fixed, moving) layer names for session alignment, from the study layers' metadata, or (None, None).

    Moving: the current timepoint's anatomical MRI (a track layer, T2w before T1w before T2*w);
    fixed: the reference session's MRI of the same contrast (the baseline layer the Study dock shows,
    else the session of the earliest day).

    Parameters
    ----------
    layers : iterable of napari layers
        The viewer's layers; only Image layers of modality MR with a session (:func:`session_info`) count.

    Returns
    -------
    (str, str) or (None, None)
        The fixed and moving layer names; (None, None) when the MR layers span fewer than two sessions or
        no layer of another session than the reference's can move. A moving contrast the reference session
        also has is preferred.

    Examples
    --------
    >>> class Image:                        # duck-typed: the class name and the metadata are what count
    ...     def __init__(self, name, session, track, role):
    ...         self.name = name
    ...         self.metadata = {"immunotrack": {"study_session": session, "study_track": track,
    ...                                          "study_role": role, "modality": "MR"}}
    >>> layers = [Image("T1w (day 3)", "day3", "T1w", "track"), Image("T2w (day 3)", "day3", "T2w", "track"),
    ...           Image("T1w baseline (day 0)", "day0", "T1w", "baseline"),
    ...           Image("T2w baseline (day 0)", "day0", "T2w", "baseline")]
    >>> session_defaults(layers)
    ('T2w baseline (day 0)', 'T2w (day 3)')
    >>> session_defaults(layers[:2])        # one session only
    (None, None)
    """
    mri = []
    for layer in layers:
        info = session_info(layer)
        if info["session"] and info["modality"] == "MR" and type(layer).__name__ == "Image":
            mri.append((layer, info))
    if len({info["session"] for _, info in mri}) < 2:
        return None, None
    baseline = [(ly, i) for ly, i in mri if i["role"] == "baseline"]
    if baseline:
        reference = baseline[0][1]["session"]
    else:
        days = sorted(mri, key=lambda li: (li[1]["day"] is None, li[1]["day"] or 0.0))
        reference = days[0][1]["session"]
    reference_tracks = {i["track"] for _, i in mri if i["session"] == reference}
    moving = sorted(  # a contrast the reference session has too, T2w before T1w before T2*w
        [(ly, i) for ly, i in mri if i["session"] != reference and i["role"] != "baseline"],
        key=lambda li: (li[1]["track"] not in reference_tracks, _anatomy_rank(li[1])),
    )
    if not moving:
        return None, None
    moving_layer, moving_info = moving[0]
    fixed = sorted(
        [(ly, i) for ly, i in mri if i["session"] == reference],
        key=lambda li: (li[1]["track"] != moving_info["track"], _anatomy_rank(li[1])),
    )
    return fixed[0][0].name, moving_layer.name


def moving_on_fixed(fixed, moving, alignment):
    """The moving MRI on the fixed grid through an AlignmentResult (its B-spline part included)."""
    if alignment.deformable is None:
        return reg.resample_moving(fixed, moving, alignment.fixed_to_moving)
    import SimpleITK as sitk

    total = sitk.CompositeTransform(3)
    total.AddTransform(reg.matrix_to_sitk_transform(alignment.fixed_to_moving))
    total.AddTransform(alignment.deformable)  # applied first: the B-spline works on fixed-world points
    image = sitk.Resample(
        reg.volume_to_sitk(moving, sitk.sitkFloat32), reg.volume_to_sitk(fixed), total, sitk.sitkLinear, 0.0
    )
    return reg.sitk_to_volume(image, like=moving, name=f"{moving.name} registered")


def compute_session(
    fixed,
    moving,
    transform="rigid",
    bias_correction="local",
    allow_flip=False,
    square_mm=10.0,
    progress=None,
):
    """What the worker runs for session alignment (pure; no napari).

    :func:`napari_immunotrack.alignment.align_mri` (a doubtful rigid result is retried with the
    prone/supine half turns, as ``align_study`` does), then the quality-control views on the fixed grid.
    Parameters
    ----------
    fixed : Volume
        The reference session's anatomical MRI.
    moving : Volume
        This session's MRI of the same animal (same contrast works best).
    transform : {"rigid", "affine", "bspline"}, default "rigid"
        As :func:`~napari_immunotrack.alignment.align_mri`.
    bias_correction : {"local", "differential", "n4", "none"}, default "local"
        Intensity harmonisation, as :func:`~napari_immunotrack.alignment.align_mri`.
    allow_flip : bool, default False
        Search the prone/supine half turns from the start.
    square_mm : float, default 10.0
        Side of the checkerboard's squares, mm.
    progress : callable, optional
        Called as ``progress(fraction, text)``, also at every iteration of the alignment's optimisers
        (:func:`~napari_immunotrack.alignment.align_mri`), so a Cancelled it raises (the dock's Cancel) stops
        the work inside a stage, within about a second; the result is then a Failed carrying it.

    Returns
    -------
    tuple or Failed
        ``(result, qc, alignment)``: a RegistrationResult (what the dock applies; ``method`` "session",
        ``metric_final`` the correlation, ``metric_after_init`` the body-mask Dice), the QC Volumes
        (``checkerboard``, ``difference``, ``moving``, ``edges``) and the AlignmentResult (doubt checks,
        provenance); or a Failed carrying the exception (never raised: the dock shows it).

    Examples
    --------
    A real alignment takes about 1.5 s even on a small mouse (see
    :func:`~napari_immunotrack.alignment.align_mri`'s example); here, what the dock is given for an image
    without a body:

    >>> from napari_immunotrack.errors import one_line
    >>> from napari_immunotrack.volume import Volume
    >>> empty = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), "MR")
    >>> out = compute_session(empty, empty)
    >>> type(out).__name__, one_line(out.exc)
    ('Failed', "the image shows no body (an empty or constant image); give the session's anatomical MRI.")
    """
    import warnings

    from ..alignment import align_mri, keep_after_half_turn_retry
    from ..errors import ImmunotrackWarning

    try:
        report(progress, 0.02, "session alignment: orientation search, then rigid refinement")
        with warnings.catch_warnings():  # the doubts are in alignment.warnings, shown once by the dock
            warnings.simplefilter("ignore", ImmunotrackWarning)
            # precision_check: restarts from nearby poses estimate the residual error (mm) the dock reports
            options = {"bias_correction": bias_correction, "precision_check": True}
            # progress at every optimiser iteration: a Cancel stops the alignment inside a stage
            first = scaled(progress, 0.02, 0.6)
            alignment = align_mri(fixed, moving, transform, allow_flip=allow_flip, progress=first, **options)
            if alignment.doubtful and not allow_flip:
                report(progress, 0.6, "doubtful: trying the prone/supine half turns")
                again = scaled(progress, 0.6, 0.85)
                flipped = align_mri(fixed, moving, transform, allow_flip=True, progress=again, **options)
                alignment = keep_after_half_turn_retry(alignment, flipped)
        report(progress, 0.85, f"aligned (correlation {alignment.correlation:.3f}); quality control views")
        on_fixed = moving_on_fixed(fixed, moving, alignment)
        qc = {
            "checkerboard": reg.checkerboard(fixed, on_fixed, square_mm=square_mm),
            "difference": reg.difference(fixed, on_fixed),
            "moving": reg.normalised(on_fixed),
            "edges": reg.edges(fixed),
        }
        result = reg.RegistrationResult(
            fixed_to_moving=alignment.fixed_to_moving,
            metric_initial=float("nan"),
            metric_final=float(alignment.correlation),
            iterations=0,
            parameters=dict(alignment.parameters),
            stages=list(alignment.stages),
            elapsed_s=float(alignment.elapsed_s),
            method="session",
            warnings=list(alignment.warnings),
            metric_after_init=float(alignment.body_dice),
        )
        report(progress, 1.0, "done")
        return result, qc, alignment
    except Exception as exc:  # noqa: BLE001 - shown to the user in the GUI thread, never lost
        return Failed(exc)


def find_study_root(viewer):
    """The study folder behind the viewer's layers: a dock holding an open study, else a layer's file path."""
    docks = getattr(viewer.window, "dock_widgets", {}) or {}
    for widget in list(docks.values()):
        study = getattr(getattr(widget, "model", None), "study", None)
        root = getattr(study, "root", None)
        if root is not None:
            return Path(root)
    for layer in viewer.layers:  # a layer napari read from a file inside sub-*/: the folder above it
        path = getattr(getattr(layer, "source", None), "path", None)
        parents = Path(path).parents if path else ()
        root = next((p.parent for p in parents if p.name.startswith("sub-")), None)
        if root is not None:
            return root
    return None


def session_transform_target(root, subject, session: str, reference: str, moving_track=None, fixed_track=None):
    """Where a session's alignment goes in a study and the anatomy files it was made from.

    Parameters
    ----------
    root : str or Path
        The study folder.
    subject : str or None
        Subject label; None is accepted when the study has one subject.
    session : str
        The aligned (moving) session's label.
    reference : str
        The reference (fixed) session's label.
    moving_track, fixed_track : str, optional
        The MRI tracks the layers showed (T2w, T1w, ...): the file of that track is named as the input;
        otherwise (or when absent) the first MR file in the order T2w, T1w, T2*w.

    Returns
    -------
    (Path, dict)
        ``<session>/xfm/<session_transform_name>`` and {"fixed": path, "moving": path} of the two sessions'
        MRI files (what ``immunotrack align`` checks to reuse it; None for a session without MRI).

    Raises
    ------
    InputError
        When the subject cannot be told or is not in the study, or either session is not the subject's.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day in (0, 3):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         for contrast in ("T1w", "T2w"):
    ...             _ = save_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4), "MR"),
    ...                             anat / f"sub-01_ses-day{day}_{contrast}.nii.gz")
    ...     path, inputs = session_transform_target(tmp, None, "day3", "day0", "T1w", "T1w")
    ...     path = path.relative_to(tmp)
    >>> path.as_posix(), {k: Path(v).name for k, v in inputs.items()}
    ('sub-01/ses-day3/xfm/sub-01_ses-day3_from-anat_to-sesday0.tfm', {'fixed': 'sub-01_ses-day0_T1w.nii.gz', 'moving': 'sub-01_ses-day3_T1w.nii.gz'})
    """
    from ..alignment import session_transform_name
    from ..study import open_study

    study = open_study(root)
    subjects = study.subjects()
    subject = subject or (subjects[0] if len(subjects) == 1 else None)
    if subject not in subjects:
        raise InputError(
            f"cannot tell which subject of {root} these layers show (it has {', '.join(subjects)}); "
            "open the session with the Study dock."
        )
    for name in (session, reference):
        if name not in study.sessions(subject):
            raise InputError(f"{root} has no session {name!r} for subject {subject}; choose the study it came from.")

    def anatomy(ses, track):
        files = [f for f in study.session_files(subject, ses) if not f.is_labels and f.modality == "MR"]
        files.sort(key=lambda f: (f.track != track, _anatomy_rank({"track": f.role})))
        return files[0] if files else None

    moving_file, fixed_file = anatomy(session, moving_track), anatomy(reference, fixed_track)
    session_dir = Path(moving_file.session_dir) if moving_file is not None and moving_file.session_dir else None
    if session_dir is None:
        session_dir = Path(root) / f"sub-{subject}" / f"ses-{session}"
    inputs = {"fixed": fixed_file.path if fixed_file else None, "moving": moving_file.path if moving_file else None}
    return session_dir / "xfm" / session_transform_name(subject, session, reference), inputs


class RegistrationWidget(PluginDock):
    """Dock widget: register a moving image layer to a fixed one."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.result: reg.RegistrationResult | None = None
        self.metrics = (float("nan"), float("nan"))
        self.qc_layers: dict = {}
        self._undo: list = []
        self._inputs: dict = {}
        self.alignment = None  # the AlignmentResult of the last session alignment
        self.study_root: Path | None = None  # where "Save to study" writes (found from the layers when None)

        layout = QVBoxLayout(self)
        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.fixed_combo, self.moving_combo = QComboBox(), QComboBox()
        self.fixed_combo.setToolTip("the reference image: it stays where it is")
        self.moving_combo.setToolTip("the image to move onto the fixed one (its data are not resampled)")
        form.addRow("Fixed *", self.fixed_combo)
        form.addRow("Moving *", self.moving_combo)
        self.companions = QListWidget()
        self.companions.setToolTip(
            "other layers acquired with the moving one (its CT, its ROIs): ticked layers get the same transform "
            "(session alignment moves every layer of the moving session anyway)"
        )
        self.companions.setMaximumHeight(90)
        form.addRow("Move with it", self.companions)
        layout.addWidget(box)

        box = QGroupBox("Method")
        form = QFormLayout(box)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.transform_combo = QComboBox()
        self.transform_combo.addItems(["rigid", "affine"])
        self.transform_combo.setToolTip("rigid: 6 parameters; affine: rigid first, then 12 (scaling, shear)")
        self.fixed_mask_combo, self.moving_mask_combo = QComboBox(), QComboBox()
        self.fixed_points_combo, self.moving_points_combo = QComboBox(), QComboBox()
        form.addRow("Method", self.method_combo)
        form.addRow("Transform", self.transform_combo)
        form.addRow("Fixed mask", self.fixed_mask_combo)
        form.addRow("Moving mask", self.moving_mask_combo)
        form.addRow("Fixed landmarks", self.fixed_points_combo)
        form.addRow("Moving landmarks", self.moving_points_combo)
        self.harmonise_combo = QComboBox()
        self.harmonise_combo.addItems(list(HARMONISATION))
        self.harmonise_combo.setToolTip(
            "session alignment: how the two sessions' gains and coil profiles are made comparable "
            "(docs/methods/session-alignment.md)"
        )
        self.flip_box = QCheckBox("also try prone/supine half turns")
        self.flip_box.setToolTip("session alignment: the animal may lie on its back one day and its belly another")
        form.addRow("Intensities", self.harmonise_combo)
        form.addRow("", self.flip_box)
        self.square_mm = QDoubleSpinBox()
        self.square_mm.setRange(0.5, 500.0)
        self.square_mm.setValue(10.0)
        self.square_mm.setSuffix(" mm")
        self.square_mm.setToolTip("size of the checkerboard squares")
        form.addRow("Checkerboard", self.square_mm)
        layout.addWidget(box)

        self.run_row = RunRow(layout, "Register", on_run=self.run, owner=self)  # run_button, status, runner...
        self.metric_label = QLabel("")
        self.metric_label.setWordWrap(True)
        self.fre_table = QTableWidget(0, 2)
        self.fre_table.setHorizontalHeaderLabels(["pair", "FRE (mm)"])
        self.fre_table.setVisible(False)
        self.qc_combo = QComboBox()
        self.qc_combo.addItems(["checkerboard", "difference", "edges", "none"])
        self.qc_combo.setToolTip("which quality-control layer to show")
        row2 = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.save_button = QPushButton("Save transform...")
        self.study_button = QPushButton("Save to study")
        self.study_button.setToolTip(
            "session alignment: write xfm/<session>_from-anat_to-ses<reference>.tfm in the study "
            "(what `immunotrack align` writes and the Study dock reads); asks before replacing one"
        )
        row2.addWidget(self.undo_button)
        row2.addWidget(self.save_button)
        row2.addWidget(self.study_button)
        layout.addWidget(self.metric_label)
        layout.addWidget(self.fre_table)
        qc_row = QFormLayout()
        qc_row.addRow("Show", self.qc_combo)
        layout.addLayout(qc_row)
        layout.addLayout(row2)
        layout.addStretch(1)
        self.undo_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self.study_button.setEnabled(False)

        self.undo_button.clicked.connect(self.undo)
        self.save_button.clicked.connect(self._save_dialog)
        self.study_button.clicked.connect(self._save_to_study_clicked)
        self.qc_combo.currentTextChanged.connect(self.show_qc)
        self.method_combo.currentTextChanged.connect(self._method_changed)
        self.moving_combo.currentTextChanged.connect(self._refresh_companions)
        follow_layers(self.viewer, self._refresh_choices)
        if session_defaults(self._layers("Image"))[0] is not None:
            # study layers of two sessions: aligning the sessions is what this dock is most likely opened for
            self.method_combo.setCurrentText(next(k for k, v in METHODS.items() if v == "session"))
        self._method_changed()

    # ------------------------------------------------------------------ choices
    def _layers(self, kind: str):
        return layers_of(self.viewer, (kind,), exclude=self.qc_layers.values())

    def _refresh_choices(self, event=None) -> None:
        images = self._layers("Image")
        names = [ly.name for ly in images]
        modality = {
            ly.name: ly.metadata.get("volume").modality if ly.metadata.get("volume") is not None else ""
            for ly in images
        }
        anatomy = next((n for n in names if modality[n] == "MR"), names[0] if names else None)
        others = [n for n in names if n != anatomy]
        ranked = sorted(
            others,
            key=lambda n: _MOVING_ORDER.index(modality[n]) if modality[n] in _MOVING_ORDER else len(_MOVING_ORDER),
        )
        hot = ranked[0] if ranked else None
        if self._method() == "session":
            session_fixed, session_moving = session_defaults(images)
            anatomy, hot = session_fixed or anatomy, session_moving or hot
        fill_combo(self.fixed_combo, names, guess=anatomy)
        fill_combo(self.moving_combo, names, guess=hot)
        labels = [ly.name for ly in self._layers("Labels")]
        fill_combo(self.fixed_mask_combo, labels, optional=True)
        fill_combo(self.moving_mask_combo, labels, optional=True)
        points = [ly.name for ly in self._layers("Points")]
        fill_combo(self.fixed_points_combo, points, optional=True, guess=points[0] if points else None)
        fill_combo(self.moving_points_combo, points, optional=True, guess=points[1] if len(points) > 1 else None)
        self._refresh_companions()

    def _refresh_companions(self, *args) -> None:
        ticked = self.companion_names()
        self.companions.clear()
        skip = {self.fixed_combo.currentText(), self.moving_combo.currentText()}
        for layer in self.viewer.layers:
            if layer.name in skip or id(layer) in {id(q) for q in self.qc_layers.values()}:
                continue
            if type(layer).__name__ not in ("Image", "Labels", "Points", "Shapes"):
                continue
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if layer.name in ticked else Qt.CheckState.Unchecked)
            self.companions.addItem(item)

    def companion_names(self) -> list:
        """Names of the ticked layers that move with the moving image."""
        return [
            self.companions.item(i).text()
            for i in range(self.companions.count())
            if self.companions.item(i).checkState() == Qt.CheckState.Checked
        ]

    def _method(self) -> str:
        return METHODS.get(self.method_combo.currentText(), "intensity")

    def _method_changed(self, *args) -> None:
        method = self._method()
        landmarks, session = method == "landmarks", method == "session"
        for combo in (self.fixed_points_combo, self.moving_points_combo):
            combo.setEnabled(landmarks)
        for combo in (self.fixed_mask_combo, self.moving_mask_combo):
            combo.setEnabled(not landmarks and not session)  # session alignment finds the body itself
        self.harmonise_combo.setEnabled(session)
        self.flip_box.setEnabled(session)
        current = self.transform_combo.currentText()
        self.transform_combo.blockSignals(True)
        self.transform_combo.clear()
        self.transform_combo.addItems(list(TRANSFORMS[method]))
        self.transform_combo.setCurrentText(current if current in TRANSFORMS[method] else "rigid")
        self.transform_combo.blockSignals(False)
        if session:  # the pickers follow the study: this timepoint's MRI onto the reference session's
            fixed, moving = session_defaults(self._layers("Image"))
            if fixed is not None:
                self.fixed_combo.setCurrentText(fixed)
                self.moving_combo.setCurrentText(moving)
                self._fit_checkerboard(self.viewer.layers[fixed])

    def _fit_checkerboard(self, layer) -> None:
        """Checkerboard squares of about an eighth of a small animal's field of view (10 mm is a mouse's half)."""
        volume = layer.metadata.get("volume")
        if volume is None or self.square_mm.value() != 10.0:  # the user's own choice stays
            return
        extent = float(np.min(np.asarray(volume.spatial_shape, float) * volume.spacing))
        if extent < 80.0:
            self.square_mm.setValue(max(0.5, round(extent / 8.0, 1)))

    def select(
        self,
        fixed=None,
        moving=None,
        method=None,
        transform=None,
        fixed_mask=None,
        moving_mask=None,
        fixed_points=None,
        moving_points=None,
        companions=None,
        harmonisation=None,
        allow_flip=None,
    ) -> None:
        """Choose inputs by name (for scripts and tests); ``method`` is "intensity", "landmarks" or "session".

        ``harmonisation`` (session alignment) is one of ``HARMONISATION``'s values ("local", "n4",
        "differential", "none"); ``allow_flip`` also tries prone/supine half turns.
        """
        if method is not None:
            if method not in METHODS.values():
                raise InputError(f"no method {method!r}; choose one of {', '.join(METHODS.values())}.")
            self.method_combo.setCurrentText(next(k for k, v in METHODS.items() if v == method))
        if harmonisation is not None:
            if harmonisation not in HARMONISATION.values():
                raise InputError(
                    f"no harmonisation {harmonisation!r}; choose one of {', '.join(HARMONISATION.values())}."
                )
            self.harmonise_combo.setCurrentText(next(k for k, v in HARMONISATION.items() if v == harmonisation))
        if allow_flip is not None:
            self.flip_box.setChecked(bool(allow_flip))
        for combo, value in (
            (self.fixed_combo, fixed),
            (self.moving_combo, moving),
            (self.transform_combo, transform),
            (self.fixed_mask_combo, fixed_mask),
            (self.moving_mask_combo, moving_mask),
            (self.fixed_points_combo, fixed_points),
            (self.moving_points_combo, moving_points),
        ):
            if value is not None:
                choose(combo, value, f"no choice named {value!r}.")
        if companions is not None:
            self._refresh_companions()
            for i in range(self.companions.count()):
                item = self.companions.item(i)
                item.setCheckState(Qt.CheckState.Checked if item.text() in companions else Qt.CheckState.Unchecked)

    def _layer(self, combo, what: str):
        return chosen_layer(self.viewer, combo, f"as {what}")

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Register in a worker thread; the result is applied when it comes back."""
        if self.runner.running:  # a second click: one message; the running registration and its inputs stay
            notify_error(InputError("a computation is already running; wait for it or press Cancel."))
            return
        try:
            fixed_layer = self._layer(self.fixed_combo, "fixed image")
            moving_layer = self._layer(self.moving_combo, "moving image")
            if fixed_layer is None or moving_layer is None:
                raise InputError("choose a fixed and a moving image layer.")
            if fixed_layer is moving_layer:
                raise InputError("the fixed and the moving image are the same layer; choose two images.")
            method = self._method()
            if method == "session":
                self._run_session(fixed_layer, moving_layer)
                return
            kwargs = {
                "method": method,
                "transform": self.transform_combo.currentText(),
                "square_mm": self.square_mm.value(),
            }
            if method == "landmarks":
                fp = self._layer(self.fixed_points_combo, "fixed landmarks")
                mp = self._layer(self.moving_points_combo, "moving landmarks")
                if fp is None or mp is None:
                    raise InputError(
                        "choose a Points layer of landmarks on each image (the same points, same "
                        "order), or use the intensity method."
                    )
                kwargs.update(fixed_points=_points_ras(fp), moving_points=_points_ras(mp))
            else:
                for key, combo in (("fixed_mask", self.fixed_mask_combo), ("moving_mask", self.moving_mask_combo)):
                    layer = self._layer(combo, key.replace("_", " "))
                    kwargs[key] = None if layer is None else layer_to_volume(layer, native=True)
            fixed, moving = layer_to_volume(fixed_layer), layer_to_volume(moving_layer)
        except InputError as exc:
            self._failed(exc)
            return
        self.runner.start(compute, fixed, moving, on_done=self._done, on_error=self._failed, **kwargs)
        self._inputs = {
            "fixed": fixed_layer,
            "moving": moving_layer,
            "fixed_volume": fixed,
            "moving_volume": moving,
            "points": (kwargs.get("fixed_points") is not None and self.moving_points_combo.currentText()),
        }
        self.status.setText("registering...")

    def _run_session(self, fixed_layer, moving_layer) -> None:
        fixed_info, moving_info = session_info(fixed_layer), session_info(moving_layer)
        if fixed_info["session"] and fixed_info["session"] == moving_info["session"]:
            raise InputError(
                f"{fixed_layer.name!r} and {moving_layer.name!r} are of the same session "
                f"({moving_info['session']}); choose the reference session's MRI as fixed and another session's as moving."
            )
        fixed, moving = layer_to_volume(fixed_layer), layer_to_volume(moving_layer)
        for layer, volume in ((fixed_layer, fixed), (moving_layer, moving)):
            if volume.data.ndim != 3:
                raise InputError(f"{layer.name!r} is not a 3D image; session alignment needs each session's 3D MRI.")
        self.runner.start(
            compute_session,
            fixed,
            moving,
            on_done=self._session_done,
            on_error=self._failed,
            transform=self.transform_combo.currentText(),
            bias_correction=HARMONISATION[self.harmonise_combo.currentText()],
            allow_flip=self.flip_box.isChecked(),
            square_mm=self.square_mm.value(),
        )
        self._inputs = {
            "fixed": fixed_layer,
            "moving": moving_layer,
            "fixed_volume": fixed,
            "moving_volume": moving,
            "points": False,
            "fixed_info": fixed_info,
            "moving_info": moving_info,
            # how far the moving layer was already moved from its session's world (by an earlier alignment)
            "prior": self._prior_move(moving_layer),
        }
        self.status.setText("aligning sessions...")

    @staticmethod
    def _prior_move(layer) -> np.ndarray:
        """The world change already applied to ``layer`` by this dock (its session world -> shown world)."""
        volume = layer.metadata.get("volume")
        native = layer.metadata.get("immunotrack", {}).get("session_native_affine")
        if volume is None or native is None:
            return np.eye(4)
        return np.asarray(volume.affine, float) @ np.linalg.inv(np.asarray(native, float))

    def _session_layers(self, moving_layer) -> list:
        """The moving MRI and every other layer of its session (Study dock tracks, study files, ticked layers)."""
        info = self._inputs["moving_info"]
        own = {id(q) for q in self.qc_layers.values()}
        movers = [moving_layer]
        for layer in self.viewer.layers:
            if layer is moving_layer or id(layer) in own:
                continue
            other = session_info(layer)
            same = (
                info["session"] is not None
                and other["session"] == info["session"]
                and other["role"] != "baseline"
                and (other["subject"] is None or info["subject"] is None or other["subject"] == info["subject"])
            )
            if same or layer.name in self.companion_names():
                movers.append(layer)
        return movers

    def _session_done(self, out) -> None:
        from napari.utils.notifications import show_warning

        result, qc, alignment = out
        moving_layer = self._inputs["moving"]
        if moving_layer not in self.viewer.layers:
            self._failed(InputError("the moving layer was removed while aligning; nothing was applied."))
            return
        self.result, self.alignment, self.metrics = result, alignment, (float("nan"), alignment.correlation)
        self._show_qc(qc)
        self._show_metrics(result, self.metrics)
        fixed_name = self._inputs["fixed"].name
        if alignment.doubtful:
            # a doubtful map is not applied: the QC views show why; Save to study asks first
            text = (
                f"session alignment of {moving_layer.name} to {fixed_name} is doubtful "
                f"({'; '.join(w.replace(' (--allow-flip)', '') for w in alignment.warnings)}; the prone/supine "
                "half turns were tried too); not applied: check the QC views, the images and the method."
            )
            show_warning(text)
            self.status.setText(text)
            self.save_button.setEnabled(True)
            self.study_button.setEnabled(True)
            return
        movers = self._session_layers(moving_layer)
        self.apply(result.fixed_to_moving, movers)
        self.save_button.setEnabled(True)
        self.study_button.setEnabled(True)
        self.status.setText(
            f"aligned {moving_layer.name} to {fixed_name} ({alignment.transform}, correlation "
            f"{alignment.correlation:.3f}, body overlap {alignment.body_dice:.0%}, {alignment.elapsed_s:.1f} s); "
            f"moved: {', '.join(ly.name for ly in movers)}."
            + (
                " The B-spline part shows in the QC views only (layers move by the linear part)."
                if alignment.deformable is not None
                else ""
            )
        )

    def _done(self, out) -> None:
        result, qc, metrics = out  # a Failed from compute goes to _failed (see TaskRunner.start)
        moving_layer = self._inputs["moving"]
        if moving_layer not in self.viewer.layers:
            self._failed(InputError("the moving layer was removed while registering; nothing was applied."))
            return
        names = self.companion_names()
        if self._inputs["points"] and self._inputs["points"] not in names:
            names.append(self._inputs["points"])  # the moving landmarks mark moving anatomy: they move too
        movers = [moving_layer] + [self.viewer.layers[n] for n in names if n in self.viewer.layers]
        self.apply(result.fixed_to_moving, movers)
        self.result, self.metrics = result, metrics
        self._show_qc(qc)
        self._show_metrics(result, metrics)
        self.save_button.setEnabled(True)
        note = ""
        if not np.allclose(result.fixed_to_moving[:3, :3], np.eye(3), atol=1e-3):
            note = (
                " napari draws a rotated layer in 2D without its out-of-slice rotation: judge the alignment on "
                "the QC layers (on the fixed grid) or in 3D."
            )
        self.status.setText(
            f"registered {moving_layer.name} to {self._inputs['fixed'].name} "
            f"({result.method}, {result.parameters.get('transform')}, {result.elapsed_s:.1f} s); "
            f"moved: {', '.join(ly.name for ly in movers)}.{note}"
        )
        for warning in result.warnings:
            from napari.utils.notifications import show_warning

            show_warning(warning)

    def _failed(self, exc) -> None:
        notify_error(exc)
        self.status.setText(one_line(exc) if not type(exc).__name__ == "Cancelled" else "cancelled")

    # ------------------------------------------------------------------ applying and undoing
    def apply(self, fixed_to_moving, layers) -> None:
        """Show ``layers`` in the fixed world: their affines get ``inv(fixed_to_moving)`` (undoable)."""
        inverse = np.linalg.inv(np.asarray(fixed_to_moving, float))
        world = _SWAP @ inverse @ _SWAP  # in napari's (S, A, R) world order
        entries = []
        for layer in layers:
            old = np.array(layer.affine.affine_matrix, float)
            n = old.shape[0] - 1
            step = np.eye(n + 1)
            step[n - 3 : n, n - 3 : n] = world[:3, :3]
            step[n - 3 : n, n] = world[:3, 3]
            volume = layer.metadata.get("volume")
            entries.append((layer, old, volume))
            layer.affine = step @ old
            if volume is not None:
                tags = layer.metadata.setdefault("immunotrack", {})
                tags.setdefault("session_native_affine", np.asarray(volume.affine, float).tolist())
                layer.metadata["volume"] = volume.replace(affine=inverse @ volume.affine)
        self._undo.append(entries)
        self.undo_button.setEnabled(True)

    def undo(self) -> None:
        """Put the layers moved by the last registration back where they were."""
        if not self._undo:
            return
        for layer, old, volume in self._undo.pop():
            layer.affine = old
            if volume is not None:
                layer.metadata["volume"] = volume
        for layer in list(self.qc_layers.values()):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.qc_layers.clear()
        self.result = None
        self.undo_button.setEnabled(bool(self._undo))
        self.save_button.setEnabled(False)
        self.study_button.setEnabled(False)
        self.alignment = None
        self.metric_label.setText("")
        self.fre_table.setVisible(False)
        self.status.setText("undone")

    # ------------------------------------------------------------------ quality control
    def _show_qc(self, qc: dict) -> None:
        fixed = self._inputs["fixed_volume"]
        styles = {
            "checkerboard": {"colormap": "gray", "contrast_limits": (0, 1), "blending": "translucent"},
            "difference": {"colormap": "twilight_shifted", "contrast_limits": (-1, 1), "blending": "translucent"},
            "moving": {"colormap": "gray", "contrast_limits": (0, 1), "blending": "translucent"},
            "edges": {"colormap": "cyan", "contrast_limits": (0, 1), "blending": "additive"},
        }
        for key, volume in qc.items():
            if key == "edges":
                volume = volume.replace(data=volume.numpy().astype(np.float32), modality="OT", unit="a.u.")
            volume = volume.replace(name=QC_NAMES[key])
            data, kwargs, _ = volume_layer_data(volume, reference=fixed, **styles[key])
            old = self.qc_layers.get(key)
            if old is not None and old in self.viewer.layers:
                self.viewer.layers.remove(old)
            self.qc_layers[key] = self.viewer.add_image(data, **kwargs)
        self.show_qc(self.qc_combo.currentText())
        self._refresh_choices()

    def show_qc(self, which: str) -> None:
        """Show one quality-control layer ("checkerboard", "difference", "edges" or "none")."""
        shown = QC_VIEWS.get(which, ())
        for key, layer in self.qc_layers.items():
            if layer in self.viewer.layers:
                layer.visible = key in shown
        top = [self.qc_layers[k] for k in shown if k in self.qc_layers and self.qc_layers[k] in self.viewer.layers]
        if top:
            self.viewer.layers.selection.active = top[0]

    def _show_metrics(self, result, metrics) -> None:
        before, after = metrics
        if result.method == "session":
            a = self.alignment
            self.fre_table.setVisible(False)
            self.metric_label.setText(
                f"correlation {a.correlation:.3f} (>= {_min_correlation():g} expected), body overlap "
                f"{a.body_dice:.0%}, restarts agree within {a.precision_mm:.3f} mm"
                + (f", smallest Jacobian {a.min_jacobian:.2f}" if a.deformable is not None else "")
                + ("; DOUBTFUL: " + "; ".join(a.warnings) if a.doubtful else "; no doubt raised")
            )
            return
        text = (
            f"mutual information {before:.3f} -> {after:.3f} nats (higher is better)"
            if np.isfinite(before) and np.isfinite(after)
            else "mutual information: not available"
        )
        if result.method == "landmarks":
            text += f"; landmarks RMS error {result.metric_initial:.2f} -> {result.metric_final:.2f} mm"
            self.fre_table.setRowCount(len(result.fre_mm))
            for i, value in enumerate(result.fre_mm):
                self.fre_table.setItem(i, 0, QTableWidgetItem(str(i + 1)))
                self.fre_table.setItem(i, 1, QTableWidgetItem(f"{value:.2f}"))
            self.fre_table.setVisible(True)
        else:
            self.fre_table.setVisible(False)
        self.metric_label.setText(text)

    # ------------------------------------------------------------------ saving
    def save_transform(self, path, overwrite: bool = False) -> Path:
        """Write the last transform as an ITK file (fixed -> moving, LPS inside) with its provenance."""
        from .. import provenance
        from ..io.transforms import describe_image, write_transform

        if self.result is None:
            raise InputError("register first: there is no transform to save.")
        inputs = {"fixed": self._inputs.get("fixed_volume"), "moving": self._inputs.get("moving_volume")}
        record = provenance.record(
            "register",
            inputs=inputs,
            parameters=self.result.parameters,
            warnings=self.result.warnings,
            result=self.result.to_dict(),
            layers={"fixed": self._inputs["fixed"].name, "moving": self._inputs["moving"].name},
        )
        return write_transform(
            path,
            self.result.fixed_to_moving,
            overwrite=overwrite,
            provenance=record,
            fixed=describe_image(inputs["fixed"], role="fixed"),
            moving=describe_image(inputs["moving"], role="moving"),
        )

    def session_transform(self) -> np.ndarray:
        """The last session alignment as the study stores it: reference session world -> this session's world.

        A layer this dock had already moved is measured from its session's own world again, so the
        saved map composes with nothing and is read back as is (the Study dock and ``immunotrack align``).
        """
        if self.alignment is None:
            raise InputError("align the sessions first (method: session alignment): there is no alignment to save.")
        prior_moving = self._inputs.get("prior", np.eye(4))
        prior_fixed = (
            self._prior_move(self._inputs["fixed"]) if self._inputs["fixed"] in self.viewer.layers else np.eye(4)
        )
        return np.linalg.inv(prior_moving) @ self.alignment.fixed_to_moving @ prior_fixed

    def save_to_study(self, root=None, overwrite: bool = False, force: bool = False) -> Path:
        """Write the last session alignment into the study as ``xfm/<alignment.session_transform_name>``.

        Parameters
        ----------
        root : path, optional
            The study folder (default :attr:`study_root`, else found from the Study dock or the layers).
        overwrite : bool
            Replace an existing transform (the button asks first).
        force : bool
            Save a doubtful alignment too (its warnings go into the provenance; the button asks first).

        Returns
        -------
        Path of the written ``.tfm`` (its provenance sidecar beside it; the B-spline part, if any, as
        ``..._desc-bspline.tfm``, as ``immunotrack align`` writes it).
        """
        import SimpleITK as sitk

        from .. import provenance
        from ..io.transforms import describe_image, write_transform
        from ..outputs import atomic_output, write_sidecar

        matrix = self.session_transform()
        alignment = self.alignment
        if alignment.doubtful and not force:
            raise InputError(
                f"the alignment is doubtful ({'; '.join(alignment.warnings)}); nothing saved: check the QC views, "
                "or save it anyway (asked when saving from the dock)."
            )
        root = root if root is not None else (self.study_root or find_study_root(self.viewer))
        if root is None:
            raise InputError(
                "cannot tell which study these layers come from; open it with the Study dock or choose its folder."
            )
        fixed_info, moving_info = self._inputs["fixed_info"], self._inputs["moving_info"]
        if not fixed_info["session"] or not moving_info["session"]:
            raise InputError(
                "the two MRI layers do not say which sessions they are (open them with the Study dock); "
                "use Save transform... to write the file anywhere."
            )
        path, files = session_transform_target(
            root,
            moving_info["subject"] or fixed_info["subject"],
            moving_info["session"],
            fixed_info["session"],
            moving_info["track"],
            fixed_info["track"],
        )
        bspline = path.with_name(path.name[:-4] + "_desc-bspline.tfm")
        for target in (path, bspline) if alignment.deformable is not None else (path,):
            if target.exists() and not overwrite:
                raise InputError(f"{target} exists; replace it (overwrite) or keep it.")
        fixed_volume = self._inputs["fixed_volume"]
        moving_volume = self._inputs["moving_volume"]
        native_fixed = fixed_volume.replace(
            affine=np.linalg.inv(self._prior_move(self._inputs["fixed"])) @ fixed_volume.affine
        )
        native_moving = moving_volume.replace(
            affine=np.linalg.inv(self._inputs.get("prior", np.eye(4))) @ moving_volume.affine
        )
        inputs = {
            role: (files[role] if files[role] is not None else vol)
            for role, vol in (("fixed", native_fixed), ("moving", native_moving))
        }
        result = dict(alignment.to_dict(), fixed_to_moving_ras=np.round(matrix, 9).tolist())
        record = provenance.record(
            "align",
            inputs=inputs,
            parameters=alignment.parameters,
            warnings=alignment.warnings,
            result=result,
            layers={"fixed": self._inputs["fixed"].name, "moving": self._inputs["moving"].name},
            via="napari Registration dock (session alignment)",
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_transform(
            path,
            matrix,
            overwrite=overwrite,
            provenance=record,
            fixed=describe_image(
                native_fixed, role=f"ses-{fixed_info['session']} MRI (reference)", path=files["fixed"]
            ),
            moving=describe_image(native_moving, role=f"ses-{moving_info['session']} MRI", path=files["moving"]),
        )
        if alignment.deformable is not None:
            with atomic_output(bspline, overwrite) as tmp:
                sitk.WriteTransform(alignment.deformable, str(tmp))
                write_sidecar(bspline, record, written=tmp)
        self.status.setText(f"saved {path}")
        return path

    def _save_to_study_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        try:
            root = self.study_root or find_study_root(self.viewer)
            if root is None:
                chosen = QFileDialog.getExistingDirectory(self, "Which study do these sessions belong to?")
                if not chosen:
                    return
                root = self.study_root = Path(chosen)
            force = False
            if self.alignment is not None and self.alignment.doubtful:
                answer = QMessageBox.question(
                    self,
                    "Doubtful alignment",
                    "The alignment is doubtful:\n" + "\n".join(self.alignment.warnings) + "\nSave it anyway?",
                )
                if answer != QMessageBox.StandardButton.Yes:
                    return
                force = True
            try:
                self.save_to_study(root, force=force)
            except InputError as exc:
                if "exists" not in str(exc):
                    raise
                answer = QMessageBox.question(self, "Replace?", f"{one_line(exc)}\nReplace the saved alignment?")
                if answer != QMessageBox.StandardButton.Yes:
                    self.status.setText("kept the saved alignment; nothing written")
                    return
                self.save_to_study(root, overwrite=True, force=force)
        except Exception as exc:  # noqa: BLE001 - one notification, never raised into Qt's loop
            self._failed(exc)

    def _save_dialog(self) -> None:
        save_dialog(
            self,
            self.status,
            "Save transform",
            "transform.tfm",
            "ITK transform (*.tfm *.txt *.mat)",
            lambda path: self.save_transform(path, overwrite=True),
        )  # the dialog asked before replacing


def _min_correlation() -> float:
    from ..alignment import MIN_CORRELATION

    return MIN_CORRELATION


__all__ = [
    "RegistrationWidget",
    "compute",
    "compute_session",
    "session_defaults",
    "session_info",
    "session_transform_target",
    "QC_NAMES",
]
