"""The base of every napari-immunotrack dock widget, and the window layout that keeps them on screen."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QPoint, Qt, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QFrame, QScrollArea, QTabBar, QTabWidget, QWidget

from .._close_guard import install_close_guard

#: The window's preferred size on a large screen (width, height); smaller screens get what they have.
PREFERRED_WINDOW = (1500, 950)


class PluginDock(QWidget):
    """A dock bound to its napari viewer (``self.viewer``).

    Opening any dock installs the close guard, so that closing napari with
    edited labels, ROIs or landmarks offers to save them first.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        install_close_guard(napari_viewer)


def make_scrollable(dock) -> None:
    """Put a dock's content in a scroll area, so the dock can be shorter than its content.

    Without it a dock's minimum height is its content's, and Qt grows the main window past the
    screen to honour it. napari still finds the original widget (``viewer.window.dock_widgets``):
    its dock asks the content for ``_magic_widget``, which the scroll area answers with it.
    """
    inner = dock.widget()
    if inner is None or isinstance(inner, QScrollArea):
        return
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    dock.setWidget(scroll)
    scroll.setWidget(inner)
    scroll._magic_widget = getattr(inner, "_magic_widget", inner)
    # a dock made before it is docked is briefly a window, and Qt fixes a window's minimum size to
    # its content's: give it back napari's own small minimum
    dock.setMinimumSize(50, 50)
    dock.layout().invalidate()


def scroll_to(widget) -> None:
    """Scroll the dock's scroll area (:func:`make_scrollable`) so ``widget``'s top is at the top of the view.

    A dock shorter than its content (a 768-px screen) would otherwise leave a new result below the fold.
    Until the user scrolls, the view keeps ``widget`` on top when the dock is laid out again (its tab
    raised, the window settling). Nothing happens outside a scroll area.
    """
    area = widget.parentWidget()
    while area is not None and not isinstance(area, QScrollArea):
        area = area.parentWidget()
    if area is None or area.widget() is None:
        return
    content, bar = area.widget(), area.verticalScrollBar()
    previous = getattr(area, "_immunotrack_keep_in_view", None)
    if previous is not None:
        previous()

    def place(*_):
        try:
            top = widget.mapTo(content, QPoint(0, 0)).y()
            bar.setValue(min(max(top, 0), bar.maximum()))
        except RuntimeError:  # the widget was deleted meanwhile
            stop()

    def stop(*_):
        for signal, slot in ((bar.rangeChanged, place), (bar.actionTriggered, stop)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        area._immunotrack_keep_in_view = None

    place()
    bar.rangeChanged.connect(place)
    bar.actionTriggered.connect(stop)  # the user scrolled (wheel, drag, click): leave the view to them
    area._immunotrack_keep_in_view = stop


def available_geometry(widget=None):
    """The available geometry (QRect, without task bars) of the screen showing ``widget`` (else the primary)."""
    screen = None
    if widget is not None:
        handle = widget.windowHandle()
        screen = handle.screen() if handle is not None else None
        if screen is None and hasattr(widget, "screen"):
            screen = widget.screen()
    screen = screen or QApplication.primaryScreen()
    return screen.availableGeometry()


def fit_window_to_screen(qt_window, preferred=PREFERRED_WINDOW) -> tuple[int, int]:
    """Size the main window to the screen it is on and keep it there: never larger than the screen.

    The window gets 90 % of the screen but at least ``preferred`` (width, height) when the screen
    allows, else the available size minus the window frame; its maximum size is the available size, so results and docks that
    appear later make the docks scroll instead of the window grow. Returns the size set.
    """
    area = available_geometry(qt_window)
    frame = qt_window.frameGeometry().size() - qt_window.geometry().size()
    # before the window is shown the frame is unknown: allow for a typical title bar
    extra_w = max(frame.width(), 2)
    extra_h = max(frame.height(), 30)
    # 90 % of a large screen (at least ``preferred``), all of a small one
    width = min(max(preferred[0], int(0.9 * area.width())), area.width() - extra_w)
    height = min(max(preferred[1], int(0.9 * area.height())), area.height() - extra_h)
    qt_window.setMaximumSize(area.width() - extra_w + 2, area.height() - extra_h + 2)
    if qt_window.isMaximized() or qt_window.isFullScreen():
        return width, height
    qt_window.resize(width, height)
    geo = qt_window.frameGeometry()
    if not area.contains(geo):
        qt_window.move(area.left(), area.top())
    return width, height


def tidy_dock_tabs(qt_window) -> None:
    """Dock tabs on top with their whole titles (scroll buttons instead of "S…", "Iron cluste…")."""
    for side in (Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea):
        qt_window.setTabPosition(side, QTabWidget.TabPosition.North)
    for bar in qt_window.findChildren(QTabBar):
        if bar.parent() is qt_window:  # the tab bars of tabified docks, not those inside a dock
            bar.setElideMode(Qt.TextElideMode.ElideNone)
            bar.setUsesScrollButtons(True)
            bar.setExpanding(False)


class ResultDocksAsTabs(QObject):
    """Docks that appear later on the right (result tables) become tabs beside ``anchor`` (the cursor
    readout), so the analysis docks above keep their height instead of sharing the column in slices."""

    def __init__(self, qt_window, anchor):
        super().__init__(qt_window)
        self.qt_window = qt_window
        self.anchor = anchor
        qt_window.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802 - Qt name
        if event.type() == QEvent.Type.ChildAdded and isinstance(event.child(), QDockWidget):
            dock = event.child()
            QTimer.singleShot(0, lambda: self._tabify(dock))
        return False

    def _tabify(self, dock) -> None:
        window, anchor = self.qt_window, self.anchor
        try:
            title = dock.windowTitle()
            if title.endswith(" (napari-immunotrack)"):  # a dock opened from the Plugins menu: a short, whole tab
                dock.setWindowTitle(title.removesuffix(" (napari-immunotrack)"))
                tidy_dock_tabs(window)
            if dock is anchor or dock.isFloating():
                return
            right = Qt.DockWidgetArea.RightDockWidgetArea
            if window.dockWidgetArea(dock) != right or window.dockWidgetArea(anchor) != right:
                return
            if window.tabifiedDockWidgets(dock):
                return  # already a tab (the analysis docks)
            make_scrollable(dock)
            window.tabifyDockWidget(anchor, dock)
            tidy_dock_tabs(window)
            dock.raise_()
            QTimer.singleShot(100, dock.raise_)  # the new result in front once it is shown
        except RuntimeError:  # the dock was deleted meanwhile
            return
