"""Shared pytest set-up."""

import pytest


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
