"""Compare synthetic weld radiographs with real GDXray ones: a figure and noise statistics.

Writes docs/figures/synthetic_vs_real.png: a 400 x 400 px crop of a generated radiograph next to a
400 x 400 px crop of GDXray W0001_0002 (BAM, research-only licence: the crop is the only GDXray
pixel data in the repository), both at their native ~40 um per pixel and shown with the same grey
mapping; below each, its noise residual ``image - box9(image)`` with the same gain.

Prints the noise statistics (core.synthetic.noise_statistics) on flat tiles of base plate and
bead, found the same way on both (per column: bead = smoothed grey above 75 % of the column's
range, base plate = below 25 %; GDXray defect masks and generated defects excluded).

Usage::

    .venv/bin/python docs/scripts/synthetic_vs_real.py [--gdxray PATH] [--seeds 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from core.imageio import load_radiograph, write_png
from core.synthetic import generate_weld, noise_statistics

REPO = Path(__file__).resolve().parents[2]
FIGURE = REPO / "docs" / "figures" / "synthetic_vs_real.png"
GDXRAY = REPO.parent / "shared" / "datasets" / "gdxray-welds"
CROP = 400
REAL_CROP = ("W0001_0002", 150, 1100)  # file, row0, col0: two gas pores at the bead's upper edge
FIGURE_SEED = 4  # two gas pores of about the size and contrast of the real ones


def flat_regions(image, exclude):
    """Bead and base plate regions of a horizontal weld, found from the grey levels alone."""
    smooth = ndi.gaussian_filter(image, 20)
    lo = np.percentile(smooth, 10, axis=0)
    hi = np.percentile(smooth, 95, axis=0)
    keep = ~ndi.binary_dilation(exclude, iterations=20)
    return (smooth > lo + 0.75 * (hi - lo)) & keep, (smooth < lo + 0.25 * (hi - lo)) & keep


def measure(image, exclude):
    bead, base = flat_regions(image, exclude)
    return noise_statistics(image, bead), noise_statistics(image, base)


def _row(bead, base):
    return bead.residual_std, bead.acf_width_px, base.residual_std, base.acf_width_px


def summary(name, rows):
    arr = np.array(rows)
    med, lo, hi = np.median(arr, 0), arr.min(0), arr.max(0)
    labels = ("bead residual std", "bead ACF width px", "base residual std", "base ACF width px")
    print(f"{name} (n={len(rows)}): median [min, max]")
    for k, label in enumerate(labels):
        fmt = "{:.5f}" if "std" in label else "{:.2f}"
        print(f"  {label:20s} " + fmt.format(med[k]) + " [" + fmt.format(lo[k]) + ", "
              + fmt.format(hi[k]) + "]")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gdxray", type=Path, default=GDXRAY)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args(argv)

    real_rows = []
    for path in sorted((args.gdxray / "W0001").glob("W0001_*.png")):
        image = load_radiograph(path).image
        mask_path = args.gdxray / "W0002" / path.name.replace("W0001", "W0002")
        defects = load_radiograph(mask_path).image > 0
        bead, base = measure(image, defects)
        real_rows.append(_row(bead, base))
        print(f"{path.name}: bead {bead.residual_std:.5f} ({bead.acf_width_px:.2f} px, level "
              f"{bead.level:.2f}), base {base.residual_std:.5f} ({base.acf_width_px:.2f} px, "
              f"level {base.level:.2f})")
    synth_rows = []
    for seed in range(args.seeds):
        weld = generate_weld(seed, defects=None)
        image = weld.image / np.float32(65535)
        bead, base = measure(image, image > 0.8)  # lead letters excluded like defects
        synth_rows.append(_row(bead, base))
    summary("GDXray W0001", real_rows)
    summary("synthetic (seeds 0..%d, 800 x 4900)" % (args.seeds - 1), synth_rows)

    name, r0, c0 = REAL_CROP
    real = load_radiograph(args.gdxray / "W0001" / f"{name}.png").image[r0:r0 + CROP, c0:c0 + CROP]
    weld = generate_weld(FIGURE_SEED, shape=(800, 1600), defects=["porosity", "porosity"],
                         contrast_range=(35.0, 50.0), iqi=False, markers=False)
    box = weld.defects[0].bbox
    edge_row = int(np.nonzero(weld.weld_mask[:, (box[1] + box[3]) // 2])[0].min())
    sr0 = int(np.clip(edge_row - 140, 0, weld.image.shape[0] - CROP))
    sc0 = int(np.clip((box[1] + box[3]) // 2 - CROP // 2, 0, weld.image.shape[1] - CROP))
    synth = (weld.image / np.float32(65535))[sr0:sr0 + CROP, sc0:sc0 + CROP]
    write_figure(args.out, synth, real)
    print(f"wrote {args.out} (synthetic seed {FIGURE_SEED} rows {sr0}:{sr0 + CROP} "
          f"cols {sc0}:{sc0 + CROP}; GDXray {name} rows {r0}:{r0 + CROP} cols {c0}:{c0 + CROP})")
    return 0


def write_figure(path, synth, real, gap=12, gain=12.0):
    """Grey crops on top, residuals (x gain, around mid grey) below; synthetic left, real right."""
    def residual(a):
        return np.clip(0.5 + gain * (a - ndi.uniform_filter(a, 9, mode="reflect")), 0, 1)

    tiles = [[synth, real], [residual(synth), residual(real)]]
    h, w = synth.shape
    canvas = np.ones((2 * h + 3 * gap + 24, 2 * w + 3 * gap), np.float32)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            top, left = 24 + gap + i * (h + gap), gap + j * (w + gap)
            canvas[top:top + h, left:left + w] = tile
    grey = np.rint(canvas * 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    try:
        from PIL import Image, ImageDraw

        im = Image.fromarray(rgb)
        draw = ImageDraw.Draw(im)
        label = f"synthetic (core.synthetic, seed {FIGURE_SEED}), 40 um/px"
        draw.text((gap, 6), label, fill=(0, 0, 0))
        draw.text((2 * gap + w, 6), "GDXray W0001_0002 (BAM), 40.3 um/px", fill=(0, 0, 0))
        rgb = np.asarray(im)
    except ImportError:  # labels are a nicety; the picture is the point
        pass
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.ascontiguousarray(rgb))


if __name__ == "__main__":
    raise SystemExit(main())
