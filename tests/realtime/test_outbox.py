"""The status outbox against the real Redis and both databases: a move whose replica never
passed it on is published by the relay's leader; a move the stream took is forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from redis.asyncio import Redis

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged, StatusUpdate
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.events import outbox as outbox_module
from payout_gateway.events.outbox import StatusOutbox
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.events.redis_broker import RedisBroker
from payout_gateway.store import Store
from payout_gateway.store.leadership import AlwaysLeads
from payout_gateway.tenancy import Tenancy
from tests.support.names import unique_suffix
from tests.support.redis_proxy import behind_a_proxy, wait_until_away
from tests.webhooks.support import add_payout

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 5.0
GRACE = timedelta(seconds=15)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class NeverLeads:
    async def lead(self) -> bool:
        return False

    async def step_down(self) -> None:
        return None


@pytest.fixture
def prefix() -> str:
    return f"pgw-test-{unique_suffix()}:status:"


@pytest.fixture
async def replica(prefix: str) -> AsyncIterator[RedisBroker]:
    """A replica that reaches Redis (the one that relays)."""
    broker = await RedisBroker.connect(REDIS_URL, prefix=prefix)
    yield broker
    await broker.aclose()


@asynccontextmanager
async def cut_off_replica(prefix: str) -> AsyncIterator[RedisBroker]:
    """A replica that cannot reach Redis: what it publishes waits in its memory, and is
    gone when it stops."""
    broker = RedisBroker(
        Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5),
        prefix=prefix,
        close_timeout_seconds=0.1,
    )
    broker.start()
    try:
        yield broker
    finally:
        await broker.aclose()


async def organization(store: Store) -> str:
    org = await Tenancy(store, SecretStr("pepper")).create_organization(
        name=f"outbox-{unique_suffix()}",
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr("key_outbox")),
        profile=OrganizationProfile(country="US", currency="USD"),
    )
    return org.id


async def pay(pipeline: StatusPipeline, store: Store, org_id: str) -> StatusChanged:
    """A pending payout paid, through the pipeline: committed, then published."""
    payout_id = await add_payout(store, org_id, f"po_{unique_suffix()}", provider=Provider.COMMET)
    change = await pipeline.apply(
        StatusUpdate(
            organization_id=org_id,
            object_type=ObjectType.PAYOUT,
            status=PayoutStatus.PAID,
            provider_status="paid",
            source=ChangeSource.WEBHOOK,
            at=datetime.now(UTC),
            object_id=payout_id,
        )
    )
    assert change is not None and change.sequence is not None
    return change


def relayed_total() -> float:
    return REGISTRY.get_sample_value("payout_gateway_status_changes_relayed_total") or 0.0


async def in_outbox(store: Store, clock: Clock) -> list[int]:
    async with store.session(write=False) as session:
        due = await session.outbox_due(committed_before=clock() + GRACE, first=100)
    return [change.sequence for change in due if change.sequence is not None]


async def test_a_move_its_replica_never_passed_on_is_published_by_the_relay(
    store: Store, replica: RedisBroker, prefix: str
) -> None:
    org_id = await organization(store)
    # The replica that committed the move cannot reach Redis, and stops with it unsent.
    async with cut_off_replica(prefix) as stranded_on:
        change = await pay(StatusPipeline(store, stranded_on, outbox=True), store, org_id)
        assert stranded_on.unsent == 1

    clock = Clock()
    relayed_before = relayed_total()
    outbox = StatusOutbox(store, replica, AlwaysLeads(), clock=clock, interval_seconds=0.05)
    relaying = asyncio.create_task(outbox.run_forever())
    try:
        async with replica.subscribe(org_id) as queue:
            await asyncio.sleep(0.2)
            assert queue.empty(), "relayed before its grace period"
            assert await in_outbox(store, clock) == [change.sequence]

            clock.now += GRACE + timedelta(seconds=1)
            shown = await asyncio.wait_for(queue.get(), WAIT)
            assert shown == change  # the same move, its sequence included
            assert outbox.relayed == 1
            assert relayed_total() - relayed_before == 1

            async def forgotten() -> None:
                while await in_outbox(store, clock):
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(forgotten(), WAIT)
            await asyncio.sleep(0.2)
            assert queue.empty()  # relayed once
    finally:
        relaying.cancel()


async def test_a_move_the_stream_took_is_forgotten_and_never_relayed(
    store: Store, replica: RedisBroker
) -> None:
    org_id = await organization(store)
    clock = Clock()
    outbox = StatusOutbox(store, replica, AlwaysLeads(), clock=clock, interval_seconds=0.05)
    relaying = asyncio.create_task(outbox.run_forever())
    try:
        async with replica.subscribe(org_id) as queue:
            change = await pay(StatusPipeline(store, replica, outbox=True), store, org_id)
            assert await asyncio.wait_for(queue.get(), WAIT) == change

            async def forgotten() -> None:
                while await in_outbox(store, clock):
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(forgotten(), WAIT)
            clock.now += GRACE * 2
            assert await outbox.relay_once() == 0
            assert queue.empty()
    finally:
        relaying.cancel()


async def test_only_the_leader_relays_and_only_while_its_own_changes_are_sent(
    store: Store, replica: RedisBroker, prefix: str
) -> None:
    org_id = await organization(store)
    async with cut_off_replica(prefix) as unreachable:
        change = await pay(StatusPipeline(store, unreachable, outbox=True), store, org_id)
        clock = Clock()
        clock.now += GRACE * 2
        follower = StatusOutbox(store, replica, NeverLeads(), clock=clock)
        assert await follower.relay_once() == 0
        # A leader that cannot reach Redis itself leaves the outbox to a later turn.
        cut_off = StatusOutbox(store, unreachable, AlwaysLeads(), clock=clock)
        assert await cut_off.relay_once() == 0
        assert await in_outbox(store, clock) == [change.sequence]
        leader = StatusOutbox(store, replica, AlwaysLeads(), clock=clock)
        assert await leader.relay_once() == 1


async def test_a_pipeline_without_an_outbox_keeps_none(store: Store, replica: RedisBroker) -> None:
    org_id = await organization(store)
    await pay(StatusPipeline(store, replica), store, org_id)
    assert await in_outbox(store, Clock()) == []


async def test_the_relay_reads_the_outbox_in_batches_and_bounds_a_turn(
    store: Store, replica: RedisBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RELAY_BATCH", 2)
    monkeypatch.setattr(outbox_module, "RELAY_TURN", 4)
    org_id = await organization(store)
    async with cut_off_replica(prefix) as unreachable:
        pipeline = StatusPipeline(store, unreachable, outbox=True)
        stranded = [await pay(pipeline, store, org_id) for _ in range(5)]
    clock = Clock()
    clock.now += GRACE * 2
    leader = StatusOutbox(store, replica, AlwaysLeads(), clock=clock)
    async with replica.subscribe(org_id) as queue:
        assert await leader.relay_once() == 4  # two batches of two, then the turn is over
        shown = [await asyncio.wait_for(queue.get(), WAIT) for _ in range(4)]
        assert shown == stranded[:4]
        await asyncio.wait_for(replica.sent(), WAIT)
        await leader.forget_written()
        assert await leader.relay_once() == 1
        assert await asyncio.wait_for(queue.get(), WAIT) == stranded[4]


async def move(
    pipeline: StatusPipeline, org_id: str, payout_id: str, status: PayoutStatus
) -> StatusChanged:
    change = await pipeline.apply(
        StatusUpdate(
            organization_id=org_id,
            object_type=ObjectType.PAYOUT,
            status=status,
            provider_status=status.value.lower(),
            source=ChangeSource.WEBHOOK,
            at=datetime.now(UTC),
            object_id=payout_id,
        )
    )
    assert change is not None and change.sequence is not None
    return change


async def test_a_stranded_move_a_later_published_one_superseded_is_dropped_not_relayed(
    store: Store, replica: RedisBroker, prefix: str
) -> None:
    # PENDING -> IN_TRANSIT committed by a replica that died with it unsent; then another
    # replica moved the payout on to PAID and published that. A replica that started since
    # (a rolling deploy's new one) never saw PAID move through its fan-out, so the stale
    # filter cannot drop the relayed IN_TRANSIT: relaying it would move the payout back.
    org_id = await organization(store)
    payout_id = await add_payout(store, org_id, f"po_{unique_suffix()}", provider=Provider.COMMET)
    async with cut_off_replica(prefix) as stranded_on:
        await move(
            StatusPipeline(store, stranded_on, outbox=True),
            org_id,
            payout_id,
            PayoutStatus.IN_TRANSIT,
        )
    clock = Clock()
    leader = StatusOutbox(store, replica, AlwaysLeads(), clock=clock)
    async with replica.subscribe(org_id) as queue:
        paid = await move(
            StatusPipeline(store, replica, outbox=True), org_id, payout_id, PayoutStatus.PAID
        )
        assert await asyncio.wait_for(queue.get(), WAIT) == paid
        await leader.forget_written()
    started_since = await RedisBroker.connect(REDIS_URL, prefix=prefix)
    try:
        async with started_since.subscribe(org_id) as fresh:
            clock.now += GRACE * 2
            relayed = await leader.relay_once()
            await asyncio.wait_for(replica.sent(), WAIT)
            await asyncio.sleep(0.3)
            assert fresh.empty(), "a superseded move was relayed: the payout moved back"
            assert relayed == 0
        assert await in_outbox(store, clock) == []  # and it does not linger there
    finally:
        await started_since.aclose()


async def test_stranded_moves_of_one_object_are_all_relayed_in_order(
    store: Store, replica: RedisBroker, prefix: str
) -> None:
    # Both moves stayed in the outbox (their replica died): neither is superseded by a move
    # the stream took, so both go, in order.
    org_id = await organization(store)
    payout_id = await add_payout(store, org_id, f"po_{unique_suffix()}", provider=Provider.COMMET)
    async with cut_off_replica(prefix) as stranded_on:
        pipeline = StatusPipeline(store, stranded_on, outbox=True)
        moves = [
            await move(pipeline, org_id, payout_id, PayoutStatus.IN_TRANSIT),
            await move(pipeline, org_id, payout_id, PayoutStatus.PAID),
        ]
    clock = Clock()
    clock.now += GRACE * 2
    leader = StatusOutbox(store, replica, AlwaysLeads(), clock=clock)
    async with replica.subscribe(org_id) as queue:
        assert await leader.relay_once() == 2
        assert [await asyncio.wait_for(queue.get(), WAIT) for _ in moves] == moves


async def test_a_leader_cut_off_from_redis_leaves_the_relay_to_a_replica_that_reaches_it(
    store: Store, replica: RedisBroker, prefix: str
) -> None:
    org_id = await organization(store)
    clock = Clock()
    leaders_lead, others_lead = store.leadership("status-outbox"), store.leadership("status-outbox")
    try:
        async with behind_a_proxy(prefix) as (proxy, leaders_broker):
            leader = StatusOutbox(store, leaders_broker, leaders_lead, clock=clock)
            other = StatusOutbox(store, replica, others_lead, clock=clock)
            assert await leader.relay_once() == 0  # it leads: nothing is due yet
            # Then only its way to Redis is cut (a partition): it goes on serving, its lock's
            # session alive, while a replica that committed a move is killed before Redis
            # took it.
            await proxy.down()
            await wait_until_away(leaders_broker)
            async with cut_off_replica(prefix) as unreachable:
                change = await pay(StatusPipeline(store, unreachable, outbox=True), store, org_id)
            clock.now += GRACE * 2
            async with replica.subscribe(org_id) as queue:
                assert await leader.relay_once() == 0
                # The move waited for as long as the leader stayed cut off.
                assert await other.relay_once() == 1
                assert await asyncio.wait_for(queue.get(), WAIT) == change
    finally:
        await leaders_lead.step_down()
        await others_lead.step_down()


async def test_a_burst_of_published_moves_larger_than_a_statement_binds_is_forgotten(
    store: Store, replica: RedisBroker
) -> None:
    org_id = await organization(store)
    kept = await pay(StatusPipeline(store, replica, outbox=True), store, org_id)
    assert kept.sequence is not None
    # More ids than one statement may bind, as after a long outage: all of them forgotten.
    burst = [*range(10_000_000, 10_040_000), kept.sequence]
    async with store.session() as session:
        await session.remove_from_outbox(burst)
    assert await in_outbox(store, Clock()) == []


async def test_moves_whose_rows_could_not_be_cleared_are_cleared_at_the_next_try(
    store: Store, replica: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id = await organization(store)
    outbox = StatusOutbox(store, replica, AlwaysLeads(), clock=Clock())
    change = await pay(StatusPipeline(store, replica, outbox=True), store, org_id)
    await asyncio.wait_for(replica.sent(), WAIT)
    outage = StoreUnavailableError()
    real_session = store.session

    def unavailable(*_: Any, **__: Any) -> Any:
        raise outage

    monkeypatch.setattr(store, "session", unavailable)
    with pytest.raises(StoreUnavailableError):
        await outbox.forget_written()
    monkeypatch.setattr(store, "session", real_session)
    assert await in_outbox(store, Clock()) == [change.sequence]
    await outbox.forget_written()  # the database is back
    assert await in_outbox(store, Clock()) == []


class CountingLeads:
    def __init__(self) -> None:
        self.step_downs = 0

    async def lead(self) -> bool:
        return True

    async def step_down(self) -> None:
        self.step_downs += 1


async def test_a_leader_keeps_the_relay_through_a_moments_backlog_of_its_own(
    store: Store,
) -> None:
    # A busy replica often has a change or two not yet sent at the instant its turn comes:
    # giving the lead up then would churn the lock's session every few seconds.
    broker = SimpleNamespace(subscribed=True, unsent=0, on_written=None)
    leads = CountingLeads()
    outbox = StatusOutbox(store, broker, leads, clock=Clock())  # type: ignore[arg-type]
    assert await outbox.relay_once() == 0  # leads; nothing stranded
    broker.unsent = 3
    assert await outbox.relay_once() == 0
    assert leads.step_downs == 0
    broker.unsent = 5  # still waiting at the next turn: Redis is not taking them
    assert await outbox.relay_once() == 0
    assert leads.step_downs == 1
