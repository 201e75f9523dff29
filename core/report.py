"""The benchmark report: Markdown tables in the layout of the paper's Tables 2 and 3, PNG figures
(Figures 9, 10 and 11 of the paper) and a JSON of every number.

matplotlib is not a dependency of weldreview, so the figures are drawn with Pillow (which
scikit-image already depends on): plain line plots, histograms and scatter plots with axes, ticks
and legends, readable but not pretty.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.contrast import GRADES

# Colours: the paper's flag colours (Figure 5e) and one colour per seed / test set.
BLUE, GREEN, ORANGE, RED = (31, 119, 180), (44, 160, 44), (255, 127, 14), (214, 39, 40)
GREY, BLACK, WHITE = (127, 127, 127), (0, 0, 0), (255, 255, 255)
SET_COLOURS = {"high": BLUE, "mid": ORANGE, "low": GREEN, "okay": GREY}


# --- a minimal plotting canvas ------------------------------------------------------------------

class Plot:
    """One panel: data coordinates mapped onto a pixel box of a Pillow image."""

    def __init__(self, image, box, *, xlim, ylim, xlog=False, title="", xlabel="", ylabel=""):
        from PIL import ImageDraw, ImageFont

        self.draw = ImageDraw.Draw(image)
        self.font = ImageFont.load_default()
        self.box = box  # (left, top, right, bottom) of the axes in pixels
        self.xlog = xlog
        self.xlim = tuple(math.log10(v) for v in xlim) if xlog else tuple(xlim)
        self.ylim = tuple(ylim)
        left, top, right, bottom = box
        self.draw.rectangle(box, outline=BLACK)
        self.draw.text((left, top - 16), title, fill=BLACK, font=self.font)
        self.draw.text(((left + right) // 2 - 3 * len(xlabel), bottom + 20), xlabel, fill=BLACK,
                       font=self.font)
        self.draw.text((left - 45, top - 30), ylabel, fill=BLACK, font=self.font)
        self._ticks()

    def _ticks(self):
        left, top, right, bottom = self.box
        if self.xlog:
            xt = [10.0 ** e for e in range(math.ceil(self.xlim[0]), math.floor(self.xlim[1]) + 1)]
        else:
            xt = np.linspace(*self.xlim, 5)
        for v in xt:
            px = self.px(v, self.ylim[0])[0]
            self.draw.line([(px, bottom), (px, bottom + 4)], fill=BLACK)
            self.draw.text((px - 12, bottom + 6), _fmt(v), fill=BLACK, font=self.font)
        for v in np.linspace(*self.ylim, 5):
            py = self.px(self.xlim_data()[0], v)[1]
            self.draw.line([(left - 4, py), (left, py)], fill=BLACK)
            self.draw.text((left - 42, py - 6), _fmt(v), fill=BLACK, font=self.font)

    def xlim_data(self):
        return tuple(10.0 ** v for v in self.xlim) if self.xlog else self.xlim

    def px(self, x, y):
        left, top, right, bottom = self.box
        xv = math.log10(max(x, 10.0 ** self.xlim[0])) if self.xlog else x
        fx = (xv - self.xlim[0]) / (self.xlim[1] - self.xlim[0] or 1.0)
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0] or 1.0)
        fx, fy = min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    def line(self, xs, ys, colour, *, width=2):
        pts = [self.px(float(x), float(y)) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            self.draw.line(pts, fill=colour, width=width)

    def vline(self, x, colour, *, dashed=True):
        x0, y0 = self.px(x, self.ylim[0])
        _, y1 = self.px(x, self.ylim[1])
        step = 6 if dashed else int(y0 - y1) + 1
        for y in np.arange(y1, y0, 2 * step if dashed else step):
            self.draw.line([(x0, y), (x0, min(y + step, y0))], fill=colour, width=1)

    def hline(self, y, colour):
        x0, py = self.px(self.xlim_data()[0], y)
        x1, _ = self.px(self.xlim_data()[1], y)
        for x in np.arange(x0, x1, 12):
            self.draw.line([(x, py), (min(x + 6, x1), py)], fill=colour, width=1)

    def points(self, xs, ys, colour, *, r=1.5):
        for x, y in zip(xs, ys):
            px, py = self.px(float(x), float(y))
            self.draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)

    def histogram(self, values, bins, colour):
        counts, edges = np.histogram(values, bins=bins)
        frac = counts / max(len(values), 1)
        for c, a, b in zip(frac, edges[:-1], edges[1:]):
            if c > 0:
                x0, y0 = self.px(a, 0.0)
                x1, y1 = self.px(b, c)
                self.draw.rectangle([x0, y1, max(x1 - 1, x0), y0], outline=colour)

    def legend(self, entries):
        left, top, right, bottom = self.box
        for i, (label, colour) in enumerate(entries):
            y = top + 6 + 14 * i
            self.draw.rectangle([right - 150, y + 2, right - 140, y + 10], fill=colour)
            self.draw.text((right - 136, y), label, fill=BLACK, font=self.font)


def _fmt(v):
    v = float(v)
    if v != 0 and (abs(v) < 0.01 or abs(v) >= 1000):
        return f"{v:.0e}"
    return f"{v:.3g}"


def _canvas(width, height):
    from PIL import Image

    return Image.new("RGB", (width, height), WHITE)


# --- figures --------------------------------------------------------------------------------------

def _thresholds(report, key):
    for r in report["runs"]:
        if f"{r['detector']}_{r['training_set'].replace('+', '-')}_seed{r['seed']}" == key:
            return r["thresholds"]
    return None


def figure_roc(path, report, figure_scores) -> Path | None:
    """Figure 10: ROC of the OOD detector trained with SNI (every seed), high / mid / low contrast.

    The detector's two tests are combined into ``max(mean / T_mean, std / T_std)`` with each
    model's calibrated thresholds, so the curves pass through the calibrated operating point.
    """
    from core.calibration import Thresholds
    from core.metrics import roc_curve

    keys = sorted(k for k in figure_scores if k.startswith("ood_SNI_seed"))
    if not keys:
        return None
    img = _canvas(1100, 480)
    fpr_target = report["budget"]["fpr"]
    panels = [Plot(img, (70, 50, 520, 420), xlim=(0, 1), ylim=(0, 1), title="(a) ROC, OOD detector "
                   "(SNI), every seed", xlabel="false positive rate", ylabel="true positive rate"),
              Plot(img, (620, 50, 1070, 420), xlim=(1e-4, 1), ylim=(0, 1), xlog=True,
                   title="(b) the same, log FPR", xlabel="false positive rate (log)")]
    for key in keys:
        thr = Thresholds.from_dict(_thresholds(report, key))
        scores = figure_scores[key]
        okay = thr.combined(scores["test_okay"])
        for grade in GRADES:
            if grade in scores and len(scores[grade]):
                f, t, _ = roc_curve(okay, thr.combined(scores[grade]))
                for p in panels:
                    p.line(f, t, SET_COLOURS[grade])
    for p in panels:
        p.vline(fpr_target, BLACK)
        p.legend([(f"{g} contrast", SET_COLOURS[g]) for g in GRADES] + [(f"FPR {fpr_target:g}", BLACK)])
    img.save(path)
    return path


def figure_histograms(path, report, figure_scores) -> Path | None:
    """Figure 9: max |local mean| and max local std per patch, okay vs high-contrast test patches.

    Falls back to the mid (then low) grade when the run has no high-contrast patch.
    """
    key = "ood_SNI_seed0"
    if key not in figure_scores:
        return None
    s = figure_scores[key]
    grade = next((g for g in GRADES if g in s and len(s[g])), None)
    if grade is None:
        return None
    thr = _thresholds(report, key)
    okay, high = s["test_okay"], s[grade]
    img = _canvas(1500, 480)
    titles = ("(a) max |local mean| per patch", "(b) max local std per patch")
    for col in (0, 1):
        hi = float(np.percentile(np.concatenate([okay[:, col], high[:, col]]), 99.5)) * 1.05
        hi = max(hi, thr["mean" if col == 0 else "std"] * 1.2)
        bins = np.linspace(0, hi, 41)
        counts = [np.histogram(v[:, col], bins)[0].max() / len(v) for v in (okay, high)]
        p = Plot(img, (70 + 500 * col, 50, 450 + 500 * col, 420), xlim=(0, hi),
                 ylim=(0, max(counts) * 1.1), title=titles[col], xlabel="residual (grey level)",
                 ylabel="fraction")
        p.histogram(okay[:, col], bins, GREY)
        p.histogram(high[:, col], bins, BLUE)
        p.vline(thr["mean" if col == 0 else "std"], RED)
        p.legend([("okay test", GREY), (f"{grade} contrast", BLUE), ("threshold", RED)])
    xm = max(np.percentile(okay[:, 0], 99.9), np.percentile(high[:, 0], 99.5), thr["mean"]) * 1.1
    ym = max(np.percentile(okay[:, 1], 99.9), np.percentile(high[:, 1], 99.5), thr["std"]) * 1.1
    p = Plot(img, (1070, 50, 1450, 420), xlim=(0, xm), ylim=(0, ym),
             title="(c) max std vs max |mean|", xlabel="max |local mean|", ylabel="max local std")
    p.points(okay[:, 0], okay[:, 1], GREY)
    p.points(high[:, 0], high[:, 1], BLUE)
    p.vline(thr["mean"], RED)
    p.hline(thr["std"], RED)
    img.save(path)
    return path


def figure_sliding_window(path, model_path, thresholds: dict, item, *, roi=None, max_width=1600) -> Path:
    """Figure 11: a whole test radiograph, its residual, and the kernels flagged at the thresholds.

    Flag colours as in the paper (Figure 5e): blue both tests, green std only, orange mean only;
    the ground-truth defect outline is red. With ``roi`` (bool mask) only kernels in it are flagged.
    """
    from PIL import Image
    from scipy import ndimage

    from core.calibration import Thresholds
    from core.modelfile import load_model
    from core.scanning import scan_image

    bundle = load_model(model_path)
    image = item.image
    result = scan_image(image, bundle, thresholds=Thresholds.from_dict(thresholds), roi=roi)
    step = max(1, math.ceil(image.shape[1] / max_width))
    grey = np.clip(image, 0, 1)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    base = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    resid = np.nan_to_num(result.residual, nan=0.0)
    scale = max(float(np.percentile(np.abs(resid), 99.5)), 1e-6)
    resid_img = np.clip(0.5 + resid / (2 * scale), 0, 1)
    overlay = np.repeat(base[..., None], 3, axis=2)
    # widen flags and outlines by the shrink factor so that none vanishes when subsampled
    flags = ndimage.maximum_filter(result.flags, size=step) if step > 1 else result.flags
    for value, colour in ((3, BLUE), (2, GREEN), (1, ORANGE)):
        overlay[flags == value] = np.array(colour) / 255.0
    if item.mask is not None:
        edge = item.mask & ~ndimage.binary_erosion(item.mask, iterations=max(2, step))
        overlay[edge] = np.array(RED) / 255.0
    panels = [np.repeat(base[..., None], 3, 2), np.repeat(resid_img[..., None], 3, 2), overlay]
    gap = np.ones((8, image.shape[1], 3))
    stacked = np.concatenate([panels[0], gap, panels[1], gap, panels[2]])[::step, ::step]
    Image.fromarray((stacked * 255).astype(np.uint8)).save(path)
    return path


# --- Markdown ---------------------------------------------------------------------------------------

def _cell(summary, detector, training_set, name):
    try:
        s = summary[detector][training_set][name]
    except KeyError:
        return "-"
    return f"{100 * s['mean']:.0f} ({100 * s['spread']:.0f})"


def _table(report, detector, sets, paper, title_sets):
    from core.benchmark import TEST_SET_TITLES, TEST_SETS

    summary = report["summary"]
    head = "| Test dataset | " + " | ".join(sets) + " |"
    lines = [head, "|---|" + "---|" * len(sets)]
    for name in TEST_SETS:
        ours = [_cell(summary, detector, s, name) for s in sets]
        theirs = [("%d (%d)" % tuple(paper[s][name])) if s in paper else "-" for s in sets]
        lines.append(f"| {TEST_SET_TITLES[name]} | "
                     + " | ".join(f"{o} <br>paper {p}" for o, p in zip(ours, theirs)) + " |")
    fpr = []
    for s in sets:
        vals = [r["fpr_test"] for r in report["runs"] if r["detector"] == detector
                and r["training_set"] == s]
        fpr.append(f"{100 * np.mean(vals):.2f}" if vals else "-")
    lines.append("| *FPR reached on okay test patches [%], mean* | " + " | ".join(fpr) + " |")
    return f"Training data: {title_sets}. TPR [%] at {100 * report['budget']['fpr']:g} % FPR, " \
           "mean and (spread) over the seeds; below each, the paper's value.\n\n" + "\n".join(lines)


def markdown(report, figures: dict, notes: str | None = None) -> str:
    """The report's Markdown; ``notes`` (the people's reading of the numbers) closes it."""
    b = report["budget"]
    m = report["machine"]
    counts = report["patch_counts"]
    split = report["split"]
    out = [
        "# Benchmark: OOD detector and supervised CNN (Lindgren and Zach 2022, Tables 2 and 3)", "",
        f"- Command: `{report.get('command') or 'core.benchmark.run_benchmark(...)'}`",
        f"- Budget: **{b['name']}** ({b['note']}); OOD detector {b['ood_steps']} steps of "
        f"{b['ood_batch']} okay + {b['ood_batch']} perturbed patches, CNN {b['cnn_steps']} steps of "
        f"{b['cnn_batch']} patches; {report['seeds']} seed(s) per training set; operating point "
        f"{100 * b['fpr']:g} % FPR.",
        f"- Region: {report.get('region', 'whole radiographs')}.",
        *_evaluation_line(report),
        f"- Machine: {m.get('platform')}, {m.get('cpus_usable', m.get('cpu_count'))} usable CPU "
        f"cores, GPUs: {', '.join(m.get('gpus') or []) or 'none'}, TensorFlow {m.get('tensorflow')}.",
        f"- Started {report['started']}, wall time of this invocation {report['wall_seconds']:.0f} s "
        f"(models reused from an earlier, interrupted invocation are not counted); summed over the "
        f"models: training {sum(r['train_seconds'] for r in report['runs']):.0f} s, evaluation "
        f"{sum(r['eval_seconds'] for r in report['runs']):.0f} s.",
        "", "## Split (image level, fixed)", "",
        f"Rule: {split['rule']}. Radiographs of one group (a GDXray W0001 image and its W0003 "
        "twin) are always on the same side.", "",
        "| side | radiographs |", "|---|---|",
    ]
    for side in ("train", "calibration", "test"):
        names = ", ".join(f"{it['name']}" for it in split[side]) or "(none)"
        out.append(f"| {side} | {names} |")
    out += [
        "", "## Patch sets", "",
        "Patches of 192 x 192 px by random translation, rotation (0-360 degrees), 90-degree turns "
        "and flips (core.sampler). Test defect patches (a defect pixel in the central 156 x 156 "
        "aperture) are graded by the contrast figure of core/contrast.py: per defect region "
        "|mean inside - mean of a ring 3-11 px around it| divided by the robust noise std of the "
        "high-passed okay surroundings, the patch taking its most visible region; "
        f"high >= {report['contrast']['thresholds']['high']:g}, "
        f"mid >= {report['contrast']['thresholds']['mid']:g}, else low. Synthetic test sets: the "
        "five anomaly types of Section 3.3 (core.perturbations.SyntheticAnomalies) inserted into "
        "fresh okay test patches. Thresholds are calibrated on okay patches of the calibration "
        "radiographs (training side, never test images; see the split's rule).", "",
        "| set | patches |", "|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in counts.items()]
    out += ["", "## Supervised CNN (layout of the paper's Table 2)", "",
            _table(report, "cnn", [s for s in ("D", "D+SC", "D+SC+SPC", "D+SNI")
                                   if s in report["summary"].get("cnn", {})],
                   report["paper"]["table2"], "weld okay + the positives named in each column"),
            "", "## OOD detector (layout of the paper's Table 3)", "",
            _table(report, "ood", [s for s in ("None", "D", "SNI")
                                   if s in report["summary"].get("ood", {})],
                   report["paper"]["table3"], "weld okay + the perturbation set of each column"),
            "", "## Figures", ""]
    captions = {
        "fig9": "Figure 9 layout: residual analysis of the OOD detector (SNI, seed 0), okay test "
                "patches vs high-contrast defect patches (the highest grade present); thresholds "
                "in red.",
        "fig10": "Figure 10 layout: ROC curves of the OOD detector (SNI, every seed) against the okay "
                 "test patches (two tests combined as max(mean/T_mean, std/T_std)).",
        "fig11": "Figure 11 layout: sliding-window scan of a whole test radiograph with the SNI "
                 "model (seed 0): input, residual, flagged kernels (blue both tests, green std, "
                 "orange mean) with the ground-truth outline in red. It shows the radiograph's "
                 "pixels, so under a research-only licence (GDXray) it is written by the command "
                 "but must not be published or committed.",
    }
    for key, caption in captions.items():
        if figures.get(key):
            out += [f"![{key}](figures/{Path(figures[key]).name})", "", caption, ""]
        else:
            out += [f"({key}: not drawn: {figures.get(key + '_why', 'its model did not run')})", ""]
    if report.get("learning_curves"):
        out += learning_curve_markdown(report["learning_curves"])
    out += ["## Every model", "",
            "| model | set | seed | train s | eval s | FPR calib % | FPR test % | thresholds |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        t = r["thresholds"]
        thr = (f"mean {t['mean']:.4g}, std {t['std']:.4g}" if "mean" in t
               else f"sigmoid {t['sigmoid']:.6g} (logit {t['logit']:.3g})")
        out.append(f"| {r['detector']} | {r['training_set']} | {r['seed']} | {r['train_seconds']:.0f} "
                   f"| {r['eval_seconds']:.0f} | {100 * r['fpr_calibration']:.2f} | "
                   f"{100 * r['fpr_test']:.2f} | {thr} |")
    out += ["", "## Where this differs from the paper", "",
            f"- Budget {b['name']}: {b['note']}.",
            f"- Data: {sum(len(split[s]) for s in ('train', 'calibration', 'test'))} radiographs "
            "with pixel masks, against the paper's 34 welds (about 10 with pixel masks, the rest "
            "segmented by hand); our test set is correspondingly smaller "
            f"({counts['test_okay']} okay test patches).",
            "- Contrast grades are measured (core/contrast.py), not judged by eye.",
            "- Thresholds come from held-out training-side radiographs; the paper does not say "
            "which okay patches set its 0.1 % FPR. The FPR actually reached on the okay test "
            "patches is in the tables.",
            "- The CNN's synthetic positives (SC, SPC, SNI) are drawn afresh at every step instead of "
            "from fixed sets of 5000 (SC, SPC) and 112,000 (SNI) samples.",
            "", "All numbers: results.json; raw per-patch scores: runs/*.npz.", ""]
    if notes:
        out += ["## Reading these numbers", "", notes.strip(), ""]
    return "\n".join(out)


def read_notes(out) -> str | None:
    """``OUT/notes.md``: what the people who ran the benchmark make of it (kept across re-runs)."""
    path = Path(out) / "notes.md"
    return path.read_text() if path.is_file() else None


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def _by_zone_table(points) -> list[str]:
    """TPR % of the synthetic sets by the zone of the weld region their anomalies are centred in."""
    from core.benchmark import TEST_SETS

    points = [p for p in points if p.get("tpr_by_zone")]
    if not points:
        return []
    kinds = [k for k in TEST_SETS if k in points[-1]["tpr_by_zone"]]
    slope = any(z.startswith("slope") for p in points for k in kinds for z in p["tpr_by_zone"][k])
    where = ("by the raw film's slope at their centre (interior: the flattest part of the weld "
             "region)" if slope else "by where their centre lies in the weld region")
    out = ["", f"Synthetic anomalies {where}: TPR % (number of anomalies); "
           + ("each slope zone has thresholds of its own." if slope else
              "the edge zones have thresholds of their own."), "",
           "| training | zone | " + " | ".join(kinds) + " |", "|" + "---|" * (len(kinds) + 2)]
    for p in points:
        zones = list(dict.fromkeys(z for k in kinds for z in p["tpr_by_zone"][k]))
        for z in zones:
            cells = [p["tpr_by_zone"][k].get(z) for k in kinds]
            out.append(f"| {p['minutes']:g} min | {z} | " + " | ".join(
                f"{100 * c['tpr']:.0f} ({c['n']})" if c else "" for c in cells) + " |")
    return out


def _evaluation_line(entry: dict) -> list[str]:
    """The protocol version and how models were evaluated, when recorded (version 3 on)."""
    evaluation = entry.get("evaluation") or {}
    zones = evaluation.get("edge_zones_px")
    placed = evaluation.get("synthetic_anomalies")
    if evaluation.get("zones") == "slope":
        q = [f"{100 * v:g} %" for v in evaluation.get("slope_quantiles", ())]
        return [f"- Protocol version {entry.get('protocol')}, with zones by the raw film's slope instead "
                "of the edge zones: OOD thresholds for the weld region's flattest part and, apart, for "
                f"each steeper zone (slope = gradient magnitude of the raw radiograph after a Gaussian "
                f"of {evaluation.get('slope_sigma_px', 0):g} px, cut as each patch was, a synthetic "
                f"anomaly's own added; bounds at {' and '.join(q)} of the calibration okay kernels' "
                "slopes)" + (f"; synthetic anomalies {placed}" if placed else "") + "."]
    if not zones:
        return []
    from core.residual import zone_spans

    return [f"- Protocol version {entry.get('protocol')}: OOD thresholds for the weld region's "
            "interior and, apart, for each edge zone ("
            + ", ".join(f"{a}-{b} px" for a, b in zone_spans(zones)) + " from its edge)"
            + (f"; synthetic anomalies {placed}" if placed else "") + "."]


def _curve_row(label, point, sets, extra=()):
    cells = [label, *extra, f"{100 * point['fpr_calibration']:.2f}", f"{100 * point['fpr_test']:.2f}"]
    cells += [_pct(point["tpr"].get(n)) for n in sets]
    return "| " + " | ".join(cells) + " |"


def learning_curve_markdown(curves: list[dict]) -> list[str]:
    """Report sections for ``core.learning_curve`` results: each curve, the weld region's effect."""
    from core.benchmark import PAPER_TABLE3, TEST_SETS

    out = ["## Learning curves: TPR at 0.1 % FPR against training time", "",
           "Same split, weld-region patch sets and calibration radiographs as the tables above; one "
           "model per recipe, evaluated after each training segment (minutes of training on the "
           "trainer's clock, evaluation not counted).", ""]
    for curve in curves:
        points = curve["points"]
        sets = [n for n in TEST_SETS if n in points[-1]["tpr"]]
        m = curve["machine"]
        out += [f"### {curve.get('label', 'curve')}", "",
                f"- Command: `{curve.get('command') or 'core.learning_curve.run_learning_curve(...)'}`",
                f"- Recipe: {curve['recipe_text']}.",
                f"- Machine: {m.get('platform')}, {m.get('cpus_usable', m.get('cpu_count'))} usable "
                f"CPU cores, GPUs: {', '.join(m.get('gpus') or []) or 'none'}; started "
                f"{curve['started']}, wall time {curve['wall_seconds']:.0f} s ("
                + ("re-evaluation only" if curve.get("reevaluated_by") else "training and evaluation") + ")."]
        out += _evaluation_line(curve)
        if curve.get("models"):
            out.append(f"- Models: those of `{curve['models']}/` (the curve "
                       f"{curve['models'].split('/', 1)[-1]}), evaluated again.")
        if curve.get("reevaluated_by"):
            out.append(f"- Models re-evaluated with the current protocol (no training): "
                       f"`{curve['reevaluated_by']}`")
        out += ["", "| training | FPR calib % | FPR test % | " + " | ".join(sets) + " |",
                "|" + "---|" * (len(sets) + 3)]
        for p in points:
            resets = p.get("latent_resets")
            dead = (f", latent dead and re-centred {resets} time{'s' if resets != 1 else ''}"
                    if resets else "")
            out.append(_curve_row(f"{p['minutes']:g} min ({p['steps']} steps{dead})", p, sets))
        paper = PAPER_TABLE3["SNI"]
        out.append("| *paper, Table 3 SNI* | | | " + " | ".join(
            f"*{paper[n][0]}*" if n in paper else "" for n in sets) + " |")
        for sigma, entry in curve.get("highpass", {}).items():
            out.append(_curve_row(f"reference: Gaussian high-pass sigma {sigma} px, same kernel "
                                  "analysis", entry["roi"], sets))
        across = curve.get("calibration_across_films")
        if across:
            out += ["", f"Calibration across films ({across['minutes']:g}-minute model, "
                    f"{across['n_per_film']} okay weld-region patches per training-side film): "
                    "thresholds from the other films' patches, FPR reached on the film left out "
                    "(training films were seen in training, so theirs is optimistic): "
                    + ", ".join(f"{name} ({v['role']}) {100 * v['fpr']:.2f} %"
                                if v.get("fpr") is not None else
                                f"{name} ({v['role']}) left out: no okay patch of its own"
                                for name, v in across["films"].items()) + ".", "",
                    "| training | FPR calib % | FPR test % | " + " | ".join(sets) + " |",
                    "|" + "---|" * (len(sets) + 3),
                    _curve_row(f"{across['minutes']:g} min, thresholds pooled over every "
                               "training-side film", across["pooled"], sets)]
        out += _by_zone_table(points)
        figure = curve.get("figure", "figures/learning_curve.png")
        out += ["", f"![learning curve {curve.get('label', '')}]({figure})", ""]
    for curve in curves:
        whole = curve.get("whole_image")
        if not whole:
            continue
        points = curve["points"]
        sets = [n for n in TEST_SETS if n in points[-1]["tpr"]]
        out += ["## Weld region: before and after", "",
                f"Recipe {curve.get('label', '')}. The same detectors, thresholds calibrated and TPR "
                "measured on patches drawn from whole radiographs (before: lead letters, IQI wires, "
                "film edges included, the paper's setting) and from the weld region only, counting "
                "only kernels centred in it (after: what `weldreview scan` does). 'FPR test' is the "
                "rate reached on okay patches of the test radiographs, which calibration never saw.", "",
                "| detector | patches | thresholds mean / std | FPR calib % | FPR test % | "
                + " | ".join(sets) + " |", "|" + "---|" * (len(sets) + 5)]
        last = points[-1]

        def row(label, region, point):
            t = point["thresholds"]
            return _curve_row(label, point, sets, extra=(region, f"{t['mean']:.4f} / {t['std']:.4f}"))

        name = f"OOD detector, {last['minutes']:g} min"
        out.append(row(name, "whole radiographs", whole))
        out.append(row(name, "weld region", last))
        for sigma, entry in curve.get("highpass", {}).items():
            if "whole" in entry:
                out.append(row(f"high-pass sigma {sigma} px", "whole radiographs", entry["whole"]))
                out.append(row(f"high-pass sigma {sigma} px", "weld region", entry["roi"]))
        out.append("")
        break
    return out


def rerender_report(out) -> Path | None:
    """Rewrite ``report.md`` from ``results.json`` (and ``learning_curve.json``) without re-running.

    Returns the report's path, or None when ``out`` holds no benchmark results yet.
    """
    out = Path(out)
    results = out / "results.json"
    if not results.is_file():
        return None
    from core.learning_curve import load_curves

    report = json.loads(results.read_text())
    report["learning_curves"] = load_curves(out)
    figures = {k: (out / v if v else None) for k, v in report.get("figures", {}).items()}
    results.write_text(json.dumps(report, indent=1, default=_json_default))
    md = out / "report.md"
    md.write_text(markdown(report, figures, read_notes(out)))
    return md


def write_report(out, report: dict, *, patch_sets=None, figure_scores=None, split=None,
                 fig11_model=None, fig11_roi: bool = False, log=print) -> Path:
    """Write ``report.md``, ``results.json`` and ``figures/*.png`` into ``out``; return report.md."""
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figure_scores = figure_scores or {}
    figures: dict = {}
    figures["fig9"] = figure_histograms(fig_dir / "fig9_residual_statistics.png", report, figure_scores)
    figures["fig10"] = figure_roc(fig_dir / "fig10_roc.png", report, figure_scores)
    if fig11_model is not None and split is not None and split.test:
        from core.benchmark import weld_region

        thr = _thresholds(report, "ood_SNI_seed0")
        item = split.test[0]
        figures["fig11"] = figure_sliding_window(fig_dir / "fig11_sliding_window.png", fig11_model,
                                                 thr, item, roi=weld_region(item) if fig11_roi else None)
    else:
        figures["fig11"] = None
        figures["fig11_why"] = "no OOD model trained with SNI (seed 0) in this run"
    from core.learning_curve import load_curves

    report["learning_curves"] = load_curves(out)
    report["figures"] = {k: (str(Path(v).relative_to(out)) if v else None)
                         for k, v in figures.items() if not k.endswith("_why")}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=_json_default))
    md = out / "report.md"
    md.write_text(markdown(report, figures, read_notes(out)))
    return md


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
