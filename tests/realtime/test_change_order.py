"""Fan-out never moves a subscriber's view of an object backwards: each published move carries
its audit row's sequence, and a replica drops a change that arrives after a later one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from redis.asyncio import Redis

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged, StatusUpdate
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.events import redis_broker
from payout_gateway.events.broker import InProcessBroker, LocalFanout, Missed
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.events.redis_broker import RedisBroker, stream_key
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from tests.support.names import unique_suffix
from tests.support.redis_proxy import behind_a_proxy, wait_until_away
from tests.webhooks.support import add_payout, changes_of

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def move(
    sequence: int | None,
    to: str,
    *,
    object_id: str = "po_1",
    organization_id: str = "org_1",
    object_type: ObjectType = ObjectType.PAYOUT,
) -> StatusChanged:
    return StatusChanged(
        organization_id=organization_id,
        object_type=object_type,
        object_id=object_id,
        from_status="PENDING",
        to_status=to,
        provider_status=to.lower(),
        source=ChangeSource.WEBHOOK,
        at=T0,
        sequence=sequence,
    )


def drained(queue: asyncio.Queue[StatusChanged | None]) -> list[str]:
    shown = []
    while not queue.empty():
        change = queue.get_nowait()
        assert change is not None
        shown.append(f"{change.object_id}:{change.to_status}")
    return shown


async def test_a_change_arriving_after_a_later_one_of_its_object_is_dropped() -> None:
    fanout = LocalFanout()
    async with fanout.subscription("org_1") as queue:
        fanout.deliver(move(7, "PAID"))
        fanout.deliver(move(5, "IN_TRANSIT"))  # committed before PAID, published after it
        fanout.deliver(move(7, "PAID"))  # the same change twice
        fanout.deliver(move(6, "IN_TRANSIT", object_id="po_2"))  # another object: its own
        fanout.deliver(move(3, "IN_TRANSIT", object_id="po_1", object_type=ObjectType.BANK_ACCOUNT))
        assert drained(queue) == ["po_1:PAID", "po_2:IN_TRANSIT", "po_1:IN_TRANSIT"]
        assert fanout.dropped_stale == 2


async def test_a_change_without_a_sequence_is_delivered_as_it_comes() -> None:
    fanout = LocalFanout()
    async with fanout.subscription("org_1") as queue:
        fanout.deliver(move(7, "PAID"))
        fanout.deliver(move(None, "IN_TRANSIT"))  # from an older replica: nothing to compare
        assert drained(queue) == ["po_1:PAID", "po_1:IN_TRANSIT"]


async def test_the_objects_remembered_are_bounded_oldest_first() -> None:
    fanout = LocalFanout(remembered_objects=2)
    async with fanout.subscription("org_1") as queue:
        for n in range(3):
            fanout.deliver(move(10, "PAID", object_id=f"po_{n}"))
        fanout.deliver(move(1, "IN_TRANSIT", object_id="po_2"))  # remembered: dropped
        fanout.deliver(move(1, "IN_TRANSIT", object_id="po_0"))  # forgotten: delivered
        assert drained(queue)[-1] == "po_0:IN_TRANSIT"
        assert fanout.dropped_stale == 1


async def test_each_published_move_carries_its_audit_rows_sequence(store: Store) -> None:
    org = await Tenancy(store, SecretStr("pepper")).create_organization(
        name="order",
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr("key_order")),
        profile=OrganizationProfile(country="US", currency="USD"),
    )
    broker = InProcessBroker()
    pipeline = StatusPipeline(store, broker)
    first, second = [
        await add_payout(store, org.id, f"po_{unique_suffix()}", provider=Provider.COMMET)
        for _ in range(2)
    ]
    steps = [
        (first, PayoutStatus.IN_TRANSIT),
        (second, PayoutStatus.IN_TRANSIT),
        (first, PayoutStatus.PAID),
        (second, PayoutStatus.FAILED),
    ]
    async with broker.subscribe(org.id) as queue:
        for n, (payout_id, status) in enumerate(steps):
            update = StatusUpdate(
                organization_id=org.id,
                object_type=ObjectType.PAYOUT,
                status=status,
                provider_status=status.value.lower(),
                source=ChangeSource.WEBHOOK,
                at=T0 + timedelta(minutes=n + 1),
                object_id=payout_id,
            )
            assert await pipeline.apply(update) is not None
        published = [queue.get_nowait() for _ in steps]
    sequences = [change.sequence for change in published if change is not None]
    assert len(sequences) == len(steps)
    assert all(isinstance(s, int) for s in sequences)
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    # The same numbers the audit trail reads back for those moves.
    for payout_id in (first, second):
        trail = await changes_of(store, org.id, payout_id)
        moves = {c.to_status: c.sequence for c in trail if c.from_status is not None}
        assert moves == {
            c.to_status: c.sequence for c in published if c is not None and c.object_id == payout_id
        }


@pytest.mark.redis
async def test_a_replicas_late_publication_does_not_move_other_replicas_views_back() -> None:
    prefix = f"pgw-test-{unique_suffix()}:status:"
    a = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
    b = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        async with a.subscribe("org_1") as on_a, b.subscribe("org_1") as on_b:
            # b committed IN_TRANSIT first but reached Redis after a's later PAID.
            await a.publish(move(8, "PAID"))
            await asyncio.wait_for(a.sent(), 5)
            await b.publish(move(5, "IN_TRANSIT"))
            await b.publish(move(9, "PAID", object_id="po_marker"))
            for queue in (on_a, on_b):
                shown = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
                assert [c.object_id + ":" + c.to_status for c in shown if c] == [
                    "po_1:PAID",
                    "po_marker:PAID",
                ]
    finally:
        await a.aclose()
        await b.aclose()


def ended_missing(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "payout_gateway_subscriptions_ended_missing_total", {"reason": reason}
        )
        or 0.0
    )


async def test_subscriptions_ended_for_missed_changes_are_counted_by_reason() -> None:
    lost_before, behind_before = ended_missing("lost_in_fanout"), ended_missing("fell_behind")
    fanout = LocalFanout()
    async with fanout.subscription("org_1") as first, fanout.subscription("org_2") as second:
        assert fanout.interrupt(None, Missed.LOST_IN_FANOUT) == 2
        assert first.missed is second.missed is Missed.LOST_IN_FANOUT
    assert ended_missing("lost_in_fanout") - lost_before == 2
    assert ended_missing("fell_behind") == behind_before


@pytest.mark.redis
async def test_a_late_publication_does_not_move_back_the_view_of_a_replica_started_since() -> None:
    """A replica started after the later move went through never saw it: it starts reading at
    the stream's end. It learns the objects' last moves from the entries before its place."""
    prefix = f"pgw-test-{unique_suffix()}:status:"
    b = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        async with behind_a_proxy(prefix) as (proxy, cut_off):
            await proxy.down()
            await wait_until_away(cut_off)
            # Cut off from Redis, it applied IN_TRANSIT; B then applied PAID, which went through.
            await cut_off.publish(move(5, "IN_TRANSIT"))
            await b.publish(move(6, "PAID"))
            await asyncio.wait_for(b.sent(), 5)
            started_since = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
            try:
                async with started_since.subscribe("org_1") as queue:
                    await proxy.up()
                    await asyncio.wait_for(cut_off.sent(), 10)
                    await b.publish(move(7, "PAID", object_id="po_marker"))
                    shown = await asyncio.wait_for(queue.get(), 5)
                    assert shown is not None
                    assert f"{shown.object_id}:{shown.to_status}" == "po_marker:PAID"
            finally:
                await started_since.aclose()
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_a_replica_started_since_notes_every_object_before_its_place_slice_by_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_broker, "_REMEMBER_SLICE", 3)
    prefix = f"pgw-test-{unique_suffix()}:status:"
    b = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        for n in range(10):
            await b.publish(move(100 + n, "PAID", object_id=f"po_{n}"))
        await asyncio.wait_for(b.sent(), 5)
        started_since = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
        try:
            async with started_since.subscribe("org_1") as queue:
                for n in range(10):  # late: each before its object's move in the stream
                    await b.publish(move(50 + n, "IN_TRANSIT", object_id=f"po_{n}"))
                await b.publish(move(200, "PAID", object_id="po_marker"))
                shown = await asyncio.wait_for(queue.get(), 5)
                assert shown is not None
                assert f"{shown.object_id}:{shown.to_status}" == "po_marker:PAID"
                assert started_since._local.dropped_stale == 10
        finally:
            await started_since.aclose()
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_a_replica_placed_anew_in_a_stream_written_again_notes_what_came_before() -> None:
    prefix = f"pgw-test-{unique_suffix()}:status:"
    b = await RedisBroker.connect("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        async with behind_a_proxy(prefix) as (proxy, replica):
            for n in range(3):
                await b.publish(move(n + 1, "PAID", object_id=f"po_early_{n}"))
            await asyncio.wait_for(b.sent(), 5)
            async with replica.subscribe("org_1") as queue:
                for _ in range(3):
                    assert await asyncio.wait_for(queue.get(), 5) is not None
                proxy.hold()
                # The stream deleted (FLUSHDB, an eviction), then written again by a move.
                redis = Redis.from_url("redis://127.0.0.1:6379/0")
                await redis.delete(stream_key(prefix))
                await redis.aclose()
                await b.publish(move(8, "PAID"))
                await asyncio.wait_for(b.sent(), 5)
                proxy.release()
                assert await asyncio.wait_for(queue.get(), 5) is None  # ended: it may miss some
            async with replica.subscribe("org_1") as queue:
                await b.publish(move(5, "IN_TRANSIT"))  # published late
                await b.publish(move(9, "PAID", object_id="po_marker"))
                shown = await asyncio.wait_for(queue.get(), 5)
                assert shown is not None
                assert f"{shown.object_id}:{shown.to_status}" == "po_marker:PAID"
    finally:
        await b.aclose()
