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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
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
        elif method == "session":
            result = _align_sessions(fixed, moving, transform, progress)
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


def _align_sessions(fixed, moving, transform, progress):
    """The same animal's MRI of two sessions (another pose, gain, coil profile) aligned by
    :func:`napari_immunotrack.alignment.align_mri`, as a RegistrationResult (what the dock applies,
    shows and saves); see ``docs/methods/session-alignment.md``."""
    from ..alignment import align_mri

    report(progress, 0.05, "session alignment: orientation search, then rigid refinement")
    aligned = align_mri(fixed, moving, transform)
    warnings = list(aligned.warnings)
    if aligned.doubtful:
        warnings.insert(0, "the session alignment is doubtful; check the QC views before using it")
    report(progress, 0.85, f"aligned (correlation {aligned.correlation:.3f})")
    return reg.RegistrationResult(
        fixed_to_moving=aligned.fixed_to_moving,
        metric_initial=float("nan"),
        metric_final=float(aligned.correlation),
        iterations=0,
        parameters=dict(aligned.parameters, transform=transform),
        stages=list(aligned.stages),
        elapsed_s=float(aligned.elapsed_s),
        method="session",
        warnings=warnings,
        metric_after_init=float(aligned.body_dice),
    )


class RegistrationWidget(PluginDock):
    """Dock widget: register a moving image layer to a fixed one."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.result: reg.RegistrationResult | None = None
        self.metrics = (float("nan"), float("nan"))
        self.qc_layers: dict = {}
        self._undo: list = []
        self._inputs: dict = {}

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
            "other layers acquired with the moving one (its CT, its ROIs): ticked layers get the same transform"
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
        row2.addWidget(self.undo_button)
        row2.addWidget(self.save_button)
        layout.addWidget(self.metric_label)
        layout.addWidget(self.fre_table)
        qc_row = QFormLayout()
        qc_row.addRow("Show", self.qc_combo)
        layout.addLayout(qc_row)
        layout.addLayout(row2)
        layout.addStretch(1)
        self.undo_button.setEnabled(False)
        self.save_button.setEnabled(False)

        self.undo_button.clicked.connect(self.undo)
        self.save_button.clicked.connect(self._save_dialog)
        self.qc_combo.currentTextChanged.connect(self.show_qc)
        self.method_combo.currentTextChanged.connect(self._method_changed)
        self.moving_combo.currentTextChanged.connect(self._refresh_companions)
        follow_layers(self.viewer, self._refresh_choices)
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

    def _method_changed(self, *args) -> None:
        landmarks = METHODS[self.method_combo.currentText()] == "landmarks"
        for combo in (self.fixed_points_combo, self.moving_points_combo):
            combo.setEnabled(landmarks)
        session = METHODS[self.method_combo.currentText()] == "session"
        for combo in (self.fixed_mask_combo, self.moving_mask_combo):
            combo.setEnabled(not landmarks and not session)  # session alignment finds the body itself

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
    ) -> None:
        """Choose inputs by name (for scripts and tests); ``method`` is "intensity", "landmarks" or "session"."""
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
        if method is not None:
            self.method_combo.setCurrentText(next(k for k, v in METHODS.items() if v == method))
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
            method = METHODS[self.method_combo.currentText()]
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
            elif method != "session":
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
        text = (
            f"mutual information {before:.3f} -> {after:.3f} nats (higher is better)"
            if np.isfinite(before) and np.isfinite(after)
            else "mutual information: not available"
        )
        if result.method == "session":
            text = (
                f"session alignment: correlation of the harmonised images {result.metric_final:.3f} (1 = identical), "
                f"body overlap {result.metric_after_init:.3f}"
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

    def _save_dialog(self) -> None:
        save_dialog(
            self,
            self.status,
            "Save transform",
            "transform.tfm",
            "ITK transform (*.tfm *.txt *.mat)",
            lambda path: self.save_transform(path, overwrite=True),
        )  # the dialog asked before replacing


__all__ = ["RegistrationWidget", "compute", "QC_NAMES"]
