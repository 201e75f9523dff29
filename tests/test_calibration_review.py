"""Calibration review: the okay patches that set a model's thresholds, and their audited exclusion.

A real (tiny, untrained) model is calibrated for real on a generated weld through the command
line; the review then has to find the patches it scored, re-derive the thresholds without the ones
a supervisor excludes, refuse anyone else, and leave the audit trail and the model consistent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.calibration import Thresholds, calibrate, decode_scores, thresholds_from_metadata
from core.calibration_review import exclude, include, kept_scores, origins, review_patches, tail
from core.errors import CalibrationError, StoreError
from core.model import build_autoencoder
from core.modelfile import file_sha256, load_model, read_metadata, save_model, sidecar_path
from core.store import Store

CAL = ["--synthetic", "1", "--fpr", "0.05", "--patches", "80", "--seed", "1000"]


@pytest.fixture
def calibrated(tmp_path):
    """A calibrated model file, and a database with a supervisor, an interpreter and the model."""
    from app.cli import main

    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), tmp_path / "m.keras",
                      metadata={"name": "m"})
    assert main(["calibrate", str(path), *CAL]) == 0
    store = Store(tmp_path / "review.db")
    store.add_user("sue", role="supervisor")
    store.add_user("ian", role="interpreter")
    meta = read_metadata(path)
    store.add_model(sha256=file_sha256(path), metadata=meta, thresholds=meta["thresholds"], path=path)
    yield path, store
    store.close()


def test_calibration_records_where_each_okay_patch_was_cut(calibrated):
    from app.commands.calibrate import draw_okay_patches

    path, _ = calibrated
    meta = read_metadata(path)
    where = origins(meta)
    assert len(where) == 80 == len(decode_scores(meta["okay_scores"]))
    assert {o.source for o in where} == {"synthetic:1000"}
    top = tail(meta, 5)
    assert [t.rank for t in top] == [1, 2, 3, 4, 5]
    assert all(a.ratio >= b.ratio for a, b in zip(top, top[1:]))
    assert top[0].ratio >= 1.0 - 1e-9  # at 5 % of 80, the top patches are at or over the thresholds
    # cut again from its source, a patch is exactly the one that was scored
    patches, _, _, _ = draw_okay_patches(meta, 80, synthetic=1, seed=1000)
    shown = review_patches(load_model(path), [top[0].index, top[3].index])
    for item in shown:
        np.testing.assert_allclose(item["patch"], patches[item["index"]], atol=1e-6)
        assert item["residual"].shape == (156, 156) and np.isfinite(item["residual"]).all()


def test_a_supervisors_exclusion_re_derives_the_thresholds_and_is_audited(calibrated):
    path, store = calibrated
    meta = read_metadata(path)
    before = meta["thresholds"]
    top = [t.index for t in tail(meta, 3)]
    thr = exclude(path, top[:2], user="sue", reason="unmarked pore on the calibration film", store=store)

    scores = decode_scores(meta["okay_scores"])
    keep = np.setdiff1d(np.arange(len(scores)), top[:2])
    zoning = Thresholds.from_dict(before).zoning()
    assert zoning == {"edge_band_px": (32, 48), "haz": True, "rule": "common"}  # weldreview calibrate's zones and rule
    expected = calibrate(scores[keep], fpr=0.05, **zoning)
    assert (thr.mean, thr.std, thr.haz_mean, thr.edge_mean, thr.edge_std) == pytest.approx(
        (expected.mean, expected.std, expected.haz_mean, expected.edge_mean, expected.edge_std))
    assert thr.n_okay == 78 and thr.fpr_target == 0.05
    assert np.mean(thr.flagged(scores[keep])) <= 0.05

    after = read_metadata(path)  # the model in use now scans at the new thresholds
    assert load_model(path).thresholds.mean == pytest.approx(thr.mean)
    assert sorted(int(k) for k in after["calibration_review"]["excluded"]) == sorted(top[:2])
    assert len(kept_scores(after)) == 78
    listed = {t.index: t for t in tail(after, 3)}
    assert listed[top[0]].excluded["user"] == "sue" and "pore" in listed[top[0]].excluded["reason"]
    # another operating point of the same model leaves the excluded patches out too
    other = thresholds_from_metadata(after, fpr=0.1)
    assert other.mean == pytest.approx(calibrate(scores[keep], fpr=0.1, **zoning).mean)

    event = store.audit_log()[-1]
    assert event["event"] == "calibration patches excluded" and event["user"] == "sue"
    d = event["details"]
    assert [p["index"] for p in d["patches"]] == sorted(top[:2])
    assert all(p["film"] == "synthetic:1000" and len(p["centre"]) == 2 for p in d["patches"])
    assert d["thresholds_before"]["mean"] == before["mean"] and d["thresholds_after"]["mean"] == thr.mean
    assert store.models()[0]["thresholds"]["mean"] == thr.mean  # the registered model follows
    assert store.verify().ok

    # putting one back: audited, thresholds from the 79 kept patches
    thr2 = include(path, [top[1]], user="sue", reason="looked again: accepted weld", store=store)
    assert thr2.n_okay == 79 and store.audit_log()[-1]["event"] == "calibration patches included"
    assert list(read_metadata(path)["calibration_review"]["excluded"]) == [str(top[0])]
    include(path, [top[0]], user="sue", reason="all back", store=store)
    assert read_metadata(path)["thresholds"] == before  # the original operating point again


def test_only_a_supervisor_with_a_reason_may_exclude_and_a_refusal_changes_nothing(calibrated):
    path, store = calibrated
    side = sidecar_path(path).read_text()
    n_events = len(store.audit_log())
    top = tail(read_metadata(path), 1)[0].index
    with pytest.raises(ValueError, match="only a supervisor"):
        exclude(path, [top], user="ian", reason="looks like a pore", store=store)
    with pytest.raises(ValueError, match="give a reason"):
        exclude(path, [top], user="sue", reason="  ", store=store)
    with pytest.raises(ValueError, match="unknown user"):
        exclude(path, [top], user="eve", reason="x", store=store)
    with pytest.raises(ValueError, match="no okay calibration patch 80"):
        exclude(path, [80], user="sue", reason="x", store=store)
    with pytest.raises(ValueError, match="already included"):
        include(path, [top], user="sue", reason="x", store=store)
    # at 5 % FPR 60 okay patches are needed: 21 exclusions of 80 would leave too few
    with pytest.raises(CalibrationError, match="at least 60"):
        exclude(path, range(21), user="sue", reason="too many", store=store)
    assert sidecar_path(path).read_text() == side and len(store.audit_log()) == n_events
    assert not list(path.parent.glob(".*.review"))


def test_no_exclusion_without_its_audit_event(calibrated, tmp_path):
    path, store = calibrated
    side = sidecar_path(path).read_text()
    top = tail(read_metadata(path), 1)[0].index
    readonly = Store(store.path, readonly=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            exclude(path, [top], user="sue", reason="pore", store=readonly)
    finally:
        readonly.close()
    assert sidecar_path(path).read_text() == side  # the model keeps its thresholds


def test_a_new_calibration_starts_a_new_review(calibrated):
    from app.cli import main

    path, store = calibrated
    exclude(path, [tail(read_metadata(path), 1)[0].index], user="sue", reason="pore", store=store)
    assert main(["calibrate", str(path), *CAL[:-1], "1001"]) == 0
    meta = read_metadata(path)
    assert meta["calibration_review"] is None and len(kept_scores(meta)) == 80


def test_a_calibration_without_origins_can_be_listed_not_shown(calibrated):
    path, _ = calibrated
    meta = json.loads(sidecar_path(path).read_text())
    del meta["okay_origins"]  # calibrated before origins were recorded
    sidecar_path(path).write_text(json.dumps(meta))
    assert tail(read_metadata(path), 2)[0].origin is None
    with pytest.raises(CalibrationError, match="calibrate the model again"):
        review_patches(load_model(path), [0])


def test_uncalibrated_model_has_nothing_to_review(tmp_path):
    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), tmp_path / "u.keras",
                      metadata={"name": "u"})
    with pytest.raises(CalibrationError, match="not calibrated"):
        tail(read_metadata(path))


def test_command_line_review_and_exclusion(calibrated, capsys):
    from app.cli import main

    path, store = calibrated
    capsys.readouterr()
    assert main(["calibrate", str(path), "--review", "--top", "4"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "#", "score/thr"] and len(lines) == 8
    assert lines[0].split()[5:7] == ["haz|m|", "haz"] and lines[-2].startswith("zones: haz: HAZ, band: bead 0-32 px")
    assert lines[-1].startswith("films left out: one film only")  # calibrated on one weld
    assert "synthetic:1000 (" in lines[1]
    first = int(lines[1].split()[1])
    assert main(["calibrate", str(path), "--exclude", str(first)]) == 2  # no user, no reason
    assert "--user" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--exclude", str(first), "--user", "ian", "--reason", "pore",
                 "--db", str(store.path)]) == 1
    assert "only a supervisor" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--exclude", str(first), "--user", "sue", "--reason", "pore",
                 "--db", str(store.path), "--review", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("thresholds now: |mean| >") and "79 okay patches" in out
    assert out.splitlines()[1].startswith("films left out: one film only")
    assert "EXCLUDED by sue: pore" in out
    # --spot: every patch over the strongest residual of the next one
    second = next(t.index for t in tail(read_metadata(path), 5) if t.excluded is None)
    (item,) = review_patches(load_model(path), [second])
    assert main(["calibrate", str(path), "--exclude", str(second), "--spot", "--user", "sue",
                 "--reason", "scratch", "--db", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert f"patch {second}: strongest residual at" in out and "synthetic:1000" in out
    from core.calibration_review import exclusions

    assert set(exclusions(read_metadata(path))) == {first} | set(item["covering"])


def test_benchmark_patch_sets_say_where_calibration_patches_were_cut(gdxray_pair):
    from core.benchmark import BUDGETS, Split, build_patch_sets
    from core.datasets import load_dataset
    from core.sampler import PatchGeometry, extract

    a, b = load_dataset(gdxray_pair, include_unmasked=False)
    sets = build_patch_sets(Split([a], [b], [a], "test split"), BUDGETS["tiny"])
    where = origins({"okay_origins": sets.calibration_origins})
    assert len(where) == len(sets.calibration_okay) and {o.source for o in where} == {b.name}
    o = where[0]
    again = extract(b.image, PatchGeometry(0, o.centre, o.matrix), order=3)
    np.testing.assert_allclose(again, sets.calibration_okay[0], atol=1e-6)


def test_a_patchs_spot_is_where_its_residual_peaks_and_covers_every_patch_over_it(calibrated):
    """The spot (film coordinates) and the patches over it agree with the sampler's own geometry."""
    from core.imageio import normalise
    from core.model import APERTURE, OFFSET
    from core.residual import local_mean_std
    from core.sampler import PatchGeometry, extract
    from core.synthetic import generate_weld

    path, _ = calibrated
    meta = read_metadata(path)
    where = origins(meta)
    top = tail(meta, 1)[0].index
    (item,) = review_patches(load_model(path), [top])
    film = normalise(generate_weld(1000).image, bits_stored=16)[0]
    marker = np.zeros(film.shape, np.float32)
    marker[tuple(int(round(v)) for v in item["spot"])] = 1.0

    def aperture_of(i):
        o = where[i]
        cut = extract(marker, PatchGeometry(0, o.centre, o.matrix), order=0)
        return cut[OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]

    mean, _ = local_mean_std(item["residual"])
    peak = np.unravel_index(np.nanargmax(np.abs(mean)), mean.shape)
    at = np.unravel_index(np.argmax(aperture_of(top)), (APERTURE, APERTURE))
    assert np.abs(np.subtract(peak, at)).max() <= 1  # the spot is the residual's peak on the film
    expected = {i for i in range(len(where)) if aperture_of(i).any()}
    covering = set(item["covering"])
    assert top in covering and len(covering ^ expected) <= 1  # at most a border pixel's rounding


@pytest.mark.parametrize("band", [48, 0])
def test_calibrate_takes_the_edge_band_width_and_a_scan_uses_it(tmp_path, band):
    from app.cli import main
    from app.commands.calibrate import draw_okay_patches
    from core.scanning import patch_scores, scan_image
    from core.synthetic import generate_weld

    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), tmp_path / "b.keras",
                      metadata={"name": "b"})
    assert main(["calibrate", str(path), *CAL, "--edge-band", str(band)]) == 0
    bundle = load_model(path)
    thr = bundle.thresholds
    patches, regions, _, _ = draw_okay_patches(bundle.metadata, 80, synthetic=1, seed=1000)
    zoning = {"edge_band_px": band, "haz": band > 0}  # the HAZ has its own pair beside edge zones
    expected = calibrate(patch_scores(patches, bundle.model, regions=regions, **zoning), fpr=0.05, **zoning)
    assert thr == expected and thr.edge_band_px == band and thr.has_edge_band == (band > 0)
    assert thr.has_haz == (band > 0)
    if band:  # the scan applies the band's thresholds within 48 px of the region's edge
        from core.imageio import normalise
        from core.residual import edge_band

        from core.scanning import _zones, threshold_maps

        weld = generate_weld(1000)
        image = normalise(weld.image, bits_stored=16)[0][:, :600]
        labels = weld.region_labels()[:, :600]  # bead 1, heat-affected zone 2
        result = scan_image(image, bundle, roi=labels)

        t_mean, _ = threshold_maps(result.thresholds, _zones(result.thresholds, labels), np.s_[:, :])
        assert len({thr.edge_mean, thr.mean, thr.haz_mean}) == 3
        bead = labels == 1  # the band's thresholds within 48 px of the bead's edge, the HAZ its own
        assert np.array_equal((t_mean == thr.edge_mean) & bead, edge_band(bead, 48))
        assert (t_mean[labels == 2] == thr.haz_mean).all() and (t_mean[labels == 0] == thr.whole[0]).all()


def test_calibrate_refuses_a_negative_edge_band(tmp_path, capsys):
    from app.cli import main

    assert main(["calibrate", str(tmp_path / "x.keras"), "--synthetic", "1", "--edge-band", "-1"]) == 2
    assert "--edge-band" in capsys.readouterr().err


def test_calibrate_default_edge_zones_are_cores():
    """``weldreview calibrate``'s default --edge-band is the zones the benchmark scores with."""
    from app.commands.calibrate import DEFAULT_EDGE_BAND, edge_bounds
    from core.residual import EDGE_ZONES_PX

    assert edge_bounds(DEFAULT_EDGE_BAND) == EDGE_ZONES_PX == (32, 48)


def test_calibrating_on_a_gdxray_folder_leaves_out_the_round_robin_films_whose_flaws_have_no_mask(tmp_path, capsys):
    """GDXray's W0003 films carry flaws with no pixel mask: as "unmasked, so defect-free" films
    their flaws would set the thresholds. Only those real-values.xls reads as "No indication" in
    every section (W0003_0015, W0003_0023) are accepted weld (notes item 18)."""
    from app.cli import main
    from core.imageio import write_png
    from core.synthetic import generate_weld

    data = tmp_path / "gdxray"
    for k, (folder, name) in enumerate((("W0001", "W0001_0004"), ("W0003", "W0003_0015"),
                                        ("W0003", "W0003_0036"))):
        weld = generate_weld(20 + k, shape=(500, 1200), defects=None, iqi=False, markers=False)
        (data / folder).mkdir(parents=True, exist_ok=True)
        write_png(data / folder / f"{name}.png", (weld.image >> 8).astype(np.uint8))
    (data / "W0002").mkdir()
    write_png(data / "W0002" / "W0002_0004.png", np.zeros((500, 1200), np.uint8))
    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), tmp_path / "g.keras",
                      metadata={"name": "g"})
    assert main(["calibrate", str(path), "--data", str(data), "--fpr", "0.05", "--patches", "80"]) == 0
    err = capsys.readouterr().err
    assert "skipping 1 radiograph(s) known to hold flaws no mask marks (W0003_0036: GDXray" in err
    films = {o.source.rsplit("/", 1)[-1] for o in origins(read_metadata(path))}
    assert films == {"W0001_0004.png", "W0003_0015.png"}
