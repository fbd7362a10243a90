"""Where the bundled sample study lives."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def sample_study_root() -> Path:
    """The bundled sample mouse study (``sample_data/mouse_study``).

    A wheel carries it inside the package; a source checkout has it at the
    top level of the repository.

    Parameters
    ----------
    None

    Returns
    -------
    Path
        The study folder (``sub-01/ses-day0 ... ses-day7``, ``ground_truth.json``).

    Raises
    ------
    InputError
        When neither place holds it.

    Examples
    --------
    >>> root = sample_study_root()
    >>> root.name, (root / "ground_truth.json").is_file(), sorted(p.name for p in (root / "sub-01").glob("ses-*"))[:2]
    ('mouse_study', True, ['ses-day0', 'ses-day1'])
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "sample_data" / "mouse_study", here.parents[1] / "sample_data" / "mouse_study"):
        if candidate.is_dir():
            return candidate
    raise InputError(
        "the sample study is missing from this installation; regenerate it with "
        "`python scripts/make_sample_data.py` in a source checkout."
    )
