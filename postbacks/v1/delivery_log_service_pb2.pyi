import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from postbacks.v1 import delivery_log_pb2 as _delivery_log_pb2
from postbacks.v1 import network_pb2 as _network_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListDeliveryLogsRequest(_message.Message):
    __slots__ = ("parent", "time_range", "start_time", "end_time", "statuses", "event_types", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    time_range: _delivery_log_pb2.TimeRangePreset
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    statuses: _containers.RepeatedScalarFieldContainer[_delivery_log_pb2.DeliveryAttemptStatus]
    event_types: _containers.RepeatedScalarFieldContainer[_network_pb2.ConversionEventType]
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., time_range: _Optional[_Union[_delivery_log_pb2.TimeRangePreset, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[_delivery_log_pb2.DeliveryAttemptStatus, str]]] = ..., event_types: _Optional[_Iterable[_Union[_network_pb2.ConversionEventType, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeliveryLogsResponse(_message.Message):
    __slots__ = ("delivery_logs", "next_page_token")
    DELIVERY_LOGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    delivery_logs: _containers.RepeatedCompositeFieldContainer[_delivery_log_pb2.DeliveryLogEntry]
    next_page_token: str
    def __init__(self, delivery_logs: _Optional[_Iterable[_Union[_delivery_log_pb2.DeliveryLogEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamDeliveryLogsRequest(_message.Message):
    __slots__ = ("parent", "time_range", "start_time", "statuses", "event_types", "resume_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    time_range: _delivery_log_pb2.TimeRangePreset
    start_time: _timestamp_pb2.Timestamp
    statuses: _containers.RepeatedScalarFieldContainer[_delivery_log_pb2.DeliveryAttemptStatus]
    event_types: _containers.RepeatedScalarFieldContainer[_network_pb2.ConversionEventType]
    resume_token: str
    def __init__(self, parent: _Optional[str] = ..., time_range: _Optional[_Union[_delivery_log_pb2.TimeRangePreset, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[_delivery_log_pb2.DeliveryAttemptStatus, str]]] = ..., event_types: _Optional[_Iterable[_Union[_network_pb2.ConversionEventType, str]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class StreamDeliveryLogsResponse(_message.Message):
    __slots__ = ("delivery_log", "resume_token")
    DELIVERY_LOG_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    delivery_log: _delivery_log_pb2.DeliveryLogEntry
    resume_token: str
    def __init__(self, delivery_log: _Optional[_Union[_delivery_log_pb2.DeliveryLogEntry, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...
