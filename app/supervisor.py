"""The supervisor's window: all decisions, blind second review, and the audit trail.

Opened from the main window's Review menu by :func:`open_supervisor_window`; only a user with the
supervisor role may open it (and only a supervisor may overrule: the store enforces it, and its
refusal is shown as a message). Nothing here blocks: messages go to the status bar, errors also to
a non-modal message box, file dialogs are opened with ``open()``; every action is a method that
tests call directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QTabWidget, QWidget

from app.messages import show_warning
from app.supervisor_audit import AuditTab
from app.supervisor_decisions import DecisionsTab
from app.supervisor_evidence import EvidenceDialog
from app.supervisor_review import SecondReviewTab

log = logging.getLogger(__name__)

EvidenceCallback = Callable[[Path, tuple, "int | None", "int | None"], None]
TABS = ("decisions", "review", "audit")


def supervisor_refusal(store, user: str | None) -> str | None:
    """Why ``user`` may not open the supervisor's view (None when they may)."""
    if store is None:
        return "The supervisor's view needs a review database."
    if not user:
        return "Choose a user first (File > Change user); the supervisor's view is for supervisors."
    try:
        who = store.user(user)
    except ValueError as exc:
        return str(exc)
    if who.role != "supervisor":
        return (f"Only a supervisor can open the supervisor's view; {who.name} is {who.role}. "
                "Ask a supervisor, or change user (File > Change user).")
    return None


class SupervisorWindow(QMainWindow):
    """The supervisor's view over ``store`` for ``user`` (who must be a supervisor).

    Parameters
    ----------
    store : core.store.Store
        The review database (shared with the main window; not closed here).
    user : str
        The supervisor's user name; second reviews and overrules are stored under it.
    open_evidence : callable, optional
        ``open_evidence(radiograph_path, bbox, scan_id, region_id)`` shows a decision's region
        (the main window's viewer and detail panel). Without it, an :class:`EvidenceDialog`
        shows the region on the radiograph file and the region's verdict history.
    parent : QWidget, optional

    Raises
    ------
    PermissionError
        ``user`` is not a supervisor (the message says who they are).
    """

    def __init__(self, store, user: str, *, open_evidence: EvidenceCallback | None = None,
                 parent: QWidget | None = None) -> None:
        refusal = supervisor_refusal(store, user)
        if refusal is not None:
            raise PermissionError(refusal)
        super().__init__(parent)
        self.store = store
        self.user = user
        self.open_evidence = open_evidence
        self.messages: list[str] = []
        self.evidence_dialogs: list[EvidenceDialog] = []
        self.last_message_box: QMessageBox | None = None
        self.setWindowTitle(f"weldreview - supervisor's view ({user})")
        self.resize(1300, 850)

        self.tabs = QTabWidget(self)
        self.decisions = DecisionsTab(self)
        self.review = SecondReviewTab(self)
        self.audit = AuditTab(self)
        self.tabs.addTab(self.decisions, "&Decisions")
        self.tabs.addTab(self.review, "&Second review")
        self.tabs.addTab(self.audit, "&Audit trail")
        self.tabs.currentChanged.connect(self._on_tab)
        self.setCentralWidget(self.tabs)
        self.review.blind_changed.connect(self._on_blind)
        self.status_text = ""
        self.statusBar().showMessage(f"{store.path}  |  signed in as {user} (supervisor)")

        refresh = QAction("&Refresh", self)
        refresh.setShortcuts([QKeySequence(QKeySequence.StandardKey.Refresh), QKeySequence("F5")])
        refresh.triggered.connect(self.refresh)
        close = QAction("&Close", self)
        close.setShortcut(QKeySequence(QKeySequence.StandardKey.Close))
        close.triggered.connect(self.close)
        menu = self.menuBar().addMenu("&Window")
        menu.addAction(refresh)
        menu.addAction(close)
        self.addAction(refresh)
        self.addAction(close)

    # ----- shared services for the tabs
    def message(self, text: str, *, error: bool = False) -> None:
        """Tell the user: status bar always; an error also in a non-modal message box."""
        self.messages.append(text)
        self.status_text = text
        self.statusBar().showMessage(text, 15000 if error else 8000)
        if error:
            log.warning("%s", text)
            self.last_message_box = show_warning(self, text)

    def open_evidence_for(self, decision: dict) -> None:
        """Show the evidence of a ``Store.decisions`` row (callback, or the evidence dialog)."""
        if self.review.reviewing:
            self.message("Finish or stop the blind review first.")
            return
        path = Path(decision["radiograph_path"])
        bbox = tuple(decision["bbox"]) if decision["bbox"] is not None else None
        if self.open_evidence is not None:
            try:
                self.open_evidence(path, bbox, decision["scan_id"], decision["region_id"])
            except Exception as exc:  # noqa: BLE001 - the viewer's failure is a message here
                self.message(f"Cannot show {path.name}: {exc}", error=True)
            return
        dialog = EvidenceDialog(self.store, decision, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(lambda *_, d=dialog: self._forget(d))
        dialog.show()
        self.evidence_dialogs.append(dialog)

    def _forget(self, dialog) -> None:
        if dialog in self.evidence_dialogs:
            self.evidence_dialogs.remove(dialog)

    def overrule(self, verdict_id: int, verdict: str, reason: str) -> int | None:
        """Overrule verdict ``verdict_id`` with ``verdict`` for ``reason``; the new id or None.

        The store's refusal (not a supervisor, no reason, no longer the decision in force) is
        shown as a message.
        """
        if not str(reason or "").strip():
            self.message("An overrule needs a reason: type it in the reason field.", error=True)
            return None
        try:
            new_id = self.store.overrule(int(verdict_id), user=self.user, verdict=verdict,
                                         reason=reason.strip())
        except Exception as exc:  # noqa: BLE001 - ValueError/StoreError: the user's message
            self.message(f"Overrule not saved: {exc}", error=True)
            return None
        self.message(f"Verdict #{verdict_id} overruled by #{new_id} ({verdict}).")
        self.refresh()
        return new_id

    # ----- refreshing
    def refresh_decisions(self) -> None:
        self.decisions.refresh()

    def refresh_audit(self) -> None:
        self.audit.refresh()

    def refresh(self) -> None:
        """Re-read everything from the store (other users may have written meanwhile)."""
        self.decisions.reload_choices()
        self.decisions.refresh()
        self.review.reload_choices()
        self.review.refresh()
        self.audit.refresh()

    def _on_tab(self, index: int) -> None:
        widget = self.tabs.widget(index)
        if widget is self.decisions:
            self.decisions.reload_choices()
            self.decisions.refresh()
        elif widget is self.review and not self.review.reviewing:
            self.review.reload_choices()
            self.review.refresh()
        elif widget is self.audit:
            self.audit.refresh()

    def _on_blind(self, on: bool) -> None:
        """During a blind review the tabs that show verdicts are closed, so it stays blind."""
        for tab in (self.decisions, self.audit):
            index = self.tabs.indexOf(tab)
            self.tabs.setTabEnabled(index, not on)
            self.tabs.setTabToolTip(index, "Hidden during a blind review" if on else "")
        for dialog in list(self.evidence_dialogs):
            if on:
                dialog.close()
        if on:
            self.tabs.setCurrentWidget(self.review)

    def tab(self, name: str) -> QWidget:
        """The tab called ``name`` (one of :data:`TABS`)."""
        return {"decisions": self.decisions, "review": self.review, "audit": self.audit}[name]

    def closeEvent(self, event) -> None:  # noqa: N802
        for dialog in list(self.evidence_dialogs):
            dialog.close()
        super().closeEvent(event)


def open_supervisor_window(main_window, store, user, *, open_evidence=None):
    """Open (or raise) the supervisor's window over ``main_window``; None with a message if refused.

    ``open_evidence`` defaults to ``main_window.show_evidence`` when the main window has one.
    """
    refusal = supervisor_refusal(store, user)
    if refusal is not None:
        report = getattr(main_window, "show_error", None)
        if report is not None:
            report(refusal)
        else:
            show_warning(main_window, refusal)
        return None
    window = getattr(main_window, "supervisor_window", None)
    if window is not None and (window.store is not store or window.user != user):
        window.close()
        window.deleteLater()
        window = None
    if window is None:
        if open_evidence is None:
            open_evidence = getattr(main_window, "show_evidence", None)
        window = SupervisorWindow(store, user, open_evidence=open_evidence, parent=main_window)
        main_window.supervisor_window = window
    else:
        window.refresh()
    window.show()
    window.raise_()
    window.activateWindow()
    return window
