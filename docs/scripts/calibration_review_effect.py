"""What a calibration review does to the learning-curve models' detection on GDXray.

The benchmark's calibration films carry things that are not accepted weld and that their defect
masks do not cover; the okay patches that hold them set the 0.1 % thresholds (notes.md, item 7).
This script redraws the curve's weld-region patch sets with ``N`` calibration patches (the review
file's; the first 3,000 are the curve's own, the draw only goes on), scores them with stored curve
models, and prints TPR per test set and the FPR on the okay test patches, at thresholds calibrated
on all ``N`` okay calibration patches and on those left after the review's exclusions
(``docs/benchmark/calibration_review.json``: patch index, film, centre, reason; each index is
checked against the film and centre of the patch redrawn). ``--tail K`` lists the K patches
nearest the reviewed thresholds (for a next round of review) and ``--png FILE`` shows them: the
patch as the model sees it and its residual (not committed: GDXray pixels).

    .venv/bin/python docs/scripts/calibration_review_effect.py LABEL:MINUTES [...] [--tail K] [--png FILE] [--edge-band PX]

Models come from docs/benchmark/curve/LABEL/model_MINUTESmin.keras (made by ``weldreview benchmark
--curve``, not committed). The recipe (background removal) is read from each model's metadata.
"""
import argparse
import dataclasses
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"
REVIEW = REPO / "docs" / "benchmark" / "calibration_review.json"


def patch_sets(metadata: dict, n_calibration: int, cache: dict):
    from core.benchmark import BUDGETS, build_patch_sets, make_split
    from core.datasets import load_dataset
    from core.learning_curve import normalised_items
    from core.normalise import background_method, background_sigma, normalise_indication

    sigma, method = background_sigma(metadata), background_method(metadata)
    if (sigma, method) not in cache:
        items = load_dataset(DATA, include_unmasked=False)
        indication = None
        if sigma:
            items = normalised_items(items, sigma, method)
            indication = partial(normalise_indication, sigma=sigma, method=method)
        budget = dataclasses.replace(BUDGETS["small"], n_calibration=n_calibration)
        cache[(sigma, method)] = build_patch_sets(make_split(items), budget, roi=True, indication=indication)
    return cache[(sigma, method)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="LABEL:MINUTES of stored curve models")
    parser.add_argument("--review", default=str(REVIEW))
    parser.add_argument("--tail", type=int, default=0)
    parser.add_argument("--png", default=None)
    parser.add_argument("--edge-band", type=int, default=32, help="edge band width, px (the protocol's: 32)")
    args = parser.parse_args()

    from core.benchmark import evaluate_ood
    from core.calibration import calibrate
    from core.calibration_review import origins
    from core.modelfile import load_model

    review = json.loads(Path(args.review).read_text())
    n_cal = int(review["protocol"]["n_calibration"])
    excluded = [p["index"] for p in review["excluded"]]
    cache: dict = {}
    rows = []
    for spec in args.models:
        label, minutes = spec.rsplit(":", 1)
        bundle = load_model(REPO / "docs/benchmark/curve" / label / f"model_{minutes}min.keras")
        sets = patch_sets(bundle.metadata, n_cal, cache)
        where = origins({"okay_origins": sets.calibration_origins})
        for p in review["excluded"]:  # the redraw must be the reviewed draw
            o = where[p["index"]]
            if o.film != p["film"] or np.hypot(*np.subtract(o.centre, p["centre"])) > 0.5:
                raise SystemExit(f"patch {p['index']} is {o.film} {o.centre}, the review says "
                                 f"{p['film']} {p['centre']}: the patch draw changed; review again")
        _, scores = evaluate_ood(bundle.model, sets, fpr=0.001, edge_band_px=args.edge_band)
        cal = scores["calibration_okay"]
        keep = np.setdiff1d(np.arange(len(cal)), excluded)
        out = {"model": spec, "edge_band_px": args.edge_band}
        for name, thr in (("all", calibrate(cal, fpr=0.001, edge_band_px=args.edge_band)),
                          ("reviewed", calibrate(cal[keep], fpr=0.001, edge_band_px=args.edge_band))):
            out[name] = {"thresholds": [round(float(v), 4) for v in thr.columns(4)],
                         "fpr_test": float(np.mean(thr.flagged(scores["test_okay"]))),
                         "tpr": {k: float(np.mean(thr.flagged(v))) for k, v in scores.items()
                                 if k not in ("calibration_okay", "test_okay")}}
        rows.append(out)
        print(json.dumps(out), flush=True)
        if args.tail:
            show_tail(bundle, sets, cal, keep, excluded, where, args.tail, args.png, args.edge_band)
    names = list(rows[0]["all"]["tpr"])
    print("\n| model | calibration | " + " | ".join(names) + " | test FPR |")
    print("|---" * (len(names) + 3) + "|")
    for r in rows:
        for name in ("all", "reviewed"):
            cells = " | ".join(f"{100 * r[name]['tpr'][k]:.0f}" for k in names)
            print(f"| {r['model']} | {name} | {cells} | {100 * r[name]['fpr_test']:.1f} % |")


def show_tail(bundle, sets, cal, keep, excluded, where, k, png, band):
    from core.calibration import calibrate
    from core.model import APERTURE, OFFSET
    from core.scanning import _patch_runner

    thr = calibrate(cal[keep], fpr=0.001, edge_band_px=band)
    ratio = thr.combined(cal)
    ratio[excluded] = -np.inf
    order = np.argsort(-ratio)[:k]
    names = ["interior |mean|", "interior std", "band |mean|", "band std"]
    for rank, i in enumerate(order):
        which = names[int(np.argmax(cal[i] / thr.columns(4)))]
        print(f"{rank:3d} #{i:5d} {ratio[i]:.3f} {np.round(cal[i], 4)} {which:15s} "
              f"{where[i].film} ({where[i].centre[0]:.0f}, {where[i].centre[1]:.0f})")
    if png:
        from skimage.io import imsave

        x = sets.calibration_okay[order]
        recon = _patch_runner(bundle.model)(x[..., None]).numpy()[..., 0]
        tiles = []
        for patch, rec in zip(x, recon):
            ap = patch[OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
            lo, hi = np.percentile(ap, [1, 99])
            tiles.append(np.concatenate([np.clip((ap - lo) / (hi - lo + 1e-6), 0, 1), np.ones((APERTURE, 4)),
                                         np.clip((ap - rec) / 0.12 + 0.5, 0, 1), np.ones((APERTURE, 12))], 1))
        rows = [np.concatenate(tiles[j:j + 3] + [np.ones_like(tiles[0])] * (3 - len(tiles[j:j + 3])), 1)
                for j in range(0, len(tiles), 3)]
        imsave(png, (np.concatenate([np.pad(r, ((0, 8), (0, 0)), constant_values=1) for r in rows]) * 255
                     ).astype(np.uint8))
        print(f"{png}: per patch the film as the model sees it (stretched) and the residual (+-0.06)")


if __name__ == "__main__":
    main()
