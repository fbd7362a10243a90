"""Benchmark of the enhanced multi-frame reader and of DICOM SEG / SR / RTSTRUCT in and out.

On a 128-slice 256x256 MR series (written by the plugin): the classic series read, the same series as one
Legacy Converted Enhanced MR file (highdicom) read, a two-segment SEG (binary and labelmap) written
against it from labels on a 2x finer grid and read back, a TID 1500 SR written and read back, and an
RTSTRUCT of two ROIs (ring with a hole, 128 slices x 3 contours of 256 points) rasterised.

Run: ``.venv/bin/python benchmarks/bench_dicom_objects.py``
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _timed(fn, repeats=1):
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return out, best


def main(n_slices: int = 128, size: int = 256) -> None:
    import highdicom as hd
    import pandas as pd
    import pydicom

    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.dicom import write_dicom_series
    from napari_immunotrack.io.dicom_export import read_sr, write_seg, write_sr
    from napari_immunotrack.volume import Volume

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    affine = np.array([[0, 0, -0.2, 25], [0, -0.2, 0, 25], [0.3, 0, 0, -20], [0, 0, 0, 1.0]])
    vol = Volume((rng.random((n_slices, size, size)) * 1e3).astype(np.float32), affine, modality="MR")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = write_dicom_series(vol, tmp / "mr")
        ref, t_classic = _timed(lambda: load_volume(folder), 2)
        datasets = [pydicom.dcmread(h["file"]) for h in ref.metadata["slice_headers"]]
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            legacy_datasets=datasets,
            series_instance_uid=hd.UID(),
            series_number=2,
            sop_instance_uid=hd.UID(),
            instance_number=1,
        )
        enhanced.save_as(tmp / "enhanced.dcm")
        _, t_enhanced = _timed(lambda: load_volume(tmp / "enhanced.dcm"), 2)
        print(f"read {n_slices}x{size}x{size}: classic series {t_classic:.2f} s, enhanced file {t_enhanced:.2f} s")

        fine = affine.copy()
        fine[:3, :3] /= 2
        fine[:3, 3] -= affine[:3, :3].sum(axis=1) / 4
        labels = np.zeros((2 * n_slices, 2 * size, 2 * size), np.uint8)
        labels[40:120, 100:300, 100:300] = 3
        labels[150:200, 350:420, 50:140] = 8
        lab = Volume(labels, fine, "SEG", "label", {"label_names": {3: "a", 8: "b"}})
        for kind in ("binary", "labelmap"):
            path, t_write = _timed(
                lambda: write_seg(lab, folder, tmp / f"{kind}.dcm", segmentation_type=kind, overwrite=True)
            )
            _, t_read = _timed(lambda: load_volume(path, reference=folder))
            print(
                f"SEG {kind}: write (with resampling from a {labels.shape} grid) {t_write:.2f} s, "
                f"{path.stat().st_size / 1e6:.1f} MB; read onto the series {t_read:.2f} s"
            )
        table = pd.DataFrame(
            {"label": [3, 8], "suv_bw_mean": [1.5, 2.5], "volume_ml": [0.1, 0.2], "iron_ng": [10.0, 20.0]}
        )
        sr, t_sr = _timed(lambda: write_sr(table, tmp / "binary.dcm", folder, tmp / "sr.dcm"))
        _, t_srr = _timed(lambda: read_sr(sr))
        print(f"SR: write {t_sr:.2f} s (includes reading the source headers), read {t_srr:.3f} s")

        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_dicom_objects import _circle, _contour, _rtstruct

        contours = []
        for z in range(n_slices):
            contours += [_contour(_circle((128, 128), r), z, ref) for r in (90, 40, 15)]
        _rtstruct(
            tmp / "rs.dcm",
            ref,
            ref.metadata["SeriesInstanceUID"],
            ref.metadata["FrameOfReferenceUID"],
            [(1, "ring", contours)],
        )
        _, t_rt = _timed(lambda: load_volume(tmp / "rs.dcm", reference=ref))
        print(f"RTSTRUCT: {len(contours)} contours of 256 points rasterised in {t_rt:.2f} s")


if __name__ == "__main__":
    main()
