"""The partial-volume option of the Quantitative readouts dock in a real napari viewer (needs Xvfb)."""

from __future__ import annotations

import json
import warnings

import pytest

from napari_immunotrack.simulate.nema import nema_rods
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui

HEADER = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "RadionuclideTotalDose": 1e6,
    "RadionuclideHalfLife": 6586.2,
    "RadiopharmaceuticalStartDateTime": "20240305090000",
    "SeriesDate": "20240305",
    "SeriesTime": "100000",
    "PatientWeight": 0.025,
}


def test_readout_dock_pvc(make_napari_viewer, qtbot, tmp_path):
    from napari_immunotrack.widgets.readout import ReadoutWidget

    ph = nema_rods(voxel_mm=0.5, fwhm_mm=1.5, background=10.0, length_mm=6.0, supersample=2)
    pet = ph["image"]
    pet.metadata = {**HEADER}  # no PSF in this header: the dock's FWHM is used
    pet.name = "pet"
    viewer = make_napari_viewer()
    add_volume(viewer, pet)
    add_volume(viewer, ph["labels"].replace(name="rods"), as_labels=True)
    widget = ReadoutWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.roi_combo.setCurrentText("rods")
    widget.pvc_combo.setCurrentText("gtm")
    widget.psf_edit.setText("1.5")
    widget.table = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widget.run()
        qtbot.waitUntil(lambda: widget.table is not None and not widget.runner.running, timeout=60000)
    df = widget.table.set_index("label")
    for label, d in ph["diameters_mm"].items():
        if d >= 2:
            assert df.loc[label, "mean_bq_ml_pvc"] == pytest.approx(ph["truth"][label], rel=0.05)
            assert df.loc[label, "mean_bq_ml"] < 0.9 * ph["truth"][label]
        ratio = df.loc[label, "mean_bq_ml_pvc"] / df.loc[label, "mean_bq_ml"]
        assert df.loc[label, "suv_bw_mean_pvc"] / df.loc[label, "suv_bw_mean"] == pytest.approx(ratio)
    widget.export(tmp_path / "r.csv")
    prov = json.loads((tmp_path / "r.csv.provenance.json").read_text())
    assert prov["pvc"]["pet"]["method"] == "gtm" and prov["pvc"]["pet"]["psf"]["fwhm_mm"] == [1.5, 1.5, 1.5]
    # a PSF that is not a number: one line in the dock, no table
    widget.psf_edit.setText("wide")
    widget.table = None
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert widget.table is None
    assert "--psf-fwhm" in widget.status.text()
