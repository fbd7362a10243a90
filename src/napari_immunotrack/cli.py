"""The ``immunotrack`` command line.

Each verb lives in its own module under :mod:`napari_immunotrack.commands`
and defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside
``run`` so that ``immunotrack --help`` stays fast, and only the verb being
run gets its arguments added (some verbs read their defaults from analysis
modules that import scipy; ``immunotrack align`` would pay for them). The
command line never imports napari, Qt or matplotlib (except ``view``, which
opens napari on purpose).

Exit status: 0 success, 2 bad input (an :class:`~.errors.InputError`, one
line on standard error), 1 internal error (traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import warnings

from . import __version__, commands
from .errors import Cancelled, ImmunotrackWarning, InputError, one_line, user_error


def _verb_modules():
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))
    return [(name.replace("_", "-"), importlib.import_module(f"{commands.__name__}.{name}")) for name in names]


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error policy: a bad argument is one line on
    standard error (no usage block) and exit status 2. Sub-parsers inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def _escape_percent(text: str) -> str:
    """Escape a literal % for argparse (keeping %(default)s-style fields and %%)."""
    return re.sub(r"%%|%\([a-z_]+\)[sdrf]|%", lambda m: m.group(0) if len(m.group(0)) > 1 else "%%", text)


def _verb_in(argv: list[str]) -> str | None:
    """The verb of a command line: its first word that is not an option (the top-level options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``immunotrack`` argument parser: one sub-command per module of :mod:`napari_immunotrack.commands`.

    Each verb module gives ``HELP``, ``add_arguments(parser)`` and ``run(args)``; every verb also
    takes ``--debug``. A bad argument is one line on standard error and exit status 2.

    Parameters
    ----------
    only : str, optional
        Add the arguments of this verb only (the others are listed with their help line but parse nothing):
        :func:`main` passes the verb being run, so start-up does not import what other verbs' arguments need.
        Default: every verb's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser; ``parse_args`` gives ``verb`` and ``_run`` (the verb's ``run``).

    Examples
    --------
    >>> parser = build_parser()
    >>> verbs = next(a for a in parser._actions if a.dest == "verb").choices
    >>> {"segment", "quantify", "report", "batch"} <= set(verbs)
    True
    >>> args = parser.parse_args(["info", "scan.nii.gz"])
    >>> args.verb, args.path
    ('info', 'scan.nii.gz')
    >>> build_parser(only="info").parse_args(["info", "scan.nii.gz"]).path
    'scan.nii.gz'
    """
    parser = _Parser(
        prog="immunotrack",
        description="Follow labelled therapeutic cells in vivo: MRI, PET/SPECT, 19F, MPI and optical images "
        "in one physical space, registered, segmented and quantified.",
    )
    parser.add_argument("--version", action="version", version=f"napari-immunotrack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of internal errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in _verb_modules():
        p = sub.add_parser(verb, help=_escape_percent(module.HELP), description=module.__doc__)
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks of internal errors"
        )
        if only is not None and verb != only:
            continue  # never run: main() built this parser for another verb
        module.add_arguments(p)
        for action in p._actions:  # "%ID" in a help text would break argparse's %-formatting
            if action.help:
                action.help = _escape_percent(action.help)
        p.set_defaults(_run=module.run)
    return parser


_SHOW_ALL_WARNINGS = False  # set by --debug


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # the package's own warnings always; other libraries' (numpy, pydicom, nibabel) only with --debug
    if not (issubclass(category, ImmunotrackWarning) or _SHOW_ALL_WARNINGS):
        return
    sys.stderr.write(f"immunotrack: warning: {one_line(message)}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring for the error policy).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``immunotrack`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success (also ``--help`` and ``--version``), 2 bad input (one line on standard error),
        1 internal error, 130 cancelled or interrupted, 141 a closed output pipe.

    Examples
    --------
    >>> main(["info", "no-such-file.nii.gz"])      # stderr: immunotrack info: error: no-such-file.nii.gz does not exist ...
    2
    >>> main(["info", "--no-such-option"])
    2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_verb_in(argv) or "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (one line already on stderr)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "verb", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False)
    global _SHOW_ALL_WARNINGS
    _SHOW_ALL_WARNINGS = bool(debug)
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", ImmunotrackWarning)
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe (`| head`) shows up here, inside the error policy
        return rc
    except InputError as exc:
        if debug:
            raise
        sys.stderr.write(f"immunotrack {args.verb}: error: {one_line(exc)}\n")
        return 2
    except Cancelled:
        sys.stderr.write(f"immunotrack {args.verb}: cancelled\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write(f"\nimmunotrack {args.verb}: interrupted; no partial output was kept\n")
        return 130
    except BrokenPipeError:  # `immunotrack info x | head`: the reader left; not an error of ours
        try:  # no second complaint when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except MemoryError:
        sys.stderr.write(
            f"immunotrack {args.verb}: error: out of memory; use a smaller volume or a dask-backed input\n"
        )
        return 1
    except Exception as exc:  # an internal error: a bug, not the user's fault
        if debug:
            raise
        if user_error(exc) is not None:  # no permission, read-only or full disk: the user's to fix
            sys.stderr.write(f"immunotrack {args.verb}: error: {one_line(user_error(exc))}\n")
            return 2
        sys.stderr.write(
            f"immunotrack {args.verb}: internal error: {type(exc).__name__}: {one_line(exc)[:300]} "
            "(run again with --debug for the traceback and report it)\n"
        )
        return 1


def entry_point() -> None:  # console_scripts target
    """The ``immunotrack`` console script: :func:`main` on ``sys.argv``, its status as the process's exit code.

    Parameters
    ----------
    None

    Returns
    -------
    None
        Never returns: raises ``SystemExit`` with :func:`main`'s status.

    Examples
    --------
    >>> import sys
    >>> saved, sys.argv = sys.argv, ["immunotrack", "info", "no-such-file.nii.gz"]
    >>> try:
    ...     entry_point()
    ... except SystemExit as exc:
    ...     print(exc.code)
    ... finally:
    ...     sys.argv = saved
    2
    """
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
