"""The three-plane layout of the Study dock: axial, coronal and sagittal panels under the main view (Qt).

Each panel shows :func:`~.planes.render_plane` through the viewer's current
point; a click moves the point, the wheel steps the plane.
"""

from __future__ import annotations

import contextlib

import numpy as np
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QSizePolicy, QWidget

from ...affines import napari_to_ras
from ...errors import one_line
from .._common import center_on_world
from .planes import AXIS_LETTERS, PLANE_AXES, PLANES, PlaneImage, layer_world_bounds, render_plane, sampleable  # noqa: F401


class _PlanePanel(QLabel):
    """One plane: the rendered image scaled to the panel, a crosshair, orientation letters; click to move."""

    def __init__(self, owner: ThreePlaneView, plane: str):
        super().__init__()
        self.owner = owner
        self.plane = plane
        self.image: PlaneImage | None = None
        self.setMinimumSize(120, 110)  # small screens: the canvas above keeps room
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet("background-color: black;")
        self._geometry = None  # (x0, y0, scale) of the drawn image inside the label

    def show_image(self, image: PlaneImage | None) -> None:
        self.image = image
        self._redraw()

    def resizeEvent(self, event):  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._redraw()

    def _redraw(self) -> None:
        image = self.image
        w, h = max(self.width(), 10), max(self.height(), 10)
        canvas = QPixmap(w, h)
        canvas.fill(QColor("black"))
        painter = QPainter(canvas)
        painter.setPen(QColor(220, 220, 220))
        painter.setFont(QFont("Sans", 9))
        if image is None:
            painter.drawText(10, 20, f"{self.plane}: no visible 3D layer")
            painter.end()
            self.setPixmap(canvas)
            return
        rgb8 = np.ascontiguousarray((np.clip(image.rgb, 0, 1) * 255).astype(np.uint8))
        n_row, n_col = rgb8.shape[:2]
        qimage = QImage(rgb8.data, n_col, n_row, 3 * n_col, QImage.Format.Format_RGB888).copy()
        scale = min((w - 4) / n_col, (h - 18) / n_row)
        x0, y0 = (w - n_col * scale) / 2, 16 + (h - 16 - n_row * scale) / 2
        self._geometry = (x0, y0, scale)
        painter.drawImage(QPointF(x0, y0), qimage.scaled(max(int(n_col * scale), 1), max(int(n_row * scale), 1)))
        # crosshair through the world point
        row, col = image.pixel_of(image.point_ras)
        cx, cy = x0 + (col + 0.5) * scale, y0 + (row + 0.5) * scale
        pen = QPen(QColor(255, 230, 0, 150))
        pen.setWidth(1)
        painter.setPen(pen)
        painter.drawLine(QPointF(x0, cy), QPointF(x0 + n_col * scale, cy))
        painter.drawLine(QPointF(cx, y0), QPointF(cx, y0 + n_row * scale))
        # orientation letters and the plane's position
        fixed, col_axis, row_axis = PLANE_AXES[self.plane]
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(int(x0 + 2), int(y0 + n_row * scale / 2), AXIS_LETTERS[col_axis][0])
        painter.drawText(int(x0 + n_col * scale - 10), int(y0 + n_row * scale / 2), AXIS_LETTERS[col_axis][1])
        painter.drawText(int(x0 + n_col * scale / 2), int(y0 + 12), AXIS_LETTERS[row_axis][1])
        painter.drawText(int(x0 + n_col * scale / 2), int(y0 + n_row * scale - 2), AXIS_LETTERS[row_axis][0])
        axis_name = "RAS"[fixed]
        painter.drawText(4, 12, f"{self.plane}  {axis_name} = {image.point_ras[fixed]:.2f} mm")
        painter.end()
        self.setPixmap(canvas)

    def mousePressEvent(self, event):  # noqa: N802 - Qt name
        if self.image is None or self._geometry is None:
            return
        x0, y0, scale = self._geometry
        pos = event.position() if hasattr(event, "position") else event.pos()
        col = (pos.x() - x0) / scale - 0.5
        row = (pos.y() - y0) / scale - 0.5
        self.owner.go_to(self.image.ras_of(row, col))

    def wheelEvent(self, event):  # noqa: N802 - Qt name
        if self.image is None:
            return
        fixed = PLANE_AXES[self.plane][0]
        point = np.array(self.image.point_ras, float)
        delta = 1 if event.angleDelta().y() > 0 else -1
        point[fixed] += delta * float(np.linalg.norm(self.image.col_step))
        self.owner.go_to(point)


class ThreePlaneView(QWidget):
    """Axial, coronal and sagittal slices through the viewer's current world point, kept in step with it.

    The panels are drawn from the viewer's visible layers (nearest neighbour,
    their colormaps and contrast); clicking a panel moves every view to the
    clicked point, the wheel moves that panel's plane.
    """

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        layout = QGridLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.panels = {plane: _PlanePanel(self, plane) for plane in PLANES}
        for i, plane in enumerate(PLANES):
            layout.addWidget(self.panels[plane], 0, i)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(30)
        self._timer.timeout.connect(self.refresh)
        self._watched = set()
        viewer.dims.events.point.connect(self.schedule)
        viewer.layers.events.inserted.connect(self._on_layers)
        viewer.layers.events.removed.connect(self._on_layers)
        viewer.layers.events.moved.connect(self.schedule)
        for layer in viewer.layers:
            self._watch(layer)
        self.refresh()

    def _on_layers(self, event=None) -> None:
        for layer in self.viewer.layers:
            self._watch(layer)
        self.schedule()

    def _watch(self, layer) -> None:
        if id(layer) in self._watched:
            return
        self._watched.add(id(layer))
        for name in (
            "data",
            "contrast_limits",
            "colormap",
            "opacity",
            "visible",
            "blending",
            "gamma",
            "affine",
            "scale",
            "translate",
            "contour",
            "set_data",
            "paint",
        ):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(self.schedule)

    def schedule(self, event=None) -> None:
        self._timer.start()

    def point_ras(self) -> np.ndarray:
        return napari_to_ras(np.asarray(self.viewer.dims.point, float)[-3:])

    def refresh(self) -> None:
        """Render the three planes now (also called by the timer)."""
        layers = list(self.viewer.layers)
        point = self.point_ras()
        # the field of view of the visible anatomy (the whole-body PET would make the torso tiny)
        shown = [ly for ly in layers if sampleable(ly)]
        anatomy = [ly for ly in shown if ly.metadata.get("immunotrack", {}).get("modality") in ("MR", "CT")]
        bounds = layer_world_bounds(anatomy or shown)
        for plane, panel in self.panels.items():
            try:
                panel.show_image(render_plane(layers, plane, point, bounds))
            except Exception as exc:  # noqa: BLE001 - a drawing problem must not break the viewer
                panel.show_image(None)
                panel.setToolTip(one_line(exc))

    def images(self) -> dict[str, PlaneImage | None]:
        return {plane: panel.image for plane, panel in self.panels.items()}

    def go_to(self, ras) -> None:
        center_on_world(self.viewer, ras)

    def close_view(self) -> None:
        with contextlib.suppress(Exception):
            self.viewer.dims.events.point.disconnect(self.schedule)
        self._timer.stop()
