"""Table tests for the pure Paygentic transformers: status maps, parsing and error mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import (
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    InputValidationError,
    NotFoundError,
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
    PayoutRequest,
)
from payout_gateway.providers.paygentic import transformers as tf
from payout_gateway.providers.paygentic import wire

ACCOUNT_NUMBER = "987654321012"
ROUTING_NUMBER = "021000021"


def account_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "eba_123",
        "object": "externalBankAccount",
        "organizationId": "org_abc",
        "countryCode": "us",
        "bankName": "Chase",
        "currency": "usd",
        "last4": "1012",
        "accountHolderName": "Ada Lovelace",
        "accountHolderType": "individual",
        "status": "new",
        "metadata": {"team": "payments", "gatewayReference": "ref-1"},
        "createdAt": "2024-01-02T03:04:05Z",
        "updatedAt": "2024-01-02T03:04:06Z",
    }
    data.update(overrides)
    return data


def payout_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "po_1",
        "object": "payout",
        "organizationId": "org_abc",
        "status": "pending",
        "description": "April",
        "amountInCents": 1500,
        "currency": "usd",
        "method": "bank_transfer",
        "sourceId": "src_1",
        "destinationId": "eba_123",
        "metadata": {},
        "createdAt": "2024-01-02T03:04:05Z",
        "updatedAt": "2024-01-02T03:04:05Z",
    }
    data.update(overrides)
    return data


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


# --- status maps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("new", BankAccountStatus.PENDING),
        ("verified", BankAccountStatus.ACTIVE),
        ("errored", BankAccountStatus.ERRORED),
    ],
)
def test_external_account_status_maps_to_bank_account_status(
    raw: str, expected: BankAccountStatus
) -> None:
    assert tf.bank_account_status(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("new", PayoutAccountStatus.PENDING_VERIFICATION),
        ("verified", PayoutAccountStatus.VERIFIED),
        ("errored", PayoutAccountStatus.RESTRICTED),
    ],
)
def test_external_account_status_derives_payout_account_status(
    raw: str, expected: PayoutAccountStatus
) -> None:
    assert tf.payout_account_status(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pending", PayoutStatus.PENDING),
        ("success", PayoutStatus.PAID),
        ("failed", PayoutStatus.FAILED),
        ("cancelled", PayoutStatus.CANCELED),
    ],
)
def test_payout_status_maps(raw: str, expected: PayoutStatus) -> None:
    assert tf.payout_status(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("individual", HolderType.INDIVIDUAL), ("company", HolderType.COMPANY), ("trust", None)],
)
def test_holder_type_maps(raw: str, expected: HolderType | None) -> None:
    assert tf.holder_type(raw) is expected


def test_every_external_account_status_is_mapped_to_a_known_state() -> None:
    values = set(get_args(wire.ExternalAccountStatus))
    assert set(tf.BANK_ACCOUNT_STATUS) == values
    assert set(tf.PAYOUT_ACCOUNT_STATUS) == values
    for value in values:
        assert tf.bank_account_status(value) is not BankAccountStatus.UNKNOWN
        assert tf.payout_account_status(value) is not PayoutAccountStatus.UNKNOWN


def test_every_payout_status_is_mapped_to_a_known_state() -> None:
    values = set(get_args(wire.PayoutStatus))
    assert set(tf.PAYOUT_STATUS) == values
    for value in values:
        assert tf.payout_status(value) is not PayoutStatus.UNKNOWN


def test_every_holder_type_maps_both_ways() -> None:
    assert set(tf.HOLDER_TYPE_FROM_WIRE) == set(get_args(wire.AccountHolderType))
    assert set(tf.HOLDER_TYPE_TO_WIRE) == set(HolderType)
    assert set(tf.HOLDER_TYPE_OF_BUSINESS) == set(BusinessType)
    for holder, raw in tf.HOLDER_TYPE_TO_WIRE.items():
        assert tf.HOLDER_TYPE_FROM_WIRE[raw] is holder


def test_only_verified_is_usable() -> None:
    usable = {v for v in get_args(wire.ExternalAccountStatus) if tf.bank_account_status(v).usable}
    assert usable == {"verified"}
    usable = {v for v in get_args(wire.ExternalAccountStatus) if tf.payout_account_status(v).usable}
    assert usable == {"verified"}


@pytest.mark.parametrize("raw", ["closed", "", "VERIFIED", "Verified", "active", "success"])
def test_unknown_account_status_is_unknown_and_never_usable(raw: str) -> None:
    assert tf.bank_account_status(raw) is BankAccountStatus.UNKNOWN
    assert not tf.bank_account_status(raw).usable
    assert tf.payout_account_status(raw) is PayoutAccountStatus.UNKNOWN
    assert not tf.payout_account_status(raw).usable


@pytest.mark.parametrize("raw", ["paid", "", "SUCCESS", "in_transit"])
def test_unknown_payout_status_is_unknown(raw: str) -> None:
    assert tf.payout_status(raw) is PayoutStatus.UNKNOWN


def test_unknown_status_is_read_and_kept_raw() -> None:
    account = tf.parse_account(encode(account_json(status="suspended")))
    domain = tf.bank_account_from_wire(account, livemode=True)
    assert domain.status is BankAccountStatus.UNKNOWN
    assert domain.provider_status == "suspended"
    derived = tf.payout_account_from_wire(account, business_type=None, livemode=True)
    assert derived.status is PayoutAccountStatus.UNKNOWN
    assert not derived.transfers_enabled


# --- wire -> domain -------------------------------------------------------------------------


def test_bank_account_from_wire_uppercases_codes_and_hides_gateway_tags() -> None:
    account = tf.parse_account(encode(account_json(status="verified", extraField={"x": 1})))
    domain = tf.bank_account_from_wire(account, livemode=False)
    assert domain.provider is Provider.PAYGENTIC
    assert domain.provider_account_id == "eba_123"
    assert (domain.country, domain.currency) == ("US", "USD")
    assert domain.status is BankAccountStatus.ACTIVE
    assert domain.holder_type is HolderType.INDIVIDUAL
    assert domain.account_type is None
    assert domain.is_default is False
    assert domain.livemode is False
    assert domain.metadata == {"team": "payments"}
    assert domain.last4 == "1012"


def test_bank_account_keeps_only_four_digits_if_the_provider_sends_more() -> None:
    account = tf.parse_account(encode(account_json(last4=ACCOUNT_NUMBER)))
    assert tf.bank_account_from_wire(account, livemode=True).last4 == ACCOUNT_NUMBER[-4:]


def test_non_string_metadata_values_are_kept_as_json() -> None:
    account = tf.parse_account(encode(account_json(metadata={"n": 3, "ok": True})))
    assert tf.bank_account_from_wire(account, livemode=True).metadata == {"n": "3", "ok": "true"}


def test_timestamps_are_read_in_utc() -> None:
    # The store keeps aware times only: a naive one would be refused after Paygentic created
    # the object.
    account = tf.parse_account(
        encode(account_json(createdAt="2024-01-02T03:04:05", updatedAt="2024-01-02T03:04:06"))
    )
    domain = tf.bank_account_from_wire(account, livemode=True)
    assert domain.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert domain.updated_at == datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC)
    payout = tf.parse_payout(encode(payout_json(createdAt="2024-01-02T03:04:05")))
    assert tf.payout_from_wire(payout, livemode=True).created_at.tzinfo is UTC
    offset = tf.parse_account(encode(account_json(createdAt="2024-01-02T05:04:05+02:00")))
    moved = tf.bank_account_from_wire(offset, livemode=True).created_at
    assert (moved, moved.tzinfo) == (domain.created_at, UTC)  # moved to UTC, as the store reads


def test_payout_account_is_derived_from_the_destination() -> None:
    account = tf.parse_account(encode(account_json(status="verified", countryCode="gb")))
    derived = tf.payout_account_from_wire(
        account, business_type=BusinessType.COMPANY, livemode=True
    )
    assert derived.provider_account_id == "eba_123"
    assert derived.status is PayoutAccountStatus.VERIFIED
    assert derived.provider_status == "verified"
    assert derived.transfers_enabled is True
    assert derived.business_type is BusinessType.COMPANY
    assert derived.country == "GB"


def test_payout_from_wire_sums_fees_and_reads_net() -> None:
    payout = tf.parse_payout(
        encode(
            payout_json(
                status="success", platformFee=20, methodFee=5, transferredAmountInCents=1475
            )
        )
    )
    domain = tf.payout_from_wire(payout, livemode=True)
    assert domain.status is PayoutStatus.PAID
    assert domain.amount == Money(amount_minor=1500, currency="USD")
    assert domain.fee == Money(amount_minor=25, currency="USD")
    assert domain.net_amount == Money(amount_minor=1475, currency="USD")
    assert domain.destination_provider_account_id == "eba_123"


def test_payout_without_fees_has_none() -> None:
    domain = tf.payout_from_wire(tf.parse_payout(encode(payout_json())), livemode=True)
    assert domain.fee is None
    assert domain.net_amount is None


def test_payout_with_an_invalid_currency_is_a_bad_response() -> None:
    payout = tf.parse_payout(encode(payout_json(currency="zz$")))
    with pytest.raises(ProviderBadResponseError):
        tf.payout_from_wire(payout, livemode=True)


# --- parsing failures -----------------------------------------------------------------------

_HTML = b"<html><body>Bad gateway</body></html>"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_HTML, id="html"),
        pytest.param(b'{"id": "eba_1",', id="truncated-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="json-array"),
        pytest.param(b"null", id="json-null"),
        pytest.param(encode({"id": "eba_1"}), id="missing-fields"),
        pytest.param(encode(account_json(object="payout")), id="wrong-object"),
        pytest.param(encode(account_json(createdAt="yesterday")), id="bad-datetime"),
        pytest.param(encode({"data": account_json()}), id="enveloped"),
    ],
)
def test_unreadable_account_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ProviderBadResponseError) as caught:
        tf.parse_account(body, http_status=200, request_id="req_1")
    assert caught.value.http_status == 200
    assert caught.value.request_id == "req_1"
    assert caught.value.provider is Provider.PAYGENTIC
    assert "Bad gateway" not in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        _HTML,
        encode({"object": "list", "data": [account_json()]}),
        encode({"object": "externalBankAccount", "data": [], "pagination": {}}),
        encode(
            {
                "object": "list",
                "data": [account_json(object="payout")],
                "pagination": {"limit": 10, "offset": 0, "total": 1},
            }
        ),
    ],
)
def test_unreadable_list_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ProviderBadResponseError):
        tf.parse_account_list(body)
    with pytest.raises(ProviderBadResponseError):
        tf.parse_payout_list(body)


@pytest.mark.parametrize(
    "body", [_HTML, encode(account_json()), encode(payout_json(amountInCents="lots"))]
)
def test_unreadable_payout_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ProviderBadResponseError):
        tf.parse_payout(body)


def test_list_parses_bare_object_with_pagination() -> None:
    page = tf.parse_account_list(
        encode(
            {
                "object": "list",
                "data": [account_json(), account_json(id="eba_2")],
                "pagination": {"limit": 2, "offset": 4, "total": 9},
            }
        )
    )
    assert [a.id for a in page.data] == ["eba_123", "eba_2"]
    assert (page.pagination.limit, page.pagination.offset, page.pagination.total) == (2, 4, 9)


def test_bad_response_message_names_fields_not_values() -> None:
    with pytest.raises(ProviderBadResponseError) as caught:
        tf.parse_account(encode(account_json(last4=None, accountHolderName=None)))
    assert "last4" in caught.value.message
    assert "Ada" not in caught.value.message


# --- error mapping --------------------------------------------------------------------------

_VALIDATION = {
    "error": "validation_error",
    "message": "Invalid request",
    "errors": [
        {"field": "routingNumber", "message": "invalid", "code": "INVALID"},
        {"field": "bankName", "message": "required"},
    ],
}


_BAD = {"message": "bad", "error": "bad_request"}
_BAD_CODE = {"message": "bad", "error": "bad_request", "code": "INVALID_CURRENCY"}
_CONFLICT = {"message": "exists", "error": "conflict", "code": "DUPLICATE_ACCOUNT"}
_UNPROCESSABLE = {"message": "no funds", "code": "INSUFFICIENT_FUNDS"}
_UNAUTHORIZED = {"message": "bad key", "error": "unauthorized"}
_FORBIDDEN = {
    "message": "nope",
    "error": "forbidden",
    "reason": "not_member",
    "requiredPermissions": ["payouts:write"],
}
_MISSING = {"message": "missing", "error": "not_found"}
_Rejected = ProviderRejectedError
_Auth = ProviderAuthenticationError


@pytest.mark.parametrize(
    ("status", "body", "operation", "error_type", "provider_code", "param"),
    [
        (
            400,
            _VALIDATION,
            "create_external_account",
            _Rejected,
            "validation_error",
            "routingNumber",
        ),
        (400, _BAD, "create_payout", _Rejected, "bad_request", None),
        (400, _BAD_CODE, "create_external_account", _Rejected, "INVALID_CURRENCY", None),
        (409, _CONFLICT, "create_external_account", _Rejected, "DUPLICATE_ACCOUNT", None),
        (422, _UNPROCESSABLE, "create_payout", _Rejected, "INSUFFICIENT_FUNDS", None),
        (401, _UNAUTHORIZED, "create_external_account", _Auth, "unauthorized", None),
        (401, _UNAUTHORIZED, "get_external_account", _Auth, "unauthorized", None),
        (403, _FORBIDDEN, "create_payout", _Auth, "forbidden", None),
        (404, _MISSING, "create_payout", _Rejected, "not_found", None),
        (404, _MISSING, "list_external_accounts", _Rejected, "not_found", None),
        (410, {"message": "gone"}, "create_payout", _Rejected, None, None),
    ],
)
def test_refusals_map_to_rejected_errors(
    status: int,
    body: dict[str, Any],
    operation: tf.Operation,
    error_type: type[ProviderRejectedError],
    provider_code: str | None,
    param: str | None,
) -> None:
    error = tf.error_from_response(status, encode(body), "req_9", operation)
    assert type(error) is error_type
    assert isinstance(error, ProviderRejectedError)
    assert error.http_status == status
    assert error.provider_code == provider_code
    assert error.param == param
    assert error.request_id == "req_9"
    assert error.provider is Provider.PAYGENTIC
    assert not error.retryable


def test_403_reason_and_permissions_are_reported() -> None:
    body = {"message": "nope", "reason": "insufficient_scope", "requiredPermissions": ["a:b"]}
    error = tf.error_from_response(403, encode(body), None, "create_payout")
    assert "insufficient_scope" in error.message
    assert "a:b" in error.message


def test_every_forbidden_reason_is_reported() -> None:
    for reason in get_args(wire.ForbiddenReason):
        body = {"message": "nope", "error": "forbidden", "reason": reason}
        error = tf.error_from_response(403, encode(body), None, "list_payouts")
        assert isinstance(error, ProviderAuthenticationError)
        assert reason in error.message


@pytest.mark.parametrize("category", get_args(wire.ErrorCategory))
def test_every_error_category_becomes_the_provider_code(category: str) -> None:
    error = tf.error_from_response(
        400, encode({"message": "m", "error": category}), None, "create_payout"
    )
    assert isinstance(error, ProviderRejectedError)
    assert error.provider_code == category


def test_404_on_reading_one_account_is_not_found() -> None:
    body = encode({"message": "External account not found", "error": "not_found"})
    error = tf.error_from_response(404, body, None, "get_external_account")
    assert type(error) is NotFoundError


@pytest.mark.parametrize(
    ("operation", "outcome_unknown"),
    [
        ("create_external_account", True),
        ("create_payout", True),
        ("get_external_account", False),
        ("list_external_accounts", False),
        ("list_payouts", False),
    ],
)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("body", [b"", _HTML, encode({"message": "boom", "code": "INTERNAL"})])
def test_5xx_is_unavailable_and_unknown_for_writes(
    operation: tf.Operation, outcome_unknown: bool, status: int, body: bytes
) -> None:
    error = tf.error_from_response(status, body, "req_1", operation)
    assert type(error) is ProviderUnavailableError
    assert error.outcome_unknown is outcome_unknown
    assert error.http_status == status
    assert error.retryable


@pytest.mark.parametrize("retry_after", [45.0, None])
def test_a_5xx_keeps_the_retry_after_paygentic_sent(retry_after: float | None) -> None:
    error = tf.error_from_response(
        503, _HTML, None, "create_external_account", retry_after=retry_after
    )
    assert type(error) is ProviderUnavailableError
    assert error.retry_after == retry_after


@pytest.mark.parametrize(
    ("retry_after", "body"), [(2.0, encode({"message": "slow down"})), (None, _HTML)]
)
def test_429_is_rate_limited_with_retry_after(retry_after: float | None, body: bytes) -> None:
    error = tf.error_from_response(
        429, body, None, "create_external_account", retry_after=retry_after
    )
    assert isinstance(error, ProviderRateLimitedError)
    assert error.retry_after == retry_after
    assert error.outcome_unknown is False


@pytest.mark.parametrize(
    ("status", "body", "outcome_unknown"),
    [
        (400, _HTML, False),
        (401, b"", False),
        (404, b"not json", False),
        (422, encode({"no": "message"}), False),
        (400, encode([1, 2]), False),
        (400, encode({"error": "validation_error", "message": "m", "errors": "x"}), False),
        (302, b"", True),
        (101, b"", True),
    ],
)
def test_unparseable_error_body_is_a_bad_response(
    status: int, body: bytes, outcome_unknown: bool
) -> None:
    error = tf.error_from_response(status, body, "req_1", "create_external_account")
    assert type(error) is ProviderBadResponseError
    assert error.outcome_unknown is outcome_unknown
    assert error.http_status == status


def test_echoed_numbers_are_redacted_from_provider_messages() -> None:
    body = encode({"message": f"account {ACCOUNT_NUMBER} with routing {ROUTING_NUMBER} is invalid"})
    error = tf.error_from_response(
        422, body, None, "create_external_account", redact=(ACCOUNT_NUMBER, ROUTING_NUMBER)
    )
    assert ACCOUNT_NUMBER not in error.message
    assert ROUTING_NUMBER not in error.message
    assert "[redacted]" in error.message


def test_long_provider_messages_are_truncated() -> None:
    error = tf.error_from_response(400, encode({"message": "x" * 10_000}), None, "create_payout")
    assert len(error.message) < 500


# --- domain -> wire -------------------------------------------------------------------------


def _bank(**overrides: Any) -> BankDetails:
    data: dict[str, Any] = {"account_number": ACCOUNT_NUMBER, "holder_name": "Ada Lovelace"}
    data.update(overrides)
    return BankDetails.model_validate(data)


def test_resolve_bank_prefers_input_then_profile() -> None:
    profile = OrganizationProfile(
        country="US", currency="USD", bank_name="Profile Bank", holder_type=HolderType.COMPANY
    )
    resolved = tf.resolve_bank(_bank(routing_number=ROUTING_NUMBER), profile)
    assert (resolved.country, resolved.currency, resolved.bank_name) == (
        "US",
        "USD",
        "Profile Bank",
    )
    assert resolved.holder_type is HolderType.COMPANY
    resolved = tf.resolve_bank(
        _bank(
            routing_number=ROUTING_NUMBER,
            bank_name="Input Bank",
            holder_type="INDIVIDUAL",
            country="ca",
            currency="cad",
        ),
        profile,
    )
    assert (resolved.country, resolved.currency, resolved.bank_name) == ("CA", "CAD", "Input Bank")
    assert resolved.holder_type is HolderType.INDIVIDUAL


def test_resolve_bank_fallback_holder_type_beats_the_profile() -> None:
    profile = OrganizationProfile(
        country="US", currency="USD", bank_name="B", holder_type=HolderType.COMPANY
    )
    resolved = tf.resolve_bank(
        _bank(routing_number=ROUTING_NUMBER), profile, fallback_holder_type=HolderType.INDIVIDUAL
    )
    assert resolved.holder_type is HolderType.INDIVIDUAL


def test_resolve_bank_reports_every_gap_at_once() -> None:
    profile = OrganizationProfile(country="US", currency="USD")
    with pytest.raises(InputValidationError) as caught:
        tf.resolve_bank(_bank(), profile, metadata={"gatewayReference": "x", "ok": "y"})
    assert {issue.path for issue in caught.value.issues} == {
        ("bank", "bank_name"),
        ("bank", "holder_type"),
        ("bank", "routing_number"),
        ("metadata", "gatewayReference"),
    }


GERMAN_IBAN = "DE89370400440532013000"


def test_resolve_bank_takes_an_iban_in_its_own_country() -> None:
    profile = OrganizationProfile(country="US", currency="USD", bank_name="B")
    bank = _bank(
        account_number=GERMAN_IBAN,
        routing_number=ROUTING_NUMBER,
        holder_type="INDIVIDUAL",
        country="de",
        currency="EUR",
    )
    assert tf.resolve_bank(bank, profile).country == "DE"


@pytest.mark.parametrize(
    ("country", "path", "says"),
    [
        ("FR", ("bank", "country"), "must be DE, the IBAN's country, or left out"),
        (
            None,
            ("bank", "account_number"),
            "is an IBAN of DE, not of the organization's country US",
        ),
    ],
)
def test_resolve_bank_refuses_an_iban_of_another_country_than_the_accounts(
    country: str | None, path: tuple[str, str], says: str
) -> None:
    profile = OrganizationProfile(country="US", currency="USD", bank_name="B")
    bank = _bank(
        account_number=GERMAN_IBAN,
        routing_number=ROUTING_NUMBER,
        holder_type="INDIVIDUAL",
        country=country,
    )
    with pytest.raises(InputValidationError) as caught:
        tf.resolve_bank(bank, profile)
    [issue] = caught.value.issues
    assert issue.path == path
    assert issue.message.startswith(says)
    assert GERMAN_IBAN not in str(caught.value)


def test_external_account_body_has_exactly_the_documented_fields() -> None:
    profile = OrganizationProfile(
        country="US", currency="USD", bank_name="B", holder_type=HolderType.COMPANY
    )
    bank = _bank(routing_number=ROUTING_NUMBER, account_type="SAVINGS")
    resolved = tf.resolve_bank(bank, profile)
    body = tf.external_account_body("org_abc", bank, resolved, {"k": "v"})
    assert body.to_json() == {
        "organizationId": "org_abc",
        "countryCode": "US",
        "bankName": "B",
        "currency": "USD",
        "accountNumber": ACCOUNT_NUMBER,
        "routingNumber": ROUTING_NUMBER,
        "accountHolderName": "Ada Lovelace",
        "accountHolderType": "company",
        "metadata": {"k": "v"},
    }
    assert ACCOUNT_NUMBER not in repr(body)
    assert ROUTING_NUMBER not in repr(body)
    assert ROUTING_NUMBER not in repr(resolved)


def test_payout_body_shape() -> None:
    request = PayoutRequest(amount=Money(amount_minor=1500, currency="usd"))
    body = tf.payout_body(
        "org_abc", request, source_id="src_1", destination_id="eba_1", metadata={}
    )
    assert body.to_json() == {
        "organizationId": "org_abc",
        "amountInCents": 1500,
        "currency": "USD",
        "method": "bank_transfer",
        "sourceId": "src_1",
        "destinationId": "eba_1",
        "metadata": {},
    }


def test_tagged_metadata_adds_reference_and_purpose() -> None:
    assert tf.tagged_metadata({"a": "b"}, None) == {"a": "b"}
    assert tf.tagged_metadata(None, "k", "p") == {"gatewayReference": "k", "gatewayPurpose": "p"}


@pytest.mark.parametrize(
    ("base_url", "livemode"),
    [
        ("https://api.paygentic.io", True),
        ("https://api.sandbox.paygentic.io", False),
        ("http://127.0.0.1:8123", False),
        ("http://127.0.0.2:8123/sandbox/paygentic", False),
        ("http://localhost:8000/sandbox/paygentic", False),
        ("http://[::1]:9000", False),
        ("http://paygentic-sandbox:8080", False),
        ("http://10.0.0.5:8080", True),
        ("https://payments.example.com", True),
    ],
)
def test_livemode_from_base_url(base_url: str, livemode: bool) -> None:
    assert tf.is_livemode(base_url) is livemode


def test_secret_numbers_leave_only_through_the_body() -> None:
    bank = _bank(routing_number=ROUTING_NUMBER)
    assert isinstance(bank.account_number, SecretStr)
    assert ACCOUNT_NUMBER not in repr(bank)
