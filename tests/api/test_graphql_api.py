"""The GraphQL API over a real socket, with fake providers: auth, unions, paging, batching."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payout_gateway.domain import errors as domain
from payout_gateway.domain.enums import Provider
from payout_gateway.graphql.safety import NOT_ACCEPTED, NOT_BEARER, IsAuthenticated
from payout_gateway.graphql.schema import build_schema
from tests.support.fakes import FakeProvider, fake_providers
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.pii import assert_no_full_numbers

ACCOUNT = "000123456789"
ROUTING = "021000021"

ADD = """
mutation Add($input: AddBankAccountInput!, $key: String) {
  addBankAccount(input: $input, idempotencyKey: $key) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { id last4 isDefault status provider holderName } }
    ... on UserError { message code retryable }
    ... on ValidationError { field issues { field message } }
    ... on ProviderRejectedError { providerCode docUrl requestId httpStatus }
    ... on ProviderUnavailableError { outcomeUnknown retryAfterSeconds }
    ... on OperationRetiredError { providerCode }
  }
}
"""


INLINE_ADD = (
    "mutation { addBankAccount(input: {bankAccount: "
    '{accountNumber: "000123456789", holderName: "A"}}) { __typename } }'
)


def add_input(number: str = ACCOUNT, **bank: Any) -> dict[str, Any]:
    return {"bankAccount": {"accountNumber": number, "holderName": "Ada", **bank}}


@pytest.fixture
def fakes() -> dict[Provider, FakeProvider]:
    return fake_providers()


@pytest.fixture
def gw(tmp_path: Path, fakes: dict[Provider, FakeProvider]) -> Iterator[RunningGateway]:
    # No background refresh: these tests count the store's statements exactly.
    with running_gateway(tmp_path, providers=fakes, refresh_interval_seconds=0) as running:
        yield running


async def gql(
    gw: RunningGateway,
    query: str,
    variables: dict[str, Any] | None = None,
    org: str | None = "commet-a",
) -> dict[str, Any]:
    headers = gw.headers(org) if org else {}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gw.graphql_url, json={"query": query, "variables": variables or {}}, headers=headers
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert_no_full_numbers(response.text)
    return body


UNAUTHENTICATED_CALLS = [
    "{ organization { name } }",
    "{ payoutAccount { status } }",
    "{ bankAccounts { edges { cursor } } }",
    '{ bankAccount(id: "x") { id } }',
    '{ node(id: "x") { id } }',
    '{ nodes(ids: ["x"]) { id } }',
    "{ payouts { edges { cursor } } }",
    "{ statusChanges { objectId } }",
    INLINE_ADD,
    "mutation { requestPayout(input: {amount: 2500}) { __typename } }",
    'mutation { completePayoutVerification(input: {email: "a@b.co", businessType: COMPANY, '
    'businessUrl: "https://b.co", documentUrl: "https://b.co/d", bankAccount: '
    '{accountNumber: "000123456789", holderName: "A"}}) { __typename } }',
]


def test_every_query_and_mutation_root_field_is_tried_without_credentials() -> None:
    # A root field added later cannot be left out of the test below.
    schema = build_schema()._schema
    assert schema.query_type is not None and schema.mutation_type is not None
    fields = {*schema.query_type.fields, *schema.mutation_type.fields}
    root_field = re.compile(r"(?:mutation )?\{ (\w+)")
    tried = {root_field.match(query)[1] for query in UNAUTHENTICATED_CALLS}  # type: ignore[index]
    assert tried == fields


@pytest.mark.parametrize("query", UNAUTHENTICATED_CALLS)
async def test_every_root_field_refuses_callers_without_credentials(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider], query: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer pgw_wrong"}, {"Authorization": "Basic abc"}):
        async with httpx.AsyncClient() as client:
            body = (
                await client.post(gw.graphql_url, json={"query": query}, headers=headers)
            ).json()
        # Refused: nothing resolved (nullable fields read null), and the error says why.
        assert body["data"] is None or set(body["data"].values()) == {None}
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert sum(sum(f.calls.values()) for f in fakes.values()) == 0


@pytest.mark.parametrize("query", UNAUTHENTICATED_CALLS)
async def test_a_refused_credential_is_told_apart_from_a_missing_one(
    gw: RunningGateway, query: str
) -> None:
    # A caller that sent a key with a typo was told to send 'Authorization: Bearer ...',
    # which reads as if the header had not arrived. The refusals name what was wrong, as the
    # WebSocket's close reasons do; unknown, revoked and expired still read alike.
    for headers, message in (
        ({}, IsAuthenticated.message),
        ({"Authorization": "Bearer pgw_wrong"}, NOT_ACCEPTED),
        ({"Authorization": "pgw_without_scheme"}, NOT_BEARER),
        ({"Authorization": "Basic abc"}, NOT_BEARER),
    ):
        async with httpx.AsyncClient() as client:
            body = (
                await client.post(gw.graphql_url, json={"query": query}, headers=headers)
            ).json()
        assert [error["message"] for error in body["errors"]] == [message], headers
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_add_bank_account_shows_only_last4(gw: RunningGateway) -> None:
    body = await gql(gw, ADD, {"input": add_input(routingNumber=ROUTING), "key": "k1"})
    result = body["data"]["addBankAccount"]
    assert result["__typename"] == "AddBankAccountSuccess"
    assert result["bankAccount"]["last4"] == "6789"
    assert ACCOUNT not in str(body)
    assert ROUTING not in str(body)


async def test_invalid_input_is_a_validation_error_naming_the_field(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    body = await gql(gw, ADD, {"input": add_input(routingNumber="021000022", country="XX")})
    result = body["data"]["addBankAccount"]
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION_FAILED"
    fields = {tuple(issue["field"]) for issue in result["issues"]}
    assert fields == {
        ("input", "bankAccount", "routingNumber"),
        ("input", "bankAccount", "country"),
    }
    assert fakes[Provider.COMMET].calls["add_bank_account"] == 0


VERIFY_PATHS = """
mutation Verify($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) {
    __typename
    ... on ValidationError { message field issues { field message } }
  }
}
"""
_ADDRESS = {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"}
_PERSON = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "phone": "+14155550123",
    "dateOfBirth": "1990-01-31",
}
_COMPANY = {
    "name": "Acme",
    "taxId": "12-3456789",
    "address": _ADDRESS,
    "representative": {"firstName": "Ada", "lastName": "Lovelace"},
}


@pytest.mark.parametrize(
    ("business_type", "branches", "path", "message"),
    [
        ("INDIVIDUAL", {}, "individual", "is required when businessType is INDIVIDUAL"),
        (
            "INDIVIDUAL",
            {"individual": {**_PERSON, "address": _ADDRESS}, "company": _COMPANY},
            "company",
            "must be omitted when businessType is INDIVIDUAL",
        ),
        ("COMPANY", {}, "company", "is required when businessType is COMPANY"),
        (
            "COMPANY",
            {"company": _COMPANY, "individual": {**_PERSON, "address": _ADDRESS}},
            "individual",
            "must be omitted when businessType is COMPANY",
        ),
    ],
)
async def test_a_kyc_branch_error_names_business_type_as_the_input_does(
    gw: RunningGateway,
    fakes: dict[Provider, FakeProvider],
    business_type: str,
    branches: dict[str, Any],
    path: str,
    message: str,
) -> None:
    # The domain's message said business_type, a name no input of this API has.
    kyc = {
        "email": "ada@example.com",
        "businessType": business_type,
        "businessUrl": "https://ada.example.com",
        "documentUrl": "https://files.example.com/ada.pdf",
        "bankAccount": {"accountNumber": ACCOUNT, "holderName": "Ada"},
        **branches,
    }
    result = (await gql(gw, VERIFY_PATHS, {"input": kyc}))["data"]["completePayoutVerification"]
    assert result == {
        "__typename": "ValidationError",
        "message": f"input.{path}: {message}",
        "field": ["input", path],
        "issues": [{"field": ["input", path], "message": message}],
    }
    assert fakes[Provider.COMMET].calls["complete_payout_verification"] == 0


async def test_idempotency_key_is_validated(gw: RunningGateway) -> None:
    body = await gql(gw, ADD, {"input": add_input(), "key": "x" * 256})
    assert body["data"]["addBankAccount"]["field"] == ["idempotencyKey"]


# Both error types' paths in one selection: ValidationError.field is [String!]! and the
# deprecated ProviderRejectedError.field [String!], a conflict GraphQL validation refuses, so a
# provider's refused parameter is providerField too.
BOTH_PATHS = """
mutation Add($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename
    ... on ValidationError { field }
    ... on ProviderRejectedError { providerField }
  }
}
"""


async def test_one_selection_reads_the_path_of_a_validation_error_and_a_provider_rejection(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    invalid = await gql(gw, BOTH_PATHS, {"input": add_input(routingNumber="021000022")})
    assert "errors" not in invalid, invalid
    assert invalid["data"]["addBankAccount"] == {
        "__typename": "ValidationError",
        "field": ["input", "bankAccount", "routingNumber"],
    }
    fakes[Provider.COMMET].fail_with = domain.ProviderRejectedError(
        "no", provider=Provider.COMMET, param="bank_account.account_number"
    )
    refused = await gql(gw, BOTH_PATHS, {"input": add_input()})
    assert "errors" not in refused, refused
    assert refused["data"]["addBankAccount"] == {
        "__typename": "ProviderRejectedError",
        "providerField": ["bankAccount", "accountNumber"],
    }
    # The deprecated field answers as before, for clients that select it on its own.
    old = await gql(
        gw,
        "mutation Add($input: AddBankAccountInput!) { addBankAccount(input: $input) "
        "{ ... on ProviderRejectedError { field } } }",
        {"input": add_input()},
    )
    assert old["data"]["addBankAccount"] == {"field": ["bankAccount", "accountNumber"]}


async def test_type_errors_never_echo_the_submitted_value(gw: RunningGateway) -> None:
    as_variable = {"input": {"bankAccount": {"accountNumber": 987654321012, "holderName": "A"}}}
    body = await gql(gw, ADD, as_variable)
    assert "errors" in body
    assert "987654321012" not in str(body)
    as_literal = INLINE_ADD.replace('"000123456789"', "987654321012")
    body = await gql(gw, as_literal)
    assert "errors" in body
    assert "987654321012" not in str(body)


SECRET = "987654321012"
INLINE = "mutation {{ addBankAccount(input: {{bankAccount: {bank}}}) {{ __typename }} }}"
SECRET_BANK = {"accountNumber": SECRET, "holderName": "A"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        # Each of graphql-core's coercion messages that prints the value it was given.
        (ADD, {"input": {"accountNumber": SECRET}}),
        (ADD, {"input": {"bankAccount": {"accountNumber": SECRET}}}),
        (ADD, {"input": {"bankAccount": {**SECRET_BANK, "x": 1}}}),
        # A misspelt field gets "Did you mean …? Found: <value>", which prints a value with a
        # control character escaped: the value as sent is then not in the message to cut.
        (ADD, {"input": {"bankAccount": {"acountNumber": f"{SECRET}\n", "holderName": "A"}}}),
        (INLINE.format(bank=f'{{acountNumber: "{SECRET}\\t", holderName: "A"}}'), None),
        (ADD, {"input": {"bankAccount": {**SECRET_BANK, "accountType": SECRET}}}),
        (ADD, {"input": {"bankAccount": [SECRET]}}),
        (ADD, {"input": SECRET}),
        (ADD, {"input": add_input(SECRET), "key": int(SECRET)}),
        (INLINE.format(bank=f'{{accountNumber: "{SECRET}"}}'), None),
        (INLINE.format(bank=f'{{accountNumber: "1", holderName: "A", x: "{SECRET}"}}'), None),
        (
            INLINE.format(bank=f'{{accountNumber: "1", holderName: "A", accountType: X{SECRET}}}'),
            None,
        ),
        (f'mutation {{ addBankAccount(input: "{SECRET}") {{ __typename }} }}', None),
        # And its syntax errors, which quote the token the parser stopped at.
        (f"{{ organization {{ name }} }} {SECRET}", None),
        (f'{{ "{SECRET}" }}', None),
    ],
)
async def test_input_errors_say_what_is_wrong_without_the_value(
    gw: RunningGateway, query: str, variables: dict[str, Any] | None
) -> None:
    # Logged messages are checked too: the session's log canary fails on any long digit run.
    body = await gql(gw, query, variables)
    assert body["errors"], body
    assert SECRET not in str(body)
    assert all(error["message"] != "Unexpected error." for error in body["errors"]), body


@pytest.mark.parametrize(
    ("error", "typename", "code"),
    [
        (
            domain.PayoutAccountRequiredError(),
            "PayoutAccountRequiredError",
            "PAYOUT_ACCOUNT_REQUIRED",
        ),
        (
            domain.ProviderRejectedError(
                "no",
                provider=Provider.COMMET,
                provider_code="duplicate",
                doc_url="https://d",
                http_status=409,
                request_id="req_1",
            ),
            "ProviderRejectedError",
            "PROVIDER_REJECTED",
        ),
        (
            domain.ProviderAuthenticationError(
                "bad key", provider=Provider.COMMET, provider_code="unauthorized"
            ),
            "ProviderRejectedError",
            "PROVIDER_AUTHENTICATION_FAILED",
        ),
        (
            domain.OperationRetiredError(
                "use the dashboard", provider=Provider.COMMET, provider_code="endpoint_deprecated"
            ),
            "OperationRetiredError",
            "OPERATION_RETIRED",
        ),
        (
            domain.ProviderTimeoutError("slow", provider=Provider.COMMET, outcome_unknown=True),
            "ProviderUnavailableError",
            "PROVIDER_TIMEOUT",
        ),
        (
            domain.ProviderRateLimitedError("later", provider=Provider.COMMET, retry_after=3),
            "ProviderUnavailableError",
            "PROVIDER_RATE_LIMITED",
        ),
        (
            domain.ProviderCircuitOpenError("resting", provider=Provider.COMMET, retry_after=12),
            "ProviderUnavailableError",
            "PROVIDER_CIRCUIT_OPEN",
        ),
        (
            domain.ProviderBadResponseError("html", provider=Provider.COMMET),
            "ProviderUnavailableError",
            "PROVIDER_BAD_RESPONSE",
        ),
        (
            domain.IdempotencyConflictError("reused"),
            "IdempotencyConflictError",
            "IDEMPOTENCY_KEY_REUSED",
        ),
        (
            domain.IdempotencyInProgressError("running"),
            "IdempotencyInProgressError",
            "IDEMPOTENCY_IN_PROGRESS",
        ),
        (domain.NotPermittedError("no"), "NotPermittedError", "NOT_PERMITTED"),
        (
            domain.UnsupportedOperationError(Provider.COMMET, "x"),
            "UnsupportedOperationError",
            "UNSUPPORTED_OPERATION",
        ),
        (domain.NotFoundError("none"), "NotFoundError", "NOT_FOUND"),
        (domain.StoreUnavailableError(), "StoreUnavailableError", "STORE_UNAVAILABLE"),
    ],
)
async def test_domain_errors_become_typed_union_members(
    gw: RunningGateway,
    fakes: dict[Provider, FakeProvider],
    error: Exception,
    typename: str,
    code: str,
) -> None:
    fakes[Provider.COMMET].fail_with = error
    result = (await gql(gw, ADD, {"input": add_input()}))["data"]["addBankAccount"]
    assert result["__typename"] == typename
    assert result["code"] == code


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (
            domain.ProviderUnavailableError(
                "down", provider=Provider.COMMET, outcome_unknown=True, retry_after=45
            ),
            45,
        ),
        (domain.ProviderRateLimitedError("slow", provider=Provider.COMMET, retry_after=7), 7),
        (domain.ProviderTimeoutError("late", provider=Provider.COMMET, outcome_unknown=True), None),
    ],
)
async def test_the_wait_a_provider_asked_for_reaches_the_caller(
    gw: RunningGateway,
    fakes: dict[Provider, FakeProvider],
    error: Exception,
    retry_after: float | None,
) -> None:
    fakes[Provider.COMMET].fail_with = error
    result = (await gql(gw, ADD, {"input": add_input()}))["data"]["addBankAccount"]
    assert result["__typename"] == "ProviderUnavailableError"
    assert result["retryAfterSeconds"] == retry_after


async def test_unexpected_exceptions_are_masked(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    fakes[Provider.COMMET].fail_with = RuntimeError("secret internals /etc/passwd")
    body = await gql(gw, ADD, {"input": add_input()})
    assert body["errors"][0]["message"] == "Unexpected error."
    assert "internals" not in str(body)
    assert "Traceback" not in str(body)


async def test_a_masked_error_names_the_request_id_its_log_lines_carry(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider], caplog: pytest.LogCaptureFixture
) -> None:
    fakes[Provider.COMMET].fail_with = RuntimeError("secret internals")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gw.graphql_url,
            json={"query": ADD, "variables": {"input": add_input()}},
            headers=gw.headers("commet-a"),
        )
    request_id = response.headers["x-request-id"]
    (error,) = response.json()["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"requestId": request_id}
    access = [r for r in caplog.records if r.name == "payout_gateway.access"]
    assert [getattr(r, "request_id", None) for r in access][-1] == request_id


@pytest.mark.parametrize("path", ["/graphql", "/healthz", "/nowhere"])
async def test_every_answer_has_a_request_id_and_a_plain_one_given_is_kept(
    gw: RunningGateway, path: str
) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as client:
        fresh = await client.post(path, json={"query": "{ __typename }"})
        given = await client.post(
            path, json={"query": "{ __typename }"}, headers={"X-Request-Id": "lb-1234.5"}
        )
        odd = await client.post(
            path, json={"query": "{ __typename }"}, headers={"X-Request-Id": "a b<script>"}
        )
    generated = fresh.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert given.headers["x-request-id"] == "lb-1234.5"
    assert odd.headers["x-request-id"] not in ("a b<script>", generated)


async def test_pages_walk_all_accounts_and_page_size_is_capped(gw: RunningGateway) -> None:
    for n in range(7):
        await gql(gw, ADD, {"input": add_input(f"0001234567{n:02d}")})
    query = """query($after: String) { bankAccounts(first: 3, after: $after) {
        edges { cursor node { last4 } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(gw, query, {"after": after}))["data"]["bankAccounts"]
        seen += [edge["node"]["last4"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == [f"67{n:02d}" for n in range(7)]
    assert len(seen) == 7
    too_many = await gql(gw, "{ bankAccounts(first: 1000000) { edges { cursor } } }")
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "100" in too_many["errors"][0]["message"]
    bad_cursor = await gql(gw, '{ bankAccounts(after: "!!") { edges { cursor } } }')
    assert bad_cursor["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("connection", ["bankAccounts", "payouts"])
@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T00:00:00",  # no offset: issued ones have one
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    ],
)
async def test_an_edited_cursor_time_is_a_bad_cursor_not_an_unexpected_error(
    gw: RunningGateway, connection: str, stamp: str
) -> None:
    cursor = base64.urlsafe_b64encode(f"{stamp}|ba_1".encode()).decode().rstrip("=")
    query = f"query($after: String) {{ {connection}(after: $after) {{ edges {{ cursor }} }} }}"
    body = await gql(gw, query, {"after": cursor})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"] == "The 'after' cursor is not one this API issued."


async def test_foreign_ids_read_exactly_like_nonexistent_ones(gw: RunningGateway) -> None:
    mine = (await gql(gw, ADD, {"input": add_input()}, org="commet-a"))["data"]["addBankAccount"]
    account_id = mine["bankAccount"]["id"]
    query = (
        "query($id: ID!) { bankAccount(id: $id) { id } node(id: $id) { id } "
        "nodes(ids: [$id]) { id } }"
    )
    own = await gql(gw, query, {"id": account_id}, org="commet-a")
    assert own["data"]["bankAccount"]["id"] == account_id
    assert own["data"]["node"]["id"] == account_id
    foreign = await gql(gw, query, {"id": account_id}, org="commet-b")
    missing_id = account_id[:-4] + ("AAAA" if not account_id.endswith("AAAA") else "BBBB")
    missing = await gql(gw, query, {"id": missing_id}, org="commet-b")
    assert foreign == missing == {"data": {"bankAccount": None, "node": None, "nodes": [None]}}


@pytest.mark.parametrize("type_name", ["Payout", "PayoutAccount", "Organization", "Query"])
async def test_an_id_naming_another_type_reads_like_an_unknown_one_everywhere(
    gw: RunningGateway, type_name: str
) -> None:
    # statusChanges read only the gateway id of an objectId, whatever type it named: an
    # account's id re-encoded as a Payout's (or a type with no status) answered its trail,
    # where node and bankAccount answer such an id as an unknown one.
    mine = (await gql(gw, ADD, {"input": add_input()}))["data"]["addBankAccount"]
    account_id = mine["bankAccount"]["id"]
    query = (
        "query($id: ID!) { bankAccount(id: $id) { id } node(id: $id) { id } "
        "nodes(ids: [$id]) { id } statusChanges(objectId: $id) { objectId } }"
    )
    own = await gql(gw, query, {"id": account_id})
    assert [c["objectId"] for c in own["data"]["statusChanges"]] == [account_id]
    type_name_of, gateway_id = base64.b64decode(account_id).decode().split(":", 1)
    assert type_name_of == "BankAccount"
    retyped = base64.b64encode(f"{type_name}:{gateway_id}".encode()).decode()
    missing = base64.b64encode(b"BankAccount:ba_00000000000000000000000000000000").decode()
    unknown = {"data": {"bankAccount": None, "node": None, "nodes": [None], "statusChanges": []}}
    assert await gql(gw, query, {"id": missing}) == unknown
    assert await gql(gw, query, {"id": retyped}) == unknown


async def test_a_query_naming_100_accounts_is_one_store_read(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    ids = []
    for n in range(100):
        created = await gql(gw, ADD, {"input": add_input(f"00012345{n:04d}")})
        ids.append(created["data"]["addBankAccount"]["bankAccount"]["id"])
    calls_before = dict(fakes[Provider.COMMET].calls)
    aliases = " ".join(f'a{n}: bankAccount(id: "{i}") {{ last4 }}' for n, i in enumerate(ids))
    by_ids = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"

    async def own_statements(query: str, variables: dict[str, Any] | None = None) -> int:
        """The statements one run of ``query`` sends. The store's counter is the process's:
        the status refresher (every 5 s) or an expired authentication-cache entry can land in
        a run's window and only ever add, so the fewest over three runs is the query's own."""
        counts = []
        for _ in range(3):
            before = gw.state.store.statements
            body = await gql(gw, query, variables)
            counts.append(gw.state.store.statements - before)
            answers = list(body["data"].values())
            answers = answers[0] if len(answers) == 1 else answers
            assert len(answers) == 100 and all(answer is not None for answer in answers)
        return min(counts)

    # One SELECT for the 100 accounts, named by aliases or by a list of ids.
    assert await own_statements(f"{{ {aliases} }}") == 1
    assert await own_statements(by_ids, {"ids": ids}) == 1
    assert dict(fakes[Provider.COMMET].calls) == calls_before


async def test_organization_reports_provider_capabilities(gw: RunningGateway) -> None:
    query = """{ organization { name provider country currency capabilities {
        takesKyc hasDefaultAccounts accountCountryFromInput requiredBankAccountFields
        bankAccountFieldsFromProfile } } }"""
    commet = (await gql(gw, query, org="commet-a"))["data"]["organization"]
    assert commet["provider"] == "COMMET"
    assert commet["capabilities"]["takesKyc"] is True
    assert commet["capabilities"]["accountCountryFromInput"] is False
    paygentic = (await gql(gw, query, org="paygentic-a"))["data"]["organization"]
    assert paygentic["provider"] == "PAYGENTIC"
    assert paygentic["capabilities"]["takesKyc"] is False
    assert paygentic["capabilities"]["accountCountryFromInput"] is True


async def test_graphiql_page_is_served_in_development(gw: RunningGateway) -> None:
    async with httpx.AsyncClient() as client:
        page = await client.get(gw.graphql_url, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


async def test_mutations_are_refused_over_get_and_non_json_posts(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    mutation = INLINE_ADD
    # The test's own HTTP client logs URLs, so the GET carries a number-free document.
    get_mutation = INLINE_ADD.replace("000123456789", "not-a-number")
    async with httpx.AsyncClient() as client:
        via_get = await client.get(
            gw.graphql_url, params={"query": get_mutation}, headers=gw.headers("commet-a")
        )
        form = await client.post(
            gw.graphql_url, data={"query": mutation}, headers=gw.headers("commet-a")
        )
        text = await client.post(
            gw.graphql_url,
            content=mutation,
            headers={**gw.headers("commet-a"), "content-type": "text/plain"},
        )
        # The GraphQL multipart request spec's shape (file uploads), a form a page may post.
        multipart = await client.post(
            gw.graphql_url,
            data={"operations": json.dumps({"query": mutation}), "map": "{}"},
            files={"0": ("a.txt", b"x")},
            headers=gw.headers("commet-a"),
        )
    assert via_get.status_code >= 400
    assert form.status_code >= 400
    assert text.status_code >= 400
    assert 400 <= multipart.status_code < 500
    assert fakes[Provider.COMMET].calls["add_bank_account"] == 0


async def test_hostile_bodies_get_4xx_never_5xx(gw: RunningGateway) -> None:
    async with httpx.AsyncClient() as client:
        brackets = await client.post(
            gw.graphql_url,
            content=b"[" * 5000,
            headers={**gw.headers("commet-a"), "content-type": "application/json"},
        )
        huge = await client.post(
            gw.graphql_url,
            content=b"{" + b" " * (1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )
    assert 400 <= brackets.status_code < 500
    assert huge.status_code == 413


async def test_a_string_no_utf_8_can_hold_is_a_400_and_changes_nothing(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    # A lone surrogate escape is valid JSON syntax but no Unicode text: it could be neither
    # stored nor sent to a provider, so the body is refused as it is parsed.
    body = (
        '{"query": "mutation($input: AddBankAccountInput!) { addBankAccount(input: $input) '
        '{ __typename } }", "variables": {"input": {"bankAccount": {"accountNumber": '
        '"000123456789", "routingNumber": "110000000", "holderName": "Ada \\ud800"}}}}'
    )
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            gw.graphql_url,
            content=body.encode(),
            headers={**gw.headers("commet-a"), "content-type": "application/json"},
        )
    error = {
        "message": "Unable to parse request body as JSON",
        "extensions": {"code": "INVALID_JSON"},
    }
    assert (answer.status_code, answer.json()) == (400, {"errors": [error]})
    assert fakes[Provider.COMMET].calls["add_bank_account"] == 0


async def test_deep_and_wide_queries_are_rejected_cleanly(gw: RunningGateway) -> None:
    deep = "{ bankAccounts { edges { node { id } } } }"
    for _ in range(40):
        deep = deep.replace("node { id }", "node { ... on Node { id } }", 1)
    nested = "{" + "bankAccounts { edges { node { id " * 20 + "} } }" * 20 + "}"
    aliases = "{" + " ".join(f"a{n}: organization {{ name }}" for n in range(1000)) + "}"
    # ~300 levels inside the token budget overflowed older parsers' recursion (hardening.md).
    very_deep = ["{" + "organization {" * n + "name" + "}" * n + "}" for n in (300, 1000)]
    for query in (nested, aliases, *very_deep):
        body = await gql(gw, query)
        assert body.get("data") is None
        assert "Traceback" not in str(body)


async def test_aliases_multiplied_through_fragments_are_refused_before_any_mutation_runs(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    # 10 aliases in a fragment, spread under 10 aliased mutations: 110 aliases, over the 100
    # allowed, though the document spells out only 20 of them.
    fragment = "fragment F on AddBankAccountSuccess { " + " ".join(
        f"f{n}: bankAccount {{ id }}" for n in range(10)
    )
    add = 'addBankAccount(input: {bankAccount: {accountNumber: "000123456789", holderName: "A"}})'
    mutations = " ".join(f"m{n}: {add} {{ ...F }}" for n in range(10))
    body = await gql(gw, f"mutation {{ {mutations} }} {fragment} }}")
    assert body["data"] is None
    assert body["errors"][0]["message"] == "110 aliases found. Allowed: 100"
    assert fakes[Provider.COMMET].calls["add_bank_account"] == 0


async def test_access_log_never_contains_query_strings(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="payout_gateway.access")
    async with httpx.AsyncClient() as client:
        await client.get(f"{gw.graphql_url}?secret=canary-value", headers={"accept": "text/html"})
    lines = [r.getMessage() for r in caplog.records if r.name == "payout_gateway.access"]
    assert any(line.startswith("GET /graphql 200") for line in lines), lines
    assert not any("canary-value" in line for line in lines)


async def test_batched_operations_are_refused_and_nothing_runs(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider]
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gw.graphql_url, json=[{"query": INLINE_ADD}] * 10, headers=gw.headers("commet-a")
        )
    assert response.status_code == 400
    assert fakes[Provider.COMMET].calls["add_bank_account"] == 0


@pytest.mark.parametrize(
    "field",
    [
        "bankAccountStatusChanged { toStatus }",
        "payoutAccountStatusChanged { toStatus }",
        "payoutStatusChanged { toStatus }",
    ],
)
async def test_a_subscription_sent_over_http_is_a_400_that_names_the_websocket(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    # GraphiQL sends a subscription over HTTP when its document is not parsed yet; executed
    # as a query it used to fail as an unexpected error, with a traceback in the log.
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gw.graphql_url,
            json={"query": f"subscription {{ {field} }}"},
            headers=gw.headers("commet-a"),
        )
    assert response.status_code == 400
    assert "open a WebSocket on this path (graphql-transport-ws)" in response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_cors_never_allows_an_unlisted_origin(gw: RunningGateway) -> None:
    async with httpx.AsyncClient() as client:
        preflight = await client.options(
            gw.graphql_url,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await client.post(
            gw.graphql_url,
            json={"query": "{ organization { name } }"},
            headers={**gw.headers("commet-a"), "Origin": "https://evil.example"},
        )
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


LISTED_ORIGIN = "https://app.example"


@pytest.fixture
def cors_gw(tmp_path: Path, fakes: dict[Provider, FakeProvider]) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path, providers=fakes, refresh_interval_seconds=0, cors_origins=[LISTED_ORIGIN]
    ) as running:
        yield running


async def test_a_listed_origin_is_allowed_on_the_graphql_endpoint(cors_gw: RunningGateway) -> None:
    origin = LISTED_ORIGIN
    async with httpx.AsyncClient() as client:
        preflight = await client.options(
            cors_gw.graphql_url,
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        simple = await client.post(
            cors_gw.graphql_url,
            json={"query": "{ organization { name } }"},
            headers={**cors_gw.headers("commet-a"), "Origin": origin},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert simple.headers["access-control-allow-origin"] == origin
    assert simple.json()["data"]["organization"]["name"]


@pytest.mark.parametrize(
    ("origin", "method", "headers", "refused"),
    [
        ("https://evil.example", "POST", None, "origin"),
        (LISTED_ORIGIN, "DELETE", None, "method"),
        (LISTED_ORIGIN, "POST", "content-type, x-custom", "headers"),
        ("https://evil.example", "PUT", None, "origin, method"),
    ],
)
async def test_a_refused_preflight_answers_in_the_endpoint_s_json_shape(
    cors_gw: RunningGateway, origin: str, method: str, headers: str | None, refused: str
) -> None:
    """Every other refusal is a GraphQL-style JSON body with a code; Starlette's preflight
    refusal was a plain-text "Disallowed CORS origin"."""
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    async with httpx.AsyncClient() as client:
        preflight = await client.options(cors_gw.graphql_url, headers=request_headers)
    assert preflight.status_code == 400
    assert preflight.headers["content-type"] == "application/json"
    assert preflight.json() == {
        "errors": [
            {
                "message": f"CORS preflight refused: this {refused} is not allowed on this "
                "endpoint.",
                "extensions": {"code": "CORS_PREFLIGHT_REFUSED"},
            }
        ]
    }
    # Starlette's headers kept: what is allowed, for the developer reading the refusal.
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert "access-control-allow-origin" not in preflight.headers or origin == LISTED_ORIGIN


async def test_graphql_over_http_skips_fastapi_s_layers_but_not_the_gateway_s(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """GatewayApp sends HTTP requests to /graphql straight through the gateway's own
    middleware (access log, body limit, CORS): with FastAPI's stack replaced by one that
    answers 599 to everything, the GraphQL endpoint still answers, and other paths do not."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caplog.set_level("INFO", logger="payout_gateway.access")
    gw.app.middleware_stack = refuse
    async with httpx.AsyncClient() as client:
        graphql = await client.post(
            gw.graphql_url,
            json={"query": "{ organization { name } }"},
            headers=gw.headers("commet-a"),
        )
        too_large = await client.post(
            gw.graphql_url,
            content=b"{" + b" " * (1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )
        health = await client.get(f"{gw.url}/healthz")
    assert graphql.status_code == 200
    assert graphql.json()["data"]["organization"]["name"]
    assert too_large.status_code == 413
    assert health.status_code == 599
    lines = [r.getMessage() for r in caplog.records if r.name == "payout_gateway.access"]
    assert any(line.startswith("POST /graphql 200") for line in lines), lines


@pytest.fixture
def small_pages_gw(tmp_path: Path, fakes: dict[Provider, FakeProvider]) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path,
        providers=fakes,
        refresh_interval_seconds=0,
        max_page_size=10,
        default_page_size=10,
    ) as running:
        yield running


async def test_status_changes_default_fits_a_smaller_maximum_page_size(
    small_pages_gw: RunningGateway,
) -> None:
    # statusChanges' default is 50; an operator's maximum below it must not turn leaving
    # `first` out into an error.
    for _ in range(12):
        await gql(small_pages_gw, ADD, {"input": add_input()})
    left_out = await gql(small_pages_gw, "{ statusChanges { objectId } }")
    assert "errors" not in left_out, left_out
    assert len(left_out["data"]["statusChanges"]) == 10
    too_many = await gql(small_pages_gw, "{ statusChanges(first: 11) { objectId } }")
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
