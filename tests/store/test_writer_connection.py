"""SQLite write groups run on one connection the store holds: no pool checkout and no ORM
session per group, ORM reads in a group seeing the group's own writes, a failed group rolled
back on it, and a connection left in a transaction closed and replaced."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import RootTransaction, event, text
from sqlalchemy.exc import IntegrityError

from payout_gateway.store import Store
from payout_gateway.store.database import StoreSession
from payout_gateway.store.loop_session import WriteGroupSession
from tests.store.test_core_writes import seed
from tests.store.test_group_commit import audit, audited_ids
from tests.support.store_errors import raises_store_unavailable


async def driver_of(session: StoreSession) -> sqlite3.Connection:
    connection = await session._session.connection(execution_options={})
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def count_checkouts(sqlite_store: Store) -> list[object]:
    checkouts: list[object] = []

    def on_checkout(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        checkouts.append(dbapi_connection)

    event.listen(sqlite_store.session_engine, "checkout", on_checkout)
    return checkouts


async def test_write_groups_one_after_another_run_on_one_connection(sqlite_store: Store) -> None:
    checkouts = count_checkouts(sqlite_store)
    drivers = []
    for number in range(10):
        async with sqlite_store.session() as session:
            await audit(session, f"ba_{number}")
            drivers.append(await driver_of(session))
    assert all(driver is drivers[0] for driver in drivers)
    # The seed's groups opened it already; at most one checkout if they had not.
    assert len(checkouts) <= 1
    assert await audited_ids(sqlite_store) == sorted(f"ba_{number}" for number in range(10))


async def test_rows_written_past_sqlalchemy_need_no_orm_session(sqlite_store: Store) -> None:
    async with sqlite_store.session() as session:
        await audit(session, "ba_1")
        assert await session.has_bank_accounts("org_a") is False
        surface = session._session
        assert isinstance(surface, WriteGroupSession)
        assert surface._session is None


async def test_an_orm_read_in_a_write_group_sees_the_group_s_own_writes(
    sqlite_store: Store,
) -> None:
    first_wrote = asyncio.Event()
    seen: dict[str, list[str]] = {}

    async def first() -> None:
        async with sqlite_store.session() as session:
            await audit(session, "ba_first")
            changes = await session.status_changes("org_a", first=10)  # an ORM query
            seen["first"] = [change.object_id for change in changes]
            first_wrote.set()
            await asyncio.sleep(0.05)  # the second writer joins this group meanwhile

    async def second() -> None:
        await first_wrote.wait()
        async with sqlite_store.session() as session:
            await audit(session, "ba_second")
            changes = await session.status_changes("org_a", first=10)
            seen["second"] = sorted(change.object_id for change in changes)

    await asyncio.gather(first(), second())
    assert seen == {"first": ["ba_first"], "second": ["ba_first", "ba_second"]}
    assert await audited_ids(sqlite_store) == ["ba_first", "ba_second"]


async def test_a_group_whose_writer_raised_is_rolled_back_and_its_connection_kept(
    sqlite_store: Store,
) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_store.session() as session:
            await audit(session, "ba_failed")
            failed = await driver_of(session)
            raise RuntimeError("after the write")
    assert not failed.in_transaction
    async with sqlite_store.session() as session:
        await audit(session, "ba_after")
        assert await driver_of(session) is failed
    assert await audited_ids(sqlite_store) == ["ba_after"]


async def test_a_group_whose_commit_failed_is_rolled_back_and_its_connection_kept(
    sqlite_store: Store,
) -> None:
    with pytest.raises(IntegrityError):
        async with sqlite_store.session() as session:
            # Foreign keys checked at COMMIT only: the COMMIT fails.
            await session._session.execute(text("PRAGMA defer_foreign_keys=ON"))
            await audit(session, "ba_orphan", organization_id="org_missing")
            failed = await driver_of(session)
    assert not failed.in_transaction
    async with sqlite_store.session() as session:
        await audit(session, "ba_after")
        assert await driver_of(session) is failed
    assert await audited_ids(sqlite_store) == ["ba_after"]


async def test_a_connection_whose_rollback_failed_is_closed_and_frees_the_write_lock(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollback = RootTransaction.rollback
    failures: list[str] = []

    def fails_once(self: RootTransaction) -> None:
        if failures:
            rollback(self)
            return
        failures.append("rollback")
        raise OSError("the rollback failed")  # nothing sent: the transaction stays open

    monkeypatch.setattr(RootTransaction, "rollback", fails_once)
    with raises_store_unavailable(OSError, match="the rollback failed"):
        async with sqlite_store.session() as session:
            await audit(session, "ba_failed")
            failed = await driver_of(session)
            raise RuntimeError("after the write")
    assert failures == ["rollback"]
    with pytest.raises(sqlite3.ProgrammingError):
        failed.execute("SELECT 1")  # closed, its transaction with it
    async with sqlite_store.session() as session:  # the file's write lock is free
        await audit(session, "ba_after")
        assert await driver_of(session) is not failed
    assert await audited_ids(sqlite_store) == ["ba_after"]


async def test_dispose_closes_the_writer_connection(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    await store.create_schema()
    await seed(store, "a")
    async with store.session() as session:
        await audit(session, "ba_1")
        writer = await driver_of(session)
    await store.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        writer.execute("SELECT 1")


async def test_dispose_twice_is_harmless(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    await store.create_schema()
    await seed(store, "a")
    await store.dispose()
    await store.dispose()
