"""Reliability costs: what the no-lost-work and provenance machinery adds (issue 12).

Run: ``.venv/bin/python benchmarks/bench_reliability.py`` (about half a minute; a
temporary folder is removed at the end). Each figure is printed with what it is
compared to. Issue 12 names no time limit; these show the guarantees are cheap:

- study state save with three 256x256x128 label layers (content-hashed names,
  JSON last, old files removed) vs writing the same three NIfTI files plainly;
- a 256^3 float32 NIfTI output with its provenance sidecar (which now carries
  the output's SHA-256) vs the same write without a sidecar;
- provenance hash of a 2 GiB lazy (dask) array: peak extra memory stays near
  one slab (256 MB), not the array's size (fresh subprocess, Linux /proc).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_immunotrack import provenance, study
from napari_immunotrack.io import save_labels, save_volume
from napari_immunotrack.volume import Volume


def best_of(n, func):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_state_save(folder: Path) -> None:
    rng = np.random.default_rng(0)
    labels = {}
    state = study.new_state(folder, folder / study.STATE_NAME, "01", "day1")
    for k in range(3):
        data = (rng.random((128, 256, 256)) > 0.995).astype(np.uint8) * (k + 1)
        rel = f"immunotrack_state_layers/roi{k}.nii.gz"
        labels[rel] = Volume(data, np.diag([0.2, 0.1, 0.1, 1.0]), "SEG", "label", name=f"roi{k}")
        state["layers"].append({"name": f"roi{k}", "kind": "labels", "saved": rel})
    path = folder / study.STATE_NAME
    safe = best_of(3, lambda: study.save_state_with_labels(state, path, labels, overwrite=True))
    plain_dir = folder / "plain"
    plain_dir.mkdir()
    plain = best_of(3, lambda: [save_labels(v, plain_dir / Path(r).name, overwrite=True) for r, v in labels.items()])
    print(
        f"state save, 3 labels 256x256x128: {safe:.2f} s (plain NIfTI writes of the same: {plain:.2f} s, "
        f"{safe / plain:.2f}x); files left in the layers folder: "
        f"{len(list(study.saved_layers_dir(path).iterdir()))} (expected 3)"
    )


def bench_sidecar_hash(folder: Path) -> None:
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(size=(256, 256, 256)).astype(np.float32), np.eye(4), "MR")
    rec = provenance.record("bench")
    bare = best_of(3, lambda: save_volume(vol, folder / "bare.nii", overwrite=True))
    with_rec = best_of(3, lambda: save_volume(vol, folder / "rec.nii", overwrite=True, provenance=rec))
    print(
        f"256^3 float32 .nii output: {bare:.2f} s bare, {with_rec:.2f} s with the sidecar and its output "
        f"SHA-256 (+{with_rec - bare:.2f} s for {vol.data.nbytes / 2**20:.0f} MiB)"
    )


_CHILD = """
import dask.array as da
from napari_immunotrack import provenance
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
before = rss()
lazy = da.random.default_rng(2).random((512, 1024, 512), chunks=(16, 1024, 512))  # 2 GiB float64
provenance.sha256_array(lazy)
print(rss() - before)
"""


def bench_lazy_hash() -> None:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    print(
        f"provenance hash of a 2 GiB lazy array: peak +{float(out.stdout.split()[-1]):.0f} MB "
        f"(slab 256 MB; the array would be 2048 MB), {time.perf_counter() - t0:.1f} s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_state_save(Path(tmp))
        bench_sidecar_hash(Path(tmp))
    bench_lazy_hash()


if __name__ == "__main__":
    main()
