"""The registration widget in a real napari viewer (needs Xvfb + OpenGL).

A simulated mouse MRI (fixed) and PET (moving) with a known transform: the
widget must move the PET layer (and a companion layer) by the inverse of that
transform through its affine, show the checkerboard, undo, save a .tfm the
transform reads back from, fit landmarks, and refuse bad input with a message.
"""

import numpy as np
import pytest

from napari_immunotrack.io.transforms import read_transform
from napari_immunotrack.simulate import registration_pair
from napari_immunotrack.volume import ras_to_napari
from napari_immunotrack.widgets._common import add_volume, layer_affine_ras, layer_to_volume

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def pair():
    return registration_pair(seed=4, rotation_deg=(6.0, -5.0, 7.0), translation_mm=(2.0, -2.5, 1.5))


def _wait(widget, qtbot, timeout=60000):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)


def _voxel_world(layer, index):
    """World RAS positions of the layer's data voxels ``index`` (N, 3)."""
    a = layer_affine_ras(layer)
    return np.asarray(index, float) @ a[:3, :3].T + a[:3, 3]


def _body_points(fixed, n=2000):
    data = fixed.numpy()
    idx = np.argwhere(data > np.percentile(data, 60))
    return fixed.index_to_world(idx[np.random.default_rng(0).choice(len(idx), n, replace=False)])


def test_register_apply_undo_save(make_napari_viewer, qtbot, pair, tmp_path):
    from napari_immunotrack.widgets.registration import QC_NAMES, RegistrationWidget

    fixed, moving, truth = pair["fixed"], pair["moving"], pair["fixed_to_moving"]
    viewer = make_napari_viewer(show=True)  # shown: a hidden canvas screenshots black
    fixed_layer = add_volume(viewer, fixed)
    moving_layer = add_volume(viewer, moving)
    ct_layer = add_volume(viewer, moving.replace(name="moving_CT", modality="CT"))  # acquired with the PET
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # the anatomy is proposed as fixed, the hot-spot image as moving
    assert widget.fixed_combo.currentText() == fixed.name
    assert widget.moving_combo.currentText() == moving.name
    widget.select(method="intensity", transform="rigid", companions=["moving_CT"])
    before = layer_affine_ras(moving_layer)
    before_ct = layer_affine_ras(ct_layer)

    widget.run()
    _wait(widget, qtbot)
    assert widget.result is not None, widget.status.text()

    # the moving layer now shows each voxel at inv(truth) of where it was
    idx = np.array([[0, 0, 0], [10, 20, 30], [40, 25, 5]], float)
    old_world = idx @ before[:3, :3].T + before[:3, 3]
    inv = np.linalg.inv(truth)
    expected = old_world @ inv[:3, :3].T + inv[:3, 3]
    assert np.abs(_voxel_world(moving_layer, idx) - expected).max() < 0.5
    # ... over the whole body, within the accuracy of the registration
    pts = _body_points(fixed)
    est = widget.result.transform_points(pts)
    true = pts @ truth[:3, :3].T + truth[:3, 3]
    assert np.linalg.norm(est - true, axis=1).mean() < 0.5
    # the data were not resampled; the stored Volume carries the registered affine
    assert np.array_equal(np.asarray(moving_layer.data), moving.for_display().numpy())
    vol = layer_to_volume(moving_layer)
    assert np.allclose(vol.affine, widget.result.apply_to_affine(moving.affine))
    # the companion moved by the same transform
    assert np.allclose(layer_affine_ras(ct_layer), np.linalg.inv(widget.result.fixed_to_moving) @ before_ct)
    assert np.allclose(layer_affine_ras(fixed_layer), fixed.for_display().affine)

    # quality control: the checkerboard on the fixed grid, shown; metric before and after
    board = widget.qc_layers["checkerboard"]
    assert board.name == QC_NAMES["checkerboard"] and board.visible
    assert not widget.qc_layers["difference"].visible
    assert board.data.shape == fixed.for_display().spatial_shape
    assert "->" in widget.metric_label.text()
    assert widget.metrics[1] > widget.metrics[0]
    viewer.dims.ndisplay = 2
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].std() > 5  # an image, not a blank canvas
    widget.show_qc("difference")
    assert widget.qc_layers["difference"].visible and not board.visible
    widget.show_qc("edges")  # the fixed image's edges over the registered moving image
    assert widget.qc_layers["edges"].visible and widget.qc_layers["moving"].visible
    assert viewer.layers.index(widget.qc_layers["edges"]) > viewer.layers.index(widget.qc_layers["moving"])

    # save: the file maps fixed to moving like the result
    path = widget.save_transform(tmp_path / "pet_to_mri.tfm")
    assert path.exists() and (tmp_path / "pet_to_mri.tfm.provenance.json").exists()
    assert np.allclose(read_transform(path), widget.result.fixed_to_moving, atol=1e-6)

    # undo restores both layers exactly and removes the QC layers
    widget.undo()
    assert np.allclose(layer_affine_ras(moving_layer), before)
    assert np.allclose(layer_affine_ras(ct_layer), before_ct)
    assert layer_to_volume(moving_layer) is moving
    assert not any(name in viewer.layers for name in QC_NAMES.values())


def test_landmarks_and_bad_input(make_napari_viewer, qtbot, pair):
    from napari_immunotrack.widgets.registration import RegistrationWidget

    fixed, moving, truth = pair["fixed"], pair["moving"], pair["fixed_to_moving"]
    viewer = make_napari_viewer()
    add_volume(viewer, fixed)
    moving_layer = add_volume(viewer, moving)
    lf, lm = pair["landmarks_fixed"], pair["landmarks_moving"]
    viewer.add_points(ras_to_napari(lf), name="fixed landmarks", size=1.0)
    viewer.add_points(ras_to_napari(lm), name="moving landmarks", size=1.0)
    widget = RegistrationWidget(viewer)
    widget.select(
        method="landmarks", transform="rigid", fixed_points="fixed landmarks", moving_points="moving landmarks"
    )
    widget.run()
    _wait(widget, qtbot)
    result = widget.result
    assert result is not None and result.method == "landmarks", widget.status.text()
    assert np.allclose(result.fixed_to_moving, truth, atol=1e-6)  # exact points: exact transform
    assert widget.fre_table.isVisibleTo(widget) and widget.fre_table.rowCount() == len(lf)
    assert float(widget.fre_table.item(0, 1).text()) < 0.01
    # the moving landmarks moved with the moving image onto the fixed ones
    moved = viewer.layers["moving landmarks"]
    world = np.asarray(moved._data_to_world(np.asarray(moved.data)))
    assert np.allclose(world, ras_to_napari(lf), atol=1e-6)
    widget.undo()

    # too few pairs: one clear message, nothing moved
    before = layer_affine_ras(moving_layer)
    viewer.layers["fixed landmarks"].data = ras_to_napari(lf[:2])
    viewer.layers["moving landmarks"].data = ras_to_napari(lm[:2])
    widget.result = None
    widget.run()
    _wait(widget, qtbot)
    assert widget.result is None
    assert "at least 3 pairs" in widget.status.text()
    assert np.allclose(layer_affine_ras(moving_layer), before)

    # a constant moving image: refused with a message, nothing moved
    flat = add_volume(viewer, moving.replace(data=np.zeros(moving.spatial_shape, np.float32), name="blank"))
    widget.select(method="intensity", moving="blank")
    widget.run()
    _wait(widget, qtbot)
    assert widget.result is None and "empty" in widget.status.text()
    assert np.allclose(flat.affine.affine_matrix, np.eye(4))


def test_cancel_leaves_layers_alone(make_napari_viewer, qtbot, pair):
    from napari_immunotrack.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    add_volume(viewer, pair["fixed"])
    moving_layer = add_volume(viewer, pair["moving"])
    widget = RegistrationWidget(viewer)
    before = layer_affine_ras(moving_layer)
    original_start = widget.runner.start

    def start_cancelled(*args, **kwargs):
        worker = original_start(*args, **kwargs)
        widget.runner.cancel()  # Cancel pressed at once: the first progress report stops the work
        return worker

    widget.runner.start = start_cancelled
    widget.run()
    _wait(widget, qtbot)
    assert widget.result is None and widget.status.text() == "cancelled"
    assert np.allclose(layer_affine_ras(moving_layer), before)


def test_a_second_run_while_one_runs_is_a_message(make_napari_viewer, qtbot, pair, monkeypatch):
    from napari_immunotrack.widgets import registration as reg_mod
    from napari_immunotrack.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    add_volume(viewer, pair["fixed"])
    add_volume(viewer, pair["moving"])
    extra = add_volume(viewer, pair["moving"].replace(name="another moving"))
    widget = RegistrationWidget(viewer)
    widget.select(method="intensity", transform="rigid")
    told = []
    monkeypatch.setattr(reg_mod, "notify_error", lambda exc: told.append(str(exc)))
    widget.run()
    widget.moving_combo.setCurrentText(extra.name)
    widget.run()  # clicked again: no exception reaches the Qt loop, the first run goes on
    assert told == ["a computation is already running; wait for it or press Cancel."]
    assert widget.status.text() == "registering..."
    _wait(widget, qtbot)
    assert widget.result is not None, widget.status.text()
    assert widget._inputs["moving"].name == pair["moving"].name  # applied to what the first run registered


def test_session_alignment_of_two_repositioned_mri(make_napari_viewer, qtbot, tmp_path):
    """The dock aligns the same animal's MRI of two sessions (another pose, gain and coil profile) with
    alignment.align_mri: the moved layer's voxels land where the simulator's poses say, within half a voxel."""
    import json

    from napari_immunotrack.io import load_volume
    from napari_immunotrack.simulate.study import StudyDesign, make_study
    from napari_immunotrack.widgets.registration import QC_NAMES, RegistrationWidget

    root = make_study(
        tmp_path / "study", seed=4, timepoints_days=(0, 3), size="tiny", design=StudyDesign(repositioned=True)
    )
    truth = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]
    poses = {k[4:]: np.asarray(v["session_pose"]["phantom_to_mri_world"]) for k, v in truth["sessions"].items()}
    fixed = load_volume(next((root / "sub-01" / "ses-day0" / "anat").glob("*_T2w.nii.gz")))
    moving = load_volume(next((root / "sub-01" / "ses-day3" / "anat").glob("*_T2w.nii.gz")))
    fixed.name, moving.name = "T2w day 0", "T2w day 3"
    viewer = make_napari_viewer(show=False)
    add_volume(viewer, fixed)
    moving_layer = add_volume(viewer, moving)
    widget = RegistrationWidget(viewer)
    widget.select(fixed="T2w day 0", moving="T2w day 3", method="session", transform="rigid")
    assert not widget.fixed_mask_combo.isEnabled()
    widget.run()
    _wait(widget, qtbot, timeout=120_000)
    assert widget.result is not None, widget.status.text()
    assert widget.result.method == "session" and "correlation" in widget.metric_label.text()
    true = poses["day3"] @ np.linalg.inv(poses["day0"])  # day-0 world -> day-3 world, the same anatomy
    sites = np.array([s["center_ras_mm"] for s in truth["sites"].values()])
    fixed_pts = sites @ poses["day0"][:3, :3].T + poses["day0"][:3, 3]
    est = widget.result.fixed_to_moving
    err = np.linalg.norm((fixed_pts @ est[:3, :3].T + est[:3, 3]) - (fixed_pts @ true[:3, :3].T + true[:3, 3]), axis=1)
    assert err.mean() < 0.5 * float(np.min(fixed.spacing)), err
    # the moving layer now draws day 3's voxels in day 0's world: a site's voxel lands on the site
    a = layer_affine_ras(moving_layer)
    site_day3 = sites[0] @ poses["day3"][:3, :3].T + poses["day3"][:3, 3]
    index = moving.world_to_index(site_day3)[0]
    drawn = index @ a[:3, :3].T + a[:3, 3]
    assert np.linalg.norm(drawn - fixed_pts[0]) < float(np.max(fixed.spacing))
    # the same quality-control views as any registration
    assert QC_NAMES["checkerboard"] in [ly.name for ly in viewer.layers]
