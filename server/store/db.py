"""Engine and session setup for SQLite (embedded default) and PostgreSQL, and schema migration on start."""

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import os
import pathlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
# Any constant shared by all replicas: serialises concurrent migrations on one PostgreSQL database.
_MIGRATION_LOCK_KEY = 0x706F73746261636B

T = TypeVar("T")
# A PostgreSQL connection unused for this long is pinged before it is used again: a server restarted, or a proxy
# or firewall that dropped an idle connection, shows there and not as the use case's error. A connection in use
# more often than this fails at most its transaction when the server goes away, which ingest runs again.
IDLE_PING_S = 1.0


class Database:
    """One engine per process. Write transactions on SQLite start with BEGIN IMMEDIATE so two writers queue
    on the lock instead of failing when one upgrades a read snapshot to a write; read-only use cases take a
    snapshot on a second engine with a plain BEGIN, which WAL lets run beside the writer."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10,
                 idle_ping_s: float = IDLE_PING_S):
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                _create_private_file(pathlib.Path(self.url.database))
            # sqlite3 keeps prepared statements per connection, and every IN-list length is a statement of its
            # own: its default cache of 128 grew the process by hundreds of MB over a million events.
            sqlite_args = {"cached_statements": 16}
            self.engine: AsyncEngine = create_async_engine(url, pool_size=pool_size, max_overflow=0,
                                                           connect_args=sqlite_args)
            _configure_sqlite(self.engine.sync_engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
            read_engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, connect_args=sqlite_args)
            _configure_sqlite(read_engine.sync_engine, sqlite_synchronous, begin="BEGIN")
        else:
            # PostgreSQL's default plan caching: a prepared statement is planned for its values five times, then
            # keeps a generic plan if that costs no more. Planning every execution cost a third of the database's
            # CPU per ingested event. A generic plan cached while a table was still small used to keep scanning it
            # whole once it had grown; statistics.py now keeps the hot tables' statistics fresh, and an ANALYZE
            # drops the plans made from the old ones.
            # The most recently used connection first (LIFO): a steady load keeps reusing a few warm connections,
            # whose prepared statements and plans are made, and the rest idle. A connection idle for a while is
            # pinged before use (_ping_when_idle) instead of every checkout (pool_pre_ping: BEGIN, a query and
            # ROLLBACK, three round trips added to every transaction).
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True)
            _ping_when_idle(self.engine.sync_engine, idle_ping_s)
            # PostgreSQL reads in READ COMMITTED see a snapshot per statement whether in a transaction or not:
            # without one, a read is its statement's round trip alone, not BEGIN, statement, COMMIT.
            read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._write_turn = _WriteTurn() if self.is_sqlite else None
        self._read_engine = read_engine
        self._read_sessions = async_sessionmaker(read_engine, expire_on_commit=False, autoflush=False)
        # SQLite's hot use cases run as plain code on connections of threads of their own: see write() and read().
        self._writer: _ThreadLane | None = None
        self._reader: _ThreadLane | None = None
        self._version_watch: sqlite3.Connection | None = None
        if self.is_sqlite and self.url.database and self.url.database != ":memory:":
            self._writer = _ThreadLane(self.url, sqlite_args, sqlite_synchronous, begin="BEGIN IMMEDIATE",
                                       threads=1, name="sqlite-writer",
                                       turn=_ProcessWriteTurn(pathlib.Path(self.url.database)))
            self._reader = _ThreadLane(self.url, sqlite_args, sqlite_synchronous, begin="BEGIN", threads=2,
                                       name="sqlite-reader")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One use case's transaction: commits when the block ends, rolls back when it raises."""
        if self._write_turn is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        # SQLite has one writer at a time. Writers of this process take turns here, handed over the moment the
        # last one commits; left to SQLite's busy handler, a waiting writer sleeps in steps of up to 100 ms.
        async with self._write_turn(), self.sessions() as session, session.begin():
            yield session

    async def write(self, work: Callable[[Session], T], *, urgent: bool = False) -> T:
        """Runs `work`, synchronous code, as one write transaction: commits when it returns, rolls back when it
        raises. On SQLite it runs in the writer thread, handed over once: each statement of an async session waits
        for a turn of the event loop and pays aiosqlite's thread hand-overs, which under load held the write lock
        for tens of milliseconds per transaction. On PostgreSQL it runs in the session's greenlet (run_sync).
        An urgent write (a claim the network waits for) goes before the process's other writers waiting on SQLite."""
        if self._writer is not None:
            async with self._write_turn(urgent=urgent):  # type: ignore[misc,union-attr]
                if not self._writer.closed:  # not while the process stops: then the async engine serves
                    return await self._writer.run(work)
        async with self.transaction() as session:
            return await session.run_sync(work)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Runs `work`, synchronous code, in a snapshot() transaction; on SQLite in a reader thread, handed over
        once, for the reasons write() gives."""
        if self._reader is not None and not self._reader.closed:
            return await self._reader.run(work)
        async with self.snapshot() as session:
            return await session.run_sync(work)

    def data_version(self) -> int | None:
        """On a SQLite file, a number that changes whenever another connection commits (PRAGMA data_version: a
        few microseconds on the calling thread, no I/O), so a process can tell at once whether another process
        may have left it work; None where there is no such number (PostgreSQL, in-memory SQLite)."""
        if self._writer is None or self._writer.closed:
            return None
        try:
            if self._version_watch is None:
                # Autocommit: it never holds a snapshot open, so each look sees the latest commit. No busy wait:
                # this runs on the event loop.
                self._version_watch = sqlite3.connect(self.url.database, timeout=0, isolation_level=None,
                                                      check_same_thread=False)
            return int(self._version_watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None  # the caller looks the slow way instead

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only use case's session, which never waits for, or blocks, writers: on SQLite one snapshot for
        the whole block; on PostgreSQL each statement's own (READ COMMITTED), without a transaction."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade_to_head)

    async def close(self) -> None:
        for lane in (self._writer, self._reader):
            if lane is not None:
                await lane.close()
        if self._version_watch is not None:
            self._version_watch.close()
            self._version_watch = None
        await self.engine.dispose()
        if self.is_sqlite:  # on PostgreSQL the read engine shares the engine's pool
            await self._read_engine.dispose()


class _WriteTurn:
    """The turns of one process's SQLite writers: first come, first served, except that an urgent writer goes
    before the others waiting. A dispatcher's claim waited behind the records of batches already sent (about
    9 ms of the writer each) while the network had nothing to do."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._others: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def __call__(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._held:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._others).append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if not turn.cancelled():  # handed the turn just as the caller was cancelled: pass it on
                    self._hand_over()
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        for waiting in (self._urgent, self._others):
            while waiting:
                turn = waiting.popleft()
                if not turn.done():  # a waiter that was cancelled left its turn behind
                    turn.set_result(None)
                    return
        self._held = False


class _ThreadLane:
    """Synchronous SQLite sessions on connections owned by a few threads: a use case is handed over once and runs
    there whole, while the event loop goes on."""

    def __init__(self, url: URL, connect_args: dict[str, Any], synchronous: str, *, begin: str, threads: int,
                 name: str, turn: "_ProcessWriteTurn | None" = None) -> None:
        self._engine = create_engine(url.set(drivername="sqlite"), pool_size=threads, max_overflow=0,
                                     connect_args={**connect_args, "check_same_thread": False})
        _configure_sqlite(self._engine, synchronous, begin=begin)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False, autoflush=False)
        self._threads = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._turn = turn or contextlib.nullcontext()
        self.closed = False

    async def run(self, work: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._run_here, work)

    def _run_here(self, work: Callable[[Session], T]) -> T:
        with self._turn, self._sessions() as session, session.begin():
            return work(session)

    async def close(self) -> None:
        if self.closed:  # a stop after a stop
            return
        self.closed = True
        # Handed over like the work: once what came before has started (with one thread, once it has ended).
        await asyncio.get_running_loop().run_in_executor(self._threads, self._engine.dispose)
        self._threads.shutdown()
        if isinstance(self._turn, _ProcessWriteTurn):
            self._turn.close()


class _ProcessWriteTurn:
    """Writers of several processes on one SQLite file (an API process beside a dispatcher process) take turns on
    a lock file, held only in the writer thread. Left to SQLite's busy handler, a waiting writer sleeps in steps of
    up to 100 ms and wakes to find the lock taken again: postbacks waited most of a second at the tail. A blocked
    flock() wakes the moment the holder lets go, and the kernel lets go for a process that dies. The rare writes
    of async sessions (settings, erasure) still wait in the busy handler."""

    def __init__(self, database: pathlib.Path) -> None:
        self._fd = os.open(f"{database}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out another, a new one if need be.
            raise DisconnectionError(f"a pooled connection idle for {time.monotonic() - idle_since:.1f}s is gone") \
                from error


def _create_private_file(path: pathlib.Path) -> None:
    """The database holds hashed emails and user ids: owner-only from the start (SQLite gives its -wal and
    -shm files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _configure_sqlite(engine: Engine, synchronous: str, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Take over transaction control from the driver so the BEGIN below is the only one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Erased players' rows are overwritten, not merely unlinked, in the database file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql(begin)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")

