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

class PostbackCircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTBACK_CIRCUIT_STATE_UNSPECIFIED: _ClassVar[PostbackCircuitState]
    POSTBACK_CIRCUIT_STATE_CLOSED: _ClassVar[PostbackCircuitState]
    POSTBACK_CIRCUIT_STATE_OPEN: _ClassVar[PostbackCircuitState]
    POSTBACK_CIRCUIT_STATE_PROBING: _ClassVar[PostbackCircuitState]

class PostbackCircuitCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTBACK_CIRCUIT_CAUSE_UNSPECIFIED: _ClassVar[PostbackCircuitCause]
    POSTBACK_CIRCUIT_CAUSE_CREDENTIALS: _ClassVar[PostbackCircuitCause]
    POSTBACK_CIRCUIT_CAUSE_TRANSIENT_FAILURES: _ClassVar[PostbackCircuitCause]

class PostbackConfigHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSTBACK_CONFIG_HEALTH_UNSPECIFIED: _ClassVar[PostbackConfigHealth]
    POSTBACK_CONFIG_HEALTH_HEALTHY: _ClassVar[PostbackConfigHealth]
    POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES: _ClassVar[PostbackConfigHealth]
    POSTBACK_CONFIG_HEALTH_NO_RECENT_ACTIVITY: _ClassVar[PostbackConfigHealth]

class CredentialCheckResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_CHECK_RESULT_UNSPECIFIED: _ClassVar[CredentialCheckResult]
    CREDENTIAL_CHECK_RESULT_ACCEPTED: _ClassVar[CredentialCheckResult]
    CREDENTIAL_CHECK_RESULT_REJECTED: _ClassVar[CredentialCheckResult]
    CREDENTIAL_CHECK_RESULT_UNREACHABLE: _ClassVar[CredentialCheckResult]
    CREDENTIAL_CHECK_RESULT_THROTTLED: _ClassVar[CredentialCheckResult]
POSTBACK_CIRCUIT_STATE_UNSPECIFIED: PostbackCircuitState
POSTBACK_CIRCUIT_STATE_CLOSED: PostbackCircuitState
POSTBACK_CIRCUIT_STATE_OPEN: PostbackCircuitState
POSTBACK_CIRCUIT_STATE_PROBING: PostbackCircuitState
POSTBACK_CIRCUIT_CAUSE_UNSPECIFIED: PostbackCircuitCause
POSTBACK_CIRCUIT_CAUSE_CREDENTIALS: PostbackCircuitCause
POSTBACK_CIRCUIT_CAUSE_TRANSIENT_FAILURES: PostbackCircuitCause
POSTBACK_CONFIG_HEALTH_UNSPECIFIED: PostbackConfigHealth
POSTBACK_CONFIG_HEALTH_HEALTHY: PostbackConfigHealth
POSTBACK_CONFIG_HEALTH_CREDENTIAL_FAILURES: PostbackConfigHealth
POSTBACK_CONFIG_HEALTH_NO_RECENT_ACTIVITY: PostbackConfigHealth
CREDENTIAL_CHECK_RESULT_UNSPECIFIED: CredentialCheckResult
CREDENTIAL_CHECK_RESULT_ACCEPTED: CredentialCheckResult
CREDENTIAL_CHECK_RESULT_REJECTED: CredentialCheckResult
CREDENTIAL_CHECK_RESULT_UNREACHABLE: CredentialCheckResult
CREDENTIAL_CHECK_RESULT_THROTTLED: CredentialCheckResult

class PostbackConfig(_message.Message):
    __slots__ = ("name", "display_name", "network", "credentials", "access_token_hint", "pixel_id", "trigger_events", "enabled", "health", "create_time", "update_time", "credentials_update_time", "circuit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKEN_HINT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    network: _network_pb2.Network
    credentials: PostbackCredentials
    access_token_hint: str
    pixel_id: str
    trigger_events: _containers.RepeatedScalarFieldContainer[_network_pb2.ConversionEventType]
    enabled: bool
    health: PostbackConfigHealth
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    credentials_update_time: _timestamp_pb2.Timestamp
    circuit: PostbackCircuit
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., credentials: _Optional[_Union[PostbackCredentials, _Mapping]] = ..., access_token_hint: _Optional[str] = ..., pixel_id: _Optional[str] = ..., trigger_events: _Optional[_Iterable[_Union[_network_pb2.ConversionEventType, str]]] = ..., enabled: _Optional[bool] = ..., health: _Optional[_Union[PostbackConfigHealth, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., credentials_update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., circuit: _Optional[_Union[PostbackCircuit, _Mapping]] = ...) -> None: ...

class PostbackCircuit(_message.Message):
    __slots__ = ("state", "cause", "open_time", "next_probe_time", "failed_probe_count", "held_postback_count", "oldest_held_postback_create_time")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_PROBE_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILED_PROBE_COUNT_FIELD_NUMBER: _ClassVar[int]
    HELD_POSTBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_HELD_POSTBACK_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    state: PostbackCircuitState
    cause: PostbackCircuitCause
    open_time: _timestamp_pb2.Timestamp
    next_probe_time: _timestamp_pb2.Timestamp
    failed_probe_count: int
    held_postback_count: int
    oldest_held_postback_create_time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[PostbackCircuitState, str]] = ..., cause: _Optional[_Union[PostbackCircuitCause, str]] = ..., open_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_probe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failed_probe_count: _Optional[int] = ..., held_postback_count: _Optional[int] = ..., oldest_held_postback_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostbackCredentials(_message.Message):
    __slots__ = ("access_token", "pixel_id")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ID_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    pixel_id: str
    def __init__(self, access_token: _Optional[str] = ..., pixel_id: _Optional[str] = ...) -> None: ...
