"""Console progress of long steps: stage, rows and elapsed time, one log line at each end."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("clm_spark.progress")


@dataclass
class Step:
    name: str
    rows: int | None = None
    started: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def step(name: str) -> Iterator[Step]:
    """Log `name` when it starts and, with its rows (set by the caller) and elapsed time, when it ends."""
    current = Step(name, started=time.monotonic())
    log.info("[%s] started", name)
    try:
        yield current
    except BaseException:
        log.info("[%s] stopped after %.1fs", name, current.elapsed)
        raise
    rows = "" if current.rows is None else f"{current.rows:,} rows, "
    log.info("[%s] done: %s%.1fs", name, rows, current.elapsed)
