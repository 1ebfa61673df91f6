"""Production settings: no GraphiQL, no introspection, no field suggestions, no API docs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import RunningGateway, running_gateway

INTROSPECTION = "{ __schema { queryType { name } } }"


@pytest.fixture
def production(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path, providers={}, environment="production") as gw:
        yield gw


@pytest.fixture
def development(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path, providers={}) as gw:
        yield gw


def post(gw: RunningGateway, query: str) -> dict[str, object]:
    response = httpx.post(gw.graphql_url, json={"query": query}, headers=gw.headers("commet-a"))
    body: dict[str, object] = response.json()
    return body


def test_production_turns_the_explorer_and_schema_discovery_off(production: RunningGateway) -> None:
    page = httpx.get(production.graphql_url, headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    assert "errors" in post(production, INTROSPECTION)
    typo = post(production, "{ organizaton { name } }")
    assert "Did you mean" not in str(typo)
    assert httpx.get(f"{production.url}/docs").status_code == 404
    assert httpx.get(f"{production.url}/openapi.json").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "{ bankAccounts(frist: 2) { edges { cursor } } }",  # an argument
        "query($s: BankAcountStatus) { bankAccounts(status: $s) { edges { cursor } } }",  # a type
        '{ node(id: "x") { ... on BankAcount { id } } }',  # a type condition
        "{ bankAccounts(status: ACTIV) { edges { cursor } } }",  # an enum value
        # An input field, as a literal and as a variable.
        'mutation { addBankAccount(input: {bankAccount: {acountNumber: "1", holderName: "A"}}) '
        "{ __typename } }",
    ],
)
def test_production_suggests_no_name_anywhere(production: RunningGateway, query: str) -> None:
    # graphql-core suggests names for arguments, types, enum values and input fields too;
    # Strawberry's switch only drops the suggestion of a field.
    body = post(production, query)
    assert body.get("errors"), body
    assert "Did you mean" not in str(body)


def test_production_suggests_no_input_field_of_a_variable(production: RunningGateway) -> None:
    query = "mutation($i: AddBankAccountInput!) { addBankAccount(input: $i) { __typename } }"
    variables = {"i": {"bankAccount": {"acountNumber": "1", "holderName": "A"}}}
    response = httpx.post(
        production.graphql_url,
        json={"query": query, "variables": variables},
        headers=production.headers("commet-a"),
    )
    assert response.json().get("errors"), response.text
    assert "Did you mean" not in response.text


def test_development_keeps_them_on(development: RunningGateway) -> None:
    page = httpx.get(development.graphql_url, headers={"accept": "text/html"})
    assert "graphiql" in page.text.lower()
    assert post(development, INTROSPECTION).get("errors") is None
    assert "Did you mean" in str(post(development, "{ organizaton { name } }"))
    assert "Did you mean" in str(post(development, "{ bankAccounts(frist: 2) { cursor } }"))


def test_health_and_readiness(development: RunningGateway) -> None:
    assert httpx.get(f"{development.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{development.url}/readyz").json() == {"status": "ready", "fanout": "ok"}
