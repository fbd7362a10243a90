"""affines: the one module for axis orders and LPS/RAS, checked against nibabel and SimpleITK."""

import numpy as np
import pytest

from napari_immunotrack import affines
from napari_immunotrack.volume import Volume


def test_reverse_and_flip_are_their_own_inverse():
    assert np.array_equal(affines.REVERSE_AXES @ affines.REVERSE_AXES, np.eye(4))
    assert np.array_equal(affines.LPS_TO_RAS @ affines.LPS_TO_RAS, np.eye(4))
    assert np.array_equal(affines.reverse_axes_matrix(3), affines.REVERSE_AXES)
    with pytest.raises(ValueError):  # module constants cannot be edited in place
        affines.REVERSE_AXES[0, 0] = 5


def test_lps_transform_matches_point_conversion():
    rng = np.random.default_rng(0)
    m = np.eye(4)
    m[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    m[:3, 3] = rng.normal(size=3) * 10
    p_lps = rng.normal(size=(5, 3)) * 20
    moved_lps = p_lps @ m[:3, :3].T + m[:3, 3]
    m_ras = affines.lps_to_ras_transform(m)
    p_ras = affines.lps_to_ras_points(p_lps)
    np.testing.assert_allclose(p_ras @ m_ras[:3, :3].T + m_ras[:3, 3], affines.lps_to_ras_points(moved_lps), atol=1e-12)


def test_reverse_index_order_agrees_with_nibabel(tmp_path):
    import nibabel as nib

    from napari_immunotrack.io.nifti import read_nifti

    aff = np.array([[0.0, 0.3, 0.0, -4.0], [0.5, 0.0, 0.0, 7.0], [0.0, 0.0, 2.0, 1.5], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (i, j, k)
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "a.nii")
    vol = read_nifti(tmp_path / "a.nii")
    np.testing.assert_allclose(vol.affine, affines.reverse_index_order(aff))
    # voxel (i, j, k) = (3, 1, 2) holds the same value at the same world point
    world = aff @ [3, 1, 2, 1]
    np.testing.assert_allclose(vol.affine @ [2, 1, 3, 1], world)
    assert vol.numpy()[2, 1, 3] == data[3, 1, 2]


def test_zyx_grid_affine_matches_volume_spacing():
    a = affines.zyx_grid_affine((2.0, 0.5, 0.25), (1.0, 2.0, 3.0))
    v = Volume(np.zeros((3, 4, 5)), a)
    np.testing.assert_allclose(v.spacing, (2.0, 0.5, 0.25))
    assert v.orientation() == "SAR"
    np.testing.assert_allclose(affines.ras_to_napari(a[:3, 3]), (3.0, 2.0, 1.0))
    np.testing.assert_allclose(affines.napari_affine_to_ras(affines.ras_affine_to_napari(a)), a)


def test_sitk_agrees_with_lps_conversion():
    import SimpleITK  # noqa: F401

    from napari_immunotrack.registration import volume_to_sitk

    a = affines.zyx_grid_affine((2.0, 1.0, 0.5), (10.0, -3.0, 4.0))
    img = volume_to_sitk(Volume(np.zeros((3, 4, 5), np.float32), a))
    lps = np.array(img.TransformIndexToPhysicalPoint((4, 3, 2)))  # sitk (x, y, z) index = array (2, 3, 4)
    np.testing.assert_allclose(affines.lps_to_ras_points(lps), (a @ [2, 3, 4, 1])[:3])
