"""Leaving each calibration film out: do the other films' thresholds hold on it?"""

import numpy as np
import pytest

from core.calibration import calibrate, encode_scores
from core.calibration_review import ORIGINS_KEY, REVIEW_KEY, encode_origins
from core.film_check import check_model, describe_checks, leave_one_film_out, summary
from core.sampler import PatchGeometry

FILMS = ("C:\\films\\W0001_0004.png", "/films/W0001_0009.png", "synthetic:1000")


def _scores(n_per_film=2000, seed=3):
    """Interior and one zone's pairs for three films; the second film's scores run 60 % higher,
    as a film with a steeper flank than the others (GDXray's W0001_0009, notes item 11)."""
    rng = np.random.default_rng(seed)
    parts, films = [], []
    for k, film in enumerate(FILMS):
        s = rng.gamma(4.0, 0.004, (n_per_film, 4)) * (1.6 if k == 1 else 1.0)
        parts.append(s)
        films += [film] * n_per_film
    return np.concatenate(parts), np.array(films)


@pytest.mark.parametrize("rule", ["common", "tail"])
def test_each_film_is_flagged_by_the_thresholds_of_the_others(rule):
    scores, films = _scores()
    checks = leave_one_film_out(scores, films, fpr=0.001, rule=rule)
    assert [c.source for c in checks] == list(FILMS)
    for c in checks:
        own = films == c.source
        others = calibrate(scores[~own], fpr=0.001, edge_band_px=32, rule=rule)  # 4,000 patches: enough
        assert (c.n, c.n_others) == (2000, 4000)
        assert c.flagged == others.flagged(scores[own]).sum()
    by_name = {c.name: c for c in checks}
    assert set(by_name) == {"W0001_0004.png", "W0001_0009.png", "synthetic:1000"}
    assert by_name["W0001_0009.png"].fpr > 0.05  # the steeper film: far above the target
    assert by_name["W0001_0004.png"].fpr < 0.01 and by_name["synthetic:1000"].fpr < 0.01
    lo, hi = by_name["W0001_0009.png"].fpr_ci
    assert 0.001 < lo < by_name["W0001_0009.png"].fpr < hi

    assert summary(checks).startswith("each calibration film left out: W0001_0004.png ")
    assert f"W0001_0009.png {100 * by_name['W0001_0009.png'].fpr:.2f} %" in summary(checks)
    text = describe_checks(checks, 0.001)
    assert "above the target even at the low end of the interval: W0001_0009.png." in text
    assert "W0001_0004.png: " in text and "thresholds from 4000 patches" in text
    # its scores run higher throughout, and the check says so (and what to do)
    assert by_name["W0001_0009.png"].noisier and 1.5 < by_name["W0001_0009.png"].typical < 1.7
    assert "Noisier throughout (1.6 times the others' typical residual): W0001_0009.png." in text
    assert "W0001_0009.png 8" not in summary(checks) and "(noisier throughout)" in summary(checks)


def test_the_check_tells_a_noisier_film_from_one_with_a_heavy_tail():
    """A film noisier throughout (another exposure or scanner: GDXray's round-robin films) and a
    film typical in the median whose strongest patches stand out (W0001_0009's flank, scratches)
    fail the check for different reasons, and the check says which (notes item 18)."""
    rng = np.random.default_rng(5)
    base = rng.gamma(4.0, 0.004, (6000, 4))
    films = np.repeat(np.array(["a.png", "b.png", "c.png"]), 2000)
    noisy = base.copy()
    noisy[films == "c.png"] *= 4.0
    checks = {c.name: c for c in leave_one_film_out(noisy, films, fpr=0.001)}
    assert checks["c.png"].noisier and 3.5 < checks["c.png"].typical < 4.5
    assert checks["c.png"].fpr > 0.5 and not checks["a.png"].noisier
    text = describe_checks(list(checks.values()), 0.001)
    assert "above the target even at the low end of the interval: c.png." in text
    assert "Noisier throughout (4." in text and "): c.png. Another exposure, film or scanner" in text
    assert "c.png: " in text and "typical okay residual 4." in text

    tail = base.copy()
    heavy = np.flatnonzero(films == "c.png")[:100]  # 5 % of its patches: a flank, scratches
    tail[heavy] *= 3.0
    checks = {c.name: c for c in leave_one_film_out(tail, films, fpr=0.001)}
    assert not checks["c.png"].noisier and 0.9 < checks["c.png"].typical < 1.15
    assert checks["c.png"].fpr > 0.01
    text = describe_checks(list(checks.values()), 0.001)
    assert "above the target even at the low end of the interval: c.png." in text
    assert "Not noisier throughout (1.0 times" in text and "stand out: c.png." in text
    assert "calibration review" in text
    assert "another exposure" not in text

    # the reference is the other films' median, not their pooled patches: a noisy film in the pool
    # does not make the others look quiet
    films4 = np.concatenate([films, np.repeat("d.png", 2000)])
    mixed = np.concatenate([tail, base[:2000] * 4.0])
    checks = {c.name: c for c in leave_one_film_out(mixed, films4, fpr=0.001)}
    assert 0.9 < checks["a.png"].typical < 1.15 and checks["d.png"].noisier

    # patches with no interior kernels (a zone-only patch scores 0 there) do not count; none at all: not known
    zone_only = base.copy()
    zone_only[:, :2] = 0.0
    checks = leave_one_film_out(zone_only, films, fpr=0.001)
    assert all(np.isnan(c.typical) and not c.noisier for c in checks)
    assert "typical okay residual not known" in describe_checks(checks, 0.001)


def test_one_film_has_nothing_to_leave_out_and_fewer_patches_than_a_calibration_needs_still_check():
    scores, films = _scores(n_per_film=900)
    assert leave_one_film_out(scores[films == FILMS[0]], films[films == FILMS[0]], fpr=0.001) == []
    assert "one film only" in describe_checks([], 0.001) and summary([]) == "no calibration film to leave out (one film)"
    # 1,800 patches cannot support 0.1 % in a calibration (3,000 needed); the check still says
    checks = leave_one_film_out(scores, films, fpr=0.001)
    assert [c.n_others for c in checks] == [1800] * 3
    with pytest.raises(ValueError, match="films named"):
        leave_one_film_out(scores, films[:-1], fpr=0.001)


def test_a_calibrated_model_s_stored_patches_are_checked_without_the_excluded_ones():
    scores, films = _scores()
    thr = calibrate(scores, fpr=0.001, edge_band_px=32, rule="tail")
    image = np.repeat(np.arange(len(FILMS)), 2000)  # each patch's film, as _scores drew them
    geometries = [PatchGeometry(int(i), (100.0, 100.0), np.eye(2)) for i in image]
    excluded = [0, 1, 2500]  # two of the first film's patches, one of the second's
    metadata = {"thresholds": thr.to_dict(), "okay_scores": encode_scores(scores),
                ORIGINS_KEY: encode_origins(FILMS, geometries),
                REVIEW_KEY: {"excluded": {str(i): {"reason": "scratch", "user": "sue"} for i in excluded}}}
    checks = check_model(metadata)
    keep = np.setdiff1d(np.arange(len(scores)), excluded)
    direct = leave_one_film_out(scores[keep], films[keep], fpr=0.001, rule="tail")
    assert [(c.source, c.n, c.flagged, c.n_others) for c in checks] == [
        (c.source, c.n, c.flagged, c.n_others) for c in direct]
    assert [c.typical for c in checks] == pytest.approx([c.typical for c in direct], rel=1e-5)  # stored as float32
    assert [c.n for c in checks] == [1998, 1999, 2000]
    # a damaged record, or a calibration that did not record its patches' films, cannot be
    # checked, and says so
    metadata[ORIGINS_KEY] = {**metadata[ORIGINS_KEY], "image": "not base64!"}
    assert check_model(metadata) is None
    del metadata[ORIGINS_KEY]
    assert check_model(metadata) is None
    assert "not known" in describe_checks(None, 0.001)
