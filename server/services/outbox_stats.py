"""Outbox statistics for the metrics endpoint: how many postbacks are pending and since when."""

from sqlalchemy import func, select

from server.services.context import ServiceContext
from server.store.models import PENDING, Delivery


async def refresh_outbox_gauges(ctx: ServiceContext) -> None:
    """Sets the outbox depth and the age of the oldest pending postback (one indexed query)."""
    async with ctx.db.snapshot() as session:
        pending, oldest_us = (await session.execute(
            select(func.count(), func.min(Delivery.create_time_us)).where(Delivery.state == PENDING)
        )).one()
    age_s = max(0.0, (ctx.clock() - oldest_us) / 1_000_000) if oldest_us is not None else 0.0
    ctx.metrics.set_outbox(pending, age_s)
