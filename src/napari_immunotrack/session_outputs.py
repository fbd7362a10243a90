"""The files of one analysed session: labels, tables and transforms, written atomically with provenance.

Shared by ``immunotrack demo`` (:mod:`napari_immunotrack.commands.demo`) and
the batch tasks (:mod:`napari_immunotrack.batch.tasks`), so the batch never
imports a command (a command is above it). Pure: no argparse, no napari.
"""

from __future__ import annotations

from pathlib import Path


def write_session_outputs(result, out_dir, provenance_base: dict, overwrite: bool) -> list[Path]:
    """Write a :class:`~napari_immunotrack.pipeline.SessionResult`'s labels, tables and transforms.

    Parameters
    ----------
    result : SessionResult
        ``volumes`` ("clusters", "confirmed" label Volumes or None), ``tables``
        (name -> DataFrame), ``transforms`` (datatype -> 4x4 RAS matrix) and
        ``registrations`` (datatype -> registration result with its metrics).
    out_dir : path
        Existing folder.
    provenance_base : dict
        The provenance record; each file adds its ``output`` name.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        The files written: ``<name>.nii.gz``, ``<table>.csv``, ``from-<datatype>_to-anat.tfm``
        (and ``<name>.dcm`` for the DICOM objects of the ``dicom`` step), each with a
        ``.provenance.json`` sidecar; each file's provenance adds the warnings of the step that made it
        (``result.warnings``).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import pandas as pd
    >>> from napari_immunotrack.io.transforms import read_transform
    >>> from napari_immunotrack.pipeline import SessionResult
    >>> shift = np.eye(4)
    >>> shift[:3, 3] = [1.0, -2.0, 0.5]
    >>> result = SessionResult("01", "day1", tables={"pet": pd.DataFrame({"organ": ["tumour"], "percent_id": [2.5]})},
    ...                        transforms={"pet": shift})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = write_session_outputs(result, tmp, {"step": "demo"}, overwrite=False)
    ...     back = read_transform(Path(tmp) / "from-pet_to-anat.tfm")
    ...     files = sorted(p.name for p in Path(tmp).iterdir())
    >>> [p.name for p in written], back[:3, 3].round(6).tolist()
    (['pet.csv', 'from-pet_to-anat.tfm'], [1.0, -2.0, 0.5])
    >>> files
    ['from-pet_to-anat.tfm', 'from-pet_to-anat.tfm.provenance.json', 'pet.csv', 'pet.csv.provenance.json']
    """
    from .io import save_labels
    from .io.transforms import describe_image, write_transform
    from .outputs import write_table

    out_dir = Path(out_dir)
    written = []
    step_warnings = getattr(result, "warnings", {}) or {}

    def prov(output: str, step: str) -> dict:
        """The provenance of one output: the base record, its name and the warnings its step raised."""
        shown = list(provenance_base.get("warnings", [])) + list(step_warnings.get(step, []))
        return {**provenance_base, "output": output, "warnings": list(dict.fromkeys(shown))}

    for name in ("clusters", "confirmed"):
        if result.volumes.get(name) is not None:
            path = out_dir / f"{name}.nii.gz"
            save_labels(
                result.volumes[name],
                path,
                overwrite=overwrite,
                provenance=prov(name, "confirm" if name == "confirmed" else name),
            )
            written.append(path)
    for name, table in result.tables.items():
        if hasattr(table, "to_csv"):
            path = out_dir / f"{name}.csv"
            write_table(
                table, path, provenance=prov(name, "confirm" if name == "confirmed" else name), overwrite=overwrite
            )
            written.append(path)
    for datatype, matrix in result.transforms.items():
        path = out_dir / f"from-{datatype}_to-anat.tfm"
        reg = result.registrations.get(datatype)
        extra = {
            "metric_initial": getattr(reg, "metric_initial", None),
            "metric_final": getattr(reg, "metric_final", None),
        }
        # fixed: the MRI world (anat); moving: the scanner's own world (the direction record, docs/methods/transforms.md)
        images = getattr(result, "transform_images", {}).get(datatype) or (
            describe_image(role="MRI world", datatype="anat"),
            describe_image(role=f"{datatype} world", datatype=datatype),
        )
        write_transform(
            path,
            matrix,
            overwrite=overwrite,
            provenance={**prov(datatype, f"register_{datatype}"), **extra},
            fixed=images[0],
            moving=images[1],
        )
        written.append(path)
    if getattr(result, "dicom", None):  # the dicom step: organ SEG on the PET series and the PET SR
        from .io.dicom_export import save_dataset

        for name, ds in result.dicom.items():
            path = out_dir / f"{name}.dcm"
            save_dataset(ds, path, overwrite=overwrite, provenance=prov(name, "dicom"))
            written.append(path)
    return written
