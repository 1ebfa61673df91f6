"""Subscription root: the caller's organization's status changes, as the pipeline publishes them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry import relay
from strawberry.types import Info

from payout_gateway.domain.enums import BankAccountStatus, PayoutAccountStatus
from payout_gateway.domain.errors import SecretsUnreadableError, StoreUnavailableError
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.events.broker import Missed
from payout_gateway.graphql.context import GatewayContext
from payout_gateway.graphql.safety import IsAuthenticated, store_unavailable_extensions
from payout_gateway.graphql.types import BankAccount, PayoutAccount
from payout_gateway.metrics import SUBSCRIPTIONS

Ctx = Info[GatewayContext, None]


_FROM_STATUS = "The status it moved from; null when none was recorded."
_TO_STATUS = "The status it moved to."
_SOURCE = "Where the gateway learned of the move."
_AT = "When the gateway recorded the move (UTC)."


@strawberry.type(description="A bank account of the organization moved to another status.")
class BankAccountStatusChange:
    bank_account: BankAccount = strawberry.field(
        description="The account as stored when the event was delivered (it may have moved "
        "further since the change)."
    )
    from_status: BankAccountStatus | None = strawberry.field(description=_FROM_STATUS)
    to_status: BankAccountStatus = strawberry.field(description=_TO_STATUS)
    provider_status: str = strawberry.field(description="The provider's value for `toStatus`.")
    source: ChangeSource = strawberry.field(description=_SOURCE)
    at: datetime = strawberry.field(description=_AT)


@strawberry.type(description="The organization's payout account moved to another status.")
class PayoutAccountStatusChange:
    payout_account: PayoutAccount = strawberry.field(
        description="The payout account as stored when the event was delivered."
    )
    from_status: PayoutAccountStatus | None = strawberry.field(description=_FROM_STATUS)
    to_status: PayoutAccountStatus = strawberry.field(description=_TO_STATUS)
    provider_status: str = strawberry.field(description="The provider's value for `toStatus`.")
    source: ChangeSource = strawberry.field(description=_SOURCE)
    at: datetime = strawberry.field(description=_AT)


@strawberry.type(
    description="A payout of the organization moved to another status. Minimal for now: the "
    "payout's global id and the canonical status values (a PayoutStatus name) as strings."
)
class PayoutStatusChange:
    payout_id: strawberry.ID = strawberry.field(
        description="The payout's Relay global id (`Payout:<gateway id>`, base64)."
    )
    from_status: str | None = strawberry.field(
        description="The PayoutStatus name it moved from; null when none was recorded."
    )
    to_status: str = strawberry.field(description="The PayoutStatus name it moved to.")
    provider_status: str = strawberry.field(description="The provider's value for `toStatus`.")
    source: ChangeSource = strawberry.field(description=_SOURCE)
    at: datetime = strawberry.field(description=_AT)


ENDED_BY_OUTAGE = (
    "The gateway's database is unavailable: this subscription has ended; subscribe again."
)
ENDED_BY_MISCONFIGURATION = (
    "The gateway is misconfigured: it cannot read this organization's provider credentials. "
    "This subscription has ended; subscribe again later."
)


FELL_BEHIND = (
    "This subscription fell too far behind the status changes (its client read too slowly) "
    "and missed some: it has ended. Subscribe again, then re-read the statuses you show."
)
LOST_IN_FANOUT = (
    "Status changes were lost on their way to this subscription (the gateway could not pass "
    "them between its replicas in time) and it has ended. Subscribe again, then re-read the "
    "statuses you show."
)
_MISSED_MESSAGES = {Missed.FELL_BEHIND: FELL_BEHIND, Missed.LOST_IN_FANOUT: LOST_IN_FANOUT}


@contextmanager
def _outage_ends_the_subscription() -> Iterator[None]:
    """A database outage met while a subscription runs, in the check of the connection's
    credential before an event or in the read of what the event shows, ends the subscription
    with a typed error: STORE_UNAVAILABLE and retryable, where a revoked key's is
    UNAUTHENTICATED, since nothing was found wrong with the credential.

    An error for this operation, not the close with 1013 that a connection_init meeting the
    outage gets: the connection's other operations may still be served (a credential checked
    moments ago is answered from the authentication cache, a payout's event reads nothing),
    and an operation has no say over the socket its handler is still sending on. The client
    subscribes again when the database answers; changes published meanwhile are not replayed,
    as after any reconnection, and the objects' ``statusChangedAt`` tell what moved."""
    try:
        yield
    except StoreUnavailableError as outage:
        raise GraphQLError(
            ENDED_BY_OUTAGE, extensions=store_unavailable_extensions(outage)
        ) from outage
    except SecretsUnreadableError as misconfigured:
        # The check of the credential read its organization, sealed with a key the gateway
        # does not list (since connection_init): retryable, as an outage, once it is listed.
        raise GraphQLError(
            ENDED_BY_MISCONFIGURATION, extensions=store_unavailable_extensions(misconfigured)
        ) from misconfigured


async def _changes(info: Ctx, object_type: ObjectType) -> AsyncGenerator[StatusChanged, None]:
    """The organization's changes of one object type, from now until the client unsubscribes."""
    broker = info.context.broker
    if broker is None:
        raise GraphQLError(
            "Subscriptions are not available on this endpoint.",
            extensions={"code": "UNSUPPORTED_OPERATION"},
        )
    # The organization is the connection's, decided at connection_init, never an argument.
    async with broker.subscribe(info.context.org.id) as queue:
        SUBSCRIPTIONS.inc()
        try:
            while True:
                change = await queue.get()
                if queue.overflowed or change is None:
                    raise GraphQLError(
                        _MISSED_MESSAGES[queue.missed or Missed.FELL_BEHIND],
                        extensions={"code": "SUBSCRIPTION_OVERFLOW", "retryable": True},
                    )
                if change.object_type is not object_type:
                    continue
                if not await info.context.still_authorized():
                    raise GraphQLError(
                        "The API key or token of this connection is no longer valid.",
                        extensions={"code": "UNAUTHENTICATED"},
                    )
                yield change
        finally:
            SUBSCRIPTIONS.dec()


@strawberry.type(
    description="Live status changes of the caller's organization, over a WebSocket "
    "(graphql-transport-ws on /graphql): only moves made after subscribing, none replayed."
)
class Subscription:
    @strawberry.subscription(
        permission_classes=[IsAuthenticated],
        description="Status changes of the organization's bank accounts (Paygentic's, as "
        "the gateway re-reads them; Commet reports no bank account status changes).",
    )
    async def bank_account_status_changed(
        self, info: Ctx
    ) -> AsyncGenerator[BankAccountStatusChange, None]:
        service, org = info.context.service, info.context.org
        with _outage_ends_the_subscription():
            async for change in _changes(info, ObjectType.BANK_ACCOUNT):
                # Straight from the store, not the connection's loader: a connection lives for
                # hours and each event needs the account as it is now.
                (account,) = await service.bank_accounts_by_ids(org, [change.object_id])
                if account is None:
                    continue
                yield BankAccountStatusChange(
                    bank_account=BankAccount.from_domain(account),
                    from_status=(
                        BankAccountStatus(change.from_status) if change.from_status else None
                    ),
                    to_status=BankAccountStatus(change.to_status),
                    provider_status=change.provider_status,
                    source=change.source,
                    at=change.at,
                )

    @strawberry.subscription(
        permission_classes=[IsAuthenticated],
        description="Status changes of the organization's payout account.",
    )
    async def payout_account_status_changed(
        self, info: Ctx
    ) -> AsyncGenerator[PayoutAccountStatusChange, None]:
        service, org = info.context.service, info.context.org
        with _outage_ends_the_subscription():
            async for change in _changes(info, ObjectType.PAYOUT_ACCOUNT):
                record = await service.payout_account(org)
                if record is None:
                    continue
                yield PayoutAccountStatusChange(
                    payout_account=PayoutAccount.from_domain(record),
                    from_status=(
                        PayoutAccountStatus(change.from_status) if change.from_status else None
                    ),
                    to_status=PayoutAccountStatus(change.to_status),
                    provider_status=change.provider_status,
                    source=change.source,
                    at=change.at,
                )

    @strawberry.subscription(
        permission_classes=[IsAuthenticated],
        description="Status changes of the organization's payouts.",
    )
    async def payout_status_changed(self, info: Ctx) -> AsyncGenerator[PayoutStatusChange, None]:
        with _outage_ends_the_subscription():
            async for change in _changes(info, ObjectType.PAYOUT):
                yield PayoutStatusChange(
                    payout_id=strawberry.ID(relay.to_base64("Payout", change.object_id)),
                    from_status=change.from_status,
                    to_status=change.to_status,
                    provider_status=change.provider_status,
                    source=change.source,
                    at=change.at,
                )
