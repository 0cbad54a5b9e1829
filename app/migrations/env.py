"""Alembic environment: migrations run on the connection ``app.db.upgrade_schema`` passes in
(inside its locked transaction), never on a URL of their own."""

from __future__ import annotations

from alembic import context

from app.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: later migrations copy-and-move tables in batches.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
