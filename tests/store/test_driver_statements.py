"""Statements a SQLite loop-thread session sends to the driver past SQLAlchemy's execution
(``LoopThreadSession.write_row`` and ``read_value``): the same rows, counts, values and errors
as through the session, and a fallback for what cannot be sent as is."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, literal, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from payout_gateway.store import Store, database
from payout_gateway.store.loop_session import LoopThreadSession
from payout_gateway.store.prepared import prepared_read, prepared_write
from tests.store.test_core_writes import T0, bank_account, idempotency_record, payout
from tests.store.test_loop_sessions import write_audit_row


def raw_rows(store: Store, table: str) -> list[tuple[Any, ...]]:
    """The table's rows as SQLite holds them, ordered by their first column."""
    path = str(store.session_engine.url.database)
    with sqlite3.connect(path) as connection:
        return list(connection.execute(f"SELECT * FROM {table} ORDER BY 1"))


def through_the_session(self: LoopThreadSession, statement: Any, row: Mapping[str, Any]) -> int:
    """What ``write_row`` replaced: SQLAlchemy's own execution of the statement."""
    return int(self.sync_session.execute(statement, dict(row)).rowcount)


def read_through_the_session(
    self: LoopThreadSession, statement: Any, parameters: Mapping[str, Any]
) -> Any:
    """What ``read_value`` replaced."""
    return self.sync_session.scalar(statement, dict(parameters))


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
    monkeypatch.setattr(LoopThreadSession, "write_row", through_the_session)
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
    assert prepared_write(insert(NOTES), ("text",), dialect) is None  # kind's default
    assert prepared_write(insert(NOTES).returning(NOTES.c.id), ("text", "kind"), dialect) is None
    prepared = prepared_write(insert(NOTES), ("text", "kind"), dialect)
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
        surface.write_row(insert(NOTES), {"text": "hello"})
        assert sqlite_store.statements - before == 1
    assert raw_rows(sqlite_store, "notes") == [(1, "hello", "computed in Python")]


async def keyed_writes(store: Store, key: str) -> list[bool]:
    """An idempotency key claimed twice (the second refused), finished, then released:
    each claim's answer."""
    record = idempotency_record().model_copy(update={"id": f"i_{key}", "key": key})
    async with store.session() as session:
        claims = [await session.claim_idempotency_key(record)]
    async with store.session() as session:
        claims.append(await session.claim_idempotency_key(record.model_copy(update={"id": "x"})))
        await session.finish_idempotency_key(
            record.id, result={"id": "ba_1", "note": "ünïcode"}, expires_at=T0
        )
    async with store.session() as session:
        await session.release_idempotency_key(record.id, at=T0)
    return claims


async def test_idempotency_writes_sent_to_the_driver_match_sqlalchemy_s(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INSERT … ON CONFLICT DO NOTHING and UPDATEs: the same claims answered, the same
    stored bytes, the same statements counted."""
    before = sqlite_store.statements
    assert await keyed_writes(sqlite_store, "here") == [True, False]
    sent_here = sqlite_store.statements - before
    monkeypatch.setattr(LoopThreadSession, "write_row", through_the_session)
    before = sqlite_store.statements
    assert await keyed_writes(sqlite_store, "there") == [True, False]
    assert sqlite_store.statements - before == sent_here == 4

    rows = raw_rows(sqlite_store, "idempotency_records")
    assert [(row[0], row[2]) for row in rows] == [("i_here", "here"), ("i_there", "there")]
    assert rows[0][3:] == rows[1][3:]
    async with sqlite_store.session() as session:
        await session.delete_idempotency_key("i_there")
    monkeypatch.undo()
    async with sqlite_store.session() as session:
        await session.delete_idempotency_key("i_here")
    assert raw_rows(sqlite_store, "idempotency_records") == []


def test_a_statement_binding_a_literal_is_not_prepared() -> None:
    dialect = sqlite.dialect()
    # The take-over's ``state = 'started'`` is a parameter nobody passes.
    assert (
        prepared_write(
            database._TAKE_OVER_IDEMPOTENCY_KEY,
            ("record_id", "expected_attempts", "attempts", "locked_until"),
            dialect,
        )
        is None
    )
    release = prepared_write(
        database._IDEMPOTENCY_KEY_BY_ID_UPDATE, ("record_id", "locked_until"), dialect
    )
    assert release is not None
    assert (
        release.sql
        == "UPDATE idempotency_records SET locked_until=? WHERE idempotency_records.id = ?"
    )
    assert prepared_read(select(NOTES.c.id).where(NOTES.c.text == "t"), (), dialect) is None
    assert prepared_read(select(literal(1)), (), dialect) is None


# A bank account's creation time by id: a value its column's type converts on the way out.
CREATED_AT = select(database._BANK_ACCOUNTS.c.created_at).where(
    database._BANK_ACCOUNTS.c.id == bindparam("id")
)
# The reads a session sending values past SQLAlchemy is checked with, once org_a has ba_1.
READS_AFTER_BA_1: tuple[tuple[Any, dict[str, str]], ...] = (
    (database._HAS_BANK_ACCOUNTS, {"organization_id": "org_a"}),
    (database._HAS_BANK_ACCOUNTS, {"organization_id": "org_b"}),
    (CREATED_AT, {"id": "ba_1"}),
    (CREATED_AT, {"id": "ba_none"}),
)


async def test_a_value_read_through_the_driver_matches_sqlalchemy_s(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answers() -> list[Any]:
        async with sqlite_store.session(write=False) as session:
            before = sqlite_store.statements
            found = [await session.has_bank_accounts(org) for org in ("org_a", "org_b")]
            assert sqlite_store.statements - before == 2
            return found

    assert await answers() == [False, False]
    async with sqlite_store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
    here = await answers()
    monkeypatch.setattr(LoopThreadSession, "read_value", read_through_the_session)
    assert here == await answers() == [True, False]
    monkeypatch.undo()
    # Values as the column's type gives them: a bool, not SQLite's 1; a datetime, not its text.
    async with sqlite_store.session(write=False) as session:
        surface = session._session
        assert isinstance(surface, LoopThreadSession)
        for statement, parameters in READS_AFTER_BA_1:
            value = surface.read_value(statement, parameters)
            expected = surface.sync_session.scalar(statement, parameters)
            assert (type(value), value) == (type(expected), expected)
        assert surface.read_value(CREATED_AT, {"id": "ba_1"}) == bank_account("ba_1").created_at


async def test_a_value_that_is_not_prepared_is_read_through_the_session(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.session(write=False) as session:
        surface = session._session
        assert isinstance(surface, LoopThreadSession)
        before = sqlite_store.statements
        assert surface.read_value(select(literal(7)), {}) == 7
        assert surface.read_value(select(literal(7)).where(literal(1) == 0), {}) is None
        assert sqlite_store.statements - before == 2
