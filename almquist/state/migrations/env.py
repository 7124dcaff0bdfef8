"""Alembic's environment for the durable state: run by `almquist.state.store.migrate` on an open connection
(no alembic.ini; the store passes its connection in `config.attributes["connection"]`)."""

from __future__ import annotations

from alembic import context

from almquist.state.tables import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things; Alembic's batch mode copies the table instead
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
