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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, Executable, ScalarResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, AsyncSessionTransaction

_T = TypeVar("_T")


def _names_mapped_class(statement: Executable) -> bool:
    """Whether the statement needs the ORM: it selects, updates or deletes by a mapped class
    (SQLAlchemy marks such statements for its ORM compile plugin)."""
    return bool(statement._propagate_attrs.get("compile_state_plugin") == "orm")


class ConnectionSession:
    """One transaction on ``connection``: begun by ``begin``, committed as its block ends."""

    __slots__ = ("_connection", "_orm")

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._orm: AsyncSession | None = None

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
            yield
            await self.flush()
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()

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
