"""Conformance of the Commet sandbox to docs/providers/commet.md, plus its sandbox-only controls."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from payout_gateway.sandbox.commet import CommetSandboxConfig, create_commet_sandbox
from payout_gateway.sandbox.commet.state import SandboxState
from tests.support.live_server import live_server

LIVE = "ck_live_A1b2C3d4E5f6"
OTHER_LIVE = "ck_live_Z9y8X7w6V5u4"
SANDBOX = "ck_sandbox_A1b2C3d4E5f6"
RESTRICTED = "rk_live_A1b2C3d4E5f6"
RESTRICTED_SANDBOX = "rk_sandbox_A1b2C3d4E5f6"

VERIFICATION = "/api/v1/payouts/verification"
BANK_ACCOUNTS = "/api/v1/payouts/bank-accounts"
PAYOUTS = "/api/v1/payouts"

FIRST_ACCOUNT_NUMBER = "000123456789"
SECOND_ACCOUNT_NUMBER = "999988887777"

REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")

BANK_ACCOUNT_FIELDS = {
    "id",
    "providerExternalAccountId",
    "holderName",
    "last4",
    "bankName",
    "country",
    "currency",
    "accountType",
    "isDefault",
    "status",
    "createdAt",
    "object",
    "livemode",
}
PAYOUT_FIELDS = {
    "id",
    "status",
    "amount",
    "fee",
    "netAmount",
    "currency",
    "description",
    "providerTransferId",
    "createdAt",
    "object",
    "livemode",
}
ERROR_FIELDS = {"type", "code", "message", "param", "details", "doc_url"}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    return create_commet_sandbox(CommetSandboxConfig(clock=clock))


@pytest.fixture
def bodies() -> list[str]:
    """Every response body the ``client`` fixture received, for leak checks."""
    return []


async def _client_for(app: Any, bodies: list[str]) -> httpx.AsyncClient:
    async def check(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.text)
        # Commet sends a request id on every response: checked on every call of every test.
        assert REQUEST_ID.fullmatch(response.headers["x-request-id"])

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://commet.test",
        event_hooks={"response": [check]},
    )


@pytest.fixture
async def client(app: FastAPI, bodies: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client_for(app, bodies) as http:
        yield http


def sandbox_state(app: FastAPI) -> SandboxState:
    state = app.state.sandbox
    assert isinstance(state, SandboxState)
    return state


def auth(key: str = LIVE, **extra: str) -> dict[str, str]:
    return {"x-api-key": key, **extra}


def address() -> dict[str, Any]:
    return {"line1": "1 Market St", "city": "San Francisco", "postalCode": "94105", "country": "US"}


def individual_verification(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": "ada@example.com",
        "businessType": "individual",
        "businessUrl": "https://ada.example.com",
        "documentUrl": "https://files.example.com/id/ada.pdf",
        "bank": {
            "accountNumber": FIRST_ACCOUNT_NUMBER,
            "accountHolderName": "Ada Lovelace",
            "routingNumber": "110000000",
            "accountType": "checking",
        },
        "individual": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+14155550123",
            "dateOfBirth": "1990-12-10",
            "ssnLast4": "1234",
            "address": address(),
        },
    }
    body.update(overrides)
    return body


def company_verification() -> dict[str, Any]:
    body = individual_verification(businessType="company")
    del body["individual"]
    body["company"] = {
        "name": "Analytical Engines Inc",
        "taxId": "12-3456789",
        "address": address(),
        "representative": {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"},
    }
    return body


def new_bank(number: str = SECOND_ACCOUNT_NUMBER, **overrides: Any) -> dict[str, Any]:
    return {"accountNumber": number, "accountHolderName": "Ada Lovelace", **overrides}


def data_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True
    assert isinstance(body["data"], dict)
    return body["data"]


def data_of_list(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert isinstance(body["data"], list)
    return body["data"]


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    error_type: str,
    *,
    param: str | None = None,
    version: str = "2026-07-11",
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == ERROR_FIELDS
    assert (error["code"], error["type"]) == (code, error_type)
    assert isinstance(error["message"], str) and error["message"]
    assert error["doc_url"] == f"https://commet.co/docs/api-reference/{version}/errors/{code}.md"
    if param is not None:
        assert error["param"] == param
    return error


def detail_fields(error: dict[str, Any]) -> set[str]:
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert set(detail) == {"field", "message"}
    return {detail["field"] for detail in error["details"]}


async def verify(client: httpx.AsyncClient, key: str = LIVE, **headers: str) -> httpx.Response:
    return await client.post(
        VERIFICATION, json=individual_verification(), headers=auth(key, **headers)
    )


async def ready_for_payouts(
    client: httpx.AsyncClient, key: str = LIVE, balance: int = 100_000
) -> None:
    data_of(await verify(client, key))
    data_of(
        await client.post(
            "/_sandbox/payout-account/status", json={"status": "verified"}, headers=auth(key)
        )
    )
    data_of(
        await client.post("/_sandbox/balance", json={"availableAmount": balance}, headers=auth(key))
    )


async def add_fault(client: httpx.AsyncClient, key: str = LIVE, **fault: Any) -> dict[str, Any]:
    return data_of(await client.post("/_sandbox/faults", json=fault, headers=auth(key)))


# --- authentication -----------------------------------------------------------------------

PAYOUT_ROUTES = [
    (VERIFICATION, individual_verification()),
    (BANK_ACCOUNTS, new_bank()),
    (PAYOUTS, {"amount": 1000}),
]


@pytest.mark.parametrize(("path", "body"), PAYOUT_ROUTES)
async def test_missing_api_key_is_401_unauthorized(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    assert_error(await client.post(path, json=body), 401, "unauthorized", "authentication_error")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "secret",
        "ck_live_short",  # fewer than 8 characters after the prefix
        "ck_test_A1b2C3d4E5f6",
        "sk_live_A1b2C3d4E5f6",
        "ck_live_A1b2C3d4-E5f6",
        "Bearer ck_live_A1b2C3d4E5f6",
    ],
)
@pytest.mark.parametrize(("path", "body"), PAYOUT_ROUTES)
async def test_malformed_api_key_is_401_unauthorized(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str
) -> None:
    response = await client.post(path, json=body, headers=auth(key))
    assert_error(response, 401, "unauthorized", "authentication_error")


@pytest.mark.parametrize("key", [SANDBOX, RESTRICTED_SANDBOX])
@pytest.mark.parametrize(("path", "body"), PAYOUT_ROUTES)
async def test_sandbox_keys_are_refused_on_payout_routes_with_403(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str
) -> None:
    response = await client.post(path, json=body, headers=auth(key))
    assert_error(response, 403, "payouts_not_available_in_sandbox", "authentication_error")


@pytest.mark.parametrize(("path", "body"), PAYOUT_ROUTES)
async def test_restricted_live_key_is_403_forbidden_on_payout_routes(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body, headers=auth(RESTRICTED))
    assert_error(response, 403, "forbidden", "authentication_error")


async def test_any_well_formed_live_key_works_without_setup(client: httpx.AsyncClient) -> None:
    data = data_of(await verify(client, "ck_live_" + "x" * 40))
    assert data["livemode"] is True


async def test_each_key_is_its_own_organization(client: httpx.AsyncClient, app: FastAPI) -> None:
    first = data_of(await verify(client, LIVE))
    other = data_of(await verify(client, OTHER_LIVE))
    assert first["providerAccountId"] != other["providerAccountId"]
    assert "alreadyExists" not in other
    assert_error(
        await client.post(PAYOUTS, json={"amount": 1000}, headers=auth("ck_live_NeverSeen1")),
        404,
        "not_found",
        "not_found_error",
    )
    assert set(sandbox_state(app).organizations) == {LIVE, OTHER_LIVE, "ck_live_NeverSeen1"}


# --- envelopes, routing, request ids ------------------------------------------------------


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    responses = [
        await verify(client),
        await client.post(PAYOUTS, json={"amount": 1}),
        await client.get("/api/v1/nowhere"),
        await client.get("/_sandbox/requests"),
        await client.get("/openapi.json"),
    ]
    ids = {response.headers["x-request-id"] for response in responses}
    assert len(ids) == len(responses)
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/payouts"),  # Commet has no list/get endpoints
        ("DELETE", "/api/v1/payouts/bank-accounts"),
        ("POST", "/api/v1/payouts/"),  # no trailing-slash redirect to an absolute URL
        ("POST", "/api/v1/invoices/in_1/status"),
        ("GET", "/api/v1/payouts/verification/acct_1"),
    ],
)
async def test_unknown_routes_answer_commet_shaped_404(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=auth())
    assert_error(response, 404, "not_found", "not_found_error")


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"amount": 1000,}'])
async def test_invalid_json_is_400_invalid_json(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        PAYOUTS, content=raw, headers=auth(**{"content-type": "application/json"})
    )
    assert_error(response, 400, "invalid_json", "validation_error")


@pytest.mark.parametrize("raw", [b"[]", b"1000", b'"amount"', b"null"])
async def test_json_that_is_not_an_object_is_a_validation_error(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(PAYOUTS, content=raw, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error", param="body")
    assert detail_fields(error) == {"body"}


async def test_openapi_describes_public_routes_without_fastapi_422(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path, name in [
        ("/api/v1/payouts/bank-accounts", "AddPayoutBankAccountParams"),
        ("/api/v1/payouts/verification", "CompletePayoutVerificationParams"),
        ("/api/v1/payouts", "RequestPayoutParams"),
    ]:
        operation = document["paths"][path]["post"]
        body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body_ref == f"#/components/schemas/{name}"
        assert "422" not in operation["responses"]
        assert {"400", "401", "403"} <= set(operation["responses"])
        assert {p["name"] for p in operation["parameters"]} >= {"commet-version", "Idempotency-Key"}
    assert set(schemas["AddPayoutBankAccountParams"]["required"]) == {
        "accountNumber",
        "accountHolderName",
    }
    assert "bank" in schemas["CompletePayoutVerificationParams"]["required"]
    assert set(schemas["PayoutBankAccount"]["properties"]) == BANK_ACCOUNT_FIELDS
    assert set(schemas["Payout"]["properties"]) == PAYOUT_FIELDS
    assert document["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "x-api-key"
    assert "HTTPValidationError" not in schemas


# --- POST /payouts/verification -----------------------------------------------------------


async def test_verification_creates_a_pending_account_in_the_documented_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await verify(client)
    data = data_of(response)
    assert set(data) == {
        "providerAccountId",
        "status",
        "transfersEnabled",
        "businessType",
        "country",
        "object",
        "livemode",
    }
    assert data["providerAccountId"].startswith("acct_")
    assert data["status"] == "pending_verification"
    assert data["transfersEnabled"] is False
    assert data["businessType"] == "individual"
    assert data["country"] == "US"
    assert data["object"] == "payout_account"
    assert data["livemode"] is True
    assert response.headers["commet-version"] == "2026-07-11"


async def test_verification_saves_the_bank_as_the_first_default_active_account(
    client: httpx.AsyncClient,
) -> None:
    data_of(await verify(client))
    org = data_of(await client.get("/_sandbox/organization", headers=auth()))
    [bank] = org["bankAccounts"]
    assert bank["isDefault"] is True
    assert bank["status"] == "active"
    assert bank["last4"] == FIRST_ACCOUNT_NUMBER[-4:]
    assert bank["bankName"] == "STRIPE TEST BANK"
    assert bank["accountType"] == "checking"
    assert org["availableAmount"] == 0


async def test_verification_is_idempotent_per_organization(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    created = data_of(await verify(client))
    body = individual_verification()
    body["bank"] = {**body["bank"], "accountNumber": SECOND_ACCOUNT_NUMBER}
    again = data_of(await client.post(VERIFICATION, json=body, headers=auth()))
    assert again["alreadyExists"] is True
    assert again["providerAccountId"] == created["providerAccountId"]
    org = sandbox_state(app).organizations[LIVE]
    assert len(org.bank_accounts) == 1  # nothing was created the second time


async def test_verification_with_company_branch(client: httpx.AsyncClient) -> None:
    response = await client.post(VERIFICATION, json=company_verification(), headers=auth())
    assert data_of(response)["businessType"] == "company"


@pytest.mark.parametrize("business_type", ["individual", "company"])
async def test_verification_requires_the_branch_named_by_business_type(
    client: httpx.AsyncClient, business_type: str
) -> None:
    body = individual_verification(businessType=business_type)
    body.pop("individual")
    response = await client.post(VERIFICATION, json=body, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error", param=business_type)
    assert detail_fields(error) == {business_type}


async def test_verification_ignores_the_branch_not_named_by_business_type(
    client: httpx.AsyncClient,
) -> None:
    body = individual_verification(company={"name": ""})
    assert data_of(await client.post(VERIFICATION, json=body, headers=auth()))


async def test_verification_validation_errors_list_every_camel_case_field(
    client: httpx.AsyncClient,
) -> None:
    body = individual_verification(email="not-an-email", businessType="charity")
    body["bank"] = {"accountHolderName": "Ada", "accountType": "money"}
    response = await client.post(VERIFICATION, json=body, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error", param="email")
    assert detail_fields(error) == {
        "email",
        "businessType",
        "bank.accountNumber",
        "bank.accountType",
    }


async def test_verification_validates_nested_individual_fields(client: httpx.AsyncClient) -> None:
    body = individual_verification()
    body["individual"] = {
        **body["individual"],
        "phone": "415 555",
        "dateOfBirth": "10/12/1990",
        "ssnLast4": "12345",
        "address": {"line1": "1 Market St", "city": "SF", "country": "usa"},
    }
    response = await client.post(VERIFICATION, json=body, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error")
    assert detail_fields(error) == {
        "individual.phone",
        "individual.dateOfBirth",
        "individual.ssnLast4",
        "individual.address.postalCode",
        "individual.address.country",
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://files.example.com/id.pdf",
        "https://localhost/id.pdf",
        "https://10.0.0.7/id.pdf",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/id.pdf",
        "https://metadata.google.internal/id.pdf",
        "https://user:pass@files.example.com/id.pdf",
        "not a url",
    ],
)
async def test_verification_rejects_document_urls_that_are_not_public_https(
    client: httpx.AsyncClient, url: str
) -> None:
    body = individual_verification(documentUrl=url)
    response = await client.post(VERIFICATION, json=body, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error", param="documentUrl")
    assert detail_fields(error) == {"documentUrl"}


async def test_auto_verification_flips_pending_after_the_configured_delay(
    clock: FakeClock,
) -> None:
    app = create_commet_sandbox(CommetSandboxConfig(clock=clock, auto_verify_after_seconds=60))
    async with await _client_for(app, []) as client:
        assert data_of(await verify(client))["status"] == "pending_verification"
        clock.advance(timedelta(seconds=59))
        assert data_of(await verify(client))["status"] == "pending_verification"
        clock.advance(timedelta(seconds=1))
        data = data_of(await verify(client))
        assert (data["status"], data["transfersEnabled"]) == ("verified", True)


# --- versions -----------------------------------------------------------------------------


async def test_version_2026_07_24_answers_with_the_outcome_union(client: httpx.AsyncClient) -> None:
    created_response = await verify(client, **{"commet-version": "2026-07-24"})
    created = data_of(created_response)
    assert created["outcome"] == "created"
    assert "alreadyExists" not in created
    assert (created["businessType"], created["country"]) == ("individual", "US")
    assert created_response.headers["commet-version"] == "2026-07-24"

    existing = data_of(await verify(client, **{"commet-version": "2026-07-24"}))
    assert existing["outcome"] == "existing"
    assert existing["providerAccountId"] == created["providerAccountId"]
    assert set(existing) == {
        "providerAccountId",
        "status",
        "transfersEnabled",
        "outcome",
        "object",
        "livemode",
    }


@pytest.mark.parametrize("version", ["2026-08-27", "2026-12-01", "2030-01-01"])
async def test_verification_is_retired_with_410_from_2026_08_27(
    client: httpx.AsyncClient, app: FastAPI, version: str
) -> None:
    response = await verify(client, **{"commet-version": version})
    error = assert_error(
        response, 410, "endpoint_deprecated", "not_found_error", version="2026-08-27"
    )
    assert "dashboard" in error["message"]
    assert response.headers["commet-version"] == "2026-08-27"
    assert sandbox_state(app).organizations[LIVE].payout_account is None


async def test_bank_accounts_still_work_on_the_current_version(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    response = await client.post(
        BANK_ACCOUNTS, json=new_bank(), headers=auth(**{"commet-version": "2026-08-27"})
    )
    assert data_of(response)["object"] == "payout_bank_account"


@pytest.mark.parametrize(
    ("requested", "resolved"),
    [
        ("2026-06-07", "2026-06-07"),
        ("2026-06-30", "2026-06-07"),
        ("2026-07-11", "2026-07-11"),
        ("2026-07-20", "2026-07-11"),
        ("2026-08-01", "2026-07-24"),
    ],
)
async def test_versions_between_releases_resolve_to_the_previous_release(
    client: httpx.AsyncClient, requested: str, resolved: str
) -> None:
    data_of(await verify(client))
    response = await verify(client, **{"commet-version": requested})
    assert response.headers["commet-version"] == resolved
    data = data_of(response)
    if resolved == "2026-07-24":
        assert data["outcome"] == "existing"
    else:
        assert data["alreadyExists"] is True


@pytest.mark.parametrize("requested", ["2026-06-06", "2025-01-01", "2026-13-01", "latest", ""])
async def test_malformed_or_too_old_versions_are_400_on_commet_version(
    client: httpx.AsyncClient, requested: str
) -> None:
    response = await verify(client, **{"commet-version": requested})
    error = assert_error(
        response, 400, "validation_error", "validation_error", param="commet-version"
    )
    assert detail_fields(error) == {"commet-version"}


async def test_version_header_name_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await verify(client, **{"CoMMet-VerSion": "2026-07-24"})
    assert data_of(response)["outcome"] == "created"


async def test_organization_pin_applies_when_no_header_is_sent(client: httpx.AsyncClient) -> None:
    data_of(
        await client.post(
            "/_sandbox/organization", json={"versionPin": "2026-07-24"}, headers=auth()
        )
    )
    assert data_of(await verify(client))["outcome"] == "created"
    pinned_over = await verify(client, **{"commet-version": "2026-07-11"})
    assert data_of(pinned_over)["alreadyExists"] is True
    data_of(await client.post("/_sandbox/organization", json={"versionPin": None}, headers=auth()))
    assert data_of(await verify(client))["alreadyExists"] is True


async def test_invalid_organization_pin_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_sandbox/organization", json={"versionPin": "2020-01-01"}, headers=auth()
    )
    assert_error(response, 400, "validation_error", "validation_error", param="versionPin")


async def test_config_default_version_applies_without_header_or_pin() -> None:
    app = create_commet_sandbox(CommetSandboxConfig(default_version="2026-07-24"))
    async with await _client_for(app, []) as client:
        response = await verify(client)
        assert data_of(response)["outcome"] == "created"
        assert response.headers["commet-version"] == "2026-07-24"


@pytest.mark.parametrize(
    "overrides",
    [
        {"default_version": "2026-01-01"},
        {"default_version": "soon"},
        {"idempotency_ttl_seconds": 0},
        {"default_currency": "USD"},
        {"default_country": "usa"},
    ],
)
def test_config_rejects_impossible_settings(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        CommetSandboxConfig(**overrides)


# --- POST /payouts/bank-accounts ----------------------------------------------------------


async def test_adding_a_bank_account_without_payout_account_is_404_asking_for_verification(
    client: httpx.AsyncClient,
) -> None:
    error = assert_error(
        await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth()),
        404,
        "not_found",
        "not_found_error",
    )
    assert "verification" in error["message"]


async def test_added_bank_account_has_every_documented_field(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    body = new_bank(routingNumber="021000021", accountType="savings", setDefault=False)
    data = data_of(await client.post(BANK_ACCOUNTS, json=body, headers=auth()))
    assert set(data) == BANK_ACCOUNT_FIELDS
    assert data["id"].startswith("pba_")
    assert data["providerExternalAccountId"].startswith("ba_")
    assert data["holderName"] == "Ada Lovelace"
    assert data["last4"] == "7777"
    assert data["bankName"] == "JPMORGAN CHASE BANK, NA"
    assert (data["country"], data["currency"]) == ("US", "usd")
    assert data["accountType"] == "savings"
    assert data["isDefault"] is False
    assert data["status"] == "active"
    assert ISO_8601.fullmatch(data["createdAt"])
    assert data["createdAt"].startswith("2026-07-15T12:00:00")
    assert (data["object"], data["livemode"]) == ("payout_bank_account", True)


async def test_bank_name_is_null_for_unknown_routing_numbers_and_type_may_be_absent(
    client: httpx.AsyncClient,
) -> None:
    data_of(await verify(client))
    data = data_of(
        await client.post(BANK_ACCOUNTS, json=new_bank(routingNumber="999999999"), headers=auth())
    )
    assert (data["bankName"], data["accountType"]) == (None, None)


async def test_set_default_is_optional_and_defaults_to_false(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    for body in (new_bank(), new_bank(setDefault=None)):
        assert (
            data_of(await client.post(BANK_ACCOUNTS, json=body, headers=auth()))["isDefault"]
            is False
        )


async def test_set_default_true_clears_the_other_defaults(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    new_default = data_of(
        await client.post(BANK_ACCOUNTS, json=new_bank(setDefault=True), headers=auth())
    )
    assert new_default["isDefault"] is True
    banks = data_of(await client.get("/_sandbox/organization", headers=auth()))["bankAccounts"]
    assert [bank["id"] for bank in banks if bank["isDefault"]] == [new_default["id"]]
    assert len(banks) == 2


async def test_bank_account_country_and_currency_come_from_the_organization(
    client: httpx.AsyncClient,
) -> None:
    data_of(await verify(client))
    data_of(
        await client.post(
            "/_sandbox/organization", json={"country": "GB", "currency": "GBP"}, headers=auth()
        )
    )
    data = data_of(await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth()))
    assert (data["country"], data["currency"]) == ("GB", "gbp")


async def test_bank_account_validation_errors_are_commet_shaped(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    body = {"accountNumber": "", "accountType": "money", "setDefault": "yes", "extra": 1}
    response = await client.post(BANK_ACCOUNTS, json=body, headers=auth())
    error = assert_error(
        response, 400, "validation_error", "validation_error", param="accountNumber"
    )
    assert detail_fields(error) == {
        "accountNumber",
        "accountHolderName",
        "accountType",
        "setDefault",
    }


async def test_validation_messages_never_repeat_the_submitted_number(
    client: httpx.AsyncClient,
) -> None:
    data_of(await verify(client))
    response = await client.post(
        BANK_ACCOUNTS,
        json={"accountNumber": 123456789012, "accountHolderName": "A"},
        headers=auth(),
    )
    error = assert_error(
        response, 400, "validation_error", "validation_error", param="accountNumber"
    )
    assert "123456789012" not in response.text
    assert detail_fields(error) == {"accountNumber"}


async def test_full_account_numbers_are_never_returned_nor_stored(
    client: httpx.AsyncClient, app: FastAPI, bodies: list[str]
) -> None:
    await ready_for_payouts(client)
    data_of(
        await client.post(
            BANK_ACCOUNTS,
            json=new_bank(setDefault=True),
            headers=auth(**{"Idempotency-Key": "bank-1"}),
        )
    )
    data_of(await verify(client, **{"Idempotency-Key": "verify-1"}))
    data_of(await client.post(PAYOUTS, json={"amount": 5000}, headers=auth()))
    data_of(await client.get("/_sandbox/organization", headers=auth()))
    data_of_list(await client.get("/_sandbox/events", headers=auth()))
    state = sandbox_state(app)
    stored = repr(state.organizations) + repr(state.idempotency) + repr(state.events)
    for number in (FIRST_ACCOUNT_NUMBER, SECOND_ACCOUNT_NUMBER):
        assert all(number not in body for body in bodies)
        assert number not in stored
    for kyc_value in ("ada@example.com", "+14155550123", "1990-12-10", "files.example.com"):
        assert kyc_value not in stored  # KYC is validated, then dropped


# --- POST /payouts ------------------------------------------------------------------------


async def test_payout_without_payout_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(PAYOUTS, json={"amount": 1000}, headers=auth())
    assert_error(response, 404, "not_found", "not_found_error")


@pytest.mark.parametrize("status", ["pending_verification", "restricted", "disabled"])
async def test_payout_on_an_unverified_account_is_409(
    client: httpx.AsyncClient, status: str
) -> None:
    await ready_for_payouts(client)
    await client.post("/_sandbox/payout-account/status", json={"status": status}, headers=auth())
    response = await client.post(PAYOUTS, json={"amount": 1000}, headers=auth())
    error = assert_error(response, 409, "payout_account_not_verified", "conflict_error")
    assert status in error["message"]


async def test_payout_above_the_available_balance_is_insufficient_balance(
    client: httpx.AsyncClient,
) -> None:
    await ready_for_payouts(client, balance=1500)
    response = await client.post(PAYOUTS, json={"amount": 1501}, headers=auth())
    assert_error(response, 400, "insufficient_balance", "billing_error", param="amount")


@pytest.mark.parametrize(
    ("amount", "fee"), [(1000, 25), (10_000, 25), (100_000, 250), (100_001, 251)]
)
async def test_payout_has_every_documented_field_and_deducts_the_balance(
    client: httpx.AsyncClient, amount: int, fee: int
) -> None:
    await ready_for_payouts(client, balance=200_000)
    body = {"amount": amount, "description": "July earnings"}
    data = data_of(await client.post(PAYOUTS, json=body, headers=auth()))
    assert set(data) == PAYOUT_FIELDS
    assert data["id"].startswith("po_")
    assert data["status"] == "pending"
    assert (data["amount"], data["fee"], data["netAmount"]) == (amount, fee, amount - fee)
    assert data["currency"] == "usd"
    assert data["description"] == "July earnings"
    assert data["providerTransferId"] is None
    assert ISO_8601.fullmatch(data["createdAt"])
    assert (data["object"], data["livemode"]) == ("payout", True)
    org = data_of(await client.get("/_sandbox/organization", headers=auth()))
    assert org["availableAmount"] == 200_000 - amount


async def test_payout_amount_may_be_an_integral_json_float(client: httpx.AsyncClient) -> None:
    await ready_for_payouts(client)
    data = data_of(await client.post(PAYOUTS, json={"amount": 1000.0}, headers=auth()))
    assert (data["amount"], data["description"]) == (1000, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 999}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 1000.5}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": True}, "amount"),
        ({}, "amount"),
        ({"amount": 1000, "description": "x" * 501}, "description"),
    ],
)
async def test_payout_validation(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await ready_for_payouts(client)
    response = await client.post(PAYOUTS, json=body, headers=auth())
    error = assert_error(response, 400, "validation_error", "validation_error", param=field)
    assert detail_fields(error) == {field}


async def test_payout_status_controls_move_forward_refund_and_emit_events(
    client: httpx.AsyncClient,
) -> None:
    await ready_for_payouts(client, balance=10_000)
    paid = data_of(await client.post(PAYOUTS, json={"amount": 4000}, headers=auth()))
    failed = data_of(await client.post(PAYOUTS, json={"amount": 5000}, headers=auth()))

    path = f"/_sandbox/payouts/{paid['id']}/status"
    in_transit = data_of(await client.post(path, json={"status": "in_transit"}, headers=auth()))
    assert in_transit["providerTransferId"].startswith("tr_")
    assert (
        data_of(await client.post(path, json={"status": "paid"}, headers=auth()))["status"]
        == "paid"
    )
    backwards = await client.post(path, json={"status": "in_transit"}, headers=auth())
    assert_error(backwards, 409, "invalid_status_transition", "conflict_error")

    failed_path = f"/_sandbox/payouts/{failed['id']}/status"
    data_of(await client.post(failed_path, json={"status": "failed"}, headers=auth()))
    org = data_of(await client.get("/_sandbox/organization", headers=auth()))
    assert org["availableAmount"] == 10_000 - 4000  # the failed payout's amount came back

    events = data_of_list(await client.get("/_sandbox/events", headers=auth()))
    names = [event["event"] for event in events]
    assert names == [
        "payout.available",
        "payout.created",
        "payout.created",
        "payout.paid",
        "payout.failed",
    ]
    assert all(event["id"].startswith("whev_") and event["mode"] == "live" for event in events)
    assert events[3]["data"]["destinationBank"] == {
        "bankName": "STRIPE TEST BANK",
        "last4": FIRST_ACCOUNT_NUMBER[-4:],
    }
    assert events[4]["data"]["failureCode"]


async def test_unknown_payout_or_bank_account_ids_are_404_in_controls(
    client: httpx.AsyncClient,
) -> None:
    for path, status in [
        ("/_sandbox/payouts/po_nope/status", "paid"),
        ("/_sandbox/bank-accounts/pba_nope/status", "errored"),
        ("/_sandbox/payout-account/status", "verified"),
    ]:
        response = await client.post(path, json={"status": status}, headers=auth())
        assert_error(response, 404, "not_found", "not_found_error")


async def test_bank_account_status_control(client: httpx.AsyncClient) -> None:
    data_of(await verify(client))
    bank = data_of(await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth()))
    path = f"/_sandbox/bank-accounts/{bank['id']}/status"
    assert (
        data_of(await client.post(path, json={"status": "errored"}, headers=auth()))["status"]
        == "errored"
    )
    invalid = await client.post(path, json={"status": "closed"}, headers=auth())
    assert_error(invalid, 400, "validation_error", "validation_error", param="status")


# --- idempotency --------------------------------------------------------------------------


async def test_replay_returns_the_stored_answer_byte_for_byte_and_runs_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await ready_for_payouts(client)
    headers = auth(**{"Idempotency-Key": "payout-1"})
    first = await client.post(PAYOUTS, json={"amount": 2000, "description": "a"}, headers=headers)
    # Same JSON in another key order and spacing is the same request.
    second = await client.post(
        PAYOUTS, content=b'{ "description": "a",  "amount": 2000 }', headers=headers
    )
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    org = sandbox_state(app).organizations[LIVE]
    assert len(org.payouts) == 1
    assert org.available_amount == 100_000 - 2000


async def test_same_key_with_a_different_body_is_409_mismatch(client: httpx.AsyncClient) -> None:
    await ready_for_payouts(client)
    headers = auth(**{"Idempotency-Key": "payout-1"})
    data_of(await client.post(PAYOUTS, json={"amount": 2000}, headers=headers))
    response = await client.post(PAYOUTS, json={"amount": 3000}, headers=headers)
    assert_error(response, 409, "idempotency_key_mismatch", "conflict_error")
    other_path = await client.post(BANK_ACCOUNTS, json=new_bank(), headers=headers)
    assert_error(other_path, 409, "idempotency_key_mismatch", "conflict_error")


async def test_same_key_while_the_first_request_runs_is_409_in_progress(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await ready_for_payouts(client)
    await add_fault(client, kind="latency", latencyMs=300, operation="POST /payouts")
    headers = auth(**{"Idempotency-Key": "slow-1"})
    first = asyncio.create_task(client.post(PAYOUTS, json={"amount": 2000}, headers=headers))
    state = sandbox_state(app)
    for _ in range(200):
        if any(record.response is None for record in state.idempotency.values()):
            break
        await asyncio.sleep(0.005)
    concurrent = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert_error(concurrent, 409, "idempotency_in_progress", "conflict_error")
    assert not first.done()
    first_response = await first
    assert first_response.status_code == 200
    after = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert after.content == first_response.content
    assert len(state.organizations[LIVE].payouts) == 1


async def test_idempotency_keys_are_scoped_per_organization(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    first = data_of(await verify(client, LIVE, **headers))
    other = data_of(await verify(client, OTHER_LIVE, **headers))
    assert first["providerAccountId"] != other["providerAccountId"]


async def test_idempotency_keys_expire_after_24_hours(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await ready_for_payouts(client)
    headers = auth(**{"Idempotency-Key": "daily"})
    first = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    replay = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert replay.content == first.content
    clock.advance(timedelta(seconds=1))
    fresh = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert "idempotent-replayed" not in fresh.headers
    assert data_of(fresh)["id"] != data_of(first)["id"]


async def test_idempotency_ttl_comes_from_the_config(clock: FakeClock) -> None:
    app = create_commet_sandbox(CommetSandboxConfig(clock=clock, idempotency_ttl_seconds=60))
    async with await _client_for(app, []) as client:
        headers = auth(**{"Idempotency-Key": "short"})
        first = await client.post(VERIFICATION, json=individual_verification(), headers=headers)
        clock.advance(timedelta(seconds=60))
        again = await client.post(VERIFICATION, json=individual_verification(), headers=headers)
        assert "idempotent-replayed" not in again.headers
        assert data_of(again)["alreadyExists"] is True
        assert "alreadyExists" not in data_of(first)


@pytest.mark.parametrize(("length", "accepted"), [(255, True), (256, False)])
async def test_idempotency_key_length_is_limited_to_255(
    client: httpx.AsyncClient, length: int, accepted: bool
) -> None:
    response = await verify(client, **{"Idempotency-Key": "k" * length})
    if accepted:
        data_of(response)
    else:
        assert_error(response, 400, "validation_error", "validation_error", param="Idempotency-Key")


async def test_rejected_requests_are_not_stored_so_the_corrected_one_can_reuse_the_key(
    client: httpx.AsyncClient,
) -> None:
    await ready_for_payouts(client)
    headers = auth(**{"Idempotency-Key": "fix-me"})
    invalid = await client.post(PAYOUTS, json={"amount": 5}, headers=headers)
    assert_error(invalid, 400, "validation_error", "validation_error")
    data_of(await client.post(PAYOUTS, json={"amount": 5000}, headers=headers))


async def test_business_refusals_are_stored_and_replayed(client: httpx.AsyncClient) -> None:
    await ready_for_payouts(client, balance=1000)
    headers = auth(**{"Idempotency-Key": "too-much"})
    refused = await client.post(PAYOUTS, json={"amount": 5000}, headers=headers)
    assert_error(refused, 400, "insufficient_balance", "billing_error")
    await client.post("/_sandbox/balance", json={"availableAmount": 10_000}, headers=auth())
    replay = await client.post(PAYOUTS, json={"amount": 5000}, headers=headers)
    assert replay.content == refused.content
    assert replay.headers["idempotent-replayed"] == "true"


async def test_server_errors_are_not_stored_so_a_retry_runs_again(
    client: httpx.AsyncClient,
) -> None:
    await ready_for_payouts(client)
    await add_fault(client, kind="status", status=500)
    headers = auth(**{"Idempotency-Key": "retry-me"})
    failed = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert_error(failed, 500, "internal_error", "internal_error")
    retried = await client.post(PAYOUTS, json={"amount": 2000}, headers=headers)
    assert "idempotent-replayed" not in retried.headers
    assert data_of(retried)["status"] == "pending"


# --- fault injection and counters ---------------------------------------------------------


async def test_status_fault_answers_before_anything_runs(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    data_of(await verify(client))
    fault = await add_fault(
        client, kind="status", status=503, operation="POST /payouts/bank-accounts"
    )
    assert (fault["remaining"], fault["applied"]) == (1, False)
    response = await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth())
    assert_error(response, 503, "internal_error", "internal_error")
    assert len(sandbox_state(app).organizations[LIVE].bank_accounts) == 1
    data_of(await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth()))


async def test_rate_limit_fault_carries_retry_after(client: httpx.AsyncClient) -> None:
    await add_fault(client, kind="status", status=429, retryAfterSeconds=2)
    response = await verify(client)
    assert_error(response, 429, "rate_limited", "rate_limit_error")
    assert response.headers["retry-after"] == "2"


async def test_applied_status_fault_runs_the_operation_and_keeps_the_real_result(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_fault(client, kind="status", status=502, applied=True)
    headers = auth(**{"Idempotency-Key": "unknown-outcome"})
    response = await verify(client, **headers)
    assert_error(response, 502, "internal_error", "internal_error")
    assert sandbox_state(app).organizations[LIVE].payout_account is not None
    replay = await verify(client, **headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert "alreadyExists" not in data_of(replay)  # the stored answer of the creating call


async def test_malformed_fault_answers_200_html_after_running_the_operation(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_fault(client, kind="malformed")
    headers = auth(**{"Idempotency-Key": "garbled"})
    response = await verify(client, **headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert sandbox_state(app).organizations[LIVE].payout_account is not None
    assert data_of(await verify(client, **headers))["status"] == "pending_verification"


async def test_unknown_status_fault_puts_an_undocumented_status_in_a_success(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await ready_for_payouts(client)
    await add_fault(client, kind="unknown_status", unknownStatus="awaiting_review")
    data = data_of(await client.post(PAYOUTS, json={"amount": 2000}, headers=auth()))
    assert data["status"] == "awaiting_review"
    [payout] = sandbox_state(app).organizations[LIVE].payouts.values()
    assert payout.status == "pending"


async def test_faults_match_operation_and_count_then_stop(client: httpx.AsyncClient) -> None:
    await ready_for_payouts(client)
    await add_fault(client, kind="status", status=500, count=2, operation="POST /payouts")
    data_of(await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth()))
    for _ in range(2):
        response = await client.post(PAYOUTS, json={"amount": 1000}, headers=auth())
        assert response.status_code == 500
    data_of(await client.post(PAYOUTS, json={"amount": 1000}, headers=auth()))


async def test_faults_belong_to_the_key_organization(client: httpx.AsyncClient) -> None:
    await add_fault(client, OTHER_LIVE, kind="status", status=500)
    data_of(await verify(client, LIVE))
    assert (await verify(client, OTHER_LIVE)).status_code == 500


async def test_faults_can_be_listed_and_cleared(client: httpx.AsyncClient) -> None:
    await add_fault(client, kind="latency", latencyMs=10, count=3)
    await add_fault(client, kind="malformed")
    listed = data_of_list(await client.get("/_sandbox/faults", headers=auth()))
    assert [(f["kind"], f["remaining"]) for f in listed] == [("latency", 3), ("malformed", 1)]
    assert data_of(await client.delete("/_sandbox/faults", headers=auth())) == {"cleared": 2}
    assert data_of_list(await client.get("/_sandbox/faults", headers=auth())) == []
    data_of(await verify(client))


@pytest.mark.parametrize(
    ("fault", "param"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "status", "status": 200}, "status"),
        ({"kind": "status", "operation": "GET /payouts"}, "operation"),
        ({"kind": "latency", "count": 0}, "count"),
    ],
)
async def test_invalid_fault_definitions_are_refused(
    client: httpx.AsyncClient, fault: dict[str, Any], param: str
) -> None:
    response = await client.post("/_sandbox/faults", json=fault, headers=auth())
    assert_error(response, 400, "validation_error", "validation_error", param=param)


async def test_request_counts_per_operation(client: httpx.AsyncClient, app: FastAPI) -> None:
    await verify(client)
    await verify(client, SANDBOX)  # refused, still received
    await client.post(PAYOUTS, json={"amount": 1000})  # no key, still received
    await client.post(BANK_ACCOUNTS, json=new_bank(), headers=auth())
    expected = {
        "POST /payouts/verification": 2,
        "POST /payouts": 1,
        "POST /payouts/bank-accounts": 1,
    }
    assert dict(sandbox_state(app).request_counts) == expected
    counted = data_of(await client.get("/_sandbox/requests"))
    assert counted == {"total": 4, "counts": expected}
    data_of(await client.delete("/_sandbox/requests"))
    assert sandbox_state(app).request_counts.total() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sandbox/organization"),
        ("POST", "/_sandbox/balance"),
        ("POST", "/_sandbox/faults"),
        ("DELETE", "/_sandbox/faults"),
        ("GET", "/_sandbox/events"),
    ],
)
async def test_control_routes_need_a_well_formed_key(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={}, headers={"x-api-key": "nope"})
    assert_error(response, 401, "unauthorized", "authentication_error")


async def test_control_routes_accept_sandbox_and_restricted_keys(client: httpx.AsyncClient) -> None:
    for key in (SANDBOX, RESTRICTED):
        org = data_of(await client.get("/_sandbox/organization", headers=auth(key)))
        assert org["livemode"] is ("_live_" in key)


async def test_each_app_has_independent_state(client: httpx.AsyncClient, app: FastAPI) -> None:
    data_of(await verify(client))
    other_app = create_commet_sandbox()
    assert sandbox_state(other_app) is not sandbox_state(app)
    async with await _client_for(other_app, []) as other:
        assert "alreadyExists" not in data_of(await verify(other))


# --- mounting and real sockets ------------------------------------------------------------


async def test_works_mounted_under_a_prefix(app: FastAPI) -> None:
    parent = Starlette(routes=[Mount("/sandbox/commet", app=app)])
    async with await _client_for(parent, []) as client:
        base = "/sandbox/commet/api/v1"
        created = await client.post(
            f"{base}/payouts/verification", json=individual_verification(), headers=auth()
        )
        assert data_of(created)["status"] == "pending_verification"
        missing = await client.get(f"{base}/payouts", headers=auth())
        assert_error(missing, 404, "not_found", "not_found_error")


def test_serves_the_contract_over_a_real_socket(app: FastAPI) -> None:
    with live_server(app) as base_url, httpx.Client(base_url=f"{base_url}/api/v1") as http:
        created = http.post("/payouts/verification", json=individual_verification(), headers=auth())
        assert data_of(created)["status"] == "pending_verification"
        assert REQUEST_ID.fullmatch(created.headers["x-request-id"])
        bank = http.post("/payouts/bank-accounts", json=new_bank(setDefault=True), headers=auth())
        assert data_of(bank)["isDefault"] is True
        assert_error(
            http.post("/payouts", json={"amount": 1000}),
            401,
            "unauthorized",
            "authentication_error",
        )
        assert SECOND_ACCOUNT_NUMBER not in bank.text
