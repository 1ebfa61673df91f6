"""The compiled input converters build exactly what Strawberry's own conversion builds."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, cast

import pytest
import strawberry
from graphql import GraphQLInputType, coerce_input_value
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import convert_argument
from strawberry.types.base import get_object_definition

from payout_gateway.domain.errors import InputValidationError
from payout_gateway.graphql.input_conversion import use_compiled_conversion
from payout_gateway.graphql.inputs import (
    AddBankAccountInput,
    BankAccountInput,
    CompletePayoutVerificationInput,
    RequestPayoutInput,
)
from payout_gateway.graphql.schema import build_schema

SCHEMA = build_schema()
SCALARS = SCHEMA.schema_converter.scalar_registry

BANK = {"accountNumber": "000123456789", "holderName": "Ada"}
ADDRESS = {"line1": "1 Main St", "city": "San Francisco", "postalCode": "94105", "country": "US"}
VERIFY = {
    "email": "ada@example.com",
    "businessUrl": "https://example.com",
    "documentUrl": "https://files.example.com/id.pdf",
    "bankAccount": BANK,
}

CASES: list[tuple[type, dict[str, Any]]] = [
    (AddBankAccountInput, {"bankAccount": BANK}),
    (
        AddBankAccountInput,
        {
            "bankAccount": {
                **BANK,
                "routingNumber": "021000021",
                "holderType": "COMPANY",
                "accountType": "SAVINGS",
                "bankName": "Bank",
                "country": "US",
                "currency": "USD",
            },
            "setDefault": True,
            "metadata": {"order": "42", "nested": {"list": [1, None]}},
        },
    ),
    (
        AddBankAccountInput,
        {"bankAccount": {**BANK, "routingNumber": None, "holderType": None}, "metadata": None},
    ),
    (
        CompletePayoutVerificationInput,
        {
            **VERIFY,
            "businessType": "INDIVIDUAL",
            "individual": {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "phone": "+14155550123",
                "dateOfBirth": "1990-01-31",
                "address": {**ADDRESS, "line2": None},
                "ssnLast4": "1234",
            },
        },
    ),
    (
        CompletePayoutVerificationInput,
        {
            **VERIFY,
            "businessType": "COMPANY",
            "company": {
                "name": "Analytical Engines",
                "taxId": "12-3456789",
                "address": ADDRESS,
                "representative": {"firstName": "Ada", "lastName": "Lovelace"},
            },
            "individual": None,
        },
    ),
    (RequestPayoutInput, {"amount": 1500}),
    (RequestPayoutInput, {"amount": 1500, "currency": "EUR", "description": "June"}),
]


def convert(
    input_type: type, value: dict[str, Any], config: StrawberryConfig = SCHEMA.config
) -> Any:
    """The argument as the resolver gets it: coerced by graphql-core, then by Strawberry."""
    graphql_type = SCHEMA._schema.get_type(input_type.__name__)
    assert graphql_type is not None
    coerced = coerce_input_value(value, cast(GraphQLInputType, graphql_type))
    return convert_argument(coerced, input_type, SCALARS, config)


@pytest.mark.parametrize(("input_type", "value"), CASES)
def test_compiled_conversion_builds_what_strawberry_builds(
    input_type: type, value: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = get_object_definition(input_type, strict=True)
    assert definition.from_input is not None
    compiled = convert(input_type, value)
    monkeypatch.setattr(definition, "from_input", None)
    expected = convert(input_type, value)
    assert type(compiled) is input_type
    assert compiled == expected


def test_a_schema_naming_fields_differently_gets_its_own_converters() -> None:
    snake_case = StrawberryConfig(auto_camel_case=False)
    value = {"bank_account": {"account_number": "000123456789", "holder_name": "Ada"}}
    built = convert_argument(value, AddBankAccountInput, SCALARS, snake_case)
    assert built.bank_account == BankAccountInput(account_number="000123456789", holder_name="Ada")
    # And back: the gateway's own schema is compiled again for its names.
    assert convert(AddBankAccountInput, {"bankAccount": BANK}).bank_account.holder_name == "Ada"


@strawberry.input
class WithList:
    tags: list[str]


@strawberry.input
class WithMaybe:
    note: strawberry.Maybe[str]


@pytest.mark.parametrize(("input_type", "value"), [(WithList, {"tags": ["a"]}), (WithMaybe, {})])
def test_field_kinds_it_has_no_converter_for_are_refused(
    input_type: type, value: dict[str, Any]
) -> None:
    use_compiled_conversion(input_type)
    for _ in range(2):  # and again: nothing half compiled was kept
        with pytest.raises(TypeError, match="no compiled conversion"):
            convert_argument(value, input_type, SCALARS, SCHEMA.config)


@pytest.mark.parametrize("currency", ["", "  "])
def test_a_payout_s_currency_given_empty_is_refused_not_defaulted(currency: str) -> None:
    # An empty currency in a bank account's input is a ValidationError; a payout's was quietly
    # read as "the organization's currency".
    with pytest.raises(InputValidationError) as caught:
        RequestPayoutInput(amount=1500, currency=currency).to_domain("USD")
    assert [issue.path for issue in caught.value.issues] == [("amount", "currency")]
    assert RequestPayoutInput(amount=1500).to_domain("USD").amount.currency == "USD"


def test_the_schema_builds_whichever_module_was_imported_first() -> None:
    # inputs.py imported alone before the schema let Strawberry define the domain enums it
    # takes a second time, bare, and build_schema() failed (DuplicatedTypeName); a fresh
    # interpreter, as this module run alone under pytest was.
    script = (
        "from payout_gateway.graphql.inputs import RequestPayoutInput\n"
        "from payout_gateway.graphql.schema import build_schema\n"
        "print(len(build_schema().as_str()) > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr[-2000:]
