"""Add a small CEST series (with WASSR and truth) to one session of the sample study.

Writes, in ``sample_data/mouse_study/cest/sub-01/ses-day1/`` (beside the subject tree, so that
the study browser's session contents stay as they were; nothing existing is replaced; the
folder appears whole or not at all):

- ``sub-01_ses-day1_cest.nii.gz`` + ``.json``: 4D, M0 at -300 ppm then 61 offsets
  -6..6 ppm (0.2 ppm steps), CW saturation 1 uT for 2 s at 9.4 T, Rician noise
  (SNR 100 in muscle), sidecar ``SaturationOffsetsPPM``;
- ``sub-01_ses-day1_wassr.nii.gz`` + ``.json``: 31 offsets -1.5..1.5 ppm, 0.3 uT, 0.5 s;
- ``sub-01_ses-day1_desc-truth_b0map.nii.gz``: the B0 field offset (ppm) used;
- ``sub-01_ses-day1_desc-cesttissues_dseg.nii.gz`` + ``.tsv``: muscle, tumour and the
  reporter (LRP, 3.4 ppm) expressing cell depot inside the tumour;
- ``sub-01_ses-day1_desc-truth_cest.json``: pool parameters and each tissue's isolated
  amide / LRP effect (docs/methods/cest.md#validation).

The slab (3 axial slices of 0.5 x 0.5 x 1 mm, 64 x 64 in plane) sits in the study's
world, centred on the tumour of the session's organ map. Run from the repository root:

    python scripts/make_cest_sample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_immunotrack.io import load_volume  # noqa: E402 (after the sys.path line)
from napari_immunotrack.io.nifti import write_nifti  # noqa: E402 (after the sys.path line)
from napari_immunotrack.outputs import atomic_output_dir, write_json, write_text  # noqa: E402 (after the sys.path line)
from napari_immunotrack.simulate import cest as sim  # noqa: E402 (after the sys.path line)
from napari_immunotrack.volume import Volume  # noqa: E402 (after the sys.path line)

SESSION = ROOT / "sample_data" / "mouse_study" / "sub-01" / "ses-day1"  # its organ map places the slab
TARGET = ROOT / "sample_data" / "mouse_study" / "cest" / "sub-01" / "ses-day1"
PREFIX = "sub-01_ses-day1"
SHAPE = (3, 64, 64)  # (slice S, row A, column R)
SPACING = (1.0, 0.5, 0.5)  # mm along S, A, R
DEPOT_RADIUS_MM = 1.2


def main(overwrite: bool = False) -> Path:
    dseg = load_volume(SESSION / "rois" / f"{PREFIX}_dseg.nii.gz")
    names = dict(line.split("\t") for line in (SESSION / "rois" / f"{PREFIX}_dseg.tsv").read_text().splitlines()[1:])
    index = {v.strip(): int(k) for k, v in names.items()}
    organ = np.asarray(dseg.numpy())
    tumour_idx = np.argwhere(organ == index["tumour"])
    centre = dseg.index_to_world(tumour_idx.mean(axis=0, keepdims=True))[0]  # RAS mm
    # CEST grid: array axes (S, A, R); affine maps (i_S, i_A, i_R) -> (x R, y A, z S)
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = SPACING[2], SPACING[1], SPACING[0], 1.0
    half = (np.array(SHAPE)[[2, 1, 0]] - 1) / 2 * np.array(SPACING)[[2, 1, 0]]
    affine[:3, 3] = centre - half
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    inv = np.linalg.inv(dseg.affine)
    src = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    inside = np.all((src >= 0) & (src < np.array(organ.shape)), axis=1)
    sampled = np.zeros(len(idx), int)
    sampled[inside] = organ[tuple(src[inside].T)]
    sampled = sampled.reshape(SHAPE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[
        (sampled > 0)
        & (sampled != index.get("air", 0))
        & (sampled != index.get("gut_gas", -1))
        & (sampled != index.get("lung", -1))
    ] = 1  # every soft tissue as muscle-like
    labels[sampled == index["tumour"]] = 2
    dist = np.linalg.norm(world - centre, axis=1).reshape(SHAPE)
    labels[(dist <= DEPOT_RADIUS_MM) & (labels == 2)] = 3
    # a smooth B0 field (shim residual), about +-0.3 ppm over the slab
    wx, wy, _wz = (world - centre).T.reshape((3,) + SHAPE)  # R, A, S offsets from the centre (mm)
    b0 = 0.02 * wx - 0.015 * wy + 0.004 * (wx**2 + wy**2) / 4.0 - 0.05
    m0 = np.where(labels == 1, 1000.0, np.where(labels >= 2, 1100.0, 0.0))
    out = sim.simulate_cest(
        labels,
        affine,
        {1: "muscle", 2: "tumour", 3: "depot"},
        sim.default_offsets(61, 6.0),
        b0,
        m0,
        snr=110.0,
        wassr_offsets_ppm=sim.default_wassr_offsets(31, 1.5),
        seed=2021,
    )
    truth = dict(
        out["truth"],
        depot_centre_ras_mm=centre.tolist(),
        depot_radius_mm=DEPOT_RADIUS_MM,
        reporter={"name": "lrp", "offset_ppm": 3.4},
        b0_map=f"{PREFIX}_desc-truth_b0map.nii.gz",
        labels={"1": "muscle", "2": "tumour", "3": "depot (LRP reporter)"},
        made_by="scripts/make_cest_sample.py",
    )
    target = TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output_dir(target, overwrite=overwrite) as tmp:
        for key, stem in (("series", "cest"), ("wassr", "wassr")):
            vol = out[key]
            scaled = Volume(np.clip(np.rint(vol.data), 0, 32767).astype(np.int16), vol.affine, "MR", "a.u.", {}, stem)
            write_nifti(scaled, tmp / f"{PREFIX}_{stem}.nii.gz")
            meta = {k: v for k, v in vol.metadata.items() if k != "leading_axis"}
            meta.update(
                Modality="MR",
                Units="a.u.",
                SaturationPulse="continuous wave block",
                Description=f"simulated {'CEST' if stem == 'cest' else 'WASSR'} series (Bloch-McConnell), "
                "one volume per saturation offset",
            )
            write_json(tmp / f"{PREFIX}_{stem}.json", meta)
        write_nifti(out["b0_ppm"], tmp / f"{PREFIX}_desc-truth_b0map.nii.gz")
        write_json(tmp / f"{PREFIX}_desc-truth_b0map.json", {"Units": "ppm", "Description": "true B0 offset"})
        write_nifti(out["labels"], tmp / f"{PREFIX}_desc-cesttissues_dseg.nii.gz", labels=True)
        write_text(
            tmp / f"{PREFIX}_desc-cesttissues_dseg.tsv", "index\tname\n0\tair\n1\tmuscle\n2\ttumour\n3\tlrp_depot\n"
        )
        write_json(tmp / f"{PREFIX}_desc-truth_cest.json", truth)
    for f in sorted(target.iterdir()):
        print(f"{f.stat().st_size / 1e6:6.2f} MB  {f.relative_to(ROOT)}")
    return target


if __name__ == "__main__":
    main(overwrite="--overwrite" in sys.argv)
