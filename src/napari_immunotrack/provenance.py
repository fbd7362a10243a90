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
    """Content hash of a file, or of a folder (sorted relative names and contents).

    Parameters
    ----------
    path : str or Path
        A file, or a folder (e.g. a DICOM series): every file below it, in sorted order, hashed
        with its relative name.
    chunk : int, default 1 MiB
        Read size, bytes (memory stays small for any file size).

    Returns
    -------
    str
        The SHA-256 as 64 hexadecimal digits.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "a.txt").write_bytes(b"hello")
    ...     sha256_path(Path(folder) / "a.txt")[:16], len(sha256_path(folder))
    ('2cf24dba5fb0a30e', 64)
    """
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

    Parameters
    ----------
    array : array_like (NumPy or dask)
        The data.
    slab_bytes : int, default 256 MiB
        Memory budget of one slab of a dask array.

    Returns
    -------
    str
        The SHA-256 as 64 hexadecimal digits.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> a = np.arange(6, dtype=np.int16).reshape(2, 3)
    >>> sha256_array(a) == sha256_array(da.from_array(a, chunks=1)), sha256_array(a)[:16]
    (True, 'cb656676563a36e1')
    >>> sha256_array(a) == sha256_array(a.astype(np.int32))     # the type is part of the content
    False
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
    """Versions of Python and the packages that shape a result.

    Returns
    -------
    dict
        ``python`` and each installed package of napari-immunotrack, numpy, scipy, nibabel,
        pydicom, SimpleITK, scikit-image, pandas, tifffile, zarr, dask (absent ones left out).

    Examples
    --------
    >>> found = versions()
    >>> found["python"].count("."), "numpy" in found
    (2, True)
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe_input(value) -> dict:
    """A path or a Volume as a provenance entry with its content hash.

    Parameters
    ----------
    value : str, Path, Volume or object
        An input of a step.

    Returns
    -------
    dict
        For an existing path: ``path`` (absolute) and ``sha256``. For a Volume: ``name``,
        ``shape``, ``modality``, ``unit`` and either its source file's ``path`` and ``sha256`` or,
        when it has no file (simulated, edited), ``sha256_data`` of the array. Else ``value``
        (its repr).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> entry = describe_input(Volume(np.zeros((2, 2, 2)), np.eye(4), name="pet"))
    >>> sorted(entry), entry["sha256_data"][:12]
    (['modality', 'name', 'sha256_data', 'shape', 'unit'], '3e5e2efc3ac3')
    >>> describe_input(3.5)
    {'value': '3.5'}
    """
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
    """The provenance dictionary of one run of ``step``.

    Parameters
    ----------
    step : str
        What ran, e.g. "quantify-pet".
    inputs : mapping, optional
        Role -> path or Volume (None values are left out), described by :func:`describe_input`.
    parameters : mapping, optional
        The settings used (JSON-ready values).
    warnings : list of str, optional
        The warnings the run gave.
    **extra
        Further top-level entries (e.g. ``transform``).

    Returns
    -------
    dict
        ``step``, ``time_utc`` (ISO 8601, seconds), ``inputs``, ``parameters``, ``warnings``,
        ``software`` (:func:`versions`) and ``extra``.

    Examples
    --------
    >>> rec = record("quantify-pet", inputs={"roi": None}, parameters={"peak_ml": 1.0}, units="Bq/mL")
    >>> sorted(rec), rec["inputs"], rec["units"]
    (['inputs', 'parameters', 'software', 'step', 'time_utc', 'units', 'warnings'], {}, 'Bq/mL')
    """
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
