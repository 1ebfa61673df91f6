"""The Paygentic sandbox app: Paygentic's external-accounts and payouts API, simulated in memory.

The contract is ``docs/providers/paygentic.md``. Paths mirror the real API (``/v0/...``) under the
app's root and the app never builds an absolute URL of itself, so it can be served on its own
(``http://host:port`` in place of ``https://api.paygentic.io``) or mounted under a prefix such as
``/sandbox/paygentic``.

Choices the provider documents do not settle ([I] in the contract), as this sandbox makes them:

1. Auth: any ``Authorization: Bearer <key>`` whose key matches ``^[A-Za-z0-9_\\-.]{8,}$`` acts for
   every ``org_...`` id it names; no set-up. The scheme name is case-insensitive. Missing header,
   another scheme or a malformed key -> 401 ``{"message", "error": "unauthorized"}`` with
   ``WWW-Authenticate: Bearer``. Keys starting ``sk_revoked_`` are well-formed but rejected (401),
   to simulate a revoked key.
2. Keys starting ``sk_readonly_`` may only read: POST/PATCH/DELETE get 403 ``{"message",
   "error": "forbidden", "reason": "insufficient_scope", "requiredPermissions":
   ["externalAccounts:write"]}`` (``payouts:write`` for payouts).
3. Authentication runs before any body or query validation, so an anonymous request with a bad
   body gets 401, not 400.
4. ``organizationId`` must match ``^org_[a-zA-Z0-9]+$`` (400 otherwise) and is required on both
   list endpoints. The sandbox is not multi-tenant by key: a read by id returns the object
   whatever organization owns it. A nonexistent id -> 404 ``{"message", "error": "not_found"}``.
5. Validation failures (body, query) -> 400 ``{"error": "validation_error", "message", "errors":
   [{"field", "message", "code"}]}``; ``field`` is the JSON name (dotted when nested), ``code``
   is UPPER_SNAKE (``REQUIRED``, ``INVALID_TYPE``, ``INVALID_FORMAT``, ``INVALID_VALUE``,
   ``OUT_OF_RANGE``, ``UNKNOWN_FIELD``, ``IMMUTABLE_FIELD``, ``NOT_NULLABLE``,
   ``INVALID_COUNTRY_CODE``, ``INVALID_CURRENCY``, ``INVALID_ACCOUNT_NUMBER``,
   ``INVALID_ROUTING_NUMBER``, ...). Messages never repeat the submitted value. Body that is not
   JSON -> 400 ``{"message", "error": "bad_request", "code": "INVALID_JSON"}``. FastAPI's 422 is
   never sent. Bodies are validated strictly: unknown fields are rejected (``UNKNOWN_FIELD``) and
   JSON types are not coerced (``"100"`` is not an integer).
6. ``countryCode`` must be an ISO 3166-1 alpha-2 code and ``currency`` an ISO 4217 code; both are
   accepted in any case and echoed upper case (``US``, ``USD``).
7. ``accountNumber``: 4-17 ASCII digits, or a valid IBAN (upper case, no spaces); separators are
   not stripped. ``routingNumber``: exactly 9 ASCII digits, checksum not verified. Neither is
   stored or returned: only ``last4`` (the account number's last four characters) is kept; no
   hash is kept either, so duplicates are not detected.
8. ``bankName`` and ``accountHolderName``: 1-200 characters after trimming whitespace.
9. ``metadata`` is any JSON object, stored and returned exactly as given; absent or null -> ``{}``
   (always present in responses). PATCH replaces it wholesale.
10. PATCH ``/v0/externalAccounts/{id}`` accepts ``accountHolderName``, ``accountHolderType``,
    ``status``, ``metadata``; every other documented field (numbers, ``countryCode``,
    ``currency``, ``bankName``, ``organizationId``, ...) -> 400 ``IMMUTABLE_FIELD``; explicit
    null -> 400 ``NOT_NULLABLE``. ``updatedAt`` moves only when a value actually changes.
11. DELETE -> 204 with no body; the account is gone (GET/PATCH/DELETE -> 404). Payouts that
    point at it keep their ``destinationId``.
12. No idempotency (faithful): every create makes a new object, ``Idempotency-Key`` is ignored.
13. Lists are newest first (creation order, stable), filtered only by ``organizationId`` (and
    ``status`` for payouts). ``limit`` outside 1..``page_max`` or ``offset`` < 0 -> 400 (no
    clamping); an offset past the end gives an empty ``data`` with the true ``total``.
14. Timestamps are ISO 8601 UTC with whole seconds and ``Z`` (``2023-11-07T05:31:56Z``), as in
    the documentation's example. Ids are ``eba_``/``po_``/``txn_`` + 24 alphanumerics.
15. ``POST /v0/payouts``: ``organizationId``, ``amountInCents`` (integer >= 1), ``currency``,
    ``method`` (``"bank_transfer"``), ``sourceId`` (any non-empty string, not checked) and
    ``destinationId`` are required; ``description`` (<= 1000 characters, null when absent) and
    ``metadata`` are optional. Refusals are 422 ``{"message", "error": "unprocessable_entity",
    "code", "details"?}`` with ``code`` one of ``DESTINATION_NOT_FOUND``,
    ``DESTINATION_ORGANIZATION_MISMATCH``, ``DESTINATION_NOT_VERIFIED``, ``CURRENCY_MISMATCH``
    (the payout currency must equal the destination's), ``AMOUNT_BELOW_FEES``.
16. Payout amounts: ``platformFee`` and ``methodFee`` are integers in cents (from the config,
    default 0). ``transactionId`` and ``transferredAmountInCents`` (amount minus fees) are null
    until ``success``; ``failureCode``/``failureMessage`` are null unless ``failed``.
17. Account statuses: new accounts start ``new``. With ``auto_verify_after_seconds`` set, an
    account reads as ``verified`` once that delay has passed since it entered ``new``; this is
    evaluated lazily on every read (no background task), and ``updatedAt`` becomes the moment it
    was due. PATCH may set any documented status, as the contract lists ``status`` as mutable.
18. Payouts stay ``pending`` until a control route settles them; only ``pending`` may change.
19. Unknown paths -> 404 and wrong methods -> 405, both in Paygentic's error shape. A trailing
    slash is not redirected: ``/v0/payouts/`` is an unknown path.

Sandbox-only control routes live under ``/_sandbox/`` (no auth, never counted, never faulted):

- ``POST /_sandbox/externalAccounts/{id}/status`` ``{"status": "new"|"verified"|"errored"}``
  -> 200 the account.
- ``POST /_sandbox/payouts/{id}/status`` ``{"status": "success"|"failed"|"cancelled",
  "failureCode"?, "failureMessage"?}`` -> 200 the payout; 409 ``INVALID_STATUS_TRANSITION`` when
  the payout is no longer pending.
- ``GET /_sandbox/requests`` -> ``{"counts": {"POST /v0/externalAccounts": 1, ...}, "total"}``
  (the same ``Counter`` is ``app.state.sandbox.request_counts``); ``DELETE`` resets it -> 204.
  Every API request routed to an operation counts, including rejected ones.
- ``POST /_sandbox/faults`` ``{"operation"?, "kind", "status"?, "latencyMs"?, "count"?,
  "retryAfterSeconds"?, "unknownStatus"?}`` -> 201 the fault with ``id`` and ``remaining``. It
  hits the next ``count`` API requests of ``operation`` (a key as in the counters; omitted = any).
  Faults are matched first-registered first, each request takes at most one, and the fault is
  spent before authentication. Kinds:

  - ``status``: answer ``status`` (default 500) with a Paygentic error body, without handling
    the request; 429 carries ``Retry-After: <retryAfterSeconds>``.
  - ``latency``: sleep ``latencyMs`` (default 300) before handling normally.
  - ``malformed``: answer 200 with an HTML body (a proxy error page), without handling.
  - ``unknown_status``: handle normally; a success body's ``status`` (each item's, for lists)
    reads ``unknownStatus`` (default ``"under_review"``). Stored state is unchanged.
  - ``apply_then_fail``: handle (the write happens), then answer ``status`` (default 500); or,
    with ``latencyMs``, sleep that long after the write and then send the real answer (set it past
    the client's timeout to simulate an outcome-unknown create).

  Faults only alter successful answers after handling; a refused request still spends them.
- ``GET /_sandbox/faults`` -> ``{"data": [...]}``; ``DELETE /_sandbox/faults`` -> 204.
- ``POST /_sandbox/reset`` -> 204: forget all objects, counters and faults.

Webhooks: Paygentic documents no event for external accounts or payouts. Every status change is
appended to ``app.state.sandbox.status_changes``; a future webhook sender starts from there.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from payout_gateway.sandbox.paygentic.auth import authenticate
from payout_gateway.sandbox.paygentic.config import PaygenticSandboxConfig
from payout_gateway.sandbox.paygentic.errors import PaygenticApiError
from payout_gateway.sandbox.paygentic.models import (
    IMMUTABLE_ACCOUNT_FIELDS,
    ORGANIZATION_ID_PATTERN,
    AccountStatusChange,
    ErrorBody,
    ExternalAccountCreate,
    ExternalAccountUpdate,
    ExternalBankAccount,
    ExternalBankAccountList,
    Fault,
    FaultList,
    FaultSpec,
    FieldError,
    ForbiddenErrorBody,
    Pagination,
    Payout,
    PayoutCreate,
    PayoutList,
    PayoutStatus,
    PayoutStatusChange,
    RequestCounts,
    ValidationErrorBody,
)
from payout_gateway.sandbox.paygentic.state import PaygenticSandboxState

__all__ = ["create_paygentic_sandbox"]

API_PREFIX = "/v0/"
DEFAULT_LATENCY_MS = 300

_Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_Responses = dict[int | str, dict[str, Any]]

_MALFORMED_BODY = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>upstream connect error</p></body></html>"
)

# Declaring "4XX" also stops FastAPI from documenting its own 422, which this app never sends.
_READ_ERRORS: _Responses = {
    400: {"model": ValidationErrorBody, "description": "Invalid query (validation_error)"},
    401: {"model": ErrorBody, "description": "Missing or invalid API key"},
    "4XX": {"model": ErrorBody, "description": "Other Paygentic error"},
    500: {"model": ErrorBody, "description": "Server error"},
}
_BY_ID_ERRORS: _Responses = {
    **_READ_ERRORS,
    404: {"model": ErrorBody, "description": "No object with this id"},
}
_WRITE_ERRORS: _Responses = {
    **_READ_ERRORS,
    400: {
        "model": ValidationErrorBody,
        "description": "Invalid body (validation_error) or body not JSON (bad_request)",
    },
    403: {"model": ForbiddenErrorBody, "description": "The API key may not write"},
}
_WRITE_BY_ID_ERRORS: _Responses = {**_WRITE_ERRORS, **_BY_ID_ERRORS, 400: _WRITE_ERRORS[400]}
_CONTROL_ERRORS: _Responses = {
    400: {"model": ValidationErrorBody, "description": "Invalid body"},
    "4XX": {"model": ErrorBody, "description": "Other error"},
}


def create_paygentic_sandbox(config: PaygenticSandboxConfig | None = None) -> FastAPI:
    """Build an independent sandbox app; its state is ``app.state.sandbox``."""
    state = PaygenticSandboxState(config or PaygenticSandboxConfig())
    app = FastAPI(
        title="Paygentic sandbox",
        version="v0",
        description=(
            "A local simulator of Paygentic's external-accounts and payouts API. "
            "Routes under /_sandbox/ are sandbox-only controls."
        ),
    )
    app.state.sandbox = state
    # A slash redirect would carry an absolute URL of this app, which is wrong once mounted.
    app.router.redirect_slashes = False
    app.router.route_class = _route_class(state)
    _install_error_handlers(app)
    _add_external_account_routes(app, state)
    _add_payout_routes(app, state)
    _add_control_routes(app, state)
    return app


# ---- the seam every API request passes: counters, faults, auth ----


def _route_class(state: PaygenticSandboxState) -> type[APIRoute]:
    class PaygenticRoute(APIRoute):
        def get_route_handler(self) -> _Handler:
            handler = super().get_route_handler()
            if not self.path_format.startswith(API_PREFIX):
                return handler
            method = sorted(self.methods or {"GET"})[0]
            operation = f"{method} {self.path_format}"
            state.operations.add(operation)
            write = method != "GET"
            resource = self.path_format.split("/")[2]
            permission = f"{resource}:{'write' if write else 'read'}"

            async def serve(request: Request) -> Response:
                return await _serve(state, operation, write, permission, request, handler)

            return serve

    return PaygenticRoute


async def _serve(
    state: PaygenticSandboxState,
    operation: str,
    write: bool,
    permission: str,
    request: Request,
    handler: _Handler,
) -> Response:
    state.request_counts[operation] += 1
    fault = state.faults.take(operation)
    if fault is not None:
        if fault.kind == "status":
            return _fault_error(fault).response()
        if fault.kind == "malformed":
            return HTMLResponse(_MALFORMED_BODY, status_code=200)
        if fault.kind == "latency":
            latency_ms = DEFAULT_LATENCY_MS if fault.latencyMs is None else fault.latencyMs
            await state.config.sleep(latency_ms / 1000)
    try:
        authenticate(request.headers.get("authorization"), write=write, permission=permission)
    except PaygenticApiError as exc:
        return exc.response()
    response = await handler(request)
    if fault is None or not 200 <= response.status_code < 300:
        return response
    if fault.kind == "unknown_status":
        return _with_unknown_status(response, fault.unknownStatus)
    if fault.kind == "apply_then_fail":
        if fault.latencyMs is None:
            return _fault_error(fault).response()
        await state.config.sleep(fault.latencyMs / 1000)
    return response


def _fault_error(fault: Fault) -> PaygenticApiError:
    headers = {"Retry-After": str(fault.retryAfterSeconds)} if fault.status == 429 else None
    message = "Too many requests" if fault.status == 429 else "Simulated failure"
    return PaygenticApiError.plain(fault.status, message, headers=headers)


def _with_unknown_status(response: Response, unknown: str) -> Response:
    try:
        body = json.loads(bytes(response.body))
    except ValueError:
        return response
    if isinstance(body, dict):
        items = body.get("data") if body.get("object") == "list" else [body]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and "status" in item:
                item["status"] = unknown
    return JSONResponse(body, status_code=response.status_code)


def _install_error_handlers(app: FastAPI) -> None:
    async def paygentic_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PaygenticApiError)
        return exc.response()

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return PaygenticApiError.from_pydantic(exc.errors()).response()

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = PaygenticApiError.plain(exc.status_code, str(exc.detail), headers=exc.headers)
        return error.response()

    async def unexpected_error(_: Request, exc: Exception) -> Response:
        return PaygenticApiError.plain(500, "Internal server error").response()

    app.add_exception_handler(PaygenticApiError, paygentic_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


# ---- /v0/externalAccounts ----


def _add_external_account_routes(app: FastAPI, state: PaygenticSandboxState) -> None:
    config = state.config
    Limit = Annotated[int, Query(ge=1, le=config.page_max)]
    Offset = Annotated[int, Query(ge=0)]
    OrganizationQuery = Annotated[str, Query(pattern=ORGANIZATION_ID_PATTERN)]

    @app.post(
        "/v0/externalAccounts",
        status_code=201,
        response_model=ExternalBankAccount,
        responses=_WRITE_ERRORS,
        tags=["externalAccounts"],
        summary="Create a new external bank account",
    )
    async def create_external_account(body: ExternalAccountCreate) -> ExternalBankAccount:
        return state.create_account(body)

    @app.get(
        "/v0/externalAccounts",
        response_model=ExternalBankAccountList,
        responses=_READ_ERRORS,
        tags=["externalAccounts"],
        summary="List an organization's external bank accounts, newest first",
    )
    async def list_external_accounts(
        organizationId: OrganizationQuery,
        limit: Limit = config.page_default,
        offset: Offset = 0,
    ) -> ExternalBankAccountList:
        data, total = state.list_accounts(organizationId, limit, offset)
        return ExternalBankAccountList(
            data=data, pagination=Pagination(limit=limit, offset=offset, total=total)
        )

    @app.get(
        "/v0/externalAccounts/{id}",
        response_model=ExternalBankAccount,
        responses=_BY_ID_ERRORS,
        tags=["externalAccounts"],
        summary="Get an external bank account",
    )
    async def get_external_account(id: str) -> ExternalBankAccount:
        return state.get_account(id)

    @app.patch(
        "/v0/externalAccounts/{id}",
        response_model=ExternalBankAccount,
        responses=_WRITE_BY_ID_ERRORS,
        tags=["externalAccounts"],
        summary="Update an external bank account's holder, status or metadata",
    )
    async def update_external_account(id: str, body: ExternalAccountUpdate) -> ExternalBankAccount:
        return state.update_account(id, _account_changes(body))

    @app.delete(
        "/v0/externalAccounts/{id}",
        status_code=204,
        response_class=Response,
        responses=_WRITE_BY_ID_ERRORS,
        tags=["externalAccounts"],
        summary="Delete an external bank account",
    )
    async def delete_external_account(id: str) -> Response:
        state.delete_account(id)
        return Response(status_code=204)


def _account_changes(body: ExternalAccountUpdate) -> dict[str, object]:
    """The PATCH body's changes, or the 400 naming every field that may not be sent."""
    errors: list[FieldError] = []
    extra = body.model_extra or {}
    for name in extra:
        if name in IMMUTABLE_ACCOUNT_FIELDS:
            errors.append(
                FieldError(
                    field=name, message="Cannot be changed after creation", code="IMMUTABLE_FIELD"
                )
            )
        else:
            errors.append(FieldError(field=name, message="Unknown field", code="UNKNOWN_FIELD"))
    changes: dict[str, object] = {}
    for name in sorted(body.model_fields_set - extra.keys()):
        value = getattr(body, name)
        if value is None:
            errors.append(FieldError(field=name, message="Must not be null", code="NOT_NULLABLE"))
        else:
            changes[name] = value
    if errors:
        raise PaygenticApiError.validation(errors)
    return changes


# ---- /v0/payouts ----


def _add_payout_routes(app: FastAPI, state: PaygenticSandboxState) -> None:
    config = state.config
    Limit = Annotated[int, Query(ge=1, le=config.page_max)]
    Offset = Annotated[int, Query(ge=0)]
    OrganizationQuery = Annotated[str, Query(pattern=ORGANIZATION_ID_PATTERN)]

    @app.post(
        "/v0/payouts",
        status_code=201,
        response_model=Payout,
        responses={
            **_WRITE_ERRORS,
            422: {"model": ErrorBody, "description": "The destination cannot receive it"},
        },
        tags=["payouts"],
        summary="Create a payout to a verified external bank account",
    )
    async def create_payout(body: PayoutCreate) -> Payout:
        return state.create_payout(body)

    @app.get(
        "/v0/payouts",
        response_model=PayoutList,
        responses=_READ_ERRORS,
        tags=["payouts"],
        summary="List an organization's payouts, newest first",
    )
    async def list_payouts(
        organizationId: OrganizationQuery,
        status: PayoutStatus | None = None,
        limit: Limit = config.page_default,
        offset: Offset = 0,
    ) -> PayoutList:
        data, total = state.list_payouts(organizationId, status, limit, offset)
        return PayoutList(data=data, pagination=Pagination(limit=limit, offset=offset, total=total))

    @app.get(
        "/v0/payouts/{id}",
        response_model=Payout,
        responses=_BY_ID_ERRORS,
        tags=["payouts"],
        summary="Get a payout",
    )
    async def get_payout(id: str) -> Payout:
        return state.get_payout(id)


# ---- /_sandbox (not part of Paygentic) ----


def _add_control_routes(app: FastAPI, state: PaygenticSandboxState) -> None:

    @app.post(
        "/_sandbox/externalAccounts/{id}/status",
        response_model=ExternalBankAccount,
        responses=_CONTROL_ERRORS,
        tags=["sandbox control"],
        summary="Move an external account to any status",
    )
    async def set_external_account_status(
        id: str, body: AccountStatusChange
    ) -> ExternalBankAccount:
        return state.set_account_status(id, body.status)

    @app.post(
        "/_sandbox/payouts/{id}/status",
        response_model=Payout,
        responses=_CONTROL_ERRORS,
        tags=["sandbox control"],
        summary="Settle a pending payout",
    )
    async def set_payout_status(id: str, body: PayoutStatusChange) -> Payout:
        return state.settle_payout(id, body)

    @app.get(
        "/_sandbox/requests",
        response_model=RequestCounts,
        tags=["sandbox control"],
        summary="Count API requests per operation",
    )
    async def request_counts() -> RequestCounts:
        counts = dict(state.request_counts)
        return RequestCounts(counts=counts, total=sum(counts.values()))

    @app.delete(
        "/_sandbox/requests",
        status_code=204,
        response_class=Response,
        tags=["sandbox control"],
        summary="Reset the request counters",
    )
    async def reset_request_counts() -> Response:
        state.request_counts.clear()
        return Response(status_code=204)

    @app.post(
        "/_sandbox/faults",
        status_code=201,
        response_model=Fault,
        responses=_CONTROL_ERRORS,
        tags=["sandbox control"],
        summary="Inject a fault into the next API requests",
    )
    async def add_fault(body: FaultSpec) -> Fault:
        if body.operation is not None and body.operation not in state.operations:
            known = ", ".join(sorted(state.operations))
            raise PaygenticApiError.validation(
                [
                    FieldError(
                        field="operation",
                        message=f"Unknown operation; expected one of: {known}",
                        code="INVALID_VALUE",
                    )
                ]
            )
        return state.new_fault(body)

    @app.get(
        "/_sandbox/faults",
        response_model=FaultList,
        tags=["sandbox control"],
        summary="List the faults still waiting",
    )
    async def list_faults() -> FaultList:
        return FaultList(data=list(state.faults.faults))

    @app.delete(
        "/_sandbox/faults",
        status_code=204,
        response_class=Response,
        tags=["sandbox control"],
        summary="Remove every waiting fault",
    )
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @app.post(
        "/_sandbox/reset",
        status_code=204,
        response_class=Response,
        tags=["sandbox control"],
        summary="Forget every object, counter and fault",
    )
    async def reset() -> Response:
        state.reset()
        return Response(status_code=204)
