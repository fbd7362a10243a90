"""The T1-T2 confirmation widget in a real napari viewer (needs Xvfb + OpenGL)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.io import load_volume
from napari_immunotrack.simulate import dual_mode_scene
from napari_immunotrack.volume import napari_to_ras
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui


@pytest.fixture
def scene():
    return dual_mode_scene(seed=3, snr=20.0, concentration_mM=(0.5, 1.0))


def _truth_at_layer_voxels(layer, truth_volume, mask):
    """Truth labels at the world positions of a layer's voxels where ``mask`` is set."""
    idx = np.argwhere(mask).astype(float)
    world = np.asarray(layer._data_to_world(idx))  # napari world (S, A, R) mm
    t_idx = np.round(truth_volume.world_to_index(napari_to_ras(world))).astype(int)
    t = truth_volume.numpy()
    return t[tuple(t_idx.T)]


def _run(widget, qtbot):
    widget.result = None
    widget.run()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.runner.running, timeout=30000)


def test_confirm_widget_on_dual_mode_scene(make_napari_viewer, qtbot, scene, tmp_path):
    from napari_immunotrack.widgets.confirm import ConfirmWidget

    viewer = make_napari_viewer(show=True)  # shown: screenshots of a hidden canvas are black
    for key in ("t1_pre", "t2_pre", "t1_post", "t2_post"):
        add_volume(viewer, scene[key])
    widget = ConfirmWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # the inputs are pre-selected from the layer names
    assert widget.combos["t1_post"].currentText() == "T1w_post"
    assert widget.combos["t2_pre"].currentText() == "T2w_pre"
    _run(widget, qtbot)
    res = widget.result
    assert res.confirmed

    truth = scene["truth_labels"]
    labels_layer = widget.layers["labels"]
    assert type(labels_layer).__name__ == "Labels" and labels_layer.editable
    data = np.asarray(labels_layer.data)
    # one component per labelled site, each inside its site
    n = len(scene["truth"]["labelled"])
    assert len(np.unique(data[data > 0])) == n
    for lab in np.unique(data[data > 0]):
        under = _truth_at_layer_voxels(labels_layer, truth, data == lab)
        assert (under > 0).all() and len(np.unique(under)) == 1
    # the overlap layer is nonzero only at labelled sites, and covers them
    overlap = widget.layers["overlap"]
    assert overlap.blending == "translucent" and overlap.name == "T1+T2 overlap"
    ov = np.asarray(overlap.data) > 0
    assert (_truth_at_layer_voxels(overlap, truth, ov) > 0).all()
    assert ov.sum() >= 0.9 * (truth.numpy() > 0).sum()
    # the three fusion colours are the Okabe-Ito ones
    assert np.allclose(overlap.colormap.colors[-1][:3], [0, 158 / 255, 115 / 255], atol=1e-3)
    assert np.allclose(widget.layers["t1_enhancement"].colormap.colors[-1][:3], [230 / 255, 159 / 255, 0], atol=1e-3)
    assert widget.banner.text() == ""
    assert widget.table_dock.rowCount() == n

    # a screenshot shows the overlap colour on a slice through a site, and none on a slice without one
    assert not labels_layer.visible  # hidden at first so that it does not cover the fusion
    t = truth.numpy()
    z_site = int(np.argmax((t > 0).sum(axis=(1, 2))))
    z_none = next(z for z in range(t.shape[0] // 2, t.shape[0]) if not t[z].any())
    for z, expect in ((z_site, True), (z_none, False)):
        world_z = truth.index_to_world([[z, 0, 0]])[0][2]
        point = list(viewer.dims.point)
        point[0] = world_z
        viewer.dims.point = point
        viewer.reset_view()
        qtbot.wait(50)
        shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
        r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
        bluish_green = (g - np.maximum(r, b)) > 25  # #009E73 over grey anatomy
        assert bluish_green.any() == expect, (z, int(bluish_green.sum()))

    # hand-edit: erase one region, export: the file and the table follow the edit
    first = int(np.unique(data[data > 0])[0])
    edited = data.copy()
    edited[edited == first] = 0
    labels_layer.data = edited
    out, table = tmp_path / "confirmed.nii.gz", tmp_path / "regions.csv"
    widget.export(out, table)
    saved = load_volume(out)
    assert saved.same_grid(scene["t1_post"])  # T1POST's grid and affine
    assert len(np.unique(saved.numpy())) == n  # n - 1 regions + background
    df = pd.read_csv(table)
    assert len(df) == n - 1 and first not in df.label.tolist() and (df.status == "confirmed").all()
    prov = json.loads((tmp_path / "confirmed.nii.gz.provenance.json").read_text())
    assert prov["parameters"]["edited_by_hand"] is True and prov["status"] == "confirmed"
    with pytest.raises(Exception, match="already exists"):
        widget.export(out, table)

    # live preview: a threshold change re-runs by itself
    widget.live.setChecked(True)
    widget.result = None
    widget.t2_threshold.setValue(0.95)  # nothing is that dark: no region left
    qtbot.waitUntil(lambda: widget.result is not None and not widget.runner.running, timeout=30000)
    assert len(widget.result.table) == 0 and not np.asarray(widget.layers["overlap"].data).any()
    widget.live.setChecked(False)
    widget.t2_threshold.setValue(0.2)

    # without a baseline: every output says UNCONFIRMED
    widget.select(t1_pre=None, t2_pre=None)
    _run(widget, qtbot)
    assert not widget.result.confirmed
    assert "UNCONFIRMED" in widget.layers["labels"].name and "UNCONFIRMED" in widget.layers["overlap"].name
    assert "haemorrhage" in widget.banner.text()
    assert (widget.result.table.status == "unconfirmed").all()
    out2 = tmp_path / "candidates.nii.gz"
    widget.export(out2)
    assert "UNCONFIRMED" in nib.load(str(out2)).header["descrip"].item().decode()


def test_confirm_widget_reports_bad_input(make_napari_viewer, qtbot, scene):
    from napari_immunotrack.widgets.confirm import ConfirmWidget

    viewer = make_napari_viewer()
    for key in ("t1_pre", "t1_post", "t2_post"):
        add_volume(viewer, scene[key])
    widget = ConfirmWidget(viewer)
    widget.select(t1_pre="T1w_pre", t2_pre=None)
    errors = []
    widget._failed = errors.append
    widget.run()
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert "baseline was given for T1 only" in str(errors[0])
    assert widget.result is None and "labels" not in widget.layers
