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
  :func:`follow_layers` refreshes when layers come, go or are renamed, and
  :class:`LayerPickers` is a form of such combo boxes keyed by input, which
  follow the Study dock's timepoint by role (:mod:`.roles`) unless pinned.
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

# the name heuristics live with the role logic (Qt-free); the docks import them from here
from .roles import looks_pre_injection, name_tokens, t2star_first  # noqa: F401

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
    if data.dtype == bool:  # a 1-bit image (mask): percentiles need numbers
        data = data.view(np.uint8)
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


def percentile_limits(data, lo_pct: float = 1.0, hi_pct: float = 99.0, symmetric: bool = False):
    """Display window of a computed map from percentiles of its finite values.

    Parameters
    ----------
    data : array-like
        The map (NaN and infinities are left out).
    lo_pct, hi_pct : float
        Percentiles of the window's ends.
    symmetric : bool
        A window centred on zero (difference or offset maps): +/- the ``hi_pct`` percentile of |data|.

    Returns
    -------
    tuple of float
        ``(low, high)`` with ``high > low``; (0, 1) for a map without finite values. A constant map
        gets a window 1 % of its value wide (1 when the value is 0) so its unit scale is kept.

    Examples
    --------
    >>> import numpy as np
    >>> percentile_limits(np.array([0.0, 1.0, 2.0, np.nan]), 0, 100)
    (0.0, 2.0)
    >>> percentile_limits(np.array([-3.0, 1.0]), symmetric=True, hi_pct=100)
    (-3.0, 3.0)
    >>> percentile_limits(np.full(4, 50.0))
    (50.0, 50.5)
    """
    values = np.asarray(data, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    if symmetric:
        top = float(np.percentile(np.abs(finite), hi_pct)) or 1.0
        return (-top, top)
    lo, hi = (float(v) for v in np.percentile(finite, [lo_pct, hi_pct]))
    return (lo, hi if hi > lo else lo + (abs(lo) * 0.01 or 1.0))


def is_nuclear(volume: Volume) -> bool:
    """True for a PET/SPECT image: modality PT or NM, or ``Units`` BQML, GML or CNTS in its header.

    Parameters
    ----------
    volume : Volume
        The image.

    Returns
    -------
    bool
        Whether the readout treats it as nuclear medicine (Bq/mL, SUV and %ID columns).

    Examples
    --------
    >>> cube = np.zeros((2, 2, 2))
    >>> is_nuclear(Volume(cube, np.eye(4), "PT")), is_nuclear(Volume(cube, np.eye(4), "MR"))
    (True, False)
    >>> is_nuclear(Volume(np.zeros((2, 2, 2)), np.eye(4), "OT", metadata={"Units": "BQML"}))
    True
    """
    return volume.modality in ("PT", "NM") or str(volume.metadata.get("Units", "")).upper() in ("BQML", "GML", "CNTS")


def suv_display_factor(volume: Volume) -> float | None:
    """SUVbw per stored value of a PET/SPECT Volume, or None when its header cannot give it.

    Parameters
    ----------
    volume : Volume
        A 3D image; only a nuclear-medicine one (:func:`is_nuclear`) is considered.

    Returns
    -------
    float or None
        The factor that turns the stored values into SUVbw (body weight in g over the decay-corrected
        injected activity in Bq, times the activity scale of the stored unit). None for other
        modalities, 4D data, a header without dose or weight, or ``DecayCorrection`` NONE (each frame
        would need its own decay factor).

    Examples
    --------
    10 MBq into a 25 g mouse: SUVbw = value x 25 g / 1e7 Bq.

    >>> header = {"Units": "BQML", "RadionuclideTotalDose": 1e7, "PatientWeight": 0.025, "DecayCorrection": "ADMIN"}
    >>> pet = Volume(np.full((2, 2, 2), 4e5, np.float32), np.eye(4), "PT", unit="Bq/mL", metadata=header)
    >>> suv_display_factor(pet)
    2.5e-06
    >>> no_header = Volume(np.zeros((2, 2, 2)), np.eye(4), "PT")
    >>> print(suv_display_factor(no_header), suv_display_factor(pet.replace(modality="MR", metadata={})))
    None None
    """
    if not is_nuclear(volume) or volume.data.ndim != 3:
        return None
    from ..analysis import pet as pet_mod

    # quiet header: this runs in worker threads, where warnings.catch_warnings is not thread-safe
    try:
        header = pet_mod.read_pet_header(volume, quiet=True)
        conc = pet_mod.activity_concentration(volume, header, need_dose=True)
        if header.decay_correction == "NONE":
            return None  # per-frame decay: one factor would be wrong
        factor = pet_mod.suv_factor(header, "bw") * conc.metadata["activity_scale"]
    except (InputError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return float(factor) if np.isfinite(factor) and factor > 0 else None


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


#: The first entry of an optional layer chooser.
NONE = "(none)"


def unwrapped(layer):
    """The layer itself: a plugin dock's viewer hands out a new proxy object at every access."""
    return getattr(layer, "__wrapped__", layer)


def same_layer(a, b) -> bool:
    """True when ``a`` and ``b`` are the same layer (proxied or not)."""
    return a is not None and b is not None and unwrapped(a) is unwrapped(b)


def layers_of(viewer, kinds, exclude=()) -> list:
    """The viewer's layers whose type name is in ``kinds`` ("Image", "Labels", ...), but not those in ``exclude``
    nor a Study track with no image at the current timepoint."""
    from .roles import holds_image_now

    skip = {id(unwrapped(layer)) for layer in exclude}
    return [
        ly
        for ly in viewer.layers
        if type(ly).__name__ in kinds and id(unwrapped(ly)) not in skip and holds_image_now(ly)
    ]


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


def follow_layers(viewer, refresh: Callable, on_rename: Callable | None = None) -> None:
    """Call ``refresh`` now and whenever a layer is added to or removed from the viewer.

    With ``on_rename``, that is also called whenever a layer is renamed: the Study dock renames
    its layers when the user steps to another timepoint (their data are swapped in place).
    """

    def watch(layer):
        if on_rename is not None:
            layer.events.name.connect(lambda *_: on_rename())

    def inserted(event=None):
        if event is not None and getattr(event, "value", None) is not None:
            watch(event.value)
        refresh()

    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(refresh)
    for layer in list(viewer.layers):
        watch(layer)
    refresh()


def organ_roi(viewer, names) -> str | None:
    """The organ ROI among ``names``: the Study's at its timepoint (:mod:`.roles`), else one named like it."""
    from .roles import assign_roles, guess_by_name, layer_facts

    chosen = assign_roles({"roi": "roi"}, [layer_facts(ly) for ly in viewer.layers])["roi"]
    return chosen if chosen in names else guess_by_name("roi", names)


class Coalesced:
    """Call ``func`` once from the event loop however many times :meth:`__call__` was called in one turn
    (a timepoint step renames a dozen layers: the docks refresh once, after the step)."""

    def __init__(self, parent, func: Callable[[], Any]):
        from qtpy.QtCore import QTimer

        self.timer = QTimer(parent)
        self.timer.setSingleShot(True)
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._fire)
        self.func = func
        self.pending = False

    def _fire(self) -> None:
        if self.pending:  # not done meanwhile (a step announcement refreshes at once)
            self.func()

    def __call__(self, *args) -> None:
        self.pending = True
        try:
            self.timer.start()
        except RuntimeError:  # the dock was closed
            pass


#: Text of a picker's follow/pin button.
FOLLOWS, AUTO, PINNED = "follows", "auto", "pinned"


class LayerPickers:
    """A form of layer choosers, one combo box a row, kept in step with the viewer's layers and the study.

    ``inputs`` holds ``(key, label, optional, kinds)`` rows: ``kinds`` are the layer type
    names offered ("Image", "Labels", "Shapes"); a required input's label gets " *".
    ``roles`` maps input keys to roles of :data:`~napari_immunotrack.widgets.roles.ROLES`: such an
    input *follows* the Study dock's timepoint (the layer playing that role now; see
    :mod:`.roles`). Other inputs, and every input when no study is loaded, are guessed by name
    (``guess(key, names)``). A choice the user makes in a combo box (or through :meth:`select`)
    *pins* that layer: it stays chosen when the timepoint changes, until the row's button is
    pressed again. The button says which: "follows" (the study), "auto" (by name) or "pinned".
    One layer chosen for two inputs is refused with a notification.
    Layers listed by ``exclude()`` (the widget's own outputs) are not offered.
    ``combos`` maps keys to the combo boxes, ``pin_buttons`` to the buttons.
    """

    def __init__(
        self,
        viewer,
        form,
        inputs,
        guess: Callable | None = None,
        exclude: Callable[[], Any] | None = None,
        roles: dict | None = None,
        parent=None,
    ):
        from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton

        self.viewer, self.inputs = viewer, tuple(inputs)
        self._guess, self._exclude = guess, exclude
        self.roles = dict(roles or {})
        self.labels = {key: label for key, label, *_ in self.inputs}
        self.combos: dict = {}
        self.pin_buttons: dict = {}
        self.pins: dict = {}  # key -> the layer chosen by the user (None: "(none)" chosen)
        self.context = None  # the last roles.StudyContext
        self.context_label = QLabel("")
        self.context_label.setWordWrap(True)
        self.context_label.setObjectName("study_context")
        form.addRow(self.context_label)
        for key, label, optional, _kinds in self.inputs:
            combo = QComboBox()
            combo.setObjectName(key)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
            button = QToolButton()
            button.setCheckable(True)
            button.setObjectName(f"{key}_pin")
            row = QHBoxLayout()
            row.addWidget(combo, 1)
            row.addWidget(button)
            self.combos[key], self.pin_buttons[key] = combo, button
            form.addRow(label + ("" if optional else " *"), row)
            combo.activated.connect(lambda _i, key=key: self._user_chose(key))
            button.clicked.connect(lambda on, key=key: self._button(key, on))
        self._later = Coalesced(parent, self.refresh) if parent is not None else None
        self._show_buttons()

    # ------------------------------------------------------------------ what is offered and chosen
    def _offered(self) -> dict:
        own = list(self._exclude()) if self._exclude is not None else []
        return {key: layers_of(self.viewer, kinds, own) for key, _label, _optional, kinds in self.inputs}

    def wanted(self) -> dict:
        """{key: layer name} the pickers should show now (pins, then roles, then guesses by name)."""
        from .roles import assign_roles, guess_by_name, layer_facts, study_context

        offered = self._offered()
        facts = [layer_facts(ly) for ly in self.viewer.layers]
        self.context = study_context(facts)
        for key, layer in list(self.pins.items()):
            if layer is not None and not any(same_layer(layer, ly) for ly in offered[key]):
                del self.pins[key]  # the pinned layer is gone: follow again
        following = {k: r for k, r in self.roles.items() if k not in self.pins}
        pinned = {self.roles[k]: ly.name for k, ly in self.pins.items() if k in self.roles and ly is not None}
        by_role = assign_roles(following, facts, pinned) if self.context.current is not None else {}
        out: dict = {}
        taken = {ly.name for ly in self.pins.values() if ly is not None}
        for key, _label, optional, _kinds in self.inputs:
            names = [ly.name for ly in offered[key]]
            if key in self.pins:
                out[key] = self.pins[key].name if self.pins[key] is not None else NONE
                continue
            name = by_role.get(key)
            if name is None and not (key in self.roles and self.context.current is not None and optional):
                # no study role here: guess by name (a required input of a study still needs a layer)
                free = [n for n in names if n not in taken]
                if self._guess is not None:
                    name = self._guess(key, free)
                elif key in self.roles:
                    name = guess_by_name(self.roles[key], free)
            if name is not None and name in names:
                out[key] = name
                taken.add(name)
            else:
                out[key] = NONE if optional else (names[0] if names else "")
        return out

    def refresh(self, event=None) -> None:
        """Offer the current layers again and choose what each picker follows (pins kept)."""
        if self._later is not None:
            self._later.pending = False
        offered = self._offered()
        wanted = self.wanted()
        for key, _label, optional, _kinds in self.inputs:
            combo = self.combos[key]
            names = [ly.name for ly in offered[key]]
            items = ([NONE] if optional else []) + names
            if [combo.itemText(i) for i in range(combo.count())] != items:
                combo.blockSignals(True)
                combo.clear()
                combo.addItems(items)
                combo.blockSignals(False)
            if combo.currentText() != wanted[key] and combo.findText(wanted[key]) >= 0:
                combo.setCurrentText(wanted[key])  # emits: the dock's "inputs changed" runs
        self.context_label.setText(self.context.describe() if self.context is not None else "")
        self._show_buttons()

    def _show_buttons(self) -> None:
        for key, button in self.pin_buttons.items():
            pinned = key in self.pins
            follows = key in self.roles and self.context is not None and self.context.current is not None
            button.blockSignals(True)
            button.setChecked(pinned)
            button.blockSignals(False)
            button.setText(PINNED if pinned else (FOLLOWS if follows else AUTO))
            button.setToolTip(
                "pinned: this layer stays chosen when the timepoint changes; click to follow again"
                if pinned
                else (
                    "follows the Study dock: the layer playing this role at the current timepoint "
                    "(choose one in the list to pin it)"
                    if follows
                    else "chosen by the layers' names (choose one in the list to pin it)"
                )
            )

    def _button(self, key: str, on: bool) -> None:
        if on:  # pin what is shown now
            self.pins[key] = self.layer(key)
        else:
            self.pins.pop(key, None)
        self.refresh()

    def _user_chose(self, key: str) -> None:
        """A choice made in a combo box: refused if that layer plays another input here, else pinned."""
        from .roles import check_distinct

        name = self.combos[key].currentText()
        chosen = {k: c.currentText() for k, c in self.combos.items() if c.currentText() not in (NONE, "")}
        try:
            check_distinct({k: v for k, v in chosen.items() if k != key} | {key: name}, self.labels)
        except InputError as exc:
            notify_error(exc)
            self.refresh()  # back to what it was
            return
        self.pins[key] = None if name in (NONE, "") else self.viewer.layers[name]
        self.refresh()

    def follow(self) -> None:
        """Refresh now, whenever layers come and go, and (once, after it) whenever the Study steps."""
        from .roles import listen_for_steps

        follow_layers(self.viewer, self.refresh, on_rename=self._later or self.refresh)
        listen_for_steps(self.viewer, self.refresh)

    # ------------------------------------------------------------------ reading the choice
    def select(self, **layer_names) -> None:
        """Choose (pin) inputs by layer name, e.g. ``select(post="T2starw_post", baseline=None)`` (None = none)."""
        for key, name in layer_names.items():
            if key not in self.combos:
                raise InputError(f"unknown input {key!r}; choose among {', '.join(self.combos)}.")
            choose(self.combos[key], name, f"no layer named {name!r} for {key}.")
            self.pins[key] = None if name is None else self.viewer.layers[name]
        self.refresh()

    def unpin(self, *keys) -> None:
        """Let inputs follow the study (or the names) again; no keys: all of them."""
        for key in keys or list(self.pins):
            self.pins.pop(key, None)
        self.refresh()

    def following(self) -> dict:
        """{key: "follows" | "auto" | "pinned"} as the buttons show it."""
        return {key: button.text() for key, button in self.pin_buttons.items()}

    def _fresh(self) -> None:
        if self._later is not None and self._later.pending:
            self.refresh()  # a step is not yet shown: never read a stale choice

    def layer(self, key: str):
        """The layer chosen for ``key`` (None when none)."""
        self._fresh()
        if self.pins.get(key) is not None:
            return self.pins[key]
        return chosen_layer(self.viewer, self.combos[key], f"for {key}")

    def names(self, keys) -> dict:
        """{key: chosen layer name} for ``keys`` (what a provenance record lists)."""
        self._fresh()
        return {k: self.combos[k].currentText() for k in keys}

    def check_distinct(self) -> None:
        """InputError when one layer is chosen for two inputs."""
        from .roles import check_distinct

        self._fresh()
        check_distinct({k: c.currentText() for k, c in self.combos.items() if c.currentText() != NONE}, self.labels)


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
        from qtpy.QtWidgets import QDockWidget

        try:
            dock = old  # its dock: the table may sit in a scroll area (widgets/_dock.make_scrollable)
            while dock is not None and not isinstance(dock, QDockWidget):
                dock = dock.parentWidget()
            viewer.window.remove_dock_widget(dock if dock is not None else old)
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
            if isinstance(value, (float, np.floating)):
                text = "" if not np.isfinite(value) else f"{value:.4g}"  # a blank, not "nan", where nothing applies
            else:
                text = str(value)
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
