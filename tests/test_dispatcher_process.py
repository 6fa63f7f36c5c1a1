"""The default deployment's dispatcher process: it sends what the API process takes, its metrics are served with the
API's, it is started again when it dies, and it never outlives the service."""

import asyncio
import os
import pathlib
import signal
import sys

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.dispatcher_process import CHILD_MARKER, wanted
from server.metrics import merge_families
from server.settings import Settings
from tests import helpers as h
from tests.conftest import test_settings as settings_for
from tests.conftest import wait_until
from tests.process_helpers import ServerProcess

GAME = "child-process"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    return [int(child) for task in pathlib.Path(f"/proc/{pid}/task").glob("*/children")
            for child in task.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def _purchase(server: ServerProcess, player: str) -> None:
    """A paid click and the purchase it earns: one postback owed to TikTok."""
    async with h.key_channel(server.port, server.dev_key) as channel:  # type: ignore[arg-type]
        await h.ingest(channel, GAME, h.click(f"click-{player}", anonymous_id=player, network=1,
                                               click_id=f"ttclid-{player}"))
        await h.ingest(channel, GAME, h.purchase(f"buy-{player}", anonymous_id=player, value="1.99", currency="USD"))


def _settings(tmp_path, database_url, fake_network) -> Settings:  # type: ignore[no-untyped-def]
    return settings_for(tmp_path, database_url, fake_network, dispatcher_process="on",
                         metrics_listen="127.0.0.1:0")


async def test_the_default_deployment_sends_from_its_dispatcher_process_and_serves_its_metrics(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with ServerProcess(_settings(tmp_path, database_url, fake_network), tmp_path / "logs") as server:
        await server.start()
        assert server.process is not None
        children = await wait_until(lambda: _children(server.process.pid))  # type: ignore[union-attr]
        assert len(children) == 1
        async with h.key_channel(server.port, server.dev_key) as channel:  # type: ignore[arg-type]
            await h.create_config(channel, GAME)
        await _purchase(server, "p1")
        await fake_network.wait_for(1, network="tiktok", timeout=30)

        # The API process counted the events, the dispatcher process the attempt: one scrape shows both.
        tiktok_success = ("postbacks_delivery_attempts_total", (("network", "tiktok"), ("outcome", "success")))
        metrics = await wait_until(lambda: _scrape_with(server.metrics_port, tiktok_success), timeout=30)
        assert metrics[tiktok_success] == 1
        assert metrics["postbacks_events_ingested_total", (("kind", "purchase"),)] == 1
        assert metrics["postbacks_delivery_attempt_latency_seconds_count", (("network", "tiktok"),)] == 1

        assert server.stop() == 0
        await wait_until(lambda: not _alive(children[0]), timeout=30)
    assert "(dispatcher process)" in server.logs()


async def _scrape_with(port: int | None, key):  # type: ignore[no-untyped-def]
    assert port is not None
    metrics = await _scrape(port)
    return metrics if metrics.get(key) else None


async def test_a_dispatcher_process_that_dies_is_started_again(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with ServerProcess(_settings(tmp_path, sqlite_url, fake_network), tmp_path / "logs") as server:
        await server.start()
        pid = server.process.pid  # type: ignore[union-attr]
        [first] = await wait_until(lambda: _children(pid))
        async with h.key_channel(server.port, server.dev_key) as channel:  # type: ignore[arg-type]
            await h.create_config(channel, GAME)
        os.kill(first, signal.SIGKILL)
        [second] = await wait_until(lambda: [c for c in _children(pid) if c != first and _alive(c)], timeout=30)
        await _purchase(server, "p2")
        await fake_network.wait_for(1, network="tiktok", timeout=30)
        assert second != first
    assert "the dispatcher process exited with code -9" in server.logs()


async def test_the_dispatcher_process_stops_when_its_parent_is_killed(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with ServerProcess(_settings(tmp_path, sqlite_url, fake_network), tmp_path / "logs") as server:
        await server.start()
        [child] = await wait_until(lambda: _children(server.process.pid))  # type: ignore[union-attr]
        server.kill()
        await wait_until(lambda: not _alive(child), timeout=30)


@pytest.mark.parametrize(("role", "asked", "cpus", "expected"), [
    ("all", "on", 1, True),
    ("all", "off", 8, False),
    ("all", "auto", 1, False),
    ("all", "auto", 2, True),
    ("api", "on", 8, False),
    ("dispatcher", "auto", 8, False),
])
def test_which_deployments_run_a_dispatcher_process(monkeypatch, role, asked, cpus, expected) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert wanted(Settings(role=role, dispatcher_process=asked)) is expected


def test_metrics_of_two_processes_are_summed_by_series() -> None:
    def registry(ingested: int, attempts: int, latencies: list[float], pending: float) -> CollectorRegistry:
        r = CollectorRegistry()
        Counter("events", "", ["kind"], registry=r).labels(kind="click").inc(ingested)
        sent = Counter("attempts", "", ["network"], registry=r)
        if attempts:
            sent.labels(network="tiktok").inc(attempts)
        histogram = Histogram("latency_seconds", "", buckets=(0.1, 1.0), registry=r)
        for latency in latencies:
            histogram.observe(latency)
        Gauge("pending", "", registry=r).set(pending)
        return r

    api = registry(ingested=5, attempts=0, latencies=[], pending=3)
    dispatcher = registry(ingested=0, attempts=2, latencies=[0.05, 0.5], pending=0)

    class Merged:
        def collect(self):  # type: ignore[no-untyped-def]
            return merge_families(api.collect(), generate_latest(dispatcher))

    merged = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(generate_latest(Merged()).decode())  # type: ignore[arg-type]
              for s in family.samples}
    assert merged["events_total", (("kind", "click"),)] == 5
    assert merged["attempts_total", (("network", "tiktok"),)] == 2  # a series only the other process has
    assert merged["latency_seconds_bucket", (("le", "0.1"),)] == 1
    assert merged["latency_seconds_bucket", (("le", "+Inf"),)] == 2
    assert merged["latency_seconds_sum", ()] == pytest.approx(0.55)
    assert merged["pending", ()] == 3
    own_created = {s.name: s.value for f in api.collect() for s in f.samples if s.name.endswith("_created")}
    assert merged["events_created", (("kind", "click"),)] == own_created["events_created"]


async def test_a_dispatcher_process_that_cannot_start_fails_the_start_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Python runs a sitecustomize module found on PYTHONPATH at start-up: this one ends the child alone.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        f"import os\nif os.environ.get({CHILD_MARKER!r}):\n    os._exit(3)\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"), "--dispatcher-process", "on",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("POSTBACKS_")},
             "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"})
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert b"serving gRPC" not in stdout
    assert stderr.decode().strip().splitlines()[-1] == (
        "postbacks: the dispatcher process exited with code 3 as it started (its log is above); "
        "--dispatcher-process off runs the dispatcher in this process")
