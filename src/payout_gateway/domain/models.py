"""The unified model: requests the gateway accepts and the accounts and payouts it reports."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import FieldIssue, InputValidationError
from payout_gateway.domain.values import (
    AccountNumber,
    CountryCode,
    CurrencyCode,
    FreeText,
    Name,
    PhoneNumber,
    PublicHttpsUrl,
    RoutingNumber,
    ShortText,
    iban_country,
    last4_of,
    readable_name,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=40)],
        Annotated[str, StringConstraints(max_length=500)],
    ],
    Field(max_length=20),
]


class Money(_Frozen):
    """An amount in integer minor units (cents) of an ISO 4217 currency."""

    amount_minor: int
    currency: CurrencyCode


# --- organizations -------------------------------------------------------------------------


class OrganizationProfile(_Frozen):
    """What the gateway knows of an organization that providers ask for but callers may omit."""

    country: CountryCode
    currency: CurrencyCode
    bank_name: Name | None = None
    holder_type: HolderType | None = None


class ProviderCredentials(_Frozen):
    """Secrets and provider-side identifiers an adapter needs to act for one organization."""

    api_key: SecretStr
    # Paygentic acts for the ``org_…`` named in each request; Commet derives it from the key.
    provider_organization_id: str | None = None
    # Paygentic payouts draw from a source (``sourceId``).
    payout_source_id: str | None = None


class ProviderContext(_Frozen):
    """Everything an adapter call needs about the organization it acts for."""

    organization_id: str
    credentials: ProviderCredentials
    profile: OrganizationProfile


# --- requests ------------------------------------------------------------------------------


class BankDetails(_Frozen):
    """A destination bank account as the caller submits it. Numbers are secrets: never logged,
    never stored, never echoed; only ``last4`` leaves this object."""

    account_number: AccountNumber
    routing_number: RoutingNumber | None = None
    holder_name: Name
    holder_type: HolderType | None = None
    account_type: AccountType | None = None
    bank_name: Name | None = None
    country: CountryCode | None = None
    currency: CurrencyCode | None = None

    @property
    def last4(self) -> str:
        return last4_of(self.account_number)

    @property
    def iban_country(self) -> str | None:
        """The country the account number names, if it is an IBAN."""
        return iban_country(self.account_number)


class AddBankAccountRequest(_Frozen):
    bank: BankDetails
    set_default: bool = False
    metadata: Metadata = Field(default_factory=dict)


class Address(_Frozen):
    line1: Name
    line2: Name | None = None
    city: Name
    state: ShortText | None = None
    postal_code: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=20),
        AfterValidator(readable_name),
    ]
    country: CountryCode


class IndividualKyc(_Frozen):
    first_name: Name
    last_name: Name
    phone: PhoneNumber
    date_of_birth: date
    ssn_last4: SecretStr | None = None
    id_number: SecretStr | None = None
    address: Address

    @field_validator("date_of_birth")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if not date(1900, 1, 1) <= value <= date.today():
            raise ValueError("must be a date between 1900-01-01 and today")
        return value

    @field_validator("ssn_last4")
    @classmethod
    def _four_digits(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and re.fullmatch(r"[0-9]{4}", value.get_secret_value()) is None:
            raise ValueError("must be exactly 4 ASCII digits")
        return value

    @field_validator("id_number")
    @classmethod
    def _bounded_id(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(value.get_secret_value().strip()) <= 64:
            raise ValueError("must have 1 to 64 characters")
        return value


class CompanyRepresentative(_Frozen):
    first_name: Name
    last_name: Name
    phone: PhoneNumber | None = None
    email: EmailStr | None = None


class CompanyKyc(_Frozen):
    name: Name
    tax_id: SecretStr
    address: Address
    representative: CompanyRepresentative

    @field_validator("tax_id")
    @classmethod
    def _bounded_tax_id(cls, value: SecretStr) -> SecretStr:
        if not 1 <= len(value.get_secret_value().strip()) <= 64:
            raise ValueError("must have 1 to 64 characters")
        return value


class PayoutVerificationRequest(_Frozen):
    """KYC + destination bank. The KYC part is personal data: validated, forwarded only where the
    provider takes it, never stored or logged."""

    email: EmailStr
    business_type: BusinessType
    business_url: PublicHttpsUrl
    document_url: PublicHttpsUrl
    bank: BankDetails
    individual: IndividualKyc | None = None
    company: CompanyKyc | None = None

    @model_validator(mode="after")
    def _branch_matches_business_type(self) -> Self:
        # The messages reach the API's caller as they are (a path is mapped, a message is not):
        # they name the field as the input does, businessType.
        if self.business_type is BusinessType.INDIVIDUAL:
            if self.individual is None:
                raise _BranchError("individual", "is required when businessType is INDIVIDUAL")
            if self.company is not None:
                raise _BranchError("company", "must be omitted when businessType is INDIVIDUAL")
        else:
            if self.company is None:
                raise _BranchError("company", "is required when businessType is COMPANY")
            if self.individual is not None:
                raise _BranchError("individual", "must be omitted when businessType is COMPANY")
        return self


class _BranchError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PayoutRequest(_Frozen):
    amount: Money
    description: FreeText | None = None

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money) -> Money:
        if value.amount_minor <= 0:
            raise ValueError("must be a positive amount of minor units")
        return value


# --- what providers report -----------------------------------------------------------------


class ProviderBankAccount(_Frozen):
    """A bank account as a provider reported it (or, where it reports nothing, as submitted)."""

    provider: Provider
    provider_account_id: str | None
    holder_name: str
    holder_type: HolderType | None
    bank_name: str | None
    last4: str
    country: str
    currency: str
    account_type: AccountType | None
    is_default: bool
    status: BankAccountStatus
    provider_status: str
    livemode: bool
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime | None = None


class BankAccount(ProviderBankAccount):
    """A bank account the gateway recorded; ``id`` is the gateway's own, never a provider id."""

    id: str
    organization_id: str
    updated_at: datetime
    status_changed_at: datetime


class PayoutAccount(_Frozen):
    provider: Provider
    provider_account_id: str
    status: PayoutAccountStatus
    provider_status: str
    transfers_enabled: bool
    business_type: BusinessType | None
    country: str | None
    livemode: bool


class PayoutVerificationOutcome(_Frozen):
    payout_account: PayoutAccount
    # The destination saved by this call; None when the account already existed.
    bank_account: ProviderBankAccount | None
    already_existed: bool


class ProviderPayout(_Frozen):
    provider: Provider
    provider_payout_id: str
    status: PayoutStatus
    provider_status: str
    amount: Money
    fee: Money | None
    net_amount: Money | None
    description: str | None
    destination_provider_account_id: str | None
    livemode: bool
    created_at: datetime


class ProviderBankAccountPage(_Frozen):
    items: tuple[ProviderBankAccount, ...]
    total: int
    offset: int
    limit: int


class ProviderCapabilities(_Frozen):
    """What a provider supports; GraphQL's ``organization`` query reports it to callers."""

    takes_kyc: bool
    has_default_accounts: bool
    has_account_types: bool
    can_read_bank_accounts: bool
    has_idempotency: bool
    # Whether a bank account's country and currency may be given per account; otherwise they
    # are the organization's, and others are refused before any call.
    account_country_from_input: bool
    # BankDetails fields the provider needs, from the input or the organization profile.
    required_bank_fields: tuple[str, ...]


# --- turning pydantic failures into the error tree -----------------------------------------

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Build ``model`` from ``data`` or raise InputValidationError with field paths.

    The submitted values never reach the messages (``hide_input_in_errors`` on every model and
    only ``loc`` and ``msg`` are read).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputValidationError(_field_issues(exc)) from None


def _field_issues(exc: ValidationError) -> list[FieldIssue]:
    # Apart from ``validated``: the validator's exceptions (``ctx["error"]``) carry tracebacks
    # through its frame, and a local there holding one would make a reference cycle.
    issues: list[FieldIssue] = []
    for error in exc.errors(include_input=False, include_url=False):
        path = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _BranchError):
            path = (*path, ctx_error.field)
        issues.append(FieldIssue(path, message))
    return issues


# --- organizations as the gateway records them ---------------------------------------------


class Organization(_Frozen):
    """A tenant: exactly one provider, its credentials and its profile."""

    id: str
    name: str
    provider: Provider
    credentials: ProviderCredentials
    profile: OrganizationProfile
    webhook_secret: SecretStr | None = None
    created_at: datetime

    def provider_context(self) -> ProviderContext:
        return ProviderContext(
            organization_id=self.id, credentials=self.credentials, profile=self.profile
        )


class ApiKey(_Frozen):
    """A gateway API key as stored: only its hash and a display prefix, never the key."""

    id: str
    organization_id: str
    prefix: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class PayoutAccountRecord(PayoutAccount):
    """The organization's payout account as the gateway recorded it."""

    id: str
    organization_id: str
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime


class Payout(ProviderPayout):
    """A payout the gateway requested and records; ``id`` is the gateway's own."""

    id: str
    organization_id: str
    destination_bank_account_id: str | None
    updated_at: datetime
    status_changed_at: datetime


class IdempotencyRecord(_Frozen):
    """The holder of one idempotency key: ``started`` until a request with it completes
    (``not_applied`` while released by attempts that each certainly applied nothing)."""

    id: str
    organization_id: str
    key: str
    operation: str
    fingerprint: str
    state: str
    attempts: int
    result: dict[str, Any] | None
    locked_until: datetime
    created_at: datetime
    expires_at: datetime
