"""Contract tests every lake engine must pass (SPEC §1)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql.types import (
    DateType,
    DecimalType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from clm_spark.errors import LakeError
from clm_spark.lake import TableSpec, Txn, WriteHooks, open_lake

SPEC = TableSpec(
    name="test/money",
    comment="test table",
    partition_by=("day",),
    schema=StructType(
        [
            StructField("day", DateType(), True, {"comment": "partition day"}),
            StructField("id", StringType(), True, {"comment": "an id"}),
            StructField("amount", DecimalType(18, 2), True, {"comment": "money"}),
            StructField("n", LongType(), True, {"comment": "a count"}),
            StructField("at", TimestampType(), True, {"comment": "an instant"}),
        ]
    ),
)
D1, D2 = date(2024, 1, 1), date(2024, 1, 2)
T = datetime(2024, 1, 1, 23, 59, 59, 123456, tzinfo=UTC)
ROWS = [
    (D1, "a", Decimal("10.05"), 1, T),
    (D1, "b", None, None, None),
    (D2, "c", Decimal("-0.01"), 3, T),
]


@pytest.fixture
def lake(spark, engine, tmp_path):
    return open_lake(spark, str(tmp_path / "lake"), engine)


def _df(spark, rows):
    return spark.createDataFrame(rows, SPEC.schema)


def test_round_trip_keeps_decimals_dates_nulls(spark, lake):
    result = lake.append(SPEC, _df(spark, ROWS), run_id="r1")
    assert result.version == 1 and not result.skipped
    assert_df_equality(
        lake.read(SPEC), _df(spark, ROWS), ignore_row_order=True, ignore_nullable=True, ignore_metadata=True
    )


def test_overwrite_replaces_only_matching_partitions(spark, lake):
    lake.append(SPEC, _df(spark, ROWS), run_id="r1")
    new = [(D1, "z", Decimal("1.00"), 9, None)]
    lake.overwrite(SPEC, _df(spark, new), replace={"day": [D1]}, run_id="r2")
    expected = _df(spark, new + [ROWS[2]])
    assert_df_equality(
        lake.read(SPEC), expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True
    )


def test_overwrite_refuses_rows_outside_replaced_partitions(spark, lake):
    lake.append(SPEC, _df(spark, ROWS), run_id="r1")
    with pytest.raises(Exception, match="outside|replaceWhere|does not conform"):
        lake.overwrite(SPEC, _df(spark, [ROWS[2]]), replace={"day": [D1]}, run_id="r2")
    assert lake.read(SPEC).count() == 3


def test_repeat_with_same_idempotency_key_is_a_noop(spark, lake):
    first = lake.append(SPEC, _df(spark, ROWS), run_id="r1", txn=Txn("clm.test", 7))
    again = lake.append(SPEC, _df(spark, ROWS), run_id="r1", txn=Txn("clm.test", 7))
    assert again.skipped and again.version == first.version
    assert lake.read(SPEC).count() == 3
    later = lake.append(SPEC, _df(spark, ROWS[:1]), run_id="r2", txn=Txn("clm.test", 8))
    assert not later.skipped and lake.read(SPEC).count() == 4


def test_failure_before_commit_leaves_table_unchanged(spark, tmp_path, engine):
    def boom(_name):
        raise RuntimeError("injected")

    good = open_lake(spark, str(tmp_path / "lake"), engine)
    good.append(SPEC, _df(spark, ROWS), run_id="r1")
    before = good.version(SPEC)
    bad = open_lake(spark, str(tmp_path / "lake"), engine, hooks=WriteHooks(before_commit=boom))
    with pytest.raises(RuntimeError, match="injected"):
        bad.append(SPEC, _df(spark, ROWS), run_id="r2")
    assert good.version(SPEC) == before
    assert good.read(SPEC).count() == 3
    referenced = {p.split("/")[-1] for p in DeltaTable(good.path(SPEC)).file_uris()}
    on_disk = {p.name for p in (tmp_path / "lake" / "test" / "money").rglob("*.parquet")}
    assert on_disk == referenced, "files of the failed write were left behind"


def test_time_travel_reads_past_versions(spark, lake):
    lake.append(SPEC, _df(spark, ROWS[:1]), run_id="r1")
    lake.overwrite(SPEC, _df(spark, ROWS[1:2]), replace={"day": [D1]}, run_id="r2")
    assert [r.id for r in lake.read(SPEC, version=1).collect()] == ["a"]
    assert [r.id for r in lake.read(SPEC).collect()] == ["b"]
    assert lake.commit_metadata(SPEC, 2).get("clm.run_id") == "r2"


def test_schema_mismatch_is_refused_before_writing(spark, lake):
    lake.append(SPEC, _df(spark, ROWS), run_id="r1")
    wrong = spark.createDataFrame([(D1, "a")], "day date, id string")
    with pytest.raises(LakeError, match="schema differs"):
        lake.append(SPEC, wrong, run_id="r2")
    assert lake.version(SPEC) == 1


def test_a_table_of_an_earlier_release_gains_the_new_columns(spark, lake):
    """New columns are appended to a declared schema: an older table reads them as null, and the
    first write adds them (with their comments); a table that differs otherwise is still refused."""
    old = TableSpec(SPEC.name, StructType(SPEC.schema.fields[:3]), SPEC.comment, SPEC.partition_by)
    lake.append(old, spark.createDataFrame([r[:3] for r in ROWS], old.schema), run_id="r1")
    before = lake.read(SPEC).orderBy("id").collect()
    assert [(r.id, r.n, r.at) for r in before] == [("a", None, None), ("b", None, None), ("c", None, None)]
    lake.overwrite(SPEC, _df(spark, ROWS[2:]), replace={"day": [D2]}, run_id="r2")
    assert [(r.id, r.n) for r in lake.read(SPEC).orderBy("id").collect()] == [
        ("a", None),
        ("b", None),
        ("c", 3),
    ]
    fields = json.loads(DeltaTable(lake.path(SPEC)).schema().to_json())["fields"]
    assert [(f["name"], f["metadata"].get("comment")) for f in fields][3:] == [
        ("n", "a count"),
        ("at", "an instant"),
    ]
    reordered = TableSpec(SPEC.name, StructType([SPEC.schema.fields[1], SPEC.schema.fields[0]]), "", ("day",))
    with pytest.raises(LakeError, match="schema differs"):
        lake.append(reordered, spark.createDataFrame([("z", D1)], reordered.schema), run_id="r3")


def test_table_names_cannot_escape_the_root(lake):
    with pytest.raises(LakeError, match="escape"):
        lake.path("../outside")


def test_delta_rs_tables_read_back_in_deltalake_and_polars(spark, tmp_path):
    lake = open_lake(spark, str(tmp_path / "lake"), "delta-rs")
    lake.append(SPEC, _df(spark, ROWS), run_id="r1")
    table = DeltaTable(lake.path(SPEC))
    arrow = table.to_pyarrow_table().sort_by("id")
    assert arrow.column("amount").to_pylist() == [Decimal("10.05"), None, Decimal("-0.01")]
    assert arrow.column("day").to_pylist() == [D1, D1, D2]
    polars = pl.read_delta(lake.path(SPEC)).sort("id")
    assert polars["n"].to_list() == [1, None, 3]
    assert polars["at"].to_list()[0].replace(tzinfo=UTC) == T
    assert table.metadata().description == "test table"
    fields = json.loads(table.schema().to_json())["fields"]
    assert fields[2]["metadata"]["comment"] == "money"
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert sum(a["num_records"] for a in actions) == 3
    by_id = {a["min.id"]: a for a in actions if a["num_records"] == 1}
    assert by_id["b"]["null_count.amount"] == 1 and by_id["b"]["max.id"] == "b"
    assert by_id["a"]["min.amount"] == Decimal("10.05") and by_id["a"]["null_count.amount"] == 0
    assert by_id["a"]["max.at"] is not None


def test_every_tenth_commit_writes_a_checkpoint_and_retention_is_declared(spark, lake, tmp_path):
    for i in range(10):
        lake.append(SPEC, _df(spark, ROWS[:1]), run_id=f"r{i}")
    log = tmp_path / "lake" / SPEC.name / "_delta_log"
    assert lake.version(SPEC) == 10
    assert (log / "00000000000000000010.checkpoint.parquet").exists()
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == 10
    config = DeltaTable(lake.path(SPEC)).metadata().configuration
    assert config["delta.checkpointInterval"] == "10"
    assert config["delta.deletedFileRetentionDuration"] == "interval 7 days"
    assert lake.read(SPEC).count() == 10  # readers start from the checkpoint


@pytest.mark.parametrize("first", ["delta-rs", "delta-spark"])
def test_a_table_written_by_one_engine_is_read_appended_and_overwritten_by_the_other(spark, tmp_path, first):
    from conftest import NO_DELTA_REASON

    from clm_spark.lake import delta_spark_available

    if not delta_spark_available(spark):
        pytest.skip(NO_DELTA_REASON)
    other = "delta-rs" if first == "delta-spark" else "delta-spark"
    a = open_lake(spark, str(tmp_path / "lake"), first)
    b = open_lake(spark, str(tmp_path / "lake"), other)
    a.append(SPEC, _df(spark, ROWS[:2]), run_id="r1", txn=Txn("clm.test", 1))
    assert b.version(SPEC) == a.version(SPEC) == 1 and b.table_id(SPEC) == a.table_id(SPEC)
    assert b.txn_version(SPEC, "clm.test") == 1 and b.txn_version(SPEC, "other") is None
    assert b.append(SPEC, _df(spark, ROWS[:2]), run_id="r1", txn=Txn("clm.test", 1)).skipped
    b.append(SPEC, _df(spark, ROWS[2:]), run_id="r2", txn=Txn("clm.test", 2))
    new = [(D1, "z", Decimal("1.00"), 9, None)]
    b.overwrite(SPEC, _df(spark, new), replace={"day": [D1]}, run_id="r3")
    assert a.txn_version(SPEC, "clm.test") == 2 and a.version(SPEC) == 3
    assert a.commit_metadata(SPEC, 3).get("clm.run_id") == "r3"
    expected = _df(spark, new + [ROWS[2]])
    for lake in (a, b):
        assert_df_equality(
            lake.read(SPEC), expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True
        )
    a.append(SPEC, _df(spark, ROWS[:1]), run_id="r4")
    assert b.read(SPEC).count() == 3 and b.version(SPEC) == 4
