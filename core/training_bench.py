"""Training throughput benchmark: our training loop beside plain ``model.fit`` in the same run.

Samples per second count patches through the network. Our loop puts ``2 * batch`` patches through
per step (``batch`` okay patches and their perturbed copies); ``model.fit`` is given the same
``2 * batch`` patches per step with a plain MSE on the aperture, so the ratio compares equal work.
Every variant runs in this process, one after the other, so a ratio is fair on a shared machine
even when the absolute figures are not.

Variants (``variants=``):

``loop``
    core.training.train as used by ``weldreview train`` (mixed precision per ``auto``), fed by
    an in-memory source: model-bound throughput.
``loop_f32``
    The same loop in float32.
``loop_joint``
    The loop with both passes in one tape (``split_passes=False``): more memory.
``loop_pipeline``
    The same loop fed by the real pipeline: PatchSampler okay patches from a synthetic weld and
    SNI perturbations (skipped when those modules are missing).
``fit_f32``, ``fit_bf16``
    Plain ``model.fit`` of the same model in float32 / mixed bfloat16.
``loop_xla``
    The loop's step with ``jit_compile=True`` (off by default: about ten times slower on CPU).
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from core.model import PATCH

DEFAULT_VARIANTS = ("loop", "loop_joint", "loop_f32", "fit_f32", "fit_bf16", "loop_pipeline")


def _smooth_okay(rng, n):
    """Cheap weld-like okay patches: a bright band with a gradient and noise, (n, 192, 192)."""
    rows = np.arange(PATCH, dtype=np.float32)[:, None]
    centre = rng.uniform(60, 130, (n, 1, 1)).astype(np.float32)
    band = np.exp(-(((rows[None] - centre) / rng.uniform(25, 45, (n, 1, 1))) ** 2)).astype(np.float32)
    x = 0.3 + 0.3 * band + rng.normal(0, 0.01, (n, PATCH, PATCH)).astype(np.float32)
    return np.broadcast_to(x, (n, PATCH, PATCH)).astype(np.float32)


class _BlobPerturbations:
    """Cheap perturbation source for the benchmark: one bright square of random size per patch."""

    name = "bench"

    def sample(self, rng, n):
        delta = np.full((n, PATCH, PATCH), 0.1, np.float32)
        weight = np.zeros((n, PATCH, PATCH), np.float32)
        for k in range(n):
            r, c, s = rng.integers(30, 140), rng.integers(30, 140), rng.integers(5, 30)
            weight[k, r : r + s, c : c + s] = 1.0
        return delta, weight


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time_loop(steps, batch, okay, sources, *, precision, jit=False, split=True):
    from core.training import TrainConfig, train

    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(steps=steps + 1, batch=batch, seed=0, mixed_precision=precision,
                          out=Path(tmp) / "bench.keras", checkpoint_every=0, split_passes=split)
        if jit:
            import core.training as tr

            original = tr._Trainer.__init__

            def patched(self, config):
                original(self, config)
                import tensorflow as tf

                self.train_step = tf.function(self.train_step.python_function, jit_compile=True)

            tr._Trainer.__init__ = patched
            try:
                train(cfg, okay, sources, progress=lambda p: stamps.append(time.perf_counter()))
            finally:
                tr._Trainer.__init__ = original
        else:
            train(cfg, okay, sources, progress=lambda p: stamps.append(time.perf_counter()))
    # the first step traces the function: time from its end to the last step's end
    return 2 * batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _time_fit(steps, batch, *, precision):
    import keras
    import tensorflow as tf

    from core.model import build_autoencoder

    policy = "mixed_bfloat16" if precision == "bfloat16" else None
    model = build_autoencoder(seed=0, dtype_policy=policy)
    rng = np.random.default_rng(0)
    x = _smooth_okay(rng, 2 * batch)[..., None]
    y = x[:, 18:-18, 18:-18]
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps + 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=["mse", None])
    stamps = []
    cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: stamps.append(time.perf_counter()))
    model.fit(ds, epochs=1, verbose=0, callbacks=[cb])
    return 2 * batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _pipeline_sources(seed=0):
    from core.imageio import normalise
    from core.perturbations import SNIPerturbations
    from core.sampler import PatchSampler
    from core.synthetic import generate_weld

    weld = generate_weld(seed, shape=(800, 2400))
    image, _ = normalise(weld.image, bits_stored=16)
    sampler = PatchSampler([image], [weld.mask], rois=[weld.weld_mask], seed=seed)
    return sampler.okay, [SNIPerturbations()]


def _variants(steps, batch):
    okay, sources = _smooth_okay, [_BlobPerturbations()]
    return {
        "loop": lambda: _time_loop(steps, batch, okay, sources, precision="auto"),
        "loop_f32": lambda: _time_loop(steps, batch, okay, sources, precision="off"),
        "loop_joint": lambda: _time_loop(steps, batch, okay, sources, precision="auto", split=False),
        "loop_xla": lambda: _time_loop(steps, batch, okay, sources, precision="off", jit=True),
        "fit_f32": lambda: _time_fit(steps, batch, precision="off"),
        "fit_bf16": lambda: _time_fit(steps, batch, precision="bfloat16"),
        "loop_pipeline": lambda: _time_loop(steps, batch, *_pipeline_sources(), precision="auto"),
    }


def run_variant(name: str, *, steps: int, batch: int) -> dict:
    """Run one variant in this process: ``{"samples_per_s", "peak_rss_mb"}``."""
    sps = _variants(steps, batch)[name]()
    return {"samples_per_s": round(sps, 2), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def benchmark_training(
    *, steps: int = 10, batch: int = 32, variants=DEFAULT_VARIANTS, repeats: int = 2, timeout_s: float = 1800,
    progress=None,
) -> dict:
    """Measure training throughput of our loop and of plain ``model.fit``, one after the other.

    Each variant runs in a fresh Python process (so its peak memory is its own) started by this
    one; they run in turn, so ratios compare like with like on a shared machine.

    Parameters
    ----------
    steps : int
        Timed steps per variant (one more runs first to trace the graph).
    batch : int
        Okay patches per step; ``2 * batch`` patches go through the network per step.
    variants : sequence of str
        See the module docstring.
    repeats : {1, 2}
        2 runs the variants in order and then in reverse order and keeps each one's best.
    timeout_s : float
        Limit per variant run.
    progress : callable, optional
        ``progress(done, total, name, samples_per_s_or_None)`` after each variant run.

    Without bfloat16 instructions and without a GPU, ``auto`` precision is float32, so
    ``loop_f32`` would time ``loop`` again and ``fit_bf16`` an emulated bfloat16 that no training
    here uses (many times slower): both are skipped, with the reason under ``skipped``.

    Returns
    -------
    dict
        ``samples_per_s`` (best run) and ``peak_rss_mb`` {variant: value}, ``runs`` {variant:
        every run's samples/s}, ``ratio_loop_vs_fit``
        (loop / fit_f32), ``ratio_bf16_vs_f32`` (loop / loop_f32), ``skipped`` {variant: reason},
        ``batch``, ``steps``, ``bf16_cpu``, ``device``, ``cpu_count``.
    """
    import json
    import os
    import subprocess
    import sys

    from core.training import cpu_has_bf16, device_name, resolve_precision

    if steps < 2:
        raise ValueError(f"steps must be >= 2 to time anything, got {steps}")
    known = _variants(steps, batch)
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(known)}")
    result = {"samples_per_s": {}, "peak_rss_mb": {}, "runs": {}, "skipped": {}}
    if resolve_precision("auto") is None:  # float32: no bfloat16 instructions, no GPU
        why = {"loop_f32": "the same as loop here (auto precision is float32: no bfloat16 instructions, no GPU)",
               "fit_bf16": "bfloat16 would be emulated here (no bfloat16 instructions, no GPU)"}
        result["skipped"].update({v: why[v] for v in variants if v in why})
        variants = [v for v in variants if v not in why]
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(root))
    # forward then backward order, best of the runs: load from other processes on a shared
    # machine only ever slows a run down, and the ordering effect cancels
    order = list(variants) + list(variants)[::-1] * (repeats > 1)
    for done, name in enumerate(order, 1):
        cmd = [sys.executable, "-m", "core.training_bench", "--variant", name, str(steps), str(batch)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=root)
        except subprocess.TimeoutExpired:
            result["skipped"][name] = f"longer than {timeout_s:.0f} s"
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            result["skipped"][name] = f"failed: {tail}"
            continue
        one = json.loads(lines[-1])
        if progress is not None:
            progress(done, len(order), name, one["samples_per_s"])
        result["runs"].setdefault(name, []).append(one["samples_per_s"])
        result["samples_per_s"][name] = max(result["runs"][name])
        result["peak_rss_mb"][name] = max(one["peak_rss_mb"], result["peak_rss_mb"].get(name, 0.0))
    sps = result["samples_per_s"]
    if "loop" in sps and "fit_f32" in sps:
        result["ratio_loop_vs_fit"] = round(sps["loop"] / sps["fit_f32"], 3)
    if "loop" in sps and "loop_f32" in sps:
        result["ratio_bf16_vs_f32"] = round(sps["loop"] / sps["loop_f32"], 3)
    result.update(batch=batch, steps=steps, bf16_cpu=cpu_has_bf16(), device=device_name(),
                  cpu_count=os.cpu_count())
    return result


def _main(argv=None) -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m core.training_bench")
    p.add_argument("steps", type=int, nargs="?", default=10)
    p.add_argument("batch", type=int, nargs="?", default=32)
    p.add_argument("--variant", help="run only this variant in this process")
    p.add_argument("--repeats", type=int, default=2, choices=(1, 2))
    p.add_argument("--variants", help="comma-separated variants (default: %s)" % ",".join(DEFAULT_VARIANTS))
    a = p.parse_args(argv)
    if a.variant:
        print(json.dumps(run_variant(a.variant, steps=a.steps, batch=a.batch)))
        return
    variants = a.variants.split(",") if a.variants else DEFAULT_VARIANTS
    print(json.dumps(benchmark_training(steps=a.steps, batch=a.batch, variants=variants, repeats=a.repeats), indent=2))


if __name__ == "__main__":
    _main()
