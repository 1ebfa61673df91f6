"""What a replica logs while Redis is away: the loss of the status stream once per outage and
its return once, not a line per reconnection attempt (every few seconds, for as long as the
outage lasts, on every replica)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.names import unique_suffix
from tests.support.redis_proxy import behind_a_proxy, wait_until_away


def told(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(message)]


async def test_the_stream_lost_for_many_reconnection_attempts_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    async with behind_a_proxy(f"pgw-test-{unique_suffix()}:status:") as (proxy, broker):
        await proxy.down()
        await wait_until_away(broker)
        # Reconnection attempts every 0.15-0.3 s (backoff_max 0.3 s): about ten, all refused.
        await asyncio.sleep(2.5)
        await proxy.up()
        assert await broker.wait_until_subscribed(10)
        # A second outage is told again.
        await proxy.down()
        await wait_until_away(broker)
        await asyncio.sleep(1)
        await proxy.up()
        assert await broker.wait_until_subscribed(10)
    assert [r.levelname for r in told(caplog, "Redis status stream lost")] == ["WARNING"] * 2
    assert len(told(caplog, "reading the Redis status stream again")) == 2
