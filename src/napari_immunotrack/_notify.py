"""One-line napari notifications of errors (the docks and the close guard share it; napari imported on use)."""

from __future__ import annotations

from .errors import Cancelled, InputError, one_line, user_error


def notify_error(exc: BaseException) -> None:
    """Show an exception to the user as a one-line napari notification."""
    from napari.utils.notifications import show_error, show_info

    exc = user_error(exc) or exc  # no permission, read-only or full disk: said as the user's to fix
    if isinstance(exc, Cancelled):
        show_info("cancelled")
    elif isinstance(exc, InputError):
        show_error(one_line(exc))
    else:
        show_error(f"internal error: {type(exc).__name__}: {one_line(exc)[:200]}")
