"""Light and dark themes: a Qt stylesheet from resources/style plus matching pyqtgraph colours."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication

from core.paths import RESOURCES

STYLE_DIR = RESOURCES / "style"
ICON_DIR = RESOURCES / "icons"
THEMES = ("light", "dark")
# Background of image views and plots per theme (radiographs read best on a neutral dark grey).
VIEW_BACKGROUND = {"light": "#3a3a3a", "dark": "#1e1e1e"}
PLOT_COLOURS = {"light": ("#ffffff", "#202020"), "dark": ("#252525", "#d0d0d0")}


def stylesheet_path(name: str) -> Path:
    """Path of the stylesheet of theme ``name`` ("light" or "dark")."""
    if name not in THEMES:
        raise ValueError(f"unknown theme {name!r}; choose one of {', '.join(THEMES)}")
    return STYLE_DIR / f"{name}.qss"


def apply_theme(app: QApplication, name: str) -> None:
    """Apply the stylesheet of theme ``name`` to the whole application."""
    app.setStyleSheet(stylesheet_path(name).read_text(encoding="utf-8"))
    app.setProperty("weldreview_theme", name)


def current_theme(app: QApplication) -> str:
    """The theme last applied with :func:`apply_theme` ("light" before any)."""
    name = app.property("weldreview_theme")
    return name if name in THEMES else "light"


def icon_path(name: str) -> str:
    """Path (as str, for QIcon) of the bundled SVG icon ``name``."""
    return str(ICON_DIR / f"{name}.svg")
