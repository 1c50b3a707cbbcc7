"""One Spark session for the whole test run: local[2], few shuffle partitions, UI off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

# The Delta JVM connector for tests: the jars shipped beside the repository in ../shared/delta
# (no Maven here). Never copied into the project; without them the delta-spark tests skip.
SHARED_DELTA = Path(__file__).resolve().parents[2] / "shared" / "delta"
DELTA_JARS = sorted(SHARED_DELTA.glob("delta-*.jar")) if SHARED_DELTA.is_dir() else []
if DELTA_JARS and "CLM_DELTA_JARS" not in os.environ:
    os.environ["CLM_DELTA_JARS"] = ",".join(str(j) for j in DELTA_JARS)
NO_DELTA_REASON = (
    f"Delta JVM connector not on the classpath: no jars in {SHARED_DELTA} and CLM_DELTA_JARS unset"
)


@pytest.fixture(scope="session")
def spark():
    from helpers import SMALL_DATA_CONF

    from clm_spark.session import build_session

    session = build_session(
        "clm-spark-tests",
        {
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            # adaptive execution and compiled code off (helpers.SMALL_DATA_CONF says why); the
            # partitioning test runs the snapshot with adaptive execution on too
            **SMALL_DATA_CONF,
            # the cleaner frees shuffle files and broadcasts only after a JVM GC; the default
            # periodic GC (30 min) is as long as the suite, so they pile up in one session
            "spark.cleaner.periodicGC.interval": "1min",
            "spark.driver.memory": "6g",  # headroom for the multi-date tests late in a long session
            # the throughput collector: on 2 cores G1's concurrent marking and refinement threads
            # take CPU from the tasks, and the suite never needs G1's short pauses
            "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
            # PySpark records the Python call site of every DataFrame call for error messages with
            # several py4j round trips per call; the tests build thousands of small frames
            "spark.python.sql.dataFrameDebugging.enabled": "false",
            "spark.databricks.delta.snapshotPartitions": "2",  # delta-spark: log state in 2 tasks, not 50
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(params=["delta-rs", "delta-spark"])
def engine(request, spark):
    from clm_spark.lake import delta_spark_available

    if request.param == "delta-spark" and not delta_spark_available(spark):
        pytest.skip(NO_DELTA_REASON)
    return request.param


@pytest.fixture(scope="session")
def published(spark, tmp_path_factory):
    """A small generated raw lake, published in order for three dates (shared by the output tests)."""
    from helpers import PUBLISHED_DATES, lake_context

    from clm_spark.app import start_with_deps
    from clm_spark.sample.generate import generate

    tmp = tmp_path_factory.mktemp("published")
    generate(
        tmp / "raw", persons=300, days=20, start=PUBLISHED_DATES[0].replace(day=1), seed=5, bad_rate=0.02
    )
    ctx = lake_context(spark, tmp, tmp / "raw", "lake")
    start_with_deps(ctx, list(PUBLISHED_DATES), "backfill")
    ctx.raw = tmp / "raw"
    return ctx


@pytest.fixture(scope="session")
def day_by_day(spark, published, tmp_path_factory):
    """`published`'s raw files fed day by day to a delta-rs lake (helpers.publish_day_by_day):
    test_end_to_end checks it against `published`, test_engines against delta-spark's lake."""
    from helpers import publish_day_by_day

    return publish_day_by_day(spark, published.raw, tmp_path_factory.mktemp("day-by-day"), "delta-rs")


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory):
    """A raw lake of 50 persons over six days, some lines bad (the crash tests and the cluster)."""
    from helpers import SMALL_START

    from clm_spark.sample.generate import generate

    path = tmp_path_factory.mktemp("small") / "raw"
    generate(path, persons=50, days=6, start=SMALL_START, seed=9, bad_rate=0.03)
    return path


@pytest.fixture(scope="session")
def small_reference(spark, small_raw, tmp_path_factory):
    """The uninterrupted run over `small_raw`: one in-process backfill of its two dates."""
    from helpers import SMALL_DATES, lake_context

    from clm_spark.app import start_with_deps

    ctx = lake_context(spark, tmp_path_factory.mktemp("small-ref"), small_raw, "lake")
    start_with_deps(ctx, list(SMALL_DATES), "backfill")
    return ctx.lake


# Modules whose tests run the pipeline (ingest, refine or publish through the lake): `make test`
# runs them, `make test-fast` (-m "not pipeline") leaves them out.
PIPELINE_MODULES = {
    "test_baseline",
    "test_bench",
    "test_cluster",
    "test_end_to_end",
    "test_engines",
    "test_ingest",
    "test_outputs",
    "test_reliability",
    "test_scenarios",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        uses_a_lake = {"published", "small_reference", "day_by_day"} & set(getattr(item, "fixturenames", ()))
        if module in PIPELINE_MODULES or uses_a_lake or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.pipeline)
