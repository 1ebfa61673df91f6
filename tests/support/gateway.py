"""Runs the real gateway app over a loopback socket with seeded organizations and keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.ports import PayoutProvider
from payout_gateway.settings import ProviderSettings, Settings
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web import create_app
from payout_gateway.web.app import Gateway
from tests.support.live_server import live_server

PEPPER = SecretStr("test-pepper")


@dataclass(frozen=True)
class SeededOrg:
    name: str
    provider: Provider
    provider_api_key: str
    provider_org_id: str | None = None
    bank_name: str | None = None
    holder_type: HolderType | None = None
    # The secret its provider's webhooks are signed with (Commet or Svix ``whsec_…``).
    webhook_secret: str | None = None


DEFAULT_ORGS = (
    SeededOrg("commet-a", Provider.COMMET, "ck_live_commetA0000001"),
    SeededOrg("commet-b", Provider.COMMET, "ck_live_commetB0000002"),
    SeededOrg(
        "paygentic-a",
        Provider.PAYGENTIC,
        "pgx_token_paygenticA",
        provider_org_id="org_paygenticA",
        bank_name="Test Bank",
        holder_type=HolderType.INDIVIDUAL,
    ),
)


@dataclass(frozen=True)
class RunningGateway:
    url: str
    app: FastAPI
    keys: Mapping[str, str]

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def state(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    def headers(self, org: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[org]}"}


def seed_organizations(database_url: str, orgs: tuple[SeededOrg, ...]) -> dict[str, str]:
    async def seed() -> dict[str, str]:
        store = Store.from_url(database_url)
        await store.create_schema()
        tenancy = Tenancy(store, PEPPER)
        keys = {}
        for seeded in orgs:
            org = await tenancy.create_organization(
                name=seeded.name,
                provider=seeded.provider,
                credentials=ProviderCredentials(
                    api_key=SecretStr(seeded.provider_api_key),
                    provider_organization_id=seeded.provider_org_id,
                    payout_source_id="src_test" if seeded.provider_org_id else None,
                ),
                profile=OrganizationProfile(
                    country="US",
                    currency="USD",
                    bank_name=seeded.bank_name,
                    holder_type=seeded.holder_type,
                ),
            )
            if seeded.webhook_secret is not None:
                async with store.session() as session:
                    await session.set_webhook_secret(org.id, seeded.webhook_secret)
            _, keys[seeded.name] = await tenancy.issue_api_key(org.id)
        await store.dispose()
        return keys

    return asyncio.run(seed())


@contextmanager
def running_gateway(
    tmp_path: Path,
    *,
    providers: Mapping[Provider, PayoutProvider] | None = None,
    commet_url: str | None = "http://commet.invalid/api/v1",
    paygentic_url: str | None = "http://paygentic.invalid",
    orgs: tuple[SeededOrg, ...] = DEFAULT_ORGS,
    read_timeout: float = 10.0,
    circuit_reset_seconds: float = 30.0,
    database_url: str | None = None,
    **settings: Any,
) -> Iterator[RunningGateway]:
    """The gateway's app served on a free port, its organizations seeded in ``database_url``
    (a SQLite file in ``tmp_path`` by default)."""
    database_url = database_url or f"sqlite:///{tmp_path}/gateway.db"
    keys = seed_organizations(database_url, orgs)
    policy = {
        "max_retries": 1,
        "read_timeout": read_timeout,
        "circuit_reset_seconds": circuit_reset_seconds,
    }
    app = create_app(
        Settings(
            database_url=database_url,
            commet=ProviderSettings(base_url=commet_url, **policy),
            paygentic=ProviderSettings(base_url=paygentic_url, **policy),
            api_key_pepper=PEPPER,
            demo_organizations=False,
            **settings,
        ),
        providers=providers,
    )
    with live_server(app) as url:
        yield RunningGateway(url=url, app=app, keys=keys)
