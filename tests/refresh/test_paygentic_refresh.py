"""Paygentic sends no status webhooks: the gateway refreshes non-final objects and feeds the
pipeline, so verification and payouts move forward and leave an audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
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


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sandbox = create_paygentic_sandbox()
    with (
        live_server(sandbox) as sandbox_url,
        running_gateway(
            tmp_path, paygentic_url=sandbox_url, orgs=ORGS, refresh_interval_seconds=0.1
        ) as gateway,
    ):
        yield World(gateway, sandbox, sandbox_url)


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
