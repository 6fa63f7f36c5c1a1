"""Outbox statistics for the metrics endpoint: how many postbacks are pending and since when, and what open circuits
hold."""

from sqlalchemy import func, select

from server.services import circuits
from server.services.context import ServiceContext
from server.store.models import PENDING, Delivery, PostbackConfig


async def refresh_outbox_gauges(ctx: ServiceContext) -> None:
    """Sets the outbox depth and the age of the oldest pending postback (one indexed query), and each open circuit
    with what it holds (a read of the configs, and a count of the open ones' pending postbacks)."""
    async with ctx.db.snapshot() as session:
        pending, oldest_us = (await session.execute(
            select(func.count(), func.min(Delivery.create_time_us)).where(Delivery.state == PENDING)
        )).one()
        open_configs = (await session.execute(
            select(PostbackConfig.id, PostbackConfig.game_id, PostbackConfig.config_id, *circuits.CIRCUIT_COLUMNS)
            .where(PostbackConfig.circuit_cause.is_not(None), PostbackConfig.delete_time_us.is_(None))
        )).all()
        held = await session.run_sync(circuits.held_postbacks, [c.id for c in open_configs])
    now_us = ctx.clock()
    age_s = max(0.0, (now_us - oldest_us) / 1_000_000) if oldest_us is not None else 0.0
    ctx.metrics.set_outbox(pending, age_s)
    ctx.metrics.set_circuits(
        (f"games/{c.game_id}/postbackConfigs/{c.config_id}", c.circuit_cause,
         circuits.circuit_of(c).state(now_us).value, held.get(c.id, circuits.Held(0, None)).count)
        for c in open_configs)
