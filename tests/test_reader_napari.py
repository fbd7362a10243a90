"""What a napari user sees on File > Open, through napari's own plugin manager (npe2) and ViewerModel.open.

The manifest claims files by extension (no catch-all ``*``) and ``get_reader`` sniffs the content:
foreign files go napari's normal way, our broken files give the plugin's one-line message as a
notification and no "returned no data" after it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

PLUGIN = "napari-immunotrack"


@pytest.fixture(scope="module")
def plugins():
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    from napari.plugins import _npe2

    return _npe2


@pytest.fixture
def shown():
    """Every napari notification (level, message) dispatched while the test runs."""
    from napari.utils.notifications import notification_manager

    seen = []

    def grab(event):
        seen.append((str(event.severity), str(event.message)))

    notification_manager.notification_ready.connect(grab)
    catch = notification_manager.catch_error
    notification_manager.catch_error = False  # errors raised by napari reach the test, not a dialog
    yield seen
    notification_manager.catch_error = catch
    notification_manager.notification_ready.disconnect(grab)


def _viewer():
    """napari's viewer model; ``open(..., plugin=None)`` is the File > Open path (pattern match, then choice)."""
    from napari.components import ViewerModel

    return ViewerModel()


def test_manifest_has_no_catch_all_pattern():
    from npe2 import PluginManifest

    patterns = PluginManifest.from_distribution(PLUGIN).contributions.readers[0].filename_patterns
    assert "*" not in patterns and all(p.startswith("*") and len(p) > 2 for p in patterns), patterns


def test_text_file_is_not_offered_to_the_plugin(tmp_path, plugins, shown):
    from napari.errors import NoAvailableReaderError

    from napari_immunotrack._reader import get_reader

    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    assert PLUGIN not in plugins.get_readers(str(path))
    assert get_reader(str(path)) is None
    with pytest.raises(NoAvailableReaderError, match="No plugin found capable of reading") as info:
        _viewer().open(str(path), plugin=None)  # plugin=None: what File > Open does
    assert PLUGIN not in str(info.value)
    assert not [s for s in shown if PLUGIN in s[1]]


def test_png_goes_to_napari_builtins(tmp_path, plugins, shown):
    import imageio.v3 as iio

    path = tmp_path / "photo.png"
    img = np.zeros((12, 20, 3), np.uint8)
    img[3:6, 4:9] = (200, 50, 10)
    iio.imwrite(path, img)
    assert set(plugins.get_readers(str(path))) == {"napari"}
    viewer = _viewer()
    layers = viewer.open(str(path), plugin=None)
    assert len(layers) == 1 and layers[0].data.shape[:2] == (12, 20)
    assert int(np.asarray(layers[0].data)[4, 5, 0]) == 200
    assert not [s for s in shown if s[0] == "error"]


def test_broken_nifti_gives_one_plugin_message(tmp_path, plugins, shown):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"not really a gzip stream" * 3)
    assert PLUGIN in plugins.get_readers(str(path))
    viewer = _viewer()
    # the user picked Immunotrack (or napari chose it): no exception, so no reader dialog or "returned no data"
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert layers == [] and len(viewer.layers) == 0
    errors = [m for level, m in shown if level == "error"]
    assert len(errors) == 1, shown
    assert "scan.nii.gz" in errors[0] and "\n" not in errors[0]
    assert "returned no data" not in errors[0] and "internal error" not in errors[0]
    assert not [m for _, m in shown if "returned no data" in m or "Tried" in m]


def test_broken_file_only_we_claim_opens_without_plugin_choice(tmp_path, plugins, shown):
    """A .mdf is ours alone: viewer.open(path) with no plugin named shows our line and raises nothing."""
    path = tmp_path / "run.mdf"
    path.write_bytes(b"this is no HDF5 file")
    assert set(plugins.get_readers(str(path))) == {PLUGIN}
    viewer = _viewer()
    assert viewer.open(str(path), plugin=None) == []
    errors = [m for level, m in shown if level == "error"]
    assert len(errors) == 1 and "run.mdf" in errors[0], shown


def test_h5_that_is_not_mdf_is_left_to_others(tmp_path):
    import h5py

    from napari_immunotrack._reader import get_reader

    path = tmp_path / "table.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(5)
    assert get_reader(str(path)) is None


def test_dicomdir_folder_opens_its_series(tmp_path, plugins, shown):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("DICOMDIR")
    assert src, "pydicom no longer ships its DICOMDIR test set"
    import os

    folder = tmp_path / "disc"
    shutil.copytree(os.path.dirname(src), folder)
    assert PLUGIN in plugins.get_readers(str(folder))
    viewer = _viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert len(layers) >= 1 and all(layer.data.ndim == 3 for layer in layers)
    assert not [m for level, m in shown if level == "error"], shown
    # the index file alone is not an image: one line, saying to open the folder
    from napari_immunotrack._reader import read_layers

    before = len(shown)
    assert read_layers(str(folder / "DICOMDIR")) == [(None,)]
    errors = [m for level, m in shown[before:] if level == "error"]
    assert len(errors) == 1 and "DICOMDIR" in errors[0], shown


def test_folder_of_pictures_is_not_ours(tmp_path):
    import imageio.v3 as iio

    from napari_immunotrack._reader import get_reader

    for i in range(3):
        iio.imwrite(tmp_path / f"f{i}.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "readme.txt").write_text("pictures\n")
    assert get_reader(str(tmp_path)) is None


def test_sample_study_folders_are_ours():
    from pathlib import Path

    from napari_immunotrack._reader import claims

    ses = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study" / "sub-01" / "ses-day1"
    assert claims(ses / "pet")  # DICOM files in a folder
    assert claims(ses / "anat" / "sub-01_ses-day1_T2w.nii.gz")
    assert claims(ses / "optical" / "sub-01_ses-day1_fluo.ome.tif")
    assert not claims(ses / "anat" / "sub-01_ses-day1_T2w.json")
