"""Credential checks on create, rotate and validate against the fake network; test codes reach only the check."""

import pathlib

import grpc
import pytest
from sqlalchemy import select

from postbacks.v1 import network_pb2, postback_config_pb2, postback_config_service_pb2
from server.store.models import Base
from tests import helpers as h
from tests.conftest import wait_until
from tests.dispatch_helpers import config_stub, delivery_logs, get_config, postback_requests, rotate
from tests.fakes.fake_network import Reply

TIKTOK = network_pb2.NETWORK_TIKTOK
REDDIT = network_pb2.NETWORK_REDDIT
CHECK = postback_config_pb2.CredentialCheckResult
TEST_CODE = "TEST-CODE-7f3a91"
NETWORKS = [pytest.param(TIKTOK, "tiktok", id="tiktok"), pytest.param(REDDIT, "reddit", id="reddit")]
# What each network answers for a bad token, and the code or status the refusal must name.
REJECTIONS = {"tiktok": (Reply.tiktok(40105), "40105"), "reddit": (Reply.http(401), "HTTP 401")}


def sent_test_code(request, network: str) -> str | None:  # type: ignore[no-untyped-def]
    """Where each network takes a test code: TikTok at the top level, Reddit inside data."""
    body = request.json
    return body.get("test_event_code") if network == "tiktok" else body["data"].get("test_id")


def events_of(request, network: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    return request.json["data"] if network == "tiktok" else request.json["data"]["events"]


async def stored_text(app) -> str:  # type: ignore[no-untyped-def]
    """Everything the database holds, as text: every row of every table, plus the SQLite files' raw bytes."""
    parts = []
    async with app.db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in await session.execute(select(table))]
    if app.db.is_sqlite:
        database = pathlib.Path(app.db.url.database)
        for path in (database, database.with_name(database.name + "-wal")):
            if path.exists():
                parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


async def configs_of(channel, game: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    response = await config_stub(channel).ListPostbackConfigs(
        postback_config_service_pb2.ListPostbackConfigsRequest(parent=f"games/{game}"))
    return list(response.postback_configs)


async def create_with_test_code(channel, network: int, token: str = "", test_code: str = TEST_CODE):  # type: ignore[no-untyped-def]
    token = token or (h.TIKTOK_TOKEN if network == TIKTOK else h.REDDIT_TOKEN)
    pixel_id = "CTPIXEL123" if network == TIKTOK else "a2_pixel42"
    config = postback_config_pb2.PostbackConfig(
        display_name="main pixel", network=network,
        credentials=postback_config_pb2.PostbackCredentials(access_token=token, pixel_id=pixel_id),
        trigger_events=[network_pb2.CONVERSION_EVENT_TYPE_PURCHASE])
    response = await config_stub(channel).CreatePostbackConfig(postback_config_service_pb2.CreatePostbackConfigRequest(
        parent="games/g1", postback_config=config, test_code=test_code))
    return response.postback_config


async def convert(channel, network: int, user: str, event_id: str) -> None:  # type: ignore[no-untyped-def]
    if network == TIKTOK:
        await h.ingest(channel, "g1", h.click(f"c-{event_id}", user_id=user,
                                              landing_url=f"https://game.example/?ttclid=TT-{event_id}"))
    else:
        await h.ingest(channel, "g1", h.click(f"c-{event_id}", user_id=user, network=REDDIT, click_id=f"R-{event_id}"))
    await h.ingest(channel, "g1", h.purchase(event_id, user_id=user))


@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_accepted_credentials_are_saved_and_the_test_code_reaches_only_the_check(
        app, channel, fake_network, network, name) -> None:  # type: ignore[no-untyped-def]
    config = await create_with_test_code(channel, network)

    [check] = fake_network.received(name)
    assert sent_test_code(check, name) == TEST_CODE
    assert "test_event_code" not in events_of(check, name)[0]  # TikTok: top level only, never inside an event
    assert len(events_of(check, name)) == 1
    assert (await get_config(channel, config.name)).display_name == "main pixel"

    await convert(channel, network, "u1", "p1")
    await wait_until(lambda: postback_requests(fake_network, name))
    [delivery] = postback_requests(fake_network, name)
    assert sent_test_code(delivery, name) is None
    assert TEST_CODE.encode() not in delivery.body
    await wait_until(lambda: delivery_logs(app, "p1"))
    assert TEST_CODE not in await stored_text(app)


@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_rejected_credentials_are_refused_naming_the_network_answer_and_nothing_is_saved(
        app, channel, fake_network, network, name) -> None:  # type: ignore[no-untyped-def]
    reply, named = REJECTIONS[name]
    fake_network.script(name, [reply])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_with_test_code(channel, network, token="bad-token-123456")

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert named in refused.value.details() and "nothing was saved" in refused.value.details()
    assert h.error_reason(refused.value) == "CREDENTIALS_REJECTED"
    assert "bad-token-123456" not in refused.value.details()
    assert await configs_of(channel, "g1") == []
    assert "bad-token" not in await stored_text(app)


@pytest.mark.parametrize("reply", [Reply.drop(), Reply.http(503)], ids=["connection dropped", "HTTP 503"])
@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_an_unreachable_network_refuses_the_save_as_unavailable(channel, fake_network, network, name,
                                                                     reply) -> None:  # type: ignore[no-untyped-def]
    fake_network.script(name, [reply])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_with_test_code(channel, network)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in refused.value.details() and "nothing was saved" in refused.value.details()
    assert h.error_reason(refused.value) == "NETWORK_UNREACHABLE"
    assert await configs_of(channel, "g1") == []


@pytest.mark.parametrize(("network", "name", "reply"), [
    pytest.param(TIKTOK, "tiktok", Reply.tiktok(40100, "Too many requests"), id="tiktok code 40100"),
    pytest.param(TIKTOK, "tiktok", Reply.http(429, retry_after=30), id="tiktok HTTP 429"),
    pytest.param(REDDIT, "reddit", Reply.http(429, retry_after=30), id="reddit HTTP 429"),
])
async def test_a_network_limiting_requests_refuses_the_save_as_unavailable_and_says_so(
        channel, fake_network, network, name, reply) -> None:  # type: ignore[no-untyped-def]
    fake_network.script(name, [reply])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_with_test_code(channel, network)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "limiting this account's requests" in refused.value.details()
    assert "nothing was saved" in refused.value.details()
    assert h.error_reason(refused.value) == "NETWORK_THROTTLED"
    if reply.retry_after:
        assert "try again in 30 s" in refused.value.details()
    assert await configs_of(channel, "g1") == []


@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_validate_reports_a_network_limiting_requests_with_the_wait_it_asked_for(
        channel, fake_network, network, name) -> None:  # type: ignore[no-untyped-def]
    pixel_id = "CTPIXEL8" if network == TIKTOK else "a2_pixel8"
    credentials = postback_config_pb2.PostbackCredentials(access_token="candidate-token-2", pixel_id=pixel_id)
    fake_network.script(name, [Reply.http(429, retry_after=12)])

    throttled = await validate(channel, network=network, credentials=credentials)

    assert (throttled.result, throttled.http_status) == (CHECK.CREDENTIAL_CHECK_RESULT_THROTTLED, 429)
    assert throttled.retry_delay.seconds == 12
    assert await configs_of(channel, "g1") == []


@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_rotation_validates_the_new_token_and_later_deliveries_use_it(
        app, channel, fake_network, network, name) -> None:  # type: ignore[no-untyped-def]
    config = await h.create_config(channel, "g1", network=network)

    rotated = await rotate(channel, config.name, "rotated-token-0042", test_code=TEST_CODE)

    check = fake_network.received(name)[-1]
    assert check.token == "rotated-token-0042" and sent_test_code(check, name) == TEST_CODE
    assert rotated.access_token_hint != config.access_token_hint
    assert rotated.credentials_update_time.ToMicroseconds() > config.credentials_update_time.ToMicroseconds()
    await convert(channel, network, "u1", "p1")
    await wait_until(lambda: postback_requests(fake_network, name))
    [delivery] = postback_requests(fake_network, name)
    assert delivery.token == "rotated-token-0042" and sent_test_code(delivery, name) is None
    assert TEST_CODE not in await stored_text(app)


@pytest.mark.parametrize("reply", ["rejected", "unreachable"])
@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_a_refused_rotation_keeps_the_old_credentials(channel, fake_network, network, name, reply) -> None:  # type: ignore[no-untyped-def]
    config = await h.create_config(channel, "g1", network=network)
    fake_network.script(name, [REJECTIONS[name][0] if reply == "rejected" else Reply.http(502)])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rotate(channel, config.name, "rotated-token-0042")

    expected = grpc.StatusCode.FAILED_PRECONDITION if reply == "rejected" else grpc.StatusCode.UNAVAILABLE
    assert refused.value.code() == expected
    kept = await get_config(channel, config.name)
    assert (kept.access_token_hint, kept.credentials_update_time) == (config.access_token_hint,
                                                                      config.credentials_update_time)
    await convert(channel, network, "u1", "p1")
    await wait_until(lambda: postback_requests(fake_network, name))
    original = h.TIKTOK_TOKEN if network == TIKTOK else h.REDDIT_TOKEN
    assert [r.token for r in postback_requests(fake_network, name)] == [original]


async def validate(channel, **fields) -> postback_config_service_pb2.ValidatePostbackCredentialsResponse:  # type: ignore[no-untyped-def]
    return await config_stub(channel).ValidatePostbackCredentials(
        postback_config_service_pb2.ValidatePostbackCredentialsRequest(parent="games/g1", **fields))


@pytest.mark.parametrize(("network", "name"), NETWORKS)
async def test_validate_reports_each_verdict_as_data_and_saves_nothing(channel, fake_network, network, name) -> None:  # type: ignore[no-untyped-def]
    pixel_id = "CTPIXEL9" if network == TIKTOK else "a2_pixel9"
    credentials = postback_config_pb2.PostbackCredentials(access_token="candidate-token-1", pixel_id=pixel_id)
    fake_network.script(name, [REJECTIONS[name][0], Reply.http(503)])

    rejected = await validate(channel, network=network, credentials=credentials)
    unreachable = await validate(channel, network=network, credentials=credentials)
    accepted = await validate(channel, network=network, credentials=credentials, test_code=TEST_CODE)

    assert rejected.result == CHECK.CREDENTIAL_CHECK_RESULT_REJECTED
    assert REJECTIONS[name][1] in f"HTTP {rejected.http_status} {rejected.network_code}"
    assert (unreachable.result, unreachable.http_status) == (CHECK.CREDENTIAL_CHECK_RESULT_UNREACHABLE, 503)
    assert not unreachable.HasField("retry_delay")
    assert accepted.result == CHECK.CREDENTIAL_CHECK_RESULT_ACCEPTED
    assert [sent_test_code(r, name) for r in fake_network.received(name)] == [None, None, TEST_CODE]
    assert await configs_of(channel, "g1") == []


async def test_validate_a_saved_config_checks_its_stored_credentials(channel, fake_network) -> None:  # type: ignore[no-untyped-def]
    config = await h.create_config(channel, "g1", network=REDDIT, pixel_id="a2_saved1")
    fake_network.script("reddit", [Reply.http(403, message="pixel not shared with this token")])

    result = await validate(channel, postback_config=config.name)

    assert result.result == CHECK.CREDENTIAL_CHECK_RESULT_REJECTED
    assert (result.http_status, result.message) == (403, "pixel not shared with this token")
    check = fake_network.received("reddit")[-1]
    assert (check.token, check.pixel_id) == (h.REDDIT_TOKEN, "a2_saved1")
