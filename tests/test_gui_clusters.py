"""The iron cluster widget in a real napari viewer (needs Xvfb + OpenGL)."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.io import load_volume
from napari_immunotrack.simulate import cluster_scene
from napari_immunotrack.volume import napari_to_ras
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def scene():
    return cluster_scene(seed=4, snr=20.0, near_touching=True)


def _camera(viewer):
    """napari 0.9 moved the camera to viewer.scene.camera (viewer.camera is a deprecated alias)."""
    scene_ = getattr(viewer, "scene", None)
    return scene_.camera if scene_ is not None and hasattr(scene_, "camera") else viewer.camera


def _run(widget, qtbot):
    widget.result = None
    widget.run()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.runner.running, timeout=60000)


def _add_scene(viewer, scene, with_baseline=True):
    add_volume(viewer, scene["post"])
    if with_baseline:
        add_volume(viewer, scene["pre"])
    for key, name in (
        ("reference_mask", "reference ROI"),
        ("search_mask", "search ROI"),
        ("background_mask", "air ROI"),
    ):
        add_volume(viewer, scene[key].replace(name=name), as_labels=True)


def test_cluster_widget_run_table_click_edit_export(make_napari_viewer, qtbot, scene, tmp_path):
    from napari_immunotrack.widgets.clusters import LAYER_NAMES, ClusterWidget

    viewer = make_napari_viewer()
    _add_scene(viewer, scene)
    widget = ClusterWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # inputs pre-selected from the layer names
    assert widget.combos["post"].currentText() == "T2starw_post"
    assert widget.combos["baseline"].currentText() == "T2starw_pre"
    assert widget.combos["reference_mask"].currentText() == "reference ROI"
    assert widget.combos["background_mask"].currentText() == "air ROI"
    assert widget.threshold.value() == 0.5
    _run(widget, qtbot)

    truth = scene["truth"]["clusters"]
    layer = widget.layers["labels"]
    assert type(layer).__name__ == "Labels" and layer.editable and layer.name == LAYER_NAMES["labels"]
    data = np.asarray(layer.data)
    ids = np.unique(data[data > 0])
    assert len(ids) == len(truth)
    df = widget.result.table
    assert widget.table.rowCount() == len(df) == len(ids)
    # every cluster lies on a true bloom: its centroid within 0.35 mm of a true cluster
    centres = np.array([c["centroid_ras_mm"] for c in truth])
    found = df[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    assert all(np.linalg.norm(centres - c, axis=1).min() < 0.35 for c in found)

    # clicking a row centres the views on that cluster (napari world order is S, A, R)
    for row in (0, len(df) - 1):
        widget.table.cellClicked.emit(row, 0)
        qtbot.wait(20)
        point = napari_to_ras(np.asarray(viewer.dims.point)[-3:])
        np.testing.assert_allclose(point, found[row], atol=0.051)  # half a 0.1 mm voxel: the slider's step
        # and the camera on the centroid itself (displayed axes A, R)
        np.testing.assert_allclose(np.asarray(_camera(viewer).center)[-2:], found[row][[1, 0]], atol=1e-6)

    # hand correction with the "brush": erase the first cluster, paint a small new one elsewhere
    first = int(ids[0])
    edited = data.copy()
    edited[edited == first] = 0
    edited[5:7, 30:32, 30:32] = 99
    layer.data = edited
    out, table = tmp_path / "clusters.nii.gz", tmp_path / "clusters.csv"
    written = widget.export(out, table)
    saved = load_volume(out)
    assert saved.same_grid(scene["post"])  # the post image's own grid and affine
    assert set(np.unique(saved.numpy())) == (set(ids.tolist()) - {first}) | {0, 99}
    csv = pd.read_csv(table)
    assert len(csv) == len(ids) and first not in csv.label.tolist() and 99 in csv.label.tolist()
    assert csv.loc[csv.label == 99, "voxels"].item() == 8
    assert len(written) == len(csv)
    prov = json.loads((tmp_path / "clusters.nii.gz.provenance.json").read_text())
    assert prov["parameters"]["edited_by_hand"] is True and prov["step"] == "segment"
    with pytest.raises(Exception, match="already exists"):
        widget.export(out, table)


def test_cluster_widget_live_preview_on_the_current_slice(make_napari_viewer, qtbot, scene):
    from napari_immunotrack.analysis.clusters import prepare
    from napari_immunotrack.widgets.clusters import ClusterWidget

    viewer = make_napari_viewer()
    _add_scene(viewer, scene)
    widget = ClusterWidget(viewer)
    # go to the slice through the first true cluster
    c = scene["truth"]["clusters"][0]["centroid_ras_mm"]
    point = list(viewer.dims.point)
    point[-3] = c[2]
    viewer.dims.point = point
    widget.live.setChecked(True)
    mask = widget.update_preview()
    assert mask is not None and mask.any()
    # the preview is the rule on that slice of the whole-volume candidates
    post = scene["post"]
    prep = prepare(post, scene["pre"], scene["reference_mask"], scene["search_mask"], scene["background_mask"])
    z = int(round(post.world_to_index([c])[0][0]))
    expected = prep.candidates(prep.rule("fraction", 0.5))[z]
    assert np.array_equal(mask, expected)
    layer = widget.layers["preview"]
    assert np.array_equal(np.asarray(layer.data)[z] > 0, expected)
    assert not np.asarray(layer.data)[:z].any() and not np.asarray(layer.data)[z + 1 :].any()
    # a parameter change updates it (debounced): a lower threshold, fewer voxels
    widget.threshold.setValue(0.2)
    qtbot.waitUntil(lambda: (np.asarray(layer.data)[z] > 0).sum() < expected.sum(), timeout=5000)
    # switching the rule resets the threshold to the rule's default
    widget.method.setCurrentText("percentile")
    assert widget.threshold.value() == 10.0
    widget.live.setChecked(False)
    assert "preview" not in widget.layers


def test_cluster_widget_shapes_reference_and_bad_input(make_napari_viewer, qtbot, scene):
    from napari_immunotrack.widgets.clusters import ClusterWidget

    viewer = make_napari_viewer()
    _add_scene(viewer, scene, with_baseline=False)
    widget = ClusterWidget(viewer)
    # a reference ROI drawn as a rectangle on one axial slice, as a user would
    ref = scene["reference_mask"].numpy()
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    ys, xs = np.nonzero(ref[z])
    corners = scene["post"].index_to_world([[z, ys.min() + 2, xs.min() + 2], [z, ys.max() - 2, xs.max() - 2]])
    (x0, y0, zz), (x1, y1, _) = corners
    shapes = viewer.add_shapes(
        [[[zz, y0, x0], [zz, y0, x1], [zz, y1, x1], [zz, y1, x0]]], shape_type="polygon", name="reference drawn"
    )
    assert shapes.ndim == 3
    widget.select(reference_mask="reference drawn", baseline=None)
    _run(widget, qtbot)
    assert widget.result.reference.source == "reference ROI"
    assert widget.result.reference.mean == pytest.approx(1000.0, rel=0.03)
    assert "NO baseline" in widget.status.text()
    # bad input: an empty Shapes layer as the reference: one clear message, no result
    viewer.add_shapes(name="empty ROI", ndim=3)
    widget.select(reference_mask="empty ROI")
    errors = []
    widget.status.setText("")
    previous = widget.result
    widget.run()
    qtbot.wait(50)
    assert "has no shape" in widget.status.text()
    assert widget.result is previous
    del errors


def test_corrected_clusters_are_not_replaced_by_a_new_run_without_asking(make_napari_viewer, qtbot, scene, monkeypatch):
    from napari_immunotrack import _close_guard
    from napari_immunotrack.widgets.clusters import ClusterWidget

    asked, answer = [], ["cancel"]
    monkeypatch.setattr(_close_guard, "ask_unsaved", lambda parent, names, action: asked.append(names) or answer[0])
    viewer = make_napari_viewer()
    _add_scene(viewer, scene)
    widget = ClusterWidget(viewer)
    _run(widget, qtbot)
    _run(widget, qtbot)  # a rerun over an untouched result: no question
    assert asked == []
    layer = widget.layers["labels"]
    layer.data[tuple(np.argwhere(layer.data > 0)[0])] = 0  # the analyst erases a false cluster voxel
    layer.refresh()
    edited = np.array(layer.data)
    widget.result = None
    widget.run()  # cancelled: nothing starts, the corrected layer stays
    assert asked == [[layer.name]] and not widget.runner.running and widget.result is None
    assert widget.layers["labels"] is layer and np.array_equal(layer.data, edited)
    answer[0] = "discard"
    _run(widget, qtbot)
    assert len(asked) == 2 and widget.layers["labels"] is not layer
