"""Write screenshots of the review application's main states to docs/screenshots/*.png.

Run from the repository root (no display needed):

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/scripts/screenshots.py

It opens the bundled demo radiographs (resources/demo/) with the default model in a throw-away
user folder and settings, so nothing of the real user's is read or written. Without the default
model it still writes the viewer states and says so. Regenerate whenever the window changes; the
README shows docs/screenshots/main_window.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wait_until(app, condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a scan")
    parser.add_argument("--model", type=Path, default=None,
                        help="model to scan with (default: the bundled default model)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp = Path(tempfile.mkdtemp(prefix="weldreview-shots-"))
    os.environ["WELDREVIEW_HOME"] = str(tmp / "home")
    sys.path.insert(0, str(REPO))

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.main_window import MainWindow
    from core.paths import default_model_path
    from core.store import Store

    app = QApplication.instance() or QApplication([])
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    store = Store(tmp / "home" / "weldreview.sqlite")
    store.add_user("demo", role="interpreter")
    theme.apply_theme(app, "light")
    window = MainWindow(store=store, user="demo", settings=settings, model_path=args.model)
    window.set_theme("light")
    window.resize(1600, 1000)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)
    written = []

    def shot(name: str, widget=None) -> None:
        app.processEvents()
        path = args.out / f"{name}.png"
        (widget or window).grab().save(str(path))
        written.append(path)

    window.open_demo(model_path=args.model)
    wait_until(app, lambda: not window.is_busy(), args.timeout)
    if window.result is None:
        print(f"note: no scan ({default_model_path()} missing or failed); "
              "screenshots show the viewer only", file=sys.stderr)
    if window.queue.count():
        window.queue.setCurrentRow(0)
    window.viewer.fit()
    shot("main_window")
    if window.queue.count():
        window.queue.setCurrentRow(0)
        window.set_overlay("local_std", True)
        shot("overlay_local_std")
        window.set_overlay("local_std", False)
    window.set_theme("dark")
    shot("main_window_dark")
    window.set_theme("light")
    if window.radiograph is not None:
        rows, cols = window.radiograph.shape
        window.viewer.fit()
        window.set_tool("line")
        window.measure.set_line((rows * 0.2, cols * 0.3), (rows * 0.8, cols * 0.32))
        shot("line_profile")
        window.set_tool("none")
    window.show_shortcuts()
    shot("shortcuts", window.shortcuts_dialog)
    window.shortcuts_dialog.close()
    window.close()
    store.close()
    for p in written:
        print(p.relative_to(REPO) if p.is_relative_to(REPO) else p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
