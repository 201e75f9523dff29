"""Training of the OOD autoencoder with perturbations drawn on the fly (Section 3.1 and 3.3).

Every step draws ``batch`` fresh okay patches and perturbs each of them with a perturbation from a
randomly chosen source (``x_per = x_ok + weight * delta``, Equation 2); the network runs on both
(``2 * batch`` patches per step) and Equations 1 to 5 (core.loss) are minimised with Adam. Nothing
augmented is ever stored: a ``tf.data`` pipeline wraps a Python generator that samples one batch at
a time and prefetches two batches while the cores compute the previous step.

Samples per second count patches through the network: ``2 * batch`` per step.

Speed and memory, measured with core.training_bench on the shared 2-core AVX512-BF16 machine
(other jobs running, so absolute figures vary two-fold between runs; compare within a run):

- ``mixed_bfloat16`` is 1.2-1.6 times float32 (loop 30.9 vs 19.6 patches/s in the best runs), so
  mixed precision is on by default where the CPU has bfloat16 instructions or a GPU is visible;
  the latent and the reconstruction stay float32.
- XLA ``jit_compile`` ran about ten times slower than without (1.8 vs 20 patches/s): not used.
- The 9 x 9 kernel means use two separable box convolutions: forward + backward 0.018 s instead
  of 0.25 s with ``avg_pool2d`` for 32 patches (core.loss.kernel_means).
- The clean and the perturbed pass are differentiated one after the other (``split_passes``):
  peak memory 1.35 GB instead of 1.94 GB at batch 32 (about 0.6 GB of it is TensorFlow itself).

Dead latent. ``z = min(relu(conv), 1)`` is zero everywhere when the latent convolution's
pre-activation is negative for every input; then no gradient reaches the encoder and the model
outputs a constant for ever. Measured at initialisation over seeds 0-29 on smooth weld-like
patches: 11 of 30 seeds dead with the Keras default zero bias, 3 of 30 with a 0.1 bias (seed 1 is
dead even on uniform noise). ``train`` therefore sets the latent bias from the first batch so that
the median pre-activation is 0.5 (``recentre_latent``), and whenever a step's latent is zero for
the whole batch it re-centres again and counts it (``dead_latent_resets`` in the metadata).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.loss import TERMS, LossWeights
from core.model import DROPOUT, FILTERS, PATCH

LATENT_TARGET = 0.5  # median latent pre-activation after re-centring
LATENT_SPREAD = 0.8  # widest 10-90 percentile spread of pre-activations after re-centring
LATENT_MIN_LIVE = 1e-4  # re-centre when (almost) no latent pixel lies strictly inside (0, 1)
VALIDATIONS = "validation.json"  # in a checkpoint: every validation so far
BEST_WEIGHTS = "best_weights.npz"  # in a checkpoint: the weights of the best one


class TrainingCancelled(Exception):
    """Raised by :func:`train` when ``cancel()`` returned True; the state is checkpointed."""

    def __init__(self, step: int, checkpoint: Path | None):
        where = f"; resume from {checkpoint}" if checkpoint else ""
        super().__init__(f"training cancelled at step {step}{where}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainConfig:
    """What to train and how.

    Attributes
    ----------
    steps : int
        Optimiser steps in total (a resumed run continues up to this number).
    batch : int
        Okay patches per step; as many perturbed copies are made, so ``2 * batch`` go through.
    lr : float
        Adam learning rate after warm-up.
    warmup_steps : int
        Linear learning-rate warm-up from ``lr / warmup_steps`` to ``lr``; 0 for none.
    seed : int
        Seeds the weights, dropout and the perturbation draws (step ``k`` uses ``[seed, k]``).
    filters, dropout : model shape (core.model).
    weights : LossWeights
        Loss weights (``LossWeights.default()`` or ``.paper()``).
    mixed_precision : {"auto", "bfloat16", "off"}
        ``auto`` uses bfloat16 where the CPU has AVX512-BF16/AMX or a GPU is visible.
    out : Path, optional
        The ``.keras`` file to write at the end (default: the user's models directory).
    checkpoint_dir : Path, optional
        Where checkpoints go (default: ``<out>.ckpt/``).
    checkpoint_every : int
        Steps between checkpoints (also written at the end and on cancel).
    budget_s : float, optional
        Stop once training has run this many seconds in total, resumed sessions included
        (the model is saved as it is; ``stopped_by_budget`` in the metadata).
    images, perturbations : list of str
        Provenance: which radiographs and which perturbation sets were used.
    parent : str, optional
        sha256 of the model this one was trained from, if any.
    name : str, optional
        Display name stored in the metadata.
    overwrite : bool
        Replace an existing ``out``.
    split_passes : bool
        Differentiate the clean and the perturbed pass one after the other and add the gradients
        (same result, about half the activation memory; see core.training_bench).
    background_sigma : float, optional
        The model's input is ``core.normalise.remove_background(image, sigma)`` of the whole
        radiograph; recorded in the saved metadata (``metadata["input"]``) so that calibration
        and scanning normalise the same way. ``train`` receives patch samplers, not images: the
        caller gives it patches (and perturbations) cut from the normalised radiographs. None
        (default): the radiograph as it is.
    background_method : str
        The background estimate with ``background_sigma`` (``core.normalise.METHODS``).
    gain : float
        Input gain of the network (``core.model``, "Input gain"); 1 is the paper's network. The
        reconstruction terms are in grey levels, the latent in the network's units, so L_reg's
        weight is divided by ``gain**2``: the run is then the same as one on ``gain``-times larger
        patches and perturbations with the weights as given.
    validate_every : int, optional
        With ``train(validation=...)``: steps between validations (also at the end). The model
        saved is the state with the best validation score, not necessarily the last.
    """

    steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 0
    seed: int = 0
    filters: tuple[int, int] = FILTERS
    dropout: float = DROPOUT
    weights: LossWeights = field(default_factory=LossWeights.default)
    mixed_precision: str = "auto"
    out: Path | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 100
    budget_s: float | None = None
    images: list[str] = field(default_factory=list)
    perturbations: list[str] = field(default_factory=list)
    parent: str | None = None
    name: str | None = None
    overwrite: bool = False
    split_passes: bool = True
    background_sigma: float | None = None
    background_method: str = "gaussian"
    gain: float = 1.0
    validate_every: int | None = None

    def __post_init__(self):
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"steps and batch must be >= 1, got steps={self.steps}, batch={self.batch}")
        if self.validate_every is not None and self.validate_every < 1:
            raise ValueError(f"validate_every must be >= 1 step, got {self.validate_every}")
        if self.mixed_precision not in ("auto", "bfloat16", "off"):
            raise ValueError(f"mixed_precision must be 'auto', 'bfloat16' or 'off', not {self.mixed_precision!r}")
        if self.background_sigma is not None:
            self.background_sigma = float(self.background_sigma)
            if not self.background_sigma > 0:
                raise ValueError(f"background_sigma must be positive, got {self.background_sigma}")
        from core.normalise import METHODS

        if self.background_method not in METHODS:
            raise ValueError(f"background_method must be one of {', '.join(METHODS)}, "
                             f"not {self.background_method!r}")
        self.gain = float(self.gain)
        if not self.gain > 0:
            raise ValueError(f"gain must be positive, got {self.gain}")
        if self.out is not None:
            self.out = Path(self.out)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = self.weights.to_dict()
        d["out"] = str(self.out) if self.out else None
        d["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir else None
        d["filters"] = list(self.filters)
        return d


# ---------------------------------------------------------------- devices and precision


def cpu_has_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16 instructions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(mode: str) -> str | None:
    """Keras dtype policy for ``mode`` (None: float32)."""
    if mode == "off":
        return None
    if mode == "bfloat16":
        return "mixed_bfloat16"
    import tensorflow as tf

    return "mixed_bfloat16" if (tf.config.list_physical_devices("GPU") or cpu_has_bf16()) else None


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else f"CPU ({os.cpu_count()} cores)"


# ---------------------------------------------------------------- data


def _okay_caller(okay_sampler):
    """Normalise ``okay_sampler`` to ``f(rng, n)``.

    Accepts ``f(rng, n)``, ``f(n, *, rng=None)`` (PatchSampler.okay: called with the step's
    generator, so draws are reproducible) or ``f(n)``.
    """
    try:
        params = inspect.signature(okay_sampler).parameters
    except (TypeError, ValueError):
        return okay_sampler
    required = [
        p for p in params.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) >= 2:
        return okay_sampler
    if "rng" in params:
        return lambda rng, n: okay_sampler(n, rng=rng)
    return lambda rng, n: okay_sampler(n)


def draw_batch(okay, sources, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` okay patches and a perturbed copy of each.

    Parameters
    ----------
    okay : callable
        ``okay(rng, n) -> ndarray (n, 192, 192)`` float32.
    sources : sequence
        Perturbation sources with ``.sample(rng, k) -> (delta, weight)``; each perturbed patch
        takes its perturbation from a source chosen uniformly at random.
    rng : numpy.random.Generator
    n : int

    Returns
    -------
    x_ok, x_per : ndarray of shape (n, 192, 192, 1), float32
    """
    x_ok = np.asarray(okay(rng, n), dtype=np.float32).reshape(n, PATCH, PATCH)
    delta = np.zeros_like(x_ok)
    weight = np.zeros_like(x_ok)
    if sources:
        counts = rng.multinomial(n, [1.0 / len(sources)] * len(sources))
        order = rng.permutation(n)
        start = 0
        for src, k in zip(sources, counts):
            if k == 0:
                continue
            d, w = src.sample(rng, int(k))
            idx = order[start : start + k]
            delta[idx] = np.asarray(d, dtype=np.float32).reshape(k, PATCH, PATCH)
            weight[idx] = np.asarray(w, dtype=np.float32).reshape(k, PATCH, PATCH)
            start += k
    x_per = x_ok + weight * delta
    return x_ok[..., None], x_per[..., None]


def make_dataset(okay_sampler, perturbation_sources, *, batch: int, seed: int, start: int, stop: int):
    """``tf.data.Dataset`` of ``(x_ok, x_per)`` batches for steps ``start .. stop - 1``.

    Step ``k`` draws with ``numpy.random.default_rng([seed, k])``, so a resumed run sees the same
    perturbation draws it would have seen without the interruption (an okay sampler with its own
    generator, such as PatchSampler.okay, follows its own sequence).
    """
    import tensorflow as tf

    okay = _okay_caller(okay_sampler)
    sources = list(perturbation_sources)

    def gen():
        for k in range(start, stop):
            yield draw_batch(okay, sources, np.random.default_rng([seed, k]), batch)

    spec = tf.TensorSpec((batch, PATCH, PATCH, 1), tf.float32)
    return tf.data.Dataset.from_generator(gen, output_signature=(spec, spec)).prefetch(2)


# ---------------------------------------------------------------- model helpers


def recentre_latent(model, x, *, target: float = LATENT_TARGET, spread: float = LATENT_SPREAD) -> float:
    """Put the latent convolution's pre-activations on ``x`` back into the bounded ReLU's live range.

    The bias is shifted so that the median pre-activation is ``target``; when the 10-90 percentile
    spread is wider than ``spread`` the kernel is scaled down so that it fits. Then most latent
    pixels lie inside (0, 1), where gradients flow. Returns the shift applied. Used at the start of
    training and whenever the latent has died (z = 0 everywhere) or saturated (z = 1 everywhere).
    """
    import keras

    layer = model.get_layer("latent_conv")
    pre = np.asarray(keras.Model(model.input, layer.output)(x, training=False), dtype=np.float32)
    kernel, bias = layer.get_weights()
    lo, median, hi = np.percentile(pre - bias, [10, 50, 90])
    scale = min(1.0, spread / max(hi - lo, 1e-12))
    new_bias = np.full_like(bias, target - scale * median)
    layer.set_weights([kernel * scale, new_bias])
    return float(new_bias[0] - bias[0])


def init_output_bias(model, x) -> None:
    """Start the reconstruction at the mean grey level of ``x``, so that the decoder need not push
    the bounded latent to its upper bound to reach the bright weld (seen: z = 1 everywhere after
    100 steps, a constant output)."""
    from core.model import GAIN_CENTRE, model_gain

    layer = model.get_layer("reconstruction")  # before the output gain: in the network's units
    kernel, bias = layer.get_weights()
    level = GAIN_CENTRE + model_gain(model) * (float(np.mean(x)) - GAIN_CENTRE)
    layer.set_weights([kernel, np.full_like(bias, level)])


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate at (0-based) ``step``: linear warm-up, then constant."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def _default_out(config: TrainConfig) -> Path:
    from core.paths import models_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return models_dir() / f"model-{stamp}-seed{config.seed}.keras"


def _live_fraction(z):
    import tensorflow as tf

    z = tf.cast(z, tf.float32)
    return tf.reduce_mean(tf.cast((z > 0.0) & (z < 1.0), tf.float32))


class _Trainer:
    """Model, optimiser, checkpoint and the compiled train step of one run."""

    def __init__(self, config: TrainConfig):
        import keras
        import tensorflow as tf

        from core.model import build_autoencoder

        self.config = config
        self.policy = resolve_precision(config.mixed_precision)
        self.model = build_autoencoder(
            filters=tuple(config.filters), dropout=config.dropout, seed=config.seed, dtype_policy=self.policy,
            gain=config.gain,
        )
        self.optimizer = keras.optimizers.Adam(learning_rate=config.lr)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.resets = tf.Variable(0, dtype=tf.int64, trainable=False, name="dead_latent_resets")
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_s")
        self.validations: list[dict] = []  # train(validation=...): one record per validation
        self.best_weights = None  # the weights of the best-scoring validation
        # Dropout draws from per-layer seed generators: checkpoint their states so a resumed run
        # continues the very same dropout masks.
        seeds = tf.Module()
        for layer in self.model.layers:
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                setattr(seeds, layer.name, generator.state.value)
        self.ckpt = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, resets=self.resets, elapsed=self.elapsed,
            dropout_seeds=seeds,
        )
        weights = config.weights
        if config.gain != 1.0:  # L_reg in the network's units (TrainConfig.gain)
            from dataclasses import replace

            weights = replace(weights, reg=weights.reg / config.gain**2)
        model, optimizer = self.model, self.optimizer
        variables = model.trainable_variables

        from core.loss import crop_target, ood_loss_terms, pass_terms

        @tf.function(reduce_retracing=True)
        def joint_step(x_ok, x_per):
            n = tf.shape(x_ok)[0]
            with tf.GradientTape() as tape:
                r, z = model(tf.concat([x_ok, x_per], 0), training=True)
                terms = ood_loss_terms(crop_target(x_ok), r[:n], r[n:], z[:n], z[n:], weights)
            grads = tape.gradient(terms["total"], variables)
            optimizer.apply_gradients(zip(grads, variables))
            terms["z_max"] = tf.reduce_max(tf.cast(z, tf.float32))
            terms["z_live"] = _live_fraction(z)
            return terms

        @tf.function(reduce_retracing=True)
        def split_step(x_ok, x_per):
            target = crop_target(x_ok)
            out, grads, z_max, z_live = {}, None, [], []
            for which, x in (("ok", x_ok), ("per", x_per)):
                # the second pass starts only once the first one's gradients exist, so the two
                # passes' activations are never held at the same time
                with tf.control_dependencies(grads or []), tf.GradientTape() as tape:
                    r, z = model(tf.identity(x), training=True)
                    t = pass_terms(target, r, z, weights, which=which)
                g = tape.gradient(t["total"], variables)
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
                out[which], out[f"kern_{which}"] = t["pixel"], t["kern"]
                out[f"reg_{which}"] = t["reg"]
                z_max.append(tf.reduce_max(tf.cast(z, tf.float32)))
                z_live.append(_live_fraction(z))
            optimizer.apply_gradients(zip(grads, variables))
            terms = {k: out[k] for k in ("ok", "per", "kern_ok", "kern_per")}
            terms["reg"] = out["reg_ok"] + out["reg_per"]
            terms["total"] = tf.add_n([terms[k] for k in TERMS])
            terms["z_max"] = tf.maximum(z_max[0], z_max[1])
            terms["z_live"] = 0.5 * (z_live[0] + z_live[1])
            return terms

        train_step = split_step if config.split_passes else joint_step
        self.train_step = train_step

    def save_checkpoint(self, directory: Path) -> Path:
        """Write the checkpoint so that a power cut at any moment leaves a complete one.

        The state goes to ``<dir>.new`` first; the old checkpoint is moved aside and the new one
        renamed into place (:func:`checkpoint_to_read` finds the complete one after a crash).
        """
        import shutil

        fresh = directory.with_name(directory.name + ".new")
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        (fresh / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2), encoding="utf-8")
        self.ckpt.write(str(fresh / "state"))
        if self.validations:  # the best state so far travels with the checkpoint
            (fresh / VALIDATIONS).write_text(json.dumps(self.validations, indent=1), encoding="utf-8")
            np.savez(fresh / BEST_WEIGHTS, *self.best_weights)
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            os.replace(directory, old)
        os.replace(fresh, directory)
        shutil.rmtree(old, ignore_errors=True)
        return directory

    def restore(self, directory: Path) -> None:
        directory = checkpoint_to_read(directory)
        if not (directory / "state.index").is_file():
            from core.errors import ModelFileError

            raise ModelFileError(f"{directory}: no training checkpoint there to resume from")
        saved = checkpoint_config(directory)
        if list(saved["filters"]) != list(self.config.filters):
            from core.errors import ModelFileError

            raise ModelFileError(
                f"{directory}: checkpoint has filters {saved['filters']}, this run {list(self.config.filters)}"
            )
        if saved.get("background_sigma") != self.config.background_sigma or (
                self.config.background_sigma is not None
                and saved.get("background_method", "gaussian") != self.config.background_method):
            from core.errors import ModelFileError

            def said(sigma, method):
                return ("no background removal" if sigma is None
                        else f"background sigma {sigma:g} px ({method})")

            raise ModelFileError(
                f"{directory}: checkpoint was trained with "
                f"{said(saved.get('background_sigma'), saved.get('background_method', 'gaussian'))}, "
                f"this run asks for {said(self.config.background_sigma, self.config.background_method)}; "
                "resume with the same --background and --background-method"
            )
        if float(saved.get("gain", 1.0)) != self.config.gain:
            from core.errors import ModelFileError

            raise ModelFileError(f"{directory}: checkpoint was trained with input gain "
                                 f"{float(saved.get('gain', 1.0)):g}, this run asks for "
                                 f"{self.config.gain:g}; resume with the same --gain")
        self.ckpt.read(str(directory / "state")).assert_existing_objects_matched()
        if (directory / VALIDATIONS).is_file() and (directory / BEST_WEIGHTS).is_file():
            self.validations = json.loads((directory / VALIDATIONS).read_text(encoding="utf-8"))
            with np.load(directory / BEST_WEIGHTS) as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def validate(self, validation, step: int) -> dict:
        """Run ``validation(model)``, record it, and keep the weights if it is the best so far
        (ties go to the later state, which has trained longer)."""
        t0 = time.perf_counter()
        result = validation(self.model)
        record = {"step": step, "elapsed_s": round(float(self.elapsed.numpy()), 2), **result,
                  "seconds": round(time.perf_counter() - t0, 2)}
        self.validations.append(record)
        if best_validation(self.validations) is record:
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        return record


def _validation_progress(records) -> dict:
    if not records:
        return {}
    return {"validation": records[-1], "best_validation": best_validation(records)}


def best_validation(records) -> dict | None:
    """The record with the best score (the latest of equal ones), or None."""
    best = None
    for record in records:
        if best is None or record["score"] >= best["score"]:
            best = record
    return best


def checkpoint_to_read(directory) -> Path:
    """The complete checkpoint for ``directory``: itself, or what a crash while saving left.

    A save writes ``<dir>.new`` fully, moves ``<dir>`` to ``<dir>.old``, then renames ``.new``
    into place; interrupted between the two renames only ``.new`` (complete) and ``.old`` exist.
    """
    directory = Path(directory)
    if (directory / "state.index").is_file():
        return directory
    for name in (directory.name + ".new", directory.name + ".old"):
        candidate = directory.with_name(name)
        if (candidate / "state.index").is_file() and (candidate / "config.json").is_file():
            return candidate
    return directory


def checkpoint_config(directory) -> dict:
    """The ``TrainConfig`` (as a dict) a checkpoint was written with; ``directory`` as given to
    ``resume_from`` (the complete one is read, see :func:`checkpoint_to_read`). Raises OSError or
    ValueError when there is none or it cannot be read."""
    path = checkpoint_to_read(Path(directory)) / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def explained_variance(model, x_ok) -> float:
    """Share of the okay patches' variance (about each patch's mean) that the model reproduces.

    ``1 - var(target - reconstruction) / var(target - patch mean)`` over the aperture of ``x_ok``
    (B, 192, 192, 1), in inference mode. About 0 (or below) for a model that outputs a constant.
    """
    from core.loss import crop_target

    target = np.asarray(crop_target(x_ok), dtype=np.float64)
    recon = np.asarray(model(x_ok, training=False)[0], dtype=np.float64)
    spread = np.mean((target - target.mean(axis=(1, 2, 3), keepdims=True)) ** 2)
    resid = target - recon
    resid = np.mean((resid - resid.mean(axis=(1, 2, 3), keepdims=True)) ** 2)
    return round(float(1.0 - resid / max(spread, 1e-20)), 4)


def latent_warning(training: dict) -> str | None:
    """A warning when a run ended with a model that outputs (nearly) a constant, else None.

    Two signs, from ``metadata["training"]``: the latent kept dying (re-centred in more than 5 %
    of the steps; re-centring revives a latent that died once), or the model reproduces less than
    5 % of its last okay batch's variance (``explained_variance``; a latent that is alive in a few
    pixels only escapes the re-centring). Both were measured for background-removed radiographs:
    without input gain (core.model, "Input gain"), and with signed SNI even with it.
    """
    resets, steps = int(training.get("dead_latent_resets") or 0), int(training.get("steps") or 0)
    explained = training.get("explained_variance")
    if resets > max(3, 0.05 * steps):
        sign = f"the latent died and was re-centred {resets} times in {steps} steps"
    elif explained is not None and explained < 0.05:
        sign = f"the model reproduces {max(0.0, 100 * explained):.0f} % of its okay patches' variance"
    else:
        return None
    return (f"{sign}: the model is likely to output a constant, so its residual is the input itself. "
            "For background-removed radiographs keep the input gain (--gain 8, core.model 'Input "
            "gain') and unsigned SNI.")


def _checkpoint_dir(config: TrainConfig, out: Path) -> Path:
    return config.checkpoint_dir or out.with_suffix(".ckpt")


def _initial_weights(init_weights, config: TrainConfig):
    """The model whose weights start a fine-tune, and how the metadata names it.

    ``init_weights`` is a Keras autoencoder or the path of a weldreview ``.keras`` model file
    (read with ``core.modelfile.load_model``, which checks its hash and shape).
    """
    from core.model import model_filters

    if isinstance(init_weights, (str, os.PathLike)):
        from core.modelfile import load_model

        bundle = load_model(init_weights)
        model, source = bundle.model, f"{Path(init_weights)} (sha256 {bundle.sha256[:12]})"
    else:
        model, source = init_weights, f"model {getattr(init_weights, 'name', '?')}"
    try:
        filters = list(model_filters(model))
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"init_weights: {source} is not a weldreview autoencoder ({exc})") from None
    if filters != list(config.filters):
        raise ValueError(f"init_weights: {source} has filters {filters}, this run "
                         f"{list(config.filters)}")
    from core.model import model_gain

    if model_gain(model) != config.gain:
        raise ValueError(f"init_weights: {source} has input gain {model_gain(model):g}, this run "
                         f"{config.gain:g}")
    return model, source


def train(config: TrainConfig, okay_sampler, perturbation_sources, *, progress=None, cancel=None,
          resume_from=None, init_weights=None, validation=None):
    """Train the autoencoder and save it with its provenance.

    Parameters
    ----------
    config : TrainConfig
    okay_sampler : callable
        ``okay_sampler(rng, n)`` or ``okay_sampler(n)`` -> ndarray (n, 192, 192) float32 in [0, 1],
        okay patches (e.g. ``PatchSampler.okay``).
    perturbation_sources : sequence
        Objects with ``.sample(rng, n) -> (delta, weight)``, both (n, 192, 192) float32.
    progress : callable, optional
        Called after every step with a dict: ``step`` (1-based, counting resumed steps),
        ``steps``, the five loss terms and ``total``, ``z_max``, ``lr``, ``samples_per_s``
        (patches through the network per second, over the last 10 steps), ``elapsed_s``.
    cancel : callable, optional
        Checked before every step; when it returns True the state is checkpointed and
        :class:`TrainingCancelled` is raised.
    resume_from : path-like, optional
        A checkpoint directory (``<out>.ckpt``) of an earlier run with the same model shape:
        weights, optimiser state, step count and elapsed time continue from it.
    init_weights : keras.Model or path-like, optional
        Fine-tune: a model of the same shape, or the path of a weldreview ``.keras`` model file,
        whose weights the training starts from (copied; the given model is not changed). The
        optimiser starts fresh at step 0, and the latent and output biases are not set from
        the first batch (they are trained already). Recorded as ``init_weights`` in the
        metadata (the file and its sha256, or the model's name). Not with ``resume_from``,
        which restores the weights itself.
    validation : callable, optional
        ``validation(model) -> dict`` with a ``score`` (the higher the better; e.g.
        ``functools.partial(core.validation.validate, vset=...)``), called every
        ``config.validate_every`` steps and at the end. The saved model is the state with the best
        score; the checkpoint keeps the last state (``--resume`` continues training from it) and
        the best weights so far. Every record is in the metadata (``training.validation``), and
        progress dicts carry the latest (``validation``) and the best (``best_validation``). Its
        time counts towards ``config.budget_s``.

    Returns
    -------
    core.modelfile.ModelBundle
        The trained model, saved to ``config.out``.

    Raises
    ------
    ValueError
        ``init_weights`` has another shape than ``config.filters``, is not an autoencoder, or
        comes with ``resume_from``.
    """
    from core.modelfile import load_model, save_model

    out = config.out or _default_out(config)
    if out.exists() and not config.overwrite:
        from core.errors import ModelFileError

        raise ModelFileError(f"{out}: exists; choose another output file or allow overwriting")
    if init_weights is not None and resume_from is not None:
        raise ValueError("init_weights and resume_from exclude each other: a resumed run has "
                         "its weights in the checkpoint")
    init_source = None
    if init_weights is not None:
        init_model, init_source = _initial_weights(init_weights, config)
    ckpt_dir = _checkpoint_dir(config, out)
    trainer = _Trainer(config)
    if resume_from is not None:
        trainer.restore(Path(resume_from))
    if init_weights is not None:
        trainer.model.set_weights(init_model.get_weights())
    start = int(trainer.step.numpy())
    dataset = make_dataset(
        okay_sampler, perturbation_sources, batch=config.batch, seed=config.seed, start=start, stop=config.steps
    )
    if start == 0 and init_weights is None:
        rng = np.random.default_rng([config.seed, 2**32 - 1])
        first, _ = draw_batch(_okay_caller(okay_sampler), [], rng, config.batch)
        recentre_latent(trainer.model, first)
        init_output_bias(trainer.model, first)

    last = {}
    times: list[float] = []  # wall time per step, input pipeline included
    t_start = time.perf_counter()
    elapsed0 = float(trainer.elapsed.numpy())
    stopped = False
    step = start
    t_prev = t_start
    x_ok = None
    for x_ok, x_per in dataset:
        if cancel is not None and cancel():
            trainer.elapsed.assign(elapsed0 + time.perf_counter() - t_start)
            raise TrainingCancelled(step, trainer.save_checkpoint(ckpt_dir))
        lr = learning_rate(config, step)
        trainer.optimizer.learning_rate.assign(lr)
        terms = trainer.train_step(x_ok, x_per)
        last = {k: float(v) for k, v in terms.items()}
        step += 1
        trainer.step.assign(step)
        if not math.isfinite(last["total"]):
            raise FloatingPointError(
                f"training diverged at step {step} (loss {last['total']}); lower the learning rate"
            )
        if last["z_live"] < LATENT_MIN_LIVE:  # dead (z = 0) or saturated (z = 1): no gradient
            recentre_latent(trainer.model, x_ok)
            trainer.resets.assign_add(1)
        now = time.perf_counter()
        times.append(now - t_prev)
        t_prev = now
        elapsed = elapsed0 + now - t_start
        trainer.elapsed.assign(elapsed)
        at_end = step >= config.steps or (config.budget_s is not None and elapsed >= config.budget_s)
        if validation is not None and config.validate_every and (step % config.validate_every == 0 or at_end):
            trainer.validate(validation, step)
            t_prev = time.perf_counter()  # the step times (samples/s) leave the validation out
            elapsed = elapsed0 + t_prev - t_start  # the budget does not
            trainer.elapsed.assign(elapsed)
        if progress is not None:
            window = (times[1:] if len(times) > 1 else times)[-10:]  # the first step traces
            progress(
                dict(
                    step=step, steps=config.steps, lr=lr, elapsed_s=elapsed,
                    samples_per_s=2 * config.batch * len(window) / max(sum(window), 1e-9),
                    **last, **_validation_progress(trainer.validations),
                )
            )
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            trainer.save_checkpoint(ckpt_dir)
        if config.budget_s is not None and elapsed >= config.budget_s:
            stopped = True
            break
    if validation is not None and (not trainer.validations or trainer.validations[-1]["step"] != step):
        trainer.validate(validation, step)  # a resumed run with no step left, or no validate_every
        trainer.elapsed.assign(elapsed0 + time.perf_counter() - t_start)
    trainer.save_checkpoint(ckpt_dir)  # the last state, to resume from
    validated = None
    if validation is not None and trainer.validations:  # resumed without validation: the last state
        best = best_validation(trainer.validations)
        if best["step"] != step:
            trainer.model.set_weights(trainer.best_weights)
        validated = {"every": config.validate_every, "chosen_step": best["step"], "chosen_score": best["score"],
                     "last_score": trainer.validations[-1]["score"], "history": trainer.validations}
    explained = None if x_ok is None else explained_variance(trainer.model, x_ok)

    metadata = {
        "name": config.name or out.stem,
        "training": {
            "images": list(config.images),
            "perturbations": list(config.perturbations),
            "steps": step,
            "steps_planned": config.steps,
            "stopped_by_budget": stopped,
            "batch": config.batch,
            "seed": config.seed,
            "lr": config.lr,
            "warmup_steps": config.warmup_steps,
            "loss_weights": config.weights.to_dict(),
            "mixed_precision": trainer.policy or "float32",
            "budget_s": config.budget_s,
            "elapsed_s": round(float(trainer.elapsed.numpy()), 2),
            "device": device_name(),
            "parent": config.parent,
            "resumed_from": str(resume_from) if resume_from else None,
            "init_weights": init_source,
            "dead_latent_resets": int(trainer.resets.numpy()),
            "explained_variance": explained,
            "final_losses": {k: last.get(k) for k in (*TERMS, "total")},
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "background_sigma": config.background_sigma,
        },
    }
    if validated is not None:  # final_losses are the last step's; the weights are the chosen step's
        metadata["training"]["validation"] = validated
    if config.background_sigma is not None:
        rule = {"gaussian": "image - gaussian(image, sigma) + 0.5",
                "twicing": "image - (2 g - gaussian(g, sigma)) + 0.5, g = gaussian(image, sigma)"}
        metadata["input"] = {"background_sigma": config.background_sigma,
                             "background_method": config.background_method,
                             "rule": rule[config.background_method] + " (core.normalise)"}
    path = save_model(trainer.model, out, metadata=metadata, overwrite=config.overwrite)
    return load_model(path)
