"""Fixtures and helpers shared by the GUI tests (imported by tests/test_gui_*.py).

- ``qsettings``: the application's QSettings go to a temp folder, so the real user's settings
  are never read or written; returns an INI QSettings for the window.
- ``no_thread_leak``: fails a test that leaves a job thread running (they cause segfaults).
- ``drag``: a real mouse drag on a widget, by QMouseEvents (press, moves, release).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication


@pytest.fixture
def qsettings(qapp, tmp_path):
    folder = tmp_path / "qsettings"
    folder.mkdir()
    old = QCoreApplication.organizationName(), QCoreApplication.applicationName()
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
            QSettings.setPath(fmt, scope, str(folder))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QCoreApplication.setOrganizationName("weldreview-tests")
    QCoreApplication.setApplicationName("weldreview-tests")
    settings = QSettings(str(folder / "weldreview.ini"), QSettings.Format.IniFormat)
    yield settings
    settings.sync()
    QCoreApplication.setOrganizationName(old[0])
    QCoreApplication.setApplicationName(old[1])


@pytest.fixture(autouse=True)
def no_thread_leak(qapp):
    from app.worker import forget_threads, live_threads

    yield
    QApplication.processEvents()
    running = live_threads()
    if running:
        for t in running:
            t.wait(30_000)
        forget_threads(running)
        pytest.fail(f"the test left {len(running)} job thread(s) running: "
                    f"{[t.objectName() for t in running]}")


def _send(widget, kind, pos: QPointF, button, buttons) -> None:
    glob = QPointF(widget.mapToGlobal(pos.toPoint()))
    ev = QMouseEvent(kind, pos, glob, button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)


def drag(widget, start: QPointF, end: QPointF, *, button=Qt.MouseButton.LeftButton,
         steps: int = 8, pause_s: float = 0.0) -> None:
    """Press at ``start``, move in ``steps`` to ``end``, release (widget coordinates).

    ``pause_s`` between moves: pyqtgraph drops moves closer than 10 ms apart (its
    ``mouseRateLimit``), so a test that needs every move delivered, as a hand's would be,
    pauses a little longer.
    """
    _send(widget, QEvent.Type.MouseButtonPress, QPointF(start), button, button)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        if pause_s:
            time.sleep(pause_s)
        p = QPointF(start.x() + (end.x() - start.x()) * t, start.y() + (end.y() - start.y()) * t)
        _send(widget, QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, button)
        QApplication.processEvents()
    _send(widget, QEvent.Type.MouseButtonRelease, QPointF(end), button, Qt.MouseButton.NoButton)
    QApplication.processEvents()


def image_to_widget(viewer, row: float, col: float) -> QPointF:
    """Viewport coordinates of image point (row, col) in an ImageViewer."""
    scene = viewer.view_box.mapViewToScene(QPointF(col, row))
    p = viewer.graphics.mapFromScene(scene)
    return QPointF(p.x(), p.y()) if not isinstance(p, QPoint) else QPointF(p)


def settle_view(qtbot, viewer, timeout_ms: int = 3000) -> None:
    """Wait until the view's image-to-screen mapping stops changing (range updates are deferred)."""
    last = None
    waited = 0
    while waited < timeout_ms:
        qtbot.wait(40)
        waited += 40
        now = (image_to_widget(viewer, 0, 0), image_to_widget(viewer, 100, 100))
        if last is not None and now == last:
            return
        last = now
