"""Calibrating on more accepted films: GDXray's two round-robin films with no indication (notes
item 18).

GDXray's ``W0003/real-values.xls`` lists, per 1 cm weld section, the flaws of the round-robin
films. Two films have "No indication" in all 20 sections: RRT-202R (W0003_0015) and RRT-210R
(W0003_0023). They have no pixel masks and need none: every patch of their weld region is
accepted weld. This script adds their okay patches to the benchmark's calibration and compares
thresholds from

- the benchmark's two calibration films (W0001_0004, W0001_0009),
- the two new films alone,
- all four pooled,

on the benchmark's test sets (same draws as ``core.benchmark.build_patch_sets``), in the
application's region (bead + heat-affected zone, zones from the bead's edge), then leaves each of
the four films out in turn (``core.film_check``). With ``--per-film N`` it prints instead the
median and 99 % quantile of every score column over N okay patches of each film (W0001 films
with masks and the two new ones; a film whose masks leave no room for a clear patch is skipped).

    .venv/bin/python docs/scripts/more_films.py MODEL.keras [...] [--rules common,tail] [--per-film N]

Models of the live recipe (notes item 16), e.g. ``weldreview train --data TRAINING_FILMS
--background 24 --per-weight 0.25 --perturbations SNI --dropout 0 --warmup 50 --steps 240``.
About 8 minutes per model on 2 cores.
"""
import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"

from core.benchmark import (BUDGETS, DATA_SEED, build_patch_sets, evaluate_residual_scores,  # noqa: E402
                            make_split, patch_sampler)
from core.calibration import RULES  # noqa: E402
from core.calibration_review import ORIGINS_KEY, origins  # noqa: E402
from core.datasets import GDXRAY_NO_INDICATION, LabelledRadiograph, load_dataset  # noqa: E402
from core.film_check import leave_one_film_out  # noqa: E402
from core.learning_curve import normalised_items  # noqa: E402
from core.modelfile import load_model  # noqa: E402
from core.normalise import normalise_indication  # noqa: E402
from core.residual import EDGE_ZONES_PX  # noqa: E402
from core.roi import find_weld  # noqa: E402
from core.scanning import patch_scores  # noqa: E402

FLAWLESS = tuple(f"W0003_{n:04d}" for n in GDXRAY_NO_INDICATION)  # W0003_0015, W0003_0023
SETS = ("high", "mid", "low", "circular_hollow", "dogbone", "elongated", "partial_circle", "raster")
N_EXTRA = 3000  # as many okay patches as the benchmark's calibration (budget small)
SCORING = {"edge_band_px": EDGE_ZONES_PX, "haz": True}


class FlawlessFilm(LabelledRadiograph):
    """A film with no indication at all: its mask is empty, so every weld patch is okay."""

    @property
    def mask(self):
        return np.zeros(self.image.shape, bool)


def flawless_films() -> list:
    # mask_path names the film itself only so the sampler takes it (it skips unmasked films)
    return [FlawlessFilm(name, DATA / "W0003" / f"{name}.png", DATA / "W0003" / f"{name}.png", name)
            for name in FLAWLESS]


def application_region(items) -> None:
    for item in items:
        item._weld_region = find_weld(item.image, include_haz=True).labels()


def rates(numbers) -> str:
    tpr = numbers["tpr"]
    return (" / ".join(f"{100 * tpr[k]:.0f}" for k in SETS) + f"; test FPR {100 * numbers['fpr_test']:.1f} %"
            + f"; interior |mean| threshold {numbers['thresholds']['mean']:.4f}")


def per_film(models, n: int) -> None:
    items = load_dataset(DATA, include_unmasked=False) + flawless_films()
    application_region(items)
    films = normalised_items(items, 24, "twicing")
    for path in models:
        model = load_model(path).model
        print(path, "columns: interior |mean|, std; HAZ |mean|, std; 0-32 px |mean|, std; 32-48 px |mean|, std")
        for k, film in enumerate(films):
            try:
                x, r = patch_sampler([film], seed=DATA_SEED + 10 + k, roi=True).okay_with_roi(
                    n, rng=np.random.default_rng(DATA_SEED + 20 + k))
            except ValueError as exc:
                print(f"  {film.name}: skipped ({exc})")
                continue
            q = np.quantile(patch_scores(x, model, regions=r, **SCORING), [0.5, 0.99], axis=0)
            print(f"  {film.name}: median " + " ".join(f"{v:.4f}" for v in q[0])
                  + "; 99 % " + " ".join(f"{v:.4f}" for v in q[1]), flush=True)


def compare(models, rules) -> None:
    items = load_dataset(DATA, include_unmasked=False)
    extra = flawless_films()
    application_region(items + extra)
    indication = partial(normalise_indication, sigma=24, method="twicing")
    sets = build_patch_sets(make_split(normalised_items(items, 24, "twicing")), BUDGETS["small"], roi=True,
                            indication=indication)
    extra = normalised_items(extra, 24, "twicing")
    x_extra, r_extra, geos = patch_sampler(extra, seed=DATA_SEED + 2, roi=True).okay_with_roi(
        N_EXTRA, rng=np.random.default_rng(DATA_SEED + 3), geometries=True)
    films = np.array([Path(o.source).stem for o in origins({ORIGINS_KEY: sets.calibration_origins})]
                     + [extra[g.image].name for g in geos])
    print("calibration patches per film:", {f: int((films == f).sum()) for f in dict.fromkeys(films)})
    for path in models:
        model = load_model(path).model
        memo = {}

        def score(x, r, s=None):
            if id(x) not in memo:  # every rule and calibration reuses the test sets' scores
                memo[id(x)] = patch_scores(x, model, regions=r, **SCORING)
            return memo[id(x)]

        base = score(sets.calibration_okay, sets.regions["calibration_okay"])
        more = score(x_extra, r_extra)
        for rule in rules:
            for label, cal in (("the benchmark's 2 films", base), ("the 2 flawless films", more),
                               ("all 4 pooled", np.concatenate([base, more]))):
                numbers, _ = evaluate_residual_scores(score, sets, fpr=0.001, rule=rule,
                                                      calibration_scores=cal, **SCORING)
                print(f"{path} {rule}, calibrated on {label}: {rates(numbers)}", flush=True)
            checks = leave_one_film_out(np.concatenate([base, more]), films, fpr=0.001, rule=rule)
            print(f"{path} {rule}, each of the 4 left out: "
                  + ", ".join(f"{c.name} {100 * c.fpr:.2f} % ({c.flagged} of {c.n})" for c in checks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rules", default="common")
    parser.add_argument("--per-film", type=int, metavar="N")
    args = parser.parse_args()
    rules = args.rules.split(",")
    if set(rules) - set(RULES):
        parser.error(f"--rules: choose from {', '.join(RULES)}")
    if args.per_film:
        per_film(args.models, args.per_film)
    else:
        compare(args.models, rules)


if __name__ == "__main__":
    main()
