"""GraphQL output types, each built from a domain object with ``from_domain``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from payout_gateway.domain import enums
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.domain.models import BankAccount as DomainBankAccount
from payout_gateway.domain.models import Money as DomainMoney
from payout_gateway.domain.models import (
    Organization as DomainOrganization,
)
from payout_gateway.domain.models import Payout as DomainPayout
from payout_gateway.domain.models import (
    PayoutAccountRecord,
    ProviderCapabilities,
)

# GraphQL enums are the domain enums themselves (registered here), so the two cannot drift.
strawberry.enum(enums.Provider, name="ProviderName")
strawberry.enum(
    enums.BankAccountStatus,
    description="UNKNOWN: the provider reported a status no table maps; never usable.",
)
strawberry.enum(
    enums.PayoutAccountStatus,
    description="UNKNOWN: the provider reported a status no table maps; never usable.",
)
strawberry.enum(enums.PayoutStatus)
strawberry.enum(enums.HolderType)
strawberry.enum(enums.BusinessType)
strawberry.enum(enums.AccountType)
ProviderName = enums.Provider
BankAccountStatus = enums.BankAccountStatus
PayoutAccountStatus = enums.PayoutAccountStatus
HolderType = enums.HolderType
BusinessType = enums.BusinessType
AccountType = enums.AccountType

# Field names of BankAccountInput, by the domain BankDetails field they fill.
BANK_INPUT_FIELD_NAMES = {
    "account_number": "accountNumber",
    "routing_number": "routingNumber",
    "holder_name": "holderName",
    "holder_type": "holderType",
    "account_type": "accountType",
    "bank_name": "bankName",
    "country": "country",
    "currency": "currency",
}


@strawberry.type(description="A payout destination. Only the last 4 digits are ever shown.")
class BankAccount(relay.Node):
    id: relay.NodeID[str]
    provider: ProviderName
    provider_account_id: str | None = strawberry.field(
        description="The provider's id; null where the provider returns none "
        "(Commet does not return the id of the account saved by payout verification)."
    )
    holder_name: str
    holder_type: HolderType | None
    bank_name: str | None
    last4: str
    country: str = strawberry.field(description="ISO 3166-1 alpha-2, upper case.")
    currency: str = strawberry.field(description="ISO 4217, upper case.")
    account_type: AccountType | None
    is_default: bool
    status: BankAccountStatus
    provider_status: str = strawberry.field(description="The provider's own status value.")
    livemode: bool
    metadata: dict[str, str] = strawberry.field(graphql_type=JSON)
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime

    @classmethod
    def from_domain(cls, account: DomainBankAccount) -> BankAccount:
        return cls(
            id=account.id,
            provider=account.provider,
            provider_account_id=account.provider_account_id,
            holder_name=account.holder_name,
            holder_type=account.holder_type,
            bank_name=account.bank_name,
            last4=account.last4,
            country=account.country,
            currency=account.currency,
            account_type=account.account_type,
            is_default=account.is_default,
            status=account.status,
            provider_status=account.provider_status,
            livemode=account.livemode,
            metadata=dict(account.metadata),
            created_at=account.created_at,
            updated_at=account.updated_at,
            status_changed_at=account.status_changed_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls,
        *,
        info: Info[Any, Any],
        node_ids: Iterable[str],
        required: bool = False,
    ) -> list[BankAccount | None]:
        # Through the request's loader: scoped to the caller's organization and batched.
        accounts = await info.context.bank_accounts.load_many(list(node_ids))
        return [cls.from_domain(a) if a is not None else None for a in accounts]


@strawberry.type(description="The organization's payout account (KYC + destination bank).")
class PayoutAccount:
    provider: ProviderName
    provider_account_id: str
    status: PayoutAccountStatus
    provider_status: str
    transfers_enabled: bool
    business_type: BusinessType | None
    country: str | None
    livemode: bool
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime

    @classmethod
    def from_domain(cls, record: PayoutAccountRecord) -> PayoutAccount:
        return cls(
            provider=record.provider,
            provider_account_id=record.provider_account_id,
            status=record.status,
            provider_status=record.provider_status,
            transfers_enabled=record.transfers_enabled,
            business_type=record.business_type,
            country=record.country,
            livemode=record.livemode,
            created_at=record.created_at,
            updated_at=record.updated_at,
            status_changed_at=record.status_changed_at,
        )


@strawberry.type(description="What the organization's provider supports and requires.")
class Capabilities:
    takes_kyc: bool = strawberry.field(
        description="Whether KYC data is forwarded. False: it is validated, then discarded."
    )
    has_default_accounts: bool = strawberry.field(
        description="Whether the provider keeps a default account (else the gateway keeps it)."
    )
    has_account_types: bool = strawberry.field(description="Checking/savings is kept.")
    can_read_bank_accounts: bool
    has_idempotency: bool
    account_country_from_input: bool = strawberry.field(
        description="Whether a bank account's country and currency may be given in its input. "
        "False: they are the organization's, and others (an IBAN of another country too) are "
        "refused with a ValidationError."
    )
    required_bank_account_fields: list[str] = strawberry.field(
        description="BankAccountInput fields the provider needs (from the input or the profile)."
    )
    bank_account_fields_from_profile: list[str] = strawberry.field(
        description="Required fields the organization's profile fills when the input omits them."
    )


@strawberry.type
class Organization:
    name: str
    provider: ProviderName
    country: str
    currency: str
    capabilities: Capabilities

    @classmethod
    def from_domain(cls, org: DomainOrganization, caps: ProviderCapabilities) -> Organization:
        profile = org.profile
        from_profile = {
            "country": True,
            "currency": True,
            "bank_name": profile.bank_name is not None,
            "holder_type": profile.holder_type is not None,
        }
        return cls(
            name=org.name,
            provider=org.provider,
            country=profile.country,
            currency=profile.currency,
            capabilities=Capabilities(
                takes_kyc=caps.takes_kyc,
                has_default_accounts=caps.has_default_accounts,
                has_account_types=caps.has_account_types,
                can_read_bank_accounts=caps.can_read_bank_accounts,
                has_idempotency=caps.has_idempotency,
                account_country_from_input=caps.account_country_from_input,
                required_bank_account_fields=[
                    BANK_INPUT_FIELD_NAMES[f] for f in caps.required_bank_fields
                ],
                bank_account_fields_from_profile=[
                    BANK_INPUT_FIELD_NAMES[f]
                    for f in caps.required_bank_fields
                    if from_profile.get(f, False)
                ],
            ),
        )


strawberry.enum(ObjectType, name="StatusObjectType")
strawberry.enum(ChangeSource, name="StatusChangeSource")
PayoutStatus = enums.PayoutStatus


@strawberry.type(description="An amount of money.")
class Money:
    amount: int = strawberry.field(description="Integer minor units (cents for USD).")
    currency: str = strawberry.field(description="ISO 4217, upper case.")

    @classmethod
    def from_domain(cls, money: DomainMoney | None) -> Money | None:
        return None if money is None else cls(amount=money.amount_minor, currency=money.currency)


@strawberry.type(description="A payout the gateway requested from the organization's provider.")
class Payout(relay.Node):
    id: relay.NodeID[str]
    provider: ProviderName
    provider_payout_id: str
    status: PayoutStatus
    provider_status: str = strawberry.field(description="The provider's own status value.")
    amount: Money
    fee: Money | None
    net_amount: Money | None
    description: str | None
    livemode: bool
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    destination_bank_account_id: strawberry.Private[str | None]

    @strawberry.field(description="Where the money goes (the default account at request time).")
    async def destination_bank_account(self, info: Info[Any, Any]) -> BankAccount | None:
        if self.destination_bank_account_id is None:
            return None
        account = await info.context.bank_accounts.load(self.destination_bank_account_id)
        return BankAccount.from_domain(account) if account is not None else None

    @classmethod
    def from_domain(cls, payout: DomainPayout) -> Payout:
        amount = Money.from_domain(payout.amount)
        assert amount is not None
        return cls(
            id=payout.id,
            provider=payout.provider,
            provider_payout_id=payout.provider_payout_id,
            status=payout.status,
            provider_status=payout.provider_status,
            amount=amount,
            fee=Money.from_domain(payout.fee),
            net_amount=Money.from_domain(payout.net_amount),
            description=payout.description,
            livemode=payout.livemode,
            created_at=payout.created_at,
            updated_at=payout.updated_at,
            status_changed_at=payout.status_changed_at,
            destination_bank_account_id=payout.destination_bank_account_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls,
        *,
        info: Info[Any, Any],
        node_ids: Iterable[str],
        required: bool = False,
    ) -> list[Payout | None]:
        payouts = await info.context.payouts.load_many(list(node_ids))
        return [cls.from_domain(p) if p is not None else None for p in payouts]


_GLOBAL_TYPE = {
    ObjectType.BANK_ACCOUNT: "BankAccount",
    ObjectType.PAYOUT_ACCOUNT: "PayoutAccount",
    ObjectType.PAYOUT: "Payout",
}


@strawberry.type(description="One entry of the audit trail: a status an object took, and why.")
class StatusChange:
    object_type: ObjectType
    object_id: strawberry.ID = strawberry.field(
        description="Global id of the object (`node(id:)` resolves bank accounts and payouts)."
    )
    from_status: str | None = strawberry.field(description="Null for the status at creation.")
    to_status: str
    provider_status: str
    source: ChangeSource
    at: datetime

    @classmethod
    def from_domain(cls, change: StatusChanged) -> StatusChange:
        return cls(
            object_type=change.object_type,
            object_id=strawberry.ID(
                relay.to_base64(_GLOBAL_TYPE[change.object_type], change.object_id)
            ),
            from_status=change.from_status,
            to_status=change.to_status,
            provider_status=change.provider_status,
            source=change.source,
            at=change.at,
        )
