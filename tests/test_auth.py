"""API keys: who may call what, revocation, the development key, the key commands, and the abuse limits."""

import asyncio
import os
import pathlib
import stat
import sys

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from postbacks.v1 import (
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
    privacy_service_pb2,
    privacy_service_pb2_grpc,
)
from server.api.auth import METHOD_RULES
from server.app import SERVICE_NAMES, App
from server.core import limits
from server.core.access import KeyKind, key_digest
from server.secrets import read_private_file
from server.services import api_keys
from server.store.models import ApiKey
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.helpers import (
    authorized_channel,
    create_config,
    error_reason,
    field_violations,
    grpcurl,
    ingest,
    key_channel,
    launch,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


async def make_key(app: App, kind: KeyKind, *games: str) -> str:
    key, _ = await api_keys.create_key(app.ctx, kind, games)
    return key


async def rpc_error(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def events(channel) -> event_service_pb2_grpc.EventServiceStub:  # type: ignore[no-untyped-def]
    return event_service_pb2_grpc.EventServiceStub(channel)


def configs(channel) -> postback_config_service_pb2_grpc.PostbackConfigServiceStub:  # type: ignore[no-untyped-def]
    return postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)


def logs(channel) -> delivery_log_service_pb2_grpc.DeliveryLogServiceStub:  # type: ignore[no-untyped-def]
    return delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel)


async def run_cli(app: App, *args: str) -> tuple[int, str, str]:
    """`python -m server ...` against the running test server's database, as an operator would run it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", *args, "--database-url", app.settings.database_url,
        "--data-dir", app.settings.data_dir, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    return process.returncode or 0, stdout.decode(), stderr.decode()


def test_every_rpc_has_a_rule_naming_a_string_field_of_its_request() -> None:
    pool = descriptor_pool.Default()
    requests = {f"/{name}/{m.name}": m.input_type for name in SERVICE_NAMES
                for m in pool.FindServiceByName(name).methods}
    assert set(METHOD_RULES) == set(requests)
    for method, rule in METHOD_RULES.items():
        message = requests[method]
        *parents, leaf = rule.game_field.split(".")
        for part in parents:
            message = message.fields_by_name[part].message_type
        assert message.fields_by_name[leaf].type == descriptor.FieldDescriptor.TYPE_STRING, method


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "API_KEY_MISSING"),
    ("", "API_KEY_MISSING"),
    ("Basic dXNlcjpwYXNz", "API_KEY_NOT_BEARER"),
    ("pbk_00000000_a-key-sent-without-its-scheme", "API_KEY_NOT_BEARER"),
    ("Bearer", "API_KEY_NOT_BEARER"),
    ("Bearer pbk_00000000_not-a-key-this-service-made", "API_KEY_INVALID"),
])
async def test_calls_without_a_valid_key_are_unauthenticated(app: App, authorization, reason) -> None:  # type: ignore[no-untyped-def]
    metadata = (("authorization", authorization),) if authorization is not None else ()
    async with key_channel(app.port, None) as ch:  # type: ignore[arg-type]
        unary = await rpc_error(events(ch).IngestEvent(event_service_pb2.IngestEventRequest(
            parent="games/g", event=launch("l1", user_id="p")), metadata=metadata))
        stream = logs(ch).StreamDeliveryLogs(delivery_log_service_pb2.StreamDeliveryLogsRequest(parent="games/g"),
                                             metadata=metadata)
        streamed = await rpc_error(stream.read())
    for error in (unary, streamed):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(error) == reason
        if reason == "API_KEY_NOT_BEARER":  # says what to fix, and never echoes what was sent
            assert "`Bearer <key>`" in (error.details() or "") and "its-scheme" not in (error.details() or "")
    async with authorized_channel(app) as ch:
        missing = await rpc_error(events(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/g/conversions/l1")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND  # the refused event was not stored


async def test_health_and_reflection_need_no_key(app: App) -> None:
    async with key_channel(app.port, None) as ch:  # type: ignore[arg-type]
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    code, out, err = await grpcurl(app.port, "list", headers={"authorization": ""})
    assert code == 0, err
    assert "postbacks.v1.EventService" in out.split()
    code, out, err = await grpcurl(app.port, "postbacks.v1.GameSettingsService/GetGameSettings",
                                   data={"name": "games/g/settings"}, headers={"authorization": ""})
    assert code != 0
    assert "Unauthenticated" in err


async def test_an_ingest_key_sends_and_reads_events_of_its_own_game_only(app: App) -> None:
    key = await make_key(app, KeyKind.INGEST, "a")
    async with key_channel(app.port, key) as ch:
        stored = await ingest(ch, "a", launch("l1", user_id="p"))
        read_back = await events(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/a/conversions/l1"))
        other_game = await rpc_error(ingest(ch, "b", launch("l1", user_id="p")))
        other_read = await rpc_error(events(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/b/conversions/l1")))
        admin_call = await rpc_error(configs(ch).ListPostbackConfigs(
            postback_config_service_pb2.ListPostbackConfigsRequest(parent="games/a")))
    assert stored.conversion.event_id == read_back.conversion.event_id == "l1"
    for error in (other_game, other_read):
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error) == "API_KEY_NOT_ALLOWED"
        assert "games/b" in (error.details() or "")
    assert admin_call.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs an admin key" in (admin_call.details() or "")
    async with authorized_channel(app) as ch:
        nothing = await rpc_error(events(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/b/conversions/l1")))
    assert nothing.code() == grpc.StatusCode.NOT_FOUND


async def test_an_admin_key_manages_its_listed_games_only_and_cannot_ingest(app: App, fake_network) -> None:  # type: ignore[no-untyped-def]
    key = await make_key(app, KeyKind.ADMIN, "a", "c")
    async with authorized_channel(app) as ch:
        await ingest(ch, "a", launch("l1", user_id="p"))
    async with key_channel(app.port, key) as ch:
        created = await create_config(ch, "a", config_id="tt")
        await configs(ch).ListPostbackConfigs(postback_config_service_pb2.ListPostbackConfigsRequest(parent="games/c"))
        conversion = await events(ch).GetConversion(event_service_pb2.GetConversionRequest(
            name="games/a/conversions/l1"))
        other_game = await rpc_error(create_config(ch, "b", config_id="tt"))
        ingesting = await rpc_error(ingest(ch, "a", launch("l2", user_id="p")))
    assert created.name == "games/a/postbackConfigs/tt"
    assert conversion.conversion.event_id == "l1"
    assert other_game.code() == ingesting.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs an ingest key" in (ingesting.details() or "")
    assert len(fake_network.received()) == 1  # only game a's credentials were checked with the network


async def test_an_admin_key_without_games_covers_every_game(app: App) -> None:
    key = await make_key(app, KeyKind.ADMIN)
    async with key_channel(app.port, key) as ch:
        for game in ("a", "b", "some-other-game"):
            response = await game_settings_service_pb2_grpc.GameSettingsServiceStub(ch).GetGameSettings(
                game_settings_service_pb2.GetGameSettingsRequest(name=f"games/{game}/settings"))
            assert response.game_settings.name == f"games/{game}/settings"


async def test_key_commands_create_list_and_revoke_and_store_only_a_hash(app: App) -> None:
    code, out, err = await run_cli(app, "keys", "create", "--kind", "ingest", "--game", "a", "--label", "game servers")
    assert code == 0, err
    key = out.strip()
    key_id = key.split("_")[1]
    assert "only time" in err
    async with key_channel(app.port, key) as ch:
        await ingest(ch, "a", launch("l1", user_id="p"))

        code, listing, err = await run_cli(app, "keys", "list")
        assert code == 0, err
        (line,) = [line for line in listing.splitlines() if line.startswith(key_id)]
        assert "ingest" in line and "game servers" in line
        assert key.split("_", 2)[2] not in listing
        async with app.db.transaction() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        assert row is not None and row.key_sha256 == key_digest(key)
        assert key not in repr([getattr(row, c.key) for c in ApiKey.__table__.columns])

        code, out, err = await run_cli(app, "keys", "revoke", key_id)
        assert code == 0, err

        async def refused() -> bool:
            try:
                await events(ch).GetConversion(event_service_pb2.GetConversionRequest(name="games/a/conversions/l1"))
            except grpc.aio.AioRpcError as error:
                return error.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        await wait_until(refused)
    code, listing, _ = await run_cli(app, "keys", "list")
    (line,) = [line for line in listing.splitlines() if line.startswith(key_id)]
    assert line.split()[3] != "-"  # the revocation time

    code, _, err = await run_cli(app, "keys", "create", "--kind", "admin", "--label", "x" * (limits.API_KEY_LABEL + 1))
    assert code != 0 and f"at most {limits.API_KEY_LABEL}" in err  # longer than the column keeps


async def test_publishable_keys_are_created_for_one_game_and_listed_origins(app: App) -> None:
    code, out, err = await run_cli(app, "keys", "create", "--kind", "publishable", "--game", "a",
                                   "--origin", "https://www.MyGame.com/", "--origin", "http://localhost:8000")
    assert code == 0, err
    key_id = out.strip().split("_")[1]
    assert "from http://localhost:8000, https://www.mygame.com" in err
    code, listing, err = await run_cli(app, "keys", "list")
    (line,) = [line for line in listing.splitlines() if line.startswith(key_id)]
    assert "publishable" in line and "origins: http://localhost:8000 https://www.mygame.com" in line

    for args, problem in (
        (["--game", "a"], "needs at least one origin"),
        (["--game", "a", "--origin", "https://www.mygame.com/landing"], "must be a web origin"),
        (["--game", "a", "--game", "b", "--origin", "https://www.mygame.com"], "exactly one game"),
    ):
        code, _, err = await run_cli(app, "keys", "create", "--kind", "publishable", *args)
        assert code != 0 and problem in err, (args, err)
    code, _, err = await run_cli(app, "keys", "create", "--kind", "ingest", "--game", "a", "--origin", "https://x.com")
    assert code != 0 and "only a publishable key" in err


async def test_the_development_key_is_owner_only_reused_and_refused_outside_development_mode(
        tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network)
    request = game_settings_service_pb2.GetGameSettingsRequest(name="games/g/settings")
    async with running_app(settings) as first:
        dev_key = first.dev_key
    path = pathlib.Path(settings.dev_key_file)
    assert dev_key and read_private_file(path) == dev_key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with running_app(settings) as again:
        assert again.dev_key == dev_key

    async with running_app(settings.replace(dev_key_file="")) as production:
        assert production.dev_key is None
        admin_key = await make_key(production, KeyKind.ADMIN)
        async with key_channel(production.port, dev_key) as ch:
            refused = await rpc_error(game_settings_service_pb2_grpc.GameSettingsServiceStub(ch).GetGameSettings(request))
        async with key_channel(production.port, admin_key) as ch:
            await game_settings_service_pb2_grpc.GameSettingsServiceStub(ch).GetGameSettings(request)
        await api_keys.revoke_key(production.ctx, dev_key)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused) == "API_KEY_DEVELOPMENT_ONLY"

    async with running_app(settings) as renewed:  # the revoked key is replaced, not revived
        assert renewed.dev_key and renewed.dev_key != dev_key
        assert read_private_file(path) == renewed.dev_key


async def test_open_streams_per_key_are_bounded(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, max_streams_per_key=1, log_stream_heartbeat_s=0.05)
    request = delivery_log_service_pb2.StreamDeliveryLogsRequest(parent="games/g")
    async with running_app(settings) as app:
        key, other_key = await make_key(app, KeyKind.ADMIN), await make_key(app, KeyKind.ADMIN)
        async with key_channel(app.port, key) as ch, key_channel(app.port, other_key) as other_ch:
            first = logs(ch).StreamDeliveryLogs(request)
            await first.read()  # a heartbeat: the stream is open
            refused = await rpc_error(logs(ch).StreamDeliveryLogs(request).read())
            other = logs(other_ch).StreamDeliveryLogs(request)
            assert (await other.read()).resume_token  # another key has its own budget
            first.cancel()

            async def reopened() -> bool:
                call = logs(ch).StreamDeliveryLogs(request)
                try:
                    await call.read()
                    return True
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    return False
                finally:
                    call.cancel()

            await wait_until(reopened)  # closing a stream frees its place
            other.cancel()
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(refused) == "TOO_MANY_STREAMS"
    assert "max_streams_per_key" in (refused.details() or "")


async def test_oversized_requests_are_refused(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, database_url, fake_network, max_receive_message_bytes=64 * 1024)
    batch = [launch(f"e{i}", user_id="p" * 100) for i in range(1000)]  # about 150 KiB
    async with running_app(settings) as app, authorized_channel(app) as ch:
        error = await rpc_error(events(ch).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
            parent="games/g", events=batch)))
        accepted = await events(ch).BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(
            parent="games/g", events=batch[:100]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (error.details() or "")
    assert len(accepted.results) == 100


async def test_oversized_fields_are_refused_by_name(channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, "g", config_id="tt")
    privacy = privacy_service_pb2_grpc.PrivacyServiceStub(channel)
    for user_id, anonymous_id, field in (("u" * 129, "", "user_id"), ("", "v" * 129, "anonymous_id")):
        error = await rpc_error(privacy.DeleteUserData(privacy_service_pb2.DeleteUserDataRequest(
            parent="games/g", user_id=user_id, anonymous_id=anonymous_id)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 128" in field_violations(error)[field]

    long_pixel = await rpc_error(create_config(channel, "g", network=network_pb2.NETWORK_REDDIT,
                                               pixel_id="a2_" + "x" * 200))
    assert "at most 64" in field_violations(long_pixel)["postback_config.credentials.pixel_id"]

    long_token = await rpc_error(configs(channel).ListPostbackConfigs(
        postback_config_service_pb2.ListPostbackConfigsRequest(parent="games/g", page_token="x" * 5000)))
    assert "not a token this service issued" in field_violations(long_token)["page_token"]

    update = postback_config_pb2.PostbackConfig(name=config.name)
    many_paths = await rpc_error(configs(channel).UpdatePostbackConfig(
        postback_config_service_pb2.UpdatePostbackConfigRequest(
            postback_config=update, update_mask=field_mask_pb2.FieldMask(paths=[f"f{i}" for i in range(5000)]))))
    long_path = await rpc_error(configs(channel).UpdatePostbackConfig(
        postback_config_service_pb2.UpdatePostbackConfigRequest(
            postback_config=update, update_mask=field_mask_pb2.FieldMask(paths=["x" * 100_000]))))
    assert "names 5000 fields; at most 16" in (many_paths.details() or "")
    assert len(many_paths.details() or "") < 2000  # the answer does not grow with the request
    assert len(long_path.details() or "") < 500


async def test_concurrent_calls_are_each_judged_by_their_own_key(app: App) -> None:
    """The key is checked before the request is read and the game after: each call's own grant must reach its handler,
    however the calls of several keys interleave."""
    own, other = await make_key(app, KeyKind.INGEST, "a"), await make_key(app, KeyKind.INGEST, "b")
    async with key_channel(app.port, None) as ch:  # type: ignore[arg-type]
        async def call(i: int) -> grpc.StatusCode:
            key = (own, other, None)[i % 3]
            try:
                await events(ch).IngestEvent(event_service_pb2.IngestEventRequest(
                    parent="games/a", event=launch(f"l{i}", user_id="p")),
                    metadata=(("authorization", f"Bearer {key}"),) if key else ())
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(call(i) for i in range(150)))
    expected = (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert [c for i, c in enumerate(codes) if c != expected[i % 3]] == []
