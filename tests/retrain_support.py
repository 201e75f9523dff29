"""Generated radiographs with a defect type of our own, and a review database around them.

Used by tests/test_retraining.py and tests/test_gui_retrain.py. The radiographs are crops of the
weld bead of ``core.synthetic.generate_weld`` (no generated defects), with round, smooth dark
indications ("blobs") added at known places; they are written as 16-bit TIFF files so the
training set reads them back like any reviewed radiograph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.simulated_review import Indication, overlaps, record_scan, review

FULL = 65535


def bead_image(seed: int, *, rows: int = 700, cols: int = 1024, pixel_size_um: float = 20.0,
               contrast: float = 0.25) -> np.ndarray:
    """The bead band of a generated weld (float32 [0, 1]), without defects, IQI or letters."""
    from core.imageio import normalise
    from core.synthetic import generate_weld

    w = generate_weld(seed, shape=(rows, cols), pixel_size_um=pixel_size_um, defects=None, iqi=False,
                      markers=False)
    image, _ = normalise(w.image, bits_stored=16)
    rows = np.flatnonzero(w.weld_mask.all(axis=1))
    band = image[rows[0]:rows[-1] + 1]
    # a film exposed to a narrower density range: grey values compressed around the median (the
    # small test models learn it in a few hundred steps)
    return np.ascontiguousarray(0.5 + contrast * (band - np.median(band)), dtype=np.float32)


def add_blobs(image: np.ndarray, n: int, *, sigma: float, amplitude: float):
    """Add ``n`` dark Gaussian blobs along the middle row; return image, mask, boxes."""
    out = image.copy()
    mask = np.zeros(image.shape, bool)
    boxes = []
    rr, cc = np.mgrid[:image.shape[0], :image.shape[1]]
    for k in range(n):
        r, c = image.shape[0] // 2, int((k + 0.5) * image.shape[1] / n)
        g = amplitude * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma ** 2))
        out -= g.astype(np.float32)
        m = g > 0.05 * amplitude
        mask |= m
        ys, xs = np.nonzero(m)
        boxes.append((int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1))
    return np.clip(out, 0, 1).astype(np.float32), mask, boxes


def write_tiff(path, image: np.ndarray):
    """Write a 16-bit TIFF and return the float32 image exactly as core.imageio reads it back."""
    import tifffile

    from core.imageio import load_radiograph

    tifffile.imwrite(path, np.round(image * FULL).astype(np.uint16), photometric="minisblack")
    return load_radiograph(path)


@dataclass
class Weld:
    radiograph: object  # core.imageio.Radiograph
    boxes: list
    id: int = 0

    @property
    def image(self):
        return self.radiograph.image


def make_welds(folder, seeds, *, blobs: int, sigma: float, amplitude: float) -> list[Weld]:
    welds = []
    for s in seeds:
        image, _, boxes = add_blobs(bead_image(s), blobs, sigma=sigma, amplitude=amplitude)
        welds.append(Weld(write_tiff(folder / f"weld{s}.tif", image), boxes))
    return welds


def scan_and_review(store, weld: Weld, bundle, *, interpreter: str, fpr=None):
    """Scan with ``bundle``, store the regions, and give the verdicts a careful reviewer gives.

    Regions on a blob are confirmed defects, the other regions false alarms; blobs not flagged
    are marked as missed indications (core.simulated_review). Returns (scan result, hit flags
    per blob).
    """
    from core.scanning import scan_image

    result = scan_image(weld.radiograph, bundle, fpr=fpr)
    sid, ids = record_scan(store, weld.id, bundle, result, user=interpreter, fpr=fpr)
    hit, _ = review(store, user=interpreter, radiograph_id=weld.id, scan_id=sid,
                    regions=result.regions, region_ids=ids,
                    indications=[Indication(b, "2011") for b in weld.boxes],
                    comment="missed by the model")
    return result, hit


def blob_hits(weld: Weld, bundle, thresholds=None) -> list[bool]:
    """Which blobs a scan with ``bundle`` flags."""
    from core.scanning import scan_image

    result = scan_image(weld.radiograph, bundle, thresholds=thresholds)
    return [any(overlaps(r.bbox, b) for r in result.regions) for b in weld.boxes]
