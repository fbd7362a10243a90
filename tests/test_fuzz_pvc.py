"""Property tests of the partial-volume correction (docs/methods/pvc.md): when the image is exactly the
model (regions with uniform values, blurred by the same Gaussian), GTM and RBV return the values."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_immunotrack.analysis.pvc import PointSpread, gaussian_blur, gtm, rbv
from napari_immunotrack.volume import Volume

FUZZ_SCALE = max(1, int(os.environ.get("IMMUNOTRACK_FUZZ_SCALE", "1")))


def budget(n):
    return settings(
        max_examples=n * FUZZ_SCALE, deadline=None, derandomize=FUZZ_SCALE == 1, suppress_health_check=list(HealthCheck)
    )


@budget(150)
@given(data=st.data())
def test_model_images_are_corrected_exactly(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    shape = tuple(data.draw(st.integers(14, 22)) for _ in range(3))
    # any axis order, flips and anisotropic spacing
    perm = data.draw(st.permutations([0, 1, 2]))
    spacing = [data.draw(st.sampled_from([0.5, 0.8, 1.0, 1.5])) for _ in range(3)]
    flips = [data.draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)]
    aff = np.eye(4)
    aff[:3, :3] = np.eye(3)[:, perm] * np.array(spacing) * np.array(flips)
    n_roi = data.draw(st.integers(1, 4))
    lab = np.zeros(shape, np.uint8)
    grid = np.indices(shape)
    for k in range(n_roi):
        c = [rng.uniform(3, s - 3) for s in shape]
        r = rng.uniform(1.5, 4.0)
        lab[sum((g - ci) ** 2 for g, ci in zip(grid, c)) < r * r] = k + 1
    present = [k for k in range(1, n_roi + 1) if (lab == k).any()]
    lab = np.searchsorted([0, *present], lab).astype(np.uint8) * np.isin(lab, present)
    values = rng.uniform(0.5, 10.0, len(present) + 1)
    background = data.draw(st.booleans())
    truth = np.choose(lab, [values[0] if background else 0.0, *values[1:]])
    fwhm = [data.draw(st.sampled_from([0.0, 1.0, 2.0, 3.0])) for _ in range(3)]
    psf = PointSpread(fwhm)
    img = Volume(gaussian_blur(truth, psf.sigma_voxels(aff)), aff, "PT")
    mask = np.ones(shape, bool) if background else None
    g = gtm(img, Volume(lab, aff), psf, background=background, background_mask=mask, condition_limit=np.inf)
    np.testing.assert_allclose(g.corrected, values[1:], rtol=2e-3, atol=1e-3)
    assert np.all(np.isfinite(g.matrix)) and np.all(g.matrix >= -1e-7)
    if background:
        assert abs(g.background_corrected - values[0]) < 1e-2 * values[0] + 1e-3
    vol, _, means = rbv(img, Volume(lab, aff), psf, gtm_result=g)
    np.testing.assert_allclose(means, values[1:], rtol=2e-3, atol=1e-3)
    assert vol.data.shape == shape and np.all(np.isfinite(vol.numpy()))
