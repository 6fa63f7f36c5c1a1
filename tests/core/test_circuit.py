"""Tests for the circuit breaker's rules: opening, strain, the probe schedule and closing."""

import pytest

from server.core.circuit import (
    CLOSED,
    BreakerPolicy,
    Circuit,
    CircuitCause,
    CircuitState,
    after_probe,
    after_requests,
    probe_delay_s,
)
from server.core.postback import Outcome
from server.core.retry import RetryPolicy, horizon_us, window_closed_before_us
from server.core.types import Network

S = 1_000_000
T0 = 1_704_721_970 * S
POLICY = BreakerPolicy(credential_probe_s=600, credential_probe_max_s=3600, transient_probe_s=30,
                       transient_probe_max_s=3600)
OK, PAYLOAD, CREDS = Outcome.SUCCESS, Outcome.FAILED_PAYLOAD, Outcome.FAILED_CREDENTIALS
DOWN, THROTTLED = Outcome.RETRY_TRANSIENT, Outcome.RETRY_THROTTLED
CREDENTIALS, TRANSIENT = CircuitCause.CREDENTIALS, CircuitCause.TRANSIENT


def open_circuit(cause: CircuitCause, *, failed: int = 0, probe_in_s: float = 0, probing: bool = False,
                 strain: int = 0) -> Circuit:
    return Circuit(cause=cause, open_time_us=T0 - 100 * S, probe_time_us=T0 + round(probe_in_s * S),
                   probing=probing, failed_probes=failed, strain=strain)


@pytest.mark.parametrize(("cause", "failed", "retry_after_s", "delay_s"), [
    (CREDENTIALS, 0, None, 600),
    (CREDENTIALS, 1, None, 1200),
    (CREDENTIALS, 2, None, 2400),
    (CREDENTIALS, 3, None, 3600),  # capped at an hour
    (CREDENTIALS, 10_000, None, 3600),  # no overflow
    (TRANSIENT, 0, None, 30),
    (TRANSIENT, 4, None, 480),
    (TRANSIENT, 7, None, 3600),
    (TRANSIENT, 0, 120.0, 120),  # Retry-After is a minimum
    (TRANSIENT, 4, 120.0, 480),  # ... not a maximum
    (TRANSIENT, 9, 7200.0, 7200),  # ... even past the cap
    (TRANSIENT, 0, 0.0, 30),
])
def test_probe_delay_doubles_to_its_cap_and_never_comes_before_retry_after(
        cause: CircuitCause, failed: int, retry_after_s: float | None, delay_s: float) -> None:
    assert probe_delay_s(POLICY, cause, failed, retry_after_s) == delay_s


@pytest.mark.parametrize(("circuit", "outcomes", "expected"), [
    # Closed: a credential refusal opens at once, the first probe one interval later.
    (CLOSED, [CREDS], Circuit(CREDENTIALS, T0, T0 + 600 * S)),
    (CLOSED, [OK, CREDS, OK], Circuit(CREDENTIALS, T0, T0 + 600 * S)),
    # Closed: strain adds one per transient failure and opens at eight.
    (CLOSED, [DOWN] * 7, Circuit(strain=7)),
    (Circuit(strain=7), [THROTTLED], Circuit(TRANSIENT, T0, T0 + 30 * S, strain=8)),
    (CLOSED, [DOWN] * 9, Circuit(TRANSIENT, T0, T0 + 30 * S, strain=9)),
    # ... each success takes off four, never below zero: mostly transient means more than four in five.
    (Circuit(strain=7), [OK], Circuit(strain=3)),
    (Circuit(strain=2), [OK], CLOSED),
    (Circuit(strain=2), [PAYLOAD], Circuit(strain=2)),  # the network is up, but says nothing of how it copes
    (CLOSED, [DOWN, DOWN, DOWN, DOWN, OK] * 5, CLOSED),
    (CLOSED, [DOWN] * 5 + [OK], Circuit(strain=1)),
    # Open for credentials: more refusals (batches in flight when it opened) leave it as it is.
    (open_circuit(CREDENTIALS, failed=2, probe_in_s=50), [CREDS, CREDS],
     open_circuit(CREDENTIALS, failed=2, probe_in_s=50)),
    # Open for an outage: a refusal turns it into a credential lapse, open since it opened.
    (open_circuit(TRANSIENT, failed=3, probe_in_s=5, probing=True), [CREDS],
     Circuit(CREDENTIALS, T0 - 100 * S, T0 + 600 * S)),
    # Open: an ordinary request's success does not close it; only a probe or rotation does.
    (open_circuit(TRANSIENT, probe_in_s=5, strain=8), [OK], open_circuit(TRANSIENT, probe_in_s=5, strain=4)),
    (open_circuit(TRANSIENT, probe_in_s=5, strain=8), [DOWN] * 3, open_circuit(TRANSIENT, probe_in_s=5, strain=11)),
])
def test_ordinary_requests(circuit: Circuit, outcomes: list[Outcome], expected: Circuit) -> None:
    assert after_requests(POLICY, circuit, outcomes, T0) == expected


def test_an_outage_opened_by_throttling_waits_for_retry_after_before_its_first_probe() -> None:
    assert after_requests(POLICY, Circuit(strain=7), [THROTTLED], T0, retry_after_s=90).probe_time_us == T0 + 90 * S


@pytest.mark.parametrize(("circuit", "outcome", "retry_after_s", "expected"), [
    # Any answer but a refusal or a transient failure closes it, strain and all.
    (open_circuit(CREDENTIALS, failed=3, probing=True), OK, None, CLOSED),
    (open_circuit(TRANSIENT, failed=3, probing=True, strain=12), OK, None, CLOSED),
    (open_circuit(CREDENTIALS, probing=True), PAYLOAD, None, CLOSED),
    # Refused again: the next probe one step further out.
    (open_circuit(CREDENTIALS, failed=0, probing=True), CREDS, None,
     Circuit(CREDENTIALS, T0 - 100 * S, T0 + 1200 * S, failed_probes=1)),
    (open_circuit(CREDENTIALS, failed=5, probing=True), CREDS, None,
     Circuit(CREDENTIALS, T0 - 100 * S, T0 + 3600 * S, failed_probes=6)),
    # An outage probe refused: now a credential lapse, on that schedule from its start.
    (open_circuit(TRANSIENT, failed=5, probing=True), CREDS, None,
     Circuit(CREDENTIALS, T0 - 100 * S, T0 + 600 * S, failed_probes=0)),
    # Still down: back off on the cause's own schedule, honouring Retry-After.
    (open_circuit(TRANSIENT, failed=1, probing=True), DOWN, None,
     Circuit(TRANSIENT, T0 - 100 * S, T0 + 120 * S, failed_probes=2)),
    (open_circuit(TRANSIENT, failed=1, probing=True), THROTTLED, 300.0,
     Circuit(TRANSIENT, T0 - 100 * S, T0 + 300 * S, failed_probes=2)),
    # A credential probe meeting an outage says nothing of the credentials: still a credential lapse.
    (open_circuit(CREDENTIALS, failed=1, probing=True), DOWN, None,
     Circuit(CREDENTIALS, T0 - 100 * S, T0 + 2400 * S, failed_probes=2)),
    # Closed meanwhile (the credentials were rotated): the probe's answer changes nothing.
    (Circuit(strain=3), CREDS, None, Circuit(strain=3)),
])
def test_probes(circuit: Circuit, outcome: Outcome, retry_after_s: float | None, expected: Circuit) -> None:
    assert after_probe(POLICY, circuit, outcome, T0, retry_after_s) == expected


@pytest.mark.parametrize(("circuit", "state"), [
    (CLOSED, CircuitState.CLOSED),
    (Circuit(strain=7), CircuitState.CLOSED),
    (open_circuit(CREDENTIALS, probe_in_s=10), CircuitState.OPEN),
    (open_circuit(CREDENTIALS, probe_in_s=-1), CircuitState.OPEN),  # a probe is due
    (open_circuit(TRANSIENT, probe_in_s=10, probing=True), CircuitState.PROBING),
    (open_circuit(TRANSIENT, probe_in_s=-1, probing=True), CircuitState.OPEN),  # the prober never reported
])
def test_state(circuit: Circuit, state: CircuitState) -> None:
    assert circuit.state(T0) is state


def test_the_schedule_of_probes_is_bounded_by_its_first_interval() -> None:
    """What the service tests count on: in any span after opening, at most 1 + span / first interval probes."""
    for cause, first in ((CREDENTIALS, 600), (TRANSIENT, 30)):
        circuit = after_requests(POLICY, CLOSED, [CREDS] if cause is CREDENTIALS else [DOWN] * 8, T0)
        sent = []
        now = T0
        for _ in range(50):
            now = circuit.probe_time_us  # type: ignore[assignment]
            sent.append(now)
            circuit = after_probe(POLICY, circuit, CREDS if cause is CREDENTIALS else DOWN, now)
        gaps = [b - a for a, b in zip([T0, *sent], sent, strict=False)]
        assert all(gap >= first * S for gap in gaps)


@pytest.mark.parametrize("network", list(Network))
@pytest.mark.parametrize("offset_us", [-1, 0, 1])
def test_window_closed_before_states_the_horizon_on_one_column(network: Network, offset_us: int) -> None:
    policy = RetryPolicy(tiktok_window_s=3600, reddit_max_event_age_s=7200)
    cutoff = window_closed_before_us(policy, network, T0)
    start = cutoff + offset_us  # the first attempt (TikTok) or the event time (Reddit)
    assert (start < cutoff) == (horizon_us(policy, network, start, start) < T0)


@pytest.mark.parametrize("kwargs", [
    {"credential_probe_s": 0}, {"transient_probe_s": -1}, {"credential_probe_max_s": 10},
    {"transient_probe_s": 60, "transient_probe_max_s": 30}, {"multiplier": 0.5}, {"open_at_strain": 0},
])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)
