#!/usr/bin/env python
"""Regenerate the bundled sample study ``sample_data/mouse_study`` (deterministic).

    python scripts/make_sample_data.py            # writes sample_data/mouse_study (refuses to replace it)
    python scripts/make_sample_data.py --overwrite
    python scripts/make_sample_data.py --overwrite --one-bed   # the old layout: every session on one bed

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
  29 MiB with qmri/ and cest/; ``du -sh`` 30M) while the blooms, nodes and tumour rim stay visible. Use
  ``make_study(..., size="full")`` for 0.15 mm MRI.
- Field 9.4 T, MRI SNR 20 (muscle), 19F reference-tube SNR 15: typical
  preclinical values (see simulate/mri.py and simulate/study.py).
- Sessions acquired like a real lab (``StudyDesign(repositioned=True)``): each
  session has its own rigid pose of the animal (up to 15 degrees and 3 mm), its
  own grid and field of view, receiver gain, smooth coil bias and a small
  soft-tissue deformation; ``ground_truth.json`` records every pose
  (docs/methods/session-alignment.md#simulated-repositioning). The poses are
  drawn from the same seed. ``--one-bed`` writes the old layout instead.
- After simulating, the study is made ready for the viewer, demo, report and
  pipeline: ``alignment.align_study`` saves each session's alignment to the
  baseline session (``xfm/..._from-anat_to-sesday0.tfm``) and
  ``scripts/register_sample.py`` registers each session's PET, SPECT and MPI
  to its MRI (``--no-align`` skips both).
- Folders that ``make_study`` does not write (``qmri/``, ``cest/``, made by
  scripts/make_qmri_sample.py and make_cest_sample.py) are kept when
  ``--overwrite`` replaces the study.
- Everything else is :class:`napari_immunotrack.simulate.study.StudyDesign`'s
  default, recorded in ``ground_truth.json`` under "design".
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 2024
TIMEPOINTS_DAYS = (0, 1, 3, 7)
SIZE = "sample"
# written by other scripts (make_qmri_sample.py, make_cest_sample.py): carried over on --overwrite
KEPT_FOLDERS = ("qmri", "cest")


def folder_size_mb(path: Path) -> float:
    """Size in MiB (what ``du -sh`` calls M) of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "sample_data" / "mouse_study"), help="study folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing study folder")
    parser.add_argument("--one-bed", action="store_true", help="every session on one bed in one pose (the old layout)")
    parser.add_argument(
        "--no-align", action="store_true", help="skip the session alignment and the PET/SPECT/MPI registration"
    )
    args = parser.parse_args(argv)

    # gzip level 9 instead of nibabel's 1: the same voxels, about 4 % smaller (the sample must stay <= 30 MB)
    import nibabel.openers

    from napari_immunotrack.errors import InputError
    from napari_immunotrack.progress import text_progress
    from napari_immunotrack.simulate.study import StudyDesign, make_study

    nibabel.openers.Opener.default_compresslevel = 9
    start = time.perf_counter()
    target = Path(args.out)
    with tempfile.TemporaryDirectory() as keep_dir:
        kept = []
        if args.overwrite:
            for name in KEPT_FOLDERS:
                if (target / name).is_dir():
                    shutil.copytree(target / name, Path(keep_dir) / name)
                    kept.append(name)
        try:
            out = make_study(
                target,
                seed=SEED,
                timepoints_days=TIMEPOINTS_DAYS,
                subjects=1,
                size=SIZE,
                overwrite=args.overwrite,
                progress=text_progress("simulating"),
                design=StudyDesign(repositioned=not args.one_bed),
            )
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for name in kept:
            shutil.copytree(Path(keep_dir) / name, Path(out) / name)
            print(f"kept {name}/")
    if not args.one_bed and kept:
        print("the sessions moved: rerun scripts/make_qmri_sample.py and make_cest_sample.py with --overwrite")
    if not args.no_align:
        from napari_immunotrack.alignment import align_study

        results = align_study(out, overwrite=True)
        for r in results:
            print(f"align {r.session} -> {r.reference}: {r.status} {r.message}".rstrip())
        if any(r.status in ("doubtful", "failed") for r in results):
            print("error: a session of the sample could not be aligned; do not commit it", file=sys.stderr)
            return 2
        sys.path.insert(0, str(REPO / "scripts"))
        import register_sample

        register_sample.main(Path(out))
    size = folder_size_mb(Path(out))
    print(f"wrote {out} ({size:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    if size > 30:
        print("warning: the sample study is over 30 MiB; shrink the grids before committing it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
