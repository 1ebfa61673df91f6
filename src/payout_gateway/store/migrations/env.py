"""Alembic environment: ``Base.metadata`` over the caller's connection, else an async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from payout_gateway.store.database import normalize_database_url
from payout_gateway.store.tables import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters a table by copying it; batch mode does that for every ALTER.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_async_engine(url: str) -> None:
    """The ``alembic`` command-line path: no connection was passed, only ``sqlalchemy.url``."""
    engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        # payout_gateway.store.migrate: its connection, its transaction, its lock.
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use `payout-gateway migrate`")
    asyncio.run(run_with_async_engine(url))


main()
