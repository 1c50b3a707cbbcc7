"""Config: YAML + ${ENV}, typed, validated with one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clm_spark.config import load_config, parse_date
from clm_spark.errors import ConfigError

BASE = """
lake:
  root: ${LAKE_DIR}/lake
raw: {clickstream: raw/clickstream, orders: raw/orders}
currency: {base: EUR, rates: {EUR: 1, USD: 0.9234}}
segments: segments.yaml
validation: {expectations: expectations.yaml}
"""


@pytest.fixture
def conf_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_DIR", str(tmp_path))
    (tmp_path / "segments.yaml").write_text("{}")
    (tmp_path / "expectations.yaml").write_text("{}")
    return tmp_path


def _write(conf_dir: Path, text: str) -> Path:
    path = conf_dir / "clm.yaml"
    path.write_text(text)
    return path


def test_loads_defaults_env_and_exact_decimal_rates(conf_dir):
    cfg = load_config(_write(conf_dir, BASE))
    assert cfg.lake.root == f"{conf_dir}/lake"
    assert cfg.raw.orders == str(conf_dir / "raw" / "orders")
    assert cfg.rfm.lookback_days == 365 and cfg.rfm.score_bins == 5 and cfg.rfm.percentile == "exact"
    assert cfg.visitors.active_days == 90 and cfg.ingest.max_future_days == 1
    assert cfg.currency.rates["USD"] == Decimal("0.9234")
    assert isinstance(cfg.currency.rates["USD"], Decimal)


def test_threshold_scoring_is_read_exactly(conf_dir):
    extra = "rfm: {scoring: {f: {method: thresholds, bounds: [2, 3, 4, 6]}, r: {method: percentile}}}\n"
    cfg = load_config(_write(conf_dir, BASE + extra))
    assert cfg.rfm.thresholds() == {"f": (Decimal(2), Decimal(3), Decimal(4), Decimal(6))}


@pytest.mark.parametrize(
    "extra, message",
    [
        ("rfm: {lookbak_days: 30}", "unknown config key 'rfm.lookbak_days'"),
        ("rfm: {score_bins: five}", "config key 'rfm.score_bins': expected int"),
        ("rfm: {percentile: fuzzy}", "config key 'rfm.percentile'"),
        ("lake: {root: /x, engine: spark}", "config key 'lake.engine'"),
        ("lake: {root: /x, lock: redis}", "config key 'lake.lock'"),
        ("lake: {root: 's3a://bucket/lake', lock: file}", "config key 'lake.lock': file locks need"),
        ("lake: {root: /x, storage_options: [a]}", "config key 'lake.storage_options'"),
        ("visitors: {active_days: 0}", "config key 'visitors.active_days'"),
        ("colour: red", "unknown config key 'colour'"),
        ("rfm: {scoring: {x: {method: percentile}}}", "unknown config key 'rfm.scoring.x'"),
        ("rfm: {scoring: {f: {method: quantile}}}", "config key 'rfm.scoring.f.method'"),
        ("rfm: {scoring: {f: {method: thresholds, bounds: [2, 3, 4]}}}", "'rfm.scoring.f.bounds': 4 numbers"),
        ("rfm: {scoring: {f: {method: thresholds, bounds: [2, 3, 3, 6]}}}", "strictly ascending"),
        (
            "rfm: {scoring: {f: {method: thresholds, bounds: [2, 3, x, 6]}}}",
            "'rfm.scoring.f.bounds': 4 numbers",
        ),
        ("rfm: {scoring: {r: {method: percentile, bounds: [1]}}}", "only for method thresholds"),
        ("rfm: {scoring: {m: {method: thresholds, bounds: [1, 2, 3, 4], step: 1}}}", "'rfm.scoring.m.step'"),
        ("predict: {horizon_days: 0}", "config key 'predict.horizon_days'"),
    ],
)
def test_bad_values_name_the_key(conf_dir, extra, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(conf_dir, BASE + extra + "\n"))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unset_env_var_names_key_and_variable(conf_dir, monkeypatch):
    monkeypatch.delenv("LAKE_DIR")
    with pytest.raises(ConfigError, match=r"'lake.root': environment variable \$\{LAKE_DIR\} is not set"):
        load_config(_write(conf_dir, BASE))


def test_missing_files_and_bad_rates(conf_dir):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(conf_dir / "nope.yaml")
    with pytest.raises(ConfigError, match="'segments': file not found"):
        load_config(_write(conf_dir, BASE.replace("segments: segments.yaml", "segments: missing.yaml")))
    with pytest.raises(ConfigError, match="currency.rates.EUR"):
        load_config(_write(conf_dir, BASE.replace("EUR: 1,", "EUR: 2,")))
    with pytest.raises(ConfigError, match="currency.rates.USD"):
        load_config(_write(conf_dir, BASE.replace("0.9234", "-1")))
    with pytest.raises(ConfigError, match="'lake.root'"):
        load_config(_write(conf_dir, BASE.replace("${LAKE_DIR}/lake", "/a/../b")))


def test_bad_date_is_one_line():
    with pytest.raises(
        ConfigError, match="--date: expected a date YYYY-MM-DD, today or yesterday, got '2024-02-30'"
    ):
        parse_date("2024-02-30")


def test_relative_dates_are_utc_days():
    assert parse_date("yesterday", today=date(2024, 3, 1)) == date(2024, 2, 29)
    assert parse_date("today", today=date(2024, 3, 1)) == date(2024, 3, 1)


def test_cli_exit_code_2_and_one_line_on_config_error(conf_dir):
    path = _write(conf_dir, BASE + "rfm: {lookbak_days: 30}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "clm_spark.cli", "run", "--date", "2024-01-01", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "clm: error: unknown config key 'rfm.lookbak_days'"
