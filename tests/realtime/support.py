"""Helpers for the realtime tests: a graphql-transport-ws subscriber (gql), onboarding calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

WAIT = 10.0

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
