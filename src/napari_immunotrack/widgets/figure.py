"""Publication figures from the current napari view (thin; the drawing is :mod:`..figures`).

:class:`FigureWidget` (dock)
    Pick the anatomy layer (grey), the overlay layer (colour, with a colour
    bar in its unit) and the Labels layers to outline; the plane and the slice
    come from the current view, the colour ranges from the layers' contrast
    limits, so the figure shows what the screen shows, redrawn from the native
    volumes in world millimetres with a scale bar and orientation letters.
    "Save figure..." writes PNG (at the chosen DPI), SVG or PDF with a
    provenance sidecar; "Save 3D snapshot..." renders the viewer in 3D and
    saves the canvas as PNG (with the camera in its sidecar).

:func:`figure_from_viewer` and :func:`snapshot_3d` are the widget's work,
callable without the dock (and in tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..errors import InputError, one_line
from ._common import (
    Coalesced,
    LayerPickers,
    follow_layers,
    layer_to_volume,
    notify_error,
    same_layer,
    viewer_camera,
)
from ._dock import PluginDock
from .roles import listen_for_steps

#: napari world axes (S, A, R) displayed -> plane; the remaining axis is the slice.
_PLANE_OF_DISPLAYED = {(1, 2): "axial", (0, 2): "coronal", (0, 1): "sagittal"}
#: napari world axis of each plane's normal (S=0, A=1, R=2).
_NORMAL_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
_NONE = "(none)"


def current_plane(viewer) -> tuple:
    """(plane, position in world mm along its normal) of the viewer's 2D view.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        A viewer with at least 3 dimensions, in 2D display.

    Returns
    -------
    tuple
        ``(plane, position_mm)``: ``"axial"``, ``"coronal"`` or ``"sagittal"`` (from the two displayed
        axes of napari's S, A, R order), and the slider's world coordinate along the plane's normal.

    Raises
    ------
    InputError
        Fewer than 3 dimensions, a 3D display, or displayed axes that are not an orthogonal plane.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> viewer = ViewerModel()
    >>> _ = viewer.add_image(np.zeros((8, 8, 8), np.float32))
    >>> viewer.dims.point = (2.0, 3.0, 4.0)  # S, A, R mm
    >>> current_plane(viewer)
    ('axial', 2.0)
    >>> viewer.dims.order = (1, 0, 2)  # A on the slider: the coronal view
    >>> current_plane(viewer)
    ('coronal', 3.0)
    >>> viewer.dims.ndisplay = 3
    >>> current_plane(viewer)
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: switch the viewer to a 2D axial, coronal or sagittal view to make a slice figure.
    """
    if viewer.dims.ndim < 3:
        raise InputError("the viewer shows fewer than 3 dimensions; open a 3D volume first.")
    displayed = tuple(sorted(int(d) - (viewer.dims.ndim - 3) for d in viewer.dims.displayed[-2:]))
    plane = _PLANE_OF_DISPLAYED.get(displayed)
    if plane is None or viewer.dims.ndisplay != 2:
        raise InputError("switch the viewer to a 2D axial, coronal or sagittal view to make a slice figure.")
    axis = viewer.dims.ndim - 3 + _NORMAL_AXIS[plane]
    return plane, float(viewer.dims.point[axis])


def _layer(viewer, name):
    if name in (None, "", _NONE):
        return None
    try:
        return viewer.layers[name]
    except KeyError:
        raise InputError(f"there is no layer named {name!r} in the viewer.") from None


def _cmap_name(layer) -> str | None:
    from matplotlib import colormaps

    name = getattr(getattr(layer, "colormap", None), "name", None)
    return name if name in colormaps else None


def _as_displayed(layer, volume):
    """The Volume in the unit its layer shows: the Study dock shows PET/SPECT as SUVbw, its Volume holds Bq/mL."""
    info = layer.metadata.get("immunotrack", {}) if isinstance(getattr(layer, "metadata", None), dict) else {}
    if info.get("display_unit") != "SUVbw" or volume.unit == "SUVbw":
        return volume
    from ._common import suv_display_factor

    factor = suv_display_factor(volume)
    if factor is None:
        return volume
    return volume.replace(data=np.asarray(volume.data, np.float32) * np.float32(factor), unit="SUVbw")


def figure_from_viewer(
    viewer,
    anatomy: str | None = None,
    overlay: str | None = None,
    outlines: Sequence[str] = (),
    *,
    scale_bar_mm: float | None = None,
    radiological: bool = False,
    title: str | None = None,
):
    """The fused-slice figure of the current view (see :func:`napari_immunotrack.figures.fused_slice`).

    Layers are given by name; their native Volumes are drawn through world
    coordinates, with the layers' contrast limits as value ranges.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        In a 2D orthogonal view (see :func:`current_plane`).
    anatomy : str, optional
        Name of the grey-scale underlay layer.
    overlay : str, optional
        Name of the colour overlay layer (its colormap, when matplotlib has it, and its opacity, at least
        0.3, are used). At least one of `anatomy` and `overlay` is needed.
    outlines : sequence of str, optional
        Names of label layers drawn as outlines, one Okabe-Ito colour each.
    scale_bar_mm : float, optional
        Scale-bar length (default: chosen from the field of view).
    radiological : bool, default False
        Patient's right on the image's left.
    title : str, optional

    Returns
    -------
    FigureResult
        The matplotlib figure and what it shows (``info``: plane, position, field of view, ranges, ...).

    Raises
    ------
    InputError
        No layer chosen, a layer name not in the viewer, or a view that is not a 2D orthogonal plane.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.widgets._common import volume_layer_data
    >>> viewer = ViewerModel()
    >>> t2w = Volume(np.linspace(0, 1, 512, dtype=np.float32).reshape(8, 8, 8), np.eye(4), "MR", name="T2w")
    >>> data, kwargs, _kind = volume_layer_data(t2w)
    >>> _ = viewer.add_image(data, **kwargs)
    >>> viewer.dims.point = (2.0, 3.0, 4.0)
    >>> result = figure_from_viewer(viewer, anatomy="T2w")
    >>> result.info["plane"], result.info["position_mm"], result.info["extent_mm"], result.info["pixel_mm"]
    ('axial', 2.0, (-0.5, 7.5, -0.5, 7.5), 1.0)
    >>> result.figure.clear()
    >>> figure_from_viewer(viewer, overlay="PET")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: there is no layer named 'PET' in the viewer.
    """
    from .. import figures

    plane, position = current_plane(viewer)
    a_layer, o_layer = _layer(viewer, anatomy), _layer(viewer, overlay)
    if a_layer is None and o_layer is None:
        raise InputError("choose an anatomy layer and/or an overlay layer to draw.")
    kwargs = {}
    a_vol = o_vol = None
    if a_layer is not None:
        a_vol = layer_to_volume(a_layer)
        kwargs["anatomy_range"] = tuple(float(v) for v in a_layer.contrast_limits)
    if o_layer is not None:
        o_vol = _as_displayed(o_layer, layer_to_volume(o_layer))  # the layer's contrast limits are in that unit
        kwargs["overlay_range"] = tuple(float(v) for v in o_layer.contrast_limits)
        kwargs["overlay_cmap"] = _cmap_name(o_layer)
        kwargs["overlay_alpha"] = float(min(max(o_layer.opacity, 0.3), 1.0))
    # one Okabe-Ito colour per outlined layer (ROIs, clusters), so the legend is the layer
    labels = [
        (layer_to_volume(_layer(viewer, n)), figures.OKABE_ITO[i % len(figures.OKABE_ITO)])
        for i, n in enumerate(outlines)
    ]
    return figures.fused_slice(
        a_vol,
        o_vol,
        labels,
        plane=plane,
        position_mm=position,
        scale_bar_mm=scale_bar_mm,
        radiological=radiological,
        title=title,
        **kwargs,
    )


def save_view_figure(viewer, path, *, dpi: int = 300, overwrite: bool = False, **kwargs) -> Path:
    """Draw :func:`figure_from_viewer` and save it (format from the suffix) with its provenance sidecar.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        In a 2D orthogonal view.
    path : str or Path
        The figure file (``.png``, ``.pdf``, ``.svg``, ``.tif``, ...).
    dpi : int, default 300
        Resolution of raster formats.
    overwrite : bool, default False
        Replace an existing file.
    **kwargs
        Passed to :func:`figure_from_viewer` (``anatomy``, ``overlay``, ``outlines``, ...); the layer
        names are recorded in the provenance.

    Returns
    -------
    Path
        The figure written (with ``<file>.provenance.json`` beside it).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> viewer = ViewerModel()
    >>> _ = viewer.add_image(np.linspace(0, 1, 512).reshape(8, 8, 8), name="T2w")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     written = save_view_figure(viewer, os.path.join(d, "slice.png"), dpi=50, anatomy="T2w")
    ...     print(written.name, sorted(os.listdir(d)))
    slice.png ['slice.png', 'slice.png.provenance.json']
    """
    from ..figures import save_figure

    result = figure_from_viewer(viewer, **kwargs)
    try:
        written = save_figure(
            result,
            path,
            dpi=dpi,
            overwrite=overwrite,
            provenance={
                "step": "napari figure widget",
                "parameters": {"layers": {k: v for k, v in kwargs.items() if k in ("anatomy", "overlay", "outlines")}},
            },
        )
    finally:
        result.figure.clear()
    return written[0]


def snapshot_3d(viewer, path, *, overwrite: bool = False, scale: float = 1.0) -> Path:
    """Render the viewer in 3D, save the canvas as PNG with a provenance sidecar, and restore the view.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer with a shown window (the canvas is rendered with OpenGL).
    path : str or Path
        The ``.png`` to write.
    overwrite : bool, default False
        Replace an existing file.
    scale : float, default 1.0
        Screenshot scale factor (2 doubles the pixels).

    Returns
    -------
    Path
        The PNG written; its sidecar records the camera (angles, zoom, centre) and the visible layers.

    Raises
    ------
    InputError
        Not a ``.png`` name, an existing file without `overwrite`, no layer, or an empty rendering.

    Examples
    --------
    The rendering needs a window (the GUI tests run it); the checks come first:

    >>> from napari.components import ViewerModel
    >>> snapshot_3d(ViewerModel(), "view.jpg")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: view.jpg: a 3D snapshot is saved as .png.
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     snapshot_3d(ViewerModel(), os.path.join(d, "view.png"))
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: the viewer has no layer to render.
    """
    from ..outputs import check_output, write_png
    from ..provenance import record

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path.name}: a 3D snapshot is saved as .png.")
    check_output(path, overwrite)
    if not len(viewer.layers):
        raise InputError("the viewer has no layer to render.")
    before = viewer.dims.ndisplay
    try:
        viewer.dims.ndisplay = 3
        if before != 3:
            viewer.reset_view()  # the 2D camera means nothing in 3D: frame the whole scene
        image = viewer.screenshot(canvas_only=True, flash=False, scale=scale)
        cam = viewer_camera(viewer)
        camera = {
            "angles": [float(a) for a in cam.angles],
            "zoom": float(cam.zoom),
            "center": [float(c) for c in cam.center],
        }
    finally:
        viewer.dims.ndisplay = before
    image = np.asarray(image)
    if image.ndim != 3 or image.size == 0 or not image[..., :3].any():
        raise InputError(
            "the 3D rendering came back empty (is the napari window shown, with OpenGL?); nothing was saved."
        )
    layers = [
        {"name": layer.name, "visible": bool(layer.visible), "type": type(layer).__name__} for layer in viewer.layers
    ]
    return write_png(
        image,
        path,
        record("napari 3D snapshot", parameters={"camera": camera, "layers": layers, "shape_px": list(image.shape)}),
        overwrite=overwrite,
    )


class FigureWidget(PluginDock):
    """Dock widget: save a publication figure of the current view, or a 3D snapshot."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.last_path: Path | None = None
        layout = QVBoxLayout(self)
        box = QGroupBox("Layers")
        form = QFormLayout(box)
        # the anatomy and the overlay follow the Study dock's timepoint (widgets/roles.py) unless pinned
        self.pickers = LayerPickers(
            napari_viewer,
            form,
            (("anatomy", "Anatomy (grey)", True, ("Image",)), ("overlay", "Overlay (colour)", True, ("Image",))),
            guess=self._guess,
            roles={"anatomy": "t2star_post", "overlay": "pet"},
            parent=self,
        )
        self.anatomy_combo = self.pickers.combos["anatomy"]
        self.overlay_combo = self.pickers.combos["overlay"]
        self._outlined: list = []  # the layers ticked as outlines (by identity: a step renames them)
        self.outline_list = QListWidget()
        self.outline_list.setMaximumHeight(90)
        self.outline_list.itemChanged.connect(self._outlines_ticked)
        form.addRow("Outlines", self.outline_list)
        layout.addWidget(box)
        opts = QGroupBox("Figure")
        oform = QFormLayout(opts)
        self.scale_bar = QDoubleSpinBox()
        self.scale_bar.setRange(0.0, 500.0)
        self.scale_bar.setDecimals(1)
        self.scale_bar.setSuffix(" mm")
        self.scale_bar.setSpecialValueText("auto")
        self.dpi = QSpinBox()
        self.dpi.setRange(50, 1200)
        self.dpi.setValue(300)
        self.format_combo = QComboBox()
        self.format_combo.addItems(["png", "svg", "pdf"])
        self.radiological = QCheckBox("radiological (subject's right on the left)")
        oform.addRow("Scale bar", self.scale_bar)
        oform.addRow("DPI (PNG)", self.dpi)
        oform.addRow("Format", self.format_combo)
        oform.addRow(self.radiological)
        layout.addWidget(opts)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save figure...")
        self.snapshot_button = QPushButton("Save 3D snapshot...")
        row.addWidget(self.save_button)
        row.addWidget(self.snapshot_button)
        layout.addLayout(row)
        self.status = QLabel("The plane and slice come from the current view.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.save_button.clicked.connect(lambda: self.save_figure())
        self.snapshot_button.clicked.connect(lambda: self.save_snapshot())
        self._later = Coalesced(self, self._refresh)
        follow_layers(self.viewer, self._refresh, on_rename=self._later)
        listen_for_steps(self.viewer, self._refresh)

    # ------------------------------------------------------------------ layer choices
    def _guess(self, key: str, names) -> str | None:
        """Layers opened by hand: the first MR/CT image as the anatomy, the first PET/SPECT/19F/MPI as the overlay."""
        prefer = ("MR", "CT") if key == "anatomy" else ("PT", "NM", "F19", "MPI")
        return next((n for n in names if self._modality(n) in prefer), None)

    def _refresh(self, *_):
        self._later.pending = False
        self.pickers.refresh()
        labels = [layer for layer in self.viewer.layers if type(layer).__name__ == "Labels"]
        self._outlined = [ly for ly in self._outlined if any(same_layer(ly, other) for other in labels)]
        self.outline_list.blockSignals(True)
        self.outline_list.clear()
        for layer in labels:
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            outlined = any(same_layer(layer, ly) for ly in self._outlined)
            item.setCheckState(Qt.CheckState.Checked if outlined else Qt.CheckState.Unchecked)
            self.outline_list.addItem(item)
        self.outline_list.blockSignals(False)

    def _outlines_ticked(self, *_):
        ticked = {
            self.outline_list.item(i).text()
            for i in range(self.outline_list.count())
            if self.outline_list.item(i).checkState() == Qt.CheckState.Checked
        }
        self._outlined = [ly for ly in self.viewer.layers if ly.name in ticked]

    def _modality(self, name) -> str:
        vol = self.viewer.layers[name].metadata.get("volume")
        return getattr(vol, "modality", "")

    def choices(self) -> dict:
        """The widget's current choices as :func:`figure_from_viewer` keywords."""
        outlines = [
            self.outline_list.item(i).text()
            for i in range(self.outline_list.count())
            if self.outline_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        chosen = self.pickers.names(("anatomy", "overlay"))  # after a step: that timepoint's layers
        return {
            "anatomy": chosen["anatomy"],
            "overlay": chosen["overlay"],
            "outlines": outlines,
            "scale_bar_mm": self.scale_bar.value() or None,
            "radiological": self.radiological.isChecked(),
        }

    # ------------------------------------------------------------------ actions
    def save_figure(self, path=None, overwrite: bool = False) -> Path | None:
        """Save the figure of the current view (asks for a file name when ``path`` is None)."""
        fmt = self.format_combo.currentText()
        return self._save(
            path,
            overwrite,
            "Save figure",
            f"figure.{fmt}",
            f"{fmt.upper()} (*.{fmt})",
            lambda p, ow: save_view_figure(self.viewer, p, dpi=self.dpi.value(), overwrite=ow, **self.choices()),
            " (provenance beside it)",
        )

    def save_snapshot(self, path=None, overwrite: bool = False) -> Path | None:
        """Save a 3D rendering of the viewer as PNG."""
        return self._save(
            path,
            overwrite,
            "Save 3D snapshot",
            "snapshot_3d.png",
            "PNG (*.png)",
            lambda p, ow: snapshot_3d(self.viewer, p, overwrite=ow),
        )

    def _save(
        self, path, overwrite: bool, caption: str, default: str, file_filter: str, write, note: str = ""
    ) -> Path | None:
        """Ask for a path when ``path`` is None, then ``write(path, overwrite)``; bad input is one message."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, caption, default, file_filter)
            if not path:
                return None
            overwrite = True  # the file dialog already asked before replacing
        try:
            written = write(path, overwrite)
        except InputError as exc:
            self.status.setText(f"not saved: {one_line(exc)}")
            notify_error(exc)
            return None
        self.last_path = written
        self.status.setText(f"saved {written}{note}")
        return written
