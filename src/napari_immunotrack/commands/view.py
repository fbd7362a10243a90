"""Open napari with a study loaded and the plugin's docks in place (the
bundled sample study when no path is given). Needs the [all] extras and a
display."""

from __future__ import annotations

HELP = "open napari with a study (default: the sample study) and the plugin's docks"

#: Dock widgets opened by `view` besides the Study dock, as (napari.yaml widget display name, tabified with
#: the Study dock). The cursor readout sits below the Study dock, always in view.
DOCKS = (
    ("Quantitative readouts", True),
    ("Iron clusters", True),
    ("T1-T2 confirmation", True),
    ("Registration", True),
    ("Maps", True),
    ("Cursor readout", False),
)


def add_arguments(parser):
    """Add the arguments of ``immunotrack view`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack view")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--3d", "--goto=-6.5,-0.4,8.9"])
    >>> args.study, args.session, args.subject, args.three_d, args.three_plane, args.goto, args.screenshot
    (None, None, None, True, False, '-6.5,-0.4,8.9', None)
    """
    parser.add_argument(
        "study", nargs="?", help="study folder, or a saved study state (.json) (default: the bundled sample study)"
    )
    parser.add_argument("--session", help="session to show first, e.g. day1 (default: first post-injection)")
    parser.add_argument("--subject", help="subject to show (default: the first)")
    parser.add_argument("--state", help="reopen a saved study state (immunotrack_state.json)")
    parser.add_argument(
        "--goto",
        metavar="R,A,S",
        help="centre the views on this world point (mm); write negative values as --goto=-6.5,-0.4,8.9",
    )
    parser.add_argument("--three-plane", action="store_true", help="show the axial, coronal and sagittal planes")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="start in 3D")
    parser.add_argument(
        "--screenshot", help="save a screenshot of the window to this PNG (with its provenance record) and quit"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --screenshot file")


def open_viewer(
    study=None, session=None, subject=None, show=True, docks=True, state=None, three_plane=False, progressive=False
):
    """A napari viewer with the study's session loaded and the docks in place (used by `view` and the tests).

    The Study dock (:class:`~napari_immunotrack.widgets.study.StudyWidget`) opens the study; it is
    reachable as ``viewer.window._immunotrack_study``. ``progressive`` draws the visible layers
    first and adds the hidden ones from the event loop (the command line); tests get all layers.

    Parameters
    ----------
    study : str or Path, optional
        Study folder or scanner export (default: the bundled sample study).
    session, subject : str, optional
        What to show first (default: the first post-injection session of the first subject).
    show : bool, default True
        Show the window.
    docks : bool, default True
        Also open the analysis docks (``DOCKS``), tabified with the Study dock; a dock that fails to
        open is a warning, not an error.
    state : str or Path, optional
        A saved study state (``immunotrack_state.json``) to reopen instead of `study`.
    three_plane : bool, default False
        Show the axial, coronal and sagittal planes.
    progressive : bool, default False
        Add hidden layers later, from the event loop.

    Returns
    -------
    napari.Viewer
        The viewer (1500 x 950), with a close guard that asks before unsaved labels or ROIs are lost.

    Examples
    --------
    Not run as a doctest: it opens a Qt main window and reads a whole study, which takes seconds (the
    GUI tests run it, e.g. tests/test_gui_study.py):

    >>> viewer = open_viewer(show=False)  # doctest: +SKIP
    >>> study_widget(viewer).session  # doctest: +SKIP
    'day1'
    """
    import napari

    from .._close_guard import install_close_guard
    from ..widgets.study import StudyWidget

    viewer = napari.Viewer(title="napari-immunotrack", show=show)
    install_close_guard(viewer)  # closing with unsaved labels/ROIs asks first
    from ..widgets._dock import fit_window_to_screen, make_scrollable, tidy_dock_tabs

    qt_window = viewer.window._qt_window
    fit_window_to_screen(qt_window)  # the screen's size, never more (docks scroll instead)
    keep_columns(viewer)
    widget = StudyWidget(viewer)
    make_scrollable(viewer.window.add_dock_widget(widget, name="Study", area="right"))
    viewer.window._immunotrack_study = widget  # the command line and tests reach the dock here
    import warnings

    with warnings.catch_warnings():  # viewer.axes moved in napari 0.9 (scene.overlays.axes); both work
        warnings.simplefilter("ignore", DeprecationWarning)
        viewer.axes.visible = False
    # the study first: the analysis docks then pre-select their inputs among its layers
    if state:
        widget.open_state(state)
    else:
        widget.open_study(study, subject=subject, session=session, progressive=progressive)
    if docks:
        for name, tabify in DOCKS:
            try:
                dock, _ = viewer.window.add_plugin_dock_widget("napari-immunotrack", name, tabify=tabify)
                make_scrollable(dock)
                dock.setWindowTitle(name)  # the tab reads "Iron clusters", not "Iron clusters (napari-immunotrack)"
            except Exception as exc:  # a broken optional widget must not stop the viewer
                from napari.utils.notifications import show_warning

                show_warning(f"the {name} dock could not open: {exc}")
        tidy_dock_tabs(qt_window)
        dock = study_dock(viewer)
        if dock is not None:
            from qtpy.QtCore import Qt, QTimer

            dock.raise_()  # the Study tab in front (again once the window is laid out)
            QTimer.singleShot(0, dock.raise_)
            QTimer.singleShot(0, lambda: tidy_dock_tabs(qt_window))
            readout = (getattr(viewer.window, "_wrapped_dock_widgets", {}) or {}).get(
                "Cursor readout (napari-immunotrack)"
            )
            if readout is not None:  # the readout lists a value per layer: a quarter of the column
                height = qt_window.height()
                qt_window.resizeDocks(
                    [dock, readout], [int(0.72 * height), int(0.25 * height)], Qt.Orientation.Vertical
                )
                from ..widgets._dock import ResultDocksAsTabs

                qt_window._immunotrack_result_tabs = ResultDocksAsTabs(qt_window, readout)
    fit_window_to_screen(qt_window)
    if three_plane:
        widget.set_three_plane(True)
    return viewer


def study_widget(viewer):
    """The Study dock of a viewer made by :func:`open_viewer`.

    Parameters
    ----------
    viewer : napari.Viewer
        Any viewer; its ``window._immunotrack_study`` is read.

    Returns
    -------
    StudyWidget or None
        The dock; None for a viewer not made by :func:`open_viewer`.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> study_widget(SimpleNamespace(window=SimpleNamespace(_immunotrack_study="the Study dock")))
    'the Study dock'
    >>> print(study_widget(SimpleNamespace(window=SimpleNamespace())))
    None
    """
    return getattr(viewer.window, "_immunotrack_study", None)


def keep_columns(viewer) -> None:
    """Docks in three columns that never push the window past the screen.

    The left and right dock areas run to the bottom of the window, so the bottom dock (the
    three-plane layout) sits under the canvas only; napari's layer controls (taller in 3D) scroll.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer with a Qt window (its ``window._qt_window`` and ``window._qt_viewer`` are changed).

    Returns
    -------
    None

    Examples
    --------
    Needs Qt (a QApplication); a stand-in for napari's window is enough:

    >>> from types import SimpleNamespace
    >>> from qtpy.QtCore import Qt
    >>> from qtpy.QtWidgets import QApplication, QDockWidget, QMainWindow, QScrollArea, QWidget
    >>> app = QApplication.instance() or QApplication([])
    >>> controls = QDockWidget("layer controls"); controls.setWidget(QWidget())
    >>> window = SimpleNamespace(_qt_window=QMainWindow(), _qt_viewer=SimpleNamespace(dockLayerControls=controls))
    >>> keep_columns(SimpleNamespace(window=window))
    >>> window._qt_window.corner(Qt.Corner.BottomLeftCorner) == Qt.DockWidgetArea.LeftDockWidgetArea
    True
    >>> isinstance(controls.widget(), QScrollArea)
    True
    """
    from qtpy.QtCore import Qt

    from ..widgets._dock import make_scrollable

    qt_window = viewer.window._qt_window
    qt_window.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
    qt_window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    qt_viewer = viewer.window._qt_viewer
    for name in ("dockLayerControls", "dockLayerList"):
        dock = getattr(qt_viewer, name, None)
        if dock is not None:
            make_scrollable(dock)


def study_dock(viewer):
    """The napari dock (QDockWidget) holding the Study widget, or None.

    Parameters
    ----------
    viewer : napari.Viewer
        Any viewer; its Study widget is found by :func:`study_widget`.

    Returns
    -------
    QDockWidget or None
        The first QDockWidget among the Study widget's parents (it may sit in a scroll area); None when the
        viewer has no Study widget or the widget is not docked.

    Examples
    --------
    Needs Qt (a QApplication):

    >>> from types import SimpleNamespace
    >>> from qtpy.QtWidgets import QApplication, QDockWidget, QScrollArea, QWidget
    >>> app = QApplication.instance() or QApplication([])
    >>> dock, scroll, study = QDockWidget("Study"), QScrollArea(), QWidget()
    >>> dock.setWidget(scroll); scroll.setWidget(study)
    >>> study_dock(SimpleNamespace(window=SimpleNamespace(_immunotrack_study=study))) is dock
    True
    >>> print(study_dock(SimpleNamespace(window=SimpleNamespace())))
    None
    """
    from qtpy.QtWidgets import QDockWidget

    widget = study_widget(viewer)
    parent = widget.parent() if widget is not None else None
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def fit_to_anatomy(viewer) -> None:
    """Centre the slider and the camera on the first MRI layer and zoom to its field of view.

    Kept here for old imports; it lives with the Study dock
    (:func:`napari_immunotrack.widgets.study.fit_to_anatomy`), which the command imports, never the reverse.
    Only visible layers holding a Volume of modality MR in their metadata count; without one the view is
    just reset.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel

    Returns
    -------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from napari.components import ViewerModel
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.widgets._common import volume_layer_data
    >>> viewer = ViewerModel()
    >>> t2w = Volume(np.zeros((10, 20, 30), np.float32), np.diag([1.0, 0.5, 0.25, 1.0]), "MR", name="T2w")
    >>> data, kwargs, _kind = volume_layer_data(t2w)
    >>> _ = viewer.add_image(data, **kwargs)
    >>> fit_to_anatomy(viewer)
    >>> t2w.center_world().tolist(), viewer.dims.point  # RAS centre; napari's (S, A, R) slider
    ([4.5, 4.75, 3.625], (3.625, 4.75, 4.5))
    """
    from ..widgets.study import fit_to_anatomy as fit

    fit(viewer)


def _parse_goto(text):
    from ..errors import InputError

    try:
        point = [float(v) for v in text.split(",")]
        if len(point) != 3:
            raise ValueError
    except ValueError:
        raise InputError(f"--goto {text!r}: give three numbers R,A,S in mm, e.g. --goto 1.5,-2,3") from None
    return point


def save_screenshot(viewer, args, state) -> None:
    """Write the window's picture to ``args.screenshot`` atomically, with what was shown in its sidecar.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer made by :func:`open_viewer` (its ``screenshot`` and Study dock are used).
    args : argparse.Namespace
        ``screenshot`` (the PNG path), ``overwrite``, ``goto``, ``three_plane`` and ``three_d``.
    state : str or Path or None
        The saved state that was opened, recorded in the sidecar.

    Returns
    -------
    None
        Writes the PNG and ``<png>.provenance.json``, whose parameters list the study, subject, session,
        state, goto point, view mode and the visible layers.

    Examples
    --------
    A stand-in viewer (a real one needs a window; ``immunotrack view --screenshot`` runs it):

    >>> import argparse, json, os, tempfile
    >>> from types import SimpleNamespace
    >>> import numpy as np
    >>> dock = SimpleNamespace(study=None, subject="01", session="day1")
    >>> viewer = SimpleNamespace(screenshot=lambda canvas_only, flash: np.zeros((4, 6, 4), np.uint8),
    ...                          window=SimpleNamespace(_immunotrack_study=dock),
    ...                          layers=[SimpleNamespace(name="T2w (day 1)", visible=True)])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     args = argparse.Namespace(screenshot=os.path.join(d, "view.png"), overwrite=False, goto=None,
    ...                               three_plane=False, three_d=False)
    ...     save_screenshot(viewer, args, None)
    ...     with open(os.path.join(d, "view.png.provenance.json")) as f:
    ...         shown = json.load(f)["parameters"]
    ...     print(sorted(os.listdir(d)))
    ['view.png', 'view.png.provenance.json']
    >>> shown["session"], shown["layers"], shown["3d"]
    ('day1', ['T2w (day 1)'], False)
    """
    from ..outputs import write_png
    from ..provenance import record

    image = viewer.screenshot(canvas_only=False, flash=False)
    widget = study_widget(viewer)
    shown = {
        "study": str(widget.study.root) if widget.study is not None else None,
        "subject": widget.subject,
        "session": widget.session,
        "state": str(state) if state else None,
        "goto": args.goto,
        "three_plane": bool(args.three_plane),
        "3d": bool(args.three_d),
        "layers": [layer.name for layer in viewer.layers if layer.visible],
    }
    write_png(image, args.screenshot, record("view screenshot", parameters=shown), overwrite=args.overwrite)


def run(args) -> int:
    """Run ``immunotrack view``: open napari with a study and the plugin's docks.

    Everything that can be checked is checked before a window opens (napari installed, ``--goto``, the
    study or saved state, the ``--screenshot`` name). With ``--screenshot`` the window is drawn, saved
    to the PNG with a provenance sidecar (:func:`save_screenshot`) and closed; otherwise napari runs until
    the window is closed.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0 when the window is closed (or the screenshot saved). Bad input raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    Opening a window takes seconds; these are refused before napari starts:

    >>> import tempfile
    >>> from napari_immunotrack.cli import main
    >>> main(["view", "--goto", "1,2"])  # stderr: ... --goto '1,2': give three numbers R,A,S in mm, ...
    2
    >>> with tempfile.TemporaryDirectory() as d:
    ...     main(["view", d])  # stderr: ... holds no images ...
    2
    """
    import importlib.util
    from pathlib import Path

    from ..errors import InputError

    if importlib.util.find_spec("napari") is None:
        raise InputError(
            "napari is not installed; install the GUI with `pip install napari-immunotrack[all]` "
            "or run the headless `immunotrack demo`."
        )
    # check what can be checked before a window opens: a bad path is one line on stderr, exit 2
    point = _parse_goto(args.goto) if args.goto else None
    state = args.state
    if args.study and str(args.study).lower().endswith(".json") and state is None:
        state, args.study = args.study, None
    if state is not None:
        from ..study import load_state

        load_state(state)  # a corrupt or foreign file: InputError before napari starts
    elif args.study is not None:
        from ..study import open_study

        if not Path(args.study).exists():
            raise InputError(
                f"{args.study} does not exist; give a study folder (sub-*/ses-*/...) or a scanner "
                "export folder, or nothing for the sample study."
            )
        open_study(args.study)  # no images: InputError before napari starts
    if args.screenshot:
        from ..outputs import check_output

        if not str(args.screenshot).lower().endswith(".png"):
            raise InputError(f"--screenshot {args.screenshot}: give a .png file name.")
        check_output(args.screenshot, args.overwrite)  # before the window opens, not after the work
    import napari

    viewer = open_viewer(
        args.study,
        args.session,
        args.subject,
        show=True,
        state=state,
        three_plane=args.three_plane,
        progressive=not args.screenshot,
    )
    widget = study_widget(viewer)
    if args.three_d:
        widget.set_ndisplay(3)
    if point is not None:
        from ..widgets._common import center_on_world

        center_on_world(viewer, point)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        widget.finish_loading()
        if widget.three_plane is not None:
            widget.three_plane.refresh()
        for _ in range(3):
            QApplication.processEvents()
        save_screenshot(viewer, args, state)
        widget.shutdown()
        viewer.close()
        return 0
    napari.run()
    widget.shutdown()
    return 0
