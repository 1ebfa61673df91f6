"""Helpers for the realtime tests: a graphql-transport-ws subscriber (gql), onboarding calls,
and the raw protocol spoken over a socket to a running gateway whose database can be failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection, connect

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.events.broker import Missed
from payout_gateway.store.database import StoreSession
from tests.support.fakes import FakeProvider
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway

WAIT = 10.0
PROTOCOL = "graphql-transport-ws"

PAYOUT_ACCOUNT_CHANGES = """
subscription {
  payoutAccountStatusChanged {
    fromStatus toStatus providerStatus source at
    payoutAccount { status providerStatus providerAccountId transfersEnabled }
  }
}
"""
VERIFY = """
mutation Verify($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) {
    __typename
    ... on CompletePayoutVerificationSuccess {
      alreadyExisted
      payoutAccount { status providerAccountId }
    }
    ... on UserError { message code }
  }
}
"""


def kyc(number: str = "000123456789") -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "businessType": "INDIVIDUAL",
        "businessUrl": "https://ada.example.com",
        "documentUrl": "https://files.example.com/ada.pdf",
        "bankAccount": {
            "accountNumber": number,
            "holderName": "Ada Lovelace",
            "routingNumber": "021000021",
        },
        "individual": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+14155550123",
            "dateOfBirth": "1990-01-31",
            "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
        },
    }


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


class Subscriber:
    """Drains one subscription into a queue in the background, so a test can wait for the next
    event with a bound."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        # Whether a test has been shown how the subscription ended (``next`` raised it).
        self.ended_seen = False

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        assert self.task is not None
        get = asyncio.ensure_future(self.events.get())
        done, _ = await asyncio.wait(
            {get, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if get in done:
            return get.result()
        get.cancel()
        if self.task in done:
            self.ended_seen = True
            self.task.result()  # raises what ended the subscription
            raise AssertionError("the subscription ended")
        raise TimeoutError(f"no event within {timeout}s")


@asynccontextmanager
async def subscribed(
    graphql_url: str,
    query: str,
    *,
    init_payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Subscriber]:
    transport = WebsocketsTransport(
        url=ws_url(graphql_url),
        init_payload=init_payload or {},
        headers=headers,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        connect_timeout=5,
        ack_timeout=5,
        close_timeout=5,
    )
    subscriber = Subscriber()
    async with Client(transport=transport) as session:

        async def pump() -> None:
            async for result in session.subscribe(GraphQLRequest(query)):
                subscriber.events.put_nowait(result)

        subscriber.task = asyncio.create_task(pump())
        try:
            yield subscriber
        finally:
            subscriber.task.cancel()
            if not subscriber.ended_seen:
                with suppress(asyncio.CancelledError):
                    await subscriber.task


async def run(
    graphql_url: str, api_key: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    transport = HTTPXAsyncTransport(
        url=graphql_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=WAIT
    )
    async with Client(transport=transport) as session:
        result: dict[str, Any] = await session.execute(
            GraphQLRequest(query, variable_values=variables)
        )
    return result


async def verify(graphql_url: str, api_key: str) -> dict[str, Any]:
    result = (await run(graphql_url, api_key, VERIFY, {"input": kyc()}))[
        "completePayoutVerification"
    ]
    assert result["__typename"] == "CompletePayoutVerificationSuccess", result
    return dict(result)


async def commet_verifies_payout_account(
    commet_url: str, provider_key: str, status: str = "verified"
) -> None:
    """The sandbox's control route: the processor approved the organization's payout account
    (or moved it to ``status``)."""
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.post(
            f"{commet_url}/_sandbox/payout-account/status",
            json={"status": status},
            headers={"x-api-key": provider_key},
        )
    assert response.status_code < 300, response.text


async def eventually(condition: Any, timeout: float = WAIT, message: str = "condition") -> None:
    """Poll a cheap synchronous condition (no sleeping on luck)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        await asyncio.sleep(0.01)


# --- the graphql-transport-ws protocol over a raw socket --------------------------------------


@asynccontextmanager
async def connected(
    gw: RunningGateway, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(gw.graphql_url),
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=WAIT,
        close_timeout=WAIT,
    ) as ws:
        yield ws


def bearer(gw: RunningGateway, org: str) -> str:
    return f"Bearer {gw.keys[org]}"


# A status each kind of object can move to.
TO_STATUS = {
    ObjectType.PAYOUT: "PAID",
    ObjectType.PAYOUT_ACCOUNT: "VERIFIED",
    ObjectType.BANK_ACCOUNT: "ACTIVE",
}


@contextmanager
def gateway_with_fake_commet(
    tmp_path: Path, orgs: tuple[SeededOrg, ...]
) -> Iterator[RunningGateway]:
    """The gateway over a real socket, its Commet a fake and its refresh off: the tests using
    it publish the changes themselves."""
    with running_gateway(
        tmp_path,
        providers={Provider.COMMET: FakeProvider(Provider.COMMET)},
        orgs=orgs,
        refresh_interval_seconds=0,
    ) as running:
        yield running


class ServerLoop:
    """Publishes status changes as the gateway's pipeline does, on the gateway's own event
    loop (the live server runs in a thread of its own), to the organization whose
    subscription was seen starting there last."""

    def __init__(self, gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self._broker = gw.state.broker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._organization_id: str | None = None
        subscribe = self._broker.subscribe

        def seen_subscribing(
            organization_id: str,
        ) -> AbstractAsyncContextManager[asyncio.Queue[StatusChanged]]:
            self._loop = asyncio.get_running_loop()
            self._organization_id = organization_id
            return subscribe(organization_id)

        monkeypatch.setattr(self._broker, "subscribe", seen_subscribing)

    def subscribers(self) -> int:
        return int(self._broker._local.subscriber_count)  # type: ignore[attr-defined]

    async def lose_changes(self) -> None:
        """As the broker does when changes were lost between replicas: every subscription
        on the gateway is ended, told why."""
        assert self._loop is not None
        local = self._broker._local  # type: ignore[attr-defined]
        self._loop.call_soon_threadsafe(local.interrupt, None, Missed.LOST_IN_FANOUT)

    async def publish(self, object_type: ObjectType, object_id: str = "obj_outage") -> None:
        assert self._loop is not None and self._organization_id is not None
        change = StatusChanged(
            organization_id=self._organization_id,
            object_type=object_type,
            object_id=object_id,
            from_status=None,
            to_status=TO_STATUS[object_type],
            provider_status=TO_STATUS[object_type].lower(),
            source=ChangeSource.WEBHOOK,
            at=datetime.now(UTC),
        )
        # Scheduled on the server's loop: by then the subscription that was seen starting has
        # registered its queue (both happen in one step of that loop).
        published = asyncio.run_coroutine_threadsafe(self._broker.publish(change), self._loop)
        await asyncio.wrap_future(published)


async def acknowledged(ws: ClientConnection, credential: str) -> None:
    init = {"type": "connection_init", "payload": {"Authorization": credential}}
    await ws.send(json.dumps(init))
    assert await received(ws) == {"type": "connection_ack"}


async def subscribe(
    ws: ClientConnection,
    operation_id: str,
    query: str,
    variables: dict[str, Any] | None = None,
) -> None:
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    await ws.send(json.dumps({"type": "subscribe", "id": operation_id, "payload": payload}))


async def received(ws: ClientConnection) -> Any:
    # A bound on the wait, should the server never answer: not a timing claim.
    async with asyncio.timeout(WAIT):
        return json.loads(await ws.recv(decode=True))


class Database:
    """The gateway's store, made to fail as it does when its database is unavailable: while
    ``available`` is False, every session raises the store's outage error (caused, as the
    store's is, by the driver's failure)."""

    def __init__(self, gw: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.available = True
        store = gw.state.store
        working = store.session

        @asynccontextmanager
        async def session(*, write: bool = True) -> AsyncIterator[StoreSession]:
            if not self.available:
                raise StoreUnavailableError() from OSError("the database is gone")
            async with working(write=write) as opened:
                yield opened

        monkeypatch.setattr(store, "session", session)
