"""Align every session of a longitudinal study to a reference session.

Each session's anatomical MRI is registered to the reference session's MRI of
the same contrast (rigid by default; affine or a regularised B-spline on
request) after the intensities are made comparable; an orientation search
forgives a repositioned animal (up to +-30 degrees and +-20 mm; --allow-flip
adds a prone/supine half turn, which is also tried by itself when an
alignment looks doubtful). The transforms are saved in the study
(xfm/sub-S_ses-T_from-anat_to-sesREF.tfm, ITK text, with a provenance record)
and reused on a rerun while their inputs are unchanged. Every other modality
of a session follows its MRI through its own from-<modality>_to-anat
transform composed with this one. A session that cannot be aligned is
reported in one line; the others are still done (exit status 2 if any
failed). Method: docs/methods/session-alignment.md."""

from __future__ import annotations

HELP = "align every session of a study to a reference session (repositioned animals)"


def add_arguments(parser):
    """Add the arguments of ``immunotrack align`` to a parser.

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
    >>> parser = argparse.ArgumentParser(prog="immunotrack align")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["."])
    >>> args.reference, args.subject, args.contrast, args.transform, args.allow_flip, args.force, args.overwrite
    (None, None, None, 'rigid', False, False, False)
    """
    from ._common import existing_path

    parser.add_argument("study", type=existing_path, help="study folder (BIDS-like, or a scanner export)")
    parser.add_argument(
        "--reference",
        metavar="SESSION",
        help="reference session, e.g. day0 or ses-day0 (default: the pre-injection session, else the first)",
    )
    parser.add_argument("--subject", metavar="SUB", help="only this subject (e.g. 01)")
    parser.add_argument(
        "--contrast",
        choices=("T2w", "T1w", "T2starw"),
        help="MRI to align (default: the first of T2w, T1w, T2starw that both sessions have)",
    )
    parser.add_argument(
        "--transform",
        choices=("rigid", "affine", "bspline"),
        default="rigid",
        help="rigid (default), affine, or rigid + regularised B-spline deformation",
    )
    parser.add_argument("--allow-flip", action="store_true", help="also search a prone/supine half turn from the start")
    parser.add_argument("--force", action="store_true", help="save doubtful alignments too, with their warnings")
    parser.add_argument("--overwrite", action="store_true", help="recompute and replace saved transforms")


def run(args) -> int:
    """Run ``immunotrack align``: align every session of a study to its reference session.

    Calls :func:`napari_immunotrack.alignment.align_study` (which saves one transform per session in the
    study, with provenance) and prints one line per session: reference, aligned (correlation, body
    overlap, time, file), reused (inputs unchanged) or, on standard error, why it failed.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0 when every session is aligned, reused or the reference; 2 when one or more could not be aligned
        (or were doubtful and not saved without ``--force``). A study without images raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     main(["align", d])  # stderr: ... holds no images ...
    2
    """
    import sys

    from ..alignment import align_study
    from ..progress import text_progress

    bar = text_progress("align") if sys.stderr.isatty() else None
    results = align_study(
        args.study,
        reference=args.reference,
        subject=args.subject,
        contrast=args.contrast,
        transform=args.transform,
        allow_flip=args.allow_flip,
        overwrite=args.overwrite,
        force=args.force,
        progress=bar,
    )
    failed = 0
    for r in results:
        if r.status == "reference":
            print(f"sub-{r.subject} ses-{r.session}: reference session")
        elif r.status in ("aligned", "doubtful-saved"):
            res = r.result
            note = f" (doubtful, saved with --force: {r.message})" if r.status == "doubtful-saved" else ""
            print(
                f"sub-{r.subject} ses-{r.session} -> ses-{r.reference}: {res.transform}, correlation "
                f"{res.correlation:.3f}, body overlap {res.body_dice:.1%}, {res.elapsed_s:.1f} s; wrote "
                f"{r.path}{note}"
            )
        elif r.status == "reused":
            print(f"sub-{r.subject} ses-{r.session} -> ses-{r.reference}: reused {r.path} (inputs unchanged)")
        else:
            failed += 1
            print(r.message, file=sys.stderr)
    return 2 if failed else 0
