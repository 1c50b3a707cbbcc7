"""Delta per-file statistics computed from Parquet footers (numRecords, min/max, nullCount)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow.parquet as pq

_STRING_PREFIX = 32
_DEC = re.compile(r'"__dec__(-?[0-9.]+)__"')


def _json_value(value, is_max: bool):
    """A stat value as Delta expects it; None when it cannot be represented safely."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return f"__dec__{value}__"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        truncated = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if is_max and truncated != value:  # stats are in milliseconds: round a max up
            truncated += timedelta(milliseconds=1)
        return truncated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{truncated.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        if len(value) <= _STRING_PREFIX:
            return value
        return None if is_max else value[:_STRING_PREFIX]
    if isinstance(value, (int, float)):
        return value
    return None


def file_stats(source, columns: list[str]) -> tuple[str, int]:
    """Return (Delta stats JSON, number of rows) for one Parquet file (path or file object)."""
    meta = pq.read_metadata(source)
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    mins: dict = {}
    maxs: dict = {}
    nulls: dict = {}
    for ci, name in enumerate(names):
        if name not in columns:
            continue
        lo = hi = None
        null_count = 0
        complete = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(ci).statistics
            if st is None or not st.has_null_count:
                complete = False
                break
            null_count += st.null_count
            if st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        if not complete:
            continue
        nulls[name] = null_count
        for target, value, is_max in ((mins, lo, False), (maxs, hi, True)):
            encoded = _json_value(value, is_max)
            if encoded is not None:
                target[name] = encoded
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return _DEC.sub(r"\1", json.dumps(stats, separators=(",", ":"))), meta.num_rows
