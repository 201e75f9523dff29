"""Whether a model's thresholds hold on a film they were not calibrated on: leave one film out.

Calibration pools the okay patches of several films, and the thresholds meet the target on those
patches by construction. The next film is another matter: on GDXray a film left out of the
calibration was flagged up to ten times the target (docs/benchmark/notes.md, items 11 and 16).
For each film of a calibration, the thresholds the other films' patches give (same rule, zones
and target; ``core.calibration.column_thresholds``, without the minimum count, since leaving a
film out leaves fewer patches) and the fraction of the film's own patches they flag. A film
flagged far above the target says the thresholds are fitted to the films they came from: more
films, or films more like the ones scanned, are needed before they can be trusted elsewhere.

Why a film fails tells what to do about it. Its *typical* okay residual (the median of its
patches' interior std, against the median of the other films') says which of two things it is:
a film noisier throughout (on GDXray the round-robin films W0003_0015 and W0003_0023, four to
five times the W0001 films: other welds and exposures) needs calibrating with films like it, not
pooled with the others; a film typical in the median but with a heavier tail (W0001_0009: its
flank, scratches, marks the masks miss) needs its strongest patches looked at in the calibration
review (docs/benchmark/notes.md, item 18).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PureWindowsPath

import numpy as np

from core.calibration import clopper_pearson, column_thresholds

NOISIER = 1.5  # a film whose typical okay residual is this many times the others' is noisier throughout


@dataclass(frozen=True)
class FilmCheck:
    """One film left out: its okay patches flagged by thresholds from the other films'."""

    source: str
    n: int
    flagged: int
    n_others: int
    typical: float = float("nan")  # the film's :func:`typical` residual over the other films' median one

    @property
    def name(self) -> str:
        """The film's file name (``synthetic:SEED`` for a generated weld)."""
        return PureWindowsPath(self.source).name  # either separator

    @property
    def fpr(self) -> float:
        return self.flagged / self.n

    @property
    def fpr_ci(self) -> tuple[float, float]:
        return clopper_pearson(self.flagged, self.n)

    @property
    def noisier(self) -> bool:
        """Whether the film's okay weld is noisier throughout than the others' (not only in its tail)."""
        return bool(self.typical >= NOISIER)


def typical(scores) -> float:
    """The typical okay residual of patches: the median of their interior std (column 1) where
    they have interior kernels (NaN where none has)."""
    std = np.asarray(scores, dtype=np.float64)[:, 1]
    std = std[std > 0]
    return float(np.median(std)) if std.size else float("nan")


def leave_one_film_out(scores, films, *, fpr: float, rule: str = "common") -> list[FilmCheck]:
    """Leave each film out in turn (``films``: the film of every patch, in score order).

    Empty with fewer than two films: there is nothing to leave out.
    """
    scores = np.asarray(scores, dtype=np.float64)
    films = np.asarray(films)
    if len(films) != len(scores):
        raise ValueError(f"{len(scores)} patches' scores but {len(films)} films named")
    names = list(dict.fromkeys(films.tolist()))
    if len(names) < 2:
        return []
    out = []
    level = {name: typical(scores[films == name]) for name in names}
    for name in names:
        own = films == name
        t, _ = column_thresholds(scores[~own], fpr=fpr, rule=rule)
        flagged = int(np.count_nonzero((scores[own] > t).any(axis=1)))
        others = [v for k, v in level.items() if k != name and not math.isnan(v)]
        ratio = level[name] / float(np.median(others)) if others else float("nan")
        out.append(FilmCheck(str(name), int(own.sum()), flagged, int((~own).sum()), ratio))
    return out


def check_model(metadata: dict) -> list[FilmCheck] | None:
    """:func:`leave_one_film_out` on a calibrated model's stored patches, excluded ones left out.

    None when the calibration did not record where its patches came from, has no thresholds, or
    its record cannot be read (a damaged sidecar is the calibration review's to report).
    """
    from core.calibration import Thresholds, decode_scores
    from core.calibration_review import kept, origins

    try:
        where = origins(metadata)
        if not where or not metadata.get("thresholds") or not metadata.get("okay_scores"):
            return None
        thr = Thresholds.from_dict(metadata["thresholds"])
        scores = decode_scores(metadata["okay_scores"])
    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
        return None
    if len(where) != len(scores):
        return None
    keep = kept(metadata, len(scores))
    films = np.array([o.source for o in where])
    return leave_one_film_out(scores[keep], films[keep], fpr=thr.fpr_target, rule=thr.rule)


def summary(checks: list[FilmCheck] | None) -> str:
    """The checks in one clause, for a status line: ``each calibration film left out: A 0.00 %, B 8.75 %``."""
    if checks is None:
        return "calibration films left out: not known (where the patches came from was not recorded)"
    if not checks:
        return "no calibration film to leave out (one film)"
    return "each calibration film left out: " + ", ".join(
        f"{c.name} {100 * c.fpr:.2f} %" + (" (noisier throughout)" if c.noisier else "") for c in checks)


def describe_checks(checks: list[FilmCheck] | None, fpr: float) -> str:
    """What ``weldreview calibrate`` prints about the films left out, for people."""
    if checks is None:
        return "films left out: not known (this calibration did not record where its patches came from)"
    if not checks:
        return ("films left out: one film only, nothing to leave out; calibrate on several films to "
                "see whether the thresholds hold on a film they did not come from")
    lines = ["Each film left out, flagged by the thresholds of the others' patches "
             f"(target {100 * fpr:g} %):"]
    for c in checks:
        lo, hi = c.fpr_ci
        lines.append(f"  {c.name}: {100 * c.fpr:.2f} % ({c.flagged} of {c.n}; 95% CI "
                     f"{100 * lo:.2f}-{100 * hi:.2f} %; thresholds from {c.n_others} patches; "
                     f"typical okay residual {_times(c.typical)} the others')")
    above = [c for c in checks if c.fpr_ci[0] > fpr]
    if above:
        lines.append(f"  Flagged above the target even at the low end of the interval: {_names(above)}. "
                     "The thresholds may not hold on films unlike those they came from; calibrate on "
                     "more films, like the ones you scan.")
    noisier = [c for c in above if c.noisier]
    if noisier:
        lines.append(f"  Noisier throughout ({_span(noisier)} the others' typical residual): "
                     f"{_names(noisier)}. Another exposure, film or scanner? Calibrate such films with "
                     "films like them, not pooled with these.")
    tail = [c for c in above if not c.noisier and not math.isnan(c.typical)]
    if tail:
        lines.append(f"  Not noisier throughout ({_span(tail)} the others' typical residual), but a "
                     f"few patches stand out: {_names(tail)}. A steeper flank, a scratch, a mark the "
                     "masks miss? Look at the strongest patches in the calibration review.")
    return "\n".join(lines)


def _names(checks) -> str:
    return ", ".join(c.name for c in checks)


def _span(checks) -> str:
    lo, hi = min(c.typical for c in checks), max(c.typical for c in checks)
    return _times(lo) if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f} to {hi:.1f} times"


def _times(ratio: float) -> str:
    return "not known" if math.isnan(ratio) else f"{ratio:.1f} times"
