"""Erasure end to end: the player's data goes, undelivered postbacks are never sent, later events owe nothing."""

import grpc
import pytest
from sqlalchemy import select

from postbacks.v1 import (
    conversion_pb2,
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    privacy_service_pb2,
    privacy_service_pb2_grpc,
)
from server.core.hashing import hash_email_tiktok
from server.store.models import Erasure, Event, IdentityLink
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import renderings, sent_dedup_ids
from tests.helpers import (
    authorized_channel,
    click,
    create_config,
    field_violations,
    identify,
    ingest,
    launch,
    purchase,
)

EMAIL = "Erased.Player@Example.com"
PENDING = conversion_pb2.POSTBACK_STATE_PENDING
USER_ERASED = conversion_pb2.NO_POSTBACK_REASON_USER_ERASED


def privacy(channel) -> privacy_service_pb2_grpc.PrivacyServiceStub:  # type: ignore[no-untyped-def]
    return privacy_service_pb2_grpc.PrivacyServiceStub(channel)


async def erase(channel, **who: str) -> privacy_service_pb2.DeleteUserDataResponse:  # type: ignore[no-untyped-def]
    return await privacy(channel).DeleteUserData(privacy_service_pb2.DeleteUserDataRequest(parent="games/g", **who))


def counts(response: privacy_service_pb2.DeleteUserDataResponse) -> tuple[int, int, int, int]:
    return (response.deleted_event_count, response.deleted_identity_link_count, response.deleted_conversion_count,
            response.cancelled_postback_count)


async def get_conversion(channel, event_id: str) -> conversion_pb2.Conversion:  # type: ignore[no-untyped-def]
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    return (await stub.GetConversion(event_service_pb2.GetConversionRequest(
        name=f"games/g/conversions/{event_id}"))).conversion


async def player_on_two_devices(channel) -> None:  # type: ignore[no-untyped-def]
    """Player p1: a paid click on each of two devices, both linked to p1 (one identify with the email), then a
    first launch and a purchase that each owe a TikTok postback. Player p9: the same, once, untouched by erasure."""
    for event in (
        click("p1-click-1", anonymous_id="v1", landing_url="https://g.example/?ttclid=TT-P1-1"),
        click("p1-click-2", anonymous_id="v2", landing_url="https://g.example/?ttclid=TT-P1-2"),
        identify("p1-identify-1", user_id="p1", anonymous_id="v1", email=EMAIL),
        identify("p1-identify-2", user_id="p1", anonymous_id="v2"),
        launch("p1-launch", user_id="p1"),
        purchase("p1-purchase", user_id="p1", value="4.99", currency="EUR"),
        click("p9-click", anonymous_id="v9", landing_url="https://g.example/?ttclid=TT-P9"),
        identify("p9-identify", user_id="p9", anonymous_id="v9"),
        launch("p9-launch", user_id="p9"),
    ):
        await ingest(channel, "g", event)


P1_EVENTS = 6
P1_LINKS = 2
P1_CONVERSIONS = 2
P1_CONVERSION_IDS = {"p1-launch", "p1-purchase"}


async def test_a_pending_postback_of_an_erased_player_is_never_sent(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    # An API-only server dispatches nothing: the postbacks stay pending until the dispatcher starts below.
    settings = settings_for(tmp_path, database_url, fake_network, role="api")
    async with running_app(settings) as api, authorized_channel(api) as channel:
        await create_config(channel, "g", config_id="tt")
        await player_on_two_devices(channel)
        assert [p.state for p in (await get_conversion(channel, "p1-launch")).postbacks] == [PENDING]
        assert len(await renderings(api)) == 3  # p1's launch and purchase, p9's launch

        first = await erase(channel, user_id="p1")
        assert counts(first) == (P1_EVENTS, P1_LINKS, P1_CONVERSIONS, 2)
        second = await erase(channel, user_id="p1")
        assert counts(second) == (0, 0, 0, 0)

        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await get_conversion(channel, "p1-launch")
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert [p.state for p in (await get_conversion(channel, "p9-launch")).postbacks] == [PENDING]
        assert await renderings(api) == {}  # the others' too: theirs is rendered again when sent

    async with running_app(settings.replace(role="dispatcher")):
        await wait_until(lambda: "p9-launch" in sent_dedup_ids(fake_network))
    # p9's postback went out in the dispatcher's first claim, with p1's had they still been due.
    assert not P1_CONVERSION_IDS & set(sent_dedup_ids(fake_network))
    assert not any(b"TT-P1" in r.body for r in fake_network.received())  # their click ids never went out


async def test_later_events_of_an_erased_player_are_accepted_and_owe_nothing(app, channel) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g", config_id="tt")
    await player_on_two_devices(channel)
    await erase(channel, user_id="p1")
    later = [
        # by user id; by a device of theirs the erasure found through an identity link (no user id); by their email
        purchase("p1-later-purchase", user_id="p1", value="1.00", currency="EUR"),
        click("p1-later-click", anonymous_id="v2", landing_url="https://g.example/?ttclid=TT-P1-3"),
        launch("p1-later-launch", anonymous_id="v2"),
        purchase("new-account-purchase", user_id="p1-new-account", email=EMAIL.upper()),
    ]
    results = [await ingest(channel, "g", event) for event in later]
    for result in (results[0], results[2], results[3]):
        assert result.conversion.decision == conversion_pb2.CONVERSION_DECISION_NO_POSTBACK
        assert result.conversion.no_postback_reason == USER_ERASED
        assert not result.conversion.postbacks
    # The control shows the same kind of events still earn postbacks for anyone else.
    control = await ingest(channel, "g", purchase("p9-purchase", user_id="p9", value="1.00", currency="EUR"))
    assert control.conversion.decision == conversion_pb2.CONVERSION_DECISION_POSTBACK_OWED

    # The later events are the player's too: erasing again removes those carrying an identifier it names. (The
    # links that led from p1 to device v2 went with the first erasure, so v2 is named here.)
    again = await erase(channel, user_id="p1", anonymous_id="v2", email=EMAIL)
    assert counts(again) == (4, 0, 3, 0)


@pytest.mark.parametrize("who", [{"user_id": "p1"}, {"anonymous_id": "v2"}, {"email": f"  {EMAIL.lower()} "}])
async def test_any_identifier_of_the_player_finds_all_of_their_data(app, channel, who) -> None:  # type: ignore[no-untyped-def]
    await player_on_two_devices(channel)
    response = await erase(channel, **who)
    assert counts(response) == (P1_EVENTS, P1_LINKS, P1_CONVERSIONS, 0)  # no config: nothing was owed
    async with app.db.transaction() as session:
        left = (await session.execute(select(Event.user_id, Event.anonymous_id))).all()
        links = (await session.execute(select(IdentityLink.user_id))).scalars().all()
        tombstones = set((await session.execute(select(Erasure.subject_sha256))).scalars())
    assert {u or a for u, a in left} == {"p9", "v9"}
    assert links == ["p9"]
    # Tombstones are hashes only: none is an identifier or the email's hash in clear.
    assert len(tombstones) == 4  # user p1, devices v1 and v2, the email
    assert not tombstones & {"p1", "v1", "v2", EMAIL, hash_email_tiktok(EMAIL)}


async def test_erasing_one_user_of_a_shared_device_keeps_the_other_users_own_data(app, channel) -> None:  # type: ignore[no-untyped-def]
    for event in (
        identify("p1-on-shared", user_id="p1", anonymous_id="shared"),
        identify("p2-on-shared", user_id="p2", anonymous_id="shared"),
        identify("p2-own-device", user_id="p2", anonymous_id="p2-phone"),
        launch("p2-launch", user_id="p2", anonymous_id="p2-phone"),
    ):
        await ingest(channel, "g", event)
    response = await erase(channel, user_id="p1")
    assert response.deleted_event_count == 2  # the two identifies on the shared device name it
    assert (await get_conversion(channel, "p2-launch")).event_id == "p2-launch"


async def test_delivered_postbacks_stay_delivered_and_their_logs_hold_no_personal_data(app, channel, fake_network) -> None:  # type: ignore[no-untyped-def]
    await create_config(channel, "g", config_id="tt")
    await ingest(channel, "g", click("c", anonymous_id="v1", landing_url="https://g.example/?ttclid=TT-P1",
                                     ip_address="203.0.113.9", user_agent="PlayerAgent/7"))
    await ingest(channel, "g", identify("i", user_id="p1", anonymous_id="v1", email=EMAIL))
    # An event id without personal data, so that finding one in a log entry means the entry holds personal data.
    await ingest(channel, "g", launch("launch-1", user_id="p1", ip_address="203.0.113.9"))
    await wait_until(lambda: "launch-1" in sent_dedup_ids(fake_network))
    stub = delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel)

    async def entries() -> list[str]:
        listed = await stub.ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(parent="games/g"))
        return [str(entry) for entry in listed.delivery_logs]

    logged = await wait_until(entries)
    response = await erase(channel, user_id="p1")
    assert counts(response) == (3, 1, 1, 0)  # delivered: nothing left to cancel
    assert await entries() == logged  # the record of what was sent stays, and names only ids
    for personal in ("p1", "v1", EMAIL, EMAIL.lower(), hash_email_tiktok(EMAIL), "203.0.113.9", "PlayerAgent",
                     "TT-P1"):
        assert not [entry for entry in logged if personal in entry], personal


async def test_an_erasure_must_name_someone(channel) -> None:  # type: ignore[no-untyped-def]
    for who, field in (({}, "user_id"), ({"email": "not-an-email"}, "email")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await erase(channel, **who)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(error.value)
