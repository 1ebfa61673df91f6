"""Caller input validation: bank numbers, ISO codes, URLs, KYC branches, and clean messages."""

from __future__ import annotations

import pytest

from payout_gateway.domain.errors import InputValidationError
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    BankDetails,
    PayoutRequest,
    PayoutVerificationRequest,
    validated,
)

CANARY_ACCOUNT = "000123456789"
KYC = {
    "email": "owner@example.com",
    "business_type": "INDIVIDUAL",
    "business_url": "https://example.com",
    "document_url": "https://files.example.com/id.pdf",
    "bank": {"account_number": CANARY_ACCOUNT, "holder_name": "Ada Lovelace"},
    "individual": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+14155550123",
        "date_of_birth": "1990-01-31",
        "address": {"line1": "1 Main St", "city": "SF", "postal_code": "94105", "country": "us"},
    },
}


def bank(**overrides: object) -> dict[str, object]:
    return {"account_number": CANARY_ACCOUNT, "holder_name": "Ada", **overrides}


@pytest.mark.parametrize(
    ("submitted", "canonical"),
    [("000123456789", "000123456789"), ("0001 2345-6789", "000123456789"), ("1234", "1234")],
)
def test_account_numbers_are_canonicalized(submitted: str, canonical: str) -> None:
    details = validated(BankDetails, bank(account_number=submitted))
    assert details.account_number.get_secret_value() == canonical
    assert details.last4 == canonical[-4:]


def test_valid_iban_is_accepted_in_compact_form() -> None:
    details = validated(BankDetails, bank(account_number="GB82 WEST 1234 5698 7654 32"))
    assert details.account_number.get_secret_value() == "GB82WEST12345698765432"


@pytest.mark.parametrize(
    "bad",
    [
        "１２３４５６７８",  # full-width digits pass str.isdigit() but are not bank digits
        "١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "123",
        "123456789012345678",
        "12ab5678",
        "GB82WEST12345698765433",  # IBAN checksum off by one
        "GB82 WE\u017fT 1234 5698 7654 32",  # a long s, which str.upper() turns into "S"
        "",
    ],
)
def test_invalid_account_numbers_are_typed_errors_without_the_value(bad: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        validated(BankDetails, bank(account_number=bad))
    assert caught.value.path == ("account_number",)
    assert bad not in str(caught.value) or bad == ""


@pytest.mark.parametrize(
    ("routing", "ok"),
    [
        ("021000021", True),
        ("0210-00021", True),
        ("021000022", False),  # checksum
        ("02100002", False),  # length
        ("02100002A", False),  # letters
        ("０２１０００００２１", False),  # full-width
        # The checksum holds in each; the first two digits decide.
        ("001000009", True),  # U.S. Government
        ("121000002", True),  # Federal Reserve district 12
        ("211000006", True),  # thrift
        ("321000006", True),
        ("611000004", True),  # electronic
        ("721000004", True),
        ("801000005", True),  # traveler's checks
        ("000000000", False),
        ("131000005", False),
        ("201000003", False),
        ("331000009", False),
        ("601000001", False),
        ("731000007", False),
        ("811000008", False),
        ("991000009", False),
    ],
)
def test_routing_numbers_are_aba_checked(routing: str, ok: bool) -> None:
    if ok:
        assert validated(BankDetails, bank(routing_number=routing)).routing_number is not None
        return
    with pytest.raises(InputValidationError) as caught:
        validated(BankDetails, bank(routing_number=routing))
    assert caught.value.path == ("routing_number",)
    assert routing not in caught.value.message


@pytest.mark.parametrize(
    ("field", "value", "canonical"),
    [("country", "us", "US"), ("currency", "usd", "USD"), ("currency", " eur ", "EUR")],
)
def test_iso_codes_are_upper_cased(field: str, value: str, canonical: str) -> None:
    assert getattr(validated(BankDetails, bank(**{field: value})), field) == canonical


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("country", "XX"),
        ("country", "USA"),
        ("currency", "US$"),
        ("currency", "XYZ"),
        # Non-ASCII letters that str.upper() turns into ASCII ones ("US", "USD").
        ("country", "u\u017f"),
        ("currency", "u\u017fd"),
    ],
)
def test_unknown_iso_codes_are_rejected(field: str, value: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        validated(BankDetails, bank(**{field: value}))
    assert caught.value.path == (field,)


def test_secrets_never_appear_in_repr() -> None:
    details = validated(BankDetails, bank(routing_number="021000021"))
    assert CANARY_ACCOUNT not in repr(details)
    assert "021000021" not in repr(details)
    request = validated(AddBankAccountRequest, {"bank": bank()})
    assert CANARY_ACCOUNT not in repr(request) and CANARY_ACCOUNT not in str(request.model_dump())


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/id.pdf",
        "https://localhost/id.pdf",
        "https://127.0.0.1/id.pdf",
        "https://10.0.0.8/id.pdf",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://2130706433/x",
        "https://metadata.google.internal/x",
        "https://user:pw@example.com/x",
        # IPv4 in hex parts, as URL parsers (WHATWG, curl) read a numeric last label.
        "https://0x7f.0.0.1/x",
        "https://10.0x0.0.1/x",
        "https://0x7f.1/x",
        "https://example.0x10/x",
        "https://127.0.0%2e1/x",  # a percent-escape URL parsers decode in the host
    ],
)
def test_document_url_must_be_public_https(url: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        validated(PayoutVerificationRequest, {**KYC, "document_url": url})
    assert caught.value.path == ("document_url",)


def test_kyc_branch_must_match_business_type() -> None:
    with pytest.raises(InputValidationError) as caught:
        validated(PayoutVerificationRequest, {**KYC, "business_type": "COMPANY"})
    paths = {issue.path for issue in caught.value.issues}
    assert ("company",) in paths


def test_valid_kyc_parses_and_hides_personal_numbers() -> None:
    request = validated(
        PayoutVerificationRequest,
        {**KYC, "individual": {**KYC["individual"], "id_number": "X1234567"}},  # type: ignore[dict-item]
    )
    assert request.individual is not None
    assert request.individual.address.country == "US"
    assert "X1234567" not in repr(request)


def test_every_invalid_field_is_reported_with_its_path() -> None:
    with pytest.raises(InputValidationError) as caught:
        validated(
            PayoutVerificationRequest,
            {**KYC, "email": "nope", "bank": bank(routing_number="1")},
        )
    paths = {issue.path for issue in caught.value.issues}
    assert {("email",), ("bank", "routing_number")} <= paths


@pytest.mark.parametrize(
    "url", ["https://example.com/id.pdf", "https://8.8.8.8/x", "https://files.example-1.co/a_b"]
)
def test_document_url_on_a_public_host_is_accepted(url: str) -> None:
    request = validated(PayoutVerificationRequest, {**KYC, "document_url": url})
    assert request.document_url == url


@pytest.mark.parametrize("name", ["Ada\x00Lovelace", "Ada\nLovelace", "Ada\x1b[2J", "A\x9bda"])
def test_names_with_control_characters_are_typed_errors(name: str) -> None:
    # PostgreSQL cannot store a NUL: a holder name holding one failed the store after the
    # provider had created the account.
    for field in ("holder_name", "bank_name"):
        with pytest.raises(InputValidationError) as caught:
            validated(BankDetails, bank(**{field: name}))
        assert caught.value.path == (field,)


@pytest.mark.parametrize("name", ["\u200b", "\u200e\u200f", "\u200b\u2060\ufeff", "--", "\u2014 ."])
def test_names_without_a_letter_or_digit_are_typed_errors(name: str) -> None:
    # Zero-width spaces, direction marks or dashes alone read as empty to a person: no name a
    # bank can match the account with.
    for field in ("holder_name", "bank_name"):
        with pytest.raises(InputValidationError) as caught:
            validated(BankDetails, bank(**{field: name}))
        assert caught.value.path == (field,)
        assert caught.value.issues[0].message.endswith("must contain a letter or a digit")


@pytest.mark.parametrize("name", ["Ada Lovelace", "Zoë O'Brien-Smith", "李小龍", "3M Co.", "X"])
def test_names_with_a_letter_or_digit_are_accepted(name: str) -> None:
    assert validated(BankDetails, bank(holder_name=name)).holder_name == name


def test_payout_descriptions_keep_line_breaks_but_no_other_control_characters() -> None:
    amount = {"amount_minor": 2500, "currency": "USD"}
    kept = validated(PayoutRequest, {"amount": amount, "description": "October\r\n\tfees"})
    assert kept.description == "October\r\n\tfees"
    with pytest.raises(InputValidationError) as caught:
        validated(PayoutRequest, {"amount": amount, "description": "October\x00"})
    assert caught.value.path == ("description",)
