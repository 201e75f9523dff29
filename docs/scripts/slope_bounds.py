"""Slope-zone bounds chosen on the calibration films only, then the test figures of every candidate.

Notes item 11. Validation sets are cut from the calibration films, never the test films: the five
synthetic test types added to fresh okay patches (another seed than the calibration patches), and
defect patches of those films. Thresholds come from the protocol's calibration okay patches, as
in the benchmark. Candidates: the distance zones (protocol 3), one slope bound at a quantile of
the okay calibration kernels' slopes, and every pair of two. The chosen one has the highest mean
TPR over the synthetic validation sets. Also printed: the FPR of one calibration film's
thresholds on the other (both ways), and the test figures.

    .venv/bin/python docs/scripts/slope_bounds.py CURVE_LABEL/model_5min [MOST_BOUNDS]

MOST_BOUNDS (default 2): candidates with up to that many slope bounds (3: 92 candidates).

Models come from docs/benchmark/curve/ (background removal sigma 24, twicing). About 4 minutes on
2 cores.
"""
import itertools
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "docs" / "scripts"))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"

from core.benchmark import (BUDGETS, DATA_SEED, TEST_ANOMALIES, build_patch_sets, make_split,  # noqa: E402
                            patch_sampler, patch_slopes)
from core.calibration_review import origins  # noqa: E402
from core.contrast import GRADES, grade_patches  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.learning_curve import normalised_items  # noqa: E402
from core.model import APERTURE  # noqa: E402
from core.modelfile import load_model  # noqa: E402
from core.normalise import normalise_indication  # noqa: E402
from core.perturbations import SyntheticAnomalies  # noqa: E402
from core.residual import edge_zones, local_mean_std, slope_zones  # noqa: E402
from core.sampler import aperture  # noqa: E402
from core.scanning import _patch_runner  # noqa: E402
from edge_zones import joint_thresholds  # noqa: E402  (the calibration rule, any columns)

QUANTILES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def validation_sets(split, n, indication):
    """Synthetic anomalies on fresh okay patches of the calibration films, and their defects."""
    calib = [it for it in split.calibration if it.mask_path is not None]
    sampler = patch_sampler(calib, seed=DATA_SEED + 101, roi=True)
    rng = np.random.default_rng(DATA_SEED + 100)
    out = {}
    for j, kind in enumerate(TEST_ANOMALIES):
        base, reg, geos = sampler.okay_with_roi(n, rng=rng, geometries=True)
        delta, weight = SyntheticAnomalies(kind).sample(
            rng, n, regions=reg, place_rng=np.random.default_rng([DATA_SEED + 100, j]))
        added = weight * delta
        out[kind] = ((base + indication(added)).astype(np.float32), reg,
                     patch_slopes(calib, geos, anomalies=added))
    x, masks, reg, geos = sampler.defect(300, rng=rng, with_roi=True, geometries=True)
    _, grades = grade_patches(x, masks)
    print("calibration-film defect patches by grade", {g: int(np.sum(grades == g)) for g in GRADES})
    out["defects"] = (x, reg, patch_slopes(calib, geos))
    return out


def training_okay(split, n):
    """Okay patches of the training films (seen in training: an FPR on them is optimistic, but
    their beads are flatter than the calibration films', as the test films' are)."""
    train = [it for it in split.train if it.mask_path is not None]
    sampler = patch_sampler(train, seed=DATA_SEED + 103, roi=True)
    x, reg, geos = sampler.okay_with_roi(n, rng=np.random.default_rng(DATA_SEED + 102), geometries=True)
    return x, reg, patch_slopes(train, geos)


def kernel_maps(run, x, reg, slopes):
    """|mean|, std, slope, region and the distance zones over each aperture."""
    m_all = np.zeros((len(x), APERTURE, APERTURE), np.float32)
    sd_all = np.zeros_like(m_all)
    for i in range(0, len(x), 64):
        res = aperture(x[i:i + 64]) - run(x[i:i + 64, ..., None]).numpy()[..., 0]
        for j, r in enumerate(res):
            m, sd = local_mean_std(r)
            m_all[i + j], sd_all[i + j] = np.abs(m), sd
    z0, z1 = edge_zones(reg, (32, 48))
    return m_all, sd_all, aperture(slopes), aperture(reg), aperture(z0), aperture(z1)


def scores(maps, zone_fn):
    m, sd, g, roi, z0, z1 = maps
    zones = zone_fn(g, roi, z0, z1)
    out = np.zeros((len(m), 2 * len(zones)))
    for k, z in enumerate(zones):
        part = z & roi & np.isfinite(m)
        some = part.any(axis=(1, 2))
        out[:, 2 * k] = np.where(some, np.where(part, m, 0).max(axis=(1, 2)), 0)
        out[:, 2 * k + 1] = np.where(some, np.where(part, sd, 0).max(axis=(1, 2)), 0)
    return out


def candidates(okay_slopes, most=2):
    """The distance zones, then slope zones with 1 to ``most`` bounds at ``QUANTILES``."""
    out = {"distance 32,48": lambda g, roi, z0, z1: [roi & ~z0 & ~z1, z0, z1]}
    q = {a: float(np.quantile(okay_slopes, a)) for a in QUANTILES}
    for n in range(1, most + 1):
        for qs in itertools.combinations(QUANTILES, n):
            out["slope " + ",".join(f"q{a}" for a in qs)] = partial(_by_slope, bounds=tuple(q[a] for a in qs))
    return out


def _by_slope(g, roi, z0, z1, *, bounds):
    zones = slope_zones(roi, g, bounds)
    flattest = roi.copy()
    for z in zones:
        flattest &= ~z
    return [flattest, *zones]


def main():
    label = sys.argv[1]
    most = int(sys.argv[2]) if len(sys.argv) > 2 else 2  # bounds at most per candidate
    indication = partial(normalise_indication, sigma=24, method="twicing")
    split = make_split(normalised_items(load_dataset(DATA, include_unmasked=False), 24, "twicing"))
    small = BUDGETS["small"]
    sets = build_patch_sets(split, small, roi=True, indication=indication, slopes=True)
    run = _patch_runner(load_model(REPO / "docs/benchmark/curve" / f"{label}.keras").model)
    tests = {"test_okay": sets.test_okay, **sets.test_sets()}
    maps = {name: kernel_maps(run, x, sets.regions[name], sets.slopes[name]) for name, x in
            {"calibration_okay": sets.calibration_okay, **tests}.items()}
    val = {f"val_{k}": kernel_maps(run, *v) for k, v in validation_sets(split, small.n_synthetic, indication).items()}
    train_okay = kernel_maps(run, *training_okay(split, 1000))
    film = np.array([o.film for o in origins({"okay_origins": sets.calibration_origins})])
    films = sorted(set(film))
    okay = maps["calibration_okay"]
    names = [n for n in tests if n != "test_okay"]
    print("| zones | validation mean | " + " | ".join(v[4:] for v in val) + " | "
          + " | ".join(f"thr. {f} -> other" for f in films) + " | training films' FPR | "
          + " | ".join(names) + " | test FPR |")
    best = None
    for name, fn in candidates(okay[2][okay[3]], most).items():
        cal = scores(okay, fn)
        t = joint_thresholds(cal)
        v = {n: 100 * np.mean((scores(m, fn) > t).any(axis=1)) for n, m in val.items()}
        mean_syn = np.mean([x for n, x in v.items() if n != "val_defects"])
        loo = [100 * np.mean((cal[film != f] > joint_thresholds(cal[film == f])).any(axis=1)) for f in films]
        train_fpr = 100 * np.mean((scores(train_okay, fn) > t).any(axis=1))
        te = [100 * np.mean((scores(maps[n], fn) > t).any(axis=1)) for n in names]
        fpr = 100 * np.mean((scores(maps["test_okay"], fn) > t).any(axis=1))
        print(f"| {name} | {mean_syn:.1f} | " + " | ".join(f"{x:.0f}" for x in v.values()) + " | "
              + " | ".join(f"{x:.1f} %" for x in loo) + f" | {train_fpr:.1f} % | "
              + " | ".join(f"{x:.0f}" for x in te)
              + f" | {fpr:.1f} % |", flush=True)
        best = max(best or (mean_syn, name), (mean_syn, name))
    print(f"chosen on the calibration films: {best[1]} (synthetic validation mean {best[0]:.1f} %)")


if __name__ == "__main__":
    main()
