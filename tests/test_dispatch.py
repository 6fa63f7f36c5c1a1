"""End-to-end delivery: owed postbacks reach the fake network as each network expects; attempts, retries and health."""

import contextlib
import time

import pytest
from sqlalchemy import delete, update

from postbacks.v1 import network_pb2, postback_config_pb2, postback_config_service_pb2
from server.core.hashing import hash_email_reddit, hash_email_tiktok, hash_external_id, sha256_hex
from server.core.postback import Classification, Outcome
from server.core.retry import give_up_reason
from server.core.types import DeliveryState, Network
from server.services import deliveries as deliveries_service
from server.services.deliveries import (
    CONFIG_DISABLED,
    Attempt,
    Batch,
    _share,
    lease_due,
    load_leased,
    record_attempts,
)
from server.store.models import Delivery, Event, RenderedPostback
from tests import helpers as h
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import (
    batch_ingest,
    config_stub,
    deliveries,
    delivery_logs,
    get_config,
    postback_requests,
    renderings,
    rotate,
    sent_dedup_ids,
    set_enabled,
)
from tests.fakes.fake_network import Reply

TIKTOK = network_pb2.NETWORK_TIKTOK
REDDIT = network_pb2.NETWORK_REDDIT
HEALTH = postback_config_pb2.PostbackConfigHealth
CIRCUIT = postback_config_pb2.PostbackCircuitState
OK = Classification(Outcome.SUCCESS, 200, "0", "OK", "req-1")


def conversion_time_us() -> int:
    """20 s ago (after the helpers' clicks), in whole seconds plus 123.456 ms so a wrong unit or rounding shows."""
    return (int(time.time()) - 20) * 1_000_000 + 123_456


def at(event, time_us: int):  # type: ignore[no-untyped-def]
    event.event_time.FromMicroseconds(time_us)
    return event


async def statuses(app, conversion_event_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [row.status for row in await delivery_logs(app, conversion_event_id)]


async def test_tiktok_receives_the_attributed_purchase_exactly_as_specified(app, channel, fake_network) -> None:
    purchase_time_us = conversion_time_us()
    await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTPIXEL123")
    await h.ingest(channel, "g1", h.click("c1", anonymous_id="a1", landing_url="https://game.example/?ttclid=TT-1",
                                          ip_address="198.51.100.4", user_agent="ClickAgent/1.0"))
    await h.ingest(channel, "g1", h.identify("i1", user_id="player-42", anonymous_id="a1"))
    await h.ingest(channel, "g1", at(h.purchase("p1", user_id="player-42", value="9.99", currency="USD",
                                                email="  Foo@Example.COM ", ip_address="203.0.113.7"),
                                     purchase_time_us))

    await wait_until(lambda: postback_requests(fake_network, "tiktok"))
    [request] = postback_requests(fake_network, "tiktok")
    assert request.path == "/tiktok/open_api/v1.3/event/track/"
    assert request.headers["Access-Token"] == h.TIKTOK_TOKEN
    assert request.json == {
        "event_source": "web",
        "event_source_id": "CTPIXEL123",
        "data": [{
            "event": "Purchase",
            "event_time": purchase_time_us // 1_000_000,
            "event_id": "p1",
            "user": {
                "ttclid": "TT-1",
                "email": [hash_email_tiktok("  Foo@Example.COM ")],
                "external_id": ["c3214538d133c9d934db63a435cddcae80ec8b6f073babcc7c3a02a17791be79"],
                "ip": "203.0.113.7",  # the conversion's own
                "user_agent": "ClickAgent/1.0",  # the conversion has none: the click's
            },
            "properties": {"value": 9.99, "currency": "USD"},
            "page": {"url": "https://game.example/?ttclid=TT-1"},
        }],
    }
    assert b'"value":9.99,' in request.body  # exact decimal text, not a float rendering


async def test_tiktok_first_launch_is_complete_registration_without_properties(app, channel, fake_network) -> None:
    purchase_time_us = conversion_time_us()
    await h.create_config(channel, "g1", network=TIKTOK)
    await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-2"))
    await h.ingest(channel, "g1", at(h.launch("l1", user_id="u1"), purchase_time_us))

    await wait_until(lambda: postback_requests(fake_network, "tiktok"))
    [event] = postback_requests(fake_network, "tiktok")[0].json["data"]
    assert event == {
        "event": "CompleteRegistration",
        "event_time": purchase_time_us // 1_000_000,
        "event_id": "l1",
        "user": {"ttclid": "TT-2", "external_id": [hash_external_id("u1")]},
        "page": {"url": "https://game.example/?ttclid=TT-2"},
    }


async def test_reddit_receives_the_attributed_conversions_exactly_as_specified(app, channel, fake_network) -> None:
    purchase_time_us = conversion_time_us()
    await h.create_config(channel, "g1", network=REDDIT, pixel_id="a2_pixel42")
    await h.ingest(channel, "g1", h.click("c1", anonymous_id="a1", network=REDDIT, click_id="RDT-1",
                                          user_agent="ClickAgent/1.0"))
    await h.ingest(channel, "g1", h.identify("i1", user_id="player-42", anonymous_id="a1"))
    await h.ingest(channel, "g1", at(h.launch("l1", user_id="player-42", seconds_ago=30), purchase_time_us - 1_000))
    await h.ingest(channel, "g1", at(h.purchase("p1", user_id="player-42", value="9.99", currency="USD",
                                                email="Al.ice$+Apple@Example.Com", ip_address="2001:DB8::7"),
                                     purchase_time_us))

    await wait_until(lambda: len(sent_dedup_ids(fake_network, "reddit")) == 2)
    requests = postback_requests(fake_network, "reddit")
    assert {r.path for r in requests} == {"/reddit/api/v3/pixels/a2_pixel42/conversion_events"}
    assert {r.headers["Authorization"] for r in requests} == {f"Bearer {h.REDDIT_TOKEN}"}
    events = {e["metadata"]["conversion_id"]: e for r in requests for e in r.json["data"]["events"]}
    assert all(set(r.json) == {"data"} and set(r.json["data"]) == {"events"} for r in requests)
    assert events["l1"] == {
        "event_at": (purchase_time_us - 1_000) // 1_000,
        "action_source": "WEBSITE",
        "click_id": "RDT-1",
        "type": {"tracking_type": "CUSTOM", "custom_event_name": "game_launch"},
        "user": {"external_id": hash_external_id("player-42"), "user_agent": "ClickAgent/1.0"},
        "metadata": {"conversion_id": "l1"},
    }
    assert events["p1"] == {
        "event_at": purchase_time_us // 1_000,
        "action_source": "WEBSITE",
        "click_id": "RDT-1",
        "type": {"tracking_type": "PURCHASE"},
        "user": {
            "email": "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
            "external_id": hash_external_id("player-42"),
            "ip_address": sha256_hex("2001:db8::7"),  # canonical form: compressed, lowercase
            "user_agent": "ClickAgent/1.0",
        },
        "metadata": {"conversion_id": "p1", "value": 9.99, "currency": "USD"},
    }
    assert hash_email_reddit("Al.ice$+Apple@Example.Com") == events["p1"]["user"]["email"]


async def test_a_server_error_is_retried_then_logged_as_success(app, channel, fake_network) -> None:
    await h.create_config(channel, "g1", network=TIKTOK)
    fake_network.script("tiktok", [Reply.http(500)])
    await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-3"))
    await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

    await wait_until(lambda: _statuses_are(app, "p1", ["retried", "success"]))
    retried, success = await delivery_logs(app, "p1")
    assert (retried.http_status, retried.attempt_number, retried.event_type) == (500, 1, "purchase")
    assert retried.next_attempt_time_us is not None and retried.next_attempt_time_us > retried.attempt_time_us
    assert (success.http_status, success.attempt_number, success.network_code) == (200, 2, "0")
    assert success.network_request_id and success.next_attempt_time_us is None
    assert sent_dedup_ids(fake_network, "tiktok") == ["p1", "p1"]
    [delivery] = await deliveries(app)
    assert (delivery.state, delivery.attempt_count, delivery.lease_owner) == (DeliveryState.SUCCEEDED, 2, None)
    assert await renderings(app) == {}  # kept through the retry, dropped once sent


async def _statuses_are(app, conversion_event_id: str, expected: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return await statuses(app, conversion_event_id) == expected


async def test_a_tiktok_auth_code_in_http_200_holds_the_postback_and_marks_credentials_until_rotated(
        app, channel, fake_network) -> None:
    config = await h.create_config(channel, "g1", network=TIKTOK)
    assert config.health == HEALTH.POSTBACK_CONFIG_HEALTH_NO_RECENT_ACTIVITY
    fake_network.script("tiktok", [Reply.tiktok(40105)])
    await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-4"))
    await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

    await wait_until(lambda: _statuses_are(app, "p1", ["retried"]))
    [entry] = await delivery_logs(app, "p1")
    assert (entry.status, entry.http_status, entry.network_code) == ("retried", 200, "40105")
    assert entry.network_message.startswith("held until the credentials work again: ")
    assert "revoked" in entry.network_message and h.TIKTOK_TOKEN not in entry.network_message
    # Its next attempt is the circuit's first probe, ten minutes on (the default interval).
    assert entry.next_attempt_time_us - entry.attempt_time_us >= 600 * 1_000_000 - 1_000_000
    [delivery] = await deliveries(app)
    assert (delivery.state, delivery.attempt_count, delivery.failure_reason) == ("pending", 1, None)
    assert "40105" in delivery.last_error
    assert len(await renderings(app)) == 1  # kept while held
    held = await get_config(channel, config.name)
    assert held.health == HEALTH.POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES
    assert (held.circuit.state, held.circuit.held_postback_count) == (CIRCUIT.POSTBACK_CIRCUIT_STATE_OPEN, 1)

    rotated = await rotate(channel, config.name, "tt-token-rotated-0001")
    assert rotated.health != HEALTH.POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES
    assert rotated.circuit.state == CIRCUIT.POSTBACK_CIRCUIT_STATE_CLOSED
    await wait_until(lambda: _statuses_are(app, "p1", ["retried", "success"]))
    assert sent_dedup_ids(fake_network, "tiktok") == ["p1", "p1"]
    assert postback_requests(fake_network, "tiktok")[-1].token == "tt-token-rotated-0001"
    assert (await get_config(channel, config.name)).health == HEALTH.POSTBACK_CONFIG_HEALTH_HEALTHY
    assert await renderings(app) == {}


async def _delivery_state_is(app, state: DeliveryState) -> bool:  # type: ignore[no-untyped-def]
    return [d.state for d in await deliveries(app)] == [state.value]


def _reddit_batch(user: str, conversions: int) -> list:  # type: ignore[type-arg]
    events = [h.click(f"c-{user}", user_id=user, network=REDDIT, click_id=f"RDT-{user}", seconds_ago=60)]
    events += [h.purchase(f"p{i}-{user}", user_id=user, seconds_ago=10 - i) for i in range(conversions)]
    return events


async def test_reddit_batch_refused_with_400_is_resent_one_event_at_a_time(app, channel, fake_network) -> None:
    await h.create_config(channel, "g1", network=REDDIT)
    # The batch is refused, and so is the first single resend; the other events must still get through.
    fake_network.script("reddit", [Reply.http(400, message="1 invalid event(s)"), Reply.http(400)])
    await batch_ingest(channel, "g1", _reddit_batch("u1", 3))

    await wait_until(lambda: _all_settled(app))
    requests = postback_requests(fake_network, "reddit")
    assert [len(r.json["data"]["events"]) for r in requests] == [3, 1, 1, 1]
    assert sorted(sent_dedup_ids(fake_network, "reddit")[3:]) == ["p0-u1", "p1-u1", "p2-u1"]
    outcomes = []
    for event_id in ("p0-u1", "p1-u1", "p2-u1"):
        batch_attempt, single = await delivery_logs(app, event_id)
        assert (batch_attempt.status, batch_attempt.http_status, batch_attempt.attempt_number) == ("retried", 400, 1)
        assert single.attempt_number == 2
        outcomes.append((single.status, single.http_status))
    assert sorted(outcomes) == [("failed", 400), ("success", 200), ("success", 200)]
    assert sorted(d.state for d in await deliveries(app)) == ["failed", "succeeded", "succeeded"]
    assert await renderings(app) == {}


async def _all_settled(app) -> bool:  # type: ignore[no-untyped-def]
    rows = await deliveries(app)
    return bool(rows) and all(d.state != DeliveryState.PENDING for d in rows)


async def test_postbacks_of_one_config_go_out_together_in_one_request(app, channel, fake_network) -> None:
    await h.create_config(channel, "g1", network=REDDIT)
    await batch_ingest(channel, "g1", _reddit_batch("u1", 3))

    await wait_until(lambda: _all_settled(app))
    assert [len(r.json["data"]["events"]) for r in postback_requests(fake_network, "reddit")] == [3]
    assert [e.status for e in await delivery_logs(app)] == ["success"] * 3


@contextlib.asynccontextmanager
async def serving(settings):  # type: ignore[no-untyped-def]
    async with running_app(settings) as app, h.authorized_channel(app) as channel:
        yield app, channel


async def test_reddit_retries_stop_before_the_event_is_too_old(tmp_path, database_url, fake_network) -> None:
    # A margin of 7 days less 1 s puts the Reddit horizon one second after the event time: already past.
    settings = settings_for(tmp_path, database_url, fake_network, retry_reddit_margin_s=7 * 24 * 3600.0 - 1)
    async with serving(settings) as (app, channel):
        await h.create_config(channel, "g1", network=REDDIT)
        fake_network.set_default("reddit", Reply.http(503))
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", network=REDDIT, click_id="RDT-1"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1", seconds_ago=5))

        await wait_until(lambda: _delivery_state_is(app, DeliveryState.FAILED))
        [entry] = await delivery_logs(app, "p1")
        assert (entry.status, entry.http_status, entry.next_attempt_time_us) == ("failed", 503, None)
        assert entry.network_message.startswith(give_up_reason(Network.REDDIT))
        [delivery] = await deliveries(app)
        assert delivery.last_error.startswith("retry window closed: Reddit refuses events older than 7 days")


async def test_tiktok_retries_stop_at_the_horizon_after_the_first_attempt(tmp_path, database_url, fake_network) -> None:
    settings = settings_for(tmp_path, database_url, fake_network, retry_tiktok_horizon_s=2.0)
    async with serving(settings) as (app, channel):
        await h.create_config(channel, "g1", network=TIKTOK)
        fake_network.set_default("tiktok", Reply.http(503))
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-5"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

        await wait_until(lambda: _delivery_state_is(app, DeliveryState.FAILED))
        entries = await delivery_logs(app, "p1")
        assert [e.status for e in entries] == ["retried"] * (len(entries) - 1) + ["failed"]
        assert len(entries) >= 2
        assert [e.attempt_number for e in entries] == list(range(1, len(entries) + 1))
        # Eight failures in a row open the config's circuit: the last attempts may be its probes ("probe: ...").
        assert entries[-1].network_message.removeprefix("probe: ").startswith(give_up_reason(Network.TIKTOK))
        assert len(sent_dedup_ids(fake_network, "tiktok")) == len(entries)


async def test_a_config_disabled_before_sending_sends_nothing(tmp_path, database_url, fake_network) -> None:
    api_only = settings_for(tmp_path, database_url, fake_network, role="api")
    async with serving(api_only) as (_, channel):
        tiktok_config = await h.create_config(channel, "g1", network=TIKTOK)
        await h.create_config(channel, "g1", network=REDDIT)
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-6"))
        await h.ingest(channel, "g1", h.purchase("p-tiktok", user_id="u1"))
        await h.ingest(channel, "g1", h.click("c2", user_id="u2", network=REDDIT, click_id="RDT-2"))
        await h.ingest(channel, "g1", h.purchase("p-reddit", user_id="u2"))
        await set_enabled(channel, tiktok_config.name, False)

    async with serving(settings_for(tmp_path, database_url, fake_network)) as (app, _):
        await wait_until(lambda: _all_settled(app))
        assert sorted((d.state, d.last_error) for d in await deliveries(app)) == [
            ("cancelled", CONFIG_DISABLED), ("succeeded", None)]
        assert sent_dedup_ids(fake_network) == ["p-reddit"]
        assert [e.conversion_event_id for e in await delivery_logs(app)] == ["p-reddit"]
        assert await renderings(app) == {}


async def test_deleting_a_config_cancels_its_pending_postbacks_and_drops_their_renderings(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with serving(settings_for(tmp_path, database_url, fake_network, role="api")) as (app, channel):
        config = await h.create_config(channel, "g1", network=TIKTOK)
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-11"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))
        assert len(await renderings(app)) == 1
        await config_stub(channel).DeletePostbackConfig(
            postback_config_service_pb2.DeletePostbackConfigRequest(name=config.name))

        assert [d.state for d in await deliveries(app)] == [DeliveryState.CANCELLED]
        assert await renderings(app) == {}


async def test_a_postback_without_a_kept_rendering_is_rendered_when_sent_to_the_same_bytes(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """Ingest renders each owed postback once, as the network's request carries it. One pending without (owed
    before this was kept, or its game has had an erasure since) is rendered from its conversion and click when
    sent: byte for byte what ingest kept."""
    async with serving(settings_for(tmp_path, database_url, fake_network, role="api")) as (app, channel):
        await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTPIXEL123")
        await h.create_config(channel, "g1", network=REDDIT, pixel_id="a2_pixel42")
        await h.ingest(channel, "g1", h.click("c1", anonymous_id="a1", landing_url="https://game.example/?ttclid=TT-1",
                                              ip_address="198.51.100.4", user_agent="ClickAgent/1.0"))
        await h.ingest(channel, "g1", h.click("c2", anonymous_id="a2", network=REDDIT, click_id="RDT-1"))
        await h.ingest(channel, "g1", h.identify("i1", user_id="player-42", anonymous_id="a1", email="Foo@Example.COM"))
        await h.ingest(channel, "g1", h.identify("i2", user_id="player-7", anonymous_id="a2"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="player-42", value="9.99", currency="USD",
                                                 ip_address="203.0.113.7"))
        await h.ingest(channel, "g1", h.launch("l7", user_id="player-7"))
        await h.ingest(channel, "g1", h.purchase("p7", user_id="player-7", value="0.5", currency="EUR",
                                                 ip_address="2001:DB8::7"))
        kept = await renderings(app)
        assert sorted(kept) == [d.id for d in await deliveries(app)] and len(kept) == 3
        async with app.db.transaction() as session:
            await session.execute(delete(RenderedPostback))

    async with serving(settings_for(tmp_path, database_url, fake_network)) as (app, _):
        await wait_until(lambda: _all_settled(app))
        assert [d.state for d in await deliveries(app)] == [DeliveryState.SUCCEEDED] * 3
    sent = [r.body for r in postback_requests(fake_network)]
    for body in kept.values():
        assert sum(body in request for request in sent) == 1, body


async def test_a_config_whose_network_hangs_does_not_hold_up_another(app, channel, fake_network) -> None:
    await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTSLOW1")
    await h.create_config(channel, "g1", network=REDDIT)
    fake_network.script("tiktok", [Reply.slow(60)], pixel_id="CTSLOW1")
    await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-7"))
    await h.ingest(channel, "g1", h.purchase("p-tiktok", user_id="u1"))
    await wait_until(lambda: sent_dedup_ids(fake_network, "tiktok") == ["p-tiktok"])

    await h.ingest(channel, "g1", h.click("c2", user_id="u2", network=REDDIT, click_id="RDT-3"))
    await h.ingest(channel, "g1", h.purchase("p-reddit", user_id="u2"))
    await wait_until(lambda: _statuses_are(app, "p-reddit", ["success"]))
    assert await delivery_logs(app, "p-tiktok") == []  # still waiting on its network


async def test_a_backlog_of_one_config_goes_out_as_several_requests_at_once(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, dispatch_batch_size=2, dispatch_batches_per_config=3)
    async with serving(settings) as (_, channel):
        await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTMANY1")
        fake_network.script("tiktok", [Reply.slow(60)] * 3, pixel_id="CTMANY1")
        await batch_ingest(channel, "g1", [h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-9")]
                           + [h.purchase(f"p{i}", user_id="u1") for i in range(6)])

        # The network holds every request; the dispatcher still has three of this config's batches out at once.
        await wait_until(lambda: len(postback_requests(fake_network)) == 3)
        assert sorted(sent_dedup_ids(fake_network)) == [f"p{i}" for i in range(6)]


@pytest.mark.parametrize(("max_batches", "allowed", "shares"), [
    (4, {1: 3, 2: 1}, {1: 3, 2: 1}),
    (3, {1: 3, 2: 1}, {1: 2, 2: 1}),  # every config with due work gets one before any gets more
    (1, {1: 3, 2: 1}, {1: 1}),  # the oldest due first
    (4, {1: 0, 2: 2}, {2: 2}),  # no slot free or no request to spend
    (4, {1: 1, 2: 1}, {1: 1, 2: 1}),
])
def test_a_claim_shares_its_batches_among_the_configs_with_due_work(max_batches, allowed, shares) -> None:
    assert _share([1, 2], max_batches, allowed.__getitem__) == shares


async def test_a_claim_takes_a_backlog_several_batches_at_a_time_as_far_as_allowed(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with serving(settings_for(tmp_path, database_url, fake_network, role="api")) as (app, channel):
        await h.create_config(channel, "g1", network=TIKTOK)
        await batch_ingest(channel, "g1", [h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-12")]
                           + [h.purchase(f"p{i}", user_id="u1") for i in range(7)])

        claim = await lease_due(app.ctx, "owner", max_batches=4, batch_size=2, batches_allowed=lambda _: 3)
        assert [len(lease.rows) for lease in claim.leases] == [2, 2, 2]
        leased = [i for lease in claim.leases for i in lease.delivery_ids]
        assert len(set(leased)) == 6 and leased == sorted(leased)  # the oldest in the first batch
        assert [len(lease.rows) for lease in (await lease_due(app.ctx, "owner", max_batches=4, batch_size=2)).leases] \
            == [1]  # one batch per config unless allowed more; here the last one due


async def test_postbacks_that_come_due_while_the_rate_limit_is_spent_go_out_together_when_it_allows(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # One request per 2 s: the first purchase's request spends it, and the next five come due meanwhile.
    settings = settings_for(tmp_path, database_url, fake_network, rate_limit_per_config=0.5)
    async with serving(settings) as (_, channel):
        await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTRATE1")
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-8"))
        await h.ingest(channel, "g1", h.purchase("p0", user_id="u1"))
        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p0"])
        for i in range(1, 6):
            await h.ingest(channel, "g1", h.purchase(f"p{i}", user_id="u1"))

        await wait_until(lambda: len(sent_dedup_ids(fake_network)) == 6)
        # Claimed one by one, each would have waited in line for the limit and gone alone, one every 2 s.
        assert [len(r.json["data"]) for r in postback_requests(fake_network)] == [1, 5]


async def test_new_postbacks_of_a_config_whose_rate_limit_is_spent_start_no_claims(
        tmp_path, database_url, fake_network, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    claims = 0
    lease_due_of_the_service = deliveries_service.lease_due

    async def counted_lease_due(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal claims
        claims += 1
        return await lease_due_of_the_service(*args, **kwargs)

    monkeypatch.setattr(deliveries_service, "lease_due", counted_lease_due)
    # No polls: only wakes, and the limit's own timer, can start a claim.
    settings = settings_for(tmp_path, database_url, fake_network, rate_limit_per_config=0.5, dispatch_poll_s=600.0)
    async with serving(settings) as (_, channel):
        await h.create_config(channel, "g1", network=TIKTOK, pixel_id="CTRATE2")
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-8"))
        await h.ingest(channel, "g1", h.purchase("p0", user_id="u1"))
        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p0"])
        claims = 0
        for i in range(1, 6):  # each commit wakes the dispatcher
            await h.ingest(channel, "g1", h.purchase(f"p{i}", user_id="u1"))

        await wait_until(lambda: len(sent_dedup_ids(fake_network)) == 6)
        # The claim once the limit had a request to spend, and perhaps one as the first batch finished; not one
        # per commit, each finding nothing it could take.
        assert claims <= 2
        assert [len(r.json["data"]) for r in postback_requests(fake_network)] == [1, 5]


async def test_a_dispatcher_process_picks_up_what_an_api_process_commits_without_waiting_for_its_poll(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # A poll far longer than the wait below: only the cheap look for due work can explain a prompt delivery.
    api = settings_for(tmp_path, database_url, fake_network, role="api", dispatch_poll_s=600.0)
    async with serving(api) as (_, channel), running_app(api.replace(role="dispatcher", listen="127.0.0.1:0")):
        await h.create_config(channel, "g1", network=TIKTOK)
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-10"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p1"], timeout=5.0)


async def leased_purchase(app, channel, owner: str) -> Batch:  # type: ignore[no-untyped-def]
    """An attributed purchase p1 in game g1, leased to `owner` and read as a batch (no dispatcher runs here)."""
    await h.create_config(channel, "g1", network=TIKTOK)
    await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-8"))
    await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))
    [lease] = (await lease_due(app.ctx, owner, max_batches=4, batch_size=10)).leases
    batch = await load_leased(app.ctx, owner, lease)
    assert batch is not None
    return batch


async def test_recording_an_attempt_for_an_erased_conversion_is_harmless(tmp_path, database_url, fake_network) -> None:
    async with serving(settings_for(tmp_path, database_url, fake_network, role="api")) as (app, channel):
        batch = await leased_purchase(app, channel, "test-owner")
        assert (await lease_due(app.ctx, "other-owner", max_batches=4, batch_size=10)).leases == []  # leased
        async with app.db.transaction() as session:  # what erasure does: the conversion and its outbox row go
            await session.execute(delete(Event).where(Event.event_id == "p1"))
        await record_attempts(app.ctx, "test-owner", batch.target,
                              [Attempt(batch.deliveries[0], app.ctx.clock(), OK, 12)])

        assert await deliveries(app) == [] and await delivery_logs(app) == []
        assert (await get_config(channel, batch.target.name)).health == HEALTH.POSTBACK_CONFIG_HEALTH_HEALTHY


async def test_an_attempt_whose_lease_was_lost_is_logged_with_the_number_it_was_claimed_with(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with serving(settings_for(tmp_path, database_url, fake_network, role="api")) as (app, channel):
        batch = await leased_purchase(app, channel, "slow-owner")
        assert batch.deliveries[0].attempt_number == 1
        # Its lease ran out mid-send; another dispatcher took the postback over and made an attempt of its own.
        async with app.db.transaction() as session:
            await session.execute(update(Delivery).values(attempt_count=1, lease_owner="other-owner"))
        await record_attempts(app.ctx, "slow-owner", batch.target,
                              [Attempt(batch.deliveries[0], app.ctx.clock(), OK, 12)])

        assert [row.attempt_number for row in await delivery_logs(app, "p1")] == [1]
        [delivery] = await deliveries(app)
        assert (delivery.attempt_count, delivery.lease_owner) == (1, "other-owner")  # the other party's state stays


async def test_on_sqlite_a_dispatcher_process_picks_up_another_process_commit_before_its_probe(
        tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # Neither the poll nor the probe comes within the wait below: only watching the file's data_version can
    # explain a prompt delivery.
    api = settings_for(tmp_path, sqlite_url, fake_network, role="api", dispatch_poll_s=600.0, dispatch_probe_s=600.0)
    async with serving(api) as (_, channel), running_app(api.replace(role="dispatcher", listen="127.0.0.1:0")):
        await h.create_config(channel, "g1", network=TIKTOK)
        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-11"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p1"], timeout=30.0)
