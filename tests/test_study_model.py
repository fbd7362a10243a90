"""The Study dock's view model and session loader, without Qt (no display needed)."""

import shutil
import sys

import pytest

from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import InputError
from napari_immunotrack.study import open_study
from napari_immunotrack.widgets.study.model import StudyViewModel, strip_ses


@pytest.fixture(scope="module")
def study():
    return open_study(sample_study_root())


def test_model_imports_without_qt():
    import subprocess

    code = (
        "import sys; import napari_immunotrack.widgets.study.model, napari_immunotrack.widgets.study.session, "
        "napari_immunotrack.widgets.study.planes; "
        "print(any(m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_open_step_and_timepoints(study):
    model = StudyViewModel()
    assert model.open(study) == []
    # the first subject, its first post-injection session, the default tracks shown
    assert (model.subject, model.session) == ("01", "day1")
    assert model.sessions == ["day0", "day1", "day3", "day7"]
    assert model.baseline_session() == "day0"
    assert sorted(model.shown_tracks()) == ["19F", "PET", "ROI", "T2starw"]
    assert model.timepoint_text() == "day 1  (2/4)"
    assert model.step_target(1) == "day3" and model.step_target(10) == "day7" and model.step_target(-5) == "day0"
    assert model.resolve_session("ses-day3") == "day3"
    with pytest.raises(InputError, match="no session 'day2'.*day0, day1, day3, day7"):
        model.resolve_session("day2")
    assert strip_ses("ses-x") == "x"


def test_open_with_unknown_subject_and_session_warns(study):
    model = StudyViewModel()
    warnings = model.open(study, subject="99", session="day5", shown=["T1w"])
    assert len(warnings) == 2 and "subject 99" in warnings[0] and "session day5" in warnings[1]
    assert model.subject == "01" and model.session == "day1" and model.shown_tracks() == ["T1w"]


def test_tree_rows_say_what_is_missing_and_registered(study):
    model = StudyViewModel()
    model.open(study)
    (subject,) = model.tree()
    assert subject.text == "sub-01" and subject.detail == "4 timepoint(s)" and subject.current
    sessions = {row.session: row for row in subject.children}
    assert sessions["day0"].detail == "day0  (baseline)" and sessions["day1"].current
    day1 = {row.track: row for row in sessions["day1"].children}
    assert day1["PET"].detail.endswith("(registered)") and day1["PET"].checked and day1["PET"].checkable
    assert not day1["T1w"].checked
    # the baseline holds anatomy only: its missing hot-spot tracks are not listed as gaps
    assert all(not row.missing for row in sessions["day0"].children)


def test_adjustments_round_trip_through_state_entries(study):
    model = StudyViewModel()
    model.open(study)
    model.remember_adjustment("day1", "PET", {"affine_ras": [[1, 0, 0, 2]]})
    model.remember_adjustment("day3", "PET", {})  # nothing changed: nothing kept
    entries = model.adjustments_state()
    assert entries == [{"session": "day1", "track": "PET", "affine_ras": [[1, 0, 0, 2]]}]
    other = StudyViewModel()
    other.load_adjustments(entries + [{"track": "x"}])
    assert other.adjustment("day1", "PET") == {"affine_ras": [[1, 0, 0, 2]]} and other.adjustment("day3", "PET") == {}


def test_session_messages_name_missing_and_unregistered(tmp_path, study):
    # a copy of the study without day 3's transforms: its PET/SPECT/MPI are said to be unregistered
    root = tmp_path / "study"
    shutil.copytree(sample_study_root(), root)
    for tfm in (root / "sub-01" / "ses-day3").rglob("*.tfm"):
        tfm.unlink()
    model = StudyViewModel()
    model.open(open_study(root), session="day3")
    messages = model.session_messages(present_tracks=["T2starw", "ROI"], errors=["x.nii.gz: broken"])
    levels = [level for level, _ in messages]
    assert levels[0] == "error" and "warning" in levels
    warning = next(m for level, m in messages if level == "warning")
    assert warning.startswith("day 3:") and "PET" in warning and "not registered" in warning
    info = next(m for level, m in messages if level == "info")
    assert info == "day 3: no 19F, PET image at this timepoint; hidden."
