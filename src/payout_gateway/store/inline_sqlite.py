"""An aiosqlite-shaped SQLite connection that runs statements on the event loop's own thread.

SQLAlchemy's aiosqlite dialect takes it through ``create_async_engine(async_creator=...)``. The
store's sessions no longer go through it (``loop_session`` runs them on a synchronous engine,
without SQLAlchemy's greenlet bridge); it serves the async engine's own connections: migrations,
schema set-up and the readiness check.

aiosqlite gives every connection a thread and hands it each call (a cursor, an execute, a
fetch, a close: three or four round trips per statement, each a queue put, a thread wake-up and
a ``call_soon_threadsafe``); on the gateway's write path those hand-offs cost several times
the SQL itself. SQLite answers in microseconds from its page cache, so the statements run in
place here and only the one call that waits on the disk, the ``COMMIT`` of a transaction that
wrote (an fsync of the WAL), goes to a thread, keeping the event loop free while it lasts.

What could otherwise block the loop is SQLite's busy wait for another process's write lock:
``begin("IMMEDIATE")`` asks for that lock without waiting (the Store retries it asynchronously),
and inside a write transaction that holds it nothing waits in WAL mode.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Literal

BUSY_TIMEOUT_MS = 5000


class InlineCursor:
    """The subset of ``aiosqlite.Cursor`` SQLAlchemy's adapter calls."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        if size is None:
            return self._cursor.fetchmany()
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _ImmediateQueue:
    """Stands in for aiosqlite's request queue, which SQLAlchemy's ``isolation_level`` setter
    feeds directly: the function runs at once."""

    __slots__ = ()

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(error)


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` SQLAlchemy's adapter calls."""

    def __init__(self, connection: sqlite3.Connection, commits: Executor) -> None:
        # Both names are aiosqlite's: SQLAlchemy's adapter reads ``_connection`` (None once
        # closed) to decide whether a rollback or commit has anything to end.
        self._connection: sqlite3.Connection | None = connection
        self._tx = _ImmediateQueue()
        self._commits = commits
        self._changes_at_begin = connection.total_changes

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None) -> None:
        self._conn.isolation_level = value

    def cursor(self) -> InlineCursor:
        # SQLAlchemy's adapter enters what this returns (``await cursor.__aenter__()``).
        return InlineCursor(self._conn.cursor())

    def begin(self, mode: str) -> None:
        begin(self._conn, mode)
        self._changes_at_begin = self._conn.total_changes

    async def commit(self) -> None:
        if not self._conn.in_transaction:
            return
        if self._conn.total_changes == self._changes_at_begin:
            # Nothing written: no fsync to wait for.
            self._commit_or_roll_back()
            return
        await asyncio.get_running_loop().run_in_executor(self._commits, self._commit_or_roll_back)

    def _commit_or_roll_back(self) -> None:
        """COMMIT; if it fails, the transaction is rolled back before the error is raised.
        SQLite can keep a transaction open after a failed COMMIT (deferred constraints, a
        full disk), and SQLAlchemy, taking the transaction for ended, does not roll it back:
        the pooled connection would then refuse every later BEGIN."""
        try:
            self._conn.commit()
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


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


def inline_connector(path: str | Path, commits: Executor) -> Callable[[], Any]:
    """The ``async_creator`` for ``create_async_engine``: opens ``path`` for use on the loop
    thread; a transaction's COMMIT runs on ``commits`` (one thread, so commits keep order)."""

    async def connect() -> InlineConnection:
        # check_same_thread off: the COMMIT runs on the commit thread while the loop waits.
        connection = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        return InlineConnection(connection, commits)

    return connect
