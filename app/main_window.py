"""The main window of the review application: viewer, worklist, review queue, evidence, verdicts.

Long work (reading a radiograph, loading the model, scanning) runs in a :class:`JobRunner`
thread, one job at a time from a small queue; the GUI thread only draws and records verdicts.
Actions are registered by stable ids in :attr:`MainWindow.actions` so tests can trigger them and
ask which are enabled.

Weld region of interest: after a radiograph is read, ``core.roi.find_weld`` runs as a job before
the scan, and the scan flags only inside the region (flags outside are listed apart as 'outside
weld', not queued for review). The region is drawn over the radiograph and can be adjusted (edge
handles, widen/narrow/shift, add or cut a box); an adjusted region is recorded ("roi adjusted")
and the radiograph is scanned again with it. Where no weld is found a non-blocking message offers
to scan the whole image or to draw the region by hand.
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
    QApplication, QDockWidget, QFileDialog, QLabel, QListWidget, QListWidgetItem, QMainWindow,
    QMessageBox, QProgressBar, QPushButton, QTabWidget, QToolBar, QWidget,
)

from app import theme
from app.detail_panel import DetailPanel, thumbnail_array
from app.mask_brush import RegionMasks
from app.measure import MeasureTools, ProfilePlot
from app.overlays import KIND_LABELS, KINDS, OverlayPanel, Overlays, overlay_layers
from app.review_queue import THUMB_PX, ReviewQueue, WorklistQueue
from app.review_session import (
    ReviewSession, roi_from_record, roi_record, worklist_counts, worklist_regions,
)
from app.roi_editor import WeldRoiLayer, adjust_step, box_mask, shifted, widened
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
ROI_JOB = "Finding the weld"
ROI_RESCAN_DELAY_MS = 700  # quiet time after the last region edit before scanning again
FPR_CHOICES = (0.0005, 0.001, 0.002, 0.005, 0.01)


@dataclass
class ScanPayload:
    """What the scan job hands to the GUI thread: the result and the arrays ready to draw."""

    radiograph: object
    result: object
    layers: dict
    thumbnails: dict
    store_error: str | None = None


@dataclass
class WeldNotFound:
    """What the weld-finding job returns when there is no weld: the reason, for the message."""

    message: str


def weld_figures(fpr: float, pixel_size_um: float | None, weld_roi) -> tuple[float | None,
                                                                           float | None]:
    """(expected false flags per metre of weld, length of weld in the region in mm).

    With a region the band is as wide as its median width (apertures across it counted); the
    length is the region's centre line inside the image. Without a pixel size: (None, None).
    """
    import numpy as np

    from core.calibration import expected_false_flags_per_metre

    if not pixel_size_um:
        return None, None
    if weld_roi is None:
        return expected_false_flags_per_metre(fpr, pixel_size_um), None
    width_mm = float(np.median(weld_roi.widths)) * pixel_size_um / 1000.0
    per_m = expected_false_flags_per_metre(fpr, pixel_size_um, weld_width_mm=width_mm)
    return per_m, weld_roi.length_mm(pixel_size_um)


def operating_point_text(thresholds, *, model_name: str, model_sha256: str,
                         pixel_size_um: float | None, weld_roi=None) -> str:
    """The operating point in words: model, target FPR and expected false flags per metre
    (of weld inside the region ``weld_roi`` when given)."""
    text = (f"Model {model_name} ({model_sha256[:8]}), operating point: "
            f"FPR {thresholds.fpr_target:.3%} of okay 156 px patches")
    if pixel_size_um:
        per_m, length = weld_figures(thresholds.fpr_target, pixel_size_um, weld_roi)
        text += f" = about {per_m:.2g} expected false flags per metre of weld"
        if length is not None:
            text += (f" inside the weld region ({length:.0f} mm of weld here: about "
                     f"{per_m * length / 1000.0:.2g} expected)")
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
        self.weld_roi = None  # core.roi.WeldROI the scan is restricted to; None: whole image
        self.roi_kind: str | None = None  # found, adjusted, drawn, whole image
        self.roi_state = "none"  # none, finding, ready, not found
        self.use_weld_roi = True
        self.notices: list[str] = []  # non-error messages with a choice (e.g. no weld found)
        self.completion: dict | None = None  # the "radiograph completed" record in force
        self.supervisor_window = None
        self._pending_evidence: tuple | None = None
        self._scan_roi = None  # the weld region (WeldROI) the running scan is restricted to
        self._thresholds = None
        self.roi_notice = None
        self._roi_timer = QTimer(self)
        self._roi_timer.setSingleShot(True)
        self._roi_timer.setInterval(ROI_RESCAN_DELAY_MS)
        self._roi_timer.timeout.connect(self._scan_with_new_roi)

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
        self.roi_layer = WeldRoiLayer(self.viewer)
        self.roi_layer.edges_edited.connect(self._on_edges_edited)
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
        self.outside_list = QListWidget()
        self.outside_list.setToolTip("Flags outside the weld region: not queued for review")
        self.outside_list.itemActivated.connect(self._on_outside_activated)
        self.queue_tabs.addTab(self.outside_list, "Outside weld")
        self._pending_region: int | None = None
        self.detail = DetailPanel()
        self.masks = RegionMasks(self)  # the brush's masks, saved with Defect verdicts
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
        self.done_label = QLabel("")
        self.done_label.setObjectName("radiographDone")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_job)
        sb.addWidget(self.cursor_label, 1)
        sb.addPermanentWidget(self.done_label)
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
        a("review.supervisor", "&Supervisor's view...", self.open_supervisor, "Ctrl+Shift+S")
        a("models.retrain", "&Retrain from verdicts...", self.open_retrain, "Ctrl+Shift+R")
        a("models.manager", "Model &versions...", self.open_model_versions, "Ctrl+Shift+M")
        a("models.training_runs", "&Training runs...", self.open_training_runs, "Ctrl+Shift+T")
        a("view.weld_roi", "Show the &weld region outline",
          lambda on: self.set_roi_visible(on), "Alt+6", checkable=True)
        self.actions["view.weld_roi"].setChecked(True)
        a("scan.weld_roi", "Scan only the &weld region (find it first)",
          lambda on: self.set_use_weld_roi(on), "Ctrl+Shift+W", checkable=True)
        self.actions["scan.weld_roi"].setChecked(True)
        a("roi.edit", "&Edit the weld region edges (drag the handles)",
          lambda on: self.set_roi_editing(on), "E", checkable=True)
        a("roi.widen", "&Widen the weld region", lambda: self.widen_roi(1), "]")
        a("roi.narrow", "&Narrow the weld region", lambda: self.widen_roi(-1), "[")
        a("roi.shift_left", "Shift the weld region to one side", lambda: self.shift_roi(1), ",")
        a("roi.shift_right", "Shift the weld region to the other side",
          lambda: self.shift_roi(-1), ".")
        a("roi.add", "&Add a box to the weld region (draw it)",
          lambda: self.draw_roi_box("add"), "Alt+A")
        a("roi.cut", "&Cut a box from the weld region (draw it)",
          lambda: self.draw_roi_box("cut"), "Alt+X")
        a("roi.draw", "&Draw the weld region by hand (a box)",
          lambda: self.draw_roi_box("draw"), "Alt+D")
        a("roi.whole_image", "Scan the w&hole image (no weld region)", self.scan_whole_image,
          "Alt+W")
        a("roi.find", "&Find the weld again", self.find_weld_again, "Alt+G")
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
        view.addAction(acts["view.weld_roi"])
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
                    *(f"verdict.{v}" for v in VERDICTS), "verdict.undo", "verdict.missed",
                    None, "review.supervisor"):
            review.addSeparator() if key is None else review.addAction(acts[key])
        weld = review.addMenu("Weld &region")
        for key in ("scan.weld_roi", None, "roi.edit", "roi.widen", "roi.narrow",
                    "roi.shift_left", "roi.shift_right", "roi.add", "roi.cut", None, "roi.draw",
                    "roi.whole_image", "roi.find"):
            weld.addSeparator() if key is None else weld.addAction(acts[key])
        models = mb.addMenu("&Models")
        models.addAction(acts["file.open_model"])
        models.addAction(acts["models.retrain"])
        models.addAction(acts["models.manager"])
        models.addAction(acts["models.training_runs"])
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
        self.use_weld_roi = str(s.value("scan/weld_roi", "true")).lower() in ("true", "1")
        self.actions["scan.weld_roi"].setChecked(self.use_weld_roi)
        shown = str(s.value("view/weld_roi", "true")).lower() in ("true", "1")
        self.actions["view.weld_roi"].setChecked(shown)
        self.roi_layer.set_visible(shown)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        for kind in KINDS:
            s.setValue(f"overlay/{kind}", self.overlays.visible[kind])
        s.setValue("overlay/opacity", self.opacity.value())
        s.setValue("review/auto_advance", self.auto_advance)
        s.setValue("scan/weld_roi", self.use_weld_roi)
        s.setValue("view/weld_roi", self.roi_layer.visible)
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
        from app.messages import show_warning

        self.last_message_box = show_warning(self, text)

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
        return self.runner.is_running() or bool(self._jobs) or self._selecting or \
            self._roi_timer.isActive()

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
        self.queue_tabs.setCurrentIndex(0 if self.queue_tabs.currentIndex() == 1 else 1)
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
        self._roi_timer.stop()
        self._close_roi_notice()  # it offered choices for the previous radiograph
        self.weld_roi, self.roi_kind, self.roi_state = None, None, "none"
        self.roi_layer.set_roi(None)
        self.actions["roi.edit"].setChecked(False)
        self.outside_list.clear()
        self.queue_tabs.setTabText(2, "Outside weld")
        self._set_completion(None)
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
        self._apply_pending_evidence(zoom_only=True)
        if not self._prepare_roi():
            self.start_scan()
        elif self.current_path is not None:
            self.worklist.update_entry(self.current_path, state="scanning")
        self._update_actions()

    # ================================================================== model and scan
    def use_model(self, path: Path) -> None:
        self.model_path, self.bundle, self.model_error = Path(path), None, None
        if self.radiograph is not None:
            self.start_scan()
        else:
            self._ensure_model()

    def thresholds_changed_on_disk(self, path: Path) -> None:
        """A calibration review changed the thresholds of ``path``: if it is the model in use,
        load them for the next scan (the scan on screen keeps the thresholds it was made with)."""
        if Path(path).resolve() != self.model_path.resolve():
            return
        self.bundle, self.model_error = None, None
        self._ensure_model()
        self.show_status("The model's thresholds changed (calibration review): they apply from the "
                         "next scan.")

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
        if self.bundle is None:
            return
        self._thresholds = thr
        px = self.radiograph.pixel_size_um if self.radiograph is not None else None
        text = operating_point_text(thr, model_name=self.bundle.name,
                                    model_sha256=self.bundle.sha256, pixel_size_um=px,
                                    weld_roi=self.weld_roi)
        short = f"Model {self.bundle.name} | FPR {thr.fpr_target:.2%} per patch"
        if px:
            per_m, length = weld_figures(thr.fpr_target, px, self.weld_roi)
            short += f" = {per_m:.2g} expected false flags per metre of weld"
            if length is not None:
                short += " in the region"
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
        if self.roi_state == "finding":
            return False  # the weld-finding job starts the scan when it is done
        if self.roi_state == "not found":
            self.show_status("No weld found: choose Scan whole image or Draw region by hand "
                             "(Review > Weld region).")
            return False
        self._scan_roi = self.weld_roi
        if self.session is not None:
            fpr = self.fpr if self.fpr is not None else self.bundle.thresholds.fpr_target
            record = None if self.roi_kind is None else roi_record(self.weld_roi, self.roi_kind)
            try:
                self.session.begin_scan(self.bundle.sha256, fpr, roi=record)
            except Exception as exc:  # noqa: BLE001 - a store failure must not stop the scan
                self.show_error(f"{self.store.path}: {exc}")
        return True


    def _scan_job(self, progress, cancel):
        """Runs in the worker thread: touches no widget, only the model and the image."""
        from core.scanning import scan_image

        bundle, radiograph, tile, fpr = self.bundle, self.radiograph, self.scan_tile, self.fpr
        session, weld = self.session, self._scan_roi
        if bundle is None:
            raise RuntimeError(self.model_error or "no model loaded")
        # bead and heat-affected zone told apart, so the thresholds' zones follow the bead's edge
        roi = None if weld is None else weld.labels()
        result = scan_image(radiograph.image, bundle, fpr=fpr, roi=roi,
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
        self._show_outside(result)
        self._update_worklist_entry()
        n = len(regions)
        self._update_actions()
        where = "weld in the region" if self.weld_roi is not None else "weld"
        outside = len(result.outside_roi)
        self.show_status(
            (f"Scan done in {result.timings.get('total_s', 0):.1f} s: {n} flagged region"
             f"{'' if n == 1 else 's'}. Unflagged {where} is accepted by the detector at this "
             "operating point." if n else
             f"Scan done in {result.timings.get('total_s', 0):.1f} s: nothing flagged; the "
             f"{where} is accepted by the detector at this operating point.")
            + (f" {outside} flag{'' if outside == 1 else 's'} outside the weld region (listed "
               "apart, not for review)." if outside else ""))
        self._check_completion()
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
            self._apply_pending_evidence()
            return
        row = self.queue.next_unreviewed()
        self.queue.setCurrentRow(0 if row is None else row)
        if pending is not None:
            self.queue.select_region(pending)
        self.queue.setFocus()
        self._apply_pending_evidence()

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
        self.masks.verdict_given(region.id)
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
        self._check_completion()

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
        self.queue.set_verdict(region.id, region.verdict)
        if restored:
            self.show_status(f"Region {region.id}: back to {VERDICTS[region.verdict][1]} "
                             "(recorded as a new verdict).")
        else:
            self.show_status(f"Region {region.id}: verdict withdrawn, the region is unreviewed "
                             "again (the record keeps both: verdicts are never deleted).")
        self.verdict_panel.show_region(region, self.queue.verdicts.get(region.id))
        self.masks.refresh()
        self._update_worklist_entry()
        self._check_completion()

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
        self.roi_layer.cancel_box()
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

    # ================================================================== weld region of interest
    def _prepare_roi(self) -> bool:
        """Decide the weld region of the radiograph just read: the one set by hand earlier (from
        the store), else find it in a job that then starts the scan. True when that job was
        queued (the caller must not start the scan itself)."""
        stored = None
        if self.session is not None and self.session.radiograph_id is not None:
            try:
                stored = self.session.stored_roi()
                roi = roi_from_record(stored)
            except Exception as exc:  # noqa: BLE001 - a store failure must not stop viewing
                self.show_error(f"{self.store.path}: the stored weld region is not usable "
                                f"({exc}); finding the weld again")
                stored = None
        if stored is not None:
            self._set_roi(roi, stored.get("kind") or "adjusted")
            return False
        if not self.use_weld_roi:
            return False
        self._queue_roi_job(record=False)
        return True

    def _queue_roi_job(self, *, record: bool) -> None:
        """Find the weld in a job, then scan; ``record`` stores the found region as the one in
        use (when it replaces a region set by hand)."""
        radiograph = self.radiograph
        self.roi_state = "finding"
        self.show_status(f"Finding the weld in {self.current_path.name}...")

        def find(progress, cancel):
            from core.roi import WeldNotFoundError, find_weld

            try:
                return find_weld(radiograph.image, include_haz=True)
            except WeldNotFoundError as exc:
                return WeldNotFound(str(exc))

        def found(roi):
            if radiograph is not self.radiograph:
                return
            if isinstance(roi, WeldNotFound):
                self._on_weld_not_found(roi.message)
                return
            self._set_roi(roi, "found")
            if record:
                self._record_roi()
            self.start_scan()

        def failed(message):
            if radiograph is not self.radiograph:
                return
            self.roi_state = "none"
            self.show_error(f"Finding the weld failed ({message}); the whole image is scanned.")
            self.start_scan()

        def cancelled():
            if radiograph is self.radiograph:
                self.roi_state = "none"

        self._queue_job(ROI_JOB, find, on_success=found, on_failure=failed, on_cancel=cancelled)

    def _set_roi(self, roi, kind: str) -> None:
        """Use ``roi`` (None: the whole image) made as ``kind``; draw it."""
        self.weld_roi, self.roi_kind, self.roi_state = roi, kind, "ready"
        editing = self.actions["roi.edit"].isChecked() and roi is not None
        self.roi_layer.set_roi(roi)
        if editing:
            self.roi_layer.start_editing()
        else:
            self.actions["roi.edit"].setChecked(False)
        thr = self.result.thresholds if self.result is not None else getattr(
            self, "_thresholds", None)
        if thr is not None:
            self._update_operating_point(thr)
        self._update_actions()

    def _on_weld_not_found(self, message: str) -> None:
        """No weld: say so without blocking, and offer the whole image or a hand-drawn region."""
        self.weld_roi, self.roi_kind, self.roi_state = None, None, "not found"
        self.roi_layer.set_roi(None)
        name = self.current_path.name if self.current_path else "this radiograph"
        text = f"{name}: {message}"  # says what was looked for and offers the two choices
        self.notices.append(text)
        self.show_status(text, 15000)
        if self.current_path is not None:
            self.worklist.update_entry(self.current_path, state="not scanned",
                                       message="no weld found")
        self._close_roi_notice()
        box = QMessageBox(QMessageBox.Icon.Information, "weldreview: no weld found", text,
                          QMessageBox.StandardButton.NoButton, self)
        whole = box.addButton("Scan whole image", QMessageBox.ButtonRole.AcceptRole)
        draw = box.addButton("Draw region by hand", QMessageBox.ButtonRole.ActionRole)
        whole.clicked.connect(self.scan_whole_image)
        draw.clicked.connect(lambda: self.draw_roi_box("draw"))
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()
        self.roi_notice = box
        self._update_actions()

    def _close_roi_notice(self) -> None:
        box, self.roi_notice = getattr(self, "roi_notice", None), None
        if box is not None:
            try:
                box.close()
            except RuntimeError:  # already deleted by Qt
                pass

    def _record_roi(self) -> None:
        if self.session is None or self.radiograph is None:
            return
        try:
            self.session.record_roi(roi_record(self.weld_roi, self.roi_kind))
        except Exception as exc:  # noqa: BLE001 - the region is still used for this scan
            self.show_error(f"{self.store.path}: {exc}")

    def _apply_roi_edit(self, roi, kind: str) -> None:
        """Use an adjusted region: draw it, record it ("roi adjusted") and scan again with it
        once the user pauses editing."""
        reviewed = self.queue.n_reviewed() if self.result is not None else 0
        self._close_roi_notice()
        self._set_roi(roi, kind)
        self._record_roi()
        self._roi_timer.start()
        what = "the whole image" if roi is None else "the adjusted weld region"
        text = f"Weld region {kind}: scanning {what} again..."
        if reviewed:
            text += (f" The {reviewed} verdict{'' if reviewed == 1 else 's'} given stay with the "
                     "earlier scan's regions.")
        self.show_status(text)

    def _scan_with_new_roi(self) -> None:
        if self.radiograph is None:
            return
        if self.runner.is_running() and self.runner.name == "Scanning":
            self.runner.cancel()  # a scan with the earlier region
        self._jobs = deque(job for job in self._jobs if job[0] != "Scanning")
        self.start_scan()

    def scan_whole_image(self) -> None:
        """Scan without a weld region (recorded as the user's choice)."""
        if self.radiograph is None:
            self.show_status("Open a radiograph first.")
            return
        self.roi_layer.cancel_box()
        self._apply_roi_edit(None, "whole image")

    def find_weld_again(self) -> None:
        """Find the weld afresh (dropping a region adjusted by hand) and scan again."""
        if self.radiograph is None:
            self.show_status("Open a radiograph first.")
            return
        self._close_roi_notice()
        self._roi_timer.stop()
        if self.runner.is_running() and self.runner.name == "Scanning":
            self.runner.cancel()
        self._jobs = deque(job for job in self._jobs if job[0] != "Scanning")
        self._queue_roi_job(record=True)

    def set_roi_visible(self, on: bool) -> None:
        self.roi_layer.set_visible(on)
        act = self.actions.get("view.weld_roi")
        if act is not None and act.isChecked() != bool(on):
            act.setChecked(bool(on))

    def set_use_weld_roi(self, on: bool) -> None:
        """Scan only the weld region (found automatically) of the radiographs opened next."""
        self.use_weld_roi = bool(on)
        if self.radiograph is not None:
            self.show_status("Applies to the radiographs opened next; for this one use Find the "
                             "weld again or Scan the whole image (Review > Weld region).")

    def set_roi_editing(self, on: bool) -> None:
        """Show (or hide) draggable handles on the two edges of the weld region."""
        if on and self.weld_roi is None:
            self.actions["roi.edit"].setChecked(False)
            self.show_status("No weld region to edit: draw one (Alt+D) or find the weld (Alt+G).")
            return
        if on:
            self.roi_layer.start_editing()
            self.show_status("Drag the handles on the weld region's edges; the radiograph is "
                             "scanned again after each change (E: stop editing).")
        else:
            self.roi_layer.stop_editing()

    def _on_edges_edited(self, edge_a, edge_b) -> None:
        # the handles that emitted this are replaced: leave their signal first
        QTimer.singleShot(0, lambda: self._edges_to_roi(edge_a, edge_b))

    def _edges_to_roi(self, edge_a, edge_b) -> None:
        from core.roi import WeldROI

        if self.radiograph is None or self.weld_roi is None:
            return
        try:
            roi = WeldROI.from_edges(self.weld_roi.shape, edge_a, edge_b)
        except ValueError as exc:
            self.show_error(f"The weld region cannot be built from these edges: {exc}")
            return
        if not roi.mask.any():
            self.show_error("The edges enclose no part of the image: the region is unchanged.")
            return
        roi.haz_margin_px = self.weld_roi.haz_margin_px
        self._apply_roi_edit(roi, "adjusted")

    def widen_roi(self, sign: int) -> None:
        """Move both edges of the weld region out (``sign`` 1) or in (-1) by one step."""
        if self.weld_roi is None:
            self.show_status("No weld region.")
            return
        try:
            roi = widened(self.weld_roi, sign * adjust_step(self.weld_roi))
        except ValueError as exc:
            self.show_status(str(exc))
            return
        self._apply_roi_edit(roi, "adjusted")

    def shift_roi(self, sign: int) -> None:
        """Move the weld region one step across the weld."""
        if self.weld_roi is None:
            self.show_status("No weld region.")
            return
        try:
            roi = shifted(self.weld_roi, sign * adjust_step(self.weld_roi))
        except ValueError as exc:
            self.show_status(str(exc))
            return
        self._apply_roi_edit(roi, "adjusted")

    def draw_roi_box(self, mode: str) -> None:
        """Let the user drag a box: "add" it to the region, "cut" it out, or "draw" the region."""
        if self.radiograph is None:
            self.show_status("Open a radiograph first.")
            return
        if mode in ("add", "cut") and self.weld_roi is None:
            self.show_status("No weld region to change: draw one (Alt+D).")
            return
        self.set_tool("none")
        self.roi_layer.draw_box(lambda bbox: self.apply_roi_box(mode, bbox))
        what = {"add": "to add to the weld region", "cut": "to cut from the weld region",
                "draw": "around the weld: it becomes the region scanned"}[mode]
        self.show_status(f"Drag a box {what} (Esc to stop).")

    def apply_roi_box(self, mode: str, bbox) -> None:
        """Add the box ``bbox`` (row0, col0, row1, col1) to the region, cut it, or make it the
        region ("draw"); then scan again."""
        from core.roi import WeldROI

        self.roi_layer.cancel_box()
        box = box_mask(self.radiograph.shape, bbox)
        if not box.any():
            self.show_status("The box lies outside the image.")
            return
        try:
            if mode == "draw":
                roi, kind = WeldROI.from_mask(box, hand_edited=True), "drawn"
            elif mode == "add":
                roi, kind = self.weld_roi.edited(add=box), "adjusted"
            else:
                roi, kind = self.weld_roi.edited(cut=box), "adjusted"
        except ValueError as exc:  # e.g. everything cut away
            self.show_error(f"The weld region is unchanged: {exc}")
            return
        self._apply_roi_edit(roi, kind)

    def _show_outside(self, result) -> None:
        """List the flags outside the weld region (shown apart, not for review)."""
        self.outside_list.clear()
        outside = list(getattr(result, "outside_roi", []) or [])
        for region in outside:
            r0, c0, r1, c1 = region.bbox
            item = QListWidgetItem(f"outside weld: {region.tests}, severity "
                                   f"{region.severity:.2f} x thr, rows {r0}-{r1}, cols {c0}-{c1}")
            item.setData(Qt.ItemDataRole.UserRole, region)
            self.outside_list.addItem(item)
        self.queue_tabs.setTabText(2, f"Outside weld ({len(outside)})")

    def _on_outside_activated(self, item) -> None:
        region = item.data(Qt.ItemDataRole.UserRole)
        if region is None or self.result is None:
            return
        self.viewer.zoom_to(region.bbox)
        self.detail.show_region(self.radiograph.image, self.result, region)
        self.bottom_tabs.setCurrentWidget(self.detail)

    # ================================================================== radiograph done
    def _check_completion(self) -> None:
        """Record "radiograph completed" once every flagged region has a decision."""
        if self.session is None or self.result is None or self.session.scan_id is None:
            return
        if self.queue.n_reviewed() < len(self.queue.regions):
            self._set_completion(None)
            return
        thr = self.result.thresholds
        per_m, length = weld_figures(thr.fpr_target, self.radiograph.pixel_size_um,
                                     self.weld_roi)
        try:
            record = self.session.complete(false_flags_per_m=per_m, weld_length_mm=length,
                                           roi=self.weld_roi is not None)
        except Exception as exc:  # noqa: BLE001
            self.show_error(f"{self.store.path}: {exc}")
            return
        self._set_completion(record)
        if record is not None:
            self.show_status("Radiograph done: " + record["details"]["statement"], 15000)

    def _set_completion(self, record: dict | None) -> None:
        self.completion = record
        if record is None:
            self.done_label.setText("")
            self.done_label.setToolTip("")
        else:
            self.done_label.setText("Radiograph done")
            self.done_label.setToolTip(record["details"]["statement"])

    # ================================================================== supervisor, evidence
    def open_supervisor(self):
        """Open the supervisor's view (supervisors only; others get a message)."""
        from app.supervisor import open_supervisor_window

        return open_supervisor_window(self, self.store, self.user)

    def show_evidence(self, path, bbox, scan_id: int | None, region_id: int | None) -> None:
        """Show a decision's evidence: the radiograph at ``path`` zoomed to ``bbox`` with the
        region's detail panel (opened and scanned first when it is not the one shown).

        Called by the supervisor's view; raises FileNotFoundError when the file is gone.
        """
        path = Path(path).resolve()
        self._pending_evidence = (path, tuple(bbox) if bbox is not None else None, scan_id,
                                  region_id)
        self.raise_()
        self.activateWindow()
        if path == self.current_path and self.radiograph is not None:
            if self.result is not None and not self.is_busy():
                self._apply_pending_evidence()
            else:
                self._apply_pending_evidence(zoom_only=True)
            return
        if not path.is_file():
            self._pending_evidence = None
            raise FileNotFoundError(f"{path}: the radiograph file is gone")
        self.open_file(path)

    def _apply_pending_evidence(self, *, zoom_only: bool = False) -> None:
        ev = self._pending_evidence
        if ev is None or self.radiograph is None or ev[0] != self.current_path:
            return
        path, bbox, scan_id, region_id = ev
        if zoom_only:
            self._check_evidence_file(path)
            if bbox is not None:
                self.viewer.zoom_to(bbox)
            return
        self._pending_evidence = None
        self.bottom_tabs.setCurrentWidget(self.detail)
        session = self.session
        if session is not None and region_id is not None and session.scan_id == scan_id:
            region = next((r for r in session.regions if r.db_id == region_id), None)
            if region is not None:
                self.queue_tabs.setCurrentWidget(self.queue)
                self.queue.select_region(region.id)
                self._on_region_selected(region.id)
                return
        if bbox is None:
            return
        self.viewer.zoom_to(bbox)
        if self.result is None:
            self.show_status("The radiograph is not scanned with a model: the region is shown "
                             "without its evidence maps.")
            return
        self.detail.show_region(self.radiograph.image, self.result,
                                self._evidence_region(scan_id, region_id, bbox))
        current = session.scan_id if session is not None else None
        if scan_id is not None and scan_id != current:
            self.show_status(f"The decision was made on scan {scan_id}; its region is shown with "
                             f"the maps of the current scan ({current or 'not stored'}).")

    def _evidence_region(self, scan_id, region_id, bbox):
        """A region-like object for the detail panel (from the store when it knows it)."""
        from types import SimpleNamespace

        if self.store is not None and region_id is not None and scan_id is not None:
            try:
                row = next((r for r in self.store.regions(scan_id) if r["id"] == region_id), None)
            except Exception:  # noqa: BLE001 - fall back to the bbox alone
                row = None
            if row is not None:
                return SimpleNamespace(id=row["number"], bbox=tuple(row["bbox"]),
                                       tests=row["tests"], severity=row["severity"] or 0.0,
                                       area_px=row["area_px"] or 0, size_mm=row["size_mm"])
        r0, c0, r1, c1 = bbox
        return SimpleNamespace(id="(missed indication)", bbox=tuple(bbox), tests="no",
                               severity=0.0, area_px=(r1 - r0) * (c1 - c0), size_mm=None)

    def _check_evidence_file(self, path: Path) -> None:
        if self.store is None:
            return
        try:
            known = self.store.radiograph(str(path))
        except ValueError:
            return
        if known["sha256"] != self.radiograph.sha256:
            self.show_error(f"{path}: no longer holds the reviewed radiograph (its sha256 "
                            "differs); the evidence shown may not be what was reviewed")

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
        has_roi = has_image and self.weld_roi is not None
        for key in ("roi.edit", "roi.widen", "roi.narrow", "roi.shift_left", "roi.shift_right",
                    "roi.add", "roi.cut"):
            self.actions[key].setEnabled(has_roi)
        for key in ("roi.draw", "roi.whole_image", "roi.find"):
            self.actions[key].setEnabled(has_image)
        self.actions["review.supervisor"].setEnabled(self.store is not None)
        self.actions["models.retrain"].setEnabled(self.store is not None)
        self.actions["models.manager"].setEnabled(self.store is not None)
        for key in ("view.fit", "view.one_to_one", "tools.line", "tools.rect"):
            self.actions[key].setEnabled(has_image)

    def open_retrain(self) -> None:
        from app.retrain_dialog import open_retrain_dialog

        open_retrain_dialog(self)

    def open_model_versions(self) -> None:
        from app.model_manager import open_model_manager

        open_model_manager(self)

    def open_training_runs(self) -> None:
        from app.training_runs import open_training_runs

        open_training_runs(self)

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
        self._roi_timer.stop()
        self._close_roi_notice()
        if self.supervisor_window is not None:
            self.supervisor_window.close()
        for window in (getattr(self, "_retrain_dialog", None), getattr(self, "_model_manager", None),
                       getattr(self, "_training_runs", None)):  # training runs go on without it
            if window is not None:
                window.close()
        self._jobs.clear()
        self.runner.shutdown()
        self.save_settings()
        super().closeEvent(event)
