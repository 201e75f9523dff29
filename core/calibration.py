"""Thresholds for the residual tests, calibrated on held-out okay patches to a target FPR.

Calibration rule
----------------
Each held-out okay patch gets two scores over its 156 x 156 aperture: the largest ``|local mean|``
and the largest local std of its 9 x 9 kernels. A patch is a false positive when either score
exceeds its threshold. Both thresholds are set at the same empirical quantile level of their
score (the k-th smallest of each column, k the same for both); the smallest k whose joint
patch-level false positive rate on the okay patches is at most the target is chosen, i.e. the most
sensitive pair of thresholds that meets the target. The achieved FPR is given with a two-sided 95 %
Clopper-Pearson interval.

With many columns (zones) and few allowed false positives, a common quantile ends at every
column's largest okay score: at 0.1 % FPR on 3,000 patches, 3 may be over, and the 8 columns of
the application's region have their largest on different patches. ``rule="tail"`` instead starts
from the largest of each column and lowers, one okay patch at a time, the threshold whose next step
down is the largest fraction of it, while the joint FPR meets the target: the allowed false
positives go to the columns whose largest scores stand out from the rest.

Calibration is refused (CalibrationError) when there are fewer than ``ceil(3 / fpr)`` okay patches:
with fewer, even zero false positives cannot show the FPR is below the target (the "rule of
three": zero events in n trials bound the rate by about 3/n at 95 % confidence).

Edge band. With a weld region the scores have four columns: the pair over the region's interior
and the pair over its edge band (``core.residual.edge_band``, ``EDGE_BAND_PX`` wide), and the rule
above runs over the four columns at once: the k-th smallest of each, the smallest k whose joint
FPR (a patch fails when any of the four tests fails) meets the target. The band, where the bead's
flanks leave larger residuals on every radiograph, so gets its own, higher thresholds instead of
setting the interior's. The band can be split into zones by distance from the region's edge
(``edge_band_px=(32, 48)``: 0-32 px and 32-48 px, ``core.residual.edge_zones``), one pair each,
all chosen by the same rule over 2 + 2 per zone columns: on GDXray a bead's shoulder 32-48 px
inside the edge otherwise set the interior's thresholds (docs/benchmark/notes.md, item 8). A scan
without a weld region uses the larger of each pair everywhere.

Heat-affected zone. The application's weld region is the bead plus a heat-affected-zone margin
on each side (``core.roi.find_weld(include_haz=True)``, given as a label map,
``core.roi.WeldROI.labels``). Its edge zones are then measured from the bead's edge and the margin
is a zone of its own, outermost (``haz=True``, ``core.residual.weld_zones``): measured from the
region's edge, the bead's toe fell in the interior and raised its |mean| threshold from 0.017 to
0.08 on GDXray, and no synthetic anomaly type was found (docs/benchmark/notes.md, items 13 and 15).

Slope zones. Instead of distance from the region's edge, the kernels can be grouped by the slope
of the raw film at their centre (``core.residual.slope_map``: gradient magnitude after a Gaussian
of 16 px), split at quantiles of the okay calibration kernels' slopes (``SLOPE_QUANTILES``, the
median and 80 %): the flattest half is the interior, the steeper zones get a pair each, so a
flank is a flank wherever it lies on each film (``slope_bounds=...``; notes item 11).

The okay scores are stored with the thresholds (float32, base64) so thresholds for another FPR
can be derived without running the model again (``thresholds_from_metadata``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import CalibrationError
from core.model import APERTURE
from core.residual import EDGE_BAND_PX, SLOPE_QUANTILES, SLOPE_SIGMA_PX, zone_spans

DEFAULT_FPR = 0.001
CONFIDENCE = 0.95
RULES = ("common", "tail")
RULE_TEXT = {"common": "joint common quantile; Clopper-Pearson 95%",
             "tail": "joint heaviest tail; Clopper-Pearson 95%"}


@dataclass(frozen=True)
class Thresholds:
    """Operating point of the residual tests.

    Attributes
    ----------
    mean, std : float
        Thresholds on ``|local mean|`` and local std of the residual (grey levels of [0, 1]).
    fpr_target : float
        Patch-level false positive rate asked for.
    n_okay : int
        Okay patches used.
    fpr_achieved : float
        Patch-level FPR on those patches.
    fpr_ci : tuple of float
        Two-sided 95 % Clopper-Pearson interval of the FPR.
    edge_mean, edge_std : float or None
        Thresholds of the weld region's edge band (None: one pair for the whole region).
    edge_band_px : int
        Width of that band (0 without one).
    inner_bands : tuple of (int, float, float)
        Further zones inside the edge band, outward in: ``(bound_px, mean, std)`` for the kernels
        between the previous bound and ``bound_px`` from the region's edge (e.g. a bead's
        shoulder, ``(48, m, s)`` after a 32 px band); the interior lies beyond the last bound.
    slope_zones : tuple of (float, float, float)
        Zones by the film's slope instead (``core.residual.slope_zones``): ``(bound, mean, std)``
        for the kernels whose slope is at least ``bound`` (and below the next zone's); the
        interior pair holds below the first bound. Exclusive with the edge band.
    slope_sigma_px : float
        The Gaussian of the slope (``core.residual.slope_map``); 0 without slope zones.
    haz_mean, haz_std : float or None
        Thresholds of the heat-affected zone around the bead (``core.residual.weld_zones``); the
        edge zones' bounds are then measured from the bead's edge, not the region's. None: the
        region is taken whole.
    rule : {"common", "tail"}
        How the thresholds were chosen (``calibrate``); re-derivations use the same.
    """

    mean: float
    std: float
    fpr_target: float
    n_okay: int
    fpr_achieved: float
    fpr_ci: tuple[float, float]
    edge_mean: float | None = None
    edge_std: float | None = None
    edge_band_px: int = 0
    inner_bands: tuple = ()
    slope_zones: tuple = ()
    slope_sigma_px: float = 0.0
    haz_mean: float | None = None
    haz_std: float | None = None
    rule: str = "common"

    @property
    def has_edge_band(self) -> bool:
        return self.edge_band_px > 0 and self.edge_mean is not None and self.edge_std is not None

    @property
    def has_haz(self) -> bool:
        """Whether the heat-affected zone has its own pair (edge zones then from the bead's edge)."""
        return self.haz_mean is not None and self.haz_std is not None

    @property
    def has_zones(self) -> bool:
        """Whether parts of the weld region have their own pairs (edge zones or slope zones)."""
        return self.has_edge_band or self.has_haz or bool(self.slope_zones)

    @property
    def slope_bounds(self) -> tuple[float, ...]:
        """The slope zones' lower bounds, increasing (grey levels per px); () without."""
        return tuple(float(b) for b, _, _ in self.slope_zones)

    def scoring(self) -> dict:
        """How the scores are split into zones, as ``core.scanning.patch_scores`` takes it."""
        if self.slope_zones:
            return {"slope_bounds": self.slope_bounds}
        if self.has_haz:
            return {"edge_band_px": self.band_bounds, "haz": True}
        return {"edge_band_px": self.band_bounds}

    def zoning(self) -> dict:
        """The zones again, as ``calibrate`` takes them (:meth:`scoring` and the slope's Gaussian)."""
        zones = self.scoring()
        if self.slope_zones:
            zones["slope_sigma_px"] = self.slope_sigma_px
        return {**zones, "rule": self.rule}

    def zone_labels(self) -> list[str]:
        """Each zone for people, in :meth:`zone_pairs` order: ``"0-32 px"``, ``"slope >= 0.0053"``,
        ``"HAZ"`` (then ``"bead 0-32 px"``...)."""
        from core.residual import slope_spans

        if self.slope_zones:
            return slope_spans(self.slope_bounds)
        if self.has_haz:
            return ["HAZ"] + [f"bead {a}-{b} px" for a, b in zone_spans(self.band_bounds)]
        return [f"{a}-{b} px" for a, b in zone_spans(self.band_bounds)]

    @property
    def band_bounds(self) -> tuple[int, ...]:
        """The zones' outer bounds from the region's edge, px: ``(32,)``, ``(32, 48)``; () without."""
        if not self.has_edge_band:
            return ()
        return (self.edge_band_px, *(int(b) for b, _, _ in self.inner_bands))

    def zone_pairs(self) -> list[tuple[float, float]]:
        """(mean, std) of each edge zone, outermost first (the heat-affected zone, then as
        :attr:`band_bounds`), or of each slope zone, flattest first."""
        if self.slope_zones:
            return [(float(m), float(sd)) for _, m, sd in self.slope_zones]
        pairs = [(self.haz_mean, self.haz_std)] if self.has_haz else []
        if not self.has_edge_band:
            return pairs
        return pairs + [(self.edge_mean, self.edge_std), *((m, s) for _, m, s in self.inner_bands)]

    @property
    def whole(self) -> tuple[float, float]:
        """The pair used where no weld region splits interior and band: the larger of each."""
        pairs = [(self.mean, self.std), *self.zone_pairs()]
        return max(m for m, _ in pairs), max(s for _, s in pairs)

    def columns(self, n: int) -> np.ndarray:
        """Thresholds matching score columns: 2 (whole aperture) or 2 + 2 per edge zone (interior,
        then the zones outermost first); 4 columns also fit thresholds without a band (the
        interior pair for both)."""
        zones = self.zone_pairs()
        if n == 2:
            return np.array(self.whole, np.float64)
        if n == 4 and not zones:
            return np.array([self.mean, self.std, self.mean, self.std], np.float64)
        if n == 2 + 2 * len(zones):
            return np.array([self.mean, self.std, *(v for pair in zones for v in pair)], np.float64)
        raise ValueError(f"scores have {n} columns; these thresholds take 2 or {2 + 2 * len(zones)}")

    def flagged(self, scores) -> np.ndarray:
        """Which patches fail any test: scores (N, 2) or (N, 2 + 2 per zone) as ``patch_scores``
        gives them."""
        s = np.asarray(scores, dtype=np.float64)
        return (s > self.columns(s.shape[1])).any(axis=1)

    def combined(self, scores) -> np.ndarray:
        """One score per patch, ``max`` over the columns of score / threshold (> 1: flagged)."""
        from core.metrics import combined_score

        s = np.asarray(scores, dtype=np.float64)
        return combined_score(s, self.columns(s.shape[1]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fpr_ci"] = [float(v) for v in self.fpr_ci]
        d["rule"] = RULE_TEXT[self.rule]
        if not self.has_edge_band:
            for key in ("edge_mean", "edge_std", "edge_band_px"):
                d.pop(key)
        if self.inner_bands:
            d["inner_bands"] = [[int(b), float(m), float(s)] for b, m, s in self.inner_bands]
        else:
            d.pop("inner_bands")
        if self.slope_zones:
            d["slope_zones"] = [[float(b), float(m), float(s)] for b, m, s in self.slope_zones]
            d["slope_sigma_px"] = float(self.slope_sigma_px)
        else:
            d.pop("slope_zones")
            d.pop("slope_sigma_px")
        if not self.has_haz:
            d.pop("haz_mean")
            d.pop("haz_std")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Thresholds:
        edge = d.get("edge_mean") is not None and d.get("edge_std") is not None
        return cls(
            mean=float(d["mean"]), std=float(d["std"]), fpr_target=float(d["fpr_target"]),
            n_okay=int(d["n_okay"]), fpr_achieved=float(d["fpr_achieved"]),
            fpr_ci=tuple(float(v) for v in d["fpr_ci"]),
            edge_mean=float(d["edge_mean"]) if edge else None,
            edge_std=float(d["edge_std"]) if edge else None,
            edge_band_px=int(d.get("edge_band_px", 0)) if edge else 0,
            inner_bands=tuple((int(b), float(m), float(s)) for b, m, s in d.get("inner_bands") or ())
            if edge else (),
            slope_zones=tuple((float(b), float(m), float(s)) for b, m, s in d.get("slope_zones") or ()),
            slope_sigma_px=float(d.get("slope_sigma_px") or 0.0),
            haz_mean=float(d["haz_mean"]) if d.get("haz_mean") is not None else None,
            haz_std=float(d["haz_std"]) if d.get("haz_std") is not None else None,
            rule=next((r for r, text in RULE_TEXT.items() if d.get("rule") == text), "common"),
        )


def min_okay_patches(fpr: float) -> int:
    """Fewest okay patches that can support ``fpr`` (rule of three: ``ceil(3 / fpr)``)."""
    _check_fpr(fpr)
    return math.ceil(3.0 / fpr - 1e-9)


def band_bounds(edge_band_px) -> tuple[int, ...]:
    """Edge zone bounds from an int (one band; 0 for none) or a sequence such as ``(32, 48)``."""
    if isinstance(edge_band_px, (int, np.integer)):
        return (int(edge_band_px),) if edge_band_px > 0 else ()
    bounds = tuple(int(b) for b in edge_band_px)
    if any(b <= 0 for b in bounds) or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise CalibrationError(f"edge zone bounds must be positive and increasing, got {list(bounds)}")
    return bounds


def calibrate(okay_scores: np.ndarray, *, fpr: float = DEFAULT_FPR, edge_band_px=0, slope_bounds=(),
              slope_sigma_px: float = SLOPE_SIGMA_PX, haz: bool = False, rule: str = "common") -> Thresholds:
    """Choose the thresholds jointly so the okay patches' FPR is at most ``fpr``.

    Parameters
    ----------
    okay_scores : ndarray of shape (N, 2) or (N, 2 + 2 * zones)
        Per okay patch: max ``|local mean|``, max local std over its aperture; with more columns
        the pair over the weld region's interior, then one pair per edge zone, outermost first
        (``core.residual.edge_zones``).
    fpr : float
        Target patch-level false positive rate, in (0, 1).
    edge_band_px : int or sequence of int
        The band's width (``core.residual.EDGE_BAND_PX``), or the zones' bounds such as
        ``(32, 48)``, recorded with the thresholds; four columns without it mean one 32 px band.
    slope_bounds : sequence of float
        Zones by the film's slope instead (``core.residual.slope_zones``, flattest first after the
        interior): the scores have the interior pair, then one pair per bound.
    slope_sigma_px : float
        The slope's Gaussian (``core.residual.slope_map``), recorded with slope zones.
    haz : bool
        The scores have a pair for the heat-affected zone after the interior's, before the edge
        zones' (``core.residual.weld_zones``; the edge zones measured from the bead's edge).
    rule : {"common", "tail"}
        How the columns share the allowed false positives (module docstring, "Calibration rule"):
        at a common quantile level, or where a column's tail is heaviest.

    Raises
    ------
    CalibrationError
        Fewer than ``min_okay_patches(fpr)`` patches, or scores that are not finite.
    """
    _check_fpr(fpr)
    s = np.asarray(okay_scores, dtype=np.float64)
    slopes = tuple(float(b) for b in slope_bounds)
    if slopes and band_bounds(edge_band_px):
        raise CalibrationError("give edge zones or slope zones, not both")
    if slopes and haz:
        raise CalibrationError("the heat-affected zone's own pair goes with edge zones, not slope zones")
    bounds = slopes or band_bounds(edge_band_px)
    if s.ndim == 2 and s.shape[1] == 4 and not bounds and not haz:
        bounds = (EDGE_BAND_PX,)
    columns = 2 + 2 * (len(bounds) + bool(haz))
    if s.ndim != 2 or s.shape[1] not in (2, columns):
        raise CalibrationError(f"okay scores must have shape (N, 2) or (N, {columns}) for "
                               f"edge zones {list(bounds)}{' and the HAZ' if haz else ''}, got {s.shape}")
    n = s.shape[0]
    need = min_okay_patches(fpr)
    if n < need:
        raise CalibrationError(
            f"{n} okay patches cannot support a false positive rate of {fpr:g}: "
            f"at least {need} are needed (3 / fpr); add okay patches or raise the target"
        )
    if not np.isfinite(s).all():
        raise CalibrationError("okay scores hold NaN or Inf values")
    t, fp = column_thresholds(s, fpr=fpr, rule=rule)
    edge = {}
    if s.shape[1] > 2 and slopes:
        edge = {"slope_zones": tuple((b, float(t[2 + 2 * k]), float(t[3 + 2 * k]))
                                     for k, b in enumerate(slopes)),
                "slope_sigma_px": float(slope_sigma_px)}
    elif s.shape[1] > 2:
        if haz:
            edge = {"haz_mean": float(t[2]), "haz_std": float(t[3])}
            t = np.delete(t, [2, 3])
        if bounds:
            edge.update({"edge_mean": float(t[2]), "edge_std": float(t[3]), "edge_band_px": bounds[0],
                         "inner_bands": tuple((b, float(t[2 + 2 * k]), float(t[3 + 2 * k]))
                                              for k, b in enumerate(bounds[1:], start=1))})
    return Thresholds(
        mean=float(t[0]), std=float(t[1]), fpr_target=float(fpr), n_okay=int(n),
        fpr_achieved=fp / n, fpr_ci=clopper_pearson(fp, n), rule=rule, **edge,
    )


def check_rule(rule: str) -> None:
    """Raise CalibrationError unless ``rule`` is one of :data:`RULES`."""
    if rule not in RULES:
        raise CalibrationError(f"the calibration rule is one of {', '.join(RULES)}, not {rule!r}")


def column_thresholds(okay_scores, *, fpr: float, rule: str = "common") -> tuple[np.ndarray, int]:
    """Each score column's threshold as :func:`calibrate` chooses them, and how many patches are over.

    At most ``floor(fpr * N)`` of the N patches are over some threshold. No minimum number of
    patches: :func:`calibrate` refuses too few to support the target; this is also for checks
    that calibrate on part of the patches (``core.film_check``).
    """
    check_rule(rule)
    s = np.asarray(okay_scores, dtype=np.float64)
    allowed = math.floor(fpr * s.shape[0] + 1e-9)
    return (_heaviest_tail if rule == "tail" else _common_quantile)(s, allowed)


def _common_quantile(s: np.ndarray, allowed: int) -> tuple[np.ndarray, int]:
    """The k-th smallest of every column, the smallest k with at most ``allowed`` patches over."""
    n = s.shape[0]
    ordered = np.sort(s, axis=0)

    def false_positives(k: int) -> int:
        return int(np.count_nonzero((s > ordered[k]).any(axis=1)))

    lo, hi = 0, n - 1  # false_positives(n - 1) == 0 <= allowed
    while lo < hi:
        mid = (lo + hi) // 2
        if false_positives(mid) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    return ordered[lo], false_positives(lo)


def _heaviest_tail(s: np.ndarray, allowed: int) -> tuple[np.ndarray, int]:
    """Start every column at its largest okay score (no patch over) and, one distinct value at a
    time, lower the threshold whose next step down is the largest fraction of it, as long as at
    most ``allowed`` patches are over some threshold. Steps past patches already over cost
    nothing and are all taken in the end."""
    n, m = s.shape
    order = np.argsort(s, axis=0, kind="stable")
    ordered = np.take_along_axis(s, order, axis=0)
    k = np.full(m, n - 1)  # threshold of column j: ordered[k[j], j]; patches above it are over
    over = np.zeros(n, np.int32)  # how many columns each patch is over
    fp = 0

    def step(j):
        """Where column j's threshold goes next, what it gains and what it costs, or None."""
        top = ordered[k[j], j]
        below = k[j] - 1
        while below >= 0 and ordered[below, j] == top:
            below -= 1
        if below < 0:
            return None
        newly = order[below + 1:k[j] + 1, j]  # the patches at the current threshold
        gain = (top - ordered[below, j]) / top if top > 0 else 0.0
        return gain, below, newly, int(np.count_nonzero(over[newly] == 0))

    while True:
        moves = [(j, mv) for j in range(m) if (mv := step(j)) is not None and fp + mv[3] <= allowed]
        if not moves:
            return ordered[k, np.arange(m)], fp
        j, (_, below, newly, cost) = max(moves, key=lambda jm: (jm[1][0], -jm[0]))
        k[j] = below
        over[newly] += 1
        fp += cost


def describe(thr: Thresholds) -> str:
    """The thresholds in one line for people: ``|mean| > a or std > b`` (and the edge band's)."""
    text = f"|mean| > {thr.mean:.5f} or std > {thr.std:.5f}"
    if thr.slope_zones:
        text += f" where the film's slope is below {thr.slope_bounds[0]:.4f} grey levels/px"
        for label, (m, sd) in zip(thr.zone_labels(), thr.zone_pairs()):
            text += f"; |mean| > {m:.5f} or std > {sd:.5f} at {label}"
        return text + f" (slope after a Gaussian of {thr.slope_sigma_px:g} px)"
    if thr.has_haz:
        text += (f" inside the bead; |mean| > {thr.haz_mean:.5f} or std > {thr.haz_std:.5f} in the "
                 "heat-affected zone around it")
        for (a, b), (m, sd) in zip(zone_spans(thr.band_bounds), thr.zone_pairs()[1:]):
            text += f"; |mean| > {m:.5f} or std > {sd:.5f} {a}-{b} px inside the bead's edge"
    elif thr.has_edge_band:
        text += (f" inside the weld region; |mean| > {thr.edge_mean:.5f} or std > {thr.edge_std:.5f} "
                 f"in its {thr.edge_band_px} px edge band")
        for (a, b), (m, sd) in zip(zone_spans(thr.band_bounds)[1:], thr.zone_pairs()[1:]):
            text += f"; |mean| > {m:.5f} or std > {sd:.5f} {a}-{b} px from its edge"
    return text


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for ``k`` events in ``n`` trials."""
    from scipy.stats import beta

    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def expected_false_flags_per_metre(
    fpr: float, pixel_size_um: float, *, weld_width_mm: float | None = None,
    aperture_px: int = APERTURE,
) -> float:
    """Expected falsely flagged patches per metre of accepted weld at this operating point.

    Derivation: the patch-level FPR is the chance that one okay 156 x 156 px aperture holds at
    least one flagged kernel. A metre of weld is covered by ``1000 / a`` non-overlapping apertures
    along the weld, ``a = aperture_px * pixel_size_um / 1000`` mm, times ``ceil(w / a)`` rows of
    them across a weld of width ``w`` mm (one row when the width is not given). The expected
    number of apertures with a false flag is ``fpr`` times that count; since false flags are
    small and rare, this is also about the number of false regions a reviewer sees per metre.

    Parameters
    ----------
    fpr : float
        Patch-level false positive rate.
    pixel_size_um : float
        Pixel size in micrometres.
    weld_width_mm : float, optional
        Width of the inspected band (weld and heat-affected zone).
    """
    _check_fpr(fpr)
    if pixel_size_um is None or not pixel_size_um > 0:
        raise ValueError("the pixel size must be known (micrometres > 0) to express flags per metre")
    aperture_mm = aperture_px * pixel_size_um / 1000.0
    rows = 1 if weld_width_mm is None else max(1, math.ceil(weld_width_mm / aperture_mm))
    return fpr * (1000.0 / aperture_mm) * rows


def encode_scores(scores: np.ndarray) -> dict:
    """Compact JSON form of (N, 2) okay scores: float32 little-endian, base64."""
    s = np.ascontiguousarray(scores, dtype="<f4")
    return {"dtype": "<f4", "shape": list(s.shape), "base64": base64.b64encode(s.tobytes()).decode()}


def decode_scores(d: dict) -> np.ndarray:
    raw = base64.b64decode(d["base64"])
    return np.frombuffer(raw, dtype=d.get("dtype", "<f4")).reshape(d["shape"]).astype(np.float64)


def thresholds_from_metadata(metadata: dict, *, fpr: float | None = None) -> Thresholds | None:
    """Thresholds stored in a model's metadata; re-derived from the stored okay scores for ``fpr``
    (without the patches a supervisor excluded, ``core.calibration_review``).

    Returns None when the model was never calibrated. Raises CalibrationError when ``fpr`` differs
    from the stored target and the stored scores are missing or too few for it.
    """
    stored = metadata.get("thresholds")
    if stored is None and "okay_scores" not in metadata:
        return None
    if stored is not None:
        thr = Thresholds.from_dict(stored)
        if fpr is None or math.isclose(fpr, thr.fpr_target, rel_tol=1e-9):
            return thr
    if "okay_scores" not in metadata:
        raise CalibrationError(
            f"the model stores no okay scores, so thresholds for FPR {fpr:g} cannot be derived; "
            "calibrate it again"
        )
    from core.calibration_review import kept_scores

    zoning = Thresholds.from_dict(stored).zoning() if stored is not None else {}
    return calibrate(kept_scores(metadata), fpr=fpr or DEFAULT_FPR, **zoning)


def calibrate_model(path, okay_patches: np.ndarray, *, fpr: float = DEFAULT_FPR, regions=None,
                    edge_band_px=EDGE_BAND_PX, slopes=None, slope_quantiles=SLOPE_QUANTILES,
                    slope_sigma_px: float = SLOPE_SIGMA_PX, origins=None, progress=None,
                    cancel=None, rule: str = "common") -> Thresholds:
    """Score held-out okay patches with the model at ``path`` and store the thresholds.

    Parameters
    ----------
    path : str or Path
        A model saved by ``core.modelfile.save_model``.
    okay_patches : ndarray of shape (N, 192, 192)
        Held-out okay patches, float32 [0, 1] (never used in training), cut from the radiographs
        as the model sees them (``core.normalise.model_input``).
    regions : ndarray of bool or uint8, shape (N, 192, 192), optional
        The weld region over each patch; only kernels centred in it count, as in a scan with a
        weld region (``core.scanning.patch_scores``), and the region's edge band
        (``edge_band_px`` wide) gets its own pair of thresholds. Label maps with a heat-affected
        zone (``core.roi.WeldROI.labels``) give that zone its own pair too, and the edge zones
        are then measured from the bead's edge (``core.residual.weld_zones``); without edge zones
        the region is taken whole.
    edge_band_px : int or sequence of int
        0 calibrates one pair for the whole region; ``(32, 48)`` gives the zones 0-32 px and
        32-48 px from the region's edge a pair each (``core.residual.edge_zones``).
    slopes : ndarray of float, shape (N, 192, 192), optional
        With ``regions``: the raw film's slope over each patch (``core.residual.slope_map`` with
        ``slope_sigma_px``, cut as the patch was). Zones by slope then replace the edge zones:
        bounds at ``slope_quantiles`` of the okay kernels' slopes (``core.residual.slope_bounds``).
    origins : dict, optional
        Where each patch came from (``core.calibration_review.encode_origins``), stored so that
        a supervisor can review the patches that set the thresholds.
    rule : {"common", "tail"}
        How the zones share the allowed false positives (``calibrate``).

    Returns
    -------
    Thresholds
        Also written to the model's sidecar as ``thresholds`` with the scores as ``okay_scores``
        (and ``okay_origins``). A new calibration starts a new review: exclusions made on the
        previous okay patches (``calibration_review``) are dropped with them.
    """
    from core.modelfile import load_model, update_metadata
    from core.scanning import patch_scores

    need = min_okay_patches(fpr)
    if len(okay_patches) < need:  # refuse before spending time on the model
        raise CalibrationError(
            f"{len(okay_patches)} okay patches cannot support a false positive rate of {fpr:g}: "
            f"at least {need} are needed (3 / fpr); add okay patches or raise the target"
        )
    from core.residual import has_haz

    bundle = load_model(path)
    scoring = {"edge_band_px": band_bounds(edge_band_px) if regions is not None else ()}
    if scoring["edge_band_px"] and slopes is None and has_haz(regions):
        scoring["haz"] = True
    if regions is not None and slopes is not None:
        from core.residual import slope_bounds
        from core.sampler import aperture

        try:  # kernels are centred in the aperture only
            bounds = slope_bounds(aperture(np.asarray(slopes)), aperture(np.asarray(regions, bool)),
                                  slope_quantiles)
        except ValueError as exc:
            raise CalibrationError(f"slope zones: {exc}") from None
        scoring = {"slope_bounds": bounds}
    scores = patch_scores(okay_patches, bundle.model, regions=regions, slopes=slopes, **scoring,
                          progress=progress, cancel=cancel)
    check_rule(rule)  # refuse before spending time on the model
    thr = calibrate(scores, fpr=fpr, slope_sigma_px=slope_sigma_px, rule=rule, **scoring)
    update_metadata(path, thresholds=thr.to_dict(), okay_scores=encode_scores(scores),
                    okay_origins=origins, calibration_review=None)
    return thr


def _check_fpr(fpr) -> None:
    if not (isinstance(fpr, (int, float)) and 0.0 < fpr < 1.0):
        raise CalibrationError(f"the false positive rate must lie in (0, 1), got {fpr!r}")
