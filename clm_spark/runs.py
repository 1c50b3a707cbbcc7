"""meta/pipeline_runs: one row per job run, successful or not."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from clm_spark.lake import Lake
from clm_spark.tables import PIPELINE_RUNS


def new_run_id(job: str) -> str:
    return f"{job}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunRecord:
    run_id: str
    job: str
    started_at: datetime
    engine: str
    snapshot_dates: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    validation: str = "not run"
    table_versions: dict = field(default_factory=dict)
    status: str = "running"
    error: str | None = None

    def write(self, lake: Lake) -> None:
        row = (
            self.run_id,
            self.job,
            ",".join(str(d) for d in self.snapshot_dates),
            self.started_at.replace(tzinfo=None),
            datetime.now(UTC).replace(tzinfo=None),
            self.status,
            self.engine,
            json.dumps(self.counts, sort_keys=True, default=str),
            self.validation,
            json.dumps(self.table_versions, sort_keys=True),
            self.error,
        )
        df = lake.spark.createDataFrame([row], PIPELINE_RUNS.schema)
        lake.append(PIPELINE_RUNS, df, run_id=self.run_id)
