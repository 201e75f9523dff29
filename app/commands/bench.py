"""``weldreview bench``: performance figures as JSON (``bench scan``, ``bench train``,
``bench retrain``).

``bench scan`` times the whole-radiograph scan of an 800 x 4900 16-bit TIFF end to end (read,
model, kernel analysis, regions; median of several runs after one warm-up), and in the same run the
plain alternative: 192 px patches at 156 px stride through ``keras.Model.predict``, stitched and
analysed the same way. It then measures the peak resident memory of a 30000 x 3000 scan in a
subprocess (``resource.getrusage``). Without a trained model a randomly initialised one is used,
with thresholds set at the 99.99th percentile of its own maps so flags stay sparse as at a real
operating point; the timings do not depend on the weights.

``bench retrain`` times a retraining from a few hundred verdicts (issue 9: within 10 minutes on
2 CPU cores) on a review database it builds from generated radiographs (core.retrain_bench).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench",
                              help="print performance figures as JSON (scan, train, retrain)")
    sub = p.add_subparsers(dest="bench", metavar="WHAT")
    s = sub.add_parser("scan", help="whole-radiograph scan speed and memory")
    s.add_argument("--model", metavar="FILE", help="model file (default: the bundled one, else random)")
    s.add_argument("--runs", type=int, default=5, help="timed runs per method (median reported)")
    s.add_argument("--threads", type=int, default=2, help="CPU threads for TensorFlow")
    s.add_argument("--tile", type=int, default=None, help="tile side in px (default: scanning.TILE)")
    s.add_argument("--shape", type=int, nargs=2, default=(800, 4900), metavar=("ROWS", "COLS"))
    s.add_argument("--memory-shape", type=int, nargs=2, default=(30000, 3000),
                   metavar=("ROWS", "COLS"))
    s.add_argument("--no-memory", action="store_true", help="skip the large-image memory check")
    s.add_argument("--no-baseline", action="store_true", help="skip the patch-by-patch baseline")
    t = sub.add_parser("train", help="training throughput (core.training_bench)")
    t.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    t.add_argument("--batch", type=int, default=None, help="okay patches per step")
    t.add_argument("--repeats", type=int, default=None, choices=(1, 2))
    t.add_argument("--variants", help="comma-separated variants to time (default: "
                   "loop,loop_joint,loop_f32,fit_f32,fit_bf16,loop_pipeline; also loop_xla)")
    _add_retrain_parser(sub)
    p.set_defaults(func=run)


def _add_retrain_parser(sub) -> None:
    r = sub.add_parser("retrain", help="retraining from verdicts (core.retrain_bench)",
                       description="Build a review database from generated radiographs with "
                       "VERDICTS verdicts, run the retraining of `weldreview retrain "
                       "--from-verdicts` with its defaults and the qualification, print the "
                       "timings as JSON. The options after --model change the defaults of the "
                       "normal flow: for quick checks only.")
    r.add_argument("--verdicts", type=int, default=300, help="verdicts on training radiographs")
    r.add_argument("--mix", default=None, metavar="D,F,M",
                   help="fractions of confirmed defects, false alarms, missed indications "
                        "(default 0.35,0.45,0.2)")
    r.add_argument("--threads", type=int, default=2, help="CPU threads for TensorFlow")
    r.add_argument("--shape", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="generated radiographs' size (default 800 2400)")
    r.add_argument("--defects", type=int, default=None, help="defects per radiograph (default 5)")
    r.add_argument("--holdback", type=int, default=None,
                   help="held-back radiographs, reviewed in full (default 2)")
    r.add_argument("--seed", type=int, default=0, help="seed of the generated radiographs")
    r.add_argument("--keep", metavar="DIR", help="build in DIR (new or empty) and keep it")
    r.add_argument("--model", metavar="FILE", help="the active model (default: the bundled one)")
    r.add_argument("--budget", type=float, default=None, metavar="MIN",
                   help="training minutes (default: core.retraining's)")
    r.add_argument("--steps", type=int, default=None, help="optimiser steps at most")
    r.add_argument("--batch", type=int, default=None, help="okay patches per step")
    r.add_argument("--fpr", type=float, default=None, help="calibration target")
    r.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="held-back okay patches to calibrate on (at least 3 / FPR)")
    r.add_argument("--no-qualify", action="store_true", help="skip the qualification")
    r.add_argument("--qualify-okay", type=int, default=None, metavar="N",
                   help="held-back okay patches of the qualification (default 1000)")
    r.add_argument("--qualify-synthetic", type=int, default=None, metavar="N",
                   help="patches per synthetic anomaly type of the qualification (default 100)")


def run(args) -> int:
    if getattr(args, "bench", None) == "scan":
        return _bench_scan(args)
    if getattr(args, "bench", None) == "train":
        try:
            from core.training_bench import benchmark_training
        except ImportError:
            print("weldreview bench train: the training benchmark (core.training_bench) is not "
                  "available in this build", file=sys.stderr)
            return 1
        options = {k: getattr(args, k) for k in ("steps", "batch", "repeats")
                   if getattr(args, k) is not None}
        if args.variants:
            options["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]

        def say(done, total, name, sps):
            print(f"bench train: {done}/{total} {name}: {sps:.1f} samples/s", file=sys.stderr, flush=True)

        try:
            result = benchmark_training(**options, progress=say)
        except ValueError as exc:
            print(f"weldreview bench train: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2, default=str))
        return 0
    if getattr(args, "bench", None) == "retrain":
        return _bench_retrain(args)
    print("usage: weldreview bench {scan,train,retrain} [options]  (see weldreview bench scan --help)",
          file=sys.stderr)
    return 1


def _limit_threads(n: int) -> dict:
    """Use ``n`` CPUs (affinity) and ``n`` TensorFlow threads; return what is in effect.

    TensorFlow's thread counts cannot change once its runtime started (earlier work in this
    process): they are then left as they are, and the figures returned say so.
    """
    import tensorflow as tf

    try:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    except (AttributeError, OSError):
        pass
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        note = None
    except RuntimeError as exc:
        note = f"TensorFlow threads left as they were: {exc}"
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"threads_requested": n, "cpus_usable": cpus,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "note": note}


def _bundle(model_arg: str | None):
    """(bundle, description); a random model when no file is given and none is bundled."""
    from core.modelfile import ModelBundle, load_model
    from core.paths import default_model_path

    path = Path(model_arg) if model_arg else default_model_path()
    if path.exists():
        return load_model(path), str(path)
    from core.model import build_autoencoder

    return ModelBundle(model=build_autoencoder(seed=0), metadata={"sha256": "random"}), \
        "randomly initialised (no model file)"


def _test_image(shape, path: Path, *, realistic: bool = True) -> str:
    """A 16-bit weld radiograph written as TIFF with its pixel size; returns what it is.

    ``realistic`` uses core.synthetic (bead, defects, markers); otherwise (and as a fallback) a
    plain bead profile with noise, made in blocks so the process stays small.
    """
    import numpy as np
    import tifffile

    if realistic:
        try:
            from core.synthetic import generate_weld, write_radiograph

            write_radiograph(path, generate_weld(0, shape=tuple(shape)))
            return "core.synthetic.generate_weld(0)"
        except Exception:  # noqa: BLE001 - fall back to a plain synthetic image
            pass
    rng = np.random.default_rng(0)
    rows = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    img = np.empty(shape, np.uint16)
    for c0 in range(0, shape[1], 1000):  # in blocks, so the memory check's parent stays small
        block = 20000 + 15000 * np.exp(-(rows / 0.4) ** 2) + 300 * rng.standard_normal(
            (shape[0], min(1000, shape[1] - c0)), dtype=np.float32)
        img[:, c0:c0 + block.shape[1]] = np.clip(np.rint(block), 0, 65535)
    tifffile.imwrite(path, img, resolution=(250.0, 250.0), resolutionunit="CENTIMETER")
    return "bead profile + Gaussian noise (16 bit)"


def _predict_baseline(path: Path, bundle, thr):
    """Plain patch-by-patch inference (192 px at 156 px stride, Keras predict), same analysis."""
    import numpy as np

    from core.imageio import load_radiograph
    from core.model import APERTURE, OFFSET, PATCH
    from core.residual import flag_kernels, local_mean_std
    from core.scanning import find_regions

    rad = load_radiograph(path)
    img = rad.image
    rows, cols = img.shape

    def origins(n):
        out = list(range(0, n - PATCH + 1, APERTURE))
        if out[-1] != n - PATCH:
            out.append(n - PATCH)
        return out

    grid = [(r, c) for r in origins(rows) for c in origins(cols)]
    patches = np.stack([img[r:r + PATCH, c:c + PATCH] for r, c in grid])[..., None]
    recon_p = bundle.model.predict(patches, batch_size=32, verbose=0)[0][..., 0]
    recon = np.full(img.shape, np.nan, np.float32)
    for (r, c), p in zip(grid, recon_p):
        recon[r + OFFSET:r + OFFSET + APERTURE, c + OFFSET:c + OFFSET + APERTURE] = p
    mean, std = local_mean_std(img - recon)
    flags = flag_kernels(mean, std, thr.mean, thr.std)
    find_regions(flags, mean, std, thr, pixel_size_um=rad.pixel_size_um)
    return len(grid)


def _bench_scan(args) -> int:
    import numpy as np

    _limit_threads(args.threads)
    from core.calibration import Thresholds
    from core.imageio import load_radiograph
    from core.scanning import TILE, resolve_thresholds, scan_image

    tile = args.tile or TILE
    bundle, model_desc = _bundle(args.model)
    out: dict = {
        "machine": {"cpus_used": args.threads, "cpus_total": os.cpu_count(),
                    "note": "shared machine: compare the ratio within one run, not absolute times "
                            "across runs"},
        "model": model_desc, "image_shape": list(args.shape), "tile": tile,
    }
    with tempfile.TemporaryDirectory(prefix="weldreview-bench-") as tmp:
        path = Path(tmp) / "weld.tif"
        out["image"] = _test_image(args.shape, path)
        rad = load_radiograph(path)
        try:
            thr = resolve_thresholds(bundle)
            out["thresholds"] = "calibrated"
        except Exception:  # noqa: BLE001 - uncalibrated: sparse flags from the model's own maps
            warm = scan_image(rad, bundle, thresholds=Thresholds(1e9, 1e9, 0.001, 0, 0, (0, 1)),
                              tile=tile)
            thr = Thresholds(float(np.nanpercentile(np.abs(warm.local_mean), 99.99)),
                             float(np.nanpercentile(warm.local_std, 99.99)), 0.001, 0, 0.0, (0, 1))
            out["thresholds"] = "99.99th percentile of the model's own maps (uncalibrated)"
            del warm
        scan_image(rad, bundle, thresholds=thr, tile=tile)  # warm-up: traces the tf.function
        if not args.no_baseline:
            _predict_baseline(path, bundle, thr)  # warm-up
        # interleaved, so that load from other processes hits all methods alike; the scan with
        # its tile statistics computed after each tile instead of overlapped with the next
        # tile's model (scan_image(overlap=False)) shows what the overlap gains on this machine
        times, seq, base, breakdown = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            res = scan_image(load_radiograph(path), bundle, thresholds=thr, tile=tile)
            times.append(time.perf_counter() - t0)
            breakdown.append(res.timings)
            t0 = time.perf_counter()
            scan_image(load_radiograph(path), bundle, thresholds=thr, tile=tile, overlap=False)
            seq.append(time.perf_counter() - t0)
            if not args.no_baseline:
                t0 = time.perf_counter()
                n_patches = _predict_baseline(path, bundle, thr)
                base.append(time.perf_counter() - t0)
        med = float(np.median(times))
        out["scan_s"] = {"median": med, "min": min(times), "runs": times, "target_max": 1.2,
                         "breakdown_of_median_run": breakdown[int(np.argsort(times)[len(times) // 2])],
                         "regions": len(res.regions)}
        out["scan_sequential_analysis_s"] = {
            "median": float(np.median(seq)), "min": min(seq), "runs": seq,
            "median_of_paired_ratios_to_scan": float(np.median(np.array(seq) / np.array(times))),
        }
        if base:
            bmed = float(np.median(base))
            out["patch_predict_s"] = {"median": bmed, "min": min(base), "runs": base,
                                      "patches": n_patches}
            out["speedup_vs_patch_predict"] = {
                "ratio_of_medians": bmed / med,
                "median_of_paired_ratios": float(np.median(np.array(base) / np.array(times))),
                "ratio_of_minima": min(base) / min(times), "target_min": 1.5,
            }
        if not args.no_memory:
            out["memory"] = _memory_check(args, Path(tmp), thr, tile)
    print(json.dumps(out, indent=2))
    return 0


def _bench_retrain(args) -> int:
    """Run core.retrain_bench with the command's options and print its figures as JSON.

    Returns
    -------
    int
        0; 1 when the retraining refused (core's ValueError); 2 for bad options.
    """
    import platform

    threads = _limit_threads(args.threads)
    import tensorflow as tf

    from core import retrain_bench as rb

    try:
        mix = rb.MIX if args.mix is None else dict(zip(
            ("defect", "false_alarm", "missed"), (float(x) for x in args.mix.split(",")),
            strict=True))
    except ValueError:
        print("weldreview bench retrain: --mix takes three fractions, e.g. 0.35,0.45,0.2",
              file=sys.stderr)
        return 2
    options = dict(
        verdicts=args.verdicts, mix=mix, shape=tuple(args.shape or rb.SHAPE),
        defects=rb.DEFECTS if args.defects is None else args.defects,
        holdback=rb.HOLDBACK if args.holdback is None else args.holdback, seed=args.seed,
        model_path=args.model, budget_min=args.budget, steps=args.steps, batch=args.batch,
        fpr=args.fpr, n_calibration=args.calibration, qualify=not args.no_qualify,
        n_okay=args.qualify_okay, n_synthetic=args.qualify_synthetic,
    )
    machine = {"cpu_count": os.cpu_count(), **threads,
               "processor": platform.processor() or platform.machine(),
               "tensorflow": tf.__version__, "python": platform.python_version()}
    try:
        if args.keep:
            folder = Path(args.keep)
            if folder.exists() and any(folder.iterdir()):
                print(f"weldreview bench retrain: {folder} is not empty", file=sys.stderr)
                return 2
            out = rb.run(folder, **options)
        else:
            with tempfile.TemporaryDirectory(prefix="weldreview-bench-retrain-") as tmp:
                out = rb.run(Path(tmp), **options)
                out["folder"] = None
    except ValueError as exc:
        print(f"weldreview bench retrain: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"machine": machine, **out}, indent=2, default=str))
    return 0


_MEMORY_SCRIPT = r"""
import json, resource, sys, time
from app.commands.bench import _bundle, _limit_threads
_limit_threads(int(sys.argv[2]))
from core.calibration import Thresholds
from core.imageio import load_radiograph
from core.scanning import scan_image
bundle, _ = _bundle(sys.argv[3] or None)
thr = Thresholds(float(sys.argv[4]), float(sys.argv[5]), 0.001, 0, 0.0, (0.0, 1.0))
t0 = time.perf_counter()
res = scan_image(load_radiograph(sys.argv[1]), bundle, thresholds=thr, tile=int(sys.argv[6]))
dt = time.perf_counter() - t0
hwm = None
try:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 2**20
except OSError:
    pass
print(json.dumps({"scan_s": dt, "tiles": res.timings["tiles"], "regions": len(res.regions),
                  "flagged_fraction": float((res.flags > 0).mean()),
                  "peak_rss_gb": hwm, "getrusage_maxrss_gb":
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def _memory_check(args, tmp: Path, thr, tile: int) -> dict:
    big = tmp / "big.tif"
    kind = _test_image(args.memory_shape, big, realistic=False)
    cmd = [sys.executable, "-c", _MEMORY_SCRIPT, str(big), str(args.threads), args.model or "",
           repr(thr.mean), repr(thr.std), str(tile)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=str(Path(__file__).resolve().parents[2]))
    big.unlink()
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        shape=list(args.memory_shape), image=kind, target_max_gb=3.0,
        note="peak_rss_gb is the child's VmHWM; getrusage's ru_maxrss can carry the parent's peak "
             "over the fork/exec on Linux, so it is only an upper bound",
    )
    return result
