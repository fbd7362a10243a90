"""The viewer follows the animal (issue 18 item 6): a simulated study whose sessions lie in different poses
(``StudyDesign(repositioned=True)``) is drawn in the reference session's frame through the alignments
`align_study` saved, so a truth landmark stays at one world position from day to day; native frames on
request; an unaligned repositioned study says so and aligns in a worker; the one-bed sample is unchanged."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from napari_immunotrack.simulate.study import StudyDesign, make_study
from napari_immunotrack.volume import ras_to_napari
from napari_immunotrack.widgets._common import layer_to_volume
from napari_immunotrack.widgets.study import StudyWidget, label_findings

pytestmark = pytest.mark.gui

SESSIONS = ("day0", "day1", "day3")


@pytest.fixture(scope="module")
def unaligned_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("repositioned") / "study"
    make_study(root, seed=4, timepoints_days=(0, 1, 3), size="tiny", design=StudyDesign(repositioned=True))
    return root


@pytest.fixture(scope="module")
def aligned_study(unaligned_study, tmp_path_factory):
    from napari_immunotrack.alignment import align_study

    root = tmp_path_factory.mktemp("aligned") / "study"
    shutil.copytree(unaligned_study, root)
    results = align_study(root)
    assert {r.session: r.status for r in results} == {"day0": "reference", "day1": "aligned", "day3": "aligned"}
    return root


def _truth(root):
    truth = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]
    poses = {k[4:]: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in truth["sessions"].items()}
    sites = {name: (site["label"], np.asarray(site["center_ras_mm"], float)) for name, site in truth["sites"].items()}
    return poses, sites


def _organ_centroids(widget):
    """{label: RAS centroid} of the ROI layer as drawn (the world the user sees)."""
    layer = widget.track_layers["ROI"]
    found = label_findings(layer_to_volume(layer, native=False), "ROI")
    return {f["label"]: np.asarray(f["centroid_ras_mm"]) for f in found if f["voxels"] > 30}


def _label_at(widget, ras):
    layer = widget.track_layers["ROI"]
    index = np.round(layer.world_to_data(ras_to_napari(np.asarray(ras)))).astype(int)
    return int(np.asarray(layer.data)[tuple(index)])


def _voxel(widget):
    return float(np.max(widget.track_layers["ROI"].scale[-3:]))


def _assert_anatomy_still(widget, poses, sites):
    """Step through the days: each truth organ centre (in the reference session's world) is drawn with its
    organ's label every day, and organ centroids stay within a voxel; returns the step times."""
    centroids, times = {}, []
    for session in SESSIONS:
        t0 = time.perf_counter()
        widget.set_timepoint(session)
        times.append(time.perf_counter() - t0)
        centroids[session] = _organ_centroids(widget)
        assert widget.track_layers["ROI"].metadata["immunotrack"]["study_frame"] == "reference"
    voxel = _voxel(widget)
    checked, drifts = 0, []
    for name, (label, centre) in sites.items():
        where = [centroids[s].get(label) for s in SESSIONS]
        if any(w is None for w in where):
            continue
        # the truth landmark, in the reference session's world: every day draws its organ there
        truth_ref = poses["day0"][:3, :3] @ centre + poses["day0"][:3, 3]
        for session in SESSIONS:
            widget.set_timepoint(session)
            assert _label_at(widget, truth_ref) == label, (name, session)
        drifts.extend(np.linalg.norm(p - where[0]) for p in where[1:])
        checked += 1
    assert checked >= 3
    # organ centroids from day to day: within a voxel (an organ cut by a session's field of view moves a little)
    assert np.median(drifts) < 0.5 * voxel and max(drifts) < 1.5 * voxel, drifts
    return times


def test_every_day_in_the_reference_frame_keeps_the_anatomy_still(make_napari_viewer, aligned_study, tmp_path):
    poses, sites = _truth(aligned_study)
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(aligned_study, session="day0", shown=["T2w", "ROI", "PET"])
        assert widget.frame.reference == "day0" and set(widget.frame.alignments) == {"day1", "day3"}
        assert "day0's frame" in widget.frame_label.text()
        _assert_anatomy_still(widget, poses, sites)
        # the quantified volume follows the drawn one (readout and findings in the same frame)
        pet = widget.track_layers["PET"]
        native = pet.metadata["volume"]
        assert np.allclose(layer_to_volume(pet).affine, native.affine)
        # native scanner frames on request: the same organ now moves with the animal's pose
        widget.set_frame("native")
        assert not widget.reference_frame_box.isChecked()
        voxel = _voxel(widget)
        label, centre = next((lab, c) for name, (lab, c) in sites.items() if name != "bladder")
        scanner = {ses: poses[ses][:3, :3] @ centre + poses[ses][:3, 3] for ses in SESSIONS}
        for session in SESSIONS:
            widget.set_timepoint(session)
            assert widget.track_layers["ROI"].metadata["immunotrack"]["study_frame"] == "native"
            assert _label_at(widget, scanner[session]) == label, session  # drawn where its scanner put it
        # the poses really differ: the reference frame is what held the anatomy still
        assert max(np.linalg.norm(scanner[s] - scanner["day0"]) for s in SESSIONS) > 2 * voxel
        # the frame is part of the saved study state (its point is in that frame's world)
        saved = widget.save_state(tmp_path / "state.json", overwrite=True)
        widget.set_frame("reference")
        widget.open_state(saved)
        assert widget.frame_mode == "native" and not widget.reference_frame_box.isChecked()
    finally:
        widget.shutdown()


def test_a_finding_clicked_on_one_day_is_at_the_same_place_on_another(make_napari_viewer, aligned_study):
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(aligned_study, session="day3", shown=["T2w", "ROI"])
        widget.refresh_findings()
        organs = {label for label, _ in _truth(aligned_study)[1].values()}
        # a compact organ (a big one, cut by each day's field of view, has a centroid that moves with the cut)
        index = min(
            (i for i, f in enumerate(widget.findings) if f["source"].startswith("ROI") and f["label"] in organs),
            key=lambda i: abs(widget.findings[i]["voxels"] - 400),
        )
        label = widget.findings[index]["label"]
        point = widget.go_to_finding(index)
        widget.set_timepoint("day1")
        # the world point did not move, and day 1's organ is there
        widget.refresh_findings()
        day1 = next(f for f in widget.findings if f["source"].startswith("ROI") and f["label"] == label)
        assert np.linalg.norm(np.asarray(day1["centroid_ras_mm"]) - point) < 1.5 * _voxel(widget)
        # the views stayed on the clicked point, and day 1 draws the same organ there
        assert viewer.dims.point[-3] == pytest.approx(point[2], abs=_voxel(widget))
        assert _label_at(widget, point) == label
    finally:
        widget.shutdown()


def test_unaligned_repositioned_study_says_so_and_aligns_in_a_worker(
    make_napari_viewer, unaligned_study, tmp_path, qtbot
):
    root = tmp_path / "study"
    shutil.copytree(unaligned_study, root)
    poses, sites = _truth(root)
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(root, session="day0", shown=["T2w", "ROI"])
        assert widget.frame.reference is None
        widget.set_timepoint("day1")
        warned = [m for m in widget.messages if "no saved alignment" in m]
        assert warned and "Align sessions" in warned[0]
        assert "not aligned yet" in widget.align_row.run_button.text()
        widget.align_sessions()
        qtbot.waitUntil(lambda: widget.frame.reference == "day0", timeout=120_000)
        assert widget.align_row.progress_bar.value() == 100
        assert (root / "sub-01" / "ses-day3" / "xfm" / "sub-01_ses-day3_from-anat_to-sesday0.tfm").is_file()
        _assert_anatomy_still(widget, poses, sites)
    finally:
        widget.shutdown()


def test_one_bed_study_opens_as_before(make_napari_viewer, simulated_study):
    """A study with the old one-bed layout (every session on one bed, no saved alignment; the bundled
    sample was one until it was regenerated with repositioned sessions) opens in native frames."""
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(simulated_study)
        assert widget.frame.reference is None
        assert "no session alignment saved" in widget.frame_label.text()
        for session in widget.model.sessions:
            widget.set_timepoint(session)
        assert not [m for m in widget.messages if "no saved alignment" in m]
        for layer in widget.track_layers.values():
            assert layer.metadata["immunotrack"]["study_frame"] == "native"
            # the drawn place is the file's own (registered) world, untouched
            volume = layer.metadata["volume"]
            assert "study_frame" not in volume.metadata
    finally:
        widget.shutdown()


def test_open_sample_layers_follow_the_alignment(aligned_study):
    """File > Open Sample's loader (napari sample-data hook) draws the baseline and the day shown in the
    reference session's world too: the day-0 and day-3 anatomy put an organ centre on the same label."""
    from napari_immunotrack._sample_data import study_layer_data

    poses, sites = _truth(aligned_study)
    layers = study_layer_data(aligned_study, session="day3")
    by_name = {kwargs["name"]: (data, kwargs) for data, kwargs, _ in layers}
    roi = by_name["ROI (day 3)"]
    volume = roi[1]["metadata"]["volume"]
    checked = 0
    for name, (label, centre) in sites.items():
        truth_ref = poses["day0"][:3, :3] @ centre + poses["day0"][:3, 3]
        index = np.round(volume.world_to_index(truth_ref)[0]).astype(int)
        if np.all(index >= 0) and np.all(index < volume.spatial_shape):
            assert volume.data[tuple(index)] == label, name
            checked += 1
    assert checked >= 3


def test_a_hand_adjustment_is_not_applied_on_top_of_an_alignment_saved_since(
    make_napari_viewer, unaligned_study, aligned_study, tmp_path
):
    """A day moved by hand (as the Registration dock does), kept in a saved state, then its alignment saved into
    the study: reopening the state draws the day through the saved alignment only (once), never both."""
    root = tmp_path / "study"
    shutil.copytree(unaligned_study, root)
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(root, session="day1", shown=["T2w"])
        assert widget.frame.reference is None  # no alignment saved yet
        layer = widget.track_layers["T2w"]
        move = np.eye(4)
        move[:3, 3] = [0.6, -0.9, 0.3]  # napari order S, A, R
        layer.affine = move
        widget.set_timepoint("day0")
        widget.set_timepoint("day1")  # same frame: the hand adjustment comes back
        np.testing.assert_allclose(np.asarray(widget.track_layers["T2w"].affine.affine_matrix), move, atol=1e-9)
        saved = widget.save_state(tmp_path / "state.json", overwrite=True)
    finally:
        widget.shutdown()
    # the alignment is saved into the study since (Registration dock's "Save to study", or immunotrack align)
    for xfm in aligned_study.rglob("*_from-anat_to-ses*.tfm"):
        target = root / xfm.relative_to(aligned_study)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(xfm, target)
    viewer2 = make_napari_viewer(show=False)
    widget2 = StudyWidget(viewer2)
    try:
        widget2.open_state(saved)
        assert widget2.frame.reference == "day0" and widget2.session == "day1"
        layer = widget2.track_layers["T2w"]
        # drawn through the saved alignment alone: no hand move on top of it
        np.testing.assert_allclose(np.asarray(layer.affine.affine_matrix), np.eye(4), atol=1e-9)
        assert any("dropped and the saved alignment is used" in m for m in widget2.messages)
        # a reference view of the same day in a fresh window draws it at the same place
        viewer3 = make_napari_viewer(show=False)
        widget3 = StudyWidget(viewer3)
        try:
            widget3.open_study(root, session="day1", shown=["T2w"])
            np.testing.assert_allclose(
                np.asarray(layer._data_to_world.affine_matrix),
                np.asarray(widget3.track_layers["T2w"]._data_to_world.affine_matrix),
                atol=1e-9,
            )
        finally:
            widget3.shutdown()
    finally:
        widget2.shutdown()
