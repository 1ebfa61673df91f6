"""Which one of the processes sharing a database runs a background job: a lock each holds for as
long as it lives, so that a crashed leader's place goes to another without any lease to expire.

The status refresh GETs every non-final object from the provider; run by every worker and every
replica, each object was fetched once per process, multiplying the calls a provider's rate
limit counts. The processes sharing a database elect one:

- SQLite (workers of one host): an ``flock`` on a file beside the database, taken without
  waiting; the kernel drops it when its process exits, however it exits.
- PostgreSQL (replicas): a session advisory lock, keyed by the job and the schema, held on a
  connection of its own; the server drops it when that connection ends. A leader whose
  connection broke finds out at its next check and competes again like the others. A leader
  cut off without a word (a partition, a host that died) is found out by the server's TCP
  keepalive on that session, set short: with the server's default (the system's, two hours
  on Linux) nobody would refresh meanwhile. A leader that is there but frozen (SIGSTOP, an
  event loop blocked by a bug) keeps its session, as its kernel still answers keepalives: the
  leader's lock session answers a query every ``HEARTBEAT_SECONDS``, and another process that
  finds it silent for ``STALE_AFTER_SECONDS`` ends that session and takes the lead.
- An in-memory SQLite database is one process's own: it always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from typing import Protocol

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.store.outages import database_unavailable

logger = logging.getLogger("payout_gateway.store")


class Leadership(Protocol):
    """Whether this process runs the job; ``lead`` is asked before each run of it."""

    async def lead(self) -> bool:
        """True if this process leads now (taking the lead if nobody holds it); raises
        StoreUnavailableError when the database it is elected through fails."""
        ...

    async def step_down(self) -> None:
        """Give the lead up (at shutdown); another process takes it at its next ``lead``."""
        ...


class AlwaysLeads:
    """A database no other process shares."""

    async def lead(self) -> bool:
        return True

    async def step_down(self) -> None:
        return None


class FileLeadership:
    """An ``flock`` on ``path``, held while this process leads."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    async def lead(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        logger.info("this process leads %s", os.path.basename(self._path))
        return True

    async def step_down(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases its flock


# The lock's session on the server: a peer silent for 30 s is probed every 10 s, and dropped
# (its lock with it) after 3 probes unanswered, about a minute in all. Session settings any
# user may set; ignored on a Unix socket, where no peer can be cut off.
LOCK_SESSION_KEEPALIVE = {
    "tcp_keepalives_idle": 30,
    "tcp_keepalives_interval": 10,
    "tcp_keepalives_count": 3,
}


# While it leads, a process's lock session answers a query this often (a task of its own: a
# long run of the job is not silence) ...
HEARTBEAT_SECONDS = 10.0
# ... and one silent this long is taken to be frozen: its session is ended and its lead taken.
STALE_AFTER_SECONDS = 60.0
# The session holding an advisory lock (pg_locks splits a 64-bit key into classid, its high
# 32 bits, and objid), and how long since its last query ended. NULL where the server does
# not show it (another role's session, without pg_read_all_stats): never taken to be frozen.
_LOCK_HOLDER = text(
    "SELECT a.pid, EXTRACT(EPOCH FROM clock_timestamp() - a.state_change) "
    "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = :high AND l.objid::bigint = :low"
)
# How long a process that ended a frozen leader's session waits for the server to free the
# lock (the session ends asynchronously).
_TAKEOVER_WAIT_SECONDS = 5.0


class AdvisoryLeadership:
    """A PostgreSQL session advisory lock on a connection of its own, held while this
    process leads."""

    def __init__(
        self,
        engine: AsyncEngine,
        job: str,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after_seconds: float = STALE_AFTER_SECONDS,
    ) -> None:
        self._engine = engine
        self._job = job
        self._heartbeat_seconds = heartbeat_seconds
        self._stale_after = stale_after_seconds
        self._connection: AsyncConnection | None = None
        # One statement at a time on the lock's session: the heartbeat and ``lead`` share it.
        self._using = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None

    async def lead(self) -> bool:
        """Raises StoreUnavailableError when the database cannot be asked, as a session does:
        the jobs asking log an outage once, where a driver's error was a traceback per run."""
        try:
            return await self._lead()
        except Exception as error:
            if not database_unavailable(error):
                raise
            raise StoreUnavailableError() from error

    async def _lead(self) -> bool:
        if self._connection is not None:
            if await self._beat():
                return True
            # The connection broke, and the lock with it.
            logger.warning("lost the lead of %s with its connection", self._job)
            await self.step_down()
        connection = await self._engine.connect()
        try:
            schema = await connection.scalar(select(func.current_schema()))
            key = advisory_key(self._job, str(schema or ""))
            taken = await connection.scalar(select(func.pg_try_advisory_lock(key)))
            if not taken:
                taken = await self._take_from_a_frozen_leader(connection, key)
            if taken:  # only the lock's session: a pooled one goes back as it came
                for setting, seconds in LOCK_SESSION_KEEPALIVE.items():
                    await connection.execute(text(f"SET {setting} = {seconds}"))
            # Session-level: the lock outlives the transaction that took it.
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not taken:
            await connection.close()
            return False
        self._connection = connection
        self._heartbeat = asyncio.create_task(self._beat_forever(), name=f"lead-{self._job}")
        logger.info("this process leads %s", self._job)
        return True

    async def _beat(self) -> bool:
        """A query on the lock's session: True if it answered (the lock is still ours)."""
        connection = self._connection
        if connection is None:
            return False
        try:
            async with self._using:
                await connection.execute(text("SELECT 1"))
                await connection.commit()
        except Exception:
            return False
        return True

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            if not await self._beat():
                return  # broken: the next ``lead`` finds out and steps down

    async def _take_from_a_frozen_leader(self, connection: AsyncConnection, key: int) -> bool:
        """End the lock holder's session if it has been silent past ``stale_after``, then
        take the lock; False if it is alive (or the server will not say, or refuses)."""
        try:
            holder = (
                await connection.execute(
                    _LOCK_HOLDER, {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
                )
            ).first()
            if holder is None or holder[1] is None or float(holder[1]) < self._stale_after:
                return False
            pid, silent_for = int(holder[0]), float(holder[1])
            logger.warning(
                "the leader of %s has been silent for %.0f s (frozen?): ending its database "
                "session (pid %d) and taking the lead",
                self._job,
                silent_for,
                pid,
            )
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _TAKEOVER_WAIT_SECONDS
            while loop.time() < deadline:
                if await connection.scalar(select(func.pg_try_advisory_lock(key))):
                    return True
                await asyncio.sleep(0.05)
            return False
        except DBAPIError:
            # Refused (the session is another role's) or failed: leave the lead where it is.
            logger.warning("could not take the lead of %s from a silent leader", self._job)
            await connection.rollback()
            return False

    async def step_down(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        connection, self._connection = self._connection, None
        if connection is not None:
            # Invalidated rather than pooled: closing the server session is what frees the lock.
            with contextlib.suppress(Exception):
                await connection.invalidate()
            await connection.close()


def advisory_key(job: str, schema: str) -> int:
    """The advisory-lock key of ``job`` in ``schema`` (other schemas elect their own)."""
    digest = hashlib.blake2b(f"payout-gateway {job} {schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
