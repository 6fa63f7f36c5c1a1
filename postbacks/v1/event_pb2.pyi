import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from postbacks.v1 import conversion_pb2 as _conversion_pb2
from postbacks.v1 import network_pb2 as _network_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "event_time", "user_id", "anonymous_id", "email", "ip_address", "user_agent", "ad_click", "identify", "game_launch", "purchase")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    AD_CLICK_FIELD_NUMBER: _ClassVar[int]
    IDENTIFY_FIELD_NUMBER: _ClassVar[int]
    GAME_LAUNCH_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_time: _timestamp_pb2.Timestamp
    user_id: str
    anonymous_id: str
    email: str
    ip_address: str
    user_agent: str
    ad_click: AdClick
    identify: Identify
    game_launch: GameLaunch
    purchase: Purchase
    def __init__(self, event_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., anonymous_id: _Optional[str] = ..., email: _Optional[str] = ..., ip_address: _Optional[str] = ..., user_agent: _Optional[str] = ..., ad_click: _Optional[_Union[AdClick, _Mapping]] = ..., identify: _Optional[_Union[Identify, _Mapping]] = ..., game_launch: _Optional[_Union[GameLaunch, _Mapping]] = ..., purchase: _Optional[_Union[Purchase, _Mapping]] = ...) -> None: ...

class AdClick(_message.Message):
    __slots__ = ("network", "click_id", "landing_url")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CLICK_ID_FIELD_NUMBER: _ClassVar[int]
    LANDING_URL_FIELD_NUMBER: _ClassVar[int]
    network: _network_pb2.Network
    click_id: str
    landing_url: str
    def __init__(self, network: _Optional[_Union[_network_pb2.Network, str]] = ..., click_id: _Optional[str] = ..., landing_url: _Optional[str] = ...) -> None: ...

class Identify(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GameLaunch(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Purchase(_message.Message):
    __slots__ = ("value", "value_micros", "currency", "order_id", "item_ids")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    value: str
    value_micros: int
    currency: str
    order_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, value: _Optional[str] = ..., value_micros: _Optional[int] = ..., currency: _Optional[str] = ..., order_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("name", "duplicate", "payload_mismatch", "conversion")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    duplicate: bool
    payload_mismatch: bool
    conversion: _conversion_pb2.Conversion
    def __init__(self, name: _Optional[str] = ..., duplicate: _Optional[bool] = ..., payload_mismatch: _Optional[bool] = ..., conversion: _Optional[_Union[_conversion_pb2.Conversion, _Mapping]] = ...) -> None: ...
