"""Write the bundled demo radiographs into resources/demo/ (generated, no real data).

Each demo is a 16-bit TIFF (deflate, pixel size in the resolution tags) with ``<stem>_mask.png``
(255 = defect pixel) and ``<stem>_defects.json`` (ISO 6520 code, name, bbox, contrast). The seeds
(9001-9004) lie outside the ranges used for training and evaluation of the default model.

Usage::

    .venv/bin/python docs/scripts/make_demo.py [--out resources/demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.synthetic import generate_weld, write_radiograph

REPO = Path(__file__).resolve().parents[2]
SHAPE = (800, 2500)  # 32 x 100 mm at 40 um per pixel; about 3 MB each, compressed
CONTRAST = (30.0, 60.0)  # clearly visible defects, the range the bundled default model detects (docs/default_model.md)

#: stem -> (seed, defect types, generator options)
DEMOS = {
    "demo_01_porosity_slag": (9001, ["porosity", "clustered_porosity", "slag_line"], {}),
    "demo_02_cracks_fusion": (9002, ["longitudinal_crack", "transverse_crack", "lack_of_fusion"],
                              {"bend_px": 25.0}),
    "demo_03_penetration_undercut": (9003, ["lack_of_penetration", "undercut", "porosity"],
                                     {"angle_deg": 2.0}),
    "demo_04_clean": (9004, None, {}),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "resources" / "demo")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for stem, (seed, defects, options) in DEMOS.items():
        weld = generate_weld(seed, shape=SHAPE, pixel_size_um=40.0, defects=defects,
                             contrast_range=CONTRAST, **options)
        path = write_radiograph(args.out / f"{stem}.tif", weld)
        files = [path, path.with_name(f"{stem}_mask.png"), path.with_name(f"{stem}_defects.json")]
        size = sum(f.stat().st_size for f in files)
        total += size
        found = ", ".join(f"{d.iso_code} {d.kind} (contrast {d.contrast:.1f})"
                          for d in weld.defects)
        print(f"{path.name}: {size / 1e6:.2f} MB; {found or 'no defects'}")
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
