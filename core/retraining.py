"""Retraining from verdicts: new model versions with provenance, calibration, activation, rollback.

A retrained model is always a new file (``<models>/retrained-<time>-<parent>.keras``), never an
overwrite. Fine-tuning starts from the active model's weights; ``from_scratch`` trains a fresh
model of the same shape. Training data (core.training_set): okay patches from the reviewed
radiographs of the ``train`` split (avoiding every indication) with the false-alarm patches mixed
in, and perturbations from the confirmed-defect and missed-indication entries, plus the parent's
own synthetic perturbation sets where they can be rebuilt (SNI, the six synthetic types), so the
model does not forget them. The new model is calibrated on okay patches of the ``holdback``
radiographs at the parent's target FPR.

Input normalisation: the new model takes the parent's (``core.normalise``; the active model's,
also for a retraining from scratch). For a parent trained with background removal every patch
is cut from the background-removed *whole* radiograph: the okay and calibration patches, the
false-alarm patches and the confirmed defects' deltas (taken again from the normalised
radiograph at the stored region, ``core.training_set.entry_arrays``). The new model's metadata
records the same ``input``, so scanning and calibration normalise as in training.

Activation goes through ``Store.activate_model`` (supervisors only): with a passed qualification
against the model active now, or with a justification recorded for an unqualified one. Rollback
activates the previously active version. All of it is in the audit trail.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from core import audit
from core import training_set as ts

DEFAULT_BUDGET_MIN = 6.0  # training minutes of a fine-tune (calibration adds about a minute)
DEFAULT_STEPS = 400  # optimiser steps (the budget usually stops it first on 2 CPU cores)
FINE_TUNE_LR = 5e-4
SCRATCH_LR = 1e-3
DEFAULT_BATCH = 16
MIN_CALIBRATION = 1000  # held-back okay patches at least, even where 3 / fpr is fewer
REBUILDABLE = ("SNI", "SNI-signed")  # parent perturbation sets that need no training images


@dataclass
class RetrainResult:
    """A trained, calibrated and registered candidate model."""

    model_id: int
    path: Path
    sha256: str
    parent_sha256: str | None
    entry_ids: list[int]
    thresholds: object
    metadata: dict
    timings: dict = field(default_factory=dict)


def _sources_from_parent(metadata: dict | None) -> list:
    from core.perturbations import ANOMALY_KINDS, CachedPerturbations, SNIPerturbations, SyntheticAnomalies

    out = []
    for name in ((metadata or {}).get("training", {}).get("perturbations") or []):
        if name in REBUILDABLE:
            out.append(CachedPerturbations(SNIPerturbations(signed=name == "SNI-signed"), size=128))
        elif name.startswith("synthetic:") and name.split(":", 1)[1] in ANOMALY_KINDS:
            out.append(SyntheticAnomalies(name.split(":", 1)[1]))
    return out


def _parent_loss_weights(parent):
    """The loss weights the parent was trained with (the default ones for a parent without them)."""
    from core.loss import LossWeights

    stored = ((parent.metadata.get("training") or {}).get("loss_weights") if parent is not None else None)
    try:
        return LossWeights(**stored) if stored else LossWeights.default()
    except (TypeError, ValueError):
        return LossWeights.default()


def _unique_out(stem: str) -> Path:
    from core.paths import models_dir

    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{stem}.keras"
    k = 1
    while out.exists() or out.with_suffix(".json").exists():
        k += 1
        out = folder / f"{stem}-{k}.keras"
    return out


def _calibration_okay(sampler, n: int, seed: int) -> np.ndarray:
    return sampler.okay(n, rng=np.random.default_rng([seed, 1]))


def calibration_patches(store, n: int, *, images: dict | None = None, seed: int = 1,
                        metadata: dict | None = None) -> np.ndarray:
    """``n`` okay patches from the holdback radiographs (never used in training).

    ``metadata``: the model's metadata; the patches are cut from the radiographs as it sees
    them (``core.normalise.model_input`` of the whole radiograph).
    """
    sampler, _ = ts.patch_sampler(store, "holdback", images=images, seed=seed, metadata=metadata)
    return _calibration_okay(sampler, n, seed)


def retrain(store, *, user: str | None, budget_min: float | None = DEFAULT_BUDGET_MIN,
            from_scratch: bool = False, steps: int | None = None, batch: int = DEFAULT_BATCH,
            lr: float | None = None, seed: int = 0, fpr: float | None = None,
            keep_parent_sets: bool = True, images: dict | None = None, filters=None,
            n_calibration: int | None = None, progress=None, cancel=None,
            name: str | None = None) -> RetrainResult:
    """Fine-tune the active model (or train from scratch) on the training set; calibrate; register.

    The new model keeps the active model's input normalisation (also from scratch): with
    background removal, every patch it trains and calibrates on is cut from the normalised
    whole radiograph (module docstring).

    Parameters
    ----------
    store : core.store.Store
    user : str or None
        Who started it (audit trail).
    budget_min : float, optional
        Training minutes (the model is saved as it is when they run out); None: steps only.
    from_scratch : bool
        Fresh weights instead of the active model's.
    steps, batch, lr, seed : training options (defaults: DEFAULT_STEPS, 16, 5e-4 / 1e-3, 0).
    fpr : float, optional
        Calibration target (default: the parent's, else core.calibration.DEFAULT_FPR).
    n_calibration : int, optional
        Held-back okay patches to calibrate on (default: ``max(3 / fpr, 1000)``).
    keep_parent_sets : bool
        Also draw the parent's rebuildable synthetic perturbation sets.
    images : dict, optional
        ``{sha256: image}`` already in memory.
    filters : tuple, optional
        Model shape for ``from_scratch`` without an active model (default core.model.FILTERS).
    progress : callable, optional
        core.training's progress dict, plus ``{"phase": ...}`` dicts for the other phases.
    cancel : callable, optional
        Stops training (core.training.TrainingCancelled) or the calibration (ScanCancelled).

    Returns
    -------
    RetrainResult
    """
    from core.calibration import DEFAULT_FPR, calibrate, encode_scores, min_okay_patches
    from core.model import FILTERS
    from core.modelfile import load_model, update_metadata
    from core.normalise import background_method, background_sigma
    from core.scanning import patch_scores
    from core.training import TrainConfig, train

    t0 = time.perf_counter()
    say = progress or (lambda p: None)
    ts.ensure_tables(store)
    active = store.active_model()
    parent = None
    if active is not None and active.get("path"):
        parent = load_model(active["path"])
    if parent is None and not from_scratch:
        raise ValueError("no active model to fine-tune; activate one or train from scratch")
    # the input normalisation the new model keeps (also from scratch: it takes the parent's place)
    seen_as = {"input": parent.metadata["input"]} if parent is not None and \
        background_sigma(parent.metadata) is not None else None
    say({"phase": "training data"})
    ts.add_from_verdicts(store, user=user, images=images)
    used = ts.entries(store, split="train", include_excluded=False, with_data=True)
    if not used:
        raise ValueError("the training set is empty: give verdicts (defects, false alarms, missed "
                         "indications) on reviewed radiographs first")
    sampler, rads = ts.patch_sampler(store, "train", images=images, seed=seed, metadata=seen_as)
    # entries hold arrays of the raw radiographs: cut again from the normalised ones if need be
    arrays = ts.arrays_for_model(used, seen_as, images=images,
                                 inputs={r["sha256"]: im for r, im in zip(rads, sampler.images)})
    pert = [(a["delta"], a["weight"]) for e, a in zip(used, arrays) if e.kind in ("defect", "missed")]
    okay_extra = [a["patch"] for e, a in zip(used, arrays) if e.kind == "okay"]
    okay = ts.MixedOkay(sampler, np.stack(okay_extra) if okay_extra else None)
    sources = [ts.VerdictPerturbations(pert)] if pert else []
    if keep_parent_sets and parent is not None:
        sources += _sources_from_parent(parent.metadata)
    if not sources:
        raise ValueError("no perturbations: the training set has no confirmed defect or missed "
                         "indication, and the parent's sets cannot be rebuilt")
    thr_parent = parent.thresholds if parent is not None else None
    fpr = fpr or (thr_parent.fpr_target if thr_parent else DEFAULT_FPR)
    n_cal = max(min_okay_patches(fpr), int(n_calibration or MIN_CALIBRATION))
    # fail before training when there is nothing to calibrate on (and keep it for the calibration)
    hold, _ = ts.patch_sampler(store, "holdback", images=images, seed=seed + 1, metadata=seen_as)

    arch = (parent.metadata.get("architecture", {}) if parent is not None else {})
    shape = tuple(arch.get("filters") or filters or FILTERS)
    parent_sha = parent.sha256 if parent is not None else None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = _unique_out(f"retrained-{stamp}-{(parent_sha or 'scratch')[:8]}")
    config = TrainConfig(
        steps=int(steps or DEFAULT_STEPS), batch=int(batch),
        lr=lr or (SCRATCH_LR if from_scratch else FINE_TUNE_LR), seed=int(seed), filters=shape,
        dropout=float(arch.get("dropout", 0.12)), gain=float(arch.get("gain", 1.0)),
        weights=_parent_loss_weights(parent), out=out,
        checkpoint_every=0, budget_s=None if budget_min is None else float(budget_min) * 60.0,
        images=[f"{r['path']} (sha256 {r['sha256'][:12]})" for r in rads],
        perturbations=[getattr(s, "name", type(s).__name__) for s in sources],
        parent=None if from_scratch else parent_sha, name=name or out.stem,
        background_sigma=background_sigma(seen_as), background_method=background_method(seen_as),
    )
    t1 = time.perf_counter()
    bundle = train(config, okay, sources, progress=progress, cancel=cancel,
                   init_weights=None if from_scratch else parent.model)
    t2 = time.perf_counter()
    say({"phase": "calibration", "n": n_cal})
    cal = _calibration_okay(hold, n_cal, seed + 1)  # = calibration_patches(..., seed=seed + 1)
    del hold
    scores = patch_scores(cal, bundle.model, cancel=cancel)
    thr = calibrate(scores, fpr=fpr)
    entry_ids = [e.id for e in used]
    provenance = {
        "parent": parent_sha, "from_scratch": bool(from_scratch), "entry_ids": entry_ids,
        "entries": {k: sum(e.kind == k for e in used) for k in ts.KINDS},
        "radiographs": [r["sha256"] for r in rads], "seed": int(seed),
        "budget_min": budget_min, "steps": bundle.metadata["training"]["steps"],
        "batch": int(batch), "versions": bundle.metadata.get("versions"),
        "calibration": {"split": "holdback", "n_okay": int(len(cal)), "fpr": fpr},
        "input": (seen_as or {}).get("input"),  # the normalisation taken from the parent
    }
    meta = update_metadata(bundle.path, thresholds=thr.to_dict(), okay_scores=encode_scores(scores),
                           retraining=provenance)
    t3 = time.perf_counter()
    model_id = store.add_model(sha256=bundle.sha256, metadata=meta, thresholds=thr.to_dict(),
                               name=meta["name"], path=bundle.path, user=user)

    def write():
        store.db["training_models"].insert({
            "model_id": model_id, "model_sha256": bundle.sha256, "parent_sha256": parent_sha,
            "path": str(bundle.path), "entry_ids": json.dumps(entry_ids),
            "provenance": audit.canonical_json(provenance), "user": user,
            "created_at": audit.now_iso(),
        })
        ts._event(store, ts.EV_TRAINED, user, {"model_id": model_id, "sha256": bundle.sha256,
                                               "thresholds": thr.to_dict(), **provenance},
                  "models", model_id)

    store.transaction(write, "record the retrained model")
    return RetrainResult(
        model_id=model_id, path=bundle.path, sha256=bundle.sha256, parent_sha256=parent_sha,
        entry_ids=entry_ids, thresholds=thr, metadata=meta,
        timings={"data_s": t1 - t0, "train_s": t2 - t1, "calibrate_s": t3 - t2,
                 "total_s": time.perf_counter() - t0},
    )


# ---------------------------------------------------------------- activation and rollback


def activate(store, model_id: int, *, user: str, justification: str | None = None) -> int:
    """Activate a model version (supervisors only).

    Without ``justification`` the model must have a passed qualification against the model
    active now (core.qualification.qualify); with one, it is activated anyway and the
    justification is recorded. Returns the activation id.
    """
    from core.qualification import latest_qualification

    who = store.user(user)
    if who.role != "supervisor":
        raise PermissionError(f"only a supervisor can activate a model; {user} is {who.role}")
    row = store.one("SELECT id, sha256 FROM models WHERE id = ?", [int(model_id)])
    if row is None:
        raise ValueError(f"no model {model_id}")
    active = store.active_model()
    if active is not None and active["id"] == row["id"]:
        raise ValueError(f"model {model_id} is already the active model")
    text = str(justification or "").strip()
    if not text:
        q = latest_qualification(store, row["sha256"], active["sha256"] if active else None)
        if q is None:
            raise ValueError(
                f"model {model_id} has no qualification against the active model; qualify it "
                "first or give a justification"
            )
        if not q["passed"]:
            raise ValueError(
                f"model {model_id} failed qualification {q['id']} ({q['result']['reason']}); "
                "activating it needs a justification"
            )
        text = f"qualified (qualification {q['id']}: {q['result']['reason']})"
    else:
        text = f"justification: {text}"
    return store.activate_model(int(model_id), user=user, justification=text)


def rollback(store, *, user: str, to: int | None = None, justification: str | None = None) -> int:
    """Activate an earlier model version: ``to`` (a model id), or the one active before now."""
    history = store.activations()
    if not history:
        raise ValueError("no model was ever activated; nothing to roll back to")
    current = history[-1]["model_id"]
    if to is None:
        earlier = [a["model_id"] for a in history if a["model_id"] != current]
        if not earlier:
            raise ValueError("no earlier model version to roll back to")
        to = earlier[-1]
    if int(to) == current:
        raise ValueError(f"model {to} is already the active model")
    if to not in {a["model_id"] for a in history}:
        raise ValueError(f"model {to} was never active; activate it instead of rolling back")
    who = store.user(user)
    if who.role != "supervisor":
        raise PermissionError(f"only a supervisor can roll back; {user} is {who.role}")
    text = f"rollback from model {current} to model {to}"
    if justification and justification.strip():
        text += f": {justification.strip()}"
    return store.activate_model(int(to), user=user, justification=text)


def versions(store) -> list[dict]:
    """Every model with its activation state, lineage (parent, entries) and latest qualification."""
    from core.qualification import qualifications

    ts.ensure_tables(store)
    trained = {m["model_sha256"]: m for m in ts.models_trained(store)}
    quals = qualifications(store)
    active = store.active_model()
    out = []
    for m in store.models():
        t = trained.get(m["sha256"])
        q = [x for x in quals if x["candidate_sha256"] == m["sha256"]]
        out.append({
            "id": m["id"], "name": m["name"], "sha256": m["sha256"], "path": m["path"],
            "added_at": m["added_at"], "active": active is not None and active["id"] == m["id"],
            "activated_at": m.get("activated_at"), "activated_by": m.get("activated_by"),
            "justification": m.get("justification"),
            "parent": (t["parent_sha256"] if t else (m["metadata"].get("training") or {}).get("parent")),
            "entry_ids": t["entry_ids"] if t else [],
            "provenance": t["provenance"] if t else None,
            "qualification": q[-1] if q else None,
            "thresholds": m["thresholds"],
        })
    return out
