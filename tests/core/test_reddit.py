"""Tests for the Reddit adapter: request body, headers and reply classification."""

import json
from typing import Any

import pytest

from server.core import limits, reddit
from server.core.hashing import hash_email_reddit, hash_external_id, sha256_hex
from server.core.postback import NetworkCredentials, Outcome, PostbackEvent
from server.core.types import EventType

CREDENTIALS = NetworkCredentials(access_token="rd-secret-token", pixel_id="a2_abc123")
EVENT_TIME_US = 1_704_721_970_212_999
EMAIL_HASH = hash_email_reddit("Al.ice$+Apple@Example.Com")


def purchase(**overrides: Any) -> PostbackEvent:
    fields: dict[str, Any] = {
        "dedup_id": "evt-001",
        "event_type": EventType.PURCHASE,
        "event_time_us": EVENT_TIME_US,
        "click_id": "rdt-click-1",
        "user_id": "player-42",
        "email_sha256_tiktok": "e" * 64,
        "email_sha256_reddit": EMAIL_HASH,
        "ip_address": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11)",
        "landing_url": "https://game.example/?rdt_cid=rdt-click-1",
        "value_micros": 9_990_000,
        "currency": "USD",
    }
    fields.update(overrides)
    return PostbackEvent(**fields)


def launch(**overrides: Any) -> PostbackEvent:
    fields: dict[str, Any] = {
        "dedup_id": "evt-launch",
        "event_type": EventType.GAME_LAUNCH,
        "event_time_us": EVENT_TIME_US,
        "click_id": "rdt-click-2",
    }
    fields.update(overrides)
    return PostbackEvent(**fields)


def body_of(*events: PostbackEvent, test_code: str | None = None) -> dict[str, Any]:
    return json.loads(reddit.build_request("https://ads-api.reddit.com", CREDENTIALS, events, test_code).body)


# Request


@pytest.mark.parametrize(
    ("base_url", "pixel_id", "url"),
    [
        (
            "https://ads-api.reddit.com",
            "a2_abc123",
            "https://ads-api.reddit.com/api/v3/pixels/a2_abc123/conversion_events",
        ),
        (
            "https://ads-api.reddit.com/",
            "a2_abc123",
            "https://ads-api.reddit.com/api/v3/pixels/a2_abc123/conversion_events",
        ),
        (
            "http://127.0.0.1:9/reddit",
            " a2_abc123\n",
            "http://127.0.0.1:9/reddit/api/v3/pixels/a2_abc123/conversion_events",
        ),
        (
            "http://h",
            "a2_x/../y",
            "http://h/api/v3/pixels/a2_x%2F..%2Fy/conversion_events",
        ),  # cannot escape the path
    ],
)
def test_url_holds_the_pixel_id(base_url: str, pixel_id: str, url: str) -> None:
    request = reddit.build_request(base_url, NetworkCredentials("t", pixel_id), [launch()])
    assert request.url == url


def test_method_and_headers() -> None:
    request = reddit.build_request("https://ads-api.reddit.com", CREDENTIALS, [launch()])
    assert request.method == "POST"
    assert request.header("authorization") == "Bearer rd-secret-token"
    assert request.header("Content-Type") == "application/json"
    user_agent = request.header("User-Agent")
    assert user_agent is not None and user_agent.startswith("postbacks-service/")
    assert "rd-secret-token" not in repr(request)


def test_full_purchase_body_matches_the_spec_shape() -> None:
    assert body_of(purchase()) == {
        "data": {
            "events": [
                {
                    "event_at": 1704721970212,
                    "action_source": "WEBSITE",
                    "click_id": "rdt-click-1",
                    "type": {"tracking_type": "PURCHASE"},
                    "user": {
                        "email": "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
                        "external_id": "c3214538d133c9d934db63a435cddcae80ec8b6f073babcc7c3a02a17791be79",
                        "ip_address": sha256_hex("203.0.113.7"),
                        "user_agent": "Mozilla/5.0 (X11)",
                    },
                    "metadata": {"conversion_id": "evt-001", "value": 9.99, "currency": "USD"},
                }
            ]
        }
    }


def test_game_launch_is_a_custom_event_without_value() -> None:
    sent = body_of(launch(value_micros=5_000_000, currency="EUR"))["data"]["events"][0]
    assert sent["type"] == {"tracking_type": "CUSTOM", "custom_event_name": "game_launch"}
    assert sent["metadata"] == {"conversion_id": "evt-launch"}


def test_purchase_without_value_has_only_the_conversion_id() -> None:
    sent = body_of(purchase(value_micros=None, currency=None))["data"]["events"][0]
    assert sent["metadata"] == {"conversion_id": "evt-001"}


@pytest.mark.parametrize(
    ("event_time_us", "event_at_ms"),
    [(1_704_721_970_212_999, 1704721970212), (1_704_721_970_000_000, 1704721970000), (1_000, 1)],
)
def test_event_at_is_unix_milliseconds(event_time_us: int, event_at_ms: int) -> None:
    assert body_of(launch(event_time_us=event_time_us))["data"]["events"][0]["event_at"] == event_at_ms


def test_click_id_key_is_omitted_when_unknown() -> None:
    sent = body_of(launch(click_id=None, email_sha256_reddit=EMAIL_HASH))["data"]["events"][0]
    assert "click_id" not in sent
    assert sent["user"] == {"email": EMAIL_HASH}


def test_minimal_event_sends_only_what_is_known() -> None:
    assert body_of(launch())["data"]["events"][0] == {
        "event_at": 1704721970212,
        "action_source": "WEBSITE",
        "click_id": "rdt-click-2",
        "type": {"tracking_type": "CUSTOM", "custom_event_name": "game_launch"},
        "user": {},
        "metadata": {"conversion_id": "evt-launch"},
    }


@pytest.mark.parametrize(
    ("overrides", "user"),
    [
        ({"user_id": "  player-42 "}, {"external_id": hash_external_id("player-42")}),
        ({"ip_address": "2001:0DB8:0:0::1"}, {"ip_address": sha256_hex("2001:db8::1")}),
        ({"ip_address": "::ffff:203.0.113.7"}, {"ip_address": sha256_hex("203.0.113.7")}),
        ({"ip_address": "not-an-ip"}, {}),  # could never match, so not sent
        ({"user_agent": "UA/1"}, {"user_agent": "UA/1"}),
        ({"email_sha256_tiktok": "a" * 64}, {}),  # the TikTok hash never goes to Reddit
        ({"landing_url": "https://x"}, {}),
    ],
)
def test_each_match_key_alone(overrides: dict[str, Any], user: dict[str, Any]) -> None:
    assert body_of(launch(**overrides))["data"]["events"][0]["user"] == user


def test_conversion_id_is_never_hashed() -> None:
    sent = body_of(launch(dedup_id="Conv-ABC-1"))["data"]["events"][0]
    assert sent["metadata"]["conversion_id"] == "Conv-ABC-1"


def test_only_spec_fields_are_sent() -> None:
    body = body_of(purchase())
    event = body["data"]["events"][0]
    assert set(body) == {"data"}
    assert set(body["data"]) == {"events"}
    assert set(event) == {"event_at", "action_source", "click_id", "type", "user", "metadata"}
    assert set(event["user"]) == {"email", "external_id", "ip_address", "user_agent"}
    assert set(event["metadata"]) == {"conversion_id", "value", "currency"}


@pytest.mark.parametrize(
    ("value_micros", "value_text"),
    [
        (9_990_000, b'"value":9.99,'),
        (1, b'"value":0.000001,'),
        (0, b'"value":0,'),
        (1_234_567_890_000, b'"value":1234567.89,'),
    ],
)
def test_value_is_decimal_units_written_exactly(value_micros: int, value_text: bytes) -> None:
    request = reddit.build_request("https://x", CREDENTIALS, [purchase(value_micros=value_micros)])
    assert value_text in request.body


def test_test_id_sits_inside_data_only_when_given() -> None:
    body = body_of(launch(), test_code="t2_testid")
    assert body["data"]["test_id"] == "t2_testid"
    assert "test_id" not in body["data"]["events"][0]
    assert set(body) == {"data"}
    assert "test_id" not in body_of(launch())["data"]


def test_a_test_request_holds_exactly_one_event() -> None:
    with pytest.raises(ValueError):
        reddit.build_request("https://x", CREDENTIALS, [launch(), launch(dedup_id="b")], "t2_testid")


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (1000, True), (1001, False)])
def test_batch_limits(count: int, ok: bool) -> None:
    events = [launch(dedup_id=f"evt-{i}") for i in range(count)]
    if ok:
        body = json.loads(reddit.build_request("https://x", CREDENTIALS, events).body)
        assert len(body["data"]["events"]) == count
    else:
        with pytest.raises(ValueError):
            reddit.build_request("https://x", CREDENTIALS, events)
    assert reddit.MAX_BATCH == 1000


@pytest.mark.parametrize(
    ("overrides", "sendable"),
    [
        ({}, True),
        ({"click_id": None, "email_sha256_reddit": EMAIL_HASH}, True),
        ({"click_id": None}, False),
        ({"click_id": None, "user_id": "player-42", "ip_address": "203.0.113.7"}, False),
        ({"click_id": None, "email_sha256_tiktok": "a" * 64}, False),
    ],
)
def test_a_conversion_needs_click_id_or_email(overrides: dict[str, Any], sendable: bool) -> None:
    event = launch(**overrides)
    assert reddit.has_match_key(event) is sendable
    if not sendable:
        with pytest.raises(ValueError):
            reddit.build_request("https://x", CREDENTIALS, [event])


@pytest.mark.parametrize("event_type", list(EventType))
def test_validation_event_is_recognisable_and_sendable(event_type: EventType) -> None:
    event = reddit.validation_event(event_type, 1_704_721_970_212_000)
    assert event.dedup_id == "postbacks-credential-check-1704721970212000"
    assert reddit.has_match_key(event)
    body = body_of(event, test_code="t2_x")
    assert body["data"]["events"][0]["metadata"]["conversion_id"] == event.dedup_id


# Reply classification


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b'{"message": "Successfully processed 1 conversion events."}', Outcome.SUCCESS),
        (201, b"", Outcome.SUCCESS),
        (204, b"", Outcome.SUCCESS),
        (400, b'{"error": {"code": 400, "message": "invalid action_source: web"}}', Outcome.FAILED_PAYLOAD),
        (401, b"Authorization Required", Outcome.FAILED_CREDENTIALS),
        (401, b'{"error": "UNAUTHORIZED"}', Outcome.FAILED_CREDENTIALS),
        (403, b'{"error": {"code": 403, "message": "no access to pixel"}}', Outcome.FAILED_CREDENTIALS),
        (404, b'{"error": {"code": 404, "message": "pixel not found"}}', Outcome.FAILED_CREDENTIALS),
        (429, b"", Outcome.RETRY_THROTTLED),
        (500, b"", Outcome.RETRY_TRANSIENT),
        (502, b"<html>bad gateway</html>", Outcome.RETRY_TRANSIENT),
        (503, b"", Outcome.RETRY_TRANSIENT),
        (504, b"", Outcome.RETRY_TRANSIENT),
        (408, b"", Outcome.RETRY_TRANSIENT),
        (413, b"", Outcome.FAILED_PAYLOAD),
        (422, b"", Outcome.FAILED_PAYLOAD),
        (302, b"", Outcome.RETRY_TRANSIENT),
    ],
)
def test_classification_table(status: int, body: bytes, outcome: Outcome) -> None:
    result = reddit.classify_response(status, body, {})
    assert result.outcome is outcome
    assert result.http_status == status
    assert result.message


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (401, b"Authorization Required", None, "Authorization Required"),
        (401, b'{"error": "UNAUTHORIZED"}', "UNAUTHORIZED", "UNAUTHORIZED"),
        (401, b'{"message": "Unauthorized", "error": 401}', "401", "Unauthorized"),
        (
            403,
            b'{"error": {"code": 403, "message": "no access to pixel a2_x"}}',
            "403",
            "no access to pixel a2_x",
        ),
        (404, b"  pixel\nnot found  ", None, "pixel not found"),
        (
            400,
            b'{"error": {"code": 400, "message": "JSON error \\"unknown field\\""}}',
            "400",
            'JSON error "unknown field"',
        ),
    ],
)
def test_the_body_explanation_is_kept(status: int, body: bytes, code: str | None, message: str) -> None:
    result = reddit.classify_response(status, body, {})
    assert (result.network_code, result.message) == (code, message)


def test_explanation_is_truncated() -> None:
    result = reddit.classify_response(403, b"denied " * 500, {})
    assert result.outcome is Outcome.FAILED_CREDENTIALS
    assert len(result.message) <= 200
    assert result.message.startswith("denied denied")


@pytest.mark.parametrize(
    ("body", "indexes"),
    [
        (b'{"invalid_events": [{"index": 2, "error": "x"}, {"index": 0}]}', (0, 2)),
        (b'{"invalid_events": [3, 1, 3]}', (1, 3)),
        (b'{"error": {"message": "bad", "invalid_events": [{"event_index": 4}]}}', (4,)),
        (b'{"data": {"invalid_events": [0]}}', (0,)),
        (b'{"invalid_events": [{"index": -1}, {"index": "2"}, true, "x"]}', ()),
        (b'{"error": {"code": 400, "message": "bad"}}', ()),
        (b"not json", ()),
    ],
)
def test_invalid_event_indexes_from_a_400(body: bytes, indexes: tuple[int, ...]) -> None:
    result = reddit.classify_response(400, body, {})
    assert result.outcome is Outcome.FAILED_PAYLOAD
    assert result.invalid_event_indexes == indexes


@pytest.mark.parametrize(
    ("status", "headers", "retry_after_s"),
    [
        (429, {"Retry-After": "30"}, 30.0),
        (429, {"Retry-After": "1.5"}, 1.5),
        (
            503,
            {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", "Date": "Wed, 21 Oct 2015 07:26:00 GMT"},
            120.0,
        ),
        (500, {"Retry-After": "10"}, 10.0),  # any retry honours it
        (429, {}, None),
        (400, {"Retry-After": "10"}, None),
        (401, {"Retry-After": "10"}, None),
        (200, {"Retry-After": "10"}, None),
    ],
)
def test_retry_after(status: int, headers: dict[str, str], retry_after_s: float | None) -> None:
    assert reddit.classify_response(status, b"", headers).retry_after_s == retry_after_s


def test_request_id_header_is_kept() -> None:
    assert reddit.classify_response(200, b"{}", {"x-request-id": "abc"}).request_id == "abc"


def test_a_long_code_or_request_id_is_cut_to_what_the_delivery_log_keeps() -> None:
    result = reddit.classify_response(400, json.dumps({"error": {"code": "E" * 100}}).encode(),
                                      {"X-Request-Id": "r" * 300})
    assert result.network_code == "E" * limits.NETWORK_CODE
    assert result.request_id == "r" * limits.NETWORK_REQUEST_ID
