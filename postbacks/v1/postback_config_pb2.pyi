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
    __slots__ = ("name", "display_name", "network", "credentials", "access_token_hint", "pixel_id", "trigger_events", "enabled", "health", "create_time", "update_time", "credentials_update_time")
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
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., credentials: _Optional[_Union[PostbackCredentials, _Mapping]] = ..., access_token_hint: _Optional[str] = ..., pixel_id: _Optional[str] = ..., trigger_events: _Optional[_Iterable[_Union[_network_pb2.ConversionEventType, str]]] = ..., enabled: _Optional[bool] = ..., health: _Optional[_Union[PostbackConfigHealth, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., credentials_update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostbackCredentials(_message.Message):
    __slots__ = ("access_token", "pixel_id")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PIXEL_ID_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    pixel_id: str
    def __init__(self, access_token: _Optional[str] = ..., pixel_id: _Optional[str] = ...) -> None: ...
