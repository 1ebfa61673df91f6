"""The GraphQL endpoint's HTTP edges: its refusals (one JSON shape, a stable code, the right
status) and the media type its answers are sent as."""

from __future__ import annotations

from collections.abc import Mapping
from json import JSONDecodeError
from typing import Any

from cross_web import HTTPException
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from payout_gateway.domain.errors import SecretsUnreadableError
from payout_gateway.graphql.schema import SubscriptionOverHttpError
from payout_gateway.json_text import json_text
from payout_gateway.request_log import current_request_id

# What a refusal is sent as: the media type of GraphQL answers, so a client reads one shape.
JSON_MEDIA_TYPE = "application/json"
# The GraphQL-over-HTTP spec's own, for a client that asks for it: its status codes can be
# trusted (a 4xx is the server's, a 200 means the operation ran), unlike application/json's.
GRAPHQL_RESPONSE_MEDIA_TYPE = "application/graphql-response+json"
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE_MEDIA_TYPE}; charset=utf-8"
_JSON_RANGES = (JSON_MEDIA_TYPE, "application/*", "*/*")


def response_content_type(accept: str | None) -> str:
    """The content type of an answer to a request with this Accept header: the spec's
    ``application/graphql-response+json`` where the client ranks it first (by q, then by
    order), else ``application/json``, also for no Accept or one naming neither (the answer
    a legacy client reads, rather than a 406)."""
    if not accept or "graphql-response" not in accept.lower():
        return JSON_MEDIA_TYPE
    best: tuple[float, int, bool] = (0.0, 0, False)  # (q, -position, graphql-response+json)
    for position, item in enumerate(accept.split(",")):
        media_type, params = parse_content_type(item)
        media_type = media_type.lower()
        is_graphql = media_type == GRAPHQL_RESPONSE_MEDIA_TYPE
        if not is_graphql and media_type not in _JSON_RANGES:
            continue
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            continue
        if q > 0 and (q, -position) > best[:2]:
            best = (q, -position, is_graphql)
    return GRAPHQL_RESPONSE_CONTENT_TYPE if best[2] else JSON_MEDIA_TYPE


def is_request_error(response: Mapping[str, Any]) -> bool:
    """Whether a GraphQL response answers a request error (a document that does not parse or
    validate, variables that do not fit, no operation to run): no data, and errors none of
    which is a field's (a field error has a path)."""
    errors = response.get("errors") or ()
    return (
        response.get("data") is None
        and bool(errors)
        and all(isinstance(error, Mapping) and "path" not in error for error in errors)
    )


class HTTPRefusal(HTTPException):
    """A request the endpoint refuses before running an operation, with the code a client
    can branch on and the headers its status calls for (``Allow`` on a 405, ...)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


# The one table of codes for Strawberry's own refusals, which carry only a status and a
# reason: by status, where nothing more specific is known (see ``refusal_for``).
_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    503: "STORE_UNAVAILABLE",
}
# Strawberry serves GET (GraphiQL) and POST on the endpoint; operations go over POST only.
ALLOW_ENDPOINT = {"allow": "GET, POST"}
ALLOW_OPERATIONS = {"allow": "POST"}


def refusal_for(exc: HTTPException) -> HTTPRefusal:
    """``exc`` as a refusal with a code: the gateway's own as raised; Strawberry's by what
    caused it (it raises them ``from`` the parser's or the schema's error) or else by status."""
    if isinstance(exc, HTTPRefusal):
        return exc
    cause = exc.__cause__
    status, message = exc.status_code, exc.reason
    if isinstance(cause, JSONDecodeError):
        # Not JSON at all: empty, cut short, not UTF-8, nested too deep.
        return HTTPRefusal(400, message, "INVALID_JSON")
    if isinstance(cause, SubscriptionOverHttpError):
        return HTTPRefusal(400, message, "SUBSCRIPTION_REQUIRES_WEBSOCKET")
    if isinstance(cause, InvalidOperationTypeError):
        # An operation sent with GET (queries too: the gateway runs none over GET): the
        # GraphQL-over-HTTP spec's 405 for a mutation, and HTTP's for the rest.
        return HTTPRefusal(405, message, "METHOD_NOT_ALLOWED", headers=ALLOW_OPERATIONS)
    if isinstance(cause, CannotGetOperationTypeError):
        return HTTPRefusal(400, message, "OPERATION_NOT_FOUND")
    if isinstance(cause, MissingQueryError):
        return HTTPRefusal(400, message, "BAD_REQUEST")
    headers = ALLOW_ENDPOINT if status == 405 else None
    return HTTPRefusal(status, message, _CODE_BY_STATUS.get(status, "BAD_REQUEST"), headers=headers)


def refusal_body(message: str, code: str, extensions: Mapping[str, Any] | None = None) -> bytes:
    """A GraphQL response holding one request error and no ``data``: nothing ran."""
    error = {"message": message, "extensions": {"code": code, **(extensions or {})}}
    return json_text({"errors": [error]}).encode()


def refusal_response(refusal: HTTPRefusal, content_type: str = JSON_MEDIA_TYPE) -> Response:
    return Response(
        refusal_body(refusal.reason, refusal.code, refusal.extensions),
        status_code=refusal.status_code,
        headers=refusal.headers,
        media_type=content_type,
    )


def unsupported_media_type(content_type: str | None, *, multipart: bool) -> HTTPRefusal | None:
    """The refusal of a POST body of a media type or charset the endpoint does not read;
    None for JSON in UTF-8 (and multipart/form-data where uploads are on).

    A 415, not a 400: the body may be a fine GraphQL request in a format the gateway does not
    take. ``text/plain`` and form bodies are what a browser sends cross-site without a CORS
    preflight, so refusing them before anything runs also keeps a page elsewhere from posting
    an operation with the user's cookies; ``application/graphql`` (a bare document) was
    dropped by the GraphQL-over-HTTP spec and is refused too."""
    media_type, params = parse_content_type(content_type or "")
    media_type = media_type.lower()  # media types are case-insensitive (RFC 9110)
    if media_type == "multipart/form-data" and multipart:
        return None
    if media_type != JSON_MEDIA_TYPE:
        given = f"not `{media_type}`" if media_type else "none was sent"
        return HTTPRefusal(
            415,
            f"Send the GraphQL request as `Content-Type: application/json` ({given}).",
            "UNSUPPORTED_MEDIA_TYPE",
            headers={"accept": JSON_MEDIA_TYPE},
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        # The body is read as UTF-8 whatever is declared: another charset would be misread.
        return HTTPRefusal(
            415,
            "Send the GraphQL request encoded as UTF-8 (`charset=utf-8`).",
            "UNSUPPORTED_MEDIA_TYPE",
            headers={"accept": f"{JSON_MEDIA_TYPE}; charset=utf-8"},
        )
    return None


def store_unavailable(message: str) -> HTTPRefusal:
    """The refusal of a request whose credential could not be looked up: retryable, with the
    request's id, as a query's STORE_UNAVAILABLE error carries them."""
    return _retry_later(message, "STORE_UNAVAILABLE")


def secrets_unreadable(error: SecretsUnreadableError) -> HTTPRefusal:
    """The refusal of a request whose organization's secrets the configured keys do not open:
    the gateway is misconfigured, and serves it again once its operator lists the key."""
    return _retry_later(error.message, error.code)


def _retry_later(message: str, code: str) -> HTTPRefusal:
    extensions: dict[str, Any] = {"retryable": True}
    request_id = current_request_id()
    if request_id is not None:
        extensions["requestId"] = request_id
    return HTTPRefusal(503, message, code, extensions=extensions)
