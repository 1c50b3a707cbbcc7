"""Retention: VACUUM every table of the lake and clear what dead runs left behind.

Policy (also in the README): a data file that no current table version needs is deleted once it
has been unreferenced for `--retain-hours` (default 168 h = every table's
`delta.deletedFileRetentionDuration`), so time travel to any version of the last 7 days works;
commits older than `delta.logRetentionDuration` (30 days) are dropped from the log after a
checkpoint. Files of a killed run were never committed: they are deleted by the same rule, and so
are its `_staging/<write id>` folders (delta-rs). A current version's files are never deleted.
"""

from __future__ import annotations

import logging

from clm_spark.errors import ConfigError
from clm_spark.lake import Lake
from clm_spark.tables import ALL_TABLES

log = logging.getLogger(__name__)
MIN_RETAIN_HOURS = 168


def check_retention(retain_hours: float, force: bool) -> None:
    if retain_hours < 0 or (retain_hours < MIN_RETAIN_HOURS and not force):
        raise ConfigError(
            f"--retain-hours {retain_hours:g} is below the tables' {MIN_RETAIN_HOURS} h retention: "
            "time travel and running readers could lose files (add --force to do it anyway)"
        )


def vacuum_lake(lake: Lake, retain_hours: float = MIN_RETAIN_HOURS, force: bool = False) -> dict[str, int]:
    """Delete unreferenced files older than `retain_hours` in every table; returns files removed per table."""
    check_retention(retain_hours, force)
    removed = {spec.name: lake.vacuum(spec, retain_hours) for spec in ALL_TABLES if lake.exists(spec)}
    log.info("vacuum: %d file(s) removed", sum(removed.values()))
    return removed
