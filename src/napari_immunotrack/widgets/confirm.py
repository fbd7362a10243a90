"""T1-T2 self-confirmation widget (thin; the science is in
:mod:`napari_immunotrack.analysis.confirm`).

Choose the post-injection T1w and T2w images and, to confirm rather than
only suggest, their pre-injection baselines (or T1/T2 maps before and after).
With a study open, the four images follow the Study dock's timepoint by role
(T1w and T2w of the day shown, the day-0 T1w and T2w; :mod:`.roles`) until the
user picks one (pinned); one layer for two inputs is refused.
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

The threshold form is made from
:data:`~napari_immunotrack.analysis.confirm.CONFIRM_PARAMETERS` (defaults,
ranges, steps, labels and tooltips), and the dock saves and reopens its
values in the study state through the same model (:meth:`ConfirmWidget.state_parameters`).

"Live preview" re-runs (debounced) whenever a threshold changes. "Export"
writes the (edited) labels on T1POST's grid as NIfTI and the table as CSV,
each with its provenance sidecar; nothing is overwritten without asking.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout

from .._close_guard import offer_to_save, remember_saved
from ..analysis.confirm import CONFIRM_PARAMETERS, FUSION_COLOURS, UNCONFIRMED_WARNING, confirm_dual_mode, region_table
from ..errors import InputError
from ._common import (
    LayerPickers,
    RunRow,
    check_labels_export,
    debounce_timer,
    export_labels_dialog,
    labels_on_grid,
    layer_to_volume,
    looks_pre_injection,
    notify_error,
    replace_table_dock,
    volume_layer_data,
    write_labels_export,
)
from ._dock import PluginDock
from ._params import build_form, form_values, set_form_values

#: (key, label, optional, kinds of layer offered) of every input the widget offers.
_INPUTS = (
    ("t1_post", "T1w post", False, ("Image",)),
    ("t2_post", "T2w post", False, ("Image",)),
    ("t1_pre", "T1w pre (baseline)", True, ("Image",)),
    ("t2_pre", "T2w pre (baseline)", True, ("Image",)),
    ("t1_map_pre", "T1 map pre (ms)", True, ("Image",)),
    ("t1_map_post", "T1 map post (ms)", True, ("Image",)),
    ("t2_map_pre", "T2 map pre (ms)", True, ("Image",)),
    ("t2_map_post", "T2 map post (ms)", True, ("Image",)),
    ("search_mask", "Search mask", True, ("Labels",)),
    ("reference_mask", "Reference tissue", True, ("Labels",)),
)

#: Inputs that follow the Study dock's timepoint (see widgets/roles.py); maps and masks are guessed by name.
ROLES = {"t1_post": "t1_post", "t2_post": "t2_post", "t1_pre": "t1_pre", "t2_pre": "t2_pre"}

#: The parameters of CONFIRM_PARAMETERS the form shows (the others keep their model default, or the state's value).
FORM_PARAMETERS = ("t1_threshold", "t2_threshold", "k_sigma", "k_sigma_grow", "min_size", "opening")

#: Keys under which study states saved before the parameter model stored this dock's values
#: (read from its widgets in order): what they mean now.
_LEGACY_STATE_KEYS = {
    "QDoubleSpinBox0": "t1_threshold",
    "QDoubleSpinBox1": "t2_threshold",
    "QDoubleSpinBox2": "k_sigma",
    "QDoubleSpinBox3": "k_sigma_grow",
    "QSpinBox0": "min_size",
    "QCheckBox0": "opening",
    "QCheckBox1": "live",
}

#: Names of the layers this widget owns.
LAYER_NAMES = {
    "t1_enhancement": "T1 enhancement",
    "t2_darkening": "T2 darkening",
    "overlap": "T1+T2 overlap",
    "labels": "confirmed regions",
}


def _mask_colormap(key: str):
    """Transparent at 0, the Okabe-Ito colour at 1.

    Drawn with translucent (alpha) blending: additive blending would add the
    colour to the grey anatomy, and bluish green on grey turns into the same
    pale cyan as sky blue on grey, so overlap and T2 darkening could not be
    told apart on a screenshot.
    """
    from napari.utils.colormaps import Colormap

    hexcode = FUSION_COLOURS[key].lstrip("#")
    rgb = [int(hexcode[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return Colormap(
        colors=[[0.0, 0.0, 0.0, 0.0], rgb + [1.0]],
        name=f"immunotrack_{key}",
        display_name=f"{key} ({FUSION_COLOURS[key]})",
    )


class ConfirmWidget(PluginDock):
    """Dock widget: T1-T2 self-confirmation of dual-mode labels."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.result = None
        self.layers: dict = {}
        self.table_dock = None
        self._inputs_used: dict = {}
        self._last_status = None

        layout = QVBoxLayout(self)
        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.pickers = LayerPickers(
            napari_viewer, form, _INPUTS, guess=self._guess, exclude=self.layers.values, roles=ROLES, parent=self
        )
        self.combos = self.pickers.combos
        layout.addWidget(box)

        box = QGroupBox("Thresholds")
        form = QFormLayout(box)
        # the form is made from the parameter model: defaults, ranges, labels and tooltips are the CLI's
        self.form = build_form(CONFIRM_PARAMETERS, FORM_PARAMETERS, form)
        #: the model's parameters the form does not show (the model's defaults, or a reopened state's values)
        self.other_parameters = {k: v for k, v in CONFIRM_PARAMETERS.defaults().items() if k not in self.form}
        # the Qt widgets, by the names the dock always had
        self.t1_threshold = self.form["t1_threshold"].native
        self.t2_threshold = self.form["t2_threshold"].native
        self.k_sigma = self.form["k_sigma"].native
        self.k_sigma_grow = self.form["k_sigma_grow"].native
        self.min_size = self.form["min_size"].native
        self.opening = self.form["opening"].native
        self.live = QCheckBox("Live preview")
        form.addRow("", self.live)
        layout.addWidget(box)

        self.run_row = RunRow(layout, "Confirm", on_run=self.run, owner=self)  # run_button, status, runner...
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("color: #D55E00; font-weight: bold;")  # Okabe-Ito vermillion
        self.export_button = QPushButton("Export labels and table...")
        self.export_button.setEnabled(False)
        layout.addWidget(self.banner)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self._timer = debounce_timer(self, 300, self.run)
        self.export_button.clicked.connect(self._export_dialog)
        for widget in self.form.values():
            widget.changed.connect(self._parameters_changed)
        self.live.toggled.connect(self._parameters_changed)
        for combo in self.combos.values():
            combo.currentIndexChanged.connect(self._parameters_changed)
        self.pickers.follow()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _guess(key: str, names) -> str | None:
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
            is_pre = looks_pre_injection(name)
            if is_map == want_map and is_pre == want_pre:
                return name
        return None

    def select(self, **layer_names) -> None:
        """Choose inputs by layer name, e.g. ``select(t1_post="T1w_post", t2_pre=None)`` (None = none)."""
        self.pickers.select(**layer_names)

    def _volume(self, key):
        layer = self.pickers.layer(key)
        return None if layer is None else layer_to_volume(layer)

    def parameters(self) -> dict:
        """Every parameter of :data:`CONFIRM_PARAMETERS`: the form's values and the others'."""
        values = {**self.other_parameters, **form_values(self.form)}
        values["k_sigma_grow"] = min(values["k_sigma_grow"], values["k_sigma"])  # never stricter than starting
        return values

    # ------------------------------------------------------------------ study state (through the model)
    def state_parameters(self) -> dict:
        """What the study state saves of this dock: every model parameter, live preview, the chosen layers."""
        state = CONFIRM_PARAMETERS.to_state({**self.other_parameters, **form_values(self.form)})
        state["live"] = self.live.isChecked()
        state["inputs"] = self.pickers.names(self.combos)
        return state

    def set_state_parameters(self, values: dict) -> None:
        """Show a saved state's values: missing ones take the model's default, bad ones are reported."""
        values = {_LEGACY_STATE_KEYS.get(k, k): v for k, v in dict(values).items()}
        params, problems = CONFIRM_PARAMETERS.from_state(values)
        self.live.setChecked(False)  # no run while the values change
        set_form_values(self.form, {k: v for k, v in params.items() if k in self.form})
        self.other_parameters = {k: v for k, v in params.items() if k not in self.form}
        for key, name in dict(values.get("inputs") or {}).items():
            if key in self.combos and self.combos[key].findText(str(name)) >= 0:
                self.combos[key].setCurrentText(str(name))
        self.live.setChecked(bool(values.get("live", False)))
        if problems:
            notify_error(InputError("T1-T2 confirmation: " + "; ".join(problems) + " (the default is used)."))

    # ------------------------------------------------------------------ running
    def _parameters_changed(self, *args) -> None:
        if self.live.isChecked():
            self._timer.start()

    def run(self) -> None:
        """Run the confirmation in a worker thread (queued if one is running)."""
        if self.run_row.busy():
            return
        try:
            self.pickers.check_distinct()  # one layer for T1w post and T2w post would "confirm" nothing
            volumes = {key: self._volume(key) for key, *_ in _INPUTS}
            if volumes["t1_post"] is None or volumes["t2_post"] is None:
                raise InputError("choose the post-injection T1w and T2w image layers.")
        except InputError as exc:
            notify_error(exc)
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
        self._reference = volumes["t1_post"]  # the display reference of the results
        # the baseline and the post both placed in the study's reference world by the saved session alignments
        post, pre = volumes["t1_post"], volumes.get("t1_pre")
        extra = {}
        if (
            pre is not None
            and pre.metadata.get("study_frame") == post.metadata.get("study_frame") == "reference"
            and not pre.same_grid(post)
        ):
            extra["pre_transform"] = np.eye(4)
        self.status.setText("running...")
        self.runner.start(
            confirm_dual_mode,
            **volumes,
            **self.parameters(),
            **extra,
            on_done=self._show,
            on_error=self._failed,
            guard=True,
        )

    def _failed(self, exc) -> None:
        self.run_row.fail(exc)
        self.run_row.run_pending(self.run)

    def _put(self, key: str, volume, reference, **style):
        """Add a result layer, or update ours in place (keeps the user's display settings)."""
        data, kwargs, layer_type = volume_layer_data(volume, reference=reference, as_labels=(key == "labels"), **style)
        layer = self.layers.get(key)
        if (
            layer is not None
            and layer in self.viewer.layers
            and layer.data.shape == data.shape
            and np.allclose(layer.scale, kwargs["scale"])
            and np.allclose(layer.translate, kwargs["translate"])
        ):
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
            self._put(
                key,
                vol,
                reference,
                colormap=_mask_colormap(key),
                blending="translucent",
                contrast_limits=(0, 1),
                opacity=0.9,
            )
        labels = result.labels.replace(name=LAYER_NAMES["labels"] if result.confirmed else "candidates (UNCONFIRMED)")
        previous = self.layers.get("labels")
        layer = self._put("labels", labels, reference, opacity=0.6)
        if layer is not previous:
            # hidden at first: drawn over the fusion it would hide the overlap colour of small regions
            # (and its random colours could pass for fusion colours); show it to edit the regions
            layer.visible = False
        self._show_table(result.table, "confirmed regions" if result.confirmed else "candidates (UNCONFIRMED)")
        n = len(result.table)
        if result.confirmed:
            self.status.setText(
                f"{n} confirmed region(s); T1: {result.mode['t1']}, T2: {result.mode['t2']}. "
                f"Show the '{layer.name}' layer to edit them."
            )
            self.banner.setText("")
        else:
            self.status.setText(f"{n} candidate region(s), UNCONFIRMED (no baseline)")
            self.banner.setText(UNCONFIRMED_WARNING)
            if self._last_status != "unconfirmed":  # once, not at every live-preview update
                from napari.utils.notifications import show_warning

                show_warning(UNCONFIRMED_WARNING)
        self._last_status = result.status
        self.export_button.setEnabled(True)
        self.pickers.refresh()
        self.run_row.run_pending(self.run)

    def _show_table(self, df, title: str) -> None:
        self.table_dock = replace_table_dock(self.viewer, self.table_dock, df, title)  # the table widget in the dock

    # ------------------------------------------------------------------ export
    def current_labels(self):
        """The (possibly hand-edited) regions as a Volume on T1POST's grid."""
        if self.result is None or self.layers.get("labels") not in self.viewer.layers:
            raise InputError("run the confirmation first (the regions layer is missing).")
        return labels_on_grid(self.layers["labels"], self.result.labels)

    def export(self, labels_path, table_path=None, overwrite: bool = False):
        """Write the (edited) labels as NIfTI on T1POST's grid and, if asked, the table as CSV.

        Both paths are checked before anything is written. Returns the table written.
        """
        from .. import provenance

        labels_path = check_labels_export(labels_path, table_path, overwrite)
        labels = self.current_labels()
        table = region_table(labels, self.result)
        edited = not np.array_equal(labels.numpy(), self.result.labels.numpy())
        inputs = {}
        for key, name in self._inputs_used.items():
            if name in self.viewer.layers:
                inputs[key] = layer_to_volume(self.viewer.layers[name])
        description = self.result.labels.metadata["description"]
        record = provenance.record(
            "confirm",
            inputs=inputs,
            parameters=dict(self.result.parameters, edited_by_hand=edited),
            warnings=self.result.warnings,
            status=self.result.status,
            confirmed=self.result.confirmed,
            description=description,
            regions=len(table),
            layers=self._inputs_used,
        )
        write_labels_export(labels, table, record, labels_path, table_path, overwrite, description=description)
        remember_saved(self.layers["labels"])  # exported: closing or a rerun no longer asks about it
        return table

    def _export_dialog(self) -> None:
        export_labels_dialog(
            self, self.status, "Save regions as NIfTI", "confirmed.nii.gz", "_regions.csv", self.export
        )


__all__ = ["ConfirmWidget", "LAYER_NAMES"]
