"""Property: late clicks and identities within the grace period lead to the same decisions as arrival in time order."""

import asyncio
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from server.core.events import EventKind, NewEvent
from server.core.hashing import hash_email_reddit, hash_email_tiktok
from server.core.postback import NetworkCredentials
from server.core.types import EventType, Network
from server.secrets import SecretBox
from server.services import configs, ingest
from server.services.context import ServiceContext
from server.services.credentials import CheckResult, CredentialCheck
from server.settings import Settings
from server.store.db import Database
from server.store.models import Delivery, Event, PostbackConfig

DAY_US = 86_400 * 1_000_000
BASE_US = 1_790_000_000 * 1_000_000
LOOKBACK_US = 7 * DAY_US


class AcceptEverything:
    async def check(self, network, credentials, event_type, test_code) -> CredentialCheck:  # type: ignore[no-untyped-def]
        return CredentialCheck(CheckResult.ACCEPTED, 200, None, "ok", None)


@st.composite
def histories(draw):  # type: ignore[no-untyped-def]
    """Players u0..u2 with anonymous ids; clicks on their devices, identifies linking devices, conversions by user id."""
    players = draw(st.integers(1, 3))
    time = st.integers(0, 10 * DAY_US)
    clicks = draw(st.lists(st.tuples(st.integers(0, players - 1), st.integers(0, 1), st.sampled_from(list(Network)),
                                     st.booleans(), time), max_size=5))
    identifies = draw(st.lists(st.tuples(st.integers(0, players - 1), st.integers(0, 1), st.booleans(), time),
                               max_size=4))
    conversions = draw(st.lists(st.tuples(st.integers(0, players - 1), st.sampled_from(list(EventType)), time),
                                min_size=1, max_size=4))
    events = []
    for i, (p, device, network, has_click_id, t) in enumerate(clicks):
        events.append(NewEvent(event_id=f"click-{i}", kind=EventKind.AD_CLICK, event_time_us=BASE_US + t,
                               anonymous_id=f"a{p}-{device}", network=network,
                               click_id=f"cid-{i}" if has_click_id else None))
    for i, (p, device, with_email, t) in enumerate(identifies):
        email = f"player{p}@example.com"
        events.append(NewEvent(event_id=f"identify-{i}", kind=EventKind.IDENTIFY, event_time_us=BASE_US + t,
                               user_id=f"u{p}", anonymous_id=f"a{p}-{device}",
                               email_sha256=hash_email_tiktok(email) if with_email else None,
                               email_sha256_reddit=hash_email_reddit(email) if with_email else None))
    for i, (p, event_type, t) in enumerate(conversions):
        events.append(NewEvent(event_id=f"conversion-{i}", kind=EventKind(event_type.value), event_time_us=BASE_US + t,
                               user_id=f"u{p}"))
    return events


def qualifying_clicks(conversion: NewEvent, events: list[NewEvent]) -> int:
    """Clicks of the conversion's player (through any identify) inside its window: the generator keeps at most one."""
    devices = {e.anonymous_id for e in events if e.kind == EventKind.IDENTIFY and e.user_id == conversion.user_id}
    return sum(1 for e in events if e.kind == EventKind.AD_CLICK and e.anonymous_id in devices
               and 0 <= conversion.event_time_us - e.event_time_us <= LOOKBACK_US)


@pytest.fixture(scope="module")
def database_file(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('property') / 'postbacks.db'}"

    async def migrate() -> None:
        db = Database(url, sqlite_synchronous="NORMAL")
        await db.migrate()
        await db.close()

    asyncio.run(migrate())
    return url


async def decisions_after(url: str, arrivals: list[NewEvent], call_sizes: list[int] | None = None) -> dict[str, tuple]:  # type: ignore[type-arg]
    """Ingests the events in the given order into a fresh game, one per call or call_sizes[i] in call i (the last
    call takes what is left); returns each conversion's outcome."""
    db = Database(url, sqlite_synchronous="NORMAL")
    ctx = ServiceContext(settings=Settings(), db=db, secrets=SecretBox([os.urandom(32)]),
                         credential_checker=AcceptEverything())
    game = uuid.uuid4().hex[:12]
    try:
        for network, config_id, triggers in ((Network.TIKTOK, "tt", {EventType.GAME_LAUNCH, EventType.PURCHASE}),
                                             (Network.REDDIT, "rd", {EventType.GAME_LAUNCH})):
            await configs.create_config(ctx, game, config_id, configs.NewConfig(
                "", network, NetworkCredentials("token-123456789", "a2_pixel" if network == Network.REDDIT else "PIX"),
                frozenset(triggers), True), None)
        start = 0
        for size in call_sizes or [1] * len(arrivals):
            if start < len(arrivals):
                await ingest.ingest_events(ctx, game, arrivals[start:start + size])
            start += size
        if start < len(arrivals):
            await ingest.ingest_events(ctx, game, arrivals[start:])
        async with db.transaction() as session:
            rows = (await session.execute(select(Event).where(Event.game_id == game, Event.decision.is_not(None)))).scalars()
            outcome = {r.event_id: (r.decision, r.no_postback_reason, r.attributed_click_event_id) for r in rows}
            owed = await session.execute(
                select(Event.event_id, PostbackConfig.config_id)
                .join(Delivery, Delivery.event_row_id == Event.id)
                .join(PostbackConfig, PostbackConfig.id == Delivery.config_row_id)
                .where(Event.game_id == game))
            postbacks = sorted((event_id, config_id) for event_id, config_id in owed)
        return {event_id: (*decided, [c for e, c in postbacks if e == event_id]) for event_id, decided in outcome.items()}
    finally:
        await db.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(events=histories(), data=st.data())
def test_any_arrival_order_of_clicks_and_identifies_gives_the_same_decisions(database_file, events, data) -> None:  # type: ignore[no-untyped-def]
    conversions = [e for e in events if e.kind.conversion_type]
    if any(qualifying_clicks(c, events) > 1 for c in conversions):
        return  # outside the property: with two qualifying clicks, which one wins may depend on what arrived first
    in_time_order = sorted(events, key=lambda e: (e.event_time_us, e.event_id))
    late_data = data.draw(st.permutations([e for e in events if not e.kind.conversion_type]))
    ordered_conversions = sorted(conversions, key=lambda e: (e.event_time_us, e.event_id))
    # Interleave: clicks and identifies in any order, conversions in their own time order, at drawn positions.
    slots = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events))
                      .filter(lambda s: s.count(True) == len(ordered_conversions)), label="conversion slots") \
        if ordered_conversions and late_data else [True] * len(ordered_conversions) + [False] * len(late_data)
    conversion_iter, late_iter = iter(ordered_conversions), iter(late_data)
    shuffled = [next(conversion_iter) if slot else next(late_iter) for slot in slots]
    assert sorted(e.event_id for e in shuffled) == sorted(e.event_id for e in events)

    expected = asyncio.run(decisions_after(database_file, in_time_order))
    # Calls of one event, or of several (a batch re-decides its own conversions once the batch's late data is in).
    call_sizes = data.draw(st.one_of(st.just([]), st.lists(st.integers(1, 4), max_size=len(events))),
                           label="events per call")
    actual = asyncio.run(decisions_after(database_file, shuffled, call_sizes))
    assert actual == expected


