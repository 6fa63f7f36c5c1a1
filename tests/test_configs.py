"""Postback config management and game settings over a real channel, against the fake network."""

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from postbacks.v1 import (
    game_settings_pb2,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2_grpc,
)
from postbacks.v1 import postback_config_service_pb2 as pb
from tests.helpers import TIKTOK_TOKEN, create_config, error_reason, field_violations

GAME_LAUNCH = network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH
PURCHASE = network_pb2.CONVERSION_EVENT_TYPE_PURCHASE


def stub(channel) -> postback_config_service_pb2_grpc.PostbackConfigServiceStub:  # type: ignore[no-untyped-def]
    return postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)


async def test_create_returns_a_hint_never_the_token(channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g", config_id="tiktok-main")
    assert config.name == "games/g/postbackConfigs/tiktok-main"
    assert config.access_token_hint == "…" + TIKTOK_TOKEN[-4:]
    assert not config.HasField("credentials")
    assert TIKTOK_TOKEN not in str(config)
    assert config.enabled and config.health == postback_config_pb2.POSTBACK_CONFIG_HEALTH_NO_RECENT_ACTIVITY
    got = (await stub(channel).GetPostbackConfig(pb.GetPostbackConfigRequest(name=config.name))).postback_config
    assert got == config


async def test_credentials_are_trimmed(channel, fake_network) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g", network=network_pb2.NETWORK_REDDIT, token=f"  {TIKTOK_TOKEN}\n",
                                 pixel_id="  a2_abc123 ")
    assert config.pixel_id == "a2_abc123"
    request = fake_network.received("reddit")[-1]
    assert request.headers["Authorization"] == f"Bearer {TIKTOK_TOKEN}"


@pytest.mark.parametrize(
    ("network", "token", "pixel", "triggers", "field"),
    [
        (network_pb2.NETWORK_REDDIT, "tok", "t2_wrong", [GAME_LAUNCH], "postback_config.credentials.pixel_id"),
        (network_pb2.NETWORK_REDDIT, "tok", "", [GAME_LAUNCH], "postback_config.credentials.pixel_id"),
        (network_pb2.NETWORK_TIKTOK, "", "PIX", [GAME_LAUNCH], "postback_config.credentials.access_token"),
        (network_pb2.NETWORK_TIKTOK, "two words", "PIX", [GAME_LAUNCH], "postback_config.credentials.access_token"),
        (network_pb2.NETWORK_TIKTOK, "tok", "PIX", [], "postback_config.trigger_events"),
        (network_pb2.NETWORK_TIKTOK, "tok", "PIX", [9], "postback_config.trigger_events[0]"),
        (network_pb2.NETWORK_UNSPECIFIED, "tok", "PIX", [GAME_LAUNCH], "postback_config.network"),
    ],
)
async def test_bad_configs_are_refused_and_nothing_is_saved(channel, network, token, pixel, triggers, field) -> None:  # type: ignore[no-untyped-def]
    config = postback_config_pb2.PostbackConfig(
        network=network, trigger_events=triggers,
        credentials=postback_config_pb2.PostbackCredentials(access_token=token, pixel_id=pixel))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).CreatePostbackConfig(pb.CreatePostbackConfigRequest(parent="games/g", postback_config=config))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    listed = await stub(channel).ListPostbackConfigs(pb.ListPostbackConfigsRequest(parent="games/g"))
    assert list(listed.postback_configs) == []


async def test_duplicate_id_is_already_exists(channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g", config_id="dup")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await create_config(channel, "g", config_id="dup")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error.value) == "POSTBACK_CONFIG_EXISTS"


async def test_list_paginates_over_several_configs_per_network(channel) -> None:  # type: ignore[no-untyped-def]
    names = [(await create_config(channel, "g", config_id=f"c{i}")).name for i in range(5)]
    await create_config(channel, "other-game", config_id="c9")
    seen, token = [], ""
    while True:
        page = await stub(channel).ListPostbackConfigs(
            pb.ListPostbackConfigsRequest(parent="games/g", page_size=2, page_token=token))
        assert len(page.postback_configs) <= 2
        seen += [c.name for c in page.postback_configs]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).ListPostbackConfigs(pb.ListPostbackConfigsRequest(parent="games/other-game", page_token=token or "x"))
    assert "page_token" in field_violations(error.value)


async def test_update_follows_the_mask_and_refuses_credentials(channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g", config_id="c1")
    change = postback_config_pb2.PostbackConfig(name=config.name, display_name="Renamed", enabled=False,
                                                trigger_events=[PURCHASE])
    updated = (await stub(channel).UpdatePostbackConfig(pb.UpdatePostbackConfigRequest(
        postback_config=change, update_mask=field_mask_pb2.FieldMask(paths=["enabled", "trigger_events"])))).postback_config
    assert (updated.enabled, list(updated.trigger_events), updated.display_name) == (False, [PURCHASE], config.display_name)
    for paths, expected in ((["credentials"], "RotatePostbackCredentials"), (["network"], "cannot be updated"),
                            ([], "required")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub(channel).UpdatePostbackConfig(pb.UpdatePostbackConfigRequest(
                postback_config=change, update_mask=field_mask_pb2.FieldMask(paths=paths)))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in field_violations(error.value)["update_mask"]


async def test_delete_then_not_found(channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g", config_id="gone")
    await stub(channel).DeletePostbackConfig(pb.DeletePostbackConfigRequest(name=config.name))
    for call in (stub(channel).GetPostbackConfig(pb.GetPostbackConfigRequest(name=config.name)),
                 stub(channel).DeletePostbackConfig(pb.DeletePostbackConfigRequest(name=config.name))):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(channel).GetPostbackConfig(pb.GetPostbackConfigRequest(name="games/g/postbackConfigs/Not_Valid"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_game_settings_default_then_update_within_bounds(channel) -> None:  # type: ignore[no-untyped-def]
    settings = game_settings_service_pb2_grpc.GameSettingsServiceStub(channel)
    got = (await settings.GetGameSettings(game_settings_service_pb2.GetGameSettingsRequest(
        name="games/g/settings"))).game_settings
    assert got.attribution_lookback.seconds == 7 * 86400 and not got.HasField("update_time")

    def update(days: float):  # type: ignore[no-untyped-def]
        return settings.UpdateGameSettings(game_settings_service_pb2.UpdateGameSettingsRequest(
            game_settings=game_settings_pb2.GameSettings(
                name="games/g/settings", attribution_lookback=duration_pb2.Duration(seconds=int(days * 86400))),
            update_mask=field_mask_pb2.FieldMask(paths=["attribution_lookback"])))

    assert (await update(28)).game_settings.attribution_lookback.seconds == 28 * 86400
    for days in (0.5, 29):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await update(days)
        assert "game_settings.attribution_lookback" in field_violations(error.value)
    got = (await settings.GetGameSettings(game_settings_service_pb2.GetGameSettingsRequest(
        name="games/g/settings"))).game_settings
    assert got.attribution_lookback.seconds == 28 * 86400


@pytest.mark.parametrize(("seconds", "nanos"), [(3 * 86400, 1_000_000_000), (3 * 86400, -1), (2 * 86400, 2**31 - 1),
                                                (315_576_000_001, 0)])
async def test_a_lookback_outside_durations_range_is_refused(channel, seconds: int, nanos: int) -> None:  # type: ignore[no-untyped-def]
    """Nanos of a second or more, or of the other sign, would read as a lookback the seconds do not say."""
    settings = game_settings_service_pb2_grpc.GameSettingsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await settings.UpdateGameSettings(game_settings_service_pb2.UpdateGameSettingsRequest(
            game_settings=game_settings_pb2.GameSettings(
                name="games/g/settings", attribution_lookback=duration_pb2.Duration(seconds=seconds, nanos=nanos)),
            update_mask=field_mask_pb2.FieldMask(paths=["attribution_lookback"])))
    assert "game_settings.attribution_lookback" in field_violations(error.value)
