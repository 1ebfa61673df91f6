"""Table tests for the pure Commet transformers: status maps, bodies, envelopes, error mapping."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    IdempotencyConflictError,
    IdempotencyInProgressError,
    InputValidationError,
    OperationRetiredError,
    PayoutAccountRequiredError,
    PayoutGatewayError,
    ProviderAuthenticationError,
    ProviderBadResponseError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    OrganizationProfile,
    PayoutRequest,
    PayoutVerificationRequest,
)
from payout_gateway.providers.commet import transformers as tf
from payout_gateway.providers.commet import wire

ACCOUNT_NUMBER = "000123456789"
ROUTING_NUMBER = "110000000"

ADDRESS = {
    "line1": "1 Main St",
    "city": "Springfield",
    "state": "IL",
    "postal_code": "62701",
    "country": "us",
}


def individual_request(**bank: Any) -> PayoutVerificationRequest:
    return PayoutVerificationRequest.model_validate(
        {
            "email": "ada@example.com",
            "business_type": "INDIVIDUAL",
            "business_url": "https://example.com",
            "document_url": "https://example.com/id.png",
            "bank": {
                "account_number": ACCOUNT_NUMBER,
                "routing_number": ROUTING_NUMBER,
                "holder_name": "Ada Lovelace",
                "account_type": "CHECKING",
                **bank,
            },
            "individual": {
                "first_name": "Ada",
                "last_name": "Lovelace",
                "phone": "+14155550123",
                "date_of_birth": date(1990, 1, 2),
                "ssn_last4": "6789",
                "address": ADDRESS,
            },
        }
    )


def company_request() -> PayoutVerificationRequest:
    return PayoutVerificationRequest.model_validate(
        {
            "email": "ops@example.com",
            "business_type": "COMPANY",
            "business_url": "https://example.com",
            "document_url": "https://example.com/id.png",
            "bank": {"account_number": ACCOUNT_NUMBER, "holder_name": "Acme Inc"},
            "company": {
                "name": "Acme Inc",
                "tax_id": "12-3456789",
                "address": {**ADDRESS, "line2": "Suite 5"},
                "representative": {"first_name": "Wile", "last_name": "Coyote"},
            },
        }
    )


PROFILE = OrganizationProfile(country="US", currency="USD", bank_name="Profile Bank")
NOW = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)


def envelope(data: dict[str, Any]) -> bytes:
    return json.dumps({"success": True, "data": data}).encode()


def bank_account_data(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "pba_1",
        "providerExternalAccountId": "ba_1",
        "holderName": "Ada Lovelace",
        "last4": "6789",
        "bankName": "Test Bank",
        "country": "us",
        "currency": "usd",
        "accountType": "checking",
        "isDefault": True,
        "status": "active",
        "createdAt": "2026-07-20T10:00:00Z",
        "object": "payout_bank_account",
        "livemode": True,
        **overrides,
    }


def verification_data(**overrides: Any) -> dict[str, Any]:
    return {
        "providerAccountId": "acct_1",
        "status": "pending_verification",
        "transfersEnabled": False,
        "businessType": "individual",
        "country": "US",
        "object": "payout_account",
        "livemode": True,
        **overrides,
    }


def payout_data(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "po_1",
        "status": "pending",
        "amount": 2500,
        "fee": 25,
        "netAmount": 2475,
        "currency": "usd",
        "description": "July",
        "providerTransferId": "tr_1",
        "createdAt": "2026-07-20T10:00:00Z",
        "object": "payout",
        "livemode": True,
        **overrides,
    }


def error_body(code: str | None, type_: str | None, **extra: Any) -> bytes:
    error: dict[str, Any] = {"message": "Something went wrong", **extra}
    if code is not None:
        error["code"] = code
    if type_ is not None:
        error["type"] = type_
    return json.dumps({"success": False, "error": error}).encode()


# --- status maps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("active", BankAccountStatus.ACTIVE), ("errored", BankAccountStatus.ERRORED)],
)
def test_bank_account_status_maps_to_design_table(raw: str, canonical: BankAccountStatus) -> None:
    assert tf.bank_account_status(raw) is canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("pending_verification", PayoutAccountStatus.PENDING_VERIFICATION),
        ("verified", PayoutAccountStatus.VERIFIED),
        ("restricted", PayoutAccountStatus.RESTRICTED),
        ("disabled", PayoutAccountStatus.DISABLED),
    ],
)
def test_payout_account_status_maps_to_design_table(
    raw: str, canonical: PayoutAccountStatus
) -> None:
    assert tf.payout_account_status(raw) is canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("pending", PayoutStatus.PENDING),
        ("in_transit", PayoutStatus.IN_TRANSIT),
        ("paid", PayoutStatus.PAID),
        ("failed", PayoutStatus.FAILED),
        ("canceled", PayoutStatus.CANCELED),
    ],
)
def test_payout_status_maps_to_design_table(raw: str, canonical: PayoutStatus) -> None:
    assert tf.payout_status(raw) is canonical


@pytest.mark.parametrize(
    ("vocabulary", "table", "unknown"),
    [
        (wire.BankAccountStatus, tf.BANK_ACCOUNT_STATUS, BankAccountStatus.UNKNOWN),
        (wire.PayoutAccountStatus, tf.PAYOUT_ACCOUNT_STATUS, PayoutAccountStatus.UNKNOWN),
        (wire.PayoutStatus, tf.PAYOUT_STATUS, PayoutStatus.UNKNOWN),
        (wire.AccountType, tf.ACCOUNT_TYPE, None),
        (wire.BusinessType, tf.BUSINESS_TYPE, None),
    ],
)
def test_every_documented_value_is_mapped_and_nothing_else(
    vocabulary: Any, table: dict[str, Any], unknown: Any
) -> None:
    values = set(get_args(vocabulary))
    assert values == set(table)
    for value in values:
        assert table[value] is not unknown


def test_every_canonical_status_except_unknown_is_reachable_where_commet_has_it() -> None:
    assert set(tf.BANK_ACCOUNT_STATUS.values()) == {
        BankAccountStatus.ACTIVE,
        BankAccountStatus.ERRORED,
    }
    assert set(tf.PAYOUT_ACCOUNT_STATUS.values()) == set(PayoutAccountStatus) - {
        PayoutAccountStatus.UNKNOWN
    }
    assert set(tf.PAYOUT_STATUS.values()) == set(PayoutStatus) - {PayoutStatus.UNKNOWN}


def test_domain_to_wire_tables_invert_the_wire_tables() -> None:
    assert set(tf.ACCOUNT_TYPE_TO_WIRE) == set(AccountType)
    assert set(tf.BUSINESS_TYPE_TO_WIRE) == set(BusinessType)


@pytest.mark.parametrize("raw", ["on_hold", "", "ACTIVE", "Verified", " paid", "null"])
def test_unknown_values_map_to_unknown_and_are_never_usable(raw: str) -> None:
    assert tf.bank_account_status(raw) is BankAccountStatus.UNKNOWN
    assert not tf.bank_account_status(raw).usable
    assert tf.payout_account_status(raw) is PayoutAccountStatus.UNKNOWN
    assert not tf.payout_account_status(raw).usable
    assert tf.payout_status(raw) is PayoutStatus.UNKNOWN


def test_unknown_bank_account_status_keeps_the_raw_value() -> None:
    data = wire.PayoutBankAccount.model_validate(bank_account_data(status="frozen"))
    account = tf.bank_account_from_wire(data)
    assert account.status is BankAccountStatus.UNKNOWN
    assert account.provider_status == "frozen"


def test_unknown_payout_account_status_never_enables_transfers() -> None:
    data = wire.PayoutVerification.model_validate(
        verification_data(status="under_review", transfersEnabled=True)
    )
    account = tf.payout_account_from_wire(data)
    assert account.status is PayoutAccountStatus.UNKNOWN
    assert account.provider_status == "under_review"
    assert account.transfers_enabled is False


def test_unknown_payout_status_keeps_the_raw_value() -> None:
    payout = tf.payout_from_wire(wire.Payout.model_validate(payout_data(status="reversed")))
    assert payout.status is PayoutStatus.UNKNOWN
    assert payout.provider_status == "reversed"


# --- request bodies ---------------------------------------------------------------------------


def test_add_bank_account_body_is_camel_case_with_lower_case_account_type() -> None:
    request = AddBankAccountRequest.model_validate(
        {
            "bank": {
                "account_number": "0001-2345 6789",
                "routing_number": ROUTING_NUMBER,
                "holder_name": "Ada Lovelace",
                "account_type": "SAVINGS",
            },
            "set_default": True,
        }
    )
    assert tf.add_bank_account_body(request).to_json() == {
        "accountNumber": ACCOUNT_NUMBER,
        "accountHolderName": "Ada Lovelace",
        "routingNumber": ROUTING_NUMBER,
        "accountType": "savings",
        "setDefault": True,
    }


def test_add_bank_account_body_omits_unset_optionals_but_always_sends_set_default() -> None:
    request = AddBankAccountRequest.model_validate(
        {"bank": {"account_number": ACCOUNT_NUMBER, "holder_name": "Ada"}}
    )
    assert tf.add_bank_account_body(request).to_json() == {
        "accountNumber": ACCOUNT_NUMBER,
        "accountHolderName": "Ada",
        "setDefault": False,
    }


def add_request(**bank: str) -> AddBankAccountRequest:
    return AddBankAccountRequest.model_validate(
        {"bank": {"account_number": ACCOUNT_NUMBER, "holder_name": "Ada", **bank}}
    )


@pytest.mark.parametrize(
    "bank", [{}, {"country": "US"}, {"currency": "usd"}, {"country": "us", "currency": "USD"}]
)
def test_an_add_in_the_organizations_country_and_currency_passes(bank: dict[str, str]) -> None:
    tf.refuse_another_place(add_request(**bank).bank, PROFILE, country_from_kyc=False)


def test_an_add_in_another_country_or_currency_is_refused_naming_each_field() -> None:
    # Commet would open it in the organization's US and USD whatever was asked.
    with pytest.raises(InputValidationError) as caught:
        tf.refuse_another_place(
            add_request(country="DE", currency="EUR").bank, PROFILE, country_from_kyc=False
        )
    assert [issue.path for issue in caught.value.issues] == [
        ("bank", "country"),
        ("bank", "currency"),
    ]
    assert "must be US or left out" in caught.value.issues[0].message
    assert "must be USD or left out" in caught.value.issues[1].message


def test_an_add_of_an_iban_of_another_country_is_refused_without_echoing_it() -> None:
    with pytest.raises(InputValidationError) as caught:
        tf.refuse_another_place(
            add_request(account_number="DE89370400440532013000").bank,
            PROFILE,
            country_from_kyc=False,
        )
    assert caught.value.path == ("bank", "account_number")
    assert "is an IBAN of DE" in str(caught.value)
    assert "DE89370400440532013000" not in str(caught.value)


def test_a_verifications_bank_country_is_left_to_the_kyc_but_its_currency_is_checked() -> None:
    bank = individual_request(country="CA").bank
    tf.refuse_another_place(bank, PROFILE, country_from_kyc=True)
    with pytest.raises(InputValidationError) as caught:
        tf.refuse_another_place(
            individual_request(currency="CAD").bank, PROFILE, country_from_kyc=True
        )
    assert caught.value.path == ("bank", "currency")


def test_verification_body_for_an_individual() -> None:
    assert tf.verification_body(individual_request()).to_json() == {
        "email": "ada@example.com",
        "businessType": "individual",
        "businessUrl": "https://example.com",
        "documentUrl": "https://example.com/id.png",
        "bank": {
            "accountNumber": ACCOUNT_NUMBER,
            "accountHolderName": "Ada Lovelace",
            "routingNumber": ROUTING_NUMBER,
            "accountType": "checking",
        },
        "individual": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+14155550123",
            "dateOfBirth": "1990-01-02",
            "ssnLast4": "6789",
            "address": {
                "line1": "1 Main St",
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
                "country": "US",
            },
        },
    }


def test_verification_body_for_a_company() -> None:
    body = tf.verification_body(company_request()).to_json()
    assert body["businessType"] == "company"
    assert "individual" not in body
    assert body["company"] == {
        "name": "Acme Inc",
        "taxId": "12-3456789",
        "address": {
            "line1": "1 Main St",
            "line2": "Suite 5",
            "city": "Springfield",
            "state": "IL",
            "postalCode": "62701",
            "country": "US",
        },
        "representative": {"firstName": "Wile", "lastName": "Coyote"},
    }


def test_wire_bodies_keep_secrets_out_of_repr() -> None:
    text = repr(tf.verification_body(individual_request())) + repr(
        tf.verification_body(company_request())
    )
    for secret in (ACCOUNT_NUMBER, ROUTING_NUMBER, "6789", "12-3456789"):
        assert secret not in text


def payout_request(amount: int, currency: str = "USD") -> PayoutRequest:
    return PayoutRequest(amount=Money(amount_minor=amount, currency=currency))


def test_payout_body_sends_cents() -> None:
    request = PayoutRequest(amount=Money(amount_minor=1000, currency="usd"), description="July")
    assert tf.payout_body(request).to_json() == {"amount": 1000, "description": "July"}


@pytest.mark.parametrize(
    ("amount", "currency", "path"),
    [
        (999, "USD", ("amount",)),
        (1, "USD", ("amount",)),
        # Another currency is the Money's currency that is wrong, not its amount.
        (5000, "EUR", ("amount", "currency")),
        (100_000, "CAD", ("amount", "currency")),
    ],
)
def test_payout_body_refuses_what_commet_documents_as_invalid(
    amount: int, currency: str, path: tuple[str, ...]
) -> None:
    with pytest.raises(InputValidationError) as caught:
        tf.payout_body(payout_request(amount, currency))
    assert caught.value.path == path


# --- envelopes --------------------------------------------------------------------------------


def test_data_from_response_reads_the_success_envelope() -> None:
    data = tf.data_from_response(200, envelope(payout_data()), "req_1", wire.Payout)
    assert data.id == "po_1"
    assert data.net_amount == 2475


def test_data_from_response_tolerates_a_missing_success_flag_and_extra_fields() -> None:
    body = json.dumps({"data": payout_data(newField={"x": 1}), "meta": 1}).encode()
    assert tf.data_from_response(200, body, None, wire.Payout).id == "po_1"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html><body>Bad gateway</body></html>", "html"),
        (b"", "empty"),
        (b'{"success": true, "data": ', "truncated json"),
        (b"[1, 2, 3]", "array"),
        (b'"data"', "string"),
        (b"\xff\xfe\x00", "binary"),
        (b"[" * 5000, "deep nesting"),
        (b'{"success": true}', "no data"),
        (b'{"success": true, "data": null}', "null data"),
        (b'{"success": true, "data": []}', "data not an object"),
        (json.dumps({"success": False, "data": payout_data()}).encode(), "success false"),
        (error_body("internal_error", "internal_error"), "error with 2xx"),
        (json.dumps({"error": {"code": "x"}}).encode(), "error without success"),
        (json.dumps({"success": True, "data": payout_data(id=None)}).encode(), "null id"),
        (
            json.dumps(
                {"success": True, "data": {k: v for k, v in payout_data().items() if k != "amount"}}
            ).encode(),
            "missing amount",
        ),
        (json.dumps({"success": True, "data": payout_data(amount="lots")}).encode(), "bad type"),
        (json.dumps({"success": True, "data": payout_data(object="invoice")}).encode(), "object"),
        (
            json.dumps({"success": True, "data": payout_data(createdAt="yesterday")}).encode(),
            "date",
        ),
    ],
)
def test_data_from_response_refuses_anything_but_the_documented_envelope(
    body: bytes, why: str
) -> None:
    with pytest.raises(ProviderBadResponseError) as caught:
        tf.data_from_response(200, body, "req_9", wire.Payout)
    error = caught.value
    assert error.provider is Provider.COMMET
    assert error.http_status == 200
    assert error.request_id == "req_9"
    assert error.outcome_unknown is True, why


def test_convert_response_turns_values_the_domain_refuses_into_a_bad_response() -> None:
    with pytest.raises(ProviderBadResponseError):
        tf.convert_response(
            200, envelope(payout_data(currency="dollars")), None, wire.Payout, tf.payout_from_wire
        )
    with pytest.raises(ProviderBadResponseError):
        tf.convert_response(
            200,
            envelope(bank_account_data(country="Narnia")),
            None,
            wire.PayoutBankAccount,
            tf.bank_account_from_wire,
        )


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_data_from_response_only_ever_raises_the_bad_response_error(body: bytes) -> None:
    with contextlib.suppress(ProviderBadResponseError):
        tf.data_from_response(200, body, None, wire.PayoutBankAccount)


# --- wire -> domain ---------------------------------------------------------------------------


def test_bank_account_from_wire_canonicalises_codes_and_keeps_only_last4() -> None:
    data = wire.PayoutBankAccount.model_validate(bank_account_data(last4="123456789"))
    account = tf.bank_account_from_wire(
        data, holder_type=HolderType.INDIVIDUAL, metadata={"ref": "a"}
    )
    assert account.provider is Provider.COMMET
    assert account.provider_account_id == "pba_1"
    assert (account.country, account.currency) == ("US", "USD")
    assert account.last4 == "6789"
    assert account.account_type is AccountType.CHECKING
    assert account.status is BankAccountStatus.ACTIVE
    assert account.provider_status == "active"
    assert account.holder_type is HolderType.INDIVIDUAL
    assert account.metadata == {"ref": "a"}
    assert account.created_at == datetime(2026, 7, 20, 10, 0, tzinfo=UTC)


def test_bank_account_from_wire_reads_nulls_and_naive_timestamps() -> None:
    data = wire.PayoutBankAccount.model_validate(
        bank_account_data(
            accountType=None, bankName=None, status="errored", createdAt="2026-07-20T10:00:00"
        )
    )
    account = tf.bank_account_from_wire(data)
    assert account.account_type is None
    assert account.bank_name is None
    assert account.status is BankAccountStatus.ERRORED
    assert account.created_at == datetime(2026, 7, 20, 10, 0, tzinfo=UTC)


def test_timestamps_with_an_offset_are_moved_to_utc() -> None:
    # As reads of the store give them: a mutation's answer and a later read agree.
    data = wire.PayoutBankAccount.model_validate(
        bank_account_data(createdAt="2026-07-20T12:00:00+02:00")
    )
    created_at = tf.bank_account_from_wire(data).created_at
    assert (created_at, created_at.tzinfo) == (datetime(2026, 7, 20, 10, 0, tzinfo=UTC), UTC)


def test_payout_from_wire_is_money_in_upper_case_currency() -> None:
    payout = tf.payout_from_wire(wire.Payout.model_validate(payout_data()))
    assert payout.amount == Money(amount_minor=2500, currency="USD")
    assert payout.fee == Money(amount_minor=25, currency="USD")
    assert payout.net_amount == Money(amount_minor=2475, currency="USD")
    assert payout.status is PayoutStatus.PENDING
    assert payout.destination_provider_account_id is None


def test_payout_from_wire_tolerates_missing_fee() -> None:
    payout = tf.payout_from_wire(wire.Payout.model_validate(payout_data(fee=None, netAmount=None)))
    assert payout.fee is None
    assert payout.net_amount is None


@pytest.mark.parametrize(
    ("overrides", "existed"),
    [
        ({"alreadyExists": True}, True),
        ({"alreadyExists": False}, False),
        ({}, False),
        # 2026-07-24: "existing" omits businessType and country.
        ({"outcome": "existing", "businessType": None, "country": None}, True),
        ({"outcome": "created"}, False),
    ],
    ids=[
        "2026-07-11 existing",
        "2026-07-11 created",
        "2026-07-11 no flag",
        "07-24 existing",
        "07-24 created",
    ],
)
def test_both_verification_response_shapes(overrides: dict[str, Any], existed: bool) -> None:
    raw = {k: v for k, v in verification_data(**overrides).items() if v is not None}
    data = tf.data_from_response(200, envelope(raw), None, wire.PayoutVerification)
    outcome = tf.verification_outcome_from_wire(
        data, request=individual_request(), profile=PROFILE, now=NOW
    )
    assert outcome.already_existed is existed
    assert outcome.payout_account.provider_account_id == "acct_1"
    assert outcome.payout_account.status is PayoutAccountStatus.PENDING_VERIFICATION
    if existed:
        assert outcome.bank_account is None
    else:
        assert outcome.bank_account is not None


def test_unknown_verification_outcome_is_a_bad_response() -> None:
    with pytest.raises(ProviderBadResponseError):
        tf.data_from_response(
            200, envelope(verification_data(outcome="merged")), None, wire.PayoutVerification
        )


def test_created_verification_reports_the_submitted_bank_as_the_default_account() -> None:
    data = wire.PayoutVerification.model_validate(
        verification_data(status="verified", transfersEnabled=True, country="ca", livemode=False)
    )
    outcome = tf.verification_outcome_from_wire(
        data, request=individual_request(), profile=PROFILE, now=NOW
    )
    account = outcome.payout_account
    assert account.status is PayoutAccountStatus.VERIFIED
    assert account.transfers_enabled is True
    assert account.business_type is BusinessType.INDIVIDUAL
    assert account.country == "CA"
    bank = outcome.bank_account
    assert bank is not None
    assert bank.provider_account_id is None
    assert bank.last4 == "6789"
    assert bank.holder_name == "Ada Lovelace"
    assert bank.holder_type is HolderType.INDIVIDUAL
    assert bank.account_type is AccountType.CHECKING
    assert bank.is_default is True
    assert (bank.status, bank.provider_status) == (BankAccountStatus.ACTIVE, "active")
    assert bank.country == "CA"
    assert bank.currency == "USD"
    assert bank.bank_name == "Profile Bank"
    assert bank.livemode is False
    assert bank.created_at == NOW


def test_created_verification_falls_back_on_the_profile_country() -> None:
    data = wire.PayoutVerification.model_validate(verification_data(country=None))
    outcome = tf.verification_outcome_from_wire(
        data, request=company_request(), profile=PROFILE, now=NOW
    )
    assert outcome.bank_account is not None
    assert outcome.bank_account.country == "US"
    assert outcome.bank_account.holder_type is HolderType.COMPANY


# --- errors -----------------------------------------------------------------------------------

# Every documented code with its documented type and HTTP status (commet.md "Envelopes").
ERROR_TABLE: list[tuple[str, int, type[PayoutGatewayError], bool | None]] = [
    ("validation_error", 400, ProviderRejectedError, None),
    ("invalid_json", 400, ProviderRejectedError, None),
    ("unauthorized", 401, ProviderAuthenticationError, None),
    ("forbidden", 403, ProviderAuthenticationError, None),
    ("payouts_not_available_in_sandbox", 403, ProviderAuthenticationError, None),
    ("not_found", 404, ProviderRejectedError, None),
    ("endpoint_deprecated", 410, OperationRetiredError, None),
    ("duplicate", 409, ProviderRejectedError, None),
    ("idempotency_key_mismatch", 409, IdempotencyConflictError, None),
    ("idempotency_in_progress", 409, IdempotencyInProgressError, None),
    ("provider_unsupported", 409, ProviderRejectedError, None),
    ("insufficient_balance", 402, ProviderRejectedError, None),
    ("idempotency_unavailable", 503, ProviderUnavailableError, False),
    ("internal_error", 500, ProviderUnavailableError, True),
    ("rate_limited", 429, ProviderRateLimitedError, False),
]


def test_the_error_table_covers_every_documented_code() -> None:
    assert {row[0] for row in ERROR_TABLE} == set(get_args(wire.ErrorCode))
    assert set(tf.ERROR_CODES) == set(get_args(wire.ErrorCode))
    assert set(wire.ERROR_CODE_TYPE) == set(get_args(wire.ErrorCode))
    assert set(tf.ERROR_TYPES) == set(get_args(wire.ErrorType))
    assert set(wire.ERROR_CODE_TYPE.values()) <= set(get_args(wire.ErrorType))


@pytest.mark.parametrize(
    ("code", "status", "expected", "outcome_unknown"), ERROR_TABLE, ids=[r[0] for r in ERROR_TABLE]
)
def test_every_documented_error_code_maps_to_its_domain_error(
    code: wire.ErrorCode,
    status: int,
    expected: type[PayoutGatewayError],
    outcome_unknown: bool | None,
) -> None:
    body = error_body(
        code,
        wire.ERROR_CODE_TYPE[code],
        param="amount",
        doc_url=f"https://commet.co/docs/api-reference/2026-07-11/errors/{code}.md",
    )
    # An operation where no code has a meaning of its own (not_found has one for adding a bank
    # account or requesting a payout: see the next tests).
    error = tf.error_from_response(
        status, body, "req_42", "complete_payout_verification", retry_after=2.0
    )
    assert type(error) is expected
    if isinstance(error, ProviderError):
        assert error.provider is Provider.COMMET
        assert error.http_status == status
        assert error.provider_code == code
        assert error.request_id == "req_42"
    if isinstance(error, ProviderRejectedError):
        assert error.doc_url is not None
        assert error.doc_url.endswith(f"/{code}.md")
        assert error.param == "amount"
    if isinstance(error, ProviderUnavailableError):
        assert error.outcome_unknown is outcome_unknown
    if isinstance(error, ProviderRateLimitedError):
        assert error.retry_after == 2.0


@pytest.mark.parametrize("code", get_args(wire.ErrorCode))
def test_the_documented_type_alone_lands_in_the_same_family(code: wire.ErrorCode) -> None:
    # A code Commet renames still lands in the same family through its type.
    by_code = tf.ERROR_CODES[code]
    by_type = tf.ERROR_TYPES[wire.ERROR_CODE_TYPE[code]]
    families = {
        tf.ErrorKind.NOT_FOUND: tf.ErrorKind.REJECTED,
        tf.ErrorKind.RETIRED: tf.ErrorKind.REJECTED,
        tf.ErrorKind.IDEMPOTENCY_CONFLICT: tf.ErrorKind.REJECTED,
        tf.ErrorKind.IDEMPOTENCY_IN_PROGRESS: tf.ErrorKind.REJECTED,
        tf.ErrorKind.UNAVAILABLE_NOT_APPLIED: tf.ErrorKind.UNAVAILABLE,
    }
    assert families.get(by_code, by_code) is by_type


def test_not_found_while_adding_a_bank_account_means_no_payout_account_yet() -> None:
    body = error_body("not_found", "not_found_error")
    error = tf.error_from_response(404, body, None, "add_bank_account")
    assert isinstance(error, PayoutAccountRequiredError)
    other = tf.error_from_response(404, body, None, "complete_payout_verification")
    assert type(other) is ProviderRejectedError


def test_not_found_while_requesting_a_payout_means_no_payout_account_yet() -> None:
    # The sandbox answers POST /payouts without a payout account as it answers
    # POST /payouts/bank-accounts (its app.py choice 13): the same typed error, not a refusal
    # that only a provider code tells apart.
    body = error_body("not_found", "not_found_error")
    error = tf.error_from_response(404, body, "req_7", "request_payout")
    assert isinstance(error, PayoutAccountRequiredError)


def test_endpoint_deprecated_on_verification_says_to_use_the_dashboard() -> None:
    body = error_body("endpoint_deprecated", "not_found_error")
    error = tf.error_from_response(410, body, "req_1", "complete_payout_verification")
    assert isinstance(error, OperationRetiredError)
    assert "dashboard" in error.message
    assert error.provider_code == "endpoint_deprecated"


@pytest.mark.parametrize(
    ("type_", "status", "expected"),
    [
        ("validation_error", 400, ProviderRejectedError),
        ("authentication_error", 401, ProviderAuthenticationError),
        ("not_found_error", 404, ProviderRejectedError),
        ("conflict_error", 409, ProviderRejectedError),
        ("billing_error", 402, ProviderRejectedError),
        ("rate_limit_error", 429, ProviderRateLimitedError),
        ("internal_error", 500, ProviderUnavailableError),
        ("api_error", 418, ProviderRejectedError),
        ("api_error", 503, ProviderUnavailableError),
        ("brand_new_type", 422, ProviderRejectedError),
        ("brand_new_type", 502, ProviderUnavailableError),
        (None, 403, ProviderAuthenticationError),
        (None, 429, ProviderRateLimitedError),
    ],
)
def test_unknown_codes_fall_back_on_type_then_status(
    type_: str | None, status: int, expected: type[ProviderError]
) -> None:
    error = tf.error_from_response(
        status, error_body("brand_new_code", type_), None, "request_payout"
    )
    assert type(error) is expected
    assert isinstance(error, ProviderError)
    assert error.provider_code == "brand_new_code"
    if isinstance(error, ProviderUnavailableError) and not isinstance(
        error, ProviderRateLimitedError
    ):
        assert error.outcome_unknown is True


def test_error_envelope_without_success_is_read() -> None:
    body = json.dumps({"error": {"type": "billing_error", "code": "insufficient_balance"}}).encode()
    error = tf.error_from_response(402, body, None, "request_payout")
    assert type(error) is ProviderRejectedError
    assert error.provider_code == "insufficient_balance"


def test_flat_error_object_is_read_like_the_sdks_do() -> None:
    body = json.dumps({"type": "authentication_error", "code": "unauthorized"}).encode()
    error = tf.error_from_response(401, body, None, "request_payout")
    assert type(error) is ProviderAuthenticationError


def test_a_refused_credential_says_it_is_the_organizations_commet_key() -> None:
    # Commet's bare "Invalid API key." read as if the caller's gateway key were wrong.
    body = error_body("unauthorized", "authentication_error", message="Invalid API key.")
    error = tf.error_from_response(401, body, None, "add_bank_account")
    assert type(error) is ProviderAuthenticationError
    assert error.message == "Commet refused the organization's credentials: Invalid API key."


def test_insufficient_balance_says_so_instead_of_redacted_amounts() -> None:
    # The sandbox's (and plausibly Commet's) text quotes amounts, which the scrubbing of
    # possible account numbers turned into "Requested [redacted] but only [redacted] ...".
    body = error_body(
        "insufficient_balance",
        "billing_error",
        param="amount",
        message="Requested 99999999 but only 997500 is available.",
    )
    error = tf.error_from_response(400, body, "req_1", "request_payout")
    assert type(error) is ProviderRejectedError
    assert error.provider_code == "insufficient_balance"
    assert error.message == (
        "Commet refused the payout: it is more than the balance available for payouts."
    )


def test_validation_details_name_the_field_when_param_is_absent() -> None:
    body = json.dumps(
        {
            "success": False,
            "error": {
                "type": "validation_error",
                "code": "validation_error",
                "message": "Invalid body",
                "param": None,
                "details": [{"field": "bank.routingNumber", "message": "Invalid"}],
                "doc_url": None,
            },
        }
    ).encode()
    error = tf.error_from_response(400, body, None, "complete_payout_verification")
    assert isinstance(error, ProviderRejectedError)
    assert error.param == "bank.routingNumber"
    assert error.doc_url is None
    assert error.message == "Invalid body"


@pytest.mark.parametrize(
    ("status", "body", "expected", "outcome_unknown"),
    [
        (500, b"<html>Internal Server Error</html>", ProviderUnavailableError, True),
        (502, b"", ProviderUnavailableError, True),
        (503, b'{"success": false}', ProviderUnavailableError, True),
        (429, b"slow down", ProviderRateLimitedError, False),
        (404, b"<html>Not Found</html>", ProviderBadResponseError, False),
        (400, b'{"error": "bad"}', ProviderBadResponseError, False),
        (400, b'{"error": {"code": 12}}', ProviderBadResponseError, False),
        (400, b"[" * 5000, ProviderBadResponseError, False),
        (302, b"", ProviderBadResponseError, True),
    ],
)
def test_unreadable_error_bodies(
    status: int, body: bytes, expected: type[ProviderError], outcome_unknown: bool
) -> None:
    error = tf.error_from_response(status, body, "req_5", "request_payout", retry_after=1.0)
    assert type(error) is expected
    assert isinstance(error, ProviderError)
    assert error.http_status == status
    assert error.request_id == "req_5"
    assert getattr(error, "outcome_unknown", None) is outcome_unknown


def test_provider_messages_never_carry_submitted_numbers() -> None:
    body = error_body(
        "validation_error",
        "validation_error",
        message=f"accountNumber {ACCOUNT_NUMBER} with routing {ROUTING_NUMBER} and "
        "iban DE89370400440532013000 is invalid",
    )
    error = tf.error_from_response(400, body, None, "add_bank_account")
    for secret in (ACCOUNT_NUMBER, ROUTING_NUMBER, "DE89370400440532013000"):
        assert secret not in str(error)
    assert "is invalid" in str(error)


def test_provider_messages_are_capped() -> None:
    body = error_body("duplicate", "conflict_error", message="x" * 10_000)
    assert len(str(tf.error_from_response(409, body, None, "add_bank_account"))) <= 300


@settings(max_examples=200, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.binary(max_size=200)
    | st.builds(
        lambda code, type_, msg: json.dumps(
            {"error": {"code": code, "type": type_, "message": msg}}
        ).encode(),
        st.none() | st.sampled_from(get_args(wire.ErrorCode)) | st.text(max_size=10),
        st.none() | st.sampled_from(get_args(wire.ErrorType)) | st.text(max_size=10),
        st.none() | st.text(max_size=50),
    ),
    operation=st.sampled_from(get_args(tf.Operation)),
)
def test_error_from_response_always_returns_a_domain_error(
    status: int, body: bytes, operation: tf.Operation
) -> None:
    assert isinstance(tf.error_from_response(status, body, None, operation), PayoutGatewayError)
