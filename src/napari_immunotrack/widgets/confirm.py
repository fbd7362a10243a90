"""T1-T2 self-confirmation widget (thin; the science is in
:mod:`napari_immunotrack.analysis.confirm`).

Choose the post-injection T1w and T2w images and, to confirm rather than
only suggest, their pre-injection baselines (or T1/T2 maps before and after).
The result comes back as:

- a three-colour fusion over the anatomy (Okabe-Ito colours, drawn
  opaque-ish so that the colours stay recognisable): T1 enhancement only
  (orange), T2 darkening only (sky blue) and their overlap, the confirmed
  regions (bluish green);
- the regions as an editable Labels layer (hidden at first so that it does
  not cover the fusion; show it to edit), with the per-region table docked
  (click a row to centre the views on it);
- without a baseline, everything is named and flagged UNCONFIRMED, with the
  haemorrhage/melanin/fat warning in the widget and a notification.

"Live preview" re-runs (debounced) whenever a threshold changes. "Export"
writes the (edited) labels on T1POST's grid as NIfTI and the table as CSV,
each with its provenance sidecar; nothing is overwritten without asking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                            QLabel, QMessageBox, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..analysis.confirm import FUSION_COLOURS, UNCONFIRMED_WARNING, confirm_dual_mode, region_table
from ..errors import InputError, one_line
from .._close_guard import install_close_guard
from ._common import TaskRunner, layer_to_volume, notify_error, show_table_dock, volume_layer_data

_NONE = "(none)"

#: (key, label, optional, layer kind) of every input the widget offers.
_INPUTS = (
    ("t1_post", "T1w post", False, "image"),
    ("t2_post", "T2w post", False, "image"),
    ("t1_pre", "T1w pre (baseline)", True, "image"),
    ("t2_pre", "T2w pre (baseline)", True, "image"),
    ("t1_map_pre", "T1 map pre (ms)", True, "image"),
    ("t1_map_post", "T1 map post (ms)", True, "image"),
    ("t2_map_pre", "T2 map pre (ms)", True, "image"),
    ("t2_map_post", "T2 map post (ms)", True, "image"),
    ("search_mask", "Search mask", True, "labels"),
    ("reference_mask", "Reference tissue", True, "labels"),
)

#: Names of the layers this widget owns.
LAYER_NAMES = {"t1_enhancement": "T1 enhancement", "t2_darkening": "T2 darkening", "overlap": "T1+T2 overlap",
               "labels": "confirmed regions"}


class _Failed:
    """An exception carried back from the worker as a result."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _guarded(func):
    """``func`` returning its exception instead of raising it: the GUI thread then shows it as one
    notification (superqt's worker would also re-raise it into Qt's event loop as a traceback)."""

    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error is shown to the user, none is lost
            return _Failed(exc)

    return call


def _mask_colormap(key: str):
    """Transparent at 0, the Okabe-Ito colour at 1.

    Drawn with translucent (alpha) blending: additive blending would add the
    colour to the grey anatomy, and bluish green on grey turns into the same
    pale cyan as sky blue on grey, so overlap and T2 darkening could not be
    told apart on a screenshot.
    """
    from napari.utils.colormaps import Colormap

    hexcode = FUSION_COLOURS[key].lstrip("#")
    rgb = [int(hexcode[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    return Colormap(colors=[[0.0, 0.0, 0.0, 0.0], rgb + [1.0]], name=f"immunotrack_{key}",
                    display_name=f"{key} ({FUSION_COLOURS[key]})")


class ConfirmWidget(QWidget):
    """Dock widget: T1-T2 self-confirmation of dual-mode labels."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        install_close_guard(napari_viewer)  # edited labels/ROIs are offered for saving on close
        self.result = None
        self.layers: dict = {}
        self.table_dock = None
        self._pending = False
        self._inputs_used: dict = {}
        self._last_status = None

        layout = QVBoxLayout(self)
        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.combos = {}
        for key, label, optional, _kind in _INPUTS:
            combo = QComboBox()
            combo.setObjectName(key)
            self.combos[key] = combo
            form.addRow(label + ("" if optional else " *"), combo)
        layout.addWidget(box)

        box = QGroupBox("Thresholds")
        form = QFormLayout(box)
        self.t1_threshold = self._spin(0.0, 0.99, 0.2, 0.05, "T1w enhancement (post-pre)/pre above this fraction")
        self.t2_threshold = self._spin(0.0, 0.99, 0.2, 0.05, "T2w darkening -(post-pre)/pre above this fraction")
        self.k_sigma = self._spin(0.0, 10.0, 3.0, 0.5, "a region starts where both changes exceed k x noise sigma")
        self.k_sigma_grow = self._spin(0.0, 10.0, 2.0, 0.5, "a region grows into voxels beyond k x sigma")
        self.min_size = QSpinBox()
        self.min_size.setRange(1, 10_000_000)
        self.min_size.setValue(3)
        self.min_size.setToolTip("smallest region kept, in voxels")
        self.opening = QCheckBox("opening before labelling")
        form.addRow("T1 threshold", self.t1_threshold)
        form.addRow("T2 threshold", self.t2_threshold)
        form.addRow("k sigma (start)", self.k_sigma)
        form.addRow("k sigma (grow)", self.k_sigma_grow)
        form.addRow("min size (voxels)", self.min_size)
        form.addRow("", self.opening)
        self.live = QCheckBox("Live preview")
        form.addRow("", self.live)
        layout.addWidget(box)

        row = QHBoxLayout()
        self.run_button = QPushButton("Confirm")
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress_bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("color: #D55E00; font-weight: bold;")  # Okabe-Ito vermillion
        self.export_button = QPushButton("Export labels and table...")
        self.export_button.setEnabled(False)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.banner)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self.runner = TaskRunner(self.progress_bar, self.cancel_button, self.status)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.run)
        self.run_button.clicked.connect(self.run)
        self.export_button.clicked.connect(self._export_dialog)
        for widget in (self.t1_threshold, self.t2_threshold, self.k_sigma, self.k_sigma_grow, self.min_size):
            widget.valueChanged.connect(self._parameters_changed)
        self.opening.toggled.connect(self._parameters_changed)
        self.live.toggled.connect(self._parameters_changed)
        for combo in self.combos.values():
            combo.currentIndexChanged.connect(self._parameters_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _spin(lo, hi, value, step, tip):
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(2)
        spin.setSingleStep(step)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    def _refresh_choices(self, event=None) -> None:
        """Offer the viewer's image layers (and labels layers for masks), our own outputs excluded."""
        own = {id(layer) for layer in self.layers.values()}
        images = [ly.name for ly in self.viewer.layers if type(ly).__name__ == "Image" and id(ly) not in own]
        labels = [ly.name for ly in self.viewer.layers if type(ly).__name__ == "Labels" and id(ly) not in own]
        for key, _label, optional, kind in _INPUTS:
            combo = self.combos[key]
            current = combo.currentText()
            names = (labels if kind == "labels" else images)
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem(_NONE)
            combo.addItems(names)
            if current in names or (optional and current == _NONE):
                combo.setCurrentText(current)
            else:
                combo.setCurrentIndex(0)
                guess = self._guess(key, names)  # pre-select by name: "t1...post", "T2w_pre", ...
                if guess:
                    combo.setCurrentText(guess)
            combo.blockSignals(False)

    @staticmethod
    def _guess(key: str, names) -> Optional[str]:
        """A layer name that looks like ``key``: "T1w_post", "t2_map_pre", "sub-01_ses-day0_T2w" (day 0 = pre)."""
        import re

        parts = key.split("_")
        if parts[-1] == "mask":
            return next((n for n in names if parts[0] in n.lower()), None)
        side, want_map, want_pre = parts[0], "map" in parts, parts[-1] == "pre"
        for name in names:
            tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
            if not ({side, side + "w", side + "map"} & set(tokens)):
                continue
            is_map = "map" in tokens or side + "map" in tokens
            is_pre = bool({"pre", "baseline", "day0", "d0"} & set(tokens))
            if is_map == want_map and is_pre == want_pre:
                return name
        return None

    def select(self, **layer_names) -> None:
        """Choose inputs by layer name, e.g. ``select(t1_post="T1w_post", t2_pre=None)`` (None = none)."""
        for key, name in layer_names.items():
            if key not in self.combos:
                raise InputError(f"unknown input {key!r}; choose among {', '.join(self.combos)}.")
            combo = self.combos[key]
            text = _NONE if name is None else name
            if combo.findText(text) < 0:
                raise InputError(f"no layer named {name!r} for {key}.")
            combo.setCurrentText(text)

    def _volume(self, key):
        name = self.combos[key].currentText()
        if not name or name == _NONE:
            return None
        if name not in self.viewer.layers:
            raise InputError(f"the layer {name!r} chosen for {key} is gone; choose another.")
        return layer_to_volume(self.viewer.layers[name])

    def parameters(self) -> dict:
        return {"t1_threshold": self.t1_threshold.value(), "t2_threshold": self.t2_threshold.value(),
                "k_sigma": self.k_sigma.value(), "k_sigma_grow": min(self.k_sigma_grow.value(), self.k_sigma.value()),
                "min_size": self.min_size.value(), "opening": self.opening.isChecked()}

    # ------------------------------------------------------------------ running
    def _parameters_changed(self, *args) -> None:
        if self.live.isChecked():
            self._timer.start()

    def run(self) -> None:
        """Run the confirmation in a worker thread (queued if one is running)."""
        if self.runner.running:
            self._pending = True
            return
        try:
            volumes = {key: self._volume(key) for key, *_ in _INPUTS}
            if volumes["t1_post"] is None or volumes["t2_post"] is None:
                raise InputError("choose the post-injection T1w and T2w image layers.")
        except InputError as exc:
            notify_error(exc)
            return
        self._inputs_used = {k: self.combos[k].currentText() for k, v in volumes.items() if v is not None}
        self._reference = volumes["t1_post"]  # the display reference of the results
        self.status.setText("running...")
        self.runner.start(_guarded(confirm_dual_mode), **volumes, **self.parameters(), on_done=self._done,
                          on_error=self._failed)

    def _done(self, result) -> None:
        if isinstance(result, _Failed):
            self._failed(result.exc)
        else:
            self._show(result)

    def _failed(self, exc) -> None:
        notify_error(exc)
        self.status.setText(one_line(exc))
        self._run_pending()

    def _run_pending(self) -> None:
        if self._pending:
            self._pending = False
            QTimer.singleShot(0, self.run)

    def _put(self, key: str, volume, reference, **style):
        """Add a result layer, or update ours in place (keeps the user's display settings)."""
        data, kwargs, layer_type = volume_layer_data(volume, reference=reference,
                                                     as_labels=(key == "labels"), **style)
        layer = self.layers.get(key)
        if layer is not None and layer in self.viewer.layers and layer.data.shape == data.shape \
                and np.allclose(layer.scale, kwargs["scale"]) and np.allclose(layer.translate, kwargs["translate"]):
            layer.data = data
            layer.metadata.update(kwargs["metadata"])
            layer.name = kwargs["name"]
            return layer
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        adder = self.viewer.add_labels if layer_type == "labels" else self.viewer.add_image
        layer = adder(data, **kwargs)
        self.layers[key] = layer
        return layer

    def _show(self, result) -> None:
        self.result = result
        suffix = "" if result.confirmed else " (UNCONFIRMED)"
        reference = self._reference
        for key in ("t1_enhancement", "t2_darkening", "overlap"):
            vol = result.fusion[key].replace(name=LAYER_NAMES[key] + suffix)
            self._put(key, vol, reference, colormap=_mask_colormap(key), blending="translucent",
                      contrast_limits=(0, 1), opacity=0.9)
        labels = result.labels.replace(name=LAYER_NAMES["labels"] if result.confirmed
                                       else "candidates (UNCONFIRMED)")
        previous = self.layers.get("labels")
        layer = self._put("labels", labels, reference, opacity=0.6)
        if layer is not previous:
            # hidden at first: drawn over the fusion it would hide the overlap colour of small regions
            # (and its random colours could pass for fusion colours); show it to edit the regions
            layer.visible = False
        self._show_table(result.table, "confirmed regions" if result.confirmed else "candidates (UNCONFIRMED)")
        n = len(result.table)
        if result.confirmed:
            self.status.setText(f"{n} confirmed region(s); T1: {result.mode['t1']}, T2: {result.mode['t2']}. "
                                f"Show the '{layer.name}' layer to edit them.")
            self.banner.setText("")
        else:
            self.status.setText(f"{n} candidate region(s), UNCONFIRMED (no baseline)")
            self.banner.setText(UNCONFIRMED_WARNING)
            if self._last_status != "unconfirmed":  # once, not at every live-preview update
                from napari.utils.notifications import show_warning

                show_warning(UNCONFIRMED_WARNING)
        self._last_status = result.status
        self.export_button.setEnabled(True)
        self._refresh_choices()
        self._run_pending()

    def _show_table(self, df, title: str) -> None:
        if self.table_dock is not None:
            try:
                self.viewer.window.remove_dock_widget(self.table_dock)
            except (LookupError, ValueError, RuntimeError):  # already closed by the user
                pass
        self.table_dock = show_table_dock(self.viewer, df, title)  # the table widget inside the dock

    # ------------------------------------------------------------------ export
    def current_labels(self):
        """The (possibly hand-edited) regions as a Volume on T1POST's grid."""
        if self.result is None or self.layers.get("labels") not in self.viewer.layers:
            raise InputError("run the confirmation first (the regions layer is missing).")
        vol = layer_to_volume(self.layers["labels"], native=True)
        grid = self.result.labels
        if not vol.same_grid(grid):
            vol = vol.resample_to(grid, order=0)
        return vol.replace(name=grid.name, metadata=dict(grid.metadata), modality="SEG", unit="label")

    def export(self, labels_path, table_path=None, overwrite: bool = False):
        """Write the (edited) labels as NIfTI on T1POST's grid and, if asked, the table as CSV.

        Both paths are checked before anything is written. Returns the table written.
        """
        from .. import provenance
        from ..io import save_labels
        from ..outputs import check_output, write_table

        labels_path = Path(labels_path)
        if not labels_path.name.lower().endswith((".nii", ".nii.gz")):
            raise InputError(f"{labels_path}: labels are written as NIfTI (.nii or .nii.gz).")
        check_output(labels_path, overwrite)
        if table_path is not None:
            check_output(table_path, overwrite)
        labels = self.current_labels()
        table = region_table(labels, self.result)
        edited = not np.array_equal(labels.numpy(), self.result.labels.numpy())
        inputs = {}
        for key, name in self._inputs_used.items():
            if name in self.viewer.layers:
                inputs[key] = layer_to_volume(self.viewer.layers[name])
        description = self.result.labels.metadata["description"]
        record = provenance.record("confirm", inputs=inputs, parameters=dict(self.result.parameters,
                                                                             edited_by_hand=edited),
                                   warnings=self.result.warnings, status=self.result.status,
                                   confirmed=self.result.confirmed, description=description,
                                   regions=len(table), layers=self._inputs_used)
        save_labels(labels, labels_path, overwrite=overwrite, provenance=record, description=description)
        if table_path is not None:
            write_table(table, table_path, provenance=record, overwrite=overwrite)
        return table

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save regions as NIfTI", "confirmed.nii.gz",
                                              "NIfTI (*.nii.gz *.nii)")
        if not path:
            return
        name = Path(path).name
        stem = name[:-7] if name.lower().endswith(".nii.gz") else Path(path).stem
        table_path = Path(path).with_name(stem + "_regions.csv")
        # the file dialog already asked about the NIfTI; ask about the table beside it
        if table_path.exists() and QMessageBox.question(self, "Replace?", f"{table_path} exists. Replace it?") \
                != QMessageBox.StandardButton.Yes:
            return
        try:
            self.export(path, table_path, overwrite=True)
        except Exception as exc:  # shown, never raised into Qt's event loop
            notify_error(exc)
            return
        self.status.setText(f"saved {path} and {table_path.name}")


__all__ = ["ConfirmWidget", "LAYER_NAMES"]
