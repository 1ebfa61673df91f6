"""A PostgreSQL store's connections closed at shutdown within one database timeout in all."""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger("payout_gateway.store")


class BoundedClose:
    """Hooked to the engine's pool ``close`` event (a connection discarded, or closed as the
    pool is disposed). Until ``begin`` it leaves closing to SQLAlchemy. From then on (the
    process is shutting down) a connection's goodbye to the server waits only what is left of
    one database timeout, and once one has gone unanswered the others are cut at once.

    A server that stopped answering without closing anything (a frozen host, a partition)
    held the shutdown for the whole timeout per pooled connection, one after the other (22 s
    for two at 10 s), each logged by SQLAlchemy with a traceback; now the wait is one timeout
    and the outage one line (``report``)."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._deadline: float | None = None
        self._cut = 0

    def begin(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._timeout

    def close(self, dbapi_connection: Any, _record: object) -> None:
        """Closes ``dbapi_connection`` (an asyncpg one, adapted), so that SQLAlchemy's own
        close after this event finds it closed and has nothing left to wait for."""
        if self._deadline is None:
            return
        driver = dbapi_connection.driver_connection
        left = self._deadline - time.monotonic()
        if self._cut == 0 and left > 0:
            try:
                dbapi_connection.run_async(lambda _: driver.close(timeout=left))
                return
            except Exception:  # unanswered in time
                pass
        # No goodbye: the server ends the session once TCP tells it the connection is gone.
        driver.terminate()
        self._cut += 1

    def report(self) -> None:
        """Once, after the last connection: whether the server left any goodbye unanswered."""
        if self._cut:
            self._cut = 0
            logger.warning("the database did not answer at shutdown: its connections were cut")
