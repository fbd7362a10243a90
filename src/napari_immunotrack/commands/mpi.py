"""MPI iron (ng) and cell counts per ROI, calibrated with fiducials of known iron.

FIDUCIALS.csv columns: x_mm, y_mm, z_mm (world RAS mm of the MPI), iron_ng, and
optionally radius_mm (integration sphere, default --radius-mm) and signal (an
integrated signal to fit instead of integrating the image). The fit S = k m + b and
its R^2 go to the provenance file; iron_ng_dilated repeats the readout with the ROI
dilated by --dilate-mm (spill-over sensitivity).

Example: immunotrack mpi mpi.nii.gz --fiducials fiducials.csv --roi nodes.nii.gz --iron-per-cell 5 -o iron.csv
"""

from __future__ import annotations

HELP = "MPI: iron mass and cell counts per ROI from fiducials"


def add_arguments(parser):
    from ._common import add_output, add_transform_arguments

    parser.add_argument("mpi", help="MPI image (NIfTI, DICOM, ...)")
    parser.add_argument("--fiducials", required=True, help="CSV: x_mm, y_mm, z_mm, iron_ng[, radius_mm][, signal]")
    parser.add_argument("--roi", required=True, help="ROI label image on any grid (0 = background)")
    from ..analysis.mpi import MPI_PARAMETERS  # defaults, limits and help of the options

    MPI_PARAMETERS.add_arguments(parser, ["iron_per_cell_pg"], required=["iron_per_cell_pg"])
    add_output(parser, help="output CSV, one row per ROI label")
    MPI_PARAMETERS.add_arguments(parser, ["radius_mm"])
    parser.add_argument(
        "--background",
        default="auto",
        help="per-voxel background: auto (median away from fiducials and ROIs) or a number",
    )
    MPI_PARAMETERS.add_arguments(parser, ["dilate_mm"])
    add_transform_arguments(parser, "MPI image")
    MPI_PARAMETERS.add_arguments(parser, ["supersample"])
    from . import _pvc

    _pvc.add_arguments(parser, positron_range=False)  # --pvc, --psf-fwhm


def run(args) -> int:
    from pathlib import Path

    import pandas as pd

    from ..analysis.mpi import MPI_PARAMETERS, mpi_iron
    from ..errors import InputError
    from ..outputs import check_output, sidecar_path, write_table
    from ..provenance import record
    from ._common import load, transform_arg
    from .quantify import number, progress_for

    out = check_output(args.output, args.overwrite)
    options = MPI_PARAMETERS.from_args(args)  # iron per cell, radius, dilation, supersampling: checked
    background = (
        "auto" if str(args.background).lower() == "auto" else number(args.background, "--background", positive=False)
    )
    fid_path = Path(args.fiducials)
    if not fid_path.is_file():
        raise InputError(f"fiducial table {fid_path} does not exist.")
    try:
        fiducials = pd.read_csv(fid_path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        detail = " ".join(str(exc).split())[:100]
        raise InputError(f"fiducial table {fid_path} is not a readable CSV ({detail}).") from None
    from . import _pvc

    pvc = _pvc.requested(args)
    mpi = load(args.mpi, "MPI image")
    roi = load(args.roi, "ROI")
    transform, direction = transform_arg(
        args.transform,
        mpi,
        roi,
        fixed=args.transform_fixed,
        image_path=args.mpi,
        other_path=args.roi,
        image_name="the MPI image",
    )
    df = mpi_iron(
        mpi,
        roi,
        fiducials,
        transform=transform,
        background=background,
        progress=progress_for("mpi"),
        **options,
    )
    cal = df.attrs["calibration"]
    params = dict(df.attrs["parameters"], transform=args.transform)
    if pvc:  # iron_ng_pvc, cell_count_pvc (commands/_pvc.py)
        df, params["pvc"] = _pvc.correct_mpi(
            args, mpi, roi, df, transform=transform, supersample=options["supersample"]
        )
    prov = record(
        "mpi",
        inputs={"mpi": args.mpi, "fiducials": args.fiducials, "roi": args.roi, "transform": args.transform},
        parameters=dict(params, transform_direction=direction),
        warnings=df.attrs["warnings"],
        calibration=cal,
    )
    write_table(df, out, provenance=prov, overwrite=args.overwrite)
    print(
        f"calibration: {cal['k_per_ng']:.4g} per ng, intercept {cal['intercept']:.4g}, R^2 {cal['r2']:.4f} "
        f"({cal['n']} fiducials)"
    )
    print(f"{len(df)} ROI(s) -> {out} (provenance: {sidecar_path(out).name})")
    return 0
