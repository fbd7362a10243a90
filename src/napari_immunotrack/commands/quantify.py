"""PET/SPECT readouts per ROI: activity concentration (Bq/mL), SUV (bw, lbm, bsa, ibw),
SUVpeak, total activity, %ID and %ID/g, computed on the PET's own grid with the
ROIs (drawn on any grid, e.g. the MRI) carried to it with partial-voxel weights.

PET is a DICOM series folder or a NIfTI with a JSON sidecar holding the same DICOM
fields (Units, DecayCorrection, RadionuclideTotalDose, RadiopharmaceuticalStartDateTime,
RadionuclideHalfLife, PatientWeight, SeriesDate, SeriesTime, ...). Header values can be
replaced (--dose-mbq, --weight-kg, --injection-time, ...); replacements and every guess
are recorded in the provenance file beside the CSV.

Example: immunotrack quantify pet_dicom/ --roi organs.nii.gz -o readouts.csv --suv lbm
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import InputError

HELP = "PET/SPECT Bq/mL, SUV, SUVpeak, %ID per ROI on the PET's own grid"


# ---------------------------------------------------------------------------- shared by fluorine and mpi
def number(value, name: str, *, positive: bool = True, minimum=None, integer: bool = False):
    """A command-line number checked here, so that a bad value is one line and exit status 2 (not
    argparse's usage block). Shared by the ``quantify``, ``fluorine``, ``mpi`` and ``relax`` verbs.

    Parameters
    ----------
    value : str, float or None
        The text given on the command line (or a number); None passes through.
    name : str
        The flag, for the message (e.g. ``"--dose-mbq"``).
    positive : bool, default True
        Require a value greater than 0.
    minimum : float, optional
        Require a value of at least this.
    integer : bool, default False
        Require a whole number and return an int.

    Returns
    -------
    float, int or None
        The value; None when `value` is None.

    Raises
    ------
    InputError
        Not a number, not finite, not positive (with `positive`), below `minimum`, or not whole (with
        `integer`).

    Examples
    --------
    >>> number("1e12", "--fluorine-per-cell")
    1000000000000.0
    >>> number("3", "--supersample", integer=True), number(None, "--noise-sigma")
    (3, None)
    >>> number("0", "--dilate-mm", positive=False, minimum=0.0)
    0.0
    >>> number("-2", "--dose-mbq")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: --dose-mbq must be greater than 0 (got -2).
    >>> number("ten", "--weight-kg")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: --weight-kg must be a number, not 'ten'.
    """
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number, not {value!r}.")
    if positive and not x > 0:
        raise InputError(f"{name} must be greater than 0 (got {value}).")
    if minimum is not None and x < minimum:
        raise InputError(f"{name} must be at least {minimum} (got {value}).")
    if integer:
        if x != int(x):
            raise InputError(f"{name} must be a whole number (got {value}).")
        return int(x)
    return x


def load_transform(path):
    """The 4x4 matrix of a transform file as written (no direction resolved; see ``_common.transform_arg``).

    Parameters
    ----------
    path : str, Path or None
        An ITK ``.tfm``/``.txt``/``.mat`` file or a text file holding a 4x4 matrix (world RAS mm).

    Returns
    -------
    numpy.ndarray or None
        The file's fixed-to-moving 4x4 matrix (RAS mm); None when `path` is None.

    Raises
    ------
    InputError
        The file cannot be read as a transform.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> load_transform(None) is None
    True
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "shift.txt")
    ...     np.savetxt(path, [[1, 0, 0, 2.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    ...     print(load_transform(path)[:3, 3])
    [2.5 0.  0. ]
    """
    if path is None:
        return None
    from ..io.transforms import read_transform_file

    return read_transform_file(path, "transform").fixed_to_moving


def roi_label_names(roi_path) -> dict:
    r"""{label: name} from the BIDS-style ``.tsv`` (columns ``index``, ``name``) beside a label image.

    The table is the image's file name with its image extension (``.nii.gz``, ``.nii``, ``.ome.zarr``,
    ``.zarr``, ``.tif``, ``.tiff``, ``.nrrd``, ``.mha``) replaced by ``.tsv``.

    Parameters
    ----------
    roi_path : str or Path
        The label image.

    Returns
    -------
    dict of int to str
        Label value to name; ``{}`` when there is no such table or it cannot be read. Rows whose index is
        not a whole number are skipped.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with open(os.path.join(d, "organs.tsv"), "w") as f:
    ...         _ = f.write("index\tname\n1\tliver\n2\tspleen\nx\tbad\n")
    ...     print(roi_label_names(os.path.join(d, "organs.nii.gz")), roi_label_names(os.path.join(d, "other.nii")))
    {1: 'liver', 2: 'spleen'} {}
    """
    import csv

    p = Path(str(roi_path))
    stem = p.name
    for ext in (".nii.gz", ".nii", ".ome.zarr", ".zarr", ".tif", ".tiff", ".nrrd", ".mha"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    tsv = p.with_name(stem + ".tsv")
    if not tsv.is_file():
        return {}
    names = {}
    try:
        with open(tsv, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                try:
                    names[int(row.get("index", ""))] = str(row.get("name", "")).strip()
                except ValueError:
                    continue
    except OSError:
        return {}
    return names


def read_density_table(path) -> dict:
    r"""{organ name: density g/mL} from a CSV/TSV (``name``, ``density_g_ml``) or a JSON object.

    A CSV/TSV is read with its separator sniffed; without those column names, the first two columns are
    used (a ``density`` column also counts).

    Parameters
    ----------
    path : str or Path
        The ``--density-table`` file.

    Returns
    -------
    dict of str to float
        Organ name to tissue density in g/mL.

    Raises
    ------
    InputError
        The file does not exist, is not such a table, or holds a density that is not a positive number.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with open(os.path.join(d, "dens.csv"), "w") as f:
    ...         _ = f.write("name,density_g_ml\nliver,1.06\nlung,0.30\n")
    ...     print(read_density_table(os.path.join(d, "dens.csv")))
    {'liver': 1.06, 'lung': 0.3}
    """
    import json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--density-table {p} does not exist.")
    try:
        if p.suffix.lower() == ".json":
            table = json.loads(p.read_text())
            if not isinstance(table, dict):
                raise ValueError("not an object")
        else:
            import pandas as pd

            df = pd.read_csv(p, sep=None, engine="python")
            cols = {c.lower(): c for c in df.columns}
            name_col = cols.get("name") or df.columns[0]
            dens_col = cols.get("density_g_ml") or cols.get("density") or df.columns[1]
            table = dict(zip(df[name_col].astype(str), df[dens_col]))
        table = {str(k): float(v) for k, v in table.items()}
    except (ValueError, TypeError, IndexError, OSError) as exc:
        raise InputError(
            f"--density-table {p} is not a name,density_g_ml table ({' '.join(str(exc).split())[:80]})."
        ) from None
    bad = [k for k, v in table.items() if not (v > 0 and math.isfinite(v))]
    if bad:
        raise InputError(f"--density-table {p}: densities must be positive numbers (bad: {', '.join(bad[:3])}).")
    return table


def progress_for(label: str):
    """A progress bar on standard error when it is a terminal (keeps error output to one line otherwise).

    Parameters
    ----------
    label : str
        The bar's prefix (the verb's name).

    Returns
    -------
    TextProgress or None
        A :class:`napari_immunotrack.progress.TextProgress` callback ``(fraction, message)`` when standard
        error is a terminal, else None (no progress shown in a pipe, a log file or a test).

    Examples
    --------
    >>> import sys
    >>> progress_for("mpi") is None or sys.stderr.isatty()  # None here unless run at a terminal
    True
    """
    from ..progress import text_progress

    return text_progress(label) if sys.stderr.isatty() else None


def labels_arg(text):
    """The ``--labels`` option: which ROI labels to quantify.

    Parameters
    ----------
    text : str or None
        Comma-separated positive whole numbers (spaces allowed); None means every label.

    Returns
    -------
    list of int or None
        The label values in the order given; None when `text` is None.

    Raises
    ------
    InputError
        A value is not a whole number, is below 1, or none is given.

    Examples
    --------
    >>> labels_arg("1, 3,7"), labels_arg(None)
    ([1, 3, 7], None)
    >>> labels_arg("0")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: --labels must list positive label values (got '0').
    """
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--labels must be comma-separated whole numbers, not {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--labels must list positive label values (got {text!r}).")
    return values


# ---------------------------------------------------------------------------- the verb
def add_arguments(parser):
    """Add the arguments of ``immunotrack quantify`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        Also adds the transform arguments and ``--pvc``/``--psf-fwhm``/``--positron-range``.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack quantify")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["pet.nii.gz", "--roi", "organs.nii.gz", "-o", "pet.csv"])
    >>> args.pet, args.roi, args.output, args.suv, args.weight_unit, args.bsa_formula
    ('pet.nii.gz', 'organs.nii.gz', 'pet.csv', 'bw', 'auto', 'auto')
    >>> args.labels, args.frames, args.dose_mbq, args.overwrite
    (None, None, None, False)
    """
    from ..analysis.pet import PET_PARAMETERS  # defaults, limits and help of the analysis' options
    from ._common import add_output, add_transform_arguments

    parser.add_argument("pet", help="PET/SPECT: DICOM series folder, or NIfTI with a JSON sidecar of DICOM fields")
    parser.add_argument("--roi", required=True, help="ROI label image (NIfTI, DICOM, ...) on any grid; 0 = background")
    add_output(parser, help="output CSV, one row per ROI label")
    parser.add_argument(
        "--suv", default="bw", help="SUV type(s) besides bw: bw, lbm, bsa, ibw (comma-separated; default bw)"
    )
    PET_PARAMETERS.add_arguments(parser, ["lbm_formula"])
    g = parser.add_argument_group("header values (replace or complete the file's header)")
    g.add_argument("--dose-mbq", help="injected activity at the injection time (MBq)")
    g.add_argument("--weight-kg", help="body weight (kg; a mouse is about 0.025)")
    g.add_argument("--weight-unit", default="auto", help="how to read PatientWeight: auto (default), kg or g")
    g.add_argument("--height-cm", help="body height (cm), for SUV lbm/bsa/ibw")
    g.add_argument("--sex", help="M or F (for SUV lbm/ibw)")
    g.add_argument("--species", help="species (replaces PatientSpeciesDescription), e.g. mouse, rat, human")
    g.add_argument("--lean-mass-g", help="measured lean body mass (g; qMR/DEXA) for --suv lbm of any species")
    g.add_argument(
        "--bsa-formula",
        default="auto",
        choices=("auto", "dubois", "meeh"),
        help="body surface area for --suv bsa: Du Bois (humans; default) or Meeh k*W^(2/3) (animals)",
    )
    g.add_argument("--meeh-k", help="Meeh's constant k (cm2/g^(2/3); default 9.8, the mouse value)")
    g.add_argument("--injection-time", help="injection date-time, ISO 8601 (2024-05-01T09:30:00) or HH:MM:SS")
    g.add_argument("--scan-time", help="scan reference date-time (ISO 8601 or HH:MM:SS)")
    g.add_argument("--half-life-s", help="radionuclide half-life (s)")
    g.add_argument("--decay-correction", help="START, ADMIN or NONE (what the pixel values are corrected to)")
    g.add_argument("--units", help="pixel units: BQML, GML, CM2ML, CNTS, CPS ...")
    g.add_argument("--calibration-cps-per-mbq", help="counts images (SPECT): system calibration in cps/MBq")
    g.add_argument("--acquisition-duration-s", help="counts images: acquisition duration (s)")
    add_transform_arguments(parser, "PET")
    parser.add_argument("--labels", help="only these labels (comma-separated)")
    PET_PARAMETERS.add_arguments(parser, ["supersample", "density_g_ml"])
    parser.add_argument(
        "--density-table",
        help="CSV/TSV (name,density_g_ml) or JSON {name: g/mL} replacing the default densities by organ name",
    )
    PET_PARAMETERS.add_arguments(parser, ["peak_ml", "peak_fwhm_mm", "peak"])  # --peak-ml, --peak-fwhm-mm, --no-peak
    parser.add_argument(
        "--frames", help="dynamic PET: frame N or window A-B (0-based, inclusive; duration-weighted mean)"
    )
    from . import _pvc

    _pvc.add_arguments(parser)  # --pvc, --psf-fwhm, --positron-range


def run(args) -> int:
    """Run ``immunotrack quantify``: Bq/mL, SUV, SUVpeak and %ID per ROI label on the PET's own grid.

    The ROIs (any grid) are carried onto the PET grid with partial-voxel weights; header values given as
    flags replace or complete the file's header. Writes a CSV with one row per ROI label and its
    provenance sidecar. See :func:`napari_immunotrack.analysis.pet.quantify_pet` and ``docs/methods/pet.md``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (an unknown SUV type, a number that is not one, a missing dose or weight for SUV, an
        existing output without ``--overwrite``, ...) raises :class:`~napari_immunotrack.errors.InputError`
        (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    A uniform 400 kBq/mL image, 10 MBq injected into a 25 g mouse: SUVbw = 400 kBq/mL / (10 MBq / 25 g) = 1,
    and the 8-voxel ROI (0.008 mL) holds 3.2 kBq, 0.032 % of the injected dose.

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> import pandas as pd
    >>> from napari_immunotrack.cli import main
    >>> roi = np.zeros((6, 6, 6), np.uint8); roi[2:4, 2:4, 2:4] = 1
    >>> with tempfile.TemporaryDirectory() as d:
    ...     nib.save(nib.Nifti1Image(np.full((6, 6, 6), 4e5, np.float32), np.eye(4)), os.path.join(d, "pet.nii.gz"))
    ...     nib.save(nib.Nifti1Image(roi, np.eye(4)), os.path.join(d, "roi.nii.gz"))
    ...     main(["quantify", os.path.join(d, "pet.nii.gz"), "--roi", os.path.join(d, "roi.nii.gz"),
    ...           "--units", "BQML", "--dose-mbq", "10", "--weight-kg", "0.025", "--decay-correction", "ADMIN",
    ...           "--no-peak", "-o", os.path.join(d, "pet.csv")])  # doctest: +ELLIPSIS
    ...     table = pd.read_csv(os.path.join(d, "pet.csv"))
    1 ROI(s) -> ...pet.csv (provenance: pet.csv.provenance.json)
    0
    >>> table.loc[0, ["voxels", "volume_ml", "mean_bq_ml", "suv_bw_mean", "total_activity_mbq", "percent_id"]].tolist()
    [8.0, 0.008, 400000.0, 1.0, 0.0032, 0.032]
    """
    ###
    from ..analysis import pet as pet_mod
    from ..analysis.roi import carry_rois
    from ..outputs import check_output, sidecar_path, write_table
    from ..provenance import record
    from ._common import load, transform_arg

    out = check_output(args.output, args.overwrite)
    suv_types = [t.strip().lower() for t in str(args.suv).split(",") if t.strip()]
    for t in suv_types:
        if t.removeprefix("suv") not in pet_mod.SUV_TYPES:
            raise InputError(f"--suv must be among bw, lbm, bsa, ibw (got {t!r}).")
    if args.weight_unit not in ("auto", "kg", "g"):
        raise InputError(f"--weight-unit must be auto, kg or g (got {args.weight_unit!r}).")
    if args.sex is not None and args.sex.upper()[:1] not in ("M", "F", "O"):
        raise InputError(f"--sex must be M, F or O (got {args.sex!r}).")
    dc = args.decay_correction.upper() if args.decay_correction else None
    if dc is not None and dc not in ("START", "ADMIN", "NONE"):
        raise InputError(f"--decay-correction must be START, ADMIN or NONE (got {args.decay_correction!r}).")
    overrides = {
        "dose_mbq": number(args.dose_mbq, "--dose-mbq"),
        "weight_kg": number(args.weight_kg, "--weight-kg"),
        "height_cm": number(args.height_cm, "--height-cm"),
        "sex": args.sex.upper()[:1] if args.sex else None,
        "injection_time": args.injection_time,
        "scan_time": args.scan_time,
        "half_life_s": number(args.half_life_s, "--half-life-s"),
        "decay_correction": dc,
        "units": args.units,
        "calibration_cps_per_mbq": number(args.calibration_cps_per_mbq, "--calibration-cps-per-mbq"),
        "acquisition_duration_s": number(args.acquisition_duration_s, "--acquisition-duration-s"),
        "species": args.species,
        "lean_mass_kg": None if args.lean_mass_g is None else number(args.lean_mass_g, "--lean-mass-g") / 1000.0,
        "meeh_k": number(args.meeh_k, "--meeh-k"),
    }
    if args.bsa_formula != "auto":
        overrides["bsa_formula"] = args.bsa_formula
    overrides = {k: v for k, v in overrides.items() if v is not None}
    options = pet_mod.PET_PARAMETERS.from_args(args)  # LBM formula, supersampling, density, peak: checked
    supersample = options["supersample"]
    density_table = read_density_table(args.density_table) if args.density_table else None
    if options["peak_fwhm_mm"] is None and getattr(args, "psf_fwhm", None):  # the PVC option's PSF, when given
        try:
            options["peak_fwhm_mm"] = max(float(v) for v in str(args.psf_fwhm).split(","))
        except ValueError:
            options["peak_fwhm_mm"] = None
    labels = labels_arg(args.labels)
    from . import _pvc

    pvc = _pvc.requested(args)

    pet = load(args.pet, "PET")
    if pet.data.ndim != 3:  # a dynamic PET: the frame or window chosen with --frames (io/inveon.py)
        from ..io.inveon import choose_frames

        pet = choose_frames(pet, args.frames, args.pet)
    roi = load(args.roi, "ROI")
    transform, direction = transform_arg(
        args.transform,
        pet,
        roi,
        fixed=args.transform_fixed,
        image_path=args.pet,
        other_path=args.roi,
        image_name="the PET",
    )
    header = pet_mod.read_pet_header(pet, weight_unit=args.weight_unit, **overrides)
    rois = carry_rois(roi, pet, transform=transform, supersample=supersample, labels=labels, name="the PET")
    df = pet_mod.quantify_pet(
        pet,
        rois,
        suv_types=suv_types,
        header=header,
        label_names=roi_label_names(args.roi),
        density_table=density_table,
        progress=progress_for("quantify"),
        **options,
    )
    params = dict(
        df.attrs["parameters"],
        overrides=overrides,
        transform=args.transform,
        transform_direction=direction,
        labels=labels,
    )
    if pvc:  # corrected _pvc columns on the Bq/mL image (commands/_pvc.py)
        df, params["pvc"] = _pvc.correct(
            args,
            pet_mod.activity_concentration(pet, header, need_dose=True),
            rois if labels is None else roi,
            df,
            _pvc.PET_COLUMNS,
            transform=transform,
            supersample=supersample,
        )
    prov = record(
        "quantify",
        inputs={"pet": args.pet, "roi": args.roi, "transform": args.transform},
        parameters=params,
        warnings=df.attrs["warnings"],
        pet_header=df.attrs["header"],
    )
    write_table(df, out, provenance=prov, overwrite=args.overwrite)
    print(f"{len(df)} ROI(s) -> {out} (provenance: {sidecar_path(out).name})")
    return 0
