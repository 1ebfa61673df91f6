"""A page cursor is good only for the connection that issued it.

Both connections' cursors hold a creation time and a gateway id, and each connection took any:
``payouts(after:)`` given a ``bankAccounts`` cursor answered the payouts older than that
account, a plausible page with the newer payouts silently left out, where the schema promises a
BAD_USER_INPUT error for a cursor this API did not issue (for that connection). A cursor of
another organization's is not refused: it is only a position, reads nothing of that
organization's, and answers as a cursor of an id that does not exist does (tenancy rule)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime.support import kyc
from tests.support.fakes import fake_providers
from tests.support.gateway import RunningGateway, running_gateway

VERIFY = """
mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) { __typename }
}
"""
ADD = """
mutation($number: String!) {
  addBankAccount(input: {bankAccount: {accountNumber: $number, holderName: "Ada"}}) { __typename }
}
"""
PAY = "mutation { requestPayout(input: {amount: 2500}) { __typename } }"
PAGE = """
query($after: String) {{
  {connection}(first: 2, after: $after) {{
    edges {{ node {{ id }} }} pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""
CONNECTIONS = ("bankAccounts", "payouts")


class World:
    def __init__(self, gateway: RunningGateway, http: httpx.Client) -> None:
        self.gateway = gateway
        self.http = http

    def answer(self, org: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.gateway.headers(org),
        )
        assert response.status_code == 200, response.text
        return response.json()

    def page(self, org: str, connection: str, after: str | None) -> Any:
        return self.answer(org, PAGE.format(connection=connection), {"after": after})

    def walk(self, org: str, connection: str) -> tuple[list[str], list[str]]:
        """Every id of the connection, and the cursors it handed out on the way."""
        ids: list[str] = []
        cursors: list[str] = []
        after = None
        while True:
            body = self.page(org, connection, after)
            assert "errors" not in body, body
            page = body["data"][connection]
            ids += [edge["node"]["id"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                return ids, cursors
            after = page["pageInfo"]["endCursor"]
            cursors.append(after)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("cursors")
    with (
        running_gateway(tmp_path, providers=fake_providers(), refresh_interval_seconds=0) as gw,
        httpx.Client(base_url=gw.url, timeout=10) as http,
    ):
        world = World(gw, http)
        for n, org in enumerate(("commet-a", "commet-b")):
            verified = world.answer(org, VERIFY, {"input": kyc(f"00012345{n}000")})
            assert "errors" not in verified, verified
            for m in range(4):
                world.answer(org, ADD, {"number": f"00012345{n}{m:03d}"})
                world.answer(org, PAY)
        yield world


@pytest.mark.parametrize(("issued_by", "given_to"), [CONNECTIONS, CONNECTIONS[::-1]])
def test_a_cursor_of_another_connection_is_a_bad_user_input(
    world: World, issued_by: str, given_to: str
) -> None:
    _, cursors = world.walk("commet-a", issued_by)
    assert cursors
    for cursor in cursors:
        body = world.page("commet-a", given_to, cursor)
        assert body["data"] is None, body
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"] == "The 'after' cursor is not one this API issued."


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_each_connection_still_walks_with_its_own_cursors(world: World, connection: str) -> None:
    ids, cursors = world.walk("commet-a", connection)
    assert len(ids) == len(set(ids)) == (5 if connection == "bankAccounts" else 4)
    assert len(cursors) == (len(ids) - 1) // 2  # one per page that has a next


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_another_organization_s_cursor_of_the_connection_reads_only_the_caller_s_items(
    world: World, connection: str
) -> None:
    own, _ = world.walk("commet-b", connection)
    _, foreign = world.walk("commet-a", connection)
    for cursor in foreign:
        body = world.page("commet-b", connection, cursor)
        assert "errors" not in body, body
        assert {edge["node"]["id"] for edge in body["data"][connection]["edges"]} <= set(own)
