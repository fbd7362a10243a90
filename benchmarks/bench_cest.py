"""CEST speed: multi-pool Lorentzian fit of 128 x 128 voxels x 50 offsets (requirement <= 60 s on 2 cores).

Spectra: the package's Bloch-McConnell simulator (muscle, tumour and an LRP depot at 9.4 T,
1 uT / 2 s CW), a smooth B0 field of +-0.4 ppm, Rician noise at SNR 100, 1 M0 frame at
-300 ppm + 49 offsets from -6 to 6 ppm = 50 frames. Timed: the whole ``analyse_cest``
(Z, B0 from the Z-spectrum minimum, correction, MTRasym, 6-pool fit) and the fit alone with 1
and 3 starts. Run: ``PYTHONPATH=src python benchmarks/bench_cest.py [--quick]``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from napari_immunotrack.analysis import cest
from napari_immunotrack.simulate import cest as sim


def main(quick: bool = False):
    n = 64 if quick else 128
    labels = np.ones((1, n, n), np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]
    labels[0][(yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2] = 2
    labels[0][(yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 12) ** 2] = 3
    b0 = (0.4 * (xx - n / 2) / (n / 2))[None].astype(float)
    m0 = np.full(labels.shape, 1000.0)
    t0 = time.perf_counter()
    out = sim.simulate_cest(
        labels,
        np.diag([0.2, 0.2, 1.0, 1.0]),
        {1: "muscle", 2: "tumour", 3: "depot"},
        sim.default_offsets(49, 6.0),
        b0,
        m0,
        snr=100.0,
        seed=0,
    )
    print(f"simulated {n}x{n} voxels x {out['series'].shape[0]} frames in {time.perf_counter() - t0:.1f} s")
    pools = cest.make_pools(["amide", "amine", "noe", "mt"], {"lrp": 3.4})
    t0, c0 = time.perf_counter(), time.process_time()
    res = cest.analyse_cest(out["series"], pools=pools, mtrasym_ppm=[3.4, 3.5])
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = res.b0_ppm - b0
    print(
        f"analyse_cest (Z, B0 minimum, correction, MTRasym, {len(pools)}-pool fit, 3 starts): {total:.1f} s wall, {cpu:.1f} s CPU; "
        f"B0 error median |{np.nanmedian(np.abs(err)):.4f}| ppm"
    )
    z = res.z.reshape(res.dw.size, -1)
    for restarts in (1, 3):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = cest.fit_lorentzians(z, res.dw, pools, restarts=restarts, z_floor=0.02)
        print(
            f"fit alone, {restarts} start(s): {time.perf_counter() - t0:.1f} s wall, "
            f"{time.process_time() - c0:.1f} s CPU, "
            f"converged {100 * fit.converged.mean():.0f} %, median rmse {np.nanmedian(fit.rmse):.4f}"
        )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
