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


def user_error(exc: BaseException):
    """The :class:`InputError` a file-system failure means for the user, or None for anything else.

    A folder without write permission, a read-only file system or a full disk
    is not a bug: the user must choose another place or free space.

    Parameters
    ----------
    exc : BaseException
        What a writer raised.

    Returns
    -------
    InputError or None
        A one-line InputError naming the folder for EACCES, EPERM, EROFS, ENOSPC and EDQUOT;
        None for any other exception.

    Examples
    --------
    >>> import errno
    >>> print(user_error(OSError(errno.ENOSPC, "No space left", "/data/out/.t.csv.part")))
    no space left while writing in /data/out; free some space or choose another disk (nothing half-written was kept).
    >>> user_error(KeyError("x")) is None
    True
    """
    import errno

    if not isinstance(exc, OSError):
        return None
    from pathlib import Path

    # the folder, not the temporary file inside it that the atomic writers were creating
    where = Path(exc.filename).parent if exc.filename else "the output folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(
            f"cannot write in {where} (no permission or a read-only file system); choose a folder you can write to."
        )
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return InputError(
            f"no space left while writing in {where}; free some space or choose another disk "
            "(nothing half-written was kept)."
        )
    return None


def one_line(exc: BaseException) -> str:
    """The one-line text shown to a user for ``exc``.

    Parameters
    ----------
    exc : BaseException
        Any exception.

    Returns
    -------
    str
        Its message with runs of white space (newlines included) made single spaces; the exception
        type's name when the message is empty.

    Examples
    --------
    >>> one_line(ValueError("bad value\\n   in column 3")), one_line(KeyboardInterrupt())
    ('bad value in column 3', 'KeyboardInterrupt')
    """
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
