"""Property test: mutated raw lines never crash parsing and every line is accounted for (SPEC §7)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from clm_spark.ingest.parse import REASONS, parse_events, parse_orders
from clm_spark.tables import BRONZE_ORDERS

EVENT = (
    '{"event_id":"e1","event_time":"2024-01-01T10:00:00+02:00","event_type":"page_view","anonymous_id":"a1"}'
)
ORDER = "o1,c1,2024-01-01T10:00:00Z,2024-01-01T10:00:00Z,placed,10.50,EUR"
HEADER = "order_id,customer_id,order_time,updated_at,status,amount,currency"
ODD = st.sampled_from(
    [
        "",
        " ",
        "\u00e9",
        "\u202e",
        "\ud7ff",
        "9" * 40,
        "-1",
        "1e309",
        "null",
        "{",
        "}",
        '"',
        ",",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00+99:99",
        "\u0000",
        "[]",
        "true",
    ]
)


def _mutate(line: str, data) -> str:
    ops = data.draw(
        st.lists(st.sampled_from(["truncate", "insert", "replace", "dup"]), min_size=1, max_size=3)
    )
    for op in ops:
        pos = data.draw(st.integers(0, len(line)))
        if op == "truncate":
            line = line[:pos]
        elif op == "insert":
            line = line[:pos] + data.draw(ODD) + line[pos:]
        elif op == "replace":
            end = data.draw(st.integers(pos, len(line)))
            line = line[:pos] + data.draw(st.one_of(ODD, st.text(max_size=8))) + line[end:]
        else:
            line = line + line
    return line


def _bronze(spark, lines: list[str], fmt: str | list[str]):
    """Bronze rows of `lines`, read from files of format `fmt` (one for all, or one per line)."""
    at = datetime(2024, 1, 2)
    formats = [fmt] * len(lines) if isinstance(fmt, str) else fmt
    rows = [
        (ln, i + 1, HEADER if f == "csv" else None, f, None, "f", at, 1)
        for i, (ln, f) in enumerate(zip(lines, formats, strict=True))
    ]
    return spark.createDataFrame(rows, BRONZE_ORDERS.schema)


def _check(parsed, n: int) -> None:
    counts = {
        r["reason"]: r["n"] for r in parsed.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    assert sum(counts.values()) == n
    assert set(counts) <= set(REASONS) | {None}


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_lines_are_accepted_or_quarantined(spark, data):
    """50 mutated event lines, and 50 order lines of each format in one bronze frame (as a batch of
    CSV and JSON files gives), per example."""
    events = [_mutate(EVENT, data) for _ in range(50)]
    json_order = (
        '{"order_id":"o","customer_id":"c","order_time":"2024-01-01T00:00:00Z",'
        '"updated_at":"2024-01-01T00:00:00Z","status":"placed","amount":1.5,"currency":"EUR"}'
    )
    orders = [_mutate(ORDER, data) for _ in range(50)] + [_mutate(json_order, data) for _ in range(50)]
    _check(parse_events(_bronze(spark, events, "json"), 1), len(events))
    formats = ["csv"] * 50 + ["json"] * 50
    _check(parse_orders(_bronze(spark, orders, formats), {"EUR": Decimal(1)}, 1), len(orders))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), bad_share=st.floats(0.05, 0.6), dup_share=st.floats(0.0, 0.3))
def test_accounting_holds_at_volume(spark, seed, bad_share, dup_share):
    """5,000 event lines, a share mutated and a share re-delivered: every line is counted once."""
    import random

    from clm_spark.ingest.silver import flag_duplicates

    rng = random.Random(seed)
    odd = ["", " ", "\u00e9", "\u202e", "9" * 40, "-1", "1e309", "null", "{", '"', ",", "+99:99", "\u0000"]
    lines = []
    for i in range(5000):
        line = EVENT.replace('"e1"', f'"e{i}"').replace('"a1"', f'"a{i % 97}"')
        if rng.random() < bad_share:
            pos = rng.randrange(len(line) + 1)
            op = rng.choice(["truncate", "insert", "replace"])
            if op == "truncate":
                line = line[:pos]
            elif op == "insert":
                line = line[:pos] + rng.choice(odd) + line[pos:]
            else:
                line = line[:pos] + rng.choice(odd) + line[pos + rng.randrange(1, 12) :]
        lines.append(line)
    lines += [rng.choice(lines) for _ in range(int(len(lines) * dup_share))]  # re-deliveries

    parsed = parse_events(_bronze(spark, lines, "json"), 1)
    valid = flag_duplicates(parsed.filter(F.col("reason").isNull()), parsed.limit(0), ["event_id"])
    tally = {
        (r["bad"], r["dup"]): r["n"]
        for r in valid.select(F.lit(False).alias("bad"), F.col("is_duplicate").alias("dup"))
        .unionByName(
            parsed.filter(F.col("reason").isNotNull()).select(
                F.lit(True).alias("bad"), F.lit(False).alias("dup")
            )
        )
        .groupBy("bad", "dup")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    accepted, duplicates = tally.get((False, False), 0), tally.get((False, True), 0)
    quarantined = tally.get((True, False), 0)
    assert accepted + quarantined + duplicates == len(lines)
    assert accepted == valid.select("event_id").distinct().count()  # one accepted row per key


def test_a_json_line_is_accepted_only_as_a_strict_json_object(spark):
    """Single quotes, NaN, trailing commas, arrays and bare values are malformed; the last of
    repeated keys wins; leading blanks are fine (SPEC §8.3)."""
    rest = '"event_time":"2024-01-01T10:00:00Z","event_type":"page_view","anonymous_id":"a1"'
    lines = [
        "{" + f'"event_id":"e1",{rest}' + "}",
        "   {" + f'"event_id":"e2",{rest}' + "}",
        "{" + f'"event_id":"e0","event_id":"e3",{rest}' + "}",
        "{" + f"'event_id':'e4',{rest}" + "}",
        "{" + f'"event_id":"e5",{rest},"score":NaN' + "}",
        "{" + f'"event_id":"e6",{rest},' + "}",
        "[{" + f'"event_id":"e7",{rest}' + "}]",
        '"e8"',
        "null",
        "{" + f'"event_id":"e9",{rest}',
    ]
    parsed = parse_events(_bronze(spark, lines, "json"), 1).select(
        F.col("_line").alias("line"), "event_id", "reason"
    )
    ok = [(1, "e1", None), (2, "e2", None), (3, "e3", None)]
    bad = [(n, None, "malformed") for n in range(4, 11)]
    expected = spark.createDataFrame(ok + bad, "line long, event_id string, reason string")
    assert_df_equality(parsed, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)


def test_csv_fields_are_counted_outside_quotes(spark):
    """A quoted comma does not count as a separator; a line with more or fewer fields than its
    header is malformed (SPEC §8.3)."""
    ts = "2024-01-01T10:00:00Z"
    lines = [
        f"o1,c1,{ts},{ts},placed,10.50,EUR",
        f'o2,"c,2",{ts},{ts},placed,10.50,EUR',
        f'o3,"c""3",{ts},{ts},placed,10.50,EUR',
        f"o4,c4,{ts},{ts},placed,10.50",
        f"o5,c5,{ts},{ts},placed,10.50,EUR,web",
        f'o6,"c,6,{ts},{ts},placed,10.50,EUR',
    ]
    parsed = parse_orders(_bronze(spark, lines, "csv"), {"EUR": Decimal(1)}, 1).select(
        F.col("_line").alias("line"),
        F.when(F.col("reason").isNull(), F.col("customer_id")).alias("customer_id"),
        "reason",
    )
    expected = spark.createDataFrame(
        [(1, "c1", None), (2, "c,2", None), (3, 'c"3', None)] + [(n, None, "malformed") for n in (4, 5, 6)],
        "line long, customer_id string, reason string",
    )
    assert_df_equality(parsed, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
