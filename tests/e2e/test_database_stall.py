"""The gateway on PostgreSQL while the server stops answering without closing anything (a
partition, a frozen host): requests end within the database timeout with a typed, retryable
answer (a WebSocket's connection_init: a close with 1013), readiness says unavailable, a keyed
add creates nothing at the provider, an add whose provider call was under way is reported as
of unknown outcome and is reconciled by its retry, and all works again once the server
answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from payout_gateway.domain.enums import Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from tests.realtime.support import verify, ws_url
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server
from tests.support.postgres import fresh_database, through_stalling_proxy
from tests.support.stalling_proxy import StallingProxy

pytestmark = pytest.mark.postgres

ORG = SeededOrg("stall-commet", Provider.COMMET, "ck_live_stall00000001")
# An organization whose API key is first used while the database stalls: nothing cached.
UNCACHED = SeededOrg("stall-uncached", Provider.COMMET, "ck_live_stall00000002")
ADD = (
    "mutation($input: AddBankAccountInput!, $key: String) { "
    "addBankAccount(input: $input, idempotencyKey: $key) { __typename "
    "... on AddBankAccountSuccess { bankAccount { id last4 } } "
    "... on UserError { message code retryable } "
    "... on StoreUnavailableError { outcomeUnknown } } }"
)
ADD_VARIABLES = {
    "input": {
        "bankAccount": {
            "accountNumber": "000123456789",
            "holderName": "Stall Holder",
            "routingNumber": "021000021",
        }
    },
    "key": "stall-add-1",
}
LIST = "{ bankAccounts(first: 10) { edges { node { id last4 } } } }"
# Generous against the 1 s database timeout: a bound on the wait, not a timing claim.
CLIENT_TIMEOUT = 30


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[RunningGateway, StallingProxy, str]]:
    with (
        fresh_database() as database_url,
        through_stalling_proxy(database_url) as (proxy, proxied_url),
        live_server(create_commet_sandbox()) as commet_url,
        running_gateway(
            tmp_path,
            database_url=proxied_url,
            commet_url=f"{commet_url}/api/v1",
            orgs=(ORG, UNCACHED),
            refresh_interval_seconds=0,
            database_timeout_seconds=1,
            # Short, so that the retry below reconciles soon after the failed request.
            idempotency_lease_seconds=1,
        ) as gateway,
    ):
        yield gateway, proxy, commet_url


def post(gateway: RunningGateway, query: str, variables: dict[str, Any] | None = None) -> Any:
    answer = httpx.post(
        gateway.graphql_url,
        json={"query": query, "variables": variables or {}},
        headers=gateway.headers(ORG.name),
        timeout=CLIENT_TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def store_unavailable(outcome_unknown: bool) -> dict[str, Any]:
    """A mutation's answer to the outage."""
    advice = (
        "The request may have been applied: retry with the same idempotency key."
        if outcome_unknown
        else "Nothing was changed; retry."
    )
    return {
        "__typename": "StoreUnavailableError",
        "message": f"The gateway's database is unavailable. {advice}",
        "code": "STORE_UNAVAILABLE",
        "retryable": True,
        "outcomeUnknown": outcome_unknown,
    }


async def connection_init_answer(gateway: RunningGateway, org: SeededOrg) -> Close:
    """How the gateway closes a graphql-transport-ws connection authenticating as ``org``."""
    async with connect(
        ws_url(gateway.graphql_url),
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        open_timeout=CLIENT_TIMEOUT,
        close_timeout=CLIENT_TIMEOUT,
    ) as ws:
        init = {"type": "connection_init", "payload": gateway.headers(org.name)}
        await ws.send(json.dumps(init))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(CLIENT_TIMEOUT):
                await ws.recv()
    assert closed.value.rcvd is not None, "the connection ended without a close frame"
    return closed.value.rcvd


def bank_account_creates(commet_url: str) -> int:
    counts = httpx.get(f"{commet_url}/_sandbox/requests").json()["data"]["counts"]
    return int(counts.get("POST /payouts/bank-accounts", 0))


async def verified(gateway: RunningGateway, commet_url: str) -> tuple[int, int]:
    """The organization verified, while the database answers; how many accounts it lists and
    how many creates Commet has seen."""
    await verify(gateway.graphql_url, gateway.keys[ORG.name])
    listed = len(post(gateway, LIST)["data"]["bankAccounts"]["edges"])
    return listed, bank_account_creates(commet_url)


async def test_requests_end_typed_while_the_database_stalls_and_work_once_it_answers(
    world: tuple[RunningGateway, StallingProxy, str],
) -> None:
    gateway, proxy, commet_url = world
    listed, creates = await verified(gateway, commet_url)

    proxy.stall()
    ready = httpx.get(f"{gateway.url}/readyz", timeout=CLIENT_TIMEOUT)
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "fanout": "ok"})
    # A query: a top-level error that says what happened and that a retry may succeed.
    answer = post(gateway, LIST)
    assert answer["data"] is None, answer
    [error] = answer["errors"]
    assert error["message"] == "The gateway's database is unavailable. Nothing was changed; retry."
    assert error["extensions"]["code"] == "STORE_UNAVAILABLE"
    assert error["extensions"]["retryable"] is True
    assert error["extensions"]["requestId"]
    # A mutation: its result union's StoreUnavailableError. The key's claim failed before the
    # provider was called: nothing was created there.
    added = post(gateway, ADD, ADD_VARIABLES)["data"]["addBankAccount"]
    assert added == store_unavailable(outcome_unknown=False)
    assert bank_account_creates(commet_url) == creates
    # A credential not looked up before: no operation can run; the HTTP answer says why.
    uncached = httpx.post(
        gateway.graphql_url,
        json={"query": LIST},
        headers=gateway.headers(UNCACHED.name),
        timeout=CLIENT_TIMEOUT,
    )
    assert uncached.status_code == 503, uncached.text
    [refused] = uncached.json()["errors"]
    assert refused == {
        "message": "The gateway's database is unavailable. Nothing was changed; retry.",
        "extensions": {
            "code": "STORE_UNAVAILABLE",
            "retryable": True,
            "requestId": uncached.headers["x-request-id"],
        },
    }
    # The same credential at a WebSocket's connection_init: closed with "Try Again Later".
    closed = await connection_init_answer(gateway, UNCACHED)
    assert (closed.code, closed.reason) == (
        1013,
        "The gateway's database is unavailable; retry the connection later.",
    )

    proxy.resume()
    assert httpx.get(f"{gateway.url}/readyz", timeout=CLIENT_TIMEOUT).status_code == 200
    added = post(gateway, ADD, ADD_VARIABLES)["data"]["addBankAccount"]
    assert added["__typename"] == "AddBankAccountSuccess", added
    assert bank_account_creates(commet_url) == creates + 1
    after = post(gateway, LIST)["data"]["bankAccounts"]["edges"]
    assert len(after) == listed + 1


async def test_an_add_whose_record_failed_after_the_provider_call_is_reconciled_by_its_retry(
    world: tuple[RunningGateway, StallingProxy, str],
) -> None:
    gateway, proxy, commet_url = world
    listed, creates = await verified(gateway, commet_url)
    # Commet holds the create long enough for the database to stall while it is under way.
    fault = {"kind": "latency", "latencyMs": 2000, "operation": "POST /payouts/bank-accounts"}
    httpx.post(
        f"{commet_url}/_sandbox/faults",
        json=fault,
        headers={"x-api-key": ORG.provider_api_key},
    ).raise_for_status()
    variables = {**ADD_VARIABLES, "key": "stall-add-during-call"}

    adding = asyncio.create_task(asyncio.to_thread(post, gateway, ADD, variables))
    # The create has reached Commet (so the key is claimed): now the database stops answering.
    while bank_account_creates(commet_url) == creates:
        assert not adding.done(), adding.result()
        await asyncio.sleep(0.02)
    proxy.stall()
    answer = (await adding)["data"]["addBankAccount"]
    # Commet has the account; the gateway could not record it, and says so.
    assert answer == store_unavailable(outcome_unknown=True)
    proxy.resume()
    assert len(post(gateway, LIST)["data"]["bankAccounts"]["edges"]) == listed

    # Retried with the same key, as told: the gateway reconciles with Commet (its idempotency
    # replays the account) and records it once. Until the failed request's hold lapses, the
    # key answers "in progress", which is retryable too.
    retried = None
    for _ in range(50):
        retried = post(gateway, ADD, variables)["data"]["addBankAccount"]
        if retried["__typename"] != "IdempotencyInProgressError":
            break
        await asyncio.sleep(0.2)
    assert retried is not None and retried["__typename"] == "AddBankAccountSuccess", retried
    after = post(gateway, LIST)["data"]["bankAccounts"]["edges"]
    assert len(after) == listed + 1
    assert retried["bankAccount"] in [edge["node"] for edge in after]
