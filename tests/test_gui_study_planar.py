"""A planar optical image (issue 17 item 10) is shown in its own plane over the anatomy's projection: ticking
it in the Study dock switches the view to that plane and position, and its placement is explained."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_immunotrack.volume import ras_to_napari
from napari_immunotrack.widgets.study import StudyWidget

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("which", ["bundled sample (repositioned)", "one-bed simulated study"])
def test_ticking_fluorescence_shows_it_coronal_over_the_mri_projection(make_napari_viewer, simulated_study, which):
    one_bed = which.startswith("one-bed")
    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(simulated_study if one_bed else None, session="day1")
        optical = widget.track_layers["fluorescence"]
        assert not optical.visible
        sidecar_affine = np.array(
            __import__("json").loads(
                next((widget.study.root / "sub-01" / "ses-day1" / "optical").glob("*.json")).read_text()
            )["ImageToWorldAffine"]
        )
        # the picture's centre on A, as drawn (the sessions lie in their own poses and are drawn in day 0's frame)
        drawn = optical.metadata["volume"]
        centre = drawn.affine[:3, :3] @ ((np.asarray(drawn.spatial_shape, float) - 1) / 2) + drawn.affine[:3, 3]
        plane_a = float(centre[1])
        assert np.isfinite(sidecar_affine).all()
        widget.set_track_visible("fluorescence", True)
        assert widget.plane_combo.currentText() == "coronal"
        step = viewer.dims.range[-2].step  # napari snaps the point to its slider grid (axes S, A, R)
        assert viewer.dims.point[-2] == pytest.approx(plane_a, abs=0.51 * step)
        placement = optical.metadata["immunotrack"]["placement"]
        assert "coronal plane A = " in placement
        told = [m for m in widget.messages if m.startswith(placement)]
        assert told and ("tilted" in told[0]) != one_bed  # the sample's animal lies askew: said, and drawn flat
        projection = widget._projection_layer
        assert projection is not None and projection.visible
        assert list(viewer.layers).index(projection) < list(viewer.layers).index(optical)  # behind it
        if not one_bed:  # drawn through day 0's frame: the file's own axes are not the view's
            widget.set_track_visible("fluorescence", False)
            assert widget._projection_layer is None
            return
        # the projection is the mean of the day-1 T2*w along A, checked against nibabel's reading of the file
        t2s = next((widget.study.root / "sub-01" / "ses-day1" / "anat").glob("*_T2starw.nii.gz"))
        img = nib.as_closest_canonical(nib.load(t2s))  # RAS axes
        mean_a = np.asarray(img.dataobj, float).mean(axis=1)  # (R, S)
        ras = img.affine @ np.array([10, 0, 20, 1.0])  # a voxel's R and S, any A
        point = ras[:3].copy()
        point[1] = plane_a
        index = np.round(projection.world_to_data(ras_to_napari(point))).astype(int)
        assert index[1] == 0  # the single slice sits in the optical plane
        assert float(np.asarray(projection.data)[tuple(index)]) == pytest.approx(mean_a[10, 20], rel=1e-4)
        # the optical picture is there in the same plane (not a line above the skin)
        oi = np.round(optical.world_to_data(ras_to_napari(point))).astype(int)
        assert np.all(oi >= 0) and np.all(oi < np.asarray(optical.data.shape))
        # a timepoint step keeps the backdrop on the new day's anatomy; unticking removes it
        widget.set_timepoint("day3")
        assert "day3" in widget._projection_layer.name
        widget.set_track_visible("fluorescence", False)
        assert widget._projection_layer is None
    finally:
        widget.shutdown()


def test_a_picture_too_askew_to_lay_flat_is_said_not_switched(make_napari_viewer, simulated_study, tmp_path):
    """A planar picture tilted 40 degrees (over the 30 that are drawn flat) keeps the view and says why."""
    import json
    import shutil

    study = shutil.copytree(simulated_study, tmp_path / "mouse")
    sidecar = next((study / "sub-01" / "ses-day1" / "optical").glob("*.json"))
    meta = json.loads(sidecar.read_text())
    affine = np.asarray(meta["ImageToWorldAffine"], float)
    c, s = np.cos(np.radians(40.0)), np.sin(np.radians(40.0))
    turn = np.eye(4)
    turn[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]  # about R: the picture's normal leaves the A axis by 40
    meta["ImageToWorldAffine"] = (turn @ affine).tolist()
    sidecar.write_text(json.dumps(meta))

    viewer = make_napari_viewer(show=False)
    widget = StudyWidget(viewer)
    try:
        widget.open_study(study, session="day1")
        plane_before = widget.plane_combo.currentText()
        widget.set_track_visible("fluorescence", True)
        assert widget.track_layers["fluorescence"].visible
        assert widget.plane_combo.currentText() == plane_before  # not laid flat in a plane it is not in
        assert widget._projection_layer is None
        told = [m for m in widget.messages if "tilted 40 degrees" in m]
        assert told and "3D view" in told[0]
    finally:
        widget.shutdown()
