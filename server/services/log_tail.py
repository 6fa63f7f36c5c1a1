"""One reader per process follows the delivery-log table in id order and hands settled entries to every stream."""

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select

from server.core.types import AttemptStatus, EventType, Network
from server.delivery.notifier import Notifier
from server.store.db import Database
from server.store.models import DeliveryLog

log = logging.getLogger("postbacks.log_tail")

# Rows kept in memory for followers; a follower further behind reads the database instead.
BUFFER_ROWS = 10_000
# Rows read per query, by the tail and by a follower catching up.
READ_ROWS = 1000
# On (re)start on PostgreSQL, ids further back than this are assumed committed or gone for good.
START_WINDOW_IDS = 10_000
# A row is inserted at most this long after its attempt started (the HTTP request's total timeout, 20 s by
# default, plus margin): a hole below a row attempted longer ago than this plus the settle time is final.
RECORDING_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One delivery-log row as followers and listings see it."""

    id: int
    game_id: str
    config_row_id: int
    config_id: str
    config_display_name: str
    network: Network
    attempt_time_us: int
    event_type: EventType
    status: AttemptStatus
    http_status: int
    latency_ms: int
    attempt_number: int
    network_code: str | None
    network_message: str | None
    network_request_id: str | None
    conversion_event_id: str
    next_attempt_time_us: int | None


def record_from_row(row: DeliveryLog) -> LogRecord:
    return LogRecord(
        id=row.id,
        game_id=row.game_id,
        config_row_id=row.config_row_id,
        config_id=row.config_id,
        config_display_name=row.config_display_name,
        network=Network(row.network),
        attempt_time_us=row.attempt_time_us,
        event_type=EventType(row.event_type),
        status=AttemptStatus(row.status),
        http_status=row.http_status,
        latency_ms=row.latency_ms,
        attempt_number=row.attempt_number,
        network_code=row.network_code,
        network_message=row.network_message,
        network_request_id=row.network_request_id,
        conversion_event_id=row.conversion_event_id,
        next_attempt_time_us=row.next_attempt_time_us,
    )


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which rows a listing or a stream shows; the same rules as SQL (for reads) and in memory (for the tail)."""

    game_id: str
    config_row_id: int | None
    statuses: frozenset[AttemptStatus]
    event_types: frozenset[EventType]
    min_time_us: int

    def matches(self, r: LogRecord) -> bool:
        return (r.game_id == self.game_id
                and (self.config_row_id is None or r.config_row_id == self.config_row_id)
                and (not self.statuses or r.status in self.statuses)
                and (not self.event_types or r.event_type in self.event_types)
                and r.attempt_time_us >= self.min_time_us)

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses = [DeliveryLog.attempt_time_us >= self.min_time_us]
        # The config's index (config_row_id, id) already narrows to one game; the game's index serves the rest.
        if self.config_row_id is not None:
            clauses.append(DeliveryLog.config_row_id == self.config_row_id)
        else:
            clauses.append(DeliveryLog.game_id == self.game_id)
        if self.statuses:
            clauses.append(DeliveryLog.status.in_(sorted(s.value for s in self.statuses)))
        if self.event_types:
            clauses.append(DeliveryLog.event_type.in_(sorted(e.value for e in self.event_types)))
        return clauses


def _settled_end(ascending: list[tuple[int, int]], stale_before_us: int) -> int:
    """The last id of (id, attempt time) rows before the first hole that may still fill: one below a row that
    was attempted recently. Holes below older rows are transactions that rolled back long ago."""
    end = ascending[0][0]
    for row_id, attempt_time_us in ascending[1:]:
        if row_id != end + 1 and attempt_time_us >= stale_before_us:
            break
        end = row_id
    return end


class LogTail:
    """Follows the table for all streams of this process: one query per wake-up, however many followers.

    `position` is the settled high-water mark: every id at or below it is either published or will never
    appear. On PostgreSQL a sequence hands out ids before commit, so id 7 can become visible after id 8; a
    hole below a visible row is therefore waited for, up to `settle_s` after it was first seen (the writer's
    transaction holds the id only for the few milliseconds of its commit), and skipped only then. SQLite
    serialises writers, so a hole there is already final. Streams read settled rows from the in-memory buffer,
    or from the database up to `position` when they are further behind, so neither path skips or repeats.

    The tail reads only while streams are open, waking on in-process writes and polling every `poll_s` for
    rows committed by other replicas."""

    def __init__(self, db: Database, *, poll_s: float, settle_s: float, clock_us: Callable[[], int]):
        self._db = db
        self._clock_us = clock_us
        self._poll_s = poll_s
        self._settle_s = 0.0 if db.is_sqlite else settle_s
        self.writes = Notifier()
        self.advanced = Notifier()
        self._read_done = Notifier()
        self._reads = 0
        self.position: int | None = None
        self.floor = 0  # every settled id in (floor, position] is in the buffer
        self._ids: list[int] = []
        self._records: list[LogRecord] = []
        self._hole_first_seen: dict[int, float] = {}
        self.followers = 0
        self._active = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_for_ids(self) -> bool:
        """Whether a visible row is held back behind an id that may still commit."""
        return self.position is not None and any(start > self.position for start in self._hole_first_seen)

    def wake(self) -> None:
        """Registered on ctx.delivery_log_listeners: rows were just committed in this process."""
        self.writes.notify()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-log-tail")

    def close(self) -> None:
        """Ends every open stream (they return normally, so clients keep their last resume token)."""
        self._closed = True
        self.advanced.notify()
        self._read_done.notify()

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def follow(self) -> AsyncIterator[None]:
        """Counts one open stream for its whole life. Enters once the tail has read the table after the stream
        arrived, so `position` covers everything committed before it (the tail may have been idle, or asleep)."""
        self.followers += 1
        self._active.set()
        self.writes.notify()
        read_after_arrival = self._reads + 1
        try:
            while self._reads < read_after_arrival and not self._closed:
                await self._read_done.changed().wait()
            yield
        finally:
            self.followers -= 1
            if not self.followers:
                self._active.clear()

    def records_after(self, cursor: int) -> list[LogRecord] | None:
        """The settled records in (cursor, position]; None when the buffer no longer reaches back to cursor."""
        if cursor < self.floor:
            return None
        return self._records[bisect.bisect_right(self._ids, cursor):]

    async def _run(self) -> None:
        while True:
            await self._active.wait()
            try:
                await self._start_position()
                while self.followers:
                    changed = self.writes.changed()
                    more, hole_wait_s = await self._advance()
                    self._reads += 1
                    self._read_done.notify()
                    if more:
                        continue
                    timeout_s = self._poll_s if hole_wait_s is None else min(self._poll_s, hole_wait_s)
                    await Notifier.wait(changed, timeout_s)
            except Exception:
                log.exception("reading new delivery-log rows failed; retrying in %.1fs", self._poll_s)
                await asyncio.sleep(self._poll_s)  # back off before the next attempt; not a synchronisation

    async def _start_position(self) -> None:
        """After idling, jump to the newest settled id instead of reading everything written meanwhile."""
        async with self._db.snapshot() as session:
            rows = [(row_id, attempt_time_us) for row_id, attempt_time_us in await session.execute(
                select(DeliveryLog.id, DeliveryLog.attempt_time_us).order_by(DeliveryLog.id.desc())
                .limit(START_WINDOW_IDS))]
        rows.reverse()
        stale_before_us = self._clock_us() - round((self._settle_s + RECORDING_SLACK_S) * 1_000_000)
        start = 0 if not rows else rows[-1][0] if self._db.is_sqlite else _settled_end(rows, stale_before_us)
        if self.position is None or start > self.position:
            self.position = self.floor = start
            self._ids, self._records = [], []
            self._hole_first_seen.clear()
        self.advanced.notify()

    async def _advance(self) -> tuple[bool, float | None]:
        """Publishes the settled rows past `position`. Returns whether a full batch was settled (read again at
        once) and, when a hole holds rows back, how long until it may be skipped."""
        assert self.position is not None
        async with self._db.snapshot() as session:
            rows = (await session.scalars(
                select(DeliveryLog).where(DeliveryLog.id > self.position).order_by(DeliveryLog.id).limit(READ_ROWS)
            )).all()
        now = asyncio.get_running_loop().time()
        settled: list[LogRecord] = []
        expected = self.position + 1
        hole_wait_s = None
        for row in rows:
            if row.id > expected and self._settle_s > 0:
                first_seen = self._hole_first_seen.setdefault(expected, now)
                if now - first_seen < self._settle_s:
                    hole_wait_s = first_seen + self._settle_s - now
                    break
                log.info("delivery-log ids %d..%d never committed; streams skip them", expected, row.id - 1)
            settled.append(record_from_row(row))
            expected = row.id + 1
        if settled:
            self._publish(settled)
        return len(settled) == READ_ROWS, hole_wait_s

    def _publish(self, records: list[LogRecord]) -> None:
        self._records.extend(records)
        self._ids.extend(r.id for r in records)
        self.position = records[-1].id
        overflow = len(self._records) - BUFFER_ROWS
        if overflow > 0:
            self.floor = self._ids[overflow - 1]
            del self._records[:overflow], self._ids[:overflow]
        self._hole_first_seen = {start: t for start, t in self._hole_first_seen.items() if start > self.position}
        self.advanced.notify()
