"""errors.collect_warnings / WarningLog: what the demo and the pipeline use to keep warnings for provenance."""

import warnings

from napari_immunotrack.errors import ImmunotrackWarning, WarningLog, collect_warnings


def test_nested_collectors_record_and_pass_on_only_when_asked():
    outer_log = WarningLog()
    passed_on = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda m, c, *a, **k: passed_on.append((c, str(m)))
        warnings.simplefilter("always")
        with collect_warnings(outer_log) as outer:
            outer.stage = "day1 mpi"
            with collect_warnings(show=True) as inner:  # what each pipeline step does
                warnings.warn("ROI 1: dilating it changes the iron by +360%", ImmunotrackWarning, stacklevel=1)
                warnings.warn("ROI 3: dilating it changes the iron by +19%", ImmunotrackWarning, stacklevel=1)
                warnings.warn("a numpy-ish note", RuntimeWarning, stacklevel=1)
            outer.stage = "day3 mpi"
            warnings.warn("ROI 1: dilating it changes the iron by +300%", ImmunotrackWarning, stacklevel=1)
    assert inner.messages() == [
        "ROI 1: dilating it changes the iron by +360%",
        "ROI 3: dilating it changes the iron by +19%",
    ]
    assert len(outer_log) == 3 and outer_log.messages(["day3 mpi"]) == ["ROI 1: dilating it changes the iron by +300%"]
    # the outer collector hides the package's warnings; other warnings go on to the previous handler
    assert passed_on == [(RuntimeWarning, "a numpy-ish note")]
    # one line per kind (numbers aside), with the count and the stages
    assert outer_log.summary() == ["ROI 1: dilating it changes the iron by +360% [3x: day1 mpi, day3 mpi]"]
    assert outer_log.by_stage()["day1 mpi"][1].startswith("ROI 3")


def test_the_previous_warning_handler_is_restored():
    before = warnings.showwarning
    with collect_warnings():
        warnings.warn("x", ImmunotrackWarning, stacklevel=1)
    assert warnings.showwarning is before
