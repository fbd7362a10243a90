"""19F MRI cell counts per ROI, calibrated on a reference tube of known 19F concentration
(docs/methods/fluorine.md).

F_ref per voxel = c_ref N_A V_voxel; F in an ROI = (F_ref / mean reference signal) x the sum
over the whole ROI of an approximately unbiased Rician amplitude (zero on average where there
is no 19F), with a standard error, a 95 % interval and the ROI's detection limit in cells;
cells = F / (19F atoms per cell). An ROI below its limit gets no count but an upper bound
("below detection limit"). --estimator threshold keeps the older count of voxels with
SNR >= 3.5 in clusters of >= 3 voxels. --pvc gtm|rbv adds partial-volume corrected columns.

Example: immunotrack fluorine f19.nii.gz --reference-mask tube.nii.gz --reference-concentration 50
         --roi nodes.nii.gz --fluorine-per-cell 1e12 --noise-mask air.nii.gz -o cells.csv
"""

from __future__ import annotations

HELP = "19F MRI: 19F atoms and cell counts per ROI from a reference tube"


def add_arguments(parser):
    from ..analysis.fluorine import FLUORINE_PARAMETERS as P  # defaults, limits and help of the options
    from ._common import add_output, add_transform_arguments

    needed = ("reference_concentration_mm", "fluorine_per_cell")
    parser.add_argument("f19", help="19F magnitude image (NIfTI, DICOM, ...)")
    parser.add_argument("--reference-mask", required=True, help="mask of the reference tube (inside the tube)")
    P.add_arguments(parser, ["reference_concentration_mm"], required=needed)
    parser.add_argument("--roi", required=True, help="ROI label image on any grid (0 = background)")
    P.add_arguments(parser, ["fluorine_per_cell"], required=needed)
    add_output(parser, help="output CSV, one row per ROI label")
    parser.add_argument("--noise-mask", help="signal-free background mask for the noise sigma (recommended)")
    P.add_arguments(
        parser,
        [
            "noise_sigma",
            "snr_threshold",
            "min_cluster_voxels",
            "connectivity",
            "fluorine_atoms_per_molecule",
            "rician_correction",
        ],
    )
    add_transform_arguments(parser, "19F image")
    P.add_arguments(parser, ["supersample", "estimator"])
    from . import _pvc

    _pvc.add_arguments(parser, positron_range=False)


def run(args) -> int:
    from ..analysis.fluorine import FLUORINE_PARAMETERS, fluorine_cells
    from ..outputs import check_output, sidecar_path, write_table
    from ..provenance import record
    from ._common import load, transform_arg
    from .quantify import progress_for

    out = check_output(args.output, args.overwrite)
    options = FLUORINE_PARAMETERS.from_args(args)  # checked by argparse against the model
    from . import _pvc

    pvc = args.pvc if _pvc.requested(args) else None
    f19 = load(args.f19, "19F image")
    ref = load(args.reference_mask, "reference mask")
    roi = load(args.roi, "ROI")
    transform, direction = transform_arg(
        args.transform,
        f19,
        roi,
        fixed=args.transform_fixed,
        image_path=args.f19,
        other_path=args.roi,
        image_name="the 19F image",
    )
    noise = load(args.noise_mask, "noise mask") if args.noise_mask else None
    df = fluorine_cells(
        f19,
        roi,
        ref,
        noise_mask=noise,
        transform=transform,
        pvc=pvc,
        psf=args.psf_fwhm,
        progress=progress_for("fluorine"),
        **options,
    )
    prov = record(
        "fluorine",
        inputs={
            "f19": args.f19,
            "reference_mask": args.reference_mask,
            "roi": args.roi,
            "noise_mask": args.noise_mask,
            "transform": args.transform,
        },
        parameters=dict(df.attrs["parameters"], transform=args.transform, transform_direction=direction),
        warnings=df.attrs["warnings"],
    )
    write_table(df, out, provenance=prov, overwrite=args.overwrite)
    print(f"{len(df)} ROI(s) -> {out} (provenance: {sidecar_path(out).name})")
    return 0
