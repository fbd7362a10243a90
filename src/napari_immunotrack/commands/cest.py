"""CEST maps from a Z-spectrum series: B0 (ppm), MTRasym at chosen offsets and
multi-pool Lorentzian amplitude/width/offset maps (docs/methods/cest.md).

SERIES is a 4D image, one 3D image per saturation offset; the offsets come from
--offsets-ppm (a list or a file) or the series' JSON sidecar
("SaturationOffsetsPPM", or "MTOffsetFrequency" in Hz with "MagneticFieldStrength"). M0 is an unsaturated image (--m0) or the frames at or
beyond --m0-offset (e.g. -300 ppm) in the series. B0 comes from a WASSR scan
(--wassr, maximum symmetry) or the Z-spectrum minimum (spline).

OUT_DIR (written whole or not at all) holds b0_ppm.nii.gz,
mtrasym_<ppm>ppm.nii.gz per --mtrasym-ppm offset, amplitude_<pool>.nii.gz
(fraction of M0), width_<pool>.nii.gz (FWHM, ppm), offset_<pool>.nii.gz (ppm from
water; for water: residual B0), fit_rmse.nii.gz, zspectrum_b0corrected.nii.gz
and offsets_ppm.json, each map with a .provenance.json beside it.

Example:
  immunotrack cest cest.nii.gz --offsets-ppm offsets.txt --m0-offset -300 \\
      --wassr wassr.nii.gz --wassr-offsets-ppm -1,-0.9,...,1 -o cest_maps --pool lrp:3.4
"""

from __future__ import annotations

HELP = "CEST: B0 map, MTRasym and multi-pool Lorentzian maps from a Z-spectrum series"


def add_arguments(parser):
    """Add the arguments of ``immunotrack cest`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        Image arguments must name existing paths (checked when parsing); ``--m0`` and ``--m0-offset``
        exclude each other.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack cest")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([".", "-o", "maps"])
    >>> args.pools, args.pool, args.mtrasym_ppm, args.b0_method, args.smoothing, args.z_floor, args.max_iter
    ('water,amide,amine,noe,mt', [], '3.5', None, 0.0, 0.02, 100)
    >>> args.offsets_ppm, args.m0, args.m0_offset, args.wassr, args.mask
    (None, None, None, None, None)
    """
    import re

    from ._common import existing_path

    # offsets lists start with a minus sign (--offsets-ppm -300,-6,-5.8,...): argparse must read them as
    # values, not as unknown options (its own matcher only knows single negative numbers)
    parser._negative_number_matcher = re.compile(r"^-\d*\.?\d+([eE][-+]?\d+)?([,;\s]+-?\d*\.?\d+([eE][-+]?\d+)?)*,?$")

    parser.add_argument(
        "series",
        type=existing_path,
        metavar="SERIES",
        help="4D CEST series (NIfTI/DICOM), one image per saturation offset",
    )
    parser.add_argument(
        "--offsets-ppm",
        metavar="LIST|FILE",
        help="saturation offsets in ppm, comma-separated (e.g. -300,-6,-5.8,...,6) or a file (default: the JSON sidecar's "
        "SaturationOffsetsPPM)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--m0", type=existing_path, metavar="M0", help="unsaturated reference image (3D, or 4D repeats)")
    group.add_argument(
        "--m0-offset",
        type=float,
        metavar="PPM",
        help="frames at or beyond this offset (e.g. -300) are M0 (default: |offset| >= 100 ppm)",
    )
    parser.add_argument("--wassr", type=existing_path, metavar="WASSR", help="WASSR series for the B0 map")
    parser.add_argument(
        "--wassr-offsets-ppm", metavar="LIST|FILE", help="offsets of the WASSR series (default: its JSON sidecar)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    parser.add_argument(
        "--pools",
        default="water,amide,amine,noe,mt",
        help="Lorentzian pools (default water,amide,amine,noe,mt); 'none' skips the fit",
    )
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="NAME:PPM",
        help="add a pool at PPM from water (e.g. lrp:3.4), or move a default pool; repeatable",
    )
    parser.add_argument(
        "--mtrasym-ppm", default="3.5", metavar="LIST", help="offsets of the MTRasym maps, ppm (default 3.5)"
    )
    parser.add_argument(
        "--b0-method",
        choices=("wassr", "wassr-minimum", "minimum", "fit", "none"),
        help="B0 from WASSR symmetry (default with --wassr), WASSR minimum, Z-spectrum minimum "
        "(default otherwise), the water pool of a Lorentzian fit, or none",
    )
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        help="smoothing-spline lambda for the B0 search (default 0: interpolating spline)",
    )
    parser.add_argument(
        "--z-floor",
        type=float,
        default=0.02,
        help="Z values below this are left out of the Lorentzian fit (magnitude noise floor near "
        "water; about 3 x noise / M0; default 0.02)",
    )
    parser.add_argument("--max-iter", type=int, default=100, help="Levenberg-Marquardt iterations at most (100)")
    parser.add_argument(
        "--mask", type=existing_path, help="analyse only these voxels (default: M0 above 5 %% of its 99th percentile)"
    )


def run(args) -> int:
    """Run ``immunotrack cest``: B0, MTRasym and Lorentzian pool maps from a Z-spectrum series.

    Calls :func:`napari_immunotrack.analysis.cest.analyse_cest` and writes into the output folder, all at
    once: one NIfTI per map with a JSON sidecar giving its unit, the B0-corrected Z-spectra
    (``zspectrum_b0corrected.nii.gz``), ``offsets_ppm.json`` and ``cest.provenance.json``. See
    ``docs/methods/cest.md``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (an existing output folder without ``--overwrite``, offsets that do not match the
        series, ``--wassr-offsets-ppm`` without ``--wassr``, ...) raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    A water line 1 ppm wide centred on 0 ppm in every voxel, M0 at -300 ppm, no pool fit:

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> offsets = [-300, -4, -3.5, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 3.5, 4]
    >>> z = [1.0] + [1 - 0.9 / (1 + (2 * w) ** 2) for w in offsets[1:]]
    >>> series = np.asarray(z, np.float32) * np.full((4, 4, 4, 1), 1000, np.float32)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     nib.save(nib.Nifti1Image(series, np.eye(4)), os.path.join(d, "cest.nii.gz"))
    ...     main(["cest", os.path.join(d, "cest.nii.gz"), "--offsets-ppm", ",".join(map(str, offsets)),
    ...           "--m0-offset", "-300", "--pools", "none", "-o", os.path.join(d, "maps")])  # doctest: +ELLIPSIS
    ...     print(sorted(f for f in os.listdir(os.path.join(d, "maps")) if f.endswith(".nii.gz")))
    2 maps of 64 voxels -> ...maps (B0 median ...0.000 ppm; provenance beside each map)
    0
    ['b0_ppm.nii.gz', 'mtrasym_3.5ppm.nii.gz', 'zspectrum_b0corrected.nii.gz']
    """
    from pathlib import Path

    import numpy as np

    from ..analysis.cest import (
        analyse_cest,
        make_pools,
        parse_offsets,
        parse_pool_option,
    )
    from ..errors import InputError
    from ..io.nifti import write_nifti
    from ..outputs import atomic_output_dir, check_writable, write_json
    from ..progress import text_progress
    from ..provenance import record
    from ..volume import Volume
    from ._common import load

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another folder or pass --overwrite to replace it.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder name for the output.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"the folder {parent} does not exist; create it first or choose another output path.")
    check_writable(parent)
    if args.wassr_offsets_ppm and not args.wassr:
        raise InputError("--wassr-offsets-ppm given without --wassr; give the WASSR series too.")
    names = [] if args.pools.strip().lower() == "none" else [n for n in args.pools.split(",") if n.strip()]
    extra = dict(parse_pool_option(p) for p in args.pool)
    pools = make_pools([n for n in names if n.strip().lower() != "water"], extra)
    fit = bool(names or extra)
    mtr = parse_offsets(args.mtrasym_ppm, "--mtrasym-ppm")
    series = load(args.series, "CEST series")
    offsets = parse_offsets(args.offsets_ppm) if args.offsets_ppm else None
    m0 = load(args.m0, "M0 image") if args.m0 else None
    wassr = load(args.wassr, "WASSR series") if args.wassr else None
    wassr_offsets = parse_offsets(args.wassr_offsets_ppm, "--wassr-offsets-ppm") if args.wassr_offsets_ppm else None
    mask = load(args.mask, "mask") if args.mask else None
    result = analyse_cest(
        series,
        offsets,
        m0=m0,
        m0_offset=args.m0_offset,
        wassr=wassr,
        wassr_offsets=wassr_offsets,
        mtrasym_ppm=mtr,
        pools=pools,
        b0_method=args.b0_method,
        smoothing=args.smoothing,
        mask=mask,
        fit=fit,
        z_floor=args.z_floor,
        max_iter=args.max_iter,
        progress=text_progress("cest"),
    )
    prov = record(
        "cest",
        inputs={"series": args.series, "m0": args.m0, "wassr": args.wassr, "mask": args.mask},
        parameters=result.parameters,
        warnings=result.warnings,
    )
    zc = Volume(
        np.nan_to_num(result.z, nan=0.0).astype(np.float32),
        series.affine,
        modality="MR",
        unit="fraction of M0",
        metadata={"leading_axis": "offset"},
        name="zspectrum_b0corrected",
    )
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        for name, volume in result.maps.items():
            write_nifti(volume, tmp / f"{name}.nii.gz", provenance=dict(prov, quantity=name, unit=volume.unit))
            # a sidecar with the unit: the map reopens in ppm / fraction of M0, not "a.u."
            write_json(
                tmp / f"{name}.json",
                {"Units": volume.unit, "Quantity": name, "Description": "immunotrack cest, docs/methods/cest.md"},
            )
        write_nifti(zc, tmp / "zspectrum_b0corrected.nii.gz", provenance=dict(prov, quantity="Z (B0-corrected)"))
        write_json(
            tmp / "zspectrum_b0corrected.json", {"SaturationOffsetsPPM": result.dw.tolist(), "Units": "fraction of M0"}
        )
        write_json(tmp / "offsets_ppm.json", {"SaturationOffsetsPPM": result.dw.tolist()})
        write_json(tmp / "cest.provenance.json", prov)
    for w in result.warnings:
        import warnings

        from ..errors import ImmunotrackWarning

        warnings.warn(w, ImmunotrackWarning, stacklevel=1)
    print(
        f"{len(result.maps)} maps of {result.parameters['voxels']} voxels -> {out} "
        f"(B0 median {np.nanmedian(result.b0_ppm):.3f} ppm; provenance beside each map)"
    )
    return 0
