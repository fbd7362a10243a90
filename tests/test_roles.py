"""Which layer plays which role at the study's timepoint (widgets/roles.py; no Qt), and the readable-result
helpers (widgets/readable.py): against the layer sets the two ways of opening the sample study produce."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.errors import InputError
from napari_immunotrack.widgets import readable, roles
from napari_immunotrack.widgets.roles import LayerFacts as F

TRACKS = ("T1w", "T2w", "T2starw", "ROI", "ROI:reftube", "PET", "SPECT", "19F", "MPI", "fluorescence")
KIND = {"ROI": "Labels", "ROI:reftube": "Labels"}
DAYS = {"day0": 0.0, "day1": 1.0, "day3": 3.0, "day7": 7.0}

CLUSTERS = {"post": "t2star_post", "baseline": "t2star_baseline"}
CONFIRM = {"t1_post": "t1_post", "t2_post": "t2_post", "t1_pre": "t1_pre", "t2_pre": "t2_pre"}


def study_dock_layers(session: str, baseline: str | None = "day0", missing=()) -> list:
    """The layers of the Study dock at ``session``: one per track (renamed per day), the baseline anatomy."""
    out = []
    for track in TRACKS:
        here = track not in missing
        name = f"{track.replace('ROI:', 'ROI ')} ({'day ' + format(DAYS[session], 'g')}{'' if here else ' none'})"
        out.append(F(name, KIND.get(track, "Image"), track, session if here else None, DAYS[session], "track", here))
    if baseline is not None:
        for track in ("T1w", "T2w", "T2starw"):
            out.append(F(f"{track} baseline (day 0)", "Image", track, baseline, 0.0, "baseline", False))
    return out


def open_sample_layers() -> list:
    """File > Open Sample: day 1 shown, the day-0 anatomy loaded hidden, no study roles."""
    out = [
        F(f"{t} (day 1)", KIND.get(t, "Image"), t, "day1", 1.0, None, t in ("T2starw", "ROI", "PET", "19F"))
        for t in TRACKS
    ]
    out += [F(f"{t} (day 0)", "Image", t, "day0", 0.0, None, False) for t in ("T1w", "T2w", "T2starw")]
    return out


@pytest.mark.parametrize("session", ["day1", "day3", "day7"])
def test_study_dock_roles_follow_the_timepoint(session):
    facts = study_dock_layers(session)
    day = format(DAYS[session], "g")
    assert roles.study_context(facts).current == session
    assert roles.study_context(facts).baseline == "day0"
    assert roles.assign_roles(CLUSTERS, facts) == {
        "post": f"T2starw (day {day})",
        "baseline": "T2starw baseline (day 0)",
    }
    assert roles.assign_roles(CONFIRM, facts) == {
        "t1_post": f"T1w (day {day})",
        "t2_post": f"T2w (day {day})",
        "t1_pre": "T1w baseline (day 0)",
        "t2_pre": "T2w baseline (day 0)",
    }
    quant = roles.assign_roles(
        {r: r for r in roles.QUANTITATIVE_ROLES} | {"roi": "roi", "tube": "reference_tube"}, facts
    )
    assert quant == {
        "pet": f"PET (day {day})",
        "spect": f"SPECT (day {day})",
        "f19": f"19F (day {day})",
        "mpi": f"MPI (day {day})",
        "roi": f"ROI (day {day})",  # the organ atlas, never the reference tube
        "tube": f"ROI reftube (day {day})",
    }


def test_at_the_baseline_timepoint_there_is_no_baseline():
    """Stepped back to day 0 (the baseline layers still loaded): post = day 0, and nothing is its own baseline."""
    facts = study_dock_layers("day0")
    ctx = roles.study_context(facts)
    assert (ctx.current, ctx.baseline) == ("day0", None)
    assert roles.assign_roles(CLUSTERS, facts) == {"post": "T2starw (day 0)", "baseline": None}
    assert roles.assign_roles(CONFIRM, facts)["t1_pre"] is None
    assert "no baseline" in ctx.describe()
    # opened at day 0: no baseline layers at all
    assert roles.study_context(study_dock_layers("day0", baseline=None)).baseline is None


def test_a_track_missing_at_this_timepoint_plays_no_role():
    facts = study_dock_layers("day3", missing=("PET",))
    assert roles.assign_roles({"pet": "pet"}, facts) == {"pet": None}
    assert roles.assign_roles({"f19": "f19"}, facts) == {"f19": "19F (day 3)"}


def test_open_sample_layers_get_the_same_roles():
    facts = open_sample_layers()
    ctx = roles.study_context(facts)
    assert (ctx.current, ctx.baseline) == ("day1", "day0")
    assert roles.assign_roles(CLUSTERS, facts) == {"post": "T2starw (day 1)", "baseline": "T2starw (day 0)"}
    got = roles.assign_roles(CONFIRM, facts)
    assert got == {"t1_post": "T1w (day 1)", "t2_post": "T2w (day 1)", "t1_pre": "T1w (day 0)", "t2_pre": "T2w (day 0)"}
    assert len(set(got.values())) == 4  # never T2starw for both


def test_t2star_baseline_pairs_with_the_post_contrast():
    """No T2*w in the study: the iron image falls back to the T2w, and its baseline is the T2w too."""
    facts = [f for f in study_dock_layers("day3") if f.track != "T2starw"]
    assert roles.assign_roles(CLUSTERS, facts) == {"post": "T2w (day 3)", "baseline": "T2w baseline (day 0)"}


def test_layers_without_study_metadata_are_left_to_the_name_guess():
    facts = [F("T2starw_post"), F("T2starw_pre"), F("T1w_post"), F("T2w_post"), F("T1w_pre"), F("T2w_pre")]
    assert roles.study_context(facts).current is None
    assert roles.assign_roles(CLUSTERS, facts) == {"post": None, "baseline": None}
    names = [f.name for f in facts]
    assert roles.guess_by_name("t2star_post", names) == "T2starw_post"
    assert roles.guess_by_name("t2star_baseline", names) == "T2starw_pre"
    assert roles.guess_by_name("t2_post", names) == "T2w_post"  # never the T2*w
    assert roles.guess_by_name("t1_pre", names) == "T1w_pre"
    assert roles.guess_by_name("roi", ["organs_reftube", "organs_dseg"]) == "organs_dseg"


def test_one_layer_for_two_roles_is_refused():
    with pytest.raises(InputError, match="'T2starw \\(day 1\\)' is chosen for both T1w post and T2w post"):
        roles.check_distinct(
            {"t1_post": "T2starw (day 1)", "t2_post": "T2starw (day 1)"}, {"t1_post": "T1w post", "t2_post": "T2w post"}
        )
    roles.check_distinct({"t1_post": "T1w (day 1)", "t2_post": "T2w (day 1)", "t1_pre": None, "t2_pre": None})
    # the role assignment itself never gives a layer twice
    facts = [F("T2w (day 3)", "Image", "T2w", "day3", 3.0, "track")]
    got = roles.assign_roles({"a": "t2_post", "b": "t2star_post"}, facts)
    assert sorted(v for v in got.values() if v) == ["T2w (day 3)"] and None in got.values()


def test_layer_facts_read_both_kinds_of_metadata():
    class Vol:
        metadata = {"study": {"track": "PET", "session": "day1", "day": 1.0}}

    class Image:
        def __init__(self, name, metadata, visible=True):
            self.name, self.metadata, self.visible = name, metadata, visible

    dock = Image(
        "PET SUVbw (day 3)",
        {"volume": Vol(), "immunotrack": {"study_role": "track", "study_track": "PET", "study_session": "day3"}},
    )
    facts = roles.layer_facts(dock)
    assert (facts.track, facts.session, facts.study_role, facts.day) == ("PET", "day3", "track", None)
    sample = roles.layer_facts(Image("pet (day 1)", {"volume": Vol()}, visible=False))
    assert (sample.track, sample.session, sample.day, sample.visible) == ("PET", "day1", 1.0, False)
    assert roles.layer_facts(Image("mine", {})).in_study is False


# ============================================================================ readable results
def test_nuclide_named_from_the_half_life_of_every_table_nuclide():
    from napari_immunotrack.analysis.pet_header import HALF_LIVES_S

    for key, half_life in HALF_LIVES_S.items():
        named = readable.nuclide_from_half_life(half_life * 1.004)  # a header rounded differently
        assert named in (key, None)  # None only where two nuclides are within 2 % of each other
    assert readable.nuclide_from_half_life(282240.0) == "ZR89"
    assert "89Zr" in readable.nuclide_text(None, 282240.0) and "?" not in readable.nuclide_text(None, 282240.0)
    assert readable.nuclide_symbol("IN111") == "111In"


def test_display_table_names_organs_and_carries_units():
    df = pd.DataFrame(
        {
            "layer": ["PET (day 1)", "PET (day 1)", "19F (day 1)"],
            "unit": ["Bq/mL", "Bq/mL", "mM"],
            "label": [4, 9, 4],
            "name": ["spleen", "", "spleen"],
            "mean_bq_ml": [2.0e5, 1.0e4, np.nan],
            "suv_bw_mean": [3.1, 0.2, np.nan],
            "mean_mm": [np.nan, np.nan, 52.6],
            "unused": [np.nan, np.nan, np.nan],
        }
    )
    shown = readable.display_table(df)
    assert len(shown) == 3  # every row
    assert shown["organ"].tolist() == ["spleen", "label 9", "spleen"]
    assert list(shown.columns) == ["organ", "layer", "unit", "mean (Bq/mL)", "SUVbw mean", "mean (mM)"]
    assert shown["mean (mM)"].iloc[2] == pytest.approx(52.6)


def test_fluorine_mm_is_atoms_over_avogadro_and_volume():
    # 100 mM in 0.01 mL holds 100e-3 mol/L * 1e-5 L * N_A atoms
    atoms = 100e-3 * 1e-5 * readable.AVOGADRO
    assert float(readable.fluorine_mm(atoms, 0.01)) == pytest.approx(100.0, rel=1e-12)
    vol = type(
        "V", (), {"metadata": {"ReferenceConcentration_mM": 100.0, "FluorineAtomsPerCell": 1e12, "NoiseSigma": 5}}
    )()
    assert readable.fluorine_calibration(vol) == {
        "reference_concentration_mm": 100.0,
        "fluorine_per_cell": 1e12,
        "noise_sigma": 5.0,
    }
    assert readable.fluorine_calibration(type("V", (), {"metadata": {"ReferenceConcentration_mM": 100.0}})()) is None


def test_a_step_is_announced_to_the_live_listeners_of_that_viewer_only():
    class Dock:
        def __init__(self):
            self.heard = 0

        def refresh(self):
            self.heard += 1

    viewer, other = object(), object()
    kept, gone, elsewhere = Dock(), Dock(), Dock()
    roles.listen_for_steps(viewer, kept.refresh)
    roles.listen_for_steps(viewer, gone.refresh)
    roles.listen_for_steps(other, elsewhere.refresh)
    del gone  # a closed dock is forgotten, not kept alive
    roles.announce_step(viewer)
    roles.announce_step(viewer)
    assert kept.heard == 2 and elsewhere.heard == 0
    assert len(roles._STEP_LISTENERS[id(viewer)]) == 1
