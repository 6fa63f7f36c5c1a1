"""EventService: ingest events and read conversions back."""

import grpc

from postbacks.v1 import event_service_pb2 as pb
from postbacks.v1 import event_service_pb2_grpc
from server.api import translate
from server.services import conversions, ingest
from server.services.context import ServiceContext


class EventServicer(event_service_pb2_grpc.EventServiceServicer):
    def __init__(self, ctx: ServiceContext, group_committer: ingest.GroupCommitter):
        self._ctx = ctx
        self._group_committer = group_committer

    async def IngestEvent(self, request: pb.IngestEventRequest, context: grpc.aio.ServicerContext) -> pb.IngestEventResponse:
        game_id = translate.parse_game(request.parent)
        event = translate.single_event_from_proto(request.event, request.HasField("event"), self._ctx.clock())
        (receipt,) = await self._group_committer.ingest(game_id, [event])
        return pb.IngestEventResponse(result=translate.receipt_fields(receipt))

    async def BatchIngestEvents(self, request: pb.BatchIngestEventsRequest,
                                context: grpc.aio.ServicerContext) -> pb.BatchIngestEventsResponse:
        game_id = translate.parse_game(request.parent)
        events = translate.events_from_proto(request.events, "events", self._ctx.clock())
        receipts = await ingest.ingest_events(self._ctx, game_id, events)
        return pb.BatchIngestEventsResponse(results=[translate.receipt_fields(r) for r in receipts])

    async def GetConversion(self, request: pb.GetConversionRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetConversionResponse:
        game_id, event_id = translate.parse_name(request.name, "games/{game}/conversions/{event}", "name",
                                                 "games/{game}/conversions/{event_id}")
        view = await conversions.get_conversion(self._ctx, game_id, event_id)
        return pb.GetConversionResponse(conversion=translate.conversion_to_proto(view))
