"""Replay: re-queues a config's failed postbacks that are still inside their network's window, with their dedup ids."""

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, not_, select, update
from sqlalchemy.orm import Session

from server.core.retry import window_closed_before_us
from server.core.types import DeliveryState, FailureReason, Network
from server.errors import FailedPrecondition, NotFound
from server.services.context import ServiceContext
from server.services.deliveries import retry_policy
from server.store.models import Delivery, Event, PostbackConfig


@dataclass(frozen=True, slots=True)
class ReplayReport:
    requeued: int
    window_closed: int  # matched, but past the network's window: left failed


async def retry_failed_postbacks(ctx: ServiceContext, game_id: str, config_id: str, start_us: int | None,
                                 end_us: int | None, reasons: Collection[FailureReason]) -> ReplayReport:
    """Queues again the config's failed postbacks owed in [start, end) that failed for one of `reasons` (any, when
    empty), where the network's window is still open by the rule the retries keep. Those are due at once, sent with
    their dedup ids and rendered anew from their conversions (a settled postback keeps no rendering). Postbacks
    pending or delivered are never touched, so a replay repeated queues nothing more."""
    now_us = ctx.clock()
    policy = retry_policy(ctx.settings)

    def replay(session: Session) -> ReplayReport:
        config = session.execute(select(PostbackConfig.id, PostbackConfig.network, PostbackConfig.enabled).where(
            PostbackConfig.game_id == game_id, PostbackConfig.config_id == config_id,
            PostbackConfig.delete_time_us.is_(None))).one_or_none()
        if config is None:
            raise NotFound(f"postback config games/{game_id}/postbackConfigs/{config_id} not found",
                           reason="POSTBACK_CONFIG_NOT_FOUND")
        if not config.enabled:
            raise FailedPrecondition(f"postback config games/{game_id}/postbackConfigs/{config_id} is disabled: "
                                     "enable it first, or its replayed postbacks would be cancelled",
                                     reason="POSTBACK_CONFIG_DISABLED")
        matching = [Delivery.config_row_id == config.id, Delivery.state == DeliveryState.FAILED.value]
        if start_us is not None:
            matching.append(Delivery.create_time_us >= start_us)
        if end_us is not None:
            matching.append(Delivery.create_time_us < end_us)
        if reasons:
            matching.append(Delivery.failure_reason.in_([r.value for r in reasons]))
        network = Network(config.network)
        closed_before = window_closed_before_us(policy, network, now_us)
        window_closed = (Delivery.first_attempt_time_us < closed_before if network is Network.TIKTOK else
                         exists().where(Event.id == Delivery.event_row_id, Event.event_time_us < closed_before))
        requeued = session.execute(
            update(Delivery).where(*matching, not_(window_closed))
            .values(state=DeliveryState.PENDING.value, next_attempt_time_us=now_us, failure_reason=None, lease_owner=None,
                    lease_expire_time_us=None)
            .execution_options(synchronize_session=False)).rowcount or 0
        closed = session.scalar(select(func.count()).select_from(Delivery).where(and_(*matching, window_closed)))
        return ReplayReport(requeued, closed or 0)

    report = await ctx.db.write(replay)
    if report.requeued:
        ctx.outbox_changed()
    return report
