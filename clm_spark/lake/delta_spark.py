"""delta-spark engine: the Delta Lake JVM connector (format("delta"), DeltaTable)."""

from __future__ import annotations

import json

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clm_spark import compat
from clm_spark.errors import LakeError
from clm_spark.lake.base import (
    TABLE_PROPERTIES,
    WRITE_OPTIONS,
    Lake,
    TableSpec,
    Txn,
    WriteResult,
    added_columns,
    assert_schema,
    replace_predicate,
)


class DeltaSparkLake(Lake):
    """Everything through the session: Delta's JVM API for the log, Hadoop for files."""

    engine = "delta-spark"

    def __init__(self, spark, root: str, hooks=None):
        super().__init__(spark, root, hooks)
        # Delta compares table locations as strings (file:/x vs file:///x): one spelling everywhere
        self.root = self.storage.qualify(self.root).rstrip("/")

    def _table(self, spec: TableSpec):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.path(spec)) if self.exists(spec) else None

    def exists(self, spec: TableSpec) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(spec))

    def version(self, spec: TableSpec) -> int | None:
        if not self.exists(spec):
            return None
        return compat.delta_version_and_id(self.spark, self.path(spec))[0]

    def table_id(self, spec: TableSpec) -> str | None:
        if not self.exists(spec):
            return None
        return compat.delta_version_and_id(self.spark, self.path(spec))[1]

    def txn_version(self, spec: TableSpec, app_id: str) -> int | None:
        if not self.exists(spec):
            return None
        return compat.delta_txn_version(self.spark, self.path(spec), app_id)

    def history(self, spec: TableSpec) -> list[dict]:
        table = self._table(spec)
        if table is None:
            return []
        rows = table.history().select("version", "timestamp", "operation", "userMetadata").collect()
        return [r.asDict() for r in rows]  # one row per commit, newest first

    def vacuum(self, spec: TableSpec, retain_hours: float) -> int:
        table = self._table(spec)
        if table is None:
            return 0
        before = len(self.storage.list_files(self.path(spec)))
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        previous = self.spark.conf.get(check, "true")
        self.spark.conf.set(check, "false")  # the caller has checked the retention (clm vacuum --force)
        try:
            table.vacuum(retain_hours)
        finally:
            self.spark.conf.set(check, previous)
        return max(0, before - len(self.storage.list_files(self.path(spec))))

    def create(self, spec: TableSpec) -> None:
        from delta.tables import DeltaTable

        if self.exists(spec):
            return
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(spec)).comment(spec.comment)
        for f in spec.schema.fields:
            builder = builder.addColumn(
                f.name, f.dataType, nullable=f.nullable, comment=f.metadata.get("comment")
            )
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for key, value in TABLE_PROPERTIES.items():
            builder = builder.property(key, value)
        builder.execute()

    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        if not self.exists(spec):
            raise LakeError(f"table {spec.name} does not exist under {self.root}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(self.path(spec))
        have = set(df.columns)  # a table of an earlier release lacks the newer columns: null
        return df.select(
            *[
                F.col(f.name) if f.name in have else F.lit(None).cast(f.dataType).alias(f.name)
                for f in spec.schema
            ]
        )

    def append(self, spec: TableSpec, df: DataFrame, *, run_id: str, txn: Txn | None = None) -> WriteResult:
        return self._write(spec, df, "append", None, run_id, txn)

    def _overwrite(
        self, spec: TableSpec, df: DataFrame, replace, run_id: str, txn: Txn | None
    ) -> WriteResult:
        return self._write(spec, df, "overwrite", replace_predicate(replace), run_id, txn)

    def _write(self, spec, df, mode, predicate, run_id, txn) -> WriteResult:
        assert_schema(spec, df.schema)
        self.create(spec)
        added = added_columns(spec, self.spark.read.format("delta").load(self.path(spec)).schema)
        if added:  # a table of an earlier release: add the new columns (older rows read null)
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()} COMMENT {_quoted(f)}" for f in added)
            self.spark.sql(f"ALTER TABLE delta.`{self.path(spec)}` ADD COLUMNS ({columns})")
        if self._skip(spec, txn):
            return WriteResult(version=self.version(spec), skipped=True)
        writer = df.select(*spec.columns).write.format("delta").mode(mode).options(**WRITE_OPTIONS)
        writer = writer.option("userMetadata", json.dumps({"clm.run_id": run_id}))
        if predicate:
            writer = writer.option("replaceWhere", predicate)
        if txn:
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        if self.hooks.before_commit:
            self.hooks.before_commit(spec.name)
        writer.save(self.path(spec))
        if self.hooks.after_commit:
            self.hooks.after_commit(spec.name)
        return WriteResult(version=self.version(spec))


def _quoted(field) -> str:
    return "'" + field.metadata.get("comment", "").replace("\\", "\\\\").replace("'", "\\'") + "'"
