"""The idempotency purge meets a database outage: it says so once per outage, not with a
traceback at each pass (every 10 minutes, for as long as the outage lasts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.idempotency import IdempotencyKeys, purge_expired_forever


class FlakyKeys:
    """Purges fail (the database is away) on the passes listed, and work on the others."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.passes = 0

    async def purge_expired(self, now: Any) -> int:
        self.passes += 1
        if self.passes in self.failing:
            raise StoreUnavailableError()
        return 0


async def test_a_database_outage_is_logged_once_per_outage_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    # Two outages: passes 2-5, then 8-9.
    keys = FlakyKeys({2, 3, 4, 5, 8, 9})
    purger = asyncio.create_task(
        purge_expired_forever(
            cast(IdempotencyKeys, keys), interval=0.001, clock=lambda: datetime.now(UTC)
        )
    )
    try:
        async with asyncio.timeout(10):
            while keys.passes < 12:
                await asyncio.sleep(0.005)
    finally:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
    told = [r for r in caplog.records if r.name.startswith("payout_gateway")]
    assert [r for r in told if r.exc_info is not None and r.exc_info[0] is not None] == []
    assert [(r.levelname, r.getMessage()) for r in told] == [
        ("WARNING", "purging expired idempotency keys failed: the database is unavailable")
    ] * 2
