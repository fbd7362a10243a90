"""Type-check the pure layers and fail on any mypy error that is not in the recorded baseline.

The pure layers had 143 type errors when mypy was introduced (issue 16); fixing them all at once would
touch files that other work was changing. The baseline (``scripts/mypy-baseline.txt``) records them
without line numbers, so moving code does not matter, but any NEW error fails, and an error that has been
fixed is reported so that the baseline only ever shrinks.

Usage::

    python scripts/mypy_ratchet.py            # check (exit 1 on a new error)
    python scripts/mypy_ratchet.py --update   # rewrite the baseline from the current errors (after fixing some)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scripts" / "mypy-baseline.txt"
PACKAGE = "src/napari_immunotrack"
#: The layers below the GUI line that are type-checked (a name that does not exist yet is skipped).
PURE_LAYERS = (
    "volume.py",
    "affines.py",
    "params.py",
    "params",
    "errors.py",
    "outputs.py",
    "provenance.py",
    "io",
    "registration.py",
    "registration",
    "analysis",
)

_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def targets() -> list[str]:
    """The pure-layer files and packages that exist in this checkout."""
    return [f"{PACKAGE}/{name}" for name in PURE_LAYERS if (ROOT / PACKAGE / name).exists()]


def run_mypy() -> tuple[list[tuple[str, str]], str]:
    """(key, full line) of every error mypy reports, and mypy's whole output."""
    proc = subprocess.run([sys.executable, "-m", "mypy", *targets()], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        sys.exit(f"mypy failed to run:\n{proc.stdout}{proc.stderr}")
    errors = []
    for line in proc.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            errors.append((f"{match['path']}: {match['message']}", line))
    return errors, proc.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline from the current errors")
    args = parser.parse_args(argv)
    errors, _ = run_mypy()
    current = Counter(key for key, _ in errors)
    if args.update:
        BASELINE.write_text("".join(f"{key}\n" for key in sorted(current.elements())))
        print(f"mypy baseline: {sum(current.values())} errors recorded in {BASELINE.relative_to(ROOT)}")
        return 0
    baseline = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else Counter()
    new = current - baseline
    fixed = baseline - current
    for key, line in errors:
        if new[key] > 0:
            print(line)
            new[key] -= 1
    n_new = sum((current - baseline).values())
    print(
        f"mypy ({', '.join(t.removeprefix(PACKAGE + '/') for t in targets())}): {sum(current.values())} errors, "
        f"{sum(baseline.values())} in the baseline, {n_new} new, {sum(fixed.values())} fixed"
    )
    if fixed:
        print("  fixed since the baseline (run `python scripts/mypy_ratchet.py --update` to record it):")
        for key in sorted(fixed.elements()):
            print(f"    {key}")
    return 1 if n_new else 0


if __name__ == "__main__":
    sys.exit(main())
