"""Owing many postbacks at once, and reading what a config's circuit and the fake network say about them."""

import collections
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy import func, select

from postbacks.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
)
from server.store.db import Database
from server.store.models import Delivery
from tests import helpers as h
from tests.dispatch_helpers import config_stub, dedup_id, is_credential_check, request_events
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, ReceivedRequest

CIRCUIT = postback_config_pb2.PostbackCircuitState
CAUSE = postback_config_pb2.PostbackCircuitCause
NETWORKS: dict[NetworkName, int] = {"tiktok": network_pb2.NETWORK_TIKTOK, "reddit": network_pb2.NETWORK_REDDIT}
PIXELS: dict[NetworkName, tuple[str, str]] = {"tiktok": ("CTPIXEL1", "CTPIXEL2"), "reddit": ("a2_pixel1", "a2_pixel2")}
TOKENS: dict[NetworkName, tuple[str, str]] = {"tiktok": (h.TIKTOK_TOKEN, "tt-token-rotated-000001"),
                                              "reddit": (h.REDDIT_TOKEN, "rd-token-rotated-000001")}


def conversion_events(network: NetworkName, count: int, *, prefix: str = "p", seconds_ago: float = 5.0) -> list[Any]:
    """A paid click and a purchase per player: count conversions owing one postback each to a config of network."""
    events = []
    for i in range(count):
        user = f"{prefix}u{i}"
        if network == "tiktok":
            click = h.click(f"{prefix}c{i}", user_id=user, landing_url=f"https://game.example/?ttclid={prefix}T{i}")
        else:
            click = h.click(f"{prefix}c{i}", user_id=user, network=network_pb2.NETWORK_REDDIT,
                            click_id=f"{prefix}R{i}")
        events += [click, h.purchase(f"{prefix}{i}", user_id=user, seconds_ago=seconds_ago)]
    return events


async def owe(channel, game: str, network: NetworkName, count: int, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    """Ingests count conversions (in batches of 250) and returns their event ids, the postbacks' dedup ids."""
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    events = conversion_events(network, count, **kwargs)
    for start in range(0, len(events), 500):
        await stub.BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
            parent=f"games/{game}", events=events[start:start + 500]), timeout=60)
    return [e.event_id for e in events if e.HasField("purchase")]


def accepted_dedup_ids(fake: FakeAdNetwork, network: NetworkName | None = None) -> collections.Counter[str]:
    """How often the network took in each dedup id (credential checks left out)."""
    return collections.Counter(dedup_id(e) for r in fake.accepted(network) if not is_credential_check(r)
                               for e in request_events(r))


def refused(fake: FakeAdNetwork, network: NetworkName | None = None) -> list[ReceivedRequest]:
    """Postback requests the network did not take in."""
    taken = {id(r) for r in fake.accepted(network)}
    return [r for r in fake.received(network) if id(r) not in taken and not is_credential_check(r)]


async def config(channel, name: str) -> postback_config_pb2.PostbackConfig:  # type: ignore[no-untyped-def]
    response = await config_stub(channel).GetPostbackConfig(
        postback_config_service_pb2.GetPostbackConfigRequest(name=name))
    return response.postback_config


async def replay(channel, name: str, *, reasons=(), start: timestamp_pb2.Timestamp | None = None,  # type: ignore[no-untyped-def]
                 end: timestamp_pb2.Timestamp | None = None) -> tuple[int, int]:
    """RetryFailedPostbacks: (re-queued, window closed)."""
    response = await config_stub(channel).RetryFailedPostbacks(postback_config_service_pb2.RetryFailedPostbacksRequest(
        name=name, failure_reasons=list(reasons), start_time=start, end_time=end))
    return response.requeued_postback_count, response.window_closed_postback_count


async def states(db: Database) -> dict[str, int]:
    """How many deliveries are in each state."""
    async with db.snapshot() as session:
        return dict((await session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))).all())
