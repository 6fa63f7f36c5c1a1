import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from postbacks.v1 import network_pb2 as _network_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryAttemptStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_ATTEMPT_STATUS_UNSPECIFIED: _ClassVar[DeliveryAttemptStatus]
    DELIVERY_ATTEMPT_STATUS_SUCCESS: _ClassVar[DeliveryAttemptStatus]
    DELIVERY_ATTEMPT_STATUS_FAILED: _ClassVar[DeliveryAttemptStatus]
    DELIVERY_ATTEMPT_STATUS_RETRIED: _ClassVar[DeliveryAttemptStatus]

class TimeRangePreset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_RANGE_PRESET_UNSPECIFIED: _ClassVar[TimeRangePreset]
    TIME_RANGE_PRESET_LAST_HOUR: _ClassVar[TimeRangePreset]
    TIME_RANGE_PRESET_LAST_24_HOURS: _ClassVar[TimeRangePreset]
    TIME_RANGE_PRESET_LAST_7_DAYS: _ClassVar[TimeRangePreset]
    TIME_RANGE_PRESET_LAST_30_DAYS: _ClassVar[TimeRangePreset]
DELIVERY_ATTEMPT_STATUS_UNSPECIFIED: DeliveryAttemptStatus
DELIVERY_ATTEMPT_STATUS_SUCCESS: DeliveryAttemptStatus
DELIVERY_ATTEMPT_STATUS_FAILED: DeliveryAttemptStatus
DELIVERY_ATTEMPT_STATUS_RETRIED: DeliveryAttemptStatus
TIME_RANGE_PRESET_UNSPECIFIED: TimeRangePreset
TIME_RANGE_PRESET_LAST_HOUR: TimeRangePreset
TIME_RANGE_PRESET_LAST_24_HOURS: TimeRangePreset
TIME_RANGE_PRESET_LAST_7_DAYS: TimeRangePreset
TIME_RANGE_PRESET_LAST_30_DAYS: TimeRangePreset

class DeliveryLogEntry(_message.Message):
    __slots__ = ("name", "postback_config", "postback_config_display_name", "network", "attempt_time", "event_type", "status", "http_status", "latency_ms", "attempt_number", "network_code", "network_message", "network_request_id", "conversion", "next_attempt_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    POSTBACK_CONFIG_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CODE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    postback_config: str
    postback_config_display_name: str
    network: _network_pb2.Network
    attempt_time: _timestamp_pb2.Timestamp
    event_type: _network_pb2.ConversionEventType
    status: DeliveryAttemptStatus
    http_status: int
    latency_ms: int
    attempt_number: int
    network_code: str
    network_message: str
    network_request_id: str
    conversion: str
    next_attempt_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., postback_config: _Optional[str] = ..., postback_config_display_name: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[_Union[_network_pb2.ConversionEventType, str]] = ..., status: _Optional[_Union[DeliveryAttemptStatus, str]] = ..., http_status: _Optional[int] = ..., latency_ms: _Optional[int] = ..., attempt_number: _Optional[int] = ..., network_code: _Optional[str] = ..., network_message: _Optional[str] = ..., network_request_id: _Optional[str] = ..., conversion: _Optional[str] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
