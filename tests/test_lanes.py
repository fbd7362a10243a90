"""The test lanes of tests/conftest.py: the slow list names real tests, and the quick lane really cuts budgets."""

import re
from pathlib import Path

import conftest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def test_every_slow_entry_names_an_existing_test():
    """A renamed or removed test must not leave a stale entry (its replacement would silently run quick)."""
    for prefix in conftest.SLOW_TESTS:
        path, _, name = prefix.partition("::")
        assert (ROOT / path).exists(), prefix
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^def {re.escape(name)}\w*\(", source, flags=re.M), f"no test starts with {prefix}"


def test_quick_lane_cuts_a_hypothesis_budget_to_a_tenth_and_keeps_the_rest():
    calls = []

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(st.integers())
    def full(x):
        calls.append(x)

    conftest._reduce_budget(full)
    conftest._reduce_budget(full)  # parametrised tests share one function: cut once, not twice
    reduced = full._hypothesis_internal_use_settings
    assert reduced.max_examples == 50 and reduced.derandomize and reduced.deadline is None
    full()
    assert 0 < len(calls) <= 50

    @settings(max_examples=30, deadline=None)
    @given(st.integers())
    def small(x):
        pass

    conftest._reduce_budget(small)
    assert small._hypothesis_internal_use_settings.max_examples == conftest.QUICK_MIN_EXAMPLES
