"""One definition of whitespace for trimming values and telling blank lines (SPEC §8.2, §8.17, §8.18).

Whitespace is every character for which Python's `str.isspace()` is true: space, tab, LF, VT,
FF, CR, the separators U+001C–U+001F, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029,
U+202F, U+205F and U+3000. Spark's `trim` removes the space character only, so a tab or a
non-breaking space around an id would otherwise make a different id, or a blank one a present one.
"""

from __future__ import annotations

import sys

from pyspark.sql import Column
from pyspark.sql import functions as F

WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def _plain_start(c: Column) -> Column:
    """True when the first byte of `c` is printable ASCII (! to ~): no whitespace character starts so.

    Strings compare byte by byte, so this reads one byte, while `btrim` with a character set
    allocates and scans on every call: most values skip it.
    """
    return (c >= F.lit("!")) & (c < F.lit("\x7f"))


def strip(c: Column) -> Column:
    """`c` without leading and trailing whitespace (Python's `str.strip()`)."""
    plain = _plain_start(c) & _plain_start(F.substring(c, -1, 1))
    return F.when(plain, c).otherwise(F.btrim(c, F.lit(WHITESPACE)))


def lstrip(c: Column) -> Column:
    """`c` without leading whitespace (Python's `str.lstrip()`)."""
    return F.when(_plain_start(c), c).otherwise(F.ltrim(c, F.lit(WHITESPACE)))


def is_blank(c: Column) -> Column:
    """True when `c` is empty or only whitespace (null stays null)."""
    return F.when(_plain_start(c), F.lit(False)).otherwise(F.btrim(c, F.lit(WHITESPACE)) == "")


def clean(c: Column) -> Column:
    """Stripped; blank after stripping means absent (null). `nullif` strips once, not twice."""
    return F.nullif(strip(c), F.lit(""))
