"""Relaxometry maps: T2*, T2 or T1 (ms) of a 4D series, with R, fit quality, an unreliable mask and,
against a baseline series, delta R and the agent's concentration (docs/methods/relaxometry.md).

SERIES is a 4D NIfTI (a BIDS JSON sidecar beside it may list EchoTime / FlipAngle /
InversionTime, in seconds and degrees as BIDS says), a multi-echo DICOM series, or
any 4D image with the lists given here; lists given here win over the headers and
apply to the baseline series too.

Written beside MAP (e.g. t2s.nii.gz): t2s_R2star.nii.gz (1/s), t2s_goodness.nii.gz
(R^2), t2s_unreliable.nii.gz (0 = reliable; 1 fit failed, 2 out of range, 4 too few
samples above noise, summed), t2s_S0.nii.gz (or _M0), t2s_B1.nii.gz (EPG); with
--baseline: t2s_deltaR2star.nii.gz, t2s_Fe_mM.nii.gz and t2s_Fe_ug.nii.gz (ug per voxel;
Gd for T1 models unless --metal). Each map gets its provenance sidecar and a BIDS-style
JSON (x.json) holding its unit.

Example: immunotrack relax megre.nii.gz --model t2star -o t2s.nii.gz
         --baseline megre_pre.nii.gz --relaxivity ferumoxytol --roi rois.nii.gz --table t2s.csv
"""

from __future__ import annotations

HELP = "relaxometry maps (T2*, T2, T1 VFA/SR/IR), delta R against a baseline, iron/Gd concentration"


def _number_list(text, flag):
    from ..errors import InputError

    if text is None:
        return None
    from pathlib import Path

    raw = Path(text).read_text() if Path(text).is_file() else text
    try:
        values = [float(v) for v in raw.replace(";", ",").replace("\n", ",").replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a list of numbers; write e.g. {flag} 2,4,6,8.") from None
    if not values:
        raise InputError(f"{flag} is empty; write e.g. {flag} 2,4,6,8.")
    return values


def add_arguments(parser):
    """Add the arguments of ``immunotrack relax`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        The ``--model`` choices and the ``--method`` help come from
        :mod:`napari_immunotrack.analysis.relaxometry` (``MODELS``, ``METHODS``).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack relax")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["mge.nii.gz", "--model", "t2star", "--echo-times-ms", "2,4,6,8", "-o", "t2s.nii.gz"])
    >>> args.series, args.model, args.echo_times_ms, args.method, args.noise_sigma, args.baseline
    ('mge.nii.gz', 't2star', '2,4,6,8', None, None, None)
    """
    from ..analysis.relaxometry import AGENTS, METHODS, MODELS
    from ._common import add_output

    parser.add_argument("series", help="4D series: one volume per echo / flip angle / inversion or saturation time")
    parser.add_argument(
        "--model",
        required=True,
        choices=MODELS,
        help="t2star (multi-echo GRE), t2 (multi-echo SE), "
        "t1vfa (variable flip angle), t1sr (saturation recovery), t1ir (inversion recovery)",
    )
    add_output(parser, help="output map in ms (.nii.gz) on SERIES' grid; companion maps are written beside it")
    parser.add_argument("--echo-times-ms", help="echo times in ms, e.g. 2,4,6,8 (or a text file)")
    parser.add_argument("--flip-angles-deg", help="nominal flip angles in degrees for t1vfa, e.g. 3,10,20")
    parser.add_argument("--tr-ms", help="repetition time in ms for t1vfa")
    parser.add_argument("--inversion-times-ms", help="inversion times in ms for t1ir")
    parser.add_argument("--saturation-times-ms", help="delays after saturation in ms for t1sr")
    parser.add_argument("--b1", help="relative B1 map (1 = nominal; percent is recognised) scaling the VFA flip angles")
    parser.add_argument(
        "--method",
        help="fit method: " + "; ".join(f"{m}: {', '.join(v)}" for m, v in METHODS.items()) + " (default: the first)",
    )
    parser.add_argument(
        "--noise-sigma",
        help="noise sigma per channel in image units (default: header NoiseSigma, "
        "else estimated from the background; 0 = no noise floor)",
    )
    parser.add_argument("--refocusing-angle-deg", help="nominal refocusing angle for --method epg (default 180)")
    parser.add_argument("--mask", help="fit only inside this mask (on SERIES' grid)")
    parser.add_argument(
        "--baseline",
        help="pre-injection series of the same kind: gives delta R and, with --relaxivity, the concentration",
    )
    parser.add_argument(
        "--baseline-transform",
        help="world-to-world transform SERIES -> baseline (.tfm, 4x4 matrix "
        "file or 'identity'; default identity: the same animal position)",
    )
    parser.add_argument(
        "--relaxivity",
        help="relaxivity in mM^-1 s^-1 (r2* for t2star, r2 for t2, r1 for T1 "
        f"models), or an agent name for the default at the series' field: {', '.join(AGENTS)}",
    )
    parser.add_argument(
        "--field-t",
        help="field strength in T for an agent's default relaxivity (default: the header's MagneticFieldStrength)",
    )
    parser.add_argument(
        "--metal",
        choices=("Fe", "Gd"),
        help="metal of the concentration (default: the agent's; "
        "Fe for T2/T2* and Gd for T1 models with a numeric relaxivity)",
    )
    parser.add_argument("--roi", help="ROI label image on any grid (0 = background)")
    parser.add_argument("--table", help="output CSV: one row per ROI label (needs --roi)")
    parser.add_argument("--roi-transform", help="world-to-world transform SERIES -> ROI image (default identity)")


def _companions(out):
    from pathlib import Path

    out = Path(out)
    name = out.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return out.with_name(name[: -len(ext)]), ext
    from ..errors import InputError

    raise InputError(f"{out}: the map must be a NIfTI file (.nii.gz or .nii).")


def _json_beside(path):
    stem, _ext = _companions(path)
    return f"{stem}.json"


def run(args) -> int:
    """Run ``immunotrack relax``: fit a relaxation map and write it with its companion maps.

    Writes the map (ms) on the series' grid and its companions beside it: the rate
    (``<stem>_R2star``, ``_R2`` or ``_R1``), ``_S0`` (T2 models) or ``_M0`` (T1 models), ``_goodness``,
    ``_unreliable``, ``_B1`` with ``--method epg``; with ``--baseline`` the rate change
    (``_deltaR2star``, ...) and, with ``--relaxivity`` too, the concentration (``_Fe_mM`` or ``_Gd_mM``)
    and mass (``_Fe_ug``, ...) maps. Every output is checked before any work; each gets a JSON sidecar
    with its unit and a provenance sidecar; with ``--roi`` a per-label table is written too.
    See :func:`napari_immunotrack.analysis.relaxometry.fit_relaxation`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (missing echo times, ``--table`` without ``--roi``, ``--relaxivity`` without
        ``--baseline``, an existing output without ``--overwrite``, ...) raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    Four echoes of a mono-exponential decay with T2* = 20 ms, no noise floor:

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> echoes = 1000 * np.exp(-np.array([2.0, 4, 6, 8]) / 20.0) * np.ones((4, 4, 4, 1))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     series = os.path.join(d, "mge.nii.gz")
    ...     nib.save(nib.Nifti1Image(echoes.astype(np.float32), np.diag([0.5, 0.5, 0.5, 1.0])), series)
    ...     main(["relax", series, "--model", "t2star", "--echo-times-ms", "2,4,6,8", "--noise-sigma", "0",
    ...           "-o", os.path.join(d, "t2star.nii.gz")])  # doctest: +ELLIPSIS
    ...     print(sorted(f for f in os.listdir(d) if f.endswith(".nii.gz")))
    t2star: 64 voxels fitted, 0 unreliable, median T2star 20 ms -> ...t2star.nii.gz (+ 4 companion maps; provenance: t2star.nii.gz.provenance.json)
    0
    ['mge.nii.gz', 't2star.nii.gz', 't2star_R2star.nii.gz', 't2star_S0.nii.gz', 't2star_goodness.nii.gz', 't2star_unreliable.nii.gz']
    """
    import numpy as np

    from ..analysis import relaxometry as rx
    from ..errors import InputError
    from ..io.nifti import write_nifti
    from ..outputs import check_output, sidecar_path, write_json, write_table
    from ..provenance import record
    from ._common import load, read_transform_arg
    from .quantify import number, progress_for

    model = rx.check_model(args.model)
    out = check_output(args.output, args.overwrite)
    stem, ext = _companions(out)
    if args.table and not args.roi:
        raise InputError("--table needs --roi (the ROI label image to tabulate).")
    if args.roi and not args.table:
        raise InputError("--roi needs --table (the CSV to write).")
    if args.relaxivity and not args.baseline:
        raise InputError(
            "--relaxivity needs --baseline (the pre-injection series): the concentration comes from "
            "delta R = R - R_baseline."
        )
    lists = {
        "echo_times_ms": _number_list(args.echo_times_ms, "--echo-times-ms"),
        "flip_angles_deg": _number_list(args.flip_angles_deg, "--flip-angles-deg"),
        "inversion_times_ms": _number_list(args.inversion_times_ms, "--inversion-times-ms"),
        "saturation_times_ms": _number_list(args.saturation_times_ms, "--saturation-times-ms"),
    }
    tr = number(args.tr_ms, "--tr-ms")
    sigma = number(args.noise_sigma, "--noise-sigma", positive=False, minimum=0)
    refocusing = number(args.refocusing_angle_deg, "--refocusing-angle-deg")
    series = load(args.series, "series")
    rate_name = rx.QUANTITY[model][1]
    amp_name = "S0" if model in ("t2star", "t2") else "M0"
    paths = {
        "rate": f"{stem}_{rate_name}{ext}",
        "goodness": f"{stem}_goodness{ext}",
        "unreliable": f"{stem}_unreliable{ext}",
        "amplitude": f"{stem}_{amp_name}{ext}",
    }
    if args.method == "epg":
        paths["b1"] = f"{stem}_B1{ext}"
    relax = metal = None
    if args.baseline:
        paths["delta"] = f"{stem}_delta{rate_name}{ext}"
        if args.relaxivity:
            try:
                relax = float(args.relaxivity)
                metal = args.metal or ("Fe" if model in ("t2star", "t2") else "Gd")
                source = "given on the command line"
            except ValueError:
                field_t = number(args.field_t, "--field-t") or series.metadata.get("MagneticFieldStrength")
                if field_t is None:
                    raise InputError(
                        f"{args.series} has no MagneticFieldStrength in its header; give --field-t to "
                        f"pick the default relaxivity of {args.relaxivity}."
                    ) from None
                agent = rx.agent_relaxivity(args.relaxivity, float(field_t))
                relax, metal, source = agent.for_model(model), args.metal or agent.metal, agent.source
            if not np.isfinite(relax) or relax <= 0:
                raise InputError(f"--relaxivity {args.relaxivity} must be > 0 (mM^-1 s^-1).")
            paths["concentration"] = f"{stem}_{metal}_mM{ext}"
            paths["mass"] = f"{stem}_{metal}_ug{ext}"
    for p in [str(out)] + list(paths.values()):  # refuse before any work
        check_output(p, args.overwrite)
        check_output(_json_beside(p), args.overwrite)
    if args.table:
        check_output(args.table, args.overwrite)
    b1 = load(args.b1, "B1 map") if args.b1 else None
    mask = load(args.mask, "mask") if args.mask else None
    given = {k: v for k, v in lists.items() if v is not None}
    kwargs = dict(given, tr_ms=tr, b1=b1, method=args.method, noise_sigma=sigma, mask=mask, refocusing_deg=refocusing)
    maps = rx.fit_relaxation(series, model, progress=progress_for("relax"), **kwargs)
    parameters = dict(maps.parameters)
    notes = list(maps.warnings)
    extra_vols = {}
    if args.baseline:
        pre = load(args.baseline, "baseline series")
        transform = (
            read_transform_arg(args.baseline_transform, "--baseline-transform") if args.baseline_transform else None
        )
        pre_kwargs = dict(kwargs, mask=None, b1=b1 if model == "t1vfa" else None)
        pre_maps = rx.fit_relaxation(pre, model, progress=progress_for("relax baseline"), **pre_kwargs)
        notes += [f"baseline: {w}" for w in pre_maps.warnings]
        delta = rx.delta_rate(
            maps.rate_per_s,
            pre_maps.rate_per_s,
            transform=transform,
            post_unreliable=maps.unreliable,
            baseline_unreliable=pre_maps.unreliable,
        )
        extra_vols["delta"] = delta
        parameters["baseline_voxels_unreliable"] = pre_maps.parameters["voxels_unreliable"]
        if relax is not None:
            conc = rx.concentration(delta, relax, metal)
            extra_vols["concentration"] = conc
            extra_vols["mass"] = rx.metal_mass_ug(conc, metal)
            parameters.update(
                relaxivity_per_mM_s=relax,
                relaxivity_source=source,
                metal=metal,
                molar_mass_g_per_mol=rx.MOLAR_MASS[metal],
            )
    prov = record(
        "relax",
        inputs={"series": args.series, "baseline": args.baseline, "b1": args.b1, "mask": args.mask, "roi": args.roi},
        parameters=parameters,
        warnings=notes,
    )
    outputs = {
        "map": (maps.time_ms, str(out)),
        "rate": (maps.rate_per_s, paths["rate"]),
        "goodness": (maps.goodness, paths["goodness"]),
        "unreliable": (maps.unreliable, paths["unreliable"]),
        "amplitude": (maps.amplitude, paths["amplitude"]),
    }
    if "b1" in paths:
        outputs["b1"] = (maps.extra["b1"], paths["b1"])
    for key, vol in extra_vols.items():
        outputs[key] = (vol, paths[key])
    table = None
    if args.table:
        roi = load(args.roi, "ROI")
        roi_transform = read_transform_arg(args.roi_transform, "--roi-transform") if args.roi_transform else None
        t_name = rx.QUANTITY[model][0]
        tab_maps = {f"{t_name}_ms": maps.time_ms, f"{rate_name}_per_s": maps.rate_per_s, "goodness_R2": maps.goodness}
        conc_key = None
        if "delta" in extra_vols:
            tab_maps[f"delta{rate_name}_per_s"] = extra_vols["delta"]
        if "concentration" in extra_vols:
            conc_key = f"{metal}_mM"
            tab_maps[conc_key] = extra_vols["concentration"]
        table = rx.relaxometry_roi_table(
            tab_maps,
            roi,
            unreliable=maps.unreliable,
            concentration_key=conc_key,
            metal=metal or "Fe",
            transform=roi_transform,
        )
    for key, (vol, path) in outputs.items():
        write_nifti(
            vol,
            path,
            overwrite=args.overwrite,
            provenance=dict(prov, output=key),
            description=f"immunotrack relax {model} {key}",
        )
        # a BIDS-style JSON beside each map carries its unit, so readers (and napari) show it
        write_json(
            _json_beside(path),
            {"Units": vol.unit, "Modality": "MR", "Description": vol.name, "GeneratedBy": "immunotrack relax"},
            overwrite=args.overwrite,
        )
    if table is not None:
        write_table(table, args.table, provenance=dict(prov, output="table"), overwrite=args.overwrite)
    n_fit = parameters["voxels_fitted"]
    bad = parameters["voxels_unreliable"]
    t = maps.time_ms.numpy()
    ok = (maps.unreliable.numpy() == 0) & np.isfinite(t)
    median = float(np.median(t[ok])) if ok.any() else float("nan")
    print(
        f"{model}: {n_fit} voxels fitted, {bad} unreliable, median {rx.QUANTITY[model][0]} {median:.4g} ms -> {out} "
        f"(+ {len(outputs) - 1} companion maps{', table ' + str(args.table) if table is not None else ''}; "
        f"provenance: {sidecar_path(out).name})"
    )
    return 0
