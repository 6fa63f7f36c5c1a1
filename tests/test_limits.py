"""Every string field of every request at its limit and one past it, on SQLite and PostgreSQL: at the limit the
call gets its domain answer (OK where the value is kept: the database takes it), one past it INVALID_ARGUMENT naming
the field, never INTERNAL. The fields are found by walking the request descriptors, so a new one without a limit
here fails the test."""

import dataclasses
from collections.abc import Iterator

import grpc
from google.protobuf import (
    descriptor,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message,
    message_factory,
)

from postbacks.v1 import (
    delivery_log_service_pb2,
    event_pb2,
    event_service_pb2,
    game_settings_pb2,
    game_settings_service_pb2,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
    privacy_service_pb2,
)
from server.app import SERVICE_NAMES
from server.core import limits
from tests import helpers as h
from tests.conftest import running_app
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name

FD = descriptor.FieldDescriptor
OK = grpc.StatusCode.OK
GAME = "g" * limits.GAME_ID  # every call at the limit works in a game whose id is at its limit
CONFIG = f"games/{GAME}/postbackConfigs/{'c' * limits.RESOURCE_ID}"
DELETED_CONFIG = f"games/{GAME}/postbackConfigs/{'d' * limits.RESOURCE_ID}"
CONVERSION = f"games/{GAME}/conversions/{'e' * limits.EVENT_ID}"
TOO_LONG_GAME = "g" * (limits.GAME_ID + 1)


@dataclasses.dataclass(frozen=True)
class Bound:
    """A field's longest acceptable value and a value just past its bound; `at_limit` are the answers allowed at the
    limit (OK unless the value names nothing that exists, or is not a token the service issued)."""

    longest: str
    too_long: str
    at_limit: frozenset[grpc.StatusCode] = frozenset({OK})
    field: str = ""  # the violation's field when it is not the field's own path


def length(limit: int, char: str = "a", **kwargs) -> Bound:  # type: ignore[no-untyped-def]
    return Bound(char * limit, char * (limit + 1), **kwargs)


def ignored() -> Bound:
    """An output-only field of a message a request carries: any value is ignored, however long."""
    return Bound("x" * 10_000, "")


def email() -> Bound:
    domain = "@example.com"
    return Bound("a" * (limits.EMAIL - len(domain)) + domain, "a" * (limits.EMAIL + 1 - len(domain)) + domain)


def ip_address() -> Bound:
    # The zone id makes the longest address as sent; it is dropped from the one kept.
    address = "fe80::1%"
    return Bound(address + "e" * (limits.IP_ADDRESS - len(address)), address + "e" * (limits.IP_ADDRESS + 1 - len(address)))


def landing_url() -> Bound:
    # With a click id at its own limit in it: the database keeps both.
    url = "https://game.example/?ttclid=" + "t" * limits.CLICK_ID + "&utm_content="
    return Bound(url + "u" * (limits.URL - len(url)), url + "u" * (limits.URL + 1 - len(url)))


def name(longest: str, too_long: str, **kwargs) -> Bound:  # type: ignore[no-untyped-def]
    return Bound(longest, too_long, **kwargs)


def config_name(longest: str = CONFIG) -> Bound:
    return name(longest, f"games/{GAME}/postbackConfigs/{'c' * (limits.RESOURCE_ID + 1)}")


def token() -> Bound:
    return length(limits.PAGE_TOKEN, "A", at_limit=frozenset({grpc.StatusCode.INVALID_ARGUMENT}))


PARENT = name(f"games/{GAME}", f"games/{TOO_LONG_GAME}")
EVENT_FIELDS = {
    "event_id": length(limits.EVENT_ID, "e"),
    "user_id": length(limits.PLAYER_ID, "u"),
    "anonymous_id": length(limits.PLAYER_ID, "v"),
    "email": email(),
    "ip_address": ip_address(),
    "user_agent": length(limits.USER_AGENT),
    "ad_click.click_id": length(limits.CLICK_ID, "k"),
    "ad_click.landing_url": landing_url(),
    # Kept as integer micros and a code: the bounds are the largest amount and the codes' length.
    "purchase.value": Bound("9223372036854.775807", "9223372036854.775808"),
    "purchase.currency": Bound("USD", "USDX"),
    "purchase.order_id": length(limits.ORDER_ID, "o"),
    "purchase.item_ids": length(limits.ITEM_ID, "i", field="events[0].purchase.item_ids[0]"),
}
CREDENTIALS = {"access_token": length(limits.ACCESS_TOKEN, "t"), "pixel_id": length(limits.PIXEL_ID, "P")}
LOG_PARENT = name(CONFIG, f"games/{TOO_LONG_GAME}/postbackConfigs/c")

BOUNDS: dict[str, dict[str, Bound]] = {
    "IngestEvent": {"parent": PARENT, **{f"event.{f}": b for f, b in EVENT_FIELDS.items()}},
    "BatchIngestEvents": {"parent": PARENT, **{f"events.{f}": b for f, b in EVENT_FIELDS.items()}},
    "GetConversion": {"name": name(CONVERSION, f"games/{GAME}/conversions/{'e' * (limits.EVENT_ID + 1)}")},
    "CreatePostbackConfig": {
        "parent": PARENT, "postback_config_id": length(limits.RESOURCE_ID, "n"),
        "postback_config.name": ignored(), "postback_config.display_name": length(limits.DISPLAY_NAME),
        "postback_config.access_token_hint": ignored(), "postback_config.pixel_id": ignored(),
        **{f"postback_config.credentials.{f}": b for f, b in CREDENTIALS.items()},
        "test_code": length(limits.TEST_CODE, "T"),
    },
    "GetPostbackConfig": {"name": config_name()},
    "ListPostbackConfigs": {"parent": PARENT, "page_token": token()},
    "UpdatePostbackConfig": {
        "postback_config.name": config_name(), "postback_config.display_name": length(limits.DISPLAY_NAME),
        # Credentials change only through RotatePostbackCredentials: an update ignores them.
        "postback_config.credentials.access_token": ignored(), "postback_config.credentials.pixel_id": ignored(),
        "postback_config.access_token_hint": ignored(), "postback_config.pixel_id": ignored(),
        "update_mask.paths": Bound("trigger_events", "trigger_eventsx", field="update_mask"),
    },
    "DeletePostbackConfig": {"name": config_name(DELETED_CONFIG)},
    "RotatePostbackCredentials": {
        "name": config_name(), **{f"credentials.{f}": b for f, b in CREDENTIALS.items()},
        "test_code": length(limits.TEST_CODE, "T"),
    },
    "ValidatePostbackCredentials": {
        "parent": PARENT, "postback_config": config_name(), **{f"credentials.{f}": b for f, b in CREDENTIALS.items()},
        "test_code": length(limits.TEST_CODE, "T"),
    },
    "RetryFailedPostbacks": {"name": config_name()},
    "ListDeliveryLogs": {"parent": LOG_PARENT, "page_token": token()},
    "StreamDeliveryLogs": {"parent": LOG_PARENT, "resume_token": token()},
    "DeleteUserData": {"parent": PARENT, "user_id": length(limits.PLAYER_ID, "u"),
                       "anonymous_id": length(limits.PLAYER_ID, "v"), "email": email()},
    "GetGameSettings": {"name": name(f"games/{GAME}/settings", f"games/{TOO_LONG_GAME}/settings")},
    "UpdateGameSettings": {
        "game_settings.name": name(f"games/{GAME}/settings", f"games/{TOO_LONG_GAME}/settings"),
        "update_mask.paths": Bound("attribution_lookback", "attribution_lookbackx", field="update_mask"),
    },
}


def base_request(rpc: str, path: str, serial: int) -> message.Message:
    """A valid request of the RPC, with new ids where a repeat would be a duplicate."""
    event = event_pb2.Event(event_id=f"lim-{serial}", event_time=h.ts(60), user_id="u", anonymous_id="v",
                            email="p@example.com", ip_address="203.0.113.9", user_agent="UA")
    if ".ad_click." in path:
        event.ad_click.CopyFrom(event_pb2.AdClick(network=network_pb2.NETWORK_TIKTOK, click_id="K1",
                                                  landing_url="https://game.example/"))
    else:
        event.purchase.CopyFrom(event_pb2.Purchase(value="1.50", currency="USD", order_id="o1", item_ids=["i1"]))
    config = postback_config_pb2.PostbackConfig(
        display_name="limits", network=network_pb2.NETWORK_TIKTOK, trigger_events=[
            network_pb2.CONVERSION_EVENT_TYPE_PURCHASE],
        credentials=postback_config_pb2.PostbackCredentials(access_token=h.TIKTOK_TOKEN, pixel_id="CTPIXEL1"))
    parent = f"games/{GAME}"
    return {
        "IngestEvent": lambda: event_service_pb2.IngestEventRequest(parent=parent, event=event),
        "BatchIngestEvents": lambda: event_service_pb2.BatchIngestEventsRequest(parent=parent, events=[event]),
        "GetConversion": lambda: event_service_pb2.GetConversionRequest(name=CONVERSION),
        "CreatePostbackConfig": lambda: postback_config_service_pb2.CreatePostbackConfigRequest(
            parent=parent, postback_config=config, postback_config_id=f"lim{serial}"),
        "GetPostbackConfig": lambda: postback_config_service_pb2.GetPostbackConfigRequest(name=CONFIG),
        "ListPostbackConfigs": lambda: postback_config_service_pb2.ListPostbackConfigsRequest(parent=parent),
        "UpdatePostbackConfig": lambda: postback_config_service_pb2.UpdatePostbackConfigRequest(
            postback_config=postback_config_pb2.PostbackConfig(name=CONFIG, display_name="updated", trigger_events=[
                network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH]),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])),
        "DeletePostbackConfig": lambda: postback_config_service_pb2.DeletePostbackConfigRequest(name=DELETED_CONFIG),
        "RotatePostbackCredentials": lambda: postback_config_service_pb2.RotatePostbackCredentialsRequest(
            name=CONFIG, credentials=postback_config_pb2.PostbackCredentials(access_token=h.TIKTOK_TOKEN)),
        "ValidatePostbackCredentials": lambda: postback_config_service_pb2.ValidatePostbackCredentialsRequest(
            parent=parent, network=network_pb2.NETWORK_TIKTOK, credentials=config.credentials),
        "RetryFailedPostbacks": lambda: postback_config_service_pb2.RetryFailedPostbacksRequest(name=CONFIG),
        "ListDeliveryLogs": lambda: delivery_log_service_pb2.ListDeliveryLogsRequest(parent=CONFIG),
        "StreamDeliveryLogs": lambda: delivery_log_service_pb2.StreamDeliveryLogsRequest(parent=CONFIG),
        "DeleteUserData": lambda: privacy_service_pb2.DeleteUserDataRequest(parent=parent, user_id="nobody"),
        "GetGameSettings": lambda: game_settings_service_pb2.GetGameSettingsRequest(name=f"{parent}/settings"),
        "UpdateGameSettings": lambda: game_settings_service_pb2.UpdateGameSettingsRequest(
            game_settings=game_settings_pb2.GameSettings(
                name=f"{parent}/settings", attribution_lookback=duration_pb2.Duration(seconds=3 * 86_400)),
            update_mask=field_mask_pb2.FieldMask(paths=["attribution_lookback"])),
    }[rpc]()


def string_fields(desc: descriptor.Descriptor, prefix: str = "") -> Iterator[str]:
    for field in desc.fields:
        if field.type == FD.TYPE_STRING:
            yield prefix + field.name
        elif field.type == FD.TYPE_MESSAGE:
            yield from string_fields(field.message_type, f"{prefix}{field.name}.")


def every_rpc() -> dict[str, tuple[str, descriptor.MethodDescriptor]]:
    pool = descriptor_pool.Default()
    return {m.name: (f"/{service}/{m.name}", m) for service in SERVICE_NAMES
            for m in pool.FindServiceByName(service).methods}


def test_every_string_field_of_every_request_has_a_bound_here() -> None:
    walked = {rpc: set(string_fields(method.input_type)) for rpc, (_, method) in every_rpc().items()}
    assert walked == {rpc: set(bounds) for rpc, bounds in BOUNDS.items()}


def with_value(request: message.Message, path: str, value: str) -> message.Message:
    *parents, leaf = path.split(".")
    target = request
    for part in parents:
        child = getattr(target, part)
        target = (child[0] if len(child) else child.add()) if target.DESCRIPTOR.fields_by_name[part].is_repeated else child
    field = target.DESCRIPTOR.fields_by_name[leaf]
    if field.is_repeated:
        del getattr(target, leaf)[:]
        getattr(target, leaf).append(value)
    else:
        setattr(target, leaf, value)
    return request


def violation_field(rpc: str, path: str, bound: Bound) -> str:
    if bound.field:
        return bound.field.replace("events[0]", "event") if rpc == "IngestEvent" else bound.field
    return path.replace("events.", "events[0].", 1)


async def call(channel: grpc.aio.Channel, path: str, method: descriptor.MethodDescriptor,
               request: message.Message) -> grpc.aio.AioRpcError | None:
    response_type = message_factory.GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                          response_deserializer=response_type.FromString)(request, timeout=30)
            await stream.read()  # the backlog or a heartbeat: the stream is open
            stream.cancel()
        else:
            await channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                      response_deserializer=response_type.FromString)(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def test_every_string_field_at_its_limit_and_one_past_it(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    rpcs = every_rpc()
    failures: list[str] = []
    async with running_app(settings_for(tmp_path, database_url, fake_network)) as app, \
            h.authorized_channel(app) as channel:
        for config in (CONFIG, DELETED_CONFIG):
            await h.create_config(channel, GAME, config_id=config.rsplit("/", 1)[1])
        await h.ingest(channel, GAME, h.launch(CONVERSION.rsplit("/", 1)[1], user_id="u"))
        serial = 0
        for rpc, bounds in BOUNDS.items():
            path, method = rpcs[rpc]
            for field, bound in bounds.items():
                serial += 1
                error = await call(channel, path, method, with_value(base_request(rpc, field, serial), field,
                                                                     bound.longest))
                code = error.code() if error else OK
                if code not in bound.at_limit:
                    failures.append(f"{rpc} {field} at its limit ({len(bound.longest)}): {code.name} "
                                    f"{(error.details() if error else '')!r:.300}")
                if not bound.too_long:
                    continue
                serial += 1
                error = await call(channel, path, method, with_value(base_request(rpc, field, serial), field,
                                                                     bound.too_long))
                expected = violation_field(rpc, field, bound)
                if error is None or error.code() != grpc.StatusCode.INVALID_ARGUMENT \
                        or expected not in h.field_violations(error):
                    failures.append(f"{rpc} {field} past its limit ({len(bound.too_long)}): "
                                    f"{error.code().name if error else 'OK'}, expected a violation of {expected}: "
                                    f"{(error.details() if error else '')!r:.300}")
    assert not failures, "\n".join(failures)
