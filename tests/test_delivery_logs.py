"""Delivery logs over a real channel: filtered listing with page tokens, the live stream, resume tokens, retention."""

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import func, insert, select, text

from postbacks.v1 import (
    delivery_log_pb2,
    delivery_log_service_pb2_grpc,
    network_pb2,
    postback_config_service_pb2_grpc,
)
from postbacks.v1 import delivery_log_service_pb2 as pb
from postbacks.v1 import postback_config_service_pb2 as config_pb
from server.app import App
from server.core.types import AttemptStatus, EventType
from server.services import delivery_logs
from server.store import log_partitions
from server.store.models import DeliveryLog, PostbackConfig
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for
from tests.helpers import authorized_channel, create_config, field_violations, ts

SUCCESS = delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_SUCCESS
FAILED = delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_FAILED
RETRIED = delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_RETRIED
GAME_LAUNCH = network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH
PURCHASE = network_pb2.CONVERSION_EVENT_TYPE_PURCHASE
STATUS_NAMES = {AttemptStatus.SUCCESS: SUCCESS, AttemptStatus.FAILED: FAILED, AttemptStatus.RETRIED: RETRIED}
TYPE_NAMES = {EventType.GAME_LAUNCH: GAME_LAUNCH, EventType.PURCHASE: PURCHASE}
HOUR = 3600
DAY = 24 * HOUR
DAY_US = DAY * 1_000_000
# Read deadline for one stream message: a hang fails the test instead of blocking the run.
READ_DEADLINE_S = 15


@dataclass(frozen=True)
class ConfigRef:
    game_id: str
    config_id: str
    row_id: int
    network: str

    @property
    def name(self) -> str:
        return f"games/{self.game_id}/postbackConfigs/{self.config_id}"


@dataclass(frozen=True)
class Written:
    """A delivery-log row the test wrote, with its id."""

    id: int
    config: ConfigRef
    attempt_time_us: int
    status: AttemptStatus
    event_type: EventType
    conversion: str

    @property
    def name(self) -> str:
        return f"{self.config.name}/deliveryLogs/{self.id}"


_conversions = itertools.count(1)


def stub(channel) -> delivery_log_service_pb2_grpc.DeliveryLogServiceStub:  # type: ignore[no-untyped-def]
    return delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel)


async def make_config(app: App, channel, game_id: str, config_id: str, network: int = network_pb2.NETWORK_TIKTOK):  # type: ignore[no-untyped-def]
    await create_config(channel, game_id, config_id=config_id, network=network)
    async with app.db.transaction() as session:
        row_id = await session.scalar(select(PostbackConfig.id).where(
            PostbackConfig.game_id == game_id, PostbackConfig.config_id == config_id))
    return ConfigRef(game_id, config_id, row_id, "tiktok" if network == network_pb2.NETWORK_TIKTOK else "reddit")


def row(config: ConfigRef, seconds_ago: float, status: AttemptStatus = AttemptStatus.SUCCESS,
        event_type: EventType = EventType.GAME_LAUNCH) -> dict[str, object]:
    n = next(_conversions)
    return {
        "game_id": config.game_id,
        "config_row_id": config.row_id,
        "config_id": config.config_id,
        "config_display_name": f"{config.config_id} pixel",
        "network": config.network,
        "attempt_time_us": int((time.time() - seconds_ago) * 1_000_000),
        "event_type": event_type.value,
        "status": status.value,
        "http_status": 200 if status is AttemptStatus.SUCCESS else 503,
        "latency_ms": 40 + n,
        "attempt_number": 1 + n % 3,
        "network_code": None if status is AttemptStatus.SUCCESS else "50000",
        "network_message": "OK" if status is AttemptStatus.SUCCESS else "System error",
        "network_request_id": f"req-{n}",
        "conversion_event_id": f"conv-{n}",
        "next_attempt_time_us": None if status is not AttemptStatus.RETRIED else int((time.time() + 60) * 1e6),
    }


async def write_logs(app: App, rows: list[dict[str, object]], configs: dict[str, ConfigRef]) -> list[Written]:
    """Appends the rows in one transaction, as the dispatcher does, then tells this process's followers."""
    async with app.db.transaction() as session:
        ids = (await session.execute(
            insert(DeliveryLog).returning(DeliveryLog.id, sort_by_parameter_order=True), rows)).scalars().all()
    app.ctx.delivery_logs_written()
    return [Written(i, configs[str(r["config_id"])], int(r["attempt_time_us"]),  # type: ignore[call-overload]
                    AttemptStatus(r["status"]), EventType(r["event_type"]), str(r["conversion_event_id"]))
            for i, r in zip(ids, rows, strict=True)]


async def list_all(channel, page_size: int, **request) -> list[pb.ListDeliveryLogsResponse]:  # type: ignore[no-untyped-def]
    pages = []
    token = ""
    while True:
        page = await stub(channel).ListDeliveryLogs(
            pb.ListDeliveryLogsRequest(page_size=page_size, page_token=token, **request))
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def read(call) -> pb.StreamDeliveryLogsResponse:  # type: ignore[no-untyped-def]
    message = await asyncio.wait_for(call.read(), READ_DEADLINE_S)
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def read_entries(call, count: int) -> list[pb.StreamDeliveryLogsResponse]:  # type: ignore[no-untyped-def]
    """The next `count` messages that carry an entry, skipping heartbeats."""
    entries = []
    while len(entries) < count:
        message = await read(call)
        if message.HasField("delivery_log"):
            entries.append(message)
    return entries


async def read_until_heartbeat(call) -> tuple[list[pb.StreamDeliveryLogsResponse], pb.StreamDeliveryLogsResponse]:  # type: ignore[no-untyped-def]
    """Entries up to the first heartbeat, which marks the end of the backlog."""
    entries = []
    while (message := await read(call)).HasField("delivery_log"):
        entries.append(message)
    return entries, message


@pytest.fixture
async def world(app, channel):  # type: ignore[no-untyped-def]
    """Two configs of game g1, one of g2, and rows at many ages, statuses and types, written oldest first."""
    configs = {
        "tt": await make_config(app, channel, "g1", "tt"),
        "rd": await make_config(app, channel, "g1", "rd", network_pb2.NETWORK_REDDIT),
        "other": await make_config(app, channel, "g2", "other"),
    }
    ages = [40 * DAY, 29 * DAY, 10 * DAY, 3 * DAY, 10 * HOUR, 3 * HOUR, 30 * 60, 10 * 60, 60]
    statuses = itertools.cycle(AttemptStatus)
    event_types = itertools.cycle([EventType.GAME_LAUNCH, EventType.GAME_LAUNCH, EventType.PURCHASE])
    rows = [row(configs[key], age - i, next(statuses), next(event_types))
            for age in ages for i, key in enumerate(["tt", "rd", "tt", "other", "rd"])]
    return configs, await write_logs(app, rows, configs)


def newest_first(written: list[Written], keep: Callable[[Written], bool]) -> list[str]:
    return [w.name for w in sorted(written, key=lambda w: w.id, reverse=True) if keep(w)]


def kept(w: Written) -> bool:
    return w.attempt_time_us >= (time.time() - 30 * DAY) * 1_000_000


def ago_us(seconds: float) -> float:
    return (time.time() - seconds) * 1_000_000


@pytest.mark.parametrize(("request_fields", "keep"), [
    ({"parent": "games/g1"}, lambda w: w.config.game_id == "g1"),
    ({"parent": "games/g1/postbackConfigs/tt", "statuses": [FAILED, RETRIED]},
     lambda w: w.config.config_id == "tt" and w.status is not AttemptStatus.SUCCESS),
    ({"parent": "games/g1", "event_types": [PURCHASE], "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_24_HOURS},
     lambda w: w.config.game_id == "g1" and w.event_type is EventType.PURCHASE and w.attempt_time_us >= ago_us(DAY)),
    ({"parent": "games/g1", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR},
     lambda w: w.config.game_id == "g1" and w.attempt_time_us >= ago_us(HOUR)),
    ({"parent": "games/g1/postbackConfigs/rd", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_7_DAYS,
      "statuses": [SUCCESS]},
     lambda w: w.config.config_id == "rd" and w.status is AttemptStatus.SUCCESS and w.attempt_time_us >= ago_us(7 * DAY)),
    ({"parent": "games/g1", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_30_DAYS},
     lambda w: w.config.game_id == "g1"),
    ({"parent": "games/g1", "start_time": ts(20 * DAY), "end_time": ts(2 * HOUR)},
     lambda w: w.config.game_id == "g1" and ago_us(20 * DAY) <= w.attempt_time_us < ago_us(2 * HOUR)),
    ({"parent": "games/g2", "start_time": ts(45 * DAY)}, lambda w: w.config.game_id == "g2"),
], ids=["game", "config-statuses", "game-purchases-24h", "last-hour", "config-7d-success", "30d", "explicit",
        "before-retention"])
async def test_filters_return_exactly_the_matching_entries_across_pages(channel, world, request_fields, keep) -> None:  # type: ignore[no-untyped-def]
    _, written = world
    expected = newest_first(written, lambda w: kept(w) and keep(w))
    assert expected, "the case must select something"
    pages = await list_all(channel, 4, **request_fields)
    assert [e.name for page in pages for e in page.delivery_logs] == expected
    assert all(len(page.delivery_logs) == 4 for page in pages[:-1])
    assert len(pages) == (len(expected) + 3) // 4


async def test_an_entry_carries_every_field(channel, world) -> None:  # type: ignore[no-untyped-def]
    _, written = world
    [page] = await list_all(channel, 1000, parent="games/g1/postbackConfigs/rd", statuses=[RETRIED])
    newest = page.delivery_logs[0]
    expected = max((w for w in written if w.config.config_id == "rd" and w.status is AttemptStatus.RETRIED),
                   key=lambda w: w.id)
    assert newest.name == expected.name
    assert newest.postback_config == "games/g1/postbackConfigs/rd"
    assert newest.postback_config_display_name == "rd pixel"
    assert newest.network == network_pb2.NETWORK_REDDIT
    assert newest.attempt_time.ToMicroseconds() == expected.attempt_time_us
    assert newest.event_type == TYPE_NAMES[expected.event_type]
    assert newest.status == RETRIED
    assert newest.http_status == 503
    assert newest.network_code == "50000" and newest.network_message == "System error"
    assert newest.network_request_id.startswith("req-") and newest.latency_ms > 40 and newest.attempt_number >= 1
    assert newest.conversion == f"games/g1/conversions/{expected.conversion}"
    assert newest.HasField("next_attempt_time")


async def test_page_size_defaults_to_100_and_is_capped_at_1000(app, channel) -> None:  # type: ignore[no-untyped-def]
    config = await make_config(app, channel, "big", "tt")
    await write_logs(app, [row(config, 1200 - i) for i in range(1001)], {"tt": config})
    default = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/big"))
    capped = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/big", page_size=5000))
    assert len(default.delivery_logs) == 100 and default.next_page_token
    assert len(capped.delivery_logs) == 1000 and capped.next_page_token


async def test_a_missing_config_is_not_found_and_a_deleted_ones_logs_stay_listable(app, channel) -> None:  # type: ignore[no-untyped-def]
    config = await make_config(app, channel, "g", "gone")
    [entry] = await write_logs(app, [row(config, 60)], {"gone": config})
    await postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel).DeletePostbackConfig(
        config_pb.DeletePostbackConfigRequest(name=config.name))

    listed = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent=config.name))
    assert [e.name for e in listed.delivery_logs] == [entry.name]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/g/postbackConfigs/never"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:  # the same config id in another game is another config
        await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/h/postbackConfigs/gone"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"parent": "games/g1/configs/tt"}, "parent"),
    ({"parent": "games/g1", "start_time": ts(60), "end_time": ts(120)}, "end_time"),
    ({"parent": "games/g1", "start_time": ts(at=1_700_000_000), "end_time": ts(at=1_700_000_000)}, "end_time"),
    ({"parent": "games/g1", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR, "start_time": ts(60)},
     "time_range"),
    ({"parent": "games/g1", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR, "end_time": ts(60)},
     "time_range"),
    ({"parent": "games/g1", "time_range": 42}, "time_range"),
    ({"parent": "games/g1", "statuses": [SUCCESS, 0]}, "statuses[1]"),
    ({"parent": "games/g1", "statuses": [9]}, "statuses[0]"),
    ({"parent": "games/g1", "event_types": [PURCHASE, 7]}, "event_types[1]"),
    ({"parent": "games/g1", "page_size": -1}, "page_size"),
    ({"parent": "games/g1", "page_token": "not-a-token"}, "page_token"),
])
async def test_invalid_list_requests_name_the_field(channel, request_fields, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(**request_fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)


@pytest.mark.parametrize("changed", [
    {"parent": "games/g2"},
    {"statuses": [FAILED]},
    {"event_types": [GAME_LAUNCH]},
    {"time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_7_DAYS},
])
async def test_a_page_token_only_continues_its_own_query(channel, world, changed) -> None:  # type: ignore[no-untyped-def]
    first = {"parent": "games/g1", "page_size": 2}
    page = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(**first))
    assert page.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(
            **{**first, **changed, "page_token": page.next_page_token}))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(error.value)


async def test_a_forged_token_with_an_out_of_range_cursor_is_invalid(channel, world) -> None:  # type: ignore[no-untyped-def]
    page = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/g1", page_size=1))
    raw = json.loads(base64.urlsafe_b64decode(page.next_page_token + "=" * (-len(page.next_page_token) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({"c": 2**70, "q": raw["q"]}).encode()).decode()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/g1", page_size=1,
                                                                        page_token=forged))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(error.value)


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"parent": "games/g1", "resume_token": "junk"}, "resume_token"),
    ({"parent": "games/g1", "resume_token": "x", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR},
     "resume_token"),
    ({"parent": "games/g1", "resume_token": "x", "start_time": ts(60)}, "resume_token"),
    ({"parent": "games/g1", "time_range": delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR, "start_time": ts(60)},
     "time_range"),
    ({"parent": "games/g1", "statuses": [4]}, "statuses[0]"),
    ({"parent": "games/g1", "event_types": [0]}, "event_types[0]"),
    ({"parent": "g1"}, "parent"),
])
async def test_invalid_stream_requests_name_the_field(app, channel, request_fields, field) -> None:  # type: ignore[no-untyped-def]
    call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(**request_fields))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(call)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    await wait_until(lambda: app.open_log_streams == 0)


async def test_tokens_do_not_cross_between_list_stream_and_filters(channel, world) -> None:  # type: ignore[no-untyped-def]
    page = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/g1", page_size=1))
    call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g1",
                                                                         resume_token=page.next_page_token))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(call)
    assert "resume_token" in field_violations(error.value)

    tail = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g1", statuses=[FAILED]))
    heartbeat = await read(tail)
    tail.cancel()
    other = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
        parent="games/g1", statuses=[SUCCESS], resume_token=heartbeat.resume_token))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(other)
    assert "resume_token" in field_violations(error.value)


async def test_stream_sends_the_backlog_oldest_first_then_new_entries_live(app, channel, world) -> None:  # type: ignore[no-untyped-def]
    configs, written = world
    call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
        parent="games/g1/postbackConfigs/tt", time_range=delivery_log_pb2.TIME_RANGE_PRESET_LAST_24_HOURS,
        statuses=[SUCCESS, FAILED]))
    backlog, caught_up = await read_until_heartbeat(call)
    expected = [w.name for w in written if w.config.config_id == "tt" and w.status is not AttemptStatus.RETRIED
                and w.attempt_time_us >= ago_us(DAY)]
    assert [m.delivery_log.name for m in backlog] == expected
    assert caught_up.resume_token and all(m.resume_token for m in backlog)
    assert app.open_log_streams == 1

    live = await write_logs(app, [
        row(configs["tt"], 0, AttemptStatus.RETRIED),  # filtered out by status
        row(configs["rd"], 0, AttemptStatus.SUCCESS),  # another config
        row(configs["other"], 0, AttemptStatus.SUCCESS),  # another game
        row(configs["tt"], 0, AttemptStatus.FAILED, EventType.PURCHASE),
    ], configs)
    [entry] = await read_entries(call, 1)
    assert entry.delivery_log.name == live[3].name
    assert entry.delivery_log.status == FAILED and entry.delivery_log.event_type == PURCHASE
    more = await write_logs(app, [row(configs["tt"], 0), row(configs["tt"], 0)], configs)
    assert [m.delivery_log.name for m in await read_entries(call, 2)] == [w.name for w in more]
    call.cancel()


async def test_without_a_start_only_new_entries_are_streamed(app, channel, world) -> None:  # type: ignore[no-untyped-def]
    configs, _ = world
    call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g1"))
    first = await read(call)
    assert not first.HasField("delivery_log"), "no backlog without a time range, start time or resume token"
    [new] = await write_logs(app, [row(configs["rd"], 0)], configs)
    [entry] = await read_entries(call, 1)
    assert entry.delivery_log.name == new.name
    call.cancel()


async def test_resume_token_delivers_exactly_the_entries_after_it(app, channel, world) -> None:  # type: ignore[no-untyped-def]
    configs, _ = world
    request = {"parent": "games/g1", "event_types": [GAME_LAUNCH]}
    first = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
        **request, time_range=delivery_log_pb2.TIME_RANGE_PRESET_LAST_7_DAYS))
    backlog, _ = await read_until_heartbeat(first)
    assert len(backlog) >= 4
    third = backlog[2]
    first.cancel()
    await wait_until(lambda: app.open_log_streams == 0)

    # Written while no one was connected: a mix of matching and not matching.
    offline = await write_logs(app, [row(configs["tt"], 0), row(configs["rd"], 0, event_type=EventType.PURCHASE),
                                     row(configs["other"], 0), row(configs["rd"], 0)], configs)
    resumed = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(**request, resume_token=third.resume_token))
    after, caught_up = await read_until_heartbeat(resumed)
    expected = [m.delivery_log.name for m in backlog[3:]] + [offline[0].name, offline[3].name]
    assert [m.delivery_log.name for m in after] == expected
    resumed.cancel()

    # The heartbeat's token resumes after everything seen so far: only what is written later arrives.
    again = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(**request,
                                                                          resume_token=caught_up.resume_token))
    nothing, _ = await read_until_heartbeat(again)
    assert nothing == []
    [later] = await write_logs(app, [row(configs["tt"], 0)], configs)
    assert [m.delivery_log.name for m in await read_entries(again, 1)] == [later.name]
    again.cancel()


async def test_cancelled_streams_end_their_server_side_generators(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, max_streams_per_key=100)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        calls = [stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g")) for _ in range(20)]
        for call in calls:
            await read(call)
        assert app.open_log_streams == 20
        [new] = await write_logs(app, [row(config, 0)], {"tt": config})
        for call in calls:  # one write reaches every follower
            assert [m.delivery_log.name for m in await read_entries(call, 1)] == [new.name]
        for call in calls[:10]:
            call.cancel()
        await wait_until(lambda: app.open_log_streams == 10)
        for call in calls[10:]:
            call.cancel()
        await wait_until(lambda: app.open_log_streams == 0)
        # The tail stops reading once no one follows; a new stream brings it back.
        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        await read(call)
        [later] = await write_logs(app, [row(config, 0)], {"tt": config})
        assert [m.delivery_log.name for m in await read_entries(call, 1)] == [later.name]
        call.cancel()
        await wait_until(lambda: app.open_log_streams == 0)


async def test_an_idle_stream_sends_heartbeats_with_a_resume_token(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, log_stream_heartbeat_s=0.2)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        heartbeats = [await read(call) for _ in range(3)]
        assert all(not h.HasField("delivery_log") and h.resume_token for h in heartbeats)
        [new] = await write_logs(app, [row(config, 0)], {"tt": config})
        assert [m.delivery_log.name for m in await read_entries(call, 1)] == [new.name]
        call.cancel()
        resumed = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
            parent="games/g", resume_token=heartbeats[-1].resume_token))
        assert [m.delivery_log.name for m in await read_entries(resumed, 1)] == [new.name]
        resumed.cancel()


async def test_stopping_the_server_ends_open_streams(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, shutdown_grace_s=60.0)
    app = App(settings)
    await app.start()
    async with authorized_channel(app) as channel:
        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        await read(call)
        await app.stop()  # with the default 60 s grace: returns because the stream ends, not because grace ran out
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    assert app.open_log_streams == 0


async def test_a_late_committing_lower_id_is_not_skipped_on_postgresql(tmp_path, postgresql_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """A sequence hands out ids before commit: id N can become visible after N+1. A follower that moved its
    cursor past N+1 would never see N."""
    settings = settings_for(tmp_path, postgresql_url, fake_network, log_stream_settle_s=120.0)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        configs = {"tt": config}
        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        await read(call)
        async with app.db.transaction() as slow_writer:
            low = DeliveryLog(**row(config, 0))
            slow_writer.add(low)
            await slow_writer.flush()  # the id is taken; the row stays invisible until commit
            [high] = await write_logs(app, [row(config, 0)], configs)
            assert high.id > low.id
            await wait_until(lambda: app.log_tail.waiting_for_ids)
        app.ctx.delivery_logs_written()
        entries = await read_entries(call, 2)
        assert [m.delivery_log.name for m in entries] == [f"{config.name}/deliveryLogs/{low.id}", high.name]
        call.cancel()


async def test_an_id_that_never_commits_is_skipped_after_the_settle_window(tmp_path, postgresql_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, postgresql_url, fake_network, log_stream_settle_s=0.3)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        await read(call)
        async with app.db.sessions() as rolled_back:
            await rolled_back.begin()
            rolled_back.add(DeliveryLog(**row(config, 0)))
            await rolled_back.flush()
            [high] = await write_logs(app, [row(config, 0)], {"tt": config})
            await rolled_back.rollback()
        assert [m.delivery_log.name for m in await read_entries(call, 1)] == [high.name]
        call.cancel()


async def test_an_old_hole_does_not_hold_back_a_stream_that_starts_later(tmp_path, postgresql_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """Holes from long-rolled-back transactions are final; only a recent one may still fill."""
    settings = settings_for(tmp_path, postgresql_url, fake_network, log_stream_settle_s=120.0)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        configs = {"tt": config}
        await write_logs(app, [row(config, 600)], configs)
        async with app.db.sessions() as rolled_back:
            await rolled_back.begin()
            rolled_back.add(DeliveryLog(**row(config, 600)))
            await rolled_back.flush()
            await rolled_back.rollback()
        await write_logs(app, [row(config, 600)], configs)

        call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g"))
        await read(call)
        [new] = await write_logs(app, [row(config, 0)], configs)
        assert [m.delivery_log.name for m in await read_entries(call, 1)] == [new.name]
        call.cancel()


async def placement(app: App) -> dict[int, str]:
    """On PostgreSQL, which partition holds each delivery-log row, by id."""
    async with app.db.snapshot() as session:
        return dict((await session.execute(text("SELECT id, tableoid::regclass::text FROM delivery_logs"))).all())


async def day_partitions(app: App) -> set[str]:
    async with app.db.snapshot() as session:
        return set((await session.scalars(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'delivery_logs'::regclass AND c.relname <> 'delivery_logs_default'"))).all())


async def test_expired_days_are_purged_and_nothing_else(app, channel) -> None:  # type: ignore[no-untyped-def]
    """SQLite deletes each expired row, in chunks; PostgreSQL drops each day wholly past retention and keeps the day
    the cutoff falls in (its expired rows hidden) until all of it has expired."""
    config = await make_config(app, channel, "g", "tt")
    configs = {"tt": config}
    now_us = int(time.time() * 1_000_000)
    await log_partitions.ensure_delivery_log_partitions(app.db, now_us - 45 * DAY_US, now_us + 2 * DAY_US)
    expired_days = await write_logs(app, [row(config, 40 * DAY), *(row(config, 31 * DAY - i) for i in range(5))],
                                    configs)
    cutoff_day_start = log_partitions.day_start_us(now_us - 30 * DAY_US)
    [cutoff_day] = await write_logs(app, [row(config, (now_us - cutoff_day_start) / 1e6)], configs)
    kept = await write_logs(app, [row(config, 29 * DAY), row(config, 60), row(config, -DAY)], configs)
    listed = await list_all(channel, 100, parent="games/g")
    assert [e.name for page in listed for e in page.delivery_logs] == [w.name for w in reversed(kept)]

    writes = 0
    write = app.db.write

    async def counted_write(work, **options):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return await write(work, **options)

    app.db.write = counted_write  # type: ignore[method-assign]
    purged = await delivery_logs.purge_expired_logs(app.ctx, chunk_rows=2)
    async with app.db.snapshot() as session:
        remaining = (await session.scalars(select(DeliveryLog.id).order_by(DeliveryLog.id))).all()
    if app.db.is_sqlite:
        assert purged == delivery_logs.Purged(rows=len(expired_days) + 1)
        assert writes == 4, "each chunk of 2 rows is a transaction of its own"
        assert remaining == [w.id for w in kept]
    else:
        expired_partitions = {log_partitions.partition_name(day_us) for day_us in range(
            log_partitions.day_start_us(now_us - 45 * DAY_US), cutoff_day_start, DAY_US)}
        assert {log_partitions.partition_name(log_partitions.day_start_us(w.attempt_time_us))
                for w in expired_days} <= expired_partitions
        assert purged == delivery_logs.Purged(rows=0, partitions=tuple(sorted(expired_partitions)))
        assert remaining == [cutoff_day.id, *(w.id for w in kept)]
        assert not expired_partitions & await day_partitions(app)
        where = await placement(app)
        assert {where[w.id] for w in [cutoff_day, *kept]} == {
            log_partitions.partition_name(log_partitions.day_start_us(w.attempt_time_us)) for w in [cutoff_day, *kept]}
    listed = await list_all(channel, 100, parent="games/g")
    assert [e.name for page in listed for e in page.delivery_logs] == [w.name for w in reversed(kept)]


async def test_rows_of_a_day_without_a_partition_are_kept_and_moved_into_one(tmp_path, postgresql_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """The default partition catches them at once; the next maintenance gives their day a partition of its own."""
    settings = settings_for(tmp_path, postgresql_url, fake_network, log_purge_interval_s=0.05)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        written = await write_logs(app, [row(config, 10 * DAY), row(config, 10 * DAY - 1), row(config, -9 * DAY)],
                                   {"tt": config})
        days = {log_partitions.partition_name(log_partitions.day_start_us(w.attempt_time_us)) for w in written}

        async def moved() -> bool:
            where = await placement(app)
            return all(where[w.id] == log_partitions.partition_name(log_partitions.day_start_us(w.attempt_time_us))
                       for w in written)

        await wait_until(moved)
        assert days <= await day_partitions(app)
        listed = await list_all(channel, 1, parent="games/g")
        assert [e.name for page in listed for e in page.delivery_logs] == [w.name for w in reversed(written)]


async def test_listing_and_streaming_page_and_resume_across_a_day_boundary(app, channel) -> None:  # type: ignore[no-untyped-def]
    config = await make_config(app, channel, "g", "tt")
    configs = {"tt": config}
    now_us = int(time.time() * 1_000_000)
    midnight_us = log_partitions.day_start_us(now_us)
    await log_partitions.ensure_delivery_log_partitions(app.db, midnight_us - DAY_US, midnight_us + 2 * DAY_US)
    # Seconds after midnight: three rows of yesterday's partition, then three of today's.
    offsets_s = [-3, -2, -1, 1, 2, 3]
    written = await write_logs(app, [row(config, (now_us - midnight_us) / 1e6 - offset) for offset in offsets_s],
                               configs)
    if not app.db.is_sqlite:
        where = await placement(app)
        assert {where[w.id] for w in written} == {log_partitions.partition_name(midnight_us - DAY_US),
                                                  log_partitions.partition_name(midnight_us)}

    listed = await list_all(channel, 2, parent="games/g")
    assert [e.name for page in listed for e in page.delivery_logs] == [w.name for w in reversed(written)]

    first = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
        parent="games/g", start_time=ts(at=(midnight_us - DAY_US) / 1e6)))
    head = await read_entries(first, 3)
    first.cancel()
    assert [m.delivery_log.name for m in head] == [w.name for w in written[:3]]
    resumed = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(
        parent="games/g", resume_token=head[-1].resume_token))
    rest, _ = await read_until_heartbeat(resumed)
    assert [m.delivery_log.name for m in rest] == [w.name for w in written[3:]]
    [tomorrow] = await write_logs(app, [row(config, (now_us - midnight_us - DAY_US) / 1e6 - 1)], configs)
    assert [m.delivery_log.name for m in await read_entries(resumed, 1)] == [tomorrow.name]
    resumed.cancel()
    if not app.db.is_sqlite:
        assert (await placement(app))[tomorrow.id] == log_partitions.partition_name(midnight_us + DAY_US)


async def test_the_app_purges_periodically(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, log_purge_interval_s=0.05)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        config = await make_config(app, channel, "g", "tt")
        written = await write_logs(app, [row(config, 40 * DAY - i) for i in range(3)], {"tt": config})

        async def count() -> int:
            async with app.db.transaction() as session:
                return await session.scalar(select(func.count()).select_from(DeliveryLog)) or 0

        # SQLite keeps the newest row so it never hands its id out again (expired, so never listed); PostgreSQL's
        # ids come from a sequence, and the day goes whole.
        await wait_until(lambda: count_is(count, 1 if app.db.is_sqlite else 0))
        async with app.db.transaction() as session:
            assert (await session.scalars(select(DeliveryLog.id))).all() == (
                [written[-1].id] if app.db.is_sqlite else [])
        listed = await stub(channel).ListDeliveryLogs(pb.ListDeliveryLogsRequest(parent="games/g"))
        assert list(listed.delivery_logs) == []


async def count_is(count, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await count() == expected


async def test_a_window_skips_older_history_by_id_yet_keeps_what_was_recorded_late(app, channel) -> None:  # type: ignore[no-untyped-def]
    """A window's reads start after the last row attempted over the recording bound before it; a row attempted
    just before the window but recorded after rows inside it must not move that start past them."""
    config = await make_config(app, channel, "g", "tt")
    configs = {"tt": config}
    hour_s = delivery_logs.RECORDING_DELAY_BOUND_US / 1e6
    await write_logs(app, [row(config, hour_s * age) for age in (5, 4, 3)], configs)
    inside = await write_logs(app, [row(config, 1800), row(config, 600)], configs)
    await write_logs(app, [row(config, hour_s + 600)], configs)  # before the window, recorded after those inside
    start = ts(at=time.time() - hour_s)

    listed = await list_all(channel, 1, parent="games/g", start_time=start)
    assert [e.name for page in listed for e in page.delivery_logs] == [w.name for w in reversed(inside)]
    call = stub(channel).StreamDeliveryLogs(pb.StreamDeliveryLogsRequest(parent="games/g", start_time=start))
    backlog, _ = await read_until_heartbeat(call)
    call.cancel()
    assert [m.delivery_log.name for m in backlog] == [w.name for w in inside]
