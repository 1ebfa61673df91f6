"""Shared fixtures: a Store on SQLite and on the real PostgreSQL server, each test isolated."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payout_gateway.store import Store

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
