"""The workspace fits the screen (issue 17): `immunotrack view` on the sample study, every dock open, at
1366×768 and 1920×1080. Each screen size is its own X server (``xvfb-run``), so the probe runs in a child
process; it opens every dock, ticks the three-plane layout, switches 3D and back, steps a timepoint, and
reports the window's frame and each dock's visible content size. Screenshots are kept in the test's
temporary folder (CI artefacts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

PROBE = Path(__file__).with_name("gui_layout_probe.py")


def _probe(width, height, out):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is needed for the screen-size tests (Debian package xvfb)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DISPLAY", None)
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {width}x{height}x24", sys.executable, str(PROBE), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("width,height", [(1366, 768), (1920, 1080)])
def test_workspace_stays_on_screen_with_every_dock(width, height, tmp_path):
    report = _probe(width, height, tmp_path)
    sx, sy, sw, sh = report["screen"]
    assert (sw, sh) == (width, height)
    steps = {s["step"]: s for s in report["steps"]}
    assert {"open", "three-plane", "3D", "2D, next day"} <= set(steps)
    opened = [name for name in steps if name.startswith("dock:")]
    for wanted in ("Study", "Iron clusters", "T1-T2 confirmation", "Quantitative readouts", "Registration", "Maps"):
        assert any(wanted in name for name in opened), (wanted, opened)
    for step in report["steps"]:
        x, y, w, h = step["window"]
        # the whole frame inside the screen, at every step (never a window that grows)
        assert x >= sx and y >= sy and x + w <= sx + sw and y + h <= sy + sh, (step["step"], step["window"])
        assert w >= 0.7 * sw or w >= 1300, step["window"]  # and it uses the screen
        if step["step"].startswith("dock:"):
            name = step["step"][5:]
            shown = step["docks"][name]
            assert shown["visible_w"] > 150 and shown["visible_h"] > 120, (name, shown)
    # results appeared in the analysis docks (their runs finished) and the window did not grow
    assert len(report["ran"]) >= 2, report["ran"]
    for name in report["ran"]:
        shown = steps[f"results:{name}"]["docks"][name]
        assert shown["visible_w"] > 150 and shown["visible_h"] > 120, (name, shown)
    # the window never changed size once opened
    assert len({tuple(s["window"]) for s in report["steps"]}) == 1
    # the three planes are on screen the moment the box is ticked, and stay so after 3D and a step
    for plane, (w, h, visible_h) in report["three_plane_at_once"].items():
        assert w > 100 and visible_h > 100, (plane, w, h, visible_h)
    for name in ("three-plane", "3D", "2D, next day"):
        three = next(v for k, v in steps[name]["docks"].items() if k.startswith("Three planes"))
        assert three["visible_h"] > 100 and three["visible_w"] > 300, (name, three)
        study = next(v for k, v in steps[name]["docks"].items() if k == "Study")
        assert study["visible_h"] > 120, (name, study)  # result tables share the column at 768 px
    for shot in ("open.png", "three_plane.png", "next_day.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
