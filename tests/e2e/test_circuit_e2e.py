"""End to end, over real sockets: a failing provider's circuit opens, fails fast without calling
it, lets one probe through and closes; the other provider is served all along."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from payout_gateway.domain.enums import HolderType, Provider
from tests.e2e.test_gateway_e2e import VERIFY, World, bank, kyc, serving
from tests.support.gateway import SeededOrg

ORGS = (
    SeededOrg("c-circuit", Provider.COMMET, "ck_live_e2eCircuit001"),
    SeededOrg(
        "p-circuit",
        Provider.PAYGENTIC,
        "pgx_e2e_circuit_0001",
        provider_org_id="org_e2eCircuit",
        bank_name="E2E Bank",
        holder_type=HolderType.INDIVIDUAL,
    ),
)
# Long enough for the next add to come within it on a slow machine, short for the suite.
RESET_SECONDS = 2.5
ADD = """
mutation Add($input: AddBankAccountInput!) {
  addBankAccount(input: $input) {
    __typename
    ... on UserError { message code retryable }
    ... on ProviderUnavailableError { outcomeUnknown retryAfterSeconds }
  }
}
"""
CREATE = "POST /payouts/bank-accounts"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serving(
        tmp_path_factory.mktemp("circuit"), ORGS, circuit_reset_seconds=RESET_SECONDS
    ) as world:
        yield world


async def add(world: World, org: str, number: str) -> dict[str, object]:
    answer = await world.run(org, ADD, {"input": {"bankAccount": bank(number)}})
    return dict(answer["addBankAccount"])


async def test_a_failing_provider_is_cut_off_probed_and_taken_back(world: World) -> None:
    verified = await world.run("c-circuit", VERIFY, {"input": kyc("000700000000")})
    assert verified["completePayoutVerification"]["__typename"] == (
        "CompletePayoutVerificationSuccess"
    )
    verified = await world.run("p-circuit", VERIFY, {"input": kyc("000700000001")})
    assert verified["completePayoutVerification"]["__typename"] == (
        "CompletePayoutVerificationSuccess"
    )

    # Adds meet a Commet that fails (503): two attempts each (one retry), until five failed
    # requests in a row open the circuit during the third add, which makes no second attempt.
    injected = httpx.post(
        f"{world.commet_url}/_sandbox/faults",
        json={"kind": "status", "status": 503, "operation": CREATE, "count": 5},
        headers={"x-api-key": ORGS[0].provider_api_key},
    )
    assert injected.status_code == 200, injected.text
    before = world.commet_calls(CREATE)
    for number in range(3):
        failed = await add(world, "c-circuit", f"00070000010{number}")
        assert (failed["__typename"], failed["code"]) == (
            "ProviderUnavailableError",
            "PROVIDER_UNAVAILABLE",
        )
    opened = time.monotonic()
    assert world.commet_calls(CREATE) == before + 5

    # The next fails at once: nothing reaches Commet, and the caller is told to come back.
    fast = await add(world, "c-circuit", "000700000200")
    assert fast["__typename"] == "ProviderUnavailableError"
    assert (fast["code"], fast["retryable"], fast["outcomeUnknown"]) == (
        "PROVIDER_CIRCUIT_OPEN",
        True,
        False,
    )
    # What is left of the period, in whole seconds rounded up.
    assert 1 <= fast["retryAfterSeconds"] <= 3
    assert "Nothing was sent" in str(fast["message"])
    assert world.commet_calls(CREATE) == before + 5

    # Paygentic's calls go on meanwhile.
    served = await add(world, "p-circuit", "000700000300")
    assert served["__typename"] == "AddBankAccountSuccess"

    # Once the period is over, one call probes Commet (working again: the faults are spent),
    # and its answer closes the circuit.
    await asyncio.sleep(max(0.0, opened + RESET_SECONDS + 0.1 - time.monotonic()))
    probe = await add(world, "c-circuit", "000700000400")
    assert probe["__typename"] == "AddBankAccountSuccess"
    assert world.commet_calls(CREATE) == before + 6
    after = await asyncio.gather(*(add(world, "c-circuit", f"00070000050{n}") for n in range(3)))
    assert [answer["__typename"] for answer in after] == ["AddBankAccountSuccess"] * 3
    assert world.commet_calls(CREATE) == before + 9
