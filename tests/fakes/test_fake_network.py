"""Tests for the fake ad network, and round trips of the real adapters' requests through it."""

import asyncio
import copy
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from server.core import reddit, tiktok
from server.core.hashing import hash_email_reddit, hash_email_tiktok
from server.core.postback import (
    Classification,
    HttpRequest,
    NetworkCredentials,
    Outcome,
    PostbackEvent,
    TransportError,
    classify_transport_error,
)
from server.core.types import EventType
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, Reply

NOW_S = 1_704_721_970.0
EVENT_TIME_US = int(NOW_S) * 1_000_000 - 30_000_000
TIKTOK_CREDENTIALS = NetworkCredentials("tt-token", "CPIXEL")
REDDIT_CREDENTIALS = NetworkCredentials("rd-token", "a2_pixel1")
ADAPTERS: dict[NetworkName, Any] = {"tiktok": tiktok, "reddit": reddit}


def purchase(dedup_id: str = "evt-1", **overrides: Any) -> PostbackEvent:
    fields: dict[str, Any] = {
        "dedup_id": dedup_id,
        "event_type": EventType.PURCHASE,
        "event_time_us": EVENT_TIME_US,
        "click_id": "click-1",
        "user_id": "player-42",
        "email_sha256_tiktok": hash_email_tiktok("foo@example.com"),
        "email_sha256_reddit": hash_email_reddit("foo@example.com"),
        "ip_address": "2001:db8::7",
        "user_agent": "Mozilla/5.0",
        "landing_url": "https://game.example/",
        "value_micros": 9_990_000,
        "currency": "USD",
    }
    fields.update(overrides)
    return PostbackEvent(**fields)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAdNetwork]:
    async with FakeAdNetwork(clock_s=lambda: NOW_S) as network:
        yield network


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def build(
    fake: FakeAdNetwork, network: NetworkName, events: list[PostbackEvent] | None = None, **kw: Any
) -> HttpRequest:
    if network == "tiktok":
        return tiktok.build_request(
            fake.tiktok_base_url, kw.pop("credentials", TIKTOK_CREDENTIALS), events or [purchase()], **kw
        )
    return reddit.build_request(
        fake.reddit_base_url, kw.pop("credentials", REDDIT_CREDENTIALS), events or [purchase()], **kw
    )


async def send(
    session: aiohttp.ClientSession, request: HttpRequest, network: NetworkName, timeout_s: float = 5.0
) -> Classification:
    """What the delivery worker does with one request: send it, classify whatever happens."""
    try:
        async with session.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            body = await response.read()
            return ADAPTERS[network].classify_response(response.status, body, dict(response.headers))
    except TimeoutError:
        return classify_transport_error(TransportError.TIMEOUT)
    except aiohttp.ClientConnectionError as error:
        return classify_transport_error(TransportError.CONNECTION, type(error).__name__)


async def post_json(
    session: aiohttp.ClientSession, url: str, payload: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.post(url, data=json.dumps(payload), headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


# Round trips of the real adapters


@pytest.mark.parametrize("network", ["tiktok", "reddit"])
async def test_adapter_request_is_accepted_and_recorded(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, network: NetworkName
) -> None:
    request = build(fake, network, [purchase("evt-1"), purchase("evt-2", event_type=EventType.GAME_LAUNCH)])
    result = await send(session, request, network)
    assert result.outcome is Outcome.SUCCESS, result.message
    [received] = fake.received(network)
    assert received.json == json.loads(request.body)
    assert received.method == "POST"
    assert fake.received("reddit" if network == "tiktok" else "tiktok") == []
    if network == "tiktok":
        assert received.headers["access-token"] == "tt-token"
        assert result.request_id
    else:
        assert received.headers["Authorization"] == "Bearer rd-token"
        assert received.pixel_id == "a2_pixel1"


@pytest.mark.parametrize("network", ["tiktok", "reddit"])
@pytest.mark.parametrize("event_type", list(EventType))
async def test_validation_events_with_test_code_are_accepted(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, network: NetworkName, event_type: EventType
) -> None:
    event = ADAPTERS[network].validation_event(event_type, EVENT_TIME_US)
    result = await send(session, build(fake, network, [event], test_code="TEST123"), network)
    assert result.outcome is Outcome.SUCCESS, result.message


async def test_a_full_batch_is_accepted(fake: FakeAdNetwork, session: aiohttp.ClientSession) -> None:
    events = [purchase(f"evt-{i}") for i in range(1000)]
    for network in ("tiktok", "reddit"):
        assert (await send(session, build(fake, network, events), network)).outcome is Outcome.SUCCESS


# Scripted replies


@pytest.mark.parametrize(
    ("network", "reply", "outcome", "retry_after_s"),
    [
        ("tiktok", Reply.tiktok(0), Outcome.SUCCESS, None),
        ("tiktok", Reply.tiktok(20001), Outcome.SUCCESS, None),
        ("tiktok", Reply.tiktok(40001), Outcome.FAILED_CREDENTIALS, None),
        ("tiktok", Reply.tiktok(40002), Outcome.FAILED_PAYLOAD, None),
        ("tiktok", Reply.tiktok(40100), Outcome.RETRY_THROTTLED, None),
        ("tiktok", Reply.tiktok(40105), Outcome.FAILED_CREDENTIALS, None),
        ("tiktok", Reply.tiktok(50000), Outcome.RETRY_TRANSIENT, None),
        ("tiktok", Reply.http(401), Outcome.FAILED_CREDENTIALS, None),
        ("tiktok", Reply.http(403), Outcome.FAILED_CREDENTIALS, None),
        ("tiktok", Reply.http(429, retry_after=7), Outcome.RETRY_THROTTLED, 7.0),
        ("tiktok", Reply.http(500), Outcome.RETRY_TRANSIENT, None),
        ("tiktok", Reply.http(503, retry_after=2), Outcome.RETRY_TRANSIENT, 2.0),
        ("tiktok", Reply.non_json(), Outcome.RETRY_TRANSIENT, None),
        ("reddit", Reply.http(401), Outcome.FAILED_CREDENTIALS, None),
        ("reddit", Reply.http(403), Outcome.FAILED_CREDENTIALS, None),
        ("reddit", Reply.http(404), Outcome.FAILED_CREDENTIALS, None),
        ("reddit", Reply.http(429, retry_after=30), Outcome.RETRY_THROTTLED, 30.0),
        ("reddit", Reply.http(500), Outcome.RETRY_TRANSIENT, None),
        ("reddit", Reply.http(503, retry_after=5), Outcome.RETRY_TRANSIENT, 5.0),
        ("reddit", Reply.non_json(502), Outcome.RETRY_TRANSIENT, None),
        ("tiktok", Reply.drop(), Outcome.RETRY_TRANSIENT, None),
        ("reddit", Reply.drop(), Outcome.RETRY_TRANSIENT, None),
    ],
)
async def test_scripted_reply_is_classified(
    fake: FakeAdNetwork,
    session: aiohttp.ClientSession,
    network: NetworkName,
    reply: Reply,
    outcome: Outcome,
    retry_after_s: float | None,
) -> None:
    fake.script(network, [reply])
    result = await send(session, build(fake, network), network)
    assert (result.outcome, result.retry_after_s) == (outcome, retry_after_s)
    assert len(fake.received(network)) == 1  # recorded even when the reply is a fault
    # The script is used up: the next request gets the default (accept).
    assert (await send(session, build(fake, network), network)).outcome is Outcome.SUCCESS


async def test_reddit_auth_failure_keeps_the_explanation(
    fake: FakeAdNetwork, session: aiohttp.ClientSession
) -> None:
    fake.script("reddit", [Reply.http(401), Reply.http(403, message="token has no access to a2_pixel1")])
    first = await send(session, build(fake, "reddit"), "reddit")
    second = await send(session, build(fake, "reddit"), "reddit")
    assert first.message == "Authorization Required"
    assert second.message == "token has no access to a2_pixel1"


async def test_script_is_consumed_in_order_then_default(
    fake: FakeAdNetwork, session: aiohttp.ClientSession
) -> None:
    fake.script("tiktok", [Reply.http(500), Reply.tiktok(40100), Reply.ok()])
    fake.set_default("tiktok", Reply.tiktok(40002))
    outcomes = [(await send(session, build(fake, "tiktok"), "tiktok")).outcome for _ in range(5)]
    assert outcomes == [
        Outcome.RETRY_TRANSIENT,
        Outcome.RETRY_THROTTLED,
        Outcome.SUCCESS,
        Outcome.FAILED_PAYLOAD,
        Outcome.FAILED_PAYLOAD,
    ]


async def test_scripts_per_pixel_and_per_token(fake: FakeAdNetwork, session: aiohttp.ClientSession) -> None:
    fake.script("reddit", [Reply.http(500)], pixel_id="a2_broken")
    fake.script("reddit", [Reply.http(403)], token="revoked")
    fake.script("reddit", [Reply.http(429)])

    async def outcome(pixel_id: str, token: str) -> Outcome:
        request = build(fake, "reddit", credentials=NetworkCredentials(token, pixel_id))
        return (await send(session, request, "reddit")).outcome

    assert await outcome("a2_fine", "ok-token") is Outcome.RETRY_THROTTLED
    assert await outcome("a2_broken", "revoked") is Outcome.FAILED_CREDENTIALS  # token wins over pixel
    assert await outcome("a2_broken", "ok-token") is Outcome.RETRY_TRANSIENT
    assert await outcome("a2_broken", "ok-token") is Outcome.SUCCESS


def test_tiktok_codes_cannot_be_scripted_for_reddit() -> None:
    with pytest.raises(ValueError):
        FakeAdNetwork().script("reddit", [Reply.tiktok(40105)])


async def test_slow_reply_times_the_client_out(fake: FakeAdNetwork, session: aiohttp.ClientSession) -> None:
    fake.script("tiktok", [Reply.slow(5.0)])
    result = await send(session, build(fake, "tiktok"), "tiktok", timeout_s=0.2)
    assert result.outcome is Outcome.RETRY_TRANSIENT
    assert "timed out" in result.message


async def test_slow_reply_then_answers(fake: FakeAdNetwork, session: aiohttp.ClientSession) -> None:
    fake.script("reddit", [Reply.slow(0.05, then=Reply.http(503))])
    assert (await send(session, build(fake, "reddit"), "reddit")).outcome is Outcome.RETRY_TRANSIENT


async def test_dropped_connection_is_a_connection_error(
    fake: FakeAdNetwork, session: aiohttp.ClientSession
) -> None:
    fake.script("reddit", [Reply.drop()])
    request = build(fake, "reddit")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(request.url, data=request.body, headers=dict(request.headers)):
            pass


@pytest.mark.parametrize(
    ("network", "token", "outcome"),
    [
        ("tiktok", "good", Outcome.SUCCESS),
        ("tiktok", "stolen", Outcome.FAILED_CREDENTIALS),
        ("reddit", "good", Outcome.SUCCESS),
        ("reddit", "stolen", Outcome.FAILED_CREDENTIALS),
    ],
)
async def test_valid_tokens(
    session: aiohttp.ClientSession, network: NetworkName, token: str, outcome: Outcome
) -> None:
    async with FakeAdNetwork(valid_tokens={"good"}, clock_s=lambda: NOW_S) as fake:
        pixel = "CPIXEL" if network == "tiktok" else "a2_pixel1"
        result = await send(
            session, build(fake, network, credentials=NetworkCredentials(token, pixel)), network
        )
        assert result.outcome is outcome
        if outcome is Outcome.FAILED_CREDENTIALS:
            assert result.network_code == ("40105" if network == "tiktok" else None)
            assert result.http_status == (200 if network == "tiktok" else 401)



@pytest.mark.parametrize("network", ["tiktok", "reddit"])
async def test_a_pixel_default_answers_that_pixel_until_changed(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, network: NetworkName
) -> None:
    refusal = Reply.tiktok(40001) if network == "tiktok" else Reply.http(403)
    pixel, other = ("CPIXEL", "COTHER") if network == "tiktok" else ("a2_pixel1", "a2_other")
    fake.set_default(network, refusal, pixel_id=pixel)

    async def outcome(pixel_id: str) -> Outcome:
        request = build(fake, network, credentials=NetworkCredentials("tt-token", pixel_id))
        return (await send(session, request, network)).outcome

    assert [await outcome(pixel), await outcome(pixel), await outcome(other)] == [
        Outcome.FAILED_CREDENTIALS, Outcome.FAILED_CREDENTIALS, Outcome.SUCCESS]
    fake.set_default(network, Reply.ok(), pixel_id=pixel)
    assert await outcome(pixel) is Outcome.SUCCESS


@pytest.mark.parametrize("network", ["tiktok", "reddit"])
async def test_a_token_revoked_after_some_events_are_accepted(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, network: NetworkName
) -> None:
    fake.after_accepting(3, lambda: fake.accept_tokens({"new-token"}))

    async def outcome(events: int, token: str) -> Outcome:
        batch = [purchase(f"evt-{len(fake.received())}-{i}") for i in range(events)]
        pixel = "CPIXEL" if network == "tiktok" else "a2_pixel1"
        request = build(fake, network, batch, credentials=NetworkCredentials(token, pixel))
        return (await send(session, request, network)).outcome

    assert await outcome(2, "old-token") is Outcome.SUCCESS
    assert await outcome(2, "old-token") is Outcome.SUCCESS  # the third event is in it: revoked after this one
    assert await outcome(1, "old-token") is Outcome.FAILED_CREDENTIALS
    assert await outcome(1, "new-token") is Outcome.SUCCESS
    assert [len(r.json["data"] if network == "tiktok" else r.json["data"]["events"])
            for r in fake.accepted(network)] == [2, 2, 1]
    assert len(fake.received(network)) == 4

# The fake checks requests as the real networks do


def tiktok_body() -> dict[str, Any]:
    return json.loads(tiktok.build_request("http://x", TIKTOK_CREDENTIALS, [purchase()]).body)


def reddit_body() -> dict[str, Any]:
    return json.loads(reddit.build_request("http://x", REDDIT_CREDENTIALS, [purchase()]).body)


def mutated(body: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    copied = copy.deepcopy(body)
    change(copied)
    return copied


TIKTOK_HEADERS = {"Access-Token": "tt-token", "Content-Type": "application/json"}
REDDIT_HEADERS = {
    "Authorization": "Bearer rd-token",
    "Content-Type": "application/json",
    "User-Agent": "postbacks-tests/1.0",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: None, 0),
        (lambda b: b.update(event_source="app"), 40002),
        (lambda b: b.pop("event_source_id"), 40002),
        (lambda b: b.update(data=[]), 40002),
        (lambda b: b.update(data=b["data"] * 1001), 40002),
        (lambda b: b["data"][0].update(event_time=b["data"][0]["event_time"] * 1000), 40002),  # ms, not s
        (lambda b: b["data"][0].update(test_event_code="TEST1"), 40002),
        (lambda b: b.update(test_event_code="TEST1", data=b["data"] * 2), 40002),
        (lambda b: b["data"][0]["user"].update(email=["Foo@Example.com"]), 40002),  # not hashed
        (lambda b: b["data"][0]["properties"].pop("currency"), 40002),
        (lambda b: b["data"][0]["properties"].update(value="9.99"), 40002),
    ],
)
async def test_tiktok_checks_the_body(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, change: Callable[[dict[str, Any]], object], code: int
) -> None:
    url = tiktok.build_request(fake.tiktok_base_url, TIKTOK_CREDENTIALS, [purchase()]).url
    status, reply = await post_json(session, url, mutated(tiktok_body(), change), TIKTOK_HEADERS)
    assert (status, reply["code"]) == (200, code)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Authorization": "Bearer tt-token", "Content-Type": "application/json"},
    ],
)
async def test_tiktok_needs_the_access_token_header(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    url = f"{fake.tiktok_base_url}/open_api/v1.3/event/track/"
    status, reply = await post_json(session, url, tiktok_body(), headers)
    assert (status, reply["code"]) == (200, 40105)


async def test_tiktok_path_needs_its_trailing_slash(
    fake: FakeAdNetwork, session: aiohttp.ClientSession
) -> None:
    status, _ = await post_json(
        session, f"{fake.tiktok_base_url}/open_api/v1.3/event/track", tiktok_body(), TIKTOK_HEADERS
    )
    assert status == 404


DAY_MS = 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("change", "status", "invalid"),
    [
        (lambda b: None, 200, None),
        (lambda b: b.update(extra=1), 400, None),
        (lambda b: b["data"].update(partner="x"), 400, None),
        (lambda b: b["data"]["events"][0].update(event_name="Purchase"), 400, [0]),
        (lambda b: b["data"]["events"][0]["type"].update(custom_event_name="x"), 400, [0]),
        (lambda b: b["data"]["events"][0]["user"].update(phone_number="a" * 64), 400, [0]),
        (lambda b: b["data"]["events"][0]["metadata"].update(item_count=1), 400, [0]),
        (lambda b: b["data"]["events"][0].update(test_id="t"), 400, [0]),
        (lambda b: b["data"]["events"][0].update(event_at=int(NOW_S * 1000) - 7 * DAY_MS - 1), 400, [0]),
        (lambda b: b["data"]["events"][0].update(event_at=int(NOW_S * 1000) - 7 * DAY_MS + 1000), 200, None),
        (lambda b: b["data"]["events"][0].update(event_at=int(NOW_S * 1000) + 6 * 60 * 1000), 400, [0]),
        (lambda b: b["data"]["events"][0].update(event_at=int(NOW_S)), 400, [0]),  # seconds, not ms
        (lambda b: b["data"]["events"][0].update(action_source="website"), 400, [0]),
        (lambda b: b["data"]["events"][0]["user"].update(ip_address="203.0.113.7"), 400, [0]),  # not hashed
        (
            lambda b: (b["data"]["events"][0].pop("click_id"), b["data"]["events"][0]["user"].pop("email")),
            400,
            [0],
        ),
        (lambda b: b["data"]["events"][0].pop("click_id"), 200, None),
        (lambda b: b["data"]["events"][0]["metadata"].pop("value"), 400, [0]),
        (lambda b: b["data"].update(events=b["data"]["events"] * 2, test_id="t"), 400, None),
        (lambda b: b["data"].update(events=[]), 400, None),
        (
            lambda b: b["data"].update(
                events=[*b["data"]["events"], {**b["data"]["events"][0], "event_at": 0}, *b["data"]["events"]]
            ),
            400,
            [1],
        ),
    ],
)
async def test_reddit_checks_the_body(
    fake: FakeAdNetwork,
    session: aiohttp.ClientSession,
    change: Callable[[dict[str, Any]], object],
    status: int,
    invalid: list[int] | None,
) -> None:
    url = reddit.build_request(fake.reddit_base_url, REDDIT_CREDENTIALS, [purchase()]).url
    got_status, reply = await post_json(session, url, mutated(reddit_body(), change), REDDIT_HEADERS)
    assert got_status == status, reply
    if invalid is not None:
        assert [item["index"] for item in reply["invalid_events"]] == invalid
        assert reddit.classify_response(
            got_status, json.dumps(reply).encode(), {}
        ).invalid_event_indexes == tuple(invalid)


@pytest.mark.parametrize(
    ("headers", "pixel_id", "status"),
    [
        ({k: v for k, v in REDDIT_HEADERS.items() if k != "Authorization"}, "a2_pixel1", 401),
        ({**REDDIT_HEADERS, "Authorization": "rd-token"}, "a2_pixel1", 401),  # no Bearer
        ({**REDDIT_HEADERS, "User-Agent": "Python/3.11 aiohttp/3.9"}, "a2_pixel1", 400),
        (REDDIT_HEADERS, "t2_notapixel", 404),
    ],
)
async def test_reddit_checks_headers_and_pixel(
    fake: FakeAdNetwork, session: aiohttp.ClientSession, headers: dict[str, str], pixel_id: str, status: int
) -> None:
    url = f"{fake.reddit_base_url}/api/v3/pixels/{pixel_id}/conversion_events"
    got_status, _ = await post_json(session, url, reddit_body(), headers)
    assert got_status == status


# Waiting and standalone use


async def test_wait_for_wakes_when_requests_arrive(
    fake: FakeAdNetwork, session: aiohttp.ClientSession
) -> None:
    async def send_two_later() -> None:
        await asyncio.sleep(0.05)
        await send(session, build(fake, "reddit"), "reddit")
        await send(session, build(fake, "tiktok"), "tiktok")

    sender = asyncio.create_task(send_two_later())
    received = await fake.wait_for(1, network="reddit", timeout=5)
    assert [r.network for r in received] == ["reddit"]
    assert len(await fake.wait_for(2, timeout=5)) == 2
    await sender


async def test_wait_for_times_out(fake: FakeAdNetwork) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_for(1, network="tiktok", timeout=0.05)


async def test_close_does_not_wait_for_slow_replies(session: aiohttp.ClientSession) -> None:
    fake = await FakeAdNetwork(clock_s=lambda: NOW_S).start()
    fake.script("tiktok", [Reply.slow(60)])
    pending = asyncio.create_task(send(session, build(fake, "tiktok"), "tiktok"))
    await fake.wait_for(1)
    async with asyncio.timeout(3):
        await fake.close()
        result = await pending
    assert result.outcome is Outcome.RETRY_TRANSIENT


async def test_standalone_entry_point(session: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.fake_network", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(10):
            lines = [(await process.stdout.readline()).decode() for _ in range(3)]  # type: ignore[union-attr]
        tiktok_base_url = lines[1].split(": ", 1)[1].strip()
        request = tiktok.build_request(tiktok_base_url, TIKTOK_CREDENTIALS, [purchase()])
        assert (await send(session, request, "tiktok")).outcome is Outcome.SUCCESS
    finally:
        process.terminate()
        await process.wait()
