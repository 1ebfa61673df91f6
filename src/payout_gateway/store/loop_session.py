"""SQLite sessions on the event loop's own thread: AsyncSession's surface over a plain Session.

SQLAlchemy's asyncio layer runs each session call in a greenlet and hands every DB-API call back
to the event loop (a spawn per call, two switches per statement). On the gateway's write path
that bridge cost more CPU than the SQL itself: a Commet add's transaction took 885-1,019 µs of
CPU through it and 665-715 µs this way (``bench/store.py``, two interleaved runs each). SQLite
answers from its page cache in microseconds, so a synchronous Session runs its statements in
place here. Only a COMMIT that wrote (the WAL fsync) goes to the commit thread, so the loop
keeps serving while the disk works; a transaction that wrote nothing ends in place.

The other thing that could block the loop, SQLite's busy wait for another process's write lock,
is avoided by the Store: ``BEGIN IMMEDIATE`` asks for the lock without waiting and is retried
asynchronously (see ``begin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import Connection, Engine, Executable, Result, RootTransaction, ScalarResult, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from payout_gateway.store.commit_thread import CommitThread
from payout_gateway.store.prepared import PreparedStatement, prepared_read, prepared_write

_T = TypeVar("_T")
# A result's rows as AsyncSession.execute types them when the statement's columns are unknown.
AnyRows = Result[*tuple[Any, ...]]

# Where the loop engine's ``begin`` hook leaves the connection's change count at BEGIN.
CHANGES_AT_BEGIN = "payout_gateway_changes_at_begin"
BUSY_TIMEOUT_MS = 5000


def begin(connection: sqlite3.Connection, mode: str) -> None:
    """``BEGIN [mode]`` on the event loop's thread. IMMEDIATE takes the file's write lock or
    fails at once with ``database is locked``: waiting for it here would stall the whole loop
    (the Store retries it asynchronously)."""
    if mode == "IMMEDIATE":
        connection.execute("PRAGMA busy_timeout=0")
        try:
            connection.execute("BEGIN IMMEDIATE")
        finally:
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    else:
        connection.execute(f"BEGIN {mode}")


class SessionSurface(Protocol):
    """What the Store uses of a session: AsyncSession has it, and so has LoopThreadSession."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None: ...

    def add(self, instance: object) -> None: ...

    async def flush(self) -> None: ...

    async def get(self, entity: type[_T], ident: Any) -> _T | None: ...

    async def scalar(self, statement: Executable, params: Any = None) -> Any: ...

    async def scalars(self, statement: Executable, params: Any = None) -> ScalarResult[Any]: ...

    async def execute(self, statement: Executable, params: Any = None) -> AnyRows: ...

    def get_bind(self) -> Engine | Connection: ...

    async def connection(self, *, execution_options: Mapping[str, Any]) -> object: ...

    def begin(self) -> AbstractAsyncContextManager[Any]: ...

    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...

    async def commit(self) -> None: ...

    async def close(self) -> None: ...


class LoopThreadSession:
    """A synchronous ``Session`` behind AsyncSession's coroutine methods. Every call but a
    writing COMMIT completes in place, without giving up the loop."""

    __slots__ = ("_commits", "_session", "_statement_sent", "_transaction_lost")

    def __init__(
        self,
        session: Session | None,
        commits: CommitThread,
        statement_sent: Callable[[str], None] | None = None,
    ) -> None:
        """``statement_sent`` hears of each statement that ``write_row`` sends past
        SQLAlchemy (its ``before_cursor_execute`` event does not). ``session`` is None only
        for a subclass that makes its own when asked (``sync_session``)."""
        self._session = session
        self._commits = commits
        self._statement_sent = statement_sent
        # Set when SQLite ended the transaction itself (see begin_nested).
        self._transaction_lost = False

    @property
    def sync_session(self) -> Session:
        assert self._session is not None
        return self._session

    def _bound_connection(self) -> Connection:
        """The connection the transaction runs on."""
        return self.sync_session.connection()

    def _flush(self) -> None:
        """Pending ORM changes sent before a savepoint or COMMIT."""
        self.sync_session.flush()

    def _forget_loaded(self) -> None:
        """Objects loaded by a writer whose savepoint was rolled back are dropped."""
        self.sync_session.expunge_all()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        self.sync_session.close()

    def add(self, instance: object) -> None:
        self.sync_session.add(instance)

    async def flush(self) -> None:
        self.sync_session.flush()

    async def get(self, entity: type[_T], ident: Any) -> _T | None:
        return self.sync_session.get(entity, ident)

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        return self.sync_session.scalar(statement, params)

    async def scalars(self, statement: Executable, params: Any = None) -> ScalarResult[Any]:
        return self.sync_session.scalars(statement, params)

    async def execute(self, statement: Executable, params: Any = None) -> AnyRows:
        return self.sync_session.execute(statement, params)

    def write_row(self, statement: UpdateBase, row: Mapping[str, Any]) -> int:
        """One row's INSERT, UPDATE or DELETE, compiled once per statement and set of
        parameters and sent to the driver as is; the number of rows it changed.

        ``Session.execute`` spends several times SQLite's own work on each execution of an
        already compiled statement (the compiled-cache lookup, an execution context, events,
        result set-up): a Commet add's two rows took 492 µs of CPU per transaction that way
        and 340 µs this way (32 callers). A statement this cannot send as is (Python-side
        defaults, RETURNING, a literal bound in the statement) goes through the session.
        Errors are SQLAlchemy's, as ``execute`` would raise them, without the parameters in
        their message."""
        connection = self._bound_connection()
        prepared = prepared_write(statement, tuple(row), connection.dialect)
        if prepared is None:
            result = self.sync_session.execute(statement, dict(row))
            return int(getattr(result, "rowcount", 0) or 0)
        return self._send(connection, prepared, row).rowcount

    def read_value(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Any:
        """The first column of a SELECT's first row (None without rows), compiled once per
        statement and set of parameters and sent to the driver as is: ``Session.scalar``'s
        answer without its execution pipeline (see ``write_row``), the column's type
        converting the value as it would. A statement this cannot send as is goes through the
        session."""
        connection = self._bound_connection()
        prepared = prepared_read(statement, tuple(parameters), connection.dialect)
        if prepared is None:
            return self.sync_session.scalar(statement, dict(parameters))
        row = self._send(connection, prepared, parameters).fetchone()
        if row is None:
            return None
        value = row[0]
        return value if prepared.convert_result is None else prepared.convert_result(value)

    def _send(
        self, connection: Connection, prepared: PreparedStatement, parameters: Mapping[str, Any]
    ) -> sqlite3.Cursor:
        """The prepared statement to the driver, heard of by ``statement_sent``; its errors
        SQLAlchemy's, as ``execute`` would raise them, without the values in their message."""
        values = prepared.values(parameters)
        if self._statement_sent is not None:
            self._statement_sent(prepared.sql)
        try:
            return _driver_of(connection).execute(prepared.sql, values)
        except sqlite3.Error as error:
            raise DBAPIError.instance(
                prepared.sql, values, error, sqlite3.Error, hide_parameters=True
            ) from error

    def get_bind(self) -> Engine | Connection:
        return self.sync_session.get_bind()

    async def connection(self, *, execution_options: Mapping[str, Any]) -> Connection:
        return self.sync_session.connection(execution_options=dict(execution_options))

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        """A transaction committed (see ``commit``) when the block ends, rolled back if it
        raises."""
        self.sync_session.begin()
        try:
            yield
        except BaseException:
            self.sync_session.rollback()
            raise
        await self.commit()

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """A savepoint sent to the driver as is: what the block writes is undone alone if it
        raises.

        SQLAlchemy's own (``Session.begin_nested``) sends SAVEPOINT and RELEASE through its
        whole statement pipeline and keeps the session's books on both: about a third of a
        Commet add's store CPU when the add is one of a group's writers (``bench/store.py``
        at 32 callers: 304 -> 202 µs). Its books are not needed here: the store writes with
        Core statements only, so a writer leaves no pending ORM changes that a rollback would
        have to undo, and what it loaded is dropped from the session on a rollback.

        If SQLite itself rolled the whole transaction back (it may, on a full disk or an I/O
        error), the savepoint is gone with the group's earlier writes: the session then
        refuses further savepoints and its COMMIT raises, so that no writer of the group
        takes its changes for saved, and none writes outside the transaction.
        """
        driver = _driver_of(self._bound_connection())
        if self._transaction_lost or not driver.in_transaction:
            self._transaction_lost = True
            raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
        self._flush()
        driver.execute("SAVEPOINT writer")
        try:
            yield
            self._flush()
        except BaseException:
            try:
                driver.execute("ROLLBACK TO writer")
                driver.execute("RELEASE writer")
            except sqlite3.Error:
                self._transaction_lost = True
            self._forget_loaded()
            raise
        if not driver.in_transaction:
            self._transaction_lost = True
            raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
        driver.execute("RELEASE writer")

    async def commit(self) -> None:
        session = self.sync_session
        if session.get_transaction() is None:
            return
        session.flush()
        connection = session.connection()
        driver = _driver_of(connection)
        if self._transaction_lost or not driver.in_transaction:
            # SQLite ended the transaction itself: a COMMIT now would succeed and save nothing.
            session.rollback()
            raise sqlite3.OperationalError(
                "the transaction was rolled back by SQLite; nothing of it was saved"
            )
        await self._end_transaction(session, connection, driver)

    async def _end_transaction(
        self,
        transaction: _Committable,
        connection: Connection,
        driver: sqlite3.Connection,
        committed: Callable[[], None] | None = None,
    ) -> None:
        """COMMIT ``transaction``: in place if it wrote nothing, else on the commit thread
        (the WAL's fsync) while the loop goes on. ``committed`` runs right after a COMMIT that
        succeeded, on the thread that sent it; it must not raise."""
        if driver.total_changes == connection.info.get(CHANGES_AT_BEGIN):
            # Nothing written: no fsync to wait for.
            _commit_and_then(transaction, driver, committed)
            return
        committing = self._commits.call(_commit_and_then, transaction, driver, committed)
        try:
            await asyncio.shield(committing)
        except asyncio.CancelledError:
            # The COMMIT goes on in its thread regardless: the connection must not be used
            # (closed, rolled back) on the loop's thread before it is over.
            while not committing.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(committing)
            raise

    async def close(self) -> None:
        self.sync_session.close()


class WriteGroupSession(LoopThreadSession):
    """A SQLite write group's session (see ``Store.session``): its statements go to the
    store's one writer connection, in the transaction the store began on it, and an ORM
    ``Session`` joins that transaction only when a statement needs one (``get``, ``execute``
    and the like; ``write_row`` and ``read_value`` do not).

    Why not a pooled session per group: opening one, checking a connection out of the pool for
    it, SQLAlchemy's transaction books on it, its COMMIT and its close cost 98 µs of CPU on
    the loop's thread for a group that wrote nothing, against 22 µs for a transaction on a
    held connection (this machine, 2026-12-07). Groups are one at a time (the store's write
    lock), so one connection serves them all; at one request at a time every add is a group
    of its own and pays that cost whole.
    """

    __slots__ = ("_connection", "_on_committed", "_transaction")

    def __init__(
        self,
        connection: Connection,
        transaction: RootTransaction,
        commits: CommitThread,
        statement_sent: Callable[[str], None] | None = None,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        """``on_committed`` runs right after the group's COMMIT succeeded, on the commit
        thread, before the event loop hears of it (the store gives the file's writer turn
        back there); it must not raise."""
        super().__init__(None, commits, statement_sent)
        self._connection = connection
        self._transaction = transaction
        self._on_committed = on_committed

    @property
    def sync_session(self) -> Session:
        if self._session is None:
            # rollback_only: the session's own commit and close leave the transaction alone;
            # the group commits or rolls it back here.
            self._session = Session(
                bind=self._connection, expire_on_commit=False, join_transaction_mode="rollback_only"
            )
        return self._session

    def _bound_connection(self) -> Connection:
        return self._connection

    def _flush(self) -> None:
        if self._session is not None:
            self._session.flush()

    def _forget_loaded(self) -> None:
        if self._session is not None:
            self._session.expunge_all()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()

    def get_bind(self) -> Engine | Connection:
        return self._connection

    async def connection(self, *, execution_options: Mapping[str, Any]) -> Connection:
        return self._connection

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        raise TypeError("a write group's transaction is begun by the store")
        yield  # a generator, as the method it overrides

    async def commit(self) -> None:
        self._flush()
        driver = _driver_of(self._connection)
        if self._transaction_lost or not driver.in_transaction:
            # SQLite ended the transaction itself: a COMMIT now would succeed and save nothing.
            self._transaction.rollback()
            raise sqlite3.OperationalError(
                "the transaction was rolled back by SQLite; nothing of it was saved"
            )
        await self._end_transaction(self._transaction, self._connection, driver, self._on_committed)

    async def close(self) -> None:
        """The ORM session closed, and the transaction rolled back unless it was committed (a
        failed COMMIT leaves it on the connection, rolled back by SQLite or by
        ``_commit_or_roll_back``, until this): the connection, the store's, is then ready for
        the next group. Raises if that rollback failed (see ``clean``)."""
        try:
            if self._session is not None:
                self._session.close()
        finally:
            if self._connection.get_transaction() is self._transaction:
                self._transaction.rollback()

    @property
    def clean(self) -> bool:
        """Whether the connection is out of any transaction, fit for the next group."""
        try:
            return (
                self._connection.get_transaction() is None
                and not _driver_of(self._connection).in_transaction
            )
        except Exception:  # closed or invalidated meanwhile: not fit either
            return False


def _driver_of(connection: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a loop-thread session's SQLAlchemy connection."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


class _Committable(Protocol):
    """A Session or a Connection's transaction: what ``_commit_or_roll_back`` commits."""

    def commit(self) -> None: ...


def _commit_and_then(
    transaction: _Committable, driver: sqlite3.Connection, committed: Callable[[], None] | None
) -> None:
    """COMMIT (see ``_commit_or_roll_back``), then ``committed`` if it succeeded."""
    _commit_or_roll_back(transaction, driver)
    if committed is not None:
        committed()


def _commit_or_roll_back(transaction: _Committable, driver: sqlite3.Connection) -> None:
    """COMMIT; if it fails, the transaction is rolled back before the error is raised. SQLite
    can keep a transaction open after a failed COMMIT (deferred constraints, a full disk) while
    SQLAlchemy takes it for ended and skips its rollback when the connection goes back to the
    pool: the connection would then refuse every later BEGIN."""
    try:
        transaction.commit()
    except Exception:
        if driver.in_transaction:
            driver.rollback()
        raise
