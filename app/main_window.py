"""The main window of the review application: viewer, worklist, review queue, evidence, verdicts.

Long work (reading a radiograph, loading the model, scanning) runs in a :class:`JobRunner`
thread, one job at a time from a small queue; the GUI thread only draws and records verdicts.
Actions are registered by stable ids in :attr:`MainWindow.actions` so tests can trigger them and
ask which are enabled.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar,
    QPushButton, QTabWidget, QToolBar, QWidget,
)

from app import theme
from app.detail_panel import DetailPanel, thumbnail_array
from app.measure import MeasureTools, ProfilePlot
from app.overlays import KIND_LABELS, KINDS, OverlayPanel, Overlays, overlay_layers
from app.review_queue import THUMB_PX, ReviewQueue, WorklistQueue
from app.review_session import ReviewSession, worklist_counts, worklist_regions
from app.shortcuts import ShortcutsDialog
from app.verdicts import VERDICTS, VerdictPanel
from app.viewer import PRESET_LABELS, PRESETS, ImageViewer
from app.worker import JobRunner
from app.worklist import Worklist, radiographs_in, state_for
from core.errors import WeldreviewWarning
from core.scanning import ScanCancelled  # light: numpy only, TensorFlow is imported lazily

log = logging.getLogger(__name__)
MAX_RECENT = 10
SCAN_TILE = 1024
MODEL_JOB = "Loading model"
FPR_CHOICES = (0.0005, 0.001, 0.002, 0.005, 0.01)


@dataclass
class ScanPayload:
    """What the scan job hands to the GUI thread: the result and the arrays ready to draw."""

    radiograph: object
    result: object
    layers: dict
    thumbnails: dict
    store_error: str | None = None


def operating_point_text(thresholds, *, model_name: str, model_sha256: str,
                         pixel_size_um: float | None) -> str:
    """The operating point in words: model, target FPR and expected false flags per metre."""
    from core.calibration import expected_false_flags_per_metre

    text = (f"Model {model_name} ({model_sha256[:8]}), operating point: "
            f"FPR {thresholds.fpr_target:.3%} of okay 156 px patches")
    if pixel_size_um:
        per_m = expected_false_flags_per_metre(thresholds.fpr_target, pixel_size_um)
        text += f" = about {per_m:.2g} expected false flags per metre of weld"
    else:
        text += " (pixel size unknown: false flags per metre of weld cannot be stated)"
    return text


class MainWindow(QMainWindow):
    """The review window.

    Parameters
    ----------
    store : core.store.Store, optional
        Where verdicts go; without one, scanning and viewing work but nothing is recorded.
    user : str, optional
        The current user's name (verdicts need one).
    settings : QSettings, optional
        Geometry, theme, recent files, overlay choices (default: the application's QSettings).
    model_path : Path, optional
        Model to scan with (default: ``core.paths.default_model_path()``).
    """

    def __init__(self, *, store=None, user: str | None = None, settings: QSettings | None = None,
                 model_path: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("weldreview")
        self.setWindowIcon(QIcon(theme.icon_path("weldreview")))
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        self.store = store
        self.user = user
        self.settings = settings if settings is not None else QSettings()
        if model_path is None:
            from core.paths import default_model_path

            model_path = default_model_path()
        self.model_path = Path(model_path)
        self.bundle = None
        self.model_error: str | None = None
        self.fpr: float | None = None  # None: the model's calibrated operating point
        self.scan_tile = SCAN_TILE
        self.radiograph = None
        self.result = None
        self.current_path: Path | None = None
        self.session = ReviewSession(store, user) if store is not None and user else None
        self.auto_advance = True
        self.messages: list[str] = []  # every message shown to the user (status bar / box)
        self._jobs: deque = deque()
        self._missed_mode = False
        self._missed_items: list = []
        self.operating_point = ""
        self._selecting = False
        self._loading_model: Path | None = None

        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._start_next_job)

        self._build_widgets()
        self._build_actions()
        self._build_menus()
        self._restore_settings()
        self._update_actions()

    # ================================================================== construction
    def _build_widgets(self) -> None:
        self.viewer = ImageViewer(self)
        self.setCentralWidget(self.viewer)
        self.overlays = Overlays(self.viewer)
        self.measure = MeasureTools(self.viewer)
        self.profile = ProfilePlot()
        self.measure.line_measured.connect(self._on_line)
        self.measure.rect_measured.connect(lambda m: self.show_status(m.text()))

        self.worklist = Worklist()
        self.worklist.open_requested.connect(self.open_file)
        self.queue = ReviewQueue()
        self.queue.region_selected.connect(self._on_region_selected)
        self.worklist_queue = WorklistQueue()
        self.worklist_queue.open_region.connect(self.open_region)
        self.queue_tabs = QTabWidget()
        self.queue_tabs.addTab(self.queue, "This radiograph")
        self.queue_tabs.addTab(self.worklist_queue, "Whole worklist")
        self._pending_region: int | None = None
        self.detail = DetailPanel()
        self.verdict_panel = VerdictPanel()
        self.verdict_panel.verdict_requested.connect(self.give_verdict)
        self.verdict_panel.undo_requested.connect(self.undo_verdict)
        self.verdict_panel.missed_requested.connect(self.start_missed_box)
        # Return in the comment field hands the keys back to the queue (D/A/F/U, N/P)
        self.verdict_panel.comment.returnPressed.connect(self.queue.setFocus)

        self.overlay_panel = OverlayPanel(self.overlays)
        self.overlay_panel.visibility_requested.connect(self.set_overlay)
        self.overlay_boxes = self.overlay_panel.boxes
        self.opacity = self.overlay_panel.opacity

        self.docks: dict[str, QDockWidget] = {}
        self._dock("worklist", "Worklist", self.worklist, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("queue", "Review queue", self.queue_tabs, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("verdict", "Verdict", self.verdict_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("overlays", "Overlays", self.overlay_panel,
                   Qt.DockWidgetArea.RightDockWidgetArea)
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.detail, "Evidence")
        self.bottom_tabs.addTab(self.profile, "Line profile")
        self._dock("evidence", "Evidence and profile", self.bottom_tabs,
                   Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.docks["evidence"]], [250], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["worklist"], self.docks["verdict"]], [300, 380],
                         Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["worklist"], self.docks["queue"]], [180, 420],
                         Qt.Orientation.Vertical)

        sb = self.statusBar()
        self.cursor_label = QLabel("")
        self.viewer.cursor_moved.connect(self.cursor_label.setText)
        self.op_label = QLabel("No model loaded")
        self.op_label.setObjectName("operatingPoint")
        self.user_label = QLabel(f"User: {self.user}" if self.user else "No user")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_job)
        sb.addWidget(self.cursor_label, 1)
        sb.addPermanentWidget(self.op_label)
        sb.addPermanentWidget(self.user_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

    def _dock(self, key: str, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{key}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[key] = dock
        return dock

    def _action(self, action_id: str, text: str, slot: Callable, shortcut=None, *,
                icon: str | None = None, checkable: bool = False, tip: str = "") -> QAction:
        action = QAction(text, self)
        if icon:
            action.setIcon(QIcon(theme.icon_path(icon)))
        if shortcut:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
        action.setCheckable(checkable)
        action.setStatusTip(tip or text.replace("&", ""))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _=False: slot())
        self.addAction(action)
        self.actions[action_id] = action
        return action

    def _build_actions(self) -> None:
        self.actions: dict[str, QAction] = {}
        a = self._action
        a("file.open", "&Open radiograph...", self.open_dialog, QKeySequence.StandardKey.Open,
          icon="open")
        a("file.open_folder", "Open &folder...", self.open_folder_dialog, "Ctrl+Shift+O",
          icon="folder")
        a("file.open_model", "Use &model...", self.open_model_dialog, "Ctrl+M")
        a("file.next_radiograph", "Next radiograph in worklist", self.open_next_radiograph,
          "Ctrl+Right")
        a("file.choose_user", "Change &user...", self.change_user, "Ctrl+U")
        a("file.quit", "&Quit", self.close, QKeySequence.StandardKey.Quit)
        a("view.fit", "&Fit to window", self.viewer.fit, ["0", "Home"], icon="fit")
        a("view.one_to_one", "&1:1 (one image pixel per screen pixel)", self.viewer.one_to_one,
          "1", icon="one_to_one")
        a("view.zoom_in", "Zoom &in", lambda: self.viewer.zoom(0.8), ["+", "="])
        a("view.zoom_out", "Zoom &out", lambda: self.viewer.zoom(1.25), "-")
        for i, name in enumerate(PRESETS, start=1):
            a(f"view.preset.{name}", f"Window: {PRESET_LABELS[name]}",
              lambda n=name: self.viewer.apply_preset(n), f"Ctrl+{i}",
              icon="window_level" if name == "auto" else None)
        a("view.theme.light", "&Light theme", lambda: self.set_theme("light"), "Ctrl+Alt+L")
        a("view.theme.dark", "&Dark theme", lambda: self.set_theme("dark"), "Ctrl+Alt+D")
        a("view.toggle_theme", "Toggle light/dark theme", self.toggle_theme, "Ctrl+T")
        keys = {"residual": "Alt+1", "local_mean": "Alt+2", "local_std": "Alt+3", "flags": "Alt+4",
                "outlines": "Alt+5"}
        for kind in KINDS:
            act = a(f"overlay.{kind}", f"Show {KIND_LABELS[kind].lower()}",
                    lambda on, k=kind: self.set_overlay(k, on), keys[kind], checkable=True)
            act.setChecked(self.overlays.visible[kind])
        a("overlay.opacity_up", "Overlay more opaque", lambda: self.opacity.setValue(
            self.opacity.value() + 10), "Alt+Up")
        a("overlay.opacity_down", "Overlay more transparent", lambda: self.opacity.setValue(
            self.opacity.value() - 10), "Alt+Down")
        a("tools.pan", "&Pan/zoom (no tool)", lambda: self.set_tool("none"), "Escape")
        a("tools.line", "&Line measurement", lambda: self.set_tool("line"), "L", icon="line")
        a("tools.rect", "&Rectangle statistics", lambda: self.set_tool("rect"), "R", icon="rect")
        a("scan.start", "&Scan again", self.rescan, "Ctrl+R", icon="scan")
        a("scan.cancel", "&Cancel scan", self.cancel_job, "Ctrl+.", icon="cancel")
        a("scan.operating_point", "&Operating point (target FPR)...", self.choose_operating_point,
          "Ctrl+Shift+F")
        a("review.next", "&Next region", lambda: self.queue.move(1), ["N", "Down", "J"],
          icon="next")
        a("review.previous", "&Previous region", lambda: self.queue.move(-1), ["P", "Up", "K"],
          icon="previous")
        a("review.next_unreviewed", "Next &unreviewed region", self.select_next_unreviewed, "Tab")
        a("review.zoom_region", "&Zoom to region", self.zoom_to_current, "Z")
        a("review.queue_scope", "Queue: this radiograph / whole worklist",
          self.toggle_queue_scope, "W")
        a("review.auto_advance", "&Auto-advance after a verdict", self._set_auto_advance,
          "Ctrl+Shift+A", checkable=True)
        self.actions["review.auto_advance"].setChecked(True)
        for value, (key, label) in VERDICTS.items():
            a(f"verdict.{value}", f"Verdict: {label}", lambda v=value: self.give_verdict(v), key,
              icon=value)
        a("verdict.undo", "&Undo last verdict", self.undo_verdict, QKeySequence.StandardKey.Undo,
          icon="undo")
        a("verdict.missed", "Mark &missed indication (draw a box)", self.start_missed_box, "M",
          icon="missed")
        a("help.shortcuts", "&Keyboard shortcuts", self.show_shortcuts,
          [QKeySequence.StandardKey.HelpContents, "?"], icon="help")
        a("help.about", "&About weldreview", self.show_about, "Ctrl+F1")

    def _build_menus(self) -> None:
        mb = self.menuBar()
        acts = self.actions
        file_menu = mb.addMenu("&File")
        for key in ("file.open", "file.open_folder"):
            file_menu.addAction(acts[key])
        self.recent_menu = file_menu.addMenu("Open &recent")
        for key in ("file.next_radiograph", "file.open_model", "file.choose_user"):
            file_menu.addAction(acts[key])
        file_menu.addSeparator()
        file_menu.addAction(acts["file.quit"])
        view = mb.addMenu("&View")
        for key in ("view.fit", "view.one_to_one", "view.zoom_in", "view.zoom_out"):
            view.addAction(acts[key])
        window = view.addMenu("&Window/level")
        for name in PRESETS:
            window.addAction(acts[f"view.preset.{name}"])
        overlays = view.addMenu("&Overlays")
        for kind in KINDS:
            overlays.addAction(acts[f"overlay.{kind}"])
        overlays.addAction(acts["overlay.opacity_up"])
        overlays.addAction(acts["overlay.opacity_down"])
        themes = view.addMenu("&Theme")
        for key in ("view.theme.light", "view.theme.dark", "view.toggle_theme"):
            themes.addAction(acts[key])
        panels = view.addMenu("&Panels")
        for dock in self.docks.values():
            panels.addAction(dock.toggleViewAction())
        tools = mb.addMenu("&Tools")
        for key in ("tools.pan", "tools.line", "tools.rect"):
            tools.addAction(acts[key])
        review = mb.addMenu("&Review")
        for key in ("scan.start", "scan.cancel", "scan.operating_point", None, "review.next",
                    "review.previous",
                    "review.next_unreviewed", "review.zoom_region", "review.queue_scope",
                    "review.auto_advance", None,
                    *(f"verdict.{v}" for v in VERDICTS), "verdict.undo", "verdict.missed"):
            review.addSeparator() if key is None else review.addAction(acts[key])
        help_menu = mb.addMenu("&Help")
        help_menu.addAction(acts["help.shortcuts"])
        help_menu.addAction(acts["help.about"])

        tb = QToolBar("Main")
        tb.setObjectName("toolbar_main")
        for key in ("file.open", "file.open_folder", None, "view.fit", "view.one_to_one",
                    "view.preset.auto", None, "tools.line", "tools.rect", None, "scan.start",
                    "scan.cancel", None, "verdict.defect", "verdict.acceptable",
                    "verdict.false_alarm", "verdict.unsure", "verdict.undo", "verdict.missed"):
            tb.addSeparator() if key is None else tb.addAction(acts[key])
        self.addToolBar(tb)
        self._rebuild_recent_menu()

    # ================================================================== settings
    def _restore_settings(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = s.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        for kind in KINDS:
            value = s.value(f"overlay/{kind}", None)
            if value is not None:
                self.overlay_boxes[kind].setChecked(str(value).lower() in ("true", "1"))
        opacity = s.value("overlay/opacity", None)
        if opacity is not None:
            self.opacity.setValue(int(opacity))
        self.auto_advance = str(s.value("review/auto_advance", "true")).lower() in ("true", "1")
        self.actions["review.auto_advance"].setChecked(self.auto_advance)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        for kind in KINDS:
            s.setValue(f"overlay/{kind}", self.overlays.visible[kind])
        s.setValue("overlay/opacity", self.opacity.value())
        s.setValue("review/auto_advance", self.auto_advance)
        s.sync()

    def recent_files(self) -> list[str]:
        value = self.settings.value("file/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember_recent(self, path: Path) -> None:
        recent = [str(path)] + [p for p in self.recent_files() if p != str(path)]
        self.settings.setValue("file/recent", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for i, p in enumerate(recent):
            act = self.recent_menu.addAction(f"&{i + 1 if i < 9 else 0} {Path(p).name}")
            act.setToolTip(p)
            act.triggered.connect(lambda _=False, path=p: self.open_paths([path]))
        self.recent_menu.setEnabled(bool(recent))

    def set_theme(self, name: str) -> None:
        app = QApplication.instance()
        theme.apply_theme(app, name)
        self.viewer.graphics.setBackground(theme.VIEW_BACKGROUND[name])
        bg, fg = theme.PLOT_COLOURS[name]
        self.profile.setBackground(bg)
        for axis in ("left", "bottom"):
            self.profile.getAxis(axis).setPen(fg)
            self.profile.getAxis(axis).setTextPen(fg)
        self.settings.setValue("view/theme", name)

    def toggle_theme(self) -> None:
        self.set_theme("dark" if theme.current_theme(QApplication.instance()) == "light" else
                       "light")

    # ================================================================== messages
    def show_status(self, text: str, timeout_ms: int = 8000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def show_error(self, text: str) -> None:
        """A failure: in the status bar and in a non-modal message box; the app carries on."""
        log.warning("%s", text)
        self.messages.append(text)
        self.show_status(text, 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "weldreview", text,
                          QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self.last_message_box = box

    # ================================================================== jobs
    def _queue_job(self, name: str, fn, *, on_start=None, on_success=None, on_failure=None,
                   on_cancel=None, cancel_types=()) -> None:
        """Queue ``fn(progress, cancel)``; ``on_start`` runs on the GUI thread just before it
        starts and may return False to skip the job."""
        self._jobs.append((name, fn, dict(on_start=on_start, on_success=on_success,
                                          on_failure=on_failure, on_cancel=on_cancel,
                                          cancel_types=cancel_types)))
        if not self.runner.is_running():
            self._start_next_job()

    def _start_next_job(self) -> None:
        if self.runner.is_running():
            return
        if not self._jobs:
            self.progress.setVisible(False)
            self.cancel_button.setVisible(False)
            self._update_actions()
            return
        name, fn, kw = self._jobs.popleft()
        on_start = kw.pop("on_start")
        if on_start is not None and on_start() is False:
            self._start_next_job()
            return
        self.progress.setValue(0)
        self.progress.setFormat(f"{name} %p%")
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.runner.start(fn, name=name, **kw)
        self._update_actions()

    def _on_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(fraction * 1000))

    def cancel_job(self) -> None:
        """Cancel the running job and drop the queued ones."""
        if not self.runner.is_running():
            return
        self._jobs.clear()
        self.runner.cancel()
        self.show_status(f"Cancelling {self.runner.name}...")

    def is_busy(self) -> bool:
        """A job runs or waits, or the results of the last scan are still being shown."""
        return self.runner.is_running() or bool(self._jobs) or self._selecting

    # ================================================================== opening
    def open_dialog(self) -> None:
        dlg = QFileDialog(self, "Open radiographs")
        dlg.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dlg.setNameFilter("Radiographs (*.tif *.tiff *.png *.dcm *.dicom *.dic);;All files (*)")
        dlg.filesSelected.connect(self.open_paths)
        dlg.open()  # non-blocking

    def open_folder_dialog(self) -> None:
        dlg = QFileDialog(self, "Open a folder of radiographs")
        dlg.setFileMode(QFileDialog.FileMode.Directory)
        dlg.fileSelected.connect(lambda p: self.open_paths([p]))
        dlg.open()

    def open_model_dialog(self) -> None:
        dlg = QFileDialog(self, "Use a model")
        dlg.setFileMode(QFileDialog.FileMode.ExistingFile)
        dlg.setNameFilter("weldreview models (*.keras)")
        dlg.fileSelected.connect(lambda p: self.use_model(Path(p)))
        dlg.open()

    def open_demo(self, *, model_path: Path | None = None) -> None:
        """Open the bundled demo radiographs with the default model (or ``model_path``)."""
        from core.paths import default_model_path, demo_dir

        self.use_model(Path(model_path) if model_path else default_model_path())
        folder = demo_dir()
        if not folder.is_dir() or not radiographs_in(folder):
            self.show_error(f"{folder}: no demo radiographs found (run the synthetic data "
                            "helper to write them); the viewer works without them.")
            return
        self.open_paths([str(folder)])

    def open_paths(self, paths) -> None:
        """Open files and folders: folders fill the worklist; the first radiograph is opened."""
        first = None
        for p in map(Path, paths):
            if p.is_dir():
                files = radiographs_in(p)
                if first is None:
                    self.worklist.set_paths(files)  # a folder replaces the worklist
                else:
                    for f in files:
                        self.worklist.add_path(f)
                if files and first is None:
                    first = files[0]
                if not files:
                    self.show_error(f"{p}: no radiographs (TIFF, PNG, DICOM) in this folder")
            else:
                self.worklist.add_path(p)
                first = first or p
        self._refresh_worklist_states()
        if first is not None:
            self.open_file(first)

    def _refresh_worklist_states(self) -> None:
        if self.store is None:
            return
        self._refresh_worklist_queue()
        for path, entry in self.worklist.entries.items():
            if entry.state in ("scanning", "failed") or path == self.current_path:
                continue
            counts = worklist_counts(self.store, path)
            if counts is not None:
                self.worklist.update_entry(path, state=state_for(*counts), n_flagged=counts[0],
                                           n_reviewed=counts[1])

    def _refresh_worklist_queue(self) -> None:
        if self.store is None:
            return
        try:
            self.worklist_queue.set_rows(worklist_regions(self.store, self.worklist.paths()))
        except Exception as exc:  # noqa: BLE001
            self.show_error(f"{self.store.path}: {exc}")

    def open_region(self, path, number: int) -> None:
        """Show region ``number`` of radiograph ``path`` (opening and scanning it if needed)."""
        path = Path(path).resolve()
        self.queue_tabs.setCurrentWidget(self.queue)
        if path == self.current_path and self.result is not None:
            self.queue.select_region(number)
            self.queue.setFocus()
        else:
            self.open_file(path)
            self._pending_region = number

    def toggle_queue_scope(self) -> None:
        self.queue_tabs.setCurrentIndex(1 - self.queue_tabs.currentIndex())
        self.queue_tabs.currentWidget().setFocus()

    def open_next_radiograph(self) -> None:
        nxt = self.worklist.next_path(self.current_path) if self.current_path else None
        if nxt is None:
            self.show_status("No further radiograph in the worklist.")
        else:
            self.open_file(nxt)

    def open_file(self, path) -> None:
        """Read the radiograph in the background, show it, then scan it."""
        path = Path(path).resolve()
        self._pending_region = None
        if self.runner.is_running() and self.runner.name != MODEL_JOB:
            self.runner.cancel()  # the scan or read of the previous radiograph
        self._jobs = deque(job for job in self._jobs if job[0] == MODEL_JOB)
        self.worklist.add_path(path)
        self.worklist.select_path(path)
        self.show_status(f"Opening {path.name}...")

        def load(progress, cancel):
            from core.imageio import load_radiograph

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", WeldreviewWarning)
                return load_radiograph(path)

        self._queue_job(f"Reading {path.name}", load,
                        on_success=lambda rg: self._on_loaded(path, rg),
                        on_failure=lambda msg: self._on_load_failed(path, msg))

    def _on_load_failed(self, path: Path, message: str) -> None:
        self.worklist.update_entry(path, state="failed", message=message)
        self.show_error(message)

    def _on_loaded(self, path: Path, radiograph) -> None:
        self.radiograph, self.result, self.current_path = radiograph, None, path
        self.overlays.set_result(None)
        self.measure.clear()
        self._clear_missed()
        self.queue.set_regions([], None)
        self.detail.clear()
        self.verdict_panel.show_region(None, None)
        self.viewer.set_image(radiograph.raw, pixel_size_um=radiograph.pixel_size_um,
                              bit_depth=radiograph.bit_depth)
        self.setWindowTitle(f"weldreview - {path.name}")
        self._remember_recent(path)
        size = f"{radiograph.pixel_size_um:g} um" if radiograph.pixel_size_um else "unknown"
        text = (f"{path.name}: {radiograph.shape[1]} x {radiograph.shape[0]} px, "
                f"{radiograph.bit_depth}-bit, pixel size {size}")
        if radiograph.warnings:
            text += "; " + "; ".join(radiograph.warnings)
        self.show_status(text)
        if self.session is not None:
            try:
                self.session.open_radiograph(radiograph)
                self._show_missed()
            except Exception as exc:  # noqa: BLE001 - a store failure must not stop viewing
                self.show_error(f"{self.store.path}: {exc}")
        self.start_scan()
        self._update_actions()

    # ================================================================== model and scan
    def use_model(self, path: Path) -> None:
        self.model_path, self.bundle, self.model_error = Path(path), None, None
        if self.radiograph is not None:
            self.start_scan()
        else:
            self._ensure_model()

    def preload_model(self) -> None:
        """Load the model now, in the background (importing TensorFlow stalls the event loop for
        a few hundred ms once; better at start than at the first radiograph)."""
        if self.model_path.exists():
            self._ensure_model()

    def _ensure_model(self) -> None:
        if self.bundle is not None or self.model_error is not None:
            return
        path = self.model_path
        if self._loading_model == path:
            return  # already queued or loading
        if not path.exists():
            self.model_error = (f"{path}: the model file is missing; the viewer works, but "
                                "nothing is scanned (train one, or choose File > Use model)")
            self.op_label.setText("No model: not scanning")
            self.show_error(self.model_error)
            return

        def load(progress, cancel):
            import numpy as np

            from core.model import PATCH
            from core.modelfile import load_model
            from core.scanning import reconstruct_whole

            bundle = load_model(path)
            # build and trace the whole-image model now (TensorFlow holds the GIL for a while
            # doing so), so that the first scan does not stall the event loop
            reconstruct_whole(np.zeros((PATCH, PATCH), np.float32), bundle.model)
            return bundle

        def done():
            if self._loading_model == path:
                self._loading_model = None

        def failed(msg):
            done()
            if path == self.model_path:
                self.model_error = msg
                self.op_label.setText("Model failed to load: not scanning")
                self.show_error(msg)

        def loaded(bundle):
            done()
            if path == self.model_path:  # else another model was chosen meanwhile
                self._on_model_loaded(bundle)

        self._loading_model = path
        self._queue_job(MODEL_JOB, load, on_success=loaded, on_failure=failed, on_cancel=done)

    def _on_model_loaded(self, bundle) -> None:
        self.bundle = bundle
        if self.session is not None:
            try:
                self.session.register_model(bundle)
            except Exception as exc:  # noqa: BLE001
                self.show_error(f"{self.store.path}: {exc}")
        thr = bundle.thresholds
        if thr is None:
            self.model_error = f"{bundle.path}: the model is not calibrated; calibrate it first"
            self.show_error(self.model_error)
            return
        self._update_operating_point(thr)

    def _update_operating_point(self, thr) -> None:
        px = self.radiograph.pixel_size_um if self.radiograph is not None else None
        text = operating_point_text(thr, model_name=self.bundle.name,
                                    model_sha256=self.bundle.sha256, pixel_size_um=px)
        short = f"Model {self.bundle.name} | FPR {thr.fpr_target:.2%} per patch"
        if px:
            from core.calibration import expected_false_flags_per_metre

            per_m = expected_false_flags_per_metre(thr.fpr_target, px)
            short += f" = {per_m:.2g} expected false flags per metre of weld"
        self.op_label.setText(short)
        self.op_label.setToolTip(text)
        self.operating_point = text

    def choose_operating_point(self) -> None:
        """Ask (non-modally) for the target FPR; thresholds for it come from the model's stored
        okay scores, then the radiograph is scanned again."""
        from PySide6.QtWidgets import QInputDialog

        if self.bundle is None or self.bundle.thresholds is None:
            self.show_status("Load a calibrated model first.")
            return
        calibrated = self.bundle.thresholds.fpr_target
        choices = sorted({calibrated, *FPR_CHOICES})
        labels = [f"{f:.2%}" + (" (calibrated)" if f == calibrated else "") for f in choices]
        current = self.fpr if self.fpr is not None else calibrated
        dlg = QInputDialog(self)
        dlg.setWindowTitle("Operating point")
        dlg.setLabelText("Target false positive rate per okay 156 px patch:")
        dlg.setComboBoxItems(labels)
        dlg.setTextValue(labels[choices.index(current)] if current in choices else labels[0])
        dlg.textValueSelected.connect(lambda text: self.set_fpr(choices[labels.index(text)]))
        dlg.open()
        self.fpr_dialog = dlg

    def set_fpr(self, fpr: float | None) -> None:
        """Use ``fpr`` as the operating point (None: the model's calibrated one) and rescan."""
        from core.calibration import thresholds_from_metadata
        from core.errors import CalibrationError

        if self.bundle is not None and fpr is not None:
            try:
                thr = thresholds_from_metadata(self.bundle.metadata, fpr=fpr)
            except CalibrationError as exc:
                self.show_error(str(exc))
                return
            if thr is not None:
                self._update_operating_point(thr)
        self.fpr = fpr
        if self.radiograph is not None and not self.is_busy():
            self.start_scan()

    def rescan(self) -> None:
        if self.radiograph is None:
            self.show_status("Open a radiograph first.")
        elif not self.is_busy():
            self.start_scan()

    def start_scan(self) -> None:
        """Queue the model (if needed) and the scan of the current radiograph."""
        self._ensure_model()
        if self.model_error is not None or self.radiograph is None:
            return
        self._queue_job("Scanning", self._scan_job, on_start=self._before_scan,
                        on_success=self._on_scanned,
                        on_failure=self._on_scan_failed, on_cancel=self._on_scan_cancelled,
                        cancel_types=(ScanCancelled,))
        if self.current_path is not None:
            self.worklist.update_entry(self.current_path, state="scanning")

    def _before_scan(self) -> bool:
        """GUI thread, just before the scan job: record the scan start (or find the earlier
        scan of this radiograph with this model and operating point, which is reused)."""
        if self.bundle is None or self.radiograph is None:
            # a model error was shown when it happened; a model still loading is followed by
            # its own scan
            if self.model_error is None and self._loading_model is None:
                self.show_error("No model loaded: not scanning.")
            return False
        if self.session is not None:
            fpr = self.fpr if self.fpr is not None else self.bundle.thresholds.fpr_target
            try:
                self.session.begin_scan(self.bundle.sha256, fpr)
            except Exception as exc:  # noqa: BLE001 - a store failure must not stop the scan
                self.show_error(f"{self.store.path}: {exc}")
        return True


    def _scan_job(self, progress, cancel):
        """Runs in the worker thread: touches no widget, only the model and the image."""
        from core.scanning import scan_image

        bundle, radiograph, tile, fpr = self.bundle, self.radiograph, self.scan_tile, self.fpr
        session = self.session
        if bundle is None:
            raise RuntimeError(self.model_error or "no model loaded")
        result = scan_image(radiograph.image, bundle, fpr=fpr,
                            pixel_size_um=radiograph.pixel_size_um,
                            progress=lambda done, total: progress(0.95 * done / total),
                            cancel=cancel, tile=tile)
        # what the GUI thread would otherwise spend hundreds of ms on
        layers = overlay_layers(result)
        thumbs = {tuple(r.bbox): thumbnail_array(radiograph.image, r.bbox, size=THUMB_PX)
                  for r in result.regions}
        store_error = None
        if session is not None:  # hundreds of regions take tens of ms to record: not on the GUI
            try:
                session.store_regions(result)
            except Exception as exc:  # noqa: BLE001 - reported, the results are still shown
                store_error = f"{self.store.path}: {exc}"
        progress(1.0)
        return ScanPayload(radiograph, result, layers, thumbs, store_error)

    def _on_scan_failed(self, message: str) -> None:
        if self.current_path is not None:
            self.worklist.update_entry(self.current_path, state="failed", message=message)
        self.show_error(message)

    def _on_scan_cancelled(self) -> None:
        if self.current_path is not None:
            self.worklist.update_entry(self.current_path, state="not scanned")
        self.show_status("Scan cancelled; the radiograph stays open for viewing.")

    def _on_scanned(self, payload) -> None:
        radiograph, result = payload.radiograph, payload.result
        if radiograph is not self.radiograph:
            return  # a scan of a radiograph that is no longer shown
        self.result = result
        self._update_operating_point(result.thresholds)
        self.overlays.set_result(result, layers=payload.layers)
        regions = result.regions
        if payload.store_error is not None:
            self.show_error(payload.store_error)
        elif self.session is not None:
            try:
                regions = self.session.reload()
            except Exception as exc:  # noqa: BLE001
                self.show_error(f"{self.store.path}: {exc}")
                regions = result.regions
        verdicts = {r.id: getattr(r, "verdict", None) for r in regions}
        self.queue.set_regions(regions, radiograph.image, verdicts=verdicts,
                               thumbnails=payload.thumbnails)
        self._update_worklist_entry()
        n = len(regions)
        self._update_actions()
        self.show_status(
            f"Scan done in {result.timings.get('total_s', 0):.1f} s: {n} flagged region"
            f"{'' if n == 1 else 's'}. Unflagged weld is accepted by the detector at this "
            "operating point." if n else
            f"Scan done in {result.timings.get('total_s', 0):.1f} s: nothing flagged; the weld "
            "is accepted by the detector at this operating point.")
        if n:
            # select in the next event-loop turn, so drawing the results and filling the
            # evidence panel do not add up to one long pause
            self._selecting = True
            QTimer.singleShot(0, self._select_after_scan)
        else:
            self._pending_region = None

    def _select_after_scan(self) -> None:
        self._selecting = False
        self._loading_model: Path | None = None
        pending, self._pending_region = self._pending_region, None
        if not self.queue.regions:
            return
        row = self.queue.next_unreviewed()
        self.queue.setCurrentRow(0 if row is None else row)
        if pending is not None:
            self.queue.select_region(pending)
        self.queue.setFocus()

    # ================================================================== review
    def _on_region_selected(self, number: int) -> None:
        region = next((r for r in self.queue.regions if r.id == number), None)
        if region is None or self.result is None:
            return
        self.viewer.zoom_to(region.bbox)
        self.detail.show_region(self.radiograph.image, self.result, region)
        self.verdict_panel.show_region(region, self.queue.verdicts.get(number))

    def zoom_to_current(self) -> None:
        region = self.queue.current_region()
        if region is not None:
            self.viewer.zoom_to(region.bbox)

    def select_next_unreviewed(self) -> None:
        row = self.queue.next_unreviewed(after=self.queue.currentRow())
        if row is None:
            self.show_status("Every flagged region has a verdict.")
        else:
            self.queue.setCurrentRow(row)

    def _set_auto_advance(self, on: bool) -> None:
        self.auto_advance = bool(on)

    def give_verdict(self, verdict: str) -> None:
        """Record ``verdict`` for the selected region (saved at once) and advance."""
        region = self.queue.current_region()
        if region is None:
            self.show_status("Select a flagged region first.")
            return
        if self.session is None:
            self.show_error("No review database or user: verdicts cannot be recorded.")
            return
        d = self.verdict_panel.details(verdict)
        try:
            self.session.give(region.id, verdict, iso_code=d.iso_code, size_mm=d.size_mm,
                              comment=d.comment)
        except Exception as exc:  # noqa: BLE001 - e.g. another user's verdict, store locked
            self.show_error(str(exc))
            return
        self.queue.set_verdict(region.id, verdict)
        self._update_worklist_entry()
        self.show_status(f"Region {region.id}: {VERDICTS[verdict][1]} (saved)")
        if self.auto_advance:
            row = self.queue.next_unreviewed(after=self.queue.currentRow())
            if row is not None:
                self.queue.setCurrentRow(row)
            else:
                self.show_status(f"Region {region.id}: {VERDICTS[verdict][1]} (saved). Every "
                                 "flagged region has a verdict: radiograph done.")
                self.verdict_panel.show_region(region, verdict)
        else:
            self.verdict_panel.show_region(region, verdict)

    def undo_verdict(self) -> None:
        if self.session is None:
            return
        try:
            out = self.session.undo()
        except Exception as exc:  # noqa: BLE001
            self.show_error(str(exc))
            return
        if out is None:
            self.show_status("Nothing to undo.")
            return
        region, restored = out
        self.queue.select_region(region.id)
        if restored:
            self.queue.set_verdict(region.id, region.verdict)
            self.show_status(f"Region {region.id}: back to {VERDICTS[region.verdict][1]} "
                             "(recorded as a new verdict).")
        else:
            self.show_status(f"Region {region.id} selected again: its verdict stays in the "
                             "record until you give another one (verdicts are never deleted).")
        self.verdict_panel.show_region(region, self.queue.verdicts.get(region.id))
        self._update_worklist_entry()

    def _update_worklist_entry(self) -> None:
        if self.current_path is None:
            return
        self._refresh_worklist_queue()
        n, m = len(self.queue.regions), self.queue.n_reviewed()
        self.worklist.update_entry(self.current_path, state=state_for(n, m), n_flagged=n,
                                   n_reviewed=m)

    # ----- missed indications
    def start_missed_box(self) -> None:
        if self.radiograph is None:
            self.show_status("Open a radiograph first.")
            return
        self._missed_mode = True
        self.viewer.view_box.drag_handler = self._on_missed_drag
        self.show_status("Drag a box around the missed indication (Esc to stop).")

    def _on_missed_drag(self, start, now, is_start, is_finish) -> None:
        import pyqtgraph as pg

        if is_start or getattr(self, "_missed_rect", None) is None:
            pen = pg.mkPen("#ff3030", width=2, style=Qt.PenStyle.DashLine)
            self._missed_rect = pg.RectROI((start.x(), start.y()), (1, 1), pen=pen)
            self.viewer.view_box.addItem(self._missed_rect)
        x0, x1 = sorted((start.x(), now.x()))
        y0, y1 = sorted((start.y(), now.y()))
        self._missed_rect.setPos((x0, y0))
        self._missed_rect.setSize((max(x1 - x0, 1), max(y1 - y0, 1)))
        if is_finish:
            self.viewer.view_box.removeItem(self._missed_rect)
            self._missed_rect = None
            self.mark_missed((int(y0), int(x0), int(round(y1)) + 1, int(round(x1)) + 1))
            self.set_tool("none")

    def mark_missed(self, bbox) -> None:
        """Record a missed indication (a defect the detector did not flag) at ``bbox``."""
        from app.measure import clip_bbox

        bbox = clip_bbox(bbox, self.radiograph.shape)
        if self.session is None:
            self.show_error("No review database or user: the missed indication is not recorded.")
            return
        d = self.verdict_panel.details("defect")
        size = None
        if self.radiograph.pixel_size_um:
            size = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * self.radiograph.pixel_size_um / 1e3
        try:
            self.session.mark_missed(bbox, iso_code=d.iso_code, size_mm=size, comment=d.comment)
        except Exception as exc:  # noqa: BLE001
            self.show_error(str(exc))
            return
        self._show_missed()
        self.show_status(f"Missed indication recorded at rows {bbox[0]}-{bbox[2]}, "
                         f"cols {bbox[1]}-{bbox[3]}.")

    def _clear_missed(self) -> None:
        for item in self._missed_items:
            self.viewer.view_box.removeItem(item)
        self._missed_items = []

    def _show_missed(self) -> None:
        import pyqtgraph as pg
        from PySide6.QtCore import QRectF
        from PySide6.QtGui import QColor, QPen

        self._clear_missed()
        if self.session is None:
            return
        for row in self.session.missed():
            r0, c0, r1, c1 = row["bbox"]
            rect = pg.QtWidgets.QGraphicsRectItem(QRectF(c0, r0, c1 - c0, r1 - r0))
            pen = QPen(QColor(255, 48, 48))
            pen.setWidth(2)
            pen.setCosmetic(True)
            pen.setStyle(Qt.PenStyle.DashLine)
            rect.setPen(pen)
            rect.setZValue(21)
            self.viewer.view_box.addItem(rect)
            self._missed_items.append(rect)

    # ================================================================== tools, overlays
    def set_tool(self, tool: str) -> None:
        self._missed_mode = False
        self.measure.set_tool(tool)
        if tool == "line":
            self.bottom_tabs.setCurrentWidget(self.profile)
            self.show_status("Line tool: drag on the image (Esc: back to pan/zoom).")
        elif tool == "rect":
            self.show_status("Rectangle tool: drag on the image (Esc: back to pan/zoom).")

    def _on_line(self, m) -> None:
        self.profile.show_line(m)
        self.show_status(m.text())

    def set_overlay(self, kind: str, on: bool) -> None:
        self.overlays.set_visible(kind, on)
        for widget in (self.overlay_boxes[kind], self.actions.get(f"overlay.{kind}")):
            if widget is not None and widget.isChecked() != bool(on):
                widget.blockSignals(True)
                widget.setChecked(bool(on))
                widget.blockSignals(False)

    # ================================================================== help, user
    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = ShortcutsDialog(self.actions, self)
        self.shortcuts_dialog.show()

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About weldreview",
                          "weldreview: review weld radiographs with an out-of-distribution "
                          "autoencoder (Lindgren and Zach, 2022). The detector accepts weld that "
                          "looks like accepted weld; you decide on what it flags.",
                          QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()

    def change_user(self) -> None:
        if self.store is None:
            self.show_status("No review database.")
            return
        from app.user_dialog import UserDialog

        dialog = UserDialog(self.store, self.settings, self)
        dialog.accepted.connect(lambda: self.set_user(dialog.user_name))
        dialog.open()

    def set_user(self, name: str | None) -> None:
        self.user = name
        self.user_label.setText(f"User: {name}" if name else "No user")
        self.session = ReviewSession(self.store, name) if self.store is not None and name else None
        if self.session is not None and self.bundle is not None:
            self.session.register_model(self.bundle)
        if self.radiograph is not None:
            self._on_loaded(self.current_path, self.radiograph)

    # ================================================================== state
    def _update_actions(self) -> None:
        busy = self.runner.is_running()
        has_image = self.radiograph is not None
        self.actions["scan.cancel"].setEnabled(busy)
        self.actions["scan.start"].setEnabled(has_image and not busy)
        self.actions["file.next_radiograph"].setEnabled(len(self.worklist.entries) > 1)
        can_verdict = self.session is not None and self.result is not None
        for value in VERDICTS:
            self.actions[f"verdict.{value}"].setEnabled(can_verdict)
        self.actions["verdict.undo"].setEnabled(self.session is not None)
        self.actions["verdict.missed"].setEnabled(self.session is not None and has_image)
        for key in ("view.fit", "view.one_to_one", "tools.line", "tools.rect"):
            self.actions[key].setEnabled(has_image)

    def enabled_actions(self) -> set[str]:
        """Ids of the actions that are enabled now."""
        self._update_actions()
        return {k for k, a in self.actions.items() if a.isEnabled()}

    # ================================================================== Qt events
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def closeEvent(self, event) -> None:  # noqa: N802
        self._jobs.clear()
        self.runner.shutdown()
        self.save_settings()
        super().closeEvent(event)
