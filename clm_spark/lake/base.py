"""The lake interface shared by both Delta engines."""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from clm_spark.errors import LakeError
from clm_spark.storage import Storage


@dataclass(frozen=True)
class TableSpec:
    """A published table: its place under lake.root, declared schema, partitioning and comment.

    Column comments live in each StructField's metadata under "comment".
    """

    name: str
    schema: StructType
    comment: str
    partition_by: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


# Table properties every table is created with: a checkpoint every 10 commits (as Spark's Delta
# does by default; delta-rs alone would wait for 100) so readers replay short logs, and the
# retention windows written out explicitly so time travel and VACUUM behave the same everywhere.
TABLE_PROPERTIES = {
    "delta.checkpointInterval": "10",
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}
# Parquet row groups of at most 16 MiB (uncompressed) let a reader split even one big file across
# many tasks; with Spark's 128 MiB default a whole bronze batch could land in one or two tasks.
WRITE_OPTIONS = {"parquet.block.size": str(16 << 20)}


@dataclass(frozen=True)
class Txn:
    """An idempotency key: a write whose (app_id, version) the table already holds is a no-op."""

    app_id: str
    version: int


@dataclass(frozen=True)
class WriteResult:
    version: int | None
    skipped: bool = False
    files: int = 0


@dataclass
class WriteHooks:
    """Test seams for fault injection: called with the table name just before / after the commit."""

    before_commit: Callable[[str], None] | None = None
    after_commit: Callable[[str], None] | None = None


def _sig(schema: StructType) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def assert_schema(spec: TableSpec, actual: StructType, what: str = "data") -> None:
    """Refuse a write whose columns or types differ from the declared schema."""
    if _sig(actual) != _sig(spec.schema):
        want, got = dict(_sig(spec.schema)), dict(_sig(actual))
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise LakeError(f"{spec.name}: {what} schema differs from the declared schema: {diff[:4]}")


def added_columns(spec: TableSpec, actual: StructType) -> list:
    """The declared columns a table written by an earlier release lacks: the table's columns must be
    the declared ones' beginning (new columns are only ever appended); anything else is refused."""
    have, want = _sig(actual), _sig(spec.schema)
    if want[: len(have)] != have:
        assert_schema(spec, actual, what="table")
    return spec.schema.fields[len(have) :]


def replace_predicate(replace: Mapping[str, Sequence]) -> str:
    """A SQL predicate over partition columns, e.g. snapshot_date IN ('2024-01-01')."""
    parts = []
    for col, values in replace.items():
        literals = ", ".join(_sql_literal(v) for v in values)
        parts.append(f"{col} IN ({literals})")
    return " AND ".join(parts)


def partition_value(value) -> str:
    """How Delta stores a partition value as text."""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _sql_literal(value) -> str:
    if isinstance(value, date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Lake(ABC):
    """Every Delta read and write of clm-spark goes through this interface."""

    engine: str = ""

    def __init__(self, spark: SparkSession, root: str, hooks: WriteHooks | None = None):
        self.spark = spark
        self.root = root.rstrip("/")
        self.hooks = hooks or WriteHooks()
        self.storage = Storage(spark)  # every other file the driver touches goes through Spark

    def path(self, spec: TableSpec | str) -> str:
        name = spec.name if isinstance(spec, TableSpec) else spec
        if name.startswith("/") or ".." in name.split("/"):
            raise LakeError(f"table name {name!r} would escape lake.root")
        return posixpath.join(self.root, name)

    def commit_metadata(self, spec: TableSpec, version: int) -> dict:
        """The custom metadata (run id...) stored with one commit."""
        for entry in self.history(spec):
            if entry.get("version") == version:
                meta = entry.get("userMetadata")
                if isinstance(meta, str):
                    try:
                        return json.loads(meta)
                    except ValueError:
                        return {"userMetadata": meta}
                return {k: v for k, v in entry.items() if k.startswith("clm.")}
        return {}

    def read_or_empty(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        if not self.exists(spec):
            return self.spark.createDataFrame([], spec.schema)
        return self.read(spec, version)

    def _skip(self, spec: TableSpec, txn: Txn | None) -> bool:
        if txn is None:
            return False
        done = self.txn_version(spec, txn.app_id)
        return done is not None and done >= txn.version

    # -- engine-specific: the Delta log
    @abstractmethod
    def exists(self, spec: TableSpec) -> bool:
        """True when the table's Delta log exists."""

    @abstractmethod
    def version(self, spec: TableSpec) -> int | None:
        """The table's current version, None when it does not exist."""

    @abstractmethod
    def table_id(self, spec: TableSpec) -> str | None:
        """The id Delta gives a table when it is created (a table made again gets a new one)."""

    @abstractmethod
    def txn_version(self, spec: TableSpec, app_id: str) -> int | None:
        """The latest version recorded for the idempotency key `app_id`, None when never written."""

    @abstractmethod
    def history(self, spec: TableSpec) -> list[dict]:
        """The table's commits, newest first: version, timestamp, operation, userMetadata..."""

    @abstractmethod
    def vacuum(self, spec: TableSpec, retain_hours: float) -> int:
        """Delete files no version of the last `retain_hours` needs; returns how many were deleted."""

    # -- engine-specific: data
    @abstractmethod
    def create(self, spec: TableSpec) -> None:
        """Create the table (schema, partitioning, comments) if it does not exist yet."""

    @abstractmethod
    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        """The current snapshot, or a past version, as a DataFrame with the declared columns."""

    @abstractmethod
    def append(self, spec: TableSpec, df: DataFrame, *, run_id: str, txn: Txn | None = None) -> WriteResult:
        """Append rows in one commit."""

    def overwrite(
        self,
        spec: TableSpec,
        df: DataFrame,
        *,
        replace: Mapping[str, Sequence],
        run_id: str,
        txn: Txn | None = None,
    ) -> WriteResult:
        """Atomically replace the partitions listed in `replace` ({column: values}) with `df`.

        Only partition columns may be named: a whole-table or row-level replace is refused here,
        once for both engines, before anything is written.
        """
        if not replace or set(replace) - set(spec.partition_by):
            raise LakeError(f"{spec.name}: overwrite replaces partitions of {spec.partition_by} only")
        return self._overwrite(spec, df, replace, run_id, txn)

    @abstractmethod
    def _overwrite(
        self, spec: TableSpec, df: DataFrame, replace: Mapping[str, Sequence], run_id: str, txn: Txn | None
    ) -> WriteResult:
        """The engine's partition overwrite (arguments checked by `overwrite`)."""
