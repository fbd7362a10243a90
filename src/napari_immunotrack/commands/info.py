"""Describe an image (shape, voxel size, orientation, world box, modality,
unit, quantitative headers) or, for an output of this package, where it came
from (its provenance sidecar)."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "describe an image or show where an output came from"

_KEYS = (
    "SeriesDescription",
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "RadionuclideTotalDose",
    "RadiopharmaceuticalStartDateTime",
    "RadionuclideHalfLife",
    "Radionuclide",
    "PatientWeight",
    "PatientSize",
    "PatientSex",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionTime",
    "EchoTime",
    "RepetitionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "leading_axis",
    "channel_names",
    "frame_interval_s",
    "affine_source",
    "voxel_size_source",
    "orientation_nominal",
    "orientation_unknown",
    "echo_times_ms",
    "label_names",
    "segmentation_type",
    "ReferencedSeriesInstanceUID",
    "ParaVisionVersion",
    "SubjectType",
    "SubjectPosition",
    "slice_package",
    "PatientSpeciesDescription",
    "ActualFrameDuration",
    "frame_window",
    "calibration_note",
    "dose_note",
    "weight_note",
    "overscan_voxels",
    "tracer",
)


def add_arguments(parser):
    """Add the arguments of ``immunotrack info`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack info")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["scan.nii.gz"])
    >>> args.path, args.json, args.voxel_size, args.reference
    ('scan.nii.gz', False, None, None)
    >>> parser.parse_args(["stack.tif", "--voxel-size", "2", "0.1", "0.1"]).voxel_size
    [2.0, 0.1, 0.1]
    """
    parser.add_argument(
        "path",
        help="NIfTI, DICOM file or folder, OME-TIFF, OME-Zarr, ParaVision scan folder "
        "or 2dseq, Inveon .img/.hdr, MDF (.mdf/.h5), NRRD, MetaImage, or an output CSV/NIfTI",
    )
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="MM",
        help="pixel size in mm of a TIFF/OME-Zarr without one: one number, (y x) or (z y x)",
    )
    parser.add_argument("--reference", help="for a DICOM SEG or RTSTRUCT: the series folder it was drawn on")


def describe(volume) -> dict:
    """What ``immunotrack info`` prints about one volume: geometry, modality, unit and the quantitative
    header fields it carries.

    Parameters
    ----------
    volume : Volume
        The image, as a reader returns it.

    Returns
    -------
    dict
        ``name``, ``modality``, ``unit``, ``shape``, ``dtype``, ``voxel_size_mm`` (rounded to 6 decimals),
        ``orientation`` (axis codes), ``axis_aligned``, ``world_bounds_ras_mm`` (``min``/``max`` corners of the
        voxel centres in world RAS mm, rounded to 3 decimals), then every header field of a fixed list
        (``Units``, ``RadionuclideTotalDose``, ``EchoTime``, ``label_names``, ...) that is set and not empty,
        and ``pyramid_shapes`` for a multiscale image.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> vol = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 0.5, 1.0]), modality="MR",
    ...              metadata={"EchoTime": 0.01, "SeriesDescription": ""}, name="T2w")
    >>> info = describe(vol)
    >>> info["shape"], info["voxel_size_mm"], info["orientation"]
    ([4, 5, 6], [2.0, 1.0, 0.5], 'RAS')
    >>> info["world_bounds_ras_mm"], info["EchoTime"], "SeriesDescription" in info
    ({'min': [0.0, 0.0, 0.0], 'max': [6.0, 4.0, 2.5]}, 0.01, False)
    """
    import numpy as np

    bounds = volume.bounds_world()
    info = {
        "name": volume.name,
        "modality": volume.modality,
        "unit": volume.unit,
        "shape": list(volume.shape),
        "dtype": str(volume.data.dtype),
        "voxel_size_mm": [round(float(s), 6) for s in volume.spacing],
        "orientation": volume.orientation(),
        "axis_aligned": volume.is_axis_aligned(),
        "world_bounds_ras_mm": {"min": np.round(bounds[0], 3).tolist(), "max": np.round(bounds[1], 3).tolist()},
    }
    for key in _KEYS:
        if key in volume.metadata and volume.metadata[key] not in (None, ""):
            info[key] = volume.metadata[key]
    multiscale = volume.metadata.get("multiscale")
    if isinstance(multiscale, dict) and multiscale.get("arrays"):
        info["pyramid_shapes"] = [list(a.shape) for a in multiscale["arrays"]]
    return info


def describe_table(path) -> dict:
    r"""Rows and columns of a CSV/TSV output (``.tsv`` is read tab-separated, anything else as CSV).

    Parameters
    ----------
    path : str or Path
        The table file.

    Returns
    -------
    dict
        ``{"rows": int, "columns": [str, ...]}``, or ``{"unreadable": reason}`` (the reader's message, at most
        120 characters) when the file cannot be read as a table.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "cells.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("label,cells\n1,1200\n2,300\n")
    ...     print(describe_table(path))
    ...     print(sorted(describe_table(os.path.join(d, "missing.csv"))))
    {'rows': 2, 'columns': ['label', 'cells']}
    ['unreadable']
    """
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t" if str(path).lower().endswith(".tsv") else ",")
    except Exception as exc:  # a broken table is still described by its provenance
        return {"unreadable": " ".join(str(exc).split())[:120]}
    return {"rows": int(len(df)), "columns": [str(c) for c in df.columns]}


#: Images of a non-DICOM folder that ``info`` describes one by one.
_MAX_DESCRIBED = 10


def run(args) -> int:
    """Run ``immunotrack info``: describe an image, a table or an output of this package.

    An image in any format the readers open is described volume by volume (:func:`describe`); a CSV/TSV
    output by its rows and columns; when a provenance sidecar (``<file>.provenance.json``) sits beside the path,
    its step, inputs, parameters, warnings and software are printed too, and whether its sha256 still
    matches the file.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`): ``path``, ``json``, ``voxel_size``, ``reference``.

    Returns
    -------
    int
        0. Bad input raises :class:`~napari_immunotrack.errors.InputError`, which
        :func:`napari_immunotrack.cli.main` turns into one line on standard error and exit status 2.

    Examples
    --------
    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "post.nii.gz")
    ...     nib.save(nib.Nifti1Image(np.zeros((6, 6, 4), np.float32), np.diag([0.5, 0.5, 1.0, 1.0])), path)
    ...     main(["info", path])  # arrays are held (z, y, x): the NIfTI i axis comes last
    post
      modality: MR
      unit: a.u.
      shape: [4, 6, 6]
      dtype: float32
      voxel_size_mm: [1.0, 0.5, 0.5]
      orientation: SAR
      axis_aligned: True
      world_bounds_ras_mm: {'min': [0.0, 0.0, 0.0], 'max': [2.5, 2.5, 3.0]}
      affine_source: sform
    0
    """
    from ..errors import InputError
    from ..io import FORMAT_NAMES, detect_format, images_in_folder, load_volumes
    from ..outputs import sidecar_matches, sidecar_path

    path = Path(args.path)
    side = sidecar_path(path)
    out = {}
    if side.exists():
        try:
            out["provenance"] = json.loads(side.read_text())
        except ValueError:
            out["provenance"] = f"unreadable provenance file {side}"
        match = sidecar_matches(path)
        if match is not None:
            out["provenance_matches_output"] = match
    fmt = None
    try:
        fmt = detect_format(path)
    except Exception:
        pass
    if fmt is not None or not side.exists():
        kwargs = {}
        if args.voxel_size and fmt in ("tiff", "zarr"):
            kwargs["voxel_size_mm"] = args.voxel_size[0] if len(args.voxel_size) == 1 else tuple(args.voxel_size)
        if getattr(args, "reference", None):
            kwargs["reference"] = args.reference
        try:
            out["volumes"] = [describe(v) for v in load_volumes(path, **kwargs)]
        except InputError:
            # a folder that is no DICOM series but holds images of other formats (an OME-TIFF, NIfTI
            # files): describe those, saying what the folder is and what to give the other verbs
            others = images_in_folder(path) if fmt == "dicom" and path.is_dir() else []
            if not others:
                raise
            out["folder"] = {
                "note": f"{path} is not a DICOM series; it holds {len(others)} image file(s) of other formats: "
                "give one of them (the file itself) to the other commands",
                "images": [{"path": str(p), "format": FORMAT_NAMES.get(f, f)} for p, f in others],
            }
            out["volumes"] = []
            for p, _f in others[:_MAX_DESCRIBED]:
                for v in load_volumes(p, **({} if _f not in ("tiff", "zarr") else kwargs)):
                    out["volumes"].append({**describe(v), "file": p.name})
    elif path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        out["table"] = describe_table(path)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if "folder" in out:
        print(out["folder"]["note"] + ":")
        for item in out["folder"]["images"]:
            print(f"  {Path(item['path']).name} ({item['format']})")
        if len(out["folder"]["images"]) > _MAX_DESCRIBED:
            print(f"  (the first {_MAX_DESCRIBED} are described below)")
    for vol in out.get("volumes", []):
        print(f"{vol['name']}" + (f" ({vol['file']})" if "file" in vol else ""))
        for key, value in vol.items():
            if key not in ("name", "file"):
                print(f"  {key}: {value}")
    if "table" in out:
        table = out["table"]
        if "rows" in table:
            print(f"{path.name}: table of {table['rows']} rows; columns: {', '.join(table['columns'])}")
        else:
            print(f"{path.name}: table that cannot be read ({table['unreadable']})")
    if "provenance" in out:
        prov = out["provenance"]
        print(f"provenance ({side.name}):")
        if isinstance(prov, dict):
            print(f"  step: {prov.get('step')}  time: {prov.get('time_utc')}")
            for name, entry in prov.get("inputs", {}).items():
                print(
                    f"  input {name}: {entry.get('path', entry.get('value', ''))} sha256={str(entry.get('sha256', ''))[:16]}"
                )
            for key, value in prov.get("parameters", {}).items():
                print(f"  parameter {key}: {value}")
            for warning in prov.get("warnings", []):
                print(f"  warning: {warning}")
            print(f"  software: {prov.get('software')}")
            if out.get("provenance_matches_output") is True:
                print("  output sha256: matches this file")
            elif out.get("provenance_matches_output") is False:
                print(
                    "  WARNING: this record was written for other content (sha256 differs): the file was "
                    "changed afterwards or a run was interrupted; rerun the step to get a matching record."
                )
        else:
            print(f"  {prov}")
    return 0
