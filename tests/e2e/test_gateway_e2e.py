"""End to end: gateway and both simulators on their own sockets, driven by a GraphQL client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server
from tests.support.pii import assert_no_full_numbers

ORGS = (
    SeededOrg("c-onboard", Provider.COMMET, "ck_live_e2eOnboard001"),
    SeededOrg("c-pages", Provider.COMMET, "ck_live_e2ePages00002"),
    SeededOrg("c-other", Provider.COMMET, "ck_live_e2eOther00003"),
    SeededOrg("c-errors", Provider.COMMET, "ck_live_e2eErrors0004"),
    SeededOrg(
        "p-onboard",
        Provider.PAYGENTIC,
        "pgx_e2e_token_0001",
        provider_org_id="org_e2eOnboard",
        bank_name="E2E Bank",
        holder_type=HolderType.COMPANY,
    ),
    SeededOrg(
        "p-errors",
        Provider.PAYGENTIC,
        "pgx_e2e_token_0002",
        provider_org_id="org_e2eErrors",
        bank_name="E2E Bank",
        holder_type=HolderType.COMPANY,
    ),
    SeededOrg(
        "p-readonly",
        Provider.PAYGENTIC,
        "sk_readonly_e2e0003",
        provider_org_id="org_e2eRo",
        bank_name="E2E Bank",
        holder_type=HolderType.INDIVIDUAL,
    ),
    SeededOrg("p-unset", Provider.PAYGENTIC, "pgx_e2e_token_0004", bank_name="E2E Bank"),
    # Not an id Paygentic accepts (^org_[a-zA-Z0-9]+$): set up before the CLI checked it.
    SeededOrg(
        "p-badorg",
        Provider.PAYGENTIC,
        "pgx_e2e_token_0005",
        provider_org_id="acme-inc",
        bank_name="E2E Bank",
        holder_type=HolderType.COMPANY,
    ),
)
KEYS = {org.name: org.provider_api_key for org in ORGS}

ADD = """
mutation Add($input: AddBankAccountInput!, $key: String) {
  addBankAccount(input: $input, idempotencyKey: $key) {
    __typename
    ... on AddBankAccountSuccess {
      bankAccount { id last4 isDefault status providerStatus currency }
    }
    ... on UserError { message code retryable }
    ... on ValidationError { field }
    ... on ProviderRejectedError { providerCode docUrl requestId httpStatus }
    ... on ProviderUnavailableError { outcomeUnknown }
  }
}
"""
VERIFY = """
mutation Verify($input: CompletePayoutVerificationInput!, $key: String) {
  completePayoutVerification(input: $input, idempotencyKey: $key) {
    __typename
    ... on CompletePayoutVerificationSuccess {
      alreadyExisted
      payoutAccount { status providerStatus providerAccountId transfersEnabled }
      bankAccount { id last4 isDefault status }
    }
    ... on UserError { message code retryable }
    ... on OperationRetiredError { providerCode docUrl }
    ... on ValidationError { field }
  }
}
"""

PAYOUT = """
mutation Payout($amount: Int!) {
  requestPayout(input: {amount: $amount}) {
    __typename
    ... on UserError { message code retryable }
  }
}
"""


def bank(number: str, **extra: Any) -> dict[str, Any]:
    return {
        "accountNumber": number,
        "holderName": "Ada Lovelace",
        "routingNumber": "021000021",
        **extra,
    }


def kyc(number: str = "000123456789") -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "businessType": "INDIVIDUAL",
        "businessUrl": "https://ada.example.com",
        "documentUrl": "https://files.example.com/ada.pdf",
        "bankAccount": bank(number),
        "individual": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+14155550123",
            "dateOfBirth": "1990-01-31",
            "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
        },
    }


@dataclass(frozen=True)
class World:
    database_dir: Path
    gateway: RunningGateway
    commet: FastAPI
    commet_url: str
    paygentic: FastAPI
    paygentic_url: str

    async def run(
        self, org: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        transport = HTTPXAsyncTransport(
            url=self.gateway.graphql_url, headers=self.gateway.headers(org)
        )
        async with Client(transport=transport) as session:
            request = GraphQLRequest(query, variable_values=variables)
            result: dict[str, Any] = await session.execute(request)
        assert_no_full_numbers(json.dumps(result))
        return result

    def commet_calls(self, operation: str) -> int:
        return int(self.commet.state.sandbox.request_counts[operation])

    def paygentic_calls(self, operation: str) -> int:
        return int(self.paygentic.state.sandbox.request_counts[operation])

    def commet_control(self, org: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.commet_url}/_sandbox{path}", json=body, headers={"x-api-key": KEYS[org]}
        )
        assert response.status_code < 300, response.text
        return dict(response.json())

    def paygentic_control(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.post(f"{self.paygentic_url}/_sandbox{path}", json=body)
        assert response.status_code < 300, response.text


@contextmanager
def serving(tmp: Path, orgs: tuple[SeededOrg, ...], **settings: Any) -> Iterator[World]:
    """Both simulators and a gateway over them, each on a socket of its own."""
    commet, paygentic = create_commet_sandbox(), create_paygentic_sandbox()
    with (
        live_server(commet) as commet_url,
        live_server(paygentic) as paygentic_url,
        # No background refresh: the batching test counts the store's statements exactly.
        running_gateway(
            tmp,
            commet_url=f"{commet_url}/api/v1",
            paygentic_url=paygentic_url,
            orgs=orgs,
            refresh_interval_seconds=0,
            **settings,
        ) as gateway,
    ):
        yield World(tmp, gateway, commet, commet_url, paygentic, paygentic_url)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serving(tmp_path_factory.mktemp("e2e"), ORGS) as world:
        yield world


async def test_commet_onboarding(world: World) -> None:
    early = await world.run("c-onboard", ADD, {"input": {"bankAccount": bank("000111122223")}})
    assert early["addBankAccount"]["__typename"] == "PayoutAccountRequiredError"
    # Commet refuses a payout without a payout account as it refuses the bank account.
    payouts = world.commet_calls("POST /payouts")
    early_payout = await world.run("c-onboard", PAYOUT, {"amount": 2500})
    assert early_payout["requestPayout"]["__typename"] == "PayoutAccountRequiredError"
    assert early_payout["requestPayout"]["code"] == "PAYOUT_ACCOUNT_REQUIRED"
    assert world.commet_calls("POST /payouts") == payouts + 1

    first = (await world.run("c-onboard", VERIFY, {"input": kyc(), "key": "v1"}))[
        "completePayoutVerification"
    ]
    assert first["__typename"] == "CompletePayoutVerificationSuccess"
    assert first["alreadyExisted"] is False
    assert first["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    assert first["payoutAccount"]["transfersEnabled"] is False
    assert first["bankAccount"]["last4"] == "6789"
    assert first["bankAccount"]["isDefault"] is True

    # The processor confirms out of band; the idempotent verification call reports it.
    world.commet_control("c-onboard", "/payout-account/status", {"status": "verified"})
    again = (await world.run("c-onboard", VERIFY, {"input": kyc(), "key": "v2"}))[
        "completePayoutVerification"
    ]
    assert again["alreadyExisted"] is True
    assert again["bankAccount"] is None
    assert again["payoutAccount"]["status"] == "VERIFIED"
    state = await world.run("c-onboard", "{ payoutAccount { status transfersEnabled } }")
    assert state["payoutAccount"] == {"status": "VERIFIED", "transfersEnabled": True}

    added = await world.run(
        "c-onboard", ADD, {"input": {"bankAccount": bank("000444455556"), "setDefault": True}}
    )
    assert added["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
    assert added["addBankAccount"]["bankAccount"]["currency"] == "USD"
    listing = await world.run(
        "c-onboard", "{ bankAccounts { edges { node { last4 isDefault } } } }"
    )
    defaults = {
        e["node"]["last4"]: e["node"]["isDefault"] for e in listing["bankAccounts"]["edges"]
    }
    assert defaults == {"5556": True, "6789": False}


async def test_paygentic_onboarding_is_idempotent_per_organization(world: World) -> None:
    posts = world.paygentic_calls("POST /v0/externalAccounts")
    company = {
        **kyc("000987654321"),
        "businessType": "COMPANY",
        "individual": None,
        "company": {
            "name": "Acme Inc",
            "taxId": "12-3456789",
            "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
            "representative": {"firstName": "Grace", "lastName": "Hopper"},
        },
    }
    first = (await world.run("p-onboard", VERIFY, {"input": company}))["completePayoutVerification"]
    assert first["__typename"] == "CompletePayoutVerificationSuccess"
    assert first["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    assert first["payoutAccount"]["providerStatus"] == "new"
    assert first["bankAccount"]["status"] == "PENDING"
    assert world.paygentic_calls("POST /v0/externalAccounts") == posts + 1

    again = (await world.run("p-onboard", VERIFY, {"input": company}))["completePayoutVerification"]
    assert again["alreadyExisted"] is True
    assert world.paygentic_calls("POST /v0/externalAccounts") == posts + 1

    incomplete = await world.run(
        "p-onboard",
        ADD,
        {"input": {"bankAccount": {"accountNumber": "000222233334", "holderName": "Acme"}}},
    )
    assert incomplete["addBankAccount"]["field"] == ["input", "bankAccount", "routingNumber"]
    assert world.paygentic_calls("POST /v0/externalAccounts") == posts + 1

    added = (await world.run("p-onboard", ADD, {"input": {"bankAccount": bank("000222233334")}}))[
        "addBankAccount"
    ]
    assert added["__typename"] == "AddBankAccountSuccess"
    assert added["bankAccount"]["status"] == "PENDING"
    assert added["bankAccount"]["isDefault"] is False


async def test_pages_nodes_batching_and_foreign_ids(world: World) -> None:
    await world.run("c-pages", VERIFY, {"input": kyc("000900000000")})
    ids = []
    for n in range(6):
        created = await world.run(
            "c-pages", ADD, {"input": {"bankAccount": bank(f"0009000000{n:02d}")}}
        )
        ids.append(created["addBankAccount"]["bankAccount"]["id"])

    query = gql_page = """query($after: String) { bankAccounts(first: 3, after: $after) {
        edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await world.run("c-pages", gql_page, {"after": after}))["bankAccounts"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 7  # 6 added + the verification's destination
    assert set(ids) <= set(seen)
    del query

    commet_before = sum(world.commet.state.sandbox.request_counts.values())
    statements_before = world.gateway.state.store.statements
    aliases = " ".join(
        f'a{n}: node(id: "{i}") {{ id ... on BankAccount {{ last4 }} }}' for n, i in enumerate(ids)
    )
    batched = await world.run("c-pages", f"{{ {aliases} }}")
    assert [batched[f"a{n}"]["id"] for n in range(6)] == ids
    # One batch; the API key comes from the authentication cache (used moments ago).
    assert world.gateway.state.store.statements - statements_before == 1
    assert sum(world.commet.state.sandbox.request_counts.values()) == commet_before

    lookup = "query($id: ID!) { bankAccount(id: $id) { id } node(id: $id) { id } }"
    foreign = await world.run("c-other", lookup, {"id": ids[0]})
    nonexistent = await world.run("c-other", lookup, {"id": ids[0][:-6] + "AAAAAA"})
    assert foreign == nonexistent == {"bankAccount": None, "node": None}


async def test_every_error_type_through_the_real_providers(world: World) -> None:
    await world.run("c-errors", VERIFY, {"input": kyc("000800000000")})

    # ProviderRejectedError: Commet refuses (injected refusal with Commet's own error body).
    world.commet_control(
        "c-errors", "/faults", {"kind": "status", "status": 409, "code": "duplicate"}
    )
    rejected = (await world.run("c-errors", ADD, {"input": {"bankAccount": bank("000800000001")}}))[
        "addBankAccount"
    ]
    assert rejected["__typename"] == "ProviderRejectedError"
    assert rejected["providerCode"] == "duplicate"
    assert rejected["httpStatus"] == 409
    assert rejected["requestId"].startswith("req_")
    assert "duplicate" in rejected["docUrl"]

    # ProviderRejectedError for the organization's own credential (Paygentic read-only token).
    readonly = (
        await world.run("p-readonly", ADD, {"input": {"bankAccount": bank("000800000002")}})
    )["addBankAccount"]
    assert readonly["__typename"] == "ProviderRejectedError"
    assert readonly["code"] == "PROVIDER_AUTHENTICATION_FAILED"
    assert readonly["httpStatus"] == 403

    # OperationRetiredError: Commet answers 410 endpoint_deprecated.
    world.commet_control(
        "c-errors",
        "/faults",
        {
            "kind": "status",
            "status": 410,
            "code": "endpoint_deprecated",
            "operation": "POST /payouts/verification",
        },
    )
    retired = (await world.run("c-errors", VERIFY, {"input": kyc()}))["completePayoutVerification"]
    assert retired["__typename"] == "OperationRetiredError"
    assert retired["providerCode"] == "endpoint_deprecated"
    assert "dashboard" in retired["message"].lower()

    # ProviderUnavailableError: Paygentic 503 on a create is not re-sent (no idempotency there).
    posts = world.paygentic_calls("POST /v0/externalAccounts")
    world.paygentic_control(
        "/faults", {"kind": "status", "status": 503, "operation": "POST /v0/externalAccounts"}
    )
    unavailable = (
        await world.run("p-errors", ADD, {"input": {"bankAccount": bank("000800000003")}})
    )["addBankAccount"]
    assert unavailable["__typename"] == "ProviderUnavailableError"
    assert unavailable["retryable"] is True
    assert world.paygentic_calls("POST /v0/externalAccounts") == posts + 1

    # IdempotencyConflictError: same key, different request (Commet compares the body).
    first = await world.run(
        "c-errors", ADD, {"input": {"bankAccount": bank("000800000004")}, "key": "same"}
    )
    assert first["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
    conflict = await world.run(
        "c-errors", ADD, {"input": {"bankAccount": bank("000800000005")}, "key": "same"}
    )
    assert conflict["addBankAccount"]["__typename"] == "IdempotencyConflictError"

    # IdempotencyInProgressError: the same request twice at once while Commet is slow.
    world.commet_control(
        "c-errors",
        "/faults",
        {"kind": "latency", "latencyMs": 600, "operation": "POST /payouts/bank-accounts"},
    )
    variables = {"input": {"bankAccount": bank("000800000006")}, "key": "concurrent"}
    results = await asyncio.gather(
        world.run("c-errors", ADD, variables), world.run("c-errors", ADD, variables)
    )
    kinds = sorted(r["addBankAccount"]["__typename"] for r in results)
    assert kinds == ["AddBankAccountSuccess", "IdempotencyInProgressError"]

    # NotPermittedError: an organization without its Paygentic organization id.
    unset = (await world.run("p-unset", ADD, {"input": {"bankAccount": bank("000800000007")}}))[
        "addBankAccount"
    ]
    assert unset["__typename"] == "NotPermittedError"
    # ... or with one Paygentic refuses in every request: said so, and nothing is sent.
    posts = world.paygentic_calls("POST /v0/externalAccounts")
    malformed = (
        await world.run("p-badorg", ADD, {"input": {"bankAccount": bank("000800000008")}})
    )["addBankAccount"]
    assert malformed["__typename"] == "NotPermittedError"
    assert "organization id" in malformed["message"]
    assert world.paygentic_calls("POST /v0/externalAccounts") == posts

    # ValidationError and PayoutAccountRequiredError are shown in the onboarding tests.


def test_no_full_number_reaches_the_database(world: World) -> None:
    # Runs after the flows above (file order): every byte SQLite wrote, WAL included.
    files = list(world.database_dir.glob("gateway.db*"))
    assert files
    stored = b"".join(path.read_bytes() for path in files)
    assert b"6789" in stored  # last4 is there ...
    for number in (b"000123456789", b"000987654321", b"000444455556", b"021000021"):
        assert number not in stored  # ... the full numbers and the routing number are not
    # Nor any KYC detail the onboardings sent (design.md: "Never stored: ... KYC data").
    for detail in (
        b"ada@example.com",
        b"4155550123",
        b"1990-01-31",
        b"1 Main St",
        b"files.example.com",
        b"12-3456789",
        b"Hopper",
    ):
        assert detail not in stored, detail
