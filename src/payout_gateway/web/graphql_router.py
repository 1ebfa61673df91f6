"""The GraphQL endpoint: Strawberry's plain ASGI app with a body parser that cannot 500 and
authentication of WebSocket connections at ``connection_init``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types.unset import UnsetType

from payout_gateway.domain.errors import SecretsUnreadableError, StoreUnavailableError
from payout_gateway.domain.models import Organization
from payout_gateway.graphql.compiled import compiled_operations
from payout_gateway.graphql.context import GatewayContext
from payout_gateway.graphql.safety import NOT_ACCEPTED, NOT_BEARER, bearer_credential
from payout_gateway.json_text import json_text
from payout_gateway.request_log import request_id_for, reset_request_id, set_request_id
from payout_gateway.web.http_errors import (
    JSON_MEDIA_TYPE,
    is_request_error,
    refusal_for,
    refusal_response,
    response_content_type,
    secrets_unreadable,
    store_unavailable,
    unsupported_media_type,
)

# (the connection, the value of an Authorization header) -> its organization, or None.
Authenticator = Callable[[HTTPConnection, str], Awaitable[Organization | None]]
# A request, or a WebSocket once per connection -> the context its operations run with. It
# authenticates a request; a WebSocket's credential is left to ``on_ws_connect``.
ContextBuilder = Callable[[HTTPConnection], Awaitable[GatewayContext]]

logger = logging.getLogger(__name__)

# A bare connection_ack (no payload): UnsetType is a singleton, typed unlike strawberry's UNSET.
ACK = UnsetType()
# graphql-transport-ws's close code for a connection refused at connection_init.
FORBIDDEN = 4403
# The reasons given with it (a close frame's reason is at most 123 bytes, RFC 6455); a
# credential sent but refused gets NOT_BEARER or NOT_ACCEPTED, as over HTTP.
MISSING_CREDENTIAL = (
    'Authentication required: send {"Authorization": "Bearer <API key or JWT>"} in connection_init.'
)
# RFC 6455's "Try Again Later": the server cannot serve the connection now, a later one may be.
# graphql-ws clients reconnect after it (they give up after other 1xxx codes but a few), and it
# cannot be mistaken for graphql-transport-ws's 4403 Forbidden, which a bad credential gets.
TRY_AGAIN_LATER = 1013
# A close frame's reason is at most 123 bytes (RFC 6455); this says what happened and what to do.
STORE_UNAVAILABLE_REASON = "The gateway's database is unavailable; retry the connection later."
SECRETS_UNREADABLE_REASON = (
    "The gateway is misconfigured: it cannot read this organization's credentials; retry later."
)


class ConnectionRefused(Exception):
    """``on_ws_connect``'s refusal of a connection's credential, with the reason its close
    frame gives. Not a ConnectionRejectionError: Strawberry's handler closes on one with the
    bare reason "Forbidden", whatever was wrong, and drops the payload it carries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GatewayTransportWSHandler(BaseGraphQLTransportWSHandler[GatewayContext, None]):
    """Strawberry's graphql-transport-ws handler, except for how a connection is refused at
    connection_init: a bad credential (ConnectionRefused) is closed with 4403 (Forbidden) and a
    reason saying what to fix; one that could not be looked up, as the database is unavailable,
    or whose organization's secrets the configured keys do not open, with 1013 (Try Again
    Later). Any error but Strawberry's ConnectionRejectionError escapes Strawberry's own
    handler, and the server drops the connection without a close frame (an abnormal closure,
    1006, to the client) and logs a traceback."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except ConnectionRefused as refused:
            await self.websocket.close(code=FORBIDDEN, reason=refused.reason)
        except StoreUnavailableError as outage:
            # A WebSocket has no access line: this is the record that a client was turned
            # away. The cause's type only, as the store logs it; nothing of the credential.
            cause = outage.__cause__ or outage
            logger.warning(
                "WebSocket connection closed with %d: the database failed: %s",
                TRY_AGAIN_LATER,
                type(cause).__name__,
            )
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=STORE_UNAVAILABLE_REASON)
        except SecretsUnreadableError:
            # Served again once an operator lists the key (told in the log, once, by the
            # store): a client is to retry, as after an outage, not to give up on its key.
            logger.warning(
                "WebSocket connection closed with %d: the organization's stored secrets do "
                "not open with the configured keys",
                TRY_AGAIN_LATER,
            )
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=SECRETS_UNREADABLE_REASON)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Each operation gets a request id of its own, as each HTTP request does: the lines
        # logged while it runs carry it, and its masked errors and outage errors give it as
        # ``extensions.requestId``, so that a client can quote it. Strawberry starts the
        # operation's task in here, and a task keeps the context it was started in.
        token = set_request_id(request_id_for(None))
        try:
            await super().handle_subscribe(message)
        finally:
            reset_request_id(token)


class GatewayGraphQL(GraphQL[GatewayContext, None]):
    """Mounted as a plain route, not through FastAPI's router: FastAPI would resolve the
    context as a dependency and wrap the handler on every request, which profiling showed as
    a measurable share of a small mutation's CPU, for nothing this endpoint uses."""

    graphql_transport_ws_handler_class = GatewayTransportWSHandler

    def __init__(
        self,
        schema: BaseSchema,
        *,
        context: ContextBuilder,
        authenticate: Authenticator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self._build_context = context
        self._authenticate = authenticate
        # Streaming over HTTP (SSE, multipart) is offered only if a protocol asks for it.
        self._http_streaming = any(
            p in self.stream_transport_classes_by_protocol for p in self.protocols
        )
        # Without streaming transports, batches or incremental delivery (@defer, @stream), a
        # JSON POST is one operation whose result is one ExecutionResult: what the fast path
        # in ``__call__`` handles.
        self._json_fast_path = (
            not self._http_streaming
            and schema.config.batching_config is None
            and not schema.config.enable_experimental_incremental_execution
        )
        # One-field operations executed by a plan per document (graphql/compiled.py); None
        # for a schema it does not cover.
        self._compiled = compiled_operations(schema) if self._json_fast_path else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # a WebSocket: Strawberry's
            return
        # Strawberry's own ``__call__`` answers its refusals (HTTPException) in plain text;
        # here every one, Strawberry's and the gateway's, is answered in one JSON shape with
        # a code (web/http_errors.py), whichever path raised it.
        request = Request(scope, receive)
        try:
            response = await self._respond(request)
        except HTTPException as exc:
            content_type = response_content_type(request.headers.get("accept"))
            response = refusal_response(refusal_for(exc), content_type)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        if request.method == "POST":
            content_type = request.headers.get("content-type")
            if content_type != "application/json":
                # Before anything runs or is read, the credential's lookup included.
                refusal = unsupported_media_type(
                    content_type, multipart=self.multipart_uploads_enabled
                )
                if refusal is not None:
                    raise refusal
            # The gateway's every request, one operation POSTed as JSON, takes the steps of
            # Strawberry's ``run`` that apply to it, in its order, through the same hooks.
            # Skipping the rest of ``run`` (WebSockets, the IDE, GET, batches, streaming,
            # incremental results; an isinstance against a runtime-checkable Protocol alone
            # was ~1.5 % of an add's CPU) took 4.7 % off an add's instructions
            # (bench/PROFILE.md, ninth round). Anything else goes to Strawberry; a test
            # compares the answers of both paths for every kind of request.
            if self._json_fast_path and _is_json(content_type):
                return await self._run_json_operation(request)
        return await self.run(request)

    async def _run_json_operation(self, request: Request) -> Response:
        request_adapter = self.request_adapter_class(request)
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        request_data = await self.parse_http_body(request_adapter)
        if not isinstance(request_data, GraphQLRequestData):  # batching is off: never a list
            raise TypeError("a batch of operations on the JSON fast path")
        result = None
        if self._compiled is not None:
            result = await self._compiled.execute(request_data, context)
        if result is None:
            result = await self.execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=None,  # the view's root value type is None: no get_root_value
                request_data=request_data,
            )
        response_data = await self.process_result(request=request, result=result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        return self.create_response(response_data=response_data, sub_response=sub_response)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # The media type the answer is to be sent as (see ``create_response``).
        sub_response.media_type = response_content_type(request.headers.get("accept"))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        # Strawberry's answer is always application/json. Asked for the spec's
        # application/graphql-response+json, a request error (nothing ran) is a 400 without
        # ``data``, as that media type requires; anything that ran stays a 200.
        content_type = sub_response.media_type
        if content_type is None or content_type == JSON_MEDIA_TYPE:
            return super().create_response(response_data, sub_response)
        if isinstance(response_data, dict) and is_request_error(response_data):
            response_data = {"errors": response_data["errors"]}
            sub_response.status_code = sub_response.status_code or 400
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = content_type
        return response

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GatewayContext:
        try:
            context = await self._build_context(request)
        except StoreUnavailableError as outage:
            # The request's credential could not be looked up: no operation runs, whatever it
            # was. (A WebSocket's is looked up at connection_init, see ``on_ws_connect``.)
            raise store_unavailable(outage.message) from None
        except SecretsUnreadableError as misconfigured:
            raise secrets_unreadable(misconfigured) from None
        context.request = request
        context.response = response if isinstance(response, Response) else None
        return context

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        # A JSON POST is parsed here: the gateway's every request, an object sent as plain
        # application/json, skips Strawberry's content-type parser (the email package's) and
        # its scan of the Accept header for streaming transports; and a body that is JSON but
        # neither an object nor a (refused) batch gets a 400, where Strawberry's parser would
        # fail with an AttributeError, a 500. Anything else is Strawberry's to parse.
        if not self._http_streaming and request.method == "POST" and _is_json(request.content_type):
            data = self.parse_json(await request.get_body())
            if isinstance(data, dict):
                return _one_operation(data)
            if not isinstance(data, list):
                raise HTTPException(400, "The GraphQL request body must be a JSON object.")
        return await super().parse_http_body(request)

    def decode_json(self, data: str | bytes) -> object:
        # orjson's errors are JSONDecodeErrors, which Strawberry answers with a 400, nesting
        # deeper than 1,024 levels and strings no UTF-8 can hold (lone surrogates) included.
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        # A str, not bytes: Strawberry sends bytes over a WebSocket as binary frames, which
        # graphql-transport-ws does not allow.
        # What orjson refuses (an integer beyond 64 bits in a JSON scalar) gets the standard
        # library's encoding, as Strawberry's own would, rather than a 500.
        return json_text(data)

    async def on_ws_connect(self, context: GatewayContext) -> UnsetType | dict[str, object] | None:
        """Decide the connection's organization from the ``connection_init`` payload.

        Browsers cannot set headers on a WebSocket handshake, so the credential travels in the
        payload (``Authorization`` or ``authorization``; GraphiQL sends its Headers tab there).
        A payload without one falls back on the handshake's ``Authorization`` header
        (server-side clients); with neither, or with a bad one, the socket is closed with 4403
        and a reason that says which (``ConnectionRefused``).
        Both are looked up here rather than at the handshake, so that a database outage can be
        answered in the protocol: the StoreUnavailableError raised then closes the socket with
        1013 (``GatewayTransportWSHandler``).
        """
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("Authorization", params.get("authorization"))
        connection = context.request
        if authorization is None and isinstance(connection, HTTPConnection):
            authorization = connection.headers.get("authorization")
        if not isinstance(authorization, str) or not authorization.strip():
            raise ConnectionRefused(MISSING_CREDENTIAL)
        if bearer_credential(authorization) is None:
            raise ConnectionRefused(NOT_BEARER)
        organization = None
        if self._authenticate is not None and isinstance(connection, HTTPConnection):
            organization = await self._authenticate(connection, authorization)
            # Asked again before each event the connection receives: a revoked key stops.
            context.reauthenticate = partial(self._authenticate, connection, authorization)
        if organization is None:
            raise ConnectionRefused(NOT_ACCEPTED)
        # The one place a connection's organization is decided; operations never take it as
        # an argument.
        context.organization = organization
        return ACK


def _is_json(content_type: str | None) -> bool:
    """Whether the body is JSON (any letter case: media types are case-insensitive, where
    Strawberry's parser would refuse ``Application/JSON``)."""
    return content_type == "application/json" or (
        parse_content_type(content_type or "")[0].lower() == "application/json"
    )


def _one_operation(data: dict[str, Any]) -> GraphQLRequestData:
    """The operation of a JSON request body, refused as Strawberry's ``parse_http_body``
    refuses it."""
    query = data.get("query")
    if not isinstance(query, str | None):
        raise HTTPException(
            400, "The GraphQL operation's `query` must be a string or null, if provided."
        )
    variables = data.get("variables")
    if not isinstance(variables, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `variables` must be an object or null, if provided."
        )
    extensions = data.get("extensions")
    if not isinstance(extensions, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `extensions` must be an object or null, if provided."
        )
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=data.get("operationName"),
        extensions=extensions,
        protocol="http",
    )
