"""Replicas: two server processes on one PostgreSQL database ingest and dispatch together without sending any
postback twice; when one is killed mid-flight, the other finishes its work once the leases expire."""

import asyncio
import collections

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from postbacks.v1 import event_service_pb2, event_service_pb2_grpc, network_pb2
from server.core.types import DeliveryState
from server.secrets import encode_keys, new_secret_key
from server.store.db import Database
from server.store.models import Delivery
from tests import helpers as h
from tests.conftest import postgres_database, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import postback_requests, request_events
from tests.fakes.fake_network import FakeAdNetwork, ReceivedRequest, Reply
from tests.process_helpers import ServerProcess

pytestmark = pytest.mark.slow
TIKTOK = network_pb2.NETWORK_TIKTOK
PIXELS = tuple(f"CTREPLICA{i}" for i in range(8))
CONCURRENCY = 4  # batches each replica sends at once: 8 configs in flight means 4 on each replica
LEASE_S = 3.0
HOLD_S = 2.5  # how long the network holds each request of the second wave (less than the lease)
GAME = "g1"


def arrivals(requests: list[ReceivedRequest]) -> collections.Counter[tuple[str, str]]:
    """How often each (pixel, dedup id) reached the network."""
    return collections.Counter((r.json["event_source_id"], e["event_id"]) for r in requests for e in request_events(r))


def owed(event_ids) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(pixel, event_id) for event_id in event_ids for pixel in PIXELS}


def user_events(prefix: str, user: int) -> tuple:  # type: ignore[type-arg]
    uid = f"{prefix}u{user}"
    return (h.click(f"{prefix}c{user}", user_id=uid, landing_url=f"https://game.example/?ttclid={prefix}T{user}"),
            h.purchase(f"{prefix}p{user}", user_id=uid, value="0.99", currency="USD"))


def conversion_ids(prefix: str, users: range) -> set[str]:
    return {f"{prefix}p{user}" for user in users}


async def undelivered(db: Database) -> int:
    async with db.snapshot() as session:
        return await session.scalar(  # type: ignore[return-value]
            select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.SUCCEEDED.value))


async def delivered(db: Database, expected: int) -> bool:
    async with db.snapshot() as session:
        count = await session.scalar(select(func.count()).select_from(Delivery))
    return count == expected and await undelivered(db) == 0


async def successes(server: ServerProcess) -> float:
    """The replica's own count of successful postback attempts, from its /metrics."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        text = await response.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "postbacks_delivery_attempts_total" and sample.labels["outcome"] == "success")


class Client:
    def __init__(self, server: ServerProcess) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {server.dev_key}"),)

    async def ingest(self, event) -> None:  # type: ignore[no-untyped-def]
        await self.stub.IngestEvent(event_service_pb2.IngestEventRequest(parent=f"games/{GAME}", event=event),
                                    metadata=self.metadata, timeout=30)

    async def batch(self, events) -> None:  # type: ignore[no-untyped-def]
        await self.stub.BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(parent=f"games/{GAME}",
                                                                                    events=events),
                                          metadata=self.metadata, timeout=30)


async def test_two_replicas_share_the_work_and_a_survivor_finishes_a_killed_replicas_batches(
        tmp_path, fake_network: FakeAdNetwork) -> None:  # type: ignore[no-untyped-def]
    secret_keys = encode_keys([new_secret_key()]).strip()  # both replicas must open each other's credentials
    async with postgres_database() as url:
        db = Database(url)

        def replica(name: str) -> ServerProcess:
            settings = settings_for(tmp_path / name, url, fake_network, secret_keys=secret_keys,
                                    dispatch_lease_s=LEASE_S, dispatch_concurrency=CONCURRENCY,
                                    dispatch_poll_s=0.1, http_total_timeout_s=30.0, metrics_listen="127.0.0.1:0")
            return ServerProcess(settings, tmp_path / "logs", name)

        try:
            async with replica("a") as a, replica("b") as b:
                a.spawn()
                b.spawn()
                await a.started()
                await b.started()
                await run_replicas(a, b, db, fake_network)
                logs = a.logs() + b.logs()
        finally:
            await db.close()
    assert "unexpected error" not in logs, "a replica answered INTERNAL to some call"


async def run_replicas(a: ServerProcess, b: ServerProcess, db: Database, fake: FakeAdNetwork) -> None:
    async with h.key_channel(a.port, a.dev_key) as channel:  # type: ignore[arg-type]
        for pixel in PIXELS:
            await h.create_config(channel, GAME, network=TIKTOK, pixel_id=pixel)
    clients = {"a": Client(a), "b": Client(b)}
    try:
        # 1. Both ingest (a player's click reaches one replica, their purchase the other) and both dispatch.
        users = range(60)
        queue = iter(users)

        async def worker(first: str, second: str) -> None:
            for user in queue:
                click, purchase = user_events("w1", user)
                await clients[first].ingest(click)
                await clients[second].ingest(purchase)

        await asyncio.gather(*(worker(*("ab" if i % 2 else "ba")) for i in range(8)))
        wave1 = owed(conversion_ids("w1", users))
        await wait_until(lambda: delivered(db, len(wave1)), timeout=60)
        while_both_run = arrivals(postback_requests(fake))
        assert set(while_both_run) == wave1
        assert {key: n for key, n in while_both_run.items() if n != 1} == {}, "sent twice while both replicas ran"
        assert await successes(a) > 0 and await successes(b) > 0, "one replica did not dispatch"

        # 2. The network holds every request of a second wave; all 8 configs are in flight, 4 on each replica.
        fake.set_default("tiktok", Reply.slow(HOLD_S))
        seen = len(postback_requests(fake))
        await clients["a"].batch([e for user in range(20) for e in user_events("w2", user)])
        await wait_until(lambda: len(postback_requests(fake)) == seen + len(PIXELS), timeout=30)
        held = postback_requests(fake)[seen:]
        fake.set_default("tiktok", Reply.ok())
        a.kill()  # mid-flight: its 4 requests get no answer, its leases stay until they expire
        # 3. The survivor keeps ingesting and finishes everything, the dead replica's batches included.
        await clients["b"].batch([e for user in range(10) for e in user_events("w3", user)])
        wave2, wave3 = owed(conversion_ids("w2", range(20))), owed(conversion_ids("w3", range(10)))
        await wait_until(lambda: delivered(db, len(wave1 | wave2 | wave3)), timeout=60)
    finally:
        for client in clients.values():
            await client.channel.close()

    counts = arrivals(postback_requests(fake))
    assert set(counts) == wave1 | wave2 | wave3
    repeated = {key for key, n in counts.items() if n > 1}
    in_flight = [set(arrivals([request])) for request in held]
    assert set().union(*in_flight) == wave2
    # Only the killed replica's in-flight batches went out again: whole requests, once more each.
    assert repeated <= wave2
    assert all(counts[key] == 2 for key in repeated)
    again = [batch for batch in in_flight if batch <= repeated]
    assert set().union(*again) == repeated, "a repeat that was not a whole batch in flight at the kill"
    assert len(again) == CONCURRENCY, f"{len(again)} batches were repeated; the killed replica had {CONCURRENCY}"
