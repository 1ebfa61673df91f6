"""Pure Commet <-> domain transformations: bodies, status maps, envelope unwrap, error mapping."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Literal, TypeVar

import orjson
from pydantic import SecretStr, ValidationError

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    FieldIssue,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    InputValidationError,
    OperationRetiredError,
    PayoutAccountRequiredError,
    PayoutGatewayError,
    ProviderAuthenticationError,
    ProviderBadResponseError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Address,
    BankDetails,
    Money,
    OrganizationProfile,
    PayoutAccount,
    PayoutRequest,
    PayoutVerificationOutcome,
    PayoutVerificationRequest,
    ProviderBankAccount,
    ProviderPayout,
)
from payout_gateway.domain.values import canonical_country, canonical_currency, in_utc
from payout_gateway.providers.commet import wire

PROVIDER = Provider.COMMET

Operation = Literal["add_bank_account", "complete_payout_verification", "request_payout"]

# --- status maps (design.md "Canonical statuses") ---------------------------------------------

BANK_ACCOUNT_STATUS: dict[wire.BankAccountStatus, BankAccountStatus] = {
    "active": BankAccountStatus.ACTIVE,
    "errored": BankAccountStatus.ERRORED,
}
PAYOUT_ACCOUNT_STATUS: dict[wire.PayoutAccountStatus, PayoutAccountStatus] = {
    "pending_verification": PayoutAccountStatus.PENDING_VERIFICATION,
    "verified": PayoutAccountStatus.VERIFIED,
    "restricted": PayoutAccountStatus.RESTRICTED,
    "disabled": PayoutAccountStatus.DISABLED,
}
PAYOUT_STATUS: dict[wire.PayoutStatus, PayoutStatus] = {
    "pending": PayoutStatus.PENDING,
    "in_transit": PayoutStatus.IN_TRANSIT,
    "paid": PayoutStatus.PAID,
    "failed": PayoutStatus.FAILED,
    "canceled": PayoutStatus.CANCELED,
}
ACCOUNT_TYPE: dict[wire.AccountType, AccountType] = {
    "checking": AccountType.CHECKING,
    "savings": AccountType.SAVINGS,
}
BUSINESS_TYPE: dict[wire.BusinessType, BusinessType] = {
    "individual": BusinessType.INDIVIDUAL,
    "company": BusinessType.COMPANY,
}
ACCOUNT_TYPE_TO_WIRE: dict[AccountType, wire.AccountType] = {v: k for k, v in ACCOUNT_TYPE.items()}
BUSINESS_TYPE_TO_WIRE: dict[BusinessType, wire.BusinessType] = {
    v: k for k, v in BUSINESS_TYPE.items()
}

E = TypeVar("E")


def _lookup(table: Mapping[Any, E], raw: str | None, default: E) -> E:
    return default if raw is None else table.get(raw, default)


def bank_account_status(raw: str) -> BankAccountStatus:
    return _lookup(BANK_ACCOUNT_STATUS, raw, BankAccountStatus.UNKNOWN)


def payout_account_status(raw: str) -> PayoutAccountStatus:
    return _lookup(PAYOUT_ACCOUNT_STATUS, raw, PayoutAccountStatus.UNKNOWN)


def payout_status(raw: str) -> PayoutStatus:
    return _lookup(PAYOUT_STATUS, raw, PayoutStatus.UNKNOWN)


# --- domain request -> wire body ----------------------------------------------------------------

PAYOUT_CURRENCY = "USD"
# commet.md "POST /payouts": amount in USD cents, at least 1000 ($10).
MIN_PAYOUT_CENTS = 1000


def add_bank_account_body(request: AddBankAccountRequest) -> wire.AddBankAccountBody:
    bank = request.bank
    return wire.AddBankAccountBody(
        account_number=bank.account_number.get_secret_value(),
        account_holder_name=bank.holder_name,
        routing_number=_reveal(bank.routing_number),
        account_type=_account_type_to_wire(bank.account_type),
        set_default=request.set_default,
    )


def refuse_another_place(
    bank: BankDetails, profile: OrganizationProfile, *, country_from_kyc: bool
) -> None:
    """Commet takes no country or currency for a bank account: it opens it in its
    organization's, which the organization's profile mirrors (commet.md). A country or currency
    the caller asks for that differs is refused here, before anything is sent, rather than
    answered with an account in another country or currency than the one asked for.
    ``country_from_kyc``: the bank of a verification takes the payout account's country, which
    Commet derives from the KYC data, so only its currency is checked. An IBAN names its
    country too: one of another country is refused as such a country is."""
    issues: list[FieldIssue] = []
    if not country_from_kyc and bank.country is not None and bank.country != profile.country:
        issues.append(
            FieldIssue(
                ("bank", "country"),
                f"must be {profile.country} or left out: Commet adds bank accounts in the "
                "organization's country",
            )
        )
    elif not country_from_kyc and bank.iban_country not in (None, profile.country):
        issues.append(
            FieldIssue(
                ("bank", "account_number"),
                f"is an IBAN of {bank.iban_country}: Commet adds bank accounts in the "
                f"organization's country, {profile.country}",
            )
        )
    if bank.currency is not None and bank.currency != profile.currency:
        issues.append(
            FieldIssue(
                ("bank", "currency"),
                f"must be {profile.currency} or left out: Commet adds bank accounts in the "
                "organization's currency",
            )
        )
    if issues:
        raise InputValidationError(issues)


def verification_body(request: PayoutVerificationRequest) -> wire.VerificationBody:
    bank = request.bank
    individual = request.individual
    company = request.company
    return wire.VerificationBody(
        email=str(request.email),
        business_type=BUSINESS_TYPE_TO_WIRE[request.business_type],
        business_url=request.business_url,
        document_url=request.document_url,
        bank=wire.VerificationBank(
            account_number=bank.account_number.get_secret_value(),
            account_holder_name=bank.holder_name,
            routing_number=_reveal(bank.routing_number),
            account_type=_account_type_to_wire(bank.account_type),
        ),
        individual=(
            wire.VerificationIndividual(
                first_name=individual.first_name,
                last_name=individual.last_name,
                phone=individual.phone,
                date_of_birth=individual.date_of_birth.isoformat(),
                ssn_last4=_reveal(individual.ssn_last4),
                id_number=_reveal(individual.id_number),
                address=_address(individual.address),
            )
            if individual is not None
            else None
        ),
        company=(
            wire.VerificationCompany(
                name=company.name,
                tax_id=company.tax_id.get_secret_value(),
                address=_address(company.address),
                representative=wire.VerificationRepresentative(
                    first_name=company.representative.first_name,
                    last_name=company.representative.last_name,
                    phone=company.representative.phone,
                    email=(
                        str(company.representative.email)
                        if company.representative.email is not None
                        else None
                    ),
                ),
            )
            if company is not None
            else None
        ),
    )


def payout_body(request: PayoutRequest) -> wire.PayoutBody:
    """The body of ``POST /payouts``, after Commet's documented rules are checked locally (a
    refusal costs no provider call)."""
    if request.amount.currency != PAYOUT_CURRENCY:
        raise InputValidationError.single(
            ("amount", "currency"), f"Commet pays out in {PAYOUT_CURRENCY} only"
        )
    if request.amount.amount_minor < MIN_PAYOUT_CENTS:
        raise InputValidationError.single(
            ("amount",), f"must be at least {MIN_PAYOUT_CENTS} cents ($10.00) for Commet"
        )
    return wire.PayoutBody(amount=request.amount.amount_minor, description=request.description)


def _account_type_to_wire(value: AccountType | None) -> wire.AccountType | None:
    return ACCOUNT_TYPE_TO_WIRE[value] if value is not None else None


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _address(address: Address) -> wire.VerificationAddress:
    return wire.VerificationAddress(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        state=address.state,
        postal_code=address.postal_code,
        country=address.country,
    )


# --- wire response -> domain --------------------------------------------------------------------


def bank_account_from_wire(
    data: wire.PayoutBankAccount,
    *,
    holder_type: HolderType | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ProviderBankAccount:
    """Commet knows no holder type or metadata: they are taken from what was submitted."""
    return ProviderBankAccount(
        provider=PROVIDER,
        provider_account_id=data.id,
        holder_name=data.holder_name,
        holder_type=holder_type,
        bank_name=data.bank_name,
        # Only last4 may ever be kept (PCI DSS), whatever the provider sends.
        last4=data.last4[-4:],
        country=canonical_country(data.country),
        currency=canonical_currency(data.currency),
        account_type=_lookup(ACCOUNT_TYPE, data.account_type, None),
        is_default=data.is_default,
        status=bank_account_status(data.status),
        provider_status=data.status,
        livemode=data.livemode,
        metadata=dict(metadata or {}),
        created_at=in_utc(data.created_at),
    )


def payout_account_from_wire(data: wire.PayoutVerification) -> PayoutAccount:
    status = payout_account_status(data.status)
    return PayoutAccount(
        provider=PROVIDER,
        provider_account_id=data.provider_account_id,
        status=status,
        provider_status=data.status,
        # An unmapped status never yields a usable account, whatever the flag says.
        transfers_enabled=data.transfers_enabled and status is not PayoutAccountStatus.UNKNOWN,
        business_type=_lookup(BUSINESS_TYPE, data.business_type, None),
        country=canonical_country(data.country) if data.country else None,
        livemode=data.livemode,
    )


def already_existed(data: wire.PayoutVerification) -> bool:
    """``alreadyExists: true`` (≤ 2026-07-11) or ``outcome: "existing"`` (2026-07-24); a
    2026-07-11 answer without ``alreadyExists`` is a creation."""
    return data.already_exists is True or data.outcome == "existing"


def verification_outcome_from_wire(
    data: wire.PayoutVerification,
    *,
    request: PayoutVerificationRequest,
    profile: OrganizationProfile,
    now: datetime,
) -> PayoutVerificationOutcome:
    account = payout_account_from_wire(data)
    if already_existed(data):
        # Nothing was saved by this call: the submitted bank is not the account's destination.
        return PayoutVerificationOutcome(
            payout_account=account, bank_account=None, already_existed=True
        )
    bank = request.bank
    holder_type = bank.holder_type or (
        HolderType.INDIVIDUAL
        if request.business_type is BusinessType.INDIVIDUAL
        else HolderType.COMPANY
    )
    # [I] Commet returns no bank object here (commet.md "POST /payouts/verification"): the bank it
    # saved is the one submitted, first and default; it has no id of its own on the wire, and it is
    # reported ACTIVE/"active" because Commet accepted it (a rejected bank fails the whole call).
    bank_account = ProviderBankAccount(
        provider=PROVIDER,
        provider_account_id=None,
        holder_name=bank.holder_name,
        holder_type=holder_type,
        bank_name=bank.bank_name or profile.bank_name,
        last4=bank.last4,
        country=account.country or profile.country,
        currency=profile.currency,
        account_type=bank.account_type,
        is_default=True,
        status=BankAccountStatus.ACTIVE,
        provider_status="active",
        livemode=data.livemode,
        created_at=in_utc(now),
    )
    return PayoutVerificationOutcome(
        payout_account=account, bank_account=bank_account, already_existed=False
    )


def payout_from_wire(data: wire.Payout) -> ProviderPayout:
    currency = canonical_currency(data.currency)
    return ProviderPayout(
        provider=PROVIDER,
        provider_payout_id=data.id,
        status=payout_status(data.status),
        provider_status=data.status,
        amount=Money(amount_minor=data.amount, currency=currency),
        fee=Money(amount_minor=data.fee, currency=currency) if data.fee is not None else None,
        net_amount=(
            Money(amount_minor=data.net_amount, currency=currency)
            if data.net_amount is not None
            else None
        ),
        description=data.description,
        # Commet always pays out to the organization's default bank account.
        destination_provider_account_id=None,
        livemode=data.livemode,
        created_at=in_utc(data.created_at),
    )


# --- envelopes --------------------------------------------------------------------------------

W = TypeVar("W", bound=wire.WireData)
T = TypeVar("T")


def _bad_response(
    reason: str, *, status_code: int, request_id: str | None, outcome_unknown: bool = True
) -> ProviderBadResponseError:
    return ProviderBadResponseError(
        f"Commet sent a response the gateway cannot read ({reason}).",
        provider=PROVIDER,
        http_status=status_code,
        request_id=request_id,
        outcome_unknown=outcome_unknown,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except ValueError:  # orjson's JSONDecodeError, for any body that is not JSON
        return None
    return parsed if isinstance(parsed, dict) else None


@functools.cache
def _success_envelope(model: type[W]) -> type[wire.SuccessEnvelope[W]]:
    # pydantic caches parametrized generics only weakly: after a GC pass the class (and its
    # validator) would be rebuilt on the next call, which profiling showed at ~4 % of an add.
    return wire.SuccessEnvelope[model]  # type: ignore[valid-type]


def data_from_response(status_code: int, body: bytes, request_id: str | None, model: type[W]) -> W:
    """Unwrap a 2xx ``{"success": true, "data": …}`` into ``model``, or raise
    ProviderBadResponseError (a 2xx may have applied the write: the outcome is unknown)."""
    document = _json_object(body)
    if document is None:
        raise _bad_response("not a JSON object", status_code=status_code, request_id=request_id)
    if document.get("success") is False or "data" not in document:
        raise _bad_response("no success envelope", status_code=status_code, request_id=request_id)
    try:
        envelope = _success_envelope(model).model_validate(document)
    except ValidationError:
        raise _bad_response(
            f"missing or invalid fields in {model.__name__}",
            status_code=status_code,
            request_id=request_id,
        ) from None
    data: W = envelope.data
    return data


def convert_response(
    status_code: int,
    body: bytes,
    request_id: str | None,
    model: type[W],
    convert: Callable[[W], T],
) -> T:
    """:func:`data_from_response` then ``convert``; values the domain refuses (an unknown
    currency, say) are a bad response too, never a validation error leaking upwards."""
    data = data_from_response(status_code, body, request_id, model)
    try:
        return convert(data)
    except ValueError:  # pydantic's ValidationError included
        raise _bad_response(
            f"invalid values in {model.__name__}", status_code=status_code, request_id=request_id
        ) from None


# --- error body -> domain error -------------------------------------------------------------


class ErrorKind(Enum):
    """What a Commet error means to the gateway; one row per domain error it becomes."""

    REJECTED = "rejected"
    NOT_FOUND = "not_found"
    AUTHENTICATION = "authentication"
    RETIRED = "retired"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    RATE_LIMITED = "rate_limited"
    # The provider failed and may have applied the write first (a 500 mid-transaction).
    UNAVAILABLE = "unavailable"
    # The provider failed before doing anything (its idempotency store was down).
    UNAVAILABLE_NOT_APPLIED = "unavailable_not_applied"


ERROR_CODES: dict[wire.ErrorCode, ErrorKind] = {
    "validation_error": ErrorKind.REJECTED,
    "invalid_json": ErrorKind.REJECTED,
    "unauthorized": ErrorKind.AUTHENTICATION,
    "forbidden": ErrorKind.AUTHENTICATION,
    # Payouts are live-only (commet.md "Transport"): a sandbox key is the wrong credential.
    "payouts_not_available_in_sandbox": ErrorKind.AUTHENTICATION,
    "not_found": ErrorKind.NOT_FOUND,
    "endpoint_deprecated": ErrorKind.RETIRED,
    "duplicate": ErrorKind.REJECTED,
    "idempotency_key_mismatch": ErrorKind.IDEMPOTENCY_CONFLICT,
    "idempotency_in_progress": ErrorKind.IDEMPOTENCY_IN_PROGRESS,
    "provider_unsupported": ErrorKind.REJECTED,
    "insufficient_balance": ErrorKind.REJECTED,
    "idempotency_unavailable": ErrorKind.UNAVAILABLE_NOT_APPLIED,
    "internal_error": ErrorKind.UNAVAILABLE,
    "rate_limited": ErrorKind.RATE_LIMITED,
}

# For codes Commet adds later; None lets the HTTP status decide.
ERROR_TYPES: dict[wire.ErrorType, ErrorKind | None] = {
    "validation_error": ErrorKind.REJECTED,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "not_found_error": ErrorKind.REJECTED,
    "conflict_error": ErrorKind.REJECTED,
    "billing_error": ErrorKind.REJECTED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "internal_error": ErrorKind.UNAVAILABLE,
    "api_error": None,
}


def kind_for_status(status_code: int) -> ErrorKind | None:
    """The last resort: the HTTP status class. None: not an error status at all."""
    if status_code == 429:
        return ErrorKind.RATE_LIMITED
    if status_code in (401, 403):
        return ErrorKind.AUTHENTICATION
    if 400 <= status_code < 500:
        return ErrorKind.REJECTED
    if status_code >= 500:
        return ErrorKind.UNAVAILABLE
    return None


def error_kind(code: str | None, type_: str | None, status_code: int) -> ErrorKind | None:
    """Code first, then type, then HTTP status."""
    by_code = _lookup(ERROR_CODES, code, None)
    if by_code is not None:
        return by_code
    by_type = _lookup(ERROR_TYPES, type_, None)
    if by_type is not None:
        return by_type
    return kind_for_status(status_code)


# Commet's messages may quote what was submitted; account, routing and tax numbers must never
# travel on into responses or logs (hardening.md "PII").
# The gateway sends numbers compact (separators stripped), so an echo is one run of digits.
_NUMBER_LIKE = re.compile(r"[0-9]{5,}|[A-Za-z]{2}[0-9]{2}[A-Za-z0-9]{8,}")
_MAX_MESSAGE = 300


def scrub_message(message: str) -> str:
    """A provider message safe to show: long digit runs and IBAN-like tokens redacted, capped."""
    cleaned = _NUMBER_LIKE.sub("[redacted]", message)
    return cleaned if len(cleaned) <= _MAX_MESSAGE else cleaned[: _MAX_MESSAGE - 1] + "…"


def _param(error: wire.ErrorObject) -> str | None:
    if error.param:
        return error.param
    if isinstance(error.details, list):
        for detail in error.details:
            if isinstance(detail, wire.ErrorDetail) and detail.field:
                return detail.field
    return None


def _error_object(body: bytes) -> wire.ErrorObject | None:
    document = _json_object(body)
    if document is None:
        return None
    source = document.get("error")
    # Commet's SDKs also read a flat ``{"type", "code", …}`` object.
    if not isinstance(source, dict):
        source = document if ("code" in document or "type" in document) else None
    if source is None:
        return None
    try:
        return wire.ErrorObject.model_validate(source)
    except ValidationError:
        return None


# The operations Commet refuses with ``not_found`` until payout verification made the account.
_NEED_A_PAYOUT_ACCOUNT: frozenset[Operation] = frozenset({"add_bank_account", "request_payout"})


def error_from_response(
    status_code: int,
    body: bytes,
    request_id: str | None,
    operation: Operation,
    *,
    retry_after: float | None = None,
) -> PayoutGatewayError:
    """The one dispatcher from a non-2xx Commet answer to a domain error."""
    error = _error_object(body)
    if error is None:
        kind = kind_for_status(status_code)
        if kind is ErrorKind.UNAVAILABLE:
            return ProviderUnavailableError(
                f"Commet failed with HTTP {status_code}.",
                provider=PROVIDER,
                outcome_unknown=True,
                http_status=status_code,
                request_id=request_id,
                retry_after=retry_after,
            )
        if kind is ErrorKind.RATE_LIMITED:
            return ProviderRateLimitedError(
                "Commet is rate limiting the gateway.",
                provider=PROVIDER,
                retry_after=retry_after,
                http_status=status_code,
                request_id=request_id,
            )
        # A 4xx refuses before doing anything, even when its body is unreadable (a proxy page).
        return _bad_response(
            f"HTTP {status_code} without a Commet error body",
            status_code=status_code,
            request_id=request_id,
            outcome_unknown=kind is None,
        )

    code = error.code
    kind = error_kind(code, error.type, status_code)
    message = scrub_message(error.message) if error.message else None
    if kind is None:
        return _bad_response(
            f"an error body with HTTP {status_code}", status_code=status_code, request_id=request_id
        )
    if kind is ErrorKind.NOT_FOUND and operation in _NEED_A_PAYOUT_ACCOUNT:
        # [I] 404 not_found: the organization has no payout account yet, on adding a bank
        # account and on requesting a payout alike (the sandbox's reading, its app.py choice 13).
        return PayoutAccountRequiredError()
    if kind is ErrorKind.IDEMPOTENCY_CONFLICT:
        return IdempotencyConflictError(
            "Commet refused the idempotency key: it was used with a different request."
        )
    if kind is ErrorKind.IDEMPOTENCY_IN_PROGRESS:
        return IdempotencyInProgressError(
            "Commet is still processing a request with this idempotency key; retry later."
        )
    if kind is ErrorKind.RATE_LIMITED:
        return ProviderRateLimitedError(
            message or "Commet is rate limiting the gateway.",
            provider=PROVIDER,
            retry_after=retry_after,
            http_status=status_code,
            provider_code=code,
            request_id=request_id,
        )
    if kind in (ErrorKind.UNAVAILABLE, ErrorKind.UNAVAILABLE_NOT_APPLIED):
        return ProviderUnavailableError(
            message or f"Commet failed with HTTP {status_code}.",
            provider=PROVIDER,
            outcome_unknown=kind is ErrorKind.UNAVAILABLE,
            http_status=status_code,
            provider_code=code,
            request_id=request_id,
            retry_after=retry_after,
        )
    rejected: type[ProviderRejectedError] = ProviderRejectedError
    if kind is ErrorKind.AUTHENTICATION:
        rejected = ProviderAuthenticationError
        # Commet's own text ("Invalid API key.") reads, to a gateway caller, as if their gateway
        # key were wrong: it is the organization's Commet credential, which they cannot fix.
        message = (
            f"Commet refused the organization's credentials: "
            f"{message or code or error.type or status_code}"
        )
    elif kind is ErrorKind.RETIRED:
        rejected = OperationRetiredError
        message = _retired_message(operation)
    elif code == "insufficient_balance":
        # Its message quotes the amounts, which scrub_message redacts as possible account
        # numbers ("Requested [redacted] but only [redacted] is available."): say it plainly.
        message = "Commet refused the payout: it is more than the balance available for payouts."
    return rejected(
        message or f"Commet refused the request ({code or error.type or status_code}).",
        provider=PROVIDER,
        http_status=status_code,
        provider_code=code,
        request_id=request_id,
        doc_url=error.doc_url,
        param=_param(error),
    )


def _retired_message(operation: Operation) -> str:
    if operation == "complete_payout_verification":
        # From API 2026-08-27 the verification endpoint answers 410 (commet.md "API versions").
        return (
            "Commet no longer accepts payout verification through its API: "
            "finish KYC in Commet's dashboard."
        )
    return "Commet retired this operation for the API version in use."
