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

# The domain enums these inputs take are named and described where types.py registers them:
# imported first, or Strawberry makes bare definitions of its own for them, and a schema built
# after this module was imported alone held two types of one name (DuplicatedTypeName).
from payout_gateway.graphql import types as _registers_the_enums  # noqa: F401
from payout_gateway.graphql.input_conversion import use_compiled_conversion


def _present(**values: Any) -> dict[str, Any]:
    """Drop omitted (None) optional fields so domain defaults apply."""
    return {key: value for key, value in values.items() if value is not None}


@strawberry.input(description="A destination bank account. The numbers are never stored or echoed.")
class BankAccountInput:
    account_number: str = strawberry.field(
        description="4-17 ASCII digits (spaces and hyphens are ignored), or an IBAN."
    )
    holder_name: str = strawberry.field(description="The account holder's name, 1-200 characters.")
    routing_number: str | None = strawberry.field(
        default=None,
        description="US ABA routing number: 9 digits with a valid checksum, the first two "
        "naming a bank's district (00-12, 21-32, 61-72 or 80). Required by Paygentic; optional "
        "for Commet.",
    )
    holder_type: HolderType | None = strawberry.field(
        default=None,
        description="Who holds the account. Paygentic requires it: omitted, it follows "
        "businessType in payout verification, else the organization's profile.",
    )
    account_type: AccountType | None = strawberry.field(
        default=None, description="Checking or savings: sent to Commet; Paygentic drops it."
    )
    bank_name: str | None = strawberry.field(
        default=None,
        description="The bank's name, 1-200 characters. Paygentic requires it (omitted: the "
        "organization's profile); Commet is not sent it.",
    )
    country: str | None = strawberry.field(
        default=None,
        description="ISO 3166-1 alpha-2; omitted, the organization's. Commet: addBankAccount "
        "takes only the organization's (another is a ValidationError); payout verification "
        "does not use it.",
    )
    currency: str | None = strawberry.field(
        default=None,
        description="ISO 4217. Omitted: the organization's. Commet takes only the "
        "organization's (anything else is a ValidationError).",
    )

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


@strawberry.input(description="A bank account to add as a payout destination.")
class AddBankAccountInput:
    bank_account: BankAccountInput = strawberry.field(description="The account to add.")
    set_default: bool = strawberry.field(
        default=False,
        description="Make it the default account, where payouts go. Commet keeps defaults; "
        "for Paygentic the gateway does, and the organization's first account is the default "
        "anyway.",
    )
    metadata: JSON | None = strawberry.field(
        default=None,
        description="Up to 20 string keys (1-40 chars) with string values (≤ 500 chars), "
        "shown back on the account. Paygentic: `gatewayReference` and `gatewayPurpose` are "
        "reserved.",
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


@strawberry.input(description="A postal address (KYC data: never stored).")
class AddressInput:
    line1: str = strawberry.field(description="First address line, 1-200 characters.")
    city: str = strawberry.field(description="City, 1-200 characters.")
    postal_code: str = strawberry.field(description="Postal code, 1-20 characters.")
    country: str = strawberry.field(description="ISO 3166-1 alpha-2.")
    line2: str | None = strawberry.field(
        default=None, description="Second address line, 1-200 characters."
    )
    state: str | None = strawberry.field(
        default=None, description="State, province or region, 1-100 characters."
    )

    def to_domain(self) -> dict[str, Any]:
        return _present(
            line1=self.line1,
            line2=self.line2,
            city=self.city,
            state=self.state,
            postal_code=self.postal_code,
            country=self.country,
        )


@strawberry.input(
    description="KYC data of a person (businessType INDIVIDUAL): forwarded only to Commet, "
    "never stored."
)
class IndividualInput:
    first_name: str = strawberry.field(description="1-200 characters.")
    last_name: str = strawberry.field(description="1-200 characters.")
    phone: str = strawberry.field(description="E.164, e.g. +14155550123.")
    date_of_birth: date = strawberry.field(description="Between 1900-01-01 and today.")
    address: AddressInput = strawberry.field(description="The person's address.")
    ssn_last4: str | None = strawberry.field(
        default=None, description="Last 4 digits of the US Social Security number (4 digits)."
    )
    id_number: str | None = strawberry.field(
        default=None, description="An identity document number, 1-64 characters."
    )

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


@strawberry.input(description="The person representing a company in its KYC data.")
class RepresentativeInput:
    first_name: str = strawberry.field(description="1-200 characters.")
    last_name: str = strawberry.field(description="1-200 characters.")
    phone: str | None = strawberry.field(default=None, description="E.164, e.g. +14155550123.")
    email: str | None = strawberry.field(default=None, description="An email address.")

    def to_domain(self) -> dict[str, Any]:
        return _present(
            first_name=self.first_name,
            last_name=self.last_name,
            phone=self.phone,
            email=self.email,
        )


@strawberry.input(
    description="KYC data of a company (businessType COMPANY): forwarded only to Commet, never "
    "stored."
)
class CompanyInput:
    name: str = strawberry.field(description="The company's name, 1-200 characters.")
    tax_id: str = strawberry.field(
        description="The company's tax id (e.g. a US EIN), 1-64 characters."
    )
    address: AddressInput = strawberry.field(description="The company's address.")
    representative: RepresentativeInput = strawberry.field(
        description="The person representing the company."
    )

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
    email: str = strawberry.field(description="The business's email address.")
    business_type: BusinessType = strawberry.field(
        description="Which of `individual` and `company` must be given (the other left out)."
    )
    business_url: str = strawberry.field(
        description="The business's website: a public https:// URL, up to 2048 characters."
    )
    document_url: str = strawberry.field(
        description="Public https:// URL of the identity document (no private addresses), up "
        "to 2048 characters."
    )
    bank_account: BankAccountInput = strawberry.field(
        description="The destination account; saved as the organization's default account."
    )
    individual: IndividualInput | None = strawberry.field(
        default=None, description="Required when businessType is INDIVIDUAL, else left out."
    )
    company: CompanyInput | None = strawberry.field(
        default=None, description="Required when businessType is COMPANY, else left out."
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


@strawberry.input(description="A payout to the organization's default bank account.")
class RequestPayoutInput:
    amount: int = strawberry.field(
        description="Positive integer minor units (cents), e.g. 1500 = 15.00. Commet: at least "
        "1000 (10.00 USD)."
    )
    currency: str | None = strawberry.field(
        default=None,
        description="ISO 4217; defaults to the organization's currency. Commet pays out in USD "
        "only.",
    )
    description: str | None = strawberry.field(default=None, description="Up to 500 characters.")

    def to_domain(self, default_currency: str) -> PayoutRequest:
        return validated(
            PayoutRequest,
            _present(
                # Only an omitted currency defaults: "" is refused, as in a bank account's input.
                amount={
                    "amount_minor": self.amount,
                    "currency": default_currency if self.currency is None else self.currency,
                },
                description=self.description,
            ),
        )


# The mutations' arguments; the inputs nested in them are compiled along with them.
use_compiled_conversion(AddBankAccountInput, CompletePayoutVerificationInput, RequestPayoutInput)
