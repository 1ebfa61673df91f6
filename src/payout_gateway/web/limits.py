"""ASGI middleware refusing request bodies over a size limit before anything parses them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payout_gateway.web.http_errors import refusal_body, response_content_type

# The GraphQL endpoint's refusal shape (web/http_errors.py), whichever route was asked.
TOO_LARGE = refusal_body("Request body too large.", "BODY_TOO_LARGE")


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a declared or streamed body over ``max_bytes``; memory stays flat either way."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _too_large(scope, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(scope, send)


async def _too_large(scope: Scope, send: Send) -> None:
    accept = next((v for k, v in scope.get("headers", ()) if k == b"accept"), b"")
    content_type = response_content_type(accept.decode("latin-1"))
    body = TOO_LARGE
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
