"""Alembic environment: runs migrations on the connection the service hands over (see Database.migrate)."""

from alembic import context

from server.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `python -m server migrate`, which supplies the database connection")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
