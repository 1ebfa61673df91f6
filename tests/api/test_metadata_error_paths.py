"""A ValidationError about a metadata entry names the entry by the key the caller sent.

Every segment of a domain path was camelCased on its way to the input path, metadata keys too:
an over-long value under ``order_id`` was reported at ``["input", "metadata", "orderId"]``, a
key the caller never sent, so a client could not tell which of its entries was refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payout_gateway.domain.enums import Provider
from tests.support.fakes import FakeProvider, fake_providers
from tests.support.gateway import RunningGateway, running_gateway

ADD = """
mutation($metadata: JSON) {
  addBankAccount(input: {
    bankAccount: {accountNumber: "000123456789", holderName: "Ada", routingNumber: "021000021"}
    metadata: $metadata
  }) {
    __typename
    ... on ValidationError { field issues { field } }
    ... on AddBankAccountSuccess { bankAccount { metadata } }
  }
}
"""


@pytest.fixture
def fakes() -> dict[Provider, FakeProvider]:
    return fake_providers()


@pytest.fixture
def gw(tmp_path: Path, fakes: dict[Provider, FakeProvider]) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path, providers=fakes, refresh_interval_seconds=0) as running:
        yield running


def add(gw: RunningGateway, org: str, metadata: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        gw.graphql_url,
        json={"query": ADD, "variables": {"metadata": metadata}},
        headers=gw.headers(org),
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["data"]["addBankAccount"]
    return result


@pytest.mark.parametrize("org", ["commet-a", "paygentic-a"])
@pytest.mark.parametrize(
    ("metadata", "refused"),
    [
        ({"order_id": "x" * 501}, ["order_id"]),
        ({"order_id": 7}, ["order_id"]),
        ({"a_b_c": "x" * 501, "Order-ID": "y" * 501, "okKey": "fine"}, ["Order-ID", "a_b_c"]),
    ],
)
def test_a_refused_metadata_entry_is_named_by_its_key_as_sent(
    gw: RunningGateway,
    fakes: dict[Provider, FakeProvider],
    org: str,
    metadata: dict[str, Any],
    refused: list[str],
) -> None:
    result = add(gw, org, metadata)
    assert result["__typename"] == "ValidationError", result
    named = sorted(issue["field"][2] for issue in result["issues"])
    assert named == refused
    for issue in result["issues"]:
        assert issue["field"][:2] == ["input", "metadata"]
        assert issue["field"][2] in metadata
    assert sum(fake.calls["add_bank_account"] for fake in fakes.values()) == 0


def test_the_keys_a_refusal_names_are_the_keys_an_account_shows(gw: RunningGateway) -> None:
    # The same keys, accepted, come back as sent: a refusal must name them the same way.
    shown = add(gw, "commet-a", {"order_id": "ok", "a_b_c": "ok"})
    assert shown["bankAccount"]["metadata"] == {"order_id": "ok", "a_b_c": "ok"}
    refused = add(gw, "commet-a", {"order_id": "x" * 501, "a_b_c": "ok"})
    assert [issue["field"] for issue in refused["issues"]] == [["input", "metadata", "order_id"]]
