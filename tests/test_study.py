"""Study discovery (BIDS-like and scanner exports), roles, transforms, and the saved study state (no viewer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import InputError, OutputExistsError
from napari_immunotrack.io.nifti import write_nifti
from napari_immunotrack.study import (
    STATE_NAME,
    check_state,
    discover,
    load_state,
    new_state,
    open_study,
    role_from_words,
    save_state,
    save_state_with_labels,
    saved_layers_dir,
    sessions,
    track_label,
)
from napari_immunotrack.volume import Volume


def _grid(shape=(6, 7, 8), spacing=0.5, origin=(-2.0, -1.5, -1.0)):
    """An axis-aligned S, A, R affine."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    affine[2, 0], affine[1, 1], affine[0, 2] = spacing, spacing, spacing
    affine[:3, 3] = origin
    return affine


def _nifti(path, value=1.0, shape=(6, 7, 8), labels=False, overwrite=False, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, np.float32) if not labels else np.ones(shape, np.uint8)
    write_nifti(Volume(data, _grid(shape, **kwargs)), path, labels=labels, overwrite=overwrite)
    return path


# --------------------------------------------------------------------------- the sample study
def test_sample_study_roles_timepoints_and_tracks():
    study = open_study(sample_study_root())
    assert study.subjects() == ["01"]
    assert study.sessions("01") == ["day0", "day1", "day3", "day7"]
    assert [study.day("01", s) for s in study.sessions("01")] == [0.0, 1.0, 3.0, 7.0]
    day1 = {f.track: f for f in study.session_files("01", "day1")}
    expected = {
        "T1w": ("MR", "T1w"),
        "T2w": ("MR", "T2w"),
        "T2starw": ("MR", "T2starw"),
        "PET": ("PT", "PET"),
        "SPECT": ("NM", "SPECT"),
        "19F": ("F19", "19F"),
        "MPI": ("MPI", "MPI"),
        "fluorescence": ("OPT", "fluorescence"),
        "ROI": ("SEG", "ROI"),
        "ROI:reftube": ("SEG", "ROI"),
    }
    assert {t: (f.modality, f.role) for t, f in day1.items()} == expected
    assert all(f.phase == "pre" for f in study.session_files("01", "day0"))
    assert all(f.phase == "post" for f in study.session_files("01", "day3"))
    # anatomy first (drawn below), hot spots last
    tracks = study.tracks("01")
    assert tracks.index("T2starw") < tracks.index("ROI") < tracks.index("19F") < tracks.index("PET")
    # the baseline holds anatomy only: not reported as missing PET; nothing else is missing
    assert study.missing("01") == []
    assert study.problems == []
    # the sample ships our registration results (PET, SPECT, MPI to the MRI) for the post-injection days
    found = {(t.session, t.moving, t.fixed) for t in study.transforms}
    assert {("day1", "pet", "anat"), ("day1", "spect", "anat"), ("day1", "mpi", "anat")} <= found
    assert all(t.session != "day0" for t in study.transforms)
    assert track_label("T2starw") == "T2*w" and track_label("ROI:reftube") == "ROI reftube"


def test_role_from_words():
    assert role_from_words("sub-01_ses-day1_T2starw") == "T2starw"
    assert role_from_words("MGE T2* 3D") == "T2starw"
    assert role_from_words("t1_flash_post") == "T1w"
    assert role_from_words("PET WB 89Zr") == "PET"
    assert role_from_words("19F csi") == "19F"
    assert role_from_words("mouse_fluo") == "fluorescence"
    assert role_from_words("notes", "") is None


# --------------------------------------------------------------------------- a BIDS-like study with problems
@pytest.fixture
def odd_study(tmp_path):
    """Two post timepoints; day 3 has no 19F; an image of unknown role; a non-image file; a transform."""
    root = tmp_path / "odd"
    for day in (1, 3):
        ses = root / "sub-m1" / f"ses-day{day}"
        _nifti(ses / "anat" / f"sub-m1_ses-day{day}_T2w.nii.gz", 100.0 + day)
        _nifti(ses / "mpi" / f"sub-m1_ses-day{day}_mpi.nii.gz", 5.0)
        if day == 1:
            _nifti(ses / "f19" / f"sub-m1_ses-day{day}_19F.nii.gz", 2.0)
    _nifti(root / "sub-m1" / "ses-day1" / "misc" / "sub-m1_ses-day1_weird.nii.gz")
    _nifti(root / "sub-m1" / "ses-day1" / "anat" / "sub-m1_ses-day1_FLASH3D.nii.gz")
    (root / "sub-m1" / "ses-day1" / "anat" / "protocol.docx").write_bytes(b"PK\x03\x04 not an image")
    return root


def test_unknown_roles_non_images_and_missing_modalities_are_reported(odd_study):
    study = open_study(odd_study)
    assert study.sessions("m1") == ["day1", "day3"]
    roles = {f.path.name: f.role for f in study.files}
    assert roles["sub-m1_ses-day1_weird.nii.gz"] == "unknown"
    # an MRI of a weighting the names do not say: an MRI of its own kind
    flash = next(f for f in study.files if f.path.name == "sub-m1_ses-day1_FLASH3D.nii.gz")
    assert (flash.role, flash.modality, flash.track, flash.label) == ("MR", "MR", "MR:FLASH3D", "MRI FLASH3D")
    assert roles["sub-m1_ses-day1_19F.nii.gz"] == "19F"
    assert [p.name for p in study.ignored] == ["protocol.docx"]
    text = " | ".join(study.problems)
    assert "1 file(s) are not images" in text and "protocol.docx" in text
    assert "1 image(s) of unknown role" in text and "weird" in text
    assert "day 3: no MRI FLASH3D, 19F, weird image" in text
    assert ("day3", "19F") in study.missing("m1") and ("day1", "T2w") not in study.missing("m1")
    assert study.file("m1", "day3", "19F") is None and study.file("m1", "day1", "19F") is not None


def test_transform_in_xfm_places_the_modality_in_the_mri_world(odd_study):
    from napari_immunotrack._sample_data import load_study_file, session_transforms
    from napari_immunotrack.io.transforms import write_transform

    xfm = odd_study / "sub-m1" / "ses-day1" / "xfm"
    xfm.mkdir()
    shift = np.eye(4)
    shift[:3, 3] = [1.0, -2.0, 0.5]  # MRI world -> MPI scanner world
    write_transform(xfm / "sub-m1_ses-day1_from-mpi_to-anat.tfm", shift)
    study = open_study(odd_study)
    assert [(t.session, t.moving, t.fixed) for t in study.transforms] == [("day1", "mpi", "anat")]
    f1 = study.file("m1", "day1", "MPI")
    assert study.transform_for(f1) is not None and study.transform_for(study.file("m1", "day3", "MPI")) is None
    raw = load_study_file(f1)[0]
    placed = load_study_file(f1, session_transforms(f1.session_dir))[0]
    # a voxel at MPI world q sits at MRI world shift^-1 q
    q = raw.index_to_world([[1, 2, 3]])[0]
    np.testing.assert_allclose(placed.index_to_world([[1, 2, 3]])[0], q - shift[:3, 3], atol=1e-6)
    assert placed.metadata["study"]["registered"] is True
    assert load_study_file(study.file("m1", "day3", "MPI"))[0].metadata["study"]["registered"] is False
    # a plain NIfTI named *_mpi / *_19F gets its modality from the name
    assert raw.modality == "MPI"
    assert load_study_file(study.file("m1", "day1", "19F"))[0].modality == "F19"


def test_broken_transform_is_reported_and_the_rest_loads(odd_study):
    from napari_immunotrack._sample_data import session_transforms

    xfm = odd_study / "sub-m1" / "ses-day1" / "xfm"
    xfm.mkdir()
    (xfm / "sub-m1_ses-day1_from-mpi_to-anat.tfm").write_text("#Insight Transform File V1.0\ngarbage\n")
    errors = []
    assert session_transforms(xfm.parent, errors=errors) == {}
    assert len(errors) == 1 and "from-mpi_to-anat.tfm" in errors[0]
    with pytest.raises(InputError):
        session_transforms(xfm.parent)


def test_folder_without_images_is_refused(tmp_path):
    empty = tmp_path / "nothing"
    (empty / "sub-01" / "ses-day1" / "anat").mkdir(parents=True)
    (empty / "sub-01" / "ses-day1" / "anat" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="holds no images"):
        open_study(empty)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "report.docx").write_bytes(b"PK not an image")
    with pytest.raises(InputError, match="holds no images"):
        open_study(tmp_path / "flat")
    with pytest.raises(InputError, match="not a folder"):
        discover(tmp_path / "missing")


# --------------------------------------------------------------------------- a plain scanner export
def test_scanner_dicom_export_grouped_by_patient_and_date(tmp_path):
    from napari_immunotrack._sample_data import load_study_file
    from napari_immunotrack.io.dicom import write_dicom_series

    export = tmp_path / "export"
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), _grid((4, 5, 6), 1.0), modality="MR")
    for date, folder in (("20260110", "scan_a"), ("20260113", "scan_b")):
        (export / folder).mkdir(parents=True)
        study = {"StudyDate": date}
        patient = {"PatientID": "MOUSE7", "PatientName": "mouse^7"}
        write_dicom_series(
            vol,
            export / folder / "s1",
            series_description="T2star MGE",
            modality="MR",
            patient=patient,
            study=study,
            series_number=1,
        )
        write_dicom_series(
            vol.replace(modality="PT", unit="Bq/mL"),
            export / folder / "s2",
            series_description="PET WB",
            modality="PT",
            patient=patient,
            study=study,
            series_number=2,
        )
    # a third series mixed into the first series' folder of the second date (a flat export)
    write_dicom_series(
        vol.replace(data=vol.data * 2),
        tmp_path / "t1",
        series_description="T1 FLASH",
        modality="MR",
        patient={"PatientID": "MOUSE7"},
        study={"StudyDate": "20260113"},
        series_number=3,
    )
    for f in sorted((tmp_path / "t1").iterdir()):
        f.rename(export / "scan_b" / "s1" / f"t1_{f.name}")
    files = discover(export)
    assert {f.subject for f in files} == {"MOUSE7"}
    assert sessions(files) == ["20260110", "20260113"]
    assert sorted((f.session, f.day, f.role, f.modality) for f in files) == [
        ("20260110", 0.0, "PET", "PT"),
        ("20260110", 0.0, "T2starw", "MR"),
        ("20260113", 3.0, "PET", "PT"),
        ("20260113", 3.0, "T1w", "MR"),
        ("20260113", 3.0, "T2starw", "MR"),
    ]
    # in the mixed folder each file picks its own series
    t1 = next(f for f in files if f.role == "T1w")
    t2s = next(f for f in files if f.role == "T2starw" and f.session == "20260113")
    assert t1.path == t2s.path and t1.dicom.get("select_series") and t2s.dicom.get("select_series")
    v1, v2 = load_study_file(t1)[0], load_study_file(t2s)[0]
    np.testing.assert_allclose(v1.numpy(), 2 * v2.numpy())


# --------------------------------------------------------------------------- the study state
def _state(root, path):
    state = new_state(root, path, "01", "day1")
    state["layers"] = [
        {
            "name": "T2starw (day 1)",
            "kind": "image",
            "track": "T2starw",
            "role": "track",
            "session": "day1",
            "source": "sub-01/ses-day1/anat/sub-01_ses-day1_T2starw.nii.gz",
            "colormap": "gray",
            "contrast_limits": [1.0, 2.0],
            "visible": True,
        }
    ]
    state["parameters"] = {"Study": {"link_windows": False}}
    state["view"] = {"ndisplay": 2, "point": [1.0, 2.0, 3.0]}
    return state


def test_state_round_trip_and_overwrite_refused(tmp_path):
    path = tmp_path / STATE_NAME
    state = _state(tmp_path, path)
    save_state(state, path)
    back = load_state(path)
    for key in ("study", "subject", "session", "layers", "parameters", "view", "adjustments"):
        assert back[key] == state[key]
    assert back["study"] == "." and "saved_utc" in back
    # readable: plain indented JSON
    assert path.read_text().startswith("{\n")
    before = path.read_bytes()
    state["session"] = "day3"
    with pytest.raises(OutputExistsError):
        save_state(state, path)
    assert path.read_bytes() == before  # nothing the user saved is overwritten without asking
    save_state(state, path, overwrite=True)
    assert load_state(path)["session"] == "day3"


def _labels_state(root, path, value):
    state = new_state(root, path, "01", "day1")
    data = np.zeros((6, 7, 8), np.uint8)
    data[1:4, 2:5, 3:6] = value
    rel = f"{path.stem}_layers/roi.nii.gz"
    state["layers"].append({"name": "roi", "kind": "labels", "saved": rel})
    return state, {rel: Volume(data, np.diag([0.5, 0.4, 0.3, 1.0]), modality="SEG", unit="label", name="roi")}


def test_labels_are_saved_under_new_names_and_the_old_ones_removed_after_the_switch(tmp_path):
    from napari_immunotrack.io import load_volume

    path = tmp_path / STATE_NAME
    state, labels = _labels_state(tmp_path, path, 3)
    save_state_with_labels(state, path, labels)
    assert state["layers"][0]["saved"].endswith("roi.nii.gz")  # the caller's dictionary is not changed
    first = load_state(path)["layers"][0]
    first_file = tmp_path / first["saved"]
    assert first_file.name.startswith("roi-") and first["sha256"][:12] in first_file.name
    np.testing.assert_array_equal(load_volume(first_file).numpy(), labels[state["layers"][0]["saved"]].numpy())
    assert check_state(load_state(path), path).ok
    folder = saved_layers_dir(path)
    (folder / "my_notes.txt").write_text("mine")  # a file of the user's in that folder is never removed
    (folder / ".roi.draft.nii.gz").write_bytes(b"left by a killed save")
    state2, labels2 = _labels_state(tmp_path, path, 5)
    with pytest.raises(OutputExistsError):
        save_state_with_labels(state2, path, labels2)
    assert load_state(path)["layers"][0] == first and first_file.exists()  # refused: nothing changed
    save_state_with_labels(state2, path, labels2, overwrite=True)
    second = load_state(path)["layers"][0]
    assert second["saved"] != first["saved"] and not first_file.exists()
    assert load_volume(tmp_path / second["saved"]).numpy().max() == 5
    assert sorted(f.name for f in folder.iterdir()) == sorted([Path(second["saved"]).name, "my_notes.txt"])


def test_corrupt_or_foreign_state_file_is_refused_and_left_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "napari-immunotrack study state", "version": 1, "layers": [')
    before = corrupt.read_bytes()
    with pytest.raises(InputError, match="corrupt"):
        load_state(corrupt)
    assert corrupt.read_bytes() == before
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not a napari-immunotrack study state"):
        load_state(foreign)
    damaged = tmp_path / "damaged.json"
    damaged.write_text(
        json.dumps(
            {
                "format": "napari-immunotrack study state",
                "version": 1,
                "study": ".",
                "subject": "01",
                "session": "day1",
                "layers": [{"kind": "image"}],
            }
        )
    )
    with pytest.raises(InputError, match="layer entry 0"):
        load_state(damaged)
    with pytest.raises(InputError, match="does not exist"):
        load_state(tmp_path / "none.json")
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "napari-immunotrack study state", "version": 99}))
    with pytest.raises(InputError, match="update the package"):
        load_state(future)


def test_check_state_lists_moved_and_changed_files(tmp_path):
    from napari_immunotrack.provenance import sha256_path

    root = tmp_path / "study"
    a = _nifti(root / "sub-01" / "ses-day1" / "anat" / "sub-01_ses-day1_T2w.nii.gz", 1.0)
    b = _nifti(root / "sub-01" / "ses-day1" / "mpi" / "sub-01_ses-day1_mpi.nii.gz", 2.0)
    c = _nifti(root / "sub-01" / "ses-day1" / "f19" / "sub-01_ses-day1_19F.nii.gz", 3.0)
    path = root / STATE_NAME
    state = new_state(root, path, "01", "day1")
    for name, f in (("T2w", a), ("MPI", b), ("19F", c)):
        state["layers"].append(
            {"name": name, "kind": "image", "source": f.relative_to(root).as_posix(), "sha256": sha256_path(f)}
        )
    save_state(state, path)
    assert check_state(load_state(path), path).ok
    b.unlink()  # moved away
    _nifti(c, 9.0, overwrite=True)  # rewritten with other values: same name, other content
    check = check_state(load_state(path), path)
    assert check.missing == ["MPI"] and check.changed == ["19F"] and check.root_exists
    message = check.message()
    assert "missing: MPI" in message and "sub-01_ses-day1_mpi.nii.gz" in message and "changed" in message
    # the whole study moved: the state (beside a copy elsewhere) says so and can be pointed at the new place
    moved = tmp_path / "moved"
    root.rename(moved)
    elsewhere = tmp_path / "states" / STATE_NAME
    elsewhere.parent.mkdir()
    state["study"] = "../study"
    save_state(state, elsewhere)
    check = check_state(load_state(elsewhere), elsewhere)
    assert not check.root_exists and "locate it" in check.message()
    relocated = check_state(load_state(elsewhere), elsewhere, root=moved)
    assert relocated.root_exists and relocated.missing == ["MPI"]


# --------------------------------------------------------------------------- the command line, before napari starts
@pytest.mark.parametrize("case", ["missing", "no_images", "corrupt_state", "bad_goto"])
def test_view_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    from napari_immunotrack.cli import main

    if case == "missing":
        argv = ["view", str(tmp_path / "nowhere")]
    elif case == "no_images":
        (tmp_path / "empty" / "sub-01").mkdir(parents=True)
        argv = ["view", str(tmp_path / "empty")]
    elif case == "corrupt_state":
        bad = tmp_path / STATE_NAME
        bad.write_text("{not json")
        argv = ["view", "--state", str(bad)]
    else:
        argv = ["view", "--goto", "1,2"]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("immunotrack view: error:")
    assert list(tmp_path.glob("**/*.part*")) == []
