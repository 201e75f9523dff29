"""Does the latent of a background-removal model stay alive? Step- or time-matched variants.

Trains one SNI model per VARIANT on the benchmark's GDXray training films (twicing background
removal, sigma 24, dropout 0, warm-up 50, seed 0), then prints one JSON line per variant: steps,
latent re-centrings, final loss terms, the latent's mean and live share and the share of the okay
calibration patches' variance the model reproduces, and TPR / AUC at 0.1 % FPR on the benchmark's
weld-region patch sets (core.benchmark.evaluate_ood).

    .venv/bin/python docs/scripts/latent_check.py MINUTES NAME:KEY=VALUE,... [...]

MINUTES is each variant's budget (0: none, give ``steps=``). Keys: the ``core.loss.LossWeights``
fields (``reg``, ``per``, ``kern_per``, ...), ``gain`` (patches and perturbations scaled by it
around 0.5 before the network, which is what ``core.model``'s input gain does inside it),
``steps`` and ``signed=1`` (signed SNI). Models go to /tmp/latent_check; a variant whose model
is already there is only evaluated. Used for item 5 of
docs/benchmark/notes.md, e.g. ``4 reg0:reg=0 per025:per=0.25,kern_per=0.25 gain8:gain=8``.
"""
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from core.benchmark import BUDGETS, build_patch_sets, evaluate_ood, make_split, patch_sampler
from core.datasets import load_dataset
from core.learning_curve import Recipe, _sources, normalised_items
from core.loss import LossWeights
from core.normalise import normalise_indication
from core.training import TrainConfig, train
from core.model import OFFSET, APERTURE

minutes = float(sys.argv[1])
variants = sys.argv[2:]  # name:reg=..,per=..,kern_per=..
data = REPO.parent / "shared" / "datasets" / "gdxray-welds"
recipe = Recipe(background_sigma=24, background_method="twicing")
items = normalised_items(load_dataset(data, include_unmasked=False), 24, "twicing")
split = make_split(items)
budget = BUDGETS["small"]
sets = build_patch_sets(split, budget, roi=True, indication=partial(normalise_indication, sigma=24, method="twicing"))
sources = _sources(recipe, split.train)
out = Path("/tmp/latent_check")
out.mkdir(exist_ok=True)
for v in variants:
    name, _, spec = v.partition(":")
    kw = {k: float(x) for k, x in (p.split("=") for p in spec.split(",") if p)}
    gain = kw.pop("gain", 1.0)
    nsteps = int(kw.pop("steps", 10**7))
    signed = bool(kw.pop("signed", 0))
    weights = replace(LossWeights(), **kw)
    okay0 = patch_sampler(split.train, seed=0, roi=True).okay

    def okay(*a, _f=okay0, **k):
        x = _f(*a, **k)
        return (0.5 + gain * (x - 0.5)).astype(np.float32)

    class Scaled:
        def __init__(self, src):
            self.src = src

        def sample(self, rng, n):
            d, w = self.src.sample(rng, n)
            return (gain * d).astype(np.float32), w
    from core.perturbations import SNIPerturbations
    base = [SNIPerturbations(signed=True)] if signed else sources
    srcs = [Scaled(s_) for s_ in base] if gain != 1.0 else base
    cfg = TrainConfig(steps=nsteps, batch=32, lr=1e-3, warmup_steps=50, dropout=0.0, seed=0,
                      out=out / f"{name}.keras", checkpoint_dir=out / f"{name}.ckpt", checkpoint_every=0,
                      budget_s=60 * minutes if minutes > 0 else None, overwrite=True, weights=weights, name=name,
                      background_sigma=24, background_method="twicing")
    t0 = time.time()
    from core.modelfile import load_model
    bundle = load_model(cfg.out) if cfg.out.exists() else train(cfg, okay if gain != 1.0 else okay0, srcs)
    t = bundle.metadata["training"]
    x = (0.5 + gain * (sets.calibration_okay[:256] - 0.5)).astype(np.float32)
    outs = bundle.model.predict(x[..., None], verbose=0)
    rec, z = np.asarray(outs[0])[..., 0], np.asarray(outs[1])
    tgt = x[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
    if rec.shape[-1] != APERTURE:
        rec = rec[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
    explained = 1 - np.var(tgt - rec) / np.var(tgt - tgt.mean(axis=(1, 2), keepdims=True))
    if gain != 1.0:
        from dataclasses import replace as rp
        sc = lambda a: (0.5 + gain * (a - 0.5)).astype(np.float32)
        sets_g = rp(sets, calibration_okay=sc(sets.calibration_okay), test_okay=sc(sets.test_okay),
                    test_defects={k: sc(v) for k, v in sets.test_defects.items()},
                    synthetic={k: sc(v) for k, v in sets.synthetic.items()})
    else:
        sets_g = sets
    numbers, _ = evaluate_ood(bundle.model, sets_g, fpr=budget.fpr)
    print(json.dumps({"variant": name, "weights": kw, "steps": t["steps"], "resets": t["dead_latent_resets"],
                      "final": {k: float(f"{v:.3g}") for k, v in t["final_losses"].items() if v is not None},
                      "z_mean": float(z.mean()), "z_alive": float((z > 0).mean()), "rec_std": float(rec.std(axis=(1, 2)).mean()), "explained_var": round(float(explained), 3),
                      "tpr": {k: round(100 * v) for k, v in numbers["tpr"].items()}, "auc": {k: round(v, 3) for k, v in numbers["auc"].items()},
                      "fpr_test": numbers["fpr_test"], "thr": {k: round(numbers["thresholds"][k], 4) for k in ("mean", "std")}}), flush=True)
