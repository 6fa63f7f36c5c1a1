"""the outbox's due indexes hold pending deliveries only

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 01:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    # Plain CREATE/DROP INDEX: both databases do these in place, without the table copy of a batch alter.
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_index("ix_deliveries_config_due", table_name="deliveries")
    op.create_index("ix_deliveries_pending_due", "deliveries", ["next_attempt_time_us"],
                    sqlite_where=_PENDING, postgresql_where=_PENDING)
    op.create_index("ix_deliveries_pending_config_due", "deliveries", ["config_row_id", "next_attempt_time_us"],
                    sqlite_where=_PENDING, postgresql_where=_PENDING)


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_config_due", table_name="deliveries")
    op.drop_index("ix_deliveries_pending_due", table_name="deliveries")
    op.create_index("ix_deliveries_config_due", "deliveries", ["config_row_id", "state", "next_attempt_time_us"])
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_attempt_time_us"])
