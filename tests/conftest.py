"""Shared pytest set-up: test lanes, hypothesis budgets and fixtures used by several test files.

Lanes (CONTRIBUTING.md, "Running the tests")
--------------------------------------------
``pytest`` runs the **quick lane**: every test except those marked ``slow``, with each property-based
(hypothesis) test at a tenth of its budget (at least :data:`QUICK_MIN_EXAMPLES` examples, never more than
the full budget). ``pytest --lane slow`` runs the **slow lane**: the ``slow`` tests and every
hypothesis test at its full budget. ``pytest --lane full`` (what CI runs, through ``scripts/test.sh``)
runs every test at the full budgets: the two lanes together, without running any test twice.
``IMMUNOTRACK_LANE`` sets the lane when no ``--lane`` is given.

The quick lane draws its reduced examples from the same fixed (derandomised) sequence as the full
lane, so a failure seen in the quick lane is reproduced by the full one. ``IMMUNOTRACK_FUZZ_SCALE``
(the fuzz files' multiplier for nightly runs) still applies on top.

Which tests are ``slow`` is decided here (:data:`SLOW_TESTS`, from measured durations), not in the
test files, so that a test file's author does not have to know about lanes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LANES = ("quick", "slow", "full")
#: Hypothesis budgets in the quick lane: this fraction of each test's ``max_examples``, at least this many.
QUICK_BUDGET_FRACTION = 0.1
QUICK_MIN_EXAMPLES = 20

#: Tests (``file::name`` prefixes) left to the slow lane: those that took more than about 20 s (setup and
#: teardown included) in a quick-lane run on the 2-core reference machine under load, and those that build a
#: simulated cohort or run the whole pipeline (``pytest --durations=60``, issue 16). Cheap tests of the same
#: modules (bad input, parameter checks) stay in the quick lane.
SLOW_TESTS = (
    # batch: every test that needs the simulated cohort (three animals, a full pipeline run)
    "tests/test_batch.py::test_cohort_has_biological_variation",
    "tests/test_batch.py::test_cohort_table_equals_single_subject_runs",
    "tests/test_batch.py::test_a_failing_subject_is_reported_and_the_others_finish",
    "tests/test_batch.py::test_rerun_skips_unchanged_tasks_and_redoes_changed_ones",
    "tests/test_batch.py::test_killed_run_resumes_without_redoing_finished_subjects",
    "tests/test_batch.py::test_chunked_clusters_equal_in_memory_and_are_written_chunk_by_chunk",
    "tests/test_batch.py::test_bad_pipeline_files_name_the_problem_and_its_line",
    "tests/test_batch.py::test_bad_cohort_scheduler_and_output_folder_fail_before_any_work",
    # the whole pipeline and the report on the shared simulated study
    "tests/test_demo.py::test_demo_numbers_match_the_truth",
    "tests/test_report.py::test_report_",
    "tests/test_report.py::test_too_few_timepoints_and_a_missing_readout_are_reported_as_partial",
    # napari on the full-size sample study (20-60 s each under load)
    "tests/test_gui_sample.py::",
    "tests/test_gui_study.py::test_sample_study_defaults_docks_and_timepoint_steps",
    "tests/test_gui_study.py::test_bad_input_gives_a_message_and_the_rest_stays",
    "tests/test_gui_study.py::test_edited_study_roi_is_not_lost_when_stepping_timepoints",
    "tests/test_gui_registration.py::test_register_apply_undo_save",
    "tests/test_gui_registration.py::test_landmarks_and_bad_input",
    # processes killed at random points (timing-sensitive: needs the machine's attention)
    "tests/test_reliability_cli.py::test_killing_a_state_save_leaves_the_previous_or_the_new_state",
)


# ------------------------------------------------------------------------------------------------ lanes
def pytest_addoption(parser):
    parser.addoption(
        "--lane",
        choices=LANES,
        default=None,
        help="quick (default: not slow, hypothesis at 1/10 budget), slow (slow tests and hypothesis at full "
        "budget) or full (everything at full budget, as CI runs it); default from IMMUNOTRACK_LANE",
    )


def _lane(config) -> str:
    lane = config.getoption("--lane") or os.environ.get("IMMUNOTRACK_LANE", "quick")
    if lane not in LANES:
        raise pytest.UsageError(f"IMMUNOTRACK_LANE={lane!r}: use one of {', '.join(LANES)}")
    return lane


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: a property-based (hypothesis) test; set automatically")
    config._immunotrack_lane = _lane(config)
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - hypothesis is in the testing extra
        return
    # tests without their own @settings: 100 examples in the full lanes, the floor in the quick lane
    settings.register_profile("immunotrack-full", deadline=None)
    settings.register_profile("immunotrack-quick", deadline=None, max_examples=QUICK_MIN_EXAMPLES)
    settings.load_profile("immunotrack-quick" if config._immunotrack_lane == "quick" else "immunotrack-full")


def pytest_report_header(config):
    lane = config._immunotrack_lane
    budget = "1/10 hypothesis budgets" if lane == "quick" else "full hypothesis budgets"
    return f"napari-immunotrack test lane: {lane} ({budget}; see tests/conftest.py)"


def _is_slow(item) -> bool:
    nodeid = item.nodeid.replace("\\", "/")
    return item.get_closest_marker("slow") is not None or any(nodeid.startswith(p) for p in SLOW_TESTS)


def _hypothesis_test(item):
    """The hypothesis-wrapped function of a test item, or None."""
    function = getattr(item, "function", None)
    function = getattr(function, "__func__", function)
    return function if getattr(function, "is_hypothesis_test", False) else None


def _reduce_budget(function) -> None:
    """Give a hypothesis test a tenth of its budget (its own @settings are kept otherwise)."""
    from hypothesis import settings

    current = getattr(function, "_hypothesis_internal_use_settings", None)
    if current is None or getattr(function, "_immunotrack_quick", False):
        return  # an unknown hypothesis version: the test keeps its full budget (slower, never weaker)
    quick = max(QUICK_MIN_EXAMPLES, round(current.max_examples * QUICK_BUDGET_FRACTION))
    function._hypothesis_internal_use_settings = settings(current, max_examples=min(current.max_examples, quick))
    function._immunotrack_quick = True


def pytest_collection_modifyitems(config, items):
    lane = config._immunotrack_lane
    selected, deselected = [], []
    for item in items:
        hypothesis_function = _hypothesis_test(item)
        if hypothesis_function is not None:
            item.add_marker(pytest.mark.fuzz)
        slow = _is_slow(item)
        if slow and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
        if lane == "quick":
            keep = not slow
            if keep and hypothesis_function is not None:
                _reduce_budget(hypothesis_function)
        elif lane == "slow":
            keep = slow or hypothesis_function is not None
        else:
            keep = True
        (selected if keep else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


# ------------------------------------------------------------------------------------------------ napari
@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # napari's make_napari_viewer teardown reads item.rep_call; without it a failing GUI
    # test would be reported as an AttributeError that hides the real failure
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _no_modal_unsaved_question(monkeypatch):
    """A real Save/Discard/Cancel box would wait for a click forever (a hung suite); a test that does not
    answer the question itself fails here, naming the layers it was asked about."""
    try:
        from napari_immunotrack import _close_guard
    except ImportError:
        return

    def unexpected(parent, names, action="closing"):
        raise AssertionError(f"unexpected Save/Discard/Cancel question before {action} about {list(names)}")

    monkeypatch.setattr(_close_guard, "ask_unsaved", unexpected)


@pytest.fixture
def notifications(monkeypatch):
    """(level, text) of every notification the plugin shows in napari."""
    import napari.utils.notifications as notes

    shown = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(notes, f"show_{level}", lambda text, level=level: shown.append((level, str(text))))
    return shown


# ------------------------------------------------------------------------------------------------ data
def _tree_listing(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def simulated_study(tmp_path_factory):
    """One tiny simulated study for the whole session (seed 0; days 0, 1, 3 and 7; ``ground_truth.json``).

    Shared by the demo, report and registration tests, which used to simulate it three times. It is
    READ-ONLY: a test that needs to change it copies it first (``shutil.copytree``); the session fails
    at the end if any file in it was added, removed or rewritten.
    """
    from napari_immunotrack.simulate.study import make_study

    root = make_study(tmp_path_factory.mktemp("study") / "mouse", seed=0, timepoints_days=(0, 1, 3, 7), size="tiny")
    before = _tree_listing(root)
    yield root
    after = _tree_listing(root)
    changed = sorted(set(before) ^ set(after) | {k for k in before.keys() & after.keys() if before[k] != after[k]})
    assert not changed, f"a test changed the shared simulated study (copy it first): {changed[:5]}"
