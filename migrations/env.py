"""Alembic environment, configured in code (registry.db.alembic_config) rather than alembic.ini,
so `retain db upgrade` works from an installed package."""
from __future__ import annotations

from alembic import context

from registry.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from registry.db import make_engine

        engine = make_engine(config.get_main_option("sqlalchemy.url"))
    # Two processes opening an old registry at once must not both migrate it: SQLite takes the
    # write lock up front (BEGIN IMMEDIATE, see registry.db), PostgreSQL an advisory lock; the
    # second then finds the schema current and does nothing.
    with engine.connect().execution_options(registry_write=True) as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things in place; batch mode copies the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # Alembic takes SQLite for non-transactional DDL and commits after every revision;
            # a second process queued on BEGIN IMMEDIATE then slips in between, reads a stale
            # revision and re-runs the next one ("duplicate column name"). SQLite's DDL is
            # transactional, so run the whole upgrade as one transaction, as on PostgreSQL.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7243911)")
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `retain db upgrade` against a database")
run_migrations_online()
