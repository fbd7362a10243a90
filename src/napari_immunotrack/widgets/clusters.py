"""Iron cluster widget (thin; the science is in :mod:`napari_immunotrack.analysis.clusters`).

Pick the post-injection T2/T2*-weighted image and, to exclude voids that
were there before, the pre-injection baseline; a reference tissue ROI, a
search ROI and an air ROI (napari Labels layers or Shapes drawn on axial
slices); the candidate rule and its parameters. With a study open, the
image and the baseline follow the Study dock's timepoint by role (the T2*w
of the day shown, the day-0 T2*w; :mod:`.roles`) until the user picks a
layer, which pins it ("follows" / "pinned" beside each picker).

- "Live preview" shows the rule on the slice on screen (one slice only: fast)
  in a "cluster preview" layer while parameters move or the slice changes.
- "Find clusters" runs on the whole volume in a worker thread, with progress
  and Cancel. The clusters come back as an editable Labels layer ("iron
  clusters": correct them with napari's brush, eraser and fill) and a table
  dock: click a row to centre the views on that cluster.
- "Export" writes the (edited) labels as NIfTI on the post image's own grid
  and the table re-measured from them as CSV, each with its provenance
  sidecar; nothing is overwritten without asking.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QVBoxLayout,
)

from .._close_guard import offer_to_save, remember_saved
from ..analysis import clusters as C
from ..errors import InputError
from ..layer_content import array_fingerprint
from ..volume import Volume
from ._common import (
    LayerPickers,
    RunRow,
    check_labels_export,
    debounce_timer,
    export_labels_dialog,
    labels_on_grid,
    layer_to_volume,
    looks_pre_injection,
    name_tokens,
    notify_error,
    replace_table_dock,
    shapes_to_mask,
    t2star_first,
    volume_layer_data,
    write_labels_export,
)
from ._dock import PluginDock
from ._params import add_row, build_form, form_values, set_form_values

#: The parameters of CLUSTER_PARAMETERS the form shows, in its order (the threshold, whose range
#: follows the method, is a spin box of the dock's own under "method").
FORM_PARAMETERS = ("method", "min_size", "connectivity", "baseline_ratio", "split_touching")

#: Keys under which study states saved before the parameter model stored this dock's values
#: (read from its widgets in order): what they mean now.
_LEGACY_STATE_KEYS = {
    "QCheckBox0": "same_world",
    "QComboBox5": "method",
    "QDoubleSpinBox0": "threshold",
    "QSpinBox0": "min_size",
    "QComboBox6": "connectivity",
    "QDoubleSpinBox1": "baseline_ratio",
    "QCheckBox1": "split_touching",
    "QCheckBox2": "live",
}

#: (key, label, optional, kinds of layer offered)
_INPUTS = (
    ("post", "T2/T2*w post", False, ("Image",)),
    ("baseline", "Baseline (pre)", True, ("Image",)),
    ("reference_mask", "Reference ROI", True, ("Labels", "Shapes")),
    ("search_mask", "Search ROI", True, ("Labels", "Shapes")),
    ("background_mask", "Air ROI (noise)", True, ("Labels", "Shapes")),
)

#: Inputs that follow the Study dock's timepoint (see widgets/roles.py); the ROIs are guessed by name.
ROLES = {"post": "t2star_post", "baseline": "t2star_baseline"}

#: Layers this widget owns.
LAYER_NAMES = {"labels": "iron clusters", "preview": "cluster preview"}

#: Spin box range, step and decimals of each rule's threshold.
_THRESHOLD_SPIN = {
    "fraction": (0.01, 0.99, 0.05, 2),
    "percentile": (0.1, 99.0, 1.0, 1),
    "ksigma": (0.1, 20.0, 0.5, 1),
    "blob": (0.01, 0.99, 0.05, 2),
}
_THRESHOLD_TIPS = {
    "fraction": "voxels below this fraction of the reference mean (0.5: Tremblay et al. 2018)",
    "percentile": "the darkest p % of the search ROI, a fixed share by construction; only voxels "
    "darker than the reference are kept",
    "ksigma": "voxels below mean - k SD of the reference",
    "blob": "local contrast 1 - G(0.5 vox)/G(3 vox) above this (small voids)",
}


class ClusterWidget(PluginDock):
    """Dock widget: find hypointense (iron) cell clusters, preview, correct and export them."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.result: C.ClusterResult | None = None
        self.layers: dict = {}
        self.table = None  # the QTableWidget of the docked table
        self._inputs_used: dict = {}
        self._volumes_used: dict = {}
        self._prep_key = None
        self._prep = None
        self._preview_slice = None

        layout = QVBoxLayout(self)
        box = QGroupBox("Images and ROIs")
        form = QFormLayout(box)
        self.pickers = LayerPickers(
            napari_viewer, form, _INPUTS, guess=self._guess, exclude=self.layers.values, roles=ROLES, parent=self
        )
        self.combos = self.pickers.combos
        self.same_world = QCheckBox("baseline on another grid: same world, resample it")
        self.same_world.setToolTip(
            "use when the baseline is registered (or from the same session) but has "
            "another voxel grid; otherwise a baseline must have the post image's grid"
        )
        form.addRow("", self.same_world)
        layout.addWidget(box)

        box = QGroupBox("Rule")
        form = QFormLayout(box)
        # the form is made from the parameter model: defaults, ranges, labels and tooltips are the CLI's;
        # the threshold's range and default follow the method (_THRESHOLD_SPIN, C.DEFAULT_THRESHOLDS)
        self.form = build_form(C.CLUSTER_PARAMETERS, FORM_PARAMETERS)
        #: the model's parameters the form does not show (the model's defaults, or a reopened state's values)
        self.other_parameters = {
            k: v for k, v in C.CLUSTER_PARAMETERS.defaults().items() if k not in self.form and k != "threshold"
        }
        self.threshold = QDoubleSpinBox()
        for name, widget in self.form.items():
            add_row(form, C.CLUSTER_PARAMETERS[name], widget)
            if name == "method":
                form.addRow("threshold", self.threshold)
        # the Qt widgets, by the names the dock always had
        self.method = self.form["method"].native
        self.min_size = self.form["min_size"].native
        self.connectivity = self.form["connectivity"].native
        self.baseline_ratio = self.form["baseline_ratio"].native
        self.split = self.form["split_touching"].native
        self.live = QCheckBox("Live preview (current slice)")
        form.addRow("", self.live)
        layout.addWidget(box)
        self._method_changed()

        self.run_row = RunRow(layout, "Find clusters", on_run=self.run, owner=self)  # run_button, status, runner...
        self.export_button = QPushButton("Export labels and table...")
        self.export_button.setEnabled(False)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self._timer = debounce_timer(self, 150, self.update_preview)
        self.export_button.clicked.connect(self._export_dialog)
        self.method.currentIndexChanged.connect(self._method_changed)
        for widget in (self.threshold, self.baseline_ratio):
            widget.valueChanged.connect(self._schedule_preview)
        self.connectivity.currentIndexChanged.connect(self._schedule_preview)
        self.live.toggled.connect(self._live_toggled)
        self.same_world.toggled.connect(self._inputs_changed)
        for combo in self.combos.values():
            combo.currentIndexChanged.connect(self._inputs_changed)
        self.viewer.dims.events.current_step.connect(self._schedule_preview)
        self.pickers.follow()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _guess(key: str, names) -> str | None:
        """Pre-select by name: "..._post"/"T2starw" for the image, "pre"/"day0" for the baseline, "ref..." ROIs."""
        if key == "post":
            post = [n for n in names if not looks_pre_injection(n)]
            named = [n for n in post if "post" in name_tokens(n)] or post
            return (t2star_first(named) or [None])[0]
        if key == "baseline":
            return (t2star_first([n for n in names if looks_pre_injection(n)]) or [None])[0]
        word = {
            "reference_mask": ("reference", "ref"),
            "search_mask": ("search",),
            "background_mask": ("background", "air", "bg"),
        }[key]
        return next((n for n in names if name_tokens(n) & set(word)), None)

    def select(self, **layer_names) -> None:
        """Choose inputs by layer name, e.g. ``select(post="T2starw_post", baseline=None)`` (None = none)."""
        self.pickers.select(**layer_names)

    def volumes(self) -> dict:
        """The chosen inputs as Volumes (ROIs drawn as Shapes rasterised on the post image's grid)."""
        self.pickers.check_distinct()
        layer = self.pickers.layer("post")
        if layer is None:
            raise InputError("choose the post-injection T2/T2*-weighted image layer.")
        post = layer_to_volume(layer)
        out = {"post": post}
        for key, *_ in _INPUTS[1:]:
            layer = self.pickers.layer(key)
            if layer is None:
                out[key] = None
            elif type(layer).__name__ == "Shapes":
                if len(layer.data) == 0:
                    raise InputError(f"the Shapes layer {layer.name!r} has no shape; draw the ROI first.")
                out[key] = shapes_to_mask(layer, post)
            else:
                out[key] = layer_to_volume(layer)
        return out

    def parameters(self) -> dict:
        """Every parameter of :data:`~napari_immunotrack.analysis.clusters.CLUSTER_PARAMETERS`:
        the form's values, the threshold shown for the method and the others'."""
        values = {**self.other_parameters, **form_values(self.form)}
        values["threshold"] = float(self.threshold.value())
        return values

    # ------------------------------------------------------------------ study state (through the model)
    def state_parameters(self) -> dict:
        """What the study state saves of this dock: every model parameter, the options, the chosen layers."""
        state = C.CLUSTER_PARAMETERS.to_state(self.parameters())
        state["same_world"] = self.same_world.isChecked()
        state["live"] = self.live.isChecked()
        state["inputs"] = self.pickers.names(self.combos)
        return state

    def set_state_parameters(self, values: dict) -> None:
        """Show a saved state's values: missing ones take the model's default, bad ones are reported."""
        values = {_LEGACY_STATE_KEYS.get(k, k): v for k, v in dict(values).items()}
        if isinstance(values.get("connectivity"), str) and values["connectivity"].isdigit():
            values["connectivity"] = int(values["connectivity"])  # saved as the combo's text before
        # layers chosen by name: "inputs" (now) or the pickers' own keys (states saved before)
        inputs = dict(values.get("inputs") or {k: values[k] for k, *_ in _INPUTS if k in values})
        params, problems = C.CLUSTER_PARAMETERS.from_state(values)
        self.live.setChecked(False)  # no preview while the values change
        set_form_values(self.form, {k: v for k, v in params.items() if k in self.form})  # method: threshold reset
        if params["threshold"] is not None:
            self.threshold.setValue(params["threshold"])
        self.other_parameters = {k: v for k, v in params.items() if k not in self.form and k != "threshold"}
        for key, name in inputs.items():
            if key in self.combos and self.combos[key].findText(str(name)) >= 0:
                self.combos[key].setCurrentText(str(name))
        self.same_world.setChecked(bool(values.get("same_world", False)))
        self.live.setChecked(bool(values.get("live", False)))
        if problems:
            notify_error(InputError("Iron clusters: " + "; ".join(problems) + " (the default is used)."))

    def _transform(self, volumes):
        base = volumes.get("baseline")
        post = volumes["post"]
        # both placed in the study's reference world by the saved session alignments: one world
        in_reference = (
            base is not None and base.metadata.get("study_frame") == post.metadata.get("study_frame") == "reference"
        )
        if base is not None and (self.same_world.isChecked() or in_reference) and not base.same_grid(post):
            return np.eye(4)
        return None

    def _method_changed(self, *args) -> None:
        method = self.method.currentText()
        lo, hi, step, decimals = _THRESHOLD_SPIN[method]
        self.threshold.blockSignals(True)
        self.threshold.setDecimals(decimals)
        self.threshold.setRange(lo, hi)
        self.threshold.setSingleStep(step)
        self.threshold.setValue(C.DEFAULT_THRESHOLDS[method])
        self.threshold.setToolTip(_THRESHOLD_TIPS[method])
        self.threshold.blockSignals(False)
        self._schedule_preview()

    def _inputs_changed(self, *args) -> None:
        self._prep_key = None
        self._schedule_preview()

    # ------------------------------------------------------------------ preview
    def _live_toggled(self, on: bool) -> None:
        if on:
            self._schedule_preview()
        elif self.layers.get("preview") in self.viewer.layers:
            self.viewer.layers.remove(self.layers.pop("preview"))

    def _schedule_preview(self, *args) -> None:
        if self.live.isChecked():
            self._timer.start()

    def _prepared_for_display(self):
        """Inputs prepared on the post layer's display grid (cached until an input or an ROI changes)."""
        layers = [self.pickers.layer(k) for k, *_ in _INPUTS]
        key = tuple(
            (
                ly.name,
                array_fingerprint(ly.data)
                if type(ly).__name__ == "Labels"
                else (
                    repr([np.asarray(d).round(3).tolist() for d in ly.data])
                    if type(ly).__name__ == "Shapes"
                    else id(ly.data)
                ),
            )
            if ly is not None
            else None
            for ly in layers
        ) + (self.same_world.isChecked(),)
        if key != self._prep_key:
            vols = self.volumes()
            display = {
                k: (v.for_display(reference=vols["post"]) if v is not None and k in ("post", "baseline") else v)
                for k, v in vols.items()
            }
            transform = self._transform(display)
            self._prep = C.prepare(
                display["post"],
                display["baseline"],
                display["reference_mask"],
                display["search_mask"],
                display["background_mask"],
                transform,
            )
            self._prep_key = key
        return self._prep

    def update_preview(self) -> np.ndarray | None:
        """Show the rule on the displayed slice in the preview layer; returns the 2D mask (None in 3D view)."""
        if not self.live.isChecked():
            return None
        try:
            post_layer = self.pickers.layer("post")
            if post_layer is None:
                raise InputError("choose the post-injection T2/T2*-weighted image layer.")
            if self.viewer.dims.ndisplay != 2:
                self.status.setText("the live preview works in the 2D view")
                return None
            prep = self._prepared_for_display()
            p = self.parameters()
            rule = prep.rule(p["method"], p["threshold"], baseline_ratio=p["baseline_ratio"])
            ndim = self.viewer.dims.ndim
            spatial = [d - (ndim - 3) for d in self.viewer.dims.not_displayed if d >= ndim - 3]
            axis = spatial[0]
            data_pos = np.asarray(post_layer.world_to_data(self.viewer.dims.point))[-3:]
            index = int(np.clip(np.round(data_pos[axis]), 0, prep.post.spatial_shape[axis] - 1))
            mask2d = prep.preview(rule, axis, index)
        except Exception as exc:  # shown, never raised into Qt's event loop
            self.run_row.fail(exc)
            return None
        layer = self.layers.get("preview")
        if layer is None or layer not in self.viewer.layers or layer.data.shape != prep.post.spatial_shape:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            empty = Volume(
                np.zeros(prep.post.spatial_shape, np.uint8),
                prep.post.affine,
                modality="SEG",
                unit="label",
                name=LAYER_NAMES["preview"],
            )
            data, kwargs, _ = volume_layer_data(empty, as_labels=True, opacity=0.5)
            kwargs["metadata"] = {}  # a scratch layer: not an input, not a result
            layer = self.viewer.add_labels(data.astype(np.uint8), **kwargs)
            self.layers["preview"] = layer
            self._preview_slice = None
        data = layer.data
        if self._preview_slice is not None:
            data[self._preview_slice] = 0
        sl = [slice(None)] * 3
        sl[axis] = index
        self._preview_slice = tuple(sl)
        data[self._preview_slice] = mask2d.astype(np.uint8)
        layer.refresh()
        self.status.setText(
            f"preview: {int(mask2d.sum())} candidate voxel(s) on this slice "
            f"({p['method']} {p['threshold']:g}; components and min size apply on Find clusters)"
        )
        return mask2d

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Segment the whole volume in a worker thread (queued if one is running)."""
        if self.run_row.busy():
            return
        try:
            volumes = self.volumes()
        except InputError as exc:
            self.run_row.fail(exc)
            return
        # the new result replaces our labels layer: corrections painted into it are offered for saving first
        ours = self.layers.get("labels")
        if (
            ours is not None
            and ours in self.viewer.layers
            and not offer_to_save(self, [ours], "replacing them with a new result")
        ):
            return
        self._inputs_used = self.pickers.names(k for k, v in volumes.items() if v is not None)
        self._volumes_used = volumes
        transform = self._transform(volumes)
        self.status.setText("running...")
        self.runner.start(
            C.segment_clusters,
            volumes["post"],
            baseline=volumes["baseline"],
            reference_mask=volumes["reference_mask"],
            search_mask=volumes["search_mask"],
            background_mask=volumes["background_mask"],
            baseline_transform=transform,
            **self.parameters(),
            on_done=self._show,
            on_error=self._failed,
            guard=True,
        )

    def _failed(self, exc) -> None:
        self.run_row.fail(exc)
        self.run_row.run_pending(self.run)

    def _show(self, result) -> None:
        self.result = result
        post = self._volumes_used["post"]
        labels = result.labels.replace(name=LAYER_NAMES["labels"])
        data, kwargs, _ = volume_layer_data(labels, reference=post, as_labels=True, opacity=0.7)
        layer = self.layers.get("labels")
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        self.layers["labels"] = self.viewer.add_labels(data, **kwargs)
        self._show_table(result.table)
        n = len(result.table)
        text = (
            f"{n} cluster(s); reference mean {result.reference.mean:.4g} ({result.reference.source}); "
            f"noise sigma {result.sigma:.4g} ({result.noise.method}). Edit the '{LAYER_NAMES['labels']}' "
            "layer with the brush or eraser, then export."
        )
        if self._volumes_used.get("baseline") is None:
            text += " NO baseline: intrinsic dark spots (air, bone, vessels, haemorrhage) are not excluded."
        if result.warnings:
            from napari.utils.notifications import show_warning

            for message in result.warnings:
                show_warning(message)
            text += " Warnings: " + " | ".join(result.warnings)
        self.status.setText(text)
        self.export_button.setEnabled(True)
        self.pickers.refresh()
        self.run_row.run_pending(self.run)

    def _show_table(self, df) -> None:
        self.table = replace_table_dock(self.viewer, self.table, df, "iron clusters")

    # ------------------------------------------------------------------ export
    def current_labels(self) -> Volume:
        """The (possibly hand-edited) clusters as a Volume on the post image's grid."""
        if self.result is None or self.layers.get("labels") not in self.viewer.layers:
            raise InputError("find the clusters first (the clusters layer is missing).")
        return labels_on_grid(self.layers["labels"], self.result.labels)

    def current_table(self, labels: Volume | None = None):
        """The table measured from the (edited) labels, with the run's reference mean and sigma."""
        labels = self.current_labels() if labels is None else labels
        post, base = self._volumes_used["post"], self._volumes_used.get("baseline")
        if base is not None:
            base = C.baseline_on_grid(base, post, self._transform(self._volumes_used))
        return C.measure_clusters(labels, post, self.result.reference.mean, self.result.sigma, baseline=base)

    def export(self, labels_path, table_path=None, overwrite: bool = False):
        """Write the (edited) labels as NIfTI on the post image's grid and, if asked, the table as CSV.

        Both paths are checked before anything is written. Returns the table.
        """
        from .. import provenance

        labels_path = check_labels_export(labels_path, table_path, overwrite, csv_table=True)
        labels = self.current_labels()
        table = self.current_table(labels)
        edited = not np.array_equal(labels.numpy(), self.result.labels.numpy())
        record = provenance.record(
            "segment",
            inputs={k: v for k, v in self._volumes_used.items() if v is not None},
            parameters=dict(self.result.parameters, edited_by_hand=edited),
            warnings=self.result.warnings,
            clusters=len(table),
            layers=self._inputs_used,
        )
        write_labels_export(
            labels,
            table,
            record,
            labels_path,
            table_path,
            overwrite,
            description=f"immunotrack segment {self.result.parameters['method']} clusters",
        )
        remember_saved(self.layers["labels"])  # exported: closing or a rerun no longer asks about it
        return table

    def _export_dialog(self) -> None:
        export_labels_dialog(
            self, self.status, "Save clusters as NIfTI", "clusters.nii.gz", "_clusters.csv", self.export
        )


__all__ = ["ClusterWidget", "LAYER_NAMES"]
