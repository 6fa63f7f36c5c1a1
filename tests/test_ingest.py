"""Event ingestion over a real channel: validation with exact field paths, idempotency, atomic batches, durability."""

import grpc
import pytest
from google.protobuf import timestamp_pb2

from postbacks.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc, network_pb2
from server.app import App
from tests.conftest import running_app
from tests.helpers import authorized_channel, click, field_violations, identify, ingest, launch, purchase, ts


def stub(channel) -> event_service_pb2_grpc.EventServiceStub:  # type: ignore[no-untyped-def]
    return event_service_pb2_grpc.EventServiceStub(channel)


async def test_same_event_twice_is_a_duplicate_and_changes_nothing(channel) -> None:  # type: ignore[no-untyped-def]
    event = purchase("buy-1", user_id="p1", value="4.99", currency="EUR")
    first = await ingest(channel, "g", event)
    again = await ingest(channel, "g", event)
    assert not first.duplicate and again.duplicate and not again.payload_mismatch
    assert again.conversion == first.conversion

    changed = purchase("buy-1", user_id="p1", value="99.00", currency="EUR")
    reused = await ingest(channel, "g", changed)
    assert reused.duplicate and reused.payload_mismatch
    assert reused.conversion.value == "4.99"  # the first payload stands


async def test_event_ids_are_scoped_per_game(channel) -> None:  # type: ignore[no-untyped-def]
    event = launch("launch-1", user_id="p1")
    assert not (await ingest(channel, "game-a", event)).duplicate
    assert not (await ingest(channel, "game-b", event)).duplicate


async def test_purchase_value_round_trips_exactly(channel) -> None:  # type: ignore[no-untyped-def]
    micros = event_pb2.Event(event_id="buy-micros", event_time=ts(1), user_id="p1",
                             purchase=event_pb2.Purchase(value_micros=1_990_000, currency="usd"))
    result = await ingest(channel, "g", micros)
    assert (result.conversion.value, result.conversion.currency) == ("1.99", "USD")
    result = await ingest(channel, "g", purchase("buy-dec", user_id="p1", value="1234567.000001", currency="JPY"))
    assert result.conversion.value == "1234567.000001"


@pytest.mark.parametrize(
    ("event", "field", "text"),
    [
        (event_pb2.Event(event_time=ts(), user_id="u", game_launch={}), "event.event_id", "required"),
        (event_pb2.Event(event_id="a/b", event_time=ts(), user_id="u", game_launch={}), "event.event_id", "'/'"),
        (event_pb2.Event(event_id="e", user_id="u", game_launch={}), "event.event_time", "required"),
        # A day ahead: parameters are built at collection, and the suite takes minutes to reach this test.
        (event_pb2.Event(event_id="e", event_time=ts(-86_400), user_id="u", game_launch={}), "event.event_time", "future"),
        (event_pb2.Event(event_id="e", event_time=ts(), game_launch={}), "event.user_id", "anonymous_id"),
        (event_pb2.Event(event_id="e", event_time=ts(), user_id="u"), "event.kind", "exactly one"),
        (event_pb2.Event(event_id="e", event_time=ts(), user_id="u" * 129, game_launch={}), "event.user_id", "128"),
        (event_pb2.Event(event_id="e", event_time=ts(), user_id="u", email="not-an-email", game_launch={}),
         "event.email", "email"),
        (event_pb2.Event(event_id="e", event_time=ts(), user_id="u", ip_address="300.1.1.1", game_launch={}),
         "event.ip_address", "IPv4"),
        (event_pb2.Event(event_id="e", event_time=ts(), anonymous_id="a", identify={}), "event.user_id", "identify"),
        (event_pb2.Event(event_id="e", event_time=ts(), anonymous_id="a",
                         ad_click=event_pb2.AdClick(network=7)), "event.ad_click.network", "NETWORK_TIKTOK"),
        (purchase("e", user_id="u", value="9.99"), "event.purchase.currency", "required"),
        (purchase("e", user_id="u", currency="USD"), "event.purchase.value", "required"),
        (purchase("e", user_id="u", value="-1", currency="USD"), "event.purchase.value", "negative"),
        (purchase("e", user_id="u", value="1.0000001", currency="USD"), "event.purchase.value", "decimal places"),
        (purchase("e", user_id="u", value="ten", currency="USD"), "event.purchase.value", "decimal"),
        (purchase("e", user_id="u", value="NaN", currency="USD"), "event.purchase.value", "finite"),
        (purchase("e", user_id="u", value="1", currency="XYZ"), "event.purchase.currency", "ISO 4217"),
    ],
)
async def test_bad_events_are_refused_naming_the_field(channel, event, field, text) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).IngestEvent(event_service_pb2.IngestEventRequest(parent="games/g", event=event))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error.value)
    assert field in violations, violations
    assert text in violations[field]


@pytest.mark.parametrize("parent", ["", "games/", "games/a/b", "projects/x", "games/" + "g" * 64])
async def test_bad_parent_is_refused(channel, parent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).IngestEvent(event_service_pb2.IngestEventRequest(parent=parent, event=launch("e", user_id="u")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parent" in field_violations(error.value)


async def test_batch_is_atomic_and_names_the_bad_event(channel) -> None:  # type: ignore[no-untyped-def]
    events = [launch("ok-1", user_id="p1"), launch("ok-2", user_id="p2"), launch("ok-3", user_id="p3"),
              purchase("bad", user_id="p4", value="1", currency="ZZZ")]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=events))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(error.value)) == ["events[3].purchase.currency"]
    # Nothing of the refused batch was stored: each event is new when sent alone.
    assert not (await ingest(channel, "g", events[0])).duplicate


async def test_batch_results_come_in_request_order_with_in_batch_duplicates(channel) -> None:  # type: ignore[no-untyped-def]
    anonymous = "visitor-1"
    events = [
        click("c1", anonymous_id=anonymous, landing_url="https://game.example/?ttclid=T1", seconds_ago=100),
        identify("i1", user_id="p1", anonymous_id=anonymous, seconds_ago=90),
        launch("l1", user_id="p1", seconds_ago=80),
        launch("l1", user_id="p1", seconds_ago=80),
    ]
    response = await stub(channel).BatchIngestEvents(
        event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=events))
    assert [r.name for r in response.results] == [f"games/g/events/{e.event_id}" for e in events]
    assert [r.duplicate for r in response.results] == [False, False, False, True]
    # The click earlier in the batch counts for the launch later in it (no config: network not configured).
    assert response.results[2].conversion.attributed_click.click_id == "T1"
    assert response.results[2].conversion.attributed_click.network == network_pb2.NETWORK_TIKTOK


async def test_batch_limits(channel) -> None:  # type: ignore[no-untyped-def]
    for events, text in (([], "at least one"), ([launch(f"e{i}", user_id="u") for i in range(1001)], "at most 1000")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub(channel).BatchIngestEvents(
                event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=events))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in field_violations(error.value)["events"]


async def test_acknowledged_events_survive_a_restart(app: App, channel) -> None:  # type: ignore[no-untyped-def]
    event = purchase("buy-durable", user_id="p1", value="2.50", currency="GBP")
    await ingest(channel, "g", event)
    await app.stop(grace_s=0)
    async with running_app(app.settings) as restarted, authorized_channel(restarted) as ch:
        again = await ingest(ch, "g", event)
        assert again.duplicate
        response = await stub(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/g/conversions/buy-durable"))
        assert response.conversion.value == "2.5"


async def test_get_conversion_of_unknown_or_non_conversion_event_is_not_found(channel) -> None:  # type: ignore[no-untyped-def]
    await ingest(channel, "g", click("c1", anonymous_id="v"))
    for name in ("games/g/conversions/nope", "games/g/conversions/c1"):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub(channel).GetConversion(event_service_pb2.GetConversionRequest(name=name))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_single_ingests_share_commits_without_losing_or_doubling(channel) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    events = [purchase(f"buy-{i}", user_id=f"p{i % 7}", value="1", currency="USD") for i in range(200)]
    same_id_twice = [launch("contested", user_id="p1")] * 5
    results = await asyncio.gather(*(ingest(channel, f"game-{i % 3}", e) for i, e in enumerate(events)),
                                   *(ingest(channel, "game-x", e) for e in same_id_twice))
    assert [r.duplicate for r in results[:200]] == [False] * 200
    assert sorted(r.duplicate for r in results[200:]) == [False, True, True, True, True]
    again = await asyncio.gather(*(ingest(channel, f"game-{i % 3}", e) for i, e in enumerate(events)))
    assert all(r.duplicate and not r.payload_mismatch for r in again)


def _at(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize("event_time", [
    _at(1_700_000_000, 1_000_000_000), _at(0, 1_000_000_000), _at(1_700_000_000, -1), _at(1_700_000_000, 2**31 - 1),
    _at(253_402_300_800), _at(-62_135_596_801), _at(2**63 - 1), _at(-(2**63))])
async def test_an_event_time_outside_timestamp_range_is_refused(channel, event_time) -> None:  # type: ignore[no-untyped-def]
    event = event_pb2.Event(event_id="e", event_time=event_time, user_id="u", game_launch={})
    for call, field in ((stub(channel).IngestEvent(event_service_pb2.IngestEventRequest(parent="games/g", event=event)),
                         "event.event_time"),
                        (stub(channel).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
                            parent="games/g", events=[launch("ok", user_id="u"), event])), "events[1].event_time")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "valid timestamp" in field_violations(error.value)[field]
    assert not (await ingest(channel, "g", launch("ok", user_id="u"))).duplicate  # nothing of the batch was kept


@pytest.mark.parametrize(("url", "parameter"), [
    ("https://game.example/?ttclid=" + "a" * 513, "ttclid"),
    ("https://game.example/?utm_source=x&rdt_cid=" + "r" * 600 + "&utm_campaign=y", "rdt_cid"),
    ("https://game.example/?ttclid=ab%00cd", "ttclid"),  # decoded, a NUL: PostgreSQL cannot store it
    ("https://game.example/?rdt_cid=%1B%5B2J", "rdt_cid"),
])
async def test_a_click_id_taken_from_the_landing_url_has_the_click_ids_bounds(channel, url, parameter) -> None:  # type: ignore[no-untyped-def]
    assert len(url) <= 2048  # the URL itself is within its own limit
    for network in (network_pb2.NETWORK_UNSPECIFIED, network_pb2.NETWORK_TIKTOK if parameter == "ttclid"
                    else network_pb2.NETWORK_REDDIT):
        event = click("c-long", anonymous_id="v", network=network, landing_url=url)
        batch = [click("c-ok", anonymous_id="v", landing_url="https://game.example/?ttclid=" + "a" * 512), event]
        for call, field in ((stub(channel).IngestEvent(event_service_pb2.IngestEventRequest(parent="games/g", event=event)),
                             "event.ad_click.landing_url"),
                            (stub(channel).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
                                parent="games/g", events=batch)), "events[1].ad_click.landing_url")):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert parameter in field_violations(error.value)[field]
    # At its limit, a click id from the URL is kept whole.
    kept = await stub(channel).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=[
        click("c-512", anonymous_id="v2", landing_url="https://game.example/?ttclid=" + "a" * 512),
        launch("l-512", anonymous_id="v2")]))
    assert kept.results[1].conversion.attributed_click.click_id == "a" * 512
