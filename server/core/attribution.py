"""Attribution rules: which paid click earned a conversion, and which postbacks that conversion owes."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from server.core.types import EventType, Network, NoPostbackReason

_SECOND_US = 1_000_000
_DAY_US = 86_400 * _SECOND_US

DEFAULT_LOOKBACK_US = 7 * _DAY_US
MIN_LOOKBACK_US = 1 * _DAY_US
MAX_LOOKBACK_US = 28 * _DAY_US
DEFAULT_GRACE_US = 3_600 * _SECOND_US


# Clicks, players and conversions are named tuples rather than frozen dataclasses: as immutable, and several times
# cheaper to build; ingest builds them for every click it reads and every conversion it decides.

class Click(NamedTuple):
    """A paid ad click on `network`; `key` is the click event's stable unique id."""

    key: str
    network: Network
    click_id: str | None
    click_time_us: int
    user_id: str | None
    anonymous_id: str | None
    email_hash: str | None


class Player(NamedTuple):
    """Every identity known to be the same player; a click sharing any of them is the player's."""

    user_ids: frozenset[str]
    anonymous_ids: frozenset[str]
    email_hashes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Config:
    config_id: str
    network: Network
    enabled: bool
    trigger_events: frozenset[EventType]


class Conversion(NamedTuple):
    event_type: EventType
    event_time_us: int
    # Only meaningful for game_launch: False means a repeat launch.
    is_first_launch: bool
    # A hashed email is available to send to Reddit, which then needs no click id to match.
    has_reddit_email: bool
    erased: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The winning click (if any), the configs owed a postback, and otherwise why none is owed."""

    click: Click | None
    owed_config_ids: tuple[str, ...]
    reason: NoPostbackReason | None

    def __post_init__(self) -> None:
        if (self.reason is None) != bool(self.owed_config_ids):
            raise ValueError("a decision has a reason exactly when it owes no postback")


def resolve_player(
    user_id: str | None,
    anonymous_id: str | None,
    email_hash: str | None,
    links: Iterable[tuple[str, str]],
) -> Player:
    """The identities of the player behind a conversion, given (anonymous_id, user_id) identity links.

    With a user id: that user, the conversion's anonymous id, and every anonymous id linked to the user.
    With only an anonymous id: that anonymous id, the user(s) it is linked to, and every anonymous id
    linked to those users (anon A -> user U <- anon B: a conversion from B owns A's clicks).
    The walk stops after one user hop on purpose: a shared device linked to several users must not
    merge those users' other devices into one player.
    """
    # Empty identities are treated as absent so that two players without an id never match each other.
    known_links = [(anon, user) for anon, user in links if anon and user]
    if user_id:
        user_ids = {user_id}
    elif anonymous_id:
        user_ids = {user for anon, user in known_links if anon == anonymous_id}
    else:
        user_ids = set()
    anonymous_ids = {anon for anon, user in known_links if user in user_ids}
    if anonymous_id:
        anonymous_ids.add(anonymous_id)
    return Player(
        user_ids=frozenset(user_ids),
        anonymous_ids=frozenset(anonymous_ids),
        email_hashes=frozenset({email_hash} if email_hash else ()),
    )


def belongs_to(click: Click, player: Player) -> bool:
    return (
        click.user_id in player.user_ids
        or click.anonymous_id in player.anonymous_ids
        or click.email_hash in player.email_hashes
    )


def decide(
    conversion: Conversion,
    clicks: Iterable[Click],
    configs: Iterable[Config],
    lookback_us: int,
) -> Decision:
    """Attribute `conversion` to the last qualifying click among the player's `clicks`.

    Reasons, in order of precedence:
    1. USER_ERASED, then REPEAT_LAUNCH: final, no click is looked for.
    2. A click qualifies when 0 <= event_time - click_time <= lookback_us (both edges inclusive). The
       latest wins; equal times go to the greater `key`, so arrival order never matters. With no
       qualifying click: CLICK_OUTSIDE_WINDOW if a click before the conversion exists, else ORGANIC.
    3. Only the winning click's network is credited, even when an earlier click on another network
       qualifies. It has no config at all: NETWORK_NOT_CONFIGURED.
    4. Owed: the network's enabled configs whose trigger events include the event type. None owed:
       CONFIG_DISABLED if some config selects the event type (so every such config is disabled);
       EVENT_TYPE_NOT_SELECTED if no config, enabled or not, selects it. The reason points at the
       change that would have sent the postback.
    5. A Reddit click without a click id, for a conversion without a hashed email: NO_MATCH_KEY.
    """
    if conversion.erased:
        return Decision(click=None, owed_config_ids=(), reason=NoPostbackReason.USER_ERASED)
    if conversion.event_type == EventType.GAME_LAUNCH and not conversion.is_first_launch:
        return Decision(click=None, owed_config_ids=(), reason=NoPostbackReason.REPEAT_LAUNCH)

    before_conversion = [c for c in clicks if c.click_time_us <= conversion.event_time_us]
    in_window = [c for c in before_conversion if conversion.event_time_us - c.click_time_us <= lookback_us]
    if not in_window:
        reason = NoPostbackReason.CLICK_OUTSIDE_WINDOW if before_conversion else NoPostbackReason.ORGANIC
        return Decision(click=None, owed_config_ids=(), reason=reason)
    winner = max(in_window, key=lambda c: (c.click_time_us, c.key))

    network_configs = [c for c in configs if c.network == winner.network]
    if not network_configs:
        return Decision(click=winner, owed_config_ids=(), reason=NoPostbackReason.NETWORK_NOT_CONFIGURED)

    selecting = [c for c in network_configs if conversion.event_type in c.trigger_events]
    owed = tuple(sorted(c.config_id for c in selecting if c.enabled))
    if not owed:
        reason = NoPostbackReason.CONFIG_DISABLED if selecting else NoPostbackReason.EVENT_TYPE_NOT_SELECTED
        return Decision(click=winner, owed_config_ids=(), reason=reason)

    if winner.network == Network.REDDIT and not winner.click_id and not conversion.has_reddit_email:
        return Decision(click=winner, owed_config_ids=(), reason=NoPostbackReason.NO_MATCH_KEY)
    return Decision(click=winner, owed_config_ids=owed, reason=None)


# Reasons late data can change: no click found yet, or a Reddit click whose match key (a hashed email from a
# late identify) has not arrived yet. Nothing was sent for these, so re-deciding cannot credit twice.
AWAITING_LATE_DATA = frozenset({
    NoPostbackReason.ORGANIC, NoPostbackReason.CLICK_OUTSIDE_WINDOW, NoPostbackReason.NO_MATCH_KEY,
})


def can_reevaluate(
    decision_reason: NoPostbackReason | None,
    received_time_us: int,
    now_us: int,
    grace_us: int,
) -> bool:
    """Whether a late click or identity link may still change this conversion's decision.

    A conversion that found no qualifying click can gain one from late data, and a Reddit conversion
    without a match key can gain a hashed email from a late identify. The pixel and the game report
    independently, so their events race only briefly: hence the `grace_us` bound after the conversion's
    arrival (edge inclusive), beyond which the decision is settled. Otherwise, once a click was found the
    decision is kept: re-attributing would risk crediting a second network. Erased users and repeat
    launches are final whatever arrives.
    """
    return decision_reason in AWAITING_LATE_DATA and now_us - received_time_us <= grace_us
