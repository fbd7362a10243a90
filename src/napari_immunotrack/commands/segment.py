"""Find hypointense (iron) cell clusters on a T2/T2*-weighted image: dark voids
new since the pre-injection baseline (docs/methods/clusters.md).

LABELS has exactly POST's grid and affine, one integer label per cluster;
CLUSTERS (CSV) has one row per label: voxels, volume_mm3, centroid in world
RAS mm, min/mean signal normalised to the reference tissue, baseline ratio
and contrast-to-noise ratio. Each output gets a .provenance.json beside it.
Without --baseline, the air around the body is left out (body found on the
image) but dark spots inside it (bone, vessels, lungs, haemorrhage) cannot be
told from labelled cells. OME-Zarr inputs are processed chunk by
chunk.

Example:
  immunotrack segment t2s_post.nii.gz --baseline t2s_pre.nii.gz \\
      --reference-mask muscle.nii.gz --search-mask node.nii.gz \\
      -o clusters.nii.gz --table clusters.csv
"""

from __future__ import annotations

from pathlib import Path

from ._common import add_output, existing_path

HELP = "find iron-labelled cell clusters (dark voids new since baseline) on T2/T2*-weighted MRI"

#: The parameters of CLUSTER_PARAMETERS offered as options, in the order the help shows them
#: (split_h is left to the function and the batch step; --baseline-tolerance-voxels has its own "auto").
_CLI_PARAMETERS = (
    "method",
    "threshold",
    "min_size",
    "connectivity",
    "baseline_ratio",
    "baseline_rule",
    "baseline_k",
    "split_touching",
    "sigma",
)


def add_arguments(parser):
    """Add the arguments of ``immunotrack segment`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        Image arguments must name existing paths (checked when parsing: exit 2 otherwise).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack segment")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([".", "-o", "clusters.nii.gz"])  # "." only needs to exist here
    >>> args.method, args.threshold, args.min_size, args.connectivity, args.baseline_ratio, args.baseline_rule
    ('fraction', None, 3, 26, 0.6, 'ratio')
    >>> args.baseline, args.table, args.overwrite
    (None, None, False)
    """
    from ..analysis.clusters import CLUSTER_PARAMETERS

    parser.add_argument(
        "post",
        type=existing_path,
        metavar="POST",
        help="post-injection T2/T2*-weighted magnitude image (its grid is the output's)",
    )
    parser.add_argument(
        "--baseline",
        type=existing_path,
        metavar="PRE",
        help="pre-injection scan; voids already there are never reported",
    )
    parser.add_argument(
        "--baseline-transform",
        metavar="TRANSFORM",
        help="registration of POST and PRE (ITK .tfm from 'immunotrack register' with either "
        "fixed, a 4x4 RAS matrix POST world -> PRE world in .txt/.npy), or 'identity' when PRE "
        "shares POST's scanner frame, or 'auto': register PRE to POST now (same-contrast "
        "session alignment, docs/methods/session-alignment.md) when their grids differ; needed "
        "only when PRE is on another grid",
    )
    parser.add_argument(
        "--baseline-transform-fixed",
        default="auto",
        choices=("auto", "image", "other"),
        help="which image was fixed in that registration: auto (from the file's direction record, "
        "else by overlap), image (POST) or other (PRE)",
    )
    tolerance = CLUSTER_PARAMETERS["baseline_tolerance_voxels"]
    parser.add_argument(
        "--baseline-tolerance-voxels",
        type=tolerance.argparse_type(),
        default=None,  # None: the model's default, or the residual error of '--baseline-transform auto'
        metavar="N",
        help=f"{tolerance.help.replace('this many voxels', 'N voxels')} (default {tolerance.default}; with "
        "--baseline-transform at least the residual misalignment measured through it, "
        "docs/methods/baseline-residual.md)",
    )
    parser.add_argument(
        "--reference-mask",
        type=existing_path,
        metavar="REF",
        help="reference tissue without cells (non-zero voxels); default: the median of the "
        "search region (a warned guess)",
    )
    parser.add_argument(
        "--search-mask",
        type=existing_path,
        metavar="SEARCH",
        help="look only inside this mask (non-zero voxels); default: the whole image",
    )
    parser.add_argument(
        "--background-mask",
        type=existing_path,
        metavar="AIR",
        help="air region for the Rician noise sigma; default: estimated automatically",
    )
    add_output(parser, help="cluster labels as NIfTI (.nii or .nii.gz), on POST's grid")
    parser.add_argument("--table", metavar="CLUSTERS.csv", help="per-cluster table (CSV)")
    # --method ... --sigma: defaults, limits and help from the model (analysis/clusters.py)
    CLUSTER_PARAMETERS.add_arguments(parser, _CLI_PARAMETERS)


def run(args) -> int:
    """Run ``immunotrack segment``: find dark (iron) clusters on POST and write their labels and table.

    Every output is checked before any work; the labels (NIfTI on POST's grid) and the optional table
    (CSV) are written atomically, each with a provenance sidecar, and a summary line plus the first 50
    rows of the table are printed. See :func:`napari_immunotrack.analysis.clusters.segment_clusters`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (an output that is not NIfTI/CSV or already exists without ``--overwrite``, an
        unreadable image, a transform without ``--baseline``) raises
        :class:`~napari_immunotrack.errors.InputError`: :func:`napari_immunotrack.cli.main` prints one line
        and returns 2.

    Examples
    --------
    A 27-voxel dark void in a noisy 12-voxel cube, a reference ROI and a known noise sigma:

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> rng = np.random.default_rng(0)
    >>> post = 100 + rng.normal(0, 3, (12, 12, 12)); post[5:8, 5:8, 5:8] = 20
    >>> muscle = np.zeros((12, 12, 12), np.uint8); muscle[1:4, 1:11, 1:11] = 1
    >>> affine = np.diag([0.2, 0.2, 0.2, 1.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     nib.save(nib.Nifti1Image(post.astype(np.float32), affine), os.path.join(d, "post.nii.gz"))
    ...     nib.save(nib.Nifti1Image(muscle, affine), os.path.join(d, "muscle.nii.gz"))
    ...     main(["segment", os.path.join(d, "post.nii.gz"), "--reference-mask", os.path.join(d, "muscle.nii.gz"),
    ...           "--sigma", "3", "-o", os.path.join(d, "clusters.nii.gz"), "--table", os.path.join(d, "clusters.csv")])
    ...     print(sorted(f for f in os.listdir(d) if f.startswith("clusters")))  # doctest: +ELLIPSIS
    1 cluster(s) (fraction, threshold 0.5; reference mean 99.75 from reference ROI; noise sigma 3 from given; NO baseline) -> ...clusters.nii.gz
     label  voxels  volume_mm3  centroid_x_mm  centroid_y_mm  centroid_z_mm  min_signal_norm  baseline_ratio  cnr
         1      27       0.216            1.2            1.2            1.2            0.201             NaN 26.6
    0
    ['clusters.csv', 'clusters.csv.provenance.json', 'clusters.nii.gz', 'clusters.nii.gz.provenance.json']
    >>> main(["segment", ".", "-o", "clusters.png"])  # stderr: ... the labels output must be NIfTI (.nii or .nii.gz).
    2
    """
    import sys

    from .. import outputs, provenance
    from ..analysis.clusters import CLUSTER_PARAMETERS, segment_clusters
    from ..errors import InputError
    from ..io import save_labels
    from ..progress import text_progress
    from ._common import load

    out = Path(args.output)
    if not out.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{out}: the labels output must be NIfTI (.nii or .nii.gz).")
    # every output is checked before any work, so a failure leaves nothing behind
    planned = [out]
    if args.table:
        if not args.table.lower().endswith(".csv"):
            raise InputError(f"{args.table}: the table must be a .csv file.")
        planned.append(Path(args.table))
    if len({p.resolve() for p in planned}) != len(planned):
        raise InputError("-o and --table are the same file; give them different names.")
    for path in planned:
        outputs.check_output(path, args.overwrite)
    if args.baseline_transform and not args.baseline:
        raise InputError("--baseline-transform was given without --baseline.")
    from ._common import transform_arg

    files = {
        "post": args.post,
        "baseline": args.baseline,
        "reference_mask": args.reference_mask,
        "search_mask": args.search_mask,
        "background_mask": args.background_mask,
    }
    roles = {
        "post": "POST",
        "baseline": "PRE (--baseline)",
        "reference_mask": "--reference-mask",
        "search_mask": "--search-mask",
        "background_mask": "--background-mask",
    }
    volumes = {k: (load(v, f"{roles[k]} {v}") if v is not None else None) for k, v in files.items()}
    # POST world -> PRE world, whichever of the two was fixed when they were registered
    tolerance = args.baseline_tolerance_voxels
    alignment = None
    if args.baseline_transform is not None and args.baseline_transform.strip().lower() == "auto":
        from ..alignment import baseline_alignment

        transform, alignment = baseline_alignment(volumes["post"], volumes["baseline"])
        direction = "registered now (--baseline-transform auto): POST fixed, PRE moving"
        if tolerance is None:
            tolerance = alignment["tolerance_voxels"]
    else:
        transform, direction = transform_arg(
            args.baseline_transform,
            volumes["post"],
            volumes["baseline"],
            fixed=args.baseline_transform_fixed,
            what="--baseline-transform",
            image_path=args.post,
            other_path=args.baseline,
            image_name="POST",
            other_name="the baseline (PRE)",
        )
    tolerance = CLUSTER_PARAMETERS["baseline_tolerance_voxels"].default if tolerance is None else tolerance
    bar = text_progress("segment") if sys.stderr.isatty() else None  # in a pipe or log, errors stay one line
    shown = []

    def progress(fraction, message=""):
        shown.append(fraction)
        if bar is not None:
            bar(fraction, message)

    try:
        result = segment_clusters(
            volumes["post"],
            baseline=volumes["baseline"],
            reference_mask=volumes["reference_mask"],
            search_mask=volumes["search_mask"],
            background_mask=volumes["background_mask"],
            baseline_transform=transform,
            progress=progress,
            **dict(CLUSTER_PARAMETERS.from_args(args), baseline_tolerance_voxels=tolerance),
        )
    except BaseException:
        if bar is not None and shown and shown[-1] < 1.0:
            sys.stderr.write("\n")  # end the progress line so the error stands on its own line
        raise
    params = dict(
        result.parameters,
        baseline_transform_file=args.baseline_transform,
        baseline_transform_direction=direction,
        baseline_alignment=alignment,
    )
    record = provenance.record(
        "segment",
        inputs=files,
        parameters=params,
        warnings=result.warnings,
        clusters=int(len(result.table)),
        sigma=result.sigma,
        noise_method=result.noise.method,
        reference_source=result.reference.source,
    )
    save_labels(
        result.labels,
        out,
        overwrite=args.overwrite,
        provenance=record,
        description=f"immunotrack segment {args.method} clusters",
    )
    if args.table:
        outputs.write_table(result.table, args.table, provenance=record, overwrite=args.overwrite)
    n = len(result.table)
    print(
        f"{n} cluster(s) ({args.method}, threshold {result.rule.threshold:g}; reference mean "
        f"{result.reference.mean:.4g} from {result.reference.source}; noise sigma {result.sigma:.4g} from "
        f"{result.noise.method}; {'baseline-confirmed' if volumes['baseline'] is not None else 'NO baseline'})"
        f" -> {out}"
    )
    if n:
        cols = [
            "label",
            "voxels",
            "volume_mm3",
            "centroid_x_mm",
            "centroid_y_mm",
            "centroid_z_mm",
            "min_signal_norm",
            "baseline_ratio",
            "cnr",
        ]
        text = result.table[cols].head(50).to_string(index=False, float_format=lambda v: f"{v:.3g}")
        print(text + (f"\n... ({n - 50} more)" if n > 50 else ""))
    return 0
