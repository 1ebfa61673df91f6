"""PostgreSQL transactions on an AsyncConnection: AsyncSession's surface, Core statements sent
on the connection, an ORM session joined to its transaction only for what needs one.

The store's statements are Core but for a few reads and updates of organizations and keys. An
``AsyncSession`` sends every one through the ORM's execution (its compile-state lookup,
session events, its own transaction books) before the connection's: a Commet add's write
transaction (the account's INSERT and its audit row's, 32 callers) cost 585-735 µs of CPU
through an AsyncSession and 525-649 µs this way, and a served Commet add 1.67 -> 1.52 ms
(bench/PROFILE.md, twentieth round). Here the connection runs them, and a session bound to it
is made on the first statement that names a mapped class, sharing the transaction: what it
reads sees what the connection wrote.

The hot statements (``write_row``, ``read_value``) go further, past SQLAlchemy's execution to
asyncpg itself, in the transaction ``begin`` has SQLAlchemy's asyncpg adapter start: each
statement through ``AsyncConnection`` is a greenlet spawn and SQLAlchemy's execution pipeline
around asyncpg's own call (bench/PROFILE.md, twenty-fourth round: a Paygentic add on PostgreSQL
counted 3.04 M instructions that way, 2.15-2.28 M this way). That uses the adapter's private
members (its transaction, its lock, its error translation) as its own cursor uses them;
constraints.txt pins SQLAlchemy, and tests/store/test_postgres_driver_statements.py fails if
they change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn, Self, TypeVar

from sqlalchemy import Connection, Engine, Executable, ScalarResult, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, AsyncSessionTransaction
from sqlalchemy.sql.dml import UpdateBase

from payout_gateway.store.prepared import PreparedStatement, prepared_read, prepared_write

_T = TypeVar("_T")


def _names_mapped_class(statement: Executable) -> bool:
    """Whether the statement needs the ORM: it selects, updates or deletes by a mapped class
    (SQLAlchemy marks such statements for its ORM compile plugin)."""
    return bool(statement._propagate_attrs.get("compile_state_plugin") == "orm")


class ConnectionSession:
    """One transaction on ``connection``: begun by ``begin``, committed as its block ends."""

    __slots__ = ("_connection", "_orm", "_statement_sent", "commit_failed")

    def __init__(
        self,
        connection: AsyncConnection,
        statement_sent: Callable[[str], None] | None = None,
    ) -> None:
        """``statement_sent`` hears of each statement sent past SQLAlchemy (its
        ``before_cursor_execute`` event does not)."""
        self._connection = connection
        self._orm: AsyncSession | None = None
        self._statement_sent = statement_sent
        # Set when the COMMIT was sent and failed: if the server's answer was lost (a timeout,
        # the connection gone), the server may have committed all the same.
        self.commit_failed = False

    def _session(self) -> AsyncSession:
        if self._orm is None:
            # Joins the connection's transaction; its commit and close leave it alone.
            self._orm = AsyncSession(
                bind=self._connection,
                expire_on_commit=False,
                join_transaction_mode="rollback_only",
            )
        return self._orm

    async def __aenter__(self) -> Self:
        await self._started()
        return self

    async def _started(self) -> None:
        """Checks a connection out of the pool, once."""
        if self._connection.sync_connection is None:
            await self._connection.start()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()

    def add(self, instance: object) -> None:
        self._session().add(instance)

    async def flush(self) -> None:
        if self._orm is not None:
            await self._orm.flush()

    async def get(self, entity: type[_T], ident: Any) -> _T | None:
        return await self._session().get(entity, ident)

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        if _names_mapped_class(statement):
            return await self._session().scalar(statement, params)
        await self.flush()
        return await self._connection.scalar(statement, params)

    async def scalars(self, statement: Executable, params: Any = None) -> ScalarResult[Any]:
        if _names_mapped_class(statement):
            return await self._session().scalars(statement, params)
        await self.flush()
        return await self._connection.scalars(statement, params)

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        if _names_mapped_class(statement):
            return await self._session().execute(statement, params)
        await self.flush()
        return await self._connection.execute(statement, params)

    async def write_row(self, statement: UpdateBase, row: Mapping[str, Any]) -> int:
        """One row's INSERT, UPDATE or DELETE whose result is at most its row count, sent to
        asyncpg as compiled once per statement and set of parameters. Through SQLAlchemy's
        execution when there is no transaction yet (SQLAlchemy's asyncpg adapter begins it on
        its first statement; one sent past it would commit on its own) or when the statement
        needs more than its values (see ``prepared_write``)."""
        driver = self._driver_in_transaction()
        prepared = (
            None
            if driver is None
            else prepared_write(statement, tuple(row), self._connection.dialect)
        )
        if driver is None or prepared is None:
            result = await self.execute(statement, dict(row))
            return int(getattr(result, "rowcount", 0) or 0)
        status = await self._send(driver, prepared, row, driver.execute)
        # asyncpg answers with the command tag: "INSERT 0 1", "UPDATE 2", "DELETE 0".
        return int(status.rpartition(" ")[2])

    async def read_value(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Any:
        """The first column of a SELECT's first row (None without rows), as ``scalar`` reads it
        (the column's type converting the value), sent to asyncpg as ``write_row`` sends."""
        driver = self._driver_in_transaction()
        prepared = (
            None
            if driver is None
            else prepared_read(statement, tuple(parameters), self._connection.dialect)
        )
        if driver is None or prepared is None:
            return await self.scalar(statement, dict(parameters))
        row = await self._send(driver, prepared, parameters, driver.fetchrow)
        if row is None:
            return None
        value = row[0]
        return value if prepared.convert_result is None else prepared.convert_result(value)

    async def _begin_on_the_driver(self) -> None:
        """BEGIN, sent now by SQLAlchemy's asyncpg adapter rather than before the transaction's
        first statement (SQLAlchemy's own BEGIN is a no-op for DB-API drivers; the adapter
        begins asyncpg's transaction lazily), so that the first statement too may go past
        SQLAlchemy. The adapter's transaction, under its lock, as its cursor begins it: its
        COMMIT and ROLLBACK end it as before."""
        sync = self._connection.sync_connection
        assert sync is not None
        adapter: Any = sync.connection.dbapi_connection
        try:
            async with adapter._execute_mutex:
                if adapter._transaction is None:
                    await adapter._start_transaction()
        except BaseException as error:
            await self._raise_as_sqlalchemy(error, "BEGIN", [])

    def _driver_in_transaction(self) -> Any:
        """The asyncpg connection under this session's, if it is in a transaction."""
        connection = self._connection.sync_connection
        if connection is None or connection.closed or connection.invalidated:
            return None
        driver = connection.connection.driver_connection
        return driver if driver is not None and driver.is_in_transaction() else None

    async def _send(
        self,
        driver: Any,
        prepared: PreparedStatement,
        parameters: Mapping[str, Any],
        call: Callable[..., Awaitable[_T]],
    ) -> _T:
        """``call`` (one of the asyncpg connection's methods) with the prepared statement; its
        errors SQLAlchemy's, as its execution raises them: asyncpg's error turned into the
        DB-API one by SQLAlchemy's adapter, wrapped without the values in its message, and the
        connection invalidated when the error says it is lost or the call was cancelled or timed
        out."""
        await self.flush()
        values = prepared.values(parameters)
        if self._statement_sent is not None:
            self._statement_sent(prepared.sql)
        sync = self._connection.sync_connection
        assert sync is not None
        adapter: Any = sync.connection.dbapi_connection
        try:
            # The adapter's lock, which its cursor takes too: two statements awaited at once on
            # one session wait their turns, as through SQLAlchemy, instead of asyncpg refusing
            # the second ("another operation is in progress", which reads as an outage).
            async with adapter._execute_mutex:
                return await call(prepared.sql, *values)
        except BaseException as error:
            await self._raise_as_sqlalchemy(error, prepared.sql, values)

    async def _raise_as_sqlalchemy(
        self, error: BaseException, sql: str, values: list[Any]
    ) -> NoReturn:
        """Raises ``error`` (from BEGIN or a statement sent to asyncpg) as SQLAlchemy's execution
        raises such an error."""
        if not isinstance(error, Exception) or isinstance(error, TimeoutError):
            # Cancelled or timed out (or interrupted), the connection is dropped, as SQLAlchemy's
            # execution drops it: the server may have done what it was sent after all (a BEGIN
            # answered too late leaves a transaction asyncpg's books do not match, which a
            # pooled connection would keep, every later session on it answered as committed
            # and never being), and a ROLLBACK sent to a server that stopped answering would
            # time out in turn, its error standing for the cancellation.
            await self._connection.invalidate(error)
            raise error
        dialect = self._connection.dialect
        dbapi = dialect.loaded_dbapi
        sync = self._connection.sync_connection
        assert sync is not None
        pooled = sync.connection
        try:
            # The adapter's own translation, which its cursor applies to every asyncpg error
            # (and which forgets a transaction the server ended with the connection); what it
            # does not translate it raises as is, as SQLAlchemy's execution does.
            pooled.dbapi_connection._handle_exception(error)  # type: ignore[union-attr]
        except dbapi.Error as translated:
            lost = dialect.is_disconnect(translated, pooled, None)
            if lost:
                await self._connection.invalidate(translated)
            raise DBAPIError.instance(
                sql,
                values,
                translated,
                dbapi.Error,
                hide_parameters=True,
                dialect=dialect,
                connection_invalidated=lost,
            ) from error
        raise error  # not reached: the adapter raises

    def get_bind(self) -> Engine | Connection:
        return self._connection.sync_engine

    async def connection(self, *, execution_options: Mapping[str, Any]) -> AsyncConnection:
        return await self._connection.execution_options(**execution_options)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        """The transaction, committed when the block ends, rolled back if it raises."""
        await self._started()
        transaction = await self._connection.begin()
        try:
            await self._begin_on_the_driver()
            yield
            await self.flush()
        except BaseException as error:
            if isinstance(error, Exception):
                await transaction.rollback()
            else:
                # Cancelled (or interrupted) between statements: the connection is dropped,
                # which ends the transaction, rather than a ROLLBACK sent to a server that may
                # have stopped answering, whose timeout would stand for the cancellation.
                await self._connection.invalidate(error)
            raise
        try:
            await transaction.commit()
        except BaseException as error:
            self.commit_failed = True
            if not isinstance(error, Exception) or isinstance(error, TimeoutError):
                # The COMMIT's answer may still be on its way: a pooled connection would read
                # it as the next session's, or stay in a transaction asyncpg's books forgot.
                await self._connection.invalidate(error)
            raise

    def begin_nested(self) -> AsyncSessionTransaction:
        return self._session().begin_nested()

    async def commit(self) -> None:
        await self.flush()
        transaction = self._connection.get_transaction()
        if transaction is not None:
            await transaction.commit()

    async def close(self) -> None:
        try:
            if self._orm is not None:
                await self._orm.close()
        finally:
            await self._connection.close()
