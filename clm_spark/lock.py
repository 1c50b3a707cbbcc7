"""One run at a time per lake: an exclusive lock on `<lake.root>/_locks/lake.lock`.

Runs share the lake (ingest batches, the next-date recomputation), so they are serialised:
- a run whose dates overlap the running one's fails at once, cleanly (it would only redo them);
- a run for other dates waits up to `lake.lock_wait_seconds`, then goes on or fails cleanly.
`lake.lock` chooses the mechanism:
- `file`: an OS file lock (flock) on `<lake.root>/_locks/lake.lock`. The kernel releases it when
  the holder exits or is killed, so a crashed run never leaves a stale lock. It covers runs on one
  host, or on one shared POSIX file system with working flock.
- `none`: no lock. Object stores (s3a://, abfss://, gs://) have no such lock; the scheduler must
  run one job per lake at a time (Airflow `max_active_runs=1`, Databricks `max_concurrent_runs:
  1`, as our deploy examples do). Each Delta commit is still atomic, and a second writer of the
  same table fails on Delta's conflict check instead of overwriting silently.
- `auto` (default): `file` for a local or file:// lake.root, `none` (with a warning) otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from clm_spark.errors import ClmError

log = logging.getLogger(__name__)


class LakeBusy(ClmError):
    """Another run holds the lake."""


def _local_root(root: str) -> Path | None:
    if root.startswith("file://"):
        return Path(root.removeprefix("file://"))
    return None if "://" in root else Path(root)


def _holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    return {}


@contextlib.contextmanager
def lake_lock(
    root: str, run_id: str, dates: list[date], wait_seconds: float, mode: str = "auto"
) -> Iterator[None]:
    local = _local_root(root) if mode != "none" else None
    if local is None:
        if mode == "auto":
            log.warning("lake.root %s has no file locks: the scheduler must run one job at a time", root)
        yield
        return
    folder = local / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "lake.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                busy = f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
                overlap = sorted(set(holder.get("dates", [])) & {d.isoformat() for d in dates})
                if overlap:
                    raise LakeBusy(
                        f"{busy} is already publishing {', '.join(overlap)}; not starting a second run"
                    ) from None
                if time.monotonic() >= deadline:
                    raise LakeBusy(
                        f"{busy} still holds the lake after {wait_seconds:g}s (lake.lock_wait_seconds)"
                    ) from None
                if not waited:
                    log.info("waiting for %s to finish (up to %gs)", busy, wait_seconds)
                    waited = True
                time.sleep(0.5)
        info = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "dates": [d.isoformat() for d in dates],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
