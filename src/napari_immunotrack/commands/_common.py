"""Helpers shared by the command-line verbs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def add_output(parser: argparse.ArgumentParser, required: bool = True, help: str = "output file") -> None:
    parser.add_argument("-o", "--output", required=required, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def existing_path(text: str) -> Path:
    """argparse type: a path that must exist (exit 2 with a clear message otherwise)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def load(path, what: str, **kwargs):
    """load_volume with the role of the file named in the error message."""
    from ..io import load_volume

    try:
        return load_volume(path, **kwargs)
    except InputError as exc:
        # the reader's message usually starts with the path: name the role once, not the path twice
        text = str(exc)
        role = " ".join(what.replace(str(path), " ").split()) if str(path) in text else what
        raise InputError(f"{role}: {text}" if role else text) from None


def read_transform_arg(text: str, what: str):
    """A 4x4 RAS matrix as written in the file ('identity', a .npy/.txt/.csv matrix or an ITK transform file).

    The direction is not resolved here (see :func:`transform_arg`); this is for verbs whose
    documentation fixes it.
    """
    from ..io.transforms import read_transform_file

    return read_transform_file(text, what).fixed_to_moving


def add_transform_arguments(parser, image: str, other: str = "ROI image", flag: str = "--transform") -> None:
    """``--transform`` (or ``flag``) and ``--transform-fixed``: a registration used whichever way it was made."""
    parser.add_argument(
        flag,
        help=f"registration between the {image} and the {other}: the .tfm of "
        f"'immunotrack register' (either image fixed), Slicer or ANTs, or a 4x4 RAS "
        f"matrix ({image} world -> {other} world) in .txt/.csv/.npy; see "
        "docs/methods/transforms.md",
    )
    dest = flag.lstrip("-").replace("-", "_") + "_fixed"
    parser.add_argument(
        flag + "-fixed",
        dest=dest,
        default="auto",
        choices=("auto", "image", "other"),
        help=f"which image was the registration's fixed one: auto (default: from the file's "
        f"direction record, else by overlap), image (the {image}) or other (the {other})",
    )


def transform_arg(
    text,
    image,
    other,
    *,
    fixed: str = "auto",
    what: str = "--transform",
    image_path=None,
    other_path=None,
    image_name: str = "the image",
    other_name: str = "the ROI image",
):
    """``image`` world -> ``other`` world from a transform argument, whichever image was fixed.

    Returns
    -------
    (matrix or None, how) : the matrix and one sentence for the provenance saying how its direction was decided.
    """
    if text is None:
        return None, None
    from ..io.transforms import read_transform_file, resolve_direction

    tf = read_transform_file(text, what)
    matrix, how = resolve_direction(
        tf,
        image,
        other,
        fixed=fixed,
        image_path=image_path,
        other_path=other_path,
        image_name=image_name,
        other_name=other_name,
    )
    return matrix, how
