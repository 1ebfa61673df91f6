"""The store's Core writes on SQLite and PostgreSQL: every column, errors, one statement each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.events import ChangeSource, ObjectType
from payout_gateway.domain.models import (
    BankAccount,
    IdempotencyRecord,
    Money,
    Organization,
    OrganizationProfile,
    Payout,
    PayoutAccountRecord,
    ProviderCredentials,
)
from payout_gateway.store import Store, database
from payout_gateway.store.tables import BankAccountRow, StatusChangeRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Not UTC: the UTC conversion of the column type must apply to Core binds too.
CEST = timezone(timedelta(hours=2))


async def seed(store: Store, *names: str) -> None:
    async with store.session() as session:
        for name in names:
            await session.add_organization(
                Organization(
                    id=f"org_{name}",
                    name=name,
                    provider=Provider.PAYGENTIC,
                    credentials=ProviderCredentials(api_key=SecretStr("pk_secret")),
                    profile=OrganizationProfile(country="US", currency="USD"),
                    created_at=T0,
                )
            )


def bank_account(account_id: str = "ba_1", organization_id: str = "org_a") -> BankAccount:
    return BankAccount(
        id=account_id,
        organization_id=organization_id,
        provider=Provider.PAYGENTIC,
        provider_account_id="ext_1",
        holder_name="Ada Lovelace",
        holder_type=HolderType.COMPANY,
        bank_name="First Bank",
        last4="6789",
        country="US",
        currency="USD",
        account_type=AccountType.SAVINGS,
        is_default=True,
        status=BankAccountStatus.ACTIVE,
        provider_status="verified",
        livemode=True,
        metadata={"ref": "r-1", "note": "ünïcode"},
        created_at=datetime(2026, 1, 2, 10, 0, tzinfo=CEST),
        updated_at=datetime(2026, 1, 2, 11, 0, tzinfo=CEST),
        status_changed_at=datetime(2026, 1, 2, 12, 0, tzinfo=CEST),
    )


def payout(payout_id: str = "po_1") -> Payout:
    return Payout(
        id=payout_id,
        organization_id="org_a",
        provider=Provider.PAYGENTIC,
        provider_payout_id="ext_po_1",
        status=PayoutStatus.IN_TRANSIT,
        provider_status="in_transit",
        amount=Money(amount_minor=123_456_789_012, currency="EUR"),
        fee=Money(amount_minor=250, currency="EUR"),
        net_amount=Money(amount_minor=123_456_788_762, currency="EUR"),
        description="March",
        destination_provider_account_id=None,
        destination_bank_account_id="ba_1",
        livemode=False,
        created_at=datetime(2026, 3, 1, tzinfo=CEST),
        updated_at=datetime(2026, 3, 2, tzinfo=CEST),
        status_changed_at=datetime(2026, 3, 3, tzinfo=CEST),
    )


def payout_account(record_id: str = "pa_1") -> PayoutAccountRecord:
    return PayoutAccountRecord(
        id=record_id,
        organization_id="org_a",
        provider=Provider.PAYGENTIC,
        provider_account_id="ext_pa_1",
        status=PayoutAccountStatus.PENDING_VERIFICATION,
        provider_status="pending",
        transfers_enabled=False,
        business_type=BusinessType.INDIVIDUAL,
        country="US",
        livemode=True,
        created_at=T0,
        updated_at=T0,
        status_changed_at=T0,
    )


def idempotency_record() -> IdempotencyRecord:
    return IdempotencyRecord(
        id="i_1",
        organization_id="org_a",
        key="k",
        operation="addBankAccount",
        fingerprint="f" * 64,
        state="started",
        attempts=1,
        result=None,
        locked_until=T0 + timedelta(minutes=1),
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
    )


async def test_a_bank_account_is_stored_with_every_field(store: Store) -> None:
    await seed(store, "a")
    written = bank_account()
    bare = bank_account("ba_2").model_copy(
        update={
            "provider_account_id": None,
            "holder_type": None,
            "bank_name": None,
            "account_type": None,
            "is_default": False,
            "metadata": {},
        }
    )
    async with store.session() as session:
        await session.add_bank_account(written)
        await session.add_bank_account(bare)
    async with store.session(write=False) as session:
        found = await session.bank_accounts_by_ids("org_a", ["ba_1", "ba_2"])
    assert found["ba_1"].model_dump() == written.model_dump()
    assert found["ba_2"].model_dump() == bare.model_dump()
    assert found["ba_1"].created_at.tzinfo == UTC


async def test_a_row_that_no_longer_validates_reads_back_as_stored(store: Store) -> None:
    """Reads validate a row (the fast way to build it); one that does not validate (here a
    metadata value that is not a string, as an older writer or a hand edit could leave it) is
    taken as it is."""
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(bank_account())
        await session.add_bank_account(bank_account("ba_2"))
    stored_metadata = {"note": "kept", "count": 3}
    async with store.engine.begin() as connection:
        await connection.execute(
            update(BankAccountRow)
            .where(BankAccountRow.id == "ba_2")
            .values(metadata_=stored_metadata)
        )
    async with store.session(write=False) as session:
        found = await session.bank_accounts_by_ids("org_a", ["ba_1", "ba_2"])
        page, _ = await session.page_bank_accounts("org_a", first=10)
    assert found["ba_1"].model_dump() == bank_account().model_dump()
    assert found["ba_2"].metadata == stored_metadata
    assert found["ba_2"].model_dump(exclude={"metadata"}) == bank_account("ba_2").model_dump(
        exclude={"metadata"}
    )
    assert {account.id for account in page} == {"ba_1", "ba_2"}


async def test_valid_rows_are_built_by_validation_not_as_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slower field-by-field build is for rows that do not validate only: a row the store
    wrote itself takes the validating path (a column the model lacks would send every row
    the slow way without changing any answer)."""
    as_stored: list[str] = []
    build = database._bank_account_as_stored

    def counted(row: Any) -> BankAccount:
        as_stored.append(row.id)
        return build(row)

    monkeypatch.setattr(database, "_bank_account_as_stored", counted)
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(bank_account())
    async with store.session(write=False) as session:
        page, _ = await session.page_bank_accounts("org_a", first=10)
    assert [account.model_dump() for account in page] == [bank_account().model_dump()]
    assert as_stored == []


async def test_a_duplicate_bank_account_fails_and_rolls_back_the_transaction(store: Store) -> None:
    await seed(store, "a")
    with pytest.raises(IntegrityError):
        async with store.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
            await session.add_bank_account(bank_account("ba_1"))
    async with store.session(write=False) as session:
        assert not await session.has_bank_accounts("org_a")


async def test_has_bank_accounts_is_scoped_to_the_organization(store: Store) -> None:
    await seed(store, "a", "b")
    async with store.session() as session:
        assert not await session.has_bank_accounts("org_a")
        await session.add_bank_account(bank_account("ba_1", "org_a"))
        assert await session.has_bank_accounts("org_a")  # sees its own transaction's insert
        assert not await session.has_bank_accounts("org_b")
    before = store.statements
    async with store.session(write=False) as session:
        assert await session.has_bank_accounts("org_a")
    assert store.statements - before == 1


async def test_audit_rows_get_increasing_ids_and_read_back_newest_first(store: Store) -> None:
    await seed(store, "a")
    before = store.statements
    async with store.session() as session:
        for to_status in ("PENDING", "IN_TRANSIT"):
            await session.record_status_change(
                organization_id="org_a",
                object_type=ObjectType.PAYOUT.value,
                object_id="po_1",
                from_status=None if to_status == "PENDING" else "PENDING",
                to_status=to_status,
                provider_status=to_status.lower(),
                source=ChangeSource.WEBHOOK.value,
                at=datetime(2026, 1, 1, 3, 0, tzinfo=CEST),  # the same moment: the id decides
            )
    assert store.statements - before == 2  # one INSERT each
    async with store.session(write=False) as session:
        changes = await session.status_changes("org_a", first=10, object_id="po_1")
    async with store.engine.connect() as connection:
        ids = dict(
            (await connection.execute(select(StatusChangeRow.to_status, StatusChangeRow.id))).all()
        )
    assert [(c.from_status, c.to_status) for c in changes] == [
        ("PENDING", "IN_TRANSIT"),
        (None, "PENDING"),
    ]
    assert changes[0].source is ChangeSource.WEBHOOK and changes[0].object_type is ObjectType.PAYOUT
    assert changes[0].at == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert ids["PENDING"] < ids["IN_TRANSIT"]


async def test_a_payout_is_stored_with_every_field(store: Store) -> None:
    await seed(store, "a")
    written = payout()
    bare = payout("po_2").model_copy(
        update={
            "fee": None,
            "net_amount": None,
            "description": None,
            "destination_bank_account_id": None,
        }
    )
    async with store.session() as session:
        await session.add_payout(written)
        await session.add_payout(bare)
    async with store.session(write=False) as session:
        found = await session.payouts_by_ids("org_a", ["po_1", "po_2"])
    assert found["po_1"].model_dump() == written.model_dump()
    assert found["po_2"].model_dump() == bare.model_dump()
    with pytest.raises(IntegrityError):
        async with store.session() as session:
            await session.add_payout(written)


async def test_a_payout_account_is_inserted_then_overwritten_in_one_statement_each(
    store: Store,
) -> None:
    await seed(store, "a")
    first = payout_account()
    before = store.statements
    async with store.session() as session:
        await session.save_payout_account(first)
    assert store.statements - before == 1
    later = T0 + timedelta(hours=1)
    second = first.model_copy(
        update={
            "status": PayoutAccountStatus.VERIFIED,
            "provider_status": "verified",
            "transfers_enabled": True,
            "business_type": None,
            "country": None,
            "updated_at": later,
            "status_changed_at": later,
        }
    )
    before = store.statements
    async with store.session() as session:
        await session.save_payout_account(second)
    assert store.statements - before == 1
    async with store.session(write=False) as session:
        found = await session.get_payout_account("org_a")
    assert found is not None and found.model_dump() == second.model_dump()


async def test_a_second_payout_account_of_an_organization_is_refused(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.save_payout_account(payout_account("pa_1"))
    with pytest.raises(IntegrityError):
        async with store.session() as session:
            await session.save_payout_account(payout_account("pa_2"))
    async with store.session(write=False) as session:
        found = await session.get_payout_account("org_a")
    assert found is not None and found.id == "pa_1"


async def test_reads_after_core_writes_in_one_transaction_see_the_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Core writes skip the ORM identity map: an object read before them is read afresh, even
    when its row is still in the session's identity map."""
    # The store drops its ORM rows at once, so the (weak) identity map forgets them; keep them
    # alive here so a stale row would be served if the reads trusted the identity map. (Bank
    # accounts are read as Core rows, which no identity map keeps: their reads below must see
    # the writes all the same.)
    kept: list[Any] = []
    for name in ("_payout_account", "_payout", "_idempotency"):
        mapper = getattr(database, name)

        def keeping(row: Any, mapper: Callable[[Any], Any] = mapper) -> Any:
            kept.append(row)
            return mapper(row)

        monkeypatch.setattr(database, name, keeping)
    await seed(store, "a")
    async with store.session() as session:
        await session.save_payout_account(payout_account())
        await session.add_bank_account(bank_account())
        await session.add_payout(payout())
        await session.claim_idempotency_key(idempotency_record())
    later = T0 + timedelta(hours=2)
    async with store.session() as session:
        # Loaded into this session first, as the service does before a status move.
        assert await session.get_payout_account("org_a") is not None
        assert await session.bank_accounts_by_ids("org_a", ["ba_1"])
        assert (await session.page_bank_accounts("org_a", first=5))[0]
        assert await session.payouts_by_ids("org_a", ["po_1"])
        assert (await session.page_payouts("org_a", first=5))[0]
        assert await session.get_idempotency_record("org_a", "k", lock=True) is not None

        await session.set_status(
            ObjectType.PAYOUT_ACCOUNT,
            "pa_1",
            status="VERIFIED",
            provider_status="verified",
            at=later,
            transfers_enabled=True,
        )
        await session.set_status(
            ObjectType.BANK_ACCOUNT, "ba_1", status="ERRORED", provider_status="failed", at=later
        )
        await session.clear_default_bank_accounts("org_a", except_id="ba_other", at=later)
        await session.set_status(
            ObjectType.PAYOUT, "po_1", status="PAID", provider_status="paid", at=later
        )
        await session.finish_idempotency_key("i_1", result={"id": "ba_1"}, expires_at=later)

        account_record = await session.get_payout_account("org_a")
        assert account_record is not None
        assert (account_record.status, account_record.transfers_enabled) == ("VERIFIED", True)
        assert account_record.status_changed_at == later
        by_id = (await session.bank_accounts_by_ids("org_a", ["ba_1"]))["ba_1"]
        paged = (await session.page_bank_accounts("org_a", first=5))[0][0]
        for account in (by_id, paged):
            assert (account.status, account.is_default, account.updated_at) == (
                BankAccountStatus.ERRORED,
                False,
                later,
            )
        assert (await session.payouts_by_ids("org_a", ["po_1"]))["po_1"].status == "PAID"
        assert (await session.page_payouts("org_a", first=5))[0][0].status == "PAID"
        held = await session.get_idempotency_record("org_a", "k")
        assert held is not None and (held.state, held.result) == ("completed", {"id": "ba_1"})
    assert len({id(row) for row in kept}) == 3  # each read met the row it had loaded


async def test_status_moves_lock_and_list_by_provider_id(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.add_payout(payout())
        found = await session.lock_status(ObjectType.PAYOUT, "org_a", provider_object_id="ext_po_1")
        assert found == ("po_1", "IN_TRANSIT")
        assert await session.lock_status(ObjectType.PAYOUT, "org_b", object_id="po_1") is None
        pending = await session.non_final_objects(
            ObjectType.PAYOUT, Provider.PAYGENTIC, ["IN_TRANSIT"], limit=10
        )
        assert pending == [("org_a", "po_1", "ext_po_1", payout().status_changed_at)]
        assert not await session.non_final_objects(
            ObjectType.PAYOUT, Provider.COMMET, ["IN_TRANSIT"], limit=10
        )


async def test_a_released_key_can_be_taken_over(store: Store) -> None:
    await seed(store, "a")
    async with store.session() as session:
        assert await session.claim_idempotency_key(idempotency_record())
    async with store.session() as session:
        await session.release_idempotency_key("i_1", at=T0)
    async with store.session(write=False) as session:
        held = await session.get_idempotency_record("org_a", "k")
    assert held is not None and held.locked_until == T0 and held.state == "started"


async def test_json_columns_keep_what_they_were_given(store: Store) -> None:
    # Written by orjson, with the standard library for what orjson refuses (an integer beyond
    # 64 bits), and read back by orjson, on both backends.
    result = {"id": "ba_1", "note": "ünïcode ✓", "nested": {"list": [1, 2.5, None, True]}}
    huge = {"amount": 2**70}
    await seed(store, "a")
    for stored in (result, huge):
        async with store.session() as session:
            assert await session.claim_idempotency_key(idempotency_record())
            await session.finish_idempotency_key("i_1", result=stored, expires_at=T0)
        async with store.session(write=False) as session:
            held = await session.get_idempotency_record("org_a", "k")
        assert held is not None and held.result == stored
        async with store.session() as session:
            await session.delete_idempotency_key("i_1")


async def test_a_webhook_outcome_is_updated_for_its_provider_only(store: Store) -> None:
    async with store.session() as session:
        for provider in (Provider.COMMET, Provider.PAYGENTIC):
            assert await session.record_webhook_event(
                provider=provider,
                event_id="ev_1",
                event_type="payout.paid",
                organization_id="org_a",
                outcome="received",
                at=T0,
            )
        await session.set_webhook_outcome(Provider.COMMET, "ev_1", "applied")
    async with store.engine.connect() as connection:
        rows = (
            await connection.exec_driver_sql(
                "SELECT provider, outcome, organization_id FROM webhook_events ORDER BY provider"
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        ("COMMET", "applied", "org_a"),
        ("PAYGENTIC", "received", "org_a"),
    ]
