"""Benchmark: PET SUV statistics for 100 ROIs on a 400 x 400 x 600 PET.

Requirement (issue 8): SUV statistics (mean/min/median/max/SD, SUVpeak, total
activity, %ID) for 100 ROIs on a 400x400x600 PET in under 2 s.

Figures printed:
1. ``quantify_pet`` with the ROI labels on the PET's grid (the requirement);
2. the same with the ROIs on another axis-aligned grid (exact overlap weights);
3. the same with the ROIs on a rotated grid (supersampled weights, n = 3).
The time to build the synthetic data is not counted; peak memory is the
process's maximum resident size.

Run: .venv/bin/python benchmarks/bench_quantify.py
"""

from __future__ import annotations

import resource
import time
import warnings

import numpy as np

from napari_immunotrack.analysis import pet as P
from napari_immunotrack.analysis.roi import carry_rois
from napari_immunotrack.volume import Volume

SHAPE = (600, 400, 400)  # slices, rows, columns
VOXEL_MM = 2.0
N_ROIS = 100


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    aff = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    pet = np.full(SHAPE, 5000.0, np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    spheres = []
    for k in range(1, N_ROIS + 1):
        r_vox = rng.uniform(3.0, 10.0)
        c = rng.uniform(12, np.array(SHAPE) - 12)
        lo = np.maximum(np.floor(c - r_vox).astype(int), 0)
        hi = np.minimum(np.ceil(c + r_vox).astype(int) + 1, SHAPE)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        inside = np.linalg.norm(g - c, axis=-1) <= r_vox
        labels[sl][inside & (labels[sl] == 0)] = k
        pet[sl][inside] = rng.uniform(1e4, 1e5)
        spheres.append((c, r_vox))
    meta = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "RadionuclideTotalDose": 370e6,
        "RadionuclideHalfLife": 6586.2,
        "RadiopharmaceuticalStartDateTime": "20240101090000",
        "SeriesDate": "20240101",
        "SeriesTime": "100000",
        "PatientWeight": 75.0,
        "PatientSize": 1.8,
        "PatientSex": "M",
    }
    return Volume(pet, aff, "PT", "Bq/mL", meta, "pet"), Volume(labels, aff, "SEG", "label", {}, "rois"), spheres


def timed(label, fn, requirement=None):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    req = f"   (requirement: < {requirement} s: {'PASS' if dt < requirement else 'FAIL'})" if requirement else ""
    print(f"{label:<62s} {dt:7.2f} s{req}")
    return out


def main():
    warnings.simplefilter("ignore")
    print(f"PET {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels of {VOXEL_MM} mm, {N_ROIS} ROIs (spheres r = 6-20 mm)")
    pet, rois, _ = make_data()
    small = np.zeros((20, 20, 20), np.uint8)
    small[5:9, 5:9, 5:9] = 1
    P.quantify_pet(pet, Volume(small, rois.affine), suv_types=("bw",))  # warm up the imports
    df = timed(
        "1. SUV statistics, ROIs on the PET grid (with SUVpeak)",
        lambda: P.quantify_pet(pet, rois, suv_types=("bw", "lbm")),
        requirement=2.0,
    )
    assert len(df) == N_ROIS
    timed("   the same without SUVpeak", lambda: P.quantify_pet(pet, rois, peak=False))

    # 2. ROIs on another axis-aligned grid: 1.5 mm voxels, axes reversed, covering the middle of the PET
    lo = rois.index_to_world([[100, 50, 50]])[0]
    roi_shape = (400, 400, 533)
    roi_aff = np.array([[0, 0, 1.5, lo[0] + 0.3], [0, 1.5, 0, lo[1] + 0.3], [1.5, 0, 0, lo[2] + 0.3], [0, 0, 0, 1]])
    other = rois.resample_to((roi_shape, roi_aff), order=0)
    n_other = len(np.unique(other.numpy())) - 1
    timed(f"2. ROIs ({n_other}) on a 1.5 mm axis-aligned grid: carry (exact overlap)", lambda: carry_rois(other, pet))
    timed("   carry + SUV statistics", lambda: P.quantify_pet(pet, other))

    # 3. ROIs on a rotated grid
    a = np.deg2rad(10.0)
    rotm = np.eye(4)
    rotm[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    centre = other.center_world()
    tr = np.eye(4)
    tr[:3, 3] = centre
    moved = other.replace(affine=tr @ rotm @ np.linalg.inv(tr) @ other.affine)
    timed("3. ROIs on a grid rotated by 10 degrees: carry (supersample 3)", lambda: carry_rois(moved, pet))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak_mb:.0f} MB (PET alone {pet.data.nbytes / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
