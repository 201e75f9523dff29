"""Where the strongest flags of a learning-curve model lie on GDXray films (docs/benchmark/notes.md).

Scans the calibration and test radiographs of the benchmark split whole, in their weld region, with
the last model of the background-removal curve at that curve's calibrated thresholds, and lists the
strongest flagged regions: whether they touch the region's edge (12 px) or a masked defect (10 px).

    .venv/bin/weldreview benchmark --data ../shared/datasets/gdxray-welds --out docs/benchmark \
        --curve 5,10,20 --background 24        # makes the model (docs/benchmark/curve/, not committed)
    .venv/bin/python docs/scripts/calibration_outliers.py
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "gdxray-welds"
CURVE = "SNI_dropout0_background24"
SIGMA = 24


def main() -> None:
    from scipy import ndimage

    from core.benchmark import GDXRAY_CALIBRATION, GDXRAY_TEST, weld_region
    from core.calibration import Thresholds
    from core.datasets import load_dataset
    from core.modelfile import load_model
    from core.normalise import remove_background
    from core.scanning import scan_image

    curves = json.loads((REPO / "docs/benchmark/learning_curve.json").read_text())["curves"]
    curve = next(c for c in curves if c["label"] == CURVE)
    last = curve["points"][-1]
    t = last["thresholds"]
    thr = Thresholds(t["mean"], t["std"], 0.001, 0, 0.0, (0.0, 1.0))
    bundle = load_model(REPO / "docs/benchmark/curve" / CURVE / f"model_{last['minutes']:g}min.keras")
    items = {it.name: it for it in load_dataset(DATA, include_unmasked=False)}
    for side, names in (("calibration", GDXRAY_CALIBRATION), ("test", GDXRAY_TEST)):
        for name in names:
            item = items[name]
            roi = weld_region(item)
            result = scan_image(remove_background(item.image, SIGMA), bundle, thresholds=thr, roi=roi)
            edge = roi & ~ndimage.binary_erosion(roi, iterations=12)
            near_defect = ndimage.binary_dilation(item.mask, iterations=10)
            print(f"{side} {name} {item.image.shape}: {len(result.regions)} flagged regions")
            for region in result.regions[:6]:
                r0, c0, r1, c1 = region.bbox
                where = [w for w, m in (("region edge", edge), ("masked defect", near_defect))
                         if m[r0:r1, c0:c1].any()]
                print(f"    {region.bbox} {region.tests:4s} severity {region.severity:.2f} grey "
                      f"{item.image[r0:r1, c0:c1].mean():.2f} {', '.join(where)}")


if __name__ == "__main__":
    main()
