"""``payout-gateway serve`` logs: the gateway's own records reach stderr as JSON lines (access log,
with each request's provider calls on its line) at the configured level, without query strings,
account numbers or KYC data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime.support import kyc
from tests.support.live_server import free_port

ACCOUNT_NUMBER = "000555666777"
KYC_ACCOUNT_NUMBER = "000444333222"
VERIFY = """mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) { __typename } }"""
ADD = """mutation($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename ... on AddBankAccountSuccess { bankAccount { last4 } } } }"""


@pytest.fixture(scope="module")
def served_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What ``serve`` (sandbox mode, default log level) wrote while it verified the demo Commet
    organization and added a bank account, one request with a query string."""
    workdir = tmp_path_factory.mktemp("serve-logs")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GATEWAY_")}
    env["PAYOUT_GATEWAY_DATABASE_URL"] = f"sqlite:///{workdir}/gateway.db"
    stderr_path = workdir / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "payout-gateway"), "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, stderr_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, stderr_path.read_text()[-3000:]
                time.sleep(0.1)
            headers = {"Authorization": "Bearer pgw_demo_commet"}
            verified = httpx.post(
                f"{url}/graphql?trace=query-string-secret",
                json={"query": VERIFY, "variables": {"input": kyc(KYC_ACCOUNT_NUMBER)}},
                headers=headers,
                timeout=30,
            )
            assert verified.status_code == 200, verified.text
            bank_account = {
                "accountNumber": ACCOUNT_NUMBER,
                "holderName": "Grace Hopper",
                "routingNumber": "011000015",
            }
            added = httpx.post(
                f"{url}/graphql",
                json={"query": ADD, "variables": {"input": {"bankAccount": bank_account}}},
                headers=headers,
                timeout=30,
            )
            assert added.status_code == 200, added.text
            assert added.json()["data"]["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
        finally:
            process.terminate()
            process.wait(timeout=15)
    return stderr_path.read_text()


def records(log: str) -> list[dict[str, Any]]:
    """The JSON lines (uvicorn's own lines are plain text)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_requests_are_logged_without_their_query_strings(served_log: str) -> None:
    access = [r for r in records(served_log) if r["name"] == "payout_gateway.access"]
    assert [r["message"].split()[:3] for r in access if "/graphql" in r["message"]] == [
        ["POST", "/graphql", "200"],
        ["POST", "/graphql", "200"],
    ]
    assert all(r["levelname"] == "INFO" and r["process"] > 0 for r in access)
    graphql = [r for r in access if r["path"] == "/graphql"]
    assert [(r["method"], r["status"]) for r in graphql] == [("POST", 200), ("POST", 200)]
    assert all(r["duration_ms"] > 0 for r in graphql)
    assert "query-string-secret" not in served_log


def test_provider_calls_ride_on_the_access_line_of_their_request(served_log: str) -> None:
    """One line per request (request_log): its provider calls with their structured fields,
    not a line each."""
    graphql = [
        r
        for r in records(served_log)
        if r["name"] == "payout_gateway.access" and r["path"] == "/graphql"
    ]
    verified, added = graphql
    assert verified["provider_calls"], served_log[-3000:]
    assert [(c["provider"], c["method"], c["path"]) for c in added["provider_calls"]] == [
        ("COMMET", "POST", "/api/v1/payouts/bank-accounts")
    ]
    for call in [*verified["provider_calls"], *added["provider_calls"]]:
        assert 200 <= call["status"] < 300 and call["duration_ms"] >= 0, call
        assert call["provider_request_id"], call
    alone = [r for r in records(served_log) if r["message"] == "provider call"]
    assert not [r for r in alone if r["method"] == "POST"], alone


def test_no_account_number_routing_number_or_kyc_detail_is_logged(served_log: str) -> None:
    for secret in (
        ACCOUNT_NUMBER,
        KYC_ACCOUNT_NUMBER,
        "011000015",
        "021000021",
        "+14155550123",
        "1990-01-31",
        "ada@example.com",
    ):
        assert secret not in served_log, secret
