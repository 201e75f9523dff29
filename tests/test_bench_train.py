"""``weldreview bench train`` at a tiny size: each variant in its own process, progress as it goes."""

from __future__ import annotations

import json


def test_bench_train_times_a_variant_says_so_as_it_goes_and_skips_what_this_machine_cannot_mean(capsys):
    from app.cli import main
    from core.training import resolve_precision

    rc = main(["bench", "train", "--steps", "2", "--batch", "2", "--repeats", "1", "--variants", "loop,fit_bf16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    assert result["samples_per_s"]["loop"] > 0 and result["runs"]["loop"] == [result["samples_per_s"]["loop"]]
    assert result["device"] and result["steps"] == 2 and result["batch"] == 2
    emulated = resolve_precision("auto") is None  # no bfloat16 instructions and no GPU
    assert ("fit_bf16" in result["skipped"]) == emulated
    assert "bfloat16 would be emulated" in result["skipped"].get("fit_bf16", "bfloat16 would be emulated")
    total = 1 if emulated else 2
    assert f"bench train: 1/{total} loop: " in captured.err and " samples/s" in captured.err


def test_bench_train_refuses_an_unknown_variant_with_the_choices(capsys):
    from app.cli import main

    assert main(["bench", "train", "--steps", "2", "--variants", "loop,fast"]) == 2
    err = capsys.readouterr().err
    assert "unknown variants ['fast']" in err and "loop_pipeline" in err
