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
    """Add the arguments of ``immunotrack mpi`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        Also adds the transform arguments (``_common.add_transform_arguments``) and ``--pvc``/``--psf-fwhm``.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack mpi")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["mpi.nii.gz", "--fiducials", "fid.csv", "--roi", "roi.nii.gz",
    ...                           "--iron-per-cell", "5", "-o", "iron.csv"])
    >>> args.mpi, args.fiducials, args.roi, args.background, args.output, args.overwrite
    ('mpi.nii.gz', 'fid.csv', 'roi.nii.gz', 'auto', 'iron.csv', False)
    """
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
    r"""Run ``immunotrack mpi``: iron mass and cell counts per ROI label, calibrated on fiducials.

    Writes a CSV with one row per ROI label and its provenance sidecar. See
    :func:`napari_immunotrack.analysis.mpi.mpi_iron` and ``docs/methods/mpi.md``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (fewer than two fiducials of different iron mass, a number that is not one, an
        existing output without ``--overwrite``, ...) raises :class:`~napari_immunotrack.errors.InputError`
        (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    Three point-like fiducials of 100, 50 and 20 ng (signal 1 per ng) and an ROI holding a source of
    signal 30: 30 ng of iron, 6000 cells at 5 pg per cell.

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> import pandas as pd
    >>> from napari_immunotrack.cli import main
    >>> image = np.zeros((10, 10, 10), np.float32)
    >>> image[1, 1, 1], image[1, 8, 1], image[8, 1, 1], image[7, 7, 7] = 100, 50, 20, 30
    >>> roi = np.zeros((10, 10, 10), np.uint8); roi[6:9, 6:9, 6:9] = 1
    >>> with tempfile.TemporaryDirectory() as d:
    ...     nib.save(nib.Nifti1Image(image, np.eye(4)), os.path.join(d, "mpi.nii.gz"))
    ...     nib.save(nib.Nifti1Image(roi, np.eye(4)), os.path.join(d, "roi.nii.gz"))
    ...     with open(os.path.join(d, "fid.csv"), "w") as f:
    ...         _ = f.write("x_mm,y_mm,z_mm,iron_ng\n1,1,1,100\n1,8,1,50\n8,1,1,20\n")
    ...     main(["mpi", os.path.join(d, "mpi.nii.gz"), "--fiducials", os.path.join(d, "fid.csv"),
    ...           "--roi", os.path.join(d, "roi.nii.gz"), "--iron-per-cell", "5", "--radius-mm", "1.5",
    ...           "--background", "0", "-o", os.path.join(d, "iron.csv")])  # doctest: +ELLIPSIS
    ...     table = pd.read_csv(os.path.join(d, "iron.csv"))
    calibration: 1 per ng, intercept ..., R^2 1.0000 (3 fiducials)
    1 ROI(s) -> ...iron.csv (provenance: iron.csv.provenance.json)
    0
    >>> table[["label", "voxels", "iron_ng", "cell_count", "status"]].round(6).to_dict("records")
    [{'label': 1, 'voxels': 27, 'iron_ng': 30.0, 'cell_count': 6000.0, 'status': 'ok'}]
    >>> main(["mpi", "mpi.nii.gz", "--fiducials", "fid.csv", "--roi", "roi.nii.gz", "--iron-per-cell", "0",
    ...       "-o", "iron.csv"])  # stderr: immunotrack mpi: error: --iron-per-cell must be greater than 0 (got 0).
    2
    """
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
