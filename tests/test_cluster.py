"""A real multi-process cluster: a Spark standalone master and two workers on 127.0.0.1.

`spark-submit --master spark://... --py-files clm_spark.zip jobs/daily.py` runs the daily job
there; its snapshot must equal the one the embedded session published from the same raw files
(conftest's small raw lake: the point is the cluster path, not volume).
Every process the test starts is stopped by pid, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chispa import assert_df_equality
from conftest import DELTA_JARS
from helpers import COLD_JVM_OPTIONS, SMALL_DATA_CONF, SMALL_DATES, write_config
from pyspark.find_spark_home import _find_spark_home

from clm_spark.lake import open_lake
from clm_spark.tables import CUSTOMER_SNAPSHOT, PIPELINE_RUNS, SEGMENT_SUMMARY

REPO = Path(__file__).resolve().parents[1]
BLOCKER = Path(__file__).parent / "blocked_imports"
DRIVER_ONLY = "deltalake,pyarrow.fs,great_expectations,matplotlib"  # executors need none of them
DRIVER_STORAGE = "deltalake,pyarrow.fs"  # on delta-spark the driver needs neither
SPARK_HOME = Path(_find_spark_home())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(log: Path, text: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"{log.name}: process exited ({proc.returncode}):\n{log.read_text()[-2000:]}"
            )
        time.sleep(0.5)
    raise AssertionError(f"{log.name}: no {text!r} after {seconds}s:\n{log.read_text()[-2000:]}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.fixture
def standalone_cluster(tmp_path):
    """Master + two one-core workers; yields the master URL and the workers' work dirs."""
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    env["SPARK_DAEMON_JAVA_OPTS"] = COLD_JVM_OPTIONS  # the master and workers live for one job too
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [spark_class, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
        procs.append(proc)
        return proc, log

    try:
        master, master_log = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(_free_port())),
        )
        _wait_for(master_log, "I have been elected leader", master)
        work_dirs, workers = [], []
        for i in (1, 2):  # both start at once; each must register
            work = tmp_path / f"worker{i}"
            workers.append(
                start(
                    f"worker{i}",
                    "org.apache.spark.deploy.worker.Worker",
                    *("--host", "127.0.0.1", "--cores", "1", "--memory", "1500m"),
                    *("--webui-port", str(_free_port()), "--work-dir", str(work), url),
                )
            )
            work_dirs.append(work)
        for worker, worker_log in workers:
            _wait_for(worker_log, "Successfully registered with master", worker)
        yield url, work_dirs
    finally:
        _stop(procs)
        assert all(p.poll() is not None for p in procs), "a cluster process outlived the test"


@pytest.mark.slow
def test_spark_submit_daily_job_on_a_standalone_cluster(
    standalone_cluster, small_raw, small_reference, spark, tmp_path
):
    """The daily job on two workers whose Python lacks every driver-only package.

    With the shared Delta jars it runs the delta-spark engine, as a cluster would, with the lake
    and the raw feeds given as file:/// URIs and `deltalake` and `pyarrow.fs` unimportable in the
    driver too: the driver reaches storage through Spark only. Without the jars it runs delta-rs
    (the driver commits) on plain paths.
    """
    url, work_dirs = standalone_cluster
    zip_path = shutil.make_archive(str(tmp_path / "clm_spark"), "zip", REPO, "clm_spark")  # = make package
    engine = "delta-spark" if DELTA_JARS else "delta-rs"
    spark_only = engine == "delta-spark"
    config = write_config(tmp_path, small_raw, "cluster-lake", validate=True, engine=engine, uris=spark_only)
    day = SMALL_DATES[-1]
    markers = tmp_path / "markers"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    if spark_only:  # the driver's Python: spark-submit keeps this PYTHONPATH after its own entries
        env |= {"PYTHONPATH": str(BLOCKER), "CLM_BLOCK_IMPORTS": DRIVER_STORAGE}
        env |= {"CLM_BLOCK_MARKERS": str(markers)}
    env.pop("SPARK_HOME", None)
    env.pop("CLM_DELTA_JARS", None)  # spark-submit's own --jars below, as on a cluster
    delta = []
    if DELTA_JARS:
        delta = ["--jars", ",".join(str(j) for j in DELTA_JARS)]
        delta += ["--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"]
        delta += ["--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog"]
    result = subprocess.run(
        [
            str(SPARK_HOME / "bin" / "spark-submit"),
            *("--master", url, "--py-files", zip_path, *delta),
            *("--driver-memory", "1g", "--executor-memory", "1g", "--total-executor-cores", "2"),
            *("--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.ui.enabled=false"),
            *("--conf", "spark.databricks.delta.snapshotPartitions=2"),
            *[arg for key, value in SMALL_DATA_CONF.items() for arg in ("--conf", f"{key}={value}")],
            *("--conf", f"spark.driver.extraJavaOptions={COLD_JVM_OPTIONS}"),
            *("--conf", f"spark.executor.extraJavaOptions={COLD_JVM_OPTIONS}"),
            *("--conf", f"spark.executorEnv.PYTHONPATH={BLOCKER}"),
            *("--conf", f"spark.executorEnv.CLM_BLOCK_IMPORTS={DRIVER_ONLY}"),
            *("--conf", f"spark.executorEnv.CLM_BLOCK_MARKERS={markers}"),
            str(REPO / "jobs" / "daily.py"),
            *("--config", str(config), "--date", str(day)),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert "succeeded" in result.stdout and f"master {url}" in output
    assert "[snapshot " in output and "rows," in output  # progress lines
    assert "No Partition Defined for Window" not in output  # nothing funnels into one task

    # executors really ran on both workers, every Python worker without the driver-only packages
    for work in work_dirs:
        assert list(work.glob("app-*/*/stderr")), f"no executor ran under {work}"
    blocked = [p.read_text() for p in markers.glob("*.blocked")]
    assert DRIVER_ONLY in blocked, "no Python worker ran without the driver-only packages"
    assert set(blocked) == ({DRIVER_ONLY, DRIVER_STORAGE} if spark_only else {DRIVER_ONLY})

    lake = open_lake(spark, str(tmp_path / "cluster-lake"), engine)
    mine = lake.read(CUSTOMER_SNAPSHOT)
    reference = small_reference.read(CUSTOMER_SNAPSHOT).filter(f"snapshot_date = '{day}'")
    assert mine.count() > 0
    assert_df_equality(mine, reference, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
    assert (
        lake.read(SEGMENT_SUMMARY).count()
        == small_reference.read(SEGMENT_SUMMARY).filter(f"snapshot_date = '{day}'").count()
        > 0
    )
    [run] = lake.read(PIPELINE_RUNS).collect()
    assert run.status == "succeeded" and run.engine == engine and "passed" in run.validation
    reports = list((tmp_path / "cluster-lake" / "_reports").rglob("validation-*.html"))
    assert reports and "passed" in reports[0].read_text()  # written through Hadoop on delta-spark
