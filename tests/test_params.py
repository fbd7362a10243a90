"""The parameter model: one place for an analysis' defaults, followed by the function, CLI, batch and state."""

import dataclasses
import inspect

import numpy as np
import pytest

from napari_immunotrack import batch
from napari_immunotrack.analysis.confirm import CONFIRM_PARAMETERS, confirm_dual_mode
from napari_immunotrack.cli import build_parser
from napari_immunotrack.errors import InputError
from napari_immunotrack.params import FROM_MODEL, Param, ParamModel
from napari_immunotrack.simulate import dual_mode_scene

CHANGED = {"t1_threshold": 0.35, "min_size": 5, "connectivity": 6, "normalise": "tissue", "k_sigma": 2.5}


@pytest.fixture
def changed_model(monkeypatch):
    """CONFIRM_PARAMETERS with some defaults changed, as a maintainer would change them in the model."""
    for name, value in CHANGED.items():
        monkeypatch.setitem(
            CONFIRM_PARAMETERS.params, name, dataclasses.replace(CONFIRM_PARAMETERS[name], default=value)
        )
    return CONFIRM_PARAMETERS


def _cli_args(tmp_path, extra=()):
    t1, t2 = tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"
    for p in (t1, t2):
        p.touch()
    return build_parser().parse_args(
        ["confirm", "--t1", str(t1), "--t2", str(t2), "-o", str(tmp_path / "o.nii.gz"), *extra]
    )


def test_every_surface_shows_the_model_defaults(tmp_path):
    model = CONFIRM_PARAMETERS
    args = _cli_args(tmp_path)
    steps = batch.step_parameters("confirm")
    sig = inspect.signature(confirm_dual_mode).parameters
    state, problems = model.from_state({})
    assert not problems
    for p in model:
        assert getattr(args, p.name) == p.default, p.name  # CLI
        assert steps[p.name] == p.default, p.name  # batch pipeline step
        assert sig[p.name].default == p.default, p.name  # the function's signature
        assert state[p.name] == p.default, p.name  # a state that lacks it


def test_changing_the_model_moves_cli_batch_function_and_state(changed_model, tmp_path):
    args = _cli_args(tmp_path)
    assert {k: getattr(args, k) for k in CHANGED} == CHANGED
    assert {k: batch.step_parameters("confirm")[k] for k in CHANGED} == CHANGED
    resolved = batch.parse_pipeline("steps:\n  confirm: {}\n").resolved()["steps"]["confirm"]
    assert {k: resolved[k] for k in CHANGED} == CHANGED
    assert {k: changed_model.from_state({})[0][k] for k in CHANGED} == CHANGED
    # the function called without them (as the batch pipeline calls it) runs with the model's values
    scene = dual_mode_scene(seed=3, snr=20.0, concentration_mM=(0.5, 1.0))
    res = confirm_dual_mode(scene["t1_post"], scene["t2_post"], scene["t1_pre"], scene["t2_pre"])
    assert {k: res.parameters[k] for k in CHANGED} == CHANGED
    # and the value changes the result as it should: connectivity 6 and min size 5 keep no region smaller
    sizes = res.table.voxels.to_numpy()
    assert sizes.size and sizes.min() >= 5


def test_the_model_default_is_the_old_literal_default_and_gives_the_same_numbers():
    """Moving the defaults into the model changed no number: explicit old values == model defaults."""
    old = dict(
        t1_threshold=0.2,
        t2_threshold=0.2,
        k_sigma=3.0,
        k_sigma_grow=2.0,
        min_size=3,
        opening=False,
        connectivity=26,
        r2_over_r1=None,
        normalise="reference",
        min_baseline_snr=5.0,
        min_delta_r1=0.0,
        min_delta_r2=0.0,
    )
    assert CONFIRM_PARAMETERS.defaults() == old
    scene = dual_mode_scene(seed=3, snr=20.0, concentration_mM=(0.5, 1.0))
    vols = (scene["t1_post"], scene["t2_post"], scene["t1_pre"], scene["t2_pre"])
    a = confirm_dual_mode(*vols)
    b = confirm_dual_mode(*vols, **old)
    assert np.array_equal(a.labels.numpy(), b.labels.numpy()) and a.n_regions == b.n_regions >= 1


def test_limits_come_from_the_model_everywhere(tmp_path, capsys):
    # function
    with pytest.raises(InputError, match="t1_threshold must be a fraction between 0 and 1"):
        confirm_dual_mode(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), t1_threshold=1.5)
    # CLI: argparse's one line, exit 2
    with pytest.raises(SystemExit) as exc:
        _cli_args(tmp_path, ["--min-size", "0"])
    assert exc.value.code == 2 and "0 must be at least 1 (voxels)" in capsys.readouterr().err
    # batch: the line of the pipeline file is named
    with pytest.raises(InputError, match=r"p.yaml line 3: confirm.t2_threshold must be a fraction"):
        batch.parse_pipeline("steps:\n  confirm:\n    t2_threshold: 1.0\n", "p.yaml")
    with pytest.raises(InputError, match="confirm.normalise must be 'reference', 'tissue' or 'none'"):
        batch.parse_pipeline("steps:\n  confirm: {normalise: zscore}\n", "p.yaml")
    # state: a bad saved value is reported and replaced by the default
    values, problems = CONFIRM_PARAMETERS.from_state({"k_sigma": -1, "min_size": 4, "unknown": 1})
    assert values["k_sigma"] == 3.0 and values["min_size"] == 4 and len(problems) == 1
    # the batch schema is the model's
    schema = batch.step_schema("confirm")
    assert schema["properties"]["t1_threshold"] == {
        "type": "number",
        "default": 0.2,
        "minimum": 0.0,
        "exclusiveMaximum": 1.0,
        "x-unit": "fraction",
        "description": CONFIRM_PARAMETERS["t1_threshold"].describe(),
    }
    assert schema["properties"]["connectivity"]["enum"] == [6, 18, 26]


def test_param_model_rules():
    model = ParamModel(
        "m",
        [
            Param("a", float, 1.0, "a value", minimum=0.0, exclusive_minimum=True),
            Param("n", int, 2, "a count", minimum=1, maximum=9),
            Param("flag", bool, True, "a switch"),
        ],
    )
    assert model.validate({"n": np.int64(4), "a": 2}) == {"a": 2.0, "n": 4, "flag": True}
    for bad in ({"a": 0.0}, {"a": float("nan")}, {"n": 10}, {"n": 2.5}, {"n": True}, {"flag": 1}, {"zz": 1}):
        with pytest.raises(InputError):
            model.validate(bad)
    with pytest.raises(TypeError):  # a default that breaks its own rule is refused when the model is written
        Param("x", float, -1.0, "x", minimum=0.0)

    @model.bind
    def f(a=FROM_MODEL, n=FROM_MODEL, flag=FROM_MODEL, other=7):
        return a, n, flag, other

    assert f() == (1.0, 2, True, 7) and f(3, n=5) == (3.0, 5, True, 7)
    with pytest.raises(InputError, match="n must be between 1 and 9, got 0"):
        f(n=0)
    parser = __import__("argparse").ArgumentParser()
    model.add_arguments(parser)
    assert vars(parser.parse_args(["--no-flag", "--n", "3"])) == {"a": 1.0, "n": 3, "flag": False}
