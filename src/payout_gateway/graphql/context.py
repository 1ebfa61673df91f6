"""The per-request context: the caller's organization, the service, and fresh dataloaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiodataloader import DataLoader
from strawberry.fastapi import BaseContext

from payout_gateway.domain.models import BankAccount, Organization
from payout_gateway.service import PayoutService


class BankAccountLoader(DataLoader[str, BankAccount | None]):
    """Batches every bank-account read of one request into one store query, for one org."""

    def __init__(self, service: PayoutService, organization: Organization) -> None:
        super().__init__()
        self._service = service
        self._organization = organization

    async def batch_load_fn(self, keys: Sequence[str]) -> list[BankAccount | None]:
        return await self._service.bank_accounts_by_ids(self._organization, list(keys))


@dataclass(frozen=True, slots=True)
class PagingLimits:
    default: int
    maximum: int


class GatewayContext(BaseContext):
    """Built for every request by the app; resolvers read everything they need from here."""

    def __init__(
        self,
        *,
        service: PayoutService,
        organization: Organization | None,
        paging: PagingLimits,
    ) -> None:
        super().__init__()
        self.service = service
        self.organization = organization
        self.paging = paging
        self._bank_accounts: BankAccountLoader | None = None

    @property
    def org(self) -> Organization:
        """The authenticated organization; root fields check authentication first."""
        if self.organization is None:
            raise PermissionError("unauthenticated")
        return self.organization

    @property
    def bank_accounts(self) -> BankAccountLoader:
        if self._bank_accounts is None:
            self._bank_accounts = BankAccountLoader(self.service, self.org)
        return self._bank_accounts
