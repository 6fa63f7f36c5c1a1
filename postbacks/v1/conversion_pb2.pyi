import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from postbacks.v1 import network_pb2 as _network_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConversionDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSION_DECISION_UNSPECIFIED: _ClassVar[ConversionDecision]
    CONVERSION_DECISION_POSTBACK_OWED: _ClassVar[ConversionDecision]
    CONVERSION_DECISION_NO_POSTBACK: _ClassVar[ConversionDecision]

class NoPostbackReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_POSTBACK_REASON_UNSPECIFIED: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_ORGANIC: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_CLICK_OUTSIDE_WINDOW: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_NETWORK_NOT_CONFIGURED: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_CONFIG_DISABLED: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_EVENT_TYPE_NOT_SELECTED: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_REPEAT_LAUNCH: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_NO_MATCH_KEY: _ClassVar[NoPostbackReason]
    NO_POSTBACK_REASON_USER_ERASED: _ClassVar[NoPostbackReason]

class PostbackState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTBACK_STATE_UNSPECIFIED: _ClassVar[PostbackState]
    POSTBACK_STATE_PENDING: _ClassVar[PostbackState]
    POSTBACK_STATE_SUCCEEDED: _ClassVar[PostbackState]
    POSTBACK_STATE_FAILED: _ClassVar[PostbackState]
    POSTBACK_STATE_CANCELLED: _ClassVar[PostbackState]
    POSTBACK_STATE_HELD: _ClassVar[PostbackState]

class PostbackFailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTBACK_FAILURE_REASON_UNSPECIFIED: _ClassVar[PostbackFailureReason]
    POSTBACK_FAILURE_REASON_PAYLOAD: _ClassVar[PostbackFailureReason]
    POSTBACK_FAILURE_REASON_CREDENTIALS: _ClassVar[PostbackFailureReason]
    POSTBACK_FAILURE_REASON_RETRY_WINDOW_CLOSED: _ClassVar[PostbackFailureReason]
    POSTBACK_FAILURE_REASON_WINDOW_CLOSED_WHILE_HELD: _ClassVar[PostbackFailureReason]
CONVERSION_DECISION_UNSPECIFIED: ConversionDecision
CONVERSION_DECISION_POSTBACK_OWED: ConversionDecision
CONVERSION_DECISION_NO_POSTBACK: ConversionDecision
NO_POSTBACK_REASON_UNSPECIFIED: NoPostbackReason
NO_POSTBACK_REASON_ORGANIC: NoPostbackReason
NO_POSTBACK_REASON_CLICK_OUTSIDE_WINDOW: NoPostbackReason
NO_POSTBACK_REASON_NETWORK_NOT_CONFIGURED: NoPostbackReason
NO_POSTBACK_REASON_CONFIG_DISABLED: NoPostbackReason
NO_POSTBACK_REASON_EVENT_TYPE_NOT_SELECTED: NoPostbackReason
NO_POSTBACK_REASON_REPEAT_LAUNCH: NoPostbackReason
NO_POSTBACK_REASON_NO_MATCH_KEY: NoPostbackReason
NO_POSTBACK_REASON_USER_ERASED: NoPostbackReason
POSTBACK_STATE_UNSPECIFIED: PostbackState
POSTBACK_STATE_PENDING: PostbackState
POSTBACK_STATE_SUCCEEDED: PostbackState
POSTBACK_STATE_FAILED: PostbackState
POSTBACK_STATE_CANCELLED: PostbackState
POSTBACK_STATE_HELD: PostbackState
POSTBACK_FAILURE_REASON_UNSPECIFIED: PostbackFailureReason
POSTBACK_FAILURE_REASON_PAYLOAD: PostbackFailureReason
POSTBACK_FAILURE_REASON_CREDENTIALS: PostbackFailureReason
POSTBACK_FAILURE_REASON_RETRY_WINDOW_CLOSED: PostbackFailureReason
POSTBACK_FAILURE_REASON_WINDOW_CLOSED_WHILE_HELD: PostbackFailureReason

class Conversion(_message.Message):
    __slots__ = ("name", "event_id", "event_type", "event_time", "receive_time", "user_id", "anonymous_id", "value", "currency", "decision", "no_postback_reason", "attributed_click", "postbacks", "decide_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    NO_POSTBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTED_CLICK_FIELD_NUMBER: _ClassVar[int]
    POSTBACKS_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    event_id: str
    event_type: _network_pb2.ConversionEventType
    event_time: _timestamp_pb2.Timestamp
    receive_time: _timestamp_pb2.Timestamp
    user_id: str
    anonymous_id: str
    value: str
    currency: str
    decision: ConversionDecision
    no_postback_reason: NoPostbackReason
    attributed_click: AttributedClick
    postbacks: _containers.RepeatedCompositeFieldContainer[Postback]
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., event_id: _Optional[str] = ..., event_type: _Optional[_Union[_network_pb2.ConversionEventType, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., anonymous_id: _Optional[str] = ..., value: _Optional[str] = ..., currency: _Optional[str] = ..., decision: _Optional[_Union[ConversionDecision, str]] = ..., no_postback_reason: _Optional[_Union[NoPostbackReason, str]] = ..., attributed_click: _Optional[_Union[AttributedClick, _Mapping]] = ..., postbacks: _Optional[_Iterable[_Union[Postback, _Mapping]]] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttributedClick(_message.Message):
    __slots__ = ("event", "network", "click_id", "click_time")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CLICK_ID_FIELD_NUMBER: _ClassVar[int]
    CLICK_TIME_FIELD_NUMBER: _ClassVar[int]
    event: str
    network: _network_pb2.Network
    click_id: str
    click_time: _timestamp_pb2.Timestamp
    def __init__(self, event: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., click_id: _Optional[str] = ..., click_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Postback(_message.Message):
    __slots__ = ("postback_config", "network", "state", "attempt_count", "last_attempt_time", "next_attempt_time", "last_error", "failure_reason", "hold_reason")
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    HOLD_REASON_FIELD_NUMBER: _ClassVar[int]
    postback_config: str
    network: _network_pb2.Network
    state: PostbackState
    attempt_count: int
    last_attempt_time: _timestamp_pb2.Timestamp
    next_attempt_time: _timestamp_pb2.Timestamp
    last_error: str
    failure_reason: PostbackFailureReason
    hold_reason: str
    def __init__(self, postback_config: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., state: _Optional[_Union[PostbackState, str]] = ..., attempt_count: _Optional[int] = ..., last_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., failure_reason: _Optional[_Union[PostbackFailureReason, str]] = ..., hold_reason: _Optional[str] = ...) -> None: ...
