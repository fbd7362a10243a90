"""Small things of the analyst's desk (issue 17 item 9) on `immunotrack view`'s viewer: the slice slider names
its axis and shows the plane in mm, a visible anatomy layer is selected at start, dock tabs carry whole
titles, the Findings box shows several rows and keeps its groups open after a click, and the window
preset keeps its choice across a timepoint step."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_small_things(make_napari_viewer, monkeypatch):
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar

    from napari_immunotrack.commands import view

    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: make_napari_viewer(show=False))
    viewer = view.open_viewer(show=False)
    widget = view.study_widget(viewer)
    try:
        widget.finish_loading()
        # a visible, useful layer is selected (the shown anatomy), not the hidden baseline added last
        active = viewer.layers.selection.active
        assert active is not None and active.visible and active.name.startswith("T2starw (day")
        # the slice slider: axis S, and the plane's position in mm beside the index
        assert tuple(viewer.dims.axis_labels[-3:]) == ("S", "A", "R")
        slider = next(s for s in viewer.window._qt_viewer.dims.slider_widgets if s.axis == viewer.dims.ndim - 3)
        assert f"S = {viewer.dims.point[-3]:+.2f} mm" in slider.totslice_label.text()
        # dock tabs: whole titles, never elided
        titles = {d.windowTitle() for d in viewer.window._wrapped_dock_widgets.values()}
        assert {"Iron clusters", "T1-T2 confirmation", "Quantitative readouts"} <= titles
        bars = [b for b in viewer.window._qt_window.findChildren(QTabBar) if b.parent() is viewer.window._qt_window]
        assert bars and all(b.elideMode() == Qt.TextElideMode.ElideNone for b in bars)
        # the Findings box: room for six rows; a click does not collapse it
        rows = widget.findings_tree.fontMetrics().height()
        assert widget.findings_tree.minimumHeight() >= 6 * rows
        widget.refresh_findings()
        groups = [widget.findings_tree.topLevelItem(i) for i in range(widget.findings_tree.topLevelItemCount())]
        assert groups
        groups[0].setExpanded(True)
        child = groups[0].child(0)
        widget._finding_clicked(child, 0)
        widget.refresh_findings()
        assert widget.findings_tree.topLevelItem(0).isExpanded()
        # the window preset keeps the user's choice across a step (it went blank before)
        widget.preset_combo.setCurrentText("dark spots (1-70 %)")
        widget.step(1)
        assert widget.preset_combo.currentText() == "dark spots (1-70 %)"
        viewer.layers.selection.active = None
        widget._active_changed()
        assert widget.preset_combo.currentText() and widget.preset_combo.isEnabled()
        lo, hi = widget.apply_preset()  # applies to the shown anatomy when nothing is selected
        assert hi > lo
    finally:
        widget.shutdown()
