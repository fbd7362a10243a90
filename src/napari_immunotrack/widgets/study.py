"""The study browser dock: open a study, see it fused in one physical space, step through timepoints.

:class:`StudyWidget` (dock, "Study")
    Open a study folder (or the bundled sample). A tree shows subjects,
    timepoints (sessions) and the modalities of each, with what is missing;
    ticking a modality shows it. Every image sits in world millimetres with
    modality defaults (grey anatomy, PET/SPECT hot in SUVbw with a colour
    bar, magenta 19F, cyan MPI, green fluorescence, additive blending for hot
    spots). One napari layer follows each modality (a *track*) across
    timepoints: stepping the timepoint (slider, buttons, ``Alt-Left`` /
    ``Alt-Right``) swaps its data, so the user's display settings and the
    world position are kept, and the window (contrast limits) stays linked
    across timepoints unless unticked. Modality contrast presets, 2D/3D,
    axial/coronal/sagittal, and a three-plane layout (:class:`ThreePlaneView`).
    A findings list gathers every labels layer (clusters, confirmed regions,
    ROIs) with the centroid of each region: a click centres every view on it.
    The state (layers, transforms, ROIs, parameters, view) is saved to a small
    JSON file next to the data and reopened (see :mod:`napari_immunotrack.study`).

Design notes
------------
- Session volumes are read and prepared for display (canonical axes, SUV
  scaling, contrast presets) in one background thread, one session at a
  time, and cached: stepping to a prepared timepoint only swaps arrays.
- The native Volume stays in ``layer.metadata["volume"]`` (Bq/mL for PET):
  the analysis widgets quantify it, never the SUV display copy.
- Registration: a session's ``xfm/*_from-<type>_to-anat.tfm`` places PET,
  SPECT or MPI in the MRI world; without one the data are shown where their
  scanner put them and the user is told they are not registered.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QGridLayout,
                            QGroupBox, QHBoxLayout, QLabel, QMessageBox, QPushButton, QRadioButton, QSizePolicy,
                            QSlider, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from ..errors import InputError, one_line
from ..affines import napari_to_ras, ras_to_napari
from ..volume import Volume
from .._close_guard import offer_to_save
from ._dock import PluginDock
from ._common import (_fingerprint, center_on_world, data_to_world_matrix, layer_to_volume, notify_error,
                      viewer_camera, volume_layer_data)

#: Tracks shown when a study opens (others are loaded hidden; tick them in the tree).
DEFAULT_SHOWN = ("T2starw", "ROI", "PET", "19F")
#: Baseline (pre-injection) anatomy kept as separate hidden layers for the analysis widgets.
BASELINE_TRACKS = ("T1w", "T2w", "T2starw")
#: Where a PET/SPECT colour bar sits (two at one corner would overlap).
_COLORBAR_POSITION = {"PT": "top_right", "NM": "top_left"}
#: Layer properties saved in a study state (images / labels).
_IMAGE_PROPS = ("visible", "opacity", "blending", "contrast_limits", "gamma")
_LABELS_PROPS = ("visible", "opacity", "blending", "contour")


# ============================================================================ display preparation (no Qt)
def suv_display_factor(volume: Volume) -> Optional[float]:
    """SUVbw per stored value of a PET/SPECT Volume, or None when its header cannot give it."""
    if volume.modality not in ("PT", "NM") or volume.data.ndim != 3:
        return None
    from ..analysis import pet as pet_mod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = pet_mod.read_pet_header(volume)
            conc = pet_mod.activity_concentration(volume, header, need_dose=True)
            if header.decay_correction == "NONE":
                return None  # per-frame decay: one factor would be wrong
            factor = pet_mod.suv_factor(header, "bw") * conc.metadata["activity_scale"]
        except (InputError, KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
    return float(factor) if np.isfinite(factor) and factor > 0 else None


#: Contrast presets per modality: name -> ("percentile", lo %, hi %) on the displayed data, or ("fixed", lo, hi).
PRESETS = {
    "MR": {"auto (0.5-99.5 %)": ("percentile", 0.5, 99.5), "wide (0-99.9 %)": ("percentile", 0.0, 99.9),
           "dark spots (1-70 %)": ("percentile", 1.0, 70.0)},
    "CT": {"soft tissue (-160..240 HU)": ("fixed", -160.0, 240.0), "bone (-500..1300 HU)": ("fixed", -500.0, 1300.0),
           "auto (0.5-99.5 %)": ("percentile", 0.5, 99.5)},
    "SUV": {"SUV 0-2": ("fixed", 0.0, 2.0), "SUV 0-5": ("fixed", 0.0, 5.0), "SUV 0-10": ("fixed", 0.0, 10.0),
            "auto (0-99.9 %)": ("percentile", None, 99.9)},
    "PT": {"auto (0-99.9 %)": ("percentile", None, 99.9), "full (0-max)": ("percentile", None, 100.0)},
    "HOT": {"hot spots (99 %-max)": ("percentile", 99.0, 100.0), "above noise (95 %-max)": ("percentile", 95.0, 100.0),
            "full (0-max)": ("percentile", None, 100.0)},
    "OT": {"auto (0.5-99.5 %)": ("percentile", 0.5, 99.5), "full (min-max)": ("percentile", 0.0, 100.0)},
}


def preset_group(modality: str, display_unit: str = "") -> str:
    """Which preset list fits a layer: "MR", "CT", "SUV", "PT", "HOT" or "OT"."""
    if modality in ("PT", "NM"):
        return "SUV" if display_unit.startswith("SUV") else "PT"
    if modality in ("F19", "MPI", "OPT"):
        return "HOT"
    return modality if modality in PRESETS else "OT"


def preset_limits(data, group: str, name: str) -> tuple:
    """Contrast limits (lo, hi) of preset ``name`` of ``group`` for ``data``."""
    kind, lo, hi = PRESETS[group][name]
    if kind == "fixed":
        return (float(lo), float(hi))
    arr = np.asarray(data)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return (0.0, 1.0)
    if finite.size > 2_000_000:
        finite = finite[:: finite.size // 2_000_000 + 1]
    low = min(0.0, float(finite.min())) if lo is None else float(np.percentile(finite, lo))
    high = float(np.percentile(finite, hi))
    if not high > low:
        high = low + 1.0
    return (low, high)


@dataclass
class Prepared:
    """One study file ready for napari: the native Volume and its LayerData tuple."""

    volume: Volume
    data: object
    kwargs: dict
    kind: str  # "image" or "labels"
    source: Path
    track: str
    session: str
    day: Optional[float]
    label: str
    display_unit: str = ""
    registered: Optional[bool] = None


@dataclass
class SessionData:
    """A prepared session: {track: Prepared}, and one-line errors for files that failed."""

    session: str
    layers: Dict[str, Prepared] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)


def layer_name(label: str, day: Optional[float], session: str, extra: str = "") -> str:
    when = f"day {day:g}" if day is not None else session or "no session"
    return f"{label}{' ' + extra if extra else ''} ({when})"


def prepare_file(f, transforms: dict, reference: Optional[Volume], baseline: bool = False) -> List[Prepared]:
    """Read one study file and build its napari LayerData (thread-safe; no Qt).

    PET/SPECT are shown in SUVbw when their header allows (the layer data are
    the native values times the SUV factor; the native Volume is kept in the
    metadata), float data are shown as float32.
    """
    from .._sample_data import load_study_file

    out = []
    for volume in load_study_file(f, transforms):
        label = "PET" if f.role == "PET" else "SPECT" if f.role == "SPECT" else \
            (f.suffix if f.modality == "MR" and f.role != "MR" else f.label)
        if f.role == "MR" and f.dicom.get("SeriesDescription"):
            label = f.dicom["SeriesDescription"]
        volume.name = layer_name(label, f.day, f.session, "baseline" if baseline else "")
        as_labels = f.is_labels or volume.modality == "SEG"
        data, kwargs, kind = volume_layer_data(volume, reference=reference, as_labels=as_labels)
        display_unit = volume.unit
        if kind == "image" and not kwargs.get("multiscale") and "channel_axis" not in kwargs:
            factor = suv_display_factor(volume)
            arr = np.asarray(data)
            if factor is not None:
                arr = arr.astype(np.float32) * np.float32(factor)
                display_unit = "SUVbw"
                volume.name = layer_name(label, f.day, f.session, "SUVbw")
                kwargs["name"] = volume.name
                kwargs["contrast_limits"] = preset_limits(arr, "SUV", "auto (0-99.9 %)")
            elif arr.dtype == np.float64:
                arr = arr.astype(np.float32)  # half the memory and texture upload; display only
            data = arr
            # the layer shows this array: layer_to_volume must still hand back the native Volume
            kwargs["metadata"]["_display_fingerprint"] = _fingerprint(data)
        kwargs["metadata"]["immunotrack"].update(display_unit=display_unit, study_track=f.track,
                                                 study_session=f.session, study_role="baseline" if baseline
                                                 else "track")
        if kind == "labels":
            kwargs.setdefault("opacity", 0.5)
        registered = volume.metadata.get("study", {}).get("registered")
        out.append(Prepared(volume, data, kwargs, kind, Path(f.path), f.track, f.session, f.day, label,
                            display_unit, registered))
    return out


def prepare_session(study, subject: str, session: str, reference: Optional[Volume], tracks=None,
                    baseline: bool = False, done: Optional[SessionData] = None) -> SessionData:
    """Every file of a session prepared for display; a file that fails is reported, the rest go on.

    ``tracks`` limits it to some tracks; ``done`` is a partial result whose
    tracks are kept (not read again). Without a ``reference`` the first
    axis-aligned MRI of the session becomes the grid oblique volumes are
    resampled to for display.
    """
    from .._sample_data import session_transforms
    from ..study import track_order

    result = SessionData(session)
    if done is not None:
        result.layers.update(done.layers)
        result.errors.extend(done.errors)
    files = [f for f in study.session_files(subject, session) if (tracks is None or f.track in tracks)
             and f.track not in result.layers]
    files.sort(key=lambda f: track_order(f.track))  # anatomy first: it is the display reference
    if reference is None:
        reference = next((p.volume for p in result.layers.values() if p.volume.modality == "MR"
                          and p.volume.is_axis_aligned()), None)
    transforms = {}
    if files and files[0].session_dir is not None:
        transforms = session_transforms(Path(files[0].session_dir), errors=result.errors)
    for f in files:
        if f.track in result.layers:  # a second image of the same kind in one session: the first is shown
            continue
        try:
            prepared = prepare_file(f, transforms, reference, baseline=baseline)
        except InputError as exc:
            result.errors.append(f"{study.relative(f.path)}: {one_line(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the study
            result.errors.append(f"{study.relative(f.path)}: internal error {type(exc).__name__}: "
                                 f"{one_line(exc)[:150]}")
            continue
        if prepared:
            result.layers[f.track] = prepared[0]
            volume = prepared[0].volume
            if reference is None and volume.modality == "MR" and volume.is_axis_aligned():
                reference = volume
    return result


# ============================================================================ findings (no Qt)
def label_findings(volume: Volume, source: str) -> list:
    """One finding per label of a label Volume: dicts with source, label, name, voxels, volume_mm3, centroid_ras_mm."""
    from scipy import ndimage

    data = np.asarray(volume.numpy())
    if data.ndim == 4:
        data = data[0]
    data = data.astype(np.int64, copy=False)
    present = np.unique(data)
    present = present[present > 0]
    if present.size == 0:
        return []
    names = {}
    for k, v in dict(volume.metadata.get("label_names") or {}).items():
        try:
            names[int(k)] = str(v)
        except (TypeError, ValueError):
            continue
    counts = ndimage.sum_labels(np.ones_like(data, dtype=np.float32), data, present)
    centres = np.array(ndimage.center_of_mass(np.ones_like(data, dtype=np.uint8), data, present), float)
    world = volume.index_to_world(centres.reshape(-1, 3))
    out = []
    for label, n, centre in zip(present, counts, world):
        out.append({"source": source, "label": int(label), "name": names.get(int(label), ""), "voxels": int(n),
                    "volume_mm3": float(n * volume.voxel_volume_mm3), "centroid_ras_mm": centre.tolist()})
    return out


# ============================================================================ three planes
PLANES = ("axial", "coronal", "sagittal")
#: For each plane: (fixed RAS axis, column RAS axis (increasing to the right), row RAS axis (increasing upwards)).
_PLANE_AXES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
_AXIS_LETTERS = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}


@dataclass
class PlaneImage:
    """A rendered plane: RGB (rows top to bottom), the world point it goes through, and its geometry."""

    plane: str
    rgb: np.ndarray                 # (H, W, 3) float in [0, 1]
    point_ras: np.ndarray           # the world point (RAS mm) the plane goes through
    origin: np.ndarray              # RAS of pixel (0, 0)'s centre
    col_step: np.ndarray            # RAS step per column
    row_step: np.ndarray            # RAS step per row (downwards)
    values: Dict[str, np.ndarray]   # layer name -> sampled values (NaN outside the layer)

    def pixel_of(self, ras) -> tuple:
        """(row, col) of the pixel holding a world point (RAS mm) on this plane."""
        d = np.asarray(ras, float) - self.origin
        col = d @ self.col_step / (self.col_step @ self.col_step)
        row = d @ self.row_step / (self.row_step @ self.row_step)
        return int(round(row)), int(round(col))

    def ras_of(self, row: float, col: float) -> np.ndarray:
        return self.origin + row * self.row_step + col * self.col_step


def _layer_world_bounds(layers) -> Optional[np.ndarray]:
    """(2, 3) RAS box covering the layers."""
    boxes = []
    for layer in layers:
        try:
            ext = np.asarray(layer.extent.world, float)[:, -3:]  # napari order S, A, R
        except Exception:  # noqa: BLE001
            continue
        boxes.append(napari_to_ras(ext))
    if not boxes:
        return None
    boxes = np.concatenate(boxes)
    return np.stack([boxes.min(0), boxes.max(0)])


def _sampleable(layer) -> bool:
    kind = type(layer).__name__
    if kind not in ("Image", "Labels") or not layer.visible or getattr(layer, "multiscale", False):
        return False
    if getattr(layer, "rgb", False) or layer.ndim != 3:
        return False
    return True


def _sample_layer(layer, pts_ras: np.ndarray) -> np.ndarray:
    """Nearest-neighbour values of a 3D layer at world points (RAS mm); NaN outside."""
    matrix = np.linalg.inv(data_to_world_matrix(layer))
    pts = ras_to_napari(pts_ras)
    idx = np.rint(pts @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.int64)
    shape = np.array(layer.data.shape[-3:])
    inside = np.all((idx >= 0) & (idx < shape), axis=-1)
    out = np.full(pts.shape[:-1], np.nan, np.float64)
    if inside.any():
        data = layer.data
        sel = idx[inside]
        out[inside] = np.asarray(data[sel[:, 0], sel[:, 1], sel[:, 2]], float)
    return out


def _blend(out: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, blending: str) -> np.ndarray:
    a = alpha[..., None]
    if blending == "additive":
        return np.clip(out + rgb * a, 0, 1)
    if blending == "minimum":
        return np.where(a > 0, np.minimum(out, rgb * a + out * (1 - a)), out)
    if blending == "opaque":
        return np.where(a > 0, rgb, out)
    return out * (1 - a) + rgb * a


def render_plane(layers, plane: str, point_ras, bounds_ras: Optional[np.ndarray] = None,
                 max_pixels: int = 320) -> Optional[PlaneImage]:
    """Composite the visible 3D layers on one orthogonal plane through ``point_ras`` (like napari draws them).

    Layers are sampled by nearest neighbour through their own data-to-world
    transform, coloured by their colormap, contrast limits, gamma and
    opacity, and blended bottom to top (additive, translucent, minimum,
    opaque). Labels use their colours, as outlines when ``contour`` > 0.
    """
    layers = [ly for ly in layers if _sampleable(ly)]
    point_ras = np.asarray(point_ras, float)
    if bounds_ras is None:
        bounds_ras = _layer_world_bounds(layers)
    if bounds_ras is None:
        return None
    fixed, col_axis, row_axis = _PLANE_AXES[plane]
    lo, hi = bounds_ras
    span = np.maximum(hi - lo, 1e-6)
    step = max(span[col_axis], span[row_axis]) / max_pixels
    spacings = []
    for layer in layers:
        m = data_to_world_matrix(layer)[:3, :3]
        spacings.append(float(np.min(np.linalg.norm(m, axis=0))))
    if spacings:
        step = max(step, min(spacings))
    n_col = int(np.ceil(span[col_axis] / step)) + 1
    n_row = int(np.ceil(span[row_axis] / step)) + 1
    origin = point_ras.copy()
    origin[col_axis] = lo[col_axis]
    origin[row_axis] = hi[row_axis]  # row 0 at the top: the largest coordinate
    col_step = np.zeros(3)
    col_step[col_axis] = step
    row_step = np.zeros(3)
    row_step[row_axis] = -step
    rows, cols = np.mgrid[0:n_row, 0:n_col]
    pts = origin + rows[..., None] * row_step + cols[..., None] * col_step
    out = np.zeros((n_row, n_col, 3), np.float64)
    values = {}
    for layer in layers:
        vals = _sample_layer(layer, pts)
        values[layer.name] = vals
        inside = np.isfinite(vals)
        if type(layer).__name__ == "Labels":
            lab = np.where(inside, vals, 0).astype(np.int64)
            if getattr(layer, "contour", 0):
                edge = np.zeros_like(lab, bool)
                edge[1:, :] |= lab[1:, :] != lab[:-1, :]
                edge[:-1, :] |= lab[1:, :] != lab[:-1, :]
                edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
                edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
                lab = np.where(edge, lab, 0)
            rgba = np.asarray(layer.colormap.map(lab.ravel()), float).reshape(n_row, n_col, 4)
            alpha = np.where(lab > 0, rgba[..., 3], 0.0) * layer.opacity
        else:
            c_lo, c_hi = layer.contrast_limits
            norm = np.clip((np.nan_to_num(vals) - c_lo) / max(c_hi - c_lo, 1e-12), 0, 1) ** float(layer.gamma)
            rgba = np.asarray(layer.colormap.map(norm.ravel()), float).reshape(n_row, n_col, 4)
            alpha = np.where(inside, rgba[..., 3], 0.0) * layer.opacity
        out = _blend(out, rgba[..., :3], alpha, str(getattr(layer.blending, "value", layer.blending)))
    return PlaneImage(plane, out, point_ras, origin, col_step, row_step, values)


class _PlanePanel(QLabel):
    """One plane: the rendered image scaled to the panel, a crosshair, orientation letters; click to move."""

    def __init__(self, owner: "ThreePlaneView", plane: str):
        super().__init__()
        self.owner = owner
        self.plane = plane
        self.image: Optional[PlaneImage] = None
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet("background-color: black;")
        self._geometry = None  # (x0, y0, scale) of the drawn image inside the label

    def show_image(self, image: Optional[PlaneImage]) -> None:
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
        fixed, col_axis, row_axis = _PLANE_AXES[self.plane]
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(int(x0 + 2), int(y0 + n_row * scale / 2), _AXIS_LETTERS[col_axis][0])
        painter.drawText(int(x0 + n_col * scale - 10), int(y0 + n_row * scale / 2), _AXIS_LETTERS[col_axis][1])
        painter.drawText(int(x0 + n_col * scale / 2), int(y0 + 12), _AXIS_LETTERS[row_axis][1])
        painter.drawText(int(x0 + n_col * scale / 2), int(y0 + n_row * scale - 2), _AXIS_LETTERS[row_axis][0])
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
        fixed = _PLANE_AXES[self.plane][0]
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
        for name in ("data", "contrast_limits", "colormap", "opacity", "visible", "blending", "gamma", "affine",
                     "scale", "translate", "contour", "set_data", "paint"):
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
        shown = [ly for ly in layers if _sampleable(ly)]
        anatomy = [ly for ly in shown if ly.metadata.get("immunotrack", {}).get("modality") in ("MR", "CT")]
        bounds = _layer_world_bounds(anatomy or shown)
        for plane, panel in self.panels.items():
            try:
                panel.show_image(render_plane(layers, plane, point, bounds))
            except Exception as exc:  # noqa: BLE001 - a drawing problem must not break the viewer
                panel.show_image(None)
                panel.setToolTip(one_line(exc))

    def images(self) -> Dict[str, Optional[PlaneImage]]:
        return {plane: panel.image for plane, panel in self.panels.items()}

    def go_to(self, ras) -> None:
        center_on_world(self.viewer, ras)

    def close_view(self) -> None:
        with contextlib.suppress(Exception):
            self.viewer.dims.events.point.disconnect(self.schedule)
        self._timer.stop()


# ============================================================================ the dock
def _checked(on: bool):
    return Qt.CheckState.Checked if on else Qt.CheckState.Unchecked


_ROLE_TRACK, _ROLE_SESSION, _ROLE_FINDING = Qt.ItemDataRole.UserRole, Qt.ItemDataRole.UserRole + 1, \
    Qt.ItemDataRole.UserRole + 2


class StudyWidget(PluginDock):
    """Dock widget: open a study, tick modalities, step timepoints, presets, findings, three planes, state."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.study = None
        self.subject: Optional[str] = None
        self.session: Optional[str] = None
        self.reference: Optional[Volume] = None
        self.track_layers: Dict[str, object] = {}
        self.baseline_layers: Dict[str, object] = {}
        self.shown: Dict[str, bool] = {}          # the user's tick per track
        self.messages: List[str] = []             # everything told to the user (tests read it)
        self.findings: List[dict] = []
        self._findings_cache: Dict[tuple, list] = {}
        self.extra_findings: List[dict] = []
        self.three_plane: Optional[ThreePlaneView] = None
        self._three_plane_dock = None
        self._cache: Dict[tuple, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="immunotrack-study")
        self._adjust: Dict[tuple, dict] = {}      # (session, track) -> affine changes made by the user
        self._pending_layers: List[tuple] = []    # hidden layers still to add after the first frame
        self._updating_tree = False
        self._told: set = set()
        self.state_path: Optional[Path] = None
        self._build()
        self._bind_keys()
        self._findings_timer = QTimer(self)
        self._findings_timer.setSingleShot(True)
        self._findings_timer.setInterval(400)
        self._findings_timer.timeout.connect(self.refresh_findings)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.viewer.layers.selection.events.active.connect(self._active_changed)

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open study...")
        self.open_button.setToolTip("a study folder: sub-*/ses-*/<type>/ (BIDS-like) or a scanner export")
        self.sample_button = QPushButton("Sample study")
        self.open_state_button = QPushButton("Open state...")
        self.save_state_button = QPushButton("Save state...")
        self.save_state_button.setToolTip("layers, transforms, ROIs, parameters and view, as a small JSON file "
                                          "next to the data")
        for b in (self.open_button, self.sample_button, self.open_state_button, self.save_state_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.open_button.clicked.connect(self._open_dialog)
        self.sample_button.clicked.connect(lambda: self._guard(self.open_study, None))
        self.open_state_button.clicked.connect(self._open_state_dialog)
        self.save_state_button.clicked.connect(self._save_state_dialog)

        self.title = QLabel("no study open")
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        subject_row = QHBoxLayout()
        subject_row.addWidget(QLabel("Subject"))
        self.subject_combo = QComboBox()
        self.subject_combo.currentTextChanged.connect(self._subject_chosen)
        subject_row.addWidget(self.subject_combo, 1)
        layout.addLayout(subject_row)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["study", "details"])
        self.tree.setColumnWidth(0, 190)
        self.tree.setMinimumHeight(150)
        self.tree.itemChanged.connect(self._tree_item_changed)
        self.tree.itemClicked.connect(self._tree_item_clicked)
        layout.addWidget(self.tree, 2)

        tp = QGroupBox("Timepoint (Alt+Left / Alt+Right)")
        tp_layout = QHBoxLayout(tp)
        self.prev_button = QPushButton("<")
        self.next_button = QPushButton(">")
        for b in (self.prev_button, self.next_button):
            b.setMaximumWidth(32)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.setMaximum(0)
        self.slider.setPageStep(1)
        self.timepoint_label = QLabel("-")
        self.timepoint_label.setMinimumWidth(90)
        tp_layout.addWidget(self.prev_button)
        tp_layout.addWidget(self.slider, 1)
        tp_layout.addWidget(self.next_button)
        tp_layout.addWidget(self.timepoint_label)
        layout.addWidget(tp)
        self.prev_button.clicked.connect(lambda: self._guard(self.step, -1))
        self.next_button.clicked.connect(lambda: self._guard(self.step, 1))
        self.slider.valueChanged.connect(self._slider_moved)

        disp = QGroupBox("Display")
        grid = QGridLayout(disp)
        self.link_windows = QCheckBox("link windowing across timepoints")
        self.link_windows.setChecked(True)
        self.link_windows.setToolTip("keep each modality's contrast limits when the timepoint changes (SUV, "
                                     "signal); untick to window each timepoint on its own data")
        grid.addWidget(self.link_windows, 0, 0, 1, 3)
        grid.addWidget(QLabel("Window preset"), 1, 0)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("contrast preset for the selected layer's modality")
        grid.addWidget(self.preset_combo, 1, 1)
        self.preset_button = QPushButton("Apply")
        self.preset_button.clicked.connect(lambda: self._guard(self.apply_preset))
        grid.addWidget(self.preset_button, 1, 2)
        self.view2d = QRadioButton("2D")
        self.view3d = QRadioButton("3D")
        self.view2d.setChecked(True)
        self._ndisplay_group = QButtonGroup(self)
        self._ndisplay_group.addButton(self.view2d)
        self._ndisplay_group.addButton(self.view3d)
        self.view2d.toggled.connect(lambda on: on and self.set_ndisplay(2))
        self.view3d.toggled.connect(lambda on: on and self.set_ndisplay(3))
        self.plane_combo = QComboBox()
        self.plane_combo.addItems(PLANES)
        self.plane_combo.currentTextChanged.connect(self.set_plane)
        views = QHBoxLayout()
        views.addWidget(self.view2d)
        views.addWidget(self.view3d)
        views.addWidget(self.plane_combo)
        grid.addLayout(views, 2, 0, 1, 3)
        self.three_plane_box = QCheckBox("three-plane layout (axial, coronal, sagittal)")
        self.three_plane_box.toggled.connect(self.set_three_plane)
        grid.addWidget(self.three_plane_box, 3, 0, 1, 3)
        layout.addWidget(disp)

        fg = QGroupBox("Findings (click to centre the views)")
        f_layout = QVBoxLayout(fg)
        self.findings_tree = QTreeWidget()
        self.findings_tree.setHeaderLabels(["finding", "mm3", "RAS (mm)"])
        self.findings_tree.setColumnWidth(0, 150)
        self.findings_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.findings_tree.itemClicked.connect(self._finding_clicked)
        self.findings_tree.setMinimumHeight(80)
        f_layout.addWidget(self.findings_tree)
        refresh = QPushButton("Refresh findings")
        refresh.clicked.connect(self.refresh_findings)
        f_layout.addWidget(refresh)
        layout.addWidget(fg, 1)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _bind_keys(self) -> None:
        self._bound = []
        for key, delta in (("Alt-Right", 1), ("Alt-Left", -1)):
            def handler(viewer, delta=delta):
                self._guard(self.step, delta)

            try:
                self.viewer.bind_key(key, handler, overwrite=True)
                self._bound.append(key)
            except Exception:  # noqa: BLE001 - another plugin's binding: the buttons still work
                pass

    def _guard(self, func, *args, **kwargs):
        """Run a user action; errors become one clear notification (never a traceback)."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._tell(one_line(exc), level="error")
            if not isinstance(exc, InputError):
                notify_error(exc)
            return None

    def _tell(self, message: str, level: str = "info") -> None:
        """Show a message in the dock and (the first time it is said) as a napari notification."""
        from napari.utils.notifications import show_error, show_info, show_warning

        self.messages.append(message)
        self.status.setText(message)
        if message in self._told:
            return  # stepping back and forth must not repeat the same pop-up
        self._told.add(message)
        {"info": show_info, "warning": show_warning, "error": show_error}[level](message)

    # ------------------------------------------------------------------ asking the user (tests replace these)
    def ask(self, title: str, question: str) -> bool:
        """Yes/No question (a Qt dialog)."""
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    def locate_folder(self, prompt: str) -> Optional[str]:
        """Ask for a folder (a Qt dialog); None when cancelled."""
        path = QFileDialog.getExistingDirectory(self, prompt)
        return path or None

    # ------------------------------------------------------------------ opening
    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a study folder")
        if path:
            self._guard(self.open_study, path)

    def open_study(self, root=None, subject: Optional[str] = None, session: Optional[str] = None,
                   shown=None, progressive: bool = False):
        """Open a study folder (None: the bundled sample) and show one session.

        Parameters
        ----------
        root : path, optional
        subject, session : str, optional
            Default: the first subject, its first post-injection session.
        shown : iterable of track names, optional
            Tracks shown (default :data:`DEFAULT_SHOWN`, or the anatomy when none of those exist).
        progressive : bool
            Add the visible layers, draw, and add the hidden ones afterwards
            from the Qt event loop (a faster first frame); False adds all now.

        Returns the :class:`~napari_immunotrack.study.Study`.
        """
        from ..data import sample_study_root
        from ..study import open_study as discover_study

        root = Path(root) if root else sample_study_root()
        study = discover_study(root)  # InputError (no images...) leaves the current study as it was
        if not self._may_replace(self._study_layers(), f"opening {root.name} (subject {subject or 'first'})"):
            if self.study is not None:
                self._fill_subjects()  # the subject chooser back on the subject still shown
            self._tell("the open study was kept: it holds edited layers that were not saved.", "info")
            return None
        self._close_study()
        self.study = study
        self.subject = subject if subject in study.subjects() else study.subjects()[0]
        if subject and subject not in study.subjects():
            self._tell(f"subject {subject} is not in {root}; showing {self.subject}.", "warning")
        names = study.sessions(self.subject)
        if session:
            session = session[4:] if session.startswith("ses-") else session
        if session not in names:
            if session:
                self._tell(f"session {session} is not in subject {self.subject}; sessions are {', '.join(names)}.",
                           "warning")
            post = [s for s in names if any(f.phase == "post" for f in study.session_files(self.subject, s))]
            session = (post or names)[0]
        tracks = study.tracks(self.subject)
        wanted = set(DEFAULT_SHOWN if shown is None else shown)
        if shown is None and not wanted & set(tracks):
            # none of the usual ones: show the first anatomy (else the first known kind) and the hot spots
            anatomy = [t for t in tracks if t.partition(":")[0] in ("T1w", "T2w", "T2starw", "MR", "CT")]
            known = [t for t in tracks if not t.startswith("unknown")]
            hot = [t for t in known if t.partition(":")[0] in ("PET", "SPECT", "19F", "MPI")]
            wanted = set((anatomy or known)[:1]) | set(hot)
        self.shown = {t: (t in wanted and not t.startswith("unknown")) for t in tracks}
        self.title.setText(f"{root.name}  ({root})")
        self._fill_subjects()
        self._fill_tree()
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(len(names) - 1, 0))
        self.slider.setValue(names.index(session))
        self.slider.blockSignals(False)
        # the shown tracks are read now; the others of this session in the background
        anatomy = [t for t in tracks if t.partition(":")[0] in ("T2starw", "T2w", "T1w", "MR")
                   and study.file(self.subject, session, t) is not None]
        data = prepare_session(study, self.subject, session, None,
                               tracks=[t for t, on in self.shown.items() if on] + anatomy[:1])
        # the reference grid for oblique volumes: the first axis-aligned MRI of the session
        self.reference = next((p.volume for p in data.layers.values() if p.volume.modality == "MR"
                               and p.volume.is_axis_aligned()), None)
        with self._lock:
            self._cache[(self.subject, session, False)] = self._executor.submit(
                prepare_session, study, self.subject, session, self.reference, None, False, data)
        self.session = session
        self._create_layers(data, progressive=progressive)
        self._update_timepoint_label()
        self._mark_current_session()
        for problem in study.problems:
            self._tell(problem, "warning")
        self._report_session(data)
        self._fit_view()
        if not progressive:
            self._prefetch()
        self._findings_timer.start()
        return study

    def _fit_view(self) -> None:
        from ..commands.view import fit_to_anatomy

        viewer_camera(self.viewer).orientation2d = ("up", "right")  # anterior up, subject's right to the right
        canvas = getattr(self.viewer, "canvas", None)  # napari 0.9; viewer.scale_bar is deprecated
        (canvas.overlays["scale_bar"] if canvas is not None else self.viewer.scale_bar).visible = True
        fit_to_anatomy(self.viewer)

    def _study_layers(self) -> list:
        """The layers showing study files (their data change with the timepoint, subject or study)."""
        return [ly for ly in list(self.track_layers.values()) + list(self.baseline_layers.values())
                if ly in self.viewer.layers]

    def _may_replace(self, layers, action: str) -> bool:
        """Ask Save / Discard / Cancel when ``layers`` hold edits not saved (e.g. corrections painted into
        the study's ROI); True when ``action`` may replace them."""
        return offer_to_save(self, layers, action)

    def _close_study(self) -> None:
        """Remove the previous study's layers (other layers stay) and forget its cache."""
        for layer in list(self.track_layers.values()) + list(self.baseline_layers.values()):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.track_layers.clear()
        self.baseline_layers.clear()
        self._pending_layers.clear()
        for future in self._cache.values():
            future.cancel()
        self._cache.clear()
        self._adjust.clear()
        self.study = None

    def _session_data(self, session: str, baseline: bool = False) -> SessionData:
        """A session's prepared layers (waits for the background preparation when it is running)."""
        key = (self.subject, session, baseline)
        with self._lock:
            future = self._cache.get(key)
            if future is None or future.cancelled():
                future = self._submit(session, baseline)
        return future.result()

    def _submit(self, session: str, baseline: bool = False):
        study, subject, reference = self.study, self.subject, self.reference
        tracks = BASELINE_TRACKS if baseline else None
        future = self._executor.submit(prepare_session, study, subject, session, reference, tracks, baseline)
        self._cache[(subject, session, baseline)] = future
        return future

    def _prefetch(self) -> None:
        """Prepare the other timepoints in the background, nearest first."""
        names = self.study.sessions(self.subject)
        here = names.index(self.session)
        order = sorted(range(len(names)), key=lambda i: (abs(i - here), i))
        with self._lock:
            for i in order:
                if (self.subject, names[i], False) not in self._cache:
                    self._submit(names[i])

    def _baseline_session(self) -> Optional[str]:
        for s in self.study.sessions(self.subject):
            files = self.study.session_files(self.subject, s)
            if files and all(f.phase == "pre" for f in files):
                return s
        return None

    def _create_layers(self, data: SessionData, progressive: bool) -> None:
        """One layer per track (shown or hidden), and the baseline anatomy hidden.

        The visible layers come first; with ``progressive`` the hidden ones (and the
        baseline, read only then) are added from the event loop after the first frame,
        and the other timepoints are prepared in the background after that.
        """
        first, rest = [], []
        for track in self.study.tracks(self.subject):
            prepared = data.layers.get(track)
            visible = self.shown.get(track, False) and prepared is not None
            (first if visible else rest).append(("track", track, prepared))
        baseline = self._baseline_session()
        if baseline is not None and baseline != self.session:
            rest.extend(("baseline", track, None) for track in BASELINE_TRACKS
                        if self.study.file(self.subject, baseline, track) is not None)
        for item in first:
            self._add_layer(*item)
        self._pending_layers = rest
        if progressive and rest:
            QTimer.singleShot(0, self._add_pending)
        else:
            self.finish_loading()

    def _add_pending(self) -> None:
        """Add the next hidden layer (one per event-loop turn keeps the window responsive)."""
        if not self._pending_layers:
            return
        self._add_layer(*self._resolve(self._pending_layers.pop(0)))
        if self._pending_layers:
            QTimer.singleShot(0, self._add_pending)
        else:
            self._order_layers()
            QTimer.singleShot(100, self._prefetch)

    def _resolve(self, item: tuple) -> tuple:
        """A pending layer's prepared data (read in the background meanwhile)."""
        role, track, prepared = item
        if role == "baseline" and prepared is None:
            prepared = self._session_data(self._baseline_session(), baseline=True).layers.get(track)
        elif prepared is None:
            data = self._session_data(self.session)
            for error in data.errors:
                if error not in self._told:
                    self._tell(error, "error")
            prepared = data.layers.get(track)
        return role, track, prepared

    def finish_loading(self) -> None:
        """Add every layer still pending (what a screenshot or a test waits for)."""
        while self._pending_layers:
            self._add_layer(*self._resolve(self._pending_layers.pop(0)))
        self._order_layers()
        if self.study is not None:
            self._prefetch()

    def _add_layer(self, role: str, track: str, prepared: Optional[Prepared]):
        from ..study import track_label

        if prepared is None:
            # this track has no image at this timepoint: an empty placeholder appears when it gets one
            return None
        kwargs = dict(prepared.kwargs)
        # the layer's own copies: the cached session data must not change with the layer
        kwargs["metadata"] = dict(kwargs["metadata"])
        kwargs["metadata"]["immunotrack"] = dict(kwargs["metadata"]["immunotrack"])
        kwargs["visible"] = role == "track" and self.shown.get(track, False)
        adder = self.viewer.add_labels if prepared.kind == "labels" else self.viewer.add_image
        layer = adder(prepared.data, **kwargs)
        if prepared.kind == "labels" and track == "ROI":
            layer.contour = 1  # organ outlines over the anatomy, not filled regions
        if prepared.volume.modality in _COLORBAR_POSITION and prepared.kind == "image":
            with contextlib.suppress(Exception):
                layer.colorbar.visible = True
                layer.colorbar.position = _COLORBAR_POSITION[prepared.volume.modality]
        layer.metadata["immunotrack"]["track_label"] = track_label(track)
        (self.track_layers if role == "track" else self.baseline_layers)[track] = layer
        if role == "track":
            self._apply_adjustment(layer, self.session, track)
        return layer

    def _order_layers(self) -> None:
        """Baseline layers at the bottom, then the tracks in their order (anatomy below hot spots)."""
        from ..study import track_order

        ours = list(self.baseline_layers.values()) + [self.track_layers[t] for t in
                                                      sorted(self.track_layers, key=track_order)]
        ours = [ly for ly in ours if ly in self.viewer.layers]
        if not ours:
            return
        others = [ly for ly in self.viewer.layers if ly not in ours]
        wanted = ours + others
        if list(self.viewer.layers) == wanted:
            return
        for target, layer in enumerate(wanted):
            current = self.viewer.layers.index(layer)
            if current != target:
                self.viewer.layers.move(current, target)

    def _report_session(self, data: SessionData) -> None:
        """Tell the user what is missing, unregistered or broken at this timepoint."""
        from ..study import track_label

        day = self.study.day(self.subject, self.session)
        when = f"day {day:g}" if day is not None else self.session
        for error in data.errors:
            self._tell(error, "error")
        from .._sample_data import NEEDS_REGISTRATION

        unregistered = sorted({f.label for f in self.study.session_files(self.subject, self.session)
                               if f.modality in NEEDS_REGISTRATION and self.study.transform_for(f) is None})
        if unregistered:
            self._tell(f"{when}: {', '.join(unregistered)} not registered to the MRI (no xfm/*_from-<type>_to-anat"
                       ".tfm in this session): shown where the scanner put them; register them (Registration dock) "
                       "for an exact overlay.", "warning")
        missing = [track_label(t) for t in self.study.tracks(self.subject) if t not in data.layers
                   and self.shown.get(t)]
        if missing:
            self._tell(f"{when}: no {', '.join(missing)} image at this timepoint; hidden.", "info")

    # ------------------------------------------------------------------ tree
    def _fill_subjects(self) -> None:
        self.subject_combo.blockSignals(True)
        self.subject_combo.clear()
        self.subject_combo.addItems(self.study.subjects())
        self.subject_combo.setCurrentText(self.subject)
        self.subject_combo.blockSignals(False)

    def _subject_chosen(self, subject: str) -> None:
        if self.study is not None and subject and subject != self.subject:
            shown = [t for t, on in self.shown.items() if on]
            self._guard(self.open_study, self.study.root, subject=subject, shown=shown)

    def _fill_tree(self) -> None:
        from ..study import track_label

        self._updating_tree = True
        self.tree.clear()
        study = self.study
        for subject in study.subjects():
            s_item = QTreeWidgetItem([f"sub-{subject}", f"{len(study.sessions(subject))} timepoint(s)"])
            self.tree.addTopLevelItem(s_item)
            tracks = study.tracks(subject)
            for session in study.sessions(subject):
                day = study.day(subject, session)
                files = study.session_files(subject, session)
                phase = "pre" if files and all(f.phase == "pre" for f in files) else ""
                label = f"day {day:g}" if day is not None else session
                t_item = QTreeWidgetItem([label, f"{session}{'  (baseline)' if phase else ''}"])
                t_item.setData(0, _ROLE_SESSION, session)
                t_item.setToolTip(0, "click to show this timepoint")
                s_item.addChild(t_item)
                have = {f.track: f for f in files}
                for track in tracks:
                    f = have.get(track)
                    if f is None and phase:
                        continue  # the baseline holds anatomy only: not a gap
                    detail = study.relative(f.path) if f is not None else "missing"
                    if f is not None and f.role == "unknown":
                        detail = "unknown role: " + detail
                    if f is not None and f.modality in ("PT", "NM", "MPI", "CT"):
                        detail += "  (registered)" if study.transform_for(f) else "  (not registered)"
                    m_item = QTreeWidgetItem([track_label(track), detail])
                    m_item.setData(0, _ROLE_TRACK, track)
                    m_item.setData(0, _ROLE_SESSION, session)
                    m_item.setToolTip(1, str(f.path) if f is not None else "no image of this kind at this timepoint")
                    if subject == self.subject:
                        m_item.setFlags(m_item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                        m_item.setCheckState(0, _checked(self.shown.get(track, False)))
                    if f is None:
                        m_item.setForeground(0, QColor(140, 140, 140))
                        m_item.setForeground(1, QColor(200, 120, 60))
                    t_item.addChild(m_item)
            s_item.setExpanded(subject == self.subject)
        self._updating_tree = False
        self._mark_current_session()

    def _mark_current_session(self) -> None:
        for i in range(self.tree.topLevelItemCount()):
            s_item = self.tree.topLevelItem(i)
            for j in range(s_item.childCount()):
                t_item = s_item.child(j)
                current = t_item.data(0, _ROLE_SESSION) == self.session and s_item.text(0) == f"sub-{self.subject}"
                font = t_item.font(0)
                font.setBold(bool(current))
                t_item.setFont(0, font)
                t_item.setExpanded(bool(current))

    def _tree_item_changed(self, item, column) -> None:
        if self._updating_tree or column != 0:
            return
        track = item.data(0, _ROLE_TRACK)
        if track:
            self._guard(self.set_track_visible, track, item.checkState(0) == Qt.CheckState.Checked)

    def _tree_item_clicked(self, item, column) -> None:
        session = item.data(0, _ROLE_SESSION)
        if session and session != self.session and item.data(0, _ROLE_TRACK) is None:
            self._guard(self.set_timepoint, session)

    def set_track_visible(self, track: str, visible: bool) -> None:
        """Tick or untick a modality (track) at every timepoint."""
        self.shown[track] = bool(visible)
        layer = self.track_layers.get(track)
        if layer is None and visible:
            # not loaded yet (missing at the first timepoint, or still pending): add it now if there is data
            self.finish_loading()
            layer = self.track_layers.get(track)
            if layer is None:
                prepared = self._session_data(self.session).layers.get(track)
                if prepared is None:
                    self._tell(f"no {track} image at this timepoint; it shows where one exists.", "info")
                else:
                    self._add_layer("track", track, prepared)
                    self._order_layers()
                layer = self.track_layers.get(track)
        if layer is not None:
            available = layer.metadata["immunotrack"].get("study_session") == self.session
            layer.visible = bool(visible) and available
        # keep the same track's boxes in step at every timepoint
        self._updating_tree = True
        for item in self._track_items(track):
            item.setCheckState(0, _checked(visible))
        self._updating_tree = False

    def _track_items(self, track: str):
        root = self.tree.invisibleRootItem()
        stack = [root.child(i) for i in range(root.childCount())]
        while stack:
            item = stack.pop()
            if item.data(0, _ROLE_TRACK) == track and item.parent() is not None and \
                    item.parent().parent() is not None and item.parent().parent().text(0) == f"sub-{self.subject}":
                yield item
            stack.extend(item.child(i) for i in range(item.childCount()))

    # ------------------------------------------------------------------ timepoints
    def _slider_moved(self, index: int) -> None:
        if self.study is None:
            return
        names = self.study.sessions(self.subject)
        if 0 <= index < len(names) and names[index] != self.session:
            self._guard(self.set_timepoint, names[index])

    def step(self, delta: int) -> Optional[str]:
        """Go ``delta`` timepoints forward (or back); returns the new session."""
        if self.study is None:
            raise InputError("open a study first (Open study... or Sample study).")
        names = self.study.sessions(self.subject)
        index = min(max(names.index(self.session) + int(delta), 0), len(names) - 1)
        if names[index] != self.session:
            self.set_timepoint(names[index])
        return self.session

    def set_timepoint(self, session: str) -> None:
        """Show another timepoint: every track layer gets that session's data; the world position stays."""
        if self.study is None:
            raise InputError("open a study first (Open study... or Sample study).")
        names = self.study.sessions(self.subject)
        session = session[4:] if session.startswith("ses-") else session
        if session not in names:
            raise InputError(f"no session {session!r} for subject {self.subject}; sessions are {', '.join(names)}.")
        if session == self.session:
            return
        if not self._may_replace(self._study_layers(), f"showing {session}"):
            self.slider.blockSignals(True)
            self.slider.setValue(names.index(self.session))  # the slider back on the timepoint still shown
            self.slider.blockSignals(False)
            self._tell(f"still showing {self.session}: edited layers were not saved.", "info")
            return
        data = self._session_data(session)
        self.finish_loading()
        self._remember_adjustments()
        previous = self.session
        self.session = session
        point = tuple(self.viewer.dims.point)
        with self._deferred_extent(list(self.track_layers.values())):
            for track in self.study.tracks(self.subject):
                layer = self.track_layers.get(track)
                prepared = data.layers.get(track)
                if layer is None:
                    continue
                if prepared is None:
                    layer.visible = False
                    layer.metadata["immunotrack"] = dict(layer.metadata["immunotrack"], study_session=None)
                    day = self.study.day(self.subject, session)
                    layer.name = layer_name(layer.metadata["immunotrack"].get("track_label", track), day, session,
                                            "none")
                    continue
                self._swap(layer, prepared)
                self._apply_adjustment(layer, session, track)
        for track in self.study.tracks(self.subject):
            prepared = data.layers.get(track)
            if track not in self.track_layers and prepared is not None and self.shown.get(track):
                self._add_layer("track", track, prepared)  # a kind missing at the first timepoint
        self._order_layers()
        # the same world point: napari may clamp it to a new extent; put it back
        if tuple(self.viewer.dims.point) != point:
            self.viewer.dims.point = point
        self.slider.blockSignals(True)
        self.slider.setValue(names.index(session))
        self.slider.blockSignals(False)
        self._update_timepoint_label()
        self._mark_current_session()
        if previous is not None:
            self._report_session(data)
        self._active_changed()

    @contextlib.contextmanager
    def _deferred_extent(self, layers):
        """Swap several layers with one recomputation of the viewer's extent (not one per setter).

        napari recomputes the world extent and re-slices every layer after each data,
        scale, translate or affine change; here those calls are held back and made once.
        """
        update = getattr(self.viewer, "_on_layers_change", None)
        emitters = []
        if update is not None:
            for layer in layers:
                for name in ("data", "scale", "translate", "affine"):
                    emitter = getattr(layer.events, name, None)
                    if emitter is not None:
                        emitter.block(callback=update)
                        emitters.append(emitter)
        try:
            yield
        finally:
            for emitter in emitters:
                emitter.unblock(callback=update)
            if update is not None:
                update()

    def _swap(self, layer, prepared: Prepared) -> None:
        """Put a prepared volume into an existing layer, keeping the user's display settings.

        Only what changes is set (each napari setter re-slices or re-computes the
        world extent), and a hidden layer is not re-drawn.
        """
        kwargs = prepared.kwargs
        want_visible = bool(self.shown.get(prepared.track, layer.visible))
        if layer.visible and not want_visible:
            layer.visible = False
        block = getattr(layer, "_block_refresh", None)
        ctx = block() if block is not None else contextlib.nullcontext()
        with ctx:
            layer.data = prepared.data
            if not np.allclose(layer.scale, kwargs["scale"]):
                layer.scale = kwargs["scale"]
            if not np.allclose(layer.translate, kwargs["translate"]):
                layer.translate = kwargs["translate"]
            if not np.allclose(np.asarray(layer.affine.affine_matrix), np.eye(layer.ndim + 1)):
                layer.affine = np.eye(layer.ndim + 1)
            metadata = dict(layer.metadata)
            metadata.update(kwargs["metadata"])
            metadata["immunotrack"] = dict(kwargs["metadata"]["immunotrack"],
                                           track_label=layer.metadata["immunotrack"].get("track_label"))
            layer.metadata = metadata
            if prepared.kind == "image":
                new_limits = kwargs["contrast_limits"]
                lo_range, hi_range = layer.contrast_limits_range
                if self.link_windows.isChecked():
                    # linked: the same window at every timepoint (the range only grows to hold the data)
                    layer.contrast_limits_range = (min(lo_range, new_limits[0]), max(hi_range, new_limits[1]))
                else:
                    layer.contrast_limits_range = (min(lo_range, new_limits[0]), max(hi_range, new_limits[1]))
                    layer.contrast_limits = new_limits
        layer.name = kwargs["name"]
        if want_visible and not layer.visible:
            layer.visible = True  # refreshes
        elif layer.visible:
            layer.refresh()

    def _update_timepoint_label(self) -> None:
        names = self.study.sessions(self.subject)
        day = self.study.day(self.subject, self.session)
        text = f"day {day:g}" if day is not None else self.session
        self.timepoint_label.setText(f"{text}  ({names.index(self.session) + 1}/{len(names)})")

    # ------------------------------------------------------------------ user adjustments (registration)
    def _layer_adjustment(self, layer) -> Optional[dict]:
        """The affine changes the user made to a track layer ({} when none)."""
        prepared = self._prepared_for(layer)
        if prepared is None:
            return None
        out = {}
        napari_affine = np.asarray(layer.affine.affine_matrix, float)
        if not np.allclose(napari_affine, np.eye(napari_affine.shape[0])):
            out["layer_affine"] = napari_affine.tolist()
        volume = layer.metadata.get("volume")
        if volume is not None and not np.allclose(volume.affine, prepared.volume.affine, atol=1e-9):
            out["affine_ras"] = np.asarray(volume.affine).tolist()
        return out

    def _prepared_for(self, layer) -> Optional[Prepared]:
        info = layer.metadata.get("immunotrack", {})
        session, track = info.get("study_session"), info.get("study_track")
        if session is None or track is None:
            return None
        baseline = info.get("study_role") == "baseline"
        future = self._cache.get((self.subject, session, baseline))
        if future is None or not future.done():
            return None
        return future.result().layers.get(track)

    def _remember_adjustments(self) -> None:
        for track, layer in self.track_layers.items():
            session = layer.metadata["immunotrack"].get("study_session")
            if session is None:
                continue
            adj = self._layer_adjustment(layer)
            if adj:
                self._adjust[(session, track)] = adj
            else:
                self._adjust.pop((session, track), None)

    def _apply_adjustment(self, layer, session: str, track: str) -> None:
        adj = self._adjust.get((session, track))
        if not adj:
            return
        if adj.get("layer_affine") is not None:
            layer.affine = np.asarray(adj["layer_affine"], float)
        if adj.get("affine_ras") is not None and layer.metadata.get("volume") is not None:
            layer.metadata["volume"] = layer.metadata["volume"].replace(affine=np.asarray(adj["affine_ras"], float))

    # ------------------------------------------------------------------ display
    def _active_changed(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        self.preset_combo.clear()
        if layer is None or type(layer).__name__ != "Image":
            self.preset_combo.setEnabled(False)
            return
        info = layer.metadata.get("immunotrack", {}) if hasattr(layer, "metadata") else {}
        group = preset_group(info.get("modality", "OT"), info.get("display_unit", ""))
        self.preset_combo.addItems(list(PRESETS[group]))
        self.preset_combo.setEnabled(True)

    def apply_preset(self, name: Optional[str] = None, layer=None) -> tuple:
        """Apply a contrast preset of the layer's modality (default: the active layer, the chosen preset)."""
        layer = layer or self.viewer.layers.selection.active
        if layer is None or type(layer).__name__ != "Image":
            raise InputError("select an image layer first; contrast presets apply to images.")
        info = layer.metadata.get("immunotrack", {})
        group = preset_group(info.get("modality", "OT"), info.get("display_unit", ""))
        name = name or self.preset_combo.currentText()
        if name not in PRESETS[group]:
            raise InputError(f"no preset {name!r} for {layer.name}; presets: {', '.join(PRESETS[group])}.")
        data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
        lo, hi = preset_limits(data, group, name)
        cl_range = layer.contrast_limits_range
        layer.contrast_limits_range = (min(lo, cl_range[0]), max(hi, cl_range[1]))
        layer.contrast_limits = (lo, hi)
        return (lo, hi)

    def set_ndisplay(self, ndisplay: int) -> None:
        self.viewer.dims.ndisplay = int(ndisplay)
        button = self.view3d if int(ndisplay) == 3 else self.view2d
        if not button.isChecked():
            button.setChecked(True)

    def set_plane(self, plane: str) -> None:
        """Show the axial (slider on S), coronal (on A) or sagittal (on R) plane in the main view."""
        if plane not in PLANES:
            raise InputError(f"unknown plane {plane!r}; choose axial, coronal or sagittal.")
        ndim = self.viewer.dims.ndim
        lead = list(range(ndim - 3))
        # napari world axes (S, A, R) are the last three; the first of the last three is the slider
        order = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}[plane]
        self.viewer.dims.order = tuple(lead + [ndim - 3 + o for o in order])
        if self.plane_combo.currentText() != plane:
            self.plane_combo.blockSignals(True)
            self.plane_combo.setCurrentText(plane)
            self.plane_combo.blockSignals(False)
        viewer_camera(self.viewer).orientation2d = ("up", "right")

    def set_three_plane(self, on: bool) -> Optional[ThreePlaneView]:
        """Show or hide the axial/coronal/sagittal panels under the main view."""
        if on and self.three_plane is None:
            self.three_plane = ThreePlaneView(self.viewer)
            self._three_plane_dock = self.viewer.window.add_dock_widget(self.three_plane, name="Three planes",
                                                                        area="bottom")
        elif not on and self.three_plane is not None:
            self.three_plane.close_view()
            with contextlib.suppress(Exception):
                self.viewer.window.remove_dock_widget(self._three_plane_dock)
            self.three_plane = None
            self._three_plane_dock = None
        if self.three_plane_box.isChecked() != bool(on):
            self.three_plane_box.blockSignals(True)
            self.three_plane_box.setChecked(bool(on))
            self.three_plane_box.blockSignals(False)
        return self.three_plane

    # ------------------------------------------------------------------ findings
    def _layers_changed(self, event=None) -> None:
        for layer in self.viewer.layers:
            if type(layer).__name__ == "Labels" and not layer.metadata.get("_findings_watched"):
                layer.metadata["_findings_watched"] = True
                for name in ("data", "paint", "set_data"):
                    emitter = getattr(layer.events, name, None)
                    if emitter is not None:
                        emitter.connect(lambda *a: self._findings_timer.start())
        self._findings_timer.start()

    def add_findings(self, df, source: str) -> None:
        """Add rows of a findings table (centroid_x_mm, centroid_y_mm, centroid_z_mm) to the list."""
        needed = {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"}
        if not needed <= set(df.columns):
            raise InputError(f"the table {source!r} has no centroid_x_mm/centroid_y_mm/centroid_z_mm columns.")
        for i, row in df.reset_index(drop=True).iterrows():
            self.extra_findings.append({
                "source": source, "label": int(row.get("label", i + 1)), "name": str(row.get("name", "") or ""),
                "voxels": int(row.get("voxels", 0) or 0), "volume_mm3": float(row.get("volume_mm3", np.nan)),
                "centroid_ras_mm": [float(row["centroid_x_mm"]), float(row["centroid_y_mm"]),
                                    float(row["centroid_z_mm"])]})
        self.refresh_findings()

    def refresh_findings(self) -> List[dict]:
        """Rebuild the findings list from every labels layer (and added tables)."""
        findings = []
        for layer in self.viewer.layers:
            if type(layer).__name__ != "Labels":
                continue
            if layer in self.baseline_layers.values():
                continue
            try:
                # unchanged labels (same array content, same place) keep their findings: stepping
                # timepoints back and forth must not recount every organ
                key = (layer.name, _fingerprint(layer.data),
                       data_to_world_matrix(layer).round(9).tobytes())
                found = self._findings_cache.get(key)
                if found is None:
                    found = label_findings(layer_to_volume(layer, native=False), layer.name)
                    self._findings_cache[key] = found
                findings.extend(found)
            except Exception:  # noqa: BLE001 - a 2D or odd labels layer has no findings in world mm
                continue
        findings.extend(self.extra_findings)
        self.findings = findings
        self.findings_tree.clear()
        groups: Dict[str, QTreeWidgetItem] = {}
        for i, item in enumerate(findings):
            group = groups.get(item["source"])
            if group is None:
                group = QTreeWidgetItem([item["source"], "", ""])
                self.findings_tree.addTopLevelItem(group)
                groups[item["source"]] = group
            name = f"{item['label']} {item['name']}".strip()
            x, y, z = item["centroid_ras_mm"]
            child = QTreeWidgetItem([name, f"{item['volume_mm3']:.3g}", f"{x:.1f}, {y:.1f}, {z:.1f}"])
            child.setData(0, _ROLE_FINDING, i)
            group.addChild(child)
        for group in groups.values():
            group.setText(1, f"{group.childCount()}")
            group.setExpanded(group.childCount() <= 12)
        return findings

    def _finding_clicked(self, item, column) -> None:
        index = item.data(0, _ROLE_FINDING)
        if index is not None:
            self.go_to_finding(int(index))

    def go_to_finding(self, index: int) -> np.ndarray:
        """Centre every view (slider, camera, three planes) on a finding; returns its RAS centroid."""
        point = np.asarray(self.findings[index]["centroid_ras_mm"], float)
        center_on_world(self.viewer, point)
        item = self.findings[index]
        self.status.setText(f"{item['source']}: {item['label']} {item['name']} at RAS "
                            f"({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm")
        return point

    # ------------------------------------------------------------------ state
    def _open_state_dialog(self) -> None:
        start = str(self.study.root) if self.study is not None else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a study state", start, "Study state (*.json)")
        if path:
            self._guard(self.open_state, path)

    def _save_state_dialog(self) -> None:
        from ..study import default_state_path

        if self.study is None:
            self._tell("open a study first; there is nothing to save.", "warning")
            return
        # one question of ours (listing the state and its labels files) instead of Qt's about the JSON only
        start = str(self.state_path or default_state_path(self.study.root))
        path, _ = QFileDialog.getSaveFileName(self, "Save the study state", start, "Study state (*.json)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self._guard(self.save_state, path, overwrite=None)

    def current_state(self, state_path) -> tuple:
        """The state dictionary of what is shown, and the labels Volumes to save beside it.

        Returns (state, {relative NIfTI path: labels Volume}).
        """
        from ..provenance import sha256_path
        from ..study import new_state, saved_layers_dir

        if self.study is None:
            raise InputError("open a study first; there is nothing to save.")
        state_path = Path(state_path)
        state = new_state(self.study.root, state_path, self.subject, self.session)
        to_save = {}
        self._remember_adjustments()
        hashes: Dict[Path, str] = {}
        used_names = set()
        for layer in self.viewer.layers:
            kind = type(layer).__name__.lower()
            entry = {"name": layer.name, "kind": kind}
            info = layer.metadata.get("immunotrack", {}) if hasattr(layer, "metadata") else {}
            role = info.get("study_role")
            ours = layer in self.track_layers.values() or layer in self.baseline_layers.values()
            if ours:
                entry.update(role=role, track=info.get("study_track"), session=info.get("study_session"))
                prepared = self._prepared_for(layer)
                if prepared is not None:
                    if prepared.source not in hashes:
                        hashes[prepared.source] = sha256_path(prepared.source)
                    entry.update(source=self.study.relative(prepared.source), sha256=hashes[prepared.source])
                    adj = self._layer_adjustment(layer)
                    if adj:
                        entry.update(adj)
            elif kind == "labels":
                volume = layer_to_volume(layer, native=True)
                safe = re.sub(r"[^A-Za-z0-9._-]+", "_", layer.name).strip("_") or "labels"
                while safe in used_names:
                    safe += "_"
                used_names.add(safe)
                rel = (saved_layers_dir(state_path).relative_to(state_path.parent) / f"{safe}.nii.gz").as_posix()
                to_save[rel] = volume.replace(name=layer.name)
                entry.update(saved=rel, modality=volume.modality)
                if volume.metadata.get("label_names"):
                    entry["label_names"] = {str(k): v for k, v in dict(volume.metadata["label_names"]).items()}
            else:
                entry["skipped"] = "not a study file nor a labels layer: recreate it with its widget"
            props = _LABELS_PROPS if kind == "labels" else _IMAGE_PROPS if kind == "image" else ("visible",)
            for prop in props:
                value = getattr(layer, prop, None)
                if value is None:
                    continue
                value = getattr(value, "value", value)
                entry[prop] = [float(v) for v in value] if prop == "contrast_limits" else \
                    (float(value) if isinstance(value, (float, np.floating)) else value)
            if kind == "image":
                entry["colormap"] = layer.colormap.name
            state["layers"].append(entry)
        state["adjustments"] = [{"session": s, "track": t, **adj} for (s, t), adj in sorted(self._adjust.items())]
        state["tracks_shown"] = sorted(t for t, on in self.shown.items() if on)
        state["parameters"] = self._collect_parameters()
        state["view"] = self._view_state()
        return state, to_save

    def save_state(self, path=None, overwrite: Optional[bool] = None) -> Optional[Path]:
        """Save the study state (JSON) and user-drawn labels (NIfTI beside it).

        ``overwrite``: True replaces, False refuses (InputError), None asks
        the user (Yes/No) when the file exists. Returns the path, or None
        when the user said no (nothing written). Labels are written under new
        names and the JSON last, so a crash keeps the old state or the new one
        (see :func:`study.save_state_with_labels`).
        """
        from .._close_guard import remember_saved
        from ..study import default_state_path, save_state_with_labels

        if self.study is None:
            raise InputError("open a study first; there is nothing to save.")
        path = Path(path) if path else default_state_path(self.study.root)
        state, to_save = self.current_state(path)
        if path.exists() and overwrite is None:
            if not self.ask("Replace the saved study state?", f"{path.name} exists in {path.parent}. Replace it "
                            "(its labels files are replaced too)?"):
                self._tell("not saved: the existing study state was kept.", "info")
                return None
            overwrite = True
        save_state_with_labels(state, path, to_save, overwrite=bool(overwrite))  # checks before writing
        for volume in to_save.values():  # the close guard no longer counts these as unsaved
            layer = _layer_named(self.viewer, volume.name)
            if layer is not None:
                remember_saved(layer)
        self.state_path = path
        self._tell(f"study state saved to {path}" + (f" with {len(to_save)} labels layer(s)" if to_save else ""))
        return path

    def open_state(self, path) -> Optional[object]:
        """Reopen a saved study state: the study, the session, layers' settings and affines, ROIs, view.

        Missing or changed files are listed in one message (a moved study
        folder can be located); the rest opens. A corrupt file is reported
        and left untouched; the study already open stays.
        """
        from ..io import load_volume
        from ..study import check_state, load_state, state_study_root

        path = Path(path)
        state = load_state(path)
        check = check_state(state, path)
        root = state_study_root(state, path)
        if not check.root_exists:
            located = self.locate_folder(f"The study folder {root} is not there: locate it")
            if not located:
                raise InputError(f"the study folder {root} of {path.name} is not there (moved or renamed?); "
                                 "locate it to reopen the state.")
            root = Path(located)
            check = check_state(state, path, root=root)
        shown = state.get("tracks_shown")
        if self.open_study(root, subject=state["subject"], session=state["session"], shown=shown) is None:
            return None  # the user kept the open study (edited layers not saved)
        self.state_path = path
        self._adjust = {(a["session"], a["track"]): {k: a[k] for k in ("layer_affine", "affine_ras") if k in a}
                        for a in state.get("adjustments", []) if "session" in a and "track" in a}
        problems = []
        by_track = {("track", t): ly for t, ly in self.track_layers.items()}
        by_track.update({("baseline", t): ly for t, ly in self.baseline_layers.items()})
        order = []
        for entry in state["layers"]:
            name = entry["name"]
            layer = None
            if entry.get("track") and entry.get("role") in ("track", "baseline"):
                layer = by_track.get((entry["role"], entry["track"]))
                if layer is None:
                    if name not in check.missing:
                        problems.append(f"{name}: no such image in the study now")
                    continue
                if entry.get("role") == "track":
                    self._apply_adjustment(layer, self.session, entry["track"])
            elif entry.get("saved"):
                if name in check.missing:
                    continue
                try:
                    volume = load_volume(path.parent / entry["saved"])
                except InputError as exc:
                    problems.append(f"{name}: {one_line(exc)}")
                    continue
                volume = volume.replace(modality="SEG", unit="label", name=name)
                if entry.get("label_names"):
                    volume.metadata["label_names"] = {int(k): v for k, v in entry["label_names"].items()}
                data, kwargs, _ = volume_layer_data(volume, reference=self.reference, as_labels=True)
                existing = [ly for ly in self.viewer.layers if ly.name == name]
                if not self._may_replace(existing, f"replacing {name!r} by the saved one"):
                    problems.append(f"{name}: kept the layer open now (edited, not saved) instead of the saved one")
                    continue
                for old in existing:
                    self.viewer.layers.remove(old)
                layer = self.viewer.add_labels(data, **kwargs)
            else:
                continue
            _apply_props(layer, entry)
            order.append(layer)
        # the saved layer order
        for target, layer in enumerate(order):
            current = self.viewer.layers.index(layer)
            if current != target and target < len(self.viewer.layers):
                self.viewer.layers.move(current, target)
        self._apply_parameters(state.get("parameters") or {})
        self._apply_view(state.get("view") or {})
        message = check.message()
        if problems:
            message = "; ".join([m for m in (message, "; ".join(problems)) if m])
        if message:
            self._tell(f"{path.name}: {message}. The rest of the study opened.", "warning")
        else:
            self._tell(f"reopened {path.name}: day {self.study.day(self.subject, self.session):g}"
                       if self.study.day(self.subject, self.session) is not None else f"reopened {path.name}")
        self.refresh_findings()
        return check

    # ------------------------------------------------------------------ parameters and view
    def state_parameters(self) -> dict:
        """This dock's own parameters (saved in the study state)."""
        return {"link_windows": self.link_windows.isChecked(), "three_plane": self.three_plane is not None,
                "plane": self.plane_combo.currentText()}

    def set_state_parameters(self, params: dict) -> None:
        if "link_windows" in params:
            self.link_windows.setChecked(bool(params["link_windows"]))
        if params.get("plane") in PLANES:
            self.set_plane(params["plane"])
        if "three_plane" in params:
            self.set_three_plane(bool(params["three_plane"]))

    def _plugin_docks(self) -> Dict[str, QWidget]:
        """{dock name: inner widget} of the docked widgets (this one included)."""
        docks = getattr(self.viewer.window, "dock_widgets", {}) or {}  # napari 0.9: the inner widgets
        return {str(name): getattr(inner, "native", inner) for name, inner in dict(docks).items()}

    def _collect_parameters(self) -> dict:
        params = {"Study": self.state_parameters()}
        for name, widget in self._plugin_docks().items():
            if widget is self or isinstance(widget, ThreePlaneView):
                continue
            try:
                if hasattr(widget, "state_parameters"):
                    params[name] = dict(widget.state_parameters())
                else:
                    values = _widget_values(widget)
                    if values:
                        params[name] = values
            except Exception:  # noqa: BLE001 - a widget we cannot read is simply not saved
                continue
        return params

    def _apply_parameters(self, params: dict) -> None:
        if isinstance(params.get("Study"), dict):
            self.set_state_parameters(params["Study"])
        docks = self._plugin_docks()
        for name, values in params.items():
            widget = docks.get(name)
            if widget is None or widget is self or not isinstance(values, dict):
                continue
            try:
                if hasattr(widget, "set_state_parameters"):
                    widget.set_state_parameters(values)
                else:
                    _set_widget_values(widget, values)
            except Exception:  # noqa: BLE001
                continue

    def _view_state(self) -> dict:
        camera = viewer_camera(self.viewer)
        return {"ndisplay": int(self.viewer.dims.ndisplay), "order": [int(o) for o in self.viewer.dims.order],
                "point": [float(p) for p in self.viewer.dims.point],
                "camera": {"center": [float(c) for c in camera.center], "zoom": float(camera.zoom),
                           "angles": [float(a) for a in camera.angles]}}

    def _apply_view(self, view: dict) -> None:
        if view.get("ndisplay") in (2, 3):
            self.set_ndisplay(view["ndisplay"])
        order = view.get("order")
        if isinstance(order, list) and sorted(order) == list(range(self.viewer.dims.ndim)):
            self.viewer.dims.order = tuple(order)
        point = view.get("point")
        if isinstance(point, list) and len(point) == self.viewer.dims.ndim:
            self.viewer.dims.point = tuple(point)
        camera = view.get("camera") or {}
        with contextlib.suppress(Exception):
            if camera.get("zoom"):
                viewer_camera(self.viewer).zoom = float(camera["zoom"])
            if camera.get("center"):
                viewer_camera(self.viewer).center = tuple(camera["center"])
            if camera.get("angles"):
                viewer_camera(self.viewer).angles = tuple(camera["angles"])

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the background preparation and release the key bindings."""
        for future in self._cache.values():
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for key in getattr(self, "_bound", []):
            with contextlib.suppress(Exception):
                self.viewer.bind_key(key, None, overwrite=True)
        self._bound = []
        if self.three_plane is not None:
            self.three_plane.close_view()


def _layer_named(viewer, name: str):
    """The viewer's layer of that name, or None (it may have been removed or renamed)."""
    try:
        return viewer.layers[name]
    except (KeyError, ValueError):
        return None


def _apply_props(layer, entry: dict) -> None:
    """Display settings of a state entry onto a layer (unknown or invalid ones are skipped)."""
    if "colormap" in entry and type(layer).__name__ == "Image":
        with contextlib.suppress(Exception):
            layer.colormap = entry["colormap"]
    if "contrast_limits" in entry and type(layer).__name__ == "Image":
        with contextlib.suppress(Exception):
            lo, hi = (float(v) for v in entry["contrast_limits"])
            r = layer.contrast_limits_range
            layer.contrast_limits_range = (min(lo, r[0]), max(hi, r[1]))
            layer.contrast_limits = (lo, hi)
    for prop in ("opacity", "blending", "gamma", "contour", "visible"):
        if prop in entry and hasattr(layer, prop):
            with contextlib.suppress(Exception):
                setattr(layer, prop, entry[prop])


def _widget_values(widget) -> dict:
    """Generic parameters of a widget: the values of its spin boxes, check boxes, combo boxes and line edits."""
    from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit

    values = {}
    counts: Dict[str, int] = {}
    for child in widget.findChildren(QWidget):
        if isinstance(child, QAbstractSpinBox) and hasattr(child, "value"):
            value = child.value()
        elif isinstance(child, QCheckBox):
            value = child.isChecked()
        elif isinstance(child, QComboBox):
            value = child.currentText()
        elif isinstance(child, QLineEdit) and not isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            value = child.text()
        else:
            continue
        kind = type(child).__name__
        key = child.objectName() or f"{kind}{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        values[key] = value
    return values


def _set_widget_values(widget, values: dict) -> None:
    from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit

    counts: Dict[str, int] = {}
    for child in widget.findChildren(QWidget):
        if not isinstance(child, (QAbstractSpinBox, QCheckBox, QComboBox, QLineEdit)):
            continue
        if isinstance(child, QLineEdit) and isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            continue
        if isinstance(child, QAbstractSpinBox) and not hasattr(child, "value"):
            continue
        kind = type(child).__name__
        key = child.objectName() or f"{kind}{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        if key not in values:
            continue
        value = values[key]
        with contextlib.suppress(Exception):
            if isinstance(child, QAbstractSpinBox):
                child.setValue(value)
            elif isinstance(child, QCheckBox):
                child.setChecked(bool(value))
            elif isinstance(child, QComboBox):
                if child.findText(str(value)) >= 0:
                    child.setCurrentText(str(value))
            else:
                child.setText(str(value))


__all__ = ["StudyWidget", "ThreePlaneView", "render_plane", "prepare_file", "prepare_session", "label_findings",
           "suv_display_factor", "preset_limits", "preset_group", "PRESETS", "DEFAULT_SHOWN"]
