"""Faults, concurrency, late and empty data, retention and secrets, on real `clm` processes.

"Checksum" = sha256 over a table's rows (volatile ingest timestamps left out) sorted, so two
lakes match when they hold the same rows whatever their files, versions or history. The
uninterrupted run they are compared with is conftest's `small_reference` (a backfill of D0 and D).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable
from helpers import COLD_JVM_OPTIONS, SMALL_DATA_CONF, SMALL_DATES, context_of, lake_context, write_config
from pyspark.sql import functions as F

from clm_spark.app import start_with_deps
from clm_spark.lake import open_lake
from clm_spark.maintenance import vacuum_lake
from clm_spark.tables import (
    ALL_TABLES,
    BRONZE_CLICKSTREAM,
    CUSTOMER_SNAPSHOT,
    GOLD_TABLES,
    PIPELINE_RUNS,
    RFM_CUTPOINTS,
    SEGMENT_SUMMARY,
)

D0, D = SMALL_DATES
SECRET = "s3cr3t-Value-7f9b"
VOLATILE = {"_ingested_at", "ingested_at", "events_table_id"}  # per run or per lake
DATA_TABLES = [t for t in ALL_TABLES if t is not PIPELINE_RUNS]
ORDER_FREE = [t for t in DATA_TABLES if t not in GOLD_TABLES]  # bronze and silver


def checksum(lake, spec, where: str | None = None) -> str:
    df = lake.read(spec)
    if where:
        df = df.filter(where)
    cols = [c for c in spec.columns if c not in VOLATILE]
    rows = sorted(r[0] for r in df.select(F.to_json(F.struct(*cols))).collect())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest() + f":{len(rows)}"


def checksums(lake, tables=DATA_TABLES) -> dict[str, str]:
    return {t.name: checksum(lake, t) for t in tables if lake.exists(t)}


def _config(tmp: Path, raw: Path, name: str) -> Path:
    path = write_config(tmp, raw, name)
    conf = yaml.safe_load(path.read_text())
    conf["spark"] = {
        "spark.driver.memory": "1g",
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.enabled": "false",
        "spark.hadoop.fs.s3a.secret.key": "${CLM_TEST_SECRET}",  # a secret that must never show
        **SMALL_DATA_CONF,  # a fresh JVM on a few hundred rows, as in the test session
        "spark.driver.extraJavaOptions": COLD_JVM_OPTIONS,
    }
    path.write_text(yaml.safe_dump(conf))
    return path


def _clm(config: Path, *args: str, failpoint: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "CLM_TEST_SECRET": SECRET, "PYSPARK_PYTHON": sys.executable}
    env.pop("CLM_FAILPOINT", None)
    if failpoint:
        env["CLM_FAILPOINT"] = failpoint
    return subprocess.Popen(
        [sys.executable, "-m", "clm_spark.cli", *args, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def _readers_see_only_committed_files(root: str) -> int:
    """Every file in each table's log exists; returns the parquet files on disk that no log names."""
    orphans = 0
    for spec in ALL_TABLES:
        path = Path(root) / spec.name
        if not DeltaTable.is_deltatable(str(path)):
            continue
        table = DeltaTable(str(path))
        referenced = {Path(u.removeprefix("file://")).resolve() for u in table.file_uris()}
        assert all(p.exists() for p in referenced), f"{spec.name}: the log names a missing file"
        on_disk = {p.resolve() for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}
        orphans += len(on_disk - referenced)
    return orphans


@pytest.mark.slow
def test_sigkill_at_every_stage_then_rerun_equals_an_uninterrupted_run(
    spark, small_raw, small_reference, tmp_path, monkeypatch
):
    config = _config(tmp_path, small_raw, "crash")
    root = str(tmp_path / "crash")
    run_d = ("run", "--date", str(D))
    outputs = []
    for point in (
        "before_commit:bronze/clickstream",  # data files written and moved, no commit
        "after_commit:silver/events",  # silver half-written: identity and quarantine missing
        "before_commit:gold/segment_summary",  # D's other gold tables committed, summary not
        "before_run_record",  # everything published, the run not recorded
    ):
        code, out = _finish(_clm(config, *run_d, failpoint=point))
        outputs.append(out)
        assert code == -signal.SIGKILL, f"{point}: expected to be killed, exit {code}\n{out[-2000:]}"
        orphans = _readers_see_only_committed_files(root)
        if point.startswith("before_commit:bronze"):
            assert orphans > 0, "the kill did not happen after the data files were written"
            assert DeltaTable(f"{root}/{BRONZE_CLICKSTREAM.name}").to_pyarrow_table().num_rows == 0
        if point.startswith("before_commit:gold"):
            crash = open_lake(spark, root, "delta-rs")
            assert crash.read(CUSTOMER_SNAPSHOT).filter(F.col("snapshot_date") == D).count() > 0
            assert crash.read(SEGMENT_SUMMARY).count() == 0, "a date counts as present only with its summary"

    # the re-run in this process: nothing of the dead runs lives on but the lake they left
    monkeypatch.setenv("CLM_TEST_SECRET", SECRET)
    rerun = context_of(spark, config)
    start_with_deps(rerun, [D], "run")
    crash = rerun.lake
    assert checksums(crash, ORDER_FREE) == checksums(small_reference, ORDER_FREE)
    for spec in (CUSTOMER_SNAPSHOT, RFM_CUTPOINTS):  # the reference also holds D0
        assert checksum(crash, spec) == checksum(small_reference, spec, f"snapshot_date = '{D}'")
    runs = crash.read(PIPELINE_RUNS).collect()
    assert [r.status for r in runs] == ["succeeded"], "killed runs leave no record; the re-run does"

    # nothing secret or personal leaks: logs, run records, any string column after bronze
    assert not any(SECRET in out for out in outputs)
    assert all(SECRET not in str(r.asDict()) for r in runs)
    for spec in [t for t in DATA_TABLES[2:] if crash.exists(t)]:  # predictions are off here
        strings = [f.name for f in spec.schema.fields if f.dataType.simpleString() == "string"]
        leaked = crash.read(spec).filter(F.exists(F.array(*strings), lambda c: c.rlike(r"[^\s@<]+@[^\s@>]+")))
        assert leaked.count() == 0, f"an email reached {spec.name}"

    # retention: vacuum clears what the dead runs left, never what a version needs
    before = checksums(crash)
    assert _readers_see_only_committed_files(root) > 0
    removed = vacuum_lake(open_lake(spark, root, "delta-rs"), retain_hours=0, force=True)
    assert sum(removed.values()) > 0
    assert _readers_see_only_committed_files(root) == 0
    assert not [p for t in ALL_TABLES for p in (Path(root) / t.name / "_staging").glob("*")]
    assert checksums(open_lake(spark, root, "delta-rs")) == before


@pytest.mark.slow
def test_concurrent_runs_one_wins_per_date_and_other_dates_both_publish(
    spark, small_raw, small_reference, tmp_path, monkeypatch
):
    config = _config(tmp_path, small_raw, "concurrent")
    procs = [_clm(config, "run", "--date", str(D)), _clm(config, "run", "--date", str(D))]
    # the other date from this process meanwhile (a third `clm` would only add a JVM start): it holds
    # the lake while the two processes start, or waits for it
    monkeypatch.setenv("CLM_TEST_SECRET", SECRET)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(start_with_deps, context_of(spark, config), [D0], "run")
        results = [_finish(p) for p in procs]
        assert other.result(timeout=600).dates == [D0]
    assert sorted(code for code, _ in results) == [0, 1], [out[-1500:] for _, out in results]
    loser = next(out for code, out in results if code == 1)
    assert "is already publishing" in loser and "Traceback" not in loser

    lake = open_lake(spark, str(tmp_path / "concurrent"), "delta-rs")
    # transitions of D depend on whether D0 was present when D ran: compare order-free tables
    assert checksums(lake, [*ORDER_FREE, CUSTOMER_SNAPSHOT]) == checksums(
        small_reference, [*ORDER_FREE, CUSTOMER_SNAPSHOT]
    )
    assert [r.status for r in lake.read(PIPELINE_RUNS).collect()] == ["succeeded", "succeeded"]


@pytest.mark.slow
def test_late_files_and_an_empty_day(spark, small_raw, small_reference, tmp_path):
    late_raw = tmp_path / "raw"
    shutil.copytree(small_raw, late_raw)
    # the lake of D0 and D published from every file but the late one
    shutil.copytree(small_reference.root, tmp_path / "late")
    ctx = lake_context(spark, tmp_path, late_raw, "late")
    before = {d: checksum(ctx.lake, CUSTOMER_SNAPSHOT, f"snapshot_date = '{d}'") for d in (D0, D)}
    versions = {t.name: ctx.lake.version(t) for t in GOLD_TABLES}

    # a late file for the already published D0: a new customer's order and a visit
    folder = late_raw / "orders" / f"dt={D0}"
    (folder / "late-delivery.csv").write_text(
        "order_id,customer_id,order_time,updated_at,status,amount,currency\n"
        f"late-o1,late-c1,{D0}T12:00:00Z,{D0}T12:00:00Z,completed,99.90,EUR\n"
    )
    result = start_with_deps(ctx, [D0], "run")
    assert result.counts["orders"]["delivered"] == 1 and result.counts["orders"]["accepted"] == 1
    snap = ctx.lake.read(CUSTOMER_SNAPSHOT)
    assert snap.filter(f"snapshot_date = '{D0}' and person_id = 'late-c1'").count() == 1
    assert checksum(ctx.lake, CUSTOMER_SNAPSHOT, f"snapshot_date = '{D0}'") != before[D0]
    assert checksum(ctx.lake, CUSTOMER_SNAPSHOT, f"snapshot_date = '{D}'") == before[D]  # until D is re-run
    for table in GOLD_TABLES:  # the previous version of every gold table is still readable
        assert ctx.lake.read(table, version=versions[table.name]).count() > 0

    # an empty day: nothing new arrives, the snapshot still publishes and passes validation
    validating = context_of(spark, write_config(tmp_path, late_raw, "late", validate=True), lake=ctx.lake)
    nxt = D + timedelta(days=1)
    result = start_with_deps(validating, [nxt], "run")
    assert all(c["delivered"] == 0 for c in result.counts.values())
    assert "passed" in result.validation
    snap = ctx.lake.read(CUSTOMER_SNAPSHOT)
    today = snap.filter(f"snapshot_date = '{nxt}' and is_customer").select("person_id", "recency_days")
    yesterday = snap.filter(f"snapshot_date = '{D}' and is_customer").select(
        "person_id", F.col("recency_days").alias("before")
    )
    aged = today.join(yesterday, "person_id")
    assert aged.count() > 0 and aged.filter("recency_days != before + 1").count() == 0
