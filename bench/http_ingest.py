"""The HTTP benchmark: JSON IngestEvent over HTTP/1.1 keep-alive from wrk (a C client), 64 connections, every event
new, against the same uvicorn and wrk answering a no-op Connect handler."""

import json
import os
import pathlib
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bench import workload
from bench.procs import PYTHON, ServerProcess, display_command, fresh_database
from server.store.db import Database
from server.store.models import Event

if TYPE_CHECKING:
    from bench.benchmarks import Options, Result

PATH = "/postbacks.v1.EventService/IngestEvent"
CONNECTIONS = 64
THREADS = 2

# Each request a new visitor's paid click; `init` takes a prefix per run so that warm-up and measurement (and
# rounds) never send the same event id twice. `done` prints wrk's own summary as one JSON line.
WRK_SCRIPT = """
local counter, prefix = 0, ""
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) prefix = args[1] .. "-" .. tid end
request = function()
  counter = counter + 1
  local id = prefix .. "-" .. counter
  local body = '{"parent":"%(parent)s","event":{"eventId":"c-' .. id .. '","eventTime":"%(time)s",' ..
    '"anonymousId":"a-' .. id .. '","ipAddress":"10.1.2.3","userAgent":"%(agent)s",' ..
    '"adClick":{"landingUrl":"https://www.mygame.com/?ttclid=E.C.P.' .. id .. '"}}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer %(key)s"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, ' ..
    '"p50_ms": %%.3f, "p99_ms": %%.3f}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def _wrk() -> str:
    """wrk, from Debian's package (installed here when missing and allowed)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError("the HTTP benchmark needs wrk: run `apt-get install -y wrk` and try again")
    print("bench: installing wrk for the HTTP benchmark", flush=True)
    if subprocess.run([apt, "install", "-y", "wrk"], capture_output=True).returncode != 0:
        subprocess.run([apt, "update"], capture_output=True)
        subprocess.run([apt, "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def _script(directory: pathlib.Path, key: str) -> pathlib.Path:
    event_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    path = directory / "ingest-http.lua"
    path.write_text(WRK_SCRIPT % {"parent": workload.PARENT, "time": event_time, "agent": workload.USER_AGENT,
                                  "key": key})
    return path


async def _load(port: int, script: pathlib.Path, prefix: str, seconds: float) -> tuple[dict, str]:  # type: ignore[type-arg]
    """One closed-loop wrk run: its summary, with acknowledged events per second, and its command line."""
    import asyncio

    argv = [_wrk(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "-s", str(script),
            f"http://127.0.0.1:{port}{PATH}", "--", prefix]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed: {err.decode()[-500:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    acknowledged = report["requests"] - report["status_errors"]
    report["acknowledged"] = acknowledged
    report["per_second"] = round(acknowledged / (report["duration_us"] / 1e6), 1)
    return report, display_command(argv)


async def _stored(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            return await session.scalar(select(func.count()).select_from(Event)) or 0
    finally:
        await db.close()


async def run(opts: "Options") -> "Result":
    """Acknowledged JSON IngestEvent calls per second over HTTP/1.1, 64 keep-alive connections."""
    from bench.benchmarks import Result

    warmup_s, duration_s = (1.0, 4.0) if opts.quick else (3.0, 12.0)
    work = opts.work_dir / "http"
    work.mkdir(parents=True, exist_ok=True)
    dummy_key = "pbk_00000000_" + "0" * 43  # the ceiling's requests carry a header of the same size

    noop = ServerProcess([PYTHON, "-m", "bench.noop_connect_server"], opts.work_dir / "noop-connect.log")
    async with noop:
        script = _script(work, dummy_key)
        cpu_before = noop.cpu_seconds()
        await _load(noop.http_port, script, "warm", warmup_s)
        ceiling, client_command = await _load(noop.http_port, script, "run", duration_s)
        ceiling_cpu = noop.cpu_seconds() - cpu_before

    # The real server with storage cut out: how much of the gap to the ceiling is the HTTP front, authorization,
    # validation and the answer rather than the transaction.
    async with fresh_database(opts.database_url, opts.work_dir / "http-shell-db") as url:
        shell = ServerProcess.postbacks(opts.work_dir / "http-shell", url, role="all",
                                        module="bench.shell_server")
        async with shell:
            script = _script(work, shell.key)
            await _load(shell.http_port, script, "warm", warmup_s)
            cpu_before = shell.cpu_seconds()
            shell_report, _ = await _load(shell.http_port, script, "run", duration_s)
            shell_cpu = shell.cpu_seconds() - cpu_before

    profiler = opts.profiler("ingest-http")
    async with fresh_database(opts.database_url, opts.work_dir / "http-db") as url:
        server = ServerProcess.postbacks(opts.work_dir / "http-server", url, role="all",
                                         **opts.instrument("ingest-http"))
        async with server:
            script = _script(work, server.key)
            await _load(server.http_port, script, "warm", warmup_s)
            await profiler.start(server.pid)
            cpu_before = server.cpu_seconds()
            real, _ = await _load(server.http_port, script, "run", duration_s)
            server_cpu = server.cpu_seconds() - cpu_before
            profile = await profiler.finish()
        stored = await _stored(url)
    return Result(
        name="ingest-http", title=f"JSON IngestEvent over HTTP/1.1 acknowledged events/s, {CONNECTIONS} keep-alive "
                                  "connections (wrk)",
        figure=real["per_second"], unit="events/s", ceiling=ceiling["per_second"],
        ceiling_label="no-op Connect handler, same uvicorn and client", target="≥ 0.5 of ceiling", met=None,
        min_ratio=0.5, command=opts.command("ingest-http"), quick=opts.quick, database=opts.database_kind,
        profile=profile,
        errors=real["status_errors"] + real["socket_errors"],
        details={
            "server": opts.shown(server.command, server.key), "ceiling_server": opts.shown(noop.command),
            "client": opts.shown(client_command), "client_report": real, "ceiling_client_report": ceiling,
            "stored_events": stored,
            "server_cpu_per_event_us": round(1e6 * server_cpu / max(1, real["acknowledged"]), 1),
            "ceiling_cpu_per_call_us": round(1e6 * ceiling_cpu / max(1, ceiling["acknowledged"]), 1),
            "request_p50_ms": real["p50_ms"], "request_p99_ms": real["p99_ms"],
            "without_storage_server": opts.shown(shell.command, shell.key),
            "without_storage_per_second": shell_report["per_second"],
            "without_storage_ratio": round(shell_report["per_second"] / ceiling["per_second"], 3),
            "without_storage_cpu_per_event_us": round(1e6 * shell_cpu / max(1, shell_report["acknowledged"]), 1),
        })
