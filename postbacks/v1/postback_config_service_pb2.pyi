import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from postbacks.v1 import conversion_pb2 as _conversion_pb2
from postbacks.v1 import network_pb2 as _network_pb2
from postbacks.v1 import postback_config_pb2 as _postback_config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreatePostbackConfigRequest(_message.Message):
    __slots__ = ("parent", "postback_config", "postback_config_id", "test_code")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    POSTBACK_CONFIG_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_CODE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    postback_config: _postback_config_pb2.PostbackConfig
    postback_config_id: str
    test_code: str
    def __init__(self, parent: _Optional[str] = ..., postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ..., postback_config_id: _Optional[str] = ..., test_code: _Optional[str] = ...) -> None: ...

class CreatePostbackConfigResponse(_message.Message):
    __slots__ = ("postback_config",)
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    postback_config: _postback_config_pb2.PostbackConfig
    def __init__(self, postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ...) -> None: ...

class GetPostbackConfigRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPostbackConfigResponse(_message.Message):
    __slots__ = ("postback_config",)
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    postback_config: _postback_config_pb2.PostbackConfig
    def __init__(self, postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ...) -> None: ...

class ListPostbackConfigsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPostbackConfigsResponse(_message.Message):
    __slots__ = ("postback_configs", "next_page_token")
    POSTBACK_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    postback_configs: _containers.RepeatedCompositeFieldContainer[_postback_config_pb2.PostbackConfig]
    next_page_token: str
    def __init__(self, postback_configs: _Optional[_Iterable[_Union[_postback_config_pb2.PostbackConfig, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePostbackConfigRequest(_message.Message):
    __slots__ = ("postback_config", "update_mask")
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    postback_config: _postback_config_pb2.PostbackConfig
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePostbackConfigResponse(_message.Message):
    __slots__ = ("postback_config",)
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    postback_config: _postback_config_pb2.PostbackConfig
    def __init__(self, postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ...) -> None: ...

class DeletePostbackConfigRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePostbackConfigResponse(_message.Message):
    __slots__ = ("cancelled_postback_count",)
    CANCELLED_POSTBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    cancelled_postback_count: int
    def __init__(self, cancelled_postback_count: _Optional[int] = ...) -> None: ...

class RotatePostbackCredentialsRequest(_message.Message):
    __slots__ = ("name", "credentials", "test_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    TEST_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    credentials: _postback_config_pb2.PostbackCredentials
    test_code: str
    def __init__(self, name: _Optional[str] = ..., credentials: _Optional[_Union[_postback_config_pb2.PostbackCredentials, _Mapping]] = ..., test_code: _Optional[str] = ...) -> None: ...

class RotatePostbackCredentialsResponse(_message.Message):
    __slots__ = ("postback_config",)
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    postback_config: _postback_config_pb2.PostbackConfig
    def __init__(self, postback_config: _Optional[_Union[_postback_config_pb2.PostbackConfig, _Mapping]] = ...) -> None: ...

class ValidatePostbackCredentialsRequest(_message.Message):
    __slots__ = ("parent", "postback_config", "network", "credentials", "event_type", "test_code")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    POSTBACK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEST_CODE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    postback_config: str
    network: _network_pb2.Network
    credentials: _postback_config_pb2.PostbackCredentials
    event_type: _network_pb2.ConversionEventType
    test_code: str
    def __init__(self, parent: _Optional[str] = ..., postback_config: _Optional[str] = ..., network: _Optional[_Union[_network_pb2.Network, str]] = ..., credentials: _Optional[_Union[_postback_config_pb2.PostbackCredentials, _Mapping]] = ..., event_type: _Optional[_Union[_network_pb2.ConversionEventType, str]] = ..., test_code: _Optional[str] = ...) -> None: ...

class ValidatePostbackCredentialsResponse(_message.Message):
    __slots__ = ("result", "http_status", "network_code", "message", "network_request_id", "retry_delay")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    result: _postback_config_pb2.CredentialCheckResult
    http_status: int
    network_code: str
    message: str
    network_request_id: str
    retry_delay: _duration_pb2.Duration
    def __init__(self, result: _Optional[_Union[_postback_config_pb2.CredentialCheckResult, str]] = ..., http_status: _Optional[int] = ..., network_code: _Optional[str] = ..., message: _Optional[str] = ..., network_request_id: _Optional[str] = ..., retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RetryFailedPostbacksRequest(_message.Message):
    __slots__ = ("name", "start_time", "end_time", "failure_reasons")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    failure_reasons: _containers.RepeatedScalarFieldContainer[_conversion_pb2.PostbackFailureReason]
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failure_reasons: _Optional[_Iterable[_Union[_conversion_pb2.PostbackFailureReason, str]]] = ...) -> None: ...

class RetryFailedPostbacksResponse(_message.Message):
    __slots__ = ("requeued_postback_count", "window_closed_postback_count")
    REQUEUED_POSTBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CLOSED_POSTBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    requeued_postback_count: int
    window_closed_postback_count: int
    def __init__(self, requeued_postback_count: _Optional[int] = ..., window_closed_postback_count: _Optional[int] = ...) -> None: ...
