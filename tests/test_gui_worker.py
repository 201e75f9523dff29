"""The job runner: results, errors and cancel reach the GUI thread; the event loop stays free."""

from __future__ import annotations

import threading
import time

import pytest

from gui_support import no_thread_leak  # noqa: F401
from core.errors import ImageLoadError


@pytest.fixture
def runner(qtbot):
    from app.worker import JobRunner

    r = JobRunner()
    yield r
    r.shutdown()


def test_result_arrives_on_the_gui_thread(runner, qtbot):
    seen = {}

    def job(progress, cancel):
        seen["worker"] = threading.current_thread()
        for i in range(5):
            progress((i + 1) / 5)
        return 42

    got = []
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(job, name="answer", on_success=lambda v: got.append(
            (v, threading.current_thread())))
    assert got == [(42, threading.main_thread())]
    assert seen["worker"] is not threading.main_thread()
    assert not runner.is_running()


def test_error_becomes_one_line_message(runner, qtbot):
    def job(progress, cancel):
        raise ImageLoadError("broken.tif: not an image")

    with qtbot.waitSignal(runner.failed, timeout=10_000) as blocker:
        runner.start(job, name="fail")
    assert blocker.args == ["broken.tif: not an image"]
    qtbot.waitUntil(lambda: not runner.is_running(), timeout=10_000)


def test_cancel_stops_a_running_job(runner, qtbot):
    started = threading.Event()

    def job(progress, cancel):
        started.set()
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.005)

    runner.start(job, name="endless")
    assert started.wait(10)
    with qtbot.waitSignal(runner.cancelled, timeout=10_000):
        runner.cancel()
    qtbot.waitUntil(lambda: not runner.is_running(), timeout=10_000)


def test_only_one_job_at_a_time(runner, qtbot):
    from app.worker import live_threads

    gate = threading.Event()
    runner.start(lambda progress, cancel: gate.wait(10), name="first")
    assert len(live_threads()) == 1  # what the no_thread_leak fixture checks after each test
    with pytest.raises(RuntimeError, match="already running"):
        runner.start(lambda progress, cancel: None, name="second")
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_running(), timeout=10_000)


def test_a_job_started_right_after_shutdown_is_not_released_by_the_old_thread(runner, qtbot):
    """The stopped thread's queued ``finished`` must not release the next job's thread (that
    destroyed a running QThread and aborted the application)."""
    gate = threading.Event()

    def quick(progress, cancel):
        return 1

    def slow(progress, cancel):
        gate.wait(10)
        return 2

    runner.start(quick, name="quick")
    runner.shutdown()  # waits; the thread's own finished signal is still queued for the GUI thread
    got = []
    runner.start(slow, name="slow", on_success=got.append)
    qtbot.wait(200)  # deliver the old thread's queued signal
    assert runner.is_running() and runner.name == "slow"
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_running(), timeout=10_000)
    assert got == [2]
