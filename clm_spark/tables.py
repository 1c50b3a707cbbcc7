"""Declared schemas, partitioning and comments of every published table (SPEC §3)."""

from __future__ import annotations

from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from clm_spark.lake import TableSpec

MONEY = DecimalType(18, 2)


def _c(name: str, dtype: DataType, comment: str) -> StructField:
    return StructField(name, dtype, True, {"comment": comment})


def _schema(*fields: StructField) -> StructType:
    return StructType(list(fields))


_BRONZE = _schema(
    _c("_raw", StringType(), "the delivered line, verbatim (null for a whole-file record)"),
    _c("_line", LongType(), "1-based line number in the source file"),
    _c("_csv_header", StringType(), "header line of the CSV file the record came from (null for JSON)"),
    _c("_format", StringType(), "json or csv"),
    _c("_file_error", StringType(), "empty_file or corrupt_file for a whole-file record, else null"),
    _c("_source_file", StringType(), "path of the file relative to the feed folder"),
    _c("_ingested_at", TimestampType(), "start of the ingest run (UTC)"),
    _c("_batch_id", LongType(), "ingest batch number of this feed, increasing"),
)
BRONZE_CLICKSTREAM = TableSpec(
    "bronze/clickstream", _BRONZE, "Raw clickstream lines as delivered; append-only"
)
BRONZE_ORDERS = TableSpec("bronze/orders", _BRONZE, "Raw order records as delivered; append-only")

_LINEAGE = (
    _c("_source_file", StringType(), "file the record was first delivered in"),
    _c("_line", LongType(), "line of the record in that file"),
    _c("_batch_id", LongType(), "ingest batch that delivered it"),
)

SILVER_EVENTS = TableSpec(
    "silver/events",
    _schema(
        _c("event_id", StringType(), "unique event id (first delivery kept)"),
        _c("event_time", TimestampType(), "when the event happened, UTC"),
        _c("event_date", DateType(), "UTC date of event_time"),
        _c(
            "event_type",
            StringType(),
            "page_view, product_view, add_to_cart, checkout_start, email_signup, login...",
        ),
        _c("customer_id", StringType(), "customer id when the visitor was logged in"),
        _c("anonymous_id", StringType(), "device/cookie id"),
        _c("session_id", StringType(), "session id, when sent"),
        _c(
            "email_sha256",
            StringType(),
            "sha256 of the lower-cased trimmed email; the raw email stays in bronze",
        ),
        _c("has_email", BooleanType(), "true when the event carried a non-empty email"),
        _c("page_url", StringType(), "page url, when sent"),
        _c("product_id", StringType(), "product id, when sent"),
        *_LINEAGE,
    ),
    "Typed clickstream events, one row per event_id",
)

SILVER_ORDERS = TableSpec(
    "silver/orders",
    _schema(
        _c("order_id", StringType(), "order id"),
        _c("customer_id", StringType(), "customer who placed the order"),
        _c("order_time", TimestampType(), "when the order was placed, UTC"),
        _c("order_date", DateType(), "UTC date of order_time"),
        _c("updated_at", TimestampType(), "when this version of the order was recorded, UTC"),
        _c("status", StringType(), "placed, completed, cancelled or refunded"),
        _c("amount", MONEY, "order amount in its own currency"),
        _c("currency", StringType(), "ISO-4217 currency of amount"),
        _c("amount_base", MONEY, "amount in the base currency, rounded half-up to 2 places"),
        *_LINEAGE,
    ),
    "Typed order versions, one row per (order_id, updated_at)",
)

SILVER_IDENTITY = TableSpec(
    "silver/identity",
    _schema(
        _c("anonymous_id", StringType(), "device/cookie id"),
        _c("customer_id", StringType(), "customer id seen together with it"),
        _c("event_time", TimestampType(), "time of the event that carried both ids, UTC"),
        _c("event_id", StringType(), "the event that carried both ids"),
    ),
    "Identity links: one row per event carrying both an anonymous_id and a customer_id",
)

SILVER_ACTIVITY_STATE = TableSpec(
    "silver/activity_state",
    _schema(
        _c("anonymous_id", StringType(), "device/cookie id (null: events with a customer id only)"),
        _c("customer_id", StringType(), "customer id sent with it (null: anonymous events)"),
        _c("first_event_date", DateType(), "earliest event date of the pair"),
        _c("last_event_date", DateType(), "latest event date of the pair"),
        _c("has_email", BooleanType(), "some event of the pair carried a non-empty email"),
        _c("last_seen", TimestampType(), "time of the pair's latest event, UTC"),
        _c("covered_before", DateType(), "every event dated before this day is summarised here..."),
        _c("covered_batch", LongType(), "...if its ingest batch is at most this one"),
        _c("events_table_id", StringType(), "Delta table id of the silver/events summarised"),
    ),
    "Per (anonymous_id, customer_id) pair: a summary of its events carried from one run to the next, "
    "so a snapshot reads only the events that came after it (derived from silver/events)",
    ("covered_before", "covered_batch", "events_table_id"),
)

SILVER_QUARANTINE = TableSpec(
    "silver/quarantine",
    _schema(
        _c("feed", StringType(), "clickstream or orders"),
        _c(
            "reason",
            StringType(),
            "malformed, missing_field, bad_timestamp, negative_amount, bad_amount, "
            "unknown_currency, unknown_status, empty_file, corrupt_file or clock_error",
        ),
        _c("raw_value", StringType(), "the raw record, with anything that looks like an email redacted"),
        _c("source_file", StringType(), "file the record came from, relative to the feed folder"),
        _c("line", LongType(), "line number in the file (null for whole-file records)"),
        _c("batch_id", LongType(), "ingest batch"),
        _c("ingested_at", TimestampType(), "start of the ingest run, UTC"),
    ),
    "Every record that failed parsing or a rule, with the reason",
)

_SNAPSHOT_DATE = _c("snapshot_date", DateType(), "the as-of date D (UTC end of day)")

CUSTOMER_SNAPSHOT = TableSpec(
    "gold/customer_snapshot",
    _schema(
        _SNAPSHOT_DATE,
        _c("person_id", StringType(), "customer_id, or 'anon:' + anonymous_id for unidentified visitors"),
        _c("customer_id", StringType(), "customer id when known (null for anonymous visitors)"),
        _c("is_customer", BooleanType(), "true when the person has a valid order dated <= D"),
        _c("has_email", BooleanType(), "the person sent an event with a non-empty email up to D"),
        _c("first_seen_date", DateType(), "earliest event or valid order date"),
        _c("last_activity_date", DateType(), "latest event or valid order date"),
        _c("first_order_date", DateType(), "date of the first valid order"),
        _c("last_order_date", DateType(), "date of the latest valid order"),
        _c("orders_lifetime", IntegerType(), "valid orders dated <= D"),
        _c("recency_days", IntegerType(), "D - last_order_date (customers only)"),
        _c("frequency", IntegerType(), "valid orders dated in (D - lookback_days, D]"),
        _c("monetary", MONEY, "sum of amount_base of those orders (0.00 when none)"),
        _c("r_percentile", DoubleType(), "percent_rank of recency among customers (higher = more recent)"),
        _c("f_percentile", DoubleType(), "percent_rank of frequency among customers"),
        _c("m_percentile", DoubleType(), "percent_rank of monetary among customers"),
        _c("r_score", IntegerType(), "min(B, 1 + floor(r_percentile * B))"),
        _c("f_score", IntegerType(), "min(B, 1 + floor(f_percentile * B))"),
        _c("m_score", IntegerType(), "min(B, 1 + floor(m_percentile * B))"),
        _c("rfm_cell", StringType(), "the three scores, e.g. '545'"),
        _c("segment", StringType(), "lifecycle segment id"),
        _c("segment_name", StringType(), "lifecycle segment display name"),
        _c("stage", StringType(), "lifecycle stage: acquire, retain, increase_value, cherish, reactivate"),
        _c("is_control", BooleanType(), "in the global control group: never targeted (activation.*)"),
        _c(
            "control_mixed",
            BooleanType(),
            "an identity merge joined keys from both sides of the control line: left out of lift figures",
        ),
    ),
    "One row per person in the population of each snapshot date: RFM metrics, scores and segment",
    ("snapshot_date",),
)

SEGMENT_TRANSITIONS = TableSpec(
    "gold/segment_transitions",
    _schema(
        _SNAPSHOT_DATE,
        _c("previous_snapshot_date", DateType(), "the latest earlier snapshot date (null on the first)"),
        _c("person_id", StringType(), "person whose segment changed"),
        _c("from_segment", StringType(), "segment on the previous date (null = new in the population)"),
        _c("to_segment", StringType(), "segment on this date (null = left the population)"),
        _c("from_stage", StringType(), "stage on the previous date"),
        _c("to_stage", StringType(), "stage on this date"),
    ),
    "One row per person whose segment differs from the previous snapshot",
    ("snapshot_date",),
)

SEGMENT_TRANSITION_MATRIX = TableSpec(
    "gold/segment_transition_matrix",
    _schema(
        _SNAPSHOT_DATE,
        _c("from_segment", StringType(), "segment on the previous date (null = new)"),
        _c("to_segment", StringType(), "segment on this date (null = left)"),
        _c("persons", LongType(), "number of persons moving from -> to (unchanged included)"),
    ),
    "Counts of persons per (from, to) segment pair, including unchanged, new and left",
    ("snapshot_date",),
)

SEGMENT_SUMMARY = TableSpec(
    "gold/segment_summary",
    _schema(
        _SNAPSHOT_DATE,
        _c("segment", StringType(), "segment id (every configured segment, persons may be 0)"),
        _c("segment_name", StringType(), "segment display name"),
        _c("stage", StringType(), "lifecycle stage"),
        _c("persons", LongType(), "persons in the segment"),
        _c("share", DoubleType(), "persons / population of the date (0 when empty)"),
        _c("monetary_total", MONEY, "sum of monetary"),
        _c("avg_recency_days", DoubleType(), "average recency_days of its customers"),
        _c("avg_frequency", DoubleType(), "average frequency"),
        _c("avg_monetary", MONEY, "average monetary, half-up to 2 places"),
        _c("entered", LongType(), "transitions into the segment (new persons included)"),
        _c("left", LongType(), "transitions out of the segment (leavers included)"),
    ),
    "Per snapshot date and segment: size, share, money and movement; small, for dashboards",
    ("snapshot_date",),
)

RFM_CUTPOINTS = TableSpec(
    "gold/rfm_cutpoints",
    _schema(
        _SNAPSHOT_DATE,
        _c("dimension", StringType(), "r, f or m"),
        _c("score", IntegerType(), "score 1..B"),
        _c("min_value", DecimalType(18, 2), "lowest metric value that received the score"),
        _c("max_value", DecimalType(18, 2), "highest metric value that received the score"),
        _c("customers", LongType(), "customers with the score"),
        _c("is_degenerate", BooleanType(), "the dimension has fewer distinct scores than bins"),
    ),
    "Per snapshot date, RFM dimension and score: the value range it covers and its customers",
    ("snapshot_date",),
)

_CONTACT = (
    _c("customer_id", StringType(), "contact key for marketing tools (null: an anonymous visitor)"),
    _c("has_email", BooleanType(), "the person sent a non-empty email (reachable by email)"),
    _c("is_control", BooleanType(), "global control group: keep out of every campaign"),
    _c("control_mixed", BooleanType(), "identity merge crossed the control line: leave out of lift figures"),
)

AUDIENCE_CHANGES = TableSpec(
    "gold/audience_changes",
    _schema(
        _SNAPSHOT_DATE,
        _c("previous_snapshot_date", DateType(), "the snapshot compared with (null on the first)"),
        _c("change_id", StringType(), "stable id: sha256 of date, person and both segments (32 hex)"),
        _c("change", StringType(), "entered (new in the population), left (gone from it) or moved"),
        _c("person_id", StringType(), "person whose segment (and maybe stage) changed on the date"),
        *_CONTACT,
        _c("from_segment", StringType(), "segment on the previous date (null: entered)"),
        _c("to_segment", StringType(), "segment on this date (null: left)"),
        _c("from_stage", StringType(), "stage on the previous date"),
        _c("to_stage", StringType(), "stage on this date"),
    ),
    "Per date, one row per person who entered, left or moved between segments, with contact key and "
    "control flag: what reverse-ETL tools sync (a re-run of a date replaces that date's rows)",
    ("snapshot_date",),
)

AUDIENCE_CURRENT = TableSpec(
    "gold/audience_current",
    _schema(
        _SNAPSHOT_DATE,
        _c("person_id", StringType(), "the key: one row per person of the latest snapshot date"),
        *_CONTACT,
        _c("segment", StringType(), "segment on the latest date"),
        _c("segment_name", StringType(), "segment display name"),
        _c("stage", StringType(), "lifecycle stage"),
    ),
    "Every person of the latest published date with segment, contact key and control flag; replaced "
    "as a whole, so tools diff it by person_id",
    ("snapshot_date",),
)

SEGMENT_CATALOG = TableSpec(
    "gold/segment_catalog",
    _schema(
        _c(
            "rules_version",
            StringType(),
            "hash of the segment rules file's content (see SegmentModel.version)",
        ),
        _c("position", IntegerType(), "order of the rule: the first matching rule wins"),
        _c("segment", StringType(), "segment id"),
        _c("segment_name", StringType(), "display name"),
        _c("stage", StringType(), "lifecycle stage"),
        _c("rule", StringType(), "the rule as JSON: when conditions and RFM cells"),
        _c("goal", StringType(), "what the segment's campaigns aim for"),
        _c("campaigns", StringType(), "recommended campaign types, comma-separated"),
        _c("channels", StringType(), "recommended channels, comma-separated"),
        _c("priority", IntegerType(), "1 = act first"),
    ),
    "One row per segment per version of the rules: the conditions and the playbook (goal, campaigns, "
    "channels, priority) marketing acts on",
    ("rules_version",),
)

_N = LongType()
_RATE = DoubleType()
_AVERAGE = DecimalType(24, 8)  # revenue / count: exact enough that count x average is revenue within a cent

LIFECYCLE_KPIS = TableSpec(
    "gold/lifecycle_kpis",
    _schema(
        _SNAPSHOT_DATE,
        _c("scope_type", StringType(), "all, stage or segment"),
        _c("scope", StringType(), "'all', the stage or the segment id (every one on every date)"),
        _c("population", _N, "persons of the scope on D (customer-level)"),
        _c("customers", _N, "persons with a valid order dated <= D"),
        _c("visitors", _N, "persons without one"),
        _c("new_customers", _N, "customers whose first valid order is dated D"),
        _c("previous_visitors", _N, "visitors of the previous snapshot (scope: their segment/stage then)"),
        _c(
            "converted_visitors",
            _N,
            "of those, customers on D (an anonymous id counts under the customer it maps to on D)",
        ),
        _c("visitor_conversion_rate", _RATE, "converted_visitors / previous_visitors (null when 0)"),
        _c("repeat_customers", _N, "customers with >= 2 valid orders up to D (lifetime)"),
        _c("repeat_purchase_rate", _RATE, "repeat_customers / customers"),
        _c("buyers", _N, "customers with a valid order dated D"),
        _c("returning_buyers", _N, "buyers whose first valid order is before D"),
        _c("returning_customer_rate", _RATE, "returning_buyers / buyers (returning + first-time)"),
        _c("retention_base", _N, "customers already customers at the window start D - kpis.retention_days"),
        _c("retained", _N, "of those, customers with a valid order in (D - retention_days, D]"),
        _c("retention_rate", _RATE, "retained / retention_base"),
        _c("churned", _N, "of the base, no order in the window and in the reactivate stage on D"),
        _c("churn_rate", _RATE, "churned / retention_base"),
        _c("orders_d", _N, "valid orders dated D (order-level; latest version as of D decides)"),
        _c("revenue_d", MONEY, "sum of amount_base of those orders"),
        _c("orders_30d", _N, "valid orders dated in [D - 29, D] (trailing 30 days)"),
        _c("revenue_30d", MONEY, "their amount_base"),
        _c("avg_order_value_30d", _AVERAGE, "revenue_30d / orders_30d (null when no order)"),
        _c("orders_365d", _N, "valid orders dated in [D - 364, D] (trailing 365 days)"),
        _c("revenue_365d", MONEY, "their amount_base"),
        _c("revenue_per_customer_365d", _AVERAGE, "revenue_365d / customers of the scope"),
        _c(
            "median_days_first_to_second",
            DoubleType(),
            "median days from the first to the second valid order, customers with >= 2 (same day = 0)",
        ),
        _c("entered", _N, "persons in the scope on D who were not on the previous date (new included)"),
        _c("left", _N, "persons in the scope on the previous date who are not on D (leavers included)"),
    ),
    "Per snapshot date and scope (all, each stage, each segment): the lifecycle KPIs; definitions in "
    "docs/tables-and-definitions.md",
    ("snapshot_date",),
)

COHORT_RETENTION = TableSpec(
    "gold/cohort_retention",
    _schema(
        _c("activity_month", DateType(), "first day of the month the row describes"),
        _c("cohort_month", DateType(), "first day of the month of the customers' first valid order"),
        _c(
            "months_since_first",
            IntegerType(),
            "activity_month - cohort_month in months (0 = the first month)",
        ),
        _c("cohort_size", _N, "customers whose first valid order is in cohort_month"),
        _c("active_customers", _N, "of them, customers with a valid order dated in activity_month"),
        _c(
            "cumulative_revenue",
            MONEY,
            "amount_base of the cohort's valid orders from cohort_month through as_of_date",
        ),
        _c(
            "as_of_date",
            DateType(),
            "orders as of this date decided (the month's last day once the month has ended: never rewritten)",
        ),
    ),
    "Per activity month and acquisition cohort: size, customers ordering that month and cumulative "
    "revenue; a month that has ended is final",
    ("activity_month",),
)

PIPELINE_RUNS = TableSpec(
    "meta/pipeline_runs",
    _schema(
        _c("run_id", StringType(), "unique id of the run; also in every Delta commit it made"),
        _c("job", StringType(), "run, backfill, ingest..."),
        _c("snapshot_dates", StringType(), "comma-separated snapshot dates the run published"),
        _c("started_at", TimestampType(), "start, UTC"),
        _c("ended_at", TimestampType(), "end, UTC"),
        _c("status", StringType(), "succeeded, failed or failed_validation"),
        _c("engine", StringType(), "delta-rs or delta-spark"),
        _c(
            "counts_json",
            StringType(),
            "per-feed counts: delivered, accepted, quarantined, duplicates; outputs",
        ),
        _c("validation", StringType(), "validation outcome summary"),
        _c("table_versions", StringType(), "JSON of table -> Delta version written"),
        _c("error", StringType(), "one-line error message when the run failed"),
    ),
    "One row per job run, successful or not",
)

CUSTOMER_PREDICTIONS = TableSpec(
    "gold/customer_predictions",
    _schema(
        _SNAPSHOT_DATE,
        _c("person_id", StringType(), "customer (visitors have no purchase history to model)"),
        _c("repeat_purchases", IntegerType(), "x: distinct order days up to D, minus the first"),
        _c("first_to_last_order_days", IntegerType(), "t_x: days from the first to the last order day"),
        _c("first_order_age_days", IntegerType(), "T: days from the first order day to D"),
        _c("avg_repeat_value", MONEY, "m_x: mean value of the repeat order days (null when x = 0)"),
        _c("p_alive", DoubleType(), "BG/NBD probability that the customer is still active at D"),
        _c("expected_purchases", DoubleType(), "BG/NBD expected order days in (D, D + horizon_days]"),
        _c("predicted_order_value", MONEY, "Gamma-Gamma expected value of a future order day"),
        _c("predicted_clv", MONEY, "expected_purchases x predicted_order_value, undiscounted"),
        _c(
            "churn_risk_decile",
            IntegerType(),
            "1..10 by 1 - p_alive among the date's customers (10 = riskiest)",
        ),
    ),
    "Per snapshot date and customer: churn risk and predicted value over the horizon (predict.*)",
    ("snapshot_date",),
)

FREQUENCY_CAP = 7  # holdout buckets of gold/clv_model: repeat purchases 0 .. 6 and 7 or more

CLV_MODEL = TableSpec(
    "gold/clv_model",
    _schema(
        _SNAPSHOT_DATE,
        _c("status", StringType(), "fitted, not_converged or not_fitted"),
        _c("reason", StringType(), "why a model was not fitted or did not converge (null when fitted)"),
        _c("unit_days", IntegerType(), "the models' time unit in days"),
        _c("horizon_days", IntegerType(), "the prediction horizon in days"),
        _c("customers", LongType(), "customers the BG/NBD fit saw"),
        _c("repeat_buyers", LongType(), "customers with x > 0 (the Gamma-Gamma fit)"),
        _c("purchase_patterns", LongType(), "distinct (x, t_x, T) the driver received"),
        _c("spend_patterns", LongType(), "distinct (x, m_x) the driver received"),
        _c("r", DoubleType(), "BG/NBD: shape of the purchase-rate gamma"),
        _c("alpha", DoubleType(), "BG/NBD: scale of the purchase-rate gamma (in units)"),
        _c("a", DoubleType(), "BG/NBD: dropout beta a"),
        _c("b", DoubleType(), "BG/NBD: dropout beta b"),
        _c("bgnbd_loglik", DoubleType(), "BG/NBD log-likelihood at the estimates"),
        _c("p", DoubleType(), "Gamma-Gamma: shape of the order value"),
        _c("q", DoubleType(), "Gamma-Gamma: shape of the customers' mean value"),
        _c("gamma", DoubleType(), "Gamma-Gamma: scale of the customers' mean value"),
        _c("gamma_gamma_loglik", DoubleType(), "Gamma-Gamma log-likelihood at the estimates"),
        _c(
            "parameter_drift",
            DoubleType(),
            "largest relative change of r, alpha, a, b since the previous fit",
        ),
        _c("holdout_days", IntegerType(), "clm predict-eval: days after D compared with the predictions"),
        _c("holdout_customers", LongType(), "clm predict-eval: customers of D compared"),
        _c("holdout_predicted", DoubleType(), "clm predict-eval: expected order days in the holdout, summed"),
        _c("holdout_actual", LongType(), "clm predict-eval: actual order days in the holdout, summed"),
        _c("holdout_relative_error", DoubleType(), "clm predict-eval: |predicted - actual| / actual"),
        _c(
            "holdout_by_frequency",
            StringType(),
            f"clm predict-eval: JSON [{{x, customers, predicted, actual}}], x = {FREQUENCY_CAP} means {FREQUENCY_CAP}+",
        ),
    ),
    "Per snapshot date: the fitted BG/NBD and Gamma-Gamma models behind gold/customer_predictions",
    ("snapshot_date",),
)

PREDICTION_TABLES = (CUSTOMER_PREDICTIONS, CLV_MODEL)  # written when predict.enabled

GOLD_TABLES = (
    CUSTOMER_SNAPSHOT,
    SEGMENT_TRANSITIONS,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_SUMMARY,
    RFM_CUTPOINTS,
    AUDIENCE_CHANGES,
    AUDIENCE_CURRENT,
    SEGMENT_CATALOG,
    LIFECYCLE_KPIS,
    COHORT_RETENTION,
)

ALL_TABLES = (
    BRONZE_CLICKSTREAM,
    BRONZE_ORDERS,
    SILVER_EVENTS,
    SILVER_ORDERS,
    SILVER_IDENTITY,
    SILVER_ACTIVITY_STATE,
    SILVER_QUARANTINE,
    *GOLD_TABLES,
    *PREDICTION_TABLES,
    PIPELINE_RUNS,
)
