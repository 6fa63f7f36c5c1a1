"""Database tables as typed SQLAlchemy models. Times are Unix microseconds in BIGINT columns: exact, fast, portable."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.core import limits
from server.core.types import DeliveryState

# A column that keeps a request field is sized by the field's limit (server.core.limits), which validation enforces
# before the database sees the value. SQLite would store a longer text; PostgreSQL refuses it.

# SQLite only auto-increments an INTEGER PRIMARY KEY (its rowid); PostgreSQL wants BIGINT for growth.
Id = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


# The outbox's due indexes hold pending deliveries only (partial indexes): a delivery sent or given up leaves them
# for good, so they stay the size of the work still to do, and settling a delivery deletes its entries instead of
# moving them (the record's UPDATE took 6.5 ms per 1,000 deliveries against 3.2). Queries spell the state as this
# literal, which any planner matches against the index's condition: a bound parameter only one that plans for its
# value (SQLite re-plans per binding; a generic plan of PostgreSQL's does not).
PENDING = literal_column(f"'{DeliveryState.PENDING.value}'")
_PENDING_ONLY = {f"{dialect}_where": text(f"state = {PENDING}") for dialect in ("sqlite", "postgresql")}
_FAILED_ONLY = {f"{dialect}_where": text(f"state = '{DeliveryState.FAILED.value}'")
                for dialect in ("sqlite", "postgresql")}


class Game(Base):
    """Per-game settings; a game without a row uses the defaults."""

    __tablename__ = "games"

    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID), primary_key=True)
    attribution_lookback_us: Mapped[int] = mapped_column(BigInteger)
    update_time_us: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """Every accepted event, once per (game, event id). Conversions (launches, purchases) carry their decision."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("game_id", "event_id", name="uq_events_game_event_id"),
        Index("ix_events_game_user", "game_id", "user_id"),
        Index("ix_events_game_anonymous", "game_id", "anonymous_id"),
        Index("ix_events_game_email", "game_id", "email_sha256"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    event_id: Mapped[str] = mapped_column(String(limits.EVENT_ID))
    kind: Mapped[str] = mapped_column(String(16))  # ad_click | identify | game_launch | purchase
    event_time_us: Mapped[int] = mapped_column(BigInteger)
    receive_time_us: Mapped[int] = mapped_column(BigInteger)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(limits.PLAYER_ID))
    anonymous_id: Mapped[str | None] = mapped_column(String(limits.PLAYER_ID))
    # Emails arrive in clear and are stored only as the two networks' different normalised hashes.
    email_sha256: Mapped[str | None] = mapped_column(String(64))
    email_sha256_reddit: Mapped[str | None] = mapped_column(String(64))
    ip_address: Mapped[str | None] = mapped_column(String(limits.IP_ADDRESS))
    user_agent: Mapped[str | None] = mapped_column(String(limits.USER_AGENT))
    # Ad clicks: a paid click has a network.
    network: Mapped[str | None] = mapped_column(String(16))
    click_id: Mapped[str | None] = mapped_column(String(limits.CLICK_ID))
    landing_url: Mapped[str | None] = mapped_column(Text)
    # Purchases.
    value_micros: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    order_id: Mapped[str | None] = mapped_column(String(limits.ORDER_ID))
    item_ids: Mapped[str | None] = mapped_column(Text)  # JSON array
    # Conversions: the attribution decision.
    decision: Mapped[str | None] = mapped_column(String(16))  # postback_owed | no_postback
    no_postback_reason: Mapped[str | None] = mapped_column(String(32))
    attributed_click_event_id: Mapped[str | None] = mapped_column(String(limits.EVENT_ID))
    decide_time_us: Mapped[int | None] = mapped_column(BigInteger)


class IdentityLink(Base):
    """An identify event's link from an anonymous id and/or an email hash to a user id."""

    __tablename__ = "identity_links"
    __table_args__ = (
        Index("ix_identity_links_user", "game_id", "user_id"),
        Index("ix_identity_links_anonymous", "game_id", "anonymous_id"),
        Index("ix_identity_links_email", "game_id", "email_sha256"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    user_id: Mapped[str] = mapped_column(String(limits.PLAYER_ID))
    anonymous_id: Mapped[str | None] = mapped_column(String(limits.PLAYER_ID))
    email_sha256: Mapped[str | None] = mapped_column(String(64))
    email_sha256_reddit: Mapped[str | None] = mapped_column(String(64))
    link_time_us: Mapped[int] = mapped_column(BigInteger)


class PostbackConfig(Base):
    """Where one game's conversions are posted back: a network pixel with encrypted credentials."""

    __tablename__ = "postback_configs"
    __table_args__ = (UniqueConstraint("game_id", "config_id", name="uq_postback_configs_game_config"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    config_id: Mapped[str] = mapped_column(String(limits.RESOURCE_ID))
    display_name: Mapped[str] = mapped_column(String(limits.DISPLAY_NAME))
    network: Mapped[str] = mapped_column(String(16))
    pixel_id: Mapped[str] = mapped_column(String(128))  # made wider than limits.PIXEL_ID, which is enough
    access_token_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    access_token_hint: Mapped[str] = mapped_column(String(16))
    trigger_events: Mapped[str] = mapped_column(String(64))  # comma-separated EventType values
    enabled: Mapped[bool] = mapped_column(Boolean)
    create_time_us: Mapped[int] = mapped_column(BigInteger)
    update_time_us: Mapped[int] = mapped_column(BigInteger)
    credentials_update_time_us: Mapped[int] = mapped_column(BigInteger)
    # Health is derived from these two, kept up to date by the dispatcher.
    last_success_time_us: Mapped[int | None] = mapped_column(BigInteger)
    last_credential_failure_time_us: Mapped[int | None] = mapped_column(BigInteger)
    delete_time_us: Mapped[int | None] = mapped_column(BigInteger)
    # The circuit breaker (server.core.circuit.Circuit), shared by every dispatcher: closed while cause is NULL.
    circuit_cause: Mapped[str | None] = mapped_column(String(16))  # CircuitCause
    circuit_open_time_us: Mapped[int | None] = mapped_column(BigInteger)
    circuit_probe_time_us: Mapped[int | None] = mapped_column(BigInteger)
    circuit_probing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    circuit_failed_probes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    circuit_strain: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Delivery(Base):
    """The outbox: one postback owed by one conversion to one config, and where its delivery stands."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_row_id", "config_row_id", name="uq_deliveries_event_config"),
        Index("ix_deliveries_pending_due", "next_attempt_time_us", **_PENDING_ONLY),
        # A config's due work, oldest first: what the dispatcher claims, and what a disabled config cancels.
        Index("ix_deliveries_pending_config_due", "config_row_id", "next_attempt_time_us", **_PENDING_ONLY),
        # A config's failed postbacks by when they were owed: what a replay looks through.
        Index("ix_deliveries_failed_config_create", "config_row_id", "create_time_us", **_FAILED_ONLY),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    event_row_id: Mapped[int] = mapped_column(Id, ForeignKey("events.id", ondelete="CASCADE"))
    config_row_id: Mapped[int] = mapped_column(Id, ForeignKey("postback_configs.id"))
    state: Mapped[str] = mapped_column(String(16))  # DeliveryState
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_time_us: Mapped[int] = mapped_column(BigInteger)
    first_attempt_time_us: Mapped[int | None] = mapped_column(BigInteger)
    last_attempt_time_us: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(String(32))  # FailureReason, for a failed postback
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expire_time_us: Mapped[int | None] = mapped_column(BigInteger)
    create_time_us: Mapped[int] = mapped_column(BigInteger)


class RenderedPostback(Base):
    """A pending postback's event as its network's request carries it, rendered when the conversion was decided:
    a backlog is sent by reading one row per postback, not by joining its conversion and click and rendering them
    again. The row goes when the postback stops being pending. A pending postback without one (owed before this
    table existed, its game has had an erasure since, or it failed and was replayed) is rendered at send time from
    the rows that remain; so a release that renders differently deletes these rows in its migration."""

    __tablename__ = "rendered_postbacks"

    delivery_id: Mapped[int] = mapped_column(Id, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True)
    # What the delivery log and the retry schedule need of the conversion, without reading it.
    dedup_id: Mapped[str] = mapped_column(String(limits.EVENT_ID))
    event_type: Mapped[str] = mapped_column(String(16))  # EventType
    event_time_us: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class DeliveryLog(Base):
    """One immutable row per HTTP attempt per conversion. No personal data: ids and the network's answer only.

    On PostgreSQL the table is partitioned by UTC day of attempt_time_us (migration 0006, server.store.log_partitions)
    and its primary key is (id, attempt_time_us), as a partitioned table's keys must hold the partition key; SQLite
    keeps one plain table keyed by id, its rowid. Either way ids are unique by themselves, so id is the mapped key.
    Schemas come from the migrations only (Database.migrate), never from create_all."""

    __tablename__ = "delivery_logs"
    __table_args__ = (
        Index("ix_delivery_logs_game", "game_id", "id"),
        Index("ix_delivery_logs_config", "config_row_id", "id"),
        Index("ix_delivery_logs_time", "attempt_time_us"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    config_row_id: Mapped[int] = mapped_column(Id)
    config_id: Mapped[str] = mapped_column(String(limits.RESOURCE_ID))
    config_display_name: Mapped[str] = mapped_column(String(limits.DISPLAY_NAME))
    network: Mapped[str] = mapped_column(String(16))
    attempt_time_us: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # AttemptStatus
    http_status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    attempt_number: Mapped[int] = mapped_column(Integer)
    network_code: Mapped[str | None] = mapped_column(String(limits.NETWORK_CODE))
    network_message: Mapped[str | None] = mapped_column(Text)
    network_request_id: Mapped[str | None] = mapped_column(String(limits.NETWORK_REQUEST_ID))
    conversion_event_id: Mapped[str] = mapped_column(String(limits.EVENT_ID))
    next_attempt_time_us: Mapped[int | None] = mapped_column(BigInteger)


class Erasure(Base):
    """A tombstone for an erased player: later events matching it are accepted but never produce postbacks.
    Holds only hashes of the erased identifiers."""

    __tablename__ = "erasures"
    __table_args__ = (UniqueConstraint("game_id", "subject_sha256", name="uq_erasures_game_subject"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(limits.GAME_ID))
    subject_sha256: Mapped[str] = mapped_column(String(64))
    erase_time_us: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """A caller's API key. Only the key's SHA-256 is kept; the key itself is shown once, when it is created."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_id", name="uq_api_keys_key_id"),
        UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16))  # public: the key starts with pbk_<key_id>_
    key_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # KeyKind
    games: Mapped[str] = mapped_column(Text)  # comma-separated game ids; empty: every game
    origins: Mapped[str] = mapped_column(Text, server_default="")  # publishable keys: comma-separated web origins
    label: Mapped[str] = mapped_column(String(limits.API_KEY_LABEL))
    create_time_us: Mapped[int] = mapped_column(BigInteger)
    revoke_time_us: Mapped[int | None] = mapped_column(BigInteger)
