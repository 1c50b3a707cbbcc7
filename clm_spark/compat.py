"""The one place that reaches into classic Spark's JVM handles (`_jvm`, `_jsc`, `_jdf`).

PySpark has no public API for the Hadoop FileSystem of the session, for Delta's app-transaction
versions, or for freeing a local checkpoint. Each helper here says what it needs; under Spark
Connect (no JVM in the driver process) they raise `ClassicSparkRequired` naming the feature, or
do nothing where skipping is harmless.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from clm_spark.errors import ClmError

if TYPE_CHECKING:  # importing this module must not import pyspark (the generator runs without it)
    from pyspark.sql import DataFrame, SparkSession


class ClassicSparkRequired(ClmError):
    """The feature needs a classic (non-Connect) Spark driver."""


def jvm_gateway_open() -> bool:
    """True when this process talks to a Spark JVM through py4j (a forked child must not)."""
    context = getattr(sys.modules.get("pyspark"), "SparkContext", None)
    return getattr(context, "_gateway", None) is not None


def set_log_level(spark: SparkSession, level: str) -> None:
    """Spark's own log level (classic Spark; Spark Connect servers keep theirs)."""
    if is_classic(spark):
        spark.sparkContext.setLogLevel(level)


def is_classic(spark: SparkSession) -> bool:
    """False under Spark Connect, where the driver process has no JVM."""
    return getattr(spark, "_jsparkSession", None) is not None


def _jvm_and_session(spark: SparkSession, feature: str):
    if not is_classic(spark):
        raise ClassicSparkRequired(f"{feature} needs classic Spark (spark-submit), not Spark Connect")
    return spark.sparkContext._jvm, spark._jsparkSession


def hadoop_file_system(spark: SparkSession, uri: str):
    """(Hadoop FileSystem, qualified Path) for `uri` with the session's Hadoop configuration.

    This is how the driver reaches any storage the cluster's Spark can: hdfs://, s3a://, abfss://,
    gs://, file:// with the cluster's credentials.
    """
    jvm, _ = _jvm_and_session(spark, "storage access")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(conf)
    return fs, fs.makeQualified(path)


def read_all_bytes(spark: SparkSession, stream) -> bytes:
    """Every byte of a Java InputStream (closed afterwards)."""
    jvm, _ = _jvm_and_session(spark, "storage access")
    try:
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def _delta_snapshot(spark: SparkSession, table_path: str, feature: str):
    """The table's latest snapshot, read from its log in the driver (no Spark job)."""
    jvm, session = _jvm_and_session(spark, feature)
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(session, table_path)
    return log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())


def delta_version_and_id(spark: SparkSession, table_path: str) -> tuple[int, str]:
    """(current version, table id) of a Delta table; `DeltaTable.history(1)` would run a Spark job."""
    snapshot = _delta_snapshot(spark, table_path, "Delta table versions")
    return int(snapshot.version()), str(snapshot.metadata().id())


def delta_txn_version(spark: SparkSession, table_path: str, app_id: str) -> int | None:
    """The latest version Delta recorded for the app transaction `app_id` (idempotent writes), or None."""
    found = _delta_snapshot(spark, table_path, "Delta idempotency keys").transactions().get(app_id)
    return None if found.isEmpty() else int(found.get())


def free_local_checkpoint(df: DataFrame) -> bool:
    """Unpersist the blocks of a locally checkpointed frame now; False where that is not possible."""
    try:
        df._jdf.queryExecution().logical().rdd().unpersist(False)
        return True
    except Exception:  # not classic Spark: Spark's cleaner frees it once the frame is dropped
        return False
