"""Paygentic's JSON as documented (docs/providers/paygentic.md): one pydantic model per shape."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from payout_gateway.domain.values import in_utc

# In UTC, as Commet's are (commet/transformers.py): ISO 8601 without an offset is read as UTC
# rather than left naive (the store keeps only aware times, and would refuse it after Paygentic
# had created the object), and one with an offset is moved to UTC, so that a mutation's answer
# shows the time as later reads of the store (always UTC) do.
Timestamp = Annotated[datetime, AfterValidator(in_utc)]

# --- closed vocabularies (paygentic.md; the seed page lists the account ones) ---------------

ExternalAccountStatus = Literal["new", "verified", "errored"]
PayoutStatus = Literal["pending", "success", "failed", "cancelled"]
AccountHolderType = Literal["individual", "company"]
PayoutMethod = Literal["bank_transfer"]
# The doc lists these categories followed by "…": the field stays ``str`` on the wire.
ErrorCategory = Literal[
    "bad_request", "unauthorized", "forbidden", "not_found", "conflict", "validation_error"
]
ForbiddenReason = Literal["no_permission", "insufficient_scope", "not_member"]

# The ``organizationId`` a key acts for, in bodies and queries (paygentic.md "Transport" [C]).
ORGANIZATION_ID = re.compile(r"org_[a-zA-Z0-9]+")


class _Body(BaseModel):
    """A request body: exactly the documented fields, camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Response(BaseModel):
    """A response shape: read the documented fields, ignore any the provider adds later."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


# --- external bank accounts -----------------------------------------------------------------


class CreateExternalAccountBody(_Body):
    """``POST /v0/externalAccounts``: every field is required except ``metadata``."""

    organization_id: str
    country_code: str
    bank_name: str
    currency: str
    # Full numbers travel only in this body; repr=False keeps them out of any debug output.
    account_number: str = Field(repr=False)
    routing_number: str = Field(repr=False)
    account_holder_name: str
    account_holder_type: AccountHolderType
    metadata: dict[str, str] = Field(default_factory=dict)


class ExternalBankAccount(_Response):
    id: str
    object: Literal["externalBankAccount"]
    organization_id: str
    country_code: str
    bank_name: str
    currency: str
    last4: str
    account_holder_name: str
    # Typed ``str`` so that a value added later is read and surfaced, not a parse failure.
    account_holder_type: str
    status: str
    metadata: dict[str, Any] | None = None
    created_at: Timestamp
    updated_at: Timestamp


class Pagination(_Response):
    limit: int
    offset: int
    total: int


class ExternalAccountList(_Response):
    object: Literal["list"]
    data: list[ExternalBankAccount]
    pagination: Pagination


# --- payouts --------------------------------------------------------------------------------


class CreatePayoutBody(_Body):
    """``POST /v0/payouts`` (documented for Sulu, Paygentic's predecessor, with these fields)."""

    organization_id: str
    amount_in_cents: int
    currency: str
    method: PayoutMethod = "bank_transfer"
    source_id: str
    destination_id: str
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class Payout(_Response):
    id: str
    object: Literal["payout"]
    organization_id: str
    status: str
    description: str | None = None
    amount_in_cents: int
    currency: str
    method: str | None = None
    source_id: str | None = None
    destination_id: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: Timestamp
    updated_at: Timestamp | None = None
    platform_fee: int | None = None
    method_fee: int | None = None
    transaction_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    transferred_amount_in_cents: int | None = None


class PayoutList(_Response):
    object: Literal["list"]
    data: list[Payout]
    pagination: Pagination


# --- errors ---------------------------------------------------------------------------------


class ErrorBody(_Response):
    """The general error shape: ``message`` for humans, optional category, code and details."""

    message: str
    error: str | None = None
    code: str | None = None
    details: dict[str, Any] | None = None


class ValidationIssue(_Response):
    field: str
    message: str
    code: str | None = None


class ValidationErrorBody(_Response):
    """The 400 variant: ``{"error": "validation_error", "message", "errors": [...]}``."""

    error: Literal["validation_error"]
    message: str
    errors: list[ValidationIssue]


class ForbiddenErrorBody(ErrorBody):
    """A 403 may say why (``reason``) and which permissions the key lacks."""

    reason: str | None = None
    required_permissions: list[str] | None = None
