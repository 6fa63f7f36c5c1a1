"""The HTTP API's front: routes to the Connect services and the pixel, authenticates before a body is read,
enforces publishable keys' origins and limits, and answers CORS."""

import asyncio
import hashlib
import pathlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from connectrpc._protocol import ConnectWireError

from server.api.auth import METHOD_RULES, Authenticator
from server.api.errors import to_connect_error
from server.core.access import Grant
from server.core.client_address import Network, client_address
from server.core.rate_limit import TokenBuckets, retry_after_header
from server.errors import DomainError, PermissionDenied, ResourceExhausted
from server.web.connect import CURRENT_CALL, HttpCall

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_PUBLISHABLE_BODY_BYTES = 64 * 1024
PIXEL = (pathlib.Path(__file__).parent / "pixel.js").read_bytes()
PIXEL_ETAG = f'"{hashlib.sha256(PIXEL).hexdigest()[:20]}"'.encode()
# A browser may reuse a preflight's answer this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_S = 7200
_CORS_ALLOWED_HEADERS = b"authorization, content-type, connect-protocol-version, connect-timeout-ms"


class OriginList:
    """Every origin some valid publishable key lists, re-read after `ttl_s` like a key lookup: a preflight carries
    no key, so it is answered for these."""

    def __init__(self, load: Callable[[], Awaitable[frozenset[str]]], ttl_s: float):
        self._load = load
        self._ttl_s = ttl_s
        self._origins: frozenset[str] = frozenset()
        self._expiry = 0.0
        self._pending: asyncio.Future[frozenset[str]] | None = None

    async def allows(self, origin: str) -> bool:
        now = time.monotonic()
        if now >= self._expiry:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._load())
            pending = self._pending
            try:
                self._origins = await asyncio.shield(pending)
                self._expiry = now + self._ttl_s
            finally:
                if self._pending is pending and pending.done():
                    self._pending = None
        return origin in self._origins


class _BodyLimit:
    """The request body, read at most `limit` bytes far: a larger one is refused as soon as it shows."""

    def __init__(self, receive: Receive, limit: int):
        self._receive = receive
        self._limit = self._left = limit

    async def __call__(self) -> dict[str, Any]:
        message = await self._receive()
        self._left -= len(message.get("body", b""))
        if self._left < 0:
            raise to_connect_error(_too_large(self._limit))
        return message


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name; a repeated one keeps its values joined by commas, as HTTP allows."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers[name] = headers[name] + b"," + value if name in headers else value
    return headers


def _too_large(limit: int) -> ResourceExhausted:
    return ResourceExhausted(f"the request body is larger than {limit} bytes, the most this key may send",
                             reason="REQUEST_TOO_LARGE", metadata={"limit_bytes": str(limit)})


class HttpApi:
    """The ASGI application of the HTTP listener."""

    def __init__(self, connect_apps: dict[str, Any], authenticator: Authenticator, origins: OriginList, *,
                 trusted_proxies: tuple[Network, ...], rate_per_ip: float, rate_per_key: float, max_body_bytes: int,
                 clock: Callable[[], float] = time.monotonic):
        self._apps = connect_apps
        self._authenticator = authenticator
        self._origins = origins
        self._trusted_proxies = trusted_proxies
        self._per_address = TokenBuckets(rate_per_ip, max(1.0, 2 * rate_per_ip))
        self._per_key = TokenBuckets(rate_per_key, max(1.0, 2 * rate_per_key))
        self._max_body_bytes = max_body_bytes
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = _headers(scope)
        if path == "/pixel.js":
            return await self._pixel(method, headers, send)
        # Only methods with an access rule are served (fail closed), as on the gRPC side.
        app = self._apps.get(path.split("/")[1]) if path in METHOD_RULES else None
        if app is None:
            return await _plain(send, 404, b"not found\n")
        origin = headers.get(b"origin", b"").decode("latin-1")
        cors = await self._cors_headers(origin)
        if method == "OPTIONS":
            return await self._preflight(cors, send)
        if method != "POST":
            return await _plain(send, 405, b"the API takes POST requests (the Connect protocol)\n",
                                [(b"allow", b"POST, OPTIONS")])
        try:
            call, body_limit = await self._admit(scope, headers, origin)
        except DomainError as e:
            return await _error(send, e, cors)
        token = CURRENT_CALL.set(call)
        try:
            await app(scope, _BodyLimit(receive, body_limit), _with_headers(send, cors))
        finally:
            CURRENT_CALL.reset(token)

    async def _admit(self, scope: Scope, headers: dict[bytes, bytes], origin: str) -> tuple[HttpCall, int]:
        """Everything known before the body is read: the key, and for a publishable key its origin and rate
        limits. Returns the call and the largest body it may send."""
        authorization = headers.get(b"authorization")
        grant = await self._authenticator.authenticate(authorization.decode("latin-1") if authorization else None)
        if origin and not grant.is_publishable:
            # Browsers send Origin and servers do not: a secret key in a web page is readable by every visitor.
            raise PermissionDenied("a secret key was sent from a web page, where every visitor can read it: revoke "
                                   "it (keys revoke), and use a publishable key in pages", reason="SECRET_KEY_IN_PAGE",
                                   metadata={"key_id": grant.key_id})
        limit, address = self._max_body_bytes, ""
        if grant.is_publishable:  # only a public key's caller is known by its address
            peer = scope.get("client") or ("", 0)
            forwarded_for = [headers[b"x-forwarded-for"].decode("latin-1")] if b"x-forwarded-for" in headers else []
            address = client_address(peer[0], forwarded_for, self._trusted_proxies)
            self._check_publishable(grant, origin, address)
            limit = min(limit, MAX_PUBLISHABLE_BODY_BYTES)
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        return HttpCall(grant, address, headers.get(b"user-agent", b"").decode("latin-1")), limit

    def _check_publishable(self, grant: Grant, origin: str, address: str) -> None:
        # No Origin header: not a browser (browsers send one on every cross-origin or POST fetch, and a page cannot
        # remove it), so a game client; the key's scope and limits bound what it may do.
        if origin and origin not in grant.origins:
            raise PermissionDenied(f"this publishable key is not valid on {origin[:200]}; its origins are "
                                   f"{', '.join(sorted(grant.origins))}", reason="ORIGIN_NOT_ALLOWED",
                                   metadata={"key_id": grant.key_id})
        now = self._clock()
        for buckets, key, what in ((self._per_address, address, "client address"),
                                   (self._per_key, grant.key_id, "publishable key")):
            if wait_s := buckets.take(key, now):
                retry_after = retry_after_header(wait_s)
                raise ResourceExhausted(f"too many requests from this {what}: at most {buckets.rate_per_s:g} a "
                                        f"second; retry after {retry_after}s", reason="RATE_LIMITED",
                                        metadata={"retry_after_s": retry_after})

    async def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        if not origin or not await self._origins.allows(origin):
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
                (b"access-control-expose-headers", b"retry-after")]

    async def _preflight(self, cors: list[tuple[bytes, bytes]], send: Send) -> None:
        if not cors:
            return await _plain(send, 403, b"this origin is not listed by any publishable key\n")
        await _plain(send, 204, b"", [*cors, (b"access-control-allow-methods", b"POST"),
                                      (b"access-control-allow-headers", _CORS_ALLOWED_HEADERS),
                                      (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode())])

    async def _pixel(self, method: str, headers: dict[bytes, bytes], send: Send) -> None:
        if method not in ("GET", "HEAD"):
            return await _plain(send, 405, b"", [(b"allow", b"GET, HEAD")])
        cache = [(b"etag", PIXEL_ETAG), (b"cache-control", b"public, max-age=3600")]
        if PIXEL_ETAG in headers.get(b"if-none-match", b""):
            return await _plain(send, 304, b"", cache)
        await _plain(send, 200, PIXEL if method == "GET" else b"",
                     [(b"content-type", b"text/javascript; charset=utf-8"), *cache],
                     content_length=len(PIXEL))


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    if not extra:
        return send

    async def send_with_headers(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_headers


async def _plain(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
                 *, content_length: int | None = None) -> None:
    length = len(body) if content_length is None else content_length
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(length).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, error: DomainError, cors: list[tuple[bytes, bytes]]) -> None:
    """A refusal before the Connect application is reached, in the Connect protocol's error form."""
    wire = ConnectWireError.from_exception(to_connect_error(error))
    body = wire.to_json_bytes()
    headers = [*cors, (b"content-type", b"application/json")]
    if "retry_after_s" in error.metadata:
        headers.append((b"retry-after", error.metadata["retry_after_s"].encode()))
    await _plain(send, wire.to_http_status().code, body, headers)
