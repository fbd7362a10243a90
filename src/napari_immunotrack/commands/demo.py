"""Run the whole pipeline headless on the bundled sample study (or another
simulated study) and print how its numbers compare with the ground truth:
registration of PET/SPECT/MPI to the MRI, iron clusters against the baseline,
T1-T2 confirmation, PET/SPECT readouts, 19F cells and MPI iron per organ.
Outputs (labels, tables, transforms, each with provenance) go to the output
folder, and the study's HTML report (every session over time, figures,
macrophage flags; see `immunotrack report`) to its `report/` subfolder."""

from __future__ import annotations

HELP = "run the whole pipeline on the sample study and compare it with the ground truth"


def add_arguments(parser):
    """Add the arguments of ``immunotrack demo`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack demo")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([])
    >>> args.study, args.output, args.session, args.overwrite, args.no_report
    (None, 'demo_output', 'day1', False, False)
    """
    parser.add_argument("study", nargs="?", help="simulated study folder (default: the bundled sample study)")
    parser.add_argument("-o", "--output", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    parser.add_argument("--session", default="day1", help="post-injection session to analyse (default: day1)")
    parser.add_argument(
        "--no-report", action="store_true", help="skip the study report (report/index.html: every session over time)"
    )


def write_outputs(result, out_dir, provenance_base: dict, overwrite: bool):
    """Write a SessionResult's labels, tables and transforms (atomic, with provenance): see
    :func:`napari_immunotrack.session_outputs.write_session_outputs`, shared with the batch.

    Parameters
    ----------
    result : SessionResult
        The analysed session (:func:`napari_immunotrack.pipeline.analyse_session`).
    out_dir : str or Path
        Existing folder to write into.
    provenance_base : dict
        The provenance record; each file's sidecar adds its ``output`` name.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        The files written (``<name>.nii.gz``, ``<table>.csv``, ``from-<datatype>_to-anat.tfm``), each with
        a ``.provenance.json`` sidecar beside it that also holds the warnings of the step that made it.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> from napari_immunotrack.pipeline import SessionResult
    >>> result = SessionResult("01", "day1", tables={"pet": pd.DataFrame({"organ": ["tumour"], "percent_id": [2.5]})})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = write_outputs(result, tmp, {"step": "demo"}, overwrite=False)
    ...     print([p.name for p in written], sorted(p.name for p in Path(tmp).iterdir()))
    ['pet.csv'] ['pet.csv', 'pet.csv.provenance.json']
    """
    from ..session_outputs import write_session_outputs

    return write_session_outputs(result, out_dir, provenance_base, overwrite)


def staged_progress(progress, log, phase: str, session: str | None = None):
    """A progress callback that also tells ``log`` (a WarningLog) which session and step is running.

    The pipeline announces each step by its name (``register_pet``, ``clusters``, ...) and the report
    each session (``session day3``); the warnings raised meanwhile are filed under ``"<session> <step>"``
    (``phase`` before the first one).

    Parameters
    ----------
    progress : callable or None
        The caller's ``progress(fraction, message)``, called with every message after the stage is set.
    log : WarningLog
        Its ``stage`` is kept up to date (:class:`~napari_immunotrack.errors.WarningLog`).
    phase : str
        The stage before any session or step is announced (e.g. "report").
    session : str, optional
        The session already running, when the caller analyses one session only.

    Returns
    -------
    callable
        ``callback(fraction, message="")``. A message ``"session <name>"`` starts a session (and clears the
        step); a step name of :data:`~napari_immunotrack.pipeline.STEPS` or ``register_*`` starts a step;
        other messages leave the stage as it is.

    Examples
    --------
    >>> from napari_immunotrack.errors import WarningLog
    >>> log, shown = WarningLog(), []
    >>> callback = staged_progress(lambda fraction, message: shown.append(message), log, "report")
    >>> stages = [log.stage]
    >>> for fraction, message in ((0.1, "session day3"), (0.2, "clusters"), (0.3, "reading"), (0.5, "session day7")):
    ...     callback(fraction, message)
    ...     stages.append(log.stage)
    >>> stages, shown
    (['report', 'day3', 'day3 clusters', 'day3 clusters', 'day7'], ['session day3', 'clusters', 'reading', 'session day7'])
    """
    from ..pipeline import STEPS

    state = {"session": session, "step": None}

    def stage() -> str:
        parts = [p for p in (state["session"], state["step"]) if p]
        return " ".join(parts) if parts else phase

    log.stage = stage()

    def callback(fraction: float, message: str = "") -> None:
        if message.startswith("session "):
            state.update(session=message.split(" ", 1)[1], step=None)
        elif message in STEPS or message.startswith("register_"):
            state["step"] = message
        log.stage = stage()
        if progress is not None:
            progress(fraction, message)

    return callback


def print_warning_summary(log, out_dir, stream=None) -> None:
    """The warnings of a run as a few lines: one per kind, with how often and where (step) it came.

    Parameters
    ----------
    log : WarningLog
        The run's warnings (:meth:`~napari_immunotrack.errors.WarningLog.summary` makes the lines).
    out_dir : str or Path
        The output folder, named as where the provenance files list the warnings.
    stream : file-like, optional
        Where to write (default ``sys.stdout``).

    Returns
    -------
    None

    Examples
    --------
    >>> from napari_immunotrack.errors import WarningLog
    >>> log = WarningLog()
    >>> log.add("ROI 1: smaller than 3 voxels", "day3 clusters"); log.add("ROI 4: smaller than 3 voxels", "day7 clusters")
    >>> print_warning_summary(log, "demo_out")
    <BLANKLINE>
    warnings: 2 shown during the run, 1 kind(s) (each output's .provenance.json in demo_out/ lists those of the step that made it):
      - ROI 1: smaller than 3 voxels [2x: day3 clusters, day7 clusters]
    >>> print_warning_summary(WarningLog(), "demo_out")
    <BLANKLINE>
    no warnings
    """
    import sys

    stream = stream if stream is not None else sys.stdout
    if not len(log):
        stream.write("\nno warnings\n")
        return
    lines = log.summary()
    stream.write(
        f"\nwarnings: {len(log)} shown during the run, {len(lines)} kind(s) (each output's .provenance.json in "
        f"{out_dir}/ lists those of the step that made it):\n"
    )
    for line in lines:
        stream.write(f"  - {line}\n")


def run(args) -> int:
    """Run ``immunotrack demo``: analyse one session of a simulated study and compare it with its truth.

    Analyses the session with :func:`napari_immunotrack.pipeline.analyse_session`, compares the readouts
    with the study's ``ground_truth.json`` (:func:`~napari_immunotrack.pipeline.compare_with_truth`) and
    writes the labels, tables, transforms, ``comparison_with_truth.csv`` and (unless ``--no-report``) the
    study report into the output folder, all at once (a crash leaves the old folder or none). Prints the
    readouts per organ and the comparison.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0, or 1 when a step failed with an internal error (its partial results are still written). A study
        without ``ground_truth.json`` or a non-empty output folder without ``--overwrite`` raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    The whole sample study takes about a minute; here the check that refuses a study that is not simulated:

    >>> import tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     main(["demo", d, "-o", d + "/out"])  # stderr: ... has no ground_truth.json ...
    2
    """
    import json
    import sys
    import time
    from pathlib import Path

    import pandas as pd

    from ..data import sample_study_root
    from ..errors import InputError, WarningLog, collect_warnings
    from ..outputs import atomic_output_dir, check_writable, write_table
    from ..pipeline import analyse_session, compare_with_truth
    from ..progress import text_progress
    from ..provenance import record

    root = Path(args.study) if args.study else sample_study_root()
    truth_path = root / "ground_truth.json"
    if not truth_path.exists():
        raise InputError(
            f"{root} has no ground_truth.json; `demo` runs on a simulated study "
            "(use the individual verbs on real data)."
        )
    out_dir = Path(args.output)
    # an existing empty folder may be used; one with files only with --overwrite
    replace = bool(args.overwrite) or (out_dir.is_dir() and not any(out_dir.iterdir()))
    if out_dir.exists() and not replace:
        raise InputError(f"{out_dir} exists and is not empty; pass --overwrite or choose another --output.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir.parent)  # before a minute of analysis, not after
    t0 = time.perf_counter()
    session = args.session[4:] if args.session.startswith("ses-") else args.session
    log = WarningLog()
    # the warnings are gathered (and written to the provenance) instead of interrupting the progress view;
    # a summary follows the results (--debug shows each one as it comes, too)
    with collect_warnings(log, show=bool(getattr(args, "debug", False))):
        result = analyse_session(
            root, args.session, progress=staged_progress(text_progress("demo"), log, "demo", session)
        )
        session_warnings = log.messages()
        truth = json.loads(truth_path.read_text())
        comparison = compare_with_truth(result, truth)
        prov = record(
            "demo",
            inputs={"study": root},
            parameters={"session": args.session, **result.parameters},
            errors={k: v for k, v in result.errors.items() if not k.endswith("_traceback")},
            timings_s=result.timings_s,
        )
        report_result = None
        # everything goes into a temporary folder renamed to out_dir at the end: a crash leaves the old folder
        # (or none), never a mix of old and new results
        with atomic_output_dir(out_dir, overwrite=replace) as tmp_dir:
            written = write_outputs(result, tmp_dir, prov, overwrite=True)
            # the comparison draws on every step: its provenance lists every warning of the session's analysis
            write_table(
                comparison,
                tmp_dir / "comparison_with_truth.csv",
                provenance={**prov, "output": "comparison_with_truth", "warnings": session_warnings},
                overwrite=True,
            )
            if not getattr(args, "no_report", False):
                from ..report import build_report

                # the session analysed above is reused; the other sessions are analysed for the time course
                report_result = build_report(
                    root,
                    tmp_dir / "report",
                    overwrite=True,
                    precomputed={args.session: result},
                    pdf=False,
                    progress=staged_progress(text_progress("report"), log, "report"),
                )
    elapsed = time.perf_counter() - t0

    with pd.option_context(
        "display.width",
        160,
        "display.max_columns",
        12,
        "display.max_rows",
        200,
        "display.float_format",
        "{:.4g}".format,
    ):
        print(f"\nnapari-immunotrack demo on {root} (session {args.session}), {elapsed:.1f} s\n")
        for name in ("pet", "f19", "mpi"):
            table = result.tables.get(name)
            if table is not None:
                cols = [
                    c
                    for c in (
                        "organ",
                        "volume_ml",
                        "mean_bq_ml",
                        "suv_bw_mean",
                        "percent_id",
                        "fluorine_atoms",
                        "cell_count",
                        "status",
                        "iron_ng",
                    )
                    if c in table.columns
                ]
                print(f"{name} per organ:\n{table[cols].to_string(index=False)}\n")
        for name in ("clusters", "confirmed"):
            table = result.tables.get(name)
            if table is not None:
                print(f"{name}: {len(table)} region(s)")
        print("\ncomparison with the ground truth:")
        print(comparison.to_string(index=False))
    if report_result is not None:
        flagged = [r["site"] for _, r in report_result.longitudinal.sites.iterrows() if r["macrophage_flag"] is True]
        html = out_dir / Path(report_result.html).relative_to(tmp_dir)
        print(
            f"\nstudy report: {html} ({len(report_result.figures)} figures); sites flagged as "
            f"macrophage-held signal: {', '.join(flagged) if flagged else 'none'}"
        )
    failed = {k: v for k, v in result.errors.items() if not k.endswith("_traceback")}
    for step, message in failed.items():
        sys.stderr.write(f"immunotrack demo: step {step} did not complete (partial results): {message}\n")
    print_warning_summary(log, out_dir)
    print(f"\n{len(written) + 1} files written to {out_dir}/ (each with a .provenance.json)")
    internal = [k for k, v in failed.items() if v.startswith("internal error")]
    if report_result is not None:
        internal += [n for n in report_result.partial if "internal error" in n]
    return 1 if internal else 0
