"""Helpers shared by the command-line verbs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def add_output(parser: argparse.ArgumentParser, required: bool = True, help: str = "output file") -> None:
    """Add ``-o/--output`` and ``--overwrite`` to a verb's parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's parser.
    required : bool, default True
        Whether ``-o`` must be given.
    help : str, default "output file"
        Help text of ``-o``.

    Returns
    -------
    None

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="immunotrack x")
    >>> add_output(parser)
    >>> parser.parse_args(["-o", "out.csv"])
    Namespace(output='out.csv', overwrite=False)
    """
    parser.add_argument("-o", "--output", required=required, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def existing_path(text: str) -> Path:
    """argparse type: a path that must exist (exit 2 with a clear message otherwise).

    Parameters
    ----------
    text : str
        The argument as typed.

    Returns
    -------
    Path
        The path.

    Raises
    ------
    argparse.ArgumentTypeError
        When nothing exists at ``text``.

    Examples
    --------
    >>> existing_path(".")
    PosixPath('.')
    >>> existing_path("no-such-file.nii")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: no-such-file.nii does not exist
    """
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def positive_float(text: str) -> float:
    """argparse type: a number greater than 0.

    Parameters
    ----------
    text : str
        The argument as typed.

    Returns
    -------
    float
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number, or not greater than 0.

    Examples
    --------
    >>> positive_float("2.5"), positive_float("1e-3")
    (2.5, 0.001)
    >>> positive_float("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 0 must be greater than 0
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1.

    Parameters
    ----------
    text : str
        The argument as typed.

    Returns
    -------
    int
        The number.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a whole number, or less than 1.

    Examples
    --------
    >>> positive_int("3")
    3
    >>> positive_int("1.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '1.5' is not a whole number
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def load(path, what: str, **kwargs):
    """:func:`~napari_immunotrack.io.load_volume` with the role of the file named in the error message.

    Parameters
    ----------
    path : str or Path
        The image file or folder.
    what : str
        Its role ("the PET", "--baseline"), put in front of an error message.
    **kwargs
        Keyword arguments of :func:`~napari_immunotrack.io.load_volume`.

    Returns
    -------
    Volume
        The image.

    Raises
    ------
    InputError
        ``"<what>: <reason>"`` when the file cannot be read.

    Examples
    --------
    >>> try:
    ...     load("no-such-file.nii.gz", "the PET")
    ... except InputError as exc:
    ...     print(exc)
    the PET: no-such-file.nii.gz does not exist; check the path.
    """
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
    documentation fixes it (docs/methods/transforms.md#direction).

    Parameters
    ----------
    text : str
        "identity" or a path.
    what : str
        The option's name, in error messages.

    Returns
    -------
    numpy.ndarray
        (4, 4) float matrix, RAS mm, as the file gives it (fixed world -> moving world for an ITK file).

    Raises
    ------
    InputError
        A file that cannot be read as a transform.

    Examples
    --------
    >>> import numpy as np
    >>> read_transform_arg("identity", "--transform").tolist() == np.eye(4).tolist()
    True
    """
    from ..io.transforms import read_transform_file

    return read_transform_file(text, what).fixed_to_moving


def add_transform_arguments(parser, image: str, other: str = "ROI image", flag: str = "--transform") -> None:
    """``--transform`` (or ``flag``) and ``--transform-fixed``: a registration used whichever way it was made.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's parser.
    image : str
        What the verb's image is, in the help ("PET").
    other : str, default "ROI image"
        What the other image is, in the help.
    flag : str, default "--transform"
        The option's name; the second is ``<flag>-fixed`` (dest ``<flag>_fixed``).

    Returns
    -------
    None

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="immunotrack x")
    >>> add_transform_arguments(parser, "PET")
    >>> parser.parse_args(["--transform", "reg.tfm"])
    Namespace(transform='reg.tfm', transform_fixed='auto')
    """
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

    The file is read with :func:`~napari_immunotrack.io.transforms.read_transform_file` and its
    direction decided by :func:`~napari_immunotrack.io.transforms.resolve_direction`: the file's own
    record of its fixed and moving images, else ``fixed``, else the overlap of the two images
    (docs/methods/transforms.md#direction).

    Parameters
    ----------
    text : str or None
        The option's value ("identity" or a path); None gives (None, None).
    image, other : Volume
        The verb's image and the other image (ROIs, baseline, ...).
    fixed : {"auto", "image", "other"}, default "auto"
        Which image was the registration's fixed one.
    what : str, default "--transform"
        The option's name, in messages.
    image_path, other_path : str or Path, optional
        The images' files, matched against the file's record.
    image_name, other_name : str
        The images' names in messages.

    Returns
    -------
    tuple
        (matrix or None, how): the (4, 4) matrix (image world -> other world, RAS mm) and one
        sentence for the provenance saying how its direction was decided.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> image = Volume(np.zeros((4, 4, 4)), np.eye(4))
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 2.5
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     np.savetxt(Path(tmp) / "m.txt", shift)
    ...     matrix, how = transform_arg(str(Path(tmp) / "m.txt"), image, image)
    >>> float(matrix[0, 3]), how.split(" (")[0]
    (2.5, 'plain matrix taken as the image world -> the ROI image world')
    >>> transform_arg(None, image, image)
    (None, None)
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
