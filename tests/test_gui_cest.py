"""The CEST tab of the Maps dock in a real napari viewer (needs Xvfb + OpenGL)."""

import numpy as np
import pytest

from napari_immunotrack.simulate import cest as sim
from napari_immunotrack.volume import Volume
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def study():
    labels = np.zeros((2, 14, 14), np.uint8)
    labels[:, 1:13, 1:13] = 1
    labels[:, 4:10, 4:10] = 2
    labels[:, 6:8, 6:8] = 3
    yy, xx = np.mgrid[0:14, 0:14]
    b0 = np.broadcast_to(0.025 * (xx - 7) - 0.015 * (yy - 7), labels.shape).astype(float)
    m0 = np.where(labels > 0, 1000.0, 0.0)
    out = sim.simulate_cest(
        labels,
        np.diag([0.5, 0.5, 1.0, 1.0]),
        {1: "muscle", 2: "tumour", 3: "depot"},
        sim.default_offsets(61, 6.0),
        b0,
        m0,
        snr=300,
        wassr_offsets_ppm=sim.default_wassr_offsets(31, 1.5),
        seed=4,
    )
    out["series"].name, out["wassr"].name = "CEST", "WASSR"
    return out, labels, b0


def test_cest_panel_computes_maps_and_follows_the_cursor(make_napari_viewer, qtbot, study):
    from napari_immunotrack.widgets.maps_cest import PLOT_MIN_HEIGHT, build_cest_panel

    out, labels, b0 = study
    viewer = make_napari_viewer(show=True)
    add_volume(viewer, out["series"])
    add_volume(viewer, out["wassr"])
    add_volume(viewer, Volume(labels, out["series"].affine, "SEG", "label", {}, "tissues"), as_labels=True)
    panel = build_cest_panel(viewer)
    viewer.window.add_dock_widget(panel)
    assert panel.series_combo.currentText() == "CEST" and panel.wassr_combo.currentText() == "WASSR"
    # the offsets come from the series' metadata (the JSON sidecar on reading)
    assert panel.offsets_edit.text().startswith("-300, -6")
    assert panel.canvas.minimumHeight() >= PLOT_MIN_HEIGHT

    # before computing: the raw Z-spectrum of the voxel under the cursor
    ras = out["series"].index_to_world([[1, 7, 7]])[0]
    drawn = panel.plot_at(ras)
    assert drawn["index"] == (1, 7, 7) and drawn["fit"] is None
    truth_raw = out["series"].data[1:, 1, 7, 7] / out["series"].data[0, 1, 7, 7]
    np.testing.assert_allclose(drawn["y"], truth_raw, rtol=1e-5)

    panel.extra_pools_edit.setText("lrp:3.4")
    panel.mtrasym_edit.setText("3.4")
    panel.run()
    qtbot.waitUntil(lambda: panel.result is not None and not panel.runner.running, timeout=120000)
    res = panel.result
    inside = labels > 0
    assert np.nanmax(np.abs(res.b0_ppm[inside] - b0[inside])) < 0.02
    names = [ly.name for ly in panel.output_layers]
    assert "CEST b0_ppm" in names and "CEST amplitude_lrp" in names and "CEST mtrasym_3.4ppm" in names
    b0_layer = viewer.layers["CEST b0_ppm"]
    assert b0_layer.colormap.name == "PiYG" and b0_layer.contrast_limits[0] == -b0_layer.contrast_limits[1]

    # after computing: the B0-corrected spectrum, its fit and MTRasym; the plot updates within 100 ms
    drawn = panel.plot_at(out["series"].index_to_world([[0, 6, 6]])[0])  # inside the LRP depot
    assert drawn["fit"] is not None and drawn["reference"] is not None
    assert "lrp amplitude" in drawn["text"]
    # MTRasym at 3.4 ppm in the plot equals the map's value at that voxel
    mtr_plot = drawn["mtrasym"][np.isclose(drawn["asym_x"], 3.4)][0]
    assert mtr_plot == pytest.approx(float(res.maps["mtrasym_3.4ppm"].data[0, 6, 6]), abs=2e-3)
    # the fit follows the corrected data
    fitted = np.interp(res.dw, drawn["fit_x"], drawn["fit"])
    assert np.sqrt(np.nanmean((fitted - drawn["y"]) ** 2)) < 0.02
    import time

    from qtpy.QtWidgets import QApplication

    times = []
    for j in range(2, 12):  # each update measured until Qt has painted it
        start = time.perf_counter()
        panel.plot_at(out["series"].index_to_world([[1, j, 12 - j]])[0])
        QApplication.processEvents()
        times.append(1000 * (time.perf_counter() - start))
    assert np.median(times) <= 100.0, times

    # ROI mean: the tumour label's mean spectrum, fitted once and cached
    panel.roi_check.setChecked(True)
    panel.roi_combo.setCurrentText("tissues")
    drawn = panel.plot_at(out["series"].index_to_world([[0, 5, 5]])[0])
    assert drawn["label"] == 2
    np.testing.assert_allclose(drawn["y"], np.nanmean(res.z[:, labels == 2], axis=1), rtol=1e-6)
    tumour_effect = out["truth"]["tissues"]["tumour"]["effects"]["amide"]
    assert tumour_effect > 0.01


def test_cest_panel_bad_input_is_one_line(make_napari_viewer, study):
    from napari_immunotrack.widgets.maps_cest import build_cest_panel

    out, _, _ = study
    viewer = make_napari_viewer()
    add_volume(viewer, out["series"])
    panel = build_cest_panel(viewer)
    panel.offsets_edit.setText("1, 2, 3")
    panel.run()
    assert "has 3 offsets" in panel.status.text() or panel.runner.running
    if panel.runner.running:  # the error comes back from the worker
        import time

        for _ in range(200):
            if not panel.runner.running:
                break
            time.sleep(0.05)
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
    assert "has 3 offsets" in panel.status.text() and "\n" not in panel.status.text()


def test_sample_cest_opens_plots_and_cancels(make_napari_viewer, qtbot):
    import json

    from napari_immunotrack.io import load_volume
    from napari_immunotrack.widgets.maps_cest import build_cest_panel, sample_cest_paths

    paths = sample_cest_paths()
    assert paths, "the sample CEST series is missing: run scripts/make_cest_sample.py"
    viewer = make_napari_viewer()
    panel = build_cest_panel(viewer)
    panel.open_sample()
    assert {"CEST", "WASSR", "CEST tissues"} <= {ly.name for ly in viewer.layers}
    assert panel.series_combo.currentText() == "CEST" and panel.wassr_combo.currentText() == "WASSR"
    assert panel.extra_pools_edit.text() == "lrp:3.4" and panel.wassr_offsets_edit.text().startswith("-1.5")
    # raw Z at the depot centre (before computing) equals the file's data over its M0 frame
    truth = json.loads(next(paths["CEST"].parent.glob("*_desc-truth_cest.json")).read_text())
    series = load_volume(paths["CEST"])
    drawn = panel.plot_at(truth["depot_centre_ras_mm"])
    idx = drawn["index"]
    data = np.asarray(series.data, float)[(slice(None),) + idx]
    np.testing.assert_allclose(drawn["y"], data[1:] / data[0], rtol=1e-5)
    # Cancel stops the computation: no maps, the status says so
    panel.run()
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.runner.running, timeout=60000)
    assert panel.result is None and not panel.output_layers
    assert "cancel" in panel.status.text().lower()
