"""``weldreview bench retrain`` at a tiny size: a real store, verdicts, fine-tune, qualification."""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY = ["--verdicts", "12", "--steps", "2", "--shape", "400", "1200", "--holdback", "1",
        "--fpr", "0.05", "--calibration", "60", "--qualify-okay", "60", "--qualify-synthetic", "4"]


def test_bench_retrain_reports_a_retraining_from_verdicts(tmp_path, capsys):
    import tensorflow as tf

    from app.cli import main
    from core import training_set as ts
    from core.qualification import latest_qualification
    from core.store import Store

    folder = tmp_path / "bench"
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        assert main(["bench", "retrain", *TINY, "--keep", str(folder)]) == 0
    finally:  # the bench limits this process to --threads CPUs
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    out = json.loads(capsys.readouterr().out)

    v = out["verdicts"]
    assert v["given"] == 12 and sum(v["train"].values()) == 12
    assert v["train"] == v["quota"] == {"defect": 4, "false_alarm": 6, "missed": 2}
    assert v["radiographs"]["holdback"] == 1 and sum(v["holdback"].values()) > 0
    e = out["training_entries"]
    assert e["used"] == 12  # every training verdict became an entry, none skipped
    assert e["train"] == {"defect": 4, "okay": 6, "missed": 2}
    assert e["extracted"] == 12 + sum(e["holdback"].values())
    f = out["fine_tune"]
    assert f["steps"] == 2 and f["samples_per_s"] > 0 and f["samples_per_s_overall"] > 0
    m = out["minutes"]
    for k in ("extraction", "fine_tune", "calibration", "retrain_total", "qualification", "total",
              "setup"):
        assert m[k] > 0, k
    assert m["retrain_total"] >= m["extraction"] + m["fine_tune"] + m["calibration"]
    assert abs(m["total"] - m["retrain_total"] - m["qualification"]) < 1e-9
    assert out["target"]["retrain_max_min"] == 10.0
    assert out["target"]["met"] == (m["retrain_total"] <= 10.0)
    machine = out["machine"]
    assert machine["cpu_count"] == os.cpu_count() and machine["threads_requested"] == 2
    assert machine["tensorflow"] == tf.__version__
    # set when TensorFlow had not started yet in this process (an earlier test may have started it)
    assert machine["intra_op_threads"] >= 1 or "left as they were" in machine["note"]
    assert out["qualification"]["sets"]["okay"] == 60

    new = out["new_model"]
    assert Path(new["path"]).is_file() and Path(new["path"]).parent == folder / "home" / "models"
    assert new["parent_sha256"] == out["active_model"]["sha256"]
    with Store(folder / "review.sqlite", readonly=True) as store:
        row = store.one("SELECT id, path FROM models WHERE sha256 = ?", [new["sha256"]])
        assert row["id"] == new["id"] and row["path"] == new["path"]
        assert store.active_model()["sha256"] == out["active_model"]["sha256"]  # not activated
        assert [t["model_sha256"] for t in ts.models_trained(store)] == [new["sha256"]]
        assert latest_qualification(store, new["sha256"], out["active_model"]["sha256"])
        assert len(store.decisions(current_only=True)) == 12 + sum(v["holdback"].values())
        assert store.verify().ok
