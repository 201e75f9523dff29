"""Training runs that outlive the window: a folder per run, a status file, a stop request.

A plant trains overnight on a workstation, so a training run is a separate process
(``weldreview train ... --run DIR``) that survives the application being closed, and anything
(the application's Training runs window, a shell) can watch it. Its folder holds:

``run.json``
    The request: the ``weldreview train`` arguments, who started it and when. A folder with only
    a status (``weldreview train --run DIR`` typed in a shell) is listed too, but not resumable.
``status.json``
    Written by the training process (atomically, at most every ``STATUS_INTERVAL_S`` and at
    every change of state): ``state`` (``running``, ``calibrating``, ``finished``, ``stopped``,
    ``failed``), ``step``, ``steps``, ``elapsed_s``, ``budget_s``, the losses, ``samples_per_s``,
    ``pid``, ``updated`` (epoch seconds), ``model`` (the output file) and ``message``.
    ``calibrating``: training has finished and the model is saved, and the run calibrates it
    (``weldreview train --calibrate-data``); it then ends ``finished``, with the thresholds in its
    message, or with a message saying why the model is not calibrated.
``STOP``
    Created to ask the process to stop: it finishes its step, writes a checkpoint and exits with
    state ``stopped``. ``resume`` starts it again from the checkpoint. While ``calibrating`` it
    ends the calibration instead: the run is ``finished`` with an uncalibrated model.
``model.keras``, ``model.ckpt/``, ``log.txt``
    The output model, its checkpoint, and the process's own output.

A run whose status says ``running`` but whose process is gone (machine switched off, process
killed) is reported as ``interrupted``: its last checkpoint is kept and it can be resumed. One
that was ``calibrating`` is reported ``finished``: its model was saved, but is not calibrated (the
message says so, and how to calibrate it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STATUS = "status.json"
REQUEST = "run.json"
STOP = "STOP"
LOG = "log.txt"
MODEL = "model.keras"
CHECKPOINT = "model.ckpt"  # core.training: <out>.ckpt
STATUS_INTERVAL_S = 2.0
STATES = ("starting", "running", "calibrating", "finished", "stopped", "failed", "interrupted")
LIVE = ("starting", "running", "calibrating")  # states of a run whose process should be alive


def runs_dir(home: Path | None = None) -> Path:
    """``<home>/training``: where the application keeps its training runs (created)."""
    from core.paths import user_home

    path = (home or user_home()) / "training"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` so that a reader never sees half a file (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StatusWriter:
    """What a training process writes to its run folder (``weldreview train --run DIR``).

    ``progress(p)`` takes ``core.training.train``'s progress dicts and writes at most every
    ``interval`` seconds; ``calibrating(message)`` says the trained model is being calibrated;
    ``finish(state, message)`` writes the final state at once; ``stop_requested()`` is the
    ``cancel`` callable of ``train`` (and of the calibration).
    """

    def __init__(self, folder, *, model: Path, budget_s: float | None, steps: int,
                 interval: float = STATUS_INTERVAL_S):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self._last = 0.0
        self.data = {"state": "running", "step": 0, "steps": steps, "elapsed_s": 0.0,
                     "budget_s": budget_s, "samples_per_s": None, "loss": None, "pid": os.getpid(),
                     "model": str(model), "message": "", "started": time.time(), "updated": time.time()}
        self._write()

    def _write(self) -> None:
        self.data["updated"] = time.time()
        _write_json(self.folder / STATUS, self.data)

    def progress(self, p: dict) -> None:
        self.data.update(step=int(p["step"]), steps=int(p["steps"]), elapsed_s=float(p["elapsed_s"]),
                         samples_per_s=float(p["samples_per_s"]), loss=float(p["total"]))
        if "validation" in p:  # train(validation=...): the latest and the best so far
            self.data["validation"] = {"step": p["validation"]["step"], "score": p["validation"]["score"],
                                       "best_step": p["best_validation"]["step"],
                                       "best_score": p["best_validation"]["score"]}
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write()

    def stop_requested(self) -> bool:
        return (self.folder / STOP).exists()

    def calibrating(self, message: str, *, force: bool = True) -> None:
        """State ``calibrating`` with ``message``: written at once (``force``, the change of state)
        or, for progress messages, at most every ``interval`` seconds. A stop request stands."""
        self.data.update(state="calibrating", message=message)
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self._write()

    def finish(self, state: str, message: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        self.data.update(state=state, message=message)
        if state not in ("running", "calibrating"):
            (self.folder / STOP).unlink(missing_ok=True)
        self._write()


@dataclass
class TrainingRun:
    """One run folder as seen from outside (``read_run``)."""

    folder: Path
    name: str
    request: dict
    status: dict

    @property
    def state(self) -> str:
        return self.status.get("state", "starting")

    @property
    def model(self) -> Path:
        return Path(self.status.get("model") or self.folder / MODEL)

    @property
    def fraction(self) -> float:
        """How far the run is, 0..1: by its time budget or its steps, whichever is further
        (1 once training is over: calibrating or finished)."""
        if self.state in ("calibrating", "finished"):
            return 1.0
        parts = []
        if self.status.get("steps"):
            parts.append(self.status.get("step", 0) / self.status["steps"])
        if self.status.get("budget_s"):
            parts.append(self.status.get("elapsed_s", 0.0) / self.status["budget_s"])
        return float(min(max(parts, default=0.0), 1.0))

    @property
    def seconds_left(self) -> float | None:
        """Estimated training seconds left (None before the first step or once not running)."""
        f, elapsed = self.fraction, self.status.get("elapsed_s", 0.0)
        if self.state != "running" or f <= 0 or elapsed <= 0:
            return None
        return elapsed * (1 - f) / f

    @property
    def can_resume(self) -> bool:
        # core.training.checkpoint_to_read: after a crash while saving the complete one may be
        # <ckpt>.new or <ckpt>.old (not imported here: this is polled by the window every second)
        return (self.state in ("stopped", "interrupted", "failed") and "options" in self.request
                and any((self.folder / f"{CHECKPOINT}{suffix}" / "state.index").is_file()
                        for suffix in ("", ".new", ".old")))

    @property
    def can_stop(self) -> bool:
        """Whether Stop applies: while training (checkpoint, then ``stopped``) and while
        calibrating (the calibration ends; ``finished``, not calibrated)."""
        return self.state in LIVE and not (self.folder / STOP).exists()


_children: dict = {}  # pid -> Popen of the runs this process launched (polled, so reaped)


def _alive_windows(pid: int) -> bool:
    """Whether process ``pid`` runs (Windows: os.kill(pid, 0) would terminate it)."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _alive(pid, folder: Path | None = None) -> bool:
    """Whether ``pid`` is a live process (and, where /proc tells, the training of ``folder``:
    after a restart the number may belong to another program)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    try:  # a finished child not yet reaped by its parent is a zombie: not alive
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        if folder is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            if "--run" not in args or not any(Path(a).name == folder.name for a in args):
                return False
    except (OSError, IndexError):
        pass  # no /proc (macOS): trust os.kill
    return True


def _failure(folder: Path, since: int) -> str:
    """Why a process ended before training: the error it printed (this launch's output only)."""
    lines = [line.strip() for line in _tail(folder / LOG, 30, since=since).splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("weldreview")
            or re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line)]
    if said:
        return said[-1]
    return "the training process ended before it started training" + (
        f" (last output: {lines[-1]})" if lines else " (no output)")


def calibrate_command(model, options: dict) -> str:
    """The ``weldreview calibrate`` command line that calibrates ``model`` as a run's
    ``--calibrate-...`` ``options`` would (``--data FOLDER`` when they name no held-out source)."""
    parts = [f'weldreview calibrate "{model}"']
    if options.get("calibrate_data"):
        parts.append(f'--data "{options["calibrate_data"]}"')
    if options.get("calibrate_synthetic"):
        parts.append(f"--synthetic {options['calibrate_synthetic']}")
    if len(parts) == 1:
        parts.append("--data FOLDER")
    for key in ("fpr", "patches", "seed", "zones"):
        if options.get(f"calibrate_{key}") is not None:
            parts.append(f"--{key} {options[f'calibrate_{key}']}")
    return " ".join(parts)


def read_run(folder) -> TrainingRun | None:
    """The run in ``folder`` (None when it holds neither ``run.json`` nor ``status.json``).

    A run with a request and no status yet is ``starting``. A status of ``running`` whose process
    no longer exists reads as ``interrupted`` (``calibrating``: ``finished``, not calibrated); a
    run whose process ended while ``starting`` (before its first step) reads as ``failed``, with
    the error from its log as the message.
    """
    folder = Path(folder)
    request = _read_json(folder / REQUEST)
    status = _read_json(folder / STATUS)
    if request is None:
        if status is None:
            return None
        # started from a shell (weldreview train --run DIR): watchable, not resumable from here
        request = {"created": status.get("started"), "external": True}
    if status is None:
        status = {"state": "starting", "pid": request.get("pid"), "message": "loading radiographs"}
    if status.get("state") == "starting" and not _alive(status.get("pid"), folder):
        # it ended before training began (its own status says so from then on): an error
        status = {**status, "state": "failed", "message": _failure(folder, request.get("log_start", 0))}
    elif status.get("state") == "running" and not _alive(status.get("pid"), folder):
        status = {**status, "state": "interrupted",
                  "message": "the training process ended without saying why (machine off or "
                             "process killed); resume continues from its last checkpoint"}
    elif status.get("state") == "calibrating" and not _alive(status.get("pid"), folder):
        command = calibrate_command(status.get("model") or folder / MODEL, request.get("options", {}))
        status = {**status, "state": "finished",
                  "message": "training finished and the model was saved, but the process ended while "
                             "calibrating it (machine off or process killed), so the model is not "
                             f"calibrated; calibrate it with {command}"}
    return TrainingRun(folder, folder.name, request, status)


def list_runs(home: Path | None = None, *, folder: Path | None = None) -> list[TrainingRun]:
    """Every run in the runs folder, newest first."""
    base = Path(folder) if folder is not None else runs_dir(home)
    if not base.is_dir():
        return []
    runs = [r for r in (read_run(p) for p in base.iterdir() if p.is_dir()) if r is not None]
    return sorted(runs, key=lambda r: r.request.get("created") or 0, reverse=True)


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")
    return slug or "run"


def new_run_folder(name: str, *, home: Path | None = None, folder: Path | None = None) -> Path:
    """A fresh folder for a run called ``name`` (a number is added when the name is taken)."""
    base = Path(folder) if folder is not None else runs_dir(home)
    slug = _slug(name)
    path, k = base / slug, 2
    while path.exists():
        path, k = base / f"{slug}-{k}", k + 1
    path.mkdir(parents=True)
    return path


def train_arguments(run_folder: Path, options: dict) -> list[str]:
    """``weldreview train`` arguments of a run: ``options`` maps option names to values.

    Keys are option names without dashes (``data``, ``synthetic``, ``perturbations``,
    ``budget_min``, ``steps``, ``background``, ``seed``, ...); True adds a bare flag, None or
    False leaves the option out. ``--out`` and ``--run`` point into the run folder.
    """
    args = ["train"]
    for key, value in options.items():
        if value is None or value is False or key in ("out", "run", "resume"):
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args + ["--out", str(Path(run_folder) / MODEL), "--run", str(run_folder), "--quiet"]


def launch(run_folder: Path, options: dict, *, user: str | None = None, resume: bool = False,
           python: str | None = None, env: dict | None = None) -> int:
    """Start ``weldreview train`` for the run in its own process (it outlives the caller).

    The first launch writes ``run.json``; ``resume=True`` starts the run again from its
    checkpoint with the same options. Returns the process id. The process's output goes to
    ``log.txt`` in the run folder.
    """
    # the process runs in the repository (python -m app): paths must not depend on our cwd
    folder = Path(run_folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("data", "accepted", "calibrate_data"):
        if options.get(key):
            options = {**options, key: str(Path(options[key]).expanduser().resolve())}
    args = train_arguments(folder, options) + (["--resume"] if resume else [])
    if python is None and getattr(sys, "frozen", False):  # the PyInstaller bundle: its own program
        cmd = [sys.executable, *args]
    else:
        cmd = [python or sys.executable, "-m", "app", *args]
    request = _read_json(folder / REQUEST) if resume else None
    if request is None:
        request = {"options": options, "user": user, "created": time.time()}
    request["launches"] = request.get("launches", 0) + 1
    request["command"] = cmd  # the latest launch's (a resumed run's has --resume)
    (folder / STOP).unlink(missing_ok=True)
    log = open(folder / LOG, "ab")
    request["log_start"] = log.seek(0, os.SEEK_END)  # this launch's output starts here
    try:
        kwargs = {"start_new_session": True} if sys.platform != "win32" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(Path(__file__).resolve().parent.parent), env=env, **kwargs)
    finally:
        log.close()
    request["pid"] = proc.pid
    _children[proc.pid] = proc
    _write_json(folder / REQUEST, request)
    status = _read_json(folder / STATUS)
    if status is not None:  # a resumed run: its old final state no longer holds
        _write_json(folder / STATUS, {**status, "state": "starting", "pid": proc.pid,
                                      "message": "resuming from the checkpoint"})
    return proc.pid


def resume(run: TrainingRun, *, python: str | None = None, env: dict | None = None) -> int:
    """Start a stopped or interrupted run again from its checkpoint."""
    if not run.can_resume:
        raise ValueError(f"run {run.name} is {run.state}; only a stopped, failed or interrupted run "
                         "with a checkpoint, started with its options recorded (launch), can be resumed")
    return launch(run.folder, run.request.get("options", {}), resume=True, python=python, env=env)


def request_stop(run: TrainingRun) -> None:
    """Ask the run's process to checkpoint and stop after its current step."""
    (run.folder / STOP).touch()


def _tail(path: Path, lines: int, *, since: int = 0, most: int = 256 * 1024) -> str:
    """The last ``lines`` lines of ``path`` after byte ``since`` (reading at most ``most`` bytes)."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(since, end - most, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def log_tail(run: TrainingRun, lines: int = 20) -> str:
    """The last ``lines`` lines of the run's own output."""
    return _tail(run.folder / LOG, lines)
