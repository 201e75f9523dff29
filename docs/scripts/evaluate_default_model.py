"""Detection figures of a model (default: the bundled one) on fresh synthetic welds.

    .venv/bin/python docs/scripts/evaluate_default_model.py [MODEL] [--radiographs 4]

Prints TPR per contrast grade (core.contrast) and per synthetic anomaly type, and the fraction of
okay weld patches flagged, at the model's calibrated thresholds; seeds 2000+ are never used in
training (0+), calibration (1000+) or the demo (9001-9004).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core.evaluation import evaluate_synthetic  # noqa: E402
from core.modelfile import load_model  # noqa: E402
from core.paths import default_model_path  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("model", nargs="?", default=str(default_model_path()))
parser.add_argument("--radiographs", type=int, default=4)
parser.add_argument("--okay", type=int, default=2000)
parser.add_argument("--defect", type=int, default=600)
args = parser.parse_args()
t0 = time.perf_counter()
result = evaluate_synthetic(load_model(args.model), n_radiographs=args.radiographs, n_okay=args.okay,
                            n_defect=args.defect)
print(f"model {args.model}")
print("\n".join(result.lines()))
print(f"({time.perf_counter() - t0:.0f} s)")
