"""The PayoutProvider protocol: what every provider adapter offers the service layer."""

from __future__ import annotations

from typing import Protocol

from payout_gateway.domain.enums import BusinessType, Provider
from payout_gateway.domain.models import (
    AddBankAccountRequest,
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


class PayoutProvider(Protocol):
    """One provider, spoken to over its own API. Methods raise only domain errors.

    ``idempotency_key`` is the caller's key scoped by the gateway: adapters forward it where the
    provider honours one (Commet) and use it to reconcile where it does not (Paygentic).
    """

    @property
    def provider(self) -> Provider: ...

    @property
    def capabilities(self) -> ProviderCapabilities: ...

    async def add_bank_account(
        self,
        context: ProviderContext,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> ProviderBankAccount: ...

    async def complete_payout_verification(
        self,
        context: ProviderContext,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> PayoutVerificationOutcome: ...

    async def get_bank_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> ProviderBankAccount:
        """Raises UnsupportedOperationError where the provider has no read endpoint."""
        ...

    async def list_bank_accounts(
        self, context: ProviderContext, *, limit: int = 100, offset: int = 0
    ) -> ProviderBankAccountPage:
        """Raises UnsupportedOperationError where the provider has no list endpoint."""
        ...

    async def find_bank_account_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderBankAccount | None:
        """Recover an account created with ``idempotency_key=reference`` whose answer was lost.

        For providers without idempotency (``capabilities.has_idempotency`` false) this is how a
        retry reconciles instead of creating a duplicate. Providers that dedupe by key return
        None: resending with the same key is the safe way there.
        """
        ...

    async def get_payout_account(
        self,
        context: ProviderContext,
        provider_account_id: str,
        *,
        business_type: BusinessType | None = None,
    ) -> PayoutAccount:
        """Re-read the payout account; UnsupportedOperationError where it cannot be read."""
        ...

    async def get_payout(self, context: ProviderContext, provider_payout_id: str) -> ProviderPayout:
        """Re-read one payout; UnsupportedOperationError where it cannot be read."""
        ...

    async def find_payout_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderPayout | None:
        """Like ``find_bank_account_by_reference``, for payouts."""
        ...

    async def request_payout(
        self,
        context: ProviderContext,
        request: PayoutRequest,
        *,
        destination_provider_account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProviderPayout: ...

    async def aclose(self) -> None: ...
