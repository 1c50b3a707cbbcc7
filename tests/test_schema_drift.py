"""Schema drift in the feeds: extra columns are ignored, missing ones quarantine, type changes never crash."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from clm_spark.ingest.parse import parse_events, parse_orders
from clm_spark.tables import BRONZE_ORDERS

AT = datetime(2024, 1, 2)
RATES = {"EUR": Decimal(1)}


def _bronze(spark, lines, fmt, header=None):
    rows = [(ln, i + 1, header, fmt, None, "f", AT, 1) for i, ln in enumerate(lines)]
    return spark.createDataFrame(rows, BRONZE_ORDERS.schema)


def _outcome(parsed, *cols):
    return [tuple(r) for r in parsed.orderBy("_line").select("reason", *cols).collect()]


def test_extra_csv_column_anywhere_is_ignored_and_values_come_from_the_header(spark):
    header = "order_id,channel,customer_id,order_time,updated_at,status,amount,currency,coupon"
    lines = ["o1,web,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,10.50,EUR,XMAS"]
    parsed = parse_orders(_bronze(spark, lines, "csv", header), RATES, 1)
    assert _outcome(parsed, "order_id", "customer_id", "amount", "currency") == [
        (None, "o1", "c1", Decimal("10.50"), "EUR")
    ]


def test_extra_json_field_is_ignored(spark):
    line = (
        '{"event_id":"e1","event_time":"2024-01-01T10:00:00Z","event_type":"page_view",'
        '"anonymous_id":"a1","new_field":{"nested":[1,2]},"experiment":"b"}'
    )
    parsed = parse_events(_bronze(spark, [line], "json"), 1)
    assert _outcome(parsed, "event_id", "anonymous_id") == [(None, "e1", "a1")]


def test_missing_required_csv_column_quarantines_every_record_with_the_reason(spark):
    header = "order_id,customer_id,order_time,updated_at,status,currency"  # no amount column
    lines = [
        "o1,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,EUR",
        "o2,c2,2024-01-01T11:00:00Z,2024-01-01T11:00:00Z,completed,EUR",
    ]
    parsed = parse_orders(_bronze(spark, lines, "csv", header), RATES, 1)
    assert [r[0] for r in _outcome(parsed)] == ["missing_field", "missing_field"]


def test_type_changes_are_quarantined_not_crashes(spark):
    events = [
        # event_time became epoch seconds, then an object
        '{"event_id":"e1","event_time":1704103200,"event_type":"page_view","anonymous_id":"a1"}',
        '{"event_id":"e2","event_time":{"ts":"2024-01-01"},"event_type":"page_view","anonymous_id":"a1"}',
        # ids became numbers: still usable as text
        '{"event_id":3,"event_time":"2024-01-01T10:00:00Z","event_type":"page_view","anonymous_id":42}',
    ]
    parsed = parse_events(_bronze(spark, events, "json"), 1)
    assert [r[0] for r in _outcome(parsed)] == ["bad_timestamp", "bad_timestamp", None]

    orders = [
        # amount became a string, a boolean, an object
        '{"order_id":"o1","customer_id":"c1","order_time":"2024-01-01T00:00:00Z",'
        '"updated_at":"2024-01-01T00:00:00Z","status":"placed","amount":"12.50","currency":"EUR"}',
        '{"order_id":"o2","customer_id":"c1","order_time":"2024-01-01T00:00:00Z",'
        '"updated_at":"2024-01-01T00:00:00Z","status":"placed","amount":true,"currency":"EUR"}',
        '{"order_id":"o3","customer_id":"c1","order_time":"2024-01-01T00:00:00Z",'
        '"updated_at":"2024-01-01T00:00:00Z","status":"placed","amount":{"v":1},"currency":"EUR"}',
    ]
    parsed = parse_orders(_bronze(spark, orders, "json"), RATES, 1)
    result = _outcome(parsed, "amount")
    assert [r[0] for r in result] == [None, "bad_amount", "bad_amount"]
    assert result[0][1] == Decimal("12.50")
