"""Starlette's CORS middleware with its preflight refusals in the endpoint's one JSON shape."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from payout_gateway.web.http_errors import HTTPRefusal, refusal_response

# Starlette answers a preflight it refuses with a plain-text 400 ("Disallowed CORS origin,
# method"); every other refusal of the gateway's is a GraphQL-style JSON body with a code.
CORS_REFUSED = "CORS_PREFLIGHT_REFUSED"


class GatewayCORSMiddleware(CORSMiddleware):
    """CORSMiddleware whose refused preflight answers ``CORS_PREFLIGHT_REFUSED`` as JSON, with
    the same status and headers and a message naming what was refused."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        # Starlette's text names what failed: "Disallowed CORS origin, method, headers".
        reason = bytes(answer.body).decode()
        refused = reason.removeprefix("Disallowed CORS ")
        refusal = HTTPRefusal(
            400,
            f"CORS preflight refused: this {refused} is not allowed on this endpoint.",
            CORS_REFUSED,
            headers={
                name: value
                for name, value in answer.headers.items()
                if name not in ("content-length", "content-type")
            },
        )
        return refusal_response(refusal)
