"""Errors sent over the WebSocket are masked and redacted as over HTTP: the ``next`` results of
queries, mutations and subscriptions (mid-stream failures included), the ``error`` answers to a
``subscribe``, and the log lines written for them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.events import ObjectType
from payout_gateway.request_log import RequestIdFilter
from tests.realtime.support import (
    Database,
    ServerLoop,
    acknowledged,
    bearer,
    connected,
    eventually,
    received,
    subscribe,
)
from tests.support.fakes import FakeProvider
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.pii import assert_no_full_numbers

ORG = "ws-errors"
ACCOUNT_NUMBER = 987654321012345
ROUTING_NUMBER = "021000021"
ADD = """
mutation Add($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { last4 } }
  }
}
"""
PAYOUT_ACCOUNT_CHANGES = "subscription { payoutAccountStatusChanged { toStatus } }"
INTERNALS = "the ledger's internal state: /srv/ledger/secret"


@pytest.fixture(scope="module")
def provider() -> FakeProvider:
    return FakeProvider(Provider.COMMET)


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, provider: FakeProvider
) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("ws-errors"),
        providers={Provider.COMMET: provider},
        orgs=(SeededOrg(ORG, Provider.COMMET, "ck_live_wserrors0001"),),
        refresh_interval_seconds=0,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def provider_answers(provider: FakeProvider) -> Iterator[None]:
    yield
    provider.fail_with = None


async def answers(ws: ClientConnection, operation_id: str) -> list[dict[str, Any]]:
    """What the server sends for one operation, up to its ``complete`` or ``error``, each
    checked for full account or routing numbers as sent."""
    sent: list[dict[str, Any]] = []
    while not sent or sent[-1]["type"] not in ("complete", "error"):
        message = await received(ws)
        assert_no_full_numbers(json.dumps(message))
        assert message.get("id") == operation_id, message
        sent.append(message)
    return sent


async def one_result(ws: ClientConnection, operation_id: str) -> dict[str, Any]:
    """The ``next`` payload of an operation that yields one result and completes."""
    result, end = await answers(ws, operation_id)
    assert result["type"] == "next", result
    assert end == {"id": operation_id, "type": "complete"}
    payload: dict[str, Any] = result["payload"]
    return payload


async def test_a_mutation_s_mistyped_account_number_is_redacted_as_over_http(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mistyped = {"input": {"bankAccount": {"accountNumber": ACCOUNT_NUMBER, "holderName": "Ada"}}}
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await subscribe(ws, "1", ADD, mistyped)
        payload = await one_result(ws, "1")
    async with httpx.AsyncClient() as client:
        over_http = await client.post(
            gw.graphql_url,
            json={"query": ADD, "variables": mistyped},
            headers={"Authorization": bearer(gw, ORG)},
        )
    assert payload["data"] is None
    assert payload["errors"] == over_http.json()["errors"]
    [error] = payload["errors"]
    assert error["message"] == (
        "Variable '$input' has an invalid value at .bankAccount.accountNumber: "
        "String cannot represent a non string value."
    )
    assert_no_full_numbers(caplog.text)


async def test_an_unexpected_error_of_a_mutation_is_masked(
    gw: RunningGateway, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    provider.fail_with = RuntimeError(INTERNALS)
    # As serve's log handler has it: each record gets the id of the request being served.
    caplog.handler.addFilter(RequestIdFilter())
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await subscribe(
            ws,
            "1",
            ADD,
            {"input": {"bankAccount": {"accountNumber": "000123456789", "holderName": "Ada"}}},
        )
        payload = await one_result(ws, "1")
    [error] = payload["errors"]
    # As over HTTP: the operation's own request id, which finds the log line.
    assert error["message"] == "Unexpected error."
    assert error["path"] == ["addBankAccount"]
    assert list(error["extensions"]) == ["requestId"]
    assert "internal" not in json.dumps(payload)
    # The log line keeps what the answer left out.
    [logged] = [r for r in caplog.records if r.getMessage().startswith("unexpected error in Add")]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == INTERNALS
    assert getattr(logged, "request_id", None) == error["extensions"]["requestId"]


async def test_a_query_meeting_a_database_outage_answers_store_unavailable(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(gw, monkeypatch)
    async with connected(gw) as ws:
        # The credential is looked up while the database answers; the query then meets it gone.
        await acknowledged(ws, bearer(gw, ORG))
        database.available = False
        await subscribe(ws, "1", "{ payoutAccount { status } }")
        payload = await one_result(ws, "1")
    assert payload["data"] == {"payoutAccount": None}
    [error] = payload["errors"]
    assert error["path"] == ["payoutAccount"]
    # As over HTTP, with the operation's request id.
    assert error["extensions"] == {
        "code": "STORE_UNAVAILABLE",
        "retryable": True,
        "requestId": error["extensions"]["requestId"],
    }


async def test_a_subscription_failing_unexpectedly_mid_stream_ends_with_the_masked_error(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = ServerLoop(gw, monkeypatch)
    caplog.handler.addFilter(RequestIdFilter())

    async def broken_read(*_: Any, **__: Any) -> None:
        raise RuntimeError(INTERNALS)

    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await subscribe(ws, "1", PAYOUT_ACCOUNT_CHANGES)
        await eventually(lambda: server.subscribers() == 1, message="subscription live")
        # The event's read of the payout account it shows fails in a way no code expected.
        monkeypatch.setattr(gw.state.service, "payout_account", broken_read)
        await server.publish(ObjectType.PAYOUT_ACCOUNT)
        ended = await answers(ws, "1")
    request_id = ended[0]["payload"]["errors"][0]["extensions"]["requestId"]
    assert ended == [
        {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {"message": "Unexpected error.", "extensions": {"requestId": request_id}}
                ],
            },
        },
        {"id": "1", "type": "complete"},
    ]
    [logged] = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.exc_info and str(r.exc_info[1]) == INTERNALS
    ]
    assert getattr(logged, "request_id", None) == request_id


# A value only a directive takes: the subscriptions have no arguments.
BY_LITERAL = "subscription {{ payoutStatusChanged {{ payoutId @include(if: {value}) }} }}"
BY_VARIABLE = "subscription S($b: Boolean!) { payoutStatusChanged { payoutId @include(if: $b) } }"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param(
            BY_LITERAL.format(value=ACCOUNT_NUMBER),
            None,
            id="account number literal, refused by validation",
        ),
        pytest.param(
            BY_LITERAL.format(value=f'"{ROUTING_NUMBER}"'),
            None,
            id="routing number literal, refused by validation",
        ),
        pytest.param(
            f"mutation {{ addBankAccount(input: {{bankAccount: {{accountNumber: {ACCOUNT_NUMBER}, "
            'holderName: "Ada"}}) { __typename } }',
            None,
            id="mutation quoting an account number, refused by validation",
        ),
        pytest.param(
            f"subscription {{ payoutStatusChanged {{ payoutId }} }} {ACCOUNT_NUMBER}",
            None,
            id="account number literal, a syntax error",
        ),
        pytest.param(
            f'subscription {{ "{ROUTING_NUMBER}" }}',
            None,
            id="routing number literal, a syntax error",
        ),
        pytest.param(
            BY_VARIABLE, {"b": ACCOUNT_NUMBER}, id="account number variable, failing coercion"
        ),
        pytest.param(
            BY_VARIABLE, {"b": ROUTING_NUMBER}, id="routing number variable, failing coercion"
        ),
    ],
)
async def test_a_subscribe_refused_before_it_runs_answers_an_error_without_the_numbers(
    gw: RunningGateway,
    caplog: pytest.LogCaptureFixture,
    query: str,
    variables: dict[str, Any] | None,
) -> None:
    caplog.set_level(logging.INFO)
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await subscribe(ws, "1", query, variables)
        [refused] = await answers(ws, "1")
        assert refused["type"] == "error", refused
        assert refused["payload"] and all(
            error["message"] != "Unexpected error." for error in refused["payload"]
        ), refused
        assert ROUTING_NUMBER not in json.dumps(refused)
        # The connection is still served.
        await subscribe(ws, "2", "{ organization { name } }")
        assert (await one_result(ws, "2"))["data"] == {"organization": {"name": ORG}}
    assert_no_full_numbers(caplog.text)
    assert ROUTING_NUMBER not in caplog.text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"query": PAYOUT_ACCOUNT_CHANGES, "operationName": "Nope"},
            'Unknown operation named "Nope".',
        ),
        ({"query": ""}, 'Request data is missing a "query" value'),
    ],
)
async def test_a_subscribe_strawberry_refuses_answers_its_reason_for_that_operation(
    gw: RunningGateway, payload: dict[str, Any], message: str
) -> None:
    # Strawberry's refusals are not unexpected errors: their reasons are shown, as the HTTP
    # view shows them with a 400; the connection and its other operations go on.
    async with connected(gw) as ws:
        await acknowledged(ws, bearer(gw, ORG))
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        assert await answers(ws, "1") == [
            {"id": "1", "type": "error", "payload": [{"message": message}]}
        ]
        await subscribe(ws, "2", "{ organization { name } }")
        assert (await one_result(ws, "2"))["data"] == {"organization": {"name": ORG}}
