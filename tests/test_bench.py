"""`clm bench` end to end at a tiny scale: every step runs, the baselines agree with the published rows."""

from __future__ import annotations

import json

import pytest
from helpers import lake_context

from benchmarks.run import run_bench


@pytest.mark.slow
def test_bench_runs_every_step_and_the_baselines_match_the_published_snapshot(spark, tmp_path, capsys):
    ctx = lake_context(spark, tmp_path, tmp_path / "unused-raw")
    result = run_bench(ctx, scale=0.001, out_dir=str(tmp_path / "bench"), days=6)

    out = capsys.readouterr().out
    names = [s["name"] for s in result["stages"]]
    assert names[:3] == ["generate", "history load + 2024-01-05", "daily run 2024-01-06"]
    assert names[3:] == [
        "snapshot (ours, daily)",
        "snapshot (ours, silver)",
        "snapshot (naive)",
        "snapshot (DuckDB)",
        "valid orders as of D (a run has them from its snapshot)",
        "predict: calibration statistics",
        "predict: fit (patterns to the driver + MLE)",
        "predict: predictions (every customer)",
    ]
    assert "no activity state" not in out, "the daily path must read the state the history load carried"
    assert result["naive_mismatches"] == 0 and result["duckdb_mismatches"] == 0
    assert all(s["seconds"] > 0 and s["rows_out"] > 0 for s in result["stages"] if "predict" not in s["name"])
    # a tiny lake may have too few repeat buyers to fit: then the reason is reported, nothing predicted
    predicted = result["stages"][-1]["rows_out"]
    assert result["predict"]["customers"] > 0
    assert (predicted == result["predict"]["customers"]) == (result["predict"]["status"] == "fitted")
    for key in ("snapshot_ours_over_duckdb", "snapshot_ours_over_naive", "snapshot_ours_silver_over_naive"):
        assert result[key] > 0
    saved = json.loads(next((tmp_path / "bench" / "results").glob("bench-0.001-6d-*.json")).read_text())
    assert saved["stages"] == result["stages"]
    assert "rows differing from the published snapshot: DuckDB 0, naive 0" in out
    assert (tmp_path / "bench" / "data" / "scale-0.001-6d" / "history" / "silver" / "activity_state").is_dir()
