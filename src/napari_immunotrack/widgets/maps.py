"""The "Maps" dock: quantitative maps computed from 4D series, and a plot that follows the cursor.

Tabs
----
Relaxometry (this module)
    Pick a 4D series (multi-echo GRE or SE, VFA, SR, IR), check the model and
    the sampling list read from its header (editable: what is typed wins),
    optionally a B1 map, a baseline series and a relaxivity; "Compute maps"
    fits in a worker (progress, Cancel) with
    :func:`~napari_immunotrack.analysis.relaxometry.fit_relaxation` and adds
    the T map (ms), the R map (1/s), the fit's R^2, the unreliable mask and,
    with a baseline, delta R and the concentration (mM). The plot under the
    form shows the samples at the voxel under the mouse (or the mean over its
    ROI label) with the fitted curve (docs/methods/relaxometry.md).
CEST
    Provided by :mod:`napari_immunotrack.widgets.maps_cest` (its
    ``build_cest_panel(viewer)``) when that module is present.

The pure work lives in :mod:`napari_immunotrack.analysis.relaxometry`; this
module only gathers inputs, runs the worker and shows results.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..analysis import relaxometry as rx
from ..errors import InputError, one_line
from ..volume import Volume, napari_to_ras
from ._common import (
    NONE,
    Coalesced,
    RunRow,
    add_volume,
    chosen_layer,
    cursor_plot_panel,
    fill_combo,
    follow_layers,
    layer_to_volume,
    organ_roi,
    percentile_limits,
    unwrapped,
)
from ._dock import PluginDock

#: Display of each map: colormap and how the contrast limits are chosen.
MAP_STYLE = {
    "time": "turbo",
    "rate": "magma",
    "goodness": "gray",
    "delta": "twilight_shifted",
    "concentration": "inferno",
}

#: Minimum height of the plot panel, pixels (readable axis labels on a laptop screen).
PLOT_MIN_HEIGHT = 240


def _is_series(layer) -> bool:
    vol = layer.metadata.get("volume") if hasattr(layer, "metadata") else None
    if isinstance(vol, Volume):
        return vol.data.ndim == 4 and vol.shape[0] >= 2
    return getattr(layer, "ndim", 3) == 4 and type(layer).__name__ == "Image"


def guess_model(volume: Volume) -> str:
    """The relaxometry model a series' header suggests (t2star when nothing tells).

    Acquisition lists with one value per volume decide first (inversion times: ``t1ir``, saturation
    times: ``t1sr``, flip angles: ``t1vfa``); then a spin-echo ``ScanningSequence`` or a name holding
    "mese", "cpmg" or "t2map" gives ``t2``.

    Parameters
    ----------
    volume : Volume
        A 4D series, one volume per echo / flip angle / inversion or saturation time along axis 0.

    Returns
    -------
    str
        One of ``"t1ir"``, ``"t1sr"``, ``"t1vfa"``, ``"t2"``, ``"t2star"``.

    Examples
    --------
    >>> guess_model(Volume(np.zeros((3, 2, 2, 2)), np.eye(4), metadata={"flip_angles_deg": [3, 10, 20]}))
    't1vfa'
    >>> guess_model(Volume(np.zeros((8, 2, 2, 2)), np.eye(4), metadata={"ScanningSequence": "SE"}))
    't2'
    >>> guess_model(Volume(np.zeros((3, 2, 2, 2)), np.eye(4), metadata={"flip_angles_deg": [3, 10]}))  # 3 volumes
    't2star'
    """
    meta = volume.metadata or {}
    lists = rx.acquisition_lists(volume)
    n = volume.shape[0]

    def fits(values):
        return values is not None and len(values) == n

    if fits(lists["inversion_times_ms"]):
        return "t1ir"
    if fits(lists["saturation_times_ms"]):
        return "t1sr"
    if fits(lists["flip_angles_deg"]):
        return "t1vfa"
    sequence = str(meta.get("ScanningSequence", "")).upper()
    name = (volume.name or "").lower()
    if "SE" in sequence.replace("GR", "") or "mese" in name or "cpmg" in name or "t2map" in name:
        return "t2"
    return "t2star"


def _series_rank(name: str) -> int:
    low = name.lower()
    for rank, words in enumerate(
        (("megre", "t2star", "t2*", "mgre", "gre"), ("mese", "cpmg", "t2"), ("vfa", "despot"), ("ir", "sr"))
    ):
        if any(w in low for w in words):
            return rank
    return 9


def sample_qmri_paths() -> dict:
    """The bundled qMRI sample series (see scripts/make_qmri_sample.py): {name: path}.

    Parameters
    ----------
    None

    Returns
    -------
    dict of str to Path
        Dock label to file under ``<sample study>/qmri/sub-01/``: multi-echo gradient echo (day 1 and
        day 0), multi-echo spin echo, variable flip angle, inversion recovery and B1 map. The file paths
        are built, not checked.

    Raises
    ------
    InputError
        The sample study itself is missing (see :func:`napari_immunotrack.data.sample_study_root`).

    Examples
    --------
    >>> paths = sample_qmri_paths()
    >>> list(paths)
    ['MEGRE (day 1)', 'MEGRE (day 0)', 'MESE (day 1)', 'VFA (day 1)', 'IR (day 1)', 'B1 map (day 1)']
    >>> paths["MEGRE (day 1)"].name
    'sub-01_ses-day1_MEGRE.nii.gz'
    """
    from ..data import sample_study_root

    root = sample_study_root() / "qmri" / "sub-01"
    return {
        "MEGRE (day 1)": root / "ses-day1" / "sub-01_ses-day1_MEGRE.nii.gz",
        "MEGRE (day 0)": root / "ses-day0" / "sub-01_ses-day0_MEGRE.nii.gz",
        "MESE (day 1)": root / "ses-day1" / "sub-01_ses-day1_MESE.nii.gz",
        "VFA (day 1)": root / "ses-day1" / "sub-01_ses-day1_VFA.nii.gz",
        "IR (day 1)": root / "ses-day1" / "sub-01_ses-day1_IRT1.nii.gz",
        "B1 map (day 1)": root / "ses-day1" / "sub-01_ses-day1_TB1map.nii.gz",
    }


def compute_maps(
    series: Volume,
    model: str,
    *,
    sampling=None,
    tr_ms=None,
    b1=None,
    method=None,
    baseline=None,
    relaxivity=None,
    metal="Fe",
    progress=None,
) -> dict:
    """What the dock's worker runs: the fit, and with a baseline delta R and the concentration.

    Parameters
    ----------
    series : Volume
        4D series, one volume per echo / flip angle / inversion or saturation time along axis 0.
    model : str
        ``"t2star"``, ``"t2"``, ``"t1vfa"``, ``"t1sr"`` or ``"t1ir"``.
    sampling : sequence of float, optional
        The model's acquisition list (echo times ms, flip angles deg, saturation or inversion times ms);
        default: the series' header.
    tr_ms : float, optional
        Repetition time for ``t1vfa`` (default: the header).
    b1 : Volume, optional
        Relative B1 map scaling the VFA flip angles.
    method : str, optional
        Fit method (see ``analysis.relaxometry.METHODS``; default: the model's first).
    baseline : Volume, optional
        Pre-injection series of the same kind, fitted the same way.
    relaxivity : float, optional
        mM^-1 s^-1; with `baseline`, gives the concentration map.
    metal : {"Fe", "Gd"}, default "Fe"
        Metal of the concentration.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    dict
        ``{"maps": RelaxationMaps, "delta": Volume or None, "concentration": Volume or None,
        "baseline": RelaxationMaps or None}``; ``delta`` is the rate change post minus baseline (1/s)
        and needs `baseline`, ``concentration`` needs `baseline` and `relaxivity`.
        See :func:`napari_immunotrack.analysis.relaxometry.fit_relaxation`.

    Examples
    --------
    T2* 20 ms after injection, 40 ms before: delta R2* = 1/0.020 - 1/0.040 = 25 /s, and with a
    relaxivity of 100 /mM/s an iron concentration of 0.25 mM.

    >>> te = np.array([2.0, 4, 6, 8])
    >>> decay = lambda t2s: Volume((1000 * np.exp(-te / t2s))[:, None, None, None] * np.ones((4, 3, 3, 3)),
    ...                            np.eye(4), "MR", metadata={"NoiseSigma": 0})
    >>> out = compute_maps(decay(20.0), "t2star", sampling=te, baseline=decay(40.0), relaxivity=100.0)
    >>> round(float(np.median(out["maps"].time_ms.data)), 3), round(float(np.median(out["delta"].data)), 3)
    (20.0, 25.0)
    >>> out["concentration"].unit, float(np.median(out["concentration"].data))  # 25 /s / (100 /mM/s)
    ('mM', 0.25)
    """
    from ..progress import scaled

    key = {
        "t2star": "echo_times_ms",
        "t2": "echo_times_ms",
        "t1vfa": "flip_angles_deg",
        "t1sr": "saturation_times_ms",
        "t1ir": "inversion_times_ms",
    }[model]
    lists = {key: sampling} if sampling is not None else {}
    maps = rx.fit_relaxation(
        series,
        model,
        tr_ms=tr_ms,
        b1=b1,
        method=method,
        progress=scaled(progress, 0.0, 0.6 if baseline is not None else 1.0),
        **lists,
    )
    out = {"maps": maps, "delta": None, "concentration": None, "baseline": None}
    if baseline is not None:
        pre = rx.fit_relaxation(
            baseline, model, tr_ms=tr_ms, b1=b1, method=method, progress=scaled(progress, 0.6, 0.95), **lists
        )
        out["baseline"] = pre
        out["delta"] = rx.delta_rate(
            maps.rate_per_s, pre.rate_per_s, post_unreliable=maps.unreliable, baseline_unreliable=pre.unreliable
        )
        if relaxivity:
            out["concentration"] = rx.concentration(out["delta"], relaxivity, metal)
    return out


class RelaxometryPanel(QWidget):
    """The relaxometry tab: inputs, Compute maps, and the cursor-following plot."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.result: dict | None = None
        self.result_series: Volume | None = None
        self.output_layers: list = []
        self._roi_cache: dict = {}
        self.last_plot_ms = float("nan")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.series_combo = QComboBox()
        self.series_combo.setObjectName("series")
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(rx.MODELS))
        self.method_combo = QComboBox()
        self.sampling_edit = QLineEdit()
        self.sampling_edit.setPlaceholderText("from the header, e.g. 2, 4, 6, 8")
        self.tr_edit = QLineEdit()
        self.tr_edit.setPlaceholderText("ms (VFA)")
        self.b1_combo = QComboBox()
        self.baseline_combo = QComboBox()
        self.agent_combo = QComboBox()
        self.agent_combo.addItems(["(number)"] + list(rx.AGENTS))
        self.relaxivity_edit = QLineEdit()
        self.relaxivity_edit.setPlaceholderText("mM^-1 s^-1")
        self.sampling_label = QLabel("Echo times (ms)")
        form.addRow("Series *", self.series_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Method", self.method_combo)
        form.addRow(self.sampling_label, self.sampling_edit)
        form.addRow("TR (ms)", self.tr_edit)
        form.addRow("B1 map", self.b1_combo)
        form.addRow("Baseline series", self.baseline_combo)
        row = QHBoxLayout()
        row.addWidget(self.agent_combo)
        row.addWidget(self.relaxivity_edit)
        form.addRow("Relaxivity", row)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.sample_button = QPushButton("Sample qMRI")
        self.sample_button.setToolTip("open the bundled quantitative-MRI series of the sample study")
        self.sample_button.clicked.connect(self.open_sample)
        buttons.addWidget(self.sample_button)
        layout.addLayout(buttons)
        self.run_row = RunRow(layout, "Compute maps", on_run=self.run, owner=self)
        self.roi_check, self.roi_combo, self.figure, self.canvas, self.axes = cursor_plot_panel(
            layout, (4, 2.6), dict(left=0.17, right=0.97, bottom=0.2, top=0.95), PLOT_MIN_HEIGHT
        )
        (self.data_line,) = self.axes.plot([], [], "o", color="tab:blue", label="data")
        (self.fit_line,) = self.axes.plot([], [], "-", color="tab:orange", label="fit")
        self.axes.legend(loc="upper right", fontsize=8)
        self.axes.set_ylabel("signal (a.u.)")
        self.plot_title = QLabel("move the mouse over the image")
        self.plot_title.setWordWrap(True)
        layout.addWidget(self.plot_title)
        layout.addWidget(self.canvas)
        layout.addStretch(1)
        self.series_combo.currentTextChanged.connect(self._series_changed)
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.agent_combo.currentTextChanged.connect(self._agent_changed)
        follow_layers(viewer, self.refresh, on_rename=Coalesced(self, self.refresh))  # a Study step renames
        self._model_changed(self.model_combo.currentText())
        viewer.mouse_move_callbacks.append(self._on_move)

    # ------------------------------------------------------------------ inputs
    def refresh(self, event=None) -> None:
        own = {id(unwrapped(ly)) for ly in self.output_layers}  # the dock's viewer hands out proxies
        layers = [ly for ly in self.viewer.layers if id(unwrapped(ly)) not in own]
        series = sorted((ly.name for ly in layers if _is_series(ly)), key=_series_rank)
        images3d = [ly.name for ly in layers if type(ly).__name__ == "Image" and not _is_series(ly)]
        labels = [ly.name for ly in layers if type(ly).__name__ == "Labels"]
        before = self.series_combo.currentText()
        fill_combo(self.series_combo, series)
        baseline_guess = next(
            (
                n
                for n in series
                if n != self.series_combo.currentText()
                and ("day 0" in n.lower() or "pre" in n.lower() or "baseline" in n.lower())
            ),
            None,
        )
        fill_combo(self.baseline_combo, series, optional=True, guess=baseline_guess)
        fill_combo(self.b1_combo, images3d, optional=True, guess=next((n for n in images3d if "b1" in n.lower()), None))
        fill_combo(self.roi_combo, labels, optional=True, guess=organ_roi(self.viewer, labels))
        if self.series_combo.currentText() != before:
            self._series_changed(self.series_combo.currentText())

    def series_volume(self) -> Volume | None:
        layer = chosen_layer(self.viewer, self.series_combo, "as the series")
        return None if layer is None else layer_to_volume(layer)

    def _series_changed(self, name: str) -> None:
        if not name or name not in self.viewer.layers:
            return
        try:
            vol = self.series_volume()
        except InputError:
            return
        if vol is None or vol.data.ndim != 4:
            return
        self.model_combo.setCurrentText(guess_model(vol))
        self._fill_sampling(vol)

    def _fill_sampling(self, vol: Volume) -> None:
        model = self.model_combo.currentText()
        key = {
            "t2star": "echo_times_ms",
            "t2": "echo_times_ms",
            "t1vfa": "flip_angles_deg",
            "t1sr": "saturation_times_ms",
            "t1ir": "inversion_times_ms",
        }[model]
        lists = rx.acquisition_lists(vol)
        values = lists[key]
        self.sampling_edit.setText(", ".join(f"{v:g}" for v in values) if values else "")
        tr = lists["repetition_time_ms"]
        self.tr_edit.setText(f"{tr:g}" if tr else "")

    def _model_changed(self, model: str) -> None:
        self.method_combo.clear()
        self.method_combo.addItems(list(rx.METHODS.get(model, ())))
        what, unit = rx.QUANTITY[model][2], rx.QUANTITY[model][3]
        self.sampling_label.setText(f"{what.capitalize()} ({unit})")
        try:
            vol = self.series_volume()
        except InputError:
            vol = None
        if vol is not None and vol.data.ndim == 4:
            self._fill_sampling(vol)

    def _agent_changed(self, agent: str) -> None:
        if agent not in rx.AGENTS:
            return
        vol = None
        try:
            vol = self.series_volume()
        except InputError:
            pass
        field_t = (vol.metadata.get("MagneticFieldStrength") if vol is not None else None) or 9.4
        try:
            r = rx.agent_relaxivity(agent, float(field_t))
        except InputError as exc:
            self.status.setText(one_line(exc))
            return
        self.relaxivity_edit.setText(f"{r.for_model(self.model_combo.currentText()):g}")
        self.relaxivity_edit.setToolTip(r.source)

    def _numbers(self, text: str, what: str):
        text = text.strip()
        if not text:
            return None
        try:
            return [float(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v]
        except ValueError:
            raise InputError(f"the {what} '{text}' are not numbers; write e.g. 2, 4, 6, 8.") from None

    def open_sample(self) -> None:
        """Open the bundled qMRI series as layers (the day-1 GRE is chosen)."""
        from ..io import load_volume

        try:
            for name, path in sample_qmri_paths().items():
                if name in self.viewer.layers:
                    continue
                vol = load_volume(path)
                vol.name = name
                add_volume(self.viewer, vol, visible=name.startswith("MEGRE (day 1)"))
        except Exception as exc:  # noqa: BLE001 - a missing sample is shown, never raised into Qt
            self.run_row.fail(exc)
            return
        self.refresh()
        self.series_combo.setCurrentText("MEGRE (day 1)")
        self.baseline_combo.setCurrentText("MEGRE (day 0)")

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        if self.run_row.busy():
            return
        try:
            series = self.series_volume()
            if series is None:
                raise InputError("choose a 4D series (e.g. a multi-echo GRE); none is open: try 'Sample qMRI'.")
            model = self.model_combo.currentText()
            sampling = self._numbers(self.sampling_edit.text(), rx.QUANTITY[model][2])
            tr = self._numbers(self.tr_edit.text(), "TR")
            b1_layer = chosen_layer(self.viewer, self.b1_combo, "as the B1 map")
            base_layer = chosen_layer(self.viewer, self.baseline_combo, "as the baseline")
            relaxivity = self._numbers(self.relaxivity_edit.text(), "relaxivity")
            agent = self.agent_combo.currentText()
            metal = (
                rx.agent_relaxivity(agent, 9.4).metal
                if agent in rx.AGENTS
                else ("Fe" if model in ("t2star", "t2") else "Gd")
            )
            kwargs = dict(
                sampling=sampling,
                tr_ms=tr[0] if tr else None,
                b1=layer_to_volume(b1_layer) if b1_layer is not None else None,
                method=self.method_combo.currentText() or None,
                baseline=layer_to_volume(base_layer) if base_layer is not None else None,
                relaxivity=relaxivity[0] if relaxivity else None,
                metal=metal,
            )
        except InputError as exc:
            self.run_row.fail(exc)
            return
        self.status.setText(f"fitting {model} ...")
        self.runner.start(
            compute_maps,
            series,
            model,
            on_done=lambda r: self._show(series, r),
            on_error=self.run_row.fail,
            guard=True,
            **kwargs,
        )

    def _show(self, series: Volume, result: dict) -> None:
        maps = result["maps"]
        self.result, self.result_series = result, series
        self._roi_cache.clear()
        for layer in list(self.output_layers):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.output_layers = []
        t_name = maps.names[0]
        reliable = maps.unreliable.numpy() == 0
        t = maps.time_ms.numpy()
        shown = [(maps.goodness, "goodness", (0.0, 1.0), False), (maps.rate_per_s, "rate", None, False)]
        if result["delta"] is not None:
            shown.append((result["delta"], "delta", percentile_limits(result["delta"].numpy(), symmetric=True), False))
        if result["concentration"] is not None:
            c = result["concentration"].numpy()
            shown.append((result["concentration"], "concentration", (0.0, percentile_limits(c, 1, 99.5)[1]), False))
        shown.append((maps.time_ms, "time", percentile_limits(np.where(reliable, t, np.nan)), True))
        for vol, kind, limits, visible in shown:
            data = vol.numpy()
            limits = limits or percentile_limits(np.where(reliable, data, np.nan))
            layer = add_volume(
                self.viewer,
                vol,
                colormap=MAP_STYLE[kind],
                contrast_limits=limits,
                visible=visible,
                blending="translucent",
            )
            self.output_layers.append(layer)
        mask = add_volume(
            self.viewer,
            maps.unreliable.replace(data=(maps.unreliable.numpy() != 0).astype(np.uint8)),
            as_labels=True,
            opacity=0.4,
            visible=False,
        )
        self.output_layers.append(mask)
        self.viewer.layers.selection.active = self.output_layers[-2]
        med = float(np.nanmedian(t[reliable])) if reliable.any() else float("nan")
        self.status.setText(
            f"{t_name}: {maps.parameters['voxels_fitted']} voxels fitted, "
            f"{maps.parameters['voxels_unreliable']} unreliable; median {med:.4g} ms"
            + (f"; {'; '.join(maps.warnings)}" if maps.warnings else "")
        )
        self.run_row.run_pending(self.run)

    # ------------------------------------------------------------------ plot
    def _roi_on_series_grid(self, layer, series: Volume) -> np.ndarray:
        key = (id(layer), id(series))
        if key not in self._roi_cache:
            vol = layer_to_volume(layer)
            self._roi_cache[key] = vol.resample_to(series, order=0).numpy()
        return self._roi_cache[key]

    def plot_at(self, ras) -> dict | None:
        """Update the plot for a world point (RAS mm); returns what was drawn (None outside the series).

        The samples of the voxel under the point (or the mean over its ROI label
        when the box is ticked) and, once maps are computed, the fitted curve.
        """
        start = time.perf_counter()
        series = self.result_series
        if series is None:
            try:
                series = self.series_volume()
            except InputError:
                series = None
        if series is None or series.data.ndim != 4:
            return None
        idx = np.rint(series.world_to_index(np.asarray(ras, float)[None])[0]).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.array(series.spatial_shape)):
            return None
        model = self.result["maps"].model if self.result else self.model_combo.currentText()
        x = None
        if self.result:
            x = np.asarray(self.result["maps"].parameters["sampling"], float)
        else:
            try:
                x = np.asarray(self._numbers(self.sampling_edit.text(), "values") or [], float)
            except InputError:
                x = np.array([])
        if x.size != series.shape[0]:
            x = np.arange(series.shape[0], dtype=float)
        label = None
        roi_layer = chosen_layer(self.viewer, self.roi_combo, "as ROI") if self.roi_check.isChecked() else None
        data = series.data
        if roi_layer is not None:
            roi = self._roi_on_series_grid(roi_layer, series)
            label = int(roi[tuple(idx)])
        if label:
            inside = roi == label
            y = np.asarray(data)[:, inside].mean(axis=1)
        else:
            y = np.asarray(data[(slice(None),) + tuple(idx)], float)
        dense = np.linspace(0.0 if model != "t1vfa" else 0.5, float(x.max()) * 1.05, 120)
        fit = None
        text = f"voxel {tuple(int(i) for i in idx)}"
        if label:
            text = f"ROI label {label} ({int(inside.sum())} voxels)"
        if self.result:
            maps = self.result["maps"]
            if label:
                amp = np.nanmean(maps.amplitude.numpy()[inside])
                rate = np.nanmean(maps.rate_per_s.numpy()[inside])
                extra = {k: float(np.nanmean(v.numpy()[inside])) for k, v in maps.extra.items()}
                fit = rx.model_curve(maps.model, maps.method, amp, rate, dense, maps.parameters, extra)
                t_val = 1000.0 / rate if rate else float("nan")
                flags = int(np.count_nonzero(maps.unreliable.numpy()[inside]))
                text += f": mean fit {maps.names[0]} {t_val:.4g} ms ({flags} unreliable voxels)"
            else:
                fit = maps.curve_at(idx, dense)
                t_val = float(maps.time_ms.data[tuple(idx)])
                flags = int(maps.unreliable.data[tuple(idx)])
                good = float(maps.goodness.data[tuple(idx)])
                text += f": {maps.names[0]} {t_val:.4g} ms, R^2 {good:.3f}" + (
                    f", unreliable (flags {flags})" if flags else ""
                )
        self.data_line.set_data(x, y)
        if fit is not None:
            self.fit_line.set_data(dense, fit)
        else:
            self.fit_line.set_data([], [])
        unit = rx.QUANTITY[model][3]
        self.axes.set_xlabel(f"{rx.QUANTITY[model][2]} ({unit})")
        top = np.nanmax(np.concatenate([y, fit if fit is not None else y]))
        self.axes.set_xlim(min(0.0, float(x.min())), float(x.max()) * 1.08 + 1e-9)
        self.axes.set_ylim(0.0, float(top) * 1.1 if np.isfinite(top) and top > 0 else 1.0)
        self.plot_title.setText(text)
        self.canvas.draw()
        self.last_plot_ms = 1000.0 * (time.perf_counter() - start)
        return {
            "index": tuple(int(i) for i in idx),
            "x": x,
            "y": y,
            "fit_x": dense,
            "fit": fit,
            "label": label,
            "text": text,
        }

    def _on_move(self, viewer, event) -> None:
        try:
            self.plot_at(napari_to_ras(np.asarray(event.position, float)[-3:]))
        except RuntimeError:  # the dock was closed and its Qt objects deleted: stop following the mouse
            if self._on_move in viewer.mouse_move_callbacks:
                viewer.mouse_move_callbacks.remove(self._on_move)
        except Exception as exc:  # noqa: BLE001 - never break mouse handling
            self.plot_title.setText(one_line(exc))


class MapsWidget(PluginDock):
    """Dock widget "Maps": relaxometry (and CEST when its panel is installed), with a cursor-following plot."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)  # self.viewer; the close guard
        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs)
        self.relaxometry = RelaxometryPanel(self.viewer, self)
        self.tabs.addTab(self.relaxometry, "Relaxometry")
        self.cest = None
        try:  # the CEST panel lives in its own module (widgets/maps_cest.py)
            from .maps_cest import build_cest_panel
        except ImportError:
            build_cest_panel = None
        if build_cest_panel is not None:
            try:
                self.cest = build_cest_panel(self.viewer)
                self.tabs.addTab(self.cest, "CEST")
            except Exception as exc:  # noqa: BLE001 - the relaxometry tab must open whatever CEST does
                from ._common import notify_error

                notify_error(exc)


__all__ = ["NONE", "MapsWidget", "RelaxometryPanel", "compute_maps", "guess_model", "sample_qmri_paths"]
