"""Provenance: where a result came from.

:func:`record` builds the dictionary written beside every output
(``<output>.provenance.json``): the step, its inputs with content hashes,
its parameters, package versions and the time. A number in a paper can then
be traced to the exact files and settings that made it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Optional

_PACKAGES = ("napari-immunotrack", "numpy", "scipy", "nibabel", "pydicom", "SimpleITK", "scikit-image",
             "pandas", "tifffile", "zarr", "dask")


def sha256_path(path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, or of a folder (sorted relative names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(sub.relative_to(path)).encode())
            with open(sub, "rb") as fh:
                for block in iter(lambda: fh.read(chunk), b""):
                    h.update(block)
    else:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


def sha256_array(array) -> str:
    """Content hash of an in-memory array (shape, dtype and bytes)."""
    import numpy as np

    a = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256()
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def versions() -> dict:
    """Versions of Python and the packages that shape a result."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe_input(value) -> dict:
    """A path or a Volume as a provenance entry with its content hash."""
    from .volume import Volume

    if isinstance(value, Volume):
        source = value.metadata.get("source_path")
        entry = {"name": value.name, "shape": list(value.shape), "modality": value.modality, "unit": value.unit}
        if source and os.path.exists(source):
            entry.update(path=str(Path(source).resolve()), sha256=sha256_path(source))
        else:
            entry["sha256_data"] = sha256_array(value.numpy())
        return entry
    if isinstance(value, (str, os.PathLike)) and os.path.exists(value):
        return {"path": str(Path(value).resolve()), "sha256": sha256_path(value)}
    return {"value": repr(value)}


def record(step: str, inputs: Optional[Mapping[str, Any]] = None, parameters: Optional[Mapping[str, Any]] = None,
           warnings: Optional[list] = None, **extra) -> dict:
    """The provenance dictionary of one run of ``step``."""
    rec = {
        "step": step,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {k: describe_input(v) for k, v in (inputs or {}).items() if v is not None},
        "parameters": dict(parameters or {}),
        "warnings": list(warnings or []),
        "software": versions(),
    }
    rec.update(extra)
    return rec
