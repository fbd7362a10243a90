"""Saving and reopening the Study dock's state (Qt side of :mod:`napari_immunotrack.study`).

:class:`StudyStateMixin` gives the dock :meth:`~StudyStateMixin.save_state`,
:meth:`~StudyStateMixin.open_state` and :meth:`~StudyStateMixin.current_state`:
layers (study files by path and hash, user-drawn labels as NIfTI beside the
JSON), their display settings and affine adjustments, the parameters of every
dock (a dock with ``state_parameters()`` / ``set_state_parameters()`` saves
its own; others are read generically) and the view. The file format and its
checks are :mod:`napari_immunotrack.study`'s. See ``docs/methods/study-viewer.md``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QWidget

from ...errors import InputError, one_line
from .._common import layer_to_volume, viewer_camera, volume_layer_data
from .planes import PLANES
from .three_plane import ThreePlaneView

#: Layer properties saved in a study state (images / labels).
_IMAGE_PROPS = ("visible", "opacity", "blending", "contrast_limits", "gamma")
_LABELS_PROPS = ("visible", "opacity", "blending", "contour")


class StudyStateMixin:
    """The state half of :class:`~napari_immunotrack.widgets.study.StudyWidget` (needs its attributes)."""

    def _open_state_dialog(self) -> None:
        start = str(self.study.root) if self.study is not None else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a study state", start, "Study state (*.json)")
        if path:
            self._guard(self.open_state, path)

    def _save_state_dialog(self) -> None:
        from ...study import default_state_path

        if self.study is None:
            self._tell("open a study first; there is nothing to save.", "warning")
            return
        # one question of ours (listing the state and its labels files) instead of Qt's about the JSON only
        start = str(self.state_path or default_state_path(self.study.root))
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the study state", start, "Study state (*.json)", options=QFileDialog.Option.DontConfirmOverwrite
        )
        if path:
            self._guard(self.save_state, path, overwrite=None)

    def current_state(self, state_path) -> tuple:
        """The state dictionary of what is shown, and the labels Volumes to save beside it.

        Returns (state, {relative NIfTI path: labels Volume}).
        """
        from ...provenance import sha256_path
        from ...study import new_state, saved_layers_dir

        if self.study is None:
            raise InputError("open a study first; there is nothing to save.")
        state_path = Path(state_path)
        state = new_state(self.study.root, state_path, self.subject, self.session)
        to_save = {}
        self._remember_adjustments()
        hashes: dict[Path, str] = {}
        used_names = set()
        for layer in self.viewer.layers:
            kind = type(layer).__name__.lower()
            entry = {"name": layer.name, "kind": kind}
            info = layer.metadata.get("immunotrack", {}) if hasattr(layer, "metadata") else {}
            role = info.get("study_role")
            ours = layer in self.track_layers.values() or layer in self.baseline_layers.values()
            if ours:
                entry.update(role=role, track=info.get("study_track"), session=info.get("study_session"))
                prepared = self._prepared_for(layer)
                if prepared is not None:
                    if prepared.source not in hashes:
                        hashes[prepared.source] = sha256_path(prepared.source)
                    entry.update(source=self.study.relative(prepared.source), sha256=hashes[prepared.source])
                    adj = self._layer_adjustment(layer)
                    if adj:
                        entry.update(adj)
            elif kind == "labels":
                volume = layer_to_volume(layer, native=True)
                safe = re.sub(r"[^A-Za-z0-9._-]+", "_", layer.name).strip("_") or "labels"
                while safe in used_names:
                    safe += "_"
                used_names.add(safe)
                rel = (saved_layers_dir(state_path).relative_to(state_path.parent) / f"{safe}.nii.gz").as_posix()
                to_save[rel] = volume.replace(name=layer.name)
                entry.update(saved=rel, modality=volume.modality)
                if volume.metadata.get("label_names"):
                    entry["label_names"] = {str(k): v for k, v in dict(volume.metadata["label_names"]).items()}
            else:
                entry["skipped"] = "not a study file nor a labels layer: recreate it with its widget"
            props = _LABELS_PROPS if kind == "labels" else _IMAGE_PROPS if kind == "image" else ("visible",)
            for prop in props:
                value = getattr(layer, prop, None)
                if value is None:
                    continue
                value = getattr(value, "value", value)
                entry[prop] = (
                    [float(v) for v in value]
                    if prop == "contrast_limits"
                    else (float(value) if isinstance(value, (float, np.floating)) else value)
                )
            if kind == "image":
                entry["colormap"] = layer.colormap.name
            state["layers"].append(entry)
        state["adjustments"] = self.model.adjustments_state()
        state["tracks_shown"] = sorted(t for t, on in self.shown.items() if on)
        state["parameters"] = self._collect_parameters()
        state["view"] = self._view_state()
        return state, to_save

    def save_state(self, path=None, overwrite: bool | None = None) -> Path | None:
        """Save the study state (JSON) and user-drawn labels (NIfTI beside it).

        ``overwrite``: True replaces, False refuses (InputError), None asks
        the user (Yes/No) when the file exists. Returns the path, or None
        when the user said no (nothing written). Labels are written under new
        names and the JSON last, so a crash keeps the old state or the new one
        (see :func:`study.save_state_with_labels`).
        """
        from ..._close_guard import remember_saved
        from ...study import default_state_path, save_state_with_labels

        if self.study is None:
            raise InputError("open a study first; there is nothing to save.")
        path = Path(path) if path else default_state_path(self.study.root)
        state, to_save = self.current_state(path)
        if path.exists() and overwrite is None:
            if not self.ask(
                "Replace the saved study state?",
                f"{path.name} exists in {path.parent}. Replace it (its labels files are replaced too)?",
            ):
                self._tell("not saved: the existing study state was kept.", "info")
                return None
            overwrite = True
        save_state_with_labels(state, path, to_save, overwrite=bool(overwrite))  # checks before writing
        for volume in to_save.values():  # the close guard no longer counts these as unsaved
            layer = _layer_named(self.viewer, volume.name)
            if layer is not None:
                remember_saved(layer)
        self.state_path = path
        self._tell(f"study state saved to {path}" + (f" with {len(to_save)} labels layer(s)" if to_save else ""))
        return path

    def open_state(self, path) -> object | None:
        """Reopen a saved study state: the study, the session, layers' settings and affines, ROIs, view.

        Missing or changed files are listed in one message (a moved study
        folder can be located); the rest opens. A corrupt file is reported
        and left untouched; the study already open stays.
        """
        from ...io import load_volume
        from ...study import check_state, load_state, state_study_root

        path = Path(path)
        state = load_state(path)
        check = check_state(state, path)
        root = state_study_root(state, path)
        if not check.root_exists:
            located = self.locate_folder(f"The study folder {root} is not there: locate it")
            if not located:
                raise InputError(
                    f"the study folder {root} of {path.name} is not there (moved or renamed?); "
                    "locate it to reopen the state."
                )
            root = Path(located)
            check = check_state(state, path, root=root)
        shown = state.get("tracks_shown")
        frame = (state.get("view") or {}).get("frame")
        if frame in ("reference", "native"):  # the saved point is in that frame's world
            self.frame_mode = frame
            self.reference_frame_box.blockSignals(True)
            self.reference_frame_box.setChecked(frame == "reference")
            self.reference_frame_box.blockSignals(False)
        if self.open_study(root, subject=state["subject"], session=state["session"], shown=shown) is None:
            return None  # the user kept the open study (edited layers not saved)
        self.state_path = path
        self.model.load_adjustments(state.get("adjustments", []))
        problems = []
        by_track = {("track", t): ly for t, ly in self.track_layers.items()}
        by_track.update({("baseline", t): ly for t, ly in self.baseline_layers.items()})
        order = []
        for entry in state["layers"]:
            name = entry["name"]
            layer = None
            if entry.get("track") and entry.get("role") in ("track", "baseline"):
                layer = by_track.get((entry["role"], entry["track"]))
                if layer is None:
                    if name not in check.missing:
                        problems.append(f"{name}: no such image in the study now")
                    continue
                if entry.get("role") == "track":
                    self._apply_adjustment(layer, self.session, entry["track"])
            elif entry.get("saved"):
                if name in check.missing:
                    continue
                try:
                    volume = load_volume(path.parent / entry["saved"])
                except InputError as exc:
                    problems.append(f"{name}: {one_line(exc)}")
                    continue
                volume = volume.replace(modality="SEG", unit="label", name=name)
                if entry.get("label_names"):
                    volume.metadata["label_names"] = {int(k): v for k, v in entry["label_names"].items()}
                data, kwargs, _ = volume_layer_data(volume, reference=self.reference, as_labels=True)
                existing = [ly for ly in self.viewer.layers if ly.name == name]
                if not self._may_replace(existing, f"replacing {name!r} by the saved one"):
                    problems.append(f"{name}: kept the layer open now (edited, not saved) instead of the saved one")
                    continue
                for old in existing:
                    self.viewer.layers.remove(old)
                layer = self.viewer.add_labels(data, **kwargs)
            else:
                continue
            _apply_props(layer, entry)
            order.append(layer)
        # the saved layer order
        for target, layer in enumerate(order):
            current = self.viewer.layers.index(layer)
            if current != target and target < len(self.viewer.layers):
                self.viewer.layers.move(current, target)
        self._apply_parameters(state.get("parameters") or {})
        self._apply_view(state.get("view") or {})
        message = check.message()
        if problems:
            message = "; ".join([m for m in (message, "; ".join(problems)) if m])
        if message:
            self._tell(f"{path.name}: {message}. The rest of the study opened.", "warning")
        else:
            self._tell(
                f"reopened {path.name}: day {self.study.day(self.subject, self.session):g}"
                if self.study.day(self.subject, self.session) is not None
                else f"reopened {path.name}"
            )
        self.refresh_findings()
        return check

    # ------------------------------------------------------------------ parameters and view
    def state_parameters(self) -> dict:
        """This dock's own parameters (saved in the study state)."""
        return {
            "link_windows": self.link_windows.isChecked(),
            "three_plane": self.three_plane is not None,
            "plane": self.plane_combo.currentText(),
        }

    def set_state_parameters(self, params: dict) -> None:
        if "link_windows" in params:
            self.link_windows.setChecked(bool(params["link_windows"]))
        if params.get("plane") in PLANES:
            self.set_plane(params["plane"])
        if "three_plane" in params:
            self.set_three_plane(bool(params["three_plane"]))

    def _plugin_docks(self) -> dict[str, QWidget]:
        """{dock name: inner widget} of the docked widgets (this one included)."""
        docks = getattr(self.viewer.window, "dock_widgets", {}) or {}  # napari 0.9: the inner widgets
        return {str(name): getattr(inner, "native", inner) for name, inner in dict(docks).items()}

    def _collect_parameters(self) -> dict:
        params = {"Study": self.state_parameters()}
        for name, widget in self._plugin_docks().items():
            if widget is self or isinstance(widget, ThreePlaneView):
                continue
            try:
                if hasattr(widget, "state_parameters"):
                    params[name] = dict(widget.state_parameters())
                else:
                    values = _widget_values(widget)
                    if values:
                        params[name] = values
            except Exception:  # noqa: BLE001 - a widget we cannot read is simply not saved
                continue
        return params

    def _apply_parameters(self, params: dict) -> None:
        if isinstance(params.get("Study"), dict):
            self.set_state_parameters(params["Study"])
        docks = self._plugin_docks()
        for name, values in params.items():
            widget = docks.get(name)
            if widget is None or widget is self or not isinstance(values, dict):
                continue
            try:
                if hasattr(widget, "set_state_parameters"):
                    widget.set_state_parameters(values)
                else:
                    _set_widget_values(widget, values)
            except Exception:  # noqa: BLE001
                continue

    def _view_state(self) -> dict:
        camera = viewer_camera(self.viewer)
        return {
            "ndisplay": int(self.viewer.dims.ndisplay),
            "frame": self.frame_mode,  # the world the point and the camera are in (reference or native)
            "order": [int(o) for o in self.viewer.dims.order],
            "point": [float(p) for p in self.viewer.dims.point],
            "camera": {
                "center": [float(c) for c in camera.center],
                "zoom": float(camera.zoom),
                "angles": [float(a) for a in camera.angles],
            },
        }

    def _apply_view(self, view: dict) -> None:
        if view.get("ndisplay") in (2, 3):
            self.set_ndisplay(view["ndisplay"])
        order = view.get("order")
        if isinstance(order, list) and sorted(order) == list(range(self.viewer.dims.ndim)):
            self.viewer.dims.order = tuple(order)
        point = view.get("point")
        if isinstance(point, list) and len(point) == self.viewer.dims.ndim:
            self.viewer.dims.point = tuple(point)
        camera = view.get("camera") or {}
        with contextlib.suppress(Exception):
            if camera.get("zoom"):
                viewer_camera(self.viewer).zoom = float(camera["zoom"])
            if camera.get("center"):
                viewer_camera(self.viewer).center = tuple(camera["center"])
            if camera.get("angles"):
                viewer_camera(self.viewer).angles = tuple(camera["angles"])


def _layer_named(viewer, name: str):
    """The viewer's layer of that name, or None (it may have been removed or renamed)."""
    try:
        return viewer.layers[name]
    except (KeyError, ValueError):
        return None


def _apply_props(layer, entry: dict) -> None:
    """Display settings of a state entry onto a layer (unknown or invalid ones are skipped)."""
    if "colormap" in entry and type(layer).__name__ == "Image":
        with contextlib.suppress(Exception):
            layer.colormap = entry["colormap"]
    if "contrast_limits" in entry and type(layer).__name__ == "Image":
        with contextlib.suppress(Exception):
            lo, hi = (float(v) for v in entry["contrast_limits"])
            r = layer.contrast_limits_range
            layer.contrast_limits_range = (min(lo, r[0]), max(hi, r[1]))
            layer.contrast_limits = (lo, hi)
    for prop in ("opacity", "blending", "gamma", "contour", "visible"):
        if prop in entry and hasattr(layer, prop):
            with contextlib.suppress(Exception):
                setattr(layer, prop, entry[prop])


def _widget_values(widget) -> dict:
    """Generic parameters of a widget: the values of its spin boxes, check boxes, combo boxes and line edits."""
    from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit

    values = {}
    counts: dict[str, int] = {}
    for child in widget.findChildren(QWidget):
        if isinstance(child, QAbstractSpinBox) and hasattr(child, "value"):
            value = child.value()
        elif isinstance(child, QCheckBox):
            value = child.isChecked()
        elif isinstance(child, QComboBox):
            value = child.currentText()
        elif isinstance(child, QLineEdit) and not isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            value = child.text()
        else:
            continue
        kind = type(child).__name__
        key = child.objectName() or f"{kind}{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        values[key] = value
    return values


def _set_widget_values(widget, values: dict) -> None:
    from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit

    counts: dict[str, int] = {}
    for child in widget.findChildren(QWidget):
        if not isinstance(child, (QAbstractSpinBox, QCheckBox, QComboBox, QLineEdit)):
            continue
        if isinstance(child, QLineEdit) and isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            continue
        if isinstance(child, QAbstractSpinBox) and not hasattr(child, "value"):
            continue
        kind = type(child).__name__
        key = child.objectName() or f"{kind}{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        if key not in values:
            continue
        value = values[key]
        with contextlib.suppress(Exception):
            if isinstance(child, QAbstractSpinBox):
                child.setValue(value)
            elif isinstance(child, QCheckBox):
                child.setChecked(bool(value))
            elif isinstance(child, QComboBox):
                if child.findText(str(value)) >= 0:
                    child.setCurrentText(str(value))
            else:
                child.setText(str(value))
