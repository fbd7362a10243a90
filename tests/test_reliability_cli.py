"""The error policy and "no lost work", checked over every command-line verb.

For every verb (found the way the command line finds them, so a new verb
without cases fails :func:`test_every_verb_has_bad_input_cases`):

- bad input exits with status 2 and exactly one line on standard error,
  ``immunotrack VERB: error: ...``, naming the problem; no traceback; no
  output file (nor temporary file) left, and nothing in the output or input
  folders changed;
- an existing output is never replaced without ``--overwrite``;
- an internal error (a bug) exits with status 1 and one line that mentions
  ``--debug``; ``--debug`` shows the traceback.

Then provenance (every output has its sidecar with input hashes, parameters,
versions and time; ``immunotrack info OUTPUT`` shows it) and killing a study
state save at random points (the reopened state is the previous one or the
new one, complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack import cli
from napari_immunotrack.cli import main
from napari_immunotrack.io import save_labels, save_volume
from napari_immunotrack.volume import Volume

AFF = np.diag([0.5, 0.5, 0.5, 1.0])
SHAPE = (20, 20, 20)
PET_HEADER = {
    "Modality": "PT",
    "Units": "BQML",
    "DecayCorrection": "START",
    "RadionuclideTotalDose": 1e7,
    "RadionuclideHalfLife": 6586.2,
    "PatientWeight": 0.025,
    "SeriesDate": "20240305",
    "SeriesTime": "100000",
    "RadiopharmaceuticalStartTime": "090000",
}


def _pet(folder: Path, name: str, data, **header):
    save_volume(Volume(data.astype(np.float32), AFF, "PT", "Bq/mL"), folder / f"{name}.nii.gz")
    fields = {k: v for k, v in {**PET_HEADER, **header}.items() if v is not None}
    (folder / f"{name}.json").write_text(json.dumps(fields))


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    """Small valid inputs for every verb, and the broken ones the cases need."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    pre = 100 + rng.normal(0, 3, SHAPE)
    post = pre.copy()
    post[5:8, 5:8, 5:8] = 10
    for name, data in (("pre", pre), ("post", post)):
        save_volume(Volume(data.astype(np.float32), AFF, "MR"), d / f"{name}.nii.gz")
    t1pre, t2pre = 100 + rng.normal(0, 2, SHAPE), 100 + rng.normal(0, 2, SHAPE)
    t1post, t2post = t1pre.copy(), t2pre.copy()
    t1post[5:8, 5:8, 5:8] *= 1.8
    t2post[5:8, 5:8, 5:8] *= 0.4
    for name, data in (("t1pre", t1pre), ("t2pre", t2pre), ("t1post", t1post), ("t2post", t2post)):
        save_volume(Volume(data.astype(np.float32), AFF, "MR"), d / f"{name}.nii.gz")
    ref = np.zeros(SHAPE, np.uint8)
    ref[12:18, 12:18, 12:18] = 1
    save_labels(Volume(ref, AFF), d / "ref.nii.gz")
    roi = np.zeros(SHAPE, np.uint8)
    roi[4:9, 4:9, 4:9] = 1
    roi[12:16, 4:8, 4:8] = 2
    save_labels(Volume(roi, AFF), d / "roi.nii.gz")
    air = np.zeros(SHAPE, np.uint8)
    air[0:3] = 1
    save_labels(Volume(air, AFF), d / "air.nii.gz")
    save_labels(Volume(np.zeros(SHAPE, np.uint8), AFF), d / "empty_mask.nii.gz")
    floaty = np.zeros(SHAPE, np.float32)
    floaty[4:9, 4:9, 4:9] = 1.5
    save_volume(Volume(floaty, AFF), d / "float_labels.nii.gz")
    save_volume(Volume(pre[:10].astype(np.float32), AFF), d / "other_grid.nii.gz")
    save_volume(Volume(np.full(SHAPE, np.nan, np.float32), AFF), d / "all_nan.nii.gz")
    nan = pre.astype(np.float32)
    nan[2:4, 2:4, 2:4] = np.nan
    save_volume(Volume(nan, AFF), d / "some_nan.nii.gz")
    save_volume(Volume(np.stack([pre, pre]).astype(np.float32), AFF), d / "frames.nii.gz")
    whole = (d / "pre.nii.gz").read_bytes()
    (d / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    (d / "not_nifti.nii").write_bytes(b"this is a text file, exported by mistake\n" * 20)
    # PET/SPECT (NIfTI + JSON sidecar of DICOM fields), and headers typed wrong at the scanner
    act = 1000 + 10 * rng.random(SHAPE)
    act[4:9, 4:9, 4:9] = 5000
    _pet(d, "pet", act)
    _pet(d, "pet_no_units", act, Units=None)
    _pet(d, "pet_weight_0", act, PatientWeight=0)
    _pet(d, "pet_dose_0", act, RadionuclideTotalDose=0)
    _pet(
        d,
        "pet_injected_after_scan",
        act,
        RadiopharmaceuticalStartDateTime="20240305110000",
        RadiopharmaceuticalStartTime="110000",
    )
    # 19F: a reference tube and a depot over Rician noise
    f = rng.rayleigh(10, SHAPE)
    f[12:18, 12:18, 12:18] = 200
    f[4:9, 4:9, 4:9] = 150
    save_volume(Volume(f.astype(np.float32), AFF, "F19"), d / "f19.nii.gz")
    # MPI: two fiducials (100 and 500 ng at 10 units per ng) and a depot
    m = np.zeros(SHAPE)
    m[2, 2, 2], m[2, 2, 17], m[6, 6, 6] = 1000, 5000, 300
    save_volume(Volume(m.astype(np.float32), AFF, "MPI"), d / "mpi.nii.gz")
    fid = pd.DataFrame(
        {"x_mm": [1.0, 1.0], "y_mm": [1.0, 1.0], "z_mm": [1.0, 8.5], "iron_ng": [100.0, 500.0], "radius_mm": [1.5, 1.5]}
    )
    fid.to_csv(d / "fiducials.csv", index=False)
    fid.iloc[:1].to_csv(d / "one_fiducial.csv", index=False)
    fid.rename(columns={"iron_ng": "iron"}).to_csv(d / "fiducials_no_iron.csv", index=False)
    # landmarks (world RAS mm) for register
    pts = pd.DataFrame(rng.normal(0, 5, (6, 3)), columns=["x_mm", "y_mm", "z_mm"])
    pts.to_csv(d / "points.csv", index=False)
    (pts + [1.0, -2.0, 0.5]).to_csv(d / "points_moved.csv", index=False)
    pts.iloc[:2].to_csv(d / "two_points.csv", index=False)
    pts.rename(columns={"x_mm": "x"}).to_csv(d / "points_no_x.csv", index=False)
    np.savetxt(d / "identity.txt", np.eye(4))
    (d / "singular.txt").write_text("1 0 0 0\n0 0 0 0\n0 0 1 0\n0 0 0 1\n")
    # folders for the study-level verbs
    (d / "empty_folder").mkdir()
    (d / "not_simulated").mkdir()
    (d / "not_simulated" / "sub-01").mkdir()
    cohort = d / "cohort" / "sub-01" / "ses-day1" / "anat"
    cohort.mkdir(parents=True)
    save_volume(Volume(post.astype(np.float32), AFF, "MR"), cohort / "sub-01_ses-day1_T2starw.nii.gz")
    (d / "broken.yaml").write_text("steps: [\n")
    (d / "unknown_step.yaml").write_text("steps:\n  bogus: {}\n")
    (d / "typo.yaml").write_text("steps:\n  clusters: {thresold: 0.5}\n")
    (d / "pipeline.yaml").write_text("steps:\n  clusters: {method: fraction}\n")
    (d / "counts_wrong.csv").write_text("x,y\n1,2\n")
    (d / "earlier_shot.png").write_bytes(b"\x89PNG a screenshot the user keeps")
    (d / "broken_state.json").write_text('{"format": "napari-immunotrack study state", "version": 1, "layers": [')
    (d / "fake_simulated").mkdir()  # passes demo's first check (a simulated study has ground_truth.json)
    (d / "fake_simulated" / "ground_truth.json").write_text("{}")
    cest_offsets = [-300.0, -2.0, -1.0, 0.0, 1.0, 2.0]  # a tiny CEST series, offsets in its sidecar
    zspec = 1 - 0.9 / (1 + (np.array(cest_offsets) / 0.8) ** 2)
    save_volume(
        Volume((100 * zspec[:, None, None, None] * np.ones((1, 4, 4, 4))).astype(np.float32), AFF, "MR"),
        d / "cest.nii.gz",
    )
    (d / "cest.json").write_text(json.dumps({"SaturationOffsetsPPM": cest_offsets}))
    # a 3-echo gradient-echo series (T2* 20 ms) for relax, and a DICOM series for export
    echoes = np.stack([pre * np.exp(-te / 20.0) for te in (3.0, 6.0, 9.0)]).astype(np.float32)
    save_volume(Volume(echoes, AFF, "MR"), d / "megre.nii.gz")
    from napari_immunotrack.io.dicom import write_dicom_series

    write_dicom_series(Volume(pre.astype(np.float32), AFF, "MR"), d / "dicom_mr", modality="MR")
    return d


def _snapshot(*folders: Path) -> dict:
    """Every file (hidden temporaries included) with its content hash."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[str(p)] = "folder"
    return out


def _run(argv, inp: Path, out: Path):
    args = [a.format(i=inp, o=out) for a in argv]
    return args, main(args)


# ------------------------------------------------------------------------ bad input, every verb
#: verb -> [(arguments with {i} the inputs folder and {o} the output folder, what the one line must say)]
BAD = {
    "movie": [
        (["{i}/empty_folder", "-o", "{o}/m.gif"], "holds no images"),
        (["{i}/cohort", "-o", "{o}/m.txt"], ".mp4 or .gif"),
        (["{i}/cohort", "-o", "{o}/m.gif", "--size", "10x10"], "even numbers"),
        (["{i}/cohort", "-o", "{o}/m.gif", "--fps", "abc"], "must be a number"),
    ],
    "relax": [
        (["{i}/pre.nii.gz", "--model", "t2star", "-o", "{o}/m.nii.gz"], "single 3D volume"),
        (["{i}/frames.nii.gz", "--model", "t2star", "-o", "{o}/m.nii.gz"], "--echo-times-ms"),
        (["{i}/frames.nii.gz", "--model", "t2star", "--echo-times-ms", "5,3", "-o", "{o}/m.nii.gz"], "do not increase"),
        (
            ["{i}/frames.nii.gz", "--model", "t2star", "--echo-times-ms", "3,6,9", "-o", "{o}/m.nii.gz"],
            "one value per volume",
        ),
    ],
    "export": [
        (["{i}/roi.nii.gz", "--source", "{i}/pre.nii.gz", "--seg", "{o}/s.dcm"], "is not a DICOM series"),
        (
            ["{i}/roi.nii.gz", "--source", "{i}/dicom_mr", "--seg", "{o}/s.dcm", "--table", "{i}/counts_wrong.csv"],
            "go together",
        ),
        (["{i}/empty_mask.nii.gz", "--source", "{i}/dicom_mr", "--seg", "{o}/s.dcm"], "no label"),
    ],
    "align": [
        (["{i}/empty_folder"], "holds no images"),
        (["{i}/cohort", "--reference", "day9"], "no session"),
    ],
    "cest": [
        (["{i}/pre.nii.gz", "-o", "{o}/c"], "is a 3D image"),
        (["{i}/cest.nii.gz", "--offsets-ppm", "1,2,3", "-o", "{o}/c"], "has 3 offsets"),
        (["{i}/cest.nii.gz", "--offsets-ppm", "-3,-2,-1,0,1,2", "-o", "{o}/c"], "no M0 reference"),
        (["{i}/cest.nii.gz", "-o", "{o}/c", "--pool", "lrp"], "NAME:PPM"),
    ],
    "info": [
        (["{i}/missing.nii.gz"], "does not exist"),
        (["{i}/truncated.nii.gz"], "truncated"),
        (["{i}/not_nifti.nii"], "not a readable nifti"),
        (["{i}/fiducials.csv"], "unknown image format"),
        (["{i}/pet.nii.gz", "--voxel-size", "abc"], "invalid float value"),
    ],
    "register": [
        (["{i}/pre.nii.gz", "{i}/missing.nii.gz", "-o", "{o}/t.tfm"], "does not exist"),
        (["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.json"], "must end in .tfm"),
        (["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/no_folder/t.tfm"], "does not exist"),
        (["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm", "--resampled", "{o}/t.tfm"], "resampled"),
        (
            ["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm", "--fixed-points", "{i}/points.csv"],
            "--moving-points",
        ),
        (
            [
                "{i}/pre.nii.gz",
                "{i}/post.nii.gz",
                "-o",
                "{o}/t.tfm",
                "--fixed-points",
                "{i}/two_points.csv",
                "--moving-points",
                "{i}/two_points.csv",
            ],
            "at least 3",
        ),
        (
            [
                "{i}/pre.nii.gz",
                "{i}/post.nii.gz",
                "-o",
                "{o}/t.tfm",
                "--fixed-points",
                "{i}/points_no_x.csv",
                "--moving-points",
                "{i}/points.csv",
            ],
            "x_mm",
        ),
        (["{i}/frames.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm"], "4 dimensions"),
        (["{i}/all_nan.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm"], "no finite value"),
        (["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm", "--bins", "4"], "bins"),
        (["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm", "--transform", "spline"], "invalid choice"),
    ],
    "segment": [
        (["{i}/missing.nii.gz", "-o", "{o}/c.nii.gz"], "does not exist"),
        (["{i}/post.nii.gz", "-o", "{o}/c.csv"], "must be nifti"),
        (["{i}/truncated.nii.gz", "-o", "{o}/c.nii.gz"], "truncated"),
        (["{i}/all_nan.nii.gz", "-o", "{o}/c.nii.gz"], "no finite voxel"),
        (["{i}/frames.nii.gz", "-o", "{o}/c.nii.gz"], "4 dimensions"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--reference-mask", "{i}/empty_mask.nii.gz"], "empty"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--baseline", "{i}/other_grid.nii.gz"], "grid"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--baseline-transform", "identity"], "without --baseline"),
        (
            [
                "{i}/post.nii.gz",
                "-o",
                "{o}/c.nii.gz",
                "--baseline",
                "{i}/pre.nii.gz",
                "--baseline-transform",
                "{i}/fiducials.csv",
            ],
            "cannot be read as a transform",
        ),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--threshold", "nan"], "not a finite number"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--threshold", "abc"], "not a number"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--min-size", "0"], "at least 1"),
        (["{i}/post.nii.gz", "-o", "{o}/c.nii.gz", "--table", "{o}/c.nii.gz"], "must be a .csv"),
    ],
    "confirm": [
        (["--t1", "{i}/t1post.nii.gz", "--t2", "{i}/missing.nii.gz", "-o", "{o}/c.nii.gz"], "does not exist"),
        (
            ["--t1", "{i}/t1post.nii.gz", "--t2", "{i}/t2post.nii.gz", "-o", "{o}/c.nii.gz", "--table", "{o}/c.txt"],
            "must be a .csv",
        ),
        (["--t1", "{i}/t1post.nii.gz", "--t2", "{i}/other_grid.nii.gz", "-o", "{o}/c.nii.gz"], "grid"),
        (["--t1", "{i}/all_nan.nii.gz", "--t2", "{i}/t2post.nii.gz", "-o", "{o}/c.nii.gz"], "no finite values"),
        (["--t1", "{i}/frames.nii.gz", "--t2", "{i}/t2post.nii.gz", "-o", "{o}/c.nii.gz"], "4 dimensions"),
        (
            [
                "--t1",
                "{i}/t1post.nii.gz",
                "--t2",
                "{i}/t2post.nii.gz",
                "-o",
                "{o}/c.nii.gz",
                "--t1-map-pre",
                "{i}/t1pre.nii.gz",
            ],
            "in pairs",
        ),
        (
            [
                "--t1",
                "{i}/t1post.nii.gz",
                "--t2",
                "{i}/t2post.nii.gz",
                "-o",
                "{o}/c.nii.gz",
                "--search-mask",
                "{i}/empty_mask.nii.gz",
            ],
            "empty",
        ),
        (
            ["--t1", "{i}/t1post.nii.gz", "--t2", "{i}/t2post.nii.gz", "-o", "{o}/c.nii.gz", "--t1-threshold", "2"],
            "between 0 and 1",
        ),
    ],
    "quantify": [
        (["{i}/pet.nii.gz", "--roi", "{i}/missing.nii.gz", "-o", "{o}/p.csv"], "does not exist"),
        (["{i}/pet.nii.gz", "--roi", "{i}/float_labels.nii.gz", "-o", "{o}/p.csv"], "non-integer"),
        (["{i}/pet.nii.gz", "--roi", "{i}/empty_mask.nii.gz", "-o", "{o}/p.csv"], "empty"),
        (["{i}/pet_no_units.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], "no units"),
        (["{i}/pet_weight_0.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], "weight"),
        (["{i}/pet_dose_0.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], "injected dose"),
        (["{i}/pet_injected_after_scan.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], "after the scan"),
        (["{i}/frames.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], "--frames"),
        (["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv", "--suv", "abc"], "--suv"),
        (["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv", "--dose-mbq", "-5"], "--dose-mbq"),
        (["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv", "--injection-time", "noon"], "noon"),
        (["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv", "--labels", "7"], "not in the roi"),
        (
            ["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv", "--transform", "{i}/singular.txt"],
            "transform",
        ),
    ],
    "fluorine": [
        (
            [
                "{i}/missing.nii.gz",
                "--reference-mask",
                "{i}/ref.nii.gz",
                "--reference-concentration",
                "50",
                "--roi",
                "{i}/roi.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
            ],
            "does not exist",
        ),
        (
            [
                "{i}/f19.nii.gz",
                "--reference-mask",
                "{i}/ref.nii.gz",
                "--reference-concentration",
                "0",
                "--roi",
                "{i}/roi.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
            ],
            "greater than 0",
        ),
        (
            [
                "{i}/f19.nii.gz",
                "--reference-mask",
                "{i}/empty_mask.nii.gz",
                "--reference-concentration",
                "50",
                "--roi",
                "{i}/roi.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
            ],
            "empty",
        ),
        (
            [
                "{i}/some_nan.nii.gz",
                "--reference-mask",
                "{i}/ref.nii.gz",
                "--reference-concentration",
                "50",
                "--roi",
                "{i}/roi.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
            ],
            "nan",
        ),
        (
            [
                "{i}/f19.nii.gz",
                "--reference-mask",
                "{i}/ref.nii.gz",
                "--reference-concentration",
                "50",
                "--roi",
                "{i}/float_labels.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
            ],
            "non-integer",
        ),
        (
            [
                "{i}/f19.nii.gz",
                "--reference-mask",
                "{i}/ref.nii.gz",
                "--reference-concentration",
                "50",
                "--roi",
                "{i}/roi.nii.gz",
                "--fluorine-per-cell",
                "1e12",
                "-o",
                "{o}/f.csv",
                "--connectivity",
                "7",
            ],
            "6, 18 or 26",
        ),
    ],
    "mpi": [
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/missing.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "-o",
                "{o}/m.csv",
            ],
            "does not exist",
        ),
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/fiducials_no_iron.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "-o",
                "{o}/m.csv",
            ],
            "iron_ng",
        ),
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/one_fiducial.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "-o",
                "{o}/m.csv",
            ],
            "at least 2",
        ),
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/roi.nii.gz",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "-o",
                "{o}/m.csv",
            ],
            "not a readable csv",
        ),
        (
            [
                "{i}/some_nan.nii.gz",
                "--fiducials",
                "{i}/fiducials.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "-o",
                "{o}/m.csv",
            ],
            "nan",
        ),
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/fiducials.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "abc",
                "-o",
                "{o}/m.csv",
            ],
            "must be a number",
        ),
        (
            [
                "{i}/mpi.nii.gz",
                "--fiducials",
                "{i}/fiducials.csv",
                "--roi",
                "{i}/roi.nii.gz",
                "--iron-per-cell",
                "5",
                "--background",
                "abc",
                "-o",
                "{o}/m.csv",
            ],
            "--background",
        ),
    ],
    "demo": [
        (["{i}/not_simulated", "-o", "{o}/demo"], "ground_truth.json"),
        (["{i}/missing_study", "-o", "{o}/demo"], "ground_truth.json"),
    ],
    "view": [  # all refused before a window opens
        (["{i}/missing_study"], "does not exist"),
        (["{i}/empty_folder"], "holds no images"),
        (["{i}/broken_state.json"], "corrupt"),
        (["{i}/cohort", "--goto", "1,2"], "three numbers"),
        (["{i}/cohort", "--screenshot", "{o}/shot.jpg"], ".png"),
        (["{i}/cohort", "--screenshot", "{i}/earlier_shot.png"], "already exists"),
    ],
    "batch": [
        (["{i}/missing.yaml", "{i}/cohort", "-o", "{o}/b"], "does not exist"),
        (["{i}/broken.yaml", "{i}/cohort", "-o", "{o}/b"], "not valid yaml"),
        (["{i}/unknown_step.yaml", "{i}/cohort", "-o", "{o}/b"], "unknown step"),
        (["{i}/typo.yaml", "{i}/cohort", "-o", "{o}/b"], "did you mean 'threshold'"),
        (["{i}/pipeline.yaml", "{i}/empty_folder", "-o", "{o}/b"], "no subject folder"),
        (["{i}/pipeline.yaml", "{i}/cohort", "-o", "{o}/b", "--workers", "0"], "at least 1"),
    ],
    "report": [
        (["{i}/missing_study", "-o", "{o}/r"], "does not exist"),
        (["{i}/empty_folder", "-o", "{o}/r"], "holds no images"),
        (["{i}/cohort", "-o", "{o}/r", "--dpi", "5000"], "too large"),
        (["{i}/cohort", "-o", "{o}/r", "--cell-counts", "{i}/counts_wrong.csv"], "site, day, cells"),
        (["{i}/cohort", "-o", "{o}/r", "--efflux", "abc"], "readout=rate"),
    ],
}

#: cases that show a known bug (reported to the lead); strict, so a fix turns them red until removed
KNOWN_BUGS: dict = {}

CASES = [
    pytest.param(
        verb,
        k,
        args,
        expect,
        id=f"{verb}-{k}",
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(verb, k)])] if (verb, k) in KNOWN_BUGS else [],
    )
    for verb, cases in BAD.items()
    for k, (args, expect) in enumerate(cases)
]


def test_every_verb_has_bad_input_cases():
    verbs = {name for name, _ in cli._verb_modules()}
    assert verbs == set(BAD), f"verbs without bad-input cases: {sorted(verbs - set(BAD))}"
    assert all(len(cases) >= 2 for cases in BAD.values())


@pytest.mark.parametrize("verb, k, args, expect", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(inp, tmp_path, capsys, verb, k, args, expect):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(out, inp)
    argv, rc = _run([verb, *args], inp, out)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (argv, captured.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"immunotrack {verb}: error: "), lines[0]
    assert expect.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(out, inp) == before  # no output, no temporary file, inputs untouched


def test_unknown_verb_and_option_are_one_line(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["info", "x.nii.gz", "--frobnicate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "invalid choice" in lines[0] and "--frobnicate" in lines[1]
    assert all(line.startswith("immunotrack") and "--help" in line for line in lines)
    assert main(["--version"]) == 0 and main(["segment", "--help"]) == 0


# ------------------------------------------------------------------------ existing outputs
#: verb -> (arguments of a run that would succeed, the outputs it would write)
GOOD = {
    "movie": (["{i}/cohort", "-o", "{o}/m.gif", "--track", "T2starw", "--size", "320x240"], ["m.gif"]),
    "relax": (
        ["{i}/megre.nii.gz", "--model", "t2star", "--echo-times-ms", "3,6,9", "-o", "{o}/m.nii.gz"],
        ["m.nii.gz", "m_R2star.nii.gz", "m_unreliable.nii.gz"],
    ),
    "export": (["{i}/roi.nii.gz", "--source", "{i}/dicom_mr", "--seg", "{o}/s.dcm"], ["s.dcm"]),
    "register": (
        [
            "{i}/pre.nii.gz",
            "{i}/post.nii.gz",
            "-o",
            "{o}/t.tfm",
            "--fixed-points",
            "{i}/points.csv",
            "--moving-points",
            "{i}/points_moved.csv",
        ],
        ["t.tfm"],
    ),
    "segment": (
        [
            "{i}/post.nii.gz",
            "--baseline",
            "{i}/pre.nii.gz",
            "--reference-mask",
            "{i}/ref.nii.gz",
            "--background-mask",
            "{i}/air.nii.gz",
            "-o",
            "{o}/c.nii.gz",
            "--table",
            "{o}/c.csv",
        ],
        ["c.nii.gz", "c.csv"],
    ),
    "confirm": (
        [
            "--t1",
            "{i}/t1post.nii.gz",
            "--t2",
            "{i}/t2post.nii.gz",
            "--t1-pre",
            "{i}/t1pre.nii.gz",
            "--t2-pre",
            "{i}/t2pre.nii.gz",
            "-o",
            "{o}/c.nii.gz",
            "--table",
            "{o}/c.csv",
            "--maps-prefix",
            "{o}/maps",
        ],
        ["c.nii.gz", "c.csv", "maps_t1_change.nii.gz", "maps_t2_change.nii.gz"],
    ),
    "quantify": (["{i}/pet.nii.gz", "--roi", "{i}/roi.nii.gz", "-o", "{o}/p.csv"], ["p.csv"]),
    "fluorine": (
        [
            "{i}/f19.nii.gz",
            "--reference-mask",
            "{i}/ref.nii.gz",
            "--reference-concentration",
            "50",
            "--roi",
            "{i}/roi.nii.gz",
            "--fluorine-per-cell",
            "1e12",
            "--noise-mask",
            "{i}/air.nii.gz",
            "-o",
            "{o}/f.csv",
        ],
        ["f.csv"],
    ),
    "mpi": (
        [
            "{i}/mpi.nii.gz",
            "--fiducials",
            "{i}/fiducials.csv",
            "--roi",
            "{i}/roi.nii.gz",
            "--iron-per-cell",
            "5",
            "--background",
            "0",
            "-o",
            "{o}/m.csv",
        ],
        ["m.csv"],
    ),
}
#: verbs whose output is a folder: refused when it exists and is not empty
FOLDER_OUTPUT = {
    "cest": ["{i}/cest.nii.gz", "-o", "{o}"],
    "demo": ["{i}/not_simulated", "-o", "{o}"],
    "batch": ["{i}/pipeline.yaml", "{i}/cohort", "-o", "{o}"],
    "report": ["{i}/cohort", "-o", "{o}"],
}


def test_every_verb_with_outputs_is_checked_for_overwrites():
    verbs = {name for name, _ in cli._verb_modules()}
    # align writes into the study's xfm/ folders: reuse and refusal without --overwrite are in test_alignment.py
    assert verbs == set(GOOD) | set(FOLDER_OUTPUT) | {"info", "view", "align"}


@pytest.mark.parametrize("verb", sorted(GOOD))
@pytest.mark.parametrize("which", [0, -1])
def test_existing_output_is_kept_without_overwrite(inp, tmp_path, capsys, verb, which):
    """Any one of a verb's outputs existing stops the run before any work: nothing is written."""
    args, outputs = GOOD[verb]
    (tmp_path / outputs[which]).write_text("hours of work\n")
    before = _snapshot(tmp_path)
    _, rc = _run([verb, *args], inp, tmp_path)
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "already exists" in lines[0] and "--overwrite" in lines[0], lines
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("verb", sorted(FOLDER_OUTPUT))
def test_existing_output_folder_is_kept_without_overwrite(inp, tmp_path, capsys, verb):
    (tmp_path / "notes.txt").write_text("hours of work\n")
    before = _snapshot(tmp_path)
    _, rc = _run([verb, *FOLDER_OUTPUT[verb]], inp, tmp_path)
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    if verb != "demo":  # demo checks its study first (that error is as good)
        assert "--overwrite" in lines[0]
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("verb", sorted(GOOD))
def test_outputs_have_provenance_and_overwrite_replaces(inp, tmp_path, capsys, verb):
    """A good run writes each output with its sidecar (input hashes, parameters, versions, time); `info`
    shows where it came from; a second run needs --overwrite and then replaces every output."""
    args, outputs = GOOD[verb]
    _, rc = _run([verb, *args], inp, tmp_path)
    assert rc == 0, capsys.readouterr().err
    for name in outputs:
        path = tmp_path / name
        assert path.is_file(), name
        prov = json.loads((tmp_path / f"{name}.provenance.json").read_text())
        assert prov["step"] == verb and prov["time_utc"] and prov["software"]["numpy"] == np.__version__
        assert prov["parameters"]
        files = [e for e in prov["inputs"].values() if "path" in e]
        from napari_immunotrack.provenance import sha256_path  # files, and folders (a DICOM series)

        assert files and all(sha256_path(e["path"]) == e["sha256"] for e in files)
    capsys.readouterr()
    assert main(["info", str(tmp_path / outputs[0])]) == 0
    shown = capsys.readouterr().out
    assert f"step: {verb}" in shown and files[0]["sha256"][:16] in shown
    first = _snapshot(tmp_path)
    _, rc = _run([verb, *args], inp, tmp_path)
    assert rc == 2 and _snapshot(tmp_path) == first
    _, rc = _run([verb, *args, "--overwrite"], inp, tmp_path)
    assert rc == 0
    again = _snapshot(tmp_path)
    for name in outputs:  # the sidecars are new (their time and hashes of the run)
        assert str(tmp_path / f"{name}.provenance.json") in again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ------------------------------------------------------------------------ internal errors
#: verb -> (module attribute the verb calls, arguments reaching it)
INTERNAL = {
    "movie": ("napari_immunotrack.movie.make_movie", GOOD["movie"][0]),
    "relax": ("napari_immunotrack.analysis.relaxometry.fit_relaxation", GOOD["relax"][0]),
    "export": ("napari_immunotrack.io.dicom_export.build_seg", GOOD["export"][0]),
    "align": ("napari_immunotrack.alignment.align_study", ["{i}/cohort"]),
    "cest": ("napari_immunotrack.analysis.cest.analyse_cest", ["{i}/cest.nii.gz", "-o", "{o}/c"]),
    "info": ("napari_immunotrack.io.load_volumes", ["{i}/pre.nii.gz"]),
    "register": ("napari_immunotrack.registration.register", ["{i}/pre.nii.gz", "{i}/post.nii.gz", "-o", "{o}/t.tfm"]),
    "segment": ("napari_immunotrack.analysis.clusters.segment_clusters", GOOD["segment"][0]),
    "confirm": ("napari_immunotrack.analysis.confirm.confirm_dual_mode", GOOD["confirm"][0]),
    "quantify": ("napari_immunotrack.analysis.pet.quantify_pet", GOOD["quantify"][0]),
    "fluorine": ("napari_immunotrack.analysis.fluorine.fluorine_cells", GOOD["fluorine"][0]),
    "mpi": ("napari_immunotrack.analysis.mpi.mpi_iron", GOOD["mpi"][0]),
    "demo": ("napari_immunotrack.pipeline.analyse_session", ["{i}/fake_simulated", "-o", "{o}/demo"]),
    "view": ("napari_immunotrack.commands.view.open_viewer", ["{i}/cohort"]),
    "batch": ("napari_immunotrack.batch.run_batch", ["{i}/pipeline.yaml", "{i}/cohort", "-o", "{o}/b"]),
    "report": ("napari_immunotrack.report.build_report", ["{i}/cohort", "-o", "{o}/r"]),
}


def test_every_verb_has_an_internal_error_case():
    assert {name for name, _ in cli._verb_modules()} == set(INTERNAL)


def _break(monkeypatch, target: str):
    import importlib

    module, name = target.rsplit(".", 1)

    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(importlib.import_module(module), name, boom)


@pytest.mark.parametrize("verb", sorted(INTERNAL))
def test_internal_error_exits_1_with_one_line_and_debug_shows_it(inp, tmp_path, capsys, monkeypatch, verb):
    target, args = INTERNAL[verb]
    _break(monkeypatch, target)
    before = _snapshot(tmp_path)
    _, rc = _run([verb, *args], inp, tmp_path)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 1, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"immunotrack {verb}: internal error: ZeroDivisionError"), lines
    assert "--debug" in lines[0] and "Traceback" not in captured.err
    files = {k: v for k, v in _snapshot(tmp_path).items() if v != "folder"}
    assert files == before  # no file written (demo leaves its empty output folder: harmless)
    with pytest.raises(ZeroDivisionError, match="deep inside"):  # --debug: the traceback, not the one line
        _run([verb, "--debug", *args], inp, tmp_path)


def test_debug_prints_the_traceback_in_a_real_process(inp, tmp_path):
    code = textwrap.dedent("""
        import sys
        import napari_immunotrack.io as io
        def boom(*a, **k):
            raise ZeroDivisionError("a bug deep inside")
        io.load_volumes = boom
        from napari_immunotrack.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    plain = subprocess.run(
        [sys.executable, "-c", code, "info", str(inp / "pre.nii.gz")], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1 and "--debug" in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-c", code, "--debug", "info", str(inp / "pre.nii.gz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ZeroDivisionError: a bug deep inside" in debug.stderr


def test_out_of_memory_and_broken_pipe_are_one_line(inp, capsys, monkeypatch):
    import napari_immunotrack.io as io

    def huge(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(io, "load_volumes", huge)
    assert main(["info", str(inp / "pre.nii.gz")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "out of memory" in lines[0]
    # `immunotrack info x | head -0`: the reader of the pipe left before the output; no "internal error"
    proc = subprocess.run(
        f"'{sys.executable}' -m napari_immunotrack.cli info '{inp / 'pre.nii.gz'}' | head -0",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stderr == "", proc.stderr


# ------------------------------------------------------------------------ killing a study-state save
_STATE_CHILD = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    import numpy as np
    from napari_immunotrack.volume import Volume
    from napari_immunotrack import study

    def generation(g, root, path):
        state = study.new_state(root, path, "01", "day1")
        state["parameters"] = {"generation": g, "threshold": 0.5 + g}
        labels = {}
        for k in range(3):
            data = np.zeros((16, 16, 16), np.uint8)
            data[k:k + 4 + g % 5, 2:9, 3:11] = 1 + (g + k) % 200
            rel = f"{Path(path).stem}_layers/roi{k}.nii.gz"
            labels[rel] = Volume(data, np.diag([0.5, 0.5, 0.5, 1.0]), modality="SEG", unit="label", name=f"roi{k}")
            state["layers"].append({"name": f"roi{k}", "kind": "labels", "saved": rel, "modality": "SEG"})
        state["layers"].append({"name": "rois", "kind": "shapes", "data": [[[g, 1.0, 2.0], [g, 3.0, 4.0]]]})
        return state, labels

    def save(g, root, path, mode):
        state, labels = generation(g, root, path)
        if mode == "json":
            study.save_state(state, path, overwrite=True)
            return
        # the plugin's own save: StudyWidget.save_state on a stand-in for the widget
        from napari_immunotrack.widgets.study import StudyWidget
        widget = types.SimpleNamespace(study=types.SimpleNamespace(root=Path(root)), state_path=None,
                                       viewer=types.SimpleNamespace(layers={}),
                                       current_state=lambda p: (state, labels), ask=lambda *a: True,
                                       _tell=lambda *a, **k: None)
        StudyWidget.save_state(widget, path, overwrite=True)

    if __name__ == "__main__":
        root, path, mode, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        if first == 0:
            save(0, root, path, mode)
            sys.exit(0)
        if mode == "labels":
            from napari_immunotrack.widgets.study import StudyWidget  # imported before the clock starts
            from napari_immunotrack.io import nifti  # noqa: F401
        print("ready", flush=True)
        g = first
        while True:
            save(g, root, path, mode)
            print(g, flush=True)
            g += 1
""")


def _check_reopened(root: Path, path: Path, child: Path, mode: str) -> int:
    """The generation the saved state holds, after checking it is complete and consistent."""
    sys.path.insert(0, str(child.parent))
    try:
        import importlib

        helper = importlib.import_module(child.stem)
    finally:
        sys.path.remove(str(child.parent))
    from napari_immunotrack import study
    from napari_immunotrack.io import load_volume

    state = study.load_state(path)  # never half a JSON file
    g = state["parameters"]["generation"]
    expected, labels = helper.generation(g, root, path)
    assert state["parameters"] == expected["parameters"] and state["layers"][-1] == expected["layers"][-1]
    if mode == "labels":
        check = study.check_state(state, path)
        assert check.ok, check.message()  # every label file is the one this state was saved with
        saved = {e["name"]: e["saved"] for e in state["layers"] if e.get("saved")}
        assert sorted(saved) == sorted(v.name for v in labels.values())
        for volume in labels.values():  # the files this state names hold this generation's labels
            assert np.array_equal(load_volume(path.parent / saved[volume.name]).numpy(), volume.numpy()), g
        # no file of an older generation is left behind, except what a kill mid-save may leave until next save
        kept = [f for f in study.saved_layers_dir(path).glob("*.nii.gz") if not f.name.startswith(".")]
        assert len(kept) <= 2 * len(labels), kept
    return g


@pytest.mark.parametrize(
    "mode",
    [
        "json",
        "labels",
    ],
)
def test_killing_a_state_save_leaves_the_previous_or_the_new_state(tmp_path, mode):
    root = tmp_path / "study"
    root.mkdir()
    child = tmp_path / "state_child.py"
    child.write_text(_STATE_CHILD)
    path = root / "immunotrack_state.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, str(child), str(root), str(path), mode, "0"], check=True, env=env, timeout=120)
    assert _check_reopened(root, path, child, mode) == 0
    rng = np.random.default_rng(12)
    saves = []
    first = 1
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(child), str(root), str(path), mode, str(first)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))  # a random point in one of the saves
        proc.send_signal(signal.SIGKILL)
        done = [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        g = _check_reopened(root, path, child, mode)
        last = done[-1] if done else first - 1
        assert g in (last, last + 1), (g, last)  # the last finished save, or the one being written
        saves.append(len(done))
        first = max(g, last) + 1
    assert sum(saves) >= 6, saves  # the kills did land during a run of saves


@pytest.mark.parametrize(
    "code, expect", [(13, "cannot write in"), (30, "cannot write in"), (28, "no space left while writing in")]
)
def test_an_unwritable_or_full_output_folder_is_bad_input_not_a_bug(inp, tmp_path, capsys, monkeypatch, code, expect):
    import napari_immunotrack.outputs as outputs

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / ".clusters.nii.gz.x1.part.nii.gz"))

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)  # what a read-only or full disk does
    rc = main(["segment", str(inp / "post.nii.gz"), "-o", str(tmp_path / "clusters.nii.gz")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert f"immunotrack segment: error: {expect} {tmp_path}" in lines[-1] and "Traceback" not in lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_write_permission_is_refused_before_any_work(inp, tmp_path, capsys, monkeypatch):
    import napari_immunotrack.outputs as outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)  # root ignores chmod: ask os.access
    rc = main(["segment", str(inp / "post.nii.gz"), "-o", str(tmp_path / "clusters.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"cannot write in {tmp_path}" in err[0]
