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


def test_demo_progress_is_clean_and_every_warning_shown_is_in_a_provenance(tiny_study, tmp_path, capsys, monkeypatch):
    """Warnings are gathered into a summary at the end, and every one shown is in a provenance sidecar.

    The warnings actually shown are recorded independently by running with --debug (each one is then
    also passed to the command line's printer, replaced here by a recorder).
    """
    import napari_immunotrack.cli as cli
    from napari_immunotrack.errors import ImmunotrackWarning

    shown = []

    def recorder(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ImmunotrackWarning):
            shown.append(" ".join(str(message).split()))

    monkeypatch.setattr(cli, "_show_warning", recorder)
    out = tmp_path / "debug"
    assert main(["demo", str(tiny_study), "-o", str(out), "--debug"]) == 0
    capsys.readouterr()
    assert shown, "the tiny study's demo shows no warning: the test cannot check anything"
    recorded = set()
    for sidecar in out.rglob("*.provenance.json"):
        recorded.update(json.loads(sidecar.read_text()).get("warnings", []))
    # the report's session records prefix the step ("f19: ..."); the demo's own files hold the plain text
    plain = recorded | {r.split(": ", 1)[1] for r in recorded if ": " in r}
    missing = [w for w in dict.fromkeys(shown) if w not in plain]
    assert not missing, f"shown but in no provenance: {missing[:3]}"
    # the demo's readouts carry the warnings of their own step, not an empty list
    mpi = json.loads((out / "mpi.csv.provenance.json").read_text())
    f19 = json.loads((out / "f19.csv.provenance.json").read_text())
    assert mpi["warnings"] or f19["warnings"]
    assert not set(mpi["warnings"]) & set(f19["warnings"])

    # without --debug: no warning line in the progress, one summary at the end with the same count
    monkeypatch.setattr(cli, "_show_warning", lambda *a, **k: pytest.fail("a warning was printed mid-run"))
    assert main(["demo", str(tiny_study), "-o", str(tmp_path / "plain")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err.lower()
    summary = captured.out.split("\nwarnings: ", 1)[1]
    count = int(summary.split(" shown during the run", 1)[0])
    # (the registrations' random sampling makes a few numbers, hence warnings, differ between runs)
    assert abs(count - len(shown)) <= 0.2 * len(shown)
    kinds = [line[4:] for line in summary.splitlines()[1:] if line.startswith("  - ")]
    assert 1 <= len(kinds) < count  # similar warnings (ROI 1 / ROI 3) are one line
    # each line is a warning of the kinds shown, with how often and where it came
    stems = {w.split(":")[0].split(" ")[0] for w in shown}
    assert all(k.split(":")[0].split(" ")[0] in stems for k in kinds)
    assert any("x: " in k and "day" in k for k in kinds)
    assert captured.out.rstrip().endswith("(each with a .provenance.json)")
