"""Registration: conversions, directions, accuracy against known transforms,
landmarks, .tfm files, the command line and every refused input.

Accuracy is judged as target registration error (TRE) over many points
inside the body, against the transform the test pair was built with.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_immunotrack import registration as reg
from napari_immunotrack.cli import main
from napari_immunotrack.errors import Cancelled, ImmunotrackWarning, InputError
from napari_immunotrack.io import load_volume, save_volume
from napari_immunotrack.io.transforms import read_transform, write_transform
from napari_immunotrack.volume import Volume

F = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- helpers
def euler(angles_deg, translation, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Rigid 4x4: rotate about x, y, then z (degrees) around ``center``, then translate (mm)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation, float)
    return m


def apply(matrix, points) -> np.ndarray:
    pts = np.atleast_2d(np.asarray(points, float))
    return pts @ matrix[:3, :3].T + matrix[:3, 3]


def tre(estimate, truth, points):
    """Mean and max distance (mm) between where two transforms send the same fixed points."""
    d = np.linalg.norm(apply(estimate, points) - apply(truth, points), axis=1)
    return float(d.mean()), float(d.max())


# Ellipsoids of the analytic phantom: centre (mm), radii (mm), MRI value, PET value.
# The PET contrast is not a function of the MRI one (multimodal), and the layout has no symmetry.
_BODY = ((1.0, -2.0, 2.0), (17.0, 20.0, 22.0), 0.45, 0.25)
_ORGANS = (
    ((6.0, 5.0, 7.0), (6.0, 5.0, 7.0), 0.95, 0.15),
    ((-7.0, -6.0, 3.0), (5.0, 6.0, 4.0), 0.15, 1.00),
    ((0.0, 9.0, -9.0), (9.0, 4.0, 5.0), 0.70, 0.60),
    ((-4.0, -10.0, -8.0), (3.0, 3.0, 6.0), 0.30, 0.85),
)


def _phantom(points, modality: str) -> np.ndarray:
    col = 2 if modality == "MR" else 3
    out = np.zeros(len(points), np.float32)
    inside = lambda c, r: np.sum(((points - np.array(c)) / np.array(r)) ** 2, axis=1) <= 1.0  # noqa: E731
    out[inside(_BODY[0], _BODY[1])] = _BODY[col]
    for organ in _ORGANS:
        out[inside(organ[0], organ[1])] = organ[col]
    return out


def _grid(shape, affine):
    idx = np.indices(shape).reshape(3, -1).T
    return idx @ affine[:3, :3].T + affine[:3, 3]


def phantom_pair(fixed_to_moving, seed=0, noise=0.03):
    """A small MRI-like fixed and PET-like moving image of the analytic phantom.

    The fixed grid is 1 mm, axes (A, S, L) i.e. permuted and flipped; the
    moving grid is 1.6 mm, axes (S, A, R). The moving image shows the anatomy
    moved by ``fixed_to_moving``: its value at moving world point p is the PET
    phantom at ``inv(fixed_to_moving) @ p``.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    f_aff = np.array([[0, 0, -1.0, 22.0], [1.0, 0, 0, -26.0], [0, 1.0, 0, -22.0], [0, 0, 0, 1]])
    f_shape = (48, 44, 44)
    fixed = _phantom(_grid(f_shape, f_aff), "MR").reshape(f_shape)
    fixed = ndimage.gaussian_filter(fixed, 0.7) + rng.normal(0, noise, f_shape).astype(np.float32)
    m_aff = np.array([[0, 0, 1.6, -30.0], [0, 1.6, 0, -32.0], [1.6, 0, 0, -30.0], [0, 0, 0, 1]])
    m_shape = (38, 40, 38)
    where = apply(np.linalg.inv(fixed_to_moving), _grid(m_shape, m_aff))
    moving = _phantom(where, "PT").reshape(m_shape)
    moving = ndimage.gaussian_filter(moving, 1.2) + rng.normal(0, noise, m_shape).astype(np.float32)
    return (
        Volume(fixed.astype(np.float32), f_aff, modality="MR", name="mri"),
        Volume(moving.astype(np.float32), m_aff, modality="PT", unit="Bq/mL", name="pet"),
    )


def body_points(volume, n=3000, seed=0):
    """World points of voxels inside the phantom's body (fixed image)."""
    pts = _grid(volume.spatial_shape, volume.affine)
    inside = np.sum(((pts - np.array(_BODY[0])) / np.array(_BODY[1])) ** 2, axis=1) <= 1.0
    pts = pts[inside]
    return pts[np.random.default_rng(seed).choice(len(pts), min(n, len(pts)), replace=False)]


TRUE = euler((6.0, -4.0, 8.0), (4.0, -3.0, 5.0), center=(1.0, -2.0, 2.0))


@pytest.fixture(scope="module")
def pair():
    return phantom_pair(TRUE)


# ----------------------------------------------------------------------------- conversions
def test_volume_to_sitk_points_are_world_points_in_lps():
    # oblique, anisotropic, flipped grid
    rot = euler((20.0, -10.0, 35.0), (0, 0, 0))[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, -1.25, 2.0])
    affine[:3, 3] = [-12.0, 30.5, 7.25]
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    vol = Volume(data, affine)
    img = reg.volume_to_sitk(vol)
    assert img.GetSize() == (5, 4, 3)
    for index in [(0, 0, 0), (2, 3, 4), (1, 0, 3), (2, 1, 0)]:
        world = vol.index_to_world([index])[0]
        lps = np.array(img.TransformIndexToPhysicalPoint(tuple(int(i) for i in index[::-1])))
        assert np.allclose(lps, world * [-1, -1, 1], atol=1e-6)
        assert img[tuple(int(i) for i in index[::-1])] == data[index]
    back = reg.sitk_to_volume(img, like=vol)
    assert np.array_equal(back.data, data)
    assert np.allclose(back.affine, affine, atol=1e-9)


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz"])
def test_volume_to_sitk_matches_itks_own_nifti_reader(name):
    import nibabel.testing

    path = os.path.join(nibabel.testing.data_path, name)
    ours = reg.volume_to_sitk(load_volume(path))
    itk = sitk.ReadImage(path)
    assert ours.GetSize() == itk.GetSize()
    assert np.allclose(ours.GetSpacing(), itk.GetSpacing(), atol=1e-5)
    assert np.allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-6)
    assert np.allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk))


def test_sheared_grid_is_refused():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(InputError, match="sheared"):
        reg.volume_to_sitk(Volume(np.zeros((4, 4, 4), np.float32), affine))


def test_sitk_transform_matrix_round_trip_and_direction():
    truth = euler((10.0, -5.0, 20.0), (3.0, -7.0, 11.0), center=(5.0, 6.0, -4.0))
    tx = reg.matrix_to_sitk_transform(truth)
    p = np.array([12.0, -3.0, 40.0])
    # SimpleITK maps LPS points: flip, map, flip back
    mapped = np.array(tx.TransformPoint(tuple(p * [-1, -1, 1]))) * [-1, -1, 1]
    assert np.allclose(mapped, apply(truth, p)[0], atol=1e-9)
    assert np.allclose(reg.sitk_transform_to_matrix(tx), truth, atol=1e-9)
    # an Euler transform with a centre, as the optimiser produces
    e = sitk.Euler3DTransform()
    e.SetCenter((1.0, 2.0, 3.0))
    e.SetRotation(0.1, -0.2, 0.3)
    e.SetTranslation((4.0, 5.0, 6.0))
    m = reg.sitk_transform_to_matrix(e)
    q = (7.0, -8.0, 9.0)
    assert np.allclose(apply(F @ m @ F, q)[0], e.TransformPoint(q), atol=1e-9)


def test_nonlinear_transform_is_refused():
    bspline = sitk.BSplineTransformInitializer(sitk.Image([8, 8, 8], sitk.sitkFloat32), [3, 3, 3])
    params = np.zeros(bspline.GetNumberOfParameters())
    params[10] = 5.0
    bspline.SetParameters(params.tolist())
    with pytest.raises(InputError, match="not linear"):
        reg.sitk_transform_to_matrix(bspline)


# ----------------------------------------------------------------------------- result directions
def test_apply_to_affine_puts_moving_voxels_on_the_fixed_anatomy():
    truth = euler((5.0, 0.0, -7.0), (2.0, 1.0, -3.0))
    result = reg.RegistrationResult(truth, 0.0, 0.0, 0, {})
    moving_affine = np.diag([1.5, 1.5, 2.0, 1.0])
    new = result.apply_to_affine(moving_affine)
    index = np.array([[3.0, 4.0, 5.0]])
    p_moving = apply(moving_affine, index)
    p_fixed = apply(new, index)
    # the fixed world point where the voxel is now shown maps to its old moving world point
    assert np.allclose(result.transform_points(p_fixed), p_moving)
    assert np.allclose(result.moving_to_fixed @ result.fixed_to_moving, np.eye(4))


def test_recovers_translation_with_the_right_sign():
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -4.0, 3.0]  # fixed point p shows the anatomy of moving point p + shift
    fixed, moving = phantom_pair(shift, noise=0.01)
    result = reg.register(fixed, moving)
    assert np.allclose(result.fixed_to_moving[:3, 3], [5.0, -4.0, 3.0], atol=0.3)
    assert np.allclose(result.fixed_to_moving[:3, :3], np.eye(3), atol=0.01)
    # and resampling through it puts the moving anatomy on the fixed grid
    resampled = reg.resample_moving(fixed, moving, result)
    assert resampled.same_grid(fixed)
    truth_resampled = moving.resample_to(fixed, transform=shift)
    inside = fixed.numpy() > 0.3
    assert np.abs(resampled.numpy() - truth_resampled.numpy())[inside].mean() < 0.02


# ----------------------------------------------------------------------------- accuracy
def test_rigid_registration_of_phantom_pair(pair):
    fixed, moving = pair
    pts = body_points(fixed)
    assert tre(np.eye(4), TRUE, pts)[0] > 7.0  # far off to begin with
    result = reg.register(fixed, moving, transform="rigid")
    mean, worst = tre(result.fixed_to_moving, TRUE, pts)
    assert mean < 0.5 and worst < 1.0, (mean, worst)
    assert result.metric_final > result.metric_initial
    assert result.method == "intensity" and result.iterations > 0
    assert [s["stage"] for s in result.stages] == ["rigid"] * 3
    record = result.to_dict()
    assert record["direction"].startswith("fixed world point")
    assert np.allclose(record["fixed_to_moving_ras"], result.fixed_to_moving, atol=1e-8)


def test_affine_registration_recovers_scaling(pair):
    truth = TRUE @ np.diag([1.06, 0.95, 1.03, 1.0])
    fixed, moving = phantom_pair(truth, seed=1)
    result = reg.register(fixed, moving, transform="affine")
    mean, worst = tre(result.fixed_to_moving, truth, body_points(fixed))
    assert mean < 0.6 and worst < 1.5, (mean, worst)
    assert [s["stage"] for s in result.stages] == ["rigid"] * 3 + ["affine"] * 2
    sv = np.linalg.svd(result.fixed_to_moving[:3, :3], compute_uv=False)
    assert np.allclose(sorted(sv), [0.95, 1.03, 1.06], atol=0.02)  # a rigid fit would be 0.06 off


def test_masks_restrict_the_metric(pair):
    fixed, moving = pair
    body = Volume(
        (np.sum(((_grid(fixed.spatial_shape, fixed.affine) - _BODY[0]) / (np.array(_BODY[1]) + 3)) ** 2, axis=1) <= 1)
        .reshape(fixed.spatial_shape)
        .astype(np.uint8),
        fixed.affine,
        "SEG",
        "label",
    )
    result = reg.register(fixed, moving, fixed_mask=body)
    mean, worst = tre(result.fixed_to_moving, TRUE, body_points(fixed))
    assert mean < 0.5 and worst < 1.0
    assert result.parameters["fixed_mask"] is True


@pytest.fixture(scope="module")
def mni_pair():
    """The MNI152 template (2 mm, shipped in nilearn) and a PET-like image derived from it."""
    import nilearn
    from scipy import ndimage

    from napari_immunotrack.io.nifti import read_nifti

    path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    t1 = read_nifti(path)
    data = t1.numpy().astype(np.float32)
    s = [n - n % 2 for n in data.shape]
    data = data[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean((1, 3, 5))
    data /= data.max()
    affine = t1.affine.copy()
    affine[:3, :3] *= 2
    affine[:3, 3] += 0.5 * (t1.affine[:3, :3] @ np.ones(3))
    fixed = Volume(data, affine, modality="MR", name="mni152")
    # FDG-like contrast: grey matter (T1 around 0.6) hot, white matter warm, CSF cold
    pet = np.exp(-(((data - 0.6) / 0.12) ** 2)) + 0.3 * (data > 0.75)
    pet = ndimage.gaussian_filter(pet.astype(np.float32), 6.0 / 2.355 / 2.0)  # 6 mm FWHM
    truth = euler((8.0, -6.0, 9.0), (7.0, -8.0, 6.0))
    m_aff = np.array([[0, 0, 3.0, -96.0], [0, 3.0, 0, -132.0], [3.0, 0, 0, -70.0], [0, 0, 0, 1]])
    src = fixed.replace(data=pet)
    moving = src.resample_to(((64, 78, 64), m_aff), transform=np.linalg.inv(truth))
    rng = np.random.default_rng(3)
    noisy = moving.numpy() + rng.normal(0, 0.05 * moving.numpy().max(), moving.spatial_shape)
    return fixed, moving.replace(data=noisy.astype(np.float32), modality="PT", name="pet"), truth


def test_mni_template_against_pet_like_image(mni_pair):
    fixed, moving, truth = mni_pair
    brain = np.argwhere(fixed.numpy() > 0.1)
    pts = fixed.index_to_world(brain[np.random.default_rng(0).choice(len(brain), 5000, replace=False)])
    assert tre(np.eye(4), truth, pts)[0] > 10
    result = reg.register(fixed, moving)
    mean, worst = tre(result.fixed_to_moving, truth, pts)
    assert mean <= 1.0 and worst <= 2.0, (mean, worst)


def test_simulator_mouse_pair():
    from napari_immunotrack.simulate import registration_pair

    d = registration_pair(seed=2, rotation_deg=(7.0, -9.0, 5.0), translation_mm=(2.5, -2.0, 3.0))
    fixed, moving, truth = d["fixed"], d["moving"], d["fixed_to_moving"]
    body = np.argwhere(fixed.numpy() > np.percentile(fixed.numpy(), 60))
    pts = fixed.index_to_world(body[np.random.default_rng(0).choice(len(body), 4000, replace=False)])
    result = reg.register(fixed, moving)
    mean, worst = tre(result.fixed_to_moving, truth, pts)
    assert mean <= 0.5 and worst <= 1.0, (mean, worst)
    # the landmarks the simulator gives land where they should
    assert np.allclose(result.transform_points(d["landmarks_fixed"]), d["landmarks_moving"], atol=1.0)


# ----------------------------------------------------------------------------- landmarks
def test_landmarks_recover_rigid_transform_with_expected_fre():
    truth = euler((12.0, -8.0, 25.0), (10.0, -4.0, 6.0))
    rng = np.random.default_rng(0)
    sigma = 0.5  # mm per axis, on each image
    fle = np.sqrt(3 * 2) * sigma  # RMS 3D localisation error of a pair (both images)
    fre2, tre_centre = [], []
    target = np.array([[5.0, 5.0, 5.0]])
    for _ in range(300):
        fixed_true = rng.uniform(-40, 40, (6, 3))
        fixed_pts = fixed_true + rng.normal(0, sigma, (6, 3))
        moving_pts = apply(truth, fixed_true) + rng.normal(0, sigma, (6, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImmunotrackWarning)
            r = reg.register_landmarks(fixed_pts, moving_pts, "rigid")
        assert r.fre_mm.shape == (6,)
        assert np.isclose(r.metric_final, np.sqrt(np.mean(r.fre_mm**2)))
        fre2.append(np.mean(r.fre_mm**2))
        tre_centre.append(np.linalg.norm(apply(r.fixed_to_moving, target) - apply(truth, target)))
    expected = reg.expected_fre(fle, 6, "rigid")  # sqrt(1 - 2/6) * FLE = 1.0 mm
    assert np.isclose(np.sqrt(np.mean(fre2)), expected, rtol=0.1)
    assert np.isclose(expected, 1.0, atol=1e-9)
    assert np.mean(tre_centre) < 1.0


def test_landmarks_exact_affine_and_rigid():
    truth = euler((3.0, 4.0, -5.0), (1.0, 2.0, 3.0)) @ np.diag([1.1, 0.9, 1.05, 1.0])
    pts = np.array([[0, 0, 0], [30, 0, 0], [0, 25, 0], [0, 0, 20], [15, 10, 5], [-10, 5, 12.0]])
    r = reg.register_landmarks(pts, apply(truth, pts), "affine")
    assert np.allclose(r.fixed_to_moving, truth, atol=1e-9)
    assert r.metric_final < 1e-9 and r.metric_initial > 1.0
    rigid = euler((3.0, 4.0, -5.0), (1.0, 2.0, 3.0))
    assert np.allclose(reg.register_landmarks(pts[:3], apply(rigid, pts[:3])).fixed_to_moving, rigid, atol=1e-9)


def test_expected_tre_grows_away_from_the_landmarks():
    pts = np.array([[-20, 0, 0], [20, 0, 0], [0, -20, 0], [0, 20, 0], [0, 0, -20], [0, 0, 20.0]])
    near, far = reg.expected_tre(pts, [[0, 0, 0], [80, 0, 0]], 1.0)
    assert np.isclose(near, 1 / np.sqrt(6))  # at the centroid: FLE / sqrt(N)
    assert far > 2 * near


@pytest.mark.parametrize(
    "fixed_pts, moving_pts, transform, match",
    [
        ([[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, 0]], "rigid", "at least 3 pairs"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "affine", "at least 4 pairs"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 0, 0]], "rigid", "same landmarks"),
        ([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], "rigid", "line"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], "affine", "plane"),
        ([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "rigid", "NaN"),
    ],
)
def test_bad_landmarks_are_refused(fixed_pts, moving_pts, transform, match):
    with pytest.raises(InputError, match=match):
        reg.register_landmarks(fixed_pts, moving_pts, transform)


def test_a_mispaired_landmark_is_flagged():
    pts = np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30], [20, 20, 0], [0, 20, 20.0]])
    moved = pts + [1.0, 2.0, 3.0]
    moved[4] += [8.0, 0, 0]
    with pytest.warns(ImmunotrackWarning, match="pair 5"):
        r = reg.register_landmarks(pts, moved)
    assert r.warnings and int(np.argmax(r.fre_mm)) == 4


# ----------------------------------------------------------------------------- transform files
def test_tfm_round_trip_and_lps_content(tmp_path):
    truth = euler((10.0, -20.0, 5.0), (12.0, -3.0, 7.5))
    path = write_transform(tmp_path / "t.tfm", truth, provenance={"step": "test"})
    assert np.allclose(read_transform(path), truth, atol=1e-12)
    text = path.read_text()
    assert "AffineTransform_double_3_3" in text
    params = np.array(next(l for l in text.splitlines() if l.startswith("Parameters:")).split()[1:], float)
    lps = F @ truth @ F
    assert np.allclose(params[:9], lps[:3, :3].ravel()) and np.allclose(params[9:], lps[:3, 3])
    # what Slicer/ANTs do with it: map a fixed LPS point to the moving LPS point
    tx = sitk.ReadTransform(str(path))
    p = np.array([10.0, 20.0, 30.0])  # RAS
    assert np.allclose(np.array(tx.TransformPoint(tuple(p * [-1, -1, 1]))) * [-1, -1, 1], apply(truth, p)[0])
    assert (tmp_path / "t.tfm.provenance.json").exists()
    with pytest.raises(InputError, match="already exists"):
        write_transform(path, truth)
    for ext in ("txt", "mat"):
        assert np.allclose(read_transform(write_transform(tmp_path / f"t.{ext}", truth)), truth, atol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mat", "t.tfm", "t.tfm.provenance.json", "t.txt"]


def test_reads_slicer_style_and_composite_files(tmp_path):
    # 3D Slicer writes a MatrixOffsetTransformBase with a centre of rotation
    (tmp_path / "slicer.tfm").write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
        "Parameters: 0 -1 0 1 0 0 0 0 1 5 6 7\nFixedParameters: 10 20 30\n"
    )
    m = read_transform(tmp_path / "slicer.tfm")
    lps = np.eye(4)
    lps[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    c = np.array([10.0, 20.0, 30.0])
    lps[:3, 3] = np.array([5.0, 6.0, 7.0]) + c - lps[:3, :3] @ c
    assert np.allclose(m, F @ lps @ F)
    a, b = euler((5, 0, 0), (1, 2, 3)), euler((0, 0, 9), (-1, 0, 4))
    comp = sitk.CompositeTransform([reg.matrix_to_sitk_transform(a), reg.matrix_to_sitk_transform(b)])
    sitk.WriteTransform(comp, str(tmp_path / "comp.tfm"))
    # ITK composites apply the last-added transform first
    assert np.allclose(read_transform(tmp_path / "comp.tfm"), a @ b, atol=1e-9)


@pytest.mark.parametrize(
    "content, match",
    [
        ("not a transform\n", "not a readable"),
        (None, "does not exist"),
    ],
)
def test_bad_transform_files(tmp_path, content, match):
    path = tmp_path / "bad.tfm"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match):
        read_transform(path)
    with pytest.raises(InputError, match="must end in"):
        write_transform(tmp_path / "t.json", np.eye(4))
    with pytest.raises(InputError, match="singular"):
        write_transform(tmp_path / "s.tfm", np.diag([1.0, 0.0, 1.0, 1.0]))
    assert not (tmp_path / "s.tfm").exists()


# ----------------------------------------------------------------------------- quality control
def test_quality_control_views(pair):
    fixed, moving = pair
    on_fixed = reg.resample_moving(fixed, moving, TRUE)
    board = reg.checkerboard(fixed, on_fixed, square_mm=8.0)
    assert board.same_grid(fixed) and 0.0 <= board.numpy().min() and board.numpy().max() <= 1.0
    a, b = reg.normalised(fixed).numpy(), reg.normalised(on_fixed).numpy()  # log for the PET, as the metric
    from_fixed = np.isclose(board.numpy(), a)
    from_moving = np.isclose(board.numpy(), b)
    assert (from_fixed | from_moving).all() and 0.3 < from_fixed.mean() < 0.7
    diff = reg.difference(fixed, on_fixed)
    assert np.allclose(diff.numpy(), b - a)
    edge = reg.edges(fixed)
    assert set(np.unique(edge.numpy())) == {0, 1} and edge.same_grid(fixed)
    # edges sit on the body surface, not deep inside it
    centre = fixed.world_to_index([_BODY[0]])[0].round().astype(int)
    assert edge.numpy()[tuple(centre)] == 0
    with pytest.raises(InputError, match="fixed grid"):
        reg.checkerboard(fixed, moving)
    # metric before and after a known transform
    assert reg.evaluate_metric(fixed, moving, TRUE) > reg.evaluate_metric(fixed, moving) + 0.1


# ----------------------------------------------------------------------------- bad inputs (API)
def test_single_slice_against_volume(pair):
    fixed, moving = pair
    flat = moving.replace(data=moving.numpy()[:1])
    with pytest.raises(InputError, match="2D"):
        reg.register(fixed, flat)


@pytest.mark.parametrize("value, match", [(0.0, "empty"), (3.5, "constant")])
def test_empty_or_constant_image(pair, value, match):
    fixed, moving = pair
    with pytest.raises(InputError, match=match):
        reg.register(fixed, moving.replace(data=np.full(moving.spatial_shape, value, np.float32)))


def test_mask_outside_its_image(pair):
    fixed, moving = pair
    far = fixed.affine.copy()
    far[:3, 3] += 500.0
    mask = Volume(np.ones(fixed.spatial_shape, np.uint8), far, "SEG", "label")
    with pytest.raises(InputError, match="does not overlap the fixed image"):
        reg.register(fixed, moving, fixed_mask=mask)


def test_images_that_do_not_overlap(pair):
    fixed, moving = pair
    away = moving.affine.copy()
    away[:3, 3] += [400.0, 0, 0]
    with pytest.raises(InputError, match="do not overlap after initialisation"):
        reg.register(fixed, moving.replace(affine=away), initializer="none")
    # the default initialiser brings them together and succeeds
    result = reg.register(fixed, moving.replace(affine=away), initializer="moments")
    truth = np.eye(4)
    truth[:3, 3] = [400.0, 0, 0]
    assert tre(result.fixed_to_moving, truth @ TRUE, body_points(fixed))[0] < 0.5


def test_four_dimensional_image_is_refused(pair):
    fixed, moving = pair
    with pytest.raises(InputError, match="frame"):
        reg.register(fixed, moving.replace(data=np.stack([moving.numpy()] * 2)))


def test_bad_parameters(pair):
    fixed, moving = pair
    with pytest.raises(InputError, match="rigid"):
        reg.register(fixed, moving, transform="bspline")
    with pytest.raises(InputError, match="initializer"):
        reg.register(fixed, moving, initializer="magic")
    with pytest.raises(InputError, match="seed"):
        reg.register(fixed, moving, seed=0)


def worse_pair():
    """Two aligned images (the identity is right) on which the moments initialiser leads astray.

    A lattice of identical spheres has many local optima. The moving image
    (an inverted contrast) also holds a bright slab the fixed one lacks,
    which drags its centre of mass 6 mm away; from there the optimiser
    settles on a wrong lattice position whose metric is worse than at the start.
    """
    shape = (40, 40, 40)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    period = 8.0
    cell = (idx % period) - period / 2 + 0.5
    spheres = (np.sum(cell**2, axis=1) <= 3.0**2).reshape(shape).astype(np.float32)
    rng = np.random.default_rng(0)
    fixed = spheres + rng.normal(0, 0.05, shape).astype(np.float32)
    moving = 1.0 - spheres * 0.8
    moving[:, :, 34:] = 3.0  # a bright slab only in the moving image
    moving = moving + rng.normal(0, 0.05, shape).astype(np.float32)
    return Volume(fixed, affine, "MR", name="fixed"), Volume(moving.astype(np.float32), affine, "MR", name="moving")


def test_result_worse_than_the_start_is_refused():
    fixed, moving = worse_pair()
    with pytest.raises(InputError, match="made the metric worse"):
        reg.register(fixed, moving, initializer="moments")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reg.register(fixed, moving, initializer="moments", force=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, ImmunotrackWarning)]
    assert any("made the metric worse" in m for m in messages)
    assert result.metric_final < result.metric_initial
    assert any("worse" in w for w in result.warnings)  # recorded for provenance too


def test_cancel_stops_quietly(pair, capfd):
    fixed, moving = pair
    calls = []

    def progress(fraction, message):
        calls.append((fraction, message))
        if "iteration 3" in message:
            raise Cancelled("cancelled by the user")

    with pytest.raises(Cancelled):
        reg.register(fixed, moving, progress=progress)
    assert any("iteration" in m for _, m in calls)
    assert "Traceback" not in capfd.readouterr().err
    # a normal run after a cancelled one is unaffected
    fractions = []
    reg.register(fixed, moving, progress=lambda f, m: fractions.append(f))
    assert fractions[-1] == 1.0 and all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def files(tmp_path_factory, pair):
    folder = tmp_path_factory.mktemp("reg")
    fixed, moving = pair
    save_volume(fixed, folder / "mri.nii.gz")
    save_volume(moving, folder / "pet.nii.gz")
    return folder


def test_cli_register_writes_transform_and_resampled(files, tmp_path, capsys, monkeypatch):
    out, res = tmp_path / "pet_to_mri.tfm", tmp_path / "pet_on_mri.nii.gz"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress is drawn on a terminal only
    rc = main(
        [
            "register",
            str(files / "mri.nii.gz"),
            str(files / "pet.nii.gz"),
            "-o",
            str(out),
            "--transform",
            "rigid",
            "--resampled",
            str(res),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "start" in captured.out and "final" in captured.out and "mutual information" in captured.out
    assert "registering pet to mri" in captured.err and "100.0%" in captured.err  # progress
    fixed = load_volume(files / "mri.nii.gz")
    mean, worst = tre(read_transform(out), TRUE, body_points(fixed))
    assert mean < 0.5 and worst < 1.0
    resampled = load_volume(res)
    assert resampled.same_grid(fixed)
    import json

    record = json.loads((tmp_path / "pet_to_mri.tfm.provenance.json").read_text())
    assert record["step"] == "register" and "sha256" in record["inputs"]["fixed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pet_on_mri.nii.gz",
        "pet_on_mri.nii.gz.provenance.json",
        "pet_to_mri.tfm",
        "pet_to_mri.tfm.provenance.json",
    ]


def test_cli_landmarks(tmp_path, files, capsys):
    import pandas as pd

    pts = np.array([[0, 0, 0], [10, 0, 0], [0, 12, 0], [0, 0, 9], [6, 6, 6], [-5, 3, 8.0]])
    pd.DataFrame(pts, columns=["x_mm", "y_mm", "z_mm"]).to_csv(tmp_path / "f.csv", index=False)
    pd.DataFrame(apply(TRUE, pts), columns=["x_mm", "y_mm", "z_mm"]).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "lm.tfm"
    rc = main(
        [
            "register",
            str(files / "mri.nii.gz"),
            str(files / "pet.nii.gz"),
            "-o",
            str(out),
            "--fixed-points",
            str(tmp_path / "f.csv"),
            "--moving-points",
            str(tmp_path / "m.csv"),
        ]
    )
    assert rc == 0
    assert "fiducial registration error" in capsys.readouterr().out
    assert np.allclose(read_transform(out), TRUE, atol=1e-6)


def _two_points(tmp_path):
    import pandas as pd

    pd.DataFrame([[0, 0, 0], [1, 0, 0]], columns=["x_mm", "y_mm", "z_mm"]).to_csv(tmp_path / "two.csv", index=False)
    return str(tmp_path / "two.csv")


def _bad_case(name, folder, tmp_path):
    """Command-line arguments (after the output) for one bad input, writing the files it needs."""
    fixed, moving = folder / "mri.nii.gz", folder / "pet.nii.gz"
    if name == "2d":
        v = load_volume(moving)
        save_volume(v.replace(data=v.numpy()[:1]), tmp_path / "slice.nii.gz")
        return [str(fixed), str(tmp_path / "slice.nii.gz")], "2D"
    if name == "constant":
        v = load_volume(moving)
        save_volume(v.replace(data=np.zeros(v.spatial_shape, np.float32)), tmp_path / "zero.nii.gz")
        return [str(fixed), str(tmp_path / "zero.nii.gz")], "empty"
    if name == "mask":
        v = load_volume(fixed)
        far = v.affine.copy()
        far[:3, 3] += 300
        save_volume(Volume(np.ones(v.spatial_shape, np.uint8), far, "SEG", "label"), tmp_path / "mask.nii.gz")
        return [str(fixed), str(moving), "--fixed-mask", str(tmp_path / "mask.nii.gz")], "mask does not overlap"
    if name == "no-overlap":
        v = load_volume(moving)
        away = v.affine.copy()
        away[:3, 3] += 400
        save_volume(v.replace(affine=away), tmp_path / "away.nii.gz")
        return [str(fixed), str(tmp_path / "away.nii.gz"), "--initializer", "none"], "do not overlap"
    if name == "worse":
        f, m = worse_pair()
        save_volume(f, tmp_path / "wf.nii.gz")
        save_volume(m, tmp_path / "wm.nii.gz")
        return [str(tmp_path / "wf.nii.gz"), str(tmp_path / "wm.nii.gz"), "--initializer", "moments"], "worse"
    if name == "landmarks":
        two = _two_points(tmp_path)
        return [str(fixed), str(moving), "--fixed-points", two, "--moving-points", two], "at least 3 pairs"
    if name == "one-landmark-file":
        return [str(fixed), str(moving), "--fixed-points", _two_points(tmp_path)], "both"
    if name == "missing":
        return [str(fixed), str(tmp_path / "nope.nii.gz")], "does not exist"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["2d", "constant", "mask", "no-overlap", "worse", "landmarks", "one-landmark-file", "missing"]
)
def test_cli_bad_inputs_leave_nothing(name, files, tmp_path, capsys):
    args, expected = _bad_case(name, files, tmp_path)
    before = set(tmp_path.iterdir())
    out, res = tmp_path / "out.tfm", tmp_path / "res.nii.gz"
    rc = main(["register", *args[:2], "-o", str(out), "--resampled", str(res), *args[2:]])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.splitlines() if "error" in l]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # no output, no temporary file


def test_cli_refuses_bad_outputs(files, tmp_path, capsys):
    base = ["register", str(files / "mri.nii.gz"), str(files / "pet.nii.gz")]
    assert main([*base, "-o", str(tmp_path / "t.json")]) == 2
    assert "must end in .tfm" in capsys.readouterr().err
    (tmp_path / "exists.tfm").write_text("keep me")
    assert main([*base, "-o", str(tmp_path / "exists.tfm")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "exists.tfm").read_text() == "keep me"
    assert main([*base, "-o", str(tmp_path / "a.tfm"), "--resampled", str(tmp_path / "r.tif")]) == 2
    assert "NIfTI" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.tfm"]


def test_cli_does_not_import_napari(files, tmp_path):
    import subprocess

    code = (
        "import sys; from napari_immunotrack.cli import main; "
        f"rc = main(['register', {str(files / 'mri.nii.gz')!r}, {str(files / 'pet.nii.gz')!r}, "
        f"'-o', {str(tmp_path / 'x.tfm')!r}]); "
        "assert rc == 0; assert 'napari' not in sys.modules and 'qtpy' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


# ----------------------------------------------------------------------------- the simulated study
@pytest.fixture(scope="module")
def tiny_study(simulated_study):
    import json

    root = simulated_study  # tests/conftest.py: one tiny study for the session
    truth = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]["sessions"]["ses-day1"]
    ses = root / "sub-01" / "ses-day1"
    mri = load_volume(next((ses / "anat").glob("*_T2w.nii.gz")))
    data = mri.numpy()
    idx = np.argwhere(data > np.percentile(data, 50))
    pts = mri.index_to_world(idx[np.random.default_rng(0).choice(len(idx), 3000, replace=False)])
    images = {
        "pet": load_volume(ses / "pet"),
        "mpi": load_volume(next((ses / "mpi").glob("*_mpi.nii.gz"))),
        "f19": load_volume(next((ses / "f19").glob("*_19F.nii.gz"))),
    }
    return mri, images, {k: np.array(truth[k][f"mri_to_{k}"]) for k in images}, pts


def test_study_pet_to_mri_then_mpi_to_pet(tiny_study):
    mri, images, truth, pts = tiny_study
    pet = reg.register(mri, images["pet"])
    assert pet.parameters["intensity_used"] == {"fixed": "linear", "moving": "log"}
    mean, worst = tre(pet.fixed_to_moving, truth["pet"], pts)
    assert mean < 0.6 and worst < 1.0, (mean, worst)
    # MPI has no anatomy: registered to the (registered) PET around its hot spots
    pet_in_mri_world = images["pet"].replace(affine=pet.apply_to_affine(images["pet"].affine))
    mpi = reg.register(pet_in_mri_world, images["mpi"])
    assert mpi.parameters["hot_spot_mask"] is True
    mean, worst = tre(mpi.fixed_to_moving, truth["mpi"], pts)  # MRI world -> MPI world, composed through the PET
    assert mean < 0.6 and worst < 1.0, (mean, worst)


@pytest.mark.parametrize("key", ["mpi", "f19"])
def test_study_hot_spot_images_against_mri_are_refused(tiny_study, key):
    mri, images, truth, pts = tiny_study
    with pytest.raises(InputError, match="no usable information|worse"):
        reg.register(mri, images[key])


def test_no_shared_information_is_refused(pair):
    fixed, moving = pair
    noise = moving.replace(data=np.random.default_rng(0).normal(0, 1, moving.spatial_shape).astype(np.float32))
    with pytest.raises(InputError, match="no usable information"):
        reg.register(fixed, noise, initializer="none")
