"""The benchmark's figures with the application's weld region (bead + heat-affected zone); notes
items 13, 15 and 16.

The protocol is unchanged except the weld region of every film: ``core.roi.find_weld(image,
include_haz=True)``, as the main window scans and ``weldreview calibrate`` calibrates, instead of
the bead alone (``core.benchmark.weld_region``). Patch centres, the scored kernels and the zones
follow it. Regions:

- ``bead``: the benchmark's, the bead alone;
- ``haz``: the application's, as a label map (``WeldROI.labels``): the distance zones are measured
  from the bead's edge and the heat-affected zone has a pair of its own (item 15);
- ``haz-whole``: the application's region taken whole, zones from its edge (before item 15).

Prints, per model, kind of zones and calibration rule, TPR % at 0.1 % FPR (high / mid / low, then
the five synthetic types), the FPR on the test films and the interior |mean| threshold.

    .venv/bin/python docs/scripts/haz_region.py bead|haz|haz-whole MODEL.keras [...] [--rules common,tail]

``--rules``: the calibration rules to compare (``core.calibration.RULES``; default common); the
patches are scored once per model and kind of zones whatever the number of rules.

Models of the live recipe (background removal sigma 24, twicing), e.g.
docs/benchmark/curve/SNI_dropout0_background24-twicing_gain8_per0.25/model_5min.keras. About 4
minutes per model on 2 cores.
"""
import sys
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"

from core.benchmark import (BUDGETS, build_patch_sets, calibration_slope_bounds,  # noqa: E402
                            evaluate_residual_scores, make_split)
from core.calibration import RULES  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.learning_curve import normalised_items  # noqa: E402
from core.modelfile import load_model  # noqa: E402
from core.normalise import normalise_indication  # noqa: E402
from core.residual import EDGE_ZONES_PX  # noqa: E402
from core.roi import find_weld  # noqa: E402
from core.scanning import patch_scores  # noqa: E402

REGIONS = {"bead": "bead (the benchmark)",
           "haz": "bead + HAZ (the application), zones from the bead's edge, the HAZ its own zone",
           "haz-whole": "bead + HAZ taken whole, zones from its edge (before notes item 15)"}
SETS = ("high", "mid", "low", "circular_hollow", "dogbone", "elongated", "partial_circle", "raster")


def zones_line(thr: dict) -> str:
    """The other zones' |mean| thresholds: the HAZ's and the edge zones'."""
    out = f", HAZ {thr['haz_mean']:.4f}" if "haz_mean" in thr else ""
    if "edge_mean" in thr:
        out += f", edge zones {thr['edge_mean']:.4f}" + "".join(f" / {m:.4f}" for _, m, _ in thr.get("inner_bands", []))
    return out


def scored_once(score):
    """``score`` remembered per set of patches: every rule is applied to the same scores."""
    memo = {}

    def cached(x, r, s=None):
        key = (id(x), id(r), id(s))
        if key not in memo:
            memo[key] = score(x, r, s)
        return memo[key]
    return cached


def main():
    args = sys.argv[1:]
    rules = ["common"]
    if "--rules" in args:
        at = args.index("--rules")
        rules = args[at + 1].split(",")
        del args[at:at + 2]
    if not args or args[0] not in REGIONS or set(rules) - set(RULES):
        sys.exit(f"usage: haz_region.py {'|'.join(REGIONS)} MODEL ... [--rules {','.join(RULES)}]")
    region = args[0]
    items = load_dataset(DATA, include_unmasked=False)
    if region != "bead":  # the region core.benchmark.weld_region would otherwise find and cache
        for item in items:
            weld = find_weld(item.image, include_haz=True)
            item._weld_region = weld.labels() if region == "haz" else weld.mask
    indication = partial(normalise_indication, sigma=24, method="twicing")
    sets = build_patch_sets(make_split(normalised_items(items, 24, "twicing")), BUDGETS["small"], roi=True,
                            indication=indication, slopes=True)
    print("region:", REGIONS[region])
    for path in args[1:]:
        model = load_model(path).model
        for zones in ("distance", "slope"):  # as core.benchmark.evaluate_ood scores them
            scoring = ({"slope_bounds": calibration_slope_bounds(sets)} if zones == "slope"
                       else {"edge_band_px": EDGE_ZONES_PX, "haz": region == "haz"})
            score = scored_once(lambda x, r, s=None: patch_scores(x, model, regions=r, slopes=s, **scoring))
            for rule in rules:
                numbers, _ = evaluate_residual_scores(score, sets, fpr=0.001, rule=rule, **scoring)
                tpr = numbers["tpr"]
                print(f"{path} {zones} {rule}: " + " / ".join(f"{100 * tpr[k]:.0f}" for k in SETS)
                      + f"; test FPR {100 * numbers['fpr_test']:.1f} %; interior |mean| threshold "
                      f"{numbers['thresholds']['mean']:.4f}" + zones_line(numbers["thresholds"]), flush=True)


if __name__ == "__main__":
    main()
