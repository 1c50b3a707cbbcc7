"""Golden scenarios, given / when / then, one folder each under tests/scenarios/:

- given/clickstream, given/orders: the raw feeds, as a shop would deliver them;
- when.yaml: the job (`run` or `backfill`), its dates, the currency rates and, optionally, the
  control group (`activation`);
- then/<table>.csv: the expected rows of every gold table, worked out by hand.

Every gold table must have its CSV: a scenario cannot silently check only part of the output.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from helpers import SMALL_DATA_CONF

from clm_spark.app import Context, start_with_deps
from clm_spark.config import config_from_dict, parse_date
from clm_spark.lake import open_lake
from clm_spark.lifecycle.segments import load_segments
from clm_spark.tables import GOLD_TABLES

SCENARIOS = sorted(p for p in (Path(__file__).parent / "scenarios").iterdir() if p.is_dir())
CONF = Path(__file__).resolve().parents[1] / "conf"


def expected_rows(spark, case: Path, spec):
    """then/<table>.csv read with the table's own schema (an empty field is null)."""
    path = case / "then" / f"{spec.name.split('/')[-1]}.csv"
    assert path.is_file(), f"{case.name}: no expected rows for {spec.name} ({path.name})"
    return spark.read.csv(str(path), header=True, schema=spec.schema, enforceSchema=False, escape='"')


def run_scenario(spark, case: Path, tmp_path: Path):
    when = yaml.safe_load((case / "when.yaml").read_text())
    rates = {code: Decimal(str(rate)) for code, rate in when["currency"]["rates"].items()}
    cfg = config_from_dict(
        {
            "lake": {"root": str(tmp_path / "lake"), "engine": "delta-rs"},
            "raw": {
                "clickstream": str(case / "given" / "clickstream"),
                "orders": str(case / "given" / "orders"),
            },
            "currency": {"base": when["currency"]["base"], "rates": rates},
            "segments": str(CONF / "segments.yaml"),
            "validation": {"expectations": str(CONF / "expectations.yaml")},
            "activation": when.get("activation", {}),
        },
        base=tmp_path,
    )
    lake = open_lake(spark, cfg.lake.root, "delta-rs")
    dates = [parse_date(str(d)) for d in when["dates"]]
    start_with_deps(Context(cfg, load_segments(cfg.segments, 5), spark, lake), dates, when["job"])
    return lake


def assert_scenario(spark, case: Path, lake) -> None:
    for spec in GOLD_TABLES:
        assert_df_equality(
            lake.read(spec),
            expected_rows(spark, case, spec),
            ignore_row_order=True,
            ignore_nullable=True,
            ignore_metadata=True,
        )


@pytest.fixture
def sparks_defaults(spark):
    """Compiled code and adaptive execution, as the product runs (the test session turns them off)."""
    saved = {key: spark.conf.get(key) for key in SMALL_DATA_CONF}
    for key in SMALL_DATA_CONF:
        spark.conf.unset(key)
    try:
        yield
    finally:
        for key, value in saved.items():
            spark.conf.set(key, value)


@pytest.mark.slow
@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario(spark, case, tmp_path):
    assert_scenario(spark, case, run_scenario(spark, case, tmp_path))


@pytest.mark.slow
def test_compiled_code_gives_the_same_rows(spark, sparks_defaults, tmp_path):
    """The richest scenario again, under Spark's own settings: compiled and interpreted agree."""
    plan = spark.sql("EXPLAIN SELECT id + 1 FROM range(3)").first()[0]
    assert "*(1) " in plan, plan  # whole-stage code generation is on
    case = next(c for c in SCENARIOS if c.name == "all_segments")
    assert_scenario(spark, case, run_scenario(spark, case, tmp_path))


def test_every_scenario_is_complete():
    """given, when and one CSV per gold table: a folder missing a part fails here, fast."""
    assert SCENARIOS, "no scenario folders"
    tables = {spec.name.split("/")[-1] for spec in GOLD_TABLES}
    for case in SCENARIOS:
        assert (case / "given" / "clickstream").is_dir() and (case / "given" / "orders").is_dir(), case.name
        when = yaml.safe_load((case / "when.yaml").read_text())
        assert when["job"] in {"run", "backfill"} and when["dates"], case.name
        assert {p.stem for p in (case / "then").glob("*.csv")} == tables, case.name
