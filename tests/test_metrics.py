"""The Prometheus endpoint: off unless configured; after a small end-to-end flow, a scrape shows what it produced."""

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from postbacks.v1 import delivery_log_service_pb2, network_pb2
from server.store.models import DeliveryLog
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for
from tests.fakes.fake_network import Reply
from tests.helpers import authorized_channel, click, create_config, ingest, launch, purchase
from tests.test_delivery_logs import read, stub

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def attempt_statuses(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    async with app.db.transaction() as session:
        return [(r.network, r.status) for r in (await session.scalars(select(DeliveryLog).order_by(DeliveryLog.id)))]


async def test_metrics_are_off_unless_configured(app) -> None:  # type: ignore[no-untyped-def]
    assert app.metrics_port is None


async def test_a_scrape_shows_what_a_small_flow_produced(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # Retries an hour apart: the Reddit postback stays pending (and attempted once) while the test looks.
    settings = settings_for(tmp_path, database_url, fake_network, metrics_listen="127.0.0.1:0",
                            retry_base_delay_s=3600.0, retry_max_delay_s=3600.0)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        assert app.metrics_port
        before = await scrape(app.metrics_port)
        assert sample(before, "postbacks_outbox_pending") == 0
        assert sample(before, "postbacks_log_streams_open") == 0
        # Known series are exported at 0 before anything happens.
        assert ("postbacks_delivery_attempts_total", frozenset({("network", "reddit"), ("outcome", "failed")})) in before

        await create_config(channel, "m", network=network_pb2.NETWORK_TIKTOK)
        await create_config(channel, "m", network=network_pb2.NETWORK_REDDIT)
        fake_network.set_default("reddit", Reply.http(503))
        # Attributed to TikTok (delivered), organic (nothing owed, sent twice: the repeat is not counted again),
        # attributed to Reddit (answered 503: retried, still pending).
        await ingest(channel, "m", click("c1", anonymous_id="a1", network=network_pb2.NETWORK_TIKTOK, click_id="TT-1"))
        await ingest(channel, "m", launch("l1", anonymous_id="a1"))
        await ingest(channel, "m", launch("l2", anonymous_id="a2"))
        await ingest(channel, "m", launch("l2", anonymous_id="a2"))
        await ingest(channel, "m", click("c3", anonymous_id="a3", network=network_pb2.NETWORK_REDDIT, click_id="RD-3"))
        await ingest(channel, "m", purchase("p3", anonymous_id="a3", value="9.99", currency="USD"))
        await wait_until(lambda: has_attempts(app, {("tiktok", "success"), ("reddit", "retried")}))
        tail = stub(channel).StreamDeliveryLogs(delivery_log_service_pb2.StreamDeliveryLogsRequest(parent="games/m"))
        await read(tail)

        after = await scrape(app.metrics_port)
        assert sample(after, "postbacks_events_ingested_total", kind="ad_click") == 2
        assert sample(after, "postbacks_events_ingested_total", kind="game_launch") == 2
        assert sample(after, "postbacks_events_ingested_total", kind="purchase") == 1
        assert sample(after, "postbacks_conversions_total", decision="postback_owed", reason="") == 2
        assert sample(after, "postbacks_conversions_total", decision="no_postback", reason="organic") == 1
        assert sample(after, "postbacks_delivery_attempts_total", network="tiktok", outcome="success") == 1
        assert sample(after, "postbacks_delivery_attempts_total", network="reddit", outcome="retried") == 1
        assert sample(after, "postbacks_delivery_attempts_total", network="reddit", outcome="success") == 0
        assert sample(after, "postbacks_delivery_attempt_latency_seconds_count", network="tiktok") == 1
        assert sample(after, "postbacks_delivery_attempt_latency_seconds_count", network="reddit") == 1
        assert sample(after, "postbacks_outbox_pending") == 1
        assert sample(after, "postbacks_outbox_oldest_pending_age_seconds") > 0
        assert sample(after, "postbacks_log_streams_open") == 1

        tail.cancel()
        await wait_until(lambda: app.open_log_streams == 0)
        assert sample(await scrape(app.metrics_port), "postbacks_log_streams_open") == 0


async def has_attempts(app, expected: set[tuple[str, str]]) -> bool:  # type: ignore[no-untyped-def]
    return expected <= set(await attempt_statuses(app))
