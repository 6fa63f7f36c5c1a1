"""Crash safety: postbacks pending or in flight at an abrupt stop go out after restart; replicas never double-send."""

import asyncio
import collections

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from postbacks.v1 import network_pb2
from server.app import App
from server.core.types import DeliveryState
from server.services.deliveries import lease_due
from server.store.models import Delivery
from tests import helpers as h
from tests.conftest import postgres_database, running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import batch_ingest, deliveries, postback_requests, request_events
from tests.fakes.fake_network import FakeAdNetwork, Reply

pytestmark = pytest.mark.slow
TIKTOK = network_pb2.NETWORK_TIKTOK
REDDIT = network_pb2.NETWORK_REDDIT


def arrivals(fake: FakeAdNetwork) -> collections.Counter[tuple[str, str]]:
    """How often each (pixel, dedup id) reached the network."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for request in postback_requests(fake):
        pixel = request.json["event_source_id"] if request.network == "tiktok" else request.pixel_id
        for event in request_events(request):
            counts[pixel, event.get("event_id") or event["metadata"]["conversion_id"]] += 1
    return counts


async def all_succeeded(app: App, expected: int) -> bool:
    rows = await deliveries(app)
    return len(rows) == expected and all(d.state == DeliveryState.SUCCEEDED for d in rows)


async def convert(channel, user: str, network: int, event_id: str) -> None:  # type: ignore[no-untyped-def]
    click = (h.click(f"c-{event_id}", user_id=user, landing_url=f"https://game.example/?ttclid=T-{event_id}")
             if network == TIKTOK else h.click(f"c-{event_id}", user_id=user, network=REDDIT, click_id=f"R-{event_id}"))
    await batch_ingest(channel, "g1", [click, h.purchase(event_id, user_id=user)])


async def test_postbacks_pending_or_in_flight_at_an_abrupt_stop_are_sent_after_restart(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # A short lease, so the restarted server takes over the dead one's claims quickly; a long HTTP timeout, so
    # the held requests are still in flight when the first server stops; one batch per config at a time, so the
    # later conversions are still pending then.
    settings = settings_for(tmp_path, database_url, fake_network, dispatch_lease_s=1.0, http_total_timeout_s=60.0,
                            dispatch_batches_per_config=1)
    first = App(settings)
    await first.start()
    try:
        async with h.authorized_channel(first) as channel:
            for pixel in ("CTHOLD1", "CTHOLD2"):  # two TikTok pixels: each TikTok conversion owes a postback to both
                await h.create_config(channel, "g1", network=TIKTOK, pixel_id=pixel)
                fake_network.script("tiktok", [Reply.slow(60)], pixel_id=pixel)
            await h.create_config(channel, "g1", network=REDDIT, pixel_id="a2_hold3")
            fake_network.script("reddit", [Reply.slow(60)], pixel_id="a2_hold3")
            await convert(channel, "u1", TIKTOK, "p1")
            await convert(channel, "u2", REDDIT, "p2")
            await wait_until(lambda: len(postback_requests(fake_network)) == 3)  # held by the network: in flight
            # Each config has a batch in flight, so these wait their turn: pending at the stop.
            await convert(channel, "u3", TIKTOK, "p3")
            await convert(channel, "u4", REDDIT, "p4")
            assert len(await deliveries(first)) == 6
    finally:
        await first.stop(grace_s=0)  # abrupt: three requests in flight, three postbacks pending

    async with running_app(settings) as second:
        await wait_until(lambda: all_succeeded(second, 6))

    in_flight = {("CTHOLD1", "p1"), ("CTHOLD2", "p1"), ("a2_hold3", "p2")}
    pending = {("CTHOLD1", "p3"), ("CTHOLD2", "p3"), ("a2_hold3", "p4")}
    counts = arrivals(fake_network)
    assert set(counts) == in_flight | pending
    # The in-flight copies got no answer before the stop, so they are sent again under the same dedup id.
    assert {key: counts[key] for key in in_flight} == dict.fromkeys(in_flight, 2)
    assert {key: counts[key] for key in pending} == dict.fromkeys(pending, 1)


async def test_two_dispatchers_on_one_postgresql_database_never_send_a_postback_twice(tmp_path, fake_network) -> None:  # type: ignore[no-untyped-def]
    pixels = [f"CTREPLICA{i}" for i in range(8)]
    async with postgres_database() as url:
        api = settings_for(tmp_path / "api", url, fake_network, role="api")
        # Each replica handles at most 4 configs at once, and every config's first request is held for a few
        # seconds: the first replica saturates on 4 configs, so the second must take the others.
        replica = settings_for(tmp_path / "api", url, fake_network, role="dispatcher", dispatch_concurrency=4,
                               dispatch_batch_size=3)
        async with running_app(api) as api_app, h.authorized_channel(api_app) as channel:
            for pixel in pixels:
                await h.create_config(channel, "g1", network=TIKTOK, pixel_id=pixel)
                fake_network.script("tiktok", [Reply.slow(3)], pixel_id=pixel)
            events = []
            for user in range(30):
                events += [h.click(f"c{user}", user_id=f"u{user}", landing_url=f"https://game.example/?ttclid=T{user}"),
                           h.purchase(f"p{user}", user_id=f"u{user}")]
            await batch_ingest(channel, "g1", events)

            sends: collections.Counter[str] = collections.Counter()
            async with running_app(replica) as one:
                count_sends(one, "one", sends)
                await wait_until(lambda: len(postback_requests(fake_network)) == 4)
                async with running_app(replica) as two, h.authorized_channel(two) as replica_channel:
                    count_sends(two, "two", sends)
                    await wait_until(lambda: all_succeeded(api_app, 8 * 30), timeout=30)
                    await assert_serves_health_only(replica_channel)

    counts = arrivals(fake_network)
    assert len(counts) == 8 * 30 and set(counts.values()) == {1}
    assert sends["one"] > 0 and sends["two"] > 0


async def test_a_claim_skips_rows_another_replica_is_claiming(tmp_path, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with postgres_database() as url, running_app(settings_for(tmp_path, url, fake_network, role="api")) as app:
        async with h.authorized_channel(app) as channel:
            await h.create_config(channel, "g1", network=TIKTOK)
            await batch_ingest(channel, "g1", [
                h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=T1"),
                *(h.purchase(f"p{i}", user_id="u1") for i in range(4))])
        every_id = {d.id for d in await deliveries(app)}
        async with app.db.transaction() as other_replica:  # mid-claim: it holds two rows and has not committed
            held = set((await other_replica.execute(
                select(Delivery.id).order_by(Delivery.id).limit(2).with_for_update())).scalars())
            # The deadline only keeps a regression (waiting on the held rows) from hanging the run.
            claim = await asyncio.wait_for(lease_due(app.ctx, "this-replica", max_batches=4, batch_size=10), 10)
        assert {i for lease in claim.leases for i in lease.delivery_ids} == every_id - held


def count_sends(app: App, name: str, sends: collections.Counter[str]) -> None:
    """Counts the requests one replica's dispatcher makes (the fake network cannot tell replicas apart)."""
    send = app.network_client.send

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        sends[name] += 1
        return await send(*args, **kwargs)

    app.network_client.send = counting  # type: ignore[method-assign]


async def assert_serves_health_only(channel) -> None:  # type: ignore[no-untyped-def]
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.ingest(channel, "g1", h.purchase("p-x", user_id="u1"))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_graceful_stop_hands_back_the_leases_of_the_sends_it_abandons(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # A lease far longer than the test: only handing it back lets the next server send the postback in time.
    settings = settings_for(tmp_path, database_url, fake_network, dispatch_lease_s=600.0, http_total_timeout_s=60.0)
    first = App(settings)
    await first.start()
    try:
        async with h.authorized_channel(first) as channel:
            await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTHOLD9")
            fake_network.script("tiktok", [Reply.slow(60)], pixel_id="CTHOLD9")
            await convert(channel, "u1", TIKTOK, "p1")
            await wait_until(lambda: len(postback_requests(fake_network)) == 1)  # held by the network: in flight
    finally:
        await first.stop(grace_s=0)  # graceful, with no grace: the held send is abandoned
    (delivery,) = await deliveries(first)
    await first.db.close()
    assert (delivery.state, delivery.lease_owner, delivery.lease_expire_time_us) == (DeliveryState.PENDING, None, None)

    async with running_app(settings) as second:
        await wait_until(lambda: all_succeeded(second, 1))
    assert arrivals(fake_network)["CTHOLD9", "p1"] == 2
