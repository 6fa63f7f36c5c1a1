"""A fake TikTok + Reddit ad network: a real aiohttp server that checks, records and answers with scripted replies."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

NetworkName = Literal["tiktok", "reddit"]
NETWORKS: tuple[NetworkName, ...] = ("tiktok", "reddit")
TIKTOK_TRACK_PATH = "/tiktok/open_api/v1.3/event/track/"
REDDIT_CONVERSION_PATH = "/reddit/api/v3/pixels/{pixel_id}/conversion_events"

TIKTOK_MAX_BATCH = 1000
REDDIT_MAX_BATCH = 1000
REDDIT_MAX_EVENT_AGE_MS = 7 * 24 * 3600 * 1000
REDDIT_MAX_FUTURE_MS = 5 * 60 * 1000
# Bounds on a Unix time in seconds that also catch milliseconds sent by mistake (years 2001 to 2286).
PLAUSIBLE_UNIX_SECONDS = range(1_000_000_000, 10_000_000_000)

TIKTOK_CODE_MESSAGES: Mapping[int, str] = {
    0: "OK",
    20001: "Partial success: some events were not processed",
    40001: "No permission to operate this pixel",
    40002: "Invalid parameter",
    40100: "Too many requests. Please retry in some time.",
    40105: "Access token is incorrect or has been revoked.",
    50000: "System error",
}
REDDIT_TRACKING_TYPES = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
        "CUSTOM",
    }
)
REDDIT_ACTION_SOURCES = frozenset({"WEBSITE", "APP", "OFFLINE", "OTHER"})
REDDIT_PIXEL_ID = re.compile(r"a2_[A-Za-z0-9]+")
# The Reddit shape as networks.md gives it: anything else is an unknown field and refused.
REDDIT_DATA_KEYS = frozenset({"test_id", "events"})
REDDIT_EVENT_KEYS = frozenset({"event_at", "action_source", "click_id", "type", "user", "metadata"})
REDDIT_TYPE_KEYS = frozenset({"tracking_type", "custom_event_name"})
REDDIT_USER_KEYS = frozenset({"email", "external_id", "ip_address", "user_agent"})
REDDIT_METADATA_KEYS = frozenset({"conversion_id", "value", "currency"})
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `ok` means: behave like the real network (check the request, then accept)."""

    kind: Literal["ok", "http", "tiktok_code", "slow", "drop", "non_json"]
    status: int = 200
    tiktok_code: int | None = None
    message: str | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    then: Reply | None = None

    @classmethod
    def ok(cls) -> Reply:
        return cls("ok")

    @classmethod
    def http(
        cls, status: int, *, retry_after: float | str | None = None, message: str | None = None
    ) -> Reply:
        return cls("http", status=status, message=message, retry_after=_header_text(retry_after))

    @classmethod
    def tiktok(cls, tiktok_code: int, message: str | None = None) -> Reply:
        """A TikTok envelope with this code inside HTTP 200."""
        return cls("tiktok_code", tiktok_code=tiktok_code, message=message)

    @classmethod
    def slow(cls, delay_s: float, then: Reply | None = None) -> Reply:
        return cls("slow", delay_s=delay_s, then=then)

    @classmethod
    def drop(cls) -> Reply:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def non_json(cls, status: int = 200) -> Reply:
        return cls("non_json", status=status)


def _header_text(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class ReceivedRequest:
    network: NetworkName
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any  # None when the body is not JSON
    token: str | None
    pixel_id: str | None
    received_at: float


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    accepted_events: int = 0  # how many events the network took in (a success)

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
        return cls(status, json.dumps(payload).encode(), headers=headers or {})


class FakeAdNetwork:
    """Serves both networks on 127.0.0.1 under /tiktok and /reddit. Use `async with FakeAdNetwork() as fake:`."""

    def __init__(
        self,
        *,
        port: int = 0,
        valid_tokens: Iterable[str] | None = None,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.valid_tokens: set[str] | None = set(valid_tokens) if valid_tokens is not None else None
        self._port = port
        self._clock_s = clock_s
        self._scripts: dict[tuple[str, str, str | None], deque[Reply]] = {}
        self._defaults: dict[str, Reply] = dict.fromkeys(NETWORKS, Reply.ok())
        self._pixel_defaults: dict[tuple[str, str], Reply] = {}
        self._received: list[ReceivedRequest] = []
        self._accepted: list[ReceivedRequest] = []
        self._accepted_events = 0
        self._after_accepting: list[tuple[int, Callable[[], None]]] = []
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", TIKTOK_TRACK_PATH, self._handle_tiktok)
        app.router.add_route("*", REDDIT_CONVERSION_PATH, self._handle_reddit)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        self._closing.set()  # lets slow replies end at once instead of holding shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def tiktok_base_url(self) -> str:
        return f"{self.base_url}/tiktok"

    @property
    def reddit_base_url(self) -> str:
        return f"{self.base_url}/reddit"

    def script(
        self,
        network: NetworkName,
        replies: Iterable[Reply],
        *,
        pixel_id: str | None = None,
        token: str | None = None,
    ) -> None:
        """Queue replies, consumed in order; a token queue wins over a pixel queue over the network queue."""
        replies = list(replies)
        if network == "reddit" and any(reply.kind == "tiktok_code" for reply in replies):
            raise ValueError("TikTok body codes make no sense for Reddit")
        if pixel_id is not None and token is not None:
            raise ValueError("script per pixel or per token, not both")
        key = (network, "token", token) if token is not None else (network, "pixel", pixel_id)
        self._scripts.setdefault(key, deque()).extend(replies)

    def set_default(self, network: NetworkName, reply: Reply, *, pixel_id: str | None = None) -> None:
        """The reply once the scripts are used up (initially Reply.ok()), for the network or one of its pixels (a
        pixel refusing a token that works elsewhere, say)."""
        if pixel_id is None:
            self._defaults[network] = reply
        else:
            self._pixel_defaults[network, pixel_id] = reply

    def accept_tokens(self, tokens: Iterable[str]) -> None:
        """From now on the network accepts only these tokens: the others are refused as revoked."""
        self.valid_tokens = set(tokens)

    def after_accepting(self, events: int, change: Callable[[], None]) -> None:
        """Calls change() once the network has taken in this many more events, before it judges another request:
        a token revoked after the first 200 deliveries, say."""
        self._after_accepting.append((self._accepted_events + events, change))

    def received(self, network: NetworkName | None = None) -> list[ReceivedRequest]:
        return [r for r in self._received if network is None or r.network == network]

    def accepted(self, network: NetworkName | None = None) -> list[ReceivedRequest]:
        """The requests the network answered with a success, in the order it answered them."""
        return [r for r in self._accepted if network is None or r.network == network]

    # A built-in timeout keeps a missing request from hanging the test run, hence the noqa.
    async def wait_for(
        self,
        count: int,
        *,
        network: NetworkName | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[ReceivedRequest]:
        """Wait until at least count requests (for network, or in all) have arrived."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received(network)) >= count)
        return self.received(network)

    def _next_reply(self, network: NetworkName, pixel_id: str | None, token: str | None) -> Reply:
        keys = [(network, "pixel", pixel_id), (network, "pixel", None)]
        if token is not None:
            keys.insert(0, (network, "token", token))
        for key in keys:
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        if pixel_id is not None and (network, pixel_id) in self._pixel_defaults:
            return self._pixel_defaults[network, pixel_id]
        return self._defaults[network]

    async def _record(
        self, request: web.Request, network: NetworkName, token: str | None, pixel_id: str | None
    ) -> ReceivedRequest:
        """Keep the request for the test to inspect."""
        body = await request.read()
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        received = ReceivedRequest(
            network=network,
            method=request.method,
            path=request.path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
            token=token,
            pixel_id=pixel_id,
            received_at=self._clock_s(),
        )
        async with self._arrived:
            self._received.append(received)
            self._arrived.notify_all()
        return received

    def _took_in(self, received: ReceivedRequest, events: int) -> None:
        self._accepted.append(received)
        self._accepted_events += events
        due = [change for threshold, change in self._after_accepting if threshold <= self._accepted_events]
        self._after_accepting = [(t, c) for t, c in self._after_accepting if t > self._accepted_events]
        for change in due:
            change()

    async def _respond(
        self,
        request: web.Request,
        received: ReceivedRequest,
        reply: Reply,
        on_ok: Callable[[], _Answer],
        on_fault: Callable[[Reply], _Answer],
    ) -> web.StreamResponse:
        if reply.kind == "slow":
            try:
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
            except TimeoutError:
                reply = reply.then or Reply.ok()
            else:
                reply = Reply.drop()
        if reply.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        answer = on_ok() if reply.kind == "ok" else on_fault(reply)
        if answer.accepted_events:
            self._took_in(received, answer.accepted_events)
        if reply.retry_after is not None:
            answer.headers["Retry-After"] = reply.retry_after
        return web.Response(
            status=answer.status, body=answer.body, content_type=answer.content_type, headers=answer.headers
        )

    # TikTok

    async def _handle_tiktok(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Access-Token") or None
        received = await self._record(request, "tiktok", token, None)
        payload = received.json
        pixel_id = payload.get("event_source_id") if isinstance(payload, dict) else None
        reply = self._next_reply("tiktok", pixel_id if isinstance(pixel_id, str) else None, token)
        request_id = uuid.uuid4().hex

        def envelope(code: int, message: str | None = None) -> _Answer:
            text = message or TIKTOK_CODE_MESSAGES.get(code, "Error")
            return _Answer.of_json(200, {"code": code, "message": text, "request_id": request_id, "data": {}})

        def on_ok() -> _Answer:
            if request.method != "POST":
                return _Answer.of_json(405, {"message": "method not allowed"})
            if token is None or (self.valid_tokens is not None and token not in self.valid_tokens):
                return envelope(40105)
            problem = _tiktok_problem(request, payload)
            if problem is not None:
                return envelope(40002, f"Invalid parameter: {problem}")
            accepted = envelope(0)
            accepted.accepted_events = len(payload["data"])
            return accepted

        def on_fault(fault: Reply) -> _Answer:
            if fault.kind == "tiktok_code":
                assert fault.tiktok_code is not None
                return envelope(fault.tiktok_code, fault.message)
            if fault.kind == "non_json":
                return _Answer(fault.status, b"<html><body>Bad Gateway</body></html>", "text/html")
            return _Answer.of_json(fault.status, {"message": fault.message or f"HTTP {fault.status}"})

        return await self._respond(request, received, reply, on_ok, on_fault)

    # Reddit

    async def _handle_reddit(self, request: web.Request) -> web.StreamResponse:
        pixel_id = request.match_info["pixel_id"]
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        received = await self._record(request, "reddit", token or None, pixel_id)
        payload = received.json
        reply = self._next_reply("reddit", pixel_id, token)

        def error(status: int, message: str, invalid: list[dict[str, Any]] | None = None) -> _Answer:
            body: dict[str, Any] = {"error": {"code": status, "message": message}}
            if invalid is not None:
                body["invalid_events"] = invalid
            return _Answer.of_json(status, body)

        def unauthorised() -> _Answer:
            return _Answer(401, b"Authorization Required", "text/plain")

        def on_ok() -> _Answer:
            if request.method != "POST":
                return error(405, "method not allowed")
            if not token or (self.valid_tokens is not None and token not in self.valid_tokens):
                return unauthorised()
            if not REDDIT_PIXEL_ID.fullmatch(pixel_id):
                return error(404, f"pixel {pixel_id!r} not found")
            user_agent = request.headers.get("User-Agent", "")
            if not user_agent or user_agent.startswith(("Python/", "python-requests/")):
                return error(400, "a descriptive User-Agent is required")
            if request.content_type != "application/json":
                return error(400, "Content-Type must be application/json")
            problem, invalid = _reddit_problems(payload, round(self._clock_s() * 1000))
            if problem is not None:
                return error(400, problem, invalid or None)
            count = len(payload["data"]["events"])
            accepted = _Answer.of_json(
                200,
                {"message": f"Successfully processed {count} conversion events."},
                {"X-Request-Id": uuid.uuid4().hex},
            )
            accepted.accepted_events = count
            return accepted

        def on_fault(fault: Reply) -> _Answer:
            if fault.kind == "non_json":
                return _Answer(fault.status, b"<html><body>upstream error</body></html>", "text/html")
            if fault.status == 401:
                return unauthorised()
            if fault.status in (403, 404):
                return error(fault.status, fault.message or "pixel not accessible with this token")
            return error(fault.status, fault.message or f"HTTP {fault.status}")

        return await self._respond(request, received, reply, on_ok, on_fault)


def _tiktok_problem(request: web.Request, payload: Any) -> str | None:
    """What TikTok would call a parameter error in this request, or None."""
    if request.content_type != "application/json":
        return "Content-Type must be application/json"
    if not isinstance(payload, dict):
        return "body must be a JSON object"
    if payload.get("event_source") != "web":
        return "event_source must be 'web'"
    if not _nonempty_str(payload.get("event_source_id")):
        return "event_source_id is required"
    data = payload.get("data")
    if not isinstance(data, list) or not 1 <= len(data) <= TIKTOK_MAX_BATCH:
        return f"data must hold 1 to {TIKTOK_MAX_BATCH} events"
    if "test_event_code" in payload:
        if not _nonempty_str(payload["test_event_code"]):
            return "test_event_code must be a non-empty string"
        if len(data) != 1:
            return "a test event is sent alone"
    for index, event in enumerate(data):
        problem = _tiktok_event_problem(event)
        if problem is not None:
            return f"data[{index}]: {problem}"
    return None


def _tiktok_event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "event must be an object"
    if "test_event_code" in event:
        return "test_event_code belongs at the top level"
    if not _nonempty_str(event.get("event")):
        return "event is required"
    event_time = event.get("event_time")
    if not _is_int(event_time) or event_time not in PLAUSIBLE_UNIX_SECONDS:
        return "event_time must be Unix seconds"
    if "event_id" in event and not _nonempty_str(event["event_id"]):
        return "event_id must be a non-empty string"
    user = event.get("user", {})
    if not isinstance(user, dict):
        return "user must be an object"
    for key in ("email", "phone", "external_id"):
        if key in user:
            values = user[key] if isinstance(user[key], list) else [user[key]]
            if not values or not all(isinstance(v, str) and SHA256_HEX.fullmatch(v) for v in values):
                return f"user.{key} must be lowercase hex SHA-256"
    for key in ("ttclid", "ip", "user_agent"):
        if key in user and not _nonempty_str(user[key]):
            return f"user.{key} must be a non-empty string"
    if "properties" in event:
        properties = event["properties"]
        if not isinstance(properties, dict):
            return "properties must be an object"
        if ("value" in properties) != ("currency" in properties):
            return "value and currency come together"
        if "value" in properties and not _is_number(properties["value"]):
            return "properties.value must be a number"
        if "currency" in properties and not (
            isinstance(properties["currency"], str) and CURRENCY.fullmatch(properties["currency"])
        ):
            return "properties.currency must be an ISO 4217 code"
    if "page" in event:
        page = event["page"]
        if not isinstance(page, dict) or not _nonempty_str(page.get("url")):
            return "page.url must be a non-empty string"
    return None


def _reddit_problems(payload: Any, now_ms: int) -> tuple[str | None, list[dict[str, Any]]]:
    """(first problem, per-event problems) Reddit would refuse this body for; (None, []) when it is valid."""
    if not isinstance(payload, dict) or set(payload) != {"data"}:
        return 'body must be {"data": {...}} and nothing else', []
    data = payload["data"]
    if not isinstance(data, dict):
        return "data must be an object", []
    unknown = set(data) - REDDIT_DATA_KEYS
    if unknown:
        return f'JSON error "unknown field" on field {sorted(unknown)[0]!r}', []
    events = data.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= REDDIT_MAX_BATCH:
        return f"events must hold 1 to {REDDIT_MAX_BATCH} events", []
    if "test_id" in data:
        if not _nonempty_str(data["test_id"]):
            return "test_id must be a non-empty string", []
        if len(events) != 1:
            return "a test event is sent alone", []
    invalid = [
        {"index": index, "message": problem}
        for index, event in enumerate(events)
        if (problem := _reddit_event_problem(event, now_ms)) is not None
    ]
    if invalid:
        return f"{len(invalid)} invalid event(s): {invalid[0]['message']}", invalid
    return None, []


def _reddit_event_problem(event: Any, now_ms: int) -> str | None:
    if not isinstance(event, dict):
        return "event must be an object"
    for where, value, allowed in (
        ("event", event, REDDIT_EVENT_KEYS),
        ("type", event.get("type", {}), REDDIT_TYPE_KEYS),
        ("user", event.get("user", {}), REDDIT_USER_KEYS),
        ("metadata", event.get("metadata", {}), REDDIT_METADATA_KEYS),
    ):
        if not isinstance(value, dict):
            return f"{where} must be an object"
        unknown = set(value) - allowed
        if unknown:
            return f'JSON error "unknown field" on field {sorted(unknown)[0]!r} in {where}'
    event_at = event.get("event_at")
    if not _is_int(event_at):
        return "event_at must be Unix milliseconds"
    if now_ms - event_at > REDDIT_MAX_EVENT_AGE_MS:
        return "event_at is older than 7 days"
    if event_at - now_ms > REDDIT_MAX_FUTURE_MS:
        return "event_at is more than 5 minutes in the future"
    if event.get("action_source") not in REDDIT_ACTION_SOURCES:
        return f"invalid action_source: {event.get('action_source')}"
    if "click_id" in event and not _nonempty_str(event["click_id"]):
        return "click_id must be a non-empty string"
    event_type = event.get("type")
    if not isinstance(event_type, dict) or event_type.get("tracking_type") not in REDDIT_TRACKING_TYPES:
        return "type.tracking_type is missing or unknown"
    if (event_type["tracking_type"] == "CUSTOM") != _nonempty_str(event_type.get("custom_event_name")):
        return "custom_event_name goes with tracking_type CUSTOM, and only with it"
    user = event.get("user", {})
    for key in ("email", "external_id", "ip_address"):
        if key in user and not (isinstance(user[key], str) and SHA256_HEX.fullmatch(user[key])):
            return f"user.{key} must be lowercase hex SHA-256"
    if "user_agent" in user and not _nonempty_str(user["user_agent"]):
        return "user.user_agent must be a non-empty string"
    if "click_id" not in event and "email" not in user:
        return "a conversion needs click_id or user.email"
    metadata = event.get("metadata", {})
    if "conversion_id" in metadata and not _nonempty_str(metadata["conversion_id"]):
        return "metadata.conversion_id must be a non-empty string"
    if ("value" in metadata) != ("currency" in metadata):
        return "metadata.value and metadata.currency come together"
    if "value" in metadata and not _is_number(metadata["value"]):
        return "metadata.value must be a number"
    if "currency" in metadata and not (
        isinstance(metadata["currency"], str) and CURRENCY.fullmatch(metadata["currency"])
    ):
        return "metadata.currency must be an ISO 4217 code"
    return None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def _serve_forever(port: int, valid_tokens: list[str] | None) -> None:
    async with FakeAdNetwork(port=port, valid_tokens=valid_tokens) as fake:
        print(f"fake ad network listening on {fake.base_url}", flush=True)
        print(f"  TikTok base URL: {fake.tiktok_base_url}", flush=True)
        print(f"  Reddit base URL: {fake.reddit_base_url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake TikTok + Reddit ad network standalone.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument(
        "--valid-token", action="append", dest="valid_tokens", help="accept only these tokens (repeatable)"
    )
    args = parser.parse_args()
    try:
        asyncio.run(_serve_forever(args.port, args.valid_tokens))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
