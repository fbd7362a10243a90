"""The pipeline's `dicom` step (issue 20): organ ROIs as a DICOM SEG on the session's PET series and the PET
readouts as a TID 1500 SR referencing it, written beside the session's tables; read back by highdicom's
classes and by this plugin's readers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import ImmunotrackWarning


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from napari_immunotrack.pipeline import analyse_session
    from napari_immunotrack.session_outputs import write_session_outputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        result = analyse_session(
            sample_study_root(), "day1", baseline_session="day0", steps=("register", "pet", "dicom")
        )
    out = tmp_path_factory.mktemp("dicom_step")
    written = write_session_outputs(result, out, {"step": "test"}, overwrite=False)
    return result, out, {p.name for p in written}


def test_seg_and_sr_are_written_and_read_back(session):
    import highdicom as hd

    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.dicom_export import read_sr

    result, out, names = session
    assert not result.errors, result.errors
    assert {"organs_seg.dcm", "pet_sr.dcm", "pet.csv"} <= names
    seg = hd.seg.segread(out / "organs_seg.dcm")
    pet_dir = sample_study_root() / "sub-01" / "ses-day1" / "pet"
    labels = load_volume(out / "organs_seg.dcm", reference=pet_dir)
    table = pd.read_csv(out / "pet.csv")
    assert set(np.unique(labels.numpy())) - {0} == set(table["label"])  # every organ read is a segment
    assert len(seg.SegmentSequence) == len(table)
    sr = read_sr(out / "pet_sr.dcm")
    merged = table.merge(sr, on="label", suffixes=("", "_sr"))
    for column in ("suv_bw_mean", "percent_id", "mean_bq_ml"):
        assert np.allclose(merged[column], merged[f"{column}_sr"], rtol=1e-12, equal_nan=True), column


def test_the_dicom_step_is_a_pipeline_step_with_its_parameters():
    from napari_immunotrack.batch import parse_pipeline

    pipe = parse_pipeline("steps:\n  pet: {}\n  dicom: {segmentation_type: labelmap}\n")
    assert pipe.steps["dicom"]["segmentation_type"] == "labelmap"
    from napari_immunotrack.errors import InputError

    with pytest.raises(InputError):
        parse_pipeline("steps:\n  dicom: {segmentaton_type: labelmap}\n")
