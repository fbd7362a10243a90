"""The CEST tab of the "Maps" dock (thin; the science is in :mod:`napari_immunotrack.analysis.cest`).

Choose a 4D CEST series (offsets from its JSON sidecar or typed), optionally an
M0 image and a WASSR series, the Lorentzian pools (a reporter such as
``lrp:3.4``) and the MTRasym offsets, then "Compute CEST maps": the work runs in
a worker thread with progress and Cancel, and the B0 map (ppm, diverging
colours centred on 0), the MTRasym maps and the pools' amplitude maps (fraction
of M0) come back as layers on the series' grid.

The plot follows the cursor: the Z-spectrum of the voxel under it (or the mean
over its ROI label), B0-corrected once maps exist, with the fitted multi-pool
Lorentzian model, the reference without the reporter/amide pool and MTRasym on
the positive side; the x axis runs from high to low offset as in the CEST
literature. :func:`build_cest_panel` returns the tab; the Maps dock adds it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis import cest
from ..errors import InputError, one_line
from ..volume import Volume, napari_to_ras
from ._common import (
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

#: Smallest height of the plot (pixels), so that axis labels stay readable in a narrow dock.
PLOT_MIN_HEIGHT = 260

#: Colormaps and units of the output maps.
MAP_STYLE = {
    "b0_ppm": ("PiYG", "ppm"),
    "mtrasym": ("viridis", "fraction of M0"),
    "amplitude": ("magma", "fraction of M0"),
    "width": ("cividis", "ppm"),
    "offset": ("twilight", "ppm"),
}


def _is_series(layer) -> bool:
    return type(layer).__name__ == "Image" and getattr(layer, "ndim", 0) == 4


def sample_cest_paths() -> dict:
    """Paths of the bundled CEST sample (series, WASSR, tissue labels), by layer name; empty if absent.

    The sample is looked for in the source checkout's ``sample_data/mouse_study/cest/sub-*/ses-*``
    (the first such folder).

    Parameters
    ----------
    None

    Returns
    -------
    dict of str to Path
        ``"CEST"``, ``"WASSR"`` and ``"CEST tissues"`` for the files found; ``{}`` without the sample.

    Examples
    --------
    >>> paths = sample_cest_paths()
    >>> set(paths) <= {"CEST", "WASSR", "CEST tissues"}, all(p.is_file() for p in paths.values())
    (True, True)
    """
    root = Path(__file__).resolve().parents[3] / "sample_data" / "mouse_study"
    found = {}
    for folder in sorted(root.glob("cest/sub-*/ses-*")):
        for pattern, name in (
            ("*_cest.nii.gz", "CEST"),
            ("*_wassr.nii.gz", "WASSR"),
            ("*_desc-cesttissues_dseg.nii.gz", "CEST tissues"),
        ):
            hit = sorted(folder.glob(pattern))
            if hit:
                found[name] = hit[0]
        break
    return found


def parse_numbers(text: str, what: str) -> list | None:
    """Comma/space-separated numbers from a line edit (None when empty).

    Parameters
    ----------
    text : str or None
        Numbers separated by commas, semicolons or spaces.
    what : str
        What they are (e.g. ``"saturation offsets"``), for the message.

    Returns
    -------
    list of float or None
        The numbers in order; None for an empty or blank text.

    Raises
    ------
    InputError
        A value is not a number.

    Examples
    --------
    >>> parse_numbers("-300, -3.5; 0 3.5", "offsets"), parse_numbers("  ", "offsets")
    ([-300.0, -3.5, 0.0, 3.5], None)
    >>> parse_numbers("-3.5, amide", "offsets")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: the offsets '-3.5, amide' are not numbers; write e.g. -300, -6, -5.8, ..., 6.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v]
    except ValueError:
        raise InputError(f"the {what} '{text[:40]}' are not numbers; write e.g. -300, -6, -5.8, ..., 6.") from None


class CestPanel(QWidget):
    """The CEST tab: inputs, Compute CEST maps, and the cursor-following Z-spectrum plot."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.result: cest.CestResult | None = None
        self.result_series: Volume | None = None
        self.output_layers: list = []
        self._row_of_voxel: np.ndarray | None = None
        self._roi_cache: dict = {}
        self._roi_fit_cache: dict = {}
        self.last_plot_ms = float("nan")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.series_combo = QComboBox()
        self.offsets_edit = QLineEdit()
        self.offsets_edit.setPlaceholderText("ppm, from the sidecar, e.g. -300, -6, -5.8, ..., 6")
        self.m0_combo = QComboBox()
        self.m0_offset_edit = QLineEdit()
        self.m0_offset_edit.setPlaceholderText("frames at/beyond this ppm are M0 (default |100|)")
        self.wassr_combo = QComboBox()
        self.wassr_offsets_edit = QLineEdit()
        self.wassr_offsets_edit.setPlaceholderText("ppm, from the WASSR sidecar")
        self.pools_edit = QLineEdit("water,amide,amine,noe,mt")
        self.extra_pools_edit = QLineEdit()
        self.extra_pools_edit.setPlaceholderText("reporter pools NAME:PPM, e.g. lrp:3.4")
        self.mtrasym_edit = QLineEdit("3.5")
        form.addRow("CEST series *", self.series_combo)
        form.addRow("Offsets (ppm)", self.offsets_edit)
        form.addRow("M0 image", self.m0_combo)
        form.addRow("M0 offset (ppm)", self.m0_offset_edit)
        form.addRow("WASSR series", self.wassr_combo)
        form.addRow("WASSR offsets (ppm)", self.wassr_offsets_edit)
        form.addRow("Pools", self.pools_edit)
        form.addRow("Extra pools", self.extra_pools_edit)
        form.addRow("MTRasym at (ppm)", self.mtrasym_edit)
        layout.addLayout(form)
        self.sample_button = QPushButton("Sample CEST")
        self.sample_button.setToolTip("open the bundled CEST and WASSR series (LRP reporter depot at 3.4 ppm)")
        self.sample_button.clicked.connect(self.open_sample)
        layout.addWidget(self.sample_button)
        self.run_row = RunRow(layout, "Compute CEST maps", on_run=self.run, owner=self)
        self.roi_check, self.roi_combo, self.figure, self.canvas, self.axes = cursor_plot_panel(
            layout, (4, 2.8), dict(left=0.16, right=0.97, bottom=0.17, top=0.96), PLOT_MIN_HEIGHT
        )
        (self.data_line,) = self.axes.plot([], [], "o", ms=3, color="tab:blue", label="Z")
        (self.fit_line,) = self.axes.plot([], [], "-", color="tab:orange", label="fit")
        (self.ref_line,) = self.axes.plot([], [], "--", color="tab:gray", lw=1, label="fit without solute")
        (self.asym_line,) = self.axes.plot([], [], "-", color="tab:green", lw=1, label="MTRasym")
        # the lines are drawn over a cached background (blitting): a full matplotlib draw of the
        # axes costs more than the 100 ms a cursor update may take on a busy machine
        for line in (self.data_line, self.fit_line, self.ref_line, self.asym_line):
            line.set_animated(True)
        self._background = None
        self._limits = None
        self.canvas.mpl_connect("draw_event", self._grab_background)
        self.axes.axhline(0.0, color="0.8", lw=0.5)
        self.axes.legend(loc="lower left", fontsize=7)
        self.axes.set_xlabel("saturation offset (ppm)")
        self.axes.set_ylabel("Z = M/M0")
        self.plot_title = QLabel("move the mouse over the image")
        self.plot_title.setWordWrap(True)
        layout.addWidget(self.plot_title)
        layout.addWidget(self.canvas)
        layout.addStretch(1)
        self.series_combo.currentTextChanged.connect(self._series_changed)
        self.wassr_combo.currentTextChanged.connect(self._wassr_changed)
        follow_layers(viewer, self.refresh, on_rename=Coalesced(self, self.refresh))  # a Study step renames
        viewer.mouse_move_callbacks.append(self._on_move)

    # ------------------------------------------------------------------ inputs
    def refresh(self, event=None) -> None:
        own = {id(unwrapped(ly)) for ly in self.output_layers}  # the dock's viewer hands out proxies
        layers = [ly for ly in self.viewer.layers if id(unwrapped(ly)) not in own]
        series = [ly.name for ly in layers if _is_series(ly)]
        images3d = [ly.name for ly in layers if type(ly).__name__ == "Image" and not _is_series(ly)]
        labels = [ly.name for ly in layers if type(ly).__name__ == "Labels"]
        before = self.series_combo.currentText()
        cest_guess = next((n for n in series if "cest" in n.lower()), None)
        fill_combo(self.series_combo, series, guess=cest_guess)
        fill_combo(
            self.wassr_combo, series, optional=True, guess=next((n for n in series if "wassr" in n.lower()), None)
        )
        fill_combo(self.m0_combo, images3d, optional=True, guess=next((n for n in images3d if "m0" in n.lower()), None))
        fill_combo(self.roi_combo, labels, optional=True, guess=organ_roi(self.viewer, labels))
        if self.series_combo.currentText() != before:
            self._series_changed(self.series_combo.currentText())

    def _volume(self, combo, what: str) -> Volume | None:
        layer = chosen_layer(self.viewer, combo, what)
        return None if layer is None else layer_to_volume(layer)

    @staticmethod
    def _sidecar_offsets(vol: Volume | None) -> str:
        if vol is None:
            return ""
        found = next((vol.metadata[k] for k in cest.OFFSET_KEYS_PPM if k in vol.metadata), None)
        return ", ".join(f"{float(v):g}" for v in found) if found is not None else ""

    def _series_changed(self, name: str) -> None:
        try:
            vol = self._volume(self.series_combo, "as the CEST series") if name else None
        except InputError:
            return
        if vol is not None and vol.data.ndim == 4:
            self.offsets_edit.setText(self._sidecar_offsets(vol))

    def _wassr_changed(self, name: str) -> None:
        try:
            vol = self._volume(self.wassr_combo, "as the WASSR series") if name else None
        except InputError:
            return
        self.wassr_offsets_edit.setText(self._sidecar_offsets(vol) if vol is not None else "")

    def open_sample(self) -> None:
        """Open the bundled CEST sample (series, WASSR, tissue labels) as layers."""
        from ..io import load_volume

        try:
            paths = sample_cest_paths()
            if not paths:
                raise InputError("the CEST sample is not installed; run scripts/make_cest_sample.py.")
            for name, path in paths.items():
                if name in self.viewer.layers:
                    continue
                vol = load_volume(path)
                vol.name = name
                add_volume(self.viewer, vol, as_labels=name.endswith("tissues"), visible=name != "WASSR")
        except Exception as exc:  # noqa: BLE001 - a missing sample is shown, never raised into Qt
            self.run_row.fail(exc)
            return
        self.refresh()
        self.series_combo.setCurrentText("CEST")
        self.wassr_combo.setCurrentText("WASSR")
        self.extra_pools_edit.setText("lrp:3.4")
        self.mtrasym_edit.setText("3.4, 2")

    def parameters(self) -> dict:
        """The keyword arguments of :func:`~napari_immunotrack.analysis.cest.analyse_cest` from the form."""
        series = self._volume(self.series_combo, "as the CEST series")
        if series is None:
            raise InputError("choose a 4D CEST series; none is open: try 'Sample CEST'.")
        offsets = parse_numbers(self.offsets_edit.text(), "offsets")
        m0 = self._volume(self.m0_combo, "as the M0 image")
        m0_offset = parse_numbers(self.m0_offset_edit.text(), "M0 offset")
        wassr = self._volume(self.wassr_combo, "as the WASSR series")
        w_offsets = parse_numbers(self.wassr_offsets_edit.text(), "WASSR offsets") if wassr is not None else None
        names = [n for n in self.pools_edit.text().replace(";", ",").split(",") if n.strip()]
        extra = dict(
            cest.parse_pool_option(p) for p in self.extra_pools_edit.text().replace(";", ",").split(",") if p.strip()
        )
        fit = bool([n for n in names if n.strip().lower() not in ("water", "none")] or extra)
        pools = cest.make_pools([n for n in names if n.strip().lower() not in ("water", "none")], extra)
        mtr = parse_numbers(self.mtrasym_edit.text(), "MTRasym offsets") or [3.5]
        return {
            "series": series,
            "offsets": offsets,
            "m0": m0,
            "m0_offset": m0_offset[0] if m0_offset else None,
            "wassr": wassr,
            "wassr_offsets": w_offsets,
            "mtrasym_ppm": mtr,
            "pools": pools,
            "fit": fit,
        }

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        if self.run_row.busy():
            return
        try:
            kwargs = self.parameters()
        except InputError as exc:
            self.run_row.fail(exc)
            return
        series = kwargs.pop("series")
        self.status.setText("computing CEST maps ...")
        self.runner.start(
            cest.analyse_cest,
            series,
            on_done=lambda r: self._show(series, r),
            on_error=self.run_row.fail,
            guard=True,
            **kwargs,
        )

    def _show(self, series: Volume, result: cest.CestResult) -> None:
        self.result, self.result_series = result, series
        self._roi_fit_cache.clear()
        rows = np.full(result.mask.size, -1, np.int64)
        rows[np.flatnonzero(result.mask.ravel())] = np.arange(int(result.mask.sum()))
        self._row_of_voxel = rows.reshape(result.mask.shape)
        for layer in list(self.output_layers):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.output_layers = []
        reporter = next(
            (p.name for p in (result.fit.pools if result.fit else []) if p.name not in cest.DEFAULT_POOLS), "amide"
        )
        for name, vol in result.maps.items():
            kind = name.split("_")[0] if not name.startswith("b0") else "b0_ppm"
            if kind not in MAP_STYLE or name.endswith("_water") and kind != "offset":
                continue
            if kind in ("width", "offset"):
                continue  # in the CLI's output folder; as layers they would bury the useful maps
            colormap, unit = MAP_STYLE[kind]
            data = vol.numpy()
            limits = percentile_limits(data, symmetric=kind in ("b0_ppm",))
            if kind == "amplitude":
                limits = (0.0, max(limits[1], 1e-3))
            shown = name in ("b0_ppm", f"amplitude_{reporter}")
            layer = add_volume(
                self.viewer,
                vol.replace(unit=unit),
                colormap=colormap,
                contrast_limits=limits,
                visible=shown,
                blending="translucent",
                name=f"CEST {name}",
            )
            self.output_layers.append(layer)
        med = float(np.nanmedian(result.b0_ppm)) if np.isfinite(result.b0_ppm).any() else float("nan")
        self.status.setText(
            f"{result.parameters['voxels']} voxels; B0 median {med:.3f} ppm ({result.parameters['b0_method']})"
            + (f"; {'; '.join(result.warnings)}" if result.warnings else "")
        )
        self.run_row.run_pending(self.run)

    # ------------------------------------------------------------------ plot
    def _roi_on_series_grid(self, layer, series: Volume) -> np.ndarray:
        key = (id(layer), id(series))
        if key not in self._roi_cache:
            self._roi_cache[key] = layer_to_volume(layer).resample_to(series, order=0).numpy()
        return self._roi_cache[key]

    def plot_at(self, ras) -> dict | None:
        """Update the plot for a world point (RAS mm); returns what was drawn (None outside the series)."""
        start = time.perf_counter()
        series = self.result_series
        if series is None:
            try:
                series = self._volume(self.series_combo, "as the CEST series")
            except InputError:
                series = None
        if series is None or series.data.ndim != 4:
            return None
        idx = np.rint(series.world_to_index(np.asarray(ras, float)[None])[0]).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.array(series.spatial_shape)):
            return None
        idx = tuple(int(i) for i in idx)
        label, inside = None, None
        roi_layer = chosen_layer(self.viewer, self.roi_combo, "as ROI") if self.roi_check.isChecked() else None
        if roi_layer is not None:
            roi = self._roi_on_series_grid(roi_layer, series)
            label = int(roi[idx]) or None
            inside = roi == label if label else None
        res = self.result
        fit_x = fit = ref = None
        text = f"voxel {idx}" if label is None else f"ROI label {label} ({int(inside.sum())} voxels)"
        if res is not None:
            x = res.dw
            y = np.nanmean(res.z[:, inside], axis=1) if label else res.z[(slice(None),) + idx]
            b0 = float(np.nanmean(res.b0_ppm[inside]) if label else res.b0_ppm[idx])
            params = None
            if res.fit is not None:
                if label:
                    params = self._roi_fit(label, y, res)
                elif self._row_of_voxel[idx] >= 0:
                    params = res.fit.params[self._row_of_voxel[idx]]
            if params is not None and np.all(np.isfinite(params)):
                fit_x = np.linspace(float(x.min()), float(x.max()), 300)
                fit = cest.lorentzian_model(params[None], fit_x)[0]
                solute = next((p.name for p in res.fit.pools if p.name not in cest.DEFAULT_POOLS), None) or next(
                    (p.name for p in res.fit.pools if p.name == "amide"), None
                )
                if solute is not None:
                    p2 = params.copy()
                    p2[res.fit.index(solute, "amplitude")] = 0.0
                    ref = cest.lorentzian_model(p2[None], fit_x)[0]
                    amp = params[res.fit.index(solute, "amplitude")]
                    text += f": {solute} amplitude {amp:.4f} (fraction of M0)"
            text += f", B0 {b0:+.3f} ppm (corrected)"
        else:
            kwargs = self._raw_inputs()
            if kwargs is None:
                return None
            offsets, m0_offset = kwargs
            data = (
                np.asarray(series.data[(slice(None),) + idx], float)
                if not label
                else np.asarray(series.data)[:, inside].mean(axis=1)
            )
            try:
                z, x, _ = cest.z_spectrum(data[:, None], offsets, None, m0_offset)
            except InputError as exc:
                self.plot_title.setText(one_line(exc))
                return None
            y = z[:, 0]
            text += " (raw Z; compute maps for the fit)"
        pos = x[x > 0]
        asym = np.interp(-pos, x, y) - y[x > 0] if pos.size else np.array([])
        self.data_line.set_data(x, y)
        self.fit_line.set_data(fit_x if fit is not None else [], fit if fit is not None else [])
        self.ref_line.set_data(fit_x if ref is not None else [], ref if ref is not None else [])
        self.asym_line.set_data(pos, asym)
        lo = float(np.nanmin(np.concatenate([[0.0], asym]))) if asym.size else 0.0
        # CEST convention: high ppm on the left; y limits move in steps so that most updates only blit
        limits = (float(x.max()) + 0.2, float(x.min()) - 0.2, min(-0.1, 0.1 * np.floor((lo - 0.02) / 0.1)), 1.05)
        self.plot_title.setText(text)
        self._redraw(limits)
        self.last_plot_ms = 1000.0 * (time.perf_counter() - start)
        return {
            "index": idx,
            "x": x,
            "y": y,
            "fit_x": fit_x,
            "fit": fit,
            "reference": ref,
            "asym_x": pos,
            "mtrasym": asym,
            "label": label,
            "text": text,
        }

    def _grab_background(self, event=None) -> None:
        self._background = self.canvas.copy_from_bbox(self.axes.bbox)

    def _redraw(self, limits) -> None:
        """Draw the lines: a full draw when the axes changed, else only the lines over the cached background."""
        if limits != self._limits or self._background is None:
            self._limits = limits
            self.axes.set_xlim(limits[0], limits[1])
            self.axes.set_ylim(limits[2], limits[3])
            self.canvas.draw()  # draws the static parts; draw_event caches them
        self.canvas.restore_region(self._background)
        for line in (self.data_line, self.fit_line, self.ref_line, self.asym_line):
            self.axes.draw_artist(line)
        # schedule the paint of the updated buffer (blit() would repaint the whole napari window synchronously)
        self.canvas.update()

    def _raw_inputs(self):
        try:
            offsets = parse_numbers(self.offsets_edit.text(), "offsets")
            m0_offset = parse_numbers(self.m0_offset_edit.text(), "M0 offset")
        except InputError:
            return None
        if offsets is None:
            return None
        return np.asarray(offsets, float), (m0_offset[0] if m0_offset else None)

    def _roi_fit(self, label: int, y: np.ndarray, res: cest.CestResult) -> np.ndarray | None:
        if label not in self._roi_fit_cache:
            fit = cest.fit_lorentzians(y[:, None], res.dw, res.fit.pools, z_floor=res.parameters.get("z_floor", 0.0))
            self._roi_fit_cache[label] = fit.params[0]
        return self._roi_fit_cache[label]

    def _on_move(self, viewer, event) -> None:
        try:
            self.plot_at(napari_to_ras(np.asarray(event.position, float)[-3:]))
        except Exception as exc:  # noqa: BLE001 - never break mouse handling
            self.plot_title.setText(one_line(exc))


def build_cest_panel(viewer) -> QWidget:
    """The CEST tab for the "Maps" dock (also usable on its own).

    The panel follows the viewer's layers: 4D image layers are offered as the CEST and WASSR series
    (guessed by "cest" and "wassr" in their names), 3D ones as M0, Labels as the ROI of the plot; the
    offsets are read from the series' sidecar keys (:data:`~napari_immunotrack.analysis.cest.OFFSET_KEYS_PPM`).
    Method: docs/methods/cest.md.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer whose layers feed the panel and whose mouse moves drive the Z-spectrum plot.

    Returns
    -------
    CestPanel
        A QWidget (a QApplication must exist), not yet docked.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> from qtpy.QtWidgets import QApplication
    >>> from napari_immunotrack.widgets._common import volume_layer_data
    >>> app = QApplication.instance() or QApplication([])
    >>> series = Volume(np.ones((5, 2, 3, 3), np.float32), np.eye(4), "MR",
    ...                 metadata={"OffsetsPPM": [-300, -3.5, 0, 3.5, 300]}, name="CEST")
    >>> data, kwargs, _kind = volume_layer_data(series)
    >>> viewer = ViewerModel()
    >>> _ = viewer.add_image(data, **kwargs)
    >>> panel = build_cest_panel(viewer)
    >>> panel.series_combo.currentText(), panel.offsets_edit.text(), panel.wassr_combo.currentText()
    ('CEST', '-300, -3.5, 0, 3.5, 300', '(none)')
    """
    return CestPanel(viewer)


__all__ = ["MAP_STYLE", "CestPanel", "build_cest_panel", "parse_numbers", "sample_cest_paths"]
