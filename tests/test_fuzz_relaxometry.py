"""Property-based search for crashes in the relaxometry fits (docs/methods/relaxometry.md).

Tiny random 4D series of every data type, with NaN, infinite, negative, constant and all-zero
samples, sampling lists that are right, short, unsorted, negative or NaN, any noise sigma and
B1 maps on other grids. The contract: maps on the series' grid whose times are positive or NaN,
whose rates are 1000 / time, whose NaN voxels are flagged unreliable and whose flags are the
documented bits; or an InputError with a one-line message.

Budget: about 250 examples, a few seconds on one core (the budget helper of test_fuzz_analysis).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_analysis import budget, result_or_input_error

from napari_immunotrack.analysis import relaxometry as rx
from napari_immunotrack.volume import Volume

DTYPES = ["uint8", "int16", "int64", "float32", "float64"]


@st.composite
def series_st(draw):
    hostile = draw(st.sampled_from([False, False, True]))
    model = draw(st.sampled_from(rx.MODELS))
    n = draw(st.integers(2, 8))
    shape = (n,) + draw(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if model in ("t2star", "t2"):
        x = np.sort(rng.uniform(1, 60, n)) if model == "t2star" else 8.0 * np.arange(1, n + 1)
        truth = rng.uniform(3, 200, shape[1:])
        clean = 1000 * np.exp(-x[:, None, None, None] / truth)
    elif model == "t1vfa":
        x = rng.uniform(1, 60, n)
        e1 = np.exp(-15.0 / rng.uniform(200, 3000, shape[1:]))
        a = np.deg2rad(x)[:, None, None, None]
        clean = 5000 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    else:
        x = np.sort(rng.uniform(10, 5000, n))
        r1 = 1000.0 / rng.uniform(200, 3000, shape[1:])
        e = np.exp(-x[:, None, None, None] / 1000.0 * r1)
        clean = 1000 * (1 - e) if model == "t1sr" else np.abs(1000 * (1 - 2 * e))
    data = clean + rng.normal(0, draw(st.sampled_from([0.0, 5.0, 50.0])), shape)
    if hostile:
        kind = draw(st.sampled_from(["nan", "inf", "negative", "zero", "constant", "list"]))
        if kind == "nan":
            data.flat[rng.integers(0, data.size)] = np.nan
        elif kind == "inf":
            data.flat[rng.integers(0, data.size)] = np.inf
        elif kind == "negative":
            data = data - 2000
        elif kind == "zero":
            data = np.zeros(shape)
        elif kind == "constant":
            data = np.full(shape, 7.0)
        else:
            x = draw(st.sampled_from([x[:-1], x[::-1], -x, np.full(n, np.nan), np.zeros(n)]))
    dtype = draw(st.sampled_from(DTYPES))
    if dtype != "float32" and dtype != "float64":
        finite = np.isfinite(data)
        info = np.iinfo(dtype)
        data = np.clip(np.where(finite, data, 0), info.min, info.max).astype(dtype)
    else:
        data = data.astype(dtype)
    sigma = draw(st.sampled_from([None, 0.0, 5.0] + ([-1.0, float("nan")] if hostile else [])))
    key = {
        "t2star": "echo_times_ms",
        "t2": "echo_times_ms",
        "t1vfa": "flip_angles_deg",
        "t1sr": "saturation_times_ms",
        "t1ir": "inversion_times_ms",
    }[model]
    kwargs = {key: [float(v) for v in x], "noise_sigma": sigma}
    if model == "t1vfa":
        kwargs["tr_ms"] = 15.0
        if draw(st.booleans()):
            b1_shape = shape[1:] if not hostile else tuple(s + 1 for s in shape[1:])
            kwargs["b1"] = Volume(rng.uniform(0.7, 1.2, b1_shape).astype(np.float32), np.eye(4))
    if model == "t2" and draw(st.booleans()):
        kwargs["method"] = "epg"
    if model == "t2star" and draw(st.booleans()):
        kwargs["method"] = "loglinear"
    return model, Volume(data, np.diag([0.5, 0.5, 1.0, 1.0]), "MR", "a.u.", {}, "fuzz"), kwargs


@budget(250)
@given(series_st())
def test_fits_give_consistent_maps_or_one_line_refusals(case):
    model, series, kwargs = case
    maps = result_or_input_error(rx.fit_relaxation, series, model, **kwargs)
    if maps is None:
        return
    t = maps.time_ms.numpy()
    r = maps.rate_per_s.numpy()
    flags = maps.unreliable.numpy()
    good = maps.goodness.numpy()
    for vol in (maps.time_ms, maps.rate_per_s, maps.goodness, maps.unreliable, maps.amplitude):
        assert vol.spatial_shape == series.spatial_shape and np.allclose(vol.affine, series.affine)
    assert np.all(np.isnan(t) | ((t > 0) & np.isfinite(t)))
    both = np.isfinite(t)
    np.testing.assert_allclose(r[both], 1000.0 / t[both], rtol=1e-4)
    assert np.all(flags[np.isnan(t)] != 0)  # no value without a reason
    assert set(np.unique(flags)) <= set(range(8))
    assert np.all(np.isnan(good) | (good <= 1.0 + 1e-6))
