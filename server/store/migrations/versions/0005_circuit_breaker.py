"""a circuit breaker per postback config, and a failure reason per failed postback

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FAILED = sa.text("state = 'failed'")
# Postbacks failed before this release get their reason from last_error as the dispatcher wrote it ("HTTP 401:
# ...", "HTTP 200, code 40105: ...", "retry window closed: ..."), read with each network's rules, so that a
# replay can select the credential failures of a lapse that happened before the upgrade.
_REASONS = (
    ("retry_window_closed", "last_error LIKE 'retry window closed%'"),
    ("credentials", "(last_error LIKE 'HTTP 401%' OR last_error LIKE 'HTTP 403%' "
                    "OR last_error LIKE 'HTTP 200, code 40001:%' OR last_error LIKE 'HTTP 200, code 40105:%' "
                    "OR (last_error LIKE 'HTTP 404%' AND config_row_id IN "
                    "(SELECT id FROM postback_configs WHERE network = 'reddit')))"),
    ("payload", "(last_error LIKE 'HTTP 4%' OR last_error LIKE 'HTTP 200, code 4%' "
                "OR last_error LIKE 'Reddit needs a click id%')"),
)


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX: both databases do these in place, without a table copy.
    op.add_column("postback_configs", sa.Column("circuit_cause", sa.String(length=16), nullable=True))
    op.add_column("postback_configs", sa.Column("circuit_open_time_us", sa.BigInteger(), nullable=True))
    op.add_column("postback_configs", sa.Column("circuit_probe_time_us", sa.BigInteger(), nullable=True))
    op.add_column("postback_configs", sa.Column("circuit_probing", sa.Boolean(), nullable=False,
                                                server_default=sa.false()))
    op.add_column("postback_configs", sa.Column("circuit_failed_probes", sa.Integer(), nullable=False,
                                                server_default="0"))
    op.add_column("postback_configs", sa.Column("circuit_strain", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("deliveries", sa.Column("failure_reason", sa.String(length=32), nullable=True))
    for reason, condition in _REASONS:
        op.execute(f"UPDATE deliveries SET failure_reason = '{reason}' "
                   f"WHERE state = 'failed' AND failure_reason IS NULL AND {condition}")
    op.create_index("ix_deliveries_failed_config_create", "deliveries", ["config_row_id", "create_time_us"],
                    sqlite_where=_FAILED, postgresql_where=_FAILED)


def downgrade() -> None:
    op.drop_index("ix_deliveries_failed_config_create", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("failure_reason")
    with op.batch_alter_table("postback_configs") as batch:
        for column in ("circuit_strain", "circuit_failed_probes", "circuit_probing", "circuit_probe_time_us",
                       "circuit_open_time_us", "circuit_cause"):
            batch.drop_column(column)
