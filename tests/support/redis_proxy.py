"""A loopback TCP proxy to the real Redis that the realtime tests take down, bring back or
hold up, and a RedisBroker (a replica) behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from payout_gateway.events.redis_broker import RedisBroker


class TcpProxy:
    """A loopback TCP proxy to the real Redis that can go down and come back on the same port:
    an outage longer than redis-py's own retries."""

    def __init__(self) -> None:
        self.port = 0
        # The Redis it proxies to: another server's port makes it a replaced one.
        self.upstream_port = 6379
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        # Cleared by ``hold``: connections stay open and bytes wait in the proxy, as when a
        # replica's process is frozen or starved for a while (shorter than its timeouts).
        self._flowing = asyncio.Event()
        self._flowing.set()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        # Closing both ends ends every pipe with EOF (cancelling the handlers instead makes
        # asyncio log an error on 3.11).
        for writer in self._writers:
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await asyncio.wait_for(self._server.wait_closed(), 5)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # Registered before anything is awaited, so that ``down`` closes a connection accepted
        # while it runs (the broker reconnects every few hundred ms) instead of leaving it
        # proxying through a proxy that is down.
        self._writers.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        self._writers.append(upstream_writer)
        if writer.is_closing():  # the proxy went down while the upstream connection opened
            upstream_writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            writer.close()
            upstream_writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def behind_a_proxy(
    prefix: str, **options: Any
) -> AsyncIterator[tuple[TcpProxy, RedisBroker]]:
    """A replica reaching Redis through a proxy that the test can take down."""
    proxy = TcpProxy()
    await proxy.up()
    broker = await RedisBroker.connect(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, backoff_max=0.3, **options
    )
    try:
        yield proxy, broker
    finally:
        await broker.aclose()
        await proxy.down()


async def wait_until_away(broker: RedisBroker) -> None:
    async def away() -> None:
        while broker.subscribed:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(away(), 10)
