"""Open napari with a study loaded and the plugin's docks in place (the
bundled sample study when no path is given). Needs the [all] extras and a
display."""

from __future__ import annotations

HELP = "open napari with a study (default: the sample study) and the plugin's docks"

#: Dock widgets opened by `view`, as (napari.yaml widget display name, area).
DOCKS = ()


def add_arguments(parser):
    parser.add_argument("study", nargs="?", help="study folder (default: the bundled sample study)")
    parser.add_argument("--session", help="session to show first, e.g. day1 (default: first post-injection)")
    parser.add_argument("--subject", help="subject to show (default: the first)")
    parser.add_argument("--screenshot", help="save a screenshot of the window to this PNG and quit")


def open_viewer(study=None, session=None, subject=None, show=True):
    """A napari viewer with the study's session loaded (used by `view` and the tests)."""
    import napari

    from .._sample_data import study_layer_data

    layers = study_layer_data(study, session=session, subject=subject)
    viewer = napari.Viewer(title="napari-immunotrack", show=show)
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.camera.orientation2d = ("up", "right")  # anterior up, subject's right to the right
    viewer.scale_bar.visible = True
    viewer.axes.visible = False
    for name, area in DOCKS:
        try:
            viewer.window.add_plugin_dock_widget("napari-immunotrack", name, tabify=True)
        except Exception:  # a missing optional widget must not stop the viewer
            pass
    viewer.reset_view()
    return viewer


def run(args) -> int:
    import importlib.util

    from ..errors import InputError

    if importlib.util.find_spec("napari") is None:
        raise InputError("napari is not installed; install the GUI with `pip install napari-immunotrack[all]` "
                         "or run the headless `immunotrack demo`.")
    import napari

    viewer = open_viewer(args.study, args.session, args.subject, show=True)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0
