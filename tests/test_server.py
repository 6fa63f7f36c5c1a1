"""The process as an operator meets it: `python -m server` starts, serves health, stops cleanly on SIGTERM."""

import asyncio
import os
import re
import signal
import stat
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import running_app
from tests.conftest import test_settings as settings_for


async def test_health_is_serving_then_not_serving_during_shutdown(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "postbacks.v1.EventService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            stopping = asyncio.create_task(app.stop(grace_s=1))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await stopping


async def test_database_file_is_private(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)):
        mode = stat.S_IMODE(os.stat(sqlite_url.split("///", 1)[1]).st_mode)
    assert mode & 0o077 == 0, oct(mode)


async def test_python_dash_m_server_serves_and_stops_on_sigterm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--dev-key-file", str(tmp_path / "data" / "dev.key"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        port = int(re.search(r"port (\d+)", line).group(1))  # type: ignore[union-attr]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert (tmp_path / "data" / "postbacks.db").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
