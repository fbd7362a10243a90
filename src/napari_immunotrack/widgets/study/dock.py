"""The study browser dock: open a study, see it fused in one physical space, step through timepoints.

:class:`StudyWidget` (dock, "Study")
    Open a study folder (or the bundled sample). A tree shows subjects,
    timepoints (sessions) and the modalities of each, with what is missing;
    ticking a modality shows it. Every image sits in world millimetres with
    modality defaults (grey anatomy, PET/SPECT hot in SUVbw with a colour
    bar, magenta 19F, cyan MPI, green fluorescence, additive blending for hot
    spots). One napari layer follows each modality (a *track*) across
    timepoints: stepping the timepoint (slider, buttons, ``Alt-Left`` /
    ``Alt-Right``) swaps its data, so the user's display settings and the
    world position are kept, and the window (contrast limits) stays linked
    across timepoints unless unticked. Modality contrast presets, 2D/3D,
    axial/coronal/sagittal, and a three-plane layout (:class:`ThreePlaneView`).
    A findings list gathers every labels layer (clusters, confirmed regions,
    ROIs) with the centroid of each region: a click centres every view on it.
    The state (layers, transforms, ROIs, parameters, view) is saved to a small
    JSON file next to the data and reopened (see :mod:`napari_immunotrack.study`).

Design notes
------------
- Session volumes are read and prepared for display (canonical axes, SUV
  scaling, contrast presets) in one background thread, one session at a
  time, and cached: stepping to a prepared timepoint only swaps arrays.
- The native Volume stays in ``layer.metadata["volume"]`` (Bq/mL for PET):
  the analysis widgets quantify it, never the SUV display copy.
- Registration: a session's ``xfm/*_from-<type>_to-anat.tfm`` places PET,
  SPECT or MPI in the MRI world; without one the data are shown where their
  scanner put them and the user is told they are not registered.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from ..._close_guard import offer_to_save
from ...errors import InputError, one_line
from ...layer_content import array_fingerprint
from ...volume import Volume
from .._common import RunRow, center_on_world, data_to_world_matrix, layer_to_volume, notify_error, viewer_camera
from .._dock import PluginDock
from ..roles import announce_step
from .layers import StudyLayersMixin
from .model import StudyViewModel, session_text
from .planes import PLANES
from .session import (
    PLANE_OF_NORMAL,
    PRESETS,
    SessionData,
    StudyFrame,
    anatomy_projection,
    label_findings,
    layer_name,
    planar_normal,
    planar_tilt_degrees,
    prepare_session,
    preset_group,
    preset_limits,
    study_frame,
)
from .state import StudyStateMixin
from .three_plane import ThreePlaneView


def fit_to_anatomy(viewer) -> None:
    """Centre the slider and the camera on the first visible MRI layer and zoom to its field of view.

    Only layers holding a Volume of modality MR in their metadata count; without one the view is just
    reset (``viewer.reset_view``).

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel

    Returns
    -------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.widgets._common import volume_layer_data
    >>> viewer = ViewerModel()
    >>> t2w = Volume(np.zeros((10, 20, 30), np.float32), np.diag([1.0, 0.5, 0.25, 1.0]), "MR", name="T2w")
    >>> data, kwargs, _kind = volume_layer_data(t2w)
    >>> _ = viewer.add_image(data, **kwargs)
    >>> fit_to_anatomy(viewer)
    >>> t2w.center_world().tolist(), viewer.dims.point  # RAS centre; napari's (S, A, R) slider
    ([4.5, 4.75, 3.625], (3.625, 4.75, 4.5))
    """
    viewer.reset_view()
    for layer in viewer.layers:
        volume = layer.metadata.get("volume")
        if volume is not None and volume.modality == "MR" and layer.visible:
            center_on_world(viewer, volume.center_world())
            if hasattr(viewer, "fit_to_view"):
                viewer.fit_to_view(layers=[layer])
            return


# ============================================================================ the dock
def _checked(on: bool):
    return Qt.CheckState.Checked if on else Qt.CheckState.Unchecked


_ROLE_TRACK, _ROLE_SESSION, _ROLE_FINDING = (
    Qt.ItemDataRole.UserRole,
    Qt.ItemDataRole.UserRole + 1,
    Qt.ItemDataRole.UserRole + 2,
)


class StudyWidget(StudyLayersMixin, StudyStateMixin, PluginDock):
    """Dock widget: open a study, tick modalities, step timepoints, presets, findings, three planes, state."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.model = StudyViewModel()  # study, subject, session, ticked tracks, adjustments
        self.reference: Volume | None = None
        self.track_layers: dict[str, object] = {}
        self.baseline_layers: dict[str, object] = {}
        self.messages: list[str] = []  # everything told to the user (tests read it)
        self.findings: list[dict] = []
        self._findings_cache: dict[tuple, list] = {}
        self.extra_findings: list[dict] = []
        self.three_plane: ThreePlaneView | None = None
        self._three_plane_dock = None
        self._cache: dict[tuple, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="immunotrack-study")
        self._pending_layers: list[tuple] = []  # hidden layers still to add after the first frame
        self._updating_tree = False
        self._told: set = set()
        self.state_path: Path | None = None
        #: the subject's saved session alignments, and whether every day is shown in the reference frame
        self.frame = StudyFrame()
        self.frame_mode = "reference"
        self._anatomy_grid: tuple | None = None  # (session, shape, affine) of the first anatomy seen
        self._projection_layer = None  # the anatomy projected behind a planar optical image
        self._build()
        self._bind_keys()
        self._findings_timer = QTimer(self)
        self._findings_timer.setSingleShot(True)
        self._findings_timer.setInterval(400)
        self._findings_timer.timeout.connect(self.refresh_findings)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.viewer.layers.selection.events.active.connect(self._active_changed)
        self._preset_layer = None
        self._findings_signature = None
        for name in ("point", "range", "ndim", "order"):
            getattr(self.viewer.dims.events, name).connect(self._label_slice_sliders)
        # napari rewrites the slider's labels when 3D goes back to 2D (after our handlers): label them after it
        self.viewer.dims.events.ndisplay.connect(self._label_slice_sliders_later)

    # ------------------------------------------------------------------ the view model's state
    @property
    def study(self):
        """The open :class:`~napari_immunotrack.study.Study` (None before one is opened)."""
        return self.model.study

    @property
    def subject(self) -> str | None:
        return self.model.subject

    @property
    def session(self) -> str | None:
        """The timepoint shown."""
        return self.model.session

    @property
    def shown(self) -> dict[str, bool]:
        """The user's tick per track."""
        return self.model.shown

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open study...")
        self.open_button.setToolTip("a study folder: sub-*/ses-*/<type>/ (BIDS-like) or a scanner export")
        self.sample_button = QPushButton("Sample study")
        self.open_state_button = QPushButton("Open state...")
        self.save_state_button = QPushButton("Save state...")
        self.save_state_button.setToolTip(
            "layers, transforms, ROIs, parameters and view, as a small JSON file next to the data"
        )
        for b in (self.open_button, self.sample_button, self.open_state_button, self.save_state_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.open_button.clicked.connect(self._open_dialog)
        self.sample_button.clicked.connect(lambda: self._guard(self.open_study, None))
        self.open_state_button.clicked.connect(self._open_state_dialog)
        self.save_state_button.clicked.connect(self._save_state_dialog)

        self.title = QLabel("no study open")
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        subject_row = QHBoxLayout()
        subject_row.addWidget(QLabel("Subject"))
        self.subject_combo = QComboBox()
        self.subject_combo.currentTextChanged.connect(self._subject_chosen)
        subject_row.addWidget(self.subject_combo, 1)
        layout.addLayout(subject_row)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["study", "details"])
        self.tree.setColumnWidth(0, 190)
        self.tree.setMinimumHeight(150)
        self.tree.itemChanged.connect(self._tree_item_changed)
        self.tree.itemClicked.connect(self._tree_item_clicked)
        layout.addWidget(self.tree, 2)

        tp = QGroupBox("Timepoint (Alt+Left / Alt+Right)")
        tp_layout = QHBoxLayout(tp)
        self.prev_button = QPushButton("<")
        self.next_button = QPushButton(">")
        for b in (self.prev_button, self.next_button):
            b.setMaximumWidth(32)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.setMaximum(0)
        self.slider.setPageStep(1)
        self.timepoint_label = QLabel("-")
        self.timepoint_label.setMinimumWidth(90)
        tp_layout.addWidget(self.prev_button)
        tp_layout.addWidget(self.slider, 1)
        tp_layout.addWidget(self.next_button)
        tp_layout.addWidget(self.timepoint_label)
        layout.addWidget(tp)
        frame_box = QGroupBox("Frame (where every day is drawn)")
        frame_layout = QVBoxLayout(frame_box)
        self.reference_frame_box = QCheckBox("the animal stays still: every day in the reference session's frame")
        self.reference_frame_box.setChecked(True)
        self.reference_frame_box.setToolTip(
            "ticked: each session is moved onto the reference session by its saved alignment "
            "(xfm/*_from-anat_to-ses<REF>.tfm); unticked: each session where its scanner put it"
        )
        self.reference_frame_box.toggled.connect(
            lambda on: self._guard(self.set_frame, "reference" if on else "native")
        )
        frame_layout.addWidget(self.reference_frame_box)
        self.frame_label = QLabel("")
        self.frame_label.setWordWrap(True)
        frame_layout.addWidget(self.frame_label)
        self.align_row = RunRow(frame_layout, "Align sessions", on_run=lambda: self._guard(self.align_sessions))
        self.align_row.run_button.setToolTip(
            "register every session's MRI to the reference session (rigid) and save the transforms in the study"
        )
        self.align_row.progress_bar.setMaximumHeight(12)
        layout.addWidget(frame_box)
        self.prev_button.clicked.connect(lambda: self._guard(self.step, -1))
        self.next_button.clicked.connect(lambda: self._guard(self.step, 1))
        self.slider.valueChanged.connect(self._slider_moved)

        disp = QGroupBox("Display")
        grid = QGridLayout(disp)
        self.link_windows = QCheckBox("link windowing across timepoints")
        self.link_windows.setChecked(True)
        self.link_windows.setToolTip(
            "keep each modality's contrast limits when the timepoint changes (SUV, "
            "signal); untick to window each timepoint on its own data"
        )
        grid.addWidget(self.link_windows, 0, 0, 1, 3)
        grid.addWidget(QLabel("Window preset"), 1, 0)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("contrast preset for the selected layer's modality")
        grid.addWidget(self.preset_combo, 1, 1)
        self.preset_button = QPushButton("Apply")
        self.preset_button.clicked.connect(lambda: self._guard(self.apply_preset))
        grid.addWidget(self.preset_button, 1, 2)
        self.view2d = QRadioButton("2D")
        self.view3d = QRadioButton("3D")
        self.view2d.setChecked(True)
        self._ndisplay_group = QButtonGroup(self)
        self._ndisplay_group.addButton(self.view2d)
        self._ndisplay_group.addButton(self.view3d)
        self.view2d.toggled.connect(lambda on: on and self.set_ndisplay(2))
        self.view3d.toggled.connect(lambda on: on and self.set_ndisplay(3))
        self.plane_combo = QComboBox()
        self.plane_combo.addItems(PLANES)
        self.plane_combo.currentTextChanged.connect(self.set_plane)
        views = QHBoxLayout()
        views.addWidget(self.view2d)
        views.addWidget(self.view3d)
        views.addWidget(self.plane_combo)
        grid.addLayout(views, 2, 0, 1, 3)
        self.three_plane_box = QCheckBox("three-plane layout (axial, coronal, sagittal)")
        self.three_plane_box.toggled.connect(self.set_three_plane)
        grid.addWidget(self.three_plane_box, 3, 0, 1, 3)
        layout.addWidget(disp)

        fg = QGroupBox("Findings (click to centre the views)")
        f_layout = QVBoxLayout(fg)
        self.findings_tree = QTreeWidget()
        self.findings_tree.setHeaderLabels(["finding", "mm3", "RAS (mm)"])
        self.findings_tree.setColumnWidth(0, 150)
        self.findings_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.findings_tree.itemClicked.connect(self._finding_clicked)
        rows = self.findings_tree.fontMetrics().height() + 6
        self.findings_tree.setMinimumHeight(7 * rows)  # the header and six findings at least
        f_layout.addWidget(self.findings_tree)
        refresh = QPushButton("Refresh findings")
        refresh.clicked.connect(self.refresh_findings)
        f_layout.addWidget(refresh)
        layout.addWidget(fg, 1)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _bind_keys(self) -> None:
        self._bound = []
        for key, delta in (("Alt-Right", 1), ("Alt-Left", -1)):

            def handler(viewer, delta=delta):
                self._guard(self.step, delta)

            try:
                self.viewer.bind_key(key, handler, overwrite=True)
                self._bound.append(key)
            except Exception:  # noqa: BLE001 - another plugin's binding: the buttons still work
                pass

    def _guard(self, func, *args, **kwargs):
        """Run a user action; errors become one clear notification (never a traceback)."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._tell(one_line(exc), level="error")
            if not isinstance(exc, InputError):
                notify_error(exc)
            return None

    def _tell(self, message: str, level: str = "info") -> None:
        """Show a message in the dock and (the first time it is said) as a napari notification."""
        from napari.utils.notifications import show_error, show_info, show_warning

        self.messages.append(message)
        self.status.setText(message)
        if message in self._told:
            return  # stepping back and forth must not repeat the same pop-up
        self._told.add(message)
        {"info": show_info, "warning": show_warning, "error": show_error}[level](message)

    # ------------------------------------------------------------------ asking the user (tests replace these)
    def ask(self, title: str, question: str) -> bool:
        """Yes/No question (a Qt dialog)."""
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    def locate_folder(self, prompt: str) -> str | None:
        """Ask for a folder (a Qt dialog); None when cancelled."""
        path = QFileDialog.getExistingDirectory(self, prompt)
        return path or None

    # ------------------------------------------------------------------ opening
    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a study folder")
        if path:
            self._guard(self.open_study, path)

    def open_study(
        self, root=None, subject: str | None = None, session: str | None = None, shown=None, progressive: bool = False
    ):
        """Open a study folder (None: the bundled sample) and show one session.

        Parameters
        ----------
        root : path, optional
        subject, session : str, optional
            Default: the first subject, its first post-injection session.
        shown : iterable of track names, optional
            Tracks shown (default :data:`DEFAULT_SHOWN`, or the anatomy when none of those exist).
        progressive : bool
            Add the visible layers, draw, and add the hidden ones afterwards
            from the Qt event loop (a faster first frame); False adds all now.

        Returns the :class:`~napari_immunotrack.study.Study`.
        """
        from ...data import sample_study_root
        from ...study import open_study as discover_study

        root = Path(root) if root else sample_study_root()
        study = discover_study(root)  # InputError (no images...) leaves the current study as it was
        if not self._may_replace(self._study_layers(), f"opening {root.name} (subject {subject or 'first'})"):
            if self.study is not None:
                self._fill_subjects()  # the subject chooser back on the subject still shown
            self._tell("the open study was kept: it holds edited layers that were not saved.", "info")
            return None
        self._close_study()
        for warning in self.model.open(study, subject=subject, session=session, shown=shown):
            self._tell(warning, "warning")
        session, names = self.model.session, self.model.sessions
        self.title.setText(f"{root.name}  ({root})")
        self._fill_subjects()
        self._fill_tree()
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(len(names) - 1, 0))
        self.slider.setValue(names.index(session))
        self.slider.blockSignals(False)
        self.frame = study_frame(study, self.subject)  # the saved session alignments (none: one bed)
        self._anatomy_grid = None
        for error in self.frame.errors:
            self._tell(error, "error")
        alignment = self._alignment_for(session)
        # in the reference frame every session is drawn on the reference session's anatomy grid
        reference = self._reference_anatomy() if alignment is not None else None
        # the shown tracks are read now; the others of this session in the background
        anatomy = self.model.anatomy_tracks(session)
        data = prepare_session(
            study, self.subject, session, reference, tracks=self.model.shown_tracks() + anatomy[:1], alignment=alignment
        )
        # the reference grid for oblique volumes: the first axis-aligned MRI of the session
        self.reference = reference or next(
            (p.volume for p in data.layers.values() if p.volume.modality == "MR" and p.volume.is_axis_aligned()), None
        )
        with self._lock:
            self._cache[(self.subject, session, False)] = self._executor.submit(
                prepare_session, study, self.subject, session, self.reference, None, False, data, alignment
            )
        self._create_layers(data, progressive=progressive)
        self._update_timepoint_label()
        self._mark_current_session()
        for problem in study.problems:
            self._tell(problem, "warning")
        self._report_session(data)
        self._fit_view()
        if not progressive:
            self._prefetch()
        self._findings_timer.start()
        announce_step(self.viewer)  # a new study or a reopened state: the docks and the Cursor readout follow it now
        return study

    def _label_slice_sliders(self, event=None) -> None:
        """napari's slice sliders named S, A, R and showing the plane's position in mm (not only an index)."""
        dims = self.viewer.dims
        ndim = dims.ndim
        if ndim < 3 or self.study is None:
            return
        names = ("S", "A", "R")
        labels = tuple(dims.axis_labels[: ndim - 3]) + names
        if tuple(dims.axis_labels) != labels:
            dims.axis_labels = labels
        qt_dims = getattr(getattr(self.viewer.window, "_qt_viewer", None), "dims", None)
        for slider in getattr(qt_dims, "slider_widgets", []):
            k = slider.axis - (ndim - 3)
            if 0 <= k < 3 and slider.axis < len(dims.point):
                n = dims.nsteps[slider.axis] - 1
                label = slider.totslice_label
                label.setText(f"/{n}  {names[k]} = {dims.point[slider.axis]:+.2f} mm")
                label.setFixedWidth(label.fontMetrics().horizontalAdvance(f"/{n}  S = -000.00 mm") + 8)
                slider.totslice_label.setToolTip(f"{names[k]} position of the plane shown, in world mm (RAS)")

    def _label_slice_sliders_later(self, event=None) -> None:
        QTimer.singleShot(0, self._label_slice_sliders)

    def _select_useful_layer(self) -> None:
        """Select a visible study layer (the anatomy first), not the last one added (a hidden baseline)."""
        active = self.viewer.layers.selection.active
        if active is not None and active.visible:
            return
        from ...study import track_order

        for track in sorted(self.track_layers, key=track_order):
            layer = self.track_layers[track]
            if layer.visible and layer in self.viewer.layers and type(layer).__name__ == "Image":
                self.viewer.layers.selection.active = layer
                return

    def _fit_view(self) -> None:
        viewer_camera(self.viewer).orientation2d = ("up", "right")  # anterior up, subject's right to the right
        canvas = getattr(self.viewer, "canvas", None)  # napari 0.9; viewer.scale_bar is deprecated
        (canvas.overlays["scale_bar"] if canvas is not None else self.viewer.scale_bar).visible = True
        fit_to_anatomy(self.viewer)

    def _study_layers(self) -> list:
        """The layers showing study files (their data change with the timepoint, subject or study)."""
        return [
            ly
            for ly in list(self.track_layers.values()) + list(self.baseline_layers.values())
            if ly in self.viewer.layers
        ]

    def _may_replace(self, layers, action: str) -> bool:
        """Ask Save / Discard / Cancel when ``layers`` hold edits not saved (e.g. corrections painted into
        the study's ROI); True when ``action`` may replace them."""
        return offer_to_save(self, layers, action)

    def _close_study(self) -> None:
        """Remove the previous study's layers (other layers stay) and forget its cache."""
        for layer in list(self.track_layers.values()) + list(self.baseline_layers.values()):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        if self._projection_layer is not None and self._projection_layer in self.viewer.layers:
            self.viewer.layers.remove(self._projection_layer)
        self._projection_layer = None
        self.track_layers.clear()
        self.baseline_layers.clear()
        self._pending_layers.clear()
        for future in self._cache.values():
            future.cancel()
        self._cache.clear()
        self.model.close()

    def _report_session(self, data: SessionData) -> None:
        """Tell the user what is missing, unregistered or broken at this timepoint, and where it is drawn."""
        for level, message in self.model.session_messages(data.layers, data.errors):
            self._tell(message, level)
        self._check_positions(data)
        self._update_frame_label()

    # ------------------------------------------------------------------ the reference frame (issue 18)
    def _alignment_for(self, session: str | None):
        """The session's alignment to the reference session when every day is drawn in that frame, else None."""
        if session is None or self.frame_mode != "reference" or self.frame.reference is None:
            return None
        return self.frame.alignment(session)

    def _reference_anatomy(self) -> Volume | None:
        """The reference session's first anatomy (its own scanner grid: the display grid of every day)."""
        ref = self.frame.reference
        tracks = self.model.anatomy_tracks(ref) if ref is not None else []
        if not tracks:
            return None
        data = prepare_session(self.study, self.subject, ref, None, tracks=tracks[:1])
        return next((p.volume for p in data.layers.values() if p.volume.is_axis_aligned()), None)

    def _check_positions(self, data: SessionData) -> None:
        """Warn when a session without alignment has another MRI grid than the first one seen: the animal
        was probably repositioned, and drawing both in scanner frames would overlay the wrong anatomy."""
        session = data.session
        if self._alignment_for(session) is not None:
            return
        anatomy = next((p.volume for p in data.layers.values() if p.volume.modality == "MR"), None)
        if anatomy is None:
            return
        grid = (session, tuple(anatomy.spatial_shape), np.asarray(anatomy.affine, float))
        if self._anatomy_grid is None:
            self._anatomy_grid = grid
            return
        first, shape, affine = self._anatomy_grid
        if session == first or (shape == grid[1] and np.allclose(affine, grid[2], atol=1e-3)):
            return
        when = session_text(self.study, self.subject, session)
        then = session_text(self.study, self.subject, first)
        if self.frame_mode == "native" and self.frame.reference is not None:
            self._tell(
                f"{when}: drawn in its scanner's frame (native frames chosen); tick the reference frame "
                "to keep the anatomy still.",
                "info",
            )
            return
        self._tell(
            f"{when} and {then} have different MRI grids (the animal was probably repositioned) and sub-"
            f"{self.subject} has no saved alignment for {when}: each is drawn where its scanner put it, so the "
            "anatomy moves between days and overlays across days are not anatomical. Press 'Align sessions' "
            "(Study dock) to compute the alignment (saved in the study).",
            "warning",
        )
        self.align_row.run_button.setText("Align sessions (not aligned yet)")
        self.align_row.run_button.setStyleSheet("font-weight: bold;")

    def _update_frame_label(self) -> None:
        frame, names = self.frame, self.model.sessions
        if frame.reference is None:
            text = "no session alignment saved: each day drawn in its scanner's frame (one bed: one frame for all)."
        elif self.frame_mode == "native":
            text = f"native scanner frames (alignment to {frame.reference} saved, not applied)."
        else:
            missing = frame.missing(names)
            text = (
                f"every day in {frame.reference}'s frame (aligned: {', '.join(s for s in names if s not in missing)})"
            )
            if missing:
                text += f"; not aligned, drawn in its scanner's frame: {', '.join(missing)}"
        self.frame_label.setText(text)
        self.reference_frame_box.setEnabled(frame.reference is not None)

    def set_frame(self, mode: str) -> None:
        """Draw every day in the reference session's frame ("reference") or in its scanner's ("native")."""
        if mode not in ("reference", "native"):
            raise InputError(f"unknown frame {mode!r}; choose reference or native.")
        self.reference_frame_box.blockSignals(True)
        self.reference_frame_box.setChecked(mode == "reference")
        self.reference_frame_box.blockSignals(False)
        if mode == self.frame_mode:
            return
        self.frame_mode = mode
        if self.study is not None:
            shown = [t for t, on in self.shown.items() if on]
            self.open_study(self.study.root, subject=self.subject, session=self.session, shown=shown)

    def align_sessions(self) -> None:
        """Compute the session alignments of the subject in a worker (progress, Cancel), then redraw."""
        self.model.require_study()
        if self.align_row.busy():
            return
        from ...alignment import align_study

        root, subject = self.study.root, self.subject
        self.align_row.status.setText(f"aligning the sessions of sub-{subject}...")
        self.align_row.runner.start(
            align_study, root, subject=subject, on_done=self._sessions_aligned, on_error=self._alignment_failed
        )

    def _alignment_failed(self, exc) -> None:
        self.align_row.status.setText(one_line(exc))
        self._tell(f"session alignment stopped: {one_line(exc)}", "error")

    def _sessions_aligned(self, results) -> None:
        done = [r.session for r in results if r.status in ("aligned", "reused", "doubtful-saved")]
        problems = [r.message for r in results if r.status in ("failed", "doubtful")]
        for message in problems:
            self._tell(message, "warning")
        ref = next((r.reference for r in results), None)
        self.align_row.status.setText(
            f"aligned to {ref}: {', '.join(done) or 'none'}" + (f"; {len(problems)} not aligned" if problems else "")
        )
        self.align_row.run_button.setText("Align sessions")
        self.align_row.run_button.setStyleSheet("")
        self.frame_mode = "reference"
        if self.study is not None:
            shown = [t for t, on in self.shown.items() if on]
            self.open_study(self.study.root, subject=self.subject, session=self.session, shown=shown)
        self.align_row.run_pending(self.align_sessions)

    # ------------------------------------------------------------------ tree
    def _fill_subjects(self) -> None:
        self.subject_combo.blockSignals(True)
        self.subject_combo.clear()
        self.subject_combo.addItems(self.study.subjects())
        self.subject_combo.setCurrentText(self.subject)
        self.subject_combo.blockSignals(False)

    def _subject_chosen(self, subject: str) -> None:
        if self.study is not None and subject and subject != self.subject:
            shown = [t for t, on in self.shown.items() if on]
            self._guard(self.open_study, self.study.root, subject=subject, shown=shown)

    def _fill_tree(self) -> None:
        """Draw the view model's tree (subjects, timepoints, modalities with what is missing)."""
        self._updating_tree = True
        self.tree.clear()
        for s_row in self.model.tree():
            s_item = QTreeWidgetItem([s_row.text, s_row.detail])
            self.tree.addTopLevelItem(s_item)
            for t_row in s_row.children:
                t_item = QTreeWidgetItem([t_row.text, t_row.detail])
                t_item.setData(0, _ROLE_SESSION, t_row.session)
                t_item.setToolTip(0, t_row.tooltip)
                s_item.addChild(t_item)
                for m_row in t_row.children:
                    m_item = QTreeWidgetItem([m_row.text, m_row.detail])
                    m_item.setData(0, _ROLE_TRACK, m_row.track)
                    m_item.setData(0, _ROLE_SESSION, m_row.session)
                    m_item.setToolTip(1, m_row.tooltip)
                    if m_row.checkable:
                        m_item.setFlags(m_item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                        m_item.setCheckState(0, _checked(m_row.checked))
                    if m_row.missing:
                        m_item.setForeground(0, QColor(140, 140, 140))
                        m_item.setForeground(1, QColor(200, 120, 60))
                    t_item.addChild(m_item)
            s_item.setExpanded(s_row.current)
        self._updating_tree = False
        self._mark_current_session()

    def _mark_current_session(self) -> None:
        for i in range(self.tree.topLevelItemCount()):
            s_item = self.tree.topLevelItem(i)
            for j in range(s_item.childCount()):
                t_item = s_item.child(j)
                current = t_item.data(0, _ROLE_SESSION) == self.session and s_item.text(0) == f"sub-{self.subject}"
                font = t_item.font(0)
                font.setBold(bool(current))
                t_item.setFont(0, font)
                t_item.setExpanded(bool(current))

    def _tree_item_changed(self, item, column) -> None:
        if self._updating_tree or column != 0:
            return
        track = item.data(0, _ROLE_TRACK)
        if track:
            self._guard(self.set_track_visible, track, item.checkState(0) == Qt.CheckState.Checked)

    def _tree_item_clicked(self, item, column) -> None:
        session = item.data(0, _ROLE_SESSION)
        if session and session != self.session and item.data(0, _ROLE_TRACK) is None:
            self._guard(self.set_timepoint, session)

    def set_track_visible(self, track: str, visible: bool) -> None:
        """Tick or untick a modality (track) at every timepoint."""
        self.shown[track] = bool(visible)
        layer = self.track_layers.get(track)
        if layer is None and visible:
            # not loaded yet (missing at the first timepoint, or still pending): add it now if there is data
            self.finish_loading()
            layer = self.track_layers.get(track)
            if layer is None:
                prepared = self._session_data(self.session).layers.get(track)
                if prepared is None:
                    self._tell(f"no {track} image at this timepoint; it shows where one exists.", "info")
                else:
                    self._add_layer("track", track, prepared)
                    self._order_layers()
                layer = self.track_layers.get(track)
        if layer is not None:
            available = layer.metadata["immunotrack"].get("study_session") == self.session
            layer.visible = bool(visible) and available
            if layer.metadata["immunotrack"].get("placement"):
                if visible and available:
                    self.show_planar(track)  # a planar picture: its own plane, over the anatomy's projection
                else:
                    self._update_projection()
        # keep the same track's boxes in step at every timepoint
        self._updating_tree = True
        for item in self._track_items(track):
            item.setCheckState(0, _checked(visible))
        self._updating_tree = False

    def _track_items(self, track: str):
        root = self.tree.invisibleRootItem()
        stack = [root.child(i) for i in range(root.childCount())]
        while stack:
            item = stack.pop()
            if (
                item.data(0, _ROLE_TRACK) == track
                and item.parent() is not None
                and item.parent().parent() is not None
                and item.parent().parent().text(0) == f"sub-{self.subject}"
            ):
                yield item
            stack.extend(item.child(i) for i in range(item.childCount()))

    # ------------------------------------------------------------------ timepoints
    def _slider_moved(self, index: int) -> None:
        if self.study is None:
            return
        names = self.study.sessions(self.subject)
        if 0 <= index < len(names) and names[index] != self.session:
            self._guard(self.set_timepoint, names[index])

    def step(self, delta: int) -> str | None:
        """Go ``delta`` timepoints forward (or back); returns the new session."""
        target = self.model.step_target(delta)
        if target != self.session:
            self.set_timepoint(target)
        return self.session

    def set_timepoint(self, session: str) -> None:
        """Show another timepoint: every track layer gets that session's data; the world position stays."""
        session = self.model.resolve_session(session)
        names = self.model.sessions
        if session == self.session:
            return
        if not self._may_replace(self._study_layers(), f"showing {session}"):
            self.slider.blockSignals(True)
            self.slider.setValue(names.index(self.session))  # the slider back on the timepoint still shown
            self.slider.blockSignals(False)
            self._tell(f"still showing {self.session}: edited layers were not saved.", "info")
            return
        data = self._session_data(session)
        self.finish_loading()
        self._remember_adjustments()
        previous = self.session
        self.model.session = session
        point = tuple(self.viewer.dims.point)
        with self._deferred_extent(list(self.track_layers.values())):
            for track in self.study.tracks(self.subject):
                layer = self.track_layers.get(track)
                prepared = data.layers.get(track)
                if layer is None:
                    continue
                if prepared is None:
                    layer.visible = False
                    layer.metadata["immunotrack"] = dict(layer.metadata["immunotrack"], study_session=None)
                    day = self.study.day(self.subject, session)
                    layer.name = layer_name(
                        layer.metadata["immunotrack"].get("track_label", track), day, session, "none"
                    )
                    continue
                self._swap(layer, prepared)
                self._apply_adjustment(layer, session, track)
        for track in self.study.tracks(self.subject):
            prepared = data.layers.get(track)
            if track not in self.track_layers and prepared is not None and self.shown.get(track):
                self._add_layer("track", track, prepared)  # a kind missing at the first timepoint
        self._update_projection()
        self._order_layers()
        # the same world point: napari may clamp it to a new extent; put it back
        if tuple(self.viewer.dims.point) != point:
            self.viewer.dims.point = point
        self.slider.blockSignals(True)
        self.slider.setValue(names.index(session))
        self.slider.blockSignals(False)
        self._update_timepoint_label()
        self._mark_current_session()
        if previous is not None:
            self._report_session(data)
        self._active_changed()
        announce_step(self.viewer)  # the analysis docks show this timepoint's inputs now (widgets/roles.py)

    def _update_timepoint_label(self) -> None:
        self.timepoint_label.setText(self.model.timepoint_text())

    # ------------------------------------------------------------------ display
    def _active_changed(self, event=None) -> None:
        """The preset list of the selected image (else of the anatomy shown), keeping the chosen preset."""
        layer = self.viewer.layers.selection.active
        if layer is None or type(layer).__name__ != "Image":
            from ...study import track_order

            layer = next(
                (
                    self.track_layers[t]
                    for t in sorted(self.track_layers, key=track_order)
                    if type(self.track_layers[t]).__name__ == "Image" and self.track_layers[t].visible
                ),
                None,
            )
        self._preset_layer = layer
        if layer is None:
            self.preset_combo.clear()
            self.preset_combo.setEnabled(False)
            return
        info = layer.metadata.get("immunotrack", {}) if hasattr(layer, "metadata") else {}
        group = preset_group(info.get("modality", "OT"), info.get("display_unit", ""))
        names = list(PRESETS[group])
        chosen = self.preset_combo.currentText()
        if [self.preset_combo.itemText(i) for i in range(self.preset_combo.count())] != names:
            self.preset_combo.blockSignals(True)
            self.preset_combo.clear()
            self.preset_combo.addItems(names)
            if chosen in names:
                self.preset_combo.setCurrentText(chosen)
            self.preset_combo.blockSignals(False)
        self.preset_combo.setToolTip(f"contrast preset for {layer.name}")
        self.preset_combo.setEnabled(True)

    def apply_preset(self, name: str | None = None, layer=None) -> tuple:
        """Apply a contrast preset of the layer's modality (default: the active layer, the chosen preset)."""
        layer = layer or self.viewer.layers.selection.active
        if layer is None or type(layer).__name__ != "Image":
            layer = self._preset_layer
        if layer is None or type(layer).__name__ != "Image":
            raise InputError("select an image layer first; contrast presets apply to images.")
        info = layer.metadata.get("immunotrack", {})
        group = preset_group(info.get("modality", "OT"), info.get("display_unit", ""))
        name = name or self.preset_combo.currentText()
        if name not in PRESETS[group]:
            raise InputError(f"no preset {name!r} for {layer.name}; presets: {', '.join(PRESETS[group])}.")
        data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
        lo, hi = preset_limits(data, group, name)
        cl_range = layer.contrast_limits_range
        layer.contrast_limits_range = (min(lo, cl_range[0]), max(hi, cl_range[1]))
        layer.contrast_limits = (lo, hi)
        return (lo, hi)

    def set_ndisplay(self, ndisplay: int) -> None:
        self.viewer.dims.ndisplay = int(ndisplay)
        button = self.view3d if int(ndisplay) == 3 else self.view2d
        if not button.isChecked():
            button.setChecked(True)

    def set_plane(self, plane: str) -> None:
        """Show the axial (slider on S), coronal (on A) or sagittal (on R) plane in the main view."""
        if plane not in PLANES:
            raise InputError(f"unknown plane {plane!r}; choose axial, coronal or sagittal.")
        ndim = self.viewer.dims.ndim
        lead = list(range(ndim - 3))
        # napari world axes (S, A, R) are the last three; the first of the last three is the slider
        order = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}[plane]
        self.viewer.dims.order = tuple(lead + [ndim - 3 + o for o in order])
        if self.plane_combo.currentText() != plane:
            self.plane_combo.blockSignals(True)
            self.plane_combo.setCurrentText(plane)
            self.plane_combo.blockSignals(False)
        viewer_camera(self.viewer).orientation2d = ("up", "right")

    # ------------------------------------------------------------------ planar optical images
    def _planar_layer(self):
        """The visible planar optical layer of the current timepoint, or None."""
        for layer in self.track_layers.values():
            if layer.visible and layer.metadata.get("immunotrack", {}).get("placement"):
                return layer
        return None

    def show_planar(self, track: str) -> str | None:
        """Show a planar optical track in its own plane (e.g. coronal) over the anatomy's projection.

        The view switches to the plane the picture lies in and the slider to its position; the
        anatomy shown is the first MRI of the timepoint averaged along the plane's normal, drawn
        in the same plane. Returns the plane shown (None when the track is not a planar image).
        """
        layer = self.track_layers.get(track)
        volume = layer.metadata.get("volume") if layer is not None else None
        found = planar_normal(volume) if volume is not None else None
        if found is None:
            if layer is not None and layer.metadata["immunotrack"].get("placement"):
                self._tell(layer.metadata["immunotrack"]["placement"], "info")  # too askew to be laid flat
            return None
        axis, position = found
        plane = PLANE_OF_NORMAL[axis]
        if self.viewer.dims.ndisplay == 2:
            self.set_plane(plane)
        self._update_projection()
        self._order_layers()
        point = list(self.viewer.dims.point)
        point[len(point) - 1 - axis] = position  # napari's last three axes are S, A, R
        self.viewer.dims.point = point
        message = layer.metadata["immunotrack"]["placement"]
        tilt = planar_tilt_degrees(volume)
        if tilt > 0.5:  # napari slices along the view's axes: the picture is drawn flat in the nearest plane
            message += (
                f" It is tilted {tilt:.0f} degrees against the {plane} plane and drawn flat in it, so its overlay on "
                "the anatomy is approximate away from its centre."
            )
        self._tell(message, "info")
        return plane

    def _update_projection(self) -> None:
        """Keep the anatomy projection behind the visible planar optical image (none without one)."""
        from ...study import track_order
        from .._common import volume_layer_data

        planar = self._planar_layer()
        found = planar_normal(planar.metadata["volume"]) if planar is not None else None
        anatomy = None
        if found is not None:
            # the anatomy the user is looking at first (the shown MRI), else the first MRI of the timepoint
            order = sorted(self.track_layers, key=lambda t: (not self.track_layers[t].visible, track_order(t)))
            for track in order:
                candidate = self.track_layers[track]
                info = candidate.metadata.get("immunotrack", {})
                if (
                    info.get("modality") == "MR"
                    and info.get("study_session") == self.session
                    and candidate.metadata.get("volume") is not None
                ):
                    anatomy = candidate
                    break
        if anatomy is None:
            if self._projection_layer is not None and self._projection_layer in self.viewer.layers:
                self.viewer.layers.remove(self._projection_layer)
            self._projection_layer = None
            return
        axis, position = found
        projection = anatomy_projection(anatomy.metadata["volume"], axis, position)
        data, kwargs, _ = volume_layer_data(projection)
        name = f"{anatomy.name.split(' (')[0]} mean projection along {'RAS'[axis]} ({self.session})"
        layer = self._projection_layer
        if layer is None or layer not in self.viewer.layers:
            kwargs["name"] = name
            kwargs["metadata"]["immunotrack"]["placement"] = (
                f"the MRI averaged along {'RAS'[axis]} and drawn in the optical image's plane "
                f"({'RAS'[axis]} = {position:.2f} mm): the anatomy behind the planar picture"
            )
            self._projection_layer = self.viewer.add_image(data, **kwargs)
        else:
            layer.data = data
            layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
            layer.name = name

    def set_three_plane(self, on: bool) -> ThreePlaneView | None:
        """Show or hide the axial/coronal/sagittal panels under the main view."""
        if on and self.three_plane is None:
            self.three_plane = ThreePlaneView(self.viewer)
            self._three_plane_dock = self.viewer.window.add_dock_widget(
                self.three_plane, name="Three planes", area="bottom"
            )
            self._show_three_plane_dock()
        elif not on and self.three_plane is not None:
            self.three_plane.close_view()
            with contextlib.suppress(Exception):
                self.viewer.window.remove_dock_widget(self._three_plane_dock)
            self.three_plane = None
            self._three_plane_dock = None
        if self.three_plane_box.isChecked() != bool(on):
            self.three_plane_box.blockSignals(True)
            self.three_plane_box.setChecked(bool(on))
            self.three_plane_box.blockSignals(False)
        return self.three_plane

    def _show_three_plane_dock(self) -> None:
        """Give the three planes a third of the window's height at once, inside the window (which never grows)."""
        from qtpy.QtWidgets import QApplication

        qt_window = self.viewer.window._qt_window
        dock = self._three_plane_dock
        canvas = self.viewer.window._qt_viewer.canvas.native
        before = (canvas.width(), canvas.height())
        height = max(int(qt_window.height() * 0.34), 140)
        qt_window.resizeDocks([dock], [height], Qt.Orientation.Vertical)
        dock.show()
        dock.raise_()
        QApplication.processEvents()  # laid out now: ticking the box shows the planes the moment it is ticked
        # the main canvas got shorter: zoom out so it still shows what it showed (not the body cut at the top)
        shrink = min(canvas.width() / max(before[0], 1), canvas.height() / max(before[1], 1))
        if 0 < shrink < 1 and self.viewer.dims.ndisplay == 2:
            camera = viewer_camera(self.viewer)
            camera.zoom = camera.zoom * shrink
        self.three_plane.refresh()

    # ------------------------------------------------------------------ findings
    def _layers_changed(self, event=None) -> None:
        for layer in self.viewer.layers:
            if type(layer).__name__ == "Labels" and not layer.metadata.get("_findings_watched"):
                layer.metadata["_findings_watched"] = True
                for name in ("data", "paint", "set_data"):
                    emitter = getattr(layer.events, name, None)
                    if emitter is not None:
                        emitter.connect(lambda *a: self._findings_timer.start())
        self._findings_timer.start()

    def add_findings(self, df, source: str) -> None:
        """Add rows of a findings table (centroid_x_mm, centroid_y_mm, centroid_z_mm) to the list."""
        needed = {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"}
        if not needed <= set(df.columns):
            raise InputError(f"the table {source!r} has no centroid_x_mm/centroid_y_mm/centroid_z_mm columns.")
        for i, row in df.reset_index(drop=True).iterrows():
            self.extra_findings.append(
                {
                    "source": source,
                    "label": int(row.get("label", i + 1)),
                    "name": str(row.get("name", "") or ""),
                    "voxels": int(row.get("voxels", 0) or 0),
                    "volume_mm3": float(row.get("volume_mm3", np.nan)),
                    "centroid_ras_mm": [
                        float(row["centroid_x_mm"]),
                        float(row["centroid_y_mm"]),
                        float(row["centroid_z_mm"]),
                    ],
                }
            )
        self.refresh_findings()

    def refresh_findings(self) -> list[dict]:
        """Rebuild the findings list from every labels layer (and added tables)."""
        findings = []
        for layer in self.viewer.layers:
            if type(layer).__name__ != "Labels":
                continue
            if layer in self.baseline_layers.values():
                continue
            try:
                # unchanged labels (same array content, same place) keep their findings: stepping
                # timepoints back and forth must not recount every organ
                key = (layer.name, array_fingerprint(layer.data), data_to_world_matrix(layer).round(9).tobytes())
                found = self._findings_cache.get(key)
                if found is None:
                    found = label_findings(layer_to_volume(layer, native=False), layer.name)
                    self._findings_cache[key] = found
                findings.extend(found)
            except Exception:  # noqa: BLE001 - a 2D or odd labels layer has no findings in world mm
                continue
        findings.extend(self.extra_findings)
        self.findings = findings
        signature = [(f["source"], f["label"], tuple(np.round(f["centroid_ras_mm"], 4))) for f in findings]
        if signature == self._findings_signature:
            return findings  # unchanged: keep the list as the user left it (expanded groups, selection)
        self._findings_signature = signature
        expanded = {}
        for i in range(self.findings_tree.topLevelItemCount()):
            group = self.findings_tree.topLevelItem(i)
            expanded[group.text(0)] = group.isExpanded()
        self.findings_tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for i, item in enumerate(findings):
            group = groups.get(item["source"])
            if group is None:
                group = QTreeWidgetItem([item["source"], "", ""])
                self.findings_tree.addTopLevelItem(group)
                groups[item["source"]] = group
            name = f"{item['label']} {item['name']}".strip()
            x, y, z = item["centroid_ras_mm"]
            child = QTreeWidgetItem([name, f"{item['volume_mm3']:.3g}", f"{x:.1f}, {y:.1f}, {z:.1f}"])
            child.setData(0, _ROLE_FINDING, i)
            group.addChild(child)
        for group in groups.values():
            group.setText(1, f"{group.childCount()}")
            group.setExpanded(expanded.get(group.text(0), group.childCount() <= 12))
        return findings

    def _finding_clicked(self, item, column) -> None:
        index = item.data(0, _ROLE_FINDING)
        if index is not None:
            self.go_to_finding(int(index))

    def go_to_finding(self, index: int) -> np.ndarray:
        """Centre every view (slider, camera, three planes) on a finding; returns its RAS centroid."""
        point = np.asarray(self.findings[index]["centroid_ras_mm"], float)
        center_on_world(self.viewer, point)
        item = self.findings[index]
        self.status.setText(
            f"{item['source']}: {item['label']} {item['name']} at RAS "
            f"({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm"
        )
        return point

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the background preparation and release the key bindings."""
        for future in self._cache.values():
            future.cancel()
        # wait for the preparation already running (one read): left running, it went on reading files, with
        # warnings.catch_warnings in the readers, into whatever ran next (a lost warning elsewhere)
        self._executor.shutdown(wait=True, cancel_futures=True)
        for key in getattr(self, "_bound", []):
            with contextlib.suppress(Exception):
                self.viewer.bind_key(key, None, overwrite=True)
        self._bound = []
        if self.three_plane is not None:
            self.three_plane.close_view()
