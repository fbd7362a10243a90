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


def test_pipeline_and_report_use_the_saved_session_alignment(repositioned_study):
    """After `align`, a repositioned baseline is brought onto a post session through the chained saved
    transforms (T_baseline @ inv(T_post)), the pipeline's clusters and confirmation steps run against it, and
    the report's timepoints are in the reference session's frame from those files (issue 18, item 7)."""
    from napari_immunotrack.alignment import align_study, baseline_transform_between, saved_session_transform
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.pipeline import analyse_session
    from napari_immunotrack.report import _timepoints_in_reference_frame
    from napari_immunotrack.study import discover

    align_study(repositioned_study)  # reused when the previous test already aligned
    truth = json.loads((repositioned_study / "ground_truth.json").read_text())
    sessions = truth["subjects"]["01"]["sessions"]
    poses = {k: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in sessions.items()}
    anat = {
        s: next((repositioned_study / "sub-01" / f"ses-{s}" / "anat").glob("*_T2starw.nii*")) for s in ("day0", "day3")
    }
    post, pre = load_volume(anat["day3"]), load_volume(anat["day0"])
    matrix, tolerance = baseline_transform_between(anat["day3"], anat["day0"], post, pre)
    true = poses["ses-day0"] @ np.linalg.inv(poses["ses-day3"])  # day-3 world -> day-0 world
    body = np.array([s["center_ras_mm"] for s in truth["subjects"]["01"]["sites"].values()])
    post_pts = body @ poses["ses-day3"][:3, :3].T + poses["ses-day3"][:3, 3]
    err = np.linalg.norm(
        (post_pts @ matrix[:3, :3].T + matrix[:3, 3]) - (post_pts @ true[:3, :3].T + true[:3, 3]), axis=1
    )
    assert err.mean() < 0.3 and tolerance == 1
    # the pipeline: clusters and confirmation of day 3 against the day-0 baseline on its own grid
    result = analyse_session(repositioned_study, "day3", baseline_session="day0", steps=("clusters", "confirm"))
    assert not result.errors, result.errors
    applied = np.asarray(result.tables["clusters_provenance"]["baseline_transform"])
    assert np.allclose(applied, matrix, atol=1e-6)
    # the report's frame: the saved files chained, not a new registration
    files = [f for f in discover(repositioned_study) if f.subject == "01"]
    days = {"day0": 0.0, "day1": 1.0, "day3": 3.0}
    anatomy = {
        days[s]: load_volume(anat_s)
        for s, anat_s in (
            (s, next((repositioned_study / "sub-01" / f"ses-{s}" / "anat").glob("*_T2w.nii*"))) for s in days
        )
    }
    transforms, errors = _timepoints_in_reference_frame(anatomy, days, "day0", files)
    assert errors == {}
    saved = saved_session_transform(anat["day3"])[0]
    assert np.allclose(transforms[3.0], saved) and np.allclose(transforms[0.0], np.eye(4))


def test_true_mri_to_scanner_maps_exclude_the_session_pose():
    """``mri_to_<modality>`` maps this session's MRI world to the scanner's world (what a registration
    finds): the scanner pose recorded beside it, with the animal's session pose left out (that is the
    MRI world's own business); with the pose composed in, a repositioned sample's registration TRE read
    as several millimetres."""
    from napari_immunotrack.simulate.scenes import rigid_matrix

    design = StudyDesign(repositioned=True, deformation_mm=0.0)
    r = simulate_timepoint(1, subject=make_subject(1, 5), size="tiny", design=design)
    truth = r["truth"]
    assert not np.allclose(truth["session_pose"]["phantom_to_mri_world"], np.eye(4))
    for key in ("pet", "spect", "mpi"):
        m = np.asarray(truth[key][f"mri_to_{key}"])
        p = truth[key]["pose"]
        rebuilt = rigid_matrix(p["rotation_deg_xyz"], p["translation_mm"], center_mm=p["rotation_center_mm"])
        assert np.allclose(m, rebuilt), key
