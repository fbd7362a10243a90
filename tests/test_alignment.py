"""Session alignment (issue 18): repositioned, re-gained, re-biased sessions of one animal, scored against
the simulator's true poses (TRE in mm on anatomy inside the body)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from napari_immunotrack.alignment import align_mri, align_study, session_transform_name
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.simulate import sessions as S
from napari_immunotrack.simulate.phantom import make_mouse

CENTRE = (1.0, -1.0, 4.0)
VOXEL = 0.3
FOV = (19.2, 25.6, 25.6)


@pytest.fixture(scope="module")
def mouse():
    return make_mouse(0)


@pytest.fixture(scope="module")
def reference(mouse):
    return S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=1, bias_strength=0.2)


def _tre(result, reference, pose):
    pts = S.grid_points(reference.volume, 1.5, reference.labels > 0)
    return S.target_registration_error(result.fixed_to_moving, np.eye(4), pose, pts)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repositioned_session_within_half_a_voxel(mouse, reference, seed):
    rng = np.random.default_rng(100 + seed)
    pose = S.random_pose(rng, 15.0, 3.0, CENTRE)["matrix"]
    moving = S.session_mri(
        mouse,
        pose,
        voxel_mm=VOXEL,
        fov_mm=FOV,
        seed=10 + seed,
        gain=rng.uniform(0.6, 1.5),
        bias_strength=0.25,
        fov_offset_mm=rng.uniform(-1, 1, 3),
    )
    result = align_mri(reference.volume, moving.volume)
    tre = _tre(result, reference, pose)
    assert tre.mean() <= 0.5 * VOXEL, tre.mean()
    assert tre.max() <= VOXEL
    assert not result.doubtful and result.body_dice > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_capture_range_30_degrees_20_mm(mouse, reference, seed):
    rng = np.random.default_rng(200 + seed)
    rot = rng.uniform(-30, 30, 3)
    rot[rng.integers(3)] = rng.choice([-30.0, 30.0])  # at least one axis at the edge of the range
    pose = S.pose_matrix(rot, rng.uniform(-20, 20, 3), CENTRE)
    moving = S.session_mri(mouse, pose, voxel_mm=VOXEL, fov_mm=FOV, seed=20 + seed, gain=1.3, bias_strength=0.2)
    result = align_mri(reference.volume, moving.volume)
    assert _tre(result, reference, pose).mean() <= 0.5 * VOXEL


def test_prone_supine_flip_needs_the_half_turn(mouse, reference):
    pose = S.pose_matrix((5, -8, 12), (2, -3, 1), CENTRE, flip=True)
    moving = S.session_mri(mouse, pose, voxel_mm=VOXEL, fov_mm=FOV, seed=3, gain=1.2, bias_strength=0.25)
    plain = _quiet(align_mri, reference.volume, moving.volume)
    assert plain.doubtful  # without the half turn it cannot be found, and it says so
    assert any("half turn fits the orientation search better" in w for w in plain.warnings), plain.warnings
    flipped = align_mri(reference.volume, moving.volume, allow_flip=True)
    assert not flipped.doubtful
    assert _tre(flipped, reference, pose).mean() <= 0.5 * VOXEL


def test_gain_and_bias_do_not_move_the_result(mouse, reference):
    pose = S.pose_matrix((4, 3, -6), (1, 0.5, -1), CENTRE)
    plain = S.session_mri(mouse, pose, voxel_mm=VOXEL, fov_mm=FOV, seed=5)
    biased = S.session_mri(mouse, pose, voxel_mm=VOXEL, fov_mm=FOV, seed=5, gain=2.5, bias_strength=0.35)
    a = align_mri(reference.volume, plain.volume)
    b = align_mri(reference.volume, biased.volume)
    pts = S.grid_points(reference.volume, 2.0, reference.labels > 0)
    shift = np.linalg.norm(a.transform_points(pts) - b.transform_points(pts), axis=1)
    assert shift.max() < 0.5 * VOXEL


def test_another_body_region_is_doubtful(mouse, reference):
    elsewhere = S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=9, target_mm=(0, 0, -25))
    with pytest.warns(ImmunotrackWarning, match="doubtful"):
        result = align_mri(reference.volume, elsewhere.volume)
    assert result.doubtful and result.warnings


def test_bad_inputs_are_one_line(reference):
    empty = reference.volume.replace(data=np.zeros(reference.volume.shape, np.float32))
    with pytest.raises(InputError, match="no body"):
        align_mri(reference.volume, empty)
    with pytest.raises(InputError, match="transform="):
        align_mri(reference.volume, reference.volume, "elastic")


def test_align_study_saves_reuses_and_reports(tmp_path, mouse):
    """A study of three sessions in three poses: transforms saved in xfm/, right within half a voxel,
    reused on a rerun, and a session without anatomy reported without stopping the others."""
    from napari_immunotrack.io import save_volume
    from napari_immunotrack.io.transforms import read_transform

    root = tmp_path / "study"
    poses = {
        "day0": np.eye(4),
        "day1": S.pose_matrix((8, -4, 10), (2, 1, -1), CENTRE),
        "day3": S.pose_matrix((-12, 6, -5), (-1.5, 2, 0.5), CENTRE),
    }
    for n, (ses, pose) in enumerate(poses.items()):
        img = S.session_mri(mouse, pose, voxel_mm=VOXEL, fov_mm=FOV, seed=30 + n, gain=1 + 0.2 * n, bias_strength=0.2)
        folder = root / "sub-01" / f"ses-{ses}" / "anat"
        folder.mkdir(parents=True)
        save_volume(img.volume, folder / f"sub-01_ses-{ses}_T2w.nii.gz")
    (root / "sub-01" / "ses-day7" / "anat").mkdir(parents=True)
    shutil.copy(
        folder / "sub-01_ses-day3_T2w.nii.gz", root / "sub-01" / "ses-day7" / "anat" / "sub-01_ses-day7_T1w.nii.gz"
    )

    results = {r.session: r for r in align_study(root, contrast="T2w")}
    assert results["day0"].status == "reference"
    assert results["day7"].status == "failed" and "ses-day7" in results["day7"].message
    ref_grid = S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=30)
    pts = S.grid_points(ref_grid.volume, 2.0, ref_grid.labels > 0)
    for ses in ("day1", "day3"):
        assert results[ses].status == "aligned"
        path = root / "sub-01" / f"ses-{ses}" / "xfm" / session_transform_name("01", ses, "day0")
        assert path.exists()
        tre = S.target_registration_error(read_transform(path), np.eye(4), poses[ses], pts)
        assert tre.mean() <= 0.5 * VOXEL
    again = {r.session: r.status for r in align_study(root, contrast="T2w")}
    assert again["day1"] == again["day3"] == "reused"
    # an input changed since: the saved transform is kept and the user told to --overwrite
    saved = root / "sub-01" / "ses-day3" / "xfm" / session_transform_name("01", "day3", "day0")
    before = saved.read_bytes()
    img = S.session_mri(mouse, poses["day3"], voxel_mm=VOXEL, fov_mm=FOV, seed=99, bias_strength=0.2)
    save_volume(img.volume, root / "sub-01" / "ses-day3" / "anat" / "sub-01_ses-day3_T2w.nii.gz", overwrite=True)
    changed = {r.session: r for r in align_study(root, contrast="T2w")}
    assert changed["day3"].status == "failed" and "--overwrite" in changed["day3"].message
    assert saved.read_bytes() == before
    redone = {r.session: r.status for r in align_study(root, contrast="T2w", overwrite=True)}
    assert redone["day3"] == "aligned" and saved.read_bytes() != before
    with pytest.raises(InputError, match="no session"):
        align_study(root, reference="day5")


def test_align_study_sessions_that_cannot_be_aligned(tmp_path, mouse, capsys):
    """Another body region (no shared anatomy), another animal (headers name it) and a corrupt saved
    transform: each is one stderr line naming the session and what to do, nothing is written for it,
    and the good session is still aligned."""
    import json

    from napari_immunotrack.cli import main
    from napari_immunotrack.io import save_volume

    root = tmp_path / "study"
    sessions = {
        "day0": S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=40, bias_strength=0.2),
        "day1": S.session_mri(
            mouse, S.pose_matrix((8, -4, 10), (2, 1, -1), CENTRE), voxel_mm=VOXEL, fov_mm=FOV, seed=41, gain=1.2
        ),
        # the field of view 25 mm further down the animal: no anatomy in common with day 0
        "day3": S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=42, target_mm=(0, 0, -25)),
        # a well-aligned scan, but its header names another animal
        "day5": S.session_mri(
            mouse, S.pose_matrix((-5, 3, 4), (1, 0, 0), CENTRE), voxel_mm=VOXEL, fov_mm=FOV, seed=43, gain=0.9
        ),
    }
    for ses, img in sessions.items():
        folder = root / "sub-01" / f"ses-{ses}" / "anat"
        folder.mkdir(parents=True)
        save_volume(img.volume, folder / f"sub-01_ses-{ses}_T2w.nii.gz")
        animal = "mouse-B" if ses == "day5" else "mouse-A"
        (folder / f"sub-01_ses-{ses}_T2w.json").write_text(json.dumps({"PatientID": animal}))

    def xfm(ses):
        return root / "sub-01" / f"ses-{ses}" / "xfm" / session_transform_name("01", ses, "day0")

    rc = main(["align", str(root)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 2, lines
    assert lines[0].startswith("sub-01 ses-day3:") and "doubtful" in lines[0] and "nothing saved" in lines[0]
    assert lines[1].startswith("sub-01 ses-day5:") and "another animal" in lines[1] and "mouse-B" in lines[1]
    assert "ses-day1 -> ses-day0: rigid" in out and xfm("day1").exists()
    for ses in ("day3", "day5"):
        assert not xfm(ses).parent.exists() or list(xfm(ses).parent.iterdir()) == []
    # a saved transform corrupted since (its provenance intact): refused in one line, not reused
    xfm("day1").write_text("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 2\n")
    rc = main(["align", str(root), "--subject", "01"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and any(
        line.startswith("sub-01 ses-day1:") and "cannot be read" in line and "--overwrite" in line for line in lines
    ), lines
    assert main(["align", str(root), "--overwrite"]) == 2  # day3 and day5 still refused
    capsys.readouterr()
    pts = S.grid_points(sessions["day0"].volume, 2.0, sessions["day0"].labels > 0)
    from napari_immunotrack.io.transforms import read_transform

    tre = S.target_registration_error(read_transform(xfm("day1")), np.eye(4), sessions["day1"].pose, pts)
    assert tre.mean() <= 0.5 * VOXEL
