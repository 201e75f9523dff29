"""Qualification: is a candidate model no worse than the active one, beyond the intervals?

Both models score the same held-back patches (from radiographs of the ``holdback`` split, never
trained on):

- ``defects``: the patch centred on every held-back confirmed defect or missed indication
  (real radiograph patches);
- ``okay``: held-back okay patches (avoiding every indication), drawn with another seed than the
  candidate's calibration patches;
- ``synthetic:<kind>``: the six synthetic anomaly types of Section 3.3 added to held-back okay
  patches (``n_synthetic`` each).

A patch is flagged when either of its scores (max |local mean|, max local std over the aperture)
exceeds the model's calibrated threshold (core.calibration.Thresholds stored with the model).
Per set: the TPR (the FPR for ``okay``) with its two-sided 95 % Clopper-Pearson interval.

Input normalisation: each model scores the patches as it sees them. For a model trained with
background removal (``core.normalise``) every set is cut from the background-removed *whole*
held-back radiographs (and the synthetic anomalies are added to those patches, as in training);
a model without it gets them from the radiographs as they are. When the candidate and the
reference normalise differently each gets its own sets, drawn with the same seed: the same
places, orientations and synthetic anomalies, each seen through its model's input.

Verdict: the candidate is *worse beyond the intervals* on a detection set when its interval lies
wholly below the reference's (candidate upper bound < reference lower bound), and on ``okay``
when its FPR interval lies wholly above the reference's. It passes when it is worse beyond the
intervals on no set. A set with no patches is reported and skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from core import audit
from core import training_set as ts
from core.calibration import clopper_pearson

DEFAULT_N_OKAY = 1000
DEFAULT_N_SYNTHETIC = 100


@dataclass
class SetResult:
    """Detection (or false-alarm) rate of one model on one set."""

    name: str
    n: int
    k: int
    rate: float
    ci: tuple[float, float]


@dataclass
class Qualification:
    """The comparison; ``rows`` pairs (candidate, reference) per set name."""

    candidate_sha256: str
    reference_sha256: str | None
    candidate: dict
    reference: dict
    worse: list[str]
    passed: bool
    reason: str
    thresholds: dict
    id: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("id")
        return d

    def table(self) -> list[tuple]:
        """Rows (set, candidate rate, candidate CI, reference rate, reference CI, worse)."""
        out = []
        for name, c in self.candidate.items():
            r = self.reference.get(name)
            out.append((name, c["n"], c["rate"], tuple(c["ci"]),
                        None if r is None else r["rate"], None if r is None else tuple(r["ci"]),
                        name in self.worse))
        return out


def _rate(name: str, flagged: np.ndarray) -> SetResult:
    n, k = int(flagged.size), int(np.count_nonzero(flagged))
    return SetResult(name, n, k, k / n if n else float("nan"), clopper_pearson(k, n) if n else (0.0, 1.0))


def qualification_sets(store, *, n_okay: int = DEFAULT_N_OKAY, n_synthetic: int = DEFAULT_N_SYNTHETIC,
                       images: dict | None = None, seed: int = 7,
                       metadata: dict | None = None) -> dict[str, np.ndarray]:
    """The held-back patch sets: ``{"defects": ..., "okay": ..., "synthetic:<kind>": ...}``.

    ``metadata``: the metadata of the model the sets are for; every patch is cut from the whole
    radiograph as that model sees it (``core.normalise.model_input``). The draws do not depend
    on the grey levels: the same ``seed`` gives the same patches for any normalisation.
    """
    from core.perturbations import ANOMALY_KINDS, SyntheticAnomalies

    rng = np.random.default_rng([seed, 2])
    sampler, rads = ts.patch_sampler(store, "holdback", images=images, seed=seed, metadata=metadata)
    sets: dict[str, np.ndarray] = {}
    by_sha = {r["sha256"]: i for i, r in enumerate(rads)}
    defects = []
    for e in ts.entries(store, split="holdback", kinds=("defect", "missed"), include_excluded=False):
        i = by_sha.get(e.radiograph_sha256)
        if i is None:
            continue
        patch, _ = ts.okay_patch(sampler.images[i], e.bbox)
        defects.append(patch)
    sets["defects"] = np.stack(defects) if defects else np.empty((0, 192, 192), np.float32)
    sets["okay"] = sampler.okay(n_okay, rng=rng)
    if n_synthetic:
        from core.normalise import indication_input

        base = sampler.okay(n_synthetic * len(ANOMALY_KINDS), rng=rng)
        for j, kind in enumerate(ANOMALY_KINDS):
            x = base[j * n_synthetic:(j + 1) * n_synthetic]
            delta, weight = SyntheticAnomalies(kind).sample(rng, n_synthetic)
            anomaly = indication_input(weight * delta, metadata)  # as it would lie on the film
            sets[f"synthetic:{kind}"] = (x + anomaly).astype(np.float32)
    return sets


def evaluate(model_bundle, sets: dict[str, np.ndarray], thresholds=None, *, cancel=None) -> dict:
    """Per set: n, k flagged, rate and CI at the model's calibrated thresholds."""
    from core.errors import CalibrationError
    from core.scanning import patch_scores

    thr = thresholds or model_bundle.thresholds
    if thr is None:
        raise CalibrationError(f"{model_bundle.name}: not calibrated, cannot be qualified")
    out = {}
    for name, patches in sets.items():
        if len(patches) == 0:
            out[name] = asdict(_rate(name, np.zeros(0, bool)))
            continue
        s = patch_scores(patches, model_bundle.model, cancel=cancel)
        flagged = thr.flagged(s)
        out[name] = asdict(_rate(name, flagged))
    return out


def compare(candidate: dict, reference: dict) -> tuple[list[str], str]:
    """Sets on which the candidate is worse beyond the intervals, and a one-line reason."""
    worse = []
    for name, c in candidate.items():
        r = reference.get(name)
        if r is None or c["n"] == 0 or r["n"] == 0:
            continue
        if name == "okay":
            if c["ci"][0] > r["ci"][1]:
                worse.append(name)
        elif c["ci"][1] < r["ci"][0]:
            worse.append(name)
    if worse:
        return worse, "worse beyond the intervals on " + ", ".join(worse)
    c_def, r_def = candidate.get("defects", {}), reference.get("defects", {})
    extra = ""
    if c_def.get("n"):
        extra = f"; held-back defects {c_def['rate']:.0%} vs {r_def.get('rate', float('nan')):.0%}"
    return worse, "not worse beyond the intervals on any set" + extra


def input_of(metadata: dict | None) -> tuple:
    """What a model's input normalisation is: ``(sigma, method)``, ``(None, None)`` for none."""
    from core.normalise import background_method, background_sigma

    sigma = background_sigma(metadata)
    return (None, None) if sigma is None else (sigma, background_method(metadata))


def qualify(store, candidate_id: int, *, reference_id: int | None = None, user: str | None = None,
            n_okay: int = DEFAULT_N_OKAY, n_synthetic: int = DEFAULT_N_SYNTHETIC,
            images: dict | None = None, seed: int = 7, progress=None, cancel=None) -> Qualification:
    """Compare model ``candidate_id`` with ``reference_id`` (default: the active model).

    The result is stored (``training_qualifications``) and written to the audit trail
    ("model qualified"). Without a reference (nothing active yet) the candidate passes when it
    has been evaluated. Each model scores the held-back sets as it sees them (its input
    normalisation, module docstring).
    """
    from core.modelfile import load_model

    ts.ensure_tables(store)
    cand_row = store.one("SELECT * FROM models WHERE id = ?", [int(candidate_id)])
    if cand_row is None:
        raise ValueError(f"no model {candidate_id}")
    if reference_id is None:
        active = store.active_model()
        ref_row = None if active is None or active["id"] == cand_row["id"] else active
    else:
        ref_row = store.one("SELECT * FROM models WHERE id = ?", [int(reference_id)])
        if ref_row is None:
            raise ValueError(f"no model {reference_id}")
    cand = load_model(cand_row["path"])
    ref = None if ref_row is None else load_model(ref_row["path"])
    say = progress or (lambda p: None)

    def sets_for(bundle, phase="qualification sets"):  # the held-back sets as this model sees them
        say({"phase": phase})
        return qualification_sets(store, n_okay=n_okay, n_synthetic=n_synthetic, images=images,
                                  seed=seed, metadata=bundle.metadata)

    sets = sets_for(cand)
    say({"phase": "candidate"})
    c_res = evaluate(cand, sets, cancel=cancel)
    r_res, ref_sha = {}, None
    thresholds = {"candidate": cand.thresholds.to_dict()}
    if ref is not None:
        ref_sha = ref.sha256
        if input_of(ref.metadata) != input_of(cand.metadata):
            sets = None  # free the candidate's before drawing the reference's
            sets = sets_for(ref, "qualification sets as the reference sees them")
        say({"phase": "reference"})
        r_res = evaluate(ref, sets, cancel=cancel)
        thresholds["reference"] = ref.thresholds.to_dict()
    worse, reason = compare(c_res, r_res)
    if ref_row is None:
        reason = "no active model to compare with; " + reason
    result = Qualification(cand.sha256, ref_sha, c_res, r_res, worse, not worse, reason, thresholds)

    def write():
        qid = store.db["training_qualifications"].insert({
            "candidate_sha256": result.candidate_sha256, "reference_sha256": ref_sha,
            "passed": int(result.passed), "result": audit.canonical_json(result.to_dict()),
            "user": user, "created_at": audit.now_iso(),
        }).last_pk
        ts._event(store, ts.EV_QUALIFIED, user, {
            "qualification_id": qid, "candidate_model_id": cand_row["id"],
            "reference_model_id": ref_row["id"] if ref_row else None,
            "passed": result.passed, "reason": reason, "worse": worse,
            "rates": {k: [v["k"], v["n"]] for k, v in c_res.items()},
            "reference_rates": {k: [v["k"], v["n"]] for k, v in r_res.items()},
        }, "models", cand_row["id"])
        return qid

    result.id = store.transaction(write, f"record the qualification of model {candidate_id}")
    return result


def qualifications(store) -> list[dict]:
    """Every stored qualification, oldest first (``result`` decoded)."""
    ts.ensure_tables(store)
    rows = list(store.db.query("SELECT * FROM training_qualifications ORDER BY id"))
    for r in rows:
        r["result"] = json.loads(r["result"])
        r["passed"] = bool(r["passed"])
    return rows


def latest_qualification(store, candidate_sha256: str, reference_sha256: str | None) -> dict | None:
    """The newest qualification of a candidate against that reference, or None."""
    rows = [q for q in qualifications(store) if q["candidate_sha256"] == candidate_sha256
            and q["reference_sha256"] == reference_sha256]
    return rows[-1] if rows else None
