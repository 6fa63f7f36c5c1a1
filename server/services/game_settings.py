"""Per-game attribution settings; a game never configured has the defaults."""

from dataclasses import dataclass

from server.core import attribution
from server.services.context import ServiceContext
from server.store.models import Game


@dataclass(frozen=True, slots=True)
class GameSettingsView:
    game_id: str
    attribution_lookback_us: int
    update_time_us: int | None


async def get_game_settings(ctx: ServiceContext, game_id: str) -> GameSettingsView:
    async with ctx.db.snapshot() as session:
        row = await session.get(Game, game_id)
    if row is None:
        return GameSettingsView(game_id, attribution.DEFAULT_LOOKBACK_US, None)
    return GameSettingsView(game_id, row.attribution_lookback_us, row.update_time_us)


async def update_game_settings(ctx: ServiceContext, game_id: str, attribution_lookback_us: int | None) -> GameSettingsView:
    now_us = ctx.clock()
    async with ctx.db.transaction() as session:
        row = await session.get(Game, game_id)
        if row is None:
            row = Game(game_id=game_id, attribution_lookback_us=attribution.DEFAULT_LOOKBACK_US, update_time_us=now_us)
            session.add(row)
        if attribution_lookback_us is not None:
            row.attribution_lookback_us = attribution_lookback_us
        row.update_time_us = now_us
    return GameSettingsView(game_id, row.attribution_lookback_us, row.update_time_us)
