"""Retry schedule as data: jittered exponential backoff that stops inside each network's delivery window."""

from collections.abc import Mapping
from dataclasses import dataclass

from server.core.types import Network

US_PER_S = 1_000_000

GIVE_UP_REASONS: Mapping[Network, str] = {
    Network.TIKTOK: "retry window closed: TikTok merges duplicates only within 48 hours of the first attempt",
    Network.REDDIT: "retry window closed: Reddit refuses events older than 7 days",
}


@dataclass(frozen=True)
class RetryPolicy:
    base_delay_s: float = 30.0
    multiplier: float = 2.0
    max_delay_s: float = 3600.0
    # Fraction of each delay removed at random, so senders recovering from one outage do not retry in step.
    jitter: float = 0.2
    # Counted from the first attempt: TikTok merges duplicates for 48 h, so stay well inside that.
    tiktok_window_s: float = 24 * 3600.0
    # Counted from the event time: Reddit refuses events older than 7 days; the hour covers clock skew
    # and the time a last attempt spends queued.
    reddit_max_event_age_s: float = 7 * 24 * 3600.0 - 3600.0

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.multiplier < 1 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need base_delay_s > 0, multiplier >= 1 and max_delay_s >= base_delay_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        if self.tiktok_window_s <= 0 or self.reddit_max_event_age_s <= 0:
            raise ValueError("retry windows must be positive")


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Either when to try again, or why not: exactly one of the two is set."""

    next_attempt_us: int | None
    give_up_reason: str | None


def horizon_us(policy: RetryPolicy, network: Network, first_attempt_us: int, event_time_us: int) -> int:
    """The last moment an attempt may be made for this delivery."""
    if network is Network.TIKTOK:
        return first_attempt_us + round(policy.tiktok_window_s * US_PER_S)
    return event_time_us + round(policy.reddit_max_event_age_s * US_PER_S)


def window_closed_before_us(policy: RetryPolicy, network: Network, now_us: int) -> int:
    """A postback whose first attempt (TikTok) or event (Reddit) came before this time is past its horizon at now_us:
    the same rule as horizon_us, stated on the column a query can compare. A TikTok postback never attempted has
    no window yet."""
    if network is Network.TIKTOK:
        return now_us - round(policy.tiktok_window_s * US_PER_S)
    return now_us - round(policy.reddit_max_event_age_s * US_PER_S)


def give_up_reason(network: Network) -> str:
    return GIVE_UP_REASONS[network]


# The networks' own limits (not our margins inside them): past these, sending is refused (Reddit) or a repeat is
# no longer merged (TikTok), so an attempt must not be made at all.
TIKTOK_DEDUP_WINDOW_S = 48 * 3600.0
REDDIT_MAX_EVENT_AGE_S = 7 * 24 * 3600.0


def past_network_window(network: Network, now_us: int, first_attempt_us: int | None, event_time_us: int) -> bool:
    """Whether an attempt now would fall outside what the network accepts (e.g. after a long outage)."""
    if network is Network.TIKTOK:
        return first_attempt_us is not None and now_us > first_attempt_us + round(TIKTOK_DEDUP_WINDOW_S * US_PER_S)
    return now_us > event_time_us + round(REDDIT_MAX_EVENT_AGE_S * US_PER_S)


def backoff_delay_s(policy: RetryPolicy, attempt_number: int, rand: float) -> float:
    """Delay after failed attempt number attempt_number (1-based), before Retry-After is considered."""
    try:
        exponential = policy.base_delay_s * policy.multiplier ** (attempt_number - 1)
    except OverflowError:
        exponential = policy.max_delay_s
    return min(exponential, policy.max_delay_s) * (1 - policy.jitter * rand)


def decide_retry(
    policy: RetryPolicy,
    network: Network,
    attempt_number: int,
    now_us: int,
    first_attempt_us: int,
    event_time_us: int,
    retry_after_s: float | None,
    rand: float,
) -> RetryDecision:
    """When to make the next attempt after a transient failure of attempt attempt_number, or give up.

    Retry-After is a minimum. When the backoff would land past the horizon but the horizon itself is
    still ahead (and allowed by Retry-After), one last attempt is placed exactly at the horizon.
    """
    if attempt_number < 1:
        raise ValueError("attempt_number starts at 1")
    if not 0 <= rand < 1:
        raise ValueError("rand must be in [0, 1)")
    minimum_delay_s = max(retry_after_s or 0.0, 0.0)
    delay_s = max(backoff_delay_s(policy, attempt_number, rand), minimum_delay_s)
    horizon = horizon_us(policy, network, first_attempt_us, event_time_us)
    candidate = now_us + round(delay_s * US_PER_S)
    if candidate <= horizon:
        return RetryDecision(next_attempt_us=candidate, give_up_reason=None)
    if horizon > now_us and horizon >= now_us + round(minimum_delay_s * US_PER_S):
        return RetryDecision(next_attempt_us=horizon, give_up_reason=None)
    return RetryDecision(next_attempt_us=None, give_up_reason=give_up_reason(network))
