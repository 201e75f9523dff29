"""Exports: all decisions as CSV, a radiograph's report as PDF; each one an audit event."""

from __future__ import annotations

import csv
import hashlib
import re

import numpy as np
import pytest
import tifffile

from app.cli import main
from core.export import CSV_COLUMNS, export_csv
from core.imageio import load_radiograph
from core.store import Store


@pytest.fixture
def review(tmp_path):
    """A 16-bit radiograph on disk, scanned, with verdicts, a second review and an overrule."""
    rng = np.random.default_rng(8)
    image = (20000 + rng.normal(0, 300, (300, 900))).astype(np.uint16)
    image[100:130, 400:440] -= 3000
    tif = tmp_path / "W0042.tif"
    tifffile.imwrite(tif, image)
    radiograph = load_radiograph(tif, pixel_size_um=50.0)
    path = tmp_path / "review.sqlite"
    with Store(path) as store:
        store.add_user("ann", role="interpreter")
        store.add_user("sue", role="supervisor")
        rad = store.add_radiograph_from(radiograph, user="ann")
        model = store.add_model(sha256="b" * 64, metadata={}, name="plant-v1",
                                thresholds={"mean": 0.02, "std": 0.05})
        store.activate_model(model, user="sue", justification="initial")
        scan = store.start_scan(radiograph_id=rad, model_id=model, fpr=0.001, user="ann")
        regions = store.finish_scan(scan, [
            {"bbox": (95, 395, 135, 445), "severity": 3.1, "tests": "both", "area_px": 900},
            {"bbox": (10, 700, 30, 760), "severity": 1.1, "tests": "mean", "area_px": 200}])
        first = store.add_verdict(user="ann", verdict="defect", region_id=regions[0],
                                  iso_code="2011", size_mm=1.6, comment='gas pore, "large"')
        store.add_verdict(user="ann", verdict="unsure", region_id=regions[1])
        store.add_verdict(user="sue", verdict="defect", region_id=regions[0], review_of=first)
        store.overrule(first, user="sue", verdict="defect", reason="confirmed, size 1.8 mm",
                       iso_code="2011", size_mm=1.8)
        store.add_verdict(user="ann", verdict="defect", radiograph_id=rad,
                          bbox=(200, 50, 220, 90), iso_code="100")
    return path, tif, rad


def test_csv_holds_every_decision_and_is_recorded(review, tmp_path):
    path, tif, rad = review
    out = tmp_path / "decisions.csv"
    with Store(path) as store:
        result = export_csv(store, out, user="sue")
        rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert result.rows == len(rows) == 5
        assert [r["verdict"] for r in rows] == ["defect", "unsure", "defect", "defect", "defect"]
        assert rows[0]["comment"] == 'gas pore, "large"' and rows[0]["superseded_by"] == "4"
        assert (rows[2]["blind"], rows[2]["review_of"], rows[2]["current"]) == ("1", "1", "0")
        assert (rows[3]["supersedes"], rows[3]["reason"]) == ("1", "confirmed, size 1.8 mm")
        assert (rows[4]["kind"], rows[4]["row0"], rows[4]["col1"]) == ("missed", "200", "90")
        assert rows[0]["model_name"] == "plant-v1" and rows[0]["fpr"] == "0.001"
        assert rows[0]["radiograph_path"] == str(tif)
        (event,) = store.audit_log(event="export")
        assert event["user"] == "sue"
        assert event["details"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        assert event["details"]["rows"] == 5 and store.verify().ok
    assert not list(tmp_path.glob(".*.partial"))


def test_failed_export_leaves_no_file_and_no_record(review, tmp_path):
    path, _, _ = review
    with Store(path) as store:
        with pytest.raises(Exception, match="no-such-folder"):
            export_csv(store, tmp_path / "no-such-folder" / "d.csv")
        assert store.audit_log(event="export") == []
    with Store(path, readonly=True) as store:
        with pytest.raises(Exception, match="read-only"):
            export_csv(store, tmp_path / "d.csv")
    assert not (tmp_path / "d.csv").exists()


def test_report_content_names_every_verdict_model_and_operating_point(review):
    from app.report import report_content

    path, _, rad = review
    with Store(path) as store:
        content = report_content(store, rad)
    text = "\n".join(line for lines in content.sections.values() for line in lines)
    for d in content.decisions:
        when = d["time"][:19].replace("T", " ")
        assert f"#{d['id']}  {when}  {d['user']}  {d['verdict']}" in text
    assert "model plant-v1" in text and "operating point FPR 0.001" in text
    assert "supersedes #1: confirmed, size 1.8 mm" in text
    assert "blind second review of #1" in text and "ISO 6520 2011" in text
    assert "audit chain intact" in text
    assert [r["tests"] for r in content.regions] == ["both", "mean"]
    assert [m["bbox"] for m in content.missed] == [(200, 50, 220, 90)]


def pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", data))


def test_pdf_report_with_image_and_its_audit_event(review, tmp_path, qapp):
    from app.report import write_report

    path, _, rad = review
    out = tmp_path / "W0042-report.pdf"
    with Store(path) as store:
        result = write_report(store, rad, out, user="sue")
        data = out.read_bytes()
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
        assert pdf_pages(data) >= 1 and b"/Subtype /Image" in data
        assert result.rows == 5
        (event,) = store.audit_log(event="export")
        assert event["details"]["format"] == "pdf" and event["entity_id"] == rad
        assert event["details"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_pdf_report_of_a_moved_radiograph_says_so(review, tmp_path, qapp):
    from app.report import _load, write_report

    path, tif, rad = review
    tif.rename(tmp_path / "elsewhere.tif")
    with Store(path) as store:
        image, why = _load(store.radiograph(rad))
        assert image is None and "W0042.tif" in why
        write_report(store, rad, tmp_path / "r.pdf")
    data = (tmp_path / "r.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and b"/Subtype /Image" not in data
    other = np.random.default_rng(9).integers(1000, 2000, (300, 900), dtype=np.uint16)
    tifffile.imwrite(tif, other)  # different content under the reviewed name
    with Store(path) as store:
        image, why = _load(store.radiograph(rad))
    assert image is None and "sha256 differs" in why


def test_cli_export_csv_and_pdf_headless(review, tmp_path):
    path, tif, rad = review
    csv_out, pdf_out = tmp_path / "all.csv", tmp_path / "one.pdf"
    assert main(["export", "--db", str(path), "--csv", str(csv_out), "--pdf", str(pdf_out),
                 "--radiograph", str(tif), "--user", "sue"]) == 0
    assert len(list(csv.DictReader(csv_out.open()))) == 5
    assert pdf_out.read_bytes().startswith(b"%PDF-")
    with Store(path) as store:
        assert [e["details"]["format"] for e in store.audit_log(event="export")] == ["csv", "pdf"]
    assert main(["export", "--db", str(path), "--pdf", str(pdf_out)]) == 2
    assert main(["export", "--db", str(path), "--pdf", str(pdf_out), "--radiograph", "99"]) == 1
    assert main(["export", "--db", str(tmp_path / "none.sqlite"), "--csv", str(csv_out)]) == 1


def test_cli_export_pdf_in_a_fresh_process(review, tmp_path):
    """``weldreview export --pdf`` works with no display and no Qt application running."""
    import os
    import subprocess
    import sys

    path, _, rad = review
    out = tmp_path / "proc.pdf"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "export", "--db", str(path),
                           "--pdf", str(out), "--radiograph", str(rad)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF-") and "5 verdicts" in done.stdout
