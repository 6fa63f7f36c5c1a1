"""The contracts and the schema stay honest: buf lint is clean, generated code is fresh, migrations match models."""

import pathlib
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.store.db import Database
from server.store.models import Base

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
                lambda sync_conn: compare_metadata(MigrationContext.configure(sync_conn), Base.metadata))
        assert differences == []
        await db.migrate()  # a second start on a migrated database is a no-op
    finally:
        await db.close()
