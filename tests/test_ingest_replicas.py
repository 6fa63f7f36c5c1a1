"""Two replicas on one PostgreSQL database ingest the same players' clicks, identifies and conversions at once, each
event sent to either: every decision is the one the same events give ingested one at a time in time order, and no
event is stored or owed twice."""

import asyncio
import random

import grpc
import pytest
from sqlalchemy import select

from postbacks.v1 import event_service_pb2, event_service_pb2_grpc, network_pb2
from server.store.db import Database
from server.store.models import Delivery, Event, PostbackConfig
from tests import helpers as h
from tests.conftest import running_app
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name

pytestmark = pytest.mark.slow
PLAYERS = 60
ROUNDS = 5


def player_events(p: int) -> list:  # type: ignore[type-arg]
    """A player's events in time order. Two of three players came through a TikTok ad, clicked on one of two devices
    (so a conversion by user id reaches the click only through an identify's link); half gave an email."""
    user, device = f"u{p}", f"a{p}-{p % 2}"
    events = []
    if p % 3:
        events.append(h.click(f"c{p}", anonymous_id=device, seconds_ago=900,
                              landing_url=f"https://game.example/?utm_source=tiktok&ttclid=T{p}"))
    events += [
        h.identify(f"i{p}-0", user_id=user, anonymous_id=f"a{p}-0", seconds_ago=800),
        h.identify(f"i{p}-1", user_id=user, anonymous_id=f"a{p}-1", email=f"p{p}@example.com" if p % 2 else "",
                   seconds_ago=700),
        h.launch(f"l{p}", user_id=user, seconds_ago=600),
        *(h.purchase(f"p{p}-{n}", user_id=user, value="0.99", currency="USD", seconds_ago=500 - n) for n in range(2)),
    ]
    return events


async def decisions(db: Database, game: str) -> dict[str, tuple]:  # type: ignore[type-arg]
    """Each conversion's decision, reason, attributed click and the configs it owes a postback (a list, so a
    postback owed twice would show)."""
    async with db.snapshot() as session:
        rows = (await session.execute(select(Event.event_id, Event.decision, Event.no_postback_reason,
                                             Event.attributed_click_event_id)
                                      .where(Event.game_id == game, Event.decision.is_not(None)))).all()
        owed = (await session.execute(select(Event.event_id, PostbackConfig.config_id)
                                      .join(Delivery, Delivery.event_row_id == Event.id)
                                      .join(PostbackConfig, PostbackConfig.id == Delivery.config_row_id)
                                      .where(Event.game_id == game))).all()
    return {event_id: (decision, reason, click, sorted(c for e, c in owed if e == event_id))
            for event_id, decision, reason, click in rows}


# The default serialises by player; a limit of 2 identity locks makes nearly every transaction lock its game whole
# instead, as one does that would take too many of PostgreSQL's shared lock slots.
@pytest.mark.parametrize("identity_lock_limit", [4000, 2], ids=["players", "whole-games"])
async def test_two_replicas_ingesting_the_same_players_at_once_decide_as_one_at_a_time(
        tmp_path, postgresql_url: str, fake_network, identity_lock_limit: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20)
    settings = {name: settings_for(tmp_path / name, postgresql_url, fake_network, role="api",
                                   pg_max_identity_locks=identity_lock_limit) for name in "ab"}
    db = Database(postgresql_url)
    async with running_app(settings["a"]) as a, running_app(settings["b"]) as b:
        channels = [h.authorized_channel(a), h.authorized_channel(b)]
        stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        try:
            games = [f"race{n}" for n in range(ROUNDS)] + ["sequential"]
            for game in games:
                await h.create_config(channels[0], game, network=network_pb2.NETWORK_TIKTOK, config_id="tiktok")
            players = [player_events(p) for p in range(PLAYERS)]
            # The rules, one event at a time in time order, on one replica.
            for events in players:
                for event in events:
                    await stubs[0].IngestEvent(event_service_pb2.IngestEventRequest(parent="games/sequential",
                                                                                   event=event))
            expected = await decisions(db, "sequential")
            assert sum(1 for *_, owed in expected.values() if owed) > PLAYERS, "too few postbacks owed to test"

            for game in games[:-1]:
                # The identifies first, so that a click and a conversion of one player name different identities
                # that only the stored links join; then the clicks and conversions, each to a replica drawn at
                # random, in a random order, all at once; some twice (a client's retry), to both; some also in
                # small batches, which must stay atomic.
                identifies = [("unary", [e]) for events in players for e in events if e.HasField("identify")]
                rest = [("unary", [e]) for events in players for e in events if not e.HasField("identify")]
                rest += [("unary", [e]) for events in players for e in events if rng.random() < 0.1]
                rest += [("batch", rng.sample(events, k=3)) for events in players[:8]]
                rng.shuffle(identifies)
                rng.shuffle(rest)

                async def send(kind: str, events: list) -> list[bool]:  # type: ignore[type-arg]
                    stub = rng.choice(stubs)
                    if kind == "unary":
                        reply = await stub.IngestEvent(event_service_pb2.IngestEventRequest(
                            parent=f"games/{game}", event=events[0]), timeout=60)  # noqa: B023
                        return [reply.result.duplicate]
                    batch = await stub.BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
                        parent=f"games/{game}", events=events), timeout=60)  # noqa: B023
                    return [r.duplicate for r in batch.results]

                replies = [*await asyncio.gather(*(send(kind, events) for kind, events in identifies)),
                           *await asyncio.gather(*(send(kind, events) for kind, events in rest))]
                sent = sum(len(events) for _, events in identifies + rest)
                total = sum(len(events) for events in players)
                assert sum(1 for r in replies for duplicate in r if not duplicate) == total, \
                    "an event was stored twice, or not at all"
                assert sum(1 for r in replies for duplicate in r if duplicate) == sent - total
                assert await decisions(db, game) == expected, f"{game}: a decision differs from the rules'"
        except grpc.aio.AioRpcError as error:
            pytest.fail(f"a replica failed a call: {error.code().name}: {error.details()}")
        finally:
            for channel in channels:
                await channel.close()
            await db.close()
