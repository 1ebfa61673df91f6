"""Fixtures of the SQLite-only store tests: a store on a file with organization ``org_a``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_gateway.store import Store
from tests.store.test_core_writes import seed


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    await store.create_schema()
    await seed(store, "a")
    yield store
    await store.dispose()
