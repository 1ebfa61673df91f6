"""Use cases: route an organization to its provider, keep the gateway's record, report results."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from payout_gateway.domain.enums import BankAccountStatus, Provider
from payout_gateway.domain.events import ChangeSource, ObjectType
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    BankAccount,
    Organization,
    PayoutAccountRecord,
    PayoutVerificationRequest,
    ProviderBankAccount,
    ProviderCapabilities,
)
from payout_gateway.events.broker import InProcessBroker
from payout_gateway.events.pipeline import StatusPipeline, StatusUpdate
from payout_gateway.ports import PayoutProvider
from payout_gateway.store import Store, StoreSession

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Gateway ids: a type prefix and 128 random bits; never a provider's id."""
    return f"{prefix}_{uuid.uuid4().hex}"


def provider_reference(organization_id: str, operation: str, key: str | None) -> str:
    """The key sent to (or recorded at) the provider for one logical call.

    Derived from the caller's key so that a retried mutation reaches the provider with the same
    key; scoped by organization and operation so that two organizations' keys never collide.
    Without a caller key each call gets a fresh one (still stable across the adapter's own
    retries, and usable to reconcile a lost answer).
    """
    if key is None:
        return f"pgw_{secrets.token_hex(16)}"
    digest = hashlib.sha256(f"{organization_id}\x00{operation}\x00{key}".encode()).hexdigest()
    return f"pgw_{digest[:32]}"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    payout_account: PayoutAccountRecord
    bank_account: BankAccount | None
    already_existed: bool


@dataclass(frozen=True, slots=True)
class BankAccountPage:
    items: list[BankAccount]
    has_next: bool


class PayoutService:
    """The gateway's use cases. Every method acts for the organization it is given, which the
    caller's credential decided; nothing here takes an organization from input."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[Provider, PayoutProvider],
        *,
        pipeline: StatusPipeline | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._providers = dict(providers)
        self._pipeline = pipeline or StatusPipeline(store, InProcessBroker())
        self._clock = clock

    def provider_for(self, org: Organization) -> PayoutProvider:
        return self._providers[org.provider]

    def capabilities(self, org: Organization) -> ProviderCapabilities:
        return self.provider_for(org).capabilities

    # mutations ----------------------------------------------------------------------------

    async def add_bank_account(
        self,
        org: Organization,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> BankAccount:
        adapter = self.provider_for(org)
        created = await adapter.add_bank_account(
            org.provider_context(),
            request,
            idempotency_key=provider_reference(org.id, "addBankAccount", idempotency_key),
        )
        async with self._store.session() as session:
            if adapter.capabilities.has_default_accounts:
                is_default = created.is_default
            else:
                # The gateway keeps defaults where the provider has none: asked for, or first.
                is_default = request.set_default or (await session.count_bank_accounts(org.id) == 0)
            return await self._record_bank_account(
                session, org, created, is_default=is_default, metadata=request.metadata
            )

    async def complete_payout_verification(
        self,
        org: Organization,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> VerificationResult:
        adapter = self.provider_for(org)
        if not adapter.capabilities.takes_kyc:
            # Providers without a KYC API cannot dedupe per organization; the gateway does.
            async with self._store.session() as session:
                existing = await session.get_payout_account(org.id)
            if existing is not None:
                return VerificationResult(existing, None, already_existed=True)
        outcome = await adapter.complete_payout_verification(
            org.provider_context(),
            request,
            idempotency_key=provider_reference(
                org.id, "completePayoutVerification", idempotency_key
            ),
        )
        now = self._clock()
        change = None
        async with self._store.session() as session:
            existing = await session.get_payout_account(org.id)
            reported = outcome.payout_account
            if existing is None:
                record = PayoutAccountRecord(
                    **reported.model_dump(),
                    id=new_id("pa"),
                    organization_id=org.id,
                    created_at=now,
                    updated_at=now,
                    status_changed_at=now,
                )
                await session.save_payout_account(record)
                await self._audit(session, org, "payout_account", record.id, None, record, now)
            else:
                # The provider's answer is one more status report: forward moves only.
                change = await self._pipeline.apply_in(
                    session,
                    StatusUpdate(
                        organization_id=org.id,
                        object_type=ObjectType.PAYOUT_ACCOUNT,
                        object_id=existing.id,
                        status=reported.status,
                        provider_status=reported.provider_status,
                        source=ChangeSource.PROVIDER_RESPONSE,
                        at=now,
                    ),
                )
                record = await session.get_payout_account(org.id) or existing
            bank_account = None
            if outcome.bank_account is not None and not outcome.already_existed:
                # The verification's destination becomes the organization's default account.
                bank_account = await self._record_bank_account(
                    session, org, outcome.bank_account, is_default=True, metadata={}
                )
        if change is not None:
            await self._pipeline.publish(change)
        return VerificationResult(
            record, bank_account, already_existed=outcome.already_existed or existing is not None
        )

    # reads --------------------------------------------------------------------------------

    async def bank_accounts_by_ids(
        self, org: Organization, ids: Sequence[str]
    ) -> list[BankAccount | None]:
        """One store read for any number of ids, in order; foreign ids read as missing."""
        async with self._store.session() as session:
            found = await session.bank_accounts_by_ids(org.id, ids)
        return [found.get(account_id) for account_id in ids]

    async def page_bank_accounts(
        self,
        org: Organization,
        *,
        first: int,
        after: tuple[datetime, str] | None = None,
        status: BankAccountStatus | None = None,
    ) -> BankAccountPage:
        async with self._store.session() as session:
            items, has_next = await session.page_bank_accounts(
                org.id, first=first, after=after, status=status
            )
        return BankAccountPage(items, has_next)

    async def payout_account(self, org: Organization) -> PayoutAccountRecord | None:
        async with self._store.session() as session:
            return await session.get_payout_account(org.id)

    # helpers ------------------------------------------------------------------------------

    async def _record_bank_account(
        self,
        session: StoreSession,
        org: Organization,
        created: ProviderBankAccount,
        *,
        is_default: bool,
        metadata: Mapping[str, str],
    ) -> BankAccount:
        now = self._clock()
        account = BankAccount(
            **created.model_dump(exclude={"is_default", "metadata", "updated_at"}),
            id=new_id("ba"),
            organization_id=org.id,
            is_default=is_default,
            metadata=dict(metadata),
            updated_at=created.updated_at or now,
            status_changed_at=now,
        )
        await session.add_bank_account(account)
        if is_default:
            await session.clear_default_bank_accounts(org.id, account.id)
        await self._audit(session, org, "bank_account", account.id, None, account, now)
        return account

    async def _audit(
        self,
        session: StoreSession,
        org: Organization,
        object_type: str,
        object_id: str,
        from_status: object,
        current: BankAccount | PayoutAccountRecord,
        at: datetime,
    ) -> None:
        await session.record_status_change(
            organization_id=org.id,
            object_type=object_type,
            object_id=object_id,
            from_status=str(from_status) if from_status is not None else None,
            to_status=current.status.value,
            provider_status=current.provider_status,
            source="provider_response",
            at=at,
        )
