"""DeliveryLogService: every dispatch attempt of a config or a game, listed with filters or followed live."""

from collections.abc import AsyncIterator

import grpc

from postbacks.v1 import delivery_log_pb2, delivery_log_service_pb2_grpc, network_pb2
from postbacks.v1 import delivery_log_service_pb2 as pb
from server.api import translate
from server.errors import Violations
from server.services import delivery_logs
from server.services.context import ServiceContext
from server.services.delivery_logs import LogSelection, TimeWindow
from server.services.log_tail import LogRecord, LogTail

_HOUR_US = 3_600_000_000
PRESET_SPANS_US = {
    delivery_log_pb2.TIME_RANGE_PRESET_LAST_HOUR: _HOUR_US,
    delivery_log_pb2.TIME_RANGE_PRESET_LAST_24_HOURS: 24 * _HOUR_US,
    delivery_log_pb2.TIME_RANGE_PRESET_LAST_7_DAYS: 7 * 24 * _HOUR_US,
    delivery_log_pb2.TIME_RANGE_PRESET_LAST_30_DAYS: 30 * 24 * _HOUR_US,
}
MAX_FILTER_VALUES = 16
_PARENT_SHAPE = "games/{game} or games/{game}/postbackConfigs/{postback_config}"


def _parent(parent: str) -> tuple[str, str | None]:
    if "/postbackConfigs/" in parent:
        game_id, config_id = translate.parse_name(parent, "games/{game}/postbackConfigs/{id}", "parent", _PARENT_SHAPE)
        return game_id, config_id
    return translate.parse_name(parent, "games/{game}", "parent", _PARENT_SHAPE)[0], None


def _enum_values(values, mapping: dict, enum_type, field_path: str, violations: Violations) -> frozenset:  # type: ignore[no-untyped-def, type-arg]
    chosen = set()
    if len(values) > MAX_FILTER_VALUES:
        violations.add(field_path, f"must list at most {MAX_FILTER_VALUES} values")
        return frozenset()
    for i, value in enumerate(values):
        if value in mapping:
            chosen.add(mapping[value])
        else:
            allowed = ", ".join(enum_type.Name(v) for v in mapping)
            violations.add(f"{field_path}[{i}]", f"must be one of {allowed}; got {value}")
    return frozenset(chosen)


def _selection(parent: str, statuses, event_types, violations: Violations) -> LogSelection:  # type: ignore[no-untyped-def]
    game_id, config_id = _parent(parent)
    return LogSelection(
        game_id=game_id,
        config_id=config_id,
        statuses=_enum_values(statuses, translate.ATTEMPT_STATUS_FROM_PROTO, delivery_log_pb2.DeliveryAttemptStatus,
                              "statuses", violations),
        event_types=_enum_values(event_types, translate.EVENT_TYPE_FROM_PROTO, network_pb2.ConversionEventType,
                                 "event_types", violations),
    )


def _preset_span(value: int, violations: Violations) -> int | None:
    if value == delivery_log_pb2.TIME_RANGE_PRESET_UNSPECIFIED:
        return None
    if value not in PRESET_SPANS_US:
        allowed = ", ".join(delivery_log_pb2.TimeRangePreset.Name(v) for v in PRESET_SPANS_US)
        violations.add("time_range", f"must be one of {allowed}; got {value}")
        return None
    return PRESET_SPANS_US[value]


def list_request_from_proto(request: pb.ListDeliveryLogsRequest) -> tuple[LogSelection, TimeWindow, int]:
    page_size = translate.page_size(request.page_size)
    violations = Violations()
    selection = _selection(request.parent, request.statuses, request.event_types, violations)
    span_us = _preset_span(request.time_range, violations)
    start_us = translate.optional_timestamp_to_us(request, "start_time", violations)
    end_us = translate.optional_timestamp_to_us(request, "end_time", violations)
    if request.time_range and (start_us is not None or end_us is not None):
        violations.add("time_range", "is exclusive with start_time and end_time: give a preset or explicit bounds")
    if start_us is not None and end_us is not None and start_us >= end_us:
        violations.add("end_time", "must be after start_time")
    violations.raise_if_any()
    return selection, TimeWindow(span_us=span_us, start_us=start_us, end_us=end_us), page_size


def stream_request_from_proto(request: pb.StreamDeliveryLogsRequest) -> tuple[LogSelection, TimeWindow]:
    violations = Violations()
    selection = _selection(request.parent, request.statuses, request.event_types, violations)
    span_us = _preset_span(request.time_range, violations)
    start_us = translate.optional_timestamp_to_us(request, "start_time", violations)
    if request.time_range and start_us is not None:
        violations.add("time_range", "is exclusive with start_time")
    if request.resume_token and (request.time_range or start_us is not None):
        violations.add("resume_token", "is exclusive with time_range and start_time: a resumed stream continues "
                                       "where the token left off")
    violations.raise_if_any()
    return selection, TimeWindow(span_us=span_us, start_us=start_us)


def entry_to_proto(record: LogRecord) -> delivery_log_pb2.DeliveryLogEntry:
    config = translate.config_name(record.game_id, record.config_id)
    return delivery_log_pb2.DeliveryLogEntry(
        name=f"{config}/deliveryLogs/{record.id}",
        postback_config=config,
        postback_config_display_name=record.config_display_name,
        network=translate.NETWORK_TO_PROTO[record.network],
        attempt_time=translate.us_to_timestamp(record.attempt_time_us),
        event_type=translate.EVENT_TYPE_TO_PROTO[record.event_type],
        status=translate.ATTEMPT_STATUS_TO_PROTO[record.status],
        http_status=record.http_status,
        latency_ms=record.latency_ms,
        attempt_number=record.attempt_number,
        network_code=record.network_code or "",
        network_message=record.network_message or "",
        network_request_id=record.network_request_id or "",
        conversion=f"games/{record.game_id}/conversions/{record.conversion_event_id}",
        next_attempt_time=translate.us_to_timestamp(record.next_attempt_time_us),
    )


class DeliveryLogServicer(delivery_log_service_pb2_grpc.DeliveryLogServiceServicer):
    def __init__(self, ctx: ServiceContext, tail: LogTail, heartbeat_s: float):
        self._ctx = ctx
        self._tail = tail
        self._heartbeat_s = heartbeat_s

    async def ListDeliveryLogs(self, request: pb.ListDeliveryLogsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListDeliveryLogsResponse:
        selection, window, page_size = list_request_from_proto(request)
        records, next_token = await delivery_logs.list_delivery_logs(self._ctx, selection, window, page_size,
                                                                     request.page_token)
        return pb.ListDeliveryLogsResponse(delivery_logs=[entry_to_proto(r) for r in records],
                                           next_page_token=next_token)

    async def StreamDeliveryLogs(self, request: pb.StreamDeliveryLogsRequest,
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamDeliveryLogsResponse]:
        selection, window = stream_request_from_proto(request)
        async for item in delivery_logs.stream_delivery_logs(self._ctx, self._tail, selection, window,
                                                             request.resume_token, self._heartbeat_s):
            yield pb.StreamDeliveryLogsResponse(
                delivery_log=entry_to_proto(item.record) if item.record else None, resume_token=item.resume_token)
