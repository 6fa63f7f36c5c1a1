"""GameSettingsService: a game's attribution lookback window."""

import grpc

from postbacks.v1 import game_settings_pb2, game_settings_service_pb2_grpc
from postbacks.v1 import game_settings_service_pb2 as pb
from server.api import translate
from server.core import attribution
from server.errors import Violations
from server.services import game_settings
from server.services.game_settings import GameSettingsView


def settings_to_proto(view: GameSettingsView) -> game_settings_pb2.GameSettings:
    return game_settings_pb2.GameSettings(
        name=f"games/{view.game_id}/settings",
        attribution_lookback=translate.us_to_duration(view.attribution_lookback_us),
        update_time=translate.us_to_timestamp(view.update_time_us),
    )


def _parse_settings_name(name: str, field_path: str) -> str:
    return translate.parse_name(name, "games/{game}/settings", field_path, "games/{game}/settings")[0]


def lookback_from_proto(request: pb.UpdateGameSettingsRequest) -> tuple[str, int | None]:
    game_id = _parse_settings_name(request.game_settings.name, "game_settings.name")
    violations = Violations()
    paths = translate.mask_paths(request.update_mask, violations)
    if not paths:
        violations.add("update_mask", "is required: name the fields to change (attribution_lookback)")
    for path in paths:
        if path != "attribution_lookback":
            violations.add("update_mask", f"{path[:64]!r} cannot be updated; updatable: attribution_lookback")
    lookback_us = None
    if "attribution_lookback" in paths:
        lookback = request.game_settings.attribution_lookback
        lookback_us = translate.duration_to_us(lookback)
        if not (translate.is_valid_duration(lookback)
                and attribution.MIN_LOOKBACK_US <= lookback_us <= attribution.MAX_LOOKBACK_US):
            violations.add("game_settings.attribution_lookback", "must be from 1 to 28 days (86400s to 2419200s)")
    violations.raise_if_any()
    return game_id, lookback_us


class GameSettingsServicer(game_settings_service_pb2_grpc.GameSettingsServiceServicer):
    def __init__(self, ctx):  # type: ignore[no-untyped-def]
        self._ctx = ctx

    async def GetGameSettings(self, request: pb.GetGameSettingsRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetGameSettingsResponse:
        view = await game_settings.get_game_settings(self._ctx, _parse_settings_name(request.name, "name"))
        return pb.GetGameSettingsResponse(game_settings=settings_to_proto(view))

    async def UpdateGameSettings(self, request: pb.UpdateGameSettingsRequest,
                                 context: grpc.aio.ServicerContext) -> pb.UpdateGameSettingsResponse:
        game_id, lookback_us = lookback_from_proto(request)
        view = await game_settings.update_game_settings(self._ctx, game_id, lookback_us)
        return pb.UpdateGameSettingsResponse(game_settings=settings_to_proto(view))
