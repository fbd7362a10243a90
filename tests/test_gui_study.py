"""The Study dock in a real napari viewer (Xvfb + OpenGL): one physical space, modality defaults, timepoints,
three planes, findings, a saved study state that reopens identical, and bad input that leaves the rest working.

A small synthetic study puts a marker at a known world point in every modality (MRI NIfTI, PET DICOM in its
own scanner world with a registration in ``xfm/``, 19F and MPI NIfTI, organ labels); the bundled sample study
checks the defaults and timepoint stepping on real-sized data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_immunotrack.errors import InputError
from napari_immunotrack.io.nifti import write_nifti
from napari_immunotrack.study import STATE_NAME
from napari_immunotrack.volume import Volume, ras_to_napari
from napari_immunotrack.widgets._common import add_volume, center_on_world

pytestmark = pytest.mark.gui

MARKER = np.array([2.0, -1.5, 3.0])  # RAS mm, on every grid below
PET_SHIFT = np.array([3.0, -2.0, 1.0])  # MRI world -> PET scanner world (a translation, mm)


def _volume(spacing, shape, origin, marker_value, background, modality="MR", unit="a.u.", marker=MARKER, flip_xy=False):
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    affine[2, 0], affine[1, 1], affine[0, 2] = spacing, spacing, spacing
    affine[:3, 3] = origin
    if flip_xy:  # stored as scanners write PET (x and y running the other way)
        affine[0, 2] *= -1
        affine[1, 1] *= -1
    data = np.full(shape, background, np.float32)
    vol = Volume(data, affine, modality=modality, unit=unit)
    idx = np.round(vol.world_to_index(marker)[0]).astype(int)
    assert np.allclose(vol.index_to_world(idx), marker, atol=1e-9), "the marker must lie on the grid"
    data[tuple(idx)] = marker_value
    return vol


def _write(vol, path, labels=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(vol, path, labels=labels)


def _pet(day):
    return {
        "Units": "BQML",
        "DecayCorrection": "START",
        "RadionuclideTotalDose": 1e7,
        "RadionuclideHalfLife": 282240.0,
        "RadiopharmaceuticalStartDateTime": "20260101090000",
        "SeriesDate": f"2026010{1 + day}",
        "SeriesTime": "090000",
    }


@pytest.fixture(scope="module")
def _marker_study_master(tmp_path_factory):
    """sub-01: day0 baseline MRI; day1 MRI, PET (registered by xfm/), 19F, MPI, organ labels; day3 without 19F."""
    from napari_immunotrack.io.dicom import write_dicom_series
    from napari_immunotrack.io.transforms import write_transform

    root = tmp_path_factory.mktemp("master") / "markers"
    for day, value in ((0, 50.0), (1, 100.0), (3, 200.0)):
        ses = root / "sub-01" / f"ses-day{day}"
        mri = _volume(0.5, (20, 22, 24), (-3.0, -6.5, -2.0), value, 10.0)
        _write(mri, ses / "anat" / f"sub-01_ses-day{day}_T2starw.nii.gz")
        if day == 0:
            continue
        pet = _volume(
            1.0,
            (12, 13, 14),
            (11.0, 2.5, -3.0),
            1000.0 * day,
            20.0,
            "PT",
            "Bq/mL",
            marker=MARKER + PET_SHIFT,
            flip_xy=True,
        )
        (ses / "pet").parent.mkdir(parents=True, exist_ok=True)
        write_dicom_series(
            pet, ses / "pet", modality="PT", series_description="pet", patient={"PatientWeight": 0.025}, pet=_pet(day)
        )
        if day == 1:
            shift = np.eye(4)
            shift[:3, 3] = PET_SHIFT
            (ses / "xfm").mkdir()
            write_transform(ses / "xfm" / "sub-01_ses-day1_from-pet_to-anat.tfm", shift)
            _write(
                _volume(1.0, (10, 11, 12), (-4.0, -6.5, -2.0), 30.0, 0.1), ses / "f19" / "sub-01_ses-day1_19F.nii.gz"
            )
        _write(
            _volume(0.5, (14, 16, 18), (-4.0, -5.5, -1.0), 7.0 * day, 0.0),
            ses / "mpi" / f"sub-01_ses-day{day}_mpi.nii.gz",
        )
        labels = np.zeros((20, 22, 24), np.uint8)
        labels[8:13, 8:13, 8:13] = 3
        organ = Volume(labels, mri.affine, modality="SEG", unit="label")
        _write(organ, ses / "rois" / f"sub-01_ses-day{day}_dseg.nii.gz", labels=True)
        (ses / "rois" / f"sub-01_ses-day{day}_dseg.tsv").write_text("index\tname\n3\tliver\n")
    return root


@pytest.fixture
def marker_study(_marker_study_master, tmp_path):
    """A fresh copy for each test (tests save states into it, change and move its files)."""
    import shutil

    return Path(shutil.copytree(_marker_study_master, tmp_path / "markers"))


@pytest.fixture
def study_widget(make_napari_viewer):
    from napari_immunotrack.widgets.study import StudyWidget

    made = []

    def make():
        viewer = make_napari_viewer(show=False)
        widget = StudyWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Study", area="right")
        made.append(widget)
        return viewer, widget

    yield make
    for widget in made:
        widget.shutdown()


def _marker_world(layer):
    """napari world position of a layer's marker voxel (its maximum)."""
    data = np.asarray(layer.data)
    idx = np.unravel_index(int(np.argmax(data)), data.shape)
    return np.asarray(layer.data_to_world(np.array(idx, float)))[-3:]


# --------------------------------------------------------------------------- one physical space
def test_marker_sits_at_one_world_point_in_every_modality(study_widget, marker_study):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "PET", "19F", "MPI", "ROI"))
    names = {layer.name for layer in viewer.layers}
    assert {
        "T2starw (day 1)",
        "PET SUVbw (day 1)",
        "19F (day 1)",
        "MPI (day 1)",
        "ROI (day 1)",
        "T2starw baseline (day 0)",
    } <= names
    expected = ras_to_napari(MARKER)
    for track in ("T2starw", "PET", "19F", "MPI"):
        layer = widget.track_layers[track]
        np.testing.assert_allclose(_marker_world(layer), expected, atol=1e-6, err_msg=track)
    # the organ label is centred on the marker too
    roi = widget.track_layers["ROI"]
    np.testing.assert_allclose(
        np.asarray(roi.data_to_world(np.argwhere(roi.data == 3).mean(0)))[-3:], expected, atol=1e-6
    )
    # under the mouse at that point every modality reads its marker
    center_on_world(viewer, MARKER)
    values = {t: widget.track_layers[t].get_value(expected, world=True) for t in ("T2starw", "19F", "MPI")}
    assert values == {"T2starw": pytest.approx(100.0), "19F": pytest.approx(30.0), "MPI": pytest.approx(7.0)}
    # PET is shown in SUVbw: the native Volume (Bq/mL) stays behind the layer for the analyses
    pet = widget.track_layers["PET"]
    assert pet.metadata["immunotrack"]["display_unit"] == "SUVbw" and pet.metadata["volume"].unit == "Bq/mL"
    from napari_immunotrack.widgets._common import layer_to_volume

    assert layer_to_volume(pet) is pet.metadata["volume"]
    assert pet.metadata["volume"].metadata["study"]["registered"] is True
    # the unregistered MPI is reported in one message, PET is not
    unregistered = [m for m in widget.messages if "not registered" in m]
    assert len(unregistered) == 1 and "MPI" in unregistered[0] and "PET" not in unregistered[0]


# --------------------------------------------------------------------------- timepoints
def test_sample_study_defaults_docks_and_timepoint_steps(make_napari_viewer, monkeypatch):
    """`immunotrack view`'s viewer on the sample study: layers, modality defaults, docks; then timepoints."""
    import napari

    from napari_immunotrack.commands import view
    from napari_immunotrack.widgets.study import suv_display_factor

    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: make_napari_viewer(show=False))
    viewer = view.open_viewer(show=False)
    widget = view.study_widget(viewer)
    try:
        by_track = widget.track_layers
        assert set(by_track) == {
            "T1w",
            "T2w",
            "T2starw",
            "ROI",
            "ROI:reftube",
            "fluorescence",
            "SPECT",
            "MPI",
            "19F",
            "PET",
        }
        assert set(widget.baseline_layers) == {"T1w", "T2w", "T2starw"}
        assert {n for n, ly in by_track.items() if ly.visible} == {"T2starw", "ROI", "PET", "19F"}
        assert by_track["T2starw"].colormap.name == "gray"
        for track, cmap in (
            ("PET", "inferno"),
            ("SPECT", "inferno"),
            ("19F", "magenta"),
            ("MPI", "cyan"),
            ("fluorescence", "green"),
        ):
            assert by_track[track].colormap.name == cmap and by_track[track].blending == "additive", track
        pet = by_track["PET"]
        assert pet.name == "PET SUVbw (day 1)" and pet.colorbar.visible
        # SUV: the displayed values are the native Bq/mL times the header's SUVbw factor
        factor = suv_display_factor(pet.metadata["volume"])
        # the sample's PET is registered (oblique in MRI world): it is shown on the reference MRI's grid
        native = pet.metadata["volume"].for_display(reference=widget.reference).numpy()
        np.testing.assert_allclose(np.asarray(pet.data), native * factor, rtol=1e-5)
        assert 0 < pet.contrast_limits[1] < 1000  # an SUV window, not Bq/mL
        from napari_immunotrack import _close_guard

        assert viewer.window._qt_window in _close_guard._GUARDS  # `view` guards unsaved work on close
        docks = " ".join(viewer.window.dock_widgets)
        for name in ("Study", "Cursor readout", "Quantitative readouts", "T1-T2 confirmation"):
            assert name in docks

        # ---- timepoints: one layer per modality, its data swapped; the position and the window kept
        assert widget.session == "day1"
        t2s = by_track["T2starw"]
        before = np.asarray(t2s.data).copy()
        pet_before = np.asarray(pet.data).copy()
        pet.contrast_limits = (0.0, 4.0)  # the user's window
        center_on_world(viewer, [3.0, -2.0, -5.0])
        point, center = tuple(viewer.dims.point), tuple(viewer.scene.camera.center)
        for future in list(widget._cache.values()):
            future.result()  # the background preparation, as a user who looked at day 1 for a moment
        t0 = time.perf_counter()
        widget.step(1)
        elapsed = time.perf_counter() - t0
        assert widget.session == "day3" and t2s is widget.track_layers["T2starw"]
        assert t2s.name == "T2starw (day 3)" and pet.name == "PET SUVbw (day 3)"
        assert not np.array_equal(np.asarray(t2s.data), before)
        assert not np.array_equal(np.asarray(pet.data), pet_before)
        assert tuple(viewer.dims.point) == point and tuple(viewer.scene.camera.center) == center
        assert tuple(pet.contrast_limits) == (0.0, 4.0)  # linked windowing across timepoints
        assert elapsed < 3.0  # generous under a loaded test machine; benchmarks/bench_viewer.py measures it
        # the analyses get day 3's native volume
        assert t2s.metadata["volume"].metadata["study"]["session"] == "day3"
        assert set(widget._bound) == {"Alt-Right", "Alt-Left"}
        widget.link_windows.setChecked(False)
        widget.step(1)
        assert widget.session == "day7" and tuple(pet.contrast_limits) != (0.0, 4.0)
        widget.step(-2)
        assert widget.session == "day1"
        np.testing.assert_array_equal(np.asarray(t2s.data), before)
        widget.step(-1)  # day 0: the baseline has anatomy only; the others are hidden and say so
        assert widget.session == "day0" and not pet.visible and "none" in pet.name
        assert widget.track_layers["T2starw"].visible
        widget.step(1)
        assert pet.visible and pet.name == "PET SUVbw (day 1)"
        assert pet.metadata["immunotrack"]["study_session"] == "day1"  # still traced to its file
        assert widget._prepared_for(pet).source.name == "pet"
    finally:
        widget.shutdown()


def test_missing_modality_at_a_timepoint_is_hidden_then_back(study_widget, marker_study):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "19F"))
    f19 = widget.track_layers["19F"]
    assert f19.visible
    widget.set_timepoint("day3")
    assert not f19.visible and any("no 19F image" in m for m in widget.messages)
    assert any(m.startswith("day 3: MPI, PET not registered") for m in widget.messages)
    widget.set_timepoint("day1")
    assert f19.visible and f19.name == "19F (day 1)"
    with pytest.raises(InputError, match="no session"):
        widget.set_timepoint("day5")


# --------------------------------------------------------------------------- views
def test_three_plane_layout_shows_the_same_world_point(study_widget, marker_study):
    from qtpy.QtWidgets import QApplication

    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw",))
    view = widget.set_three_plane(True)
    center_on_world(viewer, MARKER)
    QApplication.processEvents()
    view.refresh()
    images = view.images()
    assert set(images) == {"axial", "coronal", "sagittal"}
    for plane, image in images.items():
        np.testing.assert_allclose(image.point_ras, MARKER, atol=1e-9, err_msg=plane)
        row, col = image.pixel_of(MARKER)
        assert image.values["T2starw (day 1)"][row, col] == pytest.approx(100.0), plane
        # the marker is the brightest pixel of the plane, drawn white in the grey anatomy
        assert np.allclose(image.rgb[row, col], 1.0, atol=1e-6)
    # each plane is the one it says: axial at S, coronal at A, sagittal at R of the point
    fixed = {"axial": 2, "coronal": 1, "sagittal": 0}
    for plane, axis in fixed.items():
        corners = [images[plane].ras_of(0, 0), images[plane].ras_of(5, 7)]
        assert all(c[axis] == pytest.approx(MARKER[axis]) for c in corners)
    # a click on the coronal panel moves every view
    target = MARKER + np.array([1.0, 0.0, -1.0])
    view.go_to(target)
    np.testing.assert_allclose(np.asarray(viewer.dims.point)[-3:], ras_to_napari(target), atol=1e-9)
    widget.set_plane("coronal")
    assert tuple(viewer.dims.order)[-3:] == (1, 0, 2)
    widget.set_ndisplay(3)
    assert viewer.dims.ndisplay == 3
    widget.set_three_plane(False)
    assert widget.three_plane is None


def test_findings_list_centres_views(study_widget, marker_study):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "ROI"))
    mri = widget.track_layers["T2starw"].metadata["volume"]
    clusters = np.zeros(mri.shape, np.int32)
    clusters[2:4, 3:5, 4:6] = 1
    clusters[10, 12, 14] = 2

    add_volume(viewer, mri.replace(data=clusters, modality="SEG", unit="label", name="iron clusters"), as_labels=True)
    findings = widget.refresh_findings()
    by_source = {(f["source"], f["label"]): f for f in findings}
    liver = by_source[("ROI (day 1)", 3)]
    assert liver["name"] == "liver" and liver["voxels"] == 125
    np.testing.assert_allclose(liver["centroid_ras_mm"], MARKER, atol=1e-9)
    np.testing.assert_allclose(
        by_source[("iron clusters", 1)]["centroid_ras_mm"], mri.index_to_world([[2.5, 3.5, 4.5]])[0], atol=1e-9
    )
    assert by_source[("iron clusters", 1)]["volume_mm3"] == pytest.approx(8 * 0.125)
    index = findings.index(by_source[("iron clusters", 2)])
    point = widget.go_to_finding(index)
    np.testing.assert_allclose(point, mri.index_to_world([[10, 12, 14]])[0])
    np.testing.assert_allclose(np.asarray(viewer.dims.point)[-3:], ras_to_napari(point), atol=1e-9)
    assert widget.findings_tree.topLevelItemCount() == 2


def test_contrast_presets_per_modality(study_widget, marker_study):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "PET"))
    pet = widget.track_layers["PET"]
    viewer.layers.selection.active = pet
    assert widget.preset_combo.count() == 4 and widget.preset_combo.itemText(0) == "SUV 0-2"
    assert widget.apply_preset("SUV 0-5") == (0.0, 5.0) and tuple(pet.contrast_limits) == (0.0, 5.0)
    mri = widget.track_layers["T2starw"]
    lo, hi = widget.apply_preset("wide (0-99.9 %)", layer=mri)
    assert lo == pytest.approx(10.0) and tuple(mri.contrast_limits) == (lo, hi)
    with pytest.raises(InputError, match="no preset"):
        widget.apply_preset("SUV 0-5", layer=mri)


# --------------------------------------------------------------------------- the study state
def test_saved_state_reopens_identical(study_widget, marker_study):
    from napari_immunotrack.widgets._common import add_volume

    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "PET", "MPI", "ROI"))
    pet, mpi = widget.track_layers["PET"], widget.track_layers["MPI"]
    pet.colormap = "viridis"
    pet.contrast_limits = (0.5, 3.0)
    pet.opacity = 0.55
    # a registration applied by hand (as the Registration dock does): layer affine and native volume move
    move = np.eye(4)
    move[:3, 3] = [0.5, -1.0, 0.25]  # napari order S, A, R
    mpi.affine = move
    mpi.metadata["volume"] = mpi.metadata["volume"].replace(
        affine=np.eye(4) @ mpi.metadata["volume"].affine
        + np.pad(np.array([[0, 0, 0, 0.25], [0, 0, 0, -1.0], [0, 0, 0, 0.5]]), ((0, 1), (0, 0)))
    )
    mri = widget.track_layers["T2starw"].metadata["volume"]
    drawn = np.zeros(mri.shape, np.uint8)
    drawn[4:9, 5:10, 6:11] = 2
    roi = add_volume(viewer, mri.replace(data=drawn, modality="SEG", unit="label", name="my ROI"), as_labels=True)
    roi.opacity = 0.4
    widget.link_windows.setChecked(False)
    center_on_world(viewer, MARKER)
    path = widget.save_state(overwrite=None)  # no file yet: nothing to ask
    assert path == marker_study / STATE_NAME
    saved = list((marker_study / "immunotrack_state_layers").glob("my_ROI-*.nii.gz"))
    assert len(saved) == 1  # the ROI's file, named by its content
    from napari_immunotrack._close_guard import unsaved_layers

    assert roi not in unsaved_layers(viewer)  # saved with the state: closing napari will not ask about it

    viewer2, widget2 = study_widget()
    check = widget2.open_state(path)
    assert check.ok
    names1 = [ly.name for ly in viewer.layers]
    names2 = [ly.name for ly in viewer2.layers]
    assert names2 == names1
    for a in viewer.layers:
        b = viewer2.layers[a.name]
        assert type(a) is type(b) and a.visible == b.visible and a.opacity == pytest.approx(b.opacity), a.name
        np.testing.assert_allclose(
            np.asarray(a._data_to_world.affine_matrix),
            np.asarray(b._data_to_world.affine_matrix),
            atol=1e-9,
            err_msg=a.name,
        )
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
        if type(a).__name__ == "Image":
            assert a.colormap.name == b.colormap.name and a.blending == b.blending
            np.testing.assert_allclose(a.contrast_limits, b.contrast_limits, rtol=1e-6)
        va, vb = a.metadata.get("volume"), b.metadata.get("volume")
        if va is not None:
            np.testing.assert_allclose(va.affine, vb.affine, atol=1e-9, err_msg=a.name)
    assert viewer2.layers["PET SUVbw (day 1)"].colormap.name == "viridis"
    assert not widget2.link_windows.isChecked()
    np.testing.assert_allclose(viewer2.dims.point, viewer.dims.point)
    assert viewer2.layers["my ROI"].metadata["volume"].same_grid(mri)


def test_closing_with_a_drawn_roi_asks_until_the_state_is_saved(study_widget, marker_study, monkeypatch):
    from napari._qt.qt_main_window import _QtMainWindow

    from napari_immunotrack import _close_guard

    asked, closes = [], []
    monkeypatch.setattr(
        _close_guard, "ask_unsaved", lambda parent, names, action: asked.append(list(names)) or "cancel"
    )
    real_close = _QtMainWindow.close

    def close(self, quit_app=False, confirm_need=False):  # a user's close would close the window now
        if confirm_need:
            closes.append(quit_app)
            return True
        return real_close(self, quit_app=quit_app, confirm_need=confirm_need)

    monkeypatch.setattr(_QtMainWindow, "close", close)
    viewer, widget = study_widget()  # opening the dock installs the guard
    widget.open_study(marker_study, shown=("T2starw", "ROI"))
    menu_close = lambda: viewer.window._qt_window.close(quit_app=False, confirm_need=True)  # noqa: E731
    menu_close()
    assert asked == [] and closes == [False]  # the study's own ROI file, unedited: nothing to lose
    mri = widget.track_layers["T2starw"].metadata["volume"]
    drawn = np.zeros(mri.shape, np.uint8)
    drawn[2:5, 3:6, 4:7] = 1
    # an analysis result shown as labels (not edited) is not asked about; a hand-drawn one is
    add_volume(viewer, mri.replace(data=drawn, modality="SEG", unit="label", name="tumour"), as_labels=True)
    user_roi = viewer.add_labels(np.zeros(mri.shape, np.uint8), name="hand drawn")
    user_roi.data[1, 1, 1] = 3
    menu_close()
    assert asked == [["hand drawn"]] and closes == [False]  # cancelled: the window stays
    widget.save_state()
    menu_close()
    assert len(asked) == 1 and closes == [False, False]  # saved with the state: no question


def test_edited_study_roi_is_not_lost_when_stepping_timepoints(study_widget, marker_study, monkeypatch, tmp_path):
    """Corrections painted into the study's ROI layer: another timepoint (or study) replaces its data, so the
    dock asks first; Cancel keeps the timepoint and the work, Save writes it, Discard goes on."""
    from napari_immunotrack import _close_guard
    from napari_immunotrack.io import load_volume

    answers, asked = ["cancel"], []

    def ask(parent, names, action):
        asked.append((list(names), action))
        return answers[0]

    monkeypatch.setattr(_close_guard, "ask_unsaved", ask)
    monkeypatch.setattr(_close_guard, "choose_folder", lambda parent, start: str(tmp_path))
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "ROI"))
    first = widget.session
    roi = widget.track_layers["ROI"]
    other = [s for s in widget.study.sessions(widget.subject) if s != first][0]
    widget.set_timepoint(other)  # nothing edited: no question
    assert asked == [] and widget.session == other
    widget.set_timepoint(first)
    roi.data[0, 0, 0] = 9  # a correction painted by the analyst
    roi.refresh()
    painted = np.array(roi.data)
    widget._guard(widget.set_timepoint, other)
    assert asked == [([roi.name], f"showing {other}")] and roi.name.startswith("ROI")
    assert widget.session == first and np.array_equal(roi.data, painted)  # cancelled: all as it was
    assert widget.slider.value() == widget.study.sessions(widget.subject).index(first)
    answers[0] = "save"
    widget.set_timepoint(other)
    assert widget.session == other
    saved = list(tmp_path.glob("*.nii.gz"))
    assert len(saved) == 1 and load_volume(saved[0]).numpy().max() == 9  # the correction is on disk
    roi.data[0, 0, 0] = 7
    roi.refresh()
    answers[0] = "discard"
    widget.open_study(marker_study, shown=("T2starw",))  # another study (here: the same one again) asks too
    assert len(asked) == 3 and asked[-1][1].startswith("opening")


def test_state_is_not_overwritten_without_asking(study_widget, marker_study, monkeypatch):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw",))
    path = widget.save_state()
    before = path.read_bytes()
    widget.track_layers["T2starw"].opacity = 0.3
    asked = []
    monkeypatch.setattr(widget, "ask", lambda title, question: asked.append(question) or False)
    assert widget.save_state() is None
    assert path.read_bytes() == before and len(asked) == 1
    with pytest.raises(InputError, match="already exists"):
        widget.save_state(overwrite=False)
    monkeypatch.setattr(widget, "ask", lambda title, question: True)
    assert widget.save_state() == path and path.read_bytes() != before


def test_bad_input_gives_a_message_and_the_rest_stays(study_widget, marker_study, tmp_path, monkeypatch):
    viewer, widget = study_widget()
    widget.open_study(marker_study, shown=("T2starw", "19F", "MPI"))
    path = widget.save_state()
    layers_before = [ly.name for ly in viewer.layers]
    # a folder with no images: one clear message, the open study stays
    empty = tmp_path / "empty"
    (empty / "sub-01" / "ses-day1" / "anat").mkdir(parents=True)
    widget._guard(widget.open_study, empty)
    assert "holds no images" in widget.messages[-1] and [ly.name for ly in viewer.layers] == layers_before
    # a corrupt state file: said so, left untouched, the study stays
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "napari-immunotrack study state", "layers": [')
    widget._guard(widget.open_state, corrupt)
    assert "corrupt" in widget.messages[-1] and corrupt.read_text().endswith("[")
    assert [ly.name for ly in viewer.layers] == layers_before
    # files changed or gone since the state was saved: listed in one message, the rest opens
    (marker_study / "sub-01" / "ses-day1" / "f19" / "sub-01_ses-day1_19F.nii.gz").unlink()
    mpi = marker_study / "sub-01" / "ses-day1" / "mpi" / "sub-01_ses-day1_mpi.nii.gz"
    write_nifti(_volume(0.5, (14, 16, 18), (-4.0, -5.5, -1.0), 99.0, 0.0), mpi, overwrite=True)
    viewer2, widget2 = study_widget()
    check = widget2.open_state(path)
    assert check.missing == ["19F (day 1)"] and check.changed == ["MPI (day 1)"]
    message = widget2.messages[-1]
    assert "missing: 19F (day 1)" in message and "changed" in message and "MPI (day 1)" in message
    assert "T2starw (day 1)" in [ly.name for ly in viewer2.layers]
    # the study folder moved: the user is asked to locate it
    moved = tmp_path / "moved_here"
    marker_study.rename(moved)
    viewer3, widget3 = viewer2, widget2
    asked = []
    monkeypatch.setattr(widget3, "locate_folder", lambda prompt: asked.append(prompt) or str(moved))
    elsewhere = tmp_path / "state_copy.json"
    import json

    state = json.loads((moved / STATE_NAME).read_text())
    state["study"] = "markers"  # relative to the copy's folder: not there any more
    elsewhere.write_text(json.dumps(state))
    widget3.open_state(elsewhere)
    assert asked and "locate" in asked[0]
    assert widget3.study.root == moved and "T2starw (day 1)" in [ly.name for ly in viewer3.layers]
