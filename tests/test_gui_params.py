"""The docks' forms and their study-state values come from the parameter models (needs Xvfb):
T1-T2 confirmation, iron clusters and quantitative readouts (PET/SPECT)."""

import dataclasses

import numpy as np
import pytest

from napari_immunotrack.analysis.confirm import CONFIRM_PARAMETERS
from napari_immunotrack.simulate import dual_mode_scene
from napari_immunotrack.widgets._common import add_volume

pytestmark = pytest.mark.gui

CHANGED = {"t1_threshold": 0.35, "min_size": 5, "k_sigma": 2.5, "opening": True, "connectivity": 6}


def test_form_and_state_follow_the_model(make_napari_viewer, monkeypatch):
    from napari_immunotrack.widgets.confirm import FORM_PARAMETERS, ConfirmWidget

    viewer = make_napari_viewer(show=False)
    plain = ConfirmWidget(viewer)
    assert plain.parameters() == CONFIRM_PARAMETERS.defaults()  # nothing written twice
    spin = plain.t1_threshold
    p = CONFIRM_PARAMETERS["t1_threshold"]
    assert (spin.value(), spin.minimum(), spin.maximum(), spin.singleStep()) == (0.2, 0.0, 0.99, 0.05)
    assert spin.toolTip() == p.describe()

    for name, value in CHANGED.items():
        monkeypatch.setitem(
            CONFIRM_PARAMETERS.params, name, dataclasses.replace(CONFIRM_PARAMETERS[name], default=value)
        )
    widget = ConfirmWidget(viewer)
    params = widget.parameters()
    assert {k: params[k] for k in CHANGED} == CHANGED
    assert widget.t1_threshold.value() == 0.35 and widget.min_size.value() == 5 and widget.opening.isChecked()
    # the saved state holds every model parameter, with the model's values
    state = widget.state_parameters()
    assert {k: state[k] for k in CONFIRM_PARAMETERS.names} == params
    # a state that lacks a value reopens with the model's default; a saved value wins
    widget.t1_threshold.setValue(0.5)
    widget.set_state_parameters({"min_size": 7})
    assert widget.t1_threshold.value() == 0.35 and widget.min_size.value() == 7
    assert widget.parameters()["connectivity"] == 6  # not in the form: kept from the model
    # a state written before the model (values read from the widgets in order) still reopens
    widget.set_state_parameters({"QDoubleSpinBox0": 0.3, "QSpinBox0": 9, "QCheckBox0": False})
    got = widget.parameters()
    assert (got["t1_threshold"], got["min_size"], got["opening"]) == (0.3, 9, False)
    assert set(FORM_PARAMETERS) <= set(CONFIRM_PARAMETERS.names)


def test_state_round_trip(make_napari_viewer, tmp_path):
    """What state_parameters saves, set_state_parameters shows again (values, hidden parameters, layers)."""
    from napari_immunotrack.widgets.confirm import ConfirmWidget

    viewer = make_napari_viewer(show=False)
    scene = dual_mode_scene(seed=3, snr=20.0, concentration_mM=(0.5, 1.0))
    for key in ("t1_pre", "t2_pre", "t1_post", "t2_post"):
        add_volume(viewer, scene[key])
    widget = ConfirmWidget(viewer)
    widget.k_sigma.setValue(4.5)
    widget.other_parameters["normalise"] = "tissue"
    state = widget.state_parameters()
    assert state["k_sigma"] == 4.5 and state["normalise"] == "tissue"
    assert state["inputs"]["t1_post"] == "T1w_post"
    other = ConfirmWidget(viewer)
    other.set_state_parameters(state)
    assert other.parameters() == widget.parameters()


# ---------------------------------------------------------------------------- the iron clusters dock
CLUSTER_CHANGED = {
    "min_size": 6,
    "baseline_ratio": 0.45,
    "connectivity": 18,
    "split_touching": False,
    "baseline_k": 4.0,
}


def test_cluster_form_and_state_follow_the_model(make_napari_viewer, monkeypatch):
    from napari_immunotrack.analysis.clusters import CLUSTER_PARAMETERS, DEFAULT_THRESHOLDS
    from napari_immunotrack.widgets.clusters import FORM_PARAMETERS, ClusterWidget

    viewer = make_napari_viewer(show=False)
    plain = ClusterWidget(viewer)
    # the function's own defaults, the threshold shown for the method (the model's None = the method's default)
    assert plain.parameters() == {**CLUSTER_PARAMETERS.defaults(), "threshold": DEFAULT_THRESHOLDS["fraction"]}
    ratio = plain.baseline_ratio
    assert (ratio.value(), ratio.minimum(), ratio.maximum(), ratio.singleStep()) == (0.6, 0.05, 0.95, 0.05)
    assert plain.min_size.minimum() == 1 and plain.min_size.value() == 3
    assert plain.connectivity.currentText() == "26" and plain.split.isChecked()
    assert [plain.method.itemText(i) for i in range(plain.method.count())] == list(CLUSTER_PARAMETERS["method"].choices)
    assert plain.min_size.toolTip() == CLUSTER_PARAMETERS["min_size"].describe()
    # the dock's settings are a valid clusters step of a pipeline file, with the same values
    from napari_immunotrack import batch

    exported = batch.parse_pipeline(batch.pipeline_from_settings({"clusters": plain.parameters()}))
    assert exported.resolved()["steps"]["clusters"] == {**batch.step_parameters("clusters"), **plain.parameters()}

    for name, value in CLUSTER_CHANGED.items():
        monkeypatch.setitem(
            CLUSTER_PARAMETERS.params, name, dataclasses.replace(CLUSTER_PARAMETERS[name], default=value)
        )
    widget = ClusterWidget(viewer)
    params = widget.parameters()
    assert {k: params[k] for k in CLUSTER_CHANGED} == CLUSTER_CHANGED
    assert widget.min_size.value() == 6 and widget.connectivity.currentText() == "18" and not widget.split.isChecked()
    state = widget.state_parameters()
    assert {k: state[k] for k in CLUSTER_PARAMETERS.names} == params
    # a state that lacks a value reopens with the model's default; a saved value wins; the threshold follows
    widget.baseline_ratio.setValue(0.8)
    widget.set_state_parameters({"min_size": 9, "method": "ksigma", "threshold": 2.5})
    got = widget.parameters()
    assert (got["baseline_ratio"], got["min_size"], got["method"], got["threshold"]) == (0.45, 9, "ksigma", 2.5)
    assert got["baseline_k"] == 4.0  # not in the form: kept from the model
    # a state written before the model (values read from the widgets in order) still reopens
    widget.set_state_parameters(
        {"QComboBox5": "percentile", "QDoubleSpinBox0": 20.0, "QSpinBox0": 4, "QComboBox6": "6", "QCheckBox1": True}
    )
    got = widget.parameters()
    assert (got["method"], got["threshold"], got["min_size"], got["connectivity"], got["split_touching"]) == (
        "percentile",
        20.0,
        4,
        6,
        True,
    )
    assert set(FORM_PARAMETERS) <= set(CLUSTER_PARAMETERS.names)
    # a bad saved value is reported and replaced by the default
    widget.set_state_parameters({"min_size": 0})
    assert widget.parameters()["min_size"] == 6


def test_cluster_state_round_trip_with_layers(make_napari_viewer):
    from napari_immunotrack.widgets.clusters import ClusterWidget

    viewer = make_napari_viewer(show=False)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(100, 5, (8, 8, 8)).astype(np.float32), name="T2starw_post")
    viewer.add_image(rng.normal(100, 5, (8, 8, 8)).astype(np.float32), name="T2starw_pre_day0")
    widget = ClusterWidget(viewer)
    widget.method.setCurrentText("blob")
    widget.threshold.setValue(0.3)
    widget.other_parameters["split_h"] = 0.2
    widget.same_world.setChecked(True)
    state = widget.state_parameters()
    assert state["inputs"]["post"] == "T2starw_post" and state["split_h"] == 0.2
    other = ClusterWidget(viewer)
    other.select(baseline=None)
    other.set_state_parameters(state)
    assert other.parameters() == widget.parameters() and other.same_world.isChecked()
    assert other.pickers.names(other.combos) == widget.pickers.names(widget.combos)


# ---------------------------------------------------------------------------- the quantitative readouts dock
def test_readout_parameters_and_state_follow_the_pet_model(make_napari_viewer, monkeypatch):
    from napari_immunotrack import batch
    from napari_immunotrack.analysis.pet import PET_PARAMETERS, SUV_TYPES
    from napari_immunotrack.widgets.readout import ReadoutWidget

    viewer = make_napari_viewer(show=False)
    plain = ReadoutWidget(viewer)
    assert [plain.suv_combo.itemText(i) for i in range(plain.suv_combo.count())] == list(SUV_TYPES)
    assert plain.parameters() == {"suv_types": ["bw"], "pvc": "none", "psf_fwhm": None, **PET_PARAMETERS.defaults()}
    # the dock's settings are a valid pet step of a pipeline file
    assert batch.parse_pipeline(batch.pipeline_from_settings({"pet": plain.parameters()})).steps["pet"]["peak"] is True

    changed = {"lbm_formula": "james", "peak": False, "density_g_ml": 1.04}
    for name, value in changed.items():
        monkeypatch.setitem(PET_PARAMETERS.params, name, dataclasses.replace(PET_PARAMETERS[name], default=value))
    widget = ReadoutWidget(viewer)
    assert {k: widget.parameters()[k] for k in changed} == changed
    widget.suv_combo.setCurrentText("lbm")
    widget.psf_edit.setText("1.5")
    state = widget.state_parameters()
    assert {k: state[k] for k in PET_PARAMETERS.names} == PET_PARAMETERS.defaults()
    assert (state["suv_type"], state["psf_fwhm"]) == ("lbm", "1.5")
    other = ReadoutWidget(viewer)
    other.set_state_parameters({**state, "supersample": 2})
    assert other.parameters() == {**widget.parameters(), "supersample": 2}
    # a state written before the model (combo boxes in order, header fields by name) still reopens
    other.set_state_parameters({"QComboBox1": "bsa", "QComboBox2": "gtm", "QLineEdit0": "2,2,3", "dose_mbq": "9.5"})
    got = other.parameters()
    assert (got["suv_types"], got["pvc"], got["psf_fwhm"]) == (["bsa"], "gtm", "2,2,3")
    assert other.header_edits["dose_mbq"].text() == "9.5"
    assert got["lbm_formula"] == "james"  # missing from that state: the model's default


def test_the_study_dock_saves_and_reopens_the_docks_through_their_models(make_napari_viewer):
    """What the Study dock writes in a state for the clusters and readouts docks, and reopens (old states too)."""
    from napari_immunotrack.analysis.clusters import CLUSTER_PARAMETERS
    from napari_immunotrack.analysis.pet import PET_PARAMETERS
    from napari_immunotrack.widgets.clusters import ClusterWidget
    from napari_immunotrack.widgets.readout import ReadoutWidget
    from napari_immunotrack.widgets.study import StudyWidget

    viewer = make_napari_viewer(show=False)
    study = StudyWidget(viewer)
    viewer.window.add_dock_widget(study, name="Study", area="right")
    clusters, readout = ClusterWidget(viewer), ReadoutWidget(viewer)
    viewer.window.add_dock_widget(clusters, name="Iron clusters", area="right")
    viewer.window.add_dock_widget(readout, name="Quantitative readouts", area="right")
    try:
        clusters.min_size.setValue(8)
        readout.other_parameters["lbm_formula"] = "james"
        saved = study._collect_parameters()
        assert set(CLUSTER_PARAMETERS.names) <= set(saved["Iron clusters"]) and saved["Iron clusters"]["min_size"] == 8
        assert {k: saved["Quantitative readouts"][k] for k in PET_PARAMETERS.names}["lbm_formula"] == "james"
        clusters.min_size.setValue(3)
        readout.other_parameters["lbm_formula"] = "janmahasatian"
        study._apply_parameters(saved)
        assert clusters.parameters()["min_size"] == 8 and readout.parameters()["lbm_formula"] == "james"
        # a state saved before the models (generic widget values) reopens into the same widgets
        study._apply_parameters({"Iron clusters": {"QSpinBox0": 11, "QDoubleSpinBox1": 0.7}})
        assert (clusters.parameters()["min_size"], clusters.parameters()["baseline_ratio"]) == (11, 0.7)
    finally:
        study.shutdown()
