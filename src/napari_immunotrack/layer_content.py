"""What a napari layer holds that the user could lose: content fingerprints and the saved-content registry.

Pure (NumPy and hashlib only; layers are used by duck typing, napari is never
imported), so that the labels writer (:mod:`napari_immunotrack._writer`), the
close guard (:mod:`napari_immunotrack._close_guard`) and the docks can share it
without importing one another. See ``docs/methods/study-viewer.md``.

What counts as unsaved, by content fingerprint:

- a layer made by the plugin from a file or an analysis keeps the
  fingerprint of what it showed (``metadata["_display_fingerprint"]``): it is
  unsaved once edited;
- a layer the user made (no such fingerprint) is unsaved once it holds
  something (a non-zero label, a point, a shape);
- a layer whose content was saved since (the close guard, the plugin's labels
  writer or :func:`remember_saved`) is not.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Fingerprints of layer contents saved in this session (content-based, so any copy counts as saved).
_SAVED: set = set()

#: Layer kinds (napari class names) whose content the user edits.
EDITABLE_KINDS = ("Labels", "Shapes", "Points")


def layer_kind(layer) -> str:
    """The napari class name of a layer ("Labels", "Image"...).

    Parameters
    ----------
    layer : object
        A napari layer (or anything: layers are used by duck typing).

    Returns
    -------
    str
        ``type(layer).__name__``.

    Examples
    --------
    >>> class Labels:
    ...     pass
    >>> layer_kind(Labels()), layer_kind(np.zeros(2))
    ('Labels', 'ndarray')
    """
    return type(layer).__name__


def array_fingerprint(data) -> str | None:
    """A content hash of an in-memory array (None for lazy arrays, which cannot be edited).

    Parameters
    ----------
    data : array or list of arrays
        A layer's data; for a multiscale list the finest level is hashed.

    Returns
    -------
    str or None
        Hex digest followed by the shape; equal for equal content, whatever the array object.

    Examples
    --------
    >>> a = np.zeros((2, 3), np.uint8)
    >>> array_fingerprint(a) == array_fingerprint(a.copy())
    True
    >>> b = a.copy(); b[0, 0] = 1
    >>> array_fingerprint(a) == array_fingerprint(b)
    False
    """
    if isinstance(data, list):
        data = data[0]
    if type(data).__module__.startswith(("dask", "zarr")):
        return None
    arr = np.ascontiguousarray(np.asarray(data))
    return hashlib.blake2b(arr.view(np.uint8).reshape(-1).data, digest_size=16).hexdigest() + str(arr.shape)


def content_fingerprint(layer) -> str | None:
    """A hash of what the user could lose in ``layer`` (None for lazy data and for layers not edited by hand).

    Labels: :func:`array_fingerprint` of the data; Points: the coordinates; Shapes: each shape's type
    and vertices (prefixed by the kind); other kinds: None.

    Parameters
    ----------
    layer : napari layer
        A Labels, Points or Shapes layer (duck-typed: ``data``, and ``shape_type`` for Shapes).

    Returns
    -------
    str or None
        A hex digest (with the shape for labels, the kind in front for points and shapes), equal for
        equal content.

    Examples
    --------
    >>> class Points:
    ...     def __init__(self, data):
    ...         self.data = data
    >>> a, b = Points(np.array([[1.0, 2.0, 3.0]])), Points(np.array([[1.0, 2.0, 3.0]]))
    >>> content_fingerprint(a) == content_fingerprint(b), content_fingerprint(a)[:6]
    (True, 'Points')
    """
    kind = layer_kind(layer)
    if kind == "Labels":
        return array_fingerprint(layer.data)
    h = hashlib.blake2b(digest_size=16)
    if kind == "Points":
        h.update(np.ascontiguousarray(np.asarray(layer.data, float)).tobytes())
    elif kind == "Shapes":
        for shape, shape_type in zip(layer.data, layer.shape_type):
            h.update(str(shape_type).encode())
            h.update(np.ascontiguousarray(np.asarray(shape, float)).tobytes())
    else:
        return None
    return kind + h.hexdigest()


def _has_content(layer) -> bool:
    if layer_kind(layer) == "Labels":
        data = layer.data[0] if isinstance(layer.data, list) else layer.data
        return bool(np.any(np.asarray(data)))
    return len(layer.data) > 0


def remember_saved(layer_or_data) -> None:
    """Record that this content was saved (call it after writing a layer, or its array, by another route).

    The fingerprint goes into the session's registry; a layer also keeps it in
    ``metadata["_saved_fingerprint"]``.

    Parameters
    ----------
    layer_or_data : napari layer or array_like
        A Labels/Shapes/Points layer, or the array that was written.

    Returns
    -------
    None

    Examples
    --------
    >>> class Labels:
    ...     def __init__(self, data):
    ...         self.data, self.metadata = data, {}
    >>> layer = Labels(np.zeros((2, 7), np.uint8))
    >>> layer.data[1, 6] = 9                                   # drawn by hand
    >>> is_unsaved(layer)
    True
    >>> remember_saved(layer)
    >>> is_unsaved(layer), layer.metadata["_saved_fingerprint"].endswith("(2, 7)")
    (False, True)
    """
    if hasattr(layer_or_data, "metadata") and layer_kind(layer_or_data) in EDITABLE_KINDS:  # a layer
        fp = content_fingerprint(layer_or_data)
        if fp is not None:
            layer_or_data.metadata["_saved_fingerprint"] = fp
    else:
        fp = array_fingerprint(layer_or_data)
    if fp is not None:
        _SAVED.add(fp)


def is_unsaved(layer) -> bool:
    """True for a Labels, Shapes or Points layer holding work not saved (see the module docstring).

    Parameters
    ----------
    layer : napari layer
        Any layer (duck-typed: ``data``, ``metadata``).

    Returns
    -------
    bool
        False for other kinds, lazy data, content shown as it was loaded or computed, content saved
        since, and a new empty layer.

    Examples
    --------
    >>> class Labels:
    ...     def __init__(self, data):
    ...         self.data, self.metadata = data, {}
    >>> layer = Labels(np.zeros((3, 5), np.uint8))
    >>> is_unsaved(layer)                                      # new and empty: nothing to lose
    False
    >>> layer.data[2, 4] = 3
    >>> is_unsaved(layer)
    True
    """
    if layer_kind(layer) not in EDITABLE_KINDS:
        return False
    fp = content_fingerprint(layer)
    if fp is None:
        return False
    meta = layer.metadata
    if fp in {meta.get("_display_fingerprint"), meta.get("_saved_fingerprint")} or fp in _SAVED:
        return False
    # a new, empty layer: nothing to lose
    return meta.get("_display_fingerprint") is not None or _has_content(layer)


def unsaved_layers(viewer) -> list:
    """The viewer's layers holding work not saved (see :func:`is_unsaved`).

    Parameters
    ----------
    viewer : napari.Viewer
        Anything with ``layers``.

    Returns
    -------
    list
        The layers, in the viewer's order.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> class Points:
    ...     def __init__(self, data):
    ...         self.data, self.metadata = data, {}
    >>> class Image(Points):
    ...     pass
    >>> viewer = SimpleNamespace(layers=[Image(np.ones(3)), Points(np.array([[4.0, 5.0, 6.5]]))])
    >>> [layer_kind(layer) for layer in unsaved_layers(viewer)]
    ['Points']
    """
    return [layer for layer in viewer.layers if is_unsaved(layer)]
