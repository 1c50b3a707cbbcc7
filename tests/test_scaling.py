"""The bench's scaling report (benchmarks/scaling.py) on hand-made result files: no Spark."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.scaling import doubling_cost, latest_results, main, write_scaling_report


def _result(folder: Path, scale: float, when: str, stages: dict[str, tuple[float, float]]) -> None:
    """A bench result file as benchmarks.run writes it, with only what the report reads."""
    raw = {
        "scale": scale,
        "snapshot_date": "2024-04-29",
        "stages": [{"name": n, "seconds": s, "peak_rss_mb": mb} for n, (s, mb) in stages.items()],
    }
    (folder / f"bench-{scale:g}-120d-{when}.json").write_text(json.dumps(raw))


def test_doubling_cost_is_two_for_linear_growth():
    assert doubling_cost(1, 10, 2, 20) == 2.0
    assert abs(doubling_cost(1, 10, 10, 100) - 2.0) < 1e-12  # x10 data, x10 time: linear
    assert abs(doubling_cost(2, 210, 8, 840) - 2.0) < 1e-12  # x4 data, x4 time
    assert abs(doubling_cost(1, 1, 4, 16) - 4.0) < 1e-12  # quadratic: doubling costs x4
    assert doubling_cost(1, 0, 2, 5) is None and doubling_cost(2, 1, 1, 1) is None


def test_report_of_three_scales_marks_the_step_over_the_limit(tmp_path):
    _result(tmp_path, 1, "20261201T000000", {"daily run 2024-04-29": (99.0, 1.0)})  # older: ignored
    _result(
        tmp_path,
        1,
        "20261207T000000",
        {
            "history load + 2024-04-28 (earlier run)": (100.0, 3000.0),  # a reused history lake
            "daily run 2024-04-29": (10.0, 2500.0),
            "snapshot (DuckDB)": (1.0, 400.0),  # at one scale only: not in the report
        },
    )
    _result(
        tmp_path,
        2,
        "20261207T010000",
        {"history load + 2024-04-28": (210.0, 4000.0), "daily run 2024-04-29": (22.0, 2600.0)},
    )
    _result(
        tmp_path,
        8,
        "20261207T020000",
        {"history load + 2024-04-28": (840.0, 9000.0), "daily run 2024-04-29": (44.0, 5000.0)},
    )
    assert [(r.scale, r.file) for r in latest_results(tmp_path)] == [
        (1.0, "bench-1-120d-20261207T000000.json"),
        (2.0, "bench-2-120d-20261207T010000.json"),
        (8.0, "bench-8-120d-20261207T020000.json"),
    ]

    written = write_scaling_report(tmp_path)
    table = written.read_text()
    # 1x -> 2x: 210/100 = 2.10 (at the limit, not over) and 22/10 = 2.20 (over);
    # 2x -> 8x, four times the data: 840/210 = 4 -> 4 ** 0.5 = 2.00 and 44/22 = 2 -> 2 ** 0.5 = 1.41
    assert "| history load + D-1 | 100.0 | 210.0 | 840.0 | 2.10 | 2.00 |" in table
    assert "| daily run D | 10.0 | 22.0 | 44.0 | 2.20 **over** | 1.41 |" in table
    assert "1 step pair(s) over 2.1." in table
    assert "| daily run D | 2500 | 2600 | 5000 |" in table  # peak memory per step and scale
    assert "snapshot (DuckDB)" not in table and "bench-1-120d-20261201T000000" not in table
    svg = (tmp_path / "scaling.svg").read_bytes()
    assert svg.startswith(b"<?xml") and b"daily run D" in svg
    write_scaling_report(tmp_path)
    assert (tmp_path / "scaling.svg").read_bytes() == svg  # the same figures, the same file


def test_one_scale_writes_nothing_and_says_why(tmp_path, capsys):
    _result(tmp_path, 1, "20261207T000000", {"daily run 2024-04-29": (10.0, 1.0)})
    assert write_scaling_report(tmp_path) is None
    assert main(["--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"benchmarks.scaling: error: fewer than two scales have results in {tmp_path}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-1-120d-20261207T000000.json"]
