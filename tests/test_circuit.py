"""The circuit breaker end to end: a lapse of credentials or an outage loses no conversion, and sends the network
sparing probes rather than the backlog; held postbacks survive a kill, go out on rotation, and fail only when their
window closes; failed postbacks can be replayed."""

import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from postbacks.v1 import (
    conversion_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    postback_config_pb2,
    postback_config_service_pb2,
)
from server.core.circuit import BreakerPolicy
from server.secrets import encode_keys, new_secret_key
from server.store.db import Database
from tests import helpers as h
from tests.circuit_helpers import (
    CAUSE,
    CIRCUIT,
    NETWORKS,
    PIXELS,
    TOKENS,
    accepted_dedup_ids,
    config,
    owe,
    refused,
    replay,
    states,
)
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import config_stub, dedup_id, delivery_logs, request_events, rotate, set_enabled
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, Reply
from tests.process_helpers import ServerProcess, free_port

GAME = "g1"
POSTBACK = conversion_pb2.PostbackState
REASON = conversion_pb2.PostbackFailureReason
HEALTH = postback_config_pb2.PostbackConfigHealth
S = 1_000_000


@contextlib.asynccontextmanager
async def serving(settings):  # type: ignore[no-untyped-def]
    async with running_app(settings) as app, h.authorized_channel(app) as channel:
        yield app, channel


async def conversion(channel, event_id: str) -> conversion_pb2.Postback:  # type: ignore[no-untyped-def]
    response = await event_service_pb2_grpc.EventServiceStub(channel).GetConversion(
        event_service_pb2.GetConversionRequest(name=f"games/{GAME}/conversions/{event_id}"))
    [postback] = response.conversion.postbacks
    return postback


# --- a lapse of credentials mid-stream -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Lapse:
    """How the network starts refusing a config mid-stream, and the credentials that work again."""

    network: NetworkName
    kind: str  # "token": the token is revoked; "pixel": the token no longer reaches the pixel

    def __str__(self) -> str:
        return f"{self.network}-{self.kind}"

    def revoke(self, fake: FakeAdNetwork) -> Callable[[], None]:
        if self.kind == "token":
            return lambda: fake.accept_tokens({TOKENS[self.network][1]})
        refusal = Reply.tiktok(40001) if self.network == "tiktok" else Reply.http(403)
        return lambda: fake.set_default(self.network, refusal, pixel_id=PIXELS[self.network][0])

    def new_credentials(self) -> dict[str, str]:
        if self.kind == "token":
            return {"token": TOKENS[self.network][1]}
        return {"token": TOKENS[self.network][0], "pixel_id": PIXELS[self.network][1]}


LAPSES = [Lapse("tiktok", "token"), Lapse("reddit", "token"), Lapse("tiktok", "pixel"), Lapse("reddit", "pixel")]
OWED = 1000
DELIVERED_BEFORE_THE_LAPSE = 200
BATCH = 20
SLOTS = 4  # batches of one config in flight at once, per dispatcher
PROBE_S = 0.5


@pytest.mark.slow
@pytest.mark.parametrize("lapse", LAPSES, ids=str)
async def test_credentials_revoked_mid_stream_hold_the_rest_until_rotation_and_lose_none(
        tmp_path, database_url, fake_network, lapse: Lapse) -> None:  # type: ignore[no-untyped-def]
    """1,000 postbacks owed to one config; the network stops taking its credentials after the first 200. The
    rest are held, not failed; the network sees at most one probe per probe interval (on PostgreSQL, from two
    dispatcher processes that share the circuit); after rotation every dedup id is delivered, none twice."""
    network = lapse.network
    dispatchers = 1 if database_url.startswith("sqlite") else 2
    old_token = TOKENS[network][0]
    fake_network.accept_tokens({old_token})
    secret_keys = encode_keys([new_secret_key()]).strip()

    def process(name: str, role: str) -> ServerProcess:
        settings = settings_for(tmp_path / name, database_url, fake_network, role=role, secret_keys=secret_keys,
                                dispatch_batch_size=BATCH, dispatch_batches_per_config=SLOTS,
                                credential_probe_interval_s=PROBE_S, credential_probe_max_interval_s=2 * PROBE_S,
                                dispatch_poll_s=0.1)
        return ServerProcess(settings, tmp_path / "logs", name)

    db = Database(database_url)
    api = process("api", "api")
    workers = [process(f"dispatcher-{i}", "dispatcher") for i in range(dispatchers)]
    try:
        await api.start()
        async with h.key_channel(api.port, api.dev_key) as channel:  # type: ignore[arg-type]
            created = await h.create_config(channel, GAME, network=NETWORKS[network], token=old_token,
                                            pixel_id=PIXELS[network][0])
            owed = await owe(channel, GAME, network, OWED)
            fake_network.after_accepting(DELIVERED_BEFORE_THE_LAPSE, lapse.revoke(fake_network))
            for worker in workers:
                worker.spawn()
            for worker in workers:
                await worker.started()

            # The lapse: the postbacks not delivered are held, and a probe now and then tries the credentials.
            def probes() -> list[object]:
                return [r for r in refused(fake_network) if len(request_events(r)) == 1]

            await wait_until(lambda: len(probes()) >= 2, timeout=60)
            held = await config(channel, created.name)
            assert (held.circuit.state in (CIRCUIT.POSTBACK_CIRCUIT_STATE_OPEN, CIRCUIT.POSTBACK_CIRCUIT_STATE_PROBING)
                    and held.circuit.cause == CAUSE.POSTBACK_CIRCUIT_CAUSE_CREDENTIALS)
            assert held.health == HEALTH.POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES
            delivered = accepted_dedup_ids(fake_network)
            assert sum(delivered.values()) == DELIVERED_BEFORE_THE_LAPSE
            assert held.circuit.held_postback_count == OWED - DELIVERED_BEFORE_THE_LAPSE
            assert (await states(db)) == {"succeeded": DELIVERED_BEFORE_THE_LAPSE,
                                          "pending": OWED - DELIVERED_BEFORE_THE_LAPSE}  # none failed
            waiting = next(event_id for event_id in owed if event_id not in delivered)
            assert (await conversion(channel, waiting)).state == POSTBACK.POSTBACK_STATE_HELD

            taken_before = len(fake_network.accepted())
            rotated = await rotate(channel, created.name, **lapse.new_credentials())
            rotate_time_s = time.time()
            assert rotated.circuit.state == CIRCUIT.POSTBACK_CIRCUIT_STATE_CLOSED
            await wait_until(lambda: _all_succeeded(db, OWED), timeout=120)
            # Oldest first: the first batches sent after the rotation (those in flight at once) hold the oldest one.
            first_after = fake_network.accepted()[taken_before:][:dispatchers * SLOTS + 1]
            assert waiting in {dedup_id(event) for r in first_after for event in request_events(r)}

        # Requests refused during the lapse: the batches a dispatcher had in flight at its first refusal, or was
        # claiming then (it claims no more, nor do the others once the circuit opens: not the backlog's 40), then
        # probes. From the circuit opening to the rotation, the schedule allows at most 1 + span / first interval
        # of them (each later interval is longer).
        in_flight = [r for r in refused(fake_network) if len(request_events(r)) > 1]
        assert len(in_flight) <= dispatchers * 2 * SLOTS < (OWED - DELIVERED_BEFORE_THE_LAPSE) // BATCH
        span_s = rotate_time_s - held.circuit.open_time.ToMicroseconds() / S
        assert 2 <= len(probes()) <= 1 + span_s / PROBE_S
        # Every dedup id reached the network and was taken in once; the refused ones went again after rotation.
        assert accepted_dedup_ids(fake_network) == collections.Counter(owed)
        assert {r.token for r in fake_network.accepted()[-1:]} <= set(lapse.new_credentials().values())
    finally:
        for server in (api, *workers):
            server.kill()
        await db.close()
    logs = api.logs() + "".join(w.logs() for w in workers)
    assert "Traceback" not in logs, logs[-6000:]


async def _all_succeeded(db: Database, owed: int) -> bool:
    return await states(db) == {"succeeded": owed}


# --- an outage ---------------------------------------------------------------------------------------------------

OUTAGE_PROBE_S = 0.2


async def test_an_outage_sends_probes_on_the_breakers_schedule_not_the_backlog_and_then_delivers_everything(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # One postback per request, so that the backlog alone would be 300 requests and more with retries.
    settings = settings_for(tmp_path, database_url, fake_network, dispatch_batch_size=1, rate_limit_per_config=200.0,
                            retry_base_delay_s=OUTAGE_PROBE_S, retry_max_delay_s=5 * OUTAGE_PROBE_S)
    async with serving(settings) as (app, channel):
        created = await h.create_config(channel, GAME, network=NETWORKS["tiktok"])
        fake_network.set_default("tiktok", Reply.http(503))
        owed = await owe(channel, GAME, "tiktok", 300)

        # One probe at a time, then: one request at a time, each after the backoff.
        await wait_until(lambda: _probing(app, channel, created.name), timeout=60)
        down = await config(channel, created.name)
        assert down.circuit.cause == CAUSE.POSTBACK_CIRCUIT_CAUSE_TRANSIENT_FAILURES
        assert down.health != HEALTH.POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES
        assert "failed" not in await states(app.db)
        opened_s = down.circuit.open_time.ToMicroseconds() / S
        during = len(refused(fake_network))
        up_s = time.time()
        fake_network.set_default("tiktok", Reply.ok())
        await wait_until(lambda: _all_succeeded(app.db, len(owed)), timeout=60)

    # Before it opened: as many failed requests as open it, with the config's requests then in flight. After:
    # probes, at most one per first interval (later ones wait longer).
    policy = BreakerPolicy()
    before_open = policy.open_at_strain + settings.dispatch_concurrency + settings.dispatch_batches_per_config
    assert during <= before_open + 1 + (up_s - opened_s) / OUTAGE_PROBE_S < len(owed)
    assert accepted_dedup_ids(fake_network) == collections.Counter(owed)


async def _probing(app, channel, name: str) -> bool:  # type: ignore[no-untyped-def]
    """The circuit opened for the outage and has failed two probes already."""
    current = await config(channel, name)
    return current.circuit.failed_probe_count >= 2


# --- visible state ---------------------------------------------------------------------------------------------

async def test_an_open_circuit_shows_in_the_config_the_conversions_the_logs_and_the_metrics(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, metrics_listen="127.0.0.1:0",
                            credential_probe_interval_s=0.3, credential_probe_max_interval_s=0.3)
    async with serving(settings) as (app, channel):
        created = await h.create_config(channel, GAME, network=NETWORKS["reddit"])
        fake_network.accept_tokens({"rd-token-rotated-000001"})
        owed = await owe(channel, GAME, "reddit", 5)
        await wait_until(lambda: _probed(app, channel, created.name), timeout=30)

        held = (await config(channel, created.name)).circuit
        assert (held.cause, held.held_postback_count) == (CAUSE.POSTBACK_CIRCUIT_CAUSE_CREDENTIALS, 5)
        assert held.state in (CIRCUIT.POSTBACK_CIRCUIT_STATE_OPEN, CIRCUIT.POSTBACK_CIRCUIT_STATE_PROBING)
        assert held.oldest_held_postback_create_time.ToMicroseconds() <= held.open_time.ToMicroseconds()
        assert held.next_probe_time.ToMicroseconds() > held.open_time.ToMicroseconds()
        [listed] = (await config_stub(channel).ListPostbackConfigs(
            postback_config_service_pb2.ListPostbackConfigsRequest(parent=f"games/{GAME}"))).postback_configs
        assert (listed.circuit.cause, listed.circuit.held_postback_count) == (held.cause, 5)
        postback = await conversion(channel, owed[-1])
        assert postback.state == POSTBACK.POSTBACK_STATE_HELD and "credentials" in postback.hold_reason
        assert not postback.HasField("next_attempt_time")
        # The probes are attempts in the delivery logs: one postback probes again and again.
        probes = [e for e in await delivery_logs(app) if e.network_message.startswith("probe: ")]
        assert probes and {(e.status, e.http_status) for e in probes} == {("retried", 401)}
        assert len({e.conversion_event_id for e in probes}) == 1

        metrics = await _scrape(app.metrics_port)
        name = created.name
        [(open_labels, one)] = [(dict(labels), value) for (metric, labels), value in metrics.items()
                                if metric == "postbacks_circuit_open"]
        assert (open_labels["postback_config"], open_labels["cause"], one) == (name, "credentials", 1)
        assert open_labels["state"] in ("open", "probing")
        assert metrics[("postbacks_held_postbacks", (("postback_config", name),))] == 5
        assert metrics[("postbacks_circuit_probes_total", (("network", "reddit"),
                                                           ("outcome", "failed_credentials")))] >= 1

        # A conversion owed meanwhile is held from the start, as its receipt says.
        await h.ingest(channel, GAME, h.click("late-c", user_id="late", network=NETWORKS["reddit"], click_id="RL"))
        receipt = await h.ingest(channel, GAME, h.purchase("late-p", user_id="late"))
        [late] = receipt.conversion.postbacks
        assert (late.state, late.hold_reason) == (POSTBACK.POSTBACK_STATE_HELD, postback.hold_reason)

        await rotate(channel, name, "rd-token-rotated-000001")
        await wait_until(lambda: _all_succeeded(app.db, 6))
        closed = (await config(channel, name)).circuit
        assert (closed.state, closed.cause, closed.held_postback_count) == (
            CIRCUIT.POSTBACK_CIRCUIT_STATE_CLOSED, CAUSE.POSTBACK_CIRCUIT_CAUSE_UNSPECIFIED, 0)
        assert not closed.HasField("open_time") and not closed.HasField("next_probe_time")
        assert not [key for key in (await _scrape(app.metrics_port)) if key[0] == "postbacks_circuit_open"]


async def _probed(app, channel, name: str) -> bool:  # type: ignore[no-untyped-def]
    return (await config(channel, name)).circuit.failed_probe_count >= 1


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# --- windows -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("network", ["tiktok", "reddit"])
async def test_a_postback_held_past_its_window_fails_with_its_reason_and_is_not_replayed(
        tmp_path, database_url, fake_network, network: NetworkName) -> None:  # type: ignore[no-untyped-def]
    # Windows of seconds: TikTok's counted from the first attempt, Reddit's from the event (2 s old when owed).
    settings = settings_for(tmp_path, database_url, fake_network, retry_tiktok_horizon_s=1.0,
                            retry_reddit_margin_s=7 * 24 * 3600.0 - 3.0, credential_probe_interval_s=0.5)
    async with serving(settings) as (app, channel):
        created = await h.create_config(channel, GAME, network=NETWORKS[network])
        fake_network.accept_tokens({"nobody-has-this-token"})
        [event_id] = await owe(channel, GAME, network, 1, seconds_ago=1.0)

        failed = await wait_until(lambda: _failed(channel, event_id), timeout=30)
        assert failed.failure_reason == REASON.POSTBACK_FAILURE_REASON_WINDOW_CLOSED_WHILE_HELD
        assert failed.last_error.startswith("held while its config's circuit was open until the network's window "
                                            "closed")
        last = (await delivery_logs(app, event_id))[-1]
        assert (last.status, last.http_status, last.latency_ms) == ("failed", 0, 0)
        assert last.network_message == failed.last_error
        # Replayed after its window: reported, and left failed.
        assert await replay(channel, created.name) == (0, 1)
        assert (await conversion(channel, event_id)).state == POSTBACK.POSTBACK_STATE_FAILED


async def _failed(channel, event_id: str) -> conversion_pb2.Postback | None:  # type: ignore[no-untyped-def]
    postback = await conversion(channel, event_id)
    return postback if postback.state == POSTBACK.POSTBACK_STATE_FAILED else None


# --- replay ------------------------------------------------------------------------------------------------------

async def test_postbacks_refused_for_their_payload_are_replayed_once_fixed_with_their_dedup_ids(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with serving(settings_for(tmp_path, database_url, fake_network)) as (app, channel):
        created = await h.create_config(channel, GAME, network=NETWORKS["tiktok"])
        fake_network.set_default("tiktok", Reply.tiktok(40002))
        owed = await owe(channel, GAME, "tiktok", 20)
        await wait_until(lambda: _all_in(app.db, "failed", 20))
        assert {(await conversion(channel, event_id)).failure_reason for event_id in owed[:3]} == {
            REASON.POSTBACK_FAILURE_REASON_PAYLOAD}
        fake_network.set_default("tiktok", Reply.ok())  # the fault is fixed

        # Selected by reason and by when they were owed.
        assert await replay(channel, created.name, reasons=[REASON.POSTBACK_FAILURE_REASON_CREDENTIALS]) == (0, 0)
        assert await replay(channel, created.name, end=h.ts(3600)) == (0, 0)
        assert await replay(channel, created.name, start=h.ts(3600), end=h.ts(-60),
                            reasons=[REASON.POSTBACK_FAILURE_REASON_PAYLOAD]) == (20, 0)
        assert await replay(channel, created.name) == (0, 0)  # pending now: not queued twice
        await wait_until(lambda: _all_succeeded(app.db, 20))
        assert await replay(channel, created.name) == (0, 0)  # delivered: nothing to do

    refusals = collections.Counter(e["event_id"] for r in refused(fake_network) for e in request_events(r))
    assert refusals == collections.Counter(owed)
    assert accepted_dedup_ids(fake_network) == collections.Counter(owed)  # the same dedup ids, once each


async def _all_in(db: Database, state: str, count: int) -> bool:
    return await states(db) == {state: count}


async def test_replay_refuses_what_it_cannot_do(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    async with serving(settings_for(tmp_path, database_url, fake_network)) as (_, channel):
        created = await h.create_config(channel, GAME, network=NETWORKS["tiktok"])
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await replay(channel, f"games/{GAME}/postbackConfigs/nope")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as backwards:
            await replay(channel, created.name, start=h.ts(0), end=h.ts(60), reasons=[0])
        assert backwards.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(h.field_violations(backwards.value)) == {"end_time", "failure_reasons[0]"}
        await set_enabled(channel, created.name, False)
        with pytest.raises(grpc.aio.AioRpcError) as disabled:
            await replay(channel, created.name)
        assert disabled.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert h.error_reason(disabled.value) == "POSTBACK_CONFIG_DISABLED"


# --- restart -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_held_postbacks_and_an_open_circuit_survive_a_kill_and_rotation_then_drains_them(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, listen=f"127.0.0.1:{free_port()}")
    async with _process(settings, tmp_path) as server:
        async with h.key_channel(server.port, server.dev_key) as channel:  # type: ignore[arg-type]
            tiktok = await h.create_config(channel, GAME, network=NETWORKS["tiktok"])
            reddit = await h.create_config(channel, GAME, network=NETWORKS["reddit"])
            fake_network.accept_tokens({h.REDDIT_TOKEN})  # the TikTok token is revoked
            owed = await owe(channel, GAME, "tiktok", 30)
            await wait_until(lambda: _holding(channel, tiktok.name, 30), timeout=30)
            sent_before = len(fake_network.received("tiktok"))
            server.kill()

            await server.start()
            before_rotation = await config(channel, tiktok.name)
            assert before_rotation.circuit.cause == CAUSE.POSTBACK_CIRCUIT_CAUSE_CREDENTIALS
            assert before_rotation.circuit.held_postback_count == 30
            # The restarted dispatcher is at work (another config's postback goes out) and still holds these.
            [sentinel] = await owe(channel, GAME, "reddit", 1, prefix="r")
            await wait_until(lambda: accepted_dedup_ids(fake_network, "reddit") == {sentinel: 1}, timeout=30)
            assert len(fake_network.received("tiktok")) == sent_before
            assert (await config(channel, reddit.name)).circuit.state == CIRCUIT.POSTBACK_CIRCUIT_STATE_CLOSED

            fake_network.accept_tokens({h.REDDIT_TOKEN, "tt-token-rotated-000001"})
            await rotate(channel, tiktok.name, "tt-token-rotated-000001")
            await wait_until(lambda: accepted_dedup_ids(fake_network, "tiktok") == collections.Counter(owed),
                             timeout=60)


async def _holding(channel, name: str, count: int) -> bool:  # type: ignore[no-untyped-def]
    circuit = (await config(channel, name)).circuit
    return circuit.cause == CAUSE.POSTBACK_CIRCUIT_CAUSE_CREDENTIALS and circuit.held_postback_count == count


@contextlib.asynccontextmanager
async def _process(settings, tmp_path) -> AsyncIterator[ServerProcess]:  # type: ignore[no-untyped-def]
    server = ServerProcess(settings, tmp_path / "logs")
    try:
        await server.start()
        yield server
    finally:
        server.kill()
