"""Shared fixtures. Tests never touch the real user directory: WELDREVIEW_HOME points to a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each for TensorFlow's and numpy's
    # kernels, so that the two never fight over the cores (set before TensorFlow is imported)
    for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

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


@pytest.fixture
def gdxray_pair(gdxray, tmp_path) -> Path:
    """Two GDXray radiographs (W0001_0002, 0009), cropped to 1600 px wide to keep runs short, as
    radiograph + ``<stem>_mask`` pairs in a temporary folder (never copied into the repository)."""
    import numpy as np
    from skimage import io

    data = tmp_path / "data"
    data.mkdir()
    for number in ("0002", "0009"):
        image = io.imread(gdxray / "W0001" / f"W0001_{number}.png")[:, :1600]
        mask = io.imread(gdxray / "W0002" / f"W0002_{number}.png")[:, :1600]
        io.imsave(data / f"w{number}.png", image, check_contrast=False)
        io.imsave(data / f"w{number}_mask.png", (mask > 0).astype(np.uint8) * 255, check_contrast=False)
    return data
