"""Quantitative readouts in napari (thin; the science is in :mod:`..analysis.pet`,
:mod:`..analysis.roi`).

:class:`ReadoutWidget` (dock)
    Choose an ROI Labels layer (drawn on any grid, e.g. the MRI) and the
    quantitative image layers (PET, SPECT, 19F, MPI, ...). For every ROI
    label and every chosen layer the table gives the statistics in physical
    units, computed on each image's own grid (the ROIs are carried to it with
    partial-voxel weights); PET/SPECT layers add SUV, SUVpeak, total
    activity and %ID. The table is recomputed when the ROI layer is painted.
    A header panel shows the PET's quantitative DICOM fields; dose, weight,
    height, sex and times can be edited (the edits are recorded in the
    exported provenance). A bar chart shows one metric per ROI; "Export CSV"
    writes the table with its provenance. With a study open, the ROI (the organ
    atlas of the day shown) and the ticked layers (that day's PET, SPECT, 19F and
    MPI) follow the Study dock's timepoint until the user chooses (pinned); 19F is
    calibrated in mM on the day's reference tube when its sidecar allows. The table
    shows organ names and units (:mod:`.readable`), above a chart of readable height.
:class:`CursorReadoutWidget` (dock)
    Every layer's value under the mouse, read from the layer's native
    volume, in its unit (and SUVbw for PET layers whose header allows it);
    label layers by name ("4 spleen"). Said again after every timepoint step.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.pet import PET_PARAMETERS, SUV_TYPES
from ..errors import InputError, one_line
from ..volume import Volume, napari_to_ras
from ._common import (
    AUTO,
    FOLLOWS,
    PINNED,
    Coalesced,
    LayerPickers,
    RunRow,
    debounce_timer,
    fill_combo,
    follow_layers,
    is_nuclear,
    layer_to_volume,
    layers_of,
    notify_error,
    same_layer,
    save_dialog,
    suv_display_factor,
    table_widget,
)
from ._dock import PluginDock, scroll_to
from .readable import column_header, label_text, nuclide_text
from .roles import listen_for_steps

#: Smallest heights (px) of the results table (about six rows) and of the chart (axes, labels and names).
TABLE_MIN_HEIGHT, CHART_MIN_HEIGHT = 180, 260

#: Events of the ROI layer that recompute a live readout (the user's brush, fill, eraser or new labels); a
#: timepoint step also swaps the layer's data, but then the readouts of the new day wait for Compute.
_ROI_EDITS = ("paint", "data", "labels_update")

_QUANT_MODALITIES = ("PT", "NM", "F19", "MPI", "CT", "MR", "OPT", "OT")
#: Header fields the user may edit: (override key, label, unit shown).
EDITABLE = (
    ("dose_mbq", "Injected dose (MBq)"),
    ("weight_kg", "Weight (kg)"),
    ("height_cm", "Height (cm)"),
    ("sex", "Sex (M/F/O)"),
    ("injection_time", "Injection (ISO date-time)"),
    ("scan_time", "Scan reference (ISO date-time)"),
)

#: Keys under which study states saved before the parameter model stored this dock's values
#: (read from its widgets in order; the header fields under their own names): what they mean now.
_LEGACY_STATE_KEYS = {
    "QComboBox0": "roi",
    "QComboBox1": "suv_type",
    "QComboBox2": "pvc",
    "QLineEdit0": "psf_fwhm",
    "QComboBox3": "header_layer",
    "QComboBox4": "metric",
}


def _study_session(layer) -> str | None:
    """The Study session a layer holds now (None for a layer not from the Study dock)."""
    return (getattr(layer, "metadata", None) or {}).get("immunotrack", {}).get("study_session")


def _guess_roi(key: str, names) -> str | None:
    """The organ ROI among Labels layers opened by hand: not a reference-tube mask (outside most images)."""
    from .roles import guess_by_name

    organs = [n for n in names if not any(w in n.lower() for w in ("reftube", "tube", "reference", "mask"))]
    return guess_by_name("roi", organs) or (organs[0] if organs else None)


def unit_slug(unit: str) -> str:
    """Column suffix of a unit: "Bq/mL" -> "bq_ml", "a.u." -> "au", "ng Fe" -> "ng_fe".

    Parameters
    ----------
    unit : str
        A unit as Volumes carry it.

    Returns
    -------
    str
        Lower case, dots dropped, every other run of non-alphanumerics one underscore; ``"au"`` when
        nothing is left.

    Examples
    --------
    >>> unit_slug("Bq/mL"), unit_slug("a.u."), unit_slug("ng Fe"), unit_slug("")
    ('bq_ml', 'au', 'ng_fe', 'au')
    """
    slug = re.sub(r"[^a-z0-9]+", "_", str(unit).lower().replace(".", "")).strip("_")
    return slug or "au"


def _label_names(volume: Volume) -> dict:
    names = volume.metadata.get("label_names") or {}
    out = {}
    for k, v in dict(names).items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError):
            continue
    return out


def readout_table(
    rois: Volume,
    layers,
    *,
    suv_type: str = "bw",
    overrides: dict | None = None,
    progress=None,
    pvc: str = "none",
    psf_fwhm=None,
    pet_parameters: dict | None = None,
    references: dict | None = None,
):
    """Per-ROI statistics of several quantitative volumes (GUI-free; the widget's computation).

    Parameters
    ----------
    rois : Volume
        Labels on any grid (0 = background); names from its ``label_names`` metadata.
    layers : list of (name, Volume)
        The 3D images to read (a 4D one raises InputError).
    suv_type : str, default "bw"
        SUV type reported for PET/SPECT layers (besides bw).
    overrides : dict, optional
        {layer name: read_pet_header keyword overrides} (the header panel's edits).
    progress : callable, optional
        ``progress(fraction, message)``.
    pvc, psf_fwhm : str, optional
        Partial-volume correction ("none", "gtm", "rbv") and PSF FWHM (mm) when the layer's
        header has none: adds ``<column>_pvc`` and ``recovery_coefficient`` (docs/methods/pvc.md).
    pet_parameters : dict, optional
        Parameters of :data:`~napari_immunotrack.analysis.pet.PET_PARAMETERS` for the PET/SPECT
        layers (the model's defaults for those left out).
    references : dict, optional
        {layer name: reference-tube mask Volume} of 19F layers. A 19F layer whose sidecar gives the
        tube's concentration and the atoms per cell (:func:`.readable.fluorine_calibration`) is then
        calibrated as ``immunotrack fluorine`` does it (:func:`~napari_immunotrack.analysis.fluorine.fluorine_cells`,
        docs/methods/fluorine.md): unit mM, ``mean_mm`` (mean 19F concentration), ``fluorine_atoms``,
        ``cell_count`` and their limits. Without one the 19F stays in the scanner's unit (a.u.), said in
        ``status``.

    Returns
    -------
    pandas.DataFrame
        Long table: layer, unit, label, name, then statistics whose column names
        carry the unit (mean_bq_ml, suv_bw_mean, mean_au, ...), and status.
        ``attrs["warnings"]``, ``attrs["pvc"]`` and ``attrs["headers"]`` (per PET layer).

    Examples
    --------
    >>> rois = np.zeros((4, 4, 4), np.uint8); rois[:2] = 1; rois[2:] = 2
    >>> t2 = Volume(np.concatenate([np.full((2, 4, 4), 100.0), np.full((2, 4, 4), 40.0)]), np.eye(4), "MR")
    >>> labels = Volume(rois, np.eye(4), "SEG", metadata={"label_names": {1: "muscle", 2: "tumour"}})
    >>> table = readout_table(labels, [("T2w", t2)])
    >>> table[["layer", "unit", "label", "name", "voxels", "mean_au", "status"]]
      layer  unit  label    name  voxels  mean_au status
    0   T2w  a.u.      1  muscle      32    100.0     ok
    1   T2w  a.u.      2  tumour      32     40.0     ok
    >>> table.attrs["warnings"]
    []
    """
    import pandas as pd

    from .. import progress as _progress
    from ..analysis import pet as pet_mod
    from ..analysis.roi import roi_statistics

    overrides = overrides or {}
    names = _label_names(rois)
    frames, warns, headers, pvc_prov = [], [], {}, {}
    for i, (lname, vol) in enumerate(layers):
        sub = _progress.scaled(progress, i / len(layers), (i + 1) / len(layers))
        if vol.data.ndim != 3:
            raise InputError(f"layer {lname!r} is 4D; ROI readouts need a 3D image.")
        status = "ok"
        df = None
        if is_nuclear(vol):
            header = pet_mod.read_pet_header(vol, **overrides.get(lname, {}))
            headers[lname] = header.as_dict()
            try:
                df = pet_mod.quantify_pet(
                    vol,
                    rois,
                    suv_types=(suv_type,),
                    header=header,
                    progress=sub,
                    label_names=names,  # per-organ densities for %ID/g
                    **(pet_parameters or {}),
                )
                unit = "Bq/mL"
            except InputError as exc:  # no SUV possible: still give Bq/mL (or the raw unit), say why
                status = f"no SUV: {one_line(exc)}"
                try:
                    conc = pet_mod.activity_concentration(vol, header)
                except InputError:
                    conc = vol
                unit = conc.unit
                df = None
                vol = conc
        if df is None and vol.modality == "F19":
            df, status = _fluorine_readout(lname, vol, rois, (references or {}).get(lname), sub)
            if df is not None:
                unit = "mM"
                warns.extend(df.attrs.get("warnings", []))
        if df is None:
            stats = roi_statistics(vol, rois, progress=sub)
            unit = vol.unit
            slug = unit_slug(unit)
            df = pd.DataFrame({"label": stats["label"], "voxels": stats["voxels"], "volume_ml": stats["volume_ml"]})
            for s in ("mean", "sd", "min", "median", "max", "peak"):
                df[f"{s}_{slug}"] = stats[s]
            df[f"integral_{slug}_ml"] = stats["integral"]
            warns.extend(stats.attrs.get("warnings", []))
        elif unit != "mM":
            warns.extend(df.attrs.get("warnings", []))
        if pvc != "none":  # partial-volume corrected columns, computed on the image the table read
            from ..analysis.pvc import add_readout_pvc

            image = vol if status != "ok" or not is_nuclear(vol) else pet_mod.activity_concentration(vol, header)
            df, pvc_prov[lname] = add_readout_pvc(df, image, rois, pvc, psf_fwhm)
            warns.extend(df.attrs.get("warnings", []))
        df.insert(0, "unit", unit)
        df.insert(0, "layer", lname)
        df.insert(3, "name", [names.get(int(v), "") for v in df["label"]])
        df["status"] = df.pop("_status") if "_status" in df.columns else status
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs["warnings"] = list(dict.fromkeys(warns))
    out.attrs["pvc"] = pvc_prov  # method, PSF and conditioning per layer (provenance)
    out.attrs["headers"] = headers
    return out


def _fluorine_readout(lname: str, vol: Volume, rois: Volume, reference, progress):
    """(table, status) of a 19F layer calibrated on its reference tube, or (None, why not)."""
    from ..analysis.fluorine import fluorine_cells
    from .readable import fluorine_calibration, fluorine_mm

    calibration = fluorine_calibration(vol)
    if calibration is None:
        return None, "uncalibrated (a.u.): the 19F sidecar gives no ReferenceConcentration_mM / FluorineAtomsPerCell"
    if reference is None:
        return None, "uncalibrated (a.u.): no reference-tube mask of this timepoint"
    df = fluorine_cells(vol, rois, reference, progress=progress, **calibration).copy()
    df.insert(df.columns.get_loc("volume_ml") + 1, "mean_mm", fluorine_mm(df["fluorine_atoms"], df["volume_ml"]))
    if "status" in df.columns:  # per ROI ("ok", "below detection limit"): kept as the table's status
        df = df.rename(columns={"status": "_status"})
    return df, "ok"


def cursor_values(viewer, position) -> list:
    """[(layer name, value, unit)] of every visible image/labels layer at a napari world position (S, A, R).

    A layer's Volume is the one in its metadata, else it is rebuilt from the layer (2D and RGB layers are
    skipped); a 4D layer is read at the viewer's current step of axis 0.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        Anything with ``layers`` and ``dims``.
    position : sequence of float
        The cursor's world position in napari order; its last three values are (S, A, R) mm.

    Returns
    -------
    list of tuple
        ``(layer name, value as float or None outside the layer, unit)``, in layer order.

    Examples
    --------
    >>> from napari.components import ViewerModel
    >>> from napari_immunotrack.volume import Volume
    >>> viewer = ViewerModel()
    >>> vol = Volume(np.arange(27.0).reshape(3, 3, 3), np.eye(4), "PT", unit="Bq/mL")
    >>> _ = viewer.add_image(vol.data, name="PET", metadata={"volume": vol})
    >>> cursor_values(viewer, [2.0, 1.0, 0.0])  # S=2, A=1, R=0 mm: voxel (0, 1, 2)
    [('PET', 5.0, 'Bq/mL')]
    >>> cursor_values(viewer, [0.0, 0.0, 9.0])
    [('PET', None, 'Bq/mL')]
    """
    ras = napari_to_ras(np.asarray(position, float)[-3:])
    out = []
    for layer in viewer.layers:
        kind = type(layer).__name__
        if kind not in ("Image", "Labels") or not layer.visible:
            continue
        vol = layer.metadata.get("volume") if hasattr(layer, "metadata") else None
        if vol is None:
            try:
                vol = layer_to_volume(layer, native=False)
            except Exception:  # a 2D or RGB layer: no value in world mm
                continue
        idx = np.round(vol.world_to_index(ras)[0]).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.array(vol.spatial_shape)):
            out.append((layer.name, None, vol.unit))
            continue
        data = vol.data
        if data.ndim == 4:
            step = int(viewer.dims.current_step[0]) if viewer.dims.ndim >= 4 else 0
            value = data[min(step, data.shape[0] - 1)][tuple(idx)]
        else:
            value = data[tuple(idx)]
        out.append((layer.name, float(np.asarray(value)), vol.unit))
    return out


class ReadoutWidget(PluginDock):
    """Dock widget: per-ROI readouts of quantitative layers, header panel, bar chart, CSV export."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        self.table = None  # the last DataFrame
        self.overrides: dict = {}
        self._roi_layer = None
        self._live = False
        self._shown_header: dict = {}

        layout = QVBoxLayout(self)
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        # the ROI follows the Study dock's timepoint (the organ atlas of that day) unless pinned
        self.pickers = LayerPickers(
            napari_viewer, form, (("roi", "ROI labels", False, ("Labels",)),), guess=_guess_roi, roles={"roi": "roi"}
        )
        self.roi_combo = self.pickers.combos["roi"]
        self.layer_list = QListWidget()
        self.layer_list.setMaximumHeight(110)
        self.layers_pin = QToolButton()
        self.layers_pin.setCheckable(True)
        self.layers_pin.setObjectName("layers_pin")
        self._layers_pinned: list = []  # the layers the user ticked (pinned), by identity
        self.suv_combo = QComboBox()
        self.suv_combo.addItems(list(SUV_TYPES))
        #: the PET/SPECT parameters of PET_PARAMETERS (not shown: the model's defaults, or a reopened state's)
        self.other_parameters = PET_PARAMETERS.defaults()
        list_row = QHBoxLayout()
        list_row.addWidget(self.layer_list, 1)
        list_row.addWidget(self.layers_pin, 0, Qt.AlignmentFlag.AlignTop)
        form.addRow("Quantitative layers", list_row)
        form.addRow("SUV type", self.suv_combo)
        self.pvc_combo = QComboBox()  # partial-volume correction (docs/methods/pvc.md)
        self.pvc_combo.addItems(["none", "gtm", "rbv"])
        self.psf_edit = QLineEdit()
        self.psf_edit.setPlaceholderText("header, else modality default (x,y,z mm)")
        form.addRow("Partial-volume correction", self.pvc_combo)
        form.addRow("PSF FWHM (mm)", self.psf_edit)
        layout.addWidget(box)

        self.header_box = QGroupBox("PET/SPECT header")
        hform = QFormLayout(self.header_box)
        self.header_layer_combo = QComboBox()
        hform.addRow("Layer", self.header_layer_combo)
        self.header_info = QLabel("")
        self.header_info.setWordWrap(True)
        hform.addRow(self.header_info)
        # the editable fields fold away: the readouts need the room more often than the header edits do
        self.header_edit_toggle = QToolButton()
        self.header_edit_toggle.setText("edit dose, weight, times...")
        self.header_edit_toggle.setCheckable(True)
        self.header_edit_box = QWidget()
        eform = QFormLayout(self.header_edit_box)
        eform.setContentsMargins(0, 0, 0, 0)
        self.header_edits = {}
        for key, label in EDITABLE:
            edit = QLineEdit()
            edit.setObjectName(key)
            self.header_edits[key] = edit
            eform.addRow(label, edit)
        self.apply_header = QPushButton("Apply edits")
        eform.addRow(self.apply_header)
        self.header_edit_box.setVisible(False)
        self.header_edit_toggle.toggled.connect(self.header_edit_box.setVisible)
        hform.addRow(self.header_edit_toggle)
        hform.addRow(self.header_edit_box)
        layout.addWidget(self.header_box)

        self.run_row = RunRow(layout, "Compute", on_run=self.run, owner=self)  # run_button, status, runner...
        # the results: the table (every row) above the chart, in a splitter the user can drag; both keep a
        # height at which they can be read (a chart squeezed to a few pixels tells nothing)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.results = QSplitter(Qt.Orientation.Vertical)
        self.results.setObjectName("results")
        self.results.setChildrenCollapsible(False)
        self.table_view = table_widget(_empty_frame())
        self.table_view.setMinimumHeight(TABLE_MIN_HEIGHT)
        self.results.addWidget(self.table_view)
        chart = QWidget()
        chart_layout = QVBoxLayout(chart)
        chart_layout.setContentsMargins(0, 0, 0, 0)
        chart_row = QHBoxLayout()
        self.metric_combo = QComboBox()
        chart_row.addWidget(QLabel("Chart"))
        chart_row.addWidget(self.metric_combo, 1)
        chart_layout.addLayout(chart_row)
        self.figure = Figure(figsize=(4, 3.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(CHART_MIN_HEIGHT)
        chart_layout.addWidget(self.canvas, 1)
        self.results.addWidget(chart)
        layout.addWidget(self.results, 1)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.setEnabled(False)
        layout.addWidget(self.export_button)
        self.dicom_button = QPushButton("Export DICOM SEG + SR...")
        self.dicom_button.setToolTip(
            "the ROIs as a DICOM SEG on the PET/SPECT series and the readouts as a "
            "TID 1500 SR referencing it (for PACS, 3D Slicer, OHIF)"
        )
        self.dicom_button.setEnabled(False)
        layout.addWidget(self.dicom_button)

        self._timer = debounce_timer(self, 400, self._rerun_after_edit)
        self.apply_header.clicked.connect(self._apply_header_edits)
        self.export_button.clicked.connect(self._export_dialog)
        self.dicom_button.clicked.connect(self._export_dicom_dialog)
        self.metric_combo.currentTextChanged.connect(self._draw_chart)
        self.roi_combo.currentTextChanged.connect(self._watch_roi_layer)
        self.header_layer_combo.currentTextChanged.connect(self._show_header)
        self.layer_list.itemChanged.connect(self._layers_ticked)
        self.layers_pin.clicked.connect(self._layers_pin_clicked)
        self._later = Coalesced(self, self._refresh_choices)
        follow_layers(self.viewer, self._refresh_choices, on_rename=self._later)
        listen_for_steps(self.viewer, self._refresh_choices)

    # ------------------------------------------------------------------ choices
    def _following_layers(self, images) -> set:
        """The quantitative layers of the study's current timepoint (PET, SPECT, 19F, MPI), else every
        layer of a quantitative modality (files opened by hand)."""
        from .roles import QUANTITATIVE_ROLES, assign_roles, layer_facts, study_context

        facts = [layer_facts(ly) for ly in self.viewer.layers]
        if study_context(facts).current is not None:
            chosen = assign_roles({r: r for r in QUANTITATIVE_ROLES}, facts)
            return {n for n in chosen.values() if n}
        return {
            ly.name
            for ly in images
            if ly.metadata.get("volume") is not None and ly.metadata["volume"].modality in ("PT", "NM", "F19", "MPI")
        }

    def _refresh_choices(self, event=None) -> None:
        self._later.pending = False
        self.pickers.refresh()
        images = layers_of(self.viewer, ("Image",))
        pinned = [ly for ly in self._layers_pinned if any(same_layer(ly, im) for im in images)]
        self._layers_pinned = pinned
        on = {ly.name for ly in pinned} if pinned else self._following_layers(images)
        self.layer_list.blockSignals(True)
        self.layer_list.clear()
        for ly in images:
            item = QListWidgetItem(ly.name)
            item.setCheckState(_checked(ly.name in on))
            self.layer_list.addItem(item)
        self.layer_list.blockSignals(False)
        self.layers_pin.setChecked(bool(pinned))
        self.layers_pin.setText(PINNED if pinned else (FOLLOWS if self.pickers.context.current else AUTO))
        self.layers_pin.setToolTip(
            "pinned: the ticked layers stay when the timepoint changes; click to follow the study again"
            if pinned
            else "the current timepoint's PET, SPECT, 19F and MPI are ticked (tick others to pin your choice)"
        )
        nuclear = [ly for ly in images if ly.metadata.get("volume") is not None and is_nuclear(ly.metadata["volume"])]
        # PET first: its header is the one most often checked (the SPECT's follows in the list)
        pets = [ly.name for ly in sorted(nuclear, key=lambda ly: ly.metadata["volume"].modality != "PT")]
        fill_combo(self.header_layer_combo, pets)
        self.header_box.setVisible(bool(pets))
        self._watch_roi_layer()
        self._show_header()
        self._say_if_stale()

    def _say_if_stale(self) -> None:
        """After a step, say that the table shown is another timepoint's (the user asks for this one)."""
        now = self.pickers.context.when() if self.pickers.context is not None else None
        computed = getattr(self, "_computed_when", None)
        if self.table is not None and now and computed and computed != now:
            self.status.setText(f"the results below are of {computed}; press Compute for {now}.")

    def _layers_ticked(self, item=None) -> None:
        """A tick by the user pins the ticked layers (kept when the timepoint changes)."""
        ticked = set(self.selected_layers())
        self._layers_pinned = [ly for ly in layers_of(self.viewer, ("Image",)) if ly.name in ticked]
        self.layers_pin.setChecked(True)
        self.layers_pin.setText(PINNED)

    def _layers_pin_clicked(self, on: bool) -> None:
        if on:
            self._layers_ticked()
        else:
            self._layers_pinned = []
            self._refresh_choices()

    def _fresh(self) -> None:
        if self._later.pending:
            self._refresh_choices()  # a step not yet shown: never compute on the old day's layers

    def selected_layers(self) -> list:
        return [
            self.layer_list.item(i).text()
            for i in range(self.layer_list.count())
            if self.layer_list.item(i).checkState() == _checked(True)
        ]

    def select(self, roi: str | None = None, layers=None) -> None:
        """Choose inputs by layer name (for scripts and tests)."""
        if roi is not None:
            if self.roi_combo.findText(roi) < 0:
                raise InputError(f"no Labels layer named {roi!r}.")
            self.pickers.select(roi=roi)
        if layers is not None:
            self.layer_list.blockSignals(True)
            for i in range(self.layer_list.count()):
                item = self.layer_list.item(i)
                item.setCheckState(_checked(item.text() in layers))
            self.layer_list.blockSignals(False)
            self._layers_ticked()

    def parameters(self) -> dict:
        """The PET/SPECT readout's parameters as a ``pet`` batch step takes them (suv_types, pvc,
        psf_fwhm and every parameter of :data:`~napari_immunotrack.analysis.pet.PET_PARAMETERS`)."""
        return {
            "suv_types": [self.suv_combo.currentText()],
            "pvc": self.pvc_combo.currentText(),
            "psf_fwhm": self.psf_edit.text().strip() or None,
            **self.other_parameters,
        }

    # ------------------------------------------------------------------ study state (through the model)
    def state_parameters(self) -> dict:
        """What the study state saves of this dock: the PET model's values, the options, the chosen layers."""
        state = PET_PARAMETERS.to_state(self.other_parameters)
        state.update(
            suv_type=self.suv_combo.currentText(),
            pvc=self.pvc_combo.currentText(),
            psf_fwhm=self.psf_edit.text(),
            roi=self.roi_combo.currentText(),
            layers=self.selected_layers(),
            header_layer=self.header_layer_combo.currentText(),
            header_edits={key: edit.text() for key, edit in self.header_edits.items()},
            metric=self.metric_combo.currentText(),
        )
        return state

    def set_state_parameters(self, values: dict) -> None:
        """Show a saved state's values: missing PET parameters take the model's default, bad ones are reported."""
        values = {_LEGACY_STATE_KEYS.get(k, k): v for k, v in dict(values).items()}
        params, problems = PET_PARAMETERS.from_state(values)
        self.other_parameters = params
        for combo, key in (
            (self.suv_combo, "suv_type"),
            (self.pvc_combo, "pvc"),
            (self.roi_combo, "roi"),
            (self.header_layer_combo, "header_layer"),
            (self.metric_combo, "metric"),
        ):
            if key in values and combo.findText(str(values[key])) >= 0:
                combo.setCurrentText(str(values[key]))
        if "psf_fwhm" in values:
            self.psf_edit.setText(str(values["psf_fwhm"] or ""))
        if isinstance(values.get("layers"), list):
            self.select(layers=[str(n) for n in values["layers"]])
        edits = values.get("header_edits") or {k: values[k] for k in self.header_edits if k in values}
        for key, text in dict(edits).items():
            if key in self.header_edits:
                self.header_edits[key].setText(str(text))
        if problems:
            notify_error(InputError("Quantitative readouts: " + "; ".join(problems) + " (the default is used)."))

    def _watch_roi_layer(self, *args) -> None:
        """Recompute (debounced) when the chosen ROI layer is painted or replaced."""
        try:
            layer = self.pickers.layer("roi")
        except InputError:
            layer = None
        if same_layer(layer, self._roi_layer) or (layer is None and self._roi_layer is None):
            return
        for old in [self._roi_layer] if self._roi_layer is not None else []:
            for ev in _ROI_EDITS:
                emitter = getattr(old.events, ev, None)
                if emitter is not None:
                    try:
                        emitter.disconnect(self._roi_edited)
                    except (TypeError, ValueError, RuntimeError):
                        pass
        self._roi_layer = layer
        if layer is not None:
            for ev in _ROI_EDITS:
                emitter = getattr(layer.events, ev, None)
                if emitter is not None:
                    emitter.connect(self._roi_edited)

    def _rerun_after_edit(self) -> None:
        """Recompute after the ROIs were edited, not after a timepoint step swapped them (the user asks)."""
        try:
            layer = self.pickers.layer("roi")
        except InputError:
            return
        if layer is not None and _study_session(layer) == getattr(self, "_roi_session", None):
            self.run()

    def _roi_edited(self, event=None) -> None:
        if self._live:  # live once a first readout was asked for
            self._timer.start()

    # ------------------------------------------------------------------ header panel
    def _header_volume(self) -> Volume | None:
        name = self.header_layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name].metadata.get("volume")

    def _show_header(self, *args) -> None:
        from ..analysis.pet import read_pet_header

        vol = self._header_volume()
        name = self.header_layer_combo.currentText()
        if vol is None:
            return
        try:  # quiet: the guesses are listed in the panel itself
            h = read_pet_header(vol, quiet=True, **self.overrides.get(name, {}))
        except InputError as exc:
            self.header_info.setText(one_line(exc))
            return
        problems = "; ".join(h.problems)
        dec = h.decayed_dose_bq
        info = [
            f"Units {h.units or '?'}, DecayCorrection {h.decay_correction or '?'}, "
            + nuclide_text(h.radionuclide, h.half_life_s, h.sources.get("radionuclide")),
            f"decayed dose {dec / 1e6:.4g} MBq at {h.reference_time}" if dec else "decayed dose: unknown",
        ]
        if h.warnings:
            info.append("guesses: " + "; ".join(h.warnings))
        if problems:
            info.append("problems: " + problems)
        if h.overrides:
            info.append("edited: " + ", ".join(sorted(h.overrides)))
        self.header_info.setText("\n".join(info))
        values = {
            "dose_mbq": f"{h.dose_bq / 1e6:.6g}" if h.dose_bq else "",
            "weight_kg": f"{h.weight_kg:.6g}" if h.weight_kg else "",
            "height_cm": f"{h.height_m * 100:.6g}" if h.height_m else "",
            "sex": h.sex or "",
            "injection_time": h.injection_time.isoformat() if h.injection_time else "",
            "scan_time": h.reference_time.isoformat()
            if h.reference_time and h.decay_correction != "ADMIN"
            else (h.series_time.isoformat() if h.series_time else ""),
        }
        self._shown_header = values
        for key, edit in self.header_edits.items():
            edit.setText(values.get(key, ""))

    def _apply_header_edits(self) -> None:
        """Turn the edited fields into overrides of the chosen PET layer's header, then recompute."""
        try:
            self.set_header_edits(
                **{
                    k: e.text().strip()
                    for k, e in self.header_edits.items()
                    if e.text().strip() != self._shown_header.get(k, "")
                }
            )
        except InputError as exc:
            notify_error(exc)
            return
        if self.table is not None:
            self.run()

    def set_header_edits(self, layer: str | None = None, **fields) -> dict:
        """Record user edits (dose_mbq, weight_kg, height_cm, sex, injection_time, scan_time) for a PET layer."""
        name = layer or self.header_layer_combo.currentText()
        if not name:
            raise InputError("no PET/SPECT layer to edit.")
        current = dict(self.overrides.get(name, {}))
        for key, value in fields.items():
            if key not in dict(EDITABLE):
                raise InputError(f"{key!r} is not an editable header field.")
            if value in ("", None):
                current.pop(key, None)
                continue
            if key in ("dose_mbq", "weight_kg", "height_cm"):
                try:
                    value = float(value)
                except ValueError:
                    raise InputError(f"{dict(EDITABLE)[key]} must be a number, not {value!r}.") from None
                if not value > 0:
                    raise InputError(f"{dict(EDITABLE)[key]} must be positive.")
            if key == "sex":
                value = str(value).upper()[:1]
                if value not in ("M", "F", "O"):
                    raise InputError("sex must be M, F or O.")
            current[key] = value
        self.overrides[name] = current
        self._show_header()
        return current

    # ------------------------------------------------------------------ computing
    def run(self) -> None:
        if self.run_row.busy():
            return
        try:
            self._fresh()
            roi_layer = self.pickers.layer("roi")
            if roi_layer is None:
                raise InputError("choose an ROI Labels layer (draw ROIs on the anatomy first).")
            names = self.selected_layers()
            if not names:
                raise InputError("tick at least one quantitative layer.")
            rois = layer_to_volume(roi_layer, native=True)
            stored = roi_layer.metadata.get("volume")
            if stored is not None and "label_names" in stored.metadata:
                rois.metadata["label_names"] = stored.metadata["label_names"]
            layers = [(n, layer_to_volume(self.viewer.layers[n])) for n in names]
            references = {n: self._reference_tube(roi_layer) for n, v in layers if v.modality == "F19"}
            references = {n: v for n, v in references.items() if v is not None}
        except InputError as exc:
            self.run_row.fail(exc)
            return
        self._inputs = {"rois": rois, **{n: v for n, v in layers}}
        self._live = True
        self._roi_session = _study_session(roi_layer)
        self._computed_when = self.pickers.context.when() if self.pickers.context is not None else None
        self.status.setText("computing...")
        self.runner.start(
            readout_table,
            rois,
            layers,
            suv_type=self.suv_combo.currentText(),
            overrides={k: dict(v) for k, v in self.overrides.items()},
            pvc=self.pvc_combo.currentText(),
            psf_fwhm=self.psf_edit.text().strip() or None,
            pet_parameters=dict(self.other_parameters),
            references=references,
            on_done=self._done,
            on_error=self._failed,
            guard=True,
        )

    def _reference_tube(self, roi_layer) -> Volume | None:
        """The 19F reference-tube mask of the current timepoint (study role, else a "reftube" Labels layer)."""
        from .roles import assign_roles, guess_by_name, layer_facts

        facts = [layer_facts(ly) for ly in self.viewer.layers]
        name = assign_roles({"tube": "reference_tube"}, facts)["tube"]
        if name is None:
            name = guess_by_name("reference_tube", [ly.name for ly in layers_of(self.viewer, ("Labels",))])
        if name is None or name not in self.viewer.layers or self.viewer.layers[name] is roi_layer:
            return None
        return layer_to_volume(self.viewer.layers[name], native=True)

    def _done(self, result) -> None:
        self.table = result
        self._show_table(result)
        n_roi = result["label"].nunique() if len(result) else 0
        msg = f"{n_roi} ROI(s) x {result['layer'].nunique() if len(result) else 0} layer(s)"
        if len(result) and "status" in result.columns:
            odd = result[result["status"] != "ok"]
            for (layer, status), rows in list(odd.groupby(["layer", "status"], sort=False))[:2]:
                msg += f"; {layer}: {len(rows)} ROI(s) {status}"
        warned = result.attrs.get("warnings") or []
        if warned:
            # one short line; every warning in the tooltip (and in the exported provenance)
            first = warned[0] if len(warned[0]) <= 140 else warned[0][:137] + "..."
            msg += f"; {first}" + (f" (+{len(warned) - 1} more: hover)" if len(warned) > 1 else "")
        self.status.setText(msg)
        self.status.setToolTip("\n".join(warned))
        self.export_button.setEnabled(True)
        self.dicom_button.setEnabled(True)
        # on a short screen the results sit below the fold of the dock's scroll area: bring them into view
        self._scroll_to_results()
        QTimer.singleShot(0, self._scroll_to_results)  # again once the new table is laid out
        self.run_row.run_pending(self.run)

    def _scroll_to_results(self) -> None:
        scroll_to(self.status)  # the status line (what the results are of), the table, as much chart as fits

    def _failed(self, exc) -> None:
        self.run_row.fail(exc)
        self.run_row.run_pending(self.run)

    def _show_table(self, df) -> None:
        from .readable import display_table

        new = table_widget(display_table(df) if len(df) else df)
        new.setMinimumHeight(TABLE_MIN_HEIGHT)
        self.results.replaceWidget(0, new)
        self.table_view.deleteLater()
        self.table_view = new
        from pandas.api.types import is_numeric_dtype

        numeric = [c for c in df.columns if c not in ("label", "voxels") and is_numeric_dtype(df[c])]
        current = self.metric_combo.currentData()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for column in numeric:  # shown with its unit, the table's column name kept as the item's data
            self.metric_combo.addItem(column_header(column), column)
        preferred = [
            c
            for c in (current, f"suv_{self.suv_combo.currentText()}_mean", "percent_id_per_g", "mean_bq_ml", "mean_mm")
            if c in numeric
        ]
        if preferred:
            self.metric_combo.setCurrentIndex(self.metric_combo.findData(preferred[0]))
        self.metric_combo.blockSignals(False)
        self._draw_chart()

    def _draw_chart(self, *args) -> None:
        """Bars of the chosen metric per ROI (organ), one colour per layer."""
        self.figure.clear()
        df, metric = self.table, self.metric_combo.currentData()
        if df is None or metric not in getattr(df, "columns", []):
            self.canvas.draw_idle()
            return
        ax = self.figure.add_subplot(111)
        rows = df[np.isfinite(df[metric].astype(float))]
        layers = list(dict.fromkeys(rows["layer"]))
        labels = list(dict.fromkeys(rows["label"]))
        width = 0.8 / max(1, len(layers))
        colours = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]  # Okabe-Ito
        for i, lname in enumerate(layers):
            sub = rows[rows["layer"] == lname].set_index("label")
            x = [labels.index(k) + i * width for k in sub.index]
            ax.bar(x, sub[metric], width=width, label=lname, color=colours[i % len(colours)])
        names = df.drop_duplicates("label").set_index("label")["name"]
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(labels))])
        ax.set_xticklabels([names.get(k) or f"label {k}" for k in labels], rotation=45, ha="right", fontsize=7)
        units = list(dict.fromkeys(rows["unit"]))
        ylabel = column_header(metric)
        if "(" not in ylabel and not ylabel.startswith(("SUV", "%")) and len(units) == 1:
            ylabel += f" ({units[0]})"
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if len(layers) > 1:
            ax.legend(fontsize=7)
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ export
    def export(self, path, overwrite: bool = False):
        """Write the last table as CSV with its provenance (header edits included)."""
        from .. import provenance
        from ..outputs import write_table

        if self.table is None:
            raise InputError("compute the readouts first.")
        record = provenance.record(
            "readout",
            inputs=getattr(self, "_inputs", {}),
            parameters={
                "suv_type": self.suv_combo.currentText(),
                "roi_layer": self.roi_combo.currentText(),
                "layers": sorted(self.table["layer"].unique().tolist()),
                "header_edits": self.overrides,
            },
            warnings=self.table.attrs.get("warnings", []),
            pet_headers=self.table.attrs.get("headers", {}),
            pvc=self.table.attrs.get("pvc", {}),
        )
        return write_table(self.table, path, provenance=record, overwrite=overwrite)

    def _export_dialog(self) -> None:
        save_dialog(
            self,
            self.status,
            "Save readouts as CSV",
            "readouts.csv",
            "CSV (*.csv)",
            lambda path: self.export(path, overwrite=True),
        )  # the dialog asked before replacing

    def export_dicom(self, seg_path, source, layer: str | None = None, overwrite: bool = False):
        """Write the ROIs as a DICOM SEG on ``source`` (the DICOM series shown as ``layer``) and that layer's
        readouts as a TID 1500 SR beside it (``<seg stem>_sr.dcm``), both with provenance.

        The ROIs are carried into the series' own world: a registered layer is shown moved, so the map from
        the shown grid to the series' grid (same voxels) is applied first (docs/methods/dicom-objects.md).
        Returns the two paths.
        """
        from .. import provenance
        from ..io.dicom_export import build_seg, build_sr, save_dataset, source_series
        from ..outputs import check_output, sidecar_path

        if self.table is None:
            raise InputError("compute the readouts first.")
        quant = sorted(self.table["layer"].unique().tolist())
        layer = layer or (quant[0] if len(quant) == 1 else None)
        if layer not in quant:
            raise InputError(f"choose which layer the series is ({', '.join(quant)}); its readouts go in the SR.")
        seg_path = Path(seg_path)
        sr_path = seg_path.with_name(
            seg_path.name[:-4] + "_sr.dcm" if seg_path.name.lower().endswith(".dcm") else seg_path.name + "_sr.dcm"
        )
        for out in (seg_path, sr_path):
            check_output(out, overwrite)
        shown = self._inputs[layer]
        native, _ = source_series(source)
        if tuple(native.spatial_shape) != tuple(shown.spatial_shape):
            raise InputError(
                f"{source} ({native.spatial_shape}) is not the series shown as {layer!r} "
                f"({shown.spatial_shape}); choose the folder that layer was opened from."
            )
        shown_to_native = native.affine @ np.linalg.inv(shown.affine)  # identity unless registered
        rois = self._inputs["rois"]
        labels = rois.replace(affine=shown_to_native @ rois.affine)
        seg, datasets = build_seg(labels, source, label_names=rois.metadata.get("label_names"))
        rows = self.table[self.table["layer"] == layer]
        sr = build_sr(rows, seg, datasets)
        record = provenance.record(
            "readout dicom export",
            inputs={"source": str(source)},
            parameters={
                "layer": layer,
                "roi_layer": self.roi_combo.currentText(),
                "shown_to_native": np.round(shown_to_native, 9).tolist(),
            },
        )
        save_dataset(seg, seg_path, overwrite=overwrite, provenance=record)
        try:
            save_dataset(sr, sr_path, overwrite=overwrite, provenance=record)
        except BaseException:  # both or neither
            for leftover in (seg_path, sidecar_path(seg_path)):
                leftover.unlink(missing_ok=True)
            raise
        return seg_path, sr_path

    def _export_dicom_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        layer = self.header_layer_combo.currentText() or None
        vol = self.viewer.layers[layer].metadata.get("volume") if layer in self.viewer.layers else None
        start = str((vol.metadata.get("source_path") if vol is not None else None) or "")
        source = QFileDialog.getExistingDirectory(self, "The DICOM series the readouts were made on", start)
        if source:
            save_dialog(
                self,
                self.status,
                "Save the DICOM SEG (the SR goes beside it)",
                "rois_seg.dcm",
                "DICOM (*.dcm)",
                lambda path: self.export_dicom(path, source, layer, overwrite=True),
            )


class CursorReadoutWidget(PluginDock):
    """Dock widget: every layer's value under the mouse, in its unit."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        layout = QVBoxLayout(self)
        self.text = QLabel("move the mouse over the image")
        self.text.setWordWrap(True)
        layout.addWidget(self.text)
        layout.addStretch(1)
        self._suv_cache: dict = {}
        self.viewer.mouse_move_callbacks.append(self._on_move)
        # a timepoint step swaps (and renames) the layers under a still mouse: say the new values at once
        self._after_step = Coalesced(self, self.update_now)
        follow_layers(self.viewer, lambda *_: None, on_rename=self._after_step)
        listen_for_steps(self.viewer, self.update_now)

    def update_now(self) -> str:
        """Describe the values at the cursor's last position, and refresh napari's status line (after a step)."""
        self._after_step.pending = False
        try:
            position = self.viewer.cursor.position
            text = self.describe(position)
        except Exception as exc:  # noqa: BLE001 - a readout never breaks a step
            text = one_line(exc)
        self.text.setText(text)
        try:
            self.viewer.update_status_from_cursor()
        except Exception:  # noqa: BLE001 - napari's own status line: best effort
            pass
        return text

    def _suv_factor(self, layer_name: str, volume: Volume) -> float | None:
        """SUVbw per stored value of a PET layer (None when the header cannot give it); cached per layer."""
        key = (layer_name, id(volume))
        if key not in self._suv_cache:
            self._suv_cache[key] = suv_display_factor(volume)
        return self._suv_cache[key]

    def describe(self, position) -> str:
        """The readout text at a napari world position (S, A, R mm)."""
        lines = []
        ras = napari_to_ras(np.asarray(position, float)[-3:])
        lines.append(f"RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm")
        for name, value, unit in cursor_values(self.viewer, position):
            if value is None:
                lines.append(f"{name}: outside")
                continue
            layer = self.viewer.layers[name]
            vol = layer.metadata.get("volume")
            if unit == "label" or type(layer).__name__ == "Labels":  # the organ's name, not its number
                names = _label_names(vol) if vol is not None else {}
                lines.append(f"{name}: {label_text(int(round(value)), names)}")
                continue
            text = f"{name}: {value:.5g} {unit}"
            vol = layer.metadata.get("volume")
            if vol is not None:
                factor = self._suv_factor(name, vol)
                if factor is not None:
                    text += f" = SUVbw {value * factor:.4g}"
            lines.append(text)
        return "\n".join(lines)

    def _on_move(self, viewer, event) -> None:
        try:
            self.text.setText(self.describe(event.position))
        except Exception as exc:  # never break mouse handling
            self.text.setText(one_line(exc))


def _checked(on: bool):
    from qtpy.QtCore import Qt

    return Qt.CheckState.Checked if on else Qt.CheckState.Unchecked


def _empty_frame():
    import pandas as pd

    return pd.DataFrame({"layer": [], "label": []})


__all__ = ["ReadoutWidget", "CursorReadoutWidget", "readout_table", "cursor_values", "unit_slug"]
