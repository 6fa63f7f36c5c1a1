"""Delivery-log use cases: list a config's or a game's attempts, follow them live, and purge expired ones."""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from server.core import page_tokens
from server.core.types import AttemptStatus, EventType
from server.delivery.notifier import Notifier
from server.errors import InvalidArgument, NotFound
from server.services.context import ServiceContext
from server.services.log_tail import READ_ROWS, LogFilter, LogRecord, LogTail, record_from_row
from server.store import log_partitions
from server.store.models import DeliveryLog, PostbackConfig

log = logging.getLogger("postbacks.delivery_logs")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DAY_US = 86_400_000_000
# A row is written right after its attempt (at most an HTTP timeout later): every row recorded before one attempted
# this long before a time was attempted before that time, so reads of a window can skip them by id.
RECORDING_DELAY_BOUND_US = 3_600_000_000
PURGE_CHUNK_ROWS = 500


@dataclass(frozen=True, slots=True)
class LogSelection:
    """Whose attempts: one config's (config_id set) or a whole game's, optionally only some statuses and types."""

    game_id: str
    config_id: str | None
    statuses: frozenset[AttemptStatus]
    event_types: frozenset[EventType]


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Either a span ending now (a preset) or explicit bounds; all unset means everything kept."""

    span_us: int | None = None
    start_us: int | None = None
    end_us: int | None = None


@dataclass(frozen=True, slots=True)
class StreamItem:
    """An entry, or a heartbeat (record None); either way the token to resume after it."""

    record: LogRecord | None
    resume_token: str


def _digest(kind: str, selection: LogSelection, *window: int | None) -> str:
    return page_tokens.query_digest(kind, selection.game_id, selection.config_id,
                                    sorted(s.value for s in selection.statuses),
                                    sorted(e.value for e in selection.event_types), *window)


def _decode(token: str, digest: str, field_path: str) -> int:
    try:
        cursor = page_tokens.decode(token, digest)
    except ValueError as e:
        raise InvalidArgument.single(field_path, str(e)) from None
    return cursor


async def _ids_before(session: AsyncSession, start_us: int) -> int:
    """An id at or below which no row was attempted at or after `start_us` (0 without such a row): the last row
    attempted over RECORDING_DELAY_BOUND_US before it was recorded before anything attempted since. Without it, a
    window's last page, one not filled, walks the config's whole history backwards (seconds on millions of rows)."""
    last = await session.scalar(
        select(DeliveryLog.id).where(DeliveryLog.attempt_time_us < start_us - RECORDING_DELAY_BOUND_US)
        .order_by(DeliveryLog.attempt_time_us.desc()).limit(1))
    return last or 0


def retention_cutoff_us(ctx: ServiceContext) -> int:
    """Entries attempted before this are expired: never listed or streamed, even before the purge removes them."""
    return ctx.clock() - ctx.settings.log_retention_days * DAY_US


async def _filter(ctx: ServiceContext, session: AsyncSession, selection: LogSelection, start_us: int | None) -> LogFilter:
    config_row_id = None
    if selection.config_id is not None:
        # Deleted configs count: their logs stay listable until they expire.
        config_row_id = await session.scalar(select(PostbackConfig.id).where(
            PostbackConfig.game_id == selection.game_id, PostbackConfig.config_id == selection.config_id))
        if config_row_id is None:
            raise NotFound(f"postback config games/{selection.game_id}/postbackConfigs/{selection.config_id} "
                           "not found", reason="POSTBACK_CONFIG_NOT_FOUND")
    return LogFilter(game_id=selection.game_id, config_row_id=config_row_id, statuses=selection.statuses,
                     event_types=selection.event_types,
                     min_time_us=max(retention_cutoff_us(ctx), start_us if start_us is not None else 0))


async def list_delivery_logs(ctx: ServiceContext, selection: LogSelection, window: TimeWindow, page_size: int,
                             page_token: str) -> tuple[list[LogRecord], str]:
    """Newest first (by id: the order attempts were recorded), one page after `page_token`."""
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    # A preset is bound as a span, so its pages keep meaning "the last hour" as of each call.
    digest = _digest("delivery_logs.list", selection, window.span_us, window.start_us, window.end_us)
    before = _decode(page_token, digest, "page_token") if page_token else None
    start_us = ctx.clock() - window.span_us if window.span_us is not None else window.start_us
    async with ctx.db.snapshot() as session:
        log_filter = await _filter(ctx, session, selection, start_us)
        query = select(DeliveryLog).where(*log_filter.clauses(),
                                          DeliveryLog.id > await _ids_before(session, log_filter.min_time_us))
        if window.end_us is not None:
            query = query.where(DeliveryLog.attempt_time_us < window.end_us)
        if before is not None:
            query = query.where(DeliveryLog.id < before)
        rows = (await session.scalars(query.order_by(DeliveryLog.id.desc()).limit(size + 1))).all()
    next_token = page_tokens.encode(rows[size - 1].id, digest) if len(rows) > size else ""
    return [record_from_row(r) for r in rows[:size]], next_token


async def _read_settled(ctx: ServiceContext, log_filter: LogFilter, after: int, upto: int) -> tuple[list[LogRecord], int]:
    """The matching rows in (after, upto], oldest first, at most READ_ROWS; and the cursor they bring us to."""
    async with ctx.db.snapshot() as session:
        rows = (await session.scalars(
            select(DeliveryLog).where(*log_filter.clauses(), DeliveryLog.id > after, DeliveryLog.id <= upto)
            .order_by(DeliveryLog.id).limit(READ_ROWS)
        )).all()
    return [record_from_row(r) for r in rows], rows[-1].id if len(rows) == READ_ROWS else upto


async def stream_delivery_logs(ctx: ServiceContext, tail: LogTail, selection: LogSelection, window: TimeWindow,
                               resume_token: str, heartbeat_s: float) -> AsyncIterator[StreamItem]:
    """The matching backlog oldest first (after `resume_token`, or from the window's start, or none), then each
    new entry as it settles, until the caller stops iterating or the tail closes. A heartbeat is sent once the
    backlog is done and whenever nothing was sent for `heartbeat_s`."""
    digest = _digest("delivery_logs.stream", selection)
    cursor = _decode(resume_token, digest, "resume_token") if resume_token else None
    start_us = ctx.clock() - window.span_us if window.span_us is not None else window.start_us
    async with ctx.db.snapshot() as session:
        log_filter = await _filter(ctx, session, selection, start_us)
        if cursor is None and start_us is not None:
            cursor = await _ids_before(session, start_us)
    async with tail.follow():
        loop = asyncio.get_running_loop()
        if cursor is None:
            cursor = tail.position or 0
        caught_up = False
        last_sent = loop.time()
        while not tail.closed:
            changed = tail.advanced.changed()
            position = tail.position or 0
            if cursor < position:
                records = tail.records_after(cursor)
                if records is None:
                    records, cursor = await _read_settled(ctx, log_filter, cursor, position)
                else:
                    records, cursor = [r for r in records if log_filter.matches(r)], position
                for record in records:
                    yield StreamItem(record, page_tokens.encode(record.id, digest))
                    last_sent = loop.time()
                continue
            idle_s = loop.time() - last_sent
            if not caught_up or idle_s >= heartbeat_s:
                # The first one tells the client the backlog is done and the stream is live.
                caught_up = True
                yield StreamItem(None, page_tokens.encode(cursor, digest))
                last_sent = loop.time()
                continue
            await Notifier.wait(changed, heartbeat_s - idle_s)


@dataclass(frozen=True, slots=True)
class Purged:
    """What a purge removed: rows deleted one by one (SQLite; on PostgreSQL, strays in the default partition) and
    PostgreSQL's day partitions dropped whole."""

    rows: int
    partitions: tuple[str, ...] = ()


async def purge_expired_logs(ctx: ServiceContext, chunk_rows: int = PURGE_CHUNK_ROWS) -> Purged:
    """Removes expired entries. On PostgreSQL: drops each day partition wholly past retention, one statement
    each, then makes the coming days' partitions. On SQLite: deletes them in chunks, each its own short write
    transaction, so the service's other writers take their turns in between."""
    cutoff = retention_cutoff_us(ctx)
    if not ctx.db.is_sqlite:
        dropped = await log_partitions.drop_expired_partitions(ctx.db, cutoff, chunk_rows)
        await log_partitions.ensure_upcoming_partitions(ctx.db, ctx.clock())
        return Purged(dropped.default_rows, dropped.partitions)

    def delete_chunk(session: Session) -> int:
        # The newest row always stays: SQLite would otherwise reuse its id for the next row, and a stream's cursor
        # past that id would skip it. The listing hides it like every expired row.
        newest = select(func.max(DeliveryLog.id)).scalar_subquery()
        chunk = (select(DeliveryLog.id).where(DeliveryLog.attempt_time_us < cutoff, DeliveryLog.id < newest)
                 .order_by(DeliveryLog.id).limit(chunk_rows))
        return session.execute(delete(DeliveryLog).where(DeliveryLog.id.in_(chunk))).rowcount or 0

    purged = 0
    while True:
        deleted = await ctx.db.write(delete_chunk)
        purged += deleted
        if deleted < chunk_rows:
            return Purged(purged)


async def purge_expired_logs_periodically(ctx: ServiceContext, interval_s: float) -> None:
    """Runs until cancelled, first at once (which on PostgreSQL also makes sure today's partition exists); a failed
    purge is logged and tried again at the next interval."""
    while True:
        try:
            purged = await purge_expired_logs(ctx)
            if purged.rows or purged.partitions:
                log.info("purged delivery-log entries older than %d days: %d rows, day partitions %s",
                         ctx.settings.log_retention_days, purged.rows, ", ".join(purged.partitions) or "none")
        except Exception:
            log.exception("purging expired delivery-log entries failed")
        await asyncio.sleep(interval_s)
