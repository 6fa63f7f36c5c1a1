"""A postback config's circuit as stored: read, written, and the postbacks it holds released or counted."""

from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Boolean, Integer, String, bindparam, func, select
from sqlalchemy.orm import Session

from server.core.circuit import CLOSED, BreakerPolicy, Circuit, CircuitCause
from server.settings import Settings
from server.store.models import PENDING, Delivery, PostbackConfig

CIRCUIT_COLUMNS = (PostbackConfig.circuit_cause, PostbackConfig.circuit_open_time_us,
                   PostbackConfig.circuit_probe_time_us, PostbackConfig.circuit_probing,
                   PostbackConfig.circuit_failed_probes, PostbackConfig.circuit_strain)


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """Refused credentials are probed on their own schedule; an outage on the retries' (see the settings' help)."""
    return BreakerPolicy(
        credential_probe_s=settings.credential_probe_interval_s,
        credential_probe_max_s=max(settings.credential_probe_interval_s, settings.credential_probe_max_interval_s),
        transient_probe_s=settings.retry_base_delay_s,
        transient_probe_max_s=max(settings.retry_base_delay_s, settings.retry_max_delay_s),
    )


def circuit_of(row: Any) -> Circuit:
    """The circuit of a config row, or of a row read with CIRCUIT_COLUMNS."""
    return Circuit(CircuitCause(row.circuit_cause) if row.circuit_cause else None, row.circuit_open_time_us,
                   row.circuit_probe_time_us, row.circuit_probing, row.circuit_failed_probes, row.circuit_strain)


def set_circuit(session: Session, config_row_id: int, circuit: Circuit) -> None:
    session.connection().execute(_SET_CIRCUIT, {
        "config": config_row_id, "cause": circuit.cause.value if circuit.cause else None,
        "open_time_us": circuit.open_time_us, "probe_time_us": circuit.probe_time_us, "probing": circuit.probing,
        "failed_probes": circuit.failed_probes, "strain": circuit.strain})


def close(session: Session, config_row_id: int, now_us: int) -> None:
    """Closes a config's circuit (its credentials were just replaced and accepted) and releases what it held."""
    set_circuit(session, config_row_id, CLOSED)
    release_held(session, config_row_id, now_us)


def release_held(session: Session, config_row_id: int, now_us: int) -> None:
    """A config's circuit has closed: its held postbacks, and those backing off during an outage, are due now,
    oldest first (by id, as they were owed), at the config's rate limit as any backlog."""
    session.connection().execute(_DUE_NOW, {"config": config_row_id, "now_us": now_us})


class Held(NamedTuple):
    count: int
    oldest_create_time_us: int | None


def held_postbacks(session: Session, config_row_ids: Collection[int]) -> dict[int, Held]:
    """The postbacks each of these configs (those whose circuits are open) holds: its pending postbacks."""
    if not config_row_ids:
        return {}
    return {row_id: Held(count, oldest) for row_id, count, oldest in session.execute(
        select(Delivery.config_row_id, func.count(), func.min(Delivery.create_time_us))
        .where(Delivery.config_row_id.in_(list(config_row_ids)), Delivery.state == PENDING)
        .group_by(Delivery.config_row_id))}


def _statements():  # type: ignore[no-untyped-def]
    """Built once, as the dispatcher's statements are (see deliveries._LEASE_ON_SQLITE)."""
    config, deliveries = PostbackConfig.__table__, Delivery.__table__
    now_us = bindparam("now_us", type_=BigInteger)
    set_circuit = config.update().where(config.c.id == bindparam("config")).values(
        circuit_cause=bindparam("cause", type_=String), circuit_open_time_us=bindparam("open_time_us", type_=BigInteger),
        circuit_probe_time_us=bindparam("probe_time_us", type_=BigInteger),
        circuit_probing=bindparam("probing", type_=Boolean),
        circuit_failed_probes=bindparam("failed_probes", type_=Integer),
        circuit_strain=bindparam("strain", type_=Integer))
    due_now = deliveries.update().where(
        deliveries.c.config_row_id == bindparam("config"), deliveries.c.state == PENDING,
        deliveries.c.next_attempt_time_us > now_us).values(next_attempt_time_us=now_us)
    return set_circuit, due_now


_SET_CIRCUIT, _DUE_NOW = _statements()
