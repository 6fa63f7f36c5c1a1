"""on PostgreSQL, the delivery log partitioned by UTC day of attempt_time_us, so retention drops whole days

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 01:00:00
"""

import datetime
import time

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DAY_US = 86_400_000_000
DAYS_AHEAD = 3  # as server/store/log_partitions.py, which keeps them coming after this
_INDEXES = (("ix_delivery_logs_game", "game_id, id"), ("ix_delivery_logs_config", "config_row_id, id"),
            ("ix_delivery_logs_time", "attempt_time_us"))


def _partition_name(day_us: int) -> str:
    # Frozen here: server/store/log_partitions.py names the days it adds the same way.
    return f"delivery_logs_{datetime.datetime.fromtimestamp(day_us // 1_000_000, datetime.UTC):%Y%m%d}"


def upgrade() -> None:
    # SQLite keeps one plain table: its purge deletes in bounded chunks instead.
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE delivery_logs RENAME TO delivery_logs_0005")
    op.execute("ALTER TABLE delivery_logs_0005 RENAME CONSTRAINT delivery_logs_pkey TO delivery_logs_0005_pkey")
    for name, _ in _INDEXES:
        op.execute(f"DROP INDEX {name}")
    # A partitioned table's unique keys must hold the partition key: the primary key becomes (id, attempt_time_us).
    # Ids stay unique by themselves, drawn from the same sequence.
    op.execute("CREATE TABLE delivery_logs (LIKE delivery_logs_0005 INCLUDING DEFAULTS) "
               "PARTITION BY RANGE (attempt_time_us)")
    op.execute("ALTER SEQUENCE delivery_logs_id_seq OWNED BY delivery_logs.id")
    op.execute("CREATE TABLE delivery_logs_default PARTITION OF delivery_logs DEFAULT")
    today_us = time.time_ns() // 1000 // DAY_US * DAY_US
    stored_days = [row[0] for row in op.get_bind().exec_driver_sql(
        f"SELECT DISTINCT attempt_time_us - attempt_time_us % {DAY_US} FROM delivery_logs_0005")]
    for day_us in sorted({*stored_days, *(today_us + i * DAY_US for i in range(DAYS_AHEAD + 1))}):
        op.execute(f"CREATE TABLE {_partition_name(day_us)} PARTITION OF delivery_logs "
                   f"FOR VALUES FROM ({day_us}) TO ({day_us + DAY_US})")
    # Copied before the keys and indexes exist: building them once is faster than keeping them up row by row.
    op.execute("INSERT INTO delivery_logs SELECT * FROM delivery_logs_0005")
    op.execute("DROP TABLE delivery_logs_0005")
    op.execute("ALTER TABLE delivery_logs ADD CONSTRAINT delivery_logs_pkey PRIMARY KEY (id, attempt_time_us)")
    for name, columns in _INDEXES:
        op.execute(f"CREATE INDEX {name} ON delivery_logs ({columns})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE delivery_logs RENAME TO delivery_logs_partitioned")
    for name, _ in _INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE delivery_logs_partitioned DROP CONSTRAINT delivery_logs_pkey")
    op.execute("CREATE TABLE delivery_logs (LIKE delivery_logs_partitioned INCLUDING DEFAULTS)")
    op.execute("ALTER SEQUENCE delivery_logs_id_seq OWNED BY delivery_logs.id")
    op.execute("INSERT INTO delivery_logs SELECT * FROM delivery_logs_partitioned")
    op.execute("DROP TABLE delivery_logs_partitioned")
    op.execute("ALTER TABLE delivery_logs ADD CONSTRAINT delivery_logs_pkey PRIMARY KEY (id)")
    for name, columns in _INDEXES:
        op.execute(f"CREATE INDEX {name} ON delivery_logs ({columns})")
