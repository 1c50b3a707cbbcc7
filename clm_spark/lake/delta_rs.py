"""delta-rs engine: Spark writes Parquet in parallel, the driver commits with `deltalake`.

A write goes to `<table>/_staging/<write id>/`, the files are moved into the table's
partition folders, their footers give real stats, and one Delta commit adds them. Files of a
write that fails before its commit are never in the log (so never visible) and are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import time
import uuid
from urllib.parse import unquote

import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Field, Schema, Transaction
from deltalake.transaction import AddAction
from pyspark.sql import DataFrame

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
    partition_value,
)
from clm_spark.lake.stats import file_stats

log = logging.getLogger(__name__)
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(path if "://" in path else f"file://{path}")


class DeltaRsLake(Lake):
    """The Delta log is read and committed with `deltalake`; its storage options come from the path."""

    engine = "delta-rs"

    def __init__(self, spark, root: str, hooks=None, storage_options: dict[str, str] | None = None):
        super().__init__(spark, root, hooks)
        self.options = dict(storage_options or {}) or None

    def _open(self, path: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(path, version=version, storage_options=self.options)

    def _table(self, spec: TableSpec, version: int | None = None) -> DeltaTable | None:
        return self._open(self.path(spec), version) if self.exists(spec) else None

    def exists(self, spec: TableSpec) -> bool:
        return DeltaTable.is_deltatable(self.path(spec), storage_options=self.options)

    def version(self, spec: TableSpec) -> int | None:
        table = self._table(spec)
        return None if table is None else table.version()

    def table_id(self, spec: TableSpec) -> str | None:
        table = self._table(spec)
        return None if table is None else table.metadata().id

    def txn_version(self, spec: TableSpec, app_id: str) -> int | None:
        table = self._table(spec)
        return None if table is None else table.transaction_version(app_id)

    def history(self, spec: TableSpec) -> list[dict]:
        table = self._table(spec)
        return [] if table is None else table.history()

    def vacuum(self, spec: TableSpec, retain_hours: float) -> int:
        table = self._table(spec)
        if table is None:
            return 0
        files = table.vacuum(
            retention_hours=int(retain_hours), dry_run=False, enforce_retention_duration=False, full=True
        )
        table.cleanup_metadata()
        return len(files) + self._clear_staging(spec, retain_hours)

    def _clear_staging(self, spec: TableSpec, retain_hours: float) -> int:
        """Delete `_staging/<write id>` folders older than the retention (a killed run's leftovers)."""
        staging = posixpath.join(self.path(spec), "_staging")
        cutoff_ms = (time.time() - retain_hours * 3600) * 1000
        count = 0
        for entry in self.storage.list_dir(staging):
            if entry.is_dir and entry.mtime_ms <= cutoff_ms:
                folder = posixpath.join(staging, entry.rel)
                count += len(self.storage.list_files(folder))
                self.storage.delete(folder, recursive=True)
        return count

    def create(self, spec: TableSpec) -> None:
        if self.exists(spec):
            return
        DeltaTable.create(
            self.path(spec),
            schema=Schema.from_json(spec.schema.json()),
            partition_by=list(spec.partition_by) or None,
            name=spec.name.replace("/", "_"),
            description=spec.comment,
            configuration=TABLE_PROPERTIES,
            mode="ignore",
            storage_options=self.options,
        )

    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        table = self._table(spec, version)
        if table is None:
            raise LakeError(f"table {spec.name} does not exist under {self.root}")
        files = table.file_uris()
        if not files:
            return self.spark.createDataFrame([], spec.schema)
        reader = self.spark.read.schema(spec.schema).option("basePath", self.path(spec))
        return reader.parquet(*files).select(*spec.columns)

    def append(self, spec: TableSpec, df: DataFrame, *, run_id: str, txn: Txn | None = None) -> WriteResult:
        return self._write(spec, df, mode="append", replace=None, run_id=run_id, txn=txn)

    def _overwrite(
        self, spec: TableSpec, df: DataFrame, replace, run_id: str, txn: Txn | None
    ) -> WriteResult:
        return self._write(spec, df, mode="overwrite", replace=replace, run_id=run_id, txn=txn)

    # -- internals
    def _write(self, spec, df, *, mode, replace, run_id, txn) -> WriteResult:
        assert_schema(spec, df.schema)
        self.create(spec)
        table_path = self.path(spec)
        table = self._open(table_path)
        added = added_columns(spec, _spark_schema(table))
        if added:  # a table of an earlier release: add the new columns (older rows read null)
            table.alter.add_columns([Field.from_json(json.dumps(f.jsonValue())) for f in added])
            log.info("%s: added column(s) %s", spec.name, ", ".join(f.name for f in added))
            table = self._open(table_path)
        if self._skip(spec, txn):
            log.info("%s: write %s already committed, skipped", spec.name, txn)
            return WriteResult(version=table.version(), skipped=True)
        staging = posixpath.join(table_path, "_staging", uuid.uuid4().hex)
        moved: list[str] = []
        fs, _ = _fs(table_path)
        try:
            writer = df.select(*spec.columns).write.mode("errorifexists").options(**WRITE_OPTIONS)
            if spec.partition_by:
                writer = writer.partitionBy(*spec.partition_by)
            writer.parquet(staging)
            actions = self._collect_files(spec, fs, staging, table_path, moved)
            if replace is not None:
                self._check_in_replaced(spec, actions, replace)
            if self.hooks.before_commit:
                self.hooks.before_commit(spec.name)
            props = CommitProperties(
                custom_metadata={"userMetadata": json.dumps({"clm.run_id": run_id}), "clm.run_id": run_id},
                app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
            )
            filters = None
            if replace is not None:
                filters = [(c, "in", [partition_value(v) for v in vals]) for c, vals in replace.items()]
            table.create_write_transaction(
                actions,
                mode=mode,
                schema=Schema.from_json(spec.schema.json()),
                partition_by=list(spec.partition_by) or None,
                partition_filters=filters,
                commit_properties=props,
            )
        except BaseException:
            for path in moved:
                _delete_quietly(fs, path)
            raise
        finally:
            _delete_dir_quietly(fs, staging)
        if self.hooks.after_commit:
            self.hooks.after_commit(spec.name)
        committed = self._open(table_path)
        version = committed.version()
        interval = int(committed.metadata().configuration.get("delta.checkpointInterval", "10"))
        if version % interval == 0:
            committed.create_checkpoint()  # what Spark's Delta does after every tenth commit
        return WriteResult(version=version, files=len(actions))

    def _collect_files(self, spec, fs, staging, table_path, moved) -> list[AddAction]:
        _, staging_fs_path = _fs(staging)
        _, table_fs_path = _fs(table_path)
        selector = pafs.FileSelector(staging_fs_path, recursive=True)
        infos = [
            i
            for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith(("_", "."))
        ]
        actions = []
        now_ms = int(time.time() * 1000)
        for info in sorted(infos, key=lambda i: i.path):
            rel = posixpath.relpath(info.path, staging_fs_path)
            parts = {}
            for segment in posixpath.dirname(rel).split("/"):
                if "=" in segment:
                    key, _, raw = segment.partition("=")
                    parts[unquote(key)] = None if raw == _HIVE_NULL else unquote(raw)
            with fs.open_input_file(info.path) as handle:
                stats, rows = file_stats(handle, spec.columns)
            target = posixpath.join(table_fs_path, rel)
            fs.create_dir(posixpath.dirname(target), recursive=True)
            fs.move(info.path, target)
            moved.append(target)
            actions.append(AddAction(rel, info.size, parts, now_ms, True, stats))
        return actions

    @staticmethod
    def _check_in_replaced(spec, actions, replace) -> None:
        allowed = {c: {partition_value(v) for v in vals} for c, vals in replace.items()}
        for action in actions:
            for col, values in allowed.items():
                if action.partition_values.get(col) not in values:
                    raise LakeError(
                        f"{spec.name}: rows for {col}={action.partition_values.get(col)} "
                        f"are outside the partitions being replaced"
                    )


def _spark_schema(table: DeltaTable):
    from pyspark.sql.types import StructType

    return StructType.fromJson(json.loads(table.schema().to_json()))


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        log.warning("could not delete uncommitted file %s", path)


def _delete_dir_quietly(fs: pafs.FileSystem, uri: str) -> None:
    _, path = _fs(uri)
    with contextlib.suppress(OSError, FileNotFoundError):
        fs.delete_dir(path)
