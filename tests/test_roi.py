"""ROI carrying (partial-voxel weights through world coordinates) and weighted ROI statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_immunotrack.analysis import roi as R
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.volume import Volume


def grid_world(shape, affine):
    idx = np.indices(shape).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(tuple(shape) + (3,))


def rot(deg_z=30.0, deg_x=20.0):
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def test_same_grid_statistics_match_numpy():
    rng = np.random.default_rng(1)
    img = rng.gamma(2.0, 100.0, (12, 14, 16)).astype(np.float32)
    aff = np.diag([2.0, 1.5, 1.0, 1.0])
    lab = np.zeros(img.shape, np.uint8)
    lab[2:6, 3:9, 4:10] = 1
    lab[8:11, 1:4, 1:15] = 7
    df = R.roi_statistics(Volume(img, aff), Volume(lab, aff), peak=False).set_index("label")
    assert list(df.index) == [1, 7]
    for k in (1, 7):
        v = img[lab == k].astype(float)
        assert df.loc[k, "voxels"] == v.size
        assert df.loc[k, "volume_ml"] == pytest.approx(v.size * 3.0 / 1000)
        assert df.loc[k, "mean"] == pytest.approx(v.mean(), rel=1e-9)
        assert df.loc[k, "sd"] == pytest.approx(v.std(), rel=1e-9)
        assert df.loc[k, "median"] == pytest.approx(np.median(v), rel=1e-9)
        assert df.loc[k, "min"] == v.min() and df.loc[k, "max"] == v.max()
        assert df.loc[k, "integral"] == pytest.approx(v.sum() * 0.003, rel=1e-9)
    assert df.attrs["method"] == "same grid"


def test_exact_overlap_on_axis_aligned_grids():
    """A 3x3x3 mm ROI block on a 1 mm grid against a 2 mm grid: fractions 1, 1/2, 1/4, 1/8."""
    roi_aff = np.eye(4)
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[0:3, 0:3, 0:3] = 1  # world [-0.5, 2.5]^3
    tgt_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    tgt_aff[:3, 3] = 0.5  # voxel j covers [2j - 0.5, 2j + 1.5]
    rmap = R.carry_rois(Volume(lab, roi_aff), ((5, 5, 5), tgt_aff))
    w = rmap.weight_volume(1)
    assert rmap.method.startswith("exact")
    assert w[0, 0, 0] == pytest.approx(1.0)
    assert w[1, 0, 0] == pytest.approx(0.5) and w[0, 1, 0] == pytest.approx(0.5)
    assert w[1, 1, 0] == pytest.approx(0.25) and w[1, 1, 1] == pytest.approx(0.125)
    assert w.sum() * 8.0 == pytest.approx(27.0)  # volume conserved exactly


def test_exact_overlap_with_flips_and_axis_order():
    """An LPS-ordered target (axes S, P, L) and a RAS ROI (axes R, A, S) with different spacings."""
    roi_aff = np.array([[0.5, 0, 0, -20.25], [0, 0.5, 0, -19.75], [0, 0, 0.5, -15.0], [0, 0, 0, 1]])
    roi_shape = (80, 80, 64)
    w = grid_world(roi_shape, roi_aff)
    lab = (np.linalg.norm(w - [3.0, -2.0, 1.0], axis=-1) <= 6.0).astype(np.uint8)
    tgt_aff = np.array([[0, 0, -1.7, 22.0], [0, -1.3, 0, 21.0], [2.1, 0, 0, -16.0], [0, 0, 0, 1]])
    tgt_shape = (16, 32, 26)
    grad = np.array([30.0, -20.0, 50.0])
    img = (5000.0 + grid_world(tgt_shape, tgt_aff) @ grad).astype(np.float32)
    df = R.roi_statistics(Volume(img, tgt_aff), Volume(lab, roi_aff), peak=False)
    assert df.attrs["method"].startswith("exact")
    assert df.loc[0, "volume_ml"] == pytest.approx(lab.sum() * 0.125 / 1000, rel=1e-6)
    truth = 5000.0 + w[lab > 0].mean(0) @ grad
    assert df.loc[0, "mean"] == pytest.approx(truth, rel=2e-3)
    # the same with a swapped LPS/RAS sign would land 4-6 mm away: the mean would move by >5%
    assert abs(df.loc[0, "mean"] - (5000.0 + np.array([-3.0, 2.0, 1.0]) @ grad)) > 0.02 * truth


def test_rotated_grid_supersampling_and_transform():
    rng = np.random.default_rng(0)
    roi_aff = np.diag([0.4, 0.4, 0.4, 1.0])
    roi_aff[:3, 3] = -12.0
    roi_shape = (60, 60, 60)
    w = grid_world(roi_shape, roi_aff)
    centre = np.array([1.3, -2.1, 0.7])
    lab = (np.linalg.norm(w - centre, axis=-1) <= 5.0).astype(np.uint8)
    tgt_aff = np.eye(4)
    tgt_aff[:3, :3] = rot() * 1.1
    tgt_aff[:3, 3] = -tgt_aff[:3, :3] @ [12, 12, 12]
    tgt_shape = (24, 24, 24)
    grad = np.array([40.0, 25.0, -30.0])
    img = (8000.0 + grid_world(tgt_shape, tgt_aff) @ grad + rng.normal(0, 1, tgt_shape)).astype(np.float32)
    target = Volume(img, tgt_aff)
    df = R.roi_statistics(target, Volume(lab, roi_aff), supersample=4, peak=False)
    assert df.attrs["method"] == "supersample 4"
    assert df.loc[0, "volume_ml"] == pytest.approx(4 / 3 * np.pi * 125 / 1000, rel=0.02)
    assert df.loc[0, "mean"] == pytest.approx(8000.0 + centre @ grad, rel=3e-3)
    # the ROI image lives in a world shifted by 4 mm: the transform target world -> ROI world carries it
    shift = np.eye(4)
    shift[:3, 3] = [4.0, 0.0, 0.0]
    moved = Volume(lab, shift @ roi_aff)
    df2 = R.roi_statistics(target, moved, transform=shift, supersample=4, peak=False)
    assert df2.loc[0, "mean"] == pytest.approx(df.loc[0, "mean"], rel=1e-6)
    df3 = R.roi_statistics(target, moved, supersample=4, peak=False)
    assert df3.loc[0, "mean"] == pytest.approx(8000.0 + (centre + [4, 0, 0]) @ grad, rel=3e-3)


def test_weighted_median_and_sd():
    v = np.array([3.0, 1.0, 2.0, 10.0])
    assert R.weighted_median(v, np.ones(4)) == np.median(v)
    assert R.weighted_median(v[:3], np.ones(3)) == 2.0
    assert R.weighted_median(np.array([1.0, 10.0]), np.array([3.0, 1.0])) == 1.0
    assert R.weighted_median(np.array([1.0, 10.0]), np.array([0.4, 0.6])) == 10.0
    # partial weights: an image of two values, ROI weights 1 and 0.25
    img = np.zeros((1, 1, 4), np.float32)
    img[0, 0] = [10.0, 10.0, 20.0, 40.0]
    rmap = R.RoiMap(
        (1, 1, 4),
        np.eye(4),
        np.array([1]),
        [np.arange(4)],
        [np.array([1, 1, 1, 0.25], np.float32)],
        np.array([1.0]),
        np.array([0.0]),
        "test",
    )
    df = R.roi_statistics(Volume(img, np.eye(4)), rmap, peak=False)
    wts = np.array([1, 1, 1, 0.25])
    mean = np.average(img[0, 0], weights=wts)
    assert df.loc[0, "mean"] == pytest.approx(mean)
    assert df.loc[0, "sd"] == pytest.approx(np.sqrt(np.average((img[0, 0] - mean) ** 2, weights=wts)))
    assert df.loc[0, "max"] == 20.0  # the 0.25-weight voxel is not inside for min/max
    assert df.loc[0, "voxels"] == 3 and df.loc[0, "voxels_weighted"] == pytest.approx(3.25)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.0, 2.0, 2.0, 1.0]),
        np.diag([0.6, 0.6, 0.6, 1.0]),
        np.diag([4.0, 2.5, 1.3, 1.0]),
        np.vstack([np.column_stack([rot() * 1.7, [0, 0, 0]]), [0, 0, 0, 1]]),
    ],
)
def test_sphere_kernel_holds_one_millilitre(affine):
    k = R.sphere_kernel(affine, R.PEAK_RADIUS_MM, normalize=False)
    volume_mm3 = k.sum() * abs(np.linalg.det(affine[:3, :3]))
    assert volume_mm3 == pytest.approx(1000.0, rel=0.01)
    assert np.allclose(k, k[::-1, ::-1, ::-1])  # point-symmetric
    assert R.peak_radius_mm(1.0) == pytest.approx(6.2035, abs=1e-4)


def test_peak_with_partial_weights():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    img = np.zeros((15, 15, 15), np.float32)
    img[7, 7, 7] = 1000.0
    lab = np.zeros(img.shape, np.uint8)
    lab[6:9, 6:9, 6:9] = 1
    df = R.roi_statistics(Volume(img, aff), Volume(lab, aff))
    kernel = R.sphere_kernel(aff)
    # the best sphere is centred on the hot voxel: 1000 x its (normalised) centre weight
    assert df.loc[0, "peak"] == pytest.approx(1000.0 * kernel[3, 3, 3], rel=1e-6)
    # near the image edge the sphere is cut: the mean is over the part inside the image
    img2 = np.full((15, 15, 15), 50.0, np.float32)
    lab2 = np.zeros(img2.shape, np.uint8)
    lab2[0, 0, 0] = 1
    df2 = R.roi_statistics(Volume(img2, aff), Volume(lab2, aff))
    assert df2.loc[0, "peak"] == pytest.approx(50.0, rel=1e-6)


def test_nan_voxels_are_left_out():
    aff = np.eye(4)
    img = np.full((10, 10, 10), 7.0, np.float32)
    img[5, 5, 5] = np.nan
    lab = np.zeros(img.shape, np.uint8)
    lab[4:7, 4:7, 4:7] = 1
    df = R.roi_statistics(Volume(img, aff), Volume(lab, aff))
    assert df.loc[0, "mean"] == 7.0 and df.loc[0, "peak"] == pytest.approx(7.0)
    assert df.loc[0, "voxels_weighted"] == 26


def test_bad_rois():
    aff = np.eye(4)
    img = Volume(np.ones((10, 10, 10), np.float32), aff, name="pet")
    lab = np.zeros((10, 10, 10), np.uint8)
    with pytest.raises(InputError, match="empty"):
        R.carry_rois(Volume(lab, aff), img)
    lab[2:4, 2:4, 2:4] = 3
    far = np.eye(4)
    far[:3, 3] = [100.0, 0.0, 0.0]
    with pytest.raises(InputError, match="label 3 lies entirely outside"):
        R.carry_rois(Volume(lab, far), img)
    with pytest.raises(InputError, match=r"label\(s\) \[5\]"):
        R.carry_rois(Volume(lab, aff), img, labels=[5])
    with pytest.raises(InputError, match="non-integer"):
        R.carry_rois(Volume(lab + 0.5, aff), img)
    # half the ROI outside the field of view: a warning and the fraction in the table
    part = np.eye(4)
    part[:3, 3] = [7.0, 0.0, 0.0]  # ROI voxels at x = 9, 10 -> one inside, one outside
    with pytest.warns(ImmunotrackWarning, match="50.0% of its volume lies outside"):
        df = R.roi_statistics(img, Volume(lab, part * np.array([1, 1, 1, 1.0])), peak=False)
    assert df.loc[0, "fraction_in_fov"] == pytest.approx(0.5)
    assert df.loc[0, "volume_ml"] == pytest.approx(4 / 1000)


def test_sub_voxel_roi_keeps_its_volume():
    """An ROI smaller than a target voxel: no voxel with weight >= 0.5, but its volume and mean survive."""
    roi_aff = np.diag([0.5, 0.5, 0.5, 1.0])
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[9:11, 9:11, 9:11] = 1  # 1 mm cube at world [4.25, 5.25]
    tgt_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    img = np.full((6, 6, 6), 3.0, np.float32)
    df = R.roi_statistics(Volume(img, tgt_aff), Volume(lab, roi_aff), peak=False)
    assert df.loc[0, "volume_ml"] == pytest.approx(0.001)
    assert df.loc[0, "mean"] == 3.0 and df.loc[0, "min"] == 3.0


def test_to_labels_round_trip():
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[1:4, 1:4, 1:4] = 2
    lab[5:7, 5:7, 5:7] = 9
    rmap = R.carry_rois(Volume(lab, aff), Volume(np.zeros((8, 8, 8)), aff))
    assert np.array_equal(rmap.to_labels().data, lab)
    assert np.array_equal(rmap.mask(9), lab == 9)


def test_scene_organs_carried_from_mri_to_pet():
    """Simulated mouse: MRI tissue labels carried to the rotated PET grid give the organs' true Bq/mL."""
    from napari_immunotrack.simulate import nuclear, phantom, quantitative_scene

    sc = quantitative_scene(seed=0, pet_noise=False)
    pet = sc["pet"]
    mri_to_pet = sc["transforms"]["mri_to_pet"]
    # truth: the simulator spreads each organ's activity evenly over its voxels on its fine grid
    mouse = phantom.make_mouse(0)
    fshape, faff = nuclear.fine_grid(pet.spatial_shape, pet.affine, 2)
    fine = phantom.rasterize(mouse.solids, fshape, faff, np.linalg.inv(mri_to_pet))
    fine_ml = abs(np.linalg.det(faff[:3, :3])) / 1000.0
    truth = {o["label"]: o["bq"] / (np.count_nonzero(fine == o["label"]) * fine_ml) for o in sc["pet_organs"]}
    roi = sc["roi_labels"]
    lab = roi.numpy()
    inner = np.zeros_like(lab)
    for k in (3, 7):  # liver, tumour, eroded 1.5 mm away from the 1.3 mm FWHM spill
        inner[ndimage.distance_transform_edt(lab == k, sampling=roi.spacing) > 1.5] = k
    rois = roi.replace(data=inner)
    df = R.roi_statistics(pet, rois, transform=np.linalg.inv(mri_to_pet), peak=False).set_index("label")
    assert df.attrs["method"] == "supersample 3"
    for k in (3, 7):
        assert df.loc[k, "mean"] == pytest.approx(truth[k], rel=0.01)
    wrong = R.roi_statistics(pet, rois, peak=False).set_index("label")  # forgetting the transform
    assert abs(wrong.loc[7, "mean"] / truth[7] - 1) > 0.05
