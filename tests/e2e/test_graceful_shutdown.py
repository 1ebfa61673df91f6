"""``payout-gateway serve`` on SIGTERM (a rolling deploy): the add whose provider call is under way
is answered and committed, an open subscription is closed with uvicorn's 1012, and the process
exits 0 promptly; from the signal on, new connections are refused."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from payout_gateway.sandbox.paygentic.config import PaygenticSandboxConfig
from tests.realtime.support import (
    PAYOUT_ACCOUNT_CHANGES,
    PROTOCOL,
    acknowledged,
    eventually,
    received,
    subscribe,
    ws_url,
)
from tests.support.gateway import DEFAULT_ORGS
from tests.support.serve_process import ServedGateway, log_records, served_gateway

PAYGENTIC_ADD = "POST /v0/externalAccounts"
ADD = """mutation($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename ... on AddBankAccountSuccess { bankAccount { last4 } } } }"""
# From SIGTERM (or the last answer) to the exit: uvicorn's shutdown steps (0.1 s each) and
# the lifespan's. A bound, not a timing claim.
PROMPT_EXIT_SECONDS = 5.0
# How long the provider still holds the add once uvicorn waits for it; a real call may take up
# to the provider's total deadline (25 s by default).
HELD_AFTER_SIGTERM_SECONDS = 0.5


class HeldProvider:
    """A Paygentic simulator whose latency faults sleep until the test lets them go (at most
    the fault's latency), so that SIGTERM lands while the provider call is held."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self.sandbox = create_paygentic_sandbox(PaygenticSandboxConfig(sleep=self.sleep))

    def calls(self, operation: str) -> int:
        return int(self.sandbox.state.sandbox.request_counts[operation])

    async def sleep(self, seconds: float) -> None:
        await asyncio.to_thread(self._released.wait, seconds)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def paygentic() -> HeldProvider:
    return HeldProvider()


@pytest.fixture
def served(tmp_path: Path, paygentic: HeldProvider) -> Iterator[ServedGateway]:
    with served_gateway(tmp_path, DEFAULT_ORGS, paygentic=paygentic.sandbox) as running:
        yield running
        paygentic.release()  # a test that failed holding it: its simulator's server can stop


def refuses_connections(served: ServedGateway) -> bool:
    try:
        socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def exit_status(served: ServedGateway) -> int:
    """The process's exit status, once it has exited (within ``PROMPT_EXIT_SECONDS``)."""
    try:
        return await asyncio.to_thread(served.process.wait, PROMPT_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        log = served.log.read_text()[-3000:]
        raise AssertionError(f"still running after {PROMPT_EXIT_SECONDS} s:\n{log}") from None


def uvicorn_errors(served: ServedGateway) -> list[str]:
    """uvicorn's ERROR records (a graceful-shutdown timeout cancelling requests logs one)."""
    return [
        record["message"]
        for record in log_records(served)
        if record["name"].startswith("uvicorn") and record["levelname"] == "ERROR"
    ]


async def test_an_add_under_way_at_sigterm_is_answered_and_committed_then_the_process_exits_0(
    served: ServedGateway, paygentic: HeldProvider
) -> None:
    fault = {"kind": "latency", "latencyMs": 10_000, "operation": PAYGENTIC_ADD}
    assert httpx.post(f"{served.paygentic_url}/_sandbox/faults", json=fault).status_code == 201
    bank_account = {
        "accountNumber": "000987654321",
        "holderName": "Deploy Holder",
        "routingNumber": "021000021",
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        add = asyncio.create_task(
            client.post(
                "/graphql",
                json={"query": ADD, "variables": {"input": {"bankAccount": bank_account}}},
                headers={"Authorization": f"Bearer {served.keys['paygentic-a']}"},
            )
        )
        await eventually(lambda: paygentic.calls(PAYGENTIC_ADD) == 1, message="provider call")
        served.process.send_signal(signal.SIGTERM)
        # uvicorn stops listening, then waits for the requests under way.
        await eventually(
            lambda: "Waiting for connections to close" in served.log.read_text(),
            message="uvicorn waiting for the add",
        )
        # A new connection is refused, not answered: the port no longer listens.
        assert refuses_connections(served)
        # Held on over several of uvicorn's 0.1 s checks: it keeps waiting, its app still up
        # (a graceful-shutdown timeout would cancel the add, or the lifespan close its clients).
        await asyncio.sleep(HELD_AFTER_SIGTERM_SECONDS)
        assert not add.done()
        assert served.process.poll() is None
        paygentic.release()
        answer = await add
    status = await exit_status(served)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["addBankAccount"] == {
        "__typename": "AddBankAccountSuccess",
        "bankAccount": {"last4": "4321"},
    }
    assert status == 0, served.log.read_text()[-3000:]
    with closing(sqlite3.connect(served.database)) as database:
        rows = database.execute("SELECT last4, holder_name FROM bank_accounts").fetchall()
    assert rows == [("4321", "Deploy Holder")]
    assert uvicorn_errors(served) == []


def subscriptions_open(served: ServedGateway) -> float:
    metrics = httpx.get(f"{served.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "payout_gateway_subscriptions_active"
    )


async def test_an_open_subscription_is_closed_with_1012_at_sigterm_and_does_not_hold_the_exit(
    served: ServedGateway,
) -> None:
    async with connect(
        ws_url(f"{served.url}/graphql"),
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
    ) as ws:
        await acknowledged(ws, f"Bearer {served.keys['commet-a']}")
        await subscribe(ws, "1", PAYOUT_ACCOUNT_CHANGES)
        # Open on the server: waiting on the broker's queue for its first event.
        await eventually(lambda: subscriptions_open(served) == 1, message="the subscription")
        served.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await received(ws)
    status = await exit_status(served)
    assert closed.value.rcvd is not None, "closed without a close frame"
    # 1012 "service restart" (RFC 6455's registry): what uvicorn sends each open WebSocket as
    # it shuts down; the client may reconnect, to another replica.
    assert closed.value.rcvd.code == 1012
    assert status == 0, served.log.read_text()[-3000:]
    assert uvicorn_errors(served) == []
