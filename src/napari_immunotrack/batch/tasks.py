"""The cohort's tasks: one per (subject, session), found from the pipeline's patterns, run on a worker."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import socket
import time
import warnings
from pathlib import Path

from ..errors import InputError, one_line
from ..pipeline import BASELINE_ROLES
from .config import Pipeline, step_parameters  # noqa: F401


# =============================================================================== the cohort's tasks
def _day(session: str) -> float | None:
    match = re.search(r"day-?(\d+(?:[.p]\d+)?)", session)
    return float(match.group(1).replace("p", ".")) if match else None


def is_visible(path: Path) -> bool:
    """False for hidden files and provenance sidecars (they do not make a folder "not empty").

    Parameters
    ----------
    path : Path
        A file or folder.

    Returns
    -------
    bool
        True unless the name starts with "." or ends with ".provenance.json".

    Examples
    --------
    >>> is_visible(Path("pet.csv")), is_visible(Path("pet.csv.provenance.json")), is_visible(Path(".DS_Store"))
    (True, False, False)
    """
    return not path.name.startswith(".") and not path.name.endswith(".provenance.json")


def _match(folder: Path, pattern: str):
    """(path or None, problem or None) for one input pattern in one folder."""
    hits = sorted(p for p in folder.glob(pattern) if is_visible(p))
    if len(hits) > 1:
        names = ", ".join(p.name for p in hits[:4])
        return None, f"the pattern {pattern!r} matches {len(hits)} files in {folder} ({names}); make it match one"
    return (hits[0] if hits else None), None


def find_tasks(pipeline: Pipeline, cohort_dir) -> list[dict]:
    r"""One task per (subject, session) of ``cohort_dir``, with its input files (InputError if none).

    Subjects and sessions are the folders matching the pipeline's patterns; the baseline session
    ("auto": the session of day 0, from ``ses-day0``) is not a task of its own but gives every other
    session its ``baseline_<role>`` inputs (:data:`~napari_immunotrack.pipeline.BASELINE_ROLES`). Each
    input role is the one file its pattern matches in the session folder.

    Parameters
    ----------
    pipeline : Pipeline
        The checked pipeline (:func:`~napari_immunotrack.batch.config.parse_pipeline`).
    cohort_dir : str or Path
        The cohort folder holding the subject folders.

    Returns
    -------
    list of dict
        A task per session: ``subject``, ``session``, ``day`` (from ``day<N>`` in the name, or None),
        ``session_dir``, ``baseline_session``, ``inputs`` ({role: absolute path}) and ``problems``
        (patterns matching several files; the task then fails with them).

    Raises
    ------
    InputError
        A cohort folder that does not exist, or holds no subject or no session to analyse.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.batch import parse_pipeline
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day in (0, 1):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = (anat / f"sub-01_ses-day{day}_T2starw.nii.gz").write_bytes(b"")
    ...     tasks = find_tasks(parse_pipeline("steps:\n  clusters: {}\n"), tmp)
    >>> [(t["subject"], t["session"], t["day"], t["baseline_session"], sorted(t["inputs"])) for t in tasks]
    [('01', 'day1', 1.0, 'day0', ['T2starw', 'baseline_T2starw'])]
    """
    root = Path(cohort_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the cohort folder holding the subject folders.")
    root = root.resolve()  # absolute paths: a worker of a remote cluster has another working folder
    subjects = sorted(p for p in root.glob(pipeline.subjects) if p.is_dir() and is_visible(p))
    if not subjects:
        raise InputError(
            f"{root} has no subject folder matching {pipeline.subjects!r}; check the folder or the "
            "pipeline's 'subjects' pattern."
        )
    tasks = []
    for sub_dir in subjects:
        subject = sub_dir.name[4:] if sub_dir.name.startswith("sub-") else sub_dir.name
        if pipeline.sessions is None:
            sessions = [sub_dir]
        else:
            sessions = sorted(p for p in sub_dir.glob(pipeline.sessions) if p.is_dir() and is_visible(p))
        names = {p: (p.name[4:] if p.name.startswith("ses-") else p.name) for p in sessions}
        baseline = None
        if pipeline.baseline_session == "auto":
            baseline = next(
                (
                    p
                    for p in sorted(sessions, key=lambda p: (_day(names[p]) is None, _day(names[p]) or 0))
                    if _day(names[p]) == 0
                ),
                None,
            )
        elif pipeline.baseline_session is not None:
            want = pipeline.baseline_session
            baseline = next((p for p in sessions if p.name == want or names[p] == want), None)
        for ses_dir in sessions:
            if ses_dir == baseline:
                continue
            session = names[ses_dir] if pipeline.sessions is not None else ""
            inputs, problems = {}, []
            for role, pattern in pipeline.inputs.items():
                path, problem = _match(ses_dir, pattern)
                if problem:
                    problems.append(f"{role}: {problem}")
                elif path is not None:
                    inputs[role] = str(path)
                if baseline is not None and role in BASELINE_ROLES:
                    path, problem = _match(baseline, pattern)
                    if problem:
                        problems.append(f"baseline_{role}: {problem}")
                    elif path is not None:
                        inputs["baseline_" + role] = str(path)
            tasks.append(
                {
                    "subject": subject,
                    "session": session,
                    "day": _day(session),
                    "session_dir": str(ses_dir),
                    "baseline_session": names.get(baseline) if baseline else None,
                    "inputs": inputs,
                    "problems": problems,
                }
            )
    if not tasks:
        raise InputError(
            f"{root} has subject folders but no session to analyse besides the baseline "
            f"(sessions matching {pipeline.sessions!r}); check the pipeline's 'sessions' pattern."
        )
    return tasks


def task_folder(out_dir, task: dict) -> Path:
    """Where a task's outputs go: ``OUT/sub-<subject>/ses-<session>`` (``ses-all`` without sessions).

    Parameters
    ----------
    out_dir : str or Path
        The batch's output folder.
    task : dict
        A task of :func:`find_tasks` (``subject``, ``session``), or a record of :func:`run_task`.

    Returns
    -------
    Path
        The task's folder.

    Examples
    --------
    >>> task_folder("out", {"subject": "01", "session": "day1"}).as_posix()
    'out/sub-01/ses-day1'
    >>> task_folder("out", {"subject": "01", "session": ""}).as_posix()
    'out/sub-01/ses-all'
    """
    path = Path(out_dir) / f"sub-{task['subject']}"
    return path / f"ses-{task['session']}" if task["session"] else path / "ses-all"


# =============================================================================== one task (on a worker)
@contextlib.contextmanager
def limit_threads(n: int):
    """One task = ``n`` cores: ITK's threads too, restored on exit.

    One thread also makes registration bit-reproducible: ITK's multi-threaded metric sums in a varying
    order, which moves a result by ~1e-12 mm.

    Parameters
    ----------
    n : int
        Threads ITK (SimpleITK) may use inside the block.

    Returns
    -------
    contextlib.AbstractContextManager
        A context manager; on exit the previous global default number of threads is restored.

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    >>> with limit_threads(1):
    ...     sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    1
    >>> sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    True
    """
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    try:
        yield
    finally:  # a worker thread inside the caller's process (processes=False) leaves it as it was
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024.0 if os.uname().sysname != "Darwin" else peak / 2**20, 1)


def input_hashes(inputs: dict[str, str]) -> dict[str, str]:
    r"""Content hash (sha256) of every input file or folder.

    Parameters
    ----------
    inputs : dict
        ``{role: path}`` of a task.

    Returns
    -------
    dict
        ``{role: sha256 hex digest}``, sorted by role (a folder hashes its files' names and contents;
        :func:`napari_immunotrack.provenance.sha256_path`).

    Examples
    --------
    >>> import hashlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.csv").write_text("organ,percent_id\ntumour,2.5\n")
    ...     hashes = input_hashes({"table": str(Path(tmp) / "a.csv")})
    >>> hashes["table"] == hashlib.sha256(b"organ,percent_id\ntumour,2.5\n").hexdigest()
    True
    """
    from ..provenance import sha256_path

    return {role: sha256_path(path) for role, path in sorted(inputs.items())}


def _write_task_outputs(result, folder: Path, prov: dict) -> list[str]:
    """The files of one task (as `immunotrack demo` writes them; chunked labels as OME-Zarr)."""
    from ..session_outputs import write_session_outputs

    written = []
    for name in ("clusters", "confirmed"):
        vol = result.volumes.get(name)
        if vol is not None and type(vol.data).__module__.startswith("dask"):
            from ..io.zarr import write_ome_zarr

            # a volume larger than memory: written chunk by chunk, never gathered
            write_ome_zarr(
                vol,
                folder / f"{name}.ome.zarr",
                levels=1,
                chunks=[max(c) for c in vol.data.chunks],
                provenance={**prov, "output": name},
            )
            written.append(f"{name}.ome.zarr")
            result.volumes[name] = None
    written += [Path(p).name for p in write_session_outputs(result, folder, prov, overwrite=True)]
    return written


def run_task(task: dict, pipeline: Pipeline, out_dir: str, threads: int = 1) -> dict:
    r"""Run one (subject, session) task; never raises (a failure is returned as its one-line message).

    A task whose ``done.json`` records the same pipeline hash and input hashes is skipped. Otherwise
    :func:`~napari_immunotrack.pipeline.analyse_inputs` runs the pipeline's steps with ``threads``
    cores, and the tables, label images, transforms and ``done.json`` are written into the task's
    folder (:func:`task_folder`) atomically: complete or absent. The analyses' warnings go to the
    provenance, not to the worker's output.

    Parameters
    ----------
    task : dict
        A task of :func:`find_tasks`.
    pipeline : Pipeline
        The checked pipeline.
    out_dir : str
        The batch's output folder.
    threads : int, default 1
        Cores of this task (dask and ITK threads).

    Returns
    -------
    dict
        A record: ``subject``, ``session``, ``day``, ``status`` ("ok", "partial", "skipped",
        "failed"), ``message``, ``errors`` ({step: message}), ``seconds`` (wall), ``cpu_s`` (CPU time of
        the worker process meanwhile), ``peak_rss_mb`` (of the worker process so far), ``worker`` (host:pid).

    Examples
    --------
    A day-0 baseline and a day-1 session with a 27-voxel void, the cluster step only; the second run
    finds nothing changed:

    >>> import tempfile
    >>> import numpy as np
    >>> from napari_immunotrack.batch import parse_pipeline
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> pre = (100 + np.random.default_rng(0).normal(0, 2, (12, 12, 12))).astype(np.float32)
    >>> post = pre.copy()
    >>> post[4:7, 4:7, 4:7] = 10.0
    >>> pipeline = parse_pipeline("name: iron\nsteps:\n  clusters: {threshold: 0.4}\n")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day, image in ((0, pre), (1, post)):
    ...         anat = Path(tmp) / "cohort" / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = save_volume(Volume(image, np.eye(4), "MR"), anat / f"sub-01_ses-day{day}_T2starw.nii.gz")
    ...     task = find_tasks(pipeline, Path(tmp) / "cohort")[0]
    ...     first = run_task(task, pipeline, str(Path(tmp) / "out"))
    ...     written = sorted(p.name for p in task_folder(Path(tmp) / "out", task).iterdir())
    ...     again = run_task(task, pipeline, str(Path(tmp) / "out"))
    >>> first["status"], first["errors"], again["status"]
    ('ok', {}, 'skipped')
    >>> written
    ['clusters.csv', 'clusters.csv.provenance.json', 'clusters.nii.gz', 'clusters.nii.gz.provenance.json', 'done.json']
    """
    import dask

    from ..outputs import atomic_output_dir, write_json
    from ..pipeline import analyse_inputs
    from ..provenance import record as prov_record

    t0, cpu0 = time.perf_counter(), time.process_time()
    rec = {
        "subject": task["subject"],
        "session": task["session"],
        "day": task["day"],
        "status": "failed",
        "message": "",
        "errors": {},
        "seconds": 0.0,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    folder = task_folder(out_dir, task)
    try:
        if task["problems"]:
            raise InputError("; ".join(task["problems"]))
        hashes = input_hashes(task["inputs"])
        done_path = folder / "done.json"
        if done_path.exists():
            try:
                done = json.loads(done_path.read_text())
            except (OSError, ValueError):
                done = {}
            if done.get("parameters_sha256") == pipeline.sha256 and done.get("inputs_sha256") == hashes:
                rec.update(
                    status="skipped",
                    errors=done.get("errors", {}),
                    previous_status=done.get("status"),
                    message="unchanged since " + str(done.get("finished_utc", "?")),
                )
                return rec
        # dask arrays inside the task (chunked volumes) are computed here, not sent back to the cluster;
        # the analyses' warnings (guesses, small ROIs) are kept in the provenance, not printed by the worker
        with (
            dask.config.set(scheduler="synchronous" if threads == 1 else "threads", num_workers=threads),
            limit_threads(threads),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            result = analyse_inputs(
                task["inputs"],
                task["subject"],
                task["session"],
                steps=list(pipeline.steps),
                parameters=pipeline.steps,
                baseline_session=task["baseline_session"],
            )
            errors = {k: v for k, v in result.errors.items() if not k.endswith("_traceback")}
            notes = list(dict.fromkeys(one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))
            prov = prov_record(
                "batch",
                parameters={
                    "pipeline": pipeline.name,
                    **pipeline.resolved(),
                    **result.parameters,
                    "itk_threads": threads,
                },
                warnings=notes,
                errors=errors,
                timings_s=result.timings_s,
                subject=task["subject"],
                session=task["session"],
                parameters_sha256=pipeline.sha256,
            )
            prov["inputs"] = {
                role: {"path": str(Path(p).resolve()), "sha256": hashes[role]}
                for role, p in sorted(task["inputs"].items())
            }
            status = "partial" if errors else "ok"
            folder.parent.mkdir(parents=True, exist_ok=True)
            # everything goes to a temporary folder renamed into place: complete or absent
            with atomic_output_dir(folder, overwrite=True) as tmp:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; results are ordinary folders
                written = _write_task_outputs(result, tmp, prov)
                write_json(
                    tmp / "done.json",
                    {
                        "subject": task["subject"],
                        "session": task["session"],
                        "day": task["day"],
                        "status": status,
                        "errors": errors,
                        "warnings": notes,
                        "pipeline": pipeline.name,
                        "parameters_sha256": pipeline.sha256,
                        "inputs_sha256": hashes,
                        "inputs": {role: str(Path(p).resolve()) for role, p in sorted(task["inputs"].items())},
                        "outputs": sorted(written),
                        "timings_s": result.timings_s,
                        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "software": prov["software"],
                    },
                    overwrite=True,
                )
        rec.update(
            status=status, errors=errors, message="; ".join(f"{k}: {v}" for k, v in errors.items()) if errors else ""
        )
    except InputError as exc:
        rec["message"] = one_line(exc)
    except Exception as exc:  # a bug or a broken file the readers did not catch: reported, the others go on
        rec["message"] = f"internal error: {type(exc).__name__}: {one_line(exc)[:300]}"
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["cpu_s"] = round(time.process_time() - cpu0, 2)  # below ``seconds``: the task waited for a core
        rec["peak_rss_mb"] = _peak_rss_mb()
    return rec
