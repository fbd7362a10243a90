"""The faster cluster-segmentation internals give exactly what the plain versions gave (issue 18, speed).

Each optimised helper is compared with a straightforward reference written
here from its definition (the code it replaced), on random and simulated
inputs: equality, not closeness.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_immunotrack.analysis.body import _fill_holes_every_way
from napari_immunotrack.analysis.cluster_noise import moment_sums


def _fill_holes_slice_by_slice(mask):
    """Holes filled in 3D and in every slice along each axis, one binary_fill_holes per slice."""
    out = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(mask, axis, 0)
        filled = np.empty_like(moved)
        for i in range(moved.shape[0]):
            filled[i] = ndimage.binary_fill_holes(moved[i])
        out |= np.moveaxis(filled, 0, axis)
    return out


def _moment_sums_plain(data, mask):
    vals = np.asarray(data[mask], np.float64)
    n_mask = vals.size
    vals = vals[np.isfinite(vals)]
    return n_mask, vals.size, float(vals.sum()), float(np.dot(vals, vals))


@pytest.mark.parametrize("seed", range(12))
def test_fill_holes_by_labelling_equals_slice_by_slice(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 16, 3))
    mask = rng.random(shape) < rng.uniform(0.3, 0.9)
    if seed % 2:
        mask = ndimage.binary_closing(mask)
    expected = _fill_holes_slice_by_slice(mask)
    got = _fill_holes_every_way(mask)
    assert got.dtype == bool and np.array_equal(got, expected)
    # the same mask inside a larger field of view, off-centre (only its bounding box is labelled)
    pad = [(int(rng.integers(0, 4)), int(rng.integers(0, 4))) for _ in range(3)]
    padded = np.pad(mask, pad)
    assert np.array_equal(_fill_holes_every_way(padded), _fill_holes_slice_by_slice(padded))
    assert not _fill_holes_every_way(np.zeros((3, 4, 5), bool)).any()


def test_fill_holes_keeps_tubes_cut_open_by_the_field_of_view():
    body = np.zeros((20, 24, 24), bool)
    body[:, 4:20, 4:20] = True  # cut by both z faces
    body[:, 10:13, 10:13] = False  # a vessel open at both z faces: a hole only in the slices across z
    body[8:11, 6:8, 6:8] = False  # an enclosed void: a 3D hole
    got = _fill_holes_every_way(body)
    assert got[:, 10:13, 10:13].all() and got[8:11, 6:8, 6:8].all()
    assert not got[:, :4].any() and np.array_equal(got, _fill_holes_slice_by_slice(body))


def test_moment_sums_equal_with_and_without_non_finite_values():
    rng = np.random.default_rng(3)
    data = rng.normal(100, 10, (40, 20, 20)).astype(np.float32)
    mask = rng.random(data.shape) < 0.3
    n_mask, n, s1, s2 = moment_sums(data, mask)
    assert (n_mask, n) == (int(mask.sum()), int(mask.sum()))
    assert s1 == pytest.approx(float(data[mask].astype(np.float64).sum()), rel=1e-12)
    assert s2 == pytest.approx(_moment_sums_plain(data, mask)[3], rel=1e-12)
    data[mask & (rng.random(data.shape) < 0.1)] = np.nan
    n_mask2, n2, s1b, _ = moment_sums(data, mask)
    plain = _moment_sums_plain(data, mask)
    assert (n_mask2, n2) == plain[:2] and n2 < n_mask2
    assert s1b == pytest.approx(plain[2], rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_segment_clusters_equals_the_plain_implementation(seed, with_baseline, monkeypatch):
    """Labels and table are the same with the plain slice-by-slice fill and whole-volume relabelling."""
    import napari_immunotrack.analysis.body as body
    from napari_immunotrack.analysis.clusters import segment_clusters
    from napari_immunotrack.simulate import cluster_scene

    s = cluster_scene(seed=seed, snr=15.0 + 5 * seed, n_clusters=6)
    post = s["post"].replace(data=s["post"].data.copy())
    if seed == 2:  # a few NaN voxels take the non-finite paths
        post.data[0, :3, :3] = np.nan
    kw = dict(reference_mask=s["reference_mask"], search_mask=None if seed == 1 else s["search_mask"])
    if with_baseline:
        kw["baseline"] = s["pre"]
    fast = segment_clusters(post, **kw)
    monkeypatch.setattr(body, "_fill_holes_every_way", _fill_holes_slice_by_slice)
    plain = segment_clusters(post, **kw)
    labels = np.asarray(fast.labels.data)
    assert labels.dtype == np.asarray(plain.labels.data).dtype
    assert np.array_equal(labels, np.asarray(plain.labels.data))
    assert fast.table.equals(plain.table) and len(fast.table) > 0
    # relabelling touched every component: labels are 1..n with the table's voxel counts
    counts = np.bincount(labels.ravel())[1:]
    assert np.array_equal(counts, fast.table["voxels"].to_numpy())


@pytest.mark.parametrize("seed", range(8))
def test_class_median_is_numpys_median_of_the_class(seed):
    from napari_immunotrack.analysis.body import _class_median, otsu_threshold

    rng = np.random.default_rng(seed)
    n = [10, 5000, 20_000, 300_000][seed % 4]
    air = np.abs(rng.normal(0, rng.uniform(1, 10), n // 2) + 1j * rng.normal(0, 3, n // 2))
    values = np.concatenate([air, rng.normal(100, rng.uniform(1, 30), n - n // 2)]).astype(np.float32)
    if seed % 2:
        values = np.round(values)  # many ties
    values = rng.permutation(values)
    t = otsu_threshold(values)
    n_dark = int(np.count_nonzero(values <= t))
    assert _class_median(values, t, n_dark, dark=True) == float(np.median(values[values <= t]))
    assert _class_median(values, t, n_dark, dark=False) == float(np.median(values[values > t]))


def test_grow_is_binary_dilation():
    from napari_immunotrack.analysis.clusters import _grow

    rng = np.random.default_rng(4)
    for shape in [(1, 1, 1), (3, 5, 7), (12, 9, 10)]:
        mask = rng.random(shape) < 0.2
        assert np.array_equal(_grow(mask), ndimage.binary_dilation(mask))
        assert np.array_equal(_grow(_grow(~mask)), ndimage.binary_dilation(~mask, iterations=2))


@pytest.mark.parametrize("density", [0.002, 0.6])
def test_body_outline_on_candidates_equals_the_full_mask(density):
    """The subsampled body applied to candidate voxels only (sparse, or slab by slab when dense) clears exactly
    the candidates the full-grid mask (``_upsampled_inside``) clears, in any region of the grid."""
    from napari_immunotrack.analysis.body import outside_body
    from napari_immunotrack.analysis.clusters import _BodyOutline, _upsampled_inside
    from napari_immunotrack.simulate import cluster_scene

    s = cluster_scene(seed=1, n_clusters=4)
    data = s["post"].numpy()
    found = outside_body(data, step=3)
    full = _upsampled_inside(found, data)
    body = _BodyOutline(found)
    rng = np.random.default_rng(0)
    for region in [(slice(0, 64), slice(0, 96), slice(0, 96)), (slice(5, 21), slice(7, 60), slice(31, 96))]:
        cand = rng.random(tuple(r.stop - r.start for r in region)) < density
        got = cand.copy()
        body.apply(got, data[region], [r.start for r in region])
        assert np.array_equal(got, cand & full[region])
        assert (cand & ~full[region]).any()  # something was cleared
    assert body.touches(np.ones(data.shape, bool), data) and not body.touches(~full, data)


@pytest.mark.parametrize("method", ["fraction", "percentile", "blob"])
def test_segment_with_the_body_outline_equals_the_full_mask(method, monkeypatch):
    """Without a baseline, on a subsampled body: labels and table as with the full-grid search mask."""
    import napari_immunotrack.analysis.clusters as clusters
    from napari_immunotrack.simulate import cluster_scene

    s = cluster_scene(seed=2, n_clusters=6)
    monkeypatch.setattr(clusters, "sample_step", lambda shape, target=0: 2)
    kw = dict(reference_mask=s["reference_mask"], method=method)
    fast = clusters.segment_clusters(s["post"], **kw)
    original = clusters._search_inside_body

    def full_mask(post, search, collected):
        search, record, body = original(post, search, collected)
        if body is not None:
            inside = body.full_inside(post.data)
            search = inside if search is None else search & inside
        return search, record, None

    monkeypatch.setattr(clusters, "_search_inside_body", full_mask)
    plain = clusters.segment_clusters(s["post"], **kw)
    assert fast.parameters["outside_body"]["mask_grid_step"] == 2 and len(fast.table) > 0
    assert np.array_equal(np.asarray(fast.labels.data), np.asarray(plain.labels.data))
    assert fast.table.equals(plain.table)


def test_preview_slices_equal_the_volume_with_the_body_outline():
    """A 0.1 mm image without a baseline finds its body on every second voxel (an outline applied to the
    candidates); the live preview's single slices still equal the whole-volume candidates."""
    from napari_immunotrack.analysis import clusters
    from napari_immunotrack.simulate import cluster_scene

    s = cluster_scene(seed=3, n_clusters=6)
    prep = clusters.prepare(s["post"], reference_mask=s["reference_mask"])
    assert prep.body is not None and prep.outside_body["mask_grid_step"] == 2
    for method in ("fraction", "blob", "percentile"):
        rule = prep.rule(method)
        full = prep.candidates(rule)
        assert full.any()
        for axis in range(3):
            for index in (0, 5, 31, full.shape[axis] - 1):
                assert np.array_equal(prep.preview(rule, axis, index), np.take(full, index, axis=axis))
