"""The Commet sandbox app: Commet's payout API (see docs/providers/commet.md) and its controls.

``create_commet_sandbox()`` answers a FastAPI app with its own in-memory state
(``app.state.sandbox``, a ``SandboxState``). Public routes live under ``/api/v1`` exactly as on
``https://commet.co/api/v1``; the app builds no absolute self-URLs, so it also works mounted under
a prefix such as ``/sandbox/commet``.

Order of checks on a public route: count the request -> API key (401) -> sandbox key (403) ->
restricted key (403) -> ``commet-version`` (400) -> injected fault -> Idempotency-Key (400, 409,
replay) -> retired endpoint (410) -> JSON (400) -> fields (400) -> business rules -> answer.

Choices this sandbox makes where the contract is silent or inferred ([I]):

1. Keys: any key matching ``^(ck|rk)_(live|sandbox)_[A-Za-z0-9]{8,}$`` works with no set-up; each
   distinct key string is its own organization (``org_…``), created on first use. A missing or
   malformed key -> 401 ``unauthorized``.
2. A ``*_sandbox_*`` key on a payout route -> 403 ``payouts_not_available_in_sandbox``; this check
   comes first, so ``rk_sandbox_`` keys get it too. A restricted ``rk_live_`` key -> 403
   ``forbidden`` (authentication_error) on all three payout routes (they all write).
   ``livemode`` is true for ``_live_`` keys, hence on every payout-route success.
3. Control routes accept any well-formed key (sandbox and restricted ones too) and act on its
   organization; ``/_sandbox/requests`` is app-wide and needs no key.
4. Versions: releases are 2026-06-07, 2026-07-11, 2026-07-24 and 2026-08-27 (current). A
   requested date resolves to the newest release on or before it (so any later date gets the
   current one). A malformed date or one before 2026-06-07 -> 400 ``validation_error`` with
   ``param: "commet-version"``. Resolution: header, then the organization's pin (settable only
   through ``POST /_sandbox/organization``), then ``CommetSandboxConfig.default_version``.
   Every API answer echoes the version it was shaped by in a ``commet-version`` header (errors
   raised before resolution use the header's version if valid, else the default; ``doc_url``
   names the same version).
5. Verification answers: up to 2026-07-11 ``alreadyExists: true`` is sent only when the account
   already existed and is omitted on creation; from 2026-07-24 ``outcome: "created"`` carries
   ``businessType`` and ``country`` and ``outcome: "existing"`` does not (as in SDK 8.0.1); from
   2026-08-27 -> 410 ``endpoint_deprecated`` before the body is read.
6. Every successful POST answers 200.
7. Bodies: unknown keys are ignored; types are JSON's as JavaScript validators see them
   (``"1000"`` is not a number, ``1000.0`` is the integer 1000); ``null`` equals absent for
   optional fields; ``setDefault`` absent or null means false; required strings need at least
   one character. An empty or non-JSON body -> 400 ``invalid_json``; a non-object ->
   ``validation_error`` on field ``body``.
8. ``validation_error``: ``details`` lists every issue as ``{field, message}`` with the dotted
   camelCase path the client sent (``bank.accountNumber``); ``param`` is the first field and
   ``message`` summarises the first issue. Messages never repeat submitted values.
9. Verification fields: ``documentUrl`` must be https with a public host (the gateway's own
   rule, ``payout_gateway.domain.values.public_https_url``); ``businessUrl`` an absolute http(s)
   URL; phones E.164; ``dateOfBirth`` YYYY-MM-DD; ``ssnLast4`` 4 digits; ``address.country``
   upper-case alpha-2. Only the branch named by ``businessType`` is read (the other is
   ignored); a missing one -> ``validation_error`` on field ``individual`` / ``company``.
10. Kept data: the payout account (id, status, businessType, country) and, per bank account,
    holder name, last4, bank name and account type. KYC fields, full account numbers and
    routing numbers are dropped once validated; idempotency keeps a SHA-256 of the request.
11. Organizations start in ``US`` / ``usd`` with balance 0 (config ``default_country``,
    ``default_currency``, ``initial_available_amount``), changed through control routes. A
    payout account keeps the country it was created with; each bank account takes the
    organization's country and currency when it is added.
12. Bank accounts: ``id`` ``pba_…``, ``providerExternalAccountId`` ``ba_…`` (always set),
    ``bankName`` from a small table of test routing numbers (``operations.TEST_BANKS``) else
    null, ``last4`` = last four characters once spaces and hyphens are removed.
13. No payout account yet -> 404 ``not_found`` telling to complete payout verification first, on
    ``POST /payouts/bank-accounts`` and ``POST /payouts`` alike.
14. ``POST /payouts`` on an account that is not ``verified`` -> 409
    ``payout_account_not_verified`` (conflict_error), the message naming the status.
15. Amount above the available balance -> 400 ``insufficient_balance`` (billing_error, param
    ``amount``): Commet publishes no 402, so key on the code.
16. Fee: 0.25 % of the amount rounded up, at least 25 cents; ``netAmount = amount - fee``; the
    whole ``amount`` leaves the balance and comes back if the payout fails or is canceled. The
    payout's currency is the organization's; it goes to the default bank account.
17. Payouts move forward only (pending -> in_transit | paid | failed | canceled; in_transit ->
    paid | failed); anything else -> 409 ``invalid_status_transition``.
    ``providerTransferId`` (``tr_…``) appears when a payout goes in_transit or paid.
18. ``auto_verify_after_seconds`` is evaluated lazily on every read of the organization (API or
    control route), not by a timer: deterministic under the injected clock, and it keeps
    working when the app is mounted, where a sub-app's lifespan never runs. The delay counts
    from when the account last entered ``pending_verification``.
19. Idempotency-Key: scoped per organization; 1 to 255 characters else 400 ``validation_error``
    (``param: "Idempotency-Key"``); fingerprint = SHA-256 of method, path and canonical JSON
    (sorted keys; the raw bytes when not JSON); kept 24 h (config) from the first request.
    Stored (Stripe's rule): the result of every request that began executing, except 5xx and
    429. Not stored: auth, version, ``invalid_json``, ``validation_error`` and
    ``endpoint_deprecated`` refusals, so a corrected request may reuse its key. A replay
    answers the stored status and body byte for byte, the original ``commet-version``,
    ``idempotent-replayed: true`` and a fresh ``x-request-id``. A different request -> 409
    ``idempotency_key_mismatch`` (checked first); the first request still running -> 409
    ``idempotency_in_progress``.
20. Unknown routes and wrong methods -> 404 ``not_found`` (no 405); trailing slashes are not
    redirected. Every response carries ``x-request-id: req_<24 hex>``.
21. Faults (``POST /_sandbox/faults``) belong to the key's organization and are consumed in order
    by its next matching API requests that pass authentication and version checks.
    ``status``: by default answers before anything runs (``applied: false``); with
    ``applied: true`` the operation runs first. Codes default from the status (429
    ``rate_limited`` with ``Retry-After``, 5xx ``internal_error``; ``code`` overrides).
    ``latency``: sleeps after the Idempotency-Key is claimed, then runs normally.
    ``malformed``: runs the operation (``applied`` is always true) and answers 200 with an HTML
    page. ``unknown_status``: runs it and rewrites ``data.status`` of a 2xx answer. Faults change
    only the answer they hit: a stored idempotent result is always the real one.
22. Request counts: every request reaching one of the three API routes, before any check,
    replays and faulted ones included (``SandboxState.request_counts``).
23. Events: ``payout.created``/``payout.paid``/``payout.failed``/``payout.available`` accumulate
    in ``SandboxState.events`` (the outbox; ``GET /_sandbox/events`` shows them) whether or not
    an endpoint is set.
24. Webhooks: ``POST /_sandbox/webhooks`` ``{url, secret?}`` sets the key's organization's one
    endpoint (no ``secret``: the sandbox makes up a ``whsec_…``) and answers ``{organizationId,
    url, secret}``; ``GET`` shows it with every delivery attempt, ``DELETE`` removes it. Only
    events emitted while an endpoint is set are delivered (nothing is backfilled).
25. Delivery: one asyncio task per event, started when the event is recorded, with a client of
    its own (it works mounted in-process, where a sub-app's lifespan never runs). Body: the
    envelope as compact JSON, ``apiVersion`` = the organization's pin resolved, else the default
    version; the same bytes on every retry. Headers ``X-Commet-Signature`` (hex HMAC-SHA256 of
    the body keyed with the secret's text), ``X-Commet-Event``, ``X-Commet-Timestamp`` (the
    event's time), ``X-Commet-Event-Id``, ``User-Agent: Commet-Webhooks/sandbox``.
26. Retries: 8 attempts like Commet, but ``CommetSandboxConfig.webhook_retry_delays`` apart
    (0.1 s to 8 s instead of 1 min to 1 h); any non-2xx, connection error or a
    ``webhook_timeout_seconds`` (10 s) timeout is retried, redirects are not followed. Events are
    delivered concurrently, so they may arrive out of order (Commet promises no order either).
27. ``POST /_sandbox/webhooks/redeliver/{event_id}`` sends one event again at once, a single
    attempt with the same id and bytes, and answers that attempt (``statusCode``,
    ``delivered``); 404 without such event or endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payout_gateway.sandbox.commet.config import CommetSandboxConfig
from payout_gateway.sandbox.commet.errors import CommetError
from payout_gateway.sandbox.commet.operations import (
    ADD_BANK_ACCOUNT,
    COMPLETE_VERIFICATION,
    OPERATIONS,
    REQUEST_PAYOUT,
)
from payout_gateway.sandbox.commet.pipeline import (
    ApiPipeline,
    authenticate,
    error_response,
    lenient_version,
    new_request_id,
)
from payout_gateway.sandbox.commet.state import Fault, Organization, SandboxState, iso8601
from payout_gateway.sandbox.commet.versions import VersionError, resolve_version
from payout_gateway.sandbox.commet.webhooks import DeliveryAttempt, WebhookDispatcher
from payout_gateway.sandbox.commet.wire import (
    AddPayoutBankAccountParams,
    BalanceControl,
    BalanceOut,
    BankAccountStatusControl,
    CompletePayoutVerificationParams,
    ErrorEnvelope,
    FaultControl,
    FaultOut,
    OrganizationControl,
    OrganizationOut,
    Payout,
    PayoutAccountOut,
    PayoutAccountStatusControl,
    PayoutBankAccount,
    PayoutStatusControl,
    PayoutVerification,
    PayoutVerificationCreated,
    PayoutVerificationExisting,
    RequestCountsOut,
    RequestPayoutParams,
    WebhookDeliveryOut,
    WebhookEndpointControl,
    WebhookEndpointOut,
    WebhookEndpointStateOut,
    WireModel,
    bank_account_out,
    dumps,
    fault_out,
    organization_out,
    parse_json_object,
    payout_out,
    success,
    validate,
)

# Request bodies are read by hand (so auth, idempotency and faults come first and errors stay
# Commet-shaped); these models are added to the OpenAPI document so it still describes them.
_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    AddPayoutBankAccountParams,
    CompletePayoutVerificationParams,
    RequestPayoutParams,
    PayoutAccountStatusControl,
    BankAccountStatusControl,
    BalanceControl,
    PayoutStatusControl,
    OrganizationControl,
    FaultControl,
    WebhookEndpointControl,
)
# Responses are described by reference too: ``response_model`` and ``"model"`` make FastAPI build
# a validator per route, which made creating an app (once per test) several times slower.
_RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorEnvelope,
    PayoutBankAccount,
    PayoutVerification,
    PayoutVerificationCreated,
    PayoutVerificationExisting,
    Payout,
    OrganizationOut,
    PayoutAccountOut,
    BalanceOut,
    FaultOut,
    RequestCountsOut,
    WebhookEndpointOut,
    WebhookEndpointStateOut,
    WebhookDeliveryOut,
)

_ERROR_DESCRIPTIONS = {
    400: "validation_error, invalid_json, insufficient_balance",
    401: "unauthorized: missing or malformed x-api-key",
    403: "payouts_not_available_in_sandbox, forbidden",
    404: "not_found",
    409: "idempotency_key_mismatch, idempotency_in_progress, payout_account_not_verified",
    410: "endpoint_deprecated",
    429: "rate_limited (with Retry-After)",
    500: "internal_error",
}

M = TypeVar("M", bound=WireModel)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error_content() -> dict[str, Any]:
    # Fresh per use: FastAPI merges these dicts into the document in place.
    return {"application/json": {"schema": _ref(ErrorEnvelope)}}


def _responses(data: dict[str, Any], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: the success envelope around ``data``, then Commet errors."""
    envelope = {
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"const": True}, "data": data},
    }
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "Success", "content": {"application/json": {"schema": envelope}}}
    }
    responses.update(
        {
            status: {"content": _error_content(), "description": _ERROR_DESCRIPTIONS[status]}
            for status in statuses
        }
    )
    # Declaring "4XX" also keeps FastAPI from advertising its own 422, which never happens here.
    responses["4XX"] = {"content": _error_content(), "description": "Commet error envelope"}
    return responses


def _body_schema(model: type[BaseModel], *, api: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(model)}},
        }
    }
    if api:
        extra["parameters"] = [
            {
                "name": "commet-version",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "example": "2026-07-11"},
                "description": "API version (YYYY-MM-DD); header > organization pin > default.",
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": "Replays the first result of this request for 24 hours.",
            },
        ]
    return extra


class _CommetSandboxApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (model, "validation") for model in _REQUEST_MODELS
        ] + [(model, "serialization") for model in _RESPONSE_MODELS]
        for model, mode in models:
            model_schema = model.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}", mode=mode
            )
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        return schema


class _RequestIdMiddleware:
    """Gives every response an ``x-request-id`` (Commet sends one on each answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("x-request-id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


def _ok(data: BaseModel | list[Any] | dict[str, Any]) -> Response:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(by_alias=True)
    elif isinstance(data, list):
        payload = [
            item.model_dump(by_alias=True) if isinstance(item, BaseModel) else item for item in data
        ]
    else:
        payload = data
    return Response(dumps(success(payload)), media_type="application/json")


def create_commet_sandbox(config: CommetSandboxConfig | None = None) -> FastAPI:
    """A new Commet sandbox with its own empty state (``app.state.sandbox``)."""
    state = SandboxState(config or CommetSandboxConfig())
    app = _CommetSandboxApp(
        title="Commet sandbox",
        version="2026-07-11",
        summary="Local simulator of Commet's payout API, plus sandbox-only control routes.",
        redirect_slashes=False,
    )
    app.state.sandbox = state
    app.state.webhooks = dispatcher = WebhookDispatcher(state)
    app.add_middleware(_RequestIdMiddleware)
    _install_error_handlers(app, state)
    app.include_router(_api_router(ApiPipeline(state)), prefix="/api/v1")
    app.include_router(_control_router(state, dispatcher), prefix="/_sandbox")
    return app


def _install_error_handlers(app: FastAPI, state: SandboxState) -> None:
    @app.exception_handler(CommetError)
    async def commet_error(request: Request, exc: CommetError) -> Response:
        return error_response(exc, lenient_version(request, state))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            error = CommetError(
                "not_found", f"No route {request.method} {request.url.path} exists."
            )
        else:
            error = CommetError("internal_error", str(exc.detail), status=exc.status_code)
        return error_response(error, lenient_version(request, state))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> Response:
        # Safety net: routes read their bodies themselves, but FastAPI's 422 must never leak.
        issues = []
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ())]
            if loc and loc[0] in ("body", "path", "query", "header"):
                loc = loc[1:]
            issues.append({"field": ".".join(loc) or "body", "message": str(error.get("msg"))})
        first = issues[0] if issues else {"field": "body", "message": "is invalid"}
        error = CommetError(
            "validation_error",
            f"Invalid request: {first['field']}: {first['message']}",
            param=first["field"],
            details=issues or [first],
        )
        return error_response(error, lenient_version(request, state))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        response = error_response(
            CommetError("internal_error", "An unexpected error occurred."),
            lenient_version(request, state),
        )
        # This handler answers from outside the middleware stack, so it adds the id itself.
        response.headers["x-request-id"] = getattr(request.state, "request_id", new_request_id())
        return response


def _api_router(pipeline: ApiPipeline) -> APIRouter:
    api_key = APIKeyHeader(name="x-api-key", scheme_name="ApiKeyAuth", auto_error=False)
    router = APIRouter(tags=["Payouts"], dependencies=[Security(api_key)])

    @router.post(
        "/payouts/bank-accounts",
        operation_id="addPayoutBankAccount",
        summary="Add a payout bank account",
        description=(
            "Add an additional destination bank account to the organization's existing payout "
            "account. Country and currency are resolved from the organization. The full "
            "account number is never returned — only `last4`."
        ),
        responses=_responses(_ref(PayoutBankAccount), 400, 401, 403, 404, 409, 429, 500),
        openapi_extra=_body_schema(AddPayoutBankAccountParams, api=True),
    )
    async def add_bank_account(request: Request) -> Response:
        return await pipeline.handle(request, ADD_BANK_ACCOUNT)

    @router.post(
        "/payouts/verification",
        operation_id="completePayoutVerification",
        summary="Complete payout verification",
        description=(
            "Provision the organization's payout account in a single call with the full KYC + "
            "bank payload. Idempotent: returns the existing account if the org already has "
            "one. Answer shape by version: `alreadyExists` (2026-06-07 to 2026-07-11), "
            "`outcome` (2026-07-24); 410 `endpoint_deprecated` from 2026-08-27."
        ),
        responses=_responses(
            {
                "oneOf": [
                    _ref(PayoutVerification),
                    _ref(PayoutVerificationCreated),
                    _ref(PayoutVerificationExisting),
                ]
            },
            *(400, 401, 403, 409, 410, 429, 500),
        ),
        openapi_extra=_body_schema(CompletePayoutVerificationParams, api=True),
    )
    async def complete_verification(request: Request) -> Response:
        return await pipeline.handle(request, COMPLETE_VERIFICATION)

    @router.post(
        "/payouts",
        operation_id="requestPayout",
        summary="Request a payout",
        description=(
            "Withdraw available balance to the organization's verified payout account. "
            "`amount` is in cents (minimum 1000). The payout is created `pending`."
        ),
        responses=_responses(_ref(Payout), 400, 401, 403, 404, 409, 429, 500),
        openapi_extra=_body_schema(RequestPayoutParams, api=True),
    )
    async def request_payout(request: Request) -> Response:
        return await pipeline.handle(request, REQUEST_PAYOUT)

    return router


def _delivery_out(attempt: DeliveryAttempt) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        event_id=attempt.event_id,
        event=attempt.event,
        attempt=attempt.attempt,
        status_code=attempt.status_code,
        error=attempt.error,
        delivered=attempt.delivered,
        at=attempt.at,
    )


def _control_router(state: SandboxState, dispatcher: WebhookDispatcher) -> APIRouter:
    router = APIRouter(tags=["Sandbox controls"])
    operation_names = {operation.name for operation in OPERATIONS}

    def org_of(request: Request) -> Organization:
        return state.organization(authenticate(request.headers.get("x-api-key")))

    async def body_of(request: Request, model: type[M]) -> M:
        return validate(model, parse_json_object(await request.body()))

    def controls(
        method: str, path: str, model: type[BaseModel] | None, data: dict[str, Any]
    ) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        return router.api_route(
            path,
            methods=[method],
            responses=_responses(data, 400, 401, 404),
            openapi_extra=_body_schema(model, api=False) if model is not None else None,
        )

    @controls("GET", "/organization", None, _ref(OrganizationOut))
    async def get_organization(request: Request) -> Response:
        """Everything the sandbox holds for the key's organization."""
        return _ok(organization_out(org_of(request)))

    @controls("POST", "/organization", OrganizationControl, _ref(OrganizationOut))
    async def update_organization(request: Request) -> Response:
        """Set country, currency and version pin (``versionPin: null`` removes the pin)."""
        org = org_of(request)
        params = await body_of(request, OrganizationControl)
        sent = params.model_fields_set
        if params.version_pin is not None:
            try:
                resolve_version(params.version_pin)
            except VersionError as exc:
                raise CommetError(
                    "validation_error",
                    f"Invalid request: versionPin: {exc}",
                    param="versionPin",
                    details=[{"field": "versionPin", "message": str(exc)}],
                ) from None
        if "version_pin" in sent:
            org.version_pin = params.version_pin
        if params.country is not None:
            org.country = params.country
        if params.currency is not None:
            org.currency = params.currency.lower()
        return _ok(organization_out(org))

    @controls("POST", "/payout-account/status", PayoutAccountStatusControl, _ref(PayoutAccountOut))
    async def set_payout_account_status(request: Request) -> Response:
        """Move the payout account to any status (e.g. verify it)."""
        org = org_of(request)
        params = await body_of(request, PayoutAccountStatusControl)
        state.set_payout_account_status(org, params.status)
        return _ok(organization_out(org).payout_account or {})

    @controls(
        "POST",
        "/bank-accounts/{bank_account_id}/status",
        BankAccountStatusControl,
        _ref(PayoutBankAccount),
    )
    async def set_bank_account_status(request: Request, bank_account_id: str) -> Response:
        """Mark a bank account ``active`` or ``errored``."""
        org = org_of(request)
        params = await body_of(request, BankAccountStatusControl)
        return _ok(
            bank_account_out(state.set_bank_account_status(org, bank_account_id, params.status))
        )

    @controls("POST", "/balance", BalanceControl, _ref(BalanceOut))
    async def set_balance(request: Request) -> Response:
        """Set the organization's available balance (minor units of its currency)."""
        org = org_of(request)
        params = await body_of(request, BalanceControl)
        state.set_available_amount(org, params.available_amount)
        return _ok(BalanceOut(available_amount=org.available_amount, currency=org.currency))

    @controls("POST", "/payouts/{payout_id}/status", PayoutStatusControl, _ref(Payout))
    async def set_payout_status(request: Request, payout_id: str) -> Response:
        """Move a payout forward: in_transit, paid, failed (refunds) or canceled (refunds)."""
        org = org_of(request)
        params = await body_of(request, PayoutStatusControl)
        payout = state.set_payout_status(
            org,
            payout_id,
            params.status,
            failure_code=params.failure_code,
            failure_message=params.failure_message,
        )
        return _ok(payout_out(payout))

    @controls("GET", "/faults", None, {"type": "array", "items": _ref(FaultOut)})
    async def list_faults(request: Request) -> Response:
        """Faults still waiting for the key's organization."""
        return _ok([fault_out(fault) for fault in org_of(request).faults])

    @controls("POST", "/faults", FaultControl, _ref(FaultOut))
    async def add_fault(request: Request) -> Response:
        """Inject a fault into the organization's next ``count`` matching API requests."""
        org = org_of(request)
        params = await body_of(request, FaultControl)
        if params.operation is not None and params.operation not in operation_names:
            names = ", ".join(sorted(operation_names))
            raise CommetError(
                "validation_error",
                f"Invalid request: operation: must be one of {names}",
                param="operation",
                details=[{"field": "operation", "message": f"must be one of {names}"}],
            )
        applied = params.applied if params.kind == "status" else params.kind != "latency"
        fault = Fault(
            kind=params.kind,
            operation=params.operation,
            remaining=params.count,
            status=params.status,
            latency_ms=params.latency_ms,
            applied=bool(applied),
            code=params.code,
            retry_after_seconds=params.retry_after_seconds,
            unknown_status=params.unknown_status,
        )
        org.faults.append(fault)
        return _ok(fault_out(fault))

    @controls(
        "DELETE", "/faults", None, {"type": "object", "additionalProperties": {"type": "integer"}}
    )
    async def clear_faults(request: Request) -> Response:
        """Remove every pending fault of the key's organization."""
        org = org_of(request)
        cleared = len(org.faults)
        org.faults.clear()
        return _ok({"cleared": cleared})

    @controls("GET", "/requests", None, _ref(RequestCountsOut))
    async def request_counts(request: Request) -> Response:
        """API requests received per operation, app-wide (no key needed)."""
        counts = dict(state.request_counts)
        return _ok(RequestCountsOut(total=sum(counts.values()), counts=counts))

    @controls("DELETE", "/requests", None, _ref(RequestCountsOut))
    async def reset_request_counts(request: Request) -> Response:
        """Reset the request counters to zero."""
        state.request_counts.clear()
        return _ok(RequestCountsOut(total=0, counts={}))

    @controls("GET", "/events", None, {"type": "array", "items": {"type": "object"}})
    async def events(request: Request) -> Response:
        """Events Commet would have sent by webhook to the key's organization (the outbox)."""
        org = org_of(request)
        return _ok(
            [
                {
                    "id": event.id,
                    "event": event.name,
                    "timestamp": iso8601(event.created_at),
                    "organizationId": event.organization_id,
                    "mode": "live" if event.livemode else "sandbox",
                    "data": event.data,
                }
                for event in state.events
                if event.organization_id == org.id
            ]
        )

    @controls("POST", "/webhooks", WebhookEndpointControl, _ref(WebhookEndpointOut))
    async def set_webhook_endpoint(request: Request) -> Response:
        """Deliver the key's organization's new events to ``url``, signed with ``secret``."""
        org = org_of(request)
        params = await body_of(request, WebhookEndpointControl)
        endpoint = dispatcher.configure(org, params.url, params.secret)
        return _ok(
            WebhookEndpointOut(organization_id=org.id, url=endpoint.url, secret=endpoint.secret)
        )

    @controls("GET", "/webhooks", None, _ref(WebhookEndpointStateOut))
    async def get_webhook_endpoint(request: Request) -> Response:
        """The organization's endpoint (or nulls) and every delivery attempt so far."""
        org = org_of(request)
        endpoint = dispatcher.endpoints.get(org.id)
        return _ok(
            WebhookEndpointStateOut(
                organization_id=org.id,
                url=endpoint.url if endpoint else None,
                secret=endpoint.secret if endpoint else None,
                deliveries=[_delivery_out(a) for a in dispatcher.attempts_of(org)],
            )
        )

    @controls("DELETE", "/webhooks", None, {"type": "object"})
    async def remove_webhook_endpoint(request: Request) -> Response:
        """Stop delivering (events still accumulate in the outbox)."""
        return _ok({"removed": dispatcher.remove(org_of(request))})

    @controls("POST", "/webhooks/redeliver/{event_id}", None, _ref(WebhookDeliveryOut))
    async def redeliver_webhook(request: Request, event_id: str) -> Response:
        """Send one event again now: one attempt, same id and bytes (replays)."""
        return _ok(_delivery_out(await dispatcher.redeliver(org_of(request), event_id)))

    return router
