"""Sandbox mode's wiring: simulators that call back into this app, and the demo's webhooks."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from payout_gateway.domain.enums import Provider
from payout_gateway.store import Store
from payout_gateway.tenancy import DEMO_ORGANIZATIONS

logger = logging.getLogger("payout_gateway")

SANDBOX_HOST = "http://sandbox.internal"
GATEWAY_HOST = "http://gateway.internal"
# Fixed like the demo API keys: the demo is for trying things, and its secrets are documented.
DEMO_COMMET_WEBHOOK_SECRET = "whsec_demoCommetGatewaySecret0001"
DEMO_STARTING_BALANCE = 1_000_000  # 10,000.00 USD, so demo payouts go through


class LateBoundApp:
    """The gateway app, for simulators built before it exists (they deliver webhooks to it)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            raise RuntimeError("the gateway app is not bound yet")
        await self.app(scope, receive, send)


async def connect_demo_webhooks(store: Store, sandboxes: Mapping[Provider, FastAPI]) -> None:
    """Point the Commet simulator's webhooks for the demo organization at this gateway, and
    record the secret and Commet's id of the organization (how deliveries are matched)."""
    sandbox = sandboxes.get(Provider.COMMET)
    if sandbox is None:
        return
    for demo in DEMO_ORGANIZATIONS:
        if demo.provider is not Provider.COMMET:
            continue
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox), base_url=SANDBOX_HOST
        ) as client:
            response = await client.post(
                "/_sandbox/webhooks",
                json={
                    "url": f"{GATEWAY_HOST}/webhooks/commet",
                    "secret": DEMO_COMMET_WEBHOOK_SECRET,
                },
                headers={"x-api-key": demo.credentials.api_key.get_secret_value()},
            )
        response.raise_for_status()
        commet_org_id = response.json()["data"]["organizationId"]
        async with store.session() as session:
            org = await session.organization_by_name(demo.name)
            if org is None:
                continue
            await session.set_provider_organization_id(org.id, commet_org_id)
            await session.set_webhook_secret(org.id, DEMO_COMMET_WEBHOOK_SECRET)
        logger.info("demo Commet webhooks connected", extra={"organization": demo.name})
