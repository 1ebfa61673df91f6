"""Pure Paygentic <-> domain translation: request bodies, status maps, parsing, error mapping."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard, TypeVar, get_args
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from payout_gateway.domain.enums import (
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    FieldIssue,
    InputValidationError,
    NotFoundError,
    PayoutGatewayError,
    ProviderAuthenticationError,
    ProviderBadResponseError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from payout_gateway.domain.models import (
    BankDetails,
    Money,
    OrganizationProfile,
    PayoutAccount,
    PayoutRequest,
    ProviderBankAccount,
    ProviderPayout,
)
from payout_gateway.providers.paygentic import wire

PROVIDER: Final = Provider.PAYGENTIC

# Paygentic has no idempotency (paygentic.md, "No idempotency support"): the gateway tags what it
# creates with these metadata keys so that a lost answer can be found again by listing.
REFERENCE_KEY: Final = "gatewayReference"
PURPOSE_KEY: Final = "gatewayPurpose"
RESERVED_METADATA_KEYS: Final = frozenset({REFERENCE_KEY, PURPOSE_KEY})
VERIFICATION_PURPOSE: Final = "payout_verification"

# The operations the adapter performs; the error mapping depends on which one failed.
Operation = Literal[
    "create_external_account",
    "get_external_account",
    "list_external_accounts",
    "create_payout",
    "get_payout",
    "list_payouts",
]
WRITE_OPERATIONS: Final[frozenset[Operation]] = frozenset(
    {"create_external_account", "create_payout"}
)

_MAX_PROVIDER_MESSAGE = 300

# --- exhaustive status maps (docs/design.md, "The unified model") ---------------------------

BANK_ACCOUNT_STATUS: Final[Mapping[wire.ExternalAccountStatus, BankAccountStatus]] = {
    "new": BankAccountStatus.PENDING,
    "verified": BankAccountStatus.ACTIVE,
    "errored": BankAccountStatus.ERRORED,
}

# Paygentic has no payout account: its state is derived from the verification destination.
PAYOUT_ACCOUNT_STATUS: Final[Mapping[wire.ExternalAccountStatus, PayoutAccountStatus]] = {
    "new": PayoutAccountStatus.PENDING_VERIFICATION,
    "verified": PayoutAccountStatus.VERIFIED,
    "errored": PayoutAccountStatus.RESTRICTED,
}

PAYOUT_STATUS: Final[Mapping[wire.PayoutStatus, PayoutStatus]] = {
    "pending": PayoutStatus.PENDING,
    "success": PayoutStatus.PAID,
    "failed": PayoutStatus.FAILED,
    "cancelled": PayoutStatus.CANCELED,
}

HOLDER_TYPE_FROM_WIRE: Final[Mapping[wire.AccountHolderType, HolderType]] = {
    "individual": HolderType.INDIVIDUAL,
    "company": HolderType.COMPANY,
}

HOLDER_TYPE_TO_WIRE: Final[Mapping[HolderType, wire.AccountHolderType]] = {
    HolderType.INDIVIDUAL: "individual",
    HolderType.COMPANY: "company",
}

HOLDER_TYPE_OF_BUSINESS: Final[Mapping[BusinessType, HolderType]] = {
    BusinessType.INDIVIDUAL: HolderType.INDIVIDUAL,
    BusinessType.COMPANY: HolderType.COMPANY,
}

_ACCOUNT_STATUSES: Final = frozenset(get_args(wire.ExternalAccountStatus))
_PAYOUT_STATUSES: Final = frozenset(get_args(wire.PayoutStatus))
_HOLDER_TYPES: Final = frozenset(get_args(wire.AccountHolderType))


def _is_account_status(raw: str) -> TypeGuard[wire.ExternalAccountStatus]:
    return raw in _ACCOUNT_STATUSES


def _is_payout_status(raw: str) -> TypeGuard[wire.PayoutStatus]:
    return raw in _PAYOUT_STATUSES


def _is_holder_type(raw: str) -> TypeGuard[wire.AccountHolderType]:
    return raw in _HOLDER_TYPES


def bank_account_status(raw: str) -> BankAccountStatus:
    """An unknown value is surfaced as UNKNOWN (never usable); the raw value is kept alongside."""
    return BANK_ACCOUNT_STATUS[raw] if _is_account_status(raw) else BankAccountStatus.UNKNOWN


def payout_account_status(raw: str) -> PayoutAccountStatus:
    return PAYOUT_ACCOUNT_STATUS[raw] if _is_account_status(raw) else PayoutAccountStatus.UNKNOWN


def payout_status(raw: str) -> PayoutStatus:
    return PAYOUT_STATUS[raw] if _is_payout_status(raw) else PayoutStatus.UNKNOWN


def holder_type(raw: str) -> HolderType | None:
    return HOLDER_TYPE_FROM_WIRE[raw] if _is_holder_type(raw) else None


# --- livemode -------------------------------------------------------------------------------


def is_livemode(base_url: str) -> bool:
    """Live unless the host names a sandbox (``api.sandbox.paygentic.io``, paygentic.md
    "Transport") or is a loopback address (the gateway's own simulator)."""
    host = (urlsplit(base_url).hostname or "").lower().rstrip(".")
    if "sandbox" in host or host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


# --- domain -> wire -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedBank:
    """The Paygentic-required bank fields, each taken from the input or the org profile."""

    country: str
    currency: str
    bank_name: str
    holder_type: HolderType
    routing_number: SecretStr


def resolve_bank(
    bank: BankDetails,
    profile: OrganizationProfile,
    *,
    metadata: Mapping[str, str] | None = None,
    fallback_holder_type: HolderType | None = None,
) -> ResolvedBank:
    """Fill what Paygentic requires from the input, else the profile; report every gap at once.

    Raises one InputValidationError naming each missing field (``("bank", "routing_number")``)
    and each reserved metadata key the caller tried to set.
    """
    country = bank.country or profile.country
    currency = bank.currency or profile.currency
    bank_name = bank.bank_name or profile.bank_name
    holder = bank.holder_type or fallback_holder_type or profile.holder_type
    routing = bank.routing_number

    issues: list[FieldIssue] = []
    for name, value, where in (
        ("country", country, "the input or the organization's profile"),
        ("currency", currency, "the input or the organization's profile"),
        ("bank_name", bank_name, "the input or the organization's profile"),
        ("holder_type", holder, "the input or the organization's profile"),
        ("routing_number", routing, "the input"),
    ):
        if not value:
            issues.append(
                FieldIssue(("bank", name), f"is required by Paygentic: give it in {where}")
            )
    named = bank.iban_country
    if named is not None and country and named != country.upper():
        # An IBAN names the account's country: Paygentic would be told another one.
        issues.append(
            FieldIssue(("bank", "country"), f"must be {named}, the IBAN's country, or left out")
            if bank.country
            else FieldIssue(
                ("bank", "account_number"),
                f"is an IBAN of {named}, not of the organization's country {country}: "
                f"give country {named}",
            )
        )
    for key in sorted(RESERVED_METADATA_KEYS.intersection(metadata or {})):
        issues.append(FieldIssue(("metadata", key), "is reserved by the gateway"))
    if issues or not (country and currency and bank_name and holder and routing):
        raise InputValidationError(issues)
    return ResolvedBank(
        country=country.upper(),
        currency=currency.upper(),
        bank_name=bank_name,
        holder_type=holder,
        routing_number=routing,
    )


def tagged_metadata(
    metadata: Mapping[str, str] | None, reference: str | None, purpose: str | None = None
) -> dict[str, str]:
    """The caller's metadata plus the gateway's reconciliation tags."""
    tagged = dict(metadata or {})
    if reference is not None:
        tagged[REFERENCE_KEY] = reference
    if purpose is not None:
        tagged[PURPOSE_KEY] = purpose
    return tagged


def external_account_body(
    organization_id: str,
    bank: BankDetails,
    resolved: ResolvedBank,
    metadata: Mapping[str, str],
) -> wire.CreateExternalAccountBody:
    """The one place the full numbers leave their ``SecretStr``. ``account_type`` is dropped:
    Paygentic has no checking/savings concept (paygentic.md, "External bank accounts")."""
    return wire.CreateExternalAccountBody(
        organization_id=organization_id,
        country_code=resolved.country,
        bank_name=resolved.bank_name,
        currency=resolved.currency,
        account_number=bank.account_number.get_secret_value(),
        routing_number=resolved.routing_number.get_secret_value(),
        account_holder_name=bank.holder_name,
        account_holder_type=HOLDER_TYPE_TO_WIRE[resolved.holder_type],
        metadata=dict(metadata),
    )


def payout_body(
    organization_id: str,
    request: PayoutRequest,
    *,
    source_id: str,
    destination_id: str,
    metadata: Mapping[str, str],
) -> wire.CreatePayoutBody:
    return wire.CreatePayoutBody(
        organization_id=organization_id,
        amount_in_cents=request.amount.amount_minor,
        currency=request.amount.currency.upper(),
        source_id=source_id,
        destination_id=destination_id,
        description=request.description,
        metadata=dict(metadata),
    )


# --- wire -> domain -------------------------------------------------------------------------


def reference_of(metadata: Mapping[str, Any] | None) -> str | None:
    value = (metadata or {}).get(REFERENCE_KEY)
    return value if isinstance(value, str) else None


def _domain_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    # Paygentic metadata is a free object; the domain keeps strings. The gateway's own tags are
    # internal bookkeeping, so callers get back exactly the metadata they sent.
    return {
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in (metadata or {}).items()
        if key not in RESERVED_METADATA_KEYS
    }


def _bad_data(what: str, exc: ValidationError, **context: Any) -> ProviderBadResponseError:
    # Without an explicit outcome the error keeps its conservative default (outcome unknown):
    # a create whose 201 body cannot be used did apply.
    fields = sorted({".".join(str(p) for p in e["loc"]) or "<root>" for e in exc.errors()})
    return ProviderBadResponseError(
        f"Paygentic sent {what} the gateway cannot use (invalid: {', '.join(fields)[:200]}).",
        provider=PROVIDER,
        **context,
    )


def bank_account_from_wire(
    account: wire.ExternalBankAccount, *, livemode: bool
) -> ProviderBankAccount:
    try:
        return ProviderBankAccount(
            provider=PROVIDER,
            provider_account_id=account.id,
            holder_name=account.account_holder_name,
            holder_type=holder_type(account.account_holder_type),
            bank_name=account.bank_name,
            # Only the last four digits may ever be kept, even if the provider sent more.
            last4=account.last4[-4:],
            country=account.country_code.upper(),
            currency=account.currency.upper(),
            account_type=None,
            is_default=False,
            status=bank_account_status(account.status),
            provider_status=account.status,
            livemode=livemode,
            metadata=_domain_metadata(account.metadata),
            created_at=account.created_at,
            updated_at=account.updated_at,
        )
    except ValidationError as exc:
        raise _bad_data("an external account", exc) from None


def payout_account_from_wire(
    account: wire.ExternalBankAccount, *, business_type: BusinessType | None, livemode: bool
) -> PayoutAccount:
    """Paygentic has no KYC or payout-account object (paygentic.md, "KYC / payout
    verification"): the verification destination's status stands for the payout account."""
    return PayoutAccount(
        provider=PROVIDER,
        provider_account_id=account.id,
        status=payout_account_status(account.status),
        provider_status=account.status,
        transfers_enabled=account.status == "verified",
        business_type=business_type,
        country=account.country_code.upper(),
        livemode=livemode,
    )


def payout_from_wire(payout: wire.Payout, *, livemode: bool) -> ProviderPayout:
    try:
        currency = payout.currency.upper()
        fees = [fee for fee in (payout.platform_fee, payout.method_fee) if fee is not None]
        return ProviderPayout(
            provider=PROVIDER,
            provider_payout_id=payout.id,
            status=payout_status(payout.status),
            provider_status=payout.status,
            amount=Money(amount_minor=payout.amount_in_cents, currency=currency),
            fee=Money(amount_minor=sum(fees), currency=currency) if fees else None,
            net_amount=(
                Money(amount_minor=payout.transferred_amount_in_cents, currency=currency)
                if payout.transferred_amount_in_cents is not None
                else None
            ),
            description=payout.description,
            destination_provider_account_id=payout.destination_id,
            livemode=livemode,
            created_at=payout.created_at,
        )
    except ValidationError as exc:
        raise _bad_data("a payout", exc) from None


# --- parsing --------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _parse(
    model: type[_M],
    what: str,
    body: bytes,
    *,
    http_status: int | None,
    request_id: str | None,
    outcome_unknown: bool,
) -> _M:
    context: dict[str, Any] = {
        "http_status": http_status,
        "request_id": request_id,
        "outcome_unknown": outcome_unknown,
    }
    try:
        data = orjson.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: an HTML page, a truncated body
        raise ProviderBadResponseError(
            f"Paygentic sent {what} that is not JSON.", provider=PROVIDER, **context
        ) from None
    if not isinstance(data, dict):
        raise ProviderBadResponseError(
            f"Paygentic sent {what} that is not a JSON object.", provider=PROVIDER, **context
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _bad_data(what, exc, **context) from None


def parse_account(
    body: bytes,
    *,
    http_status: int | None = None,
    request_id: str | None = None,
    outcome_unknown: bool = True,
) -> wire.ExternalBankAccount:
    return _parse(
        wire.ExternalBankAccount,
        "an external account",
        body,
        http_status=http_status,
        request_id=request_id,
        outcome_unknown=outcome_unknown,
    )


def parse_account_list(
    body: bytes, *, http_status: int | None = None, request_id: str | None = None
) -> wire.ExternalAccountList:
    return _parse(
        wire.ExternalAccountList,
        "an external account list",
        body,
        http_status=http_status,
        request_id=request_id,
        outcome_unknown=False,
    )


def parse_payout(
    body: bytes,
    *,
    http_status: int | None = None,
    request_id: str | None = None,
    outcome_unknown: bool = True,
) -> wire.Payout:
    return _parse(
        wire.Payout,
        "a payout",
        body,
        http_status=http_status,
        request_id=request_id,
        outcome_unknown=outcome_unknown,
    )


def parse_payout_list(
    body: bytes, *, http_status: int | None = None, request_id: str | None = None
) -> wire.PayoutList:
    return _parse(
        wire.PayoutList,
        "a payout list",
        body,
        http_status=http_status,
        request_id=request_id,
        outcome_unknown=False,
    )


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ErrorInfo:
    message: str
    provider_code: str | None
    param: str | None


def _read_error(status_code: int, body: bytes) -> _ErrorInfo | None:
    """Any documented error shape (paygentic.md, "Errors"), or None when the body is not one."""
    try:
        data = orjson.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        if data.get("error") == "validation_error" and "errors" in data:
            invalid = wire.ValidationErrorBody.model_validate(data)
            param = invalid.errors[0].field if invalid.errors else None
            return _ErrorInfo(invalid.message, invalid.error, param)
        if status_code == 403:
            forbidden = wire.ForbiddenErrorBody.model_validate(data)
            message = forbidden.message
            if forbidden.reason:
                message = f"{message} (reason: {forbidden.reason})"
            if forbidden.required_permissions:
                message = f"{message} (requires: {', '.join(forbidden.required_permissions)})"
            return _ErrorInfo(message, forbidden.code or forbidden.error, None)
        error = wire.ErrorBody.model_validate(data)
    except ValidationError:
        return None
    return _ErrorInfo(error.message, error.code or error.error, None)


def _scrub(message: str, redact: Iterable[str]) -> str:
    # A provider may echo what it was sent; the full numbers must never travel further.
    for secret in redact:
        if secret:
            message = message.replace(secret, "[redacted]")
    return message[:_MAX_PROVIDER_MESSAGE]


def error_from_response(
    status_code: int,
    body: bytes,
    request_id: str | None,
    operation: Operation,
    *,
    retry_after: float | None = None,
    redact: Iterable[str] = (),
) -> PayoutGatewayError:
    """The domain error for a non-2xx Paygentic answer.

    ``redact``: values sent in the request (account and routing numbers) that must not survive
    into the error message if the provider echoes them.
    """
    write = operation in WRITE_OPERATIONS
    info = _read_error(status_code, body)
    code = info.provider_code if info else None

    if status_code == 429:
        return ProviderRateLimitedError(
            "Paygentic is rate limiting the gateway.",
            provider=PROVIDER,
            retry_after=retry_after,
            provider_code=code,
            request_id=request_id,
        )
    if status_code >= 500:
        # No idempotency at Paygentic: a 500 on a create may have created the object.
        return ProviderUnavailableError(
            f"Paygentic failed on its side (HTTP {status_code}).",
            provider=PROVIDER,
            outcome_unknown=write,
            http_status=status_code,
            provider_code=code,
            request_id=request_id,
            retry_after=retry_after,
        )
    if not 400 <= status_code < 500 or info is None:
        return ProviderBadResponseError(
            f"Paygentic answered HTTP {status_code} with a body the gateway cannot read.",
            provider=PROVIDER,
            # A refusal (4xx) did not apply; any other unexpected status might have.
            outcome_unknown=write and not 400 <= status_code < 500,
            http_status=status_code,
            request_id=request_id,
        )
    message = _scrub(info.message, redact)
    if status_code == 404 and operation == "get_external_account":
        return NotFoundError("No such bank account.")
    if status_code == 404 and operation == "get_payout":
        return NotFoundError("No such payout.")
    if status_code in (401, 403):
        return ProviderAuthenticationError(
            f"Paygentic refused the organization's credentials: {message}",
            provider=PROVIDER,
            http_status=status_code,
            provider_code=code,
            request_id=request_id,
        )
    return ProviderRejectedError(
        f"Paygentic refused the request: {message}",
        provider=PROVIDER,
        http_status=status_code,
        provider_code=code,
        request_id=request_id,
        param=info.param,
    )
