"""A postback config's circuit breaker as rules: when its sending stops, how probes are spaced, when it resumes."""

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from server.core.postback import Outcome

US_PER_S = 1_000_000


class CircuitCause(StrEnum):
    """Why a config's circuit is open."""

    CREDENTIALS = "credentials"  # the network refused the token or the pixel
    TRANSIENT = "transient"  # most recent requests failed transiently: the network is down or throttling


class CircuitState(StrEnum):
    CLOSED = "closed"  # postbacks are sent
    OPEN = "open"  # postbacks are held; a probe goes at the next probe time
    PROBING = "probing"  # postbacks are held; one probe is in flight


# Outcomes that say nothing about the credentials: the network did not really answer.
TRANSIENT_OUTCOMES = frozenset({Outcome.RETRY_TRANSIENT, Outcome.RETRY_THROTTLED})


@dataclass(frozen=True)
class BreakerPolicy:
    """Probe spacing per cause: the first probe after `*_probe_s`, each failed one doubling it up to `*_max_s`,
    never sooner than the network's Retry-After. Strain measures how mostly-transient recent requests are: each
    transient failure adds one, each success takes off `relief_per_success`, never below zero, and at
    `open_at_strain` the circuit opens. With the defaults that is eight failures in a row, and a network failing
    more than four requests in five drifts there while one failing fewer drifts back to zero. (A refused payload
    counts neither way: it says the network is up, and nothing of how it copes.)"""

    credential_probe_s: float = 600.0
    credential_probe_max_s: float = 3600.0
    transient_probe_s: float = 30.0
    transient_probe_max_s: float = 3600.0
    multiplier: float = 2.0
    relief_per_success: int = 4
    open_at_strain: int = 8

    def __post_init__(self) -> None:
        for base, cap in ((self.credential_probe_s, self.credential_probe_max_s),
                          (self.transient_probe_s, self.transient_probe_max_s)):
            if base <= 0 or cap < base:
                raise ValueError("probe intervals must be positive, each cap at least its first interval")
        if self.multiplier < 1 or self.relief_per_success < 1 or self.open_at_strain < 1:
            raise ValueError("need multiplier >= 1, relief_per_success >= 1 and open_at_strain >= 1")


@dataclass(frozen=True, slots=True)
class Circuit:
    """A config's circuit as stored. Closed when cause is None; then only strain matters."""

    cause: CircuitCause | None = None
    open_time_us: int | None = None
    # When the next probe may go; while probing, when the probe's lease ends (another may go if it never reports).
    probe_time_us: int | None = None
    probing: bool = False
    failed_probes: int = 0
    strain: int = 0

    def state(self, now_us: int) -> CircuitState:
        if self.cause is None:
            return CircuitState.CLOSED
        if self.probing and self.probe_time_us is not None and self.probe_time_us > now_us:
            return CircuitState.PROBING
        return CircuitState.OPEN

    @property
    def closed(self) -> bool:
        return self.cause is None


CLOSED = Circuit()


def probe_delay_s(policy: BreakerPolicy, cause: CircuitCause, failed_probes: int,
                  retry_after_s: float | None = None) -> float:
    """How long after opening (failed_probes 0) or after a failed probe the next probe waits."""
    base, cap = ((policy.credential_probe_s, policy.credential_probe_max_s) if cause is CircuitCause.CREDENTIALS
                 else (policy.transient_probe_s, policy.transient_probe_max_s))
    try:
        delay = min(base * policy.multiplier ** failed_probes, cap)
    except OverflowError:
        delay = cap
    return max(delay, retry_after_s or 0.0)


def _opened(policy: BreakerPolicy, circuit: Circuit, cause: CircuitCause, now_us: int,
            retry_after_s: float | None) -> Circuit:
    return Circuit(cause=cause, open_time_us=now_us,
                   probe_time_us=now_us + round(probe_delay_s(policy, cause, 0, retry_after_s) * US_PER_S),
                   strain=circuit.strain)


def after_requests(policy: BreakerPolicy, circuit: Circuit, outcomes: Iterable[Outcome], now_us: int,
                   retry_after_s: float | None = None) -> Circuit:
    """The circuit after ordinary requests (not probes) of its config, each request's outcome once. A credential
    refusal opens it at once (or turns an outage into a credential lapse); strain opens it for an outage. An open
    circuit is otherwise left as it is: only a probe or new credentials close it."""
    outcomes = list(outcomes)
    transient = sum(o in TRANSIENT_OUTCOMES for o in outcomes)
    successes = sum(o is Outcome.SUCCESS for o in outcomes)
    strain = max(0, circuit.strain + transient - policy.relief_per_success * successes)
    strained = dataclasses.replace(circuit, strain=strain)
    if Outcome.FAILED_CREDENTIALS in outcomes and circuit.cause is not CircuitCause.CREDENTIALS:
        if circuit.cause is None:
            return _opened(policy, strained, CircuitCause.CREDENTIALS, now_us, None)
        # Open for an outage, and now refused: probe on the credential schedule from here, open since it opened.
        first_probe_s = probe_delay_s(policy, CircuitCause.CREDENTIALS, 0)
        return dataclasses.replace(strained, cause=CircuitCause.CREDENTIALS, failed_probes=0, probing=False,
                                   probe_time_us=now_us + round(first_probe_s * US_PER_S))
    if circuit.cause is None and strain >= policy.open_at_strain:
        return _opened(policy, strained, CircuitCause.TRANSIENT, now_us, retry_after_s)
    return strained


def after_probe(policy: BreakerPolicy, circuit: Circuit, outcome: Outcome, now_us: int,
                retry_after_s: float | None = None) -> Circuit:
    """The circuit after its probe's answer. Any answer but a credential refusal or a transient failure shows
    that the network takes the credentials (a refused payload too): the circuit closes. Otherwise it stays open,
    the next probe one backoff step further out."""
    if circuit.cause is None:
        return circuit  # closed meanwhile (new credentials): the probe is an ordinary request now
    if outcome is Outcome.FAILED_CREDENTIALS:
        failed = circuit.failed_probes + 1 if circuit.cause is CircuitCause.CREDENTIALS else 0
        cause = CircuitCause.CREDENTIALS
    elif outcome in TRANSIENT_OUTCOMES:
        failed, cause = circuit.failed_probes + 1, circuit.cause
    else:
        return CLOSED
    return dataclasses.replace(
        circuit, cause=cause, probing=False, failed_probes=failed,
        probe_time_us=now_us + round(probe_delay_s(policy, cause, failed, retry_after_s) * US_PER_S))


def describe_hold(cause: CircuitCause) -> str:
    """Why a config's postbacks are held, in a line for GetConversion and the delivery logs."""
    if cause is CircuitCause.CREDENTIALS:
        return ("held: the network refuses this config's credentials; one postback probes them now and then, and "
                "all go out once a probe succeeds or the credentials are rotated")
    return ("held: most recent requests to the network failed transiently; one postback at a time probes it, and "
            "all go out once a probe succeeds")
