"""Shared test helpers (plain functions; the Spark session itself comes from conftest)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import yaml

from clm_spark.app import Context, load_quality_rules, prepare
from clm_spark.lake import open_lake

# generated data runs 2024-01-01 .. 2024-01-20; the shared `published` lake holds its last three days
PUBLISHED_DATES = (date(2024, 1, 18), date(2024, 1, 19), date(2024, 1, 20))


def write_config(tmp: Path, raw: Path, name: str = "lake", validate: bool = False) -> Path:
    """conf/clm.yaml with the lake under `tmp/name` and the raw feeds under `raw`; returns its path."""
    conf = yaml.safe_load(Path("conf/clm.yaml").read_text())
    conf["lake"] = {"root": str(tmp / name), "engine": "delta-rs"}
    conf["raw"] = {"clickstream": str(raw / "clickstream"), "orders": str(raw / "orders")}
    conf["segments"] = str(Path("conf/segments.yaml").resolve())
    conf["validation"] = {"expectations": str(Path("conf/expectations.yaml").resolve()), "enabled": validate}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def lake_context(spark, tmp: Path, raw: Path, name: str = "lake", validate: bool = False) -> Context:
    """A run context over `raw` with a fresh delta-rs lake, from conf/clm.yaml with paths replaced."""
    cfg, model = prepare(str(write_config(tmp, raw, name, validate)))
    return Context(
        cfg, model, spark, open_lake(spark, cfg.lake.root, "delta-rs"), load_quality_rules(cfg, model)
    )
