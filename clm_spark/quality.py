"""Quality gate: expectations from conf/expectations.yaml, validated with Great Expectations.

Gold DataFrames of a date are validated before anything is written; a critical failure raises
ValidationFailed and nothing is published. Result format BASIC: counts and a few examples,
never whole tables on the driver.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clm_spark import compat
from clm_spark.errors import ConfigError
from clm_spark.lifecycle.kpis import under_following_date
from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import (
    AUDIENCE_CHANGES,
    CUSTOMER_SNAPSHOT,
    LIFECYCLE_KPIS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
)

log = logging.getLogger(__name__)
SEVERITIES = ("critical", "warning")


@dataclass(frozen=True)
class Check:
    table: str
    type: str
    kwargs: dict
    severity: str


@dataclass
class CheckResult:
    check: Check
    success: bool
    unexpected: int | None
    observed: object = None


@dataclass
class ValidationReport:
    results: list[CheckResult] = field(default_factory=list)

    @property
    def critical_failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.check.severity == "critical"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.check.severity == "warning"]

    def summary(self) -> str:
        failed = self.critical_failures
        status = "failed" if failed else "passed"
        text = f"{status}: {len(self.results) - len(failed) - len(self.warnings)}/{len(self.results)} checks passed"
        text += f", {len(failed)} critical, {len(self.warnings)} warnings"
        if failed:
            first = failed[0].check
            text += f"; first: {first.table} {first.type} {_target(first)}"
        return text


def _target(check: Check) -> str:
    for key in ("column", "column_list", "column_A"):
        if key in check.kwargs:
            return f"({key}={check.kwargs[key]})"
    return ""


@dataclass(frozen=True)
class Rules:
    derive: dict[str, dict[str, str]]
    checks: dict[str, list[Check]]


def load_rules(path: str, model: SegmentModel, control_share: float = 0.05) -> Rules:
    """Read the expectations file, filling the placeholders from the segment model and the config."""
    text = Path(path).read_text(encoding="utf-8")
    values = {
        "score_bins": str(model.score_bins),
        "segment_count": str(len(model.rules)),
        "control_share": repr(float(control_share)),
    }
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    raw = yaml.safe_load(text) or {}
    lists = {
        "${segments}": model.ids,
        "${stages}": list(model.stages),
        "${segment_stage_pairs}": [[r.id, r.stage] for r in model.rules],
    }
    derive, checks = {}, {}
    for table, spec in raw.items():
        if not isinstance(spec, dict) or set(spec) - {"derive", "expect"}:
            raise ConfigError(f"expectations '{table}': only 'derive' and 'expect' are allowed")
        derive[table] = dict(spec.get("derive") or {})
        checks[table] = []
        for item in spec.get("expect") or []:
            item = dict(item)
            kind, severity = item.pop("type", None), item.pop("severity", "critical")
            if severity not in SEVERITIES:
                raise ConfigError(
                    f"expectations '{table}': severity must be critical or warning, got {severity!r}"
                )
            _expectation_class(kind, table)
            kwargs = {k: (lists[v] if isinstance(v, str) and v in lists else v) for k, v in item.items()}
            if kind == "expect_table_row_count_to_equal":
                kwargs["value"] = int(kwargs["value"])
            if "value_pairs_set" in kwargs:
                kwargs["value_pairs_set"] = [tuple(p) for p in kwargs["value_pairs_set"]]
            checks[table].append(Check(table, kind, kwargs, severity))
    return Rules(derive, checks)


def _expectation_class(kind: str, table: str):
    import great_expectations.expectations as gxe

    name = "".join(part.capitalize() for part in str(kind).split("_"))
    cls = getattr(gxe, name, None)
    if cls is None:
        raise ConfigError(f"expectations '{table}': unknown expectation type {kind!r}")
    return cls


class GxValidator:
    """One ephemeral, offline GX context per process (created on first use, never at import)."""

    _instance: GxValidator | None = None

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        # frames arrive materialised (see validate_frames): GX's own persist would be a second copy
        self.source = self.ctx.data_sources.add_spark("clm", persist=False)
        self.batches: dict[str, object] = {}

    @classmethod
    def get(cls) -> GxValidator:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def validate(self, table: str, df: DataFrame, checks: list[Check]) -> list[CheckResult]:
        if table not in self.batches:
            asset = self.source.add_dataframe_asset(table.replace("/", "__"))
            self.batches[table] = asset.add_batch_definition_whole_dataframe("whole")
        suite = self.gx.ExpectationSuite(name=f"{table}-{uuid.uuid4().hex[:8]}")
        for i, check in enumerate(checks):  # GX may reorder results: tag each with its index
            suite.add_expectation(
                _expectation_class(check.type, table)(**check.kwargs, meta={"clm_index": i})
            )
        batch = self.batches[table].get_batch(batch_parameters={"dataframe": df})
        # counts only: no sample of unexpected values, which costs one more scan per expectation
        # (a limit that finds nothing reads the whole frame) and is not reported
        result = batch.validate(
            suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0}
        )
        out: list[CheckResult | None] = [None] * len(checks)
        for res in result.results:
            i = int(res.expectation_config.meta["clm_index"])
            details = res.result or {}
            out[i] = CheckResult(
                checks[i], bool(res.success), details.get("unexpected_count"), details.get("observed_value")
            )
        missing = [checks[i].type for i, r in enumerate(out) if r is None]
        if missing:
            raise RuntimeError(f"{table}: no result for expectations {missing}")
        return out


def validate_frames(frames: dict[str, DataFrame], rules: Rules, checkpoint: bool = True) -> ValidationReport:
    """Validate each named DataFrame with its derived columns and expectations.

    GX runs dozens of small queries per table. With `checkpoint` each frame is first computed once
    and cut from its lineage, so each query is planned in milliseconds instead of re-analysing
    (and, for an uncached frame, recomputing) the whole snapshot plan; the copy is freed after.
    Callers whose frames are cached with a short plan (refine) pass False and skip the copy.
    """
    report = ValidationReport()
    validator = GxValidator.get()
    for table, df in frames.items():
        checks = rules.checks.get(table) or []
        if not checks:
            continue
        started = time.perf_counter()
        derived = df.select(
            "*", *[F.expr(sql).alias(name) for name, sql in rules.derive.get(table, {}).items()]
        )
        if checkpoint:
            derived = derived.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
        try:
            report.results += validator.validate(table, derived, checks)
        finally:
            if checkpoint:
                _drop_checkpoint(derived)
        log.info("validated %s: %d checks in %.1fs", table, len(checks), time.perf_counter() - started)
    return report


def _drop_checkpoint(df: DataFrame) -> None:
    """Free a local checkpoint's blocks now instead of whenever Spark's cleaner next runs.

    PySpark has no public call for it: the checkpointed RDD sits under the frame's logical plan
    (classic Spark). Elsewhere (Spark Connect) the cleaner frees it once the frame is dropped.
    """
    if not compat.free_local_checkpoint(df):
        log.debug("local checkpoint left to Spark's cleaner")


def require_passing(frames: dict[str, DataFrame], rules: Rules, what: str) -> ValidationReport:
    """Validate and raise ValidationFailed on a critical failure (refine: no report kept).

    The frames must be cached (refine's are): they are validated in place, without a copy.
    """
    from clm_spark.errors import ValidationFailed

    report = validate_frames(frames, rules, checkpoint=False)
    if report.critical_failures:
        raise ValidationFailed(f"{', '.join(frames)} {what}: {report.summary()}")
    for warning in report.warnings:
        log.warning("validation warning: %s %s", warning.check.table, warning.check.type)
    return report


def reconciliation(
    outputs: Mapping[str, DataFrame],
    previous: DataFrame,
    prev_of: Mapping[date, date | None],
    segment_pairs: DataFrame,
    input_rows: int,
) -> DataFrame:
    """One row of cross-table totals per snapshot date: summary and matrix must add up to the
    populations, the audience changes to the transitions, the KPI scopes to the whole; the
    control group's size and who left or joined it since the previous date.

    `outputs` are the gold frames by table name; `previous` holds the rows of each date's previous
    snapshot (`prev_of`) under their own date; `segment_pairs` is the full join of the two
    snapshots (`transitions.segment_pairs`, carrying is_control).
    """
    snapshot, summary = outputs[CUSTOMER_SNAPSHOT.name], outputs[SEGMENT_SUMMARY.name]
    matrix, kpis = outputs[SEGMENT_TRANSITION_MATRIX.name], outputs[LIFECYCLE_KPIS.name]
    transitions, audience = outputs[SEGMENT_TRANSITIONS.name], outputs[AUDIENCE_CHANGES.name]
    spark = snapshot.sparkSession
    one = F.lit(1)
    was, now = F.col("from_is_control"), F.col("to_is_control")
    # Each frame gives per-row contributions (1, a flag, an amount) under its date; one aggregation
    # sums them all, so the gold frames are not joined (and shuffled) once per total.
    contributions = [
        spark.createDataFrame([(d,) for d in prev_of], "snapshot_date date"),  # every date, even empty
        snapshot.select(
            "snapshot_date",
            one.alias("snapshot_persons"),
            F.when(F.col("is_control"), 1).alias("control_persons"),
        ),
        segment_pairs.select(  # a person on one date only, or a null flag (older rows), never counts
            "snapshot_date",
            F.when(was & ~now, 1).alias("control_left"),
            F.when(~was & now, 1).alias("control_joined"),
        ),
        transitions.select("snapshot_date", one.alias("transitions_rows")),
        audience.select("snapshot_date", one.alias("audience_rows")),
        kpis.select(
            "snapshot_date",
            *[
                F.when(F.col("scope_type") == kind, F.col(column)).alias(f"kpi_{kind}_{column}")
                for kind in ("all", "stage", "segment")
                for column in ("population", "revenue_365d")
            ],
        ),
        summary.select("snapshot_date", F.col("persons").alias("summary_persons"), one.alias("summary_rows")),
        matrix.select(
            "snapshot_date",
            F.when(F.col("to_segment").isNotNull(), F.col("persons")).alias("matrix_to_persons"),
            F.when(F.col("from_segment").isNotNull(), F.col("persons")).alias("matrix_from_persons"),
        ),
        under_following_date(previous, prev_of).select("snapshot_date", one.alias("previous_persons")),
    ]
    rows = contributions[0]
    for part in contributions[1:]:
        rows = rows.unionByName(part, allowMissingColumns=True)
    totals = [
        "snapshot_persons",
        "summary_persons",
        "summary_rows",
        "matrix_to_persons",
        "matrix_from_persons",
        "transitions_rows",
        "audience_rows",
        "control_persons",
        "control_left",
        "control_joined",
        *[f"kpi_{kind}_population" for kind in ("all", "stage", "segment")],
        "previous_persons",
    ]
    revenue = [f"kpi_{kind}_revenue_365d" for kind in ("all", "stage", "segment")]
    return (
        rows.filter(F.col("snapshot_date").isin(*prev_of))
        .groupBy("snapshot_date")
        .agg(*[F.sum(c).alias(c) for c in [*totals, *revenue]])
        .select(
            "snapshot_date",
            *[F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c) for c in totals],
            F.lit(input_rows).cast("long").alias("input_rows"),
            *[F.coalesce(F.col(c), F.lit(0)).cast("decimal(20,2)").alias(c) for c in revenue],
        )
    )
