"""Bronze → silver, incremental and exactly once (SPEC §3, §8).

Only bronze batches newer than the last refined one are read. Accepted records are de-duplicated
by key (first delivery wins: batch, then file path, then line) against each other and against
silver rows of earlier batches; every silver write carries the idempotency key
(clm.refine.<table>, last bronze batch), so a retry after a crash repeats nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clm_spark.config import Config
from clm_spark.ingest.parse import parse_events, parse_orders, redact_emails
from clm_spark.lake import Lake, TableSpec, Txn
from clm_spark.tables import (
    BRONZE_CLICKSTREAM,
    BRONZE_ORDERS,
    SILVER_EVENTS,
    SILVER_IDENTITY,
    SILVER_ORDERS,
    SILVER_QUARANTINE,
)

log = logging.getLogger(__name__)
FIRST_DELIVERY = ("_batch_id", "_source_file", "_line")


@dataclass(frozen=True)
class FeedCounts:
    """Accounting for one feed in one refine run: delivered = accepted + quarantined + duplicates."""

    feed: str
    batches: str
    delivered: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# a batch with at most this many records broadcasts its keys to the scan of silver's keys
BROADCAST_KEYS = 4_000_000


def flag_duplicates(
    records: DataFrame,
    existing_keys: DataFrame,
    keys: list[str],
    small: bool = False,
    eligible: Column | None = None,
) -> DataFrame:
    """Add `is_duplicate`: a later delivery of a key seen earlier in this data or already in silver.

    With `eligible` only those records compete (the others, quarantined ones, are never
    duplicates and never hide one), so accepted and rejected records are flagged in one pass.
    Only silver keys that reappear in `records` matter. With `small` (a daily batch against a
    large silver table) the new keys are broadcast, so silver's key column is scanned and probed
    in place instead of being shuffled and de-duplicated whole.
    """
    eligible = F.lit(True) if eligible is None else eligible
    first = Window.partitionBy(*keys, eligible).orderBy(*FIRST_DELIVERY)
    ranked = records.withColumn("_rank", F.row_number().over(first))
    seen = existing_keys.select(*keys)
    if small:
        seen = seen.join(F.broadcast(records.select(*keys).distinct()), keys, "left_semi")
    seen = seen.distinct().withColumn("_seen", F.lit(True))
    return (
        ranked.join(seen, keys, "left")
        .withColumn("is_duplicate", eligible & ((F.col("_rank") > 1) | F.col("_seen").isNotNull()))
        .drop("_rank", "_seen")
    )


def quarantine_rows(parsed: DataFrame, feed: str) -> DataFrame:
    bad = parsed.filter(F.col("reason").isNotNull())
    return bad.select(
        F.lit(feed).alias("feed"),
        "reason",
        redact_emails(F.col("_raw")).alias("raw_value"),
        F.col("_source_file").alias("source_file"),
        F.col("_line").alias("line"),
        F.col("_batch_id").alias("batch_id"),
        F.col("_ingested_at").alias("ingested_at"),
    )


def _new_bronze(lake: Lake, bronze: TableSpec, app_id: str) -> tuple[DataFrame, int, int, int] | None:
    """Bronze batches not refined yet: (records, first batch, last batch, number of records)."""
    done = lake.txn_version(SILVER_QUARANTINE, app_id) or 0
    df = lake.read(bronze).filter(F.col("_batch_id") > done)
    last, records = df.agg(F.max("_batch_id"), F.count(F.lit(1))).first()
    if last is None:
        return None
    return df.filter(F.col("_batch_id") <= last), done + 1, int(last), int(records)


def refined_batch(lake: Lake, target: TableSpec, feed: str) -> int:
    """The last bronze batch of `feed` appended to `target`: every row there has a batch up to it."""
    return lake.txn_version(target, _refine_app(feed)) or 0


def _refine_app(feed: str) -> str:
    return f"clm.refine.{feed}"


def _refine(
    lake: Lake,
    feed: str,
    bronze_spec: TableSpec,
    parsed_of,
    target: TableSpec,
    keys: list[str],
    run_id: str,
    extra_writes=(),
    rules=None,
) -> FeedCounts:
    app = _refine_app(feed)
    for spec in (target, SILVER_QUARANTINE, *[s for s, _ in extra_writes]):
        lake.create(spec)
    found = _new_bronze(lake, bronze_spec, app)
    if found is None:
        log.info("%s: nothing new to refine", feed)
        return FeedCounts(feed, "")
    bronze, first, last, records = found
    parsed = parsed_of(bronze)  # one record per bronze record
    ok = F.col("reason").isNull()
    # raw lines go on only with the records quarantined: the only ones that keep them
    parsed = parsed.withColumn("_raw", F.when(~ok, F.col("_raw")))
    earlier = lake.read(target).filter(F.col("_batch_id") < first)
    small = records <= BROADCAST_KEYS
    if small:  # its keys are broadcast to the scan of silver: parse once for both uses
        parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    flagged = flag_duplicates(parsed, earlier, keys, small, eligible=ok)
    flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)  # read by the tally and every write below
    try:
        tally = {
            (r["is_bad"], r["is_duplicate"]): r["n"]
            for r in flagged.groupBy((~ok).alias("is_bad"), "is_duplicate")
            .agg(F.count(F.lit(1)).alias("n"))
            .collect()
        }
        parsed.unpersist()  # `flagged` is materialised now
        accepted = flagged.filter(ok & ~F.col("is_duplicate"))
        if rules is not None:  # critical failures raise before anything of this batch is written
            from clm_spark.quality import require_passing

            require_passing({target.name: accepted.select(*target.columns)}, rules, f"batches {first}-{last}")
        txn = Txn(app, last)
        lake.append(target, accepted.select(*target.columns), run_id=run_id, txn=txn)
        for spec, make in extra_writes:
            lake.append(spec, make(accepted).select(*spec.columns), run_id=run_id, txn=txn)
        # quarantine last: its idempotency key marks the batch range as refined
        lake.append(SILVER_QUARANTINE, quarantine_rows(flagged, feed), run_id=run_id, txn=txn)
    finally:
        parsed.unpersist()
        flagged.unpersist()
    counts = FeedCounts(
        feed=feed,
        batches=f"{first}-{last}",
        delivered=sum(tally.values()),
        accepted=tally.get((False, False), 0),
        quarantined=tally.get((True, False), 0),
        duplicates=tally.get((False, True), 0),
    )
    log.info("%s refined batches %s: %s", feed, counts.batches, counts.as_dict())
    return counts


def identity_links(events: DataFrame) -> DataFrame:
    """One row per accepted event carrying both an anonymous_id and a customer_id."""
    both = events.filter(F.col("anonymous_id").isNotNull() & F.col("customer_id").isNotNull())
    return both.select("anonymous_id", "customer_id", "event_time", "event_id")


def refine_clickstream(lake: Lake, cfg: Config, run_id: str, rules=None) -> FeedCounts:
    return _refine(
        lake,
        "clickstream",
        BRONZE_CLICKSTREAM,
        lambda b: parse_events(b, cfg.ingest.max_future_days),
        SILVER_EVENTS,
        ["event_id"],
        run_id,
        extra_writes=[(SILVER_IDENTITY, identity_links)],
        rules=rules,
    )


def refine_orders(lake: Lake, cfg: Config, run_id: str, rules=None) -> FeedCounts:
    return _refine(
        lake,
        "orders",
        BRONZE_ORDERS,
        lambda b: parse_orders(b, cfg.currency.rates, cfg.ingest.max_future_days),
        SILVER_ORDERS,
        ["order_id", "updated_at"],
        run_id,
        rules=rules,
    )
