"""Fan-out of applied status changes to subscribers: the port and the in-process broker."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from enum import Enum
from typing import Protocol

from payout_gateway.domain.events import StatusChanged
from payout_gateway.metrics import SUBSCRIPTIONS_ENDED_MISSING

logger = logging.getLogger("payout_gateway.events")

SUBSCRIBER_QUEUE_SIZE = 1000
# Objects whose last delivered change a replica remembers, to drop a change of one that
# arrives after a later one (see ``LocalFanout.deliver``): far more than move at once.
REMEMBERED_OBJECTS = 10_000


class Missed(Enum):
    """Why a subscription was shown no more changes: it must end, telling its client."""

    # Its client read too slowly: the changes outgrew its queue.
    FELL_BEHIND = "fell_behind"
    # The changes never reached this replica (lost in the fan-out between replicas).
    LOST_IN_FANOUT = "lost_in_fanout"


class SubscriberQueue(asyncio.Queue[StatusChanged | None]):
    """One subscription's changes not yet sent. ``overflowed``: it was taken out of the
    fan-out after missing changes (``missed`` says why), and its reader must end it; a
    ``None`` in the queue only wakes a reader waiting on it to find that out."""

    overflowed = False
    missed: Missed | None = None

    def end_missing(self, why: Missed) -> None:
        self.overflowed, self.missed = True, why
        with suppress(asyncio.QueueFull):  # a full queue already has its reader's next item
            self.put_nowait(None)


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

    def __init__(self, remembered_objects: int = REMEMBERED_OBJECTS) -> None:
        self._queues: defaultdict[str, set[SubscriberQueue]] = defaultdict(set)
        # (object type, object id) -> the sequence of the last change delivered, oldest first.
        self._delivered: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._remembered_objects = remembered_objects
        self.dropped_stale = 0

    def deliver(self, change: StatusChanged) -> None:
        if self._is_stale(change):
            return
        queues = self._queues.get(change.organization_id, set())
        for queue in list(queues):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                # A subscriber that stopped reading must not hold memory or block others, nor
                # be shown a stream with a silent gap: it gets nothing more, and its reader,
                # which finds the queue full, ends the subscription saying changes were missed.
                queue.overflowed, queue.missed = True, Missed.FELL_BEHIND
                queues.discard(queue)
                SUBSCRIPTIONS_ENDED_MISSING.labels(Missed.FELL_BEHIND.value).inc()
                logger.warning(
                    "ending a slow subscriber's subscription: it fell %d status changes behind",
                    queue.maxsize,
                )

    def _is_stale(self, change: StatusChanged) -> bool:
        """True for a change of an object that arrives after a later change of it (replicas
        publish after their own commits, so one that reached Redis late, after an outage,
        lands behind another's later move: PAID, then IN_TRANSIT), or arrives twice: showing
        it would move the subscriber's view of the object backwards."""
        if change.sequence is None:  # published by an older version: nothing to compare
            return False
        key = (change.object_type.value, change.object_id)
        last = self._delivered.get(key)
        if last is not None and change.sequence <= last:
            self.dropped_stale += 1
            logger.info(
                "dropped a status change that arrived after a later one of its object",
                extra={"object_id": change.object_id, "to_status": change.to_status},
            )
            return True
        self._delivered[key] = change.sequence
        self._delivered.move_to_end(key)
        if len(self._delivered) > self._remembered_objects:
            self._delivered.popitem(last=False)
        return False

    def remember(self, object_type: str, object_id: str, sequence: int) -> None:
        """Take note of a change of an object delivered before this replica was there (not
        shown): one arriving later with an earlier sequence is then stale here too."""
        key = (object_type, object_id)
        last = self._delivered.get(key)
        if last is not None and sequence <= last:
            return
        self._delivered[key] = sequence
        self._delivered.move_to_end(key)
        if len(self._delivered) > self._remembered_objects:
            self._delivered.popitem(last=False)

    @property
    def remembered_objects(self) -> int:
        return self._remembered_objects

    def interrupt(self, organization_ids: Collection[str] | None, why: Missed) -> int:
        """End the subscriptions of these organizations (every one with None) that missed
        changes this replica cannot deliver: each is told so rather than shown a stream with
        a silent gap. How many were ended."""
        ended = 0
        for organization_id in list(self._queues if organization_ids is None else organization_ids):
            for queue in self._queues.pop(organization_id, ()):
                queue.end_missing(why)
                ended += 1
        if ended:
            SUBSCRIPTIONS_ENDED_MISSING.labels(why.value).inc(ended)
            logger.warning(
                "ended %d subscription(s) that missed status changes (%s)", ended, why.value
            )
        return ended

    @asynccontextmanager
    async def subscription(self, organization_id: str) -> AsyncIterator[SubscriberQueue]:
        queue = SubscriberQueue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._queues[organization_id].add(queue)
        try:
            yield queue
        finally:
            # An interrupted organization's set is gone already (``interrupt``).
            queues = self._queues.get(organization_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
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
