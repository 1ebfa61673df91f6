"""RedisBroker against the real Redis: two brokers stand for two replicas sharing one server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.events.redis_broker import RedisBroker
from payout_gateway.settings import Settings
from payout_gateway.web import create_app
from tests.support.live_server import live_server
from tests.support.names import unique_suffix

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 5.0


def change(org: str, object_id: str = "pa_1", to: str = "VERIFIED") -> StatusChanged:
    return StatusChanged(
        organization_id=org,
        object_type=ObjectType.PAYOUT_ACCOUNT,
        object_id=object_id,
        from_status="PENDING_VERIFICATION",
        to_status=to,
        provider_status=to.lower(),
        source=ChangeSource.WEBHOOK,
        at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


async def next_change(queue: asyncio.Queue[StatusChanged]) -> StatusChanged:
    return await asyncio.wait_for(queue.get(), WAIT)


@pytest.fixture
def prefix() -> str:
    # Unique per test: other suites may share this Redis at the same time.
    return f"pgw-test-{unique_suffix()}:status:"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    name = prefix.split(":")[0]
    a = await RedisBroker.connect(REDIS_URL, prefix=prefix, client_name=f"{name}-a")
    b = await RedisBroker.connect(REDIS_URL, prefix=prefix, client_name=f"{name}-b")
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_change_published_on_one_replica_reaches_the_other_for_its_org_only(
    replicas: tuple[RedisBroker, RedisBroker],
) -> None:
    a, b = replicas
    async with a.subscribe("org_1") as org1_on_a, a.subscribe("org_2") as org2_on_a:
        await b.publish(change("org_1", "pa_1"))
        await b.publish(change("org_2", "pa_2"))
        assert await next_change(org1_on_a) == change("org_1", "pa_1")
        assert await next_change(org2_on_a) == change("org_2", "pa_2")
        # Each queue got exactly its organization's change.
        assert org1_on_a.empty()
        assert org2_on_a.empty()


async def test_the_publishing_replica_delivers_its_own_change_once(
    replicas: tuple[RedisBroker, RedisBroker],
) -> None:
    a, b = replicas
    async with b.subscribe("org_1") as on_b, a.subscribe("org_1") as on_a:
        first, second = change("org_1", "pa_1"), change("org_1", "pa_1", to="RESTRICTED")
        await b.publish(first)
        await b.publish(second)
        # Redis keeps one publisher's order; a duplicate of the first would come before the
        # second.
        for queue in (on_b, on_a):
            assert await next_change(queue) == first
            assert await next_change(queue) == second
        await asyncio.sleep(0.2)
        assert on_b.empty()
        assert on_a.empty()


async def test_malformed_and_misrouted_publications_are_dropped(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, _ = replicas
    async with a.subscribe("org_1") as on_a, a.subscribe("org_2") as org2_on_a:
        await redis.publish(f"{prefix}org_1", b"{not json")
        # A payload naming org_2, sent on org_1's channel: delivered to nobody.
        await redis.publish(f"{prefix}org_1", change("org_2").model_dump_json())
        await redis.publish(f"{prefix}org_1", change("org_1", "pa_sentinel").model_dump_json())
        assert await next_change(on_a) == change("org_1", "pa_sentinel")
        assert org2_on_a.empty()


async def test_other_prefixes_are_not_received(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, _ = replicas
    async with a.subscribe("org_1") as on_a:
        await redis.publish(f"x{prefix}org_1", change("org_1", "pa_other").model_dump_json())
        await redis.publish(f"{prefix}org_1", change("org_1", "pa_mine").model_dump_json())
        assert (await next_change(on_a)).object_id == "pa_mine"


async def test_the_subscription_survives_a_killed_connection(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, b = replicas
    name = f"{prefix.split(':')[0]}-a"
    clients = await redis.client_list(_type="pubsub")
    (killed,) = [c["id"] for c in clients if c.get("name") == name]
    made = a.subscriptions_made
    assert await redis.client_kill_filter(_id=killed) == 1

    async def resubscribed() -> None:
        while a.subscriptions_made == made:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(resubscribed(), 10)
    clients = await redis.client_list(_type="pubsub")
    assert [c["id"] for c in clients if c.get("name") == name] not in ([], [killed])
    async with a.subscribe("org_1") as on_a:
        await b.publish(change("org_1", "pa_after"))
        assert (await next_change(on_a)).object_id == "pa_after"


class TcpProxy:
    """A loopback TCP proxy to the real Redis that can go down and come back on the same port:
    an outage longer than redis-py's own retries."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        # Closing both ends ends every pipe with EOF (cancelling the handlers instead makes
        # asyncio log an error on 3.11).
        for writer in self._writers:
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await asyncio.wait_for(self._server.wait_closed(), 5)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # Registered before anything is awaited, so that ``down`` closes a connection accepted
        # while it runs (the broker reconnects every few hundred ms) instead of leaving it
        # proxying through a proxy that is down.
        self._writers.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers.append(upstream_writer)
        if writer.is_closing():  # the proxy went down while the upstream connection opened
            upstream_writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            writer.close()
            upstream_writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def test_the_subscription_comes_back_after_an_outage(redis: Redis, prefix: str) -> None:
    proxy = TcpProxy()
    await proxy.up()
    broker = await RedisBroker.connect(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, backoff_max=0.3
    )
    try:
        async with broker.subscribe("org_1") as queue:
            await redis.publish(f"{prefix}org_1", change("org_1", "pa_before").model_dump_json())
            assert (await next_change(queue)).object_id == "pa_before"

            await proxy.down()

            async def lost() -> None:
                while broker.subscribed:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(lost(), 10)
            await proxy.up()
            assert await broker.wait_until_subscribed(10)
            await redis.publish(f"{prefix}org_1", change("org_1", "pa_after").model_dump_json())
            assert (await next_change(queue)).object_id == "pa_after"
    finally:
        await broker.aclose()
        await proxy.down()


async def test_connect_fails_fast_without_redis() -> None:
    with pytest.raises(ConnectionError):
        await RedisBroker.connect("redis://127.0.0.1:1/0", startup_timeout=1.0)


def broker_with_a_slow_subscription(close_timeout: float) -> tuple[RedisBroker, asyncio.Event]:
    """A broker whose subscription, once cancelled, cleans up only when the event is set."""
    broker = RedisBroker(
        Redis.from_url("redis://127.0.0.1:1/0"), close_timeout_seconds=close_timeout
    )
    released = asyncio.Event()

    async def subscription() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await released.wait()

    broker._task = asyncio.create_task(subscription())
    return broker, released


async def test_closing_does_not_wait_forever_for_a_stuck_subscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, released = broker_with_a_slow_subscription(close_timeout=0.2)
    await asyncio.sleep(0)
    await asyncio.wait_for(broker.aclose(), 5)
    assert "did not stop within 0.2 s" in caplog.text
    released.set()


async def test_a_caller_cancelled_while_closing_stays_cancelled() -> None:
    broker, released = broker_with_a_slow_subscription(close_timeout=30)
    await asyncio.sleep(0)
    closing = asyncio.create_task(broker.aclose())
    await asyncio.sleep(0.05)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    released.set()


async def test_a_failed_publish_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    broker = RedisBroker(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5))
    try:
        await broker.publish(change("org_1"))
    finally:
        await broker.aclose()
    assert "could not publish a status change" in caplog.text


async def test_readiness_follows_the_subscription_through_an_outage(prefix: str) -> None:
    proxy = TcpProxy()
    await proxy.up()
    broker = await RedisBroker.connect(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, backoff_max=0.3
    )
    try:
        await broker.check()
        await proxy.down()

        async def not_ready() -> None:
            while True:
                try:
                    await broker.check(within=0.5)
                except ConnectionError:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(not_ready(), 10)
        await proxy.up()
        assert await broker.wait_until_subscribed(10)
        await broker.check()
    finally:
        await broker.aclose()
        await proxy.down()


async def test_readyz_answers_503_while_redis_is_away(prefix: str, tmp_path: Path) -> None:
    proxy = TcpProxy()
    await proxy.up()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/gateway.db",
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        redis_channel_prefix=prefix,
    )
    # The server starts and stops in a thread: its start-up and shutdown talk to Redis through
    # the proxy, which runs on this test's event loop.
    server = live_server(create_app(settings))
    url = await asyncio.to_thread(server.__enter__)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:

            async def readiness_becomes(status: int) -> None:
                while (await client.get("/readyz")).status_code != status:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(readiness_becomes(200), 10)
            await proxy.down()
            await asyncio.wait_for(readiness_becomes(503), 10)
            assert (await client.get("/readyz")).json() == {"status": "unavailable"}
            await proxy.up()
            await asyncio.wait_for(readiness_becomes(200), 15)
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
        await proxy.down()
