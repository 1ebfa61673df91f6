"""Fan-out across replicas through Redis pub/sub: a channel per organization, one psubscribe."""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from payout_gateway.domain.events import StatusChanged
from payout_gateway.events.broker import LocalFanout

logger = logging.getLogger("payout_gateway.events")

DEFAULT_CHANNEL_PREFIX = "payout-gateway:status:"


class RedisBroker:
    """Publishing sends the change to ``<prefix><organization_id>``; every replica (this one too)
    receives it through its single ``psubscribe <prefix>*`` and hands it to its LocalFanout.

    Redis pub/sub is fire-and-forget: a change published while a replica is reconnecting is not
    replayed to that replica's subscribers. The store stays the record (``statusChangedAt``).
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_CHANNEL_PREFIX,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        poll_seconds: float = 1.0,
        ping_after_idle_seconds: float = 15.0,
        pong_timeout_seconds: float = 10.0,
        close_timeout_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._close_timeout = close_timeout_seconds
        self._prefix = prefix
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._poll_seconds = poll_seconds
        self._ping_after_idle = ping_after_idle_seconds
        self._pong_timeout = pong_timeout_seconds
        self._local = LocalFanout()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscriptions_made = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_CHANNEL_PREFIX,
        client_name: str = "payout-gateway",
        startup_timeout: float = 10.0,
        **options: Any,
    ) -> RedisBroker:
        """Connect and wait for the pattern subscription, so a replica that reports ready
        receives every change published from then on. Raises ``ConnectionError`` when Redis
        cannot be reached within ``startup_timeout``."""
        client = Redis.from_url(
            url,
            client_name=client_name,
            socket_connect_timeout=3.0,
            # Bounds PUBLISH; the subscription's reads use their own poll timeout.
            socket_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 2),
        )
        broker = cls(client, prefix=prefix, **options)
        broker.start()
        if not await broker.wait_until_subscribed(startup_timeout):
            await broker.aclose()
            raise ConnectionError("Redis did not accept the status-change subscription in time")
        return broker

    def channel(self, organization_id: str) -> str:
        return f"{self._prefix}{organization_id}"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-status-subscription")

    async def wait_until_subscribed(self, within: float) -> bool:
        """True once the pattern subscription is live (again, after a reconnect)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), within)
        except TimeoutError:
            return False
        return True

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def subscriber_count(self) -> int:
        return self._local.subscriber_count

    async def publish(self, change: StatusChanged) -> None:
        # No local delivery here: this replica's own subscription brings the change back, so
        # local subscribers get it exactly once, in the same order as every other replica.
        try:
            await self._client.publish(
                self.channel(change.organization_id), change.model_dump_json()
            )
        except (RedisError, OSError):
            # The change is committed and audited; failing the caller's request now would only
            # make it retry a done operation. Live subscribers miss this one event.
            logger.warning(
                "could not publish a status change to Redis",
                extra={"object_type": change.object_type.value, "object_id": change.object_id},
                exc_info=True,
            )

    def subscribe(
        self, organization_id: str
    ) -> AbstractAsyncContextManager[asyncio.Queue[StatusChanged]]:
        return self._local.subscription(organization_id)

    async def check(self, within: float = 2.0) -> None:
        """Ready: the pattern subscription is live (else this replica's subscribers miss
        changes) and Redis answers a PING within ``within`` seconds (else publishing fails).
        Raises ``ConnectionError`` otherwise."""
        if not self._subscribed.is_set():
            raise ConnectionError("not subscribed to Redis (reconnecting)")
        try:
            await asyncio.wait_for(self._client.ping(), within)
        except (RedisError, TimeoutError) as error:
            raise ConnectionError(
                f"Redis did not answer a PING ({type(error).__name__})"
            ) from error

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a subscription whose clean-up does not finish must not hang shutdown
            # (once, in the Redis outage tests, the wait here never ended, the loop idle). And
            # ``wait``, not ``await task`` under a suppress: a caller cancelled while waiting
            # here stays cancelled.
            done, _ = await asyncio.wait({task}, timeout=self._close_timeout)
            if not done:
                logger.warning(
                    "Redis status subscription did not stop within %s s", self._close_timeout
                )
            elif not task.cancelled() and task.exception() is not None:
                logger.error(
                    "Redis status subscription ended with an error", exc_info=task.exception()
                )
        await self._client.aclose()

    # the subscription loop ----------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_initial
        while True:
            made_before = self.subscriptions_made
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(_glob_escape(self._prefix) + "*")
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                logger.warning("Redis status subscription lost (%s)", type(exc).__name__)
            except Exception:  # a bug here must not end fan-out for the replica's lifetime
                logger.exception("Redis status subscription failed")
            finally:
                self._subscribed.clear()
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if self.subscriptions_made > made_before:
                delay = self._backoff_initial  # it worked for a while: start over
            # Full jitter: replicas that lost Redis together do not reconnect in lockstep.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._backoff_max)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        ping_sent_at: float | None = None
        while True:
            message = await pubsub.get_message(timeout=self._poll_seconds)
            now = loop.time()
            if message is None:
                # A half-open TCP connection never errors on read: ask, and give up on silence.
                if ping_sent_at is not None and now - ping_sent_at > self._pong_timeout:
                    raise ConnectionError("Redis did not answer PING on the subscription")
                if ping_sent_at is None and now - last_seen > self._ping_after_idle:
                    await pubsub.ping()
                    ping_sent_at = now
                continue
            last_seen, ping_sent_at = now, None
            kind = message.get("type")
            if kind == "psubscribe":
                self.subscriptions_made += 1
                if self.subscriptions_made > 1:
                    logger.info("Redis status subscription restored")
                self._subscribed.set()
            elif kind == "pmessage":
                self._receive(message.get("channel"), message.get("data"))

    def _receive(self, channel: object, data: object) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if not isinstance(data, bytes | str):
            return
        try:
            change = StatusChanged.model_validate_json(data)
        except ValidationError:
            logger.warning("ignoring a malformed status change on %s", channel)
            return
        if channel != self.channel(change.organization_id):
            # The channel is the routing key: a payload naming another organization is dropped.
            logger.warning("ignoring a status change published on another organization's channel")
            return
        self._local.deliver(change)


def _glob_escape(text: str) -> str:
    """The prefix as a literal inside a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "\\*?[]^" else c for c in text)
