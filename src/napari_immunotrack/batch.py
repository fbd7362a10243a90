"""The session pipeline over a whole cohort, headless, in parallel and resumable (no napari).

A *pipeline file* (YAML) says which steps run, with which parameters, on
which files of each subject and session::

    name: car-t-tracking
    subjects: "sub-*"             # subject folders of the cohort folder
    sessions: "ses-*"             # session folders of a subject (null: the subject folder is the session)
    baseline_session: auto        # the pre-injection session (auto: the one whose name says day 0)
    inputs:                       # glob patterns relative to a session folder (defaults shown in
      T2starw: anat/*_T2starw.nii.gz   # pipeline.DEFAULT_INPUT_PATTERNS; give only what differs)
    steps:                        # any of register, clusters, confirm, pet, spect, f19, mpi
      register: {transform: rigid}
      clusters: {method: fraction, threshold: 0.5}
      mpi: {iron_per_cell_pg: 5.0}

Each step's parameters are the keyword arguments of its analysis function
(:func:`~napari_immunotrack.registration.register`,
:func:`~napari_immunotrack.analysis.clusters.segment_clusters`,
:func:`~napari_immunotrack.analysis.confirm.confirm_dual_mode`,
:func:`~napari_immunotrack.analysis.pet.quantify_pet` for pet and spect,
:func:`~napari_immunotrack.analysis.fluorine.fluorine_cells`,
:func:`~napari_immunotrack.analysis.mpi.mpi_iron`), checked against their
signatures before any work starts (an unknown step or parameter is named
with its line). Steps always run in the order above.

:func:`run_batch` makes one task per (subject, session) on a Dask cluster (a
``LocalCluster`` by default, or any running scheduler by its address). Each
task hashes its inputs, skips itself when ``done.json`` in its output folder
holds the same input and parameter hashes, else runs
:func:`~napari_immunotrack.pipeline.analyse_inputs` and writes its outputs
into a temporary folder renamed into place (so a killed run leaves finished
folders and nothing half-written). A failing task is reported and the others
go on. At the end the per-task tables are concatenated into the cohort
tables (``cohort.csv``: one row per subject, session and site) and figures.

Output folder::

    OUT/batch.json, pipeline.yaml            what ran (the pipeline and its hash)
    OUT/sub-01/ses-day1/                     one task: labels, tables, transforms, done.json
    OUT/cohort.csv                           one row per subject, session and site (organ)
    OUT/cohort_<table>.csv                   every per-task table, concatenated (pet, f19, clusters, ...)
    OUT/cohort_<readout>.png                 per-site time courses (mean ± SD over subjects)
    OUT/failures.csv                         one row per failed task or step
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import hashlib
import inspect
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .errors import InputError, one_line
from .pipeline import BASELINE_ROLES, DEFAULT_INPUT_PATTERNS, STEP_EXTRAS, STEPS

#: Top-level keys of a pipeline file.
PIPELINE_KEYS = ("name", "description", "subjects", "sessions", "baseline_session", "inputs", "steps")

#: Arguments the pipeline supplies itself (images, ROIs, transforms): not settable in a pipeline file.
_WIRED = {
    "register": {"fixed", "moving", "fixed_mask", "moving_mask", "progress"},
    "clusters": {"post", "baseline", "reference_mask", "search_mask", "background_mask", "baseline_transform",
                 "progress", "prepared"},
    "confirm": {"t1_post", "t2_post", "t1_pre", "t2_pre", "t1_map_pre", "t1_map_post", "t2_map_pre", "t2_map_post",
                "search_mask", "reference_mask", "transform", "pre_transform", "progress"},
    "pet": {"pet", "rois", "header", "transform", "progress", "overrides", "volume"},
    "f19": {"f19", "rois", "reference_mask", "reference_concentration_mm", "fluorine_per_cell", "noise_mask",
            "transform", "progress"},
    "mpi": {"mpi", "rois", "fiducials", "transform", "calibration", "progress"},
}
_WIRED["spect"] = _WIRED["pet"]
_WIRED["relax"] = {"series", "rois", "baseline", "b1", "roi_transform", "baseline_transform", "progress"}

#: Defaults of step arguments that have none in their function (the pipeline's own default).
_PIPELINE_DEFAULTS = {"mpi": {"iron_per_cell_pg": 5.0}}

#: Per-organ columns of each readout that go into the cohort table (``<step>_<column>``).
COHORT_COLUMNS = {
    "pet": ("volume_ml", "mean_bq_ml", "suv_bw_mean", "suv_bw_peak", "percent_id", "percent_id_per_g"),
    "spect": ("mean_bq_ml", "suv_bw_mean", "percent_id"),
    "f19": ("fluorine_atoms", "cell_count", "status"),
    "mpi": ("iron_ng", "cell_count"),
}
#: Per-task tables concatenated into ``cohort_<name>.csv``.
TASK_TABLES = ("pet", "spect", "f19", "mpi", "clusters", "confirmed", "relax")


# =============================================================================== pipeline files
def _functions():
    """The analysis function(s) of each step, whose signatures define its parameters."""
    from .analysis.clusters import segment_clusters
    from .analysis.confirm import confirm_dual_mode
    from .analysis.fluorine import fluorine_cells
    from .analysis.mpi import mpi_iron
    from .analysis.pet import quantify_pet, read_pet_header
    from .analysis.relaxometry import relax_step
    from .registration import register

    return {"register": (register,), "clusters": (segment_clusters,), "confirm": (confirm_dual_mode,),
            "pet": (quantify_pet, read_pet_header), "spect": (quantify_pet, read_pet_header),
            "f19": (fluorine_cells,), "mpi": (mpi_iron,), "relax": (relax_step,)}


def step_parameters(step: str) -> Dict[str, object]:
    """The parameters a pipeline file may give ``step``, with their defaults.

    >>> step_parameters("clusters")["threshold"] is None and step_parameters("clusters")["min_size"]
    3
    """
    if step not in STEPS:
        raise InputError(f"unknown step {step!r}; steps are {', '.join(STEPS)}.")
    out: Dict[str, object] = {}
    for func in _functions()[step]:
        for name, p in inspect.signature(func).parameters.items():
            if name in _WIRED[step] or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            default = p.default if p.default is not p.empty else _PIPELINE_DEFAULTS.get(step, {}).get(name)
            out.setdefault(name, list(default) if isinstance(default, tuple) else default)
    for name, default in STEP_EXTRAS.get(step, {}).items():
        out[name] = list(default) if isinstance(default, tuple) else default
    return out


@dataclass
class Pipeline:
    """A checked pipeline file (see the module docstring)."""

    name: str
    steps: Dict[str, dict]
    inputs: Dict[str, str]
    subjects: str = "sub-*"
    sessions: Optional[str] = "ses-*"
    baseline_session: Optional[str] = "auto"
    description: str = ""
    source: str = "pipeline"
    text: str = ""
    # computed once where the pipeline is read, and shipped to the workers with it (so a worker that
    # only finds its task unchanged does not import the analyses to hash the parameters)
    _resolved: Optional[dict] = field(default=None, repr=False, compare=False)

    def resolved(self) -> dict:
        """Everything that defines the results: steps with every parameter (defaults filled), inputs."""
        if self._resolved is None:
            steps = {}
            for step in STEPS:
                if step in self.steps:
                    steps[step] = {**step_parameters(step), **self.steps[step]}
            self._resolved = json.loads(json.dumps({"steps": steps, "inputs": dict(sorted(self.inputs.items())),
                                                    "subjects": self.subjects, "sessions": self.sessions,
                                                    "baseline_session": self.baseline_session}, default=str))
        return json.loads(json.dumps(self._resolved))

    @property
    def sha256(self) -> str:
        """Hash of :meth:`resolved`: equal hashes give equal results on equal inputs."""
        text = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _yaml_tree(text: str, source: str):
    """(data, lines): the YAML document and the 1-based line of every key (paths as tuples)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{source}{where}: not valid YAML ({one_line(problem)}).") from None
    lines: Dict[tuple, int] = {(): 1}

    def walk(n, path):
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for k, v in n.value:
                key = k.value
                if key in seen:
                    raise InputError(f"{source} line {k.start_mark.line + 1}: {'.'.join(map(str, path + (key,)))} "
                                     "is given twice; keep one.")
                seen.add(key)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def _type_problem(value, default) -> Optional[str]:
    """Why ``value`` cannot stand for a parameter whose default is ``default`` (None if it can)."""
    if default is None:
        return None
    if value is None:
        return "must be given a value, not null"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be text"
    if isinstance(default, list):
        return None if isinstance(value, list) else "must be a list, e.g. [1, 2]"
    return None


def _check_values(step: str, params: dict, where) -> None:
    """Checks of a step's values that need no data (so bad values fail before any work)."""
    full = {**step_parameters(step), **params}
    try:
        if step == "register":
            bad = [m for m in full["modalities"] if m not in ("pet", "spect", "mpi")]
            if bad:
                raise InputError(f"register.modalities has {bad[0]!r}; use pet, spect and/or mpi.")
            if full["transform"] not in ("rigid", "affine"):
                raise InputError(f"register.transform={full['transform']!r} must be rigid or affine.")
        elif step == "clusters":
            from .analysis.clusters import check_rule_parameters, structure_for

            check_rule_parameters(full["method"], full["threshold"], full["baseline_rule"], full["baseline_ratio"],
                                  full["baseline_k"], full["blob_scales_voxels"])
            structure_for(full["connectivity"])
            if full["min_size"] < 1:
                raise InputError(f"clusters.min_size={full['min_size']} must be at least 1 voxel.")
            chunks = full["chunks"]
            if chunks is not None and (not isinstance(chunks, list) or len(chunks) != 3 or
                                       any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in chunks)):
                raise InputError(f"clusters.chunks={chunks!r} must be three positive whole numbers, e.g. [64, 64, 64].")
        elif step == "confirm":
            if full["connectivity"] not in (6, 18, 26):
                raise InputError(f"confirm.connectivity={full['connectivity']} must be 6, 18 or 26.")
            if full["min_size"] < 1:
                raise InputError(f"confirm.min_size={full['min_size']} must be at least 1 voxel.")
        elif step == "mpi" and not full["iron_per_cell_pg"] > 0:
            raise InputError(f"mpi.iron_per_cell_pg={full['iron_per_cell_pg']} must be greater than 0.")
        elif step == "f19":
            for key in ("reference_concentration_mm", "fluorine_per_cell"):
                if full[key] is not None and (isinstance(full[key], bool) or not isinstance(full[key], (int, float))
                                              or not full[key] > 0):
                    raise InputError(f"f19.{key}={full[key]!r} must be a number greater than 0 (or null).")
    except InputError as exc:
        raise InputError(f"{where(step)}: {one_line(exc)}") from None


def parse_pipeline(text: str, source: str = "pipeline") -> Pipeline:
    """Check a pipeline file's text and return the :class:`Pipeline` (InputError naming the line otherwise).

    Examples
    --------
    >>> p = parse_pipeline("steps:\\n  clusters: {threshold: 0.4}\\n")
    >>> p.steps, p.inputs["T2starw"]
    ({'clusters': {'threshold': 0.4}}, 'anat/*_T2starw.nii.gz')
    >>> parse_pipeline("steps:\\n  clusters: {treshold: 0.4}\\n", "p.yaml")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: p.yaml line 2: unknown parameter 'treshold' for step clusters ...
    """
    data, lines = _yaml_tree(text, source)

    def at(*path):
        for n in range(len(path), -1, -1):
            if path[:n] in lines:
                return f"{source} line {lines[path[:n]]}"
        return source

    if data is None:
        raise InputError(f"{source} is empty; give at least 'steps:' (see examples/pipeline.yaml).")
    if not isinstance(data, dict):
        raise InputError(f"{at()}: a pipeline file is a mapping of {', '.join(PIPELINE_KEYS)}.")
    for key in data:
        if key not in PIPELINE_KEYS:
            hint = difflib.get_close_matches(str(key), PIPELINE_KEYS, 1)
            raise InputError(f"{at(key)}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; a pipeline has {', '.join(PIPELINE_KEYS)}.")
    # --- steps: a mapping {step: params}, or a list of names / one-key mappings
    raw = data.get("steps")
    if raw is None:
        raise InputError(f"{at('steps')}: no steps; list some of {', '.join(STEPS)} under 'steps:'.")
    items, step_path = [], {}
    if isinstance(raw, dict):
        for name, params in raw.items():
            items.append((name, params))
            step_path[name] = ("steps", name)
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            if isinstance(entry, str):
                items.append((entry, None))
                step_path[entry] = ("steps", i)
            elif isinstance(entry, dict) and len(entry) == 1:
                (name, params), = entry.items()
                items.append((name, params))
                step_path[name] = ("steps", i, name)
            else:
                raise InputError(f"{at('steps', i)}: a step is a name or 'name: {{parameters}}'.")
            if [n for n, _ in items].count(items[-1][0]) > 1:
                raise InputError(f"{at('steps', i)}: step {items[-1][0]!r} is given twice; keep one.")
    else:
        raise InputError(f"{at('steps')}: 'steps' must be a mapping (step: parameters) or a list of step names.")
    if not items:
        raise InputError(f"{at('steps')}: no steps; list some of {', '.join(STEPS)} under 'steps:'.")

    def where(step, param=None):
        path = step_path.get(step, ("steps",))
        return at(*(path + ((param,) if param is not None else ())))

    steps: Dict[str, dict] = {}
    for name, params in items:
        if name not in STEPS:
            hint = difflib.get_close_matches(str(name), STEPS, 1)
            raise InputError(f"{where(name)}: unknown step {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; steps are {', '.join(STEPS)}.")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise InputError(f"{where(name)}: the parameters of step {name} must be a mapping (name: value).")
        known = step_parameters(name)
        for key, value in params.items():
            if key not in known:
                hint = difflib.get_close_matches(str(key), list(known), 1)
                raise InputError(f"{where(name, key)}: unknown parameter {key!r} for step {name}"
                                 + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                 + f"; its parameters are {', '.join(known)}.")
            problem = _type_problem(value, known[key])
            if problem:
                raise InputError(f"{where(name, key)}: {name}.{key} {problem} (got {value!r}).")
        _check_values(name, params, where)
        steps[name] = dict(params)
    # --- inputs
    inputs = dict(DEFAULT_INPUT_PATTERNS)
    raw_inputs = data.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        raise InputError(f"{at('inputs')}: 'inputs' must be a mapping of role: glob pattern.")
    for role, pattern in raw_inputs.items():
        if role not in DEFAULT_INPUT_PATTERNS:
            hint = difflib.get_close_matches(str(role), list(DEFAULT_INPUT_PATTERNS), 1)
            raise InputError(f"{at('inputs', role)}: unknown input {role!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; inputs are {', '.join(DEFAULT_INPUT_PATTERNS)}.")
        if not isinstance(pattern, str) or not pattern.strip():
            raise InputError(f"{at('inputs', role)}: the pattern of input {role} must be text, e.g. anat/*_T1w.nii.gz.")
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise InputError(f"{at('inputs', role)}: the pattern {pattern!r} must be relative to the session folder.")
        inputs[role] = pattern.strip()
    # --- folders
    out = {}
    for key, default in (("subjects", "sub-*"), ("sessions", "ses-*"), ("baseline_session", "auto")):
        value = data.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InputError(f"{at(key)}: {key} must be text (a folder name or glob pattern)"
                             + (" or null." if key != "subjects" else "."))
        if key == "subjects" and value is None:
            raise InputError(f"{at(key)}: subjects must be a glob pattern such as 'sub-*'.")
        out[key] = value
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str):
        raise InputError(f"{at('name')}: name must be text.")
    pipeline = Pipeline(name=name, steps=steps, inputs=inputs, subjects=out["subjects"], sessions=out["sessions"],
                        baseline_session=out["baseline_session"], description=str(data.get("description") or ""),
                        source=source, text=text)
    pipeline.resolved()
    return pipeline


def load_pipeline(path) -> Pipeline:
    """Read and check a pipeline file (YAML)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pipeline file {path} does not exist or is not a file.")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"pipeline file {path} must be YAML (.yaml or .yml); see examples/pipeline.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"pipeline file {path} is not UTF-8 text.") from None
    return parse_pipeline(text, source=str(path))


def _plain(value):
    """Settings as plain YAML types (NumPy scalars and tuples converted)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def pipeline_from_settings(settings: dict) -> str:
    """A pipeline file's text (YAML) from the widgets' current settings.

    Parameters
    ----------
    settings : dict
        ``{step: parameters}`` for steps of :data:`~napari_immunotrack.pipeline.STEPS` (e.g.
        ``{"clusters": clusters_widget.parameters(), "confirm": confirm_widget.parameters()}``),
        optionally with ``name``, ``description``, ``inputs``, ``subjects``, ``sessions``,
        ``baseline_session``, or with the steps under a ``steps`` key.

    Returns
    -------
    str
        YAML text that :func:`parse_pipeline` accepts (checked before it is returned), for
        ``immunotrack batch PIPELINE COHORT -o OUT``.

    Examples
    --------
    >>> text = pipeline_from_settings({"name": "my-analysis", "clusters": {"method": "fraction", "threshold": 0.4}})
    >>> parse_pipeline(text).steps
    {'clusters': {'method': 'fraction', 'threshold': 0.4}}
    """
    import yaml

    if not isinstance(settings, dict):
        raise InputError("settings must be a dict of step: parameters.")
    settings = _plain(settings)
    steps = dict(settings.get("steps") or {})
    top = {}
    for key, value in settings.items():
        if key == "steps":
            continue
        if key in STEPS:
            steps[key] = value or {}
        elif key in PIPELINE_KEYS:
            top[key] = value
        else:
            raise InputError(f"setting {key!r} is neither a step ({', '.join(STEPS)}) nor a pipeline key "
                             f"({', '.join(k for k in PIPELINE_KEYS if k != 'steps')}).")
    if not steps:
        raise InputError(f"no step in the settings; give parameters for some of {', '.join(STEPS)}.")
    doc = {"name": top.get("name", "exported-from-napari")}
    if top.get("description"):
        doc["description"] = top["description"]
    doc["subjects"] = top.get("subjects", "sub-*")
    doc["sessions"] = top.get("sessions", "ses-*")
    doc["baseline_session"] = top.get("baseline_session", "auto")
    doc["inputs"] = {**DEFAULT_INPUT_PATTERNS, **(top.get("inputs") or {})}
    doc["steps"] = {s: steps[s] for s in STEPS if s in steps}
    doc["steps"].update({s: v for s, v in steps.items() if s not in STEPS})  # unknown ones: named by the check
    when = _dt.datetime.now().isoformat(timespec="seconds")
    text = (f"# napari-immunotrack pipeline, exported from the napari widgets' settings on {when}.\n"
            "# Run it on a cohort:  immunotrack batch THIS_FILE.yaml COHORT_DIR -o OUT_DIR\n"
            "# inputs: glob patterns relative to each session folder; steps: the analysis functions' parameters.\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    parse_pipeline(text, source="the exported settings")  # refuse to hand out a file that would not run
    return text


# =============================================================================== the cohort's tasks
def _day(session: str) -> Optional[float]:
    match = re.search(r"day-?(\d+(?:[.p]\d+)?)", session)
    return float(match.group(1).replace("p", ".")) if match else None


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.endswith(".provenance.json")


def _match(folder: Path, pattern: str):
    """(path or None, problem or None) for one input pattern in one folder."""
    hits = sorted(p for p in folder.glob(pattern) if _visible(p))
    if len(hits) > 1:
        names = ", ".join(p.name for p in hits[:4])
        return None, f"the pattern {pattern!r} matches {len(hits)} files in {folder} ({names}); make it match one"
    return (hits[0] if hits else None), None


def find_tasks(pipeline: Pipeline, cohort_dir) -> List[dict]:
    """One task per (subject, session) of ``cohort_dir``, with its input files (InputError if none).

    A task is a dict: ``subject``, ``session``, ``day``, ``session_dir``, ``baseline_session``,
    ``inputs`` ({role: path}) and ``problems`` (patterns matching several files).
    """
    root = Path(cohort_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the cohort folder holding the subject folders.")
    root = root.resolve()  # absolute paths: a worker of a remote cluster has another working folder
    subjects = sorted(p for p in root.glob(pipeline.subjects) if p.is_dir() and _visible(p))
    if not subjects:
        raise InputError(f"{root} has no subject folder matching {pipeline.subjects!r}; check the folder or the "
                         "pipeline's 'subjects' pattern.")
    tasks = []
    for sub_dir in subjects:
        subject = sub_dir.name[4:] if sub_dir.name.startswith("sub-") else sub_dir.name
        if pipeline.sessions is None:
            sessions = [sub_dir]
        else:
            sessions = sorted(p for p in sub_dir.glob(pipeline.sessions) if p.is_dir() and _visible(p))
        names = {p: (p.name[4:] if p.name.startswith("ses-") else p.name) for p in sessions}
        baseline = None
        if pipeline.baseline_session == "auto":
            baseline = next((p for p in sorted(sessions, key=lambda p: (_day(names[p]) is None, _day(names[p]) or 0))
                             if _day(names[p]) == 0), None)
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
            tasks.append({"subject": subject, "session": session, "day": _day(session),
                          "session_dir": str(ses_dir), "baseline_session": names.get(baseline) if baseline else None,
                          "inputs": inputs, "problems": problems})
    if not tasks:
        raise InputError(f"{root} has subject folders but no session to analyse besides the baseline "
                         f"(sessions matching {pipeline.sessions!r}); check the pipeline's 'sessions' pattern.")
    return tasks


def task_folder(out_dir, task: dict) -> Path:
    """Where a task's outputs go: ``OUT/sub-<subject>/ses-<session>``."""
    path = Path(out_dir) / f"sub-{task['subject']}"
    return path / f"ses-{task['session']}" if task["session"] else path / "ses-all"


# =============================================================================== one task (on a worker)
@contextlib.contextmanager
def _limit_threads(n: int):
    """One task = ``n`` cores: ITK's threads too (one thread also makes registration bit-reproducible:
    ITK's multi-threaded metric sums in a varying order, which moves a result by ~1e-12 mm)."""
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
    return round(peak / 1024.0 if os.uname().sysname != "Darwin" else peak / 2 ** 20, 1)


def input_hashes(inputs: Dict[str, str]) -> Dict[str, str]:
    """Content hash (sha256) of every input file or folder."""
    from .provenance import sha256_path

    return {role: sha256_path(path) for role, path in sorted(inputs.items())}


def _write_task_outputs(result, folder: Path, prov: dict) -> List[str]:
    """The files of one task (as `immunotrack demo` writes them; chunked labels as OME-Zarr)."""
    from .commands.demo import write_outputs

    written = []
    for name in ("clusters", "confirmed"):
        vol = result.volumes.get(name)
        if vol is not None and type(vol.data).__module__.startswith("dask"):
            from .io.zarr import write_ome_zarr

            # a volume larger than memory: written chunk by chunk, never gathered
            write_ome_zarr(vol, folder / f"{name}.ome.zarr", levels=1, chunks=[max(c) for c in vol.data.chunks],
                           provenance={**prov, "output": name})
            written.append(f"{name}.ome.zarr")
            result.volumes[name] = None
    written += [Path(p).name for p in write_outputs(result, folder, prov, overwrite=True)]
    return written


def run_task(task: dict, pipeline: Pipeline, out_dir: str, threads: int = 1) -> dict:
    """Run one (subject, session) task; never raises (a failure is returned as its one-line message).

    Returns a record: ``subject``, ``session``, ``day``, ``status`` ("ok", "partial", "skipped",
    "failed"), ``message``, ``errors`` ({step: message}), ``seconds`` (wall), ``cpu_s`` (CPU time of
    the worker process meanwhile), ``peak_rss_mb`` (of the worker process so far), ``worker`` (host:pid).
    """
    import dask

    from .outputs import atomic_output_dir, write_json
    from .pipeline import analyse_inputs
    from .provenance import record as prov_record

    t0, cpu0 = time.perf_counter(), time.process_time()
    rec = {"subject": task["subject"], "session": task["session"], "day": task["day"], "status": "failed",
           "message": "", "errors": {}, "seconds": 0.0, "worker": f"{socket.gethostname()}:{os.getpid()}"}
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
                rec.update(status="skipped", errors=done.get("errors", {}), previous_status=done.get("status"),
                           message="unchanged since " + str(done.get("finished_utc", "?")))
                return rec
        # dask arrays inside the task (chunked volumes) are computed here, not sent back to the cluster;
        # the analyses' warnings (guesses, small ROIs) are kept in the provenance, not printed by the worker
        with dask.config.set(scheduler="synchronous" if threads == 1 else "threads", num_workers=threads), \
                _limit_threads(threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = analyse_inputs(task["inputs"], task["subject"], task["session"], steps=list(pipeline.steps),
                                    parameters=pipeline.steps, baseline_session=task["baseline_session"])
            errors = {k: v for k, v in result.errors.items() if not k.endswith("_traceback")}
            notes = list(dict.fromkeys(one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))
            prov = prov_record("batch", parameters={"pipeline": pipeline.name, **pipeline.resolved(),
                                                    **result.parameters, "itk_threads": threads},
                               warnings=notes, errors=errors, timings_s=result.timings_s,
                               subject=task["subject"], session=task["session"],
                               parameters_sha256=pipeline.sha256)
            prov["inputs"] = {role: {"path": str(Path(p).resolve()), "sha256": hashes[role]}
                              for role, p in sorted(task["inputs"].items())}
            status = "partial" if errors else "ok"
            folder.parent.mkdir(parents=True, exist_ok=True)
            # everything goes to a temporary folder renamed into place: complete or absent
            with atomic_output_dir(folder, overwrite=True) as tmp:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; results are ordinary folders
                written = _write_task_outputs(result, tmp, prov)
                write_json(tmp / "done.json", {
                    "subject": task["subject"], "session": task["session"], "day": task["day"],
                    "status": status, "errors": errors, "warnings": notes, "pipeline": pipeline.name,
                    "parameters_sha256": pipeline.sha256, "inputs_sha256": hashes,
                    "inputs": {role: str(Path(p).resolve()) for role, p in sorted(task["inputs"].items())},
                    "outputs": sorted(written), "timings_s": result.timings_s,
                    "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "software": prov["software"]}, overwrite=True)
        rec.update(status=status, errors=errors,
                   message="; ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "")
    except InputError as exc:
        rec["message"] = one_line(exc)
    except Exception as exc:  # a bug or a broken file the readers did not catch: reported, the others go on
        rec["message"] = f"internal error: {type(exc).__name__}: {one_line(exc)[:300]}"
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["cpu_s"] = round(time.process_time() - cpu0, 2)  # below ``seconds``: the task waited for a core
        rec["peak_rss_mb"] = _peak_rss_mb()
    return rec


# =============================================================================== the output folder
MANIFEST = "batch.json"
_LOCK = ".batch.lock"


def _differences(old: dict, new: dict, prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def check_output_dir(out_dir, pipeline: Pipeline, overwrite: bool = False) -> Path:
    """Refuse an output folder holding something else than this pipeline's results (unless ``overwrite``)."""
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
            raise InputError(f"{out} holds the results of another pipeline ({old.get('pipeline', '?')!r}{detail}); "
                             "choose another -o, or pass --overwrite to replace them.")
    elif any(_visible(p) for p in out.iterdir()):
        raise InputError(f"{out} is not empty and holds no batch results ({MANIFEST} missing); choose a new or "
                         "empty folder, or pass --overwrite to write into it.")
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
                raise InputError(f"another immunotrack batch (pid {other.get('pid')} on {other.get('host')}) is "
                                 f"writing to {out}; wait for it or choose another -o (remove {path} if it died).")
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
def connect(workers: Optional[int] = None, scheduler: Optional[str] = None, processes: bool = True,
            timeout_s: float = 5.0, memory_limit="auto"):
    """(client, cluster): a LocalCluster of ``workers`` single-threaded workers, or a running scheduler.

    An unreachable scheduler is an InputError after ``timeout_s`` seconds.
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
            raise InputError(f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
                             f"({one_line(exc)[:120]}); check the address and that the scheduler is running.") from None
        except (Exception, MemoryError) as exc:  # something answered that does not speak Dask's protocol
            raise InputError(f"what answers at {address} is not a Dask scheduler ({type(exc).__name__}); give the "
                             "scheduler's address (port 8786 by default, not the dashboard's 8787).") from None
        return client, None
    n = int(workers) if workers else max(1, os.cpu_count() or 1)
    kwargs = {"env": {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}} if processes else {}
    # Dask's own log lines (a worker's heartbeat racing the shutdown...) are not for the user: a task's
    # failure, a dead worker included, is reported by run_batch
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None,
                           silence_logs=logging.CRITICAL, memory_limit=memory_limit, **kwargs)
    return Client(cluster), cluster


# =============================================================================== cohort tables and figure
def _read_csv(path):
    import pandas as pd

    # round_trip: the numbers read back are the bits written, so the cohort table equals the task tables
    return pd.read_csv(path, float_precision="round_trip", keep_default_na=True)


def _label(prefix: str, name: str) -> str:
    """BIDS-style label (``sub-01``, ``ses-day1``): text in every CSV reader, joins participants.tsv."""
    return f"{prefix}-{name}" if name else ""


def cohort_tables(out_dir, records: List[dict]) -> Dict[str, object]:
    """The cohort tables from the finished tasks' folders: ``cohort`` and ``cohort_<table>``.

    ``cohort_<table>`` is every task's ``<table>.csv`` with ``subject`` (``sub-01``), ``session``
    (``ses-day1``) and ``day`` in front; ``cohort`` has one row per subject, session and site (organ) with the readouts of
    :data:`COHORT_COLUMNS` as ``<step>_<column>``.
    """
    import pandas as pd

    tables: Dict[str, list] = {name: [] for name in TASK_TABLES}
    for rec in sorted(records, key=lambda r: (r["subject"], r["day"] if r["day"] is not None else -1, r["session"])):
        if rec["status"] not in ("ok", "partial", "skipped"):
            continue
        folder = task_folder(out_dir, rec)
        for name in TASK_TABLES:
            path = folder / f"{name}.csv"
            if path.exists():
                df = _read_csv(path)
                df.insert(0, "day", rec["day"] if rec["day"] is not None else float("nan"))
                df.insert(0, "session", _label("ses", rec["session"]))
                df.insert(0, "subject", _label("sub", rec["subject"]))
                tables[name].append(df)
    out = {f"cohort_{k}": pd.concat(v, ignore_index=True) for k, v in tables.items() if v}
    keys = ["subject", "session", "day", "site"]
    merged = None
    for step, columns in COHORT_COLUMNS.items():
        df = out.get(f"cohort_{step}")
        if df is None:
            continue
        cols = [c for c in columns if c in df.columns]
        part = df[["subject", "session", "day", "organ"] + cols].rename(
            columns={"organ": "site", **{c: f"{step}_{c}" for c in cols}})
        merged = part if merged is None else merged.merge(part, on=keys, how="outer", sort=False)
    if merged is not None:
        merged = merged.sort_values(["subject", "day", "session", "site"], kind="stable").reset_index(drop=True)
        out["cohort"] = merged
    return out


#: Readouts of the cohort table drawn as time courses at the end: (column, axis label).
COHORT_FIGURES = (("pet_percent_id", "PET %ID"), ("spect_percent_id", "SPECT %ID"),
                  ("f19_cell_count", "19F cells"), ("mpi_cell_count", "MPI cells"))


def cohort_figures(cohort, out_dir, provenance: Optional[dict] = None) -> List[Path]:
    """Per-site time courses (mean ± SD over subjects) of the cohort table's readouts, one PNG each.

    Drawn with :func:`napari_immunotrack.figures.time_course`; written as ``cohort_<column>.png``
    with a provenance sidecar. Readouts without any value are left out.
    """
    from . import figures

    written = []
    n = cohort["subject"].nunique()
    for column, label in COHORT_FIGURES:
        if column not in cohort.columns or not cohort[column].notna().any():
            continue
        agg = (cohort.groupby(["site", "day"], sort=False)[column].agg(["mean", "std"]).reset_index()
               .rename(columns={"mean": column, "std": "sd"}))
        result = figures.time_course(agg, column, error="sd", unit=f"{label} (mean ± SD, {n} subjects)",
                                     title=f"{label} per site")
        written += figures.save_figure(result, Path(out_dir) / f"cohort_{column}.png", dpi=150, overwrite=True,
                                       provenance=dict(provenance or {}, step="batch"))
    return written


# =============================================================================== the driver
@dataclass
class BatchSummary:
    """What :func:`run_batch` did."""

    out_dir: Path
    records: List[dict] = field(default_factory=list)
    tables: Dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    notes: List[str] = field(default_factory=list)
    figures: List[Path] = field(default_factory=list)
    #: wall time of the phases: "checks", "cluster_start", "tasks", "cohort_outputs" (s)
    timings_s: Dict[str, float] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def peak_rss_mb_per_worker(self) -> Dict[str, float]:
        """Peak resident memory of each worker process that ran a task (MB)."""
        out: Dict[str, float] = {}
        for r in self.records:
            if r.get("peak_rss_mb") is not None and r["status"] != "skipped":
                out[r["worker"]] = max(out.get(r["worker"], 0.0), r["peak_rss_mb"])
        return out


def _failure_rows(records):
    rows = []
    for r in records:
        who = {"subject": _label("sub", r["subject"]), "session": _label("ses", r["session"])}
        if r["status"] == "failed":
            rows.append({**who, "step": "all", "message": r["message"]})
        for step, message in (r.get("errors") or {}).items():
            rows.append({**who, "step": step, "message": message})
    return rows


def run_batch(pipeline, cohort_dir, out_dir, *, workers: Optional[int] = None, scheduler: Optional[str] = None,
              overwrite: bool = False, processes: bool = True, progress=None, client=None) -> BatchSummary:
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

    from .outputs import write_json, write_table, write_text
    from .progress import report
    from .provenance import record as prov_record

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
        client, cluster = connect(workers=min(workers or (os.cpu_count() or 1), len(tasks)), scheduler=scheduler,
                                  processes=processes)
    summary.timings_s["cluster_start"] = round(time.perf_counter() - t0 - summary.timings_s["checks"], 2)
    try:
        summary.workers = len(client.scheduler_info().get("workers", {}))
        out.mkdir(exist_ok=True)
        with _lock(out):
            _remove_stale(out)
            write_json(out / MANIFEST, {"pipeline": pipeline.name, "parameters_sha256": pipeline.sha256,
                                        "resolved": pipeline.resolved(), "cohort": str(Path(cohort_dir).resolve()),
                                        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                        "tasks": len(tasks)}, overwrite=True)
            write_text(out / "pipeline.yaml", pipeline.text or pipeline_from_settings(
                {"name": pipeline.name, "steps": pipeline.steps, "inputs": pipeline.inputs}), overwrite=True)
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
                    rec = {"subject": task["subject"], "session": task["session"], "day": task["day"],
                           "status": "failed", "errors": {}, "seconds": None, "peak_rss_mb": None, "worker": "?",
                           "message": f"the worker running it died ({type(exc).__name__}: {one_line(exc)[:150]})"}
                summary.records.append(rec)
                report(progress, i / len(tasks),
                       f"sub-{rec['subject']} {rec['session']} {rec['status']} ({i}/{len(tasks)})")
            summary.records.sort(key=lambda r: (r["subject"], r["day"] if r["day"] is not None else -1, r["session"]))
            summary.timings_s["tasks"] = round(time.perf_counter() - t_tasks, 2)
            t_outputs = time.perf_counter()
            # ------------------------------------------------------------ cohort outputs
            prov = prov_record("batch", inputs={"pipeline": pipeline.source if Path(pipeline.source).exists() else None},
                               parameters={"pipeline": pipeline.name, **pipeline.resolved()},
                               parameters_sha256=pipeline.sha256, cohort=str(Path(cohort_dir).resolve()),
                               tasks=[{k: r.get(k) for k in ("subject", "session", "status", "message")}
                                      for r in summary.records])
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
