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
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from payout_gateway.sandbox.paygentic.config import PaygenticSandboxConfig
from tests.conftest import POSTGRES_URL
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
from tests.support.names import unique_suffix
from tests.support.postgres import fresh_database, through_stalling_proxy
from tests.support.serve_process import ServedGateway, log_records, served_gateway
from tests.support.stalling_proxy import StallingProxy

PAYGENTIC_ADD = "POST /v0/externalAccounts"
LIST = "{ bankAccounts(first: 1) { edges { node { id } } } }"
REDIS_URL = "redis://127.0.0.1:6379/0"
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


# The served process's database timeout in the test below; the pool's connections, each of
# which the shutdown closed waiting this long for a stalled server, are at least two.
DATABASE_TIMEOUT_SECONDS = 3.0
SHUTDOWN_SLACK_SECONDS = 2.0


async def backends(database_url: str) -> int:
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        name = database_url.rsplit("/", 1)[1]
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
        )
        return int(count)
    finally:
        await admin.close()


@dataclass(frozen=True)
class Replica:
    served: ServedGateway
    proxy: StallingProxy
    database_url: str


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    """``serve`` on a PostgreSQL database of its own, reached through a proxy the test can
    stall, and fanning out through Redis."""
    with (
        fresh_database() as database_url,
        through_stalling_proxy(database_url) as (proxy, proxied_url),
        served_gateway(
            tmp_path,
            DEFAULT_ORGS,
            database_url=proxied_url,
            settings={
                "database_timeout_seconds": str(DATABASE_TIMEOUT_SECONDS),
                "redis_url": REDIS_URL,
                "redis_channel_prefix": f"pgw-stalled-shutdown-{unique_suffix()}:",
                "refresh_interval_seconds": "5",
            },
        ) as served,
    ):
        yield Replica(served, proxy, database_url)


@pytest.mark.postgres
async def test_sigterm_while_the_database_stalls_ends_within_one_database_timeout(
    replica: Replica,
) -> None:
    """A replica on PostgreSQL (and Redis) told to stop while its database host is frozen:
    closing its connections waited the database timeout for each of them in turn (22 s for two
    at the default 10 s), and each unanswered one was a SQLAlchemy traceback. The database's
    part of the shutdown now takes one timeout in all, and the outage is one line."""
    served, proxy, database_url = replica.served, replica.proxy, replica.database_url
    # Requests at once: the pool keeps a connection for each it opened.
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        headers = {"Authorization": f"Bearer {served.keys['commet-a']}"}
        for _ in range(20):
            answers = await asyncio.gather(
                *(client.post("/graphql", json={"query": LIST}, headers=headers) for _ in range(8))
            )
            assert {a.status_code for a in answers} == {200}
            # Two are the leaders' lock sessions (the refresh's, the outbox relay's).
            if await backends(database_url) >= 4:
                break
    assert await backends(database_url) >= 4
    shutdown_from = len(log_records(served))
    proxy.stall()
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        status = await asyncio.to_thread(served.process.wait, 60)
    finally:
        took = time.monotonic() - started
        log = served.log.read_text()
    assert status == 0, log[-3000:]
    assert took < DATABASE_TIMEOUT_SECONDS + SHUTDOWN_SLACK_SECONDS, (took, log[-3000:])
    told = [
        (r["levelname"], r["name"], r["message"])
        for r in log_records(served)[shutdown_from:]
        if r["levelname"] not in ("DEBUG", "INFO")
    ]
    assert told == [
        (
            "WARNING",
            "payout_gateway.store",
            "the database did not answer at shutdown: its connections were cut",
        )
    ], log[-3000:]
    assert "Traceback" not in log, log[-3000:]
