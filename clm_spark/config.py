"""Typed, validated configuration loaded from one YAML file (SPEC §6).

Floats in the YAML are read as `Decimal` so currency rates never pass through binary floating
point. `${ENV_VAR}` is replaced from the environment; an unset variable is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from clm_spark.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class LakeConfig:
    root: str
    engine: str = "auto"
    lock: str = "auto"  # auto | file | none (see clm_spark.lock)
    lock_wait_seconds: int = 1800
    storage_options: dict = field(default_factory=dict)  # delta-rs only: object-store credentials


@dataclass(frozen=True)
class RawConfig:
    clickstream: str
    orders: str


@dataclass(frozen=True)
class RfmConfig:
    lookback_days: int = 365
    score_bins: int = 5
    percentile: str = "exact"
    approx_relative_error: float = 0.001
    # per dimension (r, f, m): {method: percentile} (the default) or {method: thresholds, bounds:
    # [B - 1 ascending values]}; see thresholds() for the normalised form
    scoring: dict = field(default_factory=dict)

    def thresholds(self) -> dict[str, tuple[Decimal, ...]]:
        """{dimension: bounds} of the dimensions scored by configured thresholds."""
        return {
            dim: tuple(Decimal(str(b)) for b in spec["bounds"])
            for dim, spec in self.scoring.items()
            if spec.get("method") == "thresholds"
        }


@dataclass(frozen=True)
class VisitorsConfig:
    active_days: int = 90


@dataclass(frozen=True)
class CurrencyConfig:
    base: str = "EUR"
    rates: dict = field(default_factory=lambda: {"EUR": Decimal(1)})


@dataclass(frozen=True)
class IngestConfig:
    max_future_days: int = 1


@dataclass(frozen=True)
class ValidationConfig:
    expectations: str = "expectations.yaml"
    enabled: bool = True


@dataclass(frozen=True)
class PredictConfig:
    enabled: bool = False  # gold/customer_predictions and gold/clv_model for each published date
    unit_days: int = 1  # the models' time unit (7: weeks)
    horizon_days: int = 365  # expected purchases and CLV cover (D, D + horizon_days]
    max_patterns: int = 2_000_000  # the most calibration patterns the driver accepts per fit
    min_repeat_buyers: int = 10  # fewer repeat buyers: no fit, the reason is recorded


@dataclass(frozen=True)
class ActivationConfig:
    control_share: float = 0.05  # share of persons held out of every campaign (the global control group)
    control_salt: str = "clm"  # changing it draws a new control group: keep it for the life of the programme


@dataclass(frozen=True)
class KpisConfig:
    retention_days: int = 90  # gold/lifecycle_kpis: retention and churn over (D - retention_days, D]


@dataclass(frozen=True)
class Config:
    lake: LakeConfig
    raw: RawConfig
    rfm: RfmConfig = field(default_factory=RfmConfig)
    visitors: VisitorsConfig = field(default_factory=VisitorsConfig)
    currency: CurrencyConfig = field(default_factory=CurrencyConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    kpis: KpisConfig = field(default_factory=KpisConfig)
    segments: str = "segments.yaml"
    spark: dict = field(default_factory=dict)
    source: str = ""


ENGINES = ("auto", "delta-spark", "delta-rs")
LOCK_MODES = ("auto", "file", "none")
PERCENTILE_MODES = ("exact", "approx")
SCORING_METHODS = ("percentile", "thresholds")
_MAX_RATE_SCALE = 10
_MAX_RATE_INT_DIGITS = 8


class _DecimalLoader(yaml.SafeLoader):
    """A SafeLoader that reads YAML floats as Decimal (money never touches float)."""


def _decimal_float(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    return Decimal(loader.construct_scalar(node).replace("_", ""))


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal_float)


def _interpolate(value: Any, key: str) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"config key '{key}': environment variable ${{{name}}} is not set")
            return os.environ[name]

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check one leaf against its declared type; strings from ${ENV} may be numbers."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool):
            return str(value)
    elif typ is dict:
        if isinstance(value, dict):
            return value
    else:  # pragma: no cover - programming error
        raise TypeError(typ)
    raise ConfigError(f"config key '{key}': expected {typ.__name__}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix}': expected a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "source"}
    for k in raw:
        if k not in known:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"unknown config key '{where}'")
    kwargs = {}
    for f in fields(cls):
        if f.name == "source" or f.name not in raw:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        typ = hints[f.name]
        if is_dataclass(typ):
            kwargs[f.name] = _build(typ, raw[f.name], key)
        else:
            kwargs[f.name] = _coerce(raw[f.name], typ, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [f.name for f in fields(cls) if f.name not in raw and f.name != "source"]
        name = f"{prefix}.{missing[0]}" if missing and prefix else (missing[0] if missing else prefix)
        raise ConfigError(f"config key '{name}' is required") from exc


def _resolve(path: str, base: Path) -> str:
    """Relative local paths in the config are relative to the config file's folder."""
    if "://" in path or path.startswith("/"):
        return path
    return str((base / path).resolve())


def _rates(raw: dict, base: str) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for code, rate in raw.items():
        key = f"currency.rates.{code}"
        if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
            raise ConfigError(f"config key '{key}': currency codes are three upper-case letters")
        if isinstance(rate, bool) or not isinstance(rate, (int, Decimal, str)):
            raise ConfigError(f"config key '{key}': expected a decimal number, got {rate!r}")
        try:
            value = Decimal(str(rate))
        except ArithmeticError:
            raise ConfigError(f"config key '{key}': expected a decimal number, got {rate!r}") from None
        sign, digits, exponent = value.as_tuple()
        scale = max(0, -exponent)
        if value <= 0 or scale > _MAX_RATE_SCALE or len(digits) + exponent > _MAX_RATE_INT_DIGITS:
            raise ConfigError(
                f"config key '{key}': a rate is > 0 with at most {_MAX_RATE_INT_DIGITS} integer "
                f"digits and {_MAX_RATE_SCALE} decimals, got {rate!r}"
            )
        rates[code] = value
    if rates.get(base) != Decimal(1):
        raise ConfigError(f"config key 'currency.rates.{base}': the base currency must have rate 1")
    return rates


def _check(cfg: Config) -> None:
    if cfg.lake.engine not in ENGINES:
        raise ConfigError(f"config key 'lake.engine': one of {', '.join(ENGINES)}, got {cfg.lake.engine!r}")
    if cfg.lake.lock not in LOCK_MODES:
        raise ConfigError(f"config key 'lake.lock': one of {', '.join(LOCK_MODES)}, got {cfg.lake.lock!r}")
    if cfg.lake.lock == "file" and "://" in cfg.lake.root and not cfg.lake.root.startswith("file://"):
        raise ConfigError(
            "config key 'lake.lock': file locks need a local or file:// lake.root; "
            "on object stores use none and let the scheduler run one job at a time"
        )
    if cfg.rfm.percentile not in PERCENTILE_MODES:
        raise ConfigError(f"config key 'rfm.percentile': exact or approx, got {cfg.rfm.percentile!r}")
    for key, value, low in (
        ("rfm.lookback_days", cfg.rfm.lookback_days, 1),
        ("rfm.score_bins", cfg.rfm.score_bins, 2),
        ("visitors.active_days", cfg.visitors.active_days, 1),
        ("ingest.max_future_days", cfg.ingest.max_future_days, 0),
        ("lake.lock_wait_seconds", cfg.lake.lock_wait_seconds, 0),
        ("predict.unit_days", cfg.predict.unit_days, 1),
        ("predict.horizon_days", cfg.predict.horizon_days, 1),
        ("predict.max_patterns", cfg.predict.max_patterns, 1),
        ("predict.min_repeat_buyers", cfg.predict.min_repeat_buyers, 1),
        ("kpis.retention_days", cfg.kpis.retention_days, 1),
    ):
        if value < low:
            raise ConfigError(f"config key '{key}': must be >= {low}, got {value}")
    _check_scoring(cfg.rfm)
    if cfg.rfm.score_bins > 9:
        raise ConfigError("config key 'rfm.score_bins': at most 9 (rfm_cell uses one digit per score)")
    if not 0 <= cfg.activation.control_share <= 0.5:
        raise ConfigError(
            f"config key 'activation.control_share': a share in [0, 0.5], got {cfg.activation.control_share}"
        )
    if not cfg.activation.control_salt.strip():
        raise ConfigError("config key 'activation.control_salt': must not be empty")
    if not 0 < cfg.rfm.approx_relative_error < 0.5:
        raise ConfigError("config key 'rfm.approx_relative_error': must be in (0, 0.5)")
    if ".." in Path(cfg.lake.root.split("://")[-1]).parts:
        raise ConfigError("config key 'lake.root': '..' is not allowed in the lake path")
    for key, path in (("segments", cfg.segments), ("validation.expectations", cfg.validation.expectations)):
        if "://" not in path and not Path(path).is_file():
            raise ConfigError(f"config key '{key}': file not found: {path}")


def _check_scoring(rfm: RfmConfig) -> None:
    for dim, spec in rfm.scoring.items():
        key = f"rfm.scoring.{dim}"
        if dim not in ("r", "f", "m"):
            raise ConfigError(f"unknown config key '{key}': dimensions are r, f and m")
        if not isinstance(spec, dict) or spec.get("method") not in SCORING_METHODS:
            raise ConfigError(f"config key '{key}.method': percentile or thresholds, got {spec!r}")
        unknown = set(spec) - {"method", "bounds"}
        if unknown:
            raise ConfigError(f"unknown config key '{key}.{sorted(unknown)[0]}'")
        if spec["method"] == "percentile":
            if "bounds" in spec:
                raise ConfigError(f"config key '{key}.bounds': only for method thresholds")
            continue
        bounds = spec.get("bounds")
        numbers = isinstance(bounds, list) and all(
            isinstance(b, (int, Decimal)) and not isinstance(b, bool) for b in bounds
        )
        if not numbers or len(bounds) != rfm.score_bins - 1:
            raise ConfigError(
                f"config key '{key}.bounds': {rfm.score_bins - 1} numbers (score_bins - 1), got {bounds!r}"
            )
        if any(b < 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ConfigError(f"config key '{key}.bounds': strictly ascending and >= 0, got {bounds!r}")


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> Config:
    """Load, interpolate and validate a config file; raise ConfigError with one line on error."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_DecimalLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    raw = _interpolate(raw, "")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(raw, base=p.parent.resolve(), source=str(p.resolve()))


def config_from_dict(raw: dict, base: Path, source: str = "") -> Config:
    """Build a validated Config from an already-parsed mapping (paths relative to `base`)."""
    raw = dict(raw)
    currency = raw.get("currency") or {}
    if isinstance(currency, dict) and "rates" in currency:
        rates_raw = currency["rates"]
        if not isinstance(rates_raw, dict):
            raise ConfigError("config key 'currency.rates': expected a mapping of code: rate")
        currency = {**currency, "rates": {}}
        raw["currency"] = currency
    else:
        rates_raw = None
    cfg = _build(Config, raw, "")
    base_ccy = cfg.currency.base
    rates = _rates(rates_raw, base_ccy) if rates_raw is not None else {base_ccy: Decimal(1)}
    cfg = Config(
        lake=LakeConfig(
            root=_resolve(cfg.lake.root, base),
            engine=cfg.lake.engine,
            lock=cfg.lake.lock,
            lock_wait_seconds=cfg.lake.lock_wait_seconds,
            storage_options={str(k): str(v) for k, v in cfg.lake.storage_options.items()},
        ),
        raw=RawConfig(_resolve(cfg.raw.clickstream, base), _resolve(cfg.raw.orders, base)),
        rfm=cfg.rfm,
        visitors=cfg.visitors,
        currency=CurrencyConfig(base=base_ccy, rates=rates),
        ingest=cfg.ingest,
        validation=ValidationConfig(
            expectations=_resolve(cfg.validation.expectations, base), enabled=cfg.validation.enabled
        ),
        predict=cfg.predict,
        activation=cfg.activation,
        kpis=cfg.kpis,
        segments=_resolve(cfg.segments, base),
        spark={str(k): str(v) for k, v in cfg.spark.items()},
        source=source,
    )
    _check(cfg)
    return cfg


def parse_date(value: str, key: str = "--date", today: date | None = None) -> date:
    """Parse YYYY-MM-DD, or `today` / `yesterday` (UTC), or raise a one-line ConfigError naming the option.

    The relative words are for schedulers that have no date templating (a Databricks job run
    shortly after midnight UTC publishes `yesterday`, the last complete day).
    """
    if value in ("today", "yesterday"):
        now = today or datetime.now(UTC).date()
        return now if value == "today" else now - timedelta(days=1)
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a date YYYY-MM-DD, today or yesterday, got {value!r}") from None
