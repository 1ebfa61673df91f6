"""Persistence (SQLAlchemy 2 async): SQLite by default, PostgreSQL by URL."""

from payout_gateway.store.database import (
    NonFinalObject,
    Store,
    StoreSession,
    ensure_sqlite_directory,
    normalize_database_url,
)

__all__ = [
    "NonFinalObject",
    "Store",
    "StoreSession",
    "ensure_sqlite_directory",
    "normalize_database_url",
]
