"""What every widget shares: layers <-> Volumes, modality defaults, a worker
with progress and Cancel, error notifications, and a findings table dock.

Conventions
-----------
- A layer made from a Volume carries the native Volume in
  ``layer.metadata["volume"]`` (its own grid and affine, never resampled) and
  shows ``volume.for_display()``: canonical S, A, R axes, positioned with
  ``scale``/``translate`` in napari's world order (S, A, R) mm.
- :func:`layer_to_volume` gives back the native Volume when the layer's data
  are untouched, else builds one from the layer's data and its data-to-world
  transform; ``native=True`` then carries edited labels back onto the native
  grid (exact for a transposed/flipped display).
- Long work runs through :class:`TaskRunner`: a worker thread, a progress bar,
  a Cancel button; the pure function gets a ``progress`` callback that raises
  :class:`~napari_immunotrack.errors.Cancelled` when Cancel was pressed.
  :class:`RunRow` builds that row (Run, Cancel, progress bar, status line).
- Layer choosers: :func:`fill_combo` refills a combo box of layer names
  keeping the user's choice, :func:`chosen_layer` reads it back,
  :func:`follow_layers` refreshes when layers come and go, and
  :class:`LayerPickers` is a form of such combo boxes keyed by input.
- Saving: :func:`save_dialog` (one file) and :func:`export_labels_dialog`
  (labels as NIfTI and their table as CSV beside them) ask for the path,
  write, and report errors as notifications; :func:`check_labels_export` and
  :func:`write_labels_export` check both paths first, then write both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._notify import notify_error  # noqa: F401  (the docks import it from here)
from ..affines import REVERSE_AXES
from ..errors import Cancelled, InputError, one_line
from ..layer_content import array_fingerprint as _fingerprint  # old private name, used by the docks
from ..layer_geometry import data_to_world_matrix, data_to_world_points  # noqa: F401  (as above)
from ..volume import Volume, napari_to_ras, ras_to_napari

#: napari world order is (S, A, R): this swaps it with RAS (x, y, z) (old name of affines.REVERSE_AXES).
_SWAP = REVERSE_AXES

#: Modality display defaults: colormap, blending, whether values are "hot spots".
MODALITY_STYLE = {
    "MR": {"colormap": "gray", "blending": "translucent_no_depth"},
    "CT": {"colormap": "gray", "blending": "translucent_no_depth"},
    "PT": {"colormap": "inferno", "blending": "additive", "opacity": 0.7},
    "NM": {"colormap": "inferno", "blending": "additive", "opacity": 0.7},
    "F19": {"colormap": "magenta", "blending": "additive"},
    "MPI": {"colormap": "cyan", "blending": "additive"},
    "OPT": {"colormap": "green", "blending": "additive"},
    "OT": {"colormap": "gray", "blending": "translucent_no_depth"},
}


def contrast_limits_for(volume_data, modality: str):
    """Modality contrast preset.

    Anatomy: 0.5-99.5 percentile. PET/SPECT: 0 to the 99.9 percentile (body
    uptake stays visible). 19F, MPI and optical have no tissue background: the
    window starts above the noise (99th percentile) so only hot spots show.
    """
    data = np.asarray(volume_data)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return (0.0, 1.0)
    sample = finite if finite.size <= 2_000_000 else finite[:: finite.size // 2_000_000 + 1]
    if modality in ("PT", "NM"):
        lo, hi = min(0.0, float(sample.min())), float(np.percentile(sample, 99.9))
    elif modality in ("F19", "MPI", "OPT"):
        lo, hi = float(np.percentile(sample, 99.0)), float(sample.max())
    else:
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if not hi > lo:
        hi = lo + 1.0
    return (lo, hi)


def volume_layer_data(volume: Volume, reference: Volume | None = None, as_labels: bool = False, **overrides) -> tuple:
    """A napari LayerData tuple ``(data, kwargs, layer_type)`` for a Volume."""
    display = volume.for_display(reference=reference, order=0 if as_labels else 1)
    geometry = display.napari_geometry()
    metadata = {
        "volume": volume,
        "immunotrack": {
            "modality": volume.modality,
            "unit": volume.unit,
            "display_resampled": bool(display.metadata.get("display_resampled")),
        },
    }
    kwargs: dict[str, Any] = {
        "name": volume.name or volume.modality,
        "metadata": metadata,
        "units": ("pixel",) * (len(geometry["scale"]) - 3) + ("mm",) * 3,
        **geometry,
    }
    if as_labels or volume.modality == "SEG" or volume.unit == "label":
        kwargs.update(overrides)
        labels = np.asarray(display.numpy()).astype(np.int32, copy=False)
        metadata["_display_fingerprint"] = _fingerprint(labels)
        return labels, kwargs, "labels"
    style = dict(MODALITY_STYLE.get(volume.modality, MODALITY_STYLE["OT"]))
    data = display.data
    pyramid = volume.metadata.get("multiscale")
    if pyramid and volume.is_axis_aligned() and len(pyramid.get("arrays", [])) > 1:
        # a lazy pyramid (OME-Zarr): napari shows the level that fits the screen
        levels = [Volume(a, aff).canonical().data for a, aff in zip(pyramid["arrays"], pyramid["affines"])]
        data = levels
        kwargs["multiscale"] = True
        style["contrast_limits"] = contrast_limits_for(np.asarray(levels[-1]), volume.modality)
    else:
        style["contrast_limits"] = contrast_limits_for(display.numpy(), volume.modality)
    metadata["_display_fingerprint"] = _fingerprint(data)
    kwargs.update(style)
    kwargs.update(overrides)
    if volume.data.ndim == 4 and volume.metadata.get("leading_axis") == "channel":
        kwargs["channel_axis"] = 0
        kwargs.pop("colormap", None)
        kwargs["scale"], kwargs["translate"] = geometry["scale"][1:], geometry["translate"][1:]
        kwargs["units"] = ("mm",) * 3
    return data, kwargs, "image"


def add_volume(viewer, volume: Volume, reference: Volume | None = None, as_labels: bool = False, **overrides):
    """Add a Volume to the viewer in world millimetres with modality defaults; return the layer."""
    data, kwargs, layer_type = volume_layer_data(volume, reference=reference, as_labels=as_labels, **overrides)
    if layer_type == "labels":
        return viewer.add_labels(data, **kwargs)
    return viewer.add_image(data, **kwargs)


def layer_affine_ras(layer) -> np.ndarray:
    """The layer's data index -> world RAS mm 4x4 affine (last three axes)."""
    matrix = data_to_world_matrix(layer)  # napari world order
    n = matrix.shape[0] - 1
    if n < 3:
        raise InputError(f"layer {layer.name!r} is {n}D; a 3D layer is needed.")
    spatial = np.eye(4)
    spatial[:3, :3] = matrix[n - 3 : n, n - 3 : n]
    spatial[:3, 3] = matrix[n - 3 : n, n]
    return _SWAP @ spatial


def layer_to_volume(layer, native: bool = True) -> Volume:
    """The Volume behind a layer (see module docstring)."""
    stored = layer.metadata.get("volume") if hasattr(layer, "metadata") else None
    data = layer.data
    if isinstance(data, list):  # multiscale: level 0
        data = data[0]
    if stored is not None and not _data_changed(layer, stored):
        return stored
    affine = layer_affine_ras(layer)
    is_labels = type(layer).__name__ == "Labels"
    if stored is not None:
        modality, unit, meta = stored.modality, stored.unit, dict(stored.metadata)
    else:
        modality, unit, meta = ("SEG", "label", {}) if is_labels else ("OT", "a.u.", {})
    if is_labels:
        modality, unit = "SEG", "label"
    vol = Volume(np.asarray(data), affine, modality=modality, unit=unit, metadata=meta, name=layer.name)
    if (
        native
        and stored is not None
        and vol.spatial_shape != stored.spatial_shape
        and int(np.prod(vol.spatial_shape)) == int(np.prod(stored.spatial_shape))
    ):
        vol = vol.resample_to(stored, order=0)
    elif (
        native
        and stored is not None
        and vol.spatial_shape == stored.spatial_shape
        and not np.allclose(vol.affine, stored.affine, atol=1e-6)
    ):
        vol = vol.resample_to(stored, order=0)
    return vol


def _data_changed(layer, stored: Volume) -> bool:
    """True when the layer's array is no longer the display of ``stored`` (edited labels)."""
    token = layer.metadata.get("_display_fingerprint")
    current = _fingerprint(layer.data)
    if current is None:  # lazy data cannot have been edited in place
        return False
    return token != current


def shapes_to_mask(shapes_layer, reference: Volume) -> Volume:
    """Rasterise a Shapes layer (polygons/rectangles/ellipses drawn on slices) onto ``reference``'s grid.

    Each shape's vertices go to world, then to the reference's canonical display
    grid, where the polygon is filled on the slice it was drawn on; the mask is
    carried back to the native grid (nearest neighbour, exact for a transposed grid).
    """
    from skimage.draw import polygon as fill_polygon

    display = reference.for_display(order=0)
    mask = np.zeros(display.spatial_shape, np.uint8)
    for vertices in shapes_layer.data:
        world_napari = data_to_world_points(shapes_layer, vertices)[:, -3:]
        idx = display.world_to_index(napari_to_ras(world_napari))
        z = np.round(idx[:, 0]).astype(int)
        if np.ptp(z) > 0:
            raise InputError("a shape spans several slices; draw ROIs on one axial slice per shape.")
        if not 0 <= z[0] < mask.shape[0]:
            continue
        rr, cc = fill_polygon(idx[:, 1], idx[:, 2], shape=mask.shape[1:])
        mask[z[0], rr, cc] = 1
    vol = Volume(mask, display.affine, modality="SEG", unit="label", name=shapes_layer.name)
    return vol.resample_to(reference, order=0) if not vol.same_grid(reference) else vol


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (``viewer.camera`` is deprecated)."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def center_on_world(viewer, ras_point) -> None:
    """Move every view (slider and camera) to a world RAS point in mm."""
    point = ras_to_napari(np.asarray(ras_point, float))
    ndim = viewer.dims.ndim
    full = list(viewer.dims.point)
    full[ndim - 3 :] = point.tolist()
    viewer.dims.point = full
    displayed = list(viewer.dims.displayed)
    viewer_camera(viewer).center = tuple(full[d] for d in displayed)


class Failed:
    """An exception carried back from a worker as its result (shown as one notification)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def guarded(func: Callable) -> Callable:
    """``func`` returning its exception as a :class:`Failed` instead of raising it: the GUI thread then
    shows it as one notification (superqt's worker would also re-raise it into Qt's event loop)."""

    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error is shown to the user, none is lost
            return Failed(exc)

    return call


class TaskRunner:
    """Run a pure function in a worker thread with a progress bar and Cancel.

    ``func`` must accept a ``progress`` keyword (see progress.py). Usage::

        runner = TaskRunner(progress_bar, cancel_button)
        runner.start(segment_clusters, post, progress_kw="progress", on_done=self._show)
    """

    def __init__(self, progress_bar=None, cancel_button=None, status_label=None):
        from qtpy.QtCore import QObject, Signal

        class _Relay(QObject):
            progressed = Signal(float, str)

        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.progress_bar = progress_bar
        self.cancel_button = cancel_button
        self.status_label = status_label
        self._cancel = threading.Event()
        self.worker = None
        if cancel_button is not None:
            cancel_button.clicked.connect(self.cancel)
            cancel_button.setEnabled(False)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        self._cancel.set()

    def _callback(self, fraction: float, message: str = "") -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")
        self._relay.progressed.emit(float(fraction), str(message))  # queued across threads

    def _on_progress(self, fraction: float, message: str) -> None:
        if self.progress_bar is not None:
            self.progress_bar.setValue(int(round(100 * fraction)))
        if self.status_label is not None:
            self.status_label.setText(message)

    def start(
        self,
        func: Callable,
        *args,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        progress_kw: str = "progress",
        guard: bool = False,
        **kwargs,
    ):
        """Start ``func(*args, progress=..., **kwargs)``; call ``on_done(result)`` in the GUI thread.

        ``on_error(exc)`` (default :func:`notify_error`) gets an exception raised by ``func`` and
        a :class:`Failed` returned by it; ``guard=True`` wraps ``func`` in :func:`guarded`.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise InputError("a computation is already running; wait for it or press Cancel.")
        self._cancel.clear()
        kwargs[progress_kw] = self._callback
        # errors are shown by on_error (a notification), not re-raised into the Qt loop
        if guard:
            func = guarded(func)
        worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        on_error = on_error or notify_error
        # a Failed result (see guarded) goes to on_error, in the GUI thread like any result
        worker.returned.connect(lambda result: on_error(result.exc) if isinstance(result, Failed) else on_done(result))
        worker.errored.connect(on_error)
        worker.finished.connect(self._finished)
        self.worker = worker
        if self.progress_bar is not None:
            self.progress_bar.setValue(0)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def _finished(self) -> None:
        self.worker = None
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)


class RunRow:
    """A Run and a Cancel button side by side, a progress bar and a word-wrapped status line,
    added to ``layout`` in that order and wired to a :class:`TaskRunner` (``self.runner``).

    With ``owner`` (the widget), the parts also become the owner's attributes ``run_button``,
    ``cancel_button``, ``progress_bar``, ``status`` and ``runner`` (what scripts and tests use).
    A run asked for while one is running is remembered (:meth:`busy`) and started when that
    one ends (:meth:`run_pending`)::

        self.run_row = RunRow(layout, "Find clusters", on_run=self.run, owner=self)
        def run(self):
            if self.run_row.busy():
                return
            ...
            self.runner.start(func, ..., on_done=self._show, on_error=self._failed)
    """

    PARTS = ("run_button", "cancel_button", "progress_bar", "status", "runner")

    def __init__(self, layout, run_text: str, on_run: Callable[[], None] | None = None, owner=None):
        from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton

        row = QHBoxLayout()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress_bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        self.runner = TaskRunner(self.progress_bar, self.cancel_button, self.status)
        self.pending = False
        if on_run is not None:
            self.run_button.clicked.connect(on_run)
        for part in self.PARTS if owner is not None else ():
            setattr(owner, part, getattr(self, part))

    def busy(self) -> bool:
        """True while a computation runs; the caller's run is then queued for :meth:`run_pending`."""
        if self.runner.running:
            self.pending = True
            return True
        return False

    def run_pending(self, run: Callable[[], None]) -> None:
        """Start ``run`` from the event loop if a run was asked for while the last one was running."""
        if self.pending:
            from qtpy.QtCore import QTimer

            self.pending = False
            QTimer.singleShot(0, run)

    def fail(self, exc: BaseException) -> None:
        """Show an error: a notification and one line in the status."""
        notify_error(exc)
        self.status.setText(one_line(exc))


def debounce_timer(parent, msec: int, slot: Callable[[], Any]):
    """A single-shot QTimer calling ``slot`` ``msec`` after its last ``start()`` (live previews)."""
    from qtpy.QtCore import QTimer

    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.timeout.connect(slot)
    return timer


def name_tokens(name: str) -> set:
    """The lower-case words of a layer name ("T2starw baseline (day 0)" -> {"t2starw", "baseline", "day", "0"})."""
    import re

    return {t for t in re.split(r"[^a-z0-9]+", name.lower()) if t}


def looks_pre_injection(name: str) -> bool:
    """True for a layer name of a baseline: "pre", "baseline", "day0"/"d0" or "(day 0)" (not "day 0.5")."""
    import re

    return (
        bool(name_tokens(name) & {"pre", "baseline", "day0", "d0"})
        or re.search(r"\bday[\s_-]*0(?![\d.])", name.lower()) is not None
    )


def t2star_first(names) -> list:
    """``names`` ordered for iron detection: T2*-weighted/SWI first, then other T2, then the rest."""

    def rank(name):
        tokens = name_tokens(name)
        if tokens & {"t2starw", "t2star", "t2s", "swi", "gre"} or "t2*" in name.lower():
            return 0
        return 1 if any(t.startswith("t2") for t in tokens) else 2

    return sorted(names, key=rank)  # stable: the viewer's order among equals


#: The first entry of an optional layer chooser.
NONE = "(none)"


def layers_of(viewer, kinds, exclude=()) -> list:
    """The viewer's layers whose type name is in ``kinds`` ("Image", "Labels", ...), but not those in ``exclude``."""
    skip = {id(layer) for layer in exclude}
    return [ly for ly in viewer.layers if type(ly).__name__ in kinds and id(ly) not in skip]


def fill_combo(combo, names, optional: bool = False, guess: str | None = None) -> None:
    """Refill a combo box of layer names without emitting signals.

    The current choice stays if it is still offered; otherwise ``guess`` (if offered)
    is chosen, else the first entry. ``optional`` puts :data:`NONE` first.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    if optional:
        combo.addItem(NONE)
    combo.addItems(list(names))
    if current in names or (optional and current == NONE):
        combo.setCurrentText(current)
    else:
        combo.setCurrentIndex(0)
        if guess and guess in names:
            combo.setCurrentText(guess)
    combo.blockSignals(False)


def chosen_layer(viewer, combo, what: str):
    """The layer named in ``combo`` (None for :data:`NONE` or nothing); InputError if it is gone.

    ``what`` completes the message: "the layer 'x' chosen {what} is gone", e.g. "for post".
    """
    name = combo.currentText()
    if not name or name == NONE:
        return None
    if name not in viewer.layers:
        raise InputError(f"the layer {name!r} chosen {what} is gone; choose another.")
    return viewer.layers[name]


def choose(combo, name: str | None, missing: str) -> None:
    """Choose ``name`` (None: :data:`NONE`) in a combo box; InputError(``missing``) if it is not offered."""
    text = NONE if name is None else name
    if combo.findText(text) < 0:
        raise InputError(missing)
    combo.setCurrentText(text)


def follow_layers(viewer, refresh: Callable) -> None:
    """Call ``refresh`` now and whenever a layer is added to or removed from the viewer."""
    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)
    refresh()


class LayerPickers:
    """A form of layer choosers, one combo box a row, kept in step with the viewer's layers.

    ``inputs`` holds ``(key, label, optional, kinds)`` rows: ``kinds`` are the layer type
    names offered ("Image", "Labels", "Shapes"); a required input's label gets " *".
    ``guess(key, names)`` pre-selects a layer by its name; layers listed by ``exclude()``
    (the widget's own outputs) are not offered. ``combos`` maps keys to the combo boxes.
    """

    def __init__(self, viewer, form, inputs, guess: Callable | None = None, exclude: Callable[[], Any] | None = None):
        from qtpy.QtWidgets import QComboBox

        self.viewer, self.inputs = viewer, tuple(inputs)
        self._guess, self._exclude = guess, exclude
        self.combos: dict = {}
        for key, label, optional, _kinds in self.inputs:
            combo = QComboBox()
            combo.setObjectName(key)
            self.combos[key] = combo
            form.addRow(label + ("" if optional else " *"), combo)

    def refresh(self, event=None) -> None:
        """Offer the current layers again (keeping each choice that is still there)."""
        own = list(self._exclude()) if self._exclude is not None else []
        for key, _label, optional, kinds in self.inputs:
            names = [ly.name for ly in layers_of(self.viewer, kinds, own)]
            guess = self._guess(key, names) if self._guess is not None else None
            fill_combo(self.combos[key], names, optional, guess)

    def follow(self) -> None:
        """Refresh now and whenever layers come and go."""
        follow_layers(self.viewer, self.refresh)

    def select(self, **layer_names) -> None:
        """Choose inputs by layer name, e.g. ``select(post="T2starw_post", baseline=None)`` (None = none)."""
        for key, name in layer_names.items():
            if key not in self.combos:
                raise InputError(f"unknown input {key!r}; choose among {', '.join(self.combos)}.")
            choose(self.combos[key], name, f"no layer named {name!r} for {key}.")

    def layer(self, key: str):
        """The layer chosen for ``key`` (None when none)."""
        return chosen_layer(self.viewer, self.combos[key], f"for {key}")

    def names(self, keys) -> dict:
        """{key: chosen layer name} for ``keys`` (what a provenance record lists)."""
        return {k: self.combos[k].currentText() for k in keys}


def _write_and_report(write: Callable[[], Any], status, text: str) -> None:
    try:
        write()
    except Exception as exc:  # shown, never raised into Qt's event loop
        notify_error(exc)
        return
    if status is not None:
        status.setText(text)


def save_dialog(parent, status, caption: str, default_name: str, file_filter: str, write: Callable[[str], Any]) -> None:
    """Ask for a file, then ``write(path)``; "saved <path>" in ``status`` or one notification on error.

    The file dialog itself asks before replacing a file, so ``write`` may overwrite.
    """
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, caption, default_name, file_filter)
    if path:
        _write_and_report(lambda: write(path), status, f"saved {path}")


def export_labels_dialog(
    parent, status, caption: str, default_name: str, table_suffix: str, export: Callable[..., Any]
) -> None:
    """Ask for a NIfTI path, then ``export(path, table_path, overwrite=True)``.

    The table goes beside the labels as ``<stem><table_suffix>`` (e.g. "_clusters.csv"); the
    file dialog asked about the NIfTI, so a question here asks before replacing the table.
    """
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    path, _ = QFileDialog.getSaveFileName(parent, caption, default_name, "NIfTI (*.nii.gz *.nii)")
    if not path:
        return
    name = Path(path).name
    stem = name[:-7] if name.lower().endswith(".nii.gz") else Path(path).stem
    table_path = Path(path).with_name(stem + table_suffix)
    if (
        table_path.exists()
        and QMessageBox.question(parent, "Replace?", f"{table_path} exists. Replace it?")
        != QMessageBox.StandardButton.Yes
    ):
        return
    _write_and_report(lambda: export(path, table_path, overwrite=True), status, f"saved {path} and {table_path.name}")


def labels_on_grid(layer, grid: Volume) -> Volume:
    """A (possibly hand-edited) Labels layer as a Volume on ``grid`` (the result it was shown from),
    with the grid's name and metadata."""
    vol = layer_to_volume(layer, native=True)
    if not vol.same_grid(grid):
        vol = vol.resample_to(grid, order=0)
    return vol.replace(name=grid.name, metadata=dict(grid.metadata), modality="SEG", unit="label")


def check_labels_export(labels_path, table_path=None, overwrite: bool = False, csv_table: bool = False) -> Path:
    """Refuse an export before anything is written: the labels must be NIfTI, neither file may exist
    (unless ``overwrite``); ``csv_table`` also asks for a ``.csv`` table. Returns the labels path."""
    from ..outputs import check_output

    labels_path = Path(labels_path)
    if not labels_path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{labels_path}: labels are written as NIfTI (.nii or .nii.gz).")
    check_output(labels_path, overwrite)
    if table_path is not None:
        if csv_table and not str(table_path).lower().endswith(".csv"):
            raise InputError(f"{table_path}: the table is written as CSV (.csv).")
        check_output(table_path, overwrite)
    return labels_path


def write_labels_export(
    labels: Volume, table, record: dict, labels_path, table_path=None, overwrite: bool = False, description: str = ""
) -> None:
    """Write labels (NIfTI) and, if ``table_path``, their table (CSV), each with the provenance ``record``."""
    from ..io import save_labels
    from ..outputs import write_table

    save_labels(labels, labels_path, overwrite=overwrite, provenance=record, description=description)
    if table_path is not None:
        write_table(table, table_path, provenance=record, overwrite=overwrite)


def replace_table_dock(viewer, old, df, name: str):
    """Dock a findings table (:func:`show_table_dock`) in place of ``old`` (if still open); return it."""
    if old is not None:
        try:
            viewer.window.remove_dock_widget(old)
        except (LookupError, ValueError, RuntimeError):  # already closed by the user
            pass
    return show_table_dock(viewer, df, name)


def table_widget(df, on_row_clicked: Callable[[int], None] | None = None):
    """A read-only QTableWidget showing a DataFrame; ``on_row_clicked(row_index)`` on click."""
    from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

    table = QTableWidget(len(df), len(df.columns))
    table.setHorizontalHeaderLabels([str(c) for c in df.columns])
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    for r, row in enumerate(df.itertuples(index=False)):
        for c, value in enumerate(row):
            text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()
    if on_row_clicked is not None:
        table.cellClicked.connect(lambda row, _col: on_row_clicked(row))
    return table


def centroid_of_row(df, row: int):
    """The RAS centroid (mm) of a table row with centroid_x_mm/centroid_y_mm/centroid_z_mm columns."""
    return np.array([df.iloc[row][f"centroid_{a}_mm"] for a in "xyz"], float)


def show_table_dock(viewer, df, name: str, centre_on_click: bool = True):
    """Dock a findings table; clicking a row with centroid columns centres the views on it."""
    has_centroids = {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"} <= set(df.columns)
    on_click = (
        (lambda row: center_on_world(viewer, centroid_of_row(df, row))) if centre_on_click and has_centroids else None
    )
    table = table_widget(df, on_click)
    viewer.window.add_dock_widget(table, name=name, area="right")
    return table


def cursor_plot_panel(layout, figsize, margins: dict, min_height: int):
    """The ROI-mean switch, its label picker and a matplotlib canvas of one axes, added to ``layout``.

    Used by the Maps dock's tabs, whose plots follow the cursor: the margins are fixed because an
    automatic layout on every redraw would cost most of the 100 ms budget of a cursor update.
    Returns ``(roi_check, roi_combo, figure, canvas, axes)``; the caller adds the canvas where it wants.
    """
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure
    from qtpy.QtWidgets import QCheckBox, QComboBox

    roi_check = QCheckBox("Plot the mean over the ROI label under the cursor")
    roi_combo = QComboBox()
    layout.addWidget(roi_check)
    layout.addWidget(roi_combo)
    figure = Figure(figsize=figsize)
    figure.subplots_adjust(**margins)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(min_height)
    return roi_check, roi_combo, figure, canvas, figure.add_subplot(111)
