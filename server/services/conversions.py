"""Reading conversions back: the decision, the matched click and the owed postbacks with their delivery state."""

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.events import EventKind
from server.core.types import DeliveryState, EventType, Network, NoPostbackReason
from server.errors import NotFound
from server.services.context import ServiceContext
from server.store.models import Delivery, Event, PostbackConfig

CONVERSION_KINDS = (EventKind.GAME_LAUNCH.value, EventKind.PURCHASE.value)


@dataclass(frozen=True, slots=True)
class ClickView:
    event_id: str
    network: Network
    click_id: str | None
    click_time_us: int


@dataclass(frozen=True, slots=True)
class PostbackView:
    config_id: str
    network: Network
    state: DeliveryState
    attempt_count: int
    last_attempt_time_us: int | None
    next_attempt_time_us: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ConversionView:
    game_id: str
    event_id: str
    event_type: EventType
    event_time_us: int
    receive_time_us: int
    user_id: str | None
    anonymous_id: str | None
    value_micros: int | None
    currency: str | None
    postback_owed: bool
    no_postback_reason: NoPostbackReason | None
    click: ClickView | None
    postbacks: tuple[PostbackView, ...]
    decide_time_us: int | None


async def get_conversion(ctx: ServiceContext, game_id: str, event_id: str) -> ConversionView:
    async with ctx.db.snapshot() as session:
        views = await load_conversion_views(session, game_id, [event_id])
    if event_id not in views:
        raise NotFound(f"conversion games/{game_id}/conversions/{event_id} not found: no game launch or purchase "
                       "with this event id was ingested for this game", reason="CONVERSION_NOT_FOUND")
    return views[event_id]


async def load_conversion_views(session: AsyncSession, game_id: str, event_ids: Iterable[str]) -> dict[str, ConversionView]:
    rows = (await session.execute(
        select(Event).where(Event.game_id == game_id, Event.event_id.in_(list(event_ids)),
                            Event.kind.in_(CONVERSION_KINDS))
    )).scalars().all()
    if not rows:
        return {}
    click_ids = {r.attributed_click_event_id for r in rows if r.attributed_click_event_id}
    clicks = {
        c.event_id: ClickView(c.event_id, Network(c.network), c.click_id, c.event_time_us)
        for c in (await session.execute(
            select(Event).where(Event.game_id == game_id, Event.event_id.in_(click_ids))
        )).scalars()
    } if click_ids else {}
    postbacks: dict[int, list[PostbackView]] = {}
    delivery_rows = await session.execute(
        select(Delivery, PostbackConfig.config_id, PostbackConfig.network)
        .join(PostbackConfig, PostbackConfig.id == Delivery.config_row_id)
        .where(Delivery.event_row_id.in_([r.id for r in rows]))
        .order_by(PostbackConfig.config_id)
    )
    for delivery, config_id, network in delivery_rows:
        state = DeliveryState(delivery.state)
        postbacks.setdefault(delivery.event_row_id, []).append(PostbackView(
            config_id=config_id,
            network=Network(network),
            state=state,
            attempt_count=delivery.attempt_count,
            last_attempt_time_us=delivery.last_attempt_time_us,
            next_attempt_time_us=delivery.next_attempt_time_us if state == DeliveryState.PENDING else None,
            last_error=delivery.last_error,
        ))
    return {r.event_id: _view(r, clicks.get(r.attributed_click_event_id or ""), postbacks.get(r.id, [])) for r in rows}


def _view(row: Event, click: ClickView | None, postbacks: list[PostbackView]) -> ConversionView:
    return ConversionView(
        game_id=row.game_id,
        event_id=row.event_id,
        event_type=EventKind(row.kind).conversion_type,  # type: ignore[arg-type]
        event_time_us=row.event_time_us,
        receive_time_us=row.receive_time_us,
        user_id=row.user_id,
        anonymous_id=row.anonymous_id,
        value_micros=row.value_micros,
        currency=row.currency,
        postback_owed=row.decision == DECISION_POSTBACK_OWED,
        no_postback_reason=NoPostbackReason(row.no_postback_reason) if row.no_postback_reason else None,
        click=click,
        postbacks=tuple(postbacks),
        decide_time_us=row.decide_time_us,
    )


DECISION_POSTBACK_OWED = "postback_owed"
DECISION_NO_POSTBACK = "no_postback"
