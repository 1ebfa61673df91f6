"""Paygentic's JSON shapes as the sandbox speaks them: request bodies, resources, lists, errors."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from stdnum import iban

AccountStatus = Literal["new", "verified", "errored"]
HolderType = Literal["individual", "company"]
PayoutStatus = Literal["pending", "success", "failed", "cancelled"]
PayoutMethod = Literal["bank_transfer"]

ACCOUNT_STATUSES: tuple[AccountStatus, ...] = ("new", "verified", "errored")
PAYOUT_STATUSES: tuple[PayoutStatus, ...] = ("pending", "success", "failed", "cancelled")

ORGANIZATION_ID_PATTERN = r"^org_[a-zA-Z0-9]+$"

# [0-9] rather than \d: \d and str.isdigit() accept non-ASCII digits such as "١٢٣".
_ASCII_DIGITS = re.compile(r"[0-9]+")
_ROUTING_NUMBER = re.compile(r"[0-9]{9}")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def _country_code(value: str) -> str:
    code = value.upper()
    if len(code) != 2 or not code.isascii() or pycountry.countries.get(alpha_2=code) is None:
        raise PydanticCustomError(
            "invalid_country_code", "Must be an ISO 3166-1 alpha-2 country code"
        )
    return code


def _currency_code(value: str) -> str:
    code = value.upper()
    if len(code) != 3 or not code.isascii() or pycountry.currencies.get(alpha_3=code) is None:
        raise PydanticCustomError("invalid_currency", "Must be an ISO 4217 currency code")
    return code


def _account_number(value: str) -> str:
    # Messages never repeat the value: error bodies travel to the gateway's logs.
    if _ASCII_DIGITS.fullmatch(value) is not None and 4 <= len(value) <= 17:
        return value
    if _IBAN_SHAPE.fullmatch(value) is not None and iban.is_valid(value):
        return value
    raise PydanticCustomError(
        "invalid_account_number", "Must be 4 to 17 ASCII digits (0-9), or a valid IBAN"
    )


def _routing_number(value: str) -> str:
    if _ROUTING_NUMBER.fullmatch(value) is None:
        raise PydanticCustomError("invalid_routing_number", "Must be exactly 9 ASCII digits (0-9)")
    return value


OrganizationId = Annotated[str, StringConstraints(pattern=ORGANIZATION_ID_PATTERN)]
CountryCode = Annotated[str, AfterValidator(_country_code)]
CurrencyCode = Annotated[str, AfterValidator(_currency_code)]
AccountNumber = Annotated[str, AfterValidator(_account_number)]
RoutingNumber = Annotated[str, AfterValidator(_routing_number)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=1000)]
Metadata = dict[str, Any]


class _Request(BaseModel):
    # Strict: JSON "100" is not the integer 100, and a misspelt field is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True)


class ExternalAccountCreate(_Request):
    organizationId: OrganizationId
    countryCode: CountryCode
    bankName: Text
    currency: CurrencyCode
    accountNumber: AccountNumber = Field(repr=False)
    routingNumber: RoutingNumber = Field(repr=False)
    accountHolderName: Text
    accountHolderType: HolderType
    metadata: Metadata | None = None


IMMUTABLE_ACCOUNT_FIELDS = frozenset(
    {
        "id",
        "object",
        "organizationId",
        "countryCode",
        "bankName",
        "currency",
        "accountNumber",
        "routingNumber",
        "last4",
        "createdAt",
        "updatedAt",
    }
)


class ExternalAccountUpdate(BaseModel):
    """PATCH body. Extra keys are admitted here only so the route can name immutable ones."""

    model_config = ConfigDict(
        extra="allow", strict=True, json_schema_extra={"additionalProperties": False}
    )

    accountHolderName: Text | None = None
    accountHolderType: HolderType | None = None
    status: AccountStatus | None = None
    metadata: Metadata | None = None


class PayoutCreate(_Request):
    organizationId: OrganizationId
    amountInCents: int = Field(ge=1)
    currency: CurrencyCode
    method: PayoutMethod
    sourceId: Text
    destinationId: Text
    description: Description | None = None
    metadata: Metadata | None = None


class ExternalBankAccount(BaseModel):
    id: str
    object: Literal["externalBankAccount"] = "externalBankAccount"
    organizationId: str
    countryCode: str
    bankName: str
    currency: str
    last4: str
    accountHolderName: str
    accountHolderType: HolderType
    status: AccountStatus
    metadata: Metadata
    createdAt: datetime
    updatedAt: datetime


class Payout(BaseModel):
    id: str
    object: Literal["payout"] = "payout"
    organizationId: str
    status: PayoutStatus
    description: str | None
    amountInCents: int
    currency: str
    method: PayoutMethod = "bank_transfer"
    sourceId: str
    destinationId: str
    metadata: Metadata
    createdAt: datetime
    updatedAt: datetime
    platformFee: int
    methodFee: int
    transactionId: str | None
    failureCode: str | None
    failureMessage: str | None
    transferredAmountInCents: int | None


class Pagination(BaseModel):
    limit: int
    offset: int
    total: int


class ExternalBankAccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ExternalBankAccount]
    pagination: Pagination


class PayoutList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Payout]
    pagination: Pagination


class ErrorBody(BaseModel):
    message: str
    error: str | None = None
    code: str | None = None
    details: dict[str, Any] | None = None


class ForbiddenErrorBody(ErrorBody):
    reason: Literal["no_permission", "insufficient_scope", "not_member"] | None = None
    requiredPermissions: list[str] | None = None


class FieldError(BaseModel):
    field: str
    message: str
    code: str | None = None


class ValidationErrorBody(BaseModel):
    error: Literal["validation_error"] = "validation_error"
    message: str
    errors: list[FieldError]


# ---- sandbox-only control shapes (not part of Paygentic's API) ----


class AccountStatusChange(_Request):
    status: AccountStatus


class PayoutStatusChange(_Request):
    status: Literal["success", "failed", "cancelled"]
    failureCode: Text | None = None
    failureMessage: Text | None = None


FaultKind = Literal["status", "latency", "malformed", "unknown_status", "apply_then_fail"]


class FaultSpec(_Request):
    operation: str | None = Field(
        default=None, description='e.g. "POST /v0/externalAccounts"; omitted = any API operation'
    )
    kind: FaultKind
    status: int = Field(default=500, ge=400, le=599)
    latencyMs: int | None = Field(default=None, ge=0, le=120_000)
    count: int = Field(default=1, ge=1, le=10_000)
    retryAfterSeconds: int = Field(default=1, ge=0, le=3600)
    unknownStatus: Text = "under_review"


class Fault(FaultSpec):
    id: str
    remaining: int


class FaultList(BaseModel):
    data: list[Fault]


class RequestCounts(BaseModel):
    counts: dict[str, int]
    total: int
