"""Reading what the dispatcher did (straight from the database) and what the fake network received."""

from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy import select

from postbacks.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
)
from server.app import App
from server.core import tiktok
from server.store.models import Delivery, DeliveryLog, RenderedPostback
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, ReceivedRequest


async def delivery_logs(app: App, conversion_event_id: str | None = None) -> list[DeliveryLog]:
    """Delivery-log rows in the order they were written."""
    query = select(DeliveryLog).order_by(DeliveryLog.id)
    if conversion_event_id is not None:
        query = query.where(DeliveryLog.conversion_event_id == conversion_event_id)
    async with app.db.transaction() as session:
        return list((await session.execute(query)).scalars())


async def deliveries(app: App) -> list[Delivery]:
    async with app.db.transaction() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def renderings(app: App) -> dict[int, bytes]:
    """The kept renderings of pending postbacks, by delivery id."""
    async with app.db.transaction() as session:
        return dict((await session.execute(select(RenderedPostback.delivery_id, RenderedPostback.body))).all())


def is_credential_check(request: ReceivedRequest) -> bool:
    return any(dedup_id(event).startswith(tiktok.VALIDATION_DEDUP_PREFIX) for event in request_events(request))


def request_events(request: ReceivedRequest) -> list[dict[str, Any]]:
    if request.network == "tiktok":
        return request.json["data"]
    return request.json["data"]["events"]


def dedup_id(event: dict[str, Any]) -> str:
    return event["event_id"] if "event_id" in event else event["metadata"]["conversion_id"]


def postback_requests(fake: FakeAdNetwork, network: NetworkName | None = None) -> list[ReceivedRequest]:
    """What the dispatcher sent: every request except save-time credential checks."""
    return [r for r in fake.received(network) if not is_credential_check(r)]


def sent_dedup_ids(fake: FakeAdNetwork, network: NetworkName | None = None) -> list[str]:
    return [dedup_id(e) for r in postback_requests(fake, network) for e in request_events(r)]


async def batch_ingest(channel, game: str, events) -> None:  # type: ignore[no-untyped-def]
    """Several events in one transaction, so their postbacks become due together and go out as one batch."""
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    await stub.BatchIngestEvents(event_service_pb2.BatchIngestEventsRequest(parent=f"games/{game}", events=events))


def config_stub(channel) -> postback_config_service_pb2_grpc.PostbackConfigServiceStub:  # type: ignore[no-untyped-def]
    return postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)


async def get_config(channel, name: str) -> postback_config_pb2.PostbackConfig:  # type: ignore[no-untyped-def]
    response = await config_stub(channel).GetPostbackConfig(postback_config_service_pb2.GetPostbackConfigRequest(name=name))
    return response.postback_config


async def set_enabled(channel, name: str, enabled: bool) -> None:  # type: ignore[no-untyped-def]
    await config_stub(channel).UpdatePostbackConfig(postback_config_service_pb2.UpdatePostbackConfigRequest(
        postback_config=postback_config_pb2.PostbackConfig(name=name, enabled=enabled),
        update_mask=field_mask_pb2.FieldMask(paths=["enabled"])))


async def rotate(channel, name: str, token: str, *, pixel_id: str = "", test_code: str = ""):  # type: ignore[no-untyped-def]
    response = await config_stub(channel).RotatePostbackCredentials(
        postback_config_service_pb2.RotatePostbackCredentialsRequest(
            name=name, credentials=postback_config_pb2.PostbackCredentials(access_token=token, pixel_id=pixel_id),
            test_code=test_code))
    return response.postback_config
