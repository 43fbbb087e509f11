"""Alembic environment: one migration history for the tables of every package.

Each package owns its MetaData; ``target_metadata`` lists them all so autogenerate sees every table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from gateway.db.all_tables import ALL_METADATA
from gateway.db.engine import private_sqlite_file

config = context.config
target_metadata = ALL_METADATA


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # connect_args: the connect timeout gateway.db.engine.alembic_config sets (none for plain `alembic`).
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool, connect_args=config.attributes.get("connect_args", {}))
    private_sqlite_file(config.get_main_option("sqlalchemy.url") or "")  # a new SQLite file: 0600, not the umask's
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
