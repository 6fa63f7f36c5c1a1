"""The postbacks.v1 services over the Connect protocol: the gRPC servicers answer, authorization and error mapping
are the transport-neutral ones."""

import contextvars
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectrpc import _codec
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from postbacks.v1 import (
    delivery_log_service_connect,
    event_service_connect,
    game_settings_service_connect,
    postback_config_service_connect,
    privacy_service_connect,
)
from server.api.auth import METHOD_RULES, StreamSlots, authorize, request_events
from server.api.errors import connect_error_of
from server.core import limits
from server.core.access import Grant


@dataclass(frozen=True, slots=True)
class HttpCall:
    """What the HTTP front (server.web.http_api) learnt of a call before its body was read."""

    grant: Grant
    client_address: str  # publishable keys only: the caller's own address
    user_agent: str


# Set by the HTTP front for the one task that runs the call; the interceptor below reads it (unset: refused).
CURRENT_CALL: contextvars.ContextVar[HttpCall | None] = contextvars.ContextVar("http_call", default=None)

# The generated ASGI application of each service and the attribute of App's servicer that answers it.
SERVICES = (
    (event_service_connect.EventServiceASGIApplication, "events"),
    (postback_config_service_connect.PostbackConfigServiceASGIApplication, "configs"),
    (game_settings_service_connect.GameSettingsServiceASGIApplication, "game_settings"),
    (delivery_log_service_connect.DeliveryLogServiceASGIApplication, "delivery_logs"),
    (privacy_service_connect.PrivacyServiceASGIApplication, "privacy"),
)


class ServicerAdapter:
    """Answers a Connect service's methods (`ingest_event`) with the gRPC servicer's (`IngestEvent`), which only
    translate and never read their gRPC context."""

    def __init__(self, servicer: object):
        self._servicer = servicer

    def __getattr__(self, name: str) -> Callable[[Any, RequestContext], Any]:
        method = getattr(self._servicer, re.sub(r"(?:^|_)([a-z])", lambda m: m[1].upper(), name))
        return lambda request, ctx: method(request, None)


def _call(ctx: RequestContext) -> tuple[HttpCall, str]:
    call = CURRENT_CALL.get()
    if call is None:  # only the HTTP front calls these applications; fail closed if anything else does
        raise ConnectError(Code.UNAUTHENTICATED, "an API key is required")
    return call, f"/{ctx.method().service_name}/{ctx.method().name}"


def _authorize(call: HttpCall, method: str, request: Message) -> None:
    rule = METHOD_RULES[method]
    authorize(call.grant, rule, request, over_http=True)
    if call.grant.is_publishable:
        # A public key's caller is the browser or game client itself: what it claims about itself is not believed.
        for event in request_events(rule, request):
            event.ip_address = call.client_address
            event.user_agent = call.user_agent[:limits.USER_AGENT]


class AccessInterceptor:
    """Authorizes each call with the grant the HTTP front found, and turns whatever a call raises into the Connect
    error the gRPC side would have sent."""

    def __init__(self, stream_slots: StreamSlots):
        self._stream_slots = stream_slots

    async def intercept_unary(self, call_next: Callable[[Any, RequestContext], Awaitable[Any]], request: Any,
                              ctx: RequestContext) -> Any:
        call, method = _call(ctx)
        try:
            _authorize(call, method, request)
            return await call_next(request, ctx)
        except Exception as e:
            raise connect_error_of(e, method) from None

    async def intercept_server_stream(self, call_next: Callable[[Any, RequestContext], AsyncIterator[Any]],
                                      request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        call, method = _call(ctx)
        try:
            _authorize(call, method, request)
            with self._stream_slots.hold(call.grant):
                async for response in call_next(request, ctx):
                    yield response
        except Exception as e:
            raise connect_error_of(e, method) from None


class _StrictJsonCodec:
    """connect-python 0.9 answers a body that is not a message of the method's type with `unknown` (HTTP 500); the
    caller's mistake is INVALID_ARGUMENT, as on the gRPC side. Responses are compact JSON."""

    def __init__(self, name: str):
        self._name = name

    def name(self) -> str:
        return self._name

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        try:
            json_format.Parse(data, message)
        except (json_format.ParseError, UnicodeDecodeError) as e:
            raise ConnectError(Code.INVALID_ARGUMENT, f"the request is not valid JSON for {type(message).__name__}: "
                                                      f"{str(e)[:300]}") from None
        return message


class _StrictBinaryCodec:
    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        try:
            message.ParseFromString(data)
        except DecodeError as e:
            raise ConnectError(Code.INVALID_ARGUMENT, f"the request is not a valid protobuf message: {e}") from None
        return message


def _install_strict_codecs() -> None:
    # connect-python 0.9 (pinned) has no codec option: its registry is the one place codecs are chosen.
    for name in list(_codec._codecs):
        _codec._codecs[name] = _StrictBinaryCodec() if name == "proto" else _StrictJsonCodec(name)


_install_strict_codecs()


def connect_applications(servicers: dict[str, object], stream_slots: StreamSlots,
                         read_max_bytes: int) -> dict[str, Any]:
    """Each service's Connect application, by service name (`postbacks.v1.EventService`)."""
    interceptors = [AccessInterceptor(stream_slots)]
    apps = {}
    for application, servicer in SERVICES:
        app = application(ServicerAdapter(servicers[servicer]), interceptors=interceptors,  # type: ignore[arg-type]
                          read_max_bytes=read_max_bytes, compressions=())
        apps[app.path.strip("/")] = app
    return apps
