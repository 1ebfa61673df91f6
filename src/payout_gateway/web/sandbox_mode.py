"""Sandbox mode's wiring: simulators that call back into this app, and the demo's webhooks."""

from __future__ import annotations

import asyncio
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


class InProcessProviderTransport(httpx.ASGITransport):
    """httpx's ASGI transport to an in-process simulator, with the provider's read timeout as
    a socket would have it. httpx's own ASGI transport has no timeouts: a simulator slowed past
    the read timeout (a latency fault) was simply waited for, so sandbox mode never showed the
    timeout a deployment gets. Past the read timeout the caller gets ``httpx.ReadTimeout``
    while the simulator goes on with what it was sent, as a provider does: the outcome is then
    unknown to the caller, which is what reconciliation is for."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app=app)
        # Answers nobody waits for any more, kept until done (the loop keeps only weak ones).
        self._abandoned: set[asyncio.Task[httpx.Response]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        read_timeout = request.extensions.get("timeout", {}).get("read")
        if read_timeout is None:
            return await super().handle_async_request(request)
        answer = asyncio.ensure_future(super().handle_async_request(request))
        try:
            return await asyncio.wait_for(asyncio.shield(answer), read_timeout)
        except TimeoutError:
            self._abandoned.add(answer)
            answer.add_done_callback(self._forget)
            raise httpx.ReadTimeout(
                f"the simulator did not answer within {read_timeout:g} s", request=request
            ) from None
        except asyncio.CancelledError:
            answer.cancel()
            raise

    def _forget(self, answer: asyncio.Task[httpx.Response]) -> None:
        self._abandoned.discard(answer)
        if not answer.cancelled() and answer.exception() is not None:
            logger.warning(
                "an in-process simulator failed after its caller stopped waiting: %s",
                type(answer.exception()).__name__,
            )


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
