"""The status outbox: a move committed by a replica that died before the Redis stream took it
is still published, by whichever replica leads the relay.

A replica publishes each move after its own commit, and the stream takes it a moment later
(or, while Redis is away, whenever it is back). A replica killed in between (SIGKILL, OOM, a
host lost) took the move with it: committed and audited, never shown to a subscriber. So each
move is also written to ``status_outbox`` in its own transaction, and removed once the stream
has it. One process at a time (``Leadership``) publishes what stayed there longer than a
replica takes to publish its own. A move published twice is shown once: each replica's
fan-out drops a change whose sequence it has already delivered for that object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.events.redis_broker import RedisBroker
from payout_gateway.metrics import STATUS_CHANGES_RELAYED
from payout_gateway.store import Store
from payout_gateway.store.leadership import Leadership

logger = logging.getLogger("payout_gateway.events")

# Moves older than this are taken to be lost by their replica: its own publication reaches
# the stream within milliseconds, or it is waiting for Redis, which the relay then cannot
# reach either (it relays only while its own fan-out is caught up).
DEFAULT_GRACE_SECONDS = 15.0
DEFAULT_INTERVAL_SECONDS = 5.0
RELAY_BATCH = 200
# At most this many a turn: half the publishing backlog (redis_broker), which drops its
# oldest changes when full; the rest go at the next turn, once the stream has these.
RELAY_TURN = 5_000


class StatusOutbox:
    """Forgets the moves the stream has taken (``written``, the broker's ``on_written``) and,
    while this process leads, publishes the moves left behind."""

    def __init__(
        self,
        store: Store,
        broker: RedisBroker,
        leadership: Leadership,
        *,
        clock: Callable[[], datetime],
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        interval_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._leadership = leadership
        self._clock = clock
        self._grace = timedelta(seconds=grace_seconds)
        # Looked at a few times per grace period, so a stranded move waits little past it.
        self._interval = (
            interval_seconds
            if interval_seconds is not None
            else min(DEFAULT_INTERVAL_SECONDS, grace_seconds / 3)
        )
        self._written: list[int] = []
        self._wake = asyncio.Event()
        # Whether the last ``lead`` answered yes.
        self._leading = False
        # Whether its own changes were waiting to be sent at the last turn.
        self._backlogged_before = False
        self.relayed = 0
        broker.on_written = self.written

    def written(self, sequences: list[int]) -> None:
        """The stream has these moves: their outbox rows can go."""
        if sequences:
            self._written.extend(sequences)
            self._wake.set()

    async def run_forever(self) -> None:
        await asyncio.gather(self._forget_forever(), self._relay_forever())

    async def _forget_forever(self) -> None:
        failing = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.forget_written()
            except StoreUnavailableError:
                # Their rows stay: the relay publishes them again later, and the replicas'
                # fan-out drops what it has already shown.
                if not failing:
                    logger.warning("could not clear published moves from the status outbox")
                failing = True
                continue
            except Exception:  # as above; and a bug here must not end it for good
                logger.exception("clearing published moves from the status outbox failed")
                continue
            failing = False

    async def forget_written(self) -> None:
        """Remove the rows of the moves the stream has taken so far (also once more at
        shutdown, after the broker has written what it still held)."""
        sequences, self._written = self._written, []
        if not sequences:
            return
        try:
            async with self._store.session() as session:
                await session.remove_from_outbox(sequences)
        except BaseException:
            # Kept for the next try, ahead of those written since: otherwise their rows stay,
            # and every one of them is relayed again once its grace period is over.
            self._written[:0] = sequences
            raise

    async def step_down(self) -> None:
        self._leading = False
        await self._leadership.step_down()

    async def _relay_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.relay_once()
            except StoreUnavailableError:
                if not failing:  # once per outage, not every few seconds
                    logger.warning("the status outbox could not be read (database unavailable)")
                failing = True
                continue
            except Exception:  # a bug here must not end the relay for the process's life
                logger.exception("relaying the status outbox failed")
            failing = False

    async def relay_once(self) -> int:
        """Publish the moves left in the outbox past the grace period, if this process leads
        and its own fan-out is caught up; how many."""
        # Changes of its own waiting to be sent at two turns in a row: not the moment's
        # backlog of a busy replica (sent milliseconds later) but Redis not taking them.
        backlogged = self._broker.unsent > 0 and self._backlogged_before
        self._backlogged_before = self._broker.unsent > 0
        if not self._broker.subscribed or self._broker.unsent:
            # It cannot relay now (cut off from Redis, or its own changes still wait for
            # it). Once it is cut off, a lead kept meanwhile would keep every other replica
            # from relaying too, for as long as its outage lasts (its lock's session stays
            # alive); a lead given up for a moment's backlog would churn the lock's session.
            if self._leading and (not self._broker.subscribed or backlogged):
                self._leading = False
                logger.warning(
                    "giving up the status outbox relay: this process's changes are not "
                    "reaching Redis now"
                )
                await self._leadership.step_down()
            return 0
        if not await self._leadership.lead():
            self._leading = False
            return 0
        self._leading = True
        committed_before = self._clock() - self._grace
        # A stranded move that a later, published move of its object superseded is not
        # shown: a replica that never saw the later one would show the object moving back.
        async with self._store.session() as session:
            superseded = await session.drop_superseded_from_outbox(
                committed_before=committed_before
            )
        if superseded:
            logger.info(
                "dropped %d stranded status change(s) from the outbox: a later change of "
                "their object was published",
                superseded,
            )
        # In batches, each past the last (a batch's rows stay until the stream has them).
        relayed, after = 0, 0
        while True:
            async with self._store.session(write=False) as session:
                stranded = await session.outbox_due(
                    committed_before=committed_before, first=RELAY_BATCH, after_sequence=after
                )
            for change in stranded:
                await self._broker.publish(change)
            relayed += len(stranded)
            if len(stranded) < RELAY_BATCH or relayed >= RELAY_TURN:
                break
            after = stranded[-1].sequence or after
        if relayed:
            self.relayed += relayed
            STATUS_CHANGES_RELAYED.inc(relayed)
            logger.warning(
                "published %d status change(s) that their replica committed but never passed "
                "on (it stopped first)",
                relayed,
            )
        return relayed
