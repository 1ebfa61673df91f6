"""Conformance of the Paygentic sandbox to docs/providers/paygentic.md, plus its control routes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payout_gateway.sandbox.paygentic import (
    PaygenticSandboxConfig,
    PaygenticSandboxState,
    create_paygentic_sandbox,
)
from tests.support.live_server import live_server

BASE_URL = "http://paygentic.test"
TOKEN = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
READ_ONLY_TOKEN = "sk_readonly_4eC39HqLyjWDarjt"
ORG = "org_acme"
OTHER_ORG = "org_globex"
ACCOUNT_NUMBER = "987654321012"
ROUTING_NUMBER = "021000021"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DROP = object()

ACCOUNT_FIELDS = {
    "id": str,
    "object": str,
    "organizationId": str,
    "countryCode": str,
    "bankName": str,
    "currency": str,
    "last4": str,
    "accountHolderName": str,
    "accountHolderType": str,
    "status": str,
    "metadata": dict,
    "createdAt": str,
    "updatedAt": str,
}
PAYOUT_FIELDS = {
    "id": str,
    "object": str,
    "organizationId": str,
    "status": str,
    "description": (str, type(None)),
    "amountInCents": int,
    "currency": str,
    "method": str,
    "sourceId": str,
    "destinationId": str,
    "metadata": dict,
    "createdAt": str,
    "updatedAt": str,
    "platformFee": int,
    "methodFee": int,
    "transactionId": (str, type(None)),
    "failureCode": (str, type(None)),
    "failureMessage": (str, type(None)),
    "transferredAmountInCents": (int, type(None)),
}


START = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_app(clock: FakeClock, sleeps: RecordingSleep, **options: Any) -> FastAPI:
    return create_paygentic_sandbox(
        PaygenticSandboxConfig(clock=clock, sleep=sleeps, seed=7, **options)
    )


@pytest.fixture(scope="module")
def shared() -> tuple[FastAPI, FakeClock, RecordingSleep]:
    # Building an app costs tens of milliseconds; one per module, reset before each test.
    clock, sleeps = FakeClock(), RecordingSleep()
    return make_app(clock, sleeps), clock, sleeps


@pytest.fixture
def clock(shared: tuple[FastAPI, FakeClock, RecordingSleep]) -> FakeClock:
    shared[1].now = START
    return shared[1]


@pytest.fixture
def sleeps(shared: tuple[FastAPI, FakeClock, RecordingSleep]) -> RecordingSleep:
    shared[2].calls.clear()
    return shared[2]


@pytest.fixture
def app(
    shared: tuple[FastAPI, FakeClock, RecordingSleep], clock: FakeClock, sleeps: RecordingSleep
) -> FastAPI:
    sandbox_of(shared[0]).reset()
    return shared[0]


def sandbox_of(app: FastAPI) -> PaygenticSandboxState:
    state = app.state.sandbox
    assert isinstance(state, PaygenticSandboxState)
    return state


def client_for(app: FastAPI, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, token=None) as c:
        yield c


def account_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "organizationId": ORG,
        "countryCode": "US",
        "bankName": "First Sandbox Bank",
        "currency": "USD",
        "accountNumber": ACCOUNT_NUMBER,
        "routingNumber": ROUTING_NUMBER,
        "accountHolderName": "Ada Lovelace",
        "accountHolderType": "individual",
        "metadata": {"clientReference": "ref-1"},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not DROP}


def payout_body(destination_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "organizationId": ORG,
        "amountInCents": 12_500,
        "currency": "USD",
        "method": "bank_transfer",
        "sourceId": "src_balance",
        "destinationId": destination_id,
        "description": "March payout",
        "metadata": {"run": "2024-03"},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not DROP}


async def create_account(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v0/externalAccounts", json=account_body(**overrides))
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


async def set_account_status(client: httpx.AsyncClient, account_id: str, status: str) -> None:
    response = await client.post(
        f"/_sandbox/externalAccounts/{account_id}/status", json={"status": status}
    )
    assert response.status_code == 200, response.text


async def verified_account(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    account = await create_account(client, **overrides)
    await set_account_status(client, account["id"], "verified")
    return account


async def create_payout(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    destination = await verified_account(client)
    response = await client.post("/v0/payouts", json=payout_body(destination["id"], **overrides))
    assert response.status_code == 201, response.text
    payout: dict[str, Any] = response.json()
    return payout


def assert_shape(body: dict[str, Any], fields: dict[str, Any]) -> None:
    assert set(body) == set(fields)
    for name, kind in fields.items():
        assert isinstance(body[name], kind), name
    assert ISO_Z.match(body["createdAt"])
    assert ISO_Z.match(body["updatedAt"])


def assert_validation_error(response: httpx.Response, *fields: str) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert isinstance(body["message"], str)
    assert body["message"]
    for error in body["errors"]:
        assert isinstance(error["field"], str)
        assert isinstance(error["message"], str)
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", error["code"])
    assert {error["field"] for error in body["errors"]} >= set(fields)
    errors: list[dict[str, Any]] = body["errors"]
    return errors


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["error"] == error
    assert "detail" not in body
    return body


# ---- external accounts: create ----


async def test_create_external_account_returns_201_with_every_documented_field(client):
    response = await client.post("/v0/externalAccounts", json=account_body())

    assert response.status_code == 201
    body = response.json()
    assert_shape(body, ACCOUNT_FIELDS)
    assert body["id"].startswith("eba_")
    assert body["object"] == "externalBankAccount"
    assert body["organizationId"] == ORG
    assert body["countryCode"] == "US"
    assert body["bankName"] == "First Sandbox Bank"
    assert body["currency"] == "USD"
    assert body["last4"] == "1012"
    assert body["accountHolderName"] == "Ada Lovelace"
    assert body["accountHolderType"] == "individual"
    assert body["status"] == "new"
    assert body["metadata"] == {"clientReference": "ref-1"}
    assert body["createdAt"] == body["updatedAt"] == "2024-03-01T12:00:00Z"


async def test_create_without_metadata_returns_an_empty_metadata_object(client):
    account = await create_account(client, metadata=DROP)

    assert account["metadata"] == {}


async def test_create_keeps_nested_metadata_exactly_as_given(client):
    metadata = {"ref": "abc", "nested": {"n": 1, "list": [True, None, "x"]}}

    account = await create_account(client, metadata=metadata)

    assert account["metadata"] == metadata


async def test_create_echoes_country_and_currency_upper_case(client):
    account = await create_account(client, countryCode="de", currency="eur")

    assert (account["countryCode"], account["currency"]) == ("DE", "EUR")


async def test_create_accepts_an_iban_as_account_number(client):
    account = await create_account(client, accountNumber="DE89370400440532013000")

    assert account["last4"] == "3000"


@pytest.mark.parametrize(
    "field",
    [
        "organizationId",
        "countryCode",
        "bankName",
        "currency",
        "accountNumber",
        "routingNumber",
        "accountHolderName",
        "accountHolderType",
    ],
)
async def test_create_without_a_required_field_names_it_in_a_validation_error(client, field):
    response = await client.post("/v0/externalAccounts", json=account_body(**{field: DROP}))

    errors = assert_validation_error(response, field)
    assert [e["code"] for e in errors if e["field"] == field] == ["REQUIRED"]


async def test_create_with_an_empty_body_names_every_required_field(client):
    response = await client.post("/v0/externalAccounts", json={})

    assert_validation_error(
        response,
        "organizationId",
        "countryCode",
        "bankName",
        "currency",
        "accountNumber",
        "routingNumber",
        "accountHolderName",
        "accountHolderType",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("organizationId", "acme"),
        ("organizationId", "org_"),
        ("organizationId", "org_ac-me"),
        ("countryCode", "XX"),
        ("countryCode", "USA"),
        ("countryCode", 1),
        ("currency", "ABC"),
        ("currency", "US"),
        ("bankName", ""),
        ("bankName", "   "),
        ("bankName", "b" * 201),
        ("accountNumber", "12ab34"),
        ("accountNumber", "123"),
        ("accountNumber", "123456789012345678"),
        ("accountNumber", "١٢٣٤٥٦٧٨"),
        ("accountNumber", "1234 5678"),
        ("accountNumber", 12345678),
        ("accountNumber", "DE00370400440532013000"),
        ("routingNumber", "12345678"),
        ("routingNumber", "1234567890"),
        ("routingNumber", "12345678a"),
        ("routingNumber", "١٢٣٤٥٦٧٨٩"),
        ("accountHolderName", ""),
        ("accountHolderType", "trust"),
        ("accountHolderType", "Individual"),
        ("metadata", "not an object"),
        ("metadata", ["a"]),
    ],
)
async def test_create_with_an_invalid_value_names_the_field(client, field, value):
    response = await client.post("/v0/externalAccounts", json=account_body(**{field: value}))

    assert_validation_error(response, field)


async def test_create_rejects_unknown_fields(client):
    response = await client.post("/v0/externalAccounts", json=account_body(isDefault=True))

    errors = assert_validation_error(response, "isDefault")
    assert errors[0]["code"] == "UNKNOWN_FIELD"


async def test_body_that_is_not_json_is_a_400_bad_request(client):
    response = await client.post(
        "/v0/externalAccounts",
        content=b'{"organizationId": ',
        headers={"Content-Type": "application/json"},
    )

    body = assert_error(response, 400, "bad_request")
    assert body["code"] == "INVALID_JSON"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"organizationId=org_acme", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
    ],
)
async def test_body_that_is_not_a_json_object_is_a_validation_error_on_body(
    client, content, content_type
):
    response = await client.post(
        "/v0/externalAccounts", content=content, headers={"Content-Type": content_type}
    )

    assert_validation_error(response, "body")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v0/externalAccounts", {"countryCode": 5}),
        ("GET", "/v0/externalAccounts?organizationId=org_acme&limit=zero", None),
        ("GET", "/v0/externalAccounts", None),
        ("PATCH", "/v0/externalAccounts/eba_x", {"status": "closed"}),
        ("POST", "/v0/payouts", {"amountInCents": "ten"}),
        ("GET", "/v0/payouts?organizationId=org_acme&status=paid", None),
        ("POST", "/_sandbox/faults", {"kind": "explode"}),
    ],
)
async def test_fastapi_422_never_leaks(client, method, path, body):
    response = await client.request(method, path, json=body)

    assert response.status_code == 400
    assert "detail" not in response.json()


async def test_two_identical_creates_make_two_accounts(client):
    headers = {"Idempotency-Key": "same-key"}
    first = await client.post("/v0/externalAccounts", json=account_body(), headers=headers)
    second = await client.post("/v0/externalAccounts", json=account_body(), headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    listing = await client.get("/v0/externalAccounts", params={"organizationId": ORG})
    assert listing.json()["pagination"]["total"] == 2


async def test_full_account_and_routing_numbers_appear_in_no_response(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    texts: list[str] = []

    async def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, **kwargs)
        texts.append(response.text + str(response.headers))
        return response

    created = (await send("POST", "/v0/externalAccounts", json=account_body())).json()
    account_id = created["id"]
    await send("GET", f"/v0/externalAccounts/{account_id}")
    await send("GET", "/v0/externalAccounts", params={"organizationId": ORG})
    await send("PATCH", f"/v0/externalAccounts/{account_id}", json={"metadata": {"a": 1}})
    await send("PATCH", f"/v0/externalAccounts/{account_id}", json={"accountNumber": "1"})
    await send(
        "POST", f"/_sandbox/externalAccounts/{account_id}/status", json={"status": "verified"}
    )
    payout = (await send("POST", "/v0/payouts", json=payout_body(account_id))).json()
    await send("GET", f"/v0/payouts/{payout['id']}")
    await send("GET", "/v0/payouts", params={"organizationId": ORG})
    # Refusals must not echo the numbers either.
    await send(
        "POST", "/v0/externalAccounts", json=account_body(routingNumber="0" + ACCOUNT_NUMBER)
    )
    await send("POST", "/v0/externalAccounts", json=account_body(accountNumber=ACCOUNT_NUMBER * 2))
    await send("POST", "/v0/externalAccounts", json=account_body(countryCode="XX"))
    await send(
        "PATCH",
        f"/v0/externalAccounts/{account_id}",
        json={"routingNumber": ROUTING_NUMBER, "accountNumber": ACCOUNT_NUMBER},
    )

    for text in texts:
        assert ACCOUNT_NUMBER not in text
        assert ROUTING_NUMBER not in text
    assert created["last4"] == ACCOUNT_NUMBER[-4:]
    remembered = repr(vars(sandbox_of(app)))
    assert ACCOUNT_NUMBER not in remembered
    assert ROUTING_NUMBER not in remembered


# ---- external accounts: read, list ----


async def test_get_external_account_returns_the_created_account(client):
    created = await create_account(client)

    response = await client.get(f"/v0/externalAccounts/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


async def test_get_unknown_external_account_is_404_not_found(client):
    response = await client.get("/v0/externalAccounts/eba_doesnotexist")

    assert_error(response, 404, "not_found")


async def test_get_reads_accounts_of_any_organization_by_id(client):
    created = await create_account(client, organizationId=OTHER_ORG)

    response = await client.get(f"/v0/externalAccounts/{created['id']}")

    assert response.status_code == 200
    assert response.json()["organizationId"] == OTHER_ORG


async def test_list_is_newest_first_with_default_pagination_and_total(client):
    ids = [(await create_account(client, metadata={"n": n}))["id"] for n in range(12)]
    await create_account(client, organizationId=OTHER_ORG)

    response = await client.get("/v0/externalAccounts", params={"organizationId": ORG})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"object", "data", "pagination"}
    assert body["object"] == "list"
    assert body["pagination"] == {"limit": 10, "offset": 0, "total": 12}
    assert [a["id"] for a in body["data"]] == list(reversed(ids))[:10]
    for account in body["data"]:
        assert_shape(account, ACCOUNT_FIELDS)


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [(5, 0, 5), (5, 10, 2), (100, 0, 12), (1, 11, 1), (10, 12, 0), (10, 500, 0)],
)
async def test_list_pages_by_limit_and_offset(client, limit, offset, expected):
    ids = [(await create_account(client))["id"] for _ in range(12)]

    response = await client.get(
        "/v0/externalAccounts", params={"organizationId": ORG, "limit": limit, "offset": offset}
    )

    body = response.json()
    assert body["pagination"] == {"limit": limit, "offset": offset, "total": 12}
    assert [a["id"] for a in body["data"]] == list(reversed(ids))[offset : offset + limit]
    assert len(body["data"]) == expected


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"organizationId": None}, "organizationId"),
        ({"organizationId": "acme"}, "organizationId"),
        ({"organizationId": "org_a b"}, "organizationId"),
    ],
)
@pytest.mark.parametrize("path", ["/v0/externalAccounts", "/v0/payouts"])
async def test_list_rejects_bad_query_parameters(client, path, params, field):
    query = {"organizationId": ORG, **params}
    query = {key: value for key, value in query.items() if value is not None}

    response = await client.get(path, params=query)

    assert_validation_error(response, field)


async def test_list_limit_is_bounded_by_configured_page_max(clock, sleeps):
    async with client_for(make_app(clock, sleeps, page_max=5, page_default=2)) as client:
        for _ in range(3):
            await create_account(client)
        default = await client.get("/v0/externalAccounts", params={"organizationId": ORG})
        too_big = await client.get(
            "/v0/externalAccounts", params={"organizationId": ORG, "limit": 6}
        )

    assert default.json()["pagination"] == {"limit": 2, "offset": 0, "total": 3}
    assert_validation_error(too_big, "limit")


async def test_list_filters_by_organization_only(client):
    await create_account(client, metadata={"clientReference": "x"})
    await create_account(client, organizationId=OTHER_ORG, metadata={"clientReference": "x"})

    response = await client.get(
        "/v0/externalAccounts",
        params={"organizationId": OTHER_ORG, "metadata[clientReference]": "nope"},
    )

    assert [a["organizationId"] for a in response.json()["data"]] == [OTHER_ORG]


# ---- external accounts: update, delete ----


async def test_patch_changes_mutable_fields_and_moves_updated_at(client, clock):
    created = await create_account(client)
    clock.advance(90)

    response = await client.patch(
        f"/v0/externalAccounts/{created['id']}",
        json={
            "accountHolderName": "Acme Ltd",
            "accountHolderType": "company",
            "status": "errored",
            "metadata": {"replaced": True},
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert_shape(body, ACCOUNT_FIELDS)
    assert body["accountHolderName"] == "Acme Ltd"
    assert body["accountHolderType"] == "company"
    assert body["status"] == "errored"
    assert body["metadata"] == {"replaced": True}
    assert body["createdAt"] == created["createdAt"]
    assert body["updatedAt"] == "2024-03-01T12:01:30Z"
    unchanged = {"id", "organizationId", "countryCode", "bankName", "currency", "last4"}
    assert {k: body[k] for k in unchanged} == {k: created[k] for k in unchanged}
    fetched = await client.get(f"/v0/externalAccounts/{created['id']}")
    assert fetched.json() == body


async def test_patch_without_changes_keeps_updated_at(client, clock):
    created = await create_account(client)
    clock.advance(60)

    response = await client.patch(
        f"/v0/externalAccounts/{created['id']}",
        json={"accountHolderName": created["accountHolderName"]},
    )

    assert response.json()["updatedAt"] == created["updatedAt"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accountNumber", "123456789"),
        ("routingNumber", "110000000"),
        ("countryCode", "DE"),
        ("currency", "EUR"),
        ("bankName", "Other Bank"),
        ("organizationId", OTHER_ORG),
        ("last4", "0000"),
        ("id", "eba_other"),
    ],
)
async def test_patch_of_an_immutable_field_is_400_and_changes_nothing(client, field, value):
    created = await create_account(client)

    response = await client.patch(
        f"/v0/externalAccounts/{created['id']}",
        json={field: value, "accountHolderName": "Changed"},
    )

    errors = assert_validation_error(response, field)
    assert [e["code"] for e in errors] == ["IMMUTABLE_FIELD"]
    fetched = await client.get(f"/v0/externalAccounts/{created['id']}")
    assert fetched.json() == created


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"accountHolderName": None}, "accountHolderName", "NOT_NULLABLE"),
        ({"metadata": None}, "metadata", "NOT_NULLABLE"),
        ({"status": "active"}, "status", "INVALID_VALUE"),
        ({"accountHolderType": "trust"}, "accountHolderType", "INVALID_VALUE"),
        ({"accountHolderName": ""}, "accountHolderName", "INVALID_LENGTH"),
        ({"nickname": "x"}, "nickname", "UNKNOWN_FIELD"),
    ],
)
async def test_patch_with_an_invalid_value_is_a_validation_error(client, body, field, code):
    created = await create_account(client)

    response = await client.patch(f"/v0/externalAccounts/{created['id']}", json=body)

    errors = assert_validation_error(response, field)
    assert errors[0]["code"] == code


async def test_patch_of_unknown_account_is_404(client):
    response = await client.patch("/v0/externalAccounts/eba_missing", json={"status": "new"})

    assert_error(response, 404, "not_found")


async def test_delete_answers_204_without_body_then_get_is_404(client):
    created = await create_account(client)

    deleted = await client.delete(f"/v0/externalAccounts/{created['id']}")
    fetched = await client.get(f"/v0/externalAccounts/{created['id']}")
    again = await client.delete(f"/v0/externalAccounts/{created['id']}")
    listing = await client.get("/v0/externalAccounts", params={"organizationId": ORG})

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(fetched, 404, "not_found")
    assert_error(again, 404, "not_found")
    assert listing.json()["pagination"]["total"] == 0


# ---- auth ----

OPERATIONS = [
    ("POST", "/v0/externalAccounts", account_body()),
    ("GET", f"/v0/externalAccounts?organizationId={ORG}", None),
    ("GET", "/v0/externalAccounts/eba_x", None),
    ("PATCH", "/v0/externalAccounts/eba_x", {"accountHolderName": "X"}),
    ("DELETE", "/v0/externalAccounts/eba_x", None),
    ("POST", "/v0/payouts", payout_body("eba_x")),
    ("GET", f"/v0/payouts?organizationId={ORG}", None),
    ("GET", "/v0/payouts/po_x", None),
]
WRITES = [op for op in OPERATIONS if op[0] != "GET"]
READS = [op for op in OPERATIONS if op[0] == "GET"]
BAD_AUTHORIZATIONS = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
    pytest.param("sk_test_4eC39HqLyjWDarjt", id="no-scheme"),
    pytest.param("Bearer", id="no-token"),
    pytest.param("Bearer ", id="blank-token"),
    pytest.param("Bearer short", id="too-short"),
    pytest.param("Bearer sk_test_abc$%^&*", id="bad-characters"),
    pytest.param("Bearer sk test with spaces", id="spaces"),
    pytest.param("Bearer sk_revoked_4eC39HqLyjWD", id="revoked"),
]


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS)
@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
async def test_every_operation_rejects_missing_or_bad_credentials_with_401(
    anonymous, method, path, body, authorization
):
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await anonymous.request(method, path, json=body, headers=headers)

    body = assert_error(response, 401, "unauthorized")
    assert set(body) <= {"message", "error", "code", "details"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(anonymous):
    response = await anonymous.get(
        "/v0/externalAccounts",
        params={"organizationId": ORG},
        headers={"Authorization": "bearer " + TOKEN},
    )

    assert response.status_code == 200


async def test_authentication_is_checked_before_the_body(anonymous):
    response = await anonymous.post(
        "/v0/externalAccounts", content=b"{", headers={"Content-Type": "application/json"}
    )

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_read_only_key_gets_403_insufficient_scope_on_writes(app, method, path, body):
    async with client_for(app, READ_ONLY_TOKEN) as client:
        response = await client.request(method, path, json=body)

    body = assert_error(response, 403, "forbidden")
    assert body["reason"] == "insufficient_scope"
    resource = path.split("/")[2]
    assert body["requiredPermissions"] == [f"{resource}:write"]


@pytest.mark.parametrize(("method", "path", "body"), READS)
async def test_read_only_key_may_read(app, method, path, body):
    async with client_for(app, READ_ONLY_TOKEN) as client:
        response = await client.request(method, path, json=body)

    assert response.status_code in {200, 404}


async def test_any_well_formed_key_acts_for_any_organization(app):
    async with client_for(app, "another-key.v2") as client:
        created = await create_account(client, organizationId="org_Zz9")

    assert created["organizationId"] == "org_Zz9"


# ---- payouts ----


async def test_create_payout_to_a_verified_account_returns_201_pending_with_every_field(client):
    destination = await verified_account(client)

    response = await client.post("/v0/payouts", json=payout_body(destination["id"]))

    assert response.status_code == 201
    body = response.json()
    assert_shape(body, PAYOUT_FIELDS)
    assert body["id"].startswith("po_")
    assert body["object"] == "payout"
    assert body["status"] == "pending"
    assert body["organizationId"] == ORG
    assert body["amountInCents"] == 12_500
    assert body["currency"] == "USD"
    assert body["method"] == "bank_transfer"
    assert body["sourceId"] == "src_balance"
    assert body["destinationId"] == destination["id"]
    assert body["description"] == "March payout"
    assert body["metadata"] == {"run": "2024-03"}
    assert (body["platformFee"], body["methodFee"]) == (0, 0)
    assert body["transactionId"] is None
    assert body["failureCode"] is None
    assert body["failureMessage"] is None
    assert body["transferredAmountInCents"] is None


async def test_create_payout_without_description_or_metadata(client):
    payout = await create_payout(client, description=DROP, metadata=DROP)

    assert payout["description"] is None
    assert payout["metadata"] == {}


async def test_payouts_have_no_idempotency_either(client):
    destination = await verified_account(client)
    body = payout_body(destination["id"])

    first = await client.post("/v0/payouts", json=body)
    second = await client.post("/v0/payouts", json=body)

    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amountInCents", 0),
        ("amountInCents", -100),
        ("amountInCents", "100"),
        ("amountInCents", 1.5),
        ("amountInCents", True),
        ("amountInCents", DROP),
        ("currency", "ABC"),
        ("currency", DROP),
        ("method", "card"),
        ("method", DROP),
        ("organizationId", "acme"),
        ("sourceId", ""),
        ("sourceId", DROP),
        ("destinationId", DROP),
        ("description", "d" * 1001),
        ("metadata", "x"),
    ],
)
async def test_create_payout_with_an_invalid_value_names_the_field(client, field, value):
    response = await client.post("/v0/payouts", json=payout_body("eba_x", **{field: value}))

    assert_validation_error(response, field)


async def test_create_payout_of_one_cent_is_accepted(client):
    payout = await create_payout(client, amountInCents=1)

    assert payout["amountInCents"] == 1


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("missing", "DESTINATION_NOT_FOUND"),
        ("deleted", "DESTINATION_NOT_FOUND"),
        ("new", "DESTINATION_NOT_VERIFIED"),
        ("errored", "DESTINATION_NOT_VERIFIED"),
        ("other_org", "DESTINATION_ORGANIZATION_MISMATCH"),
        ("other_currency", "CURRENCY_MISMATCH"),
    ],
)
async def test_create_payout_refuses_an_unusable_destination_with_422(client, setup, code):
    destination_id = "eba_missing"
    if setup == "new":
        destination_id = (await create_account(client))["id"]
    elif setup == "errored":
        destination_id = (await create_account(client))["id"]
        await set_account_status(client, destination_id, "errored")
    elif setup == "deleted":
        destination_id = (await verified_account(client))["id"]
        await client.delete(f"/v0/externalAccounts/{destination_id}")
    elif setup == "other_org":
        destination_id = (await verified_account(client, organizationId=OTHER_ORG))["id"]
    elif setup == "other_currency":
        destination_id = (await verified_account(client, currency="EUR"))["id"]

    response = await client.post("/v0/payouts", json=payout_body(destination_id))

    body = assert_error(response, 422, "unprocessable_entity")
    assert body["code"] == code
    listing = await client.get("/v0/payouts", params={"organizationId": ORG})
    assert listing.json()["pagination"]["total"] == 0


async def test_get_payout_returns_it_and_unknown_id_is_404(client):
    payout = await create_payout(client)

    found = await client.get(f"/v0/payouts/{payout['id']}")
    missing = await client.get("/v0/payouts/po_missing")

    assert found.status_code == 200
    assert found.json() == payout
    assert_error(missing, 404, "not_found")


async def test_list_payouts_filters_by_organization_and_status_newest_first(client):
    destination = await verified_account(client)
    ids = []
    for _ in range(3):
        response = await client.post("/v0/payouts", json=payout_body(destination["id"]))
        ids.append(response.json()["id"])
    await client.post(f"/_sandbox/payouts/{ids[0]}/status", json={"status": "success"})
    other = await verified_account(client, organizationId=OTHER_ORG)
    await client.post("/v0/payouts", json=payout_body(other["id"], organizationId=OTHER_ORG))

    everything = await client.get("/v0/payouts", params={"organizationId": ORG})
    pending = await client.get("/v0/payouts", params={"organizationId": ORG, "status": "pending"})
    paged = await client.get("/v0/payouts", params={"organizationId": ORG, "limit": 1, "offset": 1})

    body = everything.json()
    assert body["object"] == "list"
    assert body["pagination"] == {"limit": 10, "offset": 0, "total": 3}
    assert [p["id"] for p in body["data"]] == list(reversed(ids))
    for payout in body["data"]:
        assert_shape(payout, PAYOUT_FIELDS)
    assert [p["id"] for p in pending.json()["data"]] == [ids[2], ids[1]]
    assert pending.json()["pagination"]["total"] == 2
    assert [p["id"] for p in paged.json()["data"]] == [ids[1]]


async def test_payout_fees_come_from_the_config(clock, sleeps):
    app = make_app(clock, sleeps, platform_fee_cents=30, method_fee_cents=20)
    async with client_for(app) as client:
        payout = await create_payout(client, amountInCents=1000)
        settled = await client.post(
            f"/_sandbox/payouts/{payout['id']}/status", json={"status": "success"}
        )
        too_small = await client.post(
            "/v0/payouts", json=payout_body(payout["destinationId"], amountInCents=50)
        )

    assert (payout["platformFee"], payout["methodFee"]) == (30, 20)
    assert settled.json()["transferredAmountInCents"] == 950
    assert assert_error(too_small, 422, "unprocessable_entity")["code"] == "AMOUNT_BELOW_FEES"


# ---- control routes ----


@pytest.mark.parametrize("status", ["verified", "errored", "new"])
async def test_control_route_moves_an_account_to_any_status(client, clock, status):
    created = await create_account(client)
    await set_account_status(client, created["id"], "errored" if status == "new" else "new")
    clock.advance(5)

    response = await client.post(
        f"/_sandbox/externalAccounts/{created['id']}/status", json={"status": status}
    )

    assert response.status_code == 200
    assert response.json()["status"] == status
    assert response.json()["updatedAt"] == "2024-03-01T12:00:05Z"
    fetched = await client.get(f"/v0/externalAccounts/{created['id']}")
    assert fetched.json()["status"] == status


async def test_control_routes_need_no_credentials(anonymous, client):
    created = await create_account(client)

    response = await anonymous.post(
        f"/_sandbox/externalAccounts/{created['id']}/status", json={"status": "verified"}
    )

    assert response.status_code == 200


async def test_control_route_for_unknown_objects_is_404(client):
    account = await client.post(
        "/_sandbox/externalAccounts/eba_missing/status", json={"status": "verified"}
    )
    payout = await client.post("/_sandbox/payouts/po_missing/status", json={"status": "success"})

    assert_error(account, 404, "not_found")
    assert_error(payout, 404, "not_found")


async def test_control_route_rejects_an_undocumented_account_status(client):
    created = await create_account(client)

    response = await client.post(
        f"/_sandbox/externalAccounts/{created['id']}/status", json={"status": "active"}
    )

    assert_validation_error(response, "status")


async def test_auto_verify_turns_new_accounts_verified_after_the_delay(clock, sleeps):
    app = make_app(clock, sleeps, auto_verify_after_seconds=30)
    async with client_for(app) as client:
        created = await create_account(client)
        clock.advance(29.5)
        early = await client.get(f"/v0/externalAccounts/{created['id']}")
        early_payout = await client.post("/v0/payouts", json=payout_body(created["id"]))
        clock.advance(10)
        late = await client.get(f"/v0/externalAccounts/{created['id']}")
        listed = await client.get("/v0/externalAccounts", params={"organizationId": ORG})
        payout = await client.post("/v0/payouts", json=payout_body(created["id"]))

    assert early.json()["status"] == "new"
    assert early_payout.json()["code"] == "DESTINATION_NOT_VERIFIED"
    assert late.json()["status"] == "verified"
    assert late.json()["updatedAt"] == "2024-03-01T12:00:30Z"
    assert listed.json()["data"][0]["status"] == "verified"
    assert payout.status_code == 201
    changes = sandbox_of(app).status_changes
    assert [(c.resource, c.previous, c.current) for c in changes] == [
        ("externalBankAccount", "new", "verified")
    ]


async def test_auto_pay_settles_a_pending_payout_as_success_after_the_delay(clock, sleeps):
    app = make_app(clock, sleeps, auto_verify_after_seconds=0, auto_pay_after_seconds=30)
    async with client_for(app) as client:
        created = await create_account(client)
        payout = (await client.post("/v0/payouts", json=payout_body(created["id"]))).json()
        clock.advance(29.5)
        early = await client.get(f"/v0/payouts/{payout['id']}")
        clock.advance(10)
        late = await client.get(f"/v0/payouts/{payout['id']}")
        listed = await client.get("/v0/payouts", params={"organizationId": ORG})
        settle = await client.post(
            f"/_sandbox/payouts/{payout['id']}/status", json={"status": "failed"}
        )

    assert early.json()["status"] == "pending"
    assert (late.status_code, late.json()["status"]) == (200, "success")
    assert late.json()["transactionId"] is not None
    assert listed.json()["data"][0]["status"] == "success"
    assert settle.json()["code"] == "INVALID_STATUS_TRANSITION"


async def test_auto_verify_leaves_errored_accounts_alone(clock, sleeps):
    app = make_app(clock, sleeps, auto_verify_after_seconds=0)
    async with client_for(app) as client:
        created = await create_account(client)
        await set_account_status(client, created["id"], "errored")
        clock.advance(3600)
        fetched = await client.get(f"/v0/externalAccounts/{created['id']}")

    assert fetched.json()["status"] == "errored"


async def test_settling_a_payout_as_success_sets_transaction_and_transferred_amount(client, clock):
    payout = await create_payout(client)
    clock.advance(60)

    response = await client.post(
        f"/_sandbox/payouts/{payout['id']}/status", json={"status": "success"}
    )

    body = response.json()
    assert response.status_code == 200
    assert_shape(body, PAYOUT_FIELDS)
    assert body["status"] == "success"
    assert body["transactionId"].startswith("txn_")
    assert body["transferredAmountInCents"] == 12_500
    assert body["failureCode"] is None
    assert body["updatedAt"] == "2024-03-01T12:01:00Z"
    fetched = await client.get(f"/v0/payouts/{payout['id']}")
    assert fetched.json() == body


async def test_settling_a_payout_as_failed_sets_the_failure(client):
    payout = await create_payout(client)

    custom = await client.post(
        f"/_sandbox/payouts/{payout['id']}/status",
        json={"status": "failed", "failureCode": "ACCOUNT_CLOSED", "failureMessage": "Closed"},
    )

    body = custom.json()
    assert (body["status"], body["failureCode"], body["failureMessage"]) == (
        "failed",
        "ACCOUNT_CLOSED",
        "Closed",
    )
    assert body["transactionId"] is None
    assert body["transferredAmountInCents"] is None


async def test_settling_a_payout_as_failed_has_a_default_failure(client):
    payout = await create_payout(client)

    response = await client.post(
        f"/_sandbox/payouts/{payout['id']}/status", json={"status": "failed"}
    )

    assert response.json()["failureCode"] == "PAYOUT_FAILED"
    assert response.json()["failureMessage"]


async def test_settled_payouts_cannot_change_again(client):
    payout = await create_payout(client)
    await client.post(f"/_sandbox/payouts/{payout['id']}/status", json={"status": "cancelled"})

    response = await client.post(
        f"/_sandbox/payouts/{payout['id']}/status", json={"status": "success"}
    )

    assert assert_error(response, 409, "conflict")["code"] == "INVALID_STATUS_TRANSITION"


async def test_payout_control_route_rejects_pending_as_a_target(client):
    payout = await create_payout(client)

    response = await client.post(
        f"/_sandbox/payouts/{payout['id']}/status", json={"status": "pending"}
    )

    assert_validation_error(response, "status")


async def test_request_counts_count_api_requests_per_operation(app, client, anonymous):
    created = await create_account(client)
    await create_account(client)
    await client.get(f"/v0/externalAccounts/{created['id']}")
    await client.get("/v0/externalAccounts/eba_missing")
    await anonymous.get("/v0/payouts", params={"organizationId": ORG})
    await set_account_status(client, created["id"], "verified")

    response = await client.get("/_sandbox/requests")

    expected = {
        "POST /v0/externalAccounts": 2,
        "GET /v0/externalAccounts/{id}": 2,
        "GET /v0/payouts": 1,
    }
    assert response.json() == {"counts": expected, "total": 5}
    assert dict(sandbox_of(app).request_counts) == expected
    reset = await client.delete("/_sandbox/requests")
    assert reset.status_code == 204
    assert (await client.get("/_sandbox/requests")).json() == {"counts": {}, "total": 0}


async def test_reset_forgets_everything(app, client):
    created = await create_account(client)
    await client.post("/_sandbox/faults", json={"kind": "status", "count": 5})

    response = await client.post("/_sandbox/reset")

    assert response.status_code == 204
    assert (await client.get("/_sandbox/faults")).json() == {"data": []}
    fetched = await client.get(f"/v0/externalAccounts/{created['id']}")
    assert fetched.status_code == 404
    assert dict(sandbox_of(app).request_counts) == {"GET /v0/externalAccounts/{id}": 1}


async def test_each_app_has_its_own_state(clock, sleeps):
    first, second = make_app(clock, sleeps), make_app(clock, sleeps)
    async with client_for(first) as one, client_for(second) as two:
        created = await create_account(one)
        missing = await two.get(f"/v0/externalAccounts/{created['id']}")

    assert missing.status_code == 404
    assert sandbox_of(first) is not sandbox_of(second)
    assert sum(sandbox_of(second).request_counts.values()) == 1


# ---- fault injection ----


async def add_fault(client: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    response = await client.post("/_sandbox/faults", json=spec)
    assert response.status_code == 201, response.text
    fault: dict[str, Any] = response.json()
    return fault


async def total_accounts(client: httpx.AsyncClient) -> int:
    response = await client.get("/v0/externalAccounts", params={"organizationId": ORG})
    total: int = response.json()["pagination"]["total"]
    return total


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, "internal_error"), (503, "service_unavailable"), (502, "bad_gateway")],
)
async def test_status_fault_answers_a_paygentic_error_without_handling(client, status, error):
    await add_fault(client, operation="POST /v0/externalAccounts", kind="status", status=status)

    failed = await client.post("/v0/externalAccounts", json=account_body())
    assert await total_accounts(client) == 0
    retried = await client.post("/v0/externalAccounts", json=account_body())

    assert_error(failed, status, error)
    assert retried.status_code == 201


async def test_status_fault_429_carries_retry_after(client):
    await add_fault(client, kind="status", status=429, retryAfterSeconds=7)

    response = await client.get("/v0/externalAccounts", params={"organizationId": ORG})

    assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "7"


async def test_fault_hits_the_next_count_requests_of_its_operation_only(client):
    fault = await add_fault(client, operation="GET /v0/payouts/{id}", kind="status", count=2)

    unrelated = await client.get("/v0/payouts", params={"organizationId": ORG})
    first = await client.get("/v0/payouts/po_x")
    waiting = (await client.get("/_sandbox/faults")).json()["data"]
    second = await client.get("/v0/payouts/po_x")
    third = await client.get("/v0/payouts/po_x")

    assert fault["remaining"] == 2
    assert fault["id"].startswith("flt_")
    assert unrelated.status_code == 200
    assert (first.status_code, second.status_code, third.status_code) == (500, 500, 404)
    assert [(f["id"], f["remaining"]) for f in waiting] == [(fault["id"], 1)]
    assert (await client.get("/_sandbox/faults")).json() == {"data": []}


async def test_faults_without_operation_hit_any_api_operation(client):
    await add_fault(client, kind="status", status=503, count=2)

    first = await client.get("/v0/payouts/po_x")
    second = await client.post("/v0/externalAccounts", json=account_body())

    assert (first.status_code, second.status_code) == (503, 503)


async def test_status_fault_answers_before_authentication(client, anonymous):
    await add_fault(client, kind="status", status=500)

    response = await anonymous.get("/v0/payouts/po_x")

    assert response.status_code == 500


async def test_latency_fault_sleeps_then_handles_normally(client, sleeps):
    await add_fault(client, kind="latency", latencyMs=250)
    await add_fault(client, kind="latency")
    await add_fault(client, kind="latency", latencyMs=0)

    slow = await client.post("/v0/externalAccounts", json=account_body())
    default = await client.get("/v0/payouts/po_x")
    instant = await client.get("/v0/payouts/po_x")

    assert slow.status_code == 201
    assert (default.status_code, instant.status_code) == (404, 404)
    assert sleeps.calls == [0.25, 0.3, 0.0]


async def test_malformed_fault_answers_200_with_html_and_writes_nothing(client):
    await add_fault(client, operation="POST /v0/externalAccounts", kind="malformed")

    response = await client.post("/v0/externalAccounts", json=account_body())

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html>")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert await total_accounts(client) == 0


async def test_unknown_status_fault_reports_an_undocumented_status_without_storing_it(client):
    await add_fault(client, operation="POST /v0/externalAccounts", kind="unknown_status")
    await add_fault(
        client, operation="GET /v0/externalAccounts", kind="unknown_status", unknownStatus="frozen"
    )

    created = await client.post("/v0/externalAccounts", json=account_body())
    listed = await client.get("/v0/externalAccounts", params={"organizationId": ORG})
    fetched = await client.get(f"/v0/externalAccounts/{created.json()['id']}")

    assert created.status_code == 201
    assert created.json()["status"] == "under_review"
    assert [a["status"] for a in listed.json()["data"]] == ["frozen"]
    assert fetched.json()["status"] == "new"


async def test_unknown_status_fault_on_payouts(client):
    payout = await create_payout(client)
    await add_fault(client, operation="GET /v0/payouts/{id}", kind="unknown_status")

    response = await client.get(f"/v0/payouts/{payout['id']}")

    assert response.json()["status"] == "under_review"


async def test_apply_then_fail_fault_writes_then_answers_500(client):
    await add_fault(client, operation="POST /v0/externalAccounts", kind="apply_then_fail")

    response = await client.post("/v0/externalAccounts", json=account_body())

    assert_error(response, 500, "internal_error")
    assert await total_accounts(client) == 1


async def test_apply_then_fail_fault_with_latency_writes_then_answers_late(client, sleeps):
    await add_fault(client, kind="apply_then_fail", latencyMs=5000)

    response = await client.post("/v0/externalAccounts", json=account_body())

    assert response.status_code == 201
    assert sleeps.calls == [5.0]
    assert await total_accounts(client) == 1


async def test_apply_then_fail_does_not_fake_success_for_refused_requests(client):
    await add_fault(client, kind="apply_then_fail")

    response = await client.post("/v0/externalAccounts", json={})

    assert_validation_error(response, "organizationId")
    assert (await client.get("/_sandbox/faults")).json() == {"data": []}


async def test_delete_faults_clears_every_waiting_fault(client):
    await add_fault(client, kind="status", count=10)

    cleared = await client.delete("/_sandbox/faults")
    response = await client.get("/v0/payouts/po_x")

    assert cleared.status_code == 204
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "status", "operation": "POST /v0/unknown"}, "operation"),
        ({"kind": "explode"}, "kind"),
        ({}, "kind"),
        ({"kind": "status", "status": 200}, "status"),
        ({"kind": "status", "count": 0}, "count"),
        ({"kind": "latency", "latencyMs": -1}, "latencyMs"),
    ],
)
async def test_fault_specs_are_validated(client, spec, field):
    response = await client.post("/_sandbox/faults", json=spec)

    assert_validation_error(response, field)


# ---- routing, openapi, real sockets, mounting ----


async def test_unknown_paths_and_methods_answer_in_paygentic_shape(client):
    assert_error(await client.get("/v0/nothing"), 404, "not_found")
    assert_error(await client.put("/v0/externalAccounts/eba_x", json={}), 405, "method_not_allowed")


async def test_openapi_describes_the_public_routes_with_response_models(client):
    spec = (await client.get("/openapi.json")).json()

    paths = spec["paths"]
    assert set(paths) >= {
        "/v0/externalAccounts",
        "/v0/externalAccounts/{id}",
        "/v0/payouts",
        "/v0/payouts/{id}",
    }
    created = paths["/v0/externalAccounts"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/ExternalBankAccount")
    assert paths["/v0/payouts/{id}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("/Payout")
    assert set(spec["components"]["schemas"]["ExternalBankAccount"]["properties"]) == set(
        ACCOUNT_FIELDS
    )
    assert set(spec["components"]["schemas"]["Payout"]["properties"]) == set(PAYOUT_FIELDS)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    schema_422 = paths["/v0/payouts"]["post"]["responses"]["422"]["content"]["application/json"]
    assert schema_422["schema"]["$ref"].endswith("/ErrorBody")


async def test_the_full_flow_works_over_a_real_socket():
    app = create_paygentic_sandbox()
    with live_server(app) as base_url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=5) as client:
            account = await verified_account(client)
            payout = await client.post("/v0/payouts", json=payout_body(account["id"]))
            fetched = await client.get(f"/v0/payouts/{payout.json()['id']}")
            unauthorized = await client.get("/v0/payouts/po_x", headers={"Authorization": ""})

    assert payout.status_code == 201
    assert fetched.json()["status"] == "pending"
    assert ISO_Z.match(account["createdAt"])
    assert_error(unauthorized, 401, "unauthorized")


async def test_apply_then_fail_with_latency_leaves_the_outcome_unknown_over_a_socket():
    app = create_paygentic_sandbox()
    with live_server(app) as base_url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=5) as client:
            await add_fault(client, kind="apply_then_fail", latencyMs=400)
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v0/externalAccounts", json=account_body(), timeout=0.15)
            total = await total_accounts(client)

    assert total == 1


async def test_the_sandbox_works_mounted_under_a_prefix(app):
    gateway = FastAPI()
    gateway.mount("/sandbox/paygentic", app)
    async with client_for(gateway) as client:
        created = await client.post("/sandbox/paygentic/v0/externalAccounts", json=account_body())
        fetched = await client.get(f"/sandbox/paygentic/v0/externalAccounts/{created.json()['id']}")
        control = await client.post(
            f"/sandbox/paygentic/_sandbox/externalAccounts/{created.json()['id']}/status",
            json={"status": "verified"},
        )
        spec = await client.get("/sandbox/paygentic/openapi.json")

    assert created.status_code == 201
    assert fetched.json() == created.json()
    assert control.json()["status"] == "verified"
    assert spec.status_code == 200
    assert sandbox_of(app).request_counts["POST /v0/externalAccounts"] == 1


async def test_trailing_slash_is_not_redirected(client):
    response = await client.get("/v0/payouts/", params={"organizationId": ORG})

    assert_error(response, 404, "not_found")
    assert "location" not in response.headers


@pytest.mark.parametrize(("status", "error"), [(418, "i_m_a_teapot"), (599, "error")])
async def test_status_fault_with_an_uncommon_status_names_its_category(client, status, error):
    await add_fault(client, kind="status", status=status)

    response = await client.get("/v0/payouts/po_x")

    assert_error(response, status, error)


async def test_unknown_status_fault_leaves_a_bodiless_answer_alone(client):
    created = await create_account(client)
    await add_fault(client, kind="unknown_status")

    response = await client.delete(f"/v0/externalAccounts/{created['id']}")

    assert response.status_code == 204
    assert response.content == b""


async def test_an_unexpected_error_answers_500_in_paygentic_shape(sleeps):
    def broken_clock() -> datetime:
        raise RuntimeError("clock stopped")

    app = create_paygentic_sandbox(PaygenticSandboxConfig(clock=broken_clock, sleep=sleeps))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as c:
        response = await c.post("/v0/externalAccounts", json=account_body())

    body = assert_error(response, 500, "internal_error")
    assert "clock stopped" not in body["message"]


async def test_a_naive_clock_is_read_as_utc(sleeps):
    config = PaygenticSandboxConfig(clock=lambda: datetime(2024, 5, 6, 7, 8, 9, 999), sleep=sleeps)
    async with client_for(create_paygentic_sandbox(config)) as client:
        account = await create_account(client)

    assert account["createdAt"] == "2024-05-06T07:08:09Z"


@pytest.mark.parametrize(
    "options",
    [
        {"auto_verify_after_seconds": -1},
        {"page_max": 0},
        {"page_default": 0},
        {"page_max": 5, "page_default": 6},
        {"platform_fee_cents": -1},
        {"method_fee_cents": -1},
    ],
)
def test_config_rejects_impossible_settings(options):
    with pytest.raises(ValueError, match="must be"):
        PaygenticSandboxConfig(**options)
