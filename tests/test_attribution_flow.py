"""Attribution through the running service: decisions, reasons, owed postbacks, late data, GetConversion."""

import json

import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from postbacks.v1 import (
    conversion_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    game_settings_pb2,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    network_pb2,
)
from tests.helpers import click, create_config, grpcurl, identify, ingest, launch, purchase

TIKTOK, REDDIT = network_pb2.NETWORK_TIKTOK, network_pb2.NETWORK_REDDIT
GAME_LAUNCH, PURCHASE = network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH, network_pb2.CONVERSION_EVENT_TYPE_PURCHASE
OWED, NO_POSTBACK = conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED, conversion_pb2.CONVERSION_DECISION_NO_POSTBACK
R = conversion_pb2.NoPostbackReason


def owed_configs(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.postback_config for p in result.conversion.postbacks]


async def test_click_identify_first_launch_second_launch_purchase(channel) -> None:  # type: ignore[no-untyped-def]
    main = await create_config(channel, "g", config_id="tt-main")
    second = await create_config(channel, "g", config_id="tt-second-pixel", pixel_id="OTHERPIXEL")
    only_purchases = await create_config(channel, "g", config_id="tt-purchases", triggers=[PURCHASE])
    await create_config(channel, "g", config_id="rd", network=REDDIT)

    await ingest(channel, "g", click("c1", anonymous_id="visitor", landing_url="https://g.example/?ttclid=TT-1",
                                     seconds_ago=3600))
    await ingest(channel, "g", identify("i1", user_id="player", anonymous_id="visitor", seconds_ago=1800))
    first = await ingest(channel, "g", launch("launch-1", user_id="player", seconds_ago=60))
    assert first.conversion.decision == OWED
    assert first.conversion.attributed_click.click_id == "TT-1"
    assert owed_configs(first) == [main.name, second.name]
    assert all(p.state == conversion_pb2.POSTBACK_STATE_PENDING for p in first.conversion.postbacks)

    repeat = await ingest(channel, "g", launch("launch-2", user_id="player", seconds_ago=30))
    assert (repeat.conversion.decision, repeat.conversion.no_postback_reason) == (NO_POSTBACK, R.NO_POSTBACK_REASON_REPEAT_LAUNCH)
    assert owed_configs(repeat) == []

    bought = await ingest(channel, "g", purchase("buy-1", user_id="player", value="9.99", currency="USD", seconds_ago=10))
    assert owed_configs(bought) == [main.name, only_purchases.name, second.name]
    assert (bought.conversion.value, bought.conversion.currency) == ("9.99", "USD")


async def test_organic_player_owes_nothing_and_says_organic(channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g")
    await ingest(channel, "g", click("untagged", anonymous_id="v", landing_url="https://g.example/?utm_source=x"))
    await ingest(channel, "g", identify("i", user_id="p", anonymous_id="v"))
    result = await ingest(channel, "g", launch("l", user_id="p"))
    assert (result.conversion.decision, result.conversion.no_postback_reason) == (NO_POSTBACK, R.NO_POSTBACK_REASON_ORGANIC)
    assert not result.conversion.HasField("attributed_click")


async def test_reddit_without_click_id_or_email_says_no_match_key(channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g", network=REDDIT)
    await ingest(channel, "g", click("c", anonymous_id="v", network=REDDIT))  # campaign tags only: no rdt_cid
    result = await ingest(channel, "g", launch("l", anonymous_id="v"))
    assert result.conversion.no_postback_reason == R.NO_POSTBACK_REASON_NO_MATCH_KEY
    assert result.conversion.attributed_click.network == REDDIT

    # The same click with an email from sign-up is matched by the hashed email instead.
    await ingest(channel, "g", click("c2", anonymous_id="v2", network=REDDIT))
    await ingest(channel, "g", identify("i2", user_id="p2", anonymous_id="v2", email="Player@Example.com"))
    result = await ingest(channel, "g", launch("l2", user_id="p2"))
    assert result.conversion.decision == OWED


@pytest.mark.parametrize(
    ("configs", "reason"),
    [
        ([], R.NO_POSTBACK_REASON_NETWORK_NOT_CONFIGURED),
        ([{"enabled": False}], R.NO_POSTBACK_REASON_CONFIG_DISABLED),
        ([{"triggers": [PURCHASE]}], R.NO_POSTBACK_REASON_EVENT_TYPE_NOT_SELECTED),
        ([{"network": REDDIT}], R.NO_POSTBACK_REASON_NETWORK_NOT_CONFIGURED),
    ],
)
async def test_reasons_when_the_click_is_paid_but_nothing_is_configured_to_send(channel, configs, reason) -> None:  # type: ignore[no-untyped-def]
    for i, options in enumerate(configs):
        await create_config(channel, "g", config_id=f"c{i}", **options)
    await ingest(channel, "g", click("c", anonymous_id="v", landing_url="https://g.example/?ttclid=T"))
    result = await ingest(channel, "g", launch("l", anonymous_id="v"))
    assert (result.conversion.decision, result.conversion.no_postback_reason) == (NO_POSTBACK, reason)
    assert result.conversion.attributed_click.click_id == "T"


async def test_lookback_window_follows_the_game_setting(channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g")
    settings = game_settings_service_pb2_grpc.GameSettingsServiceStub(channel)
    await settings.UpdateGameSettings(game_settings_service_pb2.UpdateGameSettingsRequest(
        game_settings=game_settings_pb2.GameSettings(name="games/g/settings",
                                                     attribution_lookback=duration_pb2.Duration(seconds=86400)),
        update_mask=field_mask_pb2.FieldMask(paths=["attribution_lookback"])))
    await ingest(channel, "g", click("old", anonymous_id="v", landing_url="https://g.example/?ttclid=OLD",
                                     seconds_ago=2 * 86400))
    result = await ingest(channel, "g", purchase("p", anonymous_id="v"))
    assert result.conversion.no_postback_reason == R.NO_POSTBACK_REASON_CLICK_OUTSIDE_WINDOW

    await ingest(channel, "g", click("new", anonymous_id="v", landing_url="https://g.example/?ttclid=NEW",
                                     seconds_ago=3600))
    result = await ingest(channel, "g", purchase("p2", anonymous_id="v"))
    assert result.conversion.attributed_click.click_id == "NEW"


async def test_last_click_wins_and_credits_one_network(channel) -> None:  # type: ignore[no-untyped-def]
    tiktok = await create_config(channel, "g", config_id="tt")
    await create_config(channel, "g", config_id="rd", network=REDDIT)
    await ingest(channel, "g", click("c-rd", anonymous_id="v", landing_url="https://g.example/?rdt_cid=R1", seconds_ago=500))
    await ingest(channel, "g", click("c-tt", anonymous_id="v", landing_url="https://g.example/?ttclid=T1", seconds_ago=400))
    await ingest(channel, "g", click("after", anonymous_id="v", landing_url="https://g.example/?rdt_cid=R2", seconds_ago=1))
    result = await ingest(channel, "g", launch("l", anonymous_id="v", seconds_ago=100))
    assert owed_configs(result) == [tiktok.name]


async def test_late_click_and_late_identity_attribute_a_recent_conversion(channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g")
    early = await ingest(channel, "g", launch("l", user_id="p", seconds_ago=60))
    assert early.conversion.no_postback_reason == R.NO_POSTBACK_REASON_ORGANIC
    await ingest(channel, "g", click("c", anonymous_id="v", landing_url="https://g.example/?ttclid=LATE", seconds_ago=600))
    await ingest(channel, "g", identify("i", user_id="p", anonymous_id="v", seconds_ago=120))
    events = event_service_pb2_grpc.EventServiceStub(channel)
    conversion = (await events.GetConversion(event_service_pb2.GetConversionRequest(
        name="games/g/conversions/l"))).conversion
    assert conversion.decision == OWED
    assert conversion.attributed_click.click_id == "LATE"
    assert [p.postback_config for p in conversion.postbacks] == [config.name]


@pytest.mark.parametrize("late_click", [
    {"user_id": "p"},  # on the user the device is linked to
    {"anonymous_id": "tablet"},  # on another device of that user
], ids=["click-of-the-user", "click-of-another-device"])
@pytest.mark.parametrize("one_call", [False, True], ids=["later-call", "same-call"])
async def test_late_click_reaches_a_conversion_known_only_by_a_linked_device(channel, late_click, one_call) -> None:  # type: ignore[no-untyped-def]
    # The conversion carries only its device's anonymous id; the click names the user, or another device of the
    # user, and arrives after it (in a later call, or later in the same batch): the re-decision must still find the
    # conversion through the links.
    config = await create_config(channel, "g")
    await ingest(channel, "g", identify("i1", user_id="p", anonymous_id="laptop", seconds_ago=900))
    await ingest(channel, "g", identify("i2", user_id="p", anonymous_id="tablet", seconds_ago=900))
    conversion = purchase("buy", anonymous_id="laptop", seconds_ago=60)
    late = click("c", landing_url="https://g.example/?ttclid=LATE", seconds_ago=600, **late_click)
    if one_call:
        await event_service_pb2_grpc.EventServiceStub(channel).BatchIngestEvents(
            event_service_pb2.BatchIngestEventsRequest(parent="games/g", events=[conversion, late]))
    else:
        early = await ingest(channel, "g", conversion)
        assert early.conversion.no_postback_reason == R.NO_POSTBACK_REASON_ORGANIC
        await ingest(channel, "g", late)
    conversion = (await event_service_pb2_grpc.EventServiceStub(channel).GetConversion(
        event_service_pb2.GetConversionRequest(name="games/g/conversions/buy"))).conversion
    assert conversion.attributed_click.click_id == "LATE"
    assert [p.postback_config for p in conversion.postbacks] == [config.name]


async def test_identity_chain_across_devices(channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g")
    await ingest(channel, "g", click("c", anonymous_id="phone", landing_url="https://g.example/?ttclid=PHONE"))
    await ingest(channel, "g", identify("i1", user_id="p", anonymous_id="phone"))
    await ingest(channel, "g", identify("i2", user_id="p", anonymous_id="laptop"))
    result = await ingest(channel, "g", purchase("buy", anonymous_id="laptop"))
    assert result.conversion.attributed_click.click_id == "PHONE"


async def test_get_conversion_through_grpcurl_explains_the_decision(app, channel) -> None:  # type: ignore[no-untyped-def]
    await ingest(channel, "g", click("c", anonymous_id="v", landing_url="https://g.example/?ttclid=T"))
    await ingest(channel, "g", launch("l", anonymous_id="v"))
    code, out, err = await grpcurl(app.port, "postbacks.v1.EventService/GetConversion",
                                   data={"name": "games/g/conversions/l"})
    assert code == 0, err
    conversion = json.loads(out)["conversion"]
    assert conversion["decision"] == "CONVERSION_DECISION_NO_POSTBACK"
    assert conversion["no_postback_reason"] == "NO_POSTBACK_REASON_NETWORK_NOT_CONFIGURED"
    assert conversion["attributed_click"]["click_id"] == "T"


async def test_email_given_at_sign_up_reaches_both_networks_hashed_their_way(channel, fake_network) -> None:  # type: ignore[no-untyped-def]
    from server.core.hashing import hash_email_reddit, hash_email_tiktok
    from tests.conftest import wait_until
    from tests.dispatch_helpers import postback_requests, request_events

    await create_config(channel, "g", config_id="tt")
    await create_config(channel, "g", config_id="rd", network=REDDIT)
    email = " Al.ice+Games@Example.COM "
    await ingest(channel, "g", click("c-tt", anonymous_id="v1", landing_url="https://g.example/?ttclid=T"))
    await ingest(channel, "g", identify("i1", user_id="p1", anonymous_id="v1", email=email))
    await ingest(channel, "g", launch("l1", user_id="p1"))
    await ingest(channel, "g", click("c-rd", anonymous_id="v2", network=REDDIT))  # no click id: the email matches
    await ingest(channel, "g", identify("i2", user_id="p2", anonymous_id="v2", email=email))
    await ingest(channel, "g", launch("l2", user_id="p2"))

    await wait_until(lambda: postback_requests(fake_network, "tiktok") and postback_requests(fake_network, "reddit"))
    (tiktok_event,) = request_events(postback_requests(fake_network, "tiktok")[0])
    (reddit_event,) = request_events(postback_requests(fake_network, "reddit")[0])
    assert tiktok_event["user"]["email"] == [hash_email_tiktok(email)]
    assert reddit_event["user"]["email"] == hash_email_reddit(email)
