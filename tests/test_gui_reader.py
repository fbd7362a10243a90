"""File > Open in the napari window (Xvfb): what the user sees for our broken files and foreign files.

napari's own reader-choice dialog is shown (by file pattern, before any plugin is asked) when two plugins
claim an extension (napari's builtins also list *.nii.gz); the dialog is answered here as a user would.
After it, or without it for a file only we claim, the user sees the plugin's one line and nothing else.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def shown():
    from napari.utils.notifications import notification_manager

    seen = []

    def grab(event):
        seen.append((str(event.severity), str(event.message)))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)


def _open(viewer, path):
    viewer.window._qt_viewer._qt_open([str(path)], stack=False)  # what File > Open and drag-and-drop call


def test_broken_nifti_after_the_chooser_gives_one_line(make_napari_viewer, tmp_path, shown, monkeypatch):
    from napari._qt.dialogs import qt_reader_dialog

    asked = []

    def choose(self):
        asked.append(True)
        return "Immunotrack", False

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", choose)
    viewer = make_napari_viewer()
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"not a gzip stream" * 4)
    _open(viewer, path)
    assert len(asked) == 1  # napari's chooser (two plugins list *.nii.gz), once, not a second time
    errors = [m for level, m in shown if level == "error"]
    assert len(errors) == 1 and "scan.nii.gz" in errors[0], shown
    assert not [m for _, m in shown if "returned no data" in m or "Tried" in m]
    assert len(viewer.layers) == 0


def test_broken_file_only_we_claim_gives_one_line_without_chooser(make_napari_viewer, tmp_path, shown, monkeypatch):
    from napari._qt.dialogs import qt_reader_dialog

    def never(self):
        raise AssertionError("no reader-choice dialog expected")

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", never)
    viewer = make_napari_viewer()
    path = tmp_path / "run.mdf"
    path.write_bytes(b"not HDF5")
    _open(viewer, path)
    errors = [m for level, m in shown if level == "error"]
    assert len(errors) == 1 and "run.mdf" in errors[0], shown
    assert len(viewer.layers) == 0
