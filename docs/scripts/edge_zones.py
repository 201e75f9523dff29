"""Thresholds by distance from the weld region's edge in several zones: worth building? (notes item 8)

The scan has two zones: the weld region's interior and its edge band (32 px), each with its own pair
of thresholds. A 48 px band keeps the bead's shoulder out of the interior's thresholds but takes the
large anomalies near the edge with it. This script measures the general form on the GDXray curve
patch sets: zones bounded at the given distances from the region's edge (e.g. ``32,48`` gives
0-32 px, 32-48 px and the interior beyond 48 px), one (|mean|, std) pair per zone, all chosen
jointly by the calibration's rule (the k-th smallest of every column, the smallest k whose joint
patch-level FPR meets the target; core.calibration.calibrate is the two-zone case).

    .venv/bin/python docs/scripts/edge_zones.py LABEL:MINUTES BOUNDS [BOUNDS ...] [--n-calibration N]

BOUNDS like ``32`` (today's two zones), ``48`` or ``32,48``. Prints TPR % per test set and the FPR on
the okay test patches at 0.1 % FPR, one row per BOUNDS. Models come from docs/benchmark/curve/.
"""
import argparse
import dataclasses
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"
FPR = 0.001


def zone_scores(patches, regions, model, bounds, batch=64):
    """Per patch: (max |mean|, max std) in each zone, zones ordered outermost first, interior last."""
    from core.model import APERTURE, OFFSET
    from core.residual import edge_band, local_mean_std
    from core.scanning import _patch_runner

    run = _patch_runner(model)
    end = OFFSET + APERTURE
    out = np.zeros((len(patches), 2 * (len(bounds) + 1)))
    for i in range(0, len(patches), batch):
        x = patches[i:i + batch]
        res = x[:, OFFSET:end, OFFSET:end] - run(x[..., None]).numpy()[..., 0]
        full = np.asarray(regions[i:i + batch], bool)
        bands = [edge_band(full, b)[:, OFFSET:end, OFFSET:end] for b in bounds]
        roi = full[:, OFFSET:end, OFFSET:end]
        for j, r in enumerate(res):
            m, s = local_mean_std(r)
            m = np.abs(m)
            inside = np.isfinite(m) & roi[j]
            previous = np.zeros_like(inside)
            for z, band in enumerate([b[j] for b in bands] + [np.ones_like(inside)]):
                part = inside & band & ~previous
                previous |= band
                if part.any():
                    out[i + j, 2 * z] = m[part].max()
                    out[i + j, 2 * z + 1] = s[part].max()
    return out


def joint_thresholds(s, fpr=FPR):
    """core.calibration.calibrate's rule for any number of columns."""
    ordered = np.sort(s, axis=0)
    allowed = math.floor(fpr * len(s) + 1e-9)
    lo, hi = 0, len(s) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if np.count_nonzero((s > ordered[mid]).any(axis=1)) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    return ordered[lo]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("bounds", nargs="+")
    parser.add_argument("--n-calibration", type=int, default=4500)
    args = parser.parse_args()

    from core.benchmark import BUDGETS, build_patch_sets, make_split
    from core.datasets import load_dataset
    from core.learning_curve import normalised_items
    from core.modelfile import load_model
    from core.normalise import background_method, background_sigma, normalise_indication

    label, minutes = args.model.rsplit(":", 1)
    bundle = load_model(REPO / "docs/benchmark/curve" / label / f"model_{minutes}min.keras")
    sigma, method = background_sigma(bundle.metadata), background_method(bundle.metadata)
    items = load_dataset(DATA, include_unmasked=False)
    indication = None
    if sigma:
        items = normalised_items(items, sigma, method)
        indication = partial(normalise_indication, sigma=sigma, method=method)
    budget = dataclasses.replace(BUDGETS["small"], n_calibration=args.n_calibration)
    sets = build_patch_sets(make_split(items), budget, roi=True, indication=indication)
    named = {"calibration_okay": sets.calibration_okay, "test_okay": sets.test_okay, **sets.test_sets()}
    names = list(sets.test_sets())
    print(f"| {args.model} zones (px from the edge) | interior |mean| thr. | "
          + " | ".join(names) + " | test FPR |")
    print("|---" * (len(names) + 3) + "|")
    for spec in args.bounds:
        bounds = [int(b) for b in spec.split(",")]
        scores = {k: zone_scores(v, sets.regions[k], bundle.model, bounds) for k, v in named.items()}
        thr = joint_thresholds(scores["calibration_okay"])
        zones = [f"0-{bounds[0]}"] + [f"{a}-{b}" for a, b in zip(bounds, bounds[1:])] + [f">{bounds[-1]}"]
        cells = " | ".join(f"{100 * np.mean((scores[k] > thr).any(axis=1)):.0f}" for k in names)
        fpr_test = 100 * np.mean((scores["test_okay"] > thr).any(axis=1))
        print(f"| {', '.join(zones)} | {thr[-2]:.4f} | {cells} | {fpr_test:.1f} % |", flush=True)
        print("    thresholds per zone (|mean|, std): " + ", ".join(
            f"{z} ({thr[2 * i]:.4f}, {thr[2 * i + 1]:.4f})" for i, z in enumerate(zones)), flush=True)


if __name__ == "__main__":
    main()
