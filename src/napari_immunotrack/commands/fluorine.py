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
    from ._common import add_output

    parser.add_argument("f19", help="19F magnitude image (NIfTI, DICOM, ...)")
    parser.add_argument("--reference-mask", required=True, help="mask of the reference tube (inside the tube)")
    parser.add_argument("--reference-concentration", required=True, help="19F concentration of the reference (mM)")
    parser.add_argument("--roi", required=True, help="ROI label image on any grid (0 = background)")
    parser.add_argument("--fluorine-per-cell", required=True, help="19F atoms per cell (e.g. 1e12)")
    add_output(parser, help="output CSV, one row per ROI label")
    parser.add_argument("--noise-mask", help="signal-free background mask for the noise sigma (recommended)")
    parser.add_argument("--noise-sigma", help="known noise sigma (image units), instead of estimating it")
    parser.add_argument("--snr-threshold", default="3.5", help="minimum voxel SNR counted (default 3.5)")
    parser.add_argument("--min-cluster", default="3", help="minimum cluster size in voxels (default 3)")
    parser.add_argument("--connectivity", default="26", help="cluster connectivity: 6, 18 or 26 (default 26)")
    parser.add_argument(
        "--fluorine-atoms-per-molecule",
        default="1",
        help="19F atoms per molecule when the reference concentration is a compound's (default 1)",
    )
    parser.add_argument(
        "--rician-correction",
        default="power",
        help="per-voxel bias correction: power = sqrt(I^2 - 2 sigma^2) (default), "
        "amplitude = sqrt(I^2 - sigma^2), none",
    )
    from ._common import add_transform_arguments

    add_transform_arguments(parser, "19F image")
    parser.add_argument("--supersample", default="3", help="subvoxels per axis for ROIs on rotated grids (default 3)")
    parser.add_argument(
        "--estimator",
        default="whole-roi",
        help="whole-roi (default: every voxel, noise floor removed, with uncertainty) or threshold",
    )
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
    from ..analysis.fluorine import fluorine_cells
    from ..outputs import check_output, sidecar_path, write_table
    from ..provenance import record
    from ._common import load, transform_arg
    from .quantify import number, progress_for

    out = check_output(args.output, args.overwrite)
    c_ref = number(args.reference_concentration, "--reference-concentration")
    f_cell = number(args.fluorine_per_cell, "--fluorine-per-cell")
    sigma = number(args.noise_sigma, "--noise-sigma")
    snr = number(args.snr_threshold, "--snr-threshold")
    min_cluster = number(args.min_cluster, "--min-cluster", integer=True)
    connectivity = number(args.connectivity, "--connectivity", integer=True)
    per_molecule = number(args.fluorine_atoms_per_molecule, "--fluorine-atoms-per-molecule")
    supersample = number(args.supersample, "--supersample", integer=True)
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
        c_ref,
        f_cell,
        noise_mask=noise,
        noise_sigma=sigma,
        snr_threshold=snr,
        min_cluster_voxels=min_cluster,
        connectivity=connectivity,
        rician_correction=args.rician_correction,
        fluorine_atoms_per_molecule=per_molecule,
        transform=transform,
        supersample=supersample,
        estimator=args.estimator,
        pvc=pvc,
        psf=args.psf_fwhm,
        progress=progress_for("fluorine"),
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
