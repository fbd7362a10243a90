"""One declarative parameter model per analysis: defaults, units, ranges and help written once.

A :class:`ParamModel` lists an analysis' tunable parameters as :class:`Param`
fields (name, type, default, unit, range, choices, help). Everything that
offers those parameters is derived from it, so that the command line, the
napari form, a batch pipeline file and a saved study state cannot disagree
about a default or a limit:

========================  ==================================================
pure function             :meth:`ParamModel.bind` fills every parameter the
                          caller left out from the model *at call time* and
                          checks the values (:meth:`ParamModel.validate`)
CLI verb                  :meth:`ParamModel.add_arguments` /
                          :meth:`ParamModel.from_args` (argparse)
batch pipeline (YAML)     :func:`napari_immunotrack.batch.step_parameters`
                          reads the model of a bound function;
                          :meth:`ParamModel.validate` checks a step's values;
                          :meth:`ParamModel.json_schema` documents them
napari form               :func:`napari_immunotrack.widgets._params.build_form`
                          (magicgui widgets made from the fields, as magicgui
                          does from a signature)
saved study state         :meth:`ParamModel.to_state` /
                          :meth:`ParamModel.from_state`
========================  ==================================================

Pure: no napari, no Qt (the form builder lives under ``widgets``). In the
spirit of 3D Slicer's parameter nodes and magicgui's signature-driven forms.
See ``docs/methods/index.md`` for the parameters of each method.

Examples
--------
>>> model = ParamModel("demo", [
...     Param("threshold", float, 0.2, "minimum change", unit="fraction", minimum=0.0, maximum=1.0,
...           exclusive_maximum=True),
...     Param("connectivity", int, 26, "voxel connectivity", choices=(6, 18, 26)),
... ])
>>> model.defaults()
{'threshold': 0.2, 'connectivity': 26}
>>> model.validate({"threshold": 0.5})
{'threshold': 0.5, 'connectivity': 26}
>>> model.validate({"threshold": 1.5})
Traceback (most recent call last):
...
napari_immunotrack.errors.InputError: threshold must be from 0 to less than 1 (fraction), got 1.5.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError

__all__ = ["Param", "ParamModel", "FROM_MODEL", "parameter_model"]


class _FromModel:
    """Sentinel default of a bound function's parameter: "the model's default, at call time"."""

    def __repr__(self) -> str:
        return "FROM_MODEL"


#: Default to write in a bound function's signature for a modelled parameter (see :meth:`ParamModel.bind`).
FROM_MODEL: Any = _FromModel()  # typed Any: it stands in for a default of any type


def _number_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Param:
    """One parameter of an analysis.

    Parameters
    ----------
    name : str
        The keyword argument of the pure function (also the YAML key and the state key).
    type : type
        ``float``, ``int``, ``bool`` or ``str``.
    default : object
        The default (None only with ``optional=True``).
    help : str
        One line for the CLI help, the form's tooltip and the schema's description.
    unit : str
        Unit shown with the value ("fraction", "voxels", "1/s", "mm"...).
    minimum, maximum : float, optional
        Allowed range (inclusive unless ``exclusive_minimum`` / ``exclusive_maximum``).
    choices : tuple, optional
        The allowed values.
    optional : bool
        None is allowed ("not given"); the CLI flag then has no default.
    label : str
        The form's row label (default: the name with spaces).
    step : float, optional
        The form's spin-box step.
    decimals : int
        Decimals shown by the form for a float.
    flag : str, optional
        The CLI flag (default ``--name-with-dashes``).
    rule : str, optional
        How to say the range in a message (default: made from minimum/maximum).
    form_maximum : float, optional
        Upper end of the form's spin box when the range is open above.
    form_minimum : float, optional
        Lower end of the form's spin box when it is narrower than the allowed range.
    off_help : str, optional
        Help of the ``--no-...`` flag of a bool that is on by default (default: "turn off: " + help).
    none_word : str, optional
        The word the command line takes for None (e.g. "auto"), for an optional number.
    aliases : tuple of (value, meaning) pairs
        Other values the function accepts for this parameter and what they stand for
        (e.g. ``((True, "power"), (False, "none"))``); :meth:`check` turns them into the meaning.
    """

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    label: str = ""
    step: float | None = None
    decimals: int = 2
    flag: str | None = None
    rule: str | None = None
    form_maximum: float | None = None
    form_minimum: float | None = None
    off_help: str | None = None
    none_word: str | None = None
    aliases: tuple[tuple[Any, Any], ...] = ()

    def __post_init__(self):
        if self.type not in (float, int, bool, str):
            raise TypeError(f"parameter {self.name}: type must be float, int, bool or str, not {self.type!r}")
        if self.default is None and not self.optional:
            raise TypeError(f"parameter {self.name}: a None default needs optional=True")
        problem = self._problem(self.default) if self.default is not None else None
        if problem:  # a model whose default breaks its own rule is a programming error, not bad input
            raise TypeError(f"parameter {self.name}: the default {self.default!r} {problem}")

    # ------------------------------------------------------------------ wording
    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def form_label(self) -> str:
        return self.label or self.name.replace("_", " ")

    def range_text(self) -> str:
        """The allowed values in words, e.g. "at least 0", "from 0 to less than 1", "6, 18 or 26"."""
        if self.rule:
            return self.rule
        if self.choices is not None:
            texts = [repr(c) if isinstance(c, str) else _number_text(c) for c in self.choices]
            return ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            lo_t, hi_t = _number_text(lo), _number_text(hi)
            if self.exclusive_minimum or self.exclusive_maximum:
                return (
                    f"{'more than' if self.exclusive_minimum else 'from'} {lo_t} to "
                    f"{'less than ' if self.exclusive_maximum else ''}{hi_t}"
                )
            return f"between {lo_t} and {hi_t}"
        if lo is not None:
            return f"greater than {_number_text(lo)}" if self.exclusive_minimum else f"at least {_number_text(lo)}"
        if hi is not None:
            return f"less than {_number_text(hi)}" if self.exclusive_maximum else f"at most {_number_text(hi)}"
        return {float: "a number", int: "a whole number", bool: "true or false", str: "text"}[self.type]

    def describe(self) -> str:
        """The help line with the unit and the default, e.g. "minimum change (fraction; default 0.2)"."""
        extra = [self.unit] if self.unit else []
        if self.default is not None and self.type is not bool:
            extra.append(f"default {_number_text(self.default)}")
        elif self.default is None and self.none_word:
            extra.append(f"default {self.none_word}")
        return self.help + (f" ({'; '.join(extra)})" if extra else "")

    # ------------------------------------------------------------------ checking
    def _problem(self, value) -> str | None:
        if value is None:
            return None if self.optional else "must be given"
        if self.type is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.type is int and (
            isinstance(value, bool)
            or not isinstance(value, int)
            and not (isinstance(value, float) and float(value).is_integer())
        ):
            return "must be a whole number"
        if self.type is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return "must be a number"
        if self.type is str and not isinstance(value, str):
            return "must be text"
        if self.choices is not None:
            return None if value in self.choices else f"must be {self.range_text()}"
        if self.type in (int, float):
            v = float(value)
            if not math.isfinite(v):
                return "is not a finite number"
            bad = False
            if self.minimum is not None:
                bad |= v <= self.minimum if self.exclusive_minimum else v < self.minimum
            if self.maximum is not None:
                bad |= v >= self.maximum if self.exclusive_maximum else v > self.maximum
            if bad:
                return f"must be {self.range_text()}" + (f" ({self.unit})" if self.unit else "")
        return None

    def check(self, value, where: str = "") -> Any:
        """``value`` if allowed (an int for a whole float given to an int), else InputError in one line.

        Examples
        --------
        >>> Param("min_size", int, 3, "smallest region", unit="voxels", minimum=1).check(0)
        Traceback (most recent call last):
        ...
        napari_immunotrack.errors.InputError: min_size must be at least 1 (voxels), got 0.
        """
        if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
            value = value.item()  # NumPy scalars from widgets and arrays
        for alias, meaning in self.aliases:
            if value is alias or (type(value) is type(alias) and value == alias):
                return meaning
        problem = self._problem(value)
        if problem:
            raise InputError(f"{where or self.name} {problem}, got {value!r}.")
        if self.type is int and value is not None:
            return int(value)
        if self.type is float and value is not None:
            return float(value)
        return value

    def argparse_type(self) -> Callable[[str], Any]:
        """The argparse ``type=`` of this parameter: text -> checked value (argparse's error otherwise)."""
        import argparse

        def convert(text: str):
            if self.none_word is not None and text.strip().lower() == self.none_word:
                return None
            value: Any = text
            if self.type in (int, float):
                try:
                    value = float(text)
                except ValueError:
                    raise argparse.ArgumentTypeError(
                        f"{text!r} is not a number; it must be {'a whole number' if self.type is int else 'a number'}"
                        + (f" or {self.none_word}" if self.none_word else "")
                    ) from None
                if self.type is int and value.is_integer():
                    value = int(value)
            problem = self._problem(value)
            if problem:
                raise argparse.ArgumentTypeError(f"{text} {problem}")
            return value

        convert.__name__ = self.name  # argparse names the type in its messages
        return convert


class ParamModel:
    """The parameters of one analysis (see the module docstring).

    Parameters
    ----------
    name : str
        The analysis (the batch step name, e.g. "confirm").
    params : sequence of Param
        In the order the CLI help and the form show them.
    """

    def __init__(self, name: str, params: Sequence[Param]):
        self.name = name
        self.params: dict[str, Param] = {}
        for p in params:
            if p.name in self.params:
                raise TypeError(f"parameter model {name}: {p.name} is given twice")
            self.params[p.name] = p

    def __repr__(self) -> str:
        return f"ParamModel({self.name!r}, {list(self.params)})"

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params.values())

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def __contains__(self, name) -> bool:
        return name in self.params

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def defaults(self) -> dict[str, Any]:
        """{name: default} of every parameter."""
        return {p.name: p.default for p in self}

    def with_default(self, name: str, default) -> ParamModel:
        """A copy with one default changed (checked against the parameter's rule)."""
        params = [dataclasses.replace(p, default=default) if p.name == name else p for p in self]
        return ParamModel(self.name, params)

    # ------------------------------------------------------------------ checking
    def validate(
        self, values: dict | None = None, *, fill: bool = True, unknown: str = "error", prefix: str = ""
    ) -> dict[str, Any]:
        """Check values; returns them (with the defaults of the others when ``fill``).

        ``unknown``: "error" (InputError naming the parameter and the known ones) or
        "ignore" (left out). ``prefix`` starts each message (e.g. "confirm.").
        """
        values = dict(values or {})
        out = self.defaults() if fill else {}
        for key, value in values.items():
            p = self.params.get(key)
            if p is None:
                if unknown == "error":
                    raise InputError(
                        f"unknown parameter {prefix}{key}; the parameters of {self.name} are {', '.join(self.params)}."
                    )
                continue
            out[key] = p.check(value, where=f"{prefix}{key}")
        return out

    # ------------------------------------------------------------------ the pure function
    def bind(self, func: Callable) -> Callable:
        """Decorator: ``func``'s modelled parameters take the model's defaults (at call time) and are checked.

        Every parameter of the model must be a keyword of ``func``; write
        ``name=FROM_MODEL`` in the signature so that no default is written twice.
        The returned function shows the model's defaults in its signature and
        carries the model as ``func.parameter_model``.
        """
        sig = inspect.signature(func)
        missing = [n for n in self.params if n not in sig.parameters]
        if missing:
            raise TypeError(f"{func.__qualname__} has no parameter(s) {missing} of model {self.name}")
        stray = [n for n, p in sig.parameters.items() if p.default is FROM_MODEL and n not in self.params]
        if stray:
            raise TypeError(f"{func.__qualname__}: {stray} default to FROM_MODEL but are not in model {self.name}")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            for name, p in self.params.items():
                value = bound.arguments.get(name, FROM_MODEL)
                bound.arguments[name] = p.default if value is FROM_MODEL else p.check(value)
            return func(*bound.args, **bound.kwargs)

        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[
                q.replace(default=self.params[q.name].default) if q.name in self.params else q
                for q in sig.parameters.values()
            ]
        )
        wrapper.parameter_model = self  # type: ignore[attr-defined]
        return wrapper

    # ------------------------------------------------------------------ the command line
    def add_arguments(self, parser, names: Iterable[str] | None = None, *, required: Iterable[str] = ()) -> None:
        """Add ``--flag`` arguments to an argparse parser, defaults and checks from the model.

        ``names``: which parameters, in this order (default all, in the model's order), so that a
        verb can keep its options where its help always showed them. ``required``: parameters the
        verb needs on its command line (no default shown).
        """
        required = set(required)
        for name in names or self.params:
            p = self.params[name]
            needed = name in required
            help_text = p.help + (f" ({p.unit})" if p.unit else "") if needed else p.describe()
            if p.type is bool:
                # a flag turns on what is off by default (and --no-... turns off what is on)
                flag = p.cli_flag if not p.default else "--no-" + p.cli_flag[2:]
                parser.add_argument(
                    flag,
                    dest=p.name,
                    action="store_false" if p.default else "store_true",
                    default=p.default,
                    help=(p.off_help or f"turn off: {p.help}") if p.default else p.describe(),
                )
                continue
            options: dict[str, Any] = dict(dest=p.name, type=p.argparse_type(), help=help_text)
            options.update(required=True) if needed else options.update(default=p.default)
            if p.choices is not None:
                options["choices"] = p.choices
            else:  # the metavar argparse would give the flag itself (the dest may be another name)
                options["metavar"] = p.cli_flag[2:].replace("-", "_").upper()
            parser.add_argument(p.cli_flag, **options)

    def from_args(self, args) -> dict[str, Any]:
        """{name: value} of the parsed arguments (those the parser was given)."""
        return {name: getattr(args, name) for name in self.params if hasattr(args, name)}

    # ------------------------------------------------------------------ state and schema
    def to_state(self, values: dict) -> dict[str, Any]:
        """The values as saved in a study state: every parameter, plain JSON types, checked."""
        return self.validate({k: v for k, v in values.items() if k in self.params})

    def from_state(self, saved: dict | None) -> tuple[dict[str, Any], list[str]]:
        """(values, problems) from a saved state: missing keys take the default; a bad value is
        reported and replaced by the default; unknown keys are ignored."""
        values, problems = self.defaults(), []
        for key, value in dict(saved or {}).items():
            p = self.params.get(key)
            if p is None:
                continue
            try:
                values[key] = p.check(value)
            except InputError as exc:
                problems.append(str(exc))
        return values, problems

    def json_schema(self) -> dict:
        """A JSON Schema (draft 2020-12) of the step's mapping in a pipeline file."""
        kinds = {float: "number", int: "integer", bool: "boolean", str: "string"}
        props = {}
        for p in self:
            entry: dict[str, Any] = {
                "type": [kinds[p.type], "null"] if p.optional else kinds[p.type],
                "default": p.default,
                "description": p.describe(),
            }
            if p.choices is not None:
                entry["enum"] = list(p.choices)
            if p.minimum is not None:
                entry["exclusiveMinimum" if p.exclusive_minimum else "minimum"] = p.minimum
            if p.maximum is not None:
                entry["exclusiveMaximum" if p.exclusive_maximum else "maximum"] = p.maximum
            if p.unit:
                entry["x-unit"] = p.unit
            props[p.name] = entry
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{self.name} parameters",
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }

    def markdown_table(self) -> str:
        """The parameters as a Markdown table (for the methods pages)."""
        rows = ["| parameter | default | unit | allowed | meaning |", "|---|---|---|---|---|"]
        for p in self:
            default = "none" if p.default is None else _number_text(p.default)
            rows.append(f"| `{p.name}` | {default} | {p.unit} | {p.range_text()} | {p.help} |")
        return "\n".join(rows)


def parameter_model(func) -> ParamModel | None:
    """The :class:`ParamModel` of a function bound with :meth:`ParamModel.bind` (None otherwise).

    Parameters
    ----------
    func : callable
        Any function (e.g. an analysis' pure function).

    Returns
    -------
    ParamModel or None
        The model that gives ``func`` its defaults, checks and forms.

    Examples
    --------
    >>> model = ParamModel("demo", [Param("threshold", float, 0.2, "minimum change", minimum=0.0)])
    >>> @model.bind
    ... def detect(image, threshold=FROM_MODEL):
    ...     return threshold
    >>> parameter_model(detect) is model, detect(None), parameter_model(print)
    (True, 0.2, None)
    """
    return getattr(func, "parameter_model", None)
