"""Cancel inside a stage of the Registration dock's session alignment (issue 18; it could cancel only between
stages). The dock's worker passes its progress callback into ``align_mri``: the bar rises during the
optimisers, and Cancel pressed in the middle of the B-spline stage (the longest, many seconds) ends the
worker within about a second, with no layer moved and nothing written into the study."""

import json
import time

import numpy as np
import pytest

from napari_immunotrack.errors import InputError
from napari_immunotrack.widgets._common import add_volume, layer_affine_ras

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from napari_immunotrack.simulate.study import StudyDesign, make_study

    root = make_study(
        tmp_path_factory.mktemp("cancel") / "study",
        seed=4,
        timepoints_days=(0, 3),
        size="tiny",
        design=StudyDesign(repositioned=True),
    )
    assert json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]["sessions"]  # a real study
    return root


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _open(viewer, root, session="day3"):
    from napari_immunotrack.study_loading import load_session

    return {v.name: add_volume(viewer, v, as_labels=f.is_labels) for v, f in load_session(root, session=session)}


@pytest.mark.parametrize(
    ("transform", "stage", "nth"),
    [("bspline", "B-spline deformation: iteration", 2), ("rigid", "middle level: iteration", 3)],
)
def test_cancel_inside_a_stage_ends_the_worker_at_once(
    make_napari_viewer, qtbot, study, notifications, transform, stage, nth
):
    from napari_immunotrack.widgets.registration import RegistrationWidget

    before = _files(study)
    viewer = make_napari_viewer(show=False)
    layers = _open(viewer, study)
    affines = {name: layer_affine_ras(layer) for name, layer in layers.items()}
    widget = RegistrationWidget(viewer)
    assert widget.method_combo.currentText().startswith("Session")
    widget.transform_combo.setCurrentText(transform)
    assert widget.transform_combo.currentText() == transform

    seen, cancelled_at = [], []

    def on_progress(fraction, message):  # the GUI thread, as the dock's bar sees it
        seen.append((fraction, message))
        if not cancelled_at and sum(m.startswith(stage) for _, m in seen) >= nth:
            cancelled_at.append(time.perf_counter())
            widget.runner.cancel()  # what the Cancel button does

    widget.runner._relay.progressed.connect(on_progress)
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=600_000)
    ended = time.perf_counter()

    assert cancelled_at, f"the {stage!r} stage never reported progress: {seen[-3:]}"
    assert ended - cancelled_at[0] < 1.5, ended - cancelled_at[0]  # within about a second, not the stage's end
    fractions = np.array([f for f, _ in seen])
    assert np.all(np.diff(fractions) >= 0) and len(np.unique(fractions)) >= 5  # the bar rose, step by step
    assert 0.02 < fractions[-1] < 0.85  # stopped inside the alignment, before its quality-control views
    assert widget.progress_bar.value() == int(round(100 * fractions[-1]))
    # nothing applied, nothing kept, nothing written
    assert widget.alignment is None and widget.result is None
    assert widget.status.text() == "cancelled"
    assert ("info", "cancelled") in notifications
    for name, affine in affines.items():
        assert np.allclose(layer_affine_ras(layers[name]), affine), name
    with pytest.raises(InputError, match="align the sessions first"):
        widget.save_to_study(study)
    assert _files(study) == before
