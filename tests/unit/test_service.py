"""Use cases against a fake provider: defaults, verification per org, reads scoped by org."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import BankAccountStatus, PayoutAccountStatus, Provider
from payout_gateway.domain.errors import (
    IdempotencyInProgressError,
    PayoutAccountRequiredError,
    ProviderRejectedError,
    ProviderUnavailableError,
    StoreUnavailableError,
)
from payout_gateway.domain.events import ObjectType
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    OrganizationProfile,
    PayoutRequest,
    PayoutVerificationRequest,
    ProviderCredentials,
    validated,
)
from payout_gateway.service import PayoutService, VerificationResult, provider_reference
from payout_gateway.store import Store, StoreSession
from payout_gateway.tenancy import Tenancy
from tests.support.fakes import FakeProvider
from tests.unit.test_domain_values import KYC


def add_request(
    number: str = "000123456789", *, set_default: bool = False
) -> AddBankAccountRequest:
    return validated(
        AddBankAccountRequest,
        {"bank": {"account_number": number, "holder_name": "Ada"}, "set_default": set_default},
    )


async def make(store: Store, provider: FakeProvider) -> tuple[PayoutService, Tenancy]:
    service = PayoutService(store, {provider.provider: provider})
    return service, Tenancy(store, SecretStr("pepper"))


async def new_org(tenancy: Tenancy, name: str, provider: Provider):  # type: ignore[no-untyped-def]
    return await tenancy.create_organization(
        name=name,
        provider=provider,
        credentials=ProviderCredentials(api_key=SecretStr("secret")),
        profile=OrganizationProfile(country="US", currency="USD"),
    )


async def test_gateway_keeps_defaults_where_the_provider_has_none(store: Store) -> None:
    fake = FakeProvider(Provider.PAYGENTIC, has_defaults=False, takes_kyc=False)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "p", Provider.PAYGENTIC)
    first = await service.add_bank_account(org, add_request())
    second = await service.add_bank_account(org, add_request("111122223333"))
    third = await service.add_bank_account(org, add_request("444455556666", set_default=True))
    accounts = await service.bank_accounts_by_ids(org, [first.id, second.id, third.id])
    assert [a.is_default for a in accounts if a] == [False, False, True]
    assert first.is_default  # the first account was the default when it was created


async def test_provider_defaults_are_taken_as_reported(store: Store) -> None:
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    first = await service.add_bank_account(org, add_request())
    assert not first.is_default
    second = await service.add_bank_account(org, add_request("999988887777", set_default=True))
    assert second.is_default and second.last4 == "7777"


async def test_verification_without_provider_kyc_is_idempotent_per_organization(
    store: Store,
) -> None:
    fake = FakeProvider(Provider.PAYGENTIC, has_defaults=False, takes_kyc=False)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "p", Provider.PAYGENTIC)
    request = validated(PayoutVerificationRequest, KYC)
    first = await service.complete_payout_verification(org, request)
    again = await service.complete_payout_verification(org, request)
    assert not first.already_existed and first.bank_account is not None
    assert first.bank_account.is_default
    assert again.already_existed and again.bank_account is None
    assert again.payout_account.id == first.payout_account.id
    assert fake.calls["complete_payout_verification"] == 1
    assert first.payout_account.status is PayoutAccountStatus.PENDING_VERIFICATION


@pytest.mark.parametrize("provider", [Provider.PAYGENTIC, Provider.COMMET])
async def test_verifications_at_once_create_one_payout_account(
    store: Store, provider: Provider
) -> None:
    # A double submit: both would find no payout account. Without a KYC API both would create
    # a destination at the provider; at Commet both would record the payout account, the
    # second refused by the database as a duplicate.
    kyc_api = provider is Provider.COMMET
    fake = FakeProvider(provider, has_defaults=kyc_api, takes_kyc=kyc_api, delay=0.2)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "o", provider)
    request = validated(PayoutVerificationRequest, KYC)
    outcomes = await asyncio.gather(
        service.complete_payout_verification(org, request, idempotency_key="first"),
        service.complete_payout_verification(org, request, idempotency_key="second"),
        return_exceptions=True,
    )
    [done] = [o for o in outcomes if isinstance(o, VerificationResult)]
    [refused] = [o for o in outcomes if isinstance(o, IdempotencyInProgressError)]
    assert not done.already_existed and done.bank_account is not None
    assert "under way" in refused.message and refused.retryable
    assert fake.calls["complete_payout_verification"] == 1
    # Both retry with their keys: the one that went through replays its answer; the refused
    # one's key was handed back, and it now finds the payout account (Commet is asked again,
    # and answers that it exists).
    retried = [
        await service.complete_payout_verification(org, request, idempotency_key=key)
        for key in ("first", "second")
    ]
    assert sorted(r.already_existed for r in retried) == [False, True]
    assert {r.payout_account.id for r in retried} == {done.payout_account.id}
    assert fake.calls["complete_payout_verification"] == (2 if kyc_api else 1)


async def test_a_failed_verification_lets_the_next_one_in(store: Store) -> None:
    fake = FakeProvider(Provider.PAYGENTIC, has_defaults=False, takes_kyc=False)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "p", Provider.PAYGENTIC)
    request = validated(PayoutVerificationRequest, KYC)
    fake.fail_with = ProviderRejectedError("no", provider=Provider.PAYGENTIC)
    with pytest.raises(ProviderRejectedError):
        await service.complete_payout_verification(org, request)
    fake.fail_with = None
    result = await service.complete_payout_verification(org, request)
    assert not result.already_existed
    assert fake.calls["complete_payout_verification"] == 2


async def test_verification_with_provider_kyc_asks_the_provider_again(store: Store) -> None:
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    request = validated(PayoutVerificationRequest, KYC)
    await service.complete_payout_verification(org, request)
    again = await service.complete_payout_verification(org, request)
    assert again.already_existed and fake.calls["complete_payout_verification"] == 2


async def test_a_provider_refusal_changes_nothing(store: Store) -> None:
    fake = FakeProvider(Provider.COMMET)
    fake.fail_with = ProviderRejectedError(
        "no", provider=Provider.COMMET, provider_code="duplicate"
    )
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    with pytest.raises(ProviderRejectedError):
        await service.add_bank_account(org, add_request())
    assert (await service.page_bank_accounts(org, first=10)).items == []


async def test_reads_never_cross_organizations(store: Store) -> None:
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    a = await new_org(tenancy, "a", Provider.COMMET)
    b = await new_org(tenancy, "b", Provider.COMMET)
    mine = await service.add_bank_account(a, add_request())
    assert await service.bank_accounts_by_ids(b, [mine.id]) == [None]
    assert (await service.page_bank_accounts(b, first=10)).items == []


async def test_accounts_created_in_one_provider_second_page_newest_first(store: Store) -> None:
    # Paygentic's createdAt has whole seconds: several accounts can share one.
    second = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
    fake = FakeProvider(Provider.PAYGENTIC, has_defaults=False, created_at=second)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "p", Provider.PAYGENTIC)
    added = [
        await service.add_bank_account(org, add_request(f"0001234567{n:02d}")) for n in range(8)
    ]
    first = await service.page_bank_accounts(org, first=3)
    # One more while the caller pages: it is newer than the first page, so not on a later one.
    await service.add_bank_account(org, add_request("000123456799"))
    rest = await service.page_bank_accounts(
        org, first=10, after=(first.items[-1].created_at, first.items[-1].id)
    )
    listed = [a.last4 for a in [*first.items, *rest.items]]
    assert listed == [a.last4 for a in reversed(added)]


@pytest.mark.parametrize("provider", [Provider.COMMET, Provider.PAYGENTIC])
async def test_a_payout_goes_to_the_default_account_behind_a_hundred_newer_ones(
    store: Store, provider: Provider
) -> None:
    fake = FakeProvider(provider, has_defaults=provider is Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "o", provider)
    default = await service.add_bank_account(org, add_request(set_default=True))
    for n in range(100):
        await service.add_bank_account(org, add_request(f"0009876543{n:02d}"))
    payout = await service.request_payout(
        org, PayoutRequest(amount=Money(amount_minor=1500, currency="USD"))
    )
    assert payout.destination_bank_account_id == default.id


async def test_a_payout_waits_for_an_unverified_default_rather_than_pay_another_account(
    store: Store,
) -> None:
    # Paygentic: the gateway names the destination, so it must be the default the organization
    # chose, verified; an older verified account is not paid instead.
    fake = FakeProvider(Provider.PAYGENTIC, has_defaults=False, takes_kyc=False)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "p", Provider.PAYGENTIC)
    await service.add_bank_account(org, add_request())
    default = await service.add_bank_account(org, add_request("111122223333", set_default=True))
    async with store.session() as session:
        await session.set_status(
            ObjectType.BANK_ACCOUNT,
            default.id,
            status=BankAccountStatus.PENDING.value,
            provider_status="new",
            at=datetime.now(UTC),
        )
    payout = PayoutRequest(amount=Money(amount_minor=1500, currency="USD"))
    with pytest.raises(PayoutAccountRequiredError) as refused:
        await service.request_payout(org, payout)
    assert "default bank account is PENDING" in refused.value.message
    assert fake.calls["request_payout"] == 0


def test_provider_references_are_stable_per_key_and_scoped() -> None:
    assert provider_reference("org_a", "op", "k") == provider_reference("org_a", "op", "k")
    assert provider_reference("org_a", "op", "k") != provider_reference("org_b", "op", "k")
    assert provider_reference("org_a", "op", "k") != provider_reference("org_a", "other", "k")
    assert provider_reference("org_a", "op", None) != provider_reference("org_a", "op", None)


async def test_api_keys_are_hashed_and_revocable(store: Store) -> None:
    _, tenancy = await make(store, FakeProvider())
    org = await new_org(tenancy, "c", Provider.COMMET)
    record, key = await tenancy.issue_api_key(org.id, label="ci")
    assert key.startswith("pgw_") and record.prefix == key[:12]
    assert (await tenancy.authenticate(key)) == org
    assert await tenancy.authenticate(key + "x") is None
    await tenancy.revoke_api_key(record.id)
    assert await tenancy.authenticate(key) is None


async def test_authentication_is_cached_but_revocation_here_is_immediate(store: Store) -> None:
    _, tenancy = await make(store, FakeProvider())
    org = await new_org(tenancy, "c", Provider.COMMET)
    record, key = await tenancy.issue_api_key(org.id)
    assert await tenancy.authenticate(key) == org
    before = store.statements
    assert await tenancy.authenticate(key) == org
    assert store.statements == before  # served from the cache
    await tenancy.revoke_api_key(record.id)
    assert await tenancy.authenticate(key) is None


def database_fails_once_the_provider_was_called(
    monkeypatch: pytest.MonkeyPatch, store: Store, fake: FakeProvider, operation: str
) -> None:
    """From the moment ``operation`` reached the provider, every store session fails as the
    store reports a database outage."""
    real_session = store.session

    @asynccontextmanager
    async def session(*, write: bool = True) -> AsyncIterator[StoreSession]:
        if fake.calls[operation]:
            raise StoreUnavailableError() from OSError("the database is gone")
        async with real_session(write=write) as opened:
            yield opened

    monkeypatch.setattr(store, "session", session)


@pytest.mark.parametrize("key", [None, "key-1"])
@pytest.mark.parametrize(
    "operation", ["add_bank_account", "complete_payout_verification", "request_payout"]
)
async def test_a_database_failure_after_the_provider_call_leaves_the_outcome_unknown(
    store: Store, monkeypatch: pytest.MonkeyPatch, operation: str, key: str | None
) -> None:
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    database_fails_once_the_provider_was_called(monkeypatch, store, fake, operation)
    with pytest.raises(StoreUnavailableError) as raised:
        if operation == "add_bank_account":
            await service.add_bank_account(org, add_request(), idempotency_key=key)
        elif operation == "request_payout":
            payout = PayoutRequest(amount=Money(amount_minor=1500, currency="USD"))
            await service.request_payout(org, payout, idempotency_key=key)
        else:
            request = validated(PayoutVerificationRequest, KYC)
            await service.complete_payout_verification(org, request, idempotency_key=key)
    # The provider applied it, the gateway could not record it (nor, keyed, release its key):
    # the caller is told to retry with the same key rather than that nothing changed.
    assert raised.value.outcome_unknown
    assert raised.value.retryable
    assert fake.calls[operation] == 1


async def test_a_database_failure_before_the_provider_call_changed_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)

    @asynccontextmanager
    async def session(*, write: bool = True) -> AsyncIterator[StoreSession]:
        raise StoreUnavailableError() from OSError("the database is gone")
        yield  # pragma: no cover

    monkeypatch.setattr(store, "session", session)
    with pytest.raises(StoreUnavailableError) as raised:
        await service.add_bank_account(org, add_request(), idempotency_key="key-1")
    assert not raised.value.outcome_unknown
    assert fake.calls["add_bank_account"] == 0


async def test_a_refusal_is_reported_even_when_its_key_cannot_be_updated(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeProvider(Provider.COMMET)
    fake.fail_with = ProviderRejectedError(
        "no", provider=Provider.COMMET, provider_code="duplicate"
    )
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    database_fails_once_the_provider_was_called(monkeypatch, store, fake, "add_bank_account")
    # The refusal is what the caller must hear, not the failed bookkeeping of its key.
    with pytest.raises(ProviderRejectedError):
        await service.add_bank_account(org, add_request(), idempotency_key="key-1")


async def test_a_retry_after_attempts_that_certainly_applied_nothing_is_not_told_otherwise(
    store: Store,
) -> None:
    """Refused unsent (a rate limit, an open circuit) twice: nothing is unknown either time, so
    the retry is not told an earlier attempt may have been applied (outcomeUnknown: true asks
    a payments caller to treat the money as possibly moved)."""
    fake = FakeProvider(Provider.COMMET)
    service, tenancy = await make(store, fake)
    org = await new_org(tenancy, "c", Provider.COMMET)
    for _ in range(2):
        fake.fail_with = ProviderUnavailableError(
            "slow down", provider=Provider.COMMET, outcome_unknown=False
        )
        with pytest.raises(ProviderUnavailableError) as raised:
            await service.add_bank_account(org, add_request(), idempotency_key="key-1")
        assert raised.value.outcome_unknown is False
        assert "earlier attempt" not in raised.value.message
    fake.fail_with = None
    await service.add_bank_account(org, add_request(), idempotency_key="key-1")
    assert fake.calls["add_bank_account"] == 3
