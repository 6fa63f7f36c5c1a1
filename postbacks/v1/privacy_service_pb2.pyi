from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("parent", "user_id", "anonymous_id", "email")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    parent: str
    user_id: str
    anonymous_id: str
    email: str
    def __init__(self, parent: _Optional[str] = ..., user_id: _Optional[str] = ..., anonymous_id: _Optional[str] = ..., email: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("deleted_event_count", "deleted_identity_link_count", "deleted_conversion_count", "cancelled_postback_count")
    DELETED_EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_IDENTITY_LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_CONVERSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_POSTBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_event_count: int
    deleted_identity_link_count: int
    deleted_conversion_count: int
    cancelled_postback_count: int
    def __init__(self, deleted_event_count: _Optional[int] = ..., deleted_identity_link_count: _Optional[int] = ..., deleted_conversion_count: _Optional[int] = ..., cancelled_postback_count: _Optional[int] = ...) -> None: ...
