"""napari reader contribution: every format of :mod:`napari_immunotrack.io`,
placed in world millimetres with modality defaults (see widgets/_common.py)."""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """Return a reader function if ``path`` is something we open, else None."""
    from .io import detect_format

    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        detect_format(path)
    except Exception:
        return None
    p = Path(path)
    if p.is_dir() and not (p.name.lower().endswith(".zarr") or any(p.iterdir())):
        return None
    return read_layers


def read_layers(path):
    """Layer data tuples for ``path``; a bad file becomes a napari notification, not a crash."""
    from .errors import InputError, one_line
    from .io import load_volumes
    from .widgets._common import volume_layer_data

    if isinstance(path, list):
        path = path[0]
    try:
        volumes = load_volumes(path)
    except InputError as exc:
        from napari.utils.notifications import show_error

        show_error(one_line(exc))
        return []
    return [volume_layer_data(v) for v in volumes]
