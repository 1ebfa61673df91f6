"""Access log (never query strings: a GET may carry a document with account numbers) and metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractContextManager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payout_gateway.metrics import HTTP_REQUESTS, HTTP_SECONDS, LabelledChildren, route_of
from payout_gateway.request_log import (
    ProviderCall,
    collecting_provider_calls,
    request_id_for,
    reset_request_id,
    set_request_id,
)

logger = logging.getLogger("payout_gateway.access")


class AccessLogMiddleware:
    """Logs method, path, status and duration, and the provider calls the request made (see
    ``request_log``); never the query string, body or headers. Gives each request an id (the
    caller's ``X-Request-Id`` if it is a plain token), answered in ``X-Request-Id`` and put on
    every record logged while serving it. Counts and times the request for ``/metrics``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = request_id_for(_header(scope, b"x-request-id"))
        id_header = (b"x-request-id", request_id.encode())

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        # Calls are collected for the access line only: with the log off, nothing reads them.
        calls: AbstractContextManager[list[ProviderCall]] = (
            collecting_provider_calls()
            if logger.isEnabledFor(logging.INFO)
            else contextlib.nullcontext([])
        )
        serving = set_request_id(request_id)
        try:
            with calls as provider_calls:
                try:
                    await self.app(scope, receive, tracking_send)
                finally:
                    _record(
                        scope, status, time.perf_counter() - started, request_id, provider_calls
                    )
        finally:
            reset_request_id(serving)


def _record(
    scope: Scope,
    status: int,
    elapsed: float,
    request_id: str,
    provider_calls: list[ProviderCall],
) -> None:
    """The request's metrics, and its access line when the access log is on."""
    method = scope["method"]
    route = route_of(scope["path"])
    # A method outside the standard few (a client may send any token) is "other".
    _REQUESTS(route, method if method in _METHODS else "other", str(status)).inc()
    _SECONDS(route).observe(elapsed)
    if not logger.isEnabledFor(logging.INFO):
        return
    duration_ms = round(elapsed * 1000, 1)
    extra: dict[str, object] = {
        "request_id": request_id,
        "method": method,
        "path": scope["path"],
        "status": status,
        "duration_ms": duration_ms,
    }
    if provider_calls:
        extra["provider_calls"] = provider_calls
    logger.info("%s %s %s %.1fms", method, scope["path"], status, duration_ms, extra=extra)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
_REQUESTS = LabelledChildren(HTTP_REQUESTS)
_SECONDS = LabelledChildren(HTTP_SECONDS)
