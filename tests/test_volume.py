"""The Volume model: geometry round trips, canonical(), resampling, display, bad inputs.

Property tests (hypothesis) draw random rotations, spacings 0.01-10 mm and
translations; example counts are set per target so that the file stays well
under 40 s while running a few thousand examples in total.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from napari_immunotrack.errors import InputError
from napari_immunotrack.volume import Volume, as_labels, lps_to_ras_matrix, napari_to_ras, ras_to_napari

# 2000 examples per property (issue 12: a few thousand per target in CI time; about 60 s for this file)
BUDGET = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

spacing_st = st.floats(0.01, 10.0, allow_nan=False)
translation_st = st.floats(-500.0, 500.0, allow_nan=False)
angle_st = st.floats(-np.pi, np.pi, allow_nan=False)


def make_affine(angles, spacing, translation):
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("zyx", angles).as_matrix() @ np.diag(spacing)
    a[:3, 3] = translation
    return a


@st.composite
def affines(draw, spacing=spacing_st):
    return make_affine(
        [draw(angle_st) for _ in range(3)], [draw(spacing) for _ in range(3)], [draw(translation_st) for _ in range(3)]
    )


@st.composite
def signed_permutation_affines(draw):
    perm = draw(st.permutations([0, 1, 2]))
    signs = [draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)]
    spacing = [draw(spacing_st) for _ in range(3)]
    a = np.zeros((4, 4))
    for axis, world in enumerate(perm):
        a[world, axis] = signs[axis] * spacing[axis]
    a[:3, 3] = [draw(translation_st) for _ in range(3)]
    a[3, 3] = 1
    return a


shapes = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6))


def random_data(shape, seed):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------- geometry
@BUDGET
@given(affines(), st.lists(st.tuples(*[st.floats(-50, 300)] * 3), min_size=1, max_size=5))
def test_index_world_round_trip(affine, points):
    v = Volume(np.zeros((2, 2, 2), np.uint8), affine)
    idx = np.array(points, float)
    world = v.index_to_world(idx)
    np.testing.assert_allclose(world, (affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(v.world_to_index(world), idx, atol=1e-6)
    # world -> index -> world too
    np.testing.assert_allclose(v.index_to_world(v.world_to_index(world)), world, atol=1e-6)


@BUDGET
@given(affines())
def test_spacing_and_voxel_volume(affine):
    v = Volume(np.zeros((3, 2, 2), np.uint8), affine)
    np.testing.assert_allclose(v.spacing, np.linalg.norm(affine[:3, :3], axis=0))
    assert v.voxel_volume_mm3 == pytest.approx(np.prod(v.spacing), rel=1e-9)
    b = v.bounds_world()
    assert np.all(b[0] <= b[1])
    np.testing.assert_allclose(v.center_world(), v.index_to_world([[1, 0.5, 0.5]])[0])


@BUDGET
@given(signed_permutation_affines(), shapes, st.integers(0, 2**31))
def test_canonical_keeps_every_voxel_in_place(affine, shape, seed):
    data = random_data(shape, seed)
    v = Volume(data, affine)
    c = v.canonical()
    assert c.orientation() == "SAR"
    assert np.all(np.diag(c.affine[:3, :3][:, ::-1]) > 0)  # axis 0 -> +z (S), 1 -> +y (A), 2 -> +x (R)
    idx = np.argwhere(np.ones(shape, bool))
    world = v.index_to_world(idx)
    cidx = c.world_to_index(world)
    np.testing.assert_allclose(cidx, np.rint(cidx), atol=1e-6)  # lands on voxel centres
    cidx = np.rint(cidx).astype(int)
    np.testing.assert_array_equal(c.data[tuple(cidx.T)], data[tuple(idx.T)])
    # napari draws it with scale/translate in (z, y, x) = (S, A, R) order
    geo = c.napari_geometry()
    napari_world = np.asarray(geo["translate"]) + np.asarray(geo["scale"]) * cidx
    np.testing.assert_allclose(napari_to_ras(napari_world), world, atol=1e-6)
    np.testing.assert_allclose(ras_to_napari(world), napari_world, atol=1e-6)


@BUDGET
@given(signed_permutation_affines(), st.integers(0, 2**31))
def test_canonical_4d_moves_only_spatial_axes(affine, seed):
    data = random_data((3, 2, 4, 5), seed)
    c = Volume(data, affine).canonical()
    assert c.shape[0] == 3 and sorted(c.shape[1:]) == [2, 4, 5]
    assert c.napari_geometry()["scale"][0] == 1.0 and c.napari_geometry()["translate"][0] == 0.0
    for t in range(3):
        np.testing.assert_array_equal(Volume(data[t], affine).canonical().data, c.data[t])


def test_canonical_refuses_oblique():
    with pytest.raises(InputError, match="oblique"):
        Volume(np.zeros((2, 2, 2)), make_affine([0.3, 0, 0], [1, 1, 1], [0, 0, 0])).canonical()


def test_napari_geometry_refuses_non_canonical():
    v = Volume(np.zeros((2, 3, 4)), np.diag([-1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="for_display"):
        v.napari_geometry()
    assert v.for_display().napari_geometry()["scale"] == [1.0, 1.0, 1.0]


def test_lps_matrix_and_orientation():
    m = lps_to_ras_matrix()
    np.testing.assert_array_equal(m @ m, np.eye(4))
    v = Volume(np.zeros((2, 3, 4)), m @ np.diag([1.0, 1.0, 1.0, 1.0]))
    assert v.orientation() == "LPS"


# ---------------------------------------------------------------- resampling
@BUDGET
@given(affines(spacing=st.floats(0.1, 5)), shapes, st.integers(0, 2**31), st.sampled_from([0, 1, 3]))
def test_resample_to_same_grid_is_identity(affine, shape, seed, order):
    data = random_data(shape, seed)
    v = Volume(data, affine)
    out = v.resample_to(v, order=order)
    assert out.same_grid(v)
    np.testing.assert_allclose(out.data, data, rtol=1e-5, atol=1e-5)


@BUDGET
@given(affines(spacing=st.floats(0.1, 5)), st.tuples(*[st.integers(-3, 3)] * 3), st.integers(0, 2**31))
def test_resample_onto_grid_shifted_by_whole_voxels(affine, shift, seed):
    data = random_data((5, 6, 7), seed)
    v = Volume(data, affine)
    move = np.eye(4)
    move[:3, 3] = shift
    out = v.resample_to((data.shape, affine @ move), order=1, fill=-1.0)
    expected = np.full(data.shape, -1.0, np.float32)
    src = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, data.shape))
    dst = tuple(slice(max(-s, 0), n + min(-s, 0)) for s, n in zip(shift, data.shape))
    expected[dst] = data[src]
    np.testing.assert_allclose(out.data, expected, atol=1e-5)


@BUDGET
@given(affines(spacing=st.floats(0.2, 3)), affines(spacing=st.floats(0.2, 3)), st.integers(0, 2**31))
def test_nearest_resampling_keeps_label_values(src_affine, dst_affine, seed):
    rng = np.random.default_rng(seed)
    values = np.array([0, 3, 17, 255, 1000], np.int32)
    labels = values[rng.integers(0, len(values), (6, 5, 4))]
    v = Volume(labels, src_affine, unit="label")
    # a target grid around the source's field of view
    target = Volume(np.zeros((7, 6, 5), np.uint8), dst_affine)
    target = target.replace(affine=target.affine.copy())
    target.affine[:3, 3] += v.center_world() - target.center_world()
    out = v.resample_to(target, order=0)
    assert out.data.dtype == labels.dtype
    assert set(np.unique(out.data)) <= set(values.tolist())


@BUDGET
@given(
    affines(spacing=st.floats(0.3, 3)),
    st.floats(-np.pi, np.pi),
    st.tuples(*[st.floats(-5, 5)] * 3),
    st.integers(0, 2**31),
)
def test_resample_with_transform_equals_moved_copy(affine, angle, shift, seed):
    data = random_data((6, 7, 8), seed)
    v = Volume(data, affine)
    transform = make_affine([angle, angle / 2, 0.3], [1, 1, 1], shift)  # target world -> this volume's world
    target = (data.shape, affine @ make_affine([0.1, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5]))
    via_transform = v.resample_to(target, order=1, transform=transform)
    # the moved copy sits where the transform says: its point p is this volume's point T p
    moved = v.replace(affine=np.linalg.inv(transform) @ affine)
    via_copy = moved.resample_to(target, order=1)
    np.testing.assert_allclose(via_transform.data, via_copy.data, atol=1e-4)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_field_of_view_is_the_voxel_footprint(order):
    data = np.array([[[10.0, 20.0, 30.0, 40.0]]], np.float32)
    v = Volume(data, np.eye(4)[:, [2, 1, 0, 3]])  # axis 2 along x, 1 mm voxels centred at x = 0..3
    for shift, first in ((-0.4, 10.0), (-0.6, -1.0), (3.4, 40.0), (3.6, -1.0)):
        grid = v.affine.copy()
        grid[0, 3] = shift  # one target voxel centred at x = shift
        out = v.resample_to(((1, 1, 1), grid), order=order, fill=-1.0)
        if order < 3 or first == -1.0:
            assert out.data[0, 0, 0] == pytest.approx(first), (shift, order)
        else:  # a cubic spline overshoots a little beyond the edge centre, but it is inside
            assert out.data[0, 0, 0] == pytest.approx(first, abs=2.0)
    # the same grid keeps every voxel, edges included
    np.testing.assert_allclose(v.resample_to(v, order=order, fill=-1.0).data, data, atol=1e-5)
    # NaN fill of an oblique linear resampling leaves NaN only outside
    theta = np.deg2rad(30)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    out = v.resample_to(((3, 3, 6), rot @ np.eye(4)[:, [2, 1, 0, 3]]), order=order, fill=np.nan)
    assert np.isnan(out.data).any() and np.nanmax(out.data) <= 40.0 + 1e-4


def test_resample_4d_and_metadata():
    data = np.stack([np.full((3, 4, 5), t, np.float32) for t in range(3)])
    v = Volume(data, np.eye(4), metadata={"leading_axis": "time"})
    out = v.resample_to(((2, 2, 2), np.eye(4)))
    assert out.shape == (3, 2, 2, 2) and out.metadata["leading_axis"] == "time"
    np.testing.assert_array_equal(out.data[:, 0, 0, 0], [0, 1, 2])
    assert out.metadata["resampled_from"]["shape"] == [3, 4, 5]


def test_resample_dask_volume():
    import dask.array as da

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    v = Volume(da.from_array(data, chunks=2), np.diag([2.0, 2.0, 2.0, 1.0]))
    np.testing.assert_array_equal(v.resample_to(v, order=0).data, data)


# ------------------------------------------------------------------- display
@BUDGET
@given(
    st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    st.tuples(*[st.floats(0.5, 2.0)] * 3),
    st.tuples(*[st.integers(3, 8)] * 3),
    st.tuples(*[st.floats(-50, 50)] * 3),
)
def test_for_display_of_oblique_volume_keeps_bright_voxel_in_place(angles, spacing, point, translation):
    affine = make_affine(angles, spacing, translation)
    data = np.zeros((12, 12, 12), np.float32)
    data[point] = 1000.0
    v = Volume(data, affine)
    out = v.for_display()
    geo = out.napari_geometry()  # always accepted after for_display
    assert out.orientation() == "SAR"
    truth = v.index_to_world([point])[0]
    step_xyz = out.spacing[::-1]
    # the blob's intensity-weighted centre is at the same world point within half a display voxel
    idx = np.argwhere(out.data > 0)
    w = out.data[out.data > 0].astype(float)
    centre = out.index_to_world((idx * w[:, None]).sum(0) / w.sum())[0]
    assert np.all(np.abs(centre - truth) <= 0.5 * step_xyz), (centre, truth, step_xyz)
    # and the brightest display voxel lies inside the bright voxel's interpolation support
    peak = np.unravel_index(np.argmax(out.data), out.data.shape)
    assert np.all(np.abs(v.world_to_index(out.index_to_world([peak]))[0] - point) < 1.0)
    # napari's scale/translate put that peak where the affine does (within the 0.1 voxel that
    # for_display allows for a volume it only transposes)
    napari_world = np.asarray(geo["translate"]) + np.asarray(geo["scale"]) * np.asarray(peak)
    error = np.abs(napari_to_ras(napari_world) - out.index_to_world([peak])[0])
    assert np.all(error <= 0.1 * out.spacing.min() + 1e-9), error


def test_for_display_onto_reference_grid():
    ref = Volume(np.zeros((20, 20, 20), np.float32), np.diag([-1.0, 1.0, 1.0, 1.0]))
    data = np.zeros((10, 10, 10), np.float32)
    data[5, 5, 5] = 1
    oblique = Volume(data, make_affine([0.4, 0.2, 0.1], [1, 1, 1], [-5, 3, 4]))
    out = oblique.for_display(reference=ref)
    assert out.same_grid(ref.canonical()) and out.metadata["display_resampled"]


def test_for_display_resamples_small_tilts_that_would_show_wrongly():
    # 0.3 degrees is "axis-aligned" for canonical(), but over 200 voxels it moves the edge by 1 voxel
    affine = make_affine([np.deg2rad(0.3), 0, 0], [1, 1, 1], [0, 0, 0])
    v = Volume(np.zeros((10, 200, 200), np.float32), affine)
    assert v.is_axis_aligned(tol_degrees=0.5) and v.axis_aligned_error_mm() > 0.5
    out = v.for_display()
    assert out.metadata.get("display_resampled") is True
    out.napari_geometry()
    # float noise alone is not resampled
    noisy = affine.copy()
    noisy[:3, :3] = np.eye(3) + 1e-9
    assert "display_resampled" not in Volume(np.zeros((10, 20, 20)), noisy).for_display().metadata


def test_axis_aligned_grid_covers_the_volume():
    v = Volume(np.zeros((4, 5, 6)), make_affine([0.5, 0.2, 0.1], [1.0, 2.0, 0.5], [10, -20, 30]))
    shape, affine = v.axis_aligned_grid()
    grid = Volume(np.zeros(shape), affine)
    assert grid.orientation() == "SAR" and grid.is_axis_aligned()
    np.testing.assert_allclose(grid.spacing, [0.5, 0.5, 0.5])
    lo, hi = grid.bounds_world()
    corners = v.corners_world()
    assert np.all(corners >= lo - 0.5) and np.all(corners <= hi + 0.5)


# --------------------------------------------------------------- bad inputs
def _one_line(excinfo):
    text = str(excinfo.value)
    return "\n" not in text and text == text.strip() and len(text) > 15


@pytest.mark.parametrize(
    "data, affine, match",
    [
        (np.zeros((4, 5)), np.eye(4), "2 dimension"),
        (np.zeros(5), np.eye(4), "1 dimension"),
        (np.zeros((2, 2, 2, 2, 2)), np.eye(4), "5 dimension"),
        (np.zeros((0, 2, 2)), np.eye(4), "empty"),
        (np.zeros((2, 2, 2)), np.full((4, 4), np.nan), "non-finite"),
        (np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]), "zero or degenerate voxel size"),
        (np.zeros((2, 2, 2)), np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "degenerate"),
        (np.zeros((2, 2, 2)), np.eye(3), "4x4"),
        (np.zeros((2, 2, 2)), np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
    ],
)
def test_bad_volumes_raise_one_line_input_error(data, affine, match):
    with pytest.raises(InputError, match=match) as excinfo:
        Volume(data, affine, name="bad")
    assert _one_line(excinfo)


@BUDGET
@given(affines(), st.integers(0, 2))
def test_singular_affines_refused(affine, axis):
    singular = affine.copy()
    other = (axis + 1) % 3
    singular[:3, axis] = singular[:3, other] * 2.0  # two parallel axes
    with pytest.raises(InputError, match="degenerate"):
        Volume(np.zeros((2, 2, 2)), singular)


def test_as_labels():
    base = np.eye(4)
    with pytest.raises(InputError, match="non-integer") as excinfo:
        as_labels(Volume(np.array([[[0.0, 1.5]]]), base))
    assert _one_line(excinfo)
    with pytest.raises(InputError, match="non-integer"):
        as_labels(Volume(np.array([[[0.0, np.nan]]]), base))
    with pytest.raises(InputError, match="negative"):
        as_labels(Volume(np.array([[[0, -1]]], np.int16), base))
    whole = as_labels(Volume(np.array([[[0.0, 2.0, 7.0]]], np.float32), base))
    assert whole.data.dtype == np.int32 and whole.unit == "label"
    np.testing.assert_array_equal(whole.data, [[[0, 2, 7]]])
    mask = as_labels(Volume(np.array([[[True, False]]]), base))
    assert mask.data.dtype == np.uint8


def test_replace_copies_metadata():
    v = Volume(np.zeros((2, 2, 2)), np.eye(4), metadata={"a": 1})
    w = v.replace(name="w")
    w.metadata["a"] = 2
    assert v.metadata["a"] == 1 and w.name == "w"
