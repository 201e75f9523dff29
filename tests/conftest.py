"""Shared fixtures. Tests never touch the real user directory: WELDREVIEW_HOME points to a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
GDXRAY = REPO.parent / "shared" / "datasets" / "gdxray-welds"


@pytest.fixture(autouse=True)
def weldreview_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("WELDREVIEW_HOME", str(home))
    return home


@pytest.fixture
def gdxray() -> Path:
    if not (GDXRAY / "W0001").is_dir():
        pytest.skip(f"GDXray welds not found at {GDXRAY} (the shared dataset is absent)")
    return GDXRAY
