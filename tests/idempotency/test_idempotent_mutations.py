"""Idempotency keys end to end: concurrency, replay, conflict, retries and crash recovery,
with provider creates counted at the sandboxes themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.idempotency import IdempotencyKeys
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from payout_gateway.store.database import StoreSession
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server

COMMET_ADD = "POST /payouts/bank-accounts"
PAYGENTIC_ADD = "POST /v0/externalAccounts"
ORGS = tuple(
    [SeededOrg(f"c{n}", Provider.COMMET, f"ck_live_idem{n:08d}") for n in range(8)]
    + [
        SeededOrg(
            f"p{n}",
            Provider.PAYGENTIC,
            f"pgx_idem_token_{n}",
            provider_org_id=f"org_idem{n}",
            bank_name="Idem Bank",
            holder_type=HolderType.INDIVIDUAL,
        )
        for n in range(8)
    ]
)
COMMET_KEYS = {org.name: org.provider_api_key for org in ORGS}

ADD = """
mutation Add($input: AddBankAccountInput!, $key: String) {
  addBankAccount(input: $input, idempotencyKey: $key) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { id last4 createdAt } }
    ... on UserError { code retryable }
    ... on ProviderUnavailableError { outcomeUnknown }
  }
}
"""
VERIFY_INPUT = {
    "email": "ada@example.com",
    "businessType": "INDIVIDUAL",
    "businessUrl": "https://ada.example.com",
    "documentUrl": "https://files.example.com/ada.pdf",
    "bankAccount": {
        "accountNumber": "000123456789",
        "holderName": "Ada",
        "routingNumber": "021000021",
    },
    "individual": {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+14155550123",
        "dateOfBirth": "1990-01-31",
        "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
    },
}
VERIFY = """mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) { __typename } }"""


def add_vars(number: str, key: str | None) -> dict[str, Any]:
    return {
        "input": {
            "bankAccount": {
                "accountNumber": number,
                "holderName": "Ada",
                "routingNumber": "021000021",
            }
        },
        "key": key,
    }


@dataclass
class World:
    gateway: RunningGateway
    commet: FastAPI
    commet_url: str
    paygentic: FastAPI
    paygentic_url: str

    async def post(self, org: str, query: str, variables: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(
                self.gateway.graphql_url,
                json={"query": query, "variables": variables},
                headers=self.gateway.headers(org),
            )

    async def add(self, org: str, number: str, key: str | None) -> dict[str, Any]:
        response = await self.post(org, ADD, add_vars(number, key))
        data: dict[str, Any] = response.json()["data"]["addBankAccount"]
        return data

    def creates(self, provider: Provider) -> int:
        if provider is Provider.COMMET:
            return int(self.commet.state.sandbox.request_counts[COMMET_ADD])
        return int(self.paygentic.state.sandbox.request_counts[PAYGENTIC_ADD])

    def paygentic_accounts(self, org_id: str) -> int:
        response = httpx.get(
            f"{self.paygentic_url}/v0/externalAccounts",
            params={"organizationId": org_id, "limit": 100},
            headers={"Authorization": "Bearer pgx_idem_token_0"},
        )
        return int(response.json()["pagination"]["total"])

    def commet_accounts(self, org: str) -> int:
        response = httpx.get(
            f"{self.commet_url}/_sandbox/organization", headers={"x-api-key": COMMET_KEYS[org]}
        )
        return len(response.json()["data"]["bankAccounts"])

    def fault(self, provider: Provider, org: str, body: dict[str, Any]) -> None:
        if provider is Provider.COMMET:
            url, headers = f"{self.commet_url}/_sandbox/faults", {"x-api-key": COMMET_KEYS[org]}
        else:
            url, headers = f"{self.paygentic_url}/_sandbox/faults", {}
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code < 300, response.text

    def commet_add_answers_late(self, org: str) -> None:
        """The next add runs at Commet 2 s late, after the gateway (1 s) stopped waiting."""
        self.fault(
            Provider.COMMET, org, {"kind": "latency", "latencyMs": 2_000, "operation": COMMET_ADD}
        )

    def commet_add_rate_limited(self, org: str) -> None:
        """The next add is refused unread with a 429 whose Retry-After is past the gateway's cap."""
        fault = {"kind": "status", "status": 429, "retryAfterSeconds": 120}
        self.fault(Provider.COMMET, org, {**fault, "operation": COMMET_ADD})

    async def commet_add_lands(self, org: str, before: int) -> None:
        while self.commet_accounts(org) == before:
            await asyncio.sleep(0.05)

    async def local_rows(self, org: str) -> int:
        query = "{ bankAccounts(first: 100) { edges { node { id } } } }"
        response = await self.post(org, query, {})
        return len(response.json()["data"]["bankAccounts"]["edges"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    commet, paygentic = create_commet_sandbox(), create_paygentic_sandbox()
    with (
        live_server(commet) as commet_url,
        live_server(paygentic) as paygentic_url,
        running_gateway(
            tmp_path_factory.mktemp("idem"),
            commet_url=f"{commet_url}/api/v1",
            paygentic_url=paygentic_url,
            orgs=ORGS,
            idempotency_lease_seconds=1.0,
            read_timeout=1.0,
        ) as gateway,
    ):
        world = World(gateway, commet, commet_url, paygentic, paygentic_url)
        for n in range(8):  # Commet needs a payout account before bank accounts
            response = httpx.post(
                gateway.graphql_url,
                json={"query": VERIFY, "variables": {"input": VERIFY_INPUT}},
                headers=gateway.headers(f"c{n}"),
            )
            assert "Success" in response.text
        yield world


@pytest.mark.parametrize(("provider", "org"), [(Provider.COMMET, "c0"), (Provider.PAYGENTIC, "p0")])
@pytest.mark.parametrize("concurrency", [2, 10])
async def test_concurrent_identical_mutations_create_once(
    world: World, provider: Provider, org: str, concurrency: int
) -> None:
    key = f"concurrent-{concurrency}"
    world.fault(provider, org, {"kind": "latency", "latencyMs": 200})
    before = world.creates(provider)
    results = await asyncio.gather(
        *(world.add(org, f"00077700{concurrency:04d}", key) for _ in range(concurrency))
    )
    successes = [r for r in results if r["__typename"] == "AddBankAccountSuccess"]
    others = [r for r in results if r["__typename"] != "AddBankAccountSuccess"]
    assert world.creates(provider) - before == 1
    assert len({r["bankAccount"]["id"] for r in successes}) == 1
    assert all(r["__typename"] == "IdempotencyInProgressError" for r in others)
    assert all(r["retryable"] for r in others)


async def test_a_replay_is_byte_for_byte_and_costs_no_provider_call(world: World) -> None:
    first = await world.post("c1", ADD, add_vars("000555000001", "replay-me"))
    before = world.creates(Provider.COMMET)
    again = await world.post("c1", ADD, add_vars("000555000001", "replay-me"))
    assert again.content == first.content
    assert world.creates(Provider.COMMET) == before


@pytest.mark.parametrize("org", ["c1", "p1"])
async def test_same_key_different_request_conflicts_without_a_provider_call(
    world: World, org: str
) -> None:
    provider = Provider.COMMET if org.startswith("c") else Provider.PAYGENTIC
    assert (await world.add(org, "000555000002", "conflict"))[
        "__typename"
    ] == "AddBankAccountSuccess"
    before = world.creates(provider)
    clash = await world.add(org, "000555000003", "conflict")
    assert clash["__typename"] == "IdempotencyConflictError"
    assert world.creates(provider) == before


async def test_keys_are_independent_per_organization(world: World) -> None:
    a = await world.add("c2", "000555000004", "shared-key")
    b = await world.add("c3", "000555000004", "shared-key")
    assert a["__typename"] == b["__typename"] == "AddBankAccountSuccess"
    assert a["bankAccount"]["id"] != b["bankAccount"]["id"]


async def test_commet_500_then_success_is_retried_with_the_same_provider_key(world: World) -> None:
    before_rows = world.commet_accounts("c4")
    world.fault(Provider.COMMET, "c4", {"kind": "status", "status": 500, "applied": True})
    result = await world.add("c4", "000555000005", "commet-500")
    assert result["__typename"] == "AddBankAccountSuccess"
    assert world.commet_accounts("c4") == before_rows + 1


async def test_paygentic_read_timeout_after_sending_reconciles_instead_of_reposting(
    world: World,
) -> None:
    before = world.paygentic_accounts("org_idem4")
    posts = world.creates(Provider.PAYGENTIC)
    # The create is applied, then the answer is late past the gateway's read timeout.
    world.fault(
        Provider.PAYGENTIC,
        "p4",
        {"kind": "apply_then_fail", "latencyMs": 2_000, "operation": PAYGENTIC_ADD},
    )
    result = await world.add("p4", "000555000006", "paygentic-timeout")
    assert result["__typename"] == "AddBankAccountSuccess"
    assert world.creates(Provider.PAYGENTIC) - posts == 1
    assert world.paygentic_accounts("org_idem4") == before + 1


@pytest.mark.parametrize(("org", "provider"), [("c5", Provider.COMMET), ("p5", Provider.PAYGENTIC)])
@pytest.mark.parametrize("dies", [False, True])
async def test_a_crash_between_provider_success_and_local_commit_leaves_one_account(
    world: World, org: str, provider: Provider, dies: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"crash-{dies}"
    rows_before = await world.local_rows(org)
    upstream_before = (
        world.commet_accounts(org)
        if provider is Provider.COMMET
        else world.paygentic_accounts("org_idem5")
    )
    original = StoreSession.add_bank_account
    calls = 0

    async def crash_once(self: StoreSession, account: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the process died here")
        await original(self, account)

    monkeypatch.setattr(StoreSession, "add_bank_account", crash_once)
    if dies:
        # A real crash runs no cleanup: the key stays held until its lease (1 s here) ends.
        async def no_release(*_: Any) -> None:
            return None

        monkeypatch.setattr(IdempotencyKeys, "release", no_release)
    crashed = await world.post(org, ADD, add_vars("000555000007", key))
    assert crashed.json()["errors"][0]["message"] == "Unexpected error."
    if dies:
        held = await world.add(org, "000555000007", key)
        assert held["__typename"] == "IdempotencyInProgressError"
        time.sleep(1.1)
    recovered = await world.add(org, "000555000007", key)
    assert recovered["__typename"] == "AddBankAccountSuccess"
    upstream_after = (
        world.commet_accounts(org)
        if provider is Provider.COMMET
        else world.paygentic_accounts("org_idem5")
    )
    assert upstream_after == upstream_before + 1
    assert await world.local_rows(org) == rows_before + 1


async def test_a_rate_limit_after_a_timed_out_attempt_keeps_the_outcome_unknown(
    world: World,
) -> None:
    """Commet applies the first attempt after the gateway stopped waiting; the resend (same
    Commet key) is rate limited. The create happened, so the caller must not be told it did
    not: only a retry with the same key may follow, and it ends with the one account."""
    before = world.commet_accounts("c6")
    rows_before = await world.local_rows("c6")
    world.commet_add_answers_late("c6")
    world.commet_add_rate_limited("c6")
    result = await world.add("c6", "000555000008", "timeout-then-429")
    assert result["__typename"] == "ProviderUnavailableError"
    assert result["outcomeUnknown"] is True
    await world.commet_add_lands("c6", before)
    recovered = await world.add("c6", "000555000008", "timeout-then-429")
    assert recovered["__typename"] == "AddBankAccountSuccess"
    assert world.commet_accounts("c6") == before + 1
    assert await world.local_rows("c6") == rows_before + 1


async def test_a_retry_that_settles_nothing_keeps_the_first_attempt_s_outcome_unknown(
    world: World,
) -> None:
    """The first request's outcome is unknown (Commet applies it after the gateway stopped
    waiting); its retry with the key is rate limited before Commet looks at anything. That
    retry settles nothing: the first attempt may still have been applied."""
    before = world.commet_accounts("c7")
    world.commet_add_answers_late("c7")
    first = await world.add("c7", "000555000009", "unknown-then-429")
    assert (first["code"], first["outcomeUnknown"]) == ("PROVIDER_TIMEOUT", True)
    world.commet_add_rate_limited("c7")
    retried = await world.add("c7", "000555000009", "unknown-then-429")
    assert (retried["code"], retried["outcomeUnknown"]) == ("PROVIDER_RATE_LIMITED", True)
    await world.commet_add_lands("c7", before)
    recovered = await world.add("c7", "000555000009", "unknown-then-429")
    assert recovered["__typename"] == "AddBankAccountSuccess"
    assert world.commet_accounts("c7") == before + 1


async def test_a_holder_outlived_by_its_lease_records_nothing_beside_its_successor(
    world: World,
) -> None:
    """The first request outlives its key's lease (a create answered late, then a slow list to
    reconcile it); the next request with the key takes over and records the account. The first
    one, finishing after that, must not record it a second time."""
    rows_before = await world.local_rows("p6")
    world.fault(
        Provider.PAYGENTIC,
        "p6",
        {"kind": "apply_then_fail", "latencyMs": 2_000, "operation": PAYGENTIC_ADD},
    )
    world.fault(
        Provider.PAYGENTIC,
        "p6",
        {"kind": "latency", "latencyMs": 1_500, "operation": "GET /v0/externalAccounts"},
    )
    posts = world.creates(Provider.PAYGENTIC)
    first = asyncio.create_task(world.add("p6", "000555000010", "outlived"))
    while world.creates(Provider.PAYGENTIC) == posts:  # the first request holds the key
        await asyncio.sleep(0.01)
    while True:  # held until its 1 s lease lapses, then taken over
        successor = await world.add("p6", "000555000010", "outlived")
        if successor["__typename"] != "IdempotencyInProgressError":
            break
    assert successor["__typename"] == "AddBankAccountSuccess"
    late = await first
    # Its key taken over, the late holder is told to retry, which replays the successor's answer.
    assert late["__typename"] == "IdempotencyInProgressError"
    assert await world.add("p6", "000555000010", "outlived") == successor
    assert await world.local_rows("p6") == rows_before + 1
