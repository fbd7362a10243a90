"""The package's error policy, in one place.

- :class:`InputError`: the user's input is wrong (a file, a parameter, a
  header). Its message is one line that says what is wrong and what to do.
  The command line prints it and exits with status 2; napari shows it as a
  notification.
- Any other exception is an internal error (a bug): the command line exits
  with status 1 and shows the traceback only with ``--debug``.
- :class:`Cancelled`: the user asked a long computation to stop.
- :class:`ImmunotrackWarning`: a guess or a doubtful result that the user
  must see (a dose that looks like MBq, a threshold under the noise floor).
"""

from __future__ import annotations


class ImmunotrackError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(ImmunotrackError, ValueError):
    """Bad input: one line saying what is wrong and what to do."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller built.
        super().__init__(" ".join(str(message).split()))


class OutputExistsError(InputError):
    """An output file exists and overwriting was not allowed."""


class Cancelled(ImmunotrackError):
    """A long computation was cancelled by the user."""


class ImmunotrackWarning(UserWarning):
    """A guess or a doubtful result the user must see."""


def one_line(exc: BaseException) -> str:
    """The one-line text shown to a user for ``exc``."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
