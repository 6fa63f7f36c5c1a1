"""publishable API keys keep the web origins allowed to use them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("origins", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    op.drop_column("api_keys", "origins")
