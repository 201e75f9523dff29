"""Write tests/data/retrain_old_model.keras (+ .json): the "old" model of tests/test_retraining.py.

A small autoencoder (filters 6, 8, no dropout) trained for 300 steps on okay patches of four
generated weld beads (tests/retrain_support.bead_image, seeds 100-103) that carry twelve
unlabelled round dark indications each (sigma 8 px, amplitude 0.1): nobody had marked them, so
they were taken as accepted weld and the model learned to reconstruct that kind of indication.
No perturbations. About 2.5 minutes on 2 CPU cores. Run from the repository root:

    .venv/bin/python tests/data/make_retrain_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def blobs_at_random(image, n, rng, *, sigma=8.0, amplitude=0.1):
    out = image.copy()
    rr, cc = np.mgrid[:image.shape[0], :image.shape[1]]
    for _ in range(n):
        r, c = rng.uniform(40, image.shape[0] - 40), rng.uniform(40, image.shape[1] - 40)
        out -= (amplitude * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma ** 2))).astype(np.float32)
    return out


def main() -> None:
    from core.sampler import PatchSampler
    from core.training import TrainConfig, train
    from retrain_support import bead_image

    images = [blobs_at_random(bead_image(s), 12, np.random.default_rng(s)) for s in range(100, 104)]
    sampler = PatchSampler(images, seed=0, order=1)
    config = TrainConfig(steps=300, batch=8, seed=0, filters=(6, 8), dropout=0.0, lr=3e-3, warmup_steps=20,
                         checkpoint_every=0, out=HERE / "retrain_old_model.keras", overwrite=True,
                         images=[f"retrain_support.bead_image({s}) + 12 blobs" for s in range(100, 104)],
                         name="retrain-test-old")
    bundle = train(config, sampler.okay, [])
    for p in bundle.path.parent.glob("retrain_old_model.ckpt"):
        import shutil

        shutil.rmtree(p)
    print(f"wrote {bundle.path}")


if __name__ == "__main__":
    main()
