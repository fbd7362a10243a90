"""I/O benchmarks: NIfTI load time and opening an OME-Zarr larger than memory.

Run: ``.venv/bin/python benchmarks/bench_io.py`` (about a minute; writes to a
temporary folder that is removed at the end). Each figure is printed with
its requirement.

Requirements (issue 3)
- ``load_volume`` of a 256^3 float32 NIfTI, .nii and .nii.gz: < 1 s.
- An OME-Zarr of 2048 x 4096 x 4096 uint16 (64 GiB logical, sparse on disk)
  opens in < 2 s using < 200 MB more memory (peak RSS during the open minus
  RSS before it, in a fresh subprocess after the imports; Linux /proc).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPEATS = 3


def _phantom(n: int = 256) -> np.ndarray:
    """A smooth image with noise (compresses like a real scan, unlike pure noise)."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:n, :n, :n]
    r2 = ((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2) / (n / 3) ** 2
    img = (1000.0 * (r2 < 1) + 200.0 * np.cos(x / 9.0) * (r2 < 1)).astype(np.float32)
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return img


def bench_nifti(tmp: Path) -> None:
    import nibabel as nib

    from napari_immunotrack.io import load_volume

    data = _phantom()
    affine = np.diag([0.1, 0.1, 0.1, 1.0])
    for ext in (".nii", ".nii.gz"):
        path = tmp / f"phantom256{ext}"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        size_mb = path.stat().st_size / 1e6
        times, times_full = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            vol = load_volume(path)
            t1 = time.perf_counter()
            total = float(np.asarray(vol.data).sum())  # touch every voxel (a .nii is memory-mapped)
            t2 = time.perf_counter()
            times.append(t1 - t0)
            times_full.append(t2 - t0)
            del vol
        assert np.isfinite(total)
        best, best_full = min(times), min(times_full)
        ok = "PASS" if best_full < 1.0 else "FAIL"
        print(
            f"NIfTI 256^3 float32 {ext:7s} ({size_mb:5.1f} MB): load_volume {best:.3f} s, "
            f"load + read every voxel {best_full:.3f} s  [requirement < 1 s: {ok}]"
        )


_CHILD = r"""
import json, sys, time
import numpy as np, dask.array, zarr
from napari_immunotrack.io import load_volume
import napari_immunotrack.io.zarr

def rss_mb():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024.0, int(status["VmHWM"].split()[0]) / 1024.0

open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
before, _ = rss_mb()
t0 = time.perf_counter()
vol = load_volume(sys.argv[1])
t1 = time.perf_counter()
now, peak = rss_mb()
plane = np.asarray(vol.data[vol.data.shape[0] // 2])  # what napari does for one 2D slice
t2 = time.perf_counter()
_, peak_plane = rss_mb()
levels = [list(a.shape) for a in vol.metadata["multiscale"]["arrays"]]
print(json.dumps({"open_s": t1 - t0, "rss_delta_mb": peak - before,
                  "plane_s": t2 - t1, "plane_rss_delta_mb": peak_plane - before,
                  "plane_sum": float(plane.sum()), "shape": list(vol.shape), "levels": levels,
                  "dtype": str(vol.data.dtype), "spacing": vol.spacing.tolist()}))
"""


def make_sparse_ome_zarr(path: Path, shape=(2048, 4096, 4096), chunks=(64, 64, 64), levels: int = 3) -> None:
    """An OME-NGFF 0.4 pyramid whose chunks are all fill value except a few (small on disk)."""
    import zarr

    from napari_immunotrack.io.zarr import multiscale_attrs

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    scales, trans = [], []
    spacing = np.array([0.004, 0.002, 0.002])  # mm (light-sheet-like: 4 um z, 2 um in plane)
    for k in range(levels):
        f = 2**k
        lvl_shape = tuple(s // f for s in shape)
        arr = group.create_array(
            str(k),
            shape=lvl_shape,
            chunks=chunks,
            dtype="uint16",
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        # a few real chunks, including the ones the slice read below touches
        block = np.full(chunks, 1000 + k, np.uint16)
        mid = lvl_shape[0] // 2 // chunks[0] * chunks[0]
        for z, y, x in ((0, 0, 0), (mid, 0, 0), (mid, 64, 128), (lvl_shape[0] - 64, lvl_shape[1] - 64, 0)):
            arr[z : z + 64, y : y + 64, x : x + 64] = block
        scales.append(list(spacing * f))
        trans.append(list((f - 1) / 2 * spacing))
    group.attrs.update(
        {"multiscales": [multiscale_attrs([("z", "space"), ("y", "space"), ("x", "space")], scales, trans)]}
    )


def bench_zarr(tmp: Path) -> None:
    path = tmp / "big.ome.zarr"
    t0 = time.perf_counter()
    make_sparse_ome_zarr(path)
    disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e3
    print(
        f"(made a sparse 2048x4096x4096 uint16 OME-Zarr, 64 GiB logical, {disk:.0f} kB on disk, "
        f"in {time.perf_counter() - t0:.1f} s)"
    )
    results = []
    for _ in range(REPEATS):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best_open = min(r["open_s"] for r in results)
    worst_rss = max(r["rss_delta_mb"] for r in results)
    r = results[0]
    assert r["shape"] == [2048, 4096, 4096], r["shape"]
    assert r["plane_sum"] == 2 * 64 * 64 * 1000, r["plane_sum"]  # the two written chunks the mid plane crosses
    print(f"OME-Zarr 64 GiB open: {best_open:.3f} s  [requirement < 2 s: {'PASS' if best_open < 2 else 'FAIL'}]")
    print(
        f"OME-Zarr 64 GiB open: max RSS delta {worst_rss:.1f} MB  "
        f"[requirement < 200 MB: {'PASS' if worst_rss < 200 else 'FAIL'}]"
    )
    print(
        f"   (levels {r['levels']}; one 4096x4096 plane read in {min(x['plane_s'] for x in results):.2f} s, "
        f"RSS delta then {max(x['plane_rss_delta_mb'] for x in results):.0f} MB; no requirement)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_nifti(tmp)
        bench_zarr(tmp)


if __name__ == "__main__":
    main()
