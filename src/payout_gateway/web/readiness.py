"""``/readyz``'s check: whether this replica can serve now, its failures logged once per outage."""

from __future__ import annotations

import logging

from sqlalchemy import text

from payout_gateway.events.broker import EventBroker
from payout_gateway.store import Store

logger = logging.getLogger("payout_gateway")


class Readiness:
    """The database answers a query, and the status fan-out can deliver (``broker.check``).

    A load balancer asks every few seconds, on every replica: a traceback per failed check
    filled the log for as long as an outage lasted, each one the same. The first failed check
    of an outage is logged with its cause (the database's by type only: a driver's message may
    quote a statement's values), the first check that passes again once, with how many
    failed; the checks between say nothing."""

    def __init__(self, store: Store, broker: EventBroker) -> None:
        self._store = store
        self._broker = broker
        self._failed_checks = 0

    async def ready(self) -> bool:
        try:
            async with self._store.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:  # any database failure means "not ready", never a 500
            return self._not_ready(f"the database failed ({type(error).__name__})")
        try:
            await self._broker.check()
        except ConnectionError as error:  # the broker's own words (events/redis_broker.py)
            return self._not_ready(f"status fan-out: {error}")
        except Exception as error:
            return self._not_ready(f"status fan-out ({type(error).__name__})")
        if self._failed_checks:
            logger.info("ready again", extra={"failed_checks": self._failed_checks})
            self._failed_checks = 0
        return True

    def _not_ready(self, cause: str) -> bool:
        if not self._failed_checks:
            logger.warning("not ready: %s", cause)
        self._failed_checks += 1
        return False
