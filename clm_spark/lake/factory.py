"""Engine selection (lake.engine: auto | delta-spark | delta-rs)."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from clm_spark.errors import ConfigError
from clm_spark.lake.base import Lake, WriteHooks

log = logging.getLogger(__name__)


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the Delta JVM classes are on the classpath (asked through the public API)."""
    try:
        from delta.tables import DeltaTable

        DeltaTable.isDeltaTable(spark, "file:///clm-spark-probe-does-not-exist")
        return True
    except Exception:  # the JVM class is missing: py4j/AnalysisException of various kinds
        return False


def open_lake(
    spark: SparkSession,
    root: str,
    engine: str = "auto",
    hooks: WriteHooks | None = None,
    storage_options: dict[str, str] | None = None,
) -> Lake:
    """Build the lake for `root` with the configured engine; log which one was picked.

    `storage_options` (config `lake.storage_options`) are delta-rs's object-store settings
    (credentials, endpoint); delta-spark uses the session's Hadoop configuration instead.
    """
    if engine == "auto":
        engine = "delta-spark" if delta_spark_available(spark) else "delta-rs"
        log.info("lake.engine auto: using %s", engine)
    if engine == "delta-spark":
        if not delta_spark_available(spark):
            raise ConfigError(
                "config key 'lake.engine': delta-spark needs the Delta connector on the classpath "
                "(spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.1, or CLM_DELTA_JARS)"
            )
        from clm_spark.lake.delta_spark import DeltaSparkLake

        return DeltaSparkLake(spark, root, hooks)
    if engine == "delta-rs":
        from clm_spark.lake.delta_rs import DeltaRsLake  # imports deltalake and pyarrow: only here

        return DeltaRsLake(spark, root, hooks, storage_options)
    raise ConfigError(f"config key 'lake.engine': unknown engine {engine!r}")
