"""The README's sandbox demo, as a user runs it: no configuration, demo keys, and statuses that
move on their own — seen through GraphQL subscriptions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.settings import ProviderSettings, Settings
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web import create_app
from tests.realtime.support import kyc, run, subscribed
from tests.support.live_server import live_server

COMMET = "pgw_demo_commet"
PAYGENTIC = "pgw_demo_paygentic"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(name: str) -> str:
    """A GraphQL example of the README, by its ``# demo: name`` tag: run as written."""
    match = re.search(rf"```graphql\n# demo: {name}\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no '{name}' example"
    return match.group(1)


PAYOUT_ACCOUNT_CHANGES = readme_block("payout-account-subscription")
PAYOUT_CHANGES = readme_block("payout-subscription")
REQUEST_PAYOUT = readme_block("request-payout")
PAYGENTIC_KYC = {
    **kyc("000987654321"),
    "businessType": "COMPANY",
    "individual": None,
    "company": {
        "name": "Acme Inc",
        "taxId": "12-3456789",
        "address": {"line1": "1 Main St", "city": "SF", "postalCode": "94105", "country": "US"},
        "representative": {"firstName": "Grace", "lastName": "Hopper"},
    },
}
VERIFY = """mutation($input: CompletePayoutVerificationInput!) {
  completePayoutVerification(input: $input) {
    __typename ... on CompletePayoutVerificationSuccess { payoutAccount { status } } } }"""


@pytest.fixture
def graphql_url(tmp_path: Path) -> Iterator[str]:
    # `payout-gateway serve` with no configuration, only with shorter delays for the test.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/demo.db",
        sandbox_status_delay_seconds=0.5,
        refresh_interval_seconds=0.2,
    )
    with live_server(create_app(settings)) as url:
        yield f"{url}/graphql"


async def test_paygentic_payout_account_is_verified_live(graphql_url: str) -> None:
    async with subscribed(
        graphql_url, PAYOUT_ACCOUNT_CHANGES, init_payload={"Authorization": f"Bearer {PAYGENTIC}"}
    ) as subscriber:
        verified = await run(graphql_url, PAYGENTIC, VERIFY, {"input": PAYGENTIC_KYC})
        assert (
            verified["completePayoutVerification"]["payoutAccount"]["status"]
            == "PENDING_VERIFICATION"
        )
        event = (await subscriber.next())["payoutAccountStatusChanged"]
    assert (event["fromStatus"], event["toStatus"]) == ("PENDING_VERIFICATION", "VERIFIED")
    assert event["source"] == "REFRESH"


async def test_commet_payout_is_paid_through_a_signed_webhook(graphql_url: str) -> None:
    verified = await run(graphql_url, COMMET, VERIFY, {"input": kyc()})
    assert (
        verified["completePayoutVerification"]["__typename"] == "CompletePayoutVerificationSuccess"
    )
    await asyncio.sleep(0.6)  # the simulator verifies the payout account after the delay
    async with subscribed(
        graphql_url, PAYOUT_CHANGES, init_payload={"Authorization": f"Bearer {COMMET}"}
    ) as subscriber:
        requested = (await run(graphql_url, COMMET, REQUEST_PAYOUT))["requestPayout"]
        assert requested["__typename"] == "RequestPayoutSuccess", requested
        assert requested["payout"]["status"] == "PENDING"
        event = (await subscriber.next())["payoutStatusChanged"]
    assert event["payoutId"] == requested["payout"]["id"]
    assert (event["fromStatus"], event["toStatus"], event["source"]) == (
        "PENDING",
        "PAID",
        "WEBHOOK",
    )
    listing = await run(graphql_url, COMMET, "{ payouts { edges { node { status } } } }")
    assert listing["payouts"]["edges"][0]["node"]["status"] == "PAID"
    # The README's audit trail query, as it is written there.
    audit = "{ statusChanges { objectType objectId fromStatus toStatus source at } }"
    trail = (await run(graphql_url, COMMET, audit))["statusChanges"]
    assert trail[0] == {
        "objectType": "PAYOUT",
        "objectId": requested["payout"]["id"],
        "fromStatus": "PENDING",
        "toStatus": "PAID",
        "source": "WEBHOOK",
        "at": event["at"],
    }


VERIFY_WITH_KEY = """mutation($input: CompletePayoutVerificationInput!, $key: String) {
  completePayoutVerification(input: $input, idempotencyKey: $key) {
    __typename
    ... on CompletePayoutVerificationSuccess { alreadyExisted payoutAccount { status } }
  }
}"""


async def test_commet_payout_account_is_verified_when_the_verification_is_sent_again(
    graphql_url: str,
) -> None:
    # As the README's sandbox mode says: Commet reports the verification by no webhook and has
    # no read endpoint, so the gateway's record moves only when the mutation is sent again.
    first = await run(graphql_url, COMMET, VERIFY_WITH_KEY, {"input": kyc(), "key": "onboard-1"})
    assert first["completePayoutVerification"]["payoutAccount"]["status"] == (
        "PENDING_VERIFICATION"
    )
    await asyncio.sleep(1.0)  # the simulator verifies the payout account after the delay
    stored = await run(graphql_url, COMMET, "{ payoutAccount { status } }")
    assert stored["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    again = await run(graphql_url, COMMET, VERIFY_WITH_KEY, {"input": kyc(), "key": "onboard-2"})
    assert again["completePayoutVerification"] == {
        "__typename": "CompletePayoutVerificationSuccess",
        "alreadyExisted": True,
        "payoutAccount": {"status": "VERIFIED"},
    }
    stored = await run(graphql_url, COMMET, "{ payoutAccount { status } }")
    assert stored["payoutAccount"]["status"] == "VERIFIED"


SLOW_ADD = """mutation($key: String) {
  addBankAccount(
    idempotencyKey: $key
    input: { bankAccount: { accountNumber: "000123123123", holderName: "Acme Inc",
                            routingNumber: "021000021" } }
  ) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { last4 } }
    ... on ProviderUnavailableError { code outcomeUnknown }
  }
}"""


async def test_a_simulator_slower_than_the_read_timeout_times_out_and_is_reconciled(
    tmp_path: Path,
) -> None:
    # Sandbox mode calls the simulators in-process; a deployment's read timeout must still
    # apply there, and what the simulator went on to do must be found by the retry.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/slow.db",
        paygentic=ProviderSettings(read_timeout=0.2),
        refresh_interval_seconds=0,
    )
    with live_server(create_app(settings)) as url:
        simulator = f"{url}/sandbox/paygentic"
        fault = {"kind": "latency", "latencyMs": 600, "count": 1}
        fault["operation"] = "POST /v0/externalAccounts"
        async with httpx.AsyncClient() as control:
            (await control.post(f"{simulator}/_sandbox/faults", json=fault)).raise_for_status()

            first = await run(f"{url}/graphql", PAYGENTIC, SLOW_ADD, {"key": "slow"})
            assert first["addBankAccount"] == {
                "__typename": "ProviderUnavailableError",
                "code": "PROVIDER_TIMEOUT",
                "outcomeUnknown": True,
            }

            async def created() -> int:
                listed = await control.get(
                    f"{simulator}/v0/externalAccounts",
                    params={"organizationId": "org_demogateway"},
                    headers={"Authorization": "Bearer pgx_demo_paygentic_token"},
                )
                return int(listed.json()["pagination"]["total"])

            # The simulator finishes the create it was sent, after the caller gave up.
            deadline = asyncio.get_running_loop().time() + 5
            while await created() == 0:
                assert asyncio.get_running_loop().time() < deadline, "never created"
                await asyncio.sleep(0.05)

            again = await run(f"{url}/graphql", PAYGENTIC, SLOW_ADD, {"key": "slow"})
            assert again["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
            assert await created() == 1


async def accepted(url: str, key: str) -> bool:
    """Whether the key is taken (a refused one is answered UNAUTHENTICATED)."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{url}/graphql",
            json={"query": "{ payoutAccount { status } }"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert answer.status_code == 200, answer.text
    codes = {e["extensions"]["code"] for e in answer.json().get("errors", [])}
    assert codes <= {"UNAUTHENTICATED"}, answer.text
    return not codes


async def test_a_demo_key_stops_working_once_its_provider_is_a_real_one(tmp_path: Path) -> None:
    # The README prints the demo keys: a database that served sandbox mode keeps them, and
    # must not keep them working once the gateway talks to a real provider with it.
    database_url = f"sqlite:///{tmp_path}/gateway.db"
    with live_server(create_app(Settings(database_url=database_url))) as url:
        assert await accepted(url, COMMET)

    with live_server(create_commet_sandbox()) as commet_url:
        real_commet = ProviderSettings(base_url=f"{commet_url}/api/v1")
        settings = Settings(database_url=database_url, commet=real_commet)
        with live_server(create_app(settings)) as url:
            assert not await accepted(url, COMMET)
            assert await accepted(url, PAYGENTIC)  # still simulated

    # Sandbox mode again on the same file: the demo works as the README says.
    with live_server(create_app(Settings(database_url=database_url))) as url:
        assert await accepted(url, COMMET)


async def test_a_demo_key_its_operator_revoked_stays_revoked_in_sandbox_mode(
    tmp_path: Path,
) -> None:
    # Sandbox mode restores a demo key that start-up retired (its provider was a real one for
    # a while), not one revoked on purpose (``org revoke-key``: the sandbox was reachable
    # from outside, say, and the README prints the key).
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    await store.create_schema()
    try:
        tenancy = Tenancy(store, SecretStr("pepper"))
        (org,) = await tenancy.ensure_demo_organizations({Provider.COMMET})
        async with store.session(write=False) as session:
            (key,) = await session.list_api_keys(org.id)
        await tenancy.revoke_api_key(key.id)

        await tenancy.ensure_demo_organizations({Provider.COMMET})
        assert await tenancy.authenticate(COMMET) is None

        # Retired at a start with a real Commet, then sandbox mode again: restored.
        other = Tenancy(store, SecretStr("another pepper"))
        await other.ensure_demo_organizations({Provider.COMMET})
        assert await other.authenticate(COMMET) is not None
        assert await other.retire_demo_keys(keep=set()) == ["demo-commet"]
        assert await other.authenticate(COMMET) is None
        await other.ensure_demo_organizations({Provider.COMMET})
        assert await other.authenticate(COMMET) is not None
    finally:
        await store.dispose()
