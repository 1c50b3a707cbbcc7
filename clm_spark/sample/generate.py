"""Synthetic raw lake (SPEC §2): realistic lifecycle behaviour plus every kind of bad input.

Vectorised per day with numpy (no per-event Python decisions); the same seed gives the same
bytes (gzip mtime is fixed, iteration orders are fixed).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from clm_spark import compat

log = logging.getLogger(__name__)

DAY = 86_400
EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "page_view", "product_view")  # drawn uniformly
EVENT_NAMES = (*EVENT_TYPES, "login", "email_signup")
LOGIN, SIGNUP = len(EVENT_TYPES), len(EVENT_TYPES) + 1
WITH_PRODUCT = frozenset(i for i, name in enumerate(EVENT_NAMES) if name in ("product_view", "add_to_cart"))
OFFSETS = [(0, "Z"), (60, "+01:00"), (-300, "-05:00"), (330, "+05:30"), (0, "+00:00")]
CURRENCIES = np.array(["EUR", "USD", "GBP", "SEK"])
CURRENCY_P = [0.6, 0.25, 0.1, 0.05]
PARALLEL_FROM = 2_000_000  # persons x days from which a pool of writers pays for its start-up
ORDER_COLUMNS = ["order_id", "customer_id", "order_time", "updated_at", "status", "amount", "currency"]


@dataclass
class GenerateStats:
    persons: int
    days: int
    event_lines: int = 0
    order_lines: int = 0
    files: int = 0
    bad_lines: int = 0
    seconds: float = 0.0
    by_kind: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.event_lines + self.order_lines) / self.seconds if self.seconds else 0.0


def _iso(seconds: np.ndarray, offset_idx: np.ndarray, frac: np.ndarray | None = None) -> list[str]:
    """UTC epoch seconds -> ISO-8601 strings in the chosen local offsets."""
    shift = np.array([o[0] for o in OFFSETS])[offset_idx] * 60
    local = (np.datetime64("1970-01-01T00:00:00") + (seconds + shift).astype("timedelta64[s]")).astype(str)
    suffix = np.array([o[1] for o in OFFSETS])[offset_idx]
    if frac is None:
        return [a + b for a, b in zip(local.tolist(), suffix.tolist(), strict=True)]
    fr = [f".{f:03d}" if f >= 0 else "" for f in frac.tolist()]
    return [a + c + b for a, b, c in zip(local.tolist(), suffix.tolist(), fr, strict=True)]


class _Sink:
    """Writes each output file as soon as its lines are complete (memory stays bounded by one day)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: set[str] = set()

    def claim(self, names) -> None:
        for rel in names:  # every producer names its files uniquely; a repeat is a bug
            if rel in self.written:
                raise ValueError(f"generator wrote {rel} twice")
            self.written.add(rel)

    def add(self, rel: str, lines: list[str], header: str | None = None) -> None:
        self.claim([rel])
        if rel.endswith(".csv") and header is None:
            header = ",".join(ORDER_COLUMNS)
        body = ([header] if header else []) + lines
        data = ("\n".join(body) + "\n").encode() if body else b""
        if rel.endswith(".gz"):
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=1) as gz:
                gz.write(data)
            data = buf.getvalue()
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@dataclass(frozen=True)
class _EventDay:
    """The draws of one day's events: everything `_write_event_day` needs to format them."""

    seed: int
    day: int
    start: date
    persons: np.ndarray
    etime: np.ndarray
    etype: np.ndarray
    offset: np.ndarray
    frac: np.ndarray
    arrival: np.ndarray
    has_customer: np.ndarray
    with_email: np.ndarray
    session: np.ndarray


def _event_lines(ev: _EventDay) -> list[str]:
    """One JSON line per event, formatted in one pass per row (no per-column string arrays)."""
    seed, d = ev.seed, ev.day
    lines = []
    rows = zip(
        ev.persons.tolist(),
        _iso(ev.etime, ev.offset, ev.frac),
        ev.etype.tolist(),
        ev.has_customer.tolist(),
        ev.with_email.tolist(),
        ev.session.tolist(),
        strict=True,
    )
    for j, (p, when, kind, cust, mail, sess) in enumerate(rows):
        customer = f',"customer_id":"C{p:07d}"' if cust else ""
        email = ""
        if mail:
            email = f',"email":" User{p}@Example.com "' if j % 5 == 0 else f',"email":"user{p}@example.com"'
        product = f',"product_id":"P{(p * 7 + j) % 500:04d}"' if kind in WITH_PRODUCT else ""
        lines.append(
            f'{{"event_id":"E{seed}-{d:04d}-{j:08d}","event_time":"{when}","event_type":"{EVENT_NAMES[kind]}",'
            f'"anonymous_id":"anon-{seed}-{p:07d}"{customer},"session_id":"S{p}-{d}-{sess}"{email}{product},'
            f'"page_url":"/p/{j % 97}"}}'
        )
    return lines


def _write_event_day(
    out: Path, ev: _EventDay, bad_idx: np.ndarray, bad_kinds: list[str]
) -> tuple[int, set[str]]:
    """Format, corrupt and write one day's events (in a worker process); returns lines and files written."""
    lines = _event_lines(ev)
    for j, bad in zip(bad_idx.tolist(), bad_kinds, strict=True):
        lines[j] = _corrupt_event(lines[j], bad)
    sink = _Sink(out)
    count = 0
    for a in (ev.day, ev.day + 1):
        arrived = [lines[i] for i in np.flatnonzero(ev.arrival == a).tolist()]
        if not arrived:
            continue
        sink.add(
            f"clickstream/dt={(ev.start + timedelta(days=a)).isoformat()}/events-{ev.day:04d}.json.gz",
            arrived,
        )
        count += len(arrived)
        redeliver = arrived[(ev.day * 7) % 200 :: 200]
        if redeliver:
            nxt = (ev.start + timedelta(days=a + 1)).isoformat()
            sink.add(f"clickstream/dt={nxt}/redelivery-{ev.day:04d}.json", redeliver)
            count += len(redeliver)
    return count, sink.written


def _start_method() -> str:
    """How worker processes start: fork, unless this process talks to a Spark JVM.

    fork is quick and works from any script, but a forked child shares the parent's sockets, and
    the py4j gateway connection must not be touched by another process (`clm bench` generates
    inside its Spark session). spawn starts clean, and needs the caller's main module to be
    import-safe (`clm` and pytest are).
    """
    return "spawn" if compat.jvm_gateway_open() else "fork"


class _DayWriter:
    """Runs day writers inline (one worker) or in a process pool, a few days ahead at most."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_start_method()))
        self.ahead = 2 * workers
        self.pending: list[Future] = []
        self.lines = 0
        self.written: list[str] = []

    def _take(self, result: tuple[int, set[str]]) -> None:
        self.lines += result[0]
        self.written.extend(sorted(result[1]))

    def submit(self, fn, *args) -> None:
        if self.pool is None:
            self._take(fn(*args))
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.ahead:  # bounds memory: each pending day holds its draws
            self._take(self.pending.pop(0).result())

    def results(self) -> tuple[int, list[str]]:
        """Lines and files written by every day submitted (waits for the pending ones)."""
        while self.pending:
            self._take(self.pending.pop(0).result())
        return self.lines, self.written

    def __enter__(self) -> _DayWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _corrupt_event(line: str, kind: str) -> str:
    if kind == "malformed":
        return line[: len(line) // 2]
    if kind == "not_object":
        return "[" + json.dumps(line[:10]) + "]"
    if kind == "missing_field":
        return line.replace('"event_type":', '"event_kind":', 1)
    if kind == "bad_timestamp":
        return line.replace('"event_time":"20', '"event_time":"20x', 1)
    if kind == "clock_error":
        return line.replace('"event_time":"20', '"event_time":"29', 1)
    return line


def _corrupt_order(fields: list[str], kind: str) -> list[str]:
    fields = list(fields)
    if kind == "missing_field":
        fields[0] = ""
    elif kind == "bad_timestamp":
        fields[2] = fields[2][:19]
    elif kind == "negative_amount":
        fields[5] = "-" + fields[5]
    elif kind == "bad_amount":
        fields[5] = fields[5] + "5" if "." in fields[5] else "1e3"
    elif kind == "unknown_currency":
        fields[6] = "XYZ"
    elif kind == "unknown_status":
        fields[4] = "shipped"
    elif kind == "clock_error":
        fields[3] = "2999" + fields[3][4:]
    return fields


EVENT_BAD = ["malformed", "not_object", "missing_field", "bad_timestamp", "clock_error"]
ORDER_BAD = [
    "missing_field",
    "bad_timestamp",
    "negative_amount",
    "bad_amount",
    "unknown_currency",
    "unknown_status",
    "clock_error",
]


def generate(
    out: str | Path,
    persons: int,
    days: int,
    start: date,
    seed: int = 7,
    bad_rate: float = 0.01,
    workers: int | None = None,
) -> GenerateStats:
    """Write clickstream/ and orders/ under `out`; return what was written and how fast.

    Draws happen in order in this process; each day's events are formatted and written by
    `workers` processes (default: one per core for a large lake, none for a small one), so the
    bytes are the same whatever the number of workers.
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if persons * days >= PARALLEL_FROM else 1
    t0 = time.perf_counter()
    out = Path(out)
    rng = np.random.default_rng(seed)
    stats = GenerateStats(persons=persons, days=days)
    sink = _Sink(out)
    n = persons
    epoch0 = int((start - date(1970, 1, 1)).days) * DAY

    kind = rng.choice(5, size=n, p=[0.45, 0.2, 0.26, 0.03, 0.06])  # visitor, one-time, repeat, big, churner
    is_buyer = kind > 0
    registers = (~is_buyer) & (rng.random(n) < 0.15)  # logs in, never buys
    email_flag = np.where(is_buyer, rng.random(n) < 0.8, rng.random(n) < 0.3)
    first_day = rng.integers(0, max(1, days // 2), size=n)
    last_day = np.where(kind == 4, first_day + rng.integers(3, max(4, days // 2), size=n), days + 10)
    event_rate = rng.lognormal(mean=-0.9, sigma=0.7, size=n)
    order_rate = np.select([kind == 2, kind == 3, kind == 4], [rng.uniform(0.02, 0.25, n), 0.3, 0.15], 0.0)
    one_time_day = first_day + rng.integers(0, max(1, days - first_day.max()), size=n)
    login_day = np.where(registers, first_day + rng.integers(0, 5, size=n), 10**6)
    money_scale = np.where(kind == 3, 12.0, 1.0)
    season = 1 + 0.25 * np.sin(np.arange(days) * 2 * np.pi / 7) + 0.15 * (np.arange(days) % 7 >= 5)
    customer_ids = np.array([f"C{i:07d}" for i in range(n)])
    cust_obj = customer_ids.astype(object)
    first_order_day = np.full(n, 10**6)
    order_seq = 0
    bad_e = bad_o = 0

    with _DayWriter(workers) as writer:
        for d in range(days):
            active = (first_day <= d) & (d <= last_day)
            # -- orders first: they decide when a buyer becomes identified
            k_orders = rng.poisson(order_rate * season[d]) * active * (kind >= 2)
            k_orders = k_orders + ((kind == 1) & (one_time_day == d))
            opersons = np.repeat(np.arange(n), k_orders)
            first_order_day[opersons] = np.minimum(first_order_day[opersons], d)
            m = opersons.size
            if m:
                otime = epoch0 + d * DAY + rng.integers(0, DAY, size=m)
                cents = np.maximum(
                    100, (rng.lognormal(3.6, 0.8, size=m) * 100 * money_scale[opersons]).astype(np.int64)
                )
                ccy = rng.choice(CURRENCIES, size=m, p=CURRENCY_P)
                fate = rng.choice(
                    4, size=m, p=[0.86, 0.06, 0.04, 0.04]
                )  # completed, cancelled, refunded, stays placed
                ids = [f"O{seed}-{order_seq + j:09d}" for j in range(m)]
                order_seq += m
                off = rng.integers(0, len(OFFSETS), size=m)
                versions = [(otime, "placed")]
                done = otime + rng.integers(3600, 3 * DAY, size=m)
                versions.append((np.where(fate == 1, otime + rng.integers(600, DAY, size=m), done), None))
                versions.append((done + rng.integers(5 * DAY, 20 * DAY, size=m), "refunded"))
                obj_amount = np.array([f"{c // 100}.{c % 100:02d}" for c in cents.tolist()], dtype=object)
                obj_otime = np.array(_iso(otime, off), dtype=object)
                obj_ids = np.array(ids, dtype=object)
                for vi, (vtime, vstatus) in enumerate(versions):
                    keep = np.ones(m, bool) if vi == 0 else (fate != 3) if vi == 1 else (fate == 2)
                    status = np.where(fate == 1, "cancelled", "completed") if vi == 1 else np.full(m, vstatus)
                    status = np.where(rng.random(m) < 0.05, np.char.capitalize(status.astype(str)), status)
                    upd = _iso(vtime, off)
                    arrival = ((vtime - epoch0) // DAY).astype(np.int64)
                    arrival = arrival + (rng.random(m) < 0.01)  # late arrivals
                    fields = [
                        obj_ids,
                        cust_obj[opersons],
                        obj_otime,
                        np.asarray(upd, dtype=object),
                        status.astype(object),
                        obj_amount,
                        ccy.astype(object),
                    ]
                    cols = [f[keep] for f in fields]
                    arr = arrival[keep]
                    bad_rows = np.flatnonzero(rng.random(arr.size) < bad_rate).tolist()
                    for j in bad_rows:
                        bad = ORDER_BAD[bad_o % len(ORDER_BAD)]
                        row = _corrupt_order([c[j] for c in cols], bad)
                        for c, v in zip(cols, row, strict=True):
                            c[j] = v
                        stats.by_kind[f"orders:{bad}"] = stats.by_kind.get(f"orders:{bad}", 0) + 1
                        bad_o += 1
                    csv_lines = cols[0]
                    for c in cols[1:]:
                        csv_lines = csv_lines + "," + c
                    number = np.array([_plain_amount(a) for a in cols[5].tolist()], dtype=bool) & (
                        np.arange(arr.size) % 2 == 1
                    )
                    amount_json = np.where(number, cols[5], '"' + cols[5] + '"')
                    json_lines = (
                        '{"order_id":"'
                        + cols[0]
                        + '","customer_id":"'
                        + cols[1]
                        + '","order_time":"'
                        + cols[2]
                        + '","updated_at":"'
                        + cols[3]
                        + '","status":"'
                        + cols[4]
                        + '","amount":'
                        + amount_json
                        + ',"currency":"'
                        + cols[6]
                        + '"}'
                    )
                    for a in np.unique(arr).tolist():
                        if a >= days + 25:
                            continue
                        sel = arr == a
                        as_json = a % 7 == 3
                        adate = (start + timedelta(days=a)).isoformat()
                        rel = f"orders/dt={adate}/orders-d{d:04d}-v{vi}.{'json' if as_json else 'csv'}"
                        lines = (json_lines if as_json else csv_lines)[sel].tolist()
                        sink.add(rel, lines)
                        stats.order_lines += len(lines)
                        again = lines[(a * 13) % 200 :: 200]
                        if again:
                            sink.add(rel.replace("orders-", "redelivery-"), again)
                            stats.order_lines += len(again)

            # -- events
            k = rng.poisson(event_rate * season[d]) * active
            k = k + (active & (first_day == d) & email_flag)  # sign-up / first login event
            epersons = np.repeat(np.arange(n), k)
            if opersons.size:
                epersons = np.concatenate([epersons, opersons])  # a login at checkout links the device
            e = epersons.size
            if not e:
                continue
            etime = epoch0 + d * DAY + rng.integers(0, DAY, size=e)
            if opersons.size:
                etime[-opersons.size :] = otime - rng.integers(1, 600, size=opersons.size)
            etype = rng.integers(0, len(EVENT_TYPES), size=e).astype(np.int8)  # an index into EVENT_NAMES
            identified = (first_order_day[epersons] <= d) | (login_day[epersons] <= d)
            logged_in = identified & (rng.random(e) < 0.75)
            is_login = np.zeros(e, bool)
            if opersons.size:
                is_login[-opersons.size :] = True
                logged_in[-opersons.size :] = True
            signup = (first_day[epersons] == d) & email_flag[epersons] & ~is_login & (rng.random(e) < 0.5)
            etype[is_login] = LOGIN
            etype[signup] = SIGNUP
            with_email = (is_login | signup) & email_flag[epersons]
            off = rng.integers(0, len(OFFSETS), size=e)
            frac = np.where(rng.random(e) < 0.3, rng.integers(0, 1000, size=e), -1)
            arrival = d + (rng.random(e) < 0.01)
            walk_in = registers[epersons] & (login_day[epersons] <= d) & ~logged_in & (rng.random(e) < 0.5)
            has_cust = logged_in | walk_in
            sess = rng.integers(0, 4, size=e)
            bad_idx = np.flatnonzero(rng.random(e) < bad_rate)
            bad_kinds = [EVENT_BAD[(bad_e + i) % len(EVENT_BAD)] for i in range(bad_idx.size)]
            for bad in bad_kinds:
                stats.by_kind[f"clickstream:{bad}"] = stats.by_kind.get(f"clickstream:{bad}", 0) + 1
            bad_e += len(bad_kinds)
            day = _EventDay(
                seed, d, start, epersons, etime, etype, off, frac, arrival, has_cust, with_email, sess
            )
            writer.submit(_write_event_day, out, day, bad_idx, bad_kinds)

        stats.event_lines, written = writer.results()
    sink.claim(written)
    if bad_rate > 0:
        first = start.isoformat()
        sink.add(f"clickstream/dt={first}/empty.json", [])
        sink.add(f"orders/dt={first}/header-only.csv", [])  # a CSV header alone: an empty file
        stats.by_kind["clickstream:empty_file"] = 1
        stats.by_kind["orders:empty_file"] = 1
    stats.files = len(sink.written)
    if bad_rate > 0:
        broken = out / f"clickstream/dt={start.isoformat()}/broken.json.gz"
        broken.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(60)))
        stats.by_kind["clickstream:corrupt_file"] = 1
        stats.files += 1
    for skipped in ("clickstream/_SUCCESS", "orders/.staging.csv"):
        (out / skipped).write_text("ignored\n")
    stats.bad_lines = bad_e + bad_o
    stats.seconds = time.perf_counter() - t0
    log.info(
        "generated %d event lines, %d order lines in %d files (%.0f lines/s)",
        stats.event_lines,
        stats.order_lines,
        stats.files,
        stats.rate,
    )
    return stats


def _plain_amount(text: str) -> bool:
    return text.replace(".", "", 1).isdigit()
