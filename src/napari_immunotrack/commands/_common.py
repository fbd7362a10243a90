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
        raise InputError(f"{what}: {exc}") from None
