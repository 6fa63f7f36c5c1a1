"""Engine and session setup for SQLite (embedded default) and PostgreSQL, and schema migration on start."""

import asyncio
import contextlib
import os
import pathlib
from collections.abc import AsyncIterator

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
# Any constant shared by all replicas: serialises concurrent migrations on one PostgreSQL database.
_MIGRATION_LOCK_KEY = 0x706F73746261636B


class Database:
    """One engine per process. Write transactions on SQLite start with BEGIN IMMEDIATE so two writers queue
    on the lock instead of failing when one upgrades a read snapshot to a write; read-only use cases take a
    snapshot on a second engine with a plain BEGIN, which WAL lets run beside the writer."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10):
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
            _configure_sqlite(self.engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
            read_engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, connect_args=sqlite_args)
            _configure_sqlite(read_engine, sqlite_synchronous, begin="BEGIN")
        else:
            # Plans for the actual values every time: a generic plan cached while a table was still small kept
            # scanning it whole once it had grown (batch ingest fell from about 9,000 to 550 events/s over 200,000).
            self.engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
            read_engine = self.engine
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._write_turn = asyncio.Lock() if self.is_sqlite else None
        self._read_engine = read_engine
        self._read_sessions = async_sessionmaker(read_engine, expire_on_commit=False, autoflush=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One use case's transaction: commits when the block ends, rolls back when it raises."""
        if self._write_turn is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        # SQLite has one writer at a time. Writers of this process take turns here, handed over the moment the
        # last one commits; left to SQLite's busy handler, a waiting writer sleeps in steps of up to 100 ms.
        async with self._write_turn, self.sessions() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only use case's transaction: a consistent view that never waits for, or blocks, writers."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade_to_head)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._read_engine is not self.engine:
            await self._read_engine.dispose()


def _create_private_file(path: pathlib.Path) -> None:
    """The database holds hashed emails and user ids: owner-only from the start (SQLite gives its -wal and
    -shm files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _configure_sqlite(engine: AsyncEngine, synchronous: str, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
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

    @event.listens_for(engine.sync_engine, "begin")
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

