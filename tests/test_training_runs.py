"""Training runs as separate processes (core.training_runs): real `weldreview train --run DIR`
processes, stopped through their STOP file, by SIGTERM (as at logout) and by SIGKILL (as when the
machine is switched off), resumed from their checkpoints.

The runs train one small synthetic weld with batches of 2 patches, so each takes seconds; every
process a test starts is killed at its end (fixture ``runs``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from core import training_runs as tr
from core.training_runs import (
    MODEL, STOP, TrainingRun, launch, list_runs, log_tail, new_run_folder, read_run, request_stop,
    resume, train_arguments,
)

TIMEOUT_S = 180
TINY = {"synthetic": 1, "steps": 4, "batch": 2, "seed": 0}
LONG = {"synthetic": 1, "steps": 100_000, "batch": 2, "seed": 0}
OVER = ("finished", "stopped", "failed", "interrupted")


@pytest.fixture
def runs(tmp_path, weldreview_home):
    """Start runs in ``tmp_path/training``; kills whatever they left running at the end."""
    env = {**os.environ, "WELDREVIEW_HOME": str(weldreview_home), "QT_QPA_PLATFORM": "offscreen"}
    pids: list[int] = []
    base = tmp_path / "training"

    def start(name, options, **kw):
        folder = new_run_folder(name, folder=base)
        pids.append(launch(folder, options, user="ina", env=env, **kw))
        return folder

    def again(run):
        pids.append(resume(run, env=env))

    yield SimpleNamespace(start=start, resume=again, base=base)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)  # the run's own session: start_new_session
        except (ProcessLookupError, PermissionError):
            pass
        child = tr._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=30)


def wait(folder, until, timeout=TIMEOUT_S) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(folder)
        if run is not None and until(run):
            return run
        if time.monotonic() > deadline:
            tail = log_tail(run, 30) if run is not None else ""
            raise AssertionError(f"{folder.name}: still {run and run.status} after {timeout} s\n{tail}")
        time.sleep(0.25)


def over(run: TrainingRun) -> bool:
    return run.state in OVER


def stepping(n: int):
    """Running with step >= n, or over (then the caller's assertion says why)."""
    return lambda run: over(run) or (run.state == "running" and run.status.get("step", 0) >= n)


# ------------------------------------------------------------------ real processes
def test_a_run_trains_in_its_own_process_and_says_finished(runs):
    from core.modelfile import load_model

    folder = runs.start("tiny", TINY)
    first = read_run(folder)
    assert first.state == "starting" and first.can_stop and not first.can_resume
    run = wait(folder, over)
    assert run.state == "finished", (run.status, log_tail(run))
    assert run.fraction == 1.0 and run.seconds_left is None
    assert run.status["step"] == 4 and run.status["steps"] == 4
    assert run.status["loss"] > 0 and run.status["samples_per_s"] > 0
    assert "wrote" in run.status["message"]
    assert run.model == folder / MODEL and run.model.is_file()
    bundle = load_model(run.model)
    assert bundle.metadata["training"]["steps"] == 4
    assert bundle.metadata["training"]["resumed_from"] is None
    assert bundle.thresholds is None  # a fresh model: calibrate it before scanning
    assert run.request["user"] == "ina" and run.request["options"] == TINY
    assert not run.can_stop and not run.can_resume
    assert [r.name for r in list_runs(folder=runs.base)] == ["tiny"]


def test_stop_checkpoints_and_resume_finishes_by_the_time_budget(runs):
    from core.modelfile import load_model

    budget_min = 0.2  # 12 s of training in all, resumed sessions included
    folder = runs.start("budget", {**LONG, "budget_min": budget_min})
    run = wait(folder, stepping(1))
    assert run.state == "running", (run.status, log_tail(run))
    assert 0 < run.fraction < 1 and run.seconds_left > 0
    assert run.status["budget_s"] == budget_min * 60
    request_stop(run)
    stopping = read_run(folder)
    assert stopping.state == "running" and not stopping.can_stop  # the window shows "stopping..."
    run = wait(folder, over)
    assert run.state == "stopped", (run.status, log_tail(run))
    assert "stopped at step" in run.status["message"]
    assert (folder / "model.ckpt").is_dir() and run.can_resume
    assert not (folder / STOP).exists() and not run.model.exists()
    stopped_at = run.status["step"]
    assert 1 <= stopped_at < 100_000 and 0 < run.fraction < 1

    runs.resume(run)
    again = read_run(folder)
    assert again.state in ("starting", "running") and not again.can_resume
    run = wait(folder, over)
    assert run.state == "finished", (run.status, log_tail(run))
    assert run.request["launches"] == 2 and run.fraction == 1.0
    t = load_model(run.model).metadata["training"]
    assert t["resumed_from"] == str(folder / "model.ckpt")
    assert t["stopped_by_budget"] and t["elapsed_s"] >= budget_min * 60
    assert t["steps"] == run.status["step"] > stopped_at


def test_sigterm_as_at_logout_stops_with_a_checkpoint(runs):
    folder = runs.start("logout", LONG)
    run = wait(folder, stepping(1))
    assert run.state == "running", (run.status, log_tail(run))
    os.kill(run.status["pid"], signal.SIGTERM)
    run = wait(folder, over)
    assert run.state == "stopped", (run.status, log_tail(run))
    assert run.can_resume
    assert tr._children[run.status["pid"]].wait(timeout=30) == 130


def test_a_killed_run_is_interrupted_and_resumes_from_its_last_checkpoint(runs):
    folder = runs.start("power-cut", LONG)
    # core.training checkpoints every 100 steps: step 101 reported means step 100's is written
    run = wait(folder, stepping(101))
    assert run.state == "running", (run.status, log_tail(run))
    os.kill(run.status["pid"], signal.SIGKILL)
    run = wait(folder, over, timeout=30)
    assert run.state == "interrupted", run.status
    assert "resume" in run.status["message"] and run.can_resume and not run.can_stop
    runs.resume(run)
    run = wait(folder, stepping(101))  # the checkpoint's step 100, then onwards
    assert run.state == "running", (run.status, log_tail(run))
    assert "--resume" in run.request["command"] and run.request["launches"] == 2
    request_stop(run)
    run = wait(folder, over)
    assert run.state == "stopped" and run.can_resume, (run.status, log_tail(run))


def test_a_run_that_cannot_start_fails_with_the_error_it_printed(runs, tmp_path):
    missing = tmp_path / "no such folder"
    folder = runs.start("no-data", {"data": str(missing), "steps": 4, "batch": 2})
    run = wait(folder, over, timeout=60)
    assert run.state == "failed"
    assert run.status["message"] == f"weldreview: error: {missing}: not a folder"
    assert "not a folder" in log_tail(run)
    assert not run.can_resume and not run.can_stop


# ------------------------------------------------------------------ without processes
def run_with(status: dict, tmp_path=None, state="running") -> TrainingRun:
    from pathlib import Path

    return TrainingRun(Path(tmp_path or "/nonexistent/run"), "run", {}, {"state": state, **status})


def test_fraction_is_the_further_of_steps_and_time_budget():
    assert run_with({}).fraction == 0.0
    assert run_with({"step": 25, "steps": 100}).fraction == 0.25
    assert run_with({"step": 25, "steps": 100, "elapsed_s": 30.0, "budget_s": 60.0}).fraction == 0.5
    assert run_with({"step": 90, "steps": 100, "elapsed_s": 30.0, "budget_s": 60.0}).fraction == 0.9
    assert run_with({"step": 5, "steps": 100, "elapsed_s": 90.0, "budget_s": 60.0}).fraction == 1.0
    assert run_with({"step": 5, "steps": 100}, state="finished").fraction == 1.0  # by its budget
    assert run_with({"step": 5, "steps": 100}, state="stopped").fraction == 0.05


def test_seconds_left_extrapolates_while_running_only():
    assert run_with({"step": 25, "steps": 100, "elapsed_s": 60.0}).seconds_left == pytest.approx(180.0)
    assert run_with({"elapsed_s": 600.0, "budget_s": 3600.0, "step": 1,
                     "steps": 10**6}).seconds_left == pytest.approx(3000.0)
    assert run_with({"step": 0, "steps": 100, "elapsed_s": 0.0}).seconds_left is None
    assert run_with({"step": 25, "steps": 100, "elapsed_s": 60.0}, state="stopped").seconds_left is None


def test_new_run_folder_never_reuses_a_name(tmp_path):
    base = tmp_path / "training"
    assert new_run_folder("night shift", folder=base) == base / "night-shift"
    assert new_run_folder("night shift", folder=base) == base / "night-shift-2"
    assert new_run_folder("night shift", folder=base) == base / "night-shift-3"
    assert new_run_folder("../../etc", folder=base) == base / "etc"  # stays in the runs folder
    assert new_run_folder("  ", folder=base) == base / "run"
    assert all(p.is_dir() for p in base.iterdir())
    assert list_runs(folder=base) == []  # folders without run.json are not runs
    assert list_runs(folder=tmp_path / "none") == []


def test_train_arguments_are_what_the_cli_accepts(tmp_path):
    from app.cli import build_parser

    folder = tmp_path / "run"
    options = {"data": "/films", "synthetic": 2, "perturbations": "D,SNI", "budget_min": 60.0,
               "background": 24.0, "seed": 3, "steps": None, "force": False, "out": "/elsewhere.keras",
               "resume": True, "preset": None}
    args = train_arguments(folder, options)
    assert args == ["train", "--data", "/films", "--synthetic", "2", "--perturbations", "D,SNI",
                    "--budget-min", "60.0", "--background", "24.0", "--seed", "3",
                    "--out", str(folder / MODEL), "--run", str(folder), "--quiet"]
    parsed = build_parser().parse_args(args)
    assert (parsed.budget_min, parsed.background, parsed.synthetic) == (60.0, 24.0, 2)
    assert parsed.out == str(folder / "model.keras") and parsed.run == str(folder)
    assert not parsed.resume and parsed.steps is None
    assert train_arguments(folder, {"force": True})[1] == "--force"


def test_a_running_status_without_its_process_reads_interrupted(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    tr._write_json(folder / tr.REQUEST, {"options": {}, "created": 1.0})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    status = {"state": "running", "step": 3, "steps": 10, "pid": int(gone.stdout)}
    tr._write_json(folder / tr.STATUS, status)
    assert read_run(folder).state == "interrupted"
    # after a restart the number may belong to another program: this test's, without --run
    tr._write_json(folder / tr.STATUS, {**status, "pid": os.getpid()})
    run = read_run(folder)
    assert run.state == "interrupted" and "resume" in run.status["message"]
    assert not run.can_resume  # no checkpoint was written
    (folder / "model.ckpt").mkdir()
    (folder / "model.ckpt" / "state.index").write_bytes(b"")
    assert read_run(folder).can_resume
    # a finished run's status stands whatever its process does
    tr._write_json(folder / tr.STATUS, {**status, "state": "finished"})
    assert read_run(folder).state == "finished"


def test_a_run_started_from_a_shell_is_listed_but_not_resumed_from_here(tmp_path):
    from core.training_runs import StatusWriter

    folder = tmp_path / "training" / "by-hand"
    writer = StatusWriter(folder, model=folder / MODEL, budget_s=None, steps=10)
    writer.progress({"step": 4, "steps": 10, "elapsed_s": 8.0, "samples_per_s": 2.0, "total": 0.1})
    writer.finish("stopped", "stopped at step 4")
    (folder / "model.ckpt").mkdir()
    (folder / "model.ckpt" / "state.index").write_bytes(b"")
    (run,) = list_runs(folder=folder.parent)
    assert run.name == "by-hand" and run.state == "stopped" and run.status["step"] == 4
    assert run.fraction == 0.4 and not run.can_resume
    with pytest.raises(ValueError, match="can be resumed"):
        resume(run)
