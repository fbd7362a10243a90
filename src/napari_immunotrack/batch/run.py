"""The driver: the output folder (manifest, lock), the Dask cluster, and :func:`run_batch`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, one_line
from .cohort import bids_label, cohort_figures, cohort_tables  # noqa: F401
from .config import Pipeline, load_pipeline, parse_pipeline, pipeline_from_settings  # noqa: F401
from .tasks import find_tasks, input_hashes, is_visible, run_task, task_folder  # noqa: F401

# =============================================================================== the output folder
MANIFEST = "batch.json"
_LOCK = ".batch.lock"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def check_output_dir(out_dir, pipeline: Pipeline, overwrite: bool = False) -> Path:
    r"""Refuse an output folder holding something else than this pipeline's results (unless ``overwrite``).

    A new folder, an empty one (hidden files and provenance sidecars aside) or one whose
    :data:`MANIFEST` records the same pipeline hash is accepted: a rerun then skips the unchanged tasks.

    Parameters
    ----------
    out_dir : str or Path
        The batch's output folder (its parent must exist).
    pipeline : Pipeline
        The checked pipeline.
    overwrite : bool, default False
        Accept any existing folder.

    Returns
    -------
    Path
        ``out_dir`` (not created here).

    Raises
    ------
    InputError
        A file, a missing parent folder, a folder of another pipeline's results (naming the first
        difference) or a non-empty folder without results.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.batch import parse_pipeline
    >>> pipeline = parse_pipeline("steps:\n  clusters: {}\n")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     new = check_output_dir(Path(tmp) / "out", pipeline)
    ...     _ = (Path(tmp) / "notes.txt").write_text("mine")
    ...     try:
    ...         check_output_dir(tmp, pipeline)
    ...     except InputError as exc:
    ...         print(str(exc).replace(tmp, "TMP"))
    TMP is not empty and holds no batch results (batch.json missing); choose a new or empty folder, or pass --overwrite to write into it.
    >>> new.name, new.exists()
    ('out', False)
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the batch outputs.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another -o.")
    if not out.exists() or overwrite:
        return out
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = {}
        if old.get("parameters_sha256") != pipeline.sha256:
            diff = _differences(old.get("resolved", {}), pipeline.resolved())
            detail = f"; differs in {diff[0]}" + (f" and {len(diff) - 1} more" if len(diff) > 1 else "") if diff else ""
            raise InputError(
                f"{out} holds the results of another pipeline ({old.get('pipeline', '?')!r}{detail}); "
                "choose another -o, or pass --overwrite to replace them."
            )
    elif any(is_visible(p) for p in out.iterdir()):
        raise InputError(
            f"{out} is not empty and holds no batch results ({MANIFEST} missing); choose a new or "
            "empty folder, or pass --overwrite to write into it."
        )
    return out


@contextlib.contextmanager
def _lock(out: Path):
    """One batch at a time per output folder (a stale lock of a killed run is taken over)."""
    path = out / _LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                other = {}
            alive = False
            if other.get("host") == me["host"] and isinstance(other.get("pid"), int):
                try:
                    os.kill(other["pid"], 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            elif other.get("host") not in (None, me["host"]):
                alive = True  # another machine: cannot tell, be safe
            if alive:
                raise InputError(
                    f"another immunotrack batch (pid {other.get('pid')} on {other.get('host')}) is "
                    f"writing to {out}; wait for it or choose another -o (remove {path} if it died)."
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _remove_stale(out: Path) -> int:
    """Remove temporary folders/files left by a killed run (``.<name>.*.part`` / ``.old``)."""
    import shutil

    removed = 0
    for folder in [out, *sorted(p for p in out.glob("sub-*") if p.is_dir())]:
        for p in folder.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".old") or ".part" in p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed += 1
    return removed


# =============================================================================== the cluster
def connect(
    workers: int | None = None,
    scheduler: str | None = None,
    processes: bool = True,
    timeout_s: float = 5.0,
    memory_limit="auto",
):
    """(client, cluster): a LocalCluster of ``workers`` single-threaded workers, or a running scheduler.

    Workers started here are told to run ITK single-threaded (one core per task). Dask's own log
    lines are silenced: task failures are reported by :func:`run_batch`.

    Parameters
    ----------
    workers : int, optional
        Number of local workers (default: the machine's cores).
    scheduler : str, optional
        Address of a running Dask scheduler (``host:port`` or ``tcp://host:port``); no local cluster
        is started then.
    processes : bool, default True
        Local workers in processes (False: threads of this process).
    timeout_s : float, default 5.0
        Seconds to wait for the scheduler.
    memory_limit : str or int, default "auto"
        Memory limit of each local worker (Dask's syntax, e.g. "4GB").

    Returns
    -------
    tuple
        A ``distributed.Client`` and the ``LocalCluster`` (None with ``scheduler``); close both when done.

    Raises
    ------
    InputError
        An address that is not a Dask scheduler's, or a scheduler that does not answer within
        ``timeout_s``.

    Examples
    --------
    >>> try:
    ...     connect(scheduler="http://localhost:8787")       # the dashboard, not the scheduler
    ... except InputError as exc:
    ...     print(exc)
    --scheduler 'http://localhost:8787' is not a Dask scheduler address; give tcp://host:port.
    """
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
        if not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$", address):
            raise InputError(f"--scheduler {scheduler!r} is not a Dask scheduler address; give tcp://host:port.")
        try:
            client = Client(address, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
                f"({one_line(exc)[:120]}); check the address and that the scheduler is running."
            ) from None
        except (Exception, MemoryError) as exc:  # something answered that does not speak Dask's protocol
            raise InputError(
                f"what answers at {address} is not a Dask scheduler ({type(exc).__name__}); give the "
                "scheduler's address (port 8786 by default, not the dashboard's 8787)."
            ) from None
        return client, None
    n = int(workers) if workers else max(1, os.cpu_count() or 1)
    kwargs = {"env": {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}} if processes else {}
    # Dask's own log lines (a worker's heartbeat racing the shutdown...) are not for the user: a task's
    # failure, a dead worker included, is reported by run_batch
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
        memory_limit=memory_limit,
        **kwargs,
    )
    return Client(cluster), cluster


# =============================================================================== the driver
@dataclass
class BatchSummary:
    """What :func:`run_batch` did."""

    out_dir: Path
    records: list[dict] = field(default_factory=list)
    tables: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    #: wall time of the phases: "checks", "cluster_start", "tasks", "cohort_outputs" (s)
    timings_s: dict[str, float] = field(default_factory=dict)

    def count(self, status: str) -> int:
        """How many tasks ended with ``status``.

        Parameters
        ----------
        status : {"ok", "partial", "skipped", "failed"}
            A task status (:func:`~napari_immunotrack.batch.tasks.run_task`).

        Returns
        -------
        int
            The number of records with that status.

        Examples
        --------
        >>> summary = BatchSummary(Path("out"), records=[{"status": "ok"}, {"status": "failed"}, {"status": "ok"}])
        >>> summary.count("ok"), summary.count("skipped")
        (2, 0)
        """
        return sum(r["status"] == status for r in self.records)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def peak_rss_mb_per_worker(self) -> dict[str, float]:
        """Peak resident memory of each worker process that ran a task (MB)."""
        out: dict[str, float] = {}
        for r in self.records:
            if r.get("peak_rss_mb") is not None and r["status"] != "skipped":
                out[r["worker"]] = max(out.get(r["worker"], 0.0), r["peak_rss_mb"])
        return out


def _failure_rows(records):
    rows = []
    for r in records:
        who = {"subject": bids_label("sub", r["subject"]), "session": bids_label("ses", r["session"])}
        if r["status"] == "failed":
            rows.append({**who, "step": "all", "message": r["message"]})
        for step, message in (r.get("errors") or {}).items():
            rows.append({**who, "step": step, "message": message})
    return rows


def run_batch(
    pipeline,
    cohort_dir,
    out_dir,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    processes: bool = True,
    progress=None,
    client=None,
) -> BatchSummary:
    """Run ``pipeline`` on every (subject, session) of ``cohort_dir``; outputs in ``out_dir``.

    Parameters
    ----------
    pipeline : Pipeline or path of a pipeline file
    cohort_dir : folder holding the subject folders
    out_dir : output folder (created; see the module docstring for its layout)
    workers : local workers (one core each; default: the number of cores)
    scheduler : address of a running Dask scheduler (``tcp://host:port``) instead of a local cluster
    overwrite : write into a folder holding other results (tasks whose hashes differ are redone)
    processes : local workers as processes (True) or threads of this process (tests)
    progress : callable(fraction, message), called as tasks finish
    client : an existing ``distributed.Client`` to use (not closed)

    Returns
    -------
    BatchSummary

    Examples
    --------
    >>> summary = run_batch("examples/pipeline.yaml", "cohort", "results", workers=2)  # doctest: +SKIP
    >>> summary.count("ok"), summary.tables["cohort"]                                 # doctest: +SKIP
    (16, PosixPath('results/cohort.csv'))
    """
    from distributed import as_completed

    from ..outputs import write_json, write_table, write_text
    from ..progress import report
    from ..provenance import record as prov_record

    t0 = time.perf_counter()
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    # every check before any work: the pipeline (done), the cohort, the output folder, the cluster
    tasks = find_tasks(pipeline, cohort_dir)
    out = check_output_dir(out_dir, pipeline, overwrite)
    summary = BatchSummary(Path(out))
    summary.timings_s["checks"] = round(time.perf_counter() - t0, 2)
    own_client = client is None
    cluster = None
    if own_client:
        client, cluster = connect(
            workers=min(workers or (os.cpu_count() or 1), len(tasks)), scheduler=scheduler, processes=processes
        )
    summary.timings_s["cluster_start"] = round(time.perf_counter() - t0 - summary.timings_s["checks"], 2)
    try:
        summary.workers = len(client.scheduler_info().get("workers", {}))
        out.mkdir(exist_ok=True)
        with _lock(out):
            _remove_stale(out)
            write_json(
                out / MANIFEST,
                {
                    "pipeline": pipeline.name,
                    "parameters_sha256": pipeline.sha256,
                    "resolved": pipeline.resolved(),
                    "cohort": str(Path(cohort_dir).resolve()),
                    "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "tasks": len(tasks),
                },
                overwrite=True,
            )
            write_text(
                out / "pipeline.yaml",
                pipeline.text
                or pipeline_from_settings({"name": pipeline.name, "steps": pipeline.steps, "inputs": pipeline.inputs}),
                overwrite=True,
            )
            run_id = hashlib.sha1(f"{os.getpid()}-{time.time()}".encode()).hexdigest()[:8]
            futures = {}
            for task in tasks:
                key = f"immunotrack-batch-{run_id}-sub-{task['subject']}-ses-{task['session']}"
                fut = client.submit(run_task, task, pipeline, str(out.resolve()), key=key, pure=False)
                futures[fut] = task
            report(progress, 0.0, f"{len(tasks)} tasks on {summary.workers} worker(s)")
            t_tasks = time.perf_counter()
            for i, fut in enumerate(as_completed(list(futures)), 1):
                task = futures[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # the worker died (out of memory, crash): only this task is lost
                    rec = {
                        "subject": task["subject"],
                        "session": task["session"],
                        "day": task["day"],
                        "status": "failed",
                        "errors": {},
                        "seconds": None,
                        "peak_rss_mb": None,
                        "worker": "?",
                        "message": f"the worker running it died ({type(exc).__name__}: {one_line(exc)[:150]})",
                    }
                summary.records.append(rec)
                report(
                    progress,
                    i / len(tasks),
                    f"sub-{rec['subject']} {rec['session']} {rec['status']} ({i}/{len(tasks)})",
                )
            summary.records.sort(key=lambda r: (r["subject"], r["day"] if r["day"] is not None else -1, r["session"]))
            summary.timings_s["tasks"] = round(time.perf_counter() - t_tasks, 2)
            t_outputs = time.perf_counter()
            # ------------------------------------------------------------ cohort outputs
            prov = prov_record(
                "batch",
                inputs={"pipeline": pipeline.source if Path(pipeline.source).exists() else None},
                parameters={"pipeline": pipeline.name, **pipeline.resolved()},
                parameters_sha256=pipeline.sha256,
                cohort=str(Path(cohort_dir).resolve()),
                tasks=[{k: r.get(k) for k in ("subject", "session", "status", "message")} for r in summary.records],
            )
            for name, df in cohort_tables(out, summary.records).items():
                summary.tables[name] = write_table(df, out / f"{name}.csv", provenance=prov, overwrite=True)
            if "cohort" in summary.tables:
                import pandas as pd

                try:
                    extra = {k: prov[k] for k in ("parameters", "parameters_sha256", "cohort")}
                    summary.figures = cohort_figures(pd.read_csv(summary.tables["cohort"]), out, extra)
                except Exception as exc:  # a figure must not lose the tables
                    summary.notes.append(f"the cohort figures failed: {type(exc).__name__}: {one_line(exc)[:200]}")
            import pandas as pd

            failures = pd.DataFrame(_failure_rows(summary.records), columns=["subject", "session", "step", "message"])
            summary.tables["failures"] = write_table(failures, out / "failures.csv", provenance=prov, overwrite=True)
            summary.timings_s["cohort_outputs"] = round(time.perf_counter() - t_outputs, 2)
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary
