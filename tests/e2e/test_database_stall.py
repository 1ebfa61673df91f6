"""The gateway on PostgreSQL while the server stops answering without closing anything (a
partition, a frozen host): requests end within the database timeout with a typed answer,
readiness says unavailable, a keyed add creates nothing at the provider, and all works again
once the server answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payout_gateway.domain.enums import Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from tests.realtime.support import verify
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server
from tests.support.postgres import fresh_database, through_stalling_proxy
from tests.support.stalling_proxy import StallingProxy

pytestmark = pytest.mark.postgres

ORG = SeededOrg("stall-commet", Provider.COMMET, "ck_live_stall00000001")
ADD = (
    "mutation($input: AddBankAccountInput!, $key: String) { "
    "addBankAccount(input: $input, idempotencyKey: $key) { __typename "
    "... on AddBankAccountSuccess { bankAccount { id last4 } } } }"
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
            orgs=(ORG,),
            refresh_interval_seconds=0,
            database_timeout_seconds=1,
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


def bank_account_creates(commet_url: str) -> int:
    counts = httpx.get(f"{commet_url}/_sandbox/requests").json()["data"]["counts"]
    return int(counts.get("POST /payouts/bank-accounts", 0))


async def test_requests_end_typed_while_the_database_stalls_and_work_once_it_answers(
    world: tuple[RunningGateway, StallingProxy, str],
) -> None:
    gateway, proxy, commet_url = world
    await verify(gateway.graphql_url, gateway.keys[ORG.name])
    listed = post(gateway, LIST)["data"]["bankAccounts"]["edges"]
    creates = bank_account_creates(commet_url)

    proxy.stall()
    ready = httpx.get(f"{gateway.url}/readyz", timeout=CLIENT_TIMEOUT)
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable"})
    for query, variables in ((LIST, None), (ADD, ADD_VARIABLES)):
        answer = post(gateway, query, variables)
        assert answer["data"] is None, answer
        [error] = answer["errors"]
        assert error["message"] == "Unexpected error."
        assert error["extensions"]["requestId"]
    # The key's claim failed before the provider was called: nothing was created there.
    assert bank_account_creates(commet_url) == creates

    proxy.resume()
    assert httpx.get(f"{gateway.url}/readyz", timeout=CLIENT_TIMEOUT).status_code == 200
    added = post(gateway, ADD, ADD_VARIABLES)["data"]["addBankAccount"]
    assert added["__typename"] == "AddBankAccountSuccess", added
    assert bank_account_creates(commet_url) == creates + 1
    after = post(gateway, LIST)["data"]["bankAccounts"]["edges"]
    assert len(after) == len(listed) + 1
