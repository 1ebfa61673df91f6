"""GraphQL input types and their conversion to validated domain requests.

No input carries an organization id, a status or a provider id: the organization comes from the
credential, statuses come from providers.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import strawberry
from strawberry.scalars import JSON

from payout_gateway.domain.enums import AccountType, BusinessType, HolderType
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    PayoutRequest,
    PayoutVerificationRequest,
    validated,
)
from payout_gateway.graphql.input_conversion import use_compiled_conversion


def _present(**values: Any) -> dict[str, Any]:
    """Drop omitted (None) optional fields so domain defaults apply."""
    return {key: value for key, value in values.items() if value is not None}


@strawberry.input(description="A destination bank account. The numbers are never stored or echoed.")
class BankAccountInput:
    account_number: str = strawberry.field(
        description="4-17 ASCII digits (spaces and hyphens are ignored), or an IBAN."
    )
    holder_name: str
    routing_number: str | None = strawberry.field(
        default=None, description="US ABA routing number, 9 digits with a valid checksum."
    )
    holder_type: HolderType | None = None
    account_type: AccountType | None = None
    bank_name: str | None = None
    country: str | None = strawberry.field(default=None, description="ISO 3166-1 alpha-2.")
    currency: str | None = strawberry.field(default=None, description="ISO 4217.")

    def to_domain(self) -> dict[str, Any]:
        return _present(
            account_number=self.account_number,
            routing_number=self.routing_number,
            holder_name=self.holder_name,
            holder_type=self.holder_type,
            account_type=self.account_type,
            bank_name=self.bank_name,
            country=self.country,
            currency=self.currency,
        )


@strawberry.input
class AddBankAccountInput:
    bank_account: BankAccountInput
    set_default: bool = False
    metadata: JSON | None = strawberry.field(
        default=None, description="Up to 20 string keys (≤ 40 chars) with string values (≤ 500)."
    )

    def to_domain(self) -> AddBankAccountRequest:
        return validated(
            AddBankAccountRequest,
            _present(
                bank=self.bank_account.to_domain(),
                set_default=self.set_default,
                metadata=self.metadata,
            ),
        )


@strawberry.input
class AddressInput:
    line1: str
    city: str
    postal_code: str
    country: str = strawberry.field(description="ISO 3166-1 alpha-2.")
    line2: str | None = None
    state: str | None = None

    def to_domain(self) -> dict[str, Any]:
        return _present(
            line1=self.line1,
            line2=self.line2,
            city=self.city,
            state=self.state,
            postal_code=self.postal_code,
            country=self.country,
        )


@strawberry.input
class IndividualInput:
    first_name: str
    last_name: str
    phone: str = strawberry.field(description="E.164, e.g. +14155550123.")
    date_of_birth: date
    address: AddressInput
    ssn_last4: str | None = None
    id_number: str | None = None

    def to_domain(self) -> dict[str, Any]:
        return _present(
            first_name=self.first_name,
            last_name=self.last_name,
            phone=self.phone,
            date_of_birth=self.date_of_birth,
            address=self.address.to_domain(),
            ssn_last4=self.ssn_last4,
            id_number=self.id_number,
        )


@strawberry.input
class RepresentativeInput:
    first_name: str
    last_name: str
    phone: str | None = None
    email: str | None = None

    def to_domain(self) -> dict[str, Any]:
        return _present(
            first_name=self.first_name,
            last_name=self.last_name,
            phone=self.phone,
            email=self.email,
        )


@strawberry.input
class CompanyInput:
    name: str
    tax_id: str
    address: AddressInput
    representative: RepresentativeInput

    def to_domain(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tax_id": self.tax_id,
            "address": self.address.to_domain(),
            "representative": self.representative.to_domain(),
        }


@strawberry.input(
    description="KYC + destination bank. KYC data is validated; it is forwarded only to "
    "providers that take it (Commet) and never stored."
)
class CompletePayoutVerificationInput:
    email: str
    business_type: BusinessType
    business_url: str = strawberry.field(description="A public https:// URL.")
    document_url: str = strawberry.field(
        description="Public https:// URL of the identity document (no private addresses)."
    )
    bank_account: BankAccountInput
    individual: IndividualInput | None = strawberry.field(
        default=None, description="Required when businessType is INDIVIDUAL."
    )
    company: CompanyInput | None = strawberry.field(
        default=None, description="Required when businessType is COMPANY."
    )

    def to_domain(self) -> PayoutVerificationRequest:
        return validated(
            PayoutVerificationRequest,
            _present(
                email=self.email,
                business_type=self.business_type,
                business_url=self.business_url,
                document_url=self.document_url,
                bank=self.bank_account.to_domain(),
                individual=self.individual.to_domain() if self.individual else None,
                company=self.company.to_domain() if self.company else None,
            ),
        )


@strawberry.input
class RequestPayoutInput:
    amount: int = strawberry.field(description="Integer minor units (cents), e.g. 1500 = 15.00.")
    currency: str | None = strawberry.field(
        default=None, description="ISO 4217; defaults to the organization's currency."
    )
    description: str | None = strawberry.field(default=None, description="Up to 500 characters.")

    def to_domain(self, default_currency: str) -> PayoutRequest:
        return validated(
            PayoutRequest,
            _present(
                amount={"amount_minor": self.amount, "currency": self.currency or default_currency},
                description=self.description,
            ),
        )


# The mutations' arguments; the inputs nested in them are compiled along with them.
use_compiled_conversion(AddBankAccountInput, CompletePayoutVerificationInput, RequestPayoutInput)
