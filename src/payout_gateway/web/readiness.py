"""``/readyz``'s check: whether this replica can serve now, its failures logged once per outage."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text

from payout_gateway.events.broker import EventBroker
from payout_gateway.store import Store

logger = logging.getLogger("payout_gateway")


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """``ready``: the database answers, so every query and mutation can be served.
    ``fanout_ok``: the status fan-out can deliver (with Redis: this replica reads the stream
    and Redis answers); False only degrades subscriptions, which catch up or are told what
    they missed (events/redis_broker.py), so it does not take the replica out of rotation."""

    ready: bool
    fanout_ok: bool


class Readiness:
    """The database answers a query; the status fan-out's state is reported beside it.

    Redis is shared by every replica: were its outage a reason to be unready, a load balancer
    would take every replica out of rotation together, the whole API down over a problem that
    touches only subscriptions (publishing never waits for Redis).

    A load balancer asks every few seconds, on every replica: a traceback per failed check
    filled the log for as long as an outage lasted, each one the same. The first failed check
    of an outage is logged with its cause (the database's by type only: a driver's message may
    quote a statement's values), the first check that passes again once, with how many
    failed; the checks between say nothing. The fan-out's outages are logged the same way."""

    def __init__(self, store: Store, broker: EventBroker) -> None:
        self._store = store
        self._broker = broker
        self._failed_checks = 0
        self._fanout_failed_checks = 0

    async def ready(self) -> ReadinessReport:
        try:
            async with self._store.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:  # any database failure means "not ready", never a 500
            if not self._failed_checks:
                logger.warning("not ready: the database failed (%s)", type(error).__name__)
            self._failed_checks += 1
            return ReadinessReport(ready=False, fanout_ok=await self._fanout_ok())
        if self._failed_checks:
            logger.info("ready again", extra={"failed_checks": self._failed_checks})
            self._failed_checks = 0
        return ReadinessReport(ready=True, fanout_ok=await self._fanout_ok())

    async def _fanout_ok(self) -> bool:
        try:
            await self._broker.check()
        except Exception as error:
            if not self._fanout_failed_checks:
                # The broker's own words (events/redis_broker.py), else the error's type.
                cause = str(error) if isinstance(error, ConnectionError) else type(error).__name__
                logger.warning("status fan-out degraded (subscriptions may lag or end): %s", cause)
            self._fanout_failed_checks += 1
            return False
        if self._fanout_failed_checks:
            logger.info(
                "status fan-out works again",
                extra={"failed_checks": self._fanout_failed_checks},
            )
            self._fanout_failed_checks = 0
        return True
