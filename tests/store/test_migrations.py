"""Alembic migrations on SQLite and PostgreSQL: head is the models, replicas, adoption, the CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import Connection, inspect, text

from payout_gateway.cli import main
from payout_gateway.domain.enums import Provider
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.settings import Settings
from payout_gateway.store import Store
from payout_gateway.store.migrate import (
    MigrationError,
    advisory_lock_key,
    alembic_config,
    current,
    head,
    upgrade,
)
from payout_gateway.store.tables import Base
from payout_gateway.tenancy import Tenancy
from payout_gateway.web import create_app
from tests.conftest import POSTGRES_URL, drop_postgres_schema

MODEL_TABLES = set(Base.metadata.tables)


@dataclass
class Database:
    """An empty database: a SQLite file, or a fresh schema of the PostgreSQL test database."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Store:
        return Store.from_url(self.url, connect_args=self.connect_args)

    async def upgrade(self, revision: str = "head") -> None:
        await upgrade(self.url, revision, connect_args=self.connect_args)

    async def current(self) -> str | None:
        return await current(self.url, connect_args=self.connect_args)

    async def inspect(self, check: Any) -> Any:
        store = self.store()
        try:
            async with store.engine.connect() as connection:
                return await connection.run_sync(check)
        finally:
            await store.dispose()

    async def tables(self) -> set[str]:
        names: list[str] = await self.inspect(lambda c: inspect(c).get_table_names())
        return set(names)

    async def create_all(self) -> None:
        store = self.store()
        try:
            await store.create_schema()
        finally:
            await store.dispose()


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


@asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[Database]:
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    try:
        yield Database(POSTGRES_URL, {"server_settings": {"search_path": schema}})
    finally:
        await drop_postgres_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/gateway.db")
        return
    async with fresh_postgres_schema() as database:
        yield database


@pytest.fixture
async def postgres() -> AsyncIterator[Database]:
    async with fresh_postgres_schema() as database:
        yield database


async def add_organization(database: Database, name: str) -> None:
    store = database.store()
    try:
        await Tenancy(store, SecretStr("pepper")).create_organization(
            name=name,
            provider=Provider.COMMET,
            credentials=ProviderCredentials(api_key=SecretStr("ck_test")),
            profile=OrganizationProfile(country="US", currency="USD"),
        )
    finally:
        await store.dispose()


async def organization_names(database: Database) -> list[str]:
    store = database.store()
    try:
        async with store.session() as session:
            return [org.name for org in await session.list_organizations()]
    finally:
        await store.dispose()


# --- head is the models ---------------------------------------------------------------------


async def test_upgrade_from_empty_creates_exactly_the_models_tables(database: Database) -> None:
    assert await database.current() is None
    await database.upgrade()
    assert await database.tables() == MODEL_TABLES | {"alembic_version"}
    assert await database.current() == head()


async def test_the_migrated_schema_has_no_drift_from_the_models(database: Database) -> None:
    # A model changed without a migration fails here: write the revision (see the README).
    await database.upgrade()
    assert await database.inspect(differences) == []


async def test_upgrading_twice_is_a_no_op_and_keeps_the_data(database: Database) -> None:
    await database.upgrade()
    await add_organization(database, "kept")
    await database.upgrade()
    assert await database.current() == head()
    assert await organization_names(database) == ["kept"]


async def test_the_store_works_on_the_migrated_schema(database: Database) -> None:
    await database.upgrade()
    store = database.store()
    try:
        async with store.session() as session:
            claimed = await session.record_webhook_event(
                provider=Provider.COMMET,
                event_id="evt_1",
                event_type="payout.paid",
                organization_id=None,
                outcome="applied",
                at=datetime.now(UTC),
            )
            replay = await session.record_webhook_event(
                provider=Provider.COMMET,
                event_id="evt_1",
                event_type="payout.paid",
                organization_id=None,
                outcome="applied",
                at=datetime.now(UTC),
            )
    finally:
        await store.dispose()
    assert (claimed, replay) == (True, False)


# --- databases made by create_all before migrations existed ----------------------------------


async def test_a_create_all_database_is_stamped_head_and_keeps_its_data(
    database: Database,
) -> None:
    await database.create_all()
    await add_organization(database, "from-before")
    await database.upgrade()
    assert await database.current() == head()
    assert await organization_names(database) == ["from-before"]


async def test_a_create_all_database_that_differs_from_the_models_is_refused(
    database: Database,
) -> None:
    await database.create_all()
    store = database.store()
    try:
        async with store.engine.begin() as connection:
            await connection.execute(text("DROP INDEX ix_payouts_org_page"))
    finally:
        await store.dispose()
    with pytest.raises(MigrationError, match="no alembic_version") as refused:
        await database.upgrade()
    assert "ix_payouts_org_page" in str(refused.value)
    assert await database.current() is None
    assert "alembic_version" not in await database.tables()


async def test_a_database_migrated_by_a_newer_version_is_refused_in_words(
    database: Database,
) -> None:
    """A replica (or a rollback) older than the database's schema: said so, not Alembic's
    "Can't locate revision", and the database is left as it is."""
    await database.upgrade()
    store = database.store()
    try:
        async with store.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    finally:
        await store.dispose()
    with pytest.raises(MigrationError) as refused:
        await database.upgrade()
    assert str(refused.value).startswith(
        f"the database is at revision 0999, which this version of payout-gateway does not "
        f"ship (its newest is {head()}): a newer version migrated it."
    )
    assert await database.current() == "0999"


# --- replicas, the alembic API, start-up, the command line -----------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("made_by", ["nothing", "create_all"])
async def test_replicas_upgrading_at_once_on_postgres_all_succeed(
    postgres: Database, made_by: str
) -> None:
    if made_by == "create_all":
        await postgres.create_all()
    await asyncio.gather(*(postgres.upgrade() for _ in range(3)))
    assert await postgres.current() == head()
    assert await postgres.inspect(differences) == []


@pytest.mark.postgres
async def test_an_upgrade_waits_for_the_lock_another_session_holds(postgres: Database) -> None:
    store = postgres.store()
    try:
        async with store.engine.connect() as holder:
            key = advisory_lock_key(str(await holder.scalar(text("SELECT current_schema()"))))
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            waiting = asyncio.create_task(postgres.upgrade())
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            await holder.commit()
            await asyncio.wait_for(waiting, 10)
    finally:
        await store.dispose()
    assert await postgres.current() == head()


def test_the_alembic_command_api_runs_through_the_async_engine(tmp_path: Path) -> None:
    # No connection handed over: env.py builds its own async engine from sqlalchemy.url.
    url = f"sqlite:///{tmp_path}/alembic.db"
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert asyncio.run(current(url)) == head()
    command.downgrade(config, "base")
    database = Database(url)
    assert asyncio.run(database.tables()) == {"alembic_version"}
    assert asyncio.run(current(url)) is None


async def test_asking_for_the_revision_does_not_create_a_sqlite_file(tmp_path: Path) -> None:
    assert await current(f"sqlite:///{tmp_path}/absent/gateway.db") is None
    assert not (tmp_path / "absent").exists()


async def test_app_start_up_migrates_a_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/var/app.db"
    app = create_app(Settings(database_url=url, demo_organizations=False), providers={})
    async with app.router.lifespan_context(app):
        pass
    assert await current(url) == head()
    assert await Database(url).inspect(differences) == []


def test_migrate_command_on_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/var/cli.db"
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", url)
    runner = CliRunner()

    shown = runner.invoke(main, ["migrate", "--show"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == "none (no migration applied)"
    assert not (tmp_path / "var").exists()

    migrated = runner.invoke(main, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert migrated.output.strip() == f"database at revision {head()} (head)"
    again = runner.invoke(main, ["migrate", "--revision", "head"])
    assert again.exit_code == 0, again.output

    shown = runner.invoke(main, ["migrate", "--show"])
    assert shown.output.strip() == f"{head()} (head)"
    assert asyncio.run(Database(url).tables()) == MODEL_TABLES | {"alembic_version"}

    unknown = runner.invoke(main, ["migrate", "--revision", "nope"])
    assert unknown.exit_code == 1
    assert "Can't locate revision identified by 'nope'" in unknown.output


def test_org_commands_migrate_the_database_they_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/org.db"
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", url)
    listed = CliRunner().invoke(main, ["org", "list"])
    assert listed.exit_code == 0, listed.output
    assert asyncio.run(current(url)) == head()
