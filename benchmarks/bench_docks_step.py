"""A timepoint step with every analysis dock open: time until every dock shows the new timepoint's inputs.

Run: ``xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/bench_docks_step.py``
(about a minute and a half). Requirement (issue 17): a step with all docks open <= 0.3 s until every dock
shows the new inputs.

On the sample study opened as ``immunotrack view`` opens it (Study dock + Quantitative readouts, Iron
clusters, T1-T2 confirmation, Registration, Maps, Cursor readout), plus the Figure and Movie docks. After
the background preparation of every timepoint (a user who looked at the first day for a moment), the
Study dock steps forward and back through the timepoints; each step is timed from the call to the
moment every dock shows that timepoint's layers (the docks hear of the step from the Study dock,
``widgets.roles.announce_step``, and refresh before napari redraws): Iron clusters' T2*w post, T1-T2 confirmation's T1w/T2w
post, the readouts' ROI and ticked layers, the Figure's anatomy and the Cursor readout's text. Printed:
the Study dock's own step (``StudyWidget.step`` returning), and the whole step until the docks show it;
the same Study step with no analysis dock open is measured in the same process first, for comparison.

Wall-clock figures depend on the machine's load (2 cores shared by 8 engineers when this was written);
the load average is printed beside them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time


def _wait(predicate, timeout=30.0) -> float:
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not predicate():
        QApplication.processEvents()
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the docks did not show the new timepoint")
    return time.perf_counter()


def _prepared(study) -> bool:
    return all(f.done() for f in study._cache.values()) and len(study._cache) >= len(study.model.sessions)


def _steps(study, check, rounds: int = 3) -> tuple[list, list]:
    """(study-only times, until-docks times) of forward-and-back steps."""
    own, total = [], []
    sessions = study.model.sessions
    for _ in range(rounds):
        for delta in [1] * (len(sessions) - 1) + [-1] * (len(sessions) - 1):
            t0 = time.perf_counter()
            study.step(delta)
            t1 = time.perf_counter()
            session = study.session
            t2 = _wait(lambda s=session: check(s))
            own.append(t1 - t0)
            total.append(t2 - t0)
    return own, total


def main() -> int:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        import shutil
        import subprocess

        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("needs a display (or xvfb-run)")
            return 1
        return subprocess.call([xvfb, "-a", "-s", "-screen 0 1366x768x24", sys.executable, *sys.argv])
    from qtpy.QtWidgets import QApplication

    from napari_immunotrack.commands.view import open_viewer, study_widget

    # 1. the Study dock alone
    viewer = open_viewer(show=True, docks=False)
    study = study_widget(viewer)
    _wait(lambda: _prepared(study), timeout=300)
    bare_own, _ = _steps(study, lambda s: True, rounds=2)
    viewer.close()
    QApplication.processEvents()

    # 2. every dock open
    viewer = open_viewer(show=True)
    for name in ("Figure", "Movie"):
        viewer.window.add_plugin_dock_widget("napari-immunotrack", name, tabify=True)
    study = study_widget(viewer)
    docks = {n.split(" (napari-immunotrack)")[0]: w for n, w in viewer.window.dock_widgets.items()}
    clusters, confirm, readout = docks["Iron clusters"], docks["T1-T2 confirmation"], docks["Quantitative readouts"]
    figure, cursor = docks["Figure"], docks["Cursor readout"]
    _wait(lambda: _prepared(study), timeout=300)

    def shown(session: str) -> bool:
        day = f"(day {session.replace('day', '')})"
        texts = [
            clusters.combos["post"].currentText(),
            confirm.combos["t1_post"].currentText(),
            confirm.combos["t2_post"].currentText(),
            readout.roi_combo.currentText(),
            figure.anatomy_combo.currentText(),
        ]
        ticked = readout.selected_layers()
        return (
            all(day in t for t in texts)
            and bool(ticked or session == "day0")
            and all(day in t for t in ticked)
            and day in cursor.text.text()
        )

    own, total = _steps(study, shown)
    load = os.getloadavg()[0]
    print(f"sample study, {len(study.model.sessions)} timepoints, {len(viewer.layers)} layers; load average {load:.1f}")
    print(
        f"Study dock alone, step:                      median {statistics.median(bare_own):.3f} s, "
        f"worst {max(bare_own):.3f} s ({len(bare_own)} steps)"
    )
    print(f"all docks open, Study's own step:            median {statistics.median(own):.3f} s, worst {max(own):.3f} s")
    print(
        f"all docks open, until every dock shows it:   median {statistics.median(total):.3f} s, "
        f"worst {max(total):.3f} s   (requirement <= 0.3 s)"
    )
    print(
        f"the docks' cost (all docks - Study alone):   median "
        f"{statistics.median(total) - statistics.median(bare_own):.3f} s"
    )
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
