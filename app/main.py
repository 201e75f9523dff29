"""Composition root: builds the QApplication, the store and the main window."""

from __future__ import annotations

import os
import sys

NO_DISPLAY_MESSAGE = (
    "weldreview: no display found. Run the application on a desktop, or set "
    "QT_QPA_PLATFORM=offscreen, or use the headless sub-commands (weldreview --help)."
)


def display_available() -> bool:
    """True when Qt can open a window: a display server, or an explicit QT_QPA_PLATFORM."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def start_gui(paths: list[str], *, demo: bool = False) -> int:
    """Start the review application; returns the process exit code."""
    if not display_available():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("weldreview")
    app.setOrganizationName("weldreview")
    window = MainWindow()
    window.show()
    if demo:
        window.open_demo()
    if paths:
        window.open_paths(paths)
    return app.exec()
