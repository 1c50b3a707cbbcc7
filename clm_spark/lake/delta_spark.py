"""delta-spark engine: the Delta Lake JVM connector (format("delta"), DeltaTable)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame

from clm_spark.errors import LakeError
from clm_spark.lake.base import (
    TABLE_PROPERTIES,
    WRITE_OPTIONS,
    Lake,
    TableSpec,
    Txn,
    WriteResult,
    assert_schema,
    replace_predicate,
)


class DeltaSparkLake(Lake):
    engine = "delta-spark"

    def create(self, spec: TableSpec) -> None:
        from delta.tables import DeltaTable

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
        return reader.load(self.path(spec)).select(*spec.columns)

    def append(self, spec: TableSpec, df: DataFrame, *, run_id: str, txn: Txn | None = None) -> WriteResult:
        return self._write(spec, df, "append", None, run_id, txn)

    def overwrite(
        self,
        spec: TableSpec,
        df: DataFrame,
        *,
        replace: Mapping[str, Sequence],
        run_id: str,
        txn: Txn | None = None,
    ) -> WriteResult:
        if not replace or set(replace) - set(spec.partition_by):
            raise LakeError(f"{spec.name}: overwrite replaces partitions of {spec.partition_by} only")
        return self._write(spec, df, "overwrite", replace_predicate(replace), run_id, txn)

    def _write(self, spec, df, mode, predicate, run_id, txn) -> WriteResult:
        assert_schema(spec, df.schema)
        self.create(spec)
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
