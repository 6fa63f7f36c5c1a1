from google.protobuf import field_mask_pb2 as _field_mask_pb2
from postbacks.v1 import game_settings_pb2 as _game_settings_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetGameSettingsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetGameSettingsResponse(_message.Message):
    __slots__ = ("game_settings",)
    GAME_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    game_settings: _game_settings_pb2.GameSettings
    def __init__(self, game_settings: _Optional[_Union[_game_settings_pb2.GameSettings, _Mapping]] = ...) -> None: ...

class UpdateGameSettingsRequest(_message.Message):
    __slots__ = ("game_settings", "update_mask")
    GAME_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    game_settings: _game_settings_pb2.GameSettings
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, game_settings: _Optional[_Union[_game_settings_pb2.GameSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateGameSettingsResponse(_message.Message):
    __slots__ = ("game_settings",)
    GAME_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    game_settings: _game_settings_pb2.GameSettings
    def __init__(self, game_settings: _Optional[_Union[_game_settings_pb2.GameSettings, _Mapping]] = ...) -> None: ...
