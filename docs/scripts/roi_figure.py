"""Draw the automatically found weld region next to the hand-checked outlines, and measure them.

For every radiograph in tests/data/weld_outlines.json found under the GDXray folder: run
``core.roi.find_weld``, print IoU and centre-line error against the hand outline, and write a
downsampled overlay (found region red, hand outline green) to ``--out`` (default /tmp, because
the GDXray licence forbids copying its pixels into the repository). With ``--synthetic`` it draws
synthetic welds (core.synthetic.generate_weld, its ``weld_mask`` as the reference) instead, as one
figure ``roi_synthetic.png`` that may go to docs/figures/.

Usage::

    .venv/bin/python docs/scripts/roi_figure.py [--gdxray DIR] [--out DIR] [--only NAME ...]
    .venv/bin/python docs/scripts/roi_figure.py --synthetic --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from core.errors import WeldreviewError  # noqa: E402
from core.imageio import load_radiograph  # noqa: E402
from core.roi import WeldROI, find_weld, region_agreement  # noqa: E402

OUTLINES = REPO / "tests" / "data" / "weld_outlines.json"
GDXRAY = REPO.parent / "shared" / "datasets" / "gdxray-welds"
SYNTHETIC_CASES = ((0.0, 0.0), (30.0, 0.0), (90.0, 0.0), (0.0, 120.0), (135.0, 80.0))


def overlay(image: np.ndarray, found: np.ndarray | None, reference: np.ndarray, *, factor: int) -> np.ndarray:
    """RGB uint8 preview: reference boundary green, found boundary red, both yellow."""
    from skimage.segmentation import find_boundaries

    small = image[::factor, ::factor]
    lo, hi = np.percentile(small, [1, 99.5])
    grey = np.clip((small - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    ref_b = find_boundaries(reference[::factor, ::factor], mode="thick")
    rgb[ref_b] = (0, 220, 0)
    if found is not None:
        got_b = find_boundaries(found[::factor, ::factor], mode="thick")
        rgb[got_b] = (255, 40, 40)
        rgb[got_b & ref_b] = (255, 230, 0)
    return rgb


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).quantize(colors=64).save(path, optimize=True)


def measure(name: str, image: np.ndarray, reference: WeldROI, out: Path | None, factor: int,
            tiles: list | None = None) -> dict:
    t0 = time.perf_counter()
    try:
        found = find_weld(image)
        row = region_agreement(found, reference)
        row["angle_deg"] = found.angle_deg
    except WeldreviewError as exc:
        found, row = None, {"iou": 0.0, "centre_mean_px": float("nan"), "centre_max_px": float("nan"),
                            "width_ratio": float("nan"), "angle_deg": float("nan"), "error": str(exc)}
    row["seconds"] = time.perf_counter() - t0
    rgb = overlay(image, None if found is None else found.mask, reference.mask, factor=factor)
    if tiles is not None:
        tiles.append(rgb)
    elif out is not None:
        write_rgb(out / f"roi_{name}.png", rgb)
    return row


def print_table(rows: dict[str, dict]) -> None:
    print(f"{'image':12s} {'IoU':>6s} {'centre mean':>11s} {'centre max':>10s} {'width f/h':>9s} "
          f"{'angle':>6s} {'s':>5s}")
    for name, r in rows.items():
        print(f"{name:12s} {r['iou']:6.3f} {r['centre_mean_px']:11.1f} {r['centre_max_px']:10.1f} "
              f"{r['width_ratio']:9.2f} {r['angle_deg']:6.1f} {r['seconds']:5.2f}"
              + (f"  {r['error']}" if "error" in r else ""))
    ious = np.array([r["iou"] for r in rows.values()])
    cm = np.array([r["centre_mean_px"] for r in rows.values()])
    print(f"{'mean':12s} {ious.mean():6.3f} {np.nanmean(cm):11.1f}   median IoU {np.median(ious):.3f}, "
          f"min {ious.min():.3f}, n = {len(ious)}")


def run_gdxray(root: Path, out: Path | None, only: list[str] | None) -> dict[str, dict]:
    doc = json.loads(OUTLINES.read_text())
    rows = {}
    for name, entry in doc["images"].items():
        if only and name not in only:
            continue
        path = root / name[:5] / f"{name}.png"
        if not path.exists():
            print(f"{name}: not found under {root}, skipped")
            continue
        image = load_radiograph(path).image
        reference = WeldROI.from_edges(image.shape, entry["upper"], entry["lower"])
        rows[name] = measure(name, image, reference, out, factor=4)
    return rows


def run_synthetic(out: Path | None) -> dict[str, dict]:
    from core.synthetic import generate_weld

    rows, tiles = {}, []
    for i, (angle, bend) in enumerate(SYNTHETIC_CASES):
        r = generate_weld(100 + i, shape=(800, 2400), angle_deg=angle, bend_px=bend, defects=None)
        image = r.image / np.float32(65535)
        # the generator's own centre line and widths (a centre line re-derived from the clipped
        # mask would be biased where a slanted band meets the image border)
        reference = WeldROI(r.weld_mask, r.centreline, r.widths, angle)
        name = f"synthetic_a{int(angle)}_b{int(bend)}"
        rows[name] = measure(name, image, reference, out, factor=6, tiles=tiles)
    if out is not None:  # one small figure: synthetic pixels may go into docs/figures/
        gap = np.full((6, tiles[0].shape[1], 3), 255, np.uint8)
        write_rgb(out / "roi_synthetic.png", np.vstack([t for tile in tiles for t in (tile, gap)][:-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gdxray", type=Path, default=GDXRAY)
    parser.add_argument("--out", type=Path, default=Path("/tmp/weldreview_roi"))
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    out = None if args.no_figures else args.out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows = run_synthetic(out) if args.synthetic else run_gdxray(args.gdxray, out, args.only)
    if not rows:
        print("nothing measured")
        return 1
    print_table(rows)
    if out is not None:
        print(f"overlays in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
