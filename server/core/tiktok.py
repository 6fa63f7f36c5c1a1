"""TikTok Events API 2.0 adapter: builds the track request and classifies TikTok's reply."""

from collections.abc import Mapping, Sequence
from typing import Any

from server.core import limits
from server.core.hashing import hash_email_tiktok, hash_external_id
from server.core.postback import (
    VALIDATION_DEDUP_PREFIX,
    VALIDATION_EMAIL,
    Classification,
    HttpRequest,
    NetworkCredentials,
    Outcome,
    PostbackEvent,
    check_batch_size,
    decimal_units_text,
    encode_json,
    header_value,
    json_number,
    json_object_with_array,
    parse_json_object,
    reply_text,
    retry_after_seconds,
    short_message,
)
from server.core.types import EventType

MAX_BATCH = 1000
TRACK_PATH = "/open_api/v1.3/event/track/"  # the trailing slash is part of TikTok's path
EVENT_NAMES: Mapping[EventType, str] = {
    EventType.GAME_LAUNCH: "CompleteRegistration",
    EventType.PURCHASE: "Purchase",
}

CODE_OK = 0
CODE_OK_WITH_WARNING = 20001
CODE_NO_PIXEL_PERMISSION = 40001
CODE_BAD_PARAMETER = 40002
CODE_TOO_MANY_REQUESTS = 40100
CODE_BAD_TOKEN = 40105
CREDENTIAL_CODES = frozenset({CODE_NO_PIXEL_PERMISSION, CODE_BAD_TOKEN})


def build_request(
    base_url: str,
    credentials: NetworkCredentials,
    events: Sequence[PostbackEvent],
    test_code: str | None = None,
) -> HttpRequest:
    """The POST for one batch. A test_code routes the (single) event to TikTok's test tooling."""
    return request_of_rendered(base_url, credentials, [render_event(event) for event in events], test_code)


def render_event(event: PostbackEvent) -> bytes:
    """The event's entry in a request's data: JSON, rendered once when its conversion is decided."""
    return encode_json(_event_payload(event))


def request_of_rendered(
    base_url: str,
    credentials: NetworkCredentials,
    rendered: Sequence[bytes],
    test_code: str | None = None,
) -> HttpRequest:
    """build_request for events already rendered (render_event): the same bytes."""
    check_batch_size(len(rendered), test_code, MAX_BATCH)
    payload: dict[str, Any] = {"event_source": "web", "event_source_id": credentials.pixel_id.strip()}
    if test_code is not None:
        payload["test_event_code"] = test_code
    return HttpRequest(
        method="POST",
        url=base_url.rstrip("/") + TRACK_PATH,
        headers=(
            ("Access-Token", credentials.access_token.strip()),
            ("Content-Type", "application/json"),
        ),
        body=json_object_with_array(payload, "data", rendered),
    )


def _event_payload(event: PostbackEvent) -> dict[str, Any]:
    user: dict[str, Any] = {}
    if event.click_id:
        user["ttclid"] = event.click_id
    if event.email_sha256_tiktok:
        user["email"] = [event.email_sha256_tiktok]
    if event.user_id:
        user["external_id"] = [hash_external_id(event.user_id)]
    if event.ip_address:
        user["ip"] = event.ip_address
    if event.user_agent:
        user["user_agent"] = event.user_agent
    payload: dict[str, Any] = {
        "event": EVENT_NAMES[event.event_type],
        "event_time": event.event_time_us // 1_000_000,
        "event_id": event.dedup_id,
        "user": user,
    }
    if event.event_type is EventType.PURCHASE and event.value_micros is not None and event.currency:
        payload["properties"] = {
            "value": json_number(decimal_units_text(event.value_micros)),
            "currency": event.currency,
        }
    if event.landing_url:
        payload["page"] = {"url": event.landing_url}
    return payload


def validation_event(event_type: EventType, now_us: int) -> PostbackEvent:
    """A synthetic event for save-time credential validation (sent with a test code or to production)."""
    return PostbackEvent(
        dedup_id=f"{VALIDATION_DEDUP_PREFIX}{now_us}",
        event_type=event_type,
        event_time_us=now_us,
        email_sha256_tiktok=hash_email_tiktok(VALIDATION_EMAIL),
    )


def classify_response(http_status: int, body: bytes, headers: Mapping[str, str]) -> Classification:
    """TikTok answers HTTP 200 for most errors: the envelope's code decides, not only the status."""
    envelope = parse_json_object(body)
    request_id = _request_id(envelope, headers)
    body_message = _body_message(envelope)

    def result(outcome: Outcome, code: str | None, message: str) -> Classification:
        retrying = outcome in (Outcome.RETRY_TRANSIENT, Outcome.RETRY_THROTTLED)
        return Classification(
            outcome=outcome,
            http_status=http_status,
            network_code=reply_text(code, limits.NETWORK_CODE),
            message=short_message(message),
            request_id=reply_text(request_id, limits.NETWORK_REQUEST_ID),
            retry_after_s=retry_after_seconds(headers) if retrying else None,
        )

    if http_status in (401, 403):
        return result(Outcome.FAILED_CREDENTIALS, None, body_message or f"HTTP {http_status}: not authorised")
    if http_status == 429:
        return result(Outcome.RETRY_THROTTLED, None, body_message or "HTTP 429: too many requests")
    if http_status >= 500 or http_status == 408:
        return result(Outcome.RETRY_TRANSIENT, None, body_message or f"HTTP {http_status}: server error")
    if 400 <= http_status < 500:
        return result(Outcome.FAILED_PAYLOAD, None, body_message or f"HTTP {http_status}: request refused")
    if not 200 <= http_status < 300:
        return result(Outcome.RETRY_TRANSIENT, None, f"unexpected HTTP {http_status}")
    if envelope is None:
        return result(Outcome.RETRY_TRANSIENT, None, f"HTTP {http_status} with a non-JSON body")
    code = _envelope_code(envelope)
    if code is None:
        return result(Outcome.RETRY_TRANSIENT, None, f"HTTP {http_status} without a result code")
    code_text = str(code)
    message = body_message or f"code {code}"
    if code in (CODE_OK, CODE_OK_WITH_WARNING):
        return result(Outcome.SUCCESS, code_text, message)
    if code in CREDENTIAL_CODES:
        return result(Outcome.FAILED_CREDENTIALS, code_text, message)
    if code == CODE_TOO_MANY_REQUESTS:
        return result(Outcome.RETRY_THROTTLED, code_text, message)
    if 50000 <= code <= 59999:
        return result(Outcome.RETRY_TRANSIENT, code_text, message)
    # 40002 and every other 4xxxx is a client error; any code outside TikTok's documented ranges is
    # treated the same way so an unknown answer fails visibly instead of retrying for a day.
    return result(Outcome.FAILED_PAYLOAD, code_text, message)


def _envelope_code(envelope: Mapping[str, Any]) -> int | None:
    code = envelope.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return None


def _body_message(envelope: Mapping[str, Any] | None) -> str:
    if envelope is None:
        return ""
    message = envelope.get("message")
    return message if isinstance(message, str) else ""


def _request_id(envelope: Mapping[str, Any] | None, headers: Mapping[str, str]) -> str | None:
    if envelope is not None and isinstance(envelope.get("request_id"), str) and envelope["request_id"]:
        return envelope["request_id"]
    # TikTok's edge tags every reply with a log id; it identifies the request when the body cannot.
    return header_value(headers, "X-Tt-Logid")
