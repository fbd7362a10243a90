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
    """Rows and columns of a CSV/TSV output."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t" if str(path).lower().endswith(".tsv") else ",")
    except Exception as exc:  # a broken table is still described by its provenance
        return {"unreadable": " ".join(str(exc).split())[:120]}
    return {"rows": int(len(df)), "columns": [str(c) for c in df.columns]}


#: Images of a non-DICOM folder that ``info`` describes one by one.
_MAX_DESCRIBED = 10


def run(args) -> int:
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
