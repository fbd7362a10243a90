"""The Study dock, as a package: a thin Qt widget over a view model.

- :mod:`.dock` -- :class:`StudyWidget`, the dock ("Study"): draws the view model and moves napari layers.
- :mod:`.model` -- :class:`StudyViewModel`: study, subject, timepoint, ticked tracks, adjustments (no Qt).
- :mod:`.session` -- the session loader: study files read and prepared as napari layers (no Qt).
- :mod:`.layers` -- sessions cached in the background, one layer per track, swapped per timepoint.
- :mod:`.planes` / :mod:`.three_plane` -- the three-plane rendering (no Qt) and its panels (Qt).
- :mod:`.state` -- saving and reopening the study state (the format is :mod:`napari_immunotrack.study`'s).

Every name of the former ``widgets/study.py`` module is importable from here.
See ``docs/methods/study-viewer.md``.
"""

import importlib

#: public name -> submodule; loaded on first use, so that ``model``, ``session`` and ``planes``
#: import without Qt (PEP 562 module ``__getattr__``)
_WHERE = {
    "StudyWidget": "dock",
    "fit_to_anatomy": "dock",
    "_COLORBAR_POSITION": "layers",
    "StudyLayersMixin": "layers",
    "StudyViewModel": "model",
    "TreeRow": "model",
    "PLANES": "planes",
    "PlaneImage": "planes",
    "render_plane": "planes",
    "BASELINE_TRACKS": "session",
    "DEFAULT_SHOWN": "session",
    "PRESETS": "session",
    "Prepared": "session",
    "SessionData": "session",
    "label_findings": "session",
    "layer_name": "session",
    "prepare_file": "session",
    "prepare_session": "session",
    "preset_group": "session",
    "preset_limits": "session",
    "suv_display_factor": "session",
    "StudyStateMixin": "state",
    "_IMAGE_PROPS": "state",
    "_LABELS_PROPS": "state",
    "ThreePlaneView": "three_plane",
}

__all__ = [name for name in _WHERE if not name.startswith("_")]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
