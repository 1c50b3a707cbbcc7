"""Segment rules as data (conf/segments.yaml), validated on load and compiled to a Spark column."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from pyspark.sql import Column
from pyspark.sql import functions as F

from clm_spark.errors import SegmentRulesError

FIELDS = {
    "is_customer": bool,
    "has_email": bool,
    "orders_lifetime": int,
    "recency_days": int,
    "frequency": int,
}
DEFAULT_STAGES = ("acquire", "retain", "increase_value", "cherish", "reactivate")


@dataclass(frozen=True)
class Playbook:
    """What a segment is for: its goal, the campaign types and channels that serve it, its priority
    (1 = act first). Data for marketing tools (gold/segment_catalog); it never changes who is in it."""

    goal: str | None = None
    campaigns: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    priority: int | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    stage: str
    when: tuple[tuple[str, object], ...]  # (field, literal | (min, max))
    cells: frozenset[str] | None  # None: any cell (and visitors allowed when `when` says so)
    playbook: Playbook = dataclasses.field(default_factory=lambda: Playbook())


@dataclass(frozen=True)
class SegmentModel:
    rules: tuple[Rule, ...]
    score_bins: int
    stages: tuple[str, ...]
    parameters: dict

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rules]

    def classify(self, case: dict) -> str | None:
        """First matching rule for one person described as a dict (used for validation)."""
        for rule in self.rules:
            if _matches_py(rule, case):
                return rule.id
        return None

    def segment_column(self) -> Column:
        """A CASE WHEN over the snapshot columns giving the segment id (first match wins)."""
        expr = F.lit(None).cast("string")
        for rule in reversed(self.rules):
            expr = F.when(_matches_spark(rule), F.lit(rule.id)).otherwise(expr)
        return expr

    @property
    def version(self) -> str:
        """A short hash of everything the rules say (conditions, names, stages, playbooks): the
        same rules give the same version wherever they are loaded."""
        content = {
            "score_bins": self.score_bins,
            "stages": list(self.stages),
            "parameters": self.parameters,
            "rules": [
                {**asdict(r), "when": [list(c) for c in r.when], "cells": sorted(r.cells or [])}
                for r in self.rules
            ],
        }
        text = json.dumps(content, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def lookup(self, attr: str) -> Column:
        pairs = []
        for rule in self.rules:
            pairs += [F.lit(rule.id), F.lit(getattr(rule, attr))]
        return F.create_map(*pairs)


def _bound(value, params: dict, where: str) -> int:
    if isinstance(value, str):
        if value not in params:
            raise SegmentRulesError(f"{where}: unknown parameter '{value}'")
        value = params[value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SegmentRulesError(f"{where}: expected an integer or a parameter name, got {value!r}")
    return value


def _parse_when(raw: dict, params: dict, where: str) -> tuple[tuple[str, object], ...]:
    if not isinstance(raw, dict):
        raise SegmentRulesError(f"{where}.when: expected a mapping of field: condition")
    out = []
    for field, cond in raw.items():
        if field not in FIELDS:
            raise SegmentRulesError(f"{where}.when: unknown field '{field}' (one of {', '.join(FIELDS)})")
        if isinstance(cond, dict):
            if set(cond) - {"min", "max"} or not cond:
                raise SegmentRulesError(f"{where}.when.{field}: a range has only min and/or max")
            lo = _bound(cond["min"], params, f"{where}.when.{field}.min") if "min" in cond else None
            hi = _bound(cond["max"], params, f"{where}.when.{field}.max") if "max" in cond else None
            out.append((field, (lo, hi)))
        elif FIELDS[field] is bool and isinstance(cond, bool):
            out.append((field, cond))
        elif FIELDS[field] is int and isinstance(cond, (int, str)) and not isinstance(cond, bool):
            out.append((field, _bound(cond, params, f"{where}.when.{field}")))
        else:
            raise SegmentRulesError(f"{where}.when.{field}: bad condition {cond!r}")
    return tuple(out)


def _parse_cells(item: dict, bins: int, where: str) -> frozenset[str] | None:
    if "cells" in item and "ranges" in item:
        raise SegmentRulesError(f"{where}: use cells or ranges, not both")
    if "cells" in item:
        cells = set()
        for c in item["cells"]:
            text = str(c)
            if len(text) != 3 or any(not ch.isdigit() or not 1 <= int(ch) <= bins for ch in text):
                raise SegmentRulesError(f"{where}: cell {c!r} is not three scores in 1..{bins}")
            if text in cells:
                raise SegmentRulesError(f"{where}: cell {text} listed twice")
            cells.add(text)
        return frozenset(cells)
    if "ranges" in item:
        spans = []
        for dim in "rfm":
            lo, hi = item["ranges"].get(dim, [1, bins])
            if not 1 <= lo <= hi <= bins:
                raise SegmentRulesError(f"{where}: range {dim}: [{lo}, {hi}] is outside 1..{bins}")
            spans.append(range(lo, hi + 1))
        return frozenset(f"{r}{f}{m}" for r, f, m in itertools.product(*spans))
    return None


PLAYBOOK_KEYS = ("goal", "campaigns", "channels", "priority")


def _parse_playbook(item: dict, where: str) -> Playbook:
    goal = item.get("goal")
    if goal is not None and (not isinstance(goal, str) or not goal.strip()):
        raise SegmentRulesError(f"{where}.goal: expected a sentence, got {goal!r}")
    lists = {}
    for key in ("campaigns", "channels"):
        value = item.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise SegmentRulesError(f"{where}.{key}: expected a list of names, got {value!r}")
        lists[key] = tuple(v.strip() for v in value)
    priority = item.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or priority < 1):
        raise SegmentRulesError(f"{where}.priority: expected an integer >= 1 (1 = first), got {priority!r}")
    return Playbook(goal.strip() if goal else None, lists["campaigns"], lists["channels"], priority)


def parse_model(raw: dict, source: str = "segments") -> SegmentModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("segments"), list):
        raise SegmentRulesError(f"{source}: expected a mapping with a 'segments' list")
    unknown = set(raw) - {"score_bins", "parameters", "stages", "segments"}
    if unknown:
        raise SegmentRulesError(f"{source}: unknown key '{sorted(unknown)[0]}'")
    bins = raw.get("score_bins", 5)
    params = raw.get("parameters") or {}
    stages = tuple(raw.get("stages") or DEFAULT_STAGES)
    rules, seen = [], set()
    for i, item in enumerate(raw["segments"]):
        where = f"{source}: segment #{i + 1}"
        if not isinstance(item, dict) or not item.get("id"):
            raise SegmentRulesError(f"{where}: needs an id")
        where = f"{source}: segment '{item['id']}'"
        extra = set(item) - {"id", "name", "stage", "when", "cells", "ranges", *PLAYBOOK_KEYS}
        if extra:
            raise SegmentRulesError(f"{where}: unknown key '{sorted(extra)[0]}'")
        if item["id"] in seen:
            raise SegmentRulesError(f"{where}: duplicate id")
        seen.add(item["id"])
        if item.get("stage") not in stages:
            raise SegmentRulesError(
                f"{where}: unknown stage {item.get('stage')!r} (one of {', '.join(stages)})"
            )
        when = _parse_when(item.get("when", {}), params, where)
        cells = _parse_cells(item, bins, where)
        if not when and cells is None:
            raise SegmentRulesError(f"{where}: needs when, cells or ranges")
        playbook = _parse_playbook(item, where)
        rules.append(
            Rule(item["id"], str(item.get("name", item["id"])), item["stage"], when, cells, playbook)
        )
    model = SegmentModel(tuple(rules), bins, stages, params)
    validate(model, source)
    return model


def load_segments(path: str | Path, score_bins: int | None = None) -> SegmentModel:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegmentRulesError(f"segment rules file not found: {p}") from None
    except yaml.YAMLError:
        raise SegmentRulesError(f"segment rules file {p} is not valid YAML") from None
    model = parse_model(raw, p.name)
    if score_bins is not None and model.score_bins != score_bins:
        raise SegmentRulesError(
            f"{p.name}: written for score_bins {model.score_bins}, but rfm.score_bins is {score_bins}"
        )
    return model


def _cases(model: SegmentModel):
    """Representative persons: visitors with/without email; customers for every cell and profile."""
    thresholds = {0, 1, 2, 10_000}
    for _, cond in (c for r in model.rules for c in r.when):
        vals = cond if isinstance(cond, tuple) else (cond,)
        for v in vals:
            if isinstance(v, int) and not isinstance(v, bool):
                thresholds |= {max(0, v - 1), v, v + 1}
    for has_email in (True, False):
        yield (
            "visitor",
            {
                "is_customer": False,
                "has_email": has_email,
                "orders_lifetime": 0,
                "recency_days": None,
                "frequency": 0,
                "cell": None,
            },
        )
    b = model.score_bins
    for cell in ("".join(map(str, c)) for c in itertools.product(range(1, b + 1), repeat=3)):
        for lifetime, recency, has_email in itertools.product(
            sorted(thresholds - {0}), sorted(thresholds), (True, False)
        ):
            yield (
                cell,
                {
                    "is_customer": True,
                    "has_email": has_email,
                    "orders_lifetime": lifetime,
                    "recency_days": recency,
                    "frequency": min(lifetime, 1),
                    "cell": cell,
                },
            )


def validate(model: SegmentModel, source: str = "segments") -> None:
    """Every cell and both visitor cases reach a segment; every segment is reachable."""
    reached: set[str] = set()
    for label, case in _cases(model):
        seg = model.classify(case)
        if seg is None:
            who = (
                "visitors" + (" with" if case["has_email"] else " without") + " email"
                if label == "visitor"
                else f"cell {label} (orders_lifetime={case['orders_lifetime']}, recency_days={case['recency_days']})"
            )
            raise SegmentRulesError(f"{source}: {who} reach no segment")
        reached.add(seg)
    for rule in model.rules:
        if rule.id not in reached:
            raise SegmentRulesError(
                f"{source}: segment '{rule.id}' is unreachable (shadowed by earlier rules)"
            )


def _test_py(cond, value) -> bool:
    if isinstance(cond, tuple):
        lo, hi = cond
        return value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)
    return value == cond


def _matches_py(rule: Rule, case: dict) -> bool:
    if rule.cells is not None and (case["cell"] is None or case["cell"] not in rule.cells):
        return False
    return all(_test_py(c, case[f]) for f, c in rule.when)


def _test_spark(field: str, cond) -> Column:
    col = F.col(field)
    if isinstance(cond, tuple):
        lo, hi = cond
        out = col.isNotNull()
        if lo is not None:
            out = out & (col >= lo)
        if hi is not None:
            out = out & (col <= hi)
        return out
    return F.coalesce(col == F.lit(cond), F.lit(False))


def _matches_spark(rule: Rule) -> Column:
    out = F.lit(True)
    if rule.cells is not None:
        out = F.coalesce(F.col("rfm_cell").isin(*sorted(rule.cells)), F.lit(False))
    for field, cond in rule.when:
        out = out & _test_spark(field, cond)
    return out


def coverage_grid(model: SegmentModel, emit: Callable[[str], None] = print) -> None:
    """Print which segment each (r, f, m) cell lands in, for a customer outside the non-RFM rules."""
    b = model.score_bins
    width = max(len(i) for i in model.ids)
    for r in range(b, 0, -1):
        emit(f"r={r}   " + " ".join(f"m={m}".ljust(width) for m in range(1, b + 1)))
        for f in range(b, 0, -1):
            row = []
            for m in range(1, b + 1):
                case = {
                    "is_customer": True,
                    "has_email": False,
                    "orders_lifetime": 10_000,
                    "recency_days": 10_000,
                    "frequency": 1,
                    "cell": f"{r}{f}{m}",
                }
                row.append((model.classify(case) or "-").ljust(width))
            emit(f"  f={f} " + " ".join(row))
    emit(
        "visitors with email   -> "
        + str(
            model.classify(
                {
                    "is_customer": False,
                    "has_email": True,
                    "orders_lifetime": 0,
                    "recency_days": None,
                    "frequency": 0,
                    "cell": None,
                }
            )
        )
    )
    emit(
        "visitors without email -> "
        + str(
            model.classify(
                {
                    "is_customer": False,
                    "has_email": False,
                    "orders_lifetime": 0,
                    "recency_days": None,
                    "frequency": 0,
                    "cell": None,
                }
            )
        )
    )
