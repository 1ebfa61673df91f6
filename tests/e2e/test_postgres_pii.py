"""PII on PostgreSQL: after the flows that take numbers, no row of any table holds one but last4."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.test_gateway_e2e import ADD, VERIFY, World, bank, kyc, serving
from tests.e2e.test_gateway_e2e import ORGS as E2E_ORGS
from tests.support.pii import assert_no_full_numbers
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

# The end-to-end suite's organizations (its control helpers know their provider keys).
ORGS = tuple(org for org in E2E_ORGS if org.name in {"c-onboard", "c-other", "p-onboard"})

# Canaries: numbers no other test sends, each account's last4 its own.
ROUTING = "271828189"  # a valid ABA checksum
ID_NUMBER = "ID-5772156649"
TAX_ID = "98-7654321"
IBAN = "DE83314159265358979323"
COMMET_VERIFIED = "000314159265"
COMMET_KEYED = "000271828182"
COMMET_UNKEYED = "000161803398"
PAYGENTIC_VERIFIED = "000662607015"
PAYGENTIC_KEYED = "000602214076"
PAYGENTIC_UNKEYED = "000137035999"
SAVED = (
    COMMET_VERIFIED,
    COMMET_KEYED,
    COMMET_UNKEYED,
    IBAN,
    PAYGENTIC_VERIFIED,
    PAYGENTIC_KEYED,
    PAYGENTIC_UNKEYED,
)
REFUSED = (
    "000141421356",  # before verification: PayoutAccountRequiredError
    "000173205080",  # bad routing number: ValidationError
    "000223606797",  # Commet refuses: ProviderRejectedError
    "000244948974",  # same key, another request: IdempotencyConflictError
    "000264575131",  # no routing number for Paygentic: ValidationError
    "000282842712",  # Paygentic 503: ProviderUnavailableError
)
BAD_ROUTING = "271828188"  # fails the checksum
CANARIES = (*SAVED, *REFUSED, ROUTING, BAD_ROUTING, ID_NUMBER, TAX_ID, TAX_ID.replace("-", ""))


def account(number: str, **extra: Any) -> dict[str, Any]:
    return {"bankAccount": bank(number, **{"routingNumber": ROUTING, **extra})}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, str]]:
    with fresh_database() as url, serving(tmp_path, ORGS, database_url=url) as world:
        yield world, url


async def typename(world: World, org: str, query: str, variables: dict[str, Any]) -> str:
    result = await world.run(org, query, variables)
    (payload,) = result.values()
    return str(payload["__typename"])


async def rows_as_text(url: str) -> dict[str, list[str]]:
    """Every row of every table of the database's schema, as PostgreSQL prints it."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        return {
            table: [row[0] for row in await connection.fetch(f'SELECT t::text FROM "{table}" t')]
            for table in (record["table_name"] for record in tables)
        }
    finally:
        await connection.close()


async def test_no_full_number_reaches_the_postgresql_database(world: tuple[World, str]) -> None:
    gateway, url = world
    individual = {**kyc(), **account(COMMET_VERIFIED)}
    individual["individual"] |= {"idNumber": ID_NUMBER, "ssnLast4": "1234"}
    company = {
        **kyc(),
        **account(PAYGENTIC_VERIFIED),
        "businessType": "COMPANY",
        "individual": None,
        "company": {
            "name": "Acme Inc",
            "taxId": TAX_ID,
            "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
            "representative": {"firstName": "Grace", "lastName": "Hopper"},
        },
    }
    calls = [
        # Commet: refused before verification; verified (and the stored response replayed);
        # adds with and without a key; a bad routing number; the same key for another account.
        ("c-other", ADD, {"input": account(REFUSED[0]), "key": "early"}),
        ("c-onboard", VERIFY, {"input": individual, "key": "verify"}),
        ("c-onboard", VERIFY, {"input": individual, "key": "verify"}),
        ("c-onboard", ADD, {"input": account(COMMET_KEYED), "key": "add"}),
        ("c-onboard", ADD, {"input": account(COMMET_UNKEYED)}),
        ("c-onboard", ADD, {"input": account(REFUSED[1], routingNumber=BAD_ROUTING), "key": "b"}),
        ("c-onboard", ADD, {"input": account(REFUSED[3]), "key": "add"}),
        # Paygentic: a company verified; adds with and without a key, and of an IBAN; one
        # without routing.
        ("p-onboard", VERIFY, {"input": company, "key": "verify"}),
        ("p-onboard", ADD, {"input": account(PAYGENTIC_KEYED), "key": "add"}),
        ("p-onboard", ADD, {"input": account(PAYGENTIC_UNKEYED)}),
        # An IBAN opens in its own country: Paygentic takes country and currency as asked.
        ("p-onboard", ADD, {"input": account(IBAN, country="DE", currency="EUR"), "key": "iban"}),
        ("p-onboard", ADD, {"input": account(REFUSED[4], routingNumber=None), "key": "none"}),
    ]
    assert [await typename(gateway, *call) for call in calls] == [
        "PayoutAccountRequiredError",
        *["CompletePayoutVerificationSuccess"] * 2,
        *["AddBankAccountSuccess"] * 2,
        "ValidationError",
        "IdempotencyConflictError",
        "CompletePayoutVerificationSuccess",
        *["AddBankAccountSuccess"] * 3,
        "ValidationError",
    ]
    # The providers refuse or fail a keyed add: its record keeps the refusal or stays started.
    gateway.commet_control("c-onboard", "/faults", {"kind": "status", "status": 409, "code": "x"})
    rejected = {"input": account(REFUSED[2]), "key": "rejected"}
    assert await typename(gateway, "c-onboard", ADD, rejected) == "ProviderRejectedError"
    gateway.paygentic_control(
        "/faults", {"kind": "status", "status": 503, "operation": "POST /v0/externalAccounts"}
    )
    unavailable = {"input": account(REFUSED[5]), "key": "unavailable"}
    assert await typename(gateway, "p-onboard", ADD, unavailable) == "ProviderUnavailableError"

    tables = await rows_as_text(url)
    assert {"bank_accounts", "payout_accounts", "idempotency_records"} <= set(tables)
    assert len(tables["bank_accounts"]) == len(SAVED)
    assert len(tables["idempotency_records"]) == 8
    stored = "\n".join(row for rows in tables.values() for row in rows)
    # last4 is there, in the rows and in the keyed calls' stored responses ...
    for number in SAVED:
        assert f",{number[-4:]}," in "".join(tables["bank_accounts"]), number
    for number in (COMMET_VERIFIED, COMMET_KEYED, IBAN, PAYGENTIC_VERIFIED, PAYGENTIC_KEYED):
        assert f'""last4"":""{number[-4:]}""' in "".join(tables["idempotency_records"]), number
    leaks = [
        f"{number} in {row}" for row in stored.splitlines() for number in CANARIES if number in row
    ]
    assert leaks == []  # ... no full number, routing number or KYC id number is
    assert_no_full_numbers(stored)
