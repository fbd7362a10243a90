"""The README shows the numbers `immunotrack demo` prints on the sample study (not figures from other data)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pandas as pd

from napari_immunotrack.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "demo_readme_table.py"


def _cells(text):
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and "vs truth" in line:
            title, *values = [c.strip() for c in line.strip("|").split("|")]
            rows[title] = [float(v.replace("−", "-").rstrip(" %")) for v in values]
    return rows


def test_readme_demo_numbers_equal_a_fresh_demo_run(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--no-report"]) == 0
    printed = capsys.readouterr().out
    comparison = pd.read_csv(tmp_path / "demo" / "comparison_with_truth.csv")
    made = runpy.run_path(str(SCRIPT))["block"](comparison)
    readme = (ROOT / "README.md").read_text()
    current = re.search(r"<!-- demo-numbers:start -->.*?<!-- demo-numbers:end -->", readme, re.S).group(0)
    fresh, written = _cells(made), _cells(current)
    assert set(written) == set(fresh) and len(written) == 4
    refresh = "README demo numbers are stale: run the two lines in the README's 'What the demo shows' section"
    for title, values in fresh.items():
        for now, then in zip(values, written[title]):
            # a few tenths of a percent vary between runs (multi-threaded registration)
            assert abs(now - then) <= 1.0, f"{refresh} ({title}: {then} in README, {now} now)"
    # the table's cells are what the demo printed in its comparison (rounded to 0.1 %)
    for value in comparison.loc[comparison["quantity"] == "MPI iron", "error_percent"]:
        assert f"{value:.4g}" in printed
