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
    """Refuse an output that exists (unless ``overwrite``) or whose folder is missing.

    Parameters
    ----------
    path : str or Path
        The output file.
    overwrite : bool, default False
        Allow an existing file (a folder of that name is always refused).

    Returns
    -------
    Path
        ``path`` as a Path, when it may be written.

    Raises
    ------
    OutputExistsError
        The file exists and not ``overwrite``.
    InputError
        ``path`` is a folder, or its folder is missing or not writable.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "table.csv").touch()
    ...     print(check_output(Path(tmp) / "new.csv").name, check_output(Path(tmp) / "table.csv", overwrite=True).name)
    ...     try:
    ...         check_output(Path(tmp) / "table.csv")
    ...     except OutputExistsError as error:
    ...         print(str(error).replace(tmp, "TMP"))
    new.csv table.csv
    TMP/table.csv already exists; choose another name or pass --overwrite to replace it.
    """
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
    """Refuse, before any work, a folder the process cannot write in (permissions or a read-only mount).

    Parameters
    ----------
    folder : str or Path
        The folder an output goes to.

    Returns
    -------
    None

    Raises
    ------
    InputError
        The process may not write in ``folder`` (``os.access`` W_OK), or it does not exist.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     check_writable(tmp)                      # returns None: writable
    ...     try:
    ...         check_writable(Path(tmp) / "missing")
    ...     except InputError as error:
    ...         print(str(error).split(" (")[0].replace(tmp, "TMP"))
    cannot write in TMP/missing
    """
    if not os.access(folder, os.W_OK):
        raise InputError(
            f"cannot write in {folder} (no permission or a read-only file system); choose a folder you can write to."
        )


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success.

    The temporary file (``.<name>.<random>.part<suffixes>``, same folder) is flushed to disk, given
    ordinary permissions and renamed with ``os.replace``; on an exception it is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The output file (checked with :func:`check_output`).
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    contextlib.AbstractContextManager of Path
        Yields the temporary path to write to (it keeps ``path``'s double extension, e.g.
        ``.nii.gz``, so writers that dispatch on the name still work).

    Raises
    ------
    OutputExistsError
        ``path`` exists (or appeared while writing) and not ``overwrite``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with atomic_output(Path(folder) / "table.csv") as tmp:
    ...         _ = tmp.write_text("a,b\\n1,2\\n")
    ...         print(tmp.name.startswith(".table.csv."), (Path(folder) / "table.csv").exists())
    ...     try:
    ...         with atomic_output(Path(folder) / "table.csv", overwrite=True) as tmp:
    ...             raise RuntimeError("the writer failed")
    ...     except RuntimeError:
    ...         pass
    ...     sorted(p.name for p in Path(folder).iterdir()), (Path(folder) / "table.csv").read_text()
    True False
    (['table.csv'], 'a,b\\n1,2\\n')
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

    Parameters
    ----------
    path : str or Path
        The output folder.
    overwrite : bool, default False
        Replace an existing folder.

    Returns
    -------
    contextlib.AbstractContextManager of Path
        Yields the empty temporary folder to fill.

    Raises
    ------
    OutputExistsError
        ``path`` exists (or appeared while writing) and not ``overwrite``.
    InputError
        ``path`` is a file, or its parent folder is missing or not writable.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with atomic_output_dir(Path(folder) / "series") as tmp:
    ...         _ = (tmp / "IM0001.dcm").write_bytes(b"...")
    ...     sorted(p.name for p in Path(folder).iterdir()), [p.name for p in (Path(folder) / "series").iterdir()]
    (['series'], ['IM0001.dcm'])
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
    """Atomically write a text file.

    Parameters
    ----------
    path : str or Path
        The file (UTF-8).
    text : str
        Its content.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_text(Path(folder) / "notes.txt", "day 7: two clusters").read_text()
    'day 7: two clusters'
    """
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, obj, overwrite: bool = False) -> Path:
    """Atomically write JSON (numpy scalars and arrays converted).

    Parameters
    ----------
    path : str or Path
        The file.
    obj : object
        JSON data; NumPy scalars become numbers, arrays lists, Paths and anything else their str.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path
        The written file (indented by 2, ending in a newline).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_json(Path(folder) / "r.json", {"mean": np.float32(2.5), "shape": np.array([4, 5])})
    ...     json.loads(path.read_text())
    {'mean': 2.5, 'shape': [4, 5]}
    """
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
    """Where the provenance record of ``path`` lives: ``<path>.provenance.json``.

    Parameters
    ----------
    path : str or Path
        An output file or folder.

    Returns
    -------
    Path

    Examples
    --------
    >>> sidecar_path("results/clusters.csv").as_posix()
    'results/clusters.csv.provenance.json'
    """
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def write_sidecar(path, provenance: dict, written=None) -> Path:
    """Write the provenance record of the output ``path`` atomically, with the output's SHA-256.

    ``written`` is the finished output file when it still has its temporary
    name (the sidecar is written just before the output's rename). The hash
    lets :func:`sidecar_matches` (and ``immunotrack info``) tell whether the
    record and the file belong together, e.g. after an interrupted run or a
    hand edit of the output.

    Parameters
    ----------
    path : str or Path
        The output the record describes (its final name).
    provenance : dict
        The record (see :func:`~napari_immunotrack.provenance.record`); not changed.
    written : str or Path, optional
        The file to hash when it is not yet at ``path``.

    Returns
    -------
    Path
        The sidecar (always replaced).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = write_text(Path(folder) / "t.csv", "a\\n1\\n")
    ...     side = write_sidecar(out, {"command": "quantify"})
    ...     print(side.name, sorted(json.loads(side.read_text())), sidecar_matches(out))
    t.csv.provenance.json ['command', 'output_sha256'] True
    """
    from .provenance import sha256_path

    record = dict(provenance)
    output = Path(written) if written is not None else Path(path)
    if output.is_file():
        record["output_sha256"] = sha256_path(output)
    return write_json(sidecar_path(path), record, overwrite=True)


def sidecar_matches(path) -> bool | None:
    """True/False when ``path``'s sidecar records an output hash that equals/differs from the file's; None when
    there is nothing to compare (no sidecar, no hash in it, or a folder output).

    Parameters
    ----------
    path : str or Path
        An output file.

    Returns
    -------
    bool or None

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = write_text(Path(folder) / "t.csv", "a\\n1\\n")
    ...     before = sidecar_matches(out)
    ...     _ = write_sidecar(out, {"command": "quantify"})
    ...     _ = write_text(out, "a\\n2\\n", overwrite=True)           # edited after the run
    ...     before, sidecar_matches(out)
    (None, False)
    """
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
    """Write an RGB(A) picture (e.g. a napari screenshot) as PNG, atomically, with its provenance sidecar.

    Parameters
    ----------
    image : ndarray
        (rows, columns, 3 or 4) uint8 (or (rows, columns) grey).
    path : str or Path
        The ``.png`` file.
    provenance : dict, optional
        Written beside it as ``<path>.provenance.json``.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> rgb = np.zeros((4, 6, 3), np.uint8); rgb[..., 0] = 255
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with Image.open(write_png(rgb, Path(folder) / "shot.png")) as png:
    ...         png.size, png.mode, png.getpixel((0, 0))
    ((6, 4), 'RGB', (255, 0, 0))
    """
    from PIL import Image

    with atomic_output(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return Path(path)


def write_table(df, path, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write a pandas table as CSV (units in the column names) with its provenance sidecar.

    Both outputs are checked before anything is written.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (written without its index).
    path : str or Path
        The ``.csv`` file.
    provenance : dict, optional
        Written beside it as ``<path>.provenance.json``, with the CSV's SHA-256.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> table = pd.DataFrame({"label": [1, 2], "mean_bq_ml": [1200.0, 3400.5]})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_table(table, Path(folder) / "readout.csv", provenance={"command": "quantify"})
    ...     path.read_text().splitlines(), sidecar_matches(path)
    (['label,mean_bq_ml', '1,1200.0', '2,3400.5'], True)
    """
    path = Path(path)
    check_output(path, overwrite)
    if provenance is not None:
        check_output(sidecar_path(path), overwrite=True)
    with atomic_output(path, overwrite) as tmp:
        df.to_csv(tmp, index=False)
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path
