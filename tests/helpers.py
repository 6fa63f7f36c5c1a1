"""Builders for requests and stubs used across the service tests."""

import asyncio
import datetime
import json
import pathlib
import sys
import time

import grpc
from alembic import command
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from postbacks.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
)
from server.store.db import alembic_config

TIKTOK_TOKEN = "tt-token-0123456789abcdef"
REDDIT_TOKEN = "rd-token-0123456789abcdef"


def ts(seconds_ago: float = 0.0, *, at: float | None = None) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(((at if at is not None else time.time()) - seconds_ago) * 1_000_000))
    return t


def click(event_id: str, *, anonymous_id: str = "", user_id: str = "", network: int = 0, click_id: str = "",
          landing_url: str = "", seconds_ago: float = 60.0, **identity) -> event_pb2.Event:  # type: ignore[no-untyped-def]
    return event_pb2.Event(event_id=event_id, event_time=ts(seconds_ago), anonymous_id=anonymous_id, user_id=user_id,
                           ad_click=event_pb2.AdClick(network=network, click_id=click_id, landing_url=landing_url),
                           **identity)


def identify(event_id: str, *, user_id: str, anonymous_id: str = "", email: str = "", seconds_ago: float = 30.0):  # type: ignore[no-untyped-def]
    return event_pb2.Event(event_id=event_id, event_time=ts(seconds_ago), user_id=user_id, anonymous_id=anonymous_id,
                           email=email, identify=event_pb2.Identify())


def launch(event_id: str, *, user_id: str = "", anonymous_id: str = "", seconds_ago: float = 10.0, **identity):  # type: ignore[no-untyped-def]
    return event_pb2.Event(event_id=event_id, event_time=ts(seconds_ago), user_id=user_id, anonymous_id=anonymous_id,
                           game_launch=event_pb2.GameLaunch(), **identity)


def purchase(event_id: str, *, user_id: str = "", anonymous_id: str = "", value: str = "", currency: str = "",
             seconds_ago: float = 5.0, **identity):  # type: ignore[no-untyped-def]
    p = event_pb2.Purchase(currency=currency)
    if value:
        p.value = value
    return event_pb2.Event(event_id=event_id, event_time=ts(seconds_ago), user_id=user_id, anonymous_id=anonymous_id,
                           purchase=p, **identity)


async def ingest(channel, game: str, event):  # type: ignore[no-untyped-def]
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    response = await stub.IngestEvent(event_service_pb2.IngestEventRequest(parent=f"games/{game}", event=event))
    return response.result


async def create_config(channel, game: str, *, network: int = network_pb2.NETWORK_TIKTOK, config_id: str = "",  # type: ignore[no-untyped-def]
                        token: str = "", pixel_id: str = "", triggers=None, enabled: bool | None = None):
    stub = postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)
    if network == network_pb2.NETWORK_TIKTOK:
        token, pixel_id = token or TIKTOK_TOKEN, pixel_id or "CTPIXEL123"
    else:
        token, pixel_id = token or REDDIT_TOKEN, pixel_id or "a2_pixel42"
    config = postback_config_pb2.PostbackConfig(
        display_name=f"{game} {network}",
        network=network,
        credentials=postback_config_pb2.PostbackCredentials(access_token=token, pixel_id=pixel_id),
        trigger_events=triggers or [network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH,
                                    network_pb2.CONVERSION_EVENT_TYPE_PURCHASE],
    )
    if enabled is not None:
        config.enabled = enabled
    response = await stub.CreatePostbackConfig(postback_config_service_pb2.CreatePostbackConfigRequest(
        parent=f"games/{game}", postback_config=config, postback_config_id=config_id))
    return response.postback_config


def field_violations(error) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The BadRequest field violations of a gRPC error, as {field: description}."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    violations: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.update({v.field: v.description for v in bad_request.field_violations})
    return violations


def error_reason(error) -> str:  # type: ignore[no-untyped-def]
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


GRPCURL = str(pathlib.Path(sys.executable).parent / "grpcurl")
# The full-access key of each running test server (tests.conftest.running_app): sent by grpcurl() and
# authorized_channel() unless a test says otherwise.
API_KEYS_BY_PORT: dict[int, str] = {}


def _with_key(details: grpc.aio.ClientCallDetails, key: str) -> grpc.aio.ClientCallDetails:
    """The call's details with `authorization: Bearer <key>` added, unless the call carries its own."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if "authorization" not in metadata:
        metadata.add("authorization", f"Bearer {key}")
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


# One class per call shape: a channel files each interceptor under the first shape it implements.
class _UnaryKey(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str):
        self._key = key

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_key(client_call_details, self._key), request)


class _StreamKey(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str):
        self._key = key

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_key(client_call_details, self._key), request)


def key_channel(port: int, key: str | None) -> grpc.aio.Channel:
    """A plaintext channel to a local server whose calls carry `key` (none when key is None)."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                     interceptors=[_UnaryKey(key), _StreamKey(key)] if key else None)


def authorized_channel(app) -> grpc.aio.Channel:  # type: ignore[no-untyped-def]
    """A channel to a running test server with its full-access development key."""
    return key_channel(app.port, app.dev_key)


async def grpcurl(port: int, *args: str, data: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, str]:  # type: ignore[type-arg]
    """Runs the real grpcurl binary against the server (plaintext); returns (exit code, stdout, stderr)."""
    command = [GRPCURL, "-plaintext"]
    headers = dict(headers or {})
    if "authorization" not in headers and port in API_KEYS_BY_PORT:
        headers["authorization"] = f"Bearer {API_KEYS_BY_PORT[port]}"
    for name, value in headers.items():
        if value:
            command += ["-H", f"{name}: {value}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [f"127.0.0.1:{port}", *args]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    return process.returncode or 0, stdout.decode(), stderr.decode()


def rfc3339(seconds_ago: float = 0.0) -> str:
    return datetime.datetime.fromtimestamp(time.time() - seconds_ago, datetime.UTC).isoformat().replace("+00:00", "Z")


# --- the HTTP API (Connect protocol) ------------------------------------------------------------------------------

async def http_call(session, port: int, method: str, body: dict | bytes, *, key: str | None = "",  # type: ignore[no-untyped-def, type-arg]
                    headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:  # type: ignore[type-arg]
    """One unary Connect call (`EventService/IngestEvent`) in JSON, or binary protobuf when `body` is bytes. `key`
    "" sends the server's full-access key, None sends none. Returns (HTTP status, JSON body, response headers)."""
    sent = {"content-type": "application/proto" if isinstance(body, bytes) else "application/json", **(headers or {})}
    key = API_KEYS_BY_PORT.get(port) if key == "" else key
    if key:
        sent.setdefault("authorization", f"Bearer {key}")
    async with session.post(f"http://127.0.0.1:{port}/postbacks.v1.{method}", headers=sent,
                            data=body if isinstance(body, bytes) else json.dumps(body)) as response:
        raw = await response.read()
        if response.content_type == "application/proto":
            return response.status, {"proto": raw}, dict(response.headers)
        return response.status, json.loads(raw) if raw else {}, dict(response.headers)


def connect_error_details(body: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    """A Connect error's details by type (`google.rpc.BadRequest`), each as its JSON (`debug`) form."""
    return {detail["type"]: detail.get("debug", {}) for detail in body.get("details", [])}


def connect_field_violations(body: dict) -> dict[str, str]:  # type: ignore[type-arg]
    violations = connect_error_details(body).get("google.rpc.BadRequest", {}).get("fieldViolations", [])
    return {v["field"]: v["description"] for v in violations}


def migrate_to(connection, revision: str) -> None:  # type: ignore[no-untyped-def]
    """Upgrades a database, on an open synchronous connection, to one Alembic revision (a test of a migration)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
