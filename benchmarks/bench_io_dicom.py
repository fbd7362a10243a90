"""Benchmark of the DICOM reader and writer.

Writes a temporary 300-slice 256x256 PET-like series (per-slice rescale,
shuffled file names) and times ``io.load_volume`` on it (requirement: < 3 s),
plus the writer and the peak memory of the read.

Run: ``.venv/bin/python benchmarks/bench_io_dicom.py``
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from napari_immunotrack.io import load_volume
from napari_immunotrack.io.dicom import write_dicom_series
from napari_immunotrack.volume import Volume


def main(n_slices: int = 300, size: int = 256, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((n_slices, size, size)) * 1e4).astype(np.float32)
    affine = np.array([[0, 0, 0.8, -100], [0, 0.8, 0, -100], [1.5, 0, 0, -200], [0, 0, 0, 1.0]])
    vol = Volume(data, affine, modality="PT", unit="Bq/mL", name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        write_dicom_series(vol, folder, shuffle_names=True)
        t_write = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = load_volume(folder)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()
        load_volume(folder)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        err = np.abs(back.numpy() - data).max()
        print(
            f"series: {n_slices} slices of {size}x{size} float32 -> int16 + per-slice slope, {size_mb:.1f} MB on disk"
        )
        print(f"write_dicom_series: {t_write:.2f} s (no requirement)")
        print(
            f"load_volume (best of {repeats}): {min(times):.2f} s, all {[round(t, 2) for t in times]}"
            f"  (requirement < 3 s)"
        )
        print(f"peak Python memory during load: {peak / 1e6:.0f} MB for a {data.nbytes / 1e6:.0f} MB volume")
        print(f"round-trip max |error|: {err:.3g} (quantisation step <= {data.max() / 65535:.3g})")
        print(f"affine identical: {np.allclose(back.affine, affine, atol=1e-6)}")


if __name__ == "__main__":
    main()
