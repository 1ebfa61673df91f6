"""The GraphQL endpoint's HTTP edges over a real socket: every refusal is a GraphQL-style JSON
body (``{"errors": [{"message", "extensions": {"code"}}]}``, no ``data``) with a stable code and
the status and headers HTTP gives it; and nothing runs behind one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from payout_gateway.domain.enums import Provider
from tests.support.fakes import FakeProvider, fake_providers
from tests.support.gateway import RunningGateway, running_gateway

TYPENAME = json.dumps({"query": "{ __typename }"})
ADD = (
    'mutation { addBankAccount(input: {bankAccount: {accountNumber: "000123456789", '
    'holderName: "Ada"}}) { __typename } }'
)


@pytest.fixture(scope="module")
def fakes() -> dict[Provider, FakeProvider]:
    return fake_providers()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[Provider, FakeProvider]
) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("edges"), providers=fakes, refresh_interval_seconds=0
    ) as running:
        yield running


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    """(status, code, message) of a refusal, after checking its shape and media type."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"errors"}, body  # no data: nothing ran
    [error] = body["errors"]
    assert set(error) == {"message", "extensions"}, error
    return response.status_code, error["extensions"]["code"], error["message"]


JSON = {"content-type": "application/json"}
# (method, headers, body or GET query string, status, code)
REFUSALS = [
    ("POST", JSON, "{", 400, "INVALID_JSON"),
    ("POST", JSON, "", 400, "INVALID_JSON"),
    ("POST", JSON, "[" * 5000, 400, "INVALID_JSON"),
    ("POST", JSON, b'{"query": "{ __typename }", "x": "\xff"}', 400, "INVALID_JSON"),
    ("POST", JSON, "{}", 400, "BAD_REQUEST"),
    ("POST", JSON, '"x"', 400, "BAD_REQUEST"),
    ("POST", JSON, '{"query": 1}', 400, "BAD_REQUEST"),
    ("POST", JSON, '{"query": "{ __typename }", "variables": []}', 400, "BAD_REQUEST"),
    ("POST", JSON, '{"query": "{ __typename }", "extensions": "x"}', 400, "BAD_REQUEST"),
    ("POST", JSON, f"[{TYPENAME}, {TYPENAME}]", 400, "BAD_REQUEST"),
    (
        "POST",
        JSON,
        '{"query": "{ __typename }", "operationName": "Missing"}',
        400,
        "OPERATION_NOT_FOUND",
    ),
    (
        "POST",
        JSON,
        '{"query": "subscription { payoutStatusChanged { toStatus } }"}',
        400,
        "SUBSCRIPTION_REQUIRES_WEBSOCKET",
    ),
    ("POST", {"content-type": "text/plain"}, TYPENAME, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "POST",
        {"content-type": "application/graphql"},
        "{ __typename }",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "POST",
        {"content-type": "application/x-www-form-urlencoded"},
        "query=%7B__typename%7D",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "POST",
        {"content-type": "multipart/form-data; boundary=x"},
        "--x--",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "POST",
        {"content-type": "application/json-patch+json"},
        TYPENAME,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("POST", {}, TYPENAME, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "POST",
        {"content-type": "application/json; charset=iso-8859-1"},
        TYPENAME,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("PUT", JSON, TYPENAME, 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", {}, None, 405, "METHOD_NOT_ALLOWED"),
    ("GET", {}, "?query=mutation { x }", 405, "METHOD_NOT_ALLOWED"),
    ("GET", {"accept": "application/json"}, "?query={ __typename }", 405, "METHOD_NOT_ALLOWED"),
    ("GET", {"accept": "application/json"}, "", 400, "BAD_REQUEST"),
]


@pytest.mark.parametrize(("method", "headers", "body", "status", "code"), REFUSALS)
def test_every_refusal_is_json_with_a_code(
    gw: RunningGateway,
    method: str,
    headers: dict[str, str],
    body: str | bytes | None,
    status: int,
    code: str,
) -> None:
    if method == "GET":
        response = httpx.get(gw.graphql_url + (body or ""), headers=headers)
    else:
        request = httpx.Request(method, gw.graphql_url, headers=headers, content=body)
        assert request.headers.get("content-type") == headers.get("content-type")
        with httpx.Client() as client:
            response = client.send(request)
    answered_status, answered_code, message = refusal(response)
    assert (answered_status, answered_code) == (status, code), message
    assert response.headers["x-request-id"]


def test_a_405_says_which_methods_are_allowed(gw: RunningGateway) -> None:
    put = httpx.put(gw.graphql_url, content=TYPENAME, headers=JSON)
    assert (put.status_code, put.headers["allow"]) == (405, "GET, POST")
    # GET serves GraphiQL only: an operation sent with it is told to use POST.
    via_get = httpx.get(gw.graphql_url, params={"query": "mutation { x }"})
    assert (via_get.status_code, via_get.headers["allow"]) == (405, "POST")


def test_a_415_says_what_the_endpoint_reads(gw: RunningGateway) -> None:
    text = httpx.post(gw.graphql_url, content=TYPENAME, headers={"content-type": "text/plain"})
    assert text.headers["accept"] == "application/json"
    assert "`Content-Type: application/json`" in text.json()["errors"][0]["message"]
    latin = httpx.post(
        gw.graphql_url,
        content=TYPENAME,
        headers={"content-type": "application/json; charset=latin1"},
    )
    assert "UTF-8" in latin.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/JSON",
    ],
)
def test_json_in_utf_8_is_read_whatever_the_spelling(gw: RunningGateway, content_type: str) -> None:
    response = httpx.post(gw.graphql_url, content=TYPENAME, headers={"content-type": content_type})
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_mutation_in_a_body_a_browser_sends_cross_site_never_runs(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider], content_type: str
) -> None:
    # The three content types a page elsewhere can POST without a CORS preflight.
    calls = fakes[Provider.COMMET].calls["add_bank_account"]
    response = httpx.post(
        gw.graphql_url,
        content=json.dumps({"query": ADD}),
        headers={**gw.headers("commet-a"), "content-type": content_type},
    )
    assert refusal(response)[:2] == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert fakes[Provider.COMMET].calls["add_bank_account"] == calls


def test_an_oversized_body_is_refused_in_the_same_shape(gw: RunningGateway) -> None:
    response = httpx.post(gw.graphql_url, content=b"{" + b" " * (1024 * 1024) + b"}", headers=JSON)
    assert refusal(response) == (413, "BODY_TOO_LARGE", "Request body too large.")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("production"), providers={}, environment="production"
    ) as running:
        yield running


def test_without_graphiql_the_page_is_a_json_404(production: RunningGateway) -> None:
    page = httpx.get(production.graphql_url, headers={"accept": "text/html"})
    assert refusal(page)[:2] == (404, "NOT_FOUND")


APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def cors_gw(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[Provider, FakeProvider]
) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("cors"),
        providers=fakes,
        refresh_interval_seconds=0,
        cors_origins=[APP_ORIGIN],
    ) as running:
        yield running


def test_a_browser_app_may_send_and_read_the_request_id(cors_gw: RunningGateway) -> None:
    preflight = httpx.options(
        cors_gw.graphql_url,
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    answer = httpx.post(
        cors_gw.graphql_url,
        content=TYPENAME,
        headers={**JSON, "Origin": APP_ORIGIN, "X-Request-Id": "app-42"},
    )
    assert answer.headers["x-request-id"] == "app-42"
    # Without this a page's script cannot read the header, whatever the server sent.
    assert answer.headers["access-control-expose-headers"].lower() == "x-request-id"
    refused = httpx.post(cors_gw.graphql_url, content="{", headers={**JSON, "Origin": APP_ORIGIN})
    assert refused.headers["access-control-expose-headers"].lower() == "x-request-id"
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
    ],
)
def test_the_probes_answer_head_as_they_answer_get(
    gw: RunningGateway, path: str, content_type: str
) -> None:
    # A load balancer's health check may send HEAD; FastAPI's routes answered it with 405.
    got = httpx.get(gw.url + path)
    head = httpx.head(gw.url + path)
    assert (got.status_code, head.status_code) == (200, 200)
    assert got.headers["content-type"] == head.headers["content-type"] == content_type
    assert got.content and not head.content


SPEC_TYPE = "application/graphql-response+json; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),
        ("application/graphql-response+json", SPEC_TYPE),
        ("application/graphql-response+json, application/json", SPEC_TYPE),
        ("application/json, application/graphql-response+json", "application/json"),
        ("application/json;q=0.9, application/graphql-response+json", SPEC_TYPE),
        ("application/graphql-response+json;q=0.5, application/json", "application/json"),
        ("application/graphql-response+json;q=0, */*", "application/json"),
        ("Application/GraphQL-Response+JSON", SPEC_TYPE),
    ],
)
def test_the_answer_s_media_type_is_the_one_the_client_ranks_first(
    gw: RunningGateway, accept: str | None, content_type: str
) -> None:
    headers = {**JSON, **({"accept": accept} if accept is not None else {})}
    answer = httpx.post(gw.graphql_url, content=TYPENAME, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"data": {"__typename": "Query"}})
    assert answer.headers["content-type"] == content_type


SPEC = {**JSON, "accept": "application/graphql-response+json"}


@pytest.mark.parametrize(
    "body",
    [
        {"query": "{ nope"},  # does not parse
        {"query": "{ nope }"},  # does not validate
        {"query": "query($n: Int!) { __typename }", "variables": {"n": "x"}},  # variables
    ],
)
def test_a_request_error_is_a_400_without_data_in_the_spec_s_media_type(
    gw: RunningGateway, body: dict[str, object]
) -> None:
    answer = httpx.post(gw.graphql_url, content=json.dumps(body), headers=SPEC)
    assert answer.headers["content-type"] == SPEC_TYPE
    assert answer.status_code == 400
    assert set(answer.json()) == {"errors"}
    # The same with application/json: 200, as the spec has it for that media type.
    legacy = httpx.post(gw.graphql_url, content=json.dumps(body), headers=JSON)
    assert (legacy.status_code, legacy.json()["data"]) == (200, None)


def test_an_operation_that_ran_is_a_200_in_the_spec_s_media_type(gw: RunningGateway) -> None:
    # No credential: the field's error nulls data, but the operation ran (a field error).
    anonymous = httpx.post(
        gw.graphql_url, content=json.dumps({"query": "{ organization { name } }"}), headers=SPEC
    )
    assert (anonymous.status_code, anonymous.headers["content-type"]) == (200, SPEC_TYPE)
    body = anonymous.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    signed = httpx.post(
        gw.graphql_url,
        content=json.dumps({"query": "{ organization { name } }"}),
        headers={**SPEC, **gw.headers("commet-a")},
    )
    assert (signed.status_code, signed.json()) == (
        200,
        {"data": {"organization": {"name": "commet-a"}}},
    )


def test_a_refusal_is_sent_in_the_media_type_asked_for(gw: RunningGateway) -> None:
    for body, status in ((b"{", 400), (b"{" + b" " * (1024 * 1024) + b"}", 413)):
        answer = httpx.post(gw.graphql_url, content=body, headers=SPEC)
        assert (answer.status_code, answer.headers["content-type"]) == (status, SPEC_TYPE)
        assert set(answer.json()) == {"errors"}
    text = httpx.post(
        gw.graphql_url, content=TYPENAME, headers={**SPEC, "content-type": "text/plain"}
    )
    assert (text.status_code, text.headers["content-type"]) == (415, SPEC_TYPE)


@pytest.mark.parametrize(
    "document",
    [
        f"query A {{ __typename }} {ADD.replace('mutation', 'mutation B', 1)}",
        f"{ADD.replace('mutation', 'mutation B', 1)} query A {{ __typename }}",
    ],
)
def test_several_operations_without_a_name_run_none_of_them(
    gw: RunningGateway, fakes: dict[Provider, FakeProvider], document: str
) -> None:
    # Strawberry ran the first operation of the document, a mutation included.
    calls = fakes[Provider.COMMET].calls["add_bank_account"]
    headers = {**JSON, **gw.headers("commet-a")}
    answer = httpx.post(gw.graphql_url, content=json.dumps({"query": document}), headers=headers)
    assert answer.status_code == 200
    message = "Must provide operation name if query contains multiple operations."
    assert answer.json() == {"data": None, "errors": [{"message": message}]}
    strict = httpx.post(
        gw.graphql_url, content=json.dumps({"query": document}), headers={**SPEC, **headers}
    )
    assert (strict.status_code, strict.json()) == (400, {"errors": [{"message": message}]})
    assert fakes[Provider.COMMET].calls["add_bank_account"] == calls
    named = httpx.post(
        gw.graphql_url,
        content=json.dumps({"query": document, "operationName": "A"}),
        headers=headers,
    )
    assert named.json() == {"data": {"__typename": "Query"}}
