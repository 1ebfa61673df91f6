"""Which exceptions say that the database failed, rather than the statement sent to it."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# What a session raises when the database, not the statement, failed: the server unreachable
# or gone mid-transaction, a statement, connection attempt or pool wait past the database
# timeout (asyncpg raises the builtin TimeoutError), SQLite's I/O errors, a full disk or its
# lock held too long. Raised as StoreUnavailableError (retryable); a constraint violation
# (IntegrityError) or a statement the database refuses is a bug and stays unexpected.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    DisconnectionError,
    sqlite3.OperationalError,
    TimeoutError,
    OSError,
)


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database failed rather than the statement. SQLite raises
    OperationalError for both: its generic result code (SQLITE_ERROR: a syntax error, no such
    table) is the statement's; busy, locked, I/O, full and the rest are the database's, and
    so are the OperationalErrors the store raises itself (no result code)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        # The driver said the connection is lost (SQLAlchemy's is_disconnect), whatever class
        # its error has: a server that ends a session mid-transaction (a restart, a failover,
        # pg_terminate_backend) makes asyncpg raise "another operation is in progress" or
        # "connection was closed in the middle of operation", which are no OperationalError.
        return True
    if not isinstance(error, DATABASE_UNAVAILABLE):
        return False
    driver_error = error.orig if isinstance(error, OperationalError) else error
    code = getattr(driver_error, "sqlite_errorcode", None)  # an extended code: primary & 0xFF
    statement_failed = isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_ERROR
    return not (isinstance(driver_error, sqlite3.Error) and statement_failed)
