"""Shared fixtures: a Store on SQLite and on the real PostgreSQL server, each test isolated."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from payout_gateway.store import Store
from tests.support.pii import FULL_NUMBER

POSTGRES_URL = os.environ.get(
    "PAYOUT_GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def postgres_store(schema: str) -> Store:
    """A Store whose tables live in a fresh schema of the test database."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    return Store.from_url(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})


async def drop_postgres_schema(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
        await store.create_schema()
        yield store
        await store.dispose()
        return
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    store = await postgres_store(schema)
    try:
        await store.create_schema()
        yield store
    finally:
        await store.dispose()
        await drop_postgres_schema(schema)


# --- no full account number in any log line of the suite -----------------------------------

_LONG_DIGIT_RUN = FULL_NUMBER


_FORMATTER = logging.Formatter()


class _AccountNumberCanary(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not our concern here
            text = str(record.msg)
        extras = " ".join(
            str(value) for key, value in vars(record).items() if key not in _STANDARD_RECORD_KEYS
        )
        # As a handler prints them: every chained cause's message, and the frames' source lines.
        if record.exc_info and record.exc_info[1] is not None:
            extras += " " + _FORMATTER.formatException(record.exc_info)
        if record.stack_info:
            extras += " " + record.stack_info
        for candidate in (text, extras):
            if _LONG_DIGIT_RUN.search(candidate):
                self.hits.append(f"{record.name}: {candidate[:300]}")


_STANDARD_RECORD_KEYS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
}


@pytest.fixture(scope="session", autouse=True)
def no_account_number_in_logs() -> Iterator[None]:
    """Production logs at INFO: run the whole suite that way and fail on any long digit run."""
    canary = _AccountNumberCanary()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.INFO)
    root.addHandler(canary)
    try:
        yield
    finally:
        root.removeHandler(canary)
        root.setLevel(previous)
    assert not canary.hits, "account-number-like values were logged:\n" + "\n".join(
        canary.hits[:20]
    )
