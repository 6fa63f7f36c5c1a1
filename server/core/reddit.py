"""Reddit Conversions API v3 adapter: builds the conversion_events request and classifies Reddit's reply."""

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from server.core import limits
from server.core.hashing import canonical_ip, hash_email_reddit, hash_external_id, sha256_hex
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
USER_AGENT = "postbacks-service/0.1 (+conversion postbacks)"
ACTION_SOURCE = "WEBSITE"
EVENT_TYPES: Mapping[EventType, Mapping[str, str]] = {
    EventType.GAME_LAUNCH: {"tracking_type": "CUSTOM", "custom_event_name": "game_launch"},
    EventType.PURCHASE: {"tracking_type": "PURCHASE"},
}


def conversion_path(pixel_id: str) -> str:
    return f"/api/v3/pixels/{quote(pixel_id.strip(), safe='')}/conversion_events"


def has_match_key(event: PostbackEvent) -> bool:
    """Reddit matches only on a click id or a hashed email; without either the event must not be sent."""
    return bool(event.click_id or event.email_sha256_reddit)


def build_request(
    base_url: str,
    credentials: NetworkCredentials,
    events: Sequence[PostbackEvent],
    test_code: str | None = None,
) -> HttpRequest:
    """The POST for one batch. A test_code (Reddit's test id) routes the single event to the test tooling.

    Raises ValueError for a bad batch size or an event without a match key: Reddit would refuse the whole
    batch for it, so the caller must skip such events (recording why) before building the request.
    """
    return request_of_rendered(base_url, credentials, [render_event(event) for event in events], test_code)


def render_event(event: PostbackEvent) -> bytes:
    """The event's entry in a request's events: JSON, rendered once when its conversion is decided. Raises
    ValueError for an event without a match key, which Reddit would refuse (and the whole batch with it)."""
    if not has_match_key(event):
        raise ValueError("every Reddit conversion needs a click_id or a hashed email")
    return encode_json(_event_payload(event))


def request_of_rendered(
    base_url: str,
    credentials: NetworkCredentials,
    rendered: Sequence[bytes],
    test_code: str | None = None,
) -> HttpRequest:
    """build_request for events already rendered (render_event): the same bytes."""
    check_batch_size(len(rendered), test_code, MAX_BATCH)
    data: dict[str, Any] = {}
    if test_code is not None:
        data["test_id"] = test_code
    return HttpRequest(
        method="POST",
        url=base_url.rstrip("/") + conversion_path(credentials.pixel_id),
        headers=(
            ("Authorization", f"Bearer {credentials.access_token.strip()}"),
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
        ),
        body=b'{"data":' + json_object_with_array(data, "events", rendered) + b"}",
    )


def _event_payload(event: PostbackEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_at": event.event_time_us // 1_000,
        "action_source": ACTION_SOURCE,
    }
    if event.click_id:
        payload["click_id"] = event.click_id
    payload["type"] = dict(EVENT_TYPES[event.event_type])
    user: dict[str, Any] = {}
    if event.email_sha256_reddit:
        user["email"] = event.email_sha256_reddit
    if event.user_id:
        user["external_id"] = hash_external_id(event.user_id)
    canonical = canonical_ip(event.ip_address) if event.ip_address else None
    if canonical is not None:  # an unparsable address could never match, so it is left out
        user["ip_address"] = sha256_hex(canonical)
    if event.user_agent:
        user["user_agent"] = event.user_agent
    payload["user"] = user
    metadata: dict[str, Any] = {"conversion_id": event.dedup_id}
    if event.event_type is EventType.PURCHASE and event.value_micros is not None and event.currency:
        metadata["value"] = json_number(decimal_units_text(event.value_micros))
        metadata["currency"] = event.currency
    payload["metadata"] = metadata
    return payload


def validation_event(event_type: EventType, now_us: int) -> PostbackEvent:
    """A synthetic event for save-time credential validation (sent with a test id or to production)."""
    return PostbackEvent(
        dedup_id=f"{VALIDATION_DEDUP_PREFIX}{now_us}",
        event_type=event_type,
        event_time_us=now_us,
        email_sha256_reddit=hash_email_reddit(VALIDATION_EMAIL),
    )


def classify_response(http_status: int, body: bytes, headers: Mapping[str, str]) -> Classification:
    parsed = parse_json_object(body)
    code, explanation = _error_details(parsed, body)
    request_id = header_value(headers, "X-Request-Id")

    def result(outcome: Outcome, message: str, invalid: tuple[int, ...] = ()) -> Classification:
        retrying = outcome in (Outcome.RETRY_TRANSIENT, Outcome.RETRY_THROTTLED)
        return Classification(
            outcome=outcome,
            http_status=http_status,
            network_code=reply_text(code, limits.NETWORK_CODE),
            message=short_message(message),
            request_id=reply_text(request_id, limits.NETWORK_REQUEST_ID),
            retry_after_s=retry_after_seconds(headers) if retrying else None,
            invalid_event_indexes=invalid,
        )

    if 200 <= http_status < 300:
        return result(Outcome.SUCCESS, explanation or "accepted")
    if http_status == 400:
        return result(
            Outcome.FAILED_PAYLOAD, explanation or "HTTP 400: invalid event(s)", _invalid_indexes(parsed)
        )
    if http_status in (401, 403, 404):
        return result(Outcome.FAILED_CREDENTIALS, explanation or f"HTTP {http_status}: not authorised")
    if http_status == 429:
        return result(Outcome.RETRY_THROTTLED, explanation or "HTTP 429: too many requests")
    if http_status >= 500 or http_status == 408:
        return result(Outcome.RETRY_TRANSIENT, explanation or f"HTTP {http_status}: server error")
    if 400 <= http_status < 500:
        return result(Outcome.FAILED_PAYLOAD, explanation or f"HTTP {http_status}: request refused")
    return result(Outcome.RETRY_TRANSIENT, f"unexpected HTTP {http_status}")


def _error_details(parsed: Mapping[str, Any] | None, body: bytes) -> tuple[str | None, str]:
    """(error code, explanation) from a JSON error such as {"error": {"code": .., "message": ..}}, or the text."""
    if parsed is None:
        return None, body.decode("utf-8", errors="replace").strip()
    code: str | None = None
    message = ""
    error = parsed.get("error")
    if isinstance(error, Mapping):
        if isinstance(error.get("code"), str | int) and not isinstance(error.get("code"), bool):
            code = str(error["code"])
        message = _first_text(error, ("message", "explanation", "reason"))
    elif isinstance(error, str | int) and not isinstance(error, bool):
        code = str(error)
    message = message or _first_text(parsed, ("message", "explanation", "reason"))
    return code, message or (code or "")


def _first_text(mapping: Mapping[str, Any], keys: Sequence[str]) -> str:
    return next((mapping[key] for key in keys if isinstance(mapping.get(key), str) and mapping[key]), "")


def _invalid_indexes(parsed: Mapping[str, Any] | None) -> tuple[int, ...]:
    """Indexes from an `invalid_events` list (plain ints or objects with an index), wherever Reddit nests it."""
    if parsed is None:
        return ()
    candidates = [parsed, parsed.get("data"), parsed.get("error")]
    for holder in candidates:
        if isinstance(holder, Mapping) and isinstance(holder.get("invalid_events"), list):
            return tuple(sorted({i for item in holder["invalid_events"] if (i := _index(item)) is not None}))
    return ()


def _index(item: Any) -> int | None:
    if isinstance(item, int) and not isinstance(item, bool):
        return item if item >= 0 else None
    if isinstance(item, Mapping):
        for key in ("index", "event_index"):
            value = item.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None
