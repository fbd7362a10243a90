"""`immunotrack report` on a small simulated study: the HTML, the tables and figures with their provenance,
the macrophage flag against the ground truth, reuse of unchanged analyses, and bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.cli import main


@pytest.fixture(scope="module")
def study(simulated_study):
    return simulated_study  # tests/conftest.py: one tiny study for the session (days 0, 1, 3, 7)


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report"
    rc = main(["report", str(study), "-o", str(out), "--dpi", "60", "--no-pdf"])
    return rc, out


def test_report_flags_the_macrophage_site_and_no_true_site(report, study, capsys):
    rc, out = report
    assert rc == 0
    flags = pd.read_csv(out / "tables" / "site_flags.csv").set_index("site")
    truth = json.loads((study / "ground_truth.json").read_text())["subjects"]["01"]["sessions"]["ses-day7"]["sites"]
    # the liver's signal is macrophage-held on day 7 (truth: > 90% of its iron), the targets' is not. The priors
    # are literature defaults, not the simulation's design (issue 22: no circular validation), so the model
    # is validated here, not fitted to the truth.
    assert truth["liver"]["false_positive_fraction_iron"] > 0.9
    assessed = flags.dropna(subset=["unexplained_fraction_last"])
    assert assessed["unexplained_fraction_last"].idxmax() == "liver"
    assert flags.loc["liver", "unexplained_fraction_last"] > 0.8
    for site in ("tumour", "ln_inguinal_right", "ln_iliac"):
        assert truth[site]["false_positive_fraction_iron"] < 0.6
        assert flags.loc[site, "macrophage_flag"] == False  # noqa: E712
    cmp = pd.read_csv(out / "tables" / "comparison_with_truth.csv")
    # every readout is compared, PET and SPECT included
    assert {"19F", "MPI iron", "PET", "SPECT"} <= set(cmp["readout"])
    liver = cmp[cmp["site"] == "liver"].set_index("readout")
    # cells_corrected counts macrophage-held label as cells (>5x the truth in the liver); the live-cell model
    # removes most of it
    assert (liver["cells_corrected"] > 5 * liver["true_live_cells"]).all()
    assert (liver["cells_model"] < 0.25 * liver["cells_corrected"]).all()


def test_report_html_tables_figures_and_provenance(report):
    rc, out = report
    page = (out / "index.html").read_text()
    for needle in (
        "Labelled-cell tracking report",
        "Sites flagged as macrophage-held",
        "liver",
        "Parameters and provenance",
        "k_signal_per_day",
        "literature defaults",
        "ASSUMES the doubling time",
        "figures/fused_pet_axial.png",
        "tables/site_flags.csv.provenance.json",
    ):
        assert needle in page, needle
    for name in ("fused_pet_axial", "montage_19f_days", "pet_mip_coronal", "bars_pet_suv", "timecourse_19f"):
        for ext in ("png", "svg"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000
            prov = json.loads((out / "figures" / f"{name}.{ext}.provenance.json").read_text())
            assert prov["parameters"]["dpi"] == 60 and prov["software"]["numpy"]
            assert all(v["sha256_inputs"] for v in prov["session_inputs"].values())
    for name in ("organ_readouts", "timecourse", "longitudinal_fits", "site_flags", "cluster_tracks"):
        prov = json.loads((out / "tables" / f"{name}.csv.provenance.json").read_text())
        assert prov["step"].startswith("report:") and "time_utc" in prov
    # the fitted clearance of the signal comes from the three sessions
    fits = pd.read_csv(out / "tables" / "longitudinal_fits.csv")
    row = fits[(fits["site"] == "tumour") & (fits["readout"] == "PET")].iloc[0]
    assert row["status"] == "fitted" and row["n_points"] == 3 and row["doubling_source"] == "prior"
    # the tracks live in the first timepoint's world; registration of the same bed moves less than 0.1 mm
    tracks = pd.read_csv(out / "tables" / "cluster_tracks.csv")
    assert set(tracks["day"]) == {1.0, 3.0, 7.0} and (tracks["status"] == "present").mean() > 0.7
    assert "not registered" not in set(tracks["status"])


def test_report_reuses_unchanged_analyses_and_never_overwrites_without_asking(report, study, capsys):
    rc, out = report
    html_before = (out / "index.html").read_bytes()
    capsys.readouterr()
    assert main(["report", str(study), "-o", str(out), "--no-pdf", "--dpi", "60"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert (out / "index.html").read_bytes() == html_before
    assert main(["report", str(study), "-o", str(out), "--no-pdf", "--dpi", "60", "--overwrite"]) == 0
    assert "reused the analyses of session(s) day1, day3, day7" in capsys.readouterr().out


def test_too_few_timepoints_and_a_missing_readout_are_reported_as_partial(report, study, tmp_path, capsys):
    short = tmp_path / "short"
    shutil.copytree(study, short)
    shutil.rmtree(short / "sub-01" / "ses-day7")
    shutil.rmtree(short / "sub-01" / "ses-day3" / "pet")  # PET missing on day 3
    out = tmp_path / "rep"
    # day 1 is unchanged: its analysis, copied from the first report, is reused (its inputs hash the same)
    shutil.copytree(report[1] / "sessions" / "ses-day1", out / "sessions" / "ses-day1")
    assert main(["report", str(short), "-o", str(out), "--no-pdf", "--dpi", "50", "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "reused the analyses of session(s) day1 (inputs unchanged)" in captured.out
    err = captured.err
    assert "needs 3" in err and "raw values" in err
    tc = pd.read_csv(out / "tables" / "timecourse.csv")
    pet3 = tc[(tc["readout"] == "PET") & (tc["day"] == 3.0)]
    assert len(pet3) and (pet3["status"] == "missing").all()
    f19 = tc[(tc["readout"] == "19F") & (tc["site"] == "liver")]
    assert np.isfinite(f19["apparent_cells"]).all() and len(f19) == 2  # raw values kept
    fits = pd.read_csv(out / "tables" / "longitudinal_fits.csv")
    sel = fits[fits["site"].isin(["liver", "tumour"])]
    assert (sel[sel["status"] != "no valid data"]["status"] == "too few timepoints").all() and len(sel) >= 5
    assert "partial" in (out / "index.html").read_text().lower()


def test_bad_input(study, tmp_path, capsys):
    baseline_only = tmp_path / "baseline"
    (baseline_only / "sub-01").mkdir(parents=True)
    shutil.copytree(study / "sub-01" / "ses-day0", baseline_only / "sub-01" / "ses-day0")
    cases = [
        (["report", str(baseline_only), "-o", str(tmp_path / "o1")], "no post-injection session"),
        (
            ["report", str(study), "-o", str(tmp_path / "o2"), "--kinetics", str(study / "dataset_description.json")],
            None,
        ),
    ]
    bad_json = tmp_path / "k.json"
    bad_json.write_text("{not json")
    cases.append((["report", str(study), "-o", str(tmp_path / "o3"), "--kinetics", str(bad_json)], "not valid JSON"))
    wrong = tmp_path / "k2.json"
    wrong.write_text(json.dumps({"sites": {"tumour": {"doubling_days": -2}}}))
    cases.append((["report", str(study), "-o", str(tmp_path / "o4"), "--kinetics", str(wrong)], "doubling_days"))
    counts = tmp_path / "c.csv"
    counts.write_text("organ,when\nliver,1\n")
    cases.append((["report", str(study), "-o", str(tmp_path / "o5"), "--cell-counts", str(counts)], "site, day, cells"))
    cases.append((["report", str(study), "-o", str(tmp_path / "o6"), "--subject", "99"], "subject"))
    for argv, message in cases:
        if message is None:
            continue
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        out = tmp_path / argv[argv.index("-o") + 1].split("/")[-1]
        assert not (out / "index.html").exists()


def test_cells_corrected_carries_its_assumptions(report):
    rc, out = report
    prov = json.loads((out / "tables" / "timecourse.csv.provenance.json").read_text())
    text = prov["parameters"]["column_descriptions"]["cells_corrected"]
    assert "ASSUMES" in text and "not a measurement" in text
    assert "literature" in json.dumps(prov).lower() or "literature" in (out / "index.html").read_text()
