"""The Python client a game server imports, against the real server."""

import grpc
import pytest

from clients.postbacks_client import PostbacksClient, ad_click, game_launch, identify, purchase
from postbacks.v1 import conversion_pb2
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
