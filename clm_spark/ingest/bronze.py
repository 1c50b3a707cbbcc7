"""Raw → bronze: every delivered line kept verbatim, each file ingested exactly once (SPEC §2, §8)."""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from clm_spark.ingest.whitespace import is_blank
from clm_spark.lake import Lake, TableSpec, Txn
from clm_spark.storage import Storage
from clm_spark.tables import BRONZE_CLICKSTREAM, BRONZE_ORDERS

log = logging.getLogger(__name__)

FEEDS: dict[str, tuple[TableSpec, tuple[str, ...]]] = {
    "clickstream": (BRONZE_CLICKSTREAM, (".json", ".json.gz")),
    "orders": (BRONZE_ORDERS, (".csv", ".json", ".csv.gz", ".json.gz")),
}


@dataclass(frozen=True)
class RawFile:
    rel: str  # path relative to the feed folder
    uri: str
    size: int

    @property
    def is_gzip(self) -> bool:
        return self.rel.endswith(".gz")

    @property
    def fmt(self) -> str:
        return "csv" if self.rel.removesuffix(".gz").endswith(".csv") else "json"


@dataclass(frozen=True)
class IngestResult:
    feed: str
    batch_id: int | None
    files: int
    delivered: int
    skipped: bool = False


def list_raw_files(storage: Storage, root: str, extensions: tuple[str, ...]) -> list[RawFile]:
    """Files of a feed folder, recursively; names starting with `_` or `.` are skipped (SPEC §8.18).

    Listed through the session's Hadoop FileSystem, so any URI the cluster's Spark reads works.
    """
    prefix = root if "://" in root else f"file://{root}"
    files = []
    for entry in storage.list_files(root):
        if any(part.startswith(("_", ".")) for part in entry.rel.split("/")):
            continue
        if not entry.rel.endswith(extensions):
            continue
        files.append(RawFile(rel=entry.rel, uri=f"{prefix.rstrip('/')}/{entry.rel}", size=entry.size))
    return sorted(files, key=lambda f: f.rel)


def _gzip_ok(content: bytes) -> bool:
    """Decompress a gzip file to the end; False when it is corrupt or truncated (runs in tasks)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as gz:
            while gz.read(1 << 20):
                pass
        return True
    except (OSError, EOFError, zlib.error):
        return False


def relative_to(path: Column, root: str) -> Column:
    """The part of a file URI (as Spark reports it) after the feed folder `root`.

    Spark may spell a local root as `file:/x`, `file:///x` or `/x`; the folder's path part, found
    at its first occurrence, is the same in every spelling.
    """
    folder = (urlparse(root).path if "://" in root else root).rstrip("/") + "/"
    decoded = F.url_decode(path)
    return decoded.substr(F.locate(folder, decoded) + len(folder), F.lit(1 << 30))


def find_corrupt(spark: SparkSession, root: str, files: list[RawFile]) -> set[str]:
    """Check compressed files in parallel in tasks; returns the corrupt ones' rel paths.

    Spark reads the bytes (any Hadoop URI); a task needs only Python's gzip module. A raw file
    larger than 2 GiB compressed is beyond Spark's binaryFile reader: split such deliveries.
    """
    gz = [f.uri for f in files if f.is_gzip]
    if not gz:
        return set()
    gzip_ok = F.udf(lambda content: _gzip_ok(content), BooleanType())  # no built-in reads gzip to its end
    checked = (
        spark.read.format("binaryFile")
        .load(gz)
        .select(relative_to(F.col("path"), root).alias("rel"), gzip_ok("content").alias("ok"))
        .collect()  # one flag per compressed file
    )
    return {r.rel for r in checked if not r.ok}


@dataclass(frozen=True)
class _Block:
    """What the first pass learns of one block of a file (no record's text: a CSV header at most)."""

    rel: str
    start: int  # the block's byte offset in its file
    first_id: int  # monotonically_increasing_id of its first line
    lines: int
    non_blank: int
    first_blank: bool  # its first line is blank
    csv_first_line: str | None  # the first line of a CSV block (of block 0: the header), else None


def _scan(spark: SparkSession, root: str, files: list[RawFile]) -> DataFrame:
    df = spark.read.text([f.uri for f in files])
    return df.select(
        F.col("value").alias("_raw"),
        relative_to(F.col("_metadata.file_path"), root).alias("_source_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_id"),
    )


def _blocks(spark: SparkSession, root: str, files: list[RawFile]) -> list[_Block]:
    blank = is_blank(F.col("_raw"))
    is_csv = F.col("_source_file").rlike(r"\.csv(\.gz)?$")  # RawFile.fmt
    stats = (
        _scan(spark, root, files)
        .groupBy("_source_file", "_block")
        .agg(
            F.min("_id").alias("first_id"),
            F.count(F.lit(1)).alias("lines"),
            F.count(F.when(~blank, 1)).alias("non_blank"),
            F.min_by(blank, "_id").alias("first_blank"),
            F.min_by(F.when(is_csv, F.col("_raw")), "_id").alias("csv_first_line"),
        )
    )
    return [_Block(*row) for row in stats.collect()]  # a few figures per file and CSV headers, no record


def read_lines(spark: SparkSession, root: str, files: list[RawFile]) -> tuple[DataFrame, list[_Block]]:
    """(rel, line number, text) of every line of the files, and what the first pass learnt of them.

    One task reads each block of a file, in order, so a line's number is its position in its
    block plus the lines of the file's earlier blocks. A first pass counts the lines of each
    block; the second numbers them in place, with no shuffle of the text.
    """
    if not files:
        return spark.createDataFrame([], "_source_file string, _line long, _raw string"), []
    blocks = _blocks(spark, root, files)
    offsets, seen = [], {}
    for b in sorted(blocks, key=lambda b: (b.rel, b.start)):
        offsets.append((b.rel, b.start, b.first_id, seen.get(b.rel, 0)))
        seen[b.rel] = seen.get(b.rel, 0) + b.lines
    schema = "_source_file string, _block long, _first_id long, _offset long"
    at = spark.createDataFrame(offsets, schema)
    lines = _scan(spark, root, files).join(F.broadcast(at), ["_source_file", "_block"])
    number = F.col("_id") - F.col("_first_id") + F.col("_offset") + 1
    return lines.select("_source_file", number.alias("_line"), "_raw"), blocks


def to_bronze(
    spark: SparkSession,
    feed_root: str,
    files: list[RawFile],
    corrupt: set[str],
    batch_id: int,
    ingested_at: datetime,
) -> DataFrame:
    """Raw lines to bronze rows: records, empty-file and corrupt-file rows (files are read twice, see read_lines)."""
    readable = [f for f in files if f.rel not in corrupt]
    lines, blocks = read_lines(spark, feed_root, readable)
    fmt = {f.rel: f.fmt for f in files}
    fmt_of = spark.createDataFrame(sorted(fmt.items()), "_source_file string, _format string")
    lines = lines.join(F.broadcast(fmt_of), "_source_file", "left")
    blank = is_blank(F.col("_raw"))
    is_header = (F.col("_format") == "csv") & (F.col("_line") == 1)
    first_csv_blocks = [b for b in blocks if b.start == 0 and fmt[b.rel] == "csv"]  # line 1: the header
    headers = spark.createDataFrame(
        [(b.rel, b.csv_first_line) for b in first_csv_blocks], "_source_file string, _csv_header string"
    )
    records = (
        lines.join(F.broadcast(headers), "_source_file", "left")
        .filter(~blank & ~is_header)
        .withColumn("_file_error", F.lit(None).cast("string"))
    )
    records_in = dict.fromkeys(fmt, 0)
    for b in blocks:
        records_in[b.rel] += b.non_blank
    for b in first_csv_blocks:
        records_in[b.rel] -= not b.first_blank  # a non-blank header counted above is no record
    no_records = sorted(rel for rel, n in records_in.items() if n == 0)
    file_rows = spark.createDataFrame(
        [(rel, fmt[rel], "corrupt_file" if rel in corrupt else "empty_file") for rel in no_records],
        "_source_file string, _format string, _file_error string",
    )
    file_rows = file_rows.select(
        F.lit(None).cast("string").alias("_raw"),
        F.lit(None).cast("long").alias("_line"),
        F.lit(None).cast("string").alias("_csv_header"),
        "_format",
        "_file_error",
        "_source_file",
    )
    cols = ["_raw", "_line", "_csv_header", "_format", "_file_error", "_source_file"]
    return (
        records.select(*cols)
        .unionByName(file_rows)
        .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
        .withColumn("_batch_id", F.lit(batch_id).cast("long"))
    )


def ingest_feed(
    spark: SparkSession, lake: Lake, feed: str, feed_root: str, run_id: str, run_start: datetime
) -> IngestResult:
    """Append every not-yet-ingested file of the feed to bronze as one batch, exactly once.

    The set of ingested files is read from bronze itself, and the commit carries the idempotency
    key (clm.ingest.<feed>, batch id), so a re-run or a retry after a crash never ingests twice.
    """
    spec, extensions = FEEDS[feed]
    lake.create(spec)
    bronze = lake.read(spec)
    done = {r[0] for r in bronze.select("_source_file").distinct().collect()}
    files = [f for f in list_raw_files(lake.storage, feed_root, extensions) if f.rel not in done]
    if not files:
        log.info("%s: no new files", feed)
        return IngestResult(feed, None, 0, 0, skipped=True)
    batch_id = (lake.txn_version(spec, f"clm.ingest.{feed}") or 0) + 1
    corrupt = find_corrupt(spark, feed_root, files)
    if corrupt:
        log.warning(
            "%s: %d corrupt compressed file(s) quarantined whole: %s", feed, len(corrupt), sorted(corrupt)[:3]
        )
    rows = to_bronze(spark, feed_root, files, corrupt, batch_id, run_start)
    lake.append(spec, rows, run_id=run_id, txn=Txn(f"clm.ingest.{feed}", batch_id))
    delivered = lake.read(spec).filter(F.col("_batch_id") == batch_id).count()
    log.info("%s: batch %d ingested %d files, %d records", feed, batch_id, len(files), delivered)
    return IngestResult(feed, batch_id, len(files), delivered)
