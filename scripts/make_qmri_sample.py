#!/usr/bin/env python
"""Add the quantitative-MRI sample series to the bundled study (deterministic; existing files untouched).

    python scripts/make_qmri_sample.py            # writes sample_data/mouse_study/qmri (refuses to replace it)
    python scripts/make_qmri_sample.py --overwrite

What and why:

- The mouse, its tissues and its day-1 labelled-cell foci are those of the sample
  study (seed 2024, :func:`napari_immunotrack.simulate.relaxometry.qmri_scene`), in
  the study's MRI world: the maps overlay the study's anatomy and ROIs.
- When the study's sessions are repositioned (``ground_truth.json`` records a
  ``session_pose`` per session), the series are placed in the day-1 session's
  pose (its ``phantom_to_mri_world`` composed into every affine; no resampling),
  so they still overlay the day-1 anatomy. The day-0 GRE baseline shares the
  day-1 grid on purpose: a voxel-wise delta R2* needs no registration here.
- A coarser grid (0.5 mm) cropped to z = 3..16 mm (liver and spleen, where the
  iron-labelled cells are on day 1) keeps the folder under 3 MB.
- Series of day 1: multi-echo GRE (8 echoes, 2-19.5 ms), multi-echo SE (CPMG,
  10 echoes, ESP 8 ms, with a surface-coil-like B1 so stimulated echoes are
  present), VFA (3, 10, 20 deg, TR 15 ms) with its B1 map, and inversion recovery
  (6 TIs). Day 0: the same GRE before injection (the baseline for delta R2*).
  SNR 20 in muscle at the first echo; 9.4 T; ferumoxytol-like relaxivities.
- 4D NIfTI (int16 with scl_slope = sigma/5) with BIDS JSON sidecars: EchoTime,
  InversionTime (seconds) and FlipAngle lists, RepetitionTime, NoiseSigma.
- Truth maps (T2*, T2, T1 in ms, Fe in mM, B1) and truth.json under ``truth/``.
- The folder sits beside ``sub-01`` (``qmri/sub-01/ses-day1/...``), not inside the
  session: the study browser would otherwise list these series as tracks
  "missing" at the other timepoints. Open them with the Maps dock's
  "Sample qMRI" button or ``immunotrack relax``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED = 2024
OUT = REPO / "sample_data" / "mouse_study" / "qmri"


def _write(volume, path: Path, step=None, pose=None):
    import nibabel as nib

    from napari_immunotrack.io.nifti import _REVERSE

    nib.openers.Opener.default_compresslevel = 9  # the same voxels, smaller (the sample must stay <= 30 MB)
    if pose is not None:
        volume = volume.replace(affine=pose @ volume.affine)
    data = volume.numpy()
    if step:
        arr = np.rint(data / step).astype(np.int16)
    elif data.dtype == np.uint8:
        arr = data
    else:
        arr = data.astype(np.float32)
    arr = arr.transpose(tuple(range(arr.ndim))[::-1])
    aff = volume.affine @ _REVERSE
    img = nib.Nifti1Image(arr, aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if step:
        img.header["scl_slope"] = step
        img.header["scl_inter"] = 0.0
    nib.save(img, str(path))


def _day1_pose(truth_path: Path) -> np.ndarray:
    """Phantom world -> the study's day-1 MRI world (identity for a one-bed study)."""
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    session = truth["subjects"]["01"]["sessions"]["ses-day1"]
    return np.asarray(session.get("session_pose", {}).get("phantom_to_mri_world", np.eye(4)), float)


def _sidecar(path: Path, obj: dict):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from napari_immunotrack.simulate.relaxometry import qmri_scene

    if OUT.exists():
        if not args.overwrite:
            print(f"{OUT} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(OUT)
    scene = qmri_scene(seed=SEED, day=1.0)
    pose = _day1_pose(OUT.parent / "ground_truth.json")
    info = scene["info"]
    sigma = info["noise_sigma"]
    step = sigma / 5.0
    day1 = OUT / "sub-01" / "ses-day1"
    day0 = OUT / "sub-01" / "ses-day0"
    truth_dir = OUT / "truth"
    for d in (day1, day0, truth_dir):
        d.mkdir(parents=True)
    common = {
        "MagneticFieldStrength": info["field_t"],
        "NoiseSigma": sigma,
        "Modality": "MR",
        "Units": "a.u.",
        "QuantisationStep": step,
    }
    p = info["protocol"]
    s = scene["series"]
    entries = [
        (
            day1 / "sub-01_ses-day1_MEGRE",
            s["MEGRE"],
            dict(
                common,
                EchoTime=[t / 1000 for t in p["MEGRE"]["echo_times_ms"]],
                RepetitionTime=0.8,
                FlipAngle=30.0,
                ScanningSequence="GR",
            ),
        ),
        (
            day0 / "sub-01_ses-day0_MEGRE",
            scene["baseline"]["MEGRE"],
            dict(
                common,
                EchoTime=[t / 1000 for t in p["MEGRE"]["echo_times_ms"]],
                RepetitionTime=0.8,
                FlipAngle=30.0,
                ScanningSequence="GR",
            ),
        ),
        (
            day1 / "sub-01_ses-day1_MESE",
            s["MESE"],
            dict(
                common,
                EchoTime=[t / 1000 for t in s["MESE"].metadata["echo_times_ms"]],
                RepetitionTime=3.0,
                RefocusingFlipAngle=180.0,
                ScanningSequence="SE",
            ),
        ),
        (
            day1 / "sub-01_ses-day1_VFA",
            s["VFA"],
            dict(
                common,
                FlipAngle=p["VFA"]["flip_angles_deg"],
                RepetitionTime=p["VFA"]["repetition_time_ms"] / 1000,
                ScanningSequence="GR",
            ),
        ),
        (
            day1 / "sub-01_ses-day1_IRT1",
            s["IR"],
            dict(
                common,
                InversionTime=[t / 1000 for t in p["IR"]["inversion_times_ms"]],
                RepetitionTime=10.0,
                ScanningSequence="IR",
            ),
        ),
    ]
    for stem, vol, side in entries:
        _write(vol, stem.with_name(stem.name + ".nii.gz"), step, pose)
        _sidecar(stem.with_name(stem.name + ".json"), side)
    _write(scene["b1"], day1 / "sub-01_ses-day1_TB1map.nii.gz", pose=pose)
    _sidecar(
        day1 / "sub-01_ses-day1_TB1map.json",
        {"Units": "relative", "Modality": "MR", "Description": "relative flip angle (1 = nominal)"},
    )
    for key in ("T2star_ms", "T2_ms", "T1_ms", "Fe_mM"):
        _write(scene["truth"][key], truth_dir / f"sub-01_ses-day1_desc-truth_{key}.nii.gz", pose=pose)
    _write(
        scene["truth"]["R2star_baseline_per_s"], truth_dir / "sub-01_ses-day0_desc-truth_R2star_per_s.nii.gz", pose=pose
    )
    _write(scene["truth"]["labels"], truth_dir / "sub-01_desc-tissues_dseg.nii.gz", pose=pose)
    info = dict(info, phantom_to_study_world=pose.tolist())
    (truth_dir / "truth.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
