"""Reading conversions back: the decision, the matched click and the owed postbacks with their delivery state."""

from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.core.circuit import CircuitCause, describe_hold
from server.core.events import EventKind
from server.core.types import DeliveryState, EventType, FailureReason, Network, NoPostbackReason
from server.errors import NotFound
from server.services.context import ServiceContext
from server.store.models import Delivery, Event, PostbackConfig
from server.store.queries import in_values

CONVERSION_KINDS = (EventKind.GAME_LAUNCH.value, EventKind.PURCHASE.value)


# Named tuples, not frozen dataclasses: as immutable and several times cheaper to build; ingest builds one view per
# conversion it decides.

class ClickView(NamedTuple):
    event_id: str
    network: Network
    click_id: str | None
    click_time_us: int


class PostbackView(NamedTuple):
    config_id: str
    network: Network
    state: DeliveryState
    attempt_count: int
    last_attempt_time_us: int | None
    next_attempt_time_us: int | None
    last_error: str | None
    failure_reason: FailureReason | None = None
    # Set for a pending postback its config's open circuit holds: why (and then state is shown as held).
    hold_reason: str | None = None


class ConversionView(NamedTuple):
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
        views = await session.run_sync(conversion_views, game_id, [event_id])
    if event_id not in views:
        raise NotFound(f"conversion games/{game_id}/conversions/{event_id} not found: no game launch or purchase "
                       "with this event id was ingested for this game", reason="CONVERSION_NOT_FOUND")
    return views[event_id]


def conversion_views(session: Session, game_id: str, event_ids: Iterable[str]) -> dict[str, ConversionView]:
    # Plain rows, not ORM objects: nothing here is changed, and identity tracking costs per object.
    rows = session.execute(
        select(Event.id, Event.event_id, Event.kind, Event.event_time_us, Event.receive_time_us, Event.user_id,
               Event.anonymous_id, Event.value_micros, Event.currency, Event.decision, Event.no_postback_reason,
               Event.attributed_click_event_id, Event.decide_time_us)
        .where(Event.game_id == game_id, in_values(Event.event_id, list(event_ids)), Event.kind.in_(CONVERSION_KINDS))
    ).all()
    if not rows:
        return {}
    click_ids = {r.attributed_click_event_id for r in rows if r.attributed_click_event_id}
    clicks = {
        event_id: ClickView(event_id, Network(network), click_id, time_us)
        for event_id, network, click_id, time_us in session.execute(
            select(Event.event_id, Event.network, Event.click_id, Event.event_time_us)
            .where(Event.game_id == game_id, in_values(Event.event_id, click_ids))
        )
    } if click_ids else {}
    postbacks: dict[int, list[PostbackView]] = {}
    delivery_rows = session.execute(
        select(Delivery.event_row_id, Delivery.state, Delivery.attempt_count, Delivery.last_attempt_time_us,
               Delivery.next_attempt_time_us, Delivery.last_error, Delivery.failure_reason, PostbackConfig.config_id,
               PostbackConfig.network, PostbackConfig.circuit_cause)
        .join(PostbackConfig, PostbackConfig.id == Delivery.config_row_id)
        .where(in_values(Delivery.event_row_id, [r.id for r in rows]))
        .order_by(PostbackConfig.config_id)
    )
    for delivery in delivery_rows:
        state = DeliveryState(delivery.state)
        held = state == DeliveryState.PENDING and delivery.circuit_cause is not None
        postbacks.setdefault(delivery.event_row_id, []).append(PostbackView(
            config_id=delivery.config_id,
            network=Network(delivery.network),
            state=state,
            attempt_count=delivery.attempt_count,
            last_attempt_time_us=delivery.last_attempt_time_us,
            # A held postback's next attempt is its config's: see the circuit's next probe.
            next_attempt_time_us=delivery.next_attempt_time_us if state == DeliveryState.PENDING and not held
            else None,
            last_error=delivery.last_error,
            failure_reason=FailureReason(delivery.failure_reason) if delivery.failure_reason else None,
            hold_reason=describe_hold(CircuitCause(delivery.circuit_cause)) if held else None,
        ))
    return {r.event_id: _view(game_id, r, clicks.get(r.attributed_click_event_id or ""), postbacks.get(r.id, []))
            for r in rows}


def _view(game_id: str, row, click: ClickView | None, postbacks: list[PostbackView]) -> ConversionView:  # type: ignore[no-untyped-def]
    return ConversionView(
        game_id=game_id,
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
