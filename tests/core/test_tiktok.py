"""Tests for the TikTok adapter (request body and reply classification) and the shared postback types."""

import json
from typing import Any

import pytest

from server.core import limits, tiktok
from server.core.hashing import hash_email_tiktok, hash_external_id
from server.core.postback import (
    Classification,
    NetworkCredentials,
    Outcome,
    PostbackEvent,
    TransportError,
    classify_transport_error,
    decimal_units_text,
)
from server.core.types import AttemptStatus, EventType

CREDENTIALS = NetworkCredentials(access_token="tt-secret-token", pixel_id="CPIXEL123")
EVENT_TIME_US = 1_704_721_970_212_999  # 2024-01-08T13:52:50.212999Z


def purchase(**overrides: Any) -> PostbackEvent:
    fields: dict[str, Any] = {
        "dedup_id": "evt-001",
        "event_type": EventType.PURCHASE,
        "event_time_us": EVENT_TIME_US,
        "click_id": "E.C.P.ttclid-value",
        "user_id": "player-42",
        "email_sha256_tiktok": hash_email_tiktok("  Foo@Example.COM "),
        "email_sha256_reddit": "f" * 64,
        "ip_address": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11)",
        "landing_url": "https://game.example/?ttclid=E.C.P.ttclid-value",
        "value_micros": 9_990_000,
        "currency": "USD",
    }
    fields.update(overrides)
    return PostbackEvent(**fields)


def bare(event_type: EventType = EventType.GAME_LAUNCH, **overrides: Any) -> PostbackEvent:
    """An event with no optional field set, apart from the overrides."""
    fields: dict[str, Any] = {
        "dedup_id": "evt-bare",
        "event_type": event_type,
        "event_time_us": EVENT_TIME_US,
    }
    fields.update(overrides)
    return PostbackEvent(**fields)


def body_of(*events: PostbackEvent, test_code: str | None = None) -> dict[str, Any]:
    request = tiktok.build_request("https://business-api.tiktok.com", CREDENTIALS, events, test_code)
    return json.loads(request.body)


# Request


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        ("https://business-api.tiktok.com", "https://business-api.tiktok.com/open_api/v1.3/event/track/"),
        ("https://business-api.tiktok.com/", "https://business-api.tiktok.com/open_api/v1.3/event/track/"),
        ("http://127.0.0.1:1234/tiktok", "http://127.0.0.1:1234/tiktok/open_api/v1.3/event/track/"),
        ("http://127.0.0.1:1234/tiktok/", "http://127.0.0.1:1234/tiktok/open_api/v1.3/event/track/"),
    ],
)
def test_url_appends_path_with_trailing_slash(base_url: str, url: str) -> None:
    assert tiktok.build_request(base_url, CREDENTIALS, [purchase()]).url == url


def test_method_and_headers() -> None:
    request = tiktok.build_request("https://business-api.tiktok.com", CREDENTIALS, [purchase()])
    assert request.method == "POST"
    assert request.header("access-token") == "tt-secret-token"  # raw token, no Bearer
    assert request.header("Content-Type") == "application/json"
    assert request.header("Authorization") is None


def test_token_stays_out_of_repr() -> None:
    request = tiktok.build_request("https://business-api.tiktok.com", CREDENTIALS, [purchase()])
    assert "tt-secret-token" not in repr(request)
    assert "tt-secret-token" not in repr(CREDENTIALS)


def test_full_purchase_body_matches_the_spec_shape() -> None:
    assert body_of(purchase()) == {
        "event_source": "web",
        "event_source_id": "CPIXEL123",
        "data": [
            {
                "event": "Purchase",
                "event_time": 1704721970,
                "event_id": "evt-001",
                "user": {
                    "ttclid": "E.C.P.ttclid-value",
                    "email": ["321ba197033e81286fedb719d60d4ed5cecaed170733cb4a92013811afc0e3b6"],
                    "external_id": ["c3214538d133c9d934db63a435cddcae80ec8b6f073babcc7c3a02a17791be79"],
                    "ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0 (X11)",
                },
                "properties": {"value": 9.99, "currency": "USD"},
                "page": {"url": "https://game.example/?ttclid=E.C.P.ttclid-value"},
            }
        ],
    }


def test_body_is_compact_utf8_json() -> None:
    request = tiktok.build_request(
        "https://business-api.tiktok.com", CREDENTIALS, [purchase(user_agent="Spiel/1.0 (Über)")]
    )
    assert b": " not in request.body and b", " not in request.body
    assert "Spiel/1.0 (Über)".encode() in request.body


@pytest.mark.parametrize(
    ("event_type", "event_name"),
    [(EventType.GAME_LAUNCH, "CompleteRegistration"), (EventType.PURCHASE, "Purchase")],
)
def test_event_names(event_type: EventType, event_name: str) -> None:
    assert body_of(bare(event_type))["data"][0]["event"] == event_name


@pytest.mark.parametrize(
    ("event_time_us", "event_time_s"),
    [
        (1_704_721_970_999_999, 1704721970),  # rounded down, never up
        (1_704_721_970_000_000, 1704721970),
        (1_704_721_971_000_001, 1704721971),
    ],
)
def test_event_time_is_unix_seconds_rounded_down(event_time_us: int, event_time_s: int) -> None:
    assert body_of(bare(event_time_us=event_time_us))["data"][0]["event_time"] == event_time_s


def test_dedup_id_is_sent_unhashed_as_event_id() -> None:
    assert body_of(bare(dedup_id="conv-XYZ-9"))["data"][0]["event_id"] == "conv-XYZ-9"


@pytest.mark.parametrize(
    ("event", "has_properties"),
    [
        (purchase(), True),
        (purchase(value_micros=None, currency=None), False),
        (bare(EventType.PURCHASE), False),
        (bare(EventType.GAME_LAUNCH), False),
        # A launch never carries properties, even if a value slipped through.
        (bare(EventType.GAME_LAUNCH, value_micros=1_000_000, currency="USD"), False),
    ],
)
def test_properties_only_for_a_purchase_with_value(event: PostbackEvent, has_properties: bool) -> None:
    assert ("properties" in body_of(event)["data"][0]) is has_properties


def test_unknown_match_keys_and_page_are_omitted() -> None:
    sent = body_of(bare())["data"][0]
    assert sent == {
        "event": "CompleteRegistration",
        "event_time": 1704721970,
        "event_id": "evt-bare",
        "user": {},
    }


@pytest.mark.parametrize(
    ("overrides", "user"),
    [
        ({"click_id": "abc"}, {"ttclid": "abc"}),
        ({"user_id": "player-42"}, {"external_id": [hash_external_id("player-42")]}),
        ({"email_sha256_tiktok": "a" * 64}, {"email": ["a" * 64]}),
        ({"ip_address": "2001:DB8::1"}, {"ip": "2001:DB8::1"}),  # TikTok takes the IP raw
        ({"user_agent": "UA"}, {"user_agent": "UA"}),
        ({"email_sha256_reddit": "b" * 64}, {}),  # the Reddit hash never goes to TikTok
    ],
)
def test_each_match_key_alone(overrides: dict[str, Any], user: dict[str, Any]) -> None:
    assert body_of(bare(**overrides))["data"][0]["user"] == user


@pytest.mark.parametrize(
    ("value_micros", "value_text"),
    [
        (9_990_000, b'"value":9.99,'),
        (1, b'"value":0.000001,'),
        (0, b'"value":0,'),
        (1_234_567_890_000, b'"value":1234567.89,'),
        (1_000_000, b'"value":1,'),
        (100_000, b'"value":0.1,'),
        (123_456_789_012_345_678, b'"value":123456789012.345678,'),  # beyond float precision
    ],
)
def test_value_is_written_exactly(value_micros: int, value_text: bytes) -> None:
    request = tiktok.build_request(
        "https://business-api.tiktok.com", CREDENTIALS, [purchase(value_micros=value_micros)]
    )
    assert value_text in request.body


@pytest.mark.parametrize(
    ("micros", "text"),
    [(9_990_000, "9.99"), (1, "0.000001"), (0, "0"), (-2_500_000, "-2.5"), (10_000_000, "10")],
)
def test_decimal_units_text(micros: int, text: str) -> None:
    assert decimal_units_text(micros) == text


def test_test_event_code_is_top_level_only() -> None:
    body = body_of(purchase(), test_code="TEST12345")
    assert body["test_event_code"] == "TEST12345"
    assert "test_event_code" not in body["data"][0]
    assert "test_event_code" not in body_of(purchase())


@pytest.mark.parametrize("test_code", ["TEST1", "  "])
def test_a_test_request_holds_exactly_one_event(test_code: str) -> None:
    with pytest.raises(ValueError):
        tiktok.build_request("https://x", CREDENTIALS, [purchase(), purchase(dedup_id="evt-002")], test_code)


def test_blank_test_code_is_refused() -> None:
    with pytest.raises(ValueError):
        tiktok.build_request("https://x", CREDENTIALS, [purchase()], "")


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (2, True), (1000, True), (1001, False)])
def test_batch_limits(count: int, ok: bool) -> None:
    events = [bare(dedup_id=f"evt-{i}") for i in range(count)]
    if ok:
        body = json.loads(tiktok.build_request("https://x", CREDENTIALS, events).body)
        assert [e["event_id"] for e in body["data"]] == [f"evt-{i}" for i in range(count)]
    else:
        with pytest.raises(ValueError):
            tiktok.build_request("https://x", CREDENTIALS, events)
    assert tiktok.MAX_BATCH == 1000


def test_credentials_are_trimmed() -> None:
    request = tiktok.build_request("https://x", NetworkCredentials(" tok \n", " CPIX "), [bare()])
    assert request.header("Access-Token") == "tok"
    assert json.loads(request.body)["event_source_id"] == "CPIX"


@pytest.mark.parametrize("event_type", list(EventType))
def test_validation_event_is_recognisable_and_sendable(event_type: EventType) -> None:
    event = tiktok.validation_event(event_type, 1_704_721_970_212_000)
    assert event.dedup_id == "postbacks-credential-check-1704721970212000"
    assert event.event_type is event_type
    assert event.event_time_us == 1_704_721_970_212_000
    body = body_of(event, test_code="TEST1")
    assert body["data"][0]["user"]["email"] == [hash_email_tiktok("credential-check@postbacks.invalid")]


# Reply classification


def envelope(code: Any, message: str = "msg", request_id: str | None = "req-1") -> bytes:
    body: dict[str, Any] = {"code": code, "message": message, "data": {}}
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (200, envelope(0, "OK"), Outcome.SUCCESS, "0"),
        (200, envelope(20001, "partial"), Outcome.SUCCESS, "20001"),
        (200, envelope(40001), Outcome.FAILED_CREDENTIALS, "40001"),
        (200, envelope(40105), Outcome.FAILED_CREDENTIALS, "40105"),
        (200, envelope(40002), Outcome.FAILED_PAYLOAD, "40002"),
        (200, envelope(40100), Outcome.RETRY_THROTTLED, "40100"),
        (200, envelope(40003), Outcome.FAILED_PAYLOAD, "40003"),  # other 4xxxx
        (200, envelope(41000), Outcome.FAILED_PAYLOAD, "41000"),
        (200, envelope(50000), Outcome.RETRY_TRANSIENT, "50000"),
        (200, envelope(51002), Outcome.RETRY_TRANSIENT, "51002"),
        (200, envelope("40105"), Outcome.FAILED_CREDENTIALS, "40105"),  # code as a string
        (200, envelope(12345), Outcome.FAILED_PAYLOAD, "12345"),  # undocumented: fail visibly
        (200, b"<html>gateway</html>", Outcome.RETRY_TRANSIENT, None),
        (200, b"", Outcome.RETRY_TRANSIENT, None),
        (200, b"[1, 2]", Outcome.RETRY_TRANSIENT, None),
        (200, b'{"message": "no code"}', Outcome.RETRY_TRANSIENT, None),
        (200, envelope(True), Outcome.RETRY_TRANSIENT, None),
        (500, b"oops", Outcome.RETRY_TRANSIENT, None),
        (502, b"", Outcome.RETRY_TRANSIENT, None),
        (503, envelope(0), Outcome.RETRY_TRANSIENT, None),  # the HTTP status wins over a body
        (504, b"", Outcome.RETRY_TRANSIENT, None),
        (429, b"", Outcome.RETRY_THROTTLED, None),
        (401, b"", Outcome.FAILED_CREDENTIALS, None),
        (403, b"", Outcome.FAILED_CREDENTIALS, None),
        (400, b"", Outcome.FAILED_PAYLOAD, None),
        (404, b"", Outcome.FAILED_PAYLOAD, None),
        (408, b"", Outcome.RETRY_TRANSIENT, None),
        (302, b"", Outcome.RETRY_TRANSIENT, None),
    ],
)
def test_classification_table(status: int, body: bytes, outcome: Outcome, code: str | None) -> None:
    result = tiktok.classify_response(status, body, {})
    assert result.outcome is outcome
    assert result.network_code == code
    assert result.http_status == status
    assert result.message


def test_success_keeps_message_and_request_id() -> None:
    result = tiktok.classify_response(200, envelope(20001, "Partial success", "202401081352"), {})
    assert (result.outcome, result.message, result.request_id) == (
        Outcome.SUCCESS,
        "Partial success",
        "202401081352",
    )


def test_request_id_is_kept_on_failures() -> None:
    result = tiktok.classify_response(200, envelope(40002, "Invalid parameter", "req-77"), {})
    assert result.request_id == "req-77"
    assert result.message == "Invalid parameter"


def test_request_id_falls_back_to_log_id_header() -> None:
    result = tiktok.classify_response(502, b"bad gateway", {"x-tt-logid": "log-9"})
    assert result.request_id == "log-9"


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after_s"),
    [
        (429, b"", {"Retry-After": "7"}, 7.0),
        (503, b"", {"retry-after": "120"}, 120.0),
        (200, envelope(40100), {"Retry-After": "3"}, 3.0),
        (
            503,
            b"",
            {"Retry-After": "Mon, 08 Jan 2024 13:53:20 GMT", "Date": "Mon, 08 Jan 2024 13:52:50 GMT"},
            30.0,
        ),
        (503, b"", {"Retry-After": "Mon, 08 Jan 2024 13:53:20 GMT"}, None),  # no Date to measure against
        (
            503,
            b"",
            {"Retry-After": "Mon, 08 Jan 2024 13:52:00 GMT", "Date": "Mon, 08 Jan 2024 13:52:50 GMT"},
            0.0,
        ),
        (503, b"", {"Retry-After": "soon"}, None),
        (503, b"", {"Retry-After": "-5"}, 0.0),
        (503, b"", {}, None),
        (200, envelope(0), {"Retry-After": "7"}, None),  # only retries carry it
        (200, envelope(40002), {"Retry-After": "7"}, None),
    ],
)
def test_retry_after(status: int, body: bytes, headers: dict[str, str], retry_after_s: float | None) -> None:
    assert tiktok.classify_response(status, body, headers).retry_after_s == retry_after_s


def test_long_messages_are_cut_to_one_short_line() -> None:
    result = tiktok.classify_response(200, envelope(40002, "bad\nparam " + "x" * 1000), {})
    assert len(result.message) <= 200
    assert "\n" not in result.message
    assert result.message.startswith("bad param")


# Shared postback types


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.SUCCESS, AttemptStatus.SUCCESS),
        (Outcome.FAILED_PAYLOAD, AttemptStatus.FAILED),
        (Outcome.FAILED_CREDENTIALS, AttemptStatus.FAILED),
        (Outcome.RETRY_TRANSIENT, AttemptStatus.RETRIED),
        (Outcome.RETRY_THROTTLED, AttemptStatus.RETRIED),
    ],
)
def test_outcome_maps_to_attempt_status(outcome: Outcome, status: AttemptStatus) -> None:
    assert outcome.attempt_status is status


@pytest.mark.parametrize("kind", list(TransportError))
def test_transport_errors_are_transient(kind: TransportError) -> None:
    result = classify_transport_error(kind, "after 10 s")
    assert result == Classification(
        outcome=Outcome.RETRY_TRANSIENT, http_status=None, network_code=None, message=result.message
    )
    assert result.message.endswith("after 10 s")
    assert ("timed out" in result.message) is (kind is TransportError.TIMEOUT)


def test_value_and_currency_come_together() -> None:
    with pytest.raises(ValueError):
        bare(EventType.PURCHASE, value_micros=1_000_000)
    with pytest.raises(ValueError):
        bare(EventType.PURCHASE, currency="USD")


def test_a_long_code_or_request_id_is_cut_to_what_the_delivery_log_keeps() -> None:
    result = tiktok.classify_response(200, envelope(4 * 10**40, "odd", "r" * 300), {})
    assert result.network_code == str(4 * 10**40)[:limits.NETWORK_CODE]
    assert result.request_id == "r" * limits.NETWORK_REQUEST_ID
