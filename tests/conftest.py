"""Shared fixtures: the real server on port 0 over a real channel, real SQLite files and the real PostgreSQL."""

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from server.app import App
from server.settings import Settings
from tests.fakes.fake_network import FakeAdNetwork
from tests.helpers import API_KEYS_BY_PORT, authorized_channel

PG_ADMIN_DSN = os.environ.get("POSTBACKS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_pg_available: bool | None = None


async def _postgres_reachable() -> bool:
    global _pg_available
    if _pg_available is None:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
            await conn.close()
            _pg_available = True
        except (OSError, asyncpg.PostgresError, TimeoutError):
            _pg_available = False
    return _pg_available


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; skips (or, under CI=true, fails) without one."""
    if not await _postgres_reachable():
        message = f"PostgreSQL is not reachable at {PG_ADMIN_DSN}; start it to run the PostgreSQL variants"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true requires PostgreSQL)")
        pytest.skip(message)
    name = f"postbacks_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    host_part = PG_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{host_part}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'postbacks.db'}"
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture
async def postgresql_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, for behaviour only PostgreSQL has (concurrent writers, sequence holes)."""
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'postbacks.db'}"


@pytest.fixture
async def fake_network() -> AsyncIterator[FakeAdNetwork]:
    async with FakeAdNetwork() as fake:
        yield fake


def test_settings(tmp_path, database_url: str, fake: FakeAdNetwork, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    """Settings for a server under test. Development mode gives it a full-access key (App.dev_key) that the
    `channel` fixture and helpers.grpcurl send, so tests that are not about access control need not know of keys."""
    return Settings(**{
        "dev_key_file": str(tmp_path / "data" / "dev.key"),
        "listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "database_url": database_url,
        "tiktok_base_url": fake.tiktok_base_url,
        "reddit_base_url": fake.reddit_base_url,
        "shutdown_grace_s": 1.0,
        "sqlite_synchronous": "NORMAL",
        "retry_base_delay_s": 0.05,
        "retry_max_delay_s": 0.2,
        "dispatch_poll_s": 0.2,
        "http_total_timeout_s": 5.0,
        **overrides,
    })


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[App]:
    app = App(settings)
    await app.start()
    ports = [port for port in (app.port, app.http_port) if port]
    if app.dev_key:
        API_KEYS_BY_PORT.update(dict.fromkeys(ports, app.dev_key))
    try:
        yield app
    finally:
        for port in ports:
            API_KEYS_BY_PORT.pop(port, None)
        await app.stop(grace_s=0.5)


@pytest.fixture
async def app(tmp_path, database_url, fake_network) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    async with running_app(test_settings(tmp_path, database_url, fake_network)) as running:
        yield running


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with authorized_channel(app) as ch:
        yield ch


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    """Polls an (async) condition until it holds or the deadline passes; returns its last truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
