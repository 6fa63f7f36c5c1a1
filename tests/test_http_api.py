"""The HTTP API (Connect protocol) with aiohttp as the client: every RPC in JSON, binary protobuf, the error mapping,
keys, CORS, the publishable key's limits, the client address behind proxies, and the pixel's file."""

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from sqlalchemy import select

from postbacks.v1 import event_service_pb2
from server.api.auth import MAX_PUBLISHABLE_BATCH_EVENTS, METHOD_RULES
from server.app import App
from server.core.access import KeyKind
from server.services import api_keys
from server.store.models import Event
from server.web.http_api import PIXEL, PIXEL_ETAG
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for
from tests.helpers import (
    click,
    connect_error_details,
    connect_field_violations,
    create_config,
    http_call,
    identify,
    ingest,
    key_channel,
    launch,
    rfc3339,
)

SITE = "https://www.mygame.com"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def click_request(event_id: str, *, game: str = "g", anonymous_id: str = "visitor", click_id: str = "E.C.P.abc",
                  **fields) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {"parent": f"games/{game}", "event": {
        "eventId": event_id, "eventTime": rfc3339(60), "anonymousId": anonymous_id,
        "adClick": {"landingUrl": f"{SITE}/?ttclid={click_id}"}, **fields}}


async def publishable_key(app: App, game: str = "g", origins: tuple[str, ...] = (SITE,)) -> str:
    key, _ = await api_keys.create_key(app.ctx, KeyKind.PUBLISHABLE, [game], "pixel", origins)
    return key


async def stored(app: App, game: str, event_id: str) -> Event | None:
    async with app.db.snapshot() as session:
        return await session.scalar(select(Event).where(Event.game_id == game, Event.event_id == event_id))


def stream_frames(body: bytes) -> list[tuple[int, dict]]:  # type: ignore[type-arg]
    """A Connect server stream's envelopes: (flags, JSON message); flag 2 marks the end-of-stream message."""
    frames, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack(">BI", body[offset:offset + 5])
        frames.append((flags, json.loads(body[offset + 5:offset + 5 + length])))
        offset += 5 + length
    return frames


# --- every RPC ----------------------------------------------------------------------------------------------------

async def test_every_rpc_answers_in_json(app: App, http, fake_network) -> None:  # type: ignore[no-untyped-def]
    called = set()

    async def call(method: str, body: dict) -> dict:  # type: ignore[type-arg]
        status, reply, _ = await http_call(http, app.http_port, method, body)
        assert status == 200, (method, reply)
        called.add(f"/postbacks.v1.{method}")
        return reply

    config = (await call("PostbackConfigService/CreatePostbackConfig", {
        "parent": "games/g", "postbackConfigId": "tiktok-main", "postbackConfig": {
            "displayName": "TikTok", "network": "NETWORK_TIKTOK",
            "credentials": {"accessToken": "tt-token-0123456789abcdef", "pixelId": "CTPIXEL123"},
            "triggerEvents": ["CONVERSION_EVENT_TYPE_GAME_LAUNCH"]}}))["postbackConfig"]
    assert config["name"] == "games/g/postbackConfigs/tiktok-main"
    assert "tt-token" not in json.dumps(config)  # input only, as over gRPC
    assert (await call("PostbackConfigService/GetPostbackConfig", {"name": config["name"]}))["postbackConfig"][
        "displayName"] == "TikTok"
    listed = await call("PostbackConfigService/ListPostbackConfigs", {"parent": "games/g"})
    assert [c["name"] for c in listed["postbackConfigs"]] == [config["name"]]
    updated = await call("PostbackConfigService/UpdatePostbackConfig", {
        "postbackConfig": {"name": config["name"], "displayName": "TikTok (main)"}, "updateMask": "displayName"})
    assert updated["postbackConfig"]["displayName"] == "TikTok (main)"
    await call("PostbackConfigService/RotatePostbackCredentials", {
        "name": config["name"], "credentials": {"accessToken": "tt-token-rotated-0123456789", "pixelId": "CTPIXEL123"}})
    checked = await call("PostbackConfigService/ValidatePostbackCredentials", {
        "parent": "games/g", "postbackConfig": config["name"], "eventType": "CONVERSION_EVENT_TYPE_GAME_LAUNCH"})
    assert checked["result"] == "CREDENTIAL_CHECK_RESULT_ACCEPTED"

    clicked = await call("EventService/IngestEvent", click_request("click-1"))
    assert clicked["result"]["name"] == "games/g/events/click-1"
    batch = await call("EventService/BatchIngestEvents", {"parent": "games/g", "events": [
        {"eventId": "identify-1", "eventTime": rfc3339(30), "userId": "player", "anonymousId": "visitor",
         "identify": {}},
        {"eventId": "launch-1", "eventTime": rfc3339(10), "userId": "player", "gameLaunch": {}}]})
    assert batch["results"][1]["conversion"]["decision"] == "CONVERSION_DECISION_POSTBACK_OWED"
    conversion = (await call("EventService/GetConversion", {"name": "games/g/conversions/launch-1"}))["conversion"]
    assert conversion["attributedClick"]["clickId"] == "E.C.P.abc"

    # Besides the credential checks, the launch's postback carries the click id.
    await wait_until(lambda: any(b"E.C.P.abc" in r.body for r in fake_network.received("tiktok")), timeout=15)

    async def logged() -> dict | None:  # type: ignore[type-arg]
        logs = await call("DeliveryLogService/ListDeliveryLogs", {"parent": "games/g"})
        return logs if logs.get("deliveryLogs") else None

    logs = await wait_until(logged, timeout=15)
    assert logs["deliveryLogs"][0]["status"] == "DELIVERY_ATTEMPT_STATUS_SUCCESS"

    settings = await call("GameSettingsService/UpdateGameSettings", {
        "gameSettings": {"name": "games/g/settings", "attributionLookback": "86400s"},
        "updateMask": "attributionLookback"})
    assert settings["gameSettings"]["attributionLookback"] == "86400s"
    assert (await call("GameSettingsService/GetGameSettings", {"name": "games/g/settings"}))["gameSettings"][
        "attributionLookback"] == "86400s"
    erased = await call("PrivacyService/DeleteUserData", {"parent": "games/g", "userId": "player"})
    assert int(erased["deletedEventCount"]) >= 2
    replayed = await call("PostbackConfigService/RetryFailedPostbacks", {
        "name": config["name"], "failureReasons": ["POSTBACK_FAILURE_REASON_PAYLOAD"]})
    assert replayed == {}  # nothing failed: none re-queued, none past its window (zero counts are left out)
    deleted = await call("PostbackConfigService/DeletePostbackConfig", {"name": config["name"]})
    assert "cancelledPostbackCount" not in deleted or int(deleted["cancelledPostbackCount"]) == 0

    # The server stream, in the Connect streaming form.
    async with http.post(f"http://127.0.0.1:{app.http_port}/postbacks.v1.DeliveryLogService/StreamDeliveryLogs",
                         data=struct.pack(">BI", 0, 2) + b"{}",
                         headers={"content-type": "application/connect+json",
                                  "authorization": f"Bearer {app.dev_key}"}) as response:
        assert response.status == 200
        ended = await response.content.read()
    # Unreachable parent "" ends the stream at once with the error in its end message.
    (flags, end), = stream_frames(ended)
    assert flags == 2 and end["error"]["code"] == "invalid_argument"

    called.add("/postbacks.v1.DeliveryLogService/StreamDeliveryLogs")
    assert called == set(METHOD_RULES), "a new RPC needs its JSON call here"


async def test_a_log_stream_sends_its_backlog_with_resume_tokens(app: App, http, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with key_channel(app.port, app.dev_key) as channel:
        await create_config(channel, "g")
        await ingest(channel, "g", click("c", anonymous_id="v", landing_url=f"{SITE}/?ttclid=T1"))
        await ingest(channel, "g", identify("i", user_id="p", anonymous_id="v"))
        await ingest(channel, "g", launch("l", user_id="p"))
    await fake_network.wait_for(1, network="tiktok", timeout=15)
    request = json.dumps({"parent": "games/g", "timeRange": "TIME_RANGE_PRESET_LAST_HOUR"}).encode()
    async with http.post(f"http://127.0.0.1:{app.http_port}/postbacks.v1.DeliveryLogService/StreamDeliveryLogs",
                         data=struct.pack(">BI", 0, len(request)) + request,
                         headers={"content-type": "application/connect+json",
                                  "authorization": f"Bearer {app.dev_key}"}) as response:
        assert response.status == 200
        messages = []
        while not any("deliveryLog" in m for m in messages):  # the stream may say where it is before any entry
            flags, length = struct.unpack(">BI", await asyncio.wait_for(response.content.readexactly(5), 15))
            assert flags == 0, "the stream ended"
            messages.append(json.loads(await asyncio.wait_for(response.content.readexactly(length), 15)))
    (entry,) = [m for m in messages if "deliveryLog" in m]
    assert entry["deliveryLog"]["conversion"] == "games/g/conversions/l"
    assert all(m["resumeToken"] for m in messages)


async def test_stopping_the_server_ends_an_open_http_log_stream(tmp_path, database_url, fake_network, http) -> None:  # type: ignore[no-untyped-def]
    app = App(settings_for(tmp_path, database_url, fake_network))
    await app.start()
    stopped = False
    try:
        request = b'{"parent": "games/g"}'
        async with http.post(f"http://127.0.0.1:{app.http_port}/postbacks.v1.DeliveryLogService/StreamDeliveryLogs",
                             data=struct.pack(">BI", 0, len(request)) + request,
                             headers={"content-type": "application/connect+json",
                                      "authorization": f"Bearer {app.dev_key}"}) as response:
            flags, length = struct.unpack(">BI", await asyncio.wait_for(response.content.readexactly(5), 15))
            live = json.loads(await response.content.readexactly(length))
            assert flags == 0 and live["resumeToken"]  # the stream is live
            await asyncio.wait_for(app.stop(grace_s=5), 30)
            stopped = True
            rest = await asyncio.wait_for(response.content.read(), 15)
        (end_flags, end), = stream_frames(rest)
        assert end_flags == 2 and "error" not in end  # ended cleanly, not cut off
    finally:
        if not stopped:
            await app.stop(grace_s=0.5)


async def test_binary_protobuf_works_too(app: App, http) -> None:  # type: ignore[no-untyped-def]
    request = event_service_pb2.IngestEventRequest(parent="games/g")
    request.event.event_id, request.event.user_id = "launch-bin", "p"
    request.event.event_time.GetCurrentTime()
    request.event.game_launch.SetInParent()
    status, body, headers = await http_call(http, app.http_port, "EventService/IngestEvent",
                                            request.SerializeToString())
    assert status == 200 and headers["Content-Type"] == "application/proto"
    assert event_service_pb2.IngestEventResponse.FromString(body["proto"]).result.name == "games/g/events/launch-bin"


# --- errors and keys ----------------------------------------------------------------------------------------------

async def test_domain_errors_map_to_connect_codes_with_the_named_field(app: App, http) -> None:  # type: ignore[no-untyped-def]
    bad = {"parent": "games/g", "event": {"eventId": "buy", "eventTime": rfc3339(5), "userId": "p",
                                          "purchase": {"value": "9.99", "currency": "DOLLARS"}}}
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", bad)
    assert (status, body["code"]) == (400, "invalid_argument")
    assert "event.purchase.currency" in connect_field_violations(body)
    assert connect_error_details(body)["google.rpc.ErrorInfo"]["domain"] == "postbacks.v1"

    status, body, _ = await http_call(http, app.http_port, "EventService/GetConversion",
                                      {"name": "games/g/conversions/none"})
    assert (status, body["code"]) == (404, "not_found")

    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", {"parent": 7})
    assert (status, body["code"]) == (400, "invalid_argument")
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", b"\xff\xff\xff")
    assert (status, body["code"]) == (400, "invalid_argument")
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", {"parent": "g", "nope": 1})
    assert (status, body["code"]) == (400, "invalid_argument")

    async with http.post(f"http://127.0.0.1:{app.http_port}/postbacks.v1.EventService/NoSuchMethod",
                         json={}) as response:
        assert response.status == 404
    async with http.get(f"http://127.0.0.1:{app.http_port}/postbacks.v1.EventService/IngestEvent") as response:
        assert response.status == 405


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "API_KEY_MISSING"), ("Bearer pbk_nope", "API_KEY_INVALID"), ("Basic abc", "API_KEY_NOT_BEARER")])
async def test_calls_without_a_valid_key_are_unauthenticated(app: App, http, authorization, reason) -> None:  # type: ignore[no-untyped-def]
    headers = {"authorization": authorization} if authorization else {}
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c"), key=None,
                                      headers=headers)
    assert (status, body["code"]) == (401, "unauthenticated")
    assert connect_error_details(body)["google.rpc.ErrorInfo"]["reason"] == reason
    assert await stored(app, "g", "c") is None


async def test_keys_are_held_to_their_scope_and_game(app: App, http) -> None:  # type: ignore[no-untyped-def]
    ingest_key, _ = await api_keys.create_key(app.ctx, KeyKind.INGEST, ["g"])
    admin_key, _ = await api_keys.create_key(app.ctx, KeyKind.ADMIN, ["g"])
    status, _, _ = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c"), key=ingest_key)
    assert status == 200
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent",
                                      click_request("c", game="other"), key=ingest_key)
    assert (status, body["code"]) == (403, "permission_denied")
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c2"),
                                      key=admin_key)
    assert (status, body["code"]) == (403, "permission_denied")
    status, body, _ = await http_call(http, app.http_port, "PostbackConfigService/ListPostbackConfigs",
                                      {"parent": "games/g"}, key=ingest_key)
    assert (status, body["code"]) == (403, "permission_denied")
    assert await stored(app, "other", "c") is None and await stored(app, "g", "c2") is None


async def test_a_secret_key_sent_from_a_web_page_is_refused(app: App, http) -> None:  # type: ignore[no-untyped-def]
    await publishable_key(app)  # the page's origin is listed: CORS lets the page read the refusal
    ingest_key, _ = await api_keys.create_key(app.ctx, KeyKind.INGEST, ["g"])
    for key in (ingest_key, app.dev_key):
        status, body, headers = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c"),
                                                key=key, headers={"origin": SITE})
        assert (status, body["code"]) == (403, "permission_denied")
        assert connect_error_details(body)["google.rpc.ErrorInfo"]["reason"] == "SECRET_KEY_IN_PAGE"
        assert headers["Access-Control-Allow-Origin"] == SITE
    assert await stored(app, "g", "c") is None


async def test_secret_ingest_keys_keep_the_body_s_client_address(app: App, http) -> None:  # type: ignore[no-untyped-def]
    # A studio's backend relays its player's address and user agent; the HTTP request's are its own.
    status, _, _ = await http_call(http, app.http_port, "EventService/IngestEvent",
                                   click_request("relayed", ipAddress="198.51.100.4", userAgent="Game/1.0"))
    assert status == 200
    event = await stored(app, "g", "relayed")
    assert event is not None and (event.ip_address, event.user_agent) == ("198.51.100.4", "Game/1.0")


# --- CORS and publishable keys ------------------------------------------------------------------------------------

async def preflight(http, app: App, origin: str):  # type: ignore[no-untyped-def]
    return await http.options(f"http://127.0.0.1:{app.http_port}/postbacks.v1.EventService/IngestEvent", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})


async def test_cors_preflights_are_answered_for_listed_origins_only(app: App, http) -> None:  # type: ignore[no-untyped-def]
    await publishable_key(app)
    async with await preflight(http, app, SITE) as response:
        assert response.status == 204
        assert response.headers["access-control-allow-origin"] == SITE
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"]
    async with await preflight(http, app, "https://evil.example") as response:
        assert response.status == 403
        assert "access-control-allow-origin" not in response.headers


async def test_a_publishable_key_sends_clicks_from_its_origin_with_the_request_s_address(app: App, http) -> None:  # type: ignore[no-untyped-def]
    key = await publishable_key(app)
    status, body, headers = await http_call(
        http, app.http_port, "EventService/IngestEvent",
        click_request("c", ipAddress="6.6.6.6", userAgent="forged"), key=key,
        headers={"origin": SITE, "user-agent": "Mozilla/5.0 (test)"})
    assert status == 200, body
    assert headers["Access-Control-Allow-Origin"] == SITE
    event = await stored(app, "g", "c")
    assert event is not None and (event.ip_address, event.user_agent) == ("127.0.0.1", "Mozilla/5.0 (test)")


async def test_a_publishable_key_refuses_other_origins_and_stores_nothing(app: App, http) -> None:  # type: ignore[no-untyped-def]
    key = await publishable_key(app)
    for origin in ("https://evil.example", "http://www.mygame.com", "null"):
        status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c"),
                                          key=key, headers={"origin": origin})
        assert (status, body["code"]) == (403, "permission_denied"), origin
        assert connect_error_details(body)["google.rpc.ErrorInfo"]["reason"] == "ORIGIN_NOT_ALLOWED"
    assert await stored(app, "g", "c") is None


async def test_a_publishable_key_without_an_origin_is_a_game_client(app: App, http) -> None:  # type: ignore[no-untyped-def]
    key = await publishable_key(app)
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent",
                                      {"parent": "games/g", "event": {"eventId": "launch", "eventTime": rfc3339(5),
                                                                      "userId": "p", "gameLaunch": {}}}, key=key)
    assert status == 200, body
    assert await stored(app, "g", "launch") is not None


async def test_a_publishable_key_may_not_send_purchases_read_or_touch_other_games(app: App, http) -> None:  # type: ignore[no-untyped-def]
    key = await publishable_key(app)
    origin = {"origin": SITE}
    purchase = {"parent": "games/g", "event": {"eventId": "buy", "eventTime": rfc3339(5), "userId": "p",
                                               "purchase": {"value": "999.99", "currency": "USD"}}}
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", purchase, key=key,
                                      headers=origin)
    assert (status, body["code"]) == (403, "permission_denied")
    assert "ingest key" in body["message"]
    batch = {"parent": "games/g", "events": [click_request("c-in-batch")["event"], purchase["event"]]}
    status, body, _ = await http_call(http, app.http_port, "EventService/BatchIngestEvents", batch, key=key,
                                      headers=origin)
    assert (status, body["code"]) == (403, "permission_denied")
    assert await stored(app, "g", "buy") is None and await stored(app, "g", "c-in-batch") is None

    status, body, _ = await http_call(http, app.http_port, "EventService/GetConversion",
                                      {"name": "games/g/conversions/x"}, key=key, headers=origin)
    assert (status, body["code"]) == (403, "permission_denied")
    status, body, _ = await http_call(http, app.http_port, "PostbackConfigService/ListPostbackConfigs",
                                      {"parent": "games/g"}, key=key, headers=origin)
    assert (status, body["code"]) == (403, "permission_denied")
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent",
                                      click_request("c", game="other"), key=key, headers=origin)
    assert (status, body["code"]) == (403, "permission_denied")


async def test_a_publishable_key_is_refused_over_native_grpc(app: App) -> None:
    key = await publishable_key(app)
    async with key_channel(app.port, key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await ingest(channel, "g", launch("l", user_id="p"))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "HTTP API" in (error.value.details() or "")
    assert await stored(app, "g", "l") is None


async def test_publishable_bodies_and_batches_are_bounded(app: App, http) -> None:  # type: ignore[no-untyped-def]
    key = await publishable_key(app)
    origin = {"origin": SITE}
    huge = click_request("big", userAgent="x" * (70 * 1024))
    status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", huge, key=key, headers=origin)
    assert (status, body["code"]) == (429, "resource_exhausted")
    assert connect_error_details(body)["google.rpc.ErrorInfo"]["reason"] == "REQUEST_TOO_LARGE"
    assert await stored(app, "g", "big") is None

    events = [click_request(f"c{i}", click_id=f"C{i}")["event"] for i in range(MAX_PUBLISHABLE_BATCH_EVENTS + 1)]
    status, body, _ = await http_call(http, app.http_port, "EventService/BatchIngestEvents",
                                      {"parent": "games/g", "events": events}, key=key, headers=origin)
    assert (status, body["code"]) == (400, "invalid_argument")
    assert "events" in connect_field_violations(body)
    status, body, _ = await http_call(http, app.http_port, "EventService/BatchIngestEvents",
                                      {"parent": "games/g", "events": events[:-1]}, key=key, headers=origin)
    assert status == 200, body


async def test_publishable_keys_are_rate_limited_per_address_and_per_key(tmp_path, database_url,  # type: ignore[no-untyped-def]
                                                                         fake_network, http) -> None:
    # A rate this low refills nothing during the test: the burst (one request) is all there is.
    settings = settings_for(tmp_path, database_url, fake_network, publishable_rate_per_ip=0.01,
                            publishable_rate_per_key=1000.0, trusted_proxy="127.0.0.1")
    async with running_app(settings) as app:
        key = await publishable_key(app)

        async def send(event_id: str, address: str) -> tuple[int, dict, dict[str, str]]:  # type: ignore[type-arg]
            return await http_call(http, app.http_port, "EventService/IngestEvent", click_request(event_id), key=key,
                                   headers={"origin": SITE, "x-forwarded-for": address})

        assert (await send("a1", "203.0.113.1"))[0] == 200
        status, body, headers = await send("a2", "203.0.113.1")
        assert (status, body["code"]) == (429, "resource_exhausted")
        assert int(headers["Retry-After"]) >= 1 and headers["Access-Control-Allow-Origin"] == SITE
        assert "retry-after" in headers["Access-Control-Expose-Headers"]
        assert await stored(app, "g", "a2") is None
        assert (await send("b1", "203.0.113.2"))[0] == 200  # another visitor has a bucket of its own
        # Secret keys are not limited.
        for i in range(3):
            assert (await http_call(http, app.http_port, "EventService/IngestEvent", click_request(f"s{i}")))[0] == 200

    settings = settings_for(tmp_path, database_url, fake_network, publishable_rate_per_key=0.01)
    async with running_app(settings) as app:
        key = await publishable_key(app)
        other_key = await publishable_key(app)
        statuses = [(await http_call(http, app.http_port, "EventService/IngestEvent", click_request(f"k{i}"),
                                     key=key, headers={"origin": SITE}))[0] for i in range(2)]
        assert statuses == [200, 429]
        assert (await http_call(http, app.http_port, "EventService/IngestEvent", click_request("k-other"),
                                key=other_key, headers={"origin": SITE}))[0] == 200


async def test_a_body_past_the_limit_is_refused_as_it_streams_in(tmp_path, database_url, fake_network, http) -> None:  # type: ignore[no-untyped-def]
    # No content-length (chunked): the size shows only while the body is read.
    settings = settings_for(tmp_path, database_url, fake_network, max_receive_message_bytes=32 * 1024)
    async with running_app(settings) as app:
        key = await publishable_key(app)
        body = json.dumps(click_request("big", userAgent="x" * (100 * 1024))).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 8192):
                yield body[start:start + 8192]

        for headers, limit in (({"origin": SITE, "authorization": f"Bearer {key}"}, 32 * 1024),
                               ({"authorization": f"Bearer {app.dev_key}"}, 32 * 1024)):
            async with http.post(f"http://127.0.0.1:{app.http_port}/postbacks.v1.EventService/IngestEvent",
                                 data=chunks(), headers={"content-type": "application/json", **headers}) as response:
                reply = await response.json()
            assert (response.status, reply["code"]) == (429, "resource_exhausted")
            assert connect_error_details(reply)["google.rpc.ErrorInfo"]["metadata"]["limit_bytes"] == str(limit)
        assert await stored(app, "g", "big") is None


@pytest.mark.parametrize(("trusted_proxy", "forwarded_for", "address"), [
    ("", "203.0.113.9", "127.0.0.1"),  # no proxy configured: the header is the client's own claim
    ("10.0.0.0/8", "203.0.113.9", "127.0.0.1"),  # the peer is not a configured proxy
    ("127.0.0.1/32", "203.0.113.9", "203.0.113.9"),
    ("127.0.0.1/32", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # what the client prepended is not believed
])
async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path, database_url, fake_network, http,  # type: ignore[no-untyped-def]
                                                                     trusted_proxy, forwarded_for, address) -> None:
    async with running_app(settings_for(tmp_path, database_url, fake_network, trusted_proxy=trusted_proxy)) as app:
        key = await publishable_key(app)
        status, body, _ = await http_call(http, app.http_port, "EventService/IngestEvent", click_request("c"),
                                          key=key, headers={"origin": SITE, "x-forwarded-for": forwarded_for})
        assert status == 200, body
        event = await stored(app, "g", "c")
        assert event is not None and event.ip_address == address


# --- the pixel's file ---------------------------------------------------------------------------------------------

async def test_the_pixel_is_small_plain_javascript_and_cacheable(app: App, http) -> None:  # type: ignore[no-untyped-def]
    assert len(PIXEL) <= 4096
    async with http.get(f"http://127.0.0.1:{app.http_port}/pixel.js") as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert await response.read() == PIXEL
        etag = response.headers["etag"]
    assert etag.encode() == PIXEL_ETAG
    async with http.get(f"http://127.0.0.1:{app.http_port}/pixel.js", headers={"if-none-match": etag}) as response:
        assert response.status == 304
        assert await response.read() == b""
