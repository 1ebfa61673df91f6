"""INSERTs a SQLite loop-thread session sends to the driver past SQLAlchemy's execution
(``LoopThreadSession.insert_row``): the same rows, the same errors, a fallback."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from payout_gateway.store import Store
from payout_gateway.store.loop_session import LoopThreadSession, prepared_insert
from tests.store.test_core_writes import bank_account, payout
from tests.store.test_loop_sessions import write_audit_row


def raw_rows(store: Store, table: str) -> list[tuple[Any, ...]]:
    """The table's rows as SQLite holds them, ordered by their first column."""
    path = str(store.session_engine.url.database)
    with sqlite3.connect(path) as connection:
        return list(connection.execute(f"SELECT * FROM {table} ORDER BY 1"))


def through_the_session(self: LoopThreadSession, statement: Any, row: Mapping[str, Any]) -> None:
    """What ``insert_row`` replaced: SQLAlchemy's own execution of the statement."""
    self.sync_session.execute(statement, dict(row))


async def test_rows_sent_to_the_driver_are_stored_as_sqlalchemy_stores_them(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte, not only as read back: cursors and ``ORDER BY`` compare the stored
    datetime text, so a row written one way must sort among rows written the other way."""
    written_here = [bank_account("ba_1"), payout("po_1")]
    async with sqlite_store.session() as session:
        await session.add_bank_account(written_here[0])
        await session.add_payout(written_here[1])
        await write_audit_row(session, "po_1")
    monkeypatch.setattr(LoopThreadSession, "insert_row", through_the_session)
    async with sqlite_store.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
        await session.add_payout(payout("po_2"))
        await write_audit_row(session, "po_2")

    accounts = raw_rows(sqlite_store, "bank_accounts")
    assert [row[0] for row in accounts] == ["ba_1", "ba_2"]
    assert accounts[0][1:] == accounts[1][1:]
    payouts = raw_rows(sqlite_store, "payouts")
    assert [row[0] for row in payouts] == ["po_1", "po_2"]
    assert payouts[0][1:] == payouts[1][1:]
    changes = raw_rows(sqlite_store, "status_changes")
    assert [row[3] for row in changes] == ["po_1", "po_2"]  # object_id
    assert changes[0][1:3] + changes[0][4:] == changes[1][1:3] + changes[1][4:]


async def test_a_refused_row_raises_sqlalchemy_s_error_without_the_values(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
    with pytest.raises(IntegrityError) as refused:
        async with sqlite_store.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
    assert isinstance(refused.value.orig, sqlite3.IntegrityError)
    assert "UNIQUE constraint failed: bank_accounts.id" in str(refused.value)
    assert "Ada Lovelace" not in str(refused.value)  # the holder's name is a submitted value
    assert [row[0] for row in raw_rows(sqlite_store, "bank_accounts")] == ["ba_1"]


NOTES = Table(
    "notes",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("text", String),
    Column("kind", String, default=lambda: "computed in Python"),
)


def test_an_insert_needing_more_than_its_values_is_not_prepared() -> None:
    dialect = sqlite.dialect()
    assert prepared_insert(insert(NOTES), ("text",), dialect) is None  # kind's default
    assert prepared_insert(insert(NOTES).returning(NOTES.c.id), ("text", "kind"), dialect) is None
    prepared = prepared_insert(insert(NOTES), ("text", "kind"), dialect)
    assert prepared is not None
    assert prepared.sql == "INSERT INTO notes (text, kind) VALUES (?, ?)"
    assert prepared.values({"kind": "k", "text": "t"}) == ["t", "k"]


async def test_an_insert_that_is_not_prepared_goes_through_the_session(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.session() as session:
        surface = session._session
        assert isinstance(surface, LoopThreadSession)
        surface.sync_session.connection().exec_driver_sql(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT, kind TEXT)"
        )
        before = sqlite_store.statements
        surface.insert_row(insert(NOTES), {"text": "hello"})
        assert sqlite_store.statements - before == 1
    assert raw_rows(sqlite_store, "notes") == [(1, "hello", "computed in Python")]
