"""Database: on one SQLite file, the writers of several processes take turns on a lock file; on PostgreSQL, the
planner statistics of the tables ingest grows are refreshed as they grow, and connections the server dropped are
replaced."""

import asyncio
import os
import pathlib
import stat
import sys

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.store.db import Database, _WriteTurn
from server.store.statistics import CHANGED_FLOOR, STATISTICS_TARGET, analyze_stale_tables
from tests import helpers as h
from tests.conftest import PG_ADMIN_DSN, running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import batch_ingest

# Another process's writer holding its turn: it takes the lock, says so, and lets go when told to.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


async def test_a_write_waits_for_another_process_turn_and_goes_on_the_moment_it_ends(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.migrate()
    lock_path = pathlib.Path(sqlite_url.split("///", 1)[1] + ".write-lock")
    holder = await _holding(lock_path)
    try:
        assert holder.stdin is not None
        write = asyncio.create_task(db.write(
            lambda session: session.execute(text("INSERT INTO games VALUES ('games/g', 1, 2)"))))
        # Not a timing assertion: a write that ignored the other process's turn would be done long before this.
        done, _ = await asyncio.wait([write], timeout=1.0)
        assert not done
        holder.stdin.write(b"\n")
        await holder.stdin.drain()
        await asyncio.wait_for(write, timeout=30)
        count = await db.read(lambda session: session.execute(text("SELECT count(*) FROM games")).scalar_one())
        assert count == 1
        assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o600
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
        await db.close()


async def test_a_process_that_dies_holding_its_turn_lets_the_others_write(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.migrate()
    holder = await _holding(pathlib.Path(sqlite_url.split("///", 1)[1] + ".write-lock"))
    try:
        holder.kill()
        await holder.wait()
        await asyncio.wait_for(db.write(
            lambda session: session.execute(text("INSERT INTO games VALUES ('games/g', 1, 2)"))), timeout=30)
    finally:
        await db.close()


async def _holding(lock_path: pathlib.Path) -> asyncio.subprocess.Process:
    """Another process, once it holds the lock."""
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOLDER, str(lock_path),
                                                  stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert holder.stdout is not None
    assert (await asyncio.wait_for(holder.stdout.readline(), timeout=30)).strip() == b"held"
    return holder


async def test_an_urgent_writer_goes_before_the_others_waiting_and_a_cancelled_one_passes_its_turn_on() -> None:
    turn = _WriteTurn()
    order: list[str] = []
    release_first = asyncio.Event()

    async def write(name: str, *, urgent: bool = False, hold: asyncio.Event | None = None) -> None:
        async with turn(urgent=urgent):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(write("first", hold=release_first))
    await wait_until(lambda: order == ["first"])
    waiting = []
    for name, urgent in (("record-1", False), ("record-2", False), ("claim", True), ("cancelled", True)):
        waiting.append(asyncio.create_task(write(name, urgent=urgent)))
        await wait_until(lambda: len(turn._others) + len(turn._urgent) == len(waiting))  # in this order
    cancelled = waiting.pop()
    cancelled.cancel()
    release_first.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "claim", "record-1", "record-2"]
    async with asyncio.timeout(1):  # the turn is free again
        await write("later")


async def test_postgresql_statistics_of_a_grown_hot_table_are_refreshed_until_it_is_analyzed(postgresql_url: str) -> None:
    db = Database(postgresql_url)
    await db.migrate()
    try:
        await db.write(lambda session: session.execute(text(
            "INSERT INTO identity_links (game_id, user_id, anonymous_id, link_time_us) "
            "SELECT 'g', 'u' || n, 'a' || n, 1 FROM generate_series(1, :rows) AS n"), {"rows": 2 * CHANGED_FLOOR}))
        # PostgreSQL publishes a table's change counts within about a second of the commit.
        assert await wait_until(lambda: analyze_stale_tables(db)) == ["identity_links"]
        async with db.snapshot() as session:
            analyzed_at = await session.scalar(text(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'identity_links'"))
        assert analyzed_at is not None
        assert await analyze_stale_tables(db) == []
        # From the smaller sample: a histogram of at most STATISTICS_TARGET + 1 bounds (the server's default
        # target, 100, would give 101 for 2,000 distinct user ids).
        async with db.snapshot() as session:
            bounds = await session.scalar(text(
                "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats "
                "WHERE tablename = 'identity_links' AND attname = 'user_id'"))
        assert 2 <= bounds <= STATISTICS_TARGET + 1
    finally:
        await db.close()


async def _drop_connections_of(url: str) -> int:
    """What a server restart does to the service's pooled connections: each backend of its database is ended."""
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return len(await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.rsplit("/", 1)[1]))
    finally:
        await admin.close()


async def test_postgresql_connections_dropped_while_idle_are_replaced_before_use(postgresql_url: str) -> None:
    db = Database(postgresql_url, idle_ping_s=0.0)
    await db.migrate()
    try:
        assert await db.read(lambda session: session.scalar(text("SELECT 1"))) == 1
        assert await _drop_connections_of(postgresql_url) >= 1

        assert await db.read(lambda session: session.scalar(text("SELECT 2"))) == 2
        assert await db.write(lambda session: session.scalar(text("SELECT 3"))) == 3
    finally:
        await db.close()


async def test_postgresql_a_connection_dropped_while_in_use_fails_one_transaction_and_the_pool_lets_go_of_the_rest(
        postgresql_url: str) -> None:
    db = Database(postgresql_url, idle_ping_s=3600.0)  # never pinged: as a connection in steady use
    await db.migrate()
    try:
        async with db.transaction() as first, db.transaction() as second:  # two connections pooled, then dropped
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
        assert await _drop_connections_of(postgresql_url) >= 2
        with pytest.raises(DBAPIError) as failed:
            await db.write(lambda session: session.scalar(text("SELECT 1")))
        assert failed.value.connection_invalidated

        assert await db.write(lambda session: session.scalar(text("SELECT 2"))) == 2
        assert await db.read(lambda session: session.scalar(text("SELECT 3"))) == 3
    finally:
        await db.close()


async def test_postgresql_ingest_goes_on_once_the_server_dropped_the_connections_it_was_using(
        tmp_path, postgresql_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, postgresql_url, fake_network)) as app, \
            h.authorized_channel(app) as channel:
        await h.create_config(channel, "g1")
        assert not (await h.ingest(channel, "g1", h.click("c1", user_id="u1"))).duplicate
        await _drop_connections_of(postgresql_url)

        # Within a second of its last use a connection is not pinged: the transaction that finds it gone runs again
        # (a batch has no group commit to settle it alone).
        await batch_ingest(channel, "g1", [h.purchase("p1", user_id="u1"), h.purchase("p2", user_id="u1")])
        assert (await h.ingest(channel, "g1", h.purchase("p2", user_id="u1"))).duplicate
