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
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app import theme
    from app.main_window import MainWindow
    from app.user_dialog import choose_user
    from core.errors import StoreError
    from core.store import Store

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("weldreview")
    app.setOrganizationName("weldreview")
    settings = QSettings()
    theme_name = str(settings.value("view/theme", "light"))
    theme.apply_theme(app, theme_name if theme_name in theme.THEMES else "light")
    store, user = None, None
    try:
        store = Store()
    except StoreError as exc:
        QMessageBox.warning(None, "weldreview", f"{exc}\nVerdicts will not be recorded.")
    if store is not None:
        user = choose_user(store, settings)
    window = MainWindow(store=store, user=user, settings=settings)
    window.set_theme(theme.current_theme(app))
    window.show()
    window.preload_model()
    if demo:
        window.open_demo()
    if paths:
        window.open_paths(paths)
    try:
        return app.exec()
    finally:
        if store is not None:
            store.close()
