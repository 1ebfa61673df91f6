"""Schema migrations (Alembic, configured in code): ``upgrade`` to a revision, read ``current``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from payout_gateway.store.database import normalize_database_url
from payout_gateway.store.tables import Base

MIGRATIONS = Path(__file__).with_name("migrations")


class MigrationError(RuntimeError):
    """The database cannot be brought to the wanted revision safely."""


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration without an ini file; ``url`` only for the alembic command API."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head() -> str:
    """The newest revision shipped with the package."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise MigrationError("no migration is shipped with the package")
    return revision


def advisory_lock_key(schema: str) -> int:
    """PostgreSQL advisory-lock key of migrations in ``schema`` (other schemas do not wait)."""
    digest = hashlib.blake2b(f"payout-gateway migrate {schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


async def upgrade(
    url: str, revision: str = "head", *, connect_args: Mapping[str, Any] | None = None
) -> None:
    """Bring the database to ``revision`` in one transaction (PostgreSQL: DDL included).

    PostgreSQL: an advisory lock per schema makes replicas starting together take turns; the
    later ones find the work done. A database made by ``create_all`` before migrations existed
    (the tables, no ``alembic_version``) is stamped head if it matches the models, else refused.
    """
    engine = _engine(url, connect_args)
    try:
        async with engine.connect() as connection:
            lock = await _lock(connection)
            await connection.run_sync(_upgrade, revision)
            await connection.commit()
            if lock is not None:
                # On failure the connection closes instead (NullPool), which frees the lock too.
                await connection.execute(select(func.pg_advisory_unlock(lock)))
                await connection.commit()
    finally:
        await engine.dispose()


async def current(url: str, *, connect_args: Mapping[str, Any] | None = None) -> str | None:
    """The database's revision; None when it has none (empty, or made by ``create_all``)."""
    if _sqlite_file_missing(url):
        return None  # asking must not create the file
    engine = _engine(url, connect_args)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(normalize_database_url(url))
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return False
    return not Path(database).expanduser().exists()


def _engine(url: str, connect_args: Mapping[str, Any] | None) -> AsyncEngine:
    # NullPool: the connection really closes when done, and with it any session-level lock.
    engine = create_async_engine(
        normalize_database_url(url), poolclass=NullPool, connect_args=dict(connect_args or {})
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_busy_timeout)
    return engine


def _sqlite_busy_timeout(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def _lock(connection: AsyncConnection) -> int | None:
    """PostgreSQL: wait for this schema's migration lock (session-level); its key, or None."""
    if connection.dialect.name != "postgresql":
        return None
    schema = await connection.scalar(select(func.current_schema()))
    key = advisory_lock_key(str(schema or ""))
    await connection.execute(select(func.pg_advisory_lock(key)))
    return key


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    found = _current(connection)
    if found is not None and found not in _shipped(config):
        # Alembic says only "Can't locate revision identified by '0003'", which reads as a
        # broken install; it is a replica or a rollback older than the database's schema.
        raise MigrationError(
            f"the database is at revision {found}, which this version of payout-gateway does "
            f"not ship (its newest is {head()}): a newer version migrated it. Run that version "
            "or a later one, or restore the backup taken before that upgrade."
        )
    if found is None:
        existing = set(inspect(connection).get_table_names()) & set(Base.metadata.tables)
        if existing:
            _adopt(connection, config, existing)
    command.upgrade(config, revision)


def _shipped(config: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _adopt(connection: Connection, config: Config, existing: set[str]) -> None:
    """Tables but no version: stamp head when they are exactly the models, refuse otherwise."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences = compare_metadata(context, Base.metadata)
    if differences:
        shown = "\n  ".join(repr(difference) for difference in differences[:10])
        more = f"\n  … and {len(differences) - 10} more" if len(differences) > 10 else ""
        raise MigrationError(
            f"the database has gateway tables ({', '.join(sorted(existing))}) but no "
            "alembic_version, and they differ from this version's models, so no revision can "
            f"be assumed. Differences:\n  {shown}{more}\n"
            "Bring the schema to the models by hand (or restore a matching backup), then run "
            "`payout-gateway migrate` again."
        )
    command.stamp(config, head())
