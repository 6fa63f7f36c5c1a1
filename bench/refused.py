"""Memory under refused requests (resident memory after 10,000 refused 1 MB calls), and what the server's
garbage-collector tuning buys unary and batch ingest (the real server against bench.untuned_server)."""

import asyncio
import os
import pathlib
import statistics
import time
from typing import Any

import grpc

from bench import benchmarks, c_load, workload
from bench.procs import ServerProcess, fresh_database
from postbacks.v1 import event_pb2, event_service_pb2

UNARY = "/postbacks.v1.EventService/IngestEvent"
BATCH = "/postbacks.v1.EventService/BatchIngestEvents"
REFUSED_BYTES = 1_000_000
IN_FLIGHT = 8
WARMUP_CALLS = 500  # refused calls of each kind before the measurement


def refused_requests() -> dict[str, bytes]:
    """About 1 MB each, refused as INVALID_ARGUMENT with a valid key (and UNAUTHENTICATED without one): an event
    whose user agent is far over its limit, and a batch of 1,000 clicks whose last event id has a '/'."""
    now = int(time.time())
    unary = event_service_pb2.IngestEventRequest(parent=workload.PARENT, event=event_pb2.Event(
        event_id="refused", user_id="u", user_agent="a" * REFUSED_BYTES, game_launch=event_pb2.GameLaunch(),
        event_time={"seconds": now - 60}))
    url = "https://play.example.com/?ttclid=E.C.P.1&utm_content=" + "x" * 1000
    clicks = [event_pb2.Event(event_id=f"rc-{i}", anonymous_id=f"a-{i}", event_time={"seconds": now - 60},
                              ad_click=event_pb2.AdClick(landing_url=url)) for i in range(workload.BATCH_SIZE)]
    clicks[-1].event_id = "rc/last"
    batch = event_service_pb2.BatchIngestEventsRequest(parent=workload.PARENT, events=clicks)
    return {"unary": unary.SerializeToString(), "batch": batch.SerializeToString()}


async def send_refused(port: int, key: str | None, count: int, requests: dict[str, bytes]) -> dict[str, Any]:
    """`count` calls, alternating the requests, IN_FLIGHT at a time; each must be refused as expected."""
    expected = grpc.StatusCode.INVALID_ARGUMENT if key else grpc.StatusCode.UNAUTHENTICATED
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    bodies = [(BATCH if name == "batch" else UNARY, body) for name, body in requests.items()]
    unexpected: list[str] = []
    remaining = iter(range(count))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        calls = {method: channel.unary_unary(method) for method, _ in bodies}

        async def caller() -> None:
            for i in remaining:
                method, body = bodies[i % len(bodies)]
                try:
                    await calls[method](body, metadata=metadata, timeout=60)
                    code, details = grpc.StatusCode.OK, ""
                except grpc.aio.AioRpcError as e:
                    code, details = e.code(), e.details() or ""
                if code != expected:
                    unexpected.append(f"{method}: {code.name} {details[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return {"calls": count, "expected": expected.name, "seconds": round(time.perf_counter() - started, 2),
            "unexpected": len(unexpected), "first_unexpected": unexpected[0] if unexpected else ""}


def _busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every process, every core), from /proc/stat."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class MachineLoad:
    """How busy the machine was while a measurement ran: all of it, and all but the measured server (the load
    client included, and whatever else runs on the machine)."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._started = time.monotonic()
        self._busy = _busy_cpu_seconds()
        self._server_cpu = server.cpu_seconds()

    def report(self) -> dict[str, float]:
        seconds = time.monotonic() - self._started
        busy = _busy_cpu_seconds() - self._busy
        server = self._server.cpu_seconds() - self._server_cpu
        cores = os.cpu_count() or 1
        return {"seconds": round(seconds, 1), "server_cpu_s": round(server, 2),
                "machine_busy_share": round(busy / (seconds * cores), 2),
                "others_busy_share": round(max(0.0, busy - server) / (seconds * cores), 2),
                "load_average_1m": round(os.getloadavg()[0], 2)}


# --- resident memory after refused requests ------------------------------------------------------------------------

async def refused_memory(opts: "benchmarks.Options") -> "benchmarks.Result":
    """The server's resident memory after 10,000 refused ~1 MB requests (half without a key, half with a valid key
    and invalid content) against before them, on a server warmed up with valid events and refused calls."""
    calls = opts.scale(10_000, 2_000)
    requests = refused_requests()
    warmup = workload.mixed(opts.scale(10_000, 2_000))
    warmup_file = opts.work_dir / "refused-warmup.bin"
    workload.write_batches(warmup_file, warmup.batches)
    phases: dict[str, dict[str, Any]] = {}
    async with benchmarks._fake() as fake, fresh_database(opts.database_url, opts.work_dir / "refused-db") as url:
        server = ServerProcess.postbacks(opts.work_dir / "refused-server", url, role="all",
                                         tiktok_base_url=fake.tiktok_base_url)
        async with server:
            await benchmarks._create_config(server)
            warmed, _ = await benchmarks._ingest(server, warmup_file)
            rss_valid_only = server.rss_mb()
            # Refused calls of each kind first: the buffers of the calls in flight (a few MB each) are then part of
            # the warmed-up server, and what grows after them is what refused calls leave behind.
            for key in (None, server.key):
                await send_refused(server.port, key, WARMUP_CALLS, requests)
            await asyncio.sleep(1.0)
            rss_before, parts_before = server.rss_mb(), server.rss_breakdown_mb()
            for phase, key in (("without a key", None), ("valid key, invalid content", server.key)):
                load = MachineLoad(server)
                report = await send_refused(server.port, key, calls // 2, requests)
                machine = load.report()
                phases[phase] = {**report, "rss_after_mb": round(server.rss_mb(), 1), "machine": machine,
                                 "server_cpu_per_call_us": round(1e6 * machine["server_cpu_s"] / report["calls"])}
            await asyncio.sleep(1.0)
            rss_after, peak, parts_after = server.rss_mb(), server.peak_rss_mb(), server.rss_breakdown_mb()
    growth = rss_after - rss_before
    unexpected = sum(p["unexpected"] for p in phases.values())
    return benchmarks.Result(
        name="memory-refused", title=f"server RSS growth over {calls:,} refused ~1 MB requests, half without a key",
        figure=round(growth, 1), unit="MB", ceiling=None, ceiling_label="—", target="≤ 20 MB",
        met=growth <= 20 and not unexpected and warmed["errors"] == 0,
        command=opts.command("memory-refused"), quick=opts.quick, database=opts.database_kind, errors=unexpected,
        details={
            "rss_after_valid_events_mb": round(rss_valid_only, 1), "rss_before_mb": round(rss_before, 1),
            "rss_after_mb": round(rss_after, 1), "peak_rss_mb": round(peak, 1), "warmup_refused_calls": 2 * WARMUP_CALLS,
            "rss_parts_before_mb": parts_before, "rss_parts_after_mb": parts_after,
            "request_bytes": {name: len(body) for name, body in requests.items()}, "in_flight": IN_FLIGHT,
            "phases": phases, "warmup_events": warmed["events"],
            "server": opts.shown(server.command, server.key),
        })


# --- what the GC tuning buys ---------------------------------------------------------------------------------------

async def _ingest_figures(opts: "benchmarks.Options", module: str, run: int) -> dict[str, Any]:
    """Unary (C client, 256 in flight) and then batch (4 callers) ingest into one fresh server started as `module`:
    acknowledged events per second and the server's CPU time per event."""
    binary = c_load.build()
    bodies = workload.unary_templates(opts.work_dir / "gc-unary")
    batches_file = opts.work_dir / "gc-batches.bin"
    if not batches_file.exists():
        workload.write_batches(batches_file, workload.mixed(opts.scale(30_000, 5_000)).batches)
    warmup_s, duration_s = (1.0, 3.0) if opts.quick else (2.0, 8.0)
    async with benchmarks._fake() as fake, \
            fresh_database(opts.database_url, opts.work_dir / f"gc-db-{run}") as url:
        server = ServerProcess.postbacks(opts.work_dir / f"gc-server-{run}", url, role="api",
                                         tiktok_base_url=fake.tiktok_base_url, module=module)
        async with server:
            await benchmarks._create_config(server)
            load = MachineLoad(server)
            unary, _ = await c_load.run(binary, server.port, UNARY, bodies, workload.PLACEHOLDER, in_flight=256,
                                        connections=4, warmup_s=warmup_s, duration_s=duration_s,
                                        headers=[f"authorization: Bearer {server.key}"])
            unary_machine = load.report()
            load = MachineLoad(server)
            batch, _ = await benchmarks._ingest(server, batches_file)
            batch_machine = load.report()
    # The C client's own count covers warm-up and the measured window alike: so does the server's CPU time.
    return {
        "server": module, "unary_per_second": unary["per_second"], "unary_errors": unary["errors_total"],
        "unary_cpu_per_event_us": round(1e6 * unary_machine["server_cpu_s"] / max(1, unary["ok_total"]), 1),
        "batch_per_second": batch["per_second"], "batch_errors": batch["errors"],
        "batch_cpu_per_event_us": round(1e6 * batch_machine["server_cpu_s"] / max(1, batch["events"]), 1),
        "unary_machine": unary_machine, "batch_machine": batch_machine,
    }


FIGURES = ("unary_per_second", "unary_cpu_per_event_us", "batch_per_second", "batch_cpu_per_event_us")
TUNED, UNTUNED = "server", "bench.untuned_server"


async def gc_tuning(opts: "benchmarks.Options") -> "benchmarks.Result":
    """Unary and batch ingest with the server's GC tuning and without it, alternated (A B B A) so that drift in the
    machine's load falls on both; each figure's range per side, and whether the ranges are apart."""
    order = [TUNED, UNTUNED] if opts.quick else [TUNED, UNTUNED, UNTUNED, TUNED]
    runs = [await _ingest_figures(opts, module, run) for run, module in enumerate(order)]
    comparison = {}
    for figure in FIGURES:
        tuned = [r[figure] for r in runs if r["server"] == TUNED]
        untuned = [r[figure] for r in runs if r["server"] == UNTUNED]
        apart = min(tuned) > max(untuned) or max(tuned) < min(untuned)
        comparison[figure] = {"tuned": [min(tuned), max(tuned)], "untuned": [min(untuned), max(untuned)],
                              "untuned_vs_tuned": round(statistics.median(untuned) / statistics.median(tuned), 3),
                              "beyond_noise": apart and len(tuned) > 1}
    errors = sum(r["unary_errors"] + r["batch_errors"] for r in runs)
    change = 100 * (comparison["unary_cpu_per_event_us"]["untuned_vs_tuned"] - 1)
    return benchmarks.Result(
        name="gc-tuning", title="server CPU per unary event without the GC tuning, against with it (+: costs more)",
        figure=round(change, 1), unit="%", ceiling=None, ceiling_label="—",
        target="report: unary and batch figures with and without the tuning", met=None,
        command=opts.command("gc-tuning"), quick=opts.quick, database=opts.database_kind, errors=errors,
        details={"comparison": comparison, "runs": runs, "order": order})


BENCHMARKS = {"memory-refused": refused_memory, "gc-tuning": gc_tuning}
