"""Postback config use cases: create and rotate (after the network accepts the credentials), read, update, delete."""

import secrets as random_ids
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import configs as rules
from server.core import page_tokens
from server.core.circuit import CLOSED, Circuit, CircuitCause, CircuitState
from server.core.postback import NetworkCredentials
from server.core.types import ConfigHealth, DeliveryState, EventType, Network
from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.secrets import token_hint
from server.services import circuits
from server.services.context import ServiceContext
from server.services.credentials import CredentialCheck, require_accepted
from server.store.models import PENDING, Delivery, PostbackConfig, RenderedPostback

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class NewConfig:
    display_name: str
    network: Network
    credentials: NetworkCredentials
    trigger_events: frozenset[EventType]
    enabled: bool


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """Only the fields named in the update mask are set."""

    display_name: str | None = None
    enabled: bool | None = None
    trigger_events: frozenset[EventType] | None = None


@dataclass(frozen=True, slots=True)
class CircuitView:
    """A config's circuit as callers see it: whether its postbacks are sent or held, why, and how many wait."""

    state: CircuitState
    cause: CircuitCause | None
    open_time_us: int | None
    next_probe_time_us: int | None  # open: when the next probe may go; probing: when the probe's lease ends
    failed_probes: int
    held_count: int
    oldest_held_create_time_us: int | None


@dataclass(frozen=True, slots=True)
class ConfigView:
    game_id: str
    config_id: str
    display_name: str
    network: Network
    access_token_hint: str
    pixel_id: str
    trigger_events: tuple[EventType, ...]
    enabled: bool
    health: ConfigHealth
    create_time_us: int
    update_time_us: int
    credentials_update_time_us: int
    circuit: CircuitView


def _view(row: PostbackConfig, now_us: int, held: dict[int, circuits.Held] | None = None,
          circuit: Circuit | None = None) -> ConfigView:
    """The config as callers see it; `held` counts what the open circuits among its rows hold (see _held)."""
    circuit = circuits.circuit_of(row) if circuit is None else circuit
    held_here = (held or {}).get(row.id, circuits.Held(0, None)) if circuit.cause else circuits.Held(0, None)
    return ConfigView(
        game_id=row.game_id,
        config_id=row.config_id,
        display_name=row.display_name,
        network=Network(row.network),
        access_token_hint=row.access_token_hint,
        pixel_id=row.pixel_id,
        trigger_events=tuple(EventType(t) for t in row.trigger_events.split(",")),
        enabled=row.enabled,
        health=rules.health(row.last_success_time_us, row.last_credential_failure_time_us,
                            row.credentials_update_time_us),
        create_time_us=row.create_time_us,
        update_time_us=row.update_time_us,
        credentials_update_time_us=row.credentials_update_time_us,
        circuit=CircuitView(circuit.state(now_us), circuit.cause, circuit.open_time_us,
                            circuit.probe_time_us if circuit.cause else None, circuit.failed_probes, *held_here),
    )


async def _held(session: AsyncSession, rows: Sequence[PostbackConfig]) -> dict[int, circuits.Held]:
    """What the open circuits among these configs hold."""
    open_ids = [row.id for row in rows if row.circuit_cause is not None]
    return await session.run_sync(circuits.held_postbacks, open_ids) if open_ids else {}


def _encode_events(events: frozenset[EventType]) -> str:
    return ",".join(sorted(e.value for e in events))


def sealing_context(game_id: str, config_id: str) -> str:
    return f"games/{game_id}/postbackConfigs/{config_id}"


async def _find(session: AsyncSession, game_id: str, config_id: str) -> PostbackConfig:
    row = await session.scalar(select(PostbackConfig).where(
        PostbackConfig.game_id == game_id, PostbackConfig.config_id == config_id,
        PostbackConfig.delete_time_us.is_(None)))
    if row is None:
        raise NotFound(f"postback config games/{game_id}/postbackConfigs/{config_id} not found",
                       reason="POSTBACK_CONFIG_NOT_FOUND")
    return row


async def _check(ctx: ServiceContext, network: Network, credentials: NetworkCredentials,
                 events: frozenset[EventType], test_code: str | None) -> CredentialCheck:
    # The synthetic event is one the config will really send, so the check exercises what production will.
    event_type = EventType.GAME_LAUNCH if EventType.GAME_LAUNCH in events else EventType.PURCHASE
    return await ctx.credential_checker.check(network, credentials, event_type, test_code)


async def create_config(ctx: ServiceContext, game_id: str, config_id: str | None, new: NewConfig,
                        test_code: str | None) -> ConfigView:
    config_id = config_id or random_ids.token_hex(6)
    async with ctx.db.snapshot() as session:
        if await session.scalar(select(PostbackConfig.id).where(
                PostbackConfig.game_id == game_id, PostbackConfig.config_id == config_id)):
            raise AlreadyExists(f"postback config games/{game_id}/postbackConfigs/{config_id} already exists "
                                "(ids of deleted configs are not reused)", reason="POSTBACK_CONFIG_EXISTS")
    # Talk to the network outside any transaction: a slow network must not hold a database lock.
    require_accepted(new.network, await _check(ctx, new.network, new.credentials, new.trigger_events, test_code))
    now_us = ctx.clock()
    row = PostbackConfig(
        game_id=game_id,
        config_id=config_id,
        display_name=new.display_name,
        network=new.network.value,
        pixel_id=new.credentials.pixel_id,
        access_token_sealed=ctx.secrets.seal(new.credentials.access_token, context=sealing_context(game_id, config_id)),
        access_token_hint=token_hint(new.credentials.access_token),
        trigger_events=_encode_events(new.trigger_events),
        enabled=new.enabled,
        create_time_us=now_us,
        update_time_us=now_us,
        credentials_update_time_us=now_us,
    )
    async with ctx.db.transaction() as session:
        if await session.scalar(select(PostbackConfig.id).where(
                PostbackConfig.game_id == game_id, PostbackConfig.config_id == config_id)):
            raise AlreadyExists(f"postback config games/{game_id}/postbackConfigs/{config_id} already exists",
                                reason="POSTBACK_CONFIG_EXISTS")
        session.add(row)
    return _view(row, now_us)


async def get_config(ctx: ServiceContext, game_id: str, config_id: str) -> ConfigView:
    async with ctx.db.snapshot() as session:
        row = await _find(session, game_id, config_id)
        return _view(row, ctx.clock(), await _held(session, [row]))


async def list_configs(ctx: ServiceContext, game_id: str, page_size: int, page_token: str) -> tuple[list[ConfigView], str]:
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query = page_tokens.query_digest("configs", game_id)
    after = 0
    if page_token:
        try:
            after = page_tokens.decode(page_token, query)
        except ValueError as e:
            raise InvalidArgument.single("page_token", str(e)) from None
    async with ctx.db.snapshot() as session:
        rows = (await session.execute(
            select(PostbackConfig)
            .where(PostbackConfig.game_id == game_id, PostbackConfig.delete_time_us.is_(None), PostbackConfig.id > after)
            .order_by(PostbackConfig.id).limit(size + 1)
        )).scalars().all()
        held = await _held(session, rows[:size])
    next_token = page_tokens.encode(rows[size - 1].id, query) if len(rows) > size else ""
    now_us = ctx.clock()
    return [_view(r, now_us, held) for r in rows[:size]], next_token


async def update_config(ctx: ServiceContext, game_id: str, config_id: str, changes: ConfigChanges) -> ConfigView:
    async with ctx.db.transaction() as session:
        row = await _find(session, game_id, config_id)
        if changes.display_name is not None:
            row.display_name = changes.display_name
        if changes.enabled is not None:
            row.enabled = changes.enabled
        if changes.trigger_events is not None:
            row.trigger_events = _encode_events(changes.trigger_events)
        row.update_time_us = ctx.clock()
        return _view(row, row.update_time_us, await _held(session, [row]))


async def delete_config(ctx: ServiceContext, game_id: str, config_id: str) -> int:
    """Soft-deletes (its delivery logs keep naming it) and cancels its postbacks not yet delivered."""
    now_us = ctx.clock()
    async with ctx.db.transaction() as session:
        row = await _find(session, game_id, config_id)
        row.delete_time_us = now_us
        row.enabled = False
        # Rendered events are kept for pending postbacks only (RenderedPostback).
        await session.execute(delete(RenderedPostback).where(RenderedPostback.delivery_id.in_(
            select(Delivery.id).where(Delivery.config_row_id == row.id, Delivery.state == PENDING))))
        cancelled = await session.execute(
            update(Delivery)
            .where(Delivery.config_row_id == row.id, Delivery.state == PENDING)
            .values(state=DeliveryState.CANCELLED.value, last_error="postback config deleted", lease_owner=None)
        )
        return cancelled.rowcount or 0


async def rotate_credentials(ctx: ServiceContext, game_id: str, config_id: str, access_token: str,
                             pixel_id: str | None, test_code: str | None) -> ConfigView:
    async with ctx.db.snapshot() as session:
        current = await _find(session, game_id, config_id)
    network = Network(current.network)
    if pixel_id and (problem := rules.pixel_id_problem(network, pixel_id)):
        raise InvalidArgument.single("credentials.pixel_id", problem)
    credentials = NetworkCredentials(access_token=access_token, pixel_id=pixel_id or current.pixel_id)
    events = frozenset(EventType(t) for t in current.trigger_events.split(","))
    require_accepted(network, await _check(ctx, network, credentials, events, test_code))
    async with ctx.db.transaction() as session:
        row = await _find(session, game_id, config_id)
        now_us = ctx.clock()
        row.pixel_id = credentials.pixel_id
        row.access_token_sealed = ctx.secrets.seal(access_token, context=sealing_context(game_id, config_id))
        row.access_token_hint = token_hint(access_token)
        row.credentials_update_time_us = now_us
        row.update_time_us = now_us
        circuit = None
        if row.circuit_cause is not None:
            # The network just accepted the new credentials: what the circuit held goes out now, oldest first.
            await session.run_sync(circuits.close, row.id, now_us)
            circuit = CLOSED
        view = _view(row, now_us, circuit=circuit)
    ctx.outbox_changed()
    return view


async def validate_credentials(ctx: ServiceContext, game_id: str, config_id: str | None,
                               network: Network | None, credentials: NetworkCredentials | None,
                               event_type: EventType | None, test_code: str | None) -> CredentialCheck:
    """Checks new credentials, or a saved config's (decrypted only for this call); saves nothing."""
    if config_id:
        async with ctx.db.snapshot() as session:
            row = await _find(session, game_id, config_id)
        network = Network(row.network)
        token = ctx.secrets.open(row.access_token_sealed, context=sealing_context(game_id, config_id))
        credentials = NetworkCredentials(access_token=token, pixel_id=row.pixel_id)
        if event_type is None:
            events = frozenset(EventType(t) for t in row.trigger_events.split(","))
            event_type = EventType.GAME_LAUNCH if EventType.GAME_LAUNCH in events else EventType.PURCHASE
    assert network is not None and credentials is not None
    return await ctx.credential_checker.check(network, credentials, event_type or EventType.GAME_LAUNCH, test_code)
