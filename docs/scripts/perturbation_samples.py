"""Write picture grids of perturbation samples to check against Figures 3 and 4 of the paper.

    .venv/bin/python docs/scripts/perturbation_samples.py [--gdxray DIR] [--seed 0]

Writes into docs/figures/ (only synthetic pixels, safe to commit):

- perturbations_sni.png: SNI samples (Figure 3d): delta alone, an okay patch of a synthetic weld
  radiograph (core.synthetic), and okay + W * delta.
- perturbations_synthetic.png: the six synthetic anomaly types (Figure 4): the shape before the
  PSF, after the PSF (sigma 9), and three insertions into okay patches.

With the GDXray welds present it also writes /tmp/weldreview_figures/perturbations_real_gdxray.png
(Figure 3 a-d on real radiographs). That picture holds GDXray pixels (research-only licence) and is
never written inside the repository.

Delta panels use a fixed window (-0.25 .. 0.25 around mid grey) so amplitudes compare across
panels; patch panels are shown from their own minimum to maximum, as a viewer's auto-level does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.perturbations import (
    ANOMALY_KINDS, RealDefectPerturbations, SNIPerturbations, SyntheticAnomalies, apply_perturbation,
)
from core.sampler import PatchSampler

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "figures"
PRIVATE = Path("/tmp/weldreview_figures")
GDXRAY = REPO.parent / "shared" / "datasets" / "gdxray-welds"
LABEL_H = 14
GAP = 4


def _delta_tile(delta, window=0.25):
    return np.clip(0.5 + 0.5 * delta / window, 0, 1)


def _auto_tile(patch):
    lo, hi = float(patch.min()), float(patch.max())
    return (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)


def _grid(rows, row_labels, col_labels, path):
    """Write tiles (list of rows of (192, 192) arrays in [0, 1]) with text labels as a PNG."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    left = 8 + 7 * max(len(line) for s in row_labels for line in s.splitlines())
    size = 192
    width = left + n_cols * (size + GAP)
    height = LABEL_H + n_rows * (size + GAP)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels):
        draw.text((left + j * (size + GAP) + 2, 1), text, fill=0)
    for i, (tiles, text) in enumerate(zip(rows, row_labels)):
        y = LABEL_H + i * (size + GAP)
        draw.text((2, y + size // 2 - 6), text, fill=0)
        for j, tile in enumerate(tiles):
            img = Image.fromarray(np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8))
            canvas.paste(img, (left + j * (size + GAP), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def synthetic_okay_sampler(seed):
    """Okay patches from a clean synthetic weld radiograph (centres at least 60 px inside the bead)."""
    from scipy import ndimage

    from core.imageio import normalise
    from core.synthetic import generate_weld

    weld = generate_weld(seed, shape=(700, 2400), defects=None, iqi=False, markers=False)
    image, _ = normalise(weld.image)
    inner = ndimage.distance_transform_edt(weld.weld_mask) > 60
    return PatchSampler([image], rois=[inner], seed=seed)


def sni_figure(rng, okay, out, n=8):
    sni = SNIPerturbations()
    delta, weight = sni.sample(rng, n)
    x_ok = okay.okay(n, rng=rng)
    x_per = apply_perturbation(x_ok, delta, weight)
    rows = [[_delta_tile(d) for d in delta], [_auto_tile(x) for x in x_ok], [_auto_tile(x) for x in x_per]]
    labels = ["delta", "okay", "okay + W delta"]
    cols = [f"peak {np.abs(d).max():.3f}" for d in delta]
    return _grid(rows, labels, cols, out)


def synthetic_figure(rng, okay, out):
    rows, labels = [], []
    for kind in ANOMALY_KINDS:
        sharp = SyntheticAnomalies(kind, psf_sigma=0)
        smooth = SyntheticAnomalies(kind)
        d0, _ = sharp.sample(np.random.default_rng(rng.integers(1 << 31)), 1)
        seed = rng.integers(1 << 31)
        d1, _ = smooth.sample(np.random.default_rng(seed), 1)  # other draw, same rules
        d, w = smooth.sample(rng, 3)
        x_ok = okay.okay(3, rng=rng)
        x_per = apply_perturbation(x_ok, d, w)
        rows.append([_delta_tile(d0[0]), _delta_tile(d1[0])] + [_auto_tile(x) for x in x_per])
        labels.append(f"{kind}\n(amp {smooth.amplitude:+.1f})")
    cols = ["shape before PSF", "after PSF sigma 9", "in okay patch", "in okay patch", "in okay patch"]
    return _grid(rows, labels, cols, out)


def gdxray_figure(rng, folder, out, n=6):
    from core.datasets import load_dataset

    data = [d for d in load_dataset(folder, include_unmasked=False)]
    images, masks = [d.image for d in data], [d.mask for d in data]
    rois = []
    for image in images:
        try:
            from core.roi import find_weld

            rois.append(find_weld(image).mask)
        except Exception:  # noqa: BLE001 - no ROI: okay patches from anywhere on the film
            rois.append(None)
    okay = PatchSampler(images, masks, rois=rois, seed=1)
    real = RealDefectPerturbations.from_images(images, masks)
    sni = SNIPerturbations()
    geos = [real.sampler.defect_geometry(rng) for _ in range(n)]
    defect_patches = np.stack([real.sampler.patch(g) for g in geos])
    delta, weight = (np.stack(a) for a in zip(*[real.contrast_patch(g) for g in geos]))
    x_ok = okay.okay(n, rng=rng)
    x_real = apply_perturbation(x_ok, delta, weight)
    d_sni, w_sni = sni.sample(rng, n)
    x_sni = apply_perturbation(x_ok, d_sni, w_sni)
    rows = [[_auto_tile(a), _auto_tile(b), _delta_tile(c), _auto_tile(d), _auto_tile(e)]
            for a, b, c, d, e in zip(defect_patches, x_ok, delta, x_real, x_sni)]
    cols = ["(a) real defect", "(b) okay weld", "delta (ring mean off)", "(c) okay + defect",
            "(d) okay + SNI"]
    return _grid(rows, [f"#{i}" for i in range(n)], cols, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gdxray", type=Path, default=GDXRAY)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    okay = synthetic_okay_sampler(args.seed)
    print(sni_figure(rng, okay, FIGURES / "perturbations_sni.png"))
    print(synthetic_figure(rng, okay, FIGURES / "perturbations_synthetic.png"))
    if (args.gdxray / "W0001").is_dir():
        path = gdxray_figure(rng, args.gdxray, PRIVATE / "perturbations_real_gdxray.png")
        print(path, "(GDXray pixels: not for the repo)")
    else:
        print(f"GDXray not found at {args.gdxray}: real-defect picture skipped")


if __name__ == "__main__":
    main()
