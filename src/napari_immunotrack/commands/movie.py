"""A time-lapse movie (MP4 or GIF) of the labelled-cell signal over a study's timepoints.

Each timepoint is one key frame: the track (PET, SPECT, 19F in mM, MPI, or the T2*-weighted MRI
whose dark spots are iron clusters) over the session's anatomy, on a slice through world
coordinates (default: through the peak of the signal) or a coronal projection, with a scale bar,
the day, orientation letters and one colour bar shared by all timepoints (robust percentiles of
the values shown). Timepoints are held and cross-faded (no value is interpolated between scans).
--plane mip --rotate N turns the projection around the body's long axis at each timepoint (3D).

MP4 needs an ffmpeg program on the PATH (the plugin bundles none: the ffmpeg builds in Python
wheels include GPL parts); GIF is always available.

Example: immunotrack movie sample_data/mouse_study -o pet.mp4 --track PET --plane axial --size 1920x1080
"""

from __future__ import annotations

HELP = "time-lapse movie (MP4/GIF) of a track over the study's timepoints"


def add_arguments(parser):
    """Add the arguments of ``immunotrack movie`` to a parser.

    Numbers are kept as text here and checked in :func:`run` (one line and exit status 2 for a bad value).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        The study folder must exist (checked when parsing).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack movie")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([".", "-o", "pet.gif"])
    >>> args.track, args.plane, args.fps, args.size, args.hold, args.fade, args.rotate, args.value_range
    ('PET', 'axial', '10', '1920x1080', '1.5', '0.6', '0', None)
    """
    from ._common import add_output, existing_path

    parser.add_argument("study", type=existing_path, help="study folder (sub-*/ses-*/... or a scanner export)")
    add_output(parser, help="output movie: .mp4 (needs ffmpeg on the PATH) or .gif")
    parser.add_argument(
        "--track",
        default="PET",
        choices=["PET", "SPECT", "19F", "MPI", "T2starw"],
        help="signal shown over the anatomy (default PET)",
    )
    parser.add_argument(
        "--plane",
        default="axial",
        choices=["axial", "coronal", "sagittal", "mip"],
        help="slice plane, or mip for a coronal projection (default axial)",
    )
    parser.add_argument(
        "--position-mm",
        help="world coordinate of the slice along the plane's normal (default: through the peak of the signal)",
    )
    parser.add_argument("--subject", help="subject id (needed when the study holds several)")
    parser.add_argument("--anatomy", help="underlay role: T2w, T2starw, T1w (default: the first found)")
    parser.add_argument("--fps", default="10", help="frames per second (default 10)")
    parser.add_argument(
        "--size", default="1920x1080", help="frame size WIDTHxHEIGHT in pixels, even numbers (default 1920x1080)"
    )
    parser.add_argument("--hold", default="1.5", help="seconds each timepoint is shown (default 1.5)")
    parser.add_argument("--fade", default="0.6", help="seconds of cross-fade between timepoints (default 0.6; 0 = cut)")
    parser.add_argument(
        "--rotate",
        default="0",
        help="with --plane mip: views per full turn at each timepoint (e.g. 24; default 0 = no rotation)",
    )
    parser.add_argument(
        "--range",
        dest="value_range",
        help="colour-bar range LOW,HIGH in the track's unit (default: 1st-99.5th percentile of the values shown)",
    )


def run(args) -> int:
    """Run ``immunotrack movie``: a time-lapse MP4/GIF of one track over the study's timepoints.

    Calls :func:`napari_immunotrack.movie.make_movie` (written atomically with a provenance sidecar) and
    prints the frames, size, timepoints and colour-bar range.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (a number that is not one, ``--range`` that is not LOW,HIGH, a study without images,
        an existing output without ``--overwrite``, ...) raises :class:`~napari_immunotrack.errors.InputError`
        (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    >>> import os, tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     # stderr: immunotrack movie: error: --range '5' must be LOW,HIGH (two numbers).
    ...     main(["movie", d, "-o", os.path.join(d, "pet.gif"), "--range", "5"])
    ...     main(["movie", d, "-o", os.path.join(d, "pet.gif")])  # stderr: ... holds no images ...
    2
    2
    """
    from ..errors import InputError
    from ..movie import make_movie
    from ..outputs import check_output, sidecar_path
    from ..progress import text_progress
    from .quantify import number

    out = check_output(args.output, args.overwrite)
    fps = number(args.fps, "--fps")
    hold = number(args.hold, "--hold")
    fade = number(args.fade, "--fade", positive=False, minimum=0.0)
    rotate = number(args.rotate, "--rotate", integer=True, positive=False, minimum=0)
    position = None if args.position_mm is None else number(args.position_mm, "--position-mm", positive=False)
    value_range = None
    if args.value_range:
        try:
            value_range = tuple(float(v) for v in args.value_range.split(","))
        except ValueError:
            value_range = ()
        if len(value_range) != 2:
            raise InputError(f"--range {args.value_range!r} must be LOW,HIGH (two numbers).")
    result = make_movie(
        args.study,
        out,
        track=args.track,
        subject=args.subject,
        anatomy=args.anatomy,
        plane=args.plane,
        position_mm=position,
        fps=fps,
        size=args.size,
        hold_s=hold,
        fade_s=fade,
        rotate_views=int(rotate),
        overlay_range=value_range,
        overwrite=args.overwrite,
        progress=text_progress("movie"),
    )
    days = ", ".join(result.stamps)
    rng = (
        f"; colour bar {result.colorbar_range[0]:.3g}-{result.colorbar_range[1]:.3g} {result.unit}"
        if result.colorbar_range
        else ""
    )
    print(
        f"{result.n_frames} frames {result.size[0]}x{result.size[1]} ({days}{rng}) in "
        f"{result.seconds['total']:.1f} s -> {out} (provenance: {sidecar_path(out).name})"
    )
    return 0
