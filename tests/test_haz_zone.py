"""The weld region's heat-affected zone: edge zones measured from the bead's edge, the HAZ a zone
of its own (docs/benchmark/notes.md, items 13 and 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.calibration import Thresholds, calibrate, calibrate_model, describe, thresholds_from_metadata
from core.residual import edge_zones, weld_zones
from core.roi import BEAD, HAZ, WeldROI

SHAPE = (700, 900)
BEAD_ROWS = (250, 450)  # the bead: rows 250-449
MARGIN = 60  # heat-affected zone per side


def _region() -> WeldROI:
    """A straight weld region across the film: the bead plus a 60 px heat-affected zone each side."""
    width = BEAD_ROWS[1] - BEAD_ROWS[0] + 2 * MARGIN
    return WeldROI.from_geometry(SHAPE, [[349.5, 0.0], [349.5, SHAPE[1] - 1.0]], [width, width],
                                 haz_margin_px=MARGIN)


def _film(seed: int = 0) -> np.ndarray:
    """What the residual tests see of a film (a model that outputs 0 passes the film through):
    flat texture, and a ridge along each of the bead's toes, where every model leaves a residual."""
    rng = np.random.default_rng(seed)
    rows = np.arange(SHAPE[0], dtype=np.float32)[:, None]
    ridge = sum(np.exp(-0.5 * ((rows - r) / 3.0) ** 2) for r in BEAD_ROWS)
    film = 0.05 + 0.03 * ridge + 0.002 * rng.standard_normal(SHAPE)
    return film.astype(np.float32)


def _copy_model(src, dst):
    """A copy of a model file and its sidecar (its metadata) at ``dst``."""
    import shutil

    from core.modelfile import sidecar_path

    shutil.copy(src, dst)
    shutil.copy(sidecar_path(src), sidecar_path(dst))
    return dst


@pytest.fixture(scope="module")
def passthrough(tmp_path_factory):
    """A model file whose autoencoder outputs 0 everywhere, so its residual is its input."""
    from core.model import build_autoencoder
    from core.modelfile import save_model

    model = build_autoencoder(seed=7)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("haz") / "passthrough.keras"
    save_model(model, path, metadata={"training": {"steps": 0, "seed": 7}})
    return path


def test_labels_tell_the_bead_from_its_heat_affected_zone():
    roi = _region()
    labels = roi.labels()
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, BEAD, HAZ}
    column = labels[:, 450]
    assert np.array_equal(np.flatnonzero(column == BEAD)[[0, -1]], [BEAD_ROWS[0], BEAD_ROWS[1] - 1])
    assert (column == HAZ).sum() == 2 * MARGIN
    assert np.array_equal(labels > 0, roi.mask)  # the region itself is unchanged
    # a region changed by hand keeps a margin as wide, measured from its new edge
    cut = np.zeros(SHAPE, bool)
    cut[:, :300] = True
    edited = roi.edited(cut=cut)
    assert edited.haz_margin_px == MARGIN
    assert (edited.labels()[:, 600] == HAZ).sum() == 2 * MARGIN
    assert (edited.labels()[350, 300:300 + MARGIN] == HAZ).all()  # the cut end is an edge too
    # without a margin the region is bead throughout
    bead_only = WeldROI.from_geometry(SHAPE, [[349.5, 0.0], [349.5, 899.0]], [200.0, 200.0])
    assert set(np.unique(bead_only.labels())) == {0, BEAD}


def test_the_found_weld_with_its_margin_has_the_bead_found_without_it():
    from core.imageio import normalise
    from core.roi import find_weld
    from core.synthetic import generate_weld

    image = normalise(generate_weld(1500).image, bits_stored=16)[0]
    bead = find_weld(image).mask
    labels = find_weld(image, include_haz=True).labels()
    inner = labels == BEAD
    iou = (inner & bead).sum() / (inner | bead).sum()
    assert iou > 0.95, iou


def test_zones_are_measured_from_the_bead_edge_with_the_haz_first():
    labels = _region().labels()
    haz, toe, shoulder = weld_zones(labels, (32, 48), haz=True)
    column = slice(None), 450
    assert np.array_equal(haz[column], labels[column] == HAZ)
    assert np.array_equal(np.flatnonzero(toe[column]), np.r_[250:282, 418:450])
    assert np.array_equal(np.flatnonzero(shoulder[column]), np.r_[282:298, 402:418])
    # taken whole (thresholds calibrated before the HAZ had its zone), as a boolean region is
    whole = weld_zones(labels, (32, 48))
    assert all(np.array_equal(a, b) for a, b in zip(whole, edge_zones(labels > 0, (32, 48))))
    assert np.flatnonzero(whole[0][column])[0] == BEAD_ROWS[0] - MARGIN  # the plate, not the toe
    # a boolean region is bead throughout: its HAZ is empty and its zones are the edge zones
    empty, *rest = weld_zones(labels > 0, (32, 48), haz=True)
    assert not empty.any() and all(np.array_equal(a, b) for a, b in zip(rest, whole))


def _okay_patches(n=100):
    from core.sampler import PatchSampler

    sampler = PatchSampler([_film()], [None], rois=[_region().labels()], seed=3)
    patches, regions = sampler.okay_with_roi(n, rng=np.random.default_rng(3))
    assert regions.dtype == np.uint8 and (regions == HAZ).any() and (regions == BEAD).any()
    return patches, regions


def test_the_bead_toe_no_longer_sets_the_interior_threshold_and_a_faint_flaw_is_found(passthrough, tmp_path):
    """Measured from the region's edge the toe lies 60 px inside, in the interior, and sets its
    thresholds; a faint flaw in the middle of the bead then goes unflagged (the gap of notes item 13)."""
    from core.modelfile import load_model
    from core.scanning import scan_image

    okay, regions = _okay_patches()
    before = _copy_model(passthrough, tmp_path / "region_whole.keras")
    after = _copy_model(passthrough, tmp_path / "haz.keras")
    old = calibrate_model(before, okay, fpr=0.05, regions=regions > 0, edge_band_px=(32, 48))
    new = calibrate_model(after, okay, fpr=0.05, regions=regions, edge_band_px=(32, 48))
    assert not old.has_haz and new.has_haz and new.band_bounds == (32, 48)
    assert new.fpr_achieved <= 0.05
    # the interior is flat texture now: its thresholds fall to it, the toe's go to its zone
    assert new.mean < 0.053 < 0.06 < old.mean and new.std < 0.5 * old.std
    assert new.edge_mean > 0.06  # the toe (0-32 px inside the bead's edge)

    film = _film(seed=1)
    rr, cc = np.mgrid[:SHAPE[0], :SHAPE[1]]
    film += (0.012 * np.exp(-((rr - 350) ** 2 + (cc - 450) ** 2) / (2 * 4.0 ** 2))).astype(np.float32)
    labels = _region().labels()
    found = scan_image(film, load_model(after), roi=labels)
    missed = scan_image(film, load_model(before), roi=labels > 0)

    def at_flaw(result):
        return [r for r in result.regions if r.bbox[0] <= 350 <= r.bbox[2] and r.bbox[1] <= 450 <= r.bbox[3]]

    assert at_flaw(found) and not at_flaw(missed)


def test_thresholds_with_a_haz_zone_are_stored_described_and_rederived(passthrough, tmp_path):
    from core.modelfile import read_metadata

    path = _copy_model(passthrough, tmp_path / "haz.keras")
    okay, regions = _okay_patches()
    calibrate_model(path, okay, fpr=0.05, regions=regions, edge_band_px=(32, 48))
    metadata = read_metadata(path)
    thr = Thresholds.from_dict(json.loads(json.dumps(metadata["thresholds"])))
    assert thr.has_haz and thr.zone_labels() == ["HAZ", "bead 0-32 px", "bead 32-48 px"]
    assert thr.scoring() == {"edge_band_px": (32, 48), "haz": True}
    assert len(thr.columns(8)) == 8 and thr.whole[0] == max(m for m, _ in [(thr.mean, 0), *thr.zone_pairs()])
    text = describe(thr)
    assert "heat-affected zone" in text and "inside the bead's edge" in text
    looser = thresholds_from_metadata(metadata, fpr=0.1)  # from the stored scores, same zones
    assert looser.has_haz and looser.band_bounds == (32, 48) and looser.mean <= thr.mean
    # thresholds written before the HAZ had its zone load as they were
    old = dict(metadata["thresholds"])
    old.pop("haz_mean"), old.pop("haz_std")
    assert not Thresholds.from_dict(old).has_haz
    # scores of the wrong shape for the HAZ are refused
    from core.errors import CalibrationError

    with pytest.raises(CalibrationError, match="HAZ"):
        calibrate(np.ones((100, 6)), fpr=0.05, edge_band_px=(32, 48), haz=True)


def test_calibrate_command_gives_the_haz_its_own_pair_unless_one_pair_is_asked_for(passthrough, tmp_path, capsys):
    from app.cli import main
    from core.calibration import decode_scores
    from core.modelfile import read_metadata

    for name, extra in (("zones", []), ("whole", ["--edge-band", "0"]), ("tail", ["--rule", "tail"]),
                        ("two welds", ["--synthetic", "2"])):
        path = _copy_model(passthrough, tmp_path / f"{name}.keras")
        rc = main(["calibrate", str(path), "--synthetic", "1", "--fpr", "0.05", "--patches", "80", *extra])
        assert rc == 0
        thr = Thresholds.from_dict(read_metadata(path)["thresholds"])
        assert thr.rule == ("tail" if name == "tail" else "common")
        if name == "whole":
            assert not thr.has_zones
        else:
            assert thr.has_haz and thr.band_bounds == (32, 48)
            out = capsys.readouterr().out
            assert "heat-affected zone" in out
            scores = decode_scores(read_metadata(path)["okay_scores"])
            assert thr.flagged(scores).mean() <= 0.05  # either rule keeps to the target
            if name == "two welds":  # each left out, flagged by the other's thresholds
                assert "Each film left out" in out
                assert "synthetic:1000: " in out and "synthetic:1001: " in out
            else:
                assert "one film only, nothing to leave out" in out
