"""The path of every Commet API request: count, authenticate, version, fault, idempotency, run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from payout_gateway.sandbox.commet.errors import CommetError, RequestRejected
from payout_gateway.sandbox.commet.state import Fault, Organization, SandboxState, StoredResponse
from payout_gateway.sandbox.commet.versions import VersionError, resolve_version
from payout_gateway.sandbox.commet.wire import dumps, success

API_KEY = re.compile(r"(ck|rk)_(live|sandbox)_[A-Za-z0-9]{8,}")
MAX_IDEMPOTENCY_KEY_LENGTH = 255

# Status -> code of an injected "status" fault when the fault names no code.
_FAULT_CODES: Mapping[int, str] = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "duplicate",
    410: "endpoint_deprecated",
    429: "rate_limited",
}

# What a "malformed" fault answers with status 200: an HTML page instead of the JSON envelope,
# as an intercepting proxy or a misrouted CDN would.
_MALFORMED_BODY = (
    b"<!DOCTYPE html><html><head><title>Commet</title></head>"
    b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>"
)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Call:
    """What an operation runs with: the state, the caller's organization, the resolved version."""

    state: SandboxState
    org: Organization
    version: str


@dataclass(frozen=True, slots=True)
class Operation:
    """One public route. ``run`` parses the raw body and answers the ``data`` of the envelope,
    raising ``RequestRejected`` before it changes anything and ``CommetError`` after."""

    name: str
    run: Callable[[Call, bytes], Any]


@dataclass(slots=True)
class _Result:
    status: int
    body: bytes
    version: str
    storable: bool
    headers: dict[str, str] = field(default_factory=dict)


def authenticate(header: str | None) -> str:
    if header is None or not header.strip():
        raise CommetError("unauthorized", "Missing API key: send it in the x-api-key header.")
    if API_KEY.fullmatch(header) is None:
        raise CommetError("unauthorized", "Invalid API key.")
    return header


def authorize_payouts(api_key: str) -> None:
    if "_sandbox_" in api_key:
        raise CommetError(
            "payouts_not_available_in_sandbox",
            "Payouts are only available with live API keys; sandbox organizations cannot "
            "verify payout accounts, add payout bank accounts or request payouts.",
        )
    if api_key.startswith("rk_"):
        raise CommetError(
            "forbidden",
            "Restricted API keys (rk_) cannot use payout endpoints; use a secret key (ck_live_).",
        )


def lenient_version(request: Request, state: SandboxState) -> str:
    """The version to name in ``doc_url`` of errors raised before the version is resolved."""
    requested = request.headers.get("commet-version")
    if requested is not None:
        try:
            return resolve_version(requested.strip())
        except VersionError:
            pass
    return resolve_version(state.config.default_version)


def resolve_request_version(request: Request, org: Organization, state: SandboxState) -> str:
    """Header, then the organization's pin, then the sandbox default."""
    requested = request.headers.get("commet-version")
    if requested is None:
        return resolve_version(org.version_pin or state.config.default_version)
    try:
        return resolve_version(requested.strip())
    except VersionError as exc:
        raise RequestRejected(
            "validation_error",
            f"Invalid commet-version header: {exc}.",
            param="commet-version",
            details=[{"field": "commet-version", "message": str(exc)}],
        ) from None


def error_response(exc: CommetError, version: str) -> Response:
    return Response(
        dumps(exc.body(version)),
        status_code=exc.status,
        media_type="application/json",
        headers={**exc.headers, "commet-version": version},
    )


def fingerprint(operation: str, body: bytes) -> str:
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        canonical = body
    return hashlib.sha256(operation.encode() + b"\n" + canonical).hexdigest()


def _fault_error(fault: Fault) -> CommetError:
    status = fault.status
    code = fault.code or _FAULT_CODES.get(status, "internal_error")
    headers = {"Retry-After": str(fault.retry_after_seconds)} if status == 429 else {}
    return CommetError(
        code,
        f"Simulated HTTP {status} (sandbox fault injection).",
        status=status,
        headers=headers,
    )


class ApiPipeline:
    """Runs operations for one sandbox state; see app.py for the documented order of checks."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle(self, request: Request, operation: Operation) -> Response:
        state = self.state
        state.request_counts[operation.name] += 1
        version = lenient_version(request, state)
        try:
            api_key = authenticate(request.headers.get("x-api-key"))
            authorize_payouts(api_key)
            org = state.organization(api_key)
            version = resolve_request_version(request, org, state)
        except CommetError as exc:
            return error_response(exc, version)

        fault = org.take_fault(operation.name)
        if fault is not None and fault.kind == "status" and not fault.applied:
            # Nothing ran: like a load balancer failing the request on its way in.
            return error_response(_fault_error(fault), version)

        body = await request.body()
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is None:
            await _delay(fault)
            return _deliver(self._run(operation, org, version, body), fault, replayed=False)

        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            message = f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            return error_response(
                CommetError(
                    "validation_error",
                    f"Invalid Idempotency-Key header: {message}.",
                    param="Idempotency-Key",
                    details=[{"field": "Idempotency-Key", "message": message}],
                ),
                version,
            )
        request_fingerprint = fingerprint(operation.name, body)
        record = state.idempotency_lookup(org, idempotency_key)
        if record is not None:
            if record.fingerprint != request_fingerprint:
                return error_response(
                    CommetError(
                        "idempotency_key_mismatch",
                        "This Idempotency-Key was already used with a different request; "
                        "use a new key for a new request.",
                        param="Idempotency-Key",
                    ),
                    version,
                )
            if record.response is None:
                return error_response(
                    CommetError(
                        "idempotency_in_progress",
                        "A request with this Idempotency-Key is still being processed; "
                        "retry after it completes.",
                        param="Idempotency-Key",
                    ),
                    version,
                )
            stored = record.response
            await _delay(fault)
            replay = _Result(stored.status_code, stored.body, stored.version, storable=False)
            return _deliver(replay, fault, replayed=True)

        claim = state.idempotency_claim(org, idempotency_key, request_fingerprint)
        try:
            await _delay(fault)
            result = self._run(operation, org, version, body)
            if result.storable:
                claim.response = StoredResponse(result.status, result.body, result.version)
        finally:
            # A request that stored nothing frees its key, so a retry runs again.
            state.idempotency_release(org, idempotency_key, claim)
        return _deliver(result, fault, replayed=False)

    def _run(self, operation: Operation, org: Organization, version: str, body: bytes) -> _Result:
        call = Call(self.state, org, version)
        try:
            data = operation.run(call, body)
        except RequestRejected as exc:
            return _Result(exc.status, dumps(exc.body(version)), version, False, exc.headers)
        except CommetError as exc:
            storable = exc.status < 500 and exc.status != 429
            return _Result(exc.status, dumps(exc.body(version)), version, storable, exc.headers)
        return _Result(200, dumps(success(data)), version, storable=True)


async def _delay(fault: Fault | None) -> None:
    if fault is not None and fault.kind == "latency":
        await asyncio.sleep(fault.latency_ms / 1000)


def _deliver(result: _Result, fault: Fault | None, *, replayed: bool) -> Response:
    """The HTTP answer for ``result``; an after-the-fact fault changes only this answer."""
    headers = {**result.headers, "commet-version": result.version}
    if replayed:
        headers["idempotent-replayed"] = "true"
    if fault is not None and fault.kind == "status":
        return error_response(_fault_error(fault), result.version)
    if fault is not None and fault.kind == "malformed":
        return Response(_MALFORMED_BODY, status_code=200, media_type="text/html")
    body = result.body
    if fault is not None and fault.kind == "unknown_status" and 200 <= result.status < 300:
        payload = json.loads(body)
        if isinstance(payload.get("data"), dict) and "status" in payload["data"]:
            payload["data"]["status"] = fault.unknown_status
            body = dumps(payload)
    return Response(body, status_code=result.status, media_type="application/json", headers=headers)
