"""Capture range of multimodal registration (issue 18 item 3): the right pose from starts up to
+-30 degrees about any axis and +-20 mm, and a warning instead of a quietly wrong map.

Accuracy is the target registration error (TRE) at the simulator's landmarks (organ centres),
against the transform the pair was built with (``simulate.registration_pair``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_immunotrack import registration as reg
from napari_immunotrack.cli import main
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.io import save_volume
from napari_immunotrack.io.transforms import read_transform
from napari_immunotrack.registration.search import (
    distinct_best,
    euler_matrices_ras,
    orientation_grid,
)
from napari_immunotrack.simulate import registration_pair
from napari_immunotrack.volume import Volume


def landmark_tre(result_matrix, pair) -> np.ndarray:
    """Distance (mm) at each landmark between where the estimate and the truth send it."""
    pts = np.c_[pair["landmarks_fixed"], np.ones(len(pair["landmarks_fixed"]))]
    return np.linalg.norm((pts @ np.asarray(result_matrix).T)[:, :3] - pair["landmarks_moving"], axis=1)


def register_quietly(fixed, moving, **kw):
    """register(), returning the result and the package warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reg.register(fixed, moving, **kw)
    return result, [str(w.message) for w in caught if issubclass(w.category, ImmunotrackWarning)]


# Far poses: combined rotations about all three axes near the +-30 degree limit and shifts near 20 mm.
QUICK_POSES = [
    ("PT", (25.0, -25.0, 20.0), (10.0, -12.0, 15.0), 1),
    ("NM", (-28.0, 12.0, -22.0), (-18.0, 15.0, 8.0), 5),
]


@pytest.fixture(scope="module")
def far_pet_pair():
    modality, rot, shift, seed = QUICK_POSES[0]
    return registration_pair(seed=seed, rotation_deg=rot, translation_mm=shift, modality=modality)


@pytest.mark.parametrize("modality,rotation,shift,seed", QUICK_POSES)
def test_far_poses_are_captured(modality, rotation, shift, seed):
    pair = registration_pair(seed=seed, rotation_deg=rotation, translation_mm=shift, modality=modality)
    assert landmark_tre(np.eye(4), pair).mean() > 15.0  # far off to begin with
    result, caught = register_quietly(pair["fixed"], pair["moving"])
    error = landmark_tre(result.fixed_to_moving, pair)
    assert error.max() <= 1.0, error
    assert error.mean() <= 0.3, error
    assert not result.parameters["doubtful"] and not caught, caught
    search = result.parameters["search"]
    assert search["capture_range_deg"] == 30.0 and search["candidates"] >= 125
    assert len(search["optimised"]) >= 2


def test_without_the_search_the_same_pose_is_missed(far_pet_pair):
    """The search is what captures the far pose: the translation-only start lands in a wrong optimum."""
    result, _ = register_quietly(far_pet_pair["fixed"], far_pet_pair["moving"], capture_range_deg=0, force=True)
    assert landmark_tre(result.fixed_to_moving, far_pet_pair).mean() > 5.0
    assert result.parameters["search"]["capture_range_deg"] == 0.0 and "optimised" not in result.parameters["search"]


def test_small_misalignment_gives_the_same_result_with_and_without_search():
    pair = registration_pair(seed=0)  # 3, -2, 4 degrees and 1.5, -1, 2 mm
    on, _ = register_quietly(pair["fixed"], pair["moving"])
    off, _ = register_quietly(pair["fixed"], pair["moving"], capture_range_deg=0)
    assert landmark_tre(on.fixed_to_moving, pair).max() <= 0.3
    assert landmark_tre(off.fixed_to_moving, pair).max() <= 0.3
    pts = np.c_[pair["landmarks_fixed"], np.ones(len(pair["landmarks_fixed"]))]
    assert np.abs(pts @ on.fixed_to_moving.T - pts @ off.fixed_to_moving.T).max() < 0.15


@pytest.mark.slow
def test_capture_sweep_random_poses():
    """100 % capture over 10 random poses within +-30 degrees per axis and +-20 mm, PET and SPECT alternating."""
    rng = np.random.default_rng(2026)
    failures = []
    for k in range(10):
        modality = ("PT", "NM")[k % 2]
        rotation, shift = rng.uniform(-30, 30, 3), rng.uniform(-20, 20, 3)
        pair = registration_pair(seed=100 + k, rotation_deg=rotation, translation_mm=shift, modality=modality)
        result, _ = register_quietly(pair["fixed"], pair["moving"])
        error = landmark_tre(result.fixed_to_moving, pair)
        if error.max() > 1.0:
            failures.append((modality, rotation.round(1).tolist(), shift.round(1).tolist(), float(error.max())))
    assert not failures, failures


# ----------------------------------------------------------------------------- doubtful results
def test_moving_image_of_another_region_warns(far_pet_pair):
    """A moving image that shows only the far end of the body (a quarter of its field of view) is flagged."""
    moving = far_pet_pair["moving"]
    n = moving.spatial_shape[0]
    start = int(0.75 * n)
    shifted = moving.affine.copy()
    shifted[:3, 3] = moving.affine[:3, :3] @ [start, 0, 0] + moving.affine[:3, 3]
    other = moving.replace(data=np.ascontiguousarray(moving.numpy()[start:]), affine=shifted)
    try:
        result, caught = register_quietly(far_pet_pair["fixed"], other)
    except InputError as exc:  # refusing outright is also telling the user
        assert "information" in str(exc) or "worse" in str(exc) or "overlap" in str(exc)
        return
    assert result.parameters["doubtful"] is True
    assert any("falls inside the moving one" in m or "equally well" in m for m in caught), caught
    assert result.warnings  # kept for provenance too


def test_pure_noise_is_refused_and_forced_is_flagged(far_pet_pair):
    moving = far_pet_pair["moving"]
    noise = moving.replace(data=np.random.default_rng(0).normal(0, 1, moving.spatial_shape).astype(np.float32))
    with pytest.raises(InputError, match="no usable information|made the metric worse"):
        reg.register(far_pet_pair["fixed"], noise)
    result, caught = register_quietly(far_pet_pair["fixed"], noise, force=True)
    assert result.parameters["doubtful"] is True and any("no usable information" in m for m in caught), caught


def lobed_phantom(rotation_deg: float, modality: str, seed: int) -> Volume:
    """A disc with 6 identical lobes about the x axis (60 degree symmetry), MRI-like or PET-like contrast."""
    from scipy import ndimage

    n = 48
    affine = np.eye(4)
    affine[:3, 3] = -(n - 1) / 2
    idx = np.indices((n, n, n)).reshape(3, -1).T.astype(float) + affine[:3, 3]
    a = np.deg2rad(rotation_deg)
    y = idx[:, 1] * np.cos(a) + idx[:, 2] * np.sin(a)
    z = -idx[:, 1] * np.sin(a) + idx[:, 2] * np.cos(a)
    r, phi = np.hypot(y, z), np.arctan2(z, y)
    body = (r < 18) & (np.abs(idx[:, 0]) < 10)
    lobes = body & (r > 9) & (np.cos(6 * phi) > 0.5) & (np.abs(idx[:, 0]) < 6)
    core = body & (r < 5)
    base, lobe, centre = {"MR": (0.4, 1.0, 0.1), "PT": (0.2, 0.1, 1.0)}[modality]
    image = base * body + (lobe - base) * lobes + (centre - base) * core
    image = ndimage.gaussian_filter(image.reshape(n, n, n).astype(np.float32), 1.0)
    image += np.random.default_rng(seed).normal(0, 0.03, image.shape).astype(np.float32)
    return Volume(image.astype(np.float32), affine, modality)


def test_two_equally_good_poses_warn():
    """Turned by 30 degrees, a 60-degree-symmetric object fits at +30 and -30 equally: the user is told."""
    result, caught = register_quietly(lobed_phantom(0, "MR", 0), lobed_phantom(30, "PT", 1))
    assert result.parameters["doubtful"] is True
    assert any("two clearly different poses fit almost equally well" in m for m in caught), caught
    assert result.parameters["search"]["rival_distance_mm"] > 10.0
    # both candidates are 30 degree turns about x, one each way
    turned = np.degrees(np.arccos(np.clip((np.trace(result.fixed_to_moving[:3, :3]) - 1) / 2, -1, 1)))
    assert abs(turned - 30.0) < 3.0


# ----------------------------------------------------------------------------- pieces
def test_orientation_grid_and_distinct_starts():
    grid = orientation_grid(30, 15)
    assert grid.shape == (125, 3) and np.all(grid[0] == 0) and np.abs(grid).max() == 30
    assert len(np.unique(grid, axis=0)) == 125
    assert orientation_grid(20, 15).shape == (125, 3)  # ceil(20 / 15) = 2 steps each way, 10 degrees apart
    scores = -np.linalg.norm(grid - [30, -15, 0], axis=1)
    picks = distinct_best(scores, grid, 3, 15)
    assert grid[picks[0]].tolist() == [30, -15, 0]
    for i in picks[1:]:  # none is a grid neighbour of another
        assert all(np.abs(grid[i] - grid[j]).max() > 15 for j in picks if j != i)


def test_euler_matrices_match_simpleitk():
    from napari_immunotrack.registration.intensity import _euler

    angles = np.array([[10.0, -20.0, 30.0], [0.0, 15.0, -30.0], [-30.0, 30.0, 30.0]])
    centre, shift = (1.0, -2.0, 3.5), (4.0, -5.0, 6.0)
    matrices = euler_matrices_ras(angles, centre, shift)
    for a, m in zip(angles, matrices):
        assert np.allclose(m, reg.sitk_transform_to_matrix(_euler(centre, shift, np.deg2rad(a))), atol=1e-9)


def test_bad_search_parameters(far_pet_pair):
    fixed, moving = far_pet_pair["fixed"], far_pet_pair["moving"]
    with pytest.raises(InputError, match="capture_range_deg"):
        reg.register(fixed, moving, capture_range_deg=-5)
    with pytest.raises(InputError, match="search_step_deg"):
        reg.register(fixed, moving, search_step_deg=0)
    with pytest.raises(InputError, match="n_starts"):
        reg.register(fixed, moving, n_starts=0)


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def far_files(tmp_path_factory, far_pet_pair):
    folder = tmp_path_factory.mktemp("capture")
    save_volume(far_pet_pair["fixed"], folder / "mri.nii.gz")
    save_volume(far_pet_pair["moving"], folder / "pet.nii.gz")
    return folder


def test_cli_search_is_on_by_default_and_recorded(far_files, far_pet_pair, tmp_path, capsys):
    out = tmp_path / "t.tfm"
    rc = main(["register", str(far_files / "mri.nii.gz"), str(far_files / "pet.nii.gz"), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "orientation search: 125 rotations up to +-30 deg" in captured.out and "DOUBTFUL" not in captured.out
    assert landmark_tre(read_transform(out), far_pet_pair).max() <= 1.0
    record = json.loads((tmp_path / "t.tfm.provenance.json").read_text())
    assert record["parameters"]["search"]["capture_range_deg"] == 30.0
    # --no-search: recorded; this far pose is then missed, and the written result is flagged as doubtful
    out2 = tmp_path / "t2.tfm"
    rc = main(
        [
            "register",
            str(far_files / "mri.nii.gz"),
            str(far_files / "pet.nii.gz"),
            "-o",
            str(out2),
            "--no-search",
            "--force",
        ]
    )
    assert rc == 0
    record = json.loads((tmp_path / "t2.tfm.provenance.json").read_text())
    assert record["parameters"]["search"]["capture_range_deg"] == 0.0
    captured = capsys.readouterr()
    assert "DOUBTFUL" in captured.out and "immunotrack: warning:" in captured.err
    assert record["result"]["warnings"]
    assert landmark_tre(read_transform(out2), far_pet_pair).mean() > 5.0


def test_cli_bad_capture_range(far_files, tmp_path, capsys):
    out = tmp_path / "t.tfm"
    rc = main(
        [
            "register",
            str(far_files / "mri.nii.gz"),
            str(far_files / "pet.nii.gz"),
            "-o",
            str(out),
            "--capture-range",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--capture-range" in err and "--no-search" in err and "Traceback" not in err
    assert not out.exists()
