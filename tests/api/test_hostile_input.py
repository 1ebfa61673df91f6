"""Hostile and sloppy input over a real socket, on PostgreSQL (hardening.md's PII rows): every
answer is a success or a typed error, invalid input reaches no provider, and neither answers
nor logs repeat an account, routing or KYC value."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payout_gateway.domain.enums import HolderType, Provider
from tests.api.test_tenancy_properties import BY_ID
from tests.support.fakes import FakeProvider, fake_providers
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

ORGS = (
    SeededOrg("commet", Provider.COMMET, "ck_live_hostile000001"),
    SeededOrg(
        "paygentic",
        Provider.PAYGENTIC,
        "pgx_hostile_token_01",
        provider_org_id="org_hostile",
        bank_name="Hostile Bank",
        holder_type=HolderType.COMPANY,
    ),
)

# Canaries: what no answer or log line may repeat, in any of the forms they are sent in.
ACCOUNT = "000987654321"
IBAN = "GB82WEST12345698765432"
ROUTING = "021000021"
EMAIL = "canary.kyc@example.com"
TAX_ID = "98-7654321"
ID_NUMBER = "ID-5772156649"
PHONE = "+14155557319"  # not the E.164 example the validator's message gives
CANARIES = (ACCOUNT, IBAN, ROUTING, EMAIL, TAX_ID, TAX_ID.replace("-", ""), ID_NUMBER, PHONE)

ADD = """
mutation($input: AddBankAccountInput!, $key: String) {
  addBankAccount(input: $input, idempotencyKey: $key) {
    __typename
    ... on UserError { code message }
    ... on ValidationError { field }
    ... on AddBankAccountSuccess { bankAccount { id last4 holderName bankName metadata } }
  }
}
"""
VERIFY = """
mutation($input: CompletePayoutVerificationInput!, $key: String) {
  completePayoutVerification(input: $input, idempotencyKey: $key) {
    __typename
    ... on UserError { code message }
    ... on ValidationError { field }
    ... on CompletePayoutVerificationSuccess { alreadyExisted bankAccount { last4 } }
  }
}
"""
PAY = """
mutation($input: RequestPayoutInput!, $key: String) {
  requestPayout(input: $input, idempotencyKey: $key) {
    __typename
    ... on UserError { code message }
    ... on ValidationError { field }
    ... on RequestPayoutSuccess { payout { id description } }
  }
}
"""
PAGES = """
query($first: Int, $after: String) {
  bankAccounts(first: $first, after: $after) { edges { cursor } }
  payouts(first: $first, after: $after) { edges { cursor } }
}
"""
# Compiled plans run a document selecting one root field; the rest runs through Strawberry's
# execution: fuzz both.
NODE = "query($id: ID!) { node(id: $id) { id } }"
ONE_PAGE = (
    "query($first: Int, $after: String) "
    "{ bankAccounts(first: $first, after: $after) { edges { cursor } } }"
)

RESULT_TYPES = {
    "AddBankAccountSuccess",
    "CompletePayoutVerificationSuccess",
    "RequestPayoutSuccess",
    "ValidationError",
    "PayoutAccountRequiredError",
    "ProviderRejectedError",
    "IdempotencyConflictError",
    "IdempotencyInProgressError",
    "NotPermittedError",
    "UnsupportedOperationError",
}


def bank(**overrides: Any) -> dict[str, Any]:
    return {"accountNumber": ACCOUNT, "holderName": "Ada", "routingNumber": ROUTING, **overrides}


def kyc(**overrides: Any) -> dict[str, Any]:
    address = {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"}
    return {
        "email": EMAIL,
        "businessType": "INDIVIDUAL",
        "businessUrl": "https://ada.example.com",
        "documentUrl": "https://files.example.com/ada.pdf",
        "bankAccount": bank(),
        "individual": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": PHONE,
            "dateOfBirth": "1990-01-31",
            "idNumber": ID_NUMBER,
            "address": address,
        },
        **overrides,
    }


def company_kyc() -> dict[str, Any]:
    address = {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"}
    return {
        **kyc(businessType="COMPANY"),
        "individual": None,
        "company": {
            "name": "Acme",
            "taxId": TAX_ID,
            "address": address,
            "representative": {"firstName": "Grace", "lastName": "Hopper", "email": EMAIL},
        },
    }


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {vars(record)}")


@dataclass
class World:
    gateway: RunningGateway
    http: httpx.Client
    fakes: dict[Provider, FakeProvider]
    logs: _Lines = field(default_factory=_Lines)

    def calls(self) -> int:
        return sum(sum(fake.calls.values()) for fake in self.fakes.values())

    def post(self, org: str, query: str, variables: dict[str, Any]) -> httpx.Response:
        # Serialized here, ASCII only: a lone surrogate goes as the JSON escape a client sends.
        body = json.dumps({"query": query, "variables": variables}).encode()
        return self.http.post(
            "/graphql",
            content=body,
            headers={**self.gateway.headers(org), "Content-Type": "application/json"},
        )

    def answer(self, org: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The answer, checked: no unexpected error, no canary; a ValidationError made no
        provider call."""
        before, logged = self.calls(), len(self.logs.lines)
        response = self.post(org, query, variables)
        assert response.status_code in (200, 400), response.text
        text = response.text
        seen = text + "\n".join(self.logs.lines[logged:])
        for canary in CANARIES:
            assert canary not in seen, (canary, text)
        assert "Unexpected error" not in text, (text, variables)
        body: dict[str, Any] = response.json()
        for result in (body.get("data") or {}).values():
            if isinstance(result, dict) and "__typename" in result:
                assert result["__typename"] in RESULT_TYPES, result
                if result["__typename"] == "ValidationError":
                    assert self.calls() == before, (result, variables)
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("hostile")
    fakes = fake_providers()
    with (
        fresh_database() as url,
        running_gateway(
            tmp_path, providers=fakes, orgs=ORGS, database_url=url, refresh_interval_seconds=0
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10) as http,
    ):
        world = World(gateway, http, fakes)
        root = logging.getLogger()
        root.addHandler(world.logs)
        try:
            verified = world.answer("commet", VERIFY, {"input": kyc()})
            assert verified["data"]["completePayoutVerification"]["bankAccount"] is not None
            yield world
        finally:
            root.removeHandler(world.logs)


def validation_error(world: World, org: str, query: str, variables: dict[str, Any]) -> list[str]:
    before = world.calls()
    body = world.answer(org, query, variables)
    (result,) = body["data"].values()
    assert result["__typename"] == "ValidationError", body
    assert world.calls() == before
    path: list[str] = result["field"]
    return path


@pytest.mark.parametrize(
    ("org", "query", "variables", "path"),
    [
        (
            "commet",
            ADD,
            {"input": {"bankAccount": bank(holderName="Ada\x00Lovelace")}},
            ["input", "bankAccount", "holderName"],
        ),
        (
            "paygentic",
            ADD,
            {"input": {"bankAccount": bank(bankName="First\x00Bank")}},
            ["input", "bankAccount", "bankName"],
        ),
        (
            "paygentic",
            VERIFY,
            {"input": kyc(bankAccount=bank(holderName="Ada\x00"))},
            ["input", "bankAccount", "holderName"],
        ),
        (
            "commet",
            PAY,
            {"input": {"amount": 2500, "description": "October\x00"}},
            ["input", "description"],
        ),
    ],
)
def test_a_nul_in_text_the_gateway_stores_is_refused_before_any_provider_call(
    world: World, org: str, query: str, variables: dict[str, Any], path: list[str]
) -> None:
    # PostgreSQL cannot store a NUL in text: the provider created the account (or payout),
    # then the store failed and the caller got "Unexpected error.", nothing recorded.
    assert validation_error(world, org, query, variables) == path


def forged(type_name: str, object_id: str) -> str:
    return base64.b64encode(f"{type_name}:{object_id}".encode(errors="surrogatepass")).decode()


def forged_cursor(object_id: str) -> str:
    raw = f"2026-01-01T00:00:00+00:00|{object_id}".encode(errors="surrogatepass")
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "global_id",
    [forged("BankAccount", "ba_\x00"), forged("Payout", "po_\x00"), forged("x", "\x00")],
)
def test_a_forged_id_holding_a_nul_reads_as_an_unknown_one(world: World, global_id: str) -> None:
    body = world.answer("commet", BY_ID, {"id": global_id})
    assert body == {
        "data": {"node": None, "bankAccount": None, "nodes": [None], "statusChanges": []}
    }
    assert world.answer("commet", NODE, {"id": global_id}) == {"data": {"node": None}}


def test_a_forged_cursor_holding_a_nul_is_a_bad_user_input(world: World) -> None:
    for query in (PAGES, ONE_PAGE):
        body = world.answer("commet", query, {"after": forged_cursor("ba_\x00")})
        codes = {error["extensions"]["code"] for error in body["errors"]}
        assert codes == {"BAD_USER_INPUT"}, body


@pytest.mark.parametrize(
    ("org", "sloppy", "canonical"),
    [
        (
            "commet",
            bank(accountNumber="0009 8765-4321", routingNumber="0210-00021", holderName=" Ada "),
            bank(),
        ),
        (
            "paygentic",
            bank(accountNumber="gb82 west 1234 5698 7654 32", country="gb", currency="gbp"),
            bank(accountNumber=IBAN, country="GB", currency="GBP"),
        ),
    ],
)
def test_one_account_written_two_ways_is_one_request_for_its_key(
    world: World, org: str, sloppy: dict[str, Any], canonical: dict[str, Any]
) -> None:
    key = f"two-ways-{org}"
    before = world.calls()
    first = world.answer(org, ADD, {"input": {"bankAccount": sloppy}, "key": key})
    again = world.answer(org, ADD, {"input": {"bankAccount": canonical}, "key": key})
    assert first["data"]["addBankAccount"]["__typename"] == "AddBankAccountSuccess", first
    assert again == first
    assert world.calls() == before + 1


# --- fuzzed ----------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "Ada\x00Lovelace",
    "Ada\nLovelace",
    "\u202eAda",
    "\u200f",
    "Ａｄａ",
    "\ud800",  # a lone surrogate, sent as its JSON escape
    "x" * 201,
    "' OR 1=1 --",
]
text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))
account_numbers = st.sampled_from(
    [
        ACCOUNT,
        "0009 8765-4321",
        "０００９８７６５４３２１",  # full-width digits
        "٠٠٠٩٨٧٦٥٤٣٢١",  # Arabic-Indic digits
        ACCOUNT + "\x00",
        "\u200f" + ACCOUNT,
        "00098765432A",
        "098",
        ACCOUNT * 2,
        IBAN,
        "gb82 west 1234 5698 7654 32",
        "GB82 WE\u017fT 1234 5698 7654 32",
        "GB82WEST12345698765433",
        "DE89370400440532013000",
    ]
)
routing_numbers = st.sampled_from(
    [ROUTING, "0210-00021", "021000022", "02100002", "02100002A", "０２１０００００２１", ""]
)
countries = st.sampled_from(["US", "us", "gb", "XX", "USA", "u\u017f", "ＵＳ", ""])
currencies = st.sampled_from(["USD", "usd", "gbp", "US$", "XYZ", "u\u017fd", ""])
enums = st.sampled_from(["INDIVIDUAL", "COMPANY", "CHECKING", "SAVINGS", "individual", ""])
urls = st.sampled_from(
    [
        "https://files.example.com/a.pdf",
        "http://files.example.com/a.pdf",
        "https://127.0.0.1/a",
        "https://0x7f.0.0.1/a",
        "https://127.0.0%2e1/a",
        "https://[::1]/a",
        "https://localhost/a",
        "javascript:alert(1)",
        "https://example.com/" + "a" * 2100,
    ]
)
emails = st.sampled_from([EMAIL, "canary.kyc@", "canary.kyc@localhost", "canary<kyc>@example.com"])
phones = st.sampled_from([PHONE, "+1 (415) 555-7319", "+１４１５５５５７３１９", "14155557319"])
dates = st.sampled_from(["1990-01-31", "1899-12-31", "2999-01-01", "31/01/1990", "1990-02-30"])
numbers = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, -1, 999, 1000, 2**31 - 1, 2**31, 1.5, "1000", None]),
)
metadata = st.one_of(
    st.dictionaries(text, text, max_size=4),
    st.just({f"k{i}": "v" for i in range(21)}),
    st.just({"k": "v" * 501}),
    st.just({"nested": {"a": [1, None]}}),
    st.just({"gatewayReference": "x"}),
    st.just(["not", "a", "map"]),
)
keys = st.one_of(st.none(), text, st.just("k" * 256))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "accountNumber": account_numbers,
    "routingNumber": routing_numbers,
    "country": countries,
    "currency": currencies,
    "holderType": enums,
    "accountType": enums,
    "businessType": enums,
    "businessUrl": urls,
    "documentUrl": urls,
    "email": emails,
    "phone": phones,
    "dateOfBirth": dates,
    "metadata": metadata,
    "amount": numbers,
}


def sloppy(value: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``value`` with one field, at any depth, replaced by hostile input."""
    value = dict(value)
    name = data.draw(st.sampled_from(sorted(value)))
    if isinstance(value[name], dict) and value[name] and data.draw(st.booleans()):
        value[name] = sloppy(value[name], data)
    else:
        value[name] = data.draw(FIELDS.get(name, text))
    return value


ids = st.one_of(
    text,
    st.builds(forged, st.sampled_from(["BankAccount", "Payout"]), text),
    st.builds(forged_cursor, text),
)


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_input_gets_a_typed_answer_and_no_canary_back(
    world: World, data: st.DataObject
) -> None:
    org = data.draw(st.sampled_from(["commet", "paygentic"]))
    operation = data.draw(st.sampled_from(["add", "verify", "pay", "by id", "pages"]))
    key = data.draw(keys)
    if operation == "add":
        entry = {"bankAccount": bank(), "metadata": {}, "setDefault": False}
        world.answer(org, ADD, {"input": sloppy(entry, data), "key": key})
    elif operation == "verify":
        entry = data.draw(st.sampled_from([kyc(), company_kyc()]))
        world.answer(org, VERIFY, {"input": sloppy(entry, data), "key": key})
    elif operation == "pay":
        entry = {"amount": 2500, "currency": "USD", "description": "October"}
        world.answer(org, PAY, {"input": sloppy(entry, data), "key": key})
    elif operation == "by id":
        query = data.draw(st.sampled_from([BY_ID, NODE]))
        world.answer(org, query, {"id": data.draw(ids)})
    else:
        query = data.draw(st.sampled_from([PAGES, ONE_PAGE]))
        world.answer(org, query, {"first": data.draw(numbers), "after": data.draw(ids)})
