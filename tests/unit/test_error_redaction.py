"""GraphQL error messages lose every submitted value: by their known shapes, and by the
request's own values for any shape not known yet."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import GraphQLSyntaxError, parse
from hypothesis import given
from hypothesis import strategies as st

from payout_gateway.graphql.safety import REDACTED, redact_all, submitted_values


def redact(message: str, submitted: set[str] | None = None) -> str:
    (redacted,) = redact_all([message], submitted or set())
    return redacted


SECRET = "987654321012"


def test_a_message_shape_no_pattern_knows_still_loses_the_submitted_values() -> None:
    message = f"Variable '$input' is wrong somewhere new: {SECRET} (routing 021000021)"
    assert redact(message, {SECRET, "021000021"}) == (
        f"Variable '$input' is wrong somewhere new: {REDACTED} (routing {REDACTED})"
    )


def test_known_shapes_keep_where_and_what_was_wrong() -> None:
    message = (
        "Variable '$input' has invalid value at .bankAccount: Expected value of type "
        "'BankAccountInput' to include required field 'holderName', found: "
        f"{{'accountNumber': '{SECRET}'}}."
    )
    assert redact(message) == (
        "Variable '$input' has an invalid value at .bankAccount: Expected value of type "
        "'BankAccountInput' to include required field 'holderName'; the value given is not "
        "valid."
    )


def test_an_unknown_field_with_a_suggestion_loses_the_value_it_prints() -> None:
    # The value is printed escaped (a newline as backslash and n), so cutting the value as
    # sent would miss it.
    message = (
        "Expected value of type 'BankAccountInput' not to include unknown field "
        "'acountNumber'. Did you mean 'accountNumber' or 'routingNumber'? Found: "
        f"{{'acountNumber': '{SECRET}\\n', 'holderName': 'A'}}."
    )
    assert redact(message, {f"{SECRET}\n"}) == (
        "Expected value of type 'BankAccountInput' not to include unknown field "
        "'acountNumber'. Did you mean 'accountNumber' or 'routingNumber'? The value given is "
        "not valid."
    )


@pytest.mark.parametrize(
    ("document", "redacted"),
    [
        (f"{{ a }} {SECRET}", "Syntax Error: Unexpected Int."),
        (f"{{ a }} {SECRET}.5", "Syntax Error: Unexpected Float."),
        (f'{{ "{SECRET}" }}', "Syntax Error: Expected Name, found String."),
        (f'{{ """{SECRET}""" }}', "Syntax Error: Expected Name, found BlockString."),
        (f"{{ {SECRET} }}", "Syntax Error: Expected Name, found Int."),
        (f"fragment F on T {{ ...on {SECRET} }}", "Syntax Error: Expected Name, found Int."),
        (f'{{ a(x: "\\u{{{SECRET}}}") }}', "Syntax Error: Invalid Unicode escape sequence."),
        # A name too: an enum value is one.
        ("{ a } CHECKING", "Syntax Error: Unexpected Name."),
        # What quotes no value stays as graphql-core wrote it.
        ("{ a", "Syntax Error: Expected Name, found <EOF>."),
        (f"{{ a(x: {SECRET}a) }}", "Syntax Error: Invalid number, expected digit but got: 'a'."),
    ],
)
def test_a_syntax_error_loses_the_value_it_quotes(document: str, redacted: str) -> None:
    # The document does not parse: none of its literals are known to cut by value.
    try:
        parse(document)
    except GraphQLSyntaxError as error:
        message = error.message
    else:
        raise AssertionError(f"{document!r} parsed")
    assert redact(message) == redacted


def test_submitted_values_come_from_the_variables_and_the_document_s_literals() -> None:
    variables: dict[str, Any] = {
        "input": {"bankAccount": {"accountNumber": SECRET, "holderName": "Ada Lovelace"}},
        "amounts": [12345, 1.5, True, None, "ab"],
    }
    document = parse('mutation { a(x: "021000021", y: 99999, z: 0.25, e: CHECKING) }')
    assert submitted_values(variables, document) == {
        SECRET,
        "Ada Lovelace",
        "12345",
        "021000021",
        "99999",
        "0.25",
        "CHECKING",
    }


def test_deeply_nested_variables_are_walked_without_recursion() -> None:
    nested: Any = SECRET
    for _ in range(50_000):
        nested = [nested]
    assert submitted_values({"input": nested}, None) == {SECRET}


@given(
    before=st.text(alphabet="abcdefgh '$:.,{}", max_size=30),
    after=st.text(alphabet="abcdefgh '$:.,{}", max_size=30),
    values=st.lists(st.text(alphabet="0123456789", min_size=4, max_size=16), min_size=1),
)
def test_no_submitted_digits_survive_any_message(
    before: str, after: str, values: list[str]
) -> None:
    message = before + " ".join(values) + after
    cleaned = redact(message, set(values))
    assert not any(value in cleaned for value in values)
