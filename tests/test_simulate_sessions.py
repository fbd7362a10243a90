"""Repositioned sessions in the study simulator (issue 18): every session in its own pose, with its own
gain, coil bias and a little soft-tissue shift, recorded in the truth; the one-bed layout unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_immunotrack.simulate.study import StudyDesign, make_study, make_subject, simulate_timepoint


@pytest.fixture(scope="module")
def repositioned_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("repositioned") / "study"
    design = StudyDesign(repositioned=True, deformation_mm=0.1)
    make_study(root, seed=4, timepoints_days=(0, 1, 3), size="tiny", design=design)
    return root


def test_one_bed_layout_is_the_default():
    r = simulate_timepoint(1, size="tiny", seed=3)
    pose = r["truth"]["session_pose"]
    assert np.allclose(pose["phantom_to_mri_world"], np.eye(4)) and pose["gain"] == 1.0


def test_anatomy_sits_where_the_recorded_pose_puts_it():
    design = StudyDesign(repositioned=True, deformation_mm=0.0)
    subject = make_subject(1, 5)
    r = simulate_timepoint(3, subject=subject, size="tiny", design=design)
    truth = r["truth"]
    S = np.asarray(truth["session_pose"]["phantom_to_mri_world"])
    assert not np.allclose(S, np.eye(4))  # the animal really moved
    dseg = r["volumes"]["dseg"]
    hits = 0
    for name, site in subject.mouse.sites.items():
        world = S[:3, :3] @ site["center_mm"] + S[:3, 3]
        idx = np.round(dseg.world_to_index(world)[0]).astype(int)
        if np.all(idx >= 0) and np.all(idx < dseg.spatial_shape):
            assert dseg.data[tuple(idx)] == site["label"], name
            hits += 1
    assert hits >= 5
    # the grid is axis-aligned in the scanner, as a scanner writes it
    assert dseg.is_axis_aligned()
    # foci truth is in this session's MRI world
    for focus in truth["foci"][:5]:
        assert np.allclose(S[:3, :3] @ focus["centroid_phantom_mm"] + S[:3, 3], focus["centroid_ras_mm"])


def test_receiver_gain_scales_signal_and_noise():
    design = StudyDesign(repositioned=True, deformation_mm=0.0, bias_strength=0.0, gain_range=(2.0, 2.0))
    subject = make_subject(1, 5)
    r = simulate_timepoint(0, subject=subject, size="tiny", design=design)
    muscle = r["volumes"]["dseg"].data == 1  # label 1: muscle
    assert np.median(r["volumes"]["T2w"].data[muscle]) == pytest.approx(2000, rel=0.05)
    assert r["sidecars"]["T2w"]["NoiseSigma"] == pytest.approx(2 * 1000 / design.snr)


def test_poses_recorded_and_sessions_aligned_back(repositioned_study):
    from napari_immunotrack.alignment import align_study, session_transform_name
    from napari_immunotrack.io.transforms import read_transform

    truth = json.loads((repositioned_study / "ground_truth.json").read_text())
    sessions = truth["subjects"]["01"]["sessions"]
    poses = {k: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in sessions.items()}
    assert len({round(float(p[0, 3]), 3) for p in poses.values()}) == 3  # three different poses
    results = {r.session: r for r in align_study(repositioned_study)}
    assert results["day0"].status == "reference"
    body_points = np.array([s["center_ras_mm"] for s in truth["subjects"]["01"]["sites"].values()])
    ref = poses["ses-day0"]
    for ses in ("day1", "day3"):
        assert results[ses].status == "aligned", results[ses].message
        est = read_transform(
            repositioned_study / "sub-01" / f"ses-{ses}" / "xfm" / session_transform_name("01", ses, "day0")
        )
        true = poses[f"ses-{ses}"] @ np.linalg.inv(ref)
        fixed_pts = body_points @ ref[:3, :3].T + ref[:3, 3]
        err = np.linalg.norm(
            (fixed_pts @ est[:3, :3].T + est[:3, 3]) - (fixed_pts @ true[:3, :3].T + true[:3, 3]), axis=1
        )
        assert err.mean() < 0.5 * 0.6, err  # half a voxel of the tiny grid (0.6 mm), with 0.1 mm soft-tissue shift
