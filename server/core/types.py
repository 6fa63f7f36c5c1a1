"""Small shared vocabulary of the domain: networks, conversion event types, outcomes and reasons."""

from enum import StrEnum


class Network(StrEnum):
    TIKTOK = "tiktok"
    REDDIT = "reddit"


class EventType(StrEnum):
    """A conversion event type: what a postback config can be triggered by."""

    GAME_LAUNCH = "game_launch"
    PURCHASE = "purchase"


class NoPostbackReason(StrEnum):
    """Why a conversion owes no postback; exactly one per conversion that owes none."""

    ORGANIC = "organic"
    CLICK_OUTSIDE_WINDOW = "click_outside_window"
    NETWORK_NOT_CONFIGURED = "network_not_configured"
    CONFIG_DISABLED = "config_disabled"
    EVENT_TYPE_NOT_SELECTED = "event_type_not_selected"
    REPEAT_LAUNCH = "repeat_launch"
    NO_MATCH_KEY = "no_match_key"
    USER_ERASED = "user_erased"


class DeliveryState(StrEnum):
    """State of one owed postback (an outbox row)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureReason(StrEnum):
    """Why a postback failed: what a replay selects by."""

    PAYLOAD = "payload"  # the network refused the event, or it lacks what the network matches by
    CREDENTIALS = "credentials"  # the network refused the credentials (before such postbacks were held instead)
    RETRY_WINDOW_CLOSED = "retry_window_closed"  # transient failures until the network's window closed
    WINDOW_CLOSED_WHILE_HELD = "window_closed_while_held"  # held by its config's open circuit past the window


class AttemptStatus(StrEnum):
    """Status of one HTTP attempt, as the delivery log shows it."""

    SUCCESS = "success"
    FAILED = "failed"
    RETRIED = "retried"


class ConfigHealth(StrEnum):
    HEALTHY = "healthy"
    CREDENTIAL_FAILURES = "credential_failures"
    NO_RECENT_ACTIVITY = "no_recent_activity"
