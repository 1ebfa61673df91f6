"""Persistence (SQLAlchemy 2 async): SQLite by default, PostgreSQL by URL."""

from payout_gateway.store.database import (
    Store,
    StoreSession,
    ensure_sqlite_directory,
    normalize_database_url,
)

__all__ = ["Store", "StoreSession", "ensure_sqlite_directory", "normalize_database_url"]
