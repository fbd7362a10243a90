#!/usr/bin/env python
"""Regenerate the bundled sample study ``sample_data/mouse_study`` (deterministic).

    python scripts/make_sample_data.py            # writes sample_data/mouse_study (refuses to replace it)
    python scripts/make_sample_data.py --overwrite

Every choice, and why:

- ``seed=2024``: everything (anatomy jitter, cell foci, noise, scanner poses)
  follows from it, so the files are identical on every run and machine
  (same numpy). DICOM UIDs are derived from the seed, not random.
- One subject (``sub-01``), timepoints day 0, 1, 3 and 7: day 0 is the
  baseline MRI scanned 30 min before injection (MRI only: nothing to see in
  the other modalities before injection); days 1, 3, 7 follow migration to
  the tumour and its draining node, division (label per cell halves),
  exocytosis, death and macrophage uptake (docs/methods/simulator.md#time-course-where-cells-and-label-are-day-by-day).
- ``size="sample"``: MRI 152 x 96 x 112 at 0.25 mm (the torso from the liver
  to the inguinal nodes), PET 0.7 mm and SPECT 0.8 mm over the whole mouse,
  19F and MPI 0.5 mm, optical 0.2 mm pixels. Small enough for git (about
  25 MB) while the blooms, nodes and tumour rim stay visible. Use
  ``make_study(..., size="full")`` for 0.15 mm MRI.
- Field 9.4 T, MRI SNR 20 (muscle), 19F reference-tube SNR 15: typical
  preclinical values (see simulate/mri.py and simulate/study.py).
- Everything else is :class:`napari_immunotrack.simulate.study.StudyDesign`'s
  default, recorded in ``ground_truth.json`` under "design".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 2024
TIMEPOINTS_DAYS = (0, 1, 3, 7)
SIZE = "sample"


def folder_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "sample_data" / "mouse_study"), help="study folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing study folder")
    args = parser.parse_args(argv)

    from napari_immunotrack.errors import InputError
    from napari_immunotrack.progress import text_progress
    from napari_immunotrack.simulate.study import make_study

    start = time.perf_counter()
    try:
        out = make_study(
            args.out,
            seed=SEED,
            timepoints_days=TIMEPOINTS_DAYS,
            subjects=1,
            size=SIZE,
            overwrite=args.overwrite,
            progress=text_progress("simulating"),
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = folder_size_mb(Path(out))
    print(f"wrote {out} ({size:.1f} MB) in {time.perf_counter() - start:.1f} s")
    if size > 30:
        print("warning: the sample study is over 30 MB; shrink the grids before committing it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
