"""Processes writing one SQLite file take turns: a fair hand-off instead of polling for the lock.

SQLite has no queue for its write lock: ``BEGIN IMMEDIATE`` either gets it or fails, and the
Store retried every 0.5-2 ms. Under ``serve --workers 2`` the worker that had just committed
took the lock again before the other one's next try, over and over: in one measured run one
worker committed 600 groups while the other committed 100 and failed 1,396 tries. Here the
turn is an ``flock`` on a file beside the database, taken before ``BEGIN IMMEDIATE`` and given
back after COMMIT. The kernel wakes a waiting process the moment the turn is given back, and
a second lock (the queue) makes it fair: a process waiting for the turn holds the queue, so
the process that just gave the turn back queues behind it instead of taking it again.

Uncontended, taking a turn is three non-blocking system calls on the event loop's thread;
only a wait runs on a thread of its own, never blocking the loop. Writers that do not take
turns (migrations, another tool) are still met by the Store's ``BEGIN IMMEDIATE`` retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import threading

# A wait for the turn: the loop to settle it on, and the future it settles.
_Wait = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class WriterTurns:
    """This process's turns at writing the SQLite file ``database_path``. One turn at a time
    per instance: the Store's write lock serializes its writers before they get here."""

    def __init__(self, database_path: str) -> None:
        self._queue = os.open(f"{database_path}-writers.queue", os.O_RDWR | os.O_CREAT, 0o600)
        self._turn = os.open(f"{database_path}-writers.turn", os.O_RDWR | os.O_CREAT, 0o600)
        self._waits: queue.SimpleQueue[_Wait | None] = queue.SimpleQueue()
        self._closed = False
        # Whether this process holds the turn. Set on the thread that took it, cleared on the
        # one that gives it back: never both at once, as a turn is taken only after the last
        # one was given back (the Store's write lock).
        self._held = False
        # A daemon: a wait for a process that never gives the turn back must not keep this
        # one from exiting (an executor's threads are joined at exit).
        self._waiter = threading.Thread(
            target=self._serve_waits, name="sqlite-writer-turn", daemon=True
        )
        self._waiter.start()

    async def take(self) -> None:
        """Return holding the turn (bound the wait with ``asyncio.timeout``)."""
        if self._take_now():
            return
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[None] = loop.create_future()
        self._waits.put((loop, waiting))
        try:
            await asyncio.shield(waiting)
        except BaseException:
            # Given up (timed out, cancelled): the waiting thread cannot be interrupted, so the
            # turn it will get goes straight back.
            waiting.add_done_callback(self._give_back_unused)
            raise

    def give_back(self) -> None:
        """Give the turn back if this process holds it, from any thread; never raises (the
        Store gives it back on its commit thread, right after a COMMIT)."""
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(OSError):  # closed meanwhile: the turn went with the file
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def close(self) -> None:
        """Stop the waiting thread and close the lock files; once (``Store.dispose`` may be
        called again)."""
        if self._closed:
            return
        self._closed = True
        self._waits.put(None)
        os.close(self._queue)
        os.close(self._turn)

    def _take_now(self) -> bool:
        try:
            fcntl.flock(self._queue, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another process waits for the turn: queue behind it
        try:
            fcntl.flock(self._turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            fcntl.flock(self._queue, fcntl.LOCK_UN)
        self._held = True
        return True

    def _serve_waits(self) -> None:
        while (wait := self._waits.get()) is not None:
            loop, waiting = wait
            error: OSError | None = None
            try:
                fcntl.flock(self._queue, fcntl.LOCK_EX)
                try:
                    fcntl.flock(self._turn, fcntl.LOCK_EX)
                    self._held = True
                finally:
                    fcntl.flock(self._queue, fcntl.LOCK_UN)
            except OSError as failed:  # closed meanwhile
                error = failed
            try:
                loop.call_soon_threadsafe(self._settle, waiting, error)
            except RuntimeError:  # the loop is closed: nobody will use the turn
                if error is None:
                    self.give_back()

    def _settle(self, waiting: asyncio.Future[None], error: OSError | None) -> None:
        if error is not None:
            waiting.set_exception(error)
        else:
            waiting.set_result(None)

    def _give_back_unused(self, waiting: asyncio.Future[None]) -> None:
        if not waiting.cancelled() and waiting.exception() is None:
            self.give_back()
