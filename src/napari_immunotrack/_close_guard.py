"""No lost work in napari: offer to save edited labels, ROIs and landmarks when the window closes.

:func:`install_close_guard` (idempotent; call it when a plugin widget or the
study viewer opens) watches the user's ways of closing a napari window: the
window's close button, File > Close Window and File > Exit. When a Labels,
Shapes or Points layer holds work that was not saved, a dialog offers
**Save** (every such layer into one chosen folder, never replacing a file),
**Discard** or **Cancel** (the window stays open, the work intact). Closing
from code (``viewer.close()`` in scripts and tests) is not interrupted.
:func:`offer_to_save` asks the same before the Study dock replaces or removes
edited layers (another timepoint, subject or study; reopening a state).

What counts as unsaved, by content fingerprint (see
:mod:`napari_immunotrack.layer_content`, which holds the fingerprints and the saved registry):

- a layer made by the plugin from a file or an analysis keeps the
  fingerprint of what it showed (``metadata["_display_fingerprint"]``): it is
  unsaved once edited;
- a layer the user made (no such fingerprint) is unsaved once it holds
  something (a non-zero label, a point, a shape);
- a layer whose content was saved since, through this guard, the plugin's
  labels writer (File > Save Layers, "NIfTI labels") or :func:`remember_saved`,
  is not.

Labels are written as NIfTI on their source grid (the plugin's writer);
Points and Shapes as CSV of world RAS millimetres (``x_mm, y_mm, z_mm``, the
landmark format ``immunotrack register --fixed-points`` reads), atomically,
each with its provenance sidecar.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path

import numpy as np

from .layer_content import EDITABLE_KINDS as _KINDS  # noqa: F401
from .layer_content import content_fingerprint, is_unsaved, remember_saved, unsaved_layers
from .layer_content import layer_kind as _kind


def offer_to_save(parent, layers, action: str = "closing") -> bool:
    """Before ``action`` ("closing", "showing day 3"...) removes or replaces ``layers``, ask Save / Discard /
    Cancel about those holding unsaved work. True when the action may go on: nothing unsaved, saved now
    (into a folder the user picks, never over a file) or discarded; False keeps everything as it is."""
    from napari.utils.notifications import show_info

    from ._notify import notify_error

    try:
        layers = [layer for layer in layers if is_unsaved(layer)]
    except Exception as exc:  # never trap the user: a failed check does not block the action
        notify_error(exc)
        return True
    if not layers:
        return True
    choice = ask_unsaved(parent, [layer.name for layer in layers], action)
    if choice == "discard":
        return True
    if choice != "save":
        return False
    folder = choose_folder(parent, _start_folder(layers))
    if not folder:
        return False
    try:
        paths = save_layers(layers, folder)
    except Exception as exc:  # the work stays where it is
        notify_error(exc)
        return False
    show_info(f"saved {len(paths)} layer(s) to {folder}: " + ", ".join(p.name for p in paths))
    return True


# ------------------------------------------------------------------------ saving
def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "layer"


def _free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem_2``, ``stem_3``... so that no existing file is ever replaced."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists() or path.with_name(path.name + ".provenance.json").exists():
        n += 1
        path = folder / f"{stem}_{n}{suffix}"
    return path


def _world_ras(layer, data) -> np.ndarray:
    """Layer data coordinates (N, D) -> world RAS mm (N, 3)."""
    from .affines import napari_to_ras
    from .layer_geometry import data_to_world_points

    return napari_to_ras(data_to_world_points(layer, data)[:, -3:])


def save_layer(layer, folder) -> Path:
    """Write one layer into ``folder`` under a name not taken yet; returns the path."""
    import pandas as pd

    from . import provenance
    from .errors import InputError
    from .outputs import write_table

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; choose an existing folder to save into.")
    kind, stem = _kind(layer), _safe_name(layer.name)
    if kind == "Labels":
        from ._writer import write_labels

        path = _free_path(folder, stem, ".nii.gz")
        data, meta, _ = layer.as_layer_data_tuple()
        write_labels(str(path), data, meta)  # the plugin's writer: NIfTI on the source grid, with provenance
    else:
        path = _free_path(folder, stem, ".csv")
        if kind == "Points":
            xyz = _world_ras(layer, layer.data) if len(layer.data) else np.zeros((0, 3))
            table = pd.DataFrame({"x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2]})
        else:
            rows = []
            for i, (shape, shape_type) in enumerate(zip(layer.data, layer.shape_type)):
                for j, (x, y, z) in enumerate(_world_ras(layer, shape)):
                    rows.append({"shape": i, "shape_type": shape_type, "vertex": j, "x_mm": x, "y_mm": y, "z_mm": z})
            table = pd.DataFrame(rows, columns=["shape", "shape_type", "vertex", "x_mm", "y_mm", "z_mm"])
        record = provenance.record(
            "napari-layer-save", parameters={"layer": layer.name, "kind": kind, "coordinates": "world RAS mm"}
        )
        write_table(table, path, provenance=record)
    remember_saved(layer)
    return path


def save_layers(layers, folder) -> list[Path]:
    """Save each layer into ``folder`` (see :func:`save_layer`)."""
    return [save_layer(layer, folder) for layer in layers]


# ------------------------------------------------------------------------ the dialog (tests replace these)
def ask_unsaved(parent, names: list[str], action: str = "closing") -> str:
    """Ask Save / Discard / Cancel about the unsaved layers before ``action``; returns "save", "discard" or
    "cancel"."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Unsaved work")
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    box.setText(f"{len(names)} layer(s) have changes that were not saved: {shown}.")
    box.setInformativeText(
        f"Save them before {action}? Labels are saved as NIfTI on their source grid, "
        "points and shapes as CSV in world millimetres."
    )
    box.setStandardButtons(
        QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel
    )
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = box.exec()
    return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
        QMessageBox.StandardButton(answer), "cancel"
    )


def choose_folder(parent, start: str) -> str | None:
    """The folder to save into, or None when the user cancels."""
    from qtpy.QtWidgets import QFileDialog

    folder = QFileDialog.getExistingDirectory(parent, "Save the unsaved layers into", start)
    return folder or None


def _start_folder(layers) -> str:
    for layer in layers:
        volume = layer.metadata.get("volume")
        source = getattr(volume, "metadata", {}).get("source_path") if volume is not None else None
        if source:
            return str(Path(source).parent)
    return str(Path.home())


# ------------------------------------------------------------------------ the guard
class _CloseGuard:
    """Asks before a user-initiated close of one napari window.

    Holds the viewer and the window by weak reference only, so that it never
    keeps a closed viewer alive.
    """

    def __init__(self, viewer):
        from qtpy.QtCore import QEvent, QObject

        window = viewer.window._qt_window
        self._viewer = weakref.ref(viewer)
        self._window = weakref.ref(window)
        guard = weakref.ref(self)

        class Filter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
                # the window's own close button: a spontaneous close event
                g = guard()
                if event.type() == QEvent.Type.Close and event.spontaneous() and g is not None and not g.may_close():
                    event.ignore()
                    return True
                return False

        self.filter = Filter(window)  # owned by the window (Qt parent)
        window.installEventFilter(self.filter)
        # File > Close Window and File > Exit call close(..., confirm_need=True); viewer.close() does not
        win = weakref.ref(window)

        def close(quit_app=False, confirm_need=False):
            g = guard()
            if confirm_need and g is not None and not g.may_close():
                return None
            return type(win()).close(win(), quit_app=quit_app, confirm_need=confirm_need)

        window.close = close

    @property
    def viewer(self):
        return self._viewer()

    @property
    def window(self):
        return self._window()

    def may_close(self) -> bool:
        """True when the window may close: nothing unsaved, saved now, or discarded."""
        viewer, window = self.viewer, self.window
        if viewer is None or window is None:
            return True
        return offer_to_save(window, list(viewer.layers), "closing")


#: napari Qt window -> its guard (weak keys: a closed window takes its guard with it)
_GUARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def install_close_guard(viewer):
    """Offer to save unsaved labels, shapes and points when ``viewer``'s window is closed by the user.

    Idempotent: a second call on the same viewer does nothing. Returns the guard.

    Examples
    --------
    >>> viewer = napari.Viewer()             # doctest: +SKIP
    >>> install_close_guard(viewer)          # doctest: +SKIP
    """
    # a plugin widget gets the viewer behind napari's PublicOnlyProxy; the guard needs the Qt main window,
    # which napari 0.9 offers only privately, so it works on the viewer itself
    viewer = getattr(viewer, "__wrapped__", viewer)
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is None:  # a headless ViewerModel: nothing to guard
        return None
    guard = _GUARDS.get(window)
    if guard is None:
        guard = _GUARDS[window] = _CloseGuard(viewer)
    return guard


__all__ = [
    "install_close_guard",
    "unsaved_layers",
    "is_unsaved",
    "offer_to_save",
    "save_layer",
    "save_layers",
    "remember_saved",
    "content_fingerprint",
]
