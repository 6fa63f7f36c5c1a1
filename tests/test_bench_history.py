"""The large-history benchmark's rows: shaped as the server writes them, and spread as the benchmark says."""

import bench.benchmarks  # noqa: F401  (bench.history is imported through the benchmark registry)
from bench import history

SIZE = history.HistorySize(events=1_000, players=100, logs=history.LAST_HOUR_LOGS + 3_000)
NOW_US = 1_800_000_000_000_000
CONFIGS = [(7, "tiktok", "bench"), (8, "tiktok-spring", "tiktok spring"), (9, "tiktok-retargeting", "old")]


def test_events_are_ten_a_player_numbered_from_one_and_each_owed_conversion_has_its_delivery() -> None:
    events = list(history.history_events(SIZE, NOW_US))
    assert [e[0] for e in events] == list(range(1, SIZE.events + 1))
    assert all(len(e) == len(history.EVENT_COLUMNS) for e in events)
    assert len({e[2] for e in events}) == SIZE.events  # event ids are unique within the game
    assert all(e[2].startswith("h") and e[4] < NOW_US for e in events)
    by_id = {e[0]: e for e in events}
    deliveries = list(history.history_deliveries(SIZE, NOW_US, config_row_id=7))
    owed = {e[0] for e in events if e[20] == "postback_owed"}
    assert {d[1] for d in deliveries} == owed and len(deliveries) == len(owed)
    assert all(by_id[d[1]][22] == f"hc-{by_id[d[1]][7][3:]}" for d in deliveries)  # attributed to the player's click
    links = list(history.history_links(SIZE, NOW_US))
    assert len(links) == sum(1 for e in events if e[3] == "identify") == SIZE.players


def test_logs_are_in_attempt_order_with_one_day_past_retention_and_a_busy_last_hour() -> None:
    logs = list(history.history_logs(SIZE, NOW_US, CONFIGS))
    assert [row[0] for row in logs] == list(range(1, SIZE.logs + 1))
    assert all(len(row) == len(history.LOG_COLUMNS) for row in logs)
    times = [row[6] for row in logs]
    assert times == sorted(times) and times[-1] <= NOW_US
    cutoff = NOW_US - history.RETENTION_DAYS * history.DAY_US
    expired = history.expired_logs(SIZE, NOW_US)
    assert expired == sum(1 for t in times if t < cutoff) and all(t < cutoff for t in times[:expired])
    assert NOW_US - times[0] < (history.RETENTION_DAYS + 1) * history.DAY_US
    last_hour = [row for row in logs if row[6] >= NOW_US - history.HOUR_US and row[2] == 7]
    assert len(last_hour) == history.last_hour_logs(SIZE, NOW_US) == history.LAST_HOUR_LOGS * 6 // 10
    assert {row[3] for row in logs} == {"tiktok", "tiktok-spring", "tiktok-retargeting"}
