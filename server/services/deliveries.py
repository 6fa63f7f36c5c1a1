"""Delivery use cases for the dispatcher: claim due postbacks under a lease, then record each attempt and its outcome."""

import logging
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from server.core.adapters import render_sendable
from server.core.circuit import BreakerPolicy, Circuit, CircuitCause, after_probe, after_requests
from server.core.events import EventKind
from server.core.postback import Classification, NetworkCredentials, Outcome, PostbackEvent
from server.core.retry import (
    RetryPolicy,
    decide_retry,
    give_up_reason,
    past_network_window,
    window_closed_before_us,
)
from server.core.types import AttemptStatus, DeliveryState, EventType, FailureReason, Network
from server.services.circuits import CIRCUIT_COLUMNS, breaker_policy, circuit_of, release_held, set_circuit
from server.services.configs import sealing_context
from server.services.context import ServiceContext
from server.settings import Settings
from server.store.models import PENDING, Delivery, DeliveryLog, Event, PostbackConfig, RenderedPostback
from server.store.queries import in_parameter, in_values, insert_rows

US_PER_S = 1_000_000
CONFIG_DELETED = "postback config deleted before the postback was sent"
CONFIG_DISABLED = "postback config disabled before the postback was sent"
NO_MATCH_KEY = "Reddit needs a click id or a hashed email, and this conversion has neither"
WINDOW_CLOSED_WHILE_HELD = "held while its config's circuit was open until the network's window closed"
MAX_BATCH_SIZE = 1000

log = logging.getLogger("postbacks.dispatch")


@dataclass(frozen=True, slots=True)
class Target:
    """A config as the dispatcher sends to it; the token is decrypted only for the send."""

    row_id: int
    game_id: str
    config_id: str
    display_name: str
    network: Network
    credentials: NetworkCredentials
    # When the credentials were set: a refusal of credentials replaced since says nothing about the new ones.
    credentials_update_time_us: int

    @property
    def name(self) -> str:
        return f"games/{self.game_id}/postbackConfigs/{self.config_id}"


class ClaimedDelivery(NamedTuple):
    """A leased postback as the dispatcher sends it. This and Attempt are named tuples: built for each postback of
    each batch, and several times cheaper to build than frozen dataclasses."""

    delivery_id: int
    dedup_id: str
    event_type: EventType
    event_time_us: int
    rendered: bytes  # the event as the network's request carries it (the adapter's render_event)
    attempt_number: int  # the number the next attempt carries
    first_attempt_time_us: int | None


@dataclass(frozen=True, slots=True)
class Batch:
    """Deliveries of one config, leased to one dispatcher, sendable in one request."""

    target: Target
    deliveries: tuple[ClaimedDelivery, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    """Due deliveries of one config, just leased to one dispatcher; their conversions are read by load_leased."""

    config_row_id: int
    rows: tuple[Row[Any], ...]  # (id, attempt_count, first_attempt_time_us) of each delivery, first
    # The one postback that tries an open circuit's config: its answer decides whether the circuit closes.
    probe: bool = False
    # On PostgreSQL, the renderings (as _RENDERED gives them) read by the statement that took the lease.
    rendered: dict[int, tuple[Any, ...]] | None = None

    @property
    def delivery_ids(self) -> list[int]:
        return [row.id for row in self.rows]


@dataclass(frozen=True, slots=True)
class Leases:
    leases: list[Lease]
    # The earliest future attempt among configs not in flight here, so the dispatcher can sleep until then.
    next_due_us: int | None
    # Configs whose due postbacks are held by their open circuits: not due work for has_due_work.
    held_config_row_ids: tuple[int, ...] = ()


class Attempt(NamedTuple):
    """One HTTP request's result for one delivery."""

    delivery: ClaimedDelivery
    attempt_time_us: int
    classification: Classification
    latency_ms: int
    # Reddit refused the whole batch; the event is resent on its own right away (the next attempt in the list).
    resent_singly: bool = False


# Why a leased postback cannot be sent whatever the network would say, and under which reason it fails.
Unsendable = tuple[str, FailureReason]


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_delay_s=settings.retry_base_delay_s,
        max_delay_s=settings.retry_max_delay_s,
        tiktok_window_s=settings.retry_tiktok_horizon_s,
        reddit_max_event_age_s=7 * 24 * 3600.0 - settings.retry_reddit_margin_s,
    )


def _due(now_us: int | ColumnElement[int]) -> ColumnElement[bool]:
    """Pending, due, and not leased (or leased by a dispatcher that has not come back in time)."""
    return and_(Delivery.state == PENDING, Delivery.next_attempt_time_us <= now_us, _lease_free(now_us))


def _lease_free(now_us: int | ColumnElement[int]) -> ColumnElement[bool]:
    return or_(Delivery.lease_expire_time_us.is_(None), Delivery.lease_expire_time_us <= now_us)


def _clear_lease() -> dict[str, None]:
    return {"lease_owner": None, "lease_expire_time_us": None}


async def lease_due(ctx: ServiceContext, owner_id: str, *, max_batches: int, batch_size: int,
                    skip_config_row_ids: Collection[int] = (),
                    batches_allowed: Callable[[int], int] = lambda config_row_id: 1) -> Leases:
    """Leases up to max_batches batches of up to batch_size deliveries each, oldest due first: one batch for each
    config with due work, then more for those with more due that batches_allowed(config row id) allows (a backlog
    is claimed several batches at a time, not one claim per batch). What is due is read from a snapshot, and the
    leases are taken in a short write transaction. Their conversions are read separately (load_leased), so a
    dispatcher can lease its next batch while it reads this one's.

    On PostgreSQL the rows are picked with FOR UPDATE SKIP LOCKED, so replicas claiming at once take disjoint
    rows; on SQLite the writers take turns and BEGIN IMMEDIATE serialises claims. Deliveries of configs disabled
    or deleted meanwhile are cancelled here instead of being sent.

    A config whose circuit is open is not claimed: its postbacks are held. When its next probe is due, one of its
    postbacks is leased alone as the probe, and the probe time moved to the lease's end in the same transaction,
    so that of all dispatchers only one probes at a time.
    """
    now_us = ctx.clock()
    lease_until_us = now_us + round(ctx.settings.dispatch_lease_s * US_PER_S)
    batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))
    busy = list(skip_config_row_ids)
    # What is due is read from a snapshot: the write lock, which ingest shares, is taken only when there is work,
    # and held for the leases alone.
    due = await ctx.db.read(lambda session: _find_due(session, now_us, busy, max_batches))
    probes = dict(list(due.probes.items())[:max_batches])
    shares = _share(due.config_row_ids, max_batches - len(probes), batches_allowed)
    leased: list[Lease] = []
    if shares or probes or due.cancel:
        leased = await ctx.db.write(lambda session: _take_leases(
            ctx, session, owner_id, due.cancel, shares, probes, now_us, lease_until_us, batch_size), urgent=True)
    return Leases(leased, due.next_due_us, due.held)


def _share(config_row_ids: list[int], max_batches: int, batches_allowed: Callable[[int], int]) -> dict[int, int]:
    """How many batches each config gets, in turns, oldest due first, until max_batches or every allowance is
    used: a config with more due than one batch gets more only where that leaves none of the others out."""
    allowed = {config_row_id: batches_allowed(config_row_id) for config_row_id in config_row_ids}
    shares: dict[int, int] = {}
    remaining = max_batches
    while remaining > 0:
        takers = [c for c in config_row_ids if shares.get(c, 0) < allowed[c]][:remaining]
        if not takers:
            break
        for config_row_id in takers:
            shares[config_row_id] = shares.get(config_row_id, 0) + 1
        remaining -= len(takers)
    return shares


async def load_leased(ctx: ServiceContext, owner_id: str, lease: Lease) -> Batch | None:
    """The leased deliveries as a batch to send, read from a snapshot once the leases are committed; None when
    none is left to send. Those the network would refuse whatever happens fail here instead."""
    now_us = ctx.clock()
    unsendable: dict[int, Unsendable] = {}
    batch = await ctx.db.read(lambda session: _load_batch_of(ctx, session, lease, now_us, unsendable))
    if unsendable:
        await _fail_unsendable(ctx, owner_id, unsendable)
    return batch


async def has_due_work(ctx: ServiceContext, *, some_held: bool = False) -> bool:
    """Whether anything is due to send that a claim could take: one read on the (state, due time) index. When the
    last claim found postbacks held by open circuits, those do not count, and the question is asked config by
    config instead (walking the due index past a long lapse's backlog could take longer than a claim)."""
    now_us = ctx.clock()
    if not some_held:
        query = select(Delivery.id).where(_due(now_us)).limit(1)
    else:
        query = select(PostbackConfig.id).where(
            or_(PostbackConfig.circuit_cause.is_(None), PostbackConfig.circuit_probe_time_us <= now_us),
            exists().where(Delivery.config_row_id == PostbackConfig.id, _due(now_us))).limit(1)
    return await ctx.db.read(lambda session: session.scalar(query) is not None)


class _Due(NamedTuple):
    config_row_ids: list[int]  # configs to lease from, oldest due first
    probes: dict[int, int]  # open circuits whose probe is due: config row id -> its probe time
    cancel: dict[str, list[int]]  # inactive configs whose due postbacks are cancelled, by reason
    next_due_us: int | None  # when nothing is due: the next due time or probe time
    held: tuple[int, ...]  # configs with due postbacks held by their open circuits


def _find_due(session: Session, now_us: int, busy: list[int], max_batches: int) -> _Due:
    # One index probe per config on (config, state, next attempt), oldest due first: grouping every pending
    # delivery by config instead cost more than the sends once the outbox held a large backlog.
    oldest_due = (select(Delivery.next_attempt_time_us)
                  .where(Delivery.config_row_id == PostbackConfig.id, _due(now_us))
                  .order_by(Delivery.next_attempt_time_us).limit(1).scalar_subquery())
    config = PostbackConfig.__table__.c
    # An open circuit is probed with any of its postbacks not leased, due or not (an outage's are backing off).
    probe_due = and_(config.circuit_cause.is_not(None), config.circuit_probe_time_us <= now_us,
                     exists().where(Delivery.config_row_id == PostbackConfig.id, Delivery.state == PENDING,
                                    _lease_free(now_us)))
    due_configs = session.execute(
        select(PostbackConfig.id, PostbackConfig.enabled, PostbackConfig.delete_time_us, oldest_due.label("due_us"),
               config.circuit_cause, config.circuit_probe_time_us)
        .where(PostbackConfig.id.not_in(busy), or_(oldest_due.is_not(None), probe_due))
    ).all()
    active = [c for c in due_configs if c.enabled and c.delete_time_us is None]
    closed = sorted((c for c in active if c.circuit_cause is None), key=lambda c: c.due_us)
    config_row_ids = [c.id for c in closed[:max(0, max_batches)]]
    probes = {c.id: c.circuit_probe_time_us for c in active
              if c.circuit_cause is not None and c.circuit_probe_time_us <= now_us}
    held = [c for c in active if c.circuit_cause is not None and c.id not in probes]
    # Disabling a config keeps its postbacks until they come due; then they are cancelled, not sent.
    due_inactive = [c for c in due_configs if not c.enabled and c.due_us is not None]
    cancel = {reason: ids for reason, ids in (
        (CONFIG_DELETED, [c.id for c in due_inactive if c.delete_time_us is not None]),
        (CONFIG_DISABLED, [c.id for c in due_inactive if c.delete_time_us is None])) if ids}
    # Only a claim that finds nothing sleeps until the next due time; one that finds work claims again at once.
    next_due_us = None
    if not config_row_ids and not probes:
        next_due_us = session.scalar(
            select(func.min(Delivery.next_attempt_time_us)).where(
                Delivery.state == PENDING, Delivery.next_attempt_time_us > now_us,
                Delivery.config_row_id.not_in(busy))
        )
        next_due_us = min((t for t in (next_due_us, *(c.circuit_probe_time_us for c in held)) if t is not None),
                          default=None)
    return _Due(config_row_ids, probes, cancel, next_due_us, tuple(c.id for c in held))


def _load_batch_of(ctx: ServiceContext, session: Session, lease: Lease, now_us: int,
                   unsendable: dict[int, Unsendable]) -> Batch | None:
    config = session.execute(select(PostbackConfig).where(PostbackConfig.id == lease.config_row_id)).scalar_one_or_none()
    target = _target(ctx, config, len(lease.rows)) if config is not None else None
    if target is None:
        return None
    batch = _load_batch(session, target, lease.rows, now_us, unsendable, held=lease.probe,
                        lease_rendered=lease.rendered)
    return batch if batch.deliveries else None


def _take_leases(ctx: ServiceContext, session: Session, owner_id: str, cancel: dict[str, list[int]],
                 shares: dict[int, int], probes: dict[int, int], now_us: int, lease_until_us: int,
                 batch_size: int) -> list[Lease]:
    for reason, inactive_ids in cancel.items():
        # Re-checked under the lock: a config enabled again since the snapshot keeps its postbacks.
        still_inactive = select(PostbackConfig.id).where(PostbackConfig.id.in_(inactive_ids),
                                                         not_(PostbackConfig.enabled))
        inactive_due = select(Delivery.id).where(Delivery.config_row_id.in_(still_inactive), _due(now_us))
        forget_rendered(session, session.execute(
            update(Delivery).where(Delivery.id.in_(_lockable(ctx, inactive_due)))
            .values(state=DeliveryState.CANCELLED.value, last_error=reason, **_clear_lease())
            .returning(Delivery.id).execution_options(synchronize_session=False)
        ).scalars().all())
    leased: list[Lease] = []
    for config_row_id, batches in shares.items():
        # Oldest first (ids follow creation): the rows come back from UPDATE ... RETURNING in no set order.
        rows = sorted(_lease(ctx, session, owner_id, config_row_id, now_us, lease_until_us, batch_size * batches),
                      key=lambda row: row.id)
        for start in range(0, len(rows), batch_size):
            batch = tuple(rows[start:start + batch_size])
            # PostgreSQL's lease statement also read their renderings: (id, attempt_count, first_attempt_time_us,
            # then _RENDERED's columns after the id).
            rendered = None if ctx.db.is_sqlite else {row[0]: row[:1] + row[3:] for row in batch if row[3] is not None}
            leased.append(Lease(config_row_id, batch, rendered=rendered))
    connection = session.connection()
    for config_row_id, probe_time_us in probes.items():
        # Compare and set: on PostgreSQL a dispatcher claiming the same probe waits for this row, then finds the
        # probe time moved and takes nothing.
        if not connection.execute(_CLAIM_PROBE, {"config": config_row_id, "now_us": now_us,
                                                 "until_us": lease_until_us}).rowcount:
            continue
        rows = list(connection.execute(_PROBE_ON_SQLITE if ctx.db.is_sqlite else _PROBE_SKIPPING_LOCKED, {
            "config": config_row_id, "now_us": now_us, "owner": owner_id, "until_us": lease_until_us}).all())
        if rows:
            leased.append(Lease(config_row_id, tuple(rows), probe=True))
        else:  # every held postback is leased (to batches sent before the circuit opened): probe when they are back
            connection.execute(_UNCLAIM_PROBE, {"config": config_row_id, "probe_time_us": probe_time_us})
    return leased


def _lockable(ctx: ServiceContext, query):  # type: ignore[no-untyped-def]
    """Rows another replica is claiming right now are skipped, not waited for (PostgreSQL)."""
    return query if ctx.db.is_sqlite else query.with_for_update(skip_locked=True)


def _lease(ctx: ServiceContext, session: Session, owner_id: str, config_row_id: int, now_us: int,
           lease_until_us: int, batch_size: int) -> list[Row[Any]]:
    """Leases a config's oldest due deliveries: (id, attempt_count, first_attempt_time_us) of each."""
    return list(session.connection().execute(_LEASE_ON_SQLITE if ctx.db.is_sqlite else _LEASE_READING_RENDERED, {
        "config": config_row_id, "now_us": now_us, "batch_size": batch_size, "owner": owner_id,
        "until_us": lease_until_us}).all())


def _lease_statement(*, skip_locked: bool, probe: bool = False, read_rendered: bool = False):  # type: ignore[no-untyped-def]
    """The lease of a config's oldest due deliveries. On PostgreSQL the ids are picked as an array: an IN on the
    subquery was planned as a hash join over a scan of the whole outbox (docs/performance.md). read_rendered adds
    each one's rendering, saving the batch's load a statement."""
    table, config = Delivery.__table__, PostbackConfig.__table__
    now_us = bindparam("now_us", type_=BigInteger)
    if probe:
        # Held postbacks are due or backing off alike; the oldest goes, so one postback keeps probing.
        candidates = select(table.c.id).where(table.c.config_row_id == bindparam("config"), table.c.state == PENDING,
                                              _lease_free(now_us)).limit(1)
    else:
        # Re-checked under the write lock: a circuit another dispatcher opened since the snapshot holds them.
        candidates = select(table.c.id).where(
            table.c.config_row_id == bindparam("config"), _due(now_us),
            select(config.c.circuit_cause).where(config.c.id == bindparam("config")).scalar_subquery().is_(None),
        ).limit(bindparam("batch_size", type_=Integer))
    candidates = candidates.order_by(table.c.next_attempt_time_us, table.c.id)
    picked = table.c.id.in_(candidates)
    if skip_locked:  # as _lockable does
        picked = table.c.id == any_(func.array(candidates.with_for_update(skip_locked=True).scalar_subquery()))
    lease = table.update().where(picked).values(
        lease_owner=bindparam("owner"), lease_expire_time_us=bindparam("until_us")
    ).returning(table.c.id, table.c.attempt_count, table.c.first_attempt_time_us)
    if not read_rendered:
        return lease
    leased, rendered = lease.cte("leased"), RenderedPostback.__table__
    return select(leased, *(rendered.c[name] for name in ("dedup_id", "event_type", "event_time_us", "body"))).select_from(
        leased.outerjoin(rendered, rendered.c.delivery_id == leased.c.id))


# Built once, with every value a parameter, and run on the session's connection: building and caching such a
# statement per claim, and the ORM's handling of its rows, cost the writer about as much as SQLite took to run it.
_LEASE_ON_SQLITE = _lease_statement(skip_locked=False)
_LEASE_READING_RENDERED = _lease_statement(skip_locked=True, read_rendered=True)
_PROBE_ON_SQLITE = _lease_statement(skip_locked=False, probe=True)
_PROBE_SKIPPING_LOCKED = _lease_statement(skip_locked=True, probe=True)


def _probe_claims():  # type: ignore[no-untyped-def]
    """Taking an open circuit's due probe (its probe time moves to the probe lease's end, so a prober that dies
    leaves the next probe to whoever comes then), and giving it back when there was no postback to probe with."""
    config = PostbackConfig.__table__
    claim = config.update().where(
        config.c.id == bindparam("config"), config.c.circuit_cause.is_not(None),
        config.c.circuit_probe_time_us <= bindparam("now_us", type_=BigInteger),
    ).values(circuit_probing=True, circuit_probe_time_us=bindparam("until_us", type_=BigInteger))
    unclaim = config.update().where(config.c.id == bindparam("config")).values(
        circuit_probing=False, circuit_probe_time_us=bindparam("probe_time_us", type_=BigInteger))
    return claim, unclaim


_CLAIM_PROBE, _UNCLAIM_PROBE = _probe_claims()


def _target(ctx: ServiceContext, config: PostbackConfig, leased: int) -> Target | None:
    try:
        token = ctx.secrets.open(config.access_token_sealed, context=sealing_context(config.game_id, config.config_id))
    except (ValueError, InvalidTag):
        # A key missing from --secret-keys: keep the lease so this is retried (and logged) once per lease period.
        log.error("cannot decrypt the credentials of games/%s/postbackConfigs/%s: is its secret key configured? "
                  "%d postbacks wait", config.game_id, config.config_id, leased)
        return None
    return Target(config.id, config.game_id, config.config_id, config.display_name, Network(config.network),
                  NetworkCredentials(access_token=token, pixel_id=config.pixel_id), config.credentials_update_time_us)


def _load_batch(session: Session, target: Target, leased: Sequence[Row[Any]], now_us: int,
                unsendable: dict[int, Unsendable], *, held: bool = False,
                lease_rendered: dict[int, tuple[Any, ...]] | None = None) -> Batch:
    """The leased deliveries as postbacks: their events as rendered when the conversions were decided, or rendered
    now from the conversions and their attributed clicks for those kept without (see RenderedPostback). Those the
    network would refuse whatever happens go into `unsendable` instead, with the reason."""
    connection = session.connection()
    delivery_ids = [row.id for row in leased]
    if lease_rendered is None:
        rendered = {row[0]: row for row in connection.execute(_RENDERED, {"delivery_ids": delivery_ids}).all()}
    else:
        rendered = dict(lease_rendered)
    if missing := [delivery_id for delivery_id in delivery_ids if delivery_id not in rendered]:
        for delivery_id, *columns in connection.execute(_LEASED_POSTBACKS, {"delivery_ids": missing}).all():
            event = postback_event(*columns)
            body = render_sendable(target.network, event)
            if body is None:
                unsendable[delivery_id] = (NO_MATCH_KEY, FailureReason.PAYLOAD)
            else:
                rendered[delivery_id] = _rendering(delivery_id, event, body)
    claimed: list[ClaimedDelivery] = []
    network = target.network
    for delivery_id, attempt_count, first_attempt_us, *_ in leased:
        row = rendered.get(delivery_id)
        if row is None:
            continue  # erased since it was leased, or unsendable
        _, dedup_id, event_type, event_time_us, body = row
        if past_network_window(network, now_us, first_attempt_us, event_time_us):
            unsendable[delivery_id] = (give_up_reason(network), FailureReason.WINDOW_CLOSED_WHILE_HELD if held
                                       else FailureReason.RETRY_WINDOW_CLOSED)
        else:
            claimed.append(ClaimedDelivery(delivery_id, dedup_id, _EVENT_TYPES[event_type], event_time_us, body,
                                           attempt_count + 1, first_attempt_us))
    return Batch(target, tuple(claimed))


def render_pending(session: Session, event_row_ids: Sequence[int]) -> None:
    """Renders the pending postbacks of these conversions for their networks, once, as the dispatcher will send
    them (see RenderedPostback), reading the conversions and their clicks back; those a network would refuse
    whatever happens are left for it to fail."""
    render_postbacks(session, [
        (delivery_id, _NETWORKS[network], postback_event(*columns))
        for delivery_id, network, *columns in session.connection().execute(
            _PENDING_POSTBACKS_OF, {"event_row_ids": event_row_ids}).all()])


def render_postbacks(session: Session, postbacks: Iterable[tuple[int, Network, PostbackEvent]]) -> None:
    """Renders these pending postbacks (delivery id, network, event as postback_event builds it) as the dispatcher
    will send them; ingest builds the events from the rows it has just written instead of reading them back."""
    rows = [(delivery_id, *rendering) for delivery_id, network, event in postbacks
            if (rendering := render_postback(network, event)) is not None]
    if rows:
        insert_rows(session, RenderedPostback.__table__, _RENDERED_COLUMNS, rows)


def render_postback(network: Network, event: PostbackEvent) -> tuple[str, str, int, bytes] | None:
    """A RenderedPostback row's values after its delivery id; None for one the network would refuse whatever
    happens (left for the dispatcher to fail)."""
    body = render_sendable(network, event)
    return None if body is None else (event.dedup_id, event.event_type.value, event.event_time_us, body)


def _rendering(delivery_id: int, event: PostbackEvent, body: bytes) -> tuple[int, str, str, int, bytes]:
    """A RenderedPostback row, in _RENDERED_COLUMNS order."""
    return delivery_id, event.dedup_id, event.event_type.value, event.event_time_us, body


def forget_rendered(session: Session, delivery_ids: Sequence[int]) -> None:
    """Drops the rendered events of postbacks that are no longer pending (or whose rendering may no longer hold)."""
    if delivery_ids:
        session.execute(_FORGET_RENDERED, {"delivery_ids": delivery_ids})


async def _fail_unsendable(ctx: ServiceContext, owner_id: str, reasons: dict[int, Unsendable]) -> None:
    def fail(session: Session) -> None:
        for delivery_id, (reason, category) in reasons.items():
            session.execute(
                update(Delivery).where(Delivery.id == delivery_id, Delivery.lease_owner == owner_id)
                .values(state=DeliveryState.FAILED.value, last_error=reason, failure_reason=category.value,
                        **_clear_lease())
                .execution_options(synchronize_session=False))
        forget_rendered(session, list(reasons))

    await ctx.db.write(fail)


_CLICKS = Event.__table__.alias("click")
_DELIVERY_EVENTS = Delivery.__table__.join(Event.__table__, Event.__table__.c.id == Delivery.__table__.c.event_row_id) \
    .outerjoin(_CLICKS, and_(_CLICKS.c.game_id == Event.__table__.c.game_id,
                             _CLICKS.c.event_id == Event.__table__.c.attributed_click_event_id,
                             _CLICKS.c.kind == EventKind.AD_CLICK.value))
# What a postback carries, in postback_event's argument order: the conversion's columns, then its click's.
_POSTBACK_COLUMNS = (
    *(Event.__table__.c[name] for name in ("event_id", "kind", "event_time_us", "user_id", "email_sha256",
                                           "email_sha256_reddit", "ip_address", "user_agent", "value_micros",
                                           "currency")),
    *(_CLICKS.c[name] for name in ("click_id", "ip_address", "user_agent", "landing_url")),
)
_EVENT_TYPES = {t.value: t for t in EventType}
_NETWORKS = {n.value: n for n in Network}
# Built once on the tables' columns and run on the session's connection: the session's own execute takes a statement
# through the ORM's handling, which added about 1.3 ms to a 1,000-postback read whose join takes SQLite about 3 ms.
_LEASED_POSTBACKS = select(Delivery.__table__.c.id, *_POSTBACK_COLUMNS).select_from(_DELIVERY_EVENTS).where(
    in_parameter(Delivery.__table__.c.id, "delivery_ids"))
_PENDING_POSTBACKS_OF = select(Delivery.__table__.c.id, PostbackConfig.__table__.c.network, *_POSTBACK_COLUMNS) \
    .select_from(_DELIVERY_EVENTS.join(PostbackConfig.__table__,
                                       PostbackConfig.__table__.c.id == Delivery.__table__.c.config_row_id)) \
    .where(in_parameter(Delivery.__table__.c.event_row_id, "event_row_ids"), Delivery.__table__.c.state == PENDING)
_RENDERED_COLUMNS = ("delivery_id", "dedup_id", "event_type", "event_time_us", "body")
_RENDERED = select(*(RenderedPostback.__table__.c[name] for name in _RENDERED_COLUMNS)).where(
    in_parameter(RenderedPostback.__table__.c.delivery_id, "delivery_ids"))
_FORGET_RENDERED = RenderedPostback.__table__.delete().where(
    in_parameter(RenderedPostback.__table__.c.delivery_id, "delivery_ids"))


def postback_event(event_id: str, kind: str, event_time_us: int, user_id: str | None, email_sha256: str | None,
                   email_sha256_reddit: str | None, ip_address: str | None, user_agent: str | None,
                   value_micros: int | None, currency: str | None, click_id: str | None, click_ip_address: str | None,
                   click_user_agent: str | None, landing_url: str | None) -> PostbackEvent:
    """The conversion as the adapters see it: its own match keys, falling back to its attributed click's."""
    # Positional, in the field order (dedup_id, event_type, event_time_us, click_id, user_id, email_sha256_tiktok,
    # email_sha256_reddit, ip_address, user_agent, landing_url, value_micros, currency): one per postback sent.
    return PostbackEvent(event_id, _EVENT_TYPES[kind], event_time_us, click_id, user_id, email_sha256,
                         email_sha256_reddit, ip_address or click_ip_address, user_agent or click_user_agent,
                         landing_url, value_micros, currency)


async def extend_leases(ctx: ServiceContext, owner_id: str, delivery_ids: Sequence[int], seconds: float) -> None:
    """Keeps deliveries reserved while a long send (a split batch) is still running."""
    until_us = ctx.clock() + round(seconds * US_PER_S)
    await ctx.db.write(lambda session: session.execute(
        update(Delivery).where(Delivery.id.in_(delivery_ids), Delivery.lease_owner == owner_id)
        .values(lease_expire_time_us=until_us).execution_options(synchronize_session=False)
    ))


async def release_leases(ctx: ServiceContext, owner_id: str, delivery_ids: Sequence[int]) -> None:
    """Hands back this dispatcher's leases on these deliveries, for another dispatcher to take now. Holding the
    lease means pending: every other state clears it."""
    await ctx.db.write(lambda session: session.execute(
        update(Delivery).where(in_values(Delivery.id, delivery_ids), Delivery.lease_owner == owner_id)
        .values(**_clear_lease()).execution_options(synchronize_session=False)
    ))
    ctx.outbox_changed()  # due again now, for the dispatchers of other processes


def describe(c: Classification) -> str:
    """The network's answer in one line, for last_error: 'HTTP 200, code 40105: Access token is incorrect'."""
    status = f"HTTP {c.http_status}" if c.http_status else "no HTTP reply"
    code = f", code {c.network_code}" if c.network_code else ""
    return f"{status}{code}: {c.message}" if c.message else status + code


async def record_attempts(ctx: ServiceContext, owner_id: str, target: Target, attempts: Sequence[Attempt], *,
                          probe: bool = False) -> None:
    """Appends one delivery-log row per attempt, moves each delivery to its next state and updates the config's
    health and circuit, in one transaction. A delivery erased meanwhile is skipped; one whose lease was lost (it
    expired and another dispatcher took over, or the config was deleted) keeps the state the other party gave it.

    A credential refusal holds its postbacks (pending, not failed) and opens the config's circuit; a probe's answer
    may close it again. The common case, a batch that succeeded, reads nothing of the circuit: its strain is eased
    by the health update that runs anyway."""
    if not probe and _settled_alike(attempts):
        await _record_alike(ctx, owner_id, target, attempts)
        return
    policy = retry_policy(ctx.settings)
    per_delivery: dict[int, list[Attempt]] = {}
    for attempt in attempts:
        per_delivery.setdefault(attempt.delivery.delivery_id, []).append(attempt)
    log_rows, change = await ctx.db.write(lambda session: _settle_all(ctx, session, policy, owner_id, target,
                                                                      per_delivery, attempts, probe))
    if log_rows:
        ctx.delivery_logs_written()
    for (network, status), count in Counter((str(row["network"]), str(row["status"])) for row in log_rows).items():
        ctx.metrics.count_attempts(network, status, count)
    if change is not None:
        _log_circuit_change(target, *change)


def _log_circuit_change(target: Target, before: Circuit, after: Circuit) -> None:
    if after.cause is None:
        log.warning("%s: circuit closed after a successful probe; its held postbacks go out now", target.name)
    elif after.cause is not before.cause:
        log.warning("%s: circuit open (%s): its postbacks are held until a probe succeeds%s", target.name,
                    after.cause.value, " or the credentials are rotated" if after.cause is CircuitCause.CREDENTIALS
                    else "")
    elif after.failed_probes > before.failed_probes:
        log.info("%s: probe failed (%d so far); circuit still open (%s)", target.name, after.failed_probes,
                 after.cause.value)


def _settle_all(ctx: ServiceContext, session: Session, policy: RetryPolicy, owner_id: str, target: Target,
                per_delivery: dict[int, list[Attempt]], attempts: Sequence[Attempt],
                probe: bool) -> tuple[list[dict[str, object]], tuple[Circuit, Circuit] | None]:
    requests = _requests(attempts)
    # Read under lock (PostgreSQL) before the postbacks' rows: records of two batches of one config take turns.
    circuit, credentials_replaced = None, False
    if probe or any(c.outcome is not Outcome.SUCCESS for c in requests):
        row = session.execute(_lockable_rows(ctx, select(*CIRCUIT_COLUMNS, PostbackConfig.credentials_update_time_us)
                                             .where(PostbackConfig.id == target.row_id))).one_or_none()
        if row is not None:
            circuit = circuit_of(row)
            credentials_replaced = row.credentials_update_time_us != target.credentials_update_time_us
    after = circuit
    if circuit is not None:
        # A refusal of credentials replaced since the request went says nothing of the new ones.
        outcomes = [c.outcome for c in requests
                    if not (credentials_replaced and c.outcome is Outcome.FAILED_CREDENTIALS)]
        retry_after_s = max((c.retry_after_s for c in requests if c.retry_after_s is not None), default=None)
        breaker, now_us = breaker_policy(ctx.settings), ctx.clock()
        if probe:
            after = after_probe(breaker, circuit, outcomes[-1], now_us, retry_after_s) if outcomes else circuit
        else:
            after = after_requests(breaker, circuit, outcomes, now_us, retry_after_s)
    hold = _Hold(after.cause if after else None, after.probe_time_us if after and after.cause else None, probe)
    rows = {row.id: row for row in session.execute(_lockable_rows(ctx, select(
        Delivery.id, Delivery.state, Delivery.lease_owner, Delivery.first_attempt_time_us, Delivery.next_attempt_time_us,
    ).where(Delivery.id.in_(per_delivery))))}
    log_rows: list[dict[str, object]] = []
    changes: list[dict[str, object]] = []
    for delivery_id, its_attempts in per_delivery.items():
        row = rows.get(delivery_id)
        if row is None:
            log.info("postback %d of %s was erased while in flight; its outcome is not recorded",
                     delivery_id, target.name)
            continue
        change, its_log_rows = _settle(ctx, policy, owner_id, target, row, its_attempts, hold)
        log_rows += its_log_rows
        if change:
            changes.append(change)
    if changes:
        table = Delivery.__table__
        session.execute(
            table.update().where(table.c.id == bindparam("delivery_id"))
            .values({column: bindparam(column) for column in changes[0] if column != "delivery_id"}),
            changes)
        forget_rendered(session, [c["delivery_id"] for c in changes if c["state"] != DeliveryState.PENDING.value])
    if log_rows:
        session.execute(DeliveryLog.__table__.insert(), log_rows)
    if circuit is not None and after is not None and after != circuit:
        set_circuit(session, target.row_id, after)
        if circuit.cause is not None and after.cause is None:
            release_held(session, target.row_id, ctx.clock())
    _update_health(session, target, attempts, ease_strain=circuit is None,
                   credentials_refused=not credentials_replaced)
    changed = circuit is not None and after is not None and (after.cause, after.failed_probes) != (
        circuit.cause, circuit.failed_probes)
    return log_rows, (circuit, after) if changed else None  # type: ignore[return-value]


def _requests(attempts: Sequence[Attempt]) -> list[Classification]:
    """Each request's answer once, in order: the attempts of one request share its classification."""
    return list({id(a.classification): a.classification for a in attempts}.values())


def _settled_alike(attempts: Sequence[Attempt]) -> bool:
    """One request's final answer for every delivery in it (a success or a refused payload): the common case,
    recorded with a few set-based statements instead of a row of Python work per delivery."""
    first = attempts[0]
    return (first.classification.outcome in _SETTLED_ALIKE
            and all(a.classification is first.classification and not a.resent_singly for a in attempts)
            and len({a.delivery.delivery_id for a in attempts}) == len(attempts))


_SETTLED_ALIKE = frozenset({Outcome.SUCCESS, Outcome.FAILED_PAYLOAD})


async def _record_alike(ctx: ServiceContext, owner_id: str, target: Target, attempts: Sequence[Attempt]) -> None:
    first = attempts[0]
    c, attempt_time_us = first.classification, first.attempt_time_us
    status = c.outcome.attempt_status
    state, last_error, reason = ((DeliveryState.SUCCEEDED, None, None) if status is AttemptStatus.SUCCESS
                                 else (DeliveryState.FAILED, describe(c), FailureReason.PAYLOAD.value))
    ids = [a.delivery.delivery_id for a in attempts]
    logged_values = {f"log_{name}": value for name, value in (
        ("game_id", target.game_id), ("config_row_id", target.row_id), ("config_id", target.config_id),
        ("config_display_name", target.display_name), ("network", target.network.value),
        ("attempt_time_us", attempt_time_us), ("status", status.value), ("http_status", c.http_status or 0),
        ("latency_ms", first.latency_ms), ("network_code", c.network_code), ("network_message", c.message),
        ("network_request_id", c.request_id))}
    if not ctx.db.is_sqlite:
        await _record_alike_in_one_statement(ctx, owner_id, target, attempts, logged_values, {
            "delivery_ids": ids, "owner": owner_id, "new_state": state.value, "error": last_error,
            "failure_reason": reason, "attempt_time_us": attempt_time_us})
        return
    # Each attempt carries the number it was claimed with: one whose lease was lost may find the row's count moved
    # on by the dispatcher that took over.
    ids_by_number: dict[int, list[int]] = {}
    for attempt in attempts:
        ids_by_number.setdefault(attempt.delivery.attempt_number, []).append(attempt.delivery.delivery_id)

    def settle(session: Session) -> tuple[int, int]:
        connection = session.connection()
        # A delivery erased while in flight has no row left to join, so its attempt is not logged.
        logged = sum(connection.execute(_LOG_ALIKE, {**logged_values, "log_attempt_number": number,
                                                     "delivery_ids": numbered}).rowcount
                     for number, numbered in sorted(ids_by_number.items()))
        settled = connection.execute(_SETTLE_ALIKE, {
            "delivery_ids": ids, "owner": owner_id, "new_state": state.value, "error": last_error,
            "failure_reason": reason, "attempt_time_us": attempt_time_us}).rowcount
        # Settled, or (lease lost) rendered again by the dispatcher that holds it.
        forget_rendered(session, ids)
        _update_health(session, target, attempts[:1], ease_strain=True, credentials_refused=False)
        return logged, settled

    logged, settled = await ctx.db.write(settle)
    _recorded_alike(ctx, target, status, len(ids), logged, settled)


def _recorded_alike(ctx: ServiceContext, target: Target, status: AttemptStatus, sent: int, logged: int,
                    settled: int) -> None:
    if settled < sent:
        log.warning("%d of %d postbacks of %s were erased, or their lease lost, while sending; their attempts are "
                    "logged where they still exist, their state left as it is", sent - settled, sent, target.name)
    if logged:
        ctx.delivery_logs_written()
        ctx.metrics.count_attempts(target.network.value, status.value, logged)


async def _record_alike_in_one_statement(ctx: ServiceContext, owner_id: str, target: Target,
                                         attempts: Sequence[Attempt], logged_values: dict[str, Any],
                                         settled_values: dict[str, Any]) -> None:
    """_record_alike on PostgreSQL: the log rows, the deliveries' states, their renderings dropped and the
    config's health, as one statement (see _RECORD_ALIKE) in a transaction of its own."""
    status = attempts[0].classification.outcome.attempt_status
    success = status is AttemptStatus.SUCCESS
    values = {**logged_values, **settled_values, "config": target.row_id,
              "attempt_numbers": [a.delivery.attempt_number for a in attempts],
              "dedup_ids": [a.delivery.dedup_id for a in attempts],
              "event_types": [a.delivery.event_type.value for a in attempts],
              "relief": BreakerPolicy.relief_per_success}

    def record(session: Session) -> tuple[int, int]:
        logged, settled = session.connection().execute(_RECORD_SUCCESS if success else _RECORD_FAILURE,
                                                       values).one()
        return logged, settled

    logged, settled = await ctx.db.write(record)
    _recorded_alike(ctx, target, status, len(attempts), logged, settled)


def _record_alike_statement(*, success: bool):  # type: ignore[no-untyped-def]
    """One round trip for a batch's record on PostgreSQL, where each statement of the several SQLite runs cost a
    round trip through the driver and the pool. The log rows take the conversions' ids and types from the batch
    (no join to events); the join to deliveries skips one erased in flight. Every part sees the snapshot taken
    before any of them, so the log rows are read from the deliveries as they were before the update."""
    health = """,
        health AS (
            UPDATE postback_configs SET last_success_time_us = :attempt_time_us,
                circuit_strain = CASE WHEN circuit_strain > :relief THEN circuit_strain - :relief ELSE 0 END
            WHERE id = :config AND (last_success_time_us IS NULL OR last_success_time_us < :attempt_time_us))"""
    statement = text(f"""
        WITH attempted AS (
            SELECT * FROM unnest(CAST(:delivery_ids AS BIGINT[]), CAST(:attempt_numbers AS INTEGER[]),
                                 CAST(:dedup_ids AS VARCHAR[]), CAST(:event_types AS VARCHAR[]))
                AS a(delivery_id, attempt_number, dedup_id, event_type)),
        logged AS (
            INSERT INTO delivery_logs (game_id, config_row_id, config_id, config_display_name, network,
                attempt_time_us, status, http_status, latency_ms, attempt_number, network_code, network_message,
                network_request_id, event_type, conversion_event_id, next_attempt_time_us)
            SELECT :log_game_id, :log_config_row_id, :log_config_id, :log_config_display_name, :log_network,
                :log_attempt_time_us, :log_status, :log_http_status, :log_latency_ms, attempted.attempt_number,
                :log_network_code, :log_network_message, :log_network_request_id, attempted.event_type,
                attempted.dedup_id, NULL
            FROM attempted JOIN deliveries ON deliveries.id = attempted.delivery_id
            ORDER BY attempted.delivery_id
            RETURNING 1),
        settled AS (
            UPDATE deliveries SET state = :new_state, last_error = :error, failure_reason = :failure_reason,
                attempt_count = attempt_count + 1,
                first_attempt_time_us = coalesce(first_attempt_time_us, :attempt_time_us),
                last_attempt_time_us = :attempt_time_us, next_attempt_time_us = :attempt_time_us,
                lease_owner = NULL, lease_expire_time_us = NULL
            WHERE id = ANY(CAST(:delivery_ids AS BIGINT[])) AND lease_owner = :owner
            RETURNING 1),
        forgotten AS (
            DELETE FROM rendered_postbacks WHERE delivery_id = ANY(CAST(:delivery_ids AS BIGINT[])))
        {health if success else ""}
        SELECT (SELECT count(*) FROM logged), (SELECT count(*) FROM settled)""")
    types = {"log_config_row_id": BigInteger, "log_attempt_time_us": BigInteger, "log_http_status": Integer,
             "log_latency_ms": Integer, "attempt_time_us": BigInteger, "error": Text, "failure_reason": String,
             "log_network_code": String, "log_network_message": String, "log_network_request_id": String,
             **({"config": BigInteger, "relief": Integer} if success else {})}
    return statement.bindparams(*(bindparam(name, type_=kind()) for name, kind in types.items()))


_RECORD_SUCCESS = _record_alike_statement(success=True)
_RECORD_FAILURE = _record_alike_statement(success=False)


def _alike_statements():  # type: ignore[no-untyped-def]
    """The log insert and the state update of _record_alike, with every value a parameter (see _LEASE_ON_SQLITE)."""
    deliveries, conversions = Delivery.__table__.c, Event.__table__.c
    typed = {"config_row_id": BigInteger, "attempt_time_us": BigInteger, "http_status": Integer,
             "latency_ms": Integer, "attempt_number": Integer}
    # Parameters are named apart from the columns: an insert reserves its columns' names for its own.
    values: dict[str, Any] = {name: bindparam(f"log_{name}", type_=typed.get(name, String)) for name in (
        "game_id", "config_row_id", "config_id", "config_display_name", "network", "attempt_time_us", "status",
        "http_status", "latency_ms", "attempt_number", "network_code", "network_message", "network_request_id")}
    # A conversion's kind is spelled as its event type.
    values |= {"event_type": conversions.kind, "conversion_event_id": conversions.event_id,
               "next_attempt_time_us": literal(None, BigInteger)}
    log = DeliveryLog.__table__.insert().from_select(list(values), select(*values.values()).select_from(
        Delivery.__table__.join(Event.__table__, conversions.id == deliveries.event_row_id)
    ).where(in_parameter(deliveries.id, "delivery_ids")).order_by(deliveries.id))
    attempt_time_us = bindparam("attempt_time_us", type_=BigInteger)
    # Holding the lease means pending (every other state clears it); a state condition here would also tempt SQLite
    # to walk the state index instead of looking the ids up.
    settle = Delivery.__table__.update().where(
        in_parameter(deliveries.id, "delivery_ids"), deliveries.lease_owner == bindparam("owner")
    ).values(state=bindparam("new_state"), last_error=bindparam("error", type_=Text),
             failure_reason=bindparam("failure_reason", type_=String),
             attempt_count=deliveries.attempt_count + 1,
             first_attempt_time_us=func.coalesce(deliveries.first_attempt_time_us, attempt_time_us),
             last_attempt_time_us=attempt_time_us, next_attempt_time_us=attempt_time_us, **_clear_lease())
    return log, settle


_LOG_ALIKE, _SETTLE_ALIKE = _alike_statements()


def _lockable_rows(ctx: ServiceContext, query):  # type: ignore[no-untyped-def]
    return query if ctx.db.is_sqlite else query.with_for_update()


class _Hold(NamedTuple):
    """What the config's circuit says about this batch's postbacks, once its answers are counted."""

    cause: CircuitCause | None  # open for this: postbacks not delivered are held
    probe_time_us: int | None  # when they may next be tried: the next probe
    probe: bool  # the batch was the circuit's probe


def _settle(ctx: ServiceContext, policy: RetryPolicy, owner_id: str, target: Target, row: Row[Any],
            attempts: list[Attempt], hold: _Hold) -> tuple[dict[str, object] | None, list[dict[str, object]]]:
    """The delivery's next state after these attempts (the last one decides), as column values, or None when
    another party holds it now; and the attempts' log rows. A credential refusal holds the postback instead of
    failing it; so does a probe's transient failure, inside the postback's window."""
    first = attempts[0]
    delivery = first.delivery
    last = attempts[-1]
    c = last.classification
    status = c.outcome.attempt_status
    next_attempt_us: int | None = None
    give_up: str | None = None
    reason: FailureReason | None = None
    held = False
    final_number = delivery.attempt_number + len(attempts) - 1
    first_attempt_us = row.first_attempt_time_us or delivery.first_attempt_time_us or first.attempt_time_us
    if c.outcome is Outcome.FAILED_CREDENTIALS:
        # Held by the open circuit, and still as due as it was: the next probe takes the config's pending postback
        # due first, so the same postbacks (those already tried) probe again, starting no other's TikTok window.
        status, next_attempt_us, held = AttemptStatus.RETRIED, row.next_attempt_time_us, True
    elif status is AttemptStatus.RETRIED:
        decision = decide_retry(policy, target.network, final_number, ctx.clock(), first_attempt_us,
                                delivery.event_time_us, c.retry_after_s, random.random())
        next_attempt_us, give_up = decision.next_attempt_us, decision.give_up_reason
        if give_up:
            status = AttemptStatus.FAILED
            reason = FailureReason.WINDOW_CLOSED_WHILE_HELD if hold.probe else FailureReason.RETRY_WINDOW_CLOSED
        elif hold.probe:
            next_attempt_us, held = row.next_attempt_time_us, True  # as above: it probes again next time
    elif status is AttemptStatus.FAILED:
        reason = FailureReason.PAYLOAD
    change: dict[str, object] | None = None
    if row.lease_owner == owner_id and row.state == DeliveryState.PENDING.value:
        if status is AttemptStatus.SUCCESS:
            state, last_error = DeliveryState.SUCCEEDED, None
        elif status is AttemptStatus.RETRIED:
            state, last_error = DeliveryState.PENDING, describe(c)
        else:
            state = DeliveryState.FAILED
            last_error = f"{give_up} (last reply: {describe(c)})" if give_up else describe(c)
        change = {
            "delivery_id": row.id,
            "state": state.value,
            "last_error": last_error,
            "failure_reason": reason.value if reason else None,
            "attempt_count": final_number,
            "first_attempt_time_us": first_attempt_us,
            "last_attempt_time_us": last.attempt_time_us,
            # Only a pending delivery is ever due; for the others this keeps when it stopped being due.
            "next_attempt_time_us": next_attempt_us or last.attempt_time_us,
            "lease_owner": None,
            "lease_expire_time_us": None,
        }
    else:
        log.warning("lost the lease on postback %d of %s while sending; logging the attempt, leaving its state",
                    row.id, target.name)
    if held and hold.probe_time_us is not None:
        next_attempt_us = hold.probe_time_us  # as the log tells it: held until the circuit's next probe
    log_rows = []
    for index, attempt in enumerate(attempts):
        is_last = index == len(attempts) - 1
        a = attempt.classification
        message = a.message
        if attempt.resent_singly:
            message = f"the batch was refused, resending each event on its own: {a.message}"
        elif is_last and give_up:
            message = f"{give_up}: {a.message}"
        elif is_last and held and hold.cause is not None:
            message = f"{_HELD_MESSAGES[hold.cause]}: {a.message}"
        if hold.probe:
            message = f"probe: {message}"
        log_rows.append({
            "game_id": target.game_id,
            "config_row_id": target.row_id,
            "config_id": target.config_id,
            "config_display_name": target.display_name,
            "network": target.network.value,
            "attempt_time_us": attempt.attempt_time_us,
            "event_type": delivery.event_type.value,
            "status": status.value if is_last else AttemptStatus.RETRIED.value,
            "http_status": a.http_status or 0,
            "latency_ms": attempt.latency_ms,
            "attempt_number": delivery.attempt_number + index,
            "network_code": a.network_code,
            "network_message": message,
            "network_request_id": a.request_id,
            "conversion_event_id": delivery.dedup_id,
            "next_attempt_time_us": next_attempt_us if is_last else attempts[index + 1].attempt_time_us,
        })
    return change, log_rows


_HELD_MESSAGES = {CircuitCause.CREDENTIALS: "held until the credentials work again",
                  CircuitCause.TRANSIENT: "held until the network works again"}


def _update_health(session: Session, target: Target, attempts: Sequence[Attempt], *, ease_strain: bool,
                   credentials_refused: bool) -> None:
    """Health is derived from the newest success and the newest credential failure; only ever moved forward. The
    success update also eases the circuit's strain when the caller has not counted the batch into the circuit
    itself; a credential refusal counts only while the credentials it was sent with are still the config's."""
    connection = session.connection()
    successes = [a.attempt_time_us for a in attempts if a.classification.outcome is Outcome.SUCCESS]
    if successes:
        connection.execute(_SUCCESS_EASING_STRAIN if ease_strain else _SUCCESS,
                           {"config": target.row_id, "time_us": max(successes)})
    refusals = [a.attempt_time_us for a in attempts if a.classification.outcome is Outcome.FAILED_CREDENTIALS]
    if refusals and credentials_refused:
        connection.execute(_CREDENTIAL_FAILURE, {"config": target.row_id, "time_us": max(refusals),
                                                 "credentials_time_us": target.credentials_update_time_us})


def _health_updates():  # type: ignore[no-untyped-def]
    """Move a config's health times forward, built once (see _LEASE_ON_SQLITE): every batch recorded runs one."""
    table = PostbackConfig.__table__
    time_us = bindparam("time_us", type_=BigInteger)

    def moving_forward(column: Any) -> Any:
        return table.update().where(table.c.id == bindparam("config"), or_(column.is_(None), column < time_us)) \
            .values({column.key: time_us})

    success = moving_forward(table.c.last_success_time_us)
    relief = BreakerPolicy.relief_per_success
    strain = table.c.circuit_strain
    success_easing_strain = success.values(circuit_strain=case((strain > relief, strain - relief), else_=0))
    credential_failure = moving_forward(table.c.last_credential_failure_time_us).where(
        table.c.credentials_update_time_us == bindparam("credentials_time_us", type_=BigInteger))
    return success, success_easing_strain, credential_failure


_SUCCESS, _SUCCESS_EASING_STRAIN, _CREDENTIAL_FAILURE = _health_updates()


async def fail_held_past_window(ctx: ServiceContext, config_row_ids: Collection[int]) -> int:
    """Fails the postbacks that these configs' open circuits held until their networks' windows closed (the same
    horizon the retries keep), each with a delivery-log row saying so; returns how many."""
    now_us = ctx.clock()
    policy = retry_policy(ctx.settings)

    def fail(session: Session) -> list[dict[str, object]]:
        configs = session.execute(select(PostbackConfig).where(
            PostbackConfig.id.in_(list(config_row_ids)), PostbackConfig.circuit_cause.is_not(None))).scalars().all()
        log_rows: list[dict[str, object]] = []
        for config in configs:
            network = Network(config.network)
            closed_before = window_closed_before_us(policy, network, now_us)
            past = (Delivery.first_attempt_time_us < closed_before if network is Network.TIKTOK else
                    exists().where(Event.id == Delivery.event_row_id, Event.event_time_us < closed_before))
            error = f"{WINDOW_CLOSED_WHILE_HELD} ({give_up_reason(network)})"
            failed = session.execute(
                update(Delivery).where(Delivery.config_row_id == config.id, Delivery.state == PENDING,
                                       _lease_free(now_us), past)
                .values(state=DeliveryState.FAILED.value, last_error=error,
                        failure_reason=FailureReason.WINDOW_CLOSED_WHILE_HELD.value, **_clear_lease())
                .returning(Delivery.id, Delivery.event_row_id, Delivery.attempt_count)
                .execution_options(synchronize_session=False)).all()
            if not failed:
                continue
            forget_rendered(session, [f.id for f in failed])
            conversions = {row.id: row for row in session.execute(select(Event.id, Event.event_id, Event.kind).where(
                Event.id.in_([f.event_row_id for f in failed])))}
            log_rows += [{
                "game_id": config.game_id, "config_row_id": config.id, "config_id": config.config_id,
                "config_display_name": config.display_name, "network": network.value, "attempt_time_us": now_us,
                "event_type": conversions[f.event_row_id].kind, "status": AttemptStatus.FAILED.value,
                "http_status": 0, "latency_ms": 0, "attempt_number": f.attempt_count, "network_code": None,
                "network_message": error, "network_request_id": None,
                "conversion_event_id": conversions[f.event_row_id].event_id, "next_attempt_time_us": None,
            } for f in failed]
        if log_rows:
            session.execute(DeliveryLog.__table__.insert(), log_rows)
        return log_rows

    log_rows = await ctx.db.write(fail)
    if log_rows:
        ctx.delivery_logs_written()  # not attempts for the metrics: no request was made
        for (game_id, config_id), count in Counter((str(r["game_id"]), str(r["config_id"])) for r in log_rows).items():
            log.warning("games/%s/postbackConfigs/%s: %d held postbacks failed, %s", game_id, config_id, count,
                        WINDOW_CLOSED_WHILE_HELD)
    return len(log_rows)
