"""The process as an operator meets it: `python -m server` starts, serves health, stops cleanly on SIGTERM."""

import asyncio
import os
import pathlib
import re
import signal
import stat
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import running_app
from tests.conftest import test_settings as settings_for

ROOT = pathlib.Path(__file__).resolve().parent.parent


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


async def run_server_command(*args: str, cwd: pathlib.Path) -> tuple[int, str, str]:
    """`python -m server ...` as an operator runs it, to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{name: value for name, value in os.environ.items() if not name.startswith("POSTBACKS_")},
             "PYTHONPATH": str(ROOT)})  # this checkout's server, from any working directory
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


def assert_one_line_refusal(code: int, stderr: str, *fragments: str) -> None:
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("postbacks: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


async def test_a_server_on_a_port_already_in_use_refuses_to_start_in_one_line(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as first:
        code, stdout, stderr = await run_server_command("--listen", f"127.0.0.1:{first.port}",
                                                        "--data-dir", str(tmp_path / "second"), cwd=tmp_path)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert "serving" not in stdout
    assert_one_line_refusal(code, stderr, f"port {first.port} is already in use", "--listen")
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not (tmp_path / "second" / "postbacks.db").exists()  # refused before it touched anything


@pytest.mark.parametrize(("args", "fragments"), [
    (["--tls-cert-file", "server.crt"], ["--tls-key-file is not"]),
    (["--tls-key-file", "server.key"], ["--tls-cert-file is not"]),
    (["--tls-cert-file", "missing.crt", "--tls-key-file", "missing.key"], ["cannot read", "missing"]),
    (["--listen", "localhost"], ["HOST:PORT"]),
    (["--listen", "127.0.0.1:70000"], ["HOST:PORT"]),
    (["--role", "everything"], ["--role", "invalid choice"]),
    (["--secret-keys", "not-base64!"], ["secret keys", "openssl rand -base64 32"]),
    (["--database-url", "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"], ["cannot open the database"]),
    (["keys", "create", "--kind", "ingest"], ["--game"]),
    (["keys", "revoke"], ["exactly one key id"]),
    (["keys", "revoke", "0badc0de"], ["no API key with id 0badc0de"]),
    (["rotate-secret-key", "--secret-keys", "c2hvcnQ="], ["32 bytes"]),
])
async def test_start_up_and_command_errors_are_one_line_and_a_non_zero_exit(tmp_path, args, fragments) -> None:  # type: ignore[no-untyped-def]
    # The defaults go first: the later of two flags wins.
    code, _, stderr = await run_server_command("--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), *args,
                                               cwd=tmp_path)
    assert "Traceback" not in stderr
    assert_one_line_refusal(code, stderr, *fragments)


async def test_key_commands_print_their_result_and_nothing_of_the_migrations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = ["--data-dir", str(tmp_path / "data")]
    code, key, note = await run_server_command("keys", "create", "--kind", "admin", *data, cwd=tmp_path)
    assert code == 0 and key.startswith("pbk_")
    assert note.strip().splitlines() == [note.strip()] and "created admin key" in note
    code, listing, nothing = await run_server_command("keys", "list", *data, cwd=tmp_path)
    assert code == 0 and key.split("_")[1] in listing
    assert nothing == ""
