"""Frontends' JWTs end to end: over HTTP and at connection_init, the token's organization claim
is the caller's organization, a bad token answers as a bad key does, and a token that expires
while its subscription runs stops it as a revoked key does."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.events import ObjectType
from payout_gateway.jwt_tokens import LEEWAY_SECONDS
from payout_gateway.settings import JwtSettings
from payout_gateway.store import Store
from payout_gateway.web.graphql_router import NOT_ACCEPTED
from tests.realtime.support import (
    ServerLoop,
    acknowledged,
    connected,
    eventually,
    received,
    subscribe,
)
from tests.support.fakes import FakeProvider, fake_providers
from tests.support.gateway import RunningGateway, running_gateway

SECRET = "frontend-signing-secret-" + "0" * 40
AUDIENCE = "payout-gateway-test"
ORGANIZATION = "{ organization { name provider } }"
ADD = """mutation($number: String!) {
  addBankAccount(input: { bankAccount: { accountNumber: $number, holderName: "Ada" } }) {
    __typename ... on AddBankAccountSuccess { bankAccount { last4 } }
  }
}"""


@pytest.fixture(scope="module")
def fakes() -> dict[Provider, FakeProvider]:
    return fake_providers()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[Provider, FakeProvider]
) -> Iterator[RunningGateway]:
    jwt_settings = JwtSettings(secret=SecretStr(SECRET), audience=AUDIENCE)
    with running_gateway(
        tmp_path_factory.mktemp("jwt"),
        providers=fakes,
        refresh_interval_seconds=0,
        jwt=jwt_settings,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def org_ids(gw: RunningGateway) -> dict[str, str]:
    async def read() -> dict[str, str]:
        store = Store.from_url(gw.state.settings.database_url)
        try:
            async with store.session(write=False) as session:
                return {org.name: org.id for org in await session.list_organizations()}
        finally:
            await store.dispose()

    return asyncio.run(read())


def token(organization_id: str, **changes: Any) -> str:
    now = int(time.time())
    claims = {"aud": AUDIENCE, "exp": now + 300, "iat": now, "org_id": organization_id}
    claims.update(changes)
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def post(gw: RunningGateway, credential: str, query: str, **variables: Any) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gw.graphql_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {credential}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_token_acts_for_the_organization_its_claim_names(
    gw: RunningGateway, org_ids: dict[str, str], fakes: dict[Provider, FakeProvider]
) -> None:
    for name, provider in (("commet-a", "COMMET"), ("paygentic-a", "PAYGENTIC")):
        body = await post(gw, token(org_ids[name]), ORGANIZATION)
        assert body == {"data": {"organization": {"name": name, "provider": provider}}}
    before = fakes[Provider.COMMET].calls["add_bank_account"]
    added = await post(gw, token(org_ids["commet-a"]), ADD, number="000123456789")
    assert added["data"]["addBankAccount"]["bankAccount"] == {"last4": "6789"}
    assert fakes[Provider.COMMET].calls["add_bank_account"] == before + 1
    # The API keys work as before beside them.
    assert (await post(gw, gw.keys["commet-b"], ORGANIZATION))["data"]["organization"][
        "name"
    ] == "commet-b"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda ids: token("org_nobody"), id="an organization that does not exist"),
        pytest.param(lambda ids: token(ids["commet-a"], exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda ids: token(ids["commet-a"], aud="another-service"), id="audience"),
        pytest.param(
            lambda ids: jwt.encode(
                {"aud": AUDIENCE, "exp": int(time.time()) + 300, "org_id": ids["commet-a"]},
                "another-secret-" + "1" * 40,
                algorithm="HS256",
            ),
            id="another secret",
        ),
    ],
)
async def test_a_bad_token_answers_exactly_as_a_bad_key_and_nothing_runs(
    gw: RunningGateway,
    org_ids: dict[str, str],
    fakes: dict[Provider, FakeProvider],
    bad: Any,
) -> None:
    before = sum(sum(f.calls.values()) for f in fakes.values())
    as_bad_key = await post(gw, "pgw_not_a_key", ADD, number="000123456789")
    as_bad_token = await post(gw, bad(org_ids), ADD, number="000123456789")
    assert as_bad_token == as_bad_key
    assert as_bad_key["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert sum(sum(f.calls.values()) for f in fakes.values()) == before


async def handshake(gw: RunningGateway, credential: str) -> dict[str, Any]:
    async with connect(
        "ws" + gw.graphql_url.removeprefix("http"),
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        open_timeout=5,
        close_timeout=5,
    ) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {credential}"}}
        await ws.send(json.dumps(init))
        answer: dict[str, Any] = json.loads(await ws.recv(decode=True))
        return answer


async def test_a_token_at_connection_init_authenticates_a_subscription_connection(
    gw: RunningGateway, org_ids: dict[str, str]
) -> None:
    assert await handshake(gw, token(org_ids["commet-a"])) == {"type": "connection_ack"}
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(gw, token(org_ids["commet-a"], exp=int(time.time()) - 120))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # The reason an unknown key gets: nothing tells which of the two was sent.
    assert closed.value.rcvd.reason == NOT_ACCEPTED


async def test_a_token_expiring_while_subscribed_ends_the_subscription_as_a_revoked_key_does(
    gw: RunningGateway,
    org_ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # as production logs
    server = ServerLoop(gw, monkeypatch)
    # Expired already, but within the leeway for four to five more seconds (no 30 s wait):
    # time enough to connect and see one event on a slow machine.
    validity = 5
    exp = int(time.time()) - LEEWAY_SECONDS + validity
    expiring = token(org_ids["commet-a"], exp=exp)
    async with connected(gw) as ws:
        await acknowledged(ws, f"Bearer {expiring}")
        await subscribe(ws, "1", "subscription { payoutStatusChanged { toStatus } }")
        await eventually(lambda: server.subscribers() == 1, message="subscription live")
        await server.publish(ObjectType.PAYOUT)
        # Delivered while the token is still accepted.
        assert await received(ws) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"payoutStatusChanged": {"toStatus": "PAID"}}},
        }
        # PyJWT refuses a token once ``exp <= now - leeway``.
        await eventually(
            lambda: time.time() > exp + LEEWAY_SECONDS,
            timeout=validity + 1,
            message="token expired",
        )
        await server.publish(ObjectType.PAYOUT)
        # Not delivered: the revoked key's error instead, and the operation completes.
        assert await received(ws) == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {
                        "message": "The API key or token of this connection is no longer valid.",
                        "extensions": {"code": "UNAUTHENTICATED"},
                    }
                ],
            },
        }
        assert await received(ws) == {"id": "1", "type": "complete"}
    await eventually(lambda: server.subscribers() == 0, message="subscription released")
    assert expiring not in caplog.text
    assert not [r for r in caplog.records if expiring in str(vars(r))]


def test_tokens_are_refused_while_jwts_are_off(tmp_path: Path) -> None:
    async def check(gw: RunningGateway, organization_id: str) -> Any:
        return await post(gw, token(organization_id), ORGANIZATION)

    with running_gateway(tmp_path, refresh_interval_seconds=0) as plain:
        assert plain.state.settings.jwt.enabled is False
        body = asyncio.run(check(plain, "org_anything"))
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
