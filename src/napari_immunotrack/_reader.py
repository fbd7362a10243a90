"""napari reader contribution: every format of :mod:`napari_immunotrack.io`,
placed in world millimetres with modality defaults (see widgets/_common.py).

What the reader claims
----------------------
napari asks a reader twice: first by file name (the manifest's
``filename_patterns``, one per extension we read; no catch-all ``*``), then
by calling :func:`get_reader`, which looks at the content (a few bytes or a
folder listing, never the whole image):

- a file or folder that is not ours returns None, so napari's normal path
  (another plugin, or its own "no plugin found" message) handles it;
- a file that is ours but broken (a truncated ``.nii.gz``, a DICOMDIR index,
  a TIFF without a pixel size) gets :func:`read_layers`, which shows the
  plugin's one-line message as a napari notification and returns napari's
  "read, nothing to add" value ``[(None,)]``, so napari does not follow it
  with a reader-choice dialog and "returned no data".

Examples
--------
>>> get_reader("notes.txt") is None
True
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Extensions that only image formats we read use: a file with one is ours even when broken.
OUR_EXTENSIONS = (
    ".nii",
    ".nii.gz",
    ".dcm",
    ".ima",
    ".dicom",
    ".mdf",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".ome.tif",
    ".ome.tiff",
)
#: Extensions shared with other software: ours only when the content says so.
SHARED_EXTENSIONS = (".tif", ".tiff", ".h5", ".hdf5", ".img", ".hdr")
#: Names DICOM exporters give files without an extension (IM0001, IM_0001, I0001, EXP0000, a dotted UID).
_DICOM_NAME = re.compile(r"^(im_?\d+|i\d+|exp\d+|\d+(\.\d+){3,})$", re.I)
#: How many entries of a folder are looked at to decide whether it holds DICOM files.
_FOLDER_SNIFF_LIMIT = 400


def _is_dicom_file(p: Path) -> bool:
    """DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_tiff(p: Path) -> bool:
    """A TIFF or BigTIFF by its byte-order mark and magic number (whatever the file is named)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _folder_is_ours(p: Path) -> bool:
    """A DICOM folder (DICOMDIR, DICOM files or DICOM-named files within), a ParaVision scan or study, an OME-Zarr."""
    from .io import bruker

    name = p.name.lower()
    if name.endswith(".zarr") or any((p / f).exists() for f in (".zattrs", ".zgroup", "zarr.json")):
        return True
    if bruker.is_paravision(p):
        return True
    seen = 0
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for f in sorted(files):
            low = f.lower()
            # a DICOM export, even one whose images are missing or broken, gets the plugin's message
            if low == "dicomdir" or low.endswith((".dcm", ".ima", ".dicom")) or _DICOM_NAME.match(f):
                return True
            if _is_dicom_file(Path(root) / f):
                return True
            seen += 1
            if seen >= _FOLDER_SNIFF_LIMIT:
                return False
    return False


def claims(path) -> bool:
    """True when ``path`` is ours to read (by extension and a look at its content), broken or not.

    Parameters
    ----------
    path : str or Path
        A file or folder napari was asked to open.

    Returns
    -------
    bool
        False for files and folders of other software (text, PNG, a file named .tif that is
        not a TIFF, HDF5 that is not MDF, Analyze .hdr/.img, a folder of pictures), so napari can give them to another reader.

    Examples
    --------
    >>> claims("does-not-exist.png")
    False
    """
    p = Path(path)
    if not p.exists():
        return False
    if p.is_dir():
        return _folder_is_ours(p)
    name = p.name.lower()
    if name in ("2dseq", "dicomdir") or name.endswith(OUR_EXTENSIONS):
        return True
    if name.endswith((".tif", ".tiff")):  # a TIFF without a pixel size gets our message saying so
        return _is_tiff(p)
    if name.endswith((".h5", ".hdf5")):
        from .io import mdf

        return mdf.is_mdf(p)
    if name.endswith((".img", ".hdr")):
        from .io import inveon

        return inveon.is_inveon(p)
    return _is_dicom_file(p)  # DICOM files often have no extension


def get_reader(path):
    """Return :func:`read_layers` if ``path`` is ours (see :func:`claims`), else None.

    Parameters
    ----------
    path : str, Path or list
        What napari was asked to open; a list of one path is read as that path, a longer list is
        left to other readers.

    Returns
    -------
    callable or None
        :func:`read_layers`, or None so that napari tries its other readers (also when looking at
        the content fails).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "t2w.nii.gz"
    ...     _ = save_volume(Volume(np.ones((2, 3, 4), np.float32), np.eye(4), "MR"), path)
    ...     ours = get_reader(str(path)) is read_layers
    >>> ours, get_reader("notes.txt"), get_reader(["a.nii.gz", "b.nii.gz"])
    (True, None, None)
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return read_layers if claims(path) else None
    except Exception:  # a sniffing failure must never break napari's open path
        return None


#: napari's "read, but nothing to add" value: no layers and no "returned no data" error after our message.
NOTHING_TO_ADD = [(None,)]


def read_layers(path):
    """Layer data tuples for ``path``; a bad file becomes one napari notification, not a crash.

    A volume that opens but cannot be shown (e.g. an absurd voxel size) is
    reported the same way; the other series of a DICOM folder still open.
    When nothing can be shown, napari gets :data:`NOTHING_TO_ADD`, so the
    user sees the plugin's message and no second, generic one. Each volume is placed in napari's
    world (millimetres, (S, A, R) order) with its modality's display defaults.

    Parameters
    ----------
    path : str, Path or list
        The file or folder (the first of a list).

    Returns
    -------
    list of tuple
        ``(data, layer keyword arguments, "image" or "labels")`` per volume, or :data:`NOTHING_TO_ADD`.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "t2w.nii.gz"
    ...     _ = save_volume(Volume(np.ones((2, 3, 4), np.float32), np.diag([0.5, 0.5, 0.5, 1.0]), "MR"), path)
    ...     data, kwargs, kind = read_layers(str(path))[0]
    ...     broken = Path(tmp) / "broken.nii.gz"
    ...     _ = broken.write_bytes(b"not gzip")
    ...     nothing = read_layers(str(broken))           # napari shows the one-line reason
    >>> kind, data.shape, kwargs["name"], [float(s) for s in kwargs["scale"]]
    ('image', (4, 3, 2), 't2w', [0.5, 0.5, 0.5])
    >>> nothing
    [(None,)]
    """
    from .errors import InputError, one_line
    from .io import load_volumes
    from .widgets._common import notify_error, volume_layer_data

    if isinstance(path, list):
        path = path[0]
    try:
        volumes = load_volumes(path)
    except InputError as exc:
        from napari.utils.notifications import show_error

        show_error(one_line(exc))
        return NOTHING_TO_ADD
    except Exception as exc:  # a bug, not the user's fault: one notification, the viewer stays usable
        notify_error(exc)
        return NOTHING_TO_ADD
    layers = []
    for volume in volumes:
        try:
            layers.append(volume_layer_data(volume))
        except Exception as exc:  # InputError: one line; anything else: "internal error: ..."
            notify_error(exc)
    return layers or NOTHING_TO_ADD
