"""Commet's payout JSON as documented (docs/providers/commet.md): bodies, data shapes, envelopes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# --- closed vocabularies (commet.md "Endpoints" and "Envelopes") ------------------------------

BankAccountStatus = Literal["active", "errored"]
PayoutAccountStatus = Literal["pending_verification", "verified", "restricted", "disabled"]
PayoutStatus = Literal["pending", "in_transit", "paid", "failed", "canceled"]
AccountType = Literal["checking", "savings"]
BusinessType = Literal["individual", "company"]
# 2026-07-24 replaced ``alreadyExists`` with this union tag.
VerificationOutcome = Literal["existing", "created"]

ErrorType = Literal[
    "validation_error",
    "authentication_error",
    "not_found_error",
    "conflict_error",
    "billing_error",
    "rate_limit_error",
    "internal_error",
    # What Commet's SDKs assume when ``type`` is absent.
    "api_error",
]
ErrorCode = Literal[
    "validation_error",
    "invalid_json",
    "unauthorized",
    "forbidden",
    "payouts_not_available_in_sandbox",
    "not_found",
    "endpoint_deprecated",
    "duplicate",
    "idempotency_key_mismatch",
    "idempotency_in_progress",
    "provider_unsupported",
    "insufficient_balance",
    "idempotency_unavailable",
    "internal_error",
    "rate_limited",
]

# The ``type`` Commet documents for each code.
ERROR_CODE_TYPE: dict[ErrorCode, ErrorType] = {
    "validation_error": "validation_error",
    "invalid_json": "validation_error",
    "unauthorized": "authentication_error",
    "forbidden": "authentication_error",
    "payouts_not_available_in_sandbox": "authentication_error",
    "not_found": "not_found_error",
    "endpoint_deprecated": "not_found_error",
    "duplicate": "conflict_error",
    "idempotency_key_mismatch": "conflict_error",
    "idempotency_in_progress": "conflict_error",
    "provider_unsupported": "conflict_error",
    "insufficient_balance": "billing_error",
    "idempotency_unavailable": "internal_error",
    "internal_error": "internal_error",
    "rate_limited": "rate_limit_error",
}


class WireBody(BaseModel):
    """A request body: camelCase keys, nothing undeclared, secrets kept out of ``repr``."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON object sent on the wire: aliases, optional fields omitted when unset."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class WireData(BaseModel):
    """A response shape: camelCase keys, unknown fields ignored (Commet adds fields over time)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )


# --- request bodies --------------------------------------------------------------------------


class AddBankAccountBody(WireBody):
    """``POST /payouts/bank-accounts``."""

    account_number: str = Field(min_length=1, repr=False)
    account_holder_name: str
    routing_number: str | None = Field(default=None, repr=False)
    account_type: AccountType | None = None
    # The seed page marks it required, the SDKs optional: always sending it satisfies both.
    set_default: bool


class VerificationBank(WireBody):
    account_number: str = Field(min_length=1, repr=False)
    account_holder_name: str
    routing_number: str | None = Field(default=None, repr=False)
    account_type: AccountType | None = None


class VerificationAddress(WireBody):
    line1: str
    line2: str | None = None
    city: str
    state: str | None = None
    postal_code: str
    country: str


class VerificationIndividual(WireBody):
    first_name: str
    last_name: str
    phone: str
    date_of_birth: str  # YYYY-MM-DD [I]
    ssn_last4: str | None = Field(default=None, repr=False)
    id_number: str | None = Field(default=None, repr=False)
    address: VerificationAddress


class VerificationRepresentative(WireBody):
    first_name: str
    last_name: str
    phone: str | None = None
    email: str | None = None


class VerificationCompany(WireBody):
    name: str
    tax_id: str = Field(repr=False)
    address: VerificationAddress
    representative: VerificationRepresentative


class VerificationBody(WireBody):
    """``POST /payouts/verification`` as of 2026-06-07 … 2026-07-11 (the full KYC body)."""

    email: str
    business_type: BusinessType
    business_url: str
    document_url: str
    bank: VerificationBank
    individual: VerificationIndividual | None = None
    company: VerificationCompany | None = None


class PayoutBody(WireBody):
    """``POST /payouts``: USD cents, at least 1000."""

    amount: int
    description: str | None = None


# --- response data ---------------------------------------------------------------------------
# Status fields are ``str``, not the Literal: an unknown value must be read and reported as
# UNKNOWN by the transformers, not turned into a parse failure.


class PayoutBankAccount(WireData):
    id: str
    provider_external_account_id: str | None = None
    holder_name: str
    last4: str
    bank_name: str | None = None
    country: str
    currency: str
    account_type: str | None = None
    is_default: bool
    status: str
    created_at: datetime
    object: Literal["payout_bank_account"] | None = None
    livemode: bool


class PayoutVerification(WireData):
    """Reads both shapes: ``alreadyExists`` (≤ 2026-07-11) and ``outcome`` (2026-07-24)."""

    provider_account_id: str
    status: str
    # Documented as false until verified [I]; a missing value must not grant transfers.
    transfers_enabled: bool = False
    already_exists: bool | None = None
    outcome: VerificationOutcome | None = None
    # The 2026-07-24 "existing" variant omits both.
    business_type: str | None = None
    country: str | None = None
    object: Literal["payout_account"] | None = None
    livemode: bool


class Payout(WireData):
    id: str
    status: str
    amount: int
    fee: int | None = None
    net_amount: int | None = None
    currency: str
    description: str | None = None
    provider_transfer_id: str | None = None
    created_at: datetime
    object: Literal["payout"] | None = None
    livemode: bool


# --- envelopes -------------------------------------------------------------------------------

D = TypeVar("D", bound=WireData)


class SuccessEnvelope(WireData, Generic[D]):
    """``{"success": true, "data": {...}}``; Commet's SDKs read a missing ``success`` as true."""

    success: Literal[True] = True
    data: D


class ErrorDetail(WireData):
    """One entry of ``details`` for ``validation_error``."""

    field: str | None = None
    message: str | None = None


class ErrorObject(WireData):
    type: str | None = None
    code: str | None = None
    message: str | None = None
    param: str | None = None
    details: list[ErrorDetail] | Any = None
    # The one snake_case key of Commet's JSON.
    doc_url: str | None = Field(default=None, validation_alias=AliasChoices("doc_url", "docUrl"))


class ErrorEnvelope(WireData):
    """``{"success": false, "error": {...}}``; newer responses may omit ``success``."""

    success: Literal[False] | None = None
    error: ErrorObject
