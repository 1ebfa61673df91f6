"""Counts how often the event loop gets round to a 10 ms timer: a blocked loop gets to none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Ticks:
    count = 0


@asynccontextmanager
async def loop_ticks() -> AsyncIterator[Ticks]:
    ticks = Ticks()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.count += 1

    ticking = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        ticking.cancel()
