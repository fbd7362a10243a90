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
    """Add the arguments of ``immunotrack fluorine`` to a parser.

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
    >>> parser = argparse.ArgumentParser(prog="immunotrack fluorine")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["f19.nii.gz", "--reference-mask", "tube.nii.gz", "--reference-concentration", "10",
    ...                           "--roi", "roi.nii.gz", "--fluorine-per-cell", "1e12", "-o", "cells.csv"])
    >>> args.f19, args.reference_mask, args.roi, args.output, args.noise_mask, args.overwrite
    ('f19.nii.gz', 'tube.nii.gz', 'roi.nii.gz', 'cells.csv', None, False)
    """
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
    """Run ``immunotrack fluorine``: 19F atoms and cell counts per ROI label, calibrated on a reference tube.

    Writes a CSV with one row per ROI label (atoms, cells, their standard errors and 95 % interval,
    detection limits, status) and its provenance sidecar. See
    :func:`napari_immunotrack.analysis.fluorine.fluorine_cells` and ``docs/methods/fluorine.md``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (a number that is not one, an existing output without ``--overwrite``, an empty
        reference tube, ...) raises :class:`~napari_immunotrack.errors.InputError` (exit status 2 from
        :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    A 10 mM reference tube (8 voxels at 100) and an ROI of 8 voxels at 50, noise sigma 1: each voxel of
    0.125 uL then holds 5 mM x 0.125 uL x N_A = 3.76e14 atoms, 8 of them 3011 cells of 1e12 atoms:

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> import pandas as pd
    >>> from napari_immunotrack.cli import main
    >>> f19 = np.abs(np.random.default_rng(0).normal(0, 1, (8, 8, 8))).astype(np.float32)
    >>> f19[1:3, 1:3, 1:3] = 100; f19[5:7, 5:7, 5:7] = 50
    >>> tube = np.zeros((8, 8, 8), np.uint8); tube[1:3, 1:3, 1:3] = 1
    >>> roi = np.zeros((8, 8, 8), np.uint8); roi[5:7, 5:7, 5:7] = 1
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for name, arr in (("f19", f19), ("tube", tube), ("roi", roi)):
    ...         nib.save(nib.Nifti1Image(arr, np.diag([0.5, 0.5, 0.5, 1.0])), os.path.join(d, name + ".nii.gz"))
    ...     main(["fluorine", os.path.join(d, "f19.nii.gz"), "--reference-mask", os.path.join(d, "tube.nii.gz"),
    ...           "--reference-concentration", "10", "--roi", os.path.join(d, "roi.nii.gz"),
    ...           "--fluorine-per-cell", "1e12", "--noise-sigma", "1",
    ...           "-o", os.path.join(d, "f19.csv")])  # doctest: +ELLIPSIS
    ...     table = pd.read_csv(os.path.join(d, "f19.csv"))
    1 ROI(s) -> ...f19.csv (provenance: f19.csv.provenance.json)
    0
    >>> table[["label", "voxels", "cell_count", "status"]].round(0)
       label  voxels  cell_count status
    0      1       8      3011.0     ok
    """
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
