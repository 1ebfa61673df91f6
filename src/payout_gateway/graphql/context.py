"""The per-request context: the caller's organization, the service, and fresh dataloaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiodataloader import DataLoader
from starlette.websockets import WebSocket
from strawberry.fastapi import BaseContext

from payout_gateway.domain.models import BankAccount, Organization, Payout
from payout_gateway.events.broker import EventBroker
from payout_gateway.graphql.execution import ReplayedRoot
from payout_gateway.service import PayoutService


class BankAccountLoader(DataLoader[str, BankAccount | None]):
    """Batches every bank-account read of one request into one store query, for one org."""

    def __init__(
        self, service: PayoutService, organization: Organization, *, cache: bool = True
    ) -> None:
        super().__init__(cache=cache)
        self._service = service
        self._organization = organization

    async def batch_load_fn(self, keys: Sequence[str]) -> list[BankAccount | None]:
        return await self._service.bank_accounts_by_ids(self._organization, list(keys))


class PayoutLoader(DataLoader[str, Payout | None]):
    """Batches every payout read of one request into one store query, for one org."""

    def __init__(
        self, service: PayoutService, organization: Organization, *, cache: bool = True
    ) -> None:
        super().__init__(cache=cache)
        self._service = service
        self._organization = organization

    async def batch_load_fn(self, keys: Sequence[str]) -> list[Payout | None]:
        return await self._service.payouts_by_ids(self._organization, list(keys))


@dataclass(frozen=True, slots=True)
class PagingLimits:
    default: int
    maximum: int


class GatewayContext(BaseContext):
    """Built for every request (for a WebSocket: once per connection) by the app; resolvers
    read everything they need from here. ``broker`` feeds subscriptions (None: none offered)."""

    def __init__(
        self,
        *,
        service: PayoutService,
        organization: Organization | None,
        paging: PagingLimits,
        broker: EventBroker | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.organization = organization
        self.paging = paging
        self.broker = broker
        # A WebSocket connection's credential, asked again while the connection lives (see
        # ``still_authorized``); None for an HTTP request, authenticated as it arrived.
        self.reauthenticate: Callable[[], Awaitable[Organization | None]] | None = None
        # The root field's outcome when the compiled path resolved it and then gave way to
        # graphql-core's execution (graphql/compiled.py): read there instead of resolving again.
        self.replayed_root: ReplayedRoot | None = None
        self._bank_accounts: BankAccountLoader | None = None
        self._payouts: PayoutLoader | None = None

    async def still_authorized(self) -> bool:
        """Whether the connection's credential still names its organization: a key revoked
        while a WebSocket is open stops what the socket receives (within the authentication
        cache's few seconds, as for every request). Raises StoreUnavailableError when the
        database cannot tell."""
        if self.reauthenticate is None:
            return self.organization is not None
        current = await self.reauthenticate()
        return (
            current is not None
            and self.organization is not None
            and current.id == self.organization.id
        )

    @property
    def org(self) -> Organization:
        """The authenticated organization; root fields check authentication first."""
        if self.organization is None:
            raise PermissionError("unauthenticated")
        return self.organization

    @property
    def bank_accounts(self) -> BankAccountLoader:
        if self._bank_accounts is None:
            # A WebSocket's context outlives each operation on it: batch, but never serve a
            # read cached by an earlier operation.
            cache = not isinstance(self.request, WebSocket)
            self._bank_accounts = BankAccountLoader(self.service, self.org, cache=cache)
        return self._bank_accounts

    @property
    def payouts(self) -> PayoutLoader:
        if self._payouts is None:
            # Same reason as bank accounts: a WebSocket context lives for the whole connection.
            cache = not isinstance(self.request, WebSocket)
            self._payouts = PayoutLoader(self.service, self.org, cache=cache)
        return self._payouts
