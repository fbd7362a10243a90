"""Scanner-format benchmarks: opening a ParaVision scan and a dynamic Inveon study.

Run: ``.venv/bin/python benchmarks/bench_scanner_formats.py`` (under a minute;
writes to a temporary folder removed at the end). Each figure is the best of
REPEATS opens after the imports (the first import of dask costs about a
second once per process and is printed apart).

Requirements (issue 20)
- A 256 x 256 x 128 ParaVision scan (int16, a slope per frame) opens in <= 1 s:
  as 128 2D slices and as one 3D volume, scan folder to values in memory.
- A 20-frame Inveon study (128 x 128 x 159, float32) opens lazily in <= 1 s.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

REPEATS = 3


def best_of(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    t0 = time.perf_counter()
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.simulate.scanner_files import write_inveon, write_paravision

    print(f"imports: {time.perf_counter() - t0:.2f} s")
    tmp = Path(tempfile.mkdtemp(prefix="bench_scanner_"))
    try:
        rng = np.random.default_rng(0)
        stored = rng.integers(0, 30000, (128, 256, 256)).astype(np.int16)
        pos = [[-12.8, -12.8, -12.8 + 0.2 * k] for k in range(128)]
        slices = write_paravision(
            tmp / "2d" / "1",
            stored,
            extent=(25.6, 25.6),
            orientation=np.tile(np.eye(3).ravel(), (128, 1)),
            positions=pos,
            slopes=np.linspace(0.5, 1.5, 128),
        )
        t = best_of(lambda: np.asarray(load_volume(slices.parent.parent).data).sum())
        print(f"ParaVision 256x256x128 as 128 slices (int16 + slope per frame): {t:.3f} s (requirement <= 1 s)")
        vol3d = write_paravision(
            tmp / "3d" / "1",
            stored[None],
            dim=3,
            extent=(25.6, 25.6, 25.6),
            orientation=np.eye(3),
            positions=[pos[0]],
            frame_groups=[(1, "FG_CYCLE")],
            slopes=[0.7],
        )
        t = best_of(lambda: np.asarray(load_volume(vol3d.parent.parent).data).sum())
        print(f"ParaVision 256x256x128 3D volume (int16 + slope): {t:.3f} s (requirement <= 1 s)")
        dyn = rng.random((20, 159, 128, 128)).astype(np.float32)
        hdr = write_inveon(
            tmp / "dyn",
            dyn,
            frame_starts=np.arange(20) * 60.0,
            frame_durations=[60.0] * 20,
            scale_factors=np.linspace(1, 2, 20),
        )
        t1 = time.perf_counter()
        load_volume(hdr)
        first = time.perf_counter() - t1
        t = best_of(lambda: load_volume(hdr))
        print(
            f"Inveon 20 frames x 128x128x159 float32, lazy open: {t:.3f} s (first open in this process, "
            f"importing dask: {first:.3f} s) (requirement <= 1 s)"
        )
        t = best_of(lambda: np.asarray(load_volume(hdr).data[7]))
        print(f"Inveon: reading one frame of it into memory: {t:.3f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
