"""Register each post-injection session's PET, SPECT and MPI of the sample study to its MRI
and save the transforms where the study viewer finds them (``<session>/xfm/``).

These are results of ``napari_immunotrack.registration.register`` (rigid, mutual
information), not the simulator's truth: the viewer then shows every modality in
the MRI's world, and ``ground_truth.json`` still says how far off they are.

    .venv/bin/python scripts/register_sample.py [STUDY]
"""

import sys
from pathlib import Path

import numpy as np

from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import InputError
from napari_immunotrack.io import load_volume
from napari_immunotrack.io.transforms import describe_image, write_transform
from napari_immunotrack.provenance import record
from napari_immunotrack.registration import register
from napari_immunotrack.study import discover


def main(root: Path) -> None:
    files = discover(root)
    for session in sorted({f.session for f in files if f.day and f.day > 0}):
        pick = {(f.datatype, f.suffix): f for f in files if f.session == session}
        mri = load_volume(pick[("anat", "T2w")].path)
        xfm = root / f"sub-{files[0].subject}" / f"ses-{session}" / "xfm"
        xfm.mkdir(exist_ok=True)
        pet_in_mri = None
        for datatype in ("pet", "spect", "mpi"):
            f = next((g for (d, _), g in pick.items() if d == datatype), None)
            if f is None:
                continue
            moving = load_volume(f.path)
            # MPI has no anatomy: register it to the PET already placed in MRI world
            fixed = pet_in_mri if datatype == "mpi" and pet_in_mri is not None else mri
            try:
                result = register(fixed, moving, "rigid")
            except InputError as exc:  # say so and keep the other modalities
                print(f"{session} {datatype}: not registered: {exc}")
                continue
            if datatype == "pet":
                pet_in_mri = moving.replace(affine=np.linalg.inv(result.fixed_to_moving) @ moving.affine)
            out = xfm / f"sub-{f.subject}_ses-{session}_from-{datatype}_to-anat.tfm"
            write_transform(
                out,
                result.fixed_to_moving,
                overwrite=True,
                provenance=record("register", inputs={"fixed": fixed, "moving": f.path}, parameters=result.parameters),
                # the direction record: the MRI world (anat) fixed, this scanner's world moving
                fixed=describe_image(fixed, role="MRI world", datatype="anat"),
                moving=describe_image(moving, role=f"{datatype} world", path=f.path, datatype=datatype),
            )
            print(f"{session} {datatype}: metric {result.metric_initial:.3f} -> {result.metric_final:.3f}, {out.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else sample_study_root())
