"""Golden scenarios: tests/scenarios/given_<case>/ raw files in, then/ expected snapshot rows out."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality

from clm_spark.app import Context, start_with_deps
from clm_spark.config import config_from_dict, parse_date
from clm_spark.lake import open_lake
from clm_spark.lifecycle.segments import load_segments
from clm_spark.tables import CUSTOMER_SNAPSHOT

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("given_*"))


@pytest.mark.slow
@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario(spark, case, tmp_path):
    spec = yaml.safe_load((case / "scenario.yaml").read_text())
    rates = {code: Decimal(str(rate)) for code, rate in spec["currency"]["rates"].items()}
    conf = Path("conf").resolve()
    cfg = config_from_dict(
        {
            "lake": {"root": str(tmp_path / "lake"), "engine": "delta-rs"},
            "raw": {"clickstream": str(case / "clickstream"), "orders": str(case / "orders")},
            "currency": {"base": spec["currency"]["base"], "rates": rates},
            "segments": str(conf / "segments.yaml"),
            "validation": {"expectations": str(conf / "expectations.yaml")},
        },
        base=tmp_path,
    )
    lake = open_lake(spark, cfg.lake.root, "delta-rs")
    day = parse_date(str(spec["date"]))
    start_with_deps(Context(cfg, load_segments(cfg.segments, 5), spark, lake), [day], "run")
    expected = spark.read.csv(
        str(case / "then" / "customer_snapshot.csv"), header=True, schema=CUSTOMER_SNAPSHOT.schema
    )
    actual = lake.read(CUSTOMER_SNAPSHOT)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
