"""Crash: SIGKILL the real server process at random moments while it ingests and delivers, restart it on the same
database, and check that every acknowledged conversion reached the network and nothing was half-applied."""

import asyncio
import collections
import random
from dataclasses import dataclass, field

import grpc
import pytest
from sqlalchemy import func, select

from postbacks.v1 import conversion_pb2, event_service_pb2, event_service_pb2_grpc, network_pb2
from server.core.types import DeliveryState
from server.store.db import Database
from server.store.models import Delivery, Event
from tests import helpers as h
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.conftest import wait_until
from tests.dispatch_helpers import postback_requests, request_events
from tests.fakes.fake_network import FakeAdNetwork, Reply
from tests.process_helpers import ServerProcess, free_port

pytestmark = pytest.mark.slow
TIKTOK = network_pb2.NETWORK_TIKTOK
PIXELS = ("CTCRASH1", "CTCRASH2")  # each conversion owes one postback per pixel
GAME = "g1"
KILLS = 3
CLIENTS = 6
CONVERSION_KINDS = ("game_launch", "purchase")
# A call cut off by the kill fails with one of these; anything else (INTERNAL above all) is a bug.
EXPECTED_FAILURES = {grpc.StatusCode.UNAVAILABLE}
# Reconnect quickly once the server is back, so clients do not sit in gRPC's default 1 s+ backoff.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 250)]


@dataclass
class Ledger:
    """What the clients were told: acknowledged event ids with their results, failed calls' event ids."""

    acked: dict[str, object] = field(default_factory=dict)  # event id -> IngestResult
    failed: dict[str, grpc.StatusCode] = field(default_factory=dict)
    # The calls that failed, kept as sent so they can be sent again unchanged: (is_batch, events).
    failed_calls: list[tuple[bool, list]] = field(default_factory=list)  # type: ignore[type-arg]

    def acked_conversions(self) -> int:
        return sum(1 for event_id in self.acked if not event_id.startswith("c-"))


def user_events(user: int) -> list:  # type: ignore[type-arg]
    """A paid TikTok click, the player's first launch and a purchase: two conversions, each owed to every pixel."""
    uid = f"u{user}"
    return [h.click(f"c-{user}", user_id=uid, landing_url=f"https://game.example/?ttclid=T{user}"),
            h.launch(f"l-{user}", user_id=uid),
            h.purchase(f"p-{user}", user_id=uid, value="1.99", currency="USD")]


class Client:
    """Ingests users' events until told to stop: odd users in one BatchIngestEvents call, even users one unary
    IngestEvent per event (merged by the server's group commit). A click is sent until acknowledged, so that the
    conversions after it are attributed; each conversion call is made once and its outcome recorded."""

    def __init__(self, port: int, key: str, ledger: Ledger) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.stub = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.ledger = ledger
        self.next_user = 0
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            user, self.next_user = self.next_user, self.next_user + 1
            events = user_events(user)
            if user % 2:
                await self.call(True, events)
            else:
                click, *conversions = events
                while not await self.call(False, [click]):
                    pass
                for event in conversions:
                    await self.call(False, [event])

    async def call(self, is_batch: bool, events: list) -> bool:  # type: ignore[type-arg]
        options = {"metadata": self.metadata, "wait_for_ready": True, "timeout": 30}
        try:
            if is_batch:
                response = await self.stub.BatchIngestEvents(
                    event_service_pb2.BatchIngestEventsRequest(parent=f"games/{GAME}", events=events), **options)
                results = list(response.results)
            else:
                response = await self.stub.IngestEvent(
                    event_service_pb2.IngestEventRequest(parent=f"games/{GAME}", event=events[0]), **options)
                results = [response.result]
        except grpc.aio.AioRpcError as error:
            for event in events:
                self.ledger.failed[event.event_id] = error.code()
            self.ledger.failed_calls.append((is_batch, events))
            return False
        for event, result in zip(events, results, strict=True):
            self.ledger.acked[event.event_id] = result
            self.ledger.failed.pop(event.event_id, None)  # a click sent again after a failure
        return True


async def stored_conversions(db: Database) -> dict[str, tuple[str | None, int]]:
    """Every stored conversion: event id -> (decision, number of delivery rows)."""
    async with db.snapshot() as session:
        rows = await session.execute(
            select(Event.event_id, Event.decision, func.count(Delivery.id))
            .outerjoin(Delivery, Delivery.event_row_id == Event.id)
            .where(Event.game_id == GAME, Event.kind.in_(CONVERSION_KINDS))
            .group_by(Event.id, Event.event_id, Event.decision))
        return {event_id: (decision, deliveries) for event_id, decision, deliveries in rows}


async def stored_event_ids(db: Database) -> set[str]:
    async with db.snapshot() as session:
        return set((await session.execute(select(Event.event_id).where(Event.game_id == GAME))).scalars())


async def undelivered(db: Database) -> int:
    async with db.snapshot() as session:
        return await session.scalar(  # type: ignore[return-value]
            select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.SUCCEEDED.value))


async def all_delivered(db: Database) -> bool:
    conversions = await stored_conversions(db)
    return await undelivered(db) == 0 and all(count == len(PIXELS) for _, count in conversions.values())


def arrivals(fake: FakeAdNetwork) -> collections.Counter[tuple[str, str]]:
    """How often each (pixel, dedup id) reached the network."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for request in postback_requests(fake, "tiktok"):
        for event in request_events(request):
            counts[request.json["event_source_id"], event["event_id"]] += 1
    return counts


async def test_acknowledged_conversions_survive_sigkill_and_nothing_is_half_applied(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    # Short leases: a restarted server takes over the dead one's claims within a second. A fixed port: the clients'
    # channels reconnect to the restarted server by themselves.
    settings = settings_for(tmp_path, database_url, fake_network, listen=f"127.0.0.1:{free_port()}",
                            dispatch_lease_s=1.0, dispatch_poll_s=0.1)
    # Every reply takes a moment, so a kill is likely to find requests in flight.
    fake_network.set_default("tiktok", Reply.slow(0.05))
    ledger = Ledger()
    db = Database(database_url)
    async with ServerProcess(settings, tmp_path / "logs") as server:
        await server.start()
        assert server.dev_key
        async with h.key_channel(server.port, server.dev_key) as channel:  # type: ignore[arg-type]
            for pixel in PIXELS:
                await h.create_config(channel, GAME, network=TIKTOK, pixel_id=pixel)
        clients = [Client(server.port, server.dev_key, ledger) for _ in range(CLIENTS)]  # type: ignore[arg-type]
        for i, client in enumerate(clients):
            client.next_user = i * 100_000  # disjoint users per client
        tasks = [asyncio.create_task(client.run()) for client in clients]
        try:
            for _ in range(KILLS):
                # A random moment: once a random number of further conversions has been acknowledged.
                target = ledger.acked_conversions() + rng.randint(20, 80)
                await wait_until(lambda t=target: ledger.acked_conversions() >= t, timeout=60)
                server.kill()
                await server.start()
            target = ledger.acked_conversions() + 30
            await wait_until(lambda: ledger.acked_conversions() >= target, timeout=60)
        finally:
            for client in clients:
                client.stopping = True
            async with asyncio.timeout(60):
                await asyncio.gather(*tasks)

        try:
            await check_after_crashes(db, ledger, fake_network, clients[0])
        finally:
            for client in clients:
                await client.channel.close()
            await db.close()
        logs = server.logs()
    assert "unexpected error" not in logs, "the server answered INTERNAL to some call"


async def check_after_crashes(db: Database, ledger: Ledger, fake: FakeAdNetwork, client: Client) -> None:
    assert set(ledger.failed.values()) <= EXPECTED_FAILURES, collections.Counter(ledger.failed.values())
    assert ledger.failed, "no call was cut off by a kill: the test did not exercise a crash mid-call"
    await wait_until(lambda: all_delivered(db), timeout=60)

    conversions = await stored_conversions(db)
    stored = await stored_event_ids(db)
    acked_conversions = {e for e in ledger.acked if not e.startswith("c-")}
    # Each acknowledged conversion was attributed, and its postbacks are owed and stored with it.
    for event_id in acked_conversions:
        result = ledger.acked[event_id]
        assert result.conversion.decision == conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED, (event_id, result)  # type: ignore[attr-defined]
    assert acked_conversions <= set(conversions)
    # Nothing half-applied: a conversion is stored exactly when its owed deliveries are; a failed batch call is
    # all there or not at all.
    assert {e: v for e, v in conversions.items() if v != ("postback_owed", len(PIXELS))} == {}
    for is_batch, events in ledger.failed_calls:
        if is_batch:
            present = {e.event_id in stored for e in events}
            assert len(present) == 1, f"batch {[e.event_id for e in events]} is half stored"
    # Every stored conversion (acknowledged ones included) reached every pixel; nothing else was sent.
    counts = arrivals(fake)
    assert set(counts) == {(pixel, e) for e in conversions for pixel in PIXELS}

    # Sending the failed calls again gives a consistent answer: a duplicate exactly when the first try was stored.
    was_stored = {e: e in stored for _, events in ledger.failed_calls for e in (ev.event_id for ev in events)}
    for is_batch, events in ledger.failed_calls:
        if all(e.event_id in ledger.acked for e in events):
            continue  # a click that failed and was then sent again until acknowledged
        before = len(ledger.acked)
        await client.call(is_batch, events)
        assert len(ledger.acked) > before, "the server refused a call it had failed before"
        for event in events:
            result = ledger.acked[event.event_id]
            assert result.duplicate == was_stored[event.event_id], (event.event_id, result)  # type: ignore[attr-defined]
            assert not result.payload_mismatch  # type: ignore[attr-defined]
            if event.event_id in conversions or not event.event_id.startswith("c-"):
                assert result.conversion.decision == conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED  # type: ignore[attr-defined]
    await wait_until(lambda: all_delivered(db), timeout=60)
    conversions = await stored_conversions(db)
    assert set(conversions) == {e for e in ledger.acked if not e.startswith("c-")}
    assert set(arrivals(fake)) == {(pixel, e) for e in conversions for pixel in PIXELS}
