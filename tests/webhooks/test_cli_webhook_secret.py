"""``payout-gateway org set-webhook-secret``: a hidden prompt, optional provider org id, checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from payout_gateway.cli import main
from payout_gateway.domain.models import Organization
from payout_gateway.store import Store
from tests.webhooks.support import SVIX_SECRET


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("PAYOUT_GATEWAY_API_KEY_PEPPER", "cli-pepper")
    monkeypatch.delenv("PAYOUT_GATEWAY_WEBHOOK_SECRET", raising=False)
    return url


def create(name: str, provider: str, *extra: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "org",
            "create",
            "--name",
            name,
            "--provider",
            provider,
            "--country",
            "US",
            "--currency",
            "USD",
            "--provider-api-key",
            "ck_live_abcdefgh12",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output


def stored(url: str, name: str) -> Organization:
    async def read() -> Organization:
        store = Store.from_url(url)
        try:
            async with store.session() as session:
                org = await session.organization_by_name(name)
        finally:
            await store.dispose()
        assert org is not None
        return org

    return asyncio.run(read())


def test_the_secret_is_prompted_for_hidden_and_stored_with_the_provider_org_id(env: str) -> None:
    create("acme", "commet")
    result = CliRunner().invoke(
        main,
        ["org", "set-webhook-secret", "acme", "--provider-org-id", "org_commet123"],
        input="whsec_commetSecret0001\n",
    )
    assert result.exit_code == 0, result.output
    assert "whsec_commetSecret0001" not in result.output
    assert "webhooks naming org_commet123" in result.output
    org = stored(env, "acme")
    assert org.webhook_secret is not None
    assert org.webhook_secret.get_secret_value() == "whsec_commetSecret0001"
    assert org.credentials.provider_organization_id == "org_commet123"


def test_without_a_provider_org_id_a_commet_org_gets_a_note(env: str) -> None:
    create("acme", "commet")
    result = CliRunner().invoke(
        main, ["org", "set-webhook-secret", "acme"], input="whsec_commetSecret0001\n"
    )
    assert result.exit_code == 0, result.output
    assert "--provider-org-id" in result.stderr
    assert stored(env, "acme").credentials.provider_organization_id is None


def test_the_secret_may_come_from_the_environment(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create("pay", "paygentic", "--provider-org-id", "org_pay")
    monkeypatch.setenv("PAYOUT_GATEWAY_WEBHOOK_SECRET", SVIX_SECRET)
    result = CliRunner().invoke(main, ["org", "set-webhook-secret", "pay"])
    assert result.exit_code == 0, result.output
    org = stored(env, "pay")
    assert org.webhook_secret is not None
    assert org.webhook_secret.get_secret_value() == SVIX_SECRET
    assert org.credentials.provider_organization_id == "org_pay"  # unchanged


def test_a_paygentic_organization_id_paygentic_refuses_is_refused(env: str) -> None:
    # The adapter names this id in every Paygentic request (paygentic.md: ^org_[a-zA-Z0-9]+$).
    create("pay", "paygentic", "--provider-org-id", "org_pay")
    result = CliRunner().invoke(
        main,
        ["org", "set-webhook-secret", "pay", "--provider-org-id", "acme-inc"],
        input=f"{SVIX_SECRET}\n",
    )
    assert result.exit_code == 2, result.output
    assert "org_ followed by letters and digits" in result.output
    org = stored(env, "pay")
    assert org.credentials.provider_organization_id == "org_pay"
    assert org.webhook_secret is None


def test_a_paygentic_secret_the_verifier_cannot_use_is_refused(env: str) -> None:
    create("pay", "paygentic", "--provider-org-id", "org_pay")
    result = CliRunner().invoke(main, ["org", "set-webhook-secret", "pay"], input="whsec_!!!!\n")
    assert result.exit_code == 2
    assert "whsec_" in result.output
    assert stored(env, "pay").webhook_secret is None


@pytest.mark.parametrize(
    ("args", "secret", "code"),
    [
        (["nobody"], "whsec_x", 1),
        (["acme"], "   ", 2),
        (["acme", "--provider-org-id", "org with spaces"], "whsec_x", 2),
        (["acme", "--provider-org-id", "o" * 101], "whsec_x", 2),
    ],
)
def test_bad_input_is_a_clear_error(env: str, args: list[str], secret: str, code: int) -> None:
    create("acme", "commet")
    result = CliRunner().invoke(main, ["org", "set-webhook-secret", *args, "--secret", secret])
    assert result.exit_code == code, result.output
    assert stored(env, "acme").webhook_secret is None
