"""T1-T2 self-confirmation of dual-mode labels: regions T1-bright AND T2-dark,
new since the pre-injection baseline (``docs/methods/confirmation.md``).

The output has T1POST's grid and affine and is non-zero (1..N, one label per
region) where confirmed. Without --t1-pre/--t2-pre (and without maps) it holds
UNCONFIRMED candidates only: subacute haemorrhage, melanin and fat can look
the same without a baseline; its header description, provenance and table
say so.

The analysis' options (thresholds, k sigma, sizes, ...) are made from
:data:`napari_immunotrack.analysis.confirm.CONFIRM_PARAMETERS`, so their defaults,
limits and help are the function's, the dock's and the batch step's.

Example:
  immunotrack confirm --t1 t1w_post.nii.gz --t2 t2w_post.nii.gz \\
      --t1-pre t1w_pre.nii.gz --t2-pre t2w_pre.nii.gz -o confirmed.nii.gz --table regions.csv
"""

from __future__ import annotations

from pathlib import Path

from ._common import add_output, existing_path, load

HELP = "T1-T2 self-confirmation of dual-mode labels (T1-bright AND T2-dark, new since baseline)"


def add_arguments(parser):
    """Add the arguments of ``immunotrack confirm`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        Image arguments must name existing paths (checked when parsing).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack confirm")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--t1", ".", "--t2", ".", "-o", "confirmed.nii.gz"])
    >>> args.output, args.table, args.t1_pre, args.t2_pre, args.transform, args.overwrite
    ('confirmed.nii.gz', None, None, None, None, False)
    """
    parser.add_argument(
        "--t1",
        required=True,
        type=existing_path,
        metavar="T1POST",
        help="post-injection T1-weighted image (its grid is the output's)",
    )
    parser.add_argument(
        "--t2", required=True, type=existing_path, metavar="T2POST", help="post-injection T2-weighted image"
    )
    parser.add_argument("--t1-pre", type=existing_path, metavar="T1PRE", help="pre-injection T1-weighted baseline")
    parser.add_argument("--t2-pre", type=existing_path, metavar="T2PRE", help="pre-injection T2-weighted baseline")
    parser.add_argument("--t1-map-pre", type=existing_path, help="T1 map (ms) before injection")
    parser.add_argument("--t1-map-post", type=existing_path, help="T1 map (ms) after injection")
    parser.add_argument("--t2-map-pre", type=existing_path, help="T2 map (ms) before injection")
    parser.add_argument("--t2-map-post", type=existing_path, help="T2 map (ms) after injection")
    add_output(parser, help="confirmed regions as NIfTI labels (.nii.gz), on T1POST's grid")
    parser.add_argument("--table", help="per-region table (CSV)")
    parser.add_argument(
        "--maps-prefix",
        help="also write PREFIX_t1_change.nii.gz, PREFIX_t2_change.nii.gz (and PREFIX_ratio.nii.gz without a baseline)",
    )
    from ..analysis.confirm import CONFIRM_PARAMETERS

    CONFIRM_PARAMETERS.add_arguments(parser)  # --t1-threshold ... --min-delta-r2: defaults and checks from the model
    parser.add_argument("--search-mask", type=existing_path, help="look only inside this mask (non-zero voxels)")
    parser.add_argument(
        "--reference-mask",
        type=existing_path,
        help="unchanged reference tissue: noise sigma, scaling, ratio-mode reference",
    )
    parser.add_argument(
        "--transform",
        metavar="T2_TRANSFORM",
        help="T1POST world -> T2 world (ITK .tfm from 'immunotrack register', a 4x4 RAS matrix "
        ".txt/.npy), or 'identity' when T2 shares T1's scanner frame; needed only when the "
        "T2 images are on another grid",
    )
    parser.add_argument(
        "--pre-transform",
        metavar="PRE_TRANSFORM",
        help="post world -> baseline world (as --transform), for baselines on another grid, or 'auto': "
        "register the baseline session onto the post session now (T1PRE onto T1POST, same contrast; "
        "docs/methods/session-alignment.md)",
    )
    parser.add_argument(
        "--baseline-tolerance-voxels",
        type=int,
        choices=range(0, 6),
        metavar="N",
        help="a voxel must also be new against the brightest (T1) / darkest (T2) baseline value within N "
        "voxels (default: 0 on T1POST's grid, else the residual misalignment measured through --pre-transform, "
        "docs/methods/baseline-residual.md)",
    )


def run(args) -> int:
    """Run ``immunotrack confirm``: regions that are T1-bright AND T2-dark (and new since the baseline).

    Calls :func:`napari_immunotrack.analysis.confirm.confirm_dual_mode` and writes the confirmed regions
    as NIfTI labels on T1POST's grid, the optional table (CSV) and change maps, each with a provenance
    sidecar. Without a baseline the regions are printed as UNCONFIRMED candidates (haemorrhage, melanin
    and fat are also T1-bright and T2-dark).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (an output that is not NIfTI/CSV, two outputs with one name, an existing output
        without ``--overwrite``, ...) raises :class:`~napari_immunotrack.errors.InputError` (exit status 2
        from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    >>> import os, tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     # stderr: immunotrack confirm: error: ...confirmed.png: the output must be NIfTI (.nii or .nii.gz).
    ...     main(["confirm", "--t1", d, "--t2", d, "-o", os.path.join(d, "confirmed.png")])
    2
    """
    import sys

    import numpy as np

    from .. import outputs, provenance
    from ..analysis.confirm import CONFIRM_PARAMETERS, confirm_dual_mode
    from ..errors import InputError
    from ..io import save_labels, save_volume
    from ..progress import text_progress

    out = Path(args.output)
    if not out.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{out}: the output must be NIfTI (.nii or .nii.gz).")
    # every output checked before any work, so nothing is half-written
    planned = [out]
    if args.table:
        if not args.table.lower().endswith(".csv"):
            raise InputError(f"{args.table}: the table must be a .csv file.")
        planned.append(Path(args.table))
    baseline = bool(args.t1_pre or args.t2_pre or args.t1_map_pre or args.t2_map_pre)
    if args.maps_prefix:
        planned += [Path(f"{args.maps_prefix}_t1_change.nii.gz"), Path(f"{args.maps_prefix}_t2_change.nii.gz")]
        if not baseline:
            planned.append(Path(f"{args.maps_prefix}_ratio.nii.gz"))
    if len({p.resolve() for p in planned}) != len(planned):
        raise InputError("two outputs have the same path; give different names to -o, --table and --maps-prefix.")
    for path in planned:
        outputs.check_output(path, args.overwrite)

    from ._common import transform_arg

    files = {
        "t1_post": args.t1,
        "t2_post": args.t2,
        "t1_pre": args.t1_pre,
        "t2_pre": args.t2_pre,
        "t1_map_pre": args.t1_map_pre,
        "t1_map_post": args.t1_map_post,
        "t2_map_pre": args.t2_map_pre,
        "t2_map_post": args.t2_map_post,
        "search_mask": args.search_mask,
        "reference_mask": args.reference_mask,
    }
    roles = {
        "t1_post": "T1POST",
        "t2_post": "T2POST",
        "t1_pre": "T1PRE",
        "t2_pre": "T2PRE",
        "t1_map_pre": "T1 map pre",
        "t1_map_post": "T1 map post",
        "t2_map_pre": "T2 map pre",
        "t2_map_post": "T2 map post",
        "search_mask": "search mask",
        "reference_mask": "reference mask",
    }
    volumes = {k: (load(v, f"{roles[k]} {v}") if v is not None else None) for k, v in files.items()}
    # either role of an `immunotrack register` output is accepted: the direction is read from its record,
    # else decided by overlap (docs/methods/transforms.md)
    transform, direction = transform_arg(
        args.transform,
        volumes["t1_post"],
        volumes["t2_post"],
        what="--transform",
        image_path=args.t1,
        other_path=args.t2,
        image_name="T1POST",
        other_name="T2POST",
    )
    baseline = volumes["t1_pre"] if volumes["t1_pre"] is not None else volumes["t2_pre"]
    auto_pre = args.pre_transform is not None and args.pre_transform.strip().lower() == "auto"
    pre_transform, pre_direction = (
        (None, None)
        if baseline is None
        else ("auto", "registered now (--pre-transform auto): T1POST fixed, T1PRE moving")
        if auto_pre
        else transform_arg(
            args.pre_transform,
            volumes["t1_post"],
            baseline,
            what="--pre-transform",
            image_path=args.t1,
            other_path=args.t1_pre or args.t2_pre,
            image_name="T1POST",
            other_name="the baseline",
        )
    )
    # a progress bar only on a terminal: in a pipe or a log, an error stays the only line on stderr
    bar = text_progress("confirm") if sys.stderr.isatty() else None
    shown = []

    def progress(fraction, message=""):
        shown.append(fraction)
        if bar is not None:
            bar(fraction, message)

    pre_record = None
    if isinstance(pre_transform, str) and pre_transform == "auto":  # the baseline registered onto the post now
        from ..alignment import baseline_alignment

        if volumes["t1_pre"] is None or volumes["t1_pre"].same_grid(volumes["t1_post"]):
            pre_transform, pre_record = None, {"method": "same grid (no registration)", "tolerance_voxels": 0}
        else:
            pre_transform, pre_record = baseline_alignment(volumes["t1_post"], volumes["t1_pre"])
            pre_record = dict(pre_record, registered="T1PRE onto T1POST")
    try:
        result = confirm_dual_mode(
            **volumes,
            **CONFIRM_PARAMETERS.from_args(args),
            transform=transform,
            pre_transform=pre_transform,
            baseline_tolerance_voxels=args.baseline_tolerance_voxels,
            pre_alignment_record=pre_record,
            progress=progress,
        )
    except BaseException:
        if bar is not None and shown and shown[-1] < 1.0:
            sys.stderr.write("\n")  # end the progress line so the error stands on its own line
        raise
    status = result.status
    params = dict(
        result.parameters,
        transform_file=args.transform,
        pre_transform_file=args.pre_transform,
        transform_direction=direction,
        pre_transform_direction=pre_direction,
    )
    extra = {
        "status": status,
        "confirmed": result.confirmed,
        "description": result.labels.metadata["description"],
        "regions": len(result.table),
    }
    record = provenance.record("confirm", inputs=files, parameters=params, warnings=result.warnings, **extra)
    labels = result.labels
    save_labels(labels, out, overwrite=args.overwrite, provenance=record, description=labels.metadata["description"])
    if args.table:
        outputs.write_table(result.table, args.table, provenance=record, overwrite=args.overwrite)
    if args.maps_prefix:
        maps = [("t1_change", result.t1_change), ("t2_change", result.t2_change)]
        if result.ratio is not None:
            maps.append(("ratio", result.ratio))
        for suffix, vol in maps:
            vol = vol.replace(data=np.nan_to_num(vol.numpy(), nan=0.0).astype(np.float32))
            save_volume(
                vol,
                f"{args.maps_prefix}_{suffix}.nii.gz",
                overwrite=args.overwrite,
                provenance=dict(record, map=suffix, unit=vol.unit),
            )
    n = len(result.table)
    if result.confirmed:
        print(f"{n} confirmed region(s) (T1: {result.mode['t1']}, T2: {result.mode['t2']}) -> {out}")
    else:
        print(f"UNCONFIRMED: {n} candidate region(s), no baseline; haemorrhage, melanin or fat possible -> {out}")
    if n:
        cols = [
            "label",
            "status",
            "voxels",
            "volume_mm3",
            "centroid_x_mm",
            "centroid_y_mm",
            "centroid_z_mm",
            "mean_t1_enhancement_fraction",
            "mean_t2_change_fraction",
        ]
        print(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0
