"""GraphQL output types, each built from a domain object with ``from_domain``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.types.enum import has_enum_definition

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

E = TypeVar("E", bound=StrEnum)


def _graphql_enum(
    enum: type[E], *, name: str | None = None, description: str, values: Mapping[E, str]
) -> None:
    """Register a domain enum as a GraphQL enum, with a description for each of its values.

    The domain enums cannot hold ``strawberry.enum_value`` (domain/ imports no strawberry), so
    each value's description is set on the definition ``strawberry.enum`` made for it; a value
    left undescribed (a member added to the domain enum) fails here, at import."""
    if set(values) != set(enum):
        raise ValueError(f"{enum.__name__}: describe exactly its values {[*enum]}")
    registered = strawberry.enum(enum, name=name, description=description)
    if not has_enum_definition(registered):  # pragma: no cover - strawberry.enum always does
        raise TypeError(f"{enum.__name__} is not a GraphQL enum")
    for value in registered.__strawberry_definition__.values:
        value.description = values[enum[value.name]]


_UNMAPPED = (
    "The provider reported a value no status table maps (the raw value is in providerStatus); "
    "never treated as usable, until a known value replaces it."
)
_LIVEMODE = (
    "Whether the object is in the provider's live mode (real money): as Commet reports it; for "
    "Paygentic, false when the gateway talks to its sandbox host or the local simulator."
)
_STATUS_CHANGED_AT = (
    "When the gateway recorded the current status (UTC): at creation, then at each status "
    "change. Poll it to spot changes without a subscription."
)

# GraphQL enums are the domain enums themselves (registered here), so the two cannot drift.
_graphql_enum(
    enums.Provider,
    name="ProviderName",
    description="A payout provider the gateway fronts; each organization has exactly one.",
    values={
        enums.Provider.COMMET: "Commet: takes KYC over its API, keeps default accounts and "
        "dedupes by idempotency key; has no read endpoints.",
        enums.Provider.PAYGENTIC: "Paygentic: no KYC API, no default accounts, no idempotency; "
        "its objects can be read back.",
    },
)
_graphql_enum(
    enums.BankAccountStatus,
    description="A bank account's canonical status, mapped from each provider's own value "
    "(kept in providerStatus).",
    values={
        enums.BankAccountStatus.PENDING: "Added, not checked by the provider yet (Paygentic "
        "`new`; Commet accounts are never pending).",
        enums.BankAccountStatus.ACTIVE: "Usable as a payout destination (Commet `active`, "
        "Paygentic `verified`).",
        enums.BankAccountStatus.ERRORED: "Rejected or unusable (Commet and Paygentic "
        "`errored`); final.",
        enums.BankAccountStatus.UNKNOWN: _UNMAPPED,
    },
)
_graphql_enum(
    enums.PayoutAccountStatus,
    description="The payout account's canonical status (Paygentic: derived from the status of "
    "the destination account completePayoutVerification created).",
    values={
        enums.PayoutAccountStatus.PENDING_VERIFICATION: "Submitted, waiting for the provider "
        "to verify it (Commet `pending_verification`, Paygentic `new`).",
        enums.PayoutAccountStatus.VERIFIED: "Verified by the provider: payouts may go out "
        "(Commet and Paygentic `verified`).",
        enums.PayoutAccountStatus.RESTRICTED: "Held back: the provider needs more information "
        "(Commet `restricted`) or rejected the destination (Paygentic `errored`); it may become "
        "VERIFIED again.",
        enums.PayoutAccountStatus.DISABLED: "Unusable (Commet `disabled`; Paygentic has no "
        "such value); final.",
        enums.PayoutAccountStatus.UNKNOWN: _UNMAPPED,
    },
)
_graphql_enum(
    enums.PayoutStatus,
    description="A payout's canonical status, mapped from each provider's own value (kept in "
    "providerStatus). A status never moves backwards.",
    values={
        enums.PayoutStatus.PENDING: "Requested, not paid out yet (Commet and Paygentic `pending`).",
        enums.PayoutStatus.IN_TRANSIT: "On its way to the bank (Commet `in_transit`; Paygentic "
        "has no such value).",
        enums.PayoutStatus.PAID: "Paid out (Commet `paid`, Paygentic `success`); final.",
        enums.PayoutStatus.FAILED: "Failed (Commet and Paygentic `failed`); final.",
        enums.PayoutStatus.CANCELED: "Canceled (Commet `canceled`, Paygentic `cancelled`); final.",
        enums.PayoutStatus.UNKNOWN: _UNMAPPED,
    },
)
_graphql_enum(
    enums.HolderType,
    description="Who holds a bank account.",
    values={
        enums.HolderType.INDIVIDUAL: "A person.",
        enums.HolderType.COMPANY: "A company.",
    },
)
_graphql_enum(
    enums.BusinessType,
    description="What kind of business completes payout verification; it decides which KYC "
    "branch (`individual` or `company`) the input needs.",
    values={
        enums.BusinessType.INDIVIDUAL: "A person: the input's `individual` is required.",
        enums.BusinessType.COMPANY: "A company: the input's `company` is required.",
    },
)
_graphql_enum(
    enums.AccountType,
    description="Checking or savings; Commet keeps it, Paygentic has no such notion (dropped).",
    values={
        enums.AccountType.CHECKING: "A checking account.",
        enums.AccountType.SAVINGS: "A savings account.",
    },
)
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
    provider: ProviderName = strawberry.field(
        description="The provider holding the account: the organization's."
    )
    provider_account_id: str | None = strawberry.field(
        description="The provider's id; null where the provider returns none "
        "(Commet does not return the id of the account saved by payout verification)."
    )
    holder_name: str = strawberry.field(description="The account holder's name.")
    holder_type: HolderType | None = strawberry.field(
        description="Who holds the account; null when unknown (Commet: when neither the input "
        "nor the organization's profile gave it)."
    )
    bank_name: str | None = strawberry.field(
        description="The bank's name; null when unknown (Commet reports it when it has it)."
    )
    last4: str = strawberry.field(
        description="The last 4 characters of the account number (or IBAN): the full number is "
        "never stored or shown."
    )
    country: str = strawberry.field(
        description="The account's country, ISO 3166-1 alpha-2, upper case (Commet: the "
        "organization's; for the account saved by payout verification, the payout account's)."
    )
    currency: str = strawberry.field(
        description="The account's currency, ISO 4217, upper case (Commet: always the "
        "organization's)."
    )
    account_type: AccountType | None = strawberry.field(
        description="Checking or savings; null when not known (always null at Paygentic, which "
        "has no such notion)."
    )
    is_default: bool = strawberry.field(
        description="Whether this is the organization's default account, where payouts go; at "
        "most one is. Commet keeps the default (this mirrors its answer); for Paygentic the "
        "gateway keeps it."
    )
    status: BankAccountStatus = strawberry.field(
        description="The canonical status (Paygentic payouts need the default account ACTIVE)."
    )
    provider_status: str = strawberry.field(
        description="The provider's own status value, kept raw (e.g. Paygentic `new`)."
    )
    livemode: bool = strawberry.field(description=_LIVEMODE)
    metadata: dict[str, str] = strawberry.field(
        graphql_type=JSON,
        description="The string keys and values given to addBankAccount (empty for the account "
        "saved by completePayoutVerification); the gateway's own reconciliation tags are not "
        "shown.",
    )
    created_at: datetime = strawberry.field(
        description="When the account was created, as the provider reported it (Commet's "
        "verification account: when the gateway recorded it); stored in UTC."
    )
    updated_at: datetime = strawberry.field(
        description="At creation the provider's last update where it reports one (else when "
        "the gateway recorded it), then each status change the gateway records, and when "
        "another account became the default instead of this one (UTC)."
    )
    status_changed_at: datetime = strawberry.field(description=_STATUS_CHANGED_AT)

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
    provider: ProviderName = strawberry.field(
        description="The provider holding it: the organization's."
    )
    provider_account_id: str = strawberry.field(
        description="Commet: its connected account id (`acct_…`); Paygentic: the id of the "
        "external account completePayoutVerification created."
    )
    status: PayoutAccountStatus = strawberry.field(
        description="The canonical status. Commet pays out only from a VERIFIED account; "
        "Paygentic payouts need an ACTIVE default bank account instead."
    )
    provider_status: str = strawberry.field(
        description="The provider's own status value, kept raw (Paygentic: the destination "
        "account's, e.g. `new`)."
    )
    transfers_enabled: bool = strawberry.field(
        description="Whether the provider allows payouts: Commet's own flag at creation, "
        "Paygentic's destination being verified; after a status change, true exactly when "
        "VERIFIED."
    )
    business_type: BusinessType | None = strawberry.field(
        description="The business type of the KYC data; null when the provider did not report it."
    )
    country: str | None = strawberry.field(
        description="ISO 3166-1 alpha-2, upper case; null when the provider did not report it."
    )
    livemode: bool = strawberry.field(description=_LIVEMODE)
    created_at: datetime = strawberry.field(
        description="When the gateway recorded the payout account (UTC)."
    )
    updated_at: datetime = strawberry.field(
        description="When the gateway's record last changed (UTC)."
    )
    status_changed_at: datetime = strawberry.field(description=_STATUS_CHANGED_AT)

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
    has_account_types: bool = strawberry.field(
        description="Whether accountType (checking/savings) is kept. False: it is dropped."
    )
    can_read_bank_accounts: bool = strawberry.field(
        description="Whether the provider's objects can be read back (Paygentic): the gateway "
        "then re-reads those not in a final status every few seconds. False (Commet): no read "
        "endpoints; the gateway's store is the record, and statuses come from mutation answers "
        "and webhooks."
    )
    has_idempotency: bool = strawberry.field(
        description="Whether the provider dedupes requests by idempotency key (Commet gets the "
        "gateway's key). False: the gateway never re-sends a create blindly and finds a lost "
        "answer by a reference in the object's metadata."
    )
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


@strawberry.type(description="The organization the caller's API key or JWT acts for.")
class Organization:
    name: str = strawberry.field(description="Its name in the gateway.")
    provider: ProviderName = strawberry.field(
        description="The provider its accounts and payouts live at."
    )
    country: str = strawberry.field(
        description="Its profile's country, ISO 3166-1 alpha-2: Commet bank accounts are in "
        "it, Paygentic ones default to it."
    )
    currency: str = strawberry.field(
        description="Its profile's currency, ISO 4217: the default of payouts; Commet bank "
        "accounts are in it, Paygentic ones default to it."
    )
    capabilities: Capabilities = strawberry.field(
        description="What its provider supports and requires."
    )

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


_graphql_enum(
    ObjectType,
    name="StatusObjectType",
    description="The kind of object a status change concerns.",
    values={
        ObjectType.BANK_ACCOUNT: "A BankAccount.",
        ObjectType.PAYOUT_ACCOUNT: "The organization's PayoutAccount (`node` does not resolve "
        "its id).",
        ObjectType.PAYOUT: "A Payout.",
    },
)
_graphql_enum(
    ChangeSource,
    name="StatusChangeSource",
    description="Where the gateway learned of a status.",
    values={
        ChangeSource.PROVIDER_RESPONSE: "The provider's answer to one of the gateway's "
        "requests (a mutation; also the status an object was created with).",
        ChangeSource.WEBHOOK: "A signed webhook from the provider (Commet's payout events).",
        ChangeSource.REFRESH: "The gateway read the object again from the provider (Paygentic, "
        "which sends no status webhooks, every few seconds).",
    },
)
PayoutStatus = enums.PayoutStatus


@strawberry.type(description="An amount of money: integer minor units of an ISO 4217 currency.")
class Money:
    amount: int = strawberry.field(description="Integer minor units (cents for USD).")
    currency: str = strawberry.field(description="ISO 4217, upper case.")

    @classmethod
    def from_domain(cls, money: DomainMoney | None) -> Money | None:
        return None if money is None else cls(amount=money.amount_minor, currency=money.currency)


@strawberry.type(description="A payout the gateway requested from the organization's provider.")
class Payout(relay.Node):
    id: relay.NodeID[str]
    provider: ProviderName = strawberry.field(
        description="The provider paying it out: the organization's."
    )
    provider_payout_id: str = strawberry.field(description="The provider's id of the payout.")
    status: PayoutStatus = strawberry.field(description="The canonical status.")
    provider_status: str = strawberry.field(
        description="The provider's own status value, kept raw (e.g. Paygentic `success`)."
    )
    amount: Money = strawberry.field(description="The amount requested, in minor units.")
    fee: Money | None = strawberry.field(
        description="The provider's fee (Paygentic: platform and method fees added up); null "
        "when the provider reported none."
    )
    net_amount: Money | None = strawberry.field(
        description="What reaches the bank account after fees (Paygentic: the transferred "
        "amount); null when the provider reported none."
    )
    description: str | None = strawberry.field(
        description="The description given to requestPayout, as the provider keeps it."
    )
    livemode: bool = strawberry.field(description=_LIVEMODE)
    created_at: datetime = strawberry.field(
        description="When the provider created the payout, as it reported it; stored in UTC."
    )
    updated_at: datetime = strawberry.field(
        description="When the gateway's record last changed (UTC)."
    )
    status_changed_at: datetime = strawberry.field(description=_STATUS_CHANGED_AT)
    destination_bank_account_id: strawberry.Private[str | None]

    @strawberry.field(
        description="Where the money goes: the organization's default account when the payout "
        "was requested, read as it is now; null when the gateway had none recorded."
    )
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
# A global id's type name -> the kind of object whose status changes it names.
STATUS_OBJECT_TYPES = {name: object_type for object_type, name in _GLOBAL_TYPE.items()}


@strawberry.type(description="One entry of the audit trail: a status an object took, and why.")
class StatusChange:
    object_type: ObjectType = strawberry.field(description="What kind of object moved.")
    object_id: strawberry.ID = strawberry.field(
        description="Global id of the object (`node(id:)` resolves bank accounts and payouts)."
    )
    from_status: str | None = strawberry.field(
        description="The status before (a name, as toStatus is); null for the status at creation."
    )
    to_status: str = strawberry.field(
        description="The status taken: a value name of the object's status enum "
        "(BankAccountStatus, PayoutAccountStatus or PayoutStatus)."
    )
    provider_status: str = strawberry.field(description="The provider's own value for toStatus.")
    source: ChangeSource = strawberry.field(description="Where the gateway learned of it.")
    at: datetime = strawberry.field(description="When the gateway recorded it (UTC).")

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
