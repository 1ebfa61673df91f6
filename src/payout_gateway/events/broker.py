"""Fan-out of applied status changes to subscribers: the port and the in-process broker."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from payout_gateway.domain.events import StatusChanged

logger = logging.getLogger("payout_gateway.events")

SUBSCRIBER_QUEUE_SIZE = 1000


class EventBroker(Protocol):
    """Delivers each published change to every current subscriber of its organization, on this
    replica and (for distributed brokers) on every other."""

    async def publish(self, change: StatusChanged) -> None: ...

    def subscribe(
        self, organization_id: str
    ) -> AbstractAsyncContextManager[asyncio.Queue[StatusChanged]]:
        """A context manager yielding a queue of the organization's changes while it is open."""
        ...

    async def aclose(self) -> None: ...

    async def check(self) -> None:
        """Raises when this replica cannot deliver changes now (its readiness)."""
        ...


class LocalFanout:
    """The per-replica half of every broker: organization -> subscriber queues."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, set[asyncio.Queue[StatusChanged]]] = defaultdict(set)

    def deliver(self, change: StatusChanged) -> None:
        for queue in list(self._queues.get(change.organization_id, ())):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                # A subscriber that stopped reading must not hold memory or block others.
                logger.warning("dropping a status change for a slow subscriber")

    @asynccontextmanager
    async def subscription(
        self, organization_id: str
    ) -> AsyncIterator[asyncio.Queue[StatusChanged]]:
        queue: asyncio.Queue[StatusChanged] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._queues[organization_id].add(queue)
        try:
            yield queue
        finally:
            self._queues[organization_id].discard(queue)
            if not self._queues[organization_id]:
                del self._queues[organization_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(queues) for queues in self._queues.values())


class InProcessBroker:
    """One replica: publishing delivers straight to this process's subscribers."""

    def __init__(self) -> None:
        self._local = LocalFanout()

    async def publish(self, change: StatusChanged) -> None:
        self._local.deliver(change)

    def subscribe(
        self, organization_id: str
    ) -> AbstractAsyncContextManager[asyncio.Queue[StatusChanged]]:
        return self._local.subscription(organization_id)

    async def aclose(self) -> None:
        return None

    async def check(self) -> None:
        return None
