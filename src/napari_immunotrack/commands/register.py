"""Register MOVING to FIXED (rigid or affine, Mattes mutual information) and
write the transform as an ITK .tfm file (fixed physical point -> moving
physical point, LPS inside the file, as Slicer and ANTs read it). With
--fixed-points/--moving-points the transform is fitted to paired landmarks
instead. Optionally writes the moving image resampled onto the fixed grid.
Nothing is written unless the registration succeeds."""

from __future__ import annotations

import argparse

HELP = "register two images (rigid/affine mutual information, or landmarks) and write an ITK .tfm"


def add_arguments(parser):
    """Add the arguments of ``immunotrack register`` to a parser.

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
    >>> parser = argparse.ArgumentParser(prog="immunotrack register")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["t2w.nii.gz", "pet.nii.gz", "-o", "pet_to_t2w.tfm"])
    >>> args.transform, args.initializer, args.bins, args.intensity, args.search, args.capture_range
    ('rigid', 'auto', 32, 'auto', True, 30.0)
    >>> parser.parse_args(["a.nii", "b.nii", "-o", "t.tfm", "--no-search"]).search
    False
    """
    from ._common import add_output

    parser.add_argument("fixed", help="fixed (reference) image: NIfTI, DICOM file or folder, OME-TIFF")
    parser.add_argument("moving", help="moving image, in any format the readers open")
    add_output(parser, help="output transform file (.tfm, .txt or .mat)")
    parser.add_argument(
        "--transform",
        choices=("rigid", "affine"),
        default="rigid",
        help="rigid (6 parameters, default) or affine (rigid first, then 12 parameters)",
    )
    parser.add_argument("--fixed-mask", metavar="M", help="label image: compute the metric only inside it (fixed side)")
    parser.add_argument(
        "--moving-mask", metavar="M", help="label image: compute the metric only inside it (moving side)"
    )
    parser.add_argument(
        "--resampled",
        metavar="OUT.nii.gz",
        help="also write the moving image resampled onto the fixed grid (linear interpolation)",
    )
    parser.add_argument(
        "--initializer",
        choices=("auto", "moments", "geometry", "none"),
        default="auto",
        help="starting translation: centres of mass, field-of-view centres, as they are, "
        "or the best of the three (default auto)",
    )
    parser.add_argument("--bins", type=int, default=32, help="histogram bins of the Mattes metric (default 32)")
    parser.add_argument(
        "--intensity",
        choices=("auto", "linear", "log", "rank"),
        default="auto",
        help="what the metric sees: linear values, log-compressed (default for PET, SPECT, 19F, "
        "MPI: a faint body counts beside hot spots) or ranks; auto picks by modality",
    )
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="orientation search before optimising (default on): rotations of up to "
        "--capture-range degrees about each axis are scored and the best few optimised, "
        "so images up to about 30 degrees and 20 mm apart are aligned; --no-search starts "
        "from the translation only (faster, for images already close)",
    )
    parser.add_argument(
        "--capture-range",
        type=float,
        default=30.0,
        metavar="DEG",
        help="largest rotation about each axis the search tries, in degrees (default 30; 15-degree steps)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write a doubtful result (metric worse than at the start, or no shared information) "
        "with a warning instead of refusing it (results with a near-equal second optimum or "
        "a poor overlap are written with a warning anyway)",
    )
    parser.add_argument(
        "--fixed-points",
        metavar="CSV",
        help="landmarks on the fixed image (columns x_mm, y_mm, z_mm in world RAS, one row per "
        "landmark); with --moving-points, fit the transform to the pairs instead of intensities",
    )
    parser.add_argument("--moving-points", metavar="CSV", help="the same landmarks on the moving image, same row order")


def _read_points(path, what: str):
    import numpy as np
    import pandas as pd

    from ..errors import InputError

    try:
        table = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for broken CSVs
        raise InputError(f"{what} {path} cannot be read as CSV ({' '.join(str(exc).split())[:100]}).") from None
    columns = ["x_mm", "y_mm", "z_mm"]
    if not set(columns) <= set(table.columns):
        raise InputError(
            f"{what} {path} needs columns x_mm, y_mm, z_mm (world RAS mm); it has {', '.join(map(str, table.columns))}."
        )
    return np.asarray(table[columns], float)


def _import_nibabel_without_pydicom() -> None:
    """Import nibabel without letting it import pydicom (a third of this command's start-up time).

    nibabel imports pydicom eagerly only to decode DICOM header extensions
    inside NIfTI files, which registration never reads. pydicom is hidden
    during that one import and stays importable afterwards (the DICOM reader
    imports it itself).
    """
    import sys

    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # "import pydicom" now fails fast inside nibabel's optional_package
    try:
        import nibabel.nifti1  # noqa: F401
    except ImportError:
        pass
    finally:
        del sys.modules["pydicom"]


def run(args) -> int:
    r"""Run ``immunotrack register``: register MOVING to FIXED and write the transform as ITK text.

    Intensity registration (Mattes mutual information, rigid or affine, with an orientation search) or,
    with ``--fixed-points``/``--moving-points``, a least-squares fit of paired landmarks. Writes the
    transform (``.tfm``, ``.txt`` or ``.mat``) with a provenance sidecar, optionally the moving image
    resampled onto the fixed grid, and prints the metric (or the landmark errors) and the fixed-to-moving
    matrix in world RAS mm. See :mod:`napari_immunotrack.registration`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0 (a doubtful result is written with a warning and a DOUBTFUL line). Bad input (an output name
        without a transform suffix, one landmark file without the other, masks with landmarks, an
        unreadable image, an existing output without ``--overwrite``, ...) raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Notes
    -----
    It sets numpy's print options (``suppress=True, precision=4``) for the rest of the process; the
    example restores them.

    Examples
    --------
    Four landmarks shifted by 2 mm along R (the printed matrix is read back from the file here):

    >>> import contextlib, io, os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> from napari_immunotrack.io.transforms import read_transform
    >>> with tempfile.TemporaryDirectory() as d, np.printoptions():
    ...     nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), os.path.join(d, "img.nii.gz"))
    ...     for name, dx in (("fixed", 0.0), ("moving", 2.0)):
    ...         with open(os.path.join(d, name + ".csv"), "w") as f:
    ...             _ = f.write(f"x_mm,y_mm,z_mm\n{dx},0,0\n{dx + 1},0,0\n{dx},1,0\n{dx},0,1\n")
    ...     printed = io.StringIO()
    ...     with contextlib.redirect_stdout(printed):
    ...         status = main(["register", os.path.join(d, "img.nii.gz"), os.path.join(d, "img.nii.gz"),
    ...                        "-o", os.path.join(d, "t.tfm"), "--fixed-points", os.path.join(d, "fixed.csv"),
    ...                        "--moving-points", os.path.join(d, "moving.csv")])
    ...     matrix = read_transform(os.path.join(d, "t.tfm"))
    ...     print(status, sorted(f for f in os.listdir(d) if f.startswith("t.")))
    0 ['t.tfm', 't.tfm.provenance.json']
    >>> print(printed.getvalue().splitlines()[0])
    landmarks: 4 pairs, RMS fiducial registration error 0.000 mm (before: 2.000 mm); per pair (mm): 0.00, 0.00, 0.00, 0.00
    >>> np.round(matrix[:3, 3], 6) + 0.0
    array([2., 0., 0.])
    """
    import sys

    _import_nibabel_without_pydicom()

    import numpy as np

    from .. import provenance
    from ..errors import InputError
    from ..io import save_volume
    from ..io.transforms import TRANSFORM_SUFFIXES, describe_image, write_transform
    from ..outputs import check_output, sidecar_path
    from ..progress import text_progress
    from ..registration import METRIC_NOTE, register, register_landmarks
    from ._common import load

    out = check_output(args.output, args.overwrite)
    if not out.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(
            f"{out}: the transform output must end in .tfm (ITK text, read by Slicer and ANTs), .txt or .mat."
        )
    check_output(sidecar_path(out), args.overwrite)
    resampled_path = None
    if args.resampled:
        resampled_path = check_output(args.resampled, args.overwrite)
        if not resampled_path.name.lower().endswith((".nii", ".nii.gz")):
            raise InputError(f"{resampled_path}: the resampled image must be NIfTI (.nii or .nii.gz).")
        if resampled_path.resolve() == out.resolve():
            raise InputError("--resampled and -o name the same file; give two different names.")
    if bool(args.fixed_points) != bool(args.moving_points):
        raise InputError("landmarks need both --fixed-points and --moving-points (the same landmarks, same order).")

    fixed = load(args.fixed, "fixed image")
    moving = load(args.moving, "moving image")
    inputs = {"fixed": args.fixed, "moving": args.moving}
    if args.fixed_points:
        if args.fixed_mask or args.moving_mask:
            raise InputError("masks are used by intensity registration only; drop them or the landmark files.")
        inputs.update(fixed_points=args.fixed_points, moving_points=args.moving_points)
        result = register_landmarks(
            _read_points(args.fixed_points, "--fixed-points"),
            _read_points(args.moving_points, "--moving-points"),
            transform=args.transform,
        )
    else:
        fixed_mask = load(args.fixed_mask, "fixed mask") if args.fixed_mask else None
        moving_mask = load(args.moving_mask, "moving mask") if args.moving_mask else None
        inputs.update(fixed_mask=args.fixed_mask, moving_mask=args.moving_mask)
        if args.search and not (0 < args.capture_range <= 90):
            raise InputError(
                f"--capture-range must be between 0 and 90 degrees, not {args.capture_range:g}; "
                "use --no-search to turn the orientation search off."
            )
        capture_range = args.capture_range if args.search else 0.0
        # progress only on a terminal: in a pipe or a log an error stays the one line on stderr
        bar, shown = (text_progress("register") if sys.stderr.isatty() else None), []
        if bar is not None:
            sys.stderr.write(
                f"registering {moving.name or args.moving} to {fixed.name or args.fixed} ({args.transform})\n"
            )

        def progress(fraction, message):
            shown.append(fraction)
            if bar is not None:
                bar(fraction, message)

        try:
            result = register(
                fixed,
                moving,
                transform=args.transform,
                fixed_mask=fixed_mask,
                moving_mask=moving_mask,
                initializer=args.initializer,
                bins=args.bins,
                intensity=args.intensity,
                force=args.force,
                progress=progress,
                capture_range_deg=capture_range,
            )
        finally:
            if bar is not None and shown and shown[-1] < 1.0:  # end the progress line before an error message
                sys.stderr.write("\n")

    resampled = None
    if resampled_path is not None:
        resampled = moving.resample_to(fixed, order=1, transform=result.fixed_to_moving)
        resampled.name = f"{moving.name}_in_{fixed.name}" if moving.name else "resampled"
    record = provenance.record(
        "register", inputs=inputs, parameters=result.parameters, warnings=result.warnings, result=result.to_dict()
    )
    # Both outputs or none: the transform is removed again if the image cannot be written.
    write_transform(
        out,
        result.fixed_to_moving,
        overwrite=args.overwrite,
        provenance=record,
        fixed=describe_image(fixed, role="fixed", path=args.fixed),
        moving=describe_image(moving, role="moving", path=args.moving),
    )
    if resampled is not None:
        try:
            save_volume(resampled, resampled_path, overwrite=args.overwrite, provenance=record)
        except BaseException:
            for leftover in (out, sidecar_path(out)):
                leftover.unlink(missing_ok=True)
            raise

    np.set_printoptions(suppress=True, precision=4)
    if result.method == "landmarks":
        print(
            f"landmarks: {len(result.fre_mm)} pairs, RMS fiducial registration error {result.metric_final:.3f} mm "
            f"(before: {result.metric_initial:.3f} mm); per pair (mm): " + ", ".join(f"{v:.2f}" for v in result.fre_mm)
        )
    else:
        start = result.metric_initial if np.isfinite(result.metric_initial) else result.metric_after_init
        print(
            f"metric ({METRIC_NOTE}): start {start:.4f} -> final {result.metric_final:.4f}; "
            f"{result.iterations} iterations, {result.elapsed_s:.2f} s"
        )
        search = result.parameters.get("search", {})
        if search.get("capture_range_deg"):
            print(
                f"orientation search: {search['candidates']} rotations up to +-{search['capture_range_deg']:g} deg, "
                f"{len(search['optimised'])} starts optimised ({search['seconds']:.2f} s)"
            )
        if result.parameters.get("doubtful"):
            print(
                "DOUBTFUL result (see the warnings above, also in the provenance file): check it by eye "
                "(--resampled, checkerboard) before using it"
            )
    print("fixed_to_moving (RAS mm):")
    for row in result.fixed_to_moving:
        print("  " + "  ".join(f"{v:10.5f}" for v in row))
    print(f"wrote {out}" + (f" and {resampled_path}" if resampled_path is not None else ""))
    return 0
