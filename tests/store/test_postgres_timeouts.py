"""PostgreSQL: a server that stops answering without closing anything (a partition, a frozen
host) fails the session within the store's timeout instead of holding it; the store works
again once the server answers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from payout_gateway.domain.models import Organization
from payout_gateway.store import Store
from tests.conftest import POSTGRES_URL, drop_postgres_schema, postgres_store
from tests.support.postgres import through_stalling_proxy
from tests.support.store_errors import caused_by

pytestmark = pytest.mark.postgres


async def list_organizations(store: Store) -> list[Organization]:
    async with store.session() as session:
        return await session.list_organizations()


async def test_a_server_that_stops_answering_fails_the_session_instead_of_holding_it() -> None:
    """Without bounds of its own a session would wait for the kernel to give up on the
    connection (a quarter of an hour), or for ever behind a proxy that keeps it open, holding
    its request and a pooled connection."""
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    await (await postgres_store(schema)).dispose()  # creates the schema
    with through_stalling_proxy(POSTGRES_URL) as (proxy, url):
        store = Store.from_url(
            url, connect_args={"server_settings": {"search_path": schema}}, timeout_seconds=1
        )
        try:
            await store.create_schema()
            assert await list_organizations(store) == []
            proxy.stall()
            # The pooled connection's statement first, then new connections' attempts.
            for _ in range(3):
                attempt = asyncio.create_task(list_organizations(store))
                # A bound, not a timing claim: without the store's timeouts it never ends.
                done, _ = await asyncio.wait({attempt}, timeout=30)
                assert done, "the session waited on a server that does not answer"
                assert caused_by(attempt.exception(), TimeoutError)
            proxy.resume()
            assert await list_organizations(store) == []
        finally:
            await store.dispose()
            await drop_postgres_schema(schema)
