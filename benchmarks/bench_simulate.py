#!/usr/bin/env python
"""Speed of the simulator: one full-size timepoint with all modalities (issue 4).

    .venv/bin/python benchmarks/bench_simulate.py

Requirement: a full study (all modalities, one timepoint, 192 x 192 x 256 MRI
at 0.15 mm) simulates in under 20 s on 2 cores. Printed: simulation in memory,
and simulation plus writing every file (NIfTI, DICOM, OME-TIFF, ground truth);
the scenes the analysis tests use (< 1 s each).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def timed(fn, *args, **kwargs):
    """Wall time, and CPU time of this process (less sensitive to other jobs on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    timed.cpu = time.process_time() - cpu
    return time.perf_counter() - start, out


def main():
    import numpy as np  # noqa: F401  (imports outside the timings)
    import pydicom  # noqa: F401
    import tifffile  # noqa: F401

    from napari_immunotrack.simulate import cluster_scene, dual_mode_scene, quantitative_scene, registration_pair
    from napari_immunotrack.simulate.study import SIZES, make_study, make_subject, simulate_timepoint

    print(
        f"cores available: {os.cpu_count()}; load average now: {os.getloadavg()[0]:.1f} "
        "(wall times grow with other jobs; CPU time does not)"
    )
    print(f"full size MRI grid: {SIZES['full']['mri_shape']} at {SIZES['full']['mri_voxel']} mm")
    subject = make_subject(1, 0)
    t, res = timed(simulate_timepoint, 1.0, subject=subject, size="full")
    shapes = {k: v.spatial_shape for k, v in res["volumes"].items()}
    print(
        f"simulate one timepoint, all modalities, in memory: {t:6.1f} s wall, {timed.cpu:5.1f} s CPU"
        "   (requirement < 20 s)"
    )
    print(f"  grids: {shapes}")
    with tempfile.TemporaryDirectory() as tmp:
        t, out = timed(make_study, Path(tmp) / "study", seed=0, timepoints_days=(1,), size="full")
        mb = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 1e6
        print(
            f"make_study one timepoint, full size, simulate + write: {t:6.1f} s wall, {timed.cpu:5.1f} s CPU"
            f"   (requirement < 20 s; {mb:.0f} MB written)"
        )
    for fn in (cluster_scene, dual_mode_scene, quantitative_scene, registration_pair):
        t, _ = timed(fn, seed=0)
        print(f"{fn.__name__:>20}: {t:5.2f} s   (target < 1 s)")


if __name__ == "__main__":
    main()
