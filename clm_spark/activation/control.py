"""The global control group: persons held out of every campaign, so the programme's lift can be measured.

A person's bucket is a number 0..9999 taken from a hash of the salt and the person key:

    bucket(key) = int(sha256_hex(salt + ":" + key)[:8], 16) mod 10000     (UTF-8 bytes)

and the person is in the control group when bucket < round(control_share × 10000). The same
formula runs in Spark (`bucket_column`) and in plain Python (`bucket`), so any tool can tell who
is held out. Membership is sticky: the bucket depends only on the salt and the key, so a person
keeps the flag from one date to the next while the share stays the same, and raising the share
only adds people. The person key is the one the snapshot uses (`customer_id`, or `anon:` + the
anonymous id of an unidentified visitor): a visitor who becomes a customer takes the bucket of
the customer id. When an identity merge joins keys from both sides of the line (the customer's
own key and one of its former visitor keys), the person is flagged `control_mixed`: who was held
out before is no longer clear, so lift figures leave them out.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column
from pyspark.sql import functions as F

BUCKETS = 10_000
_HEX_DIGITS = 8  # 32 bits of the hash: plenty for 10,000 buckets, and a long in Spark


def bucket(salt: str, key: str) -> int:
    """The bucket of one person key (plain Python; identical to `bucket_column`)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()
    return int(digest[:_HEX_DIGITS], 16) % BUCKETS


def bucket_column(salt: str, key: Column) -> Column:
    """The bucket of each row's person key, as a Spark column (null for a null key)."""
    digest = F.sha2(F.concat(F.lit(f"{salt}:"), key), 256)
    return (F.conv(F.substring(digest, 1, _HEX_DIGITS), 16, 10).cast("long") % BUCKETS).cast("int")


def threshold(share: float) -> int:
    """Buckets below this number are the control group."""
    return round(share * BUCKETS)


def in_control(salt: str, share: float, key: str) -> bool:
    return bucket(salt, key) < threshold(share)


def control_columns(salt: str, share: float, linked_min: Column, linked_max: Column) -> list[Column]:
    """`is_control` and `control_mixed` of each person row.

    `linked_min` / `linked_max` are the smallest and largest bucket of the visitor keys merged into
    the person by identity links (null when none): a merge crosses the line when one of them falls
    on the other side of the person's own bucket.
    """
    line = F.lit(threshold(share))
    control = bucket_column(salt, F.col("person_id")) < line
    crossed = F.when(control, linked_max >= line).otherwise(linked_min < line)
    return [control.alias("is_control"), F.coalesce(crossed, F.lit(False)).alias("control_mixed")]
