"""The bundled sample study opened in a real napari viewer (Xvfb + OpenGL)."""

import json

import numpy as np
import pytest

from napari_immunotrack.data import sample_study_root
from napari_immunotrack.volume import ras_to_napari

pytestmark = pytest.mark.gui


@pytest.fixture
def sample_viewer(make_napari_viewer, monkeypatch):
    import napari

    from napari_immunotrack.commands import view

    created = []

    def make(*args, **kwargs):
        viewer = make_napari_viewer(show=False)
        created.append(viewer)
        return viewer

    monkeypatch.setattr(napari, "Viewer", make)
    return view.open_viewer(show=False)


def test_sample_study_opens_in_one_physical_space(sample_viewer):
    viewer = sample_viewer
    modalities = {layer.metadata["volume"].modality for layer in viewer.layers}
    assert {"MR", "PT", "NM", "F19", "MPI", "OPT", "SEG"} <= modalities
    rng = np.random.default_rng(0)
    reference = next(
        layer.metadata["volume"]
        for layer in viewer.layers
        if layer.metadata["volume"].modality == "MR" and layer.metadata["volume"].is_axis_aligned()
    )
    for layer in viewer.layers:
        volume = layer.metadata["volume"]
        # registered (oblique) volumes are shown on the reference MRI's grid
        display = volume.for_display(reference=reference)
        # a displayed voxel sits at the world point its native Volume gives it (napari order S, A, R)
        idx = rng.integers(0, np.array(display.spatial_shape), size=(5, 3)).astype(float)
        napari_world = np.array([layer.data_to_world(i) for i in idx])[:, -3:]
        np.testing.assert_allclose(napari_world, ras_to_napari(display.index_to_world(idx)), atol=1e-6)
    # modality defaults
    by_modality = {layer.metadata["volume"].modality: layer for layer in viewer.layers}
    assert by_modality["MR"].colormap.name == "gray"
    assert by_modality["PT"].blending == "additive"
    assert by_modality["F19"].colormap.name == "magenta"
    assert by_modality["MPI"].colormap.name == "cyan"
    assert by_modality["OPT"].colormap.name == "green"


def test_19f_hot_spot_is_where_the_truth_puts_the_cells(sample_viewer):
    """Centring on the truth's richest 19F focus lands the slider there and reads a 19F hot spot."""
    from napari_immunotrack.widgets._common import center_on_world

    truth = json.loads((sample_study_root() / "ground_truth.json").read_text())
    ses = truth["subjects"]["01"]["sessions"]["ses-day1"]
    focus = max(ses["foci"], key=lambda f: f["label_live"]["f19"] + f["label_macrophage"]["f19"])
    # the sample's sessions lie in their own poses and open in the reference session's (day 0) frame: the
    # truth's day-1 MRI-world point is carried there by the true poses (not by the saved alignment)
    poses = {
        k: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in truth["subjects"]["01"]["sessions"].items()
    }
    to_day0 = poses["ses-day0"] @ np.linalg.inv(poses["ses-day1"])
    depot = to_day0[:3, :3] @ np.asarray(focus["centroid_ras_mm"]) + to_day0[:3, 3]
    viewer = sample_viewer
    center_on_world(viewer, depot)
    point = ras_to_napari(np.array(depot))
    np.testing.assert_allclose(np.array(viewer.dims.point)[-3:], point, atol=0.5)
    f19 = next(layer for layer in viewer.layers if layer.metadata["volume"].modality == "F19")
    values = f19.data
    at_depot = f19.get_value(point, world=True)
    # the focus is a 19F hot spot: far above the image's median (pure noise)
    assert at_depot > 5 * np.median(values)


def test_view_screenshot_from_the_command_line(tmp_path):
    """`immunotrack view --screenshot` in its own process: a real picture of the window, with provenance."""
    import os
    import subprocess
    import sys

    from PIL import Image

    from napari_immunotrack.outputs import sidecar_matches, sidecar_path

    shot = tmp_path / "day3.png"
    cmd = [sys.executable, "-m", "napari_immunotrack.cli", "view", "--session", "day3", "--screenshot", str(shot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = np.asarray(Image.open(shot))
    assert image.shape[0] > 400 and image.shape[1] > 600  # the whole window, docks included
    assert image[..., :3].std() > 10  # a picture, not a blank canvas
    record = json.loads(sidecar_path(shot).read_text())
    assert record["step"] == "view screenshot" and record["parameters"]["session"] == "day3"
    assert any("T2" in name for name in record["parameters"]["layers"])
    assert sidecar_matches(shot) is True
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_docks_opened_from_the_plugin_menu_choose_sensible_inputs(make_napari_viewer, qtbot):
    """Sample data + the docks as napari's Plugins menu opens them (behind napari's proxy): the inputs
    pre-selected are the T2*w image and its day-0 baseline, the organ ROIs (not the reference tube)."""
    viewer = make_napari_viewer(show=False)
    viewer.open_sample("napari-immunotrack", "mouse_study")
    _, clusters = viewer.window.add_plugin_dock_widget("napari-immunotrack", "Iron clusters")
    _, confirm = viewer.window.add_plugin_dock_widget("napari-immunotrack", "T1-T2 confirmation")
    _, readouts = viewer.window.add_plugin_dock_widget("napari-immunotrack", "Quantitative readouts")
    assert clusters.combos["post"].currentText() == "T2starw (day 1)"
    assert clusters.combos["baseline"].currentText() == "T2starw (day 0)"
    chosen = {k: confirm.combos[k].currentText() for k in ("t1_post", "t2_post", "t1_pre", "t2_pre")}
    assert chosen == {
        "t1_post": "T1w (day 1)",
        "t2_post": "T2w (day 1)",
        "t1_pre": "T1w (day 0)",
        "t2_pre": "T2w (day 0)",
    }
    assert readouts.roi_combo.currentText() == "ROI (day 1)"  # the organs; "ROI reftube" lies outside PET
    readouts.run()
    qtbot.waitUntil(lambda: not readouts.runner.running, timeout=120000)
    from napari_immunotrack.io import load_volume

    dseg = load_volume(sample_study_root() / "sub-01" / "ses-day1" / "rois" / "sub-01_ses-day1_dseg.nii.gz")
    n_labels = len(np.setdiff1d(np.unique(dseg.numpy()), [0]))
    assert readouts.status.text().startswith(f"{n_labels} ROI(s)"), readouts.status.text()
