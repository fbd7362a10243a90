"""`immunotrack demo` end to end on a small simulated study, checked against its ground truth."""

import json

import pandas as pd
import pytest

from napari_immunotrack.cli import main


@pytest.fixture(scope="module")
def tiny_study(simulated_study):
    return simulated_study  # tests/conftest.py: one tiny study for the session


def test_demo_numbers_match_the_truth(tiny_study, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(tiny_study), "-o", str(out)]) == 0
    comparison = pd.read_csv(out / "comparison_with_truth.csv")
    rows = {(q, s): m for q, s, m in zip(comparison["quantity"], comparison["site"], comparison["measured"])}
    # registration of the other scanners to the MRI: sub-millimetre against the simulator's transforms
    assert rows[("registration TRE mean (pet)", "MRI field of view")] < 1.0
    assert rows[("registration TRE mean (spect)", "MRI field of view")] < 1.0
    # both dual-mode sites confirmed, no confounder confirmed, no cluster on a pre-existing dark spot
    confirmed = comparison[comparison["quantity"] == "dual-mode site confirmed"]["measured"]
    assert len(confirmed) == 2 and confirmed.min() == 1.0
    assert comparison[comparison["quantity"] == "confounder confirmed"]["measured"].max() == 0.0
    assert rows[("clusters on a confounder (pre-existing dark spot)", "all")] == 0
    assert rows[("clusters within 1 mm of a true focus (precision)", "all")] >= 0.8
    # MPI iron in the liver (the largest depot) within 10% of the iron put in
    assert (
        abs(
            comparison[(comparison["quantity"] == "MPI iron") & (comparison["site"] == "liver")]["error_percent"].iloc[
                0
            ]
        )
        < 10
    )
    # every output has its provenance record
    for name in ("clusters.nii.gz", "confirmed.nii.gz", "pet.csv", "f19.csv", "mpi.csv", "from-pet_to-anat.tfm"):
        assert (out / name).exists()
        prov = json.loads((out / (name + ".provenance.json")).read_text())
        assert prov["step"] == "demo" and prov["inputs"]["study"]["sha256"]
    assert "comparison with the ground truth" in capsys.readouterr().out


def test_demo_refuses_bad_input(tiny_study, tmp_path, capsys):
    not_simulated = tmp_path / "real"
    not_simulated.mkdir()
    assert main(["demo", str(not_simulated), "-o", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ground_truth.json" in err[0]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.csv").write_text("precious\n")
    assert main(["demo", str(tiny_study), "-o", str(occupied)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (occupied / "mine.csv").read_text() == "precious\n"


def test_a_failing_demo_leaves_the_previous_output_whole_and_nothing_new(tiny_study, tmp_path, capsys, monkeypatch):
    from napari_immunotrack.commands import demo as demo_mod

    real_write_outputs = demo_mod.write_outputs

    def write_some_then_fail(result, out_dir, provenance_base, overwrite):
        real_write_outputs(result, out_dir, provenance_base, overwrite)
        raise RuntimeError("disk went away")  # an internal error halfway through the outputs

    monkeypatch.setattr(demo_mod, "write_outputs", write_some_then_fail)
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "pet.csv").write_text("the last good run\n")
    assert main(["demo", str(tiny_study), "-o", str(previous), "--overwrite", "--no-report"]) == 1
    assert "internal error" in capsys.readouterr().err
    assert sorted(p.name for p in previous.iterdir()) == ["pet.csv"]
    assert (previous / "pet.csv").read_text() == "the last good run\n"
    assert main(["demo", str(tiny_study), "-o", str(tmp_path / "fresh"), "--no-report"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]  # no empty or half-written folder
