"""A fake PayoutProvider implementing the port, for tests of the layers above the adapters."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from payout_gateway.domain.enums import (
    BankAccountStatus,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import UnsupportedOperationError
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    PayoutAccount,
    PayoutRequest,
    PayoutVerificationOutcome,
    PayoutVerificationRequest,
    ProviderBankAccount,
    ProviderBankAccountPage,
    ProviderCapabilities,
    ProviderContext,
    ProviderPayout,
)


class FakeProvider:
    """Answers like a provider with defaults (Commet-like) or without (Paygentic-like)."""

    def __init__(
        self,
        provider: Provider = Provider.COMMET,
        *,
        has_defaults: bool = True,
        takes_kyc: bool = True,
        delay: float = 0.0,
        created_at: datetime | None = None,
    ) -> None:
        self._provider = provider
        # When set, every object is reported created then, as Paygentic's whole seconds report
        # the objects created within one second.
        self._created_at = created_at
        self._capabilities = ProviderCapabilities(
            takes_kyc=takes_kyc,
            has_default_accounts=has_defaults,
            has_account_types=has_defaults,
            can_read_bank_accounts=not has_defaults,
            has_idempotency=has_defaults,
            account_country_from_input=not has_defaults,
            required_bank_fields=("account_number", "holder_name"),
        )
        self.calls: Counter[str] = Counter()
        self.fail_with: Exception | None = None
        self.delay = delay
        self.verified: set[str] = set()
        self._sequence = 0

    @property
    def provider(self) -> Provider:
        return self._provider

    @property
    def capabilities(self) -> ProviderCapabilities:
        return self._capabilities

    async def _enter(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with

    def _account(
        self, request_bank_last4: str, holder: str, is_default: bool
    ) -> ProviderBankAccount:
        self._sequence += 1
        return ProviderBankAccount(
            provider=self._provider,
            provider_account_id=f"fake_ba_{self._sequence}",
            holder_name=holder,
            holder_type=None,
            bank_name=None,
            last4=request_bank_last4,
            country="US",
            currency="USD",
            account_type=None,
            is_default=is_default,
            status=BankAccountStatus.ACTIVE,
            provider_status="active",
            livemode=False,
            created_at=self._created_at or datetime.now(UTC),
        )

    async def add_bank_account(
        self,
        context: ProviderContext,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> ProviderBankAccount:
        await self._enter("add_bank_account")
        return self._account(
            request.bank.last4,
            request.bank.holder_name,
            request.set_default and self._capabilities.has_default_accounts,
        )

    async def complete_payout_verification(
        self,
        context: ProviderContext,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> PayoutVerificationOutcome:
        await self._enter("complete_payout_verification")
        existed = context.organization_id in self.verified
        self.verified.add(context.organization_id)
        return PayoutVerificationOutcome(
            payout_account=PayoutAccount(
                provider=self._provider,
                provider_account_id=f"acct_{context.organization_id}",
                status=PayoutAccountStatus.PENDING_VERIFICATION,
                provider_status="pending_verification",
                transfers_enabled=False,
                business_type=request.business_type,
                country="US",
                livemode=False,
            ),
            bank_account=None
            if existed
            else self._account(request.bank.last4, request.bank.holder_name, True),
            already_existed=existed,
        )

    async def get_bank_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> ProviderBankAccount:
        raise UnsupportedOperationError(self._provider, "reading bank accounts")

    async def list_bank_accounts(
        self, context: ProviderContext, *, limit: int = 100, offset: int = 0
    ) -> ProviderBankAccountPage:
        raise UnsupportedOperationError(self._provider, "listing bank accounts")

    async def find_bank_account_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderBankAccount | None:
        return None

    async def request_payout(
        self,
        context: ProviderContext,
        request: PayoutRequest,
        *,
        destination_provider_account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProviderPayout:
        await self._enter("request_payout")
        return ProviderPayout(
            provider=self._provider,
            provider_payout_id="po_fake",
            status=PayoutStatus.PENDING,
            provider_status="pending",
            amount=request.amount,
            fee=Money(amount_minor=0, currency=request.amount.currency),
            net_amount=request.amount,
            description=request.description,
            destination_provider_account_id=destination_provider_account_id,
            livemode=False,
            created_at=self._created_at or datetime.now(UTC),
        )

    async def aclose(self) -> None:
        return None


def fake_providers() -> dict[Provider, FakeProvider]:
    """A fake of each provider, as they differ: Commet takes KYC data and has defaults."""
    return {
        Provider.COMMET: FakeProvider(Provider.COMMET),
        Provider.PAYGENTIC: FakeProvider(Provider.PAYGENTIC, has_defaults=False, takes_kyc=False),
    }
