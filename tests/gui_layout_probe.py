"""Open `immunotrack view` on the sample study in a fresh X screen and report the window and dock geometry
(JSON on stdout), with screenshots. Run by tests/test_gui_layout.py inside ``xvfb-run -s "-screen 0 WxHx24"``;
not a test module itself."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(out_dir: str) -> None:
    from qtpy.QtWidgets import QApplication, QDockWidget

    from napari_immunotrack.commands.view import open_viewer, study_widget

    out = Path(out_dir)
    viewer = open_viewer(None, show=True)
    app = QApplication.instance()
    window = viewer.window._qt_window
    widget = study_widget(viewer)
    widget.finish_loading()
    screen = app.primaryScreen().availableGeometry()
    report = {"screen": [screen.x(), screen.y(), screen.width(), screen.height()], "steps": []}

    def settle(n=5):
        for _ in range(n):
            app.processEvents()
            time.sleep(0.02)

    def record(step, shot=None):
        settle()
        geo = window.frameGeometry()
        docks = {}
        for dock in window.findChildren(QDockWidget):
            if not dock.isVisible():
                continue
            content = dock.widget()
            region = content.visibleRegion().boundingRect() if content is not None else None
            docks[dock.windowTitle() or dock.objectName()] = {
                "visible_w": region.width() if region is not None else 0,
                "visible_h": region.height() if region is not None else 0,
                "frame": [dock.geometry().x(), dock.geometry().y(), dock.width(), dock.height()],
            }
        entry = {"step": step, "window": [geo.x(), geo.y(), geo.width(), geo.height()], "docks": docks}
        if shot:
            window.grab().save(str(out / shot))
            entry["screenshot"] = str(out / shot)
        report["steps"].append(entry)

    record("open", "open.png")
    # every dock in front once: its content must be visible (not squeezed to nothing)
    tabbed = [d for d in window.findChildren(QDockWidget) if d.isVisible() or window.tabifiedDockWidgets(d)]
    for dock in tabbed:
        dock.show()
        dock.raise_()
        record(f"dock:{dock.windowTitle() or dock.objectName()}")
    # results appear: the analysis docks run on their default inputs (what a user clicks first)
    ran = []
    for name in ("Iron clusters", "Quantitative readouts", "T1-T2 confirmation"):
        dock_widget = viewer.window.dock_widgets.get(f"{name} (napari-immunotrack)")
        if dock_widget is None or not hasattr(dock_widget, "run_button"):
            continue
        dock_widget.run_button.click()
        deadline = time.perf_counter() + 120
        while dock_widget.runner.running and time.perf_counter() < deadline:
            settle(1)
        ran.append(name)
        dock = dock_widget
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()
        dock.raise_()
        record(f"results:{name}", f"results_{name.split()[0].lower()}.png")
    report["ran"] = ran
    from napari_immunotrack.commands.view import study_dock

    study_dock(viewer).raise_()  # the box is ticked in the Study dock
    settle()
    widget.three_plane_box.setChecked(True)
    app.processEvents()  # one turn: the planes must be there at once
    panels = widget.three_plane.panels
    report["three_plane_at_once"] = {
        p: [panel.width(), panel.height(), panel.visibleRegion().boundingRect().height()] for p, panel in panels.items()
    }
    record("three-plane", "three_plane.png")
    widget.set_ndisplay(3)
    record("3D")
    widget.set_ndisplay(2)
    widget.step(1)
    record("2D, next day", "next_day.png")
    json.dump(report, sys.stdout)
    widget.shutdown()
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
