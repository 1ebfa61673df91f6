"""PostgreSQL: a pooled connection the server has closed is never handed to a transaction (an
add writes after its provider created the account: that write must not fail on a dead
connection)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from payout_gateway.store import Store
from tests.conftest import POSTGRES_URL

# The shared ``store`` fixture (tests/conftest.py), on the PostgreSQL server only.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("store", ["postgres"], indirect=True),
]


async def pooled_connection(store: Store) -> tuple[int, Any]:
    """The server process of the connection the pool holds idle, and its asyncpg connection."""
    async with store.engine.connect() as connection:
        pid = await connection.scalar(select(func.pg_backend_pid()))
        driver = connection.sync_connection.connection.driver_connection
    assert isinstance(pid, int)
    return pid, driver


async def test_a_pooled_connection_the_server_closed_is_replaced_before_use(store: Store) -> None:
    pid, driver = await pooled_connection(store)
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await admin.close()
    # The driver hears of the closed socket on the event loop's next turns: a bound, not a
    # timing claim.
    for _ in range(2_000):
        if driver.is_closed():
            break
        await asyncio.sleep(0.005)
    assert driver.is_closed()
    async with store.session() as session:
        assert await session.list_organizations() == []
        assert await session.has_bank_accounts("org_none") is False
    assert (await pooled_connection(store))[0] != pid
