"""Subscriptions over a real socket: auth at connection_init, and each org gets its own only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from payout_gateway.domain.enums import Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web.graphql_router import MISSING_CREDENTIAL, NOT_ACCEPTED, NOT_BEARER
from tests.realtime.support import (
    PAYOUT_ACCOUNT_CHANGES,
    WAIT,
    commet_verifies_payout_account,
    eventually,
    subscribed,
    verify,
    ws_url,
)
from tests.support.gateway import PEPPER, RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server

ORGS = (
    SeededOrg("rt-a", Provider.COMMET, "ck_live_realtimeA0001"),
    SeededOrg("rt-b", Provider.COMMET, "ck_live_realtimeB0002"),
    SeededOrg("rt-auth", Provider.COMMET, "ck_live_realtimeC0003"),
    SeededOrg("rt-revoked", Provider.COMMET, "ck_live_realtimeD0004"),
)
PROVIDER_KEYS = {org.name: org.provider_api_key for org in ORGS}
PROTOCOL = "graphql-transport-ws"


@dataclass(frozen=True)
class World:
    gateway: RunningGateway
    commet_url: str

    def key(self, org: str) -> str:
        return self.gateway.keys[org]

    def subscribers(self) -> int:
        # The in-process broker's fan-out: how many subscriptions this replica holds right now.
        return int(self.gateway.state.broker._local.subscriber_count)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        live_server(create_commet_sandbox()) as commet_url,
        running_gateway(
            tmp_path_factory.mktemp("realtime"), commet_url=f"{commet_url}/api/v1", orgs=ORGS
        ) as gateway,
    ):
        yield World(gateway, commet_url)


async def handshake(
    world: World, init: dict[str, Any] | None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """connection_init with ``init`` as the whole message; the server's answer."""
    async with connect(
        ws_url(world.gateway.graphql_url),
        subprotocols=[PROTOCOL],
        additional_headers=headers,
        open_timeout=WAIT,
        close_timeout=WAIT,
    ) as ws:
        await ws.send(json.dumps(init or {"type": "connection_init"}))
        answer: dict[str, Any] = json.loads(await ws.recv(decode=True))
        return answer


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "Bearer pgw_not_a_key"},
        {"Authorization": "pgw_without_scheme"},
        {"authorization": "Basic cGd3Og=="},
        {"Authorization": ["Bearer", "pgw_x"]},
        {"headers": {"Authorization": "Bearer pgw_not_a_key"}},
    ],
)
async def test_connection_init_without_a_valid_key_is_refused(
    world: World, payload: dict[str, Any] | None
) -> None:
    message = (
        {"type": "connection_init"}
        if payload is None
        else {"type": "connection_init", "payload": payload}
    )
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(world, message)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_an_invalid_handshake_header_is_refused(world: World) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(world, None, headers={"Authorization": "Bearer pgw_not_a_key"})
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.parametrize(
    ("payload", "headers", "reason"),
    [
        (None, None, MISSING_CREDENTIAL),
        ({}, None, MISSING_CREDENTIAL),
        ({"Authorization": ""}, None, MISSING_CREDENTIAL),
        ({"Authorization": ["Bearer", "pgw_x"]}, None, MISSING_CREDENTIAL),
        ({"headers": {"Authorization": "Bearer pgw_x"}}, None, MISSING_CREDENTIAL),
        ({"Authorization": "pgw_without_scheme"}, None, NOT_BEARER),
        ({"authorization": "Basic cGd3Og=="}, None, NOT_BEARER),
        ({"Authorization": "Bearer pgw_not_a_key"}, None, NOT_ACCEPTED),
        ({"Authorization": "Bearer not-even-a-key-shape"}, None, NOT_ACCEPTED),
        (None, {"Authorization": "Bearer pgw_not_a_key"}, NOT_ACCEPTED),
    ],
)
async def test_a_refused_connection_is_told_what_to_fix(
    world: World,
    payload: dict[str, Any] | None,
    headers: dict[str, str] | None,
    reason: str,
) -> None:
    # Strawberry's own close said only "Forbidden", whatever was wrong.
    message = {"type": "connection_init", **({} if payload is None else {"payload": payload})}
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(world, message, headers=headers)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, reason)


@pytest.mark.parametrize("field", ["Authorization", "authorization"])
async def test_a_valid_key_in_connection_init_is_acknowledged(world: World, field: str) -> None:
    message = {"type": "connection_init", "payload": {field: f"Bearer {world.key('rt-auth')}"}}
    assert await handshake(world, message) == {"type": "connection_ack"}


async def test_a_valid_handshake_header_stands_in_for_the_payload(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.key('rt-auth')}"}
    assert await handshake(world, None, headers=headers) == {"type": "connection_ack"}


async def test_subscribing_before_connection_init_closes_the_socket(world: World) -> None:
    message = {"type": "subscribe", "id": "1", "payload": {"query": PAYOUT_ACCOUNT_CHANGES}}
    with pytest.raises(ConnectionClosed) as closed:
        await handshake(world, message)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_legacy_graphql_ws_protocol_is_not_offered(world: World) -> None:
    # Only graphql-transport-ws: the server closes a connection that cannot speak it.
    with pytest.raises((ConnectionClosed, InvalidStatus)) as refused:
        async with connect(
            ws_url(world.gateway.graphql_url),
            subprotocols=["graphql-ws"],
            open_timeout=WAIT,
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            await ws.recv()
    if isinstance(refused.value, ConnectionClosed):
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4406


async def test_each_organization_receives_only_its_own_changes(world: World) -> None:
    url = world.gateway.graphql_url
    a, b = world.key("rt-a"), world.key("rt-b")
    created = {org: await verify(url, world.key(org)) for org in ("rt-a", "rt-b")}
    assert {r["payoutAccount"]["status"] for r in created.values()} == {"PENDING_VERIFICATION"}

    async with (
        subscribed(
            url, PAYOUT_ACCOUNT_CHANGES, init_payload={"Authorization": f"Bearer {a}"}
        ) as on_a,
        subscribed(
            url, PAYOUT_ACCOUNT_CHANGES, init_payload={"authorization": f"Bearer {b}"}
        ) as on_b,
    ):
        await eventually(lambda: world.subscribers() == 2, message="both subscriptions live")

        await commet_verifies_payout_account(world.commet_url, PROVIDER_KEYS["rt-a"])
        again = await verify(url, a)
        assert again["payoutAccount"]["status"] == "VERIFIED"

        event = (await on_a.next())["payoutAccountStatusChanged"]
        assert event["fromStatus"] == "PENDING_VERIFICATION"
        assert event["toStatus"] == "VERIFIED"
        assert event["source"] == "PROVIDER_RESPONSE"
        assert event["providerStatus"] == "verified"
        assert event["payoutAccount"] == {
            "status": "VERIFIED",
            "providerStatus": "verified",
            "providerAccountId": created["rt-a"]["payoutAccount"]["providerAccountId"],
            "transfersEnabled": True,
        }

        # B's first event is B's own change: A's never reached B's subscription.
        await commet_verifies_payout_account(world.commet_url, PROVIDER_KEYS["rt-b"])
        await verify(url, b)
        event_b = (await on_b.next())["payoutAccountStatusChanged"]
        assert (
            event_b["payoutAccount"]["providerAccountId"]
            == (created["rt-b"]["payoutAccount"]["providerAccountId"])
        )
        assert on_a.events.empty() and on_b.events.empty()
    await eventually(lambda: world.subscribers() == 0, message="subscriptions released")


async def test_a_key_revoked_while_subscribed_receives_no_more_changes(world: World) -> None:
    url, revoked = world.gateway.graphql_url, world.key("rt-revoked")
    # Revoked from outside the gateway's process (as the CLI does), on the same database; a
    # second key of the organization keeps running its mutations.
    store = Store.from_url(world.gateway.state.settings.database_url)
    try:
        tenancy = Tenancy(store, PEPPER)
        async with store.session(write=False) as session:
            org = await session.organization_by_name("rt-revoked")
            assert org is not None
            (seeded,) = await session.list_api_keys(org.id)
        _, other_key = await tenancy.issue_api_key(org.id)
        async with subscribed(
            url, PAYOUT_ACCOUNT_CHANGES, init_payload={"Authorization": f"Bearer {revoked}"}
        ) as subscriber:
            await eventually(lambda: world.subscribers() == 1, message="subscription live")
            await verify(url, other_key)
            await commet_verifies_payout_account(world.commet_url, PROVIDER_KEYS["rt-revoked"])
            await verify(url, other_key)
            verified = (await subscriber.next())["payoutAccountStatusChanged"]
            assert verified["toStatus"] == "VERIFIED"  # delivered while the key was valid
            await tenancy.revoke_api_key(seeded.id)
            # The gateway's authentication cache keeps a key for 5 s (tenancy.py).
            await asyncio.sleep(5.5)
            await commet_verifies_payout_account(
                world.commet_url, PROVIDER_KEYS["rt-revoked"], "restricted"
            )
            assert (await verify(url, other_key))["payoutAccount"]["status"] == "RESTRICTED"
            with pytest.raises(Exception, match="no longer valid"):
                await subscriber.next()
    finally:
        await store.dispose()
    await eventually(lambda: world.subscribers() == 0, message="subscription released")
