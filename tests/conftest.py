"""Shared pytest set-up."""

import pytest


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # napari's make_napari_viewer teardown reads item.rep_call; without it a failing GUI
    # test would be reported as an AttributeError that hides the real failure
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
