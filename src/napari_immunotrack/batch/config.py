"""Pipeline files: the YAML a batch runs, its steps' parameters and their checks (see the package docstring)."""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, one_line
from ..params import ParamModel, parameter_model
from ..pipeline import DEFAULT_INPUT_PATTERNS, STEP_EXTRAS, STEPS

#: Top-level keys of a pipeline file.
PIPELINE_KEYS = ("name", "description", "subjects", "sessions", "baseline_session", "inputs", "steps")

#: Arguments the pipeline supplies itself (images, ROIs, transforms): not settable in a pipeline file.
_WIRED = {
    "register": {"fixed", "moving", "fixed_mask", "moving_mask", "progress"},
    "clusters": {
        "post",
        "baseline",
        "reference_mask",
        "search_mask",
        "background_mask",
        "baseline_transform",
        "progress",
        "prepared",
    },
    "confirm": {
        "t1_post",
        "t2_post",
        "t1_pre",
        "t2_pre",
        "t1_map_pre",
        "t1_map_post",
        "t2_map_pre",
        "t2_map_post",
        "search_mask",
        "reference_mask",
        "transform",
        "pre_transform",
        "progress",
    },
    "pet": {"pet", "rois", "header", "transform", "progress", "overrides", "volume"},
    "f19": {
        "f19",
        "rois",
        "reference_mask",
        "noise_mask",
        "transform",
        "progress",
    },
    "mpi": {"mpi", "rois", "fiducials", "transform", "calibration", "progress"},
}
_WIRED["spect"] = _WIRED["pet"]
_WIRED["dicom"] = {"labels", "source", "label_names", "series_description", "series_number"}
_WIRED["cest"] = {"inputs", "label_names", "progress"}
_WIRED["relax"] = {"series", "rois", "baseline", "b1", "roi_transform", "baseline_transform", "progress"}


# =============================================================================== pipeline files
def _functions():
    """The analysis function(s) of each step, whose signatures define its parameters."""
    from ..analysis.cest import cest_step
    from ..analysis.clusters import segment_clusters
    from ..analysis.confirm import confirm_dual_mode
    from ..analysis.fluorine import fluorine_cells
    from ..analysis.mpi import mpi_iron
    from ..analysis.pet import quantify_pet, read_pet_header
    from ..analysis.relaxometry import relax_step
    from ..io.dicom_export import build_seg
    from ..registration import register

    return {
        "register": (register,),
        "clusters": (segment_clusters,),
        "confirm": (confirm_dual_mode,),
        "pet": (quantify_pet, read_pet_header),
        "spect": (quantify_pet, read_pet_header),
        "f19": (fluorine_cells,),
        "mpi": (mpi_iron,),
        "relax": (relax_step,),
        "cest": (cest_step,),
        "dicom": (build_seg,),
    }


def step_parameters(step: str) -> dict[str, object]:
    """The parameters a pipeline file may give ``step``, with their defaults.

    Every argument of the step's analysis functions (:func:`~napari_immunotrack.pipeline.analyse_inputs`
    runs them) except those the pipeline supplies itself (images, ROIs, transforms, progress), with the
    default of the function's parameter model when it has one, else of its signature; plus the step's
    :data:`~napari_immunotrack.pipeline.STEP_EXTRAS`. Tuples become lists (as YAML reads them).

    Parameters
    ----------
    step : str
        One of :data:`~napari_immunotrack.pipeline.STEPS`.

    Returns
    -------
    dict
        ``{parameter name: default}`` (None where the default is "decided from the data").

    Raises
    ------
    InputError
        An unknown step.

    Examples
    --------
    >>> step_parameters("clusters")["threshold"] is None and step_parameters("clusters")["min_size"]
    3
    >>> step_parameters("register")["modalities"]
    ['pet', 'spect', 'mpi']
    """
    if step not in STEPS:
        raise InputError(f"unknown step {step!r}; steps are {', '.join(STEPS)}.")
    out: dict[str, object] = {}
    for func in _functions()[step]:
        model = parameter_model(func)  # an analysis with a parameter model: its defaults, read now
        for name, p in inspect.signature(func).parameters.items():
            if name in _WIRED[step] or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if model is not None and name in model:
                default = model[name].default
            else:
                default = p.default if p.default is not p.empty else None
            out.setdefault(name, list(default) if isinstance(default, tuple) else default)
    for name, default in STEP_EXTRAS.get(step, {}).items():
        out[name] = list(default) if isinstance(default, tuple) else default
    return out


@dataclass
class Pipeline:
    """A checked pipeline file (see the module docstring)."""

    name: str
    steps: dict[str, dict]
    inputs: dict[str, str]
    subjects: str = "sub-*"
    sessions: str | None = "ses-*"
    baseline_session: str | None = "auto"
    description: str = ""
    source: str = "pipeline"
    text: str = ""
    # computed once where the pipeline is read, and shipped to the workers with it (so a worker that
    # only finds its task unchanged does not import the analyses to hash the parameters)
    _resolved: dict | None = field(default=None, repr=False, compare=False)

    def resolved(self) -> dict:
        r"""Everything that defines the results: steps with every parameter (defaults filled), inputs.

        Parameters
        ----------
        None

        Returns
        -------
        dict
            ``steps`` ({step: {parameter: value}}, :func:`step_parameters` overlaid with the file's),
            ``inputs``, ``subjects``, ``sessions``, ``baseline_session``: a JSON-ready copy (computed once).

        Examples
        --------
        >>> p = parse_pipeline("steps:\n  clusters: {threshold: 0.4}\n")
        >>> r = p.resolved()
        >>> sorted(r), r["steps"]["clusters"]["threshold"], r["steps"]["clusters"]["min_size"]
        (['baseline_session', 'inputs', 'sessions', 'steps', 'subjects'], 0.4, 3)
        >>> p.sha256 == parse_pipeline("steps:\n  clusters: {threshold: 0.4, min_size: 3}\n").sha256   # a default written out
        True
        """
        if self._resolved is None:
            steps = {}
            for step in STEPS:
                if step in self.steps:
                    steps[step] = {**step_parameters(step), **self.steps[step]}
            self._resolved = json.loads(
                json.dumps(
                    {
                        "steps": steps,
                        "inputs": dict(sorted(self.inputs.items())),
                        "subjects": self.subjects,
                        "sessions": self.sessions,
                        "baseline_session": self.baseline_session,
                    },
                    default=str,
                )
            )
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
    lines: dict[tuple, int] = {(): 1}

    def walk(n, path):
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for k, v in n.value:
                key = k.value
                if key in seen:
                    raise InputError(
                        f"{source} line {k.start_mark.line + 1}: {'.'.join(map(str, path + (key,)))} "
                        "is given twice; keep one."
                    )
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


def _type_problem(value, default) -> str | None:
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


def step_models(step: str) -> list[ParamModel]:
    """The parameter models of a step's analysis functions (those that have one).

    Parameters
    ----------
    step : str
        One of :data:`~napari_immunotrack.pipeline.STEPS`.

    Returns
    -------
    list of ParamModel
        The models (:mod:`napari_immunotrack.params`), empty for a step whose functions have none yet.

    Examples
    --------
    >>> [m.name for m in step_models("confirm")]
    ['confirm']
    >>> step_models("register")
    []
    """
    return [m for m in (parameter_model(f) for f in _functions()[step]) if m is not None]


def step_schema(step: str) -> dict | None:
    """The JSON Schema of a step's parameters in a pipeline file, from its analysis' parameter model.

    Parameters
    ----------
    step : str
        One of :data:`~napari_immunotrack.pipeline.STEPS`.

    Returns
    -------
    dict or None
        A JSON Schema object (type, default, range, unit in ``x-unit``, help per parameter); None for
        a step whose analysis has no model yet.

    Examples
    --------
    >>> schema = step_schema("confirm")
    >>> schema["type"], schema["properties"]["min_size"]["default"], schema["properties"]["min_size"]["x-unit"]
    ('object', 3, 'voxels')
    >>> step_schema("register") is None
    True
    """
    models = step_models(step)
    return models[0].json_schema() if models else None


def _check_values(step: str, params: dict, where) -> None:
    """Checks of a step's values that need no data (so bad values fail before any work)."""
    for model in step_models(step):  # types, ranges and choices of the modelled parameters
        for key, value in params.items():
            if key in model:
                try:
                    model[key].check(value, where=f"{step}.{key}")
                except InputError as exc:
                    raise InputError(f"{where(step, key)}: {one_line(exc)}") from None
    full = {**step_parameters(step), **params}
    try:
        if step == "register":
            bad = [m for m in full["modalities"] if m not in ("pet", "spect", "mpi")]
            if bad:
                raise InputError(f"register.modalities has {bad[0]!r}; use pet, spect and/or mpi.")
            if full["transform"] not in ("rigid", "affine"):
                raise InputError(f"register.transform={full['transform']!r} must be rigid or affine.")
        elif step == "clusters":
            from ..analysis.clusters import check_rule_parameters

            check_rule_parameters(
                full["method"],
                full["threshold"],
                full["baseline_rule"],
                full["baseline_ratio"],
                full["baseline_k"],
                full["blob_scales_voxels"],
            )
            chunks = full["chunks"]
            if chunks is not None and (
                not isinstance(chunks, list)
                or len(chunks) != 3
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in chunks)
            ):
                raise InputError(f"clusters.chunks={chunks!r} must be three positive whole numbers, e.g. [64, 64, 64].")
    except InputError as exc:
        raise InputError(f"{where(step)}: {one_line(exc)}") from None


def parse_pipeline(text: str, source: str = "pipeline") -> Pipeline:
    r"""Check a pipeline file's text and return the :class:`Pipeline` (InputError naming the line otherwise).

    Unknown keys, steps and parameters (with a "did you mean" suggestion), values of the wrong type
    or out of range are refused with the file and line; missing inputs take
    :data:`~napari_immunotrack.pipeline.DEFAULT_INPUT_PATTERNS`.

    Parameters
    ----------
    text : str
        The YAML text (keys of :data:`PIPELINE_KEYS`).
    source : str, default "pipeline"
        Where the text came from (a file name), in messages and in ``Pipeline.source``.

    Returns
    -------
    Pipeline
        The name, steps with the parameters given, inputs (glob patterns per role), subject/session
        patterns, the baseline session and the text.

    Raises
    ------
    InputError
        ``"<source> line N: ..."`` for anything that cannot run.

    Examples
    --------
    >>> p = parse_pipeline("steps:\n  clusters: {threshold: 0.4}\n")
    >>> p.steps, p.inputs["T2starw"]
    ({'clusters': {'threshold': 0.4}}, 'anat/*_T2starw.nii.gz')
    >>> parse_pipeline("steps:\n  clusters: {treshold: 0.4}\n", "p.yaml")
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
            raise InputError(
                f"{at(key)}: unknown key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; a pipeline has {', '.join(PIPELINE_KEYS)}."
            )
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
                ((name, params),) = entry.items()
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

    steps: dict[str, dict] = {}
    for name, params in items:
        if name not in STEPS:
            hint = difflib.get_close_matches(str(name), STEPS, 1)
            raise InputError(
                f"{where(name)}: unknown step {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; steps are {', '.join(STEPS)}."
            )
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise InputError(f"{where(name)}: the parameters of step {name} must be a mapping (name: value).")
        known = step_parameters(name)
        for key, value in params.items():
            if key not in known:
                hint = difflib.get_close_matches(str(key), list(known), 1)
                raise InputError(
                    f"{where(name, key)}: unknown parameter {key!r} for step {name}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; its parameters are {', '.join(known)}."
                )
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
            raise InputError(
                f"{at('inputs', role)}: unknown input {role!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; inputs are {', '.join(DEFAULT_INPUT_PATTERNS)}."
            )
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
            raise InputError(
                f"{at(key)}: {key} must be text (a folder name or glob pattern)"
                + (" or null." if key != "subjects" else ".")
            )
        if key == "subjects" and value is None:
            raise InputError(f"{at(key)}: subjects must be a glob pattern such as 'sub-*'.")
        out[key] = value
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str):
        raise InputError(f"{at('name')}: name must be text.")
    pipeline = Pipeline(
        name=name,
        steps=steps,
        inputs=inputs,
        subjects=out["subjects"],
        sessions=out["sessions"],
        baseline_session=out["baseline_session"],
        description=str(data.get("description") or ""),
        source=source,
        text=text,
    )
    pipeline.resolved()
    return pipeline


def load_pipeline(path) -> Pipeline:
    r"""Read and check a pipeline file (YAML) with :func:`parse_pipeline`.

    Parameters
    ----------
    path : str or Path
        A ``.yaml`` or ``.yml`` file, UTF-8.

    Returns
    -------
    Pipeline
        The checked pipeline; ``source`` is the path.

    Raises
    ------
    InputError
        A missing file, another extension, text that is not UTF-8, or what :func:`parse_pipeline` refuses.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "pipeline.yaml"
    ...     _ = path.write_text("name: demo\nsteps:\n  clusters: {threshold: 0.4}\n  pet: {}\n")
    ...     p = load_pipeline(path)
    >>> p.name, sorted(p.steps), p.subjects, p.baseline_session
    ('demo', ['clusters', 'pet'], 'sub-*', 'auto')
    """
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
            raise InputError(
                f"setting {key!r} is neither a step ({', '.join(STEPS)}) nor a pipeline key "
                f"({', '.join(k for k in PIPELINE_KEYS if k != 'steps')})."
            )
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
    text = (
        f"# napari-immunotrack pipeline, exported from the napari widgets' settings on {when}.\n"
        "# Run it on a cohort:  immunotrack batch THIS_FILE.yaml COHORT_DIR -o OUT_DIR\n"
        "# inputs: glob patterns relative to each session folder; steps: the analysis functions' parameters.\n"
        + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    )
    parse_pipeline(text, source="the exported settings")  # refuse to hand out a file that would not run
    return text
