"""Benchmark: the time-lapse movie of the sample study (issue 17).

Requirement: a movie of 4 timepoints at 1080p in <= 20 s. Measured here end to end, as
``immunotrack movie`` does it: load the study (PET DICOM series, registrations, T2w), render
the 4 key frames at 1920x1080, cross-fade and encode (MP4 with the ffmpeg on the PATH when
there is one, and GIF with Pillow). Also the 3D variant (rotating coronal MIP, 24 views per
timepoint at 1280x720) for information.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_movie.py
"""

from __future__ import annotations

import resource
import tempfile
import time
import warnings
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study"


def main():
    from napari_immunotrack.movie import find_ffmpeg, make_movie

    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("PET axial 1080p GIF", "pet.gif", dict(track="PET", plane="axial", size="1920x1080")),
            ("19F coronal 1080p GIF", "f19.gif", dict(track="19F", plane="coronal", size="1920x1080")),
        ]
        if find_ffmpeg():
            cases.insert(0, ("PET axial 1080p MP4", "pet.mp4", dict(track="PET", plane="axial", size="1920x1080")))
            cases.append(
                (
                    "PET rotating MIP 720p MP4 (24 views x 4 days)",
                    "mip.mp4",
                    dict(track="PET", plane="mip", size="1280x720", rotate_views=24),
                )
            )
        for name, out, kw in cases:
            t0 = time.perf_counter()
            res = make_movie(SAMPLE, Path(tmp) / out, **kw)
            wall = time.perf_counter() - t0
            size_mb = (Path(tmp) / out).stat().st_size / 1e6
            rows.append((name, len(res.stamps), res.n_frames, wall, res.seconds, size_mb))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'movie':48s} {'days':>4s} {'frames':>6s} {'total s':>8s} {'load':>6s} {'render':>7s} {'encode':>7s} "
        f"{'MB':>6s}"
    )
    for name, days, frames, wall, sec, mb in rows:
        print(
            f"{name:48s} {days:4d} {frames:6d} {wall:8.2f} {sec['load']:6.2f} {sec['render']:7.2f} "
            f"{sec['write']:7.2f} {mb:6.2f}"
        )
    print(f"peak memory (RSS) {peak:.0f} MB; ffmpeg: {find_ffmpeg() or 'none (MP4 not measured)'}")
    first = rows[0]
    ok = first[1] == 4 and first[3] <= 20.0
    print(f"requirement: 4 timepoints at 1080p <= 20 s: {first[3]:.1f} s -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
