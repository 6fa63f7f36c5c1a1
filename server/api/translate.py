"""Translation between protobuf messages and domain values, with validation that names the exact proto field."""

import functools
import re

from google.protobuf import duration_pb2, timestamp_pb2

from postbacks.v1 import conversion_pb2, delivery_log_pb2, event_pb2, network_pb2
from server.core import hashing, limits
from server.core.events import (
    CLICK_ID_PARAMS,
    ISO_4217_CODES,
    MAX_FUTURE_US,
    EventKind,
    NewEvent,
    derive_click,
    parse_decimal_value,
)
from server.core.postback import decimal_units_text
from server.core.types import (
    AttemptStatus,
    DeliveryState,
    EventType,
    FailureReason,
    Network,
    NoPostbackReason,
)
from server.errors import InvalidArgument, Violations
from server.services.conversions import ConversionView, PostbackView
from server.services.ingest import IngestReceipt

MAX_ITEM_IDS = 100
MAX_BATCH_EVENTS = 1000

_GAME_ID = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{limits.GAME_ID - 1}}}"
_RESOURCE_ID = rf"[a-z0-9][a-z0-9-]{{0,{limits.RESOURCE_ID - 1}}}"
_EVENT_ID = rf"[^/\x00-\x1f]{{1,{limits.EVENT_ID}}}"
_GAME_NAME = re.compile(f"games/({_GAME_ID})")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")
# The range google.protobuf.Timestamp allows, 0001-01-01 to 9999-12-31: in microseconds it fits a BIGINT.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799

NETWORK_TO_PROTO = {Network.TIKTOK: network_pb2.NETWORK_TIKTOK, Network.REDDIT: network_pb2.NETWORK_REDDIT}
NETWORK_FROM_PROTO = {v: k for k, v in NETWORK_TO_PROTO.items()}
EVENT_TYPE_TO_PROTO = {
    EventType.GAME_LAUNCH: network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH,
    EventType.PURCHASE: network_pb2.CONVERSION_EVENT_TYPE_PURCHASE,
}
EVENT_TYPE_FROM_PROTO = {v: k for k, v in EVENT_TYPE_TO_PROTO.items()}
REASON_TO_PROTO = {r: conversion_pb2.NoPostbackReason.Value(f"NO_POSTBACK_REASON_{r.name}") for r in NoPostbackReason}
STATE_TO_PROTO = {s: conversion_pb2.PostbackState.Value(f"POSTBACK_STATE_{s.name}") for s in DeliveryState}
FAILURE_REASON_TO_PROTO = {r: conversion_pb2.PostbackFailureReason.Value(f"POSTBACK_FAILURE_REASON_{r.name}")
                           for r in FailureReason}
FAILURE_REASON_FROM_PROTO = {v: k for k, v in FAILURE_REASON_TO_PROTO.items()}
ATTEMPT_STATUS_TO_PROTO = {
    s: delivery_log_pb2.DeliveryAttemptStatus.Value(f"DELIVERY_ATTEMPT_STATUS_{s.name}") for s in AttemptStatus
}
ATTEMPT_STATUS_FROM_PROTO = {v: k for k, v in ATTEMPT_STATUS_TO_PROTO.items()}


# --- resource names -------------------------------------------------------------------------------------------

def parse_name(name: str, pattern: str, field_path: str, shape: str) -> tuple[str, ...]:
    """Splits a resource name against a pattern such as 'games/{game}/postbackConfigs/{id}'."""
    regex = "^" + pattern.replace("{game}", f"({_GAME_ID})").replace("{id}", f"({_RESOURCE_ID})").replace(
        "{event}", f"({_EVENT_ID})") + "$"
    match = re.match(regex, name)
    if not match:
        raise InvalidArgument.single(field_path, f"must be a resource name of the form {shape}; got {name[:200]!r}")
    return match.groups()


def parse_game(parent: str, field_path: str = "parent") -> str:
    if match := _GAME_NAME.fullmatch(parent):  # every ingest call parses one: precompiled
        return match[1]
    return parse_name(parent, "games/{game}", field_path, "games/{game}")[0]


def config_name(game_id: str, config_id: str) -> str:
    return f"games/{game_id}/postbackConfigs/{config_id}"


MAX_MASK_PATHS = 16


def mask_paths(mask, violations: Violations) -> list[str]:  # type: ignore[no-untyped-def]
    """An update mask's paths. A mask naming more fields than any resource has is refused without walking it."""
    paths = list(mask.paths)
    if len(paths) > MAX_MASK_PATHS:
        violations.add("update_mask", f"names {len(paths)} fields; at most {MAX_MASK_PATHS} are allowed")
    return paths[:MAX_MASK_PATHS]


def page_size(value: int, field_path: str = "page_size") -> int:
    """0 means the default; services cap the rest."""
    if value < 0:
        raise InvalidArgument.single(field_path, "must not be negative")
    return value


# --- times ------------------------------------------------------------------------------------------------------

def timestamp_to_us(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def is_valid_timestamp(ts: timestamp_pb2.Timestamp) -> bool:
    """Within Timestamp's own range: nanos past the second's end would make a later time than the seconds say."""
    return MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS and 0 <= ts.nanos < 1_000_000_000


INVALID_TIMESTAMP = "must be a valid timestamp from 0001-01-01 to 9999-12-31, with nanos from 0 to 999,999,999"


def optional_timestamp_to_us(msg, field_name: str, violations: Violations) -> int | None:  # type: ignore[no-untyped-def]
    """A request's Timestamp field in microseconds, None when unset; refused outside Timestamp's own range."""
    if not msg.HasField(field_name):
        return None
    ts = getattr(msg, field_name)
    if not is_valid_timestamp(ts):
        violations.add(field_name, INVALID_TIMESTAMP)
        return None
    return timestamp_to_us(ts)


def us_to_timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.seconds, micros = divmod(us, 1_000_000)
    ts.nanos = micros * 1000
    return ts


def duration_to_us(d: duration_pb2.Duration) -> int:
    return d.seconds * 1_000_000 + d.nanos // 1000


MAX_DURATION_SECONDS = 315_576_000_000  # about 10,000 years: Duration's own range


def is_valid_duration(d: duration_pb2.Duration) -> bool:
    """Within Duration's own range: nanos under a second, of the seconds' sign."""
    return (abs(d.seconds) <= MAX_DURATION_SECONDS and abs(d.nanos) < 1_000_000_000
            and not (d.seconds > 0 > d.nanos or d.seconds < 0 < d.nanos))


def us_to_duration(us: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.seconds, micros = divmod(us, 1_000_000)
    d.nanos = micros * 1000
    return d


# --- events -----------------------------------------------------------------------------------------------------

def text_problem(value: str, limit: int) -> str | None:
    """Why a (trimmed) text field is refused, or None. No id, URL, user agent or name holds a control character,
    and PostgreSQL cannot store NUL at all."""
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if _CONTROL_CHARACTER.search(value):
        return "must not contain control characters"
    return None


def _optional_text(value: str, field_path: str, limit: int, violations: Violations) -> str | None:
    value = value.strip()
    if problem := text_problem(value, limit):
        violations.add(field_path, problem)
    return value or None


def event_from_proto(msg: event_pb2.Event, path: str, now_us: int, violations: Violations) -> NewEvent | None:
    """Validates one event, adding every problem to `violations` under `path` (such as `events[3]`)."""
    before = len(violations.items)
    event_id = msg.event_id.strip()
    if not event_id:
        violations.add(f"{path}.event_id", "is required")
    elif not re.fullmatch(_EVENT_ID, event_id):
        violations.add(f"{path}.event_id", f"must be 1 to {limits.EVENT_ID} characters, without '/' or control characters")
    event_time_us = 0
    if not msg.HasField("event_time"):
        violations.add(f"{path}.event_time", "is required")
    elif not is_valid_timestamp(msg.event_time):
        violations.add(f"{path}.event_time", INVALID_TIMESTAMP)
    else:
        event_time_us = timestamp_to_us(msg.event_time)
        if event_time_us <= 0:
            violations.add(f"{path}.event_time", "must be after 1970-01-01")
        elif event_time_us > now_us + MAX_FUTURE_US:
            violations.add(f"{path}.event_time", "must not be more than 5 minutes in the future")
    user_id = _optional_text(msg.user_id, f"{path}.user_id", limits.PLAYER_ID, violations)
    anonymous_id = _optional_text(msg.anonymous_id, f"{path}.anonymous_id", limits.PLAYER_ID, violations)
    if not user_id and not anonymous_id:
        violations.add(f"{path}.user_id", "an event needs user_id, anonymous_id, or both")
    email_sha256 = email_sha256_reddit = None
    if msg.email:
        if len(msg.email) > limits.EMAIL or not hashing.looks_like_email(msg.email):
            violations.add(f"{path}.email", "must be an email address such as player@example.com")
        else:
            email_sha256 = hashing.hash_email_tiktok(msg.email)
            email_sha256_reddit = hashing.hash_email_reddit(msg.email)
    ip_address = None
    if msg.ip_address:
        ip_address = hashing.canonical_ip(msg.ip_address.strip()) if len(msg.ip_address) <= limits.IP_ADDRESS else None
        if ip_address is None:
            violations.add(f"{path}.ip_address", f"must be an IPv4 or IPv6 address of at most {limits.IP_ADDRESS} characters")
    user_agent = _optional_text(msg.user_agent, f"{path}.user_agent", limits.USER_AGENT, violations)

    kind_name = msg.WhichOneof("kind")
    fields: dict[str, object] = {}
    if kind_name is None:
        violations.add(f"{path}.kind", "exactly one of ad_click, identify, game_launch, purchase is required")
    elif kind_name == "ad_click":
        fields = _ad_click(msg.ad_click, f"{path}.ad_click", violations)
    elif kind_name == "identify" and not user_id:
        violations.add(f"{path}.user_id", "is required for an identify event")
    elif kind_name == "purchase":
        fields = _purchase(msg.purchase, f"{path}.purchase", violations)
    if len(violations.items) > before or kind_name is None:
        return None
    return NewEvent(
        event_id=event_id,
        kind=EventKind(kind_name),
        event_time_us=event_time_us,
        user_id=user_id,
        anonymous_id=anonymous_id,
        email_sha256=email_sha256,
        email_sha256_reddit=email_sha256_reddit,
        ip_address=ip_address,
        user_agent=user_agent,
        **fields,  # type: ignore[arg-type]
    )


def _ad_click(msg: event_pb2.AdClick, path: str, violations: Violations) -> dict[str, object]:
    network = None
    if msg.network != network_pb2.NETWORK_UNSPECIFIED:
        network = NETWORK_FROM_PROTO.get(msg.network)
        if network is None:
            violations.add(f"{path}.network", "must be NETWORK_TIKTOK or NETWORK_REDDIT")
    click_id = _optional_text(msg.click_id, f"{path}.click_id", limits.CLICK_ID, violations)
    landing_url = _optional_text(msg.landing_url, f"{path}.landing_url", limits.URL, violations)
    if click_id and not network and not landing_url:
        violations.add(f"{path}.network", "is required when click_id is given without a landing_url to derive it from")
    network, derived_id = derive_click(network, click_id, landing_url)
    # Its bound is an explicit click id's; and the URL's escapes are decoded, so a %00 in it is a NUL in the click id.
    if network and derived_id and derived_id != click_id and (problem := text_problem(derived_id, limits.CLICK_ID)):
        violations.add(f"{path}.landing_url", f"its {CLICK_ID_PARAMS[network]} parameter, the click id, {problem}")
    return {"network": network, "click_id": derived_id, "landing_url": landing_url}


def _purchase(msg: event_pb2.Purchase, path: str, violations: Violations) -> dict[str, object]:
    value_micros = None
    amount = msg.WhichOneof("amount")
    if amount == "value":
        try:
            value_micros = parse_decimal_value(msg.value)
        except ValueError as e:
            violations.add(f"{path}.value", str(e))
    elif amount == "value_micros":
        if msg.value_micros < 0:
            violations.add(f"{path}.value_micros", "must not be negative")
        else:
            value_micros = msg.value_micros
    currency = msg.currency.strip().upper() or None
    if currency and currency not in ISO_4217_CODES:
        violations.add(f"{path}.currency", f"must be an ISO 4217 currency code such as USD; got {msg.currency[:16]!r}")
    if amount and not currency:
        violations.add(f"{path}.currency", "is required when a value is given")
    if currency and not amount:
        violations.add(f"{path}.value", "is required when a currency is given")
    order_id = _optional_text(msg.order_id, f"{path}.order_id", limits.ORDER_ID, violations)
    if len(msg.item_ids) > MAX_ITEM_IDS:
        violations.add(f"{path}.item_ids", f"must hold at most {MAX_ITEM_IDS} ids")
    for i, item in enumerate(msg.item_ids[:MAX_ITEM_IDS]):
        if not item.strip() or len(item) > limits.ITEM_ID:
            violations.add(f"{path}.item_ids[{i}]", f"must be 1 to {limits.ITEM_ID} characters")
    return {"value_micros": value_micros, "currency": currency, "order_id": order_id,
            "item_ids": tuple(i.strip() for i in msg.item_ids)}


def events_from_proto(msgs, path: str, now_us: int) -> list[NewEvent]:  # type: ignore[no-untyped-def]
    violations = Violations()
    if not msgs:
        violations.add(path, "at least one event is required")
    if len(msgs) > MAX_BATCH_EVENTS:
        violations.add(path, f"at most {MAX_BATCH_EVENTS} events per call; got {len(msgs)}")
        violations.raise_if_any()
    events = [valid_event_from_proto(m, now_us) or event_from_proto(m, f"{path}[{i}]", now_us, violations)
              for i, m in enumerate(msgs)]
    violations.raise_if_any()
    return events  # type: ignore[return-value]


def single_event_from_proto(msg: event_pb2.Event, has_event: bool, now_us: int) -> NewEvent:
    if has_event and (event := valid_event_from_proto(msg, now_us)):
        return event
    violations = Violations()
    if not has_event:
        violations.add("event", "is required")
        violations.raise_if_any()
    event = event_from_proto(msg, "event", now_us, violations)
    violations.raise_if_any()
    return event  # type: ignore[return-value]


_EVENT_KINDS = {kind.value: kind for kind in EventKind}  # EventKind(name) is a slow lookup


def valid_event_from_proto(msg: event_pb2.Event, now_us: int) -> NewEvent | None:
    """The event when nothing at all is wrong with it, else None: then event_from_proto validates it again and names
    each problem. The same rules, without building field paths or messages; where a check here is cheaper but
    stricter (isprintable() also refuses characters the full rules allow), the full path has the last word."""
    event_id = msg.event_id.strip()
    if not (event_id and len(event_id) <= limits.EVENT_ID and "/" not in event_id and event_id.isprintable()):
        return None
    # An unset event_time reads as 0 and is refused here, so the full path reports it as missing.
    time = msg.event_time
    nanos = time.nanos
    event_time_us = time.seconds * 1_000_000 + nanos // 1000
    if not (0 < event_time_us <= now_us + MAX_FUTURE_US and 0 <= nanos < 1_000_000_000):
        return None
    user_id = msg.user_id.strip()
    anonymous_id = msg.anonymous_id.strip()
    if (not (user_id or anonymous_id) or len(user_id) > limits.PLAYER_ID or len(anonymous_id) > limits.PLAYER_ID
            or not user_id.isprintable() or not anonymous_id.isprintable()):
        return None
    email_sha256 = email_sha256_reddit = None
    if email := msg.email:
        if len(email) > limits.EMAIL or not hashing.looks_like_email(email):
            return None
        email_sha256 = hashing.hash_email_tiktok(email)
        email_sha256_reddit = hashing.hash_email_reddit(email)
    ip_address = None
    if (raw_ip := msg.ip_address) and (len(raw_ip) > limits.IP_ADDRESS
                                       or (ip_address := hashing.canonical_ip(raw_ip.strip())) is None):
        return None
    user_agent = msg.user_agent.strip()
    if len(user_agent) > limits.USER_AGENT or not user_agent.isprintable():
        return None
    kind_name = msg.WhichOneof("kind")
    network = click_id = landing_url = value_micros = currency = order_id = None
    item_ids: tuple[str, ...] = ()
    if kind_name == "ad_click":
        click = msg.ad_click
        if click.network != network_pb2.NETWORK_UNSPECIFIED and (network := NETWORK_FROM_PROTO.get(click.network)) is None:
            return None
        click_id = click.click_id.strip()
        landing_url = click.landing_url.strip()
        if (len(click_id) > limits.CLICK_ID or len(landing_url) > limits.URL or not click_id.isprintable()
                or not landing_url.isprintable() or (click_id and not network and not landing_url)):
            return None
        network, click_id = derive_click(network, click_id or None, landing_url or None)
        if click_id and (len(click_id) > limits.CLICK_ID or not click_id.isprintable()):  # derived from the URL
            return None
    elif kind_name == "purchase":
        purchase = msg.purchase
        amount = purchase.WhichOneof("amount")
        if amount == "value":
            try:
                value_micros = parse_decimal_value(purchase.value)
            except ValueError:
                return None
        elif amount == "value_micros":
            if (value_micros := purchase.value_micros) < 0:
                return None
        currency = purchase.currency.strip().upper()
        if bool(amount) != bool(currency) or (currency and currency not in ISO_4217_CODES):
            return None
        order_id = purchase.order_id.strip()
        if len(order_id) > limits.ORDER_ID or not order_id.isprintable():
            return None
        if raw_items := list(purchase.item_ids):  # one read of the repeated field: each read converts it again
            item_ids = tuple(item.strip() for item in raw_items)
            if len(raw_items) > MAX_ITEM_IDS or not all(item_ids) or max(map(len, raw_items)) > limits.ITEM_ID:
                return None
    elif kind_name is None or (kind_name == "identify" and not user_id):
        return None
    return NewEvent(event_id, _EVENT_KINDS[kind_name], event_time_us, user_id or None, anonymous_id or None, email_sha256,
                    email_sha256_reddit, ip_address, user_agent or None, network, click_id, landing_url or None,
                    value_micros, currency or None, order_id or None, item_ids)


# --- conversions ------------------------------------------------------------------------------------------------

def format_value(value_micros: int | None) -> str:
    return "" if value_micros is None else decimal_units_text(value_micros)


# A batch's receipts repeat the same receive and decide times and the same new postbacks: each is built once and the
# (never modified) dict shared by the messages made from it.
@functools.lru_cache(maxsize=256)
def _timestamp_fields(us: int) -> dict[str, int]:
    seconds, micros = divmod(us, 1_000_000)
    return {"seconds": seconds, "nanos": micros * 1000}


# Messages are built from plain dicts in one constructor call: upb then makes no intermediate message objects, which
# would cost more than the rest of a receipt's translation. Unset optional fields are left out, as proto3 omits them.

def conversion_fields(view: ConversionView) -> dict[str, object]:
    """A Conversion message's fields."""
    fields: dict[str, object] = {
        "name": f"games/{view.game_id}/conversions/{view.event_id}",
        "event_id": view.event_id,
        "event_type": EVENT_TYPE_TO_PROTO[view.event_type],
        "event_time": _timestamp_fields(view.event_time_us),
        "receive_time": _timestamp_fields(view.receive_time_us),
        "decision": (conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED if view.postback_owed
                     else conversion_pb2.CONVERSION_DECISION_NO_POSTBACK),
    }
    if view.user_id:
        fields["user_id"] = view.user_id
    if view.anonymous_id:
        fields["anonymous_id"] = view.anonymous_id
    if view.value_micros is not None:
        fields["value"] = decimal_units_text(view.value_micros)
    if view.currency:
        fields["currency"] = view.currency
    if view.no_postback_reason:
        fields["no_postback_reason"] = REASON_TO_PROTO[view.no_postback_reason]
    if view.decide_time_us is not None:
        fields["decide_time"] = _timestamp_fields(view.decide_time_us)
    if click := view.click:
        attributed: dict[str, object] = {"event": f"games/{view.game_id}/events/{click.event_id}",
                                         "network": NETWORK_TO_PROTO[click.network],
                                         "click_time": _timestamp_fields(click.click_time_us)}
        if click.click_id:
            attributed["click_id"] = click.click_id
        fields["attributed_click"] = attributed
    if view.postbacks:
        fields["postbacks"] = [_postback_fields(view.game_id, p) for p in view.postbacks]
    return fields


@functools.lru_cache(maxsize=256)
def _postback_fields(game_id: str, postback: PostbackView) -> dict[str, object]:
    fields: dict[str, object] = {
        "postback_config": config_name(game_id, postback.config_id),
        "network": NETWORK_TO_PROTO[postback.network],
        "state": conversion_pb2.POSTBACK_STATE_HELD if postback.hold_reason else STATE_TO_PROTO[postback.state],
        "attempt_count": postback.attempt_count,
    }
    if postback.last_attempt_time_us is not None:
        fields["last_attempt_time"] = _timestamp_fields(postback.last_attempt_time_us)
    if postback.next_attempt_time_us is not None:
        fields["next_attempt_time"] = _timestamp_fields(postback.next_attempt_time_us)
    if postback.last_error:
        fields["last_error"] = postback.last_error
    if postback.failure_reason:
        fields["failure_reason"] = FAILURE_REASON_TO_PROTO[postback.failure_reason]
    if postback.hold_reason:
        fields["hold_reason"] = postback.hold_reason
    return fields


def conversion_to_proto(view: ConversionView) -> conversion_pb2.Conversion:
    return conversion_pb2.Conversion(**conversion_fields(view))


def receipt_fields(receipt: IngestReceipt) -> dict[str, object]:
    """An IngestResult message's fields."""
    fields: dict[str, object] = {"name": f"games/{receipt.game_id}/events/{receipt.event_id}"}
    if receipt.duplicate:
        fields["duplicate"] = True
    if receipt.payload_mismatch:
        fields["payload_mismatch"] = True
    if receipt.conversion:
        fields["conversion"] = conversion_fields(receipt.conversion)
    return fields
