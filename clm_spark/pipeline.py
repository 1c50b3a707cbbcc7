"""Orchestration of the steps of a run: ingest → refine → snapshot → transitions → validation."""

from __future__ import annotations

import logging
from datetime import datetime

from pyspark.sql import SparkSession

from clm_spark.config import Config
from clm_spark.ingest.bronze import ingest_feed
from clm_spark.ingest.silver import FeedCounts, refine_clickstream, refine_orders
from clm_spark.lake import Lake

log = logging.getLogger(__name__)


def ingest_and_refine(
    spark: SparkSession, lake: Lake, cfg: Config, run_id: str, run_start: datetime
) -> dict[str, FeedCounts]:
    """Ingest new raw files of both feeds into bronze, then refine new bronze batches into silver."""
    for feed, root in (("clickstream", cfg.raw.clickstream), ("orders", cfg.raw.orders)):
        ingest_feed(spark, lake, feed, root, run_id, run_start)
    return {
        "clickstream": refine_clickstream(lake, cfg, run_id),
        "orders": refine_orders(lake, cfg, run_id),
    }
