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


def read_transform_arg(text: str, what: str):
    """A 4x4 RAS world-to-world matrix from 'identity', a .npy/.txt matrix or an ITK transform file."""
    import numpy as np

    from ..errors import InputError

    if text.strip().lower() == "identity":
        return np.eye(4)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{what} {text} does not exist; give a transform file or 'identity'.")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            matrix = np.load(path, allow_pickle=False)
        elif name.endswith((".tfm", ".mat")) or (name.endswith(".txt") and
                                                 "#insight" in path.read_text(errors="ignore")[:200].lower()):
            from ..io.transforms import read_transform

            matrix = read_transform(path)
        else:
            matrix = np.loadtxt(path)
    except InputError:
        raise
    except Exception as exc:  # numpy/ITK raise many types for unreadable files
        raise InputError(f"{what} {text} cannot be read as a transform ({' '.join(str(exc).split())[:100]}).") \
            from None
    matrix = np.asarray(matrix, float)
    if matrix.shape != (4, 4):
        raise InputError(f"{what} {text} is not a 4x4 matrix (shape {matrix.shape}).")
    return matrix
