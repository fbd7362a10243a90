"""The figure widget in a real napari viewer (needs Xvfb + OpenGL): the figure of the current view and a 3D
snapshot, each with provenance; a layer without a unit is refused with a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_immunotrack.volume import Volume
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui


def _scene():
    aff = np.zeros((4, 4))
    aff[2, 0], aff[1, 1], aff[0, 2], aff[3, 3] = 0.5, 0.5, 0.5, 1.0  # (z, y, x) array axes
    aff[:3, 3] = (-10.0, -10.0, -5.0)
    shape = (20, 40, 40)
    idx = np.indices(shape).reshape(3, -1).T
    w = (idx @ aff[:3, :3].T + aff[:3, 3]).reshape(shape + (3,))
    body = (np.hypot(w[..., 0], w[..., 1]) < 8).astype(np.float32) * 100
    mri = Volume(body, aff, "MR", "a.u.", name="T2w")
    hot = np.exp(-np.sum((w - [3.0, -2.0, 0.0]) ** 2, axis=-1) / 4).astype(np.float32) * 40
    pet = Volume(hot, aff, "PT", "kBq/mL", name="PET")
    roi = Volume((np.hypot(w[..., 0] + 4, w[..., 1] - 3) < 2.5).astype(np.uint8), aff, "SEG", "label", name="roi")
    return mri, pet, roi


def test_figure_of_the_current_view_and_a_3d_snapshot(make_napari_viewer, tmp_path):
    from napari_immunotrack.widgets.figure import FigureWidget, figure_from_viewer

    mri, pet, roi = _scene()
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders nothing in 3D
    add_volume(viewer, mri)
    pet_layer = add_volume(viewer, pet)
    add_volume(viewer, roi, as_labels=True)
    pet_layer.contrast_limits = (5.0, 30.0)
    viewer.dims.set_point(0, 1.0)  # axial slice at S = 1 mm
    widget = FigureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.anatomy_combo.currentText() == "T2w" and widget.overlay_combo.currentText() == "PET"
    from qtpy.QtCore import Qt

    widget.outline_list.item(0).setCheckState(Qt.CheckState.Checked)  # tick "roi"
    widget.dpi.setValue(100)

    result = figure_from_viewer(viewer, **widget.choices())
    panel = result.info["panel"]
    assert panel["plane"] == "axial" and panel["position_mm"] == pytest.approx(1.0, abs=0.26)
    assert result.info["colorbar_range"] == (5.0, 30.0)  # the layer's contrast limits
    assert panel["outlines"][0]["labels"] == [1]
    result.figure.clear()

    out = widget.save_figure(tmp_path / "fig.png")
    assert out.exists() and out.stat().st_size > 5000
    prov = json.loads((tmp_path / "fig.png.provenance.json").read_text())
    assert prov["step"] == "napari figure widget" and prov["parameters"]["dpi"] == 100
    assert "saved" in widget.status.text()
    # saving again without overwrite is refused and the file kept
    before = out.read_bytes()
    assert widget.save_figure(tmp_path / "fig.png") is None and "already exists" in widget.status.text()
    assert out.read_bytes() == before

    # a coronal view gives a coronal figure
    viewer.dims.order = (1, 0, 2)
    assert figure_from_viewer(viewer, anatomy="T2w").info["panel"]["plane"] == "coronal"
    viewer.dims.order = (0, 1, 2)

    snap = widget.save_snapshot(tmp_path / "snap.png")
    assert snap.exists() and viewer.dims.ndisplay == 2  # the 2D view is restored
    from PIL import Image

    pixels = np.asarray(Image.open(snap))
    assert pixels.ndim == 3 and pixels[..., :3].std() > 0  # something was rendered
    assert "camera" in json.loads((tmp_path / "snap.png.provenance.json").read_text())["parameters"]


def test_overlay_without_a_unit_is_refused(make_napari_viewer, tmp_path):
    from napari_immunotrack.widgets.figure import FigureWidget

    mri, pet, _ = _scene()
    viewer = make_napari_viewer()
    add_volume(viewer, mri)
    add_volume(viewer, pet.replace(unit="", name="nounit"))
    widget = FigureWidget(viewer)
    widget.overlay_combo.setCurrentText("nounit")
    assert widget.save_figure(tmp_path / "f.png") is None
    assert "no unit" in widget.status.text()
    assert not (tmp_path / "f.png").exists()
