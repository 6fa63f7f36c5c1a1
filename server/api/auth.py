"""Who may call what, whatever the transport: a call's key becomes a grant (authenticate), the grant is checked
against the method's scope, the request's game and, for publishable keys, its events (authorize). The gRPC
interceptor and the HTTP API both use these."""

import asyncio
import contextlib
import contextvars
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from server.api.errors import refusal
from server.core.access import Grant, KeyKind, Scope, bearer_key, game_of_name, is_well_formed, key_digest
from server.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated

EVENTS = frozenset({Scope.EVENTS})
ADMIN = frozenset({Scope.ADMIN})
INGEST = frozenset({Scope.EVENTS, Scope.CLIENT_EVENTS})
# A page sends a click or an identify at a time; a game client batches a few. A public key gets no more.
MAX_PUBLISHABLE_BATCH_EVENTS = 50

# Anyone may ask whether the server is up and what it serves.
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
_OPEN_PREFIXES = tuple(f"/{service}/" for service in OPEN_SERVICES)


@dataclass(frozen=True, slots=True)
class MethodRule:
    """The scopes that may call a method, and the request field whose resource name says which game it touches.
    The field is the one the servicer parses the game from, so the game checked is the game used."""

    scopes: frozenset[Scope]
    game_field: str
    # The request's event (singular field) or events (repeated field), whose kinds a publishable key is limited to.
    events_field: str = ""


METHOD_RULES: dict[str, MethodRule] = {
    f"/postbacks.v1.{method}": MethodRule(scopes, field, *events)
    for method, scopes, field, *events in (
        ("EventService/IngestEvent", INGEST, "parent", "event"),
        ("EventService/BatchIngestEvents", INGEST, "parent", "events"),
        # Support answers "why didn't my conversion reach TikTok?" with its admin key too.
        ("EventService/GetConversion", EVENTS | ADMIN, "name"),
        ("PostbackConfigService/CreatePostbackConfig", ADMIN, "parent"),
        ("PostbackConfigService/GetPostbackConfig", ADMIN, "name"),
        ("PostbackConfigService/ListPostbackConfigs", ADMIN, "parent"),
        ("PostbackConfigService/UpdatePostbackConfig", ADMIN, "postback_config.name"),
        ("PostbackConfigService/DeletePostbackConfig", ADMIN, "name"),
        ("PostbackConfigService/RotatePostbackCredentials", ADMIN, "name"),
        # The servicer refuses a `postback_config` of another game than `parent`.
        ("PostbackConfigService/ValidatePostbackCredentials", ADMIN, "parent"),
        ("PostbackConfigService/RetryFailedPostbacks", ADMIN, "name"),
        ("DeliveryLogService/ListDeliveryLogs", ADMIN, "parent"),
        ("DeliveryLogService/StreamDeliveryLogs", ADMIN, "parent"),
        ("PrivacyService/DeleteUserData", ADMIN, "parent"),
        ("GameSettingsService/GetGameSettings", ADMIN, "name"),
        ("GameSettingsService/UpdateGameSettings", ADMIN, "game_settings.name"),
    )
}

GrantLookup = Callable[[str], Awaitable[Grant | None]]


class GrantCache:
    """Remembers key lookups (unknown keys too) for a few seconds: ingest is the hot path, and revocation, done in
    another process, takes effect once the entry expires."""

    MAX_ENTRIES = 10_000

    def __init__(self, lookup: GrantLookup, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[Grant | None, float]] = {}
        self._pending: dict[str, asyncio.Future[Grant | None]] = {}

    async def get(self, key_sha256: str) -> Grant | None:
        now = self._clock()
        entry = self._entries.get(key_sha256)
        if entry is not None and entry[1] > now:
            return entry[0]
        # One lookup per key at a time: when an entry expires under load, the waiting calls share it.
        pending = self._pending.get(key_sha256)
        if pending is None:
            pending = self._pending[key_sha256] = asyncio.ensure_future(self._lookup(key_sha256))
            pending.add_done_callback(lambda _: self._pending.pop(key_sha256, None))
        grant = await asyncio.shield(pending)
        if len(self._entries) >= self.MAX_ENTRIES:
            # Callers inventing keys must not grow memory without bound; the real keys come back on their next call.
            self._entries.clear()
        self._entries[key_sha256] = (grant, now + self._ttl_s)
        return grant


def _request_field(request: Any, path: str) -> str:
    value = request
    for part in path.split("."):
        value = getattr(value, part)
    return value  # type: ignore[no-any-return]


def request_events(rule: MethodRule, request: Any) -> list[Any]:
    """The events a request carries, by the method's rule: none, one or a batch."""
    if not rule.events_field:
        return []
    value = getattr(request, rule.events_field)
    if isinstance(value, Message):
        return [value]
    return list(value)


def authorize(grant: Grant, rule: MethodRule, request: Any, *, over_http: bool) -> None:
    """Refuses (PERMISSION_DENIED) a call the grant does not allow: another scope or game, and for a publishable
    key, anything but the HTTP API and the events a client observes, at most MAX_PUBLISHABLE_BATCH_EVENTS at once."""
    if grant.is_publishable and not over_http:
        raise PermissionDenied("a publishable key works only over the HTTP API (--http-listen), where its origins and "
                               "rate limits apply; from a server, use an ingest key", reason="API_KEY_NOT_ALLOWED",
                               metadata={"key_id": grant.key_id})
    game = game_of_name(_request_field(request, rule.game_field))
    if denial := grant.denial(rule.scopes, game):
        raise PermissionDenied(denial, reason="API_KEY_NOT_ALLOWED", metadata={"key_id": grant.key_id})
    if grant.is_publishable and rule.events_field:
        events = request_events(rule, request)
        if denial := grant.event_kind_denial(event.WhichOneof("kind") for event in events):
            raise PermissionDenied(denial, reason="EVENT_KIND_NOT_ALLOWED", metadata={"key_id": grant.key_id})
        if len(events) > MAX_PUBLISHABLE_BATCH_EVENTS:
            raise InvalidArgument.single(rule.events_field, f"a publishable key may send at most "
                                                            f"{MAX_PUBLISHABLE_BATCH_EVENTS} events at once; got "
                                                            f"{len(events)}")


# Why a call's key is refused, by reason; each is UNAUTHENTICATED.
REFUSALS = {
    "API_KEY_MISSING": "an API key is required: send `authorization: Bearer <key>` (gRPC metadata or HTTP header)",
    "API_KEY_NOT_BEARER": "the authorization must read `Bearer <key>`: put `Bearer ` before the key",
    "API_KEY_INVALID": "the API key is unknown or revoked",
    "API_KEY_DEVELOPMENT_ONLY": "development keys work only on a server started in development mode "
                                "(--dev-key-file); use an ingest or admin key",
}


class Authenticator:
    """Turns the value of a call's authorization (gRPC metadata or HTTP header) into its key's grant, or into the
    reason (of REFUSALS) the call is refused: no key, no `Bearer `, an unknown or revoked key, a development key on a
    server not in development mode."""

    def __init__(self, lookup: GrantLookup, *, cache_s: float, development_mode: bool):
        self._grants = GrantCache(lookup, cache_s)
        self._development_mode = development_mode

    async def check(self, authorization: str | None) -> tuple[Grant | None, str | None]:
        """The grant, or the reason the call is refused."""
        if not authorization or not authorization.strip():
            return None, "API_KEY_MISSING"
        key = bearer_key(authorization)
        if key is None:
            return None, "API_KEY_NOT_BEARER"
        grant = await self._grants.get(key_digest(key)) if is_well_formed(key) else None
        if grant is None:
            return None, "API_KEY_INVALID"
        if grant.kind == KeyKind.DEVELOPMENT and not self._development_mode:
            return None, "API_KEY_DEVELOPMENT_ONLY"
        return grant, None

    async def authenticate(self, authorization: str | None) -> Grant:
        """The grant; UNAUTHENTICATED when the call is refused."""
        grant, reason = await self.check(authorization)
        if reason:
            raise Unauthenticated(REFUSALS[reason], reason=reason)
        return grant  # type: ignore[return-value]


class StreamSlots:
    """How many log streams each key has open on this server, across transports; refuses one past the limit."""

    def __init__(self, max_per_key: int):
        self._max_per_key = max_per_key
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, grant: Grant) -> Iterator[None]:
        if self._open[grant.key_id] >= self._max_per_key:
            raise ResourceExhausted(
                f"too many open streams for this API key: {self._max_per_key} at once is the limit per key on this "
                "server (setting max_streams_per_key); close one before opening another",
                reason="TOO_MANY_STREAMS", metadata={"limit": str(self._max_per_key)})
        self._open[grant.key_id] += 1
        try:
            yield
        finally:
            self._open[grant.key_id] -= 1
            if not self._open[grant.key_id]:
                del self._open[grant.key_id]


def _call_authorization(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for name, value in metadata or ():
        if name == "authorization":
            return value  # type: ignore[return-value]
    return None


# Why a call's key is refused, by reason; each is UNAUTHENTICATED.
REFUSALS = {
    "API_KEY_MISSING": "an API key is required: send the metadata `authorization: Bearer <key>`",
    "API_KEY_NOT_BEARER": "the authorization metadata must read `Bearer <key>`: put `Bearer ` before the key",
    "API_KEY_INVALID": "the API key is unknown or revoked",
    "API_KEY_DEVELOPMENT_ONLY": "development keys work only on a server started in development mode "
                                "(--dev-key-file); use an ingest or admin key",
}

# The grant of the call's key, found by intercept_service before the request is read. grpc.aio runs a call's
# interceptors and then its handler in one task of their own, so the handler sees the value its call set; unset,
# the handler refuses (fails closed).
_CALL_GRANT: contextvars.ContextVar[Grant | None] = contextvars.ContextVar("call_grant", default=None)


@dataclass(frozen=True, slots=True)
class _GuardedMethod:
    """A method's handler behind the key check, and its refusals; built once per method."""

    handler: grpc.RpcMethodHandler
    refusals: dict[str, grpc.RpcMethodHandler]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Guards every method but the open ones. A call without a valid key is UNAUTHENTICATED from its metadata alone,
    before its request is read: its body is neither decoded nor kept. A key outside the method's scope or the
    request's game is PERMISSION_DENIED, checked in the handler, where the request (and so its resource name) is
    decoded. The ErrorInterceptor must come first in the server's interceptors, to turn the refusals into rich
    status."""

    def __init__(self, authenticator: Authenticator, stream_slots: StreamSlots):
        self._authenticator = authenticator
        self._stream_slots = stream_slots
        self._guarded: dict[str, _GuardedMethod] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        guarded = self._guarded.get(method)  # built once per method: the key is read from each call's own metadata
        if guarded is None:
            handler = await continuation(handler_call_details)
            if handler is None or method.startswith(_OPEN_PREFIXES):
                return handler
            rule = METHOD_RULES.get(method)
            if rule is None or handler.request_streaming:
                return None  # fails closed: a method without a rule is not served at all (UNIMPLEMENTED)
            guarded = self._guarded[method] = _GuardedMethod(self._guard(handler, rule), {
                reason: refusal(Unauthenticated(message, reason=reason), response_streaming=handler.response_streaming)
                for reason, message in REFUSALS.items()})
        grant, reason = await self._authenticator.check(_call_authorization(handler_call_details.invocation_metadata))
        if reason:
            return guarded.refusals[reason]
        _CALL_GRANT.set(grant)
        return guarded.handler

    def _guard(self, handler: grpc.RpcMethodHandler, rule: MethodRule) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _call_grant(rule, request)
                return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        inner_stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            grant = _call_grant(rule, request)
            with self._stream_slots.hold(grant):
                async for response in inner_stream(request, context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                    handler.response_serializer)


def _call_grant(rule: MethodRule, request: Any) -> Grant:
    """The call's grant, when it allows the method on the request."""
    grant = _CALL_GRANT.get()
    if grant is None:
        raise Unauthenticated(REFUSALS["API_KEY_MISSING"], reason="API_KEY_MISSING")
    authorize(grant, rule, request, over_http=False)
    return grant
