"""The contracts and the schema stay honest: buf lint is clean, generated code is fresh, migrations match models."""

import pathlib
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from server.store.db import Database
from server.store.log_partitions import is_partition
from server.store.models import Base
from tests.helpers import migrate_to

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([str(BIN / "buf"), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run([sys.executable, "proto/gen.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_migrations_produce_exactly_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync_conn: compare_metadata(MigrationContext.configure(sync_conn, opts={
                    "include_name": lambda name, kind, _parents: kind != "table" or not is_partition(name)}),
                    Base.metadata))
        assert differences == []
        await db.migrate()  # a second start on a migrated database is a no-op
    finally:
        await db.close()


# last_error as the dispatcher wrote it before failure reasons were kept, and the reason each now reads as.
FAILED_BEFORE_0005 = [
    ("tiktok", "HTTP 200, code 40105: Access token is incorrect or has been revoked.", "credentials"),
    ("tiktok", "HTTP 200, code 40001: No permission to operate this pixel", "credentials"),
    ("tiktok", "HTTP 401: not authorised", "credentials"),
    ("reddit", "HTTP 403: pixel not accessible with this token", "credentials"),
    ("reddit", "HTTP 404: pixel 'a2_x' not found", "credentials"),
    ("tiktok", "HTTP 404: request refused", "payload"),  # TikTok's 404 is not about credentials
    ("tiktok", "HTTP 200, code 40002: Invalid parameter", "payload"),
    ("reddit", "HTTP 400: invalid event(s)", "payload"),
    ("reddit", "Reddit needs a click id or a hashed email, and this conversion has neither", "payload"),
    ("tiktok", "retry window closed: TikTok merges duplicates only within 48 hours of the first attempt "
               "(last reply: HTTP 503)", "retry_window_closed"),
    ("tiktok", "no HTTP reply: timed out waiting for the network", None),  # not a failure the dispatcher wrote
]


async def test_postbacks_failed_before_the_circuit_breaker_get_their_failure_reason(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync_conn: migrate_to(sync_conn, "0004"))
            for network in ("tiktok", "reddit"):
                await conn.execute(text(
                    "INSERT INTO postback_configs (game_id, config_id, display_name, network, pixel_id, "
                    "access_token_sealed, access_token_hint, trigger_events, enabled, create_time_us, update_time_us, "
                    "credentials_update_time_us) VALUES ('g', :network, '', :network, 'p', :sealed, '', 'purchase', "
                    "true, 0, 0, 0)"), {"network": network, "sealed": b"x"})
            for index, (network, last_error, _) in enumerate(FAILED_BEFORE_0005):
                await conn.execute(text(
                    "INSERT INTO events (game_id, event_id, kind, event_time_us, receive_time_us, payload_sha256) "
                    "VALUES ('g', :event_id, 'purchase', 0, 0, '')"), {"event_id": f"p{index}"})
                await conn.execute(text(
                    "INSERT INTO deliveries (game_id, event_row_id, config_row_id, state, attempt_count, "
                    "next_attempt_time_us, last_error, create_time_us) SELECT 'g', e.id, c.id, 'failed', 1, 0, "
                    ":error, 0 FROM events e, postback_configs c WHERE e.event_id = :event_id AND c.network = "
                    ":network"), {"event_id": f"p{index}", "error": last_error, "network": network})
            await conn.run_sync(lambda sync_conn: migrate_to(sync_conn, "head"))
            reasons = dict((await conn.execute(text(
                "SELECT e.event_id, d.failure_reason FROM deliveries d JOIN events e ON e.id = d.event_row_id"))).all())
        assert [reasons[f"p{index}"] for index in range(len(FAILED_BEFORE_0005))] == [
            reason for _, _, reason in FAILED_BEFORE_0005]
    finally:
        await db.close()

