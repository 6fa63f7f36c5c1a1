"""Alembic environment: runs migrations on the connection the service hands over (see Database.migrate)."""

from alembic import context

from server.store.log_partitions import is_partition
from server.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `python -m server migrate`, which supplies the database connection")

# The delivery log's day partitions come and go with time on PostgreSQL: not tables of the models.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  include_name=lambda name, kind, _parents: kind != "table" or not is_partition(name))
with context.begin_transaction():
    context.run_migrations()
