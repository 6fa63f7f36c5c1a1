"""Attribution rules: click window, last click, configs owed, reasons, identity, re-evaluation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.attribution import (
    DEFAULT_GRACE_US,
    DEFAULT_LOOKBACK_US,
    MAX_LOOKBACK_US,
    MIN_LOOKBACK_US,
    Click,
    Config,
    Conversion,
    Decision,
    Player,
    belongs_to,
    can_reevaluate,
    decide,
    resolve_player,
)
from server.core.types import EventType, Network, NoPostbackReason

DAY = 86_400_000_000
HOUR = 3_600_000_000
T = 1_700_000_000_000_000  # conversion time
LAUNCH = EventType.GAME_LAUNCH
PURCHASE = EventType.PURCHASE
TIKTOK = Network.TIKTOK
REDDIT = Network.REDDIT
R = NoPostbackReason
BOTH_EVENTS = frozenset(EventType)


def click(
    key: str = "c1",
    network: Network = TIKTOK,
    at: int = T - DAY,
    click_id: str | None = "cid",
    user_id: str | None = None,
    anonymous_id: str | None = None,
    email_hash: str | None = None,
) -> Click:
    return Click(
        key=key,
        network=network,
        click_id=click_id,
        click_time_us=at,
        user_id=user_id,
        anonymous_id=anonymous_id,
        email_hash=email_hash,
    )


def conversion(
    event_type: EventType = PURCHASE,
    first_launch: bool = True,
    reddit_email: bool = False,
    erased: bool = False,
) -> Conversion:
    return Conversion(
        event_type=event_type,
        event_time_us=T,
        is_first_launch=first_launch,
        has_reddit_email=reddit_email,
        erased=erased,
    )


def config(
    config_id: str, network: Network = TIKTOK, enabled: bool = True, events: frozenset = BOTH_EVENTS
) -> Config:
    return Config(config_id=config_id, network=network, enabled=enabled, trigger_events=events)


TIKTOK_CONFIG = config("tt")
REDDIT_CONFIG = config("rd", REDDIT)
ALL_CONFIGS = [TIKTOK_CONFIG, REDDIT_CONFIG]


def test_lookback_constants() -> None:
    assert (MIN_LOOKBACK_US, DEFAULT_LOOKBACK_US, MAX_LOOKBACK_US) == (DAY, 7 * DAY, 28 * DAY)
    assert DEFAULT_GRACE_US == HOUR


@pytest.mark.parametrize(
    ("click_times", "lookback_us", "winner", "reason"),
    [
        pytest.param([T - 7 * DAY], DEFAULT_LOOKBACK_US, 0, None, id="exactly-7-days-counts"),
        pytest.param(
            [T - 7 * DAY - 1], DEFAULT_LOOKBACK_US, None, R.CLICK_OUTSIDE_WINDOW, id="7-days-plus-1us"
        ),
        pytest.param([T - 28 * DAY], MAX_LOOKBACK_US, 0, None, id="exactly-28-days-counts"),
        pytest.param(
            [T - 28 * DAY - 1], MAX_LOOKBACK_US, None, R.CLICK_OUTSIDE_WINDOW, id="28-days-plus-1us"
        ),
        pytest.param([T - 8 * DAY], MAX_LOOKBACK_US, 0, None, id="8-days-inside-28-day-window"),
        pytest.param([T - DAY], MIN_LOOKBACK_US, 0, None, id="exactly-1-day-counts"),
        pytest.param([T - DAY - 1], MIN_LOOKBACK_US, None, R.CLICK_OUTSIDE_WINDOW, id="1-day-plus-1us"),
        pytest.param([T], DEFAULT_LOOKBACK_US, 0, None, id="same-instant-counts"),
        pytest.param([T + 1], DEFAULT_LOOKBACK_US, None, R.ORGANIC, id="click-after-conversion"),
        pytest.param([], DEFAULT_LOOKBACK_US, None, R.ORGANIC, id="no-click"),
        pytest.param(
            [T + 1, T - 30 * DAY], DEFAULT_LOOKBACK_US, None, R.CLICK_OUTSIDE_WINDOW, id="after-and-too-old"
        ),
        pytest.param([T - 30 * DAY, T - 2 * DAY], DEFAULT_LOOKBACK_US, 1, None, id="old-ignored-recent-wins"),
        pytest.param(
            [T - 2 * DAY, T + 1], DEFAULT_LOOKBACK_US, 0, None, id="later-click-after-conversion-ignored"
        ),
    ],
)
def test_click_window(click_times: list[int], lookback_us: int, winner: int | None, reason: R | None) -> None:
    clicks = [click(key=f"c{i}", at=at) for i, at in enumerate(click_times)]

    decision = decide(conversion(), clicks, [TIKTOK_CONFIG], lookback_us)

    assert decision.click == (None if winner is None else clicks[winner])
    assert decision.reason == reason
    assert decision.owed_config_ids == (() if reason else ("tt",))


@pytest.mark.parametrize(
    ("clicks", "configs", "winner_key", "owed", "reason"),
    [
        pytest.param(
            [click("tt", TIKTOK, T - 2 * DAY), click("rd", REDDIT, T - DAY)],
            ALL_CONFIGS,
            "rd",
            ("rd",),
            None,
            id="reddit-last-only-reddit-credited",
        ),
        pytest.param(
            [click("rd", REDDIT, T - 2 * DAY), click("tt", TIKTOK, T - DAY)],
            ALL_CONFIGS,
            "tt",
            ("tt",),
            None,
            id="tiktok-last-only-tiktok-credited",
        ),
        pytest.param(
            [click("tt", TIKTOK, T - 2 * DAY), click("rd", REDDIT, T - DAY)],
            [TIKTOK_CONFIG],
            "rd",
            (),
            R.NETWORK_NOT_CONFIGURED,
            id="last-click-unconfigured-no-fallback",
        ),
        pytest.param(
            [click("tt", TIKTOK, T - 2 * DAY), click("rd", REDDIT, T + 1)],
            ALL_CONFIGS,
            "tt",
            ("tt",),
            None,
            id="click-after-conversion-does-not-win",
        ),
        pytest.param(
            [click("tt", TIKTOK, T - 2 * DAY), click("rd", REDDIT, T - 8 * DAY)],
            ALL_CONFIGS,
            "tt",
            ("tt",),
            None,
            id="out-of-window-does-not-win",
        ),
    ],
)
def test_last_click_wins_and_credits_one_network(
    clicks: list[Click], configs: list[Config], winner_key: str, owed: tuple[str, ...], reason: R | None
) -> None:
    decision = decide(conversion(), clicks, configs, DEFAULT_LOOKBACK_US)

    assert decision == Decision(
        click=next(c for c in clicks if c.key == winner_key), owed_config_ids=owed, reason=reason
    )


@pytest.mark.parametrize("reverse", [False, True], ids=["a-first", "b-first"])
@pytest.mark.parametrize(
    ("clicks", "winner_key"),
    [
        pytest.param([click("a", TIKTOK, T - DAY), click("b", REDDIT, T - DAY)], "b", id="networks-tie"),
        pytest.param(
            [click("a", REDDIT, T - DAY), click("b", TIKTOK, T - DAY)], "b", id="networks-tie-swapped"
        ),
        pytest.param([click("a", TIKTOK, T), click("b", TIKTOK, T)], "b", id="same-instant-as-conversion"),
    ],
)
def test_time_tie_goes_to_greater_key_whatever_the_order(
    clicks: list[Click], winner_key: str, reverse: bool
) -> None:
    ordered = list(reversed(clicks)) if reverse else clicks

    decision = decide(conversion(), ordered, ALL_CONFIGS, DEFAULT_LOOKBACK_US)

    assert decision.click is not None and decision.click.key == winner_key


@pytest.mark.parametrize(
    ("event_type", "configs", "owed", "reason"),
    [
        pytest.param(
            PURCHASE,
            [config("tt-b"), config("tt-a"), config("tt-c", events=frozenset({PURCHASE})), REDDIT_CONFIG],
            ("tt-a", "tt-b", "tt-c"),
            None,
            id="all-matching-owed-sorted-other-network-not",
        ),
        pytest.param(
            PURCHASE,
            [config("tt-a", events=frozenset({LAUNCH})), config("tt-b", events=frozenset({PURCHASE}))],
            ("tt-b",),
            None,
            id="only-configs-selecting-the-event",
        ),
        pytest.param(
            LAUNCH,
            [config("tt-a", events=frozenset({LAUNCH})), config("tt-b", events=frozenset({PURCHASE}))],
            ("tt-a",),
            None,
            id="first-launch-owed",
        ),
        pytest.param(
            PURCHASE,
            [config("tt-a", enabled=False), config("tt-b")],
            ("tt-b",),
            None,
            id="disabled-one-skipped",
        ),
        pytest.param(
            PURCHASE, [config("tt", enabled=False)], (), R.CONFIG_DISABLED, id="only-config-disabled"
        ),
        pytest.param(
            PURCHASE,
            [config("tt", events=frozenset({LAUNCH}))],
            (),
            R.EVENT_TYPE_NOT_SELECTED,
            id="enabled-config-not-selecting-event",
        ),
        pytest.param(
            PURCHASE,
            [
                config("tt-a", enabled=False, events=frozenset({PURCHASE})),
                config("tt-b", events=frozenset({LAUNCH})),
            ],
            (),
            R.CONFIG_DISABLED,
            id="selecting-config-disabled-enabled-one-not-selecting",
        ),
        pytest.param(
            PURCHASE,
            [config("tt", enabled=False, events=frozenset({LAUNCH}))],
            (),
            R.EVENT_TYPE_NOT_SELECTED,
            id="disabled-and-not-selecting-reports-not-selected",
        ),
        pytest.param(
            PURCHASE, [REDDIT_CONFIG], (), R.NETWORK_NOT_CONFIGURED, id="only-other-network-configured"
        ),
        pytest.param(PURCHASE, [], (), R.NETWORK_NOT_CONFIGURED, id="no-config-at-all"),
    ],
)
def test_configs_owed(
    event_type: EventType, configs: list[Config], owed: tuple[str, ...], reason: R | None
) -> None:
    winner = click()

    decision = decide(conversion(event_type), [winner], configs, DEFAULT_LOOKBACK_US)

    assert decision == Decision(click=winner, owed_config_ids=owed, reason=reason)


@pytest.mark.parametrize(
    ("conv", "clicks", "reason"),
    [
        pytest.param(conversion(erased=True), [click()], R.USER_ERASED, id="erased-despite-click"),
        pytest.param(
            conversion(LAUNCH, first_launch=False, erased=True), [], R.USER_ERASED, id="erased-beats-repeat"
        ),
        pytest.param(conversion(LAUNCH, first_launch=False), [click()], R.REPEAT_LAUNCH, id="repeat-launch"),
        pytest.param(
            conversion(LAUNCH, first_launch=False), [], R.REPEAT_LAUNCH, id="repeat-launch-beats-organic"
        ),
    ],
)
def test_final_reasons_skip_the_click_search(conv: Conversion, clicks: list[Click], reason: R) -> None:
    assert decide(conv, clicks, ALL_CONFIGS, DEFAULT_LOOKBACK_US) == Decision(
        click=None, owed_config_ids=(), reason=reason
    )


def test_first_launch_flag_is_ignored_for_purchases() -> None:
    decision = decide(conversion(PURCHASE, first_launch=False), [click()], ALL_CONFIGS, DEFAULT_LOOKBACK_US)

    assert decision.owed_config_ids == ("tt",)


@pytest.mark.parametrize(
    ("network", "click_id", "reddit_email", "configs", "owed", "reason"),
    [
        pytest.param(REDDIT, None, False, ALL_CONFIGS, (), R.NO_MATCH_KEY, id="reddit-no-click-id-no-email"),
        pytest.param(REDDIT, "", False, ALL_CONFIGS, (), R.NO_MATCH_KEY, id="reddit-empty-click-id-no-email"),
        pytest.param(REDDIT, "rdt", False, ALL_CONFIGS, ("rd",), None, id="reddit-click-id"),
        pytest.param(REDDIT, None, True, ALL_CONFIGS, ("rd",), None, id="reddit-email-only"),
        pytest.param(REDDIT, "rdt", True, ALL_CONFIGS, ("rd",), None, id="reddit-both-keys"),
        pytest.param(TIKTOK, None, False, ALL_CONFIGS, ("tt",), None, id="tiktok-needs-no-click-id"),
        pytest.param(
            REDDIT,
            None,
            False,
            [config("rd", REDDIT, enabled=False)],
            (),
            R.CONFIG_DISABLED,
            id="config-reason-beats-no-match-key",
        ),
    ],
)
def test_reddit_match_key(
    network: Network,
    click_id: str | None,
    reddit_email: bool,
    configs: list[Config],
    owed: tuple[str, ...],
    reason: R | None,
) -> None:
    winner = click(network=network, click_id=click_id)

    decision = decide(conversion(reddit_email=reddit_email), [winner], configs, DEFAULT_LOOKBACK_US)

    assert decision == Decision(click=winner, owed_config_ids=owed, reason=reason)


@pytest.mark.parametrize(
    ("winner", "owed_config_ids", "reason"),
    [
        pytest.param(None, (), None, id="no-postback-without-reason"),
        pytest.param(click(), ("tt",), R.NO_MATCH_KEY, id="postback-with-reason"),
    ],
)
def test_decision_rejects_inconsistent_reason(
    winner: Click | None, owed_config_ids: tuple[str, ...], reason: R | None
) -> None:
    with pytest.raises(ValueError):
        Decision(click=winner, owed_config_ids=owed_config_ids, reason=reason)


@pytest.mark.parametrize(
    ("player_ids", "links", "expected"),
    [
        pytest.param(
            ("u", "b", "e"),
            [("a", "u"), ("x", "v")],
            Player(frozenset({"u"}), frozenset({"a", "b"}), frozenset({"e"})),
            id="user-and-its-linked-anons",
        ),
        pytest.param(
            (None, "b", None),
            [("a", "u"), ("b", "u"), ("x", "v")],
            Player(frozenset({"u"}), frozenset({"a", "b"}), frozenset()),
            id="anon-only-follows-its-user",
        ),
        pytest.param(
            ("u", "b", None),
            [("b", "v"), ("c", "v")],
            Player(frozenset({"u"}), frozenset({"b"}), frozenset()),
            id="user-known-no-hop-through-shared-anon",
        ),
        pytest.param(
            (None, "k", None),
            [("k", "u1"), ("k", "u2"), ("a", "u1"), ("c", "u2"), ("z", "w")],
            Player(frozenset({"u1", "u2"}), frozenset({"k", "a", "c"}), frozenset()),
            id="anon-linked-to-two-users",
        ),
        pytest.param(
            ("", "", ""),
            [("", "u"), ("a", "")],
            Player(frozenset(), frozenset(), frozenset()),
            id="empty-ids-are-absent",
        ),
    ],
)
def test_resolve_player(
    player_ids: tuple[str | None, str | None, str | None], links: list[tuple[str, str]], expected: Player
) -> None:
    # A one-shot iterator: the links must be read once only.
    assert resolve_player(*player_ids, links=iter(links)) == expected


CHAIN_LINKS = [("anon-a", "user-u"), ("anon-b", "user-u"), ("anon-x", "user-v")]


@pytest.mark.parametrize(
    ("player_ids", "click_ids", "belongs"),
    [
        pytest.param(("user-u", None, None), ("user-u", None, None), True, id="same-user"),
        pytest.param((None, "anon-b", None), (None, "anon-b", None), True, id="same-anon"),
        pytest.param(("user-u", None, None), (None, "anon-a", None), True, id="anon-linked-to-user"),
        pytest.param((None, "anon-b", None), (None, "anon-a", None), True, id="chain-anon-user-anon"),
        pytest.param((None, "anon-b", None), ("user-u", None, None), True, id="chain-to-user"),
        pytest.param(("user-u", None, "hash-1"), (None, "anon-z", "hash-1"), True, id="email-hash"),
        pytest.param(
            ("user-u", "anon-b", "hash-1"), ("user-v", "anon-x", "hash-2"), False, id="unrelated-player"
        ),
        pytest.param((None, "anon-b", None), (None, "anon-x", None), False, id="other-users-anon"),
        pytest.param((None, "anon-unlinked", None), (None, "anon-a", None), False, id="unlinked-anon"),
        pytest.param(("user-w", None, None), (None, None, None), False, id="anonymous-click-matches-nobody"),
        pytest.param((None, None, None), (None, None, None), False, id="no-ids-on-either-side"),
    ],
)
def test_belongs_to(
    player_ids: tuple[str | None, str | None, str | None],
    click_ids: tuple[str | None, str | None, str | None],
    belongs: bool,
) -> None:
    player = resolve_player(*player_ids, links=CHAIN_LINKS)
    user_id, anonymous_id, email_hash = click_ids

    assert (
        belongs_to(click(user_id=user_id, anonymous_id=anonymous_id, email_hash=email_hash), player)
        is belongs
    )


RECEIVED = T


@pytest.mark.parametrize(
    ("reason", "now_us", "expected"),
    [
        pytest.param(R.ORGANIC, RECEIVED + 1, True, id="organic-soon"),
        pytest.param(R.CLICK_OUTSIDE_WINDOW, RECEIVED + 1, True, id="outside-window-soon"),
        pytest.param(R.ORGANIC, RECEIVED + HOUR, True, id="organic-exactly-at-grace"),
        pytest.param(R.ORGANIC, RECEIVED + HOUR + 1, False, id="organic-after-grace"),
        pytest.param(R.CLICK_OUTSIDE_WINDOW, RECEIVED + HOUR + 1, False, id="outside-window-after-grace"),
        pytest.param(None, RECEIVED + 1, False, id="attributed-keeps-decision"),
        pytest.param(R.NETWORK_NOT_CONFIGURED, RECEIVED + 1, False, id="network-not-configured"),
        pytest.param(R.CONFIG_DISABLED, RECEIVED + 1, False, id="config-disabled"),
        pytest.param(R.EVENT_TYPE_NOT_SELECTED, RECEIVED + 1, False, id="event-type-not-selected"),
        pytest.param(R.NO_MATCH_KEY, RECEIVED + 1, True, id="no-match-key-awaits-a-late-email"),
        pytest.param(R.NO_MATCH_KEY, RECEIVED + HOUR + 1, False, id="no-match-key-after-grace"),
        pytest.param(R.REPEAT_LAUNCH, RECEIVED + 1, False, id="repeat-launch-final"),
        pytest.param(R.USER_ERASED, RECEIVED + 1, False, id="user-erased-final"),
    ],
)
def test_can_reevaluate(reason: R | None, now_us: int, expected: bool) -> None:
    assert can_reevaluate(reason, RECEIVED, now_us, DEFAULT_GRACE_US) is expected


random_click = st.builds(
    Click,
    key=st.text(alphabet="abc", min_size=1, max_size=3),
    network=st.sampled_from(Network),
    click_id=st.one_of(st.none(), st.just("cid")),
    # A narrow time range so that ties, window edges and clicks after the conversion all occur.
    click_time_us=st.sampled_from([T - 8 * DAY, T - 7 * DAY - 1, T - 7 * DAY, T - DAY, T - 1, T, T + 1]),
    user_id=st.none(),
    anonymous_id=st.none(),
    email_hash=st.none(),
)


@given(
    clicks=st.lists(random_click, max_size=8, unique_by=lambda c: c.key),
    event_type=st.sampled_from(EventType),
    reddit_email=st.booleans(),
    data=st.data(),
)
def test_decision_is_invariant_under_click_order(
    clicks: list[Click], event_type: EventType, reddit_email: bool, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(clicks))
    conv = conversion(event_type, reddit_email=reddit_email)

    assert decide(conv, shuffled, ALL_CONFIGS, DEFAULT_LOOKBACK_US) == decide(
        conv, clicks, ALL_CONFIGS, DEFAULT_LOOKBACK_US
    )
