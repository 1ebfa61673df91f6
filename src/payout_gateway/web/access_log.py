"""Access log without query strings: a GET may carry a GraphQL document with account numbers."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payout_gateway.request_log import collecting_provider_calls

logger = logging.getLogger("payout_gateway.access")


class AccessLogMiddleware:
    """Logs method, path, status and duration, and the provider calls the request made (see
    ``request_log``); never the query string, body or headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with collecting_provider_calls() as provider_calls:
            try:
                await self.app(scope, receive, tracking_send)
            finally:
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                extra: dict[str, object] = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                }
                if provider_calls:
                    extra["provider_calls"] = provider_calls
                logger.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    duration_ms,
                    extra=extra,
                )
