"""The base of every napari-immunotrack dock widget."""

from __future__ import annotations

from qtpy.QtWidgets import QWidget

from .._close_guard import install_close_guard


class PluginDock(QWidget):
    """A dock bound to its napari viewer (``self.viewer``).

    Opening any dock installs the close guard, so that closing napari with
    edited labels, ROIs or landmarks offers to save them first.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        install_close_guard(napari_viewer)
