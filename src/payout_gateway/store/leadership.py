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
  on Linux) nobody would refresh meanwhile.
- An in-memory SQLite database is one process's own: it always leads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from typing import Protocol

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger("payout_gateway.store")


class Leadership(Protocol):
    """Whether this process runs the job; ``lead`` is asked before each run of it."""

    async def lead(self) -> bool:
        """True if this process leads now (taking the lead if nobody holds it)."""
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


class AdvisoryLeadership:
    """A PostgreSQL session advisory lock on a connection of its own, held while this
    process leads."""

    def __init__(self, engine: AsyncEngine, job: str) -> None:
        self._engine = engine
        self._job = job
        self._connection: AsyncConnection | None = None

    async def lead(self) -> bool:
        if self._connection is not None:
            try:
                await self._connection.execute(text("SELECT 1"))
                await self._connection.commit()
                return True
            except Exception:  # the connection broke, and the lock with it
                logger.warning("lost the lead of %s with its connection", self._job)
                await self.step_down()
        connection = await self._engine.connect()
        try:
            schema = await connection.scalar(select(func.current_schema()))
            key = advisory_key(self._job, str(schema or ""))
            taken = await connection.scalar(select(func.pg_try_advisory_lock(key)))
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
        logger.info("this process leads %s", self._job)
        return True

    async def step_down(self) -> None:
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
