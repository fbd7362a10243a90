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
    """Layer data tuples for ``path``; a bad file becomes a napari notification, not a crash.

    A volume that opens but cannot be shown (e.g. an absurd voxel size) is
    reported the same way; the other series of a DICOM folder still open.
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
        return []
    except Exception as exc:  # a bug, not the user's fault: one notification, the viewer stays usable
        notify_error(exc)
        return []
    layers = []
    for volume in volumes:
        try:
            layers.append(volume_layer_data(volume))
        except Exception as exc:  # InputError: one line; anything else: "internal error: ..."
            notify_error(exc)
    return layers
