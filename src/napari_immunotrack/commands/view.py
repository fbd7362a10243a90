"""Open napari with a study loaded and the plugin's docks in place (the
bundled sample study when no path is given). Needs the [all] extras and a
display."""

from __future__ import annotations

HELP = "open napari with a study (default: the sample study) and the plugin's docks"

#: Dock widgets opened by `view`, as (napari.yaml widget display name, area).
DOCKS = (("Cursor readout", "right"), ("Quantitative readouts", "right"), ("T1-T2 confirmation", "right"))


def add_arguments(parser):
    parser.add_argument("study", nargs="?", help="study folder (default: the bundled sample study)")
    parser.add_argument("--session", help="session to show first, e.g. day1 (default: first post-injection)")
    parser.add_argument("--subject", help="subject to show (default: the first)")
    parser.add_argument("--goto", metavar="R,A,S", help="centre the views on this world point (mm)")
    parser.add_argument("--screenshot", help="save a screenshot of the window to this PNG and quit")


def open_viewer(study=None, session=None, subject=None, show=True, docks=True):
    """A napari viewer with the study's session loaded (used by `view` and the tests)."""
    import napari

    from .._sample_data import study_layer_data

    layers = study_layer_data(study, session=session, subject=subject)
    viewer = napari.Viewer(title="napari-immunotrack", show=show)
    viewer.window.resize(1500, 950)
    for data, kwargs, kind in layers:
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind == "labels":
            layer.contour = 1  # organ outlines, not filled regions, over the anatomy
    viewer.camera.orientation2d = ("up", "right")  # anterior up, subject's right to the right
    viewer.scale_bar.visible = True
    viewer.axes.visible = False
    if docks:
        for name, area in DOCKS:
            try:
                viewer.window.add_plugin_dock_widget("napari-immunotrack", name, tabify=True)
            except Exception as exc:  # a broken optional widget must not stop the viewer
                from napari.utils.notifications import show_warning

                show_warning(f"the {name} dock could not open: {exc}")
    fit_to_anatomy(viewer)
    return viewer


def fit_to_anatomy(viewer) -> None:
    """Centre the slider and the camera on the first MRI layer and zoom to its field of view."""
    from ..widgets._common import center_on_world

    viewer.reset_view()
    for layer in viewer.layers:
        volume = layer.metadata.get("volume")
        if volume is not None and volume.modality == "MR":
            center_on_world(viewer, volume.center_world())
            if hasattr(viewer, "fit_to_view"):
                viewer.fit_to_view(layers=[layer])
            return


def run(args) -> int:
    import importlib.util

    from ..errors import InputError

    if importlib.util.find_spec("napari") is None:
        raise InputError("napari is not installed; install the GUI with `pip install napari-immunotrack[all]` "
                         "or run the headless `immunotrack demo`.")
    import napari

    viewer = open_viewer(args.study, args.session, args.subject, show=True)
    if args.goto:
        from ..widgets._common import center_on_world

        try:
            point = [float(v) for v in args.goto.split(",")]
            assert len(point) == 3
        except (ValueError, AssertionError):
            raise InputError(f"--goto {args.goto!r}: give three numbers R,A,S in mm, e.g. --goto 1.5,-2,3") from None
        center_on_world(viewer, point)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0
