"""Event ingestion: store events idempotently, attribute conversions and fill the outbox, in one transaction."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import attribution
from server.core.attribution import Click, Config, Conversion, Decision, Player
from server.core.erasure import subject_digests
from server.core.events import EventKind, NewEvent
from server.core.types import DeliveryState, EventType, Network, NoPostbackReason
from server.services.context import ServiceContext
from server.services.conversions import (
    CONVERSION_KINDS,
    DECISION_NO_POSTBACK,
    DECISION_POSTBACK_OWED,
    ConversionView,
    load_conversion_views,
)
from server.store.models import Delivery, Erasure, Event, Game, IdentityLink, PostbackConfig

_AWAITING_A_CLICK = (NoPostbackReason.ORGANIC.value, NoPostbackReason.CLICK_OUTSIDE_WINDOW.value)


@dataclass(frozen=True, slots=True)
class IngestReceipt:
    game_id: str
    event_id: str
    duplicate: bool
    payload_mismatch: bool
    conversion: ConversionView | None


async def ingest_events(ctx: ServiceContext, game_id: str, events: Sequence[NewEvent]) -> list[IngestReceipt]:
    """Stores the events that are new (all of them or, on error, none), decides each new conversion, re-decides
    recent unattributed conversions that a new click or identity link may explain, and adds one pending
    delivery per owed postback. Returns once all of it is committed."""
    now_us = ctx.clock()
    async with ctx.db.transaction() as session:
        if not ctx.db.is_sqlite:
            # Attribution reads a player's history and then writes on it: one writer per game at a time keeps
            # a click and a conversion committed concurrently from missing each other.
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:game))"), {"game": game_id})
        first_seen = await _existing_fingerprints(session, game_id, [e.event_id for e in events])
        new_events: list[NewEvent] = []
        for event in events:
            if event.event_id not in first_seen:
                first_seen[event.event_id] = event.fingerprint()
                new_events.append(event)
        owed = 0
        if new_events:
            owed = await _store_and_attribute(ctx, session, game_id, new_events, now_us)
        conversion_ids = [e.event_id for e in events if e.kind.conversion_type]
        views = await load_conversion_views(session, game_id, conversion_ids) if conversion_ids else {}
    if owed:
        ctx.outbox_changed()
    new_ids = {id(e) for e in new_events}
    return [
        IngestReceipt(
            game_id=game_id,
            event_id=e.event_id,
            duplicate=id(e) not in new_ids,
            payload_mismatch=id(e) not in new_ids and first_seen[e.event_id] != e.fingerprint(),
            conversion=views.get(e.event_id),
        )
        for e in events
    ]


async def _existing_fingerprints(session: AsyncSession, game_id: str, event_ids: list[str]) -> dict[str, str]:
    rows = await session.execute(
        select(Event.event_id, Event.payload_sha256).where(Event.game_id == game_id, Event.event_id.in_(event_ids))
    )
    return dict(rows.tuples().all())


@dataclass
class _History:
    """What is known of some players: identity links, paid clicks, launches and erasures, grown in memory as a
    batch is processed in order so a click early in a batch counts for a conversion later in it."""

    links: list[tuple[str, str]] = field(default_factory=list)  # (anonymous_id, user_id)
    emails_of_user: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)  # user -> (tiktok, reddit)
    clicks: list[Click] = field(default_factory=list)
    launches: set[tuple[str | None, str | None]] = field(default_factory=set)  # (user_id, anonymous_id)
    erased: set[str] = field(default_factory=set)

    def add_event(self, event: NewEvent) -> None:
        if event.kind == EventKind.AD_CLICK and event.network:
            self.clicks.append(_click(event.event_id, event.network, event.click_id, event.event_time_us,
                                      event.user_id, event.anonymous_id, event.email_sha256))
        elif event.kind == EventKind.IDENTIFY and event.user_id:
            if event.anonymous_id:
                self.links.append((event.anonymous_id, event.user_id))
            if event.email_sha256:
                self.emails_of_user.setdefault(event.user_id, set()).add((event.email_sha256, event.email_sha256_reddit))
        elif event.kind == EventKind.GAME_LAUNCH:
            self.launches.add((event.user_id, event.anonymous_id))

    def player(self, user_id: str | None, anonymous_id: str | None, email_sha256: str | None) -> tuple[Player, str | None]:
        """The player behind a conversion, and the Reddit email hash to match them by (their own, else one an
        identify supplied)."""
        player = attribution.resolve_player(user_id, anonymous_id, email_sha256, self.links)
        identified = [pair for user in sorted(player.user_ids) for pair in sorted(self.emails_of_user.get(user, ()),
                                                                                   key=str)]
        emails = player.email_hashes | {tiktok for tiktok, _ in identified}
        reddit_email = next((reddit for _, reddit in identified if reddit), None)
        return Player(player.user_ids, player.anonymous_ids, frozenset(emails)), reddit_email

    def decide(self, conversion_type: EventType, event_time_us: int, player: Player, has_reddit_email: bool,
               configs: list[Config], lookback_us: int, *, is_first_launch: bool) -> Decision:
        erased = bool(self.erased & subject_digests(player.user_ids, player.anonymous_ids, player.email_hashes))
        conversion = Conversion(conversion_type, event_time_us, is_first_launch, has_reddit_email, erased)
        clicks = [c for c in self.clicks if attribution.belongs_to(c, player)]
        return attribution.decide(conversion, clicks, configs, lookback_us)

    def has_launched(self, player: Player) -> bool:
        return any(u in player.user_ids or a in player.anonymous_ids for u, a in self.launches)


def _click(event_id: str, network: str, click_id: str | None, time_us: int, user_id: str | None,
           anonymous_id: str | None, email_sha256: str | None) -> Click:
    return Click(event_id, Network(network), click_id, time_us, user_id, anonymous_id, email_sha256)


async def _load_history(session: AsyncSession, game_id: str, user_ids: set[str], anonymous_ids: set[str],
                        emails: set[str]) -> _History:
    history = _History()
    link_rows = (await session.execute(select(IdentityLink).where(
        IdentityLink.game_id == game_id,
        or_(IdentityLink.user_id.in_(user_ids), IdentityLink.anonymous_id.in_(anonymous_ids),
            IdentityLink.email_sha256.in_(emails)),
    ))).scalars().all()
    users = user_ids | {link.user_id for link in link_rows}
    if users - user_ids:  # a user reached through an anonymous id brings that user's other devices
        link_rows = (await session.execute(select(IdentityLink).where(
            IdentityLink.game_id == game_id,
            or_(IdentityLink.user_id.in_(users), IdentityLink.anonymous_id.in_(anonymous_ids),
                IdentityLink.email_sha256.in_(emails)),
        ))).scalars().all()
    for link in link_rows:
        if link.anonymous_id:
            history.links.append((link.anonymous_id, link.user_id))
        if link.email_sha256:
            history.emails_of_user.setdefault(link.user_id, set()).add((link.email_sha256, link.email_sha256_reddit))
    anons = anonymous_ids | {a for a, _ in history.links}
    emails = emails | {e for pairs in history.emails_of_user.values() for e, _ in pairs}
    player_match = or_(Event.user_id.in_(users), Event.anonymous_id.in_(anons), Event.email_sha256.in_(emails))
    click_rows = await session.execute(
        select(Event.event_id, Event.network, Event.click_id, Event.event_time_us, Event.user_id,
               Event.anonymous_id, Event.email_sha256)
        .where(Event.game_id == game_id, Event.kind == EventKind.AD_CLICK.value, Event.network.is_not(None),
               player_match)
    )
    history.clicks = [_click(*row) for row in click_rows]
    launch_rows = await session.execute(
        select(Event.user_id, Event.anonymous_id).where(
            Event.game_id == game_id, Event.kind == EventKind.GAME_LAUNCH.value,
            or_(Event.user_id.in_(users), Event.anonymous_id.in_(anons)))
    )
    history.launches = set(launch_rows.tuples())
    digests = subject_digests(users, anons, emails)
    history.erased = set((await session.execute(
        select(Erasure.subject_sha256).where(Erasure.game_id == game_id, Erasure.subject_sha256.in_(digests))
    )).scalars())
    return history


async def _game_rules(session: AsyncSession, game_id: str) -> tuple[list[Config], dict[str, int], int]:
    """The game's postback configs (as attribution sees them, and their row ids) and its lookback window."""
    config_rows = (await session.execute(
        select(PostbackConfig).where(PostbackConfig.game_id == game_id, PostbackConfig.delete_time_us.is_(None))
    )).scalars().all()
    configs = [
        Config(c.config_id, Network(c.network), c.enabled, frozenset(EventType(t) for t in c.trigger_events.split(",")))
        for c in config_rows
    ]
    lookback = await session.scalar(select(Game.attribution_lookback_us).where(Game.game_id == game_id))
    return configs, {c.config_id: c.id for c in config_rows}, lookback or attribution.DEFAULT_LOOKBACK_US


def _decision_columns(decision: Decision, now_us: int) -> dict[str, object]:
    return {
        "decision": DECISION_POSTBACK_OWED if decision.owed_config_ids else DECISION_NO_POSTBACK,
        "no_postback_reason": decision.reason.value if decision.reason else None,
        "attributed_click_event_id": decision.click.key if decision.click else None,
        "decide_time_us": now_us,
    }


async def _store_and_attribute(ctx: ServiceContext, session: AsyncSession, game_id: str, events: list[NewEvent],
                               now_us: int) -> int:
    """Inserts the new events with their conversions' decisions; returns how many postbacks became owed."""
    configs, config_row_ids, lookback_us = await _game_rules(session, game_id)
    history = await _load_history(
        session, game_id,
        {e.user_id for e in events if e.user_id},
        {e.anonymous_id for e in events if e.anonymous_id},
        {e.email_sha256 for e in events if e.email_sha256},
    )
    rows: list[dict[str, object]] = []
    owed_by_event: list[tuple[int, tuple[str, ...]]] = []
    for event in events:
        row = _event_row(game_id, event, now_us)
        conversion_type = event.kind.conversion_type
        if conversion_type:
            player, identified_reddit_email = history.player(event.user_id, event.anonymous_id, event.email_sha256)
            reddit_email = event.email_sha256_reddit or identified_reddit_email
            decision = history.decide(conversion_type, event.event_time_us, player, bool(reddit_email), configs,
                                      lookback_us, is_first_launch=not history.has_launched(player))
            row.update(_decision_columns(decision, now_us))
            # Keep the match key the decision relied on, so the postback can carry it.
            row["email_sha256_reddit"] = reddit_email
            if decision.owed_config_ids:
                owed_by_event.append((len(rows), decision.owed_config_ids))
        history.add_event(event)
        rows.append(row)

    row_ids = (await session.execute(insert(Event).returning(Event.id, sort_by_parameter_order=True), rows)).scalars().all()
    link_rows = [
        {"game_id": game_id, "user_id": e.user_id, "anonymous_id": e.anonymous_id, "email_sha256": e.email_sha256,
         "email_sha256_reddit": e.email_sha256_reddit, "link_time_us": now_us}
        for e in events if e.kind == EventKind.IDENTIFY and e.user_id and (e.anonymous_id or e.email_sha256)
    ]
    if link_rows:
        await session.execute(insert(IdentityLink), link_rows)
    deliveries = [
        _delivery_row(game_id, row_ids[index], config_row_ids[config_id], now_us)
        for index, config_ids in owed_by_event for config_id in config_ids
    ]
    has_late_data = any((e.kind == EventKind.AD_CLICK and e.network) or e.kind == EventKind.IDENTIFY for e in events)
    if has_late_data:
        deliveries += await _reevaluate_recent(ctx, session, game_id, events, configs, config_row_ids, lookback_us, now_us)
    if deliveries:
        await session.execute(insert(Delivery), deliveries)
    return len(deliveries)


async def _reevaluate_recent(ctx: ServiceContext, session: AsyncSession, game_id: str, events: list[NewEvent],
                             configs: list[Config], config_row_ids: dict[str, int], lookback_us: int,
                             now_us: int) -> list[dict[str, object]]:
    """Re-decides the recent conversions that found no click, for the players a new click or identity touches.
    Returns the deliveries they now owe."""
    touched = await _load_history(
        session, game_id,
        {e.user_id for e in events if e.user_id},
        {e.anonymous_id for e in events if e.anonymous_id},
        {e.email_sha256 for e in events if e.email_sha256},
    )
    users = {u for _, u in touched.links} | {e.user_id for e in events if e.user_id}
    anons = {a for a, _ in touched.links} | {e.anonymous_id for e in events if e.anonymous_id}
    emails = {e.email_sha256 for e in events if e.email_sha256}
    grace_us = int(ctx.settings.attribution_grace_s * 1_000_000)
    candidates = (await session.execute(select(Event).where(
        Event.game_id == game_id,
        Event.kind.in_(CONVERSION_KINDS),
        Event.no_postback_reason.in_(_AWAITING_A_CLICK),
        Event.receive_time_us >= now_us - grace_us,
        or_(Event.user_id.in_(users), Event.anonymous_id.in_(anons), Event.email_sha256.in_(emails)),
    ).order_by(Event.id))).scalars().all()
    if not candidates:
        return []
    history = await _load_history(
        session, game_id,
        {c.user_id for c in candidates if c.user_id},
        {c.anonymous_id for c in candidates if c.anonymous_id},
        {c.email_sha256 for c in candidates if c.email_sha256},
    )
    deliveries: list[dict[str, object]] = []
    for conversion in candidates:
        if not attribution.can_reevaluate(NoPostbackReason(conversion.no_postback_reason), conversion.receive_time_us,
                                          now_us, grace_us):
            continue
        player, identified_reddit_email = history.player(conversion.user_id, conversion.anonymous_id,
                                                         conversion.email_sha256)
        reddit_email = conversion.email_sha256_reddit or identified_reddit_email
        # A candidate awaits a click, so it was not a repeat launch: being first is settled at arrival.
        decision = history.decide(EventKind(conversion.kind).conversion_type, conversion.event_time_us,  # type: ignore[arg-type]
                                  player, bool(reddit_email), configs, lookback_us, is_first_launch=True)
        if decision.reason and decision.reason.value == conversion.no_postback_reason:
            continue
        await session.execute(
            update(Event).where(Event.id == conversion.id)
            .values(**_decision_columns(decision, now_us), email_sha256_reddit=reddit_email)
        )
        deliveries += [_delivery_row(game_id, conversion.id, config_row_ids[c], now_us) for c in decision.owed_config_ids]
    return deliveries


def _event_row(game_id: str, event: NewEvent, now_us: int) -> dict[str, object]:
    return {
        "game_id": game_id,
        "event_id": event.event_id,
        "kind": event.kind.value,
        "event_time_us": event.event_time_us,
        "receive_time_us": now_us,
        "payload_sha256": event.fingerprint(),
        "user_id": event.user_id,
        "anonymous_id": event.anonymous_id,
        "email_sha256": event.email_sha256,
        "email_sha256_reddit": event.email_sha256_reddit,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "network": event.network.value if event.network else None,
        "click_id": event.click_id,
        "landing_url": event.landing_url,
        "value_micros": event.value_micros,
        "currency": event.currency,
        "order_id": event.order_id,
        "item_ids": json.dumps(list(event.item_ids)) if event.item_ids else None,
        "decision": None,
        "no_postback_reason": None,
        "attributed_click_event_id": None,
        "decide_time_us": None,
    }


def _delivery_row(game_id: str, event_row_id: int, config_row_id: int, now_us: int) -> dict[str, object]:
    return {
        "game_id": game_id,
        "event_row_id": event_row_id,
        "config_row_id": config_row_id,
        "state": DeliveryState.PENDING.value,
        "attempt_count": 0,
        "next_attempt_time_us": now_us,
        "create_time_us": now_us,
    }

