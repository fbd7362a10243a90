"""The "Movie" dock: one click from the open study to a time-lapse MP4/GIF (see :mod:`napari_immunotrack.movie`).

The study folder is taken from the layers' source files (the folder above ``sub-*``), the
track and plane from the choices here; the movie is rendered in a worker thread with progress
and Cancel, and written atomically with a provenance sidecar. The same function
(:func:`export_movie`) can be wired into the Figure dock.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..errors import InputError
from ._common import RunRow
from ._dock import PluginDock

SIZES = ("1920x1080", "1280x720", "960x540", "3840x2160")


def study_root_from_layers(viewer) -> Path | None:
    """The study folder of the first layer read from a ``sub-*`` folder (its parent), else None.

    A layer's path is its napari ``source.path``, else the ``source_path`` of the Volume in its metadata.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        Anything with ``layers``.

    Returns
    -------
    Path or None
        The folder holding the ``sub-*`` folder; None when no layer comes from one.

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> from napari_immunotrack.volume import Volume
    >>> viewer = ViewerModel()
    >>> source = "/data/study/sub-01/ses-day1/pet/x.nii.gz"
    >>> vol = Volume(np.zeros((2, 2, 2)), np.eye(4), metadata={"source_path": source})
    >>> _ = viewer.add_image(np.zeros((2, 2, 2)), name="drawn")
    >>> print(study_root_from_layers(viewer))
    None
    >>> _ = viewer.add_image(vol.data, metadata={"volume": vol})
    >>> study_root_from_layers(viewer).as_posix()
    '/data/study'
    """
    for layer in viewer.layers:
        path = getattr(getattr(layer, "source", None), "path", None)
        volume = layer.metadata.get("volume") if isinstance(getattr(layer, "metadata", None), dict) else None
        if not path and volume is not None:
            path = getattr(volume, "metadata", {}).get("source_path")
        if not path:
            continue
        for parent in Path(path).parents:
            if parent.name.startswith("sub-"):
                return parent.parent
    return None


def export_movie(study_root, output, *, progress=None, **kwargs):
    """Render and write the movie (worker-thread function; see :func:`napari_immunotrack.movie.make_movie`).

    Parameters
    ----------
    study_root : str or Path
        The study folder (holding ``sub-*/ses-*``).
    output : str or Path
        The movie file (``.mp4`` needs ffmpeg, or ``.gif``).
    progress : callable, optional
        ``progress(fraction, message)``.
    **kwargs
        Passed to :func:`~napari_immunotrack.movie.make_movie` (track, plane, fps, size, ...); its
        provenance records the step as ``napari movie dock``.

    Returns
    -------
    MovieResult
        What :func:`~napari_immunotrack.movie.make_movie` returns (frames, size, stamps, timings).

    Raises
    ------
    InputError
        No study folder or no output chosen, or what :func:`~napari_immunotrack.movie.make_movie` refuses.

    Examples
    --------
    >>> export_movie("", "pet.gif")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: choose the study folder (the folder holding sub-*/ses-*) first.
    >>> export_movie("study", None)
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: choose where to save the movie (.mp4 or .gif) first.
    """
    from ..movie import make_movie

    if not study_root:
        raise InputError("choose the study folder (the folder holding sub-*/ses-*) first.")
    if not output:
        raise InputError("choose where to save the movie (.mp4 or .gif) first.")
    return make_movie(study_root, output, progress=progress, provenance={"step": "napari movie dock"}, **kwargs)


class MovieWidget(PluginDock):
    """Dock widget: a time-lapse movie of a track over the study's timepoints."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.result = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        row = QHBoxLayout()
        self.study_edit = QLineEdit()
        self.study_edit.setPlaceholderText("study folder (holding sub-*)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_study)
        row.addWidget(self.study_edit, 1)
        row.addWidget(browse)
        form.addRow("Study", row)
        self.track_combo = QComboBox()
        self.track_combo.addItems(["PET", "SPECT", "19F", "MPI", "T2starw"])
        self.plane_combo = QComboBox()
        self.plane_combo.addItems(["axial", "coronal", "sagittal", "mip"])
        self.size_combo = QComboBox()
        self.size_combo.addItems(SIZES)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(10)
        self.rotate = QSpinBox()
        self.rotate.setRange(0, 360)
        self.rotate.setSpecialValueText("no rotation")
        self.rotate.setToolTip("with plane = mip: views per full turn about the body's long axis at each timepoint")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("movie.mp4 or movie.gif")
        form.addRow("Track", self.track_combo)
        form.addRow("Plane", self.plane_combo)
        form.addRow("Size", self.size_combo)
        form.addRow("Frames/s", self.fps)
        form.addRow("Turn (mip)", self.rotate)
        form.addRow("Save as", self.output_edit)
        layout.addLayout(form)
        self.run_row = RunRow(layout, "Export movie", on_run=self.run, owner=self)
        layout.addStretch(1)
        for event in (self.viewer.layers.events.inserted,):
            event.connect(self._guess_study)
        self._guess_study()

    def _guess_study(self, *_):
        if not self.study_edit.text():
            root = study_root_from_layers(self.viewer)
            if root is not None:
                self.study_edit.setText(str(root))

    def _browse_study(self):
        folder = QFileDialog.getExistingDirectory(self, "Study folder")
        if folder:
            self.study_edit.setText(folder)

    def options(self) -> dict:
        return {
            "track": self.track_combo.currentText(),
            "plane": self.plane_combo.currentText(),
            "size": self.size_combo.currentText(),
            "fps": float(self.fps.value()),
            "rotate_views": int(self.rotate.value()) if self.plane_combo.currentText() == "mip" else 0,
        }

    def run(self):
        if self.run_row.busy():
            return
        output = self.output_edit.text().strip()
        if not output:
            output, _ = QFileDialog.getSaveFileName(self, "Save movie", "movie.mp4", "Movies (*.mp4 *.gif)")
            if not output:
                return
            self.output_edit.setText(output)
        self.result = None
        self.runner.start(
            export_movie,
            self.study_edit.text().strip(),
            output,
            **self.options(),
            on_done=self._done,
            on_error=self.run_row.fail,
        )

    def _done(self, result):
        self.result = result
        self.status.setText(
            f"{result.n_frames} frames {result.size[0]}x{result.size[1]} ({', '.join(result.stamps)}) -> {result.path}"
        )
        self.run_row.run_pending(self.run)
