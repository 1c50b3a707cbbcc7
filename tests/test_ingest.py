"""Raw → bronze → silver on small hand-made files: one reason per bad kind, exact accounting."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from clm_spark.config import config_from_dict
from clm_spark.lake import open_lake
from clm_spark.pipeline import ingest_and_refine
from clm_spark.tables import (
    BRONZE_CLICKSTREAM,
    BRONZE_ORDERS,
    SILVER_EVENTS,
    SILVER_IDENTITY,
    SILVER_ORDERS,
    SILVER_QUARANTINE,
)

RUN_START = datetime(2024, 1, 3, 12, 0, tzinfo=UTC)

EVENTS = [
    '{"event_id":"e1","event_time":"2024-01-01T10:00:00Z","event_type":"login","customer_id":" c1 ",'
    '"anonymous_id":"a1","email":" Foo@Bar.COM ","extra_field":1}',  # 1 accepted
    '{"event_id":"e2","event_time":',  # 2 malformed
    "[1, 2]",  # 3 malformed: not an object
    '{"event_id":"e4","event_time":"2024-01-01T10:00:00Z","event_type":"  ","anonymous_id":"a4"}',  # 4 missing
    '{"event_id":"e5","event_time":"2024-01-01T10:00:00","event_type":"page_view","anonymous_id":"a5"}',  # 5 bad ts
    '{"event_id":"e6","event_time":"2024-01-04T12:00:01Z","event_type":"page_view","anonymous_id":"a6"}',  # 6 clock
    '{"event_id":"e7","event_time":"2024-01-01T10:00:00Z","event_type":"page_view","customer_id":null,'
    '"anonymous_id":" "}',  # 7 missing: no id at all
    "   ",  # 8 blank line: not a record
    '{"event_id":"e1","event_time":"2024-01-01T11:00:00Z","event_type":"page_view","anonymous_id":"a1"}',  # 9 dup
    '{"event_id":"e10","event_time":"2024-01-01T23:59:59.9999999-01:00","event_type":"page_view",'
    '"anonymous_id":"a1"}',  # 10 accepted, UTC day 2024-01-02
    '{"event_id":"e11","event_time":"2024-02-30T10:00:00Z","event_type":"page_view","anonymous_id":"a1"}',  # 11
    '{"event_id":"e12","event_time":"2024-01-04T12:00:00Z","event_type":"page_view","anonymous_id":"a1"}',  # 12 ok
]
ORDERS_CSV = [
    "currency,amount,order_id,customer_id,order_time,updated_at,status,channel",
    "EUR,10.5,o1,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 2 accepted
    "EUR,-5.00,o2,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 3 negative_amount
    "EUR,1.234,o3,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 4 bad_amount
    "EUR,1e3,o4,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 5 bad_amount
    "XYZ,1.00,o5,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 6 unknown_currency
    "EUR,1.00,o6,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,shipped,web",  # 7 unknown_status
    "EUR,1.00,o7,,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,web",  # 8 missing_field
    " usd ,10.05,o8,c2,2024-01-01T22:00:00-03:00,2024-01-01T22:00:00-03:00, Completed ,web",  # 9 accepted
    "EUR,-1.234,o9,c1,2024-01-01T10:00:00Z,bad,placed,web",  # 10 bad_timestamp (first in order)
    "EUR,0,o10,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed",  # 11 malformed: too few fields
    "EUR,10.5,o1,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00.000+00:00,placed,web",  # 12 duplicate version
]
ORDERS_JSON = [
    '{"order_id":"o11","customer_id":"c3","order_time":"2024-01-02T00:00:00+01:00","updated_at":'
    '"2024-01-02T00:00:00+01:00","status":"placed","amount":12.50,"currency":"EUR"}',  # 1 accepted
    '{"order_id":"o12","customer_id":"c3","order_time":"2024-01-02T00:00:00Z","updated_at":'
    '"2024-01-02T00:00:00Z","status":"placed","amount":1e2,"currency":"EUR"}',  # 2 bad_amount
    '{"order_id":"o13"',  # 3 malformed
]
EXPECTED_QUARANTINE = {
    ("clickstream", "dt=2024-01-01/a.json", 2, "malformed"),
    ("clickstream", "dt=2024-01-01/a.json", 3, "malformed"),
    ("clickstream", "dt=2024-01-01/a.json", 4, "missing_field"),
    ("clickstream", "dt=2024-01-01/a.json", 5, "bad_timestamp"),
    ("clickstream", "dt=2024-01-01/a.json", 6, "clock_error"),
    ("clickstream", "dt=2024-01-01/a.json", 7, "missing_field"),
    ("clickstream", "dt=2024-01-01/a.json", 11, "bad_timestamp"),
    ("clickstream", "dt=2024-01-01/empty.json", None, "empty_file"),
    ("clickstream", "dt=2024-01-01/broken.json.gz", None, "corrupt_file"),
    ("orders", "dt=2024-01-01/o.csv", 3, "negative_amount"),
    ("orders", "dt=2024-01-01/o.csv", 4, "bad_amount"),
    ("orders", "dt=2024-01-01/o.csv", 5, "bad_amount"),
    ("orders", "dt=2024-01-01/o.csv", 6, "unknown_currency"),
    ("orders", "dt=2024-01-01/o.csv", 7, "unknown_status"),
    ("orders", "dt=2024-01-01/o.csv", 8, "missing_field"),
    ("orders", "dt=2024-01-01/o.csv", 10, "bad_timestamp"),
    ("orders", "dt=2024-01-01/o.csv", 11, "malformed"),
    ("orders", "dt=2024-01-01/o.json", 2, "bad_amount"),
    ("orders", "dt=2024-01-01/o.json", 3, "malformed"),
    ("orders", "dt=2024-01-01/header.csv", None, "empty_file"),
}


def _write(path: Path, lines: list[str], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "\n".join(lines).encode() + (b"\n" if lines else b"")
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def raw_lake(tmp_path):
    raw = tmp_path / "raw"
    day = raw / "clickstream" / "dt=2024-01-01"
    _write(day / "a.json", EVENTS)
    _write(day / "empty.json", [])
    (day / "broken.json.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    _write(
        day / "b.json.gz",
        [
            '{"event_id":"e20","event_time":"2024-01-01T00:00:00Z","event_type":"x",'
            '"customer_id":"c2","anonymous_id":"a2"}'
        ],
        gz=True,
    )
    _write(raw / "clickstream" / "_SUCCESS", ["ignored"])
    _write(day / ".hidden.json", ['{"event_id":"h"}'])
    _write(raw / "orders" / "dt=2024-01-01" / "o.csv", ORDERS_CSV)
    _write(raw / "orders" / "dt=2024-01-01" / "o.json", ORDERS_JSON)
    _write(raw / "orders" / "dt=2024-01-01" / "header.csv", [ORDERS_CSV[0], ""])
    return raw, _config(tmp_path, raw)


def _config(tmp_path: Path, raw: Path):
    (tmp_path / "s.yaml").write_text("{}")
    return config_from_dict(
        {
            "lake": {"root": str(tmp_path / "lake"), "engine": "delta-rs"},
            "raw": {"clickstream": str(raw / "clickstream"), "orders": str(raw / "orders")},
            "currency": {"base": "EUR", "rates": {"EUR": 1, "USD": Decimal("0.925")}},
            "segments": str(tmp_path / "s.yaml"),
            "validation": {"expectations": str(tmp_path / "s.yaml")},
        },
        base=tmp_path,
    )


def _run(spark, cfg, run_id="r1", start=RUN_START):
    lake = open_lake(spark, cfg.lake.root, "delta-rs")
    return lake, ingest_and_refine(spark, lake, cfg, run_id, start)


def test_every_bad_kind_gets_its_reason_and_accounting_is_exact(spark, raw_lake):
    _, cfg = raw_lake
    lake, counts = _run(spark, cfg)
    q = lake.read(SILVER_QUARANTINE).collect()
    assert {(r.feed, r.source_file, r.line, r.reason) for r in q} == EXPECTED_QUARANTINE
    assert len(q) == len(EXPECTED_QUARANTINE)
    c, o = counts["clickstream"], counts["orders"]
    assert (c.delivered, c.accepted, c.quarantined, c.duplicates) == (14, 4, 9, 1)
    assert (o.delivered, o.accepted, o.quarantined, o.duplicates) == (15, 3, 11, 1)
    for feed, spec in (("clickstream", BRONZE_CLICKSTREAM), ("orders", BRONZE_ORDERS)):
        assert lake.read(spec).count() == counts[feed].delivered
        assert (
            counts[feed].delivered
            == counts[feed].accepted + counts[feed].quarantined + counts[feed].duplicates
        )


def test_typed_values_trimming_and_money(spark, raw_lake):
    _, cfg = raw_lake
    lake, _ = _run(spark, cfg)
    events = {r.event_id: r for r in lake.read(SILVER_EVENTS).collect()}
    assert set(events) == {"e1", "e10", "e12", "e20"}
    assert events["e1"].customer_id == "c1" and events["e1"].has_email is True
    assert events["e1"].event_time == datetime(2024, 1, 1, 10, 0)  # first delivery won
    assert events["e10"].event_date == date(2024, 1, 2)
    assert events["e10"].event_time == datetime(2024, 1, 2, 0, 59, 59, 999999)
    assert events["e1"].email_sha256 == "0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b"
    orders = {r.order_id: r for r in lake.read(SILVER_ORDERS).collect()}
    assert set(orders) == {"o1", "o8", "o11"}
    assert orders["o8"].status == "completed" and orders["o8"].currency == "USD"
    assert orders["o8"].amount_base == Decimal("9.30")  # 10.05 × 0.925 = 9.29625 → half-up
    assert orders["o8"].order_date == date(2024, 1, 2)
    assert orders["o11"].amount == Decimal("12.50") and orders["o11"].order_date == date(2024, 1, 1)
    links = {(r.anonymous_id, r.customer_id) for r in lake.read(SILVER_IDENTITY).collect()}
    assert links == {("a1", "c1"), ("a2", "c2")}


def test_raw_email_never_leaves_bronze(spark, raw_lake):
    raw, cfg = raw_lake
    _write(raw / "clickstream" / "dt=2024-01-02" / "c.json", ['{"event_id":"x","email":"leak@example.com"'])
    lake, _ = _run(spark, cfg)
    for spec in (SILVER_EVENTS, SILVER_ORDERS, SILVER_IDENTITY, SILVER_QUARANTINE):
        df = lake.read(spec)
        strings = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        hits = (
            df.filter(F.exists(F.array(*strings), lambda s: F.lower(s).contains("@"))).count()
            if strings
            else 0
        )
        assert hits == 0, f"{spec.name} holds an email"


def test_rerun_adds_nothing_and_later_batches_dedupe_and_update(spark, raw_lake):
    raw, cfg = raw_lake
    lake, _ = _run(spark, cfg)
    versions = {s.name: lake.version(s) for s in (BRONZE_CLICKSTREAM, SILVER_EVENTS, SILVER_QUARANTINE)}
    _, again = _run(spark, cfg, "r2")
    assert again["clickstream"].delivered == 0 and again["orders"].delivered == 0
    assert {
        s.name: lake.version(s) for s in (BRONZE_CLICKSTREAM, SILVER_EVENTS, SILVER_QUARANTINE)
    } == versions
    # a re-delivery of e1 and a late status update of o1 arrive the next day
    _write(raw / "clickstream" / "dt=2024-01-02" / "again.json", [EVENTS[0]])
    _write(
        raw / "orders" / "dt=2024-01-02" / "late.csv",
        [
            "order_id,customer_id,order_time,updated_at,status,amount,currency",
            "o1,c1,2024-01-01T10:00:00Z,2024-01-02T09:00:00Z,cancelled,10.50,EUR",
        ],
    )
    _, later = _run(spark, cfg, "r3")
    assert (later["clickstream"].delivered, later["clickstream"].duplicates) == (1, 1)
    assert (later["orders"].delivered, later["orders"].accepted) == (1, 1)
    o1 = sorted((r.updated_at, r.status) for r in lake.read(SILVER_ORDERS).collect() if r.order_id == "o1")
    assert [s for _, s in o1] == ["placed", "cancelled"]
    assert lake.read(SILVER_EVENTS).filter("event_id = 'e1'").count() == 1


@pytest.mark.parametrize("small", [False, True])
def test_duplicates_within_the_batch_and_against_silver(spark, small):
    from clm_spark.ingest.silver import flag_duplicates

    cols = "event_id string, _batch_id long, _source_file string, _line long"
    batch = spark.createDataFrame(
        [("a", 2, "f2", 7), ("a", 2, "f1", 9), ("b", 2, "f1", 1), ("c", 2, "f1", 2)], cols
    )
    silver = spark.createDataFrame([("b", 1, "f0", 1), ("d", 1, "f0", 2)], cols)
    flagged = flag_duplicates(batch, silver, ["event_id"], small)
    expected = spark.createDataFrame(
        [
            ("a", 2, "f1", 9, False),
            ("a", 2, "f2", 7, True),
            ("b", 2, "f1", 1, True),
            ("c", 2, "f1", 2, False),
        ],
        f"{cols}, is_duplicate boolean",
    )
    assert_df_equality(flagged, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("small", [False, True])
def test_quarantined_records_neither_are_nor_hide_duplicates(spark, small):
    """Accepted and rejected records are flagged in one pass: only the accepted ones compete."""
    from clm_spark.ingest.silver import flag_duplicates

    cols = "event_id string, reason string, _batch_id long, _source_file string, _line long"
    batch = spark.createDataFrame(
        [
            ("a", "bad_timestamp", 2, "f1", 1),  # first delivery of a, but rejected
            ("a", None, 2, "f1", 5),  # so this one is a's first accepted delivery
            ("a", None, 2, "f2", 1),
            ("b", "clock_error", 2, "f1", 2),  # b is in silver: a rejected b is still no duplicate
            (None, "missing_field", 2, "f1", 3),
            (None, "missing_field", 2, "f1", 4),
        ],
        cols,
    )
    silver = spark.createDataFrame([("b", None, 1, "f0", 1)], cols)
    flagged = flag_duplicates(batch, silver, ["event_id"], small, eligible=F.col("reason").isNull())
    got = sorted(
        (r.event_id or "", r._source_file, r._line, r.is_duplicate)
        for r in flagged.select("event_id", "_source_file", "_line", "is_duplicate").collect()
    )
    assert got == [
        ("", "f1", 3, False),
        ("", "f1", 4, False),
        ("a", "f1", 1, False),
        ("a", "f1", 5, False),
        ("a", "f2", 1, True),
        ("b", "f1", 2, False),
    ]


def test_lines_of_a_file_split_into_blocks_are_numbered_in_file_order(spark, tmp_path):
    from clm_spark.ingest.bronze import list_raw_files, read_lines
    from clm_spark.storage import Storage

    _write(tmp_path / "big.json", [f'{{"n":{i}}}' for i in range(1, 301)])  # ~3 KB: several 1 KB blocks
    _write(tmp_path / "small.json.gz", ['{"n":1}', '{"n":2}'], gz=True)  # never split
    files = list_raw_files(Storage(spark), str(tmp_path), (".json", ".json.gz"))
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    try:
        lines, blocks = read_lines(spark, str(tmp_path), files)
        got = sorted((r._source_file, r._line, r._raw) for r in lines.collect())
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", before)
    assert len({b.start for b in blocks if b.rel == "big.json"}) > 1  # the case under test happened
    expected = [("big.json", i, f'{{"n":{i}}}') for i in range(1, 301)]
    expected += [("small.json.gz", 1, '{"n":1}'), ("small.json.gz", 2, '{"n":2}')]
    assert got == expected


def _event(event_id: str, ascii_only: bool = False, **fields: str) -> str:
    """One clickstream JSON line; non-ASCII characters raw (UTF-8) unless `ascii_only` (then escaped)."""
    record = {"event_id": event_id, "event_time": "2024-01-01T10:00:00Z", "event_type": "page_view", **fields}
    return json.dumps(record, ensure_ascii=ascii_only)


WS_EVENTS = [
    _event("w1", anonymous_id=" ", customer_id="\t "),  # 1 missing_field: neither id is present
    _event(
        "w2",
        customer_id="\u00a0c9\u00a0",
        anonymous_id="\u2003a9\t",
        session_id="\x0bs1\x0c",
        email="\u3000X@Y.com\u00a0",
    ),  # 2 accepted: every value stripped
    "\t \u00a0\u3000",  # 3 blank line: not a record
    _event("w3", ascii_only=True, event_type="\u00a0\u2028", anonymous_id="a3"),  # 4 missing_field
    _event("w4", anonymous_id="\u0085\u1680"),  # 5 missing_field: no id
    "\t" + _event("w5", anonymous_id="a5"),  # 6 accepted: JSON may start with a tab
    _event("\u00a0w2\u202f", anonymous_id="a6"),  # 7 duplicate of w2 once stripped
    _event("w7", event_time="\u205f2024-01-01T10:00:00Z\r", anonymous_id="a7"),  # 8 accepted
]
WS_HEADER = "\u00a0order_id\t,customer_id,order_time,updated_at,status,amount,currency"
WS_ORDERS_CSV = [
    WS_HEADER,
    "o1,\u00a0c9\u00a0,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,\tcompleted\u00a0,\u300010.50 ,eur",  # 2 ok
    "\u00a0\t",  # 3 blank line
    "o2,\u00a0,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,1.00,EUR",  # 4 missing_field
    "o3,\u2009c10,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,2.00,USD",  # 5 accepted
]
WS_ORDERS_JSON = (
    '{"order_id":"\\u00a0o5","customer_id":"c11\u3000","order_time":"2024-01-01T10:00:00Z",'
    '"updated_at":"2024-01-01T10:00:00Z","status":"placed","amount":" 3.00\\t","currency":"EUR"}'
)


def _write_bytes(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def test_every_unicode_whitespace_is_whitespace_in_values_lines_and_files(spark, tmp_path):
    """SPEC §8.2/§8.17/§8.18 with whitespace as `str.isspace` defines it, not only the space."""
    raw = tmp_path / "raw"
    day, orders_day = raw / "clickstream" / "dt=2024-01-01", raw / "orders" / "dt=2024-01-01"
    _write_bytes(day / "ws.json", "\n".join(WS_EVENTS) + "\n")
    _write_bytes(day / "tabs.json", " \t \n\t\t\n \n")  # spaces and tabs only
    _write_bytes(day / "nbsp.json", "\u00a0\n\u3000\x0c\n")  # other whitespace only
    _write_bytes(
        day / "crlf.json",
        "\r\n".join([_event("w8", anonymous_id="a8"), _event("w9", customer_id="c9")]) + "\r\n\r\n",
    )
    _write_bytes(orders_day / "header_ws.csv", "\n".join([WS_HEADER, "\t", "  ", "\u00a0"]) + "\n")
    _write_bytes(orders_day / "crlf.csv", "\r\n".join(WS_ORDERS_CSV) + "\r\n")
    _write_bytes(orders_day / "o.json", WS_ORDERS_JSON + "\n")
    lake, counts = _run(spark, _config(tmp_path, raw))

    q = {(r.feed, r.source_file, r.line, r.reason) for r in lake.read(SILVER_QUARANTINE).collect()}
    assert q == {
        ("clickstream", "dt=2024-01-01/ws.json", 1, "missing_field"),
        ("clickstream", "dt=2024-01-01/ws.json", 4, "missing_field"),
        ("clickstream", "dt=2024-01-01/ws.json", 5, "missing_field"),
        ("clickstream", "dt=2024-01-01/tabs.json", None, "empty_file"),
        ("clickstream", "dt=2024-01-01/nbsp.json", None, "empty_file"),
        ("orders", "dt=2024-01-01/header_ws.csv", None, "empty_file"),
        ("orders", "dt=2024-01-01/crlf.csv", 4, "missing_field"),
    }
    c, o = counts["clickstream"], counts["orders"]
    assert (c.delivered, c.accepted, c.quarantined, c.duplicates) == (11, 5, 5, 1)
    assert (o.delivered, o.accepted, o.quarantined, o.duplicates) == (5, 3, 2, 0)
    for feed, spec in (("clickstream", BRONZE_CLICKSTREAM), ("orders", BRONZE_ORDERS)):
        n = counts[feed]
        assert lake.read(spec).count() == n.delivered == n.accepted + n.quarantined + n.duplicates

    events = {r.event_id: r for r in lake.read(SILVER_EVENTS).collect()}
    assert set(events) == {"w2", "w5", "w7", "w8", "w9"}
    w2 = events["w2"]
    assert (w2.customer_id, w2.anonymous_id, w2.session_id, w2.has_email) == ("c9", "a9", "s1", True)
    assert w2.email_sha256 == hashlib.sha256(b"x@y.com").hexdigest()
    assert events["w7"].event_time == datetime(2024, 1, 1, 10, 0)
    links = {(r.anonymous_id, r.customer_id) for r in lake.read(SILVER_IDENTITY).collect()}
    assert links == {("a9", "c9")}
    orders = {
        r.order_id: (r.customer_id, r.status, r.currency, r.amount, r.amount_base)
        for r in lake.read(SILVER_ORDERS).collect()
    }
    assert orders == {
        "o1": ("c9", "completed", "EUR", Decimal("10.50"), Decimal("10.50")),
        "o3": ("c10", "placed", "USD", Decimal("2.00"), Decimal("1.85")),
        "o5": ("c11", "placed", "EUR", Decimal("3.00"), Decimal("3.00")),
    }
