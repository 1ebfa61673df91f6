"""The store's in-process lock for SQLite writers: first come, first served, and a release
wakes every waiter at once.

``asyncio.Lock`` wakes one waiter per release, and a woken task runs on the event loop's next
turn: ``k`` writers queued behind a COMMIT took ``k`` turns of the loop to get through, each
turn as long as everything else ready by then (HTTP requests, provider answers), all while the
group they were joining held the SQLite file's writer turn that the other worker processes
wait for (bench/PROFILE.md, fifteenth round). Here a release wakes all the waiters; they run
one after another on the loop's next turn, each taking the lock in its order and, as a
writer's block runs without suspending, giving it back before the next one runs. A woken
waiter that finds the lock taken again (a holder that did suspend) waits again, ahead of later
arrivals.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType


class WritersLock:
    """An asyncio lock whose release wakes every waiter (see the module's docstring)."""

    __slots__ = ("_kept_places", "_locked", "_waiting", "_woken")

    def __init__(self) -> None:
        self._locked = False
        # Waiters not woken yet, in the order they run when woken.
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        # Woken waiters that have not run yet: the lock is theirs before a newcomer's.
        self._woken = 0
        # How many waiters at the front of ``_waiting`` were woken before and wait again.
        self._kept_places = 0

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        if not (self._locked or self._waiting or self._woken):
            self._locked = True
            return
        loop = asyncio.get_running_loop()
        woken_before = False
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            if woken_before:
                # Its turn came and went to a holder that suspended: it keeps its place,
                # behind those woken before it that wait again too.
                self._waiting.insert(self._kept_places, waiter)
                self._kept_places += 1
            else:
                self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Woken, then cancelled before it ran: the others must not wait for it.
                    self._woken -= 1
                    self._wake()
                elif waiter in self._waiting:
                    place = self._waiting.index(waiter)
                    del self._waiting[place]
                    if place < self._kept_places:
                        self._kept_places -= 1
                raise
            self._woken -= 1
            if not self._locked:
                self._locked = True
                return
            woken_before = True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("WritersLock released while not held")
        self._locked = False
        self._wake()

    def _wake(self) -> None:
        if self._locked:
            return
        self._kept_places = 0
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        type_: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
