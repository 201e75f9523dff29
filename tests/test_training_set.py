"""From verdicts to training data: extraction (Section 3.3), entries, splits, exclusions, audit."""

from __future__ import annotations

import numpy as np
import pytest

from core import training_set as ts
from core.model import APERTURE, OFFSET, PATCH
from core.store import Store


def _blob(shape, centre, sigma, amp):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return (amp * np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma ** 2))).astype(np.float32)


def test_refine_region_finds_the_defect_inside_the_candidate_box():
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.004, (300, 300)).astype(np.float32)
    residual -= _blob(residual.shape, (150, 140), 5.0, 0.06)
    residual[:18] = np.nan  # undefined border as scans return it
    box = np.zeros(residual.shape, bool)
    box[120:180, 110:170] = True
    region = ts.refine_region(residual, box)
    assert region[150, 140]
    assert not region[~box].any()
    rows, cols = np.nonzero(region)
    # the refined region hugs the blob (a few sigma), much smaller than the drawn box
    assert 100 < region.sum() < 0.5 * box.sum()
    assert abs(rows.mean() - 150) < 2 and abs(cols.mean() - 140) < 2


def test_delta_is_image_minus_border_ring_mean_and_zero_outside():
    image = np.full((40, 40), 0.5, np.float32)
    image[:, 20:] = 0.6  # a step: the ring mean is what the defect sits on
    region = np.zeros_like(image, bool)
    region[10:15, 22:27] = True
    image[region] -= 0.1
    delta, weight = ts.delta_from_region(image, region)
    assert np.array_equal(weight, region)
    np.testing.assert_allclose(delta[region], -0.1, atol=1e-6)
    assert not delta[~region].any()


def test_verdict_perturbations_keep_the_defect_inside_the_aperture():
    delta = np.zeros((30, 50), np.float32)
    weight = np.zeros((30, 50), bool)
    weight[5:25, 3:47] = True
    delta[weight] = -0.2
    src = ts.VerdictPerturbations([(delta, weight)])
    d, w = src.sample(np.random.default_rng(1), 16)
    assert d.shape == w.shape == (16, PATCH, PATCH)
    ap = np.zeros((PATCH, PATCH), bool)
    ap[OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE] = True
    for k in range(16):
        assert w[k].sum() == weight.sum()  # the whole defect, only turned or flipped
        assert not w[k][~ap].any()
        np.testing.assert_allclose(d[k][w[k] > 0], -0.2)
    # placements and orientations vary
    assert len({tuple(np.argwhere(w[k])[0]) for k in range(16)}) > 8


def test_okay_patch_is_centred_and_clamped():
    image = np.arange(300 * 400, dtype=np.float32).reshape(300, 400) / 120000
    patch, origin = ts.okay_patch(image, (10, 390, 20, 399))
    assert patch.shape == (PATCH, PATCH) and origin == (0, 400 - PATCH)
    np.testing.assert_array_equal(patch, image[:PATCH, 400 - PATCH:])


# ---------------------------------------------------------------- with a database


@pytest.fixture
def reviewed(tmp_path):
    """A database with one radiograph file, a scan with two regions and three verdicts."""
    import tifffile

    from core.imageio import load_radiograph

    rng = np.random.default_rng(3)
    image = 0.5 + rng.normal(0, 0.004, (300, 500)).astype(np.float32)
    image -= _blob(image.shape, (150, 100), 5.0, 0.08)
    path = tmp_path / "weld.tif"
    tifffile.imwrite(path, np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16))
    rad = load_radiograph(path)
    store = Store(tmp_path / "review.sqlite")
    store.add_user("ina", role="interpreter")
    store.add_user("sam", role="supervisor")
    rid = store.add_radiograph_from(rad, user="ina")
    mid = store.add_model(sha256="f" * 64, metadata={"name": "m"}, name="m", user="sam")
    sid = store.start_scan(radiograph_id=rid, model_id=mid, fpr=0.01, user="ina")
    defect_region, false_region = store.finish_scan(sid, [
        {"bbox": (140, 90, 161, 111), "tests": "both", "severity": 3.0},
        {"bbox": (100, 350, 110, 360), "tests": "std", "severity": 1.1},
    ], user="ina")
    v_defect = store.add_verdict(user="ina", verdict="defect", region_id=defect_region, iso_code="2011")
    v_false = store.add_verdict(user="ina", verdict="false_alarm", region_id=false_region)
    v_unsure = store.add_verdict(user="ina", verdict="unsure", radiograph_id=rid, bbox=(20, 400, 40, 420),
                                 scan_id=sid)
    yield dict(store=store, image=rad.image, sha=rad.sha256, rid=rid, v_defect=v_defect,
               v_false=v_false, v_unsure=v_unsure)
    store.close()


def test_painted_defect_and_false_alarm_become_entries_with_audit(reviewed):
    store, image = reviewed["store"], reviewed["image"]
    painted = np.zeros((30, 30), bool)
    rr, cc = np.mgrid[:30, :30]
    painted[(rr - 10) ** 2 + (cc - 10) ** 2 <= 64] = True  # brush around the blob centre (150, 100)
    ts.add_painted_mask(store, reviewed["v_defect"], painted, origin=(140, 90), user="ina")
    report = ts.add_from_verdicts(store, user="ina")
    assert report.skipped == [] and len(report.added) == 2
    items = {e.verdict_id: e for e in ts.entries(store, with_data=True)}
    assert set(items) == {reviewed["v_defect"], reviewed["v_false"]}  # "unsure" teaches nothing
    defect, okay = items[reviewed["v_defect"]], items[reviewed["v_false"]]
    assert defect.kind == "defect" and defect.source == "painted" and defect.iso_code == "2011"
    a = defect.arrays()
    assert a["weight"].sum() == painted.sum()
    # the delta is the blob's contrast against its surroundings: clearly negative at the centre
    r0, c0 = defect.origin
    assert a["delta"][150 - r0, 100 - c0] < -0.05
    assert okay.kind == "okay" and okay.arrays()["patch"].shape == (PATCH, PATCH)
    np.testing.assert_allclose(okay.arrays()["patch"], ts.okay_patch(image, okay.bbox)[0])
    # running it again adds nothing; both additions are in the intact audit chain
    assert ts.add_from_verdicts(store).added == []
    events = [r["event"] for r in store.audit_log()]
    assert events.count(ts.EV_ADDED) == 2 and ts.EV_MASK in events
    assert store.verify().ok
    # the radiograph's split was fixed the first time it gave data
    assert store.one("SELECT split FROM training_splits")["split"] == defect.split


def test_only_supervisors_exclude_entries_with_a_reason(reviewed):
    store = reviewed["store"]
    ts.add_from_verdicts(store, user="ina")
    entry = ts.entries(store, kinds=("okay",))[0]
    with pytest.raises(PermissionError):
        ts.set_excluded(store, entry.id, True, user="ina", reason="blurred film")
    with pytest.raises(ValueError):
        ts.set_excluded(store, entry.id, True, user="sam", reason=" ")
    ts.set_excluded(store, entry.id, True, user="sam", reason="blurred film")
    assert [e.id for e in ts.entries(store, include_excluded=False)] == []
    assert ts.entries(store)[0].exclusion_reason == "blurred film"
    assert ts.summary(store)["excluded"] == 1
    ts.set_excluded(store, entry.id, False, user="sam")
    assert [e.id for e in ts.entries(store, include_excluded=False)] == [entry.id]
    events = [r["event"] for r in store.audit_log(user="sam")]
    assert ts.EV_EXCLUDED in events and ts.EV_INCLUDED in events
    assert store.verify().ok


def test_okay_patches_avoid_every_indication_but_false_alarms(reviewed):
    store = reviewed["store"]
    mask = ts.not_okay_mask(store, reviewed["rid"], reviewed["image"].shape)
    assert mask[150, 100]  # the confirmed defect
    assert mask[30, 410]  # the unsure box
    assert not mask[105, 355]  # the false alarm is okay weld
    ts.set_split(store, reviewed["rid"], "holdback", user="sam")
    assert ts.split_of(store, reviewed["sha"]) == "holdback"
    sampler, rads = ts.patch_sampler(store, "holdback", images={reviewed["sha"]: reviewed["image"]})
    assert [r["id"] for r in rads] == [reviewed["rid"]]
    with pytest.raises(ValueError, match="train split"):
        ts.patch_sampler(store, "train")
    with pytest.raises(PermissionError):
        ts.set_split(store, reviewed["rid"], "train", user="ina")


def test_entry_arrays_are_cut_again_from_the_model_input(reviewed):
    """Entries store raw arrays; ``entry_arrays`` cuts them again from a whole radiograph as a
    model sees it (the same arrays from the raw one, shifted okay patches but the same defect
    delta from a radiograph with a constant added: the delta is relative to its border ring)."""
    from core.normalise import remove_background

    store, image = reviewed["store"], reviewed["image"]
    painted = np.zeros((30, 30), bool)
    painted[5:16, 5:16] = True
    ts.add_painted_mask(store, reviewed["v_defect"], painted, origin=(140, 90), user="ina")
    ts.add_from_verdicts(store, user="ina")
    items = ts.entries(store, with_data=True)
    assert {e.kind for e in items} == {"defect", "okay"}
    shifted = image + np.float32(0.125)
    meta = {"input": {"background_sigma": 24.0, "background_method": "twicing"}}
    normed = ts.arrays_for_model(items, meta, images={reviewed["sha"]: image})
    assert [a.keys() for a in ts.arrays_for_model(items, None)] == [e.arrays().keys() for e in items]
    for e, n in zip(items, normed):
        stored = e.arrays()
        again, moved = ts.entry_arrays(e, image), ts.entry_arrays(e, shifted)
        for key in stored:
            np.testing.assert_array_equal(again[key], stored[key])
        if e.kind == "okay":
            np.testing.assert_allclose(moved["patch"], stored["patch"] + 0.125, atol=1e-6)
        else:
            np.testing.assert_allclose(moved["delta"], stored["delta"], atol=1e-6)
            np.testing.assert_array_equal(moved["weight"], stored["weight"])
        want = ts.entry_arrays(e, remove_background(image, 24.0, "twicing"))
        for key in stored:
            np.testing.assert_array_equal(n[key], want[key])
