"""Requests leave nothing for the cycle collector, and a serving app tunes its process's
collector once started (an embedded one leaves it alone)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from payout_gateway.graphql.context import GatewayContext
from payout_gateway.settings import Settings
from payout_gateway.web import create_app
from payout_gateway.web.gc_tuning import YOUNG_GENERATION_THRESHOLD
from tests.support.garbage import cyclic_garbage

PAYGENTIC_DEMO = {"Authorization": "Bearer pgw_demo_paygentic"}
ADD = """mutation($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { id last4 status } }
    ... on UserError { code message }
  }
}"""
LIST = "{ bankAccounts(first: 5) { edges { node { id last4 holderName } } } }"


def bank(number: str) -> dict[str, object]:
    return {
        "input": {
            "bankAccount": {
                "accountNumber": number,
                "routingNumber": "021000021",
                "holderName": "Ada Lovelace",
                "accountType": "CHECKING",
            }
        }
    }


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # Sandbox mode: the provider calls go through the gateway's own HTTP client.
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/gateway.db"))
    async for client in started(app):
        yield client


async def graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, object] | None = None
) -> dict[str, object]:
    answer = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=PAYGENTIC_DEMO
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def request_state(garbage: list[object]) -> list[str]:
    """What of a gateway request's own state the cycle collector would have had to free."""
    kinds = (StrawberryGraphQLCoreExecutionContext, GatewayContext, Request, BaseException)
    return sorted({type(item).__qualname__ for item in garbage if isinstance(item, kinds)})


async def test_mutations_queries_and_user_errors_leave_no_request_state_in_cycles(
    client: httpx.AsyncClient,
) -> None:
    first = await graphql(client, ADD, bank(f"{uuid.uuid4().int % 10**12:012d}"))
    assert "AddBankAccountSuccess" in str(first)
    await graphql(client, LIST)  # warm: each document validated once (that leaves cycles)
    with cyclic_garbage() as garbage:
        for _ in range(3):
            added = await graphql(client, ADD, bank(f"{uuid.uuid4().int % 10**12:012d}"))
            assert "AddBankAccountSuccess" in str(added), added
            listed = await graphql(client, LIST)
            assert "last4" in str(listed), listed
            refused = await graphql(client, ADD, bank("12"))
            assert "VALIDATION_FAILED" in str(refused), refused
    assert request_state(garbage) == []


async def test_a_serving_app_freezes_its_start_up_and_collects_less_often(
    tmp_path: Path, restored_collector: None
) -> None:
    gc.unfreeze()
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/gateway.db"), serving=True)
    async for client in started(app):
        assert gc.get_freeze_count() > 10_000  # the schema, the mappers, the modules
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
        assert (await client.get("/healthz")).status_code == 200


async def test_an_embedded_app_leaves_its_process_s_collector_alone(
    tmp_path: Path, restored_collector: None
) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/gateway.db"))
    async for client in started(app):
        assert (await client.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == threshold
