"""Zones by the bead's local slope instead of distance from the weld region's edge: worth building?

Notes item 9. The edge zones (0-32, 32-48 px, interior) assume every bead has the same profile at
the same distance from the region's edge; on GDXray the synthetic anomalies missed by the live
models lie in the 0-32 px zone, and the 32-48 px zone fits one calibration film's shoulder. Here
kernels are grouped instead by the slope of the raw film at their centre (gradient magnitude after
a Gaussian of S px, so that a film's own bead shape decides), with one (|mean|, std) pair per
zone, chosen jointly by the calibration's rule. Slope bounds are quantiles of the okay calibration
kernels' slopes. The defect patches are taken in the grades of the normalised film (the
protocol's), their slope from the same patch cut from the raw film.

    .venv/bin/python docs/scripts/slope_zones.py CURVE_LABEL/model_5min [S]

Models come from docs/benchmark/curve/ (background removal sigma 24, twicing). Prints TPR % at
0.1 % FPR per synthetic set, the FPR on the okay test patches, and the zones' |mean| thresholds.
"""
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"

from core.benchmark import BUDGETS, TEST_ANOMALIES, build_patch_sets, make_split  # noqa: E402
from core.contrast import GRADES, grade  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.learning_curve import normalised_items  # noqa: E402
from core.model import APERTURE, OFFSET  # noqa: E402
from core.modelfile import load_model  # noqa: E402
from core.normalise import normalise_indication  # noqa: E402
from core.residual import edge_zones, local_mean_std  # noqa: E402
from core.scanning import _patch_runner  # noqa: E402
from edge_zones import joint_thresholds  # noqa: E402  (docs/scripts: the calibration rule, any columns)

label = sys.argv[1]
S = float(sys.argv[2]) if len(sys.argv) > 2 else 16
raw_items = load_dataset(DATA, include_unmasked=False)
norm_items = normalised_items(raw_items, 24, "twicing")
small = BUDGETS["small"]
sets = build_patch_sets(make_split(norm_items), small, roi=True,
                        indication=partial(normalise_indication, sigma=24, method="twicing"))
raw = build_patch_sets(make_split(raw_items), small, roi=True)  # normalised_items made copies
# The defect patches are graded on each build's own pixels, so the raw build's grade sets differ
# from the normalised one's: put the raw defect patches back in drawing order and take them in the
# normalised build's grades (the protocol's).
grades_norm = np.array([grade(c) for c in sets.contrasts])  # drawing order
grades_raw = np.array([grade(c) for c in raw.contrasts])
raw_all = np.empty((len(raw.contrasts), *raw.test_okay.shape[1:]), raw.test_okay.dtype)
raw_regions = np.empty(raw_all.shape, bool)
for g in GRADES:
    raw_all[grades_raw == g], raw_regions[grades_raw == g] = raw.test_defects[g], raw.regions[g]
for g in GRADES:  # the same defect patches, cut at the same places
    assert np.array_equal(raw_regions[grades_norm == g], sets.regions[g]), g
raw_defects = {g: raw_all[grades_norm == g] for g in GRADES}
names = ["calibration_okay", "test_okay", *(g for g in GRADES if len(sets.test_defects[g])),
         *TEST_ANOMALIES]
for n in names:
    if n not in GRADES:
        assert np.array_equal(sets.regions[n], raw.regions[n]), n
print("same geometry: yes")
model = load_model(REPO / "docs/benchmark/curve" / f"{label}.keras").model
run = _patch_runner(model)
end = OFFSET + APERTURE


def get(ps, n):
    if n in GRADES and ps is raw:
        return raw_defects[n]
    return ps.calibration_okay if n == "calibration_okay" else ps.test_okay if n == "test_okay" else ps.test_sets()[n]


maps = {}
for n in names:
    x, xr, reg = get(sets, n), get(raw, n), sets.regions[n]
    M = np.zeros((len(x), APERTURE, APERTURE), np.float32)
    SD, G = np.zeros_like(M), np.zeros_like(M)
    for i in range(0, len(x), 64):
        res = x[i:i+64, OFFSET:end, OFFSET:end] - run(x[i:i+64, ..., None]).numpy()[..., 0]
        for j, r in enumerate(res):
            m, s = local_mean_std(r)
            M[i+j], SD[i+j] = np.abs(m), s
            sm = ndimage.gaussian_filter(xr[i+j].astype(np.float64), S)
            gy, gx = np.gradient(sm)
            G[i+j] = np.hypot(gy, gx)[OFFSET:end, OFFSET:end]
    z0, z1 = edge_zones(reg, (32, 48))
    maps[n] = (M, SD, G, reg[:, OFFSET:end, OFFSET:end], z0[:, OFFSET:end, OFFSET:end], z1[:, OFFSET:end, OFFSET:end])
    print(n, "scored", flush=True)


def scores(n, zone_fn):
    M, SD, G, roi, z0, z1 = maps[n]
    zs = zone_fn(G, roi, z0, z1)
    out = np.zeros((len(M), 2 * len(zs)))
    for k, z in enumerate(zs):
        part = z & roi & np.isfinite(M)
        out[:, 2*k] = np.where(part.any(axis=(1, 2)), np.where(part, M, 0).max(axis=(1, 2)), 0)
        out[:, 2*k+1] = np.where(part.any(axis=(1, 2)), np.where(part, SD, 0).max(axis=(1, 2)), 0)
    return out


Gc = maps["calibration_okay"][2][maps["calibration_okay"][3]]
qs = {q: float(np.quantile(Gc, q)) for q in (0.5, 0.7, 0.8, 0.9, 0.95)}
print("okay calibration slope quantiles", {k: round(v, 5) for k, v in qs.items()})
variants = {
    "distance 0-32, 32-48, interior": lambda G, roi, z0, z1: [z0, z1, ~z0 & ~z1],
}
for a, b in ((0.7, 0.9), (0.8, 0.95), (0.5, 0.8)):
    ta, tb = qs[a], qs[b]
    variants[f"slope <q{a}, q{a}-q{b}, >q{b}"] = (lambda ta, tb: lambda G, roi, z0, z1: [G < ta, (G >= ta) & (G < tb), G >= tb])(ta, tb)
    variants[f"0-32 + interior by slope q{a}, q{b}"] = (lambda ta, tb: lambda G, roi, z0, z1: [z0, ~z0 & (G < ta), ~z0 & (G >= ta) & (G < tb), ~z0 & (G >= tb)])(ta, tb)
tests = names[2:]
print("| zones | " + " | ".join(tests) + " | test FPR | thresholds |mean| |")
for name, fn in variants.items():
    sc = {n: scores(n, fn) for n in names}
    t = joint_thresholds(sc["calibration_okay"])
    cells = " | ".join(f"{100*np.mean((sc[n] > t).any(axis=1)):.0f}" for n in tests)
    print(f"| {name} | {cells} | {100*np.mean((sc['test_okay'] > t).any(axis=1)):.1f} % | {np.round(t[0::2], 4)} |", flush=True)
