"""Commet's JSON as documented: request and response models (camelCase), parsing and rendering."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from payout_gateway.domain.values import public_https_url
from payout_gateway.sandbox.commet.errors import RequestRejected, validation_error
from payout_gateway.sandbox.commet.state import (
    BankAccountRecord,
    Fault,
    Organization,
    PayoutAccountRecord,
    PayoutRecord,
    iso8601,
)

# --- value validators (messages never repeat the submitted value) --------------------------

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_FOUR_DIGITS = re.compile(r"[0-9]{4}")


def _e164(value: str) -> str:
    if _E164.fullmatch(value) is None:
        raise ValueError("must be a phone number in E.164 format, e.g. +14155550123")
    return value


def _iso_date(value: str) -> str:
    try:
        if _ISO_DATE.fullmatch(value) is None:
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date in the form YYYY-MM-DD") from None
    return value


def _country(value: str) -> str:
    if _COUNTRY.fullmatch(value) is None:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code in upper case, e.g. US")
    return value


def _four_digits(value: str) -> str:
    if _FOUR_DIGITS.fullmatch(value) is None:
        raise ValueError("must be exactly 4 digits")
    return value


def _uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or " " in value:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _integral(value: object) -> object:
    # JSON has one number type: 1000.0 is the integer 1000 to Commet's JavaScript validators.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, StringConstraints(min_length=1)]
Phone = Annotated[str, AfterValidator(_e164)]
IsoDate = Annotated[str, AfterValidator(_iso_date)]
Country = Annotated[str, AfterValidator(_country)]
Uri = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_uri)]
PublicHttpsUrl = Annotated[
    str, StringConstraints(max_length=2048), AfterValidator(public_https_url)
]


class WireModel(BaseModel):
    # strict: JSON's types as JavaScript validators see them ("1000" is not a number);
    # unknown keys are ignored rather than refused.
    model_config = ConfigDict(
        alias_generator=to_camel,
        strict=True,
        extra="ignore",
        hide_input_in_errors=True,
    )

    @classmethod
    def cross_field_issues(cls, raw: dict[str, Any]) -> list[tuple[str, str]]:
        """Rules spanning fields, reported together with the per-field ones."""
        return []


# --- requests ------------------------------------------------------------------------------


class PayoutBankParams(WireModel):
    account_number: Text
    account_holder_name: Text
    routing_number: str | None = None
    account_type: Literal["checking", "savings"] | None = None


class AddPayoutBankAccountParams(PayoutBankParams):
    # The seed page marks setDefault required; SDKs treat it as optional (false): accept both.
    set_default: bool | None = False


class Address(WireModel):
    line1: Text
    line2: str | None = None
    city: Text
    state: str | None = None
    postal_code: Text
    country: Country


class IndividualParams(WireModel):
    first_name: Text
    last_name: Text
    phone: Phone
    date_of_birth: IsoDate
    ssn_last4: Annotated[str, AfterValidator(_four_digits)] | None = None
    id_number: str | None = None
    address: Address


class CompanyRepresentative(WireModel):
    first_name: Text
    last_name: Text
    phone: Phone | None = None
    email: EmailStr | None = None


class CompanyParams(WireModel):
    name: Text
    tax_id: Text
    address: Address
    representative: CompanyRepresentative


class CompletePayoutVerificationParams(WireModel):
    email: EmailStr
    business_type: Literal["individual", "company"]
    business_url: Uri
    document_url: PublicHttpsUrl
    bank: PayoutBankParams
    individual: IndividualParams | None = None
    company: CompanyParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _ignore_other_branch(cls, data: Any) -> Any:
        # Only the branch named by businessType is read; the other one is ignored, not judged.
        if isinstance(data, dict):
            business_type = data.get("businessType")
            unused = {"individual": "company", "company": "individual"}.get(str(business_type))
            if unused is not None:
                return {k: v for k, v in data.items() if k != unused}
        return data

    @classmethod
    def cross_field_issues(cls, raw: dict[str, Any]) -> list[tuple[str, str]]:
        business_type = raw.get("businessType")
        if business_type in ("individual", "company") and raw.get(business_type) is None:
            return [(business_type, f"Required when businessType is {business_type}")]
        return []


class RequestPayoutParams(WireModel):
    amount: Annotated[int, BeforeValidator(_integral), Field(ge=1000)]
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


# --- responses -----------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PayoutBankAccount(_Out):
    id: str
    provider_external_account_id: str | None
    holder_name: str
    last4: str
    bank_name: str | None
    country: str
    currency: str
    account_type: Literal["checking", "savings"] | None
    is_default: bool
    status: Literal["active", "errored"]
    created_at: str
    object: Literal["payout_bank_account"] = "payout_bank_account"
    livemode: bool


class PayoutVerification(_Out):
    """Versions 2026-06-07 to 2026-07-11; ``alreadyExists`` is sent only when true."""

    provider_account_id: str
    status: Literal["pending_verification", "verified", "restricted", "disabled"]
    transfers_enabled: bool
    already_exists: bool | None = None
    business_type: Literal["individual", "company"]
    country: str | None
    object: Literal["payout_account"] = "payout_account"
    livemode: bool


class PayoutVerificationExisting(_Out):
    """Version 2026-07-24, when the organization already had a payout account."""

    provider_account_id: str
    status: Literal["pending_verification", "verified", "restricted", "disabled"]
    transfers_enabled: bool
    outcome: Literal["existing"] = "existing"
    object: Literal["payout_account"] = "payout_account"
    livemode: bool


class PayoutVerificationCreated(_Out):
    """Version 2026-07-24, when this call provisioned the payout account."""

    provider_account_id: str
    status: Literal["pending_verification", "verified", "restricted", "disabled"]
    transfers_enabled: bool
    outcome: Literal["created"] = "created"
    business_type: Literal["individual", "company"]
    country: str
    object: Literal["payout_account"] = "payout_account"
    livemode: bool


class Payout(_Out):
    id: str
    status: Literal["pending", "in_transit", "paid", "failed", "canceled"]
    amount: int
    fee: int
    net_amount: int
    currency: str
    description: str | None
    provider_transfer_id: str | None
    created_at: str
    object: Literal["payout"] = "payout"
    livemode: bool


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorObject(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    details: list[ErrorDetail] | None
    doc_url: str


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorObject


# --- control-route bodies and answers (sandbox only) ---------------------------------------


class PayoutAccountStatusControl(WireModel):
    status: Literal["pending_verification", "verified", "restricted", "disabled"]


class BankAccountStatusControl(WireModel):
    status: Literal["active", "errored"]


class BalanceControl(WireModel):
    available_amount: Annotated[int, BeforeValidator(_integral), Field(ge=0)]


class PayoutStatusControl(WireModel):
    status: Literal["in_transit", "paid", "failed", "canceled"]
    failure_code: str | None = None
    failure_message: str | None = None


class WebhookEndpointControl(WireModel):
    """Where the organization's events go; no ``secret``: the sandbox makes one up."""

    url: Uri
    secret: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


class OrganizationControl(WireModel):
    """Omitted fields stay unchanged; ``versionPin: null`` removes the pin."""

    country: Country | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")] | None = None
    version_pin: IsoDate | None = None


class FaultControl(WireModel):
    operation: str | None = None
    kind: Literal["status", "latency", "malformed", "unknown_status"]
    status: Annotated[int, Field(ge=400, le=599)] = 500
    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 300
    count: Annotated[int, Field(ge=1, le=1_000)] = 1
    applied: bool | None = None
    code: str | None = None
    retry_after_seconds: Annotated[int, Field(ge=0, le=3_600)] = 1
    unknown_status: Text = "under_review"


class FaultOut(_Out):
    operation: str | None
    kind: str
    remaining: int
    status: int
    latency_ms: int
    applied: bool
    code: str | None
    retry_after_seconds: int
    unknown_status: str


class PayoutAccountOut(_Out):
    provider_account_id: str
    status: str
    transfers_enabled: bool
    business_type: str
    country: str
    livemode: bool
    created_at: str
    status_changed_at: str


class OrganizationOut(_Out):
    id: str
    livemode: bool
    country: str
    currency: str
    version_pin: str | None
    available_amount: int
    payout_account: PayoutAccountOut | None
    bank_accounts: list[PayoutBankAccount]
    payouts: list[Payout]
    faults: list[FaultOut]


class WebhookEndpointOut(_Out):
    organization_id: str
    url: str | None
    secret: str | None


class WebhookDeliveryOut(_Out):
    event_id: str
    event: str
    attempt: int
    status_code: int | None
    error: str | None
    delivered: bool
    at: str


class WebhookEndpointStateOut(WebhookEndpointOut):
    deliveries: list[WebhookDeliveryOut]


class BalanceOut(_Out):
    available_amount: int
    currency: str


class RequestCountsOut(_Out):
    total: int
    counts: dict[str, int]


# --- parsing -------------------------------------------------------------------------------

M = TypeVar("M", bound=WireModel)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RequestRejected("invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise validation_error([("body", "must be a JSON object")])
    return value


def _field_path(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validate(model: type[M], raw: dict[str, Any]) -> M:
    """``model`` from ``raw``, or a ``validation_error`` listing every invalid field by the
    (camelCase) path the client sent; messages come from ``loc``/``msg`` only, never the input."""
    issues = list(model.cross_field_issues(raw))
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False, include_context=False):
            message = error["msg"].removeprefix("Value error, ")
            issues.append((_field_path(tuple(error["loc"])), message))
        raise validation_error(issues) from None
    if issues:
        raise validation_error(issues)
    return parsed


# --- rendering -----------------------------------------------------------------------------


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def success(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def bank_account_out(bank: BankAccountRecord) -> PayoutBankAccount:
    return PayoutBankAccount(
        id=bank.id,
        provider_external_account_id=bank.provider_external_account_id,
        holder_name=bank.holder_name,
        last4=bank.last4,
        bank_name=bank.bank_name,
        country=bank.country,
        currency=bank.currency,
        account_type=bank.account_type,
        is_default=bank.is_default,
        status=bank.status,
        created_at=iso8601(bank.created_at),
        livemode=bank.livemode,
    )


def payout_out(payout: PayoutRecord) -> Payout:
    return Payout(
        id=payout.id,
        status=payout.status,
        amount=payout.amount,
        fee=payout.fee,
        net_amount=payout.net_amount,
        currency=payout.currency,
        description=payout.description,
        provider_transfer_id=payout.provider_transfer_id,
        created_at=iso8601(payout.created_at),
        livemode=payout.livemode,
    )


def verification_out(
    account: PayoutAccountRecord, *, created: bool, outcome_union: bool
) -> dict[str, Any]:
    common = {
        "provider_account_id": account.id,
        "status": account.status,
        "transfers_enabled": account.transfers_enabled,
        "livemode": account.livemode,
    }
    if outcome_union:
        model: BaseModel
        if created:
            model = PayoutVerificationCreated(
                **common, business_type=account.business_type, country=account.country
            )
        else:
            model = PayoutVerificationExisting(**common)
        return model.model_dump(by_alias=True)
    legacy = PayoutVerification(
        **common,
        already_exists=None if created else True,
        business_type=account.business_type,
        country=account.country,
    )
    data = legacy.model_dump(by_alias=True)
    if data["alreadyExists"] is None:
        # Optional in the contract: a fresh account is answered without the flag.
        del data["alreadyExists"]
    return data


def fault_out(fault: Fault) -> FaultOut:
    return FaultOut(
        operation=fault.operation,
        kind=fault.kind,
        remaining=fault.remaining,
        status=fault.status,
        latency_ms=fault.latency_ms,
        applied=fault.applied,
        code=fault.code,
        retry_after_seconds=fault.retry_after_seconds,
        unknown_status=fault.unknown_status,
    )


def organization_out(org: Organization) -> OrganizationOut:
    account = org.payout_account
    return OrganizationOut(
        id=org.id,
        livemode=org.livemode,
        country=org.country,
        currency=org.currency,
        version_pin=org.version_pin,
        available_amount=org.available_amount,
        payout_account=(
            PayoutAccountOut(
                provider_account_id=account.id,
                status=account.status,
                transfers_enabled=account.transfers_enabled,
                business_type=account.business_type,
                country=account.country,
                livemode=account.livemode,
                created_at=iso8601(account.created_at),
                status_changed_at=iso8601(account.status_changed_at),
            )
            if account is not None
            else None
        ),
        bank_accounts=[bank_account_out(bank) for bank in org.bank_accounts.values()],
        payouts=[payout_out(payout) for payout in org.payouts.values()],
        faults=[fault_out(fault) for fault in org.faults],
    )
