"""Refused calls cost the server little: a call without a valid key is refused before its request is read, and
nothing of a refused call (its request above all) outlives it in a reference cycle."""

import contextlib
import gc
from collections.abc import Iterator

import grpc

from postbacks.v1 import delivery_log_service_pb2, event_pb2, event_service_pb2
from server.core.access import KeyKind
from server.services import api_keys
from tests.conftest import running_app
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.helpers import error_reason, launch

INGEST = "/postbacks.v1.EventService/IngestEvent"
BATCH = "/postbacks.v1.EventService/BatchIngestEvents"
STREAM = "/postbacks.v1.DeliveryLogService/StreamDeliveryLogs"
NOT_PROTOBUF = b"\xff\xff\xff\xff\xff"


def _metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


async def _code(channel: grpc.aio.Channel, method: str, body: bytes, key: str | None) -> grpc.StatusCode:
    """The status of one call with raw request bytes."""
    try:
        if method == STREAM:
            call = channel.unary_stream(method)(body, metadata=_metadata(key), timeout=30)
            await call.read()
            call.cancel()
        else:
            await channel.unary_unary(method)(body, metadata=_metadata(key), timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_call_without_a_valid_key_is_refused_before_its_request_is_read(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        for method in (INGEST, BATCH, STREAM):
            for key in (None, "pbk_00000000_" + "A" * 43):
                # Bytes that are no message at all: decoding them would answer INVALID_ARGUMENT.
                assert await _code(channel, method, NOT_PROTOBUF, key) == grpc.StatusCode.UNAUTHENTICATED, (method, key)
            assert await _code(channel, method, NOT_PROTOBUF, app.dev_key) == grpc.StatusCode.INVALID_ARGUMENT
        try:
            await channel.unary_unary(INGEST)(NOT_PROTOBUF, timeout=30)
        except grpc.aio.AioRpcError as error:
            assert error_reason(error) == "API_KEY_MISSING"
            assert "authorization: Bearer" in (error.details() or "")


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Collects nothing automatically inside the block; then yields, in the list, what only the cycle collector
    would have freed of what the block left behind."""
    gc.collect()
    gc.disable()
    found: list[object] = []
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


async def test_nothing_of_a_refused_call_outlives_it_in_a_reference_cycle(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """grpc.aio keeps the exception context.abort() raises on the call's state, whose traceback holds the handler's
    frames: each refused call left its decoded request in a cycle that only a full collection frees."""
    big = "a" * 100_000
    too_long = event_service_pb2.IngestEventRequest(parent="games/g", event=launch("l1", user_id="p", user_agent=big))
    batch = event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=[
        launch(f"l{i}", user_id="p", user_agent="x" * 500) for i in range(100)] + [event_pb2.Event(event_id="a/b")])
    other_game = event_service_pb2.IngestEventRequest(parent="games/other", event=launch("l2", user_id="p"))
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        key, _ = await api_keys.create_key(app.ctx, KeyKind.INGEST, ["g"])
        calls = [
            (INGEST, too_long, None, grpc.StatusCode.UNAUTHENTICATED),
            (INGEST, too_long, "pbk_00000000_" + "A" * 43, grpc.StatusCode.UNAUTHENTICATED),
            (INGEST, too_long, key, grpc.StatusCode.INVALID_ARGUMENT),
            (BATCH, batch, key, grpc.StatusCode.INVALID_ARGUMENT),
            (INGEST, other_game, key, grpc.StatusCode.PERMISSION_DENIED),
            (STREAM, delivery_log_service_pb2.StreamDeliveryLogsRequest(parent="games/g"), key,
             grpc.StatusCode.PERMISSION_DENIED),
        ]
        for method, request, call_key, expected in calls:  # once outside the block: caches, lazy imports
            assert await _code(channel, method, request.SerializeToString(), call_key) == expected
        with cyclic_garbage() as garbage:
            for _ in range(5):
                for method, request, call_key, _expected in calls:
                    await _code(channel, method, request.SerializeToString(), call_key)
    left = sorted({type(o).__name__ for o in garbage
                   if type(o).__name__ in ("IngestEventRequest", "BatchIngestEventsRequest", "Event",
                                           "StreamDeliveryLogsRequest", "RPCState", "AbortError", "frame")
                   or isinstance(o, Exception)})
    assert left == [], f"refused calls left in reference cycles: {left}"
