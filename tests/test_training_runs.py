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
# calibration at the end on one held-out generated weld (seed 1000), cheaply: 60 patches at 5 %
CALIBRATE = {"calibrate_synthetic": 1, "calibrate_fpr": 0.05, "calibrate_patches": 60}
CALIBRATE_CLI = ["--synthetic", "1", "--fpr", "0.05", "--patches", "60", "--seed", "1000"]


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


def test_a_run_calibrates_its_model_at_the_end_as_weldreview_calibrate_does(runs, tmp_path, capsys):
    import json
    import shutil

    from app.cli import main

    folder = runs.start("calibrated", {**TINY, **CALIBRATE})
    seen = set()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # every state it passes through (calibrating takes seconds)
        run = read_run(folder)
        seen.add(run.state)
        if run.state == "calibrating":
            assert run.fraction == 1.0 and run.seconds_left is None and run.can_stop
            assert "calibrating on 1 held-out synthetic weld" in run.status["message"]
        if over(run):
            break
        time.sleep(0.05)
    assert run.state == "finished", (run.status, log_tail(run))
    assert {"running", "calibrating", "finished"} <= seen, seen
    message = run.status["message"]
    assert message.startswith("wrote ") and "calibrated on 1 held-out synthetic weld: thresholds |mean| > " in message
    assert "thresholds: |mean| > " in log_tail(run)  # the line weldreview calibrate prints
    assert "no calibration film to leave out" in message and "one film only, nothing to leave out" in log_tail(run)
    assert tr._children[run.status["pid"]].wait(timeout=30) == 0
    stored = json.loads(run.model.with_suffix(".json").read_text())

    # the same model calibrated by hand on the same held-out weld and seed: the same thresholds
    copy = tmp_path / "by-hand.keras"
    shutil.copyfile(run.model, copy)
    copy.with_suffix(".json").write_text(json.dumps({k: v for k, v in stored.items()
                                                     if k not in ("thresholds", "okay_scores")}))
    assert main(["calibrate", str(copy), *CALIBRATE_CLI]) == 0
    by_hand = json.loads(copy.with_suffix(".json").read_text())
    assert stored["thresholds"] == by_hand["thresholds"]
    assert stored["okay_scores"] == by_hand["okay_scores"]
    assert f"{stored['thresholds']['mean']:.5f}" in message
    assert capsys.readouterr().out.startswith("thresholds: ")


def test_calibration_on_the_training_radiographs_is_refused(tmp_path, capsys):
    from app.cli import main

    data = tmp_path / "films"
    data.mkdir()
    (tmp_path / "same").symlink_to(data)
    out = tmp_path / "m.keras"
    base = ["train", "--steps", "2", "--batch", "2", "--quiet", "--out", str(out)]
    for given in (str(data), str(tmp_path / "same"), str(data) + "/."):
        assert main([*base, "--data", str(data), "--calibrate-data", given]) == 2
        err = capsys.readouterr().err
        assert "--calibrate-data is the training folder --data" in err and "held-out" in err
    # generated welds: the held-out seeds must not overlap the training ones
    assert main([*base, "--synthetic", "3", "--seed", "999", "--calibrate-synthetic", "1"]) == 2
    assert "overlap the training welds (seeds 999..1001" in capsys.readouterr().err
    # an FPR the patches cannot support is refused before training, not hours later
    assert main([*base, "--synthetic", "1", "--calibrate-synthetic", "1", "--calibrate-fpr", "0.01",
                 "--calibrate-patches", "100"]) == 2
    assert "at least 300 are needed" in capsys.readouterr().err
    assert main([*base, "--synthetic", "1", "--calibrate-fpr", "0.05"]) == 2  # calibrate on what?
    assert "--calibrate-fpr needs --calibrate-data DIR and/or --calibrate-synthetic N" in capsys.readouterr().err
    assert main([*base, "--synthetic", "1", "--calibrate-data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--calibrate-data: " in err and "not a folder" in err
    assert not out.exists()


def test_a_failed_or_stopped_calibration_leaves_the_model_saved_and_says_why(tmp_path, capsys):
    import argparse

    import numpy as np
    from skimage import io

    from app.cli import main
    from app.commands.train import NOT_CALIBRATED, _calibrate
    from core.modelfile import load_model
    from core.training_runs import StatusWriter

    flat = tmp_path / "flat"  # a radiograph without a weld: no okay weld patches to calibrate on
    flat.mkdir()
    rng = np.random.default_rng(0)
    io.imsave(flat / "plate.png", (30000 + 500 * rng.standard_normal((300, 900))).astype(np.uint16),
              check_contrast=False)
    out, run = tmp_path / "m.keras", tmp_path / "run"
    rc = main(["train", "--synthetic", "1", "--steps", "2", "--batch", "2", "--perturbations", "dogbone",
               "--precision", "off", "--quiet", "--out", str(out), "--run", str(run),
               "--calibrate-data", str(flat), "--calibrate-fpr", "0.05"])
    assert rc == NOT_CALIBRATED == 3
    status = read_run(run).status
    assert status["state"] == "finished" and out.is_file()
    assert load_model(out).thresholds is None
    assert status["message"].startswith(f"wrote {out} ")
    assert ". The model is not calibrated, because the calibration failed (CalibrationError: no held-out " \
           "radiograph with a weld region to draw okay patches from); calibrate it on held-out radiographs " \
           f"with weldreview calibrate \"{out}\" --data FOLDER before scanning with it" in status["message"]
    assert "The model is not calibrated" in capsys.readouterr().err

    # a stop asked for while calibrating ends the calibration: finished, not calibrated
    writer = StatusWriter(run, model=out, budget_s=None, steps=2)
    args = argparse.Namespace(calibrate_data=None, calibrate_synthetic=1, calibrate_fpr=0.05,
                              calibrate_patches=None, calibrate_seed=None, quiet=True)
    (run / STOP).touch()
    assert _calibrate(args, out, writer, writer.stop_requested, f"wrote {out}") == NOT_CALIBRATED
    status = read_run(run).status
    assert status["state"] == "finished" and not (run / STOP).exists()
    assert "not calibrated, because the calibration was stopped" in status["message"]
    assert load_model(out).thresholds is None


def test_stop_checkpoints_and_resume_finishes_by_the_time_budget(runs):
    from core.modelfile import load_model

    budget_min = 0.2  # 12 s of training in all, resumed sessions included
    folder = runs.start("budget", {**LONG, "budget_min": budget_min, **CALIBRATE})
    run = wait(folder, stepping(1))
    assert run.state == "running", (run.status, log_tail(run))
    assert 0 < run.fraction < 1 and run.seconds_left > 0
    assert run.status["budget_s"] == budget_min * 60
    request_stop(run)
    stopping = read_run(folder)
    assert stopping.state == "running" and not stopping.can_stop  # the window shows "stopping..."
    run = wait(folder, over)
    assert run.state == "stopped", (run.status, log_tail(run))
    assert "stopped at step" in run.status["message"]  # stopped: no calibration
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
    bundle = load_model(run.model)
    t = bundle.metadata["training"]
    assert t["resumed_from"] == str(folder / "model.ckpt")
    assert t["stopped_by_budget"] and t["elapsed_s"] >= budget_min * 60
    assert t["steps"] == run.status["step"] > stopped_at
    # the resumed launch calibrated at its end, with the options stored in run.json
    assert "--calibrate-synthetic" in run.request["command"] and "--resume" in run.request["command"]
    assert bundle.thresholds is not None and bundle.thresholds.n_okay == 60
    assert "calibrated on 1 held-out synthetic weld" in run.status["message"]


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
    folder = runs.start("power-cut", {**LONG, "checkpoint_every": 5})
    # checkpoints every 5 steps: step 6 reported means step 5's is written
    run = wait(folder, stepping(6))
    assert run.state == "running", (run.status, log_tail(run))
    os.kill(run.status["pid"], signal.SIGKILL)
    run = wait(folder, over, timeout=30)
    assert run.state == "interrupted", run.status
    assert "resume" in run.status["message"] and run.can_resume and not run.can_stop
    runs.resume(run)
    run = wait(folder, stepping(1))
    assert run.state == "running", (run.status, log_tail(run))
    assert run.status["step"] > 5  # on from the checkpoint's step 5, not from the start
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


def test_a_calibrating_run_is_over_its_training_and_reads_finished_once_its_process_is_gone(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    options = {"synthetic": 1, "calibrate_data": "/films/held out", "calibrate_fpr": 0.01}
    tr._write_json(folder / tr.REQUEST, {"options": options, "created": 1.0})
    status = {"state": "calibrating", "step": 40, "steps": 100, "elapsed_s": 60.0, "pid": os.getpid(),
              "model": str(folder / MODEL), "message": "wrote ...; calibrating on ..."}
    tr._write_json(folder / tr.STATUS, status)
    run = TrainingRun(folder, "run", {}, status)  # as read while its process lives
    assert run.fraction == 1.0 and run.seconds_left is None  # stopped by its budget: still 100 %
    assert run.can_stop and not run.can_resume
    (folder / STOP).touch()
    assert not run.can_stop
    # its process gone (machine off): the model was saved, but it is not calibrated
    run = read_run(folder)  # this pid is not a `--run` process
    assert run.state == "finished" and not run.can_resume and not run.can_stop
    assert "not calibrated" in run.status["message"]
    assert (f'weldreview calibrate "{folder / MODEL}" --data "/films/held out" --fpr 0.01'
            in run.status["message"])
    assert tr.calibrate_command("m.keras", {}) == 'weldreview calibrate "m.keras" --data FOLDER'


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
