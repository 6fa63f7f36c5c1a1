"""Bad input against every RPC: malformed bytes, truncated messages, invalid UTF-8 where strings belong, huge
strings, unknown enum values, out-of-range numbers, over-long repeated fields, and hypothesis-generated requests.
The server (a real subprocess) answers each with a clear status, never INTERNAL or UNKNOWN, stays up, and a
refused call leaves the stored data exactly as it was."""

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
from google.protobuf import (
    descriptor,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message,
    message_factory,
    timestamp_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from postbacks.v1 import (
    conversion_pb2,
    delivery_log_pb2,
    event_pb2,
    game_settings_pb2,
    network_pb2,
    postback_config_pb2,
)
from postbacks.v1 import delivery_log_service_pb2 as logs
from postbacks.v1 import event_service_pb2 as events
from postbacks.v1 import game_settings_service_pb2 as game_settings
from postbacks.v1 import postback_config_service_pb2 as configs
from postbacks.v1 import privacy_service_pb2 as privacy
from server.app import SERVICE_NAMES
from server.core import page_tokens
from server.core.access import KeyKind
from server.services import api_keys
from server.store.db import Database
from server.store.models import Base
from tests import helpers as h
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import batch_ingest, delivery_logs
from tests.process_helpers import ServerProcess

FD = descriptor.FieldDescriptor
CLEAR_ERRORS = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
}
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the server's default max_receive_message_bytes
INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf4\x90\x80\x80", b"\xe2\x82")
HUGE = "x" * 100_000


@dataclasses.dataclass(frozen=True)
class Rpc:
    path: str  # /postbacks.v1.Service/Method
    request: descriptor.Descriptor
    streaming: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def new(self, **fields) -> message.Message:  # type: ignore[no-untyped-def]
        return message_factory.GetMessageClass(self.request)(**fields)


def every_rpc() -> list[Rpc]:
    pool = descriptor_pool.Default()
    return [Rpc(f"/{service}/{m.name}", m.input_type, m.server_streaming)
            for service in SERVICE_NAMES for m in pool.FindServiceByName(service).methods]


RPCS = every_rpc()
BY_NAME = {rpc.name: rpc for rpc in RPCS}


# --- the stored data --------------------------------------------------------------------------------------------

async def table_digests(db: Database) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of all its rows."""
    digests = {}
    async with db.snapshot() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table).order_by(*table.primary_key.columns))).all()
            digests[table.name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return digests


# --- calling the server from a worker thread, with raw bytes -----------------------------------------------------

@dataclasses.dataclass
class Outcome:
    code: grpc.StatusCode
    details: str


class Caller:
    """Sends raw request bytes (identity serializers) over a blocking channel from a worker thread, and checks
    each answer: a clear status, and no change to the stored data when the call was refused."""

    def __init__(self, server: ServerProcess, db: Database, keys: dict[str, str],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.keys = keys
        self.db = db
        self.loop = loop
        self.calls = 0
        self.codes: dict[grpc.StatusCode, int] = {}
        self._data = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, str]]:
        return asyncio.run_coroutine_threadsafe(table_digests(self.db), self.loop).result(timeout=60)

    def raw_call(self, rpc: Rpc, payload: bytes, key: str | None) -> Outcome:
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        try:
            if rpc.streaming:
                responses = self.channel.unary_stream(rpc.path)(payload, metadata=metadata, timeout=30)
                with contextlib.suppress(StopIteration):
                    next(responses)  # a valid stream sends its backlog or a heartbeat at once; then stop following
                responses.cancel()
            else:
                self.channel.unary_unary(rpc.path)(payload, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:  # our own cancel of an open stream
                return Outcome(error.code(), error.details() or "")
        return Outcome(grpc.StatusCode.OK, "")

    def call(self, rpc: Rpc, payload: bytes | message.Message, *, key: str | None = "dev", what: str = "") -> Outcome:
        """`key` names one of the server's keys (KEYS) or is sent as it is."""
        if isinstance(payload, message.Message):
            payload = payload.SerializeToString()
        if key == OTHER_GAME:  # a valid key, of the right kind for the method, for a game other than g1
            key = f"{OTHER_GAME} {'ingest' if rpc.path.startswith('/postbacks.v1.EventService/') else 'admin'}"
        outcome = self.raw_call(rpc, payload, self.keys.get(key, key) if key else None)
        self.calls += 1
        self.codes[outcome.code] = self.codes.get(outcome.code, 0) + 1
        context = f"{rpc.name} {what}: {outcome.code.name} {outcome.details[:300]!r}; request {payload[:200]!r}"
        assert outcome.code in CLEAR_ERRORS, context
        data = self.snapshot()
        if outcome.code != grpc.StatusCode.OK:
            assert data == self._data, f"a refused call changed stored data: {context}"
        self._data = data
        return outcome

    def assert_serving(self) -> None:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.channel.close()


OTHER_GAME = "other game"


@contextlib.asynccontextmanager
async def bad_input_server(tmp_path, database_url, fake_network) -> AsyncIterator[  # type: ignore[no-untyped-def]
        tuple[ServerProcess, Database, dict[str, str]]]:
    """A database with configs, conversions and delivery logs in game g1; then the API alone (no dispatcher, so
    nothing changes the data but the calls under test) as a subprocess on it. Yields it, the database, and its keys
    by name: "dev" (every game) and an ingest and an admin key of game g2 only."""
    seed = settings_for(tmp_path, database_url, fake_network)
    async with running_app(seed) as app, h.authorized_channel(app) as channel:
        keys = {f"{OTHER_GAME} {kind.value}": (await api_keys.create_key(app.ctx, kind, ["g2"]))[0]
                for kind in (KeyKind.INGEST, KeyKind.ADMIN)}
        await h.create_config(channel, "g1", network=network_pb2.NETWORK_TIKTOK, config_id="tt")
        await h.create_config(channel, "g1", network=network_pb2.NETWORK_REDDIT, config_id="rd")
        await batch_ingest(channel, "g1", [
            h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=T1"), h.purchase("p1", user_id="u1"),
            h.click("c2", user_id="u2", network=network_pb2.NETWORK_REDDIT, click_id="R2"), h.launch("l2", user_id="u2")])
        await wait_until(lambda: _logged(app, 2))
    db = Database(database_url)
    try:
        async with ServerProcess(seed.replace(role="api"), tmp_path / "logs") as server:
            await server.start()
            assert server.dev_key
            yield server, db, {"dev": server.dev_key, **keys}
            assert server.running, f"the server died:\n{server.output()}"
            assert "unexpected error" not in server.logs(), server.logs()[-6000:]
    finally:
        await db.close()


async def _logged(app, count: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await delivery_logs(app)) >= count


async def in_thread(server: ServerProcess, db: Database, keys: dict[str, str], work: Callable[[Caller], None]) -> Caller:
    """Runs blocking calls in a worker thread while this loop serves the fake network and the snapshots."""
    loop = asyncio.get_running_loop()

    def run() -> Caller:
        caller = Caller(server, db, keys, loop)
        try:
            work(caller)
            caller.assert_serving()
        finally:
            caller.close()
        return caller

    return await asyncio.to_thread(run)


# --- wire format -------------------------------------------------------------------------------------------------

def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_bytes(path: list[FD], leaf: bytes) -> bytes:
    """The wire bytes of a value at a field path (leaf field last), inside the messages along the path."""
    data = length_delimited(path[-1].number, leaf)
    for outer in reversed(path[:-1]):
        data = length_delimited(outer.number, data)
    return data


# --- representative valid requests, and every field path in them ----------------------------------------------------

def valid_requests() -> dict[str, message.Message]:
    """One well-formed request per RPC with (nearly) every field set, as the starting point of each mutation."""
    when = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    event = event_pb2.Event(event_id="fz-1", event_time=when, user_id="fz-u", anonymous_id="fz-a",
                            email="fz@example.com", ip_address="203.0.113.9", user_agent="Fuzz/1.0",
                            purchase=event_pb2.Purchase(value="1.50", currency="USD", order_id="o1", item_ids=["i1"]))
    click = event_pb2.Event(event_id="fz-c", event_time=when, anonymous_id="fz-a", ad_click=event_pb2.AdClick(
        landing_url="https://game.example/?ttclid=TTFZ"))  # the network and click id come from the URL
    config = postback_config_pb2.PostbackConfig(
        name="games/g1/postbackConfigs/tt", display_name="fuzzed", network=network_pb2.NETWORK_TIKTOK,
        credentials=postback_config_pb2.PostbackCredentials(access_token=h.TIKTOK_TOKEN, pixel_id="CTPIXEL9"),
        trigger_events=[network_pb2.CONVERSION_EVENT_TYPE_PURCHASE], enabled=True)
    credentials = postback_config_pb2.PostbackCredentials(access_token=h.REDDIT_TOKEN, pixel_id="a2_pixel42")
    statuses = [delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_SUCCESS]
    event_types = [network_pb2.CONVERSION_EVENT_TYPE_PURCHASE]
    return {
        "IngestEvent": events.IngestEventRequest(parent="games/g1", event=event),
        "BatchIngestEvents": events.BatchIngestEventsRequest(parent="games/g1", events=[click, event]),
        "GetConversion": events.GetConversionRequest(name="games/g1/conversions/p1"),
        "CreatePostbackConfig": configs.CreatePostbackConfigRequest(
            parent="games/g1", postback_config=config, postback_config_id="fz", test_code="TEST123"),
        "GetPostbackConfig": configs.GetPostbackConfigRequest(name="games/g1/postbackConfigs/tt"),
        "ListPostbackConfigs": configs.ListPostbackConfigsRequest(parent="games/g1", page_size=10),
        "UpdatePostbackConfig": configs.UpdatePostbackConfigRequest(
            postback_config=config, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "trigger_events"])),
        "DeletePostbackConfig": configs.DeletePostbackConfigRequest(name="games/g1/postbackConfigs/nothing-here"),
        "RotatePostbackCredentials": configs.RotatePostbackCredentialsRequest(
            name="games/g1/postbackConfigs/tt", test_code="TEST123", credentials=postback_config_pb2.PostbackCredentials(
                access_token="tt-token-rotated-00001", pixel_id="CTPIXEL123")),
        "ValidatePostbackCredentials": configs.ValidatePostbackCredentialsRequest(
            parent="games/g1", network=network_pb2.NETWORK_REDDIT, credentials=credentials,
            event_type=network_pb2.CONVERSION_EVENT_TYPE_PURCHASE, test_code="T1"),
        "RetryFailedPostbacks": configs.RetryFailedPostbacksRequest(
            name="games/g1/postbackConfigs/tt", start_time=when, end_time=timestamp_pb2.Timestamp(seconds=4_000_000_000),
            failure_reasons=[conversion_pb2.POSTBACK_FAILURE_REASON_PAYLOAD]),
        "ListDeliveryLogs": logs.ListDeliveryLogsRequest(
            parent="games/g1/postbackConfigs/tt", start_time=when, end_time=timestamp_pb2.Timestamp(seconds=4_000_000_000),
            statuses=statuses, event_types=event_types, page_size=5),
        "StreamDeliveryLogs": logs.StreamDeliveryLogsRequest(parent="games/g1", statuses=statuses,
                                                             event_types=event_types),
        "DeleteUserData": privacy.DeleteUserDataRequest(parent="games/g1", user_id="nobody", anonymous_id="nobody-a",
                                                        email="nobody@example.com"),
        "GetGameSettings": game_settings.GetGameSettingsRequest(name="games/g1/settings"),
        "UpdateGameSettings": game_settings.UpdateGameSettingsRequest(
            game_settings=game_settings_pb2.GameSettings(name="games/g1/settings",
                                                         attribution_lookback=duration_pb2.Duration(seconds=3 * 86400)),
            update_mask=field_mask_pb2.FieldMask(paths=["attribution_lookback"])),
    }


VALID = valid_requests()
assert set(VALID) == {rpc.name for rpc in RPCS}, "a new RPC needs a valid request here"


def field_paths(desc: descriptor.Descriptor, depth: int = 0) -> Iterator[list[FD]]:
    """Every field path in a request type, into nested messages (three levels)."""
    for field in desc.fields:
        yield [field]
        if field.type == FD.TYPE_MESSAGE and depth < 2:
            for rest in field_paths(field.message_type, depth + 1):
                yield [field, *rest]


def with_value(base: message.Message, path: list[FD], assign: Callable[[message.Message, FD], None]) -> message.Message:
    """A copy of base with the field at path changed by assign(parent, field); the parents are created as needed
    (the first element of a repeated message field)."""
    msg = type(base)()
    msg.CopyFrom(base)
    parent = msg
    for field in path[:-1]:
        if field.is_repeated:
            items = getattr(parent, field.name)
            parent = items[0] if len(items) else items.add()
        else:
            parent = getattr(parent, field.name)
    assign(parent, path[-1])
    return msg


def _set(value) -> Callable[[message.Message, FD], None]:  # type: ignore[no-untyped-def]
    def assign(parent: message.Message, field: FD) -> None:
        if field.is_repeated:
            items = getattr(parent, field.name)
            del items[:]
            items.extend(value if isinstance(value, list) else [value])
        else:
            setattr(parent, field.name, value)
    return assign


def _over_long(count: int) -> Callable[[message.Message, FD], None]:
    """Repeats the field's first element (or a default one) count times."""
    def assign(parent: message.Message, field: FD) -> None:
        items = getattr(parent, field.name)
        if field.type == FD.TYPE_MESSAGE:
            first = message_factory.GetMessageClass(field.message_type)()
            if len(items):
                first.CopyFrom(items[0])
            del items[:]
            for _ in range(count):
                items.add().CopyFrom(first)
        else:
            first = items[0] if len(items) else _default(field)
            del items[:]
            items.extend([first] * count)
    return assign


def _default(field: FD):  # type: ignore[no-untyped-def]
    return "x" if field.type == FD.TYPE_STRING else 1


INT_RANGES = {
    FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1), FD.TYPE_SFIXED32: (-2**31, 2**31 - 1),
    FD.TYPE_INT64: (-2**63, 2**63 - 1), FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}


_SERIAL = itertools.count()


def fresh(rpc: Rpc) -> message.Message:
    """The RPC's valid request with new event and config ids, so that a mutation is not merely a duplicate."""
    msg = rpc.new()
    msg.CopyFrom(VALID[rpc.name])
    n = next(_SERIAL)
    if rpc.name == "IngestEvent":
        msg.event.event_id = f"fz-{n}"  # type: ignore[attr-defined]
    elif rpc.name == "BatchIngestEvents":
        for i, event in enumerate(msg.events):  # type: ignore[attr-defined]
            event.event_id = f"fz-{n}-{i}"
    elif rpc.name == "CreatePostbackConfig":
        msg.postback_config_id = f"fz{n}"  # type: ignore[attr-defined]
    return msg


def mutations(rpc: Rpc) -> Iterator[tuple[str, bytes]]:
    """Malformed variants of a valid request: every field with each kind of bad value, then the wire-level ones."""
    for index, path in enumerate(field_paths(rpc.request)):
        where = ".".join(f.name for f in path)
        field = path[-1]
        if field.type == FD.TYPE_STRING:
            bad = INVALID_UTF8[index % len(INVALID_UTF8)]  # any one is refused wherever it is; vary them
            yield f"{where} invalid UTF-8 {bad!r}", fresh(rpc).SerializeToString() + nested_bytes(path, bad)
            for label, text in (("huge", HUGE), ("NUL", "a\x00b"), ("control characters", "a\x07\x1b[2Jb"),
                                ("only spaces", "   ")):
                yield f"{where} {label}", with_value(fresh(rpc), path, _set(text)).SerializeToString()
        elif field.type == FD.TYPE_ENUM:
            for value in (999, -1, 2**31 - 1):
                yield f"{where} unknown enum value {value}", with_value(fresh(rpc), path, _set(value)).SerializeToString()
        elif field.type in INT_RANGES:
            for value in INT_RANGES[field.type]:
                yield f"{where} = {value}", with_value(fresh(rpc), path, _set(value)).SerializeToString()
        elif field.type == FD.TYPE_MESSAGE and not field.is_repeated:
            # A string where a message belongs: a wrong type on the wire.
            yield f"{where} as a string", fresh(rpc).SerializeToString() + nested_bytes(path, b"\xffnot a message")
        if field.is_repeated:
            for count in (17, 101, 1001):
                yield f"{where} x{count}", with_value(fresh(rpc), path, _over_long(count)).SerializeToString()
    serialized = fresh(rpc).SerializeToString()
    yield "truncated by one byte", serialized[:-1]
    yield "truncated in half", serialized[: len(serialized) // 2]
    yield "not protobuf", b"\xff\xff\xff\xff\xff"
    yield "an invalid field number 0", b"\x02\x01x" + serialized
    yield "a group wire type", b"\x0b\x0c" + serialized
    yield "a length past the end", b"\x0a\xff\xff\xff\x0fabc"
    yield "a varint of 11 bytes", b"\x08" + b"\xff" * 10 + b"\x01"
    yield f"over {MAX_MESSAGE_BYTES} bytes", length_delimited(1, b"x" * (MAX_MESSAGE_BYTES + 16))
    for other in RPCS:  # wrong types: another method's request, as sent to this one
        if other.request is not rpc.request:
            yield f"a {other.request.name}", fresh(other).SerializeToString()


def forged(rpc: Rpc) -> Iterator[tuple[str, bytes]]:
    """Hand-made page and resume tokens: valid base64 JSON for the right query, with an out-of-range cursor."""
    if rpc.name == "ListPostbackConfigs":
        query = page_tokens.query_digest("configs", "g1")
        for cursor in (2**63, 10**30, -1):
            token = page_tokens.encode(cursor, query)
            yield f"page_token with cursor {cursor}", rpc.new(parent="games/g1", page_token=token).SerializeToString()
    if rpc.name in ("ListDeliveryLogs", "StreamDeliveryLogs"):
        field = "page_token" if rpc.name == "ListDeliveryLogs" else "resume_token"
        token = page_tokens.encode(10**30, "0" * 16)
        yield f"{field} forged", rpc.new(parent="games/g1", **{field: token}).SerializeToString()
        yield f"{field} not base64", rpc.new(parent="games/g1", **{field: "%%%\x00"}).SerializeToString()


async def test_every_rpc_answers_malformed_requests_with_clear_errors(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with bad_input_server(tmp_path, database_url, fake_network) as (server, db, keys):
        def work(caller: Caller) -> None:
            undecodable = []
            for rpc in RPCS:
                for what, payload in [*mutations(rpc), *forged(rpc)]:
                    outcome = caller.call(rpc, payload, what=what)
                    if "UTF-8" in what or what in ("not protobuf", "a length past the end", "truncated by one byte"):
                        undecodable.append((rpc.name, what, outcome.code))
                # Without a key, or with a wrong one, nothing is decoded into a change either.
                for key in (None, "not-a-key", "pb_0123abcd_" + "A" * 43, OTHER_GAME):
                    caller.call(rpc, fresh(rpc), key=key, what=f"key {key!r}")
            # A request the server cannot decode is the caller's mistake, and says so.
            assert {code for _, _, code in undecodable} == {grpc.StatusCode.INVALID_ARGUMENT}, [
                u for u in undecodable if u[2] != grpc.StatusCode.INVALID_ARGUMENT][:10]

        caller = await in_thread(server, db, keys, work)
        assert caller.codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > caller.calls // 2


# --- hypothesis: generated requests -----------------------------------------------------------------------------

NAMES = ("games/g1", "games/g2", "games/g1/postbackConfigs/tt", "games/g1/postbackConfigs/rd",
         "games/g1/postbackConfigs/none", "games/g1/settings", "games/g1/conversions/p1", "games/g1/conversions/l2",
         "games/", "games/g1/", "games//postbackConfigs/tt", "games/g1/../g2", "games/g1/postbackConfigs/TT")
PLAIN = ("", " ", "u1", "u2", "p1", "c1", "tt", h.TIKTOK_TOKEN, h.REDDIT_TOKEN, "CTPIXEL123", "a2_pixel42",
         "player@example.com", "9.99", "-1", "1e400", "NaN", "USD", "usd", "XXX", "https://game.example/?ttclid=T1",
         "display_name", "enabled", "trigger_events", "credentials", "attribution_lookback", "203.0.113.7", "::1")
# Landing URLs whose click id parameter is past the click id's limit, or decodes to control characters.
CLICK_URLS = ("https://game.example/?ttclid=" + "a" * 513, "https://game.example/?utm=x&rdt_cid=" + "r" * 600,
              "https://game.example/?ttclid=%00", "https://game.example/?rdt_cid=%1b%5b2J", "https://g.example/?ttclid=é")
WEIRD = ("\x00", "a\x00b", "\t\n\r", "\x7f", "\u202e", "\ufeff", "\U0001f600" * 40, "é" * 300, HUGE,
         "'; DROP TABLE events; --", "%00", "\\", "..", "\uffff")


def strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NAMES), st.sampled_from(PLAIN), st.sampled_from(WEIRD), st.text(max_size=40),
                     st.sampled_from(CLICK_URLS),
                     st.builds(lambda a, b: a + b, st.sampled_from(NAMES + PLAIN), st.sampled_from(WEIRD)))


def scalars(field: FD) -> st.SearchStrategy:  # type: ignore[type-arg]
    if field.name == "landing_url":  # where a click id may come from
        return st.one_of(st.sampled_from(CLICK_URLS), strings())
    if field.type == FD.TYPE_STRING:
        return strings()
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-2**31, 2**31 - 1))
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        # Past the ranges of a Timestamp's or Duration's fields too: nanos of a whole second, seconds past year 9999.
        edges = [v for v in (0, 1, -1, low, high, 999_999_999, 1_000_000_000, 253_402_300_800, -62_135_596_801)
                 if low <= v <= high]
        return st.one_of(st.integers(low, high), st.sampled_from(edges), st.integers(0, min(high, 3_000_000_000)))
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if field.type == FD.TYPE_FLOAT else 64)
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"no strategy for {field.full_name}")


@st.composite
def messages(draw, desc: descriptor.Descriptor, depth: int = 0) -> message.Message:  # type: ignore[no-untyped-def]
    msg = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if not draw(st.booleans()):
            continue
        if field.type == FD.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if field.is_repeated:
                items = getattr(msg, field.name)
                count = draw(st.one_of(st.integers(0, 3), st.sampled_from([17, 1001])))
                first = draw(messages(field.message_type, depth + 1))
                for _ in range(count):
                    items.add().CopyFrom(first)
            else:
                getattr(msg, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
        elif field.is_repeated:
            values = draw(st.lists(scalars(field), max_size=3))
            if draw(st.integers(0, 9)) == 0:
                values = values[:1] * draw(st.sampled_from([17, 101, 1001]))
            getattr(msg, field.name).extend(values)
        else:
            setattr(msg, field.name, draw(scalars(field)))
    return msg


@st.composite
def requests(draw) -> tuple[Rpc, bytes, str, str | None]:  # type: ignore[no-untyped-def]
    """A request for some RPC: its valid request with a few fields generated, or a wholly generated one, or
    another method's; sent as is or damaged on the wire; with the dev key mostly, else none, a wrong one or another
    game's."""
    rpc = draw(st.sampled_from(RPCS))
    source = draw(st.sampled_from(["valid, fields generated"] * 4 + ["generated", "generated", "other method"]))
    if source == "other method":
        msg = draw(messages(draw(st.sampled_from(RPCS)).request))
    elif source == "generated":
        msg = draw(messages(rpc.request))
    else:
        msg = fresh(rpc)
        leaves = [p for p in field_paths(rpc.request) if p[-1].type != FD.TYPE_MESSAGE]
        for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=3)):
            values = st.lists(scalars(path[-1]), max_size=3) if path[-1].is_repeated else scalars(path[-1])
            msg = with_value(msg, path, _set(draw(values)))
    data = msg.SerializeToString()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "invalid UTF-8", "random bytes", "unknown field"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1:]
    elif damage == "invalid UTF-8":
        paths = [p for p in field_paths(rpc.request) if p[-1].type == FD.TYPE_STRING]
        data += nested_bytes(draw(st.sampled_from(paths)), draw(st.sampled_from(INVALID_UTF8)))
    elif damage == "random bytes":
        data = draw(st.binary(max_size=200))
    elif damage == "unknown field":  # a field of a later version of the contract: proto3 keeps it and reads on
        number = draw(st.integers(100, 536_870_911))
        data += draw(st.sampled_from([varint(number << 3) + varint(draw(st.integers(0, 2**64 - 1))),
                                      length_delimited(number, draw(st.binary(max_size=64))),
                                      varint(number << 3 | 5) + b"\x01\x02\x03\x04"]))
    key = draw(st.sampled_from(["dev"] * 8 + [None, "garbage", OTHER_GAME]))
    return rpc, data, f"{source}, damage {damage}", key


async def test_generated_requests_to_every_rpc_get_clear_errors_and_change_nothing_when_refused(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with bad_input_server(tmp_path, database_url, fake_network) as (server, db, keys):
        def work(caller: Caller) -> None:
            @settings(max_examples=300, deadline=None, database=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(requests())
            def one_request(request: tuple[Rpc, bytes, str, str | None]) -> None:
                rpc, data, what, key = request
                caller.call(rpc, data, key=key, what=what)

            one_request()

        caller = await in_thread(server, db, keys, work)
        # The generator reaches past validation too: some generated requests are accepted.
        assert caller.codes.get(grpc.StatusCode.OK, 0) > 0, caller.codes
