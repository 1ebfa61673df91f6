"""The store on SQLite and on the real PostgreSQL: org scoping, keyset paging, defaults, keys."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import BankAccountStatus, Provider
from payout_gateway.domain.errors import IdempotencyInProgressError
from payout_gateway.domain.models import (
    BankAccount,
    IdempotencyRecord,
    Organization,
    OrganizationProfile,
    ProviderCredentials,
)
from payout_gateway.idempotency import Hold, IdempotencyKeys, Replay, purge_expired_forever
from payout_gateway.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def org(name: str) -> Organization:
    return Organization(
        id=f"org_{name}",
        name=name,
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr("ck_live_secret")),
        profile=OrganizationProfile(country="US", currency="USD"),
        created_at=T0,
    )


def account(
    org_id: str, n: int, *, status: BankAccountStatus = BankAccountStatus.ACTIVE
) -> BankAccount:
    at = T0 + timedelta(minutes=n // 2)  # pairs share a timestamp: the id breaks the tie
    return BankAccount(
        id=f"ba_{org_id}_{n:03d}",
        organization_id=org_id,
        provider=Provider.COMMET,
        provider_account_id=f"pba_{n}",
        holder_name="Ada",
        holder_type=None,
        bank_name=None,
        last4=f"{n:04d}",
        country="US",
        currency="USD",
        account_type=None,
        is_default=False,
        status=status,
        provider_status=status.value.lower(),
        livemode=False,
        metadata={"n": str(n)},
        created_at=at,
        updated_at=at,
        status_changed_at=at,
    )


async def seed(store: Store, *names: str) -> None:
    async with store.session() as session:
        for name in names:
            await session.add_organization(org(name))


async def test_reads_are_scoped_to_the_organization(store: Store) -> None:
    await seed(store, "a", "b")
    async with store.session() as session:
        await session.add_bank_account(account("org_a", 1))
        await session.add_bank_account(account("org_b", 2))
    async with store.session() as session:
        found = await session.bank_accounts_by_ids(
            "org_a", ["ba_org_a_001", "ba_org_b_002", "nope"]
        )
    assert list(found) == ["ba_org_a_001"]
    assert found["ba_org_a_001"].metadata == {"n": "1"}
    assert found["ba_org_a_001"].created_at.tzinfo is not None


async def test_an_account_is_found_by_its_provider_id_within_its_organization(
    store: Store,
) -> None:
    await seed(store, "a", "b")
    async with store.session() as session:
        await session.add_bank_account(account("org_a", 1))
        await session.add_bank_account(account("org_b", 2))
    async with store.session(write=False) as session:
        found = await session.bank_account_by_provider_id("org_a", "pba_1")
        foreign = await session.bank_account_by_provider_id("org_a", "pba_2")
    assert found is not None and found.id == "ba_org_a_001"
    assert foreign is None


async def test_batched_read_is_one_statement(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        for n in range(30):
            await session.add_bank_account(account("org_a", n))
    before = store.statements
    async with store.session() as session:
        found = await session.bank_accounts_by_ids(
            "org_a", [f"ba_org_a_{n:03d}" for n in range(30)]
        )
    assert len(found) == 30
    # BEGIN/COMMIT are not cursor executions; exactly one SELECT went out.
    assert store.statements - before == 1


async def test_keyset_pages_walk_every_account_once_newest_first(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        for n in range(25):
            await session.add_bank_account(account("org_a", n))
    seen: list[str] = []
    after = None
    while True:
        async with store.session() as session:
            items, has_next = await session.page_bank_accounts("org_a", first=7, after=after)
        seen.extend(a.id for a in items)
        if not has_next:
            break
        after = (items[-1].created_at, items[-1].id)
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)


async def test_status_filter_and_count(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(account("org_a", 1))
        await session.add_bank_account(account("org_a", 2, status=BankAccountStatus.ERRORED))
    async with store.session() as session:
        items, _ = await session.page_bank_accounts(
            "org_a", first=10, status=BankAccountStatus.ERRORED
        )
        assert [a.id for a in items] == ["ba_org_a_002"]
        everything, _ = await session.page_bank_accounts("org_a", first=10)
        assert len(everything) == 2


async def test_clearing_defaults_touches_only_that_organization(store: Store) -> None:
    await seed(store, "a", "b")
    async with store.session() as session:
        await session.add_bank_account(account("org_a", 1).model_copy(update={"is_default": True}))
        await session.add_bank_account(account("org_b", 2).model_copy(update={"is_default": True}))
        await session.add_bank_account(account("org_a", 3).model_copy(update={"is_default": True}))
        later = T0 + timedelta(days=1)
        await session.clear_default_bank_accounts("org_a", except_id="ba_org_a_003", at=later)
    async with store.session() as session:
        a = await session.bank_accounts_by_ids("org_a", ["ba_org_a_001", "ba_org_a_003"])
        b = await session.bank_accounts_by_ids("org_b", ["ba_org_b_002"])
    assert not a["ba_org_a_001"].is_default and a["ba_org_a_003"].is_default
    assert b["ba_org_b_002"].is_default
    # A client polling updatedAt sees the account that stopped being the default change.
    assert a["ba_org_a_001"].updated_at == later
    assert a["ba_org_a_003"].updated_at != later and b["ba_org_b_002"].updated_at != later


async def test_api_keys_resolve_until_revoked(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        key = await session.add_api_key(
            key_id="key_1",
            organization_id="org_a",
            key_hash="h" * 64,
            prefix="pgw_abc",
            label=None,
            created_at=T0,
        )
    async with store.session() as session:
        found = await session.organization_for_key_hash("h" * 64)
        assert (
            found is not None and found.credentials.api_key.get_secret_value() == "ck_live_secret"
        )
        assert await session.revoke_api_key(key.id, T0)
        assert not await session.revoke_api_key(key.id, T0)
    async with store.session() as session:
        assert await session.organization_for_key_hash("h" * 64) is None


async def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    await seed(store, "a")
    with pytest.raises(RuntimeError):
        async with store.session() as session:
            await session.add_bank_account(account("org_a", 1))
            raise RuntimeError("boom")
    async with store.session() as session:
        assert not await session.has_bank_accounts("org_a")


def idem(record_id: str, *, key: str = "k", attempts: int = 1) -> IdempotencyRecord:
    return IdempotencyRecord(
        id=record_id,
        organization_id="org_a",
        key=key,
        operation="addBankAccount",
        fingerprint="f" * 64,
        state="started",
        attempts=attempts,
        result=None,
        locked_until=T0 + timedelta(seconds=60),
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
    )


async def test_an_idempotency_key_is_claimed_once_and_taken_over_once(store: Store) -> None:
    await seed(store, "a", "b")
    async with store.session() as session:
        assert await session.claim_idempotency_key(idem("i1"))
        assert not await session.claim_idempotency_key(idem("i2"))  # same org, same key
    async with store.session() as session:
        other_org = idem("i3").model_copy(update={"organization_id": "org_b"})
        assert await session.claim_idempotency_key(other_org)  # keys are per organization
    async with store.session() as session:
        held = await session.get_idempotency_record("org_a", "k", lock=True)
        assert held is not None
        assert held.attempts == 1
        later = T0 + timedelta(minutes=5)
        assert await session.take_over_idempotency_key(
            "i1", expected_attempts=1, locked_until=later
        )
        # A second contender that read the same attempt count loses the compare-and-set.
        assert not await session.take_over_idempotency_key(
            "i1", expected_attempts=1, locked_until=later
        )
        await session.finish_idempotency_key(
            "i1", result={"id": "ba_1"}, expires_at=T0 + timedelta(hours=24)
        )
    async with store.session() as session:
        done = await session.get_idempotency_record("org_a", "k")
        assert done is not None
        assert (done.state, done.result, done.attempts) == ("completed", {"id": "ba_1"}, 2)
        assert await session.purge_expired_idempotency_keys(T0 + timedelta(hours=25)) == 2


def day_long_keys(store: Store) -> IdempotencyKeys:
    """Keys kept 24 hours with a 60 s lease, as by default."""
    return IdempotencyKeys(
        store, pepper=SecretStr("p"), retention=timedelta(hours=24), lease=timedelta(seconds=60)
    )


async def org_a_keys(store: Store) -> IdempotencyKeys:
    """The keys of a store seeded with organization ``org_a``, whose key ``k`` is ``BEGIN``."""
    await seed(store, "a")
    return day_long_keys(store)


BEGIN = {"organization_id": "org_a", "key": "k", "operation": "op", "fingerprint": "f"}


async def test_a_key_past_its_retention_is_a_new_key_before_the_purge_ran(store: Store) -> None:
    keys = await org_a_keys(store)
    first = await keys.begin(**BEGIN, record_id="i1", now=T0)
    assert isinstance(first, Hold)
    await keys.finish(first, {"id": "ba_1"}, T0)
    later = T0 + timedelta(hours=25)  # the purge, every 10 minutes, has not deleted it yet
    # A new request, not "retry: the key was just released" again and again until the purge.
    assert await keys.begin(**BEGIN, record_id="i2", now=later) == Hold("i2", recovering=False)
    await keys.finish(Hold("i2", recovering=False), {"id": "ba_2"}, later)
    assert await keys.begin(**BEGIN, record_id="i3", now=later) == Replay({"id": "ba_2"})


async def test_a_holder_whose_key_was_taken_over_can_no_longer_finish_or_release_it(
    store: Store,
) -> None:
    keys = await org_a_keys(store)
    late = await keys.begin(**BEGIN, record_id="i1", now=T0)
    lapsed = T0 + timedelta(seconds=61)
    successor = await keys.begin(**BEGIN, record_id="i2", now=lapsed)
    assert successor == Hold("i1", recovering=True, attempts=2)
    assert isinstance(late, Hold)
    with pytest.raises(IdempotencyInProgressError):
        await keys.finish(late, {"id": "ba_late"}, lapsed)
    await keys.release(late, lapsed)  # no longer its key: the successor keeps holding it
    with pytest.raises(IdempotencyInProgressError):
        await keys.begin(**BEGIN, record_id="i3", now=lapsed)
    await keys.finish(successor, {"id": "ba_1"}, lapsed)
    assert await keys.begin(**BEGIN, record_id="i4", now=lapsed) == Replay({"id": "ba_1"})


async def test_a_key_released_with_nothing_applied_is_taken_over_without_recovering(
    store: Store,
) -> None:
    keys = await org_a_keys(store)
    first = await keys.begin(**BEGIN, record_id="i1", now=T0)
    assert isinstance(first, Hold)
    await keys.release(first, T0, not_applied=True)  # refused unsent: nothing to reconcile
    second = await keys.begin(**BEGIN, record_id="i2", now=T0)
    assert second == Hold("i1", recovering=False, attempts=2)
    await keys.release(second, T0)  # its outcome unknown: the next one must reconcile
    assert await keys.begin(**BEGIN, record_id="i3", now=T0) == Hold(
        "i1", recovering=True, attempts=3
    )


async def test_a_webhook_event_is_recorded_once_for_good(store: Store) -> None:
    async with store.session() as session:
        first = await session.record_webhook_event(
            provider=Provider.COMMET,
            event_id="whev_1",
            event_type="payout.paid",
            organization_id=None,
            outcome="received",
            at=T0,
        )
        again = await session.record_webhook_event(
            provider=Provider.COMMET,
            event_id="whev_1",
            event_type="payout.paid",
            organization_id=None,
            outcome="received",
            at=T0 + timedelta(days=3),
        )
        other_provider = await session.record_webhook_event(
            provider=Provider.PAYGENTIC,
            event_id="whev_1",
            event_type="x",
            organization_id=None,
            outcome="ignored",
            at=T0,
        )
    assert (first, again, other_provider) == (True, False, True)


async def test_the_purge_loop_deletes_expired_keys_and_keeps_live_ones(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.claim_idempotency_key(idem("old", key="old"))
        live = idem("new", key="new").model_copy(update={"expires_at": T0 + timedelta(days=30)})
        await session.claim_idempotency_key(live)
    keys = day_long_keys(store)
    purger = asyncio.create_task(
        purge_expired_forever(keys, interval=0.01, clock=lambda: T0 + timedelta(days=2))
    )
    try:
        for _ in range(500):
            async with store.session(write=False) as session:
                if await session.get_idempotency_record("org_a", "old") is None:
                    break
            await asyncio.sleep(0.01)
    finally:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
    async with store.session(write=False) as session:
        assert await session.get_idempotency_record("org_a", "old") is None
        assert await session.get_idempotency_record("org_a", "new") is not None


async def test_an_organizations_lease_has_one_holder_until_given_back_or_lapsed(
    store: Store,
) -> None:
    await seed(store, "a", "b")
    minute = timedelta(minutes=1)

    async def take(organization: str, holder: str, now: datetime) -> bool:
        async with store.session() as session:
            return await session.take_lease(organization, "p", holder, now=now, until=now + minute)

    async def give_back(holder: str) -> None:
        async with store.session() as session:
            await session.give_back_lease("org_a", "p", holder)

    assert await take("org_a", "first", T0)
    assert not await take("org_a", "second", T0 + minute / 2)
    assert await take("org_b", "other", T0)  # per organization
    async with store.session() as session:  # and per purpose
        assert await session.take_lease("org_a", "q", "x", now=T0, until=T0 + minute)
    await give_back("second")  # not its lease: nothing happens
    assert not await take("org_a", "second", T0 + minute / 2)
    await give_back("first")
    assert await take("org_a", "second", T0 + minute / 2)
    # Its holder never gave it back: once lapsed, the next caller takes it over, and the old
    # holder's late give-back leaves the new holder's lease alone.
    assert await take("org_a", "third", T0 + 2 * minute)
    await give_back("second")
    assert not await take("org_a", "fourth", T0 + 2 * minute)
