"""``payout-gateway serve`` logs: the gateway's own records reach stderr as JSON lines (access log,
with each request's provider calls on its line) at the configured level, without query strings,
account numbers or KYC data; and its WebSocket messages are capped as request bodies are."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from payout_gateway.tenancy import DEMO_ORGANIZATIONS
from tests.conftest import POSTGRES_URL
from tests.realtime.support import kyc
from tests.support.live_server import free_port
from tests.support.postgres import fresh_database

ACCOUNT_NUMBER = "000555666777"
KYC_ACCOUNT_NUMBER = "000444333222"
VERIFY = """mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) { __typename } }"""
ADD = """mutation($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename ... on AddBankAccountSuccess { bankAccount { last4 } } } }"""
PROTOCOL = Subprotocol("graphql-transport-ws")
# The default PAYOUT_GATEWAY_MAX_BODY_BYTES.
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Served:
    log: str
    # How the server closed a WebSocket after a message larger than a request body may be
    # (None: it did not close it).
    oversized_message_close: tuple[int, str] | None
    # The header names of the add's answer.
    answer_headers: frozenset[str]


async def send_oversized_message(url: str) -> tuple[int, str] | None:
    """A WebSocket (its handshake URL with a query string) acknowledged, then sent a
    subscribe message past the body limit; the close code and reason it gets, None if the
    socket stays open."""
    ws_url = url.replace("http://", "ws://") + "/graphql?trace=ws-query-string-secret"
    async with connect(ws_url, subprotocols=[PROTOCOL]) as socket:
        init = {"type": "connection_init", "payload": {"Authorization": "Bearer pgw_demo_commet"}}
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        query = "subscription { payoutStatusChanged { toStatus } }" + " " * MAX_BODY_BYTES
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        try:
            # Bounded: a server that read the message would answer nothing to this subscription.
            answer = await asyncio.wait_for(socket.recv(), timeout=10)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
        except TimeoutError:
            return None
    raise AssertionError(f"answered instead of closing: {answer!r}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """What ``serve`` (sandbox mode, default log level) wrote while it verified the demo Commet
    organization and added a bank account, one request with a query string, and served a
    WebSocket (a query string on its handshake) a message past the body limit."""
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
            oversized_message_close = asyncio.run(send_oversized_message(url))
            # Not HTTP: uvicorn itself answers 400 and logs a warning.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"NOT HTTP \x00\x01\r\n\r\n")
                assert raw.recv(100).startswith(b"HTTP/1.1 400")
        finally:
            process.terminate()
            process.wait(timeout=15)
    return Served(stderr_path.read_text(), oversized_message_close, frozenset(added.headers))


@pytest.fixture(scope="module")
def served_log(served: Served) -> str:
    return served.log


def records(log: str) -> list[dict[str, Any]]:
    """The log's records, one JSON object a line."""
    return [json.loads(line) for line in log.splitlines() if line]


def test_every_line_is_a_json_record_uvicorn_s_own_included(served_log: str) -> None:
    """An operator's log pipeline reads one shape: uvicorn's start-up, warning and shutdown
    lines were plain text beside the gateway's JSON."""
    lines = [line for line in served_log.splitlines() if line]
    assert lines, served_log
    for line in lines:
        assert line.startswith("{"), line
        record = json.loads(line)
        assert {"asctime", "levelname", "name", "process", "message"} <= record.keys(), record
    told = [(r["name"], r["levelname"], r["message"]) for r in records(served_log)]
    assert ("uvicorn.error", "INFO", "Application startup complete.") in told, told
    assert ("uvicorn.error", "WARNING", "Invalid HTTP request received.") in told, told
    assert ("uvicorn.error", "INFO", "Application shutdown complete.") in told, told


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
    # uvicorn's own line for the WebSocket's handshake is kept, without its query string.
    handshakes = [r["message"] for r in records(served_log) if "WebSocket" in r["message"]]
    assert any(m.endswith('"WebSocket /graphql" [accepted]') for m in handshakes), handshakes


def test_answers_do_not_name_the_server_software(served: Served) -> None:
    """No ``server: uvicorn``: which server runs is a scanner's first question."""
    assert "server" not in served.answer_headers
    assert "x-request-id" in served.answer_headers


def test_a_websocket_message_is_capped_as_a_request_body_is(served: Served) -> None:
    """A subscribe message past PAYOUT_GATEWAY_MAX_BODY_BYTES closes the socket with 1009
    (Message Too Big) before the app reads it, as such a POST body gets 413."""
    assert served.oversized_message_close is not None, "the socket stayed open"
    code, reason = served.oversized_message_close
    assert code == 1009, reason


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


async def _read_only(database_url: str) -> None:
    """New sessions of the database may read, not write (a standby, or a role's grants)."""
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        name = database_url.rsplit("/", 1)[1]
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    finally:
        await admin.close()


@pytest.mark.postgres
def test_a_library_s_traceback_is_a_json_field_without_the_statement_s_values(
    tmp_path: Path,
) -> None:
    """A start-up that fails in the app is logged by uvicorn with its traceback: a JSON record
    like the gateway's own, not plain text, and without the values of the statement that
    failed (SQLAlchemy quoted them, a provider credential among them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GATEWAY_")}
    with fresh_database() as database_url:
        env["PAYOUT_GATEWAY_DATABASE_URL"] = database_url
        serve = [str(Path(sys.executable).parent / "payout-gateway"), "serve"]
        migrated = subprocess.run(
            [serve[0], "migrate"], env=env, cwd=tmp_path, capture_output=True, timeout=60
        )
        assert migrated.returncode == 0, migrated.stderr
        asyncio.run(_read_only(database_url))
        # Its schema is current, so serving starts; the sandbox's demo organizations are the
        # first write.
        failed = subprocess.run(
            [*serve, "--port", str(free_port())],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    log = failed.stderr
    assert failed.returncode == 3, log
    assert all(line.startswith("{") for line in log.splitlines() if line), log
    # Starlette hands uvicorn the start-up's traceback as the message of its failure.
    [failure] = [r for r in records(log) if "Traceback" in r["message"]]
    assert (failure["name"], failure["levelname"]) == ("uvicorn.error", "ERROR"), failure
    assert "cannot execute INSERT in a read-only transaction" in failure["message"], failure
    assert "Application startup failed. Exiting." in [r["message"] for r in records(log)]
    assert "[parameters:" not in log, log
    commet_key = DEMO_ORGANIZATIONS[0].credentials.api_key.get_secret_value()
    assert commet_key not in log, log
