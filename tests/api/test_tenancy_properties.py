"""Tenancy as a property (hardening.md): random callers, objects and operations over a real
socket; no organization ever reads or writes another's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payout_gateway.domain.enums import HolderType, Provider
from tests.realtime.support import kyc
from tests.support.fakes import fake_providers
from tests.support.gateway import DEFAULT_ORGS, RunningGateway, SeededOrg, running_gateway

SEEDED = (
    *DEFAULT_ORGS,
    SeededOrg("commet-c", Provider.COMMET, "ck_live_commetC0000003"),
    SeededOrg(
        "paygentic-b",
        Provider.PAYGENTIC,
        "pgx_token_paygenticB",
        provider_org_id="org_paygenticB",
        bank_name="Test Bank",
        holder_type=HolderType.COMPANY,
    ),
)
ORGS = tuple(seeded.name for seeded in SEEDED)

VERIFY = """
mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) {
    __typename ... on CompletePayoutVerificationSuccess { bankAccount { id } }
  }
}
"""
ADD = """
mutation($number: String!, $key: String) {
  addBankAccount(
    input: {bankAccount: {accountNumber: $number, routingNumber: "021000021", holderName: "Ada"}}
    idempotencyKey: $key
  ) { __typename ... on AddBankAccountSuccess { bankAccount { id } } }
}
"""
PAY = """
mutation { requestPayout(input: {amount: 2500}) {
  __typename ... on RequestPayoutSuccess { payout { id } } ... on UserError { code } } }
"""
BY_IDS = """
query($ids: [ID!]!) { nodes(ids: $ids) { id } }
"""
BY_ID = """
query($id: ID!) {
  node(id: $id) { id }
  bankAccount(id: $id) { id }
  nodes(ids: [$id]) { id }
  statusChanges(objectId: $id) { objectId }
}
"""
LISTS = """
query($accountsAfter: String, $payoutsAfter: String) {
  bankAccounts(first: 100, after: $accountsAfter) { edges { node { id } } }
  payouts(first: 100, after: $payoutsAfter) { edges { node { id } } }
  statusChanges(first: 100) { objectId }
}
"""
CURSORS = """
{ bankAccounts(first: 100) { edges { cursor } } payouts(first: 100) { edges { cursor } } }
"""
MISSING = base64.b64encode(b"BankAccount:ba_00000000000000000000000000000000").decode()


@dataclass
class World:
    gateway: RunningGateway
    http: httpx.Client
    # Every object id and page cursor any organization was shown, with its organization.
    owner: dict[str, str] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    # The connection that issued each cursor: a cursor is good only for its own connection.
    cursor_connections: dict[str, str] = field(default_factory=dict)
    # The objects made before the examples run: what examples draw from (a pool that grew as
    # examples add accounts would make hypothesis' draws differ between runs of one example).
    targets: tuple[str, ...] = ()
    numbers: Iterator[int] = field(default_factory=lambda: iter(range(10**8, 10**9)))

    def run(self, org: str, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.gateway.headers(org),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def number(self) -> str:
        return f"000{next(self.numbers)}"

    def own(self, org: str, object_id: str) -> None:
        assert self.owner.setdefault(object_id, org) == org, (object_id, org)

    def learn(self, org: str) -> None:
        """Record what ``org`` sees as its own: its objects, audit entries and cursors."""
        data = self.run(org, LISTS)
        for connection in ("bankAccounts", "payouts"):
            for edge in data[connection]["edges"]:
                self.own(org, edge["node"]["id"])
        for change in data["statusChanges"]:
            self.own(org, change["objectId"])
        pages = self.run(org, CURSORS)
        for connection in ("bankAccounts", "payouts"):
            for edge in pages[connection]["edges"]:
                self.cursors[edge["cursor"]] = org
                self.cursor_connections[edge["cursor"]] = connection


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("tenancy")
    fakes = fake_providers()
    with (
        running_gateway(
            tmp_path, providers=fakes, orgs=SEEDED, refresh_interval_seconds=0
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10) as http,
    ):
        world = World(gateway, http)
        for org in ORGS:
            verified = world.run(org, VERIFY, {"input": kyc(world.number())})
            assert verified["completePayoutVerification"]["__typename"] == (
                "CompletePayoutVerificationSuccess"
            )
            for _ in range(2):
                added = world.run(org, ADD, {"number": world.number()})
                assert added["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
            world.run(org, PAY)
            world.learn(org)
        # Each organization has accounts, a payout account's audit entry and cursors to steal.
        assert set(world.owner.values()) == set(world.cursors.values()) == set(ORGS)
        world.targets = tuple(sorted(world.owner))
        yield world


def by_id_answer(world: World, org: str, object_id: str) -> dict[str, Any]:
    data: dict[str, Any] = world.run(org, BY_ID, {"id": object_id})
    return data


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_no_organization_reads_or_writes_another_s_objects(world: World, data: Any) -> None:
    caller = data.draw(st.sampled_from(ORGS), label="caller")
    operation = data.draw(
        st.sampled_from(["by id", "by ids", "pages", "keyed add"]), label="operation"
    )
    if operation == "by ids":
        ids = data.draw(st.lists(st.sampled_from(world.targets), min_size=1, max_size=6))
        found = world.run(caller, BY_IDS, {"ids": ids})["nodes"]
        for object_id, node in zip(ids, found, strict=True):
            # Bank accounts and payouts are nodes; a payout account is not (its audit id).
            is_node = base64.b64decode(object_id).startswith((b"BankAccount:", b"Payout:"))
            mine = world.owner[object_id] == caller and is_node
            assert (node is not None) == mine, (object_id, node)
    elif operation == "by id":
        object_id = data.draw(st.sampled_from(world.targets), label="object")
        answer = by_id_answer(world, caller, object_id)
        if world.owner[object_id] == caller:
            # Its own: found by the lookups that cover its type (the audit trail always).
            assert answer["statusChanges"] or answer["node"] or answer["bankAccount"], answer
        else:
            # Another's reads exactly as an id that does not exist.
            assert answer == by_id_answer(world, caller, MISSING), (object_id, answer)
    elif operation == "pages":
        cursor = data.draw(st.sampled_from([None, *sorted(world.cursors)]), label="cursor")
        # Any organization's cursor, given to the connection that issued it.
        issued_by = world.cursor_connections.get(cursor) if cursor else None
        seen = world.run(
            caller,
            LISTS,
            {
                "accountsAfter": cursor if issued_by == "bankAccounts" else None,
                "payoutsAfter": cursor if issued_by == "payouts" else None,
            },
        )
        ids = [edge["node"]["id"] for c in ("bankAccounts", "payouts") for edge in seen[c]["edges"]]
        ids += [change["objectId"] for change in seen["statusChanges"]]
        for object_id in ids:
            assert world.owner.get(object_id, caller) == caller, (object_id, cursor)
    else:
        # One key pool for every organization: a key another used never replays its answer.
        # and the same request under another's key is not a replay of its answer either.
        key = data.draw(st.sampled_from(["shared-1", "shared-2", "shared-3"]), label="key")
        number = data.draw(st.sampled_from(["000100000001", "000100000002"]), label="number")
        added = world.run(caller, ADD, {"number": number, "key": key})
        result = added["addBankAccount"]
        if result["__typename"] == "AddBankAccountSuccess":
            world.own(caller, result["bankAccount"]["id"])
        else:
            # The same key with another number: this organization's own earlier use of it.
            assert result["__typename"] == "IdempotencyConflictError", result
