"""The single-node peer of `clm bench`: the same snapshot of D computed by DuckDB SQL.

It reads the silver tables' current Parquet files (listed from the Delta log with `deltalake`)
and follows the same definitions as `lifecycle/snapshot.py` (SPEC §4, §8): identity as of D,
latest order versions, population, metrics, SQL `percent_rank` over customers, scores and the
segment rules rendered as one SQL CASE. `compare` counts rows that differ from our published
snapshot in either direction (0 = identical persons, metrics, percentiles, scores and segments).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta

from deltalake import DeltaTable

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.lifecycle.snapshot import VALID_STATUSES, SnapshotParams

COMPARED = (
    "person_id, customer_id, is_customer, has_email, first_seen_date, last_activity_date, "
    "first_order_date, last_order_date, orders_lifetime, recency_days, frequency, monetary, "
    "r_percentile, f_percentile, m_percentile, r_score, f_score, m_score, rfm_cell, segment"
)


@dataclass
class BaselineResult:
    seconds: float
    rows: int
    mismatches: int


def _files(root: str, name: str) -> str:
    uris = DeltaTable(f"{root.rstrip('/')}/{name}").file_uris()
    return "[" + ", ".join("'" + u.removeprefix("file://").replace("'", "''") + "'" for u in uris) + "]"


def snapshot_sql(root: str, d: date, params: SnapshotParams, model: SegmentModel) -> str:
    b = params.score_bins
    day = f"DATE '{d.isoformat()}'"
    since = f"DATE '{(d - timedelta(days=params.lookback_days)).isoformat()}'"
    active = f"DATE '{(d - timedelta(days=params.active_days)).isoformat()}'"
    statuses = ", ".join(f"'{s}'" for s in VALID_STATUSES)

    def score(p: str) -> str:
        return f"CASE WHEN {p} IS NOT NULL THEN least({b}, CAST(floor({p} * {b}) AS INTEGER) + 1) END"

    def pct(key: str) -> str:
        return (
            f"CASE WHEN is_customer THEN CASE WHEN n_cust = 1 THEN 0.0 ELSE "
            f"(rank() OVER (PARTITION BY is_customer ORDER BY {key}) - 1) / (n_cust - 1) END END"
        )

    return f"""
    WITH events AS (SELECT * FROM read_parquet({_files(root, "silver/events")})),
    orders AS (SELECT * FROM read_parquet({_files(root, "silver/orders")})),
    identity AS (SELECT * FROM read_parquet({_files(root, "silver/identity")})),
    links AS (
        SELECT anonymous_id, max({{'t': event_time, 'c': customer_id}}).c AS mapped
        FROM identity WHERE CAST(event_time AS DATE) <= {day} GROUP BY anonymous_id),
    activity AS (
        SELECT coalesce(e.customer_id, l.mapped, 'anon:' || e.anonymous_id) AS person_id,
               min(event_date) AS first_event_date, max(event_date) AS last_event_date,
               bool_or(coalesce(has_email, false)) AS ev_has_email,
               max(coalesce(e.customer_id, l.mapped)) AS known_customer_id
        FROM events e LEFT JOIN links l USING (anonymous_id)
        WHERE event_date <= {day} GROUP BY 1),
    latest AS (
        SELECT max({{'u': updated_at, 'customer_id': customer_id, 'order_date': order_date,
                     'status': status, 'amount_base': amount_base}}) AS v
        FROM orders WHERE CAST(updated_at AS DATE) <= {day} GROUP BY order_id),
    valid AS (
        SELECT v.customer_id AS customer_id, v.order_date AS order_date, v.amount_base AS amount_base
        FROM latest WHERE v.status IN ({statuses}) AND v.order_date <= {day}),
    metrics AS (
        SELECT customer_id AS person_id, count(*) AS orders_lifetime,
               min(order_date) AS first_order_date, max(order_date) AS last_order_date,
               count(*) FILTER (WHERE order_date > {since}) AS frequency,
               coalesce(sum(amount_base) FILTER (WHERE order_date > {since}), 0) AS monetary
        FROM valid GROUP BY 1),
    people AS (
        SELECT coalesce(m.person_id, a.person_id) AS person_id,
               CASE WHEN m.orders_lifetime IS NOT NULL THEN m.person_id ELSE a.known_customer_id END
                   AS customer_id,
               m.orders_lifetime IS NOT NULL AS is_customer,
               coalesce(a.ev_has_email, false) AS has_email,
               least(a.first_event_date, m.first_order_date) AS first_seen_date,
               greatest(a.last_event_date, m.last_order_date) AS last_activity_date,
               m.first_order_date, m.last_order_date,
               coalesce(m.orders_lifetime, 0)::INTEGER AS orders_lifetime,
               ({day} - m.last_order_date)::INTEGER AS recency_days,
               coalesce(m.frequency, 0)::INTEGER AS frequency,
               CAST(coalesce(m.monetary, 0) AS DECIMAL(18, 2)) AS monetary
        FROM metrics m FULL JOIN activity a USING (person_id)
        WHERE m.orders_lifetime IS NOT NULL OR a.last_event_date > {active}),
    -- n_cust counts the customers for customer rows (visitors get no percentile); a filtered
    -- count OVER () is evaluated row by row in DuckDB: 700 CPU-seconds at 1M persons
    counted AS (SELECT *, count(*) OVER (PARTITION BY is_customer) AS n_cust FROM people),
    ranked AS (
        SELECT * EXCLUDE (n_cust),
               {pct("-recency_days")}::DOUBLE AS r_percentile,
               {pct("frequency")}::DOUBLE AS f_percentile,
               {pct("monetary")}::DOUBLE AS m_percentile
        FROM counted),
    scored AS (
        SELECT *, {score("r_percentile")} AS r_score, {score("f_percentile")} AS f_score,
               {score("m_percentile")} AS m_score
        FROM ranked),
    celled AS (
        SELECT *, CASE WHEN is_customer THEN r_score::VARCHAR || f_score::VARCHAR || m_score::VARCHAR END
                  AS rfm_cell
        FROM scored)
    SELECT *, {segment_sql(model)} AS segment FROM celled
    """


def run_baseline(root: str, d: date, params: SnapshotParams, model: SegmentModel, threads: int = 2):
    """Compute D's snapshot in DuckDB; returns (connection holding table `duck`, seconds, rows)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    t0 = time.perf_counter()
    con.execute(f"CREATE TABLE duck AS {snapshot_sql(root, d, params, model)}")
    seconds = time.perf_counter() - t0
    rows = con.execute("SELECT count(*) FROM duck").fetchall()[0][0]
    return con, seconds, rows


def compare(con, root: str, d: date) -> int:
    """Rows of D in gold/customer_snapshot and in `duck` that are not in the other (0 = identical)."""
    ours = DeltaTable(f"{root.rstrip('/')}/gold/customer_snapshot").to_pyarrow_dataset()
    con.register("ours_all", ours)
    con.execute(f"CREATE TABLE ours AS SELECT * FROM ours_all WHERE snapshot_date = DATE '{d.isoformat()}'")
    query = f"""SELECT (SELECT count(*) FROM (SELECT {COMPARED} FROM ours EXCEPT ALL SELECT {COMPARED} FROM duck))
                     + (SELECT count(*) FROM (SELECT {COMPARED} FROM duck EXCEPT ALL SELECT {COMPARED} FROM ours))"""
    return con.execute(query).fetchall()[0][0]


def segment_sql(model: SegmentModel) -> str:
    """The segment rules' first-match CASE as SQL text (as `SegmentModel.segment_column`)."""
    arms = []
    for rule in model.rules:
        conds = []
        if rule.cells is not None:
            cells = ", ".join(f"'{c}'" for c in sorted(rule.cells))
            conds.append(f"coalesce(rfm_cell IN ({cells}), false)")
        for field, cond in rule.when:
            if isinstance(cond, tuple):
                lo, hi = cond
                parts = [f"{field} IS NOT NULL"]
                parts += [f"{field} >= {lo}"] if lo is not None else []
                parts += [f"{field} <= {hi}"] if hi is not None else []
                conds.append("(" + " AND ".join(parts) + ")")
            else:
                literal = str(cond).lower() if isinstance(cond, bool) else str(int(cond))
                conds.append(f"coalesce({field} = {literal}, false)")
        arms.append(f"WHEN {' AND '.join(conds) or 'true'} THEN '{rule.id}'")
    return "CASE " + " ".join(arms) + " END"
