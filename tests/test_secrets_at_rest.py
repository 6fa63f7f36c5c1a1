"""Secrets stay secret: after a full flow no credential or clear email is in the database, a log line or a response;
and rotating the secret key re-seals every stored credential, under a running server too."""

import asyncio
import logging
import pathlib
import sys

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from postbacks.v1 import (
    delivery_log_pb2,
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
    privacy_service_pb2,
    privacy_service_pb2_grpc,
)
from server.app import App
from server.secrets import SecretBox, key_file, parse_keys
from server.services.configs import sealing_context
from server.store.models import Base, PostbackConfig
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.dispatch_helpers import sent_dedup_ids
from tests.fakes.fake_network import Reply
from tests.helpers import authorized_channel, click, create_config, identify, launch, purchase

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIKTOK_TOKEN = "tt-SECRET-7f3a9c1e5b2d4f60"
ROTATED_TOKEN = "tt-ROTATED-8e2b1d9c4a7f3e51"
REDDIT_TOKEN = "rd-SECRET-2c8e4a6f1b3d5e72"
REJECTED_TOKEN = "tt-REJECTED-9d1f3b5a7c2e4f83"
MALFORMED_TOKEN = "tt-MALFORMED 5a7c9e1b3d2f4a94"
EMAIL = "Secret.Player+ads@Example.com"
SECRETS = (TIKTOK_TOKEN, ROTATED_TOKEN, REDDIT_TOKEN, REJECTED_TOKEN, MALFORMED_TOKEN, EMAIL, EMAIL.lower(),
           EMAIL.lower().replace("+ads", ""))


def configs(channel) -> postback_config_service_pb2_grpc.PostbackConfigServiceStub:  # type: ignore[no-untyped-def]
    return postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)


def found_in(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data or s.split()[0].encode() in data]


async def every_row(app: App) -> str:
    """Every table's rows, as text."""
    async with app.db.transaction() as session:
        return repr([(await session.execute(select(table))).all() for table in Base.metadata.sorted_tables])


def database_files(app: App) -> bytes:
    """The SQLite database file with its write-ahead log and shared memory; empty for PostgreSQL."""
    if not app.db.is_sqlite:
        return b""
    path = pathlib.Path(app.db.url.database or "")
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_no_secret_is_stored_logged_or_returned_after_a_full_flow(tmp_path, database_url, fake_network,  # type: ignore[no-untyped-def]
                                                                        caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)  # every log line of every library, SQL statements and parameters included
    said: list[str | bytes] = []  # every response and error the callers saw

    async def call(rpc, request):  # type: ignore[no-untyped-def]
        try:
            response = await rpc(request)
        except grpc.aio.AioRpcError as error:
            said.extend([str(error), repr(error.trailing_metadata())])
            return error
        said.extend([str(response), response.SerializeToString()])
        return response

    async with running_app(settings_for(tmp_path, database_url, fake_network)) as app, \
            authorized_channel(app) as channel:
        cfg = configs(channel)
        events = event_service_pb2_grpc.EventServiceStub(channel)
        logs = delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel)

        def config_request(token: str, network: int = network_pb2.NETWORK_TIKTOK, pixel: str = "CTPIXEL123",
                           config_id: str = "tt") -> postback_config_service_pb2.CreatePostbackConfigRequest:
            return postback_config_service_pb2.CreatePostbackConfigRequest(
                parent="games/g", postback_config_id=config_id, test_code="TEST123", postback_config=
                postback_config_pb2.PostbackConfig(
                    network=network, credentials=postback_config_pb2.PostbackCredentials(access_token=token,
                                                                                         pixel_id=pixel),
                    trigger_events=[network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH,
                                    network_pb2.CONVERSION_EVENT_TYPE_PURCHASE]))

        # Configs: created, refused by the network, refused for their format, read, changed, checked, rotated.
        await call(cfg.CreatePostbackConfig, config_request(TIKTOK_TOKEN))
        await call(cfg.CreatePostbackConfig, config_request(REDDIT_TOKEN, network_pb2.NETWORK_REDDIT, "a2_pixel42",
                                                            "rd"))
        fake_network.script("tiktok", [Reply.tiktok(40105)], token=REJECTED_TOKEN)
        rejected = await call(cfg.CreatePostbackConfig, config_request(REJECTED_TOKEN, config_id="bad"))
        malformed = await call(cfg.CreatePostbackConfig, config_request(MALFORMED_TOKEN, config_id="bad"))
        assert rejected.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
        await call(cfg.GetPostbackConfig, postback_config_service_pb2.GetPostbackConfigRequest(
            name="games/g/postbackConfigs/tt"))
        await call(cfg.UpdatePostbackConfig, postback_config_service_pb2.UpdatePostbackConfigRequest(
            postback_config=postback_config_pb2.PostbackConfig(name="games/g/postbackConfigs/tt", display_name="TT"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"])))
        await call(cfg.ValidatePostbackCredentials, postback_config_service_pb2.ValidatePostbackCredentialsRequest(
            parent="games/g", postback_config="games/g/postbackConfigs/tt"))

        # Events: each player clicks, signs up with the email, converts; the postbacks go out.
        for game_event in (
            click("c-tt", anonymous_id="v1", landing_url="https://g.example/?ttclid=TT-1"),
            identify("i-tt", user_id="p1", anonymous_id="v1", email=EMAIL),
            purchase("buy-tt", user_id="p1", value="9.99", currency="USD", email=EMAIL),
            click("c-rd", anonymous_id="v2", landing_url="https://g.example/?rdt_cid=RD-2"),
            identify("i-rd", user_id="p2", anonymous_id="v2", email=EMAIL),
            launch("launch-rd", user_id="p2", email=EMAIL),
        ):
            await call(events.IngestEvent, event_service_pb2.IngestEventRequest(parent="games/g", event=game_event))
        await wait_until(lambda: {"buy-tt", "launch-rd"} <= set(sent_dedup_ids(fake_network)))

        # Rotated credentials carry the next postback; then the network refuses one's payload (a failed attempt is
        # logged).
        await call(cfg.RotatePostbackCredentials, postback_config_service_pb2.RotatePostbackCredentialsRequest(
            name="games/g/postbackConfigs/tt", credentials=postback_config_pb2.PostbackCredentials(
                access_token=ROTATED_TOKEN)))
        fake_network.script("tiktok", [Reply.tiktok(40002)], token=ROTATED_TOKEN)
        await call(events.IngestEvent, event_service_pb2.IngestEventRequest(parent="games/g", event=purchase(
            "buy-refused", user_id="p1", value="1.00", currency="USD")))
        await call(events.IngestEvent, event_service_pb2.IngestEventRequest(parent="games/g", event=purchase(
            "buy-rotated", user_id="p1", value="2.00", currency="USD")))
        await wait_until(lambda: {"buy-refused", "buy-rotated"} <= set(sent_dedup_ids(fake_network)))

        async def refusal_logged() -> bool:  # the network answers before the attempt's log row commits
            page = await logs.ListDeliveryLogs(delivery_log_service_pb2.ListDeliveryLogsRequest(
                parent="games/g", statuses=[delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_FAILED]))
            return bool(page.delivery_logs)

        await wait_until(refusal_logged)

        # Everything a caller can read back.
        for event_id in ("buy-tt", "launch-rd", "buy-refused", "buy-rotated"):
            await call(events.GetConversion, event_service_pb2.GetConversionRequest(
                name=f"games/g/conversions/{event_id}"))
        await call(cfg.ListPostbackConfigs, postback_config_service_pb2.ListPostbackConfigsRequest(parent="games/g"))
        listed = await call(logs.ListDeliveryLogs, delivery_log_service_pb2.ListDeliveryLogsRequest(parent="games/g"))
        stream = logs.StreamDeliveryLogs(delivery_log_service_pb2.StreamDeliveryLogsRequest(
            parent="games/g", time_range=delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR))
        for _ in listed.delivery_logs:
            said.append(str(await stream.read()))
        stream.cancel()
        await call(privacy_service_pb2_grpc.PrivacyServiceStub(channel).DeleteUserData,
                   privacy_service_pb2.DeleteUserDataRequest(parent="games/g", email=EMAIL))

        # The flow really handled the secrets: the network received every token the configs held.
        assert {TIKTOK_TOKEN, REDDIT_TOKEN, ROTATED_TOKEN} <= {r.token for r in fake_network.received()}
        assert any(entry.status == delivery_log_pb2.DELIVERY_ATTEMPT_STATUS_FAILED for entry in listed.delivery_logs)
        rows = await every_row(app)
        files_while_running = database_files(app)
    files_after_stop = database_files(app)
    output = capfd.readouterr()

    assert found_in(rows) == []
    assert found_in(files_while_running) == []
    assert found_in(files_after_stop) == []
    assert found_in(caplog.text) == []
    assert found_in(output.out + output.err) == []
    assert [found for text in said if (found := found_in(text))] == []
    assert len(said) > 40


async def run_cli(settings, *args: str) -> str:  # type: ignore[no-untyped-def]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", *args, "--database-url", settings.database_url, "--data-dir",
        settings.data_dir, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def sealed_tokens(app: App) -> dict[str, bytes]:
    async with app.db.transaction() as session:
        rows = (await session.execute(select(PostbackConfig))).scalars().all()
    return {row.config_id: row.access_token_sealed for row in rows}


async def validate_stored(channel, config_id: str) -> int:  # type: ignore[no-untyped-def]
    response = await configs(channel).ValidatePostbackCredentials(
        postback_config_service_pb2.ValidatePostbackCredentialsRequest(
            parent="games/g", postback_config=f"games/g/postbackConfigs/{config_id}"))
    return response.result


def read_keys(app: App) -> list[bytes]:
    return parse_keys(key_file(app.settings.data_dir).read_text())


async def test_rotating_the_key_file_reseals_every_credential_under_a_running_server(  # type: ignore[no-untyped-def]
        tmp_path, database_url, fake_network) -> None:
    settings = settings_for(tmp_path, database_url, fake_network)
    accepted = postback_config_pb2.CREDENTIAL_CHECK_RESULT_ACCEPTED
    async with running_app(settings) as app, authorized_channel(app) as channel:
        await create_config(channel, "g", config_id="tt", token=TIKTOK_TOKEN)
        await create_config(channel, "g", config_id="gone", token=ROTATED_TOKEN)
        await configs(channel).DeletePostbackConfig(postback_config_service_pb2.DeletePostbackConfigRequest(
            name="games/g/postbackConfigs/gone"))
        old_keys = read_keys(app)

        output = await run_cli(settings, "rotate-secret-key")

        new_keys = read_keys(app)
        assert "re-sealed 2 stored credentials" in output
        assert len(new_keys) == 1 and new_keys[0] not in old_keys  # the old key is retired
        new_box, old_box = SecretBox(new_keys), SecretBox(old_keys)
        for config_id, sealed in (await sealed_tokens(app)).items():
            assert new_box.is_current(sealed), config_id
            with pytest.raises(ValueError, match="not configured"):
                old_box.open(sealed, context=sealing_context("g", config_id))
        assert new_box.open((await sealed_tokens(app))["tt"], context=sealing_context("g", "tt")) == TIKTOK_TOKEN

        # The running server opens what the rotation re-sealed, and seals new credentials with the new key.
        assert await validate_stored(channel, "tt") == accepted
        assert fake_network.received()[-1].token == TIKTOK_TOKEN
        await create_config(channel, "g", config_id="after", token=REDDIT_TOKEN.replace("rd", "tt"))
        assert new_box.is_current((await sealed_tokens(app))["after"])

    async with running_app(settings) as restarted, authorized_channel(restarted) as channel:
        assert await validate_stored(channel, "tt") == accepted


async def test_rotating_keys_given_in_the_setting_reseals_with_the_first(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    old_key, new_key = "A" * 43 + "=", "B" * 43 + "="  # two base64 AES-256 keys
    settings = settings_for(tmp_path, database_url, fake_network, secret_keys=old_key)
    async with running_app(settings) as app, authorized_channel(app) as channel:
        await create_config(channel, "g", config_id="tt", token=TIKTOK_TOKEN)

    output = await run_cli(settings, "rotate-secret-key", "--secret-keys", f"{new_key},{old_key}")
    assert "re-sealed 1 of 1" in output

    async with running_app(settings.replace(secret_keys=new_key)) as app, authorized_channel(app) as channel:
        assert await validate_stored(channel, "tt") == postback_config_pb2.CREDENTIAL_CHECK_RESULT_ACCEPTED
        assert fake_network.received()[-1].token == TIKTOK_TOKEN
        assert not key_file(settings.data_dir).exists()  # keys from the setting never touch the data directory
