"""The GraphQL view's fast path for JSON POSTs (its own body parser and its own steps through
Strawberry's view) answers every request as Strawberry's own ``run`` and body parser do."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from payout_gateway.graphql.context import GatewayContext, PagingLimits
from payout_gateway.graphql.schema import build_schema
from payout_gateway.service import PayoutService
from payout_gateway.web.graphql_router import GatewayGraphQL


class StrawberrysOwnPath(GatewayGraphQL):
    """The same view, every request taken by Strawberry's own ``run`` and its bodies parsed by
    Strawberry's own code (the refusals of both answered alike, by the gateway's
    ``__call__``)."""

    async def _run_json_operation(self, request: Request) -> Response:
        return await self.run(request)

    parse_http_body = AsyncBaseHTTPView.parse_http_body  # type: ignore[assignment]


async def anonymous(connection: HTTPConnection) -> GatewayContext:
    return GatewayContext(
        service=cast(PayoutService, object()), organization=None, paging=PagingLimits(20, 100)
    )


def view(cls: type[GatewayGraphQL], graphql_ide: str | None) -> GatewayGraphQL:
    return cls(
        build_schema(),
        context=anonymous,
        graphql_ide=graphql_ide,  # type: ignore[arg-type]
        allow_queries_via_get=False,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )


JSON = {"content-type": "application/json"}
TYPENAME = {"query": "{ __typename }"}
# (method, headers, body; for a GET: its query string)
REQUESTS: list[tuple[str, dict[str, str], str | None]] = [
    ("POST", JSON, json.dumps(TYPENAME)),
    ("POST", JSON, json.dumps({**TYPENAME, "operationName": None, "variables": None})),
    ("POST", JSON, json.dumps({"query": "query A { __typename } query B { __typename }"})),
    ("POST", JSON, json.dumps({**TYPENAME, "operationName": "Missing"})),
    ("POST", JSON, json.dumps({"query": "{ organization { name } }", "extensions": {}})),
    ("POST", JSON, json.dumps({"query": "subscription { x }"})),
    ("POST", JSON, json.dumps({"query": "{ nope"})),
    ("POST", JSON, json.dumps({})),
    ("POST", JSON, json.dumps({"query": None})),
    ("POST", JSON, json.dumps({"query": 1})),
    ("POST", JSON, json.dumps({**TYPENAME, "variables": []})),
    ("POST", JSON, json.dumps({**TYPENAME, "extensions": "x"})),
    ("POST", JSON, json.dumps([TYPENAME])),
    ("POST", JSON, "{"),
    ("POST", JSON, "[" * 5000),
    ("POST", JSON, ""),
    ("POST", {"content-type": "application/json; charset=utf-8"}, json.dumps(TYPENAME)),
    ("POST", {"content-type": "text/plain"}, json.dumps(TYPENAME)),
    ("POST", {}, json.dumps(TYPENAME)),
    ("POST", {**JSON, "accept": "text/event-stream"}, json.dumps(TYPENAME)),
    ("GET", {"accept": "text/html"}, None),
    ("GET", {"accept": "text/html"}, "?query={ __typename }"),
    ("GET", {"accept": "application/json"}, "?query={ __typename }"),
    ("GET", {}, "?query=mutation { x }"),
    ("PUT", JSON, json.dumps(TYPENAME)),
]
# JSON that is neither an object nor a batch: Strawberry's parser fails on it with an
# AttributeError (a 500 behind a server); the gateway answers 400.
NOT_AN_OBJECT = [json.dumps("x"), json.dumps(1), json.dumps(None), json.dumps(True)]


async def outcome(
    app: GatewayGraphQL, method: str, headers: dict[str, str], body: str | None
) -> Any:
    url, content = ("/graphql" + (body or ""), None) if method == "GET" else ("/graphql", body)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        try:
            response = await client.request(method, url, headers=headers, content=content)
        except Exception as exc:  # the app's own failure, as a server would see it
            return type(exc)
    return response.status_code, sorted(response.headers.items()), response.content


@pytest.mark.parametrize("graphql_ide", ["graphiql", None])
@pytest.mark.parametrize(("method", "headers", "body"), REQUESTS)
async def test_answers_exactly_as_strawberry(
    graphql_ide: str | None, method: str, headers: dict[str, str], body: str | None
) -> None:
    expected = await outcome(view(StrawberrysOwnPath, graphql_ide), method, headers, body)
    assert await outcome(view(GatewayGraphQL, graphql_ide), method, headers, body) == expected


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
@pytest.mark.parametrize("body", NOT_AN_OBJECT)
async def test_a_json_body_that_is_not_an_object_is_a_400(content_type: str, body: str) -> None:
    headers = {"content-type": content_type}
    assert await outcome(view(StrawberrysOwnPath, None), "POST", headers, body) is AttributeError
    status, _, content = await outcome(view(GatewayGraphQL, None), "POST", headers, body)
    message = "The GraphQL request body must be a JSON object."
    error = {"message": message, "extensions": {"code": "BAD_REQUEST"}}
    assert (status, json.loads(content)) == (400, {"errors": [error]})


async def test_with_batching_on_a_batch_still_reaches_strawberry_s_own_path() -> None:
    schema = build_schema()
    schema.config.batching_config = {"max_operations": 3}
    gateway = GatewayGraphQL(schema, context=anonymous, allow_queries_via_get=False)
    body = json.dumps([TYPENAME, TYPENAME])
    status, _, content = await outcome(gateway, "POST", JSON, body)
    assert (status, json.loads(content)) == (200, [{"data": {"__typename": "Query"}}] * 2)


def test_answers_are_encoded_as_compact_json_even_what_orjson_refuses() -> None:
    gateway = view(GatewayGraphQL, None)
    assert gateway.encode_json({"data": {"name": "Zoë", "n": 1}}) == '{"data":{"name":"Zoë","n":1}}'
    # orjson stops at 64-bit integers; a JSON scalar could hold a larger one.
    assert gateway.encode_json({"data": {"n": 2**70}}) == '{"data":{"n":1180591620717411303424}}'
