"""GTM and RBV speed: 20 ROIs on a 256^3 volume (issue 19: GTM <= 2 s, RBV <= 10 s).

Run: PYTHONPATH=src python benchmarks/bench_pvc.py
Data: 20 balls of radius 4-12 voxels in a 256^3 float32 image (1 mm voxels) with a warm
background, blurred with a 2.5 mm FWHM Gaussian; ROIs on the same grid (the time of carrying
ROIs from another grid is analysis/roi.py's and is not included). Two cases: every ball uniform
(the deconvolution finds nothing to do), and every ball holding its activity in 3 foci (the
within-region deconvolution runs its 30 iterations on every ROI; the body is given as the background
region there, since the automatic one keeps voxels above 5 % of the peak level).
"""

import time

import numpy as np

from napari_immunotrack.analysis.pvc import PointSpread, gaussian_blur, gtm, rbv
from napari_immunotrack.analysis.roi import carry_rois
from napari_immunotrack.volume import Volume


def main(n=256, n_rois=20, seed=0, foci=False, verbose=False):
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n, n), np.uint8)
    zz, yy, xx = np.ogrid[:n, :n, :n]
    body = (zz - n / 2) ** 2 + (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (0.45 * n) ** 2
    truth = np.where(body, 1.0, 0.0).astype(np.float32)
    for k in range(n_rois):
        r = rng.uniform(4, 12)
        c = rng.uniform(0.15 * n, 0.85 * n, 3)  # spread over the body: the working box is most of the volume
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, n)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        ball = (zz[sl[0]] - c[0]) ** 2 + (yy[:, sl[1]] - c[1]) ** 2 + (xx[:, :, sl[2]] - c[2]) ** 2 < r**2
        lab[sl][ball] = k + 1
        if foci:
            box = np.zeros(ball.shape, np.float32)
            total = rng.uniform(2, 10) * ball.sum()  # the same mean as a uniform ball, held in 3 foci
            inner = np.argwhere(ball & (gaussian_blur(ball.astype(np.float32), (1.0, 1.0, 1.0)) > 0.9))
            for p in inner[rng.choice(len(inner), 3, replace=False)]:
                box[tuple(p)] = total / 3
            box = gaussian_blur(box, (1.0, 1.0, 1.0)) * ball
            truth[sl][ball] = box[ball]
        else:
            truth[sl][ball] = rng.uniform(2, 10)
    psf = PointSpread(2.5)
    img = Volume(gaussian_blur(truth, psf.sigma_voxels(np.eye(4))), np.eye(4), "PT")
    rmap = carry_rois(Volume(lab, np.eye(4)), img)
    # with foci the image's peaks are far above the body, so the body is given as the background region
    # (the automatic one keeps voxels above 5 % of the peak level)
    kw = {"background_mask": body & (lab == 0)} if foci else {}
    t0, c0 = time.perf_counter(), time.process_time()
    g = gtm(img, rmap, psf, **kw)
    t1, c1 = time.perf_counter(), time.process_time()
    rbv(img, rmap, psf, gtm_result=g)
    t2, c2 = time.perf_counter(), time.process_time()
    rbv(img, rmap, psf, **kw)
    t3, c3 = time.perf_counter(), time.process_time()
    err = [abs(c / truth[lab == k].mean() - 1) for k, c in zip(g.labels, g.corrected)]
    if verbose:
        g0 = gtm(img, rmap, psf, within_region="uniform", **kw)
        for k, c, c0 in zip(g.labels, g.corrected, g0.corrected):
            t = truth[lab == k].mean()
            print(
                k,
                (lab == k).sum(),
                round(100 * (g.measured[list(g.labels).index(k)] / t - 1), 1),
                round(100 * (c0 / t - 1), 1),
                round(100 * (c / t - 1), 1),
            )
    print(
        f"{n}^3, {len(g.labels)} ROIs + background, {'foci' if foci else 'uniform'}: GTM {t1 - t0:.2f} s, "
        f"RBV after GTM {t2 - t1:.2f} s, RBV from scratch {t3 - t2:.2f} s wall (CPU {c1 - c0:.2f} / "
        f"{c2 - c1:.2f} / {c3 - c2:.2f} s); max |GTM error| {100 * max(err):.2f} %, cond {g.condition_number:.3g}"
    )


if __name__ == "__main__":
    main()
    main(foci=True)
