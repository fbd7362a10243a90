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


class WarningLog:
    """The package's warnings collected while a long run goes on, each with the stage that raised it.

    Filled by :func:`collect_warnings`; ``stage`` is set by the caller as the
    run moves on (e.g. from its progress messages). :meth:`messages` gives what
    a provenance record must hold, :meth:`summary` the few lines a console shows
    at the end instead of every warning in the middle of the progress.
    """

    def __init__(self) -> None:
        self.stage = ""
        self.entries: list[tuple[str, str]] = []  # (stage, one-line message), in the order raised

    def add(self, message, stage: str | None = None) -> None:
        """Record one warning (as one line) under ``stage`` (default: the current stage)."""
        self.entries.append((self.stage if stage is None else stage, one_line(message)))

    def messages(self, stages=None) -> list[str]:
        """The distinct messages, in order, of the given stages (all when None)."""
        keep = None if stages is None else set(stages)
        return list(dict.fromkeys(m for s, m in self.entries if keep is None or s in keep))

    def by_stage(self) -> dict[str, list[str]]:
        """{stage: distinct messages}, stages in the order they first warned."""
        out: dict[str, list[str]] = {}
        for stage, message in self.entries:
            if message not in out.setdefault(stage, []):
                out[stage].append(message)
        return out

    def summary(self) -> list[str]:
        """One line per kind of warning: the first one's text, how often it came and in which stages.

        Warnings that differ only in their numbers (ROI 1 / ROI 3, 0.208 / 0.177 nats) are one kind.
        """
        import re

        kinds: dict[str, list] = {}
        for stage, message in self.entries:
            key = re.sub(r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?", "#", message)
            first, count, stages = kinds.setdefault(key, [message, 0, []])
            kinds[key][1] = count + 1
            if stage and stage not in stages:
                stages.append(stage)
        lines = []
        for first, count, stages in kinds.values():
            where = f" [{count}x: {', '.join(stages)}]" if count > 1 else (f" [{stages[0]}]" if stages else "")
            lines.append(first + where)
        return lines

    def __len__(self) -> int:
        return len(self.entries)


class collect_warnings:  # noqa: N801  (used like contextlib's context managers)
    """Collect the package's warnings (:class:`ImmunotrackWarning`) into a :class:`WarningLog` instead of
    printing them one by one; other warnings go on to whatever showed them before.

    Parameters
    ----------
    log : WarningLog, optional
        Where to collect (a new one by default; it is what ``with`` gives).
    show : bool
        Also pass each collected warning on to the previous handler (an outer
        collector, or the command line's printer), e.g. to record warnings in a
        provenance file without hiding them from the caller.

    Examples
    --------
    >>> import warnings
    >>> with collect_warnings() as log:
    ...     log.stage = "pet"
    ...     warnings.warn("ROI 3 is small", ImmunotrackWarning)
    ...     warnings.warn("ROI 5 is small", ImmunotrackWarning)
    >>> log.messages(), log.summary()
    (['ROI 3 is small', 'ROI 5 is small'], ['ROI 3 is small [2x: pet]'])
    """

    def __init__(self, log: WarningLog | None = None, show: bool = False):
        self.log = log if log is not None else WarningLog()
        self.show = show

    def __enter__(self) -> WarningLog:
        import warnings

        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("always", ImmunotrackWarning)  # every one is recorded, not once per place
        previous = warnings.showwarning

        def handler(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ImmunotrackWarning):
                self.log.add(message)
                if not self.show:
                    return
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = handler
        return self.log

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)


def library_reason(exc: BaseException, *paths, limit: int = 120) -> str:
    """A library's error as a short reason for our own message, without the path it repeats.

    Our messages start with the path already; nibabel, SimpleITK and zarr name it again in theirs
    ('File x.nii.gz is not a gzip file'), so the user read it twice. The path (quoted or not) is
    replaced by "it", and a leading "File <path>" dropped.

    Parameters
    ----------
    exc : BaseException
        The library's exception (its one-line text, :func:`one_line`).
    *paths : str, Path or None
        Paths to take out, each as given and made absolute; None is skipped.
    limit : int, default 120
        Most characters kept.

    Returns
    -------
    str
        The shortened reason, or the exception's class name when nothing is left.

    Examples
    --------
    >>> library_reason(OSError("File /data/a.nii.gz is not a gzip file"), "/data/a.nii.gz")
    'not a gzip file'
    >>> library_reason(RuntimeError('Unable to determine ImageIO reader for "/d/b.mha"'), "/d/b.mha")
    'Unable to determine ImageIO reader for it'
    >>> library_reason(ValueError(""))
    'ValueError'
    """
    import os
    import re

    text = one_line(exc)
    forms = set()
    for p in paths:
        if p is None:
            continue
        forms.add(os.fspath(p))
        forms.add(os.path.abspath(os.fspath(p)))
    for form in sorted(forms, key=len, reverse=True):
        if not form:
            continue
        quoted = r"[\"']?" + re.escape(form) + r"[\"']?"
        text = re.sub(r"\bFile\s+" + quoted + r"\s+(is\s+)?", "", text)
        text = re.sub(quoted, "it", text)
    return text.strip()[:limit] or type(exc).__name__
