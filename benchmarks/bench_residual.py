"""Benchmark of the baseline's residual misalignment (block matching; docs/methods/baseline-residual.md).

Run: ``.venv/bin/python benchmarks/bench_residual.py``

Prints, each line naming its data:
- the time of ``residual_misalignment`` (best of 5) on a 64x96x96 pair (``cluster_scene`` seed 0,
  0.1 mm voxels, the baseline repositioned as in tests/test_baseline_repositioned.py, its true pose
  composed with a 0.2 mm shift) against the requirement (well under 0.3 s), and on a 128x256x256
  scene of the same kind (8.4 M voxels): the cost follows the number of blocks, not the image size;
- the residual measured against the known leftover error (0.2 mm = 2 voxels).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from napari_immunotrack.analysis.residual import residual_misalignment  # noqa: E402
from napari_immunotrack.simulate import cluster_scene  # noqa: E402


def _pair(shape):
    from test_baseline_repositioned import repositioned_baseline

    scene = cluster_scene(seed=0, snr=20, shape=shape)
    baseline, pose = repositioned_baseline(scene, 100)
    return scene["post"], baseline, pose


def main() -> None:
    warnings.simplefilter("ignore")
    leftover = np.eye(4)
    leftover[0, 3] = 0.2
    for shape in ((64, 96, 96), (128, 256, 256)):
        post, baseline, pose = _pair(shape)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            est = residual_misalignment(post, baseline, pose @ leftover)
            times.append(time.perf_counter() - t)
        n = int(np.prod(shape))
        print(
            f"residual_misalignment, cluster_scene seed 0 {shape[0]}x{shape[1]}x{shape[2]} ({n / 1e6:.1f} M voxels), "
            f"repositioned baseline, true pose + 0.2 mm: best {min(times):.3f} s (median {np.median(times):.3f} s; "
            f"limit 0.3 s on 64x96x96); measured {est.residual_mm:.3f} mm / {est.residual_voxels:.2f} voxels "
            f"(truth 0.200 mm / 2.00), {est.n_blocks}/{est.n_tried} blocks trusted"
        )


if __name__ == "__main__":
    main()
