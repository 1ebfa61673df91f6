"""The README's GraphQL examples, run in order against sandbox mode with the demo keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payout_gateway.domain.enums import Provider
from payout_gateway.settings import Settings
from payout_gateway.web import create_app
from tests.support.live_server import live_server

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```graphql\n# key: (\S+)\n(.*?)```", re.S)


def readme_examples() -> list[tuple[str, str]]:
    return [(key, body) for key, body in BLOCK.findall(README.read_text(encoding="utf-8"))]


@pytest.fixture
def sandbox_gateway(tmp_path: Path) -> Iterator[str]:
    # Exactly `payout-gateway serve` with no configuration, but with its own database file.
    # The demo's simulators move pending statuses after a delay; the examples show the state
    # right after the mutations, so the delay is pushed out of this test's way.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/readme.db", sandbox_status_delay_seconds=600
    )
    assert settings.sandbox_mode
    assert settings.demo_enabled
    with live_server(create_app(settings)) as url:
        yield url


def post(url: str, key: str, query: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_readme_has_examples_for_both_demo_organizations() -> None:
    keys = {key for key, _ in readme_examples()}
    assert keys == {"pgw_demo_commet", "pgw_demo_paygentic"}


def test_readme_examples_work_as_written(sandbox_gateway: str) -> None:
    results = [post(sandbox_gateway, key, query) for key, query in readme_examples()]
    commet_verify, commet_add, paygentic_verify, paygentic_incomplete, overview = results

    verified = commet_verify["completePayoutVerification"]
    assert verified["__typename"] == "CompletePayoutVerificationSuccess"
    assert verified["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    assert verified["bankAccount"]["last4"] == "6789"

    added = commet_add["addBankAccount"]
    assert added["__typename"] == "AddBankAccountSuccess"
    assert added["bankAccount"]["isDefault"] is True

    paygentic = paygentic_verify["completePayoutVerification"]
    assert paygentic["__typename"] == "CompletePayoutVerificationSuccess"
    assert paygentic["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    assert paygentic["bankAccount"]["status"] == "PENDING"

    incomplete = paygentic_incomplete["addBankAccount"]
    assert incomplete["__typename"] == "ValidationError"
    assert incomplete["field"] == ["input", "bankAccount", "routingNumber"]

    assert overview["organization"]["provider"] == "PAYGENTIC"
    assert overview["payoutAccount"]["status"] == "PENDING_VERIFICATION"
    assert len(overview["bankAccounts"]["edges"]) == 1

    # The curl example of the README.
    curl = post(
        sandbox_gateway,
        "pgw_demo_commet",
        "{ organization { name provider } payoutAccount { status } }",
    )
    assert curl["organization"] == {"name": "demo-commet", "provider": "COMMET"}


def test_demo_keys_survive_a_restart(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/restart.db")
    for _ in range(2):
        with live_server(create_app(settings)) as url:
            assert post(url, "pgw_demo_paygentic", "{ organization { name } }")["organization"]


def test_a_configured_provider_gets_no_demo_organization(tmp_path: Path) -> None:
    # Only Paygentic runs in-process here. A demo-commet organization would send its dummy
    # credential to the configured Commet (refused every time) behind the README's public key.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/half.db",
        commet={"base_url": "http://127.0.0.1:9/api/v1"},
    )
    assert settings.demo_providers == {Provider.PAYGENTIC}
    with live_server(create_app(settings)) as url:
        assert post(url, "pgw_demo_paygentic", "{ organization { name } }")["organization"]
        refused = httpx.post(
            f"{url}/graphql",
            json={"query": "{ organization { name } }"},
            headers={"Authorization": "Bearer pgw_demo_commet"},
        ).json()
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # Asked for explicitly, both exist whatever is configured.
    explicit = Settings(
        database_url=f"sqlite:///{tmp_path}/half.db",
        commet={"base_url": "http://127.0.0.1:9/api/v1"},
        demo_organizations=True,
    )
    assert explicit.demo_providers == set(Provider)
