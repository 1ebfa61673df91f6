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


class SubscriberQueue(asyncio.Queue[StatusChanged]):
    """One subscription's changes not yet sent. ``overflowed``: it fell further behind than
    the queue holds, so it was taken out of the fan-out and its reader must end it."""

    overflowed = False


class EventBroker(Protocol):
    """Delivers each published change to every current subscriber of its organization, on this
    replica and (for distributed brokers) on every other."""

    async def publish(self, change: StatusChanged) -> None: ...

    def subscribe(self, organization_id: str) -> AbstractAsyncContextManager[SubscriberQueue]:
        """A context manager yielding a queue of the organization's changes while it is open
        (until the subscriber falls too far behind: see ``SubscriberQueue.overflowed``)."""
        ...

    async def aclose(self) -> None: ...

    async def check(self) -> None:
        """Raises when this replica cannot deliver changes now (its readiness)."""
        ...


class LocalFanout:
    """The per-replica half of every broker: organization -> subscriber queues."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, set[SubscriberQueue]] = defaultdict(set)

    def deliver(self, change: StatusChanged) -> None:
        queues = self._queues.get(change.organization_id, set())
        for queue in list(queues):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                # A subscriber that stopped reading must not hold memory or block others, nor
                # be shown a stream with a silent gap: it gets nothing more, and its reader,
                # which finds the queue full, ends the subscription saying changes were missed.
                queue.overflowed = True
                queues.discard(queue)
                logger.warning(
                    "ending a slow subscriber's subscription: it fell %d status changes behind",
                    queue.maxsize,
                )

    @asynccontextmanager
    async def subscription(self, organization_id: str) -> AsyncIterator[SubscriberQueue]:
        queue = SubscriberQueue(maxsize=SUBSCRIBER_QUEUE_SIZE)
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

    def subscribe(self, organization_id: str) -> AbstractAsyncContextManager[SubscriberQueue]:
        return self._local.subscription(organization_id)

    async def aclose(self) -> None:
        return None

    async def check(self) -> None:
        return None
