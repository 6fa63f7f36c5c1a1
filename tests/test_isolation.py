"""Tenant isolation: a key for game A reads, lists, streams, changes and erases nothing of game B, by any route."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from sqlalchemy import select

from postbacks.v1 import (
    delivery_log_pb2,
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    game_settings_pb2,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
    privacy_service_pb2,
    privacy_service_pb2_grpc,
)
from server.app import App
from server.core.access import KeyKind
from server.services import api_keys
from server.store.models import Delivery, DeliveryLog, Erasure, Event, Game, IdentityLink, PostbackConfig
from tests.conftest import wait_until
from tests.helpers import (
    authorized_channel,
    click,
    create_config,
    error_reason,
    identify,
    key_channel,
    launch,
)

GAMES = ("a", "b")
LAST_HOUR = delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR


def token_of(game: str) -> str:
    return f"tt-token-{game}-0123456789abcdef"


def events(ch) -> event_service_pb2_grpc.EventServiceStub:  # type: ignore[no-untyped-def]
    return event_service_pb2_grpc.EventServiceStub(ch)


def configs(ch) -> postback_config_service_pb2_grpc.PostbackConfigServiceStub:  # type: ignore[no-untyped-def]
    return postback_config_service_pb2_grpc.PostbackConfigServiceStub(ch)


def logs(ch) -> delivery_log_service_pb2_grpc.DeliveryLogServiceStub:  # type: ignore[no-untyped-def]
    return delivery_log_service_pb2_grpc.DeliveryLogServiceStub(ch)


def privacy(ch) -> privacy_service_pb2_grpc.PrivacyServiceStub:  # type: ignore[no-untyped-def]
    return privacy_service_pb2_grpc.PrivacyServiceStub(ch)


def settings(ch) -> game_settings_service_pb2_grpc.GameSettingsServiceStub:  # type: ignore[no-untyped-def]
    return game_settings_service_pb2_grpc.GameSettingsServiceStub(ch)


async def first_streamed(ch, parent: str, **request) -> delivery_log_service_pb2.StreamDeliveryLogsResponse:  # type: ignore[no-untyped-def]
    call = logs(ch).StreamDeliveryLogs(delivery_log_service_pb2.StreamDeliveryLogsRequest(parent=parent, **request))
    try:
        return await call.read()
    finally:
        call.cancel()


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# Every RPC, as a call on one game's resources: (scope it needs, call(channel, game)).
RPCS: dict[str, tuple[str, Callable[..., Awaitable[object]]]] = {
    "IngestEvent": ("events", lambda ch, g: events(ch).IngestEvent(event_service_pb2.IngestEventRequest(
        parent=f"games/{g}", event=launch("new-launch", user_id="q")))),
    "BatchIngestEvents": ("events", lambda ch, g: events(ch).BatchIngestEvents(
        event_service_pb2.BatchIngestEventsRequest(parent=f"games/{g}", events=[launch("new-launch", user_id="q")]))),
    "GetConversion": ("events", lambda ch, g: events(ch).GetConversion(
        event_service_pb2.GetConversionRequest(name=f"games/{g}/conversions/launch-1"))),
    "CreatePostbackConfig": ("admin", lambda ch, g: create_config(ch, g, config_id="new")),
    "GetPostbackConfig": ("admin", lambda ch, g: configs(ch).GetPostbackConfig(
        postback_config_service_pb2.GetPostbackConfigRequest(name=f"games/{g}/postbackConfigs/tt"))),
    "ListPostbackConfigs": ("admin", lambda ch, g: configs(ch).ListPostbackConfigs(
        postback_config_service_pb2.ListPostbackConfigsRequest(parent=f"games/{g}"))),
    "UpdatePostbackConfig": ("admin", lambda ch, g: configs(ch).UpdatePostbackConfig(
        postback_config_service_pb2.UpdatePostbackConfigRequest(
            postback_config=postback_config_pb2.PostbackConfig(name=f"games/{g}/postbackConfigs/tt",
                                                               display_name="renamed", enabled=False),
            update_mask=_mask("display_name", "enabled")))),
    "DeletePostbackConfig": ("admin", lambda ch, g: configs(ch).DeletePostbackConfig(
        postback_config_service_pb2.DeletePostbackConfigRequest(name=f"games/{g}/postbackConfigs/tt"))),
    "RotatePostbackCredentials": ("admin", lambda ch, g: configs(ch).RotatePostbackCredentials(
        postback_config_service_pb2.RotatePostbackCredentialsRequest(
            name=f"games/{g}/postbackConfigs/tt",
            credentials=postback_config_pb2.PostbackCredentials(access_token="tt-rotated-0123456789abcdef")))),
    "ValidatePostbackCredentials": ("admin", lambda ch, g: configs(ch).ValidatePostbackCredentials(
        postback_config_service_pb2.ValidatePostbackCredentialsRequest(
            parent=f"games/{g}", postback_config=f"games/{g}/postbackConfigs/tt"))),
    "ListDeliveryLogs": ("admin", lambda ch, g: logs(ch).ListDeliveryLogs(
        delivery_log_service_pb2.ListDeliveryLogsRequest(parent=f"games/{g}"))),
    "ListDeliveryLogs of a config": ("admin", lambda ch, g: logs(ch).ListDeliveryLogs(
        delivery_log_service_pb2.ListDeliveryLogsRequest(parent=f"games/{g}/postbackConfigs/tt"))),
    "StreamDeliveryLogs": ("admin", lambda ch, g: first_streamed(ch, f"games/{g}", time_range=LAST_HOUR)),
    "StreamDeliveryLogs of a config": ("admin", lambda ch, g: first_streamed(
        ch, f"games/{g}/postbackConfigs/tt", time_range=LAST_HOUR)),
    "DeleteUserData": ("admin", lambda ch, g: privacy(ch).DeleteUserData(
        privacy_service_pb2.DeleteUserDataRequest(parent=f"games/{g}", user_id="p"))),
    "GetGameSettings": ("admin", lambda ch, g: settings(ch).GetGameSettings(
        game_settings_service_pb2.GetGameSettingsRequest(name=f"games/{g}/settings"))),
    "UpdateGameSettings": ("admin", lambda ch, g: settings(ch).UpdateGameSettings(
        game_settings_service_pb2.UpdateGameSettingsRequest(
            game_settings=game_settings_pb2.GameSettings(name=f"games/{g}/settings",
                                                         attribution_lookback=duration_pb2.Duration(seconds=86_400)),
            update_mask=_mask("attribution_lookback")))),
}


@dataclass
class World:
    app: App
    ingest_a: str
    admin_a: str


async def snapshot(app: App, game: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table that belongs to `game`."""
    tables = (Event, IdentityLink, PostbackConfig, Delivery, DeliveryLog, Erasure, Game)
    state = {}
    async with app.db.transaction() as session:
        for model in tables:
            rows = (await session.execute(select(model).where(model.game_id == game))).scalars().all()
            columns = [c.key for c in model.__table__.columns]
            state[model.__tablename__] = sorted(tuple(getattr(r, c) for c in columns) for r in rows)
    return state


@pytest.fixture
async def world(app: App, fake_network) -> World:  # type: ignore[no-untyped-def]
    """Games a and b with the same ids inside: two configs each, an attributed launch delivered, logs written."""
    async with authorized_channel(app) as ch:
        for game in GAMES:
            await create_config(ch, game, config_id="tt", token=token_of(game))
            await create_config(ch, game, config_id="tt2", token=token_of(game) + "2")
            await events(ch).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(parent=f"games/{game}", events=[
                click("click-1", anonymous_id="v", landing_url=f"https://{game}.example/?ttclid=T-{game}"),
                identify("identify-1", user_id="p", anonymous_id="v"),
                launch("launch-1", user_id="p"),
            ]))

        async def delivered(game: str) -> bool:
            conversion = (await events(ch).GetConversion(event_service_pb2.GetConversionRequest(
                name=f"games/{game}/conversions/launch-1"))).conversion
            listed = await logs(ch).ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(
                parent=f"games/{game}"))
            return len(conversion.postbacks) == 2 and all(p.attempt_count for p in conversion.postbacks) and \
                len(listed.delivery_logs) == 2

        for game in GAMES:
            await wait_until(lambda game=game: delivered(game))  # type: ignore[misc]
    ingest_a, _ = await api_keys.create_key(app.ctx, KeyKind.INGEST, ["a"])
    admin_a, _ = await api_keys.create_key(app.ctx, KeyKind.ADMIN, ["a"])
    return World(app, ingest_a, admin_a)


def key_for(world: World, scope: str) -> str:
    return world.ingest_a if scope == "events" else world.admin_a


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_a_key_for_game_a_reaches_nothing_of_game_b(world: World, fake_network, rpc: str) -> None:  # type: ignore[no-untyped-def]
    scope, call = RPCS[rpc]
    before, requests_before = await snapshot(world.app, "b"), len(fake_network.received())
    async with key_channel(world.app.port, key_for(world, scope)) as ch:
        error = await refused(call(ch, "b"))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error) == "API_KEY_NOT_ALLOWED"
        assert await snapshot(world.app, "b") == before
        assert len(fake_network.received()) == requests_before  # nothing of b was sent anywhere either
        await call(ch, "a")  # the same call on its own game succeeds: the refusal is about the game


@pytest.mark.parametrize("rpc", [rpc for rpc, (scope, _) in RPCS.items() if rpc != "GetConversion"])
async def test_a_key_outside_its_scope_is_refused_even_for_its_own_game(world: World, rpc: str) -> None:
    scope, call = RPCS[rpc]
    wrong_key = world.admin_a if scope == "events" else world.ingest_a
    before = await snapshot(world.app, "a")
    async with key_channel(world.app.port, wrong_key) as ch:
        error = await refused(call(ch, "a"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"needs an {'ingest' if scope == 'events' else 'admin'} key" in (error.details() or "")
    assert await snapshot(world.app, "a") == before


async def test_page_and_resume_tokens_of_game_b_open_nothing_in_game_a(world: World) -> None:
    async with authorized_channel(world.app) as ch:
        config_token_b = (await configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
            parent="games/b", page_size=1))).next_page_token
        log_token_b = (await logs(ch).ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(
            parent="games/b", page_size=1))).next_page_token
        resume_token_b = (await first_streamed(ch, "games/b", time_range=LAST_HOUR)).resume_token
    assert config_token_b and log_token_b and resume_token_b
    async with key_channel(world.app.port, world.admin_a) as ch:
        with_b_tokens = [
            configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
                parent="games/a", page_size=1, page_token=config_token_b)),
            logs(ch).ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(
                parent="games/a", page_size=1, page_token=log_token_b)),
            first_streamed(ch, "games/a", resume_token=resume_token_b),
        ]
        for call in with_b_tokens:
            error = await refused(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "different parent" in (error.details() or "")
        # A's own tokens still work, and carry it to A's data only.
        page = await configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
            parent="games/a", page_size=1))
        rest = await configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
            parent="games/a", page_size=1, page_token=page.next_page_token))
        # A's token on B's parent is refused for the parent before any token is read.
        error = await refused(configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
            parent="games/b", page_size=1, page_token=page.next_page_token)))
    assert [c.name for c in (*page.postback_configs, *rest.postback_configs)] == [
        "games/a/postbackConfigs/tt", "games/a/postbackConfigs/tt2"]
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_names_of_game_b_inside_a_request_for_game_a_are_refused(world: World, fake_network) -> None:  # type: ignore[no-untyped-def]
    sent_with_b_token = len([r for r in fake_network.received() if r.token == token_of("b")])
    async with key_channel(world.app.port, world.admin_a) as ch:
        mixed = await refused(configs(ch).ValidatePostbackCredentials(
            postback_config_service_pb2.ValidatePostbackCredentialsRequest(
                parent="games/a", postback_config="games/b/postbackConfigs/tt")))
        config_of_b = await refused(logs(ch).ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(
            parent="games/b/postbackConfigs/tt")))
    assert mixed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert config_of_b.code() == grpc.StatusCode.PERMISSION_DENIED
    # B's stored token was not used to validate anything.
    assert len([r for r in fake_network.received() if r.token == token_of("b")]) == sent_with_b_token


async def test_lists_and_streams_for_game_a_hold_only_game_a(world: World) -> None:
    async with key_channel(world.app.port, world.admin_a) as ch:
        listed = await configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(
            parent="games/a"))
        entries = await logs(ch).ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(parent="games/a"))
        streamed = await first_streamed(ch, "games/a", time_range=LAST_HOUR)
    names = [c.name for c in listed.postback_configs] + [e.name for e in entries.delivery_logs] + [
        streamed.delivery_log.name]
    assert len(names) == 5
    assert all(name.startswith("games/a/") for name in names)


async def test_erasing_a_player_of_game_a_leaves_the_same_ids_in_game_b_alone(world: World) -> None:
    before_b = await snapshot(world.app, "b")
    async with key_channel(world.app.port, world.admin_a) as ch:
        erased = await privacy(ch).DeleteUserData(privacy_service_pb2.DeleteUserDataRequest(
            parent="games/a", user_id="p", anonymous_id="v"))
    assert erased.deleted_event_count == 3
    assert await snapshot(world.app, "b") == before_b
    assert not (await snapshot(world.app, "a"))["events"]
