"""Write the README's "What the demo shows on the sample study" numbers from a demo run.

The README must show what ``immunotrack demo`` prints, not figures measured on other data. Run the
demo, then this script on its comparison table; ``--update README.md`` replaces the block between the
``<!-- demo-numbers:start -->`` and ``<!-- demo-numbers:end -->`` markers (else the block is printed):

    immunotrack demo -o /tmp/demo --overwrite --no-report
    python scripts/demo_readme_table.py /tmp/demo/comparison_with_truth.csv --update README.md

``tests/test_readme_demo.py`` runs the demo and fails when the README's numbers no longer match it
(after the sample study is regenerated, for example).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"
#: README rows: (quantity in the comparison table, row title)
ROWS = (
    ("PET %ID", "PET %ID vs truth"),
    ("SPECT %ID", "SPECT %ID vs truth"),
    ("MPI iron", "MPI iron vs truth"),
    ("19F atoms", "19F atoms vs truth"),
)
SITES = (
    ("liver", "liver"),
    ("spleen", "spleen"),
    ("tumour", "tumour"),
    ("ln_inguinal_right", "inguinal node (right)"),
    ("ln_iliac", "iliac node"),
)


def _percent(value) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:+.1f} %".replace("-", "−")


def block(comparison: pd.DataFrame, session: str = "day1") -> str:
    """The README block (markers included) made from a demo's ``comparison_with_truth.csv``."""
    err = {(q, s): e for q, s, e in zip(comparison["quantity"], comparison["site"], comparison["error_percent"])}
    measured = {(q, s): m for q, s, m in zip(comparison["quantity"], comparison["site"], comparison["measured"])}
    lines = [
        START,
        "| readout (error against the simulator's truth) | " + " | ".join(t for _, t in SITES) + " |",
        "|---" * (len(SITES) + 1) + "|",
    ]
    for quantity, title in ROWS:
        if any((quantity, s) in err for s, _ in SITES):
            lines.append(f"| {title} | " + " | ".join(_percent(err.get((quantity, s))) for s, _ in SITES) + " |")
    tre = [
        f"{measured[(f'registration TRE mean ({d})', 'MRI field of view')]:.2f}"
        for d in ("pet", "spect", "mpi")
        if (f"registration TRE mean ({d})", "MRI field of view") in measured
    ]
    recall_key = next((k for k in measured if k[0].startswith("iron foci found within 1 mm")), None)
    dual = comparison[comparison["quantity"] == "dual-mode site confirmed"]
    confounders = comparison[comparison["quantity"] == "confounder confirmed"]
    lines.append("")
    lines.append(
        f"Registration TRE (PET / SPECT / MPI to MRI): {' / '.join(tre)} mm mean; iron clusters: "
        f"{measured[('iron clusters detected', 'all')]:.0f} found, precision "
        f"{measured[('clusters within 1 mm of a true focus (precision)', 'all')]:.2f}, recall "
        f"{measured[recall_key]:.2f} of {recall_key[1]}; {int(dual['measured'].sum())} of {len(dual)} dual-mode "
        f"sites confirmed, {int(confounders['measured'].sum())} of {len(confounders)} confounders confirmed "
        f"(session {session})."
    )
    lines.append(END)
    return "\n".join(lines)


def update(readme: Path, text: str) -> None:
    """Replace the block between the markers in ``readme``."""
    content = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    readme.write_text(pattern.sub(lambda _: text, content))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", type=Path, help="comparison_with_truth.csv written by `immunotrack demo`")
    parser.add_argument("--update", type=Path, metavar="README", help="rewrite the block in this file")
    parser.add_argument("--session", default="day1")
    args = parser.parse_args(argv)
    text = block(pd.read_csv(args.comparison), args.session)
    if args.update:
        update(args.update, text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
