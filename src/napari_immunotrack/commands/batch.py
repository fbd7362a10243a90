"""Run a pipeline file on every subject and session of a cohort, in parallel on
Dask (a local cluster by default, or any running Dask scheduler: SLURM/PBS via
dask-jobqueue, Kubernetes via dask-kubernetes, a cloud cluster), resumably:
a finished task whose inputs and parameters are unchanged (content hashes in
its done.json) is skipped on the next run, and every task's outputs appear
complete or not at all. A failing subject is reported (OUT/failures.csv) and
the others finish. At the end: OUT/cohort.csv (one row per subject, session
and site), OUT/cohort_<table>.csv (every per-task table) and
OUT/cohort_<readout>.png (time courses per site).

Example:
  immunotrack batch examples/pipeline.yaml my_cohort -o results --workers 2
  immunotrack batch pipeline.yaml /shared/cohort -o /shared/results --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

from ._common import existing_path, positive_int

HELP = "run a pipeline file over a cohort (one task per subject and session) on Dask, resumably"


def add_arguments(parser):
    """Add the arguments of ``immunotrack batch`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        PIPELINE and COHORT_DIR must exist (checked when parsing).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse, os, tempfile
    >>> parser = argparse.ArgumentParser(prog="immunotrack batch")
    >>> add_arguments(parser)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     open(os.path.join(d, "pipeline.yaml"), "w").close()
    ...     args = parser.parse_args([os.path.join(d, "pipeline.yaml"), d, "-o", "results", "--workers", "2"])
    >>> args.output, args.workers, args.scheduler, args.overwrite
    ('results', 2, None, False)
    """
    parser.add_argument(
        "pipeline",
        type=existing_path,
        metavar="PIPELINE",
        help="pipeline file (YAML: steps, parameters, input patterns); see examples/pipeline.yaml",
    )
    parser.add_argument(
        "cohort",
        type=existing_path,
        metavar="COHORT_DIR",
        help="cohort folder holding the subject folders (sub-*/ses-*/...)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="local worker processes, one core each (default: the number of cores)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (tcp://host:port) instead of a local cluster",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a folder holding other results (changed tasks are redone)"
    )


def run(args) -> int:
    r"""Run ``immunotrack batch``: one task per subject and session of a cohort, on Dask, resumably.

    Calls :func:`napari_immunotrack.batch.run_batch`, then prints the cohort readouts per day and site
    (mean and SD over subjects), the cohort table, figures and failures, and a summary line; per-task
    warnings go to each task's provenance, failed and partial tasks to standard error. Tasks whose inputs
    and parameters did not change are skipped.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0, or 1 when a task failed. A bad pipeline file or cohort raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    A pipeline file with an unknown step is refused before any task runs:

    >>> import os, tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with open(os.path.join(d, "pipeline.yaml"), "w") as f:
    ...         _ = f.write("steps: [nope]\n")
    ...     # stderr: immunotrack batch: error: ...pipeline.yaml line 1: unknown step 'nope'; steps are ...
    ...     main(["batch", os.path.join(d, "pipeline.yaml"), d, "-o", os.path.join(d, "out")])
    2
    """
    import sys
    import warnings

    import pandas as pd

    from ..batch import run_batch
    from ..errors import ImmunotrackWarning
    from ..progress import text_progress

    if args.scheduler and args.workers:
        warnings.warn(
            "--workers is ignored with --scheduler: the cluster's own workers run the tasks.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    # per-task warnings (noise guesses, small ROIs) go to each task's provenance, not to the terminal
    warnings.filterwarnings("ignore", category=ImmunotrackWarning, module=r"napari_immunotrack\.(analysis|pipeline).*")
    summary = run_batch(
        args.pipeline,
        args.cohort,
        args.output,
        workers=args.workers,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        progress=text_progress("batch"),
    )
    n = len([r for r in summary.records])
    counts = {s: summary.count(s) for s in ("ok", "partial", "skipped", "failed")}
    cohort = summary.tables.get("cohort")
    if cohort is not None:
        df = pd.read_csv(cohort)
        cols = [c for c in ("pet_percent_id", "spect_percent_id", "f19_cell_count", "mpi_cell_count") if c in df]
        if cols:
            view = df.groupby(["day", "site"])[cols].agg(["mean", "std"]) if "day" in df else df
            view.columns = [f"{a} {b}" for a, b in view.columns]
            with pd.option_context(
                "display.width",
                180,
                "display.max_columns",
                12,
                "display.max_rows",
                60,
                "display.float_format",
                "{:.4g}".format,
            ):
                print(f"\ncohort readouts per day and site (mean, SD over {df['subject'].nunique()} subjects):")
                print(view.to_string())
        print(f"\ncohort table: {cohort} ({len(df)} rows: subject x session x site)")
    for path in summary.figures:
        print(f"figure: {path}")
    if "failures" in summary.tables:
        print(f"failures: {summary.tables['failures']}")
    for rec in summary.failed:
        sys.stderr.write(f"immunotrack batch: sub-{rec['subject']} {rec['session']} failed: {rec['message']}\n")
    for rec in summary.records:
        if rec["status"] == "partial":
            steps = ", ".join(sorted(rec["errors"]))
            sys.stderr.write(
                f"immunotrack batch: sub-{rec['subject']} {rec['session']}: step(s) {steps} did not "
                "complete (see failures.csv)\n"
            )
    for note in summary.notes:
        sys.stderr.write(f"immunotrack batch: {note}\n")
    print(
        f"{n} task(s) in {summary.seconds:.1f} s on {summary.workers} worker(s): {counts['ok']} ok, "
        f"{counts['partial']} partial, {counts['skipped']} skipped (unchanged), {counts['failed']} failed"
        f" -> {summary.out_dir}/"
    )
    return 1 if counts["failed"] else 0
