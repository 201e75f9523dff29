"""Per-radiograph PDF report, drawn with Qt's own QPdfWriter and QPainter (works headless).

The report shows the radiograph with its flagged regions (when the file is still readable and
still the reviewed content), every verdict on it with user and time (superseded ones and blind
second reviews included and marked), the model and operating point of every scan, and whether
the radiograph is done: the "radiograph completed" record stating that the unflagged areas were
accepted by the detector at that operating point (expected false flags per metre). Writing
it is an export: it is recorded in the audit trail with the sha256 of the PDF.
"""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor, QFont, QFontMetrics, QGuiApplication, QImage, QPageLayout, QPageSize, QPainter,
    QPdfWriter, QPen,
)

from core.audit import now_iso
from core.export import ExportResult, write_recorded

# The paper's Figure 5e colours, as in app/overlays.py: both = blue, std only = green,
# mean only = orange; missed indications (added by a reviewer) in red.
TEST_COLOURS = {"both": (30, 90, 255), "std": (0, 190, 60), "mean": (255, 140, 0)}
MISSED_COLOUR = (220, 0, 0)
DPI = 150
THUMB_MAX_PX = 1600  # longest side of the embedded image, keeps the PDF small


def display_image(image: np.ndarray, *, max_side: int = THUMB_MAX_PX) -> tuple[QImage, float]:
    """An 8-bit grey QImage of a float radiograph for display, and its scale factor.

    The window is the 0.5-99.5 percentile range of the image (a display choice only; the
    stored radiograph is not changed). Large images are reduced by block means.
    """
    step = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
    rows, cols = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    small = image[:rows, :cols].reshape(rows // step, step, cols // step, step).mean(axis=(1, 3))
    lo, hi = np.nanpercentile(small, [0.5, 99.5])
    scaled = np.clip((small - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    grey = np.ascontiguousarray(np.round(scaled * 255.0), dtype=np.uint8)
    qimage = QImage(grey.data, grey.shape[1], grey.shape[0], grey.shape[1],
                    QImage.Format.Format_Grayscale8).copy()
    return qimage, 1.0 / step


def _load(radiograph: dict) -> tuple[np.ndarray | None, str]:
    """The radiograph's image, or None and why it cannot be shown."""
    from core.errors import ImageLoadError, WeldreviewWarning
    from core.imageio import load_radiograph

    try:
        with warnings.catch_warnings():  # conversions were noted when it was first loaded
            warnings.simplefilter("ignore", WeldreviewWarning)
            loaded = load_radiograph(radiograph["path"])
    except (ImageLoadError, OSError) as exc:
        return None, f"image not shown: {exc}"
    if loaded.sha256 != radiograph["sha256"]:
        return None, (f"image not shown: {radiograph['path']} no longer holds the reviewed "
                      "radiograph (its sha256 differs)")
    return loaded.image, ""


class _Page:
    """A cursor over pages of a QPdfWriter: text lines that flow onto new pages."""

    def __init__(self, writer: QPdfWriter, painter: QPainter):
        self.writer, self.painter = writer, painter
        self.width = writer.width()
        self.height = writer.height()
        self.y = 0
        self.page = 1

    def font(self, size: float, *, bold: bool = False) -> None:
        font = QFont("DejaVu Sans")
        font.setPointSizeF(size)
        font.setBold(bold)
        self.painter.setFont(font)

    def need(self, height: int) -> None:
        if self.y + height > self.height:
            self.writer.newPage()
            self.page += 1
            self.y = 0

    def line(self, text: str, *, size: float = 9, bold: bool = False) -> None:
        self.font(size, bold=bold)
        metrics = QFontMetrics(self.painter.font(), self.painter.device())
        height = metrics.lineSpacing()
        self.need(height)
        elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, self.width)
        self.painter.drawText(0, self.y + metrics.ascent(), elided)
        self.y += height

    def gap(self, points: float = 6) -> None:
        self.y += int(points * DPI / 72)


def _draw_image(page: _Page, image: np.ndarray, regions: list[dict], missed: list[dict]):
    qimage, scale = display_image(image)
    page.font(7)
    fit = min(page.width / qimage.width(), (page.height * 0.45) / qimage.height())
    target = QRectF(0, page.y, qimage.width() * fit, qimage.height() * fit)
    page.need(int(target.height()) + 1)
    target.moveTop(page.y)
    page.painter.drawImage(target, qimage)
    factor = scale * fit
    for boxes, colour_of, style in (
        (regions, lambda r: TEST_COLOURS.get(r["tests"], (255, 255, 255)), Qt.PenStyle.SolidLine),
        (missed, lambda r: MISSED_COLOUR, Qt.PenStyle.DashLine),
    ):
        for item in boxes:
            r0, c0, r1, c1 = item["bbox"]
            pen = QPen(QColor(*colour_of(item)))
            pen.setWidthF(2.0)
            pen.setStyle(style)
            page.painter.setPen(pen)
            box = QRectF(target.left() + c0 * factor, target.top() + r0 * factor,
                         max((c1 - c0) * factor, 2), max((r1 - r0) * factor, 2))
            page.painter.drawRect(box)
            label = f"region {item['id']}" if "row0" in item else f"missed #{item['id']}"
            page.painter.drawText(box.bottomLeft() + QPointF(0, page.painter.fontMetrics()
                                                                .ascent()), label)
    page.painter.setPen(QPen(QColor(0, 0, 0)))
    page.y += int(target.height()) + 4


def _verdict_line(d: dict) -> str:
    where = f"region {d['region_id']}" if d["region_id"] else f"missed {d['bbox']}"
    parts = [f"#{d['id']}", _when(d["time"]), d["user"], d["verdict"], where]
    if d["iso_code"]:
        parts.append(f"ISO 6520 {d['iso_code']}")
    if d["size_mm"] is not None:
        parts.append(f"{d['size_mm']:.2f} mm")
    if d["blind"]:
        parts.append(f"blind second review of #{d['review_of']}")
    if d["supersedes"]:
        parts.append(f"supersedes #{d['supersedes']}: {d['reason']}")
    if d["superseded_by"]:
        parts.append(f"(superseded by #{d['superseded_by']})")
    if d["comment"]:
        parts.append(f"'{d['comment']}'")
    return "  ".join(str(p) for p in parts)


@dataclass
class ReportContent:
    """What the report of one radiograph says: its data and its text lines in order.

    ``sections`` maps a heading (or "" for the header) to its lines; the image and its
    boxes are drawn between the header and the scans.
    """

    radiograph: dict
    regions: list[dict]
    missed: list[dict]
    decisions: list[dict]
    sections: dict[str, list[str]] = field(default_factory=dict)


def report_content(store, radiograph_id: int) -> ReportContent:
    """Collect everything the report of ``radiograph_id`` shows."""
    rad = store.radiograph(int(radiograph_id))
    scans = store.scans(rad["id"])
    decisions = store.decisions(radiograph=rad["id"])
    latest = scans[0] if scans else None
    content = ReportContent(
        radiograph=rad, regions=store.regions(latest["id"]) if latest else [],
        missed=store.missed_indications(rad["id"]), decisions=decisions,
    )
    pixel = f"{rad['pixel_size_um']:g} um" if rad["pixel_size_um"] else "unknown"
    content.sections[""] = [
        f"file {rad['path']}", f"sha256 {rad['sha256']}",
        f"{rad['rows']} x {rad['cols']} pixels, {rad['bit_depth']} bit, pixel size {pixel}",
    ]
    lines = content.sections["Scans (model and operating point)"] = []
    for s in scans:
        fpr = f"{s['fpr']:g}" if s["fpr"] is not None else "-"
        lines.append(
            f"scan {s['id']}: started {_when(s['started_at'])} by {s['user'] or '-'}, model "
            f"{s['model_name'] or '-'} (sha256 {s['model_sha256'][:16]}...), operating point "
            f"FPR {fpr}, {len(store.regions(s['id']))} flagged regions")
    used = {s["model_id"] for s in scans}
    for m in store.models():
        if m["id"] in used and m["thresholds"]:
            lines.append(f"model {m['name'] or m['id']} thresholds: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(m["thresholds"].items())))
    if not scans:
        lines.append("not scanned")
    done = content.sections["Radiograph done"] = []
    for c in store.completions(rad["id"]):
        valid = store.completion(c["details"]["scan_id"])
        note = "" if valid is not None and valid["id"] == c["id"] else \
            " (no longer in force: a verdict was withdrawn afterwards)"
        text = f"{_when(c['time'])} by {c['user'] or '-'}: {c['details']['statement']}{note}"
        done.extend(textwrap.wrap(text, 110, subsequent_indent="    "))  # lines are elided
    if not done:
        done.append("not done: a flagged region has no verdict yet, or the radiograph was "
                    "not scanned")
    content.sections[f"Verdicts ({len(decisions)})"] = [_verdict_line(d) for d in decisions] \
        or ["no verdicts yet"]
    head = store.verify()
    chain = "intact" if head.ok else f"BROKEN ({head.message})"
    content.sections["Record"] = [
        f"generated {_when(now_iso())} UTC from {store.path}",
        f"audit chain {chain}; head {head.head_id}:{head.head_hash}",
    ]
    return content


def _when(iso: str) -> str:
    return iso[:19].replace("T", " ")


def render_report(store, radiograph_id: int, path) -> int:
    """Draw the report of one radiograph into the PDF ``path``; return the number of verdicts."""
    if QGuiApplication.instance() is None:
        raise RuntimeError("render_report needs a QGuiApplication (use write_report)")
    content = report_content(store, radiograph_id)
    rad = content.radiograph
    writer = QPdfWriter(str(path))
    writer.setResolution(DPI)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4),
                                     QPageLayout.Orientation.Portrait, QMarginsF(15, 15, 15, 15),
                                     QPageLayout.Unit.Millimeter))
    writer.setTitle(f"weldreview report: radiograph {rad['id']}")
    writer.setCreator("weldreview")
    painter = QPainter(writer)
    try:
        page = _Page(writer, painter)
        page.line(f"Radiograph {rad['id']}: {Path(rad['path']).name}", size=14, bold=True)
        for heading, lines in content.sections.items():
            if heading:
                page.gap()
                page.line(heading, size=11, bold=True)
            for text in lines:
                page.line(text, size=9 if not heading else 8)
            if not heading:
                page.gap()
                image, why = _load(rad)
                if image is not None:
                    _draw_image(page, image, content.regions, content.missed)
                    page.line("Boxes: regions of the latest scan (blue both tests, green std "
                              "only, orange mean only); dashed red: missed indications.", size=7)
                else:
                    page.line(why)
    finally:
        painter.end()
    return len(content.decisions)


def write_report(store, radiograph_id: int, path, *, user: str | None = None) -> ExportResult:
    """Write the PDF report of a radiograph and record the export in the audit trail."""
    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 - keeps it alive
    return write_recorded(
        store, path, lambda tmp: render_report(store, radiograph_id, tmp), kind="pdf",
        user=user, radiograph_id=int(radiograph_id),
    )
