"""``create_app(settings)``: the one composition root. Builds every client in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import text

from payout_gateway.domain.enums import Provider
from payout_gateway.events.broker import EventBroker
from payout_gateway.events.factory import build_broker
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.graphql.context import GatewayContext, PagingLimits
from payout_gateway.graphql.schema import build_schema
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.registry import REGISTRY
from payout_gateway.sandbox.registry import SANDBOXES
from payout_gateway.service import PayoutService
from payout_gateway.settings import Settings
from payout_gateway.store import Store, normalize_database_url
from payout_gateway.tenancy import Tenancy
from payout_gateway.web.access_log import AccessLogMiddleware
from payout_gateway.web.graphql_router import GatewayGraphQLRouter
from payout_gateway.web.limits import BodyLimitMiddleware
from payout_gateway.web.webhooks import router as webhook_router

logger = logging.getLogger("payout_gateway")

SANDBOX_HOST = "http://sandbox.internal"


@dataclass(frozen=True, slots=True)
class Gateway:
    """What the lifespan built; request handlers reach it through ``app.state.gateway``."""

    settings: Settings
    store: Store
    service: PayoutService
    tenancy: Tenancy
    providers: Mapping[Provider, PayoutProvider]
    broker: EventBroker
    pipeline: StatusPipeline


def _ensure_sqlite_directory(database_url: str) -> None:
    url = normalize_database_url(database_url)
    if url.startswith("sqlite+aiosqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite+aiosqlite:///")).expanduser().parent.mkdir(
            parents=True, exist_ok=True
        )


def create_app(
    settings: Settings | None = None,
    *,
    providers: Mapping[Provider, PayoutProvider] | None = None,
) -> FastAPI:
    """Build the gateway. ``providers`` replaces the adapters (tests pass fakes here)."""
    settings = settings or Settings()
    sandboxes = {
        provider: SANDBOXES[provider]()
        for provider, provider_settings in (
            (Provider.COMMET, settings.commet),
            (Provider.PAYGENTIC, settings.paygentic),
        )
        if provider_settings.base_url is None
    }

    def build_providers() -> dict[Provider, PayoutProvider]:
        built: dict[Provider, PayoutProvider] = {}
        for provider, entry in REGISTRY.items():
            provider_settings = (
                settings.commet if provider is Provider.COMMET else settings.paygentic
            )
            transport: httpx.AsyncBaseTransport | None = None
            base_url = provider_settings.base_url
            if base_url is None:
                # Sandbox mode: the simulator is called in-process, no socket in between.
                transport = httpx.ASGITransport(app=sandboxes[provider])
                base_url = f"{SANDBOX_HOST}{entry.api_root}"
            built[provider] = entry.build(base_url, provider_settings.http_policy(), transport)
        return built

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _ensure_sqlite_directory(settings.database_url)
        store = Store.from_url(settings.database_url)
        await store.create_schema()
        adapters = dict(providers) if providers is not None else build_providers()
        broker = await build_broker(settings)
        pipeline = StatusPipeline(store, broker)
        service = PayoutService(store, adapters, pipeline=pipeline)
        tenancy = Tenancy(store, settings.api_key_pepper)
        if settings.demo_enabled:
            await tenancy.ensure_demo_organizations()
        app.state.gateway = Gateway(settings, store, service, tenancy, adapters, broker, pipeline)
        try:
            yield
        finally:
            await broker.aclose()
            if providers is None:
                for adapter in adapters.values():
                    await adapter.aclose()
            await store.dispose()

    app = FastAPI(
        title="payout-gateway",
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
        openapi_url=None if settings.is_production else "/openapi.json",
    )

    async def context(request: Request) -> GatewayContext:
        gateway: Gateway = request.app.state.gateway
        organization = None
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            organization = await gateway.tenancy.authenticate(credential.strip())
        return GatewayContext(
            service=gateway.service,
            organization=organization,
            paging=PagingLimits(settings.default_page_size, settings.max_page_size),
        )

    schema = build_schema(
        introspection=settings.introspection_enabled,
        field_suggestions=not settings.is_production,
        max_depth=settings.max_query_depth,
        max_tokens=settings.max_query_tokens,
        max_aliases=settings.max_aliases,
    )
    graphql_app = GatewayGraphQLRouter(
        schema,
        context_getter=context,
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        allow_queries_via_get=False,
    )
    app.include_router(graphql_app, prefix="/graphql")
    app.include_router(webhook_router, prefix="/webhooks")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        gateway: Gateway = request.app.state.gateway
        try:
            async with gateway.store.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any database failure means "not ready", never a 500
            logger.warning("readiness check failed", exc_info=True)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    for provider, sandbox in sandboxes.items():
        app.mount(f"/sandbox/{provider.value.lower()}", sandbox)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    return app
