"""Replicas on one PostgreSQL database wake each other with LISTEN/NOTIFY: no poll is needed to find the others' work."""

import asyncio

import pytest
from sqlalchemy import text

from postbacks.v1 import delivery_log_service_pb2, delivery_log_service_pb2_grpc, network_pb2
from server.store.db import Database
from tests import helpers as h
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import sent_dedup_ids

TIKTOK = network_pb2.NETWORK_TIKTOK
# Far longer than any wait below: a prompt delivery or log entry can only be explained by a notification.
NEVER_S = 600.0
DEADLINE_S = 10.0


async def next_entry(call) -> delivery_log_service_pb2.StreamDeliveryLogsResponse:  # type: ignore[no-untyped-def]
    while not (message := await asyncio.wait_for(call.read(), DEADLINE_S)).HasField("delivery_log"):
        pass
    return message


async def test_a_replica_delivers_and_streams_what_another_commits_without_polling(
        tmp_path, postgresql_url: str, fake_network) -> None:  # type: ignore[no-untyped-def]
    never = {"dispatch_poll_s": NEVER_S, "dispatch_probe_s": NEVER_S, "log_stream_poll_s": NEVER_S}
    api = settings_for(tmp_path, postgresql_url, fake_network, role="api", **never)
    dispatcher = api.replace(role="dispatcher", listen="127.0.0.1:0", http_listen="")
    async with running_app(api) as a, h.authorized_channel(a) as channel, running_app(dispatcher) as b:
        await h.create_config(channel, "g1", network=TIKTOK)
        stream = delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel).StreamDeliveryLogs(
            delivery_log_service_pb2.StreamDeliveryLogsRequest(parent="games/g1"))
        await asyncio.wait_for(stream.read(), DEADLINE_S)  # the heartbeat that ends the (empty) backlog
        await wait_until(lambda: b.notifications.listening, timeout=DEADLINE_S)

        await h.ingest(channel, "g1", h.click("c1", user_id="u1", landing_url="https://game.example/?ttclid=TT-1"))
        await h.ingest(channel, "g1", h.purchase("p1", user_id="u1"))

        # Ingested through a, sent by b's dispatcher; b's delivery log reaches the stream open on a.
        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p1"], timeout=DEADLINE_S)
        entry = await next_entry(stream)
        assert entry.delivery_log.conversion == "games/g1/conversions/p1"

        # Its connection killed, b's listener connects again and hears the next commit.
        db = Database(postgresql_url)
        try:
            pid = b.notifications.backend_pid
            async with db.transaction() as session:
                await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            await db.close()
        await wait_until(lambda: b.notifications.listening and b.notifications.backend_pid != pid,
                         timeout=DEADLINE_S)
        await h.ingest(channel, "g1", h.purchase("p2", user_id="u1"))

        await wait_until(lambda: sent_dedup_ids(fake_network) == ["p1", "p2"], timeout=DEADLINE_S)
        assert (await next_entry(stream)).delivery_log.conversion == "games/g1/conversions/p2"
        stream.cancel()


@pytest.mark.parametrize("role", ["api", "all"])
async def test_sqlite_has_no_listening_connection(tmp_path, sqlite_url: str, fake_network, role: str) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network, role=role)) as app:
        assert app.notifications is None
