"""Segment rules: the default model and the validation errors of SEGMENTS.md."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from clm_spark.errors import SegmentRulesError
from clm_spark.lifecycle.segments import load_segments, parse_model

VISITORS = [
    {"id": "v1", "stage": "acquire", "when": {"is_customer": False, "has_email": True}},
    {"id": "v2", "stage": "acquire", "when": {"is_customer": False}},
]


def test_default_model_covers_every_cell_exactly_as_segments_md():
    model = load_segments("conf/segments.yaml", 5)
    assert len(model.rules) == 14 and len({r.stage for r in model.rules}) == 5
    cells = [c for r in model.rules if r.cells for c in r.cells]
    assert len(cells) == 125 and len(set(cells)) == 125
    first_time = {
        "is_customer": True,
        "has_email": False,
        "orders_lifetime": 1,
        "frequency": 1,
        "cell": "111",
    }
    assert model.classify({**first_time, "recency_days": 60}) == "first_time_customer"
    assert model.classify({**first_time, "recency_days": 61}) == "lost"


@pytest.mark.parametrize(
    "segments, message",
    [
        (
            VISITORS + [{"id": "all", "stage": "retain", "ranges": {"r": [1, 5], "f": [1, 5], "m": [2, 5]}}],
            "cell 111 .* reach no segment",
        ),
        ([VISITORS[1], {"id": "all", "stage": "retain", "ranges": {}}], None),
        ([VISITORS[1], VISITORS[0], {"id": "all", "stage": "retain", "ranges": {}}], "'v1' is unreachable"),
        (
            [VISITORS[0], {"id": "all", "stage": "retain", "ranges": {}}],
            "visitors without email reach no segment",
        ),
        (VISITORS + [{"id": "all", "stage": "grow", "ranges": {}}], "unknown stage 'grow'"),
        (VISITORS + [{"id": "v1", "stage": "retain", "ranges": {}}], "duplicate id"),
        (VISITORS + [{"id": "x", "stage": "retain", "cells": [611]}], "not three scores"),
        (
            VISITORS + [{"id": "x", "stage": "retain", "when": {"recency_days": {"max": "nope"}}}],
            "unknown parameter",
        ),
    ],
)
def test_validation_names_the_first_problem(segments, message):
    raw = {"score_bins": 5, "segments": segments}
    if message is None:
        assert parse_model(raw).ids == ["v2", "all"]
        return
    with pytest.raises(SegmentRulesError, match=message):
        parse_model(raw)


def test_other_bin_counts_with_their_own_map(tmp_path):
    raw = {
        "score_bins": 3,
        "segments": VISITORS
        + [
            {"id": "top", "stage": "cherish", "ranges": {"r": [3, 3]}},
            {"id": "rest", "stage": "reactivate", "ranges": {"r": [1, 2]}},
        ],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert (
        load_segments(path, 3).classify(
            {
                "is_customer": True,
                "has_email": False,
                "orders_lifetime": 2,
                "recency_days": 5,
                "frequency": 2,
                "cell": "311",
            }
        )
        == "top"
    )
    with pytest.raises(SegmentRulesError, match="written for score_bins 3"):
        load_segments(path, 5)


def test_cli_segments_check_prints_the_grid():
    proc = subprocess.run(
        [sys.executable, "-m", "clm_spark.cli", "segments", "check", "--config", "conf/clm.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "14 segments" in proc.stdout and "champions" in proc.stdout
    assert "visitors with email   -> loyal_visitor" in proc.stdout
