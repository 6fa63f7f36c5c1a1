"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:48:17.814521
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("games", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.Column("revoke_time_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
        sa.UniqueConstraint("key_sha256", name="uq_api_keys_key_sha256"),
    )
    op.create_table(
        "delivery_logs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("config_row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("config_id", sa.String(length=63), nullable=False),
        sa.Column("config_display_name", sa.String(length=200), nullable=False),
        sa.Column("network", sa.String(length=16), nullable=False),
        sa.Column("attempt_time_us", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("network_code", sa.String(length=32), nullable=True),
        sa.Column("network_message", sa.Text(), nullable=True),
        sa.Column("network_request_id", sa.String(length=128), nullable=True),
        sa.Column("conversion_event_id", sa.String(length=128), nullable=False),
        sa.Column("next_attempt_time_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_logs", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_logs_config", ["config_row_id", "id"], unique=False)
        batch_op.create_index("ix_delivery_logs_game", ["game_id", "id"], unique=False)
        batch_op.create_index("ix_delivery_logs_time", ["attempt_time_us"], unique=False)

    op.create_table(
        "erasures",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("subject_sha256", sa.String(length=64), nullable=False),
        sa.Column("erase_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("game_id", "subject_sha256", name="uq_erasures_game_subject"),
    )
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event_time_us", sa.BigInteger(), nullable=False),
        sa.Column("receive_time_us", sa.BigInteger(), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("anonymous_id", sa.String(length=128), nullable=True),
        sa.Column("email_sha256", sa.String(length=64), nullable=True),
        sa.Column("email_sha256_reddit", sa.String(length=64), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("network", sa.String(length=16), nullable=True),
        sa.Column("click_id", sa.String(length=512), nullable=True),
        sa.Column("landing_url", sa.Text(), nullable=True),
        sa.Column("value_micros", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("item_ids", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("no_postback_reason", sa.String(length=32), nullable=True),
        sa.Column("attributed_click_event_id", sa.String(length=128), nullable=True),
        sa.Column("decide_time_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("game_id", "event_id", name="uq_events_game_event_id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_game_anonymous", ["game_id", "anonymous_id"], unique=False)
        batch_op.create_index("ix_events_game_email", ["game_id", "email_sha256"], unique=False)
        batch_op.create_index("ix_events_game_user", ["game_id", "user_id"], unique=False)

    op.create_table(
        "games",
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("attribution_lookback_us", sa.BigInteger(), nullable=False),
        sa.Column("update_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("game_id"),
    )
    op.create_table(
        "identity_links",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("anonymous_id", sa.String(length=128), nullable=True),
        sa.Column("email_sha256", sa.String(length=64), nullable=True),
        sa.Column("email_sha256_reddit", sa.String(length=64), nullable=True),
        sa.Column("link_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.create_index("ix_identity_links_anonymous", ["game_id", "anonymous_id"], unique=False)
        batch_op.create_index("ix_identity_links_email", ["game_id", "email_sha256"], unique=False)
        batch_op.create_index("ix_identity_links_user", ["game_id", "user_id"], unique=False)

    op.create_table(
        "postback_configs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("config_id", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("network", sa.String(length=16), nullable=False),
        sa.Column("pixel_id", sa.String(length=128), nullable=False),
        sa.Column("access_token_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("access_token_hint", sa.String(length=16), nullable=False),
        sa.Column("trigger_events", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.Column("update_time_us", sa.BigInteger(), nullable=False),
        sa.Column("credentials_update_time_us", sa.BigInteger(), nullable=False),
        sa.Column("last_success_time_us", sa.BigInteger(), nullable=True),
        sa.Column("last_credential_failure_time_us", sa.BigInteger(), nullable=True),
        sa.Column("delete_time_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("game_id", "config_id", name="uq_postback_configs_game_config"),
    )
    op.create_table(
        "deliveries",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("game_id", sa.String(length=63), nullable=False),
        sa.Column("event_row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("config_row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time_us", sa.BigInteger(), nullable=False),
        sa.Column("first_attempt_time_us", sa.BigInteger(), nullable=True),
        sa.Column("last_attempt_time_us", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expire_time_us", sa.BigInteger(), nullable=True),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_row_id"],
            ["postback_configs.id"],
        ),
        sa.ForeignKeyConstraint(["event_row_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_row_id", "config_row_id", name="uq_deliveries_event_config"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_config_due", ["config_row_id", "state", "next_attempt_time_us"], unique=False
        )
        batch_op.create_index("ix_deliveries_due", ["state", "next_attempt_time_us"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.drop_index("ix_deliveries_config_due")

    op.drop_table("deliveries")
    op.drop_table("postback_configs")
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_links_user")
        batch_op.drop_index("ix_identity_links_email")
        batch_op.drop_index("ix_identity_links_anonymous")

    op.drop_table("identity_links")
    op.drop_table("games")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_game_user")
        batch_op.drop_index("ix_events_game_email")
        batch_op.drop_index("ix_events_game_anonymous")

    op.drop_table("events")
    op.drop_table("erasures")
    with op.batch_alter_table("delivery_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_logs_time")
        batch_op.drop_index("ix_delivery_logs_game")
        batch_op.drop_index("ix_delivery_logs_config")

    op.drop_table("delivery_logs")
    op.drop_table("api_keys")
