"""Which checkpoint would `weldreview train --validate-every` keep? The stored curve models (notes item 12).

Every stored model of the given learning curves is measured as ``weldreview train --validate-every``
measures a checkpoint (core.validation): on the benchmark split's calibration films only, thresholds
calibrated on 3,000 okay patches at 0.1 % FPR in the distance zones, then the share of each of the
five synthetic test types found on 100 other okay patches of those films. The table puts the
validation next to the curve's test figures (docs/benchmark/learning_curve.json), marks the
checkpoint validation keeps in each curve, and ends with the rank correlation between the
validation score and the test films' mean synthetic TPR over every model measured.

    .venv/bin/python docs/scripts/checkpoint_choice.py [--protocol-okay] [CURVE_LABEL ...]

``--protocol-okay``: the okay patches that set the thresholds are the protocol's calibration patches
(those that set the curve's test thresholds), as the command uses the calibration's own; without
it, a fresh draw of the same films.

Without labels: every curve with stored models in docs/benchmark/curve/. About 25 s per model on
2 cores.
"""
import functools
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"
CURVES = REPO / "docs" / "benchmark" / "curve"
SYNTHETIC = ("circular_hollow", "dogbone", "elongated", "partial_circle", "raster")
DEFECTS = ("high", "mid", "low")


@functools.cache
def validation_for(sigma, method, protocol_okay):
    """The validation set of the split's calibration films, as a model with this input sees them."""
    from core.benchmark import make_split, weld_region
    from core.datasets import load_dataset
    from core.learning_curve import normalised_items
    from core.normalise import normalise_indication
    from core.validation import validation_set

    items = load_dataset(DATA, include_unmasked=False)
    if sigma:
        items = normalised_items(items, sigma, method)
    calib = [it for it in make_split(items).calibration if it.mask_path is not None]
    indication = partial(normalise_indication, sigma=sigma, method=method) if sigma else None
    okay = None
    if protocol_okay:  # the okay patches that set the curve's thresholds
        from core.benchmark import BUDGETS, build_patch_sets

        sets = build_patch_sets(make_split(items), BUDGETS["small"], roi=True, indication=indication)
        okay = (sets.calibration_okay, sets.regions["calibration_okay"])
    vset = validation_set([it.image for it in calib], [it.mask for it in calib],
                          [weld_region(it) for it in calib], indication=indication, okay=okay)
    print(f"validation set: {[it.name for it in calib]}, {len(vset.okay)} okay patches, sigma {sigma}",
          flush=True)
    return vset


def main():
    from scipy.stats import spearmanr

    from core.modelfile import load_model
    from core.normalise import background_method, background_sigma
    from core.validation import validate

    curves = {c["label"]: c for c in json.loads((REPO / "docs/benchmark/learning_curve.json").read_text())["curves"]}
    args = sys.argv[1:]
    protocol_okay = "--protocol-okay" in args
    labels = [a for a in args if a != "--protocol-okay"] or [p.name for p in sorted(CURVES.iterdir()) if list(p.glob("model_*min.keras"))]
    print("| curve | minutes | validation % | " + " | ".join(SYNTHETIC) + " | test: " + " / ".join(DEFECTS)
          + " | test: synthetic | test synthetic mean | kept |")
    pairs = []
    for label in labels:
        rows = []
        for point in curves[label]["points"]:
            path = CURVES / label / f"model_{point['minutes']:g}min.keras"
            if not path.is_file():
                continue
            bundle = load_model(path)
            sigma = background_sigma(bundle.metadata)
            v = validate(bundle.model, validation_for(sigma, background_method(bundle.metadata) if sigma else None,
                                                      protocol_okay))
            tpr = point["tpr"]
            test_syn = float(np.mean([tpr[k] for k in SYNTHETIC]))
            rows.append((point["minutes"], v, tpr, test_syn))
            pairs.append((v["score"], test_syn))
        if not rows:
            continue
        kept = max(range(len(rows)), key=lambda i: (rows[i][1]["score"], i))  # ties: the later
        for i, (minutes, v, tpr, test_syn) in enumerate(rows):
            print(f"| {label} | {minutes:g} | {100 * v['score']:.1f} | "
                  + " | ".join(f"{100 * v['tpr'][k]:.0f}" for k in SYNTHETIC) + " | "
                  + "/".join(f"{100 * tpr[k]:.0f}" for k in DEFECTS) + " | "
                  + "/".join(f"{100 * tpr[k]:.0f}" for k in SYNTHETIC) + f" | {100 * test_syn:.1f} | "
                  + ("kept" if i == kept else "") + " |", flush=True)
    if len(pairs) > 2:
        rho, p = spearmanr(*zip(*pairs))
        print(f"Spearman rank correlation, validation score against test synthetic mean, {len(pairs)} models: "
              f"{rho:.2f} (p {p:.2g})")


if __name__ == "__main__":
    main()
