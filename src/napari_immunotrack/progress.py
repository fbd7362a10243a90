"""Progress reporting and cancellation for long computations.

Every long public function takes ``progress=None``: a callable
``progress(fraction, message)`` with ``fraction`` in [0, 1]. The GUI passes
one that updates a progress bar and raises :class:`~.errors.Cancelled` when
the user pressed Cancel; the command line passes :func:`text_progress`.
Functions call :func:`report` so that ``progress=None`` costs nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressCallback = Callable[[float, str], None]


def report(progress: ProgressCallback | None, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given (it may raise Cancelled), with ``fraction`` clipped to [0, 1].

    Parameters
    ----------
    progress : callable or None
        ``progress(fraction, message)``; None costs nothing.
    fraction : float
        How much of the work is done (clipped to [0, 1]).
    message : str, default ""
        What is being done.

    Returns
    -------
    None

    Examples
    --------
    >>> seen = []
    >>> report(lambda f, m: seen.append((f, m)), 1.5, "done")
    >>> report(None, 0.5)                                       # no callback: nothing happens
    >>> seen
    [(1.0, 'done')]
    """
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def scaled(progress: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """A callback mapping [0, 1] of a sub-step onto [start, stop] of the whole.

    Parameters
    ----------
    progress : callable or None
        The whole computation's callback.
    start, stop : float
        The part of the whole this sub-step covers.

    Returns
    -------
    callable or None
        ``sub(fraction, message)`` calling ``progress(start + (stop - start) * fraction, message)``;
        None when ``progress`` is None.

    Examples
    --------
    >>> seen = []
    >>> sub = scaled(lambda f, m: seen.append((round(f, 3), m)), 0.2, 0.6)
    >>> sub(0.5, "halfway through the second step")
    >>> seen, scaled(None, 0.2, 0.6)
    ([(0.4, 'halfway through the second step')], None)
    """
    if progress is None:
        return None

    def sub(fraction: float, message: str = "") -> None:
        progress(start + (stop - start) * fraction, message)

    return sub


class TextProgress:
    """A one-line progress bar on standard error for the command line."""

    def __init__(self, label: str = "", stream=None, width: int = 30, min_interval: float = 0.1):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._done = False

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if not getattr(self.stream, "isatty", lambda: False)():
            # a log file or a pipe: one line per 10% step, no carriage returns
            step = int(fraction * 10)
            if step > getattr(self, "_last_step", -1):
                self._last_step = step
                self.stream.write(f"{self.label} {100 * fraction:5.1f}% {message}\n")
                self.stream.flush()
            return
        if fraction < 1.0 and now - self._last < self.min_interval:
            return
        self._last = now
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"\r{self.label} [{bar}] {100 * fraction:5.1f}% {message[:50]:<50}"
        self.stream.write(text)
        if fraction >= 1.0 and not self._done:
            self.stream.write("\n")
            self._done = True
        self.stream.flush()


def text_progress(label: str = "") -> TextProgress:
    """A :class:`TextProgress` writing to standard error (the command line's progress bar).

    On a terminal it redraws one line; into a log file or a pipe it writes one line per 10 % step.

    Parameters
    ----------
    label : str, default ""
        Text in front of the bar (the verb's name).

    Returns
    -------
    TextProgress
        A ``progress(fraction, message)`` callable.

    Examples
    --------
    >>> import io
    >>> bar = text_progress("segment")
    >>> bar.stream = io.StringIO()                              # a log file instead of standard error
    >>> for f in (0.0, 0.05, 0.5, 1.0):
    ...     bar(f, "clusters")
    >>> print(bar.stream.getvalue(), end="")
    segment   0.0% clusters
    segment  50.0% clusters
    segment 100.0% clusters
    """
    return TextProgress(label)
