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
    with pytest.raises(InputError, match="confirm.normalise must be 'reference', 'field', 'tissue' or 'none'"):
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


# =============================================================================== the four other analyses
# clusters, PET/SPECT, 19F and MPI follow the same recipe (docs/parameter-models.md)
from napari_immunotrack.analysis.clusters import CLUSTER_PARAMETERS, DEFAULT_THRESHOLDS, segment_clusters  # noqa: E402
from napari_immunotrack.analysis.fluorine import FLUORINE_PARAMETERS, fluorine_cells  # noqa: E402
from napari_immunotrack.analysis.mpi import MPI_PARAMETERS, mpi_iron  # noqa: E402
from napari_immunotrack.analysis.pet import PET_PARAMETERS, quantify_pet  # noqa: E402
from napari_immunotrack.volume import Volume  # noqa: E402

#: The defaults each analysis wrote in its signature, CLI verb and batch step before its model (the old literals).
OLD_DEFAULTS = {
    "clusters": dict(
        method="fraction",
        threshold=None,
        min_size=3,
        connectivity=26,
        baseline_ratio=0.6,
        baseline_rule="ratio",
        baseline_k=3.0,
        split_touching=True,
        split_h=0.1,
        sigma=None,
        baseline_tolerance_voxels=1,
    ),
    "pet": dict(
        lbm_formula="janmahasatian", supersample=3, density_g_ml=None, peak=True, peak_ml=None, peak_fwhm_mm=None
    ),
    "f19": dict(
        reference_concentration_mm=None,
        fluorine_per_cell=None,
        noise_sigma=None,
        snr_threshold=3.5,
        min_cluster_voxels=3,
        connectivity=26,
        fluorine_atoms_per_molecule=1.0,
        rician_correction="power",
        supersample=3,
        near_threshold_factor=1.5,
        estimator="whole-roi",
    ),
    "mpi": dict(iron_per_cell_pg=5.0, radius_mm=3.0, dilate_mm=1.0, supersample=3),
}
MODELS = {"clusters": CLUSTER_PARAMETERS, "pet": PET_PARAMETERS, "f19": FLUORINE_PARAMETERS, "mpi": MPI_PARAMETERS}
FUNCTIONS = {"clusters": segment_clusters, "pet": quantify_pet, "f19": fluorine_cells, "mpi": mpi_iron}

#: Every option of the four verbs before their models (from `immunotrack X --help`): kept identical.
OLD_FLAGS = {
    "segment": "--background-mask --baseline --baseline-k --baseline-ratio --baseline-rule --baseline-tolerance-voxels "
    "--baseline-transform --baseline-transform-fixed --connectivity --debug --help --method --min-size --no-split "
    "--output --overwrite --reference-mask --search-mask --sigma --table --threshold -h -o",
    "quantify": "--acquisition-duration-s --bsa-formula --calibration-cps-per-mbq --debug --decay-correction --density "
    "--density-table --dose-mbq --frames --half-life-s --height-cm --help --injection-time --labels --lbm-formula "
    "--lean-mass-g --meeh-k --no-peak --output --overwrite --peak-fwhm-mm --peak-ml --positron-range --psf-fwhm --pvc "
    "--roi --scan-time --sex --species --supersample --suv --transform --transform-fixed --units --weight-kg "
    "--weight-unit -h -o",
    "fluorine": "--connectivity --debug --estimator --fluorine-atoms-per-molecule --fluorine-per-cell --help "
    "--min-cluster --noise-mask --noise-sigma --output --overwrite --psf-fwhm --pvc --reference-concentration "
    "--reference-mask --rician-correction --roi --snr-threshold --supersample --transform --transform-fixed -h -o",
    "mpi": "--background --debug --dilate-mm --fiducials --help --iron-per-cell --output --overwrite --psf-fwhm --pvc "
    "--radius-mm --roi --supersample --transform --transform-fixed -h -o",
}


def _verb_options(verb):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[verb]
    return sorted(s for a in sub._actions for s in a.option_strings)


def _verb_args(verb, tmp_path, extra=()):
    """The parsed minimal command line of a verb (inputs exist; nothing is run)."""
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz", "f.csv"):
        (tmp_path / name).touch()
    a, b, c = (str(tmp_path / n) for n in ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    base = {
        "segment": ["segment", a],
        "quantify": ["quantify", a, "--roi", b],
        "fluorine": ["fluorine", a, "--reference-mask", b, "--roi", c, "--reference-concentration", "50"]
        + ["--fluorine-per-cell", "1e12"],
        "mpi": ["mpi", a, "--fiducials", str(tmp_path / "f.csv"), "--roi", b, "--iron-per-cell", "5"],
    }[verb]
    return build_parser().parse_args([*base, "-o", str(tmp_path / "out.csv"), *extra])


CLI_OWN_DEFAULT = ("reference_concentration_mm", "fluorine_per_cell", "iron_per_cell_pg", "baseline_tolerance_voxels")
VERB_OF = {"clusters": "segment", "pet": "quantify", "f19": "fluorine", "mpi": "mpi"}


@pytest.mark.parametrize("step", list(OLD_DEFAULTS))
def test_each_model_holds_the_old_literal_defaults_and_every_surface_shows_them(step, tmp_path):
    model = MODELS[step]
    old = OLD_DEFAULTS[step]
    assert model.defaults() == old
    assert {k: type(v) for k, v in model.defaults().items()} == {k: type(v) for k, v in old.items()}  # 3.0 not 3
    sig = inspect.signature(FUNCTIONS[step]).parameters
    steps = batch.step_parameters(step)
    args = _verb_args(VERB_OF[step], tmp_path)
    for name, value in old.items():
        assert sig[name].default == value, name  # the function's signature
        assert steps[name] == value, name  # the batch step
        # the CLI (required options aside; --baseline-tolerance-voxels' None is "the model's, or auto's residual")
        if hasattr(args, name) and name not in CLI_OWN_DEFAULT:
            assert getattr(args, name) == value, name
    assert parameter_model_of(step) is model
    if step == "pet":  # the SPECT step reads the same function, so the same model
        assert batch.step_schema("spect") == model.json_schema()


def parameter_model_of(step):
    from napari_immunotrack.params import parameter_model

    return parameter_model(FUNCTIONS[step])


@pytest.mark.parametrize("verb", list(OLD_FLAGS))
def test_the_verbs_keep_every_option(verb):
    assert _verb_options(verb) == sorted(OLD_FLAGS[verb].split())


def test_the_example_pipeline_hash_is_the_one_before_the_models():
    """The resume hash of examples/pipeline.yaml is made of the old literals: finished tasks stay finished.

    The models' values in the resolved pipeline are replaced by the old literals and hashed again; the
    hash must not move (4f6190af... on the branch that introduced the models)."""
    import hashlib
    import json
    from pathlib import Path

    pipeline = batch.load_pipeline(Path(__file__).parents[1] / "examples" / "pipeline.yaml")
    resolved = pipeline.resolved()
    for step, old in OLD_DEFAULTS.items():
        for s in (step, "spect") if step == "pet" else (step,):
            if s in resolved["steps"]:
                given = pipeline.steps[s]
                resolved["steps"][s].update({k: v for k, v in old.items() if k not in given})
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == pipeline.sha256
    assert {"clusters", "pet", "spect", "f19", "mpi"} <= set(resolved["steps"])


# ---------------------------------------------------------------------------- same numbers with the model
def _cluster_scene():
    rng = np.random.default_rng(0)
    img = np.abs(100 + rng.normal(0, 5, (24, 24, 24)) + 1j * rng.normal(0, 5, (24, 24, 24))).astype(np.float32)
    pre = img.copy()
    img[8:11, 8:11, 8:11] = 5.0  # a new void
    img[15:18, 15:19, 15:17] = 20.0  # another
    img[3:5, 18:20, 3:5] = 10.0
    pre[3:5, 18:20, 3:5] = 10.0  # there before
    aff = np.diag([0.1, 0.1, 0.1, 1.0])
    ref = (np.indices(img.shape)[0] > 19).astype(np.uint8)
    return Volume(img, aff, modality="MR"), Volume(pre, aff, modality="MR"), Volume(ref, aff)


def _pet_scene(species="Mus musculus"):
    rng = np.random.default_rng(1)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    data = (1000.0 + rng.normal(0, 30, (24, 24, 24))).astype(np.float32)
    data[6:12, 6:12, 6:12] += 9000.0
    labels = np.zeros(data.shape, np.int16)
    labels[5:13, 5:13, 5:13] = 1
    labels[16:22, 16:22, 16:22] = 2
    meta = {
        "Units": "BQML",
        "DecayCorrection": "ADMIN",
        "RadionuclideTotalDose": 10e6,
        "PatientWeight": 0.025,
        "PatientSpeciesDescription": species,
    }
    return Volume(data, aff, "PT", "Bq/mL", meta), Volume(labels, aff)


@pytest.fixture(scope="module")
def quant_scene():
    from napari_immunotrack.simulate import quantitative_scene

    return quantitative_scene(seed=3)


def _frames_equal(a, b):
    import pandas as pd

    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["parameters"] == b.attrs["parameters"]


def test_the_models_give_the_same_numbers_as_the_old_literals(quant_scene):
    sc = quant_scene
    # clusters
    post, pre, ref = _cluster_scene()
    a = segment_clusters(post, baseline=pre, reference_mask=ref)
    b = segment_clusters(post, baseline=pre, reference_mask=ref, **OLD_DEFAULTS["clusters"])
    assert np.array_equal(a.labels.numpy(), b.labels.numpy()) and len(a.table) == len(b.table) == 2
    import pandas as pd

    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.rule.threshold == DEFAULT_THRESHOLDS["fraction"]
    # PET
    pet, labels = _pet_scene()
    a = quantify_pet(pet, labels)
    b = quantify_pet(pet, labels, **OLD_DEFAULTS["pet"])
    _frames_equal(a, b)
    assert a["suv_bw_mean"].iloc[0] > 0 and "suv_bw_peak" in "".join(a.columns)
    # 19F (the reference and the per-cell load have no default: given)
    args = (sc["f19"], sc["f19_depot_labels"], sc["f19_reference_mask"], sc["f19_reference_mM"], 1e12)
    old = {k: v for k, v in OLD_DEFAULTS["f19"].items() if k not in ("reference_concentration_mm", "fluorine_per_cell")}
    _frames_equal(fluorine_cells(*args), fluorine_cells(*args, **old))
    # MPI: the function now has the pipeline's 5 pg default
    a = mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"])
    b = mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"], **OLD_DEFAULTS["mpi"])
    _frames_equal(a, b)
    assert a.attrs["parameters"]["iron_per_cell_pg"] == 5.0


# ---------------------------------------------------------------------------- a changed default moves everything
CHANGES = {
    "clusters": {"min_size": 5, "baseline_ratio": 0.5, "connectivity": 6, "method": "ksigma"},
    "pet": {"lbm_formula": "james", "supersample": 2, "peak": False},
    "f19": {"snr_threshold": 4.0, "min_cluster_voxels": 2, "estimator": "threshold", "connectivity": 18},
    "mpi": {"iron_per_cell_pg": 7.5, "radius_mm": 2.5, "dilate_mm": 0.0},
}


def _change(monkeypatch, model, changes):
    for name, value in changes.items():
        monkeypatch.setitem(model.params, name, dataclasses.replace(model[name], default=value))


@pytest.mark.parametrize("step", list(CHANGES))
def test_changing_a_model_moves_its_cli_batch_function_and_state(step, monkeypatch, tmp_path, quant_scene):
    model, changes = MODELS[step], CHANGES[step]
    _change(monkeypatch, model, changes)
    args = _verb_args(VERB_OF[step], tmp_path)
    on_cli = {k: v for k, v in changes.items() if k != "iron_per_cell_pg"}  # --iron-per-cell is required
    assert {k: getattr(args, k) for k in on_cli} == on_cli
    assert {k: batch.step_parameters(step)[k] for k in changes} == changes
    resolved = batch.parse_pipeline(f"steps:\n  {step}: {{}}\n").resolved()["steps"][step]
    assert {k: resolved[k] for k in changes} == changes
    assert {k: model.from_state({})[0][k] for k in changes} == changes
    # the function called without them runs with the new values
    sc = quant_scene
    if step == "clusters":
        post, pre, ref = _cluster_scene()
        res = segment_clusters(post, baseline=pre, reference_mask=ref)
        assert res.rule.method == "ksigma" and res.rule.threshold == DEFAULT_THRESHOLDS["ksigma"]
        assert {k: res.parameters[k] for k in ("min_size", "connectivity", "baseline_ratio")} == {
            k: changes[k] for k in ("min_size", "connectivity", "baseline_ratio")
        }
    elif step == "pet":
        pet, labels = _pet_scene(species="Homo sapiens")
        df = quantify_pet(pet, labels, suv_types=("bw", "lbm"), sex="M", height_cm=175.0, weight_kg=70.0)
        assert df.attrs["parameters"]["lbm_formula"] == "james" and df.attrs["parameters"]["supersample"] == 2
        assert not any("peak" in c for c in df.columns)  # peak off by default now
    elif step == "f19":
        df = fluorine_cells(sc["f19"], sc["f19_depot_labels"], sc["f19_reference_mask"], sc["f19_reference_mM"], 1e12)
        p = df.attrs["parameters"]
        assert (p["estimator"], p["snr_threshold"], p["min_cluster_voxels"], p["connectivity"]) == (
            "threshold",
            4.0,
            2,
            18,
        )
    else:
        df = mpi_iron(sc["mpi"], sc["mpi_depot_labels"], sc["mpi_fiducials"])
        assert df.attrs["parameters"]["iron_per_cell_pg"] == 7.5 and df.attrs["parameters"]["radius_mm"] == 2.5
        ok = df["status"] == "ok"
        assert np.allclose(df.loc[ok, "cell_count"], df.loc[ok, "iron_ng"] * 1000 / 7.5)
        assert "iron_ng_dilated" not in df or df["iron_ng_dilated"].isna().all()  # dilation 0 = off


def test_the_session_pipeline_reads_the_mpi_and_19f_defaults_from_the_models(monkeypatch, tmp_path):
    """pipeline.analyse_inputs records (and would use) the models' iron and 19F per-cell defaults."""
    from napari_immunotrack.io import save_volume
    from napari_immunotrack.pipeline import analyse_inputs

    save_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4), "MR"), tmp_path / "t1.nii.gz")
    inputs = {"T1w": tmp_path / "t1.nii.gz"}
    res = analyse_inputs(inputs, "01", "day1", steps=["mpi", "f19"])
    assert res.parameters["iron_per_cell_pg"] == 5.0 and res.parameters["fluorine_per_cell"] is None
    assert "fiducials" in res.errors["mpi"] or "MPI" in res.errors["mpi"]
    _change(monkeypatch, MPI_PARAMETERS, {"iron_per_cell_pg": 9.0})
    _change(monkeypatch, FLUORINE_PARAMETERS, {"fluorine_per_cell": 2e11})
    res = analyse_inputs(inputs, "01", "day1", steps=["mpi", "f19"])
    assert res.parameters["iron_per_cell_pg"] == 9.0 and res.parameters["fluorine_per_cell"] == 2e11
    res = analyse_inputs(inputs, "01", "day1", steps=["mpi"], parameters={"mpi": {"iron_per_cell_pg": 3.0}})
    assert res.parameters["iron_per_cell_pg"] == 3.0


def test_the_four_models_limits_everywhere(tmp_path, capsys):
    # function: one InputError line naming the keyword
    post, pre, ref = _cluster_scene()
    with pytest.raises(InputError, match="baseline_ratio must be from|baseline_ratio must be more than 0"):
        segment_clusters(post, baseline=pre, baseline_ratio=1.0)
    with pytest.raises(InputError, match="lbm_formula must be 'janmahasatian' or 'james'"):
        quantify_pet(*_pet_scene(), lbm_formula="hume")
    # 19F still takes the bool spellings of its Rician correction
    assert FLUORINE_PARAMETERS["rician_correction"].check(True) == "power"
    assert FLUORINE_PARAMETERS["rician_correction"].check(False) == "none"
    # CLI: argparse's one line, exit 2; "auto" is the model's None for --density and --peak-ml
    assert _verb_args("quantify", tmp_path, ["--density", "auto", "--peak-ml", "0.2"]).density_g_ml is None
    assert _verb_args("quantify", tmp_path, ["--peak-ml", "0.2", "--no-peak"]).peak is False
    for verb, extra, message in (
        ("mpi", ["--dilate-mm", "-1"], "--dilate-mm: -1 must be at least 0 (mm)"),
        ("fluorine", ["--estimator", "median"], "--estimator: median must be 'whole-roi' or 'threshold'"),
        ("quantify", ["--density", "dense"], "'dense' is not a number; it must be a number or auto"),
        ("segment", ["--baseline-tolerance-voxels", "9"], "9 must be between 1 and 5 (voxels)"),
    ):
        with pytest.raises(SystemExit) as exc:
            _verb_args(verb, tmp_path, extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
    # batch: the line of the pipeline file is named
    for text, message in (
        ("steps:\n  mpi:\n    iron_per_cell_pg: 0\n", "p.yaml line 3: mpi.iron_per_cell_pg must be greater than 0"),
        ("steps:\n  f19:\n    fluorine_per_cell: -1\n", "p.yaml line 3: f19.fluorine_per_cell must be greater"),
        ("steps:\n  clusters:\n    min_size: 0\n", "p.yaml line 3: clusters.min_size must be at least 1"),
        ("steps:\n  spect:\n    supersample: 0\n", "p.yaml line 3: spect.supersample must be at least 1"),
    ):
        with pytest.raises(InputError, match=message):
            batch.parse_pipeline(text, "p.yaml")
    assert batch.parse_pipeline("steps:\n  f19: {fluorine_per_cell: null}\n").steps["f19"] == {
        "fluorine_per_cell": None
    }
