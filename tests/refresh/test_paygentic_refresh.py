"""Paygentic sends no status webhooks: the gateway refreshes non-final objects and feeds the
pipeline, so verification and payouts move forward and leave an audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.events.broker import InProcessBroker
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.events.refresh import StatusRefresher
from payout_gateway.providers.registry import REGISTRY
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from payout_gateway.settings import ProviderSettings
from payout_gateway.store import Store
from payout_gateway.store.database import StoreSession
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server

ORGS = (
    SeededOrg(
        "acme",
        Provider.PAYGENTIC,
        "pgx_refresh_token",
        provider_org_id="org_refreshacme",
        bank_name="Refresh Bank",
        holder_type=HolderType.COMPANY,
    ),
)
VERIFY = """mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) {
    ... on CompletePayoutVerificationSuccess { payoutAccount { status providerAccountId } }
  } }"""
INPUT = {
    "email": "finance@acme.example",
    "businessType": "COMPANY",
    "businessUrl": "https://acme.example",
    "documentUrl": "https://files.example.com/acme.pdf",
    "bankAccount": {
        "accountNumber": "000987654321",
        "routingNumber": "021000021",
        "holderName": "Acme",
    },
    "company": {
        "name": "Acme Inc",
        "taxId": "12-3456789",
        "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
        "representative": {"firstName": "Grace", "lastName": "Hopper"},
    },
}


@dataclass
class World:
    gateway: RunningGateway
    sandbox: FastAPI
    sandbox_url: str

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            self.gateway.graphql_url,
            json={"query": query, "variables": variables or {}},
            headers=self.gateway.headers("acme"),
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return dict(body["data"])


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    # A bound, not a timing claim: the refresher backs off (up to seconds) on unchanged reads.
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@contextmanager
def serving(tmp_path: Path, **settings: Any) -> Iterator[World]:
    sandbox = create_paygentic_sandbox()
    with (
        live_server(sandbox) as sandbox_url,
        running_gateway(
            tmp_path,
            paygentic_url=sandbox_url,
            orgs=ORGS,
            **{"refresh_interval_seconds": 0.1, **settings},
        ) as gateway,
    ):
        yield World(gateway, sandbox, sandbox_url)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with serving(tmp_path) as world:
        yield world


@pytest.fixture
def impatient_world(tmp_path: Path) -> Iterator[World]:
    """Gives up on a Paygentic answer after 1 s."""
    with serving(tmp_path, read_timeout=1.0) as world:
        yield world


EXTERNAL_ACCOUNT_READ = "GET /v0/externalAccounts/{id}"


@pytest.fixture
def unrefreshed_world(tmp_path: Path) -> Iterator[World]:
    """Its own refresher off: the test runs the cycles."""
    with serving(tmp_path, refresh_interval_seconds=0) as world:
        yield world


async def test_a_cycle_reads_the_payout_account_and_its_destination_once(
    unrefreshed_world: World,
) -> None:
    """Paygentic's payout account is its verification's destination, which the gateway also
    keeps as a bank account: two objects, one provider object. A cycle reads it once and moves
    both; it was read once for each, doubling what the refresh spends of Paygentic's rate
    limit for every organization still being verified."""
    world = unrefreshed_world
    verified = world.gql(VERIFY, {"input": INPUT})["completePayoutVerification"]
    destination = verified["payoutAccount"]["providerAccountId"]
    httpx.post(
        f"{world.sandbox_url}/_sandbox/externalAccounts/{destination}/status",
        json={"status": "verified"},
    ).raise_for_status()
    counts = world.sandbox.state.sandbox.request_counts
    before = counts[EXTERNAL_ACCOUNT_READ]
    database_url = world.gateway.state.settings.database_url
    store = Store.from_url(database_url)
    adapter = REGISTRY[Provider.PAYGENTIC].build(
        world.sandbox_url, ProviderSettings().http_policy(), None
    )
    refresher = StatusRefresher(
        store,
        {Provider.PAYGENTIC: adapter},
        StatusPipeline(store, InProcessBroker()),
        interval=1.0,
        clock=lambda: datetime.now(UTC),
    )
    try:
        assert await refresher.run_once() == 2
        assert counts[EXTERNAL_ACCOUNT_READ] - before == 1
    finally:
        await adapter.aclose()
        await store.dispose()
    state = "{ payoutAccount { status } bankAccounts { edges { node { status } } } }"
    now = world.gql(state)
    assert now["payoutAccount"]["status"] == "VERIFIED"
    assert [e["node"]["status"] for e in now["bankAccounts"]["edges"]] == ["ACTIVE"]


async def test_verification_and_payout_move_forward_by_refresh(world: World) -> None:
    verified = world.gql(VERIFY, {"input": INPUT})["completePayoutVerification"]
    assert verified["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    destination = verified["payoutAccount"]["providerAccountId"]

    httpx.post(
        f"{world.sandbox_url}/_sandbox/externalAccounts/{destination}/status",
        json={"status": "verified"},
    )
    state = (
        "{ payoutAccount { status transfersEnabled } bankAccounts { edges { node { status } } } }"
    )
    # The payout account and its destination bank account are refreshed as separate objects.
    await eventually(
        lambda: (
            (now := world.gql(state))["payoutAccount"]["status"] == "VERIFIED"
            and [e["node"]["status"] for e in now["bankAccounts"]["edges"]] == ["ACTIVE"]
        )
    )
    now = world.gql(state)
    assert now["payoutAccount"]["transfersEnabled"] is True
    assert [e["node"]["status"] for e in now["bankAccounts"]["edges"]] == ["ACTIVE"]

    requested = world.gql(
        """mutation { requestPayout(input: {amount: 2500, description: "October"}) {
            __typename ... on RequestPayoutSuccess { payout { id status amount { amount currency }
              destinationBankAccount { last4 } } } ... on UserError { code message } } }"""
    )["requestPayout"]
    assert requested["__typename"] == "RequestPayoutSuccess", requested
    payout = requested["payout"]
    assert payout["status"] == "PENDING"
    assert payout["amount"] == {"amount": 2500, "currency": "USD"}
    assert payout["destinationBankAccount"]["last4"] == "4321"

    provider_payout = world.gql(
        f'{{ node(id: "{payout["id"]}") {{ ... on Payout {{ providerPayoutId }} }} }}'
    )
    provider_payout_id = provider_payout["node"]["providerPayoutId"]
    httpx.post(
        f"{world.sandbox_url}/_sandbox/payouts/{provider_payout_id}/status",
        json={"status": "success"},
    )
    listing = "{ payouts { edges { node { status providerStatus } } } }"
    await eventually(lambda: world.gql(listing)["payouts"]["edges"][0]["node"]["status"] == "PAID")

    trail = world.gql("{ statusChanges(first: 20) { objectType fromStatus toStatus source } }")
    moves = {
        (c["objectType"], c["fromStatus"], c["toStatus"], c["source"])
        for c in trail["statusChanges"]
    }
    assert ("PAYOUT_ACCOUNT", "PENDING_VERIFICATION", "VERIFIED", "REFRESH") in moves
    assert ("BANK_ACCOUNT", "PENDING", "ACTIVE", "REFRESH") in moves
    assert ("PAYOUT", "PENDING", "PAID", "REFRESH") in moves
    assert ("PAYOUT", None, "PENDING", "PROVIDER_RESPONSE") in moves


async def test_payouts_need_a_verified_destination(world: World) -> None:
    world.gql(VERIFY, {"input": INPUT})
    refused = world.gql(
        "mutation { requestPayout(input: {amount: 2500}) { __typename ... on UserError { code } } }"
    )["requestPayout"]
    assert refused == {
        "__typename": "PayoutAccountRequiredError",
        "code": "PAYOUT_ACCOUNT_REQUIRED",
    }
    assert world.sandbox.state.sandbox.request_counts["POST /v0/payouts"] == 0


ADD_DEFAULT = """mutation {
  addBankAccount(input: {
    bankAccount: {accountNumber: "000111122223", routingNumber: "021000021", holderName: "Acme"}
    setDefault: true
  }) { ... on AddBankAccountSuccess { bankAccount { id providerAccountId isDefault } } } }"""
KEYED_PAYOUT = """mutation($key: String) {
  requestPayout(input: {amount: 2500}, idempotencyKey: $key) {
    __typename
    ... on RequestPayoutSuccess { payout { id destinationBankAccount { id } } }
    ... on ProviderUnavailableError { outcomeUnknown }
    ... on UserError { code } } }"""
ACCOUNTS = "{ bankAccounts { edges { node { id providerAccountId status } } } }"


async def verified_at_paygentic(world: World, account: dict[str, str]) -> None:
    """Paygentic verifies ``account``; the gateway's refresh then shows it ACTIVE."""
    destination = account["providerAccountId"]
    httpx.post(
        f"{world.sandbox_url}/_sandbox/externalAccounts/{destination}/status",
        json={"status": "verified"},
    )
    await eventually(
        lambda: (
            {**account, "status": "ACTIVE"}
            in [edge["node"] for edge in world.gql(ACCOUNTS)["bankAccounts"]["edges"]]
        )
    )


@pytest.mark.parametrize("new_default_verified", [False, True])
async def test_a_lost_payout_is_recovered_to_the_account_it_paid_after_the_default_changed(
    impatient_world: World, new_default_verified: bool
) -> None:
    """A payout whose answer was lost, retried with its key after the organization's default
    account changed: the payout found at Paygentic is the answer, recorded to the account it
    was paid to; never a refusal (remembered with the key) and never another account."""
    world = impatient_world
    world.gql(VERIFY, {"input": INPUT})
    (edge,) = world.gql(ACCOUNTS)["bankAccounts"]["edges"]
    paid_to = {key: edge["node"][key] for key in ("id", "providerAccountId")}
    await verified_at_paygentic(world, paid_to)

    # Paygentic makes the payout and answers after the gateway stopped waiting, and its list
    # cannot be read to reconcile: the outcome is unknown, the key kept for a retry.
    for fault in (
        {"operation": "POST /v0/payouts", "kind": "apply_then_fail", "latencyMs": 2_000},
        {"operation": "GET /v0/payouts", "kind": "status", "status": 500, "count": 2},
    ):
        httpx.post(f"{world.sandbox_url}/_sandbox/faults", json=fault)
    lost = world.gql(KEYED_PAYOUT, {"key": "october"})["requestPayout"]
    assert (lost["code"], lost["outcomeUnknown"]) == ("PROVIDER_TIMEOUT", True)

    # Meanwhile another account becomes the default (not verified yet, or verified too).
    new_default = world.gql(ADD_DEFAULT)["addBankAccount"]["bankAccount"]
    assert new_default.pop("isDefault") is True
    if new_default_verified:
        await verified_at_paygentic(world, new_default)

    recovered = world.gql(KEYED_PAYOUT, {"key": "october"})["requestPayout"]
    assert recovered["__typename"] == "RequestPayoutSuccess", recovered
    assert recovered["payout"]["destinationBankAccount"] == {"id": paid_to["id"]}
    assert world.sandbox.state.sandbox.request_counts["POST /v0/payouts"] == 1
    listed = world.gql("{ payouts { edges { node { id } } } }")["payouts"]["edges"]
    assert [edge["node"]["id"] for edge in listed] == [recovered["payout"]["id"]]


async def test_objects_past_the_first_listing_page_are_refreshed_too(world: World) -> None:
    """More pending accounts than one listing of the refresher (200): the newest one, verified
    at Paygentic, becomes ACTIVE. Only the first 200 (the oldest) were read, every cycle, so
    it stayed PENDING until older ones settled."""
    add = """mutation($number: String!) { addBankAccount(input: {bankAccount: {
        accountNumber: $number, routingNumber: "021000021", holderName: "Acme"}}) {
        ... on AddBankAccountSuccess { bankAccount { id providerAccountId } } } }"""
    async with httpx.AsyncClient(timeout=30) as client:

        async def added(index: int) -> dict[str, str]:
            response = await client.post(
                world.gateway.graphql_url,
                json={"query": add, "variables": {"number": f"0004{index:08d}"}},
                headers=world.gateway.headers("acme"),
            )
            account: dict[str, str] = response.json()["data"]["addBankAccount"]["bankAccount"]
            return account

        for first in range(0, 200, 20):
            await asyncio.gather(*(added(index) for index in range(first, first + 20)))
        newest = await added(200)
    httpx.post(
        f"{world.sandbox_url}/_sandbox/externalAccounts/{newest['providerAccountId']}/status",
        json={"status": "verified"},
    )
    status = f'{{ node(id: "{newest["id"]}") {{ ... on BankAccount {{ status }} }} }}'
    await eventually(lambda: world.gql(status)["node"]["status"] == "ACTIVE")


KEYED_VERIFY = """mutation($input: CompletePayoutVerificationInput!, $key: String) {
  completePayoutVerification(input: $input, idempotencyKey: $key) {
    __typename
    ... on CompletePayoutVerificationSuccess {
      payoutAccount { providerAccountId } bankAccount { providerAccountId } alreadyExisted }
  } }"""


@pytest.mark.parametrize("second_key", ["march", "march-2", None])
async def test_a_verification_lost_mid_way_is_found_by_the_next_whatever_its_key(
    world: World, second_key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paygentic created the verification's destination and the gateway recorded nothing (it
    died there, or its database failed): the next verification, with another key or none,
    takes that destination as the payout account instead of creating a second one beside it
    (Paygentic has no idempotency, and one organization has one payout account)."""
    original = StoreSession.save_payout_account
    calls = 0

    async def fails_once(self: StoreSession, record: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the process died here")
        await original(self, record)

    monkeypatch.setattr(StoreSession, "save_payout_account", fails_once)
    lost = httpx.post(
        world.gateway.graphql_url,
        json={"query": KEYED_VERIFY, "variables": {"input": INPUT, "key": "march"}},
        headers=world.gateway.headers("acme"),
        timeout=30,
    ).json()
    assert lost["errors"][0]["message"] == "Unexpected error.", lost
    sandbox = world.sandbox.state.sandbox
    assert sandbox.request_counts["POST /v0/externalAccounts"] == 1

    listings = sandbox.request_counts["GET /v0/externalAccounts"]
    again = world.gql(KEYED_VERIFY, {"input": INPUT, "key": second_key})
    verified = again["completePayoutVerification"]
    # One listing finds it, the same key's retry included (it would also look for what a
    # verification made before destinations were named per organization).
    assert sandbox.request_counts["GET /v0/externalAccounts"] - listings == 1
    assert verified["__typename"] == "CompletePayoutVerificationSuccess", verified
    assert sandbox.request_counts["POST /v0/externalAccounts"] == 1
    (created,) = (record.account for record in sandbox._accounts.values())
    assert verified["payoutAccount"]["providerAccountId"] == created.id
    assert verified["bankAccount"] == {"providerAccountId": created.id}
    (edge,) = world.gql(ACCOUNTS)["bankAccounts"]["edges"]
    assert edge["node"]["providerAccountId"] == created.id
