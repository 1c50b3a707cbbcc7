"""Retention: VACUUM every table of the lake and clear what dead runs left behind.

Policy (also in the README): a data file that no current table version needs is deleted once it
has been unreferenced for `--retain-hours` (default 168 h = every table's
`delta.deletedFileRetentionDuration`), so time travel to any version of the last 7 days works;
commits older than `delta.logRetentionDuration` (30 days) are dropped from the log after a
checkpoint. Files of a killed run were never committed: they are deleted by the same rule, and so
are its `_staging/<write id>` folders. A current version's files are never deleted.
"""

from __future__ import annotations

import logging
import posixpath
import time

import pyarrow.fs as pafs
from deltalake import DeltaTable

from clm_spark.errors import ConfigError
from clm_spark.tables import ALL_TABLES

log = logging.getLogger(__name__)
MIN_RETAIN_HOURS = 168


def check_retention(retain_hours: float, force: bool) -> None:
    if retain_hours < 0 or (retain_hours < MIN_RETAIN_HOURS and not force):
        raise ConfigError(
            f"--retain-hours {retain_hours:g} is below the tables' {MIN_RETAIN_HOURS} h retention: "
            "time travel and running readers could lose files (add --force to do it anyway)"
        )


def vacuum_lake(root: str, retain_hours: float = MIN_RETAIN_HOURS, force: bool = False) -> dict[str, int]:
    """Delete unreferenced files older than `retain_hours` in every table; returns files removed per table."""
    check_retention(retain_hours, force)
    removed = {}
    for spec in ALL_TABLES:
        path = posixpath.join(root.rstrip("/"), spec.name)
        if not DeltaTable.is_deltatable(path):
            continue
        table = DeltaTable(path)
        files = table.vacuum(
            retention_hours=int(retain_hours), dry_run=False, enforce_retention_duration=False, full=True
        )
        table.cleanup_metadata()
        removed[spec.name] = len(files) + _clear_staging(path, retain_hours)
    log.info("vacuum: %d file(s) removed", sum(removed.values()))
    return removed


def _clear_staging(table_path: str, retain_hours: float) -> int:
    """Delete `_staging/<write id>` folders older than the retention (a killed run's leftovers)."""
    fs, root = pafs.FileSystem.from_uri(table_path if "://" in table_path else f"file://{table_path}")
    staging = f"{root}/_staging"
    if fs.get_file_info(staging).type != pafs.FileType.Directory:
        return 0
    cutoff = time.time() - retain_hours * 3600
    count = 0
    for info in fs.get_file_info(pafs.FileSelector(staging)):
        if (
            info.type == pafs.FileType.Directory
            and info.mtime is not None
            and info.mtime.timestamp() <= cutoff
        ):
            count += len(fs.get_file_info(pafs.FileSelector(info.path, recursive=True)))
            fs.delete_dir(info.path)
    return count
