"""Unsaved labels, ROIs and landmarks are offered for saving when napari closes (needs Xvfb).

The Save / Discard / Cancel question and the folder chooser are replaced by
stand-ins that answer as a user would; everything else is the real napari
window and the real close paths (File > Close Window calls
``close(confirm_need=True)``; the close button sends a spontaneous close event).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack import _close_guard as guard_mod
from napari_immunotrack._close_guard import install_close_guard, unsaved_layers
from napari_immunotrack.io import load_volume, save_labels
from napari_immunotrack.volume import Volume
from napari_immunotrack.widgets._common import add_volume, layer_to_volume

pytestmark = pytest.mark.gui

# an oblique-free but flipped and permuted grid, so "on the source grid" means something
AFF = np.array([[0.0, 0.0, -0.5, 12.0], [0.0, 0.8, 0.0, -7.0], [2.0, 0.0, 0.0, 3.0], [0, 0, 0, 1.0]])


@pytest.fixture
def answers(monkeypatch):
    """The user's answers: set answers["choice"] / answers["folder"]; the questions asked are recorded."""
    state = {"choice": "cancel", "folder": None, "asked": []}

    def ask(parent, names, action="closing"):
        state["asked"].append(list(names))
        return state["choice"]

    monkeypatch.setattr(guard_mod, "ask_unsaved", ask)
    monkeypatch.setattr(guard_mod, "choose_folder", lambda parent, start: state["folder"])
    return state


@pytest.fixture
def viewer_with_labels(make_napari_viewer, tmp_path):
    """A viewer showing labels read from a NIfTI file (as the plugin's reader puts them), guard installed."""
    viewer = make_napari_viewer(show=True)
    data = np.zeros((6, 10, 8), np.uint8)
    data[1:3, 2:6, 3:5] = 2
    save_labels(Volume(data, AFF, "SEG", "label", name="organs"), tmp_path / "organs.nii.gz")
    source = load_volume(tmp_path / "organs.nii.gz")
    layer = add_volume(viewer, source.replace(modality="SEG", unit="label"), as_labels=True)
    guard = install_close_guard(viewer)
    return viewer, layer, guard, source


@pytest.fixture
def closed(monkeypatch):
    """Records the window closes the guard lets through (napari's own close runs only for viewer.close(),
    so that the test fixture can still tear the viewer down)."""
    from napari._qt.qt_main_window import _QtMainWindow

    real, done = _QtMainWindow.close, []

    def close(self, quit_app=False, confirm_need=False):
        if confirm_need:  # a user's close: it would close now
            done.append(quit_app)
            return True
        return real(self, quit_app=quit_app, confirm_need=confirm_need)

    monkeypatch.setattr(_QtMainWindow, "close", close)
    return done


def _close_from_menu(viewer):
    """What File > Close Window does."""
    return viewer.window._qt_window.close(quit_app=False, confirm_need=True)


def test_install_is_idempotent(viewer_with_labels):
    viewer, _, guard, _ = viewer_with_labels
    assert install_close_guard(viewer) is guard and install_close_guard(viewer) is guard


def test_unedited_layers_close_without_a_question(viewer_with_labels, answers, closed):
    viewer, layer, _, _ = viewer_with_labels
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="new and empty")
    viewer.add_points(np.zeros((0, 3)), name="no points yet")
    assert unsaved_layers(viewer) == []
    _close_from_menu(viewer)
    assert answers["asked"] == [] and closed == [False]


def test_cancel_keeps_the_window_and_the_edits(viewer_with_labels, answers, closed):
    viewer, layer, _, _ = viewer_with_labels
    layer.data[4, 5, 6] = 7  # a brush stroke
    layer.refresh()
    assert unsaved_layers(viewer) == [layer]
    answers["choice"] = "cancel"
    assert _close_from_menu(viewer) is None
    assert answers["asked"] == [["organs"]] and closed == []
    assert viewer.window._qt_window.isVisible()
    assert layer.data[4, 5, 6] == 7  # the work is still there and the viewer usable
    viewer.add_points([[1.0, 2.0, 3.0]])
    assert len(viewer.layers) == 2


def test_save_writes_the_edited_labels_on_their_source_grid(viewer_with_labels, answers, closed, tmp_path):
    viewer, layer, _, source = viewer_with_labels
    layer.data[4, 5, 6] = 7
    layer.refresh()
    expected = layer_to_volume(layer, native=True).numpy()
    out = tmp_path / "saved"
    out.mkdir()
    (out / "organs.nii.gz").write_text("an older file, never replaced")
    answers.update(choice="save", folder=str(out))
    _close_from_menu(viewer)
    assert closed == [False]  # saved, then closed
    saved = load_volume(out / "organs_2.nii.gz")
    assert np.allclose(saved.affine, source.affine) and saved.spatial_shape == source.spatial_shape
    assert np.array_equal(saved.numpy(), expected) and saved.numpy().max() == 7
    assert (out / "organs_2.nii.gz.provenance.json").exists()
    assert (out / "organs.nii.gz").read_text() == "an older file, never replaced"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # written atomically


def test_discard_closes_without_writing(viewer_with_labels, answers, closed, tmp_path):
    viewer, layer, _, _ = viewer_with_labels
    layer.data[0, 0, 0] = 3
    layer.refresh()
    answers["choice"] = "discard"
    before = sorted(tmp_path.rglob("*"))
    _close_from_menu(viewer)
    assert answers["asked"] == [["organs"]] and closed == [False]
    assert sorted(tmp_path.rglob("*")) == before


def test_a_failed_save_keeps_the_window_open(viewer_with_labels, answers, closed, tmp_path, monkeypatch):
    import napari.utils.notifications as notes

    viewer, layer, _, _ = viewer_with_labels
    layer.data[0, 0, 0] = 3
    layer.refresh()
    shown = []
    monkeypatch.setattr(notes, "show_error", lambda text: shown.append(text))
    answers.update(choice="save", folder=str(tmp_path / "no such folder"))
    assert _close_from_menu(viewer) is None and closed == []
    assert len(shown) == 1 and "not a folder" in shown[0]
    assert unsaved_layers(viewer) == [layer]


def test_the_close_button_asks_too(viewer_with_labels, answers):
    from qtpy.QtCore import QEvent
    from qtpy.QtGui import QCloseEvent

    class ButtonClose(QCloseEvent):  # what the window system sends for the close button
        def spontaneous(self):
            return True

    viewer, layer, guard, _ = viewer_with_labels
    layer.data[0, 0, 0] = 3
    layer.refresh()
    event = ButtonClose()
    assert event.type() == QEvent.Type.Close
    answers["choice"] = "cancel"
    assert guard.filter.eventFilter(viewer.window._qt_window, event) is True and not event.isAccepted()
    answers["choice"] = "discard"
    assert guard.filter.eventFilter(viewer.window._qt_window, ButtonClose()) is False


def test_closing_from_code_is_never_interrupted(viewer_with_labels, answers):
    viewer, layer, _, _ = viewer_with_labels
    layer.data[0, 0, 0] = 3
    layer.refresh()
    viewer.close()  # scripts and tests close without a question
    assert answers["asked"] == []


def test_saved_with_the_plugin_writer_is_not_asked_again(viewer_with_labels, answers, tmp_path):
    viewer, layer, _, _ = viewer_with_labels
    layer.data[0, 0, 0] = 3
    layer.refresh()
    assert unsaved_layers(viewer) == [layer]
    viewer.layers.save(str(tmp_path / "mine.nii.gz"), selected=False, plugin="napari-immunotrack")
    assert (tmp_path / "mine.nii.gz").exists()
    assert unsaved_layers(viewer) == []
    layer.data[0, 0, 1] = 3  # edited again after saving
    layer.refresh()
    assert unsaved_layers(viewer) == [layer]


def test_new_labels_landmarks_and_rois_are_saved_in_world_millimetres(make_napari_viewer, answers, closed, tmp_path):
    viewer = make_napari_viewer()
    install_close_guard(viewer)
    painted = viewer.add_labels(
        np.zeros((5, 6, 7), np.uint8), name="drawn", scale=(2.0, 0.5, 0.5), translate=(10.0, -3.0, 4.0)
    )
    painted.data[2, 3, 4] = 1
    viewer.add_points([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]], name="landmarks")
    viewer.add_shapes([np.array([[0.0, 0, 0], [0, 4, 0], [0, 4, 4]])], shape_type="polygon", name="roi")
    assert {layer.name for layer in unsaved_layers(viewer)} == {"drawn", "landmarks", "roi"}
    answers.update(choice="save", folder=str(tmp_path))
    _close_from_menu(viewer)
    assert closed == [False]
    pts = pd.read_csv(tmp_path / "landmarks.csv")
    # napari world (S, A, R) -> RAS (x, y, z): the landmark CSV `immunotrack register --fixed-points` reads
    assert pts[["x_mm", "y_mm", "z_mm"]].to_numpy().tolist() == [[30.0, 20.0, 10.0], [3.0, 2.0, 1.0]]
    roi = pd.read_csv(tmp_path / "roi.csv")
    assert list(roi["vertex"]) == [0, 1, 2] and set(roi["shape_type"]) == {"polygon"}
    labels = load_volume(tmp_path / "drawn.nii.gz")
    # voxel (2, 3, 4) sits at napari world (10 + 2*2, -3 + 3*0.5, 4 + 4*0.5) = (S, A, R)
    (k,) = np.argwhere(labels.numpy() == 1)
    assert np.allclose(labels.index_to_world(k[None]), [[6.0, -1.5, 14.0]])
    for name in ("landmarks.csv", "roi.csv", "drawn.nii.gz"):
        assert (tmp_path / f"{name}.provenance.json").exists()
    assert unsaved_layers(viewer) == []
