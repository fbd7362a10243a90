"""The analyst's path on the sample study (issue 17), in a real napari window under Xvfb.

Open the study the way ``immunotrack view`` does (``commands.view.open_viewer``: the Study dock and every
analysis dock), step to each timepoint with the Study dock's own controls (the ">" button, Alt+Right's
``step``, the slider), and at each one run Iron clusters, T1-T2 confirmation and Quantitative readouts from
their docks WITHOUT touching a picker. At every timepoint the inputs the docks chose must be that
timepoint's layers (and the day-0 baselines), and the numbers must equal the command line's
(``immunotrack segment`` / ``confirm`` / ``quantify`` / ``fluorine``, run in-process on the study's files
with the dock's parameters). A pinned choice survives a step; one layer for two roles is refused with a
notification; the Cursor readout follows a step without a mouse move.

Screenshots of the whole window go to ``<pytest basetemp>/analyst_path/`` (pytest keeps the last three
basetemps; CI keeps that folder as an artefact). Window sizes are asserted by the layout's own test.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.data import sample_study_root

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = sample_study_root()
SUB = ROOT / "sub-01"


def _file(session: str, *parts) -> str:
    return str(SUB.joinpath(f"ses-{session}", *parts))


def _anat(session: str, contrast: str) -> str:
    return _file(session, "anat", f"sub-01_ses-{session}_{contrast}.nii.gz")


@pytest.fixture
def analyst(make_napari_viewer, monkeypatch, request):
    """The window `immunotrack view` opens (shown: screenshots need it), and the folder for screenshots."""
    import napari

    from napari_immunotrack.commands import view

    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: make_napari_viewer(show=True))
    viewer = view.open_viewer(show=True)
    shots = Path(request.config._tmp_path_factory.getbasetemp()) / "analyst_path"
    shots.mkdir(parents=True, exist_ok=True)
    return viewer, shots


def _docks(viewer) -> dict:
    return {name.split(" (napari-immunotrack)")[0]: widget for name, widget in viewer.window.dock_widgets.items()}


def _raise(widget) -> None:
    dock = widget.parent()
    if dock is not None:
        dock.raise_()


def _shot(viewer, qtbot, shots: Path, name: str) -> Path:
    qtbot.wait(150)
    path = shots / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    assert path.stat().st_size > 10_000
    return path


def _run(widget, qtbot, timeout=240_000):
    """Press the dock's Run button and wait for its worker (the button is what the analyst clicks)."""
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=timeout)
    qtbot.wait(50)


def _session_alignment(option: str, session: str) -> tuple:
    """The CLI option giving the baseline (day 0) through the session's saved alignment: the docks see
    every day in day 0's frame (the sample's sessions lie in their own poses)."""
    if session == "day0":
        return ()
    return (option, _file(session, "xfm", f"sub-01_ses-{session}_from-anat_to-sesday0.tfm"))


def _cli(tmp_path: Path, *argv) -> None:
    from napari_immunotrack import cli

    assert cli.main([str(a) for a in argv]) == 0, argv


def _expect_inputs(docks, study, session: str) -> None:
    """Every dock's inputs are the current timepoint's layers (and the day-0 baselines after day 0)."""
    day = session.replace("day", "")
    clusters, confirm, readout = docks["Iron clusters"], docks["T1-T2 confirmation"], docks["Quantitative readouts"]
    baseline = session != "day0"
    assert clusters.pickers.names(("post", "baseline")) == {
        "post": f"T2starw (day {day})",
        "baseline": "T2starw baseline (day 0)" if baseline else "(none)",
    }
    assert confirm.pickers.names(("t1_post", "t2_post", "t1_pre", "t2_pre")) == {
        "t1_post": f"T1w (day {day})",
        "t2_post": f"T2w (day {day})",
        "t1_pre": "T1w baseline (day 0)" if baseline else "(none)",
        "t2_pre": "T2w baseline (day 0)" if baseline else "(none)",
    }
    # the layers behind the names hold this session's data (not only the right name)
    for widget, key in ((clusters, "post"), (confirm, "t1_post"), (confirm, "t2_post"), (readout.pickers, "roi")):
        pickers = widget if key == "roi" else widget.pickers
        layer = pickers.layer(key)
        assert layer.metadata["immunotrack"]["study_session"] == session
        assert layer.metadata["volume"].metadata["study"]["session"] == session
    assert readout.roi_combo.currentText() == f"ROI (day {day})"
    quantitative = readout.selected_layers()
    if baseline:
        assert sorted(quantitative) == sorted(
            [f"PET SUVbw (day {day})", f"SPECT SUVbw (day {day})", f"19F (day {day})", f"MPI (day {day})"]
        )
    for widget in (clusters, confirm):
        follows = widget.pickers.following()
        assert all(follows[k] == "follows" for k in widget.pickers.roles), follows
        assert f"day {day}" in widget.pickers.context_label.text()
    assert study.session == session


def _check_clusters(clusters, session: str, tmp_path: Path) -> int:
    from napari_immunotrack.io import load_volume

    p = clusters.parameters()
    out = tmp_path / f"clusters_{session}.nii.gz"
    table = tmp_path / f"clusters_{session}.csv"
    _cli(
        tmp_path,
        "segment",
        _anat(session, "T2starw"),
        "--baseline",
        _anat("day0", "T2starw"),
        "-o",
        out,
        "--table",
        table,
        "--method",
        p["method"],
        "--threshold",
        p["threshold"],
        "--min-size",
        p["min_size"],
        "--connectivity",
        p["connectivity"],
        "--baseline-ratio",
        p["baseline_ratio"],
        *_session_alignment("--baseline-transform", session),
    )
    cli_labels = load_volume(out).numpy()
    np.testing.assert_array_equal(clusters.result.labels.numpy(), cli_labels)
    cli_table = pd.read_csv(table)
    dock_table = clusters.result.table.reset_index(drop=True)
    assert len(dock_table) == len(cli_table) > 0
    for column in ("voxels", "volume_mm3", "mean_signal"):
        if column in cli_table.columns:
            np.testing.assert_allclose(dock_table[column].to_numpy(float), cli_table[column].to_numpy(float), rtol=1e-6)
    # the dock's centroids are in day 0's frame (where it draws the day), the CLI's in the session's own world
    xyz = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    cli_xyz = cli_table[xyz].to_numpy(float)
    if session != "day0":
        from napari_immunotrack.io.transforms import read_transform

        to_ref = np.linalg.inv(read_transform(_session_alignment("", session)[1]))
        cli_xyz = cli_xyz @ to_ref[:3, :3].T + to_ref[:3, 3]
    np.testing.assert_allclose(dock_table[xyz].to_numpy(float), cli_xyz, atol=1e-6)
    return len(dock_table)


def _check_confirm(confirm, session: str, tmp_path: Path) -> None:
    from napari_immunotrack.io import load_volume

    out = tmp_path / f"confirm_{session}.nii.gz"
    table = tmp_path / f"confirm_{session}.csv"
    _cli(
        tmp_path,
        "confirm",
        "--t1",
        _anat(session, "T1w"),
        "--t2",
        _anat(session, "T2w"),
        "--t1-pre",
        _anat("day0", "T1w"),
        "--t2-pre",
        _anat("day0", "T2w"),
        "-o",
        out,
        "--table",
        table,
        *_session_alignment("--pre-transform", session),
    )
    np.testing.assert_array_equal(confirm.result.labels.numpy(), load_volume(out).numpy())
    cli_table = pd.read_csv(table)
    assert len(cli_table) == int(confirm.result.labels.numpy().max())


def _check_readouts(readout, session: str, tmp_path: Path) -> pd.DataFrame:
    df = readout.table
    day = session.replace("day", "")
    dseg = _file(session, "rois", f"sub-01_ses-{session}_dseg.nii.gz")
    # PET: `immunotrack quantify` on the DICOM series with the session's registration
    pet_csv = tmp_path / f"pet_{session}.csv"
    _cli(
        tmp_path,
        "quantify",
        _file(session, "pet"),
        "--roi",
        dseg,
        "--transform",
        _file(session, "xfm", f"sub-01_ses-{session}_from-pet_to-anat.tfm"),
        "-o",
        pet_csv,
    )
    cli_pet = pd.read_csv(pet_csv).set_index("label")
    dock_pet = df[df["layer"] == f"PET SUVbw (day {day})"].set_index("label")
    assert set(dock_pet.index) == set(cli_pet.index)
    for column in ("mean_bq_ml", "suv_bw_mean", "percent_id_per_g"):
        np.testing.assert_allclose(
            dock_pet.loc[cli_pet.index, column].to_numpy(float), cli_pet[column].to_numpy(float), rtol=1e-6
        )
    assert (dock_pet["unit"] == "Bq/mL").all()
    # 19F: `immunotrack fluorine` with the sidecar's reference tube, concentration and atoms per cell
    f19_csv = tmp_path / f"f19_{session}.csv"
    meta = readout._inputs[f"19F (day {day})"].metadata
    _cli(
        tmp_path,
        "fluorine",
        _file(session, "f19", f"sub-01_ses-{session}_19F.nii.gz"),
        "--reference-mask",
        _file(session, "f19", f"sub-01_ses-{session}_desc-reftube_mask.nii.gz"),
        "--roi",
        dseg,
        "--reference-concentration",
        meta["ReferenceConcentration_mM"],
        "--fluorine-per-cell",
        meta["FluorineAtomsPerCell"],
        "--noise-sigma",
        meta["NoiseSigma"],
        "-o",
        f19_csv,
    )
    cli_f19 = pd.read_csv(f19_csv).set_index("label")
    dock_f19 = df[df["layer"] == f"19F (day {day})"].set_index("label")
    assert (dock_f19["unit"] == "mM").all()  # calibrated, not a.u.
    np.testing.assert_allclose(
        dock_f19.loc[cli_f19.index, "fluorine_atoms"].to_numpy(float),
        cli_f19["fluorine_atoms"].to_numpy(float),
        rtol=1e-6,
    )
    return df


def test_analyst_path_on_the_sample_study(analyst, qtbot, tmp_path):
    viewer, shots = analyst
    from napari_immunotrack.commands.view import study_widget

    study = study_widget(viewer)
    docks = _docks(viewer)
    clusters, confirm, readout = docks["Iron clusters"], docks["T1-T2 confirmation"], docks["Quantitative readouts"]
    cursor = docks["Cursor readout"]
    qtbot.wait(200)
    assert study.session == "day1"

    # the cursor somewhere in the body: its readout must follow a step without a mouse move
    centre = next(ly for ly in viewer.layers if ly.name == "T2starw (day 1)").metadata["volume"].center_world()
    from napari_immunotrack.volume import ras_to_napari

    viewer.cursor.position = tuple(ras_to_napari(np.asarray(centre, float)))
    assert "(day 1)" in cursor.update_now()

    steps = {"day1": None, "day3": study.next_button.click, "day7": lambda: study.step(1)}  # ">" and Alt+Right
    counts = {}
    for session, step in steps.items():
        if step is not None:
            step()
            qtbot.wait(50)  # one turn of the event loop: the docks refresh once after the step
        _expect_inputs(docks, study, session)
        text = cursor.text.text()
        assert f"T2starw (day {session[3:]})" in text and (session == "day1" or "(day 1)" not in text), text
        assert re.search(r"ROI \(day \d\): \d+ [a-z_]+", text), text  # the organ's name, not only its number

        _raise(clusters)
        _run(clusters, qtbot)
        assert clusters.result is not None, clusters.status.text()
        counts[session] = _check_clusters(clusters, session, tmp_path)
        _shot(viewer, qtbot, shots, f"{session}_1_clusters")

        _raise(confirm)
        _run(confirm, qtbot)
        assert confirm.result is not None
        _check_confirm(confirm, session, tmp_path)
        _shot(viewer, qtbot, shots, f"{session}_2_confirm")

        _raise(readout)
        _run(readout, qtbot)
        assert readout.table is not None, readout.status.text()
        df = _check_readouts(readout, session, tmp_path)
        # readable: every row in the table, organ names, units in every header, a chart tall enough to read
        assert readout.table_view.rowCount() == len(df)
        headers = [readout.table_view.horizontalHeaderItem(c).text() for c in range(readout.table_view.columnCount())]
        assert headers[:3] == ["organ", "layer", "unit"] and "mean (Bq/mL)" in headers and "mean (mM)" in headers
        organs = {readout.table_view.item(r, 0).text() for r in range(readout.table_view.rowCount())}
        assert {"liver", "spleen", "tumour"} <= organs and not any(o.isdigit() for o in organs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Tight layout not applied" would fail here
            readout.canvas.draw()
        assert readout.canvas.height() >= 200 and readout.table_view.height() >= 150
        # the nuclides named from their half-lives (the sample's headers give no name)
        readout.header_layer_combo.setCurrentText(f"SPECT SUVbw (day {session[3:]})")
        assert "nuclide 111In (from the half-life" in readout.header_info.text()
        readout.header_layer_combo.setCurrentText(f"PET SUVbw (day {session[3:]})")
        assert "nuclide 89Zr (from the half-life" in readout.header_info.text()
        _shot(viewer, qtbot, shots, f"{session}_3_readouts")

    # back to the baseline day with the slider: no baseline there, post = day 0
    study.slider.setValue(0)
    qtbot.wait(50)
    _expect_inputs(docks, study, "day0")
    # no PET/19F at day 0: the empty placeholders are offered nowhere, and the day-7 table is said to be day 7's
    assert readout.selected_layers() == [] and readout.header_layer_combo.count() == 0
    assert not any("none" in clusters.combos["post"].itemText(i) for i in range(clusters.combos["post"].count()))
    assert "results below are of day 7" in readout.status.text()
    _shot(viewer, qtbot, shots, "day0_inputs")

    # a pinned choice survives a step; unpinned, the picker follows again
    clusters.select(post="T2w (day 0)")
    assert clusters.pickers.following()["post"] == "pinned"
    study.slider.setValue(2)  # day 3
    qtbot.wait(50)
    # the same (pinned) layer, now day 3, and the baseline that pairs with its contrast
    assert clusters.pickers.names(["post", "baseline"]) == {"post": "T2w (day 3)", "baseline": "T2w baseline (day 0)"}
    clusters.pickers.unpin("post")
    assert clusters.pickers.names(["post", "baseline"]) == {
        "post": "T2starw (day 3)",
        "baseline": "T2starw baseline (day 0)",
    }

    # one layer for two roles: refused with a notification, the choice unchanged
    import napari.utils.notifications as notifications

    told = []
    original = notifications.show_error
    notifications.show_error = lambda message: told.append(message)
    try:
        combo = confirm.combos["t2_post"]
        combo.setCurrentText("T1w (day 3)")
        combo.activated.emit(combo.currentIndex())
    finally:
        notifications.show_error = original
    assert told and "chosen for both" in told[0] and "T1w post" in told[0]
    assert confirm.pickers.names(["t2_post"]) == {"t2_post": "T2w (day 3)"}
    assert confirm.pickers.following()["t2_post"] == "follows"
    assert counts["day1"] > 0


def test_open_sample_gives_the_docks_the_same_default_inputs(make_napari_viewer, qtbot):
    """File > Open Sample (no Study dock): the day shown is the current timepoint, the day-0 anatomy its baseline."""
    viewer = make_napari_viewer(show=False)
    viewer.open_sample("napari-immunotrack", "mouse_study")
    docks = {}
    for name in ("Iron clusters", "T1-T2 confirmation", "Quantitative readouts", "Figure"):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-immunotrack", name)
        docks[name] = widget
    clusters, confirm, readout = docks["Iron clusters"], docks["T1-T2 confirmation"], docks["Quantitative readouts"]
    assert clusters.pickers.names(("post", "baseline")) == {"post": "T2starw (day 1)", "baseline": "T2starw (day 0)"}
    assert confirm.pickers.names(("t1_post", "t2_post", "t1_pre", "t2_pre")) == {
        "t1_post": "T1w (day 1)",
        "t2_post": "T2w (day 1)",
        "t1_pre": "T1w (day 0)",
        "t2_pre": "T2w (day 0)",
    }
    assert readout.roi_combo.currentText() == "ROI (day 1)"  # the organs, not the reference tube
    ticked = readout.selected_layers()
    assert {viewer.layers[n].metadata["volume"].modality for n in ticked} == {"PT", "NM", "F19", "MPI"}
    assert docks["Figure"].anatomy_combo.currentText() == "T2starw (day 1)"
    assert "day 1 (baseline day 0)" in clusters.pickers.context_label.text()
