"""``payout-gateway serve``'s access line lists every attempt a request made at its provider,
those that got no answer too: the line an operator looks up by request id says why a request
failed or took long, as ``/metrics`` counts it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from payout_gateway.domain.enums import HolderType, Provider
from tests.support.gateway import SeededOrg
from tests.support.live_server import free_port
from tests.support.serve_process import log_records, served_gateway

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


def test_attempts_that_reached_no_provider_are_on_the_requests_access_line(
    tmp_path: Path,
) -> None:
    refusing = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with served_gateway(tmp_path, (ORG,), settings={"paygentic__base_url": refusing}) as served:
        answer = httpx.post(
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
        metrics = httpx.get(f"{served.url}/metrics").text
    assert answer.json()["data"]["addBankAccount"] == {
        "__typename": "ProviderUnavailableError",
        "code": "PROVIDER_UNAVAILABLE",
    }
    [line] = [
        r
        for r in log_records(served)
        if r.get("request_id") == answer.headers["x-request-id"] and "status" in r
    ]
    # A connection refused is safe to retry: the first attempt and its two retries.
    calls = line.get("provider_calls", [])
    assert [(c["provider"], c["method"], c["path"], c["outcome"]) for c in calls] == [
        ("PAYGENTIC", "POST", "/v0/externalAccounts", "not_sent")
    ] * 3, line
    assert all(c["status"] is None and c["error"] == "ConnectError" for c in calls), calls
    counted = re.search(
        r'payout_gateway_provider_attempts_total\{outcome="not_sent",provider="PAYGENTIC"\} (\S+)',
        metrics,
    )
    assert counted is not None and float(counted[1]) == 3.0, metrics
