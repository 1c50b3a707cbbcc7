"""Spark session factory: embedded local Spark by default, cluster settings kept under spark-submit."""

from __future__ import annotations

import logging
import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Settings every clm job needs, whatever the master: UTC days, Parquet readable by any Delta reader.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}
# Sensible defaults for an embedded local run; a cluster's own values win.
LOCAL_DEFAULTS = {
    "spark.sql.shuffle.partitions": "8",
    # split file scans into at least 8 tasks (the default is one per core): CPU-heavy parsing of a
    # bronze batch then balances across the cores instead of waiting on one large split
    "spark.sql.files.minPartitionNum": "8",
    "spark.ui.showConsoleProgress": "false",
    # the snapshot groups 52M events by ~1.6M visitor ids at 10x: the small first-level hash map
    # overflows at once and every row pays for both maps (docs/performance.md has the figures)
    "spark.sql.codegen.aggregate.map.twolevel.enabled": "false",
    "spark.driver.memory": "4g",
    # Delta (delta-spark) rebuilds a table's state from its log in this many tasks (default 50):
    # on one machine a few are enough, and each small write no longer waits for 50 tiny tasks
    "spark.databricks.delta.snapshotPartitions": "4",
}
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def build_session(app_name: str = "clm-spark", extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Return the active session, or build one.

    Under spark-submit the master and confs given there are kept; otherwise an embedded
    `local[*]` session is built. `extra_conf` (config `spark.*`) is applied on top, and
    `CLM_DELTA_JARS` (comma-separated jar paths) puts the Delta connector on the classpath.
    """
    # spark-submit (or a notebook's running context) owns the master and confs; PYSPARK_GATEWAY_PORT
    # is how spark-submit hands its JVM to this Python process. Attach to that JVM first: a
    # SparkConf built before it is empty and knows nothing of spark-submit's --master / --conf.
    # An embedded run must not start the JVM here: spark.driver.memory only counts at JVM launch.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._active_spark_context is not None
    if submitted:
        SparkContext._ensure_initialized()
    conf = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        # embedded run: Python workers use this interpreter (and its installed packages)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master("local[*]")
        for key, value in LOCAL_DEFAULTS.items():
            if not conf.contains(key):
                builder = builder.config(key, value)
    jars = os.environ.get("CLM_DELTA_JARS")
    if jars:
        builder = builder.config("spark.jars", jars)
        for key, value in DELTA_CONF.items():
            builder = builder.config(key, value)
    for key, value in {**REQUIRED_CONF, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in {**REQUIRED_CONF, **(extra_conf or {})}.items():
        try:
            spark.conf.set(key, value)
        except Exception:  # static confs of an existing session cannot change at runtime
            log.debug("could not set %s on the running session", key)
    log.info("spark %s, master %s", spark.version, spark.conf.get("spark.master", "?"))
    return spark
