"""Who may call what: an interceptor that checks each call's API key against the method's scope and game."""

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from server.api.errors import refusal
from server.core.access import Grant, KeyKind, Scope, bearer_key, game_of_name, is_well_formed, key_digest
from server.errors import PermissionDenied, ResourceExhausted, Unauthenticated

EVENTS = frozenset({Scope.EVENTS})
ADMIN = frozenset({Scope.ADMIN})

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


METHOD_RULES: dict[str, MethodRule] = {
    f"/postbacks.v1.{method}": MethodRule(scopes, field)
    for method, scopes, field in (
        ("EventService/IngestEvent", EVENTS, "parent"),
        ("EventService/BatchIngestEvents", EVENTS, "parent"),
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

    def __init__(self, lookup: GrantLookup, *, cache_s: float, development_mode: bool, max_streams_per_key: int):
        self._grants = GrantCache(lookup, cache_s)
        self._development_mode = development_mode
        self._max_streams_per_key = max_streams_per_key
        self._open_streams: Counter[str] = Counter()
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
        grant, reason = await self._authenticate(_call_authorization(handler_call_details.invocation_metadata))
        if reason:
            return guarded.refusals[reason]
        _CALL_GRANT.set(grant)
        return guarded.handler

    async def _authenticate(self, authorization: str | None) -> tuple[Grant | None, str | None]:
        """The grant of the key in an authorization header's value, or the reason (of REFUSALS) it is refused."""
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

    def _guard(self, handler: grpc.RpcMethodHandler, rule: MethodRule) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _authorize(rule, request)
                return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        inner_stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            grant = _authorize(rule, request)
            if self._open_streams[grant.key_id] >= self._max_streams_per_key:
                raise ResourceExhausted(
                    f"too many open streams for this API key: {self._max_streams_per_key} at once is the limit per "
                    "key on this server (setting max_streams_per_key); close one before opening another",
                    reason="TOO_MANY_STREAMS", metadata={"limit": str(self._max_streams_per_key)})
            self._open_streams[grant.key_id] += 1
            try:
                async for response in inner_stream(request, context):
                    yield response
            finally:
                self._open_streams[grant.key_id] -= 1
                if not self._open_streams[grant.key_id]:
                    del self._open_streams[grant.key_id]

        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                    handler.response_serializer)


def _authorize(rule: MethodRule, request: Any) -> Grant:
    """The call's grant, when it allows the method on the request's game."""
    grant = _CALL_GRANT.get()
    if grant is None:
        raise Unauthenticated(REFUSALS["API_KEY_MISSING"], reason="API_KEY_MISSING")
    game = game_of_name(_request_field(request, rule.game_field))
    if denial := grant.denial(rule.scopes, game):
        raise PermissionDenied(denial, reason="API_KEY_NOT_ALLOWED", metadata={"key_id": grant.key_id})
    return grant
