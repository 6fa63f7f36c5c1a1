"""Faulty networks: a seeded random mix of transient faults, then recovery. Every postback gets through, permanent
errors are never retried, and the delivery log has one row per attempt the network saw, with its outcome."""

import collections
import random

from sqlalchemy import select

from postbacks.v1 import network_pb2
from server.app import App
from server.core.types import DeliveryState
from server.store.models import Delivery, DeliveryLog, Event, PostbackConfig
from tests import helpers as h
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import batch_ingest, dedup_id, postback_requests, request_events
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, Reply

TIKTOK = network_pb2.NETWORK_TIKTOK
REDDIT = network_pb2.NETWORK_REDDIT
TIMEOUT_S = 1.0  # the dispatcher's total HTTP timeout: a slow reply below takes longer; a quick one, under load, never
RETRY_AFTER_S = 0.2
FAULTS_PER_NETWORK = 24
USERS = 12
PIXEL = {"tiktok": "CTFAULTY", "reddit": "a2_faulty"}
PERMANENT_PIXEL = {"tiktok": "CTPERMANENT", "reddit": "a2_permanent"}

# Each kind of fault, and what the delivery log must say about an attempt that met it: (status, HTTP status).
FAULTS: dict[str, tuple[Reply, tuple[str, int]]] = {
    "500": (Reply.http(500), ("retried", 500)),
    "502 html": (Reply.non_json(502), ("retried", 502)),
    "429": (Reply.http(429, retry_after=RETRY_AFTER_S), ("retried", 429)),
    "timeout": (Reply.slow(TIMEOUT_S + 1.0), ("retried", 0)),
    "drop": (Reply.drop(), ("retried", 0)),
    "tiktok 40100": (Reply.tiktok(40100), ("retried", 200)),
}
SUCCESS = ("success", 200)
# TikTok's result code, logged as the network code, where TikTok's envelope carried one.
TIKTOK_CODES = {"tiktok 40100": "40100", "ok": "0"}


def fault_mix(rng: random.Random, network: NetworkName) -> list[str]:
    kinds = [k for k in FAULTS if network == "tiktok" or not k.startswith("tiktok")]
    return [rng.choice(kinds) for _ in range(FAULTS_PER_NETWORK)]


def conversions_of(user: int) -> list:  # type: ignore[type-arg]
    """Even users come from a TikTok ad, odd ones from a Reddit ad; each launches and buys."""
    uid = f"u{user}"
    if user % 2 == 0:
        click = h.click(f"c{user}", user_id=uid, landing_url=f"https://game.example/?ttclid=TT{user}")
    else:
        click = h.click(f"c{user}", user_id=uid, network=REDDIT, click_id=f"RDT{user}")
    return [click, h.launch(f"l{user}", user_id=uid), h.purchase(f"p{user}", user_id=uid, value="4.99", currency="EUR")]


async def log_rows(app: App, game: str) -> dict[tuple[str, str], list[DeliveryLog]]:
    """Delivery-log rows per (pixel, conversion), in attempt order."""
    async with app.db.snapshot() as session:
        rows = (await session.execute(
            select(DeliveryLog, PostbackConfig.pixel_id)
            .join(PostbackConfig, PostbackConfig.id == DeliveryLog.config_row_id)
            .where(DeliveryLog.game_id == game).order_by(DeliveryLog.id))).all()
    per_postback: dict[tuple[str, str], list[DeliveryLog]] = collections.defaultdict(list)
    for row, pixel in rows:
        per_postback[pixel, row.conversion_event_id].append(row)
    return dict(per_postback)


async def delivery_states(app: App, game: str) -> dict[tuple[str, str], Delivery]:
    async with app.db.snapshot() as session:
        rows = (await session.execute(
            select(Delivery, PostbackConfig.pixel_id, Event.event_id)
            .join(PostbackConfig, PostbackConfig.id == Delivery.config_row_id)
            .join(Event, Event.id == Delivery.event_row_id)
            .where(Delivery.game_id == game))).all()
    return {(pixel, event_id): delivery for delivery, pixel, event_id in rows}


def expected_attempts(fake: FakeAdNetwork, scripts: dict[str, list[str]]) -> dict[tuple[str, str], list]:  # type: ignore[type-arg]
    """Per (pixel, conversion): what each request carrying it was answered, from the scripts in arrival order (one
    request per config is in flight at a time, so the n-th request to a pixel met its n-th scripted reply)."""
    expected: dict[tuple[str, str], list] = collections.defaultdict(list)  # type: ignore[type-arg]
    for network, pixel_faults in scripts.items():
        requests = [r for r in postback_requests(fake, network) if pixel_of(r) == PIXEL[network]]  # type: ignore[arg-type]
        for index, request in enumerate(requests):
            kind = pixel_faults[index] if index < len(pixel_faults) else "ok"
            outcome = SUCCESS if kind == "ok" else FAULTS[kind][1]
            for event in request_events(request):
                expected[PIXEL[network], dedup_id(event)].append((kind, outcome))
    return dict(expected)


def pixel_of(request) -> str:  # type: ignore[no-untyped-def]
    return request.json["event_source_id"] if request.network == "tiktok" else request.pixel_id


async def test_every_postback_gets_through_a_faulty_network_and_each_attempt_is_logged(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, http_total_timeout_s=TIMEOUT_S,
                            retry_base_delay_s=0.01, retry_max_delay_s=0.05, dispatch_batch_size=4,
                            dispatch_poll_s=0.05, rate_limit_per_config=0.0)
    rng = random.Random(20240607)
    scripts = {network: fault_mix(rng, network) for network in ("tiktok", "reddit")}
    assert {k for faults in scripts.values() for k in faults} == set(FAULTS), "the seed leaves out a kind of fault"
    async with running_app(settings) as app, h.authorized_channel(app) as channel:
        for network, proto in (("tiktok", TIKTOK), ("reddit", REDDIT)):
            await h.create_config(channel, "g1", network=proto, pixel_id=PIXEL[network])
            await h.create_config(channel, "g2", network=proto, pixel_id=PERMANENT_PIXEL[network])
        # Scripted after the save-time credential checks, so that only postbacks meet them.
        for network, kinds in scripts.items():
            fake_network.script(network, [FAULTS[k][0] for k in kinds], pixel_id=PIXEL[network])  # type: ignore[arg-type]
        # Permanent refusals, once after a transient fault and once straight away: neither may be retried.
        fake_network.script("tiktok", [Reply.tiktok(40100), Reply.tiktok(40002)], pixel_id=PERMANENT_PIXEL["tiktok"])
        fake_network.script("reddit", [Reply.http(400, message="1 invalid event(s)")],
                            pixel_id=PERMANENT_PIXEL["reddit"])

        for user in range(USERS):
            await batch_ingest(channel, "g1", conversions_of(user))
        await batch_ingest(channel, "g2", [
            h.click("c-tt", user_id="v1", landing_url="https://game.example/?ttclid=TTPERM"),
            h.purchase("p-tt", user_id="v1"),
            h.click("c-rd", user_id="v2", network=REDDIT, click_id="RDTPERM"),
            h.purchase("p-rd", user_id="v2")])

        async def settled() -> bool:
            states = {**await delivery_states(app, "g1"), **await delivery_states(app, "g2")}
            return len(states) == 2 * USERS + 2 and all(d.state != DeliveryState.PENDING for d in states.values())

        await wait_until(settled, timeout=60)
        states = await delivery_states(app, "g1")
        logs = await log_rows(app, "g1")
        permanent_states = await delivery_states(app, "g2")
        permanent_logs = await log_rows(app, "g2")

    # Every postback was eventually delivered, through faults of every kind.
    assert {key: d.state for key, d in states.items() if d.state != DeliveryState.SUCCEEDED} == {}
    expected = expected_attempts(fake_network, scripts)
    assert set(expected) == set(states) == set(logs)
    met = collections.Counter(kind for attempts in expected.values() for kind, _ in attempts)
    assert set(met) == {*FAULTS, "ok"}, f"some kind of fault never met a postback: {met}"
    # One log row per attempt the network saw, numbered, with the outcome of the reply it met: retried until
    # the one success.
    for key, rows in logs.items():
        assert [(r.status, r.http_status) for r in rows] == [o for _, o in expected[key]], key
        if rows[0].network == "tiktok":
            assert [r.network_code for r in rows] == [TIKTOK_CODES.get(k) for k, _ in expected[key]], key
        assert [r.attempt_number for r in rows] == list(range(1, len(rows) + 1)), key
        assert states[key].attempt_count == len(rows), key
        for row, (kind, _) in zip(rows, expected[key], strict=True):
            if kind == "429":  # Retry-After is honoured as the least delay before the next attempt
                assert row.next_attempt_time_us >= row.attempt_time_us + RETRY_AFTER_S * 1_000_000, key
    arrivals = collections.Counter((pixel_of(r), dedup_id(e)) for r in postback_requests(fake_network)
                                   for e in request_events(r))
    assert {key: arrivals[key] for key in logs} == {key: len(rows) for key, rows in logs.items()}

    # Permanent refusals end the postback at once: Failed, never sent again.
    assert {key: d.state for key, d in permanent_states.items()} == {
        ("CTPERMANENT", "p-tt"): DeliveryState.FAILED, ("a2_permanent", "p-rd"): DeliveryState.FAILED}
    assert {key: [(r.status, r.http_status) for r in rows] for key, rows in permanent_logs.items()} == {
        ("CTPERMANENT", "p-tt"): [("retried", 200), ("failed", 200)], ("a2_permanent", "p-rd"): [("failed", 400)]}
    assert [r.network_code for r in permanent_logs["CTPERMANENT", "p-tt"]] == ["40100", "40002"]
    assert {key: arrivals[key] for key in permanent_logs} == {("CTPERMANENT", "p-tt"): 2, ("a2_permanent", "p-rd"): 1}
