"""Pure bronze → typed-record transforms: parsing, trimming and the quarantine rules (SPEC §7, §8).

Each function returns the typed columns plus `reason` (null when the record is accepted).
"""

from __future__ import annotations

from decimal import Decimal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType

from clm_spark.ingest.whitespace import clean, lstrip, strip

REASONS = (
    "malformed",
    "missing_field",
    "bad_timestamp",
    "negative_amount",
    "bad_amount",
    "unknown_currency",
    "unknown_status",
    "empty_file",
    "corrupt_file",
    "clock_error",
)
STATUSES = ("placed", "completed", "cancelled", "refunded")
EVENT_FIELDS = (
    "event_id",
    "event_time",
    "event_type",
    "anonymous_id",
    "customer_id",
    "session_id",
    "email",
    "page_url",
    "product_id",
)
ORDER_FIELDS = ("order_id", "customer_id", "order_time", "updated_at", "status", "amount", "currency")
_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_AMOUNT = r"^[0-9]+(\.[0-9]{1,2})?$"
_NEGATIVE = r"^-[0-9]+(\.[0-9]+)?$"
_EMAIL_LIKE = r"[^\s\"',;:<>{}\[\]]+@[^\s\"',;:<>{}\[\]]+"
MAX_CSV_COLUMNS = 32
LINEAGE = ("_source_file", "_line", "_batch_id", "_raw", "_ingested_at")  # carried from bronze


def parse_timestamp(c: Column) -> Column:
    """ISO-8601 with Z or ±hh:mm to a UTC timestamp; fractions beyond microseconds truncated.

    The pattern decides what is accepted; the cast (which truncates extra fraction digits and
    rejects impossible dates and times) does the conversion: one regex per value, not four.
    `c` is a value `clean` has already stripped (both callers read the cleaned fields).
    """
    return F.when(c.rlike(_TS), c.try_cast("timestamp"))


def redact_emails(c: Column) -> Column:
    """Raw values leave bronze only with anything that looks like an email replaced."""
    return F.regexp_replace(c, _EMAIL_LIKE, "<redacted-email>")


def _first(*conditions: tuple[Column, str]) -> Column:
    expr = F.lit(None).cast("string")
    for cond, reason in reversed(conditions):
        expr = F.when(cond, F.lit(reason)).otherwise(expr)
    return expr


def _file_reasons() -> tuple[tuple[Column, str], ...]:
    """Whole-file records from bronze: a file with no records, or one that could not be read."""
    return tuple((F.col("_file_error") == r, r) for r in ("empty_file", "corrupt_file"))


# strict JSON: Spark's parser otherwise accepts 'single quotes' and NaN/Infinity, which are not JSON
_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
    "columnNameOfCorruptRecord": "__clm_unreadable__",
}


def _json_fields(raw: Column, names: tuple[str, ...]) -> tuple[Column, Column]:
    """(is_object, struct of the fields as text) for a JSON line, parsed once.

    A line the parser cannot read keeps its text in an extra field (PERMISSIVE mode): that tells
    a malformed line apart without validating every line a second time (`try_parse_json` cost
    nearly as much as the parse itself). Of repeated keys the last one wins.
    """
    schema = ", ".join(f"`{n}` string" for n in names) + ", `__clm_unreadable__` string"
    parsed = F.from_json(raw, schema, _JSON_OPTIONS)
    is_object = lstrip(raw).startswith("{") & parsed["__clm_unreadable__"].isNull()
    return F.coalesce(is_object, F.lit(False)), parsed


def _too_late(ts: Column, ingested_at: Column, max_future_days: int) -> Column:
    return ts > ingested_at + F.make_interval(days=F.lit(max_future_days))


def parse_events(bronze: DataFrame, max_future_days: int) -> DataFrame:
    """Typed clickstream events with `reason`; email becomes sha256 + has_email."""
    is_object, j = _json_fields(F.col("_raw"), EVENT_FIELDS)
    df = bronze.select("*", is_object.alias("_is_object"), j.alias("_j"))
    typed = {n: clean(F.col("_j")[n]) for n in EVENT_FIELDS}
    df = df.select("*", *[v.alias(f"_f_{k}") for k, v in typed.items()])
    f = {n: F.col(f"_f_{n}") for n in EVENT_FIELDS}
    event_time = parse_timestamp(f["event_time"])
    df = df.withColumn("event_time", event_time)
    has_email = f["email"].isNotNull()
    reason = _first(
        *_file_reasons(),
        (~F.col("_is_object"), "malformed"),
        (
            f["event_id"].isNull()
            | f["event_time"].isNull()
            | f["event_type"].isNull()
            | (f["customer_id"].isNull() & f["anonymous_id"].isNull()),
            "missing_field",
        ),
        (F.col("event_time").isNull(), "bad_timestamp"),
        (_too_late(F.col("event_time"), F.col("_ingested_at"), max_future_days), "clock_error"),
    )
    return df.select(
        f["event_id"].alias("event_id"),
        "event_time",
        F.to_date("event_time").alias("event_date"),
        f["event_type"].alias("event_type"),
        f["customer_id"].alias("customer_id"),
        f["anonymous_id"].alias("anonymous_id"),
        f["session_id"].alias("session_id"),
        F.when(has_email, F.sha2(F.lower(f["email"]), 256)).alias("email_sha256"),
        has_email.alias("has_email"),
        f["page_url"].alias("page_url"),
        f["product_id"].alias("product_id"),
        *LINEAGE,
        reason.alias("reason"),
    )


def _with_csv_arrays(df: DataFrame) -> DataFrame:
    """Add `_csv_names` / `_csv_values` arrays and `_csv_ok` (field count equals the header's)."""
    schema = ", ".join(f"c{i} string" for i in range(MAX_CSV_COLUMNS))
    opts = {"mode": "PERMISSIVE", "nullValue": "\u0000", "escape": '"'}  # RFC 4180: "" is a quote

    def as_array(c: Column) -> Column:
        parsed = F.from_csv(c, schema, opts)
        return F.array(*[parsed[f"c{i}"] for i in range(MAX_CSV_COLUMNS)])

    def count(c: Column) -> Column:
        # quoted fields may hold commas: they go first (the regex runs only on lines with quotes)
        unquoted = F.when(c.contains('"'), F.regexp_replace(c, r'"([^"]|"")*"', "")).otherwise(c)
        return F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1

    # a file's header is the same on every row: parse each distinct header once, broadcast it back
    headers = (
        df.filter(F.col("_csv_header").isNotNull())
        .select("_csv_header")
        .distinct()
        .select(
            "_csv_header",
            F.transform(as_array(F.col("_csv_header")), lambda x: F.lower(strip(x))).alias("_csv_names"),
            count(F.col("_csv_header")).alias("_csv_width"),
        )
    )
    is_csv = F.col("_format") == "csv"
    # parse each line once into a struct column, then read its fields: building the array straight
    # from from_csv(...) evaluates the parser once per field (32 times a row, ~4x slower overall)
    fields = [F.col("_csv_struct")[f"c{i}"] for i in range(MAX_CSV_COLUMNS)]
    return (
        df.join(F.broadcast(headers), "_csv_header", "left")
        .withColumn("_csv_struct", F.when(is_csv, F.from_csv(F.col("_raw"), schema, opts)))
        .withColumn("_csv_values", F.when(is_csv, F.array(*fields)))
        .withColumn("_csv_ok", F.when(is_csv, count(F.col("_raw")) == F.col("_csv_width")))
        .drop("_csv_struct")
    )


def _csv_field(name: str) -> Column:
    idx = F.array_position(F.col("_csv_names"), name)
    return F.when(idx > 0, F.try_element_at(F.col("_csv_values"), idx.cast("int")))


def rate_map(rates: dict[str, Decimal]) -> tuple[Column, DecimalType]:
    """A map column code → rate as an exact decimal wide enough for every configured rate."""
    scale = max(max(0, -r.as_tuple().exponent) for r in rates.values())
    digits = max(len(r.as_tuple().digits) + r.as_tuple().exponent for r in rates.values())
    dtype = DecimalType(max(1, digits) + scale, scale)
    pairs = []
    for code in sorted(rates):
        pairs += [F.lit(code), F.lit(str(rates[code])).cast(dtype)]
    return F.create_map(*pairs), dtype


def parse_orders(bronze: DataFrame, rates: dict[str, Decimal], max_future_days: int) -> DataFrame:
    """Typed order versions with `reason`; amount_base = round_half_up(amount × rate, 2)."""
    is_object, j = _json_fields(F.col("_raw"), ORDER_FIELDS)
    bronze = _with_csv_arrays(bronze)
    is_csv = F.col("_format") == "csv"
    # JSON numbers keep their text: from_json would rewrite 12.50 as 12.5 and 1e3 as 1000.0
    number_token = F.regexp_extract(F.col("_raw"), r'"amount"\s*:\s*(-?[0-9][0-9eE+.\-]*)', 1)
    json_amount = F.coalesce(F.nullif(number_token, F.lit("")), j["amount"])  # nullif: the regex runs once
    raw_fields = {
        n: F.when(is_csv, _csv_field(n)).otherwise(json_amount if n == "amount" else j[n])
        for n in ORDER_FIELDS
    }
    df = bronze.select(
        "*",
        F.when(is_csv, F.col("_csv_ok")).otherwise(is_object).alias("_well_formed"),
        *[clean(v).alias(f"_f_{k}") for k, v in raw_fields.items()],
    )
    f = {n: F.col(f"_f_{n}") for n in ORDER_FIELDS}
    rates_col, _ = rate_map(rates)
    amount = F.when(f["amount"].rlike(_AMOUNT), f["amount"].try_cast("decimal(18,2)"))
    status = F.lower(f["status"])
    currency = F.upper(f["currency"])
    rate = F.try_element_at(rates_col, currency)
    df = df.select(
        "*",
        parse_timestamp(f["order_time"]).alias("order_time"),
        parse_timestamp(f["updated_at"]).alias("updated_at"),
        amount.alias("amount"),
        status.alias("status"),
        currency.alias("currency"),
        rate.alias("_rate"),
    )
    amount_base = F.round(F.col("amount") * F.col("_rate"), 2).try_cast("decimal(18,2)")
    df = df.withColumn("amount_base", amount_base)
    is_negative = f["amount"].rlike(_NEGATIVE) & f["amount"].rlike("[1-9]")
    reason = _first(
        *_file_reasons(),
        (~F.col("_well_formed"), "malformed"),
        (
            f["order_id"].isNull()
            | f["customer_id"].isNull()
            | f["order_time"].isNull()
            | f["updated_at"].isNull()
            | f["amount"].isNull(),
            "missing_field",
        ),
        (F.col("order_time").isNull() | F.col("updated_at").isNull(), "bad_timestamp"),
        (is_negative, "negative_amount"),
        (
            F.col("amount").isNull() | (F.col("_rate").isNotNull() & F.col("amount_base").isNull()),
            "bad_amount",
        ),
        (F.col("_rate").isNull(), "unknown_currency"),
        (~F.coalesce(F.col("status").isin(*STATUSES), F.lit(False)), "unknown_status"),
        (
            _too_late(F.col("order_time"), F.col("_ingested_at"), max_future_days)
            | _too_late(F.col("updated_at"), F.col("_ingested_at"), max_future_days),
            "clock_error",
        ),
    )
    return df.select(
        f["order_id"].alias("order_id"),
        f["customer_id"].alias("customer_id"),
        "order_time",
        F.to_date("order_time").alias("order_date"),
        "updated_at",
        "status",
        "amount",
        "currency",
        "amount_base",
        *LINEAGE,
        reason.alias("reason"),
    )
