"""Benchmarks on a large stored history: ingest against an empty database, a config's last hour, ingest while purging."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench import benchmarks, c_load, workload
from bench.procs import ServerProcess, database_cpu_seconds, fresh_database
from postbacks.v1 import delivery_log_pb2, delivery_log_service_pb2, delivery_log_service_pb2_grpc
from server.store import log_partitions
from server.store.db import Database
from server.store.models import DeliveryLog

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
RETENTION_DAYS = 30  # the server's default --log-retention-days
# Logs reach back one day past retention (less an hour of margin): that day is what a purge removes.
LOG_SPAN_US = (RETENTION_DAYS + 1) * DAY_US - HOUR_US
# Attempts of the last hour across the game's configs, whatever the history's size: the queried config's share is
# a few thousand, as for a game sending a few postbacks a second.
LAST_HOUR_LOGS = 7_000
# The last hour's rows are spread over its first 55 minutes' worth back from the load, so the minutes between
# the load and the listing keep them all inside "the last hour".
LAST_HOUR_SPAN_US = 55 * 60_000_000
QUERIED_CONFIG = "tiktok"  # the config benchmarks.create_config makes, live: the benchmark's conversions owe to it
# The game's older configs, deleted since: their logs stay listable until they expire, and they owe nothing new.
OLD_CONFIGS = ("tiktok-spring", "tiktok-retargeting")
CONFIG_SHARES = (6, 2, 2)  # tenths of the logs per config, the queried one first


@dataclass(frozen=True)
class HistorySize:
    events: int
    players: int
    logs: int

    @property
    def events_per_player(self) -> int:
        return self.events // self.players


FULL = HistorySize(events=5_000_000, players=500_000, logs=5_000_000)
QUICK = HistorySize(events=200_000, players=20_000, logs=200_000)


def _size(opts: benchmarks.Options) -> HistorySize:
    return QUICK if opts.quick else FULL


# --- the stored history: pure row generators ----------------------------------------------------------------------

EVENT_COLUMNS = (
    "id", "game_id", "event_id", "kind", "event_time_us", "receive_time_us", "payload_sha256", "user_id",
    "anonymous_id", "email_sha256", "email_sha256_reddit", "ip_address", "user_agent", "network", "click_id",
    "landing_url", "value_micros", "currency", "order_id", "item_ids", "decision", "no_postback_reason",
    "attributed_click_event_id", "decide_time_us",
)
LINK_COLUMNS = ("game_id", "user_id", "anonymous_id", "email_sha256", "email_sha256_reddit", "link_time_us")
DELIVERY_COLUMNS = ("game_id", "event_row_id", "config_row_id", "state", "attempt_count", "next_attempt_time_us",
                    "first_attempt_time_us", "last_attempt_time_us", "create_time_us")
LOG_COLUMNS = (
    "id", "game_id", "config_row_id", "config_id", "config_display_name", "network", "attempt_time_us",
    "event_type", "status", "http_status", "latency_ms", "attempt_number", "network_code", "network_message",
    "network_request_id", "conversion_event_id", "next_attempt_time_us",
)
OWED_PURCHASES = 3  # a paid player's first purchases fall inside the click's window; later ones owe nothing


def _hex64(n: int) -> str:
    """A digest-shaped value, distinct per n (nothing reads it as a digest)."""
    return f"{n * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF:016x}{n:048x}"


def _player_kinds(player: int, per_player: int) -> list[str]:
    """Paid players (half, as in bench.workload) click an ad, sign up, launch and buy; the others do the rest."""
    head = ["ad_click", "identify", "game_launch"] if workload.is_paid(player) else ["identify", "game_launch"]
    return (head + ["purchase"] * per_player)[:per_player]


def _player_start_us(player: int, size: HistorySize, now_us: int) -> int:
    """Players arrive evenly over the 30 days of history, each with a little jitter."""
    span = RETENTION_DAYS * DAY_US - 12 * HOUR_US
    return now_us - RETENTION_DAYS * DAY_US + player * span // size.players + (player * 7_919 % 600) * 1_000_000


def history_events(size: HistorySize, now_us: int) -> Iterator[tuple[Any, ...]]:
    """size.events events of size.players players of the benchmark's game, in EVENT_COLUMNS order, ids from 1:
    each player's events a few minutes to hours apart, decided as the server decides them (paid launches and first
    purchases owe the click's network a postback). Ids start with "h", apart from every benchmark workload's."""
    per_player = size.events_per_player
    row_id = 0
    for p in range(size.players):
        t = _player_start_us(p, size, now_us)
        paid = workload.is_paid(p)
        purchases = 0
        for kind in _player_kinds(p, per_player):
            row_id += 1
            t = min(t + (60 + row_id * 104_729 % 7_200) * 1_000_000, now_us - 120_000_000)
            received = t + 2_000_000
            user = f"hu-{p}"
            anonymous = email = email_reddit = network = click_id = landing = None
            value = currency = order = items = decision = reason = attributed = decided = None
            if kind == "ad_click":
                event_id, user, anonymous, network = f"hc-{p}", None, f"ha-{p}", "tiktok"
                click_id = f"E.C.P.h{p:011d}v2"
                landing = f"https://play.example.com/?utm_source=tiktok&utm_campaign=spring&ttclid={click_id}"
            elif kind == "identify":
                event_id, anonymous = f"hi-{p}", f"ha-{p}"
                email, email_reddit = _hex64(2 * p + 1), _hex64(2 * p + 2)
            else:
                if kind == "game_launch":
                    event_id, owed = f"hl-{p}", paid
                else:
                    event_id, owed = f"hp-{p}-{purchases}", paid and purchases < OWED_PURCHASES
                    value, currency, order, items = 4_990_000, "USD", f"ho-{p}-{purchases}", '["gems_500"]'
                    purchases += 1
                decision = "postback_owed" if owed else "no_postback"
                reason = None if owed else "click_outside_window" if paid else "organic"
                attributed, decided = (f"hc-{p}" if owed else None), received
            yield (row_id, workload.GAME, event_id, kind, t, received, _hex64(row_id), user, anonymous, email,
                   email_reddit, f"10.{(p >> 16) & 255}.{(p >> 8) & 255}.{p & 255}", workload.USER_AGENT, network,
                   click_id, landing, value, currency, order, items, decision, reason, attributed, decided)


def history_links(size: HistorySize, now_us: int) -> Iterator[tuple[Any, ...]]:
    """Each identify event's identity link, in LINK_COLUMNS order."""
    for p in range(size.players):
        yield (workload.GAME, f"hu-{p}", f"ha-{p}", _hex64(2 * p + 1), _hex64(2 * p + 2),
               _player_start_us(p, size, now_us))


def history_deliveries(size: HistorySize, now_us: int, config_row_id: int) -> Iterator[tuple[Any, ...]]:
    """A succeeded delivery to the queried config for each owed conversion of history_events, in DELIVERY_COLUMNS
    order (event row ids as history_events numbers them)."""
    per_player = size.events_per_player
    for p in range(0, size.players):
        if not workload.is_paid(p):
            continue
        kinds = _player_kinds(p, per_player)
        t = _player_start_us(p, size, now_us) + HOUR_US
        purchases = 0
        for k, kind in enumerate(kinds):
            owed = kind == "game_launch" or (kind == "purchase" and purchases < OWED_PURCHASES)
            purchases += kind == "purchase"
            if owed:
                yield (workload.GAME, p * per_player + k + 1, config_row_id, "succeeded", 1, t, t, t, t)


_SHARES = [config for config, share in enumerate(CONFIG_SHARES) for _ in range(share)]


def _log_time(i: int, size: HistorySize, now_us: int) -> int:
    """Row i's attempt time: LAST_HOUR_LOGS in the last hour, the others evenly over the LOG_SPAN_US before."""
    older = size.logs - LAST_HOUR_LOGS
    if i < older:
        return now_us - LOG_SPAN_US + i * (LOG_SPAN_US - HOUR_US) // older
    return now_us - LAST_HOUR_SPAN_US + (i - older) * LAST_HOUR_SPAN_US // LAST_HOUR_LOGS


def history_logs(size: HistorySize, now_us: int, configs: list[tuple[int, str, str]]) -> Iterator[tuple[Any, ...]]:
    """size.logs delivery-log rows of the game's configs ((row id, config id, display name), the queried one first),
    in LOG_COLUMNS order, ids from 1 in attempt order: LAST_HOUR_LOGS in the last hour, the rest evenly over the
    LOG_SPAN_US before it, so the oldest day is past retention. Mostly successes, some retried and failed."""
    for i in range(size.logs):
        t = _log_time(i, size, now_us)
        row_id, config_id, display_name = configs[_SHARES[i % len(_SHARES)]]
        player = i * 7_919 % max(1, size.players)
        if i % 50 == 7:
            status, http, code, message, retry_at, attempt = "retried", 500, "", "internal error", t + 30_000_000, 1
        elif i % 200 == 3:
            status, http, code, message, retry_at, attempt = "failed", 400, "40002", "invalid event", None, 1
        else:
            status, http, code, message, retry_at, attempt = "success", 200, "0", "OK", None, 1 + (i % 50 == 8)
        yield (i + 1, workload.GAME, row_id, config_id, display_name, "tiktok", t,
               "game_launch" if i % 4 == 0 else "purchase", status, http, 40 + i * 37 % 260, attempt, code, message,
               _hex64(i)[16:48], f"hl-{player}" if i % 4 == 0 else f"hp-{player}-0", retry_at)


def expired_logs(size: HistorySize, now_us: int, retention_days: int = RETENTION_DAYS) -> int:
    """How many of history_logs' rows (the lowest ids) are past retention at now_us."""
    cutoff = now_us - retention_days * DAY_US
    low, high = 0, size.logs  # the first row at or after the cutoff: rows are in time order
    while low < high:
        middle = (low + high) // 2
        if _log_time(middle, size, now_us) < cutoff:
            low = middle + 1
        else:
            high = middle
    return low


def last_hour_logs(size: HistorySize, now_us: int) -> int:
    """How many of history_logs' rows are the queried config's in the hour before now_us."""
    return sum(1 for i in range(size.logs - LAST_HOUR_LOGS, size.logs)
               if _SHARES[i % len(_SHARES)] == 0 and _log_time(i, size, now_us) >= now_us - HOUR_US)


# --- loading ------------------------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    seconds: float
    events: int
    logs: int
    expired_logs: int  # ids 1..expired_logs are past retention at load time
    last_hour_logs_of_config: int

    def details(self) -> dict[str, Any]:
        return {"history_events": self.events, "history_logs": self.logs,
                "history_load_s": round(self.seconds, 1), "history_expired_logs": self.expired_logs,
                "history_last_hour_logs_of_config": self.last_hour_logs_of_config}


def _config_rows(config_row_id: int) -> list[tuple[int, str, str]]:
    return [(config_row_id, QUERIED_CONFIG, "bench"),
            *((config_row_id + 1 + i, config, config.replace("-", " ")) for i, config in enumerate(OLD_CONFIGS))]


async def load_history(url: str, size: HistorySize) -> LoadReport:
    """Stores the history in a database whose schema the server has made and which holds the queried config and
    nothing else: the old configs (copies of it, deleted), the events with their identity links and deliveries,
    and the delivery logs. SQLite: one transaction of executemany through the sqlite3 module; PostgreSQL: COPY."""
    started = time.monotonic()
    now_us = int(time.time() * 1e6)
    if make_url(url).get_backend_name() == "sqlite":
        await asyncio.to_thread(_load_sqlite, make_url(url).database or "", size, now_us)
    else:
        await _load_postgresql(url, size, now_us)
    seconds = time.monotonic() - started
    return LoadReport(seconds, size.players * size.events_per_player, size.logs, expired_logs(size, now_us),
                      last_hour_logs(size, now_us))


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _load_sqlite(path: str, size: HistorySize, now_us: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # A fresh benchmark database: nothing to protect while it fills, so no journal and no syncs.
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-1000000")
        connection.execute("BEGIN")
        cursor = connection.execute("SELECT * FROM postback_configs WHERE config_id = ?", (QUERIED_CONFIG,))
        names = [d[0] for d in cursor.description]
        config = dict(zip(names, cursor.fetchone(), strict=True))
        for config_id in OLD_CONFIGS:
            old = {**config, "config_id": config_id, "display_name": config_id.replace("-", " "),
                   "delete_time_us": now_us - 5 * DAY_US}
            del old["id"]
            connection.execute(_insert_sql("postback_configs", tuple(old)), tuple(old.values()))
        configs = _config_rows(config["id"])
        # The tables' own indexes are dropped while they fill and made again after, from their stored definitions:
        # built from sorted keys rather than kept up row by row (unique constraints' indexes stay).
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            "('events', 'identity_links', 'deliveries', 'delivery_logs')").fetchall()
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')
        connection.executemany(_insert_sql("events", EVENT_COLUMNS), history_events(size, now_us))
        connection.executemany(_insert_sql("identity_links", LINK_COLUMNS), history_links(size, now_us))
        connection.executemany(_insert_sql("deliveries", DELIVERY_COLUMNS),
                               history_deliveries(size, now_us, config["id"]))
        connection.executemany(_insert_sql("delivery_logs", LOG_COLUMNS), history_logs(size, now_us, configs))
        for _, sql in indexes:
            connection.execute(sql)
        connection.execute("COMMIT")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


async def _load_postgresql(url: str, size: HistorySize, now_us: int) -> None:
    import asyncpg

    # The log's day partitions first, as the server makes them, so COPY routes each row straight into its day's.
    db = Database(url)
    try:
        await log_partitions.ensure_delivery_log_partitions(db, now_us - LOG_SPAN_US, now_us + 1)
    finally:
        await db.close()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        # The loaded rows are consistent by construction: foreign keys are not checked row by row (superuser only).
        await connection.execute("SET session_replication_role = replica")
        config = dict(await connection.fetchrow("SELECT * FROM postback_configs WHERE config_id = $1", QUERIED_CONFIG))
        for config_id in OLD_CONFIGS:
            old = {**config, "config_id": config_id, "display_name": config_id.replace("-", " "),
                   "delete_time_us": now_us - 5 * DAY_US}
            del old["id"]
            await connection.execute(
                f"INSERT INTO postback_configs ({', '.join(old)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(old)))})", *old.values())
        configs = _config_rows(config["id"])
        await connection.copy_records_to_table("events", records=history_events(size, now_us), columns=EVENT_COLUMNS)
        await connection.copy_records_to_table("identity_links", records=history_links(size, now_us),
                                               columns=LINK_COLUMNS)
        await connection.copy_records_to_table("deliveries", records=history_deliveries(size, now_us, config["id"]),
                                               columns=DELIVERY_COLUMNS)
        await connection.copy_records_to_table("delivery_logs", records=history_logs(size, now_us, configs),
                                               columns=LOG_COLUMNS)
        for table in ("events", "delivery_logs"):  # rows came with their ids: later ones follow them
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        # A database that grew to this size has had its statistics taken all along.
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


# --- measuring ----------------------------------------------------------------------------------------------------

# The measured servers keep one more day of logs than the history's span, so that only history-purge purges (its
# second server, on the default retention); every other setting is the default deployment's.
KEEP_ALL_LOGS = ("--log-retention-days", str(RETENTION_DAYS + 1))


@contextlib.asynccontextmanager
async def _database(opts: benchmarks.Options, label: str, size: HistorySize | None,
                    ) -> AsyncIterator[tuple[str, pathlib.Path, LoadReport | None]]:
    """A fresh database with the server's schema and the queried config (made through the API by a server that
    then stops), and the history loaded when a size is given: (url, the servers' data directory, the load)."""
    data_dir = opts.work_dir / f"{label}-server"
    async with benchmarks._fake() as fake, fresh_database(opts.database_url, opts.work_dir / f"{label}-db") as url:
        async with ServerProcess.postbacks(data_dir, url, role="all", tiktok_base_url=fake.tiktok_base_url,
                                           extra_args=KEEP_ALL_LOGS) as setup:
            await benchmarks._create_config(setup)
        report = await load_history(url, size) if size is not None else None
        yield url, data_dir, report


def _server(data_dir: pathlib.Path, url: str, fake: Any, *extra_args: str) -> ServerProcess:
    """The default deployment (--role all), logging to a file of its own."""
    server = ServerProcess.postbacks(data_dir, url, role="all", tiktok_base_url=fake.tiktok_base_url,
                                     extra_args=extra_args or KEEP_ALL_LOGS)
    server.log_path = data_dir / f"server-all-{time.monotonic_ns()}.log"
    return server


@dataclass
class IngestFigure:
    per_second: float
    server_cpu_per_event_us: float
    database_cpu_per_event_us: float
    report: dict[str, Any]


async def _unary(opts: benchmarks.Options, server: ServerProcess, url: str) -> IngestFigure:
    """ingest-unary's load: 256 in flight from the C client, pairs of a new player's paid click and purchase."""
    bodies = workload.unary_templates(opts.work_dir / "unary")
    warmup_s, duration_s = (1.0, 4.0) if opts.quick else (3.0, 12.0)
    cpu, db_cpu = server.cpu_seconds(), database_cpu_seconds(url)
    report, _ = await c_load.run(c_load.build(), server.port, benchmarks.UNARY_METHOD, bodies, workload.PLACEHOLDER,
                                 in_flight=256, connections=4, warmup_s=warmup_s, duration_s=duration_s,
                                 key_divisor=workload.UNARY_PAIR, headers=[f"authorization: Bearer {server.key}"])
    calls = max(1, report["ok_total"])
    return IngestFigure(report["per_second"], round(1e6 * (server.cpu_seconds() - cpu) / calls, 1),
                        round(1e6 * (database_cpu_seconds(url) - db_cpu) / calls, 1), report)


async def _batch(opts: benchmarks.Options, server: ServerProcess, url: str) -> IngestFigure:
    """ingest-batch's load: 4 callers of one game, 1000 events a call, the mixed workload of new players."""
    load = workload.interleave(workload.streams(opts.scale(200_000, 20_000), benchmarks.CALLERS, games=1))
    batches = benchmarks._write_batches(opts.work_dir / "batches.bin", load.batches)
    cpu, db_cpu = server.cpu_seconds(), database_cpu_seconds(url)
    report, _ = await benchmarks._ingest(server, batches, max_seconds=opts.scale(90, 15), interleaved=True)
    events = max(1, report["events"])
    return IngestFigure(report["per_second"], round(1e6 * (server.cpu_seconds() - cpu) / events, 1),
                        round(1e6 * (database_cpu_seconds(url) - db_cpu) / events, 1), report)


async def _ingest_on(opts: benchmarks.Options, kind: str, label: str,
                     size: HistorySize | None) -> tuple[IngestFigure, LoadReport | None]:
    """Unary or batch ingest into a database, empty (size None) or with the history loaded."""
    async with _database(opts, label, size) as (url, data_dir, report), benchmarks._fake() as fake:
        async with _server(data_dir, url, fake) as server:
            figure = await (_unary if kind == "unary" else _batch)(opts, server, url)
    return figure, report


async def measure_ingest(opts: benchmarks.Options, kind: str) -> tuple[IngestFigure, IngestFigure, LoadReport]:
    """Unary or batch ingest on an empty database, then on one with the history: (empty, loaded, the load)."""
    empty, _ = await _ingest_on(opts, kind, "empty", None)
    loaded, report = await _ingest_on(opts, kind, "history", _size(opts))
    assert report is not None
    return empty, loaded, report


async def measure_logs(opts: benchmarks.Options) -> dict[str, Any]:
    """ListDeliveryLogs of the queried config's last hour, page after page (100 a page) and again from the first,
    one call at a time over gRPC, each timed from call to answer."""
    calls = opts.scale(1_000, 400)
    parent = f"{workload.PARENT}/postbackConfigs/{QUERIED_CONFIG}"
    first_page: list[float] = []
    later_pages: list[float] = []
    rows = 0
    async with _database(opts, "logs", _size(opts)) as (url, data_dir, report), benchmarks._fake() as fake:
        async with _server(data_dir, url, fake) as server:
            metadata = (("authorization", f"Bearer {server.key}"),)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel)
                token = ""
                while len(first_page) + len(later_pages) < calls:
                    request = delivery_log_service_pb2.ListDeliveryLogsRequest(
                        parent=parent, time_range=delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR, page_token=token)
                    started = time.perf_counter()
                    reply = await stub.ListDeliveryLogs(request, metadata=metadata, timeout=60)
                    (later_pages if token else first_page).append(1000 * (time.perf_counter() - started))
                    rows += len(reply.delivery_logs)
                    token = reply.next_page_token
    assert report is not None
    return {"first_page_ms": sorted(first_page), "later_pages_ms": sorted(later_pages), "rows": rows,
            "load": report}


# What the server logs when a purge removed something (SQLite: rows; PostgreSQL: whole day partitions).
_PURGED = re.compile(r"purged delivery-log entries older than \d+ days: (\d+) rows, day partitions (.*)")


async def _oldest_log_id(url: str) -> int:
    db = Database(url)
    try:
        async with db.snapshot() as session:
            return await session.scalar(select(func.min(DeliveryLog.id))) or 0
    finally:
        await db.close()


@dataclass
class PacedRun:
    """One paced load: each call's due time (seconds after the server said it serves) and latency (None: failed)."""

    calls: list[tuple[float, float | None]]
    purge_s: float | None  # when the purge had removed every expired log, after the server said it serves
    purged_logs: int = 0

    def p99_ms(self, within_s: float | None = None) -> float | None:
        latencies = sorted(ms for due, ms in self.calls if ms is not None and (within_s is None or due <= within_s))
        return round(benchmarks._percentile(latencies, 0.99), 1) if latencies else None

    def summary(self, window_s: float | None) -> dict[str, Any]:
        done = sorted(ms for _, ms in self.calls if ms is not None)
        return {"p50_ms": round(benchmarks._percentile(done, 0.5), 1), "p99_ms": self.p99_ms(),
                "window_p99_ms": self.p99_ms(window_s), "window_calls": sum(1 for due, _ in self.calls
                                                                             if window_s and due <= window_s),
                "calls": len(self.calls), "failed": sum(1 for _, ms in self.calls if ms is None),
                "purge_s": self.purge_s, "purged_logs": self.purged_logs}


async def _paced(opts: benchmarks.Options, server: ServerProcess, counter_start: int,
                 expect_purge: bool = False) -> PacedRun:
    """Open-loop unary ingest (pairs of a new player's paid click and purchase) at PACED_RATE, started as soon as
    the server serves, each call timed from when it was due; when a purge is expected, also when the server
    said it had purged."""
    rate, count = PACED_RATE, PACED_RATE * opts.scale(40, 10)
    times_file = opts.work_dir / f"paced-{counter_start}.txt"
    bodies = workload.unary_templates(opts.work_dir / "unary")
    client = asyncio.create_task(c_load._run(
        c_load.build(), server.port, benchmarks.UNARY_METHOD, bodies, workload.PLACEHOLDER,
        [f"authorization: Bearer {server.key}"],
        ["--connections", "1", "--in-flight", "1", "--rate", str(rate), "--count", str(count), "--times",
         str(times_file), "--key-divisor", str(workload.UNARY_PAIR), "--counter-start", str(counter_start)]))
    purged_at = None
    if expect_purge:
        # The purge's round ends with the server's log line; the log is read as it grows, so it is seen then.
        while not client.done() and purged_at is None:
            if _PURGED.search(server.log_path.read_text(errors="replace")):
                purged_at = time.monotonic()
            await asyncio.sleep(0.05)
    await client
    rows = [line.split() for line in times_file.read_text().splitlines()]
    calls = [(float(due) - server.ready_at, 1000 * (float(acked) - float(due)) if float(acked) else None)
             for _, due, _, acked in rows]
    return PacedRun(calls, round(purged_at - server.ready_at, 2) if purged_at else None)


MIN_WINDOW_S = 2.0
PACED_RATE = 200  # calls/s: well within what either database takes, so latency is the service's and not a queue's


async def measure_purge(opts: benchmarks.Options) -> tuple[dict[str, PacedRun], LoadReport]:
    """Paced ingest into the loaded database three times, each by a fresh server: keeping every log (no purge),
    then on the default retention (its start-up purge removes the day past it while the load runs), then again
    (nothing left to purge)."""
    runs: dict[str, PacedRun] = {}
    async with _database(opts, "purge", _size(opts)) as (url, data_dir, report), benchmarks._fake() as fake:
        assert report is not None
        retention = ("--log-retention-days", str(RETENTION_DAYS))
        for number, (label, args) in enumerate((("before", KEEP_ALL_LOGS), ("purge", retention),
                                                 ("after", retention))):
            async with _server(data_dir, url, fake, *args) as server:
                runs[label] = await _paced(opts, server, counter_start=number * 10**9, expect_purge=label == "purge")
            # Log ids follow attempt times, so every id below the oldest left was purged, by rows or by days.
            oldest = await _oldest_log_id(url)
            runs[label].purged_logs = oldest - 1 - sum(run.purged_logs for run in runs.values())
    return runs, report


# --- reporting ----------------------------------------------------------------------------------------------------

async def _ingest_row(opts: benchmarks.Options, kind: str) -> benchmarks.Result:
    """The target: ≥ 0.8 of the same load's figure on an empty database."""
    empty, loaded, load = await measure_ingest(opts, kind)
    name = f"history-ingest-{kind}"
    what = ("unary IngestEvent, 256 in flight (C client), half owing a postback" if kind == "unary" else
            "BatchIngestEvents (1000 a call), 4 callers of one game")
    return benchmarks.Result(
        name=name, title=f"{what}, events/s with {load.events:,} events and {load.logs:,} delivery logs stored; "
                         f"{benchmarks.DEPLOYMENTS['all']}",
        figure=loaded.per_second, unit="events/s", ceiling=empty.per_second,
        ceiling_label="the same load on an empty database, same run", target="≥ 0.8 of ceiling", met=None,
        min_ratio=0.8, command=opts.command(name), quick=opts.quick, database=opts.database_kind,
        errors=loaded.report.get("errors_total", loaded.report.get("errors", 0)),
        details={**load.details(),
                 "server_cpu_per_event_us": loaded.server_cpu_per_event_us,
                 "empty_server_cpu_per_event_us": empty.server_cpu_per_event_us,
                 **({"database_cpu_per_event_us": loaded.database_cpu_per_event_us,
                     "empty_database_cpu_per_event_us": empty.database_cpu_per_event_us}
                    if opts.database_kind == "postgresql" else {}),
                 "client_report": loaded.report, "empty_client_report": empty.report})


async def ingest_unary(opts: benchmarks.Options) -> benchmarks.Result:
    return await _ingest_row(opts, "unary")


async def ingest_batch(opts: benchmarks.Options) -> benchmarks.Result:
    return await _ingest_row(opts, "batch")


async def logs(opts: benchmarks.Options) -> benchmarks.Result:
    """The target: ListDeliveryLogs of one config's last hour, p99 ≤ 50 ms."""
    measured = await measure_logs(opts)
    every = sorted(measured["first_page_ms"] + measured["later_pages_ms"])
    p99 = benchmarks._percentile(every, 0.99)
    load = measured["load"]
    return benchmarks.Result(
        name="history-logs", title=f"ListDeliveryLogs of one config's last hour (100 a page, every page, one call "
                                   f"at a time) with {load.events:,} events and {load.logs:,} delivery logs stored",
        figure=round(p99, 1), unit="ms p99", ceiling=None, ceiling_label="—", target="p99 ≤ 50 ms",
        met=p99 <= 50, command=opts.command("history-logs"), quick=opts.quick, database=opts.database_kind,
        details={**load.details(), "calls": len(every), "rows_listed": measured["rows"],
                 "p50_ms": round(benchmarks._percentile(every, 0.5), 1), "max_ms": round(every[-1], 1),
                 "first_page_p99_ms": round(benchmarks._percentile(measured["first_page_ms"], 0.99), 1),
                 "later_pages_p99_ms": round(benchmarks._percentile(measured["later_pages_ms"], 0.99), 1)})


async def purge(opts: benchmarks.Options) -> benchmarks.Result:
    """The target: ingest's p99 while a day's logs are purged within twice its p99 without the purge. The purge
    runs from the server's start, so each run is judged over the same first seconds of its server's life."""
    runs, load = await measure_purge(opts)
    # A purge over within a few calls (a day partition dropped) is judged over the first MIN_WINDOW_S instead.
    window_s = max(runs["purge"].purge_s, MIN_WINDOW_S) if runs["purge"].purge_s is not None else None
    figure = runs["purge"].p99_ms(window_s) or 0.0
    baseline = statistics.fmean([runs["before"].p99_ms(window_s) or 0.0, runs["after"].p99_ms(window_s) or 0.0])
    # PostgreSQL drops whole days past retention, SQLite deletes every row past it: either way most of a day.
    complete = runs["purge"].purged_logs >= load.expired_logs // 2 and window_s is not None
    return benchmarks.Result(
        name="history-purge", title=f"unary ingest p99 at {PACED_RATE} calls/s (open loop) while the server's "
                                    f"start-up purge removes the day past retention ({load.expired_logs:,} logs "
                                    f"past it), {load.events:,} events and {load.logs:,} logs stored",
        figure=figure, unit="ms p99", ceiling=round(baseline, 1),
        ceiling_label="the same paced load and seconds of a fresh server without a purge (mean of a run before "
                      "and one after)",
        target="≤ 2 x ceiling", met=complete and figure <= 2 * baseline,
        command=opts.command("history-purge"), quick=opts.quick, database=opts.database_kind,
        errors=sum(1 for run in runs.values() for _, ms in run.calls if ms is None),
        details={**load.details(), **{label: run.summary(window_s) for label, run in runs.items()},
                 "timed_from": "when each call was due; the window: calls due from the server saying it serves "
                               f"to the server logging that it purged, at least {MIN_WINDOW_S} s"})


BENCHMARKS = {
    "history-ingest-unary": ingest_unary,
    "history-ingest-batch": ingest_batch,
    "history-logs": logs,
    "history-purge": purge,
}
