"""The Movie dock: finds the study from the layers, exports a GIF in a worker, and the file reads back."""

from __future__ import annotations

from test_movie import _study


def test_movie_dock_exports_a_gif(make_napari_viewer, qtbot, tmp_path):
    import imageio.v3 as iio
    from napari.layers import Layer

    from napari_immunotrack.io import load_volume
    from napari_immunotrack.widgets._common import volume_layer_data
    from napari_immunotrack.widgets.movie import MovieWidget

    study = _study(tmp_path / "study")
    viewer = make_napari_viewer()
    data, meta, kind = volume_layer_data(
        load_volume(study / "sub-01" / "ses-day1" / "anat" / "sub-01_ses-day1_T2w.nii.gz")
    )
    viewer.add_layer(Layer.create(data, meta, kind))
    widget = MovieWidget(viewer)
    assert widget.study_edit.text() == str(study)  # found from the layer's source file
    widget.track_combo.setCurrentText("MPI")
    widget.size_combo.setCurrentText("960x540")
    widget.fps.setValue(4)
    out = tmp_path / "dock.gif"
    widget.output_edit.setText(str(out))
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.runner.running, timeout=60000)
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == widget.result.n_frames and frames.shape[1:3] == (540, 960)
    assert "day 1, day 2, day 3" in widget.status.text()
    assert (tmp_path / "dock.gif.provenance.json").exists()
    # a second export to the same name is refused with one line, nothing overwritten
    before = out.read_bytes()
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.runner.running and "already exists" in widget.status.text(), timeout=30000)
    assert out.read_bytes() == before
