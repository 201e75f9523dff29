"""Where weldreview keeps user data and where its bundled resources are."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "WELDREVIEW_HOME"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def user_home(override: str | os.PathLike | None = None) -> Path:
    """Return the directory for the database and trained models, creating it.

    Order of precedence: ``override`` (the ``--home`` option), the environment variable
    ``WELDREVIEW_HOME``, then the platform's per-user data directory.
    """
    if override is not None:
        home = Path(override)
    elif os.environ.get(HOME_ENV):
        home = Path(os.environ[HOME_ENV])
    else:
        from platformdirs import user_data_dir

        home = Path(user_data_dir("weldreview", appauthor=False))
    home = home.expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_path(home: Path | None = None) -> Path:
    return (home or user_home()) / "weldreview.sqlite"


def models_dir(home: Path | None = None) -> Path:
    path = (home or user_home()) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_model_path() -> Path:
    """The bundled default model (trained on synthetic welds, see README)."""
    return RESOURCES / "models" / "default.keras"


def demo_dir() -> Path:
    return RESOURCES / "demo"
