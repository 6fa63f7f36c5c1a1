"""The Python client a game server imports, against the real server."""

import grpc
import pytest

from clients.postbacks_client import PostbacksClient, ad_click, game_launch, identify, purchase
from postbacks.v1 import conversion_pb2, event_pb2, event_service_pb2, event_service_pb2_grpc
from tests.helpers import create_config


async def test_a_game_server_sends_the_journey_and_reads_the_decision(app, channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g")
    async with PostbacksClient(f"127.0.0.1:{app.port}", api_key=app.dev_key) as client:
        results = await client.ingest_batch("g", [
            ad_click("c1", anonymous_id="v1", landing_url="https://play.example/?ttclid=T1"),
            identify("i1", user_id="p1", anonymous_id="v1", email="p1@example.com"),
        ])
        assert [r.duplicate for r in results] == [False, False]
        launched = await client.ingest("g", game_launch("l1", user_id="p1"))
        assert launched.conversion.decision == conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED
        assert (await client.ingest("g", game_launch("l1", user_id="p1"))).duplicate
        bought = await client.ingest("g", purchase("o1", user_id="p1", value="4.99", currency="EUR"))
        assert (bought.conversion.value, bought.conversion.currency) == ("4.99", "EUR")
        conversion = await client.get_conversion("g", "l1")
        assert conversion.attributed_click.click_id == "T1"


async def test_bad_input_and_a_missing_key_are_not_retried(app) -> None:  # type: ignore[no-untyped-def]
    async with PostbacksClient(f"127.0.0.1:{app.port}", api_key=app.dev_key) as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.ingest("g", purchase("o1", user_id="p1", value="1", currency="NOPE"))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with PostbacksClient(f"127.0.0.1:{app.port}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.ingest("g", game_launch("l1", user_id="p1"))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


class _StumblingEventService(event_service_pb2_grpc.EventServiceServicer):
    """Answers each call's first attempt with `code`, as an overloaded or restarting server does, then accepts it."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.attempts: list[str] = []

    async def IngestEvent(self, request, context):  # type: ignore[no-untyped-def]
        self.attempts.append(request.event.event_id)
        if self.attempts.count(request.event.event_id) == 1:
            await context.abort(self.code, "not this time")
        return event_service_pb2.IngestEventResponse(result=event_pb2.IngestResult(name=f"{request.parent}/events/{request.event.event_id}"))


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
async def test_calls_a_server_shed_or_dropped_are_sent_again(code: grpc.StatusCode) -> None:
    service = _StumblingEventService(code)
    server = grpc.aio.server()
    event_service_pb2_grpc.add_EventServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with PostbacksClient(f"127.0.0.1:{port}") as client:
            result = await client.ingest("g", game_launch("l1", user_id="p1"))
    finally:
        await server.stop(None)
    assert result.name == "games/g/events/l1"
    assert service.attempts == ["l1", "l1"]
