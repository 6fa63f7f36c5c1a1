"""A small asyncio client for game servers: send events to the postbacks service and read conversions back."""

import asyncio
import datetime as dt
from collections.abc import Sequence

import grpc
from google.protobuf import timestamp_pb2

from postbacks.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc, network_pb2

# Safe to retry: every event carries the caller's event_id and the service deduplicates on it. CANCELLED is how a
# server that cannot keep up sheds calls it has not started (gRPC's limit on calls waiting for the server); this
# process cancelling its own call raises asyncio.CancelledError instead.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


def _timestamp(when: dt.datetime | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when or dt.datetime.now(dt.UTC))
    return ts


def game_launch(event_id: str, *, user_id: str = "", anonymous_id: str = "", when: dt.datetime | None = None,
                **identity: str) -> event_pb2.Event:
    """The player's launch of the game; only the first one per player is a conversion."""
    return event_pb2.Event(event_id=event_id, event_time=_timestamp(when), user_id=user_id, anonymous_id=anonymous_id,
                           game_launch=event_pb2.GameLaunch(), **identity)


def purchase(event_id: str, *, user_id: str = "", anonymous_id: str = "", value: str = "", currency: str = "",
             order_id: str = "", item_ids: Sequence[str] = (), when: dt.datetime | None = None,
             **identity: str) -> event_pb2.Event:
    """A completed purchase; `value` is a decimal string such as "9.99" (never a float), with `currency`."""
    details = event_pb2.Purchase(currency=currency, order_id=order_id, item_ids=list(item_ids))
    if value:
        details.value = value
    return event_pb2.Event(event_id=event_id, event_time=_timestamp(when), user_id=user_id, anonymous_id=anonymous_id,
                           purchase=details, **identity)


def identify(event_id: str, *, user_id: str, anonymous_id: str = "", email: str = "", when: dt.datetime | None = None,
             **identity: str) -> event_pb2.Event:
    """Links a visitor's anonymous id (and email, hashed by the service) to the player's user id."""
    return event_pb2.Event(event_id=event_id, event_time=_timestamp(when), user_id=user_id, anonymous_id=anonymous_id,
                           email=email, identify=event_pb2.Identify(), **identity)


def ad_click(event_id: str, *, anonymous_id: str, landing_url: str = "", network: str = "", click_id: str = "",
             when: dt.datetime | None = None, **identity: str) -> event_pb2.Event:
    """An ad click; the network and click id are read from the landing URL (ttclid, rdt_cid) when not given."""
    network_value = {"": network_pb2.NETWORK_UNSPECIFIED, "tiktok": network_pb2.NETWORK_TIKTOK,
                     "reddit": network_pb2.NETWORK_REDDIT}[network]
    return event_pb2.Event(event_id=event_id, event_time=_timestamp(when), anonymous_id=anonymous_id,
                           ad_click=event_pb2.AdClick(network=network_value, click_id=click_id, landing_url=landing_url),
                           **identity)


class PostbacksClient:
    """`async with PostbacksClient("127.0.0.1:50051", api_key=KEY) as client: await client.ingest("my-game", event)`."""

    def __init__(self, target: str, *, api_key: str = "", tls: bool = False, root_certificates: bytes | None = None,
                 timeout_s: float = 10.0, attempts: int = 5):
        credentials = grpc.ssl_channel_credentials(root_certificates) if tls else None
        self._channel = (grpc.aio.secure_channel(target, credentials) if credentials
                         else grpc.aio.insecure_channel(target))
        self._events = event_service_pb2_grpc.EventServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout_s = timeout_s
        self._attempts = attempts

    async def __aenter__(self) -> "PostbacksClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def ingest(self, game: str, event: event_pb2.Event) -> event_pb2.IngestResult:
        """Returns once the service has durably stored the event (a repeat returns `duplicate=True`)."""
        request = event_service_pb2.IngestEventRequest(parent=f"games/{game}", event=event)
        response = await self._call(self._events.IngestEvent, request)
        return response.result

    async def ingest_batch(self, game: str, events: Sequence[event_pb2.Event]) -> list[event_pb2.IngestResult]:
        """Up to 1000 events, stored all or none; results in request order."""
        request = event_service_pb2.BatchIngestEventsRequest(parent=f"games/{game}", events=list(events))
        response = await self._call(self._events.BatchIngestEvents, request)
        return list(response.results)

    async def get_conversion(self, game: str, event_id: str):  # type: ignore[no-untyped-def]
        """The conversion's attribution decision and the state of its postbacks."""
        request = event_service_pb2.GetConversionRequest(name=f"games/{game}/conversions/{event_id}")
        return (await self._call(self._events.GetConversion, request)).conversion

    async def _call(self, method, request):  # type: ignore[no-untyped-def]
        delay_s = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                return await method(request, timeout=self._timeout_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RETRYABLE or attempt == self._attempts:
                    raise
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)
        raise AssertionError("unreachable")
