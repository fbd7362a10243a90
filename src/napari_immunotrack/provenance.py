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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_PACKAGES = (
    "napari-immunotrack",
    "numpy",
    "scipy",
    "nibabel",
    "pydicom",
    "SimpleITK",
    "scikit-image",
    "pandas",
    "tifffile",
    "zarr",
    "dask",
)


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


def sha256_array(array, slab_bytes: int = 256 << 20) -> str:
    """Content hash of an array: shape, dtype and the bytes in C order.

    A lazy (dask) array is hashed slab by slab along its first axis, so memory
    stays near ``slab_bytes`` whatever its size; the hash equals the NumPy one
    of the same content.
    """
    import numpy as np

    h = hashlib.sha256()
    shape, dtype = tuple(int(n) for n in array.shape), np.dtype(array.dtype)
    h.update(str((shape, dtype.str)).encode())
    if isinstance(array, np.ndarray) or not hasattr(array, "compute"):
        h.update(np.ascontiguousarray(np.asarray(array)).tobytes())
        return h.hexdigest()
    plane = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else dtype.itemsize
    step = max(1, int(slab_bytes // max(plane, 1)))
    for start in range(0, shape[0] if shape else 0, step):
        h.update(np.ascontiguousarray(np.asarray(array[start : start + step].compute())).tobytes())
    if not shape:  # a 0-d array
        h.update(np.ascontiguousarray(np.asarray(array.compute())).tobytes())
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
            entry["sha256_data"] = sha256_array(value.data)  # lazy data hashed in slabs, not loaded whole
        return entry
    if isinstance(value, (str, os.PathLike)) and os.path.exists(value):
        return {"path": str(Path(value).resolve()), "sha256": sha256_path(value)}
    return {"value": repr(value)}


def record(
    step: str,
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    warnings: list | None = None,
    **extra,
) -> dict:
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
