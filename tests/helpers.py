"""Shared test helpers (plain functions; the Spark session itself comes from conftest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import yaml

from clm_spark.app import Context, load_quality_rules, prepare
from clm_spark.lake import open_lake

# generated data runs 2024-01-01 .. 2024-01-20; the shared `published` lake holds its last three days
PUBLISHED_DATES = (date(2024, 1, 18), date(2024, 1, 19), date(2024, 1, 20))
# the small raw lake (50 persons, 2024-03-01 .. 2024-03-06) and the two dates its reference publishes
SMALL_START = date(2024, 3, 1)
SMALL_DATES = (date(2024, 3, 5), date(2024, 3, 6))
# JVM options of the tests' own short-lived Spark processes (spark-submit, `clm` subprocesses): a
# fresh JVM on a few hundred rows finishes before C2's optimised code pays for its compiling
COLD_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
# Spark settings of every test JVM (the session, `clm` subprocesses, the cluster's driver): on a few
# hundred rows, adaptive re-planning and compiled code cost more than they save. A plan carries its
# run's dates and bounds as literals, so the code generated for it is new on every run and each task
# generates and compiles it again (Delta's log replay after each commit too); "NO_CODEGEN" is
# Spark's internal switch for its own tests: expressions interpreted, never compiled. The product
# keeps Spark's defaults; test_scenarios runs one golden scenario under them.
SMALL_DATA_CONF = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


def write_config(
    tmp: Path,
    raw: Path,
    name: str = "lake",
    validate: bool = False,
    engine: str = "delta-rs",
    uris: bool = False,
    spark_conf: dict | None = None,
) -> Path:
    """conf/clm.yaml with the lake under `tmp/name` and the raw feeds under `raw`; returns its path.

    `uris` spells lake.root and raw.* as file:/// URIs instead of plain paths.
    """
    conf = yaml.safe_load(Path("conf/clm.yaml").read_text())
    spell = (lambda p: Path(p).resolve().as_uri()) if uris else str
    conf["lake"] = {"root": spell(tmp / name), "engine": engine}
    conf["raw"] = {"clickstream": spell(raw / "clickstream"), "orders": spell(raw / "orders")}
    conf["spark"] = dict(spark_conf or {})
    conf["segments"] = str(Path("conf/segments.yaml").resolve())
    conf["validation"] = {"expectations": str(Path("conf/expectations.yaml").resolve()), "enabled": validate}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def lake_context(
    spark, tmp: Path, raw: Path, name: str = "lake", validate: bool = False, engine: str = "delta-rs"
) -> Context:
    """A run context over `raw` with a fresh lake of `engine`, from conf/clm.yaml with paths replaced."""
    return context_of(spark, write_config(tmp, raw, name, validate, engine), engine)


def context_of(spark, config: Path, engine: str = "delta-rs", lake=None) -> Context:
    """A run context from a config file, on its lake (or on `lake`, an open one of the same root)."""
    cfg, model = prepare(str(config))
    lake = lake or open_lake(spark, cfg.lake.root, engine)
    return Context(cfg, model, spark, lake, load_quality_rules(cfg, model))


def kpis_without_orders(spark, current, previous, prev_of, matrix, model):
    """gold/lifecycle_kpis of hand-built snapshots that have no order rows behind them."""
    from clm_spark.lifecycle.kpis import build_kpis, customer_facts

    orders = spark.createDataFrame(
        [], "snapshot_date date, customer_id string, order_date date, amount_base decimal(18,2)"
    )
    links = spark.createDataFrame([], "snapshot_date date, anonymous_id string, customer_id string")
    customers = customer_facts(current, orders)
    return build_kpis(spark, current, previous, prev_of, matrix, customers, links, model, 90)


# held back on the first delivery of the day-by-day lake: its files arrive with the next day's
LATE_DAY = date(2024, 1, 10)


@dataclass
class DayByDay:
    """A lake fed day by day (`publish_day_by_day`) and what its runs did."""

    ctx: Context
    used_state: list[bool] = field(default_factory=list)  # each snapshot computation read the state
    versions: list[dict[str, int | None]] = field(default_factory=list)  # every table's, after each step


def publish_day_by_day(spark, raw: Path, tmp: Path, engine: str) -> DayByDay:
    """The raw files of `published` delivered as a shop delivers them, to a fresh lake of `engine`:

    1. the files up to D1 but those of LATE_DAY, a backfill of D1 - 1 and D1;
    2. the files up to D2, the late ones with them: a daily run of D2 on the carried state;
    3. the files up to D3: a daily run of D3 on the carried state;
    4. a re-run of D1, an earlier date: from silver alone, recomputing D2's movement.
    Validation is off (the gate is tested elsewhere).
    """
    import pytest

    from benchmarks.run import deliver
    from clm_spark import pipeline
    from clm_spark.app import start_with_deps
    from clm_spark.tables import ALL_TABLES

    d1, d2, d3 = PUBLISHED_DATES
    landing = tmp / f"landing-{engine}"
    result = DayByDay(lake_context(spark, tmp, landing, f"day-by-day-{engine}", engine=engine))
    real = pipeline.pair_activity

    def pair_activity(events, dates, state=None):
        result.used_state.append(state is not None)
        return real(events, dates, state)

    def step(dates, job, delivered):
        deliver(raw, landing, delivered)
        start_with_deps(result.ctx, dates, job)
        result.versions.append({t.name: result.ctx.lake.version(t) for t in ALL_TABLES})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "pair_activity", pair_activity)
        step([d1 - timedelta(days=1), d1], "backfill", lambda day: day <= d1 and day != LATE_DAY)
        step([d2], "run", lambda day: day <= d2)
        step([d3], "run", lambda day: day <= d3)
        step([d1], "run", lambda day: day <= d3)
    return result
