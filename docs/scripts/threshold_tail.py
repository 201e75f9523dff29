"""What sets the interior |mean| threshold of a learning-curve model on GDXray films.

Scans the calibration and test radiographs of the benchmark split whole with one stored curve
model, keeps the weld region's interior (the edge band has its own thresholds) away from masked
defects (20 px), and counts the distinct spots (connected kernels) whose |9 x 9 mean| passes a
few levels, against the model's interior |mean| threshold, and how much of the film's variance
there the reconstruction explains (about none for a model whose latent died). Writes crops of the strongest spots
(film, normalised film, residual) to a PNG, so that a reader can see whether they are okay weld
texture or indications the hand-drawn masks missed.

    .venv/bin/python docs/scripts/threshold_tail.py [CURVE_LABEL] [MINUTES] [--png OUT.png]

The model comes from docs/benchmark/curve/ (made by ``weldreview benchmark --curve``, not
committed); the default is the 20-minute model of the twicing curve.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"
LEVELS = (0.015, 0.02, 0.025, 0.03)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("curve", nargs="?", default="SNI_dropout0_background24-twicing")
    parser.add_argument("minutes", nargs="?", type=float, default=20.0)
    parser.add_argument("--png", default=None, help="crops of the strongest spots")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    from scipy import ndimage

    from core.benchmark import GDXRAY_CALIBRATION, GDXRAY_TEST, weld_region
    from core.calibration import Thresholds
    from core.datasets import load_dataset
    from core.modelfile import load_model
    from core.normalise import model_input
    from core.residual import edge_band
    from core.scanning import scan_image

    curves = json.loads((REPO / "docs/benchmark/learning_curve.json").read_text())["curves"]
    curve = next(c for c in curves if c["label"] == args.curve)
    point = next(p for p in curve["points"] if p["minutes"] == args.minutes)
    thr = Thresholds.from_dict(point["thresholds"])
    bundle = load_model(REPO / "docs/benchmark/curve" / args.curve / f"model_{args.minutes:g}min.keras")
    print(f"{args.curve} {args.minutes:g} min: interior |mean| threshold {thr.mean:.4f}, std {thr.std:.4f}; "
          f"band |mean| {thr.edge_mean:.4f}")
    items = {it.name: it for it in load_dataset(DATA, include_unmasked=False)}
    spots = []
    for side, names in (("calibration", GDXRAY_CALIBRATION), ("test", GDXRAY_TEST)):
        for name in names:
            item = items[name]
            roi = weld_region(item)
            result = scan_image(item.image, bundle, thresholds=thr, roi=roi)
            interior = roi & ~edge_band(roi, thr.edge_band_px) & ~ndimage.binary_dilation(item.mask, iterations=20)
            m = np.where(interior, np.abs(np.nan_to_num(result.local_mean)), 0.0)
            counts = []
            for level in LEVELS:
                _, n = ndimage.label(m > level)
                counts.append(f">{level:g}: {n}")
            valid = m[interior & np.isfinite(result.local_mean)]
            # how much of the normalised film the autoencoder reproduces there (0: constant output)
            normed = model_input(item.image, bundle.metadata)
            inside = interior & np.isfinite(result.residual)
            explained = 1.0 - np.var(result.residual[inside]) / np.var(normed[inside])
            print(f"{side} {name}: interior kernels {valid.size}, |mean| median {np.median(valid):.4f}, "
                  f"99.9 % {np.quantile(valid, 0.999):.4f}, max {valid.max():.4f}; variance of the "
                  f"normalised film explained {100 * explained:.0f} %; distinct spots "
                  + ", ".join(counts))
            labels, n = ndimage.label(m > LEVELS[0])
            for k, sl in enumerate(ndimage.find_objects(labels), start=1):
                peak = float(m[sl][labels[sl] == k].max())
                r, c = np.unravel_index(np.argmax(np.where(labels == k, m, 0)), m.shape)
                spots.append((peak, side, name, int(r), int(c), item, result))
    spots.sort(key=lambda s: -s[0])
    print("strongest interior spots (|mean|, film, row, col):")
    for peak, side, name, r, c, *_ in spots[:args.top]:
        print(f"    {peak:.4f} {side} {name} ({r}, {c})")
    if args.png:
        from PIL import Image

        half, gap = 48, 4
        rows = []
        for peak, side, name, r, c, item, result in spots[:args.top]:
            sl = (slice(r - half, r + half), slice(c - half, c + half))
            normed = model_input(item.image, bundle.metadata)
            film = item.image[sl]
            crops = [(film - film.min()) / max(float(np.ptp(film)), 1e-6),
                     np.clip((normed[sl] - 0.4) / 0.2, 0, 1),
                     np.clip((np.nan_to_num(result.residual[sl]) + 0.06) / 0.12, 0, 1)]
            row = np.ones((2 * half, 3 * 2 * half + 2 * gap))
            for i, crop in enumerate(crops):
                row[:crop.shape[0], i * (2 * half + gap):i * (2 * half + gap) + crop.shape[1]] = crop
            rows.append(row)
        sheet = np.ones((len(rows) * (2 * half + gap), rows[0].shape[1]))
        for j, row in enumerate(rows):
            sheet[j * (2 * half + gap):j * (2 * half + gap) + 2 * half] = row
        Image.fromarray((sheet * 255).astype(np.uint8)).save(args.png)
        print(f"crops written to {args.png}: one spot per row, in the order listed; film (stretched), "
              f"normalised film (0.4-0.6), residual (-0.06 to 0.06)")


if __name__ == "__main__":
    main()
