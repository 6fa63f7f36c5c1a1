"""PostgreSQL's delivery log as one partition per UTC day: created ahead, adopted from the default, dropped whole."""

import datetime
import logging
import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.store.db import Database

log = logging.getLogger("postbacks.log_partitions")

DAY_US = 86_400_000_000
TABLE = "delivery_logs"
# Rows whose day has no partition yet land here instead of failing the dispatcher's write (a replica's clock far
# ahead, history loaded without preparing its days); the next maintenance moves them into their day's partition.
DEFAULT_PARTITION = f"{TABLE}_default"
# Today's partition and this many after it exist before their rows arrive, so the default stays empty.
DAYS_AHEAD = 3
# DDL on a partition briefly needs a lock that queues the log's readers and writers behind it: rather than wait
# behind a long read (and hold everyone else up meanwhile), give up and try again at the next maintenance.
LOCK_TIMEOUT = "2s"
# Any constant: serialises partition maintenance between replicas.
_MAINTENANCE_LOCK_KEY = 0x706F73746C6F6773
_DAY_PARTITION = re.compile(rf"^{TABLE}_(\d{{8}})$")
DEFAULT_CHUNK_ROWS = 5000


@dataclass(frozen=True, slots=True)
class DroppedDays:
    """What a purge removed on PostgreSQL: whole day partitions, and rows deleted from the default one by one."""

    partitions: tuple[str, ...]
    default_rows: int


def day_start_us(time_us: int) -> int:
    """The start of the UTC day holding `time_us` (Unix microseconds count UTC days exactly)."""
    return time_us - time_us % DAY_US


def partition_name(day_us: int) -> str:
    """delivery_logs_YYYYMMDD, the UTC date: what an operator reads, and the same name from every replica."""
    return f"{TABLE}_{datetime.datetime.fromtimestamp(day_us // 1_000_000, datetime.UTC):%Y%m%d}"


def _partition_day_us(name: str) -> int | None:
    match = _DAY_PARTITION.match(name)
    if match is None:
        return None
    day = datetime.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=datetime.UTC)
    return int(day.timestamp()) * 1_000_000


def is_partition(table_name: str) -> bool:
    """A partition of the delivery log: not a table of the models (migrations' model comparison skips it)."""
    return table_name == DEFAULT_PARTITION or _DAY_PARTITION.match(table_name) is not None


async def ensure_delivery_log_partitions(db: Database, start_us: int, end_us: int) -> list[str]:
    """Makes sure every UTC day overlapping [start_us, end_us) has its partition, before rows of those times are
    written (a benchmark loading history calls this first, so COPY goes straight into day partitions); rows of
    those days already in the default partition are moved into theirs. Returns the partitions created. A no-op
    on SQLite, where the log is a plain table."""
    if db.is_sqlite or end_us <= start_us:
        return []
    created = []
    for day_us in range(day_start_us(start_us), end_us, DAY_US):
        async with db.engine.begin() as conn:
            if await conn.run_sync(_create_day, day_us):
                created.append(partition_name(day_us))
    return created


async def ensure_upcoming_partitions(db: Database, now_us: int) -> list[str]:
    """Today's and the next DAYS_AHEAD days' partitions, and one for each day that has rows in the default."""
    if db.is_sqlite:
        return []
    async with db.engine.connect() as conn:
        stray_days = list((await conn.execute(text(
            f"SELECT DISTINCT attempt_time_us - attempt_time_us % {DAY_US} FROM {DEFAULT_PARTITION}"))).scalars())
    created = []
    for day_us in sorted({*stray_days, *(day_start_us(now_us) + i * DAY_US for i in range(DAYS_AHEAD + 1))}):
        async with db.engine.begin() as conn:
            if await conn.run_sync(_create_day, day_us):
                created.append(partition_name(day_us))
    if created:
        log.info("created delivery-log partitions %s", ", ".join(created))
    return created


async def drop_expired_partitions(db: Database, cutoff_us: int, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DroppedDays:
    """Drops each day partition that ends at or before `cutoff_us`, one DROP TABLE each, and deletes the default
    partition's rows of those days in bounded chunks. The day holding the cutoff stays whole until it has all
    expired: its expired rows are already hidden from listings, and deleting them one by one is the cost the
    partitions exist to avoid."""
    expired_before_us = day_start_us(cutoff_us)
    async with db.engine.connect() as conn:
        names = list((await conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"WHERE i.inhparent = '{TABLE}'::regclass"))).scalars())
    days = sorted(day_us for name in names if (day_us := _partition_day_us(name)) is not None)
    dropped = []
    for day_us in days:
        if day_us + DAY_US > expired_before_us:
            break
        name = partition_name(day_us)
        async with db.engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        dropped.append(name)
    default_rows = 0
    while True:
        async with db.engine.begin() as conn:
            deleted = (await conn.execute(text(
                f"DELETE FROM {DEFAULT_PARTITION} WHERE id IN (SELECT id FROM {DEFAULT_PARTITION} "
                "WHERE attempt_time_us < :before LIMIT :rows)"), {"before": expired_before_us, "rows": chunk_rows})
                       ).rowcount or 0
        default_rows += deleted
        if deleted < chunk_rows:
            return DroppedDays(tuple(dropped), default_rows)


def _create_day(conn: Connection, day_us: int) -> bool:
    """In one transaction: the day's table, with the default's rows of that day moved in, attached as a partition.
    An empty day is attached under a lock that lets the log's reads and writes go on (CREATE TABLE ... PARTITION OF
    would take the whole log exclusively); it is made days before its rows come. Moving rows takes the whole log
    exclusively for the moment it lasts: a read that began while the partition was attached could otherwise find
    the rows in neither place, and a stream would pass them by."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MAINTENANCE_LOCK_KEY})
    name = partition_name(day_us)
    if conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}):
        return False
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    bounds = {"start": day_us, "end": day_us + DAY_US}
    in_day = "attempt_time_us >= :start AND attempt_time_us < :end"
    if conn.scalar(text(f"SELECT EXISTS (SELECT FROM {DEFAULT_PARTITION} WHERE {in_day})"), bounds):
        conn.execute(text(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)"))
    conn.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {in_day} RETURNING *) INSERT INTO {name} "
        "SELECT * FROM moved"), bounds)
    conn.execute(text(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({day_us}) TO ({day_us + DAY_US})"))
    return True
