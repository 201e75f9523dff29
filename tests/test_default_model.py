"""The bundled default model as a new user meets it: calibrated, detecting on welds it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.evaluation import EVALUATION_SEEDS, evaluate_synthetic
from core.modelfile import load_model
from core.paths import default_model_path, demo_dir
from core.scanning import scan_image


@pytest.fixture(scope="module")
def bundle():
    return load_model(default_model_path())


def test_default_model_is_calibrated_at_a_tenth_of_a_percent(bundle):
    thr = bundle.thresholds
    assert thr is not None
    assert thr.fpr_target == pytest.approx(0.001)
    assert thr.n_okay >= 3000 and thr.fpr_achieved <= 0.001
    lo, hi = thr.fpr_ci
    assert lo <= thr.fpr_achieved <= hi
    # trained on generated welds whose seeds are disjoint from the evaluation and demo seeds
    images = bundle.metadata["training"]["images"]
    seeds = [int(name.split("seed=")[1].rstrip(")")) for name in images]
    assert seeds and all(s < min(EVALUATION_SEEDS) for s in seeds)


@pytest.mark.slow
def test_default_model_detects_defects_on_unseen_generated_welds(bundle):
    result = evaluate_synthetic(bundle, n_radiographs=4, n_okay=400, n_defect=200, n_anomaly=20,
                                seed=EVALUATION_SEEDS[0])
    print("\n".join(result.lines()))
    assert result.n_defect["high"] >= 20
    assert result.tpr["high"] >= 0.9
    assert result.fpr <= 0.02  # 400 okay patches at a calibrated 0.1 %: a handful at most


@pytest.mark.slow
def test_demo_radiographs_flag_their_obvious_defects_and_leave_the_clean_weld_calm(bundle):
    from core.imageio import load_radiograph
    from core.roi import find_weld

    for path in sorted(demo_dir().glob("demo_*.tif")):
        radiograph = load_radiograph(path)
        weld = find_weld(radiograph.image, include_haz=True)  # as the application scans
        result = scan_image(radiograph, bundle, roi=weld.mask)
        truth = json.loads(path.with_name(path.stem + "_defects.json").read_text())
        obvious = [d for d in truth["defects"] if d["contrast"] >= 40]
        for d in obvious:
            r0, c0, r1, c1 = d["bbox"]
            hit = any(not (g.bbox[2] <= r0 or g.bbox[0] >= r1 or g.bbox[3] <= c0 or g.bbox[1] >= c1)
                      for g in result.regions)
            assert hit, f"{path.name}: {d['name']} (contrast {d['contrast']:.0f}) not flagged"
        if not truth["defects"]:
            assert len(result.regions) <= 2, f"{path.name}: clean weld flagged {len(result.regions)} times"
