"""Learning curve of one OOD detector on the benchmark protocol: TPR at 0.1 % FPR against training time.

One model is trained with ``core.training.train`` in segments, each ending at a point of
``minutes`` of training time (``TrainConfig.budget_s``, resumed from the previous segment's
checkpoint), and every segment's model is evaluated on the benchmark's patch sets
(``core.benchmark.build_patch_sets``, the same fixed split, thresholds from the calibration
radiographs only). Evaluation time is not training time: the minutes are the trainer's own clock.

The last model is also evaluated on patch sets drawn from whole radiographs (no weld region), which
measures what the weld region does to the FPR reached on other radiographs and to the TPR at the
operating point. A reference detector runs on the same patch sets: a Gaussian high-pass filter in
place of the autoencoder (residual = patch - gaussian(patch, sigma)) followed by the same 9 x 9
kernel analysis and calibration; the model has to beat it to be worth its training.

Results go to ``OUT/learning_curve.json`` and ``OUT/figures/learning_curve_<label>.png``; the benchmark
report (``core.report``) shows them when present.

Zones. By default (protocol version 3) the weld region's edge zones by distance have their own
thresholds. ``zones="slope"`` re-evaluates a stored curve's models with zones by the raw film's
slope instead (``core.benchmark.evaluate_ood(zones="slope")``, the reference and the calibration
across films too); the result is a curve of its own, labelled ``<label>_slope-zones``, beside the
curve whose models it re-evaluated.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.benchmark import (BUDGETS, OOD_SETS, PROTOCOL_VERSION, ZONES, build_patch_sets,
                            calibration_slope_bounds, evaluate_ood, evaluate_residual_scores,
                            evaluation, machine_description, make_split,
                            ood_perturbation_sources, patch_sampler, patch_slopes)
from core.loss import LossWeights
from core.residual import EDGE_ZONES_PX, SLOPE_SIGMA_PX

CURVE_MINUTES = (5, 10, 20, 40)
HIGHPASS_SIGMAS = (2.0, 6.0)
SLOPE_SUFFIX = "_slope-zones"  # label of a curve re-evaluated with zones by the film's slope


def curve_label(recipe, zones: str = "distance") -> str:
    """The label a curve of ``recipe`` is stored under: the recipe's, suffixed for slope zones."""
    return recipe.label + (SLOPE_SUFFIX if zones == "slope" else "")


@dataclass(frozen=True)
class Recipe:
    """How the curve's model is trained (``core.training.TrainConfig`` fields and perturbations).

    ``training_set`` is one of ``core.benchmark.OOD_SETS``; ``signed_sni`` gives SNI regions a
    random sign (real weld defects are mostly darker than the weld, the paper's SNI brighter).
    """

    training_set: str = "SNI"
    signed_sni: bool = False
    batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    dropout: float = 0.0
    seed: int = 0
    background_sigma: float | None = None
    background_method: str = "gaussian"
    gain: float = 1.0
    per_weight: float = 1.0

    @property
    def label(self) -> str:
        """Short name of the recipe (one curve per label in ``learning_curve.json``)."""
        parts = [self.training_set + ("-signed" if self.signed_sni else ""), f"dropout{self.dropout:g}"]
        if self.background_sigma:
            parts.append(f"background{self.background_sigma:g}"
                         + ("" if self.background_method == "gaussian" else f"-{self.background_method}"))
        if self.gain != 1.0:
            parts.append(f"gain{self.gain:g}")
        if self.per_weight != 1.0:
            parts.append(f"per{self.per_weight:g}")
        if self.seed:
            parts.append(f"seed{self.seed}")
        return "_".join(parts)

    def describe(self) -> str:
        sni = " (signed)" if self.signed_sni and self.training_set == "SNI" else ""
        norm = (f"; input normalised by background removal, sigma {self.background_sigma:g} px, "
                f"{self.background_method} estimate (core.normalise)" if self.background_sigma
                else "; raw grey levels in")
        gain = f", input gain {self.gain:g} (core.model)" if self.gain != 1.0 else ""
        per = (f", weight {self.per_weight:g} on L_per and L_kern,per" if self.per_weight != 1.0 else "")
        return (f"perturbations {self.training_set}{sni}, batch {self.batch} okay + {self.batch} "
                f"perturbed, Adam lr {self.lr:g} with {self.warmup_steps} warm-up steps, dropout "
                f"{self.dropout:g}, seed {self.seed}{norm}{gain}{per}, core.training defaults otherwise (loss "
                "weights, bfloat16 where the CPU has it, latent guard)")


def normalised_items(items, sigma: float, method: str = "gaussian") -> list:
    """Copies of dataset radiographs whose ``image`` is ``core.normalise.remove_background``'s.

    The weld region stays the one found on the raw radiograph, and each copy keeps the item it was
    made from (``_raw_item``): the film's slope is taken on the raw radiograph
    (``core.benchmark.raw_film``, ``film_gradient``).
    """
    import dataclasses

    from core.benchmark import weld_region
    from core.normalise import remove_background

    out = []
    for item in items:
        copy = dataclasses.replace(item)
        copy.__dict__["image"] = remove_background(item.image, sigma, method)
        copy.__dict__["mask"] = item.mask
        copy._weld_region = weld_region(item)
        copy._raw_item = item
        out.append(copy)
    return out


def _sources(recipe: Recipe, train_items) -> list:
    if recipe.training_set not in OOD_SETS:
        raise ValueError(f"unknown perturbation set {recipe.training_set!r}; choose one of {', '.join(OOD_SETS)}")
    if recipe.training_set == "SNI" and recipe.signed_sni:
        from core.perturbations import SNIPerturbations

        return [SNIPerturbations(signed=True)]
    return ood_perturbation_sources(recipe.training_set, train_items)


def highpass_scorer(sigma: float, edge_band_px=0, slope_bounds=(), haz: bool = False):
    """``score(patches, regions, slopes=None)`` of the high-pass reference detector (see the module
    docstring).

    With ``edge_band_px`` (a band's width or the zones' bounds, ``core.calibration.band_bounds``)
    and regions, the pair over the interior, then one pair per edge zone, as ``patch_scores``;
    with ``slope_bounds`` one pair per slope zone instead (``slopes`` over each patch); ``haz``
    puts the heat-affected zone's pair after the interior's (``core.residual.weld_zones``).
    """
    from scipy import ndimage

    from core.calibration import band_bounds
    from core.model import APERTURE, OFFSET
    from core.residual import aperture_scores
    from core.scanning import aperture_regions

    end = OFFSET + APERTURE

    def score(patches, regions, slopes=None):
        by_slope = tuple(slope_bounds) if regions is not None else ()
        bounds = band_bounds(edge_band_px) if regions is not None and not by_slope else ()
        with_haz = bool(haz) and regions is not None and not by_slope
        out = np.empty((len(patches), 2 + 2 * (len(bounds or by_slope) + with_haz)))
        for i in range(0, len(patches), 256):
            x = patches[i:i + 256].astype(np.float32)
            resid = x - ndimage.gaussian_filter(x, (0, sigma, sigma), mode="reflect")
            roi, edges = aperture_regions(None if regions is None else regions[i:i + 256], bounds,
                                          slopes=None if slopes is None else slopes[i:i + 256],
                                          slope_bounds=by_slope, haz=with_haz)
            out[i:i + 256] = aperture_scores(resid[:, OFFSET:end, OFFSET:end], regions=roi, edges=edges)
        return out

    return score


def _point(numbers: dict) -> dict:
    """The figures of one evaluation kept in the curve."""
    point = {"tpr": numbers["tpr"], "auc": numbers["auc"], "fpr_test": numbers["fpr_test"],
             "fpr_calibration": numbers["fpr_calibration"], "thresholds": numbers["thresholds"]}
    if numbers.get("tpr_by_zone"):
        point["tpr_by_zone"] = numbers["tpr_by_zone"]
    return point


def run_learning_curve(data, out, *, minutes=CURVE_MINUTES, recipe: Recipe = Recipe(),
                       budget: str = "small", compare_whole: bool = True, command: str | None = None,
                       reevaluate: bool = False, extend: bool = False, zones: str = "distance",
                       log=print) -> dict:
    """Train one OOD detector in segments and evaluate it after each; write the results.

    Parameters
    ----------
    data : path-like
        The labelled dataset (``core.datasets.load_dataset``).
    out : path-like
        Output folder (the benchmark's, so the report shows the curve).
    minutes : sequence of float
        Training minutes at which the model is evaluated, increasing.
    recipe : Recipe
    budget : str
        Benchmark budget whose patch counts are used (``core.benchmark.BUDGETS``).
    compare_whole : bool
        Also evaluate the last model, and the reference detector, without the weld region.
    command : str, optional
        The command line, written with the results.
    reevaluate : bool
        Do not train: evaluate the models a previous run of the same recipe left in
        ``OUT/curve/<label>/`` with the current protocol (after a change to the evaluation,
        such as the edge band's thresholds); steps and speed are read from the models.
    extend : bool
        Continue the model of an earlier run of the same recipe from its checkpoint to further
        ``minutes`` (all beyond that run's last point); the new points join its curve.
    zones : str
        ``"distance"`` (the protocol's edge zones) or ``"slope"`` (zones by the raw film's slope,
        ``core.benchmark.evaluate_ood``); slope zones only re-evaluate (``reevaluate``) the models
        of the recipe's curve, and the result is stored as the curve ``<label>_slope-zones``.
    log : callable
        Receives one line of progress text at a time.

    Returns
    -------
    dict
        What is written to ``learning_curve.json``.
    """
    from core.datasets import load_dataset
    from core.modelfile import load_model
    from core.training import TrainConfig, train

    minutes = [float(m) for m in minutes]
    if not minutes or any(b <= a for a, b in zip(minutes, minutes[1:])) or minutes[0] <= 0:
        raise ValueError(f"minutes must be positive and increasing, got {minutes}")
    if zones not in ZONES:
        raise ValueError(f"unknown zones {zones!r}; choose one of {', '.join(ZONES)}")
    slope = zones == "slope"
    if slope and not reevaluate:
        raise ValueError("slope zones re-evaluate the models of a stored curve: add --reevaluate "
                         "(training with them is not supported; the models of the recipe's curve are used)")
    budget_obj = BUDGETS[budget]
    out = Path(out)
    label = curve_label(recipe, zones)
    work = out / "curve" / recipe.label  # the models: those of the recipe's curve
    if reevaluate:
        missing = [m for m in minutes if not (work / f"model_{m:g}min.keras").is_file()]
        if missing:
            raise FileNotFoundError(f"{work}: no models for {', '.join(f'{m:g}' for m in missing)} "
                                    "min to re-evaluate; run the curve without re-evaluation first")
    elif extend:
        if not (work / "model.ckpt" / "state.index").is_file():
            raise FileNotFoundError(f"{work}: no checkpoint to extend; run the curve first")
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    started = time.time()
    previous = next((c for c in load_curves(out) if c.get("label") == recipe.label), None)
    if extend:
        done = [p["minutes"] for p in (previous or {}).get("points", [])]
        if done and minutes[0] <= max(done):
            raise ValueError(f"extend to minutes beyond {max(done):g}, the curve's last point")
    dataset = load_dataset(data, include_unmasked=False)
    if recipe.background_sigma:
        dataset = normalised_items(dataset, recipe.background_sigma, recipe.background_method)
    split = make_split(dataset)
    log(f"split: train {[it.name for it in split.train]}, calibration "
        f"{[it.name for it in split.calibration]}, test {[it.name for it in split.test]}")
    indication = None
    if recipe.background_sigma:  # synthetic anomalies go through the normalisation, as on a film
        from functools import partial

        from core.normalise import normalise_indication

        indication = partial(normalise_indication, sigma=recipe.background_sigma,
                             method=recipe.background_method)
    sets_roi = build_patch_sets(split, budget_obj, roi=True, indication=indication, slopes=slope)
    bounds = calibration_slope_bounds(sets_roi) if slope else ()
    if slope:
        log("slope zones: bounds " + ", ".join(f"{b:.5f}" for b in bounds) + " grey levels/px (the "
            "calibration okay kernels' quantiles)")
    scoring = {"slope_bounds": bounds} if slope else {"edge_band_px": EDGE_ZONES_PX}  # as patch_scores
    sets_whole = (build_patch_sets(split, budget_obj, roi=False, indication=indication)
                  if compare_whole else None)
    log(f"patch sets (weld region) {sets_roi.counts()}")

    sources = _sources(recipe, split.train)
    okay = patch_sampler(split.train, seed=recipe.seed, roi=True).okay
    ckpt = work / "model.ckpt"
    points = []
    rate = {}
    for k, m in enumerate(minutes):
        path = work / f"model_{m:g}min.keras"
        config = TrainConfig(steps=10**7, batch=recipe.batch, lr=recipe.lr,
                             warmup_steps=recipe.warmup_steps, dropout=recipe.dropout,
                             seed=recipe.seed, out=path, checkpoint_dir=ckpt, checkpoint_every=0,
                             budget_s=60.0 * m, overwrite=True, images=[it.name for it in split.train],
                             perturbations=[recipe.training_set], name=f"learning curve {m:g} min",
                             background_sigma=recipe.background_sigma,
                             background_method=recipe.background_method, gain=recipe.gain,
                             weights=LossWeights.default().with_per_weight(recipe.per_weight))

        def progress(info, m=m):
            rate["samples_per_s"] = round(info["samples_per_s"], 1)
            if info["step"] % 100 == 0:
                log(f"  step {info['step']} at {info['elapsed_s'] / 60:.1f}/{m:g} min, loss "
                    f"{info['total']:.4g}, {info['samples_per_s']:.0f} samples/s")

        if reevaluate:
            bundle = load_model(path)
            t = bundle.metadata["training"]  # mean over the whole run (the original's if stored)
            rate["samples_per_s"] = round(2 * t["batch"] * t["steps"] / max(t["elapsed_s"], 1e-9), 1)
        else:
            bundle = train(config, okay, sources, progress=progress,
                           resume_from=ckpt if (k or extend) else None)
        steps = bundle.metadata["training"]["steps"]
        t0 = time.time()
        numbers, _ = evaluate_ood(bundle.model, sets_roi, fpr=budget_obj.fpr, zones=zones)
        point = {"minutes": m, "steps": steps, "samples_per_s": rate.get("samples_per_s"), **_point(numbers),
                 "eval_seconds": round(time.time() - t0, 1),
                 # how often the latent died and was re-centred so far (core.training): a model
                 # whose latent keeps dying outputs a constant and its residual is its input
                 "latent_resets": int(bundle.metadata["training"].get("dead_latent_resets") or 0),
                 "explained_variance": bundle.metadata["training"].get("explained_variance")}
        points.append(point)
        log(f"{m:g} min ({steps} steps): FPR test {100 * numbers['fpr_test']:.2f} %, TPR "
            + ", ".join(f"{n} {100 * v:.0f}" for n, v in numbers["tpr"].items()))
    trained_by = command
    if reevaluate:  # the training command and speed are the original run's (the recipe's curve)
        old = previous or {}
        before = {p["minutes"]: p for p in old.get("points", [])}
        for p in points:
            p["samples_per_s"] = before.get(p["minutes"], {}).get("samples_per_s") or p["samples_per_s"]
        trained_by = old.get("command", command)
    if extend and previous is not None:
        points = previous["points"] + points
        trained_by = f"{previous.get('command')}; then {command}"
    from core.scanning import patch_scores

    final = bundle.model  # the last segment's model
    across = calibration_across_films(
        lambda x, r, s=None: patch_scores(x, final, regions=r, slopes=s, **scoring), split, sets_roi,
        n_per_film=budget_obj.n_calibration // 2, fpr=budget_obj.fpr, **scoring)
    if across is not None:
        across["minutes"] = minutes[-1]
        log("calibration across films: FPR on the film left out " + ", ".join(
            f"{name} {100 * v['fpr']:.2f} %" if v["fpr"] is not None else f"{name} skipped"
            for name, v in across["films"].items())
            + f"; pooled thresholds: FPR test {100 * across['pooled']['fpr_test']:.2f} %")
    result = {
        "label": label, "command": trained_by, "recipe": asdict(recipe),
        "reevaluated_by": command if reevaluate else None,
        "recipe_text": recipe.describe(),
        "budget": budget_obj.name, "protocol": PROTOCOL_VERSION, "evaluation": evaluation(zones),
        "machine": machine_description(), "split": split.to_dict(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "patch_counts": sets_roi.counts(), "points": points, "highpass": {}, "whole_image": None,
        "calibration_across_films": across,
    }
    if slope:  # the models are the recipe's curve's
        result["models"] = f"curve/{recipe.label}"
    for sigma in HIGHPASS_SIGMAS:
        numbers, _ = evaluate_residual_scores(highpass_scorer(sigma, **scoring), sets_roi,
                                              fpr=budget_obj.fpr, **scoring)
        result["highpass"][f"{sigma:g}"] = {"roi": _point(numbers)}
        if sets_whole is not None:
            whole, _ = evaluate_residual_scores(highpass_scorer(sigma), sets_whole, fpr=budget_obj.fpr)
            result["highpass"][f"{sigma:g}"]["whole"] = _point(whole)
    if sets_whole is not None:
        numbers, _ = evaluate_ood(final, sets_whole, fpr=budget_obj.fpr)
        result["whole_image"] = {"minutes": minutes[-1], "patch_counts": sets_whole.counts(),
                                 **_point(numbers)}
    result["wall_seconds"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    curves = replace_curve(load_curves(out), result)
    result["figure"] = f"figures/learning_curve_{label}.png"
    figure_learning_curve(out / result["figure"], result)
    (out / "learning_curve.json").write_text(json.dumps({"curves": curves}, indent=1))
    from core.report import rerender_report

    if rerender_report(out) is not None:
        log(f"report {out / 'report.md'} updated with the learning curve")
    log(f"learning curve written to {out / 'learning_curve.json'} after {result['wall_seconds']:.0f} s")
    return result


def calibration_across_films(score, split, patch_sets, *, n_per_film: int, fpr: float,
                             edge_band_px=EDGE_ZONES_PX, seed: int = 7, slope_bounds=(),
                             slope_sigma_px: float = SLOPE_SIGMA_PX) -> dict:
    """Calibration pooled over the training-side films, and the FPR it reaches on other films.

    Every training-side radiograph (training and calibration films) gives ``n_per_film`` okay
    patches of its weld region. Leave one film out: thresholds from the others' pooled patches,
    FPR reached on the film left out (its patches were never used to set them; a training film's
    patches were seen in training, so its FPR is the optimistic one). Then thresholds from all of
    them, applied to the test sets: the TPR and the test films' FPR of pooled calibration.

    Parameters
    ----------
    score : callable
        ``score(patches, regions)`` -> scores with the edge zones ``edge_band_px``
        (``patch_scores``); with ``slope_bounds`` ``score(patches, regions, slopes)`` -> scores
        with those slope zones (the raw film's slope over each patch, Gaussian ``slope_sigma_px``,
        ``core.benchmark.patch_slopes``; the same bounds for every film, set by the caller).
    split : core.benchmark.Split
    patch_sets : core.benchmark.PatchSets
        The weld-region test sets of the curve (with ``slopes`` for slope zones).

    Returns
    -------
    dict or None
        ``films``: name -> ``{"role", "fpr", "n"}``; ``pooled``: the numbers of
        ``evaluate_residual_scores`` with the pooled thresholds. None with fewer than two
        training-side films.
    """
    from core.calibration import calibrate

    films = [(it, "training") for it in split.train] + [(it, "calibration") for it in split.calibration]
    if len(films) < 2:
        return None  # nothing to leave out
    slope_bounds = tuple(float(b) for b in slope_bounds)
    zoning = ({"slope_bounds": slope_bounds, "slope_sigma_px": slope_sigma_px} if slope_bounds
              else {"edge_band_px": edge_band_px})
    scores = {}
    rng = np.random.default_rng(seed)
    out = {"n_per_film": n_per_film, "films": {}}
    for item, role in films:
        try:
            x, r, where = patch_sampler([item], seed=seed, roi=True).okay_with_roi(
                n_per_film, rng=rng, geometries=True)
        except ValueError as exc:  # a film whose defects leave no room for an okay patch
            out["films"][item.name] = {"role": role, "n": 0, "fpr": None, "skipped": str(exc)}
            continue
        if slope_bounds:
            scores[item.name] = score(x, r, patch_slopes([item], where, sigma=slope_sigma_px))
        else:
            scores[item.name] = score(x, r)
    if len(scores) < 2:
        return None
    for item, role in films:
        if item.name not in scores:
            continue
        others = np.concatenate([v for k, v in scores.items() if k != item.name])
        thr = calibrate(others, fpr=fpr, **zoning)
        out["films"][item.name] = {"role": role, "n": n_per_film,
                                   "fpr": float(np.mean(thr.flagged(scores[item.name])))}
    numbers, _ = evaluate_residual_scores(score, patch_sets, fpr=fpr,
                                          calibration_scores=np.concatenate(list(scores.values())), **zoning)
    out["pooled"] = _point(numbers)
    return out


def replace_curve(curves: list[dict], result: dict) -> list[dict]:
    """``curves`` with ``result`` in the place of the curve of the same label, else appended.

    A re-evaluated or extended curve keeps its place in the report.
    """
    labels = [c.get("label") for c in curves]
    if result["label"] not in labels:
        return [*curves, result]
    return [result if c.get("label") == result["label"] else c for c in curves]


def load_curves(out) -> list[dict]:
    """The curves stored in ``OUT/learning_curve.json`` (none when there is no such file)."""
    path = Path(out) / "learning_curve.json"
    return json.loads(path.read_text())["curves"] if path.is_file() else []


def figure_learning_curve(path, result: dict) -> Path:
    """TPR at the operating point per test set against training minutes (one line per set)."""
    from core.report import BLACK, BLUE, GREEN, GREY, ORANGE, RED, Plot, _canvas

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    points = result["points"]
    x = [p["minutes"] for p in points]
    image = _canvas(760, 440)
    plot = Plot(image, (70, 40, 560, 380), xlim=(0, max(x)), ylim=(0, 100),
                title="OOD detector: TPR [%] at the calibrated thresholds (weld region, test radiographs)",
                xlabel="training minutes (this machine)", ylabel="TPR [%]")
    colours = [BLUE, ORANGE, GREEN, RED, (148, 103, 189), (140, 86, 75), (227, 119, 194), GREY, BLACK]
    entries = []
    for colour, name in zip(colours, points[-1]["tpr"]):
        ys = [100 * p["tpr"].get(name, np.nan) for p in points]
        plot.line(x, ys, colour)
        plot.points(x, ys, colour, r=3)
        entries.append((name, colour))
    left, top, right, bottom = plot.box
    for i, (label, colour) in enumerate(entries):  # legend outside the axes
        y = top + 14 * i
        plot.draw.rectangle([right + 20, y + 2, right + 30, y + 10], fill=colour)
        plot.draw.text((right + 34, y), label, fill=BLACK, font=plot.font)
    image.save(path)
    return path
