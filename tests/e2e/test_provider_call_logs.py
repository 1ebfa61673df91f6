"""``payout-gateway serve``'s access line lists every attempt a request made at its provider,
those that got no answer too: the line an operator looks up by request id says why a request
failed or took long, as ``/metrics`` counts it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Response

from payout_gateway.domain.enums import HolderType, Provider
from tests.support.gateway import SeededOrg
from tests.support.live_server import free_port
from tests.support.serve_process import ServedGateway, log_records, served_gateway

ORG = SeededOrg(
    "calls-paygentic",
    Provider.PAYGENTIC,
    "pgx_calls_token_0001",
    provider_org_id="org_callsA",
    bank_name="Calls Bank",
    holder_type=HolderType.INDIVIDUAL,
)
ADD = """mutation($input: AddBankAccountInput!) {
  addBankAccount(input: $input) { __typename ... on UserError { code } } }"""


def add(served: ServedGateway) -> httpx.Response:
    return httpx.post(
        f"{served.url}/graphql",
        json={
            "query": ADD,
            "variables": {
                "input": {
                    "bankAccount": {
                        "accountNumber": "000111222333",
                        "holderName": "Calls Holder",
                        "routingNumber": "021000021",
                    }
                }
            },
        },
        headers={"Authorization": f"Bearer {served.keys[ORG.name]}"},
        timeout=30,
    )


def access_line(served: ServedGateway, answer: httpx.Response) -> dict[str, Any]:
    [line] = [
        r
        for r in log_records(served)
        if r.get("request_id") == answer.headers["x-request-id"] and "status" in r
    ]
    return line


def attempts(metrics: str, outcome: str) -> float:
    """Paygentic's attempts with ``outcome`` as /metrics counts them (0 if none)."""
    series = f'payout_gateway_provider_attempts_total{{outcome="{outcome}",provider="PAYGENTIC"}}'
    counted = re.search(re.escape(series) + r" (\S+)", metrics)
    return float(counted[1]) if counted else 0.0


def test_attempts_that_reached_no_provider_are_on_the_requests_access_line(
    tmp_path: Path,
) -> None:
    refusing = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with served_gateway(tmp_path, (ORG,), settings={"paygentic__base_url": refusing}) as served:
        answer = add(served)
        metrics = httpx.get(f"{served.url}/metrics").text
    assert answer.json()["data"]["addBankAccount"] == {
        "__typename": "ProviderUnavailableError",
        "code": "PROVIDER_UNAVAILABLE",
    }
    line = access_line(served, answer)
    # A connection refused is safe to retry: the first attempt and its two retries.
    calls = line.get("provider_calls", [])
    assert [(c["provider"], c["method"], c["path"], c["outcome"]) for c in calls] == [
        ("PAYGENTIC", "POST", "/v0/externalAccounts", "not_sent")
    ] * 3, line
    assert all(c["status"] is None and c["error"] == "ConnectError" for c in calls), calls
    assert attempts(metrics, "not_sent") == 3.0, metrics


def test_an_answer_past_the_read_cap_is_counted_and_on_the_access_line(tmp_path: Path) -> None:
    oversized = FastAPI()

    @oversized.post("/v0/externalAccounts")
    async def create() -> Response:
        # Past the gateway's 1 MiB read cap (docs/hardening.md: "50 MiB body").
        return Response(b"{" + b" " * (2 * 1024 * 1024) + b"}", media_type="application/json")

    with served_gateway(tmp_path, (ORG,), paygentic=oversized) as served:
        answer = add(served)
        metrics = httpx.get(f"{served.url}/metrics").text
    assert answer.json()["data"]["addBankAccount"]["__typename"] == "ProviderUnavailableError"
    # The create's answer, then the search that reconciles it (refused here: 405).
    calls = access_line(served, answer).get("provider_calls", [])
    assert [(c["method"], c["path"], c["status"], c.get("error")) for c in calls] == [
        ("POST", "/v0/externalAccounts", 200, "ResponseTooLarge"),
        ("GET", "/v0/externalAccounts", 405, None),
    ], calls
    assert attempts(metrics, "200") == 1.0, metrics
