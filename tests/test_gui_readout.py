"""The readout and cursor widgets in a real napari viewer (needs Xvfb + OpenGL)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_immunotrack.analysis import pet as P
from napari_immunotrack.errors import OutputExistsError
from napari_immunotrack.volume import Volume, ras_to_napari
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui

# an LPS-ordered PET grid (columns R->L, rows A->P) with a linear activity field
AFF = np.array([[0.0, 0.0, -2.0, 31.0], [0.0, -2.0, 0.0, 29.0], [2.0, 0.0, 0.0, -19.0], [0, 0, 0, 1.0]])
SHAPE = (20, 32, 32)
GRAD = np.array([25.0, -15.0, 40.0])
HEADER = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "CorrectedImage": ["ATTN", "DECY"],
    "RadionuclideTotalDose": 370e6,
    "RadionuclideHalfLife": 6586.2,
    "RadiopharmaceuticalStartDateTime": "20240305090000",
    "SeriesDate": "20240305",
    "SeriesTime": "100000",
    "PatientWeight": 70.0,
    "PatientSize": 1.75,
    "PatientSex": "M",
}


def world(shape, affine):
    idx = np.indices(shape).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(tuple(shape) + (3,))


@pytest.fixture
def pet():
    data = (20000.0 + world(SHAPE, AFF) @ GRAD).astype(np.float32)
    return Volume(data, AFF, "PT", "Bq/mL", dict(HEADER), "pet")


@pytest.fixture
def rois():
    aff = np.array([[1.0, 0, 0, -30.3], [0, 1.0, 0, -28.6], [0, 0, 1.0, -17.2], [0, 0, 0, 1]])
    shape = (60, 56, 36)
    w = world(shape, aff)
    lab = np.zeros(shape, np.uint8)
    lab[np.linalg.norm(w - [-5.0, 4.0, 0.0], axis=-1) <= 5.0] = 1
    lab[np.linalg.norm(w - [10.0, -8.0, 5.0], axis=-1) <= 6.0] = 2
    return Volume(lab, aff, "SEG", "label", {"label_names": {1: "node", 2: "tumour"}}, "roi")


def _compute(widget, qtbot):
    widget.table = None
    widget.run()
    qtbot.waitUntil(lambda: widget.table is not None and not widget.runner.running, timeout=30000)
    return widget.table


def test_readout_widget(make_napari_viewer, qtbot, tmp_path, pet, rois):
    from napari_immunotrack.widgets.readout import ReadoutWidget

    viewer = make_napari_viewer()
    add_volume(viewer, pet)
    add_volume(viewer, rois, as_labels=True)
    widget = ReadoutWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.selected_layers() == ["pet"]  # PET ticked by default
    assert widget.roi_combo.currentText() == "roi"
    assert widget.header_box.isVisible() or widget.header_layer_combo.currentText() == "pet"
    assert widget.header_edits["dose_mbq"].text() == "370"

    df = _compute(widget, qtbot).set_index("label")
    truth = P.quantify_pet(pet, rois).set_index("label")
    for k in (1, 2):
        assert df.loc[k, "suv_bw_mean"] == pytest.approx(truth.loc[k, "suv_bw_mean"], rel=1e-9)
        assert df.loc[k, "mean_bq_ml"] == pytest.approx(truth.loc[k, "mean_bq_ml"], rel=1e-9)
        assert df.loc[k, "unit"] == "Bq/mL"
    assert df.loc[1, "name"] == "node" and df.loc[2, "name"] == "tumour"
    # the bar chart: one bar per ROI
    assert len(widget.figure.axes[0].patches) == 2

    # editing the dose in the header panel halves the SUVs and is recorded in the provenance
    widget.set_header_edits(dose_mbq="740")
    df2 = _compute(widget, qtbot).set_index("label")
    assert df2.loc[1, "suv_bw_mean"] == pytest.approx(df.loc[1, "suv_bw_mean"] / 2, rel=1e-9)
    assert df2.loc[1, "mean_bq_ml"] == pytest.approx(df.loc[1, "mean_bq_ml"], rel=1e-9)
    out = tmp_path / "readouts.csv"
    widget.export(out)
    prov = json.loads((tmp_path / "readouts.csv.provenance.json").read_text())
    assert prov["parameters"]["header_edits"]["pet"]["dose_mbq"] == 740.0
    assert prov["pet_headers"]["pet"]["overrides"]["dose_bq"]["value"] == 740e6
    with pytest.raises(OutputExistsError):
        widget.export(out)

    # painting a new ROI on the labels layer recomputes the table by itself
    layer = viewer.layers["roi"]
    data = np.array(layer.data)
    data[8:12, 5:9, 5:9] = 7
    widget.table = None
    layer.data = data
    qtbot.waitUntil(lambda: widget.table is not None and not widget.runner.running, timeout=30000)
    assert 7 in set(widget.table["label"])
    assert widget.table.set_index("label").loc[7, "volume_ml"] == pytest.approx(4 * 4 * 4 / 1000, rel=1e-6)


def test_readout_without_suv_still_gives_bq_ml(make_napari_viewer, qtbot, pet, rois):
    from napari_immunotrack.widgets.readout import ReadoutWidget

    viewer = make_napari_viewer()
    meta = dict(HEADER)
    del meta["RadionuclideTotalDose"]
    add_volume(viewer, pet.replace(metadata=meta))
    add_volume(viewer, rois, as_labels=True)
    widget = ReadoutWidget(viewer)
    df = _compute(widget, qtbot).set_index("label")
    assert df.loc[1, "status"].startswith("no SUV") and "dose" in df.loc[1, "status"]
    assert df.loc[1, "mean_bq_ml"] == pytest.approx(P.quantify_pet(pet, rois).loc[0, "mean_bq_ml"], rel=1e-9)


def test_cursor_readout(make_napari_viewer, pet, rois):
    from napari_immunotrack.widgets.readout import CursorReadoutWidget

    viewer = make_napari_viewer()
    add_volume(viewer, pet)
    add_volume(viewer, rois, as_labels=True)
    widget = CursorReadoutWidget(viewer)
    point = pet.index_to_world([[10, 16, 16]])[0]
    text = widget.describe(ras_to_napari(point))
    value = 20000.0 + point @ GRAD
    header = P.read_pet_header(pet)
    suv = value * P.suv_factor(header, "bw")
    assert f"pet: {value:.5g} Bq/mL = SUVbw {suv:.4g}" in text
    assert "roi: label 0" in text or "roi: label 1" in text
    far = widget.describe(ras_to_napari(np.array([500.0, 0.0, 0.0])))
    assert "pet: outside" in far


def test_readouts_leave_as_dicom_seg_and_sr_on_the_series_world(make_napari_viewer, qtbot, tmp_path, pet, rois):
    """The PET written as a DICOM series and shown registered (moved) in napari: the SEG's labels lie in the
    series' own world (where the PET voxels under the ROIs are), and the SR holds the dock's numbers."""
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.dicom import write_dicom_series
    from napari_immunotrack.io.dicom_export import read_sr
    from napari_immunotrack.widgets.readout import ReadoutWidget

    series = write_dicom_series(
        pet,
        tmp_path / "pet",
        modality="PT",
        pet=None,
        extra={k: v for k, v in HEADER.items() if k not in ("CorrectedImage",)},
    )
    native = load_volume(series)
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -2.0, 1.0]  # the registration moved the PET layer into the MRI world
    shown = native.replace(affine=shift @ native.affine, name="pet")
    viewer = make_napari_viewer()
    add_volume(viewer, shown)
    add_volume(viewer, rois, as_labels=True)
    widget = ReadoutWidget(viewer)
    viewer.window.add_dock_widget(widget)
    table = _compute(widget, qtbot).set_index("label")
    seg_path, sr_path = widget.export_dicom(tmp_path / "rois_seg.dcm", series)
    seg = load_volume(seg_path, reference=series)
    # a label voxel of the SEG, mapped back through the shift, is inside the same ROI in the MRI world
    idx = np.argwhere(seg.numpy() == 1)
    pts = seg.index_to_world(idx) + shift[:3, 3]
    ridx = np.round(rois.world_to_index(pts)).astype(int)
    assert np.mean(rois.numpy()[tuple(ridx.T)] == 1) > 0.9
    sr = read_sr(sr_path).set_index("label")
    for k in (1, 2):
        assert sr.loc[k, "suv_bw_mean"] == pytest.approx(table.loc[k, "suv_bw_mean"], rel=1e-12)
