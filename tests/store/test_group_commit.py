"""SQLite write sessions queued together share one transaction and one COMMIT: each one's
changes are undone alone when its block raises, and a failed COMMIT fails every one of them."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from payout_gateway.store import Store
from payout_gateway.store.database import StoreSession
from tests.support.store_errors import caused_by, raises_store_unavailable


async def audit(session: StoreSession, object_id: str, organization_id: str = "org_a") -> None:
    await session.record_status_change(
        organization_id=organization_id,
        object_type="bank_account",
        object_id=object_id,
        from_status=None,
        to_status="PENDING",
        provider_status="pending",
        source="provider_response",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def audited_ids(sqlite_store: Store) -> list[str]:
    async with sqlite_store.session(write=False) as session:
        changes = await session.status_changes("org_a", first=100)
    return sorted(change.object_id for change in changes)


def count_commits(sqlite_store: Store) -> list[str]:
    """One entry per COMMIT sent (SQLAlchemy's event comes just before it)."""
    commits: list[str] = []

    def on_commit(_connection: Any) -> None:
        commits.append("COMMIT")

    event.listen(sqlite_store.session_engine, "commit", on_commit)
    return commits


async def first_of_a_group(sqlite_store: Store, writing: asyncio.Event) -> None:
    """Writes ba_first, then holds its group open a moment: the writers that queue up
    meanwhile join its transaction."""
    async with sqlite_store.session() as session:
        writing.set()
        await audit(session, "ba_first")
        await asyncio.sleep(0.05)


async def test_writers_queued_together_share_one_commit(sqlite_store: Store) -> None:
    commits = count_commits(sqlite_store)

    async def write(n: int) -> None:
        async with sqlite_store.session() as session:
            await audit(session, f"ba_{n}")

    await asyncio.gather(*(write(n) for n in range(10)))
    assert await audited_ids(sqlite_store) == sorted(f"ba_{n}" for n in range(10))
    # Ten writers queued at once: far fewer COMMITs than writers (one per group).
    assert 1 <= len(commits) < 10


async def test_a_writer_returns_only_once_its_group_has_committed(
    sqlite_store: Store, tmp_path: Path
) -> None:
    other = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")  # another process's view
    try:
        async with sqlite_store.session() as session:
            await audit(session, "ba_1")
        async with other.session(write=False) as session:
            changes = await session.status_changes("org_a", first=10)
        assert [change.object_id for change in changes] == ["ba_1"]
    finally:
        await other.dispose()


async def test_a_writer_that_raises_loses_only_its_own_changes(sqlite_store: Store) -> None:
    started = asyncio.Event()

    async def good(n: int) -> None:
        await started.wait()
        async with sqlite_store.session() as session:
            await audit(session, f"ba_good_{n}")

    async def bad() -> None:
        async with sqlite_store.session() as session:
            started.set()
            await audit(session, "ba_bad")
            # Yields to the loop with the write queue held: the good writers queue up behind
            # this one and join its transaction.
            await asyncio.sleep(0.05)
            raise RuntimeError("after writing")

    outcomes = await asyncio.gather(bad(), good(1), good(2), return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1:] == [None, None]
    assert await audited_ids(sqlite_store) == ["ba_good_1", "ba_good_2"]


async def test_a_later_writer_that_raises_loses_only_its_own_changes(
    sqlite_store: Store,
) -> None:
    first_writing = asyncio.Event()

    async def failing() -> None:
        await first_writing.wait()
        async with sqlite_store.session() as session:
            await audit(session, "ba_failing")
            raise RuntimeError("after writing")

    async def last() -> None:
        await first_writing.wait()
        async with sqlite_store.session() as session:
            await audit(session, "ba_last")

    commits = count_commits(sqlite_store)
    outcomes = await asyncio.gather(
        first_of_a_group(sqlite_store, first_writing), failing(), last(), return_exceptions=True
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], RuntimeError)
    assert commits == ["COMMIT"]  # one group: the failure was undone within it
    assert await audited_ids(sqlite_store) == ["ba_first", "ba_last"]


async def test_a_later_writer_s_savepoint_is_sent_to_sqlite_as_is(sqlite_store: Store) -> None:
    """A group's later writers get a savepoint each without SQLAlchemy's nested-transaction
    machinery (loop_session.begin_nested): the statements SQLite receives, and each
    writer's changes kept or undone as its block ends."""
    statements: list[str] = []
    first_writing = asyncio.Event()

    def trace(statement: str) -> None:
        if statement.split()[0] in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
            statements.append(statement)

    async def first() -> None:
        async with sqlite_store.session() as session:
            # The group's one connection: every writer of the group uses it.
            connection = await session._session.connection(execution_options={})
            connection.connection.driver_connection.set_trace_callback(trace)
            first_writing.set()
            await audit(session, "ba_first")
            await asyncio.sleep(0.05)  # the others queue up and join this transaction

    async def later(object_id: str, fail: bool) -> None:
        await first_writing.wait()
        async with sqlite_store.session() as session:
            await audit(session, object_id)
            if fail:
                raise RuntimeError("after writing")

    outcomes = await asyncio.gather(
        first(), later("ba_failing", True), later("ba_kept", False), return_exceptions=True
    )
    assert isinstance(outcomes[1], RuntimeError)
    assert statements == [
        "SAVEPOINT writer",
        "ROLLBACK TO writer",
        "RELEASE writer",
        "SAVEPOINT writer",
        "RELEASE writer",
    ]
    assert await audited_ids(sqlite_store) == ["ba_first", "ba_kept"]


async def test_a_transaction_sqlite_rolled_back_fails_its_whole_group(sqlite_store: Store) -> None:
    """SQLite may roll a whole transaction back on its own (a full disk, an I/O error): the
    group's earlier writes are then gone, so every writer of the group must fail, and a writer
    joining after it must not write outside the transaction."""
    first_writing = asyncio.Event()

    async def hit_by_the_rollback() -> None:
        await first_writing.wait()
        async with sqlite_store.session() as session:
            await audit(session, "ba_second")
            # What SQLite does on SQLITE_FULL or SQLITE_IOERR: the transaction ends.
            await session._session.execute(text("ROLLBACK"))
            raise OSError("disk full")

    async def joins_after() -> None:
        await first_writing.wait()
        await asyncio.sleep(0)
        async with sqlite_store.session() as session:
            await audit(session, "ba_third")

    outcomes = await asyncio.gather(
        first_of_a_group(sqlite_store, first_writing),
        hit_by_the_rollback(),
        joins_after(),
        return_exceptions=True,
    )
    assert caused_by(outcomes[1], OSError, "disk full")
    assert caused_by(outcomes[0], sqlite3.OperationalError)
    assert caused_by(outcomes[2], sqlite3.OperationalError)
    assert await audited_ids(sqlite_store) == []
    # The store goes on: the next writer starts a new transaction.
    async with sqlite_store.session() as session:
        await audit(session, "ba_after")
    assert await audited_ids(sqlite_store) == ["ba_after"]


async def test_a_writer_whose_transaction_sqlite_ended_is_not_told_it_was_saved(
    sqlite_store: Store,
) -> None:
    with raises_store_unavailable(sqlite3.OperationalError, match="rolled back by SQLite"):
        async with sqlite_store.session() as session:
            await audit(session, "ba_lost")
            # What SQLite does on SQLITE_FULL; the writer's block ends without noticing.
            await session._session.execute(text("ROLLBACK"))
    assert await audited_ids(sqlite_store) == []


async def test_a_lone_writer_commits_without_a_savepoint(sqlite_store: Store) -> None:
    # What SQLite itself receives: savepoints and some INSERTs bypass SQLAlchemy's events.
    statements: list[str] = []
    async with sqlite_store.session() as session:
        connection = await session._session.connection(execution_options={})
        connection.connection.driver_connection.set_trace_callback(
            lambda statement: statements.append(statement.split()[0])
        )
        await audit(session, "ba_alone")
    assert statements == ["INSERT", "COMMIT"]
    assert await audited_ids(sqlite_store) == ["ba_alone"]


async def test_a_failed_commit_fails_every_writer_of_the_group(sqlite_store: Store) -> None:
    started = asyncio.Event()

    async def breaks_the_commit() -> None:
        async with sqlite_store.session() as session:
            started.set()
            # Foreign keys checked at COMMIT only: the row for an unknown organization is
            # accepted now and fails the whole transaction's COMMIT.
            await session._session.execute(text("PRAGMA defer_foreign_keys=ON"))
            await audit(session, "ba_orphan", organization_id="org_missing")
            await asyncio.sleep(0.05)

    async def innocent() -> None:
        await started.wait()
        async with sqlite_store.session() as session:
            await audit(session, "ba_innocent")

    outcomes = await asyncio.gather(breaks_the_commit(), innocent(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [IntegrityError, IntegrityError]
    assert await audited_ids(sqlite_store) == []
    # The sqlite_store goes on: the next writer starts a new transaction.
    async with sqlite_store.session() as session:
        await audit(session, "ba_after")
    assert await audited_ids(sqlite_store) == ["ba_after"]


async def test_a_cancelled_writer_does_not_cancel_its_groups_commit(sqlite_store: Store) -> None:
    # The commit thread busy: the group's COMMIT waits, and so do its writers.
    assert sqlite_store._commit_thread is not None
    gate = threading.Event()
    sqlite_store._commit_thread.call(gate.wait)
    started = asyncio.Event()

    async def write(object_id: str) -> None:
        async with sqlite_store.session() as session:
            started.set()
            await audit(session, object_id)
            await asyncio.sleep(0.05)

    try:
        first = asyncio.create_task(write("ba_first"))
        await started.wait()
        second = asyncio.create_task(write("ba_second"))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    finally:
        gate.set()
    await asyncio.wait_for(second, 5)
    # Cancelled while waiting for the COMMIT, not before: its row is committed with the rest.
    assert await audited_ids(sqlite_store) == ["ba_first", "ba_second"]


async def test_a_cancelled_committer_waits_for_the_commit_thread_before_closing(
    sqlite_store: Store,
) -> None:
    """The COMMIT runs on in its thread when the task awaiting it is cancelled: the session
    is closed only once it is over, and the rows are committed."""
    assert sqlite_store._commit_thread is not None
    gate = threading.Event()
    sqlite_store._commit_thread.call(gate.wait)
    written = asyncio.Event()

    async def write() -> None:
        async with sqlite_store.session() as session:
            await audit(session, "ba_cancelled")
            written.set()

    try:
        writer = asyncio.create_task(write())
        await written.wait()
        await asyncio.sleep(0.05)  # the committer task now waits on the busy commit thread
        committers = list(sqlite_store._committers)
        assert len(committers) == 1
        committers[0].cancel()
        await asyncio.sleep(0.1)
        assert not committers[0].done()  # still waiting for the thread, the session open
    finally:
        gate.set()
    await asyncio.gather(committers[0], return_exceptions=True)
    assert committers[0].cancelled()
    await asyncio.gather(writer, return_exceptions=True)
    assert await audited_ids(sqlite_store) == ["ba_cancelled"]
