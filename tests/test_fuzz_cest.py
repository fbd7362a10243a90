"""Property-based search for crashes in the CEST analysis (docs/methods/cest.md).

Random small 4D series (1-4 voxels a side, 3-20 frames) with random offsets (repeats, M0
frames or none, unsorted), NaN/inf/zero/negative values, M0 images of the wrong shape, WASSR
series and random pools. The contract: maps on the series' grid whose values stay inside the
pools' bounds, or an InputError with a one-line message. Budget: about 300 examples.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_analysis import budget, result_or_input_error

from napari_immunotrack.analysis import cest
from napari_immunotrack.volume import Volume


@st.composite
def cest_inputs(draw):
    shape = tuple(draw(st.integers(1, 4)) for _ in range(3))
    n = draw(st.integers(3, 20))
    offsets = draw(
        st.lists(
            st.sampled_from([-300.0, -6.0, -3.5, -2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 3.4, 3.5, 6.0, 300.0]),
            min_size=n,
            max_size=n,
        )
    )
    kind = draw(st.sampled_from(["lorentz", "random", "zeros", "nan", "negative"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = np.asarray(offsets)[:, None, None, None]
    if kind == "lorentz":
        data = 1000 * (1 - 0.9 / (1 + ((x - rng.uniform(-0.5, 0.5)) / 0.7) ** 2)) * np.ones((1,) + shape)
        data[np.abs(x[:, 0, 0, 0]) >= 100] = 1000.0
    elif kind == "random":
        data = rng.uniform(0, 1000, (n,) + shape)
    elif kind == "zeros":
        data = np.zeros((n,) + shape)
    elif kind == "nan":
        data = rng.uniform(0, 1000, (n,) + shape)
        data.flat[rng.integers(0, data.size, max(1, data.size // 5))] = rng.choice([np.nan, np.inf, -np.inf])
    else:
        data = rng.normal(0, 100, (n,) + shape)
    series = Volume(
        data.astype(draw(st.sampled_from([np.float32, np.float64, np.int16]))),
        np.eye(4),
        metadata={"SaturationOffsetsPPM": offsets} if draw(st.booleans()) else {},
    )
    m0 = None
    if draw(st.booleans()):
        m0_shape = shape if draw(st.booleans()) else (shape[0] + 1,) + shape[1:]
        m0 = Volume(rng.uniform(-10, 1000, m0_shape), np.eye(4))
    pools = draw(st.lists(st.sampled_from(["amide", "amine", "noe", "mt"]), max_size=4, unique=True))
    extra = {"rep": 3.4} if draw(st.booleans()) else None
    mtr = draw(st.lists(st.sampled_from([0.5, 2.0, 3.5, 10.0]), min_size=1, max_size=3))
    method = draw(st.sampled_from([None, "minimum", "fit", "none", "wassr"]))
    return series, offsets if draw(st.booleans()) else None, m0, pools, extra, mtr, method


@budget(300)
@given(cest_inputs())
def test_analyse_cest_gives_bounded_maps_or_one_line(inputs):
    series, offsets, m0, pools, extra, mtr, method = inputs
    try:
        pool_list = cest.make_pools(pools, extra)
    except Exception as exc:  # noqa: BLE001 - make_pools must only refuse with InputError
        from napari_immunotrack.errors import InputError

        assert isinstance(exc, InputError)
        return
    res = result_or_input_error(
        cest.analyse_cest, series, offsets, m0=m0, mtrasym_ppm=mtr, pools=pool_list, b0_method=method, max_iter=15
    )
    if res is None:
        return
    spatial = series.shape[1:]
    for vol in res.maps.values():
        assert vol.shape == spatial and np.allclose(vol.affine, series.affine)
    if res.fit is not None:
        _, lo, hi = cest._pack(res.fit.pools)
        p = res.fit.params[np.all(np.isfinite(res.fit.params), axis=1)]
        assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)
