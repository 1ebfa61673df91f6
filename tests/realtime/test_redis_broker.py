"""RedisBroker against the real Redis: two brokers stand for two replicas sharing one server."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.events import redis_broker as redis_broker_module
from payout_gateway.events.broker import Missed
from payout_gateway.events.redis_broker import RedisBroker, stream_key
from payout_gateway.settings import Settings
from payout_gateway.tenancy import Tenancy
from payout_gateway.web import create_app
from tests.support.live_server import live_server
from tests.support.names import unique_suffix
from tests.support.redis_proxy import TcpProxy, behind_a_proxy, wait_until_away

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


async def next_change(queue: asyncio.Queue[StatusChanged | None]) -> StatusChanged:
    got = await asyncio.wait_for(queue.get(), WAIT)
    assert got is not None, "the subscription was ended"
    return got


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


async def append(redis: Redis, prefix: str, fields: dict[str, str | bytes]) -> None:
    """An entry written to the stream straight, as another replica (or anything else) might."""
    await redis.xadd(stream_key(prefix), fields)  # type: ignore[arg-type]


def entry(changed: StatusChanged, publication_id: str | None = None) -> dict[str, str | bytes]:
    return {"id": publication_id or uuid.uuid4().hex, "change": changed.model_dump_json()}


async def test_malformed_entries_are_dropped_and_a_change_written_twice_is_delivered_once(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, _ = replicas
    async with a.subscribe("org_1") as on_a:
        await append(redis, prefix, {"id": "x1", "change": b"{not json"})
        await append(redis, prefix, {"change": change("org_1", "pa_no_id").model_dump_json()})
        await append(redis, prefix, {"id": "x2"})
        # The same publication twice: a write retried after its answer was lost.
        twice = entry(change("org_1", "pa_twice"))
        await append(redis, prefix, twice)
        await append(redis, prefix, twice)
        await append(redis, prefix, entry(change("org_1", "pa_sentinel")))
        assert (await next_change(on_a)).object_id == "pa_twice"
        assert (await next_change(on_a)).object_id == "pa_sentinel"
        assert on_a.empty()


async def test_other_prefixes_are_not_received(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, _ = replicas
    async with a.subscribe("org_1") as on_a:
        await append(redis, f"x{prefix}", entry(change("org_1", "pa_other")))
        await append(redis, prefix, entry(change("org_1", "pa_mine")))
        assert (await next_change(on_a)).object_id == "pa_mine"


async def test_a_change_published_while_the_reading_connection_was_killed_still_arrives(
    replicas: tuple[RedisBroker, RedisBroker], redis: Redis, prefix: str
) -> None:
    a, b = replicas
    name = f"{prefix.split(':')[0]}-a"
    async with a.subscribe("org_1") as on_a:
        killed = [c["id"] for c in await redis.client_list() if c.get("name") == name]
        assert killed  # the reading connection at least
        for client_id in killed:
            await redis.client_kill_filter(_id=client_id)
        await b.publish(change("org_1", "pa_meanwhile"))
        assert (await next_change(on_a)).object_id == "pa_meanwhile"
        await b.publish(change("org_1", "pa_after"))
        assert (await next_change(on_a)).object_id == "pa_after"
        still = [c["id"] for c in await redis.client_list() if c.get("name") == name]
        assert still and not set(still) & set(killed)


async def test_changes_published_while_a_replica_was_away_reach_it_in_order(
    prefix: str,
) -> None:
    publisher = await RedisBroker.connect(REDIS_URL, prefix=prefix)
    try:
        async with behind_a_proxy(prefix) as (proxy, away), away.subscribe("org_1") as queue:
            await publisher.publish(change("org_1", "pa_before"))
            assert (await next_change(queue)).object_id == "pa_before"

            await proxy.down()
            await wait_until_away(away)
            meanwhile = [change("org_1", f"pa_{n}") for n in range(3)]
            for missed in meanwhile:
                await publisher.publish(missed)
            # Written to Redis while the replica is away (pub/sub would have dropped them).
            await asyncio.wait_for(publisher.sent(), WAIT)

            await proxy.up()
            assert await away.wait_until_subscribed(10)
            assert [await next_change(queue) for _ in meanwhile] == meanwhile
            await publisher.publish(change("org_1", "pa_after"))
            assert (await next_change(queue)).object_id == "pa_after"
            assert queue.empty()
    finally:
        await publisher.aclose()


async def test_changes_published_while_redis_is_away_are_sent_once_it_is_back(
    prefix: str,
) -> None:
    async with behind_a_proxy(prefix) as (proxy, broker), broker.subscribe("org_1") as queue:
        await proxy.down()
        await wait_until_away(broker)
        kept = [change("org_1", f"pa_{n}") for n in range(3)]
        for published in kept:
            await broker.publish(published)  # returns without waiting for Redis
        assert broker.unsent == 3

        await proxy.up()
        assert [await next_change(queue) for _ in kept] == kept
        assert broker.unsent == 0
        await asyncio.sleep(0.2)
        assert queue.empty()


def recording_deliveries(broker: RedisBroker) -> list[StatusChanged]:
    """What the broker reads from the stream, as its fan-out is handed it, from now on."""
    read_back: list[StatusChanged] = []
    deliver = broker._local.deliver

    def recording(change: StatusChanged) -> None:
        read_back.append(change)
        deliver(change)

    broker._local.deliver = recording  # type: ignore[method-assign]
    return read_back


async def read_until(read_back: list[StatusChanged], last: str) -> None:
    async def caught_up() -> None:
        while not read_back or read_back[-1].object_id != last:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(caught_up(), WAIT)


def assert_read_on_from_the_oldest_kept(
    broker: RedisBroker,
    caplog: pytest.LogCaptureFixture,
    read_back: list[StatusChanged],
    published: int,
) -> None:
    """The broker counted and logged the entries trimmed before it read them, and read on
    from the oldest entry kept, in order: the count of the others is exact."""
    # (The publisher, reading its own writes more slowly than it makes them here, may report
    # a gap of its own.)
    missed = broker.missed_in_stream
    assert missed > 0
    assert [r for r in caplog.records if "trimmed past" in r.getMessage() and r.args == (missed,)]
    assert missed + len(read_back) == published
    assert [c.object_id for c in read_back] == [f"pa_{n}" for n in range(missed, published)]


async def test_a_replica_away_past_the_streams_length_ends_its_subscriptions_and_counts_the_loss(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await RedisBroker.connect(REDIS_URL, prefix=prefix, stream_max_length=100)
    published = 350
    try:
        async with behind_a_proxy(prefix) as (proxy, away), away.subscribe("org_1") as queue:
            # Read before going away, so that its place is not where it started.
            for n in range(5):
                await publisher.publish(change("org_1", f"pa_early_{n}"))
            for n in range(5):
                assert (await next_change(queue)).object_id == f"pa_early_{n}"
            await proxy.down()
            await wait_until_away(away)
            for n in range(published):
                await publisher.publish(change("org_1", f"pa_{n}"))
            await asyncio.wait_for(publisher.sent(), WAIT)
            # What the replica reads once back, as its fan-out is handed it.
            read_back = recording_deliveries(away)

            with caplog.at_level(logging.ERROR, logger="payout_gateway.events"):
                await proxy.up()
                assert await away.wait_until_subscribed(10)
                # The subscription is not shown a stream with a gap: it is ended, saying why.
                assert await asyncio.wait_for(queue.get(), WAIT) is None
                assert queue.overflowed and queue.missed is Missed.LOST_IN_FANOUT

                await read_until(read_back, f"pa_{published - 1}")
            assert_read_on_from_the_oldest_kept(away, caplog, read_back, published)
    finally:
        await publisher.aclose()


async def test_a_replica_reading_more_slowly_than_the_stream_is_trimmed_ends_its_subscriptions(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Never away from Redis: its reads held up (a frozen or starved process, a slow link)
    while the other replicas publish more than the stream keeps. Reading on answered the
    oldest entries kept, and its subscribers were shown a stream with a silent gap."""
    publisher = await RedisBroker.connect(REDIS_URL, prefix=prefix, stream_max_length=100)
    published = 350
    try:
        async with behind_a_proxy(prefix) as (proxy, slow), slow.subscribe("org_1") as queue:
            for n in range(5):
                await publisher.publish(change("org_1", f"pa_early_{n}"))
            for n in range(5):
                assert (await next_change(queue)).object_id == f"pa_early_{n}"
            proxy.hold()
            for n in range(published):
                await publisher.publish(change("org_1", f"pa_{n}"))
            await asyncio.wait_for(publisher.sent(), WAIT)
            read_back = recording_deliveries(slow)

            with caplog.at_level(logging.ERROR, logger="payout_gateway.events"):
                proxy.release()
                assert await asyncio.wait_for(queue.get(), WAIT) is None
                assert queue.overflowed and queue.missed is Missed.LOST_IN_FANOUT
                await read_until(read_back, f"pa_{published - 1}")
            assert slow.subscriptions_made == 1  # connected all along
            assert_read_on_from_the_oldest_kept(slow, caplog, read_back, published)
            async with slow.subscribe("org_1") as again:  # subscribing again works
                await publisher.publish(change("org_1", "pa_next"))
                assert (await next_change(again)).object_id == "pa_next"
    finally:
        await publisher.aclose()


async def test_a_replica_whose_stream_was_deleted_and_written_again_ends_its_subscriptions(
    prefix: str, redis: Redis
) -> None:
    publisher = await RedisBroker.connect(REDIS_URL, prefix=prefix)
    try:
        async with behind_a_proxy(prefix) as (proxy, slow), slow.subscribe("org_1") as queue:
            for n in range(3):
                await publisher.publish(change("org_1", f"pa_early_{n}"))
            for n in range(3):
                assert (await next_change(queue)).object_id == f"pa_early_{n}"
            proxy.hold()
            # The read it is waiting on takes the first (its answer held up on the way); the
            # second is only in the stream.
            for n in range(2):
                await publisher.publish(change("org_1", f"pa_unread_{n}"))
                await asyncio.wait_for(publisher.sent(), WAIT)
            # Deleted (FLUSHDB, an eviction) and written again by the next publication.
            await redis.delete(stream_key(prefix))
            await publisher.publish(change("org_1", "pa_in_the_new_stream"))
            await asyncio.wait_for(publisher.sent(), WAIT)
            proxy.release()
            assert await asyncio.wait_for(queue.get(), WAIT) is None
            assert queue.missed is Missed.LOST_IN_FANOUT
            async with slow.subscribe("org_1") as again:  # it reads on in the new stream
                await publisher.publish(change("org_1", "pa_after"))
                assert (await next_change(again)).object_id == "pa_after"
    finally:
        await publisher.aclose()


@asynccontextmanager
async def another_redis_server(tmp_path: Path) -> AsyncIterator[int]:
    """A second Redis server of its own (a restarted or failed-over one: another run id),
    keeping nothing on disk; its port."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = Redis(port=port)
    try:
        for _ in range(200):
            try:
                await client.ping()
                break
            except RedisConnectionError:
                await asyncio.sleep(0.05)
        yield port
    finally:
        await client.aclose()
        server.terminate()
        server.wait(10)


async def test_a_replica_finding_another_redis_server_ends_its_subscriptions(
    prefix: str, tmp_path: Path
) -> None:
    async with (
        another_redis_server(tmp_path) as other_port,
        behind_a_proxy(prefix) as (proxy, replica),
        replica.subscribe("org_1") as queue,
    ):
        await replica.publish(change("org_1", "pa_before"))
        assert (await next_change(queue)).object_id == "pa_before"
        await proxy.down()
        await wait_until_away(replica)
        # Redis came back as another server (failed over to a replica that had synced only
        # part of the stream, or restarted): what the old stream held past this replica's
        # place may be lost, though the stream is there.
        failed_over = Redis(port=other_port)
        await failed_over.xadd(stream_key(prefix), entry(change("org_1", "pa_synced")))
        await failed_over.aclose()
        proxy.upstream_port = other_port
        await proxy.up()
        assert await replica.wait_until_subscribed(10)
        assert await asyncio.wait_for(queue.get(), WAIT) is None
        assert queue.missed is Missed.LOST_IN_FANOUT
        async with replica.subscribe("org_1") as again:  # and it goes on on the new server
            await replica.publish(change("org_1", "pa_after"))
            assert (await next_change(again)).object_id == "pa_after"


async def test_a_replica_finding_the_stream_deleted_while_it_was_away_ends_its_subscriptions(
    prefix: str, redis: Redis
) -> None:
    async with behind_a_proxy(prefix) as (proxy, replica), replica.subscribe("org_1") as queue:
        await replica.publish(change("org_1", "pa_before"))
        assert (await next_change(queue)).object_id == "pa_before"
        await proxy.down()
        await wait_until_away(replica)
        await redis.delete(stream_key(prefix))
        await proxy.up()
        assert await replica.wait_until_subscribed(10)
        assert await asyncio.wait_for(queue.get(), WAIT) is None
        assert queue.missed is Missed.LOST_IN_FANOUT


async def test_a_replica_reading_on_checks_the_server_is_still_the_same(
    replicas: tuple[RedisBroker, RedisBroker],
) -> None:
    a, b = replicas
    async with a.subscribe("org_1") as queue, b.subscribe("org_1") as other:
        # As if the client had reconnected by itself to a restarted server while reading.
        a._server_run_id = "a server restarted since"
        assert await asyncio.wait_for(queue.get(), WAIT) is None
        assert queue.missed is Missed.LOST_IN_FANOUT
        await b.publish(change("org_1", "pa_next"))
        assert (await next_change(other)).object_id == "pa_next"
        assert not other.overflowed


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


def unreachable(**options: Any) -> RedisBroker:
    broker = RedisBroker(
        Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), **options
    )
    broker.start()
    return broker


async def test_a_publish_redis_does_not_take_is_kept_and_reported_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = unreachable(close_timeout_seconds=0.5)
    try:
        await broker.publish(change("org_1"))
        assert broker.unsent == 1

        async def tried() -> None:
            while "could not publish status changes to Redis" not in caplog.text:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(tried(), WAIT)
        assert broker.unsent == 1
    finally:
        await broker.aclose()
    assert "closing with 1 status change(s) not written to Redis" in caplog.text


async def test_the_unsent_backlog_is_bounded_dropping_the_oldest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = unreachable(backlog_limit=3, close_timeout_seconds=0.1)
    try:
        async with broker.subscribe("org_1") as org1, broker.subscribe("org_2") as org2:
            await broker.publish(change("org_2", "pa_other"))
            for n in range(4):
                await broker.publish(change("org_1", f"pa_{n}"))
            assert broker.unsent == 3
            assert broker.dropped_unsent == 2
            kept = [StatusChanged.model_validate_json(u.payload).object_id for u in broker._backlog]
            assert kept == ["pa_1", "pa_2", "pa_3"]
            assert "dropped the oldest unsent status change (2 dropped so far)" in caplog.text
            # The subscriptions of the organizations whose changes were dropped end, saying so.
            assert org1.overflowed and org1.missed is Missed.LOST_IN_FANOUT
            assert org2.overflowed and org2.missed is Missed.LOST_IN_FANOUT
            assert org1.get_nowait() is None
        async with broker.subscribe("org_3") as org3:
            await broker.publish(change("org_1", "pa_4"))
            assert not org3.overflowed
    finally:
        await broker.aclose()


async def test_other_replicas_end_the_subscriptions_of_organizations_whose_changes_were_dropped(
    prefix: str,
) -> None:
    other = await RedisBroker.connect(REDIS_URL, prefix=prefix)
    try:
        async with (
            behind_a_proxy(prefix, backlog_limit=2) as (proxy, dropping),
            other.subscribe("org_1") as org1,
            other.subscribe("org_2") as org2,
        ):
            await proxy.down()
            await wait_until_away(dropping)
            for n in range(3):  # the first is dropped unsent
                await dropping.publish(change("org_1", f"pa_{n}"))
            assert dropping.dropped_unsent == 1
            assert not org1.overflowed  # the other replica cannot know yet

            await proxy.up()
            # The marker reaches it ahead of the changes kept: org_1's subscription ends;
            # org_2's goes on and sees what comes next.
            assert await asyncio.wait_for(org1.get(), WAIT) is None
            assert org1.missed is Missed.LOST_IN_FANOUT
            await asyncio.wait_for(dropping.sent(), WAIT)
            await dropping.publish(change("org_2", "pa_next"))
            assert (await next_change(org2)).object_id == "pa_next"
            assert not org2.overflowed
            async with other.subscribe("org_1") as again:  # subscribing again works
                await dropping.publish(change("org_1", "pa_later"))
                assert (await next_change(again)).object_id == "pa_later"
    finally:
        await other.aclose()


async def test_readiness_follows_the_subscription_through_an_outage(prefix: str) -> None:
    async with behind_a_proxy(prefix) as (proxy, broker):
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


async def test_readyz_stays_ready_while_redis_is_away_and_says_the_fan_out_is_degraded(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis is shared by every replica: a 503 here would take them all out of a load
    # balancer's rotation at once, though queries and mutations do not need Redis.
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

            async def readiness_becomes(answer: dict[str, str]) -> None:
                while True:
                    response = await client.get("/readyz")
                    assert response.status_code == 200, response.text
                    if response.json() == answer:
                        return
                    await asyncio.sleep(0.05)

            with caplog.at_level(logging.INFO, logger="payout_gateway"):
                await asyncio.wait_for(readiness_becomes({"status": "ready", "fanout": "ok"}), 10)
                await proxy.down()
                degraded = {"status": "ready", "fanout": "degraded"}
                await asyncio.wait_for(readiness_becomes(degraded), 10)
                await asyncio.wait_for(readiness_becomes(degraded), 1)  # and stays so
                await proxy.up()
                await asyncio.wait_for(readiness_becomes({"status": "ready", "fanout": "ok"}), 15)
            # Once per outage, not per probe.
            messages = [r.getMessage() for r in caplog.records]
            assert sum("status fan-out degraded" in m for m in messages) == 1, messages
            assert sum(m == "status fan-out works again" for m in messages) == 1, messages
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
        await proxy.down()


async def test_a_start_up_that_fails_after_reaching_redis_closes_what_it_opened(
    prefix: str, tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(*_: Any, **__: Any) -> list[str]:
        raise RuntimeError("a later start-up step failed")

    monkeypatch.setattr(Tenancy, "retire_demo_keys", fails)
    name = f"{prefix.split(':')[0]}-failing"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/gateway.db",
        redis_url=REDIS_URL,
        redis_channel_prefix=prefix,
    )
    monkeypatch.setattr(redis_broker_module, "Redis", _named_client(name))
    app = create_app(settings)
    with pytest.raises(RuntimeError, match="a later start-up step failed"):
        async with app.router.lifespan_context(app):
            pass
    # Redis's reading and sending tasks stopped, and its connections closed.
    running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert not running & {"redis-status-stream", "redis-status-sender"}, running
    assert not [c for c in await redis.client_list() if c.get("name") == name]


def _named_client(name: str) -> Any:
    """redis.asyncio.Redis, its connections named ``name`` (to find them on the server)."""

    class Named(Redis):
        @classmethod
        def from_url(cls, url: str, **options: Any) -> Redis:
            return Redis.from_url(url, **{**options, "client_name": name})

    return Named
