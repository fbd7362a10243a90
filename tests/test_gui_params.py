"""The confirmation dock's form and its study-state values come from the parameter model (needs Xvfb)."""

import dataclasses

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
