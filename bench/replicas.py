"""Two API and two dispatcher processes against one of each on one PostgreSQL, and where their CPU time goes."""

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench import batch_client, benchmarks, refused, workload
from bench.fake import CountingFakeNetwork
from bench.procs import ServerProcess, database_cpu_seconds, fresh_database, run_helper

# Client processes of the batch load: the 4 callers of ingest-batch, half in each, so with two API processes each
# client talks to one of them; the one-API runs use the same two clients, both against the one process.
CLIENTS = 2
NOT_ON_SQLITE = ("does not apply on SQLite: it has one writer, so a second process adds no write capacity (a second "
                 "API process on the same file gained nothing, see docs/performance.md); run with --database-url")


@dataclass
class Replicas:
    """`count` API processes and `count` dispatcher processes on one database."""

    apis: list[ServerProcess]
    dispatchers: list[ServerProcess]

    @property
    def processes(self) -> dict[str, ServerProcess]:
        return {**{f"api-{i + 1}": p for i, p in enumerate(self.apis)},
                **{f"dispatcher-{i + 1}": p for i, p in enumerate(self.dispatchers)}}

    def cpu_seconds(self) -> dict[str, float]:
        return {name: p.cpu_seconds() for name, p in self.processes.items()}


def _server(data_dir: pathlib.Path, url: str, fake: CountingFakeNetwork, role: str, number: int) -> ServerProcess:
    # One data directory for all (its secret key seals the config's credentials, its development key is the
    # clients'), a log file each.
    server = ServerProcess.postbacks(data_dir, url, role=role, tiktok_base_url=fake.tiktok_base_url)
    server.log_path = data_dir / f"server-{role}-{number}.log"
    return server


@contextlib.asynccontextmanager
async def _replicas(count: int, data_dir: pathlib.Path, url: str, fake: CountingFakeNetwork, *,
                    apis: bool = True) -> AsyncIterator[Replicas]:
    """The first API process starts alone (it writes the development key), the others together after it."""
    async with contextlib.AsyncExitStack() as stack:
        started = Replicas([], [])
        if apis:
            started.apis.append(await stack.enter_async_context(_server(data_dir, url, fake, "api", 1)))
        later = ([_server(data_dir, url, fake, "api", n) for n in range(2, count + 1)] if apis else [])
        dispatchers = [_server(data_dir, url, fake, "dispatcher", n) for n in range(1, count + 1)]
        for server in later + dispatchers:
            stack.push_async_exit(server)
        await asyncio.gather(*(server.start() for server in later + dispatchers))
        started.apis += later
        started.dispatchers = dispatchers
        yield started


async def _fetch_int(url: str, query: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(query))
    finally:
        await connection.close()


async def _wal_lsn(url: str) -> int:
    """The server's WAL position in bytes: the whole PostgreSQL server's, other databases' writes included."""
    return await _fetch_int(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")


async def _database_bytes(url: str) -> int:
    """What the database takes on disk: tables, indexes and their free space."""
    return await _fetch_int(url, "SELECT pg_database_size(current_database())")


class Window:
    """CPU seconds spent while a measurement ran, by where they went: each server process, PostgreSQL's backends
    of this database, the client, and the whole machine (so what others on it took shows)."""

    def __init__(self, replicas: Replicas, url: str) -> None:
        self._replicas, self._url = replicas, url
        self.load_average_1m = round(os.getloadavg()[0], 2)

    async def __aenter__(self) -> "Window":
        self._servers = self._replicas.cpu_seconds()
        self._database = database_cpu_seconds(self._url)
        self._busy = refused._busy_cpu_seconds()
        self._own = time.process_time()
        self._wal = await _wal_lsn(self._url)
        self._started = time.monotonic()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.seconds = time.monotonic() - self._started
        self.servers = {name: s - self._servers[name] for name, s in self._replicas.cpu_seconds().items()}
        self.database = database_cpu_seconds(self._url) - self._database
        self.busy = refused._busy_cpu_seconds() - self._busy
        self.own = time.process_time() - self._own  # this process: the fake network, when it is the client
        self.wal_bytes = await _wal_lsn(self._url) - self._wal

    def per_unit_us(self, units: int, client_cpu_s: float) -> dict[str, Any]:
        """µs of CPU per event (or postback), by where it went."""
        def us(seconds: float) -> float:
            return round(1e6 * seconds / max(1, units), 1)

        apis = sum(s for name, s in self.servers.items() if name.startswith("api"))
        dispatchers = sum(s for name, s in self.servers.items() if name.startswith("dispatcher"))
        accounted = apis + dispatchers + self.database + client_cpu_s
        return {"api_processes": us(apis), "dispatcher_processes": us(dispatchers), "postgresql": us(self.database),
                "client": us(client_cpu_s), "total": us(accounted),
                "each_server_process": {name: us(s) for name, s in self.servers.items()},
                "rest_of_machine": us(max(0.0, self.busy - accounted)),
                "wal_bytes_whole_server": round(self.wal_bytes / max(1, units))}

    def machine(self) -> dict[str, float]:
        cores = os.cpu_count() or 1
        return {"seconds": round(self.seconds, 2), "busy_share_of_cores": round(self.busy / (self.seconds * cores), 2),
                "load_average_1m_at_start": self.load_average_1m}


# --- batch ingest -------------------------------------------------------------------------------------------------

async def _batch_run(opts: "benchmarks.Options", count: int, run: int, streams: list[workload.Workload]) -> dict[str, Any]:
    """The 4 callers' one-game load, split over two client processes, into `count` API processes (client i sends to
    API process i mod count) beside `count` dispatchers, in a fresh database."""
    per_client = len(streams) // CLIENTS
    files = []
    for client in range(CLIENTS):
        path = opts.work_dir / f"replicas-batch-client-{client}.bin"
        if not path.exists():
            workload.write_batches(path, workload.interleave(streams[client * per_client:(client + 1) * per_client]).batches)
        files.append(path)
    async with benchmarks._fake() as fake, fresh_database(opts.database_url, opts.work_dir / f"rb-db-{run}") as url:
        async with _replicas(count, opts.work_dir / f"replicas-batch-{run}", url, fake) as replicas:
            await benchmarks._create_config(replicas.apis[0])
            start_at = time.monotonic() + 3.0  # both clients start sending at once, after importing what they need
            clients = asyncio.gather(*(run_helper(
                "replicas", "--port", str(replicas.apis[client % count].port), "--key", replicas.apis[0].key,
                "--batches", str(files[client]), "--concurrency", str(per_client), "--start-at", str(start_at),
                "--max-seconds", str(opts.scale(60, 15))) for client in range(CLIENTS)))
            size_before = await _database_bytes(url)
            await asyncio.sleep(max(0.0, start_at - 0.1 - time.monotonic()))
            async with Window(replicas, url) as window:
                reports = await clients
            arrived_during_load = len(fake.arrivals)
            size = await _database_bytes(url) - size_before
        _, deliveries = await benchmarks._count(url)
    sent = [report for report, _ in reports]
    expected = sum(sum(streams[client * per_client + caller].owed_per_batch[:calls])
                   for client, report in enumerate(sent) for caller, calls in enumerate(report["calls_per_caller"]))
    if deliveries != expected:
        raise RuntimeError(f"{deliveries} postbacks owed where the batches sent owe {expected}")
    events = sum(r["events"] - r["duplicates"] for r in sent)
    seconds = max(r["finished_monotonic"] for r in sent) - min(r["started_monotonic"] for r in sent)
    return {"processes": count, "per_second": round(events / seconds, 1), "events": events,
            "seconds": round(seconds, 2), "errors": sum(r["errors"] for r in sent),
            "postbacks_arrived_during_load": arrived_during_load,
            "database_bytes_per_event": round(size / max(1, events)),
            "cpu_per_event_us": window.per_unit_us(events, sum(r["cpu_s"] for r in sent)),
            "machine": window.machine(), "servers": [opts.shown(p.command, p.key) for p in replicas.processes.values()],
            "client": opts.shown(reports[0][1], replicas.apis[0].key)}


async def batch(opts: "benchmarks.Options") -> "benchmarks.Result":
    """BatchIngestEvents (1000 a call), 4 callers of one game, acknowledged events/s into two API processes beside two
    dispatchers, against one of each, in the same run (A B B A; --quick: A B)."""
    if opts.database_kind != "postgresql":
        return _not_applicable(opts, "replicas-batch")
    streams = workload.streams(opts.scale(100_000, 20_000), benchmarks.CALLERS, games=1)
    runs = [await _batch_run(opts, count, run, streams) for run, count in enumerate(_order(opts))]
    return _result(opts, "replicas-batch", runs, "events/s", "event",
                   "BatchIngestEvents (1000 a call), 4 callers of one game in 2 client processes, acknowledged "
                   "events/s: 2 API + 2 dispatcher processes",
                   "the same load with 1 API and 1 dispatcher process (ratio: what the second pair adds)")


# --- delivery from a backlog --------------------------------------------------------------------------------------

async def _deliver_run(opts: "benchmarks.Options", count: int, run: int, postbacks: int,
                       backlog_file: pathlib.Path) -> dict[str, Any]:
    """A backlog ingested by one API process, then drained by `count` dispatcher processes started together, timed
    from the first saying it serves to the fake receiving the last dedup id."""
    async with benchmarks._fake() as fake, fresh_database(opts.database_url, opts.work_dir / f"rd-db-{run}") as url:
        data_dir = opts.work_dir / f"replicas-deliver-{run}"
        async with _server(data_dir, url, fake, "api", 1) as api:
            await benchmarks._create_config(api)
            ingested, _ = await benchmarks._ingest(api, backlog_file)
        _, owed = await benchmarks._count(url)
        if owed != postbacks or ingested["errors"]:
            raise RuntimeError(f"the backlog owes {owed} postbacks, not {postbacks} ({ingested['errors']} errors)")
        fake.reset()
        async with _replicas(count, data_dir, url, fake, apis=False) as replicas:
            # The window opens once every dispatcher serves (their start-up is not delivery), when the first may
            # have sent some already: the CPU figures are per postback delivered inside it.
            before_window = len(fake.arrivals)
            async with Window(replicas, url) as window:
                delivered = await fake.wait_for_postbacks(postbacks, timeout_s=opts.scale(900, 120))
        if not delivered:
            raise RuntimeError(f"only {len(fake.arrivals)} of {postbacks} postbacks arrived")
    seconds = max(fake.arrivals.values()) - min(d.ready_at for d in replicas.dispatchers)
    return {"processes": count, "per_second": round(postbacks / seconds, 1), "postbacks": postbacks,
            "seconds": round(seconds, 2), "errors": 0, "network_requests": fake.requests,
            "repeated_dedup_ids": fake.repeats,
            "delivered_before_the_window": before_window,
            "cpu_per_postback_us": window.per_unit_us(postbacks - before_window, window.own),
            "machine": window.machine(), "servers": [opts.shown(p.command) for p in replicas.dispatchers]}


async def deliver(opts: "benchmarks.Options") -> "benchmarks.Result":
    """Postbacks/s two dispatcher processes deliver from a backlog to the fake network, against one (A B B A;
    --quick: A B); the client here is the fake network, in the benchmark's own process."""
    if opts.database_kind != "postgresql":
        return _not_applicable(opts, "replicas-deliver")
    postbacks = opts.scale(100_000, 30_000)  # 10,000 drained in about a second here: too short to compare
    backlog_file = opts.work_dir / "replicas-backlog.bin"
    workload.write_batches(backlog_file, workload.backlog(postbacks).batches)
    runs = [await _deliver_run(opts, count, run, postbacks, backlog_file) for run, count in enumerate(_order(opts))]
    return _result(opts, "replicas-deliver", runs, "postbacks/s", "postback",
                   f"postbacks delivered/s from a backlog of {postbacks:,}: 2 dispatcher processes",
                   "the same backlog drained by 1 dispatcher process (ratio: what the second adds)")


# --- the rows -----------------------------------------------------------------------------------------------------

def _order(opts: "benchmarks.Options") -> list[int]:
    """Processes of each kind per run: alternated so that drift in the machine's load falls on both."""
    return [1, 2] if opts.quick else [1, 2, 2, 1]


def _result(opts: "benchmarks.Options", name: str, runs: list[dict[str, Any]], unit: str, per: str,
            title: str, ceiling_label: str) -> "benchmarks.Result":
    one = [r for r in runs if r["processes"] == 1]
    two = [r for r in runs if r["processes"] == 2]
    cpu = f"cpu_per_{per}_us"

    def side(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"per_second": [r["per_second"] for r in rs],
                **{f"{where}_us_per_{per}": [r[cpu][where] for r in rs]
                   for where in ("api_processes", "dispatcher_processes", "postgresql", "client", "total",
                                 "rest_of_machine")},
                f"wal_bytes_whole_server_per_{per}": [r[cpu]["wal_bytes_whole_server"] for r in rs],
                **({f"database_bytes_per_{per}": [r[f"database_bytes_per_{per}"] for r in rs]}
                   if f"database_bytes_per_{per}" in rs[0] else {}),
                "load_average_1m": [r["machine"]["load_average_1m_at_start"] for r in rs]}

    return benchmarks.Result(
        name=name, title=f"{title}, against 1 (the ceiling column), same PostgreSQL",
        figure=round(statistics.median(r["per_second"] for r in two), 1), unit=unit,
        ceiling=round(statistics.median(r["per_second"] for r in one), 1),
        ceiling_label=ceiling_label,
        target="report: the ratio, and CPU per event by process (2 cores here: no room to scale)", met=None,
        command=opts.command(name), quick=opts.quick, database=opts.database_kind,
        errors=sum(r["errors"] for r in runs),
        details={"one_of_each": side(one), "two_of_each": side(two), "runs": runs,
                 "cores": os.cpu_count() or 0})


def _not_applicable(opts: "benchmarks.Options", name: str) -> "benchmarks.Result":
    return benchmarks.Result(
        name=name, title=f"two processes of each role against one: {NOT_ON_SQLITE}", figure=0.0, unit="(n/a)",
        ceiling=None, ceiling_label="—", target="PostgreSQL only", met=None, command=opts.command(name),
        quick=opts.quick, database=opts.database_kind, details={"skipped": NOT_ON_SQLITE})


BENCHMARKS = {"replicas-batch": batch, "replicas-deliver": deliver}


# --- the batch client, as a process of its own ----------------------------------------------------------------------

def main() -> None:
    """`python -m bench.replicas`: bench.batch_client's callers, starting at a given moment (CLOCK_MONOTONIC, which
    every process shares) and reporting their own CPU time."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--batches", type=pathlib.Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--start-at", type=float, required=True, help="time.monotonic() to start sending at")
    args = parser.parse_args()
    batches = workload.read_batches(args.batches)
    time.sleep(max(0.0, args.start_at - time.monotonic()))
    cpu_before, started = time.process_time(), time.monotonic()
    report = asyncio.run(batch_client.send_all(args.port, args.key, batches, args.concurrency, args.max_seconds,
                                               interleaved=True))
    print(json.dumps({**report, "cpu_s": round(time.process_time() - cpu_before, 3), "started_monotonic": started,
                      "finished_monotonic": time.monotonic()}), flush=True)


if __name__ == "__main__":
    main()
