"""Token buckets: bursts, refill, the wait they announce, and bounded memory."""

import pytest

from server.core.rate_limit import TokenBuckets, retry_after_header


@pytest.mark.parametrize(("rate", "burst", "times", "waits"), [
    # A burst passes at once, then one request per 1/rate seconds.
    (2.0, 3, [0, 0, 0, 0], [0, 0, 0, 0.5]),
    (2.0, 3, [0, 0, 0, 0.5], [0, 0, 0, 0]),
    (2.0, 3, [0, 0, 0, 0.25], [0, 0, 0, 0.25]),
    # Idle time refills no further than the burst.
    (1.0, 2, [0, 0, 100, 100, 100], [0, 0, 0, 0, 1.0]),
    # A refused request takes nothing: waiting the announced time is enough.
    (1.0, 1, [0, 0.5, 1.0], [0, 0.5, 0]),
])
def test_a_bucket_lets_a_burst_through_then_the_rate(rate: float, burst: float, times: list[float],
                                                      waits: list[float]) -> None:
    buckets = TokenBuckets(rate, burst)
    assert [buckets.take("client", t) for t in times] == pytest.approx(waits)


def test_each_key_has_its_own_bucket() -> None:
    buckets = TokenBuckets(1.0, 1)
    assert buckets.take("a", 0) == 0 and buckets.take("b", 0) == 0
    assert buckets.take("a", 0) > 0 and buckets.take("b", 0) > 0


def test_memory_stays_bounded_and_active_callers_keep_their_buckets() -> None:
    buckets = TokenBuckets(1.0, 1, max_keys=10)
    for i in range(10):
        buckets.take(f"idle-{i}", 0)
    buckets.take("busy", 5)
    assert buckets.take("busy", 5) > 0
    for i in range(20):
        buckets.take(f"new-{i}", 5)
    assert len(buckets) <= 10


@pytest.mark.parametrize(("wait", "header"), [(0.001, "1"), (1.0, "1"), (1.2, "2"), (99.5, "100")])
def test_retry_after_rounds_up_to_whole_seconds(wait: float, header: str) -> None:
    assert retry_after_header(wait) == header


def test_a_bucket_needs_a_positive_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(0, 1)
    with pytest.raises(ValueError):
        TokenBuckets(1, 0.5)
