"""A requestPayout ValidationError names a field of RequestPayoutInput, as a client's form has it.

The input's `amount` and `currency` are one domain Money (``amount.amount_minor`` and
``amount.currency``): its paths were shown as they are in the domain, so a bad currency read
``["input", "amount", "currency"]`` (no such input field) and Commet's USD-only rule named
``["input", "amount"]``, pointing a form at the amount the caller got right."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server

ORGS = (
    SeededOrg("commet", Provider.COMMET, "ck_live_payoutPaths001"),
    SeededOrg(
        "paygentic",
        Provider.PAYGENTIC,
        "pgx_payout_paths_01",
        provider_org_id="org_payoutPaths",
        bank_name="Paths Bank",
        holder_type=HolderType.COMPANY,
    ),
)

PAY = """
mutation($input: RequestPayoutInput!) {
  requestPayout(input: $input) {
    __typename
    ... on ValidationError { field issues { field } }
  }
}
"""


class World:
    def __init__(self, gateway: RunningGateway, commet: FastAPI) -> None:
        self.gateway = gateway
        self.commet = commet

    def pay(self, org: str, payout_input: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            self.gateway.graphql_url,
            json={"query": PAY, "variables": {"input": payout_input}},
            headers=self.gateway.headers(org),
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["data"]["requestPayout"]
        return result

    def commet_payouts(self) -> int:
        return int(self.commet.state.sandbox.request_counts["POST /payouts"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    commet, paygentic = create_commet_sandbox(), create_paygentic_sandbox()
    with (
        live_server(commet) as commet_url,
        live_server(paygentic) as paygentic_url,
        running_gateway(
            tmp_path_factory.mktemp("payout-paths"),
            commet_url=f"{commet_url}/api/v1",
            paygentic_url=paygentic_url,
            orgs=ORGS,
            refresh_interval_seconds=0,
        ) as gateway,
    ):
        yield World(gateway, commet)


def input_fields(gateway: RunningGateway) -> set[str]:
    query = '{ __type(name: "RequestPayoutInput") { inputFields { name } } }'
    response = httpx.post(
        gateway.graphql_url, json={"query": query}, headers=gateway.headers("commet")
    )
    return {field["name"] for field in response.json()["data"]["__type"]["inputFields"]}


@pytest.mark.parametrize("org", ["commet", "paygentic"])
@pytest.mark.parametrize("currency", ["US$", "", "dollars"])
def test_an_invalid_currency_names_the_input_s_currency(
    world: World, org: str, currency: str
) -> None:
    result = world.pay(org, {"amount": 2500, "currency": currency})
    assert result["__typename"] == "ValidationError", result
    assert result["field"] == ["input", "currency"]
    assert [issue["field"] for issue in result["issues"]] == [["input", "currency"]]


def test_commet_s_usd_only_rule_names_the_currency_not_the_amount(world: World) -> None:
    before = world.commet_payouts()
    result = world.pay("commet", {"amount": 2500, "currency": "EUR"})
    assert result["__typename"] == "ValidationError", result
    assert result["field"] == ["input", "currency"]
    assert world.commet_payouts() == before


@pytest.mark.parametrize(("org", "amount"), [("commet", 999), ("commet", -5), ("paygentic", 0)])
def test_a_refused_amount_still_names_the_amount(world: World, org: str, amount: int) -> None:
    result = world.pay(org, {"amount": amount})
    assert result["__typename"] == "ValidationError", result
    assert result["field"] == ["input", "amount"]


def test_every_path_a_payout_refusal_names_is_a_field_of_the_input(world: World) -> None:
    fields = input_fields(world.gateway)
    refusals = [
        world.pay("commet", {"amount": 2500, "currency": "EUR"}),
        world.pay("commet", {"amount": 999}),
        world.pay("paygentic", {"amount": 2500, "currency": "US$"}),
        world.pay("paygentic", {"amount": 2500, "description": "x" * 501}),
    ]
    for result in refusals:
        for issue in result["issues"]:
            head, *rest = issue["field"]
            assert head == "input" and len(rest) == 1 and rest[0] in fields, result
