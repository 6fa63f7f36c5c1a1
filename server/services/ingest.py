"""Event ingestion: store events idempotently, attribute conversions and fill the outbox, in one transaction."""

import asyncio
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Table, and_, bindparam, exists, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.core import attribution
from server.core.attribution import Click, Config, Conversion, Decision, Player
from server.core.circuit import CircuitCause, describe_hold
from server.core.erasure import subject_digests
from server.core.events import EventKind, NewEvent
from server.core.postback import PostbackEvent
from server.core.types import DeliveryState, EventType, Network, NoPostbackReason
from server.services.context import ServiceContext
from server.services.conversions import (
    CONVERSION_KINDS,
    DECISION_NO_POSTBACK,
    DECISION_POSTBACK_OWED,
    ClickView,
    ConversionView,
    PostbackView,
    conversion_views,
)
from server.services.deliveries import postback_event, render_pending, render_postback, render_postbacks
from server.services.player_locks import LOCK_TABLE_FULL, LocksNeeded, PlayerLocks, identity_keys
from server.store.models import Delivery, Erasure, Event, Game, IdentityLink, PostbackConfig, RenderedPostback
from server.store.queries import game_rows_in_parameters, in_parameter, insert_rows, insert_rows_returning

_AWAITING_LATE_DATA = tuple(reason.value for reason in attribution.AWAITING_LATE_DATA)
_CONVERSION_TYPES = {kind: kind.conversion_type for kind in EventKind if kind.conversion_type}


class IngestReceipt(NamedTuple):  # a named tuple: one per event, and cheaper to build than a frozen dataclass
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
    # Fingerprints are computed before the transaction: on SQLite it runs in the writer thread, which every write
    # of the process shares, and this much needs no database.
    fingerprints = {game_id: [e.fingerprint() for e in events] for game_id, events in per_game.items()}
    results = await _write_with_retries(ctx, per_game, fingerprints, now_us)
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


# PostgreSQL's codes for a transaction that lost a race and may simply run again: the same event id committed by a
# concurrent transaction (a client's retry of a call still running), and a deadlock among identity locks.
_RETRIED_SQLSTATES = {"23505", "40P01"}
_ATTEMPTS = 6


async def _write_with_retries(ctx: ServiceContext, per_game: dict[str, list[NewEvent]],
                              fingerprints: dict[str, list[str]], now_us: int) -> dict[str, _GameResult]:
    """On PostgreSQL, the transaction runs again when it lost a race (LocksNeeded, _RETRIED_SQLSTATES): it reads
    afresh, so what the other transaction committed is then a duplicate or history. One that found PostgreSQL's
    lock table full runs again locking its games whole. So does one whose connection the server dropped: if that
    happened during its commit, the events it stored are reported as duplicates, as for a client's own retry.
    SQLite has one writer."""
    locks_wanted: frozenset[int] = frozenset()
    whole_games = False
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await ctx.db.write(functools.partial(_ingest_games, ctx, per_game=per_game,
                                                        fingerprints=fingerprints, now_us=now_us,
                                                        locks_wanted=locks_wanted, wait_to_cover=attempt > 2,
                                                        whole_games=whole_games))
        except LocksNeeded as needed:
            locks_wanted = needed.keys
        except DBAPIError as error:
            sqlstate = getattr(error.orig, "sqlstate", None)
            # A connection the server dropped (a restart) fails its transaction; the pool has let go of the others.
            retried = error.connection_invalidated or sqlstate in (*_RETRIED_SQLSTATES, LOCK_TABLE_FULL)
            if ctx.db.is_sqlite or not retried or attempt == _ATTEMPTS:
                raise
            whole_games = whole_games or sqlstate == LOCK_TABLE_FULL
    raise AssertionError("unreachable: the last attempt returns or raises")


def _ingest_games(ctx: ServiceContext, session: Session, *, per_game: dict[str, list[NewEvent]],
                  fingerprints: dict[str, list[str]], now_us: int, locks_wanted: frozenset[int],
                  wait_to_cover: bool, whole_games: bool) -> dict[str, _GameResult]:
    locks = None
    if not ctx.db.is_sqlite:
        # The unit of serialisation is the player: the events' own identities now, those their history reaches
        # as it is read (PlayerLocks.cover), and on a second attempt all that the first found it needed.
        locks = PlayerLocks(session, limit=ctx.settings.pg_max_identity_locks, wait_to_cover=wait_to_cover,
                            whole_games=whole_games)
        keys = set(locks_wanted)
        for game_id, events in per_game.items():
            keys |= identity_keys(game_id, {e.user_id for e in events if e.user_id},
                                  {e.anonymous_id for e in events if e.anonymous_id},
                                  {e.email_sha256 for e in events if e.email_sha256})
        locks.lock(per_game, keys)
    return {game_id: _ingest_game(ctx, session, locks, game_id, events, fingerprints[game_id], now_us)
            for game_id, events in per_game.items()}


def _ingest_game(ctx: ServiceContext, session: Session, locks: PlayerLocks | None, game_id: str,
                 events: list[NewEvent], fingerprints: list[str], now_us: int) -> _GameResult:
    first_seen = _existing_fingerprints(session, game_id, [e.event_id for e in events])
    new_indexes = []
    for index, event in enumerate(events):
        if event.event_id not in first_seen:
            first_seen[event.event_id] = fingerprints[index]
            new_indexes.append(index)
    stored = _Stored()
    if new_indexes:
        stored = _store_and_attribute(ctx, session, locks, game_id, [events[i] for i in new_indexes],
                                      [fingerprints[i] for i in new_indexes], now_us)
    # Duplicates (and conversions re-decided within this call) are read back as they now stand.
    unknown = [e.event_id for e in events if e.kind in _CONVERSION_TYPES and e.event_id not in stored.views]
    views = {**stored.views, **(conversion_views(session, game_id, unknown) if unknown else {})}
    new = set(new_indexes)
    receipts = [
        IngestReceipt(game_id, e.event_id, False, False, views.get(e.event_id)) if i in new else
        IngestReceipt(game_id, e.event_id, True, first_seen[e.event_id] != fingerprints[i], views.get(e.event_id))
        for i, e in enumerate(events)
    ]
    return _GameResult(receipts, [events[i] for i in new_indexes], views, stored.owed)


class GroupCommitter:
    """Merges concurrent single-event ingests into shared transactions. While one transaction runs, new requests
    queue; the next transaction takes them all. Light load pays no wait, heavy load shares one commit (fsync)
    and one set of attribution queries among many requests."""

    # Gathering pays off only for a crowd: 256 calls in flight queue well over 64 while a transaction runs, where
    # 1,000 conversions/s queue about 30, and gathering those as well (from 8) added 12 ms of waiting and a longer
    # cycle to each acknowledgement (p50 67-87 ms against about 20 ms, API process of its own).
    def __init__(self, ctx: ServiceContext, max_events: int = 1000, gather_from: int = 64, gather_s: float = 0.03,
                 gather_tick_s: float = 0.005):
        self._ctx = ctx
        self._max_events = max_events
        self._gather_from = gather_from
        self._gather_s = gather_s
        self._gather_tick_s = gather_tick_s
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
                if len(self._queue) >= self._gather_from:
                    await self._gather()
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

    async def _gather(self) -> None:
        """Under heavy load (gather_from requests queued while the last transaction ran), lets arrivals accumulate
        while they keep coming, up to a full transaction or gather_s. Each transaction costs a fixed amount of work
        (its queries, its commit) besides its events': one per few arrivals, as the loop hands them over, would
        spend most of the server on that. Lighter load never waits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._gather_s
        queued = len(self._queue)
        while queued < self._max_events and loop.time() < deadline:
            await asyncio.sleep(self._gather_tick_s)
            if len(self._queue) == queued:
                return
            queued = len(self._queue)

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


def _existing_fingerprints(session: Session, game_id: str, event_ids: list[str]) -> dict[str, str]:
    return dict(session.execute(_EXISTING_FINGERPRINTS, {"game": game_id, "event_ids": event_ids}).all())


@dataclass
class _Stored:
    views: dict[str, ConversionView] = field(default_factory=dict)
    owed: int = 0


class _Awaiting(NamedTuple):
    """A conversion that may be re-decided; row_id is None for one of the batch being stored."""

    row_id: int | None
    event_id: str
    kind: str
    event_time_us: int
    receive_time_us: int
    user_id: str | None
    anonymous_id: str | None
    email_sha256: str | None
    email_sha256_reddit: str | None
    no_postback_reason: str


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
    # What a postback takes from each click besides attribution's Click: (ip address, user agent, landing url).
    click_details: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)
    # What was read from the database: every link of these users and these anonymous ids, and every click of these
    # users, anonymous ids and emails (see covers()).
    read_users: set[str] = field(default_factory=set)
    read_anonymous_ids: set[str] = field(default_factory=set)
    read_emails: set[str] = field(default_factory=set)
    # When asked for: the players' conversions that were still awaiting late data when the history was read.
    awaiting: list[_Awaiting] = field(default_factory=list)

    def covers(self, user_id: str | None, anonymous_id: str | None, email_sha256: str | None) -> bool:
        """Whether this history holds all there is to decide for a player with these identities: the links of the
        anonymous id (so the users it reaches), the links of the user (so the devices and emails), and the clicks
        of all of those. Links read for the users reach every anonymous id and email that can join the player, and
        their clicks were read too."""
        return ((not user_id or user_id in self.read_users) and (not anonymous_id or anonymous_id in
                                                                 self.read_anonymous_ids)
                and (not email_sha256 or email_sha256 in self.read_emails))

    def add_link(self, anonymous_id: str, user_id: str) -> None:
        self.users_of_anonymous.setdefault(anonymous_id, set()).add(user_id)
        self.anonymous_of_user.setdefault(user_id, set()).add(anonymous_id)

    def add_click(self, click: Click) -> None:
        for key in _identity_keys(click.user_id, click.anonymous_id, click.email_hash):
            self.clicks_by_identity.setdefault(key, []).append(click)

    def add_event(self, event: NewEvent) -> None:
        kind = event.kind
        if kind == EventKind.AD_CLICK:
            if event.network:
                self.add_click(Click(event.event_id, event.network, event.click_id, event.event_time_us,
                                     event.user_id, event.anonymous_id, event.email_sha256))
                self.click_details[event.event_id] = (event.ip_address, event.user_agent, event.landing_url)
        elif kind == EventKind.IDENTIFY:
            if event.user_id:
                if event.anonymous_id:
                    self.add_link(event.anonymous_id, event.user_id)
                if event.email_sha256:
                    self.emails_of_user.setdefault(event.user_id, set()).add(
                        (event.email_sha256, event.email_sha256_reddit))
        elif kind == EventKind.GAME_LAUNCH:
            if event.user_id:
                self.launched.add("u:" + event.user_id)
            if event.anonymous_id:
                self.launched.add("a:" + event.anonymous_id)

    def player(self, user_id: str | None, anonymous_id: str | None, email_sha256: str | None,
               email_sha256_reddit: str | None) -> tuple[Player, tuple[str | None, str | None]]:
        """The player behind a conversion, and the (TikTok, Reddit) email hashes to send for them: the
        conversion's own, else those an identify of the player supplied."""
        users = {user_id} if user_id else self.users_of_anonymous.get(anonymous_id or "", set())
        links = [(anon, user) for user in users for anon in self.anonymous_of_user.get(user, ())]
        if anonymous_id:
            links += [(anonymous_id, user) for user in self.users_of_anonymous.get(anonymous_id, ())]
        player = attribution.resolve_player(user_id, anonymous_id, email_sha256, links)
        emails_of_user = self.emails_of_user
        identified = [pair for user in player.user_ids for pair in emails_of_user.get(user, ())] \
            if emails_of_user else []
        if not identified:  # most players: nothing to add to what resolve_player found
            return player, (email_sha256, email_sha256_reddit) if email_sha256 else (None, None)
        if len(identified) > 1:
            identified.sort(key=lambda pair: (pair[0], pair[1] or ""))
        emails = player.email_hashes | {tiktok for tiktok, _ in identified}
        match_emails = (email_sha256, email_sha256_reddit) if email_sha256 else identified[0]
        return Player(player.user_ids, player.anonymous_ids, frozenset(emails)), match_emails

    def decide(self, conversion_type: EventType, event_time_us: int, player: Player, player_keys: set[str],
               has_reddit_email: bool, configs: list[Config], lookback_us: int, *, is_first_launch: bool) -> Decision:
        # Tombstones are rare: without any, no digest of the player's identities is worth computing.
        erased = bool(self.erased) and bool(
            self.erased & subject_digests(player.user_ids, player.anonymous_ids, player.email_hashes))
        conversion = Conversion(conversion_type, event_time_us, is_first_launch, has_reddit_email, erased)
        clicks_by_identity = self.clicks_by_identity
        clicks = {c.key: c for key in player_keys for c in clicks_by_identity.get(key, ())}
        return attribution.decide(conversion, clicks.values(), configs, lookback_us)

    def has_launched(self, player_keys: set[str]) -> bool:
        return not self.launched.isdisjoint(player_keys)


def _identity_keys(user_id: str | None, anonymous_id: str | None, email_hash: str | None) -> list[str]:
    return [k for k in (user_id and "u:" + user_id, anonymous_id and "a:" + anonymous_id,
                        email_hash and "e:" + email_hash) if k]


def _player_keys(player: Player) -> set[str]:
    return ({"u:" + u for u in player.user_ids} | {"a:" + a for a in player.anonymous_ids}
            | {"e:" + e for e in player.email_hashes})


def _load_history(session: Session, locks: PlayerLocks | None, game_id: str, user_ids: set[str],
                  anonymous_ids: set[str], emails: set[str], *, has_erasures: bool, with_launches: bool = True,
                  awaiting_since: int | None = None) -> _History:
    """The history of the players with these identities. Launches are left out when nothing will ask whether a
    player launched before (re-decisions), and erasures when the game has no tombstones at all. With awaiting_since,
    the players' conversions received since then and still awaiting late data come along (history.awaiting).
    With locks (PostgreSQL), every identity whose rows are read is locked first."""
    history = _History()
    while True:
        link_rows = session.execute(
            _LINKS, {"game": game_id, "users": user_ids, "anons": anonymous_ids, "emails": emails}).all()
        users = user_ids | {link.user_id for link in link_rows}
        if users - user_ids:  # a user reached through an anonymous id brings that user's other devices
            link_rows = session.execute(
                _LINKS, {"game": game_id, "users": users, "anons": anonymous_ids, "emails": emails}).all()
        # Links newly locked may have changed since they were read: then they are read again.
        if locks is None or not locks.cover(game_id, users, anonymous_ids | {r.anonymous_id for r in link_rows
                                                                             if r.anonymous_id},
                                            emails | {r.email_sha256 for r in link_rows if r.email_sha256}):
            break
    for user_id, anonymous_id, email, email_reddit in link_rows:
        if anonymous_id:
            history.add_link(anonymous_id, user_id)
        if email:
            history.emails_of_user.setdefault(user_id, set()).add((email, email_reddit))
    anons = anonymous_ids | set(history.users_of_anonymous)
    emails = emails | {e for pairs in history.emails_of_user.values() for e, _ in pairs}
    history.read_users, history.read_anonymous_ids, history.read_emails = users, anonymous_ids, emails
    # Clicks, launches and awaiting conversions in one pass over the players' rows. Launches count by user or
    # anonymous id only.
    parameters = {"game": game_id, "users": users, "anons": anons, "emails": emails}
    # All rows at once and unpacked by position: a few hundred thousand rows a minute pass through here.
    if awaiting_since is None:
        rows = session.execute(_CLICKS_AND_LAUNCHES if with_launches else _CLICKS, parameters).all()
    else:
        rows = session.execute(_HISTORY_AND_AWAITING, {**parameters, "since": awaiting_since}).all()
    launched, click_details = history.launched, history.click_details
    for (event_id, kind, network, click_id, event_time_us, user_id, anonymous_id, email_sha256, ip_address,
         user_agent, landing_url, *awaiting) in rows:
        if kind == _AD_CLICK:
            history.add_click(Click(event_id, _NETWORKS[network], click_id, event_time_us, user_id, anonymous_id,
                                    email_sha256))
            click_details[event_id] = (ip_address, user_agent, landing_url)
            continue
        if kind == _GAME_LAUNCH and (user_id in users or anonymous_id in anons):
            launched.update(_identity_keys(user_id, anonymous_id, None))
        if awaiting:
            row_id, receive_time_us, email_sha256_reddit, no_postback_reason = awaiting
            if no_postback_reason in _AWAITING_LATE_DATA and receive_time_us >= awaiting_since:  # type: ignore[operator]
                history.awaiting.append(_Awaiting(
                    row_id, event_id, kind, event_time_us, receive_time_us, user_id, anonymous_id, email_sha256,
                    email_sha256_reddit, no_postback_reason))
    if has_erasures:
        digests = subject_digests(users, anons, emails)
        history.erased = set(session.execute(_ERASED, {"game": game_id, "digests": digests}).scalars())
    return history


def _game_rules(session: Session, game_id: str) -> tuple[list[Config], dict[str, int], dict[str, str], int, bool]:
    """The game's postback configs (as attribution sees them, their row ids, and why those with open circuits hold
    their postbacks), its lookback window, and whether it has any erasure tombstones."""
    rows = session.execute(_GAME_RULES, {"game": game_id}).all()
    config_rows = [row for row in rows if row.config_id is not None]
    configs = [
        Config(c.config_id, Network(c.network), c.enabled, frozenset(EventType(t) for t in c.trigger_events.split(",")))
        for c in config_rows
    ]
    holding = {c.config_id: describe_hold(CircuitCause(c.circuit_cause)) for c in config_rows if c.circuit_cause}
    return (configs, {c.config_id: c.id for c in config_rows}, holding,
            rows[0].lookback_us or attribution.DEFAULT_LOOKBACK_US, bool(rows[0].has_erasures))


def _decision_values(decision: Decision, now_us: int) -> tuple[object, ...]:
    """The decision columns' values, in _DECISION_COLUMNS order."""
    return (DECISION_POSTBACK_OWED if decision.owed_config_ids else DECISION_NO_POSTBACK,
            decision.reason.value if decision.reason else None,
            decision.click.key if decision.click else None,
            now_us)


def _new_view(game_id: str, event: NewEvent, conversion_type: EventType, decision: Decision,
              configs: dict[str, Config], holding: dict[str, str], now_us: int) -> ConversionView:
    click = decision.click
    return ConversionView(
        game_id, event.event_id, conversion_type, event.event_time_us, now_us, event.user_id, event.anonymous_id,
        event.value_micros, event.currency, bool(decision.owed_config_ids), decision.reason,
        ClickView(click.key, click.network, click.click_id, click.click_time_us) if click else None,
        tuple(PostbackView(c, configs[c].network, DeliveryState.PENDING, 0, None, None if c in holding else now_us,
                           None, hold_reason=holding.get(c))
              for c in decision.owed_config_ids),
        now_us,
    )


def _store_and_attribute(ctx: ServiceContext, session: Session, locks: PlayerLocks | None, game_id: str,
                         events: list[NewEvent], fingerprints: list[str], now_us: int) -> _Stored:
    """Inserts the new events with their conversions' decisions and the deliveries they owe."""
    configs, config_row_ids, holding, lookback_us, has_erasures = _game_rules(session, game_id)
    configs_by_id = {c.config_id: c for c in configs}
    # Late data (a paid click, an identify) may change recent conversions' decisions: those awaiting it are read
    # with the history, as they stood before this batch.
    late_data = any((e.kind == EventKind.AD_CLICK and e.network) or e.kind == EventKind.IDENTIFY for e in events)
    grace_us = int(ctx.settings.attribution_grace_s * 1_000_000)
    history = _load_history(
        session, locks, game_id,
        {e.user_id for e in events if e.user_id},
        {e.anonymous_id for e in events if e.anonymous_id},
        {e.email_sha256 for e in events if e.email_sha256},
        has_erasures=has_erasures, awaiting_since=now_us - grace_us if late_data else None,
    )
    rows: list[tuple[object, ...]] = []
    stored = _Stored()
    owed: dict[str, tuple[str, ...]] = {}
    postbacks: dict[str, PostbackEvent | None] = {}  # what the owed ones send (None: read back to render)
    awaiting: list[_Awaiting] = []  # this batch's conversions awaiting late data
    undecided = (None, None, None, None)
    for event, fingerprint in zip(events, fingerprints, strict=True):
        decided = undecided
        email, email_reddit = event.email_sha256, event.email_sha256_reddit
        if conversion_type := _CONVERSION_TYPES.get(event.kind):
            player, (email, email_reddit) = history.player(event.user_id, event.anonymous_id, email, email_reddit)
            keys = _player_keys(player)
            decision = history.decide(conversion_type, event.event_time_us, player, keys, bool(email_reddit),
                                      configs, lookback_us, is_first_launch=not history.has_launched(keys))
            # The row keeps the match keys the decision relied on, so the postbacks can carry them.
            decided = _decision_values(decision, now_us)
            stored.views[event.event_id] = _new_view(game_id, event, conversion_type, decision, configs_by_id, holding,
                                                     now_us)
            if decision.owed_config_ids:
                owed[event.event_id] = decision.owed_config_ids
                postbacks[event.event_id] = _postback_of(event, email, email_reddit, decision, history)
            elif late_data and decision.reason in attribution.AWAITING_LATE_DATA:
                awaiting.append(_Awaiting(None, event.event_id, event.kind.value, event.event_time_us, now_us,
                                          event.user_id, event.anonymous_id, email, email_reddit,
                                          decision.reason.value))  # type: ignore[union-attr]
        history.add_event(event)
        rows.append((*_event_values(game_id, event, fingerprint, now_us, email, email_reddit), *decided))

    # Row ids, for the deliveries: PostgreSQL returns them from the insert, SQLite is asked once they are needed.
    row_ids: dict[str, int] | None = None
    if ctx.db.is_sqlite:
        insert_rows(session, Event.__table__, _EVENT_COLUMNS + _DECISION_COLUMNS, rows)
    else:
        row_ids = dict(insert_rows_returning(session, Event.__table__, _EVENT_COLUMNS + _DECISION_COLUMNS, rows,
                                             ("event_id", "id")))
    link_rows = [
        (game_id, e.user_id, e.anonymous_id, e.email_sha256, e.email_sha256_reddit, now_us)
        for e in events if e.kind == EventKind.IDENTIFY and e.user_id and (e.anonymous_id or e.email_sha256)
    ]
    if link_rows:
        insert_rows(session, IdentityLink.__table__, _LINK_COLUMNS, link_rows)
    changes: list[tuple[_Awaiting, Decision, str | None, str | None]] = []
    if late_data:
        changes = _reevaluate_recent(session, locks, game_id, events, history, awaiting, configs, lookback_us,
                                           now_us, grace_us, has_erasures=has_erasures)
    # Those of the conversions that owe postbacks, and of this batch's re-decided ones.
    wanted = [*owed, *(c.event_id for c, _, _, _ in changes if c.row_id is None)]
    if row_ids is None:
        row_ids = dict(session.execute(_ROW_IDS, {"game": game_id, "event_ids": wanted}).all()) if wanted else {}
    deliveries = [_delivery_values(game_id, row_ids[event_id], config_row_ids[config_id], now_us)
                  for event_id, config_ids in owed.items() for config_id in config_ids]
    updates: list[dict[str, object]] = []
    for conversion, decision, tiktok_email, reddit_email in changes:
        row_id = conversion.row_id if conversion.row_id is not None else row_ids[conversion.event_id]
        updates.append({"row_id": row_id, **dict(zip(_DECISION_COLUMNS, _decision_values(decision, now_us),
                                                     strict=True)),
                        "email_sha256": tiktok_email, "email_sha256_reddit": reddit_email})
        deliveries += [_delivery_values(game_id, row_id, config_row_ids[c], now_us) for c in decision.owed_config_ids]
        stored.views.pop(conversion.event_id, None)
    if updates:
        events_table = Event.__table__
        session.execute(
            events_table.update().where(events_table.c.id == bindparam("row_id")).values(
                {column: bindparam(column) for column in updates[0] if column != "row_id"}),
            updates)
    if deliveries:
        _render_owed(ctx, session, deliveries, {row_ids[e]: postbacks.get(e) for e in owed},
                     {row_id: configs_by_id[config_id].network for config_id, row_id in config_row_ids.items()})
    stored.owed = len(deliveries)
    return stored


def _postback_of(event: NewEvent, email: str | None, email_reddit: str | None, decision: Decision,
                 history: _History) -> PostbackEvent | None:
    """The postback a new conversion owes, as postback_event builds it from the stored rows: its own match keys, and
    its click's where it has none. None when the click's details are not at hand."""
    click = decision.click
    click_id = ip_address = user_agent = landing_url = None
    if click is not None:
        if (details := history.click_details.get(click.key)) is None:
            return None
        click_id, (ip_address, user_agent, landing_url) = click.click_id, details
    return postback_event(event.event_id, event.kind.value, event.event_time_us, event.user_id, email, email_reddit,
                          event.ip_address, event.user_agent, event.value_micros, event.currency, click_id,
                          ip_address, user_agent, landing_url)


def _render_owed(ctx: ServiceContext, session: Session, deliveries: list[tuple[object, ...]],
                 postbacks: dict[int, PostbackEvent | None], networks: dict[int, Network]) -> None:
    """Inserts the pending deliveries and renders their postbacks: those of the new conversions from what this
    transaction wrote, the rest (re-decided here, or whose click's details were not read) by reading them back."""
    at_hand = {row_id: postback for row_id, postback in postbacks.items() if postback is not None}
    if ctx.db.is_sqlite:
        insert_rows(session, Delivery.__table__, _DELIVERY_COLUMNS, deliveries)
        ids = session.connection().execute(_DELIVERY_IDS, {"event_row_ids": list(at_hand)}).all() if at_hand else []
        render_postbacks(session, [(delivery_id, networks[config_row_id], at_hand[event_row_id])
                                   for delivery_id, event_row_id, config_row_id in ids if event_row_id in at_hand])
    else:
        # One round trip for both: the renderings need only the deliveries' ids, which the insert hands on.
        rendered = [(event_row_id, config_row_id, *rendering)
                    for _, event_row_id, config_row_id, *_ in deliveries if event_row_id in at_hand
                    and (rendering := render_postback(networks[config_row_id], at_hand[event_row_id])) is not None]
        rendered_arrays = [list(column) for column in zip(*rendered, strict=True)] if rendered else [[]] * 6
        connection = session.connection()
        connection.exec_driver_sql(_insert_rendered_deliveries(connection.dialect), (
            *(list(column) for column in zip(*deliveries, strict=True)), *rendered_arrays))
    if read_back := sorted({event_row_id for _, event_row_id, *_ in deliveries} - at_hand.keys()):
        render_pending(session, read_back)


@functools.cache
def _insert_rendered_deliveries(dialect: Dialect) -> str:
    """PostgreSQL: inserts deliveries (_DELIVERY_COLUMNS' arrays) and their postbacks' renderings (arrays of event
    row id, config row id, then _RENDERED_COLUMNS after the delivery id) in one statement."""
    deliveries, rendered = Delivery.__table__, RenderedPostback.__table__

    def arrays(table: Table, columns: Sequence[str], first: int) -> str:
        return ", ".join(f"${n}::{table.c[name].type.compile(dialect=dialect)}[]"
                         for n, name in enumerate(columns, first))

    rendered_columns = ("dedup_id", "event_type", "event_time_us", "body")
    keys = len(_DELIVERY_COLUMNS) + 1
    return (f"WITH delivery AS (INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
            f"SELECT * FROM unnest({arrays(deliveries, _DELIVERY_COLUMNS, 1)}) "
            f"RETURNING id, event_row_id, config_row_id) "
            f"INSERT INTO rendered_postbacks (delivery_id, {', '.join(rendered_columns)}) "
            f"SELECT delivery.id, {', '.join('r.' + c for c in rendered_columns)} FROM delivery "
            f"JOIN unnest({arrays(deliveries, ('event_row_id', 'config_row_id'), keys)}, "
            f"{arrays(rendered, rendered_columns, keys + 2)}) "
            f"AS r(event_row_id, config_row_id, {', '.join(rendered_columns)}) "
            f"USING (event_row_id, config_row_id)")


def _reevaluate_recent(session: Session, locks: PlayerLocks | None, game_id: str, events: list[NewEvent],
                       batch_history: _History,
                       batch_awaiting: list[_Awaiting], configs: list[Config], lookback_us: int, now_us: int,
                       grace_us: int, *,
                       has_erasures: bool) -> list[tuple[_Awaiting, Decision, str | None, str | None]]:
    """Re-decides the recent conversions still awaiting late data, for the players a new click or identity touches.
    Returns those whose decision changed, with the new decision and the (TikTok, Reddit) email hashes it used."""
    users, anons, emails = _reach_of_late_data(events, batch_history)
    # The stored ones first, in row order, then this batch's in the order they were stored: the order a read after
    # the insert would give. One the batch's history does not cover is re-decided whatever its identities.
    candidates = [c for c in (*sorted(batch_history.awaiting, key=lambda c: c.row_id), *batch_awaiting)
                  if c.user_id in users or c.anonymous_id in anons or c.email_sha256 in emails
                  or not batch_history.covers(c.user_id, c.anonymous_id, c.email_sha256)]
    if not candidates:
        return []
    # The batch's history, grown by the batch's own clicks and links, is what a fresh read would find for players
    # it covers (usually all of them: candidates are found through the batch's identities).
    history = batch_history
    if not all(batch_history.covers(c.user_id, c.anonymous_id, c.email_sha256) for c in candidates):
        history = _load_history(
            session, locks, game_id,
            {c.user_id for c in candidates if c.user_id},
            {c.anonymous_id for c in candidates if c.anonymous_id},
            {c.email_sha256 for c in candidates if c.email_sha256},
            has_erasures=has_erasures, with_launches=False,
        )
    changes = []
    for conversion in candidates:
        if not attribution.can_reevaluate(NoPostbackReason(conversion.no_postback_reason), conversion.receive_time_us,
                                          now_us, grace_us):
            continue
        player, (tiktok_email, reddit_email) = history.player(conversion.user_id, conversion.anonymous_id,
                                                             conversion.email_sha256, conversion.email_sha256_reddit)
        # A candidate awaits late data, so it was not a repeat launch: being first is settled at arrival.
        decision = history.decide(EventKind(conversion.kind).conversion_type,  # type: ignore[arg-type]
                                  conversion.event_time_us, player, _player_keys(player), bool(reddit_email), configs,
                                  lookback_us, is_first_launch=True)
        if decision.reason and decision.reason.value == conversion.no_postback_reason:
            continue
        changes.append((conversion, decision, tiktok_email, reddit_email))
    return changes


def _reach_of_late_data(events: list[NewEvent], history: _History) -> tuple[set[str], set[str], set[str]]:
    """The users, anonymous ids and emails of the conversions whose players the batch's late data (paid clicks,
    identity links) can change; a conversion with none of them keeps its decision, so it is not re-decided (in a
    batch of many players' events, most of those awaiting late data got none). A player reaches one user hop from
    its own identities (resolve_player): the clicks and links of user U concern conversions of U and of U's
    anonymous ids; those of anonymous id A concern conversions of A, of A's users and of their other devices; those
    of email E concern conversions with E and of the users E identifies."""
    users: set[str] = set()
    anons: set[str] = set()
    emails: set[str] = set()
    for event in events:
        if (event.kind == EventKind.AD_CLICK and event.network) or event.kind == EventKind.IDENTIFY:
            if event.user_id:
                users.add(event.user_id)
            if event.anonymous_id:
                anons.add(event.anonymous_id)
            if event.email_sha256:
                emails.add(event.email_sha256)
    users |= {user for anon in anons for user in history.users_of_anonymous.get(anon, ())}
    if emails:
        users |= {user for user, pairs in history.emails_of_user.items() if any(e in emails for e, _ in pairs)}
    anons |= {anon for user in users for anon in history.anonymous_of_user.get(user, ())}
    return users, anons, emails


# Statements are built once: building a select costs more Python than running it through SQLAlchemy's cache. Lists of
# values are single parameters (in_parameter); the SQL is the same for every batch size. They are Core statements on
# the tables, not on the mapped classes: a session runs those without the ORM's result machinery, which costs a
# transaction of a few unary calls more than its own queries do.
_EVENTS, _LINKS_TABLE, _CONFIGS, _GAMES, _ERASURES = (model.__table__.c for model in (  # type: ignore[attr-defined]
    Event, IdentityLink, PostbackConfig, Game, Erasure))
_AD_CLICK = EventKind.AD_CLICK.value
_NETWORKS = {network.value: network for network in Network}
_GAME_LAUNCH = EventKind.GAME_LAUNCH.value
_EXISTING_FINGERPRINTS = select(_EVENTS.event_id, _EVENTS.payload_sha256).where(
    _EVENTS.game_id == bindparam("game"), in_parameter(_EVENTS.event_id, "event_ids"))
_DELIVERIES = Delivery.__table__.c
_DELIVERY_IDS = select(_DELIVERIES.id, _DELIVERIES.event_row_id, _DELIVERIES.config_row_id).where(
    in_parameter(_DELIVERIES.event_row_id, "event_row_ids"))
_ROW_IDS = select(_EVENTS.event_id, _EVENTS.id).where(
    _EVENTS.game_id == bindparam("game"), in_parameter(_EVENTS.event_id, "event_ids"))
# One row per live config (one with NULL config columns when there is none), each carrying the game's lookback and
# whether it has erasure tombstones: a single statement for all of a transaction's rules.
_GAME_FACTS = select(
    select(_GAMES.attribution_lookback_us).where(_GAMES.game_id == bindparam("game")).scalar_subquery()
    .label("lookback_us"),
    exists().where(_ERASURES.game_id == bindparam("game")).label("has_erasures"),
).subquery()
_GAME_RULES = select(
    _GAME_FACTS.c.lookback_us, _GAME_FACTS.c.has_erasures, _CONFIGS.id, _CONFIGS.config_id,
    _CONFIGS.network, _CONFIGS.enabled, _CONFIGS.trigger_events, _CONFIGS.circuit_cause,
).select_from(_GAME_FACTS.outerjoin(PostbackConfig.__table__, and_(
    _CONFIGS.game_id == bindparam("game"), _CONFIGS.delete_time_us.is_(None))))
_LINKS = select(
    _LINKS_TABLE.user_id, _LINKS_TABLE.anonymous_id, _LINKS_TABLE.email_sha256, _LINKS_TABLE.email_sha256_reddit,
).where(game_rows_in_parameters(_LINKS_TABLE.game_id, "game", (_LINKS_TABLE.user_id, "users"),
                                (_LINKS_TABLE.anonymous_id, "anons"), (_LINKS_TABLE.email_sha256, "emails")))
_PLAYER_EVENTS = game_rows_in_parameters(_EVENTS.game_id, "game", (_EVENTS.user_id, "users"),
                                         (_EVENTS.anonymous_id, "anons"), (_EVENTS.email_sha256, "emails"))
_PAID_CLICK = and_(_EVENTS.kind == _AD_CLICK, _EVENTS.network.is_not(None))
# With what a postback carries of its click (ip address, user agent, landing url), so that ingest renders the
# postbacks it owes without reading its conversions and their clicks back.
_CLICK_COLUMNS = (_EVENTS.event_id, _EVENTS.kind, _EVENTS.network, _EVENTS.click_id, _EVENTS.event_time_us, _EVENTS.user_id,
                  _EVENTS.anonymous_id, _EVENTS.email_sha256, _EVENTS.ip_address, _EVENTS.user_agent,
                  _EVENTS.landing_url)
_CLICKS = select(*_CLICK_COLUMNS).where(_PLAYER_EVENTS, _PAID_CLICK)
_CLICKS_AND_LAUNCHES = select(*_CLICK_COLUMNS).where(_PLAYER_EVENTS, or_(_PAID_CLICK, _EVENTS.kind == _GAME_LAUNCH))
_AWAITING_CONVERSION = and_(_EVENTS.kind.in_(CONVERSION_KINDS), _EVENTS.no_postback_reason.in_(_AWAITING_LATE_DATA),
                            _EVENTS.receive_time_us >= bindparam("since"))
_HISTORY_AND_AWAITING = select(
    *_CLICK_COLUMNS, _EVENTS.id, _EVENTS.receive_time_us, _EVENTS.email_sha256_reddit, _EVENTS.no_postback_reason,
).where(_PLAYER_EVENTS, or_(_PAID_CLICK, _EVENTS.kind == _GAME_LAUNCH, _AWAITING_CONVERSION))
_ERASED = select(_ERASURES.subject_sha256).where(
    _ERASURES.game_id == bindparam("game"), in_parameter(_ERASURES.subject_sha256, "digests"))


# Rows are written as tuples (insert_rows), in these columns' order.
_EVENT_COLUMNS = (
    "game_id", "event_id", "kind", "event_time_us", "receive_time_us", "payload_sha256", "user_id", "anonymous_id",
    "email_sha256", "email_sha256_reddit", "ip_address", "user_agent", "network", "click_id", "landing_url",
    "value_micros", "currency", "order_id", "item_ids",
)
_DECISION_COLUMNS = ("decision", "no_postback_reason", "attributed_click_event_id", "decide_time_us")
_LINK_COLUMNS = ("game_id", "user_id", "anonymous_id", "email_sha256", "email_sha256_reddit", "link_time_us")
_DELIVERY_COLUMNS = ("game_id", "event_row_id", "config_row_id", "state", "attempt_count", "next_attempt_time_us",
                     "create_time_us")


def _event_values(game_id: str, event: NewEvent, fingerprint: str, now_us: int, email_sha256: str | None,
                  email_sha256_reddit: str | None) -> tuple[object, ...]:
    """An event's values in _EVENT_COLUMNS order (its decision's follow)."""
    return (game_id, event.event_id, event.kind.value, event.event_time_us, now_us, fingerprint, event.user_id,
            event.anonymous_id, email_sha256, email_sha256_reddit, event.ip_address, event.user_agent,
            event.network.value if event.network else None, event.click_id, event.landing_url, event.value_micros,
            event.currency, event.order_id, _json_list(event.item_ids) if event.item_ids else None)


@functools.lru_cache(maxsize=1024)
def _json_list(items: tuple[str, ...]) -> str:
    """Item ids as stored, a JSON array: few distinct lists recur, and json.dumps costs more than the lookup."""
    return json.dumps(list(items))


def _event_row(game_id: str, event: NewEvent, fingerprint: str, now_us: int) -> dict[str, object]:
    """An undecided event's row as a dict (the batch benchmark's ceiling inserts these)."""
    values = _event_values(game_id, event, fingerprint, now_us, event.email_sha256, event.email_sha256_reddit)
    return {**dict(zip(_EVENT_COLUMNS, values, strict=True)), **dict.fromkeys(_DECISION_COLUMNS)}


def _delivery_values(game_id: str, event_row_id: int, config_row_id: int, now_us: int) -> tuple[object, ...]:
    """A pending delivery in _DELIVERY_COLUMNS order."""
    return (game_id, event_row_id, config_row_id, DeliveryState.PENDING.value, 0, now_us, now_us)
