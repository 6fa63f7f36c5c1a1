"""Event ingestion: store events idempotently, attribute conversions and fill the outbox, in one transaction."""

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, text
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
    ClickView,
    ConversionView,
    PostbackView,
    load_conversion_views,
)
from server.store.models import Delivery, Erasure, Event, Game, IdentityLink, PostbackConfig
from server.store.queries import game_rows_matching

_AWAITING_LATE_DATA = tuple(reason.value for reason in attribution.AWAITING_LATE_DATA)


@dataclass(frozen=True, slots=True)
class IngestReceipt:
    game_id: str
    event_id: str
    duplicate: bool
    payload_mismatch: bool
    conversion: ConversionView | None


async def ingest_events(ctx: ServiceContext, game_id: str, events: Sequence[NewEvent]) -> list[IngestReceipt]:
    """One caller's events in one transaction: all of them are stored, or on error none."""
    (receipts,) = await ingest_groups(ctx, [(game_id, events)])
    return receipts


async def ingest_groups(ctx: ServiceContext, groups: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[IngestReceipt]]:
    """Several callers' events in one transaction (group commit): stores the events that are new, decides each new
    conversion, re-decides recent conversions still awaiting late data that a new click or identity may explain,
    and adds one pending delivery per owed postback. Returns each caller's receipts once all of it is committed."""
    now_us = ctx.clock()
    # A game's events from all callers form one sequence in arrival order, so an event id sent by two callers at
    # once is stored for the first and reported as a duplicate to the second.
    per_game: dict[str, list[NewEvent]] = {}
    for game_id, events in groups:
        per_game.setdefault(game_id, []).extend(events)
    results: dict[str, _GameResult] = {}
    async with ctx.db.transaction() as session:
        if not ctx.db.is_sqlite:
            # Attribution reads a player's history and then writes on it: one writer per game at a time keeps a
            # click and a conversion committed concurrently from missing each other. Sorted: no lock cycles.
            for game_id in sorted(per_game):
                await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:game))"), {"game": game_id})
        for game_id, events in per_game.items():
            results[game_id] = await _ingest_game(ctx, session, game_id, events, now_us)
    if any(result.owed for result in results.values()):
        ctx.outbox_changed()
    for result in results.values():
        ctx.metrics.record_ingest(result.new_events, result.views)
    next_receipt = {game_id: iter(result.receipts) for game_id, result in results.items()}
    return [[next(next_receipt[game_id]) for _ in events] for game_id, events in groups]


@dataclass
class _GameResult:
    receipts: list[IngestReceipt]
    new_events: list[NewEvent]
    views: dict[str, ConversionView]
    owed: int


async def _ingest_game(ctx: ServiceContext, session: AsyncSession, game_id: str, events: list[NewEvent],
                       now_us: int) -> _GameResult:
    fingerprints = [e.fingerprint() for e in events]
    first_seen = await _existing_fingerprints(session, game_id, [e.event_id for e in events])
    new_indexes = []
    for index, event in enumerate(events):
        if event.event_id not in first_seen:
            first_seen[event.event_id] = fingerprints[index]
            new_indexes.append(index)
    stored = _Stored()
    if new_indexes:
        stored = await _store_and_attribute(ctx, session, game_id, [events[i] for i in new_indexes],
                                            [fingerprints[i] for i in new_indexes], now_us)
    # Duplicates (and conversions re-decided within this call) are read back as they now stand.
    unknown = [e.event_id for e in events if e.kind.conversion_type and e.event_id not in stored.views]
    views = {**stored.views, **(await load_conversion_views(session, game_id, unknown) if unknown else {})}
    new = set(new_indexes)
    receipts = [
        IngestReceipt(
            game_id=game_id,
            event_id=e.event_id,
            duplicate=i not in new,
            payload_mismatch=i not in new and first_seen[e.event_id] != fingerprints[i],
            conversion=views.get(e.event_id),
        )
        for i, e in enumerate(events)
    ]
    return _GameResult(receipts, [events[i] for i in new_indexes], views, stored.owed)


class GroupCommitter:
    """Merges concurrent single-event ingests into shared transactions. While one transaction runs, new requests
    queue; the next transaction takes them all. Light load pays no wait, heavy load shares one commit (fsync)
    and one set of attribution queries among many requests."""

    def __init__(self, ctx: ServiceContext, max_events: int = 1000):
        self._ctx = ctx
        self._max_events = max_events
        self._queue: list[tuple[str, Sequence[NewEvent], asyncio.Future[list[IngestReceipt]]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def ingest(self, game_id: str, events: Sequence[NewEvent]) -> list[IngestReceipt]:
        future: asyncio.Future[list[IngestReceipt]] = asyncio.get_running_loop().create_future()
        self._queue.append((game_id, events, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                take, size = 0, 0
                while take < len(self._queue) and (take == 0 or size + len(self._queue[take][1]) <= self._max_events):
                    size += len(self._queue[take][1])
                    take += 1
                batch, self._queue = self._queue[:take], self._queue[take:]
                try:
                    results = await ingest_groups(self._ctx, [(game_id, events) for game_id, events, _ in batch])
                except Exception:
                    # One request's failure must not fail the others: each goes again in its own transaction.
                    for game_id, events, future in batch:
                        await self._settle_alone(game_id, events, future)
                    continue
                for (_, _, future), receipts in zip(batch, results, strict=True):
                    if not future.done():  # a caller that went away still had its events stored
                        future.set_result(receipts)
        finally:
            self._draining = None

    async def _settle_alone(self, game_id: str, events: Sequence[NewEvent],
                            future: asyncio.Future[list[IngestReceipt]]) -> None:
        try:
            receipts = await ingest_events(self._ctx, game_id, events)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(receipts)


async def _existing_fingerprints(session: AsyncSession, game_id: str, event_ids: list[str]) -> dict[str, str]:
    rows = await session.execute(
        select(Event.event_id, Event.payload_sha256).where(Event.game_id == game_id, Event.event_id.in_(event_ids))
    )
    return {event_id: digest for event_id, digest in rows}


@dataclass
class _Stored:
    views: dict[str, ConversionView] = field(default_factory=dict)
    owed: int = 0


@dataclass
class _History:
    """What is known of some players: identity links, paid clicks, launches and erasures, indexed by identity and
    grown in memory as a batch is processed in order, so a click early in a batch counts for a conversion later."""

    users_of_anonymous: dict[str, set[str]] = field(default_factory=dict)
    anonymous_of_user: dict[str, set[str]] = field(default_factory=dict)
    emails_of_user: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)  # user -> (tiktok, reddit)
    clicks_by_identity: dict[str, list[Click]] = field(default_factory=dict)  # "u:"/"a:"/"e:" + identity
    launched: set[str] = field(default_factory=set)  # "u:"/"a:" + identity
    erased: set[str] = field(default_factory=set)

    def add_link(self, anonymous_id: str, user_id: str) -> None:
        self.users_of_anonymous.setdefault(anonymous_id, set()).add(user_id)
        self.anonymous_of_user.setdefault(user_id, set()).add(anonymous_id)

    def add_click(self, click: Click) -> None:
        for key in _identity_keys(click.user_id, click.anonymous_id, click.email_hash):
            self.clicks_by_identity.setdefault(key, []).append(click)

    def add_event(self, event: NewEvent) -> None:
        if event.kind == EventKind.AD_CLICK and event.network:
            self.add_click(Click(event.event_id, event.network, event.click_id, event.event_time_us, event.user_id,
                                 event.anonymous_id, event.email_sha256))
        elif event.kind == EventKind.IDENTIFY and event.user_id:
            if event.anonymous_id:
                self.add_link(event.anonymous_id, event.user_id)
            if event.email_sha256:
                self.emails_of_user.setdefault(event.user_id, set()).add((event.email_sha256, event.email_sha256_reddit))
        elif event.kind == EventKind.GAME_LAUNCH:
            self.launched.update(_identity_keys(event.user_id, event.anonymous_id, None))

    def player(self, user_id: str | None, anonymous_id: str | None, email_sha256: str | None,
               email_sha256_reddit: str | None) -> tuple[Player, tuple[str | None, str | None]]:
        """The player behind a conversion, and the (TikTok, Reddit) email hashes to send for them: the
        conversion's own, else those an identify of the player supplied."""
        users = {user_id} if user_id else self.users_of_anonymous.get(anonymous_id or "", set())
        links = [(anon, user) for user in users for anon in self.anonymous_of_user.get(user, ())]
        if anonymous_id:
            links += [(anonymous_id, user) for user in self.users_of_anonymous.get(anonymous_id, ())]
        player = attribution.resolve_player(user_id, anonymous_id, email_sha256, links)
        identified = sorted((pair for user in player.user_ids for pair in self.emails_of_user.get(user, ())),
                            key=lambda pair: (pair[0], pair[1] or ""))
        emails = player.email_hashes | {tiktok for tiktok, _ in identified}
        match_emails = (email_sha256, email_sha256_reddit) if email_sha256 else (identified[0] if identified else
                                                                                 (None, None))
        return Player(player.user_ids, player.anonymous_ids, frozenset(emails)), match_emails

    def decide(self, conversion_type: EventType, event_time_us: int, player: Player, has_reddit_email: bool,
               configs: list[Config], lookback_us: int, *, is_first_launch: bool) -> Decision:
        erased = bool(self.erased & subject_digests(player.user_ids, player.anonymous_ids, player.email_hashes))
        conversion = Conversion(conversion_type, event_time_us, is_first_launch, has_reddit_email, erased)
        keys = _player_keys(player)
        clicks = {c.key: c for key in keys for c in self.clicks_by_identity.get(key, ())}
        return attribution.decide(conversion, clicks.values(), configs, lookback_us)

    def has_launched(self, player: Player) -> bool:
        return not self.launched.isdisjoint(_player_keys(player))


def _identity_keys(user_id: str | None, anonymous_id: str | None, email_hash: str | None) -> list[str]:
    return [k for k in (user_id and "u:" + user_id, anonymous_id and "a:" + anonymous_id,
                        email_hash and "e:" + email_hash) if k]


def _player_keys(player: Player) -> set[str]:
    return ({"u:" + u for u in player.user_ids} | {"a:" + a for a in player.anonymous_ids}
            | {"e:" + e for e in player.email_hashes})


async def _load_history(session: AsyncSession, game_id: str, user_ids: set[str], anonymous_ids: set[str],
                        emails: set[str]) -> _History:
    history = _History()

    def links_of(users: set[str]):  # type: ignore[no-untyped-def]
        return select(IdentityLink).where(game_rows_matching(
            IdentityLink.game_id, game_id, (IdentityLink.user_id, users),
            (IdentityLink.anonymous_id, anonymous_ids), (IdentityLink.email_sha256, emails)))

    link_rows = (await session.execute(links_of(user_ids))).scalars().all()
    users = user_ids | {link.user_id for link in link_rows}
    if users - user_ids:  # a user reached through an anonymous id brings that user's other devices
        link_rows = (await session.execute(links_of(users))).scalars().all()
    for link in link_rows:
        if link.anonymous_id:
            history.add_link(link.anonymous_id, link.user_id)
        if link.email_sha256:
            history.emails_of_user.setdefault(link.user_id, set()).add((link.email_sha256, link.email_sha256_reddit))
    anons = anonymous_ids | set(history.users_of_anonymous)
    emails = emails | {e for pairs in history.emails_of_user.values() for e, _ in pairs}
    click_rows = await session.execute(
        select(Event.event_id, Event.network, Event.click_id, Event.event_time_us, Event.user_id,
               Event.anonymous_id, Event.email_sha256)
        .where(game_rows_matching(Event.game_id, game_id, (Event.user_id, users), (Event.anonymous_id, anons),
                                  (Event.email_sha256, emails)),
               Event.kind == EventKind.AD_CLICK.value, Event.network.is_not(None))
    )
    for event_id, network, click_id, time_us, user_id, anonymous_id, email in click_rows:
        history.add_click(Click(event_id, Network(network), click_id, time_us, user_id, anonymous_id, email))
    launch_rows = await session.execute(
        select(Event.user_id, Event.anonymous_id)
        .where(game_rows_matching(Event.game_id, game_id, (Event.user_id, users), (Event.anonymous_id, anons)),
               Event.kind == EventKind.GAME_LAUNCH.value)
    )
    for user_id, anonymous_id in launch_rows:
        history.launched.update(_identity_keys(user_id, anonymous_id, None))
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


def _new_view(game_id: str, event: NewEvent, decision: Decision, configs: dict[str, Config], now_us: int) -> ConversionView:
    click = decision.click
    return ConversionView(
        game_id=game_id,
        event_id=event.event_id,
        event_type=event.kind.conversion_type,  # type: ignore[arg-type]
        event_time_us=event.event_time_us,
        receive_time_us=now_us,
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        value_micros=event.value_micros,
        currency=event.currency,
        postback_owed=bool(decision.owed_config_ids),
        no_postback_reason=decision.reason,
        click=ClickView(click.key, click.network, click.click_id, click.click_time_us) if click else None,
        postbacks=tuple(PostbackView(c, configs[c].network, DeliveryState.PENDING, 0, None, now_us, None)
                        for c in decision.owed_config_ids),
        decide_time_us=now_us,
    )


async def _store_and_attribute(ctx: ServiceContext, session: AsyncSession, game_id: str, events: list[NewEvent],
                               fingerprints: list[str], now_us: int) -> _Stored:
    """Inserts the new events with their conversions' decisions and the deliveries they owe."""
    configs, config_row_ids, lookback_us = await _game_rules(session, game_id)
    configs_by_id = {c.config_id: c for c in configs}
    history = await _load_history(
        session, game_id,
        {e.user_id for e in events if e.user_id},
        {e.anonymous_id for e in events if e.anonymous_id},
        {e.email_sha256 for e in events if e.email_sha256},
    )
    rows: list[dict[str, object]] = []
    stored = _Stored()
    owed: dict[str, tuple[str, ...]] = {}
    for event, fingerprint in zip(events, fingerprints, strict=True):
        row = _event_row(game_id, event, fingerprint, now_us)
        conversion_type = event.kind.conversion_type
        if conversion_type:
            player, (tiktok_email, reddit_email) = history.player(event.user_id, event.anonymous_id,
                                                                 event.email_sha256, event.email_sha256_reddit)
            decision = history.decide(conversion_type, event.event_time_us, player, bool(reddit_email), configs,
                                      lookback_us, is_first_launch=not history.has_launched(player))
            row.update(_decision_columns(decision, now_us))
            # Keep the match keys the decision relied on, so the postbacks can carry them.
            row.update(email_sha256=tiktok_email, email_sha256_reddit=reddit_email)
            stored.views[event.event_id] = _new_view(game_id, event, decision, configs_by_id, now_us)
            if decision.owed_config_ids:
                owed[event.event_id] = decision.owed_config_ids
        history.add_event(event)
        rows.append(row)

    # A plain multi-row insert: asking for generated ids back costs SQLite one statement per row.
    await session.execute(Event.__table__.insert(), rows)
    link_rows = [
        {"game_id": game_id, "user_id": e.user_id, "anonymous_id": e.anonymous_id, "email_sha256": e.email_sha256,
         "email_sha256_reddit": e.email_sha256_reddit, "link_time_us": now_us}
        for e in events if e.kind == EventKind.IDENTIFY and e.user_id and (e.anonymous_id or e.email_sha256)
    ]
    if link_rows:
        await session.execute(IdentityLink.__table__.insert(), link_rows)
    deliveries: list[dict[str, object]] = []
    if owed:
        row_ids = await session.execute(
            select(Event.event_id, Event.id).where(Event.game_id == game_id, Event.event_id.in_(list(owed))))
        deliveries = [_delivery_row(game_id, row_id, config_row_ids[config_id], now_us)
                      for event_id, row_id in row_ids for config_id in owed[event_id]]
    if any((e.kind == EventKind.AD_CLICK and e.network) or e.kind == EventKind.IDENTIFY for e in events):
        redecided, more = await _reevaluate_recent(ctx, session, game_id, events, history, configs, config_row_ids,
                                                   lookback_us, now_us)
        deliveries += more
        for event_id in redecided:
            stored.views.pop(event_id, None)
    if deliveries:
        await session.execute(Delivery.__table__.insert(), deliveries)
    stored.owed = len(deliveries)
    return stored


async def _reevaluate_recent(ctx: ServiceContext, session: AsyncSession, game_id: str, events: list[NewEvent],
                             batch_history: _History, configs: list[Config], config_row_ids: dict[str, int],
                             lookback_us: int, now_us: int) -> tuple[list[str], list[dict[str, object]]]:
    """Re-decides the recent conversions still awaiting late data, for the players a new click or identity touches.
    Returns the ids of the conversions whose decision changed and the deliveries they now owe."""
    users = set(batch_history.anonymous_of_user) | {e.user_id for e in events if e.user_id}
    anons = set(batch_history.users_of_anonymous) | {e.anonymous_id for e in events if e.anonymous_id}
    emails = {e.email_sha256 for e in events if e.email_sha256}
    grace_us = int(ctx.settings.attribution_grace_s * 1_000_000)
    # Plain rows, not ORM objects: nothing here needs identity tracking, and it costs per object.
    candidates = (await session.execute(select(
        Event.id, Event.event_id, Event.kind, Event.event_time_us, Event.receive_time_us, Event.user_id,
        Event.anonymous_id, Event.email_sha256, Event.email_sha256_reddit, Event.no_postback_reason,
    ).where(
        game_rows_matching(Event.game_id, game_id, (Event.user_id, users), (Event.anonymous_id, anons),
                           (Event.email_sha256, emails)),
        Event.kind.in_(CONVERSION_KINDS),
        Event.no_postback_reason.in_(_AWAITING_LATE_DATA),
        Event.receive_time_us >= now_us - grace_us,
    ).order_by(Event.id))).all()
    if not candidates:
        return [], []
    history = await _load_history(
        session, game_id,
        {c.user_id for c in candidates if c.user_id},
        {c.anonymous_id for c in candidates if c.anonymous_id},
        {c.email_sha256 for c in candidates if c.email_sha256},
    )
    redecided: list[str] = []
    changes: list[dict[str, object]] = []
    deliveries: list[dict[str, object]] = []
    for conversion in candidates:
        if not attribution.can_reevaluate(NoPostbackReason(conversion.no_postback_reason), conversion.receive_time_us,
                                          now_us, grace_us):
            continue
        player, (tiktok_email, reddit_email) = history.player(conversion.user_id, conversion.anonymous_id,
                                                             conversion.email_sha256, conversion.email_sha256_reddit)
        # A candidate awaits late data, so it was not a repeat launch: being first is settled at arrival.
        decision = history.decide(EventKind(conversion.kind).conversion_type,  # type: ignore[arg-type]
                                  conversion.event_time_us, player, bool(reddit_email), configs, lookback_us,
                                  is_first_launch=True)
        if decision.reason and decision.reason.value == conversion.no_postback_reason:
            continue
        changes.append({"row_id": conversion.id, **_decision_columns(decision, now_us), "email_sha256": tiktok_email,
                        "email_sha256_reddit": reddit_email})
        redecided.append(conversion.event_id)
        deliveries += [_delivery_row(game_id, conversion.id, config_row_ids[c], now_us) for c in decision.owed_config_ids]
    if changes:
        events_table = Event.__table__
        await session.execute(
            events_table.update().where(events_table.c.id == bindparam("row_id")).values(
                {column: bindparam(column) for column in changes[0] if column != "row_id"}),
            changes)
    return redecided, deliveries


def _event_row(game_id: str, event: NewEvent, fingerprint: str, now_us: int) -> dict[str, object]:
    return {
        "game_id": game_id,
        "event_id": event.event_id,
        "kind": event.kind.value,
        "event_time_us": event.event_time_us,
        "receive_time_us": now_us,
        "payload_sha256": fingerprint,
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

