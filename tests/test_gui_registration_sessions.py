"""Session alignment in the Registration dock (issue 18 item 6) on a simulated repositioned study.

The study's sessions see the animal in their own poses (recorded in ``ground_truth.json``); the dock,
left at its defaults, must align the current timepoint's MRI to the reference session's within the
alignment's accuracy (TRE on the truth's anatomical sites), move every layer of that session through
its affine, save the transform where ``immunotrack align`` saves it (read back by SimpleITK itself),
write nothing when cancelled or refused, and say in one line when a pair cannot be aligned.
"""

import json
import os

import numpy as np
import pytest

from napari_immunotrack.alignment import session_transform_name
from napari_immunotrack.errors import InputError
from napari_immunotrack.widgets._common import add_volume, layer_affine_ras

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from napari_immunotrack.simulate.study import StudyDesign, make_study

    root = make_study(
        tmp_path_factory.mktemp("reposition") / "study",
        seed=4,
        timepoints_days=(0, 3),
        size="tiny",
        design=StudyDesign(repositioned=True),
    )
    truth = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]
    poses = {k[4:]: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in truth["sessions"].items()}
    sites = np.array([s["center_ras_mm"] for s in truth["sites"].values()])
    return {"root": root, "poses": poses, "sites": sites}


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _open_session(viewer, root, session="day3"):
    """The session's layers and the baseline anatomy, as the package's study loader reads them."""
    from napari_immunotrack.study_loading import load_session

    layers = {}
    for volume, f in load_session(root, session=session):
        layers[volume.name] = add_volume(viewer, volume, as_labels=f.is_labels)
    return layers


def _wait(widget, qtbot, timeout=180_000):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)


def _tre(matrix, study):
    """Error (mm) of a day-0 world -> day-3 world map at the truth's anatomical sites."""
    p0, p3 = study["poses"]["day0"], study["poses"]["day3"]
    true = p3 @ np.linalg.inv(p0)
    fixed_pts = study["sites"] @ p0[:3, :3].T + p0[:3, 3]
    est = fixed_pts @ matrix[:3, :3].T + matrix[:3, 3]
    return np.linalg.norm(est - (fixed_pts @ true[:3, :3].T + true[:3, 3]), axis=1)


def test_sessions_aligned_with_the_defaults_saved_and_read_back(make_napari_viewer, qtbot, study, tmp_path):
    import shutil

    import SimpleITK as sitk

    from napari_immunotrack.io.transforms import ras_to_lps, read_transform_file
    from napari_immunotrack.widgets.registration import QC_NAMES, RegistrationWidget

    root = tmp_path / "study"
    shutil.copytree(study["root"], root)
    viewer = make_napari_viewer(show=True)
    layers = _open_session(viewer, root)
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Registration")
    # no picker touched: two sessions' MRI in the viewer -> session alignment, day 3's T2w onto day 0's
    assert widget.method_combo.currentText().startswith("Session")
    assert widget.fixed_combo.currentText() == "T2w (day 0)"
    assert widget.moving_combo.currentText() == "T2w (day 3)"
    assert widget.transform_combo.currentText() == "rigid"
    day3 = {name: layer_affine_ras(layer) for name, layer in layers.items() if "(day 3)" in name}
    day0 = {name: layer_affine_ras(layer) for name, layer in layers.items() if "(day 0)" in name}
    assert len(day3) >= 3 and day0  # the MRI, its PET/labels..., and the baseline anatomy

    widget.run()
    _wait(widget, qtbot)
    assert widget.alignment is not None, widget.status.text()
    voxel = float(np.min(layers["T2w (day 0)"].metadata["volume"].spacing))
    err = _tre(widget.alignment.fixed_to_moving, study)
    assert err.mean() < 0.5 * voxel, err  # the alignment's own accuracy (tests/test_alignment.py)
    assert not widget.alignment.doubtful and "correlation" in widget.metric_label.text()
    # every layer of day 3 moved by the same map through its affine; day 0 stayed
    inverse = np.linalg.inv(widget.alignment.fixed_to_moving)
    for name, before in day3.items():
        assert np.allclose(layer_affine_ras(layers[name]), inverse @ before, atol=1e-6), name
    for name, before in day0.items():
        assert np.allclose(layer_affine_ras(layers[name]), before), name
    # a site of day 3's anatomy is now drawn where day 0 shows it
    p0, p3 = study["poses"]["day0"], study["poses"]["day3"]
    moving = layers["T2w (day 3)"]
    site3 = study["sites"][0] @ p3[:3, :3].T + p3[:3, 3]
    native = np.asarray(moving.metadata["immunotrack"]["session_native_affine"])
    index = np.linalg.solve(native[:3, :3], site3 - native[:3, 3])  # the day-3 voxel showing the site
    a = layer_affine_ras(moving)
    drawn = index @ a[:3, :3].T + a[:3, 3]
    assert np.linalg.norm(drawn - (study["sites"][0] @ p0[:3, :3].T + p0[:3, 3])) < 0.5 * voxel
    # the same checkerboard / difference views as any registration
    names = [ly.name for ly in viewer.layers]
    assert QC_NAMES["checkerboard"] in names and QC_NAMES["difference"] in names
    widget.qc_combo.setCurrentText("checkerboard")

    viewer.window._qt_window.resize(1366, 768)
    viewer.dims.ndisplay = 2
    qtbot.wait(300)
    shot = os.environ.get("REG18_SCREENSHOT")
    if shot:  # looked at by eye: the checkerboard, then the difference
        viewer.screenshot(shot, canvas_only=False)
        widget.qc_combo.setCurrentText("difference")
        qtbot.wait(300)
        viewer.screenshot(shot.replace(".png", "_difference.png"), canvas_only=False)

    # saved where `immunotrack align` saves it; SimpleITK reads the same matrix (LPS inside)
    before = _files(root)
    path = widget.save_to_study(root)
    assert path == root / "sub-01" / "ses-day3" / "xfm" / session_transform_name("01", "day3", "day0")
    written = str(path.relative_to(root))
    assert set(_files(root)) - set(before) == {written, written + ".provenance.json"}
    tx = sitk.AffineTransform(sitk.ReadTransform(str(path)))
    lps = np.eye(4)
    lps[:3, :3] = np.array(tx.GetMatrix()).reshape(3, 3)
    centre = np.array(tx.GetCenter())
    lps[:3, 3] = np.array(tx.GetTranslation()) + centre - lps[:3, :3] @ centre
    assert np.allclose(lps, ras_to_lps(widget.alignment.fixed_to_moving), atol=1e-6)
    record = read_transform_file(path)
    assert record.fixed and "day0" in record.fixed["role"] and "day3" in record.moving["role"]
    sidecar = json.loads(path.with_name(path.name + ".provenance.json").read_text())
    assert sidecar["step"] == "align" and sidecar["inputs"]["fixed"].get("sha256")
    # never replaced without asking
    stamp = path.stat().st_mtime_ns
    with pytest.raises(InputError, match="exists"):
        widget.save_to_study(root)
    assert path.stat().st_mtime_ns == stamp
    # the study's own verb reuses it (same images, same settings)
    from napari_immunotrack.alignment import align_study

    statuses = {r.session: r.status for r in align_study(root)}
    assert statuses["day3"] == "reused"


def test_cancel_leaves_nothing_moved_or_written(make_napari_viewer, qtbot, study, notifications):
    from napari_immunotrack.widgets.registration import RegistrationWidget

    root = study["root"]  # read-only: nothing may be written into it
    before = _files(root)
    viewer = make_napari_viewer(show=False)
    layers = _open_session(viewer, root)
    affines = {name: layer_affine_ras(layer) for name, layer in layers.items()}
    widget = RegistrationWidget(viewer)
    widget.run()
    # cancelled while the alignment runs (after its first progress report)
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 2, timeout=30_000)
    widget.runner.cancel()
    _wait(widget, qtbot)
    assert widget.alignment is None and widget.result is None
    assert widget.status.text() == "cancelled"
    assert ("info", "cancelled") in notifications
    for name, affine in affines.items():
        assert np.allclose(layer_affine_ras(layers[name]), affine), name
    with pytest.raises(InputError, match="align the sessions first"):
        widget.save_to_study(root)
    assert _files(root) == before


def test_a_pair_without_overlap_is_one_line(make_napari_viewer, qtbot, study, notifications):
    """Day 3's MRI replaced by another body region of the animal: one line, nothing applied or saved."""
    from napari_immunotrack.simulate import sessions as S
    from napari_immunotrack.simulate.phantom import make_mouse
    from napari_immunotrack.widgets.registration import RegistrationWidget

    mouse = make_mouse(0)
    here = S.session_mri(mouse, np.eye(4), voxel_mm=0.4, seed=1).volume
    elsewhere = S.session_mri(mouse, np.eye(4), voxel_mm=0.4, seed=2, target_mm=(0, 0, -25)).volume
    here.name, elsewhere.name = "T2w (day 0)", "T2w (day 3)"
    here.metadata["study"] = {"subject": "01", "session": "day0", "day": 0.0, "track": "T2w", "role": "T2w"}
    elsewhere.metadata["study"] = {"subject": "01", "session": "day3", "day": 3.0, "track": "T2w", "role": "T2w"}
    viewer = make_napari_viewer(show=False)
    add_volume(viewer, here)
    moving = add_volume(viewer, elsewhere)
    before = layer_affine_ras(moving)
    widget = RegistrationWidget(viewer)
    assert widget.moving_combo.currentText() == "T2w (day 3)"
    widget.run()
    _wait(widget, qtbot)
    shown = [(level, text) for level, text in notifications if level in ("warning", "error")]
    assert len(shown) == 1, notifications
    level, text = shown[0]
    assert "\n" not in text and "T2w (day 3)" in text and "doubtful" in text
    assert np.allclose(layer_affine_ras(moving), before)  # a doubtful map is not applied
    with pytest.raises(InputError, match="doubtful"):
        widget.save_to_study(study["root"])


def test_study_dock_layers_give_the_defaults_and_the_study(make_napari_viewer, qtbot, study, tmp_path):
    """Opened with the Study dock (``study_role``/``study_track``/``study_session`` tags): day 3's T2w
    moves onto the baseline T2w; Save to study finds the study folder from the Study dock."""
    import shutil

    from napari_immunotrack.io.transforms import read_transform
    from napari_immunotrack.widgets.registration import RegistrationWidget
    from napari_immunotrack.widgets.study import StudyWidget

    root = shutil.copytree(study["root"], tmp_path / "study")
    viewer = make_napari_viewer(show=False)
    dock = StudyWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Study", area="right")
    try:
        dock.open_study(root, session="day3")
        widget = RegistrationWidget(viewer)
        assert widget.fixed_combo.currentText() == dock.baseline_layers["T2w"].name
        assert widget.moving_combo.currentText() == dock.track_layers["T2w"].name
        pet = dock.track_layers["PET"]
        pet_before = layer_affine_ras(pet)
        widget.run()
        _wait(widget, qtbot)
        assert widget.alignment is not None, widget.status.text()
        voxel = float(np.min(dock.baseline_layers["T2w"].metadata["volume"].spacing))
        assert _tre(widget.alignment.fixed_to_moving, study).mean() < 0.5 * voxel
        # the session's PET follows its MRI (composed with what placed it, not resampled)
        assert np.allclose(layer_affine_ras(pet), np.linalg.inv(widget.alignment.fixed_to_moving) @ pet_before)
        path = widget.save_to_study()
        assert path == root / "sub-01" / "ses-day3" / "xfm" / session_transform_name("01", "day3", "day0")
        assert np.allclose(read_transform(path), widget.alignment.fixed_to_moving, atol=1e-6)
        # aligned again from where the layers now are: a small correction, composed with the first move;
        # what is saved is still measured from day 3's own world
        first = widget.alignment.fixed_to_moving
        widget.run()
        _wait(widget, qtbot)
        second = widget.alignment.fixed_to_moving
        assert np.linalg.norm(second[:3, 3] - np.eye(4)[:3, 3]) < voxel  # nearly nothing left to correct
        assert np.allclose(layer_affine_ras(pet), np.linalg.inv(second) @ np.linalg.inv(first) @ pet_before)
        with pytest.raises(InputError, match="exists"):
            widget.save_to_study()
        widget.save_to_study(overwrite=True)
        saved = read_transform(path)
        assert np.allclose(saved, first @ second, atol=1e-6)
        assert _tre(saved, study).mean() < 0.5 * voxel
    finally:
        dock.shutdown()


def test_bspline_quality_views_follow_the_whole_transform(study):
    """The QC views of a B-spline alignment show the moving image through its deformation, then its linear
    part: checked against the alignment's own point mapping and an independent interpolation (scipy).

    The deformation is a known B-spline (align_mri's B-spline stage takes minutes on a loaded machine)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from napari_immunotrack.alignment import AlignmentResult
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.registration import volume_to_sitk
    from napari_immunotrack.widgets.registration import moving_on_fixed

    root = study["root"]
    fixed = load_volume(next((root / "sub-01" / "ses-day0" / "anat").glob("*_T2w.nii.gz")))
    moving = load_volume(next((root / "sub-01" / "ses-day3" / "anat").glob("*_T2w.nii.gz")))
    p0, p3 = study["poses"]["day0"], study["poses"]["day3"]
    bspline = sitk.BSplineTransformInitializer(volume_to_sitk(fixed), [4, 4, 4], 3)
    coefficients = np.random.default_rng(1).normal(0.0, 0.6, len(bspline.GetParameters()))  # mm
    bspline.SetParameters(tuple(float(c) for c in coefficients))
    alignment = AlignmentResult(p3 @ np.linalg.inv(p0), "bspline", 1.0, 1.0, 0.0, deformable=bspline)
    on_fixed = moving_on_fixed(fixed, moving, alignment)
    assert on_fixed.same_grid(fixed)
    rng = np.random.default_rng(0)
    body = np.argwhere(fixed.numpy() > np.percentile(fixed.numpy(), 70))
    idx = body[rng.choice(len(body), 300, replace=False)]
    world = fixed.index_to_world(idx)
    target = alignment.transform_points(world)
    inside = np.all(
        (moving.world_to_index(target) > 1) & (moving.world_to_index(target) < np.array(moving.shape) - 2), 1
    )
    expected = ndimage.map_coordinates(moving.numpy().astype(float), moving.world_to_index(target[inside]).T, order=1)
    got = on_fixed.numpy()[tuple(idx[inside].T)]
    assert inside.sum() > 200
    assert np.abs(got - expected).max() < 1e-3 * float(np.abs(moving.numpy()).max())
    # the deformation really moves points (so the order of the two parts mattered)
    linear = world @ alignment.fixed_to_moving[:3, :3].T + alignment.fixed_to_moving[:3, 3]
    assert np.linalg.norm(target - linear, axis=1).mean() > 0.2
