"""Tests for the retry schedule: backoff, jitter, Retry-After and each network's window."""

import pytest

from server.core.retry import (
    RetryDecision,
    RetryPolicy,
    backoff_delay_s,
    decide_retry,
    give_up_reason,
    horizon_us,
    past_network_window,
)
from server.core.types import Network

S = 1_000_000
HOUR = 3600 * S
DAY = 24 * HOUR
POLICY = RetryPolicy(base_delay_s=10, multiplier=2, max_delay_s=3600, jitter=0.2)
NO_JITTER = RetryPolicy(base_delay_s=10, multiplier=2, max_delay_s=3600, jitter=0.0)
T0 = 1_704_721_970 * S


def schedule(
    network: Network = Network.TIKTOK,
    attempt: int = 1,
    now: int = T0,
    first: int = T0,
    event: int = T0,
    retry_after_s: float | None = None,
    rand: float = 0.0,
    policy: RetryPolicy = NO_JITTER,
) -> int | None:
    return decide_retry(policy, network, attempt, now, first, event, retry_after_s, rand).next_attempt_us


@pytest.mark.parametrize(
    ("attempt", "delay_s"),
    [(1, 10), (2, 20), (3, 40), (4, 80), (9, 2560), (10, 3600), (11, 3600), (10_000, 3600)],
)
def test_exponential_backoff_capped(attempt: int, delay_s: float) -> None:
    assert backoff_delay_s(NO_JITTER, attempt, 0.5) == delay_s
    assert schedule(attempt=attempt) == T0 + delay_s * S


@pytest.mark.parametrize(
    ("attempt", "rand", "delay_s"),
    [(1, 0.0, 10.0), (1, 0.5, 9.0), (1, 0.999, 8.002), (3, 0.5, 36.0), (20, 0.25, 3420.0)],
)
def test_jitter_takes_off_up_to_the_fraction(attempt: int, rand: float, delay_s: float) -> None:
    assert backoff_delay_s(POLICY, attempt, rand) == pytest.approx(delay_s)


def test_jitter_spreads_attempts() -> None:
    times = {schedule(policy=POLICY, attempt=5, rand=r) for r in (0.0, 0.3, 0.6, 0.9)}
    assert len(times) == 4


@pytest.mark.parametrize(
    ("retry_after_s", "expected_delay_s"),
    [(None, 40), (5, 40), (40, 40), (300, 300), (0, 40), (-3, 40), (0.5, 40)],
)
def test_retry_after_is_a_minimum(retry_after_s: float | None, expected_delay_s: float) -> None:
    assert schedule(attempt=3, retry_after_s=retry_after_s) == T0 + expected_delay_s * S


@pytest.mark.parametrize(
    ("network", "first", "event", "horizon"),
    [
        (Network.TIKTOK, T0, T0 - 5 * DAY, T0 + DAY),  # from the first attempt; event age irrelevant
        (Network.REDDIT, T0 + 3 * DAY, T0, T0 + 7 * DAY - HOUR),  # from the event; first attempt irrelevant
    ],
)
def test_default_horizons(network: Network, first: int, event: int, horizon: int) -> None:
    assert horizon_us(RetryPolicy(), network, first, event) == horizon


def test_tiktok_horizon_stays_well_inside_48_hours() -> None:
    assert RetryPolicy().tiktok_window_s < 48 * 3600


def test_reddit_horizon_is_before_7_days() -> None:
    assert RetryPolicy().reddit_max_event_age_s < 7 * 24 * 3600


@pytest.mark.parametrize(
    ("network", "now", "first", "event", "expected"),
    [
        # plenty of time: normal backoff
        (Network.TIKTOK, T0 + HOUR, T0, T0, T0 + HOUR + 3600 * S),
        (Network.REDDIT, T0 + HOUR, T0, T0, T0 + HOUR + 3600 * S),
        # backoff would overshoot: one last attempt exactly at the horizon
        (Network.TIKTOK, T0 + DAY - 60 * S, T0, T0, T0 + DAY),
        (Network.REDDIT, T0 + 7 * DAY - HOUR - 60 * S, T0, T0, T0 + 7 * DAY - HOUR),
        # at or past the horizon: give up
        (Network.TIKTOK, T0 + DAY, T0, T0, None),
        (Network.TIKTOK, T0 + 2 * DAY, T0, T0, None),
        (Network.REDDIT, T0 + 7 * DAY - HOUR, T0 + 7 * DAY - 2 * HOUR, T0, None),
        # Reddit counts from the event: an old event has little time left even on its first failure
        (Network.REDDIT, T0 + 10 * S, T0, T0 - 7 * DAY, None),
    ],
)
def test_never_beyond_the_horizon(
    network: Network, now: int, first: int, event: int, expected: int | None
) -> None:
    policy = RetryPolicy(base_delay_s=3600, multiplier=2, max_delay_s=3600, jitter=0.0)
    assert schedule(network, 1, now, first, event, None, 0.0, policy) == expected


def test_retry_after_past_the_horizon_gives_up() -> None:
    now = T0 + DAY - 60 * S
    decision = decide_retry(NO_JITTER, Network.TIKTOK, 1, now, T0, T0, 120, 0.0)
    assert decision == RetryDecision(next_attempt_us=None, give_up_reason=give_up_reason(Network.TIKTOK))


def test_retry_after_within_the_horizon_still_gets_the_last_attempt() -> None:
    now = T0 + DAY - 60 * S
    assert schedule(attempt=12, now=now, retry_after_s=30) == T0 + DAY


@pytest.mark.parametrize(
    ("network", "words"),
    [
        (Network.TIKTOK, ["retry window closed", "TikTok", "48 hours"]),
        (Network.REDDIT, ["retry window closed", "Reddit refuses events older than 7 days"]),
    ],
)
def test_give_up_reason(network: Network, words: list[str]) -> None:
    decision = decide_retry(RetryPolicy(), network, 1, T0 + 30 * DAY, T0, T0, None, 0.0)
    assert decision.next_attempt_us is None
    assert decision.give_up_reason == give_up_reason(network)
    for word in words:
        assert word in give_up_reason(network)


def test_a_scheduled_retry_has_no_reason() -> None:
    assert decide_retry(POLICY, Network.REDDIT, 1, T0, T0, T0, None, 0.5) == RetryDecision(T0 + 9 * S, None)


def test_a_whole_tiktok_schedule_ends_inside_the_window() -> None:
    policy = RetryPolicy()
    attempts = [T0]
    while (
        next_time := schedule(Network.TIKTOK, len(attempts), attempts[-1], T0, T0, None, 0.7, policy)
    ) is not None:
        assert next_time > attempts[-1]
        attempts.append(next_time)
    assert attempts[-1] == T0 + DAY
    assert 20 < len(attempts) < 60


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"rand": 1.0},
        {"rand": -0.1},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        schedule(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_delay_s": 0},
        {"multiplier": 0.5},
        {"max_delay_s": 1, "base_delay_s": 10},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"tiktok_window_s": 0},
        {"reddit_max_event_age_s": -1},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("network", "now", "first", "event", "past"),
    [
        (Network.TIKTOK, T0 + 48 * HOUR, T0, T0 - 9 * DAY, False),  # the event's age does not matter to TikTok
        (Network.TIKTOK, T0 + 48 * HOUR + 1, T0, T0, True),  # a repeat would no longer be merged
        (Network.TIKTOK, T0 + 30 * DAY, None, T0, False),  # never attempted: nothing to duplicate yet
        (Network.REDDIT, T0 + 7 * DAY, None, T0, False),
        (Network.REDDIT, T0 + 7 * DAY + 1, None, T0, True),  # Reddit refuses events older than 7 days
        (Network.REDDIT, T0 + 7 * DAY + 1, T0 + 7 * DAY, T0, True),
    ],
)
def test_past_network_window(network: Network, now: int, first: int | None, event: int, past: bool) -> None:
    assert past_network_window(network, now, first, event) is past
