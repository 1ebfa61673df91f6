"""The SQLite store's sessions: statements on the loop's thread without a greenlet, a writing
COMMIT on the commit thread, another process's write lock waited for without blocking the loop,
and no wait for a pooled connection."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import greenlet
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from payout_gateway.store import Store, database
from payout_gateway.store.database import StoreSession, database_unavailable
from tests.store.test_core_writes import seed
from tests.support.loop_ticks import loop_ticks
from tests.support.store_errors import raises_store_unavailable


async def write_audit_row(session: StoreSession, object_id: str = "ba_1") -> None:
    await session.record_status_change(
        organization_id="org_a",
        object_type="bank_account",
        object_id=object_id,
        from_status=None,
        to_status="PENDING",
        provider_status="pending",
        source="provider_response",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def trace_threads(sqlite_store: Store) -> list[tuple[str, str]]:
    """(thread name, SQL) of every statement SQLite runs on connections opened from now on."""
    seen: list[tuple[str, str]] = []

    def on_connect(dbapi_connection: Any, _record: object) -> None:
        assert isinstance(dbapi_connection, sqlite3.Connection)
        dbapi_connection.set_trace_callback(
            lambda sql: seen.append((threading.current_thread().name, sql))
        )

    event.listen(sqlite_store.session_engine, "connect", on_connect)
    return seen


async def test_statements_run_on_the_loop_thread_and_a_writing_commit_on_the_commit_thread(
    tmp_path: Path,
) -> None:
    sqlite_store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    seen = trace_threads(sqlite_store)
    try:
        await sqlite_store.create_schema()
        await seed(sqlite_store, "a")
        seen.clear()
        async with sqlite_store.session() as session:
            await session.has_bank_accounts("org_a")
            await write_audit_row(session)
        # The busy timeout is switched off around BEGIN IMMEDIATE (see the next tests).
        writes = [(thread, sql) for thread, sql in seen if not sql.startswith("PRAGMA")]
        seen.clear()
        async with sqlite_store.session(write=False) as session:
            await session.has_bank_accounts("org_a")
        reads = list(seen)
    finally:
        await sqlite_store.dispose()

    loop_thread = threading.current_thread().name
    assert writes[0] == (loop_thread, "BEGIN IMMEDIATE")
    assert [thread for thread, sql in writes if sql.startswith(("SELECT", "INSERT"))] == [
        loop_thread,
        loop_thread,
    ]
    assert writes[-1][1] == "COMMIT"
    assert writes[-1][0].startswith("sqlite-commit")
    # A transaction that wrote nothing has no fsync to wait for: it ends on the loop thread.
    assert reads[0] == (loop_thread, "BEGIN DEFERRED")
    assert reads[-1] == (loop_thread, "COMMIT")


def hold_write_lock(path: Path, held: threading.Event, release: threading.Event) -> None:
    """Another process's writer, as far as SQLite can tell: its own connection and thread."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait()
    other.execute("COMMIT")
    other.close()


async def test_a_writer_waits_for_another_connections_lock_without_blocking_the_loop(
    sqlite_store: Store, tmp_path: Path
) -> None:
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "gateway.db", held, release))
    holder.start()
    try:
        await asyncio.to_thread(held.wait)

        async def write() -> bool:
            async with sqlite_store.session() as session:
                return await session.has_bank_accounts("org_a")

        async with loop_ticks() as ticks:
            writing = asyncio.create_task(write())
            await asyncio.sleep(0.5)
            # Still waiting for the lock, and the loop kept running meanwhile (a busy wait in
            # SQLite on this thread would have allowed no tick at all for the whole 0.5 s).
            assert not writing.done()
            assert ticks.count >= 10
            release.set()
            assert await asyncio.wait_for(writing, 5) is False
    finally:
        release.set()
        holder.join()


async def test_a_writer_gives_up_with_database_is_locked_after_the_busy_timeout(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "gateway.db", held, release))
    holder.start()
    try:
        await asyncio.to_thread(held.wait)
        with raises_store_unavailable((OperationalError, sqlite3.OperationalError), "locked"):
            async with sqlite_store.session() as session:
                await session.has_bank_accounts("org_a")
    finally:
        release.set()
        holder.join()
    # The lock released, the sqlite_store writes again: nothing was left half open.
    async with sqlite_store.session() as session:
        assert await session.has_bank_accounts("org_a") is False


async def test_a_failed_write_session_rolls_back_and_keeps_nothing(sqlite_store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_store.session() as session:
            await write_audit_row(session)
            raise RuntimeError("after the write")
    async with sqlite_store.session(write=False) as session:
        assert await session.status_changes("org_a", first=10) == []


async def test_sessions_run_their_statements_outside_any_greenlet(sqlite_store: Store) -> None:
    """No SQLAlchemy greenlet bridge per call (loop_session): statements run directly in the
    loop's own stack."""
    inside_a_greenlet: list[tuple[str, bool]] = []

    async def trace(session: StoreSession) -> None:
        # SQLite's own trace: some INSERTs go to the driver past SQLAlchemy's events.
        connection = await session._session.connection(execution_options={})
        connection.connection.driver_connection.set_trace_callback(
            lambda sql: inside_a_greenlet.append(
                (sql.split()[0], greenlet.getcurrent().parent is not None)
            )
        )

    async with sqlite_store.session() as session:
        await trace(session)
        await write_audit_row(session)
    async with sqlite_store.session(write=False) as session:
        await trace(session)
        assert len(await session.status_changes("org_a", first=10)) == 1
    queries = [entry for entry in inside_a_greenlet if entry[0] in {"INSERT", "SELECT"}]
    assert queries == [
        ("INSERT", False),
        ("SELECT", False),
    ]


async def test_more_open_sessions_than_the_pool_keeps_never_wait_for_a_connection(
    sqlite_store: Store,
) -> None:
    """The loop-thread pool must not make a caller wait for a connection: the wait would block
    the loop, so the sessions that would give one back could never end."""
    # Were the pool bounded, a caller would block the loop until this timeout and then fail:
    # a second here instead of the default half minute per caller.
    sqlite_store.session_engine.pool._timeout = 1  # type: ignore[attr-defined]

    async def read_across_an_await() -> bool:
        async with sqlite_store.session(write=False) as session:
            await session.has_bank_accounts("org_a")  # holds a connection from here on
            await asyncio.sleep(0.01)
            return await session.has_bank_accounts("org_a")

    assert await asyncio.gather(*(read_across_an_await() for _ in range(60))) == [False] * 60


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (TimeoutError(), True),  # asyncpg: a statement or connection attempt past its timeout
        (ConnectionRefusedError(), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (sqlite3.OperationalError("database is locked"), True),  # raised by the store itself
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_are_the_databases(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


async def test_a_statement_sqlite_refuses_is_not_an_outage(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/refused.db")
    await store.create_schema()
    try:
        for write in (True, False):
            # SQLITE_ERROR (no such table, a syntax error): a bug of ours, not the database's.
            with pytest.raises(OperationalError, match="no such table"):
                async with store.session(write=write) as session:
                    await session._session.execute(text("SELECT * FROM no_such_table"))
    finally:
        await store.dispose()


async def test_sqlite_failures_with_a_result_code_are_classified_by_it(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "codes.db")
    with pytest.raises(sqlite3.OperationalError) as refused:
        connection.execute("SELEC 1")
    connection.close()
    assert refused.value.sqlite_errorcode == sqlite3.SQLITE_ERROR
    assert not database_unavailable(refused.value)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert database_unavailable(busy)
    assert database_unavailable(OperationalError("BEGIN", {}, busy))
