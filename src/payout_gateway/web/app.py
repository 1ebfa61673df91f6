"""``create_app(settings)``: the one composition root. Builds every client in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import SecretsUnreadableError, StoreUnavailableError
from payout_gateway.domain.models import Organization
from payout_gateway.events.broker import EventBroker
from payout_gateway.events.factory import build_broker
from payout_gateway.events.outbox import StatusOutbox
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.events.redis_broker import RedisBroker
from payout_gateway.events.refresh import StatusRefresher
from payout_gateway.graphql.context import GatewayContext, PagingLimits
from payout_gateway.graphql.safety import bearer_credential
from payout_gateway.graphql.schema import build_schema
from payout_gateway.idempotency import IdempotencyKeys, purge_expired_forever
from payout_gateway.jwt_tokens import JwksKeys, JwtVerifier
from payout_gateway.metrics import exposition
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.registry import REGISTRY
from payout_gateway.sandbox.registry import SANDBOXES, SandboxOptions
from payout_gateway.service import PayoutService, utcnow
from payout_gateway.settings import JwtSettings, Settings
from payout_gateway.store import Store, ensure_sqlite_directory
from payout_gateway.store.migrate import upgrade as upgrade_schema
from payout_gateway.store.secrets import SecretsKeyError
from payout_gateway.tenancy import Tenancy
from payout_gateway.web.access_log import AccessLogMiddleware
from payout_gateway.web.cors import GatewayCORSMiddleware
from payout_gateway.web.gc_tuning import tune_cycle_collector
from payout_gateway.web.graphql_router import GatewayGraphQL
from payout_gateway.web.limits import BodyLimitMiddleware
from payout_gateway.web.readiness import Readiness
from payout_gateway.web.sandbox_mode import (
    DEMO_STARTING_BALANCE,
    SANDBOX_HOST,
    InProcessProviderTransport,
    LateBoundApp,
    connect_demo_webhooks,
)
from payout_gateway.web.webhooks import router as webhook_router

logger = logging.getLogger("payout_gateway")

# How often keys past their retention are deleted (they are ignored as soon as they expire).
IDEMPOTENCY_PURGE_SECONDS = 600.0


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
    readiness: Readiness


class GatewayApp(FastAPI):
    """FastAPI, except that an HTTP request to the GraphQL endpoint goes straight through the
    gateway's own middleware to the GraphQL app.

    FastAPI would pass it through about ten ASGI layers first (its error, telemetry, body-limit,
    exception and exit-stack middleware, the router, the route), each a coroutine frame on the
    way in and a wrapped ``send`` on the way out, for nothing the endpoint uses: Strawberry
    answers its own errors, and an exception it raises still reaches the server, which logs
    it and answers 500 (what Starlette's error middleware would do). Everything else,
    WebSocket upgrades to the same path included, takes FastAPI's way."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._graphql_path: str | None = None
        self._graphql_http: ASGIApp | None = None

    def serve_graphql_http(self, path: str, app: ASGIApp, middleware: Sequence[Middleware]) -> None:
        """HTTP requests to ``path`` go to ``app`` wrapped in ``middleware`` (outermost first,
        as ``FastAPI(middleware=...)`` takes it, which every other request passes through)."""
        for cls, args, options in reversed(middleware):
            app = cls(app, *args, **options)
        self._graphql_path = path
        self._graphql_http = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._graphql_http is not None
            and scope["type"] == "http"
            and scope["path"] == self._graphql_path
            and not scope.get("root_path")
        ):
            scope["app"] = self  # what Request.app reads, as Starlette sets it
            await self._graphql_http(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def jwt_verifier(settings: JwtSettings) -> JwtVerifier | None:
    """Frontends' JWTs as configured; None while they are off."""
    if not settings.enabled:
        return None
    assert settings.audience is not None  # JwtSettings requires it once on
    return JwtVerifier(
        audience=settings.audience,
        issuer=settings.issuer,
        secret=settings.secret.get_secret_value() if settings.secret is not None else None,
        jwks=JwksKeys(settings.jwks_url) if settings.jwks_url is not None else None,
        organization_claim=settings.organization_claim,
    )


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(
    settings: Settings | None = None,
    *,
    providers: Mapping[Provider, PayoutProvider] | None = None,
    serving: bool = False,
) -> FastAPI:
    """Build the gateway. ``providers`` replaces the adapters (tests pass fakes here).
    ``serving``: the app owns its process (``payout-gateway serve``), whose cycle collector
    it tunes once started."""
    settings = settings or Settings()
    # Sandbox mode: simulators are built first and deliver their webhooks to this very app.
    this_app = LateBoundApp()
    sandbox_options = SandboxOptions(
        status_delay=settings.sandbox_status_delay_seconds or None,
        webhook_transport=httpx.ASGITransport(app=this_app),
        starting_balance=DEMO_STARTING_BALANCE if settings.demo_enabled else 0,
    )
    sandboxes = {
        provider: SANDBOXES[provider](sandbox_options)
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
                transport = InProcessProviderTransport(sandboxes[provider])
                base_url = f"{SANDBOX_HOST}{entry.api_root}"
            built[provider] = entry.build(base_url, provider_settings.http_policy(), transport)
        return built

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_sqlite_directory(settings.database_url)
        # Schema to the newest migration first; replicas starting together take turns.
        await upgrade_schema(settings.database_url)
        # Each part is closed by the stack, the last opened first: at shutdown, and also when
        # a later step of the start-up fails (Redis's tasks, pools and sessions left open).
        async with contextlib.AsyncExitStack() as opened:
            store = Store.from_url(
                settings.database_url,
                secrets=settings.secret_codec(),
                timeout_seconds=settings.database_timeout_seconds,
            )
            opened.push_async_callback(store.dispose)
            if settings.is_production and not store.secrets.seals:
                logger.warning(
                    "provider credentials and webhook secrets are stored as written: set "
                    "PAYOUT_GATEWAY_SECRETS_KEYS to seal them (`payout-gateway secrets-key`)"
                )
            adapters = dict(providers) if providers is not None else build_providers()
            if providers is None:
                for adapter in adapters.values():
                    opened.push_async_callback(adapter.aclose)
            tenancy = Tenancy(store, settings.api_key_pepper, jwt=jwt_verifier(settings.jwt))
            opened.push_async_callback(tenancy.aclose)
            broker = await build_broker(settings)
            # Replicas publish through Redis: a move whose replica stops before Redis has it
            # is published from the outbox by another (events/outbox.py).
            outbox = (
                StatusOutbox(
                    store,
                    broker,
                    store.leadership("status-outbox"),
                    clock=utcnow,
                    grace_seconds=settings.status_outbox_grace_seconds,
                )
                if isinstance(broker, RedisBroker)
                else None
            )
            relay: asyncio.Task[None] | None = None

            async def close_fanout() -> None:
                await _cancelled(relay)
                await broker.aclose()
                if outbox is not None:
                    # What the broker wrote while closing is in the stream: not to be relayed.
                    with contextlib.suppress(StoreUnavailableError):
                        await outbox.forget_written()
                    await outbox.step_down()

            opened.push_async_callback(close_fanout)
            pipeline = StatusPipeline(store, broker, outbox=outbox is not None)
            keys = IdempotencyKeys(
                store,
                pepper=settings.api_key_pepper,
                retention=timedelta(hours=settings.idempotency_retention_hours),
                lease=timedelta(seconds=settings.idempotency_lease_seconds),
            )
            service = PayoutService(store, adapters, pipeline=pipeline, keys=keys)
            await tenancy.retire_demo_keys(keep=settings.demo_providers)
            if settings.demo_enabled:
                await tenancy.ensure_demo_organizations(settings.demo_providers)
                await connect_demo_webhooks(store, sandboxes)
            app.state.gateway = Gateway(
                settings,
                store,
                service,
                tenancy,
                adapters,
                broker,
                pipeline,
                Readiness(store, broker),
            )
            refresher = None
            # One process refreshes at a time, among workers and replicas sharing the database.
            refresh_leadership = store.leadership("status-refresh")
            if settings.refresh_interval_seconds > 0:
                refresher = asyncio.create_task(
                    StatusRefresher(
                        store,
                        adapters,
                        pipeline,
                        interval=settings.refresh_interval_seconds,
                        clock=utcnow,
                        leadership=refresh_leadership,
                    ).run_forever(),
                    name="status-refresh",
                )
            purger = asyncio.create_task(
                purge_expired_forever(keys, interval=IDEMPOTENCY_PURGE_SECONDS, clock=utcnow),
                name="idempotency-purge",
            )
            if outbox is not None:
                relay = asyncio.create_task(outbox.run_forever(), name="status-outbox")

            async def stop_background_work() -> None:
                await _cancelled(purger)
                await _cancelled(refresher)
                await refresh_leadership.step_down()

            opened.push_async_callback(stop_background_work)
            # The first step of the shutdown (the stack's last): all it then closes on the
            # database takes one database timeout at most, if the server stopped answering.
            opened.callback(store.begin_closing)
            if serving:
                tune_cycle_collector()
            yield

    # Outermost first; GraphQL requests pass through the same chain (GatewayApp).
    middleware = [
        Middleware(AccessLogMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]
    if settings.cors_origins:
        middleware.insert(
            0,
            Middleware(
                GatewayCORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                # A browser app may send its own request id, and read the one answered: what
                # the request's log lines are found by (README: Request ids).
                allow_headers=["authorization", "content-type", "x-request-id"],
                expose_headers=["x-request-id"],
            ),
        )
    app = GatewayApp(
        title="payout-gateway",
        middleware=middleware,
        # FastAPI's native OpenTelemetry stays off: its log records carry exception messages
        # and stack traces unredacted (they can hold request data), and while on it looks
        # the global providers up again on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
        openapi_url=None if settings.is_production else "/openapi.json",
    )
    this_app.app = app

    async def authenticate(connection: HTTPConnection, authorization: str) -> Organization | None:
        credential = bearer_credential(authorization)
        if credential is None:
            return None
        gateway: Gateway = connection.app.state.gateway
        try:
            return await gateway.tenancy.authenticate(credential)
        except SecretsKeyError as error:
            # The credential's organization is sealed with a key this gateway does not list
            # (the store has told the operator, once): refused as retryable, over HTTP and
            # the WebSocket alike, rather than a 500 and a traceback per request.
            raise SecretsUnreadableError() from error

    paging = PagingLimits(settings.default_page_size, settings.max_page_size)

    async def context(connection: HTTPConnection) -> GatewayContext:
        # An HTTP request, authenticated here; or a WebSocket, once per connection: there
        # ``on_ws_connect`` decides the organization at connection_init (from its payload, or
        # else this header), where a database outage can still be answered with a close code.
        gateway: Gateway = connection.app.state.gateway
        authorization = (
            connection.headers.get("authorization") if connection.scope["type"] == "http" else None
        )
        return GatewayContext(
            service=gateway.service,
            organization=await authenticate(connection, authorization) if authorization else None,
            paging=paging,
            broker=gateway.broker,
        )

    schema = build_schema(
        introspection=settings.introspection_enabled,
        field_suggestions=not settings.is_production,
        max_depth=settings.max_query_depth,
        max_tokens=settings.max_query_tokens,
        max_aliases=settings.max_aliases,
    )
    graphql_app = GatewayGraphQL(
        schema,
        context=context,
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        allow_queries_via_get=False,
        # The documented protocol only: the legacy graphql-ws one is a second attack surface.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        authenticate=authenticate,
    )
    # An ASGI app as the endpoint, for any method (Strawberry answers 405 itself) and for
    # the WebSocket upgrade. HTTP requests skip FastAPI's layers (GatewayApp); the route
    # stays for a request under a root path.
    app.router.routes.append(Route("/graphql", graphql_app, include_in_schema=False))
    app.router.routes.append(WebSocketRoute("/graphql", graphql_app))
    app.serve_graphql_http("/graphql", graphql_app, middleware)
    app.include_router(webhook_router, prefix="/webhooks")

    # The probes answer HEAD as they answer GET (RFC 9110 asks it of every GET resource): a
    # load balancer's health check may send either, and FastAPI's ``get`` refused it with 405.
    if settings.metrics:

        @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
        async def metrics(request: Request) -> Response:
            # Off the loop: with several workers it reads every worker's files.
            body, content_type = await asyncio.to_thread(
                exposition, request.headers.get("accept", "")
            )
            return Response(body, headers={"content-type": content_type})

    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        gateway: Gateway = request.app.state.gateway
        report = await gateway.readiness.ready()
        fanout = "ok" if report.fanout_ok else "degraded"
        if not report.ready:
            return JSONResponse({"status": "unavailable", "fanout": fanout}, status_code=503)
        return JSONResponse({"status": "ready", "fanout": fanout})

    for provider, sandbox in sandboxes.items():
        app.mount(f"/sandbox/{provider.value.lower()}", sandbox)

    return app
