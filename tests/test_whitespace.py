"""The one definition of whitespace: the Spark helpers agree with Python's str.isspace / str.strip."""

from __future__ import annotations

import sys

from pyspark.sql import functions as F

from clm_spark.ingest.whitespace import WHITESPACE, clean, is_blank, lstrip, strip

# characters that look blank but are not whitespace to Python: they must survive stripping
NOT_WHITESPACE = "\u200b\ufeff\u180e\x00\x1b"


def test_whitespace_is_exactly_what_python_calls_whitespace():
    expected = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(WHITESPACE) == expected
    assert {"\u00a0", "\u3000", "\u1680", "\u2028", "\u2029", "\u202f", "\u205f", "\x85", "\x0b"} <= expected
    assert not set(NOT_WHITESPACE) & expected


def test_strip_lstrip_blank_and_clean_agree_with_python(spark):
    values = [None, "", "id", " a b ", "\u00a0c1\u00a0", "\t \u3000", *WHITESPACE, *NOT_WHITESPACE]
    values += [f"{ws}x{ws}" for ws in WHITESPACE] + [f"{c}y{c}" for c in NOT_WHITESPACE]
    # whitespace at one end only, and the printable-ASCII bounds the helpers' shortcut tests
    values += [f"x{ws}" for ws in WHITESPACE] + [f"{ws}x" for ws in WHITESPACE]
    values += ["!", "~", "!a~", "\x7f", " \x7f ", "\x20!", "~\t", "!\u2029", "é", " é ", "é\u00a0", "xé"]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    v = F.col("v")
    rows = df.select(
        "v", strip(v).alias("s"), lstrip(v).alias("l"), is_blank(v).alias("b"), clean(v).alias("c")
    ).collect()
    assert len(rows) == len(values)
    for r in rows:
        if r.v is None:
            assert (r.s, r.l, r.b, r.c) == (None, None, None, None)
            continue
        assert r.s == r.v.strip(), repr(r.v)
        assert r.l == r.v.lstrip(), repr(r.v)
        assert r.b is (r.v.strip() == ""), repr(r.v)
        assert r.c == (r.v.strip() or None), repr(r.v)
