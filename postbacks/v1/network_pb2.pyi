from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Network(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_UNSPECIFIED: _ClassVar[Network]
    NETWORK_TIKTOK: _ClassVar[Network]
    NETWORK_REDDIT: _ClassVar[Network]

class ConversionEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSION_EVENT_TYPE_UNSPECIFIED: _ClassVar[ConversionEventType]
    CONVERSION_EVENT_TYPE_GAME_LAUNCH: _ClassVar[ConversionEventType]
    CONVERSION_EVENT_TYPE_PURCHASE: _ClassVar[ConversionEventType]
NETWORK_UNSPECIFIED: Network
NETWORK_TIKTOK: Network
NETWORK_REDDIT: Network
CONVERSION_EVENT_TYPE_UNSPECIFIED: ConversionEventType
CONVERSION_EVENT_TYPE_GAME_LAUNCH: ConversionEventType
CONVERSION_EVENT_TYPE_PURCHASE: ConversionEventType
