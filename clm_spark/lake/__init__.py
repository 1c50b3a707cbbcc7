"""One small interface for every Delta read and write, with two engines (SPEC §1).

- `delta-spark`: the Delta Lake JVM connector (clusters, Databricks).
- `delta-rs`: Spark writes Parquet in parallel; the driver commits with the `deltalake` package.
"""

from clm_spark.lake.base import Lake, TableSpec, Txn, WriteHooks, WriteResult
from clm_spark.lake.factory import delta_spark_available, open_lake

__all__ = [
    "Lake",
    "TableSpec",
    "Txn",
    "WriteHooks",
    "WriteResult",
    "delta_spark_available",
    "open_lake",
]
