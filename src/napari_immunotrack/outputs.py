"""Writing outputs so that nothing is lost and nothing is half-written.

Every file the package writes goes through :func:`atomic_output`: the data
are written to a temporary file in the same folder and renamed into place
(``os.replace`` is atomic on one file system), so a crash or a kill leaves
the old file or the new one, never part of one. An existing file is never
replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError, OutputExistsError


def _suffixes(path: Path) -> str:
    # keep double extensions (.nii.gz, .ome.tif) so writers that dispatch on
    # the file name still recognise the temporary file
    name = path.name
    for double in (".nii.gz", ".ome.tif", ".ome.tiff", ".ome.zarr", ".provenance.json"):
        if name.lower().endswith(double):
            return name[-len(double) :]
    return path.suffix


def check_output(path, overwrite: bool = False) -> Path:
    """Refuse an output that exists (unless ``overwrite``) or whose folder is missing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite to replace it.")
    if path.exists() and path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for the output.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another output path.")
    check_writable(parent)
    return path


def check_writable(folder) -> None:
    """Refuse, before any work, a folder the process cannot write in (permissions or a read-only mount)."""
    if not os.access(folder, os.W_OK):
        raise InputError(
            f"cannot write in {folder} (no permission or a read-only file system); choose a folder you can write to."
        )


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success.

    >>> with atomic_output("table.csv", overwrite=True) as tmp:   # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    path = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + _suffixes(path), dir=path.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600): give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~umask)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{path} appeared while writing; pass --overwrite to replace it.")
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_output_dir(path, overwrite: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_output` for an output that is a folder (OME-Zarr, DICOM series).

    Yields an empty temporary folder beside ``path``; on success it is
    renamed to ``path`` (an existing ``path`` is first moved aside and removed
    only after the rename, so a crash leaves the old folder or the new one).
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite to replace it.")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; give a folder name for the output.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another output path.")
    check_writable(parent)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part" + _suffixes(path), dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary folder
    old = None
    try:
        yield tmp_path
        if path.exists():
            if not overwrite:  # appeared while we were writing
                raise OutputExistsError(f"{path} appeared while writing; pass --overwrite to replace it.")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp_path, path)
            except BaseException:
                os.replace(old / path.name, path)  # put the old folder back
                raise
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text(path, text: str, overwrite: bool = False) -> Path:
    """Atomically write a text file."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, obj, overwrite: bool = False) -> Path:
    """Atomically write JSON (numpy scalars and arrays converted)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n", overwrite)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def sidecar_path(path) -> Path:
    """Where the provenance record of ``path`` lives: ``<path>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def write_sidecar(path, provenance: dict, written=None) -> Path:
    """Write the provenance record of the output ``path`` atomically, with the output's SHA-256.

    ``written`` is the finished output file when it still has its temporary
    name (the sidecar is written just before the output's rename). The hash
    lets :func:`sidecar_matches` (and ``immunotrack info``) tell whether the
    record and the file belong together, e.g. after an interrupted run or a
    hand edit of the output.
    """
    from .provenance import sha256_path

    record = dict(provenance)
    output = Path(written) if written is not None else Path(path)
    if output.is_file():
        record["output_sha256"] = sha256_path(output)
    return write_json(sidecar_path(path), record, overwrite=True)


def sidecar_matches(path) -> bool | None:
    """True/False when ``path``'s sidecar records an output hash that equals/differs from the file's; None when
    there is nothing to compare (no sidecar, no hash in it, or a folder output)."""
    from .provenance import sha256_path

    path, side = Path(path), sidecar_path(path)
    try:
        expected = json.loads(side.read_text(encoding="utf-8")).get("output_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if not expected or not path.is_file():
        return None
    return sha256_path(path) == expected


def write_png(image, path, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write an RGB(A) picture (e.g. a napari screenshot) as PNG, atomically, with its provenance sidecar."""
    from PIL import Image

    with atomic_output(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return Path(path)


def write_table(df, path, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write a pandas table as CSV (units in the column names) with its provenance sidecar."""
    path = Path(path)
    check_output(path, overwrite)
    if provenance is not None:
        check_output(sidecar_path(path), overwrite=True)
    with atomic_output(path, overwrite) as tmp:
        df.to_csv(tmp, index=False)
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path
