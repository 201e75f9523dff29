"""Run long core jobs off the GUI thread: a QThread with a worker object, progress and Cancel.

A job is a plain callable ``fn(progress, cancel)``: ``progress(fraction, text="")`` reports how far
it is (0..1) and ``cancel()`` returns True once the user asked to stop; the job should then raise
(core's long jobs raise their own "cancelled" exception, e.g. ``ScanCancelled``). Workers never
touch widgets: they emit signals with plain data, which Qt delivers to slots on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot

from core.errors import WeldreviewError

log = logging.getLogger(__name__)

Job = Callable[..., Any]
PROGRESS_INTERVAL_S = 0.05  # at most 20 progress signals per second reach the GUI thread
# threads started by a JobRunner and not yet released, with their worker: the references keep
# both alive even if the runner itself is deleted while its job runs
_LIVE: dict[QThread, QObject] = {}


def live_threads() -> list[QThread]:
    """Job threads still running (tests fail when one outlives them)."""
    return [t for t in _LIVE if t.isRunning()]


def forget_threads(threads) -> None:
    """Stop tracking ``threads`` (after a test has reported them)."""
    for t in threads:
        _LIVE.pop(t, None)


def error_message(exc: BaseException) -> str:
    """One line for the user: the message of our own errors, type and message of anything else."""
    if isinstance(exc, WeldreviewError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class JobCancelled(Exception):
    """Raised by :meth:`CancelToken.raise_if_cancelled` (jobs without their own cancel error)."""


class CancelToken:
    """Thread-safe cancel flag, callable: ``token()`` is True once :meth:`set` was called."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("cancelled")


class _Worker(QObject):
    progress = Signal(float, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Job, token: CancelToken, cancel_types: tuple[type, ...]) -> None:
        super().__init__()
        self._fn = fn
        self._token = token
        self._cancel_types = (JobCancelled, *cancel_types)
        self._last_emit = 0.0

    def _report(self, fraction: float, text: str = "") -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - self._last_emit >= PROGRESS_INTERVAL_S:
            self._last_emit = now
            self.progress.emit(float(min(max(fraction, 0.0), 1.0)), str(text))

    @Slot()
    def run(self) -> None:
        try:
            result = self._fn(self._report, self._token)
        except self._cancel_types:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            if self._token():
                self.cancelled.emit()
            else:
                log.exception("background job failed")
                self.failed.emit(error_message(exc))
        else:
            if self._token():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            self.done.emit()


class JobRunner(QObject):
    """Runs one job at a time in its own QThread.

    Signals (all delivered on the GUI thread)
    ------------------------------------------
    started(str)
        A job with this name started.
    progress(float, str)
        Fraction done (0..1) and a short text.
    succeeded(object)
        The job's return value.
    failed(str)
        One line for the user.
    cancelled()
        The job stopped because :meth:`cancel` was called.
    finished()
        After any of the three outcomes, once the thread has stopped.
    """

    started = Signal(str)
    progress = Signal(float, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._token: CancelToken | None = None
        self.name = ""
        self._callbacks: tuple = (None, None, None)

    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, fn: Job, *, name: str = "job", cancel_types: tuple[type, ...] = (),
              on_success: Callable[[Any], None] | None = None,
              on_failure: Callable[[str], None] | None = None,
              on_cancel: Callable[[], None] | None = None) -> None:
        """Start ``fn(progress, cancel)`` in a new thread; raises RuntimeError if one is running.

        The ``on_*`` callbacks run on the GUI thread before the matching signal is emitted.
        """
        if self._thread is not None:
            raise RuntimeError(f"a job is already running: {self.name}")
        self.name = name
        self._callbacks = (on_success, on_failure, on_cancel)
        self._token = CancelToken()
        thread = QThread()
        thread.setObjectName(f"weldreview-{name}")
        worker = _Worker(fn, self._token, tuple(cancel_types))
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self.progress)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        # direct: the worker's thread stops its own event loop, so waiting for it from the GUI
        # thread (shutdown, tests) never depends on the GUI event loop
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        _LIVE[thread] = worker
        thread.start()
        self.started.emit(name)

    def cancel(self) -> None:
        """Ask the running job to stop at its next check; returns at once."""
        if self._token is not None:
            self._token.set()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the thread has stopped (for shutdown and tests); True when it did."""
        if self._thread is None:
            return True
        return self._thread.wait(timeout_ms)

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Cancel, wait for the thread, and release it (used when the window closes)."""
        self.cancel()
        self._callbacks = (None, None, None)
        if self._thread is not None:
            self._thread.wait(timeout_ms)
            self._on_thread_finished()

    @Slot(object)
    def _on_succeeded(self, result) -> None:
        if self._callbacks[0] is not None:
            self._callbacks[0](result)
        self.succeeded.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._callbacks[1] is not None:
            self._callbacks[1](message)
        self.failed.emit(message)

    @Slot()
    def _on_cancelled(self) -> None:
        if self._callbacks[2] is not None:
            self._callbacks[2]()
        self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        # A thread released by shutdown() still delivers its queued ``finished``; by then a new
        # job may own self._thread, which must not be released (destroying a running QThread).
        sender = self.sender()
        if self._thread is None or (isinstance(sender, QThread) and sender is not self._thread):
            return
        thread, worker = self._thread, self._worker
        self._thread = self._worker = self._token = None
        self._callbacks = (None, None, None)
        _LIVE.pop(thread, None)
        worker.deleteLater()
        thread.deleteLater()
        self.finished.emit()
