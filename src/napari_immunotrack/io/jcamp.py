"""A small JCAMP-DX reader for Bruker ParaVision parameter files (acqp, method, reco, visu_pars).

ParaVision writes one parameter per record::

    ##$VisuCoreSize=( 2 )
    128 96
    ##$VisuSubjectPosition=Head_Prone
    ##$VisuAcquisitionProtocol=( 65 )
    <T2_TurboRARE>
    ##$VisuFGOrderDesc=( 2 )
    (5, <FG_SLICE>, <>, 0, 2) (3, <FG_ECHO>, <>, 2, 1)
    ##$VisuCoreDataSlope=( 15 )
    @15*(1.5)

A record starts with ``##``; ``$$`` lines are comments. A value whose first
line is ``( d1, d2, ... )`` followed by more text is an array of those
dimensions; ``<...>`` are strings; ``@n*(x)`` repeats ``x`` n times; ``(a, b)``
groups are structs (returned as tuples). Numbers become int or float, other
words stay strings. See docs/methods/scanner-formats.md#paravision.

Examples
--------
>>> p = parse_jcamp("##$A=( 2, 2 )\\n1 2\\n3 4\\n##$B=<x y>\\n##$C=( 3 )\\n@3*(1.5)\\n##$D=Head_Prone\\n##END=\\n")
>>> p["A"].tolist(), p["B"], p["C"].tolist(), p["D"]
([[1, 2], [3, 4]], 'x y', [1.5, 1.5, 1.5], 'Head_Prone')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

_DIMS = re.compile(r"^\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)$")
_RUN = re.compile(r"@(\d+)\*\(([^)]*)\)")
_TOKEN = re.compile(r"<[^>]*>|\([^()]*\)|[^\s]+")


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _struct(text: str) -> tuple:
    inner = text.strip()[1:-1]
    parts = re.findall(r"<[^>]*>|[^,]+", inner)
    return tuple(_scalar(p) for p in parts if p.strip())


_MAX_RUN = 1 << 22  # values a run-length group may expand to (a 2048x2048 frame count is far below)


def _expand(match) -> str:
    count = int(match.group(1))
    if count > _MAX_RUN:
        raise InputError(
            f"a ParaVision parameter repeats a value {count} times (@{count}*(...)); the parameter "
            "file is damaged: copy the scan folder again."
        )
    return " ".join([match.group(2).strip()] * count)


def _values(body: str) -> list:
    body = _RUN.sub(_expand, body)
    out = []
    for token in _TOKEN.findall(body):
        out.append(_struct(token) if token.startswith("(") else _scalar(token))
    return out


def _value(raw: str) -> Any:
    raw = raw.strip()
    first, _, rest = raw.partition("\n")
    match = _DIMS.match(first.strip())
    if match and (rest.strip() or first.startswith("( ")):
        dims = tuple(int(d) for d in match.group(1).split(","))
        body = " ".join(rest.split("\n"))
        if body.strip().startswith("<") and len(re.findall(r"<[^>]*>", body)) == 1:
            return body.strip()[1:-1]  # a character array: one string
        values = _values(body)
        if values and all(isinstance(v, (int, float)) for v in values):
            arr = np.asarray(values, dtype=float if any(isinstance(v, float) for v in values) else np.int64)
            if arr.size == int(np.prod(dims)):
                return arr.reshape(dims)
            return arr
        return values
    if raw.startswith("(") and raw.endswith(")") and "\n" not in raw:
        return _struct(raw)
    if "\n" in raw:
        return " ".join(raw.split())
    return _scalar(raw)


def parse_jcamp(text: str) -> dict[str, Any]:
    """Parameters of a JCAMP-DX text as a dict (``$`` dropped from the names).

    Parameters
    ----------
    text : str
        File content.

    Returns
    -------
    dict
        name -> int, float, str, tuple (struct), list or NumPy array.

    Examples
    --------
    >>> text = ("##TITLE=reco\\n$$ a comment\\n##$NR=1\\n##$Method=( 29 )\\n<Bruker:RARE>\\n"
    ...         "##$RECO_size=( 2 )\\n128 96\\n##$PVM_Fov=( 2 )\\n25.6 19.2\\n##END=\\n")
    >>> params = parse_jcamp(text)
    >>> params["NR"], params["Method"], params["RECO_size"], params["PVM_Fov"]
    (1, 'Bruker:RARE', array([128,  96]), array([25.6, 19.2]))
    """
    params: dict[str, Any] = {}
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if not ln.startswith("$$")]
    records = re.split(r"(?m)^##", "\n".join(lines))
    for rec in records[1:]:
        name, sep, raw = rec.partition("=")
        if not sep:
            continue
        name = name.strip().lstrip("$")
        if name == "END":
            break
        try:
            params[name] = _value(raw)
        except (ValueError, OverflowError):
            params[name] = raw.strip()
    return params


def read_jcamp(path) -> dict[str, Any]:
    """Parse a ParaVision parameter file; InputError when it is not JCAMP-DX text.

    Parameters
    ----------
    path : str or Path
        A parameter file (``acqp``, ``method``, ``visu_pars``, ``reco``, ``subject``), read as latin-1.

    Returns
    -------
    dict
        As :func:`parse_jcamp`.

    Raises
    ------
    InputError
        An unreadable file, or no ``##`` record in its first 4 KiB.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "acqp").write_text("##TITLE=acqp\\n##$NR=4\\n##$ACQ_protocol_name=( 64 )\\n<T2_RARE>\\n##END=\\n")
    ...     params = read_jcamp(Path(tmp) / "acqp")
    >>> params["NR"], params["ACQ_protocol_name"]
    (4, 'T2_RARE')
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("latin-1")
    except OSError as exc:
        raise InputError(f"cannot read {p} ({exc.strerror or exc}); check the file.") from None
    if "##" not in text[:4096]:
        raise InputError(f"{p} is not a ParaVision (JCAMP-DX) parameter file; copy the scan folder again.")
    return parse_jcamp(text)
