"""Migration 0006 keeps every delivery-log row: on PostgreSQL each lands in its day's partition, ids go on unique."""

import time

from sqlalchemy import text

from server.store import log_partitions
from server.store.db import Database
from tests.helpers import migrate_to

DAY_US = log_partitions.DAY_US
AGES_DAYS = [45, 31, 3, 0, 0]


async def test_the_upgrade_keeps_every_row_of_a_0005_database(database_url: str) -> None:
    db = Database(database_url)
    try:
        now_us = int(time.time() * 1_000_000)
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync_conn: migrate_to(sync_conn, "0005"))
            for index, age in enumerate(AGES_DAYS):
                await conn.execute(text(
                    "INSERT INTO delivery_logs (game_id, config_row_id, config_id, config_display_name, network, "
                    "attempt_time_us, event_type, status, http_status, latency_ms, attempt_number, "
                    "conversion_event_id) VALUES ('g', 1, 'tt', 'TikTok', 'tiktok', :time, 'purchase', 'success', "
                    "200, 40, 1, :conversion)"), {"time": now_us - age * DAY_US - index, "conversion": f"c{index}"})
            before = (await conn.execute(text(
                "SELECT id, attempt_time_us, conversion_event_id FROM delivery_logs ORDER BY id"))).all()
            await conn.run_sync(lambda sync_conn: migrate_to(sync_conn, "head"))
            after = (await conn.execute(text(
                "SELECT id, attempt_time_us, conversion_event_id FROM delivery_logs ORDER BY id"))).all()
            assert after == before
            if db.is_sqlite:
                return
            placed = dict((await conn.execute(text(
                "SELECT id, tableoid::regclass::text FROM delivery_logs"))).all())
            assert placed == {row_id: log_partitions.partition_name(log_partitions.day_start_us(time_us))
                              for row_id, time_us, _ in before}
            today = log_partitions.day_start_us(now_us)
            upcoming = {log_partitions.partition_name(today + i * DAY_US) for i in range(log_partitions.DAYS_AHEAD + 1)}
            partitions = set((await conn.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'delivery_logs'::regclass"))).scalars())
            assert upcoming | {log_partitions.DEFAULT_PARTITION} <= partitions
            key = (await conn.execute(text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'delivery_logs_pkey'"))).scalar()
            assert key == "PRIMARY KEY (id, attempt_time_us)"
            [new_id] = (await conn.execute(text(
                "INSERT INTO delivery_logs (game_id, config_row_id, config_id, config_display_name, network, "
                "attempt_time_us, event_type, status, http_status, latency_ms, attempt_number, conversion_event_id) "
                "VALUES ('g', 1, 'tt', 'TikTok', 'tiktok', :time, 'purchase', 'success', 200, 40, 1, 'new') "
                "RETURNING id"), {"time": now_us})).scalars()
            assert new_id > before[-1][0], "the sequence goes on where it was"
    finally:
        await db.close()


async def test_partitions_for_a_range_are_made_once(postgresql_url: str) -> None:
    db = Database(postgresql_url)
    try:
        await db.migrate()
        start_us = log_partitions.day_start_us(int(time.time() * 1_000_000)) - 10 * DAY_US
        made = await log_partitions.ensure_delivery_log_partitions(db, start_us + 1, start_us + 3 * DAY_US + 1)
        assert made == [log_partitions.partition_name(start_us + i * DAY_US) for i in range(4)]
        assert await log_partitions.ensure_delivery_log_partitions(db, start_us, start_us + 4 * DAY_US) == []
    finally:
        await db.close()

