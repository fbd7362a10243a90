"""`immunotrack batch`: pipeline files, cohort runs on Dask, resume, failures, chunked volumes, bad input.

A simulated cohort of three tiny animals (one post-injection session each);
the batch runs in-process (one Dask worker thread) except the kill-and-resume
test, which runs the real command line in a subprocess with a process worker.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack import batch as B
from napari_immunotrack.cli import main
from napari_immunotrack.errors import InputError
from napari_immunotrack.simulate.cohort import make_cohort

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipeline.yaml"

# the analyses' guesses (noise without a mask, small ROIs) on tiny images are expected here
pytestmark = pytest.mark.filterwarnings("ignore::napari_immunotrack.errors.ImmunotrackWarning")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort") / "mice", n_subjects=3, seed=7, timepoints_days=(0, 1))


@pytest.fixture(scope="module")
def broken_cohort(cohort, tmp_path_factory):
    """The cohort with sub-03's day-1 T2w (the registration reference) corrupted."""
    root = tmp_path_factory.mktemp("broken") / "mice"
    shutil.copytree(cohort, root)
    (root / "sub-03/ses-day1/anat/sub-03_ses-day1_T2w.nii.gz").write_bytes(b"\x1f\x8b not a NIfTI file" * 10)
    return root


@pytest.fixture(scope="module")
def first_run(broken_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "results"
    summary = B.run_batch(EXAMPLE, broken_cohort, out, workers=1, processes=False)
    return summary, out


def _read(path):
    return pd.read_csv(path, float_precision="round_trip")


# ----------------------------------------------------------------------------- the simulated cohort
def test_cohort_has_biological_variation(cohort):
    truth = json.loads((cohort / "ground_truth.json").read_text())
    assert sorted(truth["subjects"]) == ["01", "02", "03"]
    assert sorted(p.name for p in cohort.glob("sub-*")) == ["sub-01", "sub-02", "sub-03"]
    cells = [truth["subjects"][s]["injected"]["car_t_cells"] for s in ("01", "02", "03")]
    tumour = [truth["subjects"][s]["sessions"]["ses-day1"]["sites"]["tumour"]["live_cells"] for s in ("01", "02", "03")]
    factors = [truth["subjects"][s]["variation"]["cells"] for s in ("01", "02", "03")]
    # injected cells = design (5e6) x the drawn factor; animals differ, and so do their tumours
    np.testing.assert_allclose(cells, np.array(factors) * 5e6, rtol=1e-12)
    assert len(set(np.round(cells, 3))) == 3 and len(set(np.round(tumour, 3))) == 3
    participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    np.testing.assert_allclose(participants["car_t_cells"], cells, rtol=1e-5)


def test_cohort_without_variation_and_bad_variation(tmp_path):
    from napari_immunotrack.simulate.cohort import _variation

    assert set(_variation(0.0).values()) == {0.0}
    assert _variation(None)["cells"] == 0.3 and _variation(2.0)["cells"] == pytest.approx(0.6)
    with pytest.raises(InputError, match="unknown"):
        make_cohort(tmp_path / "c", n_subjects=2, variation={"cell": 0.2})
    with pytest.raises(InputError, match="n_subjects"):
        make_cohort(tmp_path / "c", n_subjects=0)
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- results, failures, resume
def test_cohort_table_equals_single_subject_runs(first_run, broken_cohort, tmp_path):
    """The cohort tables' rows of a subject are exactly what `immunotrack demo`'s pipeline writes for it alone."""
    from napari_immunotrack.commands.demo import write_outputs
    from napari_immunotrack.pipeline import analyse_session

    summary, out = first_run
    with B._limit_threads(1):  # as the batch workers run (ITK's multi-threaded sums are not bit-reproducible)
        alone = analyse_session(broken_cohort, "day1", subject="02")
    single = tmp_path / "single"
    single.mkdir()
    write_outputs(alone, single, {"step": "demo"}, overwrite=True)
    compared = 0
    for name in ("pet", "spect", "f19", "clusters", "confirmed"):
        expected = _read(single / f"{name}.csv")
        cohort_table = _read(out / f"cohort_{name}.csv")
        rows = cohort_table[cohort_table["subject"] == "sub-02"].drop(columns=["subject", "session", "day"])
        pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected, check_exact=True)
        # the task's own file is byte-identical to the single-subject one
        assert (out / "sub-02/ses-day1" / f"{name}.csv").read_bytes() == (single / f"{name}.csv").read_bytes()
        compared += len(expected)
    assert compared > 20
    # the summary table (one row per subject, session and site) carries the same numbers
    cohort = _read(out / "cohort.csv")
    assert set(cohort.columns[:4]) == {"subject", "session", "day", "site"}
    assert not cohort.duplicated(["subject", "session", "site"]).any()
    pet = _read(single / "pet.csv").set_index("organ")
    mine = cohort[cohort["subject"] == "sub-02"].set_index("site")
    assert (mine.loc[pet.index, "pet_percent_id"].to_numpy() == pet["percent_id"].to_numpy()).all()
    f19 = _read(single / "f19.csv").set_index("organ")
    assert mine.loc[f19.index, "f19_cell_count"].equals(f19["cell_count"].rename("f19_cell_count"))
    assert summary.figures and all(p.stat().st_size > 10_000 for p in summary.figures)
    assert (out / "cohort_f19_cell_count.png").exists() and (out / "cohort_pet_percent_id.png.provenance.json").exists()
    prov = json.loads((out / "cohort.csv.provenance.json").read_text())
    assert prov["parameters_sha256"] == B.load_pipeline(EXAMPLE).sha256


def test_a_failing_subject_is_reported_and_the_others_finish(first_run):
    summary, out = first_run
    status = {r["subject"]: r["status"] for r in summary.records}
    assert status["03"] == "failed" and status["01"] in ("ok", "partial") and status["02"] in ("ok", "partial")
    failed = summary.failed[0]
    assert "T2w" in failed["message"] or "NIfTI" in failed["message"] or "gzip" in failed["message"].lower()
    failures = pd.read_csv(out / "failures.csv")
    assert ((failures["subject"] == "sub-03") & (failures["step"] == "all")).sum() == 1
    assert not (out / "sub-03/ses-day1").exists()  # nothing written for the failed task
    assert {p.parent.parent.name for p in out.glob("sub-*/ses-*/done.json")} == {"sub-01", "sub-02"}
    assert set(_read(out / "cohort.csv")["subject"]) == {"sub-01", "sub-02"}
    assert max(summary.peak_rss_mb_per_worker.values()) > 50


def test_rerun_skips_unchanged_tasks_and_redoes_changed_ones(first_run, broken_cohort, cohort, capsys):
    """The command line as a user runs it again: progress, the cohort table, the failure, exit status 1."""
    summary, out = first_run
    done = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/ses-*/done.json")}
    before = _read(out / "cohort_pet.csv")
    assert main(["batch", str(EXAMPLE), str(broken_cohort), "-o", str(out), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "batch 100.0% " in captured.err and "cohort readouts per day and site" in captured.out
    assert "3 task(s)" in captured.out and "0 ok, 0 partial, 2 skipped (unchanged), 1 failed" in captured.out
    assert sum(line.startswith("immunotrack batch: sub-03 day1 failed") for line in captured.err.splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.glob("sub-*/ses-*/done.json")} == done
    # the skipped tasks still make the cohort table, unchanged
    pd.testing.assert_frame_equal(_read(out / "cohort_pet.csv"), before, check_exact=True)
    # the file is repaired: only that task runs
    bad = "sub-03/ses-day1/anat/sub-03_ses-day1_T2w.nii.gz"
    shutil.copy(cohort / bad, broken_cohort / bad)
    third = B.run_batch(EXAMPLE, broken_cohort, out, workers=1, processes=False)
    status = {r["subject"]: r["status"] for r in third.records}
    assert status["01"] == status["02"] == "skipped" and status["03"] in ("ok", "partial")
    assert set(_read(out / "cohort.csv")["subject"]) == {"sub-01", "sub-02", "sub-03"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("sub-0[12]/ses-*/done.json")} == done


def test_killed_run_resumes_without_redoing_finished_subjects(cohort, tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_immunotrack.cli",
            "batch",
            str(EXAMPLE),
            str(cohort),
            "-o",
            str(out),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not list(out.glob("sub-*/ses-*/done.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        finished = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/ses-*/done.json")}
        assert finished and proc.poll() is None, "the batch should still be running after its first task"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its scheduler and its worker process
        proc.wait()
    for _ in range(100):  # nothing of that run is left running
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the killed batch are still running")
    assert not (out / "cohort.csv").exists()
    # what the kill left: finished task folders are complete; anything else is a hidden temporary
    for folder in out.glob("sub-*/ses-*"):
        assert (folder / "done.json").exists()
    # resumed on an already running Dask cluster, reached by its scheduler's address (as a SLURM/Kubernetes one)
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        resumed = B.run_batch(EXAMPLE, cohort, out, scheduler=cluster.scheduler_address)
    assert resumed.workers == 1
    status = {f"sub-{r['subject']}/ses-{r['session']}": r["status"] for r in resumed.records}
    for path, mtime in finished.items():
        assert status[str(path.parent.relative_to(out))] == "skipped"
        assert path.stat().st_mtime_ns == mtime
    assert sorted(status.values()).count("skipped") == len(finished)
    assert all(s in ("ok", "partial", "skipped") for s in status.values())
    assert len(_read(out / "cohort.csv")["subject"].unique()) == 3
    leftovers = [p for p in out.rglob(".*")]
    assert leftovers == [], leftovers


# ----------------------------------------------------------------------------- large volumes (chunked)
def test_chunked_clusters_equal_in_memory_and_are_written_chunk_by_chunk(cohort, tmp_path):
    """The clusters step on a dask volume (chunks smaller than the image, clusters across chunk borders)."""
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.pipeline import analyse_inputs

    pipeline = B.parse_pipeline("steps:\n  clusters:\n    chunks: [24, 20, 20]\n", "chunked.yaml")
    task = B.find_tasks(pipeline, cohort)[0]
    memory = analyse_inputs(task["inputs"], steps=["clusters"])
    labels_mem = memory.volumes["clusters"].numpy()
    assert labels_mem.max() >= 3 and max(labels_mem.shape) > 24
    rec = B.run_task(task, pipeline, str(tmp_path))
    assert rec["status"] == "ok", rec
    folder = B.task_folder(tmp_path, task)
    chunked = load_volume(folder / "clusters.ome.zarr")
    assert type(chunked.data).__module__.startswith("dask")
    assert np.allclose(chunked.affine, memory.volumes["clusters"].affine)
    # the same clusters, except the air at the skin: checked in memory (a voxel-wise connection to the air at
    # the field of view's border), not on a lazy image, which says so
    air = memory.tables["clusters_provenance"]["exterior_air"]
    differ = chunked.numpy() != labels_mem
    assert np.all(labels_mem[differ] == 0) and int(differ.sum()) == air["voxels_left_out"]
    post = load_volume(task["inputs"]["T2starw"]).numpy()
    assert np.all(post[differ] < air["air_threshold_signal"])
    assert air["clusters_left_out"] == 0  # so the labels are numbered alike
    provenance = json.loads((folder / "clusters.csv.provenance.json").read_text())
    assert "air at the skin is not checked on a chunked image" in json.dumps(provenance)
    trimmed = set(np.unique(chunked.numpy()[differ]).tolist())
    # the statistics summed chunk by chunk differ only in the last bits (summation order)
    table, expected = _read(folder / "clusters.csv"), _read_table(memory.tables["clusters"], tmp_path)
    table, expected = (t[~t["label"].isin(trimmed)].reset_index(drop=True) for t in (table, expected))
    assert table[["label", "voxels", "split"]].equals(expected[["label", "voxels", "split"]])
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9, atol=0)
    crossing = sum(
        len({int(i) // c for i in np.nonzero(labels_mem == lab)[axis]}) > 1
        for lab in range(1, labels_mem.max() + 1)
        for axis, c in enumerate((24, 20, 20))
    )
    assert crossing >= 1


def _read_table(df, tmp_path):
    path = tmp_path / "memory.csv"
    df.to_csv(path, index=False)
    return _read(path)


# ----------------------------------------------------------------------------- pipeline files
def test_pipeline_from_settings_round_trip():
    settings = {
        "name": "from-widgets",
        "clusters": {
            "method": "fraction",
            "threshold": np.float64(0.45),
            "min_size": np.int64(4),
            "connectivity": 26,
            "baseline_ratio": 0.6,
            "split_touching": True,
        },
        "confirm": {
            "t1_threshold": 0.25,
            "t2_threshold": 0.2,
            "k_sigma": 3.0,
            "k_sigma_grow": 2.0,
            "min_size": 3,
            "opening": False,
        },
        "register": {"transform": "rigid", "bins": 48},
    }
    text = B.pipeline_from_settings(settings)
    p = B.parse_pipeline(text)
    assert p.name == "from-widgets" and list(p.steps) == ["register", "clusters", "confirm"]
    assert p.steps["clusters"]["threshold"] == 0.45 and p.steps["clusters"]["min_size"] == 4
    assert p.steps["register"]["bins"] == 48 and p.inputs == B.DEFAULT_INPUT_PATTERNS
    with pytest.raises(InputError, match="treshold"):
        B.pipeline_from_settings({"clusters": {"treshold": 0.4}})
    with pytest.raises(InputError, match="neither a step"):
        B.pipeline_from_settings({"segmentation": {}})


def test_parameter_hash_follows_results_not_spelling():
    a = B.parse_pipeline("steps:\n  clusters: {}\n")
    b = B.parse_pipeline("steps:\n  clusters: {threshold: null, min_size: 3}\n")
    c = B.parse_pipeline("steps:\n  clusters: {min_size: 4}\n")
    assert a.sha256 == b.sha256 != c.sha256


@pytest.mark.parametrize(
    "text,line,words",
    [
        ("steps:\n  register: {}\n  segment: {}\n", 3, ["unknown step 'segment'"]),
        (
            "name: x\nsteps:\n  clusters:\n    method: fraction\n    treshold: 0.4\n",
            5,
            ["unknown parameter 'treshold'", "step clusters", "did you mean 'threshold'"],
        ),
        ("steps:\n  - register\n  - clusters: {min_size: three}\n", 3, ["clusters.min_size must be a whole number"]),
        ("steps:\n  clusters: {method: otsu}\n", 2, ["otsu"]),
        ("stepz:\n  clusters: {}\n", 1, ["unknown key 'stepz'", "did you mean 'steps'"]),
        ("steps:\n  f19: {}\ninputs:\n  T1: anat/*_T1w.nii.gz\n", 4, ["unknown input 'T1'"]),
        ("steps:\n  clusters: {threshold: 0.4\n", 3, ["not valid YAML"]),
    ],
)
def test_bad_pipeline_files_name_the_problem_and_its_line(tmp_path, capsys, cohort, text, line, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["batch", str(path), str(cohort), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"bad.yaml line {line}:" in err[0], err
    for w in words:
        assert w in err[0], err
    assert not out.exists()


def test_bad_cohort_scheduler_and_output_folder_fail_before_any_work(tmp_path, capsys, cohort, first_run):
    def fails(args, *words):
        t0 = time.monotonic()
        assert main(["batch", *map(str, args)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        for w in words:
            assert w in err[0], err
        return time.monotonic() - t0

    empty = tmp_path / "empty_cohort"
    (empty / "scans").mkdir(parents=True)
    fails([EXAMPLE, empty, "-o", tmp_path / "o1"], "no subject folder matching 'sub-*'")
    assert not (tmp_path / "o1").exists()
    took = fails(
        [EXAMPLE, cohort, "-o", tmp_path / "o2", "--scheduler", "tcp://127.0.0.1:9"],
        "cannot reach the Dask scheduler at tcp://127.0.0.1:9",
    )
    assert took < 20 and not (tmp_path / "o2").exists()
    fails([EXAMPLE, cohort, "-o", tmp_path / "o3", "--scheduler", "not an address"], "not a Dask scheduler address")
    # the dashboard's port (or any web server) instead of the scheduler's
    import socketserver
    import threading

    class Web(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)

    with socketserver.TCPServer(("127.0.0.1", 0), Web) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        fails(
            [EXAMPLE, cohort, "-o", tmp_path / "o3", "--scheduler", f"tcp://127.0.0.1:{web.server_address[1]}"],
            "is not a Dask scheduler",
            "8786",
        )
        web.shutdown()
    assert not (tmp_path / "o3").exists()
    # a folder holding another pipeline's results is left alone
    _, previous = first_run
    other = tmp_path / "other.yaml"
    other.write_text(EXAMPLE.read_text().replace("threshold: 0.5", "threshold: 0.4"))
    before = sorted(p.name for p in previous.iterdir())
    fails(
        [other, cohort, "-o", previous],
        "holds the results of another pipeline ('car-t-tracking'",
        "clusters.threshold 0.5 -> 0.4",
        "--overwrite",
    )
    assert sorted(p.name for p in previous.iterdir()) == before
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.docx").write_text("precious")
    fails([EXAMPLE, cohort, "-o", occupied], "not empty and holds no batch results")
    assert sorted(p.name for p in occupied.iterdir()) == ["thesis.docx"]
    fails([EXAMPLE, cohort, "-o", tmp_path / "o4", "--workers", "0"], "must be at least 1")
