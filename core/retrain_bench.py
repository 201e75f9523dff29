"""How long a retraining from verdicts takes (``weldreview bench retrain``; issue 9).

Builds, in a folder, a review database as a plant would have it after a few hundred verdicts:
generated radiographs (core.synthetic, ``defects`` defects of random types each) scanned whole
with the active model (by default the bundled one), and verdicts given through the store calls
of the review window (core.simulated_review) in a set ``mix`` of confirmed defects, false alarms
(mostly lead letters, IQI wires and plate outside the bead, which the model flags) and missed
indications. The ``verdicts`` go on radiographs a supervisor put in the ``train`` split;
``holdback`` more radiographs, reviewed in full, give the calibration and qualification patches.

Then it runs what ``weldreview retrain --from-verdicts`` and the retraining dialog run,
core.retraining.retrain with its defaults (budget, steps, batch, the active model's FPR), and the
supervisor's next step, core.qualification.qualify against the active model, and reports the
wall time of each phase. The target (issue 9) applies to the retraining: training data
(verdicts to training entries, and the okay-patch sampler), fine-tune, calibration.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from core import simulated_review as sim

MIX = {"defect": 0.35, "false_alarm": 0.45, "missed": 0.20}
SHAPE = (800, 2400)
DEFECTS = 5  # per generated radiograph
HOLDBACK = 2  # held-back radiographs
TARGET_MIN = 10.0  # issue 9: a fine-tune on a few hundred verdicts, 2 CPU cores
INTERPRETER, SUPERVISOR = "ina", "sam"


def quotas(n: int, mix: dict) -> dict:
    """``n`` verdicts split by ``mix`` (largest remainders; kinds of core.simulated_review)."""
    total = sum(mix.values())
    if n < 0 or total <= 0:
        raise ValueError("give a non-negative number of verdicts and a mix with a positive sum")
    raw = {k: n * mix.get(k, 0.0) / total for k in sim.KINDS}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[:n - sum(out.values())]:
        out[k] += 1
    return out


def generate(folder: Path, seed: int, *, shape=SHAPE, defects: int = DEFECTS):
    """Write a generated radiograph; return (core.imageio.Radiograph, its indications)."""
    from core.imageio import load_radiograph
    from core.synthetic import DEFECT_TYPES, generate_weld, write_radiograph

    rng = np.random.default_rng([seed, 17])
    kinds = [str(k) for k in rng.choice(list(DEFECT_TYPES), defects)]
    while True:
        try:
            weld = generate_weld(seed, shape=tuple(shape), defects=kinds)
            break
        except ValueError:  # a small radiograph: fewer defects
            if not kinds:
                raise
            kinds.pop()
    path = write_radiograph(Path(folder) / f"weld{seed:04d}.tif", weld)
    return load_radiograph(path), [sim.Indication(tuple(int(v) for v in d.bbox), d.iso_code)
                                   for d in weld.defects]


def build(folder: Path, *, verdicts: int, mix: dict = MIX, shape=SHAPE, defects: int = DEFECTS,
          holdback: int = HOLDBACK, seed: int = 0, model_path=None, max_radiographs=None):
    """The review database in ``folder`` (see the module docstring); returns (store, summary).

    Radiographs are generated and reviewed until each kind's quota is met (or
    ``max_radiographs``, default ``20 + verdicts``, were reviewed; the rest is then filled
    with the other kinds).
    """
    from core import training_set as ts
    from core.modelfile import load_model
    from core.paths import default_model_path
    from core.scanning import scan_image
    from core.store import Store

    folder = Path(folder)
    images = folder / "radiographs"
    images.mkdir(parents=True, exist_ok=True)
    store = Store(folder / "review.sqlite")
    store.add_user(INTERPRETER, role="interpreter")
    store.add_user(SUPERVISOR, role="supervisor")
    bundle = load_model(Path(model_path) if model_path else default_model_path())
    thr = bundle.thresholds
    model_id = store.add_model(sha256=bundle.sha256, metadata=bundle.metadata,
                               thresholds=None if thr is None else thr.to_dict(),
                               name=bundle.name, path=bundle.path, user=SUPERVISOR)
    store.activate_model(model_id, user=SUPERVISOR, justification="the model in use")

    def one(k: int, split: str, limits, at_most=None):
        rad, indications = generate(images, seed * 100003 + k, shape=shape, defects=defects)
        rid = store.add_radiograph_from(rad, user=INTERPRETER)
        ts.set_split(store, rid, split, user=SUPERVISOR)
        result = scan_image(rad, bundle)
        sid, ids = sim.record_scan(store, rid, bundle, result, user=INTERPRETER)
        _, given = sim.review(store, user=INTERPRETER, radiograph_id=rid, scan_id=sid,
                              regions=result.regions, region_ids=ids, indications=indications,
                              limits=limits, at_most=at_most)
        return given

    want = quotas(verdicts, mix)
    cap = max_radiographs or 20 + verdicts
    train = dict.fromkeys(sim.KINDS, 0)
    k = 0
    while sum(train.values()) < verdicts and k < cap:
        left = {kind: want[kind] - train[kind] for kind in sim.KINDS}
        if k == cap - 1:  # the last one allowed: any kind, up to the number still wanted
            left = dict.fromkeys(sim.KINDS, verdicts)
        given = one(k, "train", left, at_most=verdicts - sum(train.values()))
        for kind, n in given.items():
            train[kind] += n
        k += 1
    held = dict.fromkeys(sim.KINDS, 0)
    for j in range(holdback):
        for kind, n in one(10**6 + j, "holdback", None).items():
            held[kind] += n
    return store, {"train": train, "holdback": held, "quota": want,
                   "radiographs": {"train": k, "holdback": holdback, "shape": list(shape)},
                   "model": {"id": model_id, "path": str(bundle.path), "sha256": bundle.sha256}}


def measure(store, *, budget_min=None, steps=None, batch=None, fpr=None, n_calibration=None,
            qualify: bool = True, n_okay=None, n_synthetic=None) -> dict:
    """Run the retraining (and qualification) on ``store``; timings and figures."""
    from core import training_set as ts
    from core.qualification import DEFAULT_N_OKAY, DEFAULT_N_SYNTHETIC
    from core.qualification import qualify as run_qualify
    from core.retraining import DEFAULT_BATCH, DEFAULT_BUDGET_MIN, retrain

    last: dict = {}

    def progress(p: dict) -> None:
        if "samples_per_s" in p:
            last.update(p)

    budget = DEFAULT_BUDGET_MIN if budget_min is None else budget_min
    batch = batch or DEFAULT_BATCH
    t0 = time.perf_counter()
    res = retrain(store, user=INTERPRETER, budget_min=budget, steps=steps, batch=batch, fpr=fpr,
                  n_calibration=n_calibration, progress=progress)
    wall = time.perf_counter() - t0
    t, tr = res.timings, res.metadata["training"]
    entries = ts.entries(store, include_excluded=False)
    out = {
        "training_entries": {
            "extracted": len(entries),
            "used": len(res.entry_ids),
            "train": {k: sum(e.kind == k and e.split == "train" for e in entries)
                      for k in ts.KINDS},
            "holdback": {k: sum(e.kind == k and e.split != "train" for e in entries)
                         for k in ts.KINDS},
        },
        "fine_tune": {
            "steps": tr["steps"], "steps_planned": tr["steps_planned"],
            "stopped_by_budget": tr["stopped_by_budget"], "budget_min": budget, "batch": batch,
            "samples_per_s": last.get("samples_per_s"),
            "samples_per_s_overall": 2 * batch * tr["steps"] / max(t["train_s"], 1e-9),
            "mixed_precision": tr.get("mixed_precision"), "device": tr.get("device"),
        },
        "calibration": {"n_okay": res.thresholds.n_okay, "fpr_target": res.thresholds.fpr_target,
                        "fpr_achieved": res.thresholds.fpr_achieved},
        "new_model": {"id": res.model_id, "path": str(res.path), "sha256": res.sha256,
                      "parent_sha256": res.parent_sha256},
        "minutes": {"extraction": t["data_s"] / 60, "fine_tune": t["train_s"] / 60,
                    "calibration": t["calibrate_s"] / 60, "retrain_total": wall / 60},
    }
    if qualify:
        t1 = time.perf_counter()
        q = run_qualify(store, res.model_id, user=SUPERVISOR,
                        n_okay=DEFAULT_N_OKAY if n_okay is None else n_okay,
                        n_synthetic=DEFAULT_N_SYNTHETIC if n_synthetic is None else n_synthetic)
        out["minutes"]["qualification"] = (time.perf_counter() - t1) / 60
        out["qualification"] = {"passed": q.passed, "reason": q.reason,
                                "sets": {k: v["n"] for k, v in q.candidate.items()}}
    out["minutes"]["total"] = sum(v for k, v in out["minutes"].items()
                                  if k in ("retrain_total", "qualification"))
    return out


def run(folder: Path, *, verdicts: int = 300, mix: dict = MIX, shape=SHAPE, defects: int = DEFECTS,
        holdback: int = HOLDBACK, seed: int = 0, model_path=None, **options) -> dict:
    """Build the database in ``folder`` and measure (``options``: :func:`measure`'s).

    New model files go to ``folder/home/models`` (``WELDREVIEW_HOME`` is set for the run).
    """
    from core.paths import HOME_ENV

    folder = Path(folder)
    saved = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(folder / "home")
    try:
        t0 = time.perf_counter()
        store, review = build(folder, verdicts=verdicts, mix=mix, shape=shape, defects=defects,
                              holdback=holdback, seed=seed, model_path=model_path)
        setup = time.perf_counter() - t0
        with store:
            active = review.pop("model")
            out = {"verdicts": {"given": sum(review["train"].values()), **review},
                   "active_model": active}
            out.update(measure(store, **options))
        out["minutes"]["setup"] = setup / 60  # generation, scans, verdicts: not in the target
    finally:
        if saved is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = saved
    out["target"] = {"retrain_max_min": TARGET_MIN,
                     "met": out["minutes"]["retrain_total"] <= TARGET_MIN}
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["folder"] = str(folder)
    return out
