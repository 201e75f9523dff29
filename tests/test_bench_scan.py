"""``weldreview bench scan`` at a tiny size: the JSON it prints and what it compares."""

from __future__ import annotations

import json
import os


def test_bench_scan_reports_scan_overlap_and_baseline(capsys):
    from app.cli import main

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        assert main(["bench", "scan", "--runs", "2", "--shape", "300", "700", "--tile", "256",
                     "--no-memory"]) == 0
    finally:  # the bench limits this process to --threads CPUs
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    out = json.loads(capsys.readouterr().out)
    assert out["image_shape"] == [300, 700] and out["tile"] == 256
    scan = out["scan_s"]
    assert len(scan["runs"]) == 2 and scan["median"] > 0 and scan["target_max"] == 1.2
    b = scan["breakdown_of_median_run"]
    assert b["tiles"] == 8 and b["tile_shape"] == [256, 256]
    assert b["model_s"] > 0 and b["analysis_s"] > 0 and 0 <= b["analysis_wait_s"] <= b["total_s"]
    seq = out["scan_sequential_analysis_s"]
    assert len(seq["runs"]) == 2 and seq["median_of_paired_ratios_to_scan"] > 0
    assert out["patch_predict_s"]["patches"] > 0 and len(out["patch_predict_s"]["runs"]) == 2
    assert out["speedup_vs_patch_predict"]["target_min"] == 1.5
    assert "memory" not in out
